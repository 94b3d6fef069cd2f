/* segment.c — segment files, see segment.h and FORMAT.md §3. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include "block.h"
#include "config.h"
#include "err.h"
#include "hash.h"
#include "segment.h"

#define SEG_MAGIC 0x184D2A5Du    /* skippable frame magic of a segment header */
#define SEG_HDR   88

/* Header: 0 u32 magic  4 u32 payload size (80)  8 u64 checksum of bytes 16..88
 * 16 "MMMS"  20 u16 version  22 u16 flags  24 journal[16]  40 source[16]
 * 56 u64 first_ts  64 u64 last_ts  72 u32 blocks  76 u32 reserved  80 u64 block bytes */

static void seg_header(uint8_t h[SEG_HDR], const struct seg_stats *st)
{
	memset(h, 0, SEG_HDR);
	put32(h, SEG_MAGIC);
	put32(h + 4, SEG_HDR - 8);
	memcpy(h + 16, "MMMS", 4);
	put16(h + 20, JNL_FORMAT_VERSION);
	memcpy(h + 24, st->journal, 16);
	memcpy(h + 40, st->source, 16);
	put64(h + 56, st->first_ts);
	put64(h + 64, st->last_ts);
	put32(h + 72, (uint32_t)st->blocks);
	put64(h + 80, st->bytes);
	put64(h + 8, mmm_xxh64(h + 16, SEG_HDR - 16, 0));
}

/* ---- ship --------------------------------------------------------------- */

struct ship_arg {
	struct seg_stats *st;
	uint64_t stop_ts;         /* pass 2: nothing after the last block of pass 1 */
	int fd, err;
	uint8_t *buf;
	size_t used;
};

static int ship_count(void *arg, const struct jnl_block_info *info, int prc, const uint8_t *d, size_t len)
{
	struct ship_arg *a = arg;
	(void)d;
	if (prc != 0)
		return MMM_ECORRUPT;
	if (a->st->blocks == 0)
		a->st->first_ts = info->first_ts;
	a->st->last_ts = info->last_ts;
	a->st->blocks++;
	a->st->entries += info->count;
	a->st->bytes += len;
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

#define SHIP_BUF (1 << 20)

static int ship_write(void *arg, const struct jnl_block_info *info, int prc, const uint8_t *d, size_t len)
{
	struct ship_arg *a = arg;
	int rc;
	if (prc != 0)
		return MMM_ECORRUPT;
	if (info->first_ts > a->stop_ts)
		return 1;
	if (a->used + len > SHIP_BUF) {
		if ((rc = write_all(a->fd, a->buf, a->used)) != 0)
			return rc;
		a->used = 0;
	}
	if (len > SHIP_BUF)
		return write_all(a->fd, d, len);
	memcpy(a->buf + a->used, d, len);
	a->used += len;
	return 0;
}

int seg_ship(struct jnl *j, const uint8_t source[16], uint64_t since, uint64_t until,
    const char *path, struct seg_stats *st, char *msg, size_t msglen)
{
	struct ship_arg a = { st, 0, -1, 0, NULL, 0 };
	uint8_t hdr[SEG_HDR];
	char tmp[4096], b1[32], uu[37];
	int rc, to_stdout = strcmp(path, "-") == 0;

	memset(st, 0, sizeof *st);
	jnl_uuid(j, st->journal);
	memcpy(st->source, source, 16);
	msg[0] = '\0';
	rc = jnl_block_walk(j, source, since, until, ship_count, &a);
	if (rc != 0) {
		snprintf(msg, msglen, "journal '%s' has a damaged block: run verify", jnl_path(j));
		return rc;
	}
	if (st->blocks == 0) {
		uuid_format(source, uu);
		snprintf(msg, msglen, "no entries of source %s in that range", uu);
		return MMM_ENOTFOUND;
	}
	a.stop_ts = st->last_ts;
	if (to_stdout) {
		a.fd = 1;
	} else {
		snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
		if ((a.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
			rc = errno;
			snprintf(msg, msglen, "cannot create '%s': %s", tmp, strerror(rc));
			return rc;
		}
	}
	if ((a.buf = malloc(SHIP_BUF)) == NULL) {
		rc = ENOMEM;
		goto out;
	}
	seg_header(hdr, st);
	memcpy(a.buf, hdr, SEG_HDR);
	a.used = SEG_HDR;
	/* Pass 2 writes the blocks pass 1 counted: none committed since is
	 * included (stop_ts), and blocks are never rewritten, so the header holds. */
	rc = jnl_block_walk(j, source, since, until, ship_write, &a);
	if (rc == 1)
		rc = 0;
	if (rc == 0 && a.used)
		rc = write_all(a.fd, a.buf, a.used);
	if (rc == 0 && !to_stdout && fsync(a.fd) != 0)
		rc = errno;
	if (rc != 0)
		snprintf(msg, msglen, "cannot write segment '%s' at %s: %s", path,
		    jnl_ts_str(st->last_ts, b1, sizeof b1), mmm_strerror(rc));
out:
	free(a.buf);
	if (!to_stdout) {
		if (close(a.fd) != 0 && rc == 0)
			rc = errno;
		if (rc == 0 && rename(tmp, path) != 0) {
			rc = errno;
			snprintf(msg, msglen, "cannot rename '%s' to '%s': %s", tmp, path, strerror(rc));
		}
		if (rc != 0)
			unlink(tmp);
	}
	return rc;
}

/* ---- check and receive -------------------------------------------------- */

#define BADSEG(...) do { snprintf(msg, msglen, __VA_ARGS__); rc = MMM_ECORRUPT; goto out; } while (0)

/* Parses and checks a whole segment; fills *refs (malloc'd) when non-NULL. */
static int seg_parse(const uint8_t *d, size_t len, struct seg_stats *st, struct jnl_blockref **refs,
    char *msg, size_t msglen)
{
	struct jnl_blockref *r = NULL;
	ZSTD_DCtx *dctx = NULL;
	uint8_t *raw = NULL;
	size_t raw_cap = 0, off = SEG_HDR;
	uint64_t nblocks, prev_ts = 0, prev_chk = 0;
	char why[200];
	int rc = 0;

	memset(st, 0, sizeof *st);
	if (refs)
		*refs = NULL;
	if (len < SEG_HDR)
		BADSEG("too short for a segment (%zu bytes)", len);
	if (le32(d) != SEG_MAGIC || le32(d + 4) != SEG_HDR - 8 || memcmp(d + 16, "MMMS", 4) != 0)
		BADSEG("not an mmm segment (bad magic)");
	if (le64(d + 8) != mmm_xxh64(d + 16, SEG_HDR - 16, 0))
		BADSEG("segment header checksum mismatch");
	if (le16(d + 20) != JNL_FORMAT_VERSION) {
		snprintf(msg, msglen, "unsupported segment version %u", le16(d + 20));
		return MMM_EVERSION;
	}
	memcpy(st->journal, d + 24, 16);
	memcpy(st->source, d + 40, 16);
	st->first_ts = le64(d + 56);
	st->last_ts = le64(d + 64);
	nblocks = le32(d + 72);
	st->bytes = le64(d + 80);
	if (st->bytes != len - SEG_HDR)
		BADSEG("segment is %zu bytes, its header says %llu: truncated or extended", len,
		    (unsigned long long)(st->bytes + SEG_HDR));
	if (nblocks == 0 || nblocks > len / BLK_FIXED)
		BADSEG("bad block count %llu", (unsigned long long)nblocks);
	if (refs && (r = calloc(nblocks, sizeof *r)) == NULL)
		return ENOMEM;
	if ((dctx = ZSTD_createDCtx()) == NULL) {
		rc = ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < nblocks; i++) {
		struct blk_view view;
		size_t blen;
		if (len - off < BLK_FIXED)
			BADSEG("block %llu is cut short", (unsigned long long)i);
		blen = 8 + (size_t)le32(d + off + 4) + le32(d + off + 80);
		if (blen > len - off)
			BADSEG("block %llu runs past the end of the segment", (unsigned long long)i);
		if (blk_parse(d + off, blen, &view, why, sizeof why) != 0)
			BADSEG("block %llu: %s", (unsigned long long)i, why);
		if (memcmp(view.info.source, st->source, 16) != 0)
			BADSEG("block %llu belongs to another source", (unsigned long long)i);
		if (i > 0 && (view.info.prev_ts != prev_ts || view.info.prev_chk != prev_chk))
			BADSEG("block %llu does not follow block %llu", (unsigned long long)i, (unsigned long long)i - 1);
		if (i == 0 && view.info.first_ts != st->first_ts)
			BADSEG("first block does not start at the header's first ts");
		if (view.info.raw_len > raw_cap) {
			uint8_t *nr = realloc(raw, view.info.raw_len);
			if (nr == NULL) {
				rc = ENOMEM;
				goto out;
			}
			raw = nr;
			raw_cap = view.info.raw_len;
		}
		if (blk_unpack(dctx, &view, raw, &view.info.last_wall, why, sizeof why) != 0)
			BADSEG("block %llu: %s", (unsigned long long)i, why);
		if (r) {
			r[i].data = d + off;
			r[i].len = blen;
			r[i].info = view.info;
		}
		prev_ts = view.info.last_ts;
		prev_chk = view.info.chk;
		st->blocks++;
		st->entries += view.info.count;
		off += blen;
	}
	if (off != len)
		BADSEG("%zu bytes after the last block", len - off);
	if (prev_ts != st->last_ts)
		BADSEG("last block does not end at the header's last ts");
out:
	ZSTD_freeDCtx(dctx);
	free(raw);
	if (rc != 0)
		free(r);
	else if (refs)
		*refs = r;
	return rc;
}

int seg_check(const uint8_t *data, size_t len, struct seg_stats *st, char *msg, size_t msglen)
{
	return seg_parse(data, len, st, NULL, msg, msglen);
}

int seg_receive(struct jnl *j, const char *path, const char *name, int allow_gap,
    struct seg_stats *st, char *msg, size_t msglen)
{
	struct jnl_blockref *refs = NULL;
	struct stat sb;
	uint8_t *map = MAP_FAILED;
	char why[400];
	int fd, rc;

	memset(st, 0, sizeof *st);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &sb) != 0) {
		rc = errno;
		snprintf(msg, msglen, "%s: cannot read: %s", path, strerror(rc));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	if (sb.st_size > 0)
		map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (sb.st_size == 0 || map == MAP_FAILED) {
		rc = sb.st_size == 0 ? MMM_ECORRUPT : errno;
		snprintf(msg, msglen, "%s: %s", path, sb.st_size == 0 ? "empty file, not a segment" : strerror(rc));
		return rc;
	}
	rc = seg_parse(map, (size_t)sb.st_size, st, &refs, why, sizeof why);
	if (rc != 0) {
		snprintf(msg, msglen, "%s: %s", path, why);
		goto out;
	}
	rc = jnl_receive_blocks(j, name, refs, st->blocks, allow_gap, &st->added, &st->skipped, why, sizeof why);
	if (rc != 0)
		snprintf(msg, msglen, "%s: %s", path, why);
out:
	free(refs);
	munmap(map, (size_t)sb.st_size);
	return rc;
}
