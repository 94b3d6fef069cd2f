/* journal.c — the LMDB journal, see journal.h and FORMAT.md. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <lmdb.h>
#include <zstd.h>
#include "block.h"
#include "bsonscan.h"
#include "config.h"
#include "err.h"
#include "fault.h"
#include "hash.h"
#include "journal.h"
#include "log.h"
#include "util.h"

#define JNL_MAPSIZE_DEFAULT ((size_t)256 << 20)

struct jnl {
	MDB_env *env;
	MDB_dbi meta, sources, blocks, status;
	MDB_dbi kv[JNL_KV_N];
	int kv_open[JNL_KV_N];       /* the table exists (a read-only journal may predate it) */
	char *path;
	uint8_t uuid[16];
	int rdonly;
	atomic_int poisoned;
	/* Every transaction of this process holds it shared; growing the map
	 * holds it exclusively (mdb_env_set_mapsize needs no live transaction). */
	pthread_rwlock_t resize;
};

/* ---- transactions ------------------------------------------------------ */

static void adopt_resize(struct jnl *j)
{
	pthread_rwlock_wrlock(&j->resize);
	mdb_env_set_mapsize(j->env, 0);
	pthread_rwlock_unlock(&j->resize);
}

static int grow_map(struct jnl *j, size_t seen)
{
	MDB_envinfo info;
	int rc = 0;

	pthread_rwlock_wrlock(&j->resize);
	mdb_env_info(j->env, &info);
	if (info.me_mapsize == seen) {
		size_t next = seen * 2;
		rc = mdb_env_set_mapsize(j->env, next);
		if (rc == 0)
			log_debug("journal '%s': map grown to %zu MiB", j->path, next >> 20);
	}
	pthread_rwlock_unlock(&j->resize);
	return rc;
}

static int txn_begin(struct jnl *j, unsigned flags, MDB_txn **t)
{
	for (;;) {
		int rc;
		pthread_rwlock_rdlock(&j->resize);
		rc = mdb_txn_begin(j->env, NULL, flags, t);
		if (rc == 0)
			return 0;
		pthread_rwlock_unlock(&j->resize);
		if (rc != MDB_MAP_RESIZED)
			return rc;
		adopt_resize(j);
	}
}

static void txn_abort(struct jnl *j, MDB_txn *t)
{
	mdb_txn_abort(t);
	pthread_rwlock_unlock(&j->resize);
}

/* Errors that say "no" without anything having gone wrong on disk. */
static int is_refusal(int rc)
{
	return rc == MMM_EGAP || rc == MMM_ECONFLICT || rc == MMM_EOWNER || rc == MMM_EIDENTITY ||
	    rc == MMM_ENOTFOUND || rc == MMM_EORDER || rc == MMM_EUSAGE;
}

typedef int (*txn_fn)(struct jnl *j, MDB_txn *t, void *arg);

/* Runs FN in a write transaction and commits it, growing the map and
 * retrying when it is full.  A failure other than a refusal poisons J. */
static int jnl_write(struct jnl *j, txn_fn fn, void *arg)
{
	for (;;) {
		MDB_envinfo info;
		MDB_txn *t;
		int rc;

		if (j->rdonly)
			return EROFS;
		if (atomic_load(&j->poisoned))
			return MMM_EPOISONED;
		rc = txn_begin(j, 0, &t);
		if (rc != 0)
			goto fail;
		mdb_env_info(j->env, &info);
		rc = fn(j, t, arg);
		if (rc == 0)
			rc = fault_hit("jnl_commit");
		if (rc == 0) {
			rc = mdb_txn_commit(t);
			pthread_rwlock_unlock(&j->resize);
		} else {
			txn_abort(j, t);
		}
		if (rc == MDB_MAP_FULL) {
			if ((rc = grow_map(j, info.me_mapsize)) != 0)
				goto fail;
			continue;
		}
		if (rc == 0) {
			fault_hit("jnl_committed");
			return 0;
		}
		if (is_refusal(rc))
			return rc;
fail:
		atomic_store(&j->poisoned, 1);
		log_warnx("journal '%s': write failed, refusing further writes: %s", j->path, mmm_strerror(rc));
		return rc;
	}
}

/* ---- keys and source records ------------------------------------------- */

static void block_key(uint8_t key[24], const uint8_t src[16], uint64_t ts)
{
	memcpy(key, src, 16);
	put64be(key + 16, ts);
}

static void src_to_bson(const struct jnl_source *s, bson_t *b)
{
	bson_init(b);
	BSON_APPEND_UTF8(b, "name", s->name);
	BSON_APPEND_UTF8(b, "uri", s->uri);
	BSON_APPEND_INT32(b, "kind", (int32_t)s->kind);
	BSON_APPEND_INT64(b, "first_ts", (int64_t)s->first_ts);
	BSON_APPEND_INT64(b, "last_ts", (int64_t)s->last_ts);
	BSON_APPEND_INT64(b, "last_chk", (int64_t)s->last_chk);
	BSON_APPEND_INT64(b, "last_wall", s->last_wall);
	BSON_APPEND_INT64(b, "entries", (int64_t)s->entries);
	BSON_APPEND_INT64(b, "blocks", (int64_t)s->blocks);
	BSON_APPEND_INT64(b, "raw_bytes", (int64_t)s->raw_bytes);
	BSON_APPEND_INT64(b, "stored_bytes", (int64_t)s->stored_bytes);
	BSON_APPEND_UTF8(b, "set_name", s->set_name);
	BSON_APPEND_UTF8(b, "set_id", s->set_id);
}

static int src_from_val(const uint8_t uuid[16], const MDB_val *v, struct jnl_source *s)
{
	bson_t b;
	bson_iter_t it;

	memset(s, 0, sizeof *s);
	memcpy(s->uuid, uuid, 16);
	if (!bson_init_static(&b, v->mv_data, v->mv_size) || !bson_iter_init(&it, &b))
		return MMM_ECORRUPT;
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		if (BSON_ITER_HOLDS_UTF8(&it)) {
			const char *str = bson_iter_utf8(&it, NULL);
			if (strcmp(k, "name") == 0)
				snprintf(s->name, sizeof s->name, "%s", str);
			else if (strcmp(k, "uri") == 0)
				snprintf(s->uri, sizeof s->uri, "%s", str);
			else if (strcmp(k, "set_name") == 0)
				snprintf(s->set_name, sizeof s->set_name, "%s", str);
			else if (strcmp(k, "set_id") == 0)
				snprintf(s->set_id, sizeof s->set_id, "%s", str);
		} else if (BSON_ITER_HOLDS_INT(&it)) {
			int64_t n = bson_iter_as_int64(&it);
			if (strcmp(k, "kind") == 0)
				s->kind = (enum jnl_kind)n;
			else if (strcmp(k, "first_ts") == 0)
				s->first_ts = (uint64_t)n;
			else if (strcmp(k, "last_ts") == 0)
				s->last_ts = (uint64_t)n;
			else if (strcmp(k, "last_chk") == 0)
				s->last_chk = (uint64_t)n;
			else if (strcmp(k, "last_wall") == 0)
				s->last_wall = n;
			else if (strcmp(k, "entries") == 0)
				s->entries = (uint64_t)n;
			else if (strcmp(k, "blocks") == 0)
				s->blocks = (uint64_t)n;
			else if (strcmp(k, "raw_bytes") == 0)
				s->raw_bytes = (uint64_t)n;
			else if (strcmp(k, "stored_bytes") == 0)
				s->stored_bytes = (uint64_t)n;
		}
	}
	return 0;
}

static int src_get_txn(struct jnl *j, MDB_txn *t, const uint8_t uuid[16], struct jnl_source *s)
{
	MDB_val k = { 16, (void *)uuid }, v;
	int rc = mdb_get(t, j->sources, &k, &v);
	if (rc == MDB_NOTFOUND)
		return MMM_ENOTFOUND;
	if (rc != 0)
		return rc;
	return src_from_val(uuid, &v, s);
}

/* Moves the source record's chain head and counters past a block added to it. */
static void src_count_block(struct jnl_source *s, const struct jnl_block_info *b, size_t stored_len)
{
	if (s->blocks == 0)
		s->first_ts = b->first_ts;
	s->last_ts = b->last_ts;
	s->last_chk = b->chk;
	if (b->last_wall)
		s->last_wall = b->last_wall;
	s->entries += b->count;
	s->blocks++;
	s->raw_bytes += b->raw_len;
	s->stored_bytes += stored_len;
}

static int src_put_txn(struct jnl *j, MDB_txn *t, const struct jnl_source *s)
{
	bson_t b;
	MDB_val k = { 16, (void *)s->uuid }, v;
	int rc;

	src_to_bson(s, &b);
	v.mv_size = b.len;
	v.mv_data = (void *)bson_get_data(&b);
	rc = mdb_put(t, j->sources, &k, &v, 0);
	bson_destroy(&b);
	return rc;
}

/* ---- open / close ------------------------------------------------------- */

static int open_dbs(struct jnl *j, MDB_txn *t)
{
	unsigned f = j->rdonly ? 0 : MDB_CREATE;
	int rc;
	if ((rc = mdb_dbi_open(t, "meta", f, &j->meta)) != 0 ||
	    (rc = mdb_dbi_open(t, "sources", f, &j->sources)) != 0 ||
	    (rc = mdb_dbi_open(t, "blocks", f, &j->blocks)) != 0 ||
	    (rc = mdb_dbi_open(t, "status", f, &j->status)) != 0)
		return rc == MDB_NOTFOUND ? MMM_ECORRUPT : rc;
	for (int i = 0; i < JNL_KV_N; i++) {
		static const char *const names[JNL_KV_N] = { "docstamp", "conflicts", "rederive" };
		rc = mdb_dbi_open(t, names[i], f, &j->kv[i]);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
		j->kv_open[i] = rc == 0;
	}
	return 0;
}

static int meta_init(struct jnl *j, MDB_txn *t)
{
	MDB_val k = { 7, "version" }, v;
	uint8_t buf[8];
	int rc = mdb_get(t, j->meta, &k, &v);

	if (rc == 0) {
		if (v.mv_size != 4 || le32(v.mv_data) != JNL_FORMAT_VERSION)
			return MMM_EVERSION;
		k.mv_size = 4;
		k.mv_data = "uuid";
		if ((rc = mdb_get(t, j->meta, &k, &v)) != 0 || v.mv_size != 16)
			return MMM_ECORRUPT;
		memcpy(j->uuid, v.mv_data, 16);
		return 0;
	}
	if (rc != MDB_NOTFOUND)
		return rc;
	if (j->rdonly)
		return MMM_ECORRUPT;
	put32(buf, JNL_FORMAT_VERSION);
	v.mv_size = 4;
	v.mv_data = buf;
	if ((rc = mdb_put(t, j->meta, &k, &v, 0)) != 0)
		return rc;
	if (getrandom(j->uuid, 16, 0) != 16)
		return errno ? errno : EIO;
	j->uuid[6] = (j->uuid[6] & 0x0f) | 0x40;    /* RFC 4122 version 4 */
	j->uuid[8] = (j->uuid[8] & 0x3f) | 0x80;
	k.mv_size = 4;
	k.mv_data = "uuid";
	v.mv_size = 16;
	v.mv_data = j->uuid;
	if ((rc = mdb_put(t, j->meta, &k, &v, 0)) != 0)
		return rc;
	put64(buf, (uint64_t)mmm_wall_ms());
	k.mv_size = 7;
	k.mv_data = "created";
	v.mv_size = 8;
	v.mv_data = buf;
	return mdb_put(t, j->meta, &k, &v, 0);
}

static int open_env(const char *path, int flags, struct jnl **out);

/* Creates the journal's data.mdb in PATH whole or not at all: it is
 * initialised in a scratch directory inside PATH and then linked into
 * place (link(2) never replaces a journal another process created
 * meanwhile), so a crash during creation leaves no half-made journal that
 * readers would take for a corrupt one. */
static int create_whole(const char *path, const char *file)
{
	char tmp[4096], tfile[4200], tlock[4200];
	struct jnl *j;
	int rc;

	snprintf(tmp, sizeof tmp, "%s/.creating-%ld", path, (long)getpid());
	snprintf(tfile, sizeof tfile, "%s/data.mdb", tmp);
	snprintf(tlock, sizeof tlock, "%s/lock.mdb", tmp);
	unlink(tfile);
	unlink(tlock);
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
		return errno;
	if ((rc = open_env(tmp, 0, &j)) == 0) {
		jnl_close(j);
		if (link(tfile, file) != 0 && errno != EEXIST)
			rc = errno;
	}
	unlink(tfile);
	unlink(tlock);
	rmdir(tmp);
	return rc;
}

int jnl_open(const char *path, int flags, struct jnl **out)
{
	char file[4096];
	struct stat st;
	int rc;

	*out = NULL;
	snprintf(file, sizeof file, "%s/data.mdb", path);
	if (stat(file, &st) != 0) {
		if (!(flags & JNL_CREATE) || (flags & JNL_RDONLY))
			return errno;
		if (mkdir(path, 0700) != 0 && errno != EEXIST)
			return errno;
		if ((rc = create_whole(path, file)) != 0)
			return rc;
	}
	return open_env(path, flags, out);
}

static int open_env(const char *path, int flags, struct jnl **out)
{
	struct jnl *j;
	const char *env_map = getenv("MMM_JNL_MAPSIZE");
	size_t mapsize = env_map ? (size_t)strtoull(env_map, NULL, 10) : JNL_MAPSIZE_DEFAULT;
	MDB_txn *t;
	int rc;

	*out = NULL;
	if ((j = calloc(1, sizeof *j)) == NULL)
		return ENOMEM;
	j->path = strdup(path);
	j->rdonly = !!(flags & JNL_RDONLY);
	pthread_rwlock_init(&j->resize, NULL);
	if ((rc = mdb_env_create(&j->env)) != 0)
		goto fail;
	mdb_env_set_maxdbs(j->env, 16);
	mdb_env_set_maxreaders(j->env, 254);
	mdb_env_set_mapsize(j->env, mapsize < (1 << 20) ? (1 << 20) : mapsize);
	rc = mdb_env_open(j->env, path, MDB_NOTLS | (j->rdonly ? MDB_RDONLY : 0), 0600);
	if (rc != 0)
		goto fail;
	if ((rc = txn_begin(j, j->rdonly ? MDB_RDONLY : 0, &t)) != 0)
		goto fail;
	if ((rc = open_dbs(j, t)) != 0 || (rc = meta_init(j, t)) != 0) {
		txn_abort(j, t);
		goto fail;
	}
	rc = mdb_txn_commit(t);
	pthread_rwlock_unlock(&j->resize);
	if (rc != 0)
		goto fail;
	*out = j;
	return 0;
fail:
	jnl_close(j);
	return rc;
}

void jnl_close(struct jnl *j)
{
	if (j == NULL)
		return;
	if (j->env)
		mdb_env_close(j->env);
	pthread_rwlock_destroy(&j->resize);
	free(j->path);
	free(j);
}

const char *jnl_path(const struct jnl *j) { return j->path; }
void jnl_uuid(const struct jnl *j, uint8_t out[16]) { memcpy(out, j->uuid, 16); }
int jnl_poisoned(const struct jnl *j) { return atomic_load(&((struct jnl *)j)->poisoned); }

/* ---- sources ------------------------------------------------------------ */

struct ensure_arg { const uint8_t *uuid; const char *name, *uri; enum jnl_kind kind; };

static int ensure_txn(struct jnl *j, MDB_txn *t, void *arg)
{
	struct ensure_arg *a = arg;
	struct jnl_source s;
	int rc = src_get_txn(j, t, a->uuid, &s);

	if (rc == MMM_ENOTFOUND) {
		memset(&s, 0, sizeof s);
		memcpy(s.uuid, a->uuid, 16);
		s.kind = a->kind;
		if (a->name)
			snprintf(s.name, sizeof s.name, "%s", a->name);
		else
			uuid_format(a->uuid, s.name);
	} else if (rc != 0) {
		return rc;
	} else if (s.kind != a->kind) {
		return MMM_EOWNER;
	} else if ((!a->name || strcmp(a->name, s.name) == 0) && (!a->uri || strcmp(a->uri, s.uri) == 0)) {
		return 0;   /* nothing to change */
	} else if (a->name) {
		snprintf(s.name, sizeof s.name, "%s", a->name);
	}
	if (a->uri)
		snprintf(s.uri, sizeof s.uri, "%s", a->uri);
	return src_put_txn(j, t, &s);
}

int jnl_source_ensure(struct jnl *j, const uint8_t uuid[16], const char *name,
    const char *uri, enum jnl_kind kind)
{
	struct ensure_arg a = { uuid, name, uri, kind };
	struct jnl_source s;
	int rc = jnl_source_get(j, uuid, &s);

	/* Most calls find the source as it should be: no write transaction then. */
	if (rc == 0 && s.kind != kind)
		return MMM_EOWNER;
	if (rc == 0 && (!name || strcmp(name, s.name) == 0) && (!uri || strcmp(uri, s.uri) == 0))
		return 0;
	return jnl_write(j, ensure_txn, &a);
}

int jnl_source_get(struct jnl *j, const uint8_t uuid[16], struct jnl_source *out)
{
	MDB_txn *t;
	int rc = txn_begin(j, MDB_RDONLY, &t);
	if (rc != 0)
		return rc;
	rc = src_get_txn(j, t, uuid, out);
	txn_abort(j, t);
	return rc;
}

static int cmp_source_name(const void *a, const void *b)
{
	return strcmp(((const struct jnl_source *)a)->name, ((const struct jnl_source *)b)->name);
}

int jnl_source_list(struct jnl *j, struct jnl_source **out, size_t *n)
{
	MDB_txn *t;
	MDB_cursor *c;
	MDB_val k, v;
	struct jnl_source *list = NULL;
	size_t cnt = 0, cap = 0;
	int rc = txn_begin(j, MDB_RDONLY, &t);

	*out = NULL;
	*n = 0;
	if (rc != 0)
		return rc;
	if ((rc = mdb_cursor_open(t, j->sources, &c)) != 0) {
		txn_abort(j, t);
		return rc;
	}
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 16)
			continue;
		if (cnt == cap) {
			struct jnl_source *nl = realloc(list, (cap = cap ? cap * 2 : 8) * sizeof *list);
			if (nl == NULL) {
				rc = ENOMEM;
				break;
			}
			list = nl;
		}
		if ((rc = src_from_val(k.mv_data, &v, &list[cnt])) != 0)
			break;
		cnt++;
	}
	mdb_cursor_close(c);
	txn_abort(j, t);
	if (rc != MDB_NOTFOUND) {
		free(list);
		return rc;
	}
	if (cnt)
		qsort(list, cnt, sizeof *list, cmp_source_name);
	*out = list;
	*n = cnt;
	return 0;
}

int jnl_source_find(struct jnl *j, const char *name_or_uuid, struct jnl_source *out)
{
	uint8_t uuid[16];
	struct jnl_source *list;
	size_t n;
	int rc;

	if (uuid_parse(name_or_uuid, uuid) == 0 && jnl_source_get(j, uuid, out) == 0)
		return 0;
	if ((rc = jnl_source_list(j, &list, &n)) != 0)
		return rc;
	rc = MMM_ENOTFOUND;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(list[i].name, name_or_uuid) == 0) {
			*out = list[i];
			rc = 0;
			break;
		}
	}
	free(list);
	return rc;
}

struct identity_arg { const uint8_t *uuid; const char *set_name, *set_id; };

static int identity_txn(struct jnl *j, MDB_txn *t, void *arg)
{
	struct identity_arg *a = arg;
	struct jnl_source s;
	int rc = src_get_txn(j, t, a->uuid, &s);
	if (rc != 0)
		return rc;
	if (s.set_name[0] == '\0' && s.set_id[0] == '\0') {
		snprintf(s.set_name, sizeof s.set_name, "%s", a->set_name ? a->set_name : "");
		snprintf(s.set_id, sizeof s.set_id, "%s", a->set_id ? a->set_id : "");
		return src_put_txn(j, t, &s);
	}
	if (strcmp(s.set_name, a->set_name ? a->set_name : "") != 0)
		return MMM_EIDENTITY;
	if (a->set_id && a->set_id[0] && s.set_id[0] && strcmp(s.set_id, a->set_id) != 0)
		return MMM_EIDENTITY;
	if (a->set_id && a->set_id[0] && !s.set_id[0]) {
		snprintf(s.set_id, sizeof s.set_id, "%s", a->set_id);
		return src_put_txn(j, t, &s);
	}
	return 0;
}

int jnl_source_identity(struct jnl *j, const uint8_t uuid[16], const char *set_name, const char *set_id)
{
	struct identity_arg a = { uuid, set_name, set_id };
	return jnl_write(j, identity_txn, &a);
}

/* ---- writer ------------------------------------------------------------- */

struct sealed {
	uint8_t *data;
	size_t len;
	struct jnl_block_info info;
};

struct jnl_writer {
	struct jnl *j;
	uint8_t source[16];
	int lock_fd;               /* flock'ed writer-<uuid>.lock: one writer per source */
	ZSTD_CCtx *cctx;
	/* the open block */
	uint8_t *raw;
	size_t raw_len, raw_cap, last_off;
	uint32_t count;
	uint64_t first_ts, last_ts;
	int64_t opened;
	struct blk_annot *ann;
	size_t nann, ann_cap;
	/* chain head after the last sealed block, and what the journal holds */
	uint64_t prev_ts, prev_chk, db_ts, db_chk;
	struct sealed *sealed;
	size_t nsealed, sealed_cap, sealed_bytes;
};

/* Takes the source's writer lock (a flock, so it also holds between two
 * writers of one process, and goes with the process however it ends). */
static int writer_lock(struct jnl *j, const uint8_t source[16], int *fd)
{
	char path[4096], u[37], pid[32];
	int len;

	uuid_format(source, u);
	snprintf(path, sizeof path, "%s/writer-%s.lock", j->path, u);
	if ((*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return errno;
	if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
		int rc = errno == EWOULDBLOCK ? EBUSY : errno;
		close(*fd);
		*fd = -1;
		return rc;
	}
	len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
	if (ftruncate(*fd, 0) == 0 && pwrite(*fd, pid, (size_t)len, 0) != len)
		log_debug("cannot write pid into '%s'", path);
	return 0;
}

int jnl_writer_pid(struct jnl *j, const uint8_t source[16])
{
	char path[4096], u[37], buf[32];
	ssize_t n;
	int fd;

	uuid_format(source, u);
	snprintf(path, sizeof path, "%s/writer-%s.lock", j->path, u);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return atoi(buf);
}

int jnl_writer_new(struct jnl *j, const uint8_t source[16], struct jnl_writer **out)
{
	struct jnl_writer *w;
	struct jnl_source s;
	const char *lvl = getenv("MMM_JNL_LEVEL");
	int rc = jnl_source_get(j, source, &s);

	*out = NULL;
	if (rc != 0)
		return rc;
	if (s.kind != JNL_LOCAL)
		return MMM_EOWNER;
	if ((w = calloc(1, sizeof *w)) == NULL)
		return ENOMEM;
	w->j = j;
	memcpy(w->source, source, 16);
	if ((rc = writer_lock(j, source, &w->lock_fd)) != 0) {
		free(w);
		return rc;
	}
	w->cctx = ZSTD_createCCtx();
	if (w->cctx == NULL) {
		close(w->lock_fd);
		free(w);
		return ENOMEM;
	}
	ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, lvl ? atoi(lvl) : 3);
	ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1);
	w->prev_ts = w->db_ts = s.last_ts;
	w->prev_chk = w->db_chk = s.last_chk;
	*out = w;
	return 0;
}

static void drop_sealed(struct jnl_writer *w)
{
	for (size_t i = 0; i < w->nsealed; i++)
		free(w->sealed[i].data);
	w->nsealed = 0;
	w->sealed_bytes = 0;
}

void jnl_writer_free(struct jnl_writer *w)
{
	if (w == NULL)
		return;
	drop_sealed(w);
	if (w->lock_fd >= 0)
		close(w->lock_fd);     /* releases the flock */
	free(w->sealed);
	free(w->raw);
	free(w->ann);
	ZSTD_freeCCtx(w->cctx);
	free(w);
}

int jnl_entry_ts(const uint8_t *bson, size_t len, uint64_t *ts)
{
	uint8_t type;
	const uint8_t *v;

	if (len < 5 || le32(bson) != len || bson[len - 1] != 0)
		return MMM_EBSON;
	v = bsonscan_find(bson, len, "ts", &type);
	if (v == NULL || type != BSON_TYPE_TIMESTAMP)
		return MMM_EBSON;
	/* a BSON Timestamp is increment (low 32 bits) then seconds, little-endian */
	*ts = JNL_TS(le32(v + 4), le32(v));
	return 0;
}

const char *jnl_ts_str(uint64_t ts, char *buf, size_t len)
{
	snprintf(buf, len, "%u:%u", JNL_TS_SEC(ts), JNL_TS_INC(ts));
	return buf;
}

int jnl_writer_add_trusted(struct jnl_writer *w, const uint8_t *bson, size_t len, uint64_t ts,
    const uint8_t origin[16])
{
	if (ts <= w->last_ts || ts <= w->prev_ts)
		return MMM_EORDER;
	if (w->raw_len + len > w->raw_cap) {
		size_t cap = w->raw_cap ? w->raw_cap : JNL_BLOCK_MAX_RAW + 64 * 1024;
		uint8_t *nr;
		while (cap < w->raw_len + len)
			cap *= 2;
		if ((nr = realloc(w->raw, cap)) == NULL)
			return ENOMEM;
		w->raw = nr;
		w->raw_cap = cap;
	}
	if (origin && memcmp(origin, w->source, 16) != 0) {
		if (w->nann == w->ann_cap) {
			size_t cap = w->ann_cap ? w->ann_cap * 2 : 16;
			struct blk_annot *na = realloc(w->ann, cap * sizeof *na);
			if (na == NULL)
				return ENOMEM;
			w->ann = na;
			w->ann_cap = cap;
		}
		w->ann[w->nann].index = w->count;
		memcpy(w->ann[w->nann].origin, origin, 16);
		w->nann++;
	}
	if (w->count == 0) {
		w->first_ts = ts;
		w->opened = mmm_mono_ms();
	}
	memcpy(w->raw + w->raw_len, bson, len);
	w->last_off = w->raw_len;
	w->raw_len += len;
	w->last_ts = ts;
	w->count++;
	if (w->raw_len >= JNL_BLOCK_MAX_RAW || w->count >= JNL_BLOCK_MAX_ENTRIES) {
		int rc = jnl_writer_seal(w);
		return rc ? rc : 1;
	}
	return 0;
}

int jnl_writer_add(struct jnl_writer *w, const uint8_t *bson, size_t len, const uint8_t origin[16])
{
	uint64_t ts;

	if (bsonscan_check(bson, len) != 0)
		return MMM_EBSON;
	if (jnl_entry_ts(bson, len, &ts) != 0)
		return MMM_EBSON;
	return jnl_writer_add_trusted(w, bson, len, ts, origin);
}

int jnl_writer_seal(struct jnl_writer *w)
{
	struct sealed *s;
	int rc;

	if (w->count == 0)
		return 0;
	if (w->nsealed == w->sealed_cap) {
		size_t cap = w->sealed_cap ? w->sealed_cap * 2 : 8;
		struct sealed *ns = realloc(w->sealed, cap * sizeof *ns);
		if (ns == NULL)
			return ENOMEM;
		w->sealed = ns;
		w->sealed_cap = cap;
	}
	s = &w->sealed[w->nsealed];
	memset(&s->info, 0, sizeof s->info);
	memcpy(s->info.source, w->source, 16);
	s->info.prev_ts = w->prev_ts;
	s->info.prev_chk = w->prev_chk;
	s->info.first_ts = w->first_ts;
	s->info.last_ts = w->last_ts;
	s->info.count = w->count;
	s->info.raw_len = (uint32_t)w->raw_len;
	{
		bson_t b;
		bson_iter_t it;
		if (bson_init_static(&b, w->raw + w->last_off, w->raw_len - w->last_off) &&
		    bson_iter_init_find(&it, &b, "wall") && BSON_ITER_HOLDS_DATE_TIME(&it))
			s->info.last_wall = bson_iter_date_time(&it);
	}
	rc = blk_encode(w->cctx, &s->info, w->raw, w->ann, w->nann, &s->data, &s->len);
	if (rc != 0)
		return rc;
	w->nsealed++;
	w->sealed_bytes += w->raw_len;
	w->prev_ts = w->last_ts;
	w->prev_chk = s->info.chk;
	w->raw_len = 0;
	w->count = 0;
	w->nann = 0;
	return 0;
}

static int commit_txn(struct jnl *j, MDB_txn *t, void *arg)
{
	struct jnl_writer *w = arg;
	struct jnl_source s;
	int rc = src_get_txn(j, t, w->source, &s);

	if (rc != 0)
		return rc;
	if (s.last_ts != w->db_ts || s.last_chk != w->db_chk)
		return MMM_ECONFLICT;    /* another writer appended to this source */
	for (size_t i = 0; i < w->nsealed; i++) {
		struct sealed *b = &w->sealed[i];
		uint8_t key[24];
		MDB_val k = { 24, key }, v = { b->len, b->data };
		block_key(key, w->source, b->info.first_ts);
		rc = mdb_put(t, j->blocks, &k, &v, MDB_NOOVERWRITE);
		if (rc == MDB_KEYEXIST)
			return MMM_ECONFLICT;
		if (rc != 0)
			return rc;
		src_count_block(&s, &b->info, b->len);
	}
	return src_put_txn(j, t, &s);
}

int jnl_writer_commit(struct jnl_writer *w)
{
	int rc;
	if (w->nsealed == 0)
		return atomic_load(&w->j->poisoned) ? MMM_EPOISONED : 0;
	rc = jnl_write(w->j, commit_txn, w);
	if (rc == MMM_ECONFLICT) {
		atomic_store(&w->j->poisoned, 1);
		log_warnx("journal '%s': source changed under this writer, refusing further writes", w->j->path);
	}
	if (rc != 0)
		return rc;
	w->db_ts = w->prev_ts;
	w->db_chk = w->prev_chk;
	drop_sealed(w);
	return 0;
}

int jnl_writer_flush(struct jnl_writer *w)
{
	int rc = jnl_writer_seal(w);
	return rc ? rc : jnl_writer_commit(w);
}

size_t jnl_writer_open_entries(const struct jnl_writer *w) { return w->count; }
int64_t jnl_writer_open_age_ms(const struct jnl_writer *w) { return w->count ? mmm_mono_ms() - w->opened : 0; }
size_t jnl_writer_sealed_bytes(const struct jnl_writer *w) { return w->sealed_bytes; }
uint64_t jnl_writer_last_ts(const struct jnl_writer *w) { return w->count ? w->last_ts : w->prev_ts; }

/* ---- reading ------------------------------------------------------------ */

/* Positions C on the block of SOURCE holding SINCE, or the first one after
 * it.  Returns 0 with k/v set, or MDB_NOTFOUND. */
static int seek_block(MDB_cursor *c, const uint8_t source[16], uint64_t since, MDB_val *k, MDB_val *v)
{
	uint8_t key[24];
	int rc;

	block_key(key, source, since);
	k->mv_size = 24;
	k->mv_data = key;
	rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
	if (rc == 0 || rc == MDB_NOTFOUND) {
		MDB_val pk, pv;
		int prc = mdb_cursor_get(c, &pk, &pv, rc == 0 ? MDB_PREV : MDB_LAST);
		if (prc == 0 && pk.mv_size == 24 && memcmp(pk.mv_data, source, 16) == 0 &&
		    pv.mv_size >= BLK_FIXED && le64((const uint8_t *)pv.mv_data + 56) >= since) {
			*k = pk;
			*v = pv;
			return 0;
		}
		if (rc == 0)
			rc = mdb_cursor_get(c, k, v, prc == 0 ? MDB_NEXT : MDB_FIRST);
		else
			return MDB_NOTFOUND;
	}
	if (rc == 0 && (k->mv_size != 24 || memcmp(k->mv_data, source, 16) != 0))
		return MDB_NOTFOUND;
	return rc;
}

struct jnl_reader {
	struct jnl *j;
	uint8_t source[16];
	uint64_t since;
	ZSTD_DCtx *dctx;
	uint8_t *blk, *raw;
	size_t blk_cap, raw_cap, off;
	uint32_t idx;
	struct blk_view view;
	int have;
	int bad;                 /* the last load failed: view.info names the block */
};

int jnl_reader_open(struct jnl *j, const uint8_t source[16], uint64_t since, struct jnl_reader **out)
{
	struct jnl_reader *r = calloc(1, sizeof *r);
	*out = NULL;
	if (r == NULL)
		return ENOMEM;
	r->j = j;
	memcpy(r->source, source, 16);
	r->since = since;
	if ((r->dctx = ZSTD_createDCtx()) == NULL) {
		free(r);
		return ENOMEM;
	}
	*out = r;
	return 0;
}

void jnl_reader_free(struct jnl_reader *r)
{
	if (r == NULL)
		return;
	ZSTD_freeDCtx(r->dctx);
	free(r->blk);
	free(r->raw);
	free(r);
}

static int grow_buf(uint8_t **buf, size_t *cap, size_t need)
{
	uint8_t *nb;
	if (need <= *cap)
		return 0;
	if ((nb = realloc(*buf, need)) == NULL)
		return ENOMEM;
	*buf = nb;
	*cap = need;
	return 0;
}

static int reader_load(struct jnl_reader *r)
{
	MDB_txn *t;
	MDB_cursor *c;
	MDB_val k, v;
	int rc = txn_begin(r->j, MDB_RDONLY, &t);

	if (rc != 0)
		return rc;
	if ((rc = mdb_cursor_open(t, r->j->blocks, &c)) != 0) {
		txn_abort(r->j, t);
		return rc;
	}
	if (!r->have) {
		rc = seek_block(c, r->source, r->since, &k, &v);
	} else {            /* the block after the current one */
		uint8_t key[24];
		block_key(key, r->source, r->view.info.first_ts + 1);
		k.mv_size = 24;
		k.mv_data = key;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
		if (rc == 0 && (k.mv_size != 24 || memcmp(k.mv_data, r->source, 16) != 0))
			rc = MDB_NOTFOUND;
	}
	if (rc == 0 && (rc = grow_buf(&r->blk, &r->blk_cap, v.mv_size)) == 0)
		memcpy(r->blk, v.mv_data, v.mv_size);
	mdb_cursor_close(c);
	txn_abort(r->j, t);
	if (rc == MDB_NOTFOUND)
		return MMM_EEND;
	if (rc != 0)
		return rc;
	if ((rc = blk_parse(r->blk, v.mv_size, &r->view, NULL, 0)) != 0) {
		/* name the bad block (jnl_reader_block) by its key */
		memset(&r->view, 0, sizeof r->view);
		memcpy(r->view.info.source, r->source, 16);
		if (v.mv_size >= BLK_FIXED)
			r->view.info.first_ts = le64(r->blk + 48);
		r->have = 0;
		r->bad = 1;
		return rc;
	}
	if ((rc = grow_buf(&r->raw, &r->raw_cap, r->view.info.raw_len)) != 0)
		return rc;
	if ((rc = blk_unpack(r->dctx, &r->view, r->raw, &r->view.info.last_wall, NULL, 0)) != 0) {
		r->have = 0;
		r->bad = 1;
		return rc;
	}
	r->have = 1;
	r->bad = 0;
	r->off = 0;
	r->idx = 0;
	return 0;
}

int jnl_reader_next(struct jnl_reader *r, struct jnl_entry *e)
{
	if (r->bad)
		return MMM_ECORRUPT;     /* sticky: never skip or repeat around a bad block */
	for (;;) {
		if (r->have && r->off < r->view.info.raw_len) {
			const uint8_t *p = r->raw + r->off;
			uint32_t len = le32(p);
			uint64_t ts;
			jnl_entry_ts(p, len, &ts);    /* checked by blk_unpack */
			r->off += len;
			r->idx++;
			if (ts < r->since)
				continue;
			e->bson = p;
			e->len = len;
			e->ts = ts;
			memcpy(e->source, r->source, 16);
			blk_origin(&r->view, r->idx - 1, e->origin);
			return 0;
		}
		int rc = reader_load(r);
		if (rc != 0)
			return rc;
	}
}

const struct jnl_block_info *jnl_reader_block(const struct jnl_reader *r)
{
	return r->have || r->bad ? &r->view.info : NULL;
}

int jnl_scan_back(struct jnl *j, const uint8_t source[16], int (*fn)(void *arg, const struct jnl_entry *e),
    int (*block_done)(void *arg), void *arg)
{
	MDB_txn *t;
	MDB_cursor *c;
	MDB_val k, v;
	uint8_t key[24], *raw = NULL;
	size_t cap = 0;
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	int rc;

	if (dctx == NULL)
		return ENOMEM;
	if ((rc = txn_begin(j, MDB_RDONLY, &t)) != 0) {
		ZSTD_freeDCtx(dctx);
		return rc;
	}
	if ((rc = mdb_cursor_open(t, j->blocks, &c)) != 0)
		goto out;
	/* the source's newest block: the one before (source, max ts)'s place */
	block_key(key, source, UINT64_MAX);
	k.mv_size = 24;
	k.mv_data = key;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	rc = mdb_cursor_get(c, &k, &v, rc == 0 ? MDB_PREV : MDB_LAST);
	for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_PREV)) {
		struct blk_view view;
		struct jnl_entry e;
		size_t off = 0;
		if (k.mv_size != 24 || memcmp(k.mv_data, source, 16) != 0)
			break;
		if (blk_parse(v.mv_data, v.mv_size, &view, NULL, 0) != 0) {
			rc = MMM_ECORRUPT;
			break;
		}
		if (view.info.raw_len > cap) {
			uint8_t *nr = realloc(raw, view.info.raw_len);
			if (nr == NULL) {
				rc = ENOMEM;
				break;
			}
			raw = nr;
			cap = view.info.raw_len;
		}
		if (blk_unpack(dctx, &view, raw, NULL, NULL, 0) != 0) {
			rc = MMM_ECORRUPT;
			break;
		}
		memcpy(e.source, source, 16);
		for (uint32_t i = 0; i < view.info.count && rc == 0; i++) {
			e.bson = raw + off;
			e.len = le32(raw + off);
			off += e.len;
			if (jnl_entry_ts(e.bson, e.len, &e.ts) != 0) {
				rc = MMM_ECORRUPT;
				break;
			}
			blk_origin(&view, i, e.origin);
			rc = fn(arg, &e);
		}
		if (rc == 0)
			rc = block_done(arg);
		if (rc != 0)
			break;
	}
	mdb_cursor_close(c);
	if (rc == MDB_NOTFOUND || rc == 1)
		rc = 0;
out:
	txn_abort(j, t);
	ZSTD_freeDCtx(dctx);
	free(raw);
	return rc;
}

int jnl_block_walk(struct jnl *j, const uint8_t *source, uint64_t since, uint64_t until,
    jnl_block_fn fn, void *arg)
{
	MDB_txn *t;
	MDB_cursor *c;
	MDB_val k, v;
	int rc = txn_begin(j, MDB_RDONLY, &t);

	if (rc != 0)
		return rc;
	if ((rc = mdb_cursor_open(t, j->blocks, &c)) != 0) {
		txn_abort(j, t);
		return rc;
	}
	if (source)
		rc = seek_block(c, source, since, &k, &v);
	else
		rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		struct blk_view view;
		int prc;
		if (source && (k.mv_size != 24 || memcmp(k.mv_data, source, 16) != 0))
			break;
		prc = blk_parse(v.mv_data, v.mv_size, &view, NULL, 0);
		if (prc == 0 && (k.mv_size != 24 || memcmp(k.mv_data, view.info.source, 16) != 0 ||
		    be64((const uint8_t *)k.mv_data + 16) != view.info.first_ts))
			prc = MMM_ECORRUPT;
		if (prc != 0) {
			memset(&view.info, 0, sizeof view.info);
			if (k.mv_size == 24) {
				memcpy(view.info.source, k.mv_data, 16);
				view.info.first_ts = be64((const uint8_t *)k.mv_data + 16);
			}
			view.info.stored_len = v.mv_size;
		} else {
			if (view.info.last_ts < since)
				continue;
			if (until && view.info.first_ts > until) {
				if (source)
					break;
				continue;
			}
		}
		if ((rc = fn(arg, &view.info, prc, v.mv_data, v.mv_size)) != 0)
			break;
	}
	mdb_cursor_close(c);
	txn_abort(j, t);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- verify ------------------------------------------------------------- */

struct verify_state {
	struct jnl_verify_result *res;
	struct jnl_source *srcs;
	size_t nsrcs;
	ZSTD_DCtx *dctx;
	uint8_t *raw;
	size_t raw_cap;
	uint8_t cur[16];
	int have_cur;
	uint64_t last_ts, last_chk, entries, blocks;
	void (*progress)(void *, uint64_t);
	void *parg;
};

static const struct jnl_source *find_src(struct verify_state *vs, const uint8_t uuid[16])
{
	for (size_t i = 0; i < vs->nsrcs; i++)
		if (memcmp(vs->srcs[i].uuid, uuid, 16) == 0)
			return &vs->srcs[i];
	return NULL;
}

/* Checks what the source record says against the blocks just walked. */
static int verify_source_end(struct verify_state *vs)
{
	const struct jnl_source *s;
	if (!vs->have_cur)
		return 0;
	s = find_src(vs, vs->cur);
	if (s == NULL || s->last_ts != vs->last_ts || s->last_chk != vs->last_chk ||
	    s->entries != vs->entries || s->blocks != vs->blocks) {
		snprintf(vs->res->reason, sizeof vs->res->reason,
		    "source record disagrees with its blocks (last ts, checksum or counts)");
		return MMM_ECORRUPT;
	}
	return 0;
}

static int verify_block(void *arg, const struct jnl_block_info *info, int prc, const uint8_t *data, size_t len)
{
	struct verify_state *vs = arg;
	struct jnl_verify_result *res = vs->res;
	struct blk_view view;
	int rc;

	if (!vs->have_cur || memcmp(vs->cur, info->source, 16) != 0) {
		if ((rc = verify_source_end(vs)) != 0) {
			memcpy(res->bad_source, vs->cur, 16);
			res->bad_ts = vs->last_ts;
			return rc;
		}
		memcpy(vs->cur, info->source, 16);
		vs->have_cur = 1;
		vs->entries = vs->blocks = 0;
		vs->last_ts = 0;
		vs->last_chk = 0;
	}
	memcpy(res->bad_source, info->source, 16);
	res->bad_ts = info->first_ts;
	if (prc != 0 || (rc = blk_parse(data, len, &view, res->reason, sizeof res->reason)) != 0) {
		if (prc != 0 && blk_parse(data, len, &view, res->reason, sizeof res->reason) == 0)
			snprintf(res->reason, sizeof res->reason, "key does not match block header");
		return MMM_ECORRUPT;
	}
	if (vs->blocks > 0 && (view.info.prev_ts != vs->last_ts || view.info.prev_chk != vs->last_chk)) {
		snprintf(res->reason, sizeof res->reason, "chain broken: previous block does not match");
		return MMM_ECORRUPT;
	}
	if ((rc = grow_buf(&vs->raw, &vs->raw_cap, view.info.raw_len)) != 0)
		return rc;
	if (blk_unpack(vs->dctx, &view, vs->raw, NULL, res->reason, sizeof res->reason) != 0)
		return MMM_ECORRUPT;
	vs->last_ts = view.info.last_ts;
	vs->last_chk = view.info.chk;
	vs->entries += view.info.count;
	vs->blocks++;
	res->blocks++;
	res->entries += view.info.count;
	if (vs->progress && res->blocks % 1000 == 0)
		vs->progress(vs->parg, res->blocks);
	return 0;
}

int jnl_verify(struct jnl *j, struct jnl_verify_result *res,
    void (*progress)(void *arg, uint64_t blocks), void *arg)
{
	struct verify_state vs;
	int rc;

	memset(res, 0, sizeof *res);
	memset(&vs, 0, sizeof vs);
	vs.res = res;
	vs.progress = progress;
	vs.parg = arg;
	if ((rc = jnl_source_list(j, &vs.srcs, &vs.nsrcs)) != 0)
		return rc;
	vs.dctx = ZSTD_createDCtx();
	rc = jnl_block_walk(j, NULL, 0, 0, verify_block, &vs);
	if (rc == 0 && (rc = verify_source_end(&vs)) != 0) {
		memcpy(res->bad_source, vs.cur, 16);
		res->bad_ts = vs.last_ts;
	}
	/* A source that claims entries but has no block at all. */
	for (size_t i = 0; rc == 0 && i < vs.nsrcs; i++) {
		if (vs.srcs[i].blocks == 0)
			continue;
		struct jnl_source *s = &vs.srcs[i];
		uint8_t key[24];
		MDB_txn *t;
		MDB_cursor *c;
		MDB_val k, v;
		if ((rc = txn_begin(j, MDB_RDONLY, &t)) != 0)
			break;
		mdb_cursor_open(t, j->blocks, &c);
		block_key(key, s->uuid, 0);
		k.mv_size = 24;
		k.mv_data = key;
		int grc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
		if (grc != 0 || memcmp(k.mv_data, s->uuid, 16) != 0) {
			memcpy(res->bad_source, s->uuid, 16);
			res->bad_ts = s->first_ts;
			snprintf(res->reason, sizeof res->reason, "source record names blocks that are missing");
			rc = MMM_ECORRUPT;
		}
		mdb_cursor_close(c);
		txn_abort(j, t);
	}
	res->rc = rc;
	ZSTD_freeDCtx(vs.dctx);
	free(vs.raw);
	free(vs.srcs);
	return rc;
}

/* ---- receiving ---------------------------------------------------------- */

struct receive_arg {
	const char *name;
	const struct jnl_blockref *blocks;
	size_t n;
	int allow_gap;
	size_t added, skipped;
	char *msg;
	size_t msglen;
};

static int receive_txn(struct jnl *j, MDB_txn *t, void *arg)
{
	struct receive_arg *a = arg;
	const uint8_t *src = a->blocks[0].info.source;
	struct jnl_source s;
	char b1[32], b2[32], uu[37];
	int rc = src_get_txn(j, t, src, &s);

	a->added = a->skipped = 0;
	uuid_format(src, uu);
	if (rc == MMM_ENOTFOUND) {
		memset(&s, 0, sizeof s);
		memcpy(s.uuid, src, 16);
		s.kind = JNL_RECEIVED;
		snprintf(s.name, sizeof s.name, "%s", a->name ? a->name : uu);
	} else if (rc != 0) {
		return rc;
	} else if (s.kind != JNL_RECEIVED) {
		snprintf(a->msg, a->msglen, "source '%s' (%s) is captured by this journal, not received", s.name, uu);
		return MMM_EOWNER;
	} else if (a->name) {
		snprintf(s.name, sizeof s.name, "%s", a->name);
	}
	for (size_t i = 0; i < a->n; i++) {
		const struct jnl_blockref *b = &a->blocks[i];
		uint8_t key[24];
		MDB_val k = { 24, key }, v;
		block_key(key, src, b->info.first_ts);
		rc = mdb_get(t, j->blocks, &k, &v);
		if (rc == 0) {
			if (v.mv_size != b->len || memcmp(v.mv_data, b->data, b->len) != 0) {
				snprintf(a->msg, a->msglen, "block %s of source '%s' differs from the one already held",
				    jnl_ts_str(b->info.first_ts, b1, sizeof b1), s.name);
				return MMM_ECONFLICT;
			}
			a->skipped++;
			continue;
		}
		if (rc != MDB_NOTFOUND)
			return rc;
		if (s.blocks > 0 && b->info.last_ts <= s.last_ts) {
			a->skipped++;            /* older than what is held: pruned here */
			continue;
		}
		if (s.blocks > 0 && (b->info.prev_ts != s.last_ts || b->info.prev_chk != s.last_chk) &&
		    !a->allow_gap) {
			snprintf(a->msg, a->msglen, "gap in source '%s': journal ends at %s, segment continues from %s",
			    s.name, jnl_ts_str(s.last_ts, b1, sizeof b1), jnl_ts_str(b->info.prev_ts, b2, sizeof b2));
			return MMM_EGAP;
		}
		v.mv_size = b->len;
		v.mv_data = (void *)b->data;
		if ((rc = mdb_put(t, j->blocks, &k, &v, MDB_NOOVERWRITE)) != 0)
			return rc;
		src_count_block(&s, &b->info, b->len);
		a->added++;
	}
	if (a->added == 0 && rc != MMM_ENOTFOUND && !a->name)
		return 0;
	return src_put_txn(j, t, &s);
}

int jnl_receive_blocks(struct jnl *j, const char *name, const struct jnl_blockref *blocks, size_t n,
    int allow_gap, size_t *added, size_t *skipped, char *msg, size_t msglen)
{
	struct receive_arg a = { name, blocks, n, allow_gap, 0, 0, msg, msglen };
	int rc;

	if (n == 0)
		return 0;
	msg[0] = '\0';
	rc = jnl_write(j, receive_txn, &a);
	if (rc != 0 && msg[0] == '\0')
		snprintf(msg, msglen, "%s", mmm_strerror(rc));
	if (added)
		*added = rc ? 0 : a.added;
	if (skipped)
		*skipped = rc ? 0 : a.skipped;
	return rc;
}

/* ---- pruning ------------------------------------------------------------ */

struct prune_arg { uint64_t before; size_t dropped; };

static int prune_txn(struct jnl *j, MDB_txn *t, void *arg)
{
	struct prune_arg *a = arg;
	struct jnl_source *list = NULL;
	size_t n = 0;
	MDB_cursor *c;
	MDB_val k, v, sk;
	int rc;

	a->dropped = 0;
	/* Read the source list inside this transaction. */
	if ((rc = mdb_cursor_open(t, j->sources, &c)) != 0)
		return rc;
	for (rc = mdb_cursor_get(c, &sk, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &sk, &v, MDB_NEXT)) {
		struct jnl_source *nl;
		if (sk.mv_size != 16)
			continue;
		if ((nl = realloc(list, (n + 1) * sizeof *list)) == NULL) {
			rc = ENOMEM;
			break;
		}
		list = nl;
		if ((rc = src_from_val(sk.mv_data, &v, &list[n])) != 0)
			break;
		n++;
	}
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		goto out;
	rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct jnl_source *s = &list[i];
		size_t before_cnt = a->dropped;
		if (s->blocks <= 1)
			continue;
		if ((rc = mdb_cursor_open(t, j->blocks, &c)) != 0)
			break;
		rc = seek_block(c, s->uuid, 0, &k, &v);
		while (rc == 0) {
			struct blk_view view;
			if (blk_parse(v.mv_data, v.mv_size, &view, NULL, 0) != 0) {
				rc = MMM_ECORRUPT;
				break;
			}
			if (view.info.last_ts >= a->before || view.info.last_ts >= s->last_ts)
				break;       /* never the newest block */
			if ((rc = mdb_cursor_del(c, 0)) != 0)
				break;
			s->entries -= view.info.count;
			s->blocks--;
			s->raw_bytes -= view.info.raw_len;
			s->stored_bytes -= v.mv_size;
			a->dropped++;
			rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
			if (rc == MDB_NOTFOUND || (rc == 0 && memcmp(k.mv_data, s->uuid, 16) != 0))
				rc = MDB_NOTFOUND;
		}
		if (rc == 0 || rc == MDB_NOTFOUND) {
			rc = 0;
			if (mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT) == 0 && memcmp(k.mv_data, s->uuid, 16) == 0)
				s->first_ts = be64((uint8_t *)k.mv_data + 16);
		}
		mdb_cursor_close(c);
		if (rc == 0 && a->dropped != before_cnt)
			rc = src_put_txn(j, t, s);
	}
out:
	free(list);
	return rc;
}

int jnl_prune(struct jnl *j, uint64_t before, size_t *dropped)
{
	struct prune_arg a = { before, 0 };
	int rc = jnl_write(j, prune_txn, &a);
	if (dropped)
		*dropped = rc ? 0 : a.dropped;
	return rc;
}

/* ---- status ------------------------------------------------------------- */

struct status_arg { const char *key; const bson_t *doc; };

static int status_txn(struct jnl *j, MDB_txn *t, void *arg)
{
	struct status_arg *a = arg;
	MDB_val k = { strlen(a->key), (void *)a->key }, v = { a->doc->len, (void *)bson_get_data(a->doc) };
	return mdb_put(t, j->status, &k, &v, 0);
}

int jnl_status_put(struct jnl *j, const char *key, const bson_t *doc)
{
	struct status_arg a = { key, doc };
	return jnl_write(j, status_txn, &a);
}

int jnl_status_get(struct jnl *j, const char *key, bson_t *out)
{
	MDB_txn *t;
	MDB_val k = { strlen(key), (void *)key }, v;
	int rc = txn_begin(j, MDB_RDONLY, &t);

	if (rc != 0)
		return rc;
	rc = mdb_get(t, j->status, &k, &v);
	if (rc == 0) {
		bson_t tmp;
		if (bson_init_static(&tmp, v.mv_data, v.mv_size))
			bson_copy_to(&tmp, out);
		else
			rc = MMM_ECORRUPT;
	}
	txn_abort(j, t);
	return rc == MDB_NOTFOUND ? MMM_ENOTFOUND : rc;
}

int jnl_status_walk(struct jnl *j, const char *prefix,
    int (*fn)(void *arg, const char *key, const bson_t *doc), void *arg)
{
	MDB_txn *t;
	MDB_cursor *c;
	MDB_val k = { strlen(prefix), (void *)prefix }, v;
	size_t plen = strlen(prefix);
	int rc = txn_begin(j, MDB_RDONLY, &t);

	if (rc != 0)
		return rc;
	if ((rc = mdb_cursor_open(t, j->status, &c)) != 0) {
		txn_abort(j, t);
		return rc;
	}
	for (rc = plen ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(c, &k, &v, MDB_FIRST);
	    rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		char key[512];
		bson_t doc;
		if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
			break;
		snprintf(key, sizeof key, "%.*s", (int)k.mv_size, (const char *)k.mv_data);
		if (!bson_init_static(&doc, v.mv_data, v.mv_size))
			continue;
		if ((rc = fn(arg, key, &doc)) != 0)
			break;
	}
	mdb_cursor_close(c);
	txn_abort(j, t);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- conflict-handling tables ------------------------------------------ */

struct kv_arg { const struct jnl_kvop *ops; size_t n; };

static int kv_txn(struct jnl *j, MDB_txn *t, void *arg)
{
	struct kv_arg *a = arg;
	for (size_t i = 0; i < a->n; i++) {
		const struct jnl_kvop *op = &a->ops[i];
		MDB_val k = { op->klen, (void *)op->key }, v = { op->vlen, (void *)op->val };
		int rc;
		if (op->db >= JNL_KV_N || !j->kv_open[op->db])
			return MMM_EUSAGE;
		rc = op->val ? mdb_put(t, j->kv[op->db], &k, &v, 0) : mdb_del(t, j->kv[op->db], &k, NULL);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
	}
	return 0;
}

int jnl_kv_write(struct jnl *j, const struct jnl_kvop *ops, size_t n)
{
	struct kv_arg a = { ops, n };
	return n ? jnl_write(j, kv_txn, &a) : 0;
}

int jnl_kv_get(struct jnl *j, enum jnl_kv db, const void *key, size_t klen, void *val, size_t cap,
    size_t *vlen)
{
	MDB_txn *t;
	MDB_val k = { klen, (void *)key }, v;
	int rc;

	if (db >= JNL_KV_N || !j->kv_open[db])
		return MMM_ENOTFOUND;
	if ((rc = txn_begin(j, MDB_RDONLY, &t)) != 0)
		return rc;
	rc = mdb_get(t, j->kv[db], &k, &v);
	if (rc == 0) {
		memcpy(val, v.mv_data, v.mv_size < cap ? v.mv_size : cap);
		if (vlen)
			*vlen = v.mv_size;
	}
	txn_abort(j, t);
	return rc == MDB_NOTFOUND ? MMM_ENOTFOUND : rc;
}

int jnl_kv_get_many(struct jnl *j, enum jnl_kv db, const uint8_t *keys, size_t klen, size_t n, uint8_t *vals,
    size_t vlen, uint8_t *found)
{
	MDB_txn *t;
	int rc;

	memset(found, 0, n);
	if (n == 0 || db >= JNL_KV_N || !j->kv_open[db])
		return 0;
	if ((rc = txn_begin(j, MDB_RDONLY, &t)) != 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		MDB_val k = { klen, (void *)(keys + i * klen) }, v;
		if (mdb_get(t, j->kv[db], &k, &v) == 0 && v.mv_size == vlen) {
			memcpy(vals + i * vlen, v.mv_data, vlen);
			found[i] = 1;
		}
	}
	txn_abort(j, t);
	return 0;
}

int jnl_kv_walk(struct jnl *j, enum jnl_kv db, const void *prefix, size_t plen,
    int (*fn)(void *arg, const void *key, size_t klen, const void *val, size_t vlen), void *arg)
{
	MDB_txn *t;
	MDB_cursor *c;
	MDB_val k = { plen, (void *)prefix }, v;
	int rc;

	if (db >= JNL_KV_N || !j->kv_open[db])
		return 0;
	if ((rc = txn_begin(j, MDB_RDONLY, &t)) != 0)
		return rc;
	if ((rc = mdb_cursor_open(t, j->kv[db], &c)) != 0) {
		txn_abort(j, t);
		return rc;
	}
	for (rc = plen ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(c, &k, &v, MDB_FIRST);
	    rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (plen && (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0))
			break;
		if ((rc = fn(arg, k.mv_data, k.mv_size, v.mv_data, v.mv_size)) != 0)
			break;
	}
	mdb_cursor_close(c);
	txn_abort(j, t);
	return rc == MDB_NOTFOUND ? 0 : rc;
}
