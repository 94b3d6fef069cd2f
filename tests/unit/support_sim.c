/* support_sim.c — start/stop mongosim for C tests (see support.h) */
#include "support.h"
#include <errno.h>
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

static struct support_sim *live[64];

static void stop_all(void)
{
	for (int i = 0; i < 64; i++)
		if (live[i]) support_sim_stop(live[i]);
}

int64_t support_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int spawn(struct support_sim *s)
{
	static int registered;
	if (!registered) { atexit(stop_all); registered = 1; }
	const char *bin = getenv("MMM_BIN");
	char path[1024], port[16];
	snprintf(path, sizeof path, "%s/mongosim", bin && *bin ? bin : "build/bin");
	snprintf(port, sizeof port, "%d", s->port);
	int out[2];
	if (pipe(out)) return -1;
	if (!s->log[0]) snprintf(s->log, sizeof s->log, "/tmp/mongosim-%d-%d.log", (int)getpid(), rand());
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) return -1;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent) _exit(1);
		dup2(out[1], 1);
		int lf = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (lf >= 0) dup2(lf, 2);
		close(out[0]);
		char *argv[SUPPORT_SIM_MAXARGS + 8];
		int n = 0;
		argv[n++] = path;
		argv[n++] = "--port";
		argv[n++] = port;
		argv[n++] = "--enable-faults";
		for (int i = 0; i < s->nargs; i++) argv[n++] = s->args[i];
		argv[n] = NULL;
		execv(path, argv);
		fprintf(stderr, "unable to run '%s': %s\n", path, strerror(errno));
		_exit(127);
	}
	close(out[1]);
	char line[128];
	size_t got = 0;
	int64_t deadline = support_now_ms() + 10000;
	while (got < sizeof line - 1) {
		struct pollfd pf = { out[0], POLLIN, 0 };
		int64_t left = deadline - support_now_ms();
		if (left <= 0 || poll(&pf, 1, (int)left) <= 0) break;
		ssize_t r = read(out[0], line + got, 1);
		if (r <= 0) break;
		if (line[got] == '\n') break;
		got++;
	}
	line[got] = 0;
	close(out[0]);
	if (strncmp(line, "ready port=", 11)) {
		fprintf(stderr, "mongosim did not start (got '%s'), log %s\n", line, s->log);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	s->pid = pid;
	s->port = atoi(line + 11);
	snprintf(s->uri, sizeof s->uri, "mongodb://127.0.0.1:%d/?replicaSet=rs0&serverSelectionTimeoutMS=5000", s->port);
	for (int i = 0; i < 64; i++) if (!live[i]) { live[i] = s; break; }
	return 0;
}

int support_sim_start(struct support_sim *s, const char *const *args)
{
	memset(s, 0, sizeof *s);
	for (int i = 0; args && args[i] && s->nargs < SUPPORT_SIM_MAXARGS; i++) s->args[s->nargs++] = strdup(args[i]);
	mongoc_init();
	return spawn(s);
}

static void forget(struct support_sim *s)
{
	for (int i = 0; i < 64; i++) if (live[i] == s) live[i] = NULL;
}

static int reap(struct support_sim *s, int timeout_ms)
{
	int st = 0;
	int64_t deadline = support_now_ms() + timeout_ms;
	for (;;) {
		pid_t r = waitpid(s->pid, &st, WNOHANG);
		if (r == s->pid) break;
		if (r < 0) { st = -1; break; }
		if (support_now_ms() > deadline) { kill(s->pid, SIGKILL); waitpid(s->pid, &st, 0); break; }
		struct timespec ts = { 0, 5 * 1000000L };
		nanosleep(&ts, NULL);
	}
	s->pid = 0;
	forget(s);
	if (st == -1) return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int support_sim_stop(struct support_sim *s)
{
	int rc = -1;
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		rc = reap(s, 10000);
	}
	for (int i = 0; i < s->nargs; i++) free(s->args[i]);
	s->nargs = 0;
	forget(s);
	if (s->log[0] && !getenv("MMM_KEEP_LOGS")) unlink(s->log);
	return rc;
}

void support_sim_kill(struct support_sim *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		reap(s, 10000);
	}
}

int support_sim_restart(struct support_sim *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		reap(s, 10000);
	}
	int64_t deadline = support_now_ms() + 5000;
	for (;;) {
		if (!spawn(s)) return 0;
		if (support_now_ms() > deadline) return -1;
	}
}

mongoc_client_t *support_sim_client(const struct support_sim *s)
{
	mongoc_client_t *c = mongoc_client_new(s->uri);
	if (c) mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
	return c;
}

int support_sim_command(mongoc_client_t *c, const char *db, const bson_t *cmd, bson_t *reply)
{
	bson_error_t e;
	bson_t tmp;
	bool ok = mongoc_client_command_simple(c, db, cmd, NULL, reply ? reply : &tmp, &e);
	if (!reply) bson_destroy(&tmp);
	return ok ? 0 : -1;
}

uint64_t support_sim_last_ts(mongoc_client_t *c)
{
	mongoc_collection_t *op = mongoc_client_get_collection(c, "local", "oplog.rs");
	bson_t filter = BSON_INITIALIZER;
	bson_t *opts = BCON_NEW("sort", "{", "$natural", BCON_INT32(-1), "}", "limit", BCON_INT64(1));
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(op, &filter, opts, NULL);
	const bson_t *d;
	uint64_t ts = 0;
	if (mongoc_cursor_next(cur, &d)) {
		bson_iter_t it;
		uint32_t t, i;
		if (bson_iter_init_find(&it, d, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
			bson_iter_timestamp(&it, &t, &i);
			ts = (uint64_t)t << 32 | i;
		}
	}
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(&filter);
	mongoc_collection_destroy(op);
	return ts;
}
