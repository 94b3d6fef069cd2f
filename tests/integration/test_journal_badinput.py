#!/usr/bin/python3
"""Issue 2, acceptance 6: bad input to mmm-journal -- malformed BSON, bad TS
values, unknown options, missing or unreadable journals and files, configs
with YAML errors or unknown keys -- gets one clear line on stderr and exit
status 1 or 2, and leaves the journal unchanged (or absent).  Each case is
its own check."""
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
from jlib import FIX, MJ, check, mj, one_line, split_docs  # noqa: E402


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


import hashlib
import re

SID = '2c88ae84-7cb9-40f7-835d-c05e981f564d'
FIXTURE = 'mongorestore_testdata_oplog_partial_skips_oplog.bson'


def state(jdir):
    """Everything that must not change: stat, verify, the entries, data.mdb's bytes."""
    s = mj('-j', jdir, 'stat', '--json')
    v = mj('-j', jdir, 'verify')
    e = mj('-j', jdir, 'export-bson', '--source', SID)
    with open(os.path.join(jdir, 'data.mdb'), 'rb') as fh:
        h = hashlib.sha256(fh.read()).hexdigest()
    return (s.returncode, s.stdout, v.returncode, v.stdout, e.returncode, e.stdout, h)


def refused(what, p, rc, jdir=None, before=None, absent=None, want=None):
    """One check per case: exit status, exactly one line, nothing changed."""
    problems = []
    if p.returncode not in ((1, 2) if rc is None else (rc,)):
        problems.append('exit %d, expected %s' % (p.returncode, rc or '1 or 2'))
    if not one_line(p):
        problems.append('stderr is not one line')
    elif not p.err.startswith('mmm-journal: '):
        problems.append('message lacks the program name')
    if want and not re.search(want, p.err):
        problems.append('message does not match %r' % want)
    if jdir and state(jdir) != before:
        problems.append('journal changed')
    if absent and os.path.exists(absent):
        problems.append('%s was created' % absent)
    check(not problems, '%s: %s: %r' % (what, '; '.join(problems), p.err))


def write(path, data):
    with open(path, 'wb') as fh:
        fh.write(data)
    return path


def with_field(raw, **changes):
    d = bson.BSON(raw).decode()
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return bson.BSON.encode(d)


def main():
    if not os.access(MJ, os.X_OK):
        print('FAIL: %s not built' % MJ)
        print('0 passed, 1 failed')
        return 1
    tmp = tempfile.mkdtemp(prefix='mmm-bad-')
    try:
        run(tmp)
    except Exception as e:
        import traceback
        traceback.print_exc()
        check(False, 'raised %r' % e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return jlib.report()


def run(tmp):
    j = os.path.join(tmp, 'j')
    absent = os.path.join(tmp, 'absent')
    fx = os.path.join(FIX, 'oplog', FIXTURE)
    with open(fx, 'rb') as fh:
        data = fh.read()
    docs = split_docs(data)
    half = write(os.path.join(tmp, 'half.bson'), b''.join(docs[:10]))
    p = mj('-j', j, 'import-bson', half, '--source', SID, '--name', 'src')
    check(p.returncode == 0, 'setup import: %s' % p.err)
    before = state(j)
    rest = docs[10:]

    # ---- malformed BSON (the rest of the file, spoiled) ---------------------
    d1 = rest[1]
    bad_inputs = [
        ('bad length 3', rest[0] + (3).to_bytes(4, 'little') + d1[4:] + b''.join(rest[2:]),
         r'entry 2 \(offset %d\) has a bad length 3' % len(rest[0])),
        ('bad length 2^31', (2 ** 31).to_bytes(4, 'little') + rest[0][4:], r'bad length'),
        ('length beyond the end', rest[0] + (len(d1) + 100).to_bytes(4, 'little') + d1[4:],
         r'entry 2 .*truncated'),
        ('truncated tail', b''.join(rest)[:-7], r'entry %d .*truncated' % len(rest)),
        ('truncated inside the length', b''.join(rest) + b'\x10\x00', r'truncated'),
        ('embedded garbage between entries', rest[0] + b'GARBAGE!garbage!' + b''.join(rest[1:]),
         r'entry 2 \(offset %d\)' % len(rest[0])),
        ('garbage inside an entry', rest[0] + d1[:4] + b'\x77' + d1[5:] + b''.join(rest[2:]),
         r'entry 2 .*not valid BSON'),
        ('zeroed bytes inside an entry', rest[0] + d1[:20] + b'\x00' * 12 + d1[32:],
         r'entry 2 .*not valid BSON'),
        ('missing trailing NUL', rest[0] + d1[:-1] + b'\x01', r'entry 2 .*not valid BSON'),
        ('entry without ts', rest[0] + with_field(d1, ts=None), r'entry 2 .*Timestamp'),
        ('ts of the wrong type', rest[0] + with_field(d1, ts=Int64(1)), r'entry 2 .*Timestamp'),
        ('empty document', b'\x05\x00\x00\x00\x00', r'entry 1 .*Timestamp'),
        ('null ts', with_field(rest[0], ts=Timestamp(0, 0)), r'null ts'),
        ('ts repeated inside the input', rest[0] + rest[1] + rest[1], r'entry 3 .*not after'),
        ('ts before what the journal holds', docs[3], r'not after .*journal holds'),
        ('not BSON at all', b'this is not an oplog, just some text\n', r'entry 1'),
    ]
    for what, blob, want in bad_inputs:
        f = write(os.path.join(tmp, 'bad.bson'), blob)
        refused('import-bson, %s' % what, mj('-j', j, 'import-bson', f, '--source', SID), 1,
                j, before, want=want)
        if 'journal holds' not in want:
            refused('import-bson into an absent journal, %s' % what,
                    mj('-j', absent, 'import-bson', f, '--source', SID), 1, absent=absent, want=want)
            shutil.rmtree(absent, ignore_errors=True)
    blob = bad_inputs[3][1]
    refused('import-bson - (stdin), truncated tail',
            mj('-j', j, 'import-bson', '-', '--source', SID, stdin=blob), 1, j, before,
            want=r'stdin: entry')
    refused('import-bson, bad tail under --skip-existing',
            mj('-j', j, 'import-bson', write(os.path.join(tmp, 'b2.bson'), data[:-3]), '--source',
               SID, '--skip-existing'), 1, j, before, want='truncated')

    # ---- bad TS values ------------------------------------------------------
    seg = os.path.join(tmp, 'x.mmmseg')
    for what, args in [
            ('--since yesterday', ['dump', '--since', 'yesterday']),
            ('--until month 13', ['export-bson', '--source', SID, '--until', '2026-13-01T00:00:00Z']),
            ('--since 1:2:3', ['ship', '--source', SID, '--since', '1:2:3', '-o', seg]),
            ('--before now-5x', ['prune', '--before', 'now-5x']),
            ('--before empty', ['prune', '--before', '']),
            ('--since too many seconds', ['dump', '--since', '99999999999']),
            ('--until without a zone', ['dump', '--until', '2026-11-29T05:00:00']),
            ('--since Feb 30', ['dump', '--since', '2026-02-30T00:00:00Z']),
            ('--until before --since', ['dump', '--since', '20', '--until', '10']),
            ('--since negative', ['export-bson', '--source', SID, '--since', '-5'])]:
        refused('bad TS %s' % what, mj('-j', j, *args), 2, j, before)
    check(not os.path.exists(seg), 'no segment written after bad TS values')

    # ---- unknown options and other misuse -----------------------------------
    for what, args in [
            ('global --bogus', ['--bogus', 'stat']),
            ('stat --frobnicate', ['stat', '--frobnicate']),
            ('import-bson --force', ['import-bson', half, '--source', SID, '--force']),
            ('unknown command', ['frob']),
            ('--limit without a value', ['dump', '--limit']),
            ('--limit not a number', ['dump', '--limit', 'ten']),
            ('-o on stat', ['stat', '-o', seg]),
            ('--since on stat', ['stat', '--since', '5']),
            ('import-bson without --source', ['import-bson', half]),
            ('import-bson without a file', ['import-bson', '--source', SID]),
            ('import-bson with two files', ['import-bson', half, half, '--source', SID]),
            ('receive without files', ['receive']),
            ('ship without -o', ['ship', '--source', SID]),
            ('prune without --before', ['prune']),
            ('dump --format xml', ['dump', '--format', 'xml']),
            ('dump --op x', ['dump', '--op', 'x']),
            ('--log-format yaml', ['--log-format', 'yaml', 'stat']),
            ('short option -Z', ['-Z', 'stat']),
            ('new source by bare name', ['import-bson', half, '--source', 'newname'])]:
        refused('misuse: %s' % what, mj('-j', j, *args), 2, j, before)
    refused('no journal given', mj('stat'), 2, want='-c FILE or -j DIR')
    refused('malformed MMM_FAULT', mj('-j', j, 'stat', env={'MMM_FAULT': 'jnl_commit@x:boom'}), 2,
            j, before)
    for cmd in ('import-bson', 'export-bson', 'dump', 'stat', 'verify', 'ship', 'receive', 'prune'):
        p = mj(cmd, '--help')
        check(p.returncode == 0 and p.stdout.startswith(b'usage: mmm-journal') and not p.stderr,
              '%s --help: usage on stdout, exit 0' % cmd)
    p = mj('--help')
    check(p.returncode == 0 and b'import-bson' in p.stdout and not p.stderr, 'mmm-journal --help')

    # ---- missing or unreadable journals and files ---------------------------
    missing = os.path.join(tmp, 'nope')
    for args in (['stat'], ['verify'], ['dump'], ['export-bson', '--source', SID],
                 ['ship', '--source', SID, '-o', seg], ['prune', '--before', '5']):
        refused('missing journal: %s' % args[0], mj('-j', missing, *args), 1, absent=missing,
                want=r"unable to open journal '%s': No such file or directory" % re.escape(missing))
    notdir = write(os.path.join(tmp, 'plainfile'), b'not a journal')
    refused('journal path is a file', mj('-j', notdir, 'stat'), 1)
    junk = os.path.join(tmp, 'junk')
    os.mkdir(junk)
    write(os.path.join(junk, 'data.mdb'), os.urandom(65536))
    refused('journal with a garbage data.mdb', mj('-j', junk, 'stat'), 1,
            want='unable to open journal')
    refused('import into a garbage journal', mj('-j', junk, 'import-bson', half, '--source', SID), 1,
            want='unable to open journal')
    refused('import of a missing file', mj('-j', j, 'import-bson', os.path.join(tmp, 'no.bson'),
                                           '--source', SID), 1, j, before,
            want='No such file or directory')
    refused('import of a missing file, absent journal',
            mj('-j', absent, 'import-bson', os.path.join(tmp, 'no.bson'), '--source', SID), 1,
            absent=absent)
    refused('import of a directory', mj('-j', j, 'import-bson', tmp, '--source', SID), 1, j, before,
            want='Is a directory')
    refused('receive of a missing file', mj('-j', j, 'receive', os.path.join(tmp, 'no.mmmseg')), 1,
            j, before)
    refused('receive of a missing file, absent journal',
            mj('-j', absent, 'receive', os.path.join(tmp, 'no.mmmseg')), 1, absent=absent)
    refused('receive of an oplog.bson', mj('-j', j, 'receive', fx), 1, j, before)
    refused('receive of an empty file', mj('-j', j, 'receive', write(os.path.join(tmp, 'e.mmmseg'),
                                                                      b'')), 1, j, before)
    refused('export to a missing directory',
            mj('-j', j, 'export-bson', '--source', SID, '-o', os.path.join(tmp, 'no', 'x.bson')), 1,
            j, before)
    refused('unknown source', mj('-j', j, 'export-bson', '--source', 'nosuch'), 1, j, before,
            want="no source 'nosuch'")
    if os.geteuid() != 0:   # root reads anything: no permission case to test then
        os.chmod(half, 0)
        refused('unreadable input file', mj('-j', j, 'import-bson', half, '--source', SID), 1,
                j, before, want='Permission denied')
        os.chmod(half, 0o644)

    # ---- configuration ------------------------------------------------------
    good = os.path.join(tmp, 'good.yaml')
    with open(good, 'w') as fh:
        fh.write("server_a:\n  id: '%s'\n  uri: 'mongodb://user:s3cret@127.0.0.1:27019/?replicaSet=a'\n"
                 "journal:\n  path: ./cj\n" % SID)
    cj = os.path.join(tmp, 'cj')
    p = mj('-c', good, 'import-bson', half, '--source', 'server_a')
    check(p.returncode == 0 and os.path.isdir(cj), '-c: import into the config\'s journal: %s' % p.err)
    p = mj('-c', good, 'stat')
    check(p.returncode == 0 and b"source 'server_a'" in p.stdout and b's3cret' not in p.stdout
          and b'user:***@' in p.stdout, '-c: stat names the server, password redacted')
    cbefore = state(cj)
    configs = [
        ('YAML syntax error', "server_a:\n  id: [unclosed\n", r'bad\.yaml:\d+:\d+: '),
        ('YAML tab indentation', "server_a:\n\tid: x\n", r'bad\.yaml:\d+:\d+: '),
        ('unknown key', "server_a:\n  id: '%s'\n  uri: 'mongodb://h/'\n  colour: blue\n"
         "journal: {path: ./cj}\n" % SID, r"bad\.yaml:4:3: .*colour"),
        ('unknown journal key', "server_a:\n  id: '%s'\n  uri: 'mongodb://h/'\n"
         "journal: {path: ./cj, size: 1}\n" % SID, r'bad\.yaml:\d+:\d+: .*size'),
        ('malformed UUID', "server_a:\n  id: 'not-a-uuid'\n  uri: 'mongodb://h/'\n"
         "journal: {path: ./cj}\n", r'bad\.yaml:\d+:\d+: '),
        ('missing uri', "server_a:\n  id: '%s'\njournal: {path: ./cj}\n" % SID, r'bad\.yaml:\d+:\d+: '),
        ('no journal.path', "server_a:\n  id: '%s'\n  uri: 'mongodb://h/'\n" % SID, r'journal'),
    ]
    for what, text, want in configs:
        bad = os.path.join(tmp, 'bad.yaml')
        with open(bad, 'w') as fh:
            fh.write(text)
        refused('config with %s (stat)' % what, mj('-c', bad, 'stat'), 2, cj, cbefore, want=want)
        refused('config with %s (import)' % what,
                mj('-c', bad, 'import-bson', fx, '--source', 'server_a'), 2, cj, cbefore, want=want)
    refused('missing config', mj('-c', os.path.join(tmp, 'none.yaml'), 'stat'), 2,
            want='none.yaml')
    refused('config: source not a server', mj('-c', good, 'import-bson', fx, '--source', 'server_z'),
            2, cj, cbefore, want="server_z")


if __name__ == '__main__':
    sys.exit(main())
