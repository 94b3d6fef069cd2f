/*
 * support.h — helpers shared by the unit tests (tests/unit/support_*.c are
 * linked into every test binary).
 *
 * mongosim processes (support_sim.c):
 *
 *   struct support_sim s;
 *   const char *args[] = { "--oplog-format", "v1", NULL };
 *   if (support_sim_start(&s, args)) ...;      // --port 0, waits for "ready port=N"
 *   mongoc_client_t *c = support_sim_client(&s); // replicaSet=rs0, caller destroys
 *   support_sim_restart(&s);                      // SIGTERM, start again on the same port
 *   support_sim_stop(&s);                         // SIGTERM, wait, returns exit status
 *
 * Servers get --enable-faults and die with the test process (PR_SET_PDEATHSIG);
 * any still running at exit() are stopped.  MMM_BIN names the directory that
 * holds mongosim (default build/bin).  Server stderr goes to s.log, removed
 * by support_sim_stop unless MMM_KEEP_LOGS is set.
 */
#ifndef MMM_TEST_SUPPORT_H
#define MMM_TEST_SUPPORT_H
#include <mongoc/mongoc.h>
#include <stdint.h>
#include <sys/types.h>

#define SUPPORT_SIM_MAXARGS 32

struct support_sim {
	pid_t pid;
	int port;
	char uri[160];          /* mongodb://127.0.0.1:PORT/?replicaSet=rs0 */
	char log[256];          /* file with the server's stderr */
	char *args[SUPPORT_SIM_MAXARGS];
	int nargs;
};

/* starts mongosim with extra arguments (NULL-terminated list, may be NULL);
 * 0 on success, -1 (message on stderr) on failure */
int support_sim_start(struct support_sim *s, const char *const *args);
/* SIGTERM, wait up to 10 s (then SIGKILL); returns the exit status or -1 */
int support_sim_stop(struct support_sim *s);
/* SIGKILL, no save */
void support_sim_kill(struct support_sim *s);
/* stop + start on the same port with the same arguments */
int support_sim_restart(struct support_sim *s);
/* a client for s->uri (serverSelectionTimeoutMS=5000); caller destroys */
mongoc_client_t *support_sim_client(const struct support_sim *s);
/* runs a command on db, 0 on ok:1; reply may be NULL (else caller destroys) */
int support_sim_command(mongoc_client_t *c, const char *db, const bson_t *cmd, bson_t *reply);
/* newest oplog ts as (secs << 32 | inc), 0 on error */
uint64_t support_sim_last_ts(mongoc_client_t *c);
/* monotonic milliseconds */
int64_t support_now_ms(void);
#endif
