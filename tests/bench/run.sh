#!/bin/sh
# make bench: runs every benchmark program (build/bench/bench_*) and script
# (tests/bench/bench_*.sh, tests/bench/bench_*.py).  Benchmarks print figures
# (ratios against a reference measured in the same run); they never fail on time.
BUILD=${MMM_BUILD:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export MMM_ROOT="$ROOT" MMM_BIN="$ROOT/$BUILD/bin" MMM_BENCH_BIN="$ROOT/$BUILD/bench" MMM_FIXTURES="$ROOT/fixtures"
rc=0
for b in "$ROOT/$BUILD"/bench/bench_* "$ROOT"/tests/bench/bench_*.sh "$ROOT"/tests/bench/bench_*.py; do
	[ -f "$b" ] || continue
	case "$(basename "$b")" in *"${MMM_BENCH:-}"*) ;; *) continue;; esac
	echo "== $(basename "$b")"
	case "$b" in
	*.sh) sh "$b" || rc=1 ;;
	*.py) /usr/bin/python3 "$b" || rc=1 ;;
	*) "$b" || rc=1 ;;
	esac
done
exit $rc
