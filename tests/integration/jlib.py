"""jlib — what the mmm-journal integration tests share: paths, a check
counter with the closing "N passed, N failed" line, running mmm-journal and
splitting an oplog.bson."""
import os
import subprocess

import bson

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get('MMM_BIN', os.path.join(ROOT, 'build', 'bin'))
FIX = os.environ.get('MMM_FIXTURES', os.path.join(ROOT, 'fixtures'))
MJ = os.path.join(BIN, 'mmm-journal')
counts = {'passed': 0, 'failed': 0}


def check(cond, what):
    counts['passed' if cond else 'failed'] += 1
    if not cond:
        print('FAIL: %s' % what, flush=True)
    return cond


def report():
    """Prints the closing line; returns the exit status."""
    print('%d passed, %d failed' % (counts['passed'], counts['failed']))
    return 1 if counts['failed'] else 0


# libmongoc (linked for URI parsing) keeps counters in /dev/shm/mongoc-PID;
# a killed process leaves its file behind, and a later process given the
# same PID then warns "Falling back to malloc for counters" on stderr.
os.environ.setdefault('MONGOC_DISABLE_SHM', '1')


def mj(*args, stdin=None, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([MJ] + [str(a) for a in args], input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=e, timeout=120)
    p.err = p.stderr.decode(errors='replace')
    return p


def one_line(p):
    lines = p.err.splitlines()
    return len(lines) == 1 and p.err.endswith('\n')


def split_docs(data):
    """Raw documents of an oplog.bson, as bytes."""
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], 'little')
        out.append(data[i:i + n])
        i += n
    return out


def ts_of(raw):
    t = bson.BSON(raw).decode()['ts']
    return (t.time, t.inc)


def ts_str(t):
    return '%d:%d' % t
