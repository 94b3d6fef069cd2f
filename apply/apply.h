/*
 * apply.h — mmm-apply: replays journaled entries into destination masters.
 *
 * One thread per destination re-reads its links (mmm.links) every 3 s and
 * runs one thread per (destination, source) pair.  A pair reads the
 * source's journal from the destination's checkpoint, routes each entry
 * through the links (namespace mapping, ops, origin rules: never to the
 * origin, only the source's own writes unless `forward`), translates it
 * (translate.c), and writes batches of CRUD entries in one transaction per
 * batch that first upserts the pair's marker in mmm.checkpoints (oplog.h):
 * data and checkpoint commit together, so apply is exactly-once, and the
 * destination's capture can tell these writes came from elsewhere.
 * Updates are applied by computing the post-image (diff.h) from the
 * document read in the same transaction, and writing it whole: the result
 * is exact, field order included.  DDL runs outside transactions between a
 * DDL marker and a checkpoint transaction.  Transient errors are retried
 * with backoff; a permanent one stops the pair with one line naming the
 * source, ts, namespace and the server's error.  Status is kept in the
 * journal under "apply/<destination uuid>/<source uuid>".
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
