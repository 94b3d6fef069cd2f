"""`mmm status` (issue 6, acceptance 5): --json parses; per source and per
link the fields the issue names; with capture and apply run as separate
processes, a link's lag grows while apply is stopped (writes go on) and falls
back once it restarts; status works while the daemons run and after they
stopped; daemons killed without a word show as stale.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mmmlib import APPLY, CAPTURE, Env, ID_A, ID_B, mmm, status, wait_for  # noqa: E402
from simlib import Checker  # noqa: E402

ck = Checker("mmm status")


def link(st, dst_name="server_b"):
    for l in st["links"]:
        if l["dst"] == dst_name:
            return l
    return None


def source(st, name):
    for s in st["sources"]:
        if s["name"] == name:
            return s
    return None


def main():
    with Env("status", ck) as env:
        a = env.sim("a")
        b = env.sim("b")
        ca, cb = a.client(), b.client()
        cfg = env.config("c.yml", {"server_a": (ID_A, a.uri), "server_b": (ID_B, b.uri)}, journal="j",
                         capture=["server_a"], apply=["server_b"])
        rc, out, err = mmm(cfg, "replicate", "--src=server_a/test.s", "--dst=server_b/test.s")
        ck.eq(rc, 0, "replicate")
        # apply before anything was captured: the link waits for its source
        app = env.daemon([APPLY, "-c", cfg], "apply0.log")
        ck.check(wait_for(lambda: (link(status(cfg)) or {}).get("state") == "waiting", 30, 0.1),
                 "link listed as waiting before its source is journaled: %r" % status(cfg))
        ck.eq(app.term(), 0, "mmm-apply stops")
        # capture while apply is down: the lag of a link that never applied anything shows
        cap = env.daemon([CAPTURE, "-c", cfg], "capture.log")
        ck.check(wait_for(lambda: source(status(cfg), "server_a") is not None, 30, 0.05), "capture started")
        for i in range(15):
            ca.test.s.insert_one({"_id": "early%d" % i})
            time.sleep(0.1)
        want = ca.local.oplog.rs.find_one({}, sort=[("$natural", -1)])["ts"]
        ck.check(wait_for(lambda: _journaled(cfg, want), 10, 0.05), "early writes journaled")
        ck.check(link(status(cfg))["lag_s"] >= 1.0, "lag of a link that applied nothing yet: %r" % link(status(cfg)))
        ca.test.s.delete_many({})
        app = env.daemon([APPLY, "-c", cfg], "apply.log")
        ca.test.s.insert_many([{"_id": i} for i in range(100)])
        ck.check(wait_for(lambda: cb.test.s.count_documents({}) == 100, 60, 0.1), "replicated")

        st = status(cfg)
        ck.eq(sorted(st.keys()), ["conflicts_logged", "journal", "links", "sources"], "status --json keys")
        s = source(st, "server_a")
        ck.check(s is not None, "source server_a listed: %r" % st)
        if s:
            for k in ("state", "last_ts", "lag_s", "entries", "last_error"):
                ck.check(k in s, "source field %s" % k)
            ck.eq(s["state"], "running", "source state while capture runs")
            ck.eq(s["uuid"], ID_A, "source uuid")
        l = link(st)
        ck.check(l is not None, "link into server_b listed: %r" % st)
        if l is None:
            return ck.done()
        for k in ("state", "applied_ts", "lag_s", "conflicts", "last_error", "src", "dst", "links"):
            ck.check(k in l, "link field %s" % k)
        ck.eq(l["state"], "running", "link state while apply runs")
        ck.eq(l["links"], ["server_a/test.s=>test.s"], "link ids of the pair")
        ck.check(wait_for(lambda: link(status(cfg))["lag_s"] < 1.0, 30, 0.2), "no lag once drained")
        rc, out, err = mmm(cfg, "status")
        ck.eq(rc, 0, "status (text) exit")
        ck.check("server_a" in out and "server_a/test.s=>test.s" in out and "running" in out,
                 "status text names source and link: %r" % out)

        # writes that no link takes are not lag
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:
            ca.test.unlinked.insert_one({})
            time.sleep(0.02)
        want = ca.local.oplog.rs.find_one({}, sort=[("$natural", -1)])["ts"]
        ck.check(wait_for(lambda: _journaled(cfg, want), 10, 0.05), "unlinked writes journaled")
        ck.check(wait_for(lambda: _ts(link(status(cfg))["applied_ts"]) >= (want.time, want.inc), 10, 0.05),
                 "apply moves past writes no link takes: %r" % link(status(cfg)))
        ck.check(link(status(cfg))["lag_s"] < 1.0, "no lag for writes no link takes: %r" % link(status(cfg)))

        # apply stopped, writes go on: the lag grows
        ck.eq(app.term(), 0, "mmm-apply stops on SIGTERM")
        st = status(cfg)
        ck.eq(link(st)["state"], "stopped", "link state once apply stopped")
        lags = []
        t0 = time.monotonic()
        n = 100
        while (time.monotonic() - t0 < 3.0 or len(lags) < 4) and time.monotonic() - t0 < 60:
            ca.test.s.insert_one({"_id": n})
            n += 1
            time.sleep(0.05)
            if n % 10 == 0:
                want = ca.local.oplog.rs.find_one({}, sort=[("$natural", -1)])["ts"]
                wait_for(lambda: _journaled(cfg, want), 10, 0.05)
                lags.append(link(status(cfg))["lag_s"])
        ck.check(len(lags) >= 3 and lags[-1] > lags[0] and lags[-1] >= 2.0,
                 "lag grows while apply is stopped: %r" % lags)
        ck.check(all(y >= x for x, y in zip(lags, lags[1:])), "lag never shrinks while stopped: %r" % lags)
        print("lag while apply is stopped: %s" % " ".join("%.2f" % x for x in lags))
        ck.eq(cb.test.s.count_documents({}), 100, "nothing applied while stopped")
        # restart: it falls back
        app = env.daemon([APPLY, "-c", cfg], "apply2.log")
        ck.check(wait_for(lambda: cb.test.s.count_documents({}) == n, 60, 0.1), "apply catches up after restart")
        ck.check(wait_for(lambda: link(status(cfg))["lag_s"] < 1.0, 30, 0.2),
                 "lag falls back after restart: %r" % link(status(cfg)))
        ck.eq(link(status(cfg))["state"], "running", "running again")

        # everything stopped: status still answers from the journal
        ck.eq(app.term(), 0, "mmm-apply stops")
        ck.eq(cap.term(), 0, "mmm-capture stops")
        rc, out, err = mmm(cfg, "status", "--json")
        ck.eq(rc, 0, "status with nothing running")
        st = json.loads(out)
        ck.eq(source(st, "server_a")["state"], "stopped", "source state once capture stopped")
        ck.eq(link(st)["state"], "stopped", "link state once apply stopped")
        ck.eq(link(st)["conflicts"], 0, "no conflicts")
        ck.eq(st["conflicts_logged"], 0, "nothing in the conflict log")
        ck.eq(link(st)["last_error"], "", "no error")

        # daemons that died without a word: their last "running" goes stale
        cap = env.daemon([CAPTURE, "-c", cfg], "capture3.log")
        app = env.daemon([APPLY, "-c", cfg], "apply3.log")
        ck.check(wait_for(lambda: link(status(cfg))["state"] == "running" and
                          source(status(cfg), "server_a")["state"] == "running", 30, 0.1), "running again")
        cap.kill()
        app.kill()
        ck.check(wait_for(lambda: link(status(cfg))["state"] == "stale" and
                          source(status(cfg), "server_a")["state"] == "stale", 30, 0.2),
                 "killed daemons show as stale: %r" % status(cfg))
        rc, out, err = mmm(cfg, "status")
        ck.check(rc == 0 and "stale" in out and "(no update for" in out, "status text says stale: %r" % out)
    return ck.done()


def _ts(s):
    sec, inc = s.split(":")
    return (int(sec), int(inc))


def _journaled(cfg, want):
    s = source(status(cfg), "server_a")
    if not s:
        return False
    sec, inc = map(int, s["last_ts"].split(":"))
    return (sec, inc) >= (want.time, want.inc)


if __name__ == "__main__":
    sys.exit(main())
