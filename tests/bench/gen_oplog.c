/*
 * gen_oplog.c — writes a deterministic oplog.bson shaped like a MongoDB 6.0
 * primary's, for the journal benchmark (tests/bench/README.md).
 *
 *   gen_oplog [--entries N] [--docs N] [--seed S] -o FILE
 *
 * Entries are CRUD on one collection "bench.c" (one `ui`), in 6.0's field
 * order and types:
 *   insert {op:"i", ns, ui, o:{_id, ...}, ts, t, v, wall}          (no o2)
 *   update {op:"u", ns, ui, o:{$v:2, diff:{d?, u?, i?, s<f>?}}, o2:{_id}, ts, t, v, wall}
 *   delete {op:"d", ns, ui, o:{_id}, ts, t, v, wall}
 * with t and v int64, ui binary subtype 4, wall a date (ms).
 *
 * The mix is about 50% inserts, 40% updates, 10% deletes.  Updates and
 * deletes go to the hot set: the last --docs inserted documents (default
 * 100000), and only to documents that exist (a delete removes a document
 * from that set; an update never touches a deleted one).  Update diffs
 * follow the document's state: $set of an existing field is `u`, of a new
 * field `i`, $unset `d`, a sub-document change `saddress`, $push/$pop on the
 * tags array an array diff `stags:{a:true, u<N>|l}`.
 *
 * Timestamps ascend strictly: each second carries 1000–5000 operations
 * (increments 1..n) and wall advances with them inside the second.
 * Everything comes from one splitmix64/xoshiro256** stream seeded by --seed:
 * the same arguments give the same bytes.  Entries average about 250 bytes.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bson/bson.h>

#define START_SEC   1700000000u      /* 2023-11-14: a 6.0-era primary */
#define TERM        7

/* ---- PRNG: xoshiro256** seeded by splitmix64 ------------------------- */

static uint64_t rs[4];

static uint64_t
splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t
rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t
rnd(void)
{
	uint64_t r = rotl(rs[1] * 5, 7) * 9, t = rs[1] << 17;
	rs[2] ^= rs[0];
	rs[3] ^= rs[1];
	rs[1] ^= rs[2];
	rs[0] ^= rs[3];
	rs[2] ^= t;
	rs[3] = rotl(rs[3], 45);
	return r;
}

/* Uniform in [0, n). */
static uint32_t
rnd_below(uint32_t n)
{
	return (uint32_t)(((rnd() >> 32) * (uint64_t)n) >> 32);
}

static uint32_t
rnd_range(uint32_t lo, uint32_t hi)
{
	return lo + rnd_below(hi - lo + 1);
}

/* ---- content tables --------------------------------------------------- */

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *const first_names[] = {
	"James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda",
	"David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
	"Thomas", "Sarah", "Charles", "Karen", "Daniel", "Lisa", "Matthew", "Nancy",
	"Anthony", "Betty", "Mark", "Sandra", "Donald", "Margaret", "Steven", "Ashley",
	"Andrew", "Kimberly", "Paul", "Emily", "Joshua", "Donna", "Kenneth", "Michelle",
	"Kevin", "Carol", "Brian", "Amanda", "Timothy", "Melissa", "Ronald", "Deborah",
	"Yuki", "Amara", "Mateo", "Priya", "Lukas", "Sofia", "Chen", "Fatima",
	"Olga", "Kwame", "Ines", "Ravi", "Noor", "Emil", "Zanele", "Hiroshi",
};
static const char *const last_names[] = {
	"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
	"Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
	"Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson",
	"White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker",
	"Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
	"Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
	"Kowalski", "Novak", "Tanaka", "Okafor", "Schmidt", "Rossi", "Dubois", "Silva",
};
static const char *const streets[] = {
	"Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill",
	"Park", "Sunset", "Ridge", "Church", "Highland", "Mill", "River", "Spring",
	"Franklin", "Jefferson", "Lincoln", "Willow", "Chestnut", "Meadow", "Forest",
};
static const char *const street_kinds[] = { "St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Way" };
static const char *const cities[] = {
	"Springfield", "Riverside", "Franklin", "Greenville", "Bristol", "Clinton",
	"Fairview", "Salem", "Madison", "Georgetown", "Arlington", "Ashland", "Dover",
	"Oxford", "Jackson", "Burlington", "Manchester", "Milton", "Newport", "Auburn",
	"Portland", "Lyon", "Porto", "Leipzig", "Osaka", "Lagos", "Pune", "Krakow",
};
static const char *const tags[] = {
	"new", "vip", "trial", "premium", "churn-risk", "newsletter", "beta", "mobile",
	"web", "referral", "enterprise", "student", "partner", "support", "sale", "eu",
};
static const char *const domains[] = {
	"gmail.com", "yahoo.com", "outlook.com", "mail.com", "proton.me", "example.org", "web.de",
};
static const char *const statuses[] = { "pending", "active", "suspended", "verified", "review" };
static const char *const plans[] = { "free", "basic", "pro", "team", "enterprise" };

#define PICK(a) ((a)[rnd_below((uint32_t)NELEM(a))])

/* BSON_APPEND_UTF8 evaluates its value twice: this evaluates it once. */
static void
put_str(bson_t *b, const char *key, const char *val)
{
	bson_append_utf8(b, key, -1, val, -1);
}

/* ---- document state --------------------------------------------------- */

#define ST_ALIVE   0x1
#define ST_STATUS  0x2     /* has the optional `status` and `statusAt` fields */
#define ST_SEEN    0x4     /* has the optional `lastSeen` field */
#define MAX_TAGS   6

struct doc {
	uint8_t oid[12];
	int32_t visits;
	uint8_t ntags;
	uint8_t flags;
};

struct gen {
	struct doc *hot;          /* ring of the last NDOCS inserted documents */
	uint32_t ndocs, filled, next;
	uint64_t live;            /* alive documents in the ring */
	uint8_t ui[16];
	uint8_t oid_proc[5];      /* ObjectId "process" bytes */
	uint32_t oid_counter;
	uint32_t sec, inc, per_sec;
	int64_t wall;
	bson_t b;
};

static void
next_ts(struct gen *g)
{
	if (g->inc >= g->per_sec) {
		g->sec += 1;
		g->inc = 0;
		g->per_sec = rnd_range(1000, 5000);
	}
	g->inc++;
	/* wall: inside the second, proportional to the increment, never backwards */
	int64_t w = (int64_t)g->sec * 1000 + (int64_t)g->inc * 1000 / (g->per_sec + 1);
	if (w > g->wall)
		g->wall = w;
}

static void
envelope_head(struct gen *g, const char *op)
{
	bson_reinit(&g->b);
	put_str(&g->b, "op", op);
	put_str(&g->b, "ns", "bench.c");
	bson_append_binary(&g->b, "ui", 2, BSON_SUBTYPE_UUID, g->ui, 16);
}

static void
envelope_tail(struct gen *g)
{
	bson_append_timestamp(&g->b, "ts", 2, g->sec, g->inc);
	BSON_APPEND_INT64(&g->b, "t", TERM);
	BSON_APPEND_INT64(&g->b, "v", 2);
	BSON_APPEND_DATE_TIME(&g->b, "wall", g->wall);
}

static void
append_oid(bson_t *b, const char *key, const uint8_t raw[12])
{
	bson_oid_t oid;
	bson_oid_init_from_data(&oid, raw);
	BSON_APPEND_OID(b, key, &oid);
}

/* "1234 Oak Ave"; random draws in a fixed order (argument evaluation order is not). */
static void
make_street(char *buf, size_t len)
{
	uint32_t num = rnd_range(1, 9999);
	const char *name = PICK(streets);
	const char *kind = PICK(street_kinds);
	snprintf(buf, len, "%u %s %s", num, name, kind);
}

static void
append_address(bson_t *parent)
{
	char street[64], zip[8];
	bson_t a;
	make_street(street, sizeof street);
	snprintf(zip, sizeof zip, "%05u", rnd_below(100000));
	BSON_APPEND_DOCUMENT_BEGIN(parent, "address", &a);
	put_str(&a, "street", street);
	put_str(&a, "city", PICK(cities));
	put_str(&a, "zip", zip);
	bson_append_document_end(parent, &a);
}

static double
money(void)
{
	return (double)rnd_below(2000000) / 100.0;
}

static void
gen_insert(struct gen *g)
{
	struct doc *d = &g->hot[g->next];
	char name[64], email[96], key[12];
	const char *fn = PICK(first_names), *ln = PICK(last_names);
	bson_t o, arr;

	if (g->filled == g->ndocs && (d->flags & ST_ALIVE))
		g->live--;            /* leaves the hot set (still exists, no longer touched) */
	else if (g->filled < g->ndocs)
		g->filled++;
	g->next = (g->next + 1) % g->ndocs;

	/* ObjectId: seconds, 5 process bytes, 3-byte counter */
	d->oid[0] = (uint8_t)(g->sec >> 24);
	d->oid[1] = (uint8_t)(g->sec >> 16);
	d->oid[2] = (uint8_t)(g->sec >> 8);
	d->oid[3] = (uint8_t)g->sec;
	memcpy(d->oid + 4, g->oid_proc, 5);
	g->oid_counter = (g->oid_counter + 1) & 0xffffff;
	d->oid[9] = (uint8_t)(g->oid_counter >> 16);
	d->oid[10] = (uint8_t)(g->oid_counter >> 8);
	d->oid[11] = (uint8_t)g->oid_counter;
	d->visits = (int32_t)rnd_below(3);
	d->ntags = (uint8_t)rnd_below(4);
	d->flags = ST_ALIVE;
	g->live++;

	snprintf(name, sizeof name, "%s %s", fn, ln);
	uint32_t num = rnd_below(1000);
	const char *dom = PICK(domains);
	snprintf(email, sizeof email, "%c%s%u@%s", fn[0], ln, num, dom);
	for (char *p = email; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');

	envelope_head(g, "i");
	BSON_APPEND_DOCUMENT_BEGIN(&g->b, "o", &o);
	append_oid(&o, "_id", d->oid);
	put_str(&o, "name", name);
	put_str(&o, "email", email);
	BSON_APPEND_DOUBLE(&o, "balance", money());
	BSON_APPEND_BOOL(&o, "active", rnd_below(10) < 8);
	append_address(&o);
	BSON_APPEND_ARRAY_BEGIN(&o, "tags", &arr);
	for (uint32_t i = 0; i < d->ntags; i++) {
		const char *k;
		bson_uint32_to_string(i, &k, key, sizeof key);
		bson_append_utf8(&arr, k, -1, PICK(tags), -1);
	}
	bson_append_array_end(&o, &arr);
	put_str(&o, "plan", PICK(plans));
	BSON_APPEND_INT32(&o, "visits", d->visits);
	bson_append_document_end(&g->b, &o);
	envelope_tail(g);
}

/* A live document of the hot set, or NULL when none is found nearby. */
static struct doc *
pick_live(struct gen *g)
{
	if (g->live == 0)
		return NULL;
	uint32_t i = rnd_below(g->filled);
	for (uint32_t n = 0; n < g->filled; n++, i = (i + 1) % g->filled)
		if (g->hot[i].flags & ST_ALIVE)
			return &g->hot[i];
	return NULL;
}

static void
o2_id(struct gen *g, const struct doc *d)
{
	bson_t o2;
	BSON_APPEND_DOCUMENT_BEGIN(&g->b, "o2", &o2);
	append_oid(&o2, "_id", d->oid);
	bson_append_document_end(&g->b, &o2);
}

static void
gen_update(struct gen *g, struct doc *d)
{
	bson_t o, diff, sec, sub;
	char key[12];
	uint32_t kind = rnd_below(100);

	envelope_head(g, "u");
	BSON_APPEND_DOCUMENT_BEGIN(&g->b, "o", &o);
	BSON_APPEND_INT32(&o, "$v", 2);
	BSON_APPEND_DOCUMENT_BEGIN(&o, "diff", &diff);
	if (kind < 5 && (d->flags & ST_STATUS)) {
		/* $unset status, statusAt */
		BSON_APPEND_DOCUMENT_BEGIN(&diff, "d", &sec);
		BSON_APPEND_BOOL(&sec, "status", false);
		BSON_APPEND_BOOL(&sec, "statusAt", false);
		bson_append_document_end(&diff, &sec);
		d->flags &= (uint8_t)~ST_STATUS;
	} else if (kind < 40) {
		/* $inc visits, $set lastSeen (`i` the first time) */
		d->visits++;
		BSON_APPEND_DOCUMENT_BEGIN(&diff, "u", &sec);
		BSON_APPEND_INT32(&sec, "visits", d->visits);
		if (d->flags & ST_SEEN)
			BSON_APPEND_DATE_TIME(&sec, "lastSeen", g->wall);
		bson_append_document_end(&diff, &sec);
		if (!(d->flags & ST_SEEN)) {
			BSON_APPEND_DOCUMENT_BEGIN(&diff, "i", &sec);
			BSON_APPEND_DATE_TIME(&sec, "lastSeen", g->wall);
			bson_append_document_end(&diff, &sec);
			d->flags |= ST_SEEN;
		}
	} else if (kind < 58) {
		/* $set balance (+ active) */
		BSON_APPEND_DOCUMENT_BEGIN(&diff, "u", &sec);
		BSON_APPEND_DOUBLE(&sec, "balance", money());
		if (rnd_below(4) == 0)
			BSON_APPEND_BOOL(&sec, "active", rnd_below(2));
		bson_append_document_end(&diff, &sec);
	} else if (kind < 72) {
		/* $set status and statusAt (both present or both absent): `u` or `i` */
		BSON_APPEND_DOCUMENT_BEGIN(&diff, (d->flags & ST_STATUS) ? "u" : "i", &sec);
		put_str(&sec, "status", PICK(statuses));
		BSON_APPEND_DATE_TIME(&sec, "statusAt", g->wall);
		bson_append_document_end(&diff, &sec);
		d->flags |= ST_STATUS;
	} else if (kind < 86) {
		/* $set address.city / address.street+zip, with lastSeen */
		char street[64], zip[8];
		BSON_APPEND_DOCUMENT_BEGIN(&diff, (d->flags & ST_SEEN) ? "u" : "i", &sec);
		BSON_APPEND_DATE_TIME(&sec, "lastSeen", g->wall);
		bson_append_document_end(&diff, &sec);
		d->flags |= ST_SEEN;
		BSON_APPEND_DOCUMENT_BEGIN(&diff, "saddress", &sec);
		BSON_APPEND_DOCUMENT_BEGIN(&sec, "u", &sub);
		if (rnd_below(2)) {
			put_str(&sub, "city", PICK(cities));
		} else {
			make_street(street, sizeof street);
			snprintf(zip, sizeof zip, "%05u", rnd_below(100000));
			put_str(&sub, "street", street);
			put_str(&sub, "zip", zip);
		}
		bson_append_document_end(&sec, &sub);
		bson_append_document_end(&diff, &sec);
	} else if (kind < 95 && d->ntags < MAX_TAGS) {
		/* $push tags */
		BSON_APPEND_DOCUMENT_BEGIN(&diff, "stags", &sec);
		BSON_APPEND_BOOL(&sec, "a", true);
		snprintf(key, sizeof key, "u%u", d->ntags);
		put_str(&sec, key, PICK(tags));
		bson_append_document_end(&diff, &sec);
		d->ntags++;
	} else if (d->ntags > 0) {
		/* $pop tags */
		d->ntags--;
		BSON_APPEND_DOCUMENT_BEGIN(&diff, "stags", &sec);
		BSON_APPEND_BOOL(&sec, "a", true);
		BSON_APPEND_INT32(&sec, "l", d->ntags);
		bson_append_document_end(&diff, &sec);
	} else {
		/* $set plan */
		BSON_APPEND_DOCUMENT_BEGIN(&diff, "u", &sec);
		put_str(&sec, "plan", PICK(plans));
		bson_append_document_end(&diff, &sec);
	}
	bson_append_document_end(&o, &diff);
	bson_append_document_end(&g->b, &o);
	o2_id(g, d);
	envelope_tail(g);
}

static void
gen_delete(struct gen *g, struct doc *d)
{
	bson_t o;
	envelope_head(g, "d");
	BSON_APPEND_DOCUMENT_BEGIN(&g->b, "o", &o);
	append_oid(&o, "_id", d->oid);
	bson_append_document_end(&g->b, &o);
	envelope_tail(g);
	d->flags = 0;
	g->live--;
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: gen_oplog [--entries N] [--docs N] [--seed S] -o FILE\n"
	    "  writes N (default 1000000) oplog entries shaped like a MongoDB 6.0 primary's:\n"
	    "  ~50%% inserts, 40%% $v:2 updates, 10%% deletes over a hot set of --docs\n"
	    "  (default 100000) documents; same seed (default 1), same bytes.\n");
}

static int
parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -1;
	*out = v;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "entries", required_argument, NULL, 'n' },
		{ "docs", required_argument, NULL, 'd' },
		{ "seed", required_argument, NULL, 's' },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t entries = 1000000, ndocs = 100000, seed = 1;
	const char *out = NULL;
	int c, rc = 1;

	while ((c = getopt_long(argc, argv, "n:d:s:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (parse_u64(optarg, &entries))
				goto bad;
			break;
		case 'd':
			if (parse_u64(optarg, &ndocs) || ndocs == 0 || ndocs > UINT32_MAX / 2)
				goto bad;
			break;
		case 's':
			if (parse_u64(optarg, &seed))
				goto bad;
			break;
		case 'o':
			out = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (!out || optind != argc)
		goto bad;

	FILE *f = strcmp(out, "-") == 0 ? stdout : fopen(out, "wb");
	if (!f) {
		fprintf(stderr, "gen_oplog: unable to open '%s': %s\n", out, strerror(errno));
		return 1;
	}
	static char fbuf[1 << 20];
	setvbuf(f, fbuf, _IOFBF, sizeof fbuf);

	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		rs[i] = splitmix64(&x);

	struct gen g;
	memset(&g, 0, sizeof g);
	g.ndocs = (uint32_t)ndocs;
	bson_init(&g.b);
	g.hot = calloc(g.ndocs, sizeof *g.hot);
	if (!g.hot) {
		fprintf(stderr, "gen_oplog: out of memory\n");
		goto out;
	}
	for (int i = 0; i < 16; i++)
		g.ui[i] = (uint8_t)rnd();
	g.ui[6] = (uint8_t)((g.ui[6] & 0x0f) | 0x40);   /* UUID v4 */
	g.ui[8] = (uint8_t)((g.ui[8] & 0x3f) | 0x80);
	for (int i = 0; i < 5; i++)
		g.oid_proc[i] = (uint8_t)rnd();
	g.oid_counter = (uint32_t)rnd() & 0xffffff;
	g.sec = START_SEC + (uint32_t)rnd_below(86400 * 30);
	g.per_sec = rnd_range(1000, 5000);
	g.inc = rnd_below(g.per_sec);   /* start mid-second, as a dump would */

	for (uint64_t n = 0; n < entries; n++) {
		uint32_t r = rnd_below(100);
		struct doc *d = NULL;
		next_ts(&g);
		if (r >= 50)
			d = pick_live(&g);
		if (!d)
			gen_insert(&g);
		else if (r < 90)
			gen_update(&g, d);
		else
			gen_delete(&g, d);
		if (fwrite(bson_get_data(&g.b), 1, g.b.len, f) != g.b.len) {
			fprintf(stderr, "gen_oplog: write to '%s' failed: %s\n", out, strerror(errno));
			goto out;
		}
	}
	if (fflush(f) != 0) {
		fprintf(stderr, "gen_oplog: write to '%s' failed: %s\n", out, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	bson_destroy(&g.b);
	free(g.hot);
	if (f != stdout && fclose(f) != 0 && rc == 0) {
		fprintf(stderr, "gen_oplog: write to '%s' failed: %s\n", out, strerror(errno));
		rc = 1;
	}
	return rc;
bad:
	usage(stderr);
	return 2;
}
