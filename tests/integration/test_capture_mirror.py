#!/usr/bin/python3
"""mmm-capture against mongosim (issue 4): the journal mirrors the oplog.

Acceptance 1: a mixed workload on two masters at once for MMM_CAPTURE_SECS
(default 10) seconds -- inserts, every update form (replacement, $v:2 on A,
$v:1 on B via --oplog-format v1), deletes, transactions (small applyOps and
partialTxn chains through --txn-split-ops), DDL, plus writes to mmm.* that
are never kept -- and each master's `export-bson --source` is byte-identical
to its local.oplog.rs read directly from the capture start point on, minus
mmm.*, config.system.sessions and local.*.
Acceptance 5: an apply-shaped transaction (its applyOps holds an
mmm.checkpoints upsert "mmm:<origin>:<source>:w0"), also as a partialTxn
chain, and a DDL command bracketed by a ddl marker carry origin X; an
ordinary transaction carries the source itself (origins read with
build/tests/test_capture_origin --origins, as `mmm-journal dump` does not
show them).
Also: -n, SIGHUP reopening --log-file, SIGTERM exit 0, status in stat,
identity refusal when a source is pointed at another replica set.
"""
import json
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
from caplib import write_config, Capture, source_stat, status_of, kept_oplog, wait_caught_up, compare, BIN, CAPTURE  # noqa: E402


import bson  # noqa: E402
from bson.timestamp import Timestamp  # noqa: E402
from pymongo import ReturnDocument  # noqa: E402

ORIGINS = os.path.join(os.path.dirname(BIN), "tests", "test_capture_origin")
SECS = float(os.environ.get("MMM_CAPTURE_SECS") or 10)
ck = Checker("capture_mirror")
caplib.ck = ck


# ---- the workload ----

class Workload(threading.Thread):
    """Mixed writes on one master until stop is set."""

    def __init__(self, sim, seed, big_txn_ops):
        super().__init__(daemon=True)
        self.sim = sim
        self.rnd = random.Random(seed)
        self.stop = threading.Event()
        self.big = big_txn_ops
        self.ops = 0
        self.error = None
        self.kinds = set()

    def run(self):
        try:
            self.loop()
        except Exception as e:  # noqa: BLE001
            self.error = repr(e)

    def loop(self):
        c = self.sim.client()
        db = c.wl
        r = self.rnd
        n = 0
        step = 0
        while not self.stop.is_set():
            step += 1
            k = step % 16
            coll = db["c%d" % (step % 3)]
            if k == 0:
                coll.insert_many([{"_id": "m%d_%d" % (step, i), "a": [1, 2, 3], "s": {"x": i}} for i in range(5)])
                self.kinds.add("insert_many")
            elif k == 1:
                n += 1
                coll.insert_one({"_id": n, "a": [1, 2], "s": {"x": 1, "y": "z"}, "v": 0})
                self.kinds.add("insert")
            elif k == 2:
                coll.replace_one({"_id": n}, {"replaced": True, "v": r.randint(0, 9)})
                self.kinds.add("replace")
            elif k == 3:
                coll.update_one({"_id": n}, {"$set": {"s.x": r.randint(0, 99), "new": 1}, "$inc": {"v": 1}})
                self.kinds.add("set/inc")
            elif k == 4:
                coll.update_one({"_id": n}, {"$unset": {"new": ""}, "$push": {"a": r.randint(0, 9)}})
                self.kinds.add("unset/push")
            elif k == 5:
                coll.update_many({"a": {"$exists": True}}, {"$pull": {"a": 1}, "$addToSet": {"t": "x"}})
                self.kinds.add("update_many pull/addToSet")
            elif k == 6:
                coll.update_one({"_id": "up%d" % step}, {"$set": {"u": 1}}, upsert=True)
                self.kinds.add("upsert")
            elif k == 7:
                coll.find_one_and_update({"_id": n}, {"$set": {"a.0": 42}, "$pop": {"s.arr": 1}},
                                         return_document=ReturnDocument.AFTER)
                self.kinds.add("findAndModify")
            elif k == 8:
                coll.delete_one({"_id": n})
                self.kinds.add("delete")
            elif k == 9:
                coll.delete_many({"_id": {"$regex": "^m%d_" % (step - 9)}})
                self.kinds.add("delete_many")
            elif k == 10:
                with c.start_session() as s:
                    with s.start_transaction():
                        coll.insert_one({"_id": "t%d" % step, "x": 1}, session=s)
                        coll.update_one({"_id": "t%d" % step}, {"$set": {"x": 2}}, session=s)
                self.kinds.add("txn")
            elif k == 11:
                with c.start_session() as s:
                    with s.start_transaction():
                        for i in range(self.big + 3):
                            coll.insert_one({"_id": "bt%d_%d" % (step, i), "i": i}, session=s)
                        coll.delete_one({"_id": "bt%d_0" % step}, session=s)
                self.kinds.add("partialTxn")
            elif k == 12:
                db.mmmjunk.insert_one({"x": step})       # an ordinary collection named like us
                c.mmm.junk.insert_one({"x": step})       # never kept
                self.kinds.add("mmm.*")
            elif k == 13:
                name = "ddl%d" % step
                db.create_collection(name)
                db[name].create_index([("x", 1)], name="x_1")
                db[name].insert_one({"x": 1})
                db.command("collMod", name, validationLevel="moderate")
                db[name].drop_index("x_1")
                db[name].rename(name + "r")
                db[name + "r"].drop()
                self.kinds.add("ddl")
            elif k == 14 and step % 64 == 14:
                d2 = c["wl_drop%d" % step]
                d2.t.insert_one({"x": 1})
                c.drop_database(d2.name)
                self.kinds.add("dropDatabase")
            else:
                coll.find_one_and_delete({"_id": "up%d" % (step - 9)})
            self.ops += 1


def main():
    tmp = tempfile.mkdtemp(prefix="mmm-capture-mirror-")
    sims = []
    cap = None
    try:
        split = 4
        a = Sim(["--txn-split-ops", str(split)])
        sims.append(a)
        b = Sim(["--txn-split-ops", str(split), "--oplog-format", "v1"], replset="rsb")
        sims.append(b)
        ida, idb = str(uuid.uuid4()), str(uuid.uuid4())
        jdir = os.path.join(tmp, "j")
        cfg = os.path.join(tmp, "mmm.yml")
        write_config(cfg, [("server_a", ida, a.uri), ("server_b", idb, b.uri)], jdir)

        # -n checks the configuration and exits, touching nothing
        p = subprocess.run([CAPTURE, "-c", cfg, "-n"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ck.eq(p.returncode, 0, "-n exit status")
        ck.check(not os.path.exists(jdir), "-n created no journal")
        p = subprocess.run([CAPTURE, "-c", cfg, "--server", "nope", "-n"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        ck.eq(p.returncode, 2, "unknown --server exit status")
        ck.check(b"unknown server 'nope'" in p.stderr, "unknown --server message: %r" % p.stderr)
        p = subprocess.run([CAPTURE, "-c", cfg, "--server", "nope", "-n", "--log-format", "json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = json.loads(p.stderr.decode().splitlines()[0])
        except (ValueError, IndexError):
            line = {}
        ck.check("unknown server 'nope'" in line.get("msg", ""), "--log-format json: %r" % p.stderr)

        for s in (a, b):
            s.client().wl.pre.insert_one({"before": 1})
        logfile = os.path.join(tmp, "capture.log")
        cap = Capture(cfg, ["--log-file", logfile])
        ck.check(wait_for(lambda: all(source_stat(jdir, n) for n in ("server_a", "server_b")), 10, 0.05),
                 "both sources appear")
        wa, wb = Workload(a, 1, split), Workload(b, 2, split)
        wa.start()
        wb.start()
        # SIGHUP reopens the log file while writes go on
        time.sleep(min(2.0, SECS / 4))
        os.rename(logfile, logfile + ".1")
        cap.p.send_signal(signal.SIGHUP)
        time.sleep(max(0.0, SECS - min(2.0, SECS / 4)))
        wa.stop.set()
        wb.stop.set()
        wa.join(30)
        wb.join(30)
        for w, name in ((wa, "A"), (wb, "B")):
            ck.check(w.error is None, "workload on %s failed: %s" % (name, w.error))
            ck.check(w.ops > 50, "workload on %s ran (%d ops)" % (name, w.ops))
        print("workload: %d ops on A, %d on B; kinds %s" % (wa.ops, wb.ops, sorted(wa.kinds)), flush=True)
        for s, name in ((a, "server_a"), (b, "server_b")):
            ck.check(wait_caught_up(jdir, name, s), "%s caught up" % name)
        # the oplogs hold what the criterion asks for
        opa = [bson.BSON(r).decode() for r in kept_oplog(a)]
        ck.check(any(e["op"] == "c" and e["o"].get("partialTxn") for e in opa), "A's oplog has a partialTxn chain")
        ck.check(any(e["op"] == "u" and e["o"].get("$v") == 2 for e in opa), "A logs $v:2 updates")
        opb = [bson.BSON(r).decode() for r in kept_oplog(b)]
        ck.check(any(e["op"] == "u" and e["o"].get("$v") == 1 for e in opb), "B logs $v:1 updates")
        for ops, name in ((opa, "A"), (opb, "B")):
            cmds = {next(iter(e["o"])) for e in ops if e["op"] == "c"}
            for want in ("applyOps", "create", "drop", "renameCollection", "collMod", "dropDatabase"):
                ck.check(want in cmds, "%s's oplog has %s (has %s)" % (name, want, sorted(cmds)))
        ck.check(any(e["ns"].startswith("mmm.") for e in
                     a.client().local["oplog.rs"].find({}, {"ns": 1})), "A's oplog has mmm.* entries")
        for s, name in ((a, "server_a"), (b, "server_b")):
            compare(jdir, name, s, "after the workload")
        ck.check(os.path.exists(logfile), "SIGHUP reopened the log file")

        # ---- acceptance 5: origins ----
        origin_checks(a, ida, jdir, split)
        ck.check(wait_caught_up(jdir, "server_a", a), "server_a caught up after the origin transactions")
        compare(jdir, "server_a", a, "after the origin transactions")

        rc = cap.stop()
        ck.eq(rc, 0, "SIGTERM exit status")
        for sid, name in ((ida, "server_a"), (idb, "server_b")):
            st = status_of(jdir, sid)
            ck.check(st and st["state"] == "stopped" and st["name"] == name, "status of %s: %r" % (name, st))
        ck.check("capture stopped" in open(logfile).read(), "log went to the reopened file")

        # ---- identity: server_b's id pointed at another replica set ----
        with Sim(replset="other") as o:
            write_config(cfg, [("server_a", ida, a.uri), ("server_b", idb, o.uri)], jdir)
            cap2 = Capture(cfg, ["--server", "server_b"])
            t0 = time.monotonic()
            while cap2.p.poll() is None and time.monotonic() - t0 < 15:
                time.sleep(0.05)
            rc = cap2.stop()
            ck.eq(rc, 1, "capture of a changed replica set exits 1")
            ck.check("server 'server_b' is replica set 'other'" in cap2.text() and
                     "but the journal recorded 'rsb'" in cap2.text() and "refusing to capture" in cap2.text(),
                     "identity refusal message: %r" % cap2.text())
        compare(jdir, "server_b", b, "after the identity refusal")
    finally:
        if cap:
            cap.stop()
        for s in sims:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return ck.done()


def origins(jdir, name):
    p = subprocess.run([ORIGINS, "--origins", jdir, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    if p.returncode != 0:
        return None
    out = {}
    for line in p.stdout.decode().splitlines():
        t, o = line.split()
        s, i = t.split(":")
        out[(int(s), int(i))] = o
    return out


def origin_checks(a, ida, jdir, split):
    X = str(uuid.uuid4())
    c = a.client()
    marker = "mmm:%s:%s:w0" % (X, ida)
    coll = c.orig.t
    coll.insert_one({"_id": 0})

    seq = [0]

    def marked_txn(nops):
        # the marker changes every time, as apply's does (its ts moves): a
        # no-op update would not be logged at all
        seq[0] += 1
        with c.start_session() as s:
            with s.start_transaction():
                c.mmm.checkpoints.update_one(
                    {"_id": marker},
                    {"$set": {"origin": bson.Binary(uuid.UUID(X).bytes, 4),
                              "source": bson.Binary(uuid.UUID(ida).bytes, 4), "ts": Timestamp(1, seq[0])}},
                    upsert=True, session=s)
                for i in range(nops):
                    coll.update_one({"_id": 0}, {"$inc": {"n": 1}}, session=s)
                coll.delete_one({"_id": "none"}, session=s)

    before = a.last_ts()
    marked_txn(1)                       # one applyOps, marker inserted
    marked_txn(2)                       # marker updated ($v:2 diff; _id only in o2)
    mid = a.last_ts()
    marked_txn(split * 3)               # a partialTxn chain
    chain_end = a.last_ts()
    with c.start_session() as s:        # an ordinary transaction
        with s.start_transaction():
            coll.insert_one({"_id": 1}, session=s)
            coll.insert_one({"_id": 2}, session=s)
    plain = a.last_ts()
    # a DDL command bracketed by apply's ddl marker, closed by a checkpoint transaction
    c.mmm.checkpoints.replace_one({"_id": "mmm:%s:%s:ddl" % (X, ida)},
                                  {"origin": bson.Binary(uuid.UUID(X).bytes, 4),
                                   "source": bson.Binary(uuid.UUID(ida).bytes, 4),
                                   "ts": Timestamp(1, 2), "cmd": "origddl"}, upsert=True)
    c.origddl.create_collection("made")
    ddl = a.last_ts()
    marked_txn(1)
    c.origddl.create_collection("local_one")   # after the bracket closed: the source's own
    own_ddl = a.last_ts()
    # two origins' brackets open at once, on two databases, closed by each
    # origin's own checkpoint transaction
    Y = str(uuid.uuid4())
    for o, db in ((X, "origd1"), (Y, "origd2")):
        c.mmm.checkpoints.replace_one({"_id": "mmm:%s:%s:ddl" % (o, ida)},
                                      {"origin": bson.Binary(uuid.UUID(o).bytes, 4),
                                       "source": bson.Binary(uuid.UUID(ida).bytes, 4),
                                       "ts": Timestamp(2, 1), "cmd": db}, upsert=True)
    c.origd2.create_collection("y")
    ddl_y = a.last_ts()
    c.origd1.create_collection("x")
    ddl_x = a.last_ts()
    marked_txn(1)                               # closes X's bracket only
    c.origd2.y.create_index([("k", 1)])
    ddl_y2 = a.last_ts()
    c.origd1.create_collection("x2")
    own_ddl2 = a.last_ts()
    ck.check(wait_for(lambda: (source_stat(jdir, "server_a") or {}).get("last_ts") ==
                      "%d:%d" % (own_ddl2.time, own_ddl2.inc), 10, 0.05), "origin entries journaled")
    org = origins(jdir, "server_a")
    if not ck.check(org, "test_capture_origin --origins"):
        return
    ents = {}
    for r in kept_oplog(a, (before.time, before.inc)):
        d = bson.BSON(r).decode()
        ents[(d["ts"].time, d["ts"].inc)] = d
    k = lambda t: (t.time, t.inc)  # noqa: E731
    marked = [t for t, d in ents.items() if t > k(before) and t <= k(chain_end) and d["op"] == "c"]
    ck.check(len(marked) >= 2 + 3, "the marked transactions are %d entries (a chain)" % len(marked))
    ck.check(any(ents[t]["o"].get("partialTxn") for t in marked if t > k(mid)), "the last one is a partialTxn chain")
    if any(org.get(t) != X for t in marked) or org.get(k(own_ddl)) != ida:
        for t in sorted(ents):
            d = ents[t]
            print("  %s %s %s %s %s" % (t, d["op"], d["ns"], org.get(t), [(x["op"], x["ns"], x.get("o2"))
                                         for x in d["o"].get("applyOps", [])] or d["o"]), flush=True)
    for t in marked:
        ck.eq(org.get(t), X, "origin of marked transaction entry %s (%s)" % (t, list(ents[t]["o"])[:2]))
    plains = [t for t in ents if k(chain_end) < t <= k(plain)]
    ck.check(plains, "the ordinary transaction was journaled")
    for t in plains:
        ck.eq(org.get(t), ida, "origin of the ordinary transaction %s" % (t,))
    ck.eq(org.get(k(ddl)), X, "origin of the bracketed create (%s)" % ents.get(k(ddl), {}).get("o"))
    ck.eq(org.get(k(own_ddl)), ida, "origin of the create after the bracket closed")
    ck.eq(org.get(k(ddl_y)), Y, "origin of Y's create while X's bracket is open too")
    ck.eq(org.get(k(ddl_x)), X, "origin of X's create while Y's bracket is open too")
    ck.eq(org.get(k(ddl_y2)), Y, "Y's bracket survives X's checkpoint (%s)" % ents.get(k(ddl_y2), {}).get("o"))
    ck.eq(org.get(k(own_ddl2)), ida, "X's bracket closed by X's checkpoint")
    ck.check(not any(d["ns"].startswith("mmm.") for t, d in ents.items() if t in org),
             "markers themselves are not journaled")


if __name__ == "__main__":
    sys.exit(main())
