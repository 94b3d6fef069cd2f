/*
 * capture.h — mmm-capture: tails `local.oplog.rs` of each captured master
 * into the site's journal, one thread and one libmongoc client per source.
 *
 * Per source: resume from the last ts the journal holds (the journal is the
 * checkpoint), checking that the server still holds that very entry (same
 * bytes); otherwise the oplog rolled past us (or rolled back) and the source
 * stops in state "gap" with one line saying so.  Entries are appended byte
 * for byte except namespaces that are never needed (oplog_ns_excluded()).
 * Each entry's origin is the source itself, unless it belongs to a
 * transaction whose applyOps carries an apply marker, or is a DDL command
 * announced by a DDL marker (oplog.h): then the marker's origin.  Network
 * errors, step-downs and restarts are retried with capped backoff (100 ms
 * doubling to 1 s).  Status (state, last ts/wall, lag, rate, last error)
 * is rewritten about once a second in the journal under "capture/<uuid>".
 *
 * Threads: per source, a reader tails the oplog and a writer compresses and
 * commits blocks (several blocks in one transaction when a backlog builds
 * up; each block is still whole or absent).  At start the newest journaled
 * entries are re-read so that an open transaction chain or DDL bracket
 * keeps its origin across a restart.  DDL brackets are kept per database
 * (up to 16 open at once) and closed by the checkpoint transaction of the
 * same origin.  Fault point (fault.h): cap_committed,
 * right after one of capture's block commits.
 */
#ifndef MMM_CAPTURE_H
#define MMM_CAPTURE_H
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "journal.h"

struct cap_options {
	uint64_t from_ts;         /* --from: where a source with no journal starts */
	int have_from;
};

/* Captures the servers at indexes SERVERS of CFG into J until *STOP becomes
 * non-zero (then flushes and returns 0, or 1 after a journal failure) or no
 * source is left running (returns 1: a gap, a changed identity, or a
 * journal failure; each was logged).  Call mongoc_init() first. */
int cap_run(const struct cfg *cfg, struct jnl *j, const size_t *servers, size_t n,
    const struct cap_options *opt, volatile sig_atomic_t *stop);

/* Status key of a source: "capture/<uuid>"; BUF >= 48 bytes. */
const char *cap_status_key(const uint8_t uuid[16], char *buf, size_t len);

#endif
