"""test_oplog_replay.py — the oplog is a faithful log: six clients mix
transactions (committed and aborted, with updates, deletes, inserts, upserts
and reads) with plain writes, unique-index violations and DDL on another
collection, concurrently, with fixed seeds; replaying local.oplog.rs from
the start (inserts, deletes, replacements, $v:2 diffs through the
independent applier of test_property.py, applyOps) rebuilds the collection
byte for byte."""
import os
import random
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simlib import Sim, Checker  # noqa: E402
from test_property import apply_doc  # noqa: E402

import bson  # noqa: E402
from bson.codec_options import CodecOptions  # noqa: E402
from pymongo import errors  # noqa: E402

ck = Checker("oplog_replay")
DICT = CodecOptions(document_class=dict)


def run(seed):
    with Sim(["--noop-interval", "1"]) as s:
        c = s.client()
        c.ch.a.create_index("u", unique=True)
        c.ch.a.insert_many([{"_id": i, "u": i, "v": 0, "arr": [i]} for i in range(50)])
        crashed = []

        def worker(k):
            rnd = random.Random(seed * 100 + k)
            cl = s.client()
            col = cl.ch.a
            for it in range(120):
                try:
                    if rnd.random() < 0.5:
                        with cl.start_session() as ses:
                            ses.start_transaction()
                            for _ in range(rnd.randint(1, 4)):
                                r, i = rnd.random(), rnd.randrange(60)
                                if r < 0.3:
                                    col.update_one({"_id": i}, {"$inc": {"v": 1}, "$push": {"arr": it}}, session=ses)
                                elif r < 0.45:
                                    col.delete_one({"_id": i}, session=ses)
                                elif r < 0.6:
                                    col.insert_one({"_id": i, "u": rnd.randrange(80)}, session=ses)
                                elif r < 0.8:
                                    list(col.find({"v": {"$gte": 0}}, session=ses))
                                else:
                                    col.replace_one({"_id": i}, {"u": rnd.randrange(80), "z": 1}, upsert=True, session=ses)
                            if rnd.random() < 0.7:
                                ses.commit_transaction()
                            else:
                                ses.abort_transaction()
                    else:
                        r, i = rnd.random(), rnd.randrange(60)
                        if r < 0.3:
                            col.update_one({"_id": i}, {"$set": {"w": it}, "$pop": {"arr": 1}})
                        elif r < 0.5:
                            col.delete_one({"_id": i})
                        elif r < 0.7:
                            col.insert_one({"_id": i, "u": rnd.randrange(80)})
                        elif r < 0.8:
                            cl.ch.command("dbHash")
                        elif r < 0.85:
                            cl.ch.b.drop() if rnd.random() < 0.5 else cl.ch.b.insert_one({})
                        else:
                            list(col.find().sort("v", -1).limit(5))
                except (errors.OperationFailure, errors.WriteError, errors.BulkWriteError):
                    pass   # conflicts and duplicate keys are part of the mix
                except Exception as e:  # noqa: BLE001
                    crashed.append(repr(e))
                    return
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ck.eq(crashed, [], "seed %d: clients saw only server errors" % seed)
        state = {}

        def apply(e):
            if e["op"] == "c" and "applyOps" in e["o"]:
                for op in e["o"]["applyOps"]:
                    apply(op)
                return
            if e.get("ns") != "ch.a":
                return
            if e["op"] == "i":
                state[e["o"]["_id"]] = e["o"]
            elif e["op"] == "d":
                state.pop(e["o"]["_id"], None)
            elif e["op"] == "u":
                _id = e["o2"]["_id"]
                state[_id] = apply_doc(state[_id], e["o"]["diff"]) if e["o"].get("$v") == 2 else e["o"]
        n = 0
        for e in c.local.get_collection("oplog.rs", codec_options=DICT).find({}):
            apply(e)
            n += 1
        live = {d["_id"]: d for d in c.ch.get_collection("a", codec_options=DICT).find()}
        ck.eq(sorted(live, key=repr), sorted(state, key=repr), "seed %d: same documents after replaying %d entries" % (seed, n))
        bad = [k for k in live if k in state and bson.BSON.encode(live[k]) != bson.BSON.encode(state[k])]
        ck.eq(bad, [], "seed %d: replayed documents equal byte for byte" % seed)
        ck.eq(s.stop(), 0, "seed %d: clean exit" % seed)


def main():
    for seed in (1, 2):
        try:
            run(seed)
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            ck.check(False, "seed %d raised %r" % (seed, e))
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
