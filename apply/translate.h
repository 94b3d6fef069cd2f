/*
 * translate.h — oplog entry -> destination writes, through the links.
 *
 * CRUD ops (a top-level entry or an op inside applyOps) become tr_ops on the
 * destination namespace: 'i' insert (applied as an upsert by _id, so it is
 * idempotent), 'r' replacement, 'u' update (o is a $v:1 or $v:2 update,
 * turned into a post-image by apply), 'd' delete.  DDL entries become
 * commands (tr_cmd) with the error codes that mean "already done", so a
 * replay after a crash is harmless.
 */
#ifndef MMM_TRANSLATE_H
#define MMM_TRANSLATE_H
#include <stddef.h>
#include <stdint.h>
#include <bson/bson.h>
#include "links.h"
#include "stamp.h"

struct tr_op {
	char kind;                 /* 'i' 'r' 'u' 'd', 'c': a command of a transaction, or
	                              'R': re-derive the document (conflict.h) */
	char ns[LINK_NS_MAX];      /* destination namespace ('c': the database) */
	bson_t *id;                /* {_id: value} (NULL for 'c') */
	bson_t *o;                 /* document ('i','r'), update ('u') or command ('c'); NULL for 'd' */
	uint64_t ts;               /* source entry */
	uint64_t first_ts;         /* first entry of its transaction when that spans entries */
	int ok_codes[4];           /* 'c': server codes that mean it is already done */
	bson_t *mods;              /* 'u': the same update as {$set, $unset} of paths, when
	                              that is exact (tr_diff_mods); else NULL */
	struct stamp st;           /* the write's stamp (CONFLICTS.md); 'R': the late write's */
	struct stamp newer;        /* 'R': the newer write it came after (zero: nothing to log) */
	int skip;                  /* already held by the destination (same stamp): left out */
};

struct tr_list {
	struct tr_op *ops;
	size_t n, cap;
};

void tr_list_clear(struct tr_list *l);
void tr_list_free(struct tr_list *l);
/* Moves every op of FROM to the end of TO (FROM is left empty). */
int tr_list_move(struct tr_list *to, struct tr_list *from);

/* Translates the CRUD op OP (fields op, ns, o, o2) of source entry TS
 * through the LINKS that apply to it (OWN: the entry's origin is the source
 * itself; otherwise only links with forward).  Ops on namespaces no link
 * covers, mmm.*, local.*, config.*, admin.* and fromMigrate ops add nothing.
 * MMM_EUSAGE with a reason when the op cannot be applied. */
int tr_crud(const bson_t *op, uint64_t ts, const struct app_link *links, size_t nlinks, int own,
    struct tr_list *out, char *why, size_t len);

struct tr_cmd {
	char db[LINK_NS_MAX];      /* database to run it on */
	bson_t *cmd;
	int ok_codes[4];           /* server codes that mean it is already done */
};

/* Translates the command entry ENTRY (op 'c', not applyOps or a
 * transaction command).  Returns 0 with *n commands (0 when no link covers
 * it or it needs no action, e.g. startIndexBuild), or MMM_EUSAGE with a
 * reason when it cannot be applied.  Free with tr_cmds_free(). */
int tr_ddl(const bson_t *entry, const struct app_link *links, size_t nlinks, int own,
    struct tr_cmd **out, size_t *n, char *why, size_t len);
void tr_cmds_free(struct tr_cmd *cmds, size_t n);

/* Translates a command op inside a transaction's applyOps (create,
 * createIndexes: the only ones a server logs there) into 'c' tr_ops of OUT.
 * 0, or MMM_EUSAGE with a reason. */
int tr_txn_cmd(const bson_t *op, uint64_t ts, const struct app_link *links, size_t nlinks, int own,
    struct tr_list *out, char *why, size_t len);

/* When the $v:2 update O ({$v:2, diff}) only replaces fields that exist
 * (`u`), deletes fields (`d`) and recurses into sub-documents (`s<field>`
 * on a document), it is exactly {$set: {path: v}, $unset: {path: 1}} of
 * dotted paths, which the server applies in place: returns that, else NULL
 * (inserted fields `i` move to the end, array diffs have no path form).
 * An empty diff gives an empty document. */
bson_t *tr_diff_mods(const bson_t *o);

/* The first key of an entry's `o` ("applyOps", "create", ...); "" if none. */
const char *tr_command_name(const bson_t *entry);

#endif
