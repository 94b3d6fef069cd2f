/* apply.c — see apply.h. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <mongoc/mongoc.h>
#include "apply.h"
#include "conflict.h"
#include "diff.h"
#include "err.h"
#include "fault.h"
#include "hash.h"
#include "links.h"
#include "log.h"
#include "oplog.h"
#include "translate.h"
#include "util.h"

#define BATCH_OPS        1000
#define BATCH_BYTES      (8 << 20)
#define LINKS_EVERY_MS   3000
#define STATUS_EVERY_MS  1000
#define IDLE_WAIT_MS     10
#define BACKOFF_MAX_MS   2000
#define MAX_CHAINS       64

const char *app_status_key(const uint8_t dst[16], const uint8_t src[16], char *buf, size_t len)
{
	char d[37], s[37];
	uuid_format(dst, d);
	uuid_format(src, s);
	snprintf(buf, len, "apply/%s/%s", d, s);
	return buf;
}

/* ---- documents touched by a batch ---------------------------------------- */

/* The state of one (namespace, _id) while a batch is computed. */
struct docstate {
	char ns[LINK_NS_MAX];
	bson_t *id;            /* {_id: v} */
	uint64_t key;
	int need_fetch;        /* first op needs the current document */
	int known;             /* doc/absent below is what the server has (after our ops) */
	int present;
	int touched;           /* ops changed it: write it */
	bson_t *doc;
	int own_doc;           /* doc is ours (else borrowed from an op, like id) */
	size_t order;          /* last touch, for the order of writes */
	int have;              /* second pass: the state is known (fetched or decided by an op) */
	char first;            /* kind of the first op of the batch on it */
	bson_t **pend;         /* updates sent as they are ($set/$unset), while the state is unknown */
	size_t npend, cappend;
	/* write order (conflict.h) */
	int looked;            /* known_st is loaded */
	struct stamp known_st; /* the newest write the destination holds */
	struct stamp hi, lo;   /* the newest and the oldest op of the batch on it */
	int rederive;          /* a late op (or a queued re-derivation): fold it from the journal */
	struct stamp fold_max, base;
	struct stamp horizon;  /* the newest write it holds or is given (conflict.h) */
	int existed;           /* present in the transaction's snapshot (fetched) */
	const char *how;
};

struct docset {
	struct docstate *d;
	size_t n, cap;
	size_t *slots;         /* open addressing: index + 1, 0 = empty */
	size_t nslots;
};

static uint64_t doc_key(const char *ns, const bson_t *id)
{
	return mmm_xxh64(bson_get_data(id), id->len, mmm_xxh64(ns, strlen(ns), 0));
}

static void docset_clear(struct docset *s)
{
	for (size_t i = 0; i < s->n; i++) {
		if (s->d[i].doc && s->d[i].own_doc)
			bson_destroy(s->d[i].doc);
		free(s->d[i].pend);   /* borrowed from the ops */
	}
	s->n = 0;
	if (s->slots)
		memset(s->slots, 0, s->nslots * sizeof *s->slots);
}

static void docset_free(struct docset *s)
{
	docset_clear(s);
	free(s->d);
	free(s->slots);
	memset(s, 0, sizeof *s);
}

static int docset_rehash(struct docset *s, size_t nslots)
{
	size_t *slots = calloc(nslots, sizeof *slots);
	if (slots == NULL)
		return ENOMEM;
	for (size_t i = 0; i < s->n; i++) {
		size_t h = s->d[i].key & (nslots - 1);
		while (slots[h])
			h = (h + 1) & (nslots - 1);
		slots[h] = i + 1;
	}
	free(s->slots);
	s->slots = slots;
	s->nslots = nslots;
	return 0;
}

/* Sets the document state, freeing the previous one when it was ours. */
static void ds_set_doc(struct docstate *d, bson_t *doc, int own)
{
	if (d->doc && d->own_doc)
		bson_destroy(d->doc);
	d->doc = doc;
	d->own_doc = own;
}

/* Finds or adds the state of (NS, ID); ID is kept (not copied) when added. */
static struct docstate *docset_get(struct docset *s, const char *ns, const bson_t *id, int add)
{
	uint64_t key = doc_key(ns, id);
	size_t h;
	struct docstate *d;

	if (s->nslots == 0 || (s->n + 1) * 2 > s->nslots)
		if (docset_rehash(s, s->nslots ? s->nslots * 2 : 1024) != 0)
			return NULL;
	for (h = key & (s->nslots - 1); s->slots[h]; h = (h + 1) & (s->nslots - 1)) {
		d = &s->d[s->slots[h] - 1];
		if (d->key == key && strcmp(d->ns, ns) == 0 && bson_equal(d->id, id))
			return d;
	}
	if (!add)
		return NULL;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		struct docstate *nd = realloc(s->d, cap * sizeof *nd);
		if (nd == NULL)
			return NULL;
		s->d = nd;
		s->cap = cap;
	}
	d = &s->d[s->n];
	memset(d, 0, sizeof *d);
	memcpy(d->ns, ns, strnlen(ns, sizeof d->ns - 1) + 1);
	d->ns[sizeof d->ns - 1] = '\0';
	d->id = (bson_t *)id;      /* borrowed from the op, which outlives the docset */
	d->key = key;
	s->slots[h] = ++s->n;
	return d;
}

/* ---- pairs ---------------------------------------------------------------- */

struct chain {                 /* an open partialTxn chain or prepared transaction */
	uint8_t lsid[16];
	int64_t txn;
	uint64_t first_ts;
	struct tr_list ops;
	int used;
};

struct app;
struct pair;

/* A worker commits the batches of the documents that hash to it, on its
 * own connection and session, with its own marker "mmm:<origin>:<source>:w<N>"
 * and so its own checkpoint (the minimum over the workers is where a
 * restart reads from; each skips what its own checkpoint covers). */
struct worker {
	struct pair *p;
	int idx;
	char name[16];                 /* "w<N>" */
	mongoc_client_t *client;
	mongoc_client_session_t *sess; /* every transaction of the worker runs on it */
	bson_t *lsid;                  /* its lsid, recorded in the status */
	int upserts;                   /* write inserts as upserts (after a duplicate key) */
	uint64_t ckpt_ts, skip_ts;     /* its checkpoint; entries up to skip_ts are applied (at start) */
	struct tr_list batch;          /* being filled by the pair thread */
	uint8_t batch_origin[16];
	size_t batch_bytes;
	/* the committer thread commits one batch while the pair thread reads on */
	pthread_t thread;
	int started, job;
	struct tr_list cbatch;         /* being committed */
	uint8_t c_origin[16];
	uint64_t c_last_ts, c_from;
	struct docset docs;
	int64_t nonce;                 /* of the transaction being committed (its echo record) */
	uint64_t snap;                 /* the destination's journal position before its snapshot */
	struct clog_rec *recs;         /* conflicts found by it, logged after the commit */
	size_t nrecs, caprecs;
};

#define MAX_WORKERS 64

struct pair {
	struct app *app;
	struct cf *cf;                 /* the destination's write order (NULL: apply.conflicts off) */
	const struct cfg_server *dst;
	uint8_t src[16];
	char src_name[128];
	pthread_t thread;
	int started, done, failed;
	pthread_mutex_t mu;
	pthread_mutex_t smu;           /* status writes (every worker records its session) */
	struct app_link *links;        /* guarded by mu; replaced by the destination thread */
	size_t nlinks;
	int links_gen;
	/* the pair thread's own state */
	struct app_link *my_links;
	size_t my_nlinks;
	int my_gen;
	/* A link added while the pair runs may start before where the pair is:
	 * the pair then reads again from REWIND_TO, and the links it had
	 * (REWIND_IDS) skip what they applied already, up to REWIND_AT. */
	uint64_t rewind_to, rewind_at;
	char (*rewind_ids)[3 * LINK_NS_MAX];
	size_t rewind_n;
	mongoc_client_t *client;       /* = workers[0].client; the pair thread uses it when all are idle */
	struct worker workers[MAX_WORKERS];
	int nworkers;
	bson_t *noval, *upsert_noval;  /* bulk options: {validate: false}, {upsert, validate: false} */
	bson_t *old_lsids;             /* the previous process's sessions, killed at start */
	uint64_t ckpt_ts;              /* the oldest worker checkpoint (status) */
	uint64_t consumed_ts;          /* read up to here */
	int64_t consumed_wall;
	struct chain chains[MAX_CHAINS];
	uint64_t batch_last_ts;        /* the last entry read (a hand-over checkpoints it) */
	int quit;
	pthread_cond_t cv;             /* with mu: workers' jobs */
	const char *state;
	char last_error[768];
	uint64_t applied_entries;
	int64_t status_at;
};

struct dest {
	struct app *app;
	struct cf *cf;
	const struct cfg_server *srv;
	pthread_t thread;
	struct pair **pairs;
	size_t npairs;
};

struct app {
	const struct cfg *cfg;
	struct jnl *j;
	volatile sig_atomic_t *stop;
	atomic_int fatal;
};

static void pair_status_locked(struct pair *p);

static void pair_status(struct pair *p)
{
	pthread_mutex_lock(&p->smu);
	pair_status_locked(p);
	pthread_mutex_unlock(&p->smu);
}

static void pair_status_locked(struct pair *p)
{
	char key[96], ts[32];
	struct jnl_source src;
	bson_t doc, arr;
	double lag = 0;

	if (jnl_source_get(p->app->j, p->src, &src) == 0 && src.last_ts > p->consumed_ts && src.last_wall &&
	    p->consumed_wall)
		lag = (double)(src.last_wall - p->consumed_wall) / 1000.0;
	if (lag < 0)
		lag = 0;
	bson_init(&doc);
	BSON_APPEND_UTF8(&doc, "dst", p->dst->name);
	BSON_APPEND_UTF8(&doc, "src", p->src_name);
	BSON_APPEND_UTF8(&doc, "state", p->state);
	BSON_APPEND_TIMESTAMP(&doc, "applied_ts", JNL_TS_SEC(p->consumed_ts), JNL_TS_INC(p->consumed_ts));
	BSON_APPEND_DATE_TIME(&doc, "applied_wall", p->consumed_wall);
	{
		uint64_t ck = UINT64_MAX;
		for (int k = 0; k < p->nworkers; k++)
			if (p->workers[k].ckpt_ts < ck)
				ck = p->workers[k].ckpt_ts;
		p->ckpt_ts = ck == UINT64_MAX ? 0 : ck;
	}
	BSON_APPEND_TIMESTAMP(&doc, "checkpoint_ts", JNL_TS_SEC(p->ckpt_ts), JNL_TS_INC(p->ckpt_ts));
	BSON_APPEND_DOUBLE(&doc, "lag_s", lag);
	BSON_APPEND_INT64(&doc, "entries", (int64_t)p->applied_entries);
	BSON_APPEND_INT64(&doc, "conflicts", p->cf ? cf_count(p->cf, p->src) : 0);
	BSON_APPEND_UTF8(&doc, "last_error", p->last_error);
	BSON_APPEND_ARRAY_BEGIN(&doc, "links", &arr);
	for (size_t i = 0; i < p->my_nlinks; i++) {
		char k[24];
		snprintf(k, sizeof k, "%zu", i);
		BSON_APPEND_UTF8(&arr, k, p->my_links[i].id);
	}
	bson_append_array_end(&doc, &arr);
	BSON_APPEND_DATE_TIME(&doc, "updated", mmm_wall_ms());
	BSON_APPEND_INT32(&doc, "pid", (int32_t)getpid());
	BSON_APPEND_INT32(&doc, "workers", p->nworkers);
	BSON_APPEND_ARRAY_BEGIN(&doc, "lsids", &arr);
	for (int i = 0, n = 0; i < MAX_WORKERS; i++) {
		char k[24];
		if (p->workers[i].lsid) {
			snprintf(k, sizeof k, "%d", n++);
			BSON_APPEND_DOCUMENT(&arr, k, p->workers[i].lsid);
		}
	}
	bson_append_array_end(&doc, &arr);
	jnl_status_put(p->app->j, app_status_key(p->dst->uuid, p->src, key, sizeof key), &doc);
	bson_destroy(&doc);
	p->status_at = mmm_mono_ms();
	(void)ts;
}

static void set_state(struct pair *p, const char *state)
{
	if (p->failed && strcmp(state, "stopped") != 0)
		return;        /* a stopped pair stays so (other workers may still commit) */
	if (p->state != state) {
		p->state = state;
		pair_status(p);
	}
}

/* The links changed while the pair was caught up (everything read is
 * committed): takes the new set, and when a new link starts before the
 * pair's position, arranges for the pair to read again from that start
 * with the links it already had skipping what they applied (pair_main).
 * A crash during that catch-up loses only the skipping: the old links then
 * apply those entries again, which oplog entries allow (they are
 * idempotent), and the result is the same. */
static void pair_sync_links(struct pair *p);

static void links_changed(struct pair *p)
{
	uint64_t at = p->consumed_ts, to = 0;
	size_t n = p->my_nlinks;
	char (*ids)[3 * LINK_NS_MAX] = n ? malloc(n * sizeof *ids) : NULL;

	for (size_t i = 0; ids && i < n; i++)
		memcpy(ids[i], p->my_links[i].id, sizeof ids[i]);
	pair_sync_links(p);
	for (size_t i = 0; i < p->my_nlinks; i++) {
		int known = 0;
		for (size_t k = 0; ids && k < n && !known; k++)
			known = strcmp(p->my_links[i].id, ids[k]) == 0;
		if (!known && p->my_links[i].start_ts <= at) {
			uint64_t s = p->my_links[i].start_ts ? p->my_links[i].start_ts : 1;
			if (to == 0 || s < to)
				to = s;
		}
	}
	free(p->rewind_ids);
	p->rewind_ids = NULL;
	p->rewind_n = 0;
	p->rewind_to = 0;
	if (to && at && ids) {
		p->rewind_to = to;
		p->rewind_at = at;
		p->rewind_ids = ids;
		p->rewind_n = n;
	} else {
		free(ids);
	}
}

/* Takes the newest link set from the destination thread. */
static void pair_sync_links(struct pair *p)
{
	pthread_mutex_lock(&p->mu);
	if (p->links_gen != p->my_gen) {
		free(p->my_links);
		p->my_links = NULL;
		p->my_nlinks = 0;
		if (p->nlinks && (p->my_links = malloc(p->nlinks * sizeof *p->my_links)) != NULL) {
			memcpy(p->my_links, p->links, p->nlinks * sizeof *p->my_links);
			p->my_nlinks = p->nlinks;
		}
		p->my_gen = p->links_gen;
	}
	pthread_mutex_unlock(&p->mu);
}

static int err_has_label(const bson_t *reply, const char *label)
{
	bson_iter_t it, arr;
	if (!reply || !bson_iter_init_find(&it, reply, "errorLabels") || !BSON_ITER_HOLDS_ARRAY(&it) ||
	    !bson_iter_recurse(&it, &arr))
		return 0;
	while (bson_iter_next(&arr))
		if (BSON_ITER_HOLDS_UTF8(&arr) && strcmp(bson_iter_utf8(&arr, NULL), label) == 0)
			return 1;
	return 0;
}

/* Network trouble, step-downs, write conflicts: worth retrying. */
static int is_transient(const bson_error_t *e, const bson_t *reply)
{
	static const int codes[] = { 112, 251, 10107, 13435, 11602, 189, 91, 6, 7, 89, 9001, 262, 50, 0 };
	if (err_has_label(reply, "TransientTransactionError") || err_has_label(reply, "UnknownTransactionCommitResult") ||
	    err_has_label(reply, "RetryableWriteError"))
		return 1;
	if (e->domain == MONGOC_ERROR_STREAM || e->domain == MONGOC_ERROR_SERVER_SELECTION ||
	    e->domain == MONGOC_ERROR_CLIENT)
		return 1;
	for (int i = 0; codes[i]; i++)
		if ((int)e->code == codes[i])
			return 1;
	return 0;
}

/* ---- the pair's session ------------------------------------------------------ */

/* The pair's session, started on first use.  Its lsid goes into the status
 * before it is used, so that after a crash the next process can kill the
 * transaction this one may have left open (a server keeps it, and its
 * document locks, for transactionLifetimeLimitSeconds). */
static mongoc_client_session_t *pair_session(struct worker *w, bson_error_t *err)
{
	if (w->sess == NULL) {
		if ((w->sess = mongoc_client_start_session(w->client, NULL, err)) == NULL)
			return NULL;
		pthread_mutex_lock(&w->p->smu);
		if (w->lsid)
			bson_destroy(w->lsid);
		w->lsid = bson_copy(mongoc_client_session_get_lsid(w->sess));
		pair_status_locked(w->p);
		pthread_mutex_unlock(&w->p->smu);
	}
	return w->sess;
}

static void pair_drop_session(struct worker *w)
{
	if (w->sess)
		mongoc_client_session_destroy(w->sess);
	w->sess = NULL;
}

/* Remembers the sessions a previous process recorded for this pair. */
static void pair_load_old_session(struct pair *p)
{
	char key[96];
	bson_t old;
	bson_iter_t it;
	if (jnl_status_get(p->app->j, app_status_key(p->dst->uuid, p->src, key, sizeof key), &old) != 0)
		return;
	if (bson_iter_init_find(&it, &old, "lsids") && BSON_ITER_HOLDS_ARRAY(&it)) {
		const uint8_t *data;
		uint32_t len;
		bson_t l;
		bson_iter_array(&it, &len, &data);
		if (bson_init_static(&l, data, len))
			p->old_lsids = bson_copy(&l);
	}
	bson_destroy(&old);
}

/* Ends the previous process's sessions (and so their open transactions):
 * killSessions, or endSessions where that is missing.  Best effort. */
static void pair_kill_old_session(struct pair *p)
{
	const char *cmds[] = { "killSessions", "endSessions" };
	if (p->old_lsids == NULL)
		return;
	if (!bson_empty(p->old_lsids)) {
		for (int i = 0; i < 2; i++) {
			bson_t cmd = BSON_INITIALIZER;
			bson_error_t err;
			int ok;
			BSON_APPEND_ARRAY(&cmd, cmds[i], p->old_lsids);
			ok = mongoc_client_command_simple(p->client, "admin", &cmd, NULL, NULL, &err);
			bson_destroy(&cmd);
			if (ok || err.code != 59)
				break;
		}
	}
	bson_destroy(p->old_lsids);
	p->old_lsids = NULL;
}

/* ---- checkpoints ---------------------------------------------------------- */

/* Reads the destination's checkpoints for this source into each worker's
 * ckpt_ts, and where a restart must read from (*from, 0: the start).
 * 0, or an error.  Markers written with another number of workers make
 * the pair keep that number (entries are assigned by hash). */
static int load_checkpoint(struct pair *p, uint64_t *from, bson_error_t *err)
{
	mongoc_collection_t *coll = mongoc_client_get_collection(p->client, "mmm", "checkpoints");
	bson_t filter = BSON_INITIALIZER;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	uint64_t wfrom[MAX_WORKERS];
	int rc = 0, recorded = 0;

	for (int k = 0; k < MAX_WORKERS; k++) {
		p->workers[k].ckpt_ts = 0;
		wfrom[k] = 0;
	}
	BSON_APPEND_BINARY(&filter, "source", BSON_SUBTYPE_UUID, p->src, 16);
	cur = mongoc_collection_find_with_opts(coll, &filter, NULL, NULL);
	while (mongoc_cursor_next(cur, &doc)) {
		bson_iter_t it;
		uint32_t s, i;
		uint64_t t = 0, f = 0;
		const char *worker = NULL;
		uint8_t origin[16];
		int k;
		if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it))
			oplog_marker_parse(bson_iter_utf8(&it, NULL), origin, &worker);
		if (worker == NULL || worker[0] != 'w' || (k = atoi(worker + 1)) < 0 || k >= MAX_WORKERS)
			continue;      /* "ddl", or not a marker */
		if (bson_iter_init_find(&it, doc, "workers") && BSON_ITER_HOLDS_INT32(&it) &&
		    bson_iter_int32(&it) >= 1 && bson_iter_int32(&it) <= MAX_WORKERS)
			recorded = bson_iter_int32(&it);
		else if (!recorded)
			recorded = 1;      /* markers from before workers */
		if (bson_iter_init_find(&it, doc, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
			bson_iter_timestamp(&it, &s, &i);
			t = JNL_TS(s, i);
		}
		if (bson_iter_init_find(&it, doc, "from") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
			bson_iter_timestamp(&it, &s, &i);
			f = JNL_TS(s, i);
		}
		if (t > p->workers[k].ckpt_ts) {
			p->workers[k].ckpt_ts = t;
			wfrom[k] = f ? f : t;
		}
	}
	if (mongoc_cursor_error(cur, err))
		rc = MMM_ESERVER;
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(coll);
	bson_destroy(&filter);
	if (rc == 0 && recorded && recorded != p->nworkers) {
		log_info("apply of '%s' into '%s': keeping %d worker%s, as its checkpoints were written with",
		    p->src_name, p->dst->name, recorded, recorded == 1 ? "" : "s");
		p->nworkers = recorded;
	}
	*from = UINT64_MAX;
	p->ckpt_ts = UINT64_MAX;
	for (int k = 0; k < p->nworkers; k++) {
		struct worker *w = &p->workers[k];
		uint64_t r = w->ckpt_ts ? (wfrom[k] + 1 < w->ckpt_ts + 1 ? wfrom[k] + 1 : w->ckpt_ts + 1) : 0;
		if (r < *from)
			*from = r;
		if (w->ckpt_ts < p->ckpt_ts)
			p->ckpt_ts = w->ckpt_ts;
		w->skip_ts = w->ckpt_ts;
	}
	if (*from == UINT64_MAX)
		*from = 0;
	if (p->ckpt_ts == UINT64_MAX)
		p->ckpt_ts = 0;
	return rc;
}

/* Where a resumed read must start: the oldest open chain, else after TS. */
static uint64_t resume_from(const struct pair *p, uint64_t ts)
{
	uint64_t from = ts;
	for (int i = 0; i < MAX_CHAINS; i++)
		if (p->chains[i].used && p->chains[i].first_ts <= from)
			from = p->chains[i].first_ts - 1;
	return from;
}

static int upsert_marker(struct worker *w, mongoc_client_session_t *s, const uint8_t origin[16],
    uint64_t ts, uint64_t from, int64_t nonce, bson_error_t *err, bson_t *reply)
{
	struct pair *p = w->p;
	mongoc_collection_t *coll = mongoc_client_get_collection(w->client, "mmm", "checkpoints");
	bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, opts = BSON_INITIALIZER;
	char id[128];
	int ok;

	oplog_marker_id(origin, p->src, w->name, id, sizeof id);
	BSON_APPEND_UTF8(&sel, "_id", id);
	BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
	BSON_APPEND_BINARY(&set, "origin", BSON_SUBTYPE_UUID, origin, 16);
	BSON_APPEND_BINARY(&set, "source", BSON_SUBTYPE_UUID, p->src, 16);
	BSON_APPEND_TIMESTAMP(&set, "ts", JNL_TS_SEC(ts), JNL_TS_INC(ts));
	BSON_APPEND_TIMESTAMP(&set, "from", JNL_TS_SEC(from), JNL_TS_INC(from));
	BSON_APPEND_INT32(&set, "workers", p->nworkers);
	if (nonce)
		BSON_APPEND_INT64(&set, "n", nonce);   /* names the transaction for the conflict checker */
	bson_append_document_end(&upd, &set);
	BSON_APPEND_BOOL(&opts, "upsert", true);
	if (s && !mongoc_client_session_append(s, &opts, err)) {
		ok = 0;
		bson_init(reply);
	} else {
		ok = mongoc_collection_update_one(coll, &sel, &upd, &opts, reply, err);
	}
	mongoc_collection_destroy(coll);
	bson_destroy(&sel);
	bson_destroy(&upd);
	bson_destroy(&opts);
	return ok;
}

/* ---- executing a batch ---------------------------------------------------- */

static void split_ns(const char *ns, char *db, size_t dblen, char *coll, size_t clen)
{
	const char *dot = strchr(ns, '.');
	snprintf(db, dblen, "%.*s", dot ? (int)(dot - ns) : (int)strlen(ns), ns);
	snprintf(coll, clen, "%s", dot ? dot + 1 : "");
}

/* Reads, within the transaction, the documents whose first op needs them. */
static int prefetch(struct worker *w, mongoc_client_session_t *s, bson_error_t *err, bson_t *reply)
{
	struct docset *ds = &w->docs;
	int ok = 1;

	bson_init(reply);
	for (size_t i = 0; i < ds->n && ok; i++) {
		/* one query per namespace, for every document of it still to fetch */
		if (!ds->d[i].need_fetch || ds->d[i].known)
			continue;
		const char *ns = ds->d[i].ns;
		char db[LINK_NS_MAX], coll[LINK_NS_MAX], k[16];
		bson_t filter = BSON_INITIALIZER, sub, in, opts = BSON_INITIALIZER;
		size_t cnt = 0;
		const bson_t *doc;
		mongoc_collection_t *c;
		mongoc_cursor_t *cur;

		BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &sub);
		BSON_APPEND_ARRAY_BEGIN(&sub, "$in", &in);
		for (size_t jx = i; jx < ds->n; jx++) {
			struct docstate *d = &ds->d[jx];
			bson_iter_t it;
			if (!d->need_fetch || d->known || strcmp(d->ns, ns) != 0)
				continue;
			snprintf(k, sizeof k, "%zu", cnt++);
			bson_iter_init_find(&it, d->id, "_id");
			bson_append_iter(&in, k, -1, &it);
			d->known = 1;          /* absent unless the query returns it */
			d->have = 1;
			d->present = 0;
		}
		bson_append_array_end(&sub, &in);
		bson_append_document_end(&filter, &sub);
		split_ns(ns, db, sizeof db, coll, sizeof coll);
		c = mongoc_client_get_collection(w->client, db, coll);
		if (!mongoc_client_session_append(s, &opts, err)) {
			ok = 0;
		} else {
			cur = mongoc_collection_find_with_opts(c, &filter, &opts, NULL);
			while (mongoc_cursor_next(cur, &doc)) {
				bson_iter_t it;
				bson_t id = BSON_INITIALIZER;
				struct docstate *d;
				if (bson_iter_init_find(&it, doc, "_id"))
					bson_append_iter(&id, "_id", 3, &it);
				d = docset_get(ds, ns, &id, 0);
				bson_destroy(&id);
				if (d) {
					d->present = 1;
					ds_set_doc(d, bson_copy(doc), 1);
				}
			}
			if (mongoc_cursor_error_document(cur, err, &doc)) {
				ok = 0;
				bson_destroy(reply);
				bson_copy_to(doc, reply);
			}
			mongoc_cursor_destroy(cur);
		}
		mongoc_collection_destroy(c);
		bson_destroy(&filter);
		bson_destroy(&opts);
	}
	return ok;
}

/* Write order, first pass: compares OP's stamp with the newest write the
 * destination holds of its document.  Returns 1 when the op needs nothing
 * more in this pass (a re-derivation, or a write it already holds). */
static int order_op(struct pair *p, struct docstate *d, struct tr_op *op)
{
	int c;
	if (!d->looked) {
		cf_known(p->cf, d->key, &d->known_st);
		d->looked = 1;
	}
	op->skip = 0;
	if (stamp_cmp(&d->known_st, &d->horizon) > 0)
		d->horizon = d->known_st;
	if (op->kind == 'R') {
		if (stamp_cmp(&op->st, &d->horizon) > 0)
			d->horizon = op->st;
		if (stamp_cmp(&op->newer, &d->horizon) > 0)
			d->horizon = op->newer;
		d->rederive = 1;
		return 1;
	}
	c = stamp_is_zero(&d->known_st) ? 1 : stamp_cmp(&op->st, &d->known_st);
	if (c == 0) {
		op->skip = 1;      /* the destination holds this very write (folded in earlier) */
		return 1;
	}
	if (stamp_cmp(&op->st, &d->hi) > 0)
		d->hi = op->st;
	if (stamp_is_zero(&d->lo) || stamp_cmp(&op->st, &d->lo) < 0)
		d->lo = op->st;
	if (stamp_cmp(&op->st, &d->horizon) > 0)
		d->horizon = op->st;
	if (c < 0) {
		d->rederive = 1;   /* late: a newer write is there already */
		return 1;
	}
	return 0;
}

/* Looks up, in one go, the newest write the destination holds of every
 * document of ops [FROM, TO).  0 or ENOMEM. */
static int load_known(struct worker *w, size_t from, size_t to)
{
	struct docset *ds = &w->docs;
	uint64_t *h;
	struct stamp *st;
	for (size_t i = from; i < to; i++) {
		struct tr_op *op = &w->cbatch.ops[i];
		if (op->kind != 'c' && docset_get(ds, op->ns, op->id, 1) == NULL)
			return ENOMEM;
	}
	h = malloc((ds->n ? ds->n : 1) * sizeof *h);
	st = malloc((ds->n ? ds->n : 1) * sizeof *st);
	if (h == NULL || st == NULL) {
		free(h);
		free(st);
		return ENOMEM;
	}
	for (size_t k = 0; k < ds->n; k++)
		h[k] = ds->d[k].key;
	cf_known_many(w->p->cf, h, ds->n, st);
	for (size_t k = 0; k < ds->n; k++) {
		ds->d[k].known_st = st[k];
		ds->d[k].looked = 1;
	}
	free(h);
	free(st);
	return 0;
}

/* Re-derives, inside the transaction, every document with a late op or a
 * queued re-derivation (conflict.h), once the destination's capture holds
 * the transaction's snapshot.  0, or 1 (transient: retry). */
static int rederive(struct worker *w, mongoc_client_session_t *s, char *why, size_t whylen)
{
	struct pair *p = w->p;
	struct docset *ds = &w->docs;
	struct cf_doc *docs;
	size_t n = 0;
	uint32_t t = 0, i = 0;
	int rc;

	for (size_t k = 0; k < ds->n; k++)
		n += ds->d[k].rederive != 0;
	if (n == 0)
		return 0;
	if ((docs = calloc(n, sizeof *docs)) == NULL)
		return 1;
	mongoc_client_session_get_operation_time(s, &t, &i);
	if (t && cf_wait_capture(p->cf, JNL_TS(t, i), p->app->stop) != 0)
		log_debug("apply into '%s': capture has not reached %u:%u; re-deriving with what the journal holds",
		    p->dst->name, t, i);
	n = 0;
	for (size_t k = 0; k < ds->n; k++) {
		struct docstate *d = &ds->d[k];
		if (!d->rederive)
			continue;
		docs[n].ns = d->ns;
		docs[n].id = d->id;
		docs[n].current = d->present ? d->doc : NULL;
		docs[n].horizon = d->horizon;
		n++;
	}
	if ((rc = cf_rederive(p->cf, docs, n)) != 0) {
		snprintf(why, whylen, "cannot re-derive from journal '%s': %s", jnl_path(p->app->j), mmm_strerror(rc));
		free(docs);
		return 1;
	}
	n = 0;
	for (size_t k = 0; k < ds->n; k++) {
		struct docstate *d = &ds->d[k];
		if (!d->rederive)
			continue;
		ds_set_doc(d, docs[n].doc, 1);
		d->present = docs[n].present;
		d->known = d->have = d->touched = 1;
		d->first = 'r';
		d->npend = 0;
		d->fold_max = stamp_cmp(&docs[n].max, &d->hi) > 0 ? docs[n].max : d->hi;
		d->base = docs[n].base;
		d->how = docs[n].how;
		n++;
	}
	free(docs);
	return 0;
}

/* The conflict records of the batch: one per late op, one per queued
 * re-derivation of a late local write. */
static int collect_conflicts(struct worker *w, size_t from, size_t to)
{
	struct pair *p = w->p;
	w->nrecs = 0;
	for (size_t i = from; i < to; i++) {
		struct tr_op *op = &w->cbatch.ops[i];
		struct docstate *d;
		struct clog_rec *r;
		if (op->kind == 'c' || op->skip || (d = docset_get(&w->docs, op->ns, op->id, 0)) == NULL || !d->rederive)
			continue;
		if (op->kind == 'R' ? stamp_is_zero(&op->newer) : stamp_cmp(&op->st, &d->known_st) >= 0)
			continue;
		if (w->nrecs == w->caprecs) {
			size_t cap = w->caprecs ? w->caprecs * 2 : 16;
			struct clog_rec *nr = realloc(w->recs, cap * sizeof *nr);
			if (nr == NULL)
				return ENOMEM;
			w->recs = nr;
			w->caprecs = cap;
		}
		r = &w->recs[w->nrecs++];
		memset(r, 0, sizeof *r);
		r->ns = op->ns;
		r->id = op->id;
		memcpy(r->master, p->dst->uuid, 16);
		r->late = op->st;
		r->newer = op->kind == 'R' ? op->newer : d->known_st;
		r->base = d->base;
		r->how = d->how ? d->how : "degraded";
		r->result = d->present ? "replaced" : "deleted";
		r->at = mmm_wall_ms();
	}
	return 0;
}

/* Before the commit: the stamp each written document will carry, for the
 * checker (conflict.h). */
static void echo_record(struct worker *w)
{
	struct docset *ds = &w->docs;
	struct cf_echo_doc *e = malloc((ds->n ? ds->n : 1) * sizeof *e);
	size_t n = 0;

	for (size_t k = 0; e && k < ds->n; k++) {
		struct docstate *d = &ds->d[k];
		/* (a delete of a document the snapshot did not have writes nothing) */
		int written = (d->touched && (d->present || d->existed)) || d->npend;
		if (!written && !d->rederive && stamp_is_zero(&d->hi))
			continue;      /* (only skipped ops: nothing new) */
		e[n].h = d->key;
		e[n].st = d->rederive ? d->fold_max : d->hi;
		e[n].lo = d->rederive ? d->fold_max : d->lo;
		e[n].folded = d->rederive;
		e[n].ns = written ? NULL : d->ns;
		e[n].id = written ? NULL : d->id;
		n++;
	}
	if (e)
		cf_echo_put(w->p->cf, w->nonce, w->snap, e, n);
	free(e);
}

/* After the commit: raises what the destination is known to hold, logs
 * the conflicts and drops the re-derivations done. */
static void order_committed(struct worker *w, size_t from, size_t to)
{
	struct pair *p = w->p;
	struct docset *ds = &w->docs;
	uint64_t *h = malloc((ds->n ? ds->n : 1) * sizeof *h);
	struct stamp *st = malloc((ds->n ? ds->n : 1) * sizeof *st);
	struct cf_item *done = calloc(w->cbatch.n ? w->cbatch.n : 1, sizeof *done);
	size_t n = 0, nd = 0;
	int rc;

	for (size_t k = 0; h && st && k < ds->n; k++) {
		struct docstate *d = &ds->d[k];
		if (stamp_is_zero(&d->hi) && !d->rederive)
			continue;      /* (written or not: an update that found nothing counts) */
		h[n] = d->key;
		st[n++] = d->rederive ? d->fold_max : d->hi;
	}
	if (h && st)
		cf_applied(p->cf, h, st, n);
	for (size_t i = from; done && i < to; i++) {
		struct tr_op *op = &w->cbatch.ops[i];
		if (op->kind != 'R')
			continue;
		snprintf(done[nd].ns, sizeof done[nd].ns, "%s", op->ns);
		done[nd++].id = op->id;    /* (borrowed) */
	}
	if ((w->nrecs || nd) && (rc = cf_commit_log(p->cf, w->recs, w->nrecs, done, nd)) != 0)
		log_warnx("apply into '%s': cannot record %zu conflict%s in journal '%s': %s", p->dst->name,
		    w->nrecs, w->nrecs == 1 ? "" : "s", jnl_path(p->app->j), mmm_strerror(rc));
	w->nrecs = 0;
	free(h);
	free(st);
	free(done);
}

/* Runs the batch's ops against the document states: the first pass marks
 * what must be fetched (FETCH_PASS), the second computes post-images. */
static int simulate(struct worker *w, size_t from, size_t to, int fetch_pass, char *why, size_t whylen,
    uint64_t *bad_ts, const char **bad_ns)
{
	struct pair *p = w->p;
	struct docset *ds = &w->docs;
	for (size_t i = from; i < to; i++) {
		struct tr_op *op = &w->cbatch.ops[i];
		struct docstate *d;
		if (op->kind == 'c' || (op->skip && !fetch_pass))
			continue;
		if ((d = docset_get(ds, op->ns, op->id, 1)) == NULL)
			return ENOMEM;
		if (fetch_pass && p->cf && order_op(p, d, op))
			continue;
		if (!fetch_pass && d->rederive)
			continue;      /* its state comes from the journal (rederive()) */
		if (fetch_pass) {
			if (!d->known && !d->need_fetch && op->kind == 'u') {
				/* else sent as it is (pass 2) — not with conflicts: $set of a
				 * path creates what a diff would skip, and the document may
				 * not be the one the update was made on */
				if (op->mods == NULL || p->cf)
					d->need_fetch = 1;
			} else if (!d->known && !d->need_fetch && op->kind == 'd' && p->cf) {
				/* with conflicts, whether a delete found the document matters
				 * (a delete that finds nothing writes nothing: echo_record) */
				d->need_fetch = 1;
			} else if (!d->need_fetch && op->kind != 'u') {
				d->known = 1;      /* an insert, replacement or delete decides it */
			}
			continue;
		}
		d->order = i;
		if (d->first == 0)
			d->first = op->kind;
		if (op->kind == 'u' && !d->have) {
			/* nothing known of the document: send the update itself */
			if (d->npend == d->cappend) {
				size_t cap = d->cappend ? d->cappend * 2 : 4;
				bson_t **np = realloc(d->pend, cap * sizeof *np);
				if (np == NULL)
					return ENOMEM;
				d->pend = np;
				d->cappend = cap;
			}
			if (!bson_empty(op->mods))
				d->pend[d->npend++] = op->mods;
			continue;
		}
		if (op->kind != 'u') {
			d->have = 1;
			d->npend = 0;      /* superseded */
		}
		switch (op->kind) {
		case 'i':
		case 'r': {
			bson_iter_t it;
			if (bson_iter_init_find(&it, op->o, "_id")) {
				ds_set_doc(d, op->o, 0);
			} else {   /* a replacement without _id keeps the document's */
				bson_t *doc = bson_copy(op->id);
				bson_concat(doc, op->o);
				ds_set_doc(d, doc, 1);
			}
			d->present = d->known = d->touched = 1;
			break;
		}
		case 'd':
			ds_set_doc(d, NULL, 0);
			d->present = 0;
			d->known = d->touched = 1;
			break;
		case 'u': {
			bson_t out;
			char err[256];
			if (!d->present) {
				/* The document is not on the destination: an update matches
				 * nothing, as on the source's secondaries. */
				log_debug("update of a document missing on '%s' in %s", p->dst->name, op->ns);
				break;
			}
			if (diff_apply_update(d->doc, op->o, &out, err, sizeof err) != 0) {
				bson_destroy(&out);
				if (p->cf) {
					/* the document is not what the update was made on: a
					 * write it did not see came first; re-derive it */
					log_debug("update on '%s' in %s does not apply (%s): re-deriving", p->dst->name,
					    op->ns, err);
					cf_queue(p->cf, op->ns, op->id);
					break;
				}
				snprintf(why, whylen, "cannot apply update: %s", err);
				*bad_ts = op->ts;
				*bad_ns = op->ns;
				return MMM_EUSAGE;
			}
			ds_set_doc(d, bson_copy(&out), 1);
			bson_destroy(&out);
			d->touched = 1;
			break;
		}
		}
	}
	return 0;
}

/* How a document is written: 0 removed, 1 replaced (upsert), 2 updated,
 * 3 inserted (its first op in the batch was an insert: it is new, unless
 * the destination diverged — then the insert fails with a duplicate key and
 * commit_batch() retries the batch with upserts). */
static int write_kind(const struct worker *w, const struct docstate *d)
{
	if (!d->touched)
		return 2;
	if (d->present && d->first == 'i' && !w->upserts)
		return 3;
	return d->present ? 1 : 0;
}

static __thread const struct worker *sort_worker;

/* Writes go by namespace, then removes, replacements, updates (so that
 * mongoc sends few commands); documents are independent, and when a
 * reordering trips a unique index, flush_batch() retries entry by entry in
 * source order. */
static int cmp_order(const void *a, const void *b)
{
	const struct docstate *x = *(const struct docstate *const *)a, *y = *(const struct docstate *const *)b;
	int c = strcmp(x->ns, y->ns);
	if (c)
		return c;
	if (write_kind(sort_worker, x) != write_kind(sort_worker, y))
		return write_kind(sort_worker, x) - write_kind(sort_worker, y);
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Writes the final state of every touched document (and the updates of
 * documents whose state is unknown), one ordered bulk per namespace. */
static int write_docs(struct worker *w, mongoc_client_session_t *s, bson_error_t *err, bson_t *reply)
{
	struct pair *p = w->p;
	struct docset *ds = &w->docs;
	struct docstate **v = malloc((ds->n ? ds->n : 1) * sizeof *v);
	size_t n = 0;
	int ok = 1;

	bson_init(reply);
	if (v == NULL)
		return 0;
	for (size_t i = 0; i < ds->n; i++)
		if (ds->d[i].touched || ds->d[i].npend)
			v[n++] = &ds->d[i];
	sort_worker = w;   /* (qsort has no argument) */
	qsort(v, n, sizeof *v, cmp_order);
	for (size_t i = 0; i < n && ok;) {
		char db[LINK_NS_MAX], coll[LINK_NS_MAX];
		mongoc_collection_t *c;
		mongoc_bulk_operation_t *bulk;
		bson_t opts = BSON_INITIALIZER;
		size_t jx;

		split_ns(v[i]->ns, db, sizeof db, coll, sizeof coll);
		c = mongoc_client_get_collection(w->client, db, coll);
		BSON_APPEND_BOOL(&opts, "ordered", true);
		mongoc_client_session_append(s, &opts, NULL);
		bulk = mongoc_collection_create_bulk_operation_with_opts(c, &opts);
		for (jx = i; jx < n && ok && strcmp(v[jx]->ns, v[i]->ns) == 0; jx++) {
			struct docstate *d = v[jx];
			switch (write_kind(w, d)) {
			case 2:
				for (size_t k = 0; k < d->npend && ok; k++)
					ok = mongoc_bulk_operation_update_one_with_opts(bulk, d->id, d->pend[k], NULL, err);
				break;
			case 3:
				ok = mongoc_bulk_operation_insert_with_opts(bulk, d->doc, p->noval, err);
				break;
			case 1:
				ok = mongoc_bulk_operation_replace_one_with_opts(bulk, d->id, d->doc, p->upsert_noval, err);
				break;
			default:
				ok = mongoc_bulk_operation_remove_one_with_opts(bulk, d->id, NULL, err);
				break;
			}
		}
		if (ok) {
			bson_destroy(reply);
			ok = mongoc_bulk_operation_execute(bulk, reply, err) != 0;
		}
		mongoc_bulk_operation_destroy(bulk);
		mongoc_collection_destroy(c);
		bson_destroy(&opts);
		i = jx;
	}
	free(v);
	return ok;
}

/* Runs one command outside a transaction, after the DDL marker that names
 * its database (DESIGN.md §5), retrying transient failures.  Returns 0, -1
 * when asked to stop, or 1 for a permanent failure (WHY filled). */
static int ddl_exec(struct worker *w, const uint8_t origin[16], uint64_t ts, const char *db, const bson_t *cmd,
    const int ok_codes[4], char *why, size_t whylen)
{
	struct pair *p = w->p;
	mongoc_collection_t *mc = mongoc_client_get_collection(w->client, "mmm", "checkpoints");
	bson_t sel = BSON_INITIALIZER, doc = BSON_INITIALIZER, opts = BSON_INITIALIZER, reply;
	bson_error_t err;
	char id[128], target[512];
	int ok, rc = 0, backoff = 50;

	oplog_marker_id(origin, p->src, "ddl", id, sizeof id);
	BSON_APPEND_UTF8(&sel, "_id", id);
	BSON_APPEND_UTF8(&doc, "_id", id);
	BSON_APPEND_BINARY(&doc, "origin", BSON_SUBTYPE_UUID, origin, 16);
	BSON_APPEND_BINARY(&doc, "source", BSON_SUBTYPE_UUID, p->src, 16);
	BSON_APPEND_TIMESTAMP(&doc, "ts", JNL_TS_SEC(ts), JNL_TS_INC(ts));
	BSON_APPEND_UTF8(&doc, "cmd", oplog_cmd_target(db, cmd, target, sizeof target));
	BSON_APPEND_BOOL(&opts, "upsert", true);
	for (;;) {
		ok = mongoc_collection_replace_one(mc, &sel, &doc, &opts, NULL, &err);
		if (ok) {
			ok = mongoc_client_command_simple(w->client, db, cmd, NULL, &reply, &err);
			if (!ok)
				for (int k = 0; k < 4 && ok_codes[k]; k++)
					if ((int)err.code == ok_codes[k])
						ok = 1;    /* already done: a replay after a crash */
			if (!ok && !is_transient(&err, &reply)) {
				char *js = bson_as_relaxed_extended_json(cmd, NULL);
				snprintf(why, whylen, "%.500s failed: %s", js ? js : "command", err.message);
				bson_free(js);
				bson_destroy(&reply);
				rc = 1;
				break;
			}
			bson_destroy(&reply);
		} else if (!is_transient(&err, NULL)) {
			snprintf(why, whylen, "cannot write ddl marker: %s", err.message);
			rc = 1;
			break;
		}
		if (ok)
			break;
		if (*p->app->stop) {
			rc = -1;
			break;
		}
		if (!p->failed)
			snprintf(p->last_error, sizeof p->last_error, "%s", err.message);
		mmm_sleep_ms(backoff, p->app->stop);
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
	mongoc_collection_destroy(mc);
	bson_destroy(&sel);
	bson_destroy(&doc);
	bson_destroy(&opts);
	return rc;
}

/* Whether the create OP of a transaction can be left out: the collection
 * exists, or it has no options and the transaction writes into it, which
 * creates it inside the destination transaction (under its marker, so no
 * DDL bracket is opened that a local command could fall into). */
static int txn_create_needless(struct worker *w, const struct tr_op *op, size_t from, size_t to)
{
	bson_iter_t it;
	const char *coll;
	char ns[2 * LINK_NS_MAX + 2];
	mongoc_database_t *db;
	bson_t opts = BSON_INITIALIZER, filter;
	char **names;
	int exists = 0;

	if (!bson_iter_init(&it, op->o) || !bson_iter_next(&it) || strcmp(bson_iter_key(&it), "create") != 0 ||
	    !BSON_ITER_HOLDS_UTF8(&it))
		return 0;
	coll = bson_iter_utf8(&it, NULL);
	if (!bson_iter_next(&it)) {            /* no options */
		snprintf(ns, sizeof ns, "%s.%s", op->ns, coll);
		for (size_t i = from; i < to; i++) {
			const struct tr_op *o = &w->cbatch.ops[i];
			if ((o->kind == 'i' || o->kind == 'r') && strcmp(o->ns, ns) == 0)
				return 1;
		}
	}
	db = mongoc_client_get_database(w->client, op->ns);
	BSON_APPEND_DOCUMENT_BEGIN(&opts, "filter", &filter);
	BSON_APPEND_UTF8(&filter, "name", coll);
	bson_append_document_end(&opts, &filter);
	if ((names = mongoc_database_get_collection_names_with_opts(db, &opts, NULL)) != NULL) {
		exists = names[0] != NULL;
		bson_strfreev(names);
	}
	mongoc_database_destroy(db);
	bson_destroy(&opts);
	return exists;
}

/* Commits ops [FROM, TO) of the batch with the checkpoint at CKPT_TS in one
 * transaction.  Returns 0, 1 for a transient failure (retry), or
 * MMM_ESERVER / MMM_EUSAGE for a permanent one (why filled). */
static int run_txn(struct worker *w, size_t from, size_t to, uint64_t ckpt_ts, uint64_t resume, char *why, size_t whylen,
    uint64_t *bad_ts, const char **bad_ns)
{
	mongoc_client_session_t *s = NULL;
	bson_error_t err;
	bson_t reply = BSON_INITIALIZER;
	int rc = 0, ok;

	memset(&err, 0, sizeof err);
	docset_clear(&w->docs);
	/* a transaction's create/createIndexes: before it, idempotently */
	for (size_t i = from; i < to; i++) {
		struct tr_op *op = &w->cbatch.ops[i];
		if (op->kind != 'c' || txn_create_needless(w, op, from, to))
			continue;
		rc = ddl_exec(w, w->c_origin, op->ts, op->ns, op->o, op->ok_codes, why, whylen);
		if (rc != 0) {
			*bad_ts = op->ts;
			*bad_ns = op->ns;
			rc = rc < 0 ? 1 : MMM_ESERVER;
			goto out;
		}
	}
	if (w->p->cf && (rc = load_known(w, from, to)) != 0)
		goto out;
	if ((rc = simulate(w, from, to, 1, why, whylen, bad_ts, bad_ns)) != 0)
		goto out;
	for (size_t k = 0; w->p->cf && k < w->docs.n; k++)
		if (w->docs.d[k].rederive) {
			w->docs.d[k].need_fetch = 1;   /* (the base when the journal has no full image) */
			w->docs.d[k].known = 0;
		}
	w->nonce = w->p->cf ? cf_nonce(w->p->cf) : 0;
	if ((s = pair_session(w, &err)) == NULL) {
		rc = 1;
		snprintf(why, whylen, "%s", err.message);
		goto out;
	}
	w->snap = w->p->cf ? cf_journal_pos(w->p->cf) : 0;   /* (before the snapshot) */
	if (!mongoc_client_session_start_transaction(s, NULL, &err)) {
		rc = 1;
		snprintf(why, whylen, "%s", err.message);
		goto out;
	}
	bson_destroy(&reply);
	ok = upsert_marker(w, s, w->c_origin, ckpt_ts, resume, w->nonce, &err, &reply);
	if (ok) {
		bson_destroy(&reply);
		ok = prefetch(w, s, &err, &reply);
		for (size_t k = 0; ok && k < w->docs.n; k++)
			w->docs.d[k].existed = w->docs.d[k].present;
	}
	if (ok && w->p->cf && rederive(w, s, why, whylen) != 0) {
		mongoc_client_session_abort_transaction(s, NULL);
		rc = 1;
		goto out;
	}
	if (ok && (rc = simulate(w, from, to, 0, why, whylen, bad_ts, bad_ns)) != 0) {
		mongoc_client_session_abort_transaction(s, NULL);
		goto out;
	}
	if (ok) {
		bson_destroy(&reply);
		ok = write_docs(w, s, &err, &reply);
	}
	if (ok && w->p->cf) {
		if (collect_conflicts(w, from, to) != 0) {
			mongoc_client_session_abort_transaction(s, NULL);
			snprintf(why, whylen, "out of memory");
			rc = 1;
			goto out;
		}
		echo_record(w);
	}
	if (ok && (rc = fault_hit("apply_txn")) != 0) {
		snprintf(why, whylen, "fault apply_txn: %s", mmm_strerror(rc));
		mongoc_client_session_abort_transaction(s, NULL);
		rc = 1;
		goto out;
	}
	if (ok) {
		bson_destroy(&reply);
		ok = mongoc_client_session_commit_transaction(s, &reply, &err);
		for (int tries = 0; !ok && tries < 3 && err_has_label(&reply, "UnknownTransactionCommitResult"); tries++) {
			bson_destroy(&reply);
			ok = mongoc_client_session_commit_transaction(s, &reply, &err);
		}
	}
	if (!ok) {
		snprintf(why, whylen, "%s", err.message);
		rc = is_transient(&err, &reply) ? 1 : MMM_ESERVER;
		mongoc_client_session_abort_transaction(s, NULL);
		goto out;
	}
	if (w->p->cf)
		order_committed(w, from, to);
	fault_hit("apply_committed");
out:
	bson_destroy(&reply);
	return rc;
}

static void stop_pair(struct pair *p, uint64_t ts, const char *ns, const char *why)
{
	char t[32];
	int first;
	pthread_mutex_lock(&p->mu);      /* the first error stops the pair (workers race) */
	if ((first = !p->failed)) {
		snprintf(p->last_error, sizeof p->last_error, "apply of '%s' into '%s' stopped at %s (%s): %s",
		    p->src_name, p->dst->name, jnl_ts_str(ts, t, sizeof t), ns && ns[0] ? ns : "-", why);
		p->failed = 1;
	}
	pthread_mutex_unlock(&p->mu);
	if (!first)
		return;
	log_warnx("%s", p->last_error);
	set_state(p, "stopped");
}

/* Where a resume must start when the checkpoint is TS, an entry inside the
 * batch being committed: before every transaction of the batch that
 * started at or before TS and commits after it, and before the chains
 * open when the batch was handed over (c_from). */
static uint64_t entry_resume(const struct worker *w, uint64_t ts)
{
	uint64_t from = w->c_from < ts ? w->c_from : ts;
	for (size_t i = 0; i < w->cbatch.n; i++) {
		const struct tr_op *op = &w->cbatch.ops[i];
		if (op->ts > ts && op->first_ts && op->first_ts <= ts && op->first_ts - 1 < from)
			from = op->first_ts - 1;
	}
	return from;
}

/* Commits the handed-over batch (retrying transient failures).  On a
 * permanent failure, retries entry by entry to name the one that fails,
 * commits those before it, and stops the pair.  Committer thread. */
static void commit_batch(struct worker *w)
{
	struct pair *p = w->p;
	char why[512];
	int backoff = 50;
	uint64_t bad_ts = 0;
	const char *bad_ns = NULL;
	int rc;

	for (;;) {
		if (*p->app->stop)
			return;
		rc = run_txn(w, 0, w->cbatch.n, w->c_last_ts, w->c_from, why, sizeof why, &bad_ts, &bad_ns);
		if (rc == 0)
			break;
		if (rc == 1) {
			if (!p->failed)
				snprintf(p->last_error, sizeof p->last_error, "%s", why);
			set_state(p, "retrying");
			log_debug("apply into '%s': %s; retrying in %d ms", p->dst->name, why, backoff);
			mmm_sleep_ms(backoff, p->app->stop);
			backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
			continue;
		}
		if (rc == MMM_EUSAGE) {
			stop_pair(p, bad_ts, bad_ns, why);
			return;
		}
		if (!w->upserts) {
			/* perhaps a document the destination already has: upserts */
			w->upserts = 1;
			rc = run_txn(w, 0, w->cbatch.n, w->c_last_ts, w->c_from, why, sizeof why, &bad_ts, &bad_ns);
			if (rc == 0) {
				w->upserts = 0;
				break;
			}
			if (rc == 1) {
				w->upserts = 0;
				continue;
			}
		}
		/* A permanent server error: find the entry, commit what precedes it. */
		for (size_t i = 0; i < w->cbatch.n;) {
			size_t jx = i;
			uint64_t ts = w->cbatch.ops[i].ts;
			while (jx < w->cbatch.n && w->cbatch.ops[jx].ts == ts)
				jx++;
			do {
				rc = run_txn(w, i, jx, ts, entry_resume(w, ts), why, sizeof why, &bad_ts, &bad_ns);
				if (rc == 1)
					mmm_sleep_ms(100, p->app->stop);
			} while (rc == 1 && !*p->app->stop);
			if (rc != 0) {
				w->upserts = 0;
				if (!*p->app->stop)
					stop_pair(p, ts, w->cbatch.ops[i].ns, why);
				return;
			}
			w->ckpt_ts = ts;
			i = jx;
		}
		w->upserts = 0;
		break;   /* the failure did not come back entry by entry */
	}
	w->ckpt_ts = w->c_last_ts;
	p->applied_entries += w->cbatch.n;
	if (strcmp(p->state, "running") != 0 && !p->failed) {
		p->last_error[0] = '\0';
		set_state(p, "running");
	}
}

static void *committer_main(void *arg)
{
	struct worker *w = arg;
	struct pair *p = w->p;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!w->job && !p->quit)
			pthread_cond_wait(&p->cv, &p->mu);
		if (!w->job)
			break;
		pthread_mutex_unlock(&p->mu);
		commit_batch(w);
		tr_list_clear(&w->cbatch);
		pthread_mutex_lock(&p->mu);
		w->job = 0;
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Waits until worker W (NULL: every worker) is idle: 0, or -1 when the pair stopped. */
static int wait_idle(struct pair *p, struct worker *w)
{
	pthread_mutex_lock(&p->mu);
	for (int k = 0; k < p->nworkers; k++)
		while ((w == NULL || w == &p->workers[k]) && p->workers[k].job)
			pthread_cond_wait(&p->cv, &p->mu);
	pthread_mutex_unlock(&p->mu);
	return p->failed ? -1 : 0;
}

/* Hands W's pending batch to its committer (after the previous one is
 * done).  Returns 0, or -1 when the pair stopped or apply is stopping. */
static int flush_batch(struct worker *w)
{
	struct pair *p = w->p;
	struct tr_list t;
	if (w->batch.n == 0)
		return p->failed ? -1 : 0;
	if (wait_idle(p, w) != 0 || *p->app->stop)
		return -1;
	t = w->cbatch;
	w->cbatch = w->batch;
	w->batch = t;
	memcpy(w->c_origin, w->batch_origin, 16);
	/* (a batch of re-derivations only keeps the worker's checkpoint) */
	w->c_last_ts = p->batch_last_ts > w->ckpt_ts ? p->batch_last_ts : w->ckpt_ts;
	w->c_from = resume_from(p, w->c_last_ts);
	w->batch_bytes = 0;
	pthread_mutex_lock(&p->mu);
	w->job = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

/* While caught up: moves the checkpoint of each idle worker that lags
 * (a worker that got no document for a while, or none at all) to the last
 * entry read, with a transaction holding only its marker, so that a
 * restart does not read the journal again from far back for it. */
static void idle_markers(struct pair *p)
{
	if (p->nworkers == 1 || p->failed || *p->app->stop)
		return;
	for (int k = 0; k < p->nworkers; k++) {
		struct worker *w = &p->workers[k];
		int busy;
		pthread_mutex_lock(&p->mu);
		busy = w->job;
		pthread_mutex_unlock(&p->mu);
		if (busy || w->batch.n || w->ckpt_ts >= p->batch_last_ts)
			continue;
		memcpy(w->c_origin, p->src, 16);   /* (the source's own writes: the usual origin) */
		w->c_last_ts = p->batch_last_ts;
		w->c_from = resume_from(p, p->batch_last_ts);
		pthread_mutex_lock(&p->mu);
		w->job = 1;
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
}

/* Hands every worker's batch over; with WAIT, until all are committed. */
static int flush_all(struct pair *p, int wait)
{
	for (int k = 0; k < p->nworkers; k++)
		if (flush_batch(&p->workers[k]) != 0)
			return -1;
	return wait ? wait_idle(p, NULL) : 0;
}

/* Writes only the checkpoint (after DDL), in a transaction of its own. */
static int checkpoint_only(struct pair *p, const uint8_t origin[16], uint64_t ts)
{
	bson_error_t err;
	bson_t reply;
	int backoff = 50;
	for (;;) {
		mongoc_client_session_t *s = pair_session(&p->workers[0], &err);
		int ok = s && mongoc_client_session_start_transaction(s, NULL, &err);
		if (ok) {
			ok = upsert_marker(&p->workers[0], s, origin, ts, resume_from(p, ts), 0, &err, &reply);
			bson_destroy(&reply);
		}
		if (ok) {
			ok = mongoc_client_session_commit_transaction(s, &reply, &err);
			bson_destroy(&reply);
		}
		if (!ok && s && mongoc_client_session_in_transaction(s))
			mongoc_client_session_abort_transaction(s, NULL);
		if (ok) {
			p->workers[0].ckpt_ts = ts;
			return 0;
		}
		if (*p->app->stop)
			return -1;
		snprintf(p->last_error, sizeof p->last_error, "%s", err.message);
		mmm_sleep_ms(backoff, p->app->stop);
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
}

/* DDL: marker, command, checkpoint (DESIGN.md §5). */
static int run_ddl(struct pair *p, const bson_t *entry, uint64_t ts, const uint8_t origin[16], int own)
{
	struct tr_cmd *cmds;
	size_t n;
	char why[1024];
	const char *ns = "";
	bson_iter_t it;
	int rc;

	if (bson_iter_init_find(&it, entry, "ns") && BSON_ITER_HOLDS_UTF8(&it))
		ns = bson_iter_utf8(&it, NULL);
	rc = tr_ddl(entry, p->my_links, p->my_nlinks, own, &cmds, &n, why, sizeof why);
	if (rc != 0) {
		stop_pair(p, ts, ns, why);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		rc = ddl_exec(&p->workers[0], origin, ts, cmds[i].db, cmds[i].cmd, cmds[i].ok_codes, why, sizeof why);
		if (rc != 0) {
			tr_cmds_free(cmds, n);
			if (rc > 0)
				stop_pair(p, ts, ns, why);
			return -1;
		}
	}
	tr_cmds_free(cmds, n);
	if (n == 0)
		return 0;
	p->applied_entries++;
	return checkpoint_only(p, origin, ts);
}

/* ---- routing one entry ----------------------------------------------------- */

static struct chain *chain_find(struct pair *p, const uint8_t lsid[16], int64_t txn, int add, uint64_t ts)
{
	struct chain *free_slot = NULL;
	for (int i = 0; i < MAX_CHAINS; i++) {
		struct chain *c = &p->chains[i];
		if (c->used && c->txn == txn && memcmp(c->lsid, lsid, 16) == 0)
			return c;
		if (!c->used && !free_slot)
			free_slot = c;
	}
	if (!add || !free_slot)
		return NULL;
	memcpy(free_slot->lsid, lsid, 16);
	free_slot->txn = txn;
	free_slot->first_ts = ts;
	free_slot->used = 1;
	return free_slot;
}

static void chain_drop(struct chain *c)
{
	tr_list_free(&c->ops);
	c->used = 0;
}

static int o_flag(const bson_t *entry, const char *field)
{
	bson_iter_t it, o;
	return bson_iter_init_find(&it, entry, "o") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
	    bson_iter_recurse(&it, &o) && bson_iter_find(&o, field) && bson_iter_as_bool(&o);
}

/* Translates every op of an applyOps entry into OUT. */
static void set_stamps(struct tr_list *l, size_t from, int64_t wall, const uint8_t origin[16], uint64_t ts,
    uint32_t k)
{
	for (size_t i = from; i < l->n; i++) {
		l->ops[i].st.wall = wall;
		memcpy(l->ops[i].st.origin, origin, 16);
		l->ops[i].st.ts = ts;
		l->ops[i].st.k = k;
	}
}

/* Translates every op of an applyOps entry into OUT, each with its stamp
 * (WALL, ORIGIN, TS, its index in the array). */
static int applyops_ops(struct pair *p, const bson_t *entry, uint64_t ts, int64_t wall, const uint8_t origin[16],
    int own, struct tr_list *out, char *why, size_t len)
{
	bson_iter_t it, o, arr;
	uint32_t k = 0;
	if (!bson_iter_init_find(&it, entry, "o") || !bson_iter_recurse(&it, &o) ||
	    !bson_iter_find(&o, "applyOps") || !BSON_ITER_HOLDS_ARRAY(&o) || !bson_iter_recurse(&o, &arr))
		return snprintf(why, len, "applyOps without an array of ops"), MMM_EUSAGE;
	for (; bson_iter_next(&arr); k++) {
		const uint8_t *data;
		uint32_t dl;
		bson_t op;
		int rc;
		size_t n0 = out->n;
		if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
			return snprintf(why, len, "applyOps holds a non-document"), MMM_EUSAGE;
		bson_iter_document(&arr, &dl, &data);
		bson_init_static(&op, data, dl);
		bson_iter_t opit;
		if (bson_iter_init_find(&opit, &op, "op") && BSON_ITER_HOLDS_UTF8(&opit) &&
		    bson_iter_utf8(&opit, NULL)[0] == 'c') {
			if ((rc = tr_txn_cmd(&op, ts, p->my_links, p->my_nlinks, own, out, why, len)) != 0)
				return rc;
			continue;
		}
		if (bson_iter_init_find(&opit, &op, "op") && BSON_ITER_HOLDS_UTF8(&opit) &&
		    bson_iter_utf8(&opit, NULL)[0] == 'n')
			continue;
		if ((rc = tr_crud(&op, ts, p->my_links, p->my_nlinks, own, out, why, len)) != 0)
			return rc;
		set_stamps(out, n0, wall, origin, ts, k);
	}
	return 0;
}

/* Adds ops (one source unit) to the batch, flushing first when the origin
 * changes or the batch is full. */
static int worker_add(struct worker *w, struct tr_list *ops, const uint8_t origin[16], size_t bytes)
{
	if (w->batch.n && (memcmp(w->batch_origin, origin, 16) != 0 || w->batch.n + ops->n > BATCH_OPS ||
	    w->batch_bytes + bytes > BATCH_BYTES))
		if (flush_batch(w) != 0)
			return -1;
	memcpy(w->batch_origin, origin, 16);
	w->batch_bytes += bytes;
	return tr_list_move(&w->batch, ops) == 0 ? 0 : -1;
}

/* Adds the ops of one source unit to the batches.  A single entry's ops go
 * to the workers their (namespace, _id) hash to, skipping what each
 * worker's checkpoint covers; a transaction (BARRIER) goes whole to worker
 * 0, after every worker committed what precedes it and before anything
 * that follows (with one worker, simply into its batch). */
static int batch_add(struct pair *p, struct tr_list *ops, const uint8_t origin[16], size_t bytes, int barrier,
    uint64_t ts)
{
	struct tr_list one = { 0 };
	int rc = 0;

	for (size_t i = 0; i < ops->n; i++)
		if (ops->ops[i].kind == 'c')
			barrier = 1;
	if (p->nworkers == 1 || barrier) {
		struct worker *w0 = &p->workers[0];
		if (ts <= w0->skip_ts) {
			tr_list_clear(ops);
			return 0;
		}
		if (p->nworkers == 1)
			return worker_add(w0, ops, origin, bytes);
		if (flush_all(p, 1) != 0 || worker_add(w0, ops, origin, bytes) != 0)
			return -1;
		p->batch_last_ts = ts;     /* w0's checkpoint: this transaction */
		return flush_all(p, 1);
	}
	for (size_t i = 0; i < ops->n && rc == 0; i++) {
		struct tr_op *op = &ops->ops[i];
		struct worker *w = &p->workers[doc_key(op->ns, op->id) % (uint64_t)p->nworkers];
		if (ts <= w->skip_ts)
			continue;
		if (one.cap == 0 && (one.ops = malloc(sizeof *one.ops)) != NULL)
			one.cap = 1;
		if (one.ops == NULL) {
			rc = -1;
			break;
		}
		one.ops[0] = *op;
		one.n = 1;
		memset(op, 0, sizeof *op);   /* moved */
		rc = worker_add(w, &one, origin, bytes / (ops->n ? ops->n : 1));
	}
	tr_list_free(&one);
	tr_list_clear(ops);
	return rc;
}

/* Adds queued re-derivations of the destination's documents (conflict.h)
 * to the workers' batches.  0, or -1 when the pair stopped. */
static int take_rederive(struct pair *p)
{
	struct cf_item items[64];
	size_t n;
	if (p->cf == NULL || cf_pending(p->cf) == 0)
		return 0;
	n = cf_take(p->cf, items, 64);
	for (size_t i = 0; i < n; i++) {
		struct tr_list one = { 0 };
		struct worker *w = &p->workers[doc_key(items[i].ns, items[i].id) % (uint64_t)p->nworkers];
		struct tr_op *op;
		if ((one.ops = calloc(1, sizeof *one.ops)) == NULL) {
			cf_item_free(&items[i]);
			continue;
		}
		one.cap = one.n = 1;
		op = &one.ops[0];
		op->kind = 'R';
		memcpy(op->ns, items[i].ns, sizeof op->ns);
		op->id = items[i].id;      /* moved */
		op->st = items[i].late;
		op->newer = items[i].newer;
		op->ts = p->batch_last_ts;
		if (worker_add(w, &one, w->batch.n ? w->batch_origin : p->src, 0) != 0) {
			tr_list_free(&one);
			for (size_t k = i + 1; k < n; k++)
				cf_item_free(&items[k]);
			return -1;
		}
		tr_list_free(&one);
	}
	return 0;
}

/* Handles one journal entry.  Returns 0, or -1 when the pair stopped. */
static int route(struct pair *p, const struct jnl_entry *e)
{
	bson_t entry;
	struct oplog_info in;
	struct tr_list ops = { 0 };
	char why[512];
	int own, rc = 0;
	const char *cmd;
	uint64_t c_first = 0;

	bson_init_static(&entry, e->bson, e->len);
	if (oplog_info(&entry, &in) != 0) {
		stop_pair(p, e->ts, "", "journal entry without op, ns or ts");
		return -1;
	}
	if (memcmp(e->origin, p->dst->uuid, 16) == 0)
		goto consumed;            /* never back to where it was made */
	own = memcmp(e->origin, p->src, 16) == 0;
	if (in.op == 'n')
		goto consumed;
	if (in.op != 'c') {
		rc = tr_crud(&entry, e->ts, p->my_links, p->my_nlinks, own, &ops, why, sizeof why);
		set_stamps(&ops, 0, in.wall, e->origin, e->ts, 0);
		if (rc == 0 && ops.n)
			rc = batch_add(p, &ops, e->origin, e->len, 0, e->ts) ? -2 : 0;
		goto done;
	}
	cmd = tr_command_name(&entry);
	if (strcmp(cmd, "applyOps") == 0) {
		int partial = o_flag(&entry, "partialTxn"), prepare = o_flag(&entry, "prepare");
		struct chain *c = in.has_txn ? chain_find(p, in.lsid, in.txn_number, partial || prepare, e->ts) : NULL;
		if ((partial || prepare) && c == NULL && in.has_txn) {
			rc = MMM_EUSAGE;
			snprintf(why, sizeof why, "more than %d open transactions", MAX_CHAINS);
			goto done;
		}
		rc = applyops_ops(p, &entry, e->ts, in.wall, e->origin, own, c ? &c->ops : &ops, why, sizeof why);
		if (rc != 0 || partial || prepare)
			goto done;        /* wait for the rest of the transaction */
		if (c) {
			c_first = c->first_ts;
			tr_list_move(&c->ops, &ops);
			tr_list_move(&ops, &c->ops);
			chain_drop(c);
		}
		if (e->ts <= p->workers[0].skip_ts) {
			tr_list_clear(&ops);
			goto consumed;
		}
		if (c)
			for (size_t i = 0; i < ops.n; i++)
				ops.ops[i].first_ts = c_first;
		for (size_t i = 0; i < ops.n; i++)
			ops.ops[i].ts = e->ts;        /* the transaction commits at its last entry */
		if (ops.n)
			rc = batch_add(p, &ops, e->origin, e->len, in.has_txn || ops.n > 1, e->ts) ? -2 : 0;
		goto done;
	}
	if (strcmp(cmd, "commitTransaction") == 0 || strcmp(cmd, "abortTransaction") == 0) {
		struct chain *c = in.has_txn ? chain_find(p, in.lsid, in.txn_number, 0, 0) : NULL;
		if (c && strcmp(cmd, "commitTransaction") == 0 && e->ts > p->workers[0].skip_ts) {
			tr_list_move(&ops, &c->ops);
			for (size_t i = 0; i < ops.n; i++) {
				ops.ops[i].ts = e->ts;
				ops.ops[i].first_ts = c->first_ts;
			}
			if (ops.n)
				rc = batch_add(p, &ops, e->origin, e->len, 1, e->ts) ? -2 : 0;
		}
		if (c)
			chain_drop(c);
		goto done;
	}
	/* DDL: a barrier */
	if (e->ts <= p->workers[0].skip_ts)
		goto consumed;
	if (flush_all(p, 1) != 0) {
		rc = -2;
		goto done;
	}
	if (run_ddl(p, &entry, e->ts, e->origin, own) != 0)
		rc = -2;
	goto done;
consumed:
	;
done:
	if (rc == MMM_EUSAGE || (rc != 0 && rc != -2)) {
		stop_pair(p, e->ts, in.ns, rc == MMM_EUSAGE ? why : mmm_strerror(rc));
		rc = -2;
	}
	tr_list_free(&ops);
	if (rc != 0)
		return -1;
	p->consumed_ts = e->ts;
	if (in.wall)
		p->consumed_wall = in.wall;
	p->batch_last_ts = e->ts;
	return 0;
}

/* ---- threads ---------------------------------------------------------------- */

static void pair_reset(struct pair *p)
{
	wait_idle(p, NULL);
	for (int k = 0; k < MAX_WORKERS; k++) {
		tr_list_clear(&p->workers[k].cbatch);
		tr_list_clear(&p->workers[k].batch);
		p->workers[k].batch_bytes = 0;
	}
	for (int i = 0; i < MAX_CHAINS; i++)
		if (p->chains[i].used)
			chain_drop(&p->chains[i]);
}

/* Connects and starts workers [0, nworkers) that are not yet.  0, or an error message. */
static const char *pair_start_workers(struct pair *p, bson_error_t *err)
{
	for (int k = 0; k < p->nworkers; k++) {
		struct worker *w = &p->workers[k];
		if (w->client == NULL && (w->client = mmm_client_new(p->dst->uri, "mmm-apply", 2000, err)) == NULL)
			return err->message;
		if (!w->started) {
			if (pthread_create(&w->thread, NULL, committer_main, w) != 0)
				return "cannot start a thread";
			w->started = 1;
		}
	}
	p->client = p->workers[0].client;
	return NULL;
}

static void *pair_main(void *arg)
{
	struct pair *p = arg;
	struct app *app = p->app;
	int backoff = 100;

	while (!*app->stop && !p->failed) {
		struct jnl_reader *r = NULL;
		struct jnl_source src;
		bson_error_t err;
		uint64_t from;
		const char *msg;
		char tsb[32];
		int rc;

		pair_reset(p);
		pair_sync_links(p);
		for (size_t i = 0; p->rewind_to && i < p->my_nlinks; i++)
			for (size_t k = 0; k < p->rewind_n; k++)
				if (strcmp(p->my_links[i].id, p->rewind_ids[k]) == 0)
					p->my_links[i].applied_until = p->rewind_at;
		if (jnl_source_get(app->j, p->src, &src) != 0) {
			snprintf(p->last_error, sizeof p->last_error, "source '%s' is not in journal '%s' yet",
			    p->src_name, jnl_path(app->j));
			set_state(p, "waiting");
			mmm_sleep_ms(1000, app->stop);
			continue;
		}
		if ((msg = pair_start_workers(p, &err)) != NULL) {
			stop_pair(p, 0, "", msg);
			break;
		}
		pair_kill_old_session(p);
		set_state(p, "connecting");
		if (load_checkpoint(p, &from, &err) != 0) {
			snprintf(p->last_error, sizeof p->last_error, "cannot read checkpoint on '%s': %s",
			    p->dst->name, err.message);
			log_debug("%s", p->last_error);
			pair_status(p);
			mmm_sleep_ms(backoff, app->stop);
			backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
			continue;
		}
		if ((msg = pair_start_workers(p, &err)) != NULL) {   /* (the checkpoints may keep another number) */
			stop_pair(p, 0, "", msg);
			break;
		}
		if (p->rewind_to && from && p->rewind_to < from) {
			/* a new link starts before where the pair was: read again from there */
			from = p->rewind_to;
			for (int k = 0; k < p->nworkers; k++)
				if (p->workers[k].skip_ts >= p->rewind_to)
					p->workers[k].skip_ts = p->rewind_to - 1;
			if (p->ckpt_ts >= p->rewind_to)
				p->ckpt_ts = p->rewind_to - 1;
			log_info("apply of '%s' into '%s': a new link starts at %s, before the others: reading again from there",
			    p->src_name, p->dst->name, jnl_ts_str(p->rewind_to, tsb, sizeof tsb));
		}
		p->rewind_to = 0;
		if (from == 0) {
			/* No checkpoint (of some worker): start where the links say, else at the journal's start. */
			uint64_t start = UINT64_MAX;
			for (size_t i = 0; i < p->my_nlinks; i++)
				if (p->my_links[i].start_ts < start)
					start = p->my_links[i].start_ts;
			from = start == UINT64_MAX ? 0 : start;
		}
		p->consumed_ts = p->ckpt_ts;
		if (p->cf && cf_wait_checker(p->cf, app->stop) != 0)
			log_debug("apply into '%s': the conflict checker has not caught up yet", p->dst->name);
		if ((rc = jnl_reader_open(app->j, p->src, from, &r)) != 0) {
			stop_pair(p, from, "", mmm_strerror(rc));
			break;
		}
		p->last_error[0] = '\0';
		set_state(p, "running");
		backoff = 100;
		while (!*app->stop && !p->failed) {
			struct jnl_entry e;
			rc = jnl_reader_next(r, &e);
			if (rc == 0) {
				if (route(p, &e) != 0 || take_rederive(p) != 0)
					break;
				continue;
			}
			if (rc != MMM_EEND) {
				const struct jnl_block_info *b = jnl_reader_block(r);
				stop_pair(p, b ? b->first_ts : p->consumed_ts, "", mmm_strerror(rc));
				break;
			}
			/* caught up: commit what is pending, look at the links, wait */
			if (take_rederive(p) != 0 || flush_all(p, 0) != 0)
				break;
			if (p->links_gen != p->my_gen) {
				wait_idle(p, NULL);    /* (the committer reads the links in the status) */
				links_changed(p);
				break;           /* new links may need an earlier start: re-read */
			}
			if (mmm_mono_ms() - p->status_at >= STATUS_EVERY_MS) {
				pair_status(p);
				idle_markers(p);
			}
			mmm_sleep_ms(IDLE_WAIT_MS, NULL);
		}
		if (!p->failed && !*app->stop)
			flush_all(p, 0);
		jnl_reader_free(r);
	}
	pair_reset(p);
	pthread_mutex_lock(&p->mu);
	p->quit = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int k = 0; k < MAX_WORKERS; k++)
		if (p->workers[k].started) {
			pthread_join(p->workers[k].thread, NULL);
			p->workers[k].started = 0;
		}
	if (!p->failed)
		set_state(p, "stopped");
	pair_status(p);
	p->done = 1;
	return NULL;
}

static struct pair *dest_pair(struct dest *d, const uint8_t src[16], const char *name)
{
	struct pair *p, **np;
	for (size_t i = 0; i < d->npairs; i++)
		if (memcmp(d->pairs[i]->src, src, 16) == 0)
			return d->pairs[i];
	if ((p = calloc(1, sizeof *p)) == NULL)
		return NULL;
	if ((np = realloc(d->pairs, (d->npairs + 1) * sizeof *np)) == NULL) {
		free(p);
		return NULL;
	}
	d->pairs = np;
	d->pairs[d->npairs++] = p;
	p->app = d->app;
	p->cf = d->cf;
	p->dst = d->srv;
	memcpy(p->src, src, 16);
	snprintf(p->src_name, sizeof p->src_name, "%s", name);
	p->state = "starting";
	p->noval = BCON_NEW("validate", BCON_BOOL(false));
	p->upsert_noval = BCON_NEW("upsert", BCON_BOOL(true), "validate", BCON_BOOL(false));
	pthread_mutex_init(&p->mu, NULL);
	pthread_mutex_init(&p->smu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->nworkers = d->app->cfg->apply_workers;
	if (p->nworkers < 1 || p->nworkers > MAX_WORKERS)
		p->nworkers = 1;
	for (int k = 0; k < MAX_WORKERS; k++) {
		p->workers[k].p = p;
		p->workers[k].idx = k;
		snprintf(p->workers[k].name, sizeof p->workers[k].name, "w%d", k);
	}
	pair_load_old_session(p);
	p->my_gen = -1;
	return p;
}

static void *dest_main(void *arg)
{
	struct dest *d = arg;
	struct app *app = d->app;
	mongoc_client_t *c = NULL;
	int64_t next = 0;
	int warned = 0;
	int rc;

	if (app->cfg->apply_conflicts) {
		if ((rc = cf_open(app->j, d->srv, &d->cf)) != 0 || (rc = cf_start(d->cf, app->stop)) != 0) {
			log_warnx("apply into '%s': conflict handling is off: %s", d->srv->name, mmm_strerror(rc));
			cf_close(d->cf);
			d->cf = NULL;
		}
	}
	while (!*app->stop) {
		struct app_link *links = NULL;
		size_t n = 0;
		bson_error_t err;

		if (mmm_mono_ms() < next) {
			mmm_sleep_ms(50, app->stop);
			continue;
		}
		next = mmm_mono_ms() + LINKS_EVERY_MS;
		if (c == NULL && (c = mmm_client_new(d->srv->uri, "mmm-apply", 2000, &err)) == NULL) {
			log_warnx("apply into '%s': %s", d->srv->name, err.message);
			break;
		}
		if (links_read(c, &links, &n, &err) != 0) {
			if (!warned)
				log_info("cannot read links of '%s': %s; retrying", d->srv->name, err.message);
			warned = 1;
			next = mmm_mono_ms() + 500;
			continue;
		}
		warned = 0;
		/* Hand each pair its links (every pair, so removed links go too). */
		for (size_t i = 0; i < n; i++) {
			const struct cfg_server *s = cfg_server_by_uuid(app->cfg, links[i].src);
			if (dest_pair(d, links[i].src, s ? s->name : links[i].src_name) == NULL)
				break;
		}
		for (size_t pi = 0; pi < d->npairs; pi++) {
			struct pair *p = d->pairs[pi];
			size_t cnt = 0;
			struct app_link *mine = calloc(n ? n : 1, sizeof *mine);
			for (size_t i = 0; mine && i < n; i++)
				if (memcmp(links[i].src, p->src, 16) == 0)
					mine[cnt++] = links[i];
			pthread_mutex_lock(&p->mu);
			if (mine && (cnt != p->nlinks || memcmp(mine, p->links, cnt * sizeof *mine) != 0)) {
				free(p->links);
				p->links = mine;
				p->nlinks = cnt;
				p->links_gen++;
				mine = NULL;
			}
			pthread_mutex_unlock(&p->mu);
			free(mine);
			if (!p->started && p->nlinks) {
				if (memcmp(p->src, d->srv->uuid, 16) == 0) {
					log_warnx("link into '%s' names '%s' itself as its source: ignored", d->srv->name, p->src_name);
				} else if (pthread_create(&p->thread, NULL, pair_main, p) == 0) {
					p->started = 1;
					log_info("applying '%s' into '%s'", p->src_name, d->srv->name);
				}
			}
		}
		free(links);
	}
	for (size_t i = 0; i < d->npairs; i++) {
		struct pair *p = d->pairs[i];
		if (p->started)
			pthread_join(p->thread, NULL);
	}
	if (c)
		mongoc_client_destroy(c);
	cf_close(d->cf);
	d->cf = NULL;
	return NULL;
}

static void free_dest(struct dest *d)
{
	for (size_t i = 0; i < d->npairs; i++) {
		struct pair *p = d->pairs[i];
		for (int k = 0; k < MAX_WORKERS; k++) {
			struct worker *w = &p->workers[k];
			pair_drop_session(w);
			if (w->client)
				mongoc_client_destroy(w->client);
			if (w->lsid)
				bson_destroy(w->lsid);
			tr_list_free(&w->batch);
			tr_list_free(&w->cbatch);
			docset_free(&w->docs);
			free(w->recs);
		}
		if (p->old_lsids)
			bson_destroy(p->old_lsids);
		bson_destroy(p->noval);
		bson_destroy(p->upsert_noval);
		free(p->links);
		free(p->my_links);
		free(p->rewind_ids);
		pthread_cond_destroy(&p->cv);
		pthread_mutex_destroy(&p->smu);
		pthread_mutex_destroy(&p->mu);
		free(p);
	}
	free(d->pairs);
}

int app_run(const struct cfg *cfg, struct jnl *j, const size_t *dests, size_t n,
    volatile sig_atomic_t *stop)
{
	struct app app;
	struct dest *d = calloc(n ? n : 1, sizeof *d);
	int failed = 0;

	if (d == NULL)
		return 1;
	app.cfg = cfg;
	app.j = j;
	app.stop = stop;
	atomic_init(&app.fatal, 0);
	if (cfg->apply_workers > 1)
		log_debug("apply.workers is %d: this version applies each (destination, source) pair "
		    "with one worker (and one committer thread)", cfg->apply_workers);
	for (size_t i = 0; i < n; i++) {
		d[i].app = &app;
		d[i].srv = &cfg->servers[dests[i]];
		if (pthread_create(&d[i].thread, NULL, dest_main, &d[i]) != 0) {
			log_warn("cannot start apply thread for '%s'", d[i].srv->name);
			*stop = 1;
			n = i;
			failed = 1;
			break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		pthread_join(d[i].thread, NULL);
		for (size_t k = 0; k < d[i].npairs; k++)
			failed |= d[i].pairs[k]->failed;
		free_dest(&d[i]);
	}
	free(d);
	return failed ? 1 : 0;
}
