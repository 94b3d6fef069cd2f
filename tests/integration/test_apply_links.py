#!/usr/bin/python3
"""Issue 5: mmm-apply re-reads mmm.links on each destination every few
seconds; a link added, renamed or removed takes effect without a restart.
Also: -n checks the configuration, --status prints the per-link status
(state, applied ts, lag, last error), SIGTERM exits 0."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from applylib import BIN, Mesh, _retry_exec  # noqa: E402
from simlib import Checker, wait_for  # noqa: E402

ck = Checker("apply-links")


def links_of(m):
    st = list(m.apply_status().values())
    return sorted(st[0]["links"]) if st else None


def main():
    with Mesh(2) as m:
        try:
            A, B = m.c["a"], m.c["b"]
            p = _retry_exec(lambda: subprocess.run([os.path.join(BIN, "mmm-apply"), "-c", m.config, "-n"],
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            ck.eq(p.returncode, 0, "-n exits 0")
            ck.check(b"valid" in p.stdout, "-n says the configuration is valid: %r" % p.stdout)
            m.capture(servers=["a"])
            m.apply(servers=["b"])
            A.test.foo.insert_many([{"_id": i} for i in range(10)])
            m.link("b", "a", "test.foo")
            ck.check(wait_for(lambda: B.test.foo.count_documents({}) == 10, 15, 0.1), "a link added while running applies")
            m.link("b", "a", "test.bar", "test.baz")
            ck.check(wait_for(lambda: links_of(m) == ["a/test.bar=>test.baz", "a/test.foo=>test.foo"], 15, 0.1),
                     "the new link is taken: %r" % links_of(m))
            A.test.bar.insert_many([{"_id": i} for i in range(5)])
            ck.check(wait_for(lambda: B.test.baz.count_documents({}) == 5, 15, 0.1), "renamed link applies")
            ck.eq(B.test.bar.count_documents({}), 0, "nothing under the source name")
            B.mmm.links.delete_one({"_id": "a/test.foo=>test.foo"})
            ck.check(wait_for(lambda: links_of(m) == ["a/test.bar=>test.baz"], 15, 0.1), "the removed link is dropped")
            A.test.foo.insert_one({"_id": 100})
            A.test.bar.insert_one({"_id": 100})
            ck.check(wait_for(lambda: B.test.baz.count_documents({}) == 6, 15, 0.1), "remaining link goes on")
            ck.eq(B.test.foo.count_documents({"_id": 100}), 0, "removed link no longer applies")
            st = list(m.apply_status().values())
            ck.eq(len(st), 1, "one status record")
            if st:
                s = st[0]
                for k in ("state", "applied_ts", "lag_s", "last_error", "checkpoint_ts", "entries", "dst", "src"):
                    ck.check(k in s, "status has %s" % k)
                ck.eq((s["dst"], s["src"], s["state"]), ("b", "a", "running"), "status names the pair")
            json.dumps(st)
            ck.eq(m.app.term(), 0, "SIGTERM exits 0")
            st = list(m.apply_status().values())
            ck.eq(st and st[0]["state"], "stopped", "status after SIGTERM")
            if ck.failed:
                m.dump_logs()
        except Exception:
            m.dump_logs()
            raise


main()
sys.exit(ck.done())
