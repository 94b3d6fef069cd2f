#!/usr/bin/python3
"""Issue 5, acceptance 2: bidirectional A <-> B, and a three-master mesh
A, B, C, with writes on every master to disjoint documents (inserts,
updates, deletes, transactions) while capture and apply run.  All converge
(dbHash equal); no write is applied back to its origin and none arrives
twice: the writes each master receives (the ops of transactions carrying
an apply marker, in its oplog) are counted per origin — none of its own,
none relayed by a third master; deletes do not bounce (a deleted document
stays deleted, and its origin never receives it back)."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from applylib import Mesh  # noqa: E402
from simlib import Checker, wait_for  # noqa: E402
from bson.timestamp import Timestamp  # noqa: E402

ck = Checker("apply-mesh")
N = int(os.environ.get("MMM_TEST_MESH_DOCS", "150"))


def writer(m, nm, errors):
    try:
        c = m.c[nm]
        t = c.test
        ids = ["%s-%d" % (nm, i) for i in range(N)]
        for k in range(0, N, 10):
            t.docs.insert_many([{"_id": i, "owner": nm, "n": 0, "arr": []} for i in ids[k:k + 10]])
        for r in range(3):
            for i in ids[::3]:
                t.docs.update_one({"_id": i}, {"$inc": {"n": 1}, "$push": {"arr": r}, "$set": {"last": r}})
        t.docs.delete_many({"_id": {"$in": ids[::5]}})
        with c.start_session() as s:
            with s.start_transaction():
                for i in ids[1:40:4]:
                    t.docs.update_one({"_id": i}, {"$set": {"txn": nm}}, session=s)
                t.other.insert_one({"_id": nm, "txn": True}, session=s)
                t.docs.delete_one({"_id": ids[2]}, session=s)
        t.counters.update_one({"_id": nm}, {"$inc": {"c": 5}}, upsert=True)
    except Exception as e:  # noqa: BLE001
        errors.append("%s: %r" % (nm, e))


def received(m, nm):
    """{origin master: ops received} from X's oplog (ops of transactions whose
    first chunk carries an apply marker), plus [(op, _id)] of them."""
    c = m.c[nm]
    txns, order = {}, []
    for e in c.local["oplog.rs"].find({"op": "c", "ns": "admin.$cmd"}):
        if "applyOps" not in e["o"]:
            continue
        key = (bytes(e["lsid"]["id"].bytes) if hasattr(e["lsid"]["id"], "bytes") else repr(e["lsid"]["id"]),
               e.get("txnNumber")) if "lsid" in e else (id(e), 0)
        if key not in txns:
            txns[key] = []
            order.append(key)
        txns[key].extend(e["o"]["applyOps"])
    per, ops = {}, []
    for key in order:
        inner = txns[key]
        marker = [o for o in inner if o["ns"] == "mmm.checkpoints"]
        if not marker:
            continue
        for o in inner:
            if o["ns"].startswith("mmm.") or o["op"] == "c":
                continue
            _id = o["o2"]["_id"] if o["op"] == "u" else o["o"]["_id"]
            owner = _id.split("-")[0] if isinstance(_id, str) else "?"
            per[owner] = per.get(owner, 0) + 1
            ops.append((o["op"], _id))
    return per, ops


def local_writes(m, nm):
    """Writes made on NM itself to test.*: its entries outside apply's transactions."""
    n = 0
    txns, order = {}, []
    for e in m.c[nm].local["oplog.rs"].find({"ns": {"$in": ["admin.$cmd", "test.docs", "test.other", "test.counters"]}}):
        if e["op"] in "iud" and e["ns"].startswith("test."):
            n += 1
        elif e["op"] == "c" and "applyOps" in e["o"]:
            key = (repr(e.get("lsid")), e.get("txnNumber"))
            if key not in txns:
                txns[key] = []
                order.append(key)
            txns[key].extend(e["o"]["applyOps"])
    for key in order:
        inner = txns[key]
        if not any(o["ns"] == "mmm.checkpoints" for o in inner):
            n += sum(1 for o in inner if o["op"] in "iud" and o["ns"].startswith("test."))
    return n


def w0_ts(m, dst, src):
    """ts of apply's worker-0 checkpoint on DST for source SRC (DDL closes its bracket with it)."""
    d = m.c[dst].mmm.checkpoints.find_one({"_id": "mmm:%s:%s:w0" % (m.ids[src], m.ids[src])})
    return d["ts"] if d else Timestamp(0, 0)


def run(n, sim_args):
    label = "%d masters" % n
    with Mesh(n, sim_args=sim_args) as m:
        try:
            m.capture()
            m.full_mesh("test.*")
            m.apply()
            errors = []
            th = [threading.Thread(target=writer, args=(m, nm, errors)) for nm in m.names]
            for t in th:
                t.start()
            for t in th:
                t.join()
            ck.eq(errors, [], "%s: writers" % label)
            # DDL from every master, one master at a time: capture pairs apply's
            # DDL marker with the commands of that database that follow it, so a
            # local DDL on the same database inside that window would take the
            # marker's origin (a known limit of the bracket, see the report)
            for nm in m.names:
                m.c[nm].test.docs.create_index([(nm, 1)], name="%s_idx" % nm)
                m.c[nm].test.create_collection("coll_" + nm)
                done_ts = m.last_ts(nm)
                # applied everywhere, and each bracket closed (worker 0's checkpoint past it)
                ck.check(wait_for(lambda: all(w0_ts(m, o, nm) >= done_ts for o in m.names if o != nm), 30, 0.05),
                         "%s: DDL of %s everywhere" % (label, nm))
            conv = m.wait_converged("test", 60)
            ck.check(conv, "%s: dbHash of test equal on every master" % label)
            docs = m.docs(m.names[0], "test", "docs")
            ck.eq(len(docs), n * (N - len(range(0, N, 5)) - 1), "%s: document count" % label)
            # settle: the last echoes must be captured and dropped, nothing more written
            wait_for(lambda: all(st["lag_s"] == 0 for st in m.apply_status().values()), 10, 0.1)
            made = {nm: local_writes(m, nm) for nm in m.names}
            print("%s: writes made %s" % (label, made))
            for nm in m.names:
                per, ops = received(m, nm)
                print("%s: %s received %s" % (label, nm, per))
                ck.eq(per.get(nm, 0), 0, "%s: writes of %s applied back to it" % (label, nm))
                for o in m.names:
                    if o != nm:
                        ck.check(0 < per.get(o, 0) <= made[o], "%s: %s received %d writes of %s, which made %d (none twice)"
                                 % (label, nm, per.get(o, 0), o, made[o]))
                gone = ["%s-%d" % (o, i) for o in m.names if o != nm for i in range(0, N, 5)]
                dels = [i for op, i in ops if op == "d"]
                ck.check(all(i in gone or i.endswith("-2") for i in dels), "%s: deletes received by %s" % (label, nm))
                ck.eq(len(dels), len(set(dels)), "%s: each delete received once by %s" % (label, nm))
                ck.eq(m.c[nm].test.docs.count_documents({"_id": {"$in": gone}}), 0, "%s: deletes stay on %s" % (label, nm))
                for cp in m.c[nm].mmm.checkpoints.find():
                    ck.check(cp["origin"] == cp["source"], "%s: %s: marker %s relays a third master" % (label, nm, cp["_id"]))
                    ck.check(str(cp["origin"]) != m.ids[nm], "%s: %s: marker of its own writes" % (label, nm))
            idx = [m.indexes(nm, "test") for nm in m.names]
            ck.check(all(i == idx[0] for i in idx), "%s: indexes equal on every master" % label)
            ck.eq(sorted(idx[0].get("docs", {}) and [dict(x)["name"] for x in idx[0]["docs"]]),
                  sorted(["_id_"] + ["%s_idx" % nm for nm in m.names]), "%s: every master's index" % label)
            for nm in m.names:
                ddl = [e for e in m.c[nm].local["oplog.rs"].find({"op": "c"})
                       if e["o"].get("commitIndexBuild") == "docs" or e["o"].get("createIndexes") == "docs"]
                names = sorted(ix["name"] for e in ddl for ix in e["o"].get("indexes", [e["o"]]))
                ck.eq(names, sorted("%s_idx" % o for o in m.names), "%s: each index built once on %s (no DDL echo)" % (label, nm))
            st = m.apply_status()
            ck.eq(len(st), n * (n - 1), "%s: one status per pair" % label)
            ck.check(all(v["state"] == "running" and v["last_error"] == "" for v in st.values()), "%s: pairs running" % label)
            ck.eq(m.app.term(), 0, "%s: apply exits 0 on SIGTERM" % label)
            ck.eq(m.cap.term(), 0, "%s: capture exits 0 on SIGTERM" % label)
            if ck.failed:
                for k, v in m.apply_status().items():
                    print("status %s: %s" % (k, {x: v.get(x) for x in ("dst", "src", "state", "applied_ts", "checkpoint_ts", "last_error", "entries")}))
                m.dump_logs()
        except Exception:
            m.dump_logs()
            raise


run(2, ["--txn-split-ops", "40"])
run(3, [])
sys.exit(ck.done())
