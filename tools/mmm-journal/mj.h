/*
 * mj.h — what the mmm-journal subcommands share.  main.c parses the command
 * line into struct mj_opts and calls one cmd_*() function; each returns the
 * process exit status (0 ok, 1 runtime failure, 2 bad usage or config).
 */
#ifndef MMM_MJ_H
#define MMM_MJ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "config.h"
#include "journal.h"

enum mj_format { MJ_FMT_JSON, MJ_FMT_CANONICAL, MJ_FMT_BSON };

struct mj_opts {
	const char *config;        /* -c FILE */
	const char *jdir;          /* -j DIR */
	int quiet;                 /* -q: no summary lines */
	const char *source;        /* --source NAME|UUID */
	const char *name;          /* --name NAME */
	const char *output;        /* -o FILE */
	const char *ns;            /* --ns GLOB */
	const char *ops;           /* --op i,u,d,c,n (validated) */
	uint64_t since, until, before;   /* 0 = no bound */
	int has_before;
	long long limit;           /* 0 = no limit */
	enum mj_format format;
	int json, skip_existing, allow_gap;
	const char *to;            /* replay --to SERVER[/NS] */
	char **args;               /* positional arguments after the subcommand */
	int nargs;
};

struct mj {
	const struct mj_opts *o;
	struct cfg *cfg;           /* with -c */
	const char *path;          /* the journal directory */
	struct jnl *j;             /* after mj_open() */
};

/* Loads the config (-c) and settles the journal path.  Returns an exit status. */
int mj_init(struct mj *m, const struct mj_opts *o);
void mj_release(struct mj *m);
/* Opens m->path with FLAGS (journal.h JNL_*).  0, or logs and returns 1. */
int mj_open(struct mj *m, int flags);
/* Finds source ARG (name or UUID, or a server of the config) in the open
 * journal.  0, or logs and returns 1. */
int mj_source(struct mj *m, const char *arg, struct jnl_source *out);
/* "SECONDS:INC" into buf (>= 24 bytes). */
const char *mj_ts(uint64_t ts, char *buf, size_t len);
/* Source UUID for messages: "'name' (uuid)" when the journal knows a name, else "'uuid'". */
const char *mj_source_label(struct mj *m, const uint8_t uuid[16], char *buf, size_t len);
/* Writes S to F as a JSON string (quotes, backslashes and control characters escaped). */
void mj_json_str(FILE *f, const char *s);

/* Buffered output to a file descriptor (big writes: dump is benchmarked). */
struct mj_out {
	int fd;
	const char *name;          /* for messages */
	uint8_t *buf;
	size_t len, cap;
	int err;                   /* errno of the first failed write */
};
int mj_out_init(struct mj_out *out, int fd, const char *name, size_t cap);
void mj_out_write(struct mj_out *out, const void *p, size_t n);
/* Flushes; 0 or the errno of the first failure. */
int mj_out_flush(struct mj_out *out);
void mj_out_release(struct mj_out *out);

/* Output to PATH through a temporary file renamed into place on commit. */
struct mj_file {
	char *path, *tmp;
	int fd;
};
int mj_file_open(struct mj_file *f, const char *path);   /* 0 or errno */
int mj_file_commit(struct mj_file *f);                   /* fsync + rename: 0 or errno */
void mj_file_abort(struct mj_file *f);                   /* unlink the temporary */

int cmd_import(struct mj *m);
int cmd_export(struct mj *m);
int cmd_dump(struct mj *m);
int cmd_stat(struct mj *m);
int cmd_verify(struct mj *m);
int cmd_replay(struct mj *m);
int cmd_ship(struct mj *m);
int cmd_receive(struct mj *m);
int cmd_prune(struct mj *m);
int cmd_conflicts(struct mj *m);

#endif
