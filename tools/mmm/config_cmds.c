/* config_cmds.c — clear-config, dump-config and replicate (with --copy-existing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "err.h"
#include "journal.h"
#include "log.h"
#include "mmm.h"
#include "oplog.h"

int cmd_clear_config(struct mmm *m)
{
	mongoc_client_t *clients[64] = { 0 };
	size_t idx[64], n;
	char line[64];
	int rc;

	if ((rc = mmm_select(m, idx, &n)) != 0)
		return rc;
	if (!m->o->yes) {
		printf("About to clear config on servers: [");
		for (size_t i = 0; i < n; i++)
			printf("%s'%s'", i ? ", " : "", m->cfg->servers[idx[i]].name);
		printf("], are you sure? (yN) ");
		fflush(stdout);
		int got = fgets(line, sizeof line, stdin) != NULL;
		if (!isatty(0))
			printf("\n");      /* the answer was not echoed: end the prompt's line */
		if (!got || (line[0] != 'y' && line[0] != 'Y')) {
			printf("Aborted.\n");
			return 1;
		}
	}
	/* reach every server before clearing any: all or nothing when one is down */
	for (size_t i = 0; i < n; i++)
		if ((clients[i] = mmm_connect(&m->cfg->servers[idx[i]])) == NULL) {
			rc = 1;
			goto out;
		}
	for (size_t i = 0; i < n; i++) {
		const struct cfg_server *s = &m->cfg->servers[idx[i]];
		bson_error_t err;
		printf("Clear config for %s\n", s->name);
		fflush(stdout);
		if (links_clear(clients[i], &err) != 0) {
			log_warnx("cannot clear config on '%s': %s", s->name, err.message);
			rc = 1;
			goto out;
		}
	}
out:
	for (size_t i = 0; i < n; i++)
		if (clients[i])
			mongoc_client_destroy(clients[i]);
	return rc;
}

/* Order of a link in dump-config: its source's place in the configuration. */
static size_t source_rank(const struct cfg *cfg, const struct app_link *l)
{
	const struct cfg_server *s = cfg_server_by_uuid(cfg, l->src);
	return s ? (size_t)(s - cfg->servers) : cfg->nservers;
}

static const char *source_name(const struct cfg *cfg, const struct app_link *l)
{
	const struct cfg_server *s = cfg_server_by_uuid(cfg, l->src);
	return s ? s->name : l->src_name;
}

int cmd_dump_config(struct mmm *m)
{
	const struct cfg *cfg = m->cfg;
	int rc = 0;

	printf("=== Server Config ===\n");
	for (size_t i = 0; i < cfg->nservers; i++)
		printf("%s (%s) => %s\n", cfg->servers[i].name, cfg->servers[i].id, cfg->servers[i].uri_redacted);
	printf("\n");
	for (size_t i = 0; i < cfg->nservers; i++) {
		const struct cfg_server *s = &cfg->servers[i];
		struct app_link *links = NULL;
		size_t n = 0;
		bson_error_t err;
		mongoc_client_t *c;

		printf("=== %s Replication Config\n", s->name);
		fflush(stdout);
		if ((c = mmm_connect(s)) == NULL) {
			rc = 1;
			continue;
		}
		if (links_read(c, &links, &n, &err) != 0) {
			log_warnx("cannot read links of '%s': %s", s->name, err.message);
			rc = 1;
		}
		for (size_t r = 0; r <= cfg->nservers; r++)       /* grouped by source, as the original */
			for (size_t k = 0; k < n; k++)
				if (source_rank(cfg, &links[k]) == r)
					printf("     - %s <= %s/%s\n", links[k].dst_ns, source_name(cfg, &links[k]), links[k].src_ns);
		free(links);
		mongoc_client_destroy(c);
	}
	printf("\n");
	return rc;
}

/* ---- replicate ------------------------------------------------------------ */

/* ts of the newest oplog entry of the server behind C (0 when unreadable). */
static uint64_t newest_ts(mongoc_client_t *c)
{
	mongoc_collection_t *coll = mongoc_client_get_collection(c, "local", "oplog.rs");
	bson_t filter = BSON_INITIALIZER, *opts = BCON_NEW("sort", "{", "$natural", BCON_INT32(-1), "}",
	    "limit", BCON_INT64(1));
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
	const bson_t *doc;
	uint64_t ts = 0;
	if (mongoc_cursor_next(cur, &doc))
		jnl_entry_ts(bson_get_data(doc), doc->len, &ts);
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(coll);
	bson_destroy(&filter);
	bson_destroy(opts);
	return ts;
}

static void split_ns(const char *ns, char *db, size_t dblen, const char **coll)
{
	const char *dot = strchr(ns, '.');
	snprintf(db, dblen, "%.*s", (int)(dot - ns), ns);
	*coll = dot + 1;
}

/* Commits one batch of copied documents, with the source as origin. */
static int copy_batch(mongoc_client_t *dst, mongoc_collection_t *coll, const char *marker,
    const uint8_t src[16], bson_t **docs, size_t n, bson_error_t *err)
{
	for (int attempt = 0; attempt < 20; attempt++) {
		mongoc_client_session_t *s = mongoc_client_start_session(dst, NULL, err);
		mongoc_collection_t *mc = mongoc_client_get_collection(dst, "mmm", "checkpoints");
		bson_t opts = BSON_INITIALIZER, reply, sel = BSON_INITIALIZER, doc = BSON_INITIALIZER;
		mongoc_bulk_operation_t *bulk = NULL;
		int ok = s && mongoc_client_session_start_transaction(s, NULL, err);

		bson_init(&reply);
		BSON_APPEND_UTF8(&sel, "_id", marker);
		BSON_APPEND_UTF8(&doc, "_id", marker);
		BSON_APPEND_BINARY(&doc, "origin", BSON_SUBTYPE_UUID, src, 16);
		BSON_APPEND_BINARY(&doc, "source", BSON_SUBTYPE_UUID, src, 16);
		BSON_APPEND_DATE_TIME(&doc, "copied", (int64_t)time(NULL) * 1000);
		BSON_APPEND_BOOL(&opts, "upsert", true);
		if (ok)
			ok = mongoc_client_session_append(s, &opts, err) &&
			    mongoc_collection_replace_one(mc, &sel, &doc, &opts, NULL, err);
		bson_destroy(&opts);
		bson_init(&opts);
		if (ok && mongoc_client_session_append(s, &opts, err)) {
			bulk = mongoc_collection_create_bulk_operation_with_opts(coll, &opts);
			for (size_t i = 0; i < n && ok; i++) {
				bson_t id = BSON_INITIALIZER, ro = BSON_INITIALIZER;
				bson_iter_t it;
				if (bson_iter_init_find(&it, docs[i], "_id"))
					bson_append_iter(&id, "_id", 3, &it);
				BSON_APPEND_BOOL(&ro, "upsert", true);
				ok = mongoc_bulk_operation_replace_one_with_opts(bulk, &id, docs[i], &ro, err);
				bson_destroy(&id);
				bson_destroy(&ro);
			}
			ok = ok && mongoc_bulk_operation_execute(bulk, NULL, err);
		}
		if (ok)
			ok = mongoc_client_session_commit_transaction(s, &reply, err);
		else if (s)
			mongoc_client_session_abort_transaction(s, NULL);
		if (bulk)
			mongoc_bulk_operation_destroy(bulk);
		mongoc_collection_destroy(mc);
		if (s)
			mongoc_client_session_destroy(s);
		bson_destroy(&opts);
		bson_destroy(&sel);
		bson_destroy(&doc);
		bson_destroy(&reply);
		if (ok)
			return 0;
		if (err->code != 112 && err->code != 251 && err->domain != MONGOC_ERROR_STREAM)
			return MMM_ESERVER;
		usleep(100 * 1000);
	}
	return MMM_ESERVER;
}

/* Writes the DDL marker (oplog.h) naming TARGET ("db.coll") with SRC as
 * origin, so that the destination's capture gives SRC as origin to the DDL
 * on it that follows (and a link back does not send it home). */
static int ddl_marker(mongoc_client_t *dst, const uint8_t src[16], const char *target, uint64_t at)
{
	mongoc_collection_t *mc = mongoc_client_get_collection(dst, "mmm", "checkpoints");
	bson_t sel = BSON_INITIALIZER, doc = BSON_INITIALIZER, opts = BSON_INITIALIZER;
	bson_error_t err;
	char id[128];
	int ok;

	oplog_marker_id(src, src, "ddl", id, sizeof id);
	BSON_APPEND_UTF8(&sel, "_id", id);
	BSON_APPEND_UTF8(&doc, "_id", id);
	BSON_APPEND_BINARY(&doc, "origin", BSON_SUBTYPE_UUID, src, 16);
	BSON_APPEND_BINARY(&doc, "source", BSON_SUBTYPE_UUID, src, 16);
	BSON_APPEND_TIMESTAMP(&doc, "ts", JNL_TS_SEC(at), JNL_TS_INC(at));
	BSON_APPEND_UTF8(&doc, "cmd", target);
	BSON_APPEND_BOOL(&opts, "upsert", true);
	if (!(ok = mongoc_collection_replace_one(mc, &sel, &doc, &opts, NULL, &err)))
		log_warnx("cannot write the ddl marker on the destination: %s", err.message);
	mongoc_collection_destroy(mc);
	bson_destroy(&sel);
	bson_destroy(&doc);
	bson_destroy(&opts);
	return ok ? 0 : 1;
}

/* The options of collection COLL of SRC_DB ({} when none or absent) into OUT (initialised here). */
static int source_options(mongoc_database_t *src_db, const char *coll, bson_t *out)
{
	bson_t *opts = BCON_NEW("filter", "{", "name", BCON_UTF8(coll), "}");
	bson_error_t err;
	mongoc_cursor_t *cur = mongoc_database_find_collections_with_opts(src_db, opts);
	const bson_t *info;
	bson_iter_t it;
	int rc = 0;

	bson_init(out);
	if (mongoc_cursor_next(cur, &info) && bson_iter_init_find(&it, info, "options") &&
	    BSON_ITER_HOLDS_DOCUMENT(&it)) {
		const uint8_t *data;
		uint32_t len;
		bson_t o;
		bson_iter_document(&it, &len, &data);
		if (bson_init_static(&o, data, len))
			bson_copy_to_excluding_noinit(&o, out, "uuid", NULL);
	}
	if (mongoc_cursor_error(cur, &err)) {
		log_warnx("cannot read the options of collection '%s': %s", coll, err.message);
		rc = 1;
	}
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	return rc;
}

/* Gives DDB.DCOLL on the destination the shape of FROM: its options (when
 * the destination does not have the collection yet) and its indexes, after a
 * DDL marker naming SRC as origin. */
static int copy_shape(mongoc_client_t *src, mongoc_collection_t *from, const char *sdb, const char *scoll,
    mongoc_client_t *dst, const uint8_t src_id[16], const char *ddb, const char *dcoll, uint64_t at)
{
	mongoc_database_t *sd = mongoc_client_get_database(src, sdb), *dd = mongoc_client_get_database(dst, ddb);
	mongoc_cursor_t *cur = NULL;
	const bson_t *spec;
	bson_t options, cmd = BSON_INITIALIZER, arr;
	bson_error_t err;
	char **names = NULL, target[2 * LINK_NS_MAX + 2];
	int n = 0, rc = 0, exists = 0;

	bson_init(&options);
	if ((rc = source_options(sd, scoll, &options)) != 0)
		goto out;
	if ((names = mmm_collection_names(dd, &err)) == NULL) {
		log_warnx("cannot list collections of '%s' on the destination: %s", ddb, err.message);
		rc = 1;
		goto out;
	}
	for (size_t i = 0; names[i]; i++)
		exists |= strcmp(names[i], dcoll) == 0;
	BSON_APPEND_UTF8(&cmd, "createIndexes", dcoll);
	BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &arr);
	cur = mongoc_collection_find_indexes_with_opts(from, NULL);
	while (mongoc_cursor_next(cur, &spec)) {
		bson_iter_t it;
		char k[16];
		bson_t one;
		if (bson_iter_init_find(&it, spec, "name") && BSON_ITER_HOLDS_UTF8(&it) &&
		    strcmp(bson_iter_utf8(&it, NULL), "_id_") == 0)
			continue;
		snprintf(k, sizeof k, "%d", n++);
		BSON_APPEND_DOCUMENT_BEGIN(&arr, k, &one);
		bson_iter_init(&it, spec);
		while (bson_iter_next(&it))
			if (strcmp(bson_iter_key(&it), "ns") != 0)
				bson_append_iter(&one, bson_iter_key(&it), -1, &it);
		bson_append_document_end(&arr, &one);
	}
	bson_append_array_end(&cmd, &arr);
	if (mongoc_cursor_error(cur, &err)) {
		log_warnx("cannot read the indexes of %s.%s: %s", sdb, scoll, err.message);
		rc = 1;
		goto out;
	}
	if ((exists || bson_empty(&options)) && n == 0)
		goto out;
	snprintf(target, sizeof target, "%s.%s", ddb, dcoll);
	if ((rc = ddl_marker(dst, src_id, target, at)) != 0)
		goto out;
	if (!exists && !bson_empty(&options)) {
		bson_t create = BSON_INITIALIZER;
		BSON_APPEND_UTF8(&create, "create", dcoll);
		bson_concat(&create, &options);
		if (!mongoc_client_command_simple(dst, ddb, &create, NULL, NULL, &err) && err.code != 48) {
			log_warnx("cannot create %s.%s on the destination: %s", ddb, dcoll, err.message);
			rc = 1;
		}
		bson_destroy(&create);
	}
	if (rc == 0 && n > 0 && !mongoc_client_command_simple(dst, ddb, &cmd, NULL, NULL, &err)) {
		log_warnx("cannot create indexes on %s.%s: %s", ddb, dcoll, err.message);
		rc = 1;
	}
out:
	if (cur)
		mongoc_cursor_destroy(cur);
	bson_strfreev(names);
	bson_destroy(&options);
	bson_destroy(&cmd);
	mongoc_database_destroy(sd);
	mongoc_database_destroy(dd);
	return rc;
}

/* A cursor over all of SDB.SCOLL: a snapshot as of AT (a find with readConcern
 * "snapshot" and atClusterTime) when SNAPSHOT, else an ordinary read.  NULL
 * with ERR set when the server refused the find. */
static mongoc_cursor_t *copy_cursor(mongoc_client_t *src, const char *sdb, const char *scoll, uint64_t at,
    int snapshot, bson_error_t *err)
{
	mongoc_server_description_t *sd;
	bson_t cmd = BSON_INITIALIZER, rc, reply, *opts;
	mongoc_cursor_t *cur = NULL;
	uint32_t sid;

	if (!snapshot) {
		mongoc_collection_t *from = mongoc_client_get_collection(src, sdb, scoll);
		bson_t filter = BSON_INITIALIZER, o = BSON_INITIALIZER;
		BSON_APPEND_INT32(&o, "batchSize", 1000);
		cur = mongoc_collection_find_with_opts(from, &filter, &o, NULL);
		mongoc_collection_destroy(from);
		bson_destroy(&filter);
		bson_destroy(&o);
		return cur;
	}
	/* the driver's own find would drop atClusterTime: send the command, then
	 * follow its cursor on the same server */
	if ((sd = mongoc_client_select_server(src, false, NULL, err)) == NULL)
		return NULL;
	sid = mongoc_server_description_id(sd);
	mongoc_server_description_destroy(sd);
	BSON_APPEND_UTF8(&cmd, "find", scoll);
	BSON_APPEND_INT32(&cmd, "batchSize", 1000);
	BSON_APPEND_DOCUMENT_BEGIN(&cmd, "readConcern", &rc);
	BSON_APPEND_UTF8(&rc, "level", "snapshot");
	BSON_APPEND_TIMESTAMP(&rc, "atClusterTime", JNL_TS_SEC(at), JNL_TS_INC(at));
	bson_append_document_end(&cmd, &rc);
	if (mongoc_client_command_simple_with_server_id(src, sdb, &cmd, NULL, sid, &reply, err)) {
		opts = BCON_NEW("serverId", BCON_INT64(sid));
		cur = mongoc_cursor_new_from_command_reply_with_opts(src, &reply, opts);   /* takes REPLY */
		bson_destroy(opts);
	} else {
		bson_destroy(&reply);
	}
	bson_destroy(&cmd);
	return cur;
}

/* Copies SNS (db.coll) of the source into DNS of the destination, as the
 * source was at AT (the link's start_ts) when the server can read a snapshot
 * there (replica sets of MongoDB 5.0 and later); otherwise as it is while the
 * copy runs, which the journal replayed from AT brings to the same state
 * (every replayed entry is idempotent: inserts upsert, updates rewrite the
 * document, a missing document is left alone). */
static int copy_collection(mongoc_client_t *src, mongoc_client_t *dst, const uint8_t src_id[16],
    const char *sns, const char *dns, uint64_t at)
{
	char sdb[LINK_NS_MAX], ddb[LINK_NS_MAX], marker[128], ts[32];
	const char *scoll, *dcoll;
	mongoc_collection_t *from, *to;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_t *batch[1000];
	bson_error_t err;
	size_t n = 0;
	int64_t total, done = 0;
	int rc, tty = isatty(2), snapshot = 1;

	split_ns(sns, sdb, sizeof sdb, &scoll);
	split_ns(dns, ddb, sizeof ddb, &dcoll);
	oplog_marker_id(src_id, src_id, "copy", marker, sizeof marker);
	from = mongoc_client_get_collection(src, sdb, scoll);
	to = mongoc_client_get_collection(dst, ddb, dcoll);
	total = mongoc_collection_estimated_document_count(from, NULL, NULL, NULL, NULL);
	memset(&err, 0, sizeof err);
	if ((rc = copy_shape(src, from, sdb, scoll, dst, src_id, ddb, dcoll, at)) != 0)
		goto out;
again:
	if ((cur = copy_cursor(src, sdb, scoll, at, snapshot, &err)) == NULL) {
		/* no snapshot at AT here (standalone, before 5.0, or written since) */
		log_info("no snapshot of %s at %s on the source (%s): copying the live collection; the journal "
		    "from %s on makes up for it", sns, jnl_ts_str(at, ts, sizeof ts), err.message, ts);
		snapshot = 0;
		goto again;
	}
	while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
		batch[n++] = bson_copy(doc);
		if (n == 1000) {
			rc = copy_batch(dst, to, marker, src_id, batch, n, &err);
			for (size_t i = 0; i < n; i++)
				bson_destroy(batch[i]);
			done += (int64_t)n;
			n = 0;
			if (tty)
				fprintf(stderr, "\rcopying %s: %lld/%lld documents", sns, (long long)done, (long long)total);
		}
	}
	if (rc == 0 && mongoc_cursor_error(cur, &err)) {
		mongoc_cursor_destroy(cur);
		for (size_t i = 0; i < n; i++)
			bson_destroy(batch[i]);
		n = 0;
		if (snapshot) {
			/* the copy outlived the server's snapshot history: copy again from
			 * the live collection */
			if (tty)
				fprintf(stderr, "\r\033[K");
			log_info("no snapshot of %s at %s on the source (%s): copying the live collection; the journal "
			    "from %s on makes up for it", sns, jnl_ts_str(at, ts, sizeof ts), err.message, ts);
			snapshot = 0;
			done = 0;
			goto again;
		}
		rc = MMM_ESERVER;
	} else {
		mongoc_cursor_destroy(cur);
	}
	if (rc == 0 && n)
		rc = copy_batch(dst, to, marker, src_id, batch, n, &err);
	done += (int64_t)n;
	for (size_t i = 0; i < n; i++)
		bson_destroy(batch[i]);
	if (tty)
		fprintf(stderr, "\r\033[K");
	if (rc != 0)
		log_warnx("copy of %s into %s failed after %lld documents: %s", sns, dns, (long long)done, err.message);
	else
		log_info("copied %lld documents of %s into %s", (long long)done, sns, dns);
out:
	mongoc_collection_destroy(from);
	mongoc_collection_destroy(to);
	return rc ? 1 : 0;
}

static int copy_existing(mongoc_client_t *src, mongoc_client_t *dst, const struct app_link *l)
{
	char db[LINK_NS_MAX], dns[2 * LINK_NS_MAX];
	const char *coll;
	char **names;
	bson_error_t err;
	mongoc_database_t *d;
	int rc = 0;

	if (strcmp(strchr(l->src_ns, '.') + 1, "*") != 0)
		return copy_collection(src, dst, l->src, l->src_ns, l->dst_ns, l->start_ts);
	split_ns(l->src_ns, db, sizeof db, &coll);
	d = mongoc_client_get_database(src, db);
	names = mmm_collection_names(d, &err);
	mongoc_database_destroy(d);
	if (names == NULL) {
		log_warnx("cannot list collections of '%s': %s", db, err.message);
		return 1;
	}
	for (size_t i = 0; names[i] && rc == 0; i++) {
		char sns[2 * LINK_NS_MAX];
		if (strncmp(names[i], "system.", 7) == 0)
			continue;
		snprintf(sns, sizeof sns, "%s.%s", db, names[i]);
		if (!link_map_ns(l, sns, dns, sizeof dns))
			continue;
		rc = copy_collection(src, dst, l->src, sns, dns, l->start_ts);
	}
	bson_strfreev(names);
	return rc;
}

/* Whether this site's capture takes SRC (capture.servers). */
static int captured_here(const struct cfg *cfg, const struct cfg_server *src)
{
	for (size_t i = 0; i < cfg->ncapture; i++)
		if (&cfg->servers[cfg->capture[i]] == src)
			return 1;
	return 0;
}

/* Tells this site's capture, when it has not captured SRC yet, to start no
 * later than TS, so that no write between now and `mmm run` is missed.  A
 * source another site captures (its blocks are received here) gets no hint. */
static void hint_capture(struct mmm *m, const struct cfg_server *src, uint64_t ts)
{
	struct jnl *j;
	struct jnl_source js;
	char key[64];
	bson_t doc, old;
	bson_iter_t it;

	if (!captured_here(m->cfg, src))
		return;
	if (jnl_open(m->journal_path, JNL_CREATE, &j) != 0)
		return;
	if (jnl_source_get(j, src->uuid, &js) != 0 || js.last_ts == 0) {
		snprintf(key, sizeof key, "capture-from/%s", src->id);
		if (jnl_status_get(j, key, &old) == 0) {
			uint32_t sec, inc;
			if (bson_iter_init_find(&it, &old, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
				bson_iter_timestamp(&it, &sec, &inc);
				if (JNL_TS(sec, inc) && JNL_TS(sec, inc) < ts)
					ts = JNL_TS(sec, inc);
			}
			bson_destroy(&old);
		}
		bson_init(&doc);
		BSON_APPEND_TIMESTAMP(&doc, "ts", JNL_TS_SEC(ts), JNL_TS_INC(ts));
		jnl_status_put(j, key, &doc);
		bson_destroy(&doc);
	}
	jnl_close(j);
}

/* Whether the destination behind DC already holds link L (*had), and its start_ts. */
static int existing_start(mongoc_client_t *dc, const struct cfg_server *dst, const struct app_link *l, int *had,
    uint64_t *ts)
{
	struct app_link *links = NULL;
	size_t n = 0;
	bson_error_t err;

	if (links_read(dc, &links, &n, &err) != 0) {
		log_warnx("cannot read links of '%s': %s", dst->name, err.message);
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(links[i].id, l->id) == 0) {
			*had = 1;
			*ts = links[i].start_ts;
		}
	free(links);
	return 0;
}

int cmd_replicate(struct mmm *m)
{
	const struct mmm_opts *o = m->o;
	const struct cfg_server *src, *dst;
	struct app_link l;
	mongoc_client_t *sc = NULL, *dc = NULL;
	bson_error_t err;
	uint64_t had_ts = 0;
	char why[1024];
	int rc, had = 0;

	memset(&l, 0, sizeof l);
	if ((rc = mmm_parse_target(m->cfg, o->src, "src", &src, l.src_ns, sizeof l.src_ns)) != 0 ||
	    (rc = mmm_parse_target(m->cfg, o->dst, "dst", &dst, l.dst_ns, sizeof l.dst_ns)) != 0)
		return rc;
	if (src == dst) {
		log_warnx("--src and --dst name the same server '%s': a server cannot replicate into itself", src->name);
		return 2;
	}
	if ((strstr(l.src_ns, ".*") != NULL) != (strstr(l.dst_ns, ".*") != NULL)) {
		log_warnx("--src '%s' and --dst '%s': a whole database (DB.*) maps only to a whole database",
		    o->src, o->dst);
		return 2;
	}
	snprintf(l.ops, sizeof l.ops, "%s", o->ops ? o->ops : "iudc");
	if (l.ops[0] == '\0' || strspn(l.ops, "iudc") != strlen(l.ops) || (o->ops && strlen(o->ops) > 4)) {
		log_warnx("malformed --ops '%s': expected letters of iudc (inserts, updates, deletes, commands)",
		    o->ops ? o->ops : "");
		return 2;
	}
	memcpy(l.src, src->uuid, 16);
	snprintf(l.src_name, sizeof l.src_name, "%s", src->name);
	l.forward = o->forward;
	link_make_id(&l);

	if ((dc = mmm_connect(dst)) == NULL)
		return 1;
	if ((rc = existing_start(dc, dst, &l, &had, &had_ts)) != 0)
		goto out;
	/* Replication of a new link starts now: at the source's newest entry. */
	if ((sc = mmm_try_connect(src, why, sizeof why)) != NULL) {
		if ((l.start_ts = newest_ts(sc)) == 0) {
			log_warnx("cannot read the oplog of '%s' (local.oplog.rs): is it a replica set member?", src->name);
			rc = 1;
			goto out;
		}
	} else if (o->copy_existing) {
		log_warnx("%s", why);
		rc = 1;
		goto out;
	} else if (!had) {
		struct jnl *j;
		struct jnl_source js;
		if (jnl_open(m->journal_path, JNL_RDONLY, &j) == 0) {
			if (jnl_source_get(j, src->uuid, &js) == 0)
				l.start_ts = js.last_ts;
			jnl_close(j);
		}
		log_warnx("%s: the link starts %s", why,
		    l.start_ts ? "where this site's journal ends" : "at the first entry the journal will hold");
	}
	/* An existing link keeps where it started (moving it on would skip what
	 * apply has not reached yet), unless its documents are copied again. */
	if (had && !o->copy_existing)
		l.start_ts = had_ts;
	if (sc && l.start_ts)
		hint_capture(m, src, l.start_ts);
	if (o->copy_existing && copy_existing(sc, dc, &l) != 0) {
		rc = 1;
		goto out;
	}
	if (links_write(dc, &l, &err) != 0) {
		log_warnx("cannot store the link on '%s': %s", dst->name, err.message);
		rc = 1;
	}
out:
	if (sc)
		mongoc_client_destroy(sc);
	mongoc_client_destroy(dc);
	return rc;
}
