/* daemon.c — see daemon.h.  The flags are this module's own state. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "daemon.h"
#include "err.h"
#include "fault.h"
#include "log.h"
#include "util.h"

static volatile sig_atomic_t *stop_flag;
static volatile sig_atomic_t hup_flag;
static pthread_t hup_thread;
static int hup_started;

static void on_stop(int sig) { (void)sig; *stop_flag = 1; }
static void on_hup(int sig) { (void)sig; hup_flag = 1; }

static void *hup_watch(void *arg)
{
	(void)arg;
	while (!*stop_flag) {
		if (hup_flag) {
			hup_flag = 0;
			if (log_reopen() != 0)
				log_warn("cannot reopen the log file");
		}
		usleep(100 * 1000);
	}
	return NULL;
}

int daemon_start(volatile sig_atomic_t *stop)
{
	struct sigaction sa;
	int rc;

	stop_flag = stop;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if ((rc = pthread_create(&hup_thread, NULL, hup_watch, NULL)) == 0)
		hup_started = 1;
	return rc;
}

void daemon_finish(void)
{
	if (stop_flag)
		*stop_flag = 1;
	if (hup_started)
		pthread_join(hup_thread, NULL);
	hup_started = 0;
}

int daemon_setup(const struct daemon_args *a, struct cfg **cfg, char **jpath, size_t **idx, size_t *n)
{
	const struct cfg *c;
	char err[1024];
	int rc;

	*cfg = NULL;
	*jpath = NULL;
	*idx = NULL;
	*n = 0;
	log_init(a->prog, a->verbose, a->fmt, LOG_F_TIME);
	if (a->logfile && (rc = log_set_file(a->logfile)) != 0) {
		log_warnx("cannot open log file '%s': %s", a->logfile, mmm_strerror(rc));
		return 2;
	}
	if (fault_init() != 0)
		return 2;
	mmm_mongoc_log_to_debug();
	if (cfg_load(a->config, cfg, err, sizeof err) != 0) {
		log_warnx("%s", err);
		return 2;
	}
	c = *cfg;
	if ((*jpath = cfg_journal(c)) == NULL || (*idx = calloc(c->nservers + a->nnames, sizeof **idx)) == NULL) {
		log_warnx("out of memory");
		rc = 1;
	} else if (a->role == DAEMON_CAPTURE) {
		rc = cfg_pick(c, a->names, a->nnames, c->capture, c->ncapture, *idx, n);
	} else {
		rc = cfg_pick(c, a->names, a->nnames, c->apply, c->napply, *idx, n);
	}
	if (rc == 0 && *n == 0) {
		log_warnx("%s: no server to %s", a->config, a->role == DAEMON_CAPTURE ? "capture" : "apply into");
		rc = 2;
	}
	if (rc != 0) {
		free(*idx);
		free(*jpath);
		cfg_free(*cfg);
		*cfg = NULL;
		*jpath = NULL;
		*idx = NULL;
	}
	return rc;
}
