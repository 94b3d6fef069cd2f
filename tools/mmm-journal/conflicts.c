/*
 * conflicts.c — conflicts: the journal's conflict log (JNL_KV_CONFLICTS,
 * written by mmm-apply, apply/CONFLICTS.md §4; records as stamp.h's
 * clog_value()), one record per line, as text or JSON.
 *
 * Records come in key order: by namespace, then document, then the late
 * write's stamp.  They are rendered into memory inside the walk's read
 * transaction and written out after it ended, so a slow reader of stdout (a
 * pager) never keeps an LMDB snapshot open while the daemons write.
 */
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bson/bson.h>
#include "err.h"
#include "log.h"
#include "mj.h"
#include "stamp.h"

/* One record, parsed; pointers into the value (valid during the walk). */
struct clog_view {
	const char *ns, *how, *result;
	bson_t id;                 /* {_id: value} */
	uint8_t master[16];
	struct stamp late, newer, base;
	int has_base;
	int64_t at;
};

struct lister {
	struct mj *m;
	const struct jnl_source *srcs;
	size_t nsrcs;
	FILE *out;                 /* memory stream */
	int json;
	size_t bad;                /* records skipped as unreadable */
};

/* MS (since the epoch) as "2026-11-29T08:00:00.123Z" into BUF (>= 32 bytes). */
static const char *iso_ms(int64_t ms, char *buf, size_t len)
{
	int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
	time_t t = (time_t)sec;
	struct tm tm;
	size_t n;

	if (!gmtime_r(&t, &tm) || (n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm)) == 0) {
		snprintf(buf, len, "%" PRId64, ms);
		return buf;
	}
	snprintf(buf + n, len - n, ".%03dZ", (int)(ms - sec * 1000));
	return buf;
}

/* Name of master UUID: the journal's source name, else the config's server
 * name, else the UUID text (in ID, which also receives the UUID text). */
static const char *name_of(const struct lister *l, const uint8_t uuid[16], char id[37])
{
	const struct cfg_server *s;

	uuid_format(uuid, id);
	for (size_t i = 0; i < l->nsrcs; i++)
		if (memcmp(l->srcs[i].uuid, uuid, 16) == 0 && l->srcs[i].name[0] &&
		    strcmp(l->srcs[i].name, id) != 0)
			return l->srcs[i].name;
	if (l->m->cfg && (s = cfg_server_by_uuid(l->m->cfg, uuid)) != NULL)
		return s->name;
	return id;
}

/* Parses a record's value: 0, or -1 when it is not a record. */
static int parse(const uint8_t *val, size_t vlen, struct clog_view *v)
{
	bson_t doc;
	bson_iter_t it;
	size_t off;
	int seen = 0;   /* bits of the required fields */

	memset(v, 0, sizeof *v);
	if (!bson_init_static(&doc, val, vlen) || !bson_validate(&doc, BSON_VALIDATE_UTF8, &off) ||
	    !bson_iter_init(&it, &doc))
		return -1;
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		if (strcmp(k, "ns") == 0 && BSON_ITER_HOLDS_UTF8(&it)) {
			v->ns = bson_iter_utf8(&it, NULL);
			seen |= 1;
		} else if (strcmp(k, "id") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it)) {
			uint32_t len;
			const uint8_t *data;
			bson_iter_document(&it, &len, &data);
			if (!bson_init_static(&v->id, data, len))
				return -1;
			seen |= 2;
		} else if (strcmp(k, "master") == 0 && BSON_ITER_HOLDS_BINARY(&it)) {
			bson_subtype_t st;
			uint32_t len;
			const uint8_t *data;
			bson_iter_binary(&it, &st, &len, &data);
			if (len != 16)
				return -1;
			memcpy(v->master, data, 16);
			seen |= 4;
		} else if (strcmp(k, "late") == 0) {
			if (stamp_from_iter(&it, &v->late))
				return -1;
			seen |= 8;
		} else if (strcmp(k, "newer") == 0) {
			if (stamp_from_iter(&it, &v->newer))
				return -1;
			seen |= 16;
		} else if (strcmp(k, "base") == 0) {
			if (stamp_from_iter(&it, &v->base))
				return -1;
			v->has_base = 1;
		} else if (strcmp(k, "how") == 0 && BSON_ITER_HOLDS_UTF8(&it)) {
			v->how = bson_iter_utf8(&it, NULL);
			seen |= 32;
		} else if (strcmp(k, "result") == 0 && BSON_ITER_HOLDS_UTF8(&it)) {
			v->result = bson_iter_utf8(&it, NULL);
			seen |= 64;
		} else if (strcmp(k, "at") == 0 && BSON_ITER_HOLDS_DATE_TIME(&it)) {
			v->at = bson_iter_date_time(&it);
			seen |= 128;
		}
	}
	if (seen != 255)
		return -1;
	/* id must be exactly {_id: value} */
	if (!bson_iter_init(&it, &v->id) || !bson_iter_next(&it) || strcmp(bson_iter_key(&it), "_id") != 0 ||
	    bson_iter_next(&it))
		return -1;
	return 0;
}

/* The _id value of V as relaxed Extended JSON (bson_free()), or NULL. */
static char *id_json(const struct clog_view *v)
{
	static const char pre[] = "{ \"_id\" : ", post[] = " }";
	size_t len = 0, pl = sizeof pre - 1, ql = sizeof post - 1;
	char *js = bson_as_relaxed_extended_json(&v->id, &len);

	if (!js)
		return NULL;
	if (len < pl + ql || memcmp(js, pre, pl) != 0 || memcmp(js + len - ql, post, ql) != 0) {
		bson_free(js);
		return NULL;
	}
	memmove(js, js + pl, len - pl - ql);
	js[len - pl - ql] = '\0';
	return js;
}

static void stamp_json(const struct lister *l, const char *key, const struct stamp *s)
{
	char id[37], ts[24], wall[40];
	const char *name = name_of(l, s->origin, id);

	fprintf(l->out, ", \"%s\": {\"origin\": ", key);
	mj_json_str(l->out, name);
	fprintf(l->out, ", \"origin_uuid\": \"%s\", \"ts\": \"%s\", \"wall\": \"%s\", \"k\": %" PRIu32 "}",
	    id, mj_ts(s->ts, ts, sizeof ts), iso_ms(s->wall, wall, sizeof wall), s->k);
}

/* "at 1764403200:3 (wall 2026-11-29T08:00:00.123Z)", " op K" after the ts
 * for the K-th operation of an applyOps. */
static void stamp_text(const struct lister *l, const struct stamp *s)
{
	char ts[24], wall[40];

	fprintf(l->out, "at %s", mj_ts(s->ts, ts, sizeof ts));
	if (s->k)
		fprintf(l->out, " op %" PRIu32, s->k);
	fprintf(l->out, " (wall %s)", iso_ms(s->wall, wall, sizeof wall));
}

static void emit_json(const struct lister *l, const struct clog_view *v, const char *idj)
{
	char id[37], at[40];

	fputs("{\"ns\": ", l->out);
	mj_json_str(l->out, v->ns);
	fprintf(l->out, ", \"_id\": %s, \"master\": ", idj);
	mj_json_str(l->out, name_of(l, v->master, id));
	stamp_json(l, "late", &v->late);
	stamp_json(l, "newer", &v->newer);
	fputs(", \"how\": ", l->out);
	mj_json_str(l->out, v->how);
	if (v->has_base && strcmp(v->how, "degraded") != 0)
		stamp_json(l, "base", &v->base);
	fputs(", \"result\": ", l->out);
	mj_json_str(l->out, v->result);
	fprintf(l->out, ", \"at\": \"%s\"}\n", iso_ms(v->at, at, sizeof at));
}

static void emit_text(const struct lister *l, const struct clog_view *v, const char *idj)
{
	char id[37], mid[37], at[40];
	const char *master = name_of(l, v->master, mid);

	fprintf(l->out, "%s %s _id=%s on %s: write of %s ", iso_ms(v->at, at, sizeof at), v->ns, idj,
	    master, name_of(l, v->late.origin, id));
	stamp_text(l, &v->late);
	fprintf(l->out, " came after %s's ", name_of(l, v->newer.origin, id));
	stamp_text(l, &v->newer);
	if (strcmp(v->how, "degraded") == 0) {
		fprintf(l->out, "; degraded (no full image in the journal): re-derived from the "
		    "document on %s: %s\n", master, v->result);
		return;
	}
	if (!v->has_base) {
		fprintf(l->out, "; re-derived from %s: %s\n", v->how, v->result);
		return;
	}
	fprintf(l->out, "; re-derived from %s of %s ", v->how, name_of(l, v->base.origin, id));
	stamp_text(l, &v->base);
	fprintf(l->out, ": %s\n", v->result);
}

/* Removes the blanks libbson puts between JSON tokens: the text form keeps
 * an _id one word (unless a string in it holds blanks). */
static void compact(char *js)
{
	char *w = js;
	int in_str = 0;

	for (char *r = js; *r; r++) {
		if (in_str) {
			if (*r == '\\' && r[1])
				*w++ = *r++;
			else if (*r == '"')
				in_str = 0;
		} else if (*r == ' ') {
			continue;
		} else if (*r == '"') {
			in_str = 1;
		}
		*w++ = *r;
	}
	*w = '\0';
}

/* The key's filters, before the value is parsed (so a record outside them is
 * not read at all): ns from the key, and the late stamp at its end. */
static int key_matches(const struct mj_opts *o, const char *kns, size_t nl, size_t klen,
    const uint8_t *key)
{
	struct stamp late;

	if (o->ns && fnmatch(o->ns, kns, 0) != 0)
		return 0;
	if (o->since && klen >= nl + 1 + 5 + STAMP_LEN) {
		stamp_decode(key + klen - STAMP_LEN, &late);
		if (late.ts < o->since)
			return 0;
	}
	return 1;
}

static int record_fn(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct lister *l = arg;
	const struct mj_opts *o = l->m->o;
	const char *kns = key, *nul = memchr(key, '\0', klen);
	struct clog_view v;
	char *idj = NULL;

	if (nul && !key_matches(o, kns, (size_t)(nul - kns), klen, key))
		return 0;
	if (!nul || parse(val, vlen, &v) || (idj = id_json(&v)) == NULL) {
		log_warnx("unreadable conflict record of '%s' in journal '%s': skipped",
		    nul ? kns : "(no namespace)", l->m->path);
		l->bad++;
		return 0;
	}
	if (!(o->since && v.late.ts < o->since) && !(o->ns && fnmatch(o->ns, v.ns, 0) != 0)) {
		if (l->json) {
			emit_json(l, &v, idj);
		} else {
			compact(idj);
			emit_text(l, &v, idj);
		}
	}
	bson_free(idj);
	return 0;
}

int cmd_conflicts(struct mj *m)
{
	struct lister l = { .m = m, .json = m->o->json };
	struct jnl_source *srcs = NULL;
	char *buf = NULL;
	size_t len = 0, n = 0;
	ssize_t w;
	int rc, ret = 0;

	if (mj_open(m, JNL_RDONLY))
		return 1;
	if ((rc = jnl_source_list(m->j, &srcs, &n)))
		return log_error(1, "unable to list the sources of journal '%s': %s", m->path,
		    mmm_strerror(rc));
	l.srcs = srcs;
	l.nsrcs = n;
	if ((l.out = open_memstream(&buf, &len)) == NULL) {
		free(srcs);
		return log_error(1, "out of memory");
	}
	/* "" rather than NULL: jnl_kv_walk() hands the prefix to memcmp() */
	rc = jnl_kv_walk(m->j, JNL_KV_CONFLICTS, "", 0, record_fn, &l);
	if (fclose(l.out) != 0 && !rc)
		rc = ENOMEM;
	free(srcs);
	if (rc) {
		free(buf);
		return log_error(1, "unable to read the conflict log of journal '%s': %s", m->path,
		    mmm_strerror(rc));
	}
	for (size_t off = 0; off < len; off += (size_t)w)
		if ((w = write(1, buf + off, len - off)) < 0) {
			if (errno == EINTR) {
				w = 0;
				continue;
			}
			if (errno != EPIPE)
				log_warnx("unable to write stdout: %s", strerror(errno));
			ret = 1;
			break;
		}
	free(buf);
	return l.bad ? 1 : ret;
}
