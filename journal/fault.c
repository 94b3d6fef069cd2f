/* fault.c — see fault.h. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "err.h"
#include "fault.h"
#include "log.h"

#define FAULT_MAX 16

struct fault {
	char point[48];
	long at;            /* act on this hit ... */
	int and_after;      /* ... and, with "+", every later one */
	int rc;             /* 0 = crash */
	atomic_long hits;
};

static struct fault faults[FAULT_MAX];
static int nfaults;
static atomic_int armed;

int fault_init(void)
{
	const char *spec = getenv("MMM_FAULT");
	char buf[512], *save = NULL, *tok;

	nfaults = 0;
	atomic_store(&armed, 0);
	if (spec == NULL || *spec == '\0')
		return 0;
	snprintf(buf, sizeof buf, "%s", spec);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *at = strchr(tok, '@'), *colon = strchr(tok, ':'), *end;
		struct fault *f;
		if (!at || !colon || colon < at || nfaults == FAULT_MAX ||
		    (size_t)(at - tok) >= sizeof faults[0].point)
			goto bad;
		f = &faults[nfaults];
		memset(f->point, 0, sizeof f->point);
		memcpy(f->point, tok, (size_t)(at - tok));
		f->at = strtol(at + 1, &end, 10);
		if (end == at + 1 || f->at < 1)
			goto bad;
		f->and_after = (*end == '+');
		if (f->and_after)
			end++;
		if (end != colon)
			goto bad;
		if (strcmp(colon + 1, "crash") == 0)
			f->rc = 0;
		else if ((f->rc = mmm_errcode(colon + 1)) == 0)
			goto bad;
		atomic_store(&f->hits, 0);
		nfaults++;
	}
	atomic_store(&armed, nfaults > 0);
	return 0;
bad:
	nfaults = 0;
	log_warnx("malformed MMM_FAULT '%s': expected POINT@N[+]:crash|ERRNAME[,...]", spec);
	return MMM_EUSAGE;
}

int fault_hit(const char *point)
{
	if (!atomic_load_explicit(&armed, memory_order_relaxed))
		return 0;
	for (int i = 0; i < nfaults; i++) {
		struct fault *f = &faults[i];
		long n;
		if (strcmp(f->point, point) != 0)
			continue;
		n = atomic_fetch_add(&f->hits, 1) + 1;
		if (n == f->at || (f->and_after && n > f->at)) {
			if (f->rc == 0)
				_exit(137);
			return f->rc;
		}
	}
	return 0;
}
