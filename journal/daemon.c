/* daemon.c — see daemon.h.  The flags are this module's own state. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>
#include "daemon.h"
#include "log.h"

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
