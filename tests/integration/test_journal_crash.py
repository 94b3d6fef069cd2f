#!/usr/bin/python3
"""Issue 2, acceptance 5: import runs killed by MMM_FAULT crash points
(jnl_commit, jnl_committed), failed by an injected EIO, or killed with
SIGKILL at random moments (fixed seed) always leave a journal that verifies
and whose export is an exact prefix of the input.  A small commit threshold
(MMM_IMPORT_COMMIT_BYTES) makes every block its own commit."""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid

import bson
from bson.int64 import Int64
from bson.timestamp import Timestamp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jlib  # noqa: E402
from jlib import MJ, check, mj  # noqa: E402


def gen_oplog(n, seed, sec=1700000000):
    """N synthetic insert entries, strictly ascending ts, ~300 bytes each."""
    rnd = random.Random(seed)
    ui = bson.Binary(uuid.UUID(int=rnd.getrandbits(128)).bytes, 4)
    out, inc = [], 0
    for i in range(n):
        inc += 1
        if inc > rnd.randint(50, 400):
            sec, inc = sec + 1, 1
        doc = {'op': 'i', 'ns': 'test.c%d' % (i % 3), 'ui': ui,
               'o': {'_id': i, 'name': 'user%06d' % rnd.randrange(10 ** 6),
                     'pad': ''.join(rnd.choice('abcdefgh') for _ in range(rnd.randint(50, 250)))},
               'ts': Timestamp(sec, inc), 't': Int64(3), 'v': Int64(2)}
        out.append(bson.BSON.encode(doc))
    return out


import time

KNOWN_UBSAN = 'null pointer passed as argument 1'
SID = '6d0b6a4e-3f3c-4a55-9a41-0b2c1d7e5f10'
ENV = {'MMM_IMPORT_COMMIT_BYTES': '1'}


def outcome(jdir, docs, bounds, what):
    """Checks the journal left behind; returns the number of entries it holds."""
    if not os.path.exists(os.path.join(jdir, 'data.mdb')):
        return 0     # killed before the journal existed: nothing to check
    v = mj('-j', jdir, 'verify')
    if v.returncode != 0 and KNOWN_UBSAN in v.err:
        # Library bug (reported): jnl_source_list() calls qsort(NULL, 0, ...)
        # on a journal without sources, which UBSan (make asan) aborts on.
        # Only a crash before the first source record leaves such a journal.
        print('NOTE: %s: journal without sources hits the known qsort(NULL) bug: %s' %
              (what, v.err.strip()))
        return 0
    ok = check(v.returncode == 0, '%s: verify: %s%s' % (what, v.stdout.decode(), v.err))
    e = mj('-j', jdir, 'export-bson', '--source', SID)
    if e.returncode != 0:
        check('no source' in e.err, '%s: export failed: %s' % (what, e.err))
        return 0
    n = len(e.stdout)
    check(n in bounds and e.stdout == b''.join(docs)[:n],
          '%s: export (%d bytes) is a prefix of the input at an entry boundary' % (what, n))
    if ok:
        entries = bounds.get(n, -1)
        check(v.stdout.decode().strip().endswith(' %d entries' % entries),
              '%s: verify counts %d entries: %s' % (what, entries, v.stdout.decode()))
    return bounds.get(n, 0)


def run_import(jdir, inp, env, kill_after=None):
    e = dict(os.environ)
    e.update(env)
    p = subprocess.Popen([MJ, '-j', jdir, 'import-bson', inp, '--source', SID, '--name', 'crash'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
    if kill_after is not None:
        time.sleep(kill_after)
        p.kill()
    _, err = p.communicate(timeout=120)
    return p.returncode, err.decode(errors='replace')


def main():
    if not os.access(MJ, os.X_OK):
        print('FAIL: %s not built' % MJ)
        print('0 passed, 1 failed')
        return 1
    tmp = tempfile.mkdtemp(prefix='mmm-crash-')
    try:
        docs = gen_oplog(24000, 11)
        inp = os.path.join(tmp, 'in.bson')
        with open(inp, 'wb') as fh:
            fh.write(b''.join(docs))
        bounds, off = {0: 0}, 0
        for i, d in enumerate(docs):
            off += len(d)
            bounds[off] = i + 1

        # A full run: how long it takes and how many blocks (= commits) it makes.
        t0 = time.time()
        rc, err = run_import(os.path.join(tmp, 'full'), inp, ENV)
        full_time = time.time() - t0
        check(rc == 0, 'uninterrupted import: %s' % err)
        st = json.loads(mj('-j', os.path.join(tmp, 'full'), 'stat', '--json').stdout)
        nblocks = st['sources'][0]['blocks']
        check(nblocks >= 20, 'the input makes many commits (%d blocks)' % nblocks)
        check(outcome(os.path.join(tmp, 'full'), docs, bounds, 'full run') == len(docs),
              'full run holds every entry')

        runs, partial = 0, 0
        cases = [('jnl_commit@%d:crash' % n, 137) for n in (1, 2, 3, 4, 6, 9, 14, 20)]
        cases += [('jnl_committed@%d:crash' % n, 137) for n in (1, 2, 3, 5, 10, 17)]
        cases += [('jnl_commit@7:EIO', 1), ('jnl_committed@4+:crash', 137)]
        for spec, want_rc in cases:
            jdir = os.path.join(tmp, 'f%d' % runs)
            rc, err = run_import(jdir, inp, dict(ENV, MMM_FAULT=spec))
            check(rc == want_rc, '%s: exit %d, expected %d: %s' % (spec, rc, want_rc, err))
            n = outcome(jdir, docs, bounds, spec)
            partial += 0 < n < len(docs)
            runs += 1
            if spec == 'jnl_commit@9:crash':   # resume the interrupted import
                p = mj('-j', jdir, 'import-bson', inp, '--source', SID, '--skip-existing')
                e = mj('-j', jdir, 'export-bson', '--source', SID)
                check(p.returncode == 0 and e.stdout == b''.join(docs),
                      'an import resumed with --skip-existing completes the journal: %s' % p.err)
            shutil.rmtree(jdir, ignore_errors=True)

        # kill -9 at random moments: a run whose import finished before the
        # kill (a loaded machine is slower or faster than the timing run)
        # does not count, and the next delay is drawn from a shorter window.
        rnd = random.Random(20261129)
        killed, window = 0, full_time
        for k in range(40):
            if killed == 10:
                break
            jdir = os.path.join(tmp, 'k%d' % k)
            delay = rnd.uniform(0.0, window)
            rc, err = run_import(jdir, inp, ENV, kill_after=delay)
            n = outcome(jdir, docs, bounds, 'SIGKILL after %.3fs' % delay)
            if rc == -9:
                killed += 1
                partial += 0 < n < len(docs)
                runs += 1
            else:
                window *= 0.7
            shutil.rmtree(jdir, ignore_errors=True)
        check(runs >= 20, '%d interrupted runs' % runs)
        check(killed == 10, 'SIGKILL hit a running import 10 times (%d)' % killed)
        check(partial >= 10, '%d runs left a partial journal' % partial)
    except Exception as e:
        import traceback
        traceback.print_exc()
        check(False, 'raised %r' % e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return jlib.report()


if __name__ == '__main__':
    sys.exit(main())
