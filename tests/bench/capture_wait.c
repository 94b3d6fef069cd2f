/*
 * capture_wait — helper of bench_capture.py: waits until the journal in DIR
 * holds an entry of SOURCE (name or UUID) with ts >= UNTIL (SECONDS:INC),
 * polling every millisecond, then prints "reached T" where T is
 * CLOCK_MONOTONIC in seconds (Python's time.monotonic()).  With --lag it
 * instead samples, every 100 ms for SECS seconds, how far the journal's
 * last entry is behind the wall clock (ms), and prints "lag max M p50 P".
 *
 *   capture_wait DIR SOURCE UNTIL TIMEOUT_SECS
 *   capture_wait --lag DIR SOURCE SECS
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "journal.h"

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static struct jnl *open_wait(const char *dir, double deadline)
{
	struct jnl *j = NULL;
	while (jnl_open(dir, JNL_RDONLY, &j) != 0) {
		if (mono_s() > deadline)
			return NULL;
		usleep(1000);
	}
	return j;
}

int main(int argc, char **argv)
{
	struct jnl_source s;
	struct jnl *j;

	if (argc == 5 && strcmp(argv[1], "--lag") == 0) {
		double secs = atof(argv[4]), end = mono_s() + secs;
		int64_t *lag = calloc((size_t)(secs * 10 + 16), sizeof *lag);
		size_t n = 0;
		if ((j = open_wait(argv[2], mono_s() + 10)) == NULL)
			return 1;
		while (mono_s() < end) {
			if (jnl_source_find(j, argv[3], &s) == 0 && s.last_wall)
				lag[n++] = wall_ms() - s.last_wall;
			usleep(100 * 1000);
		}
		jnl_close(j);
		if (n == 0)
			return 1;
		qsort(lag, n, sizeof *lag, cmp64);
		printf("lag max %lld p50 %lld samples %zu\n", (long long)lag[n - 1], (long long)lag[n / 2], n);
		free(lag);
		return 0;
	}
	if (argc == 5) {
		unsigned long a, b;
		uint64_t until;
		double deadline = mono_s() + atof(argv[4]);
		if (sscanf(argv[3], "%lu:%lu", &a, &b) != 2)
			return 2;
		until = JNL_TS(a, b);
		if ((j = open_wait(argv[1], deadline)) == NULL)
			return 1;
		for (;;) {
			if (jnl_source_find(j, argv[2], &s) == 0 && s.last_ts >= until)
				break;
			if (mono_s() > deadline) {
				jnl_close(j);
				return 1;
			}
			usleep(1000);
		}
		printf("reached %.6f\n", mono_s());
		jnl_close(j);
		return 0;
	}
	fprintf(stderr, "usage: capture_wait DIR SOURCE UNTIL TIMEOUT | --lag DIR SOURCE SECS\n");
	return 2;
}
