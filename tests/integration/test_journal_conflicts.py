#!/usr/bin/python3
"""Issue 7: `mmm-journal conflicts` lists the conflict log, and `mmm status`
counts it.  The records are written straight into a journal by the unit
binary test_clog (`test_clog write JDIR < records.jsonl`, stamp.h's
clog_key/clog_value, as mmm-apply writes them); then: the text and --json
forms, names from the journal, from the config (-c) or as UUIDs, --since and
--ns, an empty log, a missing journal, an unreadable record, bad usage, and
`mmm status` "conflicts_logged"."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jlib  # noqa: E402
from jlib import BIN, FIX, check, mj, one_line  # noqa: E402

CLOG = os.path.join(os.path.dirname(BIN), 'tests', 'test_clog')
MMM = os.path.join(BIN, 'mmm')
ID_A = '2c88ae84-7cb9-40f7-835d-c05e981f564d'   # in the journal, as server_a
ID_B = '0d9c284b-b47c-40b5-932c-547b8685edd0'   # only in the config, as server_b
ID_C = 'a1b2c3d4-0000-4000-8000-00000000000c'   # nowhere: shown as its UUID
FIXTURE = 'mongorestore_testdata_oplog_partial_skips_oplog.bson'
ISO = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')
STAMP_KEYS = ['origin', 'origin_uuid', 'ts', 'wall', 'k']


def stamp(origin, ts, wall, k=0):
    return {'origin': origin, 'ts': ts, 'wall': wall, 'k': k}


# (ns, {_id}, master, late, newer, how, base, result, at); walls in ms
RECORDS = [
    ('test.docs', {'_id': 5}, ID_B, stamp(ID_A, '1764403200:3', 1764403200123),
     stamp(ID_B, '1764403200:7', 1764403200456, 1), 'insert',
     stamp(ID_B, '1764403100:1', 1764403100000), 'replaced', 1764403201000),
    # the same document, a later late write: listed after the first
    ('test.docs', {'_id': 5}, ID_B, stamp(ID_A, '1764403300:1', 1764403300000),
     stamp(ID_B, '1764403300:2', 1764403300500), 'replacement',
     stamp(ID_B, '1764403300:2', 1764403300500), 'replaced', 1764403301000),
    ('test.docs', {'_id': 'doc one'}, ID_A, stamp(ID_B, '1764403250:1', 1764403250000, 2),
     stamp(ID_A, '1764403250:9', 1764403250001), 'delete',
     stamp(ID_A, '1764403250:9', 1764403250001), 'deleted', 1764403251000),
    ('other.coll', {'_id': {'$oid': '5f0000000000000000000001'}}, ID_C,
     stamp(ID_A, '1764403400:4', 1764403400000), stamp(ID_C, '1764403400:5', 1764403400007),
     'degraded', None, 'replaced', 1764403402000),
]


def record_json(r):
    ns, id_, master, late, newer, how, base, result, at = r
    d = {'ns': ns, 'id': id_, 'master': master, 'late': late, 'newer': newer, 'how': how,
         'result': result, 'at': at}
    if base:
        d['base'] = base
    return json.dumps(d)


def write_records(jdir, lines):
    p = subprocess.run([CLOG, 'write', jdir], input='\n'.join(lines).encode() + b'\n',
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    return check(p.returncode == 0, 'test_clog write: %r' % p.stderr)


def iso_ms(ms):
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ms // 1000)) + '.%03dZ' % (ms % 1000)


def want_id(id_):
    """The _id as relaxed Extended JSON parses: {'$oid': ...} stays as it is."""
    return id_['_id']


def check_stamp(what, got, want, names):
    if not check(isinstance(got, dict) and list(got.keys()) == STAMP_KEYS,
                 '%s: keys %r' % (what, got)):
        return
    check(got['origin_uuid'] == want['origin'], '%s: origin_uuid %r' % (what, got))
    check(got['origin'] == names.get(want['origin'], want['origin']), '%s: origin %r' % (what, got))
    check(got['ts'] == want['ts'], '%s: ts %r' % (what, got))
    check(got['wall'] == iso_ms(want['wall']) and ISO.match(got['wall']), '%s: wall %r' % (what, got))
    check(got['k'] == want['k'], '%s: k %r' % (what, got))


def parse_json_lines(p, what):
    out = []
    for line in p.stdout.decode().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            check(False, '%s: not JSON: %r' % (what, line))
    return out


def check_json(p, want, names, what):
    check(p.returncode == 0 and p.err == '', '%s: rc %d, %r' % (what, p.returncode, p.err))
    got = parse_json_lines(p, what)
    check(len(got) == len(want), '%s: %d records, want %d' % (what, len(got), len(want)))
    for g, r in zip(got, want):
        ns, id_, master, late, newer, how, base, result, at = r
        keys = ['ns', '_id', 'master', 'late', 'newer', 'how'] + (['base'] if base else []) + \
            ['result', 'at']
        if not check(list(g.keys()) == keys, '%s: keys %r' % (what, list(g.keys()))):
            continue
        check(g['ns'] == ns and g['_id'] == want_id(id_), '%s: ns/_id %r' % (what, g))
        check(g['master'] == names.get(master, master), '%s: master %r' % (what, g['master']))
        check_stamp(what + ' late', g['late'], late, names)
        check_stamp(what + ' newer', g['newer'], newer, names)
        if base:
            check_stamp(what + ' base', g['base'], base, names)
        check(g['how'] == how and g['result'] == result, '%s: how/result %r' % (what, g))
        check(g['at'] == iso_ms(at), '%s: at %r' % (what, g['at']))
    return got


def main():
    tmp = tempfile.mkdtemp(prefix='mmm-test-jconflicts-')
    ok = False
    try:
        jdir = os.path.join(tmp, 'j')
        cfg = os.path.join(tmp, 'c.yml')
        with open(cfg, 'w') as fh:
            fh.write("server_a:\n  id: '%s'\n  uri: 'mongodb://127.0.0.1:1/?replicaSet=a'\n"
                     "server_b:\n  id: '%s'\n  uri: 'mongodb://127.0.0.1:2/?replicaSet=b'\n"
                     "journal:\n  path: ./j\n" % (ID_A, ID_B))

        # a missing journal: one line naming it, exit 1
        p = mj('-j', jdir, 'conflicts')
        check(p.returncode == 1 and one_line(p) and jdir in p.err and p.stdout == b'',
              'missing journal: rc %d, %r' % (p.returncode, p.err))
        p = mj('-j', jdir, 'conflicts', '--json')
        check(p.returncode == 1 and one_line(p) and jdir in p.err, 'missing journal, --json: %r' % p.err)

        # a journal with a source, empty log: no output at all
        p = mj('-j', jdir, 'import-bson', os.path.join(FIX, 'oplog', FIXTURE), '--source', ID_A,
               '--name', 'server_a')
        check(p.returncode == 0, 'import-bson: %r' % p.err)
        for args in ([], ['--json'], ['--since', '1', '--ns', '*']):
            p = mj('-j', jdir, 'conflicts', *args)
            check(p.returncode == 0 and p.stdout == b'' and p.err == '',
                  'empty log %r: rc %d, %r %r' % (args, p.returncode, p.stdout, p.err))
        p = subprocess.run([MMM, '-c', cfg, 'status', '--json'], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        st = json.loads(p.stdout.decode()) if p.returncode == 0 else {}
        check(st.get('conflicts_logged') == 0, 'status, empty log: %r %r' % (p.stdout, p.stderr))
        p = subprocess.run([MMM, '-c', cfg, 'status'], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        check(p.returncode == 0 and b'conflicts logged' not in p.stdout,
              'status text, empty log: no conflict line: %r' % p.stdout)

        # the records
        if not write_records(jdir, [record_json(r) for r in RECORDS]):
            return
        p = mj('-j', jdir, 'conflicts', '--json')
        got = parse_json_lines(p, 'order')
        # listed by ns, then document, then late stamp
        order = [(g['ns'], json.dumps(g['_id']), g['late']['ts']) for g in got]
        check([o[0] for o in order] == sorted(o[0] for o in order), 'grouped by ns: %r' % order)
        fives = [o[2] for o in order if o[1] == '5']
        check(fives == ['1764403200:3', '1764403300:1'], 'one document in stamp order: %r' % fives)
        byid = {(r[0], json.dumps(want_id(r[1]))): [] for r in RECORDS}
        for r in RECORDS:
            byid[(r[0], json.dumps(want_id(r[1])))].append(r)
        listed = []
        for o in order:
            listed.append(byid[(o[0], o[1])].pop(0))

        # --json with -j: names the journal knows, else UUIDs
        check_json(p, listed, {ID_A: 'server_a'}, '--json -j')
        # with -c: the config's names too
        p = mj('-c', cfg, 'conflicts', '--json')
        check_json(p, listed, {ID_A: 'server_a', ID_B: 'server_b'}, '--json -c')

        # text: one line per record, same order, stable wording
        p = mj('-c', cfg, 'conflicts')
        lines = p.stdout.decode().splitlines()
        check(p.returncode == 0 and p.err == '' and len(lines) == len(RECORDS),
              'text: rc %d, %d lines, %r' % (p.returncode, len(lines), p.err))
        want0 = ('2025-11-29T08:00:01.000Z test.docs _id=5 on server_b: write of server_a at '
                 '1764403200:3 (wall 2025-11-29T08:00:00.123Z) came after server_b\'s at '
                 '1764403200:7 op 1 (wall 2025-11-29T08:00:00.456Z); re-derived from insert of '
                 'server_b at 1764403100:1 (wall 2025-11-29T07:58:20.000Z): replaced')
        check(want0 in lines, 'text line of test.docs 5: %r' % lines)
        deg = [l for l in lines if l.split()[1] == 'other.coll']
        check(len(deg) == 1 and deg[0].startswith(
            '2025-11-29T08:03:22.000Z other.coll _id={"$oid":"5f0000000000000000000001"} on %s: '
            'write of server_a at 1764403400:4 ' % ID_C) and
            deg[0].endswith('; degraded (no full image in the journal): re-derived from the '
                            'document on %s: replaced' % ID_C), 'degraded text line: %r' % deg)
        s = [l for l in lines if '_id="doc one"' in l]
        check(len(s) == 1 and ' on server_a: write of server_b at 1764403250:1 op 2 ' in s[0] and
              s[0].endswith('re-derived from delete of server_a at 1764403250:9 (wall '
                            '2025-11-29T08:00:50.001Z): deleted'), 'string _id text line: %r' % s)
        check([l.split()[1] for l in lines] == [g['ns'] for g in got], 'text and JSON in one order')

        # --since: late ts >= TS, inclusive; TS forms of ts.h
        for since, n in (('1764403250:1', 3), ('1764403250:2', 2), ('1764403400', 1),
                         ('1764403400:5', 0), ('2025-11-29T08:00:00Z', 4), ('1', 4)):
            p = mj('-j', jdir, 'conflicts', '--json', '--since', since)
            got = parse_json_lines(p, '--since %s' % since)
            low = tuple(map(int, (since + ':0').split(':')[:2])) if since[0] != '2' else (0, 0)
            check(p.returncode == 0 and len(got) == n and
                  all(tuple(map(int, g['late']['ts'].split(':'))) >= low for g in got),
                  '--since %s: %d records, want %d' % (since, len(got), n))
        # --ns: fnmatch
        for glob, n in (('test.*', 3), ('test.docs', 3), ('other.coll', 1), ('*', 4), ('*.c*', 1),
                        ('test', 0), ('nosuch.*', 0)):
            p = mj('-j', jdir, 'conflicts', '--ns', glob)
            check(p.returncode == 0 and len(p.stdout.decode().splitlines()) == n and p.err == '',
                  '--ns %s: %r' % (glob, p.stdout))
        p = mj('-j', jdir, 'conflicts', '--json', '--ns', 'test.*', '--since', '1764403260')
        got = parse_json_lines(p, '--ns --since')
        check([g['late']['ts'] for g in got] == ['1764403300:1'], '--ns and --since: %r' % got)

        # mmm status counts the records
        p = subprocess.run([MMM, '-c', cfg, 'status', '--json'], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        st = json.loads(p.stdout.decode()) if p.returncode == 0 else {}
        check(st.get('conflicts_logged') == 4, 'status --json conflicts_logged: %r' % st)
        p = subprocess.run([MMM, '-c', cfg, 'status'], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        check(p.returncode == 0 and b'\nconflicts logged: 4 ' in p.stdout, 'status text: %r' % p.stdout)

        # an unreadable record: one warning naming its ns, the others still listed, exit 1
        if not write_records(jdir, ['{"corrupt": "bad.ns", "k": 7}']):
            return
        p = mj('-j', jdir, 'conflicts', '--json')
        got = parse_json_lines(p, 'with a bad record')
        check(p.returncode == 1 and one_line(p) and "'bad.ns'" in p.err and len(got) == 4,
              'bad record: rc %d, %r, %d records' % (p.returncode, p.err, len(got)))
        p = mj('-j', jdir, 'conflicts', '--ns', 'test.*')
        check(p.returncode == 0 and p.err == '' and len(p.stdout.splitlines()) == 3,
              'bad record outside --ns is not read: %r' % p.err)

        # bad usage: exit 2, one line
        for args in (['--since', 'yesterday'], ['--source', 'server_a'], ['--ns'], ['extra']):
            p = mj('-j', jdir, 'conflicts', *args)
            check(p.returncode == 2 and one_line(p), 'usage %r: rc %d, %r' % (args, p.returncode, p.err))
        p = mj('conflicts', '--help')
        check(p.returncode == 0 and b'--since TS' in p.stdout, 'conflicts --help')
        p = mj('--help')
        check(p.returncode == 0 and b'  conflicts ' in p.stdout, 'listed in --help')
        ok = True
    finally:
        if ok and not os.environ.get('MMM_KEEP'):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print('scratch directory kept: %s' % tmp)


if __name__ == '__main__':
    main()
    sys.exit(jlib.report())
