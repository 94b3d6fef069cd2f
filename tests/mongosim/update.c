/*
 * update.c — modifier updates on a mutable document tree, and the oplog form
 * a 6.0/7.0 primary logs for them.
 *
 * Like the server's V2LogBuilder (src/mongo/db/update/v2_log_builder.cpp),
 * every operator reports which paths it created, updated or deleted; the
 * `$v:2` diff (document_diff_serialization.cpp: sections d, u, i, s<field>;
 * array diffs {a:true, u<N>, s<N>}) is then built from those paths with
 * values taken from the post-image.  Operators that rewrite an array
 * ($pull, $pullAll, $pop, $addToSet, $push with $slice/$position/$sort) log
 * the whole array as updated; a plain $push logs each appended element as
 * u<N> (push_node.cpp, ModifyResult::kArrayAppendUpdate).  No-op operators
 * ($set to an equal value) log nothing; an update that changes nothing
 * writes no oplog entry.  Under `$v:1` every change is a `$set` of the full
 * path and every removal an `$unset` (jstests/replsets/oplog_format.js).
 */
#include "sim.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mn {
	char *key;
	bson_type_t t;
	bson_value_t v;          /* scalars only (owned copy) */
	struct mn **k;           /* documents and arrays */
	size_t n, cap;
};

static struct mn *mn_new(const char *key, bson_type_t t)
{
	struct mn *m = calloc(1, sizeof *m);
	m->key = bson_strdup(key ? key : "");
	m->t = t;
	return m;
}

static void mn_free(struct mn *m)
{
	if (!m) return;
	for (size_t i = 0; i < m->n; i++) mn_free(m->k[i]);
	free(m->k);
	if (m->t != BSON_TYPE_DOCUMENT && m->t != BSON_TYPE_ARRAY) bson_value_destroy(&m->v);
	bson_free(m->key);
	free(m);
}

static bool is_cont(const struct mn *m) { return m->t == BSON_TYPE_DOCUMENT || m->t == BSON_TYPE_ARRAY; }

static void mn_push(struct mn *p, struct mn *c)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 8;
		p->k = realloc(p->k, p->cap * sizeof *p->k);
	}
	p->k[p->n++] = c;
}

static struct mn *mn_from_iter(const bson_iter_t *it, const char *key);

static void mn_fill(struct mn *m, const uint8_t *d, uint32_t l)
{
	bson_iter_t it;
	bson_iter_init_from_data(&it, d, l);
	while (bson_iter_next(&it)) mn_push(m, mn_from_iter(&it, bson_iter_key(&it)));
}

static struct mn *mn_from_iter(const bson_iter_t *it, const char *key)
{
	struct mn *m = mn_new(key, bson_iter_type(it));
	if (is_cont(m)) {
		const uint8_t *d; uint32_t l;
		if (m->t == BSON_TYPE_DOCUMENT) bson_iter_document(it, &l, &d);
		else bson_iter_array(it, &l, &d);
		mn_fill(m, d, l);
	} else {
		bson_value_copy(bson_iter_value((bson_iter_t *)it), &m->v);
	}
	return m;
}

static struct mn *mn_from_bson(const bson_t *b)
{
	struct mn *m = mn_new("", BSON_TYPE_DOCUMENT);
	mn_fill(m, bson_get_data(b), b->len);
	return m;
}

static struct mn *mn_clone(const struct mn *s, const char *key)
{
	struct mn *m = mn_new(key ? key : s->key, s->t);
	if (is_cont(s)) {
		for (size_t i = 0; i < s->n; i++) mn_push(m, mn_clone(s->k[i], NULL));
	} else {
		bson_value_copy(&s->v, &m->v);
	}
	return m;
}

static void mn_append(bson_t *out, const char *key, const struct mn *m);

static void mn_children(bson_t *out, const struct mn *m)
{
	char buf[16];
	for (size_t i = 0; i < m->n; i++) {
		const char *k = m->k[i]->key;
		if (m->t == BSON_TYPE_ARRAY) {
			bson_uint32_to_string((uint32_t)i, &k, buf, sizeof buf);
		}
		mn_append(out, k, m->k[i]);
	}
}

static void mn_append(bson_t *out, const char *key, const struct mn *m)
{
	bson_t ch;
	if (m->t == BSON_TYPE_DOCUMENT) {
		bson_append_document_begin(out, key, -1, &ch);
		mn_children(&ch, m);
		bson_append_document_end(out, &ch);
	} else if (m->t == BSON_TYPE_ARRAY) {
		bson_append_array_begin(out, key, -1, &ch);
		mn_children(&ch, m);
		bson_append_array_end(out, &ch);
	} else {
		bson_append_value(out, key, -1, &m->v);
	}
}

static bool mn_equal(const struct mn *a, const struct mn *b)
{
	if (a->t != b->t) return false;
	if (!is_cont(a)) {
		bson_t x = BSON_INITIALIZER, y = BSON_INITIALIZER;
		bson_append_value(&x, "", 0, &a->v);
		bson_append_value(&y, "", 0, &b->v);
		bool r = x.len == y.len && !memcmp(bson_get_data(&x), bson_get_data(&y), x.len);
		bson_destroy(&x); bson_destroy(&y);
		return r;
	}
	if (a->n != b->n) return false;
	for (size_t i = 0; i < a->n; i++) {
		if (a->t == BSON_TYPE_DOCUMENT && strcmp(a->k[i]->key, b->k[i]->key)) return false;
		if (!mn_equal(a->k[i], b->k[i])) return false;
	}
	return true;
}

static bool parse_index(const char *s, size_t *out)
{
	if (!*s) return false;
	size_t v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9') return false;
		v = v * 10 + (size_t)(*p - '0');
		if (v > 1500000) return false;   /* mongod refuses to backfill more */
	}
	*out = v;
	return true;
}

static long mn_find(const struct mn *m, const char *key)
{
	if (m->t == BSON_TYPE_ARRAY) {
		size_t i;
		if (!parse_index(key, &i) || i >= m->n) return -1;
		return (long)i;
	}
	for (size_t i = 0; i < m->n; i++) if (!strcmp(m->k[i]->key, key)) return (long)i;
	return -1;
}

static struct mn *mn_null(const char *key)
{
	struct mn *m = mn_new(key, BSON_TYPE_NULL);
	m->v.value_type = BSON_TYPE_NULL;
	return m;
}

static struct mn *mn_scalar(const char *key, const bson_value_t *v)
{
	struct mn *m = mn_new(key, v->value_type);
	if (is_cont(m)) {
		mn_fill(m, v->value.v_doc.data, v->value.v_doc.data_len);
	} else {
		bson_value_copy(v, &m->v);
	}
	return m;
}

/* ---- paths and events ---- */

#define MAXC 64
struct path { char *buf; char *c[MAXC]; int n; };

static int path_split(struct path *p, const char *s)
{
	p->buf = bson_strdup(s);
	p->n = 0;
	char *q = p->buf;
	for (;;) {
		if (p->n == MAXC) return -1;
		p->c[p->n++] = q;
		char *d = strchr(q, '.');
		if (!d) break;
		*d = 0;
		q = d + 1;
	}
	for (int i = 0; i < p->n; i++) if (!*p->c[i]) return -1;
	return 0;
}

struct ev { char *full; int depth; char kind; };   /* depth: components used for the diff */

struct uctx {
	struct mn *root;
	struct ev *ev; size_t nev, capev;
	char *err; size_t errlen; int code;
	bool upsert_insert;
};

static int fail(struct uctx *u, int code, const char *fmt, ...) BSON_GNUC_PRINTF(3, 4);
static int fail(struct uctx *u, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(u->err, u->errlen, fmt, ap);
	va_end(ap);
	u->code = code;
	return code;
}

static void add_ev(struct uctx *u, const struct path *p, int depth, char kind)
{
	if (u->nev == u->capev) {
		u->capev = u->capev ? u->capev * 2 : 8;
		u->ev = realloc(u->ev, u->capev * sizeof *u->ev);
	}
	char buf[2048] = "";
	size_t off = 0;
	for (int i = 0; i < p->n; i++)
		off += (size_t)snprintf(buf + off, sizeof buf - off > 0 ? sizeof buf - off : 0, "%s%s", i ? "." : "", p->c[i]);
	u->ev[u->nev].full = bson_strdup(buf);
	u->ev[u->nev].depth = depth;
	u->ev[u->nev].kind = kind;
	u->nev++;
}

/* walks to the container of the last component.  With create, missing
 * intermediate documents are made; *created gets the depth of the first
 * component created (or -1). */
static struct mn *walk_parent(struct uctx *u, const struct path *p, bool create, int *created)
{
	struct mn *m = u->root;
	*created = -1;
	for (int i = 0; i < p->n - 1; i++) {
		long j = mn_find(m, p->c[i]);
		if (j < 0) {
			if (!create) return NULL;
			if (m->t == BSON_TYPE_ARRAY) {
				size_t idx;
				if (!parse_index(p->c[i], &idx)) {
					fail(u, E_PATHNOTVIABLE, "Cannot create field '%s' in element {%s: [...]}", p->c[i], m->key);
					return NULL;
				}
				while (m->n < idx) mn_push(m, mn_null(""));
				mn_push(m, mn_new("", BSON_TYPE_DOCUMENT));
				j = (long)idx;
			} else {
				mn_push(m, mn_new(p->c[i], BSON_TYPE_DOCUMENT));
				j = (long)m->n - 1;
			}
			if (*created < 0) *created = i + 1;
		}
		struct mn *c = m->k[j];
		if (!is_cont(c)) {
			if (!create) return NULL;
			fail(u, E_PATHNOTVIABLE, "Cannot create field '%s' in element {%s: %s}", p->c[i + 1],
			     p->c[i], sim_type_name(c->t));
			return NULL;
		}
		if (c->t == BSON_TYPE_ARRAY) {
			size_t idx;
			if (!parse_index(p->c[i + 1], &idx) && create) {
				fail(u, E_PATHNOTVIABLE, "Cannot create field '%s' in element {%s: [...]}", p->c[i + 1], p->c[i]);
				return NULL;
			}
		}
		m = c;
	}
	return m;
}

/* stores `nv` (owned) as the last component of p; records the event */
static int put(struct uctx *u, const struct path *p, struct mn *nv)
{
	int created;
	struct mn *par = walk_parent(u, p, true, &created);
	if (!par) { mn_free(nv); return u->code ? u->code : E_PATHNOTVIABLE; }
	const char *last = p->c[p->n - 1];
	long j = mn_find(par, last);
	bson_free(nv->key);
	nv->key = bson_strdup(last);
	if (j >= 0) {
		if (mn_equal(par->k[j], nv)) { mn_free(nv); return 0; }
		mn_free(par->k[j]);
		par->k[j] = nv;
		add_ev(u, p, created >= 0 ? created : p->n, created >= 0 ? 'i' : 'u');
		return 0;
	}
	if (par->t == BSON_TYPE_ARRAY) {
		size_t idx;
		if (!parse_index(last, &idx)) { mn_free(nv); return fail(u, E_PATHNOTVIABLE, "Cannot create field '%s' in an array", last); }
		while (par->n < idx) mn_push(par, mn_null(""));
		mn_push(par, nv);
		add_ev(u, p, created >= 0 ? created : p->n, created >= 0 ? 'i' : 'u');
		return 0;
	}
	mn_push(par, nv);
	add_ev(u, p, created >= 0 ? created : p->n, 'i');
	return 0;
}

static struct mn *get(struct uctx *u, const struct path *p)
{
	int created;
	struct mn *par = walk_parent(u, p, false, &created);
	if (!par) return NULL;
	long j = mn_find(par, p->c[p->n - 1]);
	return j < 0 ? NULL : par->k[j];
}

static void unset(struct uctx *u, const struct path *p)
{
	int created;
	struct mn *par = walk_parent(u, p, false, &created);
	if (!par) return;
	long j = mn_find(par, p->c[p->n - 1]);
	if (j < 0) return;
	if (par->t == BSON_TYPE_ARRAY) {   /* $unset of an array element sets it to null */
		if (par->k[j]->t == BSON_TYPE_NULL) return;
		mn_free(par->k[j]);
		par->k[j] = mn_null("");
		add_ev(u, p, p->n, 'u');
		return;
	}
	mn_free(par->k[j]);
	memmove(par->k + j, par->k + j + 1, (par->n - (size_t)j - 1) * sizeof *par->k);
	par->n--;
	add_ev(u, p, p->n, 'd');
}

/* ---- arithmetic ---- */

static bool num_t(bson_type_t t) { return t == BSON_TYPE_INT32 || t == BSON_TYPE_INT64 || t == BSON_TYPE_DOUBLE; }

static double as_d(const bson_value_t *v)
{
	return v->value_type == BSON_TYPE_DOUBLE ? v->value.v_double :
	       v->value_type == BSON_TYPE_INT64 ? (double)v->value.v_int64 : v->value.v_int32;
}
static int64_t as_l(const bson_value_t *v)
{
	return v->value_type == BSON_TYPE_INT64 ? v->value.v_int64 :
	       v->value_type == BSON_TYPE_INT32 ? v->value.v_int32 : (int64_t)v->value.v_double;
}

static void arith(const bson_value_t *a, const bson_value_t *b, bool mul, bson_value_t *r)
{
	memset(r, 0, sizeof *r);
	if (a->value_type == BSON_TYPE_DOUBLE || b->value_type == BSON_TYPE_DOUBLE) {
		r->value_type = BSON_TYPE_DOUBLE;
		r->value.v_double = mul ? as_d(a) * as_d(b) : as_d(a) + as_d(b);
		return;
	}
	int64_t x = as_l(a), y = as_l(b), z;
	bool ovf = mul ? __builtin_mul_overflow(x, y, &z) : __builtin_add_overflow(x, y, &z);
	if (ovf) {
		r->value_type = BSON_TYPE_DOUBLE;
		r->value.v_double = mul ? (double)x * (double)y : (double)x + (double)y;
		return;
	}
	if (a->value_type == BSON_TYPE_INT32 && b->value_type == BSON_TYPE_INT32 && z >= INT32_MIN && z <= INT32_MAX) {
		r->value_type = BSON_TYPE_INT32;
		r->value.v_int32 = (int32_t)z;
	} else {
		r->value_type = BSON_TYPE_INT64;
		r->value.v_int64 = z;
	}
}

/* ---- operators ---- */

static int op_arith(struct uctx *u, const struct path *p, const bson_iter_t *arg, bool mul, const char *opname)
{
	const bson_value_t *a = bson_iter_value((bson_iter_t *)arg);
	if (!num_t(a->value_type))
		return fail(u, E_TYPEMISMATCH, "Cannot %s with non-numeric argument: {%s: ...}",
		            mul ? "multiply" : "increment", p->buf);
	struct mn *cur = get(u, p);
	bson_value_t r;
	if (!cur) {
		if (mul) {
			bson_value_t zero = { 0 };
			zero.value_type = a->value_type;
			arith(&zero, a, true, &r);
		} else {
			r = *a;
		}
	} else {
		if (!num_t(cur->t))
			return fail(u, E_TYPEMISMATCH, "Cannot apply %s to a value of non-numeric type. {_id: ...} has the field '%s' of non-numeric type %s",
			            opname, p->c[p->n - 1], sim_type_name(cur->t));
		arith(&cur->v, a, mul, &r);
	}
	return put(u, p, mn_scalar("", &r));
}

static int op_minmax(struct uctx *u, const struct path *p, const bson_iter_t *arg, bool max)
{
	struct mn *cur = get(u, p);
	if (cur) {
		bson_t tmp = BSON_INITIALIZER;
		mn_append(&tmp, "x", cur);
		bson_iter_t ci;
		bson_iter_init_find(&ci, &tmp, "x");
		int c = sim_cmp_iter(arg, &ci);
		bson_destroy(&tmp);
		if (max ? c <= 0 : c >= 0) return 0;
	}
	return put(u, p, mn_from_iter(arg, ""));
}

static int need_array(struct uctx *u, const struct path *p, struct mn *cur, const char *op)
{
	(void)op;
	if (cur && cur->t != BSON_TYPE_ARRAY)
		return fail(u, E_BADVALUE, "The field '%s' must be an array but is of type %s in document {_id: ...}",
		            p->buf, sim_type_name(cur->t));
	return 0;
}

static int op_push_impl(struct uctx *u, const struct path *p, const bson_iter_t *arg, bson_t **spec_out);

static int op_push(struct uctx *u, const struct path *p, const bson_iter_t *arg)
{
	bson_t *spec = NULL;
	int rc = op_push_impl(u, p, arg, &spec);
	if (spec) bson_destroy(spec);
	return rc;
}

static int op_push_impl(struct uctx *u, const struct path *p, const bson_iter_t *arg, bson_t **spec_out)
{
	struct mn *cur = get(u, p);
	int rc = need_array(u, p, cur, "$push");
	if (rc) return rc;
	/* modifiers */
	bool has_each = false, has_slice = false, has_pos = false, has_sort = false;
	int64_t slice = 0, pos = 0;
	bson_iter_t each;
	int sortdir = 0;
	bson_t *sortspec = NULL;   /* $sort: {field: 1, ...} orders embedded documents (freed by op_push) */
	if (BSON_ITER_HOLDS_DOCUMENT(arg)) {
		bson_iter_t c;
		bson_iter_recurse(arg, &c);
		if (bson_iter_next(&c) && bson_iter_key(&c)[0] == '$') {
			bson_iter_recurse(arg, &c);
			while (bson_iter_next(&c)) {
				const char *k = bson_iter_key(&c);
				if (!strcmp(k, "$each")) {
					if (!BSON_ITER_HOLDS_ARRAY(&c)) return fail(u, E_BADVALUE, "The argument to $each in $push must be an array but it was of type: %s", sim_type_name(bson_iter_type(&c)));
					has_each = true; each = c;
				} else if (!strcmp(k, "$slice")) { has_slice = true; slice = sim_int(&c); }
				else if (!strcmp(k, "$position")) { has_pos = true; pos = sim_int(&c); }
				else if (!strcmp(k, "$sort")) {
					has_sort = true;
					sortdir = BSON_ITER_HOLDS_DOCUMENT(&c) ? 2 : (sim_num(&c) < 0 ? -1 : 1);
					if (sortdir == 2) {
						const uint8_t *sd; uint32_t sl;
						bson_iter_document(&c, &sl, &sd);
						if (!sortspec) sortspec = *spec_out = bson_new_from_data(sd, sl);
					}
				}
				else return fail(u, E_BADVALUE, "Unrecognized clause in $push: %s", k);
			}
			if (!has_each) return fail(u, E_BADVALUE, "$push with modifiers requires $each");
		}
	}
	struct mn *arr = cur ? mn_clone(cur, "") : mn_new("", BSON_TYPE_ARRAY);
	size_t oldn = arr->n;
	struct mn **add = NULL; size_t nadd = 0;
	if (has_each) {
		bson_iter_t e;
		bson_iter_recurse(&each, &e);
		while (bson_iter_next(&e)) { add = realloc(add, (nadd + 1) * sizeof *add); add[nadd++] = mn_from_iter(&e, ""); }
	} else {
		add = malloc(sizeof *add);
		add[nadd++] = mn_from_iter(arg, "");
	}
	size_t at = arr->n;
	if (has_pos) {
		if (pos < 0) at = (size_t)((int64_t)arr->n + pos < 0 ? 0 : (int64_t)arr->n + pos);
		else at = (size_t)pos > arr->n ? arr->n : (size_t)pos;
	}
	for (size_t i = 0; i < nadd; i++) mn_push(arr, NULL);
	if (oldn > at) memmove(arr->k + at + nadd, arr->k + at, (oldn - at) * sizeof *arr->k);
	for (size_t i = 0; i < nadd; i++) arr->k[at + i] = add[i];
	free(add);
	if (has_sort && sortdir) {
		/* sort elements by value (or by the given fields) — insertion sort */
		for (size_t i = 1; i < arr->n; i++) {
			for (size_t j = i; j > 0; j--) {
				bson_t x = BSON_INITIALIZER, y = BSON_INITIALIZER;
				mn_append(&x, "v", arr->k[j - 1]);
				mn_append(&y, "v", arr->k[j]);
				bson_iter_t xi, yi;
				bson_iter_init_find(&xi, &x, "v");
				bson_iter_init_find(&yi, &y, "v");
				int c;
				if (sortspec && BSON_ITER_HOLDS_DOCUMENT(&xi) && BSON_ITER_HOLDS_DOCUMENT(&yi)) {
					bson_t dx, dy;
					const uint8_t *p1, *p2; uint32_t l1, l2;
					bson_iter_document(&xi, &l1, &p1);
					bson_iter_document(&yi, &l2, &p2);
					bson_init_static(&dx, p1, l1);
					bson_init_static(&dy, p2, l2);
					c = sim_sort_cmp(&dx, &dy, sortspec);
				} else {
					c = sim_cmp_iter(&xi, &yi) * (sortdir == -1 ? -1 : 1);
				}
				bson_destroy(&x); bson_destroy(&y);
				if (c <= 0) break;
				struct mn *t = arr->k[j]; arr->k[j] = arr->k[j - 1]; arr->k[j - 1] = t;
			}
		}
	}
	if (has_slice) {
		if (slice >= 0 && (size_t)slice < arr->n) {
			for (size_t i = (size_t)slice; i < arr->n; i++) mn_free(arr->k[i]);
			arr->n = (size_t)slice;
		} else if (slice < 0 && (size_t)(-slice) < arr->n) {
			size_t drop = arr->n - (size_t)(-slice);
			for (size_t i = 0; i < drop; i++) mn_free(arr->k[i]);
			memmove(arr->k, arr->k + drop, (arr->n - drop) * sizeof *arr->k);
			arr->n -= drop;
		}
	}
	bool append_only = cur && !has_slice && !has_sort && (!has_pos || at == oldn);
	if (append_only) {
		/* log each appended element as its own field: u<N> in the array diff */
		if (nadd == 0) { mn_free(arr); return 0; }
		for (size_t i = 0; i < nadd; i++) mn_push(cur, mn_clone(arr->k[oldn + i], ""));
		for (size_t i = 0; i < nadd; i++) {
			struct path q = *p;
			char num[16];
			snprintf(num, sizeof num, "%zu", oldn + i);
			q.c[q.n++] = num;
			add_ev(u, &q, q.n, 'u');
		}
		mn_free(arr);
		return 0;
	}
	return put(u, p, arr);
}

static int op_addtoset(struct uctx *u, const struct path *p, const bson_iter_t *arg)
{
	struct mn *cur = get(u, p);
	int rc = need_array(u, p, cur, "$addToSet");
	if (rc) return rc;
	struct mn *arr = cur ? mn_clone(cur, "") : mn_new("", BSON_TYPE_ARRAY);
	bson_iter_t e;
	bool each = false;
	if (BSON_ITER_HOLDS_DOCUMENT(arg)) {
		bson_iter_t c;
		bson_iter_recurse(arg, &c);
		if (bson_iter_next(&c) && !strcmp(bson_iter_key(&c), "$each")) {
			if (!BSON_ITER_HOLDS_ARRAY(&c)) { mn_free(arr); return fail(u, E_TYPEMISMATCH, "The argument to $each in $addToSet must be an array"); }
			bson_iter_recurse(&c, &e);
			each = true;
		}
	}
	bson_iter_t one = *arg;
	for (;;) {
		const bson_iter_t *v;
		if (each) { if (!bson_iter_next(&e)) break; v = &e; }
		else v = &one;
		struct mn *nv = mn_from_iter(v, "");
		bool dup = false;
		for (size_t i = 0; i < arr->n && !dup; i++) dup = mn_equal(arr->k[i], nv);
		if (dup) mn_free(nv); else mn_push(arr, nv);
		if (!each) break;
	}
	return put(u, p, arr);
}

static int op_pull(struct uctx *u, const struct path *p, const bson_iter_t *arg, int mode)
{
	/* mode 0 $pull, 1 $pullAll, 2 $pop */
	struct mn *cur = get(u, p);
	if (!cur) return 0;
	if (cur->t != BSON_TYPE_ARRAY) {
		if (mode == 2) return fail(u, E_TYPEMISMATCH, "Path '%s' contains an element of non-array type '%s'", p->buf, sim_type_name(cur->t));
		return fail(u, E_BADVALUE, "Cannot apply $pull to a non-array value");
	}
	if (mode == 1 && !BSON_ITER_HOLDS_ARRAY(arg))
		return fail(u, E_BADVALUE, "$pullAll requires an array argument but was given a %s", sim_type_name(bson_iter_type(arg)));
	struct mn *arr = mn_new("", BSON_TYPE_ARRAY);
	if (mode == 2) {
		if (cur->n == 0) { mn_free(arr); return 0; }
		bool first = sim_num(arg) < 0;
		for (size_t i = 0; i < cur->n; i++) {
			if ((first && i == 0) || (!first && i == cur->n - 1)) continue;
			mn_push(arr, mn_clone(cur->k[i], ""));
		}
		return put(u, p, arr);
	}
	for (size_t i = 0; i < cur->n; i++) {
		bson_t tmp = BSON_INITIALIZER;
		mn_append(&tmp, "v", cur->k[i]);
		bson_iter_t vi;
		bson_iter_init_find(&vi, &tmp, "v");
		bool drop = false;
		const char *err = NULL;
		if (mode == 0) {
			drop = sim_match_value(&vi, arg, &err);
		} else {
			bson_iter_t e;
			bson_iter_recurse(arg, &e);
			while (bson_iter_next(&e) && !drop)
				drop = sim_cmp_iter(&vi, &e) == 0 && sim_canon(bson_iter_type(&vi)) == sim_canon(bson_iter_type(&e));
		}
		bson_destroy(&tmp);
		if (!drop) mn_push(arr, mn_clone(cur->k[i], ""));
	}
	return put(u, p, arr);
}

static int op_rename(struct uctx *u, const struct path *p, const bson_iter_t *arg)
{
	if (!BSON_ITER_HOLDS_UTF8(arg))
		return fail(u, E_BADVALUE, "The 'to' field for $rename must be a string: %s: ...", p->buf);
	struct path q;
	if (path_split(&q, bson_iter_utf8(arg, NULL))) { bson_free(q.buf); return fail(u, E_BADVALUE, "empty field name in $rename"); }
	int rc = 0;
	struct mn *cur = get(u, p);
	if (cur) {
		struct mn *v = mn_clone(cur, "");
		unset(u, p);
		rc = put(u, &q, v);
	}
	bson_free(q.buf);
	return rc;
}

static int op_curdate(struct uctx *u, const struct path *p, const bson_iter_t *arg)
{
	bson_value_t v = { 0 };
	bool ts = false;
	if (BSON_ITER_HOLDS_DOCUMENT(arg)) {
		bson_iter_t t;
		bson_iter_recurse(arg, &t);
		if (bson_iter_find(&t, "$type") && BSON_ITER_HOLDS_UTF8(&t)) {
			const char *s = bson_iter_utf8(&t, NULL);
			if (!strcmp(s, "timestamp")) ts = true;
			else if (strcmp(s, "date")) return fail(u, E_BADVALUE, "The '$type' string field is required to be 'date' or 'timestamp'");
		}
	}
	int64_t now = sim_now_ms();
	if (ts) {
		int64_t w;
		uint64_t t = sim_next_ts(&w);
		v.value_type = BSON_TYPE_TIMESTAMP;
		v.value.v_timestamp.timestamp = (uint32_t)(t >> 32);
		v.value.v_timestamp.increment = (uint32_t)t;
	} else {
		v.value_type = BSON_TYPE_DATE_TIME;
		v.value.v_datetime = now;
	}
	return put(u, p, mn_scalar("", &v));
}

/* ---- diff building ---- */

struct dn { char *key; char kind; struct dn **k; size_t n; };

static void dn_free(struct dn *d)
{
	if (!d) return;
	for (size_t i = 0; i < d->n; i++) dn_free(d->k[i]);
	free(d->k);
	bson_free(d->key);
	free(d);
}

static struct dn *dn_child(struct dn *d, const char *key, bool create)
{
	for (size_t i = 0; i < d->n; i++) if (!strcmp(d->k[i]->key, key)) return d->k[i];
	if (!create) return NULL;
	struct dn *c = calloc(1, sizeof *c);
	c->key = bson_strdup(key);
	d->k = realloc(d->k, (d->n + 1) * sizeof *d->k);
	d->k[d->n++] = c;
	return c;
}

static void dn_add(struct dn *root, const struct ev *e)
{
	struct path p;
	path_split(&p, e->full);
	struct dn *d = root;
	for (int i = 0; i < e->depth; i++) {
		struct dn *c = dn_child(d, p.c[i], true);
		if (i == e->depth - 1) {
			/* a leaf replaces whatever was recorded below it; a delete
			 * after an insert of a new field cancels it */
			for (size_t j = 0; j < c->n; j++) dn_free(c->k[j]);
			free(c->k); c->k = NULL; c->n = 0;
			if (c->kind == 'i' && e->kind == 'u') c->kind = 'i';
			else c->kind = e->kind;
		} else if (c->kind) {
			break;  /* already logged whole */
		}
		d = c;
	}
	bson_free(p.buf);
}

static void ser_arr(bson_t *out, struct dn *d, const struct mn *post);

static void ser_doc(bson_t *out, struct dn *d, const struct mn *post)
{
	static const char kinds[] = "dui";
	for (int s = 0; s < 3; s++) {
		bson_t sec;
		bool open = false;
		for (size_t i = 0; i < d->n; i++) {
			struct dn *c = d->k[i];
			if (c->kind != kinds[s]) continue;
			long j = mn_find(post, c->key);
			if (s > 0 && j < 0) continue;
			if (!open) { bson_append_document_begin(out, s == 0 ? "d" : s == 1 ? "u" : "i", 1, &sec); open = true; }
			if (s == 0) bson_append_bool(&sec, c->key, -1, false);
			else mn_append(&sec, c->key, post->k[j]);
		}
		if (open) bson_append_document_end(out, &sec);
	}
	for (size_t i = 0; i < d->n; i++) {
		struct dn *c = d->k[i];
		if (c->kind) continue;
		long j = mn_find(post, c->key);
		if (j < 0 || !is_cont(post->k[j])) continue;
		char key[1100];
		snprintf(key, sizeof key, "s%s", c->key);
		bson_t sub;
		bson_append_document_begin(out, key, -1, &sub);
		if (post->k[j]->t == BSON_TYPE_ARRAY) ser_arr(&sub, c, post->k[j]);
		else ser_doc(&sub, c, post->k[j]);
		bson_append_document_end(out, &sub);
	}
}

static int cmp_dn_idx(const void *a, const void *b)
{
	long x = atol((*(struct dn *const *)a)->key), y = atol((*(struct dn *const *)b)->key);
	return x < y ? -1 : x > y;
}

static void ser_arr(bson_t *out, struct dn *d, const struct mn *post)
{
	bson_append_bool(out, "a", 1, true);
	if (d->n > 1) qsort(d->k, d->n, sizeof *d->k, cmp_dn_idx);
	for (size_t i = 0; i < d->n; i++) {
		struct dn *c = d->k[i];
		long j = mn_find(post, c->key);
		if (j < 0) continue;
		char key[32];
		if (c->kind || !is_cont(post->k[j])) {
			snprintf(key, sizeof key, "u%s", c->key);
			mn_append(out, key, post->k[j]);
		} else {
			snprintf(key, sizeof key, "s%s", c->key);
			bson_t sub;
			bson_append_document_begin(out, key, -1, &sub);
			if (post->k[j]->t == BSON_TYPE_ARRAY) ser_arr(&sub, c, post->k[j]);
			else ser_doc(&sub, c, post->k[j]);
			bson_append_document_end(out, &sub);
		}
	}
}

static const struct mn *mn_at(const struct mn *m, const char *full)
{
	struct path p;
	path_split(&p, full);
	const struct mn *c = m;
	for (int i = 0; i < p.n && c; i++) {
		long j = is_cont(c) ? mn_find(c, p.c[i]) : -1;
		c = j < 0 ? NULL : c->k[j];
	}
	bson_free(p.buf);
	return c;
}

static bson_t *build_oplog(struct uctx *u, bool v1)
{
	bson_t *o = bson_new();
	if (v1) {
		BSON_APPEND_INT32(o, "$v", 1);
		bson_t s;
		bool open = false;
		for (size_t i = 0; i < u->nev; i++) {
			if (u->ev[i].kind == 'd') continue;
			const struct mn *v = mn_at(u->root, u->ev[i].full);
			if (!v) continue;
			if (!open) { bson_append_document_begin(o, "$set", 4, &s); open = true; }
			mn_append(&s, u->ev[i].full, v);
		}
		if (open) bson_append_document_end(o, &s);
		open = false;
		for (size_t i = 0; i < u->nev; i++) {
			if (u->ev[i].kind != 'd') continue;
			if (!open) { bson_append_document_begin(o, "$unset", 6, &s); open = true; }
			bson_append_bool(&s, u->ev[i].full, -1, true);
		}
		if (open) bson_append_document_end(o, &s);
		return o;
	}
	struct dn root = { 0 };
	for (size_t i = 0; i < u->nev; i++) dn_add(&root, &u->ev[i]);
	BSON_APPEND_INT32(o, "$v", 2);
	bson_t diff;
	bson_append_document_begin(o, "diff", 4, &diff);
	ser_doc(&diff, &root, u->root);
	bson_append_document_end(o, &diff);
	for (size_t i = 0; i < root.n; i++) dn_free(root.k[i]);
	free(root.k);
	return o;
}

/* ---- entry points ---- */

bool sim_is_modifier(const bson_t *upd)
{
	bson_iter_t it;
	return bson_iter_init(&it, upd) && bson_iter_next(&it) && bson_iter_key(&it)[0] == '$';
}

/* component-wise: numeric components numerically, others bytewise */
static int cmp_paths(const char *a, const char *b)
{
	while (*a && *b) {
		size_t la = strcspn(a, "."), lb = strcspn(b, ".");
		size_t ia = 0, ib = 0;
		char ca[32], cb[32];
		int c;
		bool na = la < sizeof ca && (memcpy(ca, a, la), ca[la] = 0, parse_index(ca, &ia));
		bool nb = lb < sizeof cb && (memcpy(cb, b, lb), cb[lb] = 0, parse_index(cb, &ib));
		if (na && nb) c = ia < ib ? -1 : ia > ib;
		else {
			c = memcmp(a, b, la < lb ? la : lb);
			if (!c) c = la < lb ? -1 : la > lb;
		}
		if (c) return c;
		a += la; b += lb;
		if (*a == '.') a++;
		if (*b == '.') b++;
	}
	return *a ? 1 : *b ? -1 : 0;
}

struct item_sort { const char *name; bson_iter_t f; size_t seq; char *path; };

static int cmp_items(const void *x, const void *y)
{
	const struct item_sort *a = x, *b = y;
	int c = cmp_paths(a->path ? a->path : bson_iter_key(&a->f), b->path ? b->path : bson_iter_key(&b->f));
	if (c) return c;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static bool paths_conflict(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), n = la < lb ? la : lb;
	if (strncmp(a, b, n)) return false;
	return la == lb || (la < lb ? b[la] == '.' : a[lb] == '.');
}

/* index of the first element of the array at prefix that the query's
 * condition on that array (or on a field inside its elements) matches */
static long positional_index(const bson_t *pre, const bson_t *query, const char *prefix)
{
	bson_iter_t arr, q;
	if (!query || !sim_lookup(pre, prefix, &arr) || !BSON_ITER_HOLDS_ARRAY(&arr)) return -1;
	size_t pl = strlen(prefix);
	bson_iter_init(&q, query);
	while (bson_iter_next(&q)) {
		const char *k = bson_iter_key(&q);
		if (strncmp(k, prefix, pl) || (k[pl] != '.' && k[pl] != 0)) continue;
		const char *rest = k[pl] ? k + pl + 1 : "";
		bson_iter_t cond = q, em;
		bool elem_match = false;
		if (BSON_ITER_HOLDS_DOCUMENT(&q) && bson_iter_recurse(&q, &em) && bson_iter_next(&em) &&
		    !strcmp(bson_iter_key(&em), "$elemMatch")) {
			cond = em;
			elem_match = true;
		}
		bson_iter_t e;
		bson_iter_recurse(&arr, &e);
		long idx = 0;
		while (bson_iter_next(&e)) {
			const char *err = NULL;
			bool ok = false;
			if (*rest || (elem_match && BSON_ITER_HOLDS_DOCUMENT(&e) && BSON_ITER_HOLDS_DOCUMENT(&cond))) {
				if (BSON_ITER_HOLDS_DOCUMENT(&e)) {
					const uint8_t *d; uint32_t l;
					bson_iter_document(&e, &l, &d);
					bson_t ed;
					bson_init_static(&ed, d, l);
					bson_t f = BSON_INITIALIZER;
					if (*rest) {
						bson_append_iter(&f, rest, -1, &cond);
					} else {
						bson_iter_document(&cond, &l, &d);
						bson_t cd;
						bson_init_static(&cd, d, l);
						bson_concat(&f, &cd);
					}
					ok = sim_match(&ed, &f, &err);
					bson_destroy(&f);
				}
			} else {
				ok = sim_match_value(&e, &cond, &err);
			}
			if (ok) return idx;
			idx++;
		}
	}
	return -1;
}

int sim_update_apply(const bson_t *pre, const bson_t *upd, const bson_t *query, bool v1, bool upsert_insert,
                     struct sim_upd_result *res, char *errmsg, size_t errlen)
{
	struct uctx u = { 0 };
	u.err = errmsg; u.errlen = errlen; u.upsert_insert = upsert_insert;
	u.root = mn_from_bson(pre);
	memset(res, 0, sizeof *res);
	bson_iter_t op;
	int rc = 0;
	/* collect every path first to refuse conflicting operators (code 40) */
	const char *paths[1024]; size_t np = 0;
	bson_iter_init(&op, upd);
	while (bson_iter_next(&op) && !rc) {
		const char *name = bson_iter_key(&op);
		static const char *known[] = { "$set", "$setOnInsert", "$unset", "$inc", "$mul", "$min", "$max", "$rename",
		                               "$push", "$addToSet", "$pull", "$pullAll", "$pop", "$currentDate", NULL };
		bool ok = false;
		for (int k = 0; known[k]; k++) if (!strcmp(known[k], name)) ok = true;
		if (!ok) {
			rc = fail(&u, E_FAILEDTOPARSE, "Unknown modifier: %s. Expected a valid update modifier or pipeline-style update specified as an array", name);
			break;
		}
		if (!BSON_ITER_HOLDS_DOCUMENT(&op)) {
			rc = fail(&u, E_FAILEDTOPARSE, "Modifiers operate on fields but we found type %s instead. For example: {$mod: {<field>: ...}} not {%s: %s}",
			          sim_type_name(bson_iter_type(&op)), name, sim_type_name(bson_iter_type(&op)));
			break;
		}
		bson_iter_t f;
		bson_iter_recurse(&op, &f);
		while (bson_iter_next(&f) && !rc) {
			const char *fp = bson_iter_key(&f);
			for (int pass = 0; pass < 2; pass++) {
				const char *x = pass ? (!strcmp(name, "$rename") && BSON_ITER_HOLDS_UTF8(&f) ? bson_iter_utf8(&f, NULL) : NULL) : fp;
				if (!x) continue;
				if (!strcmp(x, "_id") || !strncmp(x, "_id.", 4)) {
					if (strcmp(name, "$setOnInsert") || !upsert_insert) {
						rc = fail(&u, E_IMMUTABLEFIELD, "Performing an update on the path '_id' would modify the immutable field '_id'");
						break;
					}
				}
				for (size_t i = 0; i < np; i++)
					if (paths_conflict(paths[i], x)) {
						rc = fail(&u, E_CONFLICTINGUPDATEOPS, "Updating the path '%s' would create a conflict at '%s'", x, paths[i]);
						break;
					}
				if (np < 1024) paths[np++] = x;
			}
		}
	}
	/* 5.0+: fields are processed in lexicographic order of their paths
	 * (numeric components in numeric order), whatever the operator order
	 * ("Behavior" of every update operator page; update_object_node.cpp) */
	struct item_sort *items = NULL;
	size_t nitems = 0, total = 0;
	bson_iter_init(&op, upd);
	while (!rc && bson_iter_next(&op)) {
		bson_iter_t f;
		bson_iter_recurse(&op, &f);
		while (bson_iter_next(&f)) total++;
	}
	/* bson_iter_t wants 128-byte alignment, which malloc does not give */
	void *mem = NULL;
	if (!rc && posix_memalign(&mem, 128, (total + 1) * sizeof *items)) mem = NULL;
	items = mem;
	bson_iter_init(&op, upd);
	while (!rc && items && bson_iter_next(&op)) {
		bson_iter_t f;
		bson_iter_recurse(&op, &f);
		while (bson_iter_next(&f)) {
			items[nitems].name = bson_iter_key(&op);
			items[nitems].f = f;
			items[nitems].seq = nitems;
			items[nitems].path = NULL;
			/* the positional $: the first array element the query matched */
			const char *key = bson_iter_key(&f);
			const char *dol = strstr(key, ".$");
			if (dol && (dol[2] == '.' || dol[2] == 0)) {
				char prefix[1024];
				snprintf(prefix, sizeof prefix, "%.*s", (int)(dol - key), key);
				long idx = upsert_insert ? -1 : positional_index(pre, query, prefix);
				if (idx < 0) {
					rc = fail(&u, E_BADVALUE, "The positional operator did not find the match needed from the query.");
				} else {
					items[nitems].path = bson_strdup_printf("%s.%ld%s", prefix, idx, dol + 2);
				}
			}
			nitems++;
		}
	}
	if (items && nitems > 1) qsort(items, nitems, sizeof *items, cmp_items);
	for (size_t k = 0; k < nitems && !rc; k++) {
		const char *name = items[k].name;
		bson_iter_t f = items[k].f;
		{
			struct path p;
			if (path_split(&p, items[k].path ? items[k].path : bson_iter_key(&f))) {
				rc = fail(&u, E_BADVALUE, "An empty update path is not valid.");
				bson_free(p.buf);
				continue;
			}
			if (!strcmp(name, "$set")) rc = put(&u, &p, mn_from_iter(&f, ""));
			else if (!strcmp(name, "$setOnInsert")) { if (upsert_insert) rc = put(&u, &p, mn_from_iter(&f, "")); }
			else if (!strcmp(name, "$unset")) unset(&u, &p);
			else if (!strcmp(name, "$inc")) rc = op_arith(&u, &p, &f, false, "$inc");
			else if (!strcmp(name, "$mul")) rc = op_arith(&u, &p, &f, true, "$mul");
			else if (!strcmp(name, "$min")) rc = op_minmax(&u, &p, &f, false);
			else if (!strcmp(name, "$max")) rc = op_minmax(&u, &p, &f, true);
			else if (!strcmp(name, "$rename")) rc = op_rename(&u, &p, &f);
			else if (!strcmp(name, "$push")) rc = op_push(&u, &p, &f);
			else if (!strcmp(name, "$addToSet")) rc = op_addtoset(&u, &p, &f);
			else if (!strcmp(name, "$pull")) rc = op_pull(&u, &p, &f, 0);
			else if (!strcmp(name, "$pullAll")) rc = op_pull(&u, &p, &f, 1);
			else if (!strcmp(name, "$pop")) rc = op_pull(&u, &p, &f, 2);
			else if (!strcmp(name, "$currentDate")) rc = op_curdate(&u, &p, &f);
			else rc = fail(&u, E_FAILEDTOPARSE, "Unknown modifier: %s. Expected a valid update modifier or pipeline-style update specified as an array", name);
			if (!rc && u.code) rc = u.code;
			bson_free(p.buf);
		}
	}
	for (size_t k = 0; k < nitems; k++) bson_free(items[k].path);
	free(items);
	if (!rc) {
		res->post = bson_new();
		mn_children(res->post, u.root);
		if (res->post->len > 16 * 1024 * 1024) rc = fail(&u, 17419, "Resulting document after update is larger than 16777216");
	}
	if (!rc) {
		res->changed = !(res->post->len == pre->len && !memcmp(bson_get_data(res->post), bson_get_data(pre), pre->len));
		if (res->changed) res->oplog_o = build_oplog(&u, v1);
	} else if (res->post) {
		bson_destroy(res->post);
		res->post = NULL;
	}
	for (size_t i = 0; i < u.nev; i++) bson_free(u.ev[i].full);
	free(u.ev);
	mn_free(u.root);
	return rc;
}

static void seed_rec(struct uctx *u, const bson_t *q)
{
	bson_iter_t it;
	bson_iter_init(&it, q);
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		if (!strcmp(k, "$and") && BSON_ITER_HOLDS_ARRAY(&it)) {
			bson_iter_t e;
			bson_iter_recurse(&it, &e);
			while (bson_iter_next(&e)) {
				if (!BSON_ITER_HOLDS_DOCUMENT(&e)) continue;
				const uint8_t *d; uint32_t l;
				bson_iter_document(&e, &l, &d);
				bson_t s; bson_init_static(&s, d, l);
				seed_rec(u, &s);
			}
			continue;
		}
		if (k[0] == '$') continue;
		const bson_iter_t *val = &it;
		bson_iter_t eq;
		if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
			bson_iter_t c;
			bson_iter_recurse(&it, &c);
			if (bson_iter_next(&c) && bson_iter_key(&c)[0] == '$') {
				bson_iter_recurse(&it, &eq);
				if (!bson_iter_find(&eq, "$eq")) continue;
				val = &eq;
			}
		}
		struct path p;
		if (!path_split(&p, k)) put(u, &p, mn_from_iter(val, ""));
		bson_free(p.buf);
		u->code = 0;
	}
}

void sim_upsert_seed(const bson_t *query, bson_t *out)
{
	char err[256];
	struct uctx u = { 0 };
	u.err = err; u.errlen = sizeof err;
	u.root = mn_new("", BSON_TYPE_DOCUMENT);
	seed_rec(&u, query);
	mn_children(out, u.root);
	for (size_t i = 0; i < u.nev; i++) bson_free(u.ev[i].full);
	free(u.ev);
	mn_free(u.root);
}

/* ---- $v:2 diff applier (applyOps; document_diff_applier.cpp semantics) ---- */

static int apply_doc(struct mn *m, const bson_iter_t *diff);

static int apply_arr(struct mn *m, const bson_iter_t *diff)
{
	bson_iter_t it;
	bson_iter_recurse(diff, &it);
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		size_t idx;
		if (!strcmp(k, "a")) continue;
		if (!strcmp(k, "l")) {
			int64_t lv = sim_int(&it);
			if (lv < 0 || lv > 1500000) return -1;
			size_t l = (size_t)lv;
			while (m->n > l) mn_free(m->k[--m->n]);
			while (m->n < l) mn_push(m, mn_null(""));
			continue;
		}
		if ((k[0] == 'u' || k[0] == 's') && parse_index(k + 1, &idx)) {
			while (m->n <= idx) mn_push(m, mn_null(""));
			if (k[0] == 'u') {
				mn_free(m->k[idx]);
				m->k[idx] = mn_from_iter(&it, "");
			} else {
				if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !is_cont(m->k[idx])) return -1;
				int rc = apply_doc(m->k[idx], &it);
				if (rc) return rc;
			}
			continue;
		}
		return -1;
	}
	return 0;
}

static bool is_arr_diff(const bson_iter_t *d)
{
	bson_iter_t it;
	bson_iter_recurse(d, &it);
	return bson_iter_next(&it) && !strcmp(bson_iter_key(&it), "a") && BSON_ITER_HOLDS_BOOL(&it) && bson_iter_bool(&it);
}

static int apply_doc(struct mn *m, const bson_iter_t *diff)
{
	if (m->t == BSON_TYPE_ARRAY) return is_arr_diff(diff) ? apply_arr(m, diff) : -1;
	bson_iter_t it;
	bson_iter_recurse(diff, &it);
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		if (!BSON_ITER_HOLDS_DOCUMENT(&it)) return -1;
		bson_iter_t f;
		bson_iter_recurse(&it, &f);
		if (!strcmp(k, "d") || !strcmp(k, "i")) {
			while (bson_iter_next(&f)) {
				long j = mn_find(m, bson_iter_key(&f));
				if (j >= 0) {
					mn_free(m->k[j]);
					memmove(m->k + j, m->k + j + 1, (m->n - (size_t)j - 1) * sizeof *m->k);
					m->n--;
				}
				if (k[0] == 'i') mn_push(m, mn_from_iter(&f, bson_iter_key(&f)));
			}
		} else if (!strcmp(k, "u")) {
			while (bson_iter_next(&f)) {
				long j = mn_find(m, bson_iter_key(&f));
				struct mn *nv = mn_from_iter(&f, bson_iter_key(&f));
				if (j >= 0) { mn_free(m->k[j]); m->k[j] = nv; }
				else mn_push(m, nv);
			}
		} else if (k[0] == 's') {
			long j = mn_find(m, k + 1);
			if (j < 0) continue;
			if (!is_cont(m->k[j])) return -1;
			int rc = apply_doc(m->k[j], &it);
			if (rc) return rc;
		} else {
			return -1;
		}
	}
	return 0;
}

int sim_apply_diff(const bson_t *pre, const bson_t *diff, bson_t *out)
{
	struct mn *m = mn_from_bson(pre);
	bson_t wrap = BSON_INITIALIZER;
	BSON_APPEND_DOCUMENT(&wrap, "d", diff);
	bson_iter_t it;
	bson_iter_init_find(&it, &wrap, "d");
	int rc = apply_doc(m, &it);
	if (!rc) mn_children(out, m);
	bson_destroy(&wrap);
	mn_free(m);
	return rc;
}
