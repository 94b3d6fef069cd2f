/*
 * dump.c — export-bson and dump: a source's entries from --since to --until
 * (both inclusive), raw or as Extended JSON.  Seeking to --since is the
 * reader's B-tree lookup.
 */
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bson/bson.h>
#include "err.h"
#include "log.h"
#include "mj.h"

#define OUT_BUF (4u << 20)

struct dumper {
	struct mj *m;
	struct mj_out out;
	enum mj_format format;
	const char *ns, *ops;
	long long limit, n;
	int bad_json;              /* entries that could not be shown as JSON */
};

static int keep_entry(const struct dumper *d, const struct jnl_entry *e)
{
	bson_t b;
	bson_iter_t it;

	if (!d->ns && !d->ops)
		return 1;
	if (!bson_init_static(&b, e->bson, e->len))
		return 0;
	if (d->ns) {
		const char *ns = "";
		if (bson_iter_init_find(&it, &b, "ns") && BSON_ITER_HOLDS_UTF8(&it))
			ns = bson_iter_utf8(&it, NULL);
		if (fnmatch(d->ns, ns, 0) != 0)
			return 0;
	}
	if (d->ops) {
		const char *op = NULL;
		uint32_t len = 0;
		if (bson_iter_init_find(&it, &b, "op") && BSON_ITER_HOLDS_UTF8(&it))
			op = bson_iter_utf8(&it, &len);
		if (!op || len != 1 || *op == ',' || !strchr(d->ops, *op))
			return 0;
	}
	return 1;
}

static void emit(struct dumper *d, const struct jnl_entry *e, const struct jnl_source *s)
{
	bson_t b;
	char *json = NULL;
	size_t len = 0;
	char a[24];

	if (d->format == MJ_FMT_BSON) {
		mj_out_write(&d->out, e->bson, e->len);
		return;
	}
	if (bson_init_static(&b, e->bson, e->len))
		json = d->format == MJ_FMT_CANONICAL ? bson_as_canonical_extended_json(&b, &len)
		    : bson_as_relaxed_extended_json(&b, &len);
	if (!json) {
		if (!d->bad_json++)
			log_warnx("entry %s of source '%s' cannot be shown as Extended JSON "
			    "(invalid UTF-8?): skipped, see it with --format bson",
			    mj_ts(e->ts, a, sizeof a), s->name);
		return;
	}
	json[len] = '\n';   /* replaces the NUL: written by length */
	mj_out_write(&d->out, json, len + 1);
	bson_free(json);
}

static int first_block_fn(void *arg, const struct jnl_block_info *info, int parse_rc,
    const uint8_t *data, size_t len)
{
	(void)parse_rc;
	(void)data;
	(void)len;
	*(uint64_t *)arg = info->first_ts;
	return 1;
}

/* The first ts (key) of the first block of SOURCE holding entries at or
 * after FROM: after a reader failed, the block it could not read.  0 or -1. */
static int locate_block(struct mj *m, const uint8_t source[16], uint64_t from, uint64_t *ts)
{
	*ts = 0;
	return jnl_block_walk(m->j, source, from, 0, first_block_fn, ts) == 1 ? 0 : -1;
}

/* Entries of one source.  0 to go on, 1 after logging a failure, -1 when
 * the limit was reached. */
static int dump_source(struct dumper *d, const struct jnl_source *s, uint64_t since,
    uint64_t until)
{
	struct jnl_reader *r = NULL;
	struct jnl_entry e;
	uint64_t last = 0;
	char a[24];
	int rc, limit_hit = 0;

	rc = jnl_reader_open(d->m->j, s->uuid, since, &r);
	if (rc)
		return log_error(1, "unable to read source '%s' of journal '%s': %s", s->name,
		    d->m->path, mmm_strerror(rc));
	while ((rc = jnl_reader_next(r, &e)) == 0) {
		last = e.ts;
		if (until && e.ts > until)
			break;
		if (!keep_entry(d, &e))
			continue;
		emit(d, &e, s);
		if (d->out.err)
			break;
		if (d->limit && ++d->n >= d->limit) {
			limit_hit = 1;
			break;
		}
	}
	if (rc != 0 && rc != MMM_EEND) {
		uint64_t bad;
		jnl_reader_free(r);
		if (locate_block(d->m, s->uuid, last ? last + 1 : since, &bad) == 0)
			return log_error(1, "bad block of source '%s' at ts %s: %s", s->name,
			    mj_ts(bad, a, sizeof a), mmm_strerror(rc));
		return log_error(1, "unable to read source '%s' of journal '%s': %s", s->name,
		    d->m->path, mmm_strerror(rc));
	}
	jnl_reader_free(r);
	return limit_hit ? -1 : 0;
}

/* Runs the dump over SOURCES to fd (named NAME).  Returns an exit status. */
static int run(struct dumper *d, const struct jnl_source *sources, size_t n, int fd,
    const char *name)
{
	const struct mj_opts *o = d->m->o;
	int ret = 0, rc = 0;

	if (mj_out_init(&d->out, fd, name, OUT_BUF))
		return log_error(1, "out of memory");
	for (size_t i = 0; i < n && rc == 0 && !d->out.err; i++)
		rc = dump_source(d, &sources[i], o->since, o->until);
	if (rc > 0)
		ret = 1;
	if (mj_out_flush(&d->out)) {
		if (d->out.err != EPIPE)
			log_warnx("unable to write '%s': %s", name, strerror(d->out.err));
		ret = 1;
	}
	if (d->bad_json) {
		if (d->bad_json > 1)
			log_warnx("%d entries could not be shown as Extended JSON", d->bad_json);
		ret = 1;
	}
	mj_out_release(&d->out);
	return ret;
}

/* Output to -o FILE (temp + rename) or stdout. */
static int run_to_output(struct dumper *d, const struct jnl_source *sources, size_t n)
{
	const char *path = d->m->o->output;
	struct mj_file f;
	int ret, rc;

	if (!path || strcmp(path, "-") == 0)
		return run(d, sources, n, 1, "stdout");
	if ((rc = mj_file_open(&f, path)))
		return log_error(1, "unable to create '%s': %s", path, strerror(rc));
	ret = run(d, sources, n, f.fd, path);
	if (ret) {
		mj_file_abort(&f);
		return ret;
	}
	if ((rc = mj_file_commit(&f)))
		return log_error(1, "unable to write '%s': %s", path, strerror(rc));
	return 0;
}

int cmd_export(struct mj *m)
{
	struct dumper d = { .m = m, .format = MJ_FMT_BSON };
	struct jnl_source s;

	if (mj_open(m, JNL_RDONLY) || mj_source(m, m->o->source, &s))
		return 1;
	return run_to_output(&d, &s, 1);
}

int cmd_dump(struct mj *m)
{
	const struct mj_opts *o = m->o;
	struct dumper d = { .m = m, .format = o->format, .ns = o->ns, .ops = o->ops,
	    .limit = o->limit };
	struct jnl_source one, *list = NULL;
	size_t n = 0;
	int rc, ret;

	if (mj_open(m, JNL_RDONLY))
		return 1;
	if (o->source) {
		if (mj_source(m, o->source, &one))
			return 1;
		return run_to_output(&d, &one, 1);
	}
	if ((rc = jnl_source_list(m->j, &list, &n)))
		return log_error(1, "unable to list the sources of journal '%s': %s", m->path,
		    mmm_strerror(rc));
	ret = run_to_output(&d, list, n);
	free(list);
	return ret;
}
