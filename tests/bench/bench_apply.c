/*
 * bench_apply.c — mmm-apply's rate into mongosim (issue 5, acceptance 6), and
 * what conflict handling costs it (issue 7: within 10%, nothing logged).
 *
 *   bench_apply [--entries N] [--seed S] [--keep]
 *
 * 1. Writes N (default 1,000,000) 6.0-shaped oplog entries of one source
 *    into a fresh journal: 70% inserts, 25% `$v:2` updates, 5% deletes, on
 *    one collection, updates and deletes only to documents that exist
 *    (deterministic: xoshiro256** seeded by --seed).
 * 2. Reference: bulk-inserts N documents of the same shape into a fresh
 *    mongosim with libmongoc directly (ordered bulks of 1000, as apply's
 *    batches), timed.
 * 3. Measured (apply_run): mmm-apply into another fresh mongosim, through a
 *    link, from a copy of that journal, timed from its start until the
 *    destination's checkpoint holds the last ts; CPU from /proc, peak RSS
 *    from /proc and wait4().  The result is checked (document count), and
 *    with conflict handling on, the conflict log must stay empty
 *    (`mmm-journal conflicts`).  Runs alternate `apply: {conflicts: false}`
 *    and the default (on), MMM_BENCH_APPLY_RUNS (default 2) of each.
 * 4. The same pair with the destination captured into the journal while
 *    apply runs (`mmm-capture --server dst --from <its newest oplog ts>`,
 *    stopped with SIGTERM after), as on a real site: then apply's conflict
 *    checker follows the destination's oplog and looks documents up in the
 *    journal's docstamp table.  MMM_BENCH_APPLY_CAPTURED_RUNS (default 1)
 *    of each; 0 skips it.
 * Prints every run, then the rates' ratio against the reference for the
 * best conflicts-on run (target >= 0.7), the peak RSS over all runs (target
 * <= 128 MB), and the ratio of the best rates with and without conflict
 * handling (target >= 0.9), with the ratio of mmm-apply's least CPU times
 * beside it (steadier on a loaded machine); a missed target is marked
 * MISSED, never a failure.  Exits non-zero when something it runs fails, a
 * document count is wrong or a conflict was logged.
 *
 * Env: MMM_BIN (default build/bin) for mongosim, mmm-apply, mmm-capture and
 * mmm-journal.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <mongoc/mongoc.h>
#include "config.h"
#include "journal.h"
#include "oplog.h"

#define START_SEC 1700000000u
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t rs[4];

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rnd(void)
{
	uint64_t r = rotl(rs[1] * 5, 7) * 9, t = rs[1] << 17;
	rs[2] ^= rs[0];
	rs[3] ^= rs[1];
	rs[1] ^= rs[2];
	rs[0] ^= rs[3];
	rs[2] ^= t;
	rs[3] = rotl(rs[3], 45);
	return r;
}

static uint32_t rnd_below(uint32_t n) { return (uint32_t)(((rnd() >> 32) * (uint64_t)n) >> 32); }

static const char *const names[] = { "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Yuki", "Amara",
	"Mateo", "Priya", "Lukas", "Sofia", "Chen", "Fatima", "Olga", "Kwame" };
static const char *const cities[] = { "Springfield", "Riverside", "Franklin", "Greenville", "Bristol", "Salem",
	"Madison", "Porto", "Leipzig", "Osaka", "Lagos", "Pune" };
static const char *const tagv[] = { "new", "vip", "trial", "premium", "newsletter", "beta", "mobile", "web" };

static void make_oid(uint32_t k, bson_oid_t *oid)
{
	uint8_t b[12] = { 0x65, 0x5a, 0x00, 0x00, 0xbe, 0x9c, 0x11, 0x00, 0, 0, 0, 0 };
	b[8] = (uint8_t)(k >> 24);
	b[9] = (uint8_t)(k >> 16);
	b[10] = (uint8_t)(k >> 8);
	b[11] = (uint8_t)k;
	bson_oid_init_from_data(oid, b);
}

/* The document inserted as the K-th. */
static void make_doc(bson_t *d, uint32_t k)
{
	bson_oid_t oid;
	bson_t sub;
	char buf[64];
	const char *nm = names[rnd_below(NELEM(names))];
	make_oid(k, &oid);
	BSON_APPEND_OID(d, "_id", &oid);
	snprintf(buf, sizeof buf, "%s %u", nm, k);
	BSON_APPEND_UTF8(d, "name", buf);
	snprintf(buf, sizeof buf, "%s.%u@example.com", nm, k);
	BSON_APPEND_UTF8(d, "email", buf);
	BSON_APPEND_DOUBLE(d, "balance", (double)rnd_below(1000000) / 100.0);
	BSON_APPEND_BOOL(d, "active", rnd_below(2));
	BSON_APPEND_DOCUMENT_BEGIN(d, "address", &sub);
	snprintf(buf, sizeof buf, "%u Main St", rnd_below(9999));
	BSON_APPEND_UTF8(&sub, "street", buf);
	BSON_APPEND_UTF8(&sub, "city", cities[rnd_below(NELEM(cities))]);
	snprintf(buf, sizeof buf, "%05u", rnd_below(99999));
	BSON_APPEND_UTF8(&sub, "zip", buf);
	bson_append_document_end(d, &sub);
	BSON_APPEND_ARRAY_BEGIN(d, "tags", &sub);
	for (uint32_t i = 0, n = 1 + rnd_below(3); i < n; i++) {
		char key[4];
		snprintf(key, sizeof key, "%u", i);
		BSON_APPEND_UTF8(&sub, key, tagv[rnd_below(NELEM(tagv))]);
	}
	bson_append_array_end(d, &sub);
	BSON_APPEND_UTF8(d, "plan", rnd_below(3) ? "basic" : "pro");
	BSON_APPEND_INT32(d, "visits", (int32_t)rnd_below(100));
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *bin_dir(void)
{
	const char *b = getenv("MMM_BIN");
	return b && *b ? b : "build/bin";
}

/* Starts mongosim on a free port; returns its pid, *port set. */
static pid_t start_sim(int *port)
{
	int fds[2];
	char path[1024], line[128];
	size_t n = 0;
	pid_t pid;
	snprintf(path, sizeof path, "%s/mongosim", bin_dir());
	if (pipe(fds) != 0)
		return -1;
	if ((pid = fork()) == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(fds[1], 1);
		dup2(devnull, 2);
		close(fds[0]);
		execl(path, path, "--port", "0", "--replset", "rs0", "--oplog-size-mb", "64", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	while (n + 1 < sizeof line && read(fds[0], &line[n], 1) == 1 && line[n] != '\n')
		n++;
	line[n] = '\0';
	close(fds[0]);
	if (sscanf(line, "ready port=%d", port) != 1) {
		fprintf(stderr, "bench_apply: mongosim did not start ('%s')\n", line);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	return pid;
}

static void stop(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
}

static mongoc_client_t *client(int port)
{
	char uri[128];
	mongoc_client_t *c;
	snprintf(uri, sizeof uri, "mongodb://127.0.0.1:%d/?replicaSet=rs0", port);
	c = mongoc_client_new(uri);
	mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
	return c;
}

struct gen {
	uint32_t *live;
	size_t nlive, ninserted;
	uint64_t n_i, n_u, n_d;
};

/* Entry I (0-based) into E. */
static void gen_entry(struct gen *g, uint64_t i, const uint8_t ui[16], bson_t *e)
{
	uint32_t r = rnd_below(100);
	uint32_t sec = START_SEC + (uint32_t)(i / 2000), inc = (uint32_t)(i % 2000) + 1;
	bson_t o, o2, diff, sec_u;
	bson_oid_t oid;
	char op = r < 70 || g->nlive == 0 ? 'i' : r < 95 ? 'u' : 'd';

	BSON_APPEND_UTF8(e, "op", op == 'i' ? "i" : op == 'u' ? "u" : "d");
	BSON_APPEND_UTF8(e, "ns", "bench.c");
	BSON_APPEND_BINARY(e, "ui", BSON_SUBTYPE_UUID, ui, 16);
	if (op == 'i') {
		uint32_t k = (uint32_t)g->ninserted++;
		BSON_APPEND_DOCUMENT_BEGIN(e, "o", &o);
		make_doc(&o, k);
		bson_append_document_end(e, &o);
		g->live[g->nlive++] = k;
		g->n_i++;
	} else {
		size_t at = rnd_below((uint32_t)g->nlive);
		make_oid(g->live[at], &oid);
		if (op == 'u') {
			BSON_APPEND_DOCUMENT_BEGIN(e, "o", &o);
			BSON_APPEND_INT32(&o, "$v", 2);
			BSON_APPEND_DOCUMENT_BEGIN(&o, "diff", &diff);
			BSON_APPEND_DOCUMENT_BEGIN(&diff, "u", &sec_u);
			BSON_APPEND_DOUBLE(&sec_u, "balance", (double)rnd_below(1000000) / 100.0);
			BSON_APPEND_INT32(&sec_u, "visits", (int32_t)rnd_below(1000));
			bson_append_document_end(&diff, &sec_u);
			if (rnd_below(4) == 0) {
				BSON_APPEND_DOCUMENT_BEGIN(&diff, "saddress", &sec_u);
				bson_t u;
				BSON_APPEND_DOCUMENT_BEGIN(&sec_u, "u", &u);
				BSON_APPEND_UTF8(&u, "city", cities[rnd_below(NELEM(cities))]);
				bson_append_document_end(&sec_u, &u);
				bson_append_document_end(&diff, &sec_u);
			}
			bson_append_document_end(&o, &diff);
			bson_append_document_end(e, &o);
			BSON_APPEND_DOCUMENT_BEGIN(e, "o2", &o2);
			BSON_APPEND_OID(&o2, "_id", &oid);
			bson_append_document_end(e, &o2);
			g->n_u++;
		} else {
			BSON_APPEND_DOCUMENT_BEGIN(e, "o", &o);
			BSON_APPEND_OID(&o, "_id", &oid);
			bson_append_document_end(e, &o);
			g->live[at] = g->live[--g->nlive];
			g->n_d++;
		}
	}
	BSON_APPEND_TIMESTAMP(e, "ts", sec, inc);
	BSON_APPEND_INT64(e, "t", 7);
	BSON_APPEND_INT64(e, "v", 2);
	BSON_APPEND_DATE_TIME(e, "wall", (int64_t)sec * 1000 + inc / 2);
}

/* CPU seconds (user + system) PID has used so far. */
static double cpu_s(pid_t pid)
{
	char path[64], buf[1024], *q;
	unsigned long ut = 0, st = 0;
	FILE *f;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	if (fgets(buf, sizeof buf, f) && (q = strrchr(buf, ')')) != NULL)
		sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
	fclose(f);
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = 0;
	FILE *f;
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* ---- one measured apply run ------------------------------------------------ */

/* What every apply run shares. */
struct bench {
	char tmp[64];
	uint8_t src[16], dst[16];
	uint64_t n, last_ts;
	int64_t expect;            /* documents the destination ends with */
	int seq;                   /* runs so far: run K works in TMP/run-K */
	int cold;                  /* captured: start capture just before apply, no warm-up */
};

/* One run's figures. */
struct run {
	double t, cpu, sim_cpu, cap_cpu;
	uint64_t done;             /* entries applied: N, fewer when stopped at the time limit */
	int stopped;               /* stopped at the time limit */
	double catchup;            /* captured: s after T until the journal (and the checker) held apply's last write */
	long peak_kb;
	int64_t count;             /* documents on the destination, -1 unknown */
	int64_t conflicts;         /* records in the conflict log, -1 not read */
};

static int copy_file(const char *from, const char *to)
{
	char buf[1 << 16];
	ssize_t k = 0;
	int in = open(from, O_RDONLY), out = -1, rc = -1;

	if (in < 0 || (out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0)
		goto done;
	while ((k = read(in, buf, sizeof buf)) > 0)
		if (write(out, buf, (size_t)k) != k)
			goto done;
	rc = k == 0 ? 0 : -1;
done:
	if (in >= 0)
		close(in);
	if (out >= 0 && close(out) != 0)
		rc = -1;
	return rc;
}

/* Runs ARGV (ARGV[0] a path) with stdout to OUT (truncated) and stderr
 * appended to ERR, NULL meaning /dev/null. */
static pid_t spawn(const char *const argv[], const char *out, const char *err)
{
	pid_t pid = fork();
	if (pid == 0) {
		int o = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(err ? err : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(o, 1);
		dup2(e, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Copies the log at PATH to stderr (after a failure). */
static void show_log(const char *path)
{
	char line[1024];
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	fprintf(stderr, "--- %s\n", path);
	while (fgets(line, sizeof line, f))
		fputs(line, stderr);
	fclose(f);
}

/* ts of the newest entry of the server's oplog; with KEPT, of the newest
 * CRUD or command entry capture journals (not of an excluded namespace),
 * which apply's conflict checker reads.  0 when none (among the newest 1000). */
static uint64_t newest_ts(mongoc_client_t *c, int kept)
{
	mongoc_collection_t *oplog = mongoc_client_get_collection(c, "local", "oplog.rs");
	bson_t filter = BSON_INITIALIZER;
	bson_t *opts = BCON_NEW("sort", "{", "$natural", BCON_INT32(-1), "}", "limit", BCON_INT64(1000));
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(oplog, &filter, opts, NULL);
	const bson_t *doc;
	uint64_t ts = 0;

	while (ts == 0 && mongoc_cursor_next(cur, &doc)) {
		bson_iter_t it;
		uint32_t s, i;
		const char *ns = "", *op = "";
		if (bson_iter_init_find(&it, doc, "ns") && BSON_ITER_HOLDS_UTF8(&it))
			ns = bson_iter_utf8(&it, NULL);
		if (bson_iter_init_find(&it, doc, "op") && BSON_ITER_HOLDS_UTF8(&it))
			op = bson_iter_utf8(&it, NULL);
		if (kept && (oplog_ns_excluded(ns) || op[0] == '\0' || strchr("iudc", op[0]) == NULL))
			continue;
		if (bson_iter_init_find(&it, doc, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
			bson_iter_timestamp(&it, &s, &i);
			ts = JNL_TS(s, i);
		}
	}
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(&filter);
	mongoc_collection_destroy(oplog);
	return ts;
}

static int count_kv(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key, (void)klen, (void)val, (void)vlen;
	++*(size_t *)arg;
	return 0;
}

/* From the journal at PATH, for master M: the ts of its last journaled
 * entry, the conflict checker's position (*HAVEPOS 0 when not recorded:
 * conflict.c keeps it in docstamp under M's UUID and 'P', an internal key)
 * and the number of queued re-derivations.  0, or -1 when it cannot be read. */
static int journal_state(const char *path, const uint8_t m[16], uint64_t *last, uint64_t *pos, int *havepos,
    size_t *nrd)
{
	struct jnl *j;
	struct jnl_source s;
	uint8_t key[17], v[8];

	*last = *pos = 0;
	*havepos = 0;
	*nrd = 0;
	if (jnl_open(path, JNL_RDONLY, &j) != 0)
		return -1;
	if (jnl_source_get(j, m, &s) == 0)
		*last = s.last_ts;
	memcpy(key, m, 16);
	key[16] = 'P';
	if (jnl_kv_get(j, JNL_KV_DOCSTAMP, key, sizeof key, v, sizeof v, NULL) == 0) {
		*havepos = 1;
		for (int i = 0; i < 8; i++)
			*pos = *pos << 8 | v[i];
	}
	jnl_kv_walk(j, JNL_KV_REDERIVE, m, 16, count_kv, nrd);
	jnl_close(j);
	return 0;
}

/* Destination captured: waits (up to 60 s) until the journal at PATH holds
 * TS of master M and, with CONFLICTS, the checker has passed it and no
 * re-derivation is queued.  Seconds it took, or -1 when it did not. */
static double catch_up(const char *path, const uint8_t m[16], uint64_t ts, int conflicts)
{
	double t0 = now_s(), dt;

	while ((dt = now_s() - t0) < 60) {
		uint64_t last, pos;
		int havepos;
		size_t nrd;
		if (journal_state(path, m, &last, &pos, &havepos, &nrd) == 0 && last >= ts &&
		    (!conflicts || (nrd == 0 && (havepos ? pos >= ts : dt >= 2))))
			return dt;
		usleep(20 * 1000);
	}
	return -1;
}

/* Records in the conflict log of the journal CFG names (`mmm-journal
 * conflicts`, one line each), or -1 when the command fails. */
static int64_t count_conflicts(const char *cfg, const char *dir)
{
	char exe[1024], out[1300], err[1300];
	const char *argv[] = { exe, "-c", cfg, "conflicts", NULL };
	int64_t n = 0;
	int status, ch;
	FILE *f;
	pid_t pid;

	snprintf(exe, sizeof exe, "%s/mmm-journal", bin_dir());
	snprintf(out, sizeof out, "%s/conflicts.out", dir);
	snprintf(err, sizeof err, "%s/conflicts.log", dir);
	if ((pid = spawn(argv, out, err)) < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		fprintf(stderr, "bench_apply: '%s -c %s conflicts' failed\n", exe, cfg);
		show_log(err);
		return -1;
	}
	if ((f = fopen(out, "r")) == NULL)
		return -1;
	while ((ch = getc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

/* Highest ts among the destination's checkpoints. */
static uint64_t checkpoint_ts(mongoc_collection_t *ck)
{
	bson_t filter = BSON_INITIALIZER;
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(ck, &filter, NULL, NULL);
	const bson_t *doc;
	uint64_t best = 0;
	while (mongoc_cursor_next(cur, &doc)) {
		bson_iter_t it;
		uint32_t ts_s, ts_i;
		if (bson_iter_init_find(&it, doc, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
			bson_iter_timestamp(&it, &ts_s, &ts_i);
			if (JNL_TS(ts_s, ts_i) > best)
				best = JNL_TS(ts_s, ts_i);
		}
	}
	mongoc_cursor_destroy(cur);
	bson_destroy(&filter);
	return best;
}

/* A site's capture runs before apply starts: one local write on the
 * destination (outside the link), waited for in the journal at PATH, so
 * that apply's checker finds the destination's source holding entries from
 * its start.  0, or -1 when it is not journaled within 30 s or capture
 * (CAP) exited. */
static int warm_up(mongoc_client_t *c, const char *path, const uint8_t m[16], pid_t cap)
{
	mongoc_collection_t *coll = mongoc_client_get_collection(c, "warmup", "c");
	bson_t *doc = BCON_NEW("_id", BCON_INT32(1));
	uint64_t ts = 0;
	double t0 = now_s();
	int ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, NULL);

	bson_destroy(doc);
	mongoc_collection_destroy(coll);
	if (!ok || (ts = newest_ts(c, 1)) == 0)
		return -1;
	while (now_s() - t0 < 30) {
		uint64_t last, pos;
		int havepos;
		size_t nrd;
		if (journal_state(path, m, &last, &pos, &havepos, &nrd) == 0 && last >= ts)
			return 0;
		if (waitpid(cap, NULL, WNOHANG) == cap)
			return -1;
		usleep(20 * 1000);
	}
	return -1;
}

/* Stops PID with SIGTERM; 0 when it exited 0.  Its peak RSS raises *PEAK_KB. */
static int stop_child(pid_t pid, long *peak_kb)
{
	struct rusage ru;
	int status;
	kill(pid, SIGTERM);
	if (wait4(pid, &status, 0, &ru) != pid)
		return -1;
	if (peak_kb && ru.ru_maxrss > *peak_kb)
		*peak_kb = ru.ru_maxrss;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* Entries of the journal up to TS (entry I has ts START_SEC + I / 2000 :
 * I % 2000 + 1). */
static uint64_t entries_upto(const struct bench *b, uint64_t ts)
{
	uint64_t k;
	if (ts < JNL_TS(START_SEC, 1))
		return 0;
	k = (uint64_t)(JNL_TS_SEC(ts) - START_SEC) * 2000 + JNL_TS_INC(ts);
	return k < b->n ? k : b->n;
}

/* One measurement: mmm-apply from a copy of the journal into a fresh
 * mongosim, with conflict handling on (the default) or `apply: {conflicts:
 * false}`; with CAPTURED, mmm-capture journals the destination meanwhile.
 * Stopped after LIMIT s (R->stopped; R->done says how far it got).  0, or
 * -1 when something it runs failed (R holds what was measured). */
static int apply_run(struct bench *b, int conflicts, int captured, double limit, struct run *r)
{
	char dir[128], jdir[160], cfg[160], from[160], alog[160], clog[160], s[37], d[37], exe[1024], cexe[1024];
	char fromts[32];
	const char *aargv[] = { exe, "-c", cfg, NULL };
	const char *cargv[] = { cexe, "-c", cfg, "--server", "dst", "--from", fromts, NULL };
	pid_t sim = -1, app = -1, cap = -1;
	mongoc_client_t *c = NULL;
	mongoc_collection_t *links = NULL, *ck = NULL, *bc = NULL;
	bson_t *link = NULL;
	bson_error_t err;
	int port, status, rc = -1;
	double t0, sim0;
	FILE *f;

	memset(r, 0, sizeof *r);
	r->count = r->conflicts = -1;
	r->catchup = -1;
	snprintf(dir, sizeof dir, "%s/run-%d", b->tmp, ++b->seq);
	snprintf(jdir, sizeof jdir, "%s/journal", dir);
	snprintf(cfg, sizeof cfg, "%s/mmm.yml", dir);
	snprintf(alog, sizeof alog, "%s/apply.log", dir);
	snprintf(clog, sizeof clog, "%s/capture.log", dir);
	snprintf(exe, sizeof exe, "%s/mmm-apply", bin_dir());
	snprintf(cexe, sizeof cexe, "%s/mmm-capture", bin_dir());
	snprintf(from, sizeof from, "%s/journal/data.mdb", b->tmp);
	if (mkdir(dir, 0700) != 0 || mkdir(jdir, 0700) != 0) {
		fprintf(stderr, "bench_apply: cannot create '%s': %s\n", jdir, strerror(errno));
		return -1;
	}
	{
		char to[200];
		snprintf(to, sizeof to, "%s/data.mdb", jdir);
		if (copy_file(from, to) != 0) {
			fprintf(stderr, "bench_apply: cannot copy '%s' to '%s': %s\n", from, to, strerror(errno));
			return -1;
		}
	}
	if ((sim = start_sim(&port)) < 0)
		return -1;
	uuid_format(b->src, s);
	uuid_format(b->dst, d);
	if ((f = fopen(cfg, "w")) == NULL) {
		fprintf(stderr, "bench_apply: cannot write '%s': %s\n", cfg, strerror(errno));
		goto out;
	}
	fprintf(f, "dst:\n  id: '%s'\n  uri: 'mongodb://127.0.0.1:%d/?replicaSet=rs0'\njournal:\n  path: %s\n", d, port,
	    jdir);
	if (!conflicts)
		fprintf(f, "apply:\n  conflicts: false\n");
	fclose(f);
	c = client(port);
	links = mongoc_client_get_collection(c, "mmm", "links");
	ck = mongoc_client_get_collection(c, "mmm", "checkpoints");
	bc = mongoc_client_get_collection(c, "bench", "c");
	link = BCON_NEW("_id", "bench/bench.*=>bench.*", "src_name", "bench", "src_id", BCON_BIN(BSON_SUBTYPE_UUID, b->src, 16),
	    "src_ns", "bench.*", "dst_ns", "bench.*", "ops", "iudc", "forward", BCON_BOOL(false));
	if (!mongoc_collection_insert_one(links, link, NULL, NULL, &err)) {
		fprintf(stderr, "bench_apply: cannot write the link: %s\n", err.message);
		goto out;
	}
	if (captured) {
		uint64_t ts = newest_ts(c, 0);
		if (ts == 0) {
			fprintf(stderr, "bench_apply: cannot read the destination's oplog\n");
			goto out;
		}
		snprintf(fromts, sizeof fromts, "%u:%u", JNL_TS_SEC(ts), JNL_TS_INC(ts));
		if ((cap = spawn(cargv, NULL, clog)) < 0)
			goto out;
		if (!b->cold && warm_up(c, jdir, b->dst, cap) != 0) {
			fprintf(stderr, "bench_apply: the destination's capture did not start\n");
			show_log(clog);
			if (waitpid(cap, NULL, WNOHANG) != 0)
				cap = -1;       /* exited, and reaped */
			goto out;
		}
	}
	sim0 = cpu_s(sim);
	t0 = now_s();
	if ((app = spawn(aargv, NULL, alog)) < 0)
		goto out;
	for (;;) {
		uint64_t best = checkpoint_ts(ck);
		long kb;
		if ((kb = rss_kb(app)) > r->peak_kb)
			r->peak_kb = kb;
		r->done = entries_upto(b, best);
		if (best >= b->last_ts)
			break;
		if (now_s() - t0 >= limit) {
			r->stopped = 1;
			break;
		}
		if (waitpid(app, &status, WNOHANG) == app) {
			fprintf(stderr, "bench_apply: mmm-apply exited early (status %d)\n", status);
			show_log(alog);
			app = -1;
			goto out;
		}
		if (cap > 0 && waitpid(cap, &status, WNOHANG) == cap) {
			fprintf(stderr, "bench_apply: mmm-capture exited early (status %d)\n", status);
			show_log(clog);
			cap = -1;
			goto out;
		}
		usleep(20 * 1000);
	}
	r->t = now_s() - t0;
	r->sim_cpu = cpu_s(sim) - sim0;
	r->cpu = cpu_s(app);
	if (cap > 0)
		r->cap_cpu = cpu_s(cap);
	if (cap > 0 && !r->stopped) {
		uint64_t ts = newest_ts(c, 1);
		r->catchup = ts ? catch_up(jdir, b->dst, ts, conflicts) : -1;
	}
	rc = 0;
	if (stop_child(app, &r->peak_kb) != 0) {
		fprintf(stderr, "bench_apply: mmm-apply did not exit 0 on SIGTERM\n");
		show_log(alog);
		rc = -1;
	}
	app = -1;
	if (cap > 0 && stop_child(cap, NULL) != 0) {
		fprintf(stderr, "bench_apply: mmm-capture did not exit 0 on SIGTERM\n");
		show_log(clog);
		rc = -1;
	}
	cap = -1;
	{
		bson_t all = BSON_INITIALIZER;
		r->count = mongoc_collection_count_documents(bc, &all, NULL, NULL, NULL, &err);
		bson_destroy(&all);
	}
	if (conflicts && (r->conflicts = count_conflicts(cfg, dir)) < 0)
		rc = -1;
out:
	if (app > 0) {
		kill(app, SIGKILL);
		waitpid(app, NULL, 0);
	}
	if (cap > 0) {
		kill(cap, SIGKILL);
		waitpid(cap, NULL, 0);
	}
	if (link)
		bson_destroy(link);
	if (links)
		mongoc_collection_destroy(links);
	if (ck)
		mongoc_collection_destroy(ck);
	if (bc)
		mongoc_collection_destroy(bc);
	if (c)
		mongoc_client_destroy(c);
	stop(sim);
	return rc;
}

/* The runs of one variant: the fastest, and the least mmm-apply CPU time
 * per entry. */
struct best {
	struct run r;
	double rate, cpu_per;
	int n;
};

static void best_add(struct best *b, const struct run *r)
{
	double rate = r->done / r->t, cpu_per = r->done ? r->cpu / r->done : 0;
	if (b->n == 0 || rate > b->rate) {
		b->r = *r;
		b->rate = rate;
	}
	if (b->n == 0 || cpu_per < b->cpu_per)
		b->cpu_per = cpu_per;
	b->n++;
}

static int env_int(const char *name, int dflt, int min)
{
	const char *v = getenv(name);
	int x = v && *v ? atoi(v) : dflt;
	return x < min ? min : x;
}

/* Prints run R; returns 0 when its checks passed. */
static int report_run(const struct bench *b, const struct run *r, int conflicts, int captured, int k, int of)
{
	int ok = r->stopped || r->count == b->expect;
	printf("apply, conflicts %s%s, run %d of %d: ", conflicts ? "on" : "off", captured ? ", destination captured" : "",
	    k, of);
	if (r->stopped)
		printf("stopped at the time limit, %" PRIu64 " of %" PRIu64 " entries in %.1f s", r->done, b->n, r->t);
	else
		printf("%.1f s", r->t);
	printf(": %.0f entries/s (mmm-apply CPU %.1f s, mongosim CPU %.1f s", r->done / r->t, r->cpu, r->sim_cpu);
	if (captured)
		printf(", mmm-capture CPU %.1f s", r->cap_cpu);
	printf(", peak RSS %.1f MB); documents: %" PRId64 "%s", r->peak_kb / 1024.0, r->count,
	    r->stopped ? " (not checked)" : ok ? "" : " WRONG");
	if (captured && r->stopped)
		;
	else if (captured && r->catchup >= 0)
		printf("; %s %.1f s later", conflicts ? "journal and checker caught up" : "journal caught up", r->catchup);
	else if (captured)
		printf("; the journal%s did not catch up within 60 s", conflicts ? " or the checker" : "");
	printf("\n");
	if (conflicts) {
		printf("conflicts logged: %" PRId64 " (expected 0)%s\n", r->conflicts, r->conflicts == 0 ? "" : " WRONG");
		ok = ok && r->conflicts == 0;
	}
	fflush(stdout);
	return ok ? 0 : -1;
}

static void report_ratio(const char *what, const struct best *off, const struct best *on)
{
	double ratio = on->rate / off->rate;
	printf("apply rate with conflict handling / without%s: %.3f (target >= 0.9)%s (mmm-apply CPU time per entry without / with: %.3f)\n",
	    what, ratio, ratio >= 0.9 ? "" : " MISSED", off->cpu_per / on->cpu_per);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "entries", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 's' }, { "keep", no_argument, NULL, 'k' }, { NULL, 0, NULL, 0 } };
	uint64_t n = 1000000, seed = 42, last_ts = 0;
	int keep = 0, ch, port, rc = 1, bad = 0, runs, cruns;
	char path[1200];
	uint8_t ui[16];
	struct jnl *j = NULL;
	struct jnl_writer *w = NULL;
	struct gen g;
	struct bench b;
	struct best best[2][2];    /* [captured][conflicts] */
	pid_t sim = -1;
	double t0, t_ref = 0, t_gen, sim_ref = 0, limit;
	mongoc_client_t *c = NULL;
	long peak_kb = 0;
	int64_t wrong_count = -1;
	int checked = 0;           /* runs whose document count was checked */

	while ((ch = getopt_long(argc, argv, "n:s:k", lo, NULL)) != -1) {
		switch (ch) {
		case 'n': n = strtoull(optarg, NULL, 10); break;
		case 's': seed = strtoull(optarg, NULL, 10); break;
		case 'k': keep = 1; break;
		default:
			fprintf(stderr, "usage: bench_apply [--entries N] [--seed S] [--keep]\n");
			return 2;
		}
	}
	if (n == 0) {
		fprintf(stderr, "usage: bench_apply [--entries N] [--seed S] [--keep]\n");
		return 2;
	}
	runs = env_int("MMM_BENCH_APPLY_RUNS", 2, 1);
	cruns = env_int("MMM_BENCH_APPLY_CAPTURED_RUNS", 1, 0);
	memset(&b, 0, sizeof b);
	b.cold = env_int("MMM_BENCH_APPLY_COLD_CAPTURE", 0, 0) != 0;
	memset(best, 0, sizeof best);
	memset(&g, 0, sizeof g);
	snprintf(b.tmp, sizeof b.tmp, "/tmp/mmm-bench-apply-XXXXXX");
	if (mkdtemp(b.tmp) == NULL) {
		perror("bench_apply: mkdtemp");
		return 1;
	}
	mongoc_init();
	for (int i = 0; i < 4; i++)
		rs[i] = splitmix64(&seed);
	for (int i = 0; i < 16; i++) {
		b.src[i] = (uint8_t)rnd();
		b.dst[i] = (uint8_t)rnd();
		ui[i] = (uint8_t)rnd();
	}
	b.src[6] = (b.src[6] & 0x0f) | 0x40; b.src[8] = (b.src[8] & 0x3f) | 0x80;
	b.dst[6] = (b.dst[6] & 0x0f) | 0x40; b.dst[8] = (b.dst[8] & 0x3f) | 0x80;

	/* 1. the journal (each apply run works on a copy of it) */
	g.live = malloc(n * sizeof *g.live + 1);
	snprintf(path, sizeof path, "%s/journal", b.tmp);
	t0 = now_s();
	if (jnl_open(path, JNL_CREATE, &j) != 0 || jnl_source_ensure(j, b.src, "bench", "mongodb://bench", JNL_LOCAL) != 0 ||
	    jnl_writer_new(j, b.src, &w) != 0) {
		fprintf(stderr, "bench_apply: cannot create journal '%s'\n", path);
		goto out;
	}
	for (uint64_t i = 0; i < n; i++) {
		bson_t e = BSON_INITIALIZER;
		int r;
		gen_entry(&g, i, ui, &e);
		last_ts = JNL_TS(START_SEC + (uint32_t)(i / 2000), (uint32_t)(i % 2000) + 1);
		r = jnl_writer_add_trusted(w, bson_get_data(&e), e.len, last_ts, NULL);
		bson_destroy(&e);
		if (r < 0 || (r > 0 && jnl_writer_sealed_bytes(w) >= (8u << 20) && jnl_writer_commit(w) != 0)) {
			fprintf(stderr, "bench_apply: journal write failed\n");
			goto out;
		}
	}
	if (jnl_writer_flush(w) != 0) {
		fprintf(stderr, "bench_apply: journal write failed\n");
		goto out;
	}
	jnl_writer_free(w);
	w = NULL;
	jnl_close(j);
	j = NULL;
	t_gen = now_s() - t0;
	b.n = n;
	b.last_ts = last_ts;
	b.expect = (int64_t)g.nlive;
	printf("journal: %" PRIu64 " entries (%" PRIu64 " inserts, %" PRIu64 " updates, %" PRIu64 " deletes) written in %.1f s\n",
	    n, g.n_i, g.n_u, g.n_d, t_gen);
	fflush(stdout);

	/* 2. reference: libmongoc bulk inserts of N documents */
	if ((sim = start_sim(&port)) < 0)
		goto out;
	c = client(port);
	{
		mongoc_collection_t *coll = mongoc_client_get_collection(c, "ref", "c");
		bson_error_t err;
		uint64_t k = 0;
		for (uint64_t i = 0; i < 4; i++)
			rs[i] = splitmix64(&seed);
		t0 = now_s();
		while (k < n) {
			mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(coll, NULL);
			bson_t reply;
			for (int m = 0; m < 1000 && k < n; m++, k++) {
				bson_t d = BSON_INITIALIZER;
				make_doc(&d, (uint32_t)k);
				mongoc_bulk_operation_insert(bulk, &d);
				bson_destroy(&d);
			}
			if (!mongoc_bulk_operation_execute(bulk, &reply, &err)) {
				fprintf(stderr, "bench_apply: reference insert failed: %s\n", err.message);
				bson_destroy(&reply);
				mongoc_bulk_operation_destroy(bulk);
				mongoc_collection_destroy(coll);
				goto out;
			}
			bson_destroy(&reply);
			mongoc_bulk_operation_destroy(bulk);
		}
		t_ref = now_s() - t0;
		sim_ref = cpu_s(sim);
		mongoc_collection_destroy(coll);
	}
	mongoc_client_destroy(c);
	c = NULL;
	stop(sim);
	sim = -1;
	printf("reference: %" PRIu64 " documents bulk-inserted with libmongoc in %.1f s: %.0f docs/s (mongosim CPU %.1f s)\n",
	    n, t_ref, n / t_ref, sim_ref);
	fflush(stdout);

	/* a run stops after 5 times the reference's time (at least 30 s):
	 * beyond, the figure is far below its target anyway */
	limit = getenv("MMM_BENCH_APPLY_LIMIT") ? atof(getenv("MMM_BENCH_APPLY_LIMIT")) : 5 * t_ref < 30 ? 30 : 5 * t_ref;
	/* 3. mmm-apply into a fresh mongosim, conflict handling off and on in
	 * turn (so that load from elsewhere hits both alike); 4. the same with
	 * the destination captured meanwhile */
	for (int captured = 0; captured < 2; captured++) {
		int each = captured ? cruns : runs;
		for (int i = 0; i < 2 * each; i++) {
			int on = i % 2;
			struct run r;
			if (apply_run(&b, on, captured, limit, &r) != 0)
				bad = 1;
			if (r.count < 0)
				goto out;
			if (report_run(&b, &r, on, captured, i / 2 + 1, each) != 0) {
				bad = 1;
				if (!r.stopped && r.count != b.expect && wrong_count < 0)
					wrong_count = r.count;
			}
			checked += !r.stopped;
			if (r.peak_kb > peak_kb)
				peak_kb = r.peak_kb;
			best_add(&best[captured][on], &r);
		}
	}
	{
		const struct best *on = &best[0][1];
		double ratio = on->rate / (n / t_ref);
		int64_t count = wrong_count >= 0 ? wrong_count : b.expect;
		printf("apply: %" PRIu64 " entries applied by mmm-apply in %.1f s: %.0f entries/s (mmm-apply CPU %.1f s, mongosim CPU %.1f s; best of %d, conflict handling on)\n",
		    on->r.done, on->r.t, on->rate, on->r.cpu, on->r.sim_cpu, on->n);
		printf("apply rate / reference rate: %.3f (target >= 0.7)%s\n", ratio, ratio >= 0.7 ? "" : " MISSED");
		printf("apply peak RSS: %.1f MB (target <= 128)%s\n", peak_kb / 1024.0, peak_kb <= 128 * 1024 ? "" : " MISSED");
		if (checked)
			printf("documents on the destination: %" PRId64 " (expected %" PRId64 ")%s\n", count, b.expect,
			    count == b.expect ? "" : " WRONG");
		else
			printf("documents on the destination: not checked (every run stopped at the time limit)\n");
		report_ratio("", &best[0][0], &best[0][1]);
		if (cruns)
			report_ratio(", destination captured", &best[1][0], &best[1][1]);
		rc = bad;
	}
out:
	if (c)
		mongoc_client_destroy(c);
	stop(sim);
	if (w)
		jnl_writer_free(w);
	if (j)
		jnl_close(j);
	free(g.live);
	mongoc_cleanup();
	if (!keep) {
		char cmd[200];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", b.tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "bench_apply: cannot remove '%s'\n", b.tmp);
	} else {
		printf("kept %s\n", b.tmp);
	}
	return rc;
}
