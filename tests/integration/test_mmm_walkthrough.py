"""The original MongoMultiMaster README walkthrough, unchanged, against a
seed-style test.yml (issue 6, acceptance 2): clear-config (answer y),
dump-config, four replicate commands, dump-config, run.  Output is compared
byte for byte with the original's, except the URIs (ours are the configured
ones, with the test's ports) and the prompt's echoed answer.
"""
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mmmlib import Env, FIX, ID_A, MMM, mmm, wait_for  # noqa: E402
from simlib import Checker  # noqa: E402

ck = Checker("mmm walkthrough")

# The original's output, as its README shows it (the terminal echoed "y").
ORIG_CLEAR = ("About to clear config on servers: ['server_a', 'server_b'], are you sure? (yN) y\n"
              "Clear config for server_a\n"
              "Clear config for server_b\n")
ORIG_DUMP_EMPTY = ("=== Server Config ===\n"
                   "server_a (2c88ae84-7cb9-40f7-835d-c05e981f564d) => mongodb://localhost:27019\n"
                   "server_b (ID_B) => mongodb://localhost:27017\n"
                   "\n"
                   "=== server_a Replication Config\n"
                   "=== server_b Replication Config\n"
                   "\n")
ORIG_DUMP_FULL = ("=== Server Config ===\n"
                  "server_a (2c88ae84-7cb9-40f7-835d-c05e981f564d) => mongodb://localhost:27019\n"
                  "server_b (ID_B) => mongodb://localhost:27017\n"
                  "\n"
                  "=== server_a Replication Config\n"
                  "     - test.foo <= server_b/test.foo\n"
                  "     - test.bar <= server_b/test.bar\n"
                  "=== server_b Replication Config\n"
                  "     - test.foo <= server_a/test.foo\n"
                  "     - test.bar <= server_a/test.bar\n"
                  "\n")


def on_terminal(argv, prompt, answer, timeout=60):
    """Runs ARGV with stdin and stdout on a pty, answers ANSWER after PROMPT;
    (exit status, what the terminal showed)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    shown, answered = b"", False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if not r:
            if p.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
        if not answered and shown.endswith(prompt):
            os.write(master, answer)
            answered = True
    try:
        rc = p.wait(max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    os.close(master)
    return rc, shown.decode("utf-8", "replace")


def main():
    with Env("walkthrough", ck) as env:
        a = env.sim("a")
        b = env.sim("b")
        # test.yml as the config helper seeded it, with this test's ports
        with open(os.path.join(FIX, "config", "test.yml")) as f:
            text = f.read()
        ck.check("27019" in text and "27017" in text and "replicaSet=" in text, "seed test.yml shape")
        text = text.replace(":27019/", ":%d/" % a.port).replace(":27017/", ":%d/" % b.port)
        cfg = env.path("test.yml")
        with open(cfg, "w") as f:
            f.write(text)
        id_b = re.search(r"server_b:\s*\n\s*id: '([0-9a-f-]+)'", text).group(1)
        uri_a = re.search(r"server_a:\s*\n.*\n\s*uri: '([^']+)'", text).group(1)
        uri_b = re.search(r"server_b:\s*\n.*\n\s*uri: '([^']+)'", text).group(1)

        def ours(orig):
            """The original's text with our URIs, UUIDs and ports."""
            return (orig.replace("mongodb://localhost:27019", uri_a).replace("mongodb://localhost:27017", uri_b)
                    .replace("ID_B", id_b))

        ca, cb = a.client(), b.client()
        # leftovers from "an earlier run": clear-config removes them
        ca.mmm.links.insert_one({"_id": "old", "src_name": "server_b", "src_ns": "x.y", "dst_ns": "x.y"})

        # $ mmm -c test.yml clear-config   (answer y)
        os.chdir(env.tmp)
        rc, out, err = mmm("test.yml", "clear-config", input="y\n")
        ck.eq(rc, 0, "clear-config exit")
        # stdin is not a terminal: the answer is not echoed, the tool ends the line itself
        ck.eq(out.replace("(yN) \n", "(yN) y\n", 1), ORIG_CLEAR, "clear-config output")
        ck.eq(err, "", "clear-config stderr")
        ck.eq(ca.mmm.links.count_documents({}), 0, "clear-config removed the old link")

        # on a terminal the answer is echoed: exactly the original's lines
        ca.mmm.links.insert_one({"_id": "old", "src_name": "server_b", "src_ns": "x.y", "dst_ns": "x.y"})
        rc, shown = on_terminal([MMM, "-c", "test.yml", "clear-config"], b"(yN) ", b"y\n")
        ck.eq(rc, 0, "clear-config on a terminal: exit")
        ck.eq(shown.replace("\r\n", "\n"), ORIG_CLEAR, "clear-config on a terminal: output")
        ck.eq(ca.mmm.links.count_documents({}), 0, "clear-config on a terminal removed the old link")

        # $ mmm -c test.yml dump-config
        rc, out, err = mmm("test.yml", "dump-config")
        ck.eq(rc, 0, "dump-config exit")
        ck.eq(out, ours(ORIG_DUMP_EMPTY), "dump-config output (no links)")
        ck.eq(err, "", "dump-config stderr")

        # the four replicate commands (the last with the original's short options)
        for argv in (["--src=server_a/test.foo", "--dst=server_b/test.foo"],
                     ["--src=server_a/test.bar", "--dst=server_b/test.bar"],
                     ["--src=server_b/test.foo", "--dst=server_a/test.foo"],
                     ["-s", "server_b/test.bar", "-d", "server_a/test.bar"]):
            rc, out, err = mmm("test.yml", "replicate", *argv)
            ck.eq((rc, out, err), (0, "", ""), "replicate %s" % " ".join(argv))
        ck.eq(cb.mmm.links.count_documents({}), 2, "two links stored on server_b")
        ck.eq(ca.mmm.links.count_documents({}), 2, "two links stored on server_a")
        ck.eq(ca.local.mmm.count_documents({}) + cb.local.mmm.count_documents({}), 0, "nothing in local")

        rc, out, err = mmm("test.yml", "dump-config")
        ck.eq(rc, 0, "dump-config exit")
        ck.eq(out, ours(ORIG_DUMP_FULL), "dump-config output (four links)")

        # replicate again: the same link, not a second one, still starting where it did
        first = cb.mmm.links.find_one({"src_ns": "test.foo"})
        ca.test.other.insert_one({"_id": "moves the oplog on"})
        rc, out, err = mmm("test.yml", "replicate", "--src=server_a/test.foo", "--dst=server_b/test.foo")
        ck.eq(rc, 0, "replicate again")
        ck.eq(cb.mmm.links.count_documents({}), 2, "replicate is idempotent")
        again = cb.mmm.links.find_one({"src_ns": "test.foo"})
        ck.check(first.get("start_ts") is not None, "a new link records where it starts")
        ck.eq(again.get("start_ts"), first.get("start_ts"), "replicate again keeps the link's start_ts")

        # $ mmm -c test.yml run
        run = env.daemon([MMM, "-c", "test.yml", "run"], "run.log")
        ca.test.foo.insert_many([{"_id": i, "from": "a"} for i in range(50)])
        cb.test.bar.insert_many([{"_id": i, "from": "b"} for i in range(50)])
        ca.test.foo.update_many({"_id": {"$lt": 10}}, {"$set": {"touched": True}})
        cb.test.bar.delete_many({"_id": {"$gte": 40}})
        ca.test.baz.insert_one({"_id": "not linked"})

        def converged():
            return (cb.test.foo.count_documents({}) == 50 and cb.test.foo.count_documents({"touched": True}) == 10
                    and ca.test.bar.count_documents({}) == 40)
        ck.check(wait_for(converged, 60, 0.1), "run replicates both ways")
        # and back: a write on b to test.foo reaches a, without bouncing
        cb.test.foo.update_one({"_id": 1}, {"$set": {"by": "b"}})
        ck.check(wait_for(lambda: (ca.test.foo.find_one({"_id": 1}) or {}).get("by") == "b", 60, 0.1),
                 "b's update of test.foo reaches a")
        rc, out, err = mmm("test.yml", "verify")
        ck.eq(rc, 0, "verify passes while running")
        ck.eq(sorted(out.split("\n")[:-1]),
              ["ok    server_b/test.bar = server_a/test.bar (dbHash %s)" % ca.test.command("dbHash", collections=["bar"])["collections"]["bar"],
               "ok    server_b/test.foo = server_a/test.foo (dbHash %s)" % ca.test.command("dbHash", collections=["foo"])["collections"]["foo"]],
              "verify output")
        ck.eq(cb.test.baz.count_documents({}), 0, "an unlinked collection is not replicated")
        ck.eq(run.term(), 0, "run stops cleanly on SIGTERM")
        log = run.log()
        ck.check("running:" in log and "stopped" in log, "run logs start and stop: %r" % log[-500:])

        # run --server: only that server's capture and apply
        one = env.daemon([MMM, "-c", "test.yml", "run", "--server", "server_b"], "run_b.log")
        ck.check(wait_for(lambda: "running: capturing 1 server, applying into 1," in one.log(), 30, 0.05),
                 "run --server server_b runs one capture and one apply: %r" % one.log())
        ck.eq(one.term(), 0, "run --server stops cleanly")
        ck.check("into 'server_a'" not in one.log(), "run --server server_b applies only into server_b: %r" % one.log())

        # verify finds a difference made while nothing runs, and names it
        cb.test.foo.update_one({"_id": 7}, {"$set": {"drift": 1}})
        cb.test.foo.insert_one({"_id": "only-b"})
        rc, out, err = mmm("test.yml", "verify")
        ck.eq(rc, 1, "verify exit on a difference")
        ck.check("DIFF  server_b/test.foo != server_a/test.foo: 2 documents differ (51 and 50 documents)" in out, "verify DIFF line: %r" % out)
        ck.check('{ "_id" : 7 }  different' in out, "verify names _id 7: %r" % out)
        ck.check('{ "_id" : "only-b" }  missing on server_a' in out, "verify names only-b: %r" % out)
        ck.check("ok    server_b/test.bar = server_a/test.bar" in out, "verify: test.bar still ok")
        rc, out, err = mmm("test.yml", "verify", "--link", "server_a/test.bar=server_b/test.bar")
        ck.eq(rc, 0, "verify --link of an identical pair")
        ck.check("test.foo" not in out, "verify --link checks only that link")

        # -y and --server: no question, only that server
        rc, out, err = mmm("test.yml", "clear-config", "-y", "--server", "server_b")
        ck.eq((rc, out), (0, "Clear config for server_b\n"), "clear-config -y --server server_b")
        ck.eq(cb.mmm.links.count_documents({}), 0, "server_b's links are gone")
        ck.eq(ca.mmm.links.count_documents({}), 2, "server_a's links are kept")
        # answering no changes nothing
        rc, out, err = mmm("test.yml", "clear-config", input="n\n")
        ck.eq(rc, 1, "clear-config answered n: exit")
        ck.check(out.endswith("Aborted.\n"), "clear-config answered n: says so")
        ck.eq(ca.mmm.links.count_documents({}), 2, "clear-config answered n: nothing changed")

        # a renamed collection and a whole database: compared document by document
        ca.src.c1.insert_many([{"_id": i, "k": i} for i in range(30)])
        ca.src.c2.insert_many([{"_id": i, "k": i} for i in range(5)])
        ca.src.create_collection("capped", capped=True, size=65536)
        ca.src.capped.insert_many([{"_id": i} for i in range(3)])
        ca.src.c2.create_index([("k", 1)], name="k_1", unique=True)
        for argv in (["--src=server_a/test.foo", "--dst=server_b/test.renamed"],
                     ["--src=server_a/src.*", "--dst=server_b/dst.*"]):
            rc, out, err = mmm("test.yml", "replicate", *argv, "--copy-existing")
            ck.eq((rc, out), (0, ""), "replicate --copy-existing %s: %s" % (" ".join(argv), err))
        rc, out, err = mmm("test.yml", "verify", "--link", "server_a/test.foo=server_b/test.renamed",
                           "--link", "server_a/src.*=server_b/dst.*")
        ck.eq(rc, 0, "verify of renamed namespaces: %s%s" % (out, err))
        ck.eq(out, "ok    server_a/test.foo = server_b/test.renamed (50 documents)\n"
                   "ok    server_a/src.c1 = server_b/dst.c1 (30 documents)\n"
                   "ok    server_a/src.c2 = server_b/dst.c2 (5 documents)\n"
                   "ok    server_a/src.capped = server_b/dst.capped (3 documents)\n", "verify output, renamed")
        opts = cb.dst.capped.options()
        ck.check(opts.get("capped") is True and opts.get("size") == 65536, "collection options copied: %r" % opts)
        ix = cb.dst.c2.index_information().get("k_1", {})
        ck.check(ix.get("unique") is True, "unique index copied: %r" % ix)
        cb.dst.c1.delete_one({"_id": 3})
        cb.dst.c3.insert_one({"_id": "x"})
        rc, out, err = mmm("test.yml", "verify")
        ck.eq(rc, 1, "verify of every link finds the differences")
        ck.check('DIFF  server_a/src.c1 != server_b/dst.c1: 1 document differs (30 and 29 documents)\n' in out,
                 "c1 difference: %r" % out)
        ck.check('{ "_id" : 3 }  missing on server_b' in out, "c1: _id 3 named: %r" % out)
        ck.check('{ "_id" : "x" }  missing on server_a' in out, "dst.c3 only on server_b: %r" % out)

        # passwords are never shown
        red = env.path("red.yml")
        with open(red, "w") as f:
            f.write(text.replace("mongodb://127.0.0.1", "mongodb://admin:s3cret@127.0.0.1", 1))
        rc, out, err = mmm(red, "dump-config")
        ck.check("s3cret" not in out + err, "password not shown: %r" % (out + err))
        ck.check("server_a (%s) => mongodb://admin:***@127.0.0.1:%d/?replicaSet=a\n" % (ID_A, a.port) in out,
                 "redacted uri in dump-config: %r" % out)
        shutil.rmtree(env.path("mmm-journal"), ignore_errors=True)
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
