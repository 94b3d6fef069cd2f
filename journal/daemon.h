/*
 * daemon.h — what the long-running programs (mmm-capture, mmm-apply,
 * `mmm run`) share: SIGTERM and SIGINT ask them to stop (they finish the
 * current block or batch), SIGHUP reopens the log file, SIGPIPE is ignored.
 */
#ifndef MMM_DAEMON_H
#define MMM_DAEMON_H
#include <signal.h>
#include <stddef.h>
#include "config.h"
#include "log.h"

enum daemon_role { DAEMON_CAPTURE, DAEMON_APPLY };

/* The start-up both daemons share, from their parsed arguments. */
struct daemon_args {
	const char *prog, *config, *logfile;
	int verbose;
	enum log_fmt fmt;
	const char *const *names;     /* --server NAME options */
	size_t nnames;
	enum daemon_role role;        /* which configured list is the default */
};

/* Sets up logging (timestamps, format, --log-file), MMM_FAULT and
 * libmongoc's log, loads the configuration, settles the journal path
 * (cfg_journal) and the servers (cfg_pick: --server names, else
 * capture.servers or apply.servers).  Returns 0 with *cfg, *jpath and *idx
 * (n entries) for the caller to free (cfg_free, free, free), or the exit
 * status after logging one line: 2 for bad usage or configuration, 1 when
 * out of memory. */
int daemon_setup(const struct daemon_args *a, struct cfg **cfg, char **jpath, size_t **idx, size_t *n);

/* Installs the handlers: a stop signal sets *STOP; a thread reopens the log
 * after SIGHUP until *STOP is set.  0, or an errno. */
int daemon_start(volatile sig_atomic_t *stop);
/* Sets *STOP and waits for that thread. */
void daemon_finish(void);

#endif
