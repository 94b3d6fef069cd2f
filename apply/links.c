/* links.c — see links.h and LINKS.md. */
#include <stdio.h>
#include <string.h>
#include "config.h"
#include "err.h"
#include "journal.h"
#include "links.h"

void link_make_id(struct app_link *l)
{
	snprintf(l->id, sizeof l->id, "%s/%s=>%s", l->src_name, l->src_ns, l->dst_ns);
}

int link_check_ns(const char *ns, char *why, size_t len)
{
	const char *dot = strchr(ns, '.');
	if (dot == NULL || dot == ns || dot[1] == '\0') {
		snprintf(why, len, "malformed namespace '%s': expected DB.COLLECTION or DB.*", ns);
		return MMM_EUSAGE;
	}
	if (strlen(ns) >= LINK_NS_MAX || strpbrk(ns, " \"$/\\") != NULL || memchr(ns, '\0', 1)) {
		snprintf(why, len, "malformed namespace '%s'", ns);
		return MMM_EUSAGE;
	}
	if (strchr(dot + 1, '*') && strcmp(dot + 1, "*") != 0) {
		snprintf(why, len, "malformed namespace '%s': only a whole database ('DB.*') may be a pattern", ns);
		return MMM_EUSAGE;
	}
	if (strncmp(ns, "mmm.", 4) == 0 || strncmp(ns, "local.", 6) == 0 || strncmp(ns, "admin.", 6) == 0 ||
	    strncmp(ns, "config.", 7) == 0) {
		snprintf(why, len, "namespace '%s' cannot be replicated (database '%.*s' is reserved)", ns,
		    (int)(dot - ns), ns);
		return MMM_EUSAGE;
	}
	return 0;
}

static int is_db_pattern(const char *ns)
{
	size_t n = strlen(ns);
	return n > 2 && ns[n - 1] == '*' && ns[n - 2] == '.';
}

int link_map_ns(const struct app_link *l, const char *ns, char *dst, size_t len)
{
	if (is_db_pattern(l->src_ns)) {
		size_t dbl = strlen(l->src_ns) - 1;          /* "db." */
		if (strncmp(ns, l->src_ns, dbl) != 0 || ns[dbl] == '\0')
			return 0;
		if (is_db_pattern(l->dst_ns)) {
			size_t ddl = strlen(l->dst_ns) - 1, rest = strlen(ns + dbl);
			if (ddl + rest >= len)
				return 0;
			memcpy(dst, l->dst_ns, ddl);
			memcpy(dst + ddl, ns + dbl, rest + 1);
		} else {
			if (strlen(l->dst_ns) >= len)
				return 0;
			memcpy(dst, l->dst_ns, strlen(l->dst_ns) + 1);
		}
		return 1;
	}
	if (strcmp(ns, l->src_ns) != 0)
		return 0;
	if (strlen(l->dst_ns) >= len)
		return 0;
	memcpy(dst, l->dst_ns, strlen(l->dst_ns) + 1);
	return 1;
}

int link_map_db(const struct app_link *l, const char *db, char *dst, size_t len)
{
	size_t dbl;
	if (!is_db_pattern(l->src_ns) || !is_db_pattern(l->dst_ns))
		return 0;
	dbl = strlen(l->src_ns) - 2;
	if (strlen(db) != dbl || strncmp(db, l->src_ns, dbl) != 0)
		return 0;
	snprintf(dst, len, "%.*s", (int)(strlen(l->dst_ns) - 2), l->dst_ns);
	return 1;
}

int link_has_op(const struct app_link *l, char op)
{
	return l->ops[0] == '\0' || strchr(l->ops, op) != NULL;
}

static void str_field(bson_iter_t *it, char *dst, size_t len)
{
	if (BSON_ITER_HOLDS_UTF8(it))
		snprintf(dst, len, "%s", bson_iter_utf8(it, NULL));
}

int links_read(mongoc_client_t *c, struct app_link **out, size_t *n, bson_error_t *err)
{
	mongoc_collection_t *coll = mongoc_client_get_collection(c, "mmm", "links");
	bson_t filter = BSON_INITIALIZER;
	mongoc_read_prefs_t *rp = mongoc_read_prefs_new(MONGOC_READ_PRIMARY);
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, NULL, rp);
	const bson_t *doc;
	struct app_link *list = NULL;
	size_t cnt = 0, cap = 0;
	int rc = 0;

	while (mongoc_cursor_next(cur, &doc)) {
		struct app_link l;
		bson_iter_t it;
		memset(&l, 0, sizeof l);
		snprintf(l.ops, sizeof l.ops, "iudc");
		if (!bson_iter_init(&it, doc))
			continue;
		while (bson_iter_next(&it)) {
			const char *k = bson_iter_key(&it);
			if (strcmp(k, "_id") == 0)
				str_field(&it, l.id, sizeof l.id);
			else if (strcmp(k, "src_name") == 0)
				str_field(&it, l.src_name, sizeof l.src_name);
			else if (strcmp(k, "src_ns") == 0)
				str_field(&it, l.src_ns, sizeof l.src_ns);
			else if (strcmp(k, "dst_ns") == 0)
				str_field(&it, l.dst_ns, sizeof l.dst_ns);
			else if (strcmp(k, "ops") == 0)
				str_field(&it, l.ops, sizeof l.ops);
			else if (strcmp(k, "forward") == 0)
				l.forward = bson_iter_as_bool(&it);
			else if (strcmp(k, "start_ts") == 0 && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
				uint32_t s, i;
				bson_iter_timestamp(&it, &s, &i);
				l.start_ts = JNL_TS(s, i);
			} else if (strcmp(k, "src_id") == 0 && BSON_ITER_HOLDS_BINARY(&it)) {
				bson_subtype_t st;
				uint32_t len;
				const uint8_t *data;
				bson_iter_binary(&it, &st, &len, &data);
				if (len == 16)
					memcpy(l.src, data, 16);
			} else if (strcmp(k, "src_id") == 0 && BSON_ITER_HOLDS_UTF8(&it)) {
				uuid_parse(bson_iter_utf8(&it, NULL), l.src);
			}
		}
		if (l.src_ns[0] == '\0' || l.dst_ns[0] == '\0')
			continue;      /* not a link: ignored */
		if (cnt == cap) {
			struct app_link *nl = realloc(list, (cap = cap ? cap * 2 : 8) * sizeof *list);
			if (nl == NULL) {
				rc = ENOMEM;
				break;
			}
			list = nl;
		}
		list[cnt++] = l;
	}
	if (rc == 0 && mongoc_cursor_error(cur, err))
		rc = MMM_ESERVER;
	mongoc_cursor_destroy(cur);
	mongoc_read_prefs_destroy(rp);
	mongoc_collection_destroy(coll);
	bson_destroy(&filter);
	if (rc != 0) {
		free(list);
		list = NULL;
		cnt = 0;
	}
	*out = list;
	*n = cnt;
	return rc;
}

int links_write(mongoc_client_t *c, const struct app_link *l, bson_error_t *err)
{
	mongoc_collection_t *coll = mongoc_client_get_collection(c, "mmm", "links");
	bson_t sel = BSON_INITIALIZER, doc = BSON_INITIALIZER, opts = BSON_INITIALIZER;
	int ok;

	BSON_APPEND_UTF8(&sel, "_id", l->id);
	BSON_APPEND_UTF8(&doc, "_id", l->id);
	BSON_APPEND_UTF8(&doc, "src_name", l->src_name);
	BSON_APPEND_BINARY(&doc, "src_id", BSON_SUBTYPE_UUID, l->src, 16);
	BSON_APPEND_UTF8(&doc, "src_ns", l->src_ns);
	BSON_APPEND_UTF8(&doc, "dst_ns", l->dst_ns);
	BSON_APPEND_UTF8(&doc, "ops", l->ops);
	BSON_APPEND_BOOL(&doc, "forward", l->forward);
	if (l->start_ts)
		BSON_APPEND_TIMESTAMP(&doc, "start_ts", JNL_TS_SEC(l->start_ts), JNL_TS_INC(l->start_ts));
	BSON_APPEND_DATE_TIME(&doc, "created", (int64_t)time(NULL) * 1000);
	BSON_APPEND_BOOL(&opts, "upsert", true);
	ok = mongoc_collection_replace_one(coll, &sel, &doc, &opts, NULL, err);
	mongoc_collection_destroy(coll);
	bson_destroy(&sel);
	bson_destroy(&doc);
	bson_destroy(&opts);
	return ok ? 0 : MMM_ESERVER;
}

int links_clear(mongoc_client_t *c, bson_error_t *err)
{
	const char *colls[] = { "links", "checkpoints" };
	int rc = 0;
	for (size_t i = 0; i < 2 && rc == 0; i++) {
		mongoc_collection_t *coll = mongoc_client_get_collection(c, "mmm", colls[i]);
		bson_t all = BSON_INITIALIZER;
		if (!mongoc_collection_delete_many(coll, &all, NULL, NULL, err))
			rc = MMM_ESERVER;
		mongoc_collection_destroy(coll);
		bson_destroy(&all);
	}
	return rc;
}
