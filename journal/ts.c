/* ts.c — see ts.h. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "ts.h"

#define TS_MAKE(sec, inc) (((uint64_t)(uint32_t)(sec) << 32) | (uint32_t)(inc))

static int ts_fail(char *err, size_t errlen, const char *s, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "invalid timestamp '%s': %s", s, why);
	return MMM_EUSAGE;
}

/* Reads exactly N digits at *p (advancing it); -1 when they are not digits. */
static long take_digits(const char **p, int n)
{
	long v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	return v;
}

/* Days from 1970-01-01 to Y-M-D in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int days_in_month(long y, long m)
{
	static const int dm[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return dm[m - 1];
}

static int set_seconds(int64_t secs, uint32_t inc, uint64_t *out, const char *s,
    char *err, size_t errlen)
{
	if (secs < 0 || secs > (int64_t)UINT32_MAX)
		return ts_fail(err, errlen, s, "out of range (1970-01-01 to 2106-02-07)");
	*out = TS_MAKE(secs, inc);
	return 0;
}

/* SECONDS[:INC], all digits. */
static int parse_numeric(const char *s, uint64_t *out, char *err, size_t errlen)
{
	char *end;
	unsigned long long sec, inc = 0;

	errno = 0;
	sec = strtoull(s, &end, 10);
	if (errno || sec > UINT32_MAX)
		return ts_fail(err, errlen, s, "seconds out of range");
	if (*end == ':') {
		const char *p = end + 1;
		if (!isdigit((unsigned char)*p))
			return ts_fail(err, errlen, s, "expected digits after ':'");
		errno = 0;
		inc = strtoull(p, &end, 10);
		if (errno || inc > UINT32_MAX)
			return ts_fail(err, errlen, s, "increment out of range");
	}
	if (*end)
		return ts_fail(err, errlen, s,
		    "expected SECONDS[:INC], an ISO-8601 UTC time or now-DURATION");
	*out = TS_MAKE(sec, inc);
	return 0;
}

static int parse_iso(const char *s, uint64_t *out, char *err, size_t errlen)
{
	const char *p = s;
	long y, mo, d, h = 0, mi = 0, se = 0, off = 0;

	if ((y = take_digits(&p, 4)) < 0 || *p++ != '-' || (mo = take_digits(&p, 2)) < 0 ||
	    *p++ != '-' || (d = take_digits(&p, 2)) < 0)
		return ts_fail(err, errlen, s, "expected YYYY-MM-DDTHH:MM:SSZ");
	if (mo < 1 || mo > 12)
		return ts_fail(err, errlen, s, "month out of range");
	if (d < 1 || d > days_in_month(y, mo))
		return ts_fail(err, errlen, s, "day out of range");
	if (*p) {
		if (*p != 'T' && *p != 't' && *p != ' ')
			return ts_fail(err, errlen, s, "expected 'T' after the date");
		p++;
		if ((h = take_digits(&p, 2)) < 0 || *p++ != ':' || (mi = take_digits(&p, 2)) < 0)
			return ts_fail(err, errlen, s, "expected HH:MM:SS after 'T'");
		if (*p == ':') {
			p++;
			if ((se = take_digits(&p, 2)) < 0)
				return ts_fail(err, errlen, s, "expected two digits of seconds");
		}
		if (h > 23 || mi > 59 || se > 59)
			return ts_fail(err, errlen, s, "time of day out of range");
		if (*p == '.' || *p == ',') {
			p++;
			if (!isdigit((unsigned char)*p))
				return ts_fail(err, errlen, s, "expected digits after the decimal point");
			while (isdigit((unsigned char)*p))
				p++;
		}
		if (*p == 'Z' || *p == 'z') {
			p++;
		} else if (*p == '+' || *p == '-') {
			int sign = *p++ == '-' ? -1 : 1;
			long oh, om;
			if ((oh = take_digits(&p, 2)) < 0)
				return ts_fail(err, errlen, s, "expected a UTC offset like +00:00");
			if (*p == ':')
				p++;
			if ((om = take_digits(&p, 2)) < 0 || oh > 23 || om > 59)
				return ts_fail(err, errlen, s, "expected a UTC offset like +00:00");
			off = sign * (oh * 3600 + om * 60);
		} else {
			return ts_fail(err, errlen, s, "missing time zone: add 'Z' for UTC");
		}
	}
	if (*p)
		return ts_fail(err, errlen, s, "unexpected text after the time");
	int64_t secs = days_from_civil(y, (int)mo, (int)d) * 86400 + h * 3600 + mi * 60 + se - off;
	return set_seconds(secs, 0, out, s, err, errlen);
}

/* "now", "now-10m", "now-1h30m". */
static int parse_now(const char *s, time_t now, uint64_t *out, char *err, size_t errlen)
{
	const char *p = s + 3;
	int64_t back = 0;

	if (*p == '\0')
		return set_seconds(now, 0, out, s, err, errlen);
	if (*p++ != '-' || !*p)
		return ts_fail(err, errlen, s, "expected now-DURATION such as now-10m");
	while (*p) {
		int64_t n = 0, unit;
		if (!isdigit((unsigned char)*p))
			return ts_fail(err, errlen, s, "expected a number in the duration");
		while (isdigit((unsigned char)*p)) {
			n = n * 10 + (*p++ - '0');
			if (n > (int64_t)UINT32_MAX)
				return ts_fail(err, errlen, s, "duration out of range");
		}
		switch (*p++) {
		case 's': unit = 1; break;
		case 'm': unit = 60; break;
		case 'h': unit = 3600; break;
		case 'd': unit = 86400; break;
		case 'w': unit = 7 * 86400; break;
		default:
			return ts_fail(err, errlen, s, "duration unit must be s, m, h, d or w");
		}
		back += n * unit;
		if (back > (int64_t)UINT32_MAX * 2)
			return ts_fail(err, errlen, s, "duration out of range");
	}
	return set_seconds((int64_t)now - back, 0, out, s, err, errlen);
}

int ts_parse_at(const char *s, time_t now, uint64_t *out, char *err, size_t errlen)
{
	size_t ndig = strspn(s, "0123456789");

	if (!*s)
		return ts_fail(err, errlen, s, "empty");
	if (strncmp(s, "now", 3) == 0)
		return parse_now(s, now, out, err, errlen);
	if (ndig == 4 && s[4] == '-')
		return parse_iso(s, out, err, errlen);
	if (ndig > 0)
		return parse_numeric(s, out, err, errlen);
	return ts_fail(err, errlen, s, "expected SECONDS[:INC], an ISO-8601 UTC time or now-DURATION");
}

int ts_parse(const char *s, uint64_t *out, char *err, size_t errlen)
{
	return ts_parse_at(s, time(NULL), out, err, errlen);
}

const char *ts_iso(uint64_t ts, char *buf, size_t len)
{
	time_t t = (time_t)(ts >> 32);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, len, "?");
	return buf;
}
