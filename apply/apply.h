/*
 * apply.h — mmm-apply: replays journaled entries into destination masters.
 *
 * One thread per destination re-reads its links (mmm.links) every 3 s and
 * runs one thread per (destination, source) pair.  A pair reads the
 * source's journal from the destination's checkpoint, routes each entry
 * through the links (namespace mapping, ops, origin rules: never to the
 * origin, only the source's own writes unless `forward`), translates it
 * (translate.c), and hands batches of CRUD entries (<= 1000 ops, one
 * origin) to the pair's committer thread, which writes each in one
 * transaction that first upserts the pair's marker in mmm.checkpoints
 * (oplog.h) while the pair thread reads the next: data and checkpoint
 * commit together, so apply is exactly-once, and the destination's capture
 * can tell these writes came from elsewhere.  A source transaction (applyOps,
 * partialTxn chain, prepared + commitTransaction) is never split across
 * batches; its createIndexes, and a create whose collection is missing and
 * not created by the transaction's own inserts, run just before it, with
 * a DDL marker.
 *
 * Writes: a document whose state in the batch is decided by an insert,
 * replacement or delete is written whole (inserts as inserts when the
 * batch's first op on it is an insert — upserts after a duplicate key);
 * an update computes the post-image (diff.h) from the document read in the
 * same transaction, exact to the field order, except a `$v:2` diff that
 * only replaces or deletes existing fields, which is sent as $set/$unset
 * of paths without a read (tr_diff_mods(): the server then does the same
 * in place).  DDL runs outside transactions between a DDL marker and a
 * checkpoint transaction, and is a barrier.
 *
 * Errors: transient ones (network, WriteConflict, NotWritablePrimary,
 * step-down, labels TransientTransactionError / UnknownTransactionCommitResult)
 * are retried with backoff up to 2 s; a permanent one is retried entry by
 * entry to commit what precedes it, then stops the pair with one line
 * naming the source, ts, namespace and the server's error.  All
 * transactions of a pair run on one session whose lsid is kept in the
 * status: after a crash the next process ends it (killSessions, else
 * endSessions), so a transaction left open cannot block it.  Status is
 * kept in the journal under "apply/<destination uuid>/<source uuid>"
 * (mmm-apply --status prints it).
 *
 * Workers (apply.workers, default 4): each pair has that many committers,
 * each with its own connection, session and marker
 * "mmm:<origin>:<source>:w<N>" (so its own checkpoint, and no write
 * conflicts on one marker).  A single entry's ops go to the worker that
 * hash(namespace, _id) picks; a transaction (applyOps, partialTxn chain,
 * prepared commit, vectored insert) and DDL are barriers: every worker
 * commits what precedes, worker 0 applies the unit, then the others go on.
 * A restart reads from the oldest worker checkpoint (from the links' start
 * when a worker has none) and each worker skips what its own checkpoint
 * covers; the markers record the number of workers, and a pair keeps that
 * number while they exist (a change of apply.workers applies to new
 * destinations).  A permanent error stops the pair; the other workers
 * commit what they were already given.
 */
#ifndef MMM_APPLY_H
#define MMM_APPLY_H
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "journal.h"

/* Applies into the servers at indexes DESTS of CFG until *STOP becomes
 * non-zero (returns 0), or every pair has stopped on an error (returns 1).
 * Call mongoc_init() first. */
int app_run(const struct cfg *cfg, struct jnl *j, const size_t *dests, size_t n,
    volatile sig_atomic_t *stop);

/* Status key of a pair: "apply/<dst uuid>/<src uuid>"; BUF >= 96 bytes. */
const char *app_status_key(const uint8_t dst[16], const uint8_t src[16], char *buf, size_t len);

/* Replays the entries of SOURCE with SINCE <= ts <= UNTIL (0 = no bound)
 * into the server at URI, namespace NS (NULL: the entries' own namespaces;
 * "db.coll" or "db.*" maps them), with apply's translation but without
 * checkpoints or origin rules (audit, restore).  *applied counts entries. */
int app_replay(struct jnl *j, const uint8_t source[16], uint64_t since, uint64_t until,
    const char *uri, const char *ns, uint64_t *applied, char *msg, size_t msglen);

#endif
