"""conflictlib — the harness of the conflict tests (issue 7, apply/CONFLICTS.md):
test_conflicts_random.py, test_conflicts_cases.py and tests/bench/bench_conflicts.py.

    with CMesh(3, conflicts=True, offsets={"a": -120, "b": 480}) as m:
        m.start()                        # one mmm-capture per master, full mesh test.*, one mmm-apply
        ...writes through m.c[name]...
        ok, secs, why = m.drain(60)      # caught up, quiet, and `mmm verify` exits 0
        recs = m.conflicts()             # `mmm-journal conflicts --json`, parsed (None: no such command)

    r = random_run(seed=7, n=3, secs=5)  # the randomised run of acceptance 1: a dict of figures

Stamps here are tuples (wall ms, origin UUID bytes, (ts seconds, ts inc), k)
and compare as the design says: wall, origin bytes, ts, index in applyOps.
"""
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from applylib import BIN, Mesh, Proc, _retry_exec  # noqa: E402
from simlib import wait_for  # noqa: E402

import bson  # noqa: E402
from bson.son import SON  # noqa: E402
from bson.timestamp import Timestamp  # noqa: E402
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError  # noqa: E402

os.environ.setdefault("MONGOC_DISABLE_SHM", "1")
MMM = os.path.join(BIN, "mmm")
MJ = os.path.join(BIN, "mmm-journal")
CAPTURE = os.path.join(BIN, "mmm-capture")
APPLY = os.path.join(BIN, "mmm-apply")


def run(argv, timeout=120):
    """(exit status, stdout, stderr) of ARGV, as text."""
    p = _retry_exec(lambda: subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           stdin=subprocess.DEVNULL, timeout=timeout))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def ts_str(ts):
    return "%d:%d" % (ts.time, ts.inc)


def parse_ts(s):
    sec, inc = s.split(":")
    return Timestamp(int(sec), int(inc))


def iso_ms(wall_ms):
    """2026-11-29T08:00:00.123Z, as the conflict log writes walls."""
    d = datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=wall_ms)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (wall_ms % 1000)


def wall_ms(dt):
    """Milliseconds since the epoch of a naive UTC datetime (as pymongo returns dates)."""
    return int(round((dt - datetime.datetime(1970, 1, 1)).total_seconds() * 1000))


def enc(doc):
    """BSON bytes (field order and types count) of a document, None for absent."""
    return None if doc is None else bson.BSON.encode(doc)


class CMesh(Mesh):
    """A full mesh of N mongosims for the conflict tests.  conflicts=False
    writes `apply: {conflicts: false}` into the config; offsets: {name: ms}
    given to each server's mongosimClock before anything is captured."""

    def __init__(self, n, conflicts=True, offsets=None, sim_args=None):
        super().__init__(n, sim_args=sim_args)
        self.conflicts_on = conflicts
        self.caps = {}
        self.offsets = dict((nm, 0) for nm in self.names)
        if not conflicts:
            self.write_config("apply:\n  conflicts: false\n")
        for nm, off in (offsets or {}).items():
            self.set_offset(nm, off)
        # a negative offset puts a server's clock behind the entries it wrote
        # at start-up; stamps assume a master's clock never steps back, so
        # nothing is written until every clock is past its newest entry
        if not wait_for(lambda: all(self.clock_ms(nm) > self.last_wall(nm) + 2 for nm in self.names), 10, 0.01):
            raise RuntimeError("clocks did not pass the start-up entries: %s" % self.offsets)

    def clock_ms(self, nm):
        """NM's wall clock now (ms), from this machine's clock and the offset set."""
        return int(time.time() * 1000) + self.offsets[nm]

    def last_wall(self, nm):
        e = list(self.c[nm].local["oplog.rs"].find({}, {"wall": 1}).sort("$natural", -1).limit(1))
        return wall_ms(e[0]["wall"]) if e else 0

    keep = False     # set: the scratch directory stays (printed) even when no exception
    dbs = ("test", "test2")   # the databases written (test2: test_conflicts_cases' later cases)

    def __exit__(self, *a):
        if self.keep and a[0] is None:
            self.close()
            print("kept %s" % self.tmp)
            return
        super().__exit__(*a)

    def set_offset(self, nm, ms):
        self.c[nm].admin.command(SON([("mongosimClock", SON([("offsetMs", int(ms))]))]))
        self.offsets[nm] = int(ms)

    def start(self, ns="test.*", apply=True):
        for nm in self.names:
            self.start_capture(nm)
        self.full_mesh(ns)
        if apply:
            self.start_apply()

    def start_capture(self, nm):
        first = self.first_ts(nm)
        argv = [CAPTURE, "-c", self.config, "--server", nm, "--from", ts_str(first)]
        p = Proc(argv, os.path.join(self.tmp, "capture-%s.log" % nm))
        self.procs.append(p)
        self.caps[nm] = p
        return p

    def start_apply(self):
        return self.apply()

    def stop_apply(self):
        rc = self.app.term() if self.app else None
        self.app = None
        return rc

    def daemons(self):
        """{label: Proc} of the running capture and apply processes."""
        out = dict(("capture-%s" % nm, p) for nm, p in self.caps.items() if p.alive())
        if self.app and self.app.alive():
            out["apply"] = self.app
        return out

    # -- tools --
    def mmm(self, *args, timeout=120):
        return run([MMM, "-c", self.config] + list(args), timeout)

    def mj(self, *args, timeout=120):
        return run([MJ, "-c", self.config] + list(args), timeout)

    def status(self):
        rc, out, err = self.mmm("status", "--json")
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    def verify(self, links=()):
        """`mmm verify`, of every link or of LINKS ("a/test.x=b/test.x")."""
        args = []
        for l in links:
            args += ["--link", l]
        return self.mmm("verify", *args)

    def conflicts(self, *args):
        """Records of `mmm-journal conflicts --json [ARGS]` (list of dicts), or
        None when the command is not there (yet)."""
        rc, out, err = self.mj("conflicts", "--json", *args)
        if rc != 0:
            self.conflicts_err = (rc, err.strip())
            return None
        recs = []
        for line in out.splitlines():
            if line.strip():
                recs.append(json.loads(line))
        return recs

    # -- state --
    def oplog_last(self, nm, data=False):
        """ts of NM's newest oplog entry that is not a no-op (DATA: newest
        write to a test.* or test2.* collection, alone or inside applyOps)."""
        q = {"op": {"$ne": "n"}}
        if data:
            q = {"$or": [{"ns": {"$regex": "^test[0-9]*\\."}}, {"o.applyOps.ns": {"$regex": "^test[0-9]*\\."}}]}
        e = list(self.c[nm].local["oplog.rs"].find(q, {"ts": 1}).sort("$natural", -1).limit(1))
        return e[0]["ts"] if e else Timestamp(0, 0)

    def snapshot(self):
        """(caught up, state).  Caught up: every master's newest write to test.*
        (or test2.*) is journaled and applied by every link from it, without
        errors.  State: those positions and every master's dbHashes (compared
        over time to tell quiet: apply's idle checkpoints never stop moving
        the oplogs, so only data counts)."""
        st = self.status()
        if st is None:
            return False, None
        last = dict((s["name"], parse_ts(s["last_ts"])) for s in st["sources"])
        dl = dict((nm, self.oplog_last(nm, data=True)) for nm in self.names)
        up = all(nm in last and last[nm] >= dl[nm] for nm in self.names)
        nlinks = 0
        for l in st["links"]:
            nlinks += 1
            app = parse_ts(l["applied_ts"])
            if l["src"] in dl and app < dl[l["src"]]:
                up = False
            if l["last_error"] or l["state"] not in ("running", "idle"):
                up = False
        if nlinks < len(self.names) * (len(self.names) - 1):
            up = False
        hashes = tuple((nm, db, tuple(sorted(self.dbhash(nm, db).items()))) for nm in self.names for db in self.dbs)
        state = (tuple(sorted((k, (v.time, v.inc)) for k, v in dl.items())), hashes)
        return up, state

    drained = False   # after drain(): every link caught up and nothing moving (whether or not verify agreed)

    def drain(self, timeout=60.0, quiet=0.6, give_up=10.0, links=()):
        """Waits until every link drained, nothing changed in test.* for QUIET
        seconds and `mmm verify` (of LINKS, else of every link) exits 0 with
        nothing moving meanwhile.
        Gives up after TIMEOUT seconds, or once everything has been caught up
        and still for GIVE_UP seconds with verify still finding differences.
        Returns (ok, seconds, what the last verify printed); self.drained
        tells a difference (True) from a drain still going on (False)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        prev, since, out = None, t0, ""
        self.drained = False
        while True:
            up, state = self.snapshot()
            now = time.monotonic()
            if state != prev:
                prev, since = state, now
            elif up and now - since >= quiet:
                rc, out, err = self.verify(links)
                out = out + err
                up2, state2 = self.snapshot()
                if rc == 0 and up2 and state2 == state:
                    self.drained = True
                    return True, time.monotonic() - t0, out
            if now > deadline or (up and now - since >= give_up):
                rc, vout, err = self.verify(links)
                self.drained = up and now - since >= quiet
                return False, time.monotonic() - t0, "%s after %.1f s: links caught up %s, test.* still for %.1f s; verify exit %d:\n%s%s" % (
                    "masters differ" if self.drained else "not drained", now - t0, up, now - since, rc, vout, err)
            time.sleep(0.1)

    def docs_by_id(self, nm, db="test", coll="docs"):
        return dict((enc(SON([("_id", d["_id"])])), d) for d in self.c[nm][db][coll].find({}))

    def differing(self, db="test", coll="docs", limit=10):
        """[(_id, {master: doc or None})] of the documents that differ."""
        per = dict((nm, self.docs_by_id(nm, db, coll)) for nm in self.names)
        keys = set()
        for d in per.values():
            keys.update(d.keys())
        out = []
        for k in sorted(keys):
            vals = dict((nm, per[nm].get(k)) for nm in self.names)
            if len(set(enc(v) for v in vals.values())) > 1:
                out.append((bson.BSON(k).decode()["_id"], vals))
        return out[:limit], len(out)

    def report(self, label, db="test", colls=("docs", "other")):
        """Prints what differs and the daemons' last log lines."""
        for coll in colls:
            diffs, total = self.differing(db, coll)
            if total:
                print("%s: %d documents of %s.%s differ; the first %d:" % (label, total, db, coll, len(diffs)))
                try:
                    ws = writes_by_doc(self, ("%s.%s" % (db, coll),))
                except Exception as e:  # noqa: BLE001
                    print("  (writes not read: %r)" % (e,))
                    ws = {}
                for _id, vals in diffs:
                    print("  _id %r" % (_id,))
                    for nm, v in sorted(vals.items()):
                        print("    %s: %s" % (nm, None if v is None else dict(v)))
                    w = ws.get(("%s.%s" % (db, coll), enc(SON([("_id", _id)]))), [])
                    try:
                        f = None
                        for st, wnm, op in w:
                            f = apply_write(f, op)
                        print("    the fold of its %d writes in stamp order: %s" % (len(w), None if f is None else dict(f)))
                    except FoldError as e:
                        print("    (no fold: %s)" % e)
                    for st, wnm, op in w[-12:]:
                        print("    write on %s wall %s ts %d:%d k %d: %s %s" % (
                            wnm, iso_ms(st[0]), st[2][0], st[2][1], st[3], op["op"], dict(op.get("o") or {})))
        st = self.status()
        if st:
            for l in st["links"]:
                print("  link %s->%s %s applied %s conflicts %s %s" % (l["src"], l["dst"], l["state"], l["applied_ts"],
                                                                    l.get("conflicts"), l["last_error"]))
            for s in st["sources"]:
                print("  source %s %s last %s" % (s["name"], s["state"], s["last_ts"]))
        for nm in self.names:
            print("  oplog %s last %s, last test.* write %s (clock offset %d ms)" % (
                nm, ts_str(self.oplog_last(nm)), ts_str(self.oplog_last(nm, data=True)), self.offsets[nm]))
        for p in self.procs:
            try:
                tail = p.log()[-2500:]
                print("---- %s (tail)\n%s" % (p.log_path, tail))
            except Exception:  # noqa: BLE001
                pass


# ---- stamps ------------------------------------------------------------------

def stamp_of(m, nm, entry, k=0):
    """Stamp of a write of master NM from its oplog entry."""
    return (wall_ms(entry["wall"]), uuid.UUID(m.ids[nm]).bytes, (entry["ts"].time, entry["ts"].inc), k)


def stamp_json(rec_stamp):
    """Stamp tuple of a conflict-log stamp object {origin_uuid, ts, wall, k}."""
    ts = parse_ts(rec_stamp["ts"])
    return (rec_stamp.get("wall"), uuid.UUID(rec_stamp["origin_uuid"]).bytes, (ts.time, ts.inc), rec_stamp.get("k", 0))


def rec_stamp_key(s):
    """(origin uuid bytes, (sec, inc), k) of a conflict-log stamp object: what names a write."""
    ts = parse_ts(s["ts"])
    return (uuid.UUID(s["origin_uuid"]).bytes, (ts.time, ts.inc), int(s.get("k", 0)))


def iso_to_ms(s):
    """ms since the epoch of 2026-11-29T08:00:00.123Z."""
    d = datetime.datetime.strptime(s.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
    return wall_ms(d)


def rec_order_ok(rec):
    """A record's late stamp orders before its newer stamp."""
    try:
        late = (iso_to_ms(rec["late"]["wall"]),) + rec_stamp_key(rec["late"])
        newer = (iso_to_ms(rec["newer"]["wall"]),) + rec_stamp_key(rec["newer"])
    except (KeyError, ValueError):
        return False
    return late < newer


# ---- the fold, independently (CONFLICTS.md §5: every master ends with F(W)) ----

class FoldError(Exception):
    pass


def _arr_diff(pre, diff):
    """An array diff {a: true, l?, u<N>?, s<N>?} applied to list PRE
    (document_diff_applier.cpp applyDiffToArray, as apply/diff.c says)."""
    size = diff.get("l")
    mods = []
    for k, v in diff.items():
        if k in ("a", "l"):
            continue
        if k[0] not in "us" or not k[1:].isdigit():
            raise FoldError("array diff key %r" % k)
        mods.append((int(k[1:]), k[0], v))
    mods.sort(key=lambda x: x[0])
    out = []
    nxt = 0
    for idx, kind, v in mods:
        while nxt < idx:
            out.append(pre[nxt] if nxt < len(pre) else None)
            nxt += 1
        if kind == "u":
            out.append(v)
        else:
            cur = pre[idx] if idx < len(pre) else None
            out.append(_sub(cur, v))
        nxt = idx + 1
    end = size if size is not None else len(pre)
    while nxt < end:
        out.append(pre[nxt] if nxt < len(pre) else None)
        nxt += 1
    if size is not None:
        out = out[:size]
    return out


def _sub(cur, sub):
    """A sub-diff applied to the value CUR: array diffs to arrays, document
    diffs to documents, anything else gives null."""
    if len(sub) and list(sub.keys())[0] == "a":
        return _arr_diff(cur, sub) if isinstance(cur, list) else None
    return _obj_diff(cur, sub) if isinstance(cur, dict) else None


def _obj_diff(pre, diff):
    """A $v:2 document diff (sections d, u, i, s<field>) applied to PRE:
    the pre-image walked in order (d dropped, u replaced in place, i
    skipped, s recursed), then the u fields it lacked and every i field
    appended, u first, each in diff order."""
    dels, upd, ins, subs = set(), SON(), SON(), SON()
    for k, v in diff.items():
        if k[0] == "d":
            dels.update(v.keys())
        elif k[0] == "u":
            upd.update(v)
        elif k[0] == "i":
            ins.update(v)
        elif k[0] == "s":
            subs[k[1:]] = v
        else:
            raise FoldError("diff section %r" % k)
    out = SON()
    for f, v in pre.items():
        if f in dels or f in ins:
            continue
        if f in upd:
            out[f] = upd[f]
        elif f in subs:
            out[f] = _sub(v, subs[f])
        else:
            out[f] = v
    for f, v in upd.items():
        if f not in pre:
            out[f] = v
    for f, v in ins.items():
        out[f] = v
    return out


def apply_write(doc, op):
    """The document after oplog op OP (an entry or an applyOps op) on DOC (None: absent):
    an insert or a replacement gives its document, a delete absent, a $v:2
    update its diff applied (nothing when absent)."""
    if op["op"] == "i":
        return op["o"]
    if op["op"] == "d":
        return None
    o = op["o"]
    keys = list(o.keys())
    if keys and keys[0].startswith("$"):
        if doc is None:
            return None    # a modifier update of an absent document does nothing
        if o.get("$v") == 2 and "diff" in o:
            return _obj_diff(doc, o["diff"])
        raise FoldError("update form %r" % keys)
    # a replacement is a full image (CONFLICTS.md §3: a re-derivation may start
    # from it), so it gives the document whether or not one was there
    if "_id" in o:
        return o
    return SON([("_id", op["o2"]["_id"])] + list(o.items()))


def local_writes(m, nm, nss):
    """[(stamp, ns, _id, op)] of every write made on master NM itself to a
    namespace in NSS: top-level i/u/d entries and the ops of transactions
    that carry no apply marker (mmm.checkpoints)."""
    out = []
    origin = uuid.UUID(m.ids[nm]).bytes
    top = 0
    for e in m.c[nm].local["oplog.rs"].find({}).sort("$natural", 1):
        w = wall_ms(e["wall"])
        top = max(top, w)        # walls made monotonic per origin (they are here: clocks only move forward)
        ts = (e["ts"].time, e["ts"].inc)
        if e["op"] in "iud" and e["ns"] in nss:
            _id = e["o2"]["_id"] if e["op"] == "u" else e["o"]["_id"]
            out.append(((top, origin, ts, 0), e["ns"], _id, e))
        elif e["op"] == "c" and "applyOps" in e["o"]:
            ops = e["o"]["applyOps"]
            if any(o.get("ns") == "mmm.checkpoints" for o in ops):
                continue
            if e.get("partialTxn") or e["o"].get("partialTxn"):
                raise FoldError("partial transaction chains are not folded here")
            for k, o in enumerate(ops):
                if o["op"] in "iud" and o["ns"] in nss:
                    _id = o["o2"]["_id"] if o["op"] == "u" else o["o"]["_id"]
                    out.append(((top, origin, ts, k), o["ns"], _id, o))
    return out


def writes_by_doc(m, nss):
    """{(ns, {_id} bytes): [(stamp, master, op)] in stamp order} of every master's own writes."""
    per_doc = {}
    for nm in m.names:
        for st, ns, _id, op in local_writes(m, nm, set(nss)):
            per_doc.setdefault((ns, enc(SON([("_id", _id)]))), []).append((st, nm, op))
    for v in per_doc.values():
        v.sort(key=lambda x: x[0])
    return per_doc


def check_fold(m, nss=("test.docs", "test.other"), limit=5):
    """Compares every master's documents of NSS with the fold of all the
    masters' own writes in stamp order (field order and types included).
    Returns (documents compared, [(ns, _id, {master: doc}, fold, writes)])."""
    per_doc = writes_by_doc(m, nss)
    have = {}
    for nm in m.names:
        for ns in nss:
            db, coll = ns.split(".", 1)
            for d in m.c[nm][db][coll].find({}):
                have.setdefault((ns, enc(SON([("_id", d["_id"])]))), {})[nm] = d
    bad = []
    keys = set(per_doc) | set(have)
    for key in sorted(keys):
        ws = sorted(per_doc.get(key, []), key=lambda x: x[0])
        doc = None
        for st, nm, op in ws:
            doc = apply_write(doc, op)
        got = have.get(key, {})
        if any(enc(got.get(nm)) != enc(doc) for nm in m.names):
            bad.append((key[0], bson.BSON(key[1]).decode()["_id"], dict((nm, got.get(nm)) for nm in m.names), doc, ws))
    return len(keys), bad


def print_fold_mismatch(ns, _id, got, want, ws, log=print):
    log("  %s _id %r: the fold of its %d writes in stamp order gives %s" % (ns, _id, len(ws), None if want is None else dict(want)))
    for nm, d in sorted(got.items()):
        log("    %s has %s" % (nm, None if d is None else dict(d)))
    for st, nm, op in ws[-12:]:
        log("    write on %s wall %s ts %d:%d k %d: %s %s" % (nm, iso_ms(st[0]), st[2][0], st[2][1], st[3], op["op"],
                                                         dict(op.get("o") or {})))


# ---- the randomised workload (acceptance 1) ------------------------------------

HOT = 20          # half the operations go to ids below HOT: many same-document writes on several masters
NDOCS = 200


def _pick_id(rng, owned, t):
    if owned is not None:
        # thread t owns the ids equal to t modulo the thread count
        k = rng.randrange(NDOCS // owned)
        return k * owned + t
    return rng.randrange(HOT) if rng.random() < 0.5 else rng.randrange(NDOCS)


def _full_doc(rng, _id, who):
    d = SON([("_id", _id), ("who", who), ("n", rng.randrange(100))])
    for k in rng.sample(range(6), rng.randrange(4)):
        d["f%d" % k] = rng.choice([rng.randrange(1000), "s%d" % rng.randrange(1000), None, True])
    if rng.random() < 0.6:
        d["sub"] = SON([("x", rng.randrange(10)), ("y", "v%d" % rng.randrange(10))])
    if rng.random() < 0.6:
        d["arr"] = [rng.randrange(10) for _ in range(rng.randrange(4))]
    return d


def _update(rng, who):
    """A modifier update touching up to four disjoint top-level fields."""
    upd = SON()
    cats = rng.sample(["f", "sub", "n", "arr", "who"], rng.randrange(1, 5))
    for c in cats:
        r = rng.random()
        if c == "f":
            f = "f%d" % rng.randrange(6)
            if r < 0.75:
                upd.setdefault("$set", SON())[f] = rng.choice([rng.randrange(1000), "u%d" % rng.randrange(100), [1, 2]])
            else:
                upd.setdefault("$unset", SON())[f] = ""
        elif c == "sub":
            if r < 0.7:
                upd.setdefault("$set", SON())["sub.%s" % rng.choice("xyz")] = rng.randrange(100)
            elif r < 0.85:
                upd.setdefault("$set", SON())["sub"] = SON([("y", "w%d" % rng.randrange(10))])
            else:
                upd.setdefault("$unset", SON())["sub"] = ""
        elif c == "n":
            upd.setdefault("$inc", SON())["n"] = rng.randrange(1, 5)
        elif c == "arr":
            if r < 0.6:
                upd.setdefault("$push", SON())["arr"] = rng.randrange(100)
            else:
                upd.setdefault("$pop", SON())["arr"] = rng.choice([1, -1])
        else:
            upd.setdefault("$set", SON())["who"] = who
    return upd


class Workload:
    """THREADS writer threads on test.docs (and a little on test.other) of
    every master, seeded.  owned=None: every thread writes any document on
    any master (same-document writes on several masters all the time);
    owned=K: thread t writes only to master t mod N and the ids equal to t
    modulo THREADS (no concurrency on a document: the harness's control)."""

    def __init__(self, m, seed, threads=8, rate=None, owned=False, txns=True):
        self.m, self.seed, self.threads = m, seed, threads
        self.rate = rate
        self.owned = threads if owned else None
        self.txns = txns
        self.stop = threading.Event()
        self.ops = [0] * threads
        self.errors = []
        self.ignored = [0] * threads
        self.th = []

    def _one(self, t, rng):
        m = self.m
        nm = m.names[t % len(m.names)] if self.owned else rng.choice(m.names)
        cl = m.c[nm]
        coll = cl.test.docs if rng.random() < 0.9 else cl.test.other
        _id = _pick_id(rng, self.owned, t)
        who = "%s/t%d" % (nm, t)
        r = rng.random()
        try:
            if r < 0.15:
                coll.insert_one(_full_doc(rng, _id, who))
            elif r < 0.25:
                coll.replace_one({"_id": _id}, _full_doc(rng, _id, who), upsert=rng.random() < 0.3)
            elif r < 0.80:
                coll.update_one({"_id": _id}, _update(rng, who))
            elif r < 0.93 or not self.txns:
                coll.delete_one({"_id": _id})
            else:
                ids = sorted(set(_pick_id(rng, self.owned, t) for _ in range(3)))
                with cl.start_session() as s:
                    with s.start_transaction():
                        for i in ids:
                            if rng.random() < 0.8:
                                cl.test.docs.update_one({"_id": i}, _update(rng, who), session=s)
                            else:
                                cl.test.docs.delete_one({"_id": i}, session=s)
        except DuplicateKeyError:
            self.ignored[t] += 1
        except OperationFailure:
            # an update that does not fit the document as it is (types), a
            # transaction's write conflict: the client's own business
            self.ignored[t] += 1
        self.ops[t] += 1

    def _writer(self, t):
        rng = random.Random(self.seed * 1000 + t)
        nxt = time.monotonic()
        try:
            while not self.stop.is_set():
                self._one(t, rng)
                if self.rate:
                    nxt += 1.0 / self.rate
                    d = nxt - time.monotonic()
                    if d > 0:
                        self.stop.wait(d)
        except PyMongoError as e:
            self.errors.append("thread %d: %r" % (t, e))
        except Exception as e:  # noqa: BLE001
            self.errors.append("thread %d: %r" % (t, e))

    def seed_docs(self):
        """Every id inserted once, on the master of its id modulo N."""
        m = self.m
        for i, nm in enumerate(m.names):
            ids = [k for k in range(NDOCS) if k % len(m.names) == i]
            rng = random.Random(self.seed * 7 + i)
            m.c[nm].test.docs.insert_many([_full_doc(rng, k, nm) for k in ids])

    def start(self):
        self.th = [threading.Thread(target=self._writer, args=(t,), daemon=True) for t in range(self.threads)]
        for th in self.th:
            th.start()

    def finish(self):
        self.stop.set()
        for th in self.th:
            th.join(60)


class Pauser:
    """SIGSTOPs a randomly chosen daemon (seeded) for 100-800 ms, every
    200-1000 ms, until stopped; every daemon is SIGCONTed at the end."""

    def __init__(self, m, seed, lo=0.1, hi=0.8):
        self.m, self.rng, self.lo, self.hi = m, random.Random(seed * 31 + 5), lo, hi
        self.stop = threading.Event()
        self.count = 0
        self.paused = None
        self.th = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self.stop.is_set():
                if self.stop.wait(self.rng.uniform(0.2, 1.0)):
                    break
                d = self.m.daemons()
                if not d:
                    continue
                name = self.rng.choice(sorted(d))
                p = d[name]
                try:
                    p.p.send_signal(signal.SIGSTOP)
                    self.paused = p
                    self.count += 1
                    self.stop.wait(self.rng.uniform(self.lo, self.hi))
                finally:
                    p.p.send_signal(signal.SIGCONT)
                    self.paused = None
        finally:
            for p in self.m.procs:
                if p.alive():
                    p.p.send_signal(signal.SIGCONT)

    def start(self):
        self.th.start()

    def finish(self):
        self.stop.set()
        self.th.join(10)
        for p in self.m.procs:
            if p.alive():
                p.p.send_signal(signal.SIGCONT)


def offsets_for(seed, names, spread=500):
    rng = random.Random(seed * 131 + 17)
    return dict((nm, rng.randint(-spread, spread)) for nm in names)


def random_run(seed, n, secs, conflicts=True, owned=False, threads=8, rate=None, pauses=True,
               drain_timeout=60.0, fold=True, log=print):
    """One run of acceptance 1.  Returns a dict: seed, n, ok (every master
    identical after the drain), ops, pauses, drain_s, conflicts (records in
    the log, None when the command is missing), bad_records (records whose
    late stamp does not order before their newer one, or duplicates),
    errors (writer errors), fold_docs/fold_bad (documents compared with the
    fold of their writes in stamp order, and how many differ: FOLD), why
    (text when not ok)."""
    res = {"seed": seed, "n": n, "ok": False, "ops": 0, "pauses": 0, "drain_s": None,
           "conflicts": None, "bad_records": [], "errors": [], "why": ""}
    offs = offsets_for(seed, ["a", "b", "c", "d"][:n])
    t0 = time.monotonic()
    with CMesh(n, conflicts=conflicts, offsets=offs) as m:
        try:
            m.start()
            w = Workload(m, seed, threads=threads, rate=rate, owned=owned)
            w.seed_docs()
            pz = Pauser(m, seed) if pauses else None
            w.start()
            if pz:
                pz.start()
            w.stop.wait(secs)
            w.finish()
            if pz:
                pz.finish()
                res["pauses"] = pz.count
            res["ops"] = sum(w.ops)
            res["errors"] = list(w.errors)
            ok, dsecs, out = m.drain(drain_timeout)
            res["drain_s"] = dsecs
            res["drained"] = m.drained
            res["ok"] = ok and not w.errors
            alive = set(m.daemons())
            want = set(["capture-%s" % nm for nm in m.names] + ["apply"])
            if alive != want:
                res["ok"] = False
                out += "\ndaemons gone: %s" % sorted(want - alive)
            if ok and fold:
                try:
                    ndocs, bad = check_fold(m)
                    res["fold_docs"], res["fold_bad"] = ndocs, len(bad)
                    if bad:
                        res["ok"] = False
                        out += "\n%d of %d documents are not the fold of their writes in stamp order" % (len(bad), ndocs)
                        log("run seed %d, %d masters: %d of %d documents identical everywhere but not the fold of their writes:"
                            % (seed, n, len(bad), ndocs))
                        for b in bad[:5]:
                            print_fold_mismatch(*b, log=log)
                except FoldError as e:
                    res["fold_error"] = str(e)
            recs = m.conflicts()
            st = m.status() or {}
            res["conflicts_logged"] = st.get("conflicts_logged")
            if recs is not None:
                res["conflicts"] = len(recs)
                seen = set()
                for r in recs:
                    key = (r.get("ns"), json.dumps(r.get("_id"), sort_keys=True), json.dumps(r.get("late"), sort_keys=True))
                    if key in seen or not rec_order_ok(r):
                        res["bad_records"].append(r)
                    seen.add(key)
            else:
                res["conflicts_err"] = getattr(m, "conflicts_err", None)
            if not res["ok"]:
                res["why"] = out
                log("run seed %d, %d masters, offsets %s: NOT converged after %.1f s (%s)" % (
                    seed, n, offs, dsecs, "; ".join(w.errors) or "writers ok"))
                log(out)
                m.report("seed %d" % seed)
                m.keep = True
        except Exception:
            m.report("seed %d (exception)" % seed)
            raise
    res["total_s"] = time.monotonic() - t0
    res["offsets"] = offs
    return res
