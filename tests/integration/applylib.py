"""applylib — helpers for the mmm-apply integration tests (test_apply_*.py).

    with Mesh(2, sim_args=[...]) as m:        # mongosims a, b (and c); config; journal
        m.capture()                            # mmm-capture of every master (from their first entry)
        m.link("b", "a", "test.*")             # on b: apply a's test.* into test.*
        m.apply()                              # mmm-apply into every master
        ...writes through m.c["a"]...
        m.wait_drained()                       # every journal source applied everywhere it is linked
        m.dbhash("a", "test") == m.dbhash("b", "test")

Everything started here is stopped on exit, also on failure.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import bson
from bson.binary import Binary
from bson.son import SON

from simlib import Sim, wait_for

ROOT = os.environ.get("MMM_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("MMM_BIN") or os.path.join(ROOT, "build", "bin")
FIX = os.environ.get("MMM_FIXTURES") or os.path.join(ROOT, "fixtures")
NAMES = ["a", "b", "c", "d"]


def _retry_exec(fn):
    """Runs fn() (which executes a binary), again for a few seconds while the
    binary is being replaced by a concurrent build (EACCES, ETXTBSY)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return fn()
        except OSError as e:
            if e.errno not in (13, 26) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def uuid_bin(u):
    return Binary(uuid.UUID(str(u)).bytes, 4)


class Proc:
    """A daemon (mmm-capture / mmm-apply) with its log file."""

    def __init__(self, argv, log_path, env=None):
        e = dict(os.environ)
        e.update(env or {})
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.p = _retry_exec(lambda: subprocess.Popen(argv, stdout=self._log, stderr=self._log, env=e))

    def alive(self):
        return self.p.poll() is None

    def term(self, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._log.close()
        return self.p.returncode

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self._log.close()
        return self.p.returncode

    def wait(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Mesh:
    def __init__(self, n, sim_args=None, tmp=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="mmm-apply-test-")
        self.names = NAMES[:n]
        self.sims, self.c, self.ids = {}, {}, {}
        self.procs = []
        self.cap = None
        self.app = None
        try:
            for nm in self.names:
                s = Sim(sim_args or [])
                self.sims[nm] = s
                self.c[nm] = s.client()
                self.ids[nm] = str(uuid.uuid4())
        except Exception:
            self.close()
            raise
        self.journal = os.path.join(self.tmp, "journal")
        self.config = os.path.join(self.tmp, "mmm.yml")
        self.write_config()

    def write_config(self, extra=""):
        with open(self.config, "w") as f:
            for nm in self.names:
                f.write("%s:\n  id: '%s'\n  uri: '%s'\n" % (nm, self.ids[nm], self.sims[nm].uri))
            f.write("journal:\n  path: %s\n" % self.journal)
            f.write(extra)

    # -- daemons --
    def capture(self, servers=None, env=None):
        # from the newest of the masters' oldest entries (before any test write)
        first = max(self.first_ts(nm) for nm in self.names)
        argv = [os.path.join(BIN, "mmm-capture"), "-c", self.config, "--from", "%d:%d" % (first.time, first.inc)]
        for s in servers or []:
            argv += ["--server", s]
        self.cap = Proc(argv, os.path.join(self.tmp, "capture.log"), env)
        self.procs.append(self.cap)
        return self.cap

    def apply(self, servers=None, env=None, verbose=False):
        argv = [os.path.join(BIN, "mmm-apply"), "-c", self.config]
        for s in servers or []:
            argv += ["--server", s]
        if verbose:
            argv.append("-v")
        self.app = Proc(argv, os.path.join(self.tmp, "apply.log"), env)
        self.procs.append(self.app)
        return self.app

    def apply_status(self):
        """Every pair's status record: {"apply/<dst>/<src>": {...}}."""
        p = _retry_exec(lambda: subprocess.run([os.path.join(BIN, "mmm-apply"), "-c", self.config, "--status"],
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30))
        out = {}
        for line in p.stdout.decode().splitlines():
            if line.strip():
                d = json.loads(line)
                out[d["key"]] = d["status"]
        return out

    # -- links --
    def link(self, dst, src, src_ns, dst_ns=None, ops="iudc", forward=False, start_ts=None):
        dst_ns = dst_ns or src_ns
        doc = SON([("_id", "%s/%s=>%s" % (src, src_ns, dst_ns)), ("src_name", src),
                   ("src_id", uuid_bin(self.ids[src])), ("src_ns", src_ns), ("dst_ns", dst_ns),
                   ("ops", ops), ("forward", forward)])
        if start_ts is not None:
            doc["start_ts"] = start_ts
        self.c[dst].mmm.links.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def full_mesh(self, ns="test.*"):
        for d in self.names:
            for s in self.names:
                if s != d:
                    self.link(d, s, ns)

    # -- state --
    def first_ts(self, nm):
        e = list(self.c[nm].local["oplog.rs"].find({}).sort("$natural", 1).limit(1))
        return e[0]["ts"]

    def last_ts(self, nm, exclude_mmm=True):
        """Newest oplog ts of NM that is not apply's own bookkeeping or a no-op."""
        q = {"op": {"$ne": "n"}}
        e = list(self.c[nm].local["oplog.rs"].find(q).sort("$natural", -1).limit(1))
        return e[0]["ts"] if e else None

    def checkpoint(self, dst, src):
        """Newest checkpoint ts on DST for source SRC (None when none)."""
        best = None
        for d in self.c[dst].mmm.checkpoints.find({"source": uuid_bin(self.ids[src])}):
            if str(d["_id"]).endswith(":ddl"):
                continue
            if best is None or d["ts"] > best:
                best = d["ts"]
        return best

    def dbhash(self, nm, db, colls=None):
        cmd = SON([("dbHash", 1)])
        if colls:
            cmd["collections"] = colls
        r = self.c[nm][db].command(cmd)
        return dict(r["collections"])

    def indexes(self, nm, db):
        out = {}
        for cn in sorted(self.c[nm][db].list_collection_names()):
            if cn.startswith("system."):
                continue
            specs = []
            for ix in self.c[nm][db][cn].list_indexes():
                d = dict(ix)
                d.pop("ns", None)
                specs.append(sorted(d.items(), key=lambda kv: kv[0]))
            out[cn] = sorted(specs, key=repr)
        return out

    def docs(self, nm, db, coll):
        return list(self.c[nm][db][coll].find({}).sort("_id", 1))

    def wait_converged(self, db, timeout=60, names=None, colls=None):
        names = names or self.names
        last = [None]

        def same():
            hs = [self.dbhash(n, db, colls) for n in names]
            last[0] = hs
            return all(h == hs[0] for h in hs)
        ok = wait_for(same, timeout, 0.1)
        return ok

    def close(self):
        for p in self.procs:
            try:
                if p.alive():
                    p.kill()
            except Exception:
                pass
        for s in self.sims.values():
            try:
                s.stop()
            except Exception:
                pass

    def dump_logs(self):
        for p in self.procs:
            try:
                print("---- %s" % p.log_path)
                print(p.log()[-4000:])
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
        if a[0] is None and not os.environ.get("MMM_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("kept %s" % self.tmp)
