/* test_clog.c — stamps and conflict-log records (stamp.h): encoding keeps
 * stamp order, encode/decode and BSON round trips, the shapes of clog_key()
 * and clog_value(), records through the journal's conflicts table.
 *
 * With arguments it is also the writer that test_journal_conflicts.py uses
 * to put records into a journal (nothing else writes them but mmm-apply):
 *
 *   test_clog write JDIR < records.jsonl
 *
 * one JSON object per line, {"ns", "id": {"_id": ...}, "master": UUID,
 * "late"|"newer"|"base": {"origin": UUID, "ts": "SEC:INC", "wall": MS,
 * "k": N}, "how", "result", "at": MS} (base absent when degraded), or
 * {"corrupt": NS, "k": N}: a record of NS whose value is not BSON. */
#include <stdlib.h>
#include <unistd.h>
#include "../check.h"
#include "config.h"
#include "err.h"
#include "journal.h"
#include "stamp.h"
#include "ts.h"

static const uint8_t U1[16] = { 0x2c, 0x88, 0xae, 0x84, 0x7c, 0xb9, 0x40, 0xf7, 0x83, 0x5d, 0xc0, 0x5e, 0x98, 0x1f, 0x56, 0x4d };
static const uint8_t U2[16] = { 0x0d, 0x9c, 0x28, 0x4b, 0xb4, 0x7c, 0x40, 0xb5, 0x93, 0x2c, 0x54, 0x7b, 0x86, 0x85, 0xed, 0xd0 };

/* ---- the writer ------------------------------------------------------- */

static int stamp_of(const bson_t *doc, const char *key, struct stamp *s)
{
	bson_iter_t it, sub;
	char err[128];

	memset(s, 0, sizeof *s);
	if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &sub))
		return -1;
	while (bson_iter_next(&sub)) {
		const char *k = bson_iter_key(&sub);
		if (strcmp(k, "origin") == 0 && BSON_ITER_HOLDS_UTF8(&sub)) {
			if (uuid_parse(bson_iter_utf8(&sub, NULL), s->origin))
				return -1;
		} else if (strcmp(k, "ts") == 0 && BSON_ITER_HOLDS_UTF8(&sub)) {
			if (ts_parse(bson_iter_utf8(&sub, NULL), &s->ts, err, sizeof err))
				return -1;
		} else if (strcmp(k, "wall") == 0 && BSON_ITER_HOLDS_NUMBER(&sub)) {
			s->wall = bson_iter_as_int64(&sub);
		} else if (strcmp(k, "k") == 0 && BSON_ITER_HOLDS_NUMBER(&sub)) {
			s->k = (uint32_t)bson_iter_as_int64(&sub);
		}
	}
	return 0;
}

static const char *str_of(const bson_t *doc, const char *key)
{
	bson_iter_t it;
	return bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : NULL;
}

static int64_t int_of(const bson_t *doc, const char *key)
{
	bson_iter_t it;
	return bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_NUMBER(&it) ? bson_iter_as_int64(&it) : 0;
}

/* One record from the JSON line DOC into J: 0 or -1 (message on stderr). */
static int write_one(struct jnl *j, const bson_t *doc, int lineno)
{
	struct clog_rec r;
	struct jnl_kvop op = { .db = JNL_KV_CONFLICTS };
	uint8_t key[2048];
	bson_t id, val;
	bson_iter_t it;
	const char *master, *corrupt = str_of(doc, "corrupt");
	int rc;

	memset(&r, 0, sizeof r);
	if (corrupt) {
		/* a well-formed key whose value is not a record */
		bson_t cid = BSON_INITIALIZER;
		BSON_APPEND_INT64(&cid, "_id", int_of(doc, "k"));
		r.late.wall = int_of(doc, "k");
		op.key = key;
		op.klen = clog_key(corrupt, &cid, &r.late, key, sizeof key);
		op.val = "not bson";
		op.vlen = 8;
		bson_destroy(&cid);
		rc = jnl_kv_write(j, &op, 1);
		if (rc)
			fprintf(stderr, "line %d: %s\n", lineno, mmm_strerror(rc));
		return rc ? -1 : 0;
	}
	r.ns = str_of(doc, "ns");
	r.how = str_of(doc, "how");
	r.result = str_of(doc, "result");
	r.at = int_of(doc, "at");
	master = str_of(doc, "master");
	if (!r.ns || !r.how || !r.result || !master || uuid_parse(master, r.master) ||
	    stamp_of(doc, "late", &r.late) || stamp_of(doc, "newer", &r.newer) ||
	    (strcmp(r.how, "degraded") != 0 && stamp_of(doc, "base", &r.base)) ||
	    !bson_iter_init_find(&it, doc, "id") || !BSON_ITER_HOLDS_DOCUMENT(&it)) {
		fprintf(stderr, "line %d: not a record\n", lineno);
		return -1;
	}
	{
		uint32_t len;
		const uint8_t *data;
		bson_iter_document(&it, &len, &data);
		bson_init_static(&id, data, len);
	}
	r.id = &id;
	op.key = key;
	if ((op.klen = clog_key(r.ns, &id, &r.late, key, sizeof key)) == 0) {
		fprintf(stderr, "line %d: key too long\n", lineno);
		return -1;
	}
	clog_value(&r, &val);
	op.val = bson_get_data(&val);
	op.vlen = val.len;
	rc = jnl_kv_write(j, &op, 1);
	bson_destroy(&val);
	if (rc)
		fprintf(stderr, "line %d: %s\n", lineno, mmm_strerror(rc));
	return rc ? -1 : 0;
}

static int writer(const char *jdir)
{
	struct jnl *j;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc, lineno = 0, ret = 0;

	if ((rc = jnl_open(jdir, 0, &j)) != 0) {
		fprintf(stderr, "unable to open journal '%s': %s\n", jdir, mmm_strerror(rc));
		return 1;
	}
	while (ret == 0 && (n = getline(&line, &cap, stdin)) > 0) {
		bson_error_t err;
		bson_t *doc;
		lineno++;
		if (n == 1)
			continue;
		if ((doc = bson_new_from_json((const uint8_t *)line, n, &err)) == NULL) {
			fprintf(stderr, "line %d: %s\n", lineno, err.message);
			ret = 1;
			break;
		}
		if (write_one(j, doc, lineno))
			ret = 1;
		bson_destroy(doc);
	}
	free(line);
	jnl_close(j);
	return ret;
}

/* ---- the tests -------------------------------------------------------- */

static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	/* xorshift64*: reproducible without libc's rand() */
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return rnd_state * 0x2545f4914f6cdd1dull;
}

/* A random stamp from small pools, so that ties on each field are common. */
static void rnd_stamp(struct stamp *s)
{
	static const int64_t walls[] = { INT64_MIN, -1000, -1, 0, 1, 999, 1000,
	    1764403200123, 1764403200124, INT64_MAX };
	memset(s, 0, sizeof *s);
	s->wall = rnd() % 3 ? walls[rnd() % 10] : (int64_t)rnd();
	memcpy(s->origin, rnd() % 2 ? U1 : U2, 16);
	if (rnd() % 4 == 0)
		s->origin[rnd() % 16] ^= (uint8_t)(1u << rnd() % 8);
	s->ts = rnd() % 2 ? JNL_TS(1764403200 + rnd() % 3, rnd() % 3) : rnd();
	s->k = rnd() % 2 ? (uint32_t)(rnd() % 3) : (uint32_t)rnd();
}

static int sign(int x)
{
	return (x > 0) - (x < 0);
}

static void test_order(void)
{
	int bad_order = 0, bad_trip = 0, bad_bson = 0;

	for (int i = 0; i < 20000; i++) {
		struct stamp a, b, a2, a3;
		uint8_t ea[STAMP_LEN], eb[STAMP_LEN];
		bson_t doc = BSON_INITIALIZER;
		bson_iter_t it;

		rnd_stamp(&a);
		if (rnd() % 5 == 0) {
			b = a;   /* near misses: one field apart */
			switch (rnd() % 4) {
			case 0: b.wall += b.wall == INT64_MAX ? -1 : 1; break;
			case 1: b.origin[15]++; break;
			case 2: b.ts--; break;
			default: b.k++; break;
			}
		} else {
			rnd_stamp(&b);
		}
		stamp_encode(&a, ea);
		stamp_encode(&b, eb);
		if (sign(memcmp(ea, eb, STAMP_LEN)) != sign(stamp_cmp(&a, &b)))
			bad_order++;
		stamp_decode(ea, &a2);
		if (stamp_cmp(&a, &a2) != 0)
			bad_trip++;
		stamp_append(&doc, "s", &a);
		if (!bson_iter_init_find(&it, &doc, "s") || stamp_from_iter(&it, &a3) || stamp_cmp(&a, &a3) != 0)
			bad_bson++;
		bson_destroy(&doc);
	}
	CHECK_INT(bad_order, 0);
	CHECK_INT(bad_trip, 0);
	CHECK_INT(bad_bson, 0);

	/* the documented field order: wall first, then origin, ts, k */
	struct stamp x = { .wall = 5, .ts = 9, .k = 9 }, y = { .wall = 6 };
	memcpy(x.origin, U1, 16);
	memcpy(y.origin, U2, 16);
	CHECK(stamp_cmp(&x, &y) < 0);
	y.wall = 5;
	CHECK(stamp_cmp(&x, &y) > 0);   /* U1 > U2 bytewise */
	CHECK(stamp_is_zero(&(struct stamp){ 0 }));
	CHECK(!stamp_is_zero(&x));
	/* a negative wall orders before zero, also encoded */
	uint8_t e1[STAMP_LEN], e2[STAMP_LEN];
	x.wall = -1;
	y.wall = 0;
	stamp_encode(&x, e1);
	stamp_encode(&y, e2);
	CHECK(memcmp(e1, e2, STAMP_LEN) < 0);
}

static void test_bad_stamp(void)
{
	bson_t doc = BSON_INITIALIZER, sub;
	bson_iter_t it;
	struct stamp s;

	BSON_APPEND_INT32(&doc, "n", 1);
	BSON_APPEND_DOCUMENT_BEGIN(&doc, "s", &sub);
	BSON_APPEND_BINARY(&sub, "origin", BSON_SUBTYPE_UUID, U1, 8);
	bson_append_document_end(&doc, &sub);
	CHECK(bson_iter_init_find(&it, &doc, "n") && stamp_from_iter(&it, &s) == MMM_EBSON);
	CHECK(bson_iter_init_find(&it, &doc, "s") && stamp_from_iter(&it, &s) == MMM_EBSON);
	bson_destroy(&doc);
}

static void test_key(void)
{
	bson_t *id = BCON_NEW("_id", BCON_INT32(5));
	struct stamp late = { .wall = 1764403200123, .ts = JNL_TS(1764403200, 3), .k = 1 }, back;
	uint8_t buf[256], small[16];
	size_t n;

	memcpy(late.origin, U1, 16);
	n = clog_key("test.docs", id, &late, buf, sizeof buf);
	CHECK_INT(n, 10 + id->len + STAMP_LEN);
	CHECK(memcmp(buf, "test.docs\0", 10) == 0);
	CHECK(memcmp(buf + 10, bson_get_data(id), id->len) == 0);
	stamp_decode(buf + 10 + id->len, &back);
	CHECK(stamp_cmp(&late, &back) == 0);
	CHECK_INT(clog_key("test.docs", id, &late, small, sizeof small), 0);
	CHECK_INT(clog_key("test.docs", id, &late, buf, n), n);
	CHECK_INT(clog_key("test.docs", id, &late, buf, n - 1), 0);

	/* keys of one document sort by late stamp */
	struct stamp later = late;
	uint8_t buf2[256];
	later.wall++;
	CHECK_INT(clog_key("test.docs", id, &later, buf2, sizeof buf2), n);
	CHECK(memcmp(buf, buf2, n) < 0);
	bson_destroy(id);
}

/* Checks the value of R: every field, base only when not degraded. */
static void check_value(const struct clog_rec *r)
{
	bson_t v;
	bson_iter_t it;
	struct stamp s;
	const char *want[] = { "ns", "id", "master", "late", "newer", "how", "base", "result", "at" };
	size_t i = 0;
	int degraded = strcmp(r->how, "degraded") == 0;

	clog_value(r, &v);
	CHECK(bson_iter_init(&it, &v));
	while (bson_iter_next(&it)) {
		if (degraded && i < 9 && strcmp(want[i], "base") == 0)
			i++;
		CHECK_MSG(i < 9 && strcmp(bson_iter_key(&it), want[i]) == 0, "field %zu is '%s'", i,
		    bson_iter_key(&it));
		i++;
	}
	CHECK_INT(i, 9);
	CHECK(bson_iter_init_find(&it, &v, "ns") && strcmp(bson_iter_utf8(&it, NULL), r->ns) == 0);
	CHECK(bson_iter_init_find(&it, &v, "id") && BSON_ITER_HOLDS_DOCUMENT(&it));
	{
		uint32_t len;
		const uint8_t *data;
		bson_iter_document(&it, &len, &data);
		CHECK(len == r->id->len && memcmp(data, bson_get_data(r->id), len) == 0);
	}
	CHECK(bson_iter_init_find(&it, &v, "master") && BSON_ITER_HOLDS_BINARY(&it));
	{
		bson_subtype_t st;
		uint32_t len;
		const uint8_t *data;
		bson_iter_binary(&it, &st, &len, &data);
		CHECK(st == BSON_SUBTYPE_UUID && len == 16 && memcmp(data, r->master, 16) == 0);
	}
	CHECK(bson_iter_init_find(&it, &v, "late") && stamp_from_iter(&it, &s) == 0 && stamp_cmp(&s, &r->late) == 0);
	CHECK(bson_iter_init_find(&it, &v, "newer") && stamp_from_iter(&it, &s) == 0 && stamp_cmp(&s, &r->newer) == 0);
	if (!degraded)
		CHECK(bson_iter_init_find(&it, &v, "base") && stamp_from_iter(&it, &s) == 0 &&
		    stamp_cmp(&s, &r->base) == 0);
	CHECK(bson_iter_init_find(&it, &v, "how") && strcmp(bson_iter_utf8(&it, NULL), r->how) == 0);
	CHECK(bson_iter_init_find(&it, &v, "result") && strcmp(bson_iter_utf8(&it, NULL), r->result) == 0);
	CHECK(bson_iter_init_find(&it, &v, "at") && BSON_ITER_HOLDS_DATE_TIME(&it) &&
	    bson_iter_date_time(&it) == r->at);
	CHECK(bson_iter_init_find(&it, &v, "late") && bson_iter_recurse(&it, &it) &&
	    bson_iter_find(&it, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it));
	bson_destroy(&v);
}

static void test_value(void)
{
	bson_t *id = BCON_NEW("_id", BCON_UTF8("doc-1"));
	struct clog_rec r = { .ns = "test.docs", .id = id, .how = "insert", .result = "replaced",
	    .at = 1764403201000 };

	memcpy(r.master, U2, 16);
	r.late = (struct stamp){ .wall = 1764403200123, .ts = JNL_TS(1764403200, 3) };
	memcpy(r.late.origin, U1, 16);
	r.newer = (struct stamp){ .wall = 1764403200456, .ts = JNL_TS(1764403200, 7), .k = 2 };
	memcpy(r.newer.origin, U2, 16);
	r.base = (struct stamp){ .wall = 1764403100000, .ts = JNL_TS(1764403100, 1) };
	memcpy(r.base.origin, U2, 16);
	check_value(&r);
	r.how = "degraded";
	r.result = "deleted";
	check_value(&r);
	bson_destroy(id);
}

struct walked {
	int64_t walls[8];
	int n;
};

static int walk_fn(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct walked *w = arg;
	struct stamp s;
	(void)val;
	(void)vlen;
	if (klen < STAMP_LEN || w->n >= 8)
		return -1;
	stamp_decode((const uint8_t *)key + klen - STAMP_LEN, &s);
	w->walls[w->n++] = s.wall;
	return 0;
}

/* Records through the conflicts table: written, walked in key order, read. */
static void test_table(const char *dir)
{
	struct jnl *j;
	bson_t *id = BCON_NEW("_id", BCON_INT32(1));
	struct stamp s = { .wall = 100 };
	uint8_t k[3][128], got[128];
	struct jnl_kvop ops[3];
	size_t vlen = 0;
	int rc;

	CHECK_INT(jnl_open(dir, JNL_CREATE, &j), 0);
	if (!j)
		return;
	memcpy(s.origin, U1, 16);
	for (int i = 0; i < 3; i++) {
		s.wall = 300 - 100 * i;
		ops[i] = (struct jnl_kvop){ JNL_KV_CONFLICTS, k[i], clog_key("a.b", id, &s, k[i], sizeof k[i]),
		    "v", 1 };
	}
	CHECK_INT(jnl_kv_write(j, ops, 3), 0);
	struct walked w = { .n = 0 };
	CHECK_INT(jnl_kv_walk(j, JNL_KV_CONFLICTS, "a.b", 4, walk_fn, &w), 0);
	CHECK(w.n == 3 && w.walls[0] == 100 && w.walls[1] == 200 && w.walls[2] == 300);
	w.n = 0;
	CHECK_INT(jnl_kv_walk(j, JNL_KV_CONFLICTS, "a.c", 4, walk_fn, &w), 0);
	CHECK_INT(w.n, 0);
	CHECK_INT(jnl_kv_get(j, JNL_KV_CONFLICTS, k[1], ops[1].klen, got, sizeof got, &vlen), 0);
	CHECK_INT(vlen, 1);
	rc = jnl_kv_get(j, JNL_KV_DOCSTAMP, k[1], ops[1].klen, got, sizeof got, &vlen);
	CHECK_INT(rc, MMM_ENOTFOUND);
	jnl_close(j);
	bson_destroy(id);
}

int main(int argc, char **argv)
{
	char base[] = "/tmp/mmm-test-clog-XXXXXX", dir[600], cmd[700];

	if (argc == 3 && strcmp(argv[1], "write") == 0)
		return writer(argv[2]);
	if (argc != 1) {
		fputs("usage: test_clog [write JDIR < records.jsonl]\n", stderr);
		return 2;
	}
	test_order();
	test_bad_stamp();
	test_key();
	test_value();
	if (mkdtemp(base) == NULL)
		return 1;
	snprintf(dir, sizeof dir, "%s/j", base);
	test_table(dir);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
	if (system(cmd) != 0)
		return 1;
	return check_done();
}
