/* verify.c — `mmm verify`: are linked collections identical on their servers? */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "hash.h"
#include "log.h"
#include "mmm.h"

#define MAX_LISTED 20

struct side {
	const struct cfg_server *srv;
	char ns[2 * LINK_NS_MAX];
};

struct check {
	struct side a, b;
};

/* Documents of one collection, by _id. */
struct docmap {
	bson_t **docs;
	uint64_t *keys;
	size_t n, cap;
	size_t *slots, nslots;
};

/* {_id: v} of DOC into ID (bson_init'ed by the caller). */
static void id_doc(const bson_t *doc, bson_t *id)
{
	bson_iter_t it;
	if (bson_iter_init_find(&it, doc, "_id"))
		bson_append_iter(id, "_id", 3, &it);
}

static uint64_t id_key(const bson_t *doc)
{
	bson_t id = BSON_INITIALIZER;
	uint64_t k;
	id_doc(doc, &id);
	k = mmm_xxh64(bson_get_data(&id), id.len, 0);
	bson_destroy(&id);
	return k;
}

static int same_id(const bson_t *x, const bson_t *y)
{
	bson_t a = BSON_INITIALIZER, b = BSON_INITIALIZER;
	int same;
	id_doc(x, &a);
	id_doc(y, &b);
	same = bson_equal(&a, &b);
	bson_destroy(&a);
	bson_destroy(&b);
	return same;
}

static void map_free(struct docmap *m)
{
	for (size_t i = 0; i < m->n; i++)
		bson_destroy(m->docs[i]);
	free(m->docs);
	free(m->keys);
	free(m->slots);
}

static int map_add(struct docmap *m, const bson_t *doc)
{
	uint64_t key = id_key(doc);
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 1024;
		bson_t **nd = realloc(m->docs, cap * sizeof *nd);
		uint64_t *nk = nd ? realloc(m->keys, cap * sizeof *nk) : NULL;
		if (nd)
			m->docs = nd;
		if (!nd || !nk)
			return ENOMEM;
		m->keys = nk;
		m->cap = cap;
	}
	m->docs[m->n] = bson_copy(doc);
	m->keys[m->n++] = key;
	return 0;
}

static int map_index(struct docmap *m)
{
	m->nslots = 16;
	while (m->nslots < m->n * 2)
		m->nslots *= 2;
	m->slots = calloc(m->nslots, sizeof *m->slots);
	for (size_t i = 0; m->slots && i < m->n; i++) {
		size_t h = m->keys[i] & (m->nslots - 1);
		while (m->slots[h])
			h = (h + 1) & (m->nslots - 1);
		m->slots[h] = i + 1;
	}
	return m->slots ? 0 : ENOMEM;
}

static const bson_t *map_find(const struct docmap *m, const bson_t *doc, size_t *at)
{
	uint64_t key = id_key(doc);
	for (size_t h = key & (m->nslots - 1); m->slots[h]; h = (h + 1) & (m->nslots - 1)) {
		size_t i = m->slots[h] - 1;
		if (m->keys[i] == key && same_id(m->docs[i], doc)) {
			*at = i;
			return m->docs[i];
		}
	}
	return NULL;
}

static void split_ns(const char *ns, char *db, size_t dblen, const char **coll)
{
	const char *dot = strchr(ns, '.');
	snprintf(db, dblen, "%.*s", (int)(dot - ns), ns);
	*coll = dot + 1;
}

static int load(mongoc_client_t *c, const char *ns, struct docmap *m, bson_error_t *err)
{
	char db[LINK_NS_MAX];
	const char *coll;
	bson_t filter = BSON_INITIALIZER;
	mongoc_collection_t *mc;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	int rc = 0;

	split_ns(ns, db, sizeof db, &coll);
	mc = mongoc_client_get_collection(c, db, coll);
	cur = mongoc_collection_find_with_opts(mc, &filter, NULL, NULL);
	while (rc == 0 && mongoc_cursor_next(cur, &doc))
		rc = map_add(m, doc);
	if (rc == 0 && mongoc_cursor_error(cur, err))
		rc = MMM_ESERVER;
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(mc);
	bson_destroy(&filter);
	return rc;
}

static void print_id(const bson_t *doc, const char *why)
{
	bson_iter_t it;
	bson_t id = BSON_INITIALIZER;
	char *js;
	if (bson_iter_init_find(&it, doc, "_id"))
		bson_append_iter(&id, "_id", 3, &it);
	js = bson_as_relaxed_extended_json(&id, NULL);
	printf("      %s  %s\n", js ? js : "?", why);
	bson_free(js);
	bson_destroy(&id);
}

/* dbHash's md5 of one collection, into MD5 (>= 33 bytes); 0 or an error. */
static int coll_hash(mongoc_client_t *c, const char *ns, char *md5, bson_error_t *err)
{
	char db[LINK_NS_MAX];
	const char *coll;
	bson_t *cmd, reply;
	bson_iter_t it;
	int rc = MMM_ESERVER;

	split_ns(ns, db, sizeof db, &coll);
	cmd = BCON_NEW("dbHash", BCON_INT32(1), "collections", "[", BCON_UTF8(coll), "]");
	md5[0] = '\0';
	if (mongoc_client_command_simple(c, db, cmd, NULL, &reply, err)) {
		rc = 0;
		if (bson_iter_init(&it, &reply) && bson_iter_find_descendant(&it, "collections", &it) &&
		    BSON_ITER_HOLDS_DOCUMENT(&it)) {
			bson_iter_t sub;
			bson_iter_recurse(&it, &sub);
			if (bson_iter_find(&sub, coll) && BSON_ITER_HOLDS_UTF8(&sub))
				snprintf(md5, 33, "%s", bson_iter_utf8(&sub, NULL));
		}
	}
	bson_destroy(&reply);
	bson_destroy(cmd);
	return rc;
}

/* Compares one collection pair: 0 identical, 1 different, -1 error. */
static int compare(mongoc_client_t *ca, const struct side *a, mongoc_client_t *cb, const struct side *b)
{
	struct docmap ma = { 0 }, mb = { 0 };
	bson_error_t err;
	size_t diffs = 0, listed = 0;
	char ha[40], hb[40], miss_b[200], miss_a[200];
	int rc;

	if (strcmp(a->ns, b->ns) == 0 && coll_hash(ca, a->ns, ha, &err) == 0 && coll_hash(cb, b->ns, hb, &err) == 0 &&
	    strcmp(ha, hb) == 0) {
		printf("ok    %s/%s = %s/%s (dbHash %s)\n", a->srv->name, a->ns, b->srv->name, b->ns, ha[0] ? ha : "empty");
		return 0;
	}
	if (load(ca, a->ns, &ma, &err) != 0 || load(cb, b->ns, &mb, &err) != 0) {
		log_warnx("cannot read %s/%s or %s/%s: %s", a->srv->name, a->ns, b->srv->name, b->ns, err.message);
		map_free(&ma);
		map_free(&mb);
		return -1;
	}
	if (map_index(&ma) != 0 || map_index(&mb) != 0) {
		log_warnx("out of memory comparing %s/%s with %s/%s", a->srv->name, a->ns, b->srv->name, b->ns);
		map_free(&ma);
		map_free(&mb);
		return -1;
	}
	snprintf(miss_b, sizeof miss_b, "missing on %s", b->srv->name);
	snprintf(miss_a, sizeof miss_a, "missing on %s", a->srv->name);
	/* first pass counts, second lists */
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			if (diffs == 0)
				break;
			printf("DIFF  %s/%s != %s/%s: %zu %s (%zu and %zu documents)\n", a->srv->name, a->ns,
			    b->srv->name, b->ns, diffs, diffs == 1 ? "document differs" : "documents differ", ma.n, mb.n);
		}
		for (size_t i = 0; i < ma.n; i++) {
			size_t at;
			const bson_t *o = map_find(&mb, ma.docs[i], &at);
			const char *why = !o ? miss_b :
			    (o->len != ma.docs[i]->len || memcmp(bson_get_data(o), bson_get_data(ma.docs[i]), o->len) != 0) ?
			    "different" : NULL;
			if (!why)
				continue;
			if (pass == 0)
				diffs++;
			else if (listed++ < MAX_LISTED)
				print_id(ma.docs[i], why);
		}
		for (size_t i = 0; i < mb.n; i++) {
			size_t at;
			if (map_find(&ma, mb.docs[i], &at))
				continue;
			if (pass == 0)
				diffs++;
			else if (listed++ < MAX_LISTED)
				print_id(mb.docs[i], miss_a);
		}
	}
	if (diffs > MAX_LISTED)
		printf("      ... and %zu more\n", diffs - MAX_LISTED);
	if (diffs == 0)
		printf("ok    %s/%s = %s/%s (%zu documents)\n", a->srv->name, a->ns, b->srv->name, b->ns, ma.n);
	rc = diffs ? 1 : 0;
	map_free(&ma);
	map_free(&mb);
	return rc;
}

static int parse_link(const struct cfg *cfg, const char *spec, struct check *c)
{
	char left[600];
	const char *eq = strchr(spec, '=');
	if (eq == NULL || (size_t)(eq - spec) >= sizeof left) {
		log_warnx("malformed --link '%s': expected SRC_SERVER/NS=DST_SERVER/NS", spec);
		return 2;
	}
	snprintf(left, sizeof left, "%.*s", (int)(eq - spec), spec);
	if (mmm_parse_target(cfg, left, "link", &c->a.srv, c->a.ns, sizeof c->a.ns) != 0 ||
	    mmm_parse_target(cfg, eq + 1, "link", &c->b.srv, c->b.ns, sizeof c->b.ns) != 0)
		return 2;
	return 0;
}

/* Adds the check unless it (or its mirror image) is there already. */
static int add_check(struct check **v, size_t *n, const struct check *c)
{
	struct check *nv;
	for (size_t i = 0; i < *n; i++) {
		const struct check *o = &(*v)[i];
		if ((o->a.srv == c->a.srv && o->b.srv == c->b.srv && !strcmp(o->a.ns, c->a.ns) && !strcmp(o->b.ns, c->b.ns)) ||
		    (o->a.srv == c->b.srv && o->b.srv == c->a.srv && !strcmp(o->a.ns, c->b.ns) && !strcmp(o->b.ns, c->a.ns)))
			return 0;
	}
	if ((nv = realloc(*v, (*n + 1) * sizeof *nv)) == NULL)
		return ENOMEM;
	*v = nv;
	nv[(*n)++] = *c;
	return 0;
}

/* Expands a db.* check into one check per collection present on either side. */
static int expand(mongoc_client_t *ca, mongoc_client_t *cb, const struct check *c, struct check **v, size_t *n)
{
	struct app_link l;
	char db[LINK_NS_MAX];
	const char *coll;
	bson_error_t err;
	mongoc_client_t *cl[2] = { ca, cb };

	if (strcmp(strchr(c->a.ns, '.') + 1, "*") != 0)
		return add_check(v, n, c);
	memset(&l, 0, sizeof l);
	snprintf(l.src_ns, sizeof l.src_ns, "%.*s", (int)sizeof l.src_ns - 1, c->a.ns);
	snprintf(l.dst_ns, sizeof l.dst_ns, "%.*s", (int)sizeof l.dst_ns - 1, c->b.ns);
	for (int side = 0; side < 2; side++) {
		const char *ns = side ? c->b.ns : c->a.ns;
		mongoc_database_t *d;
		char **names;
		split_ns(ns, db, sizeof db, &coll);
		d = mongoc_client_get_database(cl[side], db);
		names = mmm_collection_names(d, &err);
		mongoc_database_destroy(d);
		if (names == NULL) {
			log_warnx("cannot list collections of '%s' on '%s': %s", db, side ? c->b.srv->name : c->a.srv->name,
			    err.message);
			return -1;
		}
		for (size_t i = 0; names[i]; i++) {
			struct check one = *c;
			char full[2 * LINK_NS_MAX], mapped[2 * LINK_NS_MAX];
			if (strncmp(names[i], "system.", 7) == 0)
				continue;
			snprintf(full, sizeof full, "%s.%s", db, names[i]);
			if (side == 0) {
				link_map_ns(&l, full, mapped, sizeof mapped);
				snprintf(one.a.ns, sizeof one.a.ns, "%s", full);
				snprintf(one.b.ns, sizeof one.b.ns, "%s", mapped);
			} else {
				struct app_link back = l;
				snprintf(back.src_ns, sizeof back.src_ns, "%.*s", (int)sizeof back.src_ns - 1, c->b.ns);
				snprintf(back.dst_ns, sizeof back.dst_ns, "%.*s", (int)sizeof back.dst_ns - 1, c->a.ns);
				link_map_ns(&back, full, mapped, sizeof mapped);
				snprintf(one.a.ns, sizeof one.a.ns, "%s", mapped);
				snprintf(one.b.ns, sizeof one.b.ns, "%s", full);
			}
			add_check(v, n, &one);
		}
		bson_strfreev(names);
	}
	return 0;
}

int cmd_verify(struct mmm *m)
{
	const struct cfg *cfg = m->cfg;
	struct check *given = NULL, *checks = NULL;
	size_t ngiven = 0, nchecks = 0;
	mongoc_client_t *clients[64] = { 0 };
	int rc = 0, differ = 0;

	if (cfg->nservers > 64) {
		log_warnx("too many servers");
		return 2;
	}
	for (size_t i = 0; i < m->o->nlinks; i++) {
		struct check c;
		if ((rc = parse_link(cfg, m->o->links[i], &c)) != 0)
			goto out;
		if ((rc = add_check(&given, &ngiven, &c)) != 0)
			goto out;
	}
	/* the servers of the given links, or every server (whose links are read) */
	for (size_t i = 0; i < cfg->nservers; i++) {
		int needed = ngiven == 0;
		for (size_t k = 0; k < ngiven && !needed; k++)
			needed = given[k].a.srv == &cfg->servers[i] || given[k].b.srv == &cfg->servers[i];
		if (needed && (clients[i] = mmm_connect(&cfg->servers[i])) == NULL) {
			rc = 1;
			goto out;
		}
	}
	if (ngiven == 0) {
		/* every link stored on every server */
		for (size_t i = 0; i < cfg->nservers; i++) {
			struct app_link *links = NULL;
			size_t n = 0;
			bson_error_t err;
			if (links_read(clients[i], &links, &n, &err) != 0) {
				log_warnx("cannot read links of '%s': %s", cfg->servers[i].name, err.message);
				rc = 1;
				goto out;
			}
			for (size_t k = 0; k < n; k++) {
				struct check c;
				c.a.srv = cfg_server_by_uuid(cfg, links[k].src);
				if (c.a.srv == NULL) {
					log_warnx("link '%s' on '%s' names a source not in '%s': skipped", links[k].id,
					    cfg->servers[i].name, cfg->path);
					continue;
				}
				c.b.srv = &cfg->servers[i];
				snprintf(c.a.ns, sizeof c.a.ns, "%s", links[k].src_ns);
				snprintf(c.b.ns, sizeof c.b.ns, "%s", links[k].dst_ns);
				add_check(&given, &ngiven, &c);
			}
			free(links);
		}
		if (ngiven == 0)
			printf("no links to verify\n");
	}
	for (size_t i = 0; i < ngiven; i++) {
		mongoc_client_t *ca = clients[given[i].a.srv - cfg->servers], *cb = clients[given[i].b.srv - cfg->servers];
		if (expand(ca, cb, &given[i], &checks, &nchecks) != 0) {
			rc = 1;
			goto out;
		}
	}
	for (size_t i = 0; i < nchecks; i++) {
		mongoc_client_t *ca = clients[checks[i].a.srv - cfg->servers], *cb = clients[checks[i].b.srv - cfg->servers];
		int r = compare(ca, &checks[i].a, cb, &checks[i].b);
		if (r < 0)
			rc = 1;
		else if (r > 0)
			differ = 1;
	}
	if (rc == 0 && differ)
		rc = 1;
out:
	for (size_t i = 0; i < cfg->nservers && i < 64; i++)
		if (clients[i])
			mongoc_client_destroy(clients[i]);
	free(given);
	free(checks);
	return rc;
}
