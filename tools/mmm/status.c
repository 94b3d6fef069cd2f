/* status.c — `mmm status`: sources, links and the number of records in the
 * conflict log, from the journal alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "capture.h"
#include "config.h"
#include "err.h"
#include "journal.h"
#include "log.h"
#include "mmm.h"
#include "ts.h"

#define STALE_MS 5000

struct link_row {
	char key[128], src[128], dst[128], state[32], error[768];
	char ids[8][3 * LINK_NS_MAX];
	int nids;
	uint8_t src_uuid[16];
	uint64_t applied_ts;
	int64_t applied_wall, updated, conflicts;
};

struct rows {
	struct link_row *v;
	size_t n;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *get_str(const bson_t *d, const char *k, const char *dflt)
{
	bson_iter_t it;
	return bson_iter_init_find(&it, d, k) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : dflt;
}

static int64_t get_int(const bson_t *d, const char *k)
{
	bson_iter_t it;
	if (!bson_iter_init_find(&it, d, k))
		return 0;
	if (BSON_ITER_HOLDS_DATE_TIME(&it))
		return bson_iter_date_time(&it);
	if (BSON_ITER_HOLDS_NUMBER(&it))
		return bson_iter_as_int64(&it);
	return 0;
}

static double get_double(const bson_t *d, const char *k)
{
	bson_iter_t it;
	return bson_iter_init_find(&it, d, k) && BSON_ITER_HOLDS_NUMBER(&it) ? bson_iter_as_double(&it) : 0;
}

static uint64_t get_ts(const bson_t *d, const char *k)
{
	bson_iter_t it;
	uint32_t s, i;
	if (!bson_iter_init_find(&it, d, k) || !BSON_ITER_HOLDS_TIMESTAMP(&it))
		return 0;
	bson_iter_timestamp(&it, &s, &i);
	return JNL_TS(s, i);
}

static int collect_link(void *arg, const char *key, const bson_t *doc)
{
	struct rows *r = arg;
	struct link_row *row, *nv = realloc(r->v, (r->n + 1) * sizeof *nv);
	bson_iter_t it, arr;
	const char *slash;
	if (nv == NULL)
		return ENOMEM;
	r->v = nv;
	row = &r->v[r->n++];
	memset(row, 0, sizeof *row);
	snprintf(row->key, sizeof row->key, "%s", key);
	snprintf(row->src, sizeof row->src, "%s", get_str(doc, "src", "?"));
	snprintf(row->dst, sizeof row->dst, "%s", get_str(doc, "dst", "?"));
	snprintf(row->state, sizeof row->state, "%s", get_str(doc, "state", "?"));
	snprintf(row->error, sizeof row->error, "%s", get_str(doc, "last_error", ""));
	row->applied_ts = get_ts(doc, "applied_ts");
	row->applied_wall = get_int(doc, "applied_wall");
	row->updated = get_int(doc, "updated");
	row->conflicts = get_int(doc, "conflicts");
	if ((slash = strrchr(key, '/')) != NULL)
		uuid_parse(slash + 1, row->src_uuid);
	if (bson_iter_init_find(&it, doc, "links") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr))
		while (bson_iter_next(&arr) && row->nids < 8)
			if (BSON_ITER_HOLDS_UTF8(&arr))
				snprintf(row->ids[row->nids++], sizeof row->ids[0], "%s", bson_iter_utf8(&arr, NULL));
	return 0;
}

/* Wall time (ms) of the first entry of SRC after TS in the journal, 0 when none. */
static int64_t first_wall_after(struct jnl *j, const uint8_t src[16], uint64_t ts)
{
	struct jnl_reader *r;
	struct jnl_entry e;
	int64_t wall = 0;

	if (jnl_reader_open(j, src, ts + 1, &r) != 0)
		return 0;
	if (jnl_reader_next(r, &e) == 0) {
		bson_t doc;
		bson_iter_t it;
		if (bson_init_static(&doc, e.bson, e.len) && bson_iter_init_find(&it, &doc, "wall") &&
		    BSON_ITER_HOLDS_DATE_TIME(&it))
			wall = bson_iter_date_time(&it);
	}
	jnl_reader_free(r);
	return wall;
}

/* Lag of a link right now: how far the applied position trails the newest
 * journaled write, by their wall times.  Before anything was applied, the
 * first entry still to apply stands for the applied position. */
static double link_lag(struct jnl *j, const struct link_row *l, const struct jnl_source *srcs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(srcs[i].uuid, l->src_uuid, 16) == 0) {
			int64_t from = l->applied_wall;
			if (srcs[i].last_ts <= l->applied_ts || !srcs[i].last_wall)
				return 0;
			if (!from && (from = first_wall_after(j, l->src_uuid, l->applied_ts)) == 0)
				return 0;
			double lag = (double)(srcs[i].last_wall - from) / 1000.0;
			return lag > 0 ? lag : 0;
		}
	return 0;
}

static int count_fn(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	++*(uint64_t *)arg;
	return 0;
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

int cmd_status(struct mmm *m)
{
	struct jnl *j;
	struct jnl_source *srcs = NULL;
	struct rows links = { NULL, 0 };
	size_t n = 0;
	uint64_t logged = 0;
	int64_t now = now_ms();
	char ts1[32], iso[32], key[64], u[37];
	int rc;

	if ((rc = jnl_open(m->journal_path, JNL_RDONLY, &j)) != 0) {
		log_warnx("unable to open journal '%s': %s", m->journal_path,
		    rc == ENOENT ? "no journal yet (nothing has run)" : mmm_strerror(rc));
		return 1;
	}
	/* "" rather than NULL: jnl_kv_walk() hands the prefix to memcmp() */
	if ((rc = jnl_source_list(j, &srcs, &n)) != 0 || (rc = jnl_status_walk(j, "apply/", collect_link, &links)) != 0 ||
	    (rc = jnl_kv_walk(j, JNL_KV_CONFLICTS, "", 0, count_fn, &logged)) != 0) {
		log_warnx("cannot read journal '%s': %s", m->journal_path, mmm_strerror(rc));
		jnl_close(j);
		free(srcs);
		free(links.v);
		return 1;
	}
	if (m->o->json)
		printf("{\"journal\":"), json_str(m->journal_path), printf(",\"sources\":[");
	else
		printf("sources (journal %s)\n", m->journal_path);
	for (size_t i = 0; i < n; i++) {
		struct jnl_source *s = &srcs[i];
		bson_t st;
		int have = 0;
		const char *state = s->kind == JNL_RECEIVED ? "received" : "idle";
		double lag = 0, rate = 0;
		int64_t updated = 0;
		const char *error = "";

		uuid_format(s->uuid, u);
		if (jnl_status_get(j, cap_status_key(s->uuid, key, sizeof key), &st) == 0) {
			have = 1;
			state = get_str(&st, "state", state);
			lag = get_double(&st, "lag_s");
			rate = get_double(&st, "rate");
			updated = get_int(&st, "updated");
			error = get_str(&st, "last_error", "");
		}
		int stale = have && strcmp(state, "running") == 0 && now - updated > STALE_MS;
		if (m->o->json) {
			printf("%s{\"name\":", i ? "," : "");
			json_str(s->name);
			printf(",\"uuid\":\"%s\",\"kind\":\"%s\",\"state\":", u, s->kind == JNL_RECEIVED ? "received" : "local");
			json_str(stale ? "stale" : state);
			printf(",\"last_ts\":\"%s\",\"last_wall\":%lld,\"lag_s\":%.3f,\"entries\":%llu,\"rate\":%.1f,\"last_error\":",
			    jnl_ts_str(s->last_ts, ts1, sizeof ts1), (long long)s->last_wall, lag,
			    (unsigned long long)s->entries, rate);
			json_str(error);
			printf("}");
		} else {
			printf("  %-16s %-10s last %-16s %s  lag %.1f s  %llu entries", s->name,
			    stale ? "stale" : state, jnl_ts_str(s->last_ts, ts1, sizeof ts1),
			    s->last_ts ? ts_iso(s->last_ts, iso, sizeof iso) : "-", lag, (unsigned long long)s->entries);
			if (rate > 0)
				printf("  %.0f entries/s", rate);
			if (stale)
				printf("  (no update for %lld s)", (long long)((now - updated) / 1000));
			if (error[0])
				printf("\n      last error: %s", error);
			printf("\n");
		}
		if (have)
			bson_destroy(&st);
	}
	if (m->o->json)
		printf("],\"links\":[");
	else
		printf("links\n");
	for (size_t i = 0; i < links.n; i++) {
		struct link_row *l = &links.v[i];
		double lag = link_lag(j, l, srcs, n);
		int stale = strcmp(l->state, "running") == 0 && now - l->updated > STALE_MS;
		if (m->o->json) {
			printf("%s{\"src\":", i ? "," : "");
			json_str(l->src);
			printf(",\"dst\":");
			json_str(l->dst);
			printf(",\"links\":[");
			for (int k = 0; k < l->nids; k++) {
				printf("%s", k ? "," : "");
				json_str(l->ids[k]);
			}
			printf("],\"state\":");
			json_str(stale ? "stale" : l->state);
			printf(",\"applied_ts\":\"%s\",\"lag_s\":%.3f,\"conflicts\":%lld,\"last_error\":",
			    jnl_ts_str(l->applied_ts, ts1, sizeof ts1), lag, (long long)l->conflicts);
			json_str(l->error);
			printf("}");
		} else {
			for (int k = 0; k < (l->nids ? l->nids : 1); k++)
				printf("  %-40s %-10s applied %-16s lag %.1f s  conflicts %lld\n",
				    l->nids ? l->ids[k] : l->src, stale ? "stale" : l->state,
				    jnl_ts_str(l->applied_ts, ts1, sizeof ts1), lag, (long long)l->conflicts);
			if (l->error[0])
				printf("      last error: %s\n", l->error);
		}
	}
	if (m->o->json)
		printf("],\"conflicts_logged\":%llu}\n", (unsigned long long)logged);
	else if (logged)
		printf("conflicts logged: %llu (mmm-journal -c %s conflicts lists them)\n",
		    (unsigned long long)logged, m->o->config);
	free(srcs);
	free(links.v);
	jnl_close(j);
	return 0;
}
