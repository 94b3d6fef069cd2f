/*
 * daemon.h — what the long-running programs (mmm-capture, mmm-apply,
 * `mmm run`) share: SIGTERM and SIGINT ask them to stop (they finish the
 * current block or batch), SIGHUP reopens the log file, SIGPIPE is ignored.
 */
#ifndef MMM_DAEMON_H
#define MMM_DAEMON_H
#include <signal.h>

/* Installs the handlers: a stop signal sets *STOP; a thread reopens the log
 * after SIGHUP until *STOP is set.  0, or an errno. */
int daemon_start(volatile sig_atomic_t *stop);
/* Sets *STOP and waits for that thread. */
void daemon_finish(void);

#endif
