/*
 * bsonscan.h — fast structural checks and lookups on raw BSON, for the hot
 * paths (import validates every entry; every read finds every entry's ts).
 * libbson's bson_validate() also checks UTF-8, which a server does not
 * enforce on what it stores, and costs most of an import: these functions
 * check structure only — every length consistent, every element type known,
 * strings and keys terminated where their lengths say, nesting at most 100.
 */
#ifndef MMM_BSONSCAN_H
#define MMM_BSONSCAN_H
#include <stddef.h>
#include <stdint.h>

/* 0 when the LEN bytes at DOC are exactly one well-formed BSON document. */
int bsonscan_check(const uint8_t *doc, size_t len);
/* The value of top-level field NAME of a well-formed document (its type in
 * *type), or NULL. */
const uint8_t *bsonscan_find(const uint8_t *doc, size_t len, const char *name, uint8_t *type);

#endif
