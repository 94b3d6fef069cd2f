/*
 * query.c — BSON ordering (the server's canonical type order, see
 * src/mongo/bson/bsontypes.cpp canonicalizeBSONType), the find matcher
 * (equality on dotted paths and into arrays, comparison operators with type
 * bracketing, $in $nin $exists $and $or $nor $not $type), sort and projection.
 */
#include "sim.h"
#include <math.h>
#include <regex.h>
#include <string.h>
#include <stdlib.h>

int sim_canon(bson_type_t t)
{
	switch (t) {
	case BSON_TYPE_MINKEY: return -1;
	case BSON_TYPE_UNDEFINED: return 0;
	case BSON_TYPE_NULL: return 5;
	case BSON_TYPE_DOUBLE: case BSON_TYPE_INT32: case BSON_TYPE_INT64:
	case BSON_TYPE_DECIMAL128: return 10;
	case BSON_TYPE_UTF8: case BSON_TYPE_SYMBOL: return 15;
	case BSON_TYPE_DOCUMENT: return 20;
	case BSON_TYPE_ARRAY: return 25;
	case BSON_TYPE_BINARY: return 30;
	case BSON_TYPE_OID: return 35;
	case BSON_TYPE_BOOL: return 40;
	case BSON_TYPE_DATE_TIME: return 45;
	case BSON_TYPE_TIMESTAMP: return 47;
	case BSON_TYPE_REGEX: return 50;
	case BSON_TYPE_DBPOINTER: return 55;
	case BSON_TYPE_CODE: return 60;
	case BSON_TYPE_CODEWSCOPE: return 65;
	case BSON_TYPE_MAXKEY: return 127;
	default: return 0;
	}
}

bool sim_is_number(bson_type_t t)
{
	return t == BSON_TYPE_DOUBLE || t == BSON_TYPE_INT32 || t == BSON_TYPE_INT64 ||
	       t == BSON_TYPE_DECIMAL128;
}

static long double vnum(const bson_value_t *v)
{
	switch (v->value_type) {
	case BSON_TYPE_DOUBLE: return v->value.v_double;
	case BSON_TYPE_INT32: return v->value.v_int32;
	case BSON_TYPE_INT64: return v->value.v_int64;
	default: return 0;
	}
}

double sim_num(const bson_iter_t *it)
{
	return (double)vnum(bson_iter_value((bson_iter_t *)it));
}

int64_t sim_int(const bson_iter_t *it)
{
	const int64_t lim = (int64_t)1 << 50;
	if (BSON_ITER_HOLDS_INT64(it)) {
		int64_t v = bson_iter_int64(it);
		return v > lim ? lim : v < -lim ? -lim : v;
	}
	double d = sim_num(it);
	if (d != d) return 0;
	if (d > (double)lim) return lim;
	if (d < -(double)lim) return -lim;
	return (int64_t)d;
}

static int cmp_num(const bson_value_t *a, const bson_value_t *b)
{
	if (a->value_type == BSON_TYPE_INT64 && b->value_type == BSON_TYPE_INT64)
		return a->value.v_int64 < b->value.v_int64 ? -1 : a->value.v_int64 > b->value.v_int64;
	long double x = vnum(a), y = vnum(b);
	if (isnan((double)x) || isnan((double)y)) {   /* NaN sorts lowest */
		if (isnan((double)x) && isnan((double)y)) return 0;
		return isnan((double)x) ? -1 : 1;
	}
	return x < y ? -1 : x > y;
}

static int cmp_bytes(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	if (c) return c < 0 ? -1 : 1;
	return al < bl ? -1 : al > bl;
}

int sim_cmp_docs(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
	bson_iter_t ia, ib;
	if (!bson_iter_init_from_data(&ia, a, alen) || !bson_iter_init_from_data(&ib, b, blen))
		return 0;
	for (;;) {
		bool na = bson_iter_next(&ia), nb = bson_iter_next(&ib);
		if (!na || !nb) return na == nb ? 0 : (na ? 1 : -1);
		int ca = sim_canon(bson_iter_type(&ia)), cb = sim_canon(bson_iter_type(&ib));
		if (ca != cb) return ca < cb ? -1 : 1;
		int c = strcmp(bson_iter_key(&ia), bson_iter_key(&ib));
		if (c) return c < 0 ? -1 : 1;
		c = sim_cmp_iter(&ia, &ib);
		if (c) return c;
	}
}

int sim_cmp_value(const bson_value_t *a, const bson_value_t *b)
{
	int ca = sim_canon(a->value_type), cb = sim_canon(b->value_type);
	if (ca != cb) return ca < cb ? -1 : 1;
	switch (a->value_type) {
	case BSON_TYPE_DOUBLE: case BSON_TYPE_INT32: case BSON_TYPE_INT64: case BSON_TYPE_DECIMAL128:
		return cmp_num(a, b);
	case BSON_TYPE_UTF8: case BSON_TYPE_SYMBOL: {
		const char *sa = a->value_type == BSON_TYPE_UTF8 ? a->value.v_utf8.str : a->value.v_symbol.symbol;
		size_t la = a->value_type == BSON_TYPE_UTF8 ? a->value.v_utf8.len : a->value.v_symbol.len;
		const char *sb = b->value_type == BSON_TYPE_UTF8 ? b->value.v_utf8.str : b->value.v_symbol.symbol;
		size_t lb = b->value_type == BSON_TYPE_UTF8 ? b->value.v_utf8.len : b->value.v_symbol.len;
		return cmp_bytes((const uint8_t *)sa, la, (const uint8_t *)sb, lb);
	}
	case BSON_TYPE_DOCUMENT: case BSON_TYPE_ARRAY:
		return sim_cmp_docs(a->value.v_doc.data, a->value.v_doc.data_len,
		                    b->value.v_doc.data, b->value.v_doc.data_len);
	case BSON_TYPE_BINARY:
		if (a->value.v_binary.data_len != b->value.v_binary.data_len)
			return a->value.v_binary.data_len < b->value.v_binary.data_len ? -1 : 1;
		if (a->value.v_binary.subtype != b->value.v_binary.subtype)
			return a->value.v_binary.subtype < b->value.v_binary.subtype ? -1 : 1;
		return cmp_bytes(a->value.v_binary.data, a->value.v_binary.data_len,
		                 b->value.v_binary.data, b->value.v_binary.data_len);
	case BSON_TYPE_OID: {
		int c = memcmp(a->value.v_oid.bytes, b->value.v_oid.bytes, 12);
		return c < 0 ? -1 : c > 0;
	}
	case BSON_TYPE_BOOL: return (int)a->value.v_bool - (int)b->value.v_bool;
	case BSON_TYPE_DATE_TIME:
		return a->value.v_datetime < b->value.v_datetime ? -1 : a->value.v_datetime > b->value.v_datetime;
	case BSON_TYPE_TIMESTAMP: {
		uint64_t x = ((uint64_t)a->value.v_timestamp.timestamp << 32) | a->value.v_timestamp.increment;
		uint64_t y = ((uint64_t)b->value.v_timestamp.timestamp << 32) | b->value.v_timestamp.increment;
		return x < y ? -1 : x > y;
	}
	case BSON_TYPE_REGEX: {
		int c = strcmp(a->value.v_regex.regex, b->value.v_regex.regex);
		if (c) return c < 0 ? -1 : 1;
		c = strcmp(a->value.v_regex.options, b->value.v_regex.options);
		return c < 0 ? -1 : c > 0;
	}
	case BSON_TYPE_CODE:
		return cmp_bytes((const uint8_t *)a->value.v_code.code, a->value.v_code.code_len,
		                 (const uint8_t *)b->value.v_code.code, b->value.v_code.code_len);
	default: return 0;
	}
}

int sim_cmp_iter(const bson_iter_t *a, const bson_iter_t *b)
{
	return sim_cmp_value(bson_iter_value((bson_iter_t *)a), bson_iter_value((bson_iter_t *)b));
}

/* ---- path lookup ---- */

bool sim_lookup(const bson_t *doc, const char *path, bson_iter_t *out)
{
	bson_iter_t it;
	if (!bson_iter_init(&it, doc)) return false;
	return bson_iter_find_descendant(&it, path, out);
}

/* Calls cb for every value the dotted path reaches, expanding arrays the way
 * the matcher does: an array met mid-path is traversed element-wise (unless the
 * next component is a numeric index), and a final array value is offered both
 * whole and element by element.  Returns true if any callback returned true. */
typedef bool (*val_cb)(const bson_iter_t *v, void *arg);

static bool is_index(const char *s, size_t n)
{
	if (n == 0) return false;
	for (size_t i = 0; i < n; i++) if (s[i] < '0' || s[i] > '9') return false;
	return true;
}

static bool walk(const uint8_t *data, uint32_t len, bool is_array, const char *path,
                 val_cb cb, void *arg, bool *found, bool expand_final)
{
	const char *dot = strchr(path, '.');
	size_t n = dot ? (size_t)(dot - path) : strlen(path);
	bson_iter_t it;
	if (!bson_iter_init_from_data(&it, data, len)) return false;
	if (is_array && !is_index(path, n)) {
		/* traverse each document element */
		while (bson_iter_next(&it)) {
			if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
				const uint8_t *d; uint32_t l;
				bson_iter_document(&it, &l, &d);
				if (walk(d, l, false, path, cb, arg, found, expand_final)) return true;
			}
		}
		return false;
	}
	bool hit = false;
	while (bson_iter_next(&it)) {
		if (strlen(bson_iter_key(&it)) == n && memcmp(bson_iter_key(&it), path, n) == 0) { hit = true; break; }
	}
	if (!hit) {
		return false;
	}
	if (!dot) {
		*found = true;
		if (cb(&it, arg)) return true;
		if (expand_final && BSON_ITER_HOLDS_ARRAY(&it)) {
			bson_iter_t ch;
			bson_iter_recurse(&it, &ch);
			while (bson_iter_next(&ch)) if (cb(&ch, arg)) return true;
		}
		return false;
	}
	if (BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)) {
		const uint8_t *d; uint32_t l;
		if (BSON_ITER_HOLDS_DOCUMENT(&it)) bson_iter_document(&it, &l, &d);
		else bson_iter_array(&it, &l, &d);
		bool r = walk(d, l, BSON_ITER_HOLDS_ARRAY(&it), dot + 1, cb, arg, found, expand_final);
		if (r) return true;
		/* numeric component on an array of documents also matches fields named so */
		return false;
	}
	return false;
}

/* ---- matcher ---- */

struct mctx { const bson_iter_t *cond; const char **err; };

static bool type_matches(const bson_iter_t *v, const bson_iter_t *t)
{
	bson_type_t vt = bson_iter_type(v);
	if (BSON_ITER_HOLDS_UTF8(t)) {
		const char *s = bson_iter_utf8(t, NULL);
		if (!strcmp(s, "number")) return sim_is_number(vt);
		int code = sim_type_code(s);
		return code == (int)vt;
	}
	if (sim_is_number(bson_iter_type(t))) return sim_int(t) == (int64_t)vt || (sim_int(t) == -1 && vt == BSON_TYPE_MINKEY);
	if (BSON_ITER_HOLDS_ARRAY(t)) {
		bson_iter_t c;
		bson_iter_recurse(t, &c);
		while (bson_iter_next(&c)) if (type_matches(v, &c)) return true;
	}
	return false;
}

static bool eq_value(const bson_iter_t *v, const bson_iter_t *x)
{
	if (sim_canon(bson_iter_type(v)) != sim_canon(bson_iter_type(x))) return false;
	return sim_cmp_iter(v, x) == 0;
}

static bool regex_match(const bson_iter_t *v, const bson_iter_t *re);

/* one operator against one value */
static bool op_value(const char *op, const bson_iter_t *v, const bson_iter_t *arg, const char **err)
{
	if (!strcmp(op, "$eq")) {
		if (BSON_ITER_HOLDS_REGEX(arg)) return regex_match(v, arg);
		return eq_value(v, arg);
	}
	int c;
	if (!strcmp(op, "$gt") || !strcmp(op, "$gte") || !strcmp(op, "$lt") || !strcmp(op, "$lte")) {
		bson_type_t at = bson_iter_type(arg), vt = bson_iter_type(v);
		if (at == BSON_TYPE_MINKEY || at == BSON_TYPE_MAXKEY) {
			c = sim_cmp_iter(v, arg);
		} else {
			if (sim_canon(at) != sim_canon(vt)) return false;
			c = sim_cmp_iter(v, arg);
		}
		if (op[3] == 'e' || op[2] == 'e') {
			/* $gte / $lte */
			if (op[1] == 'g') return c >= 0;
			return c <= 0;
		}
		if (op[1] == 'g') return c > 0;
		return c < 0;
	}
	if (!strcmp(op, "$in")) {
		bson_iter_t e;
		if (!BSON_ITER_HOLDS_ARRAY(arg)) { *err = "$in needs an array"; return false; }
		bson_iter_recurse(arg, &e);
		while (bson_iter_next(&e)) {
			if (BSON_ITER_HOLDS_REGEX(&e) ? regex_match(v, &e) : eq_value(v, &e)) return true;
		}
		return false;
	}
	if (!strcmp(op, "$type")) return type_matches(v, arg);
	if (!strcmp(op, "$regex")) return regex_match(v, arg);
	if (!strcmp(op, "$size")) {
		if (!BSON_ITER_HOLDS_ARRAY(v)) return false;
		bson_iter_t e; int64_t n = 0;
		bson_iter_recurse(v, &e);
		while (bson_iter_next(&e)) n++;
		return n == sim_int(arg);
	}
	if (!strcmp(op, "$elemMatch")) {
		if (!BSON_ITER_HOLDS_ARRAY(v) || !BSON_ITER_HOLDS_DOCUMENT(arg)) return false;
		bson_iter_t e;
		bson_iter_recurse(v, &e);
		const uint8_t *d; uint32_t l;
		bson_iter_document(arg, &l, &d);
		bson_t f;
		bson_init_static(&f, d, l);
		bson_iter_t fi;
		bson_iter_init(&fi, &f);
		bool opform = bson_iter_next(&fi) && bson_iter_key(&fi)[0] == '$';
		while (bson_iter_next(&e)) {
			if (opform) {
				if (sim_match_value(&e, arg, err)) return true;
			} else if (BSON_ITER_HOLDS_DOCUMENT(&e)) {
				const uint8_t *ed; uint32_t el;
				bson_iter_document(&e, &el, &ed);
				bson_t ev;
				bson_init_static(&ev, ed, el);
				if (sim_match(&ev, &f, err)) return true;
			}
		}
		return false;
	}
	if (!strcmp(op, "$all")) {
		bson_iter_t e;
		if (!BSON_ITER_HOLDS_ARRAY(arg)) return false;
		bson_iter_recurse(arg, &e);
		bool any = false;
		while (bson_iter_next(&e)) {
			any = true;
			bool ok = eq_value(v, &e);
			if (!ok && BSON_ITER_HOLDS_ARRAY(v)) {
				bson_iter_t ve;
				bson_iter_recurse(v, &ve);
				while (bson_iter_next(&ve)) if (eq_value(&ve, &e)) { ok = true; break; }
			}
			if (!ok) return false;
		}
		return any;
	}
	*err = "unknown operator";
	return false;
}

/* regular expressions through POSIX ERE, with the common PCRE escapes
 * (\d \w \s and their negations) rewritten; flags i, m, s, x accepted */
static bool regex_match(const bson_iter_t *v, const bson_iter_t *re)
{
	if (!BSON_ITER_HOLDS_UTF8(v) && !BSON_ITER_HOLDS_SYMBOL(v)) return false;
	const char *s = BSON_ITER_HOLDS_UTF8(v) ? bson_iter_utf8(v, NULL) : bson_iter_symbol(v, NULL);
	const char *pat, *opts = "";
	if (BSON_ITER_HOLDS_REGEX(re)) pat = bson_iter_regex(re, &opts);
	else if (BSON_ITER_HOLDS_UTF8(re)) pat = bson_iter_utf8(re, NULL);
	else return false;
	bson_string_t *b = bson_string_new(NULL);
	for (const char *p = pat; *p; p++) {
		if (p[0] == '\\' && p[1]) {
			const char *rep = NULL;
			switch (p[1]) {
			case 'd': rep = "[0-9]"; break;
			case 'D': rep = "[^0-9]"; break;
			case 'w': rep = "[A-Za-z0-9_]"; break;
			case 'W': rep = "[^A-Za-z0-9_]"; break;
			case 's': rep = "[[:space:]]"; break;
			case 'S': rep = "[^[:space:]]"; break;
			}
			if (rep) { bson_string_append(b, rep); p++; continue; }
			char two[3] = { p[0], p[1], 0 };
			bson_string_append(b, two);
			p++;
			continue;
		}
		bson_string_append_c(b, *p);
	}
	int flags = REG_EXTENDED | REG_NOSUB;
	if (strchr(opts, 'i')) flags |= REG_ICASE;
	if (strchr(opts, 'm')) flags |= REG_NEWLINE;
	regex_t rx;
	bool r = false;
	if (regcomp(&rx, b->str, flags) == 0) {
		r = regexec(&rx, s, 0, NULL, 0) == 0;
		regfree(&rx);
	}
	bson_string_free(b, true);
	return r;
}

static bool cb_none(const bson_iter_t *v, void *a)
{
	(void)v; (void)a;
	return false;
}

struct opm { const char *op; const bson_iter_t *arg; const char **err; bool res; };

static bool cb_op(const bson_iter_t *v, void *a)
{
	struct opm *m = a;
	if (op_value(m->op, v, m->arg, m->err)) { m->res = true; return true; }
	return false;
}

/* does the value set at `path` of `doc` satisfy {op: arg}? */
static bool path_op(const bson_t *doc, const char *path, const char *op, const bson_iter_t *arg,
                    const char **err)
{
	bool found = false;
	if (!strcmp(op, "$exists")) {
		bool want = bson_iter_as_bool((bson_iter_t *)arg);
		walk(bson_get_data(doc), doc->len, false, path, cb_none, NULL, &found, false);
		return want == found;
	}
	if (!strcmp(op, "$ne")) return !path_op(doc, path, "$eq", arg, err);
	if (!strcmp(op, "$nin")) return !path_op(doc, path, "$in", arg, err);
	if (!strcmp(op, "$not")) {
		if (BSON_ITER_HOLDS_REGEX(arg)) return !path_op(doc, path, "$regex", arg, err);
		if (!BSON_ITER_HOLDS_DOCUMENT(arg)) { *err = "$not needs a regex or a document"; return false; }
		bson_iter_t c;
		bson_iter_recurse(arg, &c);
		while (bson_iter_next(&c))
			if (path_op(doc, path, bson_iter_key(&c), &c, err)) return false;
		return true;
	}
	struct opm m = { op, arg, err, false };
	bool need_expand = strcmp(op, "$size") != 0;
	if (!strcmp(op, "$elemMatch") || !strcmp(op, "$all")) need_expand = false;
	walk(bson_get_data(doc), doc->len, false, path, cb_op, &m, &found, need_expand);
	if (m.res) return true;
	if (!found && (!strcmp(op, "$eq") || !strcmp(op, "$in") || !strcmp(op, "$gte") || !strcmp(op, "$lte"))) {
		/* a missing field equals null */
		bson_t tmp = BSON_INITIALIZER;
		bson_append_null(&tmp, "x", 1);
		bson_iter_t ni;
		bson_iter_init_find(&ni, &tmp, "x");
		bool r = (!strcmp(op, "$gte") || !strcmp(op, "$lte"))
			? BSON_ITER_HOLDS_NULL(arg) : op_value(op, &ni, arg, err);
		bson_destroy(&tmp);
		return r;
	}
	return false;
}

static bool is_opdoc(const bson_iter_t *it)
{
	if (!BSON_ITER_HOLDS_DOCUMENT(it)) return false;
	bson_iter_t c;
	bson_iter_recurse(it, &c);
	return bson_iter_next(&c) && bson_iter_key(&c)[0] == '$';
}

static bool match_list(const bson_t *doc, const bson_iter_t *arr, int mode, const char **err)
{
	/* mode 0 $and, 1 $or, 2 $nor */
	bson_iter_t e;
	if (!BSON_ITER_HOLDS_ARRAY(arr)) { *err = "$and/$or/$nor must be a nonempty array"; return false; }
	bson_iter_recurse(arr, &e);
	bool any = false;
	while (bson_iter_next(&e)) {
		if (!BSON_ITER_HOLDS_DOCUMENT(&e)) { *err = "$or/$and/$nor entries need to be full objects"; return false; }
		const uint8_t *d; uint32_t l;
		bson_iter_document(&e, &l, &d);
		bson_t sub;
		bson_init_static(&sub, d, l);
		bool r = sim_match(doc, &sub, err);
		if (mode == 0 && !r) return false;
		if (mode != 0 && r) return mode == 1;
		any = true;
	}
	if (!any) { *err = "$and/$or/$nor must be a nonempty array"; return false; }
	return mode != 1;
}

bool sim_match(const bson_t *doc, const bson_t *filter, const char **err)
{
	bson_iter_t it;
	if (!filter || !bson_iter_init(&it, filter)) return true;
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		if (k[0] == '$') {
			int mode = !strcmp(k, "$and") ? 0 : !strcmp(k, "$or") ? 1 : !strcmp(k, "$nor") ? 2 : -1;
			if (mode < 0) {
				if (!strcmp(k, "$comment")) continue;
				*err = "unknown top level operator";
				return false;
			}
			if (!match_list(doc, &it, mode, err)) return false;
			continue;
		}
		if (is_opdoc(&it)) {
			bson_iter_t c;
			bson_iter_recurse(&it, &c);
			while (bson_iter_next(&c)) {
				const char *op = bson_iter_key(&c);
				if (!strcmp(op, "$options")) continue;
				if (!path_op(doc, k, op, &c, err)) return false;
			}
		} else if (BSON_ITER_HOLDS_REGEX(&it)) {
			if (!path_op(doc, k, "$regex", &it, err)) return false;
		} else {
			if (!path_op(doc, k, "$eq", &it, err)) return false;
		}
		if (*err) return false;
	}
	return true;
}

/* matches one value (an array element for $pull/$elemMatch) against either
 * an operator document or a plain value */
bool sim_match_value(const bson_iter_t *val, const bson_iter_t *cond, const char **err)
{
	if (is_opdoc(cond)) {
		bson_iter_t c;
		bson_iter_recurse(cond, &c);
		while (bson_iter_next(&c)) {
			const char *op = bson_iter_key(&c);
			bool r;
			if (!strcmp(op, "$ne")) r = !op_value("$eq", val, &c, err);
			else if (!strcmp(op, "$nin")) r = !op_value("$in", val, &c, err);
			else if (!strcmp(op, "$exists")) r = true;
			else r = op_value(op, val, &c, err);
			if (!r) return false;
		}
		return true;
	}
	if (BSON_ITER_HOLDS_DOCUMENT(cond) && BSON_ITER_HOLDS_DOCUMENT(val)) {
		/* $pull with a document condition: match it as a query on the element */
		const uint8_t *d; uint32_t l;
		bson_iter_document(cond, &l, &d);
		bson_t f; bson_init_static(&f, d, l);
		bson_iter_document(val, &l, &d);
		bson_t v; bson_init_static(&v, d, l);
		return sim_match(&v, &f, err);
	}
	return eq_value(val, cond);
}

/* ---- projection ---- */

static bool proj_inclusive(const bson_t *proj)
{
	bson_iter_t it;
	bson_iter_init(&it, proj);
	while (bson_iter_next(&it)) {
		if (!strcmp(bson_iter_key(&it), "_id")) continue;
		return bson_iter_as_bool(&it);
	}
	return false;
}

/* does the projection mention `path` exactly (1), a descendant (2), or not (0)? */
static int proj_has(const bson_t *proj, const char *path, bool *val)
{
	bson_iter_t it;
	size_t pl = strlen(path);
	int r = 0;
	bson_iter_init(&it, proj);
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		if (!strcmp(k, path)) { *val = bson_iter_as_bool(&it); return 1; }
		if (!strncmp(k, path, pl) && k[pl] == '.') r = 2;
	}
	return r;
}

static void project_rec(const uint8_t *d, uint32_t l, const char *prefix, const bson_t *proj,
                        bool incl, bson_t *out, bool top)
{
	bson_iter_t it;
	bson_iter_init_from_data(&it, d, l);
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		char path[1024];
		snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", k);
		bool val = false;
		int h = proj_has(proj, path, &val);
		if (top && !strcmp(k, "_id") && h != 1) {
			bson_append_iter(out, k, -1, &it);
			continue;
		}
		if (h == 1) {
			if (val) bson_append_iter(out, k, -1, &it);
			continue;
		}
		if (h == 2 && BSON_ITER_HOLDS_DOCUMENT(&it)) {
			const uint8_t *cd; uint32_t cl;
			bson_iter_document(&it, &cl, &cd);
			bson_t child;
			bson_append_document_begin(out, k, -1, &child);
			project_rec(cd, cl, path, proj, incl, &child, false);
			bson_append_document_end(out, &child);
			continue;
		}
		if (!incl) bson_append_iter(out, k, -1, &it);
	}
}

void sim_project(const bson_t *doc, const bson_t *proj, bson_t *out)
{
	if (!proj || bson_empty(proj)) { bson_copy_to_excluding_noinit(doc, out, "", NULL); return; }
	bool incl = proj_inclusive(proj);
	project_rec(bson_get_data(doc), doc->len, "", proj, incl, out, true);
}

/* ---- sort ---- */

/* the sort key of a document for one field: an array sorts by its smallest
 * element ascending and its largest descending (an empty array before null) */
static bool sort_key(const bson_t *d, const char *path, int dir, bson_iter_t *out, bool *empty_arr)
{
	*empty_arr = false;
	if (!sim_lookup(d, path, out)) return false;
	if (!BSON_ITER_HOLDS_ARRAY(out)) return true;
	bson_iter_t e, best;
	bool have = false;
	bson_iter_recurse(out, &e);
	while (bson_iter_next(&e)) {
		if (!have || (dir > 0 ? sim_cmp_iter(&e, &best) < 0 : sim_cmp_iter(&e, &best) > 0)) best = e;
		have = true;
	}
	if (!have) { *empty_arr = true; return true; }
	*out = best;
	return true;
}

int sim_sort_cmp(const bson_t *a, const bson_t *b, const bson_t *sort)
{
	bson_iter_t it;
	bson_iter_init(&it, sort);
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		int dir = sim_num(&it) < 0 ? -1 : 1;
		if (!strcmp(k, "$natural")) continue;
		bson_iter_t x, y;
		bool ex, ey;
		bool hx = sort_key(a, k, dir, &x, &ex), hy = sort_key(b, k, dir, &y, &ey);
		/* rank: empty array < missing == null < everything else */
		int rx = !hx ? 1 : ex ? 0 : BSON_ITER_HOLDS_NULL(&x) ? 1 : 2;
		int ry = !hy ? 1 : ey ? 0 : BSON_ITER_HOLDS_NULL(&y) ? 1 : 2;
		int c;
		if (rx != 2 || ry != 2) {
			if (rx == 2 && sim_canon(bson_iter_type(&x)) < 5) c = -1;       /* MinKey */
			else if (ry == 2 && sim_canon(bson_iter_type(&y)) < 5) c = 1;
			else c = rx < ry ? -1 : rx > ry;
		} else {
			c = sim_cmp_iter(&x, &y);
		}
		if (c) return c * dir;
	}
	return 0;
}

/* ---- $type aliases (mongo/bson/bsontypes.cpp) ---- */
static const struct { const char *n; int t; } types[] = {
	{ "double", 1 }, { "string", 2 }, { "object", 3 }, { "array", 4 }, { "binData", 5 },
	{ "undefined", 6 }, { "objectId", 7 }, { "bool", 8 }, { "date", 9 }, { "null", 10 },
	{ "regex", 11 }, { "dbPointer", 12 }, { "javascript", 13 }, { "symbol", 14 },
	{ "javascriptWithScope", 15 }, { "int", 16 }, { "timestamp", 17 }, { "long", 18 },
	{ "decimal", 19 }, { "minKey", -1 }, { "maxKey", 127 },
};

int sim_type_code(const char *alias)
{
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (!strcmp(types[i].n, alias)) return types[i].t == -1 ? 0xff : types[i].t;
	return -1000;
}

const char *sim_type_name(bson_type_t t)
{
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if ((types[i].t == -1 ? 0xff : types[i].t) == (int)t) return types[i].n;
	return "unknown";
}
