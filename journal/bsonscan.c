/* bsonscan.c — see bsonscan.h.  Element layout: bsonspec.org/spec.html. */
#include <string.h>
#include "bsonscan.h"
#include "hash.h"

#define MAX_DEPTH 100

/* Size of the value of type T at P (AVAIL bytes there), or -1 when malformed.
 * Checks nested documents recursively. */
static long value_size(uint8_t t, const uint8_t *p, size_t avail, int depth);

static int check_doc(const uint8_t *d, size_t len, int depth)
{
	size_t off = 4;
	if (len < 5 || le32(d) != len || d[len - 1] != 0 || depth > MAX_DEPTH)
		return -1;
	while (off < len - 1) {
		uint8_t t = d[off++];
		const uint8_t *nul = memchr(d + off, 0, len - 1 - off);
		long vs;
		if (nul == NULL)
			return -1;
		off = (size_t)(nul - d) + 1;
		if ((vs = value_size(t, d + off, len - 1 - off, depth)) < 0)
			return -1;
		off += (size_t)vs;
	}
	return off == len - 1 ? 0 : -1;
}

static long str_size(const uint8_t *p, size_t avail)
{
	uint32_t n;
	if (avail < 5 || (n = le32(p)) < 1 || n > avail - 4 || p[4 + n - 1] != 0)
		return -1;
	return 4 + (long)n;
}

static long value_size(uint8_t t, const uint8_t *p, size_t avail, int depth)
{
	long n;
	switch (t) {
	case 0x01: case 0x09: case 0x11: case 0x12:        /* double, date, timestamp, int64 */
		return avail >= 8 ? 8 : -1;
	case 0x10:                                         /* int32 */
		return avail >= 4 ? 4 : -1;
	case 0x13:                                         /* decimal128 */
		return avail >= 16 ? 16 : -1;
	case 0x07:                                         /* ObjectId */
		return avail >= 12 ? 12 : -1;
	case 0x08:                                         /* bool */
		return avail >= 1 && p[0] <= 1 ? 1 : -1;
	case 0x06: case 0x0A: case 0x7F: case 0xFF:        /* undefined, null, maxkey, minkey */
		return 0;
	case 0x02: case 0x0D: case 0x0E:                   /* string, code, symbol */
		return str_size(p, avail);
	case 0x03: case 0x04:                              /* document, array */
		if (avail < 5 || le32(p) > avail || check_doc(p, le32(p), depth + 1) != 0)
			return -1;
		return le32(p);
	case 0x05:                                         /* binary */
		if (avail < 5 || le32(p) > avail - 5)
			return -1;
		return 5 + (long)le32(p);
	case 0x0B: {                                       /* regex: two cstrings */
		const uint8_t *a = memchr(p, 0, avail), *b;
		if (a == NULL || (b = memchr(a + 1, 0, avail - (size_t)(a + 1 - p))) == NULL)
			return -1;
		return (long)(b + 1 - p);
	}
	case 0x0C:                                         /* DBPointer: string + 12 */
		if ((n = str_size(p, avail)) < 0 || (size_t)n + 12 > avail)
			return -1;
		return n + 12;
	case 0x0F: {                                       /* code with scope */
		uint32_t total;
		long s;
		if (avail < 14 || (total = le32(p)) > avail || total < 14)
			return -1;
		if ((s = str_size(p + 4, total - 4)) < 0 || 4 + (size_t)s + 5 > total ||
		    check_doc(p + 4 + s, total - 4 - (size_t)s, depth + 1) != 0)
			return -1;
		return total;
	}
	default:
		return -1;
	}
}

int bsonscan_check(const uint8_t *doc, size_t len)
{
	return check_doc(doc, len, 0);
}

const uint8_t *bsonscan_find(const uint8_t *d, size_t len, const char *name, uint8_t *type)
{
	size_t off = 4, nl = strlen(name);
	if (len < 5)
		return NULL;
	while (off < len - 1) {
		uint8_t t = d[off++];
		const uint8_t *key = d + off, *nul = memchr(key, 0, len - 1 - off);
		long vs;
		if (nul == NULL)
			return NULL;
		off = (size_t)(nul - d) + 1;
		if ((size_t)(nul - key) == nl && memcmp(key, name, nl) == 0) {
			*type = t;
			return d + off;
		}
		/* a shallow size: nested documents were checked when the entry was */
		switch (t) {
		case 0x03: case 0x04:
			vs = off + 4 <= len ? (long)le32(d + off) : -1;
			break;
		default:
			vs = value_size(t, d + off, len - 1 - off, MAX_DEPTH);
		}
		if (vs < 0)
			return NULL;
		off += (size_t)vs;
	}
	return NULL;
}
