"""test_malformed.py — issue 3, acceptance 6: malformed messages (bad length,
truncated, unknown opcode, invalid BSON) close that connection with a log
line; the server keeps serving everyone else."""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from simlib import Sim, Checker, wait_for  # noqa: E402

import bson  # noqa: E402

ck = Checker("malformed")


def op_msg(doc_bytes, opcode=2013, length=None, req=7):
    body = struct.pack("<I", 0) + b"\x00" + doc_bytes
    n = 16 + len(body) if length is None else length
    return struct.pack("<iiii", n, req, 0, opcode) + body


def closed(sock, timeout=5.0):
    """True when the server closes the connection without replying"""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return data == b""


def main():
    with Sim() as s:
        c = s.client()
        c.m.c.insert_one({"_id": 0})
        ping = bson.BSON.encode({"ping": 1, "$db": "admin"})
        # a well-formed raw OP_MSG is answered (the framing below is right)
        k = s.raw()
        k.sendall(op_msg(ping))
        hdr = k.recv(16)
        ck.check(len(hdr) == 16 and struct.unpack("<iiii", hdr)[3] == 2013, "raw OP_MSG answered")
        k.close()
        cases = [
            ("length below the header", struct.pack("<iiii", 5, 1, 0, 2013)),
            ("length above 48 MB", struct.pack("<iiii", 100 * 1000 * 1000, 1, 0, 2013)),
            ("negative length", struct.pack("<iiii", -20, 1, 0, 2013)),
            ("unknown opcode", op_msg(ping, opcode=9999)),
            ("OP_COMPRESSED (not negotiated)", op_msg(ping, opcode=2012)),
            ("document length past the message", op_msg(struct.pack("<i", 500) + ping[4:])),
            ("invalid element type", op_msg(ping[:4] + b"\x55" + ping[5:])),
            ("document without terminator", op_msg(ping[:-1] + b"\x01")),
            ("unknown section kind", struct.pack("<iiii", 16 + 4 + 1 + len(ping), 1, 0, 2013) + struct.pack("<I", 0) + b"\x07" + ping),
            ("OP_MSG without body", struct.pack("<iiii", 16 + 4, 1, 0, 2013) + struct.pack("<I", 0)),
            ("bad OP_QUERY", struct.pack("<iiii", 16 + 8, 1, 0, 2004) + b"adm\x00\x00\x00\x00\x00"),
        ]
        for name, data in cases:
            k = s.raw()
            k.sendall(data)
            ck.check(closed(k), name + ": connection closed")
            k.close()
            ck.eq(c.admin.command("ping")["ok"], 1.0, name + ": others still served")
        # truncated: announces more than it sends, then stops sending
        k = s.raw()
        msg = op_msg(ping)
        k.sendall(msg[:-6])
        k.shutdown(socket.SHUT_WR)
        ck.check(closed(k), "truncated message: connection closed")
        k.close()
        # a connection in the middle of a message does not block anyone
        k = s.raw()
        k.sendall(msg[:10])
        c.m.c.insert_one({"_id": 1})
        ck.eq(c.m.c.count_documents({}), 2, "writes proceed while a client is stuck mid-message")
        k.close()
        log = wait_for(lambda: "truncated" in s.log() and s.log(), timeout=5) or s.log()
        for word in ("bad message length", "unknown opcode", "invalid BSON", "truncated", "section kind"):
            ck.check(word in log, "log line mentions '%s'" % word)
        ck.eq(s.stop(), 0, "clean exit")
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
