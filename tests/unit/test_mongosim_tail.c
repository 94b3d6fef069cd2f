/*
 * test_mongosim_tail.c — issue 3, acceptance 2: a libmongoc tailable
 * awaitData cursor on local.oplog.rs follows another client's writes; every
 * write appears as exactly one entry of the expected shape, for every update
 * operator, under --oplog-format v2 and v1; a waiting getMore returns within
 * 50 ms of a write.  Expected $v:2 forms follow the server's
 * jstests/replsets/oplog_format.js and update/push_node.cpp (append-only
 * $push logs u<N>; array-rewriting operators log the whole array).
 */
#include "../check.h"
#include "support.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct step {
	const char *update;      /* relaxed JSON; NULL = replacement/delete/insert below */
	const char *v2, *v1;     /* expected `o` (JSON); "*" = check keys only */
};

static const struct step steps[] = {
	{ "{\"$set\": {\"a\": 2}}", "{\"$v\": 2, \"diff\": {\"u\": {\"a\": 2}}}", "{\"$v\": 1, \"$set\": {\"a\": 2}}" },
	{ "{\"$unset\": {\"b\": \"\"}}", "{\"$v\": 2, \"diff\": {\"d\": {\"b\": false}}}", "{\"$v\": 1, \"$unset\": {\"b\": true}}" },
	{ "{\"$inc\": {\"n\": 1}}", "{\"$v\": 2, \"diff\": {\"u\": {\"n\": 6}}}", "{\"$v\": 1, \"$set\": {\"n\": 6}}" },
	{ "{\"$mul\": {\"n\": 2}}", "{\"$v\": 2, \"diff\": {\"u\": {\"n\": 12}}}", "{\"$v\": 1, \"$set\": {\"n\": 12}}" },
	{ "{\"$min\": {\"n\": 3}}", "{\"$v\": 2, \"diff\": {\"u\": {\"n\": 3}}}", "{\"$v\": 1, \"$set\": {\"n\": 3}}" },
	{ "{\"$max\": {\"n\": 10}}", "{\"$v\": 2, \"diff\": {\"u\": {\"n\": 10}}}", "{\"$v\": 1, \"$set\": {\"n\": 10}}" },
	{ "{\"$rename\": {\"a\": \"c\"}}", "{\"$v\": 2, \"diff\": {\"d\": {\"a\": false}, \"i\": {\"c\": 2}}}",
	  "{\"$v\": 1, \"$set\": {\"c\": 2}, \"$unset\": {\"a\": true}}" },
	{ "{\"$push\": {\"arr\": 4}}", "{\"$v\": 2, \"diff\": {\"sarr\": {\"a\": true, \"u3\": 4}}}", "{\"$v\": 1, \"$set\": {\"arr.3\": 4}}" },
	{ "{\"$push\": {\"arr\": {\"$each\": [5, 6], \"$slice\": -4}}}", "{\"$v\": 2, \"diff\": {\"u\": {\"arr\": [3, 4, 5, 6]}}}",
	  "{\"$v\": 1, \"$set\": {\"arr\": [3, 4, 5, 6]}}" },
	{ "{\"$push\": {\"arr\": {\"$each\": [0], \"$position\": 0}}}", "{\"$v\": 2, \"diff\": {\"u\": {\"arr\": [0, 3, 4, 5, 6]}}}",
	  "{\"$v\": 1, \"$set\": {\"arr\": [0, 3, 4, 5, 6]}}" },
	{ "{\"$pull\": {\"arr\": {\"$gte\": 5}}}", "{\"$v\": 2, \"diff\": {\"u\": {\"arr\": [0, 3, 4]}}}", "{\"$v\": 1, \"$set\": {\"arr\": [0, 3, 4]}}" },
	{ "{\"$pullAll\": {\"arr\": [0]}}", "{\"$v\": 2, \"diff\": {\"u\": {\"arr\": [3, 4]}}}", "{\"$v\": 1, \"$set\": {\"arr\": [3, 4]}}" },
	{ "{\"$addToSet\": {\"arr\": 7}}", "{\"$v\": 2, \"diff\": {\"u\": {\"arr\": [3, 4, 7]}}}", "{\"$v\": 1, \"$set\": {\"arr\": [3, 4, 7]}}" },
	{ "{\"$pop\": {\"arr\": 1}}", "{\"$v\": 2, \"diff\": {\"u\": {\"arr\": [3, 4]}}}", "{\"$v\": 1, \"$set\": {\"arr\": [3, 4]}}" },
	{ "{\"$set\": {\"sub.x\": 5}}", "{\"$v\": 2, \"diff\": {\"ssub\": {\"u\": {\"x\": 5}}}}", "{\"$v\": 1, \"$set\": {\"sub.x\": 5}}" },
	{ "{\"$inc\": {\"arr.0\": 1}}", "{\"$v\": 2, \"diff\": {\"sarr\": {\"a\": true, \"u0\": 4}}}", "{\"$v\": 1, \"$set\": {\"arr.0\": 4}}" },
	{ "{\"$currentDate\": {\"d\": true}}", "*i", "*$set" },
};
#define NSTEPS (sizeof steps / sizeof steps[0])

struct writer {
	const char *uri;
	int64_t t_start;
	volatile int phase;
};

static bool write_json(mongoc_collection_t *c, const char *upd)
{
	bson_error_t e;
	bson_t *sel = BCON_NEW("_id", BCON_INT32(1));
	bson_t *u = bson_new_from_json((const uint8_t *)upd, -1, &e);
	bool ok = u && mongoc_collection_update_one(c, sel, u, NULL, NULL, &e);
	if (!ok) fprintf(stderr, "update %s failed: %s\n", upd, e.message);
	bson_destroy(sel);
	if (u) bson_destroy(u);
	return ok;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	mongoc_client_t *cl = mongoc_client_new(w->uri);
	mongoc_client_set_error_api(cl, MONGOC_ERROR_API_VERSION_2);
	mongoc_collection_t *c = mongoc_client_get_collection(cl, "tail", "c");
	bson_error_t e;
	bson_t *doc = bson_new_from_json((const uint8_t *)"{\"_id\": 1, \"a\": 1, \"b\": \"x\", \"arr\": [1, 2, 3], \"sub\": {\"x\": 1, \"y\": 2}, \"n\": 5}", -1, &e);
	if (!mongoc_collection_insert_one(c, doc, NULL, NULL, &e)) fprintf(stderr, "insert failed: %s\n", e.message);
	bson_destroy(doc);
	for (size_t i = 0; i < NSTEPS; i++) write_json(c, steps[i].update);
	bson_t *rep = BCON_NEW("_id", BCON_INT32(1), "r", BCON_INT32(1));
	bson_t *sel = BCON_NEW("_id", BCON_INT32(1));
	if (!mongoc_collection_replace_one(c, sel, rep, NULL, NULL, &e)) fprintf(stderr, "replace failed: %s\n", e.message);
	if (!mongoc_collection_delete_one(c, sel, NULL, NULL, &e)) fprintf(stderr, "delete failed: %s\n", e.message);
	bson_destroy(rep);
	bson_destroy(sel);
	mongoc_collection_destroy(c);
	mongoc_client_destroy(cl);
	return NULL;
}

/* expected `o` matches the entry's (byte-exact through canonical JSON) */
static void check_o(const bson_t *entry, const char *want, const char *label)
{
	bson_iter_t it;
	bson_t o;
	const uint8_t *d; uint32_t l;
	if (!bson_iter_init_find(&it, entry, "o") || !BSON_ITER_HOLDS_DOCUMENT(&it)) { CHECK_MSG(0, "%s: no o", label); return; }
	bson_iter_document(&it, &l, &d);
	bson_init_static(&o, d, l);
	char *got = bson_as_relaxed_extended_json(&o, NULL);
	if (want[0] == '*') {
		/* a date: check the section holding it */
		CHECK_MSG(strstr(got, want + 1) != NULL && strstr(got, "$date"), "%s: %s lacks %s", label, got, want + 1);
	} else {
		bson_error_t e;
		bson_t *w = bson_new_from_json((const uint8_t *)want, -1, &e);
		char *ws = w ? bson_as_relaxed_extended_json(w, NULL) : NULL;
		CHECK_MSG(ws && !strcmp(ws, got), "%s: got %s want %s", label, got, ws ? ws : want);
		bson_free(ws);
		if (w) bson_destroy(w);
	}
	bson_free(got);
}

static const char *str_field(const bson_t *b, const char *k)
{
	bson_iter_t it;
	return bson_iter_init_find(&it, b, k) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : "";
}

/* checks the fields and their types of a CRUD entry */
static void check_shape(const bson_t *e, const char *label)
{
	static const char *plain[] = { "op", "ns", "ui", "o", "o2", "ts", "t", "v", "wall", NULL };
	static const char *retry[] = { "lsid", "txnNumber", "op", "ns", "ui", "o", "o2", "ts", "t", "v", "wall", "stmtId", "prevOpTime", NULL };
	bool is_retry = bson_has_field(e, "lsid");
	const char *const *want = is_retry ? retry : plain;
	bool has_o2 = bson_has_field(e, "o2");
	bson_iter_t it;
	bson_iter_init(&it, e);
	int k = 0;
	bool ok = true;
	while (bson_iter_next(&it)) {
		while (want[k] && !strcmp(want[k], "o2") && !has_o2) k++;
		if (!want[k] || strcmp(want[k], bson_iter_key(&it))) { ok = false; break; }
		const char *key = bson_iter_key(&it);
		if (!strcmp(key, "ui")) {
			bson_subtype_t st; uint32_t l; const uint8_t *d;
			ok &= BSON_ITER_HOLDS_BINARY(&it);
			if (ok) { bson_iter_binary(&it, &st, &l, &d); ok &= st == BSON_SUBTYPE_UUID && l == 16; }
		}
		if (!strcmp(key, "t") || !strcmp(key, "v") || !strcmp(key, "txnNumber")) ok &= BSON_ITER_HOLDS_INT64(&it);
		if (!strcmp(key, "ts")) ok &= BSON_ITER_HOLDS_TIMESTAMP(&it);
		if (!strcmp(key, "wall")) ok &= BSON_ITER_HOLDS_DATE_TIME(&it);
		if (!strcmp(key, "stmtId")) ok &= BSON_ITER_HOLDS_INT32(&it);
		k++;
	}
	while (want[k] && !strcmp(want[k], "o2") && !has_o2) k++;
	ok &= want[k] == NULL;
	char *j = bson_as_relaxed_extended_json(e, NULL);
	CHECK_MSG(ok, "%s: bad field order/types: %s", label, j);
	bson_free(j);
}

struct lat { int64_t t_write; mongoc_collection_t *c; };

/* after 100 ms (the tailer's getMore is then waiting in the server) inserts one document */
static void *lat_writer(void *a)
{
	struct lat *p = a;
	struct timespec ps = { 0, 100 * 1000000L };
	nanosleep(&ps, NULL);
	bson_t *doc = BCON_NEW("x", BCON_INT32(1));
	bson_error_t er;
	__atomic_store_n(&p->t_write, support_now_ms(), __ATOMIC_SEQ_CST);
	mongoc_collection_insert_one(p->c, doc, NULL, NULL, &er);
	bson_destroy(doc);
	return NULL;
}

static mongoc_cursor_t *tail(mongoc_client_t *cl, uint64_t after, int await_ms)
{
	mongoc_collection_t *op = mongoc_client_get_collection(cl, "local", "oplog.rs");
	bson_t *filter = BCON_NEW("ts", "{", "$gt", BCON_TIMESTAMP((uint32_t)(after >> 32), (uint32_t)after), "}");
	bson_t *opts = BCON_NEW("tailable", BCON_BOOL(true), "awaitData", BCON_BOOL(true), "maxAwaitTimeMS", BCON_INT64(await_ms));
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(op, filter, opts, NULL);
	bson_destroy(filter);
	bson_destroy(opts);
	mongoc_collection_destroy(op);
	return cur;
}

static void run_format(const char *fmt)
{
	const char *args[] = { "--oplog-format", fmt, NULL };
	struct support_sim s;
	if (support_sim_start(&s, args)) { CHECK(0); return; }
	bool v1 = !strcmp(fmt, "v1");
	mongoc_client_t *cl = support_sim_client(&s);
	uint64_t start = support_sim_last_ts(cl);
	CHECK(start != 0);
	mongoc_cursor_t *cur = tail(cl, start, 300);
	struct writer w = { s.uri, 0, 0 };
	pthread_t th;
	pthread_create(&th, NULL, writer_main, &w);
	/* create, insert, NSTEPS updates, replacement, delete */
	size_t want = 2 + NSTEPS + 2, got = 0;
	bson_t **ents = calloc(want + 8, sizeof *ents);
	int64_t deadline = support_now_ms() + 20000;
	const bson_t *d;
	bson_error_t e;
	while (got < want + 8 && support_now_ms() < deadline) {
		if (mongoc_cursor_next(cur, &d)) {
			ents[got++] = bson_copy(d);
			if (got == want) {
				/* a further entry would be a duplicate: give it a moment to show up */
				deadline = support_now_ms() + 300;
			}
			continue;
		}
		if (mongoc_cursor_error(cur, &e)) { CHECK_MSG(0, "tail error: %s", e.message); break; }
		if (got >= want) break;
	}
	pthread_join(th, NULL);
	CHECK_MSG(got == want, "%s: %zu entries for %zu writes", fmt, got, want);
	if (got >= want) {
		CHECK_STR(str_field(ents[0], "op"), "c");
		CHECK_STR(str_field(ents[1], "op"), "i");
		check_shape(ents[1], "insert");
		for (size_t i = 0; i < NSTEPS; i++) {
			const bson_t *en = ents[2 + i];
			char label[256];
			snprintf(label, sizeof label, "%s %s", fmt, steps[i].update);
			CHECK_MSG(!strcmp(str_field(en, "op"), "u"), "%s: op %s", label, str_field(en, "op"));
			check_shape(en, label);
			check_o(en, v1 ? steps[i].v1 : steps[i].v2, label);
		}
		const bson_t *rep = ents[2 + NSTEPS], *del = ents[3 + NSTEPS];
		CHECK_STR(str_field(rep, "op"), "u");
		check_o(rep, "{\"_id\": 1, \"r\": 1}", "replacement");
		CHECK_STR(str_field(del, "op"), "d");
		check_o(del, "{\"_id\": 1}", "delete");
		check_shape(del, "delete");
	}
	for (size_t i = 0; i < got; i++) bson_destroy(ents[i]);
	free(ents);
	mongoc_cursor_destroy(cur);

	/* latency: a getMore waiting in the server returns promptly after a write */
	int64_t worst = 0, lats[7];
	int nl = 0;
	mongoc_client_t *wc = support_sim_client(&s);
	mongoc_collection_t *wcoll = mongoc_client_get_collection(wc, "tail", "lat");
	for (int round = 0; round < 7; round++) {
		uint64_t now_ts = support_sim_last_ts(cl);
		cur = tail(cl, now_ts, 5000);
		/* the find's batch is empty; libmongoc then blocks in getMore,
		 * where the write 100 ms later finds it */
		struct lat L = { 0, wcoll };
		pthread_t lt;
		pthread_create(&lt, NULL, lat_writer, &L);
		bool ok = false;
		int64_t t_ret = 0;
		int64_t until = support_now_ms() + 10000;
		while (!ok && support_now_ms() < until) {
			ok = mongoc_cursor_next(cur, &d);
			t_ret = support_now_ms();
			if (!ok && mongoc_cursor_error(cur, &e)) break;
		}
		pthread_join(lt, NULL);
		CHECK_MSG(ok, "round %d: no entry", round);
		int64_t lat = t_ret - __atomic_load_n(&L.t_write, __ATOMIC_SEQ_CST);
		if (lat > worst) worst = lat;
		if (ok) lats[nl++] = lat;
		mongoc_cursor_destroy(cur);
	}
	/* the median guards against a loaded CI machine descheduling the test */
	for (int i = 0; i < nl; i++)
		for (int j = i + 1; j < nl; j++)
			if (lats[j] < lats[i]) { int64_t t = lats[i]; lats[i] = lats[j]; lats[j] = t; }
	int64_t median = nl ? lats[nl / 2] : 9999;
	printf("%s: awaitData latency median %lld ms, worst %lld ms over %d writes\n", fmt, (long long)median,
	       (long long)worst, nl);
	CHECK_MSG(median < 50, "getMore returned %lld ms (median) after the write", (long long)median);
	mongoc_collection_destroy(wcoll);
	mongoc_client_destroy(wc);
	mongoc_client_destroy(cl);
	CHECK_INT(support_sim_stop(&s), 0);
}

int main(void)
{
	mongoc_init();
	run_format("v2");
	run_format("v1");
	mongoc_cleanup();
	return check_done();
}
