/*
 * import.c — import-bson: append a mongodump-style oplog.bson as a source's
 * entries.  The input is read twice with read(2) (never mapped: peak memory
 * stays small on big files): the first pass checks everything, so bad input
 * changes nothing; the second adds the entries trusting that check and
 * commits every ~8 MB (env MMM_IMPORT_COMMIT_BYTES overrides it: tests).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <bson/bson.h>
#include "bsonscan.h"
#include "err.h"
#include "log.h"
#include "mj.h"

#define IMPORT_COMMIT_BYTES (8u << 20)
#define IMPORT_MAX_DOC      (64u << 20)    /* far above BSON's 16 MiB: a bad length */
#define IMPORT_BUF          (4u << 20)

static int progress_shown;   /* a progress line is on the terminal */

/* Clears the progress line so a message starts on a clean line. */
static void progress_clear(void)
{
	if (progress_shown && write(2, "\r\033[K", 4) < 0)
		progress_shown = 0;
	progress_shown = 0;
}

#define imp_warnx(...) do { progress_clear(); log_warnx(__VA_ARGS__); } while (0)
#define imp_error(rc, ...) (progress_clear(), log_error((rc), __VA_ARGS__))

struct input {
	const char *name;          /* for messages */
	int fd;
	uint8_t *buf;
	size_t cap, len, pos;      /* valid bytes buf[pos..len) */
	uint64_t off;              /* file offset of buf[pos] */
	uint64_t size;             /* total bytes (for progress) */
	uint64_t n;                /* entries returned so far */
};

static int in_rewind(struct input *in)
{
	if (lseek(in->fd, 0, SEEK_SET) < 0)
		return imp_error(1, "unable to read '%s': %s", in->name, strerror(errno));
	in->len = in->pos = 0;
	in->off = 0;
	in->n = 0;
	return 0;
}

/* Makes NEED bytes available at buf+pos, or as many as the file has.
 * Returns 0 (check in->len - in->pos) or 1 after logging a read error. */
static int in_fill(struct input *in, size_t need)
{
	if (in->len - in->pos >= need)
		return 0;
	if (in->pos > 0) {
		memmove(in->buf, in->buf + in->pos, in->len - in->pos);
		in->len -= in->pos;
		in->pos = 0;
	}
	if (need > in->cap) {
		size_t cap = in->cap;
		while (cap < need)
			cap *= 2;
		uint8_t *nb = realloc(in->buf, cap);
		if (!nb)
			return imp_error(1, "%s: out of memory for an entry of %zu bytes", in->name, need);
		in->buf = nb;
		in->cap = cap;
	}
	while (in->len < need) {
		ssize_t r = read(in->fd, in->buf + in->len, in->cap - in->len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return imp_error(1, "unable to read '%s': %s", in->name, strerror(errno));
		}
		if (r == 0)
			break;
		in->len += (size_t)r;
	}
	return 0;
}

/* Next document's framing: returns 1 with doc, len and off set, 0 at the end,
 * -1 after logging why the input is bad (or unreadable). */
static int in_next(struct input *in, const uint8_t **doc, uint32_t *len, uint64_t *off)
{
	uint32_t l;
	size_t have;

	if (in_fill(in, 4))
		return -1;
	have = in->len - in->pos;
	if (have == 0)
		return 0;
	if (have < 4) {
		imp_warnx("%s: entry %" PRIu64 " (offset %" PRIu64 ") is truncated: %zu bytes left, "
		    "a BSON document needs at least 5", in->name, in->n + 1, in->off, have);
		return -1;
	}
	memcpy(&l, in->buf + in->pos, 4);
	l = BSON_UINT32_FROM_LE(l);
	if (l < 5 || l > IMPORT_MAX_DOC) {
		imp_warnx("%s: entry %" PRIu64 " (offset %" PRIu64 ") has a bad length %" PRIu32,
		    in->name, in->n + 1, in->off, l);
		return -1;
	}
	if (in_fill(in, l))
		return -1;
	have = in->len - in->pos;
	if (have < l) {
		imp_warnx("%s: entry %" PRIu64 " (offset %" PRIu64 ") is truncated: length %" PRIu32
		    " but only %zu bytes left", in->name, in->n + 1, in->off, l, have);
		return -1;
	}
	*doc = in->buf + in->pos;
	*len = l;
	*off = in->off;
	in->pos += l;
	in->off += l;
	in->n++;
	return 1;
}

/* The ts of a well-formed entry: 0 with *ts set, or -1 when it has none. */
static int entry_ts(const uint8_t *doc, uint32_t len, uint64_t *ts)
{
	uint8_t type = 0;
	const uint8_t *v = bsonscan_find(doc, len, "ts", &type);
	uint64_t le;

	if (!v || type != BSON_TYPE_TIMESTAMP)
		return -1;
	memcpy(&le, v, 8);
	*ts = BSON_UINT64_FROM_LE(le);   /* increment low, seconds high: ts order */
	return 0;
}

/* Checks one document; 0 with *ts set, or -1 after logging.  Structure
 * only (bsonscan.h): a server does not enforce UTF-8 on what it stores. */
static int check_entry(struct input *in, const uint8_t *doc, uint32_t len, uint64_t off,
    uint64_t *ts)
{
	if (bsonscan_check(doc, len)) {
		imp_warnx("%s: entry %" PRIu64 " (offset %" PRIu64 ") is not valid BSON",
		    in->name, in->n, off);
		return -1;
	}
	if (entry_ts(doc, len, ts)) {
		imp_warnx("%s: entry %" PRIu64 " (offset %" PRIu64 ") has no Timestamp 'ts'",
		    in->name, in->n, off);
		return -1;
	}
	return 0;
}

/* Copies stdin to an unlinked temporary file so it can be read twice. */
static int spool_stdin(int *out)
{
	const char *dir = getenv("TMPDIR");
	char path[4096];
	uint8_t *buf;
	int fd;

	if (!dir || !*dir)
		dir = "/tmp";
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(path, sizeof path, "%s/mmm-journal-stdin.XXXXXX", dir);
		fd = mkstemp(path);
		if (fd < 0)
			return imp_error(1, "unable to create a temporary file in '%s': %s", dir,
			    strerror(errno));
		unlink(path);
	}
	buf = malloc(1 << 20);
	if (!buf) {
		close(fd);
		return imp_error(1, "out of memory");
	}
	for (;;) {
		ssize_t r = read(0, buf, 1 << 20);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			imp_warnx("unable to read stdin: %s", strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		for (ssize_t done = 0; done < r;) {
			ssize_t w = write(fd, buf + done, (size_t)(r - done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				imp_warnx("unable to spool stdin to '%s': %s", dir, strerror(errno));
				goto fail;
			}
			done += w;
		}
	}
	free(buf);
	if (lseek(fd, 0, SEEK_SET) < 0) {
		imp_warnx("unable to read back the spooled stdin: %s", strerror(errno));
		close(fd);
		return 1;
	}
	*out = fd;
	return 0;
fail:
	free(buf);
	close(fd);
	return 1;
}

/* ---- progress on a terminal ------------------------------------------- */

struct progress {
	int on;
	struct timespec start, last;
	const char *what;
};

static double elapsed(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void progress_init(struct progress *p, int quiet, const char *what)
{
	p->on = !quiet && isatty(2);
	p->what = what;
	clock_gettime(CLOCK_MONOTONIC, &p->start);
	p->last = p->start;
}

static void progress_show(struct progress *p, const struct input *in)
{
	struct timespec now;
	char line[160];
	int n;

	if (!p->on || (in->n & 1023))
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (elapsed(&p->start, &now) < 1.0 || elapsed(&p->last, &now) < 0.5)
		return;
	p->last = now;
	n = snprintf(line, sizeof line, "\r%s: %s '%s': %" PRIu64 " entries, %.0f%%\033[K", log_prog(),
	    p->what, in->name, in->n, in->size ? 100.0 * (double)in->off / (double)in->size : 0.0);
	if (write(2, line, (size_t)n) < 0)
		p->on = 0;
	else
		progress_shown = 1;
}

static void progress_done(struct progress *p)
{
	(void)p;
	progress_clear();
}

/* ---- the source ---------------------------------------------------------- */

struct target {
	uint8_t uuid[16];
	char id[37];
	const char *name;          /* for a new source; NULL for an existing one */
	const char *uri;
	char label[200];
	uint64_t last_ts;
	uint64_t blocks_before;
	int exists;
};

/* Settles which source ARG means, before anything is written.  0 or exit status. */
static int find_target(struct mj *m, const char *arg, struct target *t)
{
	struct jnl_source s;
	const struct cfg_server *srv = NULL;
	int rc = MMM_ENOTFOUND;

	memset(t, 0, sizeof *t);
	if (m->j) {
		rc = jnl_source_find(m->j, arg, &s);
		if (rc == MMM_ENOTFOUND && m->cfg && (srv = cfg_server_by_name(m->cfg, arg)))
			rc = jnl_source_get(m->j, srv->uuid, &s);
		if (rc && rc != MMM_ENOTFOUND)
			return imp_error(1, "unable to look up source '%s' in journal '%s': %s", arg,
			    m->path, mmm_strerror(rc));
	}
	if (rc == 0) {
		if (s.kind != JNL_LOCAL)
			return imp_error(1, "source '%s' is received from another journal: "
			    "cannot import into it", arg);
		memcpy(t->uuid, s.uuid, 16);
		uuid_format(t->uuid, t->id);
		snprintf(t->label, sizeof t->label, "%s", s.name);
		t->last_ts = s.last_ts;
		t->blocks_before = s.blocks;
		t->exists = 1;
		return 0;
	}
	if (m->cfg) {
		uint8_t u[16];
		if (!srv)
			srv = cfg_server_by_name(m->cfg, arg);
		if (!srv && uuid_parse(arg, u) == 0)
			srv = cfg_server_by_uuid(m->cfg, u);
		if (!srv)
			return imp_error(2, "unknown source '%s': not a server of '%s'", arg, m->o->config);
		memcpy(t->uuid, srv->uuid, 16);
		t->name = srv->name;
		t->uri = srv->uri_redacted;
	} else {
		if (uuid_parse(arg, t->uuid))
			return imp_error(2, "unknown source '%s': give a new source as a UUID "
			    "(and --name NAME), or use -c with a config naming it", arg);
		t->name = m->o->name;
	}
	uuid_format(t->uuid, t->id);
	if (!t->name)
		t->name = t->id;
	snprintf(t->label, sizeof t->label, "%s", t->name);
	return 0;
}

/* ---- the two passes ------------------------------------------------------ */

struct counts {
	uint64_t total, keep, skipped;
};

/* Pass 1: every check.  0, or -1 after logging. */
static int validate(struct input *in, const struct target *t, int skip, struct counts *c,
    struct progress *pr)
{
	const uint8_t *doc;
	uint32_t len;
	uint64_t off, ts, prev = 0, prev_n = 0, high = t->last_ts;
	char a[24], b[24];
	int r;

	memset(c, 0, sizeof *c);
	while ((r = in_next(in, &doc, &len, &off)) > 0) {
		if (check_entry(in, doc, len, off, &ts))
			return -1;
		c->total++;
		if (ts == 0) {
			imp_warnx("%s: entry %" PRIu64 " (offset %" PRIu64 ") has the null ts 0:0",
			    in->name, in->n, off);
			return -1;
		}
		if (ts > high) {
			high = ts;
			c->keep++;
		} else if (skip) {
			c->skipped++;
		} else if (prev_n && ts <= prev) {
			imp_warnx("%s: entry %" PRIu64 " (offset %" PRIu64 ") has ts %s, not after %s "
			    "of entry %" PRIu64, in->name, in->n, off, mj_ts(ts, a, sizeof a),
			    mj_ts(prev, b, sizeof b), prev_n);
			return -1;
		} else {
			imp_warnx("%s: entry %" PRIu64 " (offset %" PRIu64 ") has ts %s, not after %s, "
			    "the last ts the journal holds for source '%s'", in->name, in->n, off,
			    mj_ts(ts, a, sizeof a), mj_ts(t->last_ts, b, sizeof b), t->label);
			return -1;
		}
		prev = ts;
		prev_n = in->n;
		progress_show(pr, in);
	}
	return r < 0 ? -1 : 0;
}

static size_t commit_bytes(void)
{
	const char *e = getenv("MMM_IMPORT_COMMIT_BYTES");
	char *end;
	if (e && *e) {
		unsigned long long v = strtoull(e, &end, 10);
		if (!*end)
			return (size_t)v;
	}
	return IMPORT_COMMIT_BYTES;
}

/* Pass 2: add what pass 1 kept.  0, or 1 after logging. */
static int import(struct mj *m, struct input *in, const struct target *t, struct progress *pr)
{
	struct jnl_writer *w = NULL;
	const uint8_t *doc;
	uint32_t len;
	uint64_t off, ts, high = t->last_ts;
	size_t limit = commit_bytes();
	char a[24];
	int r, rc;

	rc = jnl_writer_new(m->j, t->uuid, &w);
	if (rc)
		return imp_error(1, "unable to write source '%s' of journal '%s': %s", t->label,
		    m->path, mmm_strerror(rc));
	while ((r = in_next(in, &doc, &len, &off)) > 0) {
		/* Framing and BSON were checked in pass 1: only read ts again. */
		if (entry_ts(doc, len, &ts)) {
			imp_warnx("%s: changed while being imported (entry %" PRIu64 ")", in->name, in->n);
			r = -1;
			break;
		}
		if (ts <= high)
			continue;
		high = ts;
		rc = jnl_writer_add_trusted(w, doc, len, ts, NULL);
		if (rc < 0 || rc > 1) {
			imp_warnx("%s: unable to add entry %" PRIu64 " (ts %s) to source '%s': %s",
			    in->name, in->n, mj_ts(ts, a, sizeof a), t->label, mmm_strerror(rc));
			r = -1;
			break;
		}
		if (jnl_writer_sealed_bytes(w) >= limit && (rc = jnl_writer_commit(w))) {
			imp_warnx("unable to write journal '%s': %s", m->path, mmm_strerror(rc));
			r = -1;
			break;
		}
		progress_show(pr, in);
	}
	if (r == 0 && (rc = jnl_writer_flush(w))) {
		imp_warnx("unable to write journal '%s': %s", m->path, mmm_strerror(rc));
		r = -1;
	}
	jnl_writer_free(w);
	return r < 0 ? 1 : 0;
}

int cmd_import(struct mj *m)
{
	const struct mj_opts *o = m->o;
	const char *file = o->args[0];
	struct input in = { .name = file, .fd = -1 };
	struct target t;
	struct counts c;
	struct progress pr = { 0 };
	struct jnl_source after;
	struct stat st;
	int rc, ret = 1;

	if (strcmp(file, "-") == 0) {
		in.name = "stdin";
		if (spool_stdin(&in.fd))
			return 1;
	} else if ((in.fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
		return imp_error(1, "unable to open '%s': %s", file, strerror(errno));
	}
	if (fstat(in.fd, &st) == 0) {
		if (S_ISDIR(st.st_mode)) {
			imp_warnx("unable to read '%s': %s", in.name, strerror(EISDIR));
			goto out;
		}
		in.size = (uint64_t)st.st_size;
	}
	in.cap = IMPORT_BUF;
	if (!(in.buf = malloc(in.cap))) {
		imp_warnx("out of memory");
		goto out;
	}

	/* An existing journal is opened now (to learn the source's last ts);
	 * an absent one is created only once the input proved good. */
	rc = jnl_open(m->path, 0, &m->j);
	if (rc && rc != ENOENT) {
		m->j = NULL;
		imp_warnx("unable to open journal '%s': %s", m->path, mmm_strerror(rc));
		goto out;
	}
	if (rc)
		m->j = NULL;
	if ((ret = find_target(m, o->source, &t)))
		goto out;
	ret = 1;

	progress_init(&pr, o->quiet, "checking");
	if (validate(&in, &t, o->skip_existing, &c, &pr))
		goto out;
	progress_done(&pr);
	if (c.keep == 0) {
		if (!o->quiet)
			log_info("imported 0 entries for source '%s'%s", t.label,
			    c.skipped ? " (all already in the journal)" : "");
		ret = 0;
		goto out;
	}

	if (!m->j && mj_open(m, JNL_CREATE))
		goto out;
	rc = jnl_source_ensure(m->j, t.uuid, t.exists ? NULL : t.name, t.exists ? NULL : t.uri,
	    JNL_LOCAL);
	if (rc) {
		imp_warnx("unable to record source '%s' in journal '%s': %s", t.label, m->path,
		    mmm_strerror(rc));
		goto out;
	}
	if (in_rewind(&in))
		goto out;
	progress_init(&pr, o->quiet, "importing");
	if (import(m, &in, &t, &pr))
		goto out;
	progress_done(&pr);
	if (!o->quiet) {
		uint64_t blocks = 0;
		if (jnl_source_get(m->j, t.uuid, &after) == 0)
			blocks = after.blocks - t.blocks_before;
		if (c.skipped)
			log_info("imported %" PRIu64 " entr%s (%" PRIu64 " block%s) for source '%s', "
			    "skipped %" PRIu64, c.keep, c.keep == 1 ? "y" : "ies", blocks,
			    blocks == 1 ? "" : "s", t.label, c.skipped);
		else
			log_info("imported %" PRIu64 " entr%s (%" PRIu64 " block%s) for source '%s'",
			    c.keep, c.keep == 1 ? "y" : "ies", blocks, blocks == 1 ? "" : "s", t.label);
	}
	ret = 0;
out:
	progress_done(&pr);
	free(in.buf);
	if (in.fd >= 0)
		close(in.fd);
	return ret;
}
