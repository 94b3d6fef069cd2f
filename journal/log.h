/*
 * log.h — the one logger every program uses (after OpenBSD's log.h).
 *
 * Messages are one line, lowercase, no full stop, naming the object in
 * quotes: log_warnx("unable to open journal '%s'", path).  Text lines go to
 * stderr (or the file given to log_set_file) as "PROG: message", prefixed
 * with an ISO-8601 UTC time when LOG_F_TIME is set (daemons).  With
 * LOG_FMT_JSON every line is a JSON object {"time","level","prog","msg"} for
 * log shippers.  The logger is the only state shared between modules; it is
 * safe to call from any thread (one write(2) per line).
 */
#ifndef MMM_LOG_H
#define MMM_LOG_H
#include <stdarg.h>

enum log_fmt { LOG_FMT_TEXT, LOG_FMT_JSON };
#define LOG_F_TIME 1      /* prefix text lines with a timestamp */

/* verbose: 0 = warnings and info, 1 = also debug, -1 = warnings only. */
void log_init(const char *prog, int verbose, enum log_fmt fmt, int flags);
/* Parses "text" or "json"; returns 0, or -1 for anything else. */
int log_parse_format(const char *s, enum log_fmt *out);
void log_set_format(enum log_fmt fmt);
void log_set_verbose(int verbose);
/* Appends to PATH from now on (0 or errno); log_reopen() reopens it (SIGHUP). */
int log_set_file(const char *path);
int log_reopen(void);
const char *log_prog(void);

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));   /* adds ": strerror(errno)" */
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));   /* exit 1 */
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));  /* exit 1 */
/* Logs at warning level and returns rc: "return log_error(rc, "...", ...)". */
int log_error(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vemit(const char *level, const char *fmt, va_list ap);

#endif
