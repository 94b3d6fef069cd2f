/* capture.c — see capture.h. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <mongoc/mongoc.h>
#include "capture.h"
#include "err.h"
#include "fault.h"
#include "log.h"
#include "oplog.h"
#include "util.h"

#define TXN_SLOTS      256     /* open transactions whose origin is remembered */
#define DDL_LOOKAHEAD  64      /* entries a DDL marker waits for its command */
#define DDL_SLOTS      16      /* DDL brackets open at once (one per database) */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000
#define STATUS_MS      1000
#define RETRY_LOG_MS   60000   /* a persisting error is logged again after this */
#define AWAIT_MS       50      /* getMore wait: bounds how long an idle block stays open */
#define PIPE_DEPTH     8       /* batches queued between a source's reader and its writer */
#define WARMUP_SECS    30      /* journal seconds re-read at start to recover open transactions */

enum session_end { END_STOP, END_RETRY, END_FATAL };

/* One batch of kept entries on its way from the reader (the tailing thread)
 * to the writer thread, which compresses and commits it as one block: the
 * batch closes at the journal's block thresholds, so a batch is a block. */
struct cap_item {
	size_t off;
	uint32_t len;
	int has_origin;
	uint64_t ts;
	uint8_t origin[16];
};

struct cap_batch {
	uint8_t *raw;
	size_t len, cap;
	struct cap_item *items;
	size_t n, icap;
	int64_t opened;
};

/* The queue between reader and writer.  Batches circulate between the pool
 * (free), the reader (filling one) and the queue, so memory stays bounded. */
struct cap_pipe {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct cap_batch *pool[PIPE_DEPTH + 1];
	size_t npool;
	struct cap_batch *queue[PIPE_DEPTH];
	size_t head, count;
	int busy;                     /* the writer is working on a batch */
	int quit;
	int rc;                       /* the first journal failure, sticky */
	uint64_t committed_ts;        /* last kept ts durably in the journal */
	struct cap_batch *cur;        /* the reader's batch (reader only) */
	pthread_t thread;
	struct jnl_writer *w;
};

struct txn_slot {
	uint8_t lsid[16];
	int64_t txn;
	uint8_t origin[16];
	int used;
	uint64_t seq;
};

/* An open DDL bracket: apply announced a command on TARGET ("db.coll",
 * "db", or "" for any; oplog.h) for ORIGIN.  One per target, so that apply
 * links from different origins may run DDL on different targets at once. */
struct ddl_bracket {
	char db[256];                 /* the target */
	uint8_t origin[16];
	int ttl;                      /* kept entries it still waits; 0 = free */
};

struct cap_source {
	const struct cfg_server *srv;
	struct jnl *j;
	const struct cap_options *opt;
	volatile sig_atomic_t *stop;
	atomic_int *fatal;            /* shared: a journal failure stops everyone */
	pthread_t thread;
	int failed;
	struct cap_pipe pipe;
	uint64_t kept_ts;             /* last kept entry handed to the writer */
	/* status */
	const char *state;
	char last_error[512];
	uint64_t last_ts, server_ts;
	int64_t last_wall, server_wall;
	uint64_t entries, rate_entries;
	int64_t rate_since, status_at;
	double rate;
	/* origin tracking */
	struct txn_slot txns[TXN_SLOTS];
	uint64_t txn_seq;
	struct ddl_bracket ddl[DDL_SLOTS];
	int ddl_open;                 /* brackets with ttl > 0 */
};

/* A cheap clock for per-entry checks (a few ms of resolution is plenty). */
static int64_t coarse_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the writer thread -------------------------------------------------- */

static void batch_free(struct cap_batch *b)
{
	if (b) {
		free(b->raw);
		free(b->items);
		free(b);
	}
}

/* Waits for a free batch (the pipe's lock held). */
static struct cap_batch *pool_take(struct cap_pipe *p)
{
	while (p->npool == 0)
		pthread_cond_wait(&p->cond, &p->mu);
	return p->pool[--p->npool];
}

static void *writer_main(void *arg)
{
	struct cap_pipe *p = arg;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		struct cap_batch *b[PIPE_DEPTH];
		size_t nb = 0;
		uint64_t last = 0;
		int rc = 0;

		while (p->count == 0 && !p->quit)
			pthread_cond_wait(&p->cond, &p->mu);
		if (p->count == 0)
			break;
		/* Everything queued is sealed block by block and committed in one
		 * transaction: each block stays whole or absent, and a backlog
		 * costs one sync instead of one per block. */
		while (p->count) {
			b[nb++] = p->queue[p->head];
			p->head = (p->head + 1) % PIPE_DEPTH;
			p->count--;
		}
		p->busy = 1;
		rc = p->rc;
		pthread_mutex_unlock(&p->mu);
		/* Once the journal failed, batches are dropped: the reader stops. */
		for (size_t k = 0; k < nb && rc == 0; k++) {
			for (size_t i = 0; i < b[k]->n && rc == 0; i++) {
				const struct cap_item *it = &b[k]->items[i];
				rc = jnl_writer_add_trusted(p->w, b[k]->raw + it->off, it->len, it->ts,
				    it->has_origin ? it->origin : NULL);
				if (rc == 1)
					rc = 0;          /* sealed; committed below */
				last = it->ts;
			}
			if (rc == 0)
				rc = jnl_writer_seal(p->w);
		}
		if (rc == 0 && (rc = jnl_writer_commit(p->w)) == 0)
			rc = fault_hit("cap_committed");    /* tests: a crash between two of capture's commits */
		pthread_mutex_lock(&p->mu);
		if (rc != 0 && p->rc == 0)
			p->rc = rc;
		else if (rc == 0 && last)
			p->committed_ts = last;
		for (size_t k = 0; k < nb; k++) {
			b[k]->len = 0;
			b[k]->n = 0;
			p->pool[p->npool++] = b[k];
		}
		p->busy = 0;
		pthread_cond_broadcast(&p->cond);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static int pipe_start(struct cap_pipe *p, struct jnl *j, const uint8_t source[16])
{
	int rc;

	memset(p, 0, sizeof *p);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cond, NULL);
	for (size_t i = 0; i < PIPE_DEPTH + 1; i++) {
		if ((p->pool[i] = calloc(1, sizeof *p->pool[i])) == NULL)
			return ENOMEM;
		p->npool++;
	}
	if ((rc = jnl_writer_new(j, source, &p->w)) != 0)
		return rc;
	p->cur = p->pool[--p->npool];
	if ((rc = pthread_create(&p->thread, NULL, writer_main, p)) != 0) {
		jnl_writer_free(p->w);
		p->w = NULL;
		return rc;
	}
	pthread_setname_np(p->thread, "cap-writer");
	return 0;
}

/* Queues the reader's batch (when it holds anything) and takes a free one. */
static void pipe_push(struct cap_pipe *p)
{
	if (p->cur->n == 0)
		return;
	pthread_mutex_lock(&p->mu);
	while (p->count == PIPE_DEPTH)
		pthread_cond_wait(&p->cond, &p->mu);
	p->queue[(p->head + p->count) % PIPE_DEPTH] = p->cur;
	p->count++;
	pthread_cond_broadcast(&p->cond);
	p->cur = pool_take(p);
	pthread_mutex_unlock(&p->mu);
}

/* Queues what the reader holds and waits until the writer committed it all:
 * then the journal's last ts is the last kept entry.  Returns the writer's
 * first failure, or 0. */
static int pipe_drain(struct cap_pipe *p)
{
	int rc;
	pipe_push(p);
	pthread_mutex_lock(&p->mu);
	while (p->count || p->busy)
		pthread_cond_wait(&p->cond, &p->mu);
	rc = p->rc;
	pthread_mutex_unlock(&p->mu);
	return rc;
}

static int pipe_failed(struct cap_pipe *p)
{
	int rc;
	pthread_mutex_lock(&p->mu);
	rc = p->rc;
	pthread_mutex_unlock(&p->mu);
	return rc;
}

/* Adds one kept entry to the reader's batch; 1 when the batch is full (a
 * block by the journal's thresholds) and should be pushed. */
static int pipe_add(struct cap_pipe *p, const uint8_t *data, uint32_t len, uint64_t ts,
    const uint8_t *origin)
{
	struct cap_batch *b = p->cur;
	struct cap_item *it;

	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : JNL_BLOCK_MAX_RAW + 64 * 1024;
		uint8_t *nr;
		while (cap < b->len + len)
			cap *= 2;
		if ((nr = realloc(b->raw, cap)) == NULL)
			return -1;
		b->raw = nr;
		b->cap = cap;
	}
	if (b->n == b->icap) {
		size_t cap = b->icap ? b->icap * 2 : JNL_BLOCK_MAX_ENTRIES;
		struct cap_item *ni = realloc(b->items, cap * sizeof *ni);
		if (ni == NULL)
			return -1;
		b->items = ni;
		b->icap = cap;
	}
	if (b->n == 0)
		b->opened = coarse_ms();
	it = &b->items[b->n++];
	it->off = b->len;
	it->len = len;
	it->ts = ts;
	it->has_origin = origin != NULL;
	if (origin)
		memcpy(it->origin, origin, 16);
	memcpy(b->raw + b->len, data, len);
	b->len += len;
	return b->len >= JNL_BLOCK_MAX_RAW || b->n >= JNL_BLOCK_MAX_ENTRIES;
}

static int64_t pipe_age_ms(const struct cap_pipe *p)
{
	return p->cur->n ? coarse_ms() - p->cur->opened : 0;
}

/* Drains, stops the writer and frees everything. */
static void pipe_stop(struct cap_pipe *p)
{
	if (p->w) {
		pipe_drain(p);
		pthread_mutex_lock(&p->mu);
		p->quit = 1;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->mu);
		pthread_join(p->thread, NULL);
		jnl_writer_free(p->w);
		p->w = NULL;
	}
	batch_free(p->cur);
	for (size_t i = 0; i < p->npool; i++)
		batch_free(p->pool[i]);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cond);
}

const char *cap_status_key(const uint8_t uuid[16], char *buf, size_t len)
{
	char u[37];
	uuid_format(uuid, u);
	snprintf(buf, len, "capture/%s", u);
	return buf;
}

static void write_status(struct cap_source *cs)
{
	char key[64];
	bson_t doc;
	int64_t lag_ms = 0;

	if (cs->server_ts > cs->last_ts && cs->server_wall && cs->last_wall)
		lag_ms = cs->server_wall - cs->last_wall;
	if (lag_ms < 0)
		lag_ms = 0;
	bson_init(&doc);
	BSON_APPEND_UTF8(&doc, "name", cs->srv->name);
	BSON_APPEND_UTF8(&doc, "state", cs->state);
	BSON_APPEND_TIMESTAMP(&doc, "last_ts", JNL_TS_SEC(cs->last_ts), JNL_TS_INC(cs->last_ts));
	BSON_APPEND_DATE_TIME(&doc, "last_wall", cs->last_wall);
	BSON_APPEND_TIMESTAMP(&doc, "server_ts", JNL_TS_SEC(cs->server_ts), JNL_TS_INC(cs->server_ts));
	BSON_APPEND_DATE_TIME(&doc, "server_wall", cs->server_wall);
	BSON_APPEND_DOUBLE(&doc, "lag_s", (double)lag_ms / 1000.0);
	BSON_APPEND_DOUBLE(&doc, "rate", cs->rate);
	BSON_APPEND_INT64(&doc, "entries", (int64_t)cs->entries);
	BSON_APPEND_UTF8(&doc, "last_error", cs->last_error);
	BSON_APPEND_DATE_TIME(&doc, "updated", mmm_wall_ms());
	BSON_APPEND_INT32(&doc, "pid", (int32_t)getpid());
	if (jnl_status_put(cs->j, cap_status_key(cs->srv->uuid, key, sizeof key), &doc) != 0 &&
	    !jnl_poisoned(cs->j))
		log_debug("cannot write status of '%s'", cs->srv->name);
	bson_destroy(&doc);
	cs->status_at = mmm_mono_ms();
}

static void set_state(struct cap_source *cs, const char *state)
{
	if (cs->state != state) {
		cs->state = state;
		write_status(cs);
	}
}

/* ---- origins ------------------------------------------------------------ */

static struct txn_slot *txn_find(struct cap_source *cs, const uint8_t lsid[16], int64_t txn)
{
	for (int i = 0; i < TXN_SLOTS; i++)
		if (cs->txns[i].used && cs->txns[i].txn == txn && memcmp(cs->txns[i].lsid, lsid, 16) == 0)
			return &cs->txns[i];
	return NULL;
}

static void txn_remember(struct cap_source *cs, const uint8_t lsid[16], int64_t txn, const uint8_t origin[16])
{
	struct txn_slot *s = txn_find(cs, lsid, txn), *oldest = &cs->txns[0];
	if (s == NULL) {
		for (int i = 0; i < TXN_SLOTS && !s; i++) {
			if (!cs->txns[i].used)
				s = &cs->txns[i];
			else if (cs->txns[i].seq < oldest->seq)
				oldest = &cs->txns[i];
		}
		if (s == NULL)
			s = oldest;
	}
	memcpy(s->lsid, lsid, 16);
	s->txn = txn;
	memcpy(s->origin, origin, 16);
	s->used = 1;
	s->seq = ++cs->txn_seq;
}

static int o_flag(const bson_t *entry, const char *field)
{
	bson_iter_t it, o;
	return bson_iter_init_find(&it, entry, "o") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
	    bson_iter_recurse(&it, &o) && bson_iter_find(&o, field) && bson_iter_as_bool(&o);
}

static const char *o_first_key(const bson_t *entry)
{
	bson_iter_t it, o;
	if (bson_iter_init_find(&it, entry, "o") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
	    bson_iter_recurse(&it, &o) && bson_iter_next(&o))
		return bson_iter_key(&o);
	return "";
}

static void ddl_open(struct cap_source *cs, const char *db, size_t dblen, const uint8_t origin[16])
{
	struct ddl_bracket *b = NULL, *low = &cs->ddl[0];
	for (int i = 0; i < DDL_SLOTS && !b; i++) {
		struct ddl_bracket *x = &cs->ddl[i];
		if (x->ttl > 0 && strlen(x->db) == dblen && strncmp(x->db, db, dblen) == 0)
			b = x;
	}
	for (int i = 0; i < DDL_SLOTS && !b; i++) {
		if (cs->ddl[i].ttl <= 0)
			b = &cs->ddl[i];
		else if (cs->ddl[i].ttl < low->ttl)
			low = &cs->ddl[i];
	}
	if (b == NULL)
		b = low;
	if (b->ttl <= 0)
		cs->ddl_open++;
	snprintf(b->db, sizeof b->db, "%.*s", (int)dblen, db);
	memcpy(b->origin, origin, 16);
	b->ttl = DDL_LOOKAHEAD;
}

/* Apply's checkpoint transaction for ORIGIN closes that origin's brackets. */
static void ddl_close(struct cap_source *cs, const uint8_t origin[16])
{
	for (int i = 0; i < DDL_SLOTS && cs->ddl_open; i++)
		if (cs->ddl[i].ttl > 0 && memcmp(cs->ddl[i].origin, origin, 16) == 0) {
			cs->ddl[i].ttl = 0;
			cs->ddl_open--;
		}
}

/* The bracket covering the DDL entry ENTRY, or NULL. */
static struct ddl_bracket *ddl_find(struct cap_source *cs, const bson_t *entry)
{
	struct ddl_bracket *any = NULL;
	for (int i = 0; i < DDL_SLOTS; i++) {
		struct ddl_bracket *b = &cs->ddl[i];
		if (b->ttl <= 0 || !oplog_target_covers(b->db, entry))
			continue;
		if (b->db[0] == '\0')
			any = b;
		else
			return b;
	}
	return any;
}

/* One more kept entry went by without the brackets' commands. */
static void ddl_age(struct cap_source *cs)
{
	for (int i = 0; i < DDL_SLOTS && cs->ddl_open; i++)
		if (cs->ddl[i].ttl > 0 && --cs->ddl[i].ttl == 0)
			cs->ddl_open--;
}

/* Decides the origin of a kept entry: 1 and ORIGIN set when it is not the
 * source itself. */
static int entry_origin(struct cap_source *cs, const bson_t *entry, const struct oplog_info *in,
    uint8_t origin[16])
{
	if (in->op == 'c') {
		const char *cmd = o_first_key(entry);
		if (strcmp(cmd, "applyOps") == 0) {
			struct txn_slot *s = in->has_txn ? txn_find(cs, in->lsid, in->txn_number) : NULL;
			int found = 0, open_chain = o_flag(entry, "partialTxn") || o_flag(entry, "prepare");
			if (s) {
				memcpy(origin, s->origin, 16);
				found = 1;
			} else if (oplog_applyops_marker(entry, origin)) {
				found = 1;
				ddl_close(cs, origin);   /* apply's checkpoint closes its DDL bracket */
				if (in->has_txn && open_chain)
					txn_remember(cs, in->lsid, in->txn_number, origin);
			}
			if (s && !open_chain)
				s->used = 0;
			return found;
		}
		if (strcmp(cmd, "commitTransaction") == 0 || strcmp(cmd, "abortTransaction") == 0) {
			struct txn_slot *s = in->has_txn ? txn_find(cs, in->lsid, in->txn_number) : NULL;
			if (s) {
				memcpy(origin, s->origin, 16);
				s->used = 0;
				return 1;
			}
			return 0;
		}
		if (cs->ddl_open) {
			/* A DDL marker covers the commands on its target until apply's
			 * closing checkpoint transaction (one source command can log
			 * several: startIndexBuild + commitIndexBuild, drops + dropDatabase). */
			struct ddl_bracket *b;
			if ((b = ddl_find(cs, entry)) != NULL) {
				memcpy(origin, b->origin, 16);
				b->ttl = DDL_LOOKAHEAD;
				return 1;
			}
		}
	}
	if (cs->ddl_open)
		ddl_age(cs);
	return 0;
}

/* An excluded entry may be a DDL marker announcing the next command. */
static void note_marker(struct cap_source *cs, const bson_t *entry)
{
	uint8_t origin[16];
	int is_ddl;
	char cmd[256];
	if (oplog_marker_of_op(entry, origin, &is_ddl, cmd, sizeof cmd) && is_ddl)
		ddl_open(cs, cmd, strlen(cmd), origin);
}

/* ---- talking to the server ---------------------------------------------- */

/* Reads the newest write the server reports (hello's lastWrite). */
static void poll_server(struct cap_source *cs, mongoc_client_t *c)
{
	bson_t cmd = BSON_INITIALIZER, reply;
	bson_iter_t it, lw;
	BSON_APPEND_INT32(&cmd, "hello", 1);
	if (mongoc_client_command_simple(c, "admin", &cmd, NULL, &reply, NULL) &&
	    bson_iter_init_find(&it, &reply, "lastWrite") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
	    bson_iter_recurse(&it, &lw)) {
		while (bson_iter_next(&lw)) {
			if (strcmp(bson_iter_key(&lw), "lastWriteDate") == 0 && BSON_ITER_HOLDS_DATE_TIME(&lw)) {
				cs->server_wall = bson_iter_date_time(&lw);
			} else if (strcmp(bson_iter_key(&lw), "opTime") == 0 && BSON_ITER_HOLDS_DOCUMENT(&lw)) {
				bson_iter_t ot;
				uint32_t s, i;
				if (bson_iter_recurse(&lw, &ot) && bson_iter_find(&ot, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&ot)) {
					bson_iter_timestamp(&ot, &s, &i);
					cs->server_ts = JNL_TS(s, i);
				}
			}
		}
	}
	bson_destroy(&cmd);
	bson_destroy(&reply);
}

/* Records (and checks) which replica set this source is. */
static enum session_end check_identity(struct cap_source *cs, mongoc_client_t *c)
{
	bson_t cmd = BSON_INITIALIZER, reply;
	bson_iter_t it;
	bson_error_t err;
	char set_name[128] = "", set_id[64] = "";
	struct jnl_source src;
	int rc;

	BSON_APPEND_INT32(&cmd, "hello", 1);
	if (!mongoc_client_command_simple(c, "admin", &cmd, NULL, &reply, &err)) {
		snprintf(cs->last_error, sizeof cs->last_error, "%s", err.message);
		bson_destroy(&cmd);
		bson_destroy(&reply);
		return END_RETRY;
	}
	if (bson_iter_init_find(&it, &reply, "setName") && BSON_ITER_HOLDS_UTF8(&it))
		snprintf(set_name, sizeof set_name, "%s", bson_iter_utf8(&it, NULL));
	bson_destroy(&cmd);
	bson_destroy(&reply);
	/* replicaSetId lives in the replica set config (settings.replicaSetId). */
	bson_init(&cmd);
	BSON_APPEND_INT32(&cmd, "replSetGetConfig", 1);
	if (mongoc_client_command_simple(c, "admin", &cmd, NULL, &reply, NULL) &&
	    bson_iter_init(&it, &reply) && bson_iter_find_descendant(&it, "config.settings.replicaSetId", &it) &&
	    BSON_ITER_HOLDS_OID(&it))
		bson_oid_to_string(bson_iter_oid(&it), set_id);
	bson_destroy(&cmd);
	bson_destroy(&reply);
	rc = jnl_source_identity(cs->j, cs->srv->uuid, set_name, set_id);
	if (rc == MMM_EIDENTITY) {
		jnl_source_get(cs->j, cs->srv->uuid, &src);
		snprintf(cs->last_error, sizeof cs->last_error,
		    "server '%s' is replica set '%s'%s%s, but the journal recorded '%s'%s%s for it: refusing to capture",
		    cs->srv->name, set_name, set_id[0] ? " id " : "", set_id, src.set_name,
		    src.set_id[0] ? " id " : "", src.set_id);
		log_warnx("%s", cs->last_error);
		return END_FATAL;
	}
	if (rc != 0) {
		snprintf(cs->last_error, sizeof cs->last_error, "journal: %s", mmm_strerror(rc));
		log_warnx("cannot record identity of '%s': %s", cs->srv->name, mmm_strerror(rc));
		return END_FATAL;
	}
	return 0;
}

/* ts of the oldest (DIR 1) or newest (DIR -1) oplog entry, 0 when unknown. */
static uint64_t oplog_edge(mongoc_client_t *c, int dir)
{
	mongoc_collection_t *coll = mongoc_client_get_collection(c, "local", "oplog.rs");
	bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
	const bson_t *doc;
	uint64_t ts = 0;
	mongoc_cursor_t *cur;

	BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
	BSON_APPEND_INT32(&sort, "$natural", dir);
	bson_append_document_end(&opts, &sort);
	BSON_APPEND_INT64(&opts, "limit", 1);
	cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
	if (mongoc_cursor_next(cur, &doc))
		jnl_entry_ts(bson_get_data(doc), doc->len, &ts);
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(coll);
	bson_destroy(&filter);
	bson_destroy(&opts);
	return ts;
}

static enum session_end report_gap(struct cap_source *cs, mongoc_client_t *c, uint64_t want)
{
	char a[32], b[32];
	uint64_t oldest = oplog_edge(c, 1);
	snprintf(cs->last_error, sizeof cs->last_error,
	    "oplog of '%s' no longer holds %s (oldest is %s): resync needed", cs->srv->name,
	    jnl_ts_str(want, a, sizeof a), oldest ? jnl_ts_str(oldest, b, sizeof b) : "unknown");
	log_warnx("%s", cs->last_error);
	set_state(cs, "gap");
	return END_FATAL;
}

/* Where `mmm replicate` recorded that a new link of this source starts
 * ("capture-from/<uuid>" in the journal's status records): 1 and *ts set. */
static int capture_hint(struct cap_source *cs, uint64_t *ts)
{
	char key[64], u[37];
	bson_t doc;
	bson_iter_t it;
	int found = 0;

	uuid_format(cs->srv->uuid, u);
	snprintf(key, sizeof key, "capture-from/%s", u);
	if (jnl_status_get(cs->j, key, &doc) != 0)
		return 0;
	if (bson_iter_init_find(&it, &doc, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
		uint32_t sec, inc;
		bson_iter_timestamp(&it, &sec, &inc);
		*ts = JNL_TS(sec, inc);
		found = *ts != 0;
	}
	bson_destroy(&doc);
	return found;
}

static int capture_hint_put(struct cap_source *cs, uint64_t ts)
{
	char key[64], u[37];
	bson_t doc = BSON_INITIALIZER;
	int rc;

	uuid_format(cs->srv->uuid, u);
	snprintf(key, sizeof key, "capture-from/%s", u);
	BSON_APPEND_TIMESTAMP(&doc, "ts", JNL_TS_SEC(ts), JNL_TS_INC(ts));
	BSON_APPEND_UTF8(&doc, "by", "mmm-capture");
	rc = jnl_status_put(cs->j, key, &doc);
	bson_destroy(&doc);
	return rc;
}

/* Re-reads the newest journaled entries of this source (WARMUP_SECS of
 * oplog time) so that a transaction chain or DDL bracket that was open when
 * the previous run stopped keeps its origin. */
static void warm_up(struct cap_source *cs, uint64_t last_ts)
{
	struct jnl_reader *r;
	struct jnl_entry e;
	uint32_t sec = JNL_TS_SEC(last_ts);
	uint64_t n = 0;

	if (jnl_reader_open(cs->j, cs->srv->uuid, JNL_TS(sec > WARMUP_SECS ? sec - WARMUP_SECS : 0, 0), &r) != 0)
		return;
	while (jnl_reader_next(r, &e) == 0) {
		bson_t doc;
		struct oplog_info in;
		const char *cmd;
		int foreign = memcmp(e.origin, cs->srv->uuid, 16) != 0;

		n++;
		if (!bson_init_static(&doc, e.bson, e.len) || oplog_info(&doc, &in) != 0)
			continue;
		cmd = in.op == 'c' ? o_first_key(&doc) : "";
		if (strcmp(cmd, "applyOps") == 0) {
			int open_chain = o_flag(&doc, "partialTxn") || o_flag(&doc, "prepare");
			struct txn_slot *s = in.has_txn ? txn_find(cs, in.lsid, in.txn_number) : NULL;
			if (foreign)
				ddl_close(cs, e.origin);
			if (in.has_txn && open_chain && foreign)
				txn_remember(cs, in.lsid, in.txn_number, e.origin);
			else if (s && !open_chain)
				s->used = 0;
			continue;
		}
		if (strcmp(cmd, "commitTransaction") == 0 || strcmp(cmd, "abortTransaction") == 0) {
			struct txn_slot *s = in.has_txn ? txn_find(cs, in.lsid, in.txn_number) : NULL;
			if (s)
				s->used = 0;
			continue;
		}
		if (in.op == 'c' && foreign) {
			char desc[300];
			const char *target;
			if (oplog_ddl_desc(&doc, desc, sizeof desc)[0] && (target = strchr(desc, ' ')) != NULL) {
				ddl_open(cs, target + 1, strlen(target + 1), e.origin);
				continue;
			}
		}
		if (cs->ddl_open)
			ddl_age(cs);
	}
	jnl_reader_free(r);
	log_debug("capture of '%s': re-read %llu journaled entries for open transactions", cs->srv->name,
	    (unsigned long long)n);
}

/* The last entry the journal holds for this source, copied into *out. */
static int journal_last_entry(struct cap_source *cs, uint64_t ts, bson_t *out)
{
	struct jnl_reader *r;
	struct jnl_entry e;
	int rc = jnl_reader_open(cs->j, cs->srv->uuid, ts, &r);
	if (rc != 0)
		return rc;
	rc = jnl_reader_next(r, &e);
	if (rc == 0 && e.ts == ts) {
		bson_t tmp;
		bson_init_static(&tmp, e.bson, e.len);
		bson_copy_to(&tmp, out);
	} else if (rc == 0) {
		rc = MMM_ENOTFOUND;
	}
	jnl_reader_free(r);
	return rc;
}

static enum session_end journal_failed(struct cap_source *cs, int rc)
{
	if (rc == EBUSY)     /* jnl_writer_new: the source's writer lock is held */
		snprintf(cs->last_error, sizeof cs->last_error,
		    "journal '%s': source is already being captured by another process (pid %d)",
		    jnl_path(cs->j), jnl_writer_pid(cs->j, cs->srv->uuid));
	else
		snprintf(cs->last_error, sizeof cs->last_error, "journal '%s': %s", jnl_path(cs->j), mmm_strerror(rc));
	log_warnx("capture of '%s' stopped: %s", cs->srv->name, cs->last_error);
	atomic_store(cs->fatal, 1);
	return END_FATAL;
}

static int is_retryable(const bson_error_t *err)
{
	/* CappedPositionLost is handled as a gap before this is asked. */
	(void)err;
	return 1;
}

/* One connected run: tail until an error, a stop request or a gap. */
static enum session_end session(struct cap_source *cs, mongoc_client_t *c, mongoc_client_t *poll,
    int *progressed)
{
	mongoc_collection_t *coll = NULL;
	mongoc_cursor_t *cur = NULL;
	bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, range, last = BSON_INITIALIZER;
	const bson_t *doc;
	bson_error_t err;
	struct jnl_source src;
	uint64_t start = 0;
	int resuming = 0, first = 1, rc;
	enum session_end end = END_RETRY;
	char a[32];

	if ((end = check_identity(cs, c)) != 0)
		goto out;
	end = END_RETRY;
	if ((rc = jnl_source_get(cs->j, cs->srv->uuid, &src)) != 0) {
		end = journal_failed(cs, rc);
		goto out;
	}
	if (src.last_ts) {
		start = src.last_ts;
		resuming = 1;
		if ((rc = journal_last_entry(cs, start, &last)) != 0) {
			end = journal_failed(cs, rc);
			goto out;
		}
	} else if (cs->opt->have_from || capture_hint(cs, &start)) {
		/* --from, or where `mmm replicate` said a link starts (capture_hint) */
		uint64_t oldest = oplog_edge(c, 1);
		if (cs->opt->have_from)
			start = cs->opt->from_ts;
		if (oldest == 0) {
			snprintf(cs->last_error, sizeof cs->last_error, "cannot read the oplog of '%s'", cs->srv->name);
			goto out;
		}
		if (oldest > start) {
			end = report_gap(cs, c, start);
			goto out;
		}
	} else {
		start = oplog_edge(c, -1);
		if (start == 0) {
			snprintf(cs->last_error, sizeof cs->last_error, "cannot read the oplog of '%s'", cs->srv->name);
			goto out;
		}
		/* Remembered, so that a restart before the first block commits
		 * starts here too instead of at a newer entry. */
		if ((rc = capture_hint_put(cs, start)) != 0) {
			end = journal_failed(cs, rc);
			goto out;
		}
		log_info("capture of '%s' starts at its newest oplog entry %s", cs->srv->name,
		    jnl_ts_str(start, a, sizeof a));
	}
	if (resuming) {
		uint64_t newest = oplog_edge(c, -1);
		char b[32];
		if (newest && newest < start) {
			snprintf(cs->last_error, sizeof cs->last_error,
			    "oplog of '%s' ends at %s, before the journal's last entry %s (rolled back, or another server?): resync needed",
			    cs->srv->name, jnl_ts_str(newest, a, sizeof a), jnl_ts_str(start, b, sizeof b));
			log_warnx("%s", cs->last_error);
			set_state(cs, "gap");
			end = END_FATAL;
			goto out;
		}
	}

	BSON_APPEND_DOCUMENT_BEGIN(&filter, "ts", &range);
	BSON_APPEND_TIMESTAMP(&range, "$gte", JNL_TS_SEC(start), JNL_TS_INC(start));
	bson_append_document_end(&filter, &range);
	BSON_APPEND_BOOL(&opts, "tailable", true);
	BSON_APPEND_BOOL(&opts, "awaitData", true);
	BSON_APPEND_INT64(&opts, "maxAwaitTimeMS", AWAIT_MS);
	coll = mongoc_client_get_collection(c, "local", "oplog.rs");
	cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
	set_state(cs, "running");
	cs->last_error[0] = '\0';

	while (!*cs->stop && !atomic_load(cs->fatal)) {
		if (mongoc_cursor_next(cur, &doc)) {
			struct oplog_info in;
			uint8_t origin[16];
			int has_origin;

			if (oplog_info(doc, &in) != 0) {
				snprintf(cs->last_error, sizeof cs->last_error,
				    "oplog of '%s' returned an entry without op/ns/ts after %s", cs->srv->name,
				    jnl_ts_str(cs->last_ts, a, sizeof a));
				log_warnx("%s", cs->last_error);
				end = END_FATAL;
				break;
			}
			if (first) {
				first = 0;
				if (resuming) {
					if (in.ts != start) {
						end = report_gap(cs, c, start);
						break;
					}
					if (doc->len != last.len || memcmp(bson_get_data(doc), bson_get_data(&last), last.len) != 0) {
						snprintf(cs->last_error, sizeof cs->last_error,
						    "oplog of '%s' holds a different entry at %s than the journal (rolled back?): resync needed",
						    cs->srv->name, jnl_ts_str(start, a, sizeof a));
						log_warnx("%s", cs->last_error);
						set_state(cs, "gap");
						end = END_FATAL;
						break;
					}
					continue;       /* already journaled */
				}
			}
			cs->last_ts = in.ts;
			if (in.wall)
				cs->last_wall = in.wall;
			if (oplog_ns_excluded(in.ns)) {
				note_marker(cs, doc);
				continue;
			}
			has_origin = entry_origin(cs, doc, &in, origin);
			rc = pipe_add(&cs->pipe, bson_get_data(doc), doc->len, in.ts, has_origin ? origin : NULL);
			if (rc < 0) {
				end = journal_failed(cs, ENOMEM);
				break;
			}
			cs->kept_ts = in.ts;
			cs->entries++;
			cs->rate_entries++;
			*progressed = 1;
			if (rc == 1 || pipe_age_ms(&cs->pipe) >= JNL_BLOCK_MAX_AGE_MS) {
				pipe_push(&cs->pipe);
				if ((rc = pipe_failed(&cs->pipe)) != 0) {
					end = journal_failed(cs, rc);
					break;
				}
			}
		} else if (mongoc_cursor_error(cur, &err)) {
			if (err.code == 136) {    /* CappedPositionLost */
				if ((rc = pipe_drain(&cs->pipe)) != 0) {
					end = journal_failed(cs, rc);
					break;
				}
				end = report_gap(cs, c, cs->kept_ts ? cs->kept_ts : start);
				break;
			}
			snprintf(cs->last_error, sizeof cs->last_error, "%s", err.message);
			if (!is_retryable(&err))
				end = END_FATAL;
			break;
		} else if (!mongoc_cursor_more(cur)) {
			snprintf(cs->last_error, sizeof cs->last_error, "oplog cursor of '%s' closed", cs->srv->name);
			break;
		} else {
			/* The cursor had nothing for AWAIT_MS: whatever is open goes out. */
			pipe_push(&cs->pipe);
			if ((rc = pipe_failed(&cs->pipe)) != 0) {
				end = journal_failed(cs, rc);
				break;
			}
		}
		if (coarse_ms() - cs->status_at >= STATUS_MS) {
			int64_t now = mmm_mono_ms();
			cs->rate = (double)cs->rate_entries * 1000.0 / (double)(now - cs->rate_since > 0 ? now - cs->rate_since : 1);
			cs->rate_entries = 0;
			cs->rate_since = now;
			poll_server(cs, poll);
			write_status(cs);
		}
	}
	if (*cs->stop && end == END_RETRY)
		end = END_STOP;
out:
	if ((rc = pipe_drain(&cs->pipe)) != 0 && end != END_FATAL)
		end = journal_failed(cs, rc);
	mongoc_cursor_destroy(cur);
	if (coll)
		mongoc_collection_destroy(coll);
	bson_destroy(&filter);
	bson_destroy(&opts);
	bson_destroy(&last);
	return end;
}

static void *source_main(void *arg)
{
	struct cap_source *cs = arg;
	int backoff = BACKOFF_MIN_MS, rc;
	struct jnl_source src;
	char logged[sizeof cs->last_error] = "";
	int64_t logged_at = 0;

	pthread_setname_np(pthread_self(), "cap-reader");
	if ((rc = pipe_start(&cs->pipe, cs->j, cs->srv->uuid)) != 0) {
		journal_failed(cs, rc);
		cs->failed = 1;
		pipe_stop(&cs->pipe);
		return NULL;
	}
	if (jnl_source_get(cs->j, cs->srv->uuid, &src) == 0) {
		cs->last_ts = src.last_ts;
		cs->last_wall = src.last_wall;
		if (src.last_ts)
			warm_up(cs, src.last_ts);
	}
	cs->rate_since = mmm_mono_ms();
	while (!*cs->stop && !atomic_load(cs->fatal)) {
		bson_error_t err;
		mongoc_client_t *c, *poll = NULL;
		int progressed = 0;
		enum session_end end;

		if (strcmp(cs->state, "running") != 0 || cs->last_error[0])
			set_state(cs, "connecting");
		/* Two clients: a single-threaded libmongoc client runs no command
		 * while its tailable cursor waits, and status needs hello. */
		if ((c = mmm_client_new(cs->srv->uri, "mmm-capture", 2000, &err)) == NULL ||
		    (poll = mmm_client_new(cs->srv->uri, "mmm-capture", 2000, &err)) == NULL) {
			snprintf(cs->last_error, sizeof cs->last_error, "%s", err.message);
			log_warnx("capture of '%s': %s", cs->srv->name, err.message);
			end = END_FATAL;
		} else {
			end = session(cs, c, poll, &progressed);
		}
		if (poll)
			mongoc_client_destroy(poll);
		if (c)
			mongoc_client_destroy(c);
		if (end == END_STOP)
			break;
		if (end == END_FATAL) {
			cs->failed = 1;
			if (strcmp(cs->state, "gap") != 0)
				set_state(cs, "stopped");
			break;
		}
		if (cs->last_error[0]) {
			int64_t now = mmm_mono_ms();
			if (progressed)
				backoff = BACKOFF_MIN_MS;
			set_state(cs, "connecting");
			/* One line per new error; a long outage repeats it once a minute. */
			if (strcmp(cs->last_error, logged) != 0 || now - logged_at >= RETRY_LOG_MS) {
				log_info("capture of '%s': %s; retrying in %d ms", cs->srv->name, cs->last_error, backoff);
				snprintf(logged, sizeof logged, "%s", cs->last_error);
				logged_at = now;
			}
			write_status(cs);
			for (int waited = 0; waited < backoff && !*cs->stop; waited += 20)
				usleep(20 * 1000);
			backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
		} else {
			backoff = BACKOFF_MIN_MS;
		}
	}
	if (!cs->failed)
		set_state(cs, "stopped");
	pipe_stop(&cs->pipe);
	write_status(cs);
	return NULL;
}

static void mongoc_log_to_ours(mongoc_log_level_t level, const char *domain, const char *message, void *arg)
{
	(void)arg;
	if (level <= MONGOC_LOG_LEVEL_WARNING)
		log_debug("libmongoc %s: %s", domain, message);
}

int cap_run(const struct cfg *cfg, struct jnl *j, const size_t *servers, size_t n,
    const struct cap_options *opt, volatile sig_atomic_t *stop)
{
	struct cap_source *cs = calloc(n ? n : 1, sizeof *cs);
	atomic_int fatal = 0;
	int failed = 0;

	if (cs == NULL)
		return log_error(1, "out of memory");
	mongoc_log_set_handler(mongoc_log_to_ours, NULL);
	for (size_t i = 0; i < n; i++) {
		const struct cfg_server *srv = &cfg->servers[servers[i]];
		int rc = jnl_source_ensure(j, srv->uuid, srv->name, srv->uri_redacted, JNL_LOCAL);
		if (rc == MMM_EOWNER) {
			log_warnx("journal '%s' receives '%s' from another site: it cannot also capture it",
			    jnl_path(j), srv->name);
			free(cs);
			return 1;
		}
		if (rc != 0) {
			log_warnx("journal '%s': cannot record source '%s': %s", jnl_path(j), srv->name, mmm_strerror(rc));
			free(cs);
			return 1;
		}
	}
	for (size_t i = 0; i < n; i++) {
		cs[i].srv = &cfg->servers[servers[i]];
		cs[i].j = j;
		cs[i].opt = opt;
		cs[i].stop = stop;
		cs[i].fatal = &fatal;
		cs[i].state = "connecting";
		if (pthread_create(&cs[i].thread, NULL, source_main, &cs[i]) != 0) {
			log_warn("cannot start capture thread for '%s'", cs[i].srv->name);
			atomic_store(&fatal, 1);
			n = i;
			failed = 1;
			break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		pthread_join(cs[i].thread, NULL);
		failed |= cs[i].failed;
	}
	free(cs);
	/* A journal failure is always 1.  A stop request is 0 even when a source
	 * had stopped earlier (its gap or refusal was logged and is in its
	 * status); without one, capture ends only when no source is left. */
	if (atomic_load(&fatal))
		return 1;
	if (*stop) {
		if (failed)
			log_info("a source had stopped on an error before: see 'mmm-journal stat'");
		return 0;
	}
	return 1;
}
