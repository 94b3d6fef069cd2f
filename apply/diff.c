/*
 * diff.c — the in-memory update applier (see diff.h).
 *
 * $v:2 follows the server's src/mongo/db/update/document_diff_applier.cpp
 * (applyDiffToObject / applyDiffToArray) and the readers of
 * document_diff_serialization.cpp (DocumentDiffReader, ArrayDiffReader):
 *   - a document diff is read as tables first (buildObjDiffTables): every
 *     field name may appear once over d, u, i and s<field> (uassert 4728000);
 *     then the pre-image is walked in order: unmodified fields are copied, d
 *     fields dropped, u fields replaced in place, i fields skipped, s fields
 *     recursed into — or, when the pre-image value is not an object (document
 *     sub-diff) / array (array sub-diff), replaced by null;  finally the u
 *     fields that were not in the pre-image and all i fields are appended,
 *     u section first, each in diff order ("fieldsToInsert");
 *   - an s<field> whose field is absent does nothing: nothing is created;
 *   - sections are recognised by their first character only, must come in
 *     the order d, u, i, b, s and be objects; once a sub-diff is seen every
 *     further key must be s<field> (uasserts 4770503, 4770507, 4770513,
 *     4770514); the newest servers' 'b' (binary) section has no applier here
 *     and is refused;
 *   - a sub-diff whose first key is "a" is an array diff: a:true (bool),
 *     optional l (int32), then u<N>/s<N>; index N parses as an unsigned
 *     decimal.  Elements at an index past the pre-image's end are padded with
 *     null, l truncates or pads with null, and an s<N> on a missing element or
 *     one of the wrong type yields null (appendNewValueForArrayIndex);
 *   - the reader checks each sub-diff's own header when its parent's tables
 *     are built and its content only when it is applied, so a malformed diff
 *     under a missing field is accepted, as by the server.
 *   Deviations, all on inputs the server cannot apply either: array indexes
 *   that do not ascend (the server loops forever), an index at or past l (the
 *   server fails invariant(*resizeVal == idx)), a negative l, more than
 *   ARR_MAX elements, or nesting deeper than DEPTH_MAX are refused.
 *
 * $v:1 follows oplog application of modifier updates: UpdateObjectNode
 * (update_object_node.cpp) merges all $set/$unset paths into one tree whose
 * children are visited in pathsupport::cmpPathsAndArrayIndexes order
 * (path_support.h: strings compare bytewise, except that names starting with
 * a non-zero digit compare by length first, so "9" < "10").  Each child is
 * looked up in the element (first field of that name; in an array, an
 * unsigned decimal index).  When present: $set replaces the value in place,
 * $unset removes the field (sets null in an array, unset_node.cpp).  When
 * absent: $unset does nothing; $set creates the path at the end of the
 * parent (pathsupport::createPathAt) — in an array a numeric index first pads
 * with null, more than 1500000 nulls is CannotBackfillArray; every created
 * intermediate is an object.  A path that cannot be created (through a
 * scalar, or a non-numeric name on an array) is PathNotViable, which
 * modifier_node.cpp ignores when fromOplogApplication.  Conflicting paths
 * ("a" and "a.b", or a path twice) are refused as the server's parser does.
 * Values are never copied: the tree refers to the pre-image and the update.
 */
#include "diff.h"
#include "err.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH_MAX   200                 /* nesting accepted in a diff or update */
#define ARR_MAX     (8u * 1024 * 1024)  /* array length: > 16 MB as BSON anyway */
#define PAD_MAX     1500000u            /* pathsupport::kMaxPaddingAllowed */

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return MMM_EBSON;
}

/* A document or array value as a static bson_t over the iterator's bytes. */
static int iter_sub(const bson_iter_t *it, bson_t *sub)
{
	const uint8_t *data;
	uint32_t len;

	if (BSON_ITER_HOLDS_DOCUMENT(it))
		bson_iter_document(it, &len, &data);
	else
		bson_iter_array(it, &len, &data);
	return bson_init_static(sub, data, len) ? 0 : -1;
}

/*
 * A stored reference to one element.  bson_iter_t is over-aligned (128) in
 * Debian's libbson, so it cannot live in malloc'ed arrays; this can.
 */
struct elem {
	const uint8_t *raw;
	uint32_t len, off, keylen;
};

static void elem_set(struct elem *e, const bson_iter_t *it)
{
	e->raw = it->raw;
	e->len = it->len;
	e->off = it->off;
	e->keylen = bson_iter_key_len(it);
}

static void elem_iter(const struct elem *e, bson_iter_t *it)
{
	/* Cannot fail: the element was read by an iterator before. */
	if (!bson_iter_init_from_data_at_offset(it, e->raw, e->len, e->off, e->keylen))
		memset(it, 0, sizeof *it);
}

/* Unsigned decimal as str::parseUnsignedBase10Integer: digits only, first a
 * digit, fits in 32 bits.  0 and *out on success, -1 otherwise. */
static int parse_index(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT32_MAX)
			return -1;
	}
	*out = v;
	return 0;
}

/* ------------------------------------------------------------------ $v:2 */

enum mod_kind { MOD_DELETE, MOD_UPDATE, MOD_INSERT, MOD_SUBDIFF };

struct mod {
	const char *name;       /* field name (for s<field>, past the 's') */
	enum mod_kind kind;
	struct elem val;        /* u/i value, or the sub-diff element */
	int done;               /* u applied in place: not appended at the end */
};

struct tables {
	struct mod *mods;       /* diff order: d, u, i, s */
	struct mod **sorted;    /* by name, for lookup */
	size_t n, cap;
};

static void tables_free(struct tables *t)
{
	free(t->mods);
	free(t->sorted);
	memset(t, 0, sizeof *t);
}

static int tables_add(struct tables *t, const char *name, enum mod_kind kind,
                      const bson_iter_t *val)
{
	struct mod *m;

	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		m = realloc(t->mods, cap * sizeof *m);
		if (!m)
			return -1;
		t->mods = m;
		t->cap = cap;
	}
	m = &t->mods[t->n++];
	m->name = name;
	m->kind = kind;
	m->done = 0;
	elem_set(&m->val, val);
	return 0;
}

static int mod_cmp(const void *a, const void *b)
{
	const struct mod *x = *(struct mod *const *)a, *y = *(struct mod *const *)b;
	return strcmp(x->name, y->name);
}

static struct mod *tables_find(const struct tables *t, const char *name)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, t->sorted[mid]->name);
		if (c == 0)
			return t->sorted[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Section order of DocumentDiffReader's constructor; 0 for no section. */
static int section_order(char c)
{
	switch (c) {
	case 'd': return 1;
	case 'u': return 2;
	case 'i': return 3;
	case 'b': return 4;
	case 's': return 5;
	default: return 0;
	}
}

/* DocumentDiffReader's constructor: validates the layout of DIFF and sets
 * sec[0..2] to the d/u/i sections and sec[3] to the first s<field> key;
 * have[k] tells which are present. */
static int doc_layout(const bson_t *diff, struct elem sec[4], int have[4],
                      char *err, size_t errlen)
{
	bson_iter_t it;
	int prev = 0, more;

	memset(have, 0, 4 * sizeof *have);
	if (!bson_iter_init(&it, diff))
		return fail(err, errlen, "document diff is not valid bson");
	if (!bson_iter_next(&it))
		return fail(err, errlen, "expected diff to be non-empty");
	do {
		const char *key = bson_iter_key(&it);
		int order = section_order(key[0]);

		if (!key[0])
			return fail(err, errlen, "empty section name in document diff");
		if (!order || order <= prev)
			return fail(err, errlen, "unexpected section '%c' in document diff", key[0]);
		if (!BSON_ITER_HOLDS_DOCUMENT(&it))
			return fail(err, errlen, "section '%s' of document diff is not an object", key);
		if (order == 4)
			return fail(err, errlen, "binary section 'b' of document diff is not supported");
		if (order == 5) {
			elem_set(&sec[3], &it);
			have[3] = 1;
			return 0;
		}
		elem_set(&sec[order - 1], &it);
		have[order - 1] = 1;
		prev = order;
		more = bson_iter_next(&it);
	} while (more);
	return 0;
}

static int array_header(const bson_t *diff, bson_iter_t *it, int64_t *len,
                        char *err, size_t errlen);

/* getReader(): validates a sub-diff's header; *is_array tells its kind. */
static int subdiff_header(const bson_iter_t *elem, int *is_array, char *err, size_t errlen)
{
	bson_t sub;
	bson_iter_t it;
	struct elem sec[4];
	int have[4];
	int64_t len;

	if (!BSON_ITER_HOLDS_DOCUMENT(elem))
		return fail(err, errlen, "sub-diff '%s' is not an object", bson_iter_key(elem));
	if (iter_sub(elem, &sub) < 0)
		return fail(err, errlen, "sub-diff '%s' is not valid bson", bson_iter_key(elem));
	if (!bson_iter_init(&it, &sub) || !bson_iter_next(&it))
		return fail(err, errlen, "expected diff to be non-empty");
	*is_array = strcmp(bson_iter_key(&it), "a") == 0;
	if (*is_array)
		return array_header(&sub, &it, &len, err, errlen);
	return doc_layout(&sub, sec, have, err, errlen);
}

/* buildObjDiffTables(). */
static int build_tables(const bson_t *diff, struct tables *t, char *err, size_t errlen)
{
	bson_iter_t it;
	struct elem sec[4];
	int have[4], rc, k;
	size_t i;

	rc = doc_layout(diff, sec, have, err, errlen);
	if (rc)
		return rc;
	for (k = 0; k < 3; k++) {
		bson_t s;
		if (!have[k])
			continue;
		elem_iter(&sec[k], &it);
		if (iter_sub(&it, &s) < 0 || !bson_iter_init(&it, &s))
			return fail(err, errlen, "section of document diff is not valid bson");
		while (bson_iter_next(&it)) {
			enum mod_kind kind = k == 0 ? MOD_DELETE : k == 1 ? MOD_UPDATE : MOD_INSERT;
			if (tables_add(t, bson_iter_key(&it), kind, &it) < 0)
				return fail(err, errlen, "out of memory");
		}
	}
	if (have[3]) {
		elem_iter(&sec[3], &it);
		do {
			const char *key = bson_iter_key(&it);
			int is_array;

			if (key[0] != 's')
				return fail(err, errlen, "did not expect more sections in diff but found '%s'", key);
			rc = subdiff_header(&it, &is_array, err, errlen);
			if (rc)
				return rc;
			if (tables_add(t, key + 1, MOD_SUBDIFF, &it) < 0)
				return fail(err, errlen, "out of memory");
		} while (bson_iter_next(&it));
	}
	t->sorted = malloc((t->n ? t->n : 1) * sizeof *t->sorted);
	if (!t->sorted)
		return fail(err, errlen, "out of memory");
	for (i = 0; i < t->n; i++)
		t->sorted[i] = &t->mods[i];
	if (t->n > 1)
		qsort(t->sorted, t->n, sizeof *t->sorted, mod_cmp);
	for (i = 1; i < t->n; i++)
		if (strcmp(t->sorted[i - 1]->name, t->sorted[i]->name) == 0)
			return fail(err, errlen, "duplicate field name in diff: '%s'", t->sorted[i]->name);
	return 0;
}

static int apply_doc(const bson_t *pre, const bson_t *diff, bson_t *out, int depth,
                     char *err, size_t errlen);
static int apply_arr(const bson_t *pre, const bson_t *diff, bson_t *out, int depth,
                     char *err, size_t errlen);

/* Appends the result of sub-diff ELEM applied to pre-image value PRE (NULL:
 * missing) under KEY: recursion when the types agree, else null. */
static int apply_sub(const bson_iter_t *pre, const bson_iter_t *elem, const char *key,
                     bson_t *out, int depth, char *err, size_t errlen)
{
	bson_t diff, pv, child;
	bson_iter_t it;
	int is_array, rc;

	if (iter_sub(elem, &diff) < 0 || !bson_iter_init(&it, &diff) || !bson_iter_next(&it))
		return fail(err, errlen, "expected diff to be non-empty");
	is_array = strcmp(bson_iter_key(&it), "a") == 0;
	if (pre && is_array && BSON_ITER_HOLDS_ARRAY(pre)) {
		if (iter_sub(pre, &pv) < 0)
			return fail(err, errlen, "document is not valid bson");
		if (!bson_append_array_begin(out, key, -1, &child))
			return fail(err, errlen, "document too large");
		rc = apply_arr(&pv, &diff, &child, depth + 1, err, errlen);
		if (!bson_append_array_end(out, &child) && !rc)
			rc = fail(err, errlen, "document too large");
		return rc;
	}
	if (pre && !is_array && BSON_ITER_HOLDS_DOCUMENT(pre)) {
		if (iter_sub(pre, &pv) < 0)
			return fail(err, errlen, "document is not valid bson");
		if (!bson_append_document_begin(out, key, -1, &child))
			return fail(err, errlen, "document too large");
		rc = apply_doc(&pv, &diff, &child, depth + 1, err, errlen);
		if (!bson_append_document_end(out, &child) && !rc)
			rc = fail(err, errlen, "document too large");
		return rc;
	}
	/* Missing or of another type: "some future oplog entry will re-write
	 * the value", so the server appends null. */
	if (!bson_append_null(out, key, -1))
		return fail(err, errlen, "document too large");
	return 0;
}

/* applyDiffToObject(). */
static int apply_doc(const bson_t *pre, const bson_t *diff, bson_t *out, int depth,
                     char *err, size_t errlen)
{
	struct tables t = {0};
	bson_iter_t it;
	size_t i;
	int rc = 0;

	if (depth > DEPTH_MAX) {
		rc = fail(err, errlen, "diff nested deeper than %d levels", DEPTH_MAX);
		goto done;
	}
	rc = build_tables(diff, &t, err, errlen);
	if (rc)
		goto done;
	if (!bson_iter_init(&it, pre)) {
		rc = fail(err, errlen, "document is not valid bson");
		goto done;
	}
	while (bson_iter_next(&it)) {
		const char *key = bson_iter_key(&it);
		struct mod *m = tables_find(&t, key);
		bson_iter_t mv;
		int ok = 1;

		if (m)
			elem_iter(&m->val, &mv);
		if (!m) {
			ok = bson_append_iter(out, key, -1, &it);
		} else if (m->kind == MOD_UPDATE) {
			ok = bson_append_iter(out, key, -1, &mv);
			m->done = 1;
		} else if (m->kind == MOD_SUBDIFF) {
			rc = apply_sub(&it, &mv, key, out, depth, err, errlen);
			if (rc)
				goto done;
		}
		/* MOD_DELETE: dropped; MOD_INSERT: appended below. */
		if (!ok) {
			rc = fail(err, errlen, "document too large");
			goto done;
		}
	}
	for (i = 0; i < t.n; i++) {
		struct mod *m = &t.mods[i];
		bson_iter_t mv;

		if ((m->kind != MOD_UPDATE && m->kind != MOD_INSERT) || m->done)
			continue;
		elem_iter(&m->val, &mv);
		if (!bson_append_iter(out, m->name, -1, &mv)) {
			rc = fail(err, errlen, "document too large");
			goto done;
		}
	}
done:
	tables_free(&t);
	return rc;
}

/* ArrayDiffReader's constructor: "a" must be true, then an optional int32
 * "l".  Leaves IT on the last header key; *len is -1 without "l". */
static int array_header(const bson_t *diff, bson_iter_t *it, int64_t *len,
                        char *err, size_t errlen)
{
	bson_iter_t peek;

	*len = -1;
	if (!bson_iter_init(it, diff) || !bson_iter_next(it))
		return fail(err, errlen, "expected diff to be non-empty");
	if (strcmp(bson_iter_key(it), "a") != 0)
		return fail(err, errlen, "expected first field of array diff to be 'a' but found '%s'",
		            bson_iter_key(it));
	if (!BSON_ITER_HOLDS_BOOL(it))
		return fail(err, errlen, "expected array header 'a' to be bool");
	if (!bson_iter_bool(it))
		return fail(err, errlen, "expected array header 'a' to be true");
	peek = *it;
	if (bson_iter_next(&peek) && strcmp(bson_iter_key(&peek), "l") == 0) {
		if (!BSON_ITER_HOLDS_INT32(&peek))
			return fail(err, errlen, "expected array diff 'l' to be int32");
		*len = bson_iter_int32(&peek);
		if (*len < 0)
			return fail(err, errlen, "negative array diff length %lld", (long long)*len);
		if (*len > ARR_MAX)
			return fail(err, errlen, "array diff length %lld too large", (long long)*len);
		*it = peek;
	}
	return 0;
}

struct arr_mod {
	int have;
	uint64_t idx;
	int is_update;
	bson_iter_t val;
};

/* ArrayDiffReader::next(), plus the checks the server's loop relies on. */
static int arr_next(bson_iter_t *it, struct arr_mod *m, int64_t len,
                    char *err, size_t errlen)
{
	const char *key;
	uint64_t idx;
	int had = m->have, is_array, rc;
	uint64_t prev = m->idx;

	m->have = 0;
	if (!bson_iter_next(it))
		return 0;
	key = bson_iter_key(it);
	if (strlen(key) < 2)
		return fail(err, errlen, "expected array diff field name to be at least two characters long, but found '%s'", key);
	if (parse_index(key + 1, &idx) < 0)
		return fail(err, errlen, "expected integer index in array diff but got '%s'", key);
	if (key[0] == 'u') {
		m->is_update = 1;
	} else if (key[0] == 's') {
		if (!BSON_ITER_HOLDS_DOCUMENT(it))
			return fail(err, errlen, "expected sub diff at index %llu", (unsigned long long)idx);
		rc = subdiff_header(it, &is_array, err, errlen);
		if (rc)
			return rc;
		m->is_update = 0;
	} else {
		return fail(err, errlen, "expected either 'u' (update) or 's' (sub diff) in array diff but got '%s'", key);
	}
	if (had && idx <= prev)
		return fail(err, errlen, "array diff indexes not ascending at '%s'", key);
	if (len >= 0 && idx >= (uint64_t)len)
		return fail(err, errlen, "array diff index %llu is past the new length %lld",
		            (unsigned long long)idx, (long long)len);
	if (idx >= ARR_MAX)
		return fail(err, errlen, "array diff index %llu too large", (unsigned long long)idx);
	m->have = 1;
	m->idx = idx;
	m->val = *it;
	return 0;
}

/* appendNewValueForArrayIndex(). */
static int arr_put(const bson_iter_t *pre, const struct arr_mod *m, const char *key,
                   bson_t *out, int depth, char *err, size_t errlen)
{
	if (m->is_update) {
		if (!bson_append_iter(out, key, -1, &m->val))
			return fail(err, errlen, "document too large");
		return 0;
	}
	return apply_sub(pre, &m->val, key, out, depth, err, errlen);
}

/* applyDiffToArray(). */
static int apply_arr(const bson_t *pre, const bson_t *diff, bson_t *out, int depth,
                     char *err, size_t errlen)
{
	bson_iter_t dit, pit;
	struct arr_mod m = {0};
	int64_t len;
	uint64_t idx = 0;
	char buf[16];
	const char *key;
	int more, rc;

	if (depth > DEPTH_MAX)
		return fail(err, errlen, "diff nested deeper than %d levels", DEPTH_MAX);
	rc = array_header(diff, &dit, &len, err, errlen);
	if (rc)
		return rc;
	rc = arr_next(&dit, &m, len, err, errlen);
	if (rc)
		return rc;
	if (!bson_iter_init(&pit, pre))
		return fail(err, errlen, "document is not valid bson");
	more = bson_iter_next(&pit);
	for (; more && (len < 0 || idx < (uint64_t)len); idx++, more = bson_iter_next(&pit)) {
		bson_uint32_to_string((uint32_t)idx, &key, buf, sizeof buf);
		if (m.have && idx == m.idx) {
			rc = arr_put(&pit, &m, key, out, depth, err, errlen);
			if (!rc)
				rc = arr_next(&dit, &m, len, err, errlen);
			if (rc)
				return rc;
		} else if (!bson_append_iter(out, key, -1, &pit)) {
			return fail(err, errlen, "document too large");
		}
	}
	/* The pre-image was too short: pad with null up to the mods and l. */
	for (; (len >= 0 && idx < (uint64_t)len) || m.have; idx++) {
		bson_uint32_to_string((uint32_t)idx, &key, buf, sizeof buf);
		if (m.have && idx == m.idx) {
			rc = arr_put(NULL, &m, key, out, depth, err, errlen);
			if (!rc)
				rc = arr_next(&dit, &m, len, err, errlen);
			if (rc)
				return rc;
		} else if (!bson_append_null(out, key, -1)) {
			return fail(err, errlen, "document too large");
		}
	}
	return 0;
}

int diff_apply_v2(const bson_t *doc, const bson_t *diff, bson_t *out, char *err, size_t errlen)
{
	bson_init(out);
	return apply_doc(doc, diff, out, 0, err, errlen);
}

/* ------------------------------------------------------------------ $v:1 */

/* The update tree (UpdateObjectNode with SetNode/UnsetNode leaves). */
enum unode_kind { U_OBJECT, U_SET, U_UNSET };

struct unode {
	char *name;
	enum unode_kind kind;
	struct elem val;           /* U_SET */
	struct unode **kids;       /* U_OBJECT, sorted after parsing */
	size_t n, cap;
};

static void unode_free(struct unode *u)
{
	size_t i;

	if (!u)
		return;
	for (i = 0; i < u->n; i++)
		unode_free(u->kids[i]);
	free(u->kids);
	free(u->name);
	free(u);
}

static struct unode *unode_new(const char *name, size_t len, enum unode_kind kind)
{
	struct unode *u = calloc(1, sizeof *u);

	if (!u)
		return NULL;
	u->name = malloc(len + 1);
	if (!u->name) {
		free(u);
		return NULL;
	}
	memcpy(u->name, name, len);
	u->name[len] = 0;
	u->kind = kind;
	return u;
}

static struct unode *unode_child(const struct unode *u, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < u->n; i++)
		if (strlen(u->kids[i]->name) == len && memcmp(u->kids[i]->name, name, len) == 0)
			return u->kids[i];
	return NULL;
}

static int unode_add(struct unode *u, struct unode *kid)
{
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 4;
		struct unode **k = realloc(u->kids, cap * sizeof *k);
		if (!k)
			return -1;
		u->kids = k;
		u->cap = cap;
	}
	u->kids[u->n++] = kid;
	return 0;
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* pathsupport::cmpPathsAndArrayIndexes as a strict weak order ("a < b"). */
static int path_less(const char *a, const char *b)
{
	size_t al = strlen(a), bl = strlen(b), i;

	if (al == 0 || bl == 0 || !is_digit(a[0]) || !is_digit(b[0]) ||
	    (a[0] == '0' && al > 1) || (b[0] == '0' && bl > 1))
		return strcmp(a, b) < 0;
	if (al != bl)
		return al < bl;
	for (i = 0; i < al && is_digit(a[i]) && is_digit(b[i]); i++)
		if (a[i] != b[i])
			return a[i] < b[i];
	return strcmp(a, b) < 0;
}

static int unode_cmp(const void *x, const void *y)
{
	const struct unode *a = *(struct unode *const *)x, *b = *(struct unode *const *)y;

	if (path_less(a->name, b->name))
		return -1;
	return path_less(b->name, a->name) ? 1 : 0;
}

static void unode_sort(struct unode *u)
{
	size_t i;

	if (u->n > 1)
		qsort(u->kids, u->n, sizeof *u->kids, unode_cmp);
	for (i = 0; i < u->n; i++)
		unode_sort(u->kids[i]);
}

/* UpdateObjectNode::parseAndMerge() for one path. */
static int tree_add(struct unode *root, const char *path, enum unode_kind kind,
                    const bson_iter_t *val, char *err, size_t errlen)
{
	struct unode *cur = root, *kid;
	const char *p = path, *dot;
	int depth = 0;

	if (!*path)
		return fail(err, errlen, "an empty update path is not valid");
	for (;;) {
		size_t len;

		dot = strchr(p, '.');
		len = dot ? (size_t)(dot - p) : strlen(p);
		if (len == 0)
			return fail(err, errlen, "the update path '%s' contains an empty field name", path);
		if (++depth > DEPTH_MAX)
			return fail(err, errlen, "the update path '%.64s...' is too deep", path);
		kid = unode_child(cur, p, len);
		if (!dot) {
			if (kid)
				return fail(err, errlen, "updating the path '%s' would create a conflict at '%s'",
				            path, path);
			kid = unode_new(p, len, kind);
			if (!kid || unode_add(cur, kid) < 0) {
				unode_free(kid);
				return fail(err, errlen, "out of memory");
			}
			if (val)
				elem_set(&kid->val, val);
			return 0;
		}
		if (kid && kid->kind != U_OBJECT)
			return fail(err, errlen, "updating the path '%s' would create a conflict at '%.*s'",
			            path, (int)(dot - path), path);
		if (!kid) {
			kid = unode_new(p, len, U_OBJECT);
			if (!kid || unode_add(cur, kid) < 0) {
				unode_free(kid);
				return fail(err, errlen, "out of memory");
			}
		}
		cur = kid;
		p = dot + 1;
	}
}

/* The mutable document: values refer to the pre-image or the update. */
enum mkind { M_ITER, M_NULL, M_DOC, M_ARR };

struct mfield;

struct mval {
	enum mkind kind;
	struct elem it;            /* M_ITER */
	struct mfield *f;          /* M_DOC, M_ARR */
	size_t n, cap;
};

struct mfield {
	const char *key;           /* into the pre-image or the update tree */
	struct mval v;
};

static void mval_clear(struct mval *v)
{
	size_t i;

	for (i = 0; i < v->n; i++)
		mval_clear(&v->f[i].v);
	free(v->f);
	v->f = NULL;
	v->n = v->cap = 0;
}

static struct mfield *mval_push(struct mval *v, const char *key)
{
	struct mfield *f;

	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 8;
		f = realloc(v->f, cap * sizeof *f);
		if (!f)
			return NULL;
		v->f = f;
		v->cap = cap;
	}
	f = &v->f[v->n++];
	memset(f, 0, sizeof *f);
	f->key = key;
	f->v.kind = M_NULL;
	return f;
}

/* Turns an M_ITER document/array into M_DOC/M_ARR.  0, or -1 (no memory or
 * bad bson); a scalar is left alone and returns 1. */
static int mval_expand(struct mval *v)
{
	bson_t sub;
	bson_iter_t it, self;
	int arr;

	if (v->kind == M_DOC || v->kind == M_ARR)
		return 0;
	if (v->kind != M_ITER)
		return 1;
	elem_iter(&v->it, &self);
	if (!BSON_ITER_HOLDS_DOCUMENT(&self) && !BSON_ITER_HOLDS_ARRAY(&self))
		return 1;
	arr = BSON_ITER_HOLDS_ARRAY(&self);
	if (iter_sub(&self, &sub) < 0 || !bson_iter_init(&it, &sub))
		return -1;
	v->kind = arr ? M_ARR : M_DOC;
	v->f = NULL;
	v->n = v->cap = 0;
	while (bson_iter_next(&it)) {
		struct mfield *f = mval_push(v, bson_iter_key(&it));
		if (!f)
			return -1;
		f->v.kind = M_ITER;
		elem_set(&f->v.it, &it);
	}
	return 0;
}

static int has_set(const struct unode *u)
{
	size_t i;

	if (u->kind != U_OBJECT)
		return u->kind == U_SET;
	for (i = 0; i < u->n; i++)
		if (has_set(u->kids[i]))
			return 1;
	return 0;
}

/* The value createPathAt() gives a missing path: the $set value, or objects
 * down to the $set leaves (in tree order; $unset leaves create nothing). */
static int build_new(const struct unode *u, struct mval *v)
{
	size_t i;

	if (u->kind == U_SET) {
		v->kind = M_ITER;
		v->it = u->val;
		return 0;
	}
	v->kind = M_DOC;
	for (i = 0; i < u->n; i++) {
		struct mfield *f;
		if (!has_set(u->kids[i]))
			continue;
		f = mval_push(v, u->kids[i]->name);
		if (!f || build_new(u->kids[i], &f->v) < 0)
			return -1;
	}
	return 0;
}

/* UpdateObjectNode::apply() of node U to existing element E. */
static int v1_apply(const struct unode *u, struct mval *e, char *err, size_t errlen)
{
	size_t i, j;
	int x = mval_expand(e);

	if (x < 0)
		return fail(err, errlen, "document is not valid bson or out of memory");
	if (x > 0 || e->kind == M_NULL)
		return 0;  /* a scalar: nothing under it exists, and creating is PathNotViable */
	for (i = 0; i < u->n; i++) {
		const struct unode *c = u->kids[i];
		struct mval *t = NULL;
		size_t at = 0;
		uint64_t idx = 0;
		int rc;

		if (e->kind == M_DOC) {
			for (j = 0; j < e->n && !t; j++)
				if (strcmp(e->f[j].key, c->name) == 0)
					t = &e->f[at = j].v;
		} else if (parse_index(c->name, &idx) == 0 && idx < e->n) {
			t = &e->f[at = (size_t)idx].v;
		}
		if (t) {
			if (c->kind == U_SET) {
				mval_clear(t);
				t->kind = M_ITER;
				t->it = c->val;
			} else if (c->kind == U_UNSET && e->kind == M_ARR) {
				mval_clear(t);
				t->kind = M_NULL;
			} else if (c->kind == U_UNSET) {
				mval_clear(t);
				memmove(&e->f[at], &e->f[at + 1], (e->n - at - 1) * sizeof *e->f);
				e->n--;
			} else {
				rc = v1_apply(c, t, err, errlen);
				if (rc)
					return rc;
			}
			continue;
		}
		if (!has_set(c))
			continue;  /* $unset of a missing path: no-op */
		if (e->kind == M_ARR) {
			const char *s;
			uint64_t want = 0;

			for (s = c->name; *s && is_digit(*s); s++)
				if (want <= UINT32_MAX)
					want = want * 10 + (uint64_t)(*s - '0');
			if (*s)
				continue;  /* non-numeric name in an array: PathNotViable, ignored */
			if (want > e->n && want - e->n > PAD_MAX)
				return fail(err, errlen, "can't backfill more than %u elements", PAD_MAX);
			while (e->n < want)
				if (!mval_push(e, ""))
					return fail(err, errlen, "out of memory");
		}
		{
			struct mfield *f = mval_push(e, c->name);
			if (!f || build_new(c, &f->v) < 0)
				return fail(err, errlen, "out of memory");
		}
	}
	return 0;
}

static int mval_write(const struct mval *v, const char *key, bson_t *out)
{
	bson_t child;
	bson_iter_t it;
	size_t i;
	int ok = 1;

	switch (v->kind) {
	case M_ITER:
		elem_iter(&v->it, &it);
		return bson_append_iter(out, key, -1, &it) ? 0 : -1;
	case M_NULL:
		return bson_append_null(out, key, -1) ? 0 : -1;
	case M_DOC:
		if (!bson_append_document_begin(out, key, -1, &child))
			return -1;
		for (i = 0; i < v->n && ok; i++)
			ok = mval_write(&v->f[i].v, v->f[i].key, &child) == 0;
		return bson_append_document_end(out, &child) && ok ? 0 : -1;
	case M_ARR:
		if (!bson_append_array_begin(out, key, -1, &child))
			return -1;
		for (i = 0; i < v->n && ok; i++) {
			char buf[16];
			const char *k;
			bson_uint32_to_string((uint32_t)i, &k, buf, sizeof buf);
			ok = mval_write(&v->f[i].v, k, &child) == 0;
		}
		return bson_append_array_end(out, &child) && ok ? 0 : -1;
	}
	return -1;
}

int diff_apply_v1(const bson_t *doc, const bson_t *update, bson_t *out, char *err, size_t errlen)
{
	struct unode *root = NULL;
	struct mval top = {0};
	bson_iter_t it, sit, dit;
	bson_t ops;
	size_t i;
	int rc = 0;

	bson_init(out);
	root = unode_new("", 0, U_OBJECT);
	if (!root) {
		rc = fail(err, errlen, "out of memory");
		goto done;
	}
	if (!bson_iter_init(&it, update)) {
		rc = fail(err, errlen, "update is not valid bson");
		goto done;
	}
	while (bson_iter_next(&it)) {
		const char *op = bson_iter_key(&it);
		enum unode_kind kind;

		if (strcmp(op, "$v") == 0)
			continue;
		if (strcmp(op, "$set") == 0)
			kind = U_SET;
		else if (strcmp(op, "$unset") == 0)
			kind = U_UNSET;
		else {
			rc = fail(err, errlen, "unsupported update operator '%s'", op);
			goto done;
		}
		if (!BSON_ITER_HOLDS_DOCUMENT(&it) || iter_sub(&it, &ops) < 0 ||
		    !bson_iter_init(&sit, &ops)) {
			rc = fail(err, errlen, "modifier '%s' is not an object", op);
			goto done;
		}
		while (bson_iter_next(&sit)) {
			rc = tree_add(root, bson_iter_key(&sit), kind, kind == U_SET ? &sit : NULL,
			              err, errlen);
			if (rc)
				goto done;
		}
	}
	unode_sort(root);

	/* Expand the root by hand: the document is not an element. */
	top.kind = M_DOC;
	if (!bson_iter_init(&dit, doc)) {
		rc = fail(err, errlen, "document is not valid bson");
		goto done;
	}
	while (bson_iter_next(&dit)) {
		struct mfield *f = mval_push(&top, bson_iter_key(&dit));
		if (!f) {
			rc = fail(err, errlen, "out of memory");
			goto done;
		}
		f->v.kind = M_ITER;
		elem_set(&f->v.it, &dit);
	}
	rc = v1_apply(root, &top, err, errlen);
	if (rc)
		goto done;
	for (i = 0; i < top.n; i++) {
		if (mval_write(&top.f[i].v, top.f[i].key, out) < 0) {
			rc = fail(err, errlen, "document too large");
			goto done;
		}
	}
done:
	mval_clear(&top);
	unode_free(root);
	return rc;
}

/* ------------------------------------------------------------- any form */

int diff_apply_update(const bson_t *doc, const bson_t *o, bson_t *out, char *err, size_t errlen)
{
	bson_iter_t it, v, id;
	bson_t diff;
	int has_v, has_id;

	if (!bson_iter_init(&it, o)) {
		bson_init(out);
		return fail(err, errlen, "update is not valid bson");
	}
	has_v = bson_iter_init_find(&v, o, "$v");
	has_id = bson_iter_init_find(&id, o, "_id");
	/* UpdateModification::parseFromOplogEntry: "_id" first, for a
	 * replacement may hold a user field "$v". */
	if (!has_id && has_v && bson_iter_as_int64(&v) == 2 && BSON_ITER_HOLDS_NUMBER(&v)) {
		bson_iter_t d;
		if (!bson_iter_init_find(&d, o, "diff") || !BSON_ITER_HOLDS_DOCUMENT(&d) ||
		    iter_sub(&d, &diff) < 0) {
			bson_init(out);
			return fail(err, errlen, "expected 'diff' field to be an object");
		}
		return diff_apply_v2(doc, &diff, out, err, errlen);
	}
	if (bson_iter_next(&it) && bson_iter_key(&it)[0] == '$') {
		if (has_v && !(BSON_ITER_HOLDS_NUMBER(&v) && bson_iter_as_int64(&v) == 1)) {
			bson_init(out);
			return fail(err, errlen, "unsupported update version '$v'");
		}
		return diff_apply_v1(doc, o, out, err, errlen);
	}
	/* A replacement: o itself, after the pre-image's _id if o has none. */
	bson_init(out);
	if (!has_id && bson_iter_init_find(&id, doc, "_id") &&
	    !bson_append_iter(out, "_id", 3, &id))
		return fail(err, errlen, "document too large");
	if (!bson_iter_init(&it, o))
		return fail(err, errlen, "update is not valid bson");
	while (bson_iter_next(&it))
		if (!bson_append_iter(out, bson_iter_key(&it), -1, &it))
			return fail(err, errlen, "document too large");
	return 0;
}
