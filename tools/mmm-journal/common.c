/* common.c — journal opening, source lookup and output helpers of mmm-journal. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "err.h"
#include "log.h"
#include "mj.h"
#include "util.h"

int mj_init(struct mj *m, const struct mj_opts *o)
{
	char err[512];
	int rc;

	memset(m, 0, sizeof *m);
	m->o = o;
	if (o->config) {
		err[0] = '\0';
		mmm_mongoc_log_to_debug();
		rc = cfg_load(o->config, &m->cfg, err, sizeof err);
		if (rc) {
			if (err[0])
				log_warnx("%s", err);
			else
				log_warnx("unable to load config '%s': %s", o->config, mmm_strerror(rc));
			return 2;
		}
	}
	if (o->jdir)
		m->path = o->jdir;
	else if (m->cfg && m->cfg->journal_path)
		m->path = m->cfg->journal_path;
	else if (m->cfg) {
		log_warnx("%s: no journal.path in the config", o->config);
		return 2;
	} else {
		log_warnx("no journal given: use -c FILE or -j DIR (see 'mmm-journal --help')");
		return 2;
	}
	return 0;
}

void mj_release(struct mj *m)
{
	if (m->j)
		jnl_close(m->j);
	m->j = NULL;
	if (m->cfg)
		cfg_free(m->cfg);
	m->cfg = NULL;
}

int mj_open(struct mj *m, int flags)
{
	int rc = jnl_open(m->path, flags, &m->j);
	if (rc) {
		m->j = NULL;
		log_warnx("unable to open journal '%s': %s", m->path, mmm_strerror(rc));
		return 1;
	}
	return 0;
}

int mj_source(struct mj *m, const char *arg, struct jnl_source *out)
{
	int rc = jnl_source_find(m->j, arg, out);

	if (rc == MMM_ENOTFOUND && m->cfg) {
		const struct cfg_server *s = cfg_server_by_name(m->cfg, arg);
		if (s)
			rc = jnl_source_get(m->j, s->uuid, out);
	}
	if (rc == MMM_ENOTFOUND) {
		log_warnx("no source '%s' in journal '%s'", arg, m->path);
		return 1;
	}
	if (rc) {
		log_warnx("unable to look up source '%s' in journal '%s': %s", arg, m->path,
		    mmm_strerror(rc));
		return 1;
	}
	return 0;
}

const char *mj_ts(uint64_t ts, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu32 ":%" PRIu32, (uint32_t)(ts >> 32), (uint32_t)ts);
	return buf;
}

const char *mj_source_label(struct mj *m, const uint8_t uuid[16], char *buf, size_t len)
{
	struct jnl_source s;
	char id[37];

	uuid_format(uuid, id);
	if (m->j && jnl_source_get(m->j, uuid, &s) == 0 && s.name[0] && strcmp(s.name, id) != 0)
		snprintf(buf, len, "'%s' (%s)", s.name, id);
	else
		snprintf(buf, len, "'%s'", id);
	return buf;
}

void mj_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* ---- buffered output -------------------------------------------------- */

int mj_out_init(struct mj_out *out, int fd, const char *name, size_t cap)
{
	memset(out, 0, sizeof *out);
	out->fd = fd;
	out->name = name;
	out->cap = cap;
	out->buf = malloc(cap);
	return out->buf ? 0 : ENOMEM;
}

static void out_raw(struct mj_out *out, const uint8_t *p, size_t n)
{
	while (n > 0 && !out->err) {
		ssize_t w = write(out->fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			out->err = errno;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

void mj_out_write(struct mj_out *out, const void *p, size_t n)
{
	if (out->err)
		return;
	if (out->len + n > out->cap) {
		out_raw(out, out->buf, out->len);
		out->len = 0;
		if (n >= out->cap) {
			out_raw(out, p, n);
			return;
		}
	}
	memcpy(out->buf + out->len, p, n);
	out->len += n;
}

int mj_out_flush(struct mj_out *out)
{
	out_raw(out, out->buf, out->len);
	out->len = 0;
	return out->err;
}

void mj_out_release(struct mj_out *out)
{
	free(out->buf);
	out->buf = NULL;
}

/* ---- atomic output files ---------------------------------------------- */

int mj_file_open(struct mj_file *f, const char *path)
{
	memset(f, 0, sizeof *f);
	f->fd = -1;
	if (asprintf(&f->tmp, "%s.tmp.XXXXXX", path) < 0) {
		f->tmp = NULL;
		return ENOMEM;
	}
	f->path = strdup(path);
	if (!f->path) {
		free(f->tmp);
		f->tmp = NULL;
		return ENOMEM;
	}
	f->fd = mkstemp(f->tmp);
	if (f->fd < 0) {
		int e = errno;
		free(f->tmp);
		free(f->path);
		f->tmp = f->path = NULL;
		return e;
	}
	fchmod(f->fd, 0644 & ~umask(umask(0)));
	return 0;
}

int mj_file_commit(struct mj_file *f)
{
	int rc = 0;
	if (fsync(f->fd) < 0)
		rc = errno;
	if (close(f->fd) < 0 && !rc)
		rc = errno;
	f->fd = -1;
	if (!rc && rename(f->tmp, f->path) < 0)
		rc = errno;
	if (rc)
		unlink(f->tmp);
	free(f->tmp);
	free(f->path);
	f->tmp = f->path = NULL;
	return rc;
}

void mj_file_abort(struct mj_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->tmp)
		unlink(f->tmp);
	free(f->tmp);
	free(f->path);
	f->tmp = f->path = NULL;
}
