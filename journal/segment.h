/*
 * segment.h — segment files (*.mmmseg): what sites exchange over any link.
 *
 * A segment is a header skippable frame (journal UUID, source UUID, ts range,
 * block count, byte count, header checksum) followed by whole blocks of one
 * source, byte for byte as the journal stores them.  `zstd -dc FILE.mmmseg`
 * therefore prints the entries as a mongodump-style oplog.bson.  Layout:
 * FORMAT.md.
 *
 * Shipping writes a temporary file beside PATH and renames it into place, so
 * a reader never sees half a segment.  Receiving reads and checks the whole
 * file (framing, every checksum, the chain inside the segment, decompression)
 * before touching the journal, then stores the blocks in one transaction
 * (jnl_receive_blocks): all or nothing, idempotent, refusing gaps.
 */
#ifndef MMM_SEGMENT_H
#define MMM_SEGMENT_H
#include <stddef.h>
#include <stdint.h>
#include "journal.h"

struct seg_stats {
	uint8_t journal[16];      /* the journal that wrote the segment */
	uint8_t source[16];
	uint64_t first_ts, last_ts;
	uint64_t blocks, entries, bytes;
	size_t added, skipped;    /* receive only */
};

/* Writes the blocks of SOURCE that hold entries in [SINCE, UNTIL] (0 = no
 * bound) to PATH ("-" = stdout, written directly).  MMM_ENOTFOUND when the
 * source has no such blocks. */
int seg_ship(struct jnl *j, const uint8_t source[16], uint64_t since, uint64_t until,
    const char *path, struct seg_stats *st, char *msg, size_t msglen);

/* Receives the segment file PATH into J.  The source is recorded as
 * RECEIVED under NAME (NULL: keep the stored name, else the UUID text).  On
 * failure nothing changed and MSG holds one line saying why (naming the file,
 * and for a gap the source and both timestamps). */
int seg_receive(struct jnl *j, const char *path, const char *name, int allow_gap,
    struct seg_stats *st, char *msg, size_t msglen);

/* Checks a segment held in memory without a journal (st filled on success). */
int seg_check(const uint8_t *data, size_t len, struct seg_stats *st, char *msg, size_t msglen);

#endif
