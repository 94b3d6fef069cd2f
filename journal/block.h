/*
 * block.h — encoding and checking one journal block (FORMAT.md §2).
 *
 * A block is a zstd skippable frame holding the header (checksum, source,
 * previous ts and checksum, first/last ts, count, lengths, per-entry
 * annotations) followed by one ordinary zstd frame of the entries' raw BSON,
 * concatenated.  The checksum is XXH64, seeded with the previous block's
 * checksum, over everything after the checksum field: a changed byte
 * anywhere in a block, or a block taken out of its chain, is detected.
 * Used by journal.c and segment.c only.
 */
#ifndef MMM_BLOCK_H
#define MMM_BLOCK_H
#include <stddef.h>
#include <stdint.h>
#include <zstd.h>
#include "journal.h"

#define BLK_MAGIC        0x184D2A5Eu   /* skippable frame magic of a block header */
#define BLK_FIXED        88            /* bytes before the annotations */
#define BLK_ANNOT_ORIGIN 1             /* annotation kind: 16-byte origin UUID */
#define BLK_ANNOT_SIZE   24            /* u32 index, u16 kind, u16 len, 16 bytes */

struct blk_annot {
	uint32_t index;
	uint8_t origin[16];
};

/* A block's pieces after blk_parse(); pointers into the caller's buffer. */
struct blk_view {
	struct jnl_block_info info;
	const uint8_t *annots;     /* nannots * BLK_ANNOT_SIZE bytes */
	uint32_t nannots;
	const uint8_t *z;          /* the zstd frame */
	size_t zlen;
};

/* Encodes a block into a malloc'd buffer (*out, *out_len); info->chk is set.
 * INFO supplies source, prev_ts, prev_chk, first_ts, last_ts, count, raw_len. */
int blk_encode(ZSTD_CCtx *cctx, struct jnl_block_info *info, const uint8_t *raw,
    const struct blk_annot *ann, size_t nann, uint8_t **out, size_t *out_len);

/* Checks framing and checksum of the block at DATA (exactly LEN bytes) and
 * fills *v.  MMM_ECORRUPT with a reason in WHY (may be NULL) on failure. */
int blk_parse(const uint8_t *data, size_t len, struct blk_view *v, char *why, size_t whylen);

/* Decompresses into OUT (v->info.raw_len bytes) and checks the entries:
 * valid BSON framing, count, ts strictly ascending from first_ts to last_ts
 * and above prev_ts.  Sets v->info.last_wall-like *last_wall (0 if absent). */
int blk_unpack(ZSTD_DCtx *dctx, const struct blk_view *v, uint8_t *out, int64_t *last_wall,
    char *why, size_t whylen);

/* Origin of entry INDEX (the source itself when not annotated). */
void blk_origin(const struct blk_view *v, uint32_t index, uint8_t out[16]);

#endif
