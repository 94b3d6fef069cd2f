#!/usr/bin/python3
"""Issue 5, acceptance 5: a permanent error — a unique-index violation that
exists on the destination only — stops just that link (source a into b)
with one line naming the source, ts, namespace and the server's error, also
in the link's status; the other links (c into b, a into c) go on.  After
the offending document is removed on b, a restarted mmm-apply continues
from the right place: b ends equal to a, nothing applied twice.  A
step-down of the destination (mongosimStepDown) is retried, not fatal."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from applylib import Mesh  # noqa: E402
from simlib import Checker, wait_for  # noqa: E402

ck = Checker("apply-error")


def status_of(m, dst, src):
    for k, v in m.apply_status().items():
        if k == "apply/%s/%s" % (m.ids[dst], m.ids[src]):
            return v
    return {}


def main():
    with Mesh(3) as m:
        try:
            A, B, C = m.c["a"], m.c["b"], m.c["c"]
            B.test.c.create_index([("u", 1)], name="u_1", unique=True)
            B.test.c.insert_one({"_id": "local", "u": 5})
            m.capture()
            m.link("b", "a", "test.c")
            m.link("b", "c", "test.d")
            m.link("c", "a", "test.c")
            m.apply()
            A.test.c.insert_many([{"_id": i, "u": 100 + i} for i in range(10)])
            A.test.c.update_one({"_id": 3}, {"$set": {"x": 1}})
            dup = A.test.c.insert_one({"_id": "dup", "u": 5})  # noqa: F841
            dup_ts = m.last_ts("a")
            A.test.c.insert_many([{"_id": i, "u": 100 + i} for i in range(10, 20)])
            A.test.c.update_many({}, {"$inc": {"n": 1}})
            A.test.c.delete_one({"_id": 0})
            ok = wait_for(lambda: status_of(m, "b", "a").get("state") == "stopped", 30, 0.1)
            ck.check(ok, "link a -> b stopped")
            st = status_of(m, "b", "a")
            err = st.get("last_error", "")
            print("status: %s" % err)
            want_ts = "%d:%d" % (dup_ts.time, dup_ts.inc)
            for part in ("'a'", "'b'", want_ts, "test.c", "E11000", "u_1"):
                ck.check(part in err, "status names %s: %s" % (part, err))
            lines = [ln for ln in m.app.log().splitlines() if "stopped at" in ln]
            ck.eq(len(lines), 1, "one log line for the error")
            ck.check(lines and want_ts in lines[0] and "E11000" in lines[0], "log line: %r" % lines)
            # everything before the bad entry is on b (workers that commit other
            # documents may have gone a little further: their checkpoints say so)
            on_b = set(d["_id"] for d in B.test.c.find({"_id": {"$ne": "local"}}))
            ck.check(set(range(1, 10)) <= on_b and "dup" not in on_b, "a's writes before the bad entry applied on b: %r" % on_b)
            ck.eq(B.test.c.find_one({"_id": 3}).get("x"), 1, "update before the bad entry applied")
            # the other links go on
            C.test.d.insert_many([{"_id": i} for i in range(5)])
            ck.check(wait_for(lambda: B.test.d.count_documents({}) == 5, 20, 0.1), "c -> b goes on")
            ck.check(wait_for(lambda: m.dbhash("a", "test", ["c"]) == m.dbhash("c", "test", ["c"]), 20, 0.1),
                     "a -> c goes on past the entry that failed on b")
            ck.eq(status_of(m, "b", "c").get("state"), "running", "status of c -> b")
            # fix and restart
            B.test.c.delete_one({"_id": "local"})
            rc = m.app.term()
            ck.eq(rc, 1, "apply exits 1 after a link stopped on an error")
            m.apply()
            ck.check(wait_for(lambda: m.dbhash("a", "test", ["c"]) == m.dbhash("b", "test", ["c"]), 30, 0.1),
                     "after the fix, b equals a")
            ck.check(wait_for(lambda: status_of(m, "b", "a").get("state") == "running"
                              and status_of(m, "b", "a").get("last_error") == "", 10, 0.1), "link a -> b running again")
            # nothing applied twice: b received each of a's inserts once
            ins = {}
            for e in B.local["oplog.rs"].find({"op": "c", "o.applyOps": {"$exists": True}}):
                for o in e["o"]["applyOps"]:
                    if o["ns"] == "test.c" and o["op"] == "i":
                        ins[o["o"]["_id"]] = ins.get(o["o"]["_id"], 0) + 1
            ck.check(len(ins) >= 20 and "dup" in ins, "inserts of a received by b: %r" % ins)
            ck.check(all(v == 1 for v in ins.values()), "each insert of a applied once on b: %r" % ins)
            # transient errors: b steps down for a second while a writes
            B.admin.command("mongosimStepDown", 1)
            A.test.c.insert_many([{"_id": i, "u": 100 + i} for i in range(100, 150)])
            A.test.c.update_many({"_id": {"$gte": 100}}, {"$inc": {"n": 1}})
            def same():
                try:
                    return m.dbhash("a", "test", ["c"]) == m.dbhash("b", "test", ["c"])
                except Exception:  # noqa: BLE001  (b is stepping down)
                    return False
            ck.check(wait_for(same, 30, 0.1), "after b's step-down, b equals a")
            ck.check(wait_for(lambda: status_of(m, "b", "a").get("state") == "running"
                              and status_of(m, "b", "a").get("last_error") == "", 10, 0.1),
                     "a step-down is retried, not fatal: %r" % status_of(m, "b", "a"))
            ck.eq(m.app.term(), 0, "apply exits 0 on SIGTERM")
            if ck.failed:
                m.dump_logs()
        except Exception:
            m.dump_logs()
            raise


main()
sys.exit(ck.done())
