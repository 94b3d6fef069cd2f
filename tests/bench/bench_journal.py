#!/usr/bin/python3
"""bench_journal.py — the journal benchmark (issue 2, acceptance criterion 7).

Generates a deterministic oplog.bson shaped like a MongoDB 6.0 primary's
(build/bench/gen_oplog) and compares mmm-journal against zstd on the same
file, in the same run:

  import time / zstd -3 time              target <= 1.5
  journal bytes / zstd -3 bytes           target <= 1.15
  dump --format bson time / zstd -dc time target <= 2.0
  dump --since (last 100 entries), 1M-entry journal vs 10k-entry journal:
                                          ratio <= 2, each < 20 ms
  peak RSS of import                      target <= 64 MB

Environment: MMM_BIN (directory with mmm-journal), MMM_BENCH_BIN (directory
with gen_oplog), MMM_BENCH_ENTRIES (entries, default 1000000),
MMM_BENCH_KEEP=1 keeps the scratch directory.  Prints one line per figure;
exits 0 whatever the figures are, 1 only when a command fails.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.environ.get("MMM_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("MMM_BIN") or os.path.join(ROOT, "build", "bin")
BENCH_BIN = os.environ.get("MMM_BENCH_BIN") or os.path.join(ROOT, "build", "bench")
ENTRIES = int(os.environ.get("MMM_BENCH_ENTRIES") or 1000000)
SMALL = min(10000, ENTRIES)
SINCE_LAST = 100
SOURCE = "6d6d6d00-bead-4000-8000-000000000001"   # fixed source UUID
RUNS = 5          # best-of for the timings of whole files (reference and measured alternate)
SINCE_RUNS = 7    # best-of for the dump --since timings
MB = 1024 * 1024

MMMJ = os.path.join(BIN, "mmm-journal")
GEN = os.path.join(BENCH_BIN, "gen_oplog")


class Failed(Exception):
    pass


def run(cmd, out=None):
    """Runs CMD with stdout to the file OUT (None: /dev/null); returns
    (wall seconds, peak RSS in KiB, CPU seconds).  Raises Failed on a non-zero exit."""
    sink = open(out, "wb") if out else open(os.devnull, "wb")
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.PIPE)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would mix in earlier children)
        err = p.stderr.read()
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        p.stderr.close()
    finally:
        sink.close()
    if p.returncode != 0:
        raise Failed("%s exited with %d: %s" % (" ".join(cmd), p.returncode,
                                                err.decode(errors="replace").strip()[:2000]))
    return dt, ru.ru_maxrss, ru.ru_utime + ru.ru_stime


class Timing:
    """Best wall and CPU time of several runs, and the largest peak RSS."""

    def __init__(self):
        self.wall = self.cpu = None
        self.rss = 0

    def add(self, wall, rss, cpu):
        self.wall = wall if self.wall is None else min(self.wall, wall)
        self.cpu = cpu if self.cpu is None else min(self.cpu, cpu)
        self.rss = max(self.rss, rss)


def best(cmd, runs=RUNS, out=None):
    t = Timing()
    for _ in range(runs):
        t.add(*run(cmd, out))
    return t


def pair(ref, cmd, runs=RUNS, before=None):
    """Runs REF and CMD alternately RUNS times each (BEFORE() untimed before each
    CMD), so that both see the same load on a shared machine; returns their Timings."""
    tr, tc = Timing(), Timing()
    for _ in range(runs):
        tr.add(*run(ref))
        if before:
            before()
        tc.add(*run(cmd))
    return tr, tc


def entry_offsets(path):
    """Offsets of every BSON document in PATH (concatenated documents)."""
    offs = []
    with open(path, "rb") as f:
        data = f.read()
    off, n = 0, len(data)
    while off < n:
        offs.append(off)
        (ln,) = struct.unpack_from("<i", data, off)
        if ln < 5:
            raise Failed("%s: bad BSON length at offset %d" % (path, off))
        off += ln
    return offs, data


def entry_ts(doc):
    """(seconds, increment) of the top-level Timestamp `ts` of one BSON document."""
    off = 4
    while off < len(doc) - 1:
        t = doc[off]
        end = doc.index(b"\0", off + 1)
        name = doc[off + 1:end]
        off = end + 1
        if t == 0x11:
            inc, sec = struct.unpack_from("<II", doc, off)
            if name == b"ts":
                return sec, inc
            off += 8
        elif t in (0x01, 0x09, 0x12):
            off += 8
        elif t in (0x10,):
            off += 4
        elif t == 0x08:
            off += 1
        elif t == 0x07:
            off += 12
        elif t in (0x02, 0x0D, 0x0E):
            off += 4 + struct.unpack_from("<i", doc, off)[0]
        elif t in (0x03, 0x04):
            off += struct.unpack_from("<i", doc, off)[0]
        elif t == 0x05:
            off += 5 + struct.unpack_from("<i", doc, off)[0]
        elif t == 0x0A:
            pass
        else:
            raise Failed("entry_ts: BSON type 0x%02x not handled" % t)
    raise Failed("entry has no ts")


def mmm(j, *args):
    return [MMMJ, "-j", j] + list(args)


def stored_bytes(j):
    """Sum of stored block bytes from `mmm-journal stat --json`, or None."""
    p = subprocess.run(mmm(j, "stat", "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        return None, "stat --json exited with %d" % p.returncode
    try:
        st = json.loads(p.stdout)
    except ValueError:
        return None, "stat --json is not JSON"
    total, found = 0, False

    def walk(x):
        nonlocal total, found
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("stored_bytes", "stored") and isinstance(v, int):
                    total += v
                    found = True
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    # per-source figures, not a journal-wide total as well: prefer the sources list
    srcs = st.get("sources") if isinstance(st, dict) else None
    walk(srcs if srcs is not None else st)
    return (total if found else None), None


def mdb_used(j):
    """Bytes of data.mdb in use: the file size, or what is allocated when smaller (sparse)."""
    s = os.stat(os.path.join(j, "data.mdb"))
    return s.st_size, min(s.st_size, s.st_blocks * 512)


def line(name, ratio, detail, ok):
    print("%-28s %6.3f  (%s)%s" % (name + ":", ratio, detail, "" if ok else "  MISSED"), flush=True)


def main():
    for prog in (GEN, MMMJ):
        if not os.access(prog, os.X_OK):
            print("bench_journal: skipped, %s is not built" % prog)
            return 0
    if not shutil.which("zstd"):
        print("bench_journal: skipped, zstd is not installed")
        return 0
    tmp = tempfile.mkdtemp(prefix="mmm-bench-journal-", dir="/tmp")
    try:
        return bench(tmp)
    except Failed as e:
        print("bench_journal: %s" % e, file=sys.stderr)
        return 1
    finally:
        if os.environ.get("MMM_BENCH_KEEP"):
            print("bench_journal: kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def bench(tmp):
    big = os.path.join(tmp, "oplog.bson")
    small = os.path.join(tmp, "oplog-10k.bson")
    zst = big + ".zst"
    jbig = os.path.join(tmp, "j-big")
    jsmall = os.path.join(tmp, "j-small")

    t = run([GEN, "--entries", str(ENTRIES), "-o", big])[0]
    run([GEN, "--entries", str(SMALL), "-o", small])
    size = os.path.getsize(big)
    print("oplog.bson: %d entries, %.1f MB, %.0f bytes/entry (generated in %.2f s)"
          % (ENTRIES, size / MB, size / ENTRIES, t), flush=True)

    # reference: zstd -3, single thread; import into a fresh journal each run
    # (the last run's journal stays for the rest)
    def fresh():
        shutil.rmtree(jbig, ignore_errors=True)
    tz, ti = pair(["sh", "-c", 'exec zstd -3 -T1 -q -c "$1" > "$2"', "zstd", big, zst],
                  mmm(jbig, "import-bson", big, "--source", SOURCE), before=fresh)
    zbytes = os.path.getsize(zst)
    r = ti.wall / tz.wall
    line("import/zstd-3 time", r, "import %.2f s, zstd -3 %.2f s; CPU %.2f s / %.2f s = %.3f; target <= 1.5"
         % (ti.wall, tz.wall, ti.cpu, tz.cpu, ti.cpu / tz.cpu), r <= 1.5)
    rss = ti.rss

    fsize, used = mdb_used(jbig)
    stored, why = stored_bytes(jbig)
    r = used / zbytes
    detail = "data.mdb %.1f MB" % (used / MB)
    if fsize != used:
        detail += " (file %.1f MB)" % (fsize / MB)
    if stored is not None:
        detail += ", stored blocks %.1f MB = %.3f x zstd" % (stored / MB, stored / zbytes)
    else:
        detail += ", stored blocks: n/a (%s)" % why
    detail += "; zstd -3 %.1f MB; target <= 1.15" % (zbytes / MB)
    line("journal/zstd-3 bytes", r, detail, r <= 1.15)

    # whole dump vs zstd -dc
    td, tj = pair(["zstd", "-dc", zst], mmm(jbig, "dump", "--format", "bson"))
    r = tj.wall / td.wall
    line("dump/zstd-dc time", r, "dump %.2f s, zstd -dc %.2f s; CPU %.2f s / %.2f s = %.3f; target <= 2.0"
         % (tj.wall, td.wall, tj.cpu, td.cpu, tj.cpu / td.cpu), r <= 2.0)

    # the dump gives back the file byte for byte
    out = os.path.join(tmp, "dump.bson")
    run(mmm(jbig, "dump", "--format", "bson"), out)
    same = os.path.getsize(out) == size and filecmp(out, big)
    print("%-28s %6s  (dump --format bson of the big journal, byte for byte)"
          % ("dump == oplog.bson:", "yes" if same else "NO"), flush=True)
    os.unlink(out)

    # dump --since of the last 100 entries, 10k-entry vs 1M-entry journal
    run(mmm(jsmall, "import-bson", small, "--source", SOURCE))
    res = {}
    for name, path, j in (("10k", small, jsmall), ("big", big, jbig)):
        offs, data = entry_offsets(path)
        k = max(0, len(offs) - SINCE_LAST)
        sec, inc = entry_ts(data[offs[k]:])
        want = len(data) - offs[k]
        del data
        cmd = mmm(j, "dump", "--since", "%d:%d" % (sec, inc), "--format", "bson")
        out = os.path.join(tmp, "since.bson")
        run(cmd, out)
        got = os.path.getsize(out)
        os.unlink(out)
        t = best(cmd, SINCE_RUNS).wall
        res[name] = (t, got == want, len(offs) - k)
    (ts_, oks, ns), (tb, okb, nb) = res["10k"], res["big"]
    r = tb / ts_
    ok = r <= 2 and ts_ < 0.020 and tb < 0.020
    line("dump --since big/10k time", r,
         "last %d of %d: %.1f ms, last %d of %d: %.1f ms; target <= 2, each < 20 ms%s"
         % (nb, ENTRIES, tb * 1000, ns, SMALL, ts_ * 1000,
            "" if oks and okb else "; WRONG OUTPUT SIZE"), ok)

    mb = rss / 1024
    print("%-28s %6.1f  (MB; target <= 64)%s" % ("import peak RSS:", mb, "" if mb <= 64 else "  MISSED"),
          flush=True)
    return 0


def filecmp(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


if __name__ == "__main__":
    sys.exit(main())
