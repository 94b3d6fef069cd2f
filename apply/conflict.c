/* conflict.c — see conflict.h and CONFLICTS.md. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "conflict.h"
#include "diff.h"
#include "err.h"
#include "hash.h"
#include "log.h"
#include "oplog.h"
#include "util.h"

#define MEM_CAP        (1u << 16)       /* known stamps of apply's own commits (power of 2) */
#define ECHO_MAX       200000           /* stamps held for the checker */
#define CHECK_FLUSH    1000             /* checker: writes per journal transaction */
#define WAIT_CAPTURE_MS 3000

struct mem_slot {
	uint64_t h;
	struct stamp st;
	int used;
};

struct echo {
	int64_t nonce;
	uint64_t snap;             /* M's journal position before the transaction */
	size_t n;
	uint64_t *h;
	struct stamp *st, *lo;     /* per document: the newest and the oldest write given */
	char *folded;
	struct cf_item *quiet;     /* documents given but not written (ns, id, late = stamp) */
	size_t nquiet;
	size_t *ix;                /* (the checker's) open addressing on h: index + 1 */
	size_t nix;
};

struct cnt {
	uint8_t origin[16];
	int64_t n;
};

struct cf {
	struct jnl *j;
	uint8_t m[16];
	char name[128];
	pthread_mutex_t mu;
	struct mem_slot *mem;
	size_t mem_n;
	atomic_int have_docstamps;     /* the docstamp table holds something of M: look there */
	atomic_int checking;           /* the checker runs: keep echo records */
	struct echo *echo;
	size_t necho, capecho, echo_stamps;
	struct cf_item *q;
	size_t nq, capq;
	atomic_int pending;
	struct cnt *cnt;
	size_t ncnt;
	atomic_llong nonce;
	int64_t nonce0;                /* the first of this process: older ones have no record */
	_Atomic uint64_t checked;      /* the checker has read M's source up to here */
	pthread_t th;
	int started;
	volatile sig_atomic_t *stop;
	atomic_int quit;
};

/* ---- documents and ops ------------------------------------------------------ */

uint64_t cf_hash(const char *ns, const bson_t *id)
{
	return mmm_xxh64(bson_get_data(id), id->len, mmm_xxh64(ns, strlen(ns), 0));
}

static int get_sub(const bson_t *b, const char *key, bson_t *out)
{
	bson_iter_t it;
	const uint8_t *data;
	uint32_t len;
	if (!bson_iter_init_find(&it, b, key) || !BSON_ITER_HOLDS_DOCUMENT(&it))
		return 0;
	bson_iter_document(&it, &len, &data);
	return bson_init_static(out, data, len);
}

static const char *get_utf8(const bson_t *b, const char *key)
{
	bson_iter_t it;
	return bson_iter_init_find(&it, b, key) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : NULL;
}

/* The kind of the CRUD op OP ('i', 'u' update, 'r' replacement, 'd'), its
 * namespace, {_id} (ID initialised here when the kind is returned) and O;
 * 0 when it is not a CRUD op of a replicated namespace. */
static char op_target(const bson_t *op, const char **ns, bson_t *id, bson_t *o)
{
	const char *opc = get_utf8(op, "op");
	bson_t src;
	bson_iter_t it;
	char kind;

	*ns = get_utf8(op, "ns");
	if (!opc || !*ns || (opc[0] != 'i' && opc[0] != 'u' && opc[0] != 'd') || oplog_ns_excluded(*ns) ||
	    strncmp(*ns, "admin.", 6) == 0 || strncmp(*ns, "config.", 7) == 0 || !get_sub(op, "o", o))
		return 0;
	kind = opc[0];
	if (kind == 'u') {
		if (!get_sub(op, "o2", &src))
			return 0;
		if (bson_iter_init(&it, o) && bson_iter_next(&it) && bson_iter_key(&it)[0] != '$')
			kind = 'r';
	} else {
		src = *o;
	}
	if (!bson_iter_init_find(&it, &src, "_id"))
		return 0;
	bson_init(id);
	bson_append_iter(id, "_id", 3, &it);
	return kind;
}

typedef int (*op_fn)(void *arg, const bson_t *op, uint32_t k);

/* Calls FN for each op of ENTRY: the entry itself, or each op of its applyOps
 * with its index K. */
static int entry_ops(const bson_t *entry, char opc, op_fn fn, void *arg)
{
	bson_t o;
	bson_iter_t it, arr;
	uint32_t k = 0;
	int rc;

	if (opc != 'c')
		return fn(arg, entry, 0);
	if (!get_sub(entry, "o", &o) || !bson_iter_init_find(&it, &o, "applyOps") || !BSON_ITER_HOLDS_ARRAY(&it) ||
	    !bson_iter_recurse(&it, &arr))
		return 0;
	for (; bson_iter_next(&arr); k++) {
		const uint8_t *data;
		uint32_t len;
		bson_t op;
		if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
			continue;
		bson_iter_document(&arr, &len, &data);
		if (bson_init_static(&op, data, len) && (rc = fn(arg, &op, k)) != 0)
			return rc;
	}
	return 0;
}

static void stamp_of(struct stamp *s, int64_t wall, const uint8_t origin[16], uint64_t ts, uint32_t k)
{
	s->wall = wall;
	memcpy(s->origin, origin, 16);
	s->ts = ts;
	s->k = k;
}

/* ---- state ------------------------------------------------------------------ */

static void ds_key(const uint8_t m[16], uint64_t h, uint8_t key[24])
{
	memcpy(key, m, 16);
	for (int i = 0; i < 8; i++)
		key[16 + i] = (uint8_t)(h >> (56 - 8 * i));
}

static int count_rec(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct cf *c = arg;
	bson_t doc;
	bson_iter_t it;
	struct stamp late = { 0 }, newer = { 0 };
	const uint8_t *other;
	(void)key;
	(void)klen;
	if (!bson_init_static(&doc, val, vlen) || !bson_iter_init_find(&it, &doc, "master") ||
	    !BSON_ITER_HOLDS_BINARY(&it))
		return 0;
	{
		bson_subtype_t st;
		uint32_t len;
		const uint8_t *data;
		bson_iter_binary(&it, &st, &len, &data);
		if (len != 16 || memcmp(data, c->m, 16) != 0)
			return 0;
	}
	if (bson_iter_init_find(&it, &doc, "late"))
		stamp_from_iter(&it, &late);
	if (bson_iter_init_find(&it, &doc, "newer"))
		stamp_from_iter(&it, &newer);
	other = memcmp(late.origin, c->m, 16) != 0 ? late.origin : newer.origin;
	for (size_t i = 0; i < c->ncnt; i++)
		if (memcmp(c->cnt[i].origin, other, 16) == 0) {
			c->cnt[i].n++;
			return 0;
		}
	struct cnt *nc = realloc(c->cnt, (c->ncnt + 1) * sizeof *nc);
	if (nc == NULL)
		return ENOMEM;
	c->cnt = nc;
	memcpy(c->cnt[c->ncnt].origin, other, 16);
	c->cnt[c->ncnt++].n = 1;
	return 0;
}

static int queue_push(struct cf *c, const char *ns, const bson_t *id, const struct stamp *late,
    const struct stamp *newer)
{
	struct cf_item *it;
	if (c->nq == c->capq) {
		size_t cap = c->capq ? c->capq * 2 : 64;
		struct cf_item *nq = realloc(c->q, cap * sizeof *nq);
		if (nq == NULL)
			return ENOMEM;
		c->q = nq;
		c->capq = cap;
	}
	it = &c->q[c->nq++];
	memset(it, 0, sizeof *it);
	snprintf(it->ns, sizeof it->ns, "%s", ns);
	it->id = bson_copy(id);
	if (late)
		it->late = *late;
	if (newer)
		it->newer = *newer;
	atomic_store(&c->pending, (int)c->nq);
	return 0;
}

static int load_rederive(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct cf *c = arg;
	const uint8_t *k = key;
	const char *ns = (const char *)k + 16;
	size_t nl = strnlen(ns, klen - 16);
	bson_t id;
	struct stamp late = { 0 }, newer = { 0 };

	if (16 + nl + 1 >= klen || !bson_init_static(&id, k + 16 + nl + 1, klen - 16 - nl - 1))
		return 0;
	if (vlen == 2 * STAMP_LEN) {
		stamp_decode(val, &late);
		stamp_decode((const uint8_t *)val + STAMP_LEN, &newer);
	}
	return queue_push(c, ns, &id, &late, &newer);
}

int cf_open(struct jnl *j, const struct cfg_server *dst, struct cf **out)
{
	struct cf *c = calloc(1, sizeof *c);
	uint8_t key[24];
	int rc;

	if (c == NULL || (c->mem = calloc(MEM_CAP, sizeof *c->mem)) == NULL) {
		free(c);
		return ENOMEM;
	}
	c->j = j;
	memcpy(c->m, dst->uuid, 16);
	snprintf(c->name, sizeof c->name, "%s", dst->name);
	pthread_mutex_init(&c->mu, NULL);
	c->nonce0 = mmm_wall_ms() * 1000;
	atomic_store(&c->nonce, c->nonce0);
	memcpy(key, c->m, 16);
	if ((rc = jnl_kv_walk(j, JNL_KV_REDERIVE, c->m, 16, load_rederive, c)) != 0 ||
	    (rc = jnl_kv_walk(j, JNL_KV_CONFLICTS, NULL, 0, count_rec, c)) != 0) {
		cf_close(c);
		return rc;
	}
	{
		uint8_t pos[17], v[8];
		memcpy(pos, c->m, 16);
		pos[16] = 'P';
		if (jnl_kv_get(j, JNL_KV_DOCSTAMP, pos, sizeof pos, v, sizeof v, NULL) == 0)
			atomic_store(&c->have_docstamps, 1);
	}
	*out = c;
	return 0;
}

void cf_item_free(struct cf_item *it)
{
	if (it->id)
		bson_destroy(it->id);
	it->id = NULL;
}

static void echo_free(struct echo *e)
{
	free(e->h);
	free(e->st);
	free(e->lo);
	free(e->folded);
	for (size_t i = 0; i < e->nquiet; i++)
		cf_item_free(&e->quiet[i]);
	free(e->quiet);
	e->quiet = NULL;
	e->nquiet = 0;
	free(e->ix);
	e->ix = NULL;
}

/* Index of H in E (E->n when absent); builds E's index on first use. */
static size_t echo_find(struct echo *e, uint64_t h)
{
	if (e->ix == NULL) {
		for (e->nix = 16; e->nix < 2 * e->n; e->nix *= 2)
			;
		if ((e->ix = calloc(e->nix, sizeof *e->ix)) == NULL) {
			for (size_t i = 0; i < e->n; i++)
				if (e->h[i] == h)
					return i;
			return e->n;
		}
		for (size_t i = 0; i < e->n; i++) {
			size_t s = e->h[i] & (e->nix - 1);
			while (e->ix[s])
				s = (s + 1) & (e->nix - 1);
			e->ix[s] = i + 1;
		}
	}
	for (size_t s = h & (e->nix - 1); e->ix[s]; s = (s + 1) & (e->nix - 1))
		if (e->h[e->ix[s] - 1] == h)
			return e->ix[s] - 1;
	return e->n;
}

void cf_close(struct cf *c)
{
	if (c == NULL)
		return;
	atomic_store(&c->quit, 1);
	if (c->started)
		pthread_join(c->th, NULL);
	for (size_t i = 0; i < c->nq; i++)
		cf_item_free(&c->q[i]);
	for (size_t i = 0; i < c->necho; i++)
		echo_free(&c->echo[i]);
	free(c->q);
	free(c->echo);
	free(c->mem);
	free(c->cnt);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static struct mem_slot *mem_find(struct cf *c, uint64_t h, int add)
{
	for (size_t i = h & (MEM_CAP - 1);; i = (i + 1) & (MEM_CAP - 1)) {
		struct mem_slot *s = &c->mem[i];
		if (s->used && s->h == h)
			return s;
		if (!s->used) {
			if (!add)
				return NULL;
			if (c->mem_n * 4 >= MEM_CAP * 3) {   /* full: forget (the checker's table remains) */
				memset(c->mem, 0, MEM_CAP * sizeof *c->mem);
				c->mem_n = 0;
				return mem_find(c, h, add);
			}
			s->used = 1;
			s->h = h;
			memset(&s->st, 0, sizeof s->st);
			c->mem_n++;
			return s;
		}
	}
}

void cf_known(struct cf *c, uint64_t h, struct stamp *out)
{
	struct mem_slot *s;
	memset(out, 0, sizeof *out);
	if (atomic_load(&c->have_docstamps)) {
		uint8_t key[24], v[STAMP_LEN];
		size_t vl = 0;
		ds_key(c->m, h, key);
		if (jnl_kv_get(c->j, JNL_KV_DOCSTAMP, key, sizeof key, v, sizeof v, &vl) == 0 && vl == STAMP_LEN)
			stamp_decode(v, out);
	}
	pthread_mutex_lock(&c->mu);
	if ((s = mem_find(c, h, 0)) != NULL && stamp_cmp(&s->st, out) > 0)
		*out = s->st;
	pthread_mutex_unlock(&c->mu);
}

void cf_known_many(struct cf *c, const uint64_t *h, size_t n, struct stamp *out)
{
	uint8_t *keys = NULL, *vals = NULL, *found = NULL;
	memset(out, 0, n * sizeof *out);
	if (n && atomic_load(&c->have_docstamps) && (keys = malloc(n * 24)) != NULL &&
	    (vals = malloc(n * STAMP_LEN)) != NULL && (found = malloc(n)) != NULL) {
		for (size_t i = 0; i < n; i++)
			ds_key(c->m, h[i], keys + i * 24);
		if (jnl_kv_get_many(c->j, JNL_KV_DOCSTAMP, keys, 24, n, vals, STAMP_LEN, found) == 0)
			for (size_t i = 0; i < n; i++)
				if (found[i])
					stamp_decode(vals + i * STAMP_LEN, &out[i]);
	}
	free(keys);
	free(vals);
	free(found);
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < n; i++) {
		struct mem_slot *s = mem_find(c, h[i], 0);
		if (s && stamp_cmp(&s->st, &out[i]) > 0)
			out[i] = s->st;
	}
	pthread_mutex_unlock(&c->mu);
}

int64_t cf_nonce(struct cf *c)
{
	return (int64_t)atomic_fetch_add(&c->nonce, 1) + 1;
}

uint64_t cf_journal_pos(struct cf *c)
{
	struct jnl_source s;
	return jnl_source_get(c->j, c->m, &s) == 0 && s.kind == JNL_LOCAL ? s.last_ts : 0;
}

void cf_echo_put(struct cf *c, int64_t nonce, uint64_t snap, const struct cf_echo_doc *docs, size_t n)
{
	struct echo e = { 0 };
	size_t nq = 0;
	if (n == 0)
		return;
	e.nonce = nonce;
	e.snap = snap;
	for (size_t i = 0; i < n; i++)
		nq += docs[i].id != NULL;
	e.h = malloc(n * sizeof *e.h);
	e.st = malloc(n * sizeof *e.st);
	e.lo = malloc(n * sizeof *e.lo);
	e.folded = malloc(n);
	e.quiet = nq ? calloc(nq, sizeof *e.quiet) : NULL;
	if (!e.h || !e.st || !e.lo || !e.folded || (nq && !e.quiet)) {
		echo_free(&e);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (docs[i].id) {
			struct cf_item *q = &e.quiet[e.nquiet++];
			snprintf(q->ns, sizeof q->ns, "%s", docs[i].ns);
			q->id = bson_copy(docs[i].id);
			q->late = stamp_is_zero(&docs[i].lo) ? docs[i].st : docs[i].lo;
			q->newer = docs[i].st;
			q->folded = docs[i].folded;
			continue;
		}
		e.h[e.n] = docs[i].h;
		e.st[e.n] = docs[i].st;
		e.lo[e.n] = stamp_is_zero(&docs[i].lo) ? docs[i].st : docs[i].lo;
		e.folded[e.n++] = (char)docs[i].folded;
	}
	pthread_mutex_lock(&c->mu);
	while (c->necho && c->echo_stamps + n > ECHO_MAX) {   /* the checker is far behind: it re-derives */
		c->echo_stamps -= c->echo[0].n + c->echo[0].nquiet;
		echo_free(&c->echo[0]);
		memmove(c->echo, c->echo + 1, --c->necho * sizeof *c->echo);
	}
	if (c->necho == c->capecho) {
		size_t cap = c->capecho ? c->capecho * 2 : 64;
		struct echo *ne = realloc(c->echo, cap * sizeof *ne);
		if (ne == NULL) {
			pthread_mutex_unlock(&c->mu);
			echo_free(&e);
			return;
		}
		c->echo = ne;
		c->capecho = cap;
	}
	c->echo[c->necho++] = e;
	c->echo_stamps += e.n + e.nquiet;
	pthread_mutex_unlock(&c->mu);
}

/* Takes the echo record of NONCE (caller frees it): 1, or 0 when there is none. */
static int echo_take(struct cf *c, int64_t nonce, struct echo *out)
{
	int found = 0;
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->necho; i++) {
		if (c->echo[i].nonce != nonce)
			continue;
		*out = c->echo[i];
		c->echo_stamps -= out->n + out->nquiet;
		memmove(c->echo + i, c->echo + i + 1, (c->necho - i - 1) * sizeof *c->echo);
		c->necho--;
		found = 1;
		break;
	}
	pthread_mutex_unlock(&c->mu);
	return found;
}

void cf_applied(struct cf *c, const uint64_t *h, const struct stamp *st, size_t n)
{
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < n; i++) {
		struct mem_slot *s = mem_find(c, h[i], 1);
		if (stamp_cmp(&st[i], &s->st) > 0)
			s->st = st[i];
	}
	pthread_mutex_unlock(&c->mu);
}

int cf_wait_capture(struct cf *c, uint64_t optime, volatile sig_atomic_t *stop)
{
	int64_t until = mmm_mono_ms() + WAIT_CAPTURE_MS;
	for (;;) {
		struct jnl_source s;
		if (jnl_source_get(c->j, c->m, &s) != 0 || s.kind != JNL_LOCAL)
			return -1;
		if (s.last_ts >= optime)
			return 0;
		if (mmm_mono_ms() >= until || (stop && *stop))
			return -1;
		mmm_sleep_ms(5, NULL);
	}
}

/* ---- the queue -------------------------------------------------------------- */

size_t cf_take(struct cf *c, struct cf_item *out, size_t max)
{
	size_t n;
	pthread_mutex_lock(&c->mu);
	n = c->nq < max ? c->nq : max;
	memcpy(out, c->q, n * sizeof *out);
	memmove(c->q, c->q + n, (c->nq - n) * sizeof *c->q);
	c->nq -= n;
	atomic_store(&c->pending, (int)c->nq);
	pthread_mutex_unlock(&c->mu);
	return n;
}

int cf_pending(struct cf *c)
{
	return atomic_load(&c->pending);
}

static size_t rd_key(const uint8_t m[16], const char *ns, const bson_t *id, uint8_t *buf, size_t cap)
{
	size_t nl = strlen(ns) + 1;
	if (16 + nl + id->len > cap)
		return 0;
	memcpy(buf, m, 16);
	memcpy(buf + 16, ns, nl);
	memcpy(buf + 16 + nl, bson_get_data(id), id->len);
	return 16 + nl + id->len;
}

void cf_queue(struct cf *c, const char *ns, const bson_t *id)
{
	uint8_t key[1100];
	size_t kl = rd_key(c->m, ns, id, key, sizeof key);
	struct jnl_kvop op = { JNL_KV_REDERIVE, key, kl, "", 0 };
	if (kl == 0 || jnl_kv_write(c->j, &op, 1) != 0)
		return;
	pthread_mutex_lock(&c->mu);
	queue_push(c, ns, id, NULL, NULL);
	pthread_mutex_unlock(&c->mu);
}

int cf_commit_log(struct cf *c, const struct clog_rec *recs, size_t nrecs, const struct cf_item *done,
    size_t ndone)
{
	struct jnl_kvop *ops = calloc(nrecs + ndone + 1, sizeof *ops);
	uint8_t (*keys)[1024] = malloc((nrecs + ndone + 1) * sizeof *keys);
	/* (bson_t is declared 128-byte aligned) */
	bson_t *vals = aligned_alloc(128, (nrecs + 1) * sizeof *vals);
	size_t n = 0;
	int rc;

	if (vals)
		memset(vals, 0, (nrecs + 1) * sizeof *vals);
	if (!ops || !keys || !vals) {
		free(ops);
		free(keys);
		free(vals);
		return ENOMEM;
	}
	for (size_t i = 0; i < nrecs; i++) {
		size_t kl = clog_key(recs[i].ns, recs[i].id, &recs[i].late, keys[n], sizeof keys[n]);
		if (kl == 0)
			continue;
		clog_value(&recs[i], &vals[i]);
		ops[n] = (struct jnl_kvop){ JNL_KV_CONFLICTS, keys[n], kl, bson_get_data(&vals[i]), vals[i].len };
		n++;
	}
	for (size_t i = 0; i < ndone; i++) {
		size_t kl = rd_key(c->m, done[i].ns, done[i].id, keys[n], sizeof keys[n]);
		if (kl == 0)
			continue;
		ops[n] = (struct jnl_kvop){ JNL_KV_REDERIVE, keys[n], kl, NULL, 0 };
		n++;
	}
	rc = jnl_kv_write(c->j, ops, n);
	if (rc == 0) {
		pthread_mutex_lock(&c->mu);
		for (size_t i = 0; i < nrecs; i++) {
			const uint8_t *other = memcmp(recs[i].late.origin, c->m, 16) != 0 ? recs[i].late.origin
											   : recs[i].newer.origin;
			size_t k;
			for (k = 0; k < c->ncnt && memcmp(c->cnt[k].origin, other, 16) != 0; k++)
				;
			if (k == c->ncnt) {
				struct cnt *nc = realloc(c->cnt, (c->ncnt + 1) * sizeof *nc);
				if (nc == NULL)
					break;
				c->cnt = nc;
				memcpy(c->cnt[c->ncnt].origin, other, 16);
				c->cnt[c->ncnt++].n = 0;
			}
			c->cnt[k].n++;
		}
		pthread_mutex_unlock(&c->mu);
	}
	for (size_t i = 0; i < nrecs; i++)
		if (vals[i].len)
			bson_destroy(&vals[i]);
	free(ops);
	free(keys);
	free(vals);
	return rc;
}

int64_t cf_count(struct cf *c, const uint8_t src[16])
{
	int64_t n = 0;
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->ncnt; i++)
		if (memcmp(c->cnt[i].origin, src, 16) == 0)
			n = c->cnt[i].n;
	pthread_mutex_unlock(&c->mu);
	return n;
}

/* ---- re-derivation ------------------------------------------------------------ */

struct write {
	struct stamp st;
	char kind;
	bson_t *o;
};

struct target {
	struct cf_doc *doc;
	uint64_t h;
	struct write *w;
	size_t n, cap;
	int need;                  /* still looking for a full image in the source being read */
};

struct scan {
	struct target *t;
	size_t n;
	const struct jnl_entry *e;
	int64_t wall;
	struct write *blk;         /* matches in the block being read, in entry order */
	size_t *blk_t;
	size_t nblk, capblk;
	int local;                 /* the source being read is the destination itself */
};

static int scan_op(void *arg, const bson_t *op, uint32_t k)
{
	struct scan *s = arg;
	const char *ns;
	bson_t id, o;
	char kind = op_target(op, &ns, &id, &o);
	uint64_t h;

	if (!kind)
		return 0;
	h = cf_hash(ns, &id);
	for (size_t i = 0; i < s->n; i++) {
		struct target *t = &s->t[i];
		if (t->h != h || !t->need || strcmp(t->doc->ns, ns) != 0 || !bson_equal(t->doc->id, &id))
			continue;
		if (!s->local) {
			struct stamp st;
			stamp_of(&st, s->wall, s->e->origin, s->e->ts, k);
			if (stamp_cmp(&st, &t->doc->horizon) > 0)
				continue;      /* has not reached the destination yet: it comes in order */
		}
		if (s->nblk == s->capblk) {
			size_t cap = s->capblk ? s->capblk * 2 : 16;
			struct write *nw = realloc(s->blk, cap * sizeof *nw);
			size_t *nt = realloc(s->blk_t, cap * sizeof *nt);
			if (nw)
				s->blk = nw;
			if (nt)
				s->blk_t = nt;
			if (!nw || !nt) {
				bson_destroy(&id);
				return ENOMEM;
			}
			s->capblk = cap;
		}
		stamp_of(&s->blk[s->nblk].st, s->wall, s->e->origin, s->e->ts, k);
		s->blk[s->nblk].kind = kind;
		if (kind == 'r' && !bson_has_field(&o, "_id")) {
			bson_t *doc = bson_copy(&id);
			bson_concat(doc, &o);
			s->blk[s->nblk].o = doc;
		} else {
			s->blk[s->nblk].o = kind == 'd' ? NULL : bson_copy(&o);
		}
		s->blk_t[s->nblk++] = i;
	}
	bson_destroy(&id);
	return 0;
}

static int add_write(struct target *t, const struct write *w)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		struct write *nw = realloc(t->w, cap * sizeof *nw);
		if (nw == NULL)
			return ENOMEM;
		t->w = nw;
		t->cap = cap;
	}
	t->w[t->n++] = *w;
	return 0;
}

static int scan_entry(void *arg, const struct jnl_entry *e)
{
	struct scan *s = arg;
	bson_t entry;
	struct oplog_info in;
	if (memcmp(e->origin, e->source, 16) != 0)
		return 0;      /* an echo: its original is read under its own source */
	if (!bson_init_static(&entry, e->bson, e->len) || oplog_info(&entry, &in) != 0)
		return 0;
	if (in.op != 'i' && in.op != 'u' && in.op != 'd' && in.op != 'c')
		return 0;
	s->e = e;
	s->wall = in.wall;
	return entry_ops(&entry, in.op, scan_op, s);
}

/* After a block: keeps, newest first, each target's writes until its newest
 * full image; 1 (stop) when every target has one. */
static int scan_block_done(void *arg)
{
	struct scan *s = arg;
	int rc = 0, need = 0;
	for (size_t k = s->nblk; k-- > 0;) {
		struct target *t = &s->t[s->blk_t[k]];
		if (!t->need || rc != 0) {
			if (s->blk[k].o)
				bson_destroy(s->blk[k].o);
			continue;
		}
		if (add_write(t, &s->blk[k]) != 0) {
			if (s->blk[k].o)
				bson_destroy(s->blk[k].o);
			rc = ENOMEM;
			continue;
		}
		if (s->blk[k].kind != 'u')
			t->need = 0;
	}
	s->nblk = 0;
	for (size_t i = 0; i < s->n; i++)
		need |= s->t[i].need;
	return rc ? rc : !need;
}

/* Reads SOURCE's blocks from the newest back, keeping the writes of every
 * target newer than (and including) its newest full image in that source. */
static int scan_source(struct cf *c, const uint8_t src[16], struct scan *s)
{
	int rc;
	for (size_t i = 0; i < s->n; i++)
		s->t[i].need = 1;
	s->nblk = 0;
	rc = jnl_scan_back(c->j, src, scan_entry, scan_block_done, s);
	for (size_t k = 0; k < s->nblk; k++)      /* (a scan that failed mid-block) */
		if (s->blk[k].o)
			bson_destroy(s->blk[k].o);
	s->nblk = 0;
	return rc;
}

static int cmp_write(const void *a, const void *b)
{
	return stamp_cmp(&((const struct write *)a)->st, &((const struct write *)b)->st);
}

/* Folds T's writes in stamp order from the newest full image (else from the
 * document as it is on M). */
static void fold(struct target *t)
{
	struct cf_doc *d = t->doc;
	bson_t *state = NULL;
	size_t from = 0, base = SIZE_MAX;

	qsort(t->w, t->n, sizeof *t->w, cmp_write);
	for (size_t i = t->n; i-- > 0;)
		if (t->w[i].kind != 'u') {
			base = i;
			break;
		}
	memset(&d->max, 0, sizeof d->max);
	memset(&d->base, 0, sizeof d->base);
	if (base == SIZE_MAX) {
		d->how = "degraded";
		state = d->current ? bson_copy(d->current) : NULL;
	} else {
		const struct write *w = &t->w[base];
		d->how = w->kind == 'i' ? "insert" : w->kind == 'r' ? "replacement" : "delete";
		d->base = w->st;
		state = w->o ? bson_copy(w->o) : NULL;
		from = base + 1;
	}
	for (size_t i = from; i < t->n; i++) {
		const struct write *w = &t->w[i];
		bson_t out;
		if (!state)
			continue;         /* an update of an absent document does nothing */
		if (diff_apply_update(state, w->o, &out, NULL, 0) == 0) {
			bson_destroy(state);
			state = bson_copy(&out);
		}
		bson_destroy(&out);      /* (a diff that does not apply is left out, on every site) */
	}
	if (t->n)
		d->max = t->w[t->n - 1].st;
	d->present = state != NULL;
	d->doc = state;
}

int cf_rederive(struct cf *c, struct cf_doc *docs, size_t n)
{
	struct jnl_source *srcs = NULL;
	size_t nsrc = 0;
	struct scan s = { 0 };
	int rc;

	if ((s.t = calloc(n ? n : 1, sizeof *s.t)) == NULL)
		return ENOMEM;
	s.n = n;
	for (size_t i = 0; i < n; i++) {
		s.t[i].doc = &docs[i];
		s.t[i].h = cf_hash(docs[i].ns, docs[i].id);
	}
	rc = jnl_source_list(c->j, &srcs, &nsrc);
	for (size_t k = 0; rc == 0 && k < nsrc; k++) {
		s.local = memcmp(srcs[k].uuid, c->m, 16) == 0;
		rc = scan_source(c, srcs[k].uuid, &s);
	}
	for (size_t i = 0; i < n; i++) {
		if (rc == 0)
			fold(&s.t[i]);
		for (size_t k = 0; k < s.t[i].n; k++)
			if (s.t[i].w[k].o)
				bson_destroy(s.t[i].w[k].o);
		free(s.t[i].w);
	}
	free(s.blk);
	free(s.blk_t);
	free(s.t);
	free(srcs);
	return rc;
}

/* ---- the checker -------------------------------------------------------------- */

/* The checker's chunk: the docstamps it read or raised since its last
 * journal transaction, in an open-addressing table.  Raised ones (dirty)
 * are written sorted by key, many at once: LMDB copies every page a
 * transaction touches, so few large transactions write far less. */
#define CACHE_SLOTS   65536
#define CHUNK_DOCS    (CACHE_SLOTS / 4)   /* write the chunk after an entry beyond this */
#define CHUNK_MAX_MS  500
#define RECENT_SLOTS  (1u << 21)   /* 16 MB: a slot shared with a document written meanwhile costs a needless re-derivation */

struct cslot {
	uint64_t h;
	struct stamp st;
	uint32_t gen;
	int dirty;
	uint64_t last;             /* ts of the last entry of M writing it in this chunk (0: none) */
};

struct opref {
	uint64_t h;
	uint32_t k;                /* index in applyOps */
	const uint8_t *data;       /* the op, inside the entry */
	uint32_t len;
};

struct chk {
	struct cf *c;
	struct jnl_kvop *ops;
	uint8_t (*keys)[1100];
	uint8_t (*vals)[2 * STAMP_LEN];
	size_t nops;
	struct cslot *cache;       /* docstamps read or written in this chunk (CACHE_SLOTS) */
	uint32_t gen;              /* a slot is valid when its gen is this */
	size_t ncached, ndirty;
	int64_t chunk_at;          /* when the chunk got its first change (0: none) */
	uint64_t chunk_pos;        /* M's position where the chunk (its cache) starts */
	uint64_t *recent;          /* RECENT_SLOTS: by document hash, the ts of M's last entry
	                              writing it or a document sharing the slot (lossy, kept
	                              across chunks) */
	uint64_t prev_pos;         /* the position before the entry being read */
	struct opref *refs;        /* the entry's CRUD ops (parsed once) */
	size_t nrefs, caprefs;
	uint64_t *want;            /* the documents of the entry to look up */
	size_t nwant, capwant;
	const struct jnl_entry *e;
	int64_t wall;
	int local;
	struct echo echo;          /* the record of the echo being read (n == 0: none) */
	int have_echo;
	int64_t chain_nonce[8];    /* an echo's partialTxn chain: later entries have no marker */
	uint8_t chain_lsid[8][16];
	int64_t chain_txn[8];
	int chain_next;
	int64_t pending_rd;
	struct cf_item *rd;        /* re-derivations to queue once written */
	size_t nrd, caprd;
};

/* The cache slot of H: its own (valid) or the free one where it goes. */
static struct cslot *cache_slot(struct chk *k, uint64_t h)
{
	for (size_t i = (h ^ (h >> 29)) & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1))
		if (k->cache[i].gen != k->gen || k->cache[i].h == h)
			return &k->cache[i];
}

static int chk_flush(struct chk *k, uint64_t pos);

static void cache_put(struct chk *k, uint64_t h, const struct stamp *st, int dirty)
{
	struct cslot *c = cache_slot(k, h);
	if (c->gen != k->gen) {
		if (k->ncached >= CACHE_SLOTS / 2) {
			/* a huge entry: write what it did so far (reading it again
			 * after a crash does the same), then start a fresh cache */
			chk_flush(k, k->prev_pos);
			c = cache_slot(k, h);
		}
		k->ncached++;
		c->dirty = 0;
		c->last = 0;
	}
	c->h = h;
	c->st = *st;
	c->gen = k->gen;
	if (dirty && !c->dirty) {
		c->dirty = 1;
		k->ndirty++;
		if (k->chunk_at == 0)
			k->chunk_at = mmm_mono_ms();
	}
}

/* docstamp(M, H) from the cache, filled by chk_want() for the entry. */
static void chk_get(struct chk *k, uint64_t h, struct stamp *out)
{
	struct cslot *c = cache_slot(k, h);
	uint8_t key[24], v[STAMP_LEN];
	size_t vl = 0;
	if (c->gen == k->gen) {
		*out = c->st;
		return;
	}
	memset(out, 0, sizeof *out);
	ds_key(k->c->m, h, key);
	if (jnl_kv_get(k->c->j, JNL_KV_DOCSTAMP, key, sizeof key, v, sizeof v, &vl) == 0 && vl == STAMP_LEN)
		stamp_decode(v, out);
	cache_put(k, h, out, 0);
}

#define CHK_OPS (2 * CHECK_FLUSH + 64)

/* Room for one more table write (a huge entry is written in parts). */
static void chk_room(struct chk *k)
{
	if (k->nops + 2 >= CHK_OPS)
		chk_flush(k, k->prev_pos);
}

static void chk_set(struct chk *k, uint64_t h, const struct stamp *st)
{
	cache_put(k, h, st, 1);
}

/* Pass 1 over an entry: the documents its ops write. */
static int want_op(void *arg, const bson_t *op, uint32_t kk)
{
	struct chk *k = arg;
	const char *ns;
	bson_t id, o;
	uint64_t h;
	if (!op_target(op, &ns, &id, &o))
		return 0;
	h = cf_hash(ns, &id);
	bson_destroy(&id);
	if (k->nrefs == k->caprefs) {
		size_t cap = k->caprefs ? k->caprefs * 2 : 1024;
		struct opref *nr = realloc(k->refs, cap * sizeof *nr);
		if (nr == NULL)
			return ENOMEM;
		k->refs = nr;
		k->caprefs = cap;
	}
	k->refs[k->nrefs++] = (struct opref){ h, kk, bson_get_data(op), op->len };
	if (cache_slot(k, h)->gen == k->gen)
		return 0;
	if (k->nwant == k->capwant) {
		size_t cap = k->capwant ? k->capwant * 2 : 1024;
		uint64_t *nw = realloc(k->want, cap * sizeof *nw);
		if (nw == NULL)
			return ENOMEM;
		k->want = nw;
		k->capwant = cap;
	}
	k->want[k->nwant++] = h;
	return 0;
}

/* Reads the docstamps of the entry's documents into the cache, in one
 * read transaction. */
static void chk_want(struct chk *k, const bson_t *entry, char opc)
{
	uint8_t *keys, *vals, *found;
	k->nwant = 0;
	k->nrefs = 0;
	if (entry_ops(entry, opc, want_op, k) != 0) {
		k->nrefs = 0;
		return;
	}
	if (k->nwant == 0 || k->ncached + k->nwant >= CACHE_SLOTS / 2)
		return;       /* (a huge entry: chk_get() reads one by one) */
	keys = malloc(k->nwant * 24);
	vals = malloc(k->nwant * STAMP_LEN);
	found = malloc(k->nwant);
	if (keys && vals && found) {
		for (size_t i = 0; i < k->nwant; i++)
			ds_key(k->c->m, k->want[i], keys + i * 24);
		if (jnl_kv_get_many(k->c->j, JNL_KV_DOCSTAMP, keys, 24, k->nwant, vals, STAMP_LEN, found) == 0)
			for (size_t i = 0; i < k->nwant; i++) {
				struct stamp st = { 0 };
				if (found[i])
					stamp_decode(vals + i * STAMP_LEN, &st);
				cache_put(k, k->want[i], &st, 0);
			}
	}
	free(keys);
	free(vals);
	free(found);
}

static void chk_rederive(struct chk *k, const char *ns, const bson_t *id, const struct stamp *late,
    const struct stamp *newer)
{
	size_t i, kl;
	chk_room(k);
	i = k->nops;
	kl = rd_key(k->c->m, ns, id, k->keys[i], sizeof k->keys[i]);
	if (kl == 0)
		return;
	if (late) {
		stamp_encode(late, k->vals[i]);
		stamp_encode(newer, k->vals[i] + STAMP_LEN);
	}
	k->ops[i] = (struct jnl_kvop){ JNL_KV_REDERIVE, k->keys[i], kl, k->vals[i], late ? 2 * STAMP_LEN : 0 };
	k->nops++;
	if (k->nrd == k->caprd) {
		size_t cap = k->caprd ? k->caprd * 2 : 16;
		struct cf_item *n = realloc(k->rd, cap * sizeof *n);
		if (n == NULL)
			return;
		k->rd = n;
		k->caprd = cap;
	}
	memset(&k->rd[k->nrd], 0, sizeof k->rd[0]);
	snprintf(k->rd[k->nrd].ns, sizeof k->rd[0].ns, "%s", ns);
	k->rd[k->nrd].id = bson_copy(id);
	if (late) {
		k->rd[k->nrd].late = *late;
		k->rd[k->nrd].newer = *newer;
	}
	k->nrd++;
	if (k->chunk_at == 0)
		k->chunk_at = mmm_mono_ms();
}

/* Queues the document of op REF for re-derivation (parsing it again). */
static void chk_rederive_op(struct chk *k, const struct opref *ref, const struct stamp *late,
    const struct stamp *newer)
{
	bson_t op, id, o;
	const char *ns;
	if (!bson_init_static(&op, ref->data, ref->len) || !op_target(&op, &ns, &id, &o))
		return;
	chk_rederive(k, ns, &id, late, newer);
	bson_destroy(&id);
}

/* Pass 2: one op of the entry, in M's order. */
static void chk_op(struct chk *k, const struct opref *ref)
{
	struct stamp s, cur;
	uint64_t h = ref->h;
	uint32_t kk = ref->k;

	chk_get(k, h, &cur);
	cache_slot(k, h)->last = k->e->ts;
	k->recent[h & (RECENT_SLOTS - 1)] = k->e->ts;
	if (k->local) {
		stamp_of(&s, k->wall, k->c->m, k->e->ts, kk);
		if (!stamp_is_zero(&cur) && stamp_cmp(&s, &cur) < 0 && memcmp(cur.origin, k->c->m, 16) != 0) {
			/* a local write below a newer write M already held: late */
			chk_rederive_op(k, ref, &s, &cur);
		} else if (stamp_cmp(&s, &cur) > 0) {
			chk_set(k, h, &s);
		}
	} else {
		size_t i = k->have_echo ? echo_find(&k->echo, h) : 0;
		if (!k->have_echo || i == k->echo.n) {
			/* apply's write without its record (a restart): re-derive to be sure */
			chk_rederive_op(k, ref, NULL, NULL);
		} else if (!stamp_is_zero(&cur) &&
		    stamp_cmp(k->echo.folded[i] ? &k->echo.st[i] : &k->echo.lo[i], &cur) < 0) {
			/* apply's write (or one of the writes its transaction folded
			 * in place) landed after a newer one it did not see */
			if (k->echo.folded[i])
				chk_rederive_op(k, ref, NULL, NULL);
			else
				chk_rederive_op(k, ref, &k->echo.lo[i], &cur);
		} else if (stamp_cmp(&k->echo.st[i], &cur) > 0) {
			chk_set(k, h, &k->echo.st[i]);
		}
	}
}

/* A document apply was given but did not write (an update that found
 * nothing): it holds that write from here on in M's order. */
static void chk_quiet(struct chk *k, const struct cf_item *q, uint64_t snap)
{
	struct stamp cur;
	uint64_t h = cf_hash(q->ns, q->id);
	struct cslot *sl;
	chk_get(k, h, &cur);
	sl = cache_slot(k, h);
	(void)sl;
	if (k->recent[h & (RECENT_SLOTS - 1)] > snap || snap == 0) {
		/* M's oplog shows it (or a document sharing its slot) written after
		 * the transaction began: the transaction found nothing to do
		 * against a state that may have changed under it — re-derive.
		 * (Every entry after SNAP was read before this echo, so a slot
		 * older than SNAP proves the document was not written since.) */
		chk_rederive(k, q->ns, q->id, NULL, NULL);
		return;
	}
	if (!stamp_is_zero(&cur) && stamp_cmp(q->folded ? &q->newer : &q->late, &cur) < 0)
		chk_rederive(k, q->ns, q->id, q->folded ? NULL : &q->late, q->folded ? NULL : &cur);
	else if (stamp_cmp(&q->newer, &cur) > 0)
		chk_set(k, h, &q->newer);
}

/* The nonce `n` apply put in the marker op of an echo transaction, or 0. */
static int64_t marker_nonce(const bson_t *entry)
{
	bson_t o, ops;
	bson_iter_t it, arr;
	if (!get_sub(entry, "o", &o) || !bson_iter_init_find(&it, &o, "applyOps") || !BSON_ITER_HOLDS_ARRAY(&it) ||
	    !bson_iter_recurse(&it, &arr))
		return 0;
	(void)ops;
	while (bson_iter_next(&arr)) {
		const uint8_t *data;
		uint32_t len;
		bson_t op, mo, sub;
		const char *ns;
		static const char *const where[] = { "diff.u", "diff.i", "$set", NULL };
		if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
			continue;
		bson_iter_document(&arr, &len, &data);
		if (!bson_init_static(&op, data, len) || (ns = get_utf8(&op, "ns")) == NULL ||
		    strcmp(ns, OPLOG_MARKER_NS) != 0 || !get_sub(&op, "o", &mo))
			continue;
		if (bson_iter_init_find(&it, &mo, "n") && BSON_ITER_HOLDS_INT64(&it))
			return bson_iter_int64(&it);
		for (int w = 0; where[w]; w++) {
			bson_iter_t d;
			if (bson_iter_init(&it, &mo) && bson_iter_find_descendant(&it, where[w], &d) &&
			    BSON_ITER_HOLDS_DOCUMENT(&d)) {
				bson_iter_document(&d, &len, &data);
				if (bson_init_static(&sub, data, len) && bson_iter_init_find(&it, &sub, "n") &&
				    BSON_ITER_HOLDS_INT64(&it))
					return bson_iter_int64(&it);
			}
		}
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Writes the chunk (raised docstamps in key order, queued re-derivations,
 * the position POS) in one journal transaction, and starts a new one. */
static int chk_flush(struct chk *k, uint64_t pos)
{
	uint8_t key[17], v[8];
	size_t nd = 0, n = 0;
	uint64_t *hs = malloc((k->ndirty ? k->ndirty : 1) * sizeof *hs);
	uint8_t *dk = malloc((k->ndirty ? k->ndirty : 1) * (24 + STAMP_LEN));
	struct jnl_kvop *ops = malloc((k->ndirty + k->nops + 1) * sizeof *ops);
	int rc = ENOMEM;

	if (hs && dk && ops) {
		for (size_t i = 0; i < CACHE_SLOTS && nd < k->ndirty; i++)
			if (k->cache[i].gen == k->gen && k->cache[i].dirty)
				hs[nd++] = k->cache[i].h;
		qsort(hs, nd, sizeof *hs, cmp_u64);
		for (size_t i = 0; i < nd; i++) {
			uint8_t *kk = dk + i * (24 + STAMP_LEN);
			ds_key(k->c->m, hs[i], kk);
			stamp_encode(&cache_slot(k, hs[i])->st, kk + 24);
			ops[n++] = (struct jnl_kvop){ JNL_KV_DOCSTAMP, kk, 24, kk + 24, STAMP_LEN };
		}
		memcpy(ops + n, k->ops, k->nops * sizeof *ops);
		n += k->nops;
		memcpy(key, k->c->m, 16);
		key[16] = 'P';
		for (int i = 0; i < 8; i++)
			v[i] = (uint8_t)(pos >> (56 - 8 * i));
		ops[n++] = (struct jnl_kvop){ JNL_KV_DOCSTAMP, key, sizeof key, v, sizeof v };
		rc = jnl_kv_write(k->c->j, ops, n);
	}
	free(hs);
	free(dk);
	free(ops);
	k->nops = 0;
	k->ncached = 0;
	k->ndirty = 0;
	k->chunk_at = 0;
	k->chunk_pos = pos;
	if (++k->gen == 0)
		k->gen = 1;
	if (rc == 0) {
		atomic_store(&k->c->have_docstamps, 1);
		pthread_mutex_lock(&k->c->mu);
		for (size_t i = 0; i < k->nrd; i++) {
			if (queue_push(k->c, k->rd[i].ns, k->rd[i].id, &k->rd[i].late, &k->rd[i].newer) != 0)
				break;
		}
		pthread_mutex_unlock(&k->c->mu);
	}
	for (size_t i = 0; i < k->nrd; i++)
		cf_item_free(&k->rd[i]);
	k->nrd = 0;
	return rc;
}

static void *checker_main(void *arg)
{
	struct cf *c = arg;
	struct chk k = { 0 };
	uint64_t pos = 0;
	uint8_t key[17], v[8];

	k.c = c;
	/* per op at most 2 table writes, plus the position */
	k.ops = calloc(CHK_OPS, sizeof *k.ops);
	k.keys = calloc(CHK_OPS, sizeof *k.keys);
	k.vals = calloc(CHK_OPS, sizeof *k.vals);
	k.cache = calloc(CACHE_SLOTS, sizeof *k.cache);
	k.recent = calloc(RECENT_SLOTS, sizeof *k.recent);
	k.gen = 1;
	k.chunk_pos = 0;
	if (!k.ops || !k.keys || !k.vals || !k.cache || !k.recent) {
		log_warnx("conflict checker of '%s': out of memory", c->name);
		goto out;
	}
	memcpy(key, c->m, 16);
	key[16] = 'P';
	if (jnl_kv_get(c->j, JNL_KV_DOCSTAMP, key, sizeof key, v, sizeof v, NULL) == 0)
		for (int i = 0; i < 8; i++)
			pos = pos << 8 | v[i];
	k.chunk_pos = pos;
	while (!atomic_load(&c->quit) && !*c->stop) {
		struct jnl_source src;
		struct jnl_reader *r;
		struct jnl_entry e;
		int rc;
		size_t ops_in_chunk = 0;

		if (jnl_source_get(c->j, c->m, &src) != 0 || src.kind != JNL_LOCAL || src.last_ts <= pos) {
			atomic_store(&c->checked, pos);
			mmm_sleep_ms(10, c->stop);
			continue;
		}
		atomic_store(&c->checking, 1);
		if ((rc = jnl_reader_open(c->j, c->m, pos + 1, &r)) != 0) {
			mmm_sleep_ms(1000, c->stop);
			continue;
		}
		/* (one reader for as long as it reads well: it sees new blocks) */
		while (!atomic_load(&c->quit) && !*c->stop) {
			bson_t entry;
			struct oplog_info in;
			if ((rc = jnl_reader_next(r, &e)) == MMM_EEND) {
				/* caught up: write the chunk soon (what is queued at once) */
				if (k.nrd || (k.chunk_at && mmm_mono_ms() - k.chunk_at >= 50)) {
					if (chk_flush(&k, pos) != 0)
						break;
					ops_in_chunk = 0;
				}
				if (!k.chunk_at && !k.nops)
					atomic_store(&c->checked, pos);
				mmm_sleep_ms(5, NULL);
				continue;
			}
			if (rc != 0)
				break;
			if (!bson_init_static(&entry, e.bson, e.len) || oplog_info(&entry, &in) != 0 ||
			    (in.op != 'i' && in.op != 'u' && in.op != 'd' && in.op != 'c')) {
				pos = e.ts;
				continue;
			}
			k.e = &e;
			k.prev_pos = pos;
			k.wall = in.wall;
			k.local = memcmp(e.origin, c->m, 16) == 0;
			k.have_echo = 0;
			if (!k.local && in.op == 'c') {
				int64_t nonce = marker_nonce(&entry);
				if (nonce == 0 && in.has_txn) {
					for (int i = 0; i < 8; i++)
						if (k.chain_txn[i] == in.txn_number && memcmp(k.chain_lsid[i], in.lsid, 16) == 0)
							nonce = k.chain_nonce[i];
				} else if (nonce && in.has_txn) {
					k.chain_nonce[k.chain_next] = nonce;
					k.chain_txn[k.chain_next] = in.txn_number;
					memcpy(k.chain_lsid[k.chain_next], in.lsid, 16);
					k.chain_next = (k.chain_next + 1) % 8;
				}
				if (nonce) {
					/* (apply records it just before its commit: it is there by now) */
					k.have_echo = echo_take(c, nonce, &k.echo);
					if (!k.have_echo && nonce > c->nonce0) {
						mmm_sleep_ms(20, NULL);
						k.have_echo = echo_take(c, nonce, &k.echo);
					}
				}
			}
			chk_want(&k, &entry, in.op);
			for (size_t i = 0; i < k.nrefs; i++)
				chk_op(&k, &k.refs[i]);
			for (size_t i = 0; k.have_echo && i < k.echo.nquiet; i++)
				chk_quiet(&k, &k.echo.quiet[i], k.echo.snap);
			if (k.have_echo)
				echo_free(&k.echo);
			k.have_echo = 0;
			pos = e.ts;
			ops_in_chunk++;
			if (k.ncached >= CHUNK_DOCS || k.nops >= CHECK_FLUSH ||
			    (k.chunk_at && mmm_mono_ms() - k.chunk_at >= CHUNK_MAX_MS)) {
				if (chk_flush(&k, pos) != 0)
					break;
				atomic_store(&c->checked, pos);
				ops_in_chunk = 0;
			}
		}
		if ((k.nops || k.chunk_at || ops_in_chunk) && chk_flush(&k, pos) == 0)
			atomic_store(&c->checked, pos);
		else if (!k.nops && !k.chunk_at && !ops_in_chunk)
			atomic_store(&c->checked, pos);
		jnl_reader_free(r);
		if (rc != 0 && rc != MMM_EEND) {
			log_warnx("conflict checker of '%s': %s", c->name, mmm_strerror(rc));
			mmm_sleep_ms(1000, c->stop);
		}
	}
out:
	free(k.ops);
	free(k.keys);
	free(k.vals);
	free(k.cache);
	free(k.recent);
	free(k.want);
	free(k.refs);
	free(k.rd);
	return NULL;
}

int cf_wait_checker(struct cf *c, volatile sig_atomic_t *stop)
{
	struct jnl_source s;
	int64_t until = mmm_mono_ms() + 5000;
	if (jnl_source_get(c->j, c->m, &s) != 0 || s.kind != JNL_LOCAL)
		return 0;
	while (atomic_load(&c->checked) < s.last_ts) {
		if (mmm_mono_ms() >= until || (stop && *stop))
			return -1;
		mmm_sleep_ms(5, NULL);
	}
	return 0;
}

int cf_start(struct cf *c, volatile sig_atomic_t *stop)
{
	if (c->started)
		return 0;
	c->stop = stop;
	if (pthread_create(&c->th, NULL, checker_main, c) != 0)
		return errno ? errno : EAGAIN;
	pthread_setname_np(c->th, "apply-check");
	c->started = 1;
	return 0;
}
