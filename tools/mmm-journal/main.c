/*
 * main.c — mmm-journal: argument parsing and wiring only.  The subcommands
 * live in import.c, dump.c, stat.c, segments.c, replay.c and conflicts.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "fault.h"
#include "log.h"
#include "mj.h"
#include "ts.h"

#define PROG "mmm-journal"

static const char usage_main[] =
"usage: mmm-journal [-c FILE | -j DIR] [options] COMMAND [ARGS]\n"
"\n"
"Inspects, verifies, imports, exports, ships and receives an mmm journal.\n"
"\n"
"  -c, --config FILE     take the journal from FILE's journal.path\n"
"  -j, --journal DIR     the journal directory\n"
"      --log-format F    text (default) or json\n"
"  -q, --quiet           no summary lines on stderr\n"
"  -v, --verbose         debug messages\n"
"  -h, --help            this help; 'mmm-journal COMMAND --help' for a command\n"
"\n"
"commands:\n"
"  import-bson FILE|-    append a mongodump-style oplog.bson as a source's entries\n"
"  export-bson           a source's raw entries, concatenated (oplog.bson)\n"
"  dump                  entries as Extended JSON, one per line (or raw BSON)\n"
"  stat                  per source: entries, blocks, ts range, bytes, ratio\n"
"  verify                check every block's checksum, chain and contents\n"
"  ship                  write a source's blocks to a segment file (*.mmmseg)\n"
"  receive FILE...       store segment files' blocks (idempotent, refuses gaps)\n"
"  prune                 drop whole blocks older than a ts\n"
"  replay                apply a range of a source's entries to a server\n"
"  conflicts             the conflict log: writes that arrived after a newer one\n"
"\n"
"TS arguments: SECONDS[:INC] (as mongorestore --oplogLimit), an ISO-8601 UTC\n"
"time (2026-11-29T05:00:00Z) or now-DURATION (now-10m, now-2h, now-1d).\n"
"Exit status: 0 ok, 1 failure, 2 bad usage or configuration.\n";

enum {
	O_SOURCE = 256, O_NAME, O_SINCE, O_UNTIL, O_BEFORE, O_SKIP, O_NS, O_OP, O_LIMIT,
	O_FORMAT, O_JSON, O_ALLOW_GAP, O_TO, O_LOGFMT
};

#define A(o) (1u << ((o) - O_SOURCE))   /* bit of a long-only option */

struct subcmd {
	const char *name;
	int (*fn)(struct mj *);
	unsigned allowed;          /* A(O_*) bits, plus 'o' output below */
	int output;                /* -o allowed */
	int minargs, maxargs;
	const char *usage;
};

static const struct subcmd subcmds[] = {
	{ "import-bson", cmd_import, A(O_SOURCE) | A(O_NAME) | A(O_SKIP), 0, 1, 1,
"usage: mmm-journal [-c FILE | -j DIR] import-bson FILE|- --source NAME|UUID\n"
"                   [--name NAME] [--skip-existing]\n"
"\n"
"Appends a mongodump-style oplog.bson (concatenated oplog entries; '-' reads\n"
"stdin) as the entries of a source, creating the journal when absent.  The\n"
"whole input is checked first (BSON framing, a Timestamp 'ts' strictly\n"
"ascending and after what the journal holds); on any error nothing changes.\n"
"\n"
"  --source S        source name or UUID; a new source is a server of the\n"
"                    config (-c) or, with -j, a UUID\n"
"  --name NAME       name of a new source given by UUID (default: the UUID)\n"
"  --skip-existing   skip entries not after what the journal holds (or their\n"
"                    predecessor) instead of refusing the input\n"
"Entries are numbered from 1 in messages; offsets are byte offsets.\n" },
	{ "export-bson", cmd_export, A(O_SOURCE) | A(O_SINCE) | A(O_UNTIL), 1, 0, 0,
"usage: mmm-journal [-c FILE | -j DIR] export-bson --source S [--since TS]\n"
"                   [--until TS] [-o FILE]\n"
"\n"
"Writes the source's raw entries with since <= ts <= until, concatenated,\n"
"byte-identical to what was captured or imported, to FILE (replaced\n"
"atomically) or stdout.\n" },
	{ "dump", cmd_dump, A(O_SOURCE) | A(O_SINCE) | A(O_UNTIL) | A(O_NS) | A(O_OP) |
	    A(O_LIMIT) | A(O_FORMAT), 1, 0, 0,
"usage: mmm-journal [-c FILE | -j DIR] dump [--since TS] [--until TS] [--source S]\n"
"                   [--ns GLOB] [--op i,u,d,c,n] [--limit N]\n"
"                   [--format json|canonical|bson] [-o FILE]\n"
"\n"
"Prints entries with since <= ts <= until, one Extended JSON document per\n"
"line (relaxed by default), source after source (every source by default).\n"
"  --ns GLOB      only entries whose ns matches GLOB (fnmatch)\n"
"  --op LIST      only these op types\n"
"  --limit N      stop after N entries\n"
"  --format F     json (relaxed), canonical, or bson (raw entries)\n" },
	{ "stat", cmd_stat, A(O_JSON), 0, 0, 0,
"usage: mmm-journal [-c FILE | -j DIR] stat [--json]\n"
"\n"
"Per source: entries, blocks, first/last ts (also as UTC dates), raw and\n"
"stored bytes, compression ratio; the journal's file size; capture status.\n" },
	{ "verify", cmd_verify, 0, 0, 0, 0,
"usage: mmm-journal [-c FILE | -j DIR] verify\n"
"\n"
"Checks every block: framing, checksum, chain, decompression, entries.\n"
"Prints 'ok: N blocks, N entries', or names the first bad block and exits 1.\n" },
	{ "ship", cmd_ship, A(O_SOURCE) | A(O_SINCE) | A(O_UNTIL), 1, 0, 0,
"usage: mmm-journal [-c FILE | -j DIR] ship --source S [--since TS] [--until TS]\n"
"                   -o FILE.mmmseg\n"
"\n"
"Writes the whole blocks holding the source's entries in [since, until] to a\n"
"segment file ('-' = stdout).  'zstd -dc FILE.mmmseg' prints them as oplog.bson.\n" },
	{ "receive", cmd_receive, A(O_NAME) | A(O_ALLOW_GAP), 0, 1, -1,
"usage: mmm-journal [-c FILE | -j DIR] receive [--allow-gap] [--name NAME]\n"
"                   FILE.mmmseg...\n"
"\n"
"Stores the blocks of each segment file, each file all or nothing.  Blocks\n"
"already held are skipped; a segment that does not continue the source's\n"
"chain is refused unless --allow-gap.  --name names a new source.\n" },
	{ "prune", cmd_prune, A(O_BEFORE), 0, 0, 0,
"usage: mmm-journal [-c FILE | -j DIR] prune --before TS\n"
"\n"
"Drops whole blocks whose entries are all older than TS, never the newest\n"
"block of a source.\n" },
	{ "replay", cmd_replay, A(O_SOURCE) | A(O_SINCE) | A(O_UNTIL) | A(O_TO), 0, 0, 0,
"usage: mmm-journal [-c FILE | -j DIR] replay --source S --since TS [--until TS]\n"
"                   --to SERVER[/NS]\n"
"\n"
"Applies the source's entries in [since, until] to SERVER (a server of the\n"
"configuration, or a mongodb:// URI) with mmm-apply's translation: audits,\n"
"restores, rebuilding a lost site.  /NS (db.coll or db.*) replays only that\n"
"namespace.  The writes carry the source as their origin, so a capture of\n"
"SERVER does not send them back to the source.\n" },
	{ "conflicts", cmd_conflicts, A(O_SINCE) | A(O_NS) | A(O_JSON), 0, 0, 0,
"usage: mmm-journal [-c FILE | -j DIR] conflicts [--since TS] [--ns GLOB] [--json]\n"
"\n"
"Lists the conflict log that mmm-apply keeps: one record per write that\n"
"reached a master after a newer write of the same document (stamp order:\n"
"wall time, then origin), with how the document was re-derived.  One line\n"
"per record, by namespace, document and stamp; nothing when the log is empty.\n"
"  --since TS     only late writes with ts >= TS (a ts of the late write's\n"
"                 origin: each master's oplog has its own timestamps)\n"
"  --ns GLOB      only records whose ns matches GLOB (fnmatch)\n"
"  --json         one JSON object per line:\n"
"                 {ns, _id, master, late, newer, how, base, result, at}; late,\n"
"                 newer, base: {origin, origin_uuid, ts, wall, k}; no base when\n"
"                 how is \"degraded\"\n"
"Names are the journal's source names, else the config's (-c), else UUIDs.\n"
"An unreadable record is named in a warning and skipped (exit 1).\n" },
};

static const struct option longopts[] = {
	{ "config", required_argument, NULL, 'c' },
	{ "journal", required_argument, NULL, 'j' },
	{ "help", no_argument, NULL, 'h' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "output", required_argument, NULL, 'o' },
	{ "log-format", required_argument, NULL, O_LOGFMT },
	{ "source", required_argument, NULL, O_SOURCE },
	{ "name", required_argument, NULL, O_NAME },
	{ "since", required_argument, NULL, O_SINCE },
	{ "until", required_argument, NULL, O_UNTIL },
	{ "before", required_argument, NULL, O_BEFORE },
	{ "skip-existing", no_argument, NULL, O_SKIP },
	{ "ns", required_argument, NULL, O_NS },
	{ "op", required_argument, NULL, O_OP },
	{ "limit", required_argument, NULL, O_LIMIT },
	{ "format", required_argument, NULL, O_FORMAT },
	{ "json", no_argument, NULL, O_JSON },
	{ "allow-gap", no_argument, NULL, O_ALLOW_GAP },
	{ "to", required_argument, NULL, O_TO },
	{ NULL, 0, NULL, 0 },
};

static int misuse(const char *cmd, const char *fmt, const char *arg)
{
	char msg[512];
	snprintf(msg, sizeof msg, fmt, arg);
	if (cmd)
		log_warnx("%s (see 'mmm-journal %s --help')", msg, cmd);
	else
		log_warnx("%s (see 'mmm-journal --help')", msg);
	return 2;
}

static int parse_ts_opt(const char *opt, const char *val, uint64_t *out)
{
	char err[256];
	if (ts_parse(val, out, err, sizeof err)) {
		log_warnx("%s: %s", opt, err);
		return 2;
	}
	return 0;
}

/* Checks "i,u,d,c,n" (any subset, commas optional); returns the letters. */
static int parse_ops(const char *val, const char **out)
{
	if (!*val)
		return -1;
	for (const char *p = val; *p; p++)
		if (!strchr("iudcn,", *p))
			return -1;
	*out = val;
	return 0;
}

/* "--since" for a long option's value C, for messages. */
static const char *optname(int c, char *buf, size_t len)
{
	for (const struct option *l = longopts; l->name; l++)
		if (l->val == c) {
			snprintf(buf, len, "--%s", l->name);
			return buf;
		}
	snprintf(buf, len, "-%c", c);
	return buf;
}

/* Parses options of CMD (NULL: the global ones before the command). */
static int parse_opts(const struct subcmd *cmd, int argc, char **argv, struct mj_opts *o)
{
	const char *shortopts = cmd ? "+:c:j:hqvo:" : "+:c:j:hqv";
	enum log_fmt lf;
	char nb[32];
	int c;

	if (cmd)
		shortopts++;   /* permute: options may follow the arguments */
	opterr = 0;
	optind = 0;   /* glibc: full reinitialisation */
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		const char *cn = cmd ? cmd->name : NULL;
		if (c >= O_SOURCE && c < O_LOGFMT && (!cmd || !(cmd->allowed & A(c))))
			return misuse(cn, "unknown option '%s'", optname(c, nb, sizeof nb));
		switch (c) {
		case 'c': o->config = optarg; break;
		case 'j': o->jdir = optarg; break;
		case 'q': o->quiet = 1; log_set_verbose(-1); break;
		case 'v': log_set_verbose(1); break;
		case 'h':
			fputs(cmd ? cmd->usage : usage_main, stdout);
			exit(0);
		case 'o':
			if (!cmd || !cmd->output)
				return misuse(cn, "unknown option '%s'", optname(c, nb, sizeof nb));
			o->output = optarg;
			break;
		case O_LOGFMT:
			if (log_parse_format(optarg, &lf))
				return misuse(cn, "--log-format must be text or json, not '%s'", optarg);
			log_set_format(lf);
			break;
		case O_SOURCE: o->source = optarg; break;
		case O_NAME: o->name = optarg; break;
		case O_SINCE: if (parse_ts_opt("--since", optarg, &o->since)) return 2; break;
		case O_UNTIL: if (parse_ts_opt("--until", optarg, &o->until)) return 2; break;
		case O_BEFORE:
			if (parse_ts_opt("--before", optarg, &o->before))
				return 2;
			o->has_before = 1;
			break;
		case O_SKIP: o->skip_existing = 1; break;
		case O_NS: o->ns = optarg; break;
		case O_OP:
			if (parse_ops(optarg, &o->ops))
				return misuse(cn, "--op takes letters of i,u,d,c,n, not '%s'", optarg);
			break;
		case O_LIMIT: {
			char *end;
			o->limit = strtoll(optarg, &end, 10);
			if (!*optarg || *end || o->limit <= 0)
				return misuse(cn, "--limit takes a positive number, not '%s'", optarg);
			break;
		}
		case O_FORMAT:
			if (strcmp(optarg, "json") == 0 || strcmp(optarg, "relaxed") == 0)
				o->format = MJ_FMT_JSON;
			else if (strcmp(optarg, "canonical") == 0)
				o->format = MJ_FMT_CANONICAL;
			else if (strcmp(optarg, "bson") == 0)
				o->format = MJ_FMT_BSON;
			else
				return misuse(cn, "--format must be json, canonical or bson, not '%s'", optarg);
			break;
		case O_JSON: o->json = 1; break;
		case O_ALLOW_GAP: o->allow_gap = 1; break;
		case O_TO: o->to = optarg; break;
		case ':':
			return misuse(cn, "option '%s' needs a value", argv[optind - 1]);
		default:
			if (optopt) {
				char s[3] = { '-', (char)optopt, 0 };
				return misuse(cn, "unknown option '%s'", s);
			}
			return misuse(cn, "unknown option '%s'", argv[optind - 1]);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct mj_opts o = { .format = MJ_FMT_JSON };
	const struct subcmd *cmd = NULL;
	struct mj m;
	int rc;

	log_init(PROG, 0, LOG_FMT_TEXT, 0);
	if (fault_init())
		return 2;
	if ((rc = parse_opts(NULL, argc, argv, &o)))
		return rc;
	if (optind >= argc) {
		fputs(usage_main, stderr);
		return 2;
	}
	for (size_t i = 0; i < sizeof subcmds / sizeof subcmds[0]; i++)
		if (strcmp(argv[optind], subcmds[i].name) == 0)
			cmd = &subcmds[i];
	if (!cmd)
		return misuse(NULL, "unknown command '%s'", argv[optind]);

	argc -= optind;
	argv += optind;
	if ((rc = parse_opts(cmd, argc, argv, &o)))
		return rc;
	o.args = argv + optind;
	o.nargs = argc - optind;
	if (o.nargs < cmd->minargs)
		return misuse(cmd->name, "%s: missing argument", cmd->name);
	if (cmd->maxargs >= 0 && o.nargs > cmd->maxargs)
		return misuse(cmd->name, "unexpected argument '%s'", o.args[cmd->maxargs]);
	if (cmd->allowed & A(O_SOURCE) && !o.source && cmd->fn != cmd_dump)
		return misuse(cmd->name, "%s: --source is required", cmd->name);
	if (cmd->fn == cmd_ship && !o.output)
		return misuse(cmd->name, "%s: -o FILE is required", cmd->name);
	if (cmd->fn == cmd_replay && (!o.since || !o.to))
		return misuse(cmd->name, "%s: --since TS and --to SERVER are required", cmd->name);
	if (cmd->fn == cmd_prune && !o.has_before)
		return misuse(cmd->name, "%s: --before TS is required", cmd->name);
	if (o.since && o.until && o.until < o.since)
		return misuse(cmd->name, "--until is before --since%s", "");

	if ((rc = mj_init(&m, &o)) == 0)
		rc = cmd->fn(&m);
	mj_release(&m);
	return rc;
}
