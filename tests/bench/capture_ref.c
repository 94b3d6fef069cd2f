/*
 * capture_ref — the reference loop of bench_capture.py: tails
 * `local.oplog.rs` of URI with a tailable awaitData cursor, the way
 * mmm-capture does (same libmongoc calls, same options), and discards every
 * entry until it has seen one whose ts is >= UNTIL (SECONDS:INC).  Prints
 * "entries N seconds S" on stdout.
 *
 *   capture_ref URI FROM_SEC:FROM_INC UNTIL_SEC:UNTIL_INC
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <mongoc/mongoc.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_ts(const char *s, uint32_t *sec, uint32_t *inc)
{
	unsigned long a, b;
	if (sscanf(s, "%lu:%lu", &a, &b) != 2)
		return -1;
	*sec = (uint32_t)a;
	*inc = (uint32_t)b;
	return 0;
}

int main(int argc, char **argv)
{
	uint32_t fs, fi, us, ui;
	mongoc_client_t *c;
	mongoc_collection_t *coll;
	mongoc_cursor_t *cur;
	bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, range;
	const bson_t *doc;
	bson_error_t err;
	uint64_t n = 0, until;
	double t0;
	int done = 0;

	if (argc != 4 || parse_ts(argv[2], &fs, &fi) || parse_ts(argv[3], &us, &ui)) {
		fprintf(stderr, "usage: capture_ref URI FROM_SEC:INC UNTIL_SEC:INC\n");
		return 2;
	}
	until = (uint64_t)us << 32 | ui;
	mongoc_init();
	c = mongoc_client_new(argv[1]);
	if (c == NULL) {
		fprintf(stderr, "capture_ref: bad uri\n");
		return 2;
	}
	mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
	t0 = now_s();
	BSON_APPEND_DOCUMENT_BEGIN(&filter, "ts", &range);
	BSON_APPEND_TIMESTAMP(&range, "$gte", fs, fi);
	bson_append_document_end(&filter, &range);
	BSON_APPEND_BOOL(&opts, "tailable", true);
	BSON_APPEND_BOOL(&opts, "awaitData", true);
	BSON_APPEND_INT64(&opts, "maxAwaitTimeMS", 50);
	coll = mongoc_client_get_collection(c, "local", "oplog.rs");
	cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
	while (!done) {
		if (mongoc_cursor_next(cur, &doc)) {
			bson_iter_t it;
			uint32_t s = 0, i = 0;
			n++;
			if (bson_iter_init_find(&it, doc, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
				bson_iter_timestamp(&it, &s, &i);
				if (((uint64_t)s << 32 | i) >= until)
					done = 1;
			}
		} else if (mongoc_cursor_error(cur, &err)) {
			fprintf(stderr, "capture_ref: %s\n", err.message);
			return 1;
		}
	}
	printf("entries %llu seconds %.3f\n", (unsigned long long)n, now_s() - t0);
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(coll);
	mongoc_client_destroy(c);
	bson_destroy(&filter);
	bson_destroy(&opts);
	mongoc_cleanup();
	return 0;
}
