/*
 * check.h — the unit-test harness: CHECK() counts, never aborts, and
 * check_done() prints "N passed, N failed" as the last line and returns the
 * exit status.  tests/run.sh sums those lines into make test's total.
 */
#ifndef MMM_CHECK_H
#define MMM_CHECK_H
#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond) do {                                                  \
	if (cond) check_passed++;                                             \
	else { check_failed++;                                                \
	       fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)

#define CHECK_MSG(cond, ...) do {                                         \
	if (cond) check_passed++;                                             \
	else { check_failed++; fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__,  \
	       __LINE__, #cond); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } \
} while (0)

#define CHECK_INT(a, b) CHECK_MSG((long long)(a) == (long long)(b), "%lld != %lld", \
	(long long)(a), (long long)(b))
#define CHECK_STR(a, b) CHECK_MSG(strcmp((a), (b)) == 0, "'%s' != '%s'", (a), (b))

static inline int check_done(void)
{
	printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}
#endif
