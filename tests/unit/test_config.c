/*
 * test_config.c — cfg_load() on every fixture in fixtures/config/: the valid
 * forms field by field, each error case with its exact message and position;
 * URI redaction; uuid_parse/uuid_format; the lookup functions.
 * Fixtures are found through MMM_FIXTURES (set by tests/run.sh), else ./fixtures.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../check.h"
#include "config.h"
#include "err.h"

#define FIXMAX (2 * PATH_MAX + 16)

static char fixdir[FIXMAX];

static const char *fix(const char *name)
{
	static char path[FIXMAX + 64];

	snprintf(path, sizeof path, "%s/%s", fixdir, name);
	return path;
}

static struct cfg *load_ok(const char *path)
{
	char err[512] = "";
	struct cfg *cfg = NULL;
	int rc = cfg_load(path, &cfg, err, sizeof err);

	CHECK_MSG(rc == 0 && cfg, "%s: rc %d: %s", path, rc, err);
	return rc == 0 ? cfg : NULL;
}

/* The seed file, exactly as the original MongoMultiMaster wrote it. */
static void test_seed(void)
{
	struct cfg *cfg = load_ok(fix("test.yml"));

	if (!cfg)
		return;
	CHECK_STR(cfg->path, fix("test.yml"));
	CHECK_INT(cfg->nservers, 2);
	CHECK_STR(cfg->servers[0].name, "server_a");
	CHECK_STR(cfg->servers[0].id, "2c88ae84-7cb9-40f7-835d-c05e981f564d");
	CHECK_INT(cfg->servers[0].uuid[0], 0x2c);
	CHECK_INT(cfg->servers[0].uuid[15], 0x4d);
	CHECK_STR(cfg->servers[0].uri, "mongodb://127.0.0.1:27019/?replicaSet=a");
	CHECK_STR(cfg->servers[0].uri_redacted, "mongodb://127.0.0.1:27019/?replicaSet=a");
	CHECK_INT(cfg->servers[0].line, 1);
	CHECK_STR(cfg->servers[1].name, "server_b");
	CHECK_STR(cfg->servers[1].id, "0d9c284b-b47c-40b5-932c-547b8685edd0");
	CHECK_STR(cfg->servers[1].uri, "mongodb://127.0.0.1:27017/?replicaSet=b");
	CHECK_INT(cfg->servers[1].line, 4);
	/* defaults: no journal, capture and apply every server, 4 workers */
	CHECK(cfg->journal_path == NULL);
	{
		char *jp = cfg_journal(cfg), want[sizeof fixdir + 16];
		size_t idx[4], n = 9;
		const char *names[] = { "server_b", "nope" };
		snprintf(want, sizeof want, "%s/mmm-journal", fixdir);
		CHECK_STR(jp ? jp : "", want);        /* beside the file, as the original's files have none */
		free(jp);
		CHECK_INT(cfg_pick(cfg, names, 1, cfg->capture, cfg->ncapture, idx, &n), 0);
		CHECK(n == 1 && idx[0] == 1);
		CHECK_INT(cfg_pick(cfg, NULL, 0, cfg->capture, cfg->ncapture, idx, &n), 0);
		CHECK(n == 2 && idx[0] == 0 && idx[1] == 1);
		CHECK_INT(cfg_pick(cfg, names, 2, cfg->capture, cfg->ncapture, idx, &n), 2);
	}
	CHECK_INT(cfg->ncapture, 2);
	CHECK_INT(cfg->napply, 2);
	if (cfg->ncapture == 2 && cfg->napply == 2) {
		CHECK_INT(cfg->capture[0], 0);
		CHECK_INT(cfg->capture[1], 1);
		CHECK_INT(cfg->apply[0], 0);
		CHECK_INT(cfg->apply[1], 1);
	}
	CHECK_INT(cfg->apply_workers, 4);
	cfg_free(cfg);
}

static void test_full(void)
{
	char want[FIXMAX + 64];
	struct cfg *cfg = load_ok(fix("full.yml"));

	if (!cfg)
		return;
	CHECK_INT(cfg->nservers, 3);
	CHECK_STR(cfg->servers[2].name, "server_c");
	CHECK_STR(cfg->servers[2].id, "a1b2c3d4-0000-4000-8000-00000000000c");
	CHECK_INT(cfg->servers[0].line, 2);
	CHECK_INT(cfg->servers[1].line, 5);
	CHECK_INT(cfg->servers[2].line, 8);
	/* "./mmm-journal" is relative to the file's directory */
	snprintf(want, sizeof want, "%s/mmm-journal", fixdir);
	CHECK_STR(cfg->journal_path, want);
	CHECK_INT(cfg->ncapture, 2);
	if (cfg->ncapture == 2) {
		CHECK_INT(cfg->capture[0], 1);   /* listed order, not file order */
		CHECK_INT(cfg->capture[1], 0);
	}
	CHECK_INT(cfg->napply, 1);
	if (cfg->napply == 1)
		CHECK_INT(cfg->apply[0], 2);
	CHECK_INT(cfg->apply_workers, 16);
	cfg_free(cfg);
}

static void test_flow(void)
{
	struct cfg *cfg = load_ok(fix("flow.yml"));

	if (!cfg)
		return;
	CHECK_INT(cfg->nservers, 2);
	CHECK_STR(cfg->servers[0].name, "prod");
	CHECK_STR(cfg->servers[0].id, "6ba7b810-9dad-11d1-80b4-00c04fd430c8");   /* lowercased */
	CHECK_STR(cfg->servers[0].uri, "mongodb://admin:s3cr%40t@db1.example.com:27017,"
		  "db2.example.com:27017/admin?replicaSet=rs0&authSource=admin");
	CHECK_STR(cfg->servers[0].uri_redacted, "mongodb://admin:***@db1.example.com:27017,"
		  "db2.example.com:27017/admin?replicaSet=rs0&authSource=admin");
	CHECK_INT(cfg->servers[0].line, 3);
	CHECK_STR(cfg->servers[1].name, "cloud");
	CHECK_STR(cfg->servers[1].uri_redacted, "mongodb+srv://reader:***@cluster0.example.net/?retryWrites=true");
	CHECK_STR(cfg->journal_path, "/var/lib/mmm/journal");   /* absolute: as written */
	CHECK_INT(cfg->ncapture, 0);                            /* an explicit empty list */
	CHECK_INT(cfg->napply, 1);
	if (cfg->napply == 1)
		CHECK_INT(cfg->apply[0], 0);
	CHECK_INT(cfg->apply_workers, 1);
	cfg_free(cfg);
}

static void test_plain(void)
{
	char want[FIXMAX + 64];
	struct cfg *cfg = load_ok(fix("plain.yml"));

	if (!cfg)
		return;
	CHECK_INT(cfg->nservers, 1);
	CHECK_STR(cfg->servers[0].name, "alpha");
	CHECK_STR(cfg->servers[0].id, "11111111-2222-3333-4444-555555555555");
	CHECK_INT(cfg->servers[0].line, 3);
	snprintf(want, sizeof want, "%s/data/journal", fixdir);
	CHECK_STR(cfg->journal_path, want);
	CHECK_INT(cfg->ncapture, 1);     /* capture: {} means the default */
	CHECK_INT(cfg->napply, 1);
	CHECK_INT(cfg->apply_workers, 4);
	cfg_free(cfg);
}

/* A relative configuration path: journal_path becomes absolute through the cwd. */
static void test_relative_paths(void)
{
	char old[PATH_MAX], cwd[PATH_MAX], want[2 * PATH_MAX];
	struct cfg *cfg;

	if (!getcwd(old, sizeof old) || chdir(fixdir) != 0 || !getcwd(cwd, sizeof cwd)) {
		CHECK_MSG(0, "chdir %s: %s", fixdir, strerror(errno));
		return;
	}
	snprintf(want, sizeof want, "%s/mmm-journal", cwd);
	if ((cfg = load_ok("full.yml")) != NULL) {
		CHECK_STR(cfg->journal_path, want);
		CHECK_STR(cfg->path, "full.yml");
		cfg_free(cfg);
	}
	if ((cfg = load_ok("./full.yml")) != NULL) {
		snprintf(want, sizeof want, "%s/mmm-journal", cwd);
		CHECK_STR(cfg->journal_path, want);
		cfg_free(cfg);
	}
	if (chdir("..") == 0) {
		if ((cfg = load_ok("config/plain.yml")) != NULL) {
			snprintf(want, sizeof want, "%s/data/journal", cwd);
			CHECK_STR(cfg->journal_path, want);
			cfg_free(cfg);
		}
	}
	CHECK(chdir(old) == 0);
}

struct bad {
	const char *file;
	const char *msg;     /* after "PATH:" */
};

static const struct bad bad_cases[] = {
	{ "err_empty.yml", "1:1: empty configuration" },
	{ "err_comments_only.yml", "1:1: empty configuration" },
	{ "err_not_mapping.yml", "1:1: expected a mapping at the top level" },
	{ "err_syntax_indent.yml", "3:2: invalid yaml: did not find expected key (while parsing a block mapping at 1:1)" },
	{ "err_syntax_quote.yml", "4:1: invalid yaml: found unexpected end of stream (while scanning a quoted scalar at 2:7)" },
	{ "err_utf8.yml", "2:9: invalid yaml: invalid leading UTF-8 octet" },
	{ "err_undefined_alias.yml", "2:7: invalid yaml: found undefined alias" },
	{ "err_two_docs.yml", "5:1: more than one yaml document" },
	{ "err_no_servers.yml", "1:1: no servers defined" },
	{ "err_key_not_scalar.yml", "4:1: expected a string key at the top level" },
	{ "err_nul.yml", "1:1: unexpected nul character in string" },
	{ "err_multiline_key.yml", "2:7: malformed uuid 'not a uuid' for 'server_a?forged.yml:1:1: fake'" },
	{ "err_server_name.yml", "1:1: invalid server name 'site/a': must be non-empty without '/'" },
	{ "err_server_not_mapping.yml", "1:11: expected a mapping for 'server_a'" },
	{ "err_missing_id.yml", "4:1: missing key 'id' in 'server_b'" },
	{ "err_missing_uri.yml", "1:1: missing key 'uri' in 'server_a'" },
	{ "err_bad_uuid.yml", "3:7: malformed uuid 'xyz' for 'server_a'" },
	{ "err_id_not_string.yml", "2:7: expected a string for 'id' in 'server_a'" },
	{ "err_alias_cycle.yml", "1:11: expected a string for 'id' in 'server_a'" },
	{ "err_empty_uri.yml", "3:7: empty value for 'uri' in 'server_a'" },
	{ "err_bad_uri.yml", "4:8: malformed uri for 'server_b': invalid host string in URI" },
	{ "err_uri_scheme.yml", "3:8: malformed uri for 'server_a': expected 'mongodb://' or 'mongodb+srv://'" },
	{ "err_uri_password.yml", "3:8: malformed uri for 'server_a': 'MONGODB-X509' authentication mechanism does not accept a password" },
	{ "err_uri_escape.yml", "3:8: malformed uri for 'server_a': incorrect URI escapes in password" },
	/* libmongoc quotes the option value, which is also the password */
	{ "err_uri_echo.yml", "3:8: malformed uri for 'server_a': unsupported value for \"tls\": \"***\"" },
	{ "err_uri_echo_raw.yml", "3:8: malformed uri for 'server_a': unsupported value for \"tls\": \"***\"" },
	{ "err_dup_server.yml", "4:1: duplicate server 'server_a'" },
	{ "err_dup_id.yml", "5:7: duplicate id '2c88ae84-7cb9-40f7-835d-c05e981f564d' for 'server_b', already used by 'server_a'" },
	{ "err_dup_key.yml", "4:3: duplicate key 'id' in 'server_a'" },
	{ "err_server_unknown_key.yml", "4:3: unknown key 'password' in 'server_a'" },
	{ "err_dup_section.yml", "5:1: duplicate section 'journal'" },
	{ "err_journal_not_mapping.yml", "4:10: expected a mapping for 'journal'" },
	{ "err_journal_no_path.yml", "4:1: missing key 'path' in 'journal'" },
	{ "err_journal_unknown_key.yml", "6:3: unknown key 'size' in 'journal'" },
	{ "err_journal_path_list.yml", "5:9: expected a string for 'path' in 'journal'" },
	{ "err_capture_not_mapping.yml", "4:10: expected a mapping for 'capture'" },
	{ "err_capture_unknown_key.yml", "4:33: unknown key 'since' in 'capture'" },
	{ "err_capture_unknown_server.yml", "1:32: unknown server 'server_c' in 'capture'" },
	{ "err_capture_dup_server.yml", "7:7: duplicate server 'server_a' in 'capture'" },
	{ "err_apply_unknown_key.yml", "6:3: unknown key 'x' in 'apply'" },
	{ "err_apply_servers_not_list.yml", "4:19: expected a list for 'servers' in 'apply'" },
	{ "err_apply_server_not_name.yml", "4:21: expected a server name in 'apply'" },
	{ "err_apply_unknown_server.yml", "5:23: unknown server 'journal' in 'apply'" },
	{ "err_apply_workers_0.yml", "4:19: 'workers' in 'apply' must be an integer from 1 to 64, not '0'" },
	{ "err_apply_workers_65.yml", "4:19: 'workers' in 'apply' must be an integer from 1 to 64, not '65'" },
	{ "err_apply_workers_abc.yml", "4:19: 'workers' in 'apply' must be an integer from 1 to 64, not 'abc'" },
	{ "err_apply_workers_neg.yml", "4:19: 'workers' in 'apply' must be an integer from 1 to 64, not '-3'" },
	{ "err_apply_workers_frac.yml", "4:19: 'workers' in 'apply' must be an integer from 1 to 64, not '4.5'" },
	{ "err_apply_workers_list.yml", "4:19: 'workers' in 'apply' must be an integer from 1 to 64" },
};

static void test_errors(void)
{
	char err[512], want[FIXMAX + 600];
	struct cfg *cfg;
	size_t i;
	int rc;

	for (i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
		const char *path = fix(bad_cases[i].file);

		snprintf(want, sizeof want, "%s:%s", path, bad_cases[i].msg);
		cfg = (struct cfg *)1;
		memset(err, 'x', sizeof err);
		rc = cfg_load(path, &cfg, err, sizeof err);
		CHECK_MSG(rc == MMM_ECONFIG, "%s: rc %d", bad_cases[i].file, rc);
		CHECK(cfg == NULL);
		CHECK_STR(err, want);
		CHECK(strchr(err, '\n') == NULL);
		CHECK(strstr(err, "hunter2") == NULL);
		CHECK(strstr(err, "maybe") == NULL);
		CHECK(strstr(err, "tr%75e1") == NULL);
	}
}

static void test_unreadable(void)
{
	char err[512], want[FIXMAX + 200];
	struct cfg *cfg = (struct cfg *)1;
	int rc;

	rc = cfg_load(fix("no-such-file.yml"), &cfg, err, sizeof err);
	CHECK_INT(rc, ENOENT);
	CHECK(cfg == NULL);
	snprintf(want, sizeof want, "%s: cannot read: %s", fix("no-such-file.yml"), strerror(ENOENT));
	CHECK_STR(err, want);

	rc = cfg_load(fixdir, &cfg, err, sizeof err);
	CHECK_INT(rc, EISDIR);
	snprintf(want, sizeof want, "%s: cannot read: %s", fixdir, strerror(EISDIR));
	CHECK_STR(err, want);

	/* a short buffer is truncated, never overrun; no buffer at all is fine */
	memset(err, 'x', sizeof err);
	rc = cfg_load(fix("err_bad_uuid.yml"), &cfg, err, 8);
	CHECK_INT(rc, MMM_ECONFIG);
	CHECK_INT(strlen(err), 7);
	CHECK(err[8] == 'x');
	CHECK_INT(cfg_load(fix("err_bad_uuid.yml"), &cfg, NULL, 0), MMM_ECONFIG);
}

static void redact(const char *in, const char *want)
{
	char *out = cfg_redact_uri(in);

	CHECK_MSG(out && strcmp(out, want) == 0, "redact '%s' gave '%s', want '%s'", in,
		  out ? out : "(null)", want);
	free(out);
}

static void test_redact(void)
{
	redact("mongodb://user:secret@h/", "mongodb://user:***@h/");
	redact("mongodb://user:secret@h", "mongodb://user:***@h");
	redact("mongodb://h:27017/?replicaSet=a", "mongodb://h:27017/?replicaSet=a");
	redact("mongodb://127.0.0.1:27019/?replicaSet=a", "mongodb://127.0.0.1:27019/?replicaSet=a");
	redact("mongodb://user@h/?authMechanism=MONGODB-X509", "mongodb://user@h/?authMechanism=MONGODB-X509");
	redact("mongodb://us%40er:p%40ss%3Aw@h1:1,h2:2/db?replicaSet=a",
	       "mongodb://us%40er:***@h1:1,h2:2/db?replicaSet=a");
	redact("mongodb://u:sec@ret@h/", "mongodb://u:***@h/");          /* raw '@': last one wins */
	redact("mongodb://u:sec?ret@h/?w=1", "mongodb://u:***@h/?w=1");
	redact("mongodb://u:sec/ret@h/?w=1", "mongodb://u:***@h/?w=1");  /* raw '/' */
	redact("mongodb://:pw@h", "mongodb://:***@h");
	redact("mongodb://u:@h", "mongodb://u:***@h");
	redact("mongodb+srv://u:pw@cluster0.example.net/db?retryWrites=true",
	       "mongodb+srv://u:***@cluster0.example.net/db?retryWrites=true");
	redact("mongodb://h:1/?appName=a@b", "mongodb://h:1/?appName=a@b");   /* '@' in the query */
	redact("mongodb://u:pw@h:1/?appName=a@b", "mongodb://u:***@h:1/?appName=a@b");
	redact("user:pw@h", "user:***@h");                                /* no scheme */
	redact("mongodb://", "mongodb://");
	redact("", "");
}

static void test_uuid(void)
{
	static const char *const bad[] = {
		"", "2c88ae84-7cb9-40f7-835d-c05e981f564", "2c88ae84-7cb9-40f7-835d-c05e981f564d0",
		"2c88ae847cb940f7835dc05e981f564d", "2c88ae84-7cb9-40f7-835dc-05e981f564d",
		"2c88ae84_7cb9-40f7-835d-c05e981f564d", "2c88ae8g-7cb9-40f7-835d-c05e981f564d",
		"{2c88ae84-7cb9-40f7-835d-c05e981f564d}", " 2c88ae84-7cb9-40f7-835d-c05e981f564",
		"2c88ae84-7cb9-40f7-835d-c05e981f564 ", "2c88ae84--cb9-40f7-835d-c05e981f564dd",
		"xyz", NULL,
	};
	uint8_t u[16], v[16];
	char s[37];
	size_t i;

	CHECK_INT(uuid_parse("2C88AE84-7cb9-40F7-835d-C05E981F564D", u), 0);
	CHECK_INT(u[0], 0x2c);
	CHECK_INT(u[4], 0x7c);
	CHECK_INT(u[15], 0x4d);
	uuid_format(u, s);
	CHECK_STR(s, "2c88ae84-7cb9-40f7-835d-c05e981f564d");
	CHECK_INT(uuid_parse(s, v), 0);
	CHECK(memcmp(u, v, 16) == 0);
	for (i = 0; i < 16; i++)
		u[i] = (uint8_t)(i * 17);
	uuid_format(u, s);
	CHECK_STR(s, "00112233-4455-6677-8899-aabbccddeeff");
	CHECK_INT(uuid_parse(s, v), 0);
	CHECK(memcmp(u, v, 16) == 0);
	memset(v, 0xa5, 16);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		CHECK_MSG(uuid_parse(bad[i], v) == MMM_EUSAGE, "accepted '%s'", bad[i] ? bad[i] : "(null)");
		CHECK(v[0] == 0xa5 && v[15] == 0xa5);   /* untouched on failure */
	}
}

static void test_lookup(void)
{
	struct cfg *cfg = load_ok(fix("full.yml"));
	const struct cfg_server *s;
	uint8_t u[16];

	if (!cfg)
		return;
	s = cfg_server_by_name(cfg, "server_b");
	CHECK(s == &cfg->servers[1]);
	CHECK(cfg_server_by_name(cfg, "server_d") == NULL);
	CHECK(cfg_server_by_name(cfg, "journal") == NULL);
	CHECK(cfg_server_by_name(cfg, "") == NULL);
	CHECK(cfg_server_by_name(cfg, NULL) == NULL);
	CHECK_INT(uuid_parse("A1B2C3D4-0000-4000-8000-00000000000C", u), 0);
	s = cfg_server_by_uuid(cfg, u);
	CHECK(s == &cfg->servers[2]);
	u[15] ^= 1;
	CHECK(cfg_server_by_uuid(cfg, u) == NULL);
	CHECK(cfg_server_by_name(NULL, "server_a") == NULL);
	cfg_free(cfg);
	cfg_free(NULL);
}

int main(void)
{
	const char *env = getenv("MMM_FIXTURES");
	char cwd[PATH_MAX];

	if (!env || !*env)
		env = "fixtures";
	if (env[0] != '/' && getcwd(cwd, sizeof cwd))   /* journal paths come back absolute */
		snprintf(fixdir, sizeof fixdir, "%s/%s/config", cwd, env);
	else
		snprintf(fixdir, sizeof fixdir, "%s/config", env);
	test_seed();
	test_full();
	test_flow();
	test_plain();
	test_relative_paths();
	test_errors();
	test_unreadable();
	test_redact();
	test_uuid();
	test_lookup();
	return check_done();
}
