/*
 * conflict.h — one write order on every master (apply/CONFLICTS.md).
 *
 * Per destination master M, a struct cf holds what apply needs to order
 * writes of one document by stamp (stamp.h):
 *   - known(M, d): the greatest stamp of the writes M holds of document d,
 *     from the journal's docstamp table (kept by the checker, in M's oplog
 *     order) and from apply's own commits since (memory);
 *   - the checker thread, which follows M's own source in the journal (its
 *     oplog, local writes and apply's echoes alike) and raises docstamp; a
 *     write that lands on M after a greater stamp (a local write on a master
 *     whose clock is behind, or a write of apply's that raced a local one)
 *     queues the document for re-derivation (JNL_KV_REDERIVE);
 *   - echo records: for each of apply's transactions, the stamp each
 *     document it wrote carries, found again by the checker through the
 *     nonce apply puts in the transaction's marker;
 *   - re-derivation (cf_rederive): the fold, in stamp order, of the
 *     document's writes the journal holds — every local write of M, and the
 *     other masters' writes up to a horizon (the newest write M holds or is
 *     being given: later ones reach M in order) — from the newest full image
 *     on.
 *
 * Threads: every function may be called from any thread.
 */
#ifndef MMM_CONFLICT_H
#define MMM_CONFLICT_H
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <bson/bson.h>
#include "config.h"
#include "journal.h"
#include "links.h"
#include "stamp.h"

struct cf;

/* A document queued for re-derivation.  LATE/NEWER are zero when nothing is
 * to be logged (a race, not a late write). */
struct cf_item {
	char ns[LINK_NS_MAX];
	bson_t *id;                /* {_id: v}, owned */
	struct stamp late, newer;  /* (echo records: the oldest and the newest write given) */
	int folded;                /* (echo records) a re-derivation's result */
};

/* One document to re-derive: in NS, ID, CURRENT (NULL: absent on M) is
 * used when the journal holds no full image; HORIZON as above.  Out: PRESENT/DOC (owned),
 * MAX (the greatest stamp folded), BASE and HOW ("insert", "replacement",
 * "delete" or "degraded"). */
struct cf_doc {
	const char *ns;
	const bson_t *id;
	const bson_t *current;
	struct stamp horizon;      /* writes of other masters above it are left out */
	int present;
	bson_t *doc;
	struct stamp max, base;
	const char *how;
};

/* The state for destination DST (created with the journal's tables),
 * with the re-derivations left queued by an earlier run. */
int cf_open(struct jnl *j, const struct cfg_server *dst, struct cf **out);
/* Starts the checker (once M's source exists in the journal). */
int cf_start(struct cf *c, volatile sig_atomic_t *stop);
void cf_close(struct cf *c);

/* 64-bit key of document (NS, ID) (ID = {_id: v}). */
uint64_t cf_hash(const char *ns, const bson_t *id);
/* known(M, d) into *OUT (zero when nothing is known). */
void cf_known(struct cf *c, uint64_t h, struct stamp *out);
/* cf_known() of N documents at once (one journal read transaction). */
void cf_known_many(struct cf *c, const uint64_t *h, size_t n, struct stamp *out);
/* A fresh value for the marker's nonce field `n`. */
int64_t cf_nonce(struct cf *c);
/* One document of a transaction, for its echo record. */
struct cf_echo_doc {
	uint64_t h;
	struct stamp st;           /* the newest write it now holds */
	struct stamp lo;           /* the oldest write the transaction gave it (zero: none) */
	int folded;                /* a re-derivation's result */
	const char *ns;            /* with ID: nothing was written (an update that found no */
	const bson_t *id;          /* document): the checker raises it at the echo */
};
/* Before a commit: the documents a transaction with marker nonce NONCE
 * writes or was given.  SNAP: cf_journal_pos() before the transaction
 * started — a document it wrote nothing to but that M's oplog shows written
 * after SNAP was changed under the transaction: the checker re-derives it. */
void cf_echo_put(struct cf *c, int64_t nonce, uint64_t snap, const struct cf_echo_doc *docs, size_t n);
/* The last ts of M the journal holds (0 when M is not captured here). */
uint64_t cf_journal_pos(struct cf *c);
/* After a commit: raises known(M, d) of the documents written. */
void cf_applied(struct cf *c, const uint64_t *h, const struct stamp *st, size_t n);

/* Waits (up to 5 s) until the checker has read M's source as far as the
 * journal holds it now: what M holds is then known.  0, or -1 (timed out). */
int cf_wait_checker(struct cf *c, volatile sig_atomic_t *stop);
/* Waits (up to 3 s) until M's source in the journal holds OPTIME: the local
 * writes a transaction's snapshot includes are then journaled.  0, or -1
 * when it timed out or M is not captured here. */
int cf_wait_capture(struct cf *c, uint64_t optime, volatile sig_atomic_t *stop);
/* Re-derives DOCS from the journal.  0 or an error. */
int cf_rederive(struct cf *c, struct cf_doc *docs, size_t n);

/* Claims up to MAX queued re-derivations into OUT (cf_item_free each). */
size_t cf_take(struct cf *c, struct cf_item *out, size_t max);
/* Queues (NS, ID) for re-derivation, with nothing to log. */
void cf_queue(struct cf *c, const char *ns, const bson_t *id);
/* Queued and not claimed. */
int cf_pending(struct cf *c);
void cf_item_free(struct cf_item *it);
/* After the commit of a batch: writes the conflict records RECS and drops
 * the re-derivation keys DONE (claimed items). */
int cf_commit_log(struct cf *c, const struct clog_rec *recs, size_t nrecs, const struct cf_item *done,
    size_t ndone);
/* Conflict records of M that involve SRC (as the late or the newer write). */
int64_t cf_count(struct cf *c, const uint8_t src[16]);

#endif
