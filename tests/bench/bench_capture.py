#!/usr/bin/python3
"""bench_capture.py — mmm-capture's benchmark (issue 4, acceptance criterion 6).

1. Journaling rate: a mongosim whose oplog already holds 1M entries (the
   deterministic gen_oplog file, loaded through --dbpath) is tailed from its
   first entry by
     - the reference, build/bench/capture_ref: a plain libmongoc loop with
       the same cursor options that discards the entries, and
     - mmm-capture --from FIRST into a fresh journal, timed from its start
       until the journal holds the last entry (build/bench/capture_wait
       polls the journal every ms).
   They alternate, RUNS times each; the best wall times give the ratio
   rate(capture) / rate(reference)                target >= 0.8
2. Peak RSS of mmm-capture during those runs (VmHWM)   <= 64 MB
3. Lag under a sustained 20k writes/s workload (inserts in batches of 200
   every 10 ms from this script) on a fresh mongosim: the journal's newest
   entry's wall time behind the clock, sampled every 100 ms for 10 s:
   max                                            target <= 1 s

Environment: MMM_BIN, MMM_BENCH_BIN (set by run.sh), MMM_BENCH_ENTRIES
(default 1000000), MMM_BENCH_KEEP=1 keeps the scratch directory.  Prints
one line per figure; exits 0 whatever the figures are, 1 only when a
command fails.
"""
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.environ.get("MMM_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("MMM_BIN") or os.path.join(ROOT, "build", "bin")
BENCH_BIN = os.environ.get("MMM_BENCH_BIN") or os.path.join(ROOT, "build", "bench")
ENTRIES = int(os.environ.get("MMM_BENCH_ENTRIES") or 1000000)
RUNS = 3
RATE = 20000          # writes per second for the lag figure
LAG_SECS = 10
SOURCE = "6d6d6d00-bead-4000-8000-00000000ca01"
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import bson  # noqa: E402
from bson.int64 import Int64  # noqa: E402
from bson.timestamp import Timestamp  # noqa: E402
from simlib import Sim  # noqa: E402


class Failed(Exception):
    pass


def ts_of(raw):
    return bson.BSON(raw).decode()["ts"]


def make_dbpath(oplog, dbpath):
    """mongosim's --dbpath file (a header, no collections, then the oplog)."""
    with open(oplog, "rb") as f:
        data = f.read()
    first = ts_of(data[:struct.unpack("<i", data[:4])[0]])
    i = n = last_off = 0
    while i < len(data):
        last_off = i
        i += struct.unpack("<i", data[i:i + 4])[0]
        n += 1
    last = ts_of(data[last_off:])
    hdr = bson.BSON.encode({"mongosim": 1, "term": Int64(7), "lastTs": last, "dropped": Timestamp(0, 0),
                            "ncolls": Int64(0), "noplog": Int64(n)})
    os.makedirs(dbpath, exist_ok=True)
    with open(os.path.join(dbpath, "mongosim.bson"), "wb") as f:
        f.write(hdr)
        f.write(data)
    return n, len(data), first, last


def write_config(path, uri, jdir):
    with open(path, "w") as f:
        f.write("server_a:\n  id: '%s'\n  uri: '%s'\njournal:\n  path: %s\n" % (SOURCE, uri, jdir))


def tstr(t):
    return "%d:%d" % (t.time, t.inc)


def run_reference(uri, first, last):
    t0 = time.monotonic()
    p = subprocess.Popen([os.path.join(BENCH_BIN, "capture_ref"), uri, tstr(first), tstr(last)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stderr.close()
    if p.returncode != 0:
        raise Failed("capture_ref: %s" % err.decode(errors="replace").strip())
    return dt, ru.ru_utime + ru.ru_stime


def cpu_of(pid):
    """(user+system seconds of the process, {thread name+tid: seconds})."""
    tick = os.sysconf("SC_CLK_TCK")
    per = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        per[tid] = (int(fields[11]) + int(fields[12])) / tick
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick, per


def run_capture(cfg, jdir, first, last):
    shutil.rmtree(jdir, ignore_errors=True)
    waiter = subprocess.Popen([os.path.join(BENCH_BIN, "capture_wait"), jdir, SOURCE, tstr(last), "600"],
                              stdout=subprocess.PIPE)
    t0 = time.monotonic()
    cap = subprocess.Popen([os.path.join(BIN, "mmm-capture"), "-c", cfg, "--from", tstr(first)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out, _ = waiter.communicate(timeout=660)
    ok = waiter.returncode == 0
    # VmHWM of the running program (ru_maxrss would count this script's
    # pages that the child shared between fork and exec).
    hwm = 0
    cpu, per = cpu_of(cap.pid)
    with open("/proc/%d/status" % cap.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    cap.send_signal(signal.SIGTERM)
    err = cap.stderr.read()
    cap.wait()
    cap.stderr.close()
    if not ok or cap.returncode != 0:
        raise Failed("mmm-capture (rc %s): %s" % (cap.returncode, err.decode(errors="replace").strip()))
    reached = float(out.split()[1])
    return reached - t0, hwm, cpu, sorted(per.values(), reverse=True)[:2]


def lag_figure(tmp):
    """Capture one fresh mongosim while a thread writes RATE inserts/s."""
    jdir = os.path.join(tmp, "jlag")
    cfg = os.path.join(tmp, "lag.yml")
    with Sim([]) as s:
        write_config(cfg, s.uri, jdir)
        cap = subprocess.Popen([os.path.join(BIN, "mmm-capture"), "-c", cfg],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            c = s.client()
            coll = c.bench.lag
            coll.insert_one({"warm": 1})
            stop = threading.Event()
            written = [0]

            def writer():
                batch, period = RATE // 100, 0.01
                nxt = time.monotonic()
                i = 0
                while not stop.is_set():
                    coll.insert_many([{"i": i + k, "pad": "x" * 64} for k in range(batch)], ordered=False)
                    i += batch
                    written[0] = i
                    nxt += period
                    d = nxt - time.monotonic()
                    if d > 0:
                        time.sleep(d)

            th = threading.Thread(target=writer)
            th.start()
            time.sleep(1.0)       # let the workload reach its pace
            w0, t1 = written[0], time.monotonic()
            p = subprocess.run([os.path.join(BENCH_BIN, "capture_wait"), "--lag", jdir, SOURCE, str(LAG_SECS)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=LAG_SECS + 30)
            rate = (written[0] - w0) / (time.monotonic() - t1)
            stop.set()
            th.join()
            if p.returncode != 0:
                raise Failed("capture_wait --lag failed")
            f = p.stdout.split()
            return int(f[2]) / 1000.0, int(f[4]) / 1000.0, rate
        finally:
            cap.send_signal(signal.SIGTERM)
            try:
                cap.wait(30)
            except subprocess.TimeoutExpired:
                cap.kill()
                cap.wait()


def main():
    for prog in (os.path.join(BIN, "mmm-capture"), os.path.join(BIN, "mongosim"),
                 os.path.join(BENCH_BIN, "gen_oplog"), os.path.join(BENCH_BIN, "capture_ref"),
                 os.path.join(BENCH_BIN, "capture_wait")):
        if not os.access(prog, os.X_OK):
            print("capture: skipped (%s not built)" % prog)
            return 0
    tmp = tempfile.mkdtemp(prefix="mmm-bench-capture-")
    try:
        oplog = os.path.join(tmp, "oplog.bson")
        subprocess.run([os.path.join(BENCH_BIN, "gen_oplog"), "--entries", str(ENTRIES), "-o", oplog], check=True)
        n, size, first, last = make_dbpath(oplog, os.path.join(tmp, "db"))
        os.unlink(oplog)
        mb = size // (1024 * 1024) + 64
        ref, cap, rss, cpus, refcpu = [], [], [], [], []
        with Sim(["--oplog-size-mb", str(mb), "--noop-interval", "0"], dbpath=os.path.join(tmp, "db"),
                 faults=False) as s:
            cfg = os.path.join(tmp, "c.yml")
            jdir = os.path.join(tmp, "j")
            write_config(cfg, s.uri, jdir)
            for _ in range(RUNS):
                dt, rcpu = run_reference(s.uri, first, last)
                ref.append(dt)
                refcpu.append(rcpu)
                dt, r, cpu, threads = run_capture(cfg, jdir, first, last)
                cap.append(dt)
                rss.append(r)
                cpus.append((cpu, threads))
        br, bc = min(ref), min(cap)
        ratio = br / bc
        print("capture: %d entries (%.0f MB) journaled in %.3f s (%.0f entries/s); reference loop %.3f s "
              "(%.0f entries/s); best of %d" % (n, size / 1e6, bc, n / bc, br, n / br, RUNS))
        print("capture: rate ratio %.3f (target >= 0.8)%s" % (ratio, "" if ratio >= 0.8 else "  MISSED"))
        cpu, threads = min(cpus)
        print("capture: CPU %.2f s (busiest threads %s s) vs reference CPU %.2f s; load average %.2f on %d cores"
              % (cpu, "/".join("%.2f" % t for t in threads), min(refcpu), os.getloadavg()[0], os.cpu_count()))
        peak = max(rss) / 1024.0
        print("capture: peak RSS %.1f MB (target <= 64 MB)%s" % (peak, "" if peak <= 64 else "  MISSED"))
        lmax, l50, rate = lag_figure(tmp)
        print("capture: lag at %.0f writes/s: max %.3f s, median %.3f s (target max <= 1 s)%s"
              % (rate, lmax, l50, "" if lmax <= 1.0 else "  MISSED"))
        if rate < RATE * 0.9:
            print("capture: note: the workload reached only %.0f writes/s (target %d)" % (rate, RATE))
        return 0
    except Failed as e:
        print("capture: failed: %s" % e)
        return 1
    finally:
        if os.environ.get("MMM_BENCH_KEEP"):
            print("capture: kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
