/* test_journal.c — the journal library: append, read, seek, verify, ship,
 * receive, prune, map growth, poisoning, status records. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../check.h"
#include "config.h"
#include "err.h"
#include "fault.h"
#include "bsonscan.h"
#include "hash.h"
#include "journal.h"
#include "segment.h"

static const uint8_t SRC[16] = { 0x2c, 0x88, 0xae, 0x84, 0x7c, 0xb9, 0x40, 0xf7, 0x83, 0x5d, 0xc0, 0x5e, 0x98, 0x1f, 0x56, 0x4d };
static const uint8_t ORIGIN[16] = { 0x0d, 0x9c, 0x28, 0x4b, 0xb4, 0x7c, 0x40, 0xb5, 0x93, 0x2c, 0x54, 0x7b, 0x86, 0x85, 0xed, 0xd0 };

static bson_t *entry(uint32_t sec, uint32_t inc, int i)
{
	bson_t *b = bson_new(), o;
	char pad[100];
	memset(pad, 'a' + i % 26, sizeof pad - 1);
	pad[sizeof pad - 1] = 0;
	BSON_APPEND_UTF8(b, "op", "i");
	BSON_APPEND_UTF8(b, "ns", "test.foo");
	BSON_APPEND_DOCUMENT_BEGIN(b, "o", &o);
	BSON_APPEND_INT32(&o, "_id", i);
	BSON_APPEND_UTF8(&o, "pad", pad);
	bson_append_document_end(b, &o);
	BSON_APPEND_TIMESTAMP(b, "ts", sec, inc);
	BSON_APPEND_INT64(b, "t", 1);
	BSON_APPEND_INT64(b, "v", 2);
	BSON_APPEND_DATE_TIME(b, "wall", (int64_t)sec * 1000 + inc);
	return b;
}

/* Appends N entries from index FIRST (ts = 1700000000 + i/10 : i%10+1). */
static int append(struct jnl *j, int first, int n, int commit_each)
{
	struct jnl_writer *w;
	int rc = jnl_writer_new(j, SRC, &w);
	for (int i = first; rc >= 0 && rc != MMM_EORDER && i < first + n; i++) {
		bson_t *b = entry(1700000000 + (uint32_t)i / 10, (uint32_t)i % 10 + 1, i);
		rc = jnl_writer_add(w, bson_get_data(b), b->len, i % 7 == 3 ? ORIGIN : NULL);
		bson_destroy(b);
		if (rc == 1 && commit_each)
			rc = jnl_writer_commit(w);
		if (rc == 1)
			rc = 0;
	}
	if (rc == 0)
		rc = jnl_writer_flush(w);
	jnl_writer_free(w);
	return rc;
}

static int count_from(struct jnl *j, uint64_t since, int *first_i, int check_bytes)
{
	struct jnl_reader *r;
	struct jnl_entry e;
	int n = 0, rc, bad = 0;
	jnl_reader_open(j, SRC, since, &r);
	while ((rc = jnl_reader_next(r, &e)) == 0) {
		bson_t b;
		bson_iter_t it;
		bson_init_static(&b, e.bson, e.len);
		bson_iter_init_find(&it, &b, "o");
		bson_iter_t sub;
		bson_iter_recurse(&it, &sub);
		bson_iter_find(&sub, "_id");
		int i = bson_iter_int32(&sub);
		if (n == 0 && first_i)
			*first_i = i;
		if (check_bytes) {
			bson_t *x = entry(1700000000 + (uint32_t)i / 10, (uint32_t)i % 10 + 1, i);
			if (x->len != e.len || memcmp(bson_get_data(x), e.bson, e.len) != 0)
				bad++;
			if (memcmp(e.origin, i % 7 == 3 ? ORIGIN : SRC, 16) != 0)
				bad++;
			bson_destroy(x);
		}
		n++;
	}
	jnl_reader_free(r);
	if (rc != MMM_EEND || bad)
		return -1;
	return n;
}

static void test_hash(void)
{
	CHECK(mmm_xxh64("", 0, 0) == 0xEF46DB3751D8E999ULL);
	CHECK(mmm_xxh64("abc", 3, 0) == 0x44BC2CF5AD770999ULL);
	/* long input exercises the stripe loop; value fixed by this implementation's first run
	 * only as a regression guard against accidental change of the on-disk checksum */
	char buf[100];
	for (int i = 0; i < 100; i++)
		buf[i] = (char)i;
	CHECK(mmm_xxh64(buf, 100, 0) != mmm_xxh64(buf, 100, 1));
}

static void test_bsonscan(void)
{
	bson_t *b = entry(1700000000, 7, 3), *nested = BCON_NEW("a", "[", BCON_INT32(1), "{", "x", BCON_DOUBLE(1.5), "}", "]",
	    "r", BCON_REGEX("^a", "i"), "n", BCON_NULL, "bin", BCON_BIN(0, (const uint8_t *)"xyz", 3));
	const uint8_t *d = bson_get_data(b);
	uint8_t *copy = malloc(b->len), type;
	uint64_t ts = 0;
	int missed = 0, wrong = 0;

	CHECK_INT(bsonscan_check(d, b->len), 0);
	CHECK_INT(bsonscan_check(bson_get_data(nested), nested->len), 0);
	CHECK(bsonscan_find(d, b->len, "ns", &type) != NULL && type == 0x02);
	CHECK(bsonscan_find(d, b->len, "nope", &type) == NULL);
	CHECK_INT(jnl_entry_ts(d, b->len, &ts), 0);
	CHECK(ts == JNL_TS(1700000000, 7));
	/* every truncation is refused; byte flips either refused or still well-formed per libbson */
	for (uint32_t l = 0; l < b->len; l++)
		if (bsonscan_check(d, l) == 0)
			missed++;
	CHECK_INT(missed, 0);
	for (uint32_t i = 0; i < b->len; i++) {
		bson_t v;
		memcpy(copy, d, b->len);
		copy[i] ^= 0x41;
		int ours = bsonscan_check(copy, b->len) == 0;
		int theirs = bson_init_static(&v, copy, b->len) && bson_validate(&v, BSON_VALIDATE_NONE, NULL);
		if (ours && !theirs)
			wrong++;
	}
	CHECK_INT(wrong, 0);
	free(copy);
	bson_destroy(b);
	bson_destroy(nested);
}

static void test_errors(void)
{
	CHECK_STR(mmm_errname(MMM_EGAP), "MMM_EGAP");
	CHECK_INT(mmm_errcode("EIO"), EIO);
	CHECK_INT(mmm_errcode("MMM_EPOISONED"), MMM_EPOISONED);
	CHECK(strstr(mmm_strerror(ENOENT), "No such") != NULL);
	CHECK(strcmp(mmm_strerror(MMM_EGAP), "would leave a gap") == 0);
}

static void test_basic(const char *dir)
{
	struct jnl *j;
	struct jnl_source s;
	struct stat st;
	char path[512];
	int first = -1;

	CHECK_INT(jnl_open(dir, JNL_RDONLY, &j), ENOENT);
	CHECK_INT(jnl_open(dir, JNL_CREATE, &j), 0);
	CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK_INT(jnl_source_ensure(j, SRC, "server_a", "mongodb://h/", JNL_LOCAL), 0);
	CHECK_INT(jnl_source_ensure(j, SRC, NULL, NULL, JNL_RECEIVED), MMM_EOWNER);
	CHECK_INT(append(j, 0, 2500, 1), 0);
	CHECK_INT(jnl_source_find(j, "server_a", &s), 0);
	CHECK_INT(s.entries, 2500);
	CHECK_INT(s.blocks, 3);
	CHECK(s.first_ts == JNL_TS(1700000000, 1));
	CHECK(s.last_ts == JNL_TS(1700000249, 10));
	CHECK_INT(s.last_wall, 1700000249LL * 1000 + 10);
	CHECK_INT(jnl_source_find(j, "2C88AE84-7CB9-40F7-835D-C05E981F564D", &s), 0);
	CHECK_INT(jnl_source_find(j, "nope", &s), MMM_ENOTFOUND);
	CHECK_INT(count_from(j, 0, &first, 1), 2500);
	CHECK_INT(first, 0);
	/* seek into the middle of the second block, and between entries */
	CHECK_INT(count_from(j, JNL_TS(1700000123, 5), &first, 0), 2500 - 1234);
	CHECK_INT(first, 1234);
	CHECK_INT(count_from(j, JNL_TS(1700000123, 11), &first, 0), 2500 - 1240);
	CHECK_INT(count_from(j, JNL_TS(1800000000, 0), NULL, 0), 0);

	/* order and validity; one writer per source */
	struct jnl_writer *w, *w2;
	CHECK_INT(jnl_writer_new(j, SRC, &w), 0);
	CHECK_INT(jnl_writer_new(j, SRC, &w2), EBUSY);
	CHECK_INT(jnl_writer_pid(j, SRC), getpid());
	bson_t *old = entry(1700000249, 10, 1);
	CHECK_INT(jnl_writer_add(w, bson_get_data(old), old->len, NULL), MMM_EORDER);
	uint8_t junk[16] = { 16, 0, 0, 0, 0x11, 't', 's', 0, 1, 0, 0, 0, 2, 0, 0, 0 };
	CHECK_INT(jnl_writer_add(w, junk, sizeof junk, NULL), MMM_EBSON);
	CHECK_INT(jnl_writer_add(w, bson_get_data(old), old->len - 1, NULL), MMM_EBSON);
	bson_destroy(old);
	jnl_writer_free(w);

	/* a reader follows a growing journal */
	struct jnl_reader *r;
	struct jnl_entry e;
	int n = 0, rc;
	jnl_reader_open(j, SRC, JNL_TS(1700000249, 10), &r);
	while ((rc = jnl_reader_next(r, &e)) == 0)
		n++;
	CHECK_INT(rc, MMM_EEND);
	CHECK_INT(n, 1);
	CHECK_INT(append(j, 2500, 5, 0), 0);
	while ((rc = jnl_reader_next(r, &e)) == 0)
		n++;
	CHECK_INT(n, 6);
	jnl_reader_free(r);

	struct jnl_verify_result vr;
	CHECK_INT(jnl_verify(j, &vr, NULL, NULL), 0);
	CHECK_INT(vr.entries, 2505);
	CHECK_INT(vr.blocks, 4);

	/* status records */
	bson_t *doc = BCON_NEW("state", "running"), got;
	CHECK_INT(jnl_status_put(j, "capture/x", doc), 0);
	CHECK_INT(jnl_status_get(j, "capture/x", &got), 0);
	CHECK(bson_equal(doc, &got));
	bson_destroy(&got);
	CHECK_INT(jnl_status_get(j, "capture/y", &got), MMM_ENOTFOUND);
	bson_destroy(doc);

	/* identity */
	CHECK_INT(jnl_source_identity(j, SRC, "rs_a", "abc"), 0);
	CHECK_INT(jnl_source_identity(j, SRC, "rs_a", "abc"), 0);
	CHECK_INT(jnl_source_identity(j, SRC, "rs_b", "abc"), MMM_EIDENTITY);
	jnl_close(j);

	CHECK_INT(jnl_open(dir, JNL_RDONLY, &j), 0);
	CHECK_INT(count_from(j, 0, NULL, 1), 2505);
	CHECK_INT(jnl_source_ensure(j, ORIGIN, "x", NULL, JNL_LOCAL), EROFS);
	jnl_close(j);
}

static void test_segments(const char *dir, const char *dir2, const char *seg)
{
	struct jnl *a, *b;
	struct seg_stats st;
	struct jnl_source s;
	char msg[512], seg2[700];
	int rc;

	CHECK_INT(jnl_open(dir, 0, &a), 0);
	CHECK_INT(jnl_open(dir2, JNL_CREATE, &b), 0);
	CHECK_INT(seg_ship(a, SRC, 0, JNL_TS(1700000150, 0), seg, &st, msg, sizeof msg), 0);
	CHECK_INT(st.blocks, 2);
	CHECK_INT(st.entries, 2000);
	CHECK_INT(seg_receive(b, seg, "server_a", 0, &st, msg, sizeof msg), 0);
	CHECK_INT(st.added, 2);
	CHECK_INT(seg_receive(b, seg, NULL, 0, &st, msg, sizeof msg), 0);
	CHECK_INT(st.added, 0);
	CHECK_INT(st.skipped, 2);
	/* the last block alone would leave a gap */
	snprintf(seg2, sizeof seg2, "%s.2", seg);
	CHECK_INT(seg_ship(a, SRC, JNL_TS(1700000250, 1), 0, seg2, &st, msg, sizeof msg), 0);
	CHECK_INT(st.blocks, 1);
	rc = seg_receive(b, seg2, NULL, 0, &st, msg, sizeof msg);
	CHECK_INT(rc, MMM_EGAP);
	CHECK_MSG(strstr(msg, "1700000199:10") && strstr(msg, "1700000249:10"), "%s", msg);
	/* the full range mends it; overlap is skipped */
	CHECK_INT(seg_ship(a, SRC, 0, 0, seg2, &st, msg, sizeof msg), 0);
	CHECK_INT(seg_receive(b, seg2, NULL, 0, &st, msg, sizeof msg), 0);
	CHECK_INT(st.added, 2);
	CHECK_INT(jnl_source_get(b, SRC, &s), 0);
	CHECK_INT(s.entries, 2505);
	CHECK_INT(s.kind, JNL_RECEIVED);
	CHECK_STR(s.name, "server_a");
	/* a receiving journal refuses to capture, and vice versa */
	struct jnl_writer *w;
	CHECK_INT(jnl_writer_new(b, SRC, &w), MMM_EOWNER);
	CHECK_INT(seg_receive(a, seg2, NULL, 0, &st, msg, sizeof msg), MMM_EOWNER);
	/* every flipped byte of a small segment is refused */
	{
		int fd = open(seg, O_RDONLY);
		struct stat sb;
		fstat(fd, &sb);
		uint8_t *d = malloc((size_t)sb.st_size);
		CHECK(read(fd, d, (size_t)sb.st_size) == sb.st_size);
		close(fd);
		int missed = 0;
		for (off_t i = 0; i < sb.st_size; i += (i < 200 ? 1 : 97)) {
			d[i] ^= 0x10;
			if (seg_check(d, (size_t)sb.st_size, &st, msg, sizeof msg) == 0)
				missed++;
			d[i] ^= 0x10;
		}
		CHECK_INT(missed, 0);
		missed = 0;
		for (off_t l = 0; l < sb.st_size; l += (l < 200 ? 1 : 101))
			if (seg_check(d, (size_t)l, &st, msg, sizeof msg) == 0)
				missed++;
		CHECK_INT(missed, 0);
		CHECK_INT(seg_check(d, (size_t)sb.st_size, &st, msg, sizeof msg), 0);
		free(d);
	}
	struct jnl_verify_result vr;
	CHECK_INT(jnl_verify(b, &vr, NULL, NULL), 0);
	/* prune keeps the newest block */
	size_t dropped;
	CHECK_INT(jnl_prune(b, JNL_TS(1900000000, 0), &dropped), 0);
	CHECK_INT(dropped, 3);
	CHECK_INT(jnl_source_get(b, SRC, &s), 0);
	CHECK_INT(s.blocks, 1);
	CHECK_INT(s.entries, 5);
	CHECK(s.first_ts == JNL_TS(1700000250, 1));
	CHECK_INT(jnl_verify(b, &vr, NULL, NULL), 0);
	/* receiving old blocks again after pruning adds nothing */
	CHECK_INT(seg_receive(b, seg2, NULL, 0, &st, msg, sizeof msg), 0);
	CHECK_INT(st.added, 0);
	jnl_close(a);
	jnl_close(b);
}

static void test_growth_and_poison(const char *dir)
{
	struct jnl *j;
	struct jnl_source s;
	setenv("MMM_JNL_MAPSIZE", "1048576", 1);
	CHECK_INT(jnl_open(dir, JNL_CREATE, &j), 0);
	CHECK_INT(jnl_source_ensure(j, SRC, "a", NULL, JNL_LOCAL), 0);
	CHECK_INT(append(j, 0, 40000, 1), 0);     /* ~8 MB raw into a 1 MiB map */
	CHECK_INT(jnl_source_get(j, SRC, &s), 0);
	CHECK_INT(s.entries, 40000);
	jnl_close(j);
	unsetenv("MMM_JNL_MAPSIZE");

	setenv("MMM_FAULT", "jnl_commit@2:EIO", 1);
	CHECK_INT(fault_init(), 0);
	CHECK_INT(jnl_open(dir, 0, &j), 0);       /* open's own transaction is not a jnl_commit */
	CHECK_INT(append(j, 40000, 10, 1), 0);    /* hit 1 */
	CHECK_INT(append(j, 40010, 10, 1), EIO);  /* hit 2 fails */
	CHECK(jnl_poisoned(j));
	CHECK_INT(append(j, 40010, 10, 1), MMM_EPOISONED);
	jnl_close(j);
	unsetenv("MMM_FAULT");
	fault_init();
	CHECK_INT(jnl_open(dir, 0, &j), 0);
	CHECK_INT(jnl_source_get(j, SRC, &s), 0);
	CHECK_INT(s.entries, 40010);
	struct jnl_verify_result vr;
	CHECK_INT(jnl_verify(j, &vr, NULL, NULL), 0);
	jnl_close(j);

	setenv("MMM_FAULT", "bogus", 1);
	CHECK_INT(fault_init(), MMM_EUSAGE);
	unsetenv("MMM_FAULT");
	fault_init();
}

int main(void)
{
	char base[] = "/tmp/mmm-test-journal-XXXXXX", d1[600], d2[600], d3[600], seg[600], cmd[700];
	if (mkdtemp(base) == NULL)
		return 1;
	snprintf(d1, sizeof d1, "%s/j1", base);
	snprintf(d2, sizeof d2, "%s/j2", base);
	snprintf(d3, sizeof d3, "%s/j3", base);
	snprintf(seg, sizeof seg, "%s/a.mmmseg", base);
	test_hash();
	test_bsonscan();
	test_errors();
	test_basic(d1);
	test_segments(d1, d2, seg);
	test_growth_and_poison(d3);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
	if (system(cmd) != 0)
		return 1;
	return check_done();
}
