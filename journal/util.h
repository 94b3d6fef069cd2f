/*
 * util.h — small helpers every program needs: clocks, an interruptible
 * sleep, a libmongoc client with the timeouts mmm uses, namespaces.
 */
#ifndef MMM_UTIL_H
#define MMM_UTIL_H
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <mongoc/mongoc.h>

/* Milliseconds: monotonic (for intervals) and wall clock (since the epoch). */
int64_t mmm_mono_ms(void);
int64_t mmm_wall_ms(void);
/* Sleeps MS milliseconds, returning early once *STOP (may be NULL) is set. */
void mmm_sleep_ms(int ms, volatile sig_atomic_t *stop);

/* A client for URI named APPNAME, giving up server selection after
 * SELECT_MS unless the URI says otherwise (connect 2 s, heartbeat 500 ms),
 * error API version 2.  NULL with *err set when the URI is bad. */
mongoc_client_t *mmm_client_new(const char *uri, const char *appname, int select_ms, bson_error_t *err);

/* Routes libmongoc's own log lines (URI warnings, reconnects) to log_debug,
 * so stderr carries only our one-line messages.  Call before cfg_load(). */
void mmm_mongoc_log_to_debug(void);

/* "db.coll" -> DB (copied) and *COLL (a pointer into NS, "" without a dot). */
void mmm_ns_split(const char *ns, char *db, size_t dblen, const char **coll);

#endif
