/* oplog.c — see oplog.h. */
#include <string.h>
#include "config.h"
#include "err.h"
#include "journal.h"
#include "oplog.h"

int oplog_info(const bson_t *entry, struct oplog_info *info)
{
	bson_iter_t it;
	int have_ts = 0;

	memset(info, 0, sizeof *info);
	info->ns = "";
	info->txn_number = -1;
	if (!bson_iter_init(&it, entry))
		return MMM_EBSON;
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		/* (a switch on the first letter: this runs for every entry captured) */
		switch (k[0]) {
		case 'o':
			if (k[1] == 'p' && k[2] == '\0' && BSON_ITER_HOLDS_UTF8(&it))
				info->op = bson_iter_utf8(&it, NULL)[0];
			break;
		case 'n':
			if (k[1] == 's' && k[2] == '\0' && BSON_ITER_HOLDS_UTF8(&it))
				info->ns = bson_iter_utf8(&it, NULL);
			break;
		case 't':
			if (k[1] == 's' && k[2] == '\0' && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
				uint32_t s, i;
				bson_iter_timestamp(&it, &s, &i);
				info->ts = JNL_TS(s, i);
				have_ts = 1;
			} else if (strcmp(k, "txnNumber") == 0 && BSON_ITER_HOLDS_INT(&it)) {
				info->txn_number = bson_iter_as_int64(&it);
			}
			break;
		case 'w':
			if (strcmp(k, "wall") == 0 && BSON_ITER_HOLDS_DATE_TIME(&it))
				info->wall = bson_iter_date_time(&it);
			break;
		case 'l':
			if (strcmp(k, "lsid") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it)) {
				bson_iter_t sub;
				if (bson_iter_recurse(&it, &sub) && bson_iter_find(&sub, "id") && BSON_ITER_HOLDS_BINARY(&sub)) {
					bson_subtype_t st;
					uint32_t len;
					const uint8_t *data;
					bson_iter_binary(&sub, &st, &len, &data);
					if (len == 16)
						info->lsid = data;
				}
			}
			break;
		}
	}
	info->has_txn = info->lsid != NULL && info->txn_number >= 0;
	return info->op && have_ts ? 0 : MMM_EBSON;
}

int oplog_ns_excluded(const char *ns)
{
	return strncmp(ns, "mmm.", 4) == 0 || strncmp(ns, "local.", 6) == 0 ||
	    strcmp(ns, "config.system.sessions") == 0;
}

const char *oplog_marker_id(const uint8_t origin[16], const uint8_t source[16], const char *worker,
    char *buf, size_t len)
{
	char o[37], s[37];
	uuid_format(origin, o);
	uuid_format(source, s);
	snprintf(buf, len, OPLOG_MARKER_PFX "%s:%s:%s", o, s, worker);
	return buf;
}

int oplog_marker_parse(const char *id, uint8_t origin[16], const char **worker)
{
	char o[37];
	size_t n = strlen(OPLOG_MARKER_PFX);
	if (strncmp(id, OPLOG_MARKER_PFX, n) != 0 || strlen(id) < n + 36 + 1 + 36 + 1)
		return 0;
	memcpy(o, id + n, 36);
	o[36] = '\0';
	if (uuid_parse(o, origin) != 0)
		return 0;
	if (worker)
		*worker = id + n + 36 + 1 + 36 + 1;
	return 1;
}

/* The _id string of a CRUD op: o2._id for updates, o._id otherwise. */
static const char *op_id_string(const bson_t *op, char opc)
{
	bson_iter_t it, sub;
	const char *field = opc == 'u' ? "o2" : "o";
	if (!bson_iter_init_find(&it, op, field) || !BSON_ITER_HOLDS_DOCUMENT(&it))
		return NULL;
	if (!bson_iter_recurse(&it, &sub) || !bson_iter_find(&sub, "_id") || !BSON_ITER_HOLDS_UTF8(&sub))
		return NULL;
	return bson_iter_utf8(&sub, NULL);
}

int oplog_marker_of_op(const bson_t *op, uint8_t origin[16], int *is_ddl, char *cmd, size_t cmdlen)
{
	bson_iter_t it, o;
	const char *ns = NULL, *id, *worker;
	char opc = 0;

	if (is_ddl)
		*is_ddl = 0;
	if (cmd && cmdlen)
		cmd[0] = '\0';
	if (bson_iter_init_find(&it, op, "ns") && BSON_ITER_HOLDS_UTF8(&it))
		ns = bson_iter_utf8(&it, NULL);
	if (!ns || strcmp(ns, OPLOG_MARKER_NS) != 0)
		return 0;
	if (bson_iter_init_find(&it, op, "op") && BSON_ITER_HOLDS_UTF8(&it))
		opc = bson_iter_utf8(&it, NULL)[0];
	if (opc != 'i' && opc != 'u')
		return 0;
	if ((id = op_id_string(op, opc)) == NULL || !oplog_marker_parse(id, origin, &worker))
		return 0;
	if (strcmp(worker, "ddl") == 0) {
		if (is_ddl)
			*is_ddl = 1;
		if (cmd && bson_iter_init_find(&it, op, "o") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
		    bson_iter_recurse(&it, &o) && bson_iter_find(&o, "cmd") && BSON_ITER_HOLDS_UTF8(&o))
			snprintf(cmd, cmdlen, "%s", bson_iter_utf8(&o, NULL));
	}
	return 1;
}

int oplog_applyops_marker(const bson_t *entry, uint8_t origin[16])
{
	bson_iter_t it, ops, one;
	if (!bson_iter_init_find(&it, entry, "o") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
	    !bson_iter_recurse(&it, &ops) || !bson_iter_find(&ops, "applyOps") || !BSON_ITER_HOLDS_ARRAY(&ops) ||
	    !bson_iter_recurse(&ops, &one))
		return 0;
	while (bson_iter_next(&one)) {
		const uint8_t *data;
		uint32_t len;
		bson_t op;
		if (!BSON_ITER_HOLDS_DOCUMENT(&one))
			continue;
		bson_iter_document(&one, &len, &data);
		if (bson_init_static(&op, data, len) && oplog_marker_of_op(&op, origin, NULL, NULL, 0))
			return 1;
	}
	return 0;
}

const char *oplog_ddl_desc(const bson_t *entry, char *buf, size_t len)
{
	static const char *const ddl[] = { "create", "drop", "createIndexes", "startIndexBuild",
		"commitIndexBuild", "abortIndexBuild", "dropIndexes", "renameCollection", "dropDatabase",
		"collMod", NULL };
	bson_iter_t it, o;
	const char *ns = "", *name;
	char db[128];

	buf[0] = '\0';
	if (bson_iter_init_find(&it, entry, "ns") && BSON_ITER_HOLDS_UTF8(&it))
		ns = bson_iter_utf8(&it, NULL);
	if (!bson_iter_init_find(&it, entry, "o") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
	    !bson_iter_recurse(&it, &o) || !bson_iter_next(&o))
		return buf;
	name = bson_iter_key(&o);
	for (int i = 0; ddl[i]; i++) {
		if (strcmp(name, ddl[i]) != 0)
			continue;
		const char *dot = strchr(ns, '.');
		snprintf(db, sizeof db, "%.*s", dot ? (int)(dot - ns) : (int)strlen(ns), ns);
		if (BSON_ITER_HOLDS_UTF8(&o) && strcmp(name, "renameCollection") != 0)
			snprintf(buf, len, "%s %s.%s", name, db, bson_iter_utf8(&o, NULL));
		else if (BSON_ITER_HOLDS_UTF8(&o))
			snprintf(buf, len, "%s %s", name, bson_iter_utf8(&o, NULL));
		else
			snprintf(buf, len, "%s %s", name, db);
		break;
	}
	return buf;
}

const char *oplog_cmd_target(const char *db, const bson_t *cmd, char *buf, size_t len)
{
	bson_iter_t it;
	buf[0] = '\0';
	if (!bson_iter_init(&it, cmd) || !bson_iter_next(&it) || !BSON_ITER_HOLDS_UTF8(&it))
		snprintf(buf, len, "%s", strcmp(db, "admin") == 0 ? "" : db);
	else if (strcmp(db, "admin") == 0)
		snprintf(buf, len, "%s", bson_iter_utf8(&it, NULL));
	else
		snprintf(buf, len, "%s.%s", db, bson_iter_utf8(&it, NULL));
	return buf;
}

int oplog_target_covers(const char *target, const bson_t *entry)
{
	char desc[512];
	const char *ns;
	size_t tl = strlen(target);

	if (!oplog_ddl_desc(entry, desc, sizeof desc)[0] || (ns = strchr(desc, ' ')) == NULL)
		return 0;
	ns++;
	if (tl == 0 || strcmp(ns, target) == 0)
		return 1;
	/* a database target covers its collections; a collection target covers
	 * the database-level form of its own entry only */
	return strchr(target, '.') == NULL && strncmp(ns, target, tl) == 0 && (ns[tl] == '.' || ns[tl] == '\0');
}
