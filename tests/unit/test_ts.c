/* test_ts.c — TS argument parsing (journal/ts.h). */
#include <stdint.h>
#include <string.h>
#include "../check.h"
#include "err.h"
#include "ts.h"

#define TS(sec, inc) (((uint64_t)(uint32_t)(sec) << 32) | (uint32_t)(inc))
#define NOW ((time_t)1795928400)   /* 2026-11-29T05:00:00Z */

static uint64_t ok(const char *s)
{
	uint64_t v = 0;
	char err[200] = "";
	int rc = ts_parse_at(s, NOW, &v, err, sizeof err);
	CHECK_MSG(rc == 0, "'%s': %s", s, err);
	return v;
}

static void bad(const char *s, const char *want)
{
	uint64_t v = 12345;
	char err[200] = "";
	int rc = ts_parse_at(s, NOW, &v, err, sizeof err);
	CHECK_MSG(rc == MMM_EUSAGE, "'%s' accepted (rc %d)", s, rc);
	CHECK_MSG(v == 12345, "'%s' wrote *out", s);
	CHECK_MSG(strstr(err, want) != NULL, "'%s': '%s' lacks '%s'", s, err, want);
	CHECK_MSG(strchr(err, '\n') == NULL, "'%s': message has a newline", s);
}

int main(void)
{
	char buf[64];

	/* SECONDS[:INC] */
	CHECK(ok("1587486291") == TS(1587486291, 0));
	CHECK(ok("1587486291:3") == TS(1587486291, 3));
	CHECK(ok("0") == 0);
	CHECK(ok("0:1") == TS(0, 1));
	CHECK(ok("4294967295:4294967295") == UINT64_MAX);

	/* ISO-8601 */
	CHECK(ok("2026-11-29T05:00:00Z") == TS(NOW, 0));
	CHECK(ok("2026-11-29t05:00:00z") == TS(NOW, 0));
	CHECK(ok("2026-11-29T05:00:00.999Z") == TS(NOW, 0));
	CHECK(ok("2026-11-29T05:00:00.5+00:00") == TS(NOW, 0));
	CHECK(ok("2026-11-29T05:00:00+00:00") == TS(NOW, 0));
	CHECK(ok("2026-11-29T07:00:00+02:00") == TS(NOW, 0));
	CHECK(ok("2026-11-29T04:30:00-0030") == TS(NOW, 0));
	CHECK(ok("2026-11-29T05:00Z") == TS(NOW, 0));
	CHECK(ok("2026-11-29") == TS(NOW - 5 * 3600, 0));
	CHECK(ok("1970-01-01T00:00:00Z") == 0);
	CHECK(ok("2000-02-29T00:00:00Z") == TS(951782400, 0));
	CHECK(ok("2020-04-21T16:24:51Z") == TS(1587486291, 0));
	CHECK(ok("2106-02-07T06:28:15Z") == TS(UINT32_MAX, 0));

	/* now-DURATION */
	CHECK(ok("now") == TS(NOW, 0));
	CHECK(ok("now-30s") == TS(NOW - 30, 0));
	CHECK(ok("now-10m") == TS(NOW - 600, 0));
	CHECK(ok("now-2h") == TS(NOW - 7200, 0));
	CHECK(ok("now-1d") == TS(NOW - 86400, 0));
	CHECK(ok("now-1w") == TS(NOW - 7 * 86400, 0));
	CHECK(ok("now-1h30m") == TS(NOW - 5400, 0));

	/* everything else */
	bad("", "empty");
	bad("yesterday", "expected SECONDS[:INC]");
	bad("-5", "expected SECONDS[:INC]");
	bad("12x", "expected SECONDS[:INC]");
	bad("1:", "digits after ':'");
	bad("1:2:3", "expected SECONDS[:INC]");
	bad("4294967296", "seconds out of range");
	bad("1:4294967296", "increment out of range");
	bad("99999999999999999999999", "seconds out of range");
	bad("2026-13-01T00:00:00Z", "month out of range");
	bad("2026-02-29T00:00:00Z", "day out of range");
	bad("2026-11-31T00:00:00Z", "day out of range");
	bad("2026-11-29T24:00:00Z", "time of day out of range");
	bad("2026-11-29T05:60:00Z", "time of day out of range");
	bad("2026-11-29T05:00:00", "missing time zone");
	bad("2026-11-29T05:00:00.Z", "decimal point");
	bad("2026-11-29T05:00:00Zjunk", "unexpected text");
	bad("2026-11-29T05", "expected HH:MM:SS");
	bad("2026-1-29", "expected YYYY-MM-DD");
	bad("2026-11-29T05:00:00+5", "offset");
	bad("1969-12-31T23:59:59Z", "out of range");
	bad("2106-02-07T06:28:16Z", "out of range");
	bad("now-", "now-DURATION");
	bad("now+10m", "now-DURATION");
	bad("now-10", "unit");
	bad("now-10x", "unit");
	bad("now-m", "number");
	bad("now-100000w", "out of range");
	bad("nowhere", "now-DURATION");

	CHECK_STR(ts_iso(TS(NOW, 7), buf, sizeof buf), "2026-11-29T05:00:00Z");
	CHECK_STR(ts_iso(0, buf, sizeof buf), "1970-01-01T00:00:00Z");
	return check_done();
}
