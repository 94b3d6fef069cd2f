/* mmm — the administrator's command: argument parsing and wiring only. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mongoc/mongoc.h>
#include "err.h"
#include "fault.h"
#include "log.h"
#include "mmm.h"
#include "util.h"

static const char usage_text[] =
    "usage: mmm -c FILE [-v] [--log-format text|json] COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  clear-config [-s NAME] [-y]   remove the links (and checkpoints) stored on the servers\n"
    "  dump-config                   show the servers and the replication links\n"
    "  replicate --src=SERVER/NS --dst=SERVER/NS [--ops iudc] [--forward] [--copy-existing]\n"
    "                                store a link on the destination (NS: db.coll or db.*)\n"
    "  run [-s NAME]...              capture and apply in one process\n"
    "  status [--json]               state and lag of every source and link, from the journal\n"
    "  verify [--link SRC/NS=DST/NS]...  compare linked collections, list differing _ids\n"
    "\n"
    "`mmm COMMAND --help` describes a command.  Exit 0 ok, 1 failure or difference,\n"
    "2 bad usage or configuration.\n";

static const char *const sub_help[][2] = {
	{ "clear-config", "usage: mmm -c FILE clear-config [-s|--server NAME] [-y|--yes]\n"
	    "Removes the replication links and checkpoints stored on every server (or NAME),\n"
	    "after asking (yN) unless -y.\n" },
	{ "dump-config", "usage: mmm -c FILE dump-config\n"
	    "Prints the servers of the configuration (passwords hidden) and the links stored\n"
	    "on each, in the original MongoMultiMaster layout.\n" },
	{ "replicate", "usage: mmm -c FILE replicate -s|--src=SERVER/NS -d|--dst=SERVER/NS\n"
	    "                 [-o|--ops iudc] [--forward] [--copy-existing]\n"
	    "Stores a link on the destination server: NS is db.coll, or db.* for a whole\n"
	    "database.  --ops limits it to inserts, updates, deletes, commands (default iudc).\n"
	    "--forward also passes on what the source received from other masters.\n"
	    "--copy-existing first copies the collection (options, indexes, documents) as\n"
	    "of the link's start: a snapshot there where the server offers one, else the\n"
	    "live collection, which the journal replayed from the start then catches up.\n"
	    "A new link starts at the source's newest oplog entry (an unreachable source:\n"
	    "where this site's journal ends); replicating an existing link again keeps\n"
	    "its start.\n" },
	{ "run", "usage: mmm -c FILE run [-s|--server NAME]...\n"
	    "Captures every captured server into the journal and applies the journal into\n"
	    "every destination, in one process, until SIGTERM or SIGINT.\n" },
	{ "status", "usage: mmm -c FILE status [--json]\n"
	    "Shows, from the journal, each source (state, last ts, lag) and each link\n"
	    "(state, applied ts, lag in seconds, conflicts, last error), and how many\n"
	    "records the conflict log holds (`mmm-journal conflicts` lists them).\n" },
	{ "verify", "usage: mmm -c FILE verify [--link SRC_SERVER/NS=DST_SERVER/NS]...\n"
	    "Compares linked collections on their servers (every link, or those given):\n"
	    "dbHash when the namespaces match, else document by document.  Lists up to 20\n"
	    "differing _ids; exit 1 on any difference.\n" },
};

static int sub_usage(const char *cmd, FILE *f)
{
	for (size_t i = 0; i < sizeof sub_help / sizeof sub_help[0]; i++)
		if (strcmp(sub_help[i][0], cmd) == 0) {
			fputs(sub_help[i][1], f);
			return 0;
		}
	fputs(usage_text, f);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option global[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "log-format", required_argument, NULL, 'L' },
		{ "logging", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const struct option sub[] = {
		{ "server", required_argument, NULL, 'S' },
		{ "slave", required_argument, NULL, 'S' },
		{ "yes", no_argument, NULL, 'y' },
		{ "src", required_argument, NULL, 's' },
		{ "dst", required_argument, NULL, 'd' },
		{ "ops", required_argument, NULL, 'o' },
		{ "forward", no_argument, NULL, 'F' },
		{ "copy-existing", no_argument, NULL, 'C' },
		{ "json", no_argument, NULL, 'J' },
		{ "link", required_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct mmm_opts o;
	struct mmm m;
	enum log_fmt fmt = LOG_FMT_TEXT;
	const char *cmd, *logfile = NULL;
	char err[1024];
	int ch, rc;

	memset(&o, 0, sizeof o);
	log_init(argv[0], 0, LOG_FMT_TEXT, 0);
	while ((ch = getopt_long(argc, argv, "+c:vl:h", global, NULL)) != -1) {
		switch (ch) {
		case 'c': o.config = optarg; break;
		case 'v': o.verbose = 1; break;
		case 'l': logfile = optarg; break;
		case 'L':
			if (log_parse_format(optarg, &fmt) != 0) {
				log_warnx("unknown log format '%s': expected text or json", optarg);
				return 2;
			}
			break;
		case 'h': fputs(usage_text, stdout); return 0;
		default: fputs(usage_text, stderr); return 2;
		}
	}
	if (optind >= argc) {
		log_warnx("missing command");
		fputs(usage_text, stderr);
		return 2;
	}
	cmd = argv[optind];
	if (strcmp(cmd, "help") == 0) {
		if (optind + 1 < argc)
			return sub_usage(argv[optind + 1], stdout);
		fputs(usage_text, stdout);
		return 0;
	}
	argc -= optind;
	argv += optind;
	optind = 1;
	/* -s is --src for replicate (as the original), --server elsewhere */
	while ((ch = getopt_long(argc, argv, strcmp(cmd, "replicate") == 0 ? "s:d:o:h" : "s:yh", sub, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (strcmp(cmd, "replicate") == 0) {
				o.src = optarg;
				break;
			}
			/* fall through */
		case 'S':
			if (o.nservers == 64) {
				log_warnx("too many --server options");
				return 2;
			}
			o.servers[o.nservers++] = optarg;
			break;
		case 'y': o.yes = 1; break;
		case 'd': o.dst = optarg; break;
		case 'o': o.ops = optarg; break;
		case 'F': o.forward = 1; break;
		case 'C': o.copy_existing = 1; break;
		case 'J': o.json = 1; break;
		case 'K':
			if (o.nlinks == 64) {
				log_warnx("too many --link options");
				return 2;
			}
			o.links[o.nlinks++] = optarg;
			break;
		case 'h': return sub_usage(cmd, stdout);
		default: sub_usage(cmd, stderr); return 2;
		}
	}
	if (optind != argc) {
		log_warnx("unexpected argument '%s' for '%s'", argv[optind], cmd);
		sub_usage(cmd, stderr);
		return 2;
	}
	if (o.config == NULL) {
		log_warnx("missing -c FILE");
		fputs(usage_text, stderr);
		return 2;
	}
	log_init("mmm", o.verbose, fmt, strcmp(cmd, "run") == 0 ? LOG_F_TIME : 0);
	if (logfile && (rc = log_set_file(logfile)) != 0) {
		log_warnx("cannot open log file '%s': %s", logfile, mmm_strerror(rc));
		return 2;
	}
	if (fault_init() != 0)
		return 2;
	memset(&m, 0, sizeof m);
	m.o = &o;
	mmm_mongoc_log_to_debug();
	if ((rc = cfg_load(o.config, &m.cfg, err, sizeof err)) != 0) {
		log_warnx("%s", err);
		return 2;
	}
	if ((m.journal_path = cfg_journal(m.cfg)) == NULL) {
		cfg_free(m.cfg);
		return 1;
	}
	mongoc_init();
	if (strcmp(cmd, "clear-config") == 0)
		rc = cmd_clear_config(&m);
	else if (strcmp(cmd, "dump-config") == 0)
		rc = cmd_dump_config(&m);
	else if (strcmp(cmd, "replicate") == 0)
		rc = cmd_replicate(&m);
	else if (strcmp(cmd, "run") == 0)
		rc = cmd_run(&m);
	else if (strcmp(cmd, "status") == 0)
		rc = cmd_status(&m);
	else if (strcmp(cmd, "verify") == 0)
		rc = cmd_verify(&m);
	else {
		log_warnx("unknown command '%s'", cmd);
		fputs(usage_text, stderr);
		rc = 2;
	}
	mongoc_cleanup();
	free(m.journal_path);
	cfg_free(m.cfg);
	return rc;
}
