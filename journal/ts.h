/*
 * ts.h — timestamp arguments (--since, --until, --before, mmm's resume
 * points): text -> a journal ts (seconds << 32 | increment, journal.h).
 *
 * Accepted forms:
 *   SECONDS[:INC]            as mongorestore's --oplogLimit: 1587486291 or 1587486291:3
 *   ISO-8601 time            2026-11-29T05:00:00Z, 2026-11-29T05:00:00.250Z,
 *                            2026-11-29T05:00:00+00:00 (any ±HH:MM offset), 2026-11-29
 *                            (fractions of a second are dropped; the increment is 0)
 *   now, now-DURATION        now-30s, now-10m, now-2h, now-1d, now-1w, now-1h30m
 * Anything else, or a time outside 1970..2106 (32-bit seconds), is MMM_EUSAGE
 * with a one-line reason.
 */
#ifndef MMM_TS_H
#define MMM_TS_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Parses S into *out.  Returns 0, or MMM_EUSAGE with a lowercase reason in
 * ERR (e.g. "invalid timestamp 'x': month out of range"). */
int ts_parse(const char *s, uint64_t *out, char *err, size_t errlen);
/* The same with "now" fixed at NOW (seconds since the epoch): tests. */
int ts_parse_at(const char *s, time_t now, uint64_t *out, char *err, size_t errlen);
/* The ts's seconds as "2026-11-29T05:00:00Z" into buf (>= 21 bytes). */
const char *ts_iso(uint64_t ts, char *buf, size_t len);

#endif
