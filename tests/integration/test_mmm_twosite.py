"""Two sites without a live link (issue 6, acceptance 3).  Site A runs
`mmm run` with its own journal, capturing server_a and applying into
server_a only; site B the same for server_b.  Each site's config gives the
other site's master an address nobody answers at, so no process of a site
can reach the other master.  Segments go both ways by file:
`mmm-journal ship` at one site, `mmm-journal receive` at the other.  After
each round of writes on both masters, `mmm verify` (a third config naming
both servers, only to compare) passes.  One round loses A's segment in
transit: nothing of A's reaches B (verify shows it), the next receive is
refused with the gap message and changes nothing, and re-shipping the missing
range mends it.
"""
import os
import re
import shutil
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mmmlib import Env, ID_A, ID_B, MMM, journal_last, mj, mmm, ts_tuple, wait_for  # noqa: E402
from simlib import Checker  # noqa: E402

ck = Checker("mmm two sites")
ROUNDS = 5
LOST = 2          # the round whose A->B segment is lost


def ts_arg(t):
    return "%d:%d" % t


def next_ts(t):
    return (t[0], t[1] + 1)


class Site:
    def __init__(self, env, me, other, sim, cfg):
        self.env, self.me, self.other, self.sim, self.cfg = env, me, other, sim, cfg
        self.c = sim.client()
        self.shipped = None         # last ts shipped so far
        self.n = 0

    def journaled(self):
        """Waits until this site's journal holds every entry of its master so far."""
        want = ts_tuple(self.sim.last_ts())
        return wait_for(lambda: journal_last(self.cfg, self.me) >= want, 30, 0.05)

    def ship(self, path):
        """Ships what was not shipped yet (up to what the journal holds now)."""
        until = journal_last(self.cfg, self.me)
        args = ["ship", "--source", self.me, "--until", ts_arg(until), "-o", path]
        if self.shipped:
            args[3:3] = ["--since", ts_arg(next_ts(self.shipped))]
        rc, out, err = mj(self.cfg, *args)
        ck.eq(rc, 0, "ship at %s: %s" % (self.me, err))
        since = self.shipped
        self.shipped = until
        return since

    def receive(self, path, code=0):
        rc, out, err = mj(self.cfg, "receive", path)
        ck.eq(rc, code, "receive %s at %s: %s" % (os.path.basename(path), self.me, err))
        return err

    def write(self, rnd, peer_ids):
        """A round of writes: inserts, updates of the peer's documents, a delete."""
        x = self.c.test.x
        mine = ["%s-%d-%d" % (self.me, rnd, i) for i in range(20)]
        x.insert_many([{"_id": i, "by": self.me, "round": rnd, "v": 0} for i in mine])
        for i in mine[:5]:
            x.update_one({"_id": i}, {"$inc": {"v": 1}, "$set": {"sub.k": rnd}})
        for i in peer_ids[:3]:
            x.update_one({"_id": i}, {"$set": {"seen_by_%s" % self.me: rnd}})
        if peer_ids[3:4]:
            x.delete_one({"_id": peer_ids[3]})
        self.c.test.y.insert_one({"_id": "%s-%d" % (self.me, rnd)})   # not linked
        return mine


def main():
    with Env("twosite", ck) as env:
        sa, sb = env.sim("a"), env.sim("b")
        both = {"server_a": (ID_A, sa.uri), "server_b": (ID_B, sb.uri)}
        # each site's config names the other master at an address that answers
        # nothing: no process of a site can reach the other site's server
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        nowhere = s.getsockname()[1]
        s.close()
        far_a = "mongodb://127.0.0.1:%d/?replicaSet=a" % nowhere
        far_b = "mongodb://127.0.0.1:%d/?replicaSet=b" % nowhere
        cfg_a = env.config("site_a.yml", {"server_a": (ID_A, sa.uri), "server_b": (ID_B, far_b)},
                           journal="journal_a", capture=["server_a"], apply=["server_a"])
        cfg_b = env.config("site_b.yml", {"server_a": (ID_A, far_a), "server_b": (ID_B, sb.uri)},
                           journal="journal_b", capture=["server_b"], apply=["server_b"])
        cfg_v = env.config("verify.yml", both, journal="unused")
        transit = env.path("transit")
        os.mkdir(transit)
        A = Site(env, "server_a", "server_b", sa, cfg_a)
        B = Site(env, "server_b", "server_a", sb, cfg_b)

        run_a = env.daemon([MMM, "-c", cfg_a, "run"], "run_a.log")
        run_b = env.daemon([MMM, "-c", cfg_b, "run"], "run_b.log")
        # each site's capture has started before the links exist
        ck.check(wait_for(lambda: journal_last(cfg_a, "server_a") > (0, 0) and
                          journal_last(cfg_b, "server_b") > (0, 0), 30, 0.1), "both captures started")
        # each link is stored by its own site, on its own master; the source is
        # out of reach, so the link starts with what the site's journal receives
        for cfg, src, dst in ((cfg_b, "server_a", "server_b"), (cfg_a, "server_b", "server_a")):
            rc, out, err = mmm(cfg, "replicate", "--src=%s/test.x" % src, "--dst=%s/test.x" % dst)
            ck.eq(rc, 0, "replicate at %s's site" % dst)
            ck.check(err.startswith("mmm: cannot reach '%s' (" % src) and err.count("\n") == 1 and
                     err.endswith(": the link starts at the first entry the journal will hold\n"),
                     "replicate at %s's site says, in one line, where the link starts: %r" % (dst, err))
        ck.check(not os.path.exists(env.path("unused")), "verify's config has no journal")

        ids_a, ids_b = [], []
        held = None
        for rnd in range(1, ROUNDS + 1):
            new_a = A.write(rnd, ids_b)
            new_b = B.write(rnd, ids_a)
            ids_a, ids_b = new_a, new_b
            ck.check(A.journaled() and B.journaled(), "round %d: captured" % rnd)
            fa = os.path.join(transit, "a-%d.mmmseg" % rnd)
            fb = os.path.join(transit, "b-%d.mmmseg" % rnd)
            since_a = A.ship(fa)
            B.ship(fb)
            A.receive(fb)
            if rnd == LOST:
                os.unlink(fa)                      # lost in transit
                held = since_a
                # B never saw A's round: verify says so
                ck.check(wait_for(lambda: sa.client().test.x.count_documents({"by": "server_b", "round": rnd}) == 20,
                                  30, 0.1), "round %d: B's writes reached A" % rnd)
                rc, out, err = mmm(cfg_v, "verify")
                ck.eq(rc, 1, "round %d: verify finds the difference" % rnd)
                ck.check(re.search(r"DIFF  server_a/test\.x != server_b/test\.x: \d+ documents differ", out) or
                         re.search(r"DIFF  server_b/test\.x != server_a/test\.x: \d+ documents differ", out),
                         "round %d: verify output %r" % (rnd, out))
                continue
            if rnd == LOST + 1:
                before = journal_last(cfg_b, "server_a")
                err = B.receive(fa, code=1)
                ck.check(err.count("\n") == 1 and "gap in source" in err and "journal ends at" in err,
                         "gap refused with one line: %r" % err)
                ck.eq(journal_last(cfg_b, "server_a"), before, "refused segment changed nothing")
                # re-ship the missing range (from where B's journal ends) and receive both
                fm = os.path.join(transit, "a-mend.mmmseg")
                rc, out, e2 = mj(cfg_a, "ship", "--source", "server_a", "--since", ts_arg(next_ts(before)),
                                 "--until", ts_arg(A.shipped), "-o", fm)
                ck.eq(rc, 0, "re-ship the missing range: %s" % e2)
                B.receive(fm)
            B.receive(fa)

            def same():
                ha = sa.client().test.command("dbHash", collections=["x"])["collections"].get("x")
                hb = sb.client().test.command("dbHash", collections=["x"])["collections"].get("x")
                return ha == hb
            ck.check(wait_for(same, 60, 0.1), "round %d: converged" % rnd)
            rc, out, err = mmm(cfg_v, "verify")
            ck.eq(rc, 0, "round %d: verify passes: %s%s" % (rnd, out, err))
            ck.check(out.startswith("ok    ") and out.count("\n") == 1, "round %d: one ok line: %r" % (rnd, out))
        ck.check(held is not None, "a round lost its segment")

        n_a, n_b = sa.client().test.x.count_documents({}), sb.client().test.x.count_documents({})
        ck.check(n_a == n_b and n_a > ROUNDS * 2 * 20 - ROUNDS * 2, "document counts after the rounds: %d %d" % (n_a, n_b))
        ck.eq(sb.client().test.y.count_documents({"_id": {"$regex": "^server_a"}}), 0, "unlinked test.y stays home")
        # nothing bounced: each master's writes were applied once at the other
        for name, sim in (("a", sa), ("b", sb)):
            ck.eq(sim.client().test.x.count_documents({"seen_by_server_%s" % name: {"$exists": True},
                                                      "by": "server_%s" % name}), 0,
                  "%s's own documents carry no update of its own" % name)
        # sources: each journal captured its master and received the other
        st_a = mj(cfg_a, "stat", "--json")
        ck.eq(st_a[0], 0, "stat at A")
        ck.eq(run_a.term(), 0, "site A's mmm run stops cleanly")
        ck.eq(run_b.term(), 0, "site B's mmm run stops cleanly")
        for log in (run_a.log(), run_b.log()):
            ck.check("error" not in log.lower() or "last error" in log.lower(), "no error in the run log: %r" % log[-800:])
        rc, out, err = mj(cfg_a, "verify")
        ck.eq(rc, 0, "journal A verifies: %s" % err)
        rc, out, err = mj(cfg_b, "verify")
        ck.eq(rc, 0, "journal B verifies: %s" % err)
        shutil.rmtree(transit, ignore_errors=True)
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
