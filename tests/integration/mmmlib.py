"""mmmlib — helpers for the `mmm` command's integration tests (test_mmm_*.py).

    with Env("walkthrough") as env:                 # scratch directory, removed on success
        a = env.sim("a")                             # mongosim, replica set "a" (stopped on exit)
        cfg = env.config("site.yml", {"server_a": (ID_A, a.uri)}, journal="ja",
                         capture=["server_a"], apply=["server_a"])
        rc, out, err = mmm(cfg, "dump-config")       # (exit status, stdout, stderr) as text
        d = env.daemon([MMM, "-c", cfg, "run"], "run.log")   # killed on exit if still running
        d.term()                                     # SIGTERM, returns the exit status

Everything started here is stopped on exit, also on failure.  Set MMM_KEEP=1
to keep the scratch directory.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time

from applylib import Proc
from simlib import Sim, wait_for  # noqa: F401  (re-exported)

ROOT = os.environ.get("MMM_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("MMM_BIN") or os.path.join(ROOT, "build", "bin")
FIX = os.environ.get("MMM_FIXTURES") or os.path.join(ROOT, "fixtures")
MMM = os.path.join(BIN, "mmm")
MJ = os.path.join(BIN, "mmm-journal")
CAPTURE = os.path.join(BIN, "mmm-capture")
APPLY = os.path.join(BIN, "mmm-apply")

# libmongoc maps /dev/shm/mongoc-<pid> for its counters; a process killed
# earlier leaves its file behind, and a later process that gets the same pid
# prints "Falling back to malloc for counters" on stderr.  The counters are
# not needed here.
os.environ.setdefault("MONGOC_DISABLE_SHM", "1")

ID_A = "2c88ae84-7cb9-40f7-835d-c05e981f564d"
ID_B = "0d9c284b-b47c-40b5-932c-547b8685edd0"
ID_C = "a1b2c3d4-0000-4000-8000-00000000000c"


def run(argv, input=None, timeout=120):
    """Runs ARGV; (exit status, stdout, stderr) as text, and the seconds it took."""
    t = time.monotonic()
    p = subprocess.run(argv, input=input.encode() if isinstance(input, str) else input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       stdin=None if input is not None else subprocess.DEVNULL)
    run.secs = time.monotonic() - t
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def mmm(cfg, *args, input=None, timeout=120):
    return run([MMM, "-c", cfg] + list(args), input=input, timeout=timeout)


def mj(cfg, *args, timeout=120):
    return run([MJ, "-c", cfg] + list(args), timeout=timeout)


def status(cfg):
    """`mmm status --json`, parsed (raises when it is not JSON)."""
    rc, out, err = mmm(cfg, "status", "--json")
    if rc != 0:
        raise RuntimeError("mmm status failed (%d): %s" % (rc, err))
    return json.loads(out)


def journal_last(cfg, name):
    """Last ts (as (sec, inc)) the journal of CFG holds for source NAME, or (0, 0)."""
    try:
        st = status(cfg)
    except RuntimeError:
        return (0, 0)
    for s in st["sources"]:
        if s["name"] == name:
            sec, inc = s["last_ts"].split(":")
            return (int(sec), int(inc))
    return (0, 0)


def ts_tuple(ts):
    return (ts.time, ts.inc)


class Env:
    def __init__(self, name, checker=None):
        self.checker = checker      # kept (with logs shown) when it counted a failure
        self.tmp = tempfile.mkdtemp(prefix="mmm-%s-" % name)
        self.sims = []
        self.procs = []

    def path(self, *p):
        return os.path.join(self.tmp, *p)

    def sim(self, replset, args=None):
        s = Sim(args or [], replset=replset)
        self.sims.append(s)
        return s

    def config(self, name, servers, journal=None, capture=None, apply=None, extra=""):
        """Writes a config: SERVERS maps name -> (uuid, uri)."""
        path = self.path(name)
        with open(path, "w") as f:
            for nm, (sid, uri) in servers.items():
                f.write("%s:\n  id: '%s'\n  uri: '%s'\n" % (nm, sid, uri))
            if journal:
                f.write("journal:\n  path: %s\n" % self.path(journal))
            if capture is not None:
                f.write("capture: { servers: [%s] }\n" % ", ".join(capture))
            if apply is not None:
                f.write("apply: { servers: [%s] }\n" % ", ".join(apply))
            f.write(extra)
        return path

    def daemon(self, argv, log):
        p = Proc(argv, self.path(log))
        self.procs.append(p)
        return p

    def dump_logs(self):
        for p in self.procs:
            try:
                print("---- %s" % p.log_path)
                print(p.log()[-3000:])
            except Exception:
                pass

    def close(self, ok):
        for p in self.procs:
            try:
                if p.alive():
                    p.kill()
            except Exception:
                pass
        for s in self.sims:
            try:
                s.stop()
            except Exception:
                pass
        if ok and not os.environ.get("MMM_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("kept %s" % self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        ok = a[0] is None and not (self.checker and self.checker.failed)
        if not ok:
            self.dump_logs()
        self.close(ok)
