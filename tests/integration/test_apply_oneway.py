#!/usr/bin/python3
"""Issue 5, acceptance 1: one way, A -> B, a mixed workload — every update
operator mongosim implements (nested and array paths), replacements,
upserts, deletes, transactions (small applyOps, partialTxn chains through
--txn-split-ops, an aborted one), and DDL (create with options, drop,
createIndexes, dropIndexes, renameCollection, dropDatabase, collMod).
Afterwards the dbHash of every linked database and the index specs are
equal on A and B.  Run twice: $v:2 oplog (6.0) and $v:1 oplog (4.4 FCV);
the second run maps a database to another name (test.* -> copy.*) and a
single collection to another (solo.src -> solo.dst), with apply.workers: 1
(the first with the default, 4)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from applylib import Mesh  # noqa: E402
from simlib import Checker, wait_for  # noqa: E402
from bson.son import SON  # noqa: E402
from bson.timestamp import Timestamp  # noqa: E402
from pymongo import ReturnDocument  # noqa: E402,F401

ck = Checker("apply-oneway")


def workload(A):
    t = A.test
    t.create_collection("opts", validator={"x": {"$exists": True}})
    t.foo.insert_many([{"_id": i, "n": i, "s": "s%d" % i, "arr": [i, i + 1, i + 2],
                        "sub": {"a": i, "b": {"c": [1, 2, {"d": i}]}}, "tags": ["x", "y"], "uid": i}
                       for i in range(60)])
    t.foo.create_index([("n", 1)], name="n_1")
    t.foo.create_index([("uid", 1), ("n", -1)], name="uid_n", unique=True, sparse=True)
    t.foo.create_index([("sub.a", 1)], name="tmp_idx")
    # every operator, nested and array paths
    ups = [
        {"$set": {"x": 1, "sub.b.e": "new", "arr.1": 99}},
        {"$unset": {"s": "", "sub.b.c": 1}},
        {"$inc": {"n": 5, "sub.a": -1, "arr.0": 10}},
        {"$mul": {"n": 3, "sub.a": 2.5}},
        {"$min": {"n": -1}, "$max": {"sub.a": 1000}},
        {"$rename": {"s": "s2", "sub.a": "sub.z"}},
        {"$currentDate": {"ts": {"$type": "timestamp"}, "when": True}},  # new fields in name order (a 5.0+ primary sorts them; mongosim does not)
        {"$push": {"arr": 7}},
        {"$push": {"arr": {"$each": [5, 3, 9], "$sort": 1, "$slice": -4}}},
        {"$push": {"tags": {"$each": ["a", "b"], "$position": 0}}},
        {"$pop": {"arr": 1}},
        {"$pop": {"arr": -1}},
        {"$pull": {"arr": {"$gte": 20}}},
        {"$pullAll": {"tags": ["x", "a"]}},
        {"$addToSet": {"tags": {"$each": ["y", "z", "z"]}}},
        {"$set": {"sub.b.c.2.d": "deep", "sub.new.path": [1]}},
        {"$set": {"arr.6": "padded"}},
        {"$set": {"sub": {"whole": True}}, "$inc": {"ctr": 1}},
        {"$unset": {"tags": 1}, "$push": {"fresh": {"k": 1}}},
    ]
    for k, u in enumerate(ups):
        for i in range(k, 60, 7):
            t.foo.update_one({"_id": i}, u)
    t.foo.update_many({"n": {"$lt": 10}}, {"$inc": {"many": 1}})
    t.foo.update_one({"_id": 1000}, {"$set": {"a": 1}, "$setOnInsert": {"created": True, "uid": 1000}}, upsert=True)
    t.foo.replace_one({"_id": 3}, {"replaced": True, "z": [1, {"y": 2}], "uid": 3})
    t.foo.replace_one({"_id": 2000}, {"upserted": 1, "uid": 2000}, upsert=True)
    t.foo.find_one_and_update({"_id": 4}, {"$inc": {"fam": 1}})
    t.foo.delete_one({"_id": 5})
    t.foo.delete_many({"_id": {"$in": [6, 7, 8]}})
    # transactions: small, split into a partialTxn chain, aborted
    with A.start_session() as s:
        with s.start_transaction():
            t.foo.insert_one({"_id": "t1", "v": 1, "uid": "t1"}, session=s)
            t.foo.update_one({"_id": 10}, {"$set": {"intxn": 1}}, session=s)
        with s.start_transaction():
            for i in range(15):
                t.bar.insert_one({"_id": i, "v": i}, session=s)      # creates bar inside
            t.foo.update_one({"_id": 11}, {"$push": {"arr": "txn"}}, session=s)
            t.foo.delete_one({"_id": 12}, session=s)
            t.bar.update_one({"_id": 2}, {"$set": {"v": "two"}}, session=s)
            t.bar.delete_one({"_id": 3}, session=s)
        s.start_transaction()
        t.foo.insert_one({"_id": "aborted", "uid": "aborted"}, session=s)
        s.abort_transaction()
    # DDL
    t.foo.drop_index("tmp_idx")
    A.test.command(SON([("collMod", "opts"), ("validator", {"y": {"$exists": True}})]))
    t.tmp.insert_many([{"_id": i} for i in range(5)])
    t.tmp.rename("renamed")
    t.renamed.insert_one({"_id": "after-rename"})
    t.gone.insert_one({"_id": 1})
    t.gone.drop()
    A.scratch.x.insert_one({"_id": 1})
    A.scratch.y.create_index([("a", 1)])
    A.drop_database("scratch")
    A.scratch.x.insert_one({"_id": "reborn"})
    t.opts.insert_one({"_id": 1, "y": 1})
    # collections mapped one to one
    A.solo.src.insert_many([{"_id": i, "v": i} for i in range(5)])
    A.solo.src.update_one({"_id": 1}, {"$set": {"v": "one"}})
    A.solo.src.delete_one({"_id": 2})
    A.solo.other.insert_one({"_id": "not linked"})
    # not replicated
    A.admin.command("ping")
    A.config.stuff.insert_one({"_id": 1})


def applied(m):
    for v in m.apply_status().values():
        t = v["applied_ts"]["$timestamp"]
        return Timestamp(t["t"], t["i"])
    return Timestamp(0, 0)


def show_diff(m, sdb, ddb):
    for cn in m.c["a"][sdb].list_collection_names():
        da, db = m.docs("a", sdb, cn), m.docs("b", ddb, cn)
        if da != db:
            ia = {repr(d["_id"]): d for d in da}
            ib = {repr(d["_id"]): d for d in db}
            shown = 0
            for k in sorted(set(ia) | set(ib)):
                if ia.get(k) != ib.get(k) and shown < 5:
                    print("  %s %s:\n    a: %r\n    b: %r" % (cn, k, ia.get(k), ib.get(k)))
                    shown += 1


def run(label, sim_args, maps, workers=None):
    with Mesh(2, sim_args=sim_args) as m:
        try:
            if workers:
                m.write_config("apply:\n  workers: %d\n" % workers)
            m.capture(servers=["a"])
            for src_ns, dst_ns in maps:
                m.link("b", "a", src_ns, dst_ns)
            m.apply(servers=["b"])
            workload(m.c["a"])
            final = m.last_ts("a")
            ck.check(wait_for(lambda: applied(m) >= final, 60, 0.1),
                     "%s: apply reached the last entry of a" % label)
            for src_ns, dst_ns in maps:
                sdb, scoll = src_ns.split(".")
                ddb, dcoll = dst_ns.split(".")
                if scoll == "*":
                    ha, hb = m.dbhash("a", sdb), m.dbhash("b", ddb)
                    ck.check(len(ha) > 0, "%s: %s has collections" % (label, src_ns))
                    if not ck.eq(ha, hb, "%s: dbHash of %s vs %s" % (label, src_ns, dst_ns)):
                        show_diff(m, sdb, ddb)
                    ck.eq(m.indexes("a", sdb), m.indexes("b", ddb), "%s: indexes of %s" % (label, src_ns))
                else:
                    ck.eq(m.docs("a", sdb, scoll), m.docs("b", ddb, dcoll),
                          "%s: documents of %s vs %s" % (label, src_ns, dst_ns))
            ck.check("other" not in m.c["b"].solo.list_collection_names(), "%s: unlinked collection not applied" % label)
            ck.check(m.c["b"].config.stuff.count_documents({}) == 0, "%s: config.* not applied" % label)
            st = m.apply_status()
            ck.eq([v["state"] for v in st.values()], ["running"], "%s: link state" % label)
            ck.eq(m.app.term(), 0, "%s: SIGTERM exits 0" % label)
            if ck.failed:
                m.dump_logs()
        except Exception:
            m.dump_logs()
            raise


run("v2", ["--txn-split-ops", "4"], [("test.*", "test.*"), ("scratch.*", "scratch.*"), ("solo.src", "solo.src")])
run("v1", ["--txn-split-ops", "3", "--oplog-format", "v1"],
    [("test.*", "copy.*"), ("scratch.*", "scratch2.*"), ("solo.src", "solo.dst")], workers=1)
sys.exit(ck.done())
