#!/usr/bin/python3
"""Issue 2, acceptance 3 and 4: receiving segments is idempotent, refuses
gaps (one line naming the source and both timestamps) and refuses any
segment with a flipped byte or cut short, leaving the journal unchanged;
verify names the block whose stored bytes in data.mdb were changed."""
import json
import os
import random
import shutil
import sys
import tempfile
import uuid

import bson
from bson.int64 import Int64
from bson.timestamp import Timestamp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jlib  # noqa: E402
from jlib import FIX, MJ, check, mj, one_line, ts_of, ts_str  # noqa: E402


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


def src_uuid(name):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, 'mmm-test/' + name))


def stat_verify(jdir):
    s = mj('-j', jdir, 'stat', '--json')
    v = mj('-j', jdir, 'verify')
    return (s.returncode, s.stdout, v.returncode, v.stdout, v.stderr)


def blocks_of_segment(seg):
    """[(offset, length, first_ts, last_ts)] of the blocks in a segment file (FORMAT.md)."""
    out = []
    check(int.from_bytes(seg[0:4], 'little') == 0x184D2A5D, 'segment header magic')
    i = 8 + int.from_bytes(seg[4:8], 'little')
    while i < len(seg):
        hsize = 8 + int.from_bytes(seg[i + 4:i + 8], 'little')
        zlen = int.from_bytes(seg[i + 80:i + 84], 'little')
        first = int.from_bytes(seg[i + 48:i + 56], 'little')
        last = int.from_bytes(seg[i + 56:i + 64], 'little')
        out.append((i, hsize + zlen, (first >> 32, first & 0xffffffff), (last >> 32, last & 0xffffffff)))
        i += hsize + zlen
    return out


def ship(jdir, source, out, *rng):
    p = mj('-j', jdir, 'ship', '--source', source, '-o', out, *rng)
    check(p.returncode == 0, 'ship %s %s: %s' % (source, ' '.join(rng), p.err))
    with open(out, 'rb') as fh:
        return fh.read()


def write(path, data):
    with open(path, 'wb') as fh:
        fh.write(data)
    return path


def test_receive(tmp):
    a = os.path.join(tmp, 'a')
    docs = gen_oplog(5200, 3)
    sid = src_uuid('gen')
    p = mj('-j', a, 'import-bson', write(os.path.join(tmp, 'gen.bson'), b''.join(docs)),
           '--source', sid, '--name', 'gen')
    check(p.returncode == 0, 'import: %s' % p.err)
    full = ship(a, 'gen', os.path.join(tmp, 'full.mmmseg'))
    blocks = blocks_of_segment(full)
    if not check(len(blocks) >= 5, 'at least 5 blocks: %d' % len(blocks)):
        return
    b1, b2, b3, b4, b5 = blocks[:5]

    def seg_of(lo, hi, name):
        return os.path.join(tmp, name), ship(a, 'gen', os.path.join(tmp, name),
                                             '--since', ts_str(lo[2]), '--until', ts_str(hi[3]))
    s12, d12 = seg_of(b1, b2, 's12.mmmseg')
    s3, d3 = seg_of(b3, b3, 's3.mmmseg')
    s45, d45 = seg_of(b4, b5, 's45.mmmseg')
    check(len(blocks_of_segment(d12)) == 2 and len(blocks_of_segment(d45)) == 2,
          'ship sends the whole blocks of the range')

    b = os.path.join(tmp, 'b')
    p = mj('-j', b, 'receive', s12)
    check(p.returncode == 0 and 'added 2 blocks' in p.err, 'receive 2 blocks: %s' % p.err)
    once = stat_verify(b)
    p = mj('-j', b, 'receive', s12)
    check(p.returncode == 0 and 'added 0 blocks' in p.err and 'skipped 2' in p.err,
          'second receive adds nothing: %s' % p.err)
    check(stat_verify(b) == once, 'second receive leaves stat and verify unchanged')

    p = mj('-j', b, 'receive', s45)
    check(p.returncode == 1 and one_line(p), 'gap refused with one line: %d %s' % (p.returncode, p.err))
    check(sid in p.err and ts_str(b2[3]) in p.err and (ts_str(b3[3]) in p.err or ts_str(b4[2]) in p.err),
          'gap message names the source and both ts (%s, %s): %s' % (ts_str(b2[3]), ts_str(b3[3]), p.err))
    check(stat_verify(b) == once, 'refused gap leaves the journal unchanged')

    g = os.path.join(tmp, 'g')
    shutil.copytree(b, g)
    p = mj('-j', g, 'receive', '--allow-gap', s45)
    check(p.returncode == 0 and 'added 2 blocks' in p.err, 'receive --allow-gap: %s' % p.err)

    # several files, each all or nothing: good, bad, good
    bad = write(os.path.join(tmp, 'bad.mmmseg'), d3[:-1])
    p = mj('-j', b, 'receive', s3, bad, s45)
    check(p.returncode == 1 and len(p.err.splitlines()) == 3 and 'added 1 block' in p.err
          and 'added 2 blocks' in p.err, 'receive good, bad, good: %s' % p.err)
    p = mj('-j', b, 'export-bson', '--source', sid)
    want = b''.join(d for d in docs if ts_of(d) <= b5[3])
    check(p.returncode == 0 and p.stdout == want, 'received entries export like the original')
    p = mj('-j', b, 'verify')
    check(p.returncode == 0 and p.stdout.startswith(b'ok: 5 blocks'), 'verify after receive: %s' % p.stdout)

    # A journal never receives a source it captures (imports) itself.
    before = stat_verify(a)
    p = mj('-j', a, 'receive', s3)
    check(p.returncode == 1 and one_line(p), 'receiving a local source refused: %s' % p.err)
    check(stat_verify(a) == before, 'refused local receive leaves the journal unchanged')
    # --name names a new received source.
    nm = os.path.join(tmp, 'named')
    p = mj('-j', nm, 'receive', '--name', 'site-a-gen', s12)
    st = json.loads(mj('-j', nm, 'stat', '--json').stdout)['sources']
    check(p.returncode == 0 and [(x['name'], x['uuid'], x['kind']) for x in st] ==
          [('site-a-gen', sid, 'received')], 'receive --name: %s' % st)
    p = mj('-j', nm, 'dump', '--source', 'site-a-gen', '--format', 'bson')
    check(p.returncode == 0 and p.stdout == b''.join(d for d in docs if ts_of(d) <= b2[3]),
          'dump of the received source by its name')
    # With -c, a new received source takes its server name from the config.
    cfg = os.path.join(tmp, 'site.yaml')
    with open(cfg, 'w') as fh:
        fh.write("site_a:\n  id: '%s'\n  uri: 'mongodb://127.0.0.1:27019/'\n"
                 "journal:\n  path: ./cfgj\n" % sid)
    p = mj('-c', cfg, 'receive', s12)
    st = json.loads(mj('-c', cfg, 'stat', '--json').stdout)['sources']
    check(p.returncode == 0 and [x['name'] for x in st] == ['site_a'],
          'receive -c names the source after the config: %s %s' % (p.err, st))
    # A missing journal is created by a good segment only.
    n = os.path.join(tmp, 'new')
    p = mj('-j', n, 'receive', bad)
    check(p.returncode == 1 and one_line(p) and not os.path.exists(n),
          'bad segment into an absent journal creates nothing: %s' % p.err)
    return b


def test_corrupt_segments(tmp):
    """Every flipped byte / truncation of a small segment is refused, nothing changes."""
    a = os.path.join(tmp, 'sa')
    docs = [bson.BSON.encode({'op': 'n', 'ns': '', 'o': {'msg': 'periodic noop'},
                              'ts': Timestamp(1700000000 + i, 1), 't': Int64(1), 'v': Int64(2)})
            for i in range(4)]
    sid = src_uuid('small')
    for part in (docs[:3], docs[3:]):
        p = mj('-j', a, 'import-bson', write(os.path.join(tmp, 'small.bson'), b''.join(part)),
               '--source', sid, '--name', 'small')
        check(p.returncode == 0, 'import small part: %s' % p.err)
    full = ship(a, 'small', os.path.join(tmp, 'small.mmmseg'))
    blocks = blocks_of_segment(full)
    check(len(blocks) == 2, 'small source has 2 blocks')
    b1, b2 = blocks
    r = os.path.join(tmp, 'sr')
    p = mj('-j', r, 'receive', write(os.path.join(tmp, 's1.mmmseg'), ship(
        a, 'small', os.path.join(tmp, 's1.mmmseg'), '--until', ts_str(b1[3]))))
    check(p.returncode == 0, 'receive first block')
    seg = ship(a, 'small', os.path.join(tmp, 's2.mmmseg'), '--since', ts_str(b2[2]))
    print('segment of %d bytes: every byte flipped, every truncation' % len(seg))
    before = stat_verify(r)

    def attempt(job):
        i, data = job
        path = os.path.join(tmp, 'bad%d.mmmseg' % i)
        write(path, data)
        p = mj('-j', r, 'receive', path)
        os.unlink(path)
        return p

    n = len(seg)
    jobs = []
    for pos in range(n):   # every byte, one bit each (position-dependent)
        bad = bytearray(seg)
        bad[pos] ^= 1 << (pos % 8)
        jobs.append(('flip byte %d' % pos, bytes(bad)))
    for ln in range(n):    # truncation at every length
        jobs.append(('truncated to %d' % ln, seg[:ln]))
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as ex:
        results = list(ex.map(attempt, enumerate(d for _, d in jobs)))
    wrong = [(what, p.returncode, p.err) for (what, _), p in zip(jobs, results)
             if p.returncode != 1 or not one_line(p)]
    check(not wrong, '%d of %d corrupt segments not refused with one line, e.g. %s' %
          (len(wrong), len(jobs), wrong[:3]))
    check(stat_verify(r) == before, 'stat --json and verify unchanged after %d corrupt segments' % len(jobs))
    p = mj('-j', r, 'receive', os.path.join(tmp, 's2.mmmseg'))
    check(p.returncode == 0 and 'added 1 block' in p.err, 'the intact segment is accepted: %s' % p.err)


def test_corrupt_multiblock(tmp, seg_path):
    """A sample of flips and cuts of a two-block segment (the chain inside it)."""
    e = os.path.join(tmp, 'e')
    p = mj('-j', e, 'import-bson', os.path.join(FIX, 'oplog', 'mongorestore_testdata_oplogs_bson_drop_db.bson'),
           '--source', src_uuid('other'), '--name', 'other')
    check(p.returncode == 0, 'setup of a journal with another source: %s' % p.err)
    with open(seg_path, 'rb') as fh:
        seg = fh.read()
    blocks = blocks_of_segment(seg)
    check(len(blocks) == 2, 'a two-block segment')
    before = stat_verify(e)
    rnd = random.Random(7)
    edges = set()
    for off, ln, _, _ in blocks:   # around each block's header and its end
        edges |= set(range(off, off + 96)) | set(range(off + ln - 8, off + ln))
    flips = sorted(rnd.sample(sorted(edges), 40) + [rnd.randrange(len(seg)) for _ in range(40)])
    cuts = sorted({blocks[1][0], blocks[1][0] - 1, blocks[1][0] + 1} |
                  {rnd.randrange(len(seg)) for _ in range(30)})

    def attempt(job):
        i, data = job
        path = write(os.path.join(tmp, 'mb%d.mmmseg' % i), data)
        p = mj('-j', e, 'receive', path)
        os.unlink(path)
        return p
    jobs = []
    for pos in flips:
        bad = bytearray(seg)
        bad[pos] ^= 0x80 >> (pos % 8)
        jobs.append(('flip byte %d' % pos, bytes(bad)))
    jobs += [('cut at %d' % c, seg[:c]) for c in cuts]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as ex:
        results = list(ex.map(attempt, enumerate(d for _, d in jobs)))
    wrong = [(what, p.returncode, p.err) for (what, _), p in zip(jobs, results)
             if p.returncode != 1 or not one_line(p)]
    check(not wrong, '%d of %d spoiled two-block segments not refused, e.g. %s' %
          (len(wrong), len(jobs), wrong[:3]))
    check(stat_verify(e) == before, 'journal unchanged after %d spoiled two-block segments' % len(jobs))
    p = mj('-j', e, 'receive', seg_path)
    check(p.returncode == 0 and 'added 2 blocks' in p.err, 'the intact two-block segment: %s' % p.err)


def test_verify_flips(tmp, jdir):
    """Acceptance 4: a flipped byte inside a stored block is found and named."""
    sid = src_uuid('gen')
    full = ship(jdir, sid, os.path.join(tmp, 'v.mmmseg'))
    blocks = blocks_of_segment(full)
    mdb = os.path.join(jdir, 'data.mdb')
    with open(mdb, 'rb') as fh:
        pristine = fh.read()
    check(mj('-j', jdir, 'verify').returncode == 0, 'verify ok before flipping')
    rnd = random.Random(4)
    tried = 0
    for k in sorted({0, 1, len(blocks) // 2, len(blocks) - 1}):
        off, ln, first, last = blocks[k]
        blk = full[off:off + ln]
        where, at = [], pristine.find(blk)
        while at >= 0:
            where.append(at)
            at = pristine.find(blk, at + 1)
        if not check(where, 'block %d (%s) found in data.mdb' % (k, ts_str(first))):
            continue
        positions = sorted({0, 8, 20, 30, 44, 52, 60, 70, 76, 82, 88, ln - 1, ln // 2} |
                           {rnd.randrange(ln) for _ in range(6)})
        for pos in positions:
            bad = bytearray(pristine)
            for w in where:
                bad[w + pos] ^= 0x10
            write(mdb, bad)
            p = mj('-j', jdir, 'verify')
            tried += 1
            check(p.returncode == 1 and one_line(p) and ts_str(first) in p.err and
                  ('gen' in p.err or sid in p.err),
                  'verify names block %d (%s) after flipping byte %d: rc %d %s%s' %
                  (k, ts_str(first), pos, p.returncode, p.stdout.decode(), p.err))
            if pos == ln // 2:   # readers refuse the block too; -o leaves no file
                out = os.path.join(tmp, 'corrupt.bson')
                p = mj('-j', jdir, 'export-bson', '--source', sid, '-o', out)
                check(p.returncode == 1 and one_line(p) and ts_str(first) in p.err and
                      not os.path.exists(out) and
                      not [f for f in os.listdir(tmp) if f.startswith('corrupt.bson')],
                      'export-bson of a corrupt block fails, no file left: %s' % p.err)
    write(mdb, pristine)
    check(tried >= 40, 'at least 40 flips tried (%d)' % tried)
    check(mj('-j', jdir, 'verify').returncode == 0, 'verify ok once restored')


def main():
    if not os.access(MJ, os.X_OK):
        print('FAIL: %s not built' % MJ)
        print('0 passed, 1 failed')
        return 1
    tmp = tempfile.mkdtemp(prefix='mmm-seg-')
    try:
        try:
            b = test_receive(tmp)
            test_corrupt_segments(tmp)
            test_corrupt_multiblock(tmp, os.path.join(tmp, 's12.mmmseg'))
            if b:
                test_verify_flips(tmp, b)
        except Exception as e:
            import traceback
            traceback.print_exc()
            check(False, 'raised %r' % e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return jlib.report()


if __name__ == '__main__':
    sys.exit(main())
