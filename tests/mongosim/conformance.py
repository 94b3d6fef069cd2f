"""conformance.py — drives mongosim with Debian's pymongo (a client nobody here
wrote) through every command of issue 3 and checks each reply (acceptance 1).
Replies are compared with what a 6.0/7.0 mongod answers (shapes and codes from
the server's error_codes.yml and the command docs)."""
import datetime
import hashlib
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from simlib import Sim, Checker, wait_for  # noqa: E402

import bson  # noqa: E402
import pymongo  # noqa: E402
from bson import Int64, ObjectId, Timestamp, Regex  # noqa: E402
from bson.binary import Binary  # noqa: E402
from bson.son import SON  # noqa: E402
from pymongo import errors, ReturnDocument, CursorType  # noqa: E402
from pymongo.read_concern import ReadConcern  # noqa: E402
from pymongo.write_concern import WriteConcern  # noqa: E402

ck = Checker("conformance")


def is_i32(v):
    return type(v) is int and -2**31 <= v < 2**31


def is_i64(v):
    return isinstance(v, Int64)


def section(name):
    print("-- " + name, flush=True)


def test_handshake(s, c):
    section("hello")
    h = c.admin.command("hello")
    ck.eq(h.get("isWritablePrimary"), True, "isWritablePrimary")
    ck.eq(h.get("secondary"), False, "secondary")
    ck.eq(h.get("setName"), "rs0", "setName")
    ck.eq(list(h.get("hosts", [])), ["127.0.0.1:%d" % s.port], "hosts")
    ck.eq(h.get("primary"), "127.0.0.1:%d" % s.port, "primary")
    for f in ("maxWireVersion", "minWireVersion", "maxBsonObjectSize", "maxMessageSizeBytes", "maxWriteBatchSize",
              "logicalSessionTimeoutMinutes", "connectionId", "setVersion"):
        ck.check(is_i32(h.get(f)), "%s is int32: %r" % (f, h.get(f)))
    ck.eq(h.get("maxWireVersion"), 17, "maxWireVersion")
    ck.check(isinstance(h.get("electionId"), ObjectId), "electionId ObjectId")
    ck.check("topologyVersion" not in h, "no topologyVersion")
    lw = h.get("lastWrite", {})
    ck.check(isinstance(lw.get("opTime", {}).get("ts"), Timestamp), "lastWrite.opTime.ts")
    ck.check(is_i64(lw.get("opTime", {}).get("t")), "lastWrite.opTime.t int64")
    ck.check(isinstance(lw.get("lastWriteDate"), datetime.datetime), "lastWriteDate date")
    ck.check(isinstance(h.get("localTime"), datetime.datetime), "localTime")
    im = c.admin.command("isMaster")
    ck.eq(im.get("ismaster"), True, "isMaster.ismaster")
    ck.check("isWritablePrimary" not in im, "isMaster has no isWritablePrimary")
    ck.eq(c.admin.command("ping")["ok"], 1.0, "ping")
    bi = c.admin.command("buildInfo")
    ck.check(bi["version"].startswith("6.0"), "buildInfo.version")
    ck.check(all(is_i32(v) for v in bi["versionArray"]), "versionArray int32")
    gp = c.admin.command("getParameter", 1, featureCompatibilityVersion=1)
    ck.eq(gp["featureCompatibilityVersion"]["version"], "6.0", "fcv")
    ss = c.admin.command("serverStatus")
    ck.eq(ss.get("process"), "mongod", "serverStatus.process")
    ck.check(ss["connections"]["current"] >= 1, "serverStatus.connections")
    rs = c.admin.command("replSetGetStatus")
    ck.eq(rs["set"], "rs0", "replSetGetStatus.set")
    ck.eq(rs["myState"], 1, "myState")
    ck.eq(rs["members"][0]["stateStr"], "PRIMARY", "stateStr")
    ck.eq(rs["optimes"]["appliedOpTime"]["ts"], s.last_ts(), "appliedOpTime is the newest ts")
    cfg = c.admin.command("replSetGetConfig")["config"]
    ck.eq(cfg["_id"], "rs0", "replSetGetConfig _id")
    ck.eq(cfg["members"][0]["host"], "127.0.0.1:%d" % s.port, "replSetGetConfig host")
    ck.check(isinstance(cfg["settings"]["replicaSetId"], ObjectId), "replicaSetId")
    e = ck.raises(lambda: c.admin.command("noSuchCommand"), 59, "unknown command")
    if e is not None:
        ck.eq(e.details.get("codeName"), "CommandNotFound", "codeName")
        ck.eq(e.details.get("errmsg"), "no such command: 'noSuchCommand'", "errmsg")


def test_crud(s, c):
    section("insert/find")
    db = c.conf
    r = db.a.insert_one({"_id": 1, "x": 1})
    ck.eq(r.inserted_id, 1, "insert_one")
    r = db.command("insert", "z", documents=[{"_id": 1}])
    ck.eq(list(r.keys())[:3], ["n", "electionId", "opTime"], "write reply carries electionId and opTime (write_ops.idl order)")
    r = db.command("update", "z", updates=[{"q": {"_id": 5}, "u": {"$set": {"a": 1}}, "upsert": True}])
    ck.eq(list(r.keys())[:5], ["n", "electionId", "opTime", "upserted", "nModified"], "update reply field order")
    ck.eq(r["opTime"]["ts"], s.last_ts(), "write reply opTime is the write's")
    r = db.a.insert_many([{"_id": i, "x": i, "tags": ["t%d" % (i % 3), "all"], "sub": {"k": i % 2, "arr": [i, i + 1]}}
                          for i in range(2, 12)])
    ck.eq(len(r.inserted_ids), 10, "insert_many")
    e = ck.raises(lambda: db.a.insert_one({"_id": 1}), 11000, "duplicate _id")
    if e is not None:
        ck.eq(e.details.get("keyPattern"), {"_id": 1}, "keyPattern")
        ck.eq(e.details.get("keyValue"), {"_id": 1}, "keyValue")
        ck.eq(e.details.get("errmsg"), "E11000 duplicate key error collection: conf.a index: _id_ dup key: { _id: 1 }", "errmsg")
    try:
        db.a.insert_many([{"_id": 100}, {"_id": 1}, {"_id": 101}], ordered=False)
        ck.check(False, "unordered dup must raise")
    except errors.BulkWriteError as bwe:
        ck.eq(bwe.details["nInserted"], 2, "unordered continues")
        ck.eq(bwe.details["writeErrors"][0]["index"], 1, "writeErrors.index")
    try:
        db.a.insert_many([{"_id": 102}, {"_id": 1}, {"_id": 103}], ordered=True)
        ck.check(False, "ordered dup must raise")
    except errors.BulkWriteError as bwe:
        ck.eq(bwe.details["nInserted"], 1, "ordered stops")
    db.a.delete_many({"_id": {"$gte": 100}})
    oid = db.b.insert_one({"y": 1}).inserted_id
    ck.check(isinstance(oid, ObjectId), "generated ObjectId")
    doc = db.b.find_one()
    ck.eq(list(doc.keys())[0], "_id", "_id first")
    doc = db.b.insert_one(SON([("y", 2), ("_id", 7)]))
    ck.eq(list(db.b.find_one({"_id": 7}).keys()), ["_id", "y"], "_id moved first")

    def ids(q, **kw):
        return [d["_id"] for d in db.a.find(q, **kw)]
    ck.eq(ids({"x": 3}), [3], "equality")
    ck.eq(ids({"sub.k": 1}), [3, 5, 7, 9, 11], "dotted equality")
    ck.eq(ids({"tags": "t1"}), [4, 7, 10], "into arrays")
    ck.eq(ids({"sub.arr": 5}), [4, 5], "dotted into arrays")
    ck.eq(ids({"tags.0": "t2"}), [2, 5, 8, 11], "array index path")
    ck.eq(ids({"x": {"$eq": 4}}), [4], "$eq")
    ck.eq(len(ids({"x": {"$ne": 4}})), 10, "$ne")
    ck.eq(ids({"x": {"$gt": 9}}), [10, 11], "$gt")
    ck.eq(ids({"x": {"$gte": 10}}), [10, 11], "$gte")
    ck.eq(ids({"x": {"$lt": 2}}), [1], "$lt")
    ck.eq(ids({"x": {"$lte": 2}}), [1, 2], "$lte")
    ck.eq(ids({"x": {"$in": [2, 5, 99]}}), [2, 5], "$in")
    # _id $in: answered from the _id index, same results as a scan: natural
    # order, no duplicates, numbers equal across types, absent values skipped
    ck.eq(ids({"_id": {"$in": [5, 2, 99, 2]}}), [2, 5], "_id $in: natural order, once each")
    ck.eq(ids({"_id": {"$in": [2.0, Int64(5)]}}), [2, 5], "_id $in: numbers of other types")
    ck.eq(ids({"_id": {"$in": []}}), [], "_id $in: empty list")
    ck.eq(len(ids({"x": {"$nin": [2, 5]}})), 9, "$nin")
    ck.eq(ids({"tags": {"$exists": False}}), [1], "$exists false")
    ck.eq(len(ids({"sub": {"$exists": True}})), 10, "$exists true")
    ck.eq(ids({"$and": [{"x": {"$gt": 3}}, {"x": {"$lt": 6}}]}), [4, 5], "$and")
    ck.eq(ids({"$or": [{"x": 1}, {"x": 11}]}), [1, 11], "$or")
    ck.eq(len(ids({"$nor": [{"x": 1}, {"x": 11}]})), 9, "$nor")
    ck.eq(ids({"x": {"$not": {"$gt": 1}}}), [1], "$not")
    ck.eq(ids({"x": {"$type": "int"}})[:2], [1, 2], "$type alias")
    ck.eq(ids({"x": {"$type": "string"}}), [], "$type string")
    ck.eq(ids({"x": "3"}), [], "type bracketing")
    ck.eq(ids({"tags.0": {"$regex": "^t[12]$"}}), [2, 4, 5, 7, 8, 10, 11], "$regex")
    ck.eq(ids({"tags.0": Regex("^T\\d", "i")}), ids({"tags.0": {"$exists": True}}), "regex literal, \\d, i flag")
    ck.eq(ids({"tags.0": {"$not": Regex("^t1")}})[:3], [1, 2, 3], "$not regex")
    ck.eq(ids({}, sort=[("x", -1)], skip=2, limit=3), [9, 8, 7], "sort skip limit")
    ck.eq(ids({}, sort=[("sub.k", 1), ("x", -1)], limit=3), [1, 10, 8], "sort missing first, compound")
    ck.eq(ids({"x": {"$lte": 4}}, sort=[("sub.arr", -1)]), [4, 3, 2, 1], "array sorts by its largest element descending")
    ck.eq(ids({"x": {"$lte": 4}}, sort=[("sub.arr", 1)]), [1, 2, 3, 4], "array sorts by its smallest element ascending")
    d = db.a.find_one({"_id": 3}, projection={"x": 1})
    ck.eq(dict(d), {"_id": 3, "x": 3}, "inclusion projection")
    d = db.a.find_one({"_id": 3}, projection={"tags": 0, "sub": 0, "_id": 0})
    ck.eq(dict(d), {"x": 3}, "exclusion projection")
    d = db.a.find_one({"_id": 3}, projection={"sub.k": 1, "_id": 0})
    ck.eq(d, {"sub": {"k": 1}}, "dotted projection")
    cur = db.a.find({}, batch_size=3)
    got = [x["_id"] for x in cur]
    ck.eq(got, list(range(1, 12)), "getMore through batches")
    ck.eq(db.a.count_documents({"x": {"$gt": 5}}), 6, "count_documents (aggregate)")
    ck.eq(db.a.estimated_document_count(), 11, "count")
    ck.eq(db.command("count", "a", query={"x": {"$gt": 5}})["n"], 6, "count command")
    ck.eq(sorted(db.a.distinct("tags")), ["all", "t0", "t1", "t2"], "distinct over arrays")
    ck.eq(sorted(db.a.distinct("x", {"x": {"$lt": 4}})), [1, 2, 3], "distinct with query")
    r = db.command("find", "a", filter={"_id": 1})
    ck.eq(r["cursor"]["ns"], "conf.a", "cursor.ns")
    ck.check(is_i64(r["cursor"]["id"]), "cursor.id int64")
    ck.eq(list(r["cursor"].keys()), ["firstBatch", "id", "ns"], "cursor field order")
    r = db.command("find", "a", batchSize=2)
    cid = r["cursor"]["id"]
    ck.check(cid != 0, "open cursor")
    k = db.command("killCursors", "a", cursors=[cid])
    ck.eq(k["cursorsKilled"], [cid], "killCursors")
    ck.raises(lambda: db.command("getMore", cid, collection="a"), 43, "killed cursor is gone")
    ck.raises(lambda: db.command("find", "a", filter={"x": {"$bogus": 1}}), 2, "bad operator")
    # point-in-time reads: served while nothing changed since, else SnapshotTooOld
    at = s.last_ts()
    rc = {"level": "snapshot", "atClusterTime": at}
    ck.eq(len(db.command("find", "a", readConcern=rc)["cursor"]["firstBatch"]), 11, "snapshot read at the newest ts")
    db.other.insert_one({"_id": 1})
    ck.eq(len(db.command("find", "a", readConcern=rc)["cursor"]["firstBatch"]), 11, "snapshot read, other namespace written")
    db.a.update_one({"_id": 1}, {"$set": {"later": 1}})
    ck.raises(lambda: db.command("find", "a", readConcern=rc), 239, "SnapshotTooOld once the namespace changed")
    db.a.update_one({"_id": 1}, {"$unset": {"later": 1}})


def test_updates(s, c):
    section("update operators")
    db = c.conf
    u = db.u

    def after(update, start, **kw):
        u.delete_many({})
        u.insert_one(SON([("_id", 1)] + list(start.items())))
        if any(k.startswith("$") for k in update):
            u.update_one({"_id": 1}, update, **kw)
        else:
            u.replace_one({"_id": 1}, update, **kw)
        d = u.find_one({"_id": 1})
        del d["_id"]
        return d.to_dict() if hasattr(d, "to_dict") else dict(d)
    ck.eq(after({"$set": {"a.b": 1}}, {"a": {}}), {"a": {"b": 1}}, "$set dotted")
    ck.eq(after({"$set": {"n.m.o": 1}}, {}), {"n": {"m": {"o": 1}}}, "$set creates parents")
    ck.eq(after({"$unset": {"a": ""}}, {"a": 1, "b": 2}), {"b": 2}, "$unset")
    ck.eq(after({"$inc": {"a": 2, "z": 1}}, {"a": 1}), {"a": 3, "z": 1}, "$inc")
    ck.eq(after({"$mul": {"a": 3, "z": 2}}, {"a": 2}), {"a": 6, "z": 0}, "$mul")
    ck.eq(after({"$min": {"a": 1}}, {"a": 5}), {"a": 1}, "$min")
    ck.eq(after({"$max": {"a": 1}}, {"a": 5}), {"a": 5}, "$max no-op")
    ck.eq(after({"$rename": {"a": "b"}}, {"a": 1, "c": 2}), {"c": 2, "b": 1}, "$rename")
    ck.eq(after({"$push": {"a": 3}}, {"a": [1, 2]}), {"a": [1, 2, 3]}, "$push")
    ck.eq(after({"$push": {"a": {"$each": [3, 4], "$slice": -3}}}, {"a": [1, 2]}), {"a": [2, 3, 4]}, "$push $each $slice")
    ck.eq(after({"$push": {"a": {"$each": [0], "$position": 0}}}, {"a": [1, 2]}), {"a": [0, 1, 2]}, "$push $position")
    ck.eq(after({"$push": {"a": {"$each": [{"s": 2}, {"s": 0}], "$sort": {"s": -1}}}}, {"a": [{"s": 1}]}),
          {"a": [{"s": 2}, {"s": 1}, {"s": 0}]}, "$push $sort by field")
    ck.eq(after({"$push": {"a": {"$each": [3, 1], "$sort": 1, "$slice": 3}}}, {"a": [2, 5]}), {"a": [1, 2, 3]}, "$push $sort $slice")
    ck.eq(after({"$pull": {"a": {"$gt": 2}}}, {"a": [1, 2, 3, 4]}), {"a": [1, 2]}, "$pull cond")
    ck.eq(after({"$pull": {"a": 2}}, {"a": [2, 1, 2]}), {"a": [1]}, "$pull value")
    ck.eq(after({"$pullAll": {"a": [1, 3]}}, {"a": [1, 2, 3]}), {"a": [2]}, "$pullAll")
    ck.eq(after({"$addToSet": {"a": 2}}, {"a": [1, 2]}), {"a": [1, 2]}, "$addToSet dup")
    ck.eq(after({"$addToSet": {"a": {"$each": [2, 3]}}}, {"a": [1, 2]}), {"a": [1, 2, 3]}, "$addToSet $each")
    ck.eq(after({"$pop": {"a": 1}}, {"a": [1, 2, 3]}), {"a": [1, 2]}, "$pop last")
    ck.eq(after({"$pop": {"a": -1}}, {"a": [1, 2, 3]}), {"a": [2, 3]}, "$pop first")
    d = after({"$currentDate": {"d": True, "t": {"$type": "timestamp"}}}, {})
    ck.check(isinstance(d.get("d"), datetime.datetime) and isinstance(d.get("t"), Timestamp), "$currentDate")
    ck.eq(after({"$set": {"a.1": 9}}, {"a": [1, 2]}), {"a": [1, 9]}, "$set array element")
    ck.eq(after({"b": 5}, {"a": 1}), {"b": 5}, "replacement")
    u.delete_many({})
    u.insert_one({"_id": 1, "a": [1, 5, 7], "g": [{"k": 1, "n": 0}, {"k": 2, "n": 0}]})
    u.update_one({"_id": 1, "a": {"$gt": 4}}, {"$set": {"a.$": 50}})
    u.update_one({"_id": 1, "g.k": 2}, {"$inc": {"g.$.n": 3}})
    u.update_one({"_id": 1, "g": {"$elemMatch": {"k": 1}}}, {"$set": {"g.$.t": True}})
    d = u.find_one({"_id": 1})
    ck.eq((d["a"], d["g"]), ([1, 50, 7], [{"k": 1, "n": 0, "t": True}, {"k": 2, "n": 3}]), "positional $")
    e = s.oplog({"ns": "conf.u", "op": "u"})[-2]
    ck.eq(e["o"], {"$v": 2, "diff": {"sg": {"a": True, "s1": {"u": {"n": 3}}}}}, "positional update logged as an array diff")
    ck.raises(lambda: u.update_one({"_id": 1}, {"$set": {"a.$": 0}}), 2, "positional without a matching query")
    u.delete_many({})
    ck.raises(lambda: u.update_one({"_id": 1}, {"$inc": {"a": "x"}}, upsert=True), 14, "$inc non-numeric")
    u.insert_one({"_id": 1, "s": "str"})
    ck.raises(lambda: u.update_one({"_id": 1}, {"$inc": {"s": 1}}), 14, "$inc on string")
    ck.raises(lambda: u.update_one({"_id": 1}, {"$set": {"_id": 2}}), 66, "immutable _id")
    ck.raises(lambda: u.update_one({"_id": 1}, {"$set": {"a": 1}, "$inc": {"a": 1}}), 40, "conflicting paths")
    ck.raises(lambda: u.update_one({"_id": 1}, {"$push": {"s": 1}}), 2, "$push on non-array")
    ck.raises(lambda: u.update_one({"_id": 1}, {"$bogus": {"s": 1}}), 9, "unknown modifier")
    r = u.update_one({"_id": 1}, {"$set": {"s": "str"}})
    ck.eq((r.matched_count, r.modified_count), (1, 0), "no-op update: matched 1 modified 0")
    r = u.update_one({"_id": 5}, {"$set": {"q": 1}}, upsert=True)
    ck.eq(r.upserted_id, 5, "upsert from query _id")
    ck.eq(dict(u.find_one({"_id": 5})), {"_id": 5, "q": 1}, "upserted doc")
    r = u.update_one({"k": 7}, {"$set": {"q": 2}}, upsert=True)
    ck.check(isinstance(r.upserted_id, ObjectId), "upsert generates _id")
    ck.eq(u.find_one({"_id": r.upserted_id})["k"], 7, "upsert seeds equality fields")
    r = u.replace_one({"z": 1}, {"z": 1, "w": 2}, upsert=True)
    ck.check(r.upserted_id is not None, "replacement upsert")
    u.insert_many([{"_id": 10 + i, "m": 1} for i in range(4)])
    r = u.update_many({"m": 1}, {"$inc": {"m": 1}})
    ck.eq((r.matched_count, r.modified_count), (4, 4), "multi update")
    r = u.delete_one({"m": 2})
    ck.eq(r.deleted_count, 1, "delete limit 1")
    r = u.delete_many({"m": 2})
    ck.eq(r.deleted_count, 3, "delete limit 0")

    section("findAndModify")
    f = db.f
    f.insert_many([{"_id": i, "v": i} for i in range(3)])
    d = f.find_one_and_update({"v": {"$gte": 1}}, {"$inc": {"v": 10}}, sort=[("v", -1)])
    ck.eq(d["v"], 2, "returns pre-image, sorted")
    d = f.find_one_and_update({"_id": 0}, {"$inc": {"v": 1}}, return_document=ReturnDocument.AFTER)
    ck.eq(d["v"], 1, "returns post-image")
    d = f.find_one_and_replace({"_id": 1}, {"r": 1}, return_document=ReturnDocument.AFTER)
    ck.eq(dict(d), {"_id": 1, "r": 1}, "replace")
    d = f.find_one_and_delete({}, sort=[("v", -1)])
    ck.eq(d["_id"], 2, "delete with sort takes the first in order")
    d = f.find_one_and_delete({"_id": 1})
    ck.eq(d["_id"], 1, "delete returns doc")
    ck.eq(f.find_one({"_id": 1}), None, "deleted")
    d = f.find_one_and_update({"_id": 9}, {"$set": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER)
    ck.eq(dict(d), {"_id": 9, "n": 1}, "upsert returns new")
    r = db.command("findAndModify", "f", query={"_id": 77}, update={"$set": {"a": 1}})
    ck.eq(r["value"], None, "no match -> null")
    ck.eq(r["lastErrorObject"], {"n": 0, "updatedExisting": False}, "lastErrorObject no match")
    d = f.find_one_and_update({"_id": 9}, {"$set": {"n": 2}}, projection={"n": 1, "_id": 0}, return_document=ReturnDocument.AFTER)
    ck.eq(dict(d), {"n": 2}, "fields projection")

    section("aggregate")
    g = db.g
    g.insert_many([{"_id": i, "k": i % 3, "v": i} for i in range(9)])
    r = list(g.aggregate([{"$match": {"v": {"$gte": 1}}}, {"$group": {"_id": "$k", "s": {"$sum": "$v"}, "n": {"$sum": 1}}},
                          {"$sort": {"_id": 1}}]))
    ck.eq([dict(x) for x in r], [{"_id": 0, "s": 9, "n": 2}, {"_id": 1, "s": 12, "n": 3}, {"_id": 2, "s": 15, "n": 3}], "$group $sum")
    r = list(g.aggregate([{"$sort": {"v": -1}}, {"$skip": 1}, {"$limit": 2}, {"$project": {"v": 1, "_id": 0}}]))
    ck.eq([dict(x) for x in r], [{"v": 7}, {"v": 6}], "$sort $skip $limit $project")
    r = list(g.aggregate([{"$match": {"k": 1}}, {"$count": "c"}]))
    ck.eq([dict(x) for x in r], [{"c": 3}], "$count")
    r = list(g.aggregate([{"$group": {"_id": None, "c": {"$count": {}}}}]))
    ck.eq(r[0]["c"], 9, "$group $count")
    e = ck.raises(lambda: list(g.aggregate([{"$bogus": {}}])), 40415, "unknown stage")
    if e is not None:
        ck.eq(e.details.get("codeName"), "Location40415", "assertion codeName")


def test_ddl(s, c):
    section("ddl")
    db = c.ddl
    db.command("create", "c1")
    ck.raises(lambda: db.command("create", "c1"), 48, "NamespaceExists")
    lc = list(db.list_collections())
    ck.eq([x["name"] for x in lc], ["c1"], "listCollections")
    ck.check(isinstance(lc[0]["info"]["uuid"], (Binary, type(lc[0]["info"]["uuid"]))), "listCollections uuid")
    ck.eq(db.c1.create_index([("a", 1)], unique=True), "a_1", "createIndexes")
    names = [ix["name"] for ix in db.c1.list_indexes()]
    ck.eq(names, ["_id_", "a_1"], "listIndexes")
    db.c1.insert_one({"_id": 1, "a": 1})
    e = ck.raises(lambda: db.c1.insert_one({"_id": 2, "a": 1}), 11000, "unique secondary index")
    if e is not None:
        ck.eq(e.details.get("keyPattern"), {"a": 1}, "unique keyPattern")
        ck.eq(e.details.get("keyValue"), {"a": 1}, "unique keyValue")
    db.c1.create_index([("s", 1)], unique=True, sparse=True)
    db.c1.insert_many([{"_id": 10, "a": 10}, {"_id": 11, "a": 11}])
    db.c1.insert_one({"_id": 12, "a": 12, "s": 1})
    ck.raises(lambda: db.c1.insert_one({"_id": 13, "a": 13, "s": 1}), 11000, "sparse unique still unique")
    db.c1.create_index([("p", 1)], unique=True, partialFilterExpression={"q": {"$exists": True}})
    db.c1.insert_many([{"_id": 14, "a": 14, "p": 1}, {"_id": 15, "a": 15, "p": 1}])
    db.c1.insert_one({"_id": 16, "a": 16, "p": 2, "q": 1})
    ck.raises(lambda: db.c1.insert_one({"_id": 17, "a": 17, "p": 2, "q": 1}), 11000, "partial unique")
    db.c1.insert_one({"_id": 18, "a": [30, 31]})
    e = ck.raises(lambda: db.c1.insert_one({"_id": 19, "a": [40, 31]}), 11000, "unique multikey: array elements are keys")
    if e is not None:
        ck.eq(e.details.get("keyValue"), {"a": 31}, "multikey keyValue")
    db.c1.delete_many({"_id": {"$gte": 10}})
    t0 = time.monotonic()
    db.big.create_index("k", unique=True)
    db.big.insert_many([{"k": i} for i in range(5000)])
    ck.raises(lambda: db.big.insert_one({"k": 4321}), 11000, "unique over 5000 documents")
    ck.check(time.monotonic() - t0 < 5, "unique checks are indexed (%.2fs)" % (time.monotonic() - t0))
    db.big.drop()
    db.c1.drop_index("s_1")
    db.c1.drop_index("p_1")
    r = db.command("createIndexes", "c1", indexes=[{"key": {"a": 1}, "name": "a_1", "unique": True}])
    ck.eq(r.get("note"), "all indexes already exist", "idempotent createIndexes")
    ck.raises(lambda: db.command("createIndexes", "c1", indexes=[{"key": {"b": 1}, "name": "a_1"}]), 86, "IndexKeySpecsConflict")
    db.c1.create_index([("t", 1)], expireAfterSeconds=100)
    r = db.command("collMod", "c1", index={"name": "t_1", "expireAfterSeconds": 200})
    ck.eq(r.get("expireAfterSeconds_old"), 100, "collMod old value")
    db.c1.drop_index("a_1")
    ck.eq([ix["name"] for ix in db.c1.list_indexes()], ["_id_", "t_1"], "dropIndexes")
    ck.raises(lambda: db.c1.drop_index("nope"), 27, "IndexNotFound")
    db.c1.insert_one({"_id": 2, "a": 1})
    c.admin.command("renameCollection", "ddl.c1", to="ddl.c2")
    ck.eq(db.list_collection_names(), ["c2"], "renameCollection")
    ck.eq(db.c2.count_documents({}), 2, "rename keeps data")
    ck.raises(lambda: c.admin.command("renameCollection", "ddl.zz", to="ddl.c3"), 26, "rename missing")
    db.c3.insert_one({"x": 1})
    db.c3.drop()
    ck.eq(db.list_collection_names(), ["c2"], "drop")
    ck.check("ddl" in c.list_database_names(), "listDatabases")
    c.drop_database("ddl")
    ck.check("ddl" not in c.list_database_names(), "dropDatabase")
    ops = s.oplog({"ns": "ddl.$cmd"})
    kinds = [list(e["o"].keys())[0] for e in ops]
    kinds = [k for k, e in zip(kinds, ops) if e["o"].get(k) != "big"]
    ck.eq(kinds, ["create", "createIndexes", "startIndexBuild", "commitIndexBuild", "startIndexBuild", "commitIndexBuild",
                  "dropIndexes", "dropIndexes", "startIndexBuild", "commitIndexBuild", "collMod", "dropIndexes",
                  "renameCollection", "create", "drop", "drop", "dropDatabase"], "DDL oplog entries")
    byk = {list(e["o"].keys())[0]: e for e in ops}
    ck.eq(list(byk["create"]["o"].keys()), ["create", "idIndex"], "create entry")
    ck.eq(byk["drop"]["o2"], {"numRecords": 2}, "drop o2.numRecords")
    ck.eq(dict([e for e in ops if "dropIndexes" in e["o"]][-1]["o2"]), {"v": 2, "key": {"a": 1}, "name": "a_1", "unique": True}, "dropIndexes o2 spec")
    ck.check("ui" not in byk["dropDatabase"], "dropDatabase has no ui")
    ck.eq(dict(byk["renameCollection"]["o"]), {"renameCollection": "ddl.c1", "to": "ddl.c2", "stayTemp": False}, "rename entry")
    ck.check("collectionOptions_old" in byk["collMod"]["o2"], "collMod o2")

    section("more ddl")
    d2 = c.ddl2
    d2.src.insert_one({"_id": 1})
    d2.dst.insert_one({"_id": 2})
    dst_uuid = [x for x in d2.list_collections() if x["name"] == "dst"][0]["info"]["uuid"]
    ck.raises(lambda: c.admin.command("renameCollection", "ddl2.src", to="ddl2.dst"), 48, "rename onto an existing target")
    c.admin.command("renameCollection", "ddl2.src", to="ddl2.dst", dropTarget=True)
    ck.eq(list(d2.dst.find()), [{"_id": 1}], "dropTarget replaced the target")
    e = s.oplog({"o.renameCollection": "ddl2.src"})[-1]
    ck.eq(e["o"].get("dropTarget"), dst_uuid, "rename entry names the dropped target's UUID")
    d2.dst.create_index([("a", 1)])
    d2.dst.create_index([("b", 1)])
    d2.command("dropIndexes", "dst", index={"a": 1})
    ck.eq([ix["name"] for ix in d2.dst.list_indexes()], ["_id_", "b_1"], "dropIndexes by key pattern")
    d2.command("dropIndexes", "dst", index="*")
    ck.eq([ix["name"] for ix in d2.dst.list_indexes()], ["_id_"], "dropIndexes '*'")
    d2.command("create", "v", validator={"a": {"$exists": True}})
    d2.command("collMod", "v", validator={"b": {"$exists": True}})
    e = s.oplog({"o.collMod": "v"})[-1]
    ck.eq(e["o2"]["collectionOptions_old"].get("validator"), {"a": {"$exists": True}}, "collMod o2 keeps the old validator")
    opts = [x for x in d2.list_collections() if x["name"] == "v"][0]["options"]
    ck.eq(opts.get("validator"), {"b": {"$exists": True}}, "collMod changed the options")


def test_txn(s, c):
    section("transactions")
    db = c.tx
    db.t.insert_many([{"_id": i, "v": 0} for i in range(3)])
    before = s.last_ts()
    with c.start_session() as ses:
        with ses.start_transaction():
            db.t.insert_one({"_id": 10}, session=ses)
            db.t.update_one({"_id": 0}, {"$inc": {"v": 1}}, session=ses)
            db.t.delete_one({"_id": 1}, session=ses)
            c.mmm.checkpoints.update_one({"_id": "x"}, {"$set": {"ts": 1}}, upsert=True, session=ses)
            ck.eq(db.t.find_one({"_id": 10}, session=ses), {"_id": 10}, "own write visible")
            ck.eq(db.t.find_one({"_id": 10}), None, "uncommitted insert invisible outside")
            ck.eq(db.t.find_one({"_id": 0})["v"], 0, "uncommitted update invisible outside")
    ck.eq(db.t.find_one({"_id": 0})["v"], 1, "committed")
    new = s.oplog({"ts": {"$gt": before}})
    txe = [e for e in new if e["op"] == "c" and e["ns"] == "admin.$cmd"]
    ck.eq(len(txe), 1, "one applyOps entry")
    if txe:
        e = txe[0]
        ck.eq(list(e.keys()), ["lsid", "txnNumber", "op", "ns", "o", "ts", "t", "v", "wall", "prevOpTime"], "applyOps entry fields")
        ops = e["o"]["applyOps"]
        ck.eq([o["op"] for o in ops], ["i", "u", "d", "c", "i"], "inner ops (incl. implicit create of mmm.checkpoints)")
        ck.eq([o["ns"] for o in ops], ["tx.t", "tx.t", "tx.t", "mmm.$cmd", "mmm.checkpoints"], "inner ns")
        ck.eq(list(ops[1].keys()), ["op", "ns", "ui", "o", "o2"], "inner op fields")
        ck.eq(e["prevOpTime"], {"ts": Timestamp(0, 0), "t": -1}, "prevOpTime")
        ck.check(is_i64(e["txnNumber"]), "txnNumber int64")
    ck.eq([e["op"] for e in new if e["ns"] == "tx.t"], [], "no separate CRUD entries for the transaction")
    # snapshot reads: a transaction keeps reading the state of its start
    with c.start_session() as ses:
        with ses.start_transaction():
            ck.eq(db.t.find_one({"_id": 0}, session=ses)["v"], 1, "snapshot read")
            db.t.update_one({"_id": 0}, {"$set": {"v": 5}})
            db.t.insert_one({"_id": 30})
            ck.eq(db.t.find_one({"_id": 0}, session=ses)["v"], 1, "later commit invisible to the snapshot")
            ck.eq(db.t.find_one({"_id": 30}, session=ses), None, "later insert invisible to the snapshot")
            ck.eq(db.t.count_documents({"_id": {"$in": [0, 30]}}, session=ses), 1, "snapshot count")
            db.t.delete_one({"_id": 2})
            ck.eq(db.t.find_one({"_id": 2}, session=ses)["_id"], 2, "later delete invisible to the snapshot")
            db.t.insert_one({"_id": 2, "back": 1})
            ck.eq(db.t.find_one({"_id": 2}, session=ses).get("back"), None, "delete + re-insert invisible to the snapshot")
            ses.abort_transaction()
    ck.eq(db.t.find_one({"_id": 0})["v"], 5, "outside sees the newest")
    db.t.update_one({"_id": 0}, {"$set": {"v": 1}})
    db.t.delete_one({"_id": 30})

    before = s.last_ts()
    with c.start_session() as ses:
        ses.start_transaction()
        db.t.insert_one({"_id": 20}, session=ses)
        ses.abort_transaction()
    ck.eq(db.t.find_one({"_id": 20}), None, "abort discards")
    ck.eq(len(s.oplog({"ts": {"$gt": before}})), 0, "abort writes nothing")

    # WriteConflict: two transactions write the same document
    s1, s2 = c.start_session(), c.start_session()
    s1.start_transaction()
    db.t.update_one({"_id": 2}, {"$set": {"w": 1}}, session=s1)
    s2.start_transaction()
    try:
        db.t.update_one({"_id": 2}, {"$set": {"w": 2}}, session=s2)
        ck.check(False, "second writer must conflict")
    except errors.OperationFailure as e:
        ck.eq(e.code, 112, "WriteConflict")
        ck.check(e.has_error_label("TransientTransactionError"), "TransientTransactionError label")
    ck.raises(lambda: db.t.find_one({"_id": 2}, session=s2), 251, "aborted transaction -> NoSuchTransaction")
    try:
        s2.abort_transaction()
    except Exception:
        pass
    s1.commit_transaction()
    attempts = []

    def body(ses):
        attempts.append(1)
        db.t.update_one({"_id": 2}, {"$inc": {"n": 1}}, session=ses)
    # a conflicting writer holds the document on the first attempt only
    s3 = c.start_session()
    s3.start_transaction()
    db.t.update_one({"_id": 2}, {"$set": {"hold": 1}}, session=s3)
    t = threading.Timer(0.2, lambda: s3.commit_transaction())
    t.start()

    def body2(ses):
        attempts.append(1)
        try:
            db.t.update_one({"_id": 2}, {"$inc": {"n": 1}}, session=ses)
        except errors.OperationFailure:
            time.sleep(0.1)
            raise
    s2.with_transaction(body2)
    t.join()
    ck.check(len(attempts) >= 2, "with_transaction retried after WriteConflict (%d attempts)" % len(attempts))
    d = db.t.find_one({"_id": 2})
    ck.eq((d.get("w"), d.get("n"), d.get("hold")), (1, 1, 1), "retry applied once after the other commit")
    s1.end_session(); s2.end_session(); s3.end_session()

    # a non-transaction write waits for the transaction holding the document
    s4 = c.start_session()
    s4.start_transaction()
    db.t.update_one({"_id": 0}, {"$set": {"by": "txn"}}, session=s4)
    threading.Timer(0.2, lambda: s4.commit_transaction()).start()
    t0 = time.monotonic()
    db.t.update_one({"_id": 0}, {"$set": {"by": "plain"}})
    ck.check(time.monotonic() - t0 >= 0.15, "plain write waited for the commit")
    ck.eq(db.t.find_one({"_id": 0})["by"], "plain", "plain write applied after")
    s4.end_session()
    ck.raises(lambda: c.admin.command("commitTransaction"), 20, "commit outside a transaction")


def test_retryable(s, c):
    section("retryable writes")
    db = c.rw
    before = s.last_ts()
    db.r.insert_many([{"_id": 1}, {"_id": 2}])
    ents = [e for e in s.oplog({"ts": {"$gt": before}}) if e["op"] == "i"]
    ck.eq([e["stmtId"] for e in ents], [0, 1], "stmtId per statement")
    ck.eq(list(ents[0].keys()), ["lsid", "txnNumber", "op", "ns", "ui", "o", "ts", "t", "v", "wall", "stmtId", "prevOpTime"], "retryable insert fields")
    ck.eq(ents[1]["prevOpTime"]["ts"], ents[0]["ts"], "prevOpTime chain")
    ck.eq(ents[0]["lsid"]["uid"], hashlib.sha256(b"").digest(), "lsid.uid = sha256('')")
    # the same statement sent twice with the same txnNumber runs once
    own = s.client()   # its session pool is thrown away afterwards
    with own.start_session() as ses:
        cmd = SON([("insert", "r"), ("documents", [{"_id": 3}]), ("txnNumber", Int64(42))])
        r1 = own.rw.command(cmd, session=ses)
        r2 = own.rw.command(cmd, session=ses)
        ck.eq((r1["n"], r2["n"]), (1, 1), "retry returns the first result")
        ck.check("writeErrors" not in r2, "retry is not a duplicate")
    own.close()
    ck.eq(len([e for e in s.oplog({"ns": "rw.r", "o._id": 3})]), 1, "one oplog entry for a retried write")
    nc = s.client(retryWrites=False)
    before = s.last_ts()
    nc.rw.r.insert_one({"_id": 4})
    e = s.oplog({"ts": {"$gt": before}})[0]
    ck.eq(list(e.keys()), ["op", "ns", "ui", "o", "ts", "t", "v", "wall"], "plain insert fields")
    ck.check(is_i64(e["t"]) and is_i64(e["v"]) and e["ui"].subtype == 4 if hasattr(e["ui"], "subtype") else True, "types")


def test_tail(s, c):
    section("tailable oplog cursor")
    start = s.last_ts()
    cur = c.local["oplog.rs"].find({"ts": {"$gt": start}}, cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(2000)
    w = s.client()
    t = threading.Timer(0.1, lambda: w.tl.c.insert_one({"_id": 1}))
    t0 = time.monotonic()
    t.start()
    got = []
    while cur.alive and len(got) < 2 and time.monotonic() - t0 < 5:
        for e in cur:
            got.append(e)
            if len(got) >= 2:
                break
    t.join()
    ck.eq([e["op"] for e in got[:2]], ["c", "i"], "create + insert arrive through awaitData")
    ck.check(time.monotonic() - t0 < 1.5, "returned as soon as written")
    cur.close()
    newest = c.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])
    ck.eq(newest["ts"], s.last_ts(), "$natural:-1 limit 1 is the newest")
    ck.eq(c.local["oplog.rs"].find_one({"ts": {"$gte": newest["ts"]}})["ts"], newest["ts"], "$gte filter")
    ck.eq(c.admin.command("hello")["lastWrite"]["opTime"]["ts"], newest["ts"], "hello lastWrite.opTime")


def test_dbhash(s, c):
    section("dbHash")
    db = c.dh
    docs = [SON([("_id", i), ("v", i * 2)]) for i in (5, 1, 3)]
    db.h.insert_many(docs)
    db.g.insert_one({"_id": "a"})
    r = db.command("dbHash")
    want = {}
    for name, ds in (("g", [SON([("_id", "a")])]), ("h", sorted(docs, key=lambda d: d["_id"]))):
        m = hashlib.md5()
        for d in ds:
            m.update(bson.BSON.encode(d))
        want[name] = m.hexdigest()
    ck.eq(dict(r["collections"]), want, "per-collection md5 in _id order")
    ck.eq(r["md5"], hashlib.md5((want["g"] + want["h"]).encode()).hexdigest(), "overall md5")
    ck.eq(list(r.keys())[:5], ["host", "collections", "capped", "uuids", "md5"], "reply shape")


def test_applyops(s, c):
    section("applyOps")
    before = s.last_ts()
    r = c.admin.command("applyOps", [
        {"op": "i", "ns": "ao.c", "o": {"_id": 1, "a": 1}},
        {"op": "u", "ns": "ao.c", "o": {"$v": 2, "diff": {"u": {"a": 2}, "i": {"b": [1]}}}, "o2": {"_id": 1}},
        {"op": "i", "ns": "ao.c", "o": {"_id": 2}},
        {"op": "d", "ns": "ao.c", "o": {"_id": 2}},
    ])
    ck.eq(r["applied"], 4, "applied")
    ck.eq(dict(c.ao.c.find_one({"_id": 1})), {"_id": 1, "a": 2, "b": [1]}, "applyOps $v:2 diff applied")
    ents = s.oplog({"ts": {"$gt": before}})
    ck.eq([(e["op"], e["ns"]) for e in ents], [("c", "ao.$cmd"), ("c", "admin.$cmd")], "create + one applyOps entry")
    c.admin.command("applyOps", [{"op": "u", "ns": "ao.c", "o": {"$v": 1, "$set": {"a": 3}}, "o2": {"_id": 1}},
                                 {"op": "u", "ns": "ao.c", "o": {"_id": 1, "z": 1}, "o2": {"_id": 1}}])
    ck.eq(dict(c.ao.c.find_one({"_id": 1})), {"_id": 1, "z": 1}, "applyOps $v:1 and replacement")
    ck.raises(lambda: c.admin.command("applyOps", [{"op": "u", "ns": "ao.c", "o": {"$v": 2, "diff": {"u": {"q": 1}}}, "o2": {"_id": 99}}]),
              4, "applyOps update of a missing document")


def test_faults(s, c):
    section("faults")
    # clock offset moves wall and ts seconds
    c.admin.command("mongosimClock", {"offsetMs": 86400 * 1000})
    c.fl.c.insert_one({"_id": 1})
    e = s.oplog({"ns": "fl.c"})[-1]
    now = time.time()
    ck.check(abs(e["ts"].time - (now + 86400)) < 5, "ts seconds follow the offset clock")
    ck.check(abs(e["wall"].replace(tzinfo=datetime.timezone.utc).timestamp() - (now + 86400)) < 5, "wall follows the offset clock")
    c.admin.command("mongosimClock", {"offsetMs": 0})
    c.fl.c.insert_one({"_id": 2})
    e2 = s.oplog({"ns": "fl.c"})[-1]
    ck.check(e2["ts"] > e["ts"], "ts strictly increasing after the clock steps back")
    # pause stalls replies
    other = s.client()
    other.admin.command("ping")
    c.admin.command("mongosimPause", 400)
    t0 = time.monotonic()
    other.admin.command("ping")
    ck.check(time.monotonic() - t0 >= 0.3, "mongosimPause stalls replies")
    # step-down: writes fail with NotWritablePrimary, term bumps after
    nr = s.client(retryWrites=False, serverSelectionTimeoutMS=500)
    nr.admin.command("ping")
    term0 = c.admin.command("replSetGetStatus")["term"]
    try:
        c.admin.command("mongosimStepDown", 1)
    except errors.AutoReconnect:
        pass
    try:
        nr.fl.c.insert_one({"_id": 3})
        ck.check(False, "write during step-down must fail")
    except (errors.NotMasterError, errors.ServerSelectionTimeoutError, errors.AutoReconnect) as ex:
        ck.check(True, str(ex))
    # a retryable write's error carries the RetryableWriteError label
    direct = pymongo.MongoClient("mongodb://127.0.0.1:%d/?directConnection=true" % s.port, retryWrites=False)
    try:
        with direct.start_session() as ses:
            direct.fl.command(SON([("insert", "c"), ("documents", [{"_id": 9}]), ("txnNumber", Int64(1))]), session=ses)
        ck.check(False, "retryable write during step-down must fail")
    except (errors.OperationFailure, errors.NotMasterError) as ex:
        ck.eq((ex.details or {}).get("code"), 10107, "NotWritablePrimary")
        ck.eq((ex.details or {}).get("codeName"), "NotWritablePrimary", "codeName")
        ck.eq((ex.details or {}).get("errorLabels"), ["RetryableWriteError"], "RetryableWriteError label")
    direct.close()
    ok = wait_for(lambda: _try_insert(c, {"_id": 4}), timeout=8)
    ck.check(ok, "writes resume after step-down")
    ck.eq(c.admin.command("replSetGetStatus")["term"], term0 + 1, "term bumped")
    ck.eq(s.oplog({"o.msg": "new primary"})[-1]["t"], term0 + 1, "new primary noop in new term")


def test_concurrency(s, c):
    section("many concurrent clients")
    c.cc.ctr.insert_one({"_id": "n", "v": 0})
    start = s.last_ts()
    seen = []
    done = threading.Event()

    def tailer():
        tc = s.client()
        cur = tc.local["oplog.rs"].find({"ts": {"$gt": start}}, cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(200)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and cur.alive:
            for e in cur:
                if e["ns"].startswith("cc."):
                    seen.append(e)
            if done.is_set() and len(seen) >= 8 * 250 + 8 * 50 + 1:
                break
        cur.close()

    def worker(k):
        wc = s.client()
        for i in range(250):
            wc.cc.docs.insert_one({"k": k, "i": i})
            if i % 5 == 0:
                wc.cc.ctr.update_one({"_id": "n"}, {"$inc": {"v": 1}})
    tt = threading.Thread(target=tailer)
    tt.start()
    ws = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    done.set()
    tt.join()
    ck.eq(c.cc.docs.count_documents({}), 2000, "every insert from 8 clients landed")
    ck.eq(c.cc.ctr.find_one({"_id": "n"})["v"], 400, "no lost $inc")
    ck.eq(len(seen), 2000 + 400 + 1, "the tailer saw each write once (plus the create)")
    ts = [e["ts"] for e in seen]
    ck.check(all(a < b for a, b in zip(ts, ts[1:])), "ts strictly increasing")


def test_txn_stress(s, c):
    section("transactions under contention (bank invariant)")
    import random
    db = c.bank
    n, total = 10, 1000
    db.acct.insert_many([{"_id": i, "bal": total // n} for i in range(n)])
    bad_sums = []
    counts = {"commits": 0, "conflicts": 0}
    lock = threading.Lock()

    def transfer(k):
        rnd = random.Random(k)
        cl = s.client()
        for _ in range(60):
            a, b = rnd.sample(range(n), 2)
            amt = rnd.randint(1, 5)
            with cl.start_session() as ses:
                try:
                    with ses.start_transaction():
                        cl.bank.acct.update_one({"_id": a}, {"$inc": {"bal": -amt}}, session=ses)
                        cl.bank.acct.update_one({"_id": b}, {"$inc": {"bal": amt}}, session=ses)
                    with lock:
                        counts["commits"] += 1
                except errors.OperationFailure as e:
                    if e.has_error_label("TransientTransactionError"):
                        with lock:
                            counts["conflicts"] += 1
                    else:
                        raise

    def auditor():
        cl = s.client()
        for _ in range(40):
            with cl.start_session() as ses:
                with ses.start_transaction():
                    got = sum(d["bal"] for d in cl.bank.acct.find({}, session=ses))
                    if got != total:
                        bad_sums.append(got)
    ts = [threading.Thread(target=transfer, args=(k,)) for k in range(4)] + [threading.Thread(target=auditor)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ck.eq(sum(d["bal"] for d in db.acct.find()), total, "money is conserved")
    ck.eq(bad_sums, [], "every snapshot read sees a consistent total")
    ck.check(counts["commits"] > 100, "transfers committed (%d, %d conflicts)" % (counts["commits"], counts["conflicts"]))
    txe = [e for e in s.oplog({"ns": "admin.$cmd", "o.applyOps.ns": "bank.acct"})]
    ck.eq(len(txe), counts["commits"], "one applyOps entry per committed transfer")


def _try_insert(c, d):
    try:
        c.fl.c.insert_one(d)
        return True
    except Exception:
        return False


def test_options():
    section("--oplog-format v1, --txn-split-ops, --noop-interval")
    with Sim(["--oplog-format", "v1", "--txn-split-ops", "2", "--noop-interval", "1"]) as s:
        c = s.client()
        c.o.c.insert_one({"_id": 1, "a": 2, "c": 1})
        c.o.c.update_one({"_id": 1}, {"$inc": {"a": 1}, "$set": {"b": 2}, "$unset": {"c": ""}})
        e = s.oplog({"op": "u"})[-1]
        ck.eq(e["o"], {"$v": 1, "$set": {"a": 3, "b": 2}, "$unset": {"c": True}}, "$v:1 entry")
        before = s.last_ts()
        with c.start_session() as ses:
            with ses.start_transaction():
                for i in range(5):
                    c.o.c.insert_one({"_id": 10 + i}, session=ses)
        ents = [e for e in s.oplog({"ts": {"$gt": before}}) if e["ns"] == "admin.$cmd"]
        ck.eq([len(e["o"]["applyOps"]) for e in ents], [2, 2, 1], "split into chunks of 2")
        ck.eq([e["o"].get("partialTxn") for e in ents], [True, True, None], "partialTxn on all but the last")
        ck.eq(ents[-1]["o"].get("count") if ents else None, 5, "count on the last")
        if len(ents) == 3:
            ck.eq(ents[1]["prevOpTime"]["ts"], ents[0]["ts"], "prevOpTime chain 1")
            ck.eq(ents[2]["prevOpTime"]["ts"], ents[1]["ts"], "prevOpTime chain 2")
            ck.eq(ents[0]["prevOpTime"], {"ts": Timestamp(0, 0), "t": -1}, "first prevOpTime null")
        got = wait_for(lambda: s.oplog({"o.msg": "periodic noop"}), timeout=4)
        ck.check(bool(got), "periodic noop written")
        if got:
            ck.eq(dict(got[0]), {"op": "n", "ns": "", "o": {"msg": "periodic noop"}, "ts": got[0]["ts"], "t": 1, "v": 2,
                                 "wall": got[0]["wall"]}, "noop shape")
            ck.eq(list(got[0].keys()), ["op", "ns", "o", "ts", "t", "v", "wall"], "noop field order")
        ck.eq(s.stop(), 0, "clean exit")


def main():
    with Sim() as s:
        c = s.client()
        for t in (test_handshake, test_crud, test_updates, test_ddl, test_txn, test_retryable, test_tail,
                  test_dbhash, test_applyops, test_concurrency, test_txn_stress, test_faults):
            try:
                t(s, c)
            except Exception as e:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                ck.check(False, "%s raised %r" % (t.__name__, e))
        ck.eq(s.stop(), 0, "clean exit on SIGTERM (leak-free under ASan)")
    try:
        test_options()
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        ck.check(False, "test_options raised %r" % e)
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
