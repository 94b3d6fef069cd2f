/*
 * test_diff.c — apply/diff: $v:2 diffs, $v:1 modifiers and replacements give
 * the server's post-image byte for byte (field order included); malformed
 * input is refused with a reason; the 872 real $v:2 updates of the
 * mongo-tools time-series dump reproduce an independently computed golden
 * file (fixtures/diff/README.md).
 */
#include "diff.h"
#include "err.h"
#include "../check.h"

#include <stdlib.h>
#include <string.h>

static bson_t *J(const char *json)
{
	bson_error_t e;
	bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);

	if (!b) {
		fprintf(stderr, "bad test json %s: %s\n", json, e.message);
		abort();
	}
	return b;
}

enum form { F_V2, F_V1, F_ANY };

static int run(enum form f, const bson_t *doc, const bson_t *u, bson_t *out, char *err, size_t n)
{
	switch (f) {
	case F_V2: return diff_apply_v2(doc, u, out, err, n);
	case F_V1: return diff_apply_v1(doc, u, out, err, n);
	default: return diff_apply_update(doc, u, out, err, n);
	}
}

/* DOC with update U gives exactly EXPECT (bytes, hence order and types). */
static void ok_at(int line, enum form f, const char *doc, const char *u, const char *expect)
{
	bson_t *d = J(doc), *x = J(u), *want = J(expect), out;
	char err[256] = "";
	int rc = run(f, d, x, &out, err, sizeof err);

	CHECK_MSG(rc == 0, "line %d: rc %d: %s", line, rc, err);
	if (rc == 0) {
		int same = out.len == want->len && memcmp(bson_get_data(&out), bson_get_data(want), out.len) == 0;
		char *got = bson_as_canonical_extended_json(&out, NULL);
		char *exp = bson_as_canonical_extended_json(want, NULL);
		CHECK_MSG(same, "line %d:\n  got  %s\n  want %s", line, got, exp);
		bson_free(got);
		bson_free(exp);
	}
	bson_destroy(&out);
	bson_destroy(d);
	bson_destroy(x);
	bson_destroy(want);
}

/* DOC with update U is refused, with a reason containing WHY. */
static void bad_at(int line, enum form f, const char *doc, const char *u, const char *why)
{
	bson_t *d = J(doc), *x = J(u), out;
	char err[256] = "";
	int rc = run(f, d, x, &out, err, sizeof err);

	CHECK_MSG(rc == MMM_EBSON, "line %d: rc %d, expected MMM_EBSON", line, rc);
	CHECK_MSG(strstr(err, why) != NULL, "line %d: reason '%s' lacks '%s'", line, err, why);
	CHECK_MSG(err[0] >= 'a' && err[0] <= 'z' && !strchr(err, '\n'),
	          "line %d: reason '%s' not one lowercase line", line, err);
	bson_destroy(&out);
	bson_destroy(d);
	bson_destroy(x);
}

#define OK2(d, u, e)  ok_at(__LINE__, F_V2, d, u, e)
#define OK1(d, u, e)  ok_at(__LINE__, F_V1, d, u, e)
#define OKU(d, u, e)  ok_at(__LINE__, F_ANY, d, u, e)
#define BAD2(d, u, w) bad_at(__LINE__, F_V2, d, u, w)
#define BAD1(d, u, w) bad_at(__LINE__, F_V1, d, u, w)
#define BADU(d, u, w) bad_at(__LINE__, F_ANY, d, u, w)

static void test_v2_examples(void)
{
	/* jstests/replsets/oplog_format.js */
	OK2("{\"_id\":1,\"a\":2}", "{\"u\":{\"a\":3},\"i\":{\"b\":2}}", "{\"_id\":1,\"a\":3,\"b\":2}");
	OK2("{\"_id\":1,\"a\":[2]}", "{\"sa\":{\"a\":true,\"u0\":3}}", "{\"_id\":1,\"a\":[3]}");
	OK2("{\"_id\":1,\"a\":\"foo\"}", "{\"i\":{\"c\":[18]}}", "{\"_id\":1,\"a\":\"foo\",\"c\":[18]}");
	OK2("{\"_id\":1,\"a\":{\"b\":[1,2],\"c\":[1,2]}}", "{\"sa\":{\"u\":{\"b\":[1],\"c\":[1]}}}",
	    "{\"_id\":1,\"a\":{\"b\":[1],\"c\":[1]}}");
	/* document_diff_serialization_test.cpp diffs, on made-up pre-images */
	OK2("{\"arr\":[1,2,{\"x\":0,\"dField\":1,\"y\":2},4,5,6,7],\"z\":0}",
	    "{\"sarr\":{\"a\":true,\"l\":6,\"u0\":{\"foo\":\"bar\"},\"s2\":{\"d\":{\"dField\":false}},\"u5\":1}}",
	    "{\"arr\":[{\"foo\":\"bar\"},2,{\"x\":0,\"y\":2},4,5,1],\"z\":0}");
	OK2("{\"arr\":[1,2,{\"dField\":1}]}",
	    "{\"sarr\":{\"a\":true,\"l\":6,\"u0\":{\"foo\":\"bar\"},\"s2\":{\"d\":{\"dField\":false}},\"u5\":1}}",
	    "{\"arr\":[{\"foo\":\"bar\"},2,{},null,null,1]}");
	OK2("{\"subArray\":[0,{},{\"z\":0,\"b\":1},{\"c\":0}]}",
	    "{\"ssubArray\":{\"a\":true,\"s1\":{\"u\":{\"a\":1}},\"s2\":{\"u\":{\"b\":2}},\"s3\":{\"u\":{\"c\":3}}}}",
	    "{\"subArray\":[0,{\"a\":1},{\"z\":0,\"b\":2},{\"c\":3}]}");
	OK2("{\"dField1\":1,\"uField\":0,\"arr2\":[1,2,3,4,5,6,7],\"dField2\":2,\"k\":1}",
	    "{\"d\":{\"dField1\":false,\"dField2\":false},\"u\":{\"uField\":1},\"sarr2\":{\"a\":true,\"l\":5}}",
	    "{\"uField\":1,\"arr2\":[1,2,3,4,5],\"k\":1}");
	OK2("{\"obj\":{\"iField\":0,\"dField\":1,\"uField\":2,\"k\":3}}",
	    "{\"sobj\":{\"d\":{\"dField\":false},\"u\":{\"uField\":\"foo\"},\"i\":{\"iField\":1}}}",
	    "{\"obj\":{\"uField\":\"foo\",\"k\":3,\"iField\":1}}");
	/* MongoShake's 5.0 sample entry */
	OK2("{\"_id\":1,\"name\":\"apple\",\"count\":3,\"c\":1,\"z\":0}",
	    "{\"d\":{\"count\":false},\"u\":{\"name\":\"orange\"},\"i\":{\"c\":11}}",
	    "{\"_id\":1,\"name\":\"orange\",\"z\":0,\"c\":11}");
}

static void test_v2_order(void)
{
	/* i on an existing field moves it to the end */
	OK2("{\"a\":1,\"b\":2,\"c\":3}", "{\"i\":{\"a\":9}}", "{\"b\":2,\"c\":3,\"a\":9}");
	/* u in place; u on an absent field appends, before every i */
	OK2("{\"a\":1}", "{\"u\":{\"x\":1},\"i\":{\"y\":2}}", "{\"a\":1,\"x\":1,\"y\":2}");
	OK2("{\"b\":0,\"a\":1,\"c\":2}", "{\"u\":{\"a\":5,\"x\":1},\"i\":{\"y\":2,\"b\":3}}",
	    "{\"a\":5,\"c\":2,\"x\":1,\"y\":2,\"b\":3}");
	/* u keeps the position, whatever the new type */
	OK2("{\"a\":1,\"b\":{\"x\":1},\"c\":3}", "{\"u\":{\"b\":[1]}}", "{\"a\":1,\"b\":[1],\"c\":3}");
	/* d of an absent field is nothing */
	OK2("{\"a\":1}", "{\"d\":{\"zz\":false}}", "{\"a\":1}");
	/* s<field> on a missing field creates nothing; on the wrong type: null */
	OK2("{\"a\":1}", "{\"sx\":{\"u\":{\"y\":1}}}", "{\"a\":1}");
	OK2("{\"a\":1}", "{\"sx\":{\"a\":true,\"u0\":1}}", "{\"a\":1}");
	OK2("{\"x\":5,\"a\":1}", "{\"sx\":{\"u\":{\"y\":1}}}", "{\"x\":null,\"a\":1}");
	OK2("{\"x\":{},\"a\":1}", "{\"sx\":{\"a\":true,\"u0\":1}}", "{\"x\":null,\"a\":1}");
	OK2("{\"x\":[1],\"a\":1}", "{\"sx\":{\"u\":{\"y\":1}}}", "{\"x\":null,\"a\":1}");
	/* keys like "129" in a document sub-diff are field names, not indexes */
	OK2("{\"data\":{\"ts\":{\"0\":1,\"1\":2}}}", "{\"sdata\":{\"sts\":{\"i\":{\"129\":5}}}}",
	    "{\"data\":{\"ts\":{\"0\":1,\"1\":2,\"129\":5}}}");
	OK2("{\"data\":{\"129\":0,\"5\":1}}", "{\"sdata\":{\"u\":{\"129\":7}}}", "{\"data\":{\"129\":7,\"5\":1}}");
	/* nested sub-diffs */
	OK2("{\"a\":{\"b\":{\"c\":1,\"d\":2},\"k\":0},\"z\":1}",
	    "{\"sa\":{\"u\":{\"k\":1},\"sb\":{\"d\":{\"c\":false},\"i\":{\"e\":3}}}}",
	    "{\"a\":{\"b\":{\"d\":2,\"e\":3},\"k\":1},\"z\":1}");
	OK2("{\"a\":[{\"b\":[1,{\"c\":[0,0]}]}]}",
	    "{\"sa\":{\"a\":true,\"s0\":{\"sb\":{\"a\":true,\"s1\":{\"sc\":{\"a\":true,\"u1\":9}}}}}}",
	    "{\"a\":[{\"b\":[1,{\"c\":[0,9]}]}]}");
	/* the first-character rule of DocumentDiffReader: "dx" is the d section */
	OK2("{\"a\":1,\"b\":2}", "{\"dx\":{\"a\":false}}", "{\"b\":2}");
	/* a malformed sub-diff under a missing field is never read (lazily, as
	 * the server's readers do) */
	OK2("{\"a\":1}", "{\"sx\":{\"sy\":{\"zz\":1}}}", "{\"a\":1}");
	/* values keep their types: int64, double, date */
	OK2("{\"a\":1}", "{\"u\":{\"a\":{\"$numberLong\":\"5\"},\"b\":1.5,\"c\":{\"$date\":{\"$numberLong\":\"1623711547966\"}}}}",
	    "{\"a\":{\"$numberLong\":\"5\"},\"b\":1.5,\"c\":{\"$date\":{\"$numberLong\":\"1623711547966\"}}}");
}

static void test_v2_arrays(void)
{
	OK2("{\"a\":[1,2,3,4]}", "{\"sa\":{\"a\":true,\"l\":2}}", "{\"a\":[1,2]}");
	OK2("{\"a\":[1]}", "{\"sa\":{\"a\":true,\"l\":3}}", "{\"a\":[1,null,null]}");
	OK2("{\"a\":[1,2]}", "{\"sa\":{\"a\":true,\"l\":0}}", "{\"a\":[]}");
	OK2("{\"a\":[1]}", "{\"sa\":{\"a\":true,\"u3\":9}}", "{\"a\":[1,null,null,9]}");
	OK2("{\"a\":[]}", "{\"sa\":{\"a\":true,\"u0\":{\"x\":1}}}", "{\"a\":[{\"x\":1}]}");
	OK2("{\"a\":[1,2,3]}", "{\"sa\":{\"a\":true,\"l\":4,\"u1\":7,\"u3\":8}}", "{\"a\":[1,7,3,8]}");
	OK2("{\"a\":[1,2,3]}", "{\"sa\":{\"a\":true,\"l\":2,\"u0\":0}}", "{\"a\":[0,2]}");
	/* s<N> past the end or on the wrong type gives null */
	OK2("{\"a\":[1]}", "{\"sa\":{\"a\":true,\"s2\":{\"u\":{\"x\":1}}}}", "{\"a\":[1,null,null]}");
	OK2("{\"a\":[1,{\"x\":0}]}", "{\"sa\":{\"a\":true,\"s0\":{\"u\":{\"x\":1}},\"s1\":{\"u\":{\"x\":1}}}}",
	    "{\"a\":[null,{\"x\":1}]}");
	OK2("{\"a\":[{\"x\":0}]}", "{\"sa\":{\"a\":true,\"s0\":{\"a\":true,\"u0\":1}}}", "{\"a\":[null]}");
	OK2("{\"a\":[[1,2,3],4]}", "{\"sa\":{\"a\":true,\"s0\":{\"a\":true,\"l\":2,\"u1\":5}}}",
	    "{\"a\":[[1,5],4]}");
	/* an index with leading zeros parses as the server's unsigned decimal */
	OK2("{\"a\":[1,2]}", "{\"sa\":{\"a\":true,\"u01\":5}}", "{\"a\":[1,5]}");
}

static void test_v2_duplicate_keys(void)
{
	/* A pre-image with the same field twice: every occurrence meets the
	 * table (the server walks the pre-image, not the diff). */
	bson_t *d = bson_new(), *diff = J("{\"u\":{\"x\":3},\"d\":{}}"), out;
	bson_t *diff2 = J("{\"u\":{\"x\":3}}"), *want = bson_new();
	char err[128] = "";
	int rc;

	BSON_APPEND_INT32(d, "x", 1);
	BSON_APPEND_INT32(d, "y", 0);
	BSON_APPEND_INT32(d, "x", 2);
	BSON_APPEND_INT32(want, "x", 3);
	BSON_APPEND_INT32(want, "y", 0);
	BSON_APPEND_INT32(want, "x", 3);
	rc = diff_apply_v2(d, diff, &out, err, sizeof err);
	CHECK_INT(rc, MMM_EBSON);     /* d after u: out of order */
	bson_destroy(&out);
	rc = diff_apply_v2(d, diff2, &out, err, sizeof err);
	CHECK_INT(rc, 0);
	CHECK(bson_equal(&out, want));
	bson_destroy(&out);
	bson_destroy(d);
	bson_destroy(diff);
	bson_destroy(diff2);
	bson_destroy(want);
}

static void test_v2_malformed(void)
{
	const char *doc = "{\"a\":[1,2],\"o\":{\"p\":1}}";

	BAD2(doc, "{}", "non-empty");
	BAD2(doc, "{\"x\":{}}", "unexpected section 'x'");
	BAD2(doc, "{\"u\":{\"a\":1},\"d\":{\"b\":false}}", "unexpected section 'd'");
	BAD2(doc, "{\"u\":{\"a\":1},\"u\":{\"b\":1}}", "unexpected section 'u'");
	BAD2(doc, "{\"u\":5}", "not an object");
	BAD2(doc, "{\"u\":{\"a\":1},\"i\":{\"a\":2}}", "duplicate field name in diff: 'a'");
	BAD2(doc, "{\"d\":{\"o\":false},\"so\":{\"u\":{\"p\":2}}}", "duplicate field name");
	BAD2(doc, "{\"so\":{\"u\":{\"p\":2}},\"i\":{\"c\":1}}", "did not expect more sections");
	BAD2(doc, "{\"b\":{\"a\":1}}", "binary section");
	BAD2(doc, "{\"so\":5}", "section 'so' of document diff is not an object");
	BAD2(doc, "{\"so\":{\"u\":{}},\"sa\":5}", "sub-diff 'sa' is not an object");
	BAD2(doc, "{\"so\":{}}", "non-empty");
	BAD2(doc, "{\"so\":{\"q\":{}}}", "unexpected section 'q'");
	BAD2(doc, "{\"sa\":{\"a\":false}}", "to be true");
	BAD2(doc, "{\"sa\":{\"a\":1}}", "to be bool");
	BAD2(doc, "{\"sa\":{\"a\":true,\"l\":\"x\"}}", "int32");
	BAD2(doc, "{\"sa\":{\"a\":true,\"l\":{\"$numberLong\":\"2\"}}}", "int32");
	BAD2(doc, "{\"sa\":{\"a\":true,\"l\":-1}}", "negative array diff length");
	BAD2(doc, "{\"sa\":{\"a\":true,\"u1\":1,\"u0\":2}}", "not ascending");
	BAD2(doc, "{\"sa\":{\"a\":true,\"u1\":1,\"u1\":2}}", "not ascending");
	BAD2(doc, "{\"sa\":{\"a\":true,\"l\":1,\"u3\":1}}", "past the new length");
	BAD2(doc, "{\"sa\":{\"a\":true,\"l\":2,\"u0\":1,\"u2\":1}}", "past the new length");
	BAD2(doc, "{\"sa\":{\"a\":true,\"x1\":1}}", "expected either 'u' (update) or 's' (sub diff)");
	BAD2(doc, "{\"sa\":{\"a\":true,\"u\":1}}", "at least two characters");
	BAD2(doc, "{\"sa\":{\"a\":true,\"uz\":1}}", "expected integer index");
	BAD2(doc, "{\"sa\":{\"a\":true,\"u-1\":1}}", "expected integer index");
	BAD2(doc, "{\"sa\":{\"a\":true,\"u99999999999\":1}}", "expected integer index");
	BAD2(doc, "{\"sa\":{\"a\":true,\"u100000000\":1}}", "too large");
	BAD2(doc, "{\"sa\":{\"a\":true,\"s0\":5}}", "expected sub diff at index 0");
	BAD2(doc, "{\"sa\":{\"a\":true,\"s0\":{}}}", "non-empty");
	/* read once applied, like the server's readers */
	BAD2(doc, "{\"so\":{\"sp\":{\"zz\":1}}}", "unexpected section 'z'");
}

/* Nests N documents "x" (DIFF: N sub-diffs "sx" ending in {u:{y:1}}). */
static bson_t *nested(int n, int diff)
{
	bson_t *top = bson_new(), *kids = calloc((size_t)n + 1, sizeof *kids), *cur = top;
	int i;

	for (i = 0; i < n; i++) {
		bson_append_document_begin(cur, diff ? "sx" : "x", -1, &kids[i]);
		cur = &kids[i];
	}
	if (diff) {
		BSON_APPEND_DOCUMENT_BEGIN(cur, "u", &kids[n]);
		BSON_APPEND_INT32(&kids[n], "y", 1);
		bson_append_document_end(cur, &kids[n]);
	}
	for (i = n - 1; i >= 0; i--)
		bson_append_document_end(i ? &kids[i - 1] : top, &kids[i]);
	free(kids);
	return top;
}

static void test_v2_deep(void)
{
	/* Deep but allowed, then deeper than the limit: refused, no overflow. */
	bson_t *doc = nested(150, 0), *diff = nested(150, 1), out;
	char err[128] = "";

	CHECK_INT(diff_apply_v2(doc, diff, &out, err, sizeof err), 0);
	bson_destroy(&out);
	bson_destroy(doc);
	bson_destroy(diff);
	doc = nested(400, 0);
	diff = nested(400, 1);
	CHECK_INT(diff_apply_v2(doc, diff, &out, err, sizeof err), MMM_EBSON);
	CHECK(strstr(err, "nested deeper") != NULL);
	bson_destroy(&out);
	bson_destroy(doc);
	bson_destroy(diff);
}

static void test_v1(void)
{
	/* oplog_format.js, v1 forms */
	OK1("{\"_id\":1,\"a\":2}", "{\"$v\":1,\"$set\":{\"a\":3,\"b\":2}}", "{\"_id\":1,\"a\":3,\"b\":2}");
	OK1("{\"_id\":1,\"a\":{\"b\":[1,2],\"c\":[1,2]}}", "{\"$v\":1,\"$set\":{\"a.b\":[1],\"a.c\":[1]}}",
	    "{\"_id\":1,\"a\":{\"b\":[1],\"c\":[1]}}");
	OK1("{\"_id\":1,\"a\":[2]}", "{\"$v\":1,\"$set\":{\"a.0\":3}}", "{\"_id\":1,\"a\":[3]}");
	OK1("{\"_id\":1,\"a\":\"foo\"}", "{\"$v\":1,\"$set\":{\"c\":[18]}}", "{\"_id\":1,\"a\":\"foo\",\"c\":[18]}");
	/* MongoShake's 4.4 sample */
	OK1("{\"_id\":1,\"a\":1,\"b\":1,\"c\":1}", "{\"$v\":1,\"$set\":{\"b\":3},\"$unset\":{\"c\":true}}",
	    "{\"_id\":1,\"a\":1,\"b\":3}");
	/* in place; new fields appended in the update tree's order, not the $set's */
	OK1("{\"a\":{\"b\":1,\"c\":2},\"d\":1}", "{\"$set\":{\"a.b\":5}}", "{\"a\":{\"b\":5,\"c\":2},\"d\":1}");
	OK1("{\"_id\":1}", "{\"$set\":{\"z\":1,\"a\":1,\"m.y\":1,\"m.x\":1}}",
	    "{\"_id\":1,\"a\":1,\"m\":{\"x\":1,\"y\":1},\"z\":1}");
	OK1("{\"o\":{}}", "{\"$set\":{\"o.10\":1,\"o.9\":2,\"o.b\":3,\"o.0\":4,\"o.01\":5}}",
	    "{\"o\":{\"0\":4,\"01\":5,\"9\":2,\"10\":1,\"b\":3}}");
	/* $set and $unset share one tree, visited in order */
	OK1("{\"b\":1,\"_id\":0}", "{\"$set\":{\"c\":1,\"a\":1},\"$unset\":{\"b\":1}}", "{\"_id\":0,\"a\":1,\"c\":1}");
	/* arrays: index in place, pad with null, create objects below */
	OK1("{\"a\":[0]}", "{\"$set\":{\"a.3\":1}}", "{\"a\":[0,null,null,1]}");
	OK1("{\"a\":[]}", "{\"$set\":{\"a.2.b\":1}}", "{\"a\":[null,null,{\"b\":1}]}");
	OK1("{\"a\":[]}", "{\"$set\":{\"a.10\":10,\"a.9\":9}}",
	    "{\"a\":[null,null,null,null,null,null,null,null,null,9,10]}");
	OK1("{\"a\":[{\"b\":1},{\"b\":2}]}", "{\"$set\":{\"a.1.b\":5,\"a.0.c\":6}}",
	    "{\"a\":[{\"b\":1,\"c\":6},{\"b\":5}]}");
	OK1("{\"a\":[1,2]}", "{\"$set\":{\"a.01\":5}}", "{\"a\":[1,5]}");
	/* a missing numeric component creates an object, not an array */
	OK1("{}", "{\"$set\":{\"x.0.y\":1}}", "{\"x\":{\"0\":{\"y\":1}}}");
	/* not viable: through a scalar or by name into an array — ignored */
	OK1("{\"a\":5}", "{\"$set\":{\"a.b\":1,\"c\":2}}", "{\"a\":5,\"c\":2}");
	OK1("{\"a\":[1]}", "{\"$set\":{\"a.b\":1}}", "{\"a\":[1]}");
	OK1("{\"a\":null}", "{\"$set\":{\"a.b.c\":1}}", "{\"a\":null}");
	/* $unset: removes, sets null inside an array, ignores missing paths */
	OK1("{\"a\":{\"b\":1,\"c\":2}}", "{\"$unset\":{\"a.b\":1}}", "{\"a\":{\"c\":2}}");
	OK1("{\"a\":[1,2,3]}", "{\"$unset\":{\"a.1\":1}}", "{\"a\":[1,null,3]}");
	OK1("{\"a\":[1]}", "{\"$unset\":{\"a.5\":1,\"x.y\":1,\"a.b\":1}}", "{\"a\":[1]}");
	OK1("{\"a\":{\"b\":1}}", "{\"$unset\":{\"a.b.c\":\"\"}}", "{\"a\":{\"b\":1}}");
	/* replacing a subtree after descending into a sibling */
	OK1("{\"a\":{\"x\":{\"y\":1}},\"b\":2}", "{\"$set\":{\"a.x.y\":2,\"a.z\":{\"k\":1}},\"$unset\":{\"b\":1}}",
	    "{\"a\":{\"x\":{\"y\":2},\"z\":{\"k\":1}}}");
	/* malformed */
	BAD1("{}", "{\"$inc\":{\"a\":1}}", "unsupported update operator '$inc'");
	BAD1("{}", "{\"$set\":5}", "'$set' is not an object");
	BAD1("{}", "{\"$set\":{\"a..b\":1}}", "empty field name");
	BAD1("{}", "{\"$set\":{\"a.\":1}}", "empty field name");
	BAD1("{}", "{\"$set\":{\"\":1}}", "empty update path");
	BAD1("{}", "{\"$set\":{\"a\":1,\"a.b\":2}}", "would create a conflict at 'a'");
	BAD1("{}", "{\"$set\":{\"a.b\":1,\"a\":2}}", "would create a conflict at 'a'");
	BAD1("{}", "{\"$set\":{\"a\":1},\"$unset\":{\"a\":1}}", "conflict");
	BAD1("{\"a\":[]}", "{\"$set\":{\"a.1500001\":1}}", "can't backfill more than 1500000 elements");
	BAD1("{\"a\":[]}", "{\"$set\":{\"a.99999999999999999999999\":1}}", "backfill");
}

static void test_update(void)
{
	/* replacement: o as is; the pre-image's _id first when o has none */
	OKU("{\"_id\":1,\"a\":1}", "{\"_id\":1,\"b\":2}", "{\"_id\":1,\"b\":2}");
	OKU("{\"x\":0,\"_id\":7}", "{\"b\":2,\"c\":3}", "{\"_id\":7,\"b\":2,\"c\":3}");
	OKU("{\"_id\":2}", "{\"b\":1,\"_id\":2}", "{\"b\":1,\"_id\":2}");
	OKU("{\"a\":1}", "{\"b\":1}", "{\"b\":1}");
	OKU("{\"_id\":1,\"a\":1}", "{}", "{\"_id\":1}");
	/* a replacement with _id may hold a user field "$v" */
	OKU("{\"_id\":1}", "{\"_id\":1,\"$v\":2,\"diff\":{\"i\":{\"x\":1}}}",
	    "{\"_id\":1,\"$v\":2,\"diff\":{\"i\":{\"x\":1}}}");
	/* deltas and modifiers */
	OKU("{\"_id\":1,\"a\":2}", "{\"$v\":2,\"diff\":{\"u\":{\"a\":3},\"i\":{\"b\":2}}}", "{\"_id\":1,\"a\":3,\"b\":2}");
	OKU("{\"_id\":1,\"a\":2}", "{\"$v\":{\"$numberLong\":\"2\"},\"diff\":{\"u\":{\"a\":3}}}", "{\"_id\":1,\"a\":3}");
	OKU("{\"_id\":1,\"a\":2}", "{\"$v\":1,\"$set\":{\"a\":3,\"b\":2}}", "{\"_id\":1,\"a\":3,\"b\":2}");
	OKU("{\"_id\":1,\"a\":2}", "{\"$set\":{\"a\":3}}", "{\"_id\":1,\"a\":3}");
	BADU("{\"_id\":1}", "{\"$v\":2}", "'diff'");
	BADU("{\"_id\":1}", "{\"$v\":2,\"diff\":5}", "'diff'");
	BADU("{\"_id\":1}", "{\"$v\":3,\"$set\":{\"a\":1}}", "unsupported update version");
	BADU("{\"_id\":1}", "{\"$v\":2,\"diff\":{\"q\":{}}}", "unexpected section 'q'");
}

static const char *fixtures(void)
{
	const char *f = getenv("MMM_FIXTURES");
	return f && *f ? f : "fixtures";
}

static int load(const char *name, bson_t ***docs, size_t *n)
{
	char path[1024];
	bson_error_t e;
	bson_reader_t *r;
	const bson_t *b;
	bool eof = false;
	size_t cap = 0;

	snprintf(path, sizeof path, "%s/%s", fixtures(), name);
	r = bson_reader_new_from_file(path, &e);
	if (!r) {
		fprintf(stderr, "cannot open '%s': %s\n", path, e.message);
		return -1;
	}
	*docs = NULL;
	*n = 0;
	while ((b = bson_reader_read(r, &eof))) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			*docs = realloc(*docs, cap * sizeof **docs);
		}
		(*docs)[(*n)++] = bson_copy(b);
	}
	bson_reader_destroy(r);
	return eof ? 0 : -1;
}

static void unload(bson_t **docs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		bson_destroy(docs[i]);
	free(docs);
}

/* control.max.ts is the largest data.ts; every data.<f> has keys 0..N-1. */
static int bucket_consistent(const bson_t *b)
{
	bson_iter_t it, f, k;
	int64_t max = INT64_MIN, ctl;
	int n = -1;

	if (!bson_iter_init(&it, b) || !bson_iter_find_descendant(&it, "control.max.ts", &f) ||
	    !BSON_ITER_HOLDS_DATE_TIME(&f))
		return 0;
	ctl = bson_iter_date_time(&f);
	if (!bson_iter_init_find(&it, b, "data") || !bson_iter_recurse(&it, &f))
		return 0;
	while (bson_iter_next(&f)) {
		int i = 0;
		int ts = strcmp(bson_iter_key(&f), "ts") == 0;
		if (!bson_iter_recurse(&f, &k))
			return 0;
		while (bson_iter_next(&k)) {
			char want[16];
			snprintf(want, sizeof want, "%d", i++);
			if (strcmp(bson_iter_key(&k), want) != 0)
				return 0;
			if (ts && BSON_ITER_HOLDS_DATE_TIME(&k) && bson_iter_date_time(&k) > max)
				max = bson_iter_date_time(&k);
		}
		if (n >= 0 && i != n)
			return 0;
		n = i;
	}
	return n > 0 && max == ctl;
}

static void test_timeseries(void)
{
	bson_t **buckets = NULL, **ops = NULL, **golden = NULL;
	size_t nb = 0, no = 0, ng = 0, i, j;
	int applied = 0, failed = 0, grew = 0;
	char err[256];

	CHECK(load("diff/timeseries_test.system.buckets.foo_ts.bson", &buckets, &nb) == 0);
	CHECK(load("oplog/mongorestore_testdata_timeseries_tests_ts_dump_with_oplog_oplog.bson",
	           &ops, &no) == 0);
	CHECK(load("diff/timeseries_post.bson", &golden, &ng) == 0);
	CHECK_INT(nb, 10);
	CHECK_INT(no, 872);
	CHECK_INT(ng, 10);
	for (i = 0; i < nb; i++)
		CHECK_MSG(bucket_consistent(buckets[i]), "bucket %zu inconsistent before", i);
	for (i = 0; i < no; i++) {
		bson_iter_t it, id;
		const bson_oid_t *want;
		bson_t o, out;
		const uint8_t *data;
		uint32_t len;
		int rc;

		if (!bson_iter_init_find(&it, ops[i], "o") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
		    !bson_iter_init(&id, ops[i]) || !bson_iter_find_descendant(&id, "o2._id", &id) ||
		    !BSON_ITER_HOLDS_OID(&id)) {
			failed++;
			continue;
		}
		bson_iter_document(&it, &len, &data);
		bson_init_static(&o, data, len);
		want = bson_iter_oid(&id);
		for (j = 0; j < nb; j++) {
			bson_iter_t bid;
			if (bson_iter_init_find(&bid, buckets[j], "_id") && BSON_ITER_HOLDS_OID(&bid) &&
			    bson_oid_equal(bson_iter_oid(&bid), want))
				break;
		}
		if (j == nb) {
			failed++;
			continue;
		}
		rc = diff_apply_update(buckets[j], &o, &out, err, sizeof err);
		if (rc) {
			fprintf(stderr, "op %zu: %s\n", i, err);
			failed++;
		} else {
			applied++;
			grew += out.len > buckets[j]->len;
			bson_destroy(buckets[j]);
			buckets[j] = bson_copy(&out);
		}
		bson_destroy(&out);
	}
	CHECK_INT(applied, 872);
	CHECK_INT(failed, 0);
	/* Every update inserts a measurement, but the dump's snapshot already
	 * holds the first two (mongodump --oplog overlaps): their i re-inserts
	 * the last field "129" in place, as the server's replay does. */
	CHECK_INT(grew, 870);
	for (i = 0; i < nb; i++) {
		CHECK_MSG(bucket_consistent(buckets[i]), "bucket %zu inconsistent after", i);
		if (i < ng)
			CHECK_MSG(bson_equal(buckets[i], golden[i]), "bucket %zu differs from the golden", i);
	}
	unload(buckets, nb);
	unload(ops, no);
	unload(golden, ng);
}

int main(void)
{
	test_v2_examples();
	test_v2_order();
	test_v2_arrays();
	test_v2_duplicate_keys();
	test_v2_malformed();
	test_v2_deep();
	test_v1();
	test_update();
	test_timeseries();
	return check_done();
}
