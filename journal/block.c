/* block.c — see block.h and FORMAT.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bson/bson.h>
#include "block.h"
#include "err.h"
#include "hash.h"

/* Header layout (offsets into the block):
 *  0 u32 skippable magic   4 u32 header payload size   8 u64 checksum
 * 16 "MMMB"  20 u16 version  22 u16 flags  24 source[16]  40 u64 prev_ts
 * 48 u64 first_ts  56 u64 last_ts  64 u64 prev_chk  72 u32 count
 * 76 u32 raw_len  80 u32 zlen  84 u32 nannots  88 annotations, then zstd. */

int blk_encode(ZSTD_CCtx *cctx, struct jnl_block_info *info, const uint8_t *raw,
    const struct blk_annot *ann, size_t nann, uint8_t **out, size_t *out_len)
{
	size_t hdr = BLK_FIXED + nann * BLK_ANNOT_SIZE;
	size_t bound = ZSTD_compressBound(info->raw_len);
	uint8_t *buf = malloc(hdr + bound), *p;
	size_t z;

	if (buf == NULL)
		return ENOMEM;
	z = ZSTD_compress2(cctx, buf + hdr, bound, raw, info->raw_len);
	if (ZSTD_isError(z)) {
		free(buf);
		return EIO;
	}
	put32(buf, BLK_MAGIC);
	put32(buf + 4, (uint32_t)(hdr - 8));
	memcpy(buf + 16, "MMMB", 4);
	put16(buf + 20, JNL_FORMAT_VERSION);
	put16(buf + 22, 0);
	memcpy(buf + 24, info->source, 16);
	put64(buf + 40, info->prev_ts);
	put64(buf + 48, info->first_ts);
	put64(buf + 56, info->last_ts);
	put64(buf + 64, info->prev_chk);
	put32(buf + 72, info->count);
	put32(buf + 76, info->raw_len);
	put32(buf + 80, (uint32_t)z);
	put32(buf + 84, (uint32_t)nann);
	p = buf + BLK_FIXED;
	for (size_t i = 0; i < nann; i++, p += BLK_ANNOT_SIZE) {
		put32(p, ann[i].index);
		put16(p + 4, BLK_ANNOT_ORIGIN);
		put16(p + 6, 16);
		memcpy(p + 8, ann[i].origin, 16);
	}
	info->chk = mmm_xxh64(buf + 16, hdr - 16 + z, info->prev_chk);
	put64(buf + 8, info->chk);
	info->stored_len = hdr + z;
	*out = buf;
	*out_len = hdr + z;
	return 0;
}

#define BAD(...) do { if (why) snprintf(why, whylen, __VA_ARGS__); return MMM_ECORRUPT; } while (0)

int blk_parse(const uint8_t *d, size_t len, struct blk_view *v, char *why, size_t whylen)
{
	struct jnl_block_info *in = &v->info;
	size_t hdr;

	memset(v, 0, sizeof *v);
	if (len < BLK_FIXED)
		BAD("block too short (%zu bytes)", len);
	if (le32(d) != BLK_MAGIC || memcmp(d + 16, "MMMB", 4) != 0)
		BAD("bad block magic");
	if (le16(d + 20) != JNL_FORMAT_VERSION)
		BAD("unsupported block version %u", le16(d + 20));
	v->nannots = le32(d + 84);
	hdr = (size_t)le32(d + 4) + 8;
	if (v->nannots > 1000000 || hdr != BLK_FIXED + (size_t)v->nannots * BLK_ANNOT_SIZE || hdr > len)
		BAD("bad block header size");
	v->zlen = le32(d + 80);
	if (hdr + v->zlen != len)
		BAD("block length %zu does not match its header (%zu)", len, hdr + v->zlen);
	in->chk = le64(d + 8);
	memcpy(in->source, d + 24, 16);
	in->prev_ts = le64(d + 40);
	in->first_ts = le64(d + 48);
	in->last_ts = le64(d + 56);
	in->prev_chk = le64(d + 64);
	in->count = le32(d + 72);
	in->raw_len = le32(d + 76);
	in->stored_len = len;
	if (mmm_xxh64(d + 16, len - 16, in->prev_chk) != in->chk)
		BAD("checksum mismatch");
	if (in->count == 0 || in->first_ts > in->last_ts || in->prev_ts >= in->first_ts ||
	    in->raw_len < 5 * in->count)
		BAD("inconsistent block header");
	v->annots = d + BLK_FIXED;
	v->z = d + hdr;
	return 0;
}

int blk_unpack(ZSTD_DCtx *dctx, const struct blk_view *v, uint8_t *out, int64_t *last_wall,
    char *why, size_t whylen)
{
	const struct jnl_block_info *in = &v->info;
	unsigned long long csize = ZSTD_getFrameContentSize(v->z, v->zlen);
	size_t n, off = 0;
	uint64_t prev = in->prev_ts, ts = 0;
	uint32_t count = 0;

	if (csize != in->raw_len)
		BAD("frame content size differs from header");
	n = ZSTD_decompressDCtx(dctx, out, in->raw_len, v->z, v->zlen);
	if (ZSTD_isError(n) || n != in->raw_len)
		BAD("decompression failed: %s", ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short");
	if (last_wall)
		*last_wall = 0;
	while (off < n) {
		uint32_t dl;
		if (n - off < 5 || (dl = le32(out + off)) < 5 || dl > n - off || out[off + dl - 1] != 0)
			BAD("bad bson framing at entry %u", count);
		if (jnl_entry_ts(out + off, dl, &ts) != 0)
			BAD("entry %u has no ts", count);
		if (ts <= prev)
			BAD("entry %u out of order", count);
		if (count == 0 && ts != in->first_ts)
			BAD("first ts differs from header");
		if (last_wall && off + dl == n) {
			bson_t b;
			bson_iter_t it;
			if (bson_init_static(&b, out + off, dl) && bson_iter_init_find(&it, &b, "wall") &&
			    BSON_ITER_HOLDS_DATE_TIME(&it))
				*last_wall = bson_iter_date_time(&it);
		}
		prev = ts;
		off += dl;
		count++;
	}
	if (count != in->count || ts != in->last_ts)
		BAD("entry count or last ts differs from header");
	for (uint32_t i = 0; i < v->nannots; i++) {
		const uint8_t *a = v->annots + (size_t)i * BLK_ANNOT_SIZE;
		if (le32(a) >= count || le16(a + 4) != BLK_ANNOT_ORIGIN || le16(a + 6) != 16 ||
		    (i > 0 && le32(a) <= le32(a - BLK_ANNOT_SIZE)))
			BAD("bad annotation %u", i);
	}
	return 0;
}

void blk_origin(const struct blk_view *v, uint32_t index, uint8_t out[16])
{
	uint32_t lo = 0, hi = v->nannots;
	while (lo < hi) {            /* annotations are sorted by index */
		uint32_t mid = (lo + hi) / 2;
		uint32_t at = le32(v->annots + (size_t)mid * BLK_ANNOT_SIZE);
		if (at == index) {
			memcpy(out, v->annots + (size_t)mid * BLK_ANNOT_SIZE + 8, 16);
			return;
		}
		if (at < index)
			lo = mid + 1;
		else
			hi = mid;
	}
	memcpy(out, v->info.source, 16);
}
