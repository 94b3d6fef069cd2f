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
#include "err.h"
#include "fault.h"
#include "journal.h"
#include "log.h"
#include "util.h"

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t hup_flag;

static void on_stop(int sig) { (void)sig; stop_flag = 1; }
static void on_hup(int sig) { (void)sig; hup_flag = 1; }

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

static void *hup_watch(void *arg)
{
	(void)arg;
	while (!stop_flag) {
		if (hup_flag) {
			hup_flag = 0;
			log_reopen();
		}
		usleep(100 * 1000);
	}
	return NULL;
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
	size_t nnames = 0, idx[64], n = 0;
	struct cfg *cfg = NULL;
	struct jnl *j = NULL;
	enum log_fmt fmt = LOG_FMT_TEXT;
	int check = 0, verbose = 0, status = 0, ch, rc;
	char err[1024];
	struct sigaction sa;
	pthread_t hup;

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
	log_init(argv[0], verbose, fmt, LOG_F_TIME);
	if (logfile && (rc = log_set_file(logfile)) != 0) {
		log_warnx("cannot open log file '%s': %s", logfile, mmm_strerror(rc));
		return 2;
	}
	if (fault_init() != 0)
		return 2;
	mmm_mongoc_log_to_debug();
	if ((rc = cfg_load(config, &cfg, err, sizeof err)) != 0) {
		log_warnx("%s", err);
		return 2;
	}
	if (cfg->journal_path == NULL) {
		log_warnx("%s: no journal.path: apply needs a journal", config);
		cfg_free(cfg);
		return 2;
	}
	for (size_t i = 0; i < nnames; i++) {
		const struct cfg_server *s = cfg_server_by_name(cfg, names[i]);
		if (s == NULL) {
			log_warnx("unknown server '%s' (not in '%s')", names[i], config);
			cfg_free(cfg);
			return 2;
		}
		idx[n++] = (size_t)(s - cfg->servers);
	}
	for (size_t i = 0; nnames == 0 && i < cfg->napply && n < 64; i++)
		idx[n++] = cfg->apply[i];
	if (n == 0) {
		log_warnx("%s: no server to apply into", config);
		cfg_free(cfg);
		return 2;
	}
	if (check) {
		printf("configuration '%s' is valid: applying into %zu server%s from '%s'\n", config, n,
		    n == 1 ? "" : "s", cfg->journal_path);
		cfg_free(cfg);
		return 0;
	}
	if (status) {
		if ((rc = jnl_open(cfg->journal_path, JNL_RDONLY, &j)) != 0) {
			log_warnx("unable to open journal '%s': %s", cfg->journal_path, mmm_strerror(rc));
			cfg_free(cfg);
			return 1;
		}
		rc = jnl_status_walk(j, "apply/", print_status, NULL);
		jnl_close(j);
		cfg_free(cfg);
		return rc ? 1 : 0;
	}
	if ((rc = jnl_open(cfg->journal_path, JNL_CREATE, &j)) != 0) {
		log_warnx("unable to open journal '%s': %s", cfg->journal_path, mmm_strerror(rc));
		cfg_free(cfg);
		return 1;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	mongoc_init();
	pthread_create(&hup, NULL, hup_watch, NULL);
	log_info("applying into %zu server%s from '%s'", n, n == 1 ? "" : "s", cfg->journal_path);
	rc = app_run(cfg, j, idx, n, &stop_flag);
	stop_flag = 1;
	pthread_join(hup, NULL);
	log_info("apply stopped%s", rc ? " with errors" : "");
	jnl_close(j);
	cfg_free(cfg);
	mongoc_cleanup();
	return rc;
}
