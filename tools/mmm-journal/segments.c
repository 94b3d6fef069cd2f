/* segments.c — ship, receive and prune (DESIGN.md §4, segment.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "log.h"
#include "mj.h"
#include "segment.h"

int cmd_ship(struct mj *m)
{
	const struct mj_opts *o = m->o;
	struct jnl_source s;
	struct seg_stats st;
	char msg[512], a[24], b[24];
	int rc;

	if (mj_open(m, JNL_RDONLY) || mj_source(m, o->source, &s))
		return 1;
	memset(&st, 0, sizeof st);
	msg[0] = '\0';
	rc = seg_ship(m->j, s.uuid, o->since, o->until, o->output, &st, msg, sizeof msg);
	if (rc == MMM_ENOTFOUND && !msg[0])
		return log_error(1, "source '%s' has no entries in that range", s.name);
	if (rc)
		return log_error(1, "%s", msg[0] ? msg : mmm_strerror(rc));
	if (!o->quiet)
		log_info("shipped %" PRIu64 " block%s (%" PRIu64 " entries, ts %s to %s) of source "
		    "'%s' to '%s'", st.blocks, st.blocks == 1 ? "" : "s", st.entries,
		    mj_ts(st.first_ts, a, sizeof a),
		    mj_ts(st.last_ts, b, sizeof b), s.name, o->output);
	return 0;
}

/* Reads FILE whole and checks it as a segment: 0 when good, else logs and 1. */
static int precheck(const char *file)
{
	struct seg_stats st;
	char msg[512] = "";
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	FILE *f = fopen(file, "rb");
	int rc;

	if (!f)
		return log_error(1, "unable to open '%s': %s", file, strerror(errno));
	for (;;) {
		if (len == cap) {
			uint8_t *nb = realloc(buf, cap = cap ? cap * 2 : 1 << 20);
			if (!nb) {
				free(buf);
				fclose(f);
				return log_error(1, "%s: out of memory", file);
			}
			buf = nb;
		}
		size_t r = fread(buf + len, 1, cap - len, f);
		len += r;
		if (r == 0)
			break;
	}
	rc = ferror(f) ? errno : 0;
	fclose(f);
	if (rc) {
		free(buf);
		return log_error(1, "unable to read '%s': %s", file, strerror(rc));
	}
	rc = seg_check(buf, len, &st, msg, sizeof msg);
	free(buf);
	if (rc)
		return log_error(1, "%s", msg[0] ? msg : mmm_strerror(rc));
	return 0;
}

/* With -c, the config's name of the segment's source (FORMAT.md §3: the
 * source UUID is at offset 40 of the header); NULL when unknown. */
static const char *config_name(struct mj *m, const char *file)
{
	const struct cfg_server *srv;
	uint8_t hdr[56];
	FILE *f;
	size_t n;

	if (!m->cfg || !(f = fopen(file, "rb")))
		return NULL;
	n = fread(hdr, 1, sizeof hdr, f);
	fclose(f);
	if (n != sizeof hdr)
		return NULL;
	srv = cfg_server_by_uuid(m->cfg, hdr + 40);
	return srv ? srv->name : NULL;
}

int cmd_receive(struct mj *m)
{
	const struct mj_opts *o = m->o;
	int failed = 0, first = 0, rc;

	/* Receiving is how a site starts: an absent journal is created, but
	 * only when some file is a good segment (bad input changes nothing). */
	rc = jnl_open(m->path, 0, &m->j);
	if (rc == ENOENT) {
		m->j = NULL;
		while (first < o->nargs && precheck(o->args[first]))
			first++;   /* refused and reported already */
		if (first == o->nargs)
			return 1;
		failed = first;
		if (mj_open(m, JNL_CREATE))
			return 1;
	} else if (rc) {
		m->j = NULL;
		return log_error(1, "unable to open journal '%s': %s", m->path, mmm_strerror(rc));
	}
	for (int i = first; i < o->nargs; i++) {
		const char *file = o->args[i];
		struct seg_stats st;
		char msg[512];

		memset(&st, 0, sizeof st);
		msg[0] = '\0';
		rc = seg_receive(m->j, file, o->name ? o->name : config_name(m, file), o->allow_gap,
		    &st, msg, sizeof msg);
		if (rc) {
			if (msg[0])
				log_warnx("%s", msg);
			else
				log_warnx("%s: %s", file, mmm_strerror(rc));
			failed++;
			continue;
		}
		if (!o->quiet)
			log_info("%s: added %zu block%s, skipped %zu (%" PRIu64 " entries)", file,
			    st.added, st.added == 1 ? "" : "s", st.skipped, st.entries);
	}
	return failed ? 1 : 0;
}

int cmd_prune(struct mj *m)
{
	size_t dropped = 0;
	char a[24];
	int rc;

	if (mj_open(m, 0))
		return 1;
	if ((rc = jnl_prune(m->j, m->o->before, &dropped)))
		return log_error(1, "unable to prune journal '%s': %s", m->path, mmm_strerror(rc));
	if (!m->o->quiet)
		log_info("pruned %zu blocks older than %s", dropped, mj_ts(m->o->before, a, sizeof a));
	return 0;
}
