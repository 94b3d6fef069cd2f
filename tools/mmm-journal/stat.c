/* stat.c — stat (per-source figures, capture status) and verify. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <bson/bson.h>
#include "err.h"
#include "log.h"
#include "mj.h"
#include "ts.h"

static const char *kind_name(enum jnl_kind k)
{
	return k == JNL_LOCAL ? "local" : k == JNL_RECEIVED ? "received" : "unknown";
}

static double ratio(const struct jnl_source *s)
{
	return s->stored_bytes ? (double)s->raw_bytes / (double)s->stored_bytes : 0.0;
}

struct status_ctx {
	FILE *f;
	int json, n;
};

static int status_fn(void *arg, const char *key, const bson_t *doc)
{
	struct status_ctx *c = arg;
	char *js = bson_as_relaxed_extended_json(doc, NULL);

	if (c->json) {
		fputs(c->n ? ",\n    " : "\n    ", c->f);
		mj_json_str(c->f, key);
		fprintf(c->f, ": %s", js ? js : "null");
	} else {
		if (!c->n)
			fputs("status:\n", c->f);
		fprintf(c->f, "  %s %s\n", key, js ? js : "(unreadable)");
	}
	c->n++;
	bson_free(js);
	return 0;
}

static void ts_json(FILE *f, const char *field, uint64_t ts)
{
	char a[24], iso[32];
	fprintf(f, ", \"%s\": ", field);
	if (ts) {
		mj_json_str(f, mj_ts(ts, a, sizeof a));
		fprintf(f, ", \"%s_time\": ", field);
		mj_json_str(f, ts_iso(ts, iso, sizeof iso));
	} else {
		fprintf(f, "null, \"%s_time\": null", field);
	}
}

static void source_json(FILE *f, const struct jnl_source *s)
{
	char id[37];

	uuid_format(s->uuid, id);
	fputs("    {\"name\": ", f);
	mj_json_str(f, s->name);
	fputs(", \"uuid\": ", f);
	mj_json_str(f, id);
	fprintf(f, ", \"kind\": \"%s\", \"entries\": %" PRIu64 ", \"blocks\": %" PRIu64,
	    kind_name(s->kind), s->entries, s->blocks);
	ts_json(f, "first_ts", s->first_ts);
	ts_json(f, "last_ts", s->last_ts);
	fprintf(f, ", \"last_wall\": %" PRId64 ", \"raw_bytes\": %" PRIu64
	    ", \"stored_bytes\": %" PRIu64 ", \"ratio\": %.2f", s->last_wall, s->raw_bytes,
	    s->stored_bytes, ratio(s));
	if (s->uri[0]) {
		fputs(", \"uri\": ", f);
		mj_json_str(f, s->uri);
	}
	if (s->set_name[0]) {
		fputs(", \"set_name\": ", f);
		mj_json_str(f, s->set_name);
	}
	fputc('}', f);
}

static void source_text(FILE *f, const struct jnl_source *s)
{
	char id[37], a[24], b[24], ia[32], ib[32];

	uuid_format(s->uuid, id);
	fprintf(f, "source '%s' (%s, %s)\n", s->name, id, kind_name(s->kind));
	if (s->uri[0])
		fprintf(f, "  uri          %s\n", s->uri);
	if (s->set_name[0])
		fprintf(f, "  replica set  %s\n", s->set_name);
	fprintf(f, "  entries      %" PRIu64 "\n", s->entries);
	fprintf(f, "  blocks       %" PRIu64 "\n", s->blocks);
	if (s->entries) {
		fprintf(f, "  first ts     %-22s %s\n", mj_ts(s->first_ts, a, sizeof a),
		    ts_iso(s->first_ts, ia, sizeof ia));
		fprintf(f, "  last ts      %-22s %s\n", mj_ts(s->last_ts, b, sizeof b),
		    ts_iso(s->last_ts, ib, sizeof ib));
	}
	fprintf(f, "  raw bytes    %" PRIu64 "\n", s->raw_bytes);
	fprintf(f, "  stored bytes %" PRIu64 "\n", s->stored_bytes);
	fprintf(f, "  ratio        %.2f\n", ratio(s));
}

int cmd_stat(struct mj *m)
{
	struct jnl_source *list = NULL;
	struct status_ctx sc = { .f = stdout, .json = m->o->json };
	uint8_t ju[16];
	char jid[37], *data = NULL;
	struct stat st;
	long long fsize = -1;
	size_t n = 0;
	int rc;

	if (mj_open(m, JNL_RDONLY))
		return 1;
	if ((rc = jnl_source_list(m->j, &list, &n)))
		return log_error(1, "unable to list the sources of journal '%s': %s", m->path,
		    mmm_strerror(rc));
	jnl_uuid(m->j, ju);
	uuid_format(ju, jid);
	if (asprintf(&data, "%s/data.mdb", m->path) >= 0 && stat(data, &st) == 0)
		fsize = (long long)st.st_size;
	free(data);

	if (m->o->json) {
		fputs("{\"journal\": ", stdout);
		mj_json_str(stdout, m->path);
		fputs(", \"uuid\": ", stdout);
		mj_json_str(stdout, jid);
		printf(", \"file_bytes\": %lld,\n  \"sources\": [", fsize);
		for (size_t i = 0; i < n; i++) {
			fputs(i ? ",\n" : "\n", stdout);
			source_json(stdout, &list[i]);
		}
		fputs("],\n  \"status\": {", stdout);
		rc = jnl_status_walk(m->j, "capture/", status_fn, &sc);
		fputs("}}\n", stdout);
	} else {
		printf("journal '%s' (%s): %lld bytes, %zu source%s\n", m->path, jid, fsize, n,
		    n == 1 ? "" : "s");
		for (size_t i = 0; i < n; i++)
			source_text(stdout, &list[i]);
		rc = jnl_status_walk(m->j, "capture/", status_fn, &sc);
	}
	free(list);
	if (rc && rc != MMM_ENOTFOUND)
		return log_error(1, "unable to read the status records of journal '%s': %s", m->path,
		    mmm_strerror(rc));
	if (fflush(stdout) || ferror(stdout))
		return log_error(1, "unable to write stdout: %s", strerror(errno));
	return 0;
}

struct verify_progress {
	int on, shown;
	time_t last;
};

static void verify_progress(void *arg, uint64_t blocks)
{
	struct verify_progress *vp = arg;
	time_t now = time(NULL);
	char line[96];
	int n;

	if (!vp->on || now == vp->last)
		return;
	vp->last = now;
	n = snprintf(line, sizeof line, "\r%s: verifying: %" PRIu64 " blocks\033[K", log_prog(), blocks);
	vp->shown = write(2, line, (size_t)n) > 0;
}

int cmd_verify(struct mj *m)
{
	struct verify_progress vp = { .on = !m->o->quiet && isatty(2), .last = time(NULL) };
	struct jnl_verify_result res;
	char label[200], a[24];
	int rc;

	if (mj_open(m, JNL_RDONLY))
		return 1;
	memset(&res, 0, sizeof res);
	rc = jnl_verify(m->j, &res, verify_progress, &vp);
	if (vp.shown && write(2, "\r\033[K", 4) < 0)
		vp.shown = 0;
	if (rc == 0) {
		printf("ok: %" PRIu64 " blocks, %" PRIu64 " entries\n", res.blocks, res.entries);
		return 0;
	}
	if (rc == MMM_ECORRUPT) {
		log_warnx("bad block of source %s at ts %s: %s", mj_source_label(m, res.bad_source,
		    label, sizeof label), mj_ts(res.bad_ts, a, sizeof a),
		    res.reason[0] ? res.reason : mmm_strerror(res.rc ? res.rc : rc));
		return 1;
	}
	return log_error(1, "unable to verify journal '%s': %s", m->path, mmm_strerror(rc));
}
