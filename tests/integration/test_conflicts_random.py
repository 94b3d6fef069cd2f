#!/usr/bin/python3
"""Issue 7, acceptance 1: randomised conflicts, fixed seeds.

Each run starts a full mesh (test.*) of two or three mongosims (odd seeds
two, even seeds three), each with its clock shifted by a seeded offset in
+-500 ms (mongosimClock, set once before anything is captured), one
mmm-capture per master and one mmm-apply.  It inserts the 200 documents of
test.docs (each on one master), then 8 writer threads (seeded) insert,
replace, update ($set/$unset/$inc/$push/$pop, nested fields), delete and
now and then run a small transaction, on any document of test.docs (half of
the operations on 20 hot ids) or test.other, each operation on a random
master; meanwhile a pauser SIGSTOPs a random daemon for 100-800 ms every
200-1000 ms.  After SECS seconds the writers stop, every daemon is
SIGCONTed, and the links drain: every master's newest test.* write journaled
and applied by every link, nothing moving in test.* for a while, and then
`mmm verify` exits 0.  Every run must get there (within DRAIN seconds; a run
whose links caught up and stayed still for 10 s while verify still finds
differences fails then),
and every document of every master must then be the fold of all the writes
made to it (read from the masters' oplogs: top-level entries and the ops of
transactions without apply's marker) in stamp order, computed here in
Python (conflictlib.check_fold: $v:2 diffs applied as
document_diff_applier.cpp does, a replacement a full image), byte for byte.
A run that fails prints its seed, its offsets, the documents that differ on
each master (or from the fold, with their last writes), the links and the
daemons' logs.

Also checked: the conflict log's records each order their late write
before their newer one and name each late write once; `mmm status`
counts them ("conflicts_logged"); the runs log conflicts at all (the
workload makes them).  First, a control run of the harness itself: with
`apply: {conflicts: false}` and no document written on two masters, the
masters converge.

Environment: MMM_CONFLICT_RUNS (default 20), MMM_CONFLICT_SECS (5),
MMM_CONFLICT_SEED (first seed, 1), MMM_CONFLICT_RATE (operations per
second per thread, default 25; 0 = as fast as they go),
MMM_CONFLICT_DRAIN (seconds a run may take to drain, 30),
MMM_CONFLICT_BUDGET (seconds the file should take, 300: past it, a note says
so; every run still runs, as timing never fails a test).
"""
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conflictlib import random_run  # noqa: E402
from simlib import Checker  # noqa: E402

ck = Checker("conflicts-random")
RUNS = int(os.environ.get("MMM_CONFLICT_RUNS", "20"))
SECS = float(os.environ.get("MMM_CONFLICT_SECS", "5"))
SEED = int(os.environ.get("MMM_CONFLICT_SEED", "1"))
RATE = float(os.environ.get("MMM_CONFLICT_RATE", "25")) or None
DRAIN = float(os.environ.get("MMM_CONFLICT_DRAIN", "30"))
BUDGET = float(os.environ.get("MMM_CONFLICT_BUDGET", "300"))


def line(r, label):
    return ("%s: seed %d, %d masters, offsets %s: %s, drain %.1f s, %d ops, %d pauses, %s conflicts logged, "
            "%s documents checked against the fold, %.1f s"
            % (label, r["seed"], r["n"], r["offsets"], "converged" if r["ok"] else "NOT CONVERGED",
               r["drain_s"] or 0, r["ops"], r["pauses"],
               "?" if r["conflicts"] is None else r["conflicts"], r.get("fold_docs", "no"), r["total_s"]))


def main():
    t0 = time.monotonic()
    # the harness's control: no same-document concurrency, conflict handling off
    r = random_run(1000 + SEED, 2, min(SECS, 3.0), conflicts=False, owned=True, rate=RATE, drain_timeout=DRAIN)
    print(line(r, "control (apply.conflicts false, each thread owns its documents on one master)"), flush=True)
    ck.check(r["ok"], "control run: the harness's own workload without conflicts did not converge (seed %d)" % r["seed"])
    total, failed, missing, over = 0, [], False, False
    for i in range(RUNS):
        seed = SEED + i
        n = 2 if seed % 2 else 3
        if time.monotonic() - t0 > BUDGET and not over:
            # (timing never fails a test: a slow machine only takes longer)
            print("NOTE: past the file's %d s budget at seed %d; running the rest anyway" % (BUDGET, seed), flush=True)
            over = True
        try:
            r = random_run(seed, n, SECS, conflicts=True, rate=RATE, drain_timeout=DRAIN)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            ck.check(False, "seed %d, %d masters: the run failed: %r" % (seed, n, e))
            failed.append(seed)
            continue
        print(line(r, "run %d" % (i + 1)), flush=True)
        ck.check(r["pauses"] > 0, "seed %d: daemons paused" % seed)
        if r.get("fold_error"):
            print("  fold not checked: %s" % r["fold_error"])
        if not r["ok"]:
            why = "; ".join(r["errors"]) or (r["why"].splitlines() or ["?"])[0]
            if r.get("fold_bad"):
                why = "%d of %d documents identical everywhere but not the fold of their writes" % (
                    r["fold_bad"], r["fold_docs"])
            ck.check(False, "seed %d, %d masters, offsets %s: not converged to the fold of the writes (%s)"
                     % (seed, n, r["offsets"], why))
            failed.append(seed)
        else:
            ck.check(True)
        if r["conflicts"] is None:
            missing = True
            print("  mmm-journal conflicts: %r" % (r.get("conflicts_err"),))
            continue
        total += r["conflicts"]
        ck.eq(r["bad_records"][:3], [], "seed %d: records whose late stamp is not before their newer one, or twice"
              % seed)
        if r.get("conflicts_logged") is not None:
            ck.eq(r["conflicts_logged"], r["conflicts"], "seed %d: mmm status conflicts_logged" % seed)
    ck.check(not missing, "mmm-journal conflicts --json works")
    if not missing:
        ck.check(total > 0, "the runs logged conflicts (%d)" % total)
    print("%d runs of %.0f s: %d converged%s; %d conflicts logged; %.0f s in all" % (
        RUNS, SECS, RUNS - len(failed), (", seeds not converged: %s" % failed) if failed else "", total,
        time.monotonic() - t0), flush=True)
    return ck.done()


sys.exit(main())
