/* util.c — see util.h. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "log.h"
#include "util.h"

int64_t mmm_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mmm_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mmm_sleep_ms(int ms, volatile sig_atomic_t *stop)
{
	for (int waited = 0; waited < ms && !(stop && *stop); waited += 10)
		usleep((useconds_t)((ms - waited < 10 ? ms - waited : 10) * 1000));
}

mongoc_client_t *mmm_client_new(const char *uri_s, const char *appname, int select_ms, bson_error_t *err)
{
	mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_s, err);
	mongoc_client_t *c;

	if (uri == NULL)
		return NULL;
	if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, select_ms);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 2000);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_HEARTBEATFREQUENCYMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_HEARTBEATFREQUENCYMS, 500);
	mongoc_uri_set_appname(uri, appname);
	c = mongoc_client_new_from_uri_with_error(uri, err);
	mongoc_uri_destroy(uri);
	if (c)
		mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
	return c;
}

void mmm_ns_split(const char *ns, char *db, size_t dblen, const char **coll)
{
	const char *dot = strchr(ns, '.');
	snprintf(db, dblen, "%.*s", dot ? (int)(dot - ns) : (int)strlen(ns), ns);
	*coll = dot ? dot + 1 : "";
}

static void mongoc_log_debug(mongoc_log_level_t level, const char *domain, const char *message, void *arg)
{
	(void)arg;
	if (level <= MONGOC_LOG_LEVEL_INFO)
		log_debug("libmongoc %s: %s", domain, message);
}

void mmm_mongoc_log_to_debug(void)
{
	mongoc_log_set_handler(mongoc_log_debug, NULL);
}
