/*
 * oplog.h — the oplog entry model shared by capture and apply: what an entry
 * is (op, ns, ts, wall, transaction identity), which entries are never
 * journaled, and the markers apply writes to `mmm.checkpoints` so that
 * capture can tell, from the destination's oplog alone, where a write came
 * from (DESIGN.md §5).
 *
 * Marker documents.  Apply upserts, inside every transaction it commits,
 * and first in it, one document of `mmm.checkpoints`:
 *     {_id: "mmm:<origin uuid>:<source uuid>:<worker>", origin: UUID,
 *      source: UUID, ts: Timestamp}
 * An update's oplog entry carries the _id in `o2`, an insert's in `o`, so the
 * origin is readable from any form the server logs.  Before a DDL command,
 * apply replaces the document "mmm:<origin>:<source>:ddl" with
 * {_id, origin, source, ts, cmd: "<target>"}, the target being the
 * destination collection ("db.coll") or, for database commands, the
 * database ("db") (oplog_cmd_target()); capture gives that origin to the DDL
 * entries on that target that follow (one command may log several:
 * startIndexBuild + commitIndexBuild, drops + dropDatabase), until that
 * origin's next checkpoint transaction (which closes the bracket) or 64
 * entries, whichever comes first.  Brackets are kept per target (up to 16),
 * so a master's own DDL on another collection is never taken for apply's.
 */
#ifndef MMM_OPLOG_H
#define MMM_OPLOG_H
#include <stddef.h>
#include <stdint.h>
#include <bson/bson.h>

#define OPLOG_MARKER_NS   "mmm.checkpoints"
#define OPLOG_MARKER_PFX  "mmm:"

/* The fields of an entry that routing needs; pointers into the entry. */
struct oplog_info {
	char op;                  /* 'i' 'u' 'd' 'c' 'n', 0 when absent */
	const char *ns;           /* "" when absent */
	uint64_t ts;
	int64_t wall;             /* ms, 0 when absent */
	const uint8_t *lsid;      /* lsid.id UUID bytes, NULL when absent */
	int64_t txn_number;       /* -1 when absent */
	int has_txn;              /* lsid and txnNumber present */
};

/* Fills *info from ENTRY.  MMM_EBSON when op/ns/ts are missing or mistyped. */
int oplog_info(const bson_t *entry, struct oplog_info *info);

/* Non-zero for namespaces that are never journaled or applied:
 * "mmm.*", "config.system.sessions", "local.*". */
int oplog_ns_excluded(const char *ns);

/* The marker _id for (origin, source, worker); BUF >= 96 bytes. */
const char *oplog_marker_id(const uint8_t origin[16], const uint8_t source[16], const char *worker,
    char *buf, size_t len);
/* If ID (a marker _id string) names an origin, copies it to ORIGIN and
 * returns 1; WORKER (may be NULL) receives a pointer to the worker part. */
int oplog_marker_parse(const char *id, uint8_t origin[16], const char **worker);

/* If the CRUD op OP (an entry, or an inner op of applyOps) writes
 * mmm.checkpoints, returns 1 and sets ORIGIN; *is_ddl is set when it is a
 * DDL marker and CMD (may be NULL, >= 256 bytes) receives its `cmd`. */
int oplog_marker_of_op(const bson_t *op, uint8_t origin[16], int *is_ddl, char *cmd, size_t cmdlen);

/* For an applyOps command entry: 1 when any inner op is a marker (ORIGIN set). */
int oplog_applyops_marker(const bson_t *entry, uint8_t origin[16]);

/* "create test.foo" style description of a command entry (op 'c'), used to
 * pair DDL with its marker; "" when the entry is not DDL. */
const char *oplog_ddl_desc(const bson_t *entry, char *buf, size_t len);

/* The target of command CMD run on database DB, as a DDL marker's `cmd`
 * names it: "db.coll" for a collection's command (renameCollection, run on
 * admin: its source namespace), "db" for a database's (dropDatabase). */
const char *oplog_cmd_target(const char *db, const bson_t *cmd, char *buf, size_t len);
/* Whether a marker naming TARGET covers the DDL entry ENTRY: its namespace
 * (the part of oplog_ddl_desc after the command name) equals TARGET, or lies
 * in database TARGET, or TARGET is "" (any).  0 when ENTRY is not DDL. */
int oplog_target_covers(const char *target, const bson_t *entry);

#endif
