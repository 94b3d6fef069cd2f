"""test_fuzz.py — robustness: a fixed-seed stream of random (valid BSON)
commands with wrong types and odd values, and of byte-mutated messages, must
never crash or wedge mongosim (each is answered with ok:0/ok:1 or closes that
connection), and the server exits cleanly afterwards (leak-free under ASan)."""
import os
import random
import socket
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from simlib import Sim, Checker  # noqa: E402

import bson  # noqa: E402
from bson import Int64, ObjectId, Timestamp, Regex  # noqa: E402
from bson.son import SON  # noqa: E402
from bson.codec_options import CodecOptions  # noqa: E402

ck = Checker("fuzz")
rnd = random.Random(int(os.environ.get("MONGOSIM_FUZZ_SEED", "4242")))
N = int(os.environ.get("MONGOSIM_FUZZ_N", "3000"))
CMDS = ["insert", "update", "delete", "find", "getMore", "killCursors", "count", "distinct", "aggregate",
        "findAndModify", "create", "drop", "dropDatabase", "renameCollection", "createIndexes", "dropIndexes",
        "collMod", "listCollections", "listIndexes", "listDatabases", "dbHash", "commitTransaction",
        "abortTransaction", "applyOps", "hello", "isMaster", "ping", "buildInfo", "getParameter",
        "serverStatus", "replSetGetStatus", "startSession", "endSessions", "mongosimClock", "noSuch"]
FIELDS = ["documents", "updates", "deletes", "filter", "sort", "projection", "limit", "skip", "batchSize",
          "q", "u", "multi", "upsert", "query", "update", "remove", "new", "fields", "pipeline", "cursor",
          "indexes", "index", "to", "key", "collection", "cursors", "ordered", "tailable", "awaitData",
          "maxTimeMS", "txnNumber", "autocommit", "startTransaction", "lsid", "applyOps", "collections",
          "nameOnly", "singleBatch", "$set", "$inc", "$push", "$each", "$slice", "$gt", "$in", "$or",
          "$and", "$not", "$type", "$exists", "$match", "$group", "$sort", "$project", "$count", "$sum",
          "_id", "a", "b", "a.b", "x.0", "", "$", "offsetMs", "a.$", "a.$.b", "a.1.$"]


def rval(d=0):
    r = rnd.random()
    if d < 3 and r < 0.2:
        return SON((rnd.choice(FIELDS), rval(d + 1)) for _ in range(rnd.randint(0, 4)))
    if d < 3 and r < 0.35:
        return [rval(d + 1) for _ in range(rnd.randint(0, 4))]
    return rnd.choice([0, 1, -1, 2**31 - 1, Int64(-5), Int64(2**40), 1.5, float("nan"), "", "c", "db.c",
                       "fz.c", "$x", True, False, None, ObjectId(), Timestamp(0, 0), Timestamp(2**31, 5),
                       Regex("^a"), b"\x00\x01", {"$numberLong": "1"}, "oplog.rs",
                       Int64(-2**63), Int64(2**63 - 1), 1e300, -1e300, float("inf"), -2**31, 2000000, "a.1999999"])


def rcmd():
    name = rnd.choice(CMDS)
    d = SON([(name, rnd.choice(["c", "d", 1, "oplog.rs", rval(2), Int64(7)])), ("$db", rnd.choice(["fz", "admin", "local", "fz"]))])
    for _ in range(rnd.randint(0, 5)):
        d[rnd.choice(FIELDS)] = rval()
    return d


def msg(doc_bytes, req):
    body = struct.pack("<I", 0) + b"\x00" + doc_bytes
    return struct.pack("<iiii", 16 + len(body), req, 0, 2013) + body


def roundtrip(sock, data):
    sock.sendall(data)
    hdr = b""
    while len(hdr) < 16:
        ch = sock.recv(16 - len(hdr))
        if not ch:
            return None
        hdr += ch
    n = struct.unpack("<i", hdr[:4])[0]
    rest = b""
    while len(rest) < n - 16:
        ch = sock.recv(n - 16 - len(rest))
        if not ch:
            return None
        rest += ch
    # stored documents may hold invalid UTF-8 sent by earlier fuzz messages
    # (mongod does not check UTF-8 either): decode leniently
    return bson.decode(rest[5:], CodecOptions(unicode_decode_error_handler="replace"))


def main():
    with Sim(["--noop-interval", "0"]) as s:
        c = s.client()
        c.fz.c.insert_many([{"_id": i, "a": [i, {"b": i}]} for i in range(20)])
        sock = s.raw()
        sock.settimeout(10)
        answered = closed = 0
        for i in range(N):
            d = rcmd()
            try:
                raw = bson.BSON.encode(d)
            except Exception:
                continue
            data = msg(raw, i + 1)
            if rnd.random() < 0.15:
                b = bytearray(data)
                for _ in range(rnd.randint(1, 4)):
                    b[rnd.randrange(16, len(b))] = rnd.randrange(256)
                data = bytes(b)
            try:
                r = roundtrip(sock, data)
            except (ConnectionError, socket.timeout, OSError):
                r = None
            if r is None:
                closed += 1
                sock.close()
                sock = s.raw()
                sock.settimeout(10)
            else:
                answered += 1
                if "ok" not in r:
                    ck.check(False, "reply without ok to %r" % d)
            if i % 500 == 0:
                ck.eq(c.admin.command("ping")["ok"], 1.0, "alive after %d messages" % i)
        sock.close()
        print("%d answered, %d connections closed" % (answered, closed))
        ck.eq(c.admin.command("ping")["ok"], 1.0, "still serving")
        ck.check(answered > N // 2, "most fuzz messages answered")
        ck.eq(s.stop(), 0, "clean exit")
        log = s.log()
        ck.check("runtime error" not in log and "Sanitizer" not in log, "no sanitizer report")
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
