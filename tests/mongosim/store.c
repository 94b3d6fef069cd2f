/*
 * store.c — collections (documents in insertion order + _id hash index), the
 * capped oplog ring, timestamps, and --dbpath persistence.
 * Everything here runs under sim.mu.
 */
#include "sim.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void free_old(struct sim_coll *c, struct sim_slot *s);

/* ---- _id keys ---- */

/* canonical key bytes: numbers compare equal across types (1 == 1.0 == 1L),
 * so they are keyed by their double value; everything else by type class and
 * raw value bytes.  Returns a pointer to buf or a malloc'd block (*alloc). */
static uint8_t *id_key(const bson_iter_t *id, uint32_t *len, uint8_t *buf, size_t cap, bool *alloc)
{
	bson_type_t t = bson_iter_type(id);
	*alloc = false;
	if (t == BSON_TYPE_INT32 || t == BSON_TYPE_INT64 || t == BSON_TYPE_DOUBLE) {
		double d = sim_num(id);
		if (d == 0) d = 0;   /* -0 == 0 */
		buf[0] = 10;
		memcpy(buf + 1, &d, 8);
		*len = 9;
		return buf;
	}
	const uint8_t *v = id->raw + id->d1;
	uint32_t vl = id->next_off - id->d1;
	uint8_t *out = buf;
	if (vl + 1 > cap) { out = malloc(vl + 1); *alloc = true; }
	out[0] = (uint8_t)sim_canon(t);
	memcpy(out + 1, v, vl);
	*len = vl + 1;
	return out;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
	h ^= h >> 29;
	return h ? h : 1;
}

/* The _id index: open addressing on the hash; entries hold no key, a hash
 * match is confirmed against the slot's document. */
#define M_EMPTY 0
#define M_USED 1
#define M_TOMB 2

static bool slot_key_eq(struct sim_coll *c, uint32_t slot, const uint8_t *key, uint32_t klen)
{
	struct sim_slot *s = &c->slots[slot];
	const bson_t *d = s->doc ? s->doc : s->committed ? s->committed : s->old ? s->old->doc : NULL;
	bson_iter_t id;
	if (!d || !bson_iter_init_find(&id, d, "_id")) return false;
	uint8_t buf[256]; uint32_t kl; bool al;
	uint8_t *k = id_key(&id, &kl, buf, sizeof buf, &al);
	bool eq = kl == klen && !memcmp(k, key, klen);
	if (al) free(k);
	return eq;
}

uint64_t sim_value_hash(const bson_iter_t *v)
{
	uint8_t buf[256]; uint32_t kl; bool al;
	uint8_t *k = id_key(v, &kl, buf, sizeof buf, &al);
	uint64_t h = hash_bytes(k, kl);
	if (al) free(k);
	return h;
}

uint64_t sim_null_hash(void)
{
	uint8_t k = (uint8_t)sim_canon(BSON_TYPE_NULL);
	return hash_bytes(&k, 1);
}

static void uidx_put(struct sim_uidx *u, uint64_t h, uint32_t slot)
{
	if ((u->n + 1) * 2 > u->cap) {
		size_t ncap = u->cap ? u->cap * 2 : 64;
		struct sim_uent *old = u->e;
		size_t ocap = u->cap;
		u->e = calloc(ncap, sizeof *u->e);
		u->cap = ncap;
		u->n = 0;
		for (size_t i = 0; i < ocap; i++) if (old[i].state) uidx_put(u, old[i].h, old[i].slot);
		free(old);
	}
	size_t i = h & (u->cap - 1);
	while (u->e[i].state) {
		if (u->e[i].h == h && u->e[i].slot == slot) return;   /* already there */
		i = (i + 1) & (u->cap - 1);
	}
	u->e[i].h = h; u->e[i].slot = slot; u->e[i].state = 1;
	u->n++;
}

bool sim_uidx_probe(struct sim_uidx *u, uint64_t h, bool (*fn)(uint32_t slot, void *arg), void *arg)
{
	if (!u->cap) return false;
	size_t i = h & (u->cap - 1);
	while (u->e[i].state) {
		if (u->e[i].h == h && fn(u->e[i].slot, arg)) return true;
		i = (i + 1) & (u->cap - 1);
	}
	return false;
}

void sim_uidx_add(struct sim_coll *c, size_t slot, const bson_t *doc)
{
	for (size_t k = 0; k < c->nuidx; k++) {
		struct sim_uidx *u = c->uidx[k];
		if (!u || !doc) continue;
		bson_iter_t v;
		if (!sim_lookup(doc, u->path, &v)) { uidx_put(u, sim_null_hash(), (uint32_t)slot); continue; }
		if (BSON_ITER_HOLDS_ARRAY(&v)) {
			bson_iter_t e;
			bson_iter_recurse(&v, &e);
			while (bson_iter_next(&e)) uidx_put(u, sim_value_hash(&e), (uint32_t)slot);
			continue;
		}
		uidx_put(u, sim_value_hash(&v), (uint32_t)slot);
	}
}

static void uidx_free_all(struct sim_coll *c)
{
	for (size_t k = 0; k < c->nuidx; k++) {
		if (!c->uidx[k]) continue;
		free(c->uidx[k]->e);
		bson_free(c->uidx[k]->path);
		free(c->uidx[k]);
	}
	free(c->uidx);
	c->uidx = NULL;
	c->nuidx = 0;
}

void sim_uidx_rebuild(struct sim_coll *c)
{
	uidx_free_all(c);
	c->uidx = calloc(c->nidx + 1, sizeof *c->uidx);
	c->nuidx = c->nidx;
	bool any = false;
	for (size_t k = 1; k < c->nidx; k++) {
		bson_iter_t it, key;
		if (!bson_iter_init_find(&it, c->indexes[k], "unique") || !bson_iter_as_bool(&it)) continue;
		if (!bson_iter_init_find(&it, c->indexes[k], "key") || !BSON_ITER_HOLDS_DOCUMENT(&it)) continue;
		bson_iter_recurse(&it, &key);
		if (!bson_iter_next(&key)) continue;
		bson_iter_t more = key;
		if (bson_iter_next(&more)) continue;   /* compound: scanned */
		c->uidx[k] = calloc(1, sizeof **c->uidx);
		c->uidx[k]->path = bson_strdup(bson_iter_key(&key));
		any = true;
	}
	if (!any) return;
	for (size_t i = 0; i < c->nslots; i++) {
		struct sim_slot *s = &c->slots[i];
		sim_uidx_add(c, i, s->doc);
		sim_uidx_add(c, i, s->committed);
		for (struct sim_oldver *o = s->old; o; o = o->next) sim_uidx_add(c, i, o->doc);
	}
}

static void map_insert_raw(struct sim_idmap *m, uint64_t h, uint32_t slot)
{
	size_t i = h & (m->cap - 1);
	while (m->e[i].state == M_USED) i = (i + 1) & (m->cap - 1);
	if (m->e[i].state == M_TOMB) m->tomb--;
	m->e[i].h = h; m->e[i].slot = slot; m->e[i].state = M_USED;
	m->n++;
}

static void map_grow(struct sim_idmap *m)
{
	size_t ncap = m->cap ? m->cap : 64;
	while ((m->n + 1) * 2 > ncap) ncap *= 2;
	struct sim_idmap_ent *old = m->e;
	size_t ocap = m->cap;
	m->e = calloc(ncap, sizeof *m->e);
	m->cap = ncap; m->n = 0; m->tomb = 0;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].state == M_USED) map_insert_raw(m, old[i].h, old[i].slot);
	free(old);
}

static struct sim_idmap_ent *map_find(struct sim_coll *c, uint64_t h, const uint8_t *key, uint32_t klen)
{
	struct sim_idmap *m = &c->map;
	if (!m->cap) return NULL;
	size_t i = h & (m->cap - 1);
	while (m->e[i].state != M_EMPTY) {
		if (m->e[i].state == M_USED && m->e[i].h == h && slot_key_eq(c, m->e[i].slot, key, klen))
			return &m->e[i];
		i = (i + 1) & (m->cap - 1);
	}
	return NULL;
}

static void map_free(struct sim_idmap *m)
{
	free(m->e);
	memset(m, 0, sizeof *m);
}

static bool doc_id(const bson_t *doc, bson_iter_t *id)
{
	return bson_iter_init_find(id, doc, "_id");
}

long sim_coll_find_id(struct sim_coll *c, const bson_iter_t *id)
{
	uint8_t buf[256]; uint32_t kl; bool al;
	uint8_t *k = id_key(id, &kl, buf, sizeof buf, &al);
	struct sim_idmap_ent *e = map_find(c, hash_bytes(k, kl), k, kl);
	if (al) free(k);
	return e ? (long)e->slot : -1;
}

static void map_add_doc(struct sim_coll *c, const bson_t *doc, size_t slot)
{
	bson_iter_t id;
	if (!doc_id(doc, &id)) return;
	uint8_t buf[256]; uint32_t kl; bool al;
	uint8_t *k = id_key(&id, &kl, buf, sizeof buf, &al);
	if ((c->map.n + c->map.tomb + 1) * 2 > c->map.cap) map_grow(&c->map);
	map_insert_raw(&c->map, hash_bytes(k, kl), (uint32_t)slot);
	if (al) free(k);
}

size_t sim_coll_add(struct sim_coll *c, bson_t *doc)
{
	if (c->nslots == c->capslots) {
		c->capslots = c->capslots ? c->capslots * 2 : 64;
		c->slots = realloc(c->slots, c->capslots * sizeof *c->slots);
	}
	size_t s = c->nslots++;
	memset(&c->slots[s], 0, sizeof c->slots[s]);
	c->slots[s].doc = doc;
	c->live++;
	map_add_doc(c, doc, s);
	sim_uidx_add(c, s, doc);
	return s;
}

void sim_coll_set(struct sim_coll *c, size_t slot, bson_t *doc)
{
	if (c->slots[slot].doc) bson_destroy(c->slots[slot].doc);
	c->slots[slot].doc = doc;
	sim_uidx_add(c, slot, doc);
}

/* removes the slot's _id from the index and frees its versions */
void sim_coll_del(struct sim_coll *c, size_t slot)
{
	struct sim_slot *s = &c->slots[slot];
	const bson_t *d = s->doc ? s->doc : s->committed;
	bson_iter_t id;
	if (d && doc_id(d, &id)) {
		uint8_t buf[256]; uint32_t kl; bool al;
		uint8_t *k = id_key(&id, &kl, buf, sizeof buf, &al);
		struct sim_idmap_ent *e = map_find(c, hash_bytes(k, kl), k, kl);
		if (al) free(k);
		if (e && e->slot == slot) { e->state = M_TOMB; c->map.n--; c->map.tomb++; }
	}
	if (s->doc) bson_destroy(s->doc);
	if (s->committed) bson_destroy(s->committed);
	s->doc = s->committed = NULL;
	s->owner = NULL;
	free_old(c, s);
	c->live--;
	c->dead++;
}

void sim_coll_compact(struct sim_coll *c)
{
	if (c->dead < 1024 || c->dead < c->live || c->nold) return;
	for (size_t i = 0; i < c->nslots; i++) if (c->slots[i].owner) return;
	size_t j = 0;
	for (size_t i = 0; i < c->nslots; i++) if (c->slots[i].doc) c->slots[j++] = c->slots[i];
	c->nslots = j;
	c->dead = 0;
	c->live = j;
	map_free(&c->map);
	for (size_t i = 0; i < c->nslots; i++) map_add_doc(c, c->slots[i].doc, i);
	sim_uidx_rebuild(c);
}

const bson_t *sim_visible(struct sim_slot *s, struct sim_txn *t)
{
	if (s->owner && s->owner == t) return s->doc;
	const bson_t *cur = s->owner ? s->committed : s->doc;
	if (!t || !t->active || s->ver <= t->snapshot) return cur;
	for (struct sim_oldver *o = s->old; o; o = o->next)
		if (o->start <= t->snapshot && t->snapshot < o->end) return o->doc;
	return NULL;   /* created after the snapshot */
}

static void free_old(struct sim_coll *c, struct sim_slot *s)
{
	if (!s->old) return;
	while (s->old) {
		struct sim_oldver *o = s->old;
		s->old = o->next;
		if (o->doc) bson_destroy(o->doc);
		free(o);
	}
	c->nold--;
}

void sim_keep_old(struct sim_coll *c, size_t slot, bson_t *prev, uint64_t start, uint64_t end)
{
	struct sim_slot *s = &c->slots[slot];
	struct sim_oldver *o = malloc(sizeof *o);
	o->doc = prev; o->start = start; o->end = end; o->next = s->old;
	if (!s->old) {
		c->nold++;
		if (sim.ngc == sim.capgc) {
			sim.capgc = sim.capgc ? sim.capgc * 2 : 64;
			sim.gc = realloc(sim.gc, sim.capgc * sizeof *sim.gc);
		}
		sim.gc[sim.ngc].c = c;
		sim.gc[sim.ngc].slot = slot;
		sim.ngc++;
	}
	s->old = o;
}

void sim_gc_old(void)
{
	if (sim.active_txns > 0) return;
	for (size_t i = 0; i < sim.ngc; i++) {
		struct sim_coll *c = sim.gc[i].c;
		struct sim_slot *s = &c->slots[sim.gc[i].slot];
		if (!s->doc && !s->committed && !s->owner && s->old && s->old->doc) {
			/* a delete kept for old snapshots: now drop its _id from the index */
			bson_iter_t id;
			if (bson_iter_init_find(&id, s->old->doc, "_id")) {
				uint8_t buf[256]; uint32_t kl; bool al;
				uint8_t *k = id_key(&id, &kl, buf, sizeof buf, &al);
				struct sim_idmap_ent *e = map_find(c, hash_bytes(k, kl), k, kl);
				if (al) free(k);
				if (e && e->slot == sim.gc[i].slot) { e->state = M_TOMB; c->map.n--; c->map.tomb++; }
			}
		}
		free_old(c, s);
	}
	sim.ngc = 0;
}

/* ---- collections ---- */

struct sim_coll *sim_coll_get(const char *db, const char *name)
{
	for (size_t i = 0; i < sim.ncolls; i++)
		if (!strcmp(sim.colls[i]->db, db) && !strcmp(sim.colls[i]->name, name)) return sim.colls[i];
	return NULL;
}

static void uuid4(uint8_t *u)
{
	static uint64_t ctr;
	uint64_t a = ((uint64_t)random() << 32) ^ (uint64_t)random() ^ (uint64_t)sim_mono_ms() << 7;
	uint64_t b = ((uint64_t)random() << 32) ^ (uint64_t)random() ^ ++ctr;
	memcpy(u, &a, 8); memcpy(u + 8, &b, 8);
	u[6] = (u[6] & 0x0f) | 0x40;
	u[8] = (u[8] & 0x3f) | 0x80;
}

struct sim_coll *sim_coll_new(const char *db, const char *name, const bson_t *options, const uint8_t *uuid)
{
	struct sim_coll *c = calloc(1, sizeof *c);
	c->db = bson_strdup(db);
	c->name = bson_strdup(name);
	c->ns = bson_strdup_printf("%s.%s", db, name);
	if (uuid) memcpy(c->uuid, uuid, 16); else uuid4(c->uuid);
	c->options = options ? bson_copy(options) : bson_new();
	bson_iter_t it;
	if (bson_iter_init_find(&it, c->options, "capped")) c->capped = bson_iter_as_bool(&it);
	if (bson_iter_init_find(&it, c->options, "size")) c->capped_size = sim_int(&it);
	if (bson_iter_init_find(&it, c->options, "max")) c->capped_max = sim_int(&it);
	c->indexes = malloc(sizeof *c->indexes);
	c->indexes[0] = BCON_NEW("v", BCON_INT32(2), "key", "{", "_id", BCON_INT32(1), "}", "name", "_id_");
	c->nidx = 1;
	if (sim.ncolls == sim.capcolls) {
		sim.capcolls = sim.capcolls ? sim.capcolls * 2 : 16;
		sim.colls = realloc(sim.colls, sim.capcolls * sizeof *sim.colls);
	}
	sim.colls[sim.ncolls++] = c;
	return c;
}

void sim_coll_free(struct sim_coll *c)
{
	size_t j = 0;
	for (size_t i = 0; i < sim.ngc; i++) if (sim.gc[i].c != c) sim.gc[j++] = sim.gc[i];
	sim.ngc = j;
	for (size_t i = 0; i < c->nslots; i++) {
		if (c->slots[i].old) free_old(c, &c->slots[i]);
		if (c->slots[i].doc) bson_destroy(c->slots[i].doc);
		if (c->slots[i].committed) bson_destroy(c->slots[i].committed);
	}
	free(c->slots);
	map_free(&c->map);
	uidx_free_all(c);
	for (size_t i = 0; i < c->nidx; i++) bson_destroy(c->indexes[i]);
	free(c->indexes);
	bson_destroy(c->options);
	bson_free(c->db); bson_free(c->name); bson_free(c->ns);
	free(c);
}

void sim_coll_remove(struct sim_coll *c)
{
	for (size_t i = 0; i < sim.ncolls; i++) {
		if (sim.colls[i] == c) {
			memmove(sim.colls + i, sim.colls + i + 1, (sim.ncolls - i - 1) * sizeof *sim.colls);
			sim.ncolls--;
			break;
		}
	}
	sim_coll_free(c);
}

void sim_coll_rename(struct sim_coll *c, const char *db, const char *name)
{
	bson_free(c->db); bson_free(c->name); bson_free(c->ns);
	c->db = bson_strdup(db);
	c->name = bson_strdup(name);
	c->ns = bson_strdup_printf("%s.%s", db, name);
}

/* ---- time ---- */

int64_t sim_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sim_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + sim.clock_offset_ms;
}

/* next oplog timestamp: seconds from the (offset) wall clock, increment
 * counting within the second; strictly increasing even if the clock steps back */
uint64_t sim_next_ts(int64_t *wall)
{
	int64_t now = sim_now_ms();
	uint32_t secs = (uint32_t)(now / 1000);
	uint32_t lsecs = (uint32_t)(sim.oplog.last_ts >> 32), linc = (uint32_t)sim.oplog.last_ts;
	uint64_t ts;
	if (secs > lsecs) ts = (uint64_t)secs << 32 | 1;
	else ts = (uint64_t)lsecs << 32 | (linc + 1);
	sim.oplog.last_ts = ts;
	*wall = now;
	return ts;
}

/* ---- oplog ring ---- */

void sim_oplog_init(size_t max_bytes)
{
	memset(&sim.oplog, 0, sizeof sim.oplog);
	sim.oplog.max_bytes = max_bytes;
}

struct sim_entry *sim_oplog_at(size_t i)
{
	return &sim.oplog.e[(sim.oplog.head + i) % sim.oplog.cap];
}

static void oplog_push_raw(uint64_t ts, uint8_t *data, uint32_t len)
{
	struct sim_oplog *o = &sim.oplog;
	if (o->n == o->cap) {
		size_t ncap = o->cap ? o->cap * 2 : 1024;
		struct sim_entry *ne = malloc(ncap * sizeof *ne);
		for (size_t i = 0; i < o->n; i++) ne[i] = *sim_oplog_at(i);
		free(o->e);
		o->e = ne; o->cap = ncap; o->head = 0;
	}
	struct sim_entry *e = &o->e[(o->head + o->n) % o->cap];
	e->ts = ts; e->data = data; e->len = len;
	o->n++;
	o->bytes += len;
	while (o->bytes > o->max_bytes && o->n > 1) {
		struct sim_entry *d = &o->e[o->head];
		o->dropped_ts = d->ts;
		o->bytes -= d->len;
		free(d->data);
		o->head = (o->head + 1) % o->cap;
		o->n--;
	}
}

void sim_oplog_push(bson_t *entry, uint64_t ts, int64_t wall)
{
	uint32_t len;
	uint8_t *d = bson_destroy_with_steal(entry, true, &len);
	oplog_push_raw(ts, d, len);
	sim.oplog.last_wall = wall;
	sim.last_append_mono = sim_mono_ms();
	sim.signal_pending = true;   /* broadcast once, when the command ends */
}

void sim_oplog_append(const bson_t *entry, uint64_t ts)
{
	uint8_t *d = malloc(entry->len);
	memcpy(d, bson_get_data(entry), entry->len);
	oplog_push_raw(ts, d, entry->len);
	bson_iter_t it;
	if (bson_iter_init_find(&it, entry, "wall") && BSON_ITER_HOLDS_DATE_TIME(&it))
		sim.oplog.last_wall = bson_iter_date_time(&it);
	sim.last_append_mono = sim_mono_ms();
	sim.signal_pending = true;   /* broadcast once, when the command ends */
}

size_t sim_oplog_after(uint64_t after)
{
	size_t lo = 0, hi = sim.oplog.n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (sim_oplog_at(mid)->ts <= after) lo = mid + 1; else hi = mid;
	}
	return lo;
}

void sim_oplog_free(void)
{
	for (size_t i = 0; i < sim.oplog.n; i++) free(sim_oplog_at(i)->data);
	free(sim.oplog.e);
	sim.oplog.e = NULL;
	sim.oplog.n = 0;
}

void sim_noop(const char *msg)
{
	int64_t wall;
	uint64_t ts = sim_next_ts(&wall);
	bson_t e = BSON_INITIALIZER, o;
	BSON_APPEND_UTF8(&e, "op", "n");
	BSON_APPEND_UTF8(&e, "ns", "");
	BSON_APPEND_DOCUMENT_BEGIN(&e, "o", &o);
	BSON_APPEND_UTF8(&o, "msg", msg);
	bson_append_document_end(&e, &o);
	BSON_APPEND_TIMESTAMP(&e, "ts", (uint32_t)(ts >> 32), (uint32_t)ts);
	BSON_APPEND_INT64(&e, "t", sim.term);
	BSON_APPEND_INT64(&e, "v", 2);
	BSON_APPEND_DATE_TIME(&e, "wall", wall);
	sim_oplog_append(&e, ts);
	bson_destroy(&e);
}

/* ---- persistence: one file of concatenated BSON documents ---- */

static int write_all(FILE *f, const bson_t *b)
{
	return fwrite(bson_get_data(b), 1, b->len, f) == b->len ? 0 : -1;
}

int sim_save(const char *dir)
{
	char path[4096], tmp[4200];
	snprintf(path, sizeof path, "%s/mongosim.bson", dir);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	if (!f) { sim_log("unable to write '%s': %s", tmp, strerror(errno)); return -1; }
	int rc = 0;
	bson_t *h = BCON_NEW("mongosim", BCON_INT32(1), "term", BCON_INT64(sim.term),
	                     "lastTs", BCON_TIMESTAMP((uint32_t)(sim.oplog.last_ts >> 32), (uint32_t)sim.oplog.last_ts),
	                     "dropped", BCON_TIMESTAMP((uint32_t)(sim.oplog.dropped_ts >> 32), (uint32_t)sim.oplog.dropped_ts),
	                     "ncolls", BCON_INT64((int64_t)sim.ncolls), "noplog", BCON_INT64((int64_t)sim.oplog.n),
	                     "replicaSetId", BCON_OID(&sim.replset_id));
	rc |= write_all(f, h);
	bson_destroy(h);
	for (size_t i = 0; i < sim.ncolls; i++) {
		struct sim_coll *c = sim.colls[i];
		bson_t m = BSON_INITIALIZER, arr;
		BSON_APPEND_UTF8(&m, "db", c->db);
		BSON_APPEND_UTF8(&m, "name", c->name);
		bson_append_binary(&m, "ui", 2, BSON_SUBTYPE_UUID, c->uuid, 16);
		BSON_APPEND_DOCUMENT(&m, "options", c->options);
		BSON_APPEND_ARRAY_BEGIN(&m, "indexes", &arr);
		for (size_t j = 0; j < c->nidx; j++) {
			char k[16]; const char *kp;
			bson_uint32_to_string((uint32_t)j, &kp, k, sizeof k);
			BSON_APPEND_DOCUMENT(&arr, kp, c->indexes[j]);
		}
		bson_append_array_end(&m, &arr);
		int64_t n = 0;
		for (size_t j = 0; j < c->nslots; j++) if (sim_visible(&c->slots[j], NULL)) n++;
		BSON_APPEND_INT64(&m, "count", n);
		rc |= write_all(f, &m);
		bson_destroy(&m);
		for (size_t j = 0; j < c->nslots; j++) {
			const bson_t *d = sim_visible(&c->slots[j], NULL);
			if (d) rc |= write_all(f, d);
		}
	}
	for (size_t i = 0; i < sim.oplog.n; i++) {
		struct sim_entry *e = sim_oplog_at(i);
		if (fwrite(e->data, 1, e->len, f) != e->len) rc = -1;
	}
	if (fflush(f) || fsync(fileno(f))) rc = -1;
	fclose(f);
	if (rc || rename(tmp, path)) { sim_log("unable to save '%s'", path); return -1; }
	return 0;
}

int sim_load(const char *dir)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/mongosim.bson", dir);
	bson_error_t err;
	bson_reader_t *r = bson_reader_new_from_file(path, &err);
	if (!r) return 0;   /* nothing saved yet */
	const bson_t *b;
	bool eof = false;
	int rc = -1;
	int64_t ncolls = 0, nop = 0;
	bson_iter_t it;
	if (!(b = bson_reader_read(r, &eof))) goto out;
	if (bson_iter_init_find(&it, b, "term")) sim.term = bson_iter_as_int64(&it);
	uint32_t t, i;
	if (bson_iter_init_find(&it, b, "lastTs")) { bson_iter_timestamp(&it, &t, &i); sim.oplog.last_ts = (uint64_t)t << 32 | i; }
	if (bson_iter_init_find(&it, b, "dropped")) { bson_iter_timestamp(&it, &t, &i); sim.oplog.dropped_ts = (uint64_t)t << 32 | i; }
	if (bson_iter_init_find(&it, b, "ncolls")) ncolls = bson_iter_as_int64(&it);
	if (bson_iter_init_find(&it, b, "replicaSetId") && BSON_ITER_HOLDS_OID(&it)) bson_oid_copy(bson_iter_oid(&it), &sim.replset_id);
	if (bson_iter_init_find(&it, b, "noplog")) nop = bson_iter_as_int64(&it);
	for (int64_t ci = 0; ci < ncolls; ci++) {
		if (!(b = bson_reader_read(r, &eof))) goto out;
		bson_iter_t db, nm, ui, op, ix, cn;
		if (!bson_iter_init_find(&db, b, "db") || !bson_iter_init_find(&nm, b, "name") ||
		    !bson_iter_init_find(&ui, b, "ui") || !bson_iter_init_find(&op, b, "options") ||
		    !bson_iter_init_find(&ix, b, "indexes") || !bson_iter_init_find(&cn, b, "count"))
			goto out;
		const uint8_t *u; uint32_t ul; bson_subtype_t st;
		bson_iter_binary(&ui, &st, &ul, &u);
		const uint8_t *od; uint32_t ol;
		bson_iter_document(&op, &ol, &od);
		bson_t opts; bson_init_static(&opts, od, ol);
		struct sim_coll *c = sim_coll_new(bson_iter_utf8(&db, NULL), bson_iter_utf8(&nm, NULL), &opts, u);
		bson_destroy(c->indexes[0]);
		c->nidx = 0;
		bson_iter_t e;
		bson_iter_recurse(&ix, &e);
		while (bson_iter_next(&e)) {
			const uint8_t *dd; uint32_t dl;
			bson_iter_document(&e, &dl, &dd);
			c->indexes = realloc(c->indexes, (c->nidx + 1) * sizeof *c->indexes);
			c->indexes[c->nidx++] = bson_new_from_data(dd, dl);
		}
		int64_t n = bson_iter_as_int64(&cn);
		for (int64_t k = 0; k < n; k++) {
			if (!(b = bson_reader_read(r, &eof))) goto out;
			sim_coll_add(c, bson_copy(b));
		}
		sim_uidx_rebuild(c);
	}
	for (int64_t k = 0; k < nop; k++) {
		if (!(b = bson_reader_read(r, &eof))) goto out;
		if (!bson_iter_init_find(&it, b, "ts")) goto out;
		bson_iter_timestamp(&it, &t, &i);
		uint8_t *d = malloc(b->len);
		memcpy(d, bson_get_data(b), b->len);
		oplog_push_raw((uint64_t)t << 32 | i, d, b->len);
	}
	rc = 0;
out:
	bson_reader_destroy(r);
	if (rc) sim_log("unable to load '%s': truncated or corrupt", path);
	return rc;
}

void sim_election_id(void)
{
	uint8_t b[12] = { 0x7f, 0xff, 0xff, 0xff };
	for (int i = 0; i < 8; i++) b[4 + i] = (uint8_t)((uint64_t)sim.term >> (56 - 8 * i));
	bson_oid_init_from_data(&sim.election_id, b);
}
