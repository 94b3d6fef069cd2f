/* mmm-capture — argument parsing and wiring; the work is in capture.c. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mongoc/mongoc.h>
#include "capture.h"
#include "config.h"
#include "err.h"
#include "journal.h"
#include "log.h"
#include "daemon.h"
#include "ts.h"

static volatile sig_atomic_t stop_flag;

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: mmm-capture -c FILE [--server NAME]... [--from TS] [-n] [-v]\n"
	    "                   [--log-format text|json] [--log-file FILE]\n"
	    "\n"
	    "Tails the oplog of each captured master (capture.servers, default every\n"
	    "server) into the site's journal, resuming where the journal ends.\n"
	    "\n"
	    "  -c, --config FILE     the site's configuration (YAML)\n"
	    "  -s, --server NAME     capture only this server (repeatable)\n"
	    "      --from TS         where a source with an empty journal starts\n"
	    "                        (SECONDS[:INC], ISO-8601 UTC, now-DURATION;\n"
	    "                        default: its newest oplog entry)\n"
	    "  -n, --check           check the configuration and exit\n"
	    "  -v, --verbose         debug logging\n"
	    "      --log-format F    text (default) or json lines\n"
	    "      --log-file FILE   append the log to FILE (reopened on SIGHUP)\n"
	    "  -h, --help            this help\n"
	    "\n"
	    "SIGTERM or SIGINT flush the current block and exit 0 (1 after a journal\n"
	    "failure). Exit 1 when no source is left running (a gap, a changed\n"
	    "replica set, a journal failure), 2 on bad usage or configuration.\n"
	    "SIGHUP reopens --log-file.\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "server", required_argument, NULL, 's' },
		{ "from", required_argument, NULL, 'F' },
		{ "check", no_argument, NULL, 'n' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "log-format", required_argument, NULL, 'L' },
		{ "log-file", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *logfile = NULL, *names[64];
	size_t nnames = 0, *idx = NULL, n = 0;
	char *jpath = NULL;
	struct cap_options opt = { 0, 0 };
	struct cfg *cfg = NULL;
	struct jnl *j = NULL;
	enum log_fmt fmt = LOG_FMT_TEXT;
	int check = 0, verbose = 0, ch, rc;
	char err[256];

	log_init(argv[0], 0, LOG_FMT_TEXT, LOG_F_TIME);
	while ((ch = getopt_long(argc, argv, "c:s:nvh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': config = optarg; break;
		case 's':
			if (nnames == 64)
				fatalx("too many --server options");
			names[nnames++] = optarg;
			break;
		case 'F':
			if (ts_parse(optarg, &opt.from_ts, err, sizeof err) != 0) {
				log_warnx("%s", err);
				return 2;
			}
			opt.have_from = 1;
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
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || config == NULL) {
		if (optind != argc)
			log_warnx("unexpected argument '%s'", argv[optind]);
		else
			log_warnx("missing -c FILE");
		usage(stderr);
		return 2;
	}
	{
		struct daemon_args da = { argv[0], config, logfile, verbose, fmt, names, nnames, DAEMON_CAPTURE };
		if ((rc = daemon_setup(&da, &cfg, &jpath, &idx, &n)) != 0)
			return rc;
	}
	if (check) {
		printf("configuration '%s' is valid: capturing %zu server%s into '%s'\n", config, n,
		    n == 1 ? "" : "s", jpath);
		goto out;
	}
	if ((rc = jnl_open(jpath, JNL_CREATE, &j)) != 0) {
		log_warnx("unable to open journal '%s': %s", jpath, mmm_strerror(rc));
		rc = 1;
		goto out;
	}
	mongoc_init();
	daemon_start(&stop_flag);
	log_info("capturing %zu server%s into '%s'", n, n == 1 ? "" : "s", jpath);
	rc = cap_run(cfg, j, idx, n, &opt, &stop_flag);
	daemon_finish();
	log_info("capture stopped%s", rc ? " with errors" : "");
	jnl_close(j);
	mongoc_cleanup();
out:
	free(idx);
	free(jpath);
	cfg_free(cfg);
	return rc;
}
