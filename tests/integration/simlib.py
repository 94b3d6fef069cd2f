"""simlib — start and stop mongosim from Python tests, plus a tiny check harness.

    from simlib import Sim, Checker
    with Sim(["--oplog-size-mb", "1"], dbpath=tmp) as s:   # stopped on exit, even on failure
        c = s.client()                   # pymongo MongoClient (replicaSet=rs0, retryWrites)
        s.oplog()                        # list of every oplog entry (SON, field order kept)
        s.last_ts()                      # newest oplog ts (bson.Timestamp)
        s.restart()                      # SIGTERM + start again on the same port (and dbpath)
    ck = Checker("name"); ck.check(cond, "what"); ck.eq(a, b, "what"); sys.exit(ck.done())

Environment: MMM_BIN (directory holding mongosim; default <repo>/build/bin).
Every Sim keeps its server's stderr in sim.log_path (removed when the test
process exits, unless MMM_KEEP_LOGS is set).
"""
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.environ.get("MMM_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("MMM_BIN") or os.path.join(ROOT, "build", "bin")
MONGOSIM = os.path.join(BIN, "mongosim")

_live = []


_logs = []


def _cleanup_all():
    for s in list(_live):
        try:
            s.stop()
        except Exception:
            pass
    if not os.environ.get("MMM_KEEP_LOGS"):
        for p in _logs:
            try:
                os.unlink(p)
            except OSError:
                pass


import atexit  # noqa: E402
atexit.register(_cleanup_all)


class Sim:
    """One mongosim process.  args: extra command-line arguments."""

    def __init__(self, args=None, dbpath=None, port=0, replset="rs0", faults=True, start=True):
        self.args = list(args or [])
        self.dbpath = dbpath
        self.port = port
        self.replset = replset
        self.faults = faults
        self.proc = None
        self._clients = []
        fd, self.log_path = tempfile.mkstemp(prefix="mongosim-", suffix=".log")
        os.close(fd)
        _logs.append(self.log_path)
        if start:
            self.start()

    # -- process control --
    def start(self, timeout=10.0):
        cmd = [MONGOSIM, "--port", str(self.port), "--replset", self.replset] + self.args
        if self.dbpath:
            cmd += ["--dbpath", self.dbpath]
        if self.faults and "--enable-faults" not in cmd:
            cmd.append("--enable-faults")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log)
        _live.append(self)
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                continue
            ch = os.read(self.proc.stdout.fileno(), 1)
            if not ch:
                break
            if ch == b"\n":
                break
            line += ch
        if not line.startswith(b"ready port="):
            self.stop()
            raise RuntimeError("mongosim did not start: %r (log %s)" % (line, self.log_path))
        self.port = int(line.split(b"=")[1])
        return self

    def stop(self, timeout=10.0):
        """SIGTERM, wait (kill after timeout); returns the exit status."""
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients = []
        rc = None
        if self.proc:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    rc = self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    rc = self.proc.wait()
            else:
                rc = self.proc.returncode
            self.proc.stdout.close()
            self._log.close()
            self.proc = None
        if self in _live:
            _live.remove(self)
        return rc

    def kill(self):
        """SIGKILL (no save)."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self._log.close()
            self.proc = None
        if self in _live:
            _live.remove(self)

    def restart(self, timeout=10.0):
        """Stops and starts again on the same port (data kept with dbpath)."""
        self.stop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    # -- clients --
    @property
    def uri(self):
        return "mongodb://127.0.0.1:%d/?replicaSet=%s" % (self.port, self.replset)

    def client(self, **kw):
        import pymongo
        from bson.codec_options import CodecOptions  # noqa: F401
        from bson.son import SON
        kw.setdefault("serverSelectionTimeoutMS", 5000)
        kw.setdefault("document_class", SON)
        c = pymongo.MongoClient(self.uri, **kw)
        self._clients.append(c)
        return c

    def raw(self):
        """A plain TCP socket to the server (for malformed-message tests)."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def oplog(self, filt=None):
        c = self._admin()
        return list(c.local["oplog.rs"].find(filt or {}))

    def last_ts(self):
        c = self._admin()
        e = c.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])
        return e["ts"]

    def _admin(self):
        if not getattr(self, "_adm", None) or self._adm not in self._clients:
            self._adm = self.client()
        return self._adm


class Checker:
    """Counts checks; done() prints 'N passed, N failed' and returns the exit status."""

    def __init__(self, name=""):
        self.name = name
        self.passed = 0
        self.failed = 0

    def check(self, cond, what=""):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL %s: %s" % (self.name, what), flush=True)
        return bool(cond)

    def eq(self, a, b, what=""):
        return self.check(a == b, "%s: %r != %r" % (what, a, b))

    def raises(self, fn, code=None, what=""):
        """fn() must raise a pymongo OperationFailure (with this code)."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            got = getattr(e, "code", None)
            if code is None or got == code:
                self.passed += 1
                return e
            self.failed += 1
            print("FAIL %s: %s: code %r != %r (%s)" % (self.name, what, got, code, e), flush=True)
            return e
        self.failed += 1
        print("FAIL %s: %s: no error raised" % (self.name, what), flush=True)
        return None

    def done(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0


def wait_for(cond, timeout=5.0, interval=0.01):
    """Polls cond() until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)
