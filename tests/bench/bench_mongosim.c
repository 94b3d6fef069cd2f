/*
 * bench_mongosim.c — mongosim's own rates through libmongoc (issue 3,
 * acceptance 7): 100k single inserts, 1M inserts in bulk batches of 1000,
 * and tailing the resulting oplog with a tailable awaitData cursor.  Prints
 * wall-clock rates and rates per second of server CPU (utime+stime of the
 * mongosim process from /proc), i.e. per core.  Never fails on time.
 *
 *   MMM_BIN            directory holding mongosim (default build/bin)
 *   MMM_BENCH_SCALE    divides the document counts (default 1)
 */
#include <mongoc/mongoc.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double proc_cpu(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f) return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	if (!p) return 0;
	unsigned long ut = 0, st = 0;
	/* fields after ')': state(3) ... utime(14) stime(15) */
	int field = 2;
	for (char *t = strtok(p + 1, " "); t; t = strtok(NULL, " ")) {
		field++;
		if (field == 14) ut = strtoul(t, NULL, 10);
		if (field == 15) { st = strtoul(t, NULL, 10); break; }
	}
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static pid_t start_sim(int *port)
{
	const char *bin = getenv("MMM_BIN");
	char path[1024];
	snprintf(path, sizeof path, "%s/mongosim", bin && *bin ? bin : "build/bin");
	int out[2];
	if (pipe(out)) return -1;
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(out[1], 1);
		int dn = open("/dev/null", O_WRONLY);
		dup2(dn, 2);
		close(out[0]);
		execl(path, path, "--port", "0", "--oplog-size-mb", "2048", "--noop-interval", "0", (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	char line[64] = "";
	size_t got = 0;
	while (got < sizeof line - 1) {
		struct pollfd pf = { out[0], POLLIN, 0 };
		if (poll(&pf, 1, 10000) <= 0 || read(out[0], line + got, 1) != 1 || line[got] == '\n') break;
		got++;
	}
	line[got] = 0;
	close(out[0]);
	if (strncmp(line, "ready port=", 11)) { fprintf(stderr, "bench_mongosim: mongosim did not start\n"); return -1; }
	*port = atoi(line + 11);
	return pid;
}

static void report(const char *what, long n, double secs, double cpu)
{
	printf("  %-36s %9ld in %6.2f s  %10.0f /s wall  %10.0f /s per server CPU-second\n",
	       what, n, secs, n / secs, cpu > 0 ? n / cpu : 0.0);
	fflush(stdout);
}

int main(void)
{
	long scale = getenv("MMM_BENCH_SCALE") ? atol(getenv("MMM_BENCH_SCALE")) : 1;
	if (scale < 1) scale = 1;
	long nsingle = 100000 / scale, nbulk = 1000000 / scale;
	int port;
	pid_t pid = start_sim(&port);
	if (pid < 0) return 1;
	mongoc_init();
	char uri[128];
	snprintf(uri, sizeof uri, "mongodb://127.0.0.1:%d/?replicaSet=rs0", port);
	mongoc_client_t *cl = mongoc_client_new(uri);
	mongoc_client_set_error_api(cl, MONGOC_ERROR_API_VERSION_2);
	mongoc_collection_t *c = mongoc_client_get_collection(cl, "bench", "single");
	bson_error_t e;
	printf("mongosim (pid %d), libmongoc %s, documents {_id: ObjectId, i: int32, s: 32-char string}\n",
	       (int)pid, mongoc_get_version());

	const char *pad = "abcdefghijklmnopqrstuvwxyz012345";
	double c0 = proc_cpu(pid), t0 = now();
	for (long i = 0; i < nsingle; i++) {
		bson_t *d = BCON_NEW("i", BCON_INT32((int32_t)i), "s", BCON_UTF8(pad));
		if (!mongoc_collection_insert_one(c, d, NULL, NULL, &e)) { fprintf(stderr, "insert: %s\n", e.message); return 1; }
		bson_destroy(d);
	}
	report("single inserts (insert_one)", nsingle, now() - t0, proc_cpu(pid) - c0);
	mongoc_collection_destroy(c);

	c = mongoc_client_get_collection(cl, "bench", "bulk");
	bson_t *docs[1000];
	c0 = proc_cpu(pid);
	t0 = now();
	for (long b = 0; b < nbulk / 1000; b++) {
		for (int k = 0; k < 1000; k++) docs[k] = BCON_NEW("i", BCON_INT32((int32_t)(b * 1000 + k)), "s", BCON_UTF8(pad));
		if (!mongoc_collection_insert_many(c, (const bson_t **)docs, 1000, NULL, NULL, &e)) { fprintf(stderr, "insert_many: %s\n", e.message); return 1; }
		for (int k = 0; k < 1000; k++) bson_destroy(docs[k]);
	}
	report("bulk inserts (batches of 1000)", nbulk, now() - t0, proc_cpu(pid) - c0);
	mongoc_collection_destroy(c);

	/* tail everything from the first entry */
	mongoc_collection_t *op = mongoc_client_get_collection(cl, "local", "oplog.rs");
	bson_t *filter = BCON_NEW("ts", "{", "$gte", BCON_TIMESTAMP(0, 0), "}");
	bson_t *opts = BCON_NEW("tailable", BCON_BOOL(true), "awaitData", BCON_BOOL(true), "maxAwaitTimeMS", BCON_INT64(100));
	long want = nsingle + nbulk, n = 0;
	c0 = proc_cpu(pid);
	t0 = now();
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(op, filter, opts, NULL);
	const bson_t *d;
	while (n < want + 2) {
		if (mongoc_cursor_next(cur, &d)) { n++; continue; }
		if (mongoc_cursor_error(cur, &e)) { fprintf(stderr, "tail: %s\n", e.message); break; }
		break;   /* an empty awaitData batch: caught up */
	}
	report("oplog tailing (awaitData cursor)", n, now() - t0, proc_cpu(pid) - c0);
	mongoc_cursor_destroy(cur);
	bson_destroy(filter);
	bson_destroy(opts);
	mongoc_collection_destroy(op);
	mongoc_client_destroy(cl);
	mongoc_cleanup();
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	return 0;
}
