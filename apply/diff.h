/*
 * diff.h — the in-memory update applier: computes the post-image of an
 * update oplog entry from its pre-image exactly as the server does, field
 * order included, so mmm-apply can compare, hash or write whole documents.
 *
 * Three forms of update `o` (MONGO-FACTS.md "Updates: three forms"):
 *   - replacement: `o` has no $-prefixed first key; `o` is the new document
 *     (the pre-image's _id goes first when `o` has none);
 *   - `$v:2` delta: `{$v:2, diff:{...}}`, semantics of the server's
 *     src/mongo/db/update/document_diff_applier.cpp with the reader rules of
 *     document_diff_serialization.cpp (sections d, u, i, s<field>; array
 *     diffs a:true, l, u<N>, s<N>);
 *   - `$v:1` / pre-4.x modifier: `{$set:{path:v}, $unset:{path:1}}` applied as
 *     the server's oplog application does (UpdateObjectNode, SetNode,
 *     UnsetNode, pathsupport::createPathAt with fromOplogApplication=true).
 *
 * Invariants: the inputs are never modified; `out` is always initialised by
 * the callee (bson_init) and must be bson_destroy'ed by the caller, also on
 * error; on error `out`'s content is unspecified.  Errors are MMM_EBSON with
 * a one-line lowercase reason in `err` (truncated to `errlen`; `err` may be
 * NULL when errlen is 0).  No global state; thread-safe.
 */
#ifndef MMM_DIFF_H
#define MMM_DIFF_H
#include <stddef.h>
#include <bson/bson.h>

/* Applies a $v:2 document diff (the value of the oplog entry's o.diff) to DOC.
 * 0, or MMM_EBSON for a diff the server would reject. */
int diff_apply_v2(const bson_t *doc, const bson_t *diff, bson_t *out, char *err, size_t errlen);

/* Applies a $v:1 (or pre-4.x) modifier update {$set:{path:v}, $unset:{path:1}}
 * (the whole o; its "$v" key is ignored) to DOC.  0, or MMM_EBSON for another
 * operator, a malformed path, conflicting paths, or padding an array by more
 * than 1500000 elements (the server's CannotBackfillArray). */
int diff_apply_v1(const bson_t *doc, const bson_t *update, bson_t *out, char *err, size_t errlen);

/* Applies any update entry's o: a replacement (o in its own order, preceded
 * by DOC's _id when o has no _id), a $v:2 delta or a $v:1/modifier update.
 * 0, or MMM_EBSON (also for an unknown $v). */
int diff_apply_update(const bson_t *doc, const bson_t *o, bson_t *out, char *err, size_t errlen);

#endif
