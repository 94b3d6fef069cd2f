/*
 * journal.h — the site's journal: an LMDB environment holding, per source
 * (a master, named by UUID), that source's oplog entries byte for byte, in
 * blocks of consecutive entries (block.h), chained by checksums.  The format
 * on disk is specified in journal/FORMAT.md.
 *
 * Invariants
 * - A source's blocks are keyed (source UUID, first ts big-endian); their ts
 *   ranges ascend without overlap, and each block names the ts and checksum
 *   of the block before it, so a hole or a change anywhere is detectable.
 * - A block is written in one LMDB write transaction together with the
 *   source's counters: it is durably whole or absent.
 * - Each source is either LOCAL (captured or imported here) or RECEIVED
 *   (only segments from another journal).  A journal never mixes the two
 *   for one source: blocks then have the same key and bytes everywhere.
 * - After a failed write the handle is poisoned: every later write returns
 *   MMM_EPOISONED (a log with a hole is worse than a stopped log).  Reads go on.
 * - Readers take short read transactions and copy what they return, so they
 *   never block the writer and never hand out pointers into the LMDB map
 *   past a transaction.  When the map fills, it is grown, not failed.
 *
 * Threads: a struct jnl may be shared by threads; a struct jnl_writer or
 * jnl_reader belongs to one thread at a time.
 *
 * Timestamps are uint64_t: seconds << 32 | increment (BSON Timestamp order).
 */
#ifndef MMM_JOURNAL_H
#define MMM_JOURNAL_H
#include <stddef.h>
#include <stdint.h>
#include <bson/bson.h>

#define JNL_FORMAT_VERSION 1

#define JNL_TS(sec, inc)   (((uint64_t)(uint32_t)(sec) << 32) | (uint32_t)(inc))
#define JNL_TS_SEC(ts)     ((uint32_t)((ts) >> 32))
#define JNL_TS_INC(ts)     ((uint32_t)(ts))

/* Block flushing thresholds (DESIGN.md §4). */
#define JNL_BLOCK_MAX_RAW      (256 * 1024)
#define JNL_BLOCK_MAX_ENTRIES  1000
#define JNL_BLOCK_MAX_AGE_MS   100

struct jnl;
struct jnl_writer;
struct jnl_reader;

enum jnl_kind { JNL_LOCAL = 1, JNL_RECEIVED = 2 };

/* One source, as the `sources` database records it (a copy; no pointers into LMDB). */
struct jnl_source {
	uint8_t uuid[16];
	char name[128];
	char uri[512];            /* redacted */
	enum jnl_kind kind;
	uint64_t first_ts;        /* first entry still held (0 when none) */
	uint64_t last_ts;         /* last entry held (0 when none) */
	uint64_t last_chk;        /* checksum of the newest block (chain head) */
	int64_t last_wall;        /* ms since epoch of the last entry, 0 when unknown */
	uint64_t entries, blocks, raw_bytes, stored_bytes;
	char set_name[128];       /* replica set recorded on first capture ("" if none) */
	char set_id[64];          /* replicaSetId as hex, "" if none */
};

/* Header of one stored block (block.h decodes it). */
struct jnl_block_info {
	uint8_t source[16];
	uint64_t prev_ts, first_ts, last_ts;
	uint64_t prev_chk, chk;
	uint32_t count, raw_len;
	size_t stored_len;
	int64_t last_wall;        /* wall (ms) of the last entry; 0 when not decoded */
};

/* One entry handed out by a reader; pointers valid until the next call on the reader. */
struct jnl_entry {
	const uint8_t *bson;
	uint32_t len;
	uint64_t ts;
	uint8_t source[16];
	uint8_t origin[16];       /* the master where the write was first made */
};

/* ---- opening ---------------------------------------------------------- */

#define JNL_RDONLY  0x1       /* no writes; fails with ENOENT when the journal does not exist */
#define JNL_CREATE  0x2       /* create the directory (0700) and files (0600) when absent */

/* Opens the journal in directory PATH.  Returns 0, an errno (ENOENT when
 * absent and not JNL_CREATE), MMM_EVERSION, or an LMDB code.  The initial map
 * size is 256 MiB (env MMM_JNL_MAPSIZE, bytes, overrides it: tests). */
int jnl_open(const char *path, int flags, struct jnl **out);
void jnl_close(struct jnl *j);
const char *jnl_path(const struct jnl *j);
void jnl_uuid(const struct jnl *j, uint8_t out[16]);
/* Non-zero once a write failed (see invariants). */
int jnl_poisoned(const struct jnl *j);

/* ---- sources ---------------------------------------------------------- */

/* Records source UUID with NAME and redacted URI (NULL keeps what is stored)
 * as KIND, or checks it: MMM_EOWNER when it exists with the other kind. */
int jnl_source_ensure(struct jnl *j, const uint8_t uuid[16], const char *name,
    const char *uri, enum jnl_kind kind);
/* 0 and *out filled, or MMM_ENOTFOUND. */
int jnl_source_get(struct jnl *j, const uint8_t uuid[16], struct jnl_source *out);
/* By name or UUID text. */
int jnl_source_find(struct jnl *j, const char *name_or_uuid, struct jnl_source *out);
/* All sources, sorted by name; *out is malloc'd (free()). */
int jnl_source_list(struct jnl *j, struct jnl_source **out, size_t *n);
/* Records the replica set identity on first use; later, MMM_EIDENTITY when
 * SET_NAME (or a non-empty SET_ID) differs from what is recorded. */
int jnl_source_identity(struct jnl *j, const uint8_t uuid[16], const char *set_name, const char *set_id);

/* ---- appending -------------------------------------------------------- */

/* A writer collects one source's entries into blocks.  The source must exist
 * (jnl_source_ensure) and be LOCAL (else MMM_EOWNER).  Only one writer per
 * source may exist at a time, across processes: EBUSY while another holds
 * it (jnl_writer_pid() names the holder). */
int jnl_writer_new(struct jnl *j, const uint8_t source[16], struct jnl_writer **out);
/* The pid recorded by the last writer of SOURCE (0 when unknown). */
int jnl_writer_pid(struct jnl *j, const uint8_t source[16]);
void jnl_writer_free(struct jnl_writer *w);   /* drops what was not committed */

/* Adds one entry (copied).  ORIGIN NULL means the source itself.  The entry
 * must be a valid BSON document with a Timestamp `ts` greater than every ts
 * the source holds or has pending: MMM_EBSON, MMM_EORDER otherwise (nothing
 * added).  Returns 1 when this completed a block (by size or count): the
 * caller should jnl_writer_commit() soon; else 0. */
int jnl_writer_add(struct jnl_writer *w, const uint8_t *bson, size_t len, const uint8_t origin[16]);
/* Same, trusting that BSON is valid and TS is its ts (import validated it already). */
int jnl_writer_add_trusted(struct jnl_writer *w, const uint8_t *bson, size_t len, uint64_t ts,
    const uint8_t origin[16]);
/* Closes the open block (if any) so the next commit includes it. */
int jnl_writer_seal(struct jnl_writer *w);
/* Writes every sealed block in one LMDB transaction (fault points
 * jnl_commit, jnl_committed).  On failure the handle is poisoned. */
int jnl_writer_commit(struct jnl_writer *w);
/* seal + commit */
int jnl_writer_flush(struct jnl_writer *w);
/* What is waiting: entries in the open block, ms since its first entry, sealed raw bytes. */
size_t jnl_writer_open_entries(const struct jnl_writer *w);
int64_t jnl_writer_open_age_ms(const struct jnl_writer *w);
size_t jnl_writer_sealed_bytes(const struct jnl_writer *w);
/* Last ts added (committed or not), 0 when none. */
uint64_t jnl_writer_last_ts(const struct jnl_writer *w);

/* ---- reading ---------------------------------------------------------- */

/* Entries of SOURCE with ts >= SINCE (0 = from the start) in ts order.
 * Seeking is a B-tree lookup.  A reader sees blocks committed after it was
 * opened, so it can follow a growing journal. */
int jnl_reader_open(struct jnl *j, const uint8_t source[16], uint64_t since, struct jnl_reader **out);
/* 0 and *e filled; MMM_EEND when no more entries (for now); or an error
 * (MMM_ECORRUPT: jnl_reader_block() then names the bad block, and every
 * later call fails the same way). */
int jnl_reader_next(struct jnl_reader *r, struct jnl_entry *e);
/* The block the last entry came from, or the bad block after MMM_ECORRUPT. */
const struct jnl_block_info *jnl_reader_block(const struct jnl_reader *r);
void jnl_reader_free(struct jnl_reader *r);

/* Calls FN for each stored block of SOURCE (NULL: every source, in key
 * order) whose last ts >= SINCE and first ts <= UNTIL (0: no bound), within
 * one read transaction: DATA is valid only during the call.  Blocks that
 * cannot even be parsed are passed with info->count == 0 and rc MMM_ECORRUPT
 * in *parse_rc.  FN returns 0 to go on, anything else stops the walk and is
 * returned. */
typedef int (*jnl_block_fn)(void *arg, const struct jnl_block_info *info, int parse_rc,
    const uint8_t *data, size_t len);
int jnl_block_walk(struct jnl *j, const uint8_t *source, uint64_t since, uint64_t until,
    jnl_block_fn fn, void *arg);

/* Reads SOURCE's entries block by block from the newest block back, in one
 * read transaction: FN gets each entry of a block (in ts order; pointers
 * valid during the call), then BLOCK_DONE is called; a non-zero return of
 * either stops the scan (BLOCK_DONE's 1 stops it without error).  Returns 0,
 * FN's error, or MMM_ECORRUPT for a block that does not decode. */
int jnl_scan_back(struct jnl *j, const uint8_t source[16], int (*fn)(void *arg, const struct jnl_entry *e),
    int (*block_done)(void *arg), void *arg);

/* ---- checking, receiving, pruning ------------------------------------- */

struct jnl_verify_result {
	uint64_t blocks, entries;
	int rc;                      /* 0, or why the first bad block is bad */
	uint8_t bad_source[16];
	uint64_t bad_ts;             /* first ts (key) of the first bad block */
	char reason[256];
};
/* Checks every block: framing, checksum, chain (prev ts and checksum),
 * decompression, entry count and ts.  Returns 0 when all is well, else
 * MMM_ECORRUPT with the first bad block in *res.  PROGRESS may be NULL. */
int jnl_verify(struct jnl *j, struct jnl_verify_result *res,
    void (*progress)(void *arg, uint64_t blocks), void *arg);

/* Stores already-encoded blocks of one RECEIVED source in one transaction.
 * The source (blocks[0].info.source) is created as RECEIVED under NAME
 * (NULL: its UUID text) in the same transaction; MMM_EOWNER when it is LOCAL.
 * Blocks already present with identical bytes, or older than what the
 * journal holds (pruned), are skipped (counted in *skipped); different bytes
 * for an existing key: MMM_ECONFLICT.  The first new block must continue the
 * source's chain (prev ts and checksum), else MMM_EGAP unless ALLOW_GAP; a
 * source the journal holds nothing of may start anywhere.  MSG receives a
 * one-line reason on failure. */
struct jnl_blockref { const uint8_t *data; size_t len; struct jnl_block_info info; };
int jnl_receive_blocks(struct jnl *j, const char *name, const struct jnl_blockref *blocks, size_t n,
    int allow_gap, size_t *added, size_t *skipped, char *msg, size_t msglen);

/* Drops whole blocks whose last ts < BEFORE, never a source's newest block.
 * *dropped counts them. */
int jnl_prune(struct jnl *j, uint64_t before, size_t *dropped);

/* ---- status (small records that daemons rewrite often) ----------------- */

/* KEY is any string ("capture/<uuid>", "apply/<dst>/<link>"); DOC is a BSON
 * document, replaced whole.  jnl_status_get: MMM_ENOTFOUND when absent; the
 * caller bson_destroy()s *out. */
int jnl_status_put(struct jnl *j, const char *key, const bson_t *doc);
int jnl_status_get(struct jnl *j, const char *key, bson_t *out);
/* Calls FN for each status record whose key starts with PREFIX. */
int jnl_status_walk(struct jnl *j, const char *prefix,
    int (*fn)(void *arg, const char *key, const bson_t *doc), void *arg);

/* ---- conflict-handling tables (apply/CONFLICTS.md) ---------------------
 * Small key/value tables beside the blocks, written by mmm-apply and read
 * by mmm-journal and mmm: JNL_KV_DOCSTAMP (per master and document, the
 * stamp of the newest write it holds), JNL_KV_CONFLICTS (the conflict log;
 * FORMAT.md gives keys and values), JNL_KV_REDERIVE (documents waiting to
 * be re-derived).  A journal opened read-only that predates them reads as
 * empty. */
enum jnl_kv { JNL_KV_DOCSTAMP, JNL_KV_CONFLICTS, JNL_KV_REDERIVE, JNL_KV_N };

struct jnl_kvop {
	enum jnl_kv db;
	const void *key;
	size_t klen;
	const void *val;          /* NULL: delete KEY (absent is not an error) */
	size_t vlen;
};
/* Applies OPS in order in one write transaction. */
int jnl_kv_write(struct jnl *j, const struct jnl_kvop *ops, size_t n);
/* Copies the value of KEY into VAL (at most CAP bytes; *VLEN is its full
 * length).  MMM_ENOTFOUND when absent. */
int jnl_kv_get(struct jnl *j, enum jnl_kv db, const void *key, size_t klen, void *val, size_t cap,
    size_t *vlen);
/* Looks N keys of KLEN bytes each (packed in KEYS) up in one read
 * transaction: for each found one whose value is VLEN bytes, copies it to
 * VALS + i * VLEN and sets FOUND[i] to 1 (else 0). */
int jnl_kv_get_many(struct jnl *j, enum jnl_kv db, const uint8_t *keys, size_t klen, size_t n, uint8_t *vals,
    size_t vlen, uint8_t *found);
/* Calls FN for each record whose key starts with PREFIX (PLEN 0: all), in
 * key order, within one read transaction (pointers valid during the call).
 * FN returns 0 to go on; anything else stops the walk and is returned. */
int jnl_kv_walk(struct jnl *j, enum jnl_kv db, const void *prefix, size_t plen,
    int (*fn)(void *arg, const void *key, size_t klen, const void *val, size_t vlen), void *arg);

/* ---- helpers ---------------------------------------------------------- */

/* Reads `ts` (a BSON Timestamp) of an oplog entry: 0 or MMM_EBSON. */
int jnl_entry_ts(const uint8_t *bson, size_t len, uint64_t *ts);
/* "SECONDS:INC" into buf (>= 24 bytes). */
const char *jnl_ts_str(uint64_t ts, char *buf, size_t len);

#endif
