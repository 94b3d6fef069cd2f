"""`mmm replicate --copy-existing` (issue 6, acceptance 4).

1. Before anything runs: a small collection is copied, writes go on, then
   `mmm run` starts; capture begins where replicate said the link starts, so
   the writes made in between arrive.
2. 100k documents, copied into server_b while `mmm run` runs and writes
   continue on the source (inserts, updates, deletes) — to test.big and to
   test.small, whose link from the same source is already being applied, so
   apply must read again from the new link's start for it alone; afterwards
   `mmm verify` passes.  The copy shows a progress line on a terminal (a pty
   here) and copies indexes.

MMM_COPY_OTHER=1 copies test.big into a third server instead (no running
link from that source there).
"""
import os
import pty
import random
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mmmlib import Env, ID_A, ID_B, ID_C, MMM, mmm, wait_for  # noqa: E402
from simlib import Checker  # noqa: E402

ck = Checker("mmm copy-existing")
N = 100000


class Writer(threading.Thread):
    """Writes to COLLS of the source until stopped: inserts, updates, deletes."""

    def __init__(self, client, colls, n_existing):
        super().__init__(daemon=True)
        self.c, self.colls, self.n = client, colls, n_existing
        self.stop = threading.Event()
        self.writes = 0
        self.error = None

    def run(self):
        rnd = random.Random(6)
        nxt = 0
        try:
            while not self.stop.is_set():
                coll = self.c.test[rnd.choice(self.colls)]
                k = rnd.random()
                if k < 0.4:
                    coll.insert_one({"_id": "w%d" % nxt, "v": nxt, "pad": "y" * 40})
                    nxt += 1
                elif k < 0.85:
                    coll.update_one({"_id": rnd.randrange(self.n)}, {"$inc": {"n": 1}, "$set": {"t": nxt}})
                else:
                    coll.delete_one({"_id": rnd.randrange(self.n)})
                self.writes += 1
                time.sleep(0.002)
        except Exception as e:  # noqa: BLE001
            self.error = e


def run_on_pty(argv, timeout=300):
    """Runs ARGV with stderr on a pty; (exit status, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    shown = b""
    out = []
    t = threading.Thread(target=lambda: out.append(p.stdout.read()), daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    p.wait(max(1, deadline - time.monotonic()))
    t.join(10)
    os.close(master)
    return p.returncode, (out[0] if out else b"").decode(), shown.decode("utf-8", "replace")


def main():
    with Env("copy", ck) as env:
        bug = not os.environ.get("MMM_COPY_OTHER")
        sa, sb, sc = (env.sim(n, ["--oplog-size-mb", "512"]) for n in "abc")
        ca, cb, cc = sa.client(), sb.client(), sc.client()
        cfg = env.config("c.yml", {"server_a": (ID_A, sa.uri), "server_b": (ID_B, sb.uri),
                                   "server_c": (ID_C, sc.uri)}, journal="j",
                         capture=["server_a"], apply=["server_b", "server_c"])

        # 1. copy before `mmm run` ever ran; writes in between must not be lost
        ca.test.small.insert_many([{"_id": i, "v": i} for i in range(1000)])
        rc, out, err = mmm(cfg, "replicate", "--src=server_a/test.small", "--dst=server_b/test.small", "--copy-existing")
        ck.eq(rc, 0, "copy of test.small: %s" % err)
        ck.eq(err, "mmm: copied 1000 documents of test.small into test.small\n",
              "nothing wrote to test.small since the link's start: copied from a snapshot there")
        ck.eq(cb.test.small.count_documents({}), 1000, "test.small copied")
        ca.test.small.insert_many([{"_id": 1000 + i} for i in range(10)])
        ca.test.small.update_many({"_id": {"$lt": 10}}, {"$set": {"after": 1}})
        ca.test.small.delete_many({"_id": {"$gte": 990, "$lt": 1000}})
        run = env.daemon([MMM, "-c", cfg, "run"], "run.log")
        ck.check(wait_for(lambda: cb.test.small.count_documents({}) == 1000 and
                          cb.test.small.count_documents({"after": 1}) == 10, 60, 0.1),
                 "writes made between replicate and run arrive")

        # 2. 100k documents, copied while writes go on (into server_c: a new
        # (destination, source) pair; see MMM_COPY_OTHER above)
        dst, cd = ("server_b", cb) if bug else ("server_c", cc)
        ca.test.big.insert_many([{"_id": i, "v": i % 1000, "pad": "x" * 60} for i in range(N)], ordered=False)
        ca.test.big.create_index("v", name="v_1")
        w = Writer(ca, ["big", "small"] if bug else ["big"], N)
        w.start()
        wait_for(lambda: w.writes > 50, 10)
        before = w.writes
        t0 = time.monotonic()
        rc, out, shown = run_on_pty([MMM, "-c", cfg, "replicate", "--src=server_a/test.big",
                                     "--dst=%s/test.big" % dst, "--copy-existing"])
        secs = time.monotonic() - t0
        during = w.writes - before
        ck.eq(rc, 0, "copy of test.big: %s" % shown[-500:])
        ck.check(re.search(r"\rcopying test\.big: 1000/1000\d\d documents\r", shown),
                 "progress line on a terminal: %r" % shown[:200])
        # test.big changed since the link's start: no snapshot there (mongosim
        # keeps no history), so the live collection is copied
        fallback = "mmm: no snapshot of test.big at " in shown
        ck.check(shown.count("\n") == 1 + fallback, "the progress line is erased, the summary remains: %r"
                 % shown[-300:])
        ck.check("copied " in shown and " documents of test.big into test.big" in shown, "summary line: %r" % shown[-300:])
        ck.check(during > 100, "writes went on during the copy: %d in %.1f s" % (during, secs))
        # writes go on a little after the copy, then stop
        wait_for(lambda: w.writes > before + during + 200, 10)
        w.stop.set()
        w.join(30)
        ck.check(w.error is None, "writer: %r" % w.error)
        ck.check("v_1" in cd.test.big.index_information(), "index copied")

        def same():
            ha = ca.test.command("dbHash", collections=["big", "small"])["collections"]
            hb = cb.test.command("dbHash", collections=["small"])["collections"]
            hd = cd.test.command("dbHash", collections=["big"])["collections"]
            return ha["small"] == hb.get("small") and ha["big"] == hd.get("big")
        ck.check(wait_for(same, 120, 0.2), "test.big converges: %d on a, %d on b" %
                 (ca.test.big.count_documents({}), cd.test.big.count_documents({})))
        rc, out, err = mmm(cfg, "verify", timeout=300)
        ck.eq(rc, 0, "verify passes: %s%s" % (out[-2000:], err))
        ck.check("ok    server_a/test.big = %s/test.big" % dst in out, "verify checked test.big: %r" % out)
        ck.eq(run.term(), 0, "mmm run stops")
        print("copy: %d documents in %.1f s with %d concurrent writes%s" % (N, secs, during,
                                                                           " (live read)" if fallback else ""))
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
