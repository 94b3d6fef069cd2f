/* stamp.c — see stamp.h. */
#include <string.h>
#include "err.h"
#include "stamp.h"

int stamp_cmp(const struct stamp *a, const struct stamp *b)
{
	int c;
	if (a->wall != b->wall)
		return a->wall < b->wall ? -1 : 1;
	if ((c = memcmp(a->origin, b->origin, 16)) != 0)
		return c;
	if (a->ts != b->ts)
		return a->ts < b->ts ? -1 : 1;
	return a->k < b->k ? -1 : a->k > b->k;
}

int stamp_is_zero(const struct stamp *s)
{
	static const struct stamp zero;
	return stamp_cmp(s, &zero) == 0;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
	for (int i = n - 1; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

void stamp_encode(const struct stamp *s, uint8_t out[STAMP_LEN])
{
	put_be(out, (uint64_t)s->wall ^ (UINT64_C(1) << 63), 8);
	memcpy(out + 8, s->origin, 16);
	put_be(out + 24, s->ts, 8);
	put_be(out + 32, s->k, 4);
}

void stamp_decode(const uint8_t in[STAMP_LEN], struct stamp *s)
{
	s->wall = (int64_t)(get_be(in, 8) ^ (UINT64_C(1) << 63));
	memcpy(s->origin, in + 8, 16);
	s->ts = get_be(in + 24, 8);
	s->k = (uint32_t)get_be(in + 32, 4);
}

void stamp_append(bson_t *b, const char *key, const struct stamp *s)
{
	bson_t sub;
	BSON_APPEND_DOCUMENT_BEGIN(b, key, &sub);
	BSON_APPEND_BINARY(&sub, "origin", BSON_SUBTYPE_UUID, s->origin, 16);
	BSON_APPEND_TIMESTAMP(&sub, "ts", JNL_TS_SEC(s->ts), JNL_TS_INC(s->ts));
	BSON_APPEND_DATE_TIME(&sub, "wall", s->wall);
	BSON_APPEND_INT32(&sub, "k", (int32_t)s->k);
	bson_append_document_end(b, &sub);
}

int stamp_from_iter(bson_iter_t *it, struct stamp *s)
{
	bson_iter_t sub;
	memset(s, 0, sizeof *s);
	if (!BSON_ITER_HOLDS_DOCUMENT(it) || !bson_iter_recurse(it, &sub))
		return MMM_EBSON;
	while (bson_iter_next(&sub)) {
		const char *k = bson_iter_key(&sub);
		if (strcmp(k, "origin") == 0 && BSON_ITER_HOLDS_BINARY(&sub)) {
			bson_subtype_t st;
			uint32_t len;
			const uint8_t *data;
			bson_iter_binary(&sub, &st, &len, &data);
			if (len != 16)
				return MMM_EBSON;
			memcpy(s->origin, data, 16);
		} else if (strcmp(k, "ts") == 0 && BSON_ITER_HOLDS_TIMESTAMP(&sub)) {
			uint32_t t, i;
			bson_iter_timestamp(&sub, &t, &i);
			s->ts = JNL_TS(t, i);
		} else if (strcmp(k, "wall") == 0 && BSON_ITER_HOLDS_DATE_TIME(&sub)) {
			s->wall = bson_iter_date_time(&sub);
		} else if (strcmp(k, "k") == 0 && BSON_ITER_HOLDS_INT32(&sub)) {
			s->k = (uint32_t)bson_iter_int32(&sub);
		}
	}
	return 0;
}

size_t clog_key(const char *ns, const bson_t *id, const struct stamp *late, uint8_t *buf, size_t cap)
{
	size_t nl = strlen(ns) + 1, len = nl + id->len + STAMP_LEN;
	if (len > cap)
		return 0;
	memcpy(buf, ns, nl);
	memcpy(buf + nl, bson_get_data(id), id->len);
	stamp_encode(late, buf + nl + id->len);
	return len;
}

void clog_value(const struct clog_rec *r, bson_t *out)
{
	bson_init(out);
	BSON_APPEND_UTF8(out, "ns", r->ns);
	BSON_APPEND_DOCUMENT(out, "id", r->id);
	BSON_APPEND_BINARY(out, "master", BSON_SUBTYPE_UUID, r->master, 16);
	stamp_append(out, "late", &r->late);
	stamp_append(out, "newer", &r->newer);
	BSON_APPEND_UTF8(out, "how", r->how);
	if (strcmp(r->how, "degraded") != 0)
		stamp_append(out, "base", &r->base);
	BSON_APPEND_UTF8(out, "result", r->result);
	BSON_APPEND_DATE_TIME(out, "at", r->at);
}
