/*
 * bench_apply.c — mmm-apply's rate into mongosim (issue 5, acceptance 6).
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
 * 3. Measured: mmm-apply into another fresh mongosim, through a link, timed
 *    from its start until the destination's checkpoint holds the last ts;
 *    peak RSS from wait4().  The result is checked (document count).
 * Prints the rates, their ratio (target >= 0.7) and the peak RSS (target
 * <= 128 MB); a missed target is marked MISSED, never a failure.  Exits
 * non-zero only when something it runs fails.
 *
 * Env: MMM_BIN (default build/bin) for mongosim and mmm-apply.
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

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "entries", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 's' }, { "keep", no_argument, NULL, 'k' }, { NULL, 0, NULL, 0 } };
	uint64_t n = 1000000, seed = 42, last_ts = 0;
	int keep = 0, ch, port, rc = 1;
	char tmp[] = "/tmp/mmm-bench-apply-XXXXXX", path[1200], cfgpath[1200];
	uint8_t src[16], dst[16], ui[16];
	struct jnl *j = NULL;
	struct jnl_writer *w = NULL;
	struct gen g;
	pid_t sim = -1, app = -1;
	double t0, t_ref = 0, t_app = 0, t_gen, sim_ref = 0, sim_app = 0, app_cpu = 0;
	mongoc_client_t *c = NULL;
	long peak_kb = 0;
	int64_t count = -1;

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
	if (mkdtemp(tmp) == NULL) {
		perror("bench_apply: mkdtemp");
		return 1;
	}
	mongoc_init();
	for (int i = 0; i < 4; i++)
		rs[i] = splitmix64(&seed);
	for (int i = 0; i < 16; i++) {
		src[i] = (uint8_t)rnd();
		dst[i] = (uint8_t)rnd();
		ui[i] = (uint8_t)rnd();
	}
	src[6] = (src[6] & 0x0f) | 0x40; src[8] = (src[8] & 0x3f) | 0x80;
	dst[6] = (dst[6] & 0x0f) | 0x40; dst[8] = (dst[8] & 0x3f) | 0x80;

	/* 1. the journal */
	memset(&g, 0, sizeof g);
	g.live = malloc(n * sizeof *g.live + 1);
	snprintf(path, sizeof path, "%s/journal", tmp);
	t0 = now_s();
	if (jnl_open(path, JNL_CREATE, &j) != 0 || jnl_source_ensure(j, src, "bench", "mongodb://bench", JNL_LOCAL) != 0 ||
	    jnl_writer_new(j, src, &w) != 0) {
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
			mongoc_bulk_operation_t *b = mongoc_collection_create_bulk_operation_with_opts(coll, NULL);
			bson_t reply;
			for (int m = 0; m < 1000 && k < n; m++, k++) {
				bson_t d = BSON_INITIALIZER;
				make_doc(&d, (uint32_t)k);
				mongoc_bulk_operation_insert(b, &d);
				bson_destroy(&d);
			}
			if (!mongoc_bulk_operation_execute(b, &reply, &err)) {
				fprintf(stderr, "bench_apply: reference insert failed: %s\n", err.message);
				bson_destroy(&reply);
				mongoc_bulk_operation_destroy(b);
				mongoc_collection_destroy(coll);
				goto out;
			}
			bson_destroy(&reply);
			mongoc_bulk_operation_destroy(b);
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

	/* 3. mmm-apply into a fresh mongosim */
	if ((sim = start_sim(&port)) < 0)
		goto out;
	c = client(port);
	{
		char s[37], d[37];
		FILE *f;
		mongoc_collection_t *links = mongoc_client_get_collection(c, "mmm", "links");
		mongoc_collection_t *ck = mongoc_client_get_collection(c, "mmm", "checkpoints");
		mongoc_collection_t *bc = mongoc_client_get_collection(c, "bench", "c");
		bson_t *link;
		bson_error_t err;
		int status;
		struct rusage ru;

		uuid_format(src, s);
		uuid_format(dst, d);
		snprintf(cfgpath, sizeof cfgpath, "%s/mmm.yml", tmp);
		if ((f = fopen(cfgpath, "w")) == NULL)
			goto out;
		fprintf(f, "dst:\n  id: '%s'\n  uri: 'mongodb://127.0.0.1:%d/?replicaSet=rs0'\njournal:\n  path: %s/journal\n", d, port, tmp);
		fclose(f);
		link = BCON_NEW("_id", "bench/bench.*=>bench.*", "src_name", "bench", "src_id", BCON_BIN(BSON_SUBTYPE_UUID, src, 16),
		    "src_ns", "bench.*", "dst_ns", "bench.*", "ops", "iudc", "forward", BCON_BOOL(false));
		if (!mongoc_collection_insert_one(links, link, NULL, NULL, &err)) {
			fprintf(stderr, "bench_apply: cannot write the link: %s\n", err.message);
			goto out;
		}
		bson_destroy(link);
		sim_app = cpu_s(sim);
		t0 = now_s();
		if ((app = fork()) == 0) {
			char exe[1024];
			int devnull = open("/dev/null", O_WRONLY);
			snprintf(exe, sizeof exe, "%s/mmm-apply", bin_dir());
			dup2(devnull, 1);
			execl(exe, exe, "-c", cfgpath, (char *)NULL);
			_exit(127);
		}
		for (;;) {
			bson_t filter = BSON_INITIALIZER;
			mongoc_cursor_t *cur = mongoc_collection_find_with_opts(ck, &filter, NULL, NULL);
			const bson_t *doc;
			uint64_t best = 0;
			long kb;
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
			if ((kb = rss_kb(app)) > peak_kb)
				peak_kb = kb;
			if (best >= last_ts)
				break;
			if (waitpid(app, &status, WNOHANG) == app) {
				fprintf(stderr, "bench_apply: mmm-apply exited early (status %d)\n", status);
				app = -1;
				goto out;
			}
			usleep(20 * 1000);
		}
		t_app = now_s() - t0;
		sim_app = cpu_s(sim) - sim_app;
		app_cpu = cpu_s(app);
		kill(app, SIGTERM);
		if (wait4(app, &status, 0, &ru) == app && ru.ru_maxrss > peak_kb)
			peak_kb = ru.ru_maxrss;
		app = -1;
		{
			bson_t all = BSON_INITIALIZER;
			count = mongoc_collection_count_documents(bc, &all, NULL, NULL, NULL, &err);
			bson_destroy(&all);
		}
		mongoc_collection_destroy(links);
		mongoc_collection_destroy(ck);
		mongoc_collection_destroy(bc);
	}
	{
		double ratio = (n / t_app) / (n / t_ref);
		printf("apply: %" PRIu64 " entries applied by mmm-apply in %.1f s: %.0f entries/s (mmm-apply CPU %.1f s, mongosim CPU %.1f s)\n",
		    n, t_app, n / t_app, app_cpu, sim_app);
		printf("apply rate / reference rate: %.3f (target >= 0.7)%s\n", ratio, ratio >= 0.7 ? "" : " MISSED");
		printf("apply peak RSS: %.1f MB (target <= 128)%s\n", peak_kb / 1024.0, peak_kb <= 128 * 1024 ? "" : " MISSED");
		printf("documents on the destination: %" PRId64 " (expected %zu)%s\n", count, g.nlive,
		    count == (int64_t)g.nlive ? "" : " WRONG");
		rc = count == (int64_t)g.nlive ? 0 : 1;
	}
out:
	if (app > 0) {
		kill(app, SIGKILL);
		waitpid(app, NULL, 0);
	}
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
		char cmd[1300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
		if (system(cmd) != 0)
			fprintf(stderr, "bench_apply: cannot remove '%s'\n", tmp);
	} else {
		printf("kept %s\n", tmp);
	}
	return rc;
}
