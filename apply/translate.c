/* translate.c — see translate.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "oplog.h"
#include "translate.h"

void tr_list_clear(struct tr_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		if (l->ops[i].id)
			bson_destroy(l->ops[i].id);
		if (l->ops[i].o)
			bson_destroy(l->ops[i].o);
		if (l->ops[i].mods)
			bson_destroy(l->ops[i].mods);
	}
	l->n = 0;
}

void tr_list_free(struct tr_list *l)
{
	tr_list_clear(l);
	free(l->ops);
	l->ops = NULL;
	l->cap = 0;
}

static struct tr_op *tr_push(struct tr_list *l)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct tr_op *no = realloc(l->ops, cap * sizeof *no);
		if (no == NULL)
			return NULL;
		l->ops = no;
		l->cap = cap;
	}
	memset(&l->ops[l->n], 0, sizeof l->ops[0]);
	return &l->ops[l->n++];
}

int tr_list_move(struct tr_list *to, struct tr_list *from)
{
	for (size_t i = 0; i < from->n; i++) {
		struct tr_op *op = tr_push(to);
		if (op == NULL)
			return ENOMEM;
		*op = from->ops[i];
	}
	from->n = 0;
	return 0;
}

const char *tr_command_name(const bson_t *entry)
{
	bson_iter_t it, o;
	if (bson_iter_init_find(&it, entry, "o") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
	    bson_iter_recurse(&it, &o) && bson_iter_next(&o))
		return bson_iter_key(&o);
	return "";
}

static int get_doc(const bson_t *b, const char *key, bson_t *out)
{
	bson_iter_t it;
	const uint8_t *data;
	uint32_t len;
	if (!bson_iter_init_find(&it, b, key) || !BSON_ITER_HOLDS_DOCUMENT(&it))
		return 0;
	bson_iter_document(&it, &len, &data);
	return bson_init_static(out, data, len);
}

static const char *get_str(const bson_t *b, const char *key)
{
	bson_iter_t it;
	if (bson_iter_init_find(&it, b, key) && BSON_ITER_HOLDS_UTF8(&it))
		return bson_iter_utf8(&it, NULL);
	return NULL;
}

static int ns_never_applied(const char *ns)
{
	return strncmp(ns, "mmm.", 4) == 0 || strncmp(ns, "local.", 6) == 0 ||
	    strncmp(ns, "config.", 7) == 0 || strncmp(ns, "admin.", 6) == 0;
}

/* {_id: <value of DOC._id>} or NULL. */
static bson_t *id_of(const bson_t *doc)
{
	bson_iter_t it;
	bson_t *id;
	if (!bson_iter_init_find(&it, doc, "_id"))
		return NULL;
	id = bson_new();
	bson_append_iter(id, "_id", 3, &it);
	return id;
}

static int is_update_doc(const bson_t *o)
{
	bson_iter_t it;
	if (!bson_iter_init(&it, o) || !bson_iter_next(&it))
		return 0;
	return bson_iter_key(&it)[0] == '$';
}

int tr_crud(const bson_t *op, uint64_t ts, const struct app_link *links, size_t nlinks, int own,
    struct tr_list *out, char *why, size_t len)
{
	const char *ns = get_str(op, "ns"), *opc = get_str(op, "op");
	bson_iter_t it;
	bson_t o, o2;
	char dst[LINK_NS_MAX];

	if (!ns || !opc)
		return snprintf(why, len, "op without ns or op"), MMM_EUSAGE;
	if (ns_never_applied(ns))
		return 0;
	if (bson_iter_init_find(&it, op, "fromMigrate") && bson_iter_as_bool(&it))
		return 0;
	if (!get_doc(op, "o", &o))
		return snprintf(why, len, "op on '%s' without o", ns), MMM_EUSAGE;
	for (size_t i = 0; i < nlinks; i++) {
		const struct app_link *l = &links[i];
		struct tr_op *t;
		bson_t *id = NULL;
		if (!(own || l->forward) || (l->start_ts && ts < l->start_ts) || (l->applied_until && ts <= l->applied_until) || !link_has_op(l, opc[0]) ||
		    !link_map_ns(l, ns, dst, sizeof dst))
			continue;
		switch (opc[0]) {
		case 'i':
		case 'd':
			id = id_of(&o);
			break;
		case 'u':
			if (get_doc(op, "o2", &o2))
				id = id_of(&o2);
			break;
		default:
			return snprintf(why, len, "unknown op '%s' on '%s'", opc, ns), MMM_EUSAGE;
		}
		if (id == NULL)
			return snprintf(why, len, "%s on '%s' has no _id", opc, ns), MMM_EUSAGE;
		if ((t = tr_push(out)) == NULL) {
			bson_destroy(id);
			return ENOMEM;
		}
		t->kind = opc[0] == 'u' ? (is_update_doc(&o) ? 'u' : 'r') : opc[0];
		memcpy(t->ns, dst, strlen(dst) + 1);        /* (both LINK_NS_MAX) */
		t->id = id;
		t->o = opc[0] == 'd' ? NULL : bson_copy(&o);
		t->ts = ts;
		if (t->kind == 'u')
			t->mods = tr_diff_mods(&o);
	}
	return 0;
}

/* ---- $v:2 diffs as paths --------------------------------------------------- */

static int field_ok(const char *f)
{
	return f[0] != '\0' && f[0] != '$' && strchr(f, '.') == NULL;
}

static int diff_paths(bson_iter_t *diff, const char *prefix, bson_t *set, bson_t *unset, int *n)
{
	while (bson_iter_next(diff)) {
		const char *k = bson_iter_key(diff);
		char path[1024];
		bson_iter_t sec;
		if (!BSON_ITER_HOLDS_DOCUMENT(diff) || !bson_iter_recurse(diff, &sec))
			return 0;
		if (strcmp(k, "d") == 0 || strcmp(k, "u") == 0) {
			while (bson_iter_next(&sec)) {
				const char *f = bson_iter_key(&sec);
				if (!field_ok(f) || snprintf(path, sizeof path, "%s%s", prefix, f) >= (int)sizeof path)
					return 0;
				if (k[0] == 'd')
					BSON_APPEND_INT32(unset, path, 1);
				else
					bson_append_iter(set, path, -1, &sec);
				(*n)++;
			}
		} else if (k[0] == 's' && field_ok(k + 1)) {
			bson_iter_t first = sec;
			if (bson_iter_next(&first) && strcmp(bson_iter_key(&first), "a") == 0)
				return 0;      /* an array diff */
			if (snprintf(path, sizeof path, "%s%s.", prefix, k + 1) >= (int)sizeof path)
				return 0;
			if (!diff_paths(&sec, path, set, unset, n))
				return 0;
		} else {
			return 0;          /* i, b, or unknown */
		}
	}
	return 1;
}

bson_t *tr_diff_mods(const bson_t *o)
{
	bson_iter_t it, diff;
	bson_t set = BSON_INITIALIZER, unset = BSON_INITIALIZER, *out = NULL;
	int n = 0;
	if (!bson_iter_init_find(&it, o, "$v") || bson_iter_as_int64(&it) != 2 ||
	    !bson_iter_init_find(&it, o, "diff") || !BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &diff))
		goto done;
	if (!diff_paths(&diff, "", &set, &unset, &n))
		goto done;
	out = bson_new();
	if (!bson_empty(&set))
		BSON_APPEND_DOCUMENT(out, "$set", &set);
	if (!bson_empty(&unset))
		BSON_APPEND_DOCUMENT(out, "$unset", &unset);
done:
	bson_destroy(&set);
	bson_destroy(&unset);
	return out;
}

/* ---- commands ------------------------------------------------------------ */

static void split_ns(const char *ns, char *db, size_t dblen, const char **coll)
{
	const char *dot = strchr(ns, '.');
	snprintf(db, dblen, "%.*s", dot ? (int)(dot - ns) : (int)strlen(ns), ns);
	*coll = dot ? dot + 1 : "";
}

static struct tr_cmd *cmd_push(struct tr_cmd **cmds, size_t *n)
{
	struct tr_cmd *nc = realloc(*cmds, (*n + 1) * sizeof *nc);
	if (nc == NULL)
		return NULL;
	*cmds = nc;
	memset(&nc[*n], 0, sizeof nc[0]);
	return &nc[(*n)++];
}

void tr_cmds_free(struct tr_cmd *cmds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		bson_destroy(cmds[i].cmd);
	free(cmds);
}

/* Copies every field of O but the first (the command name) and those in SKIP. */
static void copy_rest(bson_t *dst, const bson_t *o, const char *const *skip)
{
	bson_iter_t it;
	int first = 1;
	bson_iter_init(&it, o);
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		int skipped = 0;
		if (first) {
			first = 0;
			continue;
		}
		for (int i = 0; skip && skip[i]; i++)
			if (strcmp(k, skip[i]) == 0)
				skipped = 1;
		if (!skipped)
			bson_append_iter(dst, k, -1, &it);
	}
}

static int ddl_at(const bson_t *entry, uint64_t ts, const struct app_link *links, size_t nlinks, int own,
    struct tr_cmd **out, size_t *n, char *why, size_t len);

int tr_ddl(const bson_t *entry, const struct app_link *links, size_t nlinks, int own,
    struct tr_cmd **out, size_t *n, char *why, size_t len)
{
	bson_iter_t it;
	uint64_t ts = 0;
	if (bson_iter_init_find(&it, entry, "ts") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
		uint32_t s, i;
		bson_iter_timestamp(&it, &s, &i);
		ts = ((uint64_t)s << 32) | i;
	}
	return ddl_at(entry, ts, links, nlinks, own, out, n, why, len);
}

static int ddl_at(const bson_t *entry, uint64_t ts, const struct app_link *links, size_t nlinks, int own,
    struct tr_cmd **out, size_t *n, char *why, size_t len)
{
	const char *ns = get_str(entry, "ns"), *name = tr_command_name(entry), *coll;
	char db[LINK_NS_MAX], src[2 * LINK_NS_MAX + 2], dst[LINK_NS_MAX], ddb[LINK_NS_MAX];
	bson_t o;
	bson_iter_t it;

	*out = NULL;
	*n = 0;
	if (!ns || !get_doc(entry, "o", &o))
		return snprintf(why, len, "command entry without ns or o"), MMM_EUSAGE;
	split_ns(ns, db, sizeof db, &coll);
	if (ns_never_applied(ns))
		return 0;
	if (strcmp(name, "startIndexBuild") == 0 || strcmp(name, "abortIndexBuild") == 0)
		return 0;     /* commitIndexBuild carries the specs; mongorestore skips these too */
	for (size_t li = 0; li < nlinks; li++) {
		const struct app_link *l = &links[li];
		struct tr_cmd *c;
		const char *target = NULL;
		if (!(own || l->forward) || (l->start_ts && ts < l->start_ts) || (l->applied_until && ts <= l->applied_until) || !link_has_op(l, 'c'))
			continue;
		if (bson_iter_init_find(&it, &o, name) && BSON_ITER_HOLDS_UTF8(&it))
			target = bson_iter_utf8(&it, NULL);

		if (strcmp(name, "dropDatabase") == 0) {
			if (!link_map_db(l, db, ddb, sizeof ddb))
				continue;    /* single-collection links got their drop entries */
			if ((c = cmd_push(out, n)) == NULL)
				return ENOMEM;
			snprintf(c->db, sizeof c->db, "%s", ddb);
			c->cmd = BCON_NEW("dropDatabase", BCON_INT32(1));
			continue;
		}
		if (strcmp(name, "renameCollection") == 0) {
			const char *to = get_str(&o, "to");
			char dto[LINK_NS_MAX];
			if (!target || !to)
				return snprintf(why, len, "renameCollection without source or target"), MMM_EUSAGE;
			if (!link_map_ns(l, target, dst, sizeof dst))
				continue;
			if (!link_map_ns(l, to, dto, sizeof dto))
				return snprintf(why, len, "cannot apply renameCollection of '%s' to '%s': the target is not linked",
				    target, to), MMM_EUSAGE;
			if ((c = cmd_push(out, n)) == NULL)
				return ENOMEM;
			snprintf(c->db, sizeof c->db, "admin");
			c->cmd = bson_new();
			BSON_APPEND_UTF8(c->cmd, "renameCollection", dst);
			BSON_APPEND_UTF8(c->cmd, "to", dto);
			if (bson_iter_init_find(&it, &o, "dropTarget") && bson_iter_as_bool(&it))
				BSON_APPEND_BOOL(c->cmd, "dropTarget", true);
			c->ok_codes[0] = 26;      /* NamespaceNotFound: renamed already */
			continue;
		}
		if (!target)
			return snprintf(why, len, "unsupported command '%s' on '%s'", name, ns), MMM_EUSAGE;
		snprintf(src, sizeof src, "%s.%s", db, target);
		if (!link_map_ns(l, src, dst, sizeof dst))
			continue;
		split_ns(dst, ddb, sizeof ddb, &coll);
		if ((c = cmd_push(out, n)) == NULL)
			return ENOMEM;
		snprintf(c->db, sizeof c->db, "%s", ddb);
		c->cmd = bson_new();
		if (strcmp(name, "create") == 0) {
			static const char *const skip[] = { "idIndex", NULL };
			BSON_APPEND_UTF8(c->cmd, "create", coll);
			copy_rest(c->cmd, &o, skip);
			c->ok_codes[0] = 48;      /* NamespaceExists */
		} else if (strcmp(name, "drop") == 0) {
			BSON_APPEND_UTF8(c->cmd, "drop", coll);
			c->ok_codes[0] = 26;
		} else if (strcmp(name, "createIndexes") == 0) {
			bson_t arr, spec;
			static const char *const skip[] = { NULL };
			BSON_APPEND_UTF8(c->cmd, "createIndexes", coll);
			BSON_APPEND_ARRAY_BEGIN(c->cmd, "indexes", &arr);
			BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &spec);
			copy_rest(&spec, &o, skip);
			bson_append_document_end(&arr, &spec);
			bson_append_array_end(c->cmd, &arr);
		} else if (strcmp(name, "commitIndexBuild") == 0) {
			BSON_APPEND_UTF8(c->cmd, "createIndexes", coll);
			if (!bson_iter_init_find(&it, &o, "indexes") || !BSON_ITER_HOLDS_ARRAY(&it))
				return snprintf(why, len, "commitIndexBuild on '%s' without indexes", ns), MMM_EUSAGE;
			bson_append_iter(c->cmd, "indexes", -1, &it);
		} else if (strcmp(name, "dropIndexes") == 0 || strcmp(name, "deleteIndexes") == 0) {
			BSON_APPEND_UTF8(c->cmd, "dropIndexes", coll);
			if (bson_iter_init_find(&it, &o, "index"))
				bson_append_iter(c->cmd, "index", -1, &it);
			c->ok_codes[0] = 27;      /* IndexNotFound */
			c->ok_codes[1] = 26;
		} else if (strcmp(name, "collMod") == 0) {
			static const char *const skip[] = { NULL };
			BSON_APPEND_UTF8(c->cmd, "collMod", coll);
			copy_rest(c->cmd, &o, skip);
		} else {
			return snprintf(why, len, "unsupported command '%s' on '%s'", name, ns), MMM_EUSAGE;
		}
	}
	return 0;
}

int tr_txn_cmd(const bson_t *op, uint64_t ts, const struct app_link *links, size_t nlinks, int own,
    struct tr_list *out, char *why, size_t len)
{
	const char *name = tr_command_name(op);
	struct tr_cmd *cmds = NULL;
	size_t n = 0;
	int rc;

	if (strcmp(name, "create") != 0 && strcmp(name, "createIndexes") != 0)
		return snprintf(why, len, "command '%s' inside a transaction is not supported", name), MMM_EUSAGE;
	if ((rc = ddl_at(op, ts, links, nlinks, own, &cmds, &n, why, len)) != 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		struct tr_op *t = tr_push(out);
		if (t == NULL) {
			tr_cmds_free(cmds, n);
			return ENOMEM;
		}
		t->kind = 'c';
		snprintf(t->ns, sizeof t->ns, "%s", cmds[i].db);
		t->o = cmds[i].cmd;
		cmds[i].cmd = bson_new();
		memcpy(t->ok_codes, cmds[i].ok_codes, sizeof t->ok_codes);
		t->ts = ts;
	}
	tr_cmds_free(cmds, n);
	return 0;
}
