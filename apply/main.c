/* mmm-apply — argument parsing and wiring; the work is in apply.c. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mongoc/mongoc.h>
#include "apply.h"
#include "config.h"
#include "daemon.h"
#include "err.h"
#include "journal.h"
#include "log.h"

static volatile sig_atomic_t stop_flag;

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: mmm-apply -c FILE [--server NAME]... [-n] [-v]\n"
	    "                 [--log-format text|json] [--log-file FILE]\n"
	    "       mmm-apply -c FILE --status\n"
	    "\n"
	    "Replays the journal into each destination master (apply.servers, default\n"
	    "every server), following the links stored on it (mmm.links), exactly once.\n"
	    "\n"
	    "  -c, --config FILE     the site's configuration (YAML)\n"
	    "  -s, --server NAME     apply only into this server (repeatable)\n"
	    "  -n, --check           check the configuration and exit\n"
	    "      --status          print each link's status from the journal as JSON\n"
	    "                        lines {key, status} and exit\n"
	    "  -v, --verbose         debug logging\n"
	    "      --log-format F    text (default) or json lines\n"
	    "      --log-file FILE   append the log to FILE (reopened on SIGHUP)\n"
	    "  -h, --help            this help\n"
	    "\n"
	    "SIGTERM or SIGINT finish the current batch and exit 0. Exit 1 when a\n"
	    "link stopped on an error, 2 on bad usage or configuration.\n");
}

static int print_status(void *arg, const char *key, const bson_t *doc)
{
	char *js = bson_as_relaxed_extended_json(doc, NULL);
	(void)arg;
	printf("{\"key\": \"%s\", \"status\": %s}\n", key, js ? js : "null");
	bson_free(js);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "server", required_argument, NULL, 's' },
		{ "check", no_argument, NULL, 'n' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "log-format", required_argument, NULL, 'L' },
		{ "log-file", required_argument, NULL, 'l' },
		{ "status", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *logfile = NULL, *names[64];
	size_t nnames = 0, *idx = NULL, n = 0;
	char *jpath = NULL;
	struct cfg *cfg = NULL;
	struct jnl *j = NULL;
	enum log_fmt fmt = LOG_FMT_TEXT;
	int check = 0, verbose = 0, status = 0, ch, rc;

	log_init(argv[0], 0, LOG_FMT_TEXT, LOG_F_TIME);
	while ((ch = getopt_long(argc, argv, "c:s:nvh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': config = optarg; break;
		case 's':
			if (nnames == 64)
				fatalx("too many --server options");
			names[nnames++] = optarg;
			break;
		case 'n': check = 1; break;
		case 'v': verbose = 1; break;
		case 'L':
			if (log_parse_format(optarg, &fmt) != 0) {
				log_warnx("unknown log format '%s': expected text or json", optarg);
				return 2;
			}
			break;
		case 'l': logfile = optarg; break;
		case 'S': status = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || config == NULL) {
		log_warnx(optind != argc ? "unexpected argument '%s'" : "missing -c FILE%s",
		    optind != argc ? argv[optind] : "");
		usage(stderr);
		return 2;
	}
	{
		struct daemon_args da = { argv[0], config, logfile, verbose, fmt, names, nnames, DAEMON_APPLY };
		if ((rc = daemon_setup(&da, &cfg, &jpath, &idx, &n)) != 0)
			return rc;
	}
	if (check) {
		printf("configuration '%s' is valid: applying into %zu server%s from '%s'\n", config, n,
		    n == 1 ? "" : "s", jpath);
		goto out;
	}
	if (status) {
		if ((rc = jnl_open(jpath, JNL_RDONLY, &j)) != 0) {
			log_warnx("unable to open journal '%s': %s", jpath, mmm_strerror(rc));
			rc = 1;
			goto out;
		}
		rc = jnl_status_walk(j, "apply/", print_status, NULL) ? 1 : 0;
		jnl_close(j);
		goto out;
	}
	if ((rc = jnl_open(jpath, JNL_CREATE, &j)) != 0) {
		log_warnx("unable to open journal '%s': %s", jpath, mmm_strerror(rc));
		rc = 1;
		goto out;
	}
	mongoc_init();
	daemon_start(&stop_flag);
	log_info("applying into %zu server%s from '%s'", n, n == 1 ? "" : "s", jpath);
	rc = app_run(cfg, j, idx, n, &stop_flag);
	daemon_finish();
	log_info("apply stopped%s", rc ? " with errors" : "");
	jnl_close(j);
	mongoc_cleanup();
out:
	free(idx);
	free(jpath);
	cfg_free(cfg);
	return rc;
}
