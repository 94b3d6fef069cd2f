"""caplib — what the mmm-capture integration tests share: a config writer,
a Capture process handle (always killed at exit), journal and oplog readers,
and the journal == oplog comparison.  A test sets caplib.ck to its Checker.
"""
import atexit
import json
import os
import signal
import subprocess
import tempfile

from simlib import wait_for
import simlib

# mongosim is the fixture, not what is tested here: under `make asan` use the
# plain build when there is one (MMM_CAPTURE_SIM=same keeps MMM_BIN's).
_PLAIN_SIM = os.path.join(simlib.ROOT, "build", "bin", "mongosim")
if os.environ.get("MMM_CAPTURE_SIM") != "same" and os.access(_PLAIN_SIM, os.X_OK):
    simlib.MONGOSIM = _PLAIN_SIM

import bson  # noqa: E402
from bson.codec_options import CodecOptions  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402
from bson.timestamp import Timestamp  # noqa: E402

BIN = os.environ.get("MMM_BIN") or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "build", "bin")
CAPTURE = os.path.join(BIN, "mmm-capture")
MJ = os.path.join(BIN, "mmm-journal")
EXCLUDED = ("mmm.", "config.system.sessions", "local.")
ck = None     # the test's Checker



def write_config(path, servers, jdir):
    with open(path, "w") as f:
        for name, sid, uri in servers:
            f.write("%s:\n  id: '%s'\n  uri: '%s'\n" % (name, sid, uri))
        f.write("journal:\n  path: %s\n" % jdir)


_captures = []


def _kill_captures():
    for c in _captures:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()
        if not ck.failed:
            try:
                os.unlink(c.log)
            except OSError:
                pass


atexit.register(_kill_captures)


class Capture:
    """One mmm-capture process; killed at exit whatever happens."""

    def __init__(self, cfg, args=(), env=None, log=None):
        e = dict(os.environ)
        e.update(env or {})
        self.log = log or tempfile.mktemp(prefix="capture-", suffix=".log")
        self._f = open(self.log, "ab")
        self.p = subprocess.Popen([CAPTURE, "-c", cfg] + list(args), stdout=self._f, stderr=self._f,
                                  stdin=subprocess.DEVNULL, env=e)
        _captures.append(self)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                self._f.close()
                return "timeout"
        self._f.close()
        return self.p.returncode

    def text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")


def mj(jdir, *args):
    return subprocess.run([MJ, "-j", jdir] + [str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)


def stat(jdir):
    p = mj(jdir, "stat", "--json")
    if p.returncode != 0:
        return None
    return json.loads(p.stdout)


def source_stat(jdir, name):
    s = stat(jdir)
    for src in (s or {}).get("sources", []):
        if src["name"] == name:
            return src
    return None


def status_of(jdir, sid):
    s = stat(jdir) or {}
    return s.get("status", {}).get("capture/%s" % sid)


def split_docs(data):
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "little")
        out.append(data[i:i + n])
        i += n
    return out


def ts_key(raw):
    t = bson.BSON(raw).decode()["ts"]
    return (t.time, t.inc)


def kept_oplog(sim, since=None):
    """Raw oplog entries (bytes as stored) with ts >= since, minus exclusions."""
    c = sim.client()
    coll = c.local.get_collection("oplog.rs", codec_options=CodecOptions(document_class=RawBSONDocument))
    filt = {"ts": {"$gte": Timestamp(*since)}} if since else {}
    out = []
    for d in coll.find(filt):
        ns = d["ns"]
        if ns.startswith(EXCLUDED[0]) or ns == EXCLUDED[1] or ns.startswith(EXCLUDED[2]):
            continue
        out.append(d.raw)
    return out


def journal_entries(jdir, name):
    p = mj(jdir, "export-bson", "--source", name)
    if p.returncode != 0:
        return None
    return split_docs(p.stdout)


def wait_caught_up(jdir, name, sim, timeout=20):
    """Until the journal's last ts is the server's newest kept entry."""
    want = kept_oplog(sim)[-1]
    t = ts_key(want)

    def ok():
        s = source_stat(jdir, name)
        return s is not None and s["last_ts"] == "%d:%d" % t
    return wait_for(ok, timeout, 0.05)


def compare(jdir, name, sim, what):
    """The journal of NAME equals SIM's oplog from the journal's first entry on."""
    j = journal_entries(jdir, name)
    if not ck.check(j, "%s: export-bson of %s" % (what, name)):
        return False
    last = ts_key(j[-1])
    o = [r for r in kept_oplog(sim, ts_key(j[0])) if ts_key(r) <= last]
    if j == o:
        ck.check(True, "")
        return True
    n = min(len(j), len(o))
    first = next((i for i in range(n) if j[i] != o[i]), n)
    ck.check(False, "%s: journal of %s (%d entries) differs from its oplog (%d kept entries) at index %d: "
             "journal %s, oplog %s" % (what, name, len(j), len(o), first,
                                      ts_key(j[first]) if first < len(j) else None,
                                      ts_key(o[first]) if first < len(o) else None))
    return False
