/*
 * sim.h — mongosim internals: a single-node replica-set primary speaking the
 * MongoDB wire protocol, in memory, whose oplog is what a 6.0/7.0 primary
 * writes.  A test fixture (DESIGN.md §8), not a product.
 *
 * Concurrency: one thread per connection; every command runs under the one
 * global mutex `sim.mu`; `sim.cond` is broadcast on every oplog append and
 * on every transaction commit/abort (awaitData getMores and writers blocked
 * by a transaction's document lock wait on it).
 *
 * Storage: a collection keeps its documents in insertion order (slots, with
 * tombstones compacted lazily) plus a hash index on the canonical bytes of
 * `_id`.  The oplog is a ring of BSON entries with byte accounting.
 */
#ifndef MONGOSIM_SIM_H
#define MONGOSIM_SIM_H
#include <bson/bson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* ---- error codes (mongo/base/error_codes.yml) ---- */
#define E_BADVALUE 2
#define E_NOSUCHKEY 4
#define E_FAILEDTOPARSE 9
#define E_TYPEMISMATCH 14
#define E_ILLEGALOP 20
#define E_NSNOTFOUND 26
#define E_INDEXNOTFOUND 27
#define E_PATHNOTVIABLE 28
#define E_CONFLICTINGUPDATEOPS 40
#define E_CURSORNOTFOUND 43
#define E_NAMESPACEEXISTS 48
#define E_MAXTIMEMS 50
#define E_DOLLARPREFIXED 52
#define E_CMDNOTFOUND 59
#define E_IMMUTABLEFIELD 66
#define E_INVALIDOPTIONS 72
#define E_INVALIDNS 73
#define E_INDEXOPTIONSCONFLICT 85
#define E_INDEXKEYSPECSCONFLICT 86
#define E_WRITECONFLICT 112
#define E_CAPPEDPOSITIONLOST 136
#define E_NOSUCHTXN 251
#define E_TXNTOOOLD 225
#define E_OPNOTSUPPORTEDINTXN 263
#define E_DUPKEY 11000
#define E_NOTWRITABLEPRIMARY 10107
#define E_INTERRUPTEDREPL 11602
#define E_LOCATION 40415

/* ---- BSON helpers (query.c) ---- */
int sim_canon(bson_type_t t);
int sim_cmp_iter(const bson_iter_t *a, const bson_iter_t *b);
int sim_cmp_value(const bson_value_t *a, const bson_value_t *b);
int sim_cmp_docs(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen);
bool sim_is_number(bson_type_t t);
double sim_num(const bson_iter_t *it);
/* a number as an integer, NaN -> 0, clamped to +-2^50 (user values may be anything) */
int64_t sim_int(const bson_iter_t *it);
/* matcher: errmsg set (static string) when the filter is malformed */
bool sim_match(const bson_t *doc, const bson_t *filter, const char **err);
bool sim_match_value(const bson_iter_t *val, const bson_iter_t *cond, const char **err);
bool sim_lookup(const bson_t *doc, const char *path, bson_iter_t *out);
void sim_project(const bson_t *doc, const bson_t *proj, bson_t *out);
int sim_sort_cmp(const bson_t *a, const bson_t *b, const bson_t *sort);
const char *sim_type_name(bson_type_t t);
int sim_type_code(const char *alias);

/* ---- update engine (update.c) ---- */
struct sim_upd_result {
	bson_t *post;      /* new document (caller frees) */
	bson_t *oplog_o;   /* $v:2 diff, $v:1 form, or NULL when unchanged */
	bool changed;
};
/* Applies modifier document `upd` to `pre`; on error returns the code and
 * fills errmsg.  v1 selects the `$v:1` oplog form.  `upsert_insert` enables
 * $setOnInsert.  query (may be NULL) resolves the positional $. */
int sim_update_apply(const bson_t *pre, const bson_t *upd, const bson_t *query, bool v1, bool upsert_insert,
                     struct sim_upd_result *res, char *errmsg, size_t errlen);
bool sim_is_modifier(const bson_t *upd);
/* builds an upsert seed from a query's equality predicates */
void sim_upsert_seed(const bson_t *query, bson_t *out);
/* applies a $v:2 diff (used by applyOps) */
int sim_apply_diff(const bson_t *pre, const bson_t *diff, bson_t *out);

/* ---- md5 (md5.c) ---- */
struct sim_md5 { uint32_t a, b, c, d; uint64_t len; uint8_t buf[64]; };
void sim_md5_init(struct sim_md5 *m);
void sim_md5_update(struct sim_md5 *m, const void *p, size_t n);
void sim_md5_hex(struct sim_md5 *m, char out[33]);

/* ---- storage (store.c) ---- */
struct sim_txn;

/* an older committed version kept for transactions whose snapshot
 * predates the newer one: visible to snapshots in [start, end) */
struct sim_oldver { bson_t *doc; uint64_t start, end; struct sim_oldver *next; };

struct sim_slot {
	struct sim_oldver *old;
	bson_t *doc;            /* current (possibly uncommitted) version; NULL if deleted */
	bson_t *committed;      /* committed version while `owner` holds it; NULL = none */
	struct sim_txn *owner;  /* transaction holding an uncommitted write */
	uint64_t ver;           /* commit sequence of the last committed write */
};

struct sim_idmap_ent { uint64_t h; uint32_t slot; uint8_t state; };
struct sim_idmap { struct sim_idmap_ent *e; size_t cap, n, tomb; };

/* candidate index of a unique single-field secondary index: value hash ->
 * slots that held a version with that value (a superset: every hit is
 * verified against the slot's visible document) */
struct sim_uent { uint64_t h; uint32_t slot; uint8_t state; };
struct sim_uidx { struct sim_uent *e; size_t cap, n; char *path; };

struct sim_coll {
	char *db, *name, *ns;
	uint8_t uuid[16];
	bson_t *options;     /* create options as logged */
	bson_t **indexes;    /* index specs {v, key, name, unique?...}; [0] is _id_ */
	size_t nidx;
	struct sim_slot *slots;
	size_t nslots, capslots, live, dead;
	struct sim_idmap map;
	bool capped;
	int64_t capped_size, capped_max;
	size_t nold;         /* slots holding old versions (no compaction meanwhile) */
	struct sim_uidx **uidx;   /* parallel to indexes; NULL where not unique single-field */
	size_t nuidx;
};

struct sim_entry { uint64_t ts; uint32_t len; uint8_t *data; };

struct sim_oplog {
	struct sim_entry *e;
	size_t cap, head, n;     /* ring */
	size_t bytes, max_bytes;
	uint64_t dropped_ts;     /* newest ts ever dropped (0 = none) */
	uint64_t last_ts;
	int64_t last_wall;
};

struct sim_op { bson_t *doc; };  /* buffered transaction oplog op */

struct sim_txn {
	uint8_t lsid[16];
	int64_t txn_number;
	uint64_t snapshot;       /* commit sequence at start */
	bool active, committed, aborted;
	bson_t **ops; size_t nops, capops;
	/* slots written: (coll, slot index) */
	struct { struct sim_coll *c; size_t slot; } *w; size_t nw, capw;
	int abort_code;
};

struct sim_session {
	uint8_t id[16];
	int64_t txn_number;     /* highest seen */
	struct sim_txn txn;
	/* retryable writes */
	int64_t retry_txn;      /* txnNumber the saved reply belongs to */
	uint64_t prev_ts; int64_t prev_t;   /* last oplog optime of retry_txn */
	bson_t *retry_reply;    /* reply of the last completed retryable command */
	struct sim_session *next;
};

struct sim_cursor {
	int64_t id;
	char *ns;
	bool oplog, tailable, await;
	bson_t *filter;
	uint64_t last_ts;        /* oplog cursors: last returned */
	bson_t **docs; size_t ndocs, pos;  /* materialised result */
	bool busy, killed, ts_only, limited;
	uint64_t dropped_at_start;
	int64_t batch;
	struct sim_cursor *next;
};

struct sim_conn {
	int fd;
	bool close_after_reply;
	bool skip_pause;       /* the reply to mongosimPause itself is not stalled */
	int id;
	pthread_t th;
	bool done;
	struct sim_conn *next;
};

struct sim_server {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int port;
	char host[64];
	char *replset;
	char *dbpath;
	int oplog_v1;
	int noop_interval;
	int txn_split;
	bool faults;
	volatile int stop;
	int64_t term;
	int64_t clock_offset_ms;
	int64_t stepdown_until_ms;   /* monotonic ms; writes refused before */
	int64_t pause_until_ms;      /* monotonic ms */
	uint64_t commit_seq;
	struct sim_coll **colls; size_t ncolls, capcolls;
	struct sim_oplog oplog;
	struct sim_cursor *cursors;
	int64_t next_cursor;
	struct sim_session *sessions;
	struct sim_conn *conns;
	int next_conn_id;
	bson_oid_t election_id;
	bson_oid_t replset_id;        /* settings.replicaSetId, kept with --dbpath */
	int64_t start_ms;
	int64_t last_append_mono;
	bool stepped_down;
	bool signal_pending;         /* oplog grew: broadcast sim.cond before unlocking */
	pthread_cond_t noop_cond;    /* the noop thread's own timer */
	int active_txns;
	struct { struct sim_coll *c; size_t slot; } *gc;   /* slots with old versions */
	size_t ngc, capgc;
};

extern struct sim_server sim;

int64_t sim_now_ms(void);       /* wall clock incl. offset */
int64_t sim_mono_ms(void);
void sim_log(const char *fmt, ...) BSON_GNUC_PRINTF(1, 2);
/* unlocks sim.mu, first waking waiters if the oplog grew */
void sim_unlock(void);

struct sim_coll *sim_coll_get(const char *db, const char *name);
struct sim_coll *sim_coll_new(const char *db, const char *name, const bson_t *options, const uint8_t *uuid);
void sim_coll_remove(struct sim_coll *c);
void sim_coll_free(struct sim_coll *c);
void sim_coll_rename(struct sim_coll *c, const char *db, const char *name);
int sim_id_key(const bson_iter_t *id, uint8_t *buf, size_t cap);   /* returns length */
/* slot lookup by _id value; returns -1 if absent */
long sim_coll_find_id(struct sim_coll *c, const bson_iter_t *id);
size_t sim_coll_add(struct sim_coll *c, bson_t *doc);  /* takes ownership */
void sim_coll_set(struct sim_coll *c, size_t slot, bson_t *doc);  /* replaces, frees old */
void sim_coll_del(struct sim_coll *c, size_t slot);
void sim_coll_compact(struct sim_coll *c);
/* rebuilds the unique-index candidate maps (after index or slot changes) */
void sim_uidx_rebuild(struct sim_coll *c);
/* records doc's key values for slot in every candidate map */
void sim_uidx_add(struct sim_coll *c, size_t slot, const bson_t *doc);
/* calls fn(slot, arg) for every candidate slot of value v in map u; stops when fn returns true */
bool sim_uidx_probe(struct sim_uidx *u, uint64_t h, bool (*fn)(uint32_t slot, void *arg), void *arg);
uint64_t sim_value_hash(const bson_iter_t *v);
uint64_t sim_null_hash(void);
/* the version of the slot visible to txn (NULL = not visible): its own
 * write, else the committed version of its snapshot */
const bson_t *sim_visible(struct sim_slot *s, struct sim_txn *t);
/* keeps prev (owned) as the slot's version for snapshots in [start, end) */
void sim_keep_old(struct sim_coll *c, size_t slot, bson_t *prev, uint64_t start, uint64_t end);
/* frees every old version once no transaction is active */
void sim_gc_old(void);

/* oplog */
uint64_t sim_next_ts(int64_t *wall);
void sim_oplog_append(const bson_t *entry, uint64_t ts);
/* appends a heap bson_t (bson_new/bson_sized_new), taking ownership */
void sim_oplog_push(bson_t *entry, uint64_t ts, int64_t wall);
void sim_oplog_init(size_t max_bytes);
/* index of the first entry with ts > after (n if none) */
size_t sim_oplog_after(uint64_t after);
struct sim_entry *sim_oplog_at(size_t i);   /* i from oldest */
void sim_oplog_free(void);
void sim_noop(const char *msg);
/* electionId of a term, as mongod's OID::fromTerm: 7fffffff + int64 term big-endian */
void sim_election_id(void);

/* persistence */
int sim_save(const char *dir);
int sim_load(const char *dir);

/* commands (cmd.c) */
void sim_run_command(struct sim_conn *conn, bson_t *cmd, const char *db, bson_t *reply);
void sim_hello_reply(struct sim_conn *conn, const bson_t *cmd, bool is_hello, bson_t *reply);
void sim_cursors_free(void);
void sim_check_stepup(void);
void sim_close_all_conns(struct sim_conn *except);
void sim_sessions_free(void);

#endif
