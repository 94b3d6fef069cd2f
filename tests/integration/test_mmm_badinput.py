"""Bad input to `mmm` (issue 6, acceptance 6): unknown server names, malformed
--src/--dst, a link to the same server and namespace, configuration errors,
an unreachable or silent server.  Each: one line on stderr, exit 2 for
usage/configuration and 1 for runtime failures, within 5 s, nothing changed
(the links stored on both servers, and no journal created).
"""
import glob
import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mmmlib import Env, FIX, ID_A, ID_B, mmm, run  # noqa: E402
from simlib import Checker  # noqa: E402

ck = Checker("mmm bad input")


def snapshot(clients):
    return [sorted(map(repr, c.mmm.links.find({}))) + sorted(map(repr, c.mmm.checkpoints.find({})))
            for c in clients]


def main():
    silent = socket.socket()          # accepts connections (backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(128)
    closed = socket.socket()          # a port nobody listens on
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        with Env("badinput", ck) as env:
            a = env.sim("a")
            b = env.sim("b")
            ca, cb = a.client(), b.client()
            cfg = env.config("c.yml", {"server_a": (ID_A, a.uri), "server_b": (ID_B, b.uri)}, journal="j")
            # links that must survive every failed command
            rc, out, err = mmm(cfg, "replicate", "--src=server_a/test.foo", "--dst=server_b/test.foo")
            ck.eq((rc, err), (0, ""), "setup link a->b")
            rc, out, err = mmm(cfg, "replicate", "--src=server_b/test.foo", "--dst=server_a/test.foo")
            ck.eq((rc, err), (0, ""), "setup link b->a")
            os.rename(env.path("j"), env.path("j.setup"))   # so "no journal created" can be checked
            before = snapshot([ca, cb])

            def bad(config, args, code, pattern, what=None, input=None):
                what = what or " ".join(args)
                rc, out, err = mmm(config, *args, input=input)
                ck.eq(rc, code, "%s: exit" % what)
                ck.check(run.secs < 5, "%s: took %.1f s" % (what, run.secs))
                ck.check(err.endswith("\n") and err.count("\n") == 1, "%s: one line on stderr: %r" % (what, err))
                ck.check(re.search(pattern, err), "%s: message %r !~ %r" % (what, err, pattern))
                ck.check("s3cret" not in out + err, "%s: password shown" % what)
                ck.eq(snapshot([ca, cb]), before, "%s: links unchanged" % what)
                ck.check(not os.path.exists(env.path("j")), "%s: no journal created" % what)
                return out

            # unknown server names
            bad(cfg, ["replicate", "--src=server_x/test.foo", "--dst=server_b/test.foo"], 2,
                r"^mmm: unknown server 'server_x' in --src")
            bad(cfg, ["replicate", "--src=server_a/test.foo", "--dst=server_y/test.foo"], 2,
                r"^mmm: unknown server 'server_y' in --dst")
            bad(cfg, ["clear-config", "-y", "--server", "nope"], 2, r"unknown server 'nope'")
            bad(cfg, ["clear-config", "--server", "nope"], 2, r"unknown server 'nope'", input="y\n")
            bad(cfg, ["run", "--server", "nope"], 2, r"unknown server 'nope'")
            bad(cfg, ["verify", "--link", "server_a/test.foo=server_q/test.foo"], 2, r"unknown server 'server_q'")
            # malformed --src / --dst
            for src in ("server_a", "server_a/", "/test.foo", "server_a/test", "server_a/test.", "server_a/.foo",
                        "server_a/te st.foo", "server_a/test.foo/x", "server_a/mmm.links", "server_a/local.oplog.rs",
                        "server_a/admin.x"):
                bad(cfg, ["replicate", "--src=" + src, "--dst=server_b/test.foo"], 2,
                    r"^mmm: malformed --src '%s'" % re.escape(src))
            bad(cfg, ["replicate", "--src=server_a/test.foo", "--dst=server_b/test"], 2, r"^mmm: malformed --dst")
            bad(cfg, ["replicate", "--src=server_a/test.*", "--dst=server_b/test.foo"], 2, r"whole database")
            bad(cfg, ["replicate", "--src=server_a/test.foo"], 2, r"missing --dst")
            bad(cfg, ["replicate", "--dst=server_a/test.foo"], 2, r"missing --src")
            bad(cfg, ["replicate", "--src=server_a/test.foo", "--dst=server_b/test.foo", "--ops", "ix"], 2,
                r"malformed --ops 'ix'")
            bad(cfg, ["verify", "--link", "server_a/test.foo"], 2, r"malformed --link")
            # a link to the same server (and namespace)
            bad(cfg, ["replicate", "--src=server_a/test.foo", "--dst=server_a/test.foo"], 2,
                r"same server 'server_a'", "link to the same server and namespace")
            bad(cfg, ["replicate", "-s", "server_b/test.foo", "-d", "server_b/test.bar"], 2,
                r"same server 'server_b'", "link to the same server")
            # configuration errors: FILE:LINE:COL: message
            for f in sorted(glob.glob(os.path.join(FIX, "config", "err_*.yml"))):
                bad(f, ["dump-config"], 2, r"^mmm: %s:\d+:\d+: " % re.escape(f), os.path.basename(f))
            bad(env.path("missing.yml"), ["dump-config"], 2, r"missing\.yml: cannot read")
            # a config with a password: never echoed, even in errors
            pw = env.config("pw.yml", {"server_a": (ID_A, a.uri),
                                       "server_b": (ID_B, "mongodb://u:s3cret@127.0.0.1:%d/?replicaSet=b" % closed_port)},
                            journal="j")
            # unreachable servers: refused connections, and a server that never answers
            for label, port in (("refused", closed_port), ("silent", silent.getsockname()[1])):
                dead = env.config("%s.yml" % label, {"server_a": (ID_A, a.uri), "server_b": (
                    ID_B, "mongodb://127.0.0.1:%d/?replicaSet=b" % port)}, journal="j")
                unreach = r"^mmm: cannot reach 'server_b' \(mongodb://127\.0\.0\.1:%d/\?replicaSet=b\): " % port
                bad(dead, ["replicate", "--src=server_a/test.foo", "--dst=server_b/test.bar"], 1, unreach,
                    "%s destination: replicate" % label)
                bad(dead, ["replicate", "--src=server_b/test.bar", "--dst=server_a/test.bar", "--copy-existing"], 1,
                    unreach, "%s source: replicate --copy-existing" % label)
                out = bad(dead, ["clear-config", "-y"], 1, unreach, "%s: clear-config -y" % label)
                ck.eq(out, "", "%s: clear-config clears nothing when a server is down" % label)
                bad(dead, ["verify"], 1, unreach, "%s: verify" % label)
                bad(dead, ["dump-config"], 1, unreach, "%s: dump-config" % label)
                rc, out, err = mmm(dead, "verify", "--link", "server_a/test.foo=server_a/test.copy")
                ck.eq((rc, err), (0, ""), "%s: verify of links not involving the down server" % label)
            bad(pw, ["verify"], 1, r"cannot reach 'server_b' \(mongodb://u:\*\*\*@127", "password redacted in errors")
            # status without a journal
            bad(cfg, ["status"], 1, r"unable to open journal .*no journal yet", "status without a journal")
    finally:
        silent.close()
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
