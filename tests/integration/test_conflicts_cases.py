#!/usr/bin/python3
"""Issue 7, acceptance 2: conflicts constructed one by one.

Two masters a and b, full mesh test.*, one mmm-capture per master.  The
base documents (test.cases, one _id per case) are inserted on a and drained
to b; then mmm-apply stops and each case makes its writes on a and b in a
chosen stamp order, each master's clock only ever moved forward
(mongosimClock) so that the next write is the newest, except in "skew",
where b's clock runs 3 s ahead and b writes first: a's later write is then
the older one.  Once capture has journaled everything, mmm-apply starts
again and the links drain.  The expected outcome is computed from the
stamps read back from the oplogs (wall, origin UUID, ts, index in
applyOps), not from the intended order:

- every master holds, for each _id, the fold of its writes in stamp order
  (the same BSON bytes: field order counts);
- the conflict log holds exactly one record per late write (a write that
  reached a master holding a write of that document with a greater stamp),
  with its ns, _id, master, late and newer stamps (origin, ts, wall, k), and
  how, base and result as a re-derivation gives them: the fold of the
  master's own writes and the others' up to the newest it holds or is being
  given, from the newest full image among them;
- `mmm-journal conflicts` (text) prints one line per record, --ns and
  --since filter; `mmm status --json` counts the records (conflicts_logged)
  and, per link, the records of its destination involving its source.

Cases: update/update on the same field (both orders), on different fields
(the order of the new fields is the fold's), update then delete, delete then
update, insert/insert of one _id, an update inside a sub-document that an
older write removed (the newer $v:2 sub-diff finds nothing to change), delete / update / re-insert, replacement
then update, a clock running ahead, a transaction's two ops (k 0 and 1)
each with a conflict of its own, three writes of one document alternating
masters, and a document written on one master only (no record).  Then,
apply running, a late local write: a client on a master whose clock is
behind overwrites a newer write that already reached it; and an update that
reached a master where its document was deleted (it changes nothing) but
still orders a later insert with an older stamp behind it.
"""
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conflictlib import CMesh, enc, iso_ms, parse_ts, stamp_of, ts_str  # noqa: E402
from simlib import Checker, wait_for  # noqa: E402
from bson.son import SON  # noqa: E402

ck = Checker("conflicts-cases")
NS_DB, NS_COLL = "test", "cases"
NS = "%s.%s" % (NS_DB, NS_COLL)
DB2 = "test2"
NS2 = "%s.%s" % (DB2, NS_COLL)
VERIFY2 = ["a/%s=b/%s" % (NS2, NS2)]


def S(*kv):
    return SON(list(kv))


# name: (base document fields or None, [(master, kind, arg, clock)], stamp order of the steps or None)
# kind: insert/replace (arg: the document without _id), update (arg: {$set, $unset}), delete, txn
# (arg: [(_id, update)]); clock: "newest" (default: move the master's clock past every wall so far),
# "ahead" (3 s past), "as is".
CASES = [
    ("uu_same", [("x", 0), ("y", 0)], [("a", "update", {"$set": S(("x", 1))}), ("b", "update", {"$set": S(("x", 2))})], None),
    ("uu_same_rev", [("x", 0), ("y", 0)], [("b", "update", {"$set": S(("x", 2))}), ("a", "update", {"$set": S(("x", 1))})], None),
    ("uu_diff", [("x", 0)], [("b", "update", {"$set": S(("q", 2))}), ("a", "update", {"$set": S(("p", 1))})], None),
    ("uu_diff2", [("x", 0), ("y", 0)], [("a", "update", {"$set": S(("y", 5), ("n", 1)), "$unset": S(("x", ""))}),
                                        ("b", "update", {"$set": S(("y", 6), ("m", 2))})], None),
    ("ud", [("x", 0)], [("a", "update", {"$set": S(("x", 1))}), ("b", "delete", None)], None),
    ("du", [("x", 0)], [("a", "delete", None), ("b", "update", {"$set": S(("x", 1))})], None),
    ("ii", None, [("a", "insert", S(("from", "a"), ("a", 1))), ("b", "insert", S(("from", "b"), ("b", 2)))], None),
    ("dr", [("x", 0)], [("a", "delete", None), ("b", "update", {"$set": S(("x", 5))}),
                        ("a", "insert", S(("x", 9), ("re", True)))], None),
    ("ru", [("x", 0), ("y", 0)], [("a", "replace", S(("r", 1))), ("b", "update", {"$set": S(("x", 7))})], None),
    ("skew", [("x", 0)], [("b", "update", {"$set": S(("x", 2))}, "ahead"), ("a", "update", {"$set": S(("x", 1))}, "as is")],
     [1, 0]),
    ("uuu", [("x", 0), ("y", 0)], [("a", "update", {"$set": S(("x", 1))}), ("b", "update", {"$set": S(("y", 2))}),
                                   ("a", "update", {"$set": S(("x", 3))})], None),
    ("txn", None, [("b", "update", {"$set": S(("x", 2))}),
                   ("a", "txn", [("txn1", {"$set": S(("x", 1))}), ("txn2", {"$set": S(("x", 1))})]),
                   ("b", "update2", {"$set": S(("x", 2))})], None),
    ("sub_absent", [("x", 0), ("sub", S(("p", 1)))], [("a", "update", {"$unset": S(("sub", ""))}),
                                                     ("b", "update", {"$set": S(("sub.p", 5))})], None),
    ("solo", [("x", 0)], [("a", "update", {"$set": S(("x", 1))})], None),
]
TXN_IDS = ["txn1", "txn2"]


class W:
    """One write: _id, master, phase ("base" or "case"), kind, arg, stamp, ts, wall, k."""

    def __init__(self, _id, master, phase, kind, arg, entry, k, m):
        self.id, self.m, self.phase, self.kind, self.arg, self.k = _id, master, phase, kind, arg, k
        self.ts, self.stamp = entry["ts"], stamp_of(m, master, entry, k)
        self.wall = self.stamp[0]

    def __repr__(self):
        return "%s %s %s %s wall %d k %d" % (self.id, self.m, self.kind, ts_str(self.ts), self.wall, self.k)


def last_entry(m, nm):
    e = list(m.c[nm].local["oplog.rs"].find({"op": {"$ne": "n"}}).sort("$natural", -1).limit(1))
    return e[0]


def entry_of(m, nm, _id, ns=NS):
    """NM's newest top-level oplog entry writing _id of NS (apply may be writing meanwhile)."""
    q = {"ns": ns, "$or": [{"o._id": _id}, {"o2._id": _id}]}
    return list(m.c[nm].local["oplog.rs"].find(q).sort("$natural", -1).limit(1))[0]


def entry_id(o):
    return o["o2"]["_id"] if o["op"] == "u" else o["o"]["_id"]


def fold(ws):
    doc = None
    for w in sorted(ws, key=lambda w: w.stamp):
        if w.kind == "insert":
            doc = S(("_id", w.id), *copy.deepcopy(w.arg).items())
        elif w.kind == "replace":    # a full image, as an insert (CONFLICTS.md §3)
            doc = S(("_id", w.id), *copy.deepcopy(w.arg).items())
        elif w.kind == "delete":
            doc = None
        elif doc is not None:  # a modifier update ($set in path order, then $unset)
            for k in sorted(w.arg.get("$set", {})):
                if "." in k:
                    # "sub.p" of an existing p: the oplog holds the diff {ssub: {u: {p}}},
                    # which does nothing where sub is absent (document_diff_applier.cpp)
                    top, f = k.split(".", 1)
                    if isinstance(doc.get(top), dict):
                        doc[top][f] = w.arg["$set"][k]
                    continue
                doc[k] = w.arg["$set"][k]
            for k in w.arg.get("$unset", {}):
                doc.pop(k, None)
    return doc


FULL = {"insert": "insert", "replace": "replacement", "delete": "delete"}


def expected_records(writes, masters):
    """[(master, late W, newer W)]: the remote writes that reach a master
    holding a write of their document with a greater stamp, in each origin's
    oplog order (every base write is on every master before the cases)."""
    out = []
    ids = sorted(set(w.id for w in writes))
    for d in ids:
        ws = [w for w in writes if w.id == d]
        for M in masters:
            present = [w for w in ws if w.phase == "base" or w.m == M]
            for O in masters:
                if O == M:
                    continue
                for w in sorted([w for w in ws if w.phase == "case" and w.m == O], key=lambda w: (w.ts, w.k)):
                    newest = max(present, key=lambda x: x.stamp) if present else None
                    if newest is not None and w.stamp < newest.stamp:
                        out.append((M, w, newest))
                    present.append(w)
    return out


def rederivations(writes, M, late, newer):
    """The (how, base origin, base ts, base k, result) a re-derivation of
    LATE's document on M may log (apply/conflict.h): it folds every write of
    M itself and the other masters' writes up to a horizon -- the newest
    write M holds (NEWER) or, when apply hands it later ones in the same
    batch, one of those -- from the newest full image (insert, replacement,
    delete) on.  Every write is journaled before apply restarts."""
    ws = [w for w in writes if w.id == late.id]
    own = [w for w in ws if w.m == M]
    other = [w for w in ws if w.m != M]
    out = []
    for h in sorted(set([newer.stamp] + [w.stamp for w in other if w.stamp > newer.stamp])):
        held = own + [w for w in other if w.stamp <= h]
        full = [w for w in held if w.kind in FULL]
        b = max(full, key=lambda w: w.stamp) if full else None
        res = "deleted" if fold(held) is None else "replaced"
        if b:
            out.append((FULL[b.kind], b.m, ts_str(b.ts), b.k, res))
        else:
            out.append(("degraded", None, None, None, res))
    return out


def stamp_ok(what, got, w, m, full=True):
    """Checks a record's stamp object GOT against write W."""
    if not ck.check(isinstance(got, dict), "%s: a stamp object: %r" % (what, got)):
        return
    ck.eq(got.get("origin"), w.m, what + ": origin")
    ck.eq(got.get("ts"), ts_str(w.ts), what + ": ts")
    ck.eq(got.get("k", 0), w.k, what + ": k")
    if full:
        ck.eq(got.get("origin_uuid"), m.ids[w.m], what + ": origin_uuid")
        ck.eq(got.get("wall"), iso_ms(w.wall), what + ": wall")


def main():
    t0 = time.monotonic()
    with CMesh(2) as m:
        try:
            run(m)
        except Exception:
            m.report("conflict cases (exception)", colls=(NS_COLL,))
            raise
        if ck.failed:
            m.report("conflict cases", colls=(NS_COLL,))
            m.keep = True
    print("%.1f s" % (time.monotonic() - t0))
    return ck.done()


def run(m):
    writes = []
    coll = dict((nm, m.c[nm][NS_DB][NS_COLL]) for nm in m.names)
    coll2 = dict((nm, m.c[nm][DB2][NS_COLL]) for nm in m.names)
    m.start(apply=False)
    m.full_mesh(DB2 + ".*")
    m.start_apply()

    # ---- base documents, on a, drained to b
    for name, base, steps, order in CASES:
        ids = TXN_IDS if name == "txn" else [name]
        for _id in ids:
            if base is not None or name == "txn":
                doc = S(("_id", _id), *(base or [("x", 0)]))
                coll["a"].insert_one(doc)
                writes.append(W(_id, "a", "base", "insert", S(*list(doc.items())[1:]), entry_of(m, "a", _id), 0, m))
    ok, secs, out = m.drain(30)
    if not ck.check(ok, "base documents drained to b (%.1f s): %s" % (secs, out)):
        return
    print("base drained in %.1f s" % secs)
    ck.eq(m.stop_apply(), 0, "mmm-apply stops on SIGTERM")

    # ---- the cases' writes, apply stopped
    def now_ms():
        return int(time.time() * 1000)

    def clock(nm, how):
        top = max(w.wall for w in writes)
        if how == "newest" and now_ms() + m.offsets[nm] < top + 5:
            m.set_offset(nm, top + 20 - now_ms())
        elif how == "ahead":
            m.set_offset(nm, max(m.offsets[nm], top + 3000 - now_ms()))

    intended = {}
    for name, base, steps, order in CASES:
        made = []
        for step in steps:
            nm, kind, arg = step[:3]
            clock(nm, step[3] if len(step) > 3 else "newest")
            c = coll[nm]
            _id = "txn1" if name == "txn" and kind == "update" else "txn2" if kind == "update2" else name
            if kind == "insert":
                c.insert_one(S(("_id", _id), *arg.items()))
            elif kind == "replace":
                c.replace_one({"_id": _id}, S(("_id", _id), *arg.items()))
            elif kind in ("update", "update2"):
                kind = "update"
                r = c.update_one({"_id": _id}, arg)
                ck.eq(r.modified_count, 1, "%s: the update on %s changed the document" % (name, nm))
            elif kind == "delete":
                c.delete_one({"_id": _id})
            if kind == "txn":
                cl = m.c[nm]
                with cl.start_session() as s:
                    with s.start_transaction():
                        for i, upd in arg:
                            cl[NS_DB][NS_COLL].update_one({"_id": i}, upd, session=s)
                e = last_entry(m, nm)
                ops = e["o"].get("applyOps", []) if e["op"] == "c" else []
                ck.check(len(ops) == len(arg), "%s: one applyOps entry with %d ops on %s: %r" % (name, len(arg), nm, e))
                for i, upd in arg:
                    k = [j for j, o in enumerate(ops) if o["ns"] == NS and entry_id(o) == i]
                    if ck.check(len(k) == 1, "%s: op of %s in the transaction" % (name, i)):
                        w = W(i, nm, "case", "update", upd, e, k[0], m)
                        writes.append(w)
                        made.append(w)
                continue
            e = last_entry(m, nm)
            ck.check(e["ns"] == NS and entry_id(e) == _id, "%s: the oplog entry of the write on %s: %r" % (name, nm, e))
            w = W(_id, nm, "case", kind, arg, e, 0, m)
            writes.append(w)
            made.append(w)
        intended[name] = (made, order)
    for name, (made, order) in intended.items():
        want = [made[i] for i in (order or range(len(made)))]
        if name == "txn":
            continue   # two documents: their writes are ordered per document below
        ck.check(sorted(made, key=lambda w: w.stamp) == want,
                 "%s: the writes were stamped in the intended order: %r" % (name, made))
    t1 = [w for w in writes if w.id == "txn1" and w.phase == "case"]
    t2 = [w for w in writes if w.id == "txn2" and w.phase == "case"]
    ck.check(len(t1) == 2 and t1[0].m == "b" and t1[0].stamp < t1[1].stamp, "txn: b's write of txn1 is older: %r" % t1)
    ck.check(len(t2) == 2 and t2[1].m == "b" and t2[0].stamp < t2[1].stamp, "txn: b's write of txn2 is newer: %r" % t2)
    print("offsets after the cases: %s" % m.offsets)

    # ---- everything journaled, then apply again
    def journaled():
        st = m.status()
        if not st:
            return False
        last = dict((s["name"], parse_ts(s["last_ts"])) for s in st["sources"])
        return all(nm in last and last[nm] >= m.oplog_last(nm) for nm in m.names)
    ck.check(wait_for(journaled, 30, 0.05), "every write journaled before apply starts")
    t = time.monotonic()
    m.start_apply()
    ok, secs, out = m.drain(60)
    ck.check(ok, "the cases drained and verify finds a and b identical (%.1f s): %s" % (secs, out))
    print("cases drained in %.1f s (apply restarted %.1f s ago)" % (secs, time.monotonic() - t))

    # ---- the documents
    ids = sorted(set(w.id for w in writes))
    for _id in ids:
        want = fold([w for w in writes if w.id == _id])
        for nm in m.names:
            got = coll[nm].find_one({"_id": _id})
            ck.check(enc(got) == enc(want), "%s on %s: %r, the fold in stamp order gives %r" % (_id, nm, got, want))

    # ---- the conflict log
    exp = expected_records(writes, m.names)
    print("expected late writes: %d" % len(exp))
    for M, late, newer in exp:
        print("  on %s: %r  behind  %r" % (M, late, newer))
    recs = m.conflicts()
    if not ck.check(recs is not None, "mmm-journal conflicts --json: %r" % (getattr(m, "conflicts_err", None),)):
        return
    for r in recs:
        print("  record: %s" % r)
    ck.eq(len(recs), len(exp), "records in the conflict log (one per late write)")
    found = {}
    for r in recs:
        late = r.get("late") or {}
        key = (r.get("master"), late.get("origin"), late.get("ts"), late.get("k", 0))
        ck.check(key not in found, "one record per late write: %r twice" % (key,))
        found[key] = r
    for M, late, newer in exp:
        key = (M, late.m, ts_str(late.ts), late.k)
        r = found.pop(key, None)
        what = "record of %r late on %s" % (late, M)
        if not ck.check(r is not None, what + ": missing"):
            continue
        ck.eq(r.get("ns"), NS, what + ": ns")
        ck.eq(r.get("_id"), late.id, what + ": _id")
        stamp_ok(what + ": late", r.get("late"), late, m)
        stamp_ok(what + ": newer", r.get("newer"), newer, m)
        cands = rederivations(writes, M, late, newer)
        base = r.get("base") or {}
        got = (r.get("how"), base.get("origin"), base.get("ts"), base.get("k", 0) if base else None, r.get("result"))
        ck.check(got in cands, "%s: how, base (origin, ts, k) and result %r: the fold up to the newest write %s "
                 "holds or is given gives one of %r" % (what, got, M, cands))
        ck.check(isinstance(r.get("at"), str) and r["at"].endswith("Z"), what + ": at %r" % (r.get("at"),))
    ck.eq(sorted(found), [], "records of no late write")

    # text form, --ns, --since
    rc, out, err = m.mj("conflicts")
    ck.eq(rc, 0, "mmm-journal conflicts exits 0")
    ck.eq(len([x for x in out.splitlines() if x.strip()]), len(recs), "one text line per record:\n" + out)
    ck.eq(len(m.conflicts("--ns", NS) or []), len(recs), "--ns test.cases")
    ck.eq(len(m.conflicts("--ns", "test.c*") or []), len(recs), "--ns test.c*")
    ck.eq(m.conflicts("--ns", "other.*"), [], "--ns other.*")
    if exp:
        tss = sorted(set((late.ts.time, late.ts.inc) for M, late, newer in exp))
        since = tss[len(tss) // 2]
        want = len([1 for M, late, newer in exp if (late.ts.time, late.ts.inc) >= since])
        ck.eq(len(m.conflicts("--since", "%d:%d" % since) or []), want, "--since %d:%d" % since)

    # mmm status
    def counts():
        st = m.status() or {}
        per = dict(((l["src"], l["dst"]), l.get("conflicts")) for l in st.get("links", []))
        return st.get("conflicts_logged"), per
    want_per = {}
    for src in m.names:
        for dst in m.names:
            if src != dst:
                want_per[(src, dst)] = len([1 for M, late, newer in exp if M == dst and src in (late.m, newer.m)])
    wait_for(lambda: counts() == (len(exp), want_per), 10, 0.2)
    logged, per = counts()
    ck.eq(logged, len(exp), "mmm status --json: conflicts_logged")
    ck.eq(per, want_per, "mmm status --json: conflicts per link (records of its destination involving its source)")
    # the cases with apply running, in their own database: verified apart
    local_late(m, writes, coll2, len(exp))
    noop_update(m, writes, coll2, len(exp) + 1)
    ck.eq(m.stop_apply(), 0, "mmm-apply exits 0 on SIGTERM")


def applied(m, src, dst, ts):
    """The link SRC -> DST has applied SRC's entries up to TS."""
    for l in (m.status() or {}).get("links", []):
        if l["src"] == src and l["dst"] == dst:
            return parse_ts(l["applied_ts"]) >= ts
    return False


def noop_update(m, writes, coll, nrecs):
    """An update that finds nothing still counts: with apply stopped, a
    deletes the document (t1) and b, its clock 20 s ahead, updates it (t3).
    Apply runs: b's update reaches a, where the document is gone (it changes
    nothing there), and a's delete reaches b (late: b re-derives, absent).
    Then a client on a inserts the _id again (t2, a's clock is behind b's):
    a holds b's newer update, so the insert is late on a (and on b); the
    fold is the insert with b's update on top.  Two records: a's delete and
    a's insert."""
    _id = "noop_update"
    coll["a"].insert_one(S(("_id", _id), ("x", 0)))
    base = W(_id, "a", "base", "insert", S(("x", 0)), entry_of(m, "a", _id, NS2), 0, m)
    ok, secs, out = m.drain(30, links=VERIFY2)
    ck.check(ok, "noop_update: base drained: %s" % out)
    ck.eq(m.stop_apply(), 0, "noop_update: apply stops")
    top = max(w.wall for w in writes + [base])
    if m.clock_ms("a") < top + 5:
        m.set_offset("a", top + 20 - int(time.time() * 1000))
    coll["a"].delete_one({"_id": _id})
    wd = W(_id, "a", "case", "delete", None, entry_of(m, "a", _id, NS2), 0, m)
    m.set_offset("b", max(m.offsets["b"], wd.wall + 20000 - int(time.time() * 1000)))
    coll["b"].update_one({"_id": _id}, {"$set": S(("x", 5))})
    wu = W(_id, "b", "case", "update", {"$set": S(("x", 5))}, entry_of(m, "b", _id, NS2), 0, m)
    m.start_apply()
    ck.check(wait_for(lambda: applied(m, "b", "a", wu.ts) and applied(m, "a", "b", wd.ts), 30, 0.05),
             "noop_update: b's update applied on a, a's delete on b")
    ck.check(wait_for(lambda: coll["b"].find_one({"_id": _id}) is None, 30, 0.02),
             "noop_update: the document is gone from b (a's delete re-derived there)")
    coll["a"].insert_one(S(("_id", _id), ("y", 1)))
    wi = W(_id, "a", "case", "insert", S(("y", 1)), entry_of(m, "a", _id, NS2), 0, m)
    ck.check(wd.stamp < wi.stamp < wu.stamp, "noop_update: stamps delete < insert < update: %r %r %r" % (wd, wi, wu))
    ok, secs, out = m.drain(60, links=VERIFY2)
    ck.check(ok, "noop_update: drained, a and b identical (%.1f s): %s" % (secs, out))
    want = fold([base, wd, wu, wi])
    for nm in m.names:
        got = coll[nm].find_one({"_id": _id})
        ck.check(enc(got) == enc(want), "noop_update on %s: %r, the fold in stamp order gives %r" % (nm, got, want))
    recs = [r for r in (m.conflicts() or []) if r.get("_id") == _id and r.get("ns") == NS2]
    for r in recs:
        print("  record: %s" % r)
    ck.eq(sorted((r.get("late") or {}).get("ts") for r in recs), sorted([ts_str(wd.ts), ts_str(wi.ts)]),
          "noop_update: records of a's delete and a's insert")
    for r in recs:
        stamp_ok("noop_update: newer", r.get("newer"), wu, m)
    ck.eq(len(m.conflicts() or []), nrecs + 2, "noop_update: no other record added")


def local_late(m, writes, coll, nrecs):
    """A late local write, apply running: a's clock runs 10 s ahead; a sets
    x=1 and the write reaches b; then a client on b (clock behind) sets
    x=2, which is stamped before a's write although it was made after it
    reached b.  b must end with a's value again (its checker sees the late
    local write and re-derives), a keeps it (b's write arrives late there),
    and the log gains exactly one record for b's write: late on b and on a,
    one record all the same."""
    _id = "local_late"
    coll["a"].insert_one(S(("_id", _id), ("x", 0)))
    base = W(_id, "a", "base", "insert", S(("x", 0)), entry_of(m, "a", _id, NS2), 0, m)
    ck.check(wait_for(lambda: coll["b"].find_one({"_id": _id}) is not None, 30, 0.02), "local_late: base on b")
    top = max(w.wall for w in writes + [base])
    m.set_offset("a", max(m.offsets["a"], top + 10000 - int(time.time() * 1000)))
    coll["a"].update_one({"_id": _id}, {"$set": S(("x", 1))})
    wa = W(_id, "a", "case", "update", {"$set": S(("x", 1))}, entry_of(m, "a", _id, NS2), 0, m)
    ck.check(wait_for(lambda: (coll["b"].find_one({"_id": _id}) or {}).get("x") == 1, 30, 0.01),
             "local_late: a's write reached b")
    coll["b"].update_one({"_id": _id}, {"$set": S(("x", 2))})
    wb = W(_id, "b", "case", "update", {"$set": S(("x", 2))}, entry_of(m, "b", _id, NS2), 0, m)
    ck.check(wb.stamp < wa.stamp, "local_late: b's write is stamped before a's: %r, %r" % (wb, wa))
    ok, secs, out = m.drain(60, links=VERIFY2)
    ck.check(ok, "local_late: drained, a and b identical (%.1f s): %s" % (secs, out))
    want = fold([base, wa, wb])
    for nm in m.names:
        got = coll[nm].find_one({"_id": _id})
        ck.check(enc(got) == enc(want), "local_late on %s: %r, the fold in stamp order gives %r" % (nm, got, want))
    recs = [r for r in (m.conflicts() or []) if r.get("_id") == _id and r.get("ns") == NS2]
    for r in recs:
        print("  record: %s" % r)
    ck.eq(len(recs), 1, "local_late: one record for b's late write")
    if len(recs) == 1:
        r = recs[0]
        ck.check(r.get("master") in m.names, "local_late: master %r" % (r.get("master"),))
        stamp_ok("local_late: late", r.get("late"), wb, m)
        stamp_ok("local_late: newer", r.get("newer"), wa, m)
        ck.eq(r.get("result"), "replaced", "local_late: result")
    ck.eq(len(m.conflicts() or []), nrecs + 1, "local_late: no other record added")
    writes.extend([base, wa, wb])


sys.exit(main())
