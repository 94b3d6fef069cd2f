#!/usr/bin/python3
"""bench_conflicts.py — issue 7, acceptance 1 at length: the randomised
conflict runs of test_conflicts_random.py, longer and at full speed.

RUNS runs (default 10) of SECS seconds (default 60) of writing, seeds 1..RUNS
(odd seeds two masters, even seeds three), each with the same workload as
the test (and the same check against the fold of the writes in stamp order): 8 writer threads on test.docs/test.other of every master, clocks
offset by up to +-500 ms, daemons SIGSTOPped at random moments; then the
links drain and `mmm verify` must find every master identical.  Per run it
prints whether the masters converged, the operations made, the conflicts
logged, the pauses and the drain time (writers stopped -> verify clean);
then one summary line.  A benchmark: timings are figures, not verdicts, but
a run that does not converge is reported as NOT CONVERGED and the script
exits 1 (a correctness failure, not a slow run).

Environment: MMM_BIN (set by run.sh), MMM_BENCH_CONFLICT_RUNS (10),
MMM_BENCH_CONFLICT_SECS (60), MMM_BENCH_CONFLICT_RATE (operations per
second per writer thread, default 25 as in the test: 200/s in all, which
apply keeps up with; 0 = as fast as the threads go, ~1500/s here, which
builds a backlog that takes minutes to drain),
MMM_BENCH_CONFLICT_DRAIN (seconds a run may take to drain, 300),
MMM_BENCH_CONFLICT_SEED (first seed, 1).
"""
import os
import sys
import time

ROOT = os.environ.get("MMM_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from conflictlib import APPLY, random_run  # noqa: E402

RUNS = int(os.environ.get("MMM_BENCH_CONFLICT_RUNS") or 10)
SECS = float(os.environ.get("MMM_BENCH_CONFLICT_SECS") or 60)
RATE = float(os.environ.get("MMM_BENCH_CONFLICT_RATE") or 25) or None
DRAIN = float(os.environ.get("MMM_BENCH_CONFLICT_DRAIN") or 300)
SEED = int(os.environ.get("MMM_BENCH_CONFLICT_SEED") or 1)


def main():
    if not os.path.exists(APPLY):
        print("skipped: mmm-apply not built")
        return 0
    t0 = time.monotonic()
    print("conflicts: %d runs of %.0f s, 8 writer threads%s, clocks +-500 ms, daemons paused at random"
          % (RUNS, SECS, " at %.0f ops/s each" % RATE if RATE else ""), flush=True)
    done, drains, ops, logged, bad = 0, [], 0, 0, []
    for i in range(RUNS):
        seed = SEED + i
        n = 2 if seed % 2 else 3
        r = random_run(seed, n, SECS, conflicts=True, rate=RATE, drain_timeout=DRAIN)
        done += 1 if r["ok"] else 0
        if r["ok"]:
            drains.append(r["drain_s"])
        else:
            bad.append(seed)
        ops += r["ops"]
        logged += r["conflicts"] or 0
        state = "converged" if r["ok"] else "DIFFERENT" if r.get("drained") else "NOT DRAINED"
        print("run %2d  seed %-3d %d masters  %-11s %7d ops (%5.0f/s)  %6s conflicts logged  %3d pauses  drain %6.1f s%s"
              % (i + 1, seed, n, state, r["ops"], r["ops"] / SECS,
                 "?" if r["conflicts"] is None else r["conflicts"], r["pauses"], r["drain_s"] or 0,
                 "" if not r["bad_records"] else "  %d records out of order or twice" % len(r["bad_records"])),
              flush=True)
    drains.sort()
    print("conflicts: %d/%d runs converged%s; %d ops, %d conflicts logged; drain median %.1f s, max %.1f s; %.0f s in all"
          % (done, RUNS, " (seeds not converged: %s)" % bad if bad else "", ops, logged,
             drains[len(drains) // 2] if drains else 0, drains[-1] if drains else 0, time.monotonic() - t0),
          flush=True)
    return 0 if not bad else 1


sys.exit(main())
