/*
 * stamp.h — the order of writes (apply/CONFLICTS.md §1) and the conflict
 * log's records (JNL_KV_CONFLICTS, journal/FORMAT.md).
 *
 * A stamp is (wall, origin, ts, k): the write's oplog `wall` (ms), the
 * master where it was made, its entry's ts in that master's oplog, and its
 * index inside the entry's applyOps (0 for a plain entry).  Every site
 * computes the same stamp for the same write, from the same bytes.
 */
#ifndef MMM_STAMP_H
#define MMM_STAMP_H
#include <stddef.h>
#include <stdint.h>
#include <bson/bson.h>
#include "journal.h"

struct stamp {
	int64_t wall;
	uint8_t origin[16];
	uint64_t ts;
	uint32_t k;
};

#define STAMP_LEN 36   /* encoded: wall (big-endian, sign bit flipped), origin, ts, k (big-endian) */

/* <0, 0, >0 as A orders before, equal to, after B. */
int stamp_cmp(const struct stamp *a, const struct stamp *b);
int stamp_is_zero(const struct stamp *s);
/* Byte order = stamp order. */
void stamp_encode(const struct stamp *s, uint8_t out[STAMP_LEN]);
void stamp_decode(const uint8_t in[STAMP_LEN], struct stamp *s);
/* Appends {origin: UUID, ts: Timestamp, wall: Date, k: int32} as KEY. */
void stamp_append(bson_t *b, const char *key, const struct stamp *s);
/* Reads what stamp_append() wrote; 0 or MMM_EBSON. */
int stamp_from_iter(bson_iter_t *it, struct stamp *s);

/* One conflict: a write of (ns, _id) that reached MASTER after a newer
 * write of the same document (LATE ordered behind NEWER).  HOW names the
 * base of the re-derivation: "insert", "replacement" or "delete" (BASE is
 * that write), or "degraded" (no full image in the journal: the document
 * as it was on MASTER).  RESULT: "replaced" or "deleted". */
struct clog_rec {
	const char *ns;
	const bson_t *id;          /* {_id: value} */
	uint8_t master[16];
	struct stamp late, newer, base;
	const char *how, *result;
	int64_t at;                /* when it was detected (ms since the epoch) */
};

/* Key of a record: ns, NUL, the {_id} document's bytes, late stamp.
 * Returns its length, or 0 when it does not fit in CAP. */
size_t clog_key(const char *ns, const bson_t *id, const struct stamp *late, uint8_t *buf, size_t cap);
/* The record's value (caller bson_destroy()s OUT):
 * {ns, id: {_id}, master: UUID, late: stamp, newer: stamp, how, base: stamp
 *  (absent when degraded), result, at: Date}. */
void clog_value(const struct clog_rec *r, bson_t *out);

#endif
