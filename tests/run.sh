#!/bin/sh
# Runs every unit binary and integration script and prints the grand total as
# "N passed, N failed" (exit 1 on any failure).  Each test prints its own
# "N passed, N failed" last; a test that exits non-zero without counting a
# failure, times out, or prints no total counts as one failure.
#
#   MMM_BUILD   build directory (default build)
#   MMM_TESTS   only run tests whose name contains this string
#   MMM_TEST_TIMEOUT  seconds per test (default 600)
BUILD=${MMM_BUILD:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export MMM_ROOT="$ROOT"
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD";; esac
export MMM_BIN="$BUILD/bin"
export MMM_FIXTURES="$ROOT/fixtures"
# libmongoc keeps counters in /dev/shm/mongoc-PID; a killed process leaves the
# file behind, and a later process with the same pid then warns on stderr.
export MONGOC_DISABLE_SHM=1
PY=/usr/bin/python3
TIMEOUT=${MMM_TEST_TIMEOUT:-600}
LOGDIR="$BUILD/test-logs"
mkdir -p "$LOGDIR"
total_p=0; total_f=0

run_one() {   # name, command...
	name=$1; shift
	case "$name" in *"${MMM_TESTS:-}"*) ;; *) return;; esac
	log="$LOGDIR/$name.log"
	start=$(date +%s)
	timeout -k 10 "$TIMEOUT" "$@" >"$log" 2>&1 </dev/null
	rc=$?
	line=$(grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
	p=$(echo "$line" | sed -nE 's/^([A-Za-z]+: )?([0-9]+) passed, ([0-9]+) failed.*/\2/p')
	f=$(echo "$line" | sed -nE 's/^([A-Za-z]+: )?([0-9]+) passed, ([0-9]+) failed.*/\3/p')
	[ -n "$p" ] || p=0
	[ -n "$f" ] || f=0
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
	[ -z "$line" ] && [ "$f" -eq 0 ] && f=1
	total_p=$((total_p + p)); total_f=$((total_f + f))
	secs=$(( $(date +%s) - start ))
	if [ "$f" -eq 0 ]; then
		printf '  ok    %-34s %5d passed  %4ds\n' "$name" "$p" "$secs"
	else
		printf '  FAIL  %-34s %5d passed, %d failed (rc %d, %ds) — %s\n' "$name" "$p" "$f" "$rc" "$secs" "$log"
		grep -E 'FAIL|rror' "$log" | head -n 15 | sed 's/^/        /'
	fi
}

for t in "$BUILD"/tests/test_*; do
	[ -x "$t" ] || continue
	run_one "$(basename "$t")" "$t"
done
for t in "$ROOT"/tests/integration/*.sh; do
	[ -f "$t" ] || continue
	run_one "$(basename "$t")" sh "$t"
done
for t in "$ROOT"/tests/integration/test_*.py "$ROOT"/tests/mongosim/test_*.py "$ROOT"/tests/mongosim/conformance.py; do
	[ -f "$t" ] || continue
	run_one "$(basename "$t")" "$PY" "$t"
done
echo "$total_p passed, $total_f failed"
[ "$total_f" -eq 0 ]
