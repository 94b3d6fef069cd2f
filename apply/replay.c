/* replay.c — app_replay(): a journal range into one server, with apply's
 * translation (mmm-journal replay: audits, restores, rebuilding a site). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mongoc/mongoc.h>
#include "apply.h"
#include "diff.h"
#include "err.h"
#include "log.h"
#include "oplog.h"
#include "translate.h"

struct replay {
	mongoc_client_t *c;
	const uint8_t *src;
	struct app_link link;
	char *msg;
	size_t msglen;
};

static void split(const char *ns, char *db, size_t dl, char *coll, size_t cl)
{
	const char *dot = strchr(ns, '.');
	snprintf(db, dl, "%.*s", dot ? (int)(dot - ns) : (int)strlen(ns), ns);
	snprintf(coll, cl, "%s", dot ? dot + 1 : "");
}

/* Applies translated ops in one transaction that carries a marker naming the
 * source as origin, so the target's capture does not send them back there. */
static int replay_ops(struct replay *r, struct tr_list *ops)
{
	bson_error_t err;
	mongoc_client_session_t *s = mongoc_client_start_session(r->c, NULL, &err);
	int ok = s && mongoc_client_session_start_transaction(s, NULL, &err);
	char marker[128];

	oplog_marker_id(r->src, r->src, "replay", marker, sizeof marker);
	if (ok) {
		mongoc_collection_t *mc = mongoc_client_get_collection(r->c, "mmm", "checkpoints");
		bson_t *sel = BCON_NEW("_id", BCON_UTF8(marker)), *upd = BCON_NEW("$set", "{", "origin",
		    BCON_BIN(BSON_SUBTYPE_UUID, r->src, 16), "source", BCON_BIN(BSON_SUBTYPE_UUID, r->src, 16), "}");
		bson_t opts = BSON_INITIALIZER;
		BSON_APPEND_BOOL(&opts, "upsert", true);
		ok = mongoc_client_session_append(s, &opts, &err) &&
		    mongoc_collection_update_one(mc, sel, upd, &opts, NULL, &err);
		bson_destroy(&opts);
		bson_destroy(sel);
		bson_destroy(upd);
		mongoc_collection_destroy(mc);
	}
	for (size_t i = 0; ok && i < ops->n; i++) {
		struct tr_op *op = &ops->ops[i];
		char db[LINK_NS_MAX], coll[LINK_NS_MAX];
		mongoc_collection_t *mc;
		bson_t opts = BSON_INITIALIZER;
		split(op->ns, db, sizeof db, coll, sizeof coll);
		mc = mongoc_client_get_collection(r->c, db, coll);
		ok = mongoc_client_session_append(s, &opts, &err);
		if (ok && op->kind == 'd') {
			ok = mongoc_collection_delete_one(mc, op->id, &opts, NULL, &err);
		} else if (ok) {
			bson_t *doc = NULL, post;
			if (op->kind == 'u') {
				const bson_t *cur;
				mongoc_cursor_t *cu = mongoc_collection_find_with_opts(mc, op->id, &opts, NULL);
				if (mongoc_cursor_next(cu, &cur)) {
					char why[256];
					if (diff_apply_update(cur, op->o, &post, why, sizeof why) == 0)
						doc = bson_copy(&post);
					else
						snprintf(r->msg, r->msglen, "cannot apply update at %s: %s", op->ns, why);
					bson_destroy(&post);
					if (doc == NULL)
						ok = 0;
				}
				if (mongoc_cursor_error(cu, &err))
					ok = 0;
				mongoc_cursor_destroy(cu);
			} else {
				bson_iter_t it;
				doc = bson_iter_init_find(&it, op->o, "_id") ? bson_copy(op->o) : NULL;
				if (doc == NULL) {
					doc = bson_copy(op->id);
					bson_concat(doc, op->o);
				}
			}
			if (ok && doc) {
				BSON_APPEND_BOOL(&opts, "upsert", true);
				ok = mongoc_collection_replace_one(mc, op->id, doc, &opts, NULL, &err);
			}
			if (doc)
				bson_destroy(doc);
		}
		bson_destroy(&opts);
		mongoc_collection_destroy(mc);
	}
	if (ok) {
		bson_t reply;
		ok = mongoc_client_session_commit_transaction(s, &reply, &err);
		bson_destroy(&reply);
	} else if (s) {
		mongoc_client_session_abort_transaction(s, NULL);
	}
	if (!ok && r->msg[0] == '\0')
		snprintf(r->msg, r->msglen, "%s", err.message);
	if (s)
		mongoc_client_session_destroy(s);
	return ok ? 0 : MMM_ESERVER;
}

static int replay_entry(struct replay *r, const struct jnl_entry *e)
{
	bson_t entry;
	struct oplog_info in;
	struct tr_list ops = { 0 };
	const char *cmd;
	char why[512];
	int rc = 0;

	bson_init_static(&entry, e->bson, e->len);
	if (oplog_info(&entry, &in) != 0)
		return snprintf(r->msg, r->msglen, "entry without op, ns or ts"), MMM_EBSON;
	if (in.op == 'n')
		return 0;
	if (in.op != 'c') {
		rc = tr_crud(&entry, e->ts, &r->link, 1, 1, &ops, why, sizeof why);
	} else if (strcmp((cmd = tr_command_name(&entry)), "applyOps") == 0) {
		bson_iter_t it, o, arr;
		if (bson_iter_init_find(&it, &entry, "o") && bson_iter_recurse(&it, &o) && bson_iter_find(&o, "applyOps") &&
		    bson_iter_recurse(&o, &arr)) {
			while (rc == 0 && bson_iter_next(&arr)) {
				const uint8_t *d;
				uint32_t l;
				bson_t op;
				if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
					continue;
				bson_iter_document(&arr, &l, &d);
				bson_init_static(&op, d, l);
				rc = tr_crud(&op, e->ts, &r->link, 1, 1, &ops, why, sizeof why);
			}
		}
	} else if (strcmp(cmd, "commitTransaction") == 0 || strcmp(cmd, "abortTransaction") == 0) {
		return 0;    /* a range replay applies each applyOps as it comes */
	} else {
		struct tr_cmd *cmds;
		size_t n;
		bson_error_t err;
		rc = tr_ddl(&entry, &r->link, 1, 1, &cmds, &n, why, sizeof why);
		for (size_t i = 0; rc == 0 && i < n; i++) {
			int ok = mongoc_client_command_simple(r->c, cmds[i].db, cmds[i].cmd, NULL, NULL, &err);
			for (int k = 0; !ok && k < 4 && cmds[i].ok_codes[k]; k++)
				ok = (int)err.code == cmds[i].ok_codes[k];
			if (!ok) {
				snprintf(r->msg, r->msglen, "%s", err.message);
				rc = MMM_ESERVER;
			}
		}
		if (rc == 0)
			tr_cmds_free(cmds, n);
		return rc;
	}
	if (rc != 0)
		snprintf(r->msg, r->msglen, "%s", why);
	else if (ops.n)
		rc = replay_ops(r, &ops);
	tr_list_free(&ops);
	return rc;
}

int app_replay(struct jnl *j, const uint8_t source[16], uint64_t since, uint64_t until,
    const char *uri, const char *ns, uint64_t *applied, char *msg, size_t msglen)
{
	struct replay r;
	struct jnl_reader *rd = NULL;
	struct jnl_entry e;
	bson_error_t err;
	char ts[32], why[512];
	int rc;

	memset(&r, 0, sizeof r);
	r.src = source;
	r.msg = why;
	r.msglen = sizeof why;
	*applied = 0;
	msg[0] = why[0] = '\0';
	/* the target namespace: given ("db.coll" or "db.*"), else every one as it is */
	snprintf(r.link.ops, sizeof r.link.ops, "iudc");
	if (ns && ns[0]) {
		if (link_check_ns(ns, msg, msglen) != 0)
			return MMM_EUSAGE;
		snprintf(r.link.dst_ns, sizeof r.link.dst_ns, "%s", ns);
		if (strstr(ns, ".*"))
			snprintf(r.link.src_ns, sizeof r.link.src_ns, "%s", ns);   /* db.* keeps names */
		else
			snprintf(r.link.src_ns, sizeof r.link.src_ns, "%s", ns);
	}
	if ((r.c = mongoc_client_new(uri)) == NULL) {
		snprintf(msg, msglen, "bad uri '%s'", uri);
		return MMM_EUSAGE;
	}
	mongoc_client_set_error_api(r.c, MONGOC_ERROR_API_VERSION_2);
	{
		bson_t ping = BSON_INITIALIZER;
		BSON_APPEND_INT32(&ping, "ping", 1);
		if (!mongoc_client_command_simple(r.c, "admin", &ping, NULL, NULL, &err)) {
			snprintf(msg, msglen, "cannot reach the target: %s", err.message);
			bson_destroy(&ping);
			mongoc_client_destroy(r.c);
			return MMM_ESERVER;
		}
		bson_destroy(&ping);
	}
	if ((rc = jnl_reader_open(j, source, since, &rd)) != 0) {
		snprintf(msg, msglen, "%s", mmm_strerror(rc));
		mongoc_client_destroy(r.c);
		return rc;
	}
	while ((rc = jnl_reader_next(rd, &e)) == 0) {
		if (until && e.ts > until)
			break;
		if (ns && ns[0] == '\0')
			ns = NULL;
		if (!ns) {
			/* no mapping given: every namespace to itself */
			bson_t entry;
			struct oplog_info in;
			bson_init_static(&entry, e.bson, e.len);
			if (oplog_info(&entry, &in) == 0 && in.ns[0]) {
				const char *dot = strchr(in.ns, '.');
				if (dot)
					snprintf(r.link.src_ns, sizeof r.link.src_ns, "%.*s.*", (int)(dot - in.ns), in.ns);
				snprintf(r.link.dst_ns, sizeof r.link.dst_ns, "%s", r.link.src_ns);
			}
		}
		if ((rc = replay_entry(&r, &e)) != 0) {
			snprintf(msg, msglen, "entry %s: %s", jnl_ts_str(e.ts, ts, sizeof ts), why);
			break;
		}
		(*applied)++;
	}
	if (rc == MMM_EEND)
		rc = 0;
	else if (rc != 0 && msg[0] == '\0')
		snprintf(msg, msglen, "%s", mmm_strerror(rc));
	jnl_reader_free(rd);
	mongoc_client_destroy(r.c);
	return rc;
}
