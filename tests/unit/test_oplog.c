/* test_oplog.c — journal/oplog.c: markers, DDL descriptions and targets. */
#include <string.h>
#include "../check.h"
#include "config.h"
#include "oplog.h"

static bson_t *cmd_entry(const char *ns, const char *json_o)
{
	bson_error_t err;
	bson_t *o = bson_new_from_json((const uint8_t *)json_o, -1, &err), *e = bson_new();
	BSON_APPEND_UTF8(e, "op", "c");
	BSON_APPEND_UTF8(e, "ns", ns);
	BSON_APPEND_DOCUMENT(e, "o", o);
	BSON_APPEND_TIMESTAMP(e, "ts", 1, 1);
	bson_destroy(o);
	return e;
}

int main(void)
{
	uint8_t a[16], b[16], got[16];
	char id[128], buf[512];
	const char *worker;

	uuid_parse("2c88ae84-7cb9-40f7-835d-c05e981f564d", a);
	uuid_parse("0d9c284b-b47c-40b5-932c-547b8685edd0", b);
	oplog_marker_id(a, b, "w3", id, sizeof id);
	CHECK_STR(id, "mmm:2c88ae84-7cb9-40f7-835d-c05e981f564d:0d9c284b-b47c-40b5-932c-547b8685edd0:w3");
	CHECK(oplog_marker_parse(id, got, &worker) == 1 && memcmp(got, a, 16) == 0 && strcmp(worker, "w3") == 0);
	CHECK(oplog_marker_parse("mmm:nope", got, NULL) == 0);
	CHECK(oplog_ns_excluded("mmm.checkpoints") && oplog_ns_excluded("local.oplog.rs") &&
	    oplog_ns_excluded("config.system.sessions") && !oplog_ns_excluded("config.cache") &&
	    !oplog_ns_excluded("test.mmm"));

	struct { const char *ns, *o, *desc; } d[] = {
		{ "test.$cmd", "{\"create\": \"foo\"}", "create test.foo" },
		{ "test.$cmd", "{\"startIndexBuild\": \"foo\", \"indexes\": []}", "startIndexBuild test.foo" },
		{ "test.$cmd", "{\"dropDatabase\": 1}", "dropDatabase test" },
		{ "test.$cmd", "{\"renameCollection\": \"test.a\", \"to\": \"test.b\"}", "renameCollection test.a" },
		{ "test.$cmd", "{\"applyOps\": []}", "" },
	};
	for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
		bson_t *e = cmd_entry(d[i].ns, d[i].o);
		CHECK_STR(oplog_ddl_desc(e, buf, sizeof buf), d[i].desc);
		bson_destroy(e);
	}

	/* what apply's DDL marker names, and what it covers */
	bson_t *c1 = BCON_NEW("createIndexes", "foo"), *c2 = BCON_NEW("dropDatabase", BCON_INT32(1)),
	       *c3 = BCON_NEW("renameCollection", "test.a", "to", "test.b");
	CHECK_STR(oplog_cmd_target("test", c1, buf, sizeof buf), "test.foo");
	CHECK_STR(oplog_cmd_target("test", c2, buf, sizeof buf), "test");
	CHECK_STR(oplog_cmd_target("admin", c3, buf, sizeof buf), "test.a");
	bson_t *start = cmd_entry("test.$cmd", "{\"startIndexBuild\": \"foo\"}"),
	       *other = cmd_entry("test.$cmd", "{\"createIndexes\": \"bar\", \"key\": {\"x\": 1}}"),
	       *drop = cmd_entry("test.$cmd", "{\"drop\": \"foo\"}"),
	       *dropdb = cmd_entry("test.$cmd", "{\"dropDatabase\": 1}"),
	       *elsewhere = cmd_entry("test2.$cmd", "{\"drop\": \"foo\"}"),
	       *txn = cmd_entry("admin.$cmd", "{\"applyOps\": []}");
	CHECK(oplog_target_covers("test.foo", start));
	CHECK(!oplog_target_covers("test.foo", other));      /* a local command on another collection */
	CHECK(oplog_target_covers("test", drop) && oplog_target_covers("test", dropdb));
	CHECK(!oplog_target_covers("test", elsewhere) && !oplog_target_covers("test.foo", elsewhere));
	CHECK(!oplog_target_covers("test.foo", dropdb));
	CHECK(oplog_target_covers("", other));
	CHECK(!oplog_target_covers("", txn));
	bson_destroy(c1);
	bson_destroy(c2);
	bson_destroy(c3);
	bson_destroy(start);
	bson_destroy(other);
	bson_destroy(drop);
	bson_destroy(dropdb);
	bson_destroy(elsewhere);
	bson_destroy(txn);
	return check_done();
}
