/* run.c — `mmm run`: capture and apply in one process, as the original `run`. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "apply.h"
#include "capture.h"
#include "daemon.h"
#include "err.h"
#include "journal.h"
#include "log.h"
#include "mmm.h"

static volatile sig_atomic_t stop_flag;

struct half {
	const struct cfg *cfg;
	struct jnl *j;
	size_t idx[64], n;
	int rc;
};

static struct cap_options no_from;

static void *capture_half(void *arg)
{
	struct half *h = arg;
	h->rc = cap_run(h->cfg, h->j, h->idx, h->n, &no_from, &stop_flag);
	return NULL;
}

static void *apply_half(void *arg)
{
	struct half *h = arg;
	h->rc = app_run(h->cfg, h->j, h->idx, h->n, &stop_flag);
	return NULL;
}

/* Keeps, of the configured list LIST, the servers selected with --server. */
static void pick(const struct mmm *m, const size_t *list, size_t nlist, struct half *h)
{
	h->n = 0;
	for (size_t i = 0; i < nlist && h->n < 64; i++) {
		int keep = m->o->nservers == 0;
		for (size_t k = 0; k < m->o->nservers; k++)
			if (strcmp(m->o->servers[k], m->cfg->servers[list[i]].name) == 0)
				keep = 1;
		if (keep)
			h->idx[h->n++] = list[i];
	}
}

int cmd_run(struct mmm *m)
{
	struct half cap = { m->cfg, NULL, { 0 }, 0, 0 }, app = { m->cfg, NULL, { 0 }, 0, 0 };
	pthread_t ct, at;
	struct jnl *j;
	size_t idx[64], n;
	int rc, started_c = 0, started_a = 0;

	if ((rc = mmm_select(m, idx, &n)) != 0)
		return rc;
	pick(m, m->cfg->capture, m->cfg->ncapture, &cap);
	pick(m, m->cfg->apply, m->cfg->napply, &app);
	if (cap.n == 0 && app.n == 0) {
		log_warnx("nothing to run: no server to capture or apply into");
		return 2;
	}
	if ((rc = jnl_open(m->journal_path, JNL_CREATE, &j)) != 0) {
		log_warnx("unable to open journal '%s': %s", m->journal_path, mmm_strerror(rc));
		return 1;
	}
	cap.j = app.j = j;
	daemon_start(&stop_flag);
	log_info("running: capturing %zu server%s, applying into %zu, journal '%s'", cap.n, cap.n == 1 ? "" : "s",
	    app.n, m->journal_path);
	if (cap.n && pthread_create(&ct, NULL, capture_half, &cap) == 0)
		started_c = 1;
	if (app.n && pthread_create(&at, NULL, apply_half, &app) == 0)
		started_a = 1;
	/* Wait for a signal, or for capture to give up (nothing left to capture). */
	while (!stop_flag) {
		usleep(100 * 1000);
		if (started_c && cap.rc) {
			log_warnx("capture stopped: stopping");
			stop_flag = 1;
		}
	}
	daemon_finish();
	if (started_c)
		pthread_join(ct, NULL);
	if (started_a)
		pthread_join(at, NULL);
	jnl_close(j);
	log_info("stopped");
	return cap.rc || app.rc ? 1 : 0;
}
