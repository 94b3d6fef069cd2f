#!/usr/bin/python3
"""Issue 6: `mmm-journal replay --source S --since TS [--until TS] --to SERVER[/NS]`
replays a journal range into a server with apply's translation.  A real
4.2-era oplog (fixtures/oplog, partial_skips: creates, inserts, config.*
writes) is imported, replayed whole into one mongosim and through a
namespace filter and an --until bound into another, and bad --to values
are refused with one line."""
import os
import shutil
import subprocess
import sys
import tempfile

import bson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simlib import Sim, Checker  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get('MMM_BIN', os.path.join(ROOT, 'build', 'bin'))
FIX = os.environ.get('MMM_FIXTURES', os.path.join(ROOT, 'fixtures'))
MJ = os.path.join(BIN, 'mmm-journal')
SID = '11111111-2222-4333-8444-555555555555'
os.environ.setdefault('MONGOC_DISABLE_SHM', '1')


def mj(*args):
    return subprocess.run([MJ] + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120)


def main():
    ck = Checker('journal-replay')
    tmp = tempfile.mkdtemp(prefix='mmm-replay-')
    try:
        src = os.path.join(FIX, 'oplog', 'mongorestore_testdata_oplog_partial_skips_oplog.bson')
        docs = bson.decode_all(open(src, 'rb').read())
        inserts = [d for d in docs if d['op'] == 'i' and d['ns'] == 'db3.c1']
        ts_of = [d['ts'] for d in docs]
        j = os.path.join(tmp, 'j')
        p = mj('-j', j, 'import-bson', src, '--source', SID, '--name', 'old')
        ck.eq(p.returncode, 0, 'import: %s' % p.stderr)
        cfg = os.path.join(tmp, 'c.yml')
        with Sim() as whole, Sim() as part:
            with open(cfg, 'w') as fh:
                fh.write("part:\n  id: '0d9c284b-b47c-40b5-932c-547b8685edd0'\n  uri: '%s'\njournal:\n  path: %s\n"
                         % (part.uri, j))
            first = '%d:%d' % (ts_of[0].time, ts_of[0].inc)
            p = mj('-j', j, 'replay', '--source', 'old', '--since', first, '--to', whole.uri)
            ck.eq(p.returncode, 0, 'replay everything: %s' % p.stderr)
            c = whole.client()
            got = sorted(x['_id'] for x in c.db3.c1.find())
            ck.eq(got, sorted(d['o']['_id'] for d in inserts), 'db3.c1 holds the five inserted documents')
            ck.check('cache.test' not in c.config.list_collection_names(), 'config.* data is not replayed')
            # a server of the config, a namespace filter, and an --until bound
            third = inserts[2]['ts']
            p = mj('-c', cfg, 'replay', '--source', 'old', '--since', first,
                   '--until', '%d:%d' % (third.time, third.inc), '--to', 'part/db3.c1')
            ck.eq(p.returncode, 0, 'replay into part/db3.c1 until the third insert: %s' % p.stderr)
            got = sorted(x['_id'] for x in part.client().db3.c1.find())
            ck.eq(got, sorted(d['o']['_id'] for d in inserts[:3]), 'only the first three inserts arrive')
            # bad input: one line, exit 2
            for to, what in ((('nope',), 'an unknown server'), (('part/bad',), 'a malformed namespace')):
                p = mj('-c', cfg, 'replay', '--source', 'old', '--since', first, '--to', to[0])
                lines = p.stderr.decode().splitlines()
                ck.check(p.returncode == 2 and len(lines) == 1, '%s is refused with one line: %r' % (what, lines))
            p = mj('-j', j, 'replay', '--source', 'old', '--to', whole.uri)
            ck.check(p.returncode == 2, 'replay without --since is bad usage')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ck.done()


if __name__ == '__main__':
    sys.exit(main())
