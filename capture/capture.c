/* capture.c — see capture.h. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <mongoc/mongoc.h>
#include "capture.h"
#include "err.h"
#include "fault.h"
#include "log.h"
#include "oplog.h"

#define TXN_SLOTS      256     /* open transactions whose origin is remembered */
#define DDL_LOOKAHEAD  64      /* entries a DDL marker waits for its command */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000
#define STATUS_MS      1000

enum session_end { END_STOP, END_RETRY, END_FATAL };

struct txn_slot {
	uint8_t lsid[16];
	int64_t txn;
	uint8_t origin[16];
	int used;
	uint64_t seq;
};

struct cap_source {
	const struct cfg_server *srv;
	struct jnl *j;
	const struct cap_options *opt;
	volatile sig_atomic_t *stop;
	atomic_int *fatal;            /* shared: a journal failure stops everyone */
	pthread_t thread;
	int failed;
	struct jnl_writer *w;
	/* status */
	const char *state;
	char last_error[512];
	uint64_t last_ts, server_ts;
	int64_t last_wall, server_wall;
	uint64_t entries, rate_entries;
	int64_t rate_since, status_at;
	double rate;
	/* origin tracking */
	struct txn_slot txns[TXN_SLOTS];
	uint64_t txn_seq;
	int ddl_ttl;
	uint8_t ddl_origin[16];
	char ddl_cmd[256];
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *cap_status_key(const uint8_t uuid[16], char *buf, size_t len)
{
	char u[37];
	uuid_format(uuid, u);
	snprintf(buf, len, "capture/%s", u);
	return buf;
}

static void write_status(struct cap_source *cs)
{
	char key[64];
	bson_t doc;
	int64_t lag_ms = 0;

	if (cs->server_ts > cs->last_ts && cs->server_wall && cs->last_wall)
		lag_ms = cs->server_wall - cs->last_wall;
	if (lag_ms < 0)
		lag_ms = 0;
	bson_init(&doc);
	BSON_APPEND_UTF8(&doc, "name", cs->srv->name);
	BSON_APPEND_UTF8(&doc, "state", cs->state);
	BSON_APPEND_TIMESTAMP(&doc, "last_ts", JNL_TS_SEC(cs->last_ts), JNL_TS_INC(cs->last_ts));
	BSON_APPEND_DATE_TIME(&doc, "last_wall", cs->last_wall);
	BSON_APPEND_TIMESTAMP(&doc, "server_ts", JNL_TS_SEC(cs->server_ts), JNL_TS_INC(cs->server_ts));
	BSON_APPEND_DATE_TIME(&doc, "server_wall", cs->server_wall);
	BSON_APPEND_DOUBLE(&doc, "lag_s", (double)lag_ms / 1000.0);
	BSON_APPEND_DOUBLE(&doc, "rate", cs->rate);
	BSON_APPEND_INT64(&doc, "entries", (int64_t)cs->entries);
	BSON_APPEND_UTF8(&doc, "last_error", cs->last_error);
	BSON_APPEND_DATE_TIME(&doc, "updated", wall_ms());
	BSON_APPEND_INT32(&doc, "pid", (int32_t)getpid());
	if (jnl_status_put(cs->j, cap_status_key(cs->srv->uuid, key, sizeof key), &doc) != 0 &&
	    !jnl_poisoned(cs->j))
		log_debug("cannot write status of '%s'", cs->srv->name);
	bson_destroy(&doc);
	cs->status_at = mono_ms();
}

static void set_state(struct cap_source *cs, const char *state)
{
	if (cs->state != state) {
		cs->state = state;
		write_status(cs);
	}
}

/* ---- origins ------------------------------------------------------------ */

static struct txn_slot *txn_find(struct cap_source *cs, const uint8_t lsid[16], int64_t txn)
{
	for (int i = 0; i < TXN_SLOTS; i++)
		if (cs->txns[i].used && cs->txns[i].txn == txn && memcmp(cs->txns[i].lsid, lsid, 16) == 0)
			return &cs->txns[i];
	return NULL;
}

static void txn_remember(struct cap_source *cs, const uint8_t lsid[16], int64_t txn, const uint8_t origin[16])
{
	struct txn_slot *s = txn_find(cs, lsid, txn), *oldest = &cs->txns[0];
	if (s == NULL) {
		for (int i = 0; i < TXN_SLOTS && !s; i++) {
			if (!cs->txns[i].used)
				s = &cs->txns[i];
			else if (cs->txns[i].seq < oldest->seq)
				oldest = &cs->txns[i];
		}
		if (s == NULL)
			s = oldest;
	}
	memcpy(s->lsid, lsid, 16);
	s->txn = txn;
	memcpy(s->origin, origin, 16);
	s->used = 1;
	s->seq = ++cs->txn_seq;
}

static int o_flag(const bson_t *entry, const char *field)
{
	bson_iter_t it, o;
	return bson_iter_init_find(&it, entry, "o") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
	    bson_iter_recurse(&it, &o) && bson_iter_find(&o, field) && bson_iter_as_bool(&o);
}

static const char *o_first_key(const bson_t *entry)
{
	bson_iter_t it, o;
	if (bson_iter_init_find(&it, entry, "o") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
	    bson_iter_recurse(&it, &o) && bson_iter_next(&o))
		return bson_iter_key(&o);
	return "";
}

/* Decides the origin of a kept entry: 1 and ORIGIN set when it is not the
 * source itself. */
static int entry_origin(struct cap_source *cs, const bson_t *entry, const struct oplog_info *in,
    uint8_t origin[16])
{
	if (in->op == 'c') {
		const char *cmd = o_first_key(entry);
		if (strcmp(cmd, "applyOps") == 0) {
			struct txn_slot *s = in->has_txn ? txn_find(cs, in->lsid, in->txn_number) : NULL;
			int found = 0, open_chain = o_flag(entry, "partialTxn") || o_flag(entry, "prepare");
			if (s) {
				memcpy(origin, s->origin, 16);
				found = 1;
			} else if (oplog_applyops_marker(entry, origin)) {
				found = 1;
				cs->ddl_ttl = 0;     /* apply's checkpoint closes a DDL bracket */
				if (in->has_txn && open_chain)
					txn_remember(cs, in->lsid, in->txn_number, origin);
			}
			if (s && !open_chain)
				s->used = 0;
			return found;
		}
		if (strcmp(cmd, "commitTransaction") == 0 || strcmp(cmd, "abortTransaction") == 0) {
			struct txn_slot *s = in->has_txn ? txn_find(cs, in->lsid, in->txn_number) : NULL;
			if (s) {
				memcpy(origin, s->origin, 16);
				s->used = 0;
				return 1;
			}
			return 0;
		}
		if (cs->ddl_ttl > 0) {
			/* A DDL marker covers the commands of its database until apply's
			 * closing checkpoint transaction (one source command can log
			 * several: startIndexBuild + commitIndexBuild, drops + dropDatabase). */
			char desc[300];
			size_t dl = strlen(cs->ddl_cmd);
			oplog_ddl_desc(entry, desc, sizeof desc);
			if (desc[0] && (dl == 0 || (strncmp(in->ns, cs->ddl_cmd, dl) == 0 && in->ns[dl] == '.'))) {
				memcpy(origin, cs->ddl_origin, 16);
				cs->ddl_ttl = DDL_LOOKAHEAD;
				return 1;
			}
		}
	}
	if (cs->ddl_ttl > 0)
		cs->ddl_ttl--;
	return 0;
}

/* An excluded entry may be a DDL marker announcing the next command. */
static void note_marker(struct cap_source *cs, const bson_t *entry)
{
	uint8_t origin[16];
	int is_ddl;
	char cmd[256];
	if (oplog_marker_of_op(entry, origin, &is_ddl, cmd, sizeof cmd) && is_ddl) {
		memcpy(cs->ddl_origin, origin, 16);
		snprintf(cs->ddl_cmd, sizeof cs->ddl_cmd, "%s", cmd);
		cs->ddl_ttl = DDL_LOOKAHEAD;
	}
}

/* ---- talking to the server ---------------------------------------------- */

static mongoc_client_t *make_client(struct cap_source *cs, bson_error_t *err)
{
	mongoc_uri_t *uri = mongoc_uri_new_with_error(cs->srv->uri, err);
	mongoc_client_t *c;
	if (uri == NULL)
		return NULL;
	if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 2000);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 2000);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_HEARTBEATFREQUENCYMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_HEARTBEATFREQUENCYMS, 500);
	mongoc_uri_set_appname(uri, "mmm-capture");
	c = mongoc_client_new_from_uri_with_error(uri, err);
	mongoc_uri_destroy(uri);
	if (c)
		mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
	return c;
}

/* Reads the newest write the server reports (hello's lastWrite). */
static void poll_server(struct cap_source *cs, mongoc_client_t *c)
{
	bson_t cmd = BSON_INITIALIZER, reply;
	bson_iter_t it, lw;
	BSON_APPEND_INT32(&cmd, "hello", 1);
	if (mongoc_client_command_simple(c, "admin", &cmd, NULL, &reply, NULL) &&
	    bson_iter_init_find(&it, &reply, "lastWrite") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
	    bson_iter_recurse(&it, &lw)) {
		while (bson_iter_next(&lw)) {
			if (strcmp(bson_iter_key(&lw), "lastWriteDate") == 0 && BSON_ITER_HOLDS_DATE_TIME(&lw)) {
				cs->server_wall = bson_iter_date_time(&lw);
			} else if (strcmp(bson_iter_key(&lw), "opTime") == 0 && BSON_ITER_HOLDS_DOCUMENT(&lw)) {
				bson_iter_t ot;
				uint32_t s, i;
				if (bson_iter_recurse(&lw, &ot) && bson_iter_find(&ot, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&ot)) {
					bson_iter_timestamp(&ot, &s, &i);
					cs->server_ts = JNL_TS(s, i);
				}
			}
		}
	}
	bson_destroy(&cmd);
	bson_destroy(&reply);
}

/* Records (and checks) which replica set this source is. */
static enum session_end check_identity(struct cap_source *cs, mongoc_client_t *c)
{
	bson_t cmd = BSON_INITIALIZER, reply;
	bson_iter_t it;
	bson_error_t err;
	char set_name[128] = "", set_id[64] = "";
	struct jnl_source src;
	int rc;

	BSON_APPEND_INT32(&cmd, "hello", 1);
	if (!mongoc_client_command_simple(c, "admin", &cmd, NULL, &reply, &err)) {
		snprintf(cs->last_error, sizeof cs->last_error, "%s", err.message);
		bson_destroy(&cmd);
		bson_destroy(&reply);
		return END_RETRY;
	}
	if (bson_iter_init_find(&it, &reply, "setName") && BSON_ITER_HOLDS_UTF8(&it))
		snprintf(set_name, sizeof set_name, "%s", bson_iter_utf8(&it, NULL));
	bson_destroy(&cmd);
	bson_destroy(&reply);
	/* replicaSetId lives in the replica set config (settings.replicaSetId). */
	bson_init(&cmd);
	BSON_APPEND_INT32(&cmd, "replSetGetConfig", 1);
	if (mongoc_client_command_simple(c, "admin", &cmd, NULL, &reply, NULL) &&
	    bson_iter_init(&it, &reply) && bson_iter_find_descendant(&it, "config.settings.replicaSetId", &it) &&
	    BSON_ITER_HOLDS_OID(&it))
		bson_oid_to_string(bson_iter_oid(&it), set_id);
	bson_destroy(&cmd);
	bson_destroy(&reply);
	rc = jnl_source_identity(cs->j, cs->srv->uuid, set_name, set_id);
	if (rc == MMM_EIDENTITY) {
		jnl_source_get(cs->j, cs->srv->uuid, &src);
		snprintf(cs->last_error, sizeof cs->last_error,
		    "server '%s' is replica set '%s'%s%s, but the journal recorded '%s'%s%s for it: refusing to capture",
		    cs->srv->name, set_name, set_id[0] ? " id " : "", set_id, src.set_name,
		    src.set_id[0] ? " id " : "", src.set_id);
		log_warnx("%s", cs->last_error);
		return END_FATAL;
	}
	if (rc != 0) {
		snprintf(cs->last_error, sizeof cs->last_error, "journal: %s", mmm_strerror(rc));
		log_warnx("cannot record identity of '%s': %s", cs->srv->name, mmm_strerror(rc));
		return END_FATAL;
	}
	return 0;
}

/* ts of the oldest (DIR 1) or newest (DIR -1) oplog entry, 0 when unknown. */
static uint64_t oplog_edge(mongoc_client_t *c, int dir)
{
	mongoc_collection_t *coll = mongoc_client_get_collection(c, "local", "oplog.rs");
	bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, sort;
	const bson_t *doc;
	uint64_t ts = 0;
	mongoc_cursor_t *cur;

	BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
	BSON_APPEND_INT32(&sort, "$natural", dir);
	bson_append_document_end(&opts, &sort);
	BSON_APPEND_INT64(&opts, "limit", 1);
	cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
	if (mongoc_cursor_next(cur, &doc))
		jnl_entry_ts(bson_get_data(doc), doc->len, &ts);
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(coll);
	bson_destroy(&filter);
	bson_destroy(&opts);
	return ts;
}

static enum session_end report_gap(struct cap_source *cs, mongoc_client_t *c, uint64_t want)
{
	char a[32], b[32];
	uint64_t oldest = oplog_edge(c, 1);
	snprintf(cs->last_error, sizeof cs->last_error,
	    "oplog of '%s' no longer holds %s (oldest is %s): resync needed", cs->srv->name,
	    jnl_ts_str(want, a, sizeof a), oldest ? jnl_ts_str(oldest, b, sizeof b) : "unknown");
	log_warnx("%s", cs->last_error);
	set_state(cs, "gap");
	return END_FATAL;
}

/* The last entry the journal holds for this source, copied into *out. */
static int journal_last_entry(struct cap_source *cs, uint64_t ts, bson_t *out)
{
	struct jnl_reader *r;
	struct jnl_entry e;
	int rc = jnl_reader_open(cs->j, cs->srv->uuid, ts, &r);
	if (rc != 0)
		return rc;
	rc = jnl_reader_next(r, &e);
	if (rc == 0 && e.ts == ts) {
		bson_t tmp;
		bson_init_static(&tmp, e.bson, e.len);
		bson_copy_to(&tmp, out);
	} else if (rc == 0) {
		rc = MMM_ENOTFOUND;
	}
	jnl_reader_free(r);
	return rc;
}

static enum session_end journal_failed(struct cap_source *cs, int rc)
{
	snprintf(cs->last_error, sizeof cs->last_error, "journal '%s': %s", jnl_path(cs->j), mmm_strerror(rc));
	log_warnx("capture of '%s' stopped: %s", cs->srv->name, cs->last_error);
	atomic_store(cs->fatal, 1);
	return END_FATAL;
}

static int is_retryable(const bson_error_t *err)
{
	/* CappedPositionLost is handled as a gap before this is asked. */
	(void)err;
	return 1;
}

/* One connected run: tail until an error, a stop request or a gap. */
static enum session_end session(struct cap_source *cs, mongoc_client_t *c, mongoc_client_t *poll,
    int *progressed)
{
	mongoc_collection_t *coll = NULL;
	mongoc_cursor_t *cur = NULL;
	bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, range, last = BSON_INITIALIZER;
	const bson_t *doc;
	bson_error_t err;
	struct jnl_source src;
	uint64_t start;
	int resuming = 0, first = 1, rc;
	enum session_end end = END_RETRY;
	char a[32];

	if ((end = check_identity(cs, c)) != 0)
		goto out;
	end = END_RETRY;
	if ((rc = jnl_source_get(cs->j, cs->srv->uuid, &src)) != 0) {
		end = journal_failed(cs, rc);
		goto out;
	}
	if (src.last_ts) {
		start = src.last_ts;
		resuming = 1;
		if ((rc = journal_last_entry(cs, start, &last)) != 0) {
			end = journal_failed(cs, rc);
			goto out;
		}
	} else if (cs->opt->have_from) {
		uint64_t oldest = oplog_edge(c, 1);
		start = cs->opt->from_ts;
		if (oldest == 0) {
			snprintf(cs->last_error, sizeof cs->last_error, "cannot read the oplog of '%s'", cs->srv->name);
			goto out;
		}
		if (oldest > start) {
			end = report_gap(cs, c, start);
			goto out;
		}
	} else {
		start = oplog_edge(c, -1);
		if (start == 0) {
			snprintf(cs->last_error, sizeof cs->last_error, "cannot read the oplog of '%s'", cs->srv->name);
			goto out;
		}
		log_info("capture of '%s' starts at its newest oplog entry %s", cs->srv->name,
		    jnl_ts_str(start, a, sizeof a));
	}

	BSON_APPEND_DOCUMENT_BEGIN(&filter, "ts", &range);
	BSON_APPEND_TIMESTAMP(&range, "$gte", JNL_TS_SEC(start), JNL_TS_INC(start));
	bson_append_document_end(&filter, &range);
	BSON_APPEND_BOOL(&opts, "tailable", true);
	BSON_APPEND_BOOL(&opts, "awaitData", true);
	BSON_APPEND_INT64(&opts, "maxAwaitTimeMS", 100);
	coll = mongoc_client_get_collection(c, "local", "oplog.rs");
	cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
	set_state(cs, "running");
	cs->last_error[0] = '\0';

	while (!*cs->stop && !atomic_load(cs->fatal)) {
		if (mongoc_cursor_next(cur, &doc)) {
			struct oplog_info in;
			uint8_t origin[16];
			int has_origin;

			if (oplog_info(doc, &in) != 0) {
				snprintf(cs->last_error, sizeof cs->last_error,
				    "oplog of '%s' returned an entry without op/ns/ts after %s", cs->srv->name,
				    jnl_ts_str(cs->last_ts, a, sizeof a));
				log_warnx("%s", cs->last_error);
				end = END_FATAL;
				break;
			}
			if (first) {
				first = 0;
				if (resuming) {
					if (in.ts != start) {
						end = report_gap(cs, c, start);
						break;
					}
					if (doc->len != last.len || memcmp(bson_get_data(doc), bson_get_data(&last), last.len) != 0) {
						snprintf(cs->last_error, sizeof cs->last_error,
						    "oplog of '%s' holds a different entry at %s than the journal (rolled back?): resync needed",
						    cs->srv->name, jnl_ts_str(start, a, sizeof a));
						log_warnx("%s", cs->last_error);
						set_state(cs, "gap");
						end = END_FATAL;
						break;
					}
					continue;       /* already journaled */
				}
			}
			cs->last_ts = in.ts;
			if (in.wall)
				cs->last_wall = in.wall;
			if (oplog_ns_excluded(in.ns)) {
				note_marker(cs, doc);
				continue;
			}
			has_origin = entry_origin(cs, doc, &in, origin);
			rc = jnl_writer_add_trusted(cs->w, bson_get_data(doc), doc->len, in.ts, has_origin ? origin : NULL);
			if (rc == 1)
				rc = jnl_writer_commit(cs->w);
			if (rc != 0) {
				end = journal_failed(cs, rc);
				break;
			}
			cs->entries++;
			cs->rate_entries++;
			*progressed = 1;
			if (jnl_writer_open_age_ms(cs->w) >= JNL_BLOCK_MAX_AGE_MS &&
			    (rc = jnl_writer_flush(cs->w)) != 0) {
				end = journal_failed(cs, rc);
				break;
			}
		} else if (mongoc_cursor_error(cur, &err)) {
			if (err.code == 136) {    /* CappedPositionLost */
				if ((rc = jnl_writer_flush(cs->w)) != 0) {
					end = journal_failed(cs, rc);
					break;
				}
				end = report_gap(cs, c, jnl_writer_last_ts(cs->w) ? jnl_writer_last_ts(cs->w) : start);
				break;
			}
			snprintf(cs->last_error, sizeof cs->last_error, "%s", err.message);
			if (!is_retryable(&err))
				end = END_FATAL;
			break;
		} else if (!mongoc_cursor_more(cur)) {
			snprintf(cs->last_error, sizeof cs->last_error, "oplog cursor of '%s' closed", cs->srv->name);
			break;
		}
		if (jnl_writer_open_entries(cs->w) && jnl_writer_open_age_ms(cs->w) >= JNL_BLOCK_MAX_AGE_MS &&
		    (rc = jnl_writer_flush(cs->w)) != 0) {
			end = journal_failed(cs, rc);
			break;
		}
		if (mono_ms() - cs->status_at >= STATUS_MS) {
			int64_t now = mono_ms();
			if ((rc = jnl_writer_flush(cs->w)) != 0) {
				end = journal_failed(cs, rc);
				break;
			}
			cs->rate = (double)cs->rate_entries * 1000.0 / (double)(now - cs->rate_since > 0 ? now - cs->rate_since : 1);
			cs->rate_entries = 0;
			cs->rate_since = now;
			poll_server(cs, poll);
			write_status(cs);
		}
	}
	if (*cs->stop && end == END_RETRY)
		end = END_STOP;
out:
	if ((rc = jnl_writer_flush(cs->w)) != 0 && end != END_FATAL)
		end = journal_failed(cs, rc);
	mongoc_cursor_destroy(cur);
	if (coll)
		mongoc_collection_destroy(coll);
	bson_destroy(&filter);
	bson_destroy(&opts);
	bson_destroy(&last);
	return end;
}

static void *source_main(void *arg)
{
	struct cap_source *cs = arg;
	int backoff = BACKOFF_MIN_MS, rc;
	struct jnl_source src;

	if ((rc = jnl_writer_new(cs->j, cs->srv->uuid, &cs->w)) != 0) {
		journal_failed(cs, rc);
		cs->failed = 1;
		return NULL;
	}
	if (jnl_source_get(cs->j, cs->srv->uuid, &src) == 0) {
		cs->last_ts = src.last_ts;
		cs->last_wall = src.last_wall;
	}
	cs->rate_since = mono_ms();
	while (!*cs->stop && !atomic_load(cs->fatal)) {
		bson_error_t err;
		mongoc_client_t *c, *poll = NULL;
		int progressed = 0;
		enum session_end end;

		if (strcmp(cs->state, "running") != 0 || cs->last_error[0])
			set_state(cs, "connecting");
		/* Two clients: a single-threaded libmongoc client runs no command
		 * while its tailable cursor waits, and status needs hello. */
		if ((c = make_client(cs, &err)) == NULL || (poll = make_client(cs, &err)) == NULL) {
			snprintf(cs->last_error, sizeof cs->last_error, "%s", err.message);
			log_warnx("capture of '%s': %s", cs->srv->name, err.message);
			end = END_FATAL;
		} else {
			end = session(cs, c, poll, &progressed);
		}
		if (poll)
			mongoc_client_destroy(poll);
		if (c)
			mongoc_client_destroy(c);
		if (end == END_STOP)
			break;
		if (end == END_FATAL) {
			cs->failed = 1;
			if (strcmp(cs->state, "gap") != 0)
				set_state(cs, "stopped");
			break;
		}
		if (cs->last_error[0]) {
			set_state(cs, "connecting");
			log_info("capture of '%s': %s; retrying in %d ms", cs->srv->name, cs->last_error, backoff);
			write_status(cs);
			for (int waited = 0; waited < backoff && !*cs->stop; waited += 20)
				usleep(20 * 1000);
			backoff = progressed ? BACKOFF_MIN_MS : (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2);
		} else {
			backoff = BACKOFF_MIN_MS;
		}
	}
	if (!cs->failed)
		set_state(cs, "stopped");
	write_status(cs);
	jnl_writer_free(cs->w);
	cs->w = NULL;
	return NULL;
}

static void mongoc_log_to_ours(mongoc_log_level_t level, const char *domain, const char *message, void *arg)
{
	(void)arg;
	if (level <= MONGOC_LOG_LEVEL_WARNING)
		log_debug("libmongoc %s: %s", domain, message);
}

int cap_run(const struct cfg *cfg, struct jnl *j, const size_t *servers, size_t n,
    const struct cap_options *opt, volatile sig_atomic_t *stop)
{
	struct cap_source *cs = calloc(n ? n : 1, sizeof *cs);
	atomic_int fatal = 0;
	int failed = 0;

	if (cs == NULL)
		return log_error(1, "out of memory");
	mongoc_log_set_handler(mongoc_log_to_ours, NULL);
	for (size_t i = 0; i < n; i++) {
		const struct cfg_server *srv = &cfg->servers[servers[i]];
		int rc = jnl_source_ensure(j, srv->uuid, srv->name, srv->uri_redacted, JNL_LOCAL);
		if (rc == MMM_EOWNER) {
			log_warnx("journal '%s' receives '%s' from another site: it cannot also capture it",
			    jnl_path(j), srv->name);
			free(cs);
			return 1;
		}
		if (rc != 0) {
			log_warnx("journal '%s': cannot record source '%s': %s", jnl_path(j), srv->name, mmm_strerror(rc));
			free(cs);
			return 1;
		}
	}
	for (size_t i = 0; i < n; i++) {
		cs[i].srv = &cfg->servers[servers[i]];
		cs[i].j = j;
		cs[i].opt = opt;
		cs[i].stop = stop;
		cs[i].fatal = &fatal;
		cs[i].state = "connecting";
		if (pthread_create(&cs[i].thread, NULL, source_main, &cs[i]) != 0) {
			log_warn("cannot start capture thread for '%s'", cs[i].srv->name);
			atomic_store(&fatal, 1);
			n = i;
			failed = 1;
			break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		pthread_join(cs[i].thread, NULL);
		failed |= cs[i].failed;
	}
	free(cs);
	if (failed || atomic_load(&fatal))
		return 1;
	return *stop ? 0 : 1;
}
