#!/usr/bin/python3
"""Issue 5, acceptance 3: every real update in ../shared/oplog-samples (the
872 `$v:2` time-series bucket updates, against the 10 buckets of the dump
they update) and every update quoted in text-excerpts.md (`$v:1` and
`$v:2`: MongoShake, jstests/replsets/oplog_format.js, the server's diff
serialization test) yields, through mmm-apply, the same post-image, byte
for byte (field order included), as the independent applier below.
Route: mmm-journal import-bson of each oplog file as a source of a
journal, base documents loaded into the destination, links, mmm-apply.
Also: the transaction chains of mongo-tools' test data (applyOps,
partialTxn, prepared + commit/abort), 8.0 vectored inserts (multiOpType, linked by prevOpTime) from the
samples, and the samples' DDL files apply without stopping the link."""
import os
import subprocess
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from applylib import BIN, FIX, Mesh, _retry_exec, uuid_bin  # noqa: E402
from simlib import Checker, wait_for  # noqa: E402

import bson  # noqa: E402
from bson import json_util  # noqa: E402
from bson.binary import UuidRepresentation  # noqa: E402
from bson.codec_options import CodecOptions  # noqa: E402
from bson.int64 import Int64  # noqa: E402
from bson.objectid import ObjectId  # noqa: E402
from bson.son import SON  # noqa: E402
from bson.timestamp import Timestamp  # noqa: E402

ck = Checker("apply-samples")
OPTS = CodecOptions(document_class=SON, uuid_representation=UuidRepresentation.UNSPECIFIED)
OPLOG = os.path.join(FIX, "oplog")
TXN_JSON = "/work/shared/oplog-samples/mongo-tools/common_txn_testdata_oplog_entries.SYNTHETIC.json"
TS_OPLOG = os.path.join(OPLOG, "mongorestore_testdata_timeseries_tests_ts_dump_with_oplog_oplog.bson")
TS_BASE = "/work/shared/oplog-samples/collections/timeseries_test.system.buckets.foo_ts.bson"
if not os.path.exists(TS_BASE):
    TS_BASE = os.path.join(FIX, "diff", "timeseries_test.system.buckets.foo_ts.bson")


# ---- the independent applier ------------------------------------------------

def apply_v2(doc, diff):
    """A $v:2 document diff: existing fields in order (d drops, u replaces in
    place, i is re-appended at the end, s<f> recurses when the type fits);
    then u fields that were absent, then every i field, in diff order."""
    dels, ups, ins, subs = set(), SON(), SON(), {}
    for k, v in diff.items():
        if k == "d":
            dels = set(v.keys())
        elif k == "u":
            ups = v
        elif k == "i":
            ins = v
        elif k[0] == "s":
            subs[k[1:]] = v
        else:
            raise ValueError("unknown diff section %r" % k)
    out, seen = SON(), set()
    for k, v in doc.items():
        if k in dels or k in ins:
            continue
        if k in ups:
            out[k] = ups[k]
            seen.add(k)
        elif k in subs:
            sd = subs[k]
            if sd.get("a") is True and isinstance(v, list):
                out[k] = apply_arr(v, sd)
            elif sd.get("a") is not True and isinstance(v, dict):
                out[k] = apply_v2(v, sd)
            else:
                out[k] = v
        else:
            out[k] = v
    for k, v in ups.items():
        if k not in seen:
            out[k] = v
    for k, v in ins.items():
        out[k] = v
    return out


def apply_arr(arr, diff):
    out = list(arr)
    if "l" in diff:
        n = diff["l"]
        out = out[:n] + [None] * max(0, n - len(out))
    for k, v in diff.items():
        if k in ("a", "l"):
            continue
        idx = int(k[1:])
        while len(out) <= idx:
            out.append(None)
        if k[0] == "u":
            out[idx] = v
        elif k[0] == "s":
            cur = out[idx]
            if v.get("a") is True and isinstance(cur, list):
                out[idx] = apply_arr(cur, v)
            elif v.get("a") is not True and isinstance(cur, dict):
                out[idx] = apply_v2(cur, v)
        else:
            raise ValueError("unknown array diff key %r" % k)
    return out


def set_path(doc, parts, value):
    """$v:1 $set of a dotted path: walks documents and arrays, creating
    documents for missing parts, padding arrays with null; returns the new value."""
    head, rest = parts[0], parts[1:]
    if isinstance(doc, list):
        i = int(head)
        while len(doc) <= i:
            doc.append(None)
        if rest:
            if not isinstance(doc[i], (dict, list)):
                doc[i] = SON()
            set_path(doc[i], rest, value)
        else:
            doc[i] = value
        return
    if rest:
        if head not in doc or not isinstance(doc[head], (dict, list)):
            doc[head] = SON()
        set_path(doc[head], rest, value)
    else:
        doc[head] = value


def unset_path(doc, parts):
    head, rest = parts[0], parts[1:]
    if isinstance(doc, list):
        i = int(head)
        if i < len(doc):
            if rest:
                unset_path(doc[i], rest)
            else:
                doc[i] = None
        return
    if head not in doc:
        return
    if rest:
        if isinstance(doc[head], (dict, list)):
            unset_path(doc[head], rest)
    else:
        del doc[head]


def deep_copy(v):
    if isinstance(v, dict):
        return SON((k, deep_copy(x)) for k, x in v.items())
    if isinstance(v, list):
        return [deep_copy(x) for x in v]
    return v


def apply_update(doc, o):
    if "$v" in o and o["$v"] == 2:
        return apply_v2(doc, o["diff"])
    if any(k.startswith("$") for k in o):
        out = deep_copy(doc)
        for path in sorted(o.get("$set", {})):       # the server's update tree is name-ordered
            set_path(out, path.split("."), o["$set"][path])
        for path in sorted(o.get("$unset", {})):
            unset_path(out, path.split("."))
        return out
    out = SON([("_id", doc["_id"])]) if "_id" not in o else SON()
    out.update(o)
    return out


# ---- the excerpts as an oplog ------------------------------------------------

EXCERPTS = [  # (pre-image, update o, expected post-image or None)
    ({"_id": 1, "a": 2}, {"$v": 2, "diff": {"u": {"a": 3}, "i": {"b": 2}}}, {"_id": 1, "a": 3, "b": 2}),
    ({"_id": 2, "a": {"b": [1, 2], "c": [1, 2]}}, {"$v": 2, "diff": {"sa": {"u": {"b": [1], "c": [1]}}}},
     {"_id": 2, "a": {"b": [1], "c": [1]}}),
    ({"_id": 3, "a": [2]}, {"$v": 2, "diff": {"sa": {"a": True, "u0": 3}}}, {"_id": 3, "a": [3]}),
    ({"_id": 4, "a": "foo"}, {"$v": 2, "diff": {"i": {"c": [18]}}}, {"_id": 4, "a": "foo", "c": [18]}),
    ({"_id": 5, "name": "apple", "count": 3}, {"$v": 2, "diff": {"d": {"count": False}, "u": {"name": "orange"}, "i": {"c": 11}}},
     {"_id": 5, "name": "orange", "c": 11}),
    ({"_id": 6, "arr": [0, 1, {"dField": 1, "keep": 2}, 3, 4, 5, 6, 7]},
     {"$v": 2, "diff": {"sarr": {"a": True, "l": 6, "u0": {"foo": "bar"}, "s2": {"d": {"dField": False}}, "u5": 1}}},
     {"_id": 6, "arr": [{"foo": "bar"}, 1, {"keep": 2}, 3, 4, 1]}),
    ({"_id": 7, "subArray": [0, {"a": 0}, {"b": 0}, {"c": 0}]},
     {"$v": 2, "diff": {"ssubArray": {"a": True, "s1": {"u": {"a": 1}}, "s2": {"u": {"b": 2}}, "s3": {"u": {"c": 3}}}}},
     {"_id": 7, "subArray": [0, {"a": 1}, {"b": 2}, {"c": 3}]}),
    ({"_id": 8, "dField1": 1, "uField": 0, "dField2": 2, "arr2": [1, 2]},
     {"$v": 2, "diff": {"d": {"dField1": False, "dField2": False}, "u": {"uField": 1}, "sarr2": {"a": True, "l": 5}}},
     {"_id": 8, "uField": 1, "arr2": [1, 2, None, None, None]}),
    ({"_id": 9, "obj": {"iField": 0, "dField": 1, "uField": 0, "x": 1}},
     {"$v": 2, "diff": {"sobj": {"d": {"dField": False}, "u": {"uField": "foo"}, "i": {"iField": 1}}}},
     {"_id": 9, "obj": {"uField": "foo", "x": 1, "iField": 1}}),
    ({"_id": 10, "x": 1}, {"$v": 2, "diff": {"i": {"a": 1}}}, {"_id": 10, "x": 1, "a": 1}),
    # $v:1
    ({"_id": 11, "a": 2}, {"$v": 1, "$set": {"a": 3, "b": 2}}, {"_id": 11, "a": 3, "b": 2}),
    ({"_id": 12, "a": {"b": [1, 2], "c": [1, 2]}}, {"$v": 1, "$set": {"a.b": [1], "a.c": [1]}},
     {"_id": 12, "a": {"b": [1], "c": [1]}}),
    ({"_id": 13, "a": [2]}, {"$v": 1, "$set": {"a.0": 3}}, {"_id": 13, "a": [3]}),
    ({"_id": 14, "a": "foo"}, {"$v": 1, "$set": {"c": [18]}}, {"_id": 14, "a": "foo", "c": [18]}),
    ({"_id": ObjectId("627a1f83b95fae5fca006bac"), "a": 1, "b": 1, "c": 1}, {"$v": 1, "$set": {"b": 3}, "$unset": {"c": True}},
     {"_id": ObjectId("627a1f83b95fae5fca006bac"), "a": 1, "b": 3}),
    ({"_id": 16, "p": {"q": 1}}, {"$v": 1, "$set": {"p.r.s": 1, "arr.2": "x"}, "$unset": {"p.q": True}}, None),
    # replacement (MongoShake)
    ({"_id": ObjectId("627a2492b95fae5fca006bad"), "a": 1}, {"_id": ObjectId("627a2492b95fae5fca006bad"), "b": 2},
     {"_id": ObjectId("627a2492b95fae5fca006bad"), "b": 2}),
]


def son(v):
    if isinstance(v, dict):
        return SON((k, son(x)) for k, x in v.items())
    if isinstance(v, list):
        return [son(x) for x in v]
    return v


def excerpt_oplog():
    out, sec, inc = [], 1652170000, 0
    for pre, o, _ in EXCERPTS:
        inc += 1
        out.append(SON([("op", "i"), ("ns", "excerpts.c"), ("o", son(pre)), ("ts", Timestamp(sec, inc)),
                        ("t", Int64(1)), ("v", Int64(2))]))
    for pre, o, _ in EXCERPTS:
        inc += 1
        out.append(SON([("op", "u"), ("ns", "excerpts.c"), ("o", son(o)), ("o2", SON([("_id", pre["_id"])])),
                        ("ts", Timestamp(sec, inc)), ("t", Int64(1)), ("v", Int64(2))]))
    return b"".join(bson.encode(e, codec_options=OPTS) for e in out)


def enc(d):
    return bson.encode(d, codec_options=OPTS)


def mj(journal, *args):
    p = _retry_exec(lambda: subprocess.run([os.path.join(BIN, "mmm-journal"), "-j", journal] + list(args),
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60))
    ck.eq(p.returncode, 0, "mmm-journal %s: %s" % (" ".join(args[:1]), p.stderr.decode()[-300:]))
    return p


def main():
    # the applier against the documented results first
    for pre, o, want in EXCERPTS:
        if want is not None:
            ck.eq(enc(apply_update(son(pre), son(o))), enc(son(want)), "test applier on excerpt %r" % (pre["_id"],))

    with Mesh(1) as m:
        try:
            tmp = m.tmp
            srcs = {"ts": str(uuid.uuid4()), "ex": str(uuid.uuid4()), "vec": str(uuid.uuid4()), "ddl": str(uuid.uuid4())}
            mj(m.journal, "import-bson", TS_OPLOG, "--source", srcs["ts"], "--name", "timeseries")
            exfile = os.path.join(tmp, "excerpts.bson")
            with open(exfile, "wb") as f:
                f.write(excerpt_oplog())
            mj(m.journal, "import-bson", exfile, "--source", srcs["ex"], "--name", "excerpts")
            vec = b""
            for fn in ("vectored_insert", "linked_vectored_inserts"):
                with open(os.path.join(OPLOG, "mongorestore_testdata_oplogs_bson_%s.bson" % fn), "rb") as f:
                    vec += f.read()
            vfile = os.path.join(tmp, "vectored.bson")
            with open(vfile, "wb") as f:
                f.write(vec)
            mj(m.journal, "import-bson", vfile, "--source", srcs["vec"], "--name", "vectored")
            # the DDL samples, in an order that makes sense together, re-stamped
            ddl_entries = []
            for fn in ("create_index", "commit_index", "collMod", "collMod_with_hidden", "drop_index", "drop_collection", "drop_db"):
                with open(os.path.join(OPLOG, "mongorestore_testdata_oplogs_bson_%s.bson" % fn), "rb") as f:
                    ddl_entries += bson.decode_all(f.read(), OPTS)
            for k, e in enumerate(ddl_entries):
                e["ts"] = Timestamp(1616670000, k + 1)
            dfile = os.path.join(tmp, "ddl.bson")
            with open(dfile, "wb") as f:
                f.write(b"".join(enc(e) for e in ddl_entries))
            mj(m.journal, "import-bson", dfile, "--source", srcs["ddl"], "--name", "ddl")
            # an entry apply cannot translate stops its link, naming source, ts and reason
            bad = [SON([("op", "i"), ("ns", "bad.c"), ("o", SON([("_id", 1)])), ("ts", Timestamp(1600000000, 1)), ("t", Int64(1)), ("v", Int64(2))]),
                   SON([("op", "c"), ("ns", "bad.$cmd"), ("o", SON([("frobnicate", "c")])), ("ts", Timestamp(1600000000, 2)), ("t", Int64(1)), ("v", Int64(2))]),
                   SON([("op", "i"), ("ns", "bad.c"), ("o", SON([("_id", 2)])), ("ts", Timestamp(1600000000, 3)), ("t", Int64(1)), ("v", Int64(2))])]
            bfile = os.path.join(tmp, "bad.bson")
            with open(bfile, "wb") as f:
                f.write(b"".join(enc(e) for e in bad))
            srcs_bad = str(uuid.uuid4())
            mj(m.journal, "import-bson", bfile, "--source", srcs_bad, "--name", "bad")
            # the transaction chains of mongo-tools' (synthetic) test data: one source each
            with open(TXN_JSON) as f:
                cases = json_util.loads(f.read(), json_options=json_util.JSONOptions(
                    document_class=SON, uuid_representation=UuidRepresentation.UNSPECIFIED))
            txn_cases = []
            for k, (name, case) in enumerate(cases.items()):
                if "postimage" not in case:
                    continue        # (multiOpType: the real 8.0 samples above cover it)
                u = str(uuid.uuid4())
                tfile = os.path.join(tmp, "txn%d.bson" % k)
                with open(tfile, "wb") as f:
                    f.write(b"".join(enc(e) for e in case["ops"]))
                mj(m.journal, "import-bson", tfile, "--source", u, "--name", "txn%d" % k)
                srcs["txn%d" % k] = u
                txn_cases.append(("txn%d" % k, name, case))

            A = m.c["a"]
            base = bson.decode_all(open(TS_BASE, "rb").read(), OPTS)
            buckets = A.get_database("tsdst", codec_options=OPTS).buckets
            buckets.insert_many(base)
            ck.eq(buckets.count_documents({}), 10, "base buckets loaded")

            def link(src, src_ns, dst_ns):
                A.mmm.links.insert_one(SON([("_id", "%s/%s=>%s" % (src, src_ns, dst_ns)), ("src_name", src),
                                            ("src_id", uuid_bin(srcs[src])), ("src_ns", src_ns), ("dst_ns", dst_ns),
                                            ("ops", "iudc"), ("forward", False)]))
            link("ts", "timeseries_test.system.buckets.foo_ts", "tsdst.buckets")
            link("ex", "excerpts.*", "excerpts.*")
            link("vec", "mongodump_test_db.*", "vec.*")
            link("ddl", "test.*", "ddltest.*")
            srcs["bad"] = srcs_bad
            link("bad", "bad.*", "bad.*")
            del srcs["bad"]
            for src, name, case in txn_cases:
                link(src, case["ns"], case["ns"])
            # expected: the independent applier over the journal's entries
            want = {d["_id"]: d for d in base}
            upd = bson.decode_all(open(TS_OPLOG, "rb").read(), OPTS)
            for e in upd:
                want[e["o2"]["_id"]] = apply_update(want[e["o2"]["_id"]], e["o"])
            m.apply()
            final = {"ts": upd[-1]["ts"], "ex": Timestamp(1652170000, 2 * len(EXCERPTS)), "vec": Timestamp(1719861048, 3),
                     "ddl": ddl_entries[-1]["ts"]}
            for src, name, case in txn_cases:
                final[src] = case["ops"][-1]["ts"]

            def done():
                st = m.apply_status()
                got = {}
                for k, v in st.items():
                    for s, u in srcs.items():
                        if k.endswith(u):
                            t = v["applied_ts"]["$timestamp"]
                            got[s] = (Timestamp(t["t"], t["i"]), v["state"], v["last_error"])
                return got
            ck.check(wait_for(lambda: all(s in done() and done()[s][0] >= final[s] for s in srcs), 60, 0.2),
                     "every source applied to its end: %r" % (done(),))
            for s, (t, state, err) in done().items():
                ck.eq((state, err), ("running", ""), "link of source %s" % s)
            key = [k for k in m.apply_status() if k.endswith(srcs_bad)]
            ck.check(wait_for(lambda: key and m.apply_status()[key[0]]["state"] == "stopped", 10, 0.1), "link of 'bad' stopped")
            err = m.apply_status()[key[0]]["last_error"] if key else ""
            ck.eq(err, "apply of 'bad' into 'a' stopped at 1600000000:2 (bad.$cmd): unsupported command 'frobnicate' on 'bad.$cmd'",
                  "the stop names source, ts and reason")
            ck.eq([d["_id"] for d in A.bad.c.find({})], [1], "entries before the bad one applied, none after")

            got = list(buckets.find({}))
            ck.eq(len(got), 10, "buckets after the 872 updates")
            same = 0
            for d in got:
                w = want[d["_id"]]
                if ck.check(enc(d) == enc(w), "bucket %s equals the independent applier's post-image" % d["_id"]):
                    same += 1
            print("time-series: %d updates, %d of %d buckets byte-identical" % (len(upd), same, len(got)))

            exc = A.get_database("excerpts", codec_options=OPTS).c
            for pre, o, w in EXCERPTS:
                d = exc.find_one({"_id": pre["_id"]})
                mine = apply_update(son(pre), son(o))
                ck.eq(enc(d) if d else None, enc(mine), "excerpt %r (%s) through apply" % (pre["_id"], "$v:%s" % o.get("$v", "r")))
            ck.eq(A.list_database_names().count("ddltest"), 0, "DDL samples: ddltest dropped at the end")
            for src, name, case in txn_cases:
                db, coll = case["ns"].split(".", 1)
                got = list(A.get_database(db, codec_options=OPTS)[coll].find({}).sort("_id", 1))
                want = sorted(case["postimage"], key=lambda d: d["_id"])
                ck.eq([enc(d) for d in got], [enc(d) for d in want], "transaction sample '%s'" % name)
            vdocs = list(A.vec.coll1.find({}).sort("_id", 1))
            ck.eq([(d["_id"], d["a"]) for d in vdocs], [(i * 100, i) for i in range(1, 8)], "vectored inserts")
            if ck.failed:
                m.dump_logs()
        except Exception:
            m.dump_logs()
            raise


main()
sys.exit(ck.done())
