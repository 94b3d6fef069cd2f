#!/usr/bin/python3
"""Issue 2, acceptance 1 and 2: mmm-journal import-bson / export-bson / dump
round-trip every real oplog file of fixtures/oplog byte for byte, refuse the
two with hand-appended repeated timestamps (importing them without the
repeats under --skip-existing), and `zstd -dc FILE.mmmseg` equals export-bson
for the same range."""
import glob
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
from jlib import FIX, MJ, check, mj, one_line, split_docs, ts_of, ts_str  # noqa: E402


def gen_oplog(n, seed, sec=1700000000):
    """N synthetic insert entries, strictly ascending ts, ~300 bytes each."""
    rnd = random.Random(seed)
    ui = bson.Binary(uuid.UUID(int=rnd.getrandbits(128)).bytes, 4)
    text = ''.join(rnd.choice('abcdefgh') for _ in range(4096))
    out, inc = [], 0
    for i in range(n):
        inc += 1
        if inc > rnd.randint(50, 400):
            sec, inc = sec + 1, 1
        k = rnd.randrange(3800)
        doc = {'op': 'i', 'ns': 'test.c%d' % (i % 3), 'ui': ui,
               'o': {'_id': i, 'name': 'user%06d' % rnd.randrange(10 ** 6),
                     'pad': text[k:k + rnd.randint(50, 250)]},
               'ts': Timestamp(sec, inc), 't': Int64(3), 'v': Int64(2)}
        out.append(bson.BSON.encode(doc))
    return out


def canonical(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def dump_json(p):
    return [json.loads(line) for line in p.stdout.decode().splitlines() if line.strip()]


def src_uuid(name):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, 'mmm-test/' + name))


def test_fixtures(tmp):
    jdir = os.path.join(tmp, 'j')
    files = sorted(glob.glob(os.path.join(FIX, 'oplog', '*.bson')))
    check(len(files) == 25, '25 oplog fixtures, found %d' % len(files))
    ascending, refused = [], []
    for f in files:
        with open(f, 'rb') as fh:
            docs = split_docs(fh.read())
        ts = [ts_of(d) for d in docs]
        (ascending if all(a < b for a, b in zip(ts, ts[1:])) else refused).append(f)
    check(len(ascending) == 23, '23 strictly ascending fixtures, found %d' % len(ascending))
    check(sorted(os.path.basename(f) for f in refused) ==
          ['mongorestore_testdata_commit_indexes_build_oplog.bson',
           'mongorestore_testdata_create_indexes_oplog.bson'], 'the two hand-appended files')

    total = 0
    for n, f in enumerate(ascending):
        base = os.path.basename(f)[:-5]
        name = 'fx%02d' % n
        with open(f, 'rb') as fh:
            data = fh.read()
        if n == 0:   # one of them through stdin
            p = mj('-j', jdir, 'import-bson', '-', '--source', src_uuid(name), '--name', name,
                   stdin=data)
        else:
            p = mj('-j', jdir, 'import-bson', f, '--source', src_uuid(name), '--name', name)
        ndocs = len(split_docs(data))
        total += ndocs
        check(p.returncode == 0 and one_line(p) and 'imported %d entr%s' % (ndocs, 'y' if ndocs == 1 else 'ies') in p.err,
              '%s: import: rc %d: %s' % (base, p.returncode, p.err))
        out = os.path.join(tmp, name + '.out')
        p = mj('-j', jdir, 'export-bson', '--source', name, '-o', out)
        with open(out, 'rb') as fh:
            check(p.returncode == 0 and fh.read() == data, '%s: export-bson byte-identical' % base)
        p = mj('-j', jdir, 'export-bson', '--source', src_uuid(name))
        check(p.returncode == 0 and p.stdout == data, '%s: export-bson by uuid to stdout' % base)
        want = canonical(os.path.join(FIX, 'oplog', 'decoded', base + '.canonical.jsonl'))
        p = mj('-j', jdir, 'dump', '--source', name, '--format', 'canonical')
        check(p.returncode == 0 and dump_json(p) == want,
              '%s: dump --format canonical equals the decoded .canonical.jsonl' % base)

    p = mj('-j', jdir, 'verify')
    check(p.returncode == 0 and p.stdout.decode().strip().endswith('%d entries' % total),
          'verify after the round trips: %s%s' % (p.stdout.decode(), p.err))

    # The two with repeated timestamps: refused, one line naming the first
    # out-of-order entry, journal unchanged; then --skip-existing.
    for f in refused:
        before = mj('-j', jdir, 'stat', '--json').stdout
        base = os.path.basename(f)[:-5]
        with open(f, 'rb') as fh:
            data = fh.read()
        docs = split_docs(data)
        ts = [ts_of(d) for d in docs]
        bad = next(i for i in range(1, len(ts)) if ts[i] <= ts[i - 1])
        offset = sum(len(d) for d in docs[:bad])
        name = 'dup-' + base
        p = mj('-j', jdir, 'import-bson', f, '--source', src_uuid(name), '--name', name)
        check(p.returncode == 1 and one_line(p), '%s: refused with one line: %d %s' %
              (base, p.returncode, p.err))
        check('entry %d (offset %d)' % (bad + 1, offset) in p.err and ts_str(ts[bad]) in p.err
              and ts_str(ts[bad - 1]) in p.err, '%s: message names entry %d: %s' % (base, bad + 1, p.err))
        check(mj('-j', jdir, 'stat', '--json').stdout == before, '%s: journal unchanged' % base)
        p = mj('-j', jdir, 'dump', '--source', name)
        check(p.returncode == 1 and 'no source' in p.err, '%s: no source recorded' % base)

        keep, high = [], (-1, -1)
        for d, t in zip(docs, ts):
            if t > high:
                keep.append(d)
                high = t
        p = mj('-j', jdir, 'import-bson', f, '--source', src_uuid(name), '--name', name,
               '--skip-existing')
        check(p.returncode == 0 and 'imported %d entries' % len(keep) in p.err
              and 'skipped %d' % (len(docs) - len(keep)) in p.err,
              '%s: --skip-existing imports without the repeats: %s' % (base, p.err))
        p = mj('-j', jdir, 'export-bson', '--source', name)
        check(p.returncode == 0 and p.stdout == b''.join(keep), '%s: export without repeats' % base)
        want = canonical(os.path.join(FIX, 'oplog', 'decoded', base + '.canonical.jsonl'))
        want = [w for w, d in zip(want, docs) if d in keep]
        p = mj('-j', jdir, 'dump', '--source', name, '--format', 'canonical')
        check(p.returncode == 0 and dump_json(p) == want, '%s: dump of the kept entries' % base)

    # dump without --source: every source, sorted by name, one after another.
    names = sorted(['fx%02d' % n for n in range(len(ascending))] +
                   ['dup-' + os.path.basename(f)[:-5] for f in refused])
    want = b''.join(mj('-j', jdir, 'export-bson', '--source', n).stdout for n in names)
    p = mj('-j', jdir, 'dump', '--format', 'bson')
    check(p.returncode == 0 and p.stdout == want, 'dump --format bson of every source by name')

    # Importing what the journal already holds: refused; --skip-existing: nothing.
    f = ascending[-1]
    before = mj('-j', jdir, 'stat', '--json').stdout
    p = mj('-j', jdir, 'import-bson', f, '--source', 'fx%02d' % (len(ascending) - 1))
    check(p.returncode == 1 and one_line(p) and 'last ts the journal holds' in p.err,
          'overlap with the journal refused: %s' % p.err)
    p = mj('-j', jdir, 'import-bson', f, '--source', 'fx%02d' % (len(ascending) - 1),
           '--skip-existing')
    check(p.returncode == 0 and 'imported 0 entries' in p.err, 'skip-existing, all held: %s' % p.err)
    check(mj('-j', jdir, 'stat', '--json').stdout == before, 'journal unchanged by re-imports')


def test_resume_and_ranges(tmp):
    """A partial import continued with --skip-existing; dump filters and ranges."""
    jdir = os.path.join(tmp, 'r')
    f = os.path.join(FIX, 'oplog', 'mongorestore_testdata_timeseries_tests_ts_dump_with_oplog_oplog.bson')
    with open(f, 'rb') as fh:
        data = fh.read()
    docs = split_docs(data)
    half = os.path.join(tmp, 'half.bson')
    with open(half, 'wb') as fh:
        fh.write(b''.join(docs[:400]))
    sid = src_uuid('ts')
    p = mj('-j', jdir, 'import-bson', half, '--source', sid, '--name', 'ts')
    check(p.returncode == 0, 'import of the first 400 entries: %s' % p.err)
    p = mj('-j', jdir, 'import-bson', f, '--source', 'ts', '--skip-existing')
    check(p.returncode == 0 and 'imported 472 entries' in p.err and 'skipped 400' in p.err,
          'resume with --skip-existing: %s' % p.err)
    p = mj('-j', jdir, 'export-bson', '--source', 'ts')
    check(p.stdout == data, 'resumed import exports the whole file')

    ts = [ts_of(d) for d in docs]
    lo, hi = 100, 700
    p = mj('-j', jdir, 'export-bson', '--source', 'ts', '--since', ts_str(ts[lo]), '--until',
           ts_str(ts[hi]))
    check(p.returncode == 0 and p.stdout == b''.join(docs[lo:hi + 1]), 'export-bson --since/--until')
    p = mj('-j', jdir, 'dump', '--since', ts_str(ts[lo]), '--limit', '7', '--format', 'bson')
    check(p.returncode == 0 and p.stdout == b''.join(docs[lo:lo + 7]), 'dump --since --limit')
    decoded = [bson.BSON(d).decode() for d in docs]
    want = [d for d in docs if bson.BSON(d).decode()['op'] == 'u'][:5]
    p = mj('-j', jdir, 'dump', '--op', 'u', '--ns', 'timeseries_test.system.buckets.*',
           '--limit', '5', '--format', 'bson')
    check(p.returncode == 0 and p.stdout == b''.join(want), 'dump --op --ns')
    p = mj('-j', jdir, 'dump', '--ns', 'nothing.*')
    check(p.returncode == 0 and p.stdout == b'', 'dump --ns matching nothing')
    p = mj('-j', jdir, 'dump', '--op', 'i,d', '--format', 'canonical')
    ops = [json.loads(line)['op'] for line in p.stdout.decode().splitlines()]
    check(p.returncode == 0 and len(ops) == sum(1 for d in decoded if d['op'] in 'id')
          and set(ops) <= {'i', 'd'}, 'dump --op i,d')
    p = mj('-j', jdir, 'dump', '--limit', '3')
    lines = p.stdout.decode().splitlines()
    check(p.returncode == 0 and len(lines) == 3 and json.loads(lines[0])['ts'] ==
          {'$timestamp': {'t': ts[0][0], 'i': ts[0][1]}}, 'dump relaxed JSON by default')
    iso = '2021-06-14T22:59:10Z'
    p1 = mj('-j', jdir, 'export-bson', '--source', 'ts', '--since', iso)
    p2 = mj('-j', jdir, 'export-bson', '--source', 'ts', '--since', '1623711550')
    check(p1.returncode == 0 and p1.stdout == p2.stdout and p1.stdout ==
          b''.join(d for d, t in zip(docs, ts) if t >= (1623711550, 0)), 'ISO --since equals seconds')


def test_segments_equal_export(tmp):
    """Acceptance 2: zstd -dc FILE.mmmseg == export-bson for the same range."""
    jdir = os.path.join(tmp, 's')
    docs = gen_oplog(4500, 2)
    data = b''.join(docs)
    inp = os.path.join(tmp, 'gen.bson')
    with open(inp, 'wb') as fh:
        fh.write(data)
    p = mj('-j', jdir, 'import-bson', inp, '--source', src_uuid('gen'), '--name', 'gen')
    check(p.returncode == 0, 'import generated oplog: %s' % p.err)
    st = json.loads(mj('-j', jdir, 'stat', '--json').stdout)
    check(st['sources'][0]['blocks'] >= 4, 'several blocks: %s' % st['sources'][0]['blocks'])
    ts = [ts_of(d) for d in docs]
    for what, lo, hi in (('whole source', None, None), ('middle range', 1500, 2600),
                         ('one entry', 3333, 3333), ('open end', 4000, None)):
        rng = []
        if lo is not None:
            rng += ['--since', ts_str(ts[lo])]
        if hi is not None:
            rng += ['--until', ts_str(ts[hi])]
        seg = os.path.join(tmp, 'x.mmmseg')
        p = mj('-j', jdir, 'ship', '--source', 'gen', '-o', seg, *rng)
        check(p.returncode == 0 and one_line(p), '%s: ship: %s' % (what, p.err))
        z = subprocess.run(['zstd', '-dcq', seg], stdout=subprocess.PIPE)
        check(z.returncode == 0, '%s: zstd -dc reads the segment' % what)
        got = split_docs(z.stdout)
        if not check(len(got) > 0, '%s: segment holds entries' % what):
            continue
        first, last = ts_of(got[0]), ts_of(got[-1])
        p = mj('-j', jdir, 'export-bson', '--source', 'gen', '--since', ts_str(first), '--until',
               ts_str(last))
        check(p.returncode == 0 and p.stdout == z.stdout,
              '%s: zstd -dc segment == export-bson %s..%s' % (what, ts_str(first), ts_str(last)))
        check(first <= ts[lo or 0] and last >= ts[-1 if hi is None else hi],
              '%s: the segment covers the range' % what)
        if lo is None:
            check(z.stdout == data, 'whole source: segment decompresses to the input')
        else:
            check(len(got) < len(docs), '%s: only the blocks covering the range' % what)
    p = mj('-j', jdir, 'ship', '--source', 'gen', '-o', '-')
    z = subprocess.run(['zstd', '-dcq'], input=p.stdout, stdout=subprocess.PIPE)
    check(p.returncode == 0 and z.stdout == data, 'ship -o - writes the segment to stdout')

    # prune drops whole blocks older than TS, never the newest block.
    nblocks = st['sources'][0]['blocks']
    p = mj('-j', jdir, 'prune', '--before', ts_str(ts[2500]))
    check(p.returncode == 0 and 'pruned' in p.err, 'prune: %s' % p.err)
    st2 = json.loads(mj('-j', jdir, 'stat', '--json').stdout)['sources'][0]
    e = mj('-j', jdir, 'export-bson', '--source', 'gen').stdout
    held = split_docs(e)
    check(0 < st2['blocks'] < nblocks and e == data[len(data) - len(e):] and
          ts_of(held[0]) <= ts[2500] and st2['entries'] == len(held) and
          st2['first_ts'] == ts_str(ts_of(held[0])),
          'prune kept the blocks from the one holding the cut: %d of %d' % (st2['blocks'], nblocks))
    p = mj('-j', jdir, 'prune', '--before', 'now')
    st3 = json.loads(mj('-j', jdir, 'stat', '--json').stdout)['sources'][0]
    e = mj('-j', jdir, 'export-bson', '--source', 'gen').stdout
    check(p.returncode == 0 and st3['blocks'] == 1 and len(e) > 0 and data.endswith(e),
          'prune never drops the newest block')
    v = mj('-j', jdir, 'verify')
    check(v.returncode == 0, 'verify after prune: %s%s' % (v.stdout.decode(), v.err))


def main():
    if not os.access(MJ, os.X_OK):
        print('FAIL: %s not built' % MJ)
        print('0 passed, 1 failed')
        return 1
    tmp = tempfile.mkdtemp(prefix='mmm-rt-')
    try:
        for t in (test_fixtures, test_resume_and_ranges, test_segments_equal_export):
            try:
                t(tmp)
            except Exception as e:   # a crash of the test counts as a failure
                import traceback
                traceback.print_exc()
                check(False, '%s raised %r' % (t.__name__, e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return jlib.report()


if __name__ == '__main__':
    sys.exit(main())
