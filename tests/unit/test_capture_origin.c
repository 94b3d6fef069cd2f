/* test_capture_origin.c — reads back the origin annotations capture stores.
 *
 * `mmm-journal dump` does not show an entry's origin, so the capture
 * integration test (tests/integration/test_capture_mirror.py) calls this
 * binary as a helper:
 *
 *   test_capture_origin --origins DIR SOURCE   prints "SEC:INC ORIGIN-UUID" per entry
 *
 * Without arguments it checks that helper on a scratch journal: entries
 * appended with and without an origin read back with the right one. */
#include <stdlib.h>
#include <unistd.h>
#include "../check.h"
#include "config.h"
#include "journal.h"

static int print_origins(const char *dir, const char *source, FILE *out)
{
	struct jnl *j;
	struct jnl_source s;
	struct jnl_reader *r;
	struct jnl_entry e;
	int rc;

	if ((rc = jnl_open(dir, JNL_RDONLY, &j)) != 0) {
		fprintf(stderr, "test_capture_origin: cannot open journal '%s' (%d)\n", dir, rc);
		return 1;
	}
	if (jnl_source_find(j, source, &s) != 0 || jnl_reader_open(j, s.uuid, 0, &r) != 0) {
		fprintf(stderr, "test_capture_origin: no source '%s' in '%s'\n", source, dir);
		jnl_close(j);
		return 1;
	}
	while ((rc = jnl_reader_next(r, &e)) == 0) {
		char u[37];
		uuid_format(e.origin, u);
		fprintf(out, "%u:%u %s\n", JNL_TS_SEC(e.ts), JNL_TS_INC(e.ts), u);
	}
	jnl_reader_free(r);
	jnl_close(j);
	return 0;
}

static bson_t *entry(uint32_t sec, uint32_t inc)
{
	bson_t *b = bson_new(), o;
	BSON_APPEND_UTF8(b, "op", "i");
	BSON_APPEND_UTF8(b, "ns", "test.foo");
	BSON_APPEND_DOCUMENT_BEGIN(b, "o", &o);
	BSON_APPEND_INT32(&o, "_id", (int32_t)inc);
	bson_append_document_end(b, &o);
	BSON_APPEND_TIMESTAMP(b, "ts", sec, inc);
	BSON_APPEND_INT64(b, "t", 1);
	BSON_APPEND_INT64(b, "v", 2);
	BSON_APPEND_DATE_TIME(b, "wall", (int64_t)sec * 1000);
	return b;
}

int main(int argc, char **argv)
{
	static const char *SRC = "2c88ae84-7cb9-40f7-835d-c05e981f564d";
	static const char *ORG = "0d9c284b-b47c-40b5-932c-547b8685edd0";
	char dir[] = "/tmp/mmm-test-origin-XXXXXX", path[256], cmd[300], line[256];
	uint8_t src[16], org[16];
	struct jnl *j;
	struct jnl_writer *w;
	FILE *f;
	int n = 0;

	if (argc == 4 && strcmp(argv[1], "--origins") == 0)
		return print_origins(argv[2], argv[3], stdout);
	if (argc != 1) {
		fprintf(stderr, "usage: test_capture_origin [--origins DIR SOURCE]\n");
		return 2;
	}
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof path, "%s/j", dir);
	uuid_parse(SRC, src);
	uuid_parse(ORG, org);
	CHECK_INT(jnl_open(path, JNL_CREATE, &j), 0);
	CHECK_INT(jnl_source_ensure(j, src, "server_a", NULL, JNL_LOCAL), 0);
	CHECK_INT(jnl_writer_new(j, src, &w), 0);
	for (uint32_t i = 1; i <= 6; i++) {
		bson_t *b = entry(1700000000, i);
		CHECK(jnl_writer_add(w, bson_get_data(b), b->len, i % 2 ? org : NULL) >= 0);
		bson_destroy(b);
	}
	CHECK_INT(jnl_writer_flush(w), 0);
	jnl_writer_free(w);
	jnl_close(j);
	snprintf(path, sizeof path, "%s/out", dir);
	f = fopen(path, "w+");
	CHECK(f != NULL);
	snprintf(path, sizeof path, "%s/j", dir);
	CHECK_INT(print_origins(path, "server_a", f), 0);
	rewind(f);
	while (fgets(line, sizeof line, f)) {
		char want[128];
		n++;
		snprintf(want, sizeof want, "1700000000:%d %s\n", n, n % 2 ? ORG : SRC);
		CHECK_STR(line, want);
	}
	CHECK_INT(n, 6);
	fclose(f);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	CHECK_INT(system(cmd), 0);
	return check_done();
}
