/* common.c — helpers shared by the mmm subcommands (see mmm.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "log.h"
#include "mmm.h"
#include "util.h"

mongoc_client_t *mmm_try_connect(const struct cfg_server *srv, char *why, size_t len)
{
	bson_error_t err;
	mongoc_uri_t *uri;
	mongoc_client_t *c = NULL;
	bson_t ping = BSON_INITIALIZER;

	if ((uri = mongoc_uri_new_with_error(srv->uri, &err)) == NULL) {
		snprintf(why, len, "bad uri for '%s': %s", srv->name, err.message);
		return NULL;
	}
	mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 3000);
	mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 2000);
	mongoc_uri_set_option_as_int32(uri, MONGOC_URI_HEARTBEATFREQUENCYMS, 500);
	mongoc_uri_set_appname(uri, "mmm");
	c = mongoc_client_new_from_uri_with_error(uri, &err);
	mongoc_uri_destroy(uri);
	if (c == NULL) {
		snprintf(why, len, "cannot reach '%s' (%s): %s", srv->name, srv->uri_redacted, err.message);
		return NULL;
	}
	mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
	BSON_APPEND_INT32(&ping, "ping", 1);
	if (!mongoc_client_command_simple(c, "admin", &ping, NULL, NULL, &err)) {
		snprintf(why, len, "cannot reach '%s' (%s): %s", srv->name, srv->uri_redacted, err.message);
		mongoc_client_destroy(c);
		c = NULL;
	}
	bson_destroy(&ping);
	return c;
}

mongoc_client_t *mmm_connect(const struct cfg_server *srv)
{
	char why[1024];
	mongoc_client_t *c = mmm_try_connect(srv, why, sizeof why);
	if (c == NULL)
		log_warnx("%s", why);
	return c;
}

int mmm_parse_target(const struct cfg *cfg, const char *arg, const char *what,
    const struct cfg_server **srv, char *ns, size_t nslen)
{
	const char *slash = arg ? strchr(arg, '/') : NULL;
	char name[256], why[512];

	if (arg == NULL) {
		log_warnx("missing --%s=SERVER/NS", what);
		return 2;
	}
	if (slash == NULL || slash == arg || (size_t)(slash - arg) >= sizeof name) {
		log_warnx("malformed --%s '%s': expected SERVER/DB.COLLECTION or SERVER/DB.*", what, arg);
		return 2;
	}
	snprintf(name, sizeof name, "%.*s", (int)(slash - arg), arg);
	if ((*srv = cfg_server_by_name(cfg, name)) == NULL) {
		log_warnx("unknown server '%s' in --%s (not in '%s')", name, what, cfg->path);
		return 2;
	}
	if (link_check_ns(slash + 1, why, sizeof why) != 0) {
		log_warnx("malformed --%s '%s': %s", what, arg, why);
		return 2;
	}
	snprintf(ns, nslen, "%s", slash + 1);
	return 0;
}

int mmm_select(const struct mmm *m, size_t *idx, size_t *n)
{
	*n = 0;
	if (m->cfg->nservers > MMM_MAX_SERVERS) {
		log_warnx("too many servers in '%s' (%zu): mmm handles at most %d", m->cfg->path, m->cfg->nservers,
		    MMM_MAX_SERVERS);
		return 2;
	}
	if (m->o->nservers == 0) {
		for (size_t i = 0; i < m->cfg->nservers; i++)
			idx[(*n)++] = i;
		return 0;
	}
	for (size_t i = 0; i < m->o->nservers; i++) {
		const struct cfg_server *s = cfg_server_by_name(m->cfg, m->o->servers[i]);
		if (s == NULL) {
			log_warnx("unknown server '%s' (not in '%s')", m->o->servers[i], m->cfg->path);
			return 2;
		}
		idx[(*n)++] = (size_t)(s - m->cfg->servers);
	}
	return 0;
}

char **mmm_collection_names(mongoc_database_t *db, bson_error_t *err)
{
	bson_t *opts = BCON_NEW("filter", "{", "type", BCON_UTF8("collection"), "}");
	char **names = mongoc_database_get_collection_names_with_opts(db, opts, err);
	bson_destroy(opts);
	return names;
}
