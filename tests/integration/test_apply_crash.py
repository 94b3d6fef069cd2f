#!/usr/bin/python3
"""Issue 5, acceptance 4: mmm-apply killed with SIGKILL at random moments
(>= 20 times, fixed seed) and crashed by the fault points before and after
its commit (MMM_FAULT=apply_txn@N:crash, apply_committed@N:crash), while a
workload of $inc on counters, inserts, deletes and small transactions runs
on the source: the destination ends exactly equal to the source (dbHash),
and no batch was applied twice — the checkpoint ts that apply's
transactions write, read back from the destination's oplog, only ever
grows."""
import os
import random
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from applylib import Mesh  # noqa: E402
from simlib import Checker, wait_for  # noqa: E402

ck = Checker("apply-crash")
KILLS = int(os.environ.get("MMM_TEST_KILLS", "24"))
ITER = int(os.environ.get("MMM_TEST_CRASH_ITER", "30000"))   # a cap: it runs until the crashes are done
FAULTS = ["apply_txn@1:crash", "apply_txn@3:crash", "apply_committed@1:crash", "apply_committed@2:crash",
          "apply_committed@4:crash", "apply_txn@2:crash"]


def writer(m, done, errors):
    rnd = random.Random(7)
    t = m.c["a"].test
    try:
        t.counters.insert_many([{"_id": k, "c": 0} for k in range(20)])
        live = []
        for i in range(ITER):
            t.counters.update_one({"_id": rnd.randrange(20)}, {"$inc": {"c": 1}})
            t.items.insert_one({"_id": i, "v": rnd.random()})
            live.append(i)
            if i % 2 == 0 and len(live) > 10:
                t.items.delete_one({"_id": live.pop(rnd.randrange(len(live) - 5))})
            if i % 50 == 0:
                with m.c["a"].start_session() as s:
                    with s.start_transaction():
                        t.counters.update_one({"_id": 0}, {"$inc": {"c": 10}}, session=s)
                        t.items.insert_one({"_id": "t%d" % i}, session=s)
            if done.is_set():
                break
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))
    done.set()


def marker_ts_sequence(m):
    """The checkpoint ts of each of apply's transactions, per marker (worker), in the destination's oplog order."""
    seq = {}
    for e in m.c["b"].local["oplog.rs"].find({"op": "c", "o.applyOps": {"$exists": True}}):
        for o in e["o"]["applyOps"]:
            if o["ns"] != "mmm.checkpoints":
                continue
            if o["op"] == "i":
                seq.setdefault(o["o"]["_id"], []).append(o["o"]["ts"])
            elif o["op"] == "u" and "diff" in o["o"]:
                ts = o["o"]["diff"].get("u", {}).get("ts") or o["o"]["diff"].get("i", {}).get("ts")
                if ts is not None:
                    seq.setdefault(o["o2"]["_id"], []).append(ts)
            elif o["op"] == "u" and "ts" in o["o"]:
                seq.setdefault(o["o2"]["_id"], []).append(o["o"]["ts"])
    return seq


def main():
    rnd = random.Random(1234)
    with Mesh(2) as m:
        try:
            m.capture(servers=["a"])
            m.link("b", "a", "test.*")
            done, errors = threading.Event(), []
            w = threading.Thread(target=writer, args=(m, done, errors))
            w.start()
            kills = crashes = 0
            faults = list(FAULTS)
            while kills < KILLS or faults:
                if faults and (kills >= KILLS or rnd.random() < 0.25):
                    f = faults.pop(0)
                    p = m.apply(servers=["b"], env={"MMM_FAULT": f})
                    rc = p.wait(20)
                    if rc is None:
                        p.kill()
                    ck.eq(rc, 137, "fault %s crashed apply" % f)
                    crashes += 1
                    continue
                p = m.apply(servers=["b"])
                wait_for(lambda: not p.alive(), rnd.uniform(0.05, 0.6), 0.01)   # a random moment
                ck.check(p.alive(), "apply running before kill %d" % kills)
                p.kill()
                kills += 1
            done.set()
            w.join()
            ck.eq(errors, [], "workload")
            print("%d kills, %d fault crashes" % (kills, crashes))
            m.apply(servers=["b"])
            conv = m.wait_converged("test", 60, colls=["counters", "items"])
            ck.check(conv, "destination equals source after the crashes")
            if not conv:
                for cn in ("counters", "items"):
                    a, b = m.docs("a", "test", cn), m.docs("b", "test", cn)
                    print("%s: a %d docs, b %d docs" % (cn, len(a), len(b)))
            tot_a = sum(d["c"] for d in m.c["a"].test.counters.find())
            tot_b = sum(d["c"] for d in m.c["b"].test.counters.find())
            ck.eq(tot_b, tot_a, "sum of counters")
            seqs = marker_ts_sequence(m)
            ck.check(sum(len(v) for v in seqs.values()) > KILLS, "apply committed %d transactions" % sum(len(v) for v in seqs.values()))
            back = [(k, x, y) for k, seq in seqs.items() for x, y in zip(seq, seq[1:]) if y <= x]
            ck.eq(back, [], "checkpoints only grow (no batch applied twice)")
            ck.eq(m.app.term(), 0, "apply exits 0 on SIGTERM")
            if ck.failed:
                m.dump_logs()
        except Exception:
            m.dump_logs()
            raise


main()
sys.exit(ck.done())
