#!/usr/bin/python3
"""mmm-capture against mongosim (issue 4): crashes, fail-overs and gaps.

Acceptance 2: while writes go on, mmm-capture is killed with SIGKILL at
random moments (MMM_CAPTURE_KILLS, default 20, fixed seed) and crashed by
MMM_FAULT points around the block commit (jnl_commit@N:crash,
jnl_committed@N:crash); after each restart the journal is exactly the
oplog from its first entry on: no gap, no duplicate.
Acceptance 3: mongosimStepDown and a mongosim restart (--dbpath) during
capture: capture resumes by itself within 5 s of the server accepting
writes again, nothing lost.
Acceptance 4: the oplog (--oplog-size-mb 1) rolls past capture while it is
stopped, and while it is stopped mid-tail (SIGSTOP: CappedPositionLost):
one line says so, the source's status is "gap", the other source goes on;
exit 1 once no source is left.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simlib import Sim, Checker, wait_for  # noqa: E402
import caplib  # noqa: E402
from caplib import write_config, Capture, mj, source_stat, status_of, ts_key, kept_oplog, journal_entries, wait_caught_up, compare, BIN  # noqa: E402


import bson  # noqa: E402
from bson.timestamp import Timestamp  # noqa: E402
from pymongo import errors  # noqa: E402

KILLS = int(os.environ.get("MMM_CAPTURE_KILLS") or 20)
ck = Checker("capture_faults")
caplib.ck = ck


# ---- a workload that rides through step-downs and restarts ----

class Writer(threading.Thread):
    def __init__(self, sim, seed, pace=0.002):
        super().__init__(daemon=True)
        self.sim = sim
        self.rnd = random.Random(seed)
        self.stop = threading.Event()
        self.pace = pace
        self.ok = 0
        self.failures = 0

    def run(self):
        c = self.sim.client(serverSelectionTimeoutMS=1000)
        coll = c.wf.c
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                k = i % 6
                if k == 0:
                    with c.start_session() as s:
                        with s.start_transaction():
                            coll.insert_one({"_id": "t%d" % i}, session=s)
                            coll.update_one({"_id": "t%d" % i}, {"$set": {"x": 1}}, session=s)
                elif k == 1:
                    coll.update_one({"_id": i - 1}, {"$set": {"y": self.rnd.random()}})
                elif k == 2:
                    coll.delete_one({"_id": i - 2})
                elif k == 3:
                    c.mmm.junk.insert_one({"_id": i})
                else:
                    coll.insert_one({"_id": i, "pad": "p" * self.rnd.randint(10, 300)})
                self.ok += 1
            except errors.PyMongoError:
                self.failures += 1
                time.sleep(0.01)
            time.sleep(self.pace)


def journal_count(jdir, name):
    s = source_stat(jdir, name)
    return s["entries"] if s else 0


def check_mirror(jdir, name, sim, what):
    """The journal is exactly the oplog (from its first entry to its last)."""
    return compare(jdir, name, sim, what)


# ---- acceptance 2 ----

def crash_test(tmp):
    rnd = random.Random(4)
    with Sim() as a:
        sid = str(uuid.uuid4())
        jdir = os.path.join(tmp, "jc")
        cfg = os.path.join(tmp, "crash.yml")
        write_config(cfg, [("server_a", sid, a.uri)], jdir)
        w = Writer(a, 7)
        w.start()
        try:
            kills = 0
            for i in range(KILLS):
                before = journal_count(jdir, "server_a")
                cap = Capture(cfg)
                # a random moment, once this run has journaled something
                wait_for(lambda: journal_count(jdir, "server_a") > before, 10, 0.02)
                time.sleep(rnd.uniform(0.0, 0.4))
                alive = cap.p.poll() is None
                cap.stop(signal.SIGKILL)
                kills += alive
                if not check_mirror(jdir, "server_a", a, "after kill -9 #%d" % (i + 1)):
                    print(cap.text(), flush=True)
                    break
            ck.eq(kills, KILLS, "capture was alive at each kill")
            crashes = 0
            for fault in ("jnl_commit@1:crash", "jnl_commit@3:crash", "jnl_commit@7:crash",
                          "jnl_committed@1:crash", "jnl_committed@2:crash", "jnl_committed@6:crash"):
                cap = Capture(cfg, env={"MMM_FAULT": fault})
                crashed = wait_for(lambda: cap.p.poll() is not None, 15, 0.02)
                rc = cap.stop(signal.SIGKILL)
                crashes += ck.check(crashed and rc == 137, "%s crashed capture (rc %r)" % (fault, rc))
                if not check_mirror(jdir, "server_a", a, "after %s" % fault):
                    print(cap.text(), flush=True)
            # a last clean run catches up with everything
            cap = Capture(cfg)
            w.stop.set()
            w.join(30)
            ck.check(wait_caught_up(jdir, "server_a", a), "caught up after %d kills and %d crashes" % (kills, crashes))
            ck.eq(cap.stop(), 0, "SIGTERM exit status")
            check_mirror(jdir, "server_a", a, "at the end")
            p = mj(jdir, "verify")
            ck.eq(p.returncode, 0, "journal verifies: %s" % p.stderr.decode(errors="replace").strip())
            print("crash test: %d kills, %d fault crashes, %d writes, %d journaled entries" %
                  (kills, crashes, w.ok, journal_count(jdir, "server_a")), flush=True)
        finally:
            w.stop.set()


# ---- a crash in the middle of an apply-shaped partialTxn chain ----

def origins(jdir, name):
    tool = os.path.join(os.path.dirname(BIN), "tests", "test_capture_origin")
    p = subprocess.run([tool, "--origins", jdir, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        return None
    out = {}
    for line in p.stdout.decode().splitlines():
        t, o = line.split()
        sec, inc = t.split(":")
        out[(int(sec), int(inc))] = o
    return out


def chain_crash_test(tmp):
    """The chain spans several blocks; capture crashes after committing the
    first (cap_committed@1:crash); the restarted capture must still give the
    rest of the chain the marker's origin (it re-reads the journal)."""
    with Sim(["--txn-split-ops", "1", "--noop-interval", "0"]) as a:
        sid, X = str(uuid.uuid4()), str(uuid.uuid4())
        jdir = os.path.join(tmp, "jw")
        cfg = os.path.join(tmp, "chain.yml")
        write_config(cfg, [("server_a", sid, a.uri)], jdir)
        c = a.client()
        c.wc.t.insert_one({"_id": "first"})
        cap = Capture(cfg)
        ck.check(wait_caught_up(jdir, "server_a", a), "chain: captured the start")
        ck.eq(cap.stop(), 0, "chain: SIGTERM exit status")
        before = a.last_ts()
        with c.start_session() as s:
            with s.start_transaction():
                c.mmm.checkpoints.update_one(
                    {"_id": "mmm:%s:%s:w0" % (X, sid)},
                    {"$set": {"origin": bson.Binary(uuid.UUID(X).bytes, 4), "ts": Timestamp(5, 5)}},
                    upsert=True, session=s)
                # more blocks than capture commits at once (its queue holds 8)
                c.wc.t.insert_many([{"_id": i, "pad": "c" * 100} for i in range(10000)], session=s)
        # (with one op per entry, the chain's head may hold only the implicit
        # `create` of mmm.checkpoints, before the marker: it writes nothing
        # that apply would ever apply, and capture cannot know its origin yet)
        chain = [ts_key(r) for r in kept_oplog(a, (before.time, before.inc))
                 if ts_key(r) > (before.time, before.inc) and
                 not all(op["ns"].startswith("mmm.") for op in bson.BSON(r).decode()["o"].get("applyOps", [{"ns": ""}]))]
        ck.check(len(chain) > 9000, "chain: %d entries" % len(chain))
        cap = Capture(cfg, env={"MMM_FAULT": "cap_committed@1:crash"})
        ck.check(wait_for(lambda: cap.p.poll() is not None, 15, 0.02), "chain: crashed after a commit")
        ck.eq(cap.stop(), 137, "chain: crash exit status")
        held = journal_count(jdir, "server_a")
        ck.check(1 < held < 2 + len(chain), "chain: the crash left part of the chain unjournaled (%d entries)" % held)
        cap = Capture(cfg)
        ck.check(wait_caught_up(jdir, "server_a", a), "chain: caught up after the crash")
        ck.eq(cap.stop(), 0, "chain: SIGTERM exit status after the crash")
        check_mirror(jdir, "server_a", a, "chain")
        org = origins(jdir, "server_a") or {}
        bad = [t for t in chain if org.get(t) != X]
        ck.check(not bad, "chain: every entry of the chain has origin X (%d of %d do not, first %r)"
                 % (len(bad), len(chain), bad[:1]))
        own = [ts_key(r) for r in kept_oplog(a) if bson.BSON(r).decode()["ns"] == "wc.t"]
        ck.check(own and org.get(own[0]) == sid, "chain: the source's own entry")


# ---- acceptance 3 ----

def sentinel_write(sim, timeout=30):
    """Writes until the server accepts; returns (time accepted, newest ts then)."""
    c = sim.client(serverSelectionTimeoutMS=500, retryWrites=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c.wf.sentinel.insert_one({"at": time.time()})
            t = time.monotonic()
            return t, sim.last_ts()
        except errors.PyMongoError:
            time.sleep(0.02)
    return None, None


def resumed_within(jdir, sim, ts, t0, limit=5.0):
    want = "%d:%d" % (ts.time, ts.inc)

    def ok():
        s = source_stat(jdir, "server_a")
        return s and tuple(map(int, s["last_ts"].split(":"))) >= (ts.time, ts.inc)
    got = wait_for(ok, limit + 5, 0.02)
    dt = time.monotonic() - t0
    return got, dt, want


def failover_test(tmp):
    dbpath = os.path.join(tmp, "db")
    os.makedirs(dbpath)
    a = Sim(dbpath=dbpath)
    cap = None
    try:
        sid = str(uuid.uuid4())
        jdir = os.path.join(tmp, "jf")
        cfg = os.path.join(tmp, "failover.yml")
        write_config(cfg, [("server_a", sid, a.uri)], jdir)
        cap = Capture(cfg)
        w = Writer(a, 9, pace=0.005)
        w.start()
        ck.check(wait_for(lambda: journal_count(jdir, "server_a") > 50, 10, 0.05), "capturing before the step-down")
        try:
            a.client().admin.command("mongosimStepDown", 2)
        except errors.PyMongoError:
            pass
        t0, ts = sentinel_write(a)
        ck.check(t0 is not None, "writes accepted again after the step-down")
        got, dt, want = resumed_within(jdir, a, ts, t0)
        ck.check(got and dt <= 5.0, "capture resumed %.2f s after the step-down ended (ts %s)" % (dt, want))
        print("step-down: resumed %.2f s after writes were accepted again" % dt, flush=True)
        ck.check(cap.p.poll() is None, "capture still running after the step-down")

        w.stop.set()
        w.join(30)
        a.restart()
        w2 = Writer(a, 10, pace=0.005)
        w2.start()
        t0, ts = sentinel_write(a)
        ck.check(t0 is not None, "writes accepted after the restart")
        got, dt, want = resumed_within(jdir, a, ts, t0)
        ck.check(got and dt <= 5.0, "capture resumed %.2f s after the restart (ts %s)" % (dt, want))
        print("restart: resumed %.2f s after writes were accepted again" % dt, flush=True)
        # and once more, with the server down for a while (backoff at its cap)
        w2.stop.set()
        w2.join(30)
        a.stop()
        time.sleep(2.5)          # the outage itself, not a synchronisation
        a.start()
        t0, ts = sentinel_write(a)
        got, dt, want = resumed_within(jdir, a, ts, t0)
        ck.check(got and dt <= 5.0, "capture resumed %.2f s after a 2.5 s outage (ts %s)" % (dt, want))
        print("outage: resumed %.2f s after writes were accepted again" % dt, flush=True)
        ck.check(wait_caught_up(jdir, "server_a", a), "caught up after the fail-overs")
        check_mirror(jdir, "server_a", a, "after step-down and restarts")
        st = status_of(jdir, sid)
        ck.check(st and st["state"] == "running", "status running: %r" % (st,))
        ck.eq(cap.stop(signal.SIGINT), 0, "SIGINT exit status")
        ck.check("retrying in" in cap.text(), "retries were logged")
    finally:
        if cap:
            cap.stop()
        a.stop()


# ---- acceptance 4 ----

def fill_oplog(sim, mb):
    c = sim.client()
    pad = "r" * 1000
    for i in range(mb * 1100 // 100):
        c.wf.roll.insert_many([{"pad": pad} for _ in range(100)])


def gap_line(text, name):
    return [l for l in text.splitlines() if "oplog of '%s' no longer holds" % name in l]


def gap_test(tmp):
    a = Sim(["--oplog-size-mb", "1"])
    b = Sim()
    cap = None
    try:
        ida, idb = str(uuid.uuid4()), str(uuid.uuid4())
        # -- rolled over while capture is stopped --
        jdir = os.path.join(tmp, "jg")
        cfg = os.path.join(tmp, "gap.yml")
        write_config(cfg, [("server_a", ida, a.uri), ("server_b", idb, b.uri)], jdir)
        cap = Capture(cfg)
        for s in (a, b):
            s.client().wf.g.insert_many([{"i": i} for i in range(20)])
        for s, n in ((a, "server_a"), (b, "server_b")):
            ck.check(wait_caught_up(jdir, n, s), "%s captured before the rollover" % n)
        ck.eq(cap.stop(), 0, "SIGTERM exit status")
        held = source_stat(jdir, "server_a")["last_ts"]
        fill_oplog(a, 3)
        oldest = a.client().local["oplog.rs"].find_one({}, sort=[("$natural", 1)])["ts"]
        ck.check("%d:%d" % (oldest.time, oldest.inc) > held or oldest.time > int(held.split(":")[0]),
                 "A's oplog rolled past %s (oldest %s)" % (held, oldest))
        cap = Capture(cfg)
        want = "oplog of 'server_a' no longer holds %s (oldest is %d:%d): resync needed" % (held, oldest.time, oldest.inc)
        ck.check(wait_for(lambda: gap_line(cap.text(), "server_a"), 10, 0.05), "the gap is reported")
        ck.check(wait_for(lambda: (status_of(jdir, ida) or {}).get("state") == "gap", 5, 0.05),
                 "server_a's status is gap: %r" % (status_of(jdir, ida),))
        b.client().wf.g.insert_many([{"after": i} for i in range(20)])
        ck.check(wait_caught_up(jdir, "server_b", b), "server_b goes on after server_a's gap")
        check_mirror(jdir, "server_b", b, "server_b after server_a's gap")
        lines = gap_line(cap.text(), "server_a")
        ck.eq(len(lines), 1, "one line for the gap: %r" % lines)
        ck.check(lines and lines[0].endswith(want), "gap line %r ends with %r" % (lines[:1], want))
        ck.check(cap.p.poll() is None, "capture keeps running for server_b")
        p = mj(jdir, "stat")
        ck.check(b"gap" in p.stdout, "mmm-journal stat shows the gap state")
        rc = cap.stop()
        ck.eq(rc, 0, "exit status after SIGTERM, server_b still running")

        # -- rolled over while capture was stopped mid-tail: CappedPositionLost --
        ida2 = str(uuid.uuid4())
        jdir2 = os.path.join(tmp, "jg2")
        cfg2 = os.path.join(tmp, "gap2.yml")
        write_config(cfg2, [("server_a", ida2, a.uri)], jdir2)
        cap = Capture(cfg2)
        a.client().wf.g.insert_many([{"j": i} for i in range(20)])
        ck.check(wait_caught_up(jdir2, "server_a", a), "second journal captured server_a")
        cap.p.send_signal(signal.SIGSTOP)
        try:
            fill_oplog(a, 3)
        finally:
            cap.p.send_signal(signal.SIGCONT)
        ck.check(wait_for(lambda: cap.p.poll() is not None, 15, 0.05), "capture exits when its only source has a gap")
        rc = cap.stop()
        ck.eq(rc, 1, "exit status when no source is left")
        lines = gap_line(cap.text(), "server_a")
        ck.eq(len(lines), 1, "one line for the gap while tailing: %r" % (cap.text(),))
        ck.eq((status_of(jdir2, ida2) or {}).get("state"), "gap", "status gap after CappedPositionLost")
        # a restart says the same and exits 1
        cap = Capture(cfg2)
        ck.check(wait_for(lambda: cap.p.poll() is not None, 15, 0.05), "a restart exits too")
        ck.eq(cap.stop(), 1, "exit status of the restart")
        ck.eq(len(gap_line(cap.text(), "server_a")), 1, "the restart reports the gap in one line")

        # -- --from: an entry the oplog holds starts the journal there; an older one is a gap --
        ents = kept_oplog(b)
        mid = ts_key(ents[len(ents) // 2])
        jdir3 = os.path.join(tmp, "jg3")
        cfg3 = os.path.join(tmp, "gap3.yml")
        write_config(cfg3, [("server_a", str(uuid.uuid4()), a.uri), ("server_b", str(uuid.uuid4()), b.uri)], jdir3)
        cap = Capture(cfg3, ["--server", "server_b", "--from", "%d:%d" % mid])
        ck.check(wait_caught_up(jdir3, "server_b", b), "--from: caught up")
        j = journal_entries(jdir3, "server_b")
        ck.check(j and ts_key(j[0]) == mid, "--from %d:%d: the journal starts there (%r)" % (mid + (j and ts_key(j[0]),)))
        check_mirror(jdir3, "server_b", b, "--from")
        ck.eq(cap.stop(), 0, "--from: SIGTERM exit status")
        cap = Capture(cfg3, ["--server", "server_a", "--from", "1000:1"])
        ck.check(wait_for(lambda: cap.p.poll() is not None, 15, 0.05), "--from before the oldest entry: exits")
        ck.eq(cap.stop(), 1, "--from before the oldest entry: exit status")
        ck.eq(len(gap_line(cap.text(), "server_a")), 1, "--from before the oldest entry: one line: %r" % cap.text())
    finally:
        if cap:
            cap.stop()
        a.stop()
        b.stop()


def main():
    tmp = tempfile.mkdtemp(prefix="mmm-capture-faults-")
    try:
        for name, fn in (("crash", crash_test), ("chain", chain_crash_test), ("failover", failover_test),
                         ("gap", gap_test)):
            if os.environ.get("MMM_CAPTURE_ONLY") and os.environ["MMM_CAPTURE_ONLY"] != name:
                continue
            t0 = time.monotonic()
            try:
                fn(tmp)
            except Exception as e:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                ck.check(False, "%s test raised %r" % (name, e))
            print("%s: %.1f s" % (name, time.monotonic() - t0), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
