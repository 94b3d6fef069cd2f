/*
 * config.c — see config.h.
 *
 * The file is read whole, handed to libyaml's document loader, and the tree
 * is walked once in file order, so the first error in the file is the one
 * reported.  Every message carries the 1-based line and column of the node it
 * is about.  Text quoted from the file goes through cfg_quote() (control
 * characters become '?', long text is cut), so a message stays one line.
 * URIs are never quoted; libmongoc's reason for rejecting one is scrubbed of
 * the password before it is shown.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>
#include <mongoc/mongoc.h>
#include "config.h"
#include "log.h"
#include "err.h"

#define CFG_MAX_FILE (16u << 20)     /* a configuration is a few hundred bytes */
#define CFG_QUOTE_MAX 64             /* characters of file text quoted in a message */
#define CFG_WORKERS_DEFAULT 4
#define CFG_WORKERS_MAX 64

/* State of one cfg_load(). */
struct cfg_parse {
	const char *file;            /* the path as given, for messages */
	const char *text;            /* the file's bytes (for reader-error positions) */
	size_t len;
	yaml_document_t *doc;
	struct cfg *cfg;
	const char **names;          /* every server key of the file, in order */
	size_t nnames;
	char *err;
	size_t errlen;
};

/* Copies S into BUF (size CFG_QUOTE_MAX + 4) fit for quoting in a one-line message. */
static const char *cfg_quote(char *buf, const char *s)
{
	size_t i, n = 0;

	for (i = 0; s[i] && n < CFG_QUOTE_MAX; i++)
		buf[n++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	if (s[i]) {
		/* don't cut a UTF-8 sequence in half */
		while (n > 0 && ((unsigned char)buf[n - 1] & 0xc0) == 0x80)
			n--;
		if (n > 0 && ((unsigned char)buf[n - 1] & 0xc0) == 0xc0)
			n--;
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

static void cfg_vseterr(char *err, size_t errlen, const char *prefix, const char *fmt, va_list ap)
{
	int n;

	if (!err || errlen == 0)
		return;
	n = snprintf(err, errlen, "%s", prefix);
	if (n < 0)
		n = 0;
	if ((size_t)n < errlen)
		vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
}

/* Writes "FILE:LINE:COL: message" for a 0-based libyaml MARK; returns MMM_ECONFIG. */
static int cfg_error_at(struct cfg_parse *p, yaml_mark_t mark, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int cfg_error_at(struct cfg_parse *p, yaml_mark_t mark, const char *fmt, ...)
{
	char prefix[512];
	va_list ap;

	snprintf(prefix, sizeof prefix, "%s:%zu:%zu: ", p->file, mark.line + 1, mark.column + 1);
	va_start(ap, fmt);
	cfg_vseterr(p->err, p->errlen, prefix, fmt, ap);
	va_end(ap);
	return MMM_ECONFIG;
}

#define cfg_error(p, node, ...) cfg_error_at((p), (node)->start_mark, __VA_ARGS__)

/* Writes "FILE: message" (no position); returns RC. */
static int cfg_error_file(struct cfg_parse *p, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int cfg_error_file(struct cfg_parse *p, int rc, const char *fmt, ...)
{
	char prefix[512];
	va_list ap;

	snprintf(prefix, sizeof prefix, "%s: ", p->file);
	va_start(ap, fmt);
	cfg_vseterr(p->err, p->errlen, prefix, fmt, ap);
	va_end(ap);
	return rc;
}

static yaml_node_t *cfg_node(struct cfg_parse *p, int id)
{
	return yaml_document_get_node(p->doc, id);
}

static const char *cfg_scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* A scalar that holds a NUL ("\0" in a double-quoted string) cannot be a C string. */
static int cfg_check_scalar(struct cfg_parse *p, const yaml_node_t *n)
{
	if (strlen(cfg_scalar(n)) != n->data.scalar.length)
		return cfg_error(p, n, "unexpected nul character in string");
	return 0;
}

/*
 * Checks the keys of mapping MAP (called WHERE in messages) against the
 * NULL-terminated list KNOWN: every key a string, known, and present once.
 * On success vals[i] / keys[i] are the value / key node of known[i], or NULL.
 */
static int cfg_keys(struct cfg_parse *p, yaml_node_t *map, const char *where,
		    const char *const known[], yaml_node_t *vals[], yaml_node_t *keys[])
{
	char q1[CFG_QUOTE_MAX + 4], q2[CFG_QUOTE_MAX + 4];
	yaml_node_pair_t *pair;
	size_t i;
	int rc;

	for (i = 0; known[i]; i++)
		vals[i] = keys[i] = NULL;
	for (pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
		yaml_node_t *k = cfg_node(p, pair->key), *v = cfg_node(p, pair->value);

		if (k->type != YAML_SCALAR_NODE)
			return cfg_error(p, k, "expected a string key in '%s'", cfg_quote(q1, where));
		if ((rc = cfg_check_scalar(p, k)) != 0)
			return rc;
		for (i = 0; known[i] && strcmp(known[i], cfg_scalar(k)) != 0; i++)
			;
		if (!known[i])
			return cfg_error(p, k, "unknown key '%s' in '%s'",
					 cfg_quote(q1, cfg_scalar(k)), cfg_quote(q2, where));
		if (keys[i])
			return cfg_error(p, k, "duplicate key '%s' in '%s'", known[i], cfg_quote(q2, where));
		keys[i] = k;
		vals[i] = v;
	}
	return 0;
}

/* VAL, the value of KEY in WHERE, must be a non-empty string. */
static int cfg_string(struct cfg_parse *p, yaml_node_t *val, const char *key, const char *where)
{
	char q[CFG_QUOTE_MAX + 4];
	int rc;

	if (val->type != YAML_SCALAR_NODE)
		return cfg_error(p, val, "expected a string for '%s' in '%s'", key, cfg_quote(q, where));
	if ((rc = cfg_check_scalar(p, val)) != 0)
		return rc;
	if (val->data.scalar.length == 0)
		return cfg_error(p, val, "empty value for '%s' in '%s'", key, cfg_quote(q, where));
	return 0;
}

static int cfg_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int uuid_parse(const char *s, uint8_t out[16])
{
	uint8_t b[16];
	size_t i, n = 0;

	if (!s || strlen(s) != 36)
		return MMM_EUSAGE;
	for (i = 0; i < 36; ) {
		int hi, lo;

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return MMM_EUSAGE;
			i++;
			continue;
		}
		hi = cfg_hexval((unsigned char)s[i]);
		lo = cfg_hexval((unsigned char)s[i + 1]);
		if (hi < 0 || lo < 0)
			return MMM_EUSAGE;
		b[n++] = (uint8_t)(hi << 4 | lo);
		i += 2;
	}
	memcpy(out, b, 16);
	return 0;
}

void uuid_format(const uint8_t in[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	size_t i, n = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[n++] = '-';
		out[n++] = hex[in[i] >> 4];
		out[n++] = hex[in[i] & 15];
	}
	out[n] = '\0';
}

/*
 * Finds the password of URI: sets *start and *end (exclusive) and returns 1,
 * or returns 0 when there is none.  Like libmongoc, the user information
 * ends at the last '@' before the first '/' after the scheme.  When that part
 * has no '@' (a password with a raw '/', which libmongoc rejects), the last
 * '@' before the first '?' is taken instead, so such a password is hidden too.
 */
static int cfg_uri_password(const char *uri, size_t *start, size_t *end)
{
	const char *s = strstr(uri, "://"), *slash, *q, *at = NULL, *colon;

	s = s ? s + 3 : uri;
	slash = s + strcspn(s, "/");
	for (q = s; q < slash; q++)
		if (*q == '@')
			at = q;
	if (!at) {
		const char *qm = s + strcspn(s, "?");

		for (q = s; q < qm; q++)
			if (*q == '@')
				at = q;
	}
	if (!at)
		return 0;
	colon = memchr(s, ':', (size_t)(at - s));
	if (!colon)
		return 0;
	*start = (size_t)(colon + 1 - uri);
	*end = (size_t)(at - uri);
	return 1;
}

char *cfg_redact_uri(const char *uri)
{
	size_t start, end, len = strlen(uri);
	char *out;

	if (!cfg_uri_password(uri, &start, &end))
		return strdup(uri);
	out = malloc(len - (end - start) + 4);
	if (!out)
		return NULL;
	memcpy(out, uri, start);
	memcpy(out + start, "***", 3);
	memcpy(out + start + 3, uri + end, len - end + 1);
	return out;
}

/* Appends LEN bytes of S to the string BUF of SIZE bytes holding *N, truncating. */
static void cfg_append(char *buf, size_t size, size_t *n, const char *s, size_t len)
{
	if (len > size - 1 - *n)
		len = size - 1 - *n;
	memcpy(buf + *n, s, len);
	*n += len;
	buf[*n] = '\0';
}

/* Replaces every occurrence of SECRET (LEN bytes) in the string S (size SIZE) by "***". */
static void cfg_scrub(char *s, size_t size, const char *secret, size_t len)
{
	char *copy, *in, *hit;
	size_t n = 0;

	if (len == 0 || !memmem(s, strlen(s), secret, len) || !(copy = strdup(s)))
		return;
	s[0] = '\0';
	for (in = copy; (hit = memmem(in, strlen(in), secret, len)) != NULL; in = hit + len) {
		cfg_append(s, size, &n, in, (size_t)(hit - in));
		cfg_append(s, size, &n, "***", 3);
	}
	cfg_append(s, size, &n, in, strlen(in));
	free(copy);
}

/* Percent-decodes the LEN bytes at S into a new string (NULL on ENOMEM). */
static char *cfg_pct_decode(const char *s, size_t len)
{
	char *out = malloc(len + 1);
	size_t i, n = 0;

	if (!out)
		return NULL;
	for (i = 0; i < len; i++) {
		if (s[i] == '%' && i + 2 < len && cfg_hexval((unsigned char)s[i + 1]) >= 0 &&
		    cfg_hexval((unsigned char)s[i + 2]) >= 0) {
			out[n++] = (char)(cfg_hexval((unsigned char)s[i + 1]) << 4 |
					  cfg_hexval((unsigned char)s[i + 2]));
			i += 2;
		} else {
			out[n++] = s[i];
		}
	}
	out[n] = '\0';
	return out;
}

/*
 * Validates the URI in node VAL for server NAME with libmongoc.  The reason
 * libmongoc gives is shown with its first letter in lowercase and with the
 * password, raw or decoded, replaced by "***".
 */
static int cfg_check_uri(struct cfg_parse *p, yaml_node_t *val, const char *name)
{
	char q[CFG_QUOTE_MAX + 4], reason[sizeof ((bson_error_t *)0)->message], *c;
	const char *uri = cfg_scalar(val);
	mongoc_uri_t *mu;
	bson_error_t e;
	size_t start, end;

	if (strncmp(uri, "mongodb://", 10) != 0 && strncmp(uri, "mongodb+srv://", 14) != 0)
		return cfg_error(p, val, "malformed uri for '%s': expected 'mongodb://' or 'mongodb+srv://'",
				 cfg_quote(q, name));
	memset(&e, 0, sizeof e);
	mu = mongoc_uri_new_with_error(uri, &e);
	if (mu) {
		mongoc_uri_destroy(mu);
		return 0;
	}
	snprintf(reason, sizeof reason, "%s", e.message[0] ? e.message : "rejected by libmongoc");
	if (reason[0] >= 'A' && reason[0] <= 'Z' && !(reason[1] >= 'A' && reason[1] <= 'Z'))
		reason[0] = (char)(reason[0] - 'A' + 'a');
	if (cfg_uri_password(uri, &start, &end)) {
		char *dec = cfg_pct_decode(uri + start, end - start);

		cfg_scrub(reason, sizeof reason, uri + start, end - start);
		if (!dec)
			return ENOMEM;
		cfg_scrub(reason, sizeof reason, dec, strlen(dec));
		free(dec);
	}
	for (c = reason; *c; c++)     /* one line, whatever libmongoc said */
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return cfg_error(p, val, "malformed uri for '%s': %s", cfg_quote(q, name), reason);
}

static int cfg_server_parse(struct cfg_parse *p, yaml_node_t *key, yaml_node_t *val)
{
	static const char *const known[] = { "id", "uri", NULL };
	char q1[CFG_QUOTE_MAX + 4], q2[CFG_QUOTE_MAX + 4], q3[CFG_QUOTE_MAX + 4];
	yaml_node_t *vals[2], *keys[2];
	struct cfg *cfg = p->cfg;
	struct cfg_server *s;
	const char *name = cfg_scalar(key);
	uint8_t uuid[16];
	size_t i;
	int rc;

	if (name[0] == '\0' || strchr(name, '/'))
		return cfg_error(p, key, "invalid server name '%s': must be non-empty without '/'",
				 cfg_quote(q1, name));
	for (i = 0; i < cfg->nservers; i++)
		if (strcmp(cfg->servers[i].name, name) == 0)
			return cfg_error(p, key, "duplicate server '%s'", cfg_quote(q1, name));
	if (val->type != YAML_MAPPING_NODE)
		return cfg_error(p, val, "expected a mapping for '%s'", cfg_quote(q1, name));
	if ((rc = cfg_keys(p, val, name, known, vals, keys)) != 0)
		return rc;
	if (!vals[0])
		return cfg_error(p, key, "missing key 'id' in '%s'", cfg_quote(q1, name));
	if ((rc = cfg_string(p, vals[0], "id", name)) != 0)
		return rc;
	if (uuid_parse(cfg_scalar(vals[0]), uuid) != 0)
		return cfg_error(p, vals[0], "malformed uuid '%s' for '%s'",
				 cfg_quote(q1, cfg_scalar(vals[0])), cfg_quote(q2, name));
	for (i = 0; i < cfg->nservers; i++)
		if (memcmp(cfg->servers[i].uuid, uuid, 16) == 0)
			return cfg_error(p, vals[0], "duplicate id '%s' for '%s', already used by '%s'",
					 cfg->servers[i].id, cfg_quote(q2, name),
					 cfg_quote(q3, cfg->servers[i].name));
	if (!vals[1])
		return cfg_error(p, key, "missing key 'uri' in '%s'", cfg_quote(q1, name));
	if ((rc = cfg_string(p, vals[1], "uri", name)) != 0)
		return rc;
	if ((rc = cfg_check_uri(p, vals[1], name)) != 0)
		return rc;

	s = &cfg->servers[cfg->nservers];
	memset(s, 0, sizeof *s);
	s->line = (int)key->start_mark.line + 1;
	memcpy(s->uuid, uuid, 16);
	uuid_format(uuid, s->id);
	s->name = strdup(name);
	s->uri = strdup(cfg_scalar(vals[1]));
	s->uri_redacted = cfg_redact_uri(s->uri);
	cfg->nservers++;              /* counted now so cfg_free() releases it */
	if (!s->name || !s->uri || !s->uri_redacted)
		return ENOMEM;
	return 0;
}

/* Leading "./" components of the LEN bytes at *S dropped ("." alone becomes ""). */
static void cfg_skip_dot(const char **s, size_t *len)
{
	while (*len >= 2 && (*s)[0] == '.' && (*s)[1] == '/') {
		*s += 2;
		*len -= 2;
		while (*len && (*s)[0] == '/') {
			(*s)++;
			(*len)--;
		}
	}
	if (*len == 1 && (*s)[0] == '.')
		*len = 0;
}

/*
 * REL taken relative to the directory of the configuration file CFGPATH and
 * made absolute through the working directory (left relative to it when
 * getcwd() fails).  Only leading "./" components are dropped: ".." and
 * symbolic links are kept as written.  NULL on ENOMEM.
 */
static char *cfg_resolve(const char *cfgpath, const char *rel)
{
	const char *slash = strrchr(cfgpath, '/'), *dir = cfgpath;
	size_t dirlen = 0, rellen = strlen(rel);
	char *cwd = NULL, *out = NULL;
	int dirroot;

	if (rel[0] == '/')
		return strdup(rel);
	cfg_skip_dot(&rel, &rellen);
	if (slash)
		dirlen = slash == cfgpath ? 1 : (size_t)(slash - cfgpath);
	dirroot = dirlen == 1 && dir[0] == '/';
	if (!dirroot)
		cfg_skip_dot(&dir, &dirlen);
	if (cfgpath[0] != '/')
		cwd = getcwd(NULL, 0);
	if (asprintf(&out, "%s%s%.*s%s%.*s",
		     cwd ? cwd : "",
		     cwd && strcmp(cwd, "/") != 0 && (dirlen || rellen) ? "/" : "",
		     (int)dirlen, dir,
		     dirlen && rellen && !dirroot ? "/" : "",
		     (int)rellen, rel) < 0)
		out = NULL;
	if (out && out[0] == '\0') {
		free(out);
		out = strdup(".");
	}
	free(cwd);
	return out;
}

static int cfg_journal_parse(struct cfg_parse *p, yaml_node_t *key, yaml_node_t *val)
{
	static const char *const known[] = { "path", NULL };
	yaml_node_t *vals[1], *keys[1];
	int rc;

	if (val->type != YAML_MAPPING_NODE)
		return cfg_error(p, val, "expected a mapping for 'journal'");
	if ((rc = cfg_keys(p, val, "journal", known, vals, keys)) != 0)
		return rc;
	if (!vals[0])
		return cfg_error(p, key, "missing key 'path' in 'journal'");
	if ((rc = cfg_string(p, vals[0], "path", "journal")) != 0)
		return rc;
	p->cfg->journal_path = cfg_resolve(p->cfg->path, cfg_scalar(vals[0]));
	return p->cfg->journal_path ? 0 : ENOMEM;
}

/* Reads the list of server names VAL in section WHERE into *out / *n. */
static int cfg_names_parse(struct cfg_parse *p, yaml_node_t *val, const char *where,
			   size_t **out, size_t *n)
{
	char q[CFG_QUOTE_MAX + 4];
	yaml_node_item_t *item;
	size_t i, j, count;

	if (val->type != YAML_SEQUENCE_NODE)
		return cfg_error(p, val, "expected a list for 'servers' in '%s'", where);
	count = (size_t)(val->data.sequence.items.top - val->data.sequence.items.start);
	*out = calloc(count ? count : 1, sizeof **out);
	if (!*out)
		return ENOMEM;
	*n = 0;
	for (item = val->data.sequence.items.start; item < val->data.sequence.items.top; item++) {
		yaml_node_t *v = cfg_node(p, *item);
		int rc;

		if (v->type != YAML_SCALAR_NODE)
			return cfg_error(p, v, "expected a server name in '%s'", where);
		if ((rc = cfg_check_scalar(p, v)) != 0)
			return rc;
		for (i = 0; i < p->nnames && strcmp(p->names[i], cfg_scalar(v)) != 0; i++)
			;
		if (i == p->nnames)
			return cfg_error(p, v, "unknown server '%s' in '%s'", cfg_quote(q, cfg_scalar(v)), where);
		for (j = 0; j < *n; j++)
			if ((*out)[j] == i)
				return cfg_error(p, v, "duplicate server '%s' in '%s'",
						 cfg_quote(q, cfg_scalar(v)), where);
		(*out)[(*n)++] = i;
	}
	return 0;
}

static int cfg_capture_parse(struct cfg_parse *p, yaml_node_t *val)
{
	static const char *const known[] = { "servers", NULL };
	yaml_node_t *vals[1], *keys[1];
	int rc;

	if (val->type != YAML_MAPPING_NODE)
		return cfg_error(p, val, "expected a mapping for 'capture'");
	if ((rc = cfg_keys(p, val, "capture", known, vals, keys)) != 0)
		return rc;
	if (vals[0])
		return cfg_names_parse(p, vals[0], "capture", &p->cfg->capture, &p->cfg->ncapture);
	return 0;
}

static int cfg_apply_parse(struct cfg_parse *p, yaml_node_t *val)
{
	static const char *const known[] = { "servers", "workers", "conflicts", NULL };
	char q[CFG_QUOTE_MAX + 4];
	yaml_node_t *vals[3], *keys[3];
	int rc;

	if (val->type != YAML_MAPPING_NODE)
		return cfg_error(p, val, "expected a mapping for 'apply'");
	if ((rc = cfg_keys(p, val, "apply", known, vals, keys)) != 0)
		return rc;
	if (vals[0] && (rc = cfg_names_parse(p, vals[0], "apply", &p->cfg->apply, &p->cfg->napply)) != 0)
		return rc;
	if (vals[1]) {
		const char *s;
		char *end;
		long w;

		if (vals[1]->type != YAML_SCALAR_NODE)
			return cfg_error(p, vals[1], "'workers' in 'apply' must be an integer from 1 to %d",
					 CFG_WORKERS_MAX);
		s = cfg_scalar(vals[1]);
		errno = 0;
		w = strtol(s, &end, 10);
		if (s[0] < '0' || s[0] > '9' || *end || errno || w < 1 || w > CFG_WORKERS_MAX)
			return cfg_error(p, vals[1], "'workers' in 'apply' must be an integer from 1 to %d, not '%s'",
					 CFG_WORKERS_MAX, cfg_quote(q, s));
		p->cfg->apply_workers = (int)w;
	}
	if (vals[2]) {
		const char *s = vals[2]->type == YAML_SCALAR_NODE ? cfg_scalar(vals[2]) : "";
		if (strcmp(s, "true") == 0 || strcmp(s, "on") == 0)
			p->cfg->apply_conflicts = 1;
		else if (strcmp(s, "false") == 0 || strcmp(s, "off") == 0)
			p->cfg->apply_conflicts = 0;
		else
			return cfg_error(p, vals[2], "'conflicts' in 'apply' must be true or false, not '%s'",
					 cfg_quote(q, s));
	}
	return 0;
}

static int cfg_is_reserved(const char *key)
{
	return strcmp(key, "journal") == 0 || strcmp(key, "capture") == 0 || strcmp(key, "apply") == 0;
}

/* Every index 0..n-1: the default for capture and apply. */
static int cfg_all(size_t **out, size_t *nout, size_t n)
{
	size_t i;

	*out = calloc(n ? n : 1, sizeof **out);
	if (!*out)
		return ENOMEM;
	for (i = 0; i < n; i++)
		(*out)[i] = i;
	*nout = n;
	return 0;
}

static int cfg_root_parse(struct cfg_parse *p, yaml_node_t *root)
{
	yaml_node_pair_t *pair;
	yaml_node_t *seen[3] = { NULL, NULL, NULL };
	size_t npairs;
	int rc;

	if (root->type != YAML_MAPPING_NODE)
		return cfg_error(p, root, "expected a mapping at the top level");
	npairs = (size_t)(root->data.mapping.pairs.top - root->data.mapping.pairs.start);
	p->names = calloc(npairs ? npairs : 1, sizeof *p->names);
	p->cfg->servers = calloc(npairs ? npairs : 1, sizeof *p->cfg->servers);
	if (!p->names || !p->cfg->servers)
		return ENOMEM;

	/* Server names first: capture and apply may stand before the servers. */
	for (pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
		yaml_node_t *k = cfg_node(p, pair->key);

		if (k->type == YAML_SCALAR_NODE && !cfg_is_reserved(cfg_scalar(k)))
			p->names[p->nnames++] = cfg_scalar(k);
	}
	for (pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
		yaml_node_t *k = cfg_node(p, pair->key), *v = cfg_node(p, pair->value);
		const char *key;
		int which;

		if (k->type != YAML_SCALAR_NODE)
			return cfg_error(p, k, "expected a string key at the top level");
		if ((rc = cfg_check_scalar(p, k)) != 0)
			return rc;
		key = cfg_scalar(k);
		if (!cfg_is_reserved(key)) {
			if ((rc = cfg_server_parse(p, k, v)) != 0)
				return rc;
			continue;
		}
		which = key[0] == 'j' ? 0 : key[0] == 'c' ? 1 : 2;
		if (seen[which])
			return cfg_error(p, k, "duplicate section '%s'", key);
		seen[which] = k;
		rc = which == 0 ? cfg_journal_parse(p, k, v) : which == 1 ? cfg_capture_parse(p, v)
			: cfg_apply_parse(p, v);
		if (rc != 0)
			return rc;
	}
	if (p->cfg->nservers == 0)
		return cfg_error(p, root, "no servers defined");
	if (!p->cfg->capture && (rc = cfg_all(&p->cfg->capture, &p->cfg->ncapture, p->cfg->nservers)) != 0)
		return rc;
	if (!p->cfg->apply && (rc = cfg_all(&p->cfg->apply, &p->cfg->napply, p->cfg->nservers)) != 0)
		return rc;
	return 0;
}

/* Reads PATH whole into *out (NUL-terminated) and *len. */
static int cfg_read_file(const char *path, char **out, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = NULL, *nbuf;
	ssize_t r;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	for (;;) {
		if (!buf || n + 1 >= cap) {
			if (buf)
				cap *= 2;
			if (cap > CFG_MAX_FILE + 2) {
				rc = EFBIG;
				goto out;
			}
			if (!(nbuf = realloc(buf, cap))) {
				rc = ENOMEM;
				goto out;
			}
			buf = nbuf;
		}
		r = read(fd, buf + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = errno;
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return rc;
}

/* Reports libyaml's error for PARSER. */
static int cfg_yaml_error(struct cfg_parse *p, const yaml_parser_t *parser)
{
	const char *problem = parser->problem ? parser->problem : "unknown error";
	yaml_mark_t mark = parser->problem_mark;

	if (parser->error == YAML_MEMORY_ERROR)
		return cfg_error_file(p, ENOMEM, "%s", strerror(ENOMEM));
	if (parser->error == YAML_READER_ERROR) {
		/* only a byte offset is known: count lines and characters up to it */
		size_t i, off = parser->problem_offset < p->len ? parser->problem_offset : p->len;

		memset(&mark, 0, sizeof mark);
		for (i = 0; i < off; i++) {
			if (p->text[i] == '\n') {
				mark.line++;
				mark.column = 0;
			} else if (((unsigned char)p->text[i] & 0xc0) != 0x80) {
				mark.column++;
			}
		}
	}
	if (parser->context)
		return cfg_error_at(p, mark, "invalid yaml: %s (%s at %zu:%zu)", problem, parser->context,
				    parser->context_mark.line + 1, parser->context_mark.column + 1);
	return cfg_error_at(p, mark, "invalid yaml: %s", problem);
}

int cfg_load(const char *path, struct cfg **out, char *err, size_t errlen)
{
	struct cfg_parse p;
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	int have_parser = 0, have_doc = 0, have_extra = 0, rc;
	yaml_node_t *root, *extra_root;
	char *text = NULL;
	size_t len = 0;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	memset(&p, 0, sizeof p);
	p.file = path;
	p.err = err;
	p.errlen = errlen;
	p.doc = &doc;

	if ((rc = cfg_read_file(path, &text, &len)) != 0) {
		if (rc == EFBIG)
			rc = cfg_error_file(&p, MMM_ECONFIG, "too large for a configuration file");
		else
			rc = cfg_error_file(&p, rc, "cannot read: %s", strerror(rc));
		goto out;
	}
	p.text = text;
	p.len = len;
	if (!(p.cfg = calloc(1, sizeof *p.cfg)) || !(p.cfg->path = strdup(path))) {
		rc = cfg_error_file(&p, ENOMEM, "%s", strerror(ENOMEM));
		goto out;
	}
	p.cfg->apply_workers = CFG_WORKERS_DEFAULT;
	p.cfg->apply_conflicts = 1;

	if (!yaml_parser_initialize(&parser)) {
		rc = cfg_error_file(&p, ENOMEM, "%s", strerror(ENOMEM));
		goto out;
	}
	have_parser = 1;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		rc = cfg_yaml_error(&p, &parser);
		goto out;
	}
	have_doc = 1;
	root = yaml_document_get_root_node(&doc);
	if (!root) {
		yaml_mark_t start = { 0, 0, 0 };

		rc = cfg_error_at(&p, start, "empty configuration");
		goto out;
	}
	/* A second document would be ignored silently: refuse it. */
	if (!yaml_parser_load(&parser, &extra)) {
		rc = cfg_yaml_error(&p, &parser);
		goto out;
	}
	have_extra = 1;
	if ((extra_root = yaml_document_get_root_node(&extra)) != NULL) {
		rc = cfg_error(&p, extra_root, "more than one yaml document");
		goto out;
	}
	rc = cfg_root_parse(&p, root);
	if (rc == ENOMEM)
		rc = cfg_error_file(&p, ENOMEM, "%s", strerror(ENOMEM));
	if (rc == 0) {
		*out = p.cfg;
		p.cfg = NULL;
	}
out:
	if (have_extra)
		yaml_document_delete(&extra);
	if (have_doc)
		yaml_document_delete(&doc);
	if (have_parser)
		yaml_parser_delete(&parser);
	cfg_free(p.cfg);
	free(p.names);
	free(text);
	return rc;
}

void cfg_free(struct cfg *cfg)
{
	size_t i;

	if (!cfg)
		return;
	for (i = 0; i < cfg->nservers; i++) {
		free(cfg->servers[i].name);
		free(cfg->servers[i].uri);
		free(cfg->servers[i].uri_redacted);
	}
	free(cfg->servers);
	free(cfg->path);
	free(cfg->journal_path);
	free(cfg->capture);
	free(cfg->apply);
	free(cfg);
}

const struct cfg_server *cfg_server_by_name(const struct cfg *cfg, const char *name)
{
	size_t i;

	for (i = 0; cfg && name && i < cfg->nservers; i++)
		if (strcmp(cfg->servers[i].name, name) == 0)
			return &cfg->servers[i];
	return NULL;
}

const struct cfg_server *cfg_server_by_uuid(const struct cfg *cfg, const uint8_t uuid[16])
{
	size_t i;

	for (i = 0; cfg && uuid && i < cfg->nservers; i++)
		if (memcmp(cfg->servers[i].uuid, uuid, 16) == 0)
			return &cfg->servers[i];
	return NULL;
}

char *cfg_journal(const struct cfg *cfg)
{
	const char *slash;
	char *out;
	size_t n;

	if (cfg->journal_path)
		return strdup(cfg->journal_path);
	slash = strrchr(cfg->path, '/');
	n = (slash ? (size_t)(slash - cfg->path) + 1 : 0) + sizeof "mmm-journal";
	if ((out = malloc(n)) != NULL)
		snprintf(out, n, "%.*smmm-journal", slash ? (int)(slash - cfg->path) + 1 : 0, cfg->path);
	return out;
}

int cfg_pick(const struct cfg *cfg, const char *const *names, size_t nnames, const size_t *dflt,
    size_t ndflt, size_t *idx, size_t *n)
{
	*n = 0;
	for (size_t i = 0; i < nnames; i++) {
		const struct cfg_server *s = cfg_server_by_name(cfg, names[i]);
		if (s == NULL) {
			log_warnx("unknown server '%s' (not in '%s')", names[i], cfg->path);
			return 2;
		}
		idx[(*n)++] = (size_t)(s - cfg->servers);
	}
	for (size_t i = 0; nnames == 0 && i < ndflt; i++)
		idx[(*n)++] = dflt[i];
	return 0;
}
