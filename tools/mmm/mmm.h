/*
 * mmm.h — what the `mmm` subcommands share.  main.c parses the command line
 * and calls one cmd_*() function, which returns the exit status (0 ok,
 * 1 runtime failure or a difference found, 2 bad usage or configuration).
 */
#ifndef MMM_TOOL_H
#define MMM_TOOL_H
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <mongoc/mongoc.h>
#include "config.h"
#include "links.h"

#define MMM_MAX_SERVERS 64

struct mmm_opts {
	const char *config;
	const char *servers[64];   /* --server/-s (repeatable) */
	size_t nservers;
	int yes;                   /* clear-config -y */
	const char *src, *dst;     /* replicate */
	const char *ops;
	int forward, copy_existing;
	int json;                  /* status --json */
	const char *links[64];     /* verify --link */
	size_t nlinks;
	int verbose;
};

struct mmm {
	const struct mmm_opts *o;
	struct cfg *cfg;
	char *journal_path;        /* journal.path, or the default beside the config */
};

/* A client for SRV that gives up within ~3 s; NULL after logging a one-line
 * error naming the server ("cannot reach 'server_a' (URI): reason"). */
mongoc_client_t *mmm_connect(const struct cfg_server *srv);
/* The same without logging: NULL with the one-line reason in WHY. */
mongoc_client_t *mmm_try_connect(const struct cfg_server *srv, char *why, size_t len);
/* Names of the collections of DB (not views), NULL-terminated (bson_strfreev()),
 * or NULL with ERR set. */
char **mmm_collection_names(mongoc_database_t *db, bson_error_t *err);
/* Parses "SERVER/NS": 0, or logs and returns 2. */
int mmm_parse_target(const struct cfg *cfg, const char *arg, const char *what,
    const struct cfg_server **srv, char *ns, size_t nslen);
/* Indexes of --server names (or every server when none) into IDX (room for
 * MMM_MAX_SERVERS): 0, or 2 after logging. */
int mmm_select(const struct mmm *m, size_t *idx, size_t *n);

int cmd_clear_config(struct mmm *m);
int cmd_dump_config(struct mmm *m);
int cmd_replicate(struct mmm *m);
int cmd_run(struct mmm *m);
int cmd_status(struct mmm *m);
int cmd_verify(struct mmm *m);

#endif
