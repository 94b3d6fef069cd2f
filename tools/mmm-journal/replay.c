/* replay.c — mmm-journal replay: a range of a source's entries into a server. */
#include <stdio.h>
#include <string.h>
#include <mongoc/mongoc.h>
#include "apply.h"
#include "err.h"
#include "journal.h"
#include "log.h"
#include "mj.h"

int cmd_replay(struct mj *m)
{
	const struct mj_opts *o = m->o;
	struct jnl_source src;
	const char *to = o->to, *slash, *uri = NULL;
	char name[256], msg[1024], a[32], b[32];
	const char *ns = NULL;
	uint64_t applied = 0;
	int rc;

	if (strncmp(to, "mongodb://", 10) == 0 || strncmp(to, "mongodb+srv://", 14) == 0) {
		uri = to;
	} else {
		const struct cfg_server *s;
		slash = strchr(to, '/');
		snprintf(name, sizeof name, "%.*s", slash ? (int)(slash - to) : (int)strlen(to), to);
		ns = slash ? slash + 1 : NULL;
		if (m->cfg == NULL || (s = cfg_server_by_name(m->cfg, name)) == NULL) {
			log_warnx("--to '%s': unknown server '%s'%s", to, name,
			    m->cfg ? "" : " (name servers with -c FILE, or give a mongodb:// URI)");
			return 2;
		}
		uri = s->uri;
	}
	if (mj_open(m, JNL_RDONLY) != 0 || mj_source(m, o->source, &src) != 0)
		return 1;
	mongoc_init();
	rc = app_replay(m->j, src.uuid, o->since, o->until, uri, ns, &applied, msg, sizeof msg);
	mongoc_cleanup();
	if (rc == MMM_EUSAGE) {
		log_warnx("--to '%s': %s", to, msg);
		return 2;
	}
	if (rc != 0) {
		log_warnx("replay of '%s' into '%s' stopped after %llu entries: %s", src.name, to,
		    (unsigned long long)applied, msg);
		return 1;
	}
	if (!o->quiet)
		log_info("replayed %llu entries of '%s' (%s..%s) into '%s'", (unsigned long long)applied, src.name,
		    mj_ts(o->since, a, sizeof a), o->until ? mj_ts(o->until, b, sizeof b) : "end", to);
	return 0;
}
