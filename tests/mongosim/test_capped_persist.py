"""test_capped_persist.py — issue 3, acceptance 5: with --oplog-size-mb 1 a
lagging tailable cursor gets CappedPositionLost (136); after a restart with
--dbpath, data and oplog are intact, on the same port."""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from simlib import Sim, Checker  # noqa: E402

from pymongo import CursorType, errors  # noqa: E402

ck = Checker("capped_persist")


def test_capped():
    with Sim(["--oplog-size-mb", "1"]) as s:
        c = s.client()
        c.cp.c.insert_one({"_id": "first"})
        start = s.last_ts()
        cur = c.local["oplog.rs"].find({"ts": {"$gt": start}}, cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(100)
        ck.eq(list(cur), [], "tail starts empty")
        ck.check(cur.alive, "tailable cursor stays open")
        r = c.local.command("find", "oplog.rs", filter={"ts": {"$gt": start}}, tailable=True, awaitData=True)
        lag_id = r["cursor"]["id"]
        ck.check(lag_id != 0, "raw tailable cursor open")
        # a cursor that keeps up does not lose its position
        fast = c.local["oplog.rs"].find({"ts": {"$gt": start}}, cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(100)
        list(fast)
        pad = "x" * 1000
        seen = 0
        for i in range(30):
            c.cp.c.insert_many([{"i": i * 100 + j, "pad": pad} for j in range(100)])
            seen += len(list(fast))
        ck.eq(seen, 3000, "a cursor that keeps up sees every entry")
        oldest = c.local["oplog.rs"].find_one()
        ck.check(oldest["ts"] > start, "the capped oplog dropped old entries")
        total = sum(len(bytes(str(e), "utf8")) for e in c.local["oplog.rs"].find())
        ck.check(total < 3 * 1024 * 1024, "oplog stays near its cap")
        # pymongo hides CappedPositionLost on tailable cursors (it just marks the
        # cursor dead), so the lagging cursor is driven with raw commands
        ck.eq(list(cur), [], "pymongo ends the lost tailable cursor")
        ck.check(not cur.alive, "pymongo marks it dead")
        try:
            c.local.command("getMore", lag_id, collection="oplog.rs", maxTimeMS=100)
            ck.check(False, "lagging cursor must fail")
        except errors.OperationFailure as e:
            ck.eq(e.code, 136, "CappedPositionLost")
            ck.eq(e.details.get("codeName"), "CappedPositionLost", "codeName")
        ck.raises(lambda: c.local.command("getMore", lag_id, collection="oplog.rs"), 43, "the lost cursor is gone")
        # a fresh find from an old position starts at the oldest entry (as mongod's does)
        got = c.local["oplog.rs"].find_one({"ts": {"$gte": start}})
        ck.eq(got["ts"], oldest["ts"], "find from a dropped position returns the oldest entry")


def test_persist():
    d = tempfile.mkdtemp(prefix="mongosim-dbpath-")
    try:
        with Sim(dbpath=d) as s:
            c = s.client()
            c.p.a.insert_many([{"_id": i, "v": i, "sub": {"k": [i]}} for i in range(100)])
            c.p.a.create_index([("v", 1)], unique=True)
            c.p.b.insert_one({"_id": "b"})
            c.p.a.update_many({"v": {"$lt": 10}}, {"$inc": {"v": 1000}})
            c.p.a.delete_many({"v": {"$gt": 90, "$lt": 1000}})
            c.p.b.drop()
            h1 = c.p.command("dbHash")
            ops1 = s.oplog()
            colls1 = {x["name"]: x["info"]["uuid"] for x in c.p.list_collections()}
            idx1 = [dict(x) for x in c.p.a.list_indexes()]
            rsid = c.admin.command("replSetGetConfig")["config"]["settings"]["replicaSetId"]
            port = s.port
            ck.eq(s.stop(), 0, "clean exit on SIGTERM")
            ck.check(os.path.exists(os.path.join(d, "mongosim.bson")), "data file written")
            s.start()
            ck.eq(s.port, port, "same port after restart")
            c = s.client()
            h2 = c.p.command("dbHash")
            ck.eq(h2["collections"], h1["collections"], "data intact (dbHash)")
            ck.eq(h2["md5"], h1["md5"], "dbHash md5")
            ops2 = s.oplog()
            ck.eq(ops2[:len(ops1)], ops1, "oplog intact")
            ck.eq(ops2[len(ops1)]["o"], {"msg": "new primary"}, "restart logs a new-primary noop after it")
            ck.eq({x["name"]: x["info"]["uuid"] for x in c.p.list_collections()}, colls1, "collection UUIDs kept")
            ck.eq([dict(x) for x in c.p.a.list_indexes()], idx1, "indexes kept")
            ck.eq(c.admin.command("replSetGetConfig")["config"]["settings"]["replicaSetId"], rsid, "replicaSetId kept")
            ck.raises(lambda: c.p.a.insert_one({"_id": 500, "v": 50}), 11000, "unique index enforced after restart")
            ck.raises(lambda: c.p.a.update_one({"_id": 60}, {"$set": {"v": 1001}}), 11000, "unique index enforced on update after restart")
            c.p.a.insert_one({"_id": 501})
            ck.check(s.last_ts() > ops1[-1]["ts"], "ts keeps increasing after restart")
            # a client connected before a restart reconnects on the same port
            import pymongo
            keep = pymongo.MongoClient(s.uri, serverSelectionTimeoutMS=10000)
            keep.admin.command("ping")
            s.restart()
            from simlib import wait_for

            def count():
                try:
                    return keep.p.a.count_documents({"_id": 501})
                except errors.PyMongoError:
                    return None   # the driver rediscovers the server first
            ck.eq(wait_for(count, timeout=20, interval=0.2), 1, "old client reconnects after restart")
            keep.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    for t in (test_capped, test_persist):
        try:
            t()
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            ck.check(False, "%s raised %r" % (t.__name__, e))
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
