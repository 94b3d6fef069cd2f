/* log.c — see log.h. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "log.h"

static char log_progname[64] = "mmm";
static int log_verbosity;
static enum log_fmt log_format = LOG_FMT_TEXT;
static int log_flags;
static int log_fd = 2;
static char *log_path;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void log_init(const char *prog, int verbose, enum log_fmt fmt, int flags)
{
	const char *base = strrchr(prog, '/');
	snprintf(log_progname, sizeof log_progname, "%s", base ? base + 1 : prog);
	log_verbosity = verbose;
	log_format = fmt;
	log_flags = flags;
}

int log_parse_format(const char *s, enum log_fmt *out)
{
	if (strcmp(s, "text") == 0)
		*out = LOG_FMT_TEXT;
	else if (strcmp(s, "json") == 0)
		*out = LOG_FMT_JSON;
	else
		return -1;
	return 0;
}

void log_set_format(enum log_fmt fmt) { log_format = fmt; }
void log_set_verbose(int verbose) { log_verbosity = verbose; }
const char *log_prog(void) { return log_progname; }

int log_set_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0)
		return errno;
	pthread_mutex_lock(&log_mu);
	if (log_fd > 2)
		close(log_fd);
	log_fd = fd;
	if (log_path != path) {
		free(log_path);
		log_path = strdup(path);
	}
	pthread_mutex_unlock(&log_mu);
	return 0;
}

int log_reopen(void)
{
	return log_path ? log_set_file(log_path) : 0;
}

/* Appends s to the buffer as the body of a JSON string. */
static size_t json_escape(char *out, size_t cap, size_t n, const char *s)
{
	for (; *s && n + 8 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
		} else {
			out[n++] = (char)c;
		}
	}
	return n;
}

void log_vemit(const char *level, const char *fmt, va_list ap)
{
	char msg[2048], line[4096], when[40];
	struct timespec now;
	struct tm tm;
	size_t n;

	vsnprintf(msg, sizeof msg, fmt, ap);
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof when - n, ".%03ldZ", now.tv_nsec / 1000000);

	if (log_format == LOG_FMT_JSON) {
		n = (size_t)snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"prog\":\"%s\",\"msg\":\"",
		    when, level, log_progname);
		n = json_escape(line, sizeof line, n, msg);
		n += (size_t)snprintf(line + n, sizeof line - n, "\"}\n");
	} else if (log_flags & LOG_F_TIME) {
		n = (size_t)snprintf(line, sizeof line, "%s %s: %s\n", when, log_progname, msg);
	} else {
		n = (size_t)snprintf(line, sizeof line, "%s: %s\n", log_progname, msg);
	}
	if (n >= sizeof line) {
		n = sizeof line - 1;
		line[n - 1] = '\n';
	}
	pthread_mutex_lock(&log_mu);
	ssize_t w = write(log_fd, line, n);
	(void)w;
	pthread_mutex_unlock(&log_mu);
}

#define LOG_BODY(level) do { va_list ap; va_start(ap, fmt); log_vemit(level, fmt, ap); va_end(ap); } while (0)

void log_warnx(const char *fmt, ...) { LOG_BODY("warn"); }

void log_warn(const char *fmt, ...)
{
	char buf[1024];
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	log_warnx("%s: %s", buf, strerror(saved));
	errno = saved;
}

void log_info(const char *fmt, ...)
{
	if (log_verbosity >= 0)
		LOG_BODY("info");
}

void log_debug(const char *fmt, ...)
{
	if (log_verbosity > 0)
		LOG_BODY("debug");
}

int log_error(int rc, const char *fmt, ...)
{
	LOG_BODY("warn");
	return rc;
}

void fatalx(const char *fmt, ...)
{
	LOG_BODY("fatal");
	exit(1);
}

void fatal(const char *fmt, ...)
{
	char buf[1024];
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fatalx("%s: %s", buf, strerror(saved));
}
