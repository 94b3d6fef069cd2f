/*
 * config.h — the site's YAML configuration (DESIGN.md §3), a superset of the
 * original MongoMultiMaster file:
 *
 *   server_a:                    # any non-reserved key is a server
 *     id: '2c88ae84-7cb9-40f7-835d-c05e981f564d'
 *     uri: 'mongodb://127.0.0.1:27019/?replicaSet=a'
 *   journal: { path: ./mmm-journal }          # reserved
 *   capture: { servers: [server_a] }          # reserved; default every server
 *   apply:   { servers: [server_a], workers: 4 }   # reserved; default every server
 *
 * Every error is reported as "FILE:LINE:COL: message" (1-based line and
 * column of the offending node) and cfg_load() returns MMM_ECONFIG; the
 * caller prints the message and exits 2.  Passwords never reach a message:
 * URIs are shown through cfg_redact_uri().  A relative journal.path is taken
 * relative to the directory of the configuration file.
 *
 * Details: servers keep file order; capture/apply lists keep their listed
 * order and an explicit empty list means none (capture: {} or no section
 * means every server).  Server names are non-empty and hold no '/'.  A
 * relative journal.path comes back absolute (config dir joined to the cwd).
 * A second YAML document in the file is an error.  libmongoc may still write its
 * own warnings about a URI to stderr (through its log handler).
 */
#ifndef MMM_CONFIG_H
#define MMM_CONFIG_H
#include <stddef.h>
#include <stdint.h>

struct cfg_server {
	char *name;              /* the YAML key */
	char id[37];             /* canonical lowercase UUID text */
	uint8_t uuid[16];
	char *uri;               /* as written, password included: never print it */
	char *uri_redacted;      /* mongodb://user:***@host/... */
	int line;                /* where the server's key stands */
};

struct cfg {
	char *path;              /* the file it was read from */
	struct cfg_server *servers;
	size_t nservers;
	char *journal_path;      /* absolute or relative to cwd; NULL when the file has no journal */
	size_t *capture;         /* indexes into servers: capture.servers, or every server */
	size_t ncapture;
	size_t *apply;           /* indexes into servers: apply.servers, or every server */
	size_t napply;
	int apply_workers;       /* apply.workers, default 4 */
	int apply_conflicts;     /* apply.conflicts: order writes by stamp (apply/CONFLICTS.md), default true */
};

/* Loads PATH.  On success *out is the configuration (free with cfg_free()).
 * On failure returns MMM_ECONFIG (or an errno when the file cannot be read)
 * and writes one line "FILE:LINE:COL: message" (or "FILE: message") to err. */
int cfg_load(const char *path, struct cfg **out, char *err, size_t errlen);
void cfg_free(struct cfg *cfg);

/* The site's journal: journal.path, else "mmm-journal" in the directory of
 * the configuration file (the original tool's files have no journal
 * section).  malloc'd; NULL only on ENOMEM. */
char *cfg_journal(const struct cfg *cfg);

/* The servers named in NAMES (--server options), or when NNAMES is 0 the
 * configured list DFLT (capture.servers, apply.servers), as indexes into
 * cfg->servers in IDX (room for cfg->nservers + NNAMES).  Returns 0, or 2
 * after logging "unknown server 'x' (not in 'FILE')". */
int cfg_pick(const struct cfg *cfg, const char *const *names, size_t nnames, const size_t *dflt,
    size_t ndflt, size_t *idx, size_t *n);

/* Lookup by YAML key, or by UUID (text in any case); NULL when absent. */
const struct cfg_server *cfg_server_by_name(const struct cfg *cfg, const char *name);
const struct cfg_server *cfg_server_by_uuid(const struct cfg *cfg, const uint8_t uuid[16]);

/* Copy of URI with any password replaced by "***" (malloc'd; NULL only on ENOMEM). */
char *cfg_redact_uri(const char *uri);

/* UUID text <-> 16 bytes.  uuid_parse accepts 8-4-4-4-12 hex digits, any
 * case; returns 0 or MMM_EUSAGE.  uuid_format writes 36 chars + NUL. */
int uuid_parse(const char *s, uint8_t out[16]);
void uuid_format(const uint8_t in[16], char out[37]);

#endif
