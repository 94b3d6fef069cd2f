/*
 * cmd.c — command dispatch, sessions, retryable writes, transactions, CRUD,
 * DDL and their oplog entries.
 *
 * Oplog entry layout of a 6.0/7.0 primary (OplogEntryBase in
 * src/mongo/db/repl/oplog_entry.idl: OperationSessionInfo is chained first,
 * then DurableReplOperation, then ts t v wall, then stmtId prevOpTime …):
 *   [lsid txnNumber] op ns ui o [o2] ts t v wall [stmtId prevOpTime]
 * as in the 5.0 retryable $v:2 updates of
 * ../shared/oplog-samples/mongorestore_testdata_timeseries_tests_*.bson and the
 * 2023 entries in text-excerpts.md §D.  Transactions: one applyOps entry on
 * admin.$cmd {lsid txnNumber op ns o ts t v wall prevOpTime} (§D, third
 * entry), inner ops {op ns ui o o2?}.
 */
#include "sim.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

/* sha256("") — the lsid.uid of an unauthenticated session */
static const uint8_t EMPTY_UID[32] = {
	0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
	0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
};

struct ctx {
	struct sim_conn *conn;
	const bson_t *cmd;
	const char *db;
	const char *name;
	bson_t *reply;
	int code;
	char errmsg[1024];
	const char *label;
	bson_t *err_extra;         /* extra fields for the error reply */
	struct sim_session *sess;
	bool has_txn_number;
	int64_t txn_number;
	bool in_txn;
	struct sim_txn *txn;
	bool retryable;
	bool applyops;
	const bson_t *query;       /* the update's filter, for the positional $ */
	int32_t stmt;
};

static int err(struct ctx *x, int code, const char *fmt, ...) BSON_GNUC_PRINTF(3, 4);
static int err(struct ctx *x, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(x->errmsg, sizeof x->errmsg, fmt, ap);
	va_end(ap);
	/* messages echo client strings: keep the reply valid UTF-8 */
	if (!bson_utf8_validate(x->errmsg, strlen(x->errmsg), false))
		for (char *p = x->errmsg; *p; p++) if ((unsigned char)*p >= 0x80) *p = '?';
	x->code = code;
	return code;
}

static const char *code_name(int code)
{
	switch (code) {
	case E_BADVALUE: return "BadValue";
	case E_NOSUCHKEY: return "NoSuchKey";
	case E_FAILEDTOPARSE: return "FailedToParse";
	case E_TYPEMISMATCH: return "TypeMismatch";
	case E_ILLEGALOP: return "IllegalOperation";
	case E_NSNOTFOUND: return "NamespaceNotFound";
	case E_INDEXNOTFOUND: return "IndexNotFound";
	case E_PATHNOTVIABLE: return "PathNotViable";
	case E_CONFLICTINGUPDATEOPS: return "ConflictingUpdateOperators";
	case E_CURSORNOTFOUND: return "CursorNotFound";
	case E_NAMESPACEEXISTS: return "NamespaceExists";
	case E_MAXTIMEMS: return "MaxTimeMSExpired";
	case E_DOLLARPREFIXED: return "DollarPrefixedFieldName";
	case E_CMDNOTFOUND: return "CommandNotFound";
	case E_IMMUTABLEFIELD: return "ImmutableField";
	case E_INVALIDOPTIONS: return "InvalidOptions";
	case E_INVALIDNS: return "InvalidNamespace";
	case E_INDEXOPTIONSCONFLICT: return "IndexOptionsConflict";
	case E_INDEXKEYSPECSCONFLICT: return "IndexKeySpecsConflict";
	case E_WRITECONFLICT: return "WriteConflict";
	case E_CAPPEDPOSITIONLOST: return "CappedPositionLost";
	case E_NOSUCHTXN: return "NoSuchTransaction";
	case E_TXNTOOOLD: return "TransactionTooOld";
	case E_OPNOTSUPPORTEDINTXN: return "OperationNotSupportedInTransaction";
	case E_DUPKEY: return "DuplicateKey";
	case E_NOTWRITABLEPRIMARY: return "NotWritablePrimary";
	case E_INTERRUPTEDREPL: return "InterruptedDueToReplStateChange";
	case 256: return "TransactionCommitted";
	case 17419: return "Location17419";
	case 13: return "Unauthorized";
	case 239: return "SnapshotTooOld";
	case 10334: return "BSONObjectTooLarge";
	default: {
		/* assertion codes without a name are reported as Location<code> */
		static __thread char buf[32];
		snprintf(buf, sizeof buf, "Location%d", code);
		return buf;
	}
	}
}

static void append_ts(bson_t *b, const char *k, uint64_t ts)
{
	bson_append_timestamp(b, k, -1, (uint32_t)(ts >> 32), (uint32_t)ts);
}

static void append_optime(bson_t *b, const char *k, uint64_t ts, int64_t t)
{
	bson_t o;
	bson_append_document_begin(b, k, -1, &o);
	append_ts(&o, "ts", ts);
	BSON_APPEND_INT64(&o, "t", t);
	bson_append_document_end(b, &o);
}

static void append_uuid(bson_t *b, const char *k, const uint8_t *u)
{
	bson_append_binary(b, k, -1, BSON_SUBTYPE_UUID, u, 16);
}

static void append_cluster_time(bson_t *b)
{
	bson_t ct, sig;
	uint8_t zero[20] = { 0 };
	BSON_APPEND_DOCUMENT_BEGIN(b, "$clusterTime", &ct);
	append_ts(&ct, "clusterTime", sim.oplog.last_ts);
	BSON_APPEND_DOCUMENT_BEGIN(&ct, "signature", &sig);
	bson_append_binary(&sig, "hash", 4, BSON_SUBTYPE_BINARY, zero, 20);
	BSON_APPEND_INT64(&sig, "keyId", 0);
	bson_append_document_end(&ct, &sig);
	bson_append_document_end(b, &ct);
	append_ts(b, "operationTime", sim.oplog.last_ts);
}

static const char *first_key(const bson_t *b)
{
	bson_iter_t it;
	return bson_iter_init(&it, b) && bson_iter_next(&it) ? bson_iter_key(&it) : "";
}

static bool doc_of(const bson_iter_t *it, bson_t *out)
{
	if (!BSON_ITER_HOLDS_DOCUMENT(it) && !BSON_ITER_HOLDS_ARRAY(it)) return false;
	const uint8_t *d; uint32_t l;
	if (BSON_ITER_HOLDS_DOCUMENT(it)) bson_iter_document(it, &l, &d);
	else bson_iter_array(it, &l, &d);
	return bson_init_static(out, d, l);
}

static bool get_doc(const bson_t *b, const char *k, bson_t *out)
{
	bson_iter_t it;
	return bson_iter_init_find(&it, b, k) && doc_of(&it, out);
}

static const char *get_str(const bson_t *b, const char *k)
{
	bson_iter_t it;
	if (bson_iter_init_find(&it, b, k) && BSON_ITER_HOLDS_UTF8(&it)) return bson_iter_utf8(&it, NULL);
	return NULL;
}

static bool get_bool(const bson_t *b, const char *k, bool dflt)
{
	bson_iter_t it;
	if (bson_iter_init_find(&it, b, k)) return bson_iter_as_bool(&it);
	return dflt;
}

static int64_t get_int(const bson_t *b, const char *k, int64_t dflt)
{
	bson_iter_t it;
	if (bson_iter_init_find(&it, b, k) && sim_is_number(bson_iter_type(&it))) return sim_int(&it);
	return dflt;
}

static void key_str(char *buf, size_t n, uint32_t i, const char **out)
{
	bson_uint32_to_string(i, out, buf, n);
}

/* renders {k: v, ...} the way mongod's BSONObj::toString does in E11000
 * messages: { _id: 1 }, { a: "x" }, { _id: ObjectId('...') } */
static char *value_json(const bson_t *kv)
{
	bson_string_t *s = bson_string_new("{ ");
	bson_iter_t it;
	bool first = true;
	bson_iter_init(&it, kv);
	while (bson_iter_next(&it)) {
		bson_string_append_printf(s, "%s%s: ", first ? "" : ", ", bson_iter_key(&it));
		first = false;
		switch (bson_iter_type(&it)) {
		case BSON_TYPE_INT32: bson_string_append_printf(s, "%d", bson_iter_int32(&it)); break;
		case BSON_TYPE_INT64: bson_string_append_printf(s, "%lld", (long long)bson_iter_int64(&it)); break;
		case BSON_TYPE_DOUBLE: bson_string_append_printf(s, "%g", bson_iter_double(&it)); break;
		case BSON_TYPE_UTF8: bson_string_append_printf(s, "\"%s\"", bson_iter_utf8(&it, NULL)); break;
		case BSON_TYPE_NULL: bson_string_append(s, "null"); break;
		case BSON_TYPE_BOOL: bson_string_append(s, bson_iter_bool(&it) ? "true" : "false"); break;
		case BSON_TYPE_OID: {
			char hex[25];
			bson_oid_to_string(bson_iter_oid(&it), hex);
			bson_string_append_printf(s, "ObjectId('%s')", hex);
			break;
		}
		default: {
			bson_t one = BSON_INITIALIZER;
			bson_append_iter(&one, "v", 1, &it);
			char *j = bson_as_relaxed_extended_json(&one, NULL);
			/* strip the {"v" : ...} wrapper */
			size_t l = strlen(j);
			if (l > 9) { j[l - 2] = 0; bson_string_append(s, j + 8); }
			bson_free(j);
			bson_destroy(&one);
		}
		}
	}
	bson_string_append(s, " }");
	return bson_string_free(s, false);
}

static bool writable(void)
{
	sim_check_stepup();
	return !sim.stepped_down;
}

void sim_check_stepup(void)
{
	if (sim.stepped_down && sim_mono_ms() >= sim.stepdown_until_ms) {
		sim.stepped_down = false;
		sim.term++;
		sim_election_id();
		sim_noop("new primary");
		sim_log("stepped up, term %lld", (long long)sim.term);
	}
}

/* ---- sessions ---- */

static struct sim_session *session_get(const uint8_t *id)
{
	for (struct sim_session *s = sim.sessions; s; s = s->next)
		if (!memcmp(s->id, id, 16)) return s;
	struct sim_session *s = calloc(1, sizeof *s);
	memcpy(s->id, id, 16);
	s->txn_number = -1;
	s->retry_txn = -1;
	s->next = sim.sessions;
	sim.sessions = s;
	return s;
}

static void txn_reset(struct sim_txn *t)
{
	for (size_t i = 0; i < t->nops; i++) bson_destroy(t->ops[i]);
	free(t->ops);
	free(t->w);
	uint8_t id[16];
	memcpy(id, t->lsid, 16);
	memset(t, 0, sizeof *t);
	memcpy(t->lsid, id, 16);
}

void sim_sessions_free(void)
{
	while (sim.sessions) {
		struct sim_session *s = sim.sessions;
		sim.sessions = s->next;
		txn_reset(&s->txn);
		if (s->retry_reply) bson_destroy(s->retry_reply);
		free(s);
	}
}

/* ---- cursors ---- */

static void cursor_free(struct sim_cursor *c)
{
	for (size_t i = c->pos; i < c->ndocs; i++) bson_destroy(c->docs[i]);
	free(c->docs);
	if (c->filter) bson_destroy(c->filter);
	bson_free(c->ns);
	free(c);
}

void sim_cursors_free(void)
{
	while (sim.cursors) {
		struct sim_cursor *c = sim.cursors;
		sim.cursors = c->next;
		cursor_free(c);
	}
}

static struct sim_cursor *cursor_find(int64_t id)
{
	for (struct sim_cursor *c = sim.cursors; c; c = c->next) if (c->id == id) return c;
	return NULL;
}

static void cursor_kill(struct sim_cursor *c)
{
	for (struct sim_cursor **pp = &sim.cursors; *pp; pp = &(*pp)->next) {
		if (*pp == c) { *pp = c->next; cursor_free(c); return; }
	}
}

/* ---- the oplog entries ---- */

static void append_lsid(bson_t *e, const struct sim_session *s)
{
	bson_t l;
	BSON_APPEND_DOCUMENT_BEGIN(e, "lsid", &l);
	append_uuid(&l, "id", s->id);
	bson_append_binary(&l, "uid", 3, BSON_SUBTYPE_BINARY, EMPTY_UID, 32);
	bson_append_document_end(e, &l);
}

/* writes one CRUD/DDL entry, or buffers it inside the transaction */
static void log_op(struct ctx *x, const char *op, const char *ns, const uint8_t *ui,
                   const bson_t *o, const bson_t *o2, const char *retry_image)
{
	if (x->txn) {
		bson_t *in = bson_new();
		BSON_APPEND_UTF8(in, "op", op);
		BSON_APPEND_UTF8(in, "ns", ns);
		if (ui) append_uuid(in, "ui", ui);
		BSON_APPEND_DOCUMENT(in, "o", o);
		if (o2) BSON_APPEND_DOCUMENT(in, "o2", o2);
		struct sim_txn *t = x->txn;
		if (t->nops == t->capops) {
			t->capops = t->capops ? t->capops * 2 : 8;
			t->ops = realloc(t->ops, t->capops * sizeof *t->ops);
		}
		t->ops[t->nops++] = in;
		return;
	}
	int64_t wall;
	uint64_t ts = sim_next_ts(&wall);
	bson_t *ep = bson_sized_new(o->len + (o2 ? o2->len : 0) + 256);
	bool retry = x->retryable && x->sess;
	if (retry) {
		append_lsid(ep, x->sess);
		BSON_APPEND_INT64(ep, "txnNumber", x->txn_number);
	}
	BSON_APPEND_UTF8(ep, "op", op);
	BSON_APPEND_UTF8(ep, "ns", ns);
	if (ui) append_uuid(ep, "ui", ui);
	BSON_APPEND_DOCUMENT(ep, "o", o);
	if (o2) BSON_APPEND_DOCUMENT(ep, "o2", o2);
	append_ts(ep, "ts", ts);
	BSON_APPEND_INT64(ep, "t", sim.term);
	BSON_APPEND_INT64(ep, "v", 2);
	BSON_APPEND_DATE_TIME(ep, "wall", wall);
	if (retry) {
		BSON_APPEND_INT32(ep, "stmtId", x->stmt);
		append_optime(ep, "prevOpTime", x->sess->prev_ts, x->sess->prev_ts ? x->sess->prev_t : -1);
		if (retry_image) BSON_APPEND_UTF8(ep, "needsRetryImage", retry_image);
		x->sess->prev_ts = ts;
		x->sess->prev_t = sim.term;
	}
	sim_oplog_push(ep, ts, wall);
}

static void log_cmd(struct ctx *x, const char *db, const uint8_t *ui, const bson_t *o, const bson_t *o2)
{
	char ns[512];
	snprintf(ns, sizeof ns, "%s.$cmd", db);
	struct sim_txn *t = x->txn;
	bool r = x->retryable;
	if (!t || x->applyops || strcmp(first_key(o), "create")) x->txn = NULL;
	x->retryable = false;
	log_op(x, "c", ns, ui, o, o2, NULL);
	x->txn = t;
	x->retryable = r;
}

/* ---- collections ---- */

#define SIM_WAIT (-2)

static bool is_local(const char *db) { return !strcmp(db, "local"); }

static void append_id_index(bson_t *b)
{
	bson_t ix, k;
	BSON_APPEND_DOCUMENT_BEGIN(b, "idIndex", &ix);
	BSON_APPEND_INT32(&ix, "v", 2);
	BSON_APPEND_DOCUMENT_BEGIN(&ix, "key", &k);
	BSON_APPEND_INT32(&k, "_id", 1);
	bson_append_document_end(&ix, &k);
	BSON_APPEND_UTF8(&ix, "name", "_id_");
	bson_append_document_end(b, &ix);
}

static int check_names(struct ctx *x, const char *db, const char *name)
{
	if (!*db || strpbrk(db, "/\\. \"$"))
		return err(x, E_INVALIDNS, "Invalid database name: '%s'", db);
	if (!bson_utf8_validate(db, strlen(db), false))
		return err(x, E_INVALIDNS, "Invalid database name");
	if (!name || !*name || strchr(name, '$') || (name[0] == '.') || !bson_utf8_validate(name, strlen(name), false))
		return err(x, E_INVALIDNS, "Invalid collection name: %s", name ? name : "");
	return 0;
}

static struct sim_coll *coll_create(struct ctx *x, const char *db, const char *name, const bson_t *opts)
{
	struct sim_coll *c = sim_coll_new(db, name, opts, NULL);
	if (!is_local(db)) {
		bson_t o = BSON_INITIALIZER;
		BSON_APPEND_UTF8(&o, "create", name);
		if (opts) {
			bson_iter_t it;
			bson_iter_init(&it, opts);
			while (bson_iter_next(&it)) bson_append_iter(&o, NULL, 0, &it);
		}
		append_id_index(&o);
		log_cmd(x, db, c->uuid, &o, NULL);
		bson_destroy(&o);
	}
	return c;
}

static int coll_for_write(struct ctx *x, const char *name, struct sim_coll **out)
{
	int rc = check_names(x, x->db, name);
	if (rc) return rc;
	if (is_local(x->db) && !strcmp(name, "oplog.rs"))
		return err(x, E_ILLEGALOP, "cannot write to 'local.oplog.rs'");
	*out = sim_coll_get(x->db, name);
	if (!*out) *out = coll_create(x, x->db, name, NULL);
	return 0;
}

/* ---- document locks and writes ---- */

static int lock_check(struct ctx *x, struct sim_slot *s)
{
	if (s->owner && s->owner != x->txn) {
		if (!x->txn) return SIM_WAIT;
		return err(x, E_WRITECONFLICT, "Write conflict during plan execution and yielding is disabled. :: Please retry your write operation or multi-document transaction.");
	}
	if (x->txn && s->ver > x->txn->snapshot)
		return err(x, E_WRITECONFLICT, "Write conflict during plan execution and yielding is disabled. :: Please retry your write operation or multi-document transaction.");
	return 0;
}

static void txn_track(struct sim_txn *t, struct sim_coll *c, size_t slot)
{
	if (t->nw == t->capw) {
		t->capw = t->capw ? t->capw * 2 : 16;
		t->w = realloc(t->w, t->capw * sizeof *t->w);
	}
	t->w[t->nw].c = c;
	t->w[t->nw].slot = slot;
	t->nw++;
}

static void slot_write(struct ctx *x, struct sim_coll *c, size_t slot, bson_t *doc)
{
	struct sim_slot *s = &c->slots[slot];
	if (x->txn) {
		if (s->owner != x->txn) {
			s->owner = x->txn;
			s->committed = s->doc;
			s->doc = doc;
			txn_track(x->txn, c, slot);
		} else {
			if (s->doc) bson_destroy(s->doc);
			s->doc = doc;
		}
		sim_uidx_add(c, slot, doc);
		return;
	}
	if (doc) {
		uint64_t seq = ++sim.commit_seq;
		if (sim.active_txns > 0 && s->doc) {
			/* an open transaction's snapshot may still need this version */
			sim_keep_old(c, slot, s->doc, s->ver, seq);
			s->doc = NULL;
		}
		sim_coll_set(c, slot, doc);
		s->ver = seq;
	} else if (sim.active_txns > 0) {
		/* deleted, but older snapshots still see it: keep it as an old version */
		uint64_t seq = ++sim.commit_seq;
		sim_keep_old(c, slot, s->doc, s->ver, seq);
		s->doc = NULL;
		s->ver = seq;
		c->live--;
		c->dead++;
	} else {
		sim_coll_del(c, slot);   /* compaction waits for the end of the command */
	}
}

static size_t slot_insert(struct ctx *x, struct sim_coll *c, bson_t *doc)
{
	size_t slot = sim_coll_add(c, doc);
	struct sim_slot *s = &c->slots[slot];
	if (x->txn) {
		s->owner = x->txn;
		txn_track(x->txn, c, slot);
	} else {
		s->ver = ++sim.commit_seq;
	}
	return slot;
}

/* waits for transactions to release their locks; false on timeout */
static bool wait_locks(int64_t deadline)
{
	int64_t now = sim_mono_ms();
	if (now >= deadline || sim.stop) return false;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t d = deadline - now < 100 ? deadline - now : 100;
	ts.tv_nsec += (long)(d * 1000000);
	while (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
	if (sim.signal_pending) { sim.signal_pending = false; pthread_cond_broadcast(&sim.cond); }
	pthread_cond_timedwait(&sim.cond, &sim.mu, &ts);
	return true;
}

static void txn_release(struct sim_txn *t, bool commit)
{
	uint64_t seq = ++sim.commit_seq;
	for (size_t i = 0; i < t->nw; i++) {
		struct sim_coll *c = t->w[i].c;
		struct sim_slot *s = &c->slots[t->w[i].slot];
		if (s->owner != t) continue;
		if (commit) {
			if (!s->doc && s->committed && sim.active_txns > 1) {
				sim_keep_old(c, t->w[i].slot, s->committed, s->ver, seq);
				s->committed = NULL;
				s->owner = NULL;
				s->ver = seq;
				c->live--;
				c->dead++;
				continue;
			}
			if (!s->doc) { sim_coll_del(c, t->w[i].slot); continue; }
			if (s->committed && sim.active_txns > 1) sim_keep_old(c, t->w[i].slot, s->committed, s->ver, seq);
			else if (s->committed) bson_destroy(s->committed);
			s->committed = NULL;
			s->owner = NULL;
			s->ver = seq;
		} else {
			if (!s->committed) { sim_coll_del(c, t->w[i].slot); continue; }
			if (s->doc) bson_destroy(s->doc);
			s->doc = s->committed;
			s->committed = NULL;
			s->owner = NULL;
		}
	}
	pthread_cond_broadcast(&sim.cond);
}

static void txn_abort(struct sim_txn *t)
{
	if (!t->active) return;
	txn_release(t, false);
	int64_t n = t->txn_number;
	txn_reset(t);
	t->txn_number = n;
	t->aborted = true;
	sim.active_txns--;
	sim_gc_old();
}

/* a collection is going away: abort every transaction that wrote to it */
static void abort_txns_on(struct sim_coll *c)
{
	for (struct sim_session *s = sim.sessions; s; s = s->next) {
		if (!s->txn.active) continue;
		for (size_t i = 0; i < s->txn.nw; i++)
			if (s->txn.w[i].c == c) { txn_abort(&s->txn); break; }
	}
}

/* ---- unique indexes ---- */

static bool index_unique(const bson_t *spec)
{
	return get_bool(spec, "unique", false);
}

static void index_key_value(const bson_t *spec, const bson_t *doc, bson_t *kv)
{
	bson_t key;
	get_doc(spec, "key", &key);
	bson_iter_t k;
	bson_iter_init(&k, &key);
	while (bson_iter_next(&k)) {
		bson_iter_t v;
		if (sim_lookup(doc, bson_iter_key(&k), &v)) bson_append_iter(kv, bson_iter_key(&k), -1, &v);
		else bson_append_null(kv, bson_iter_key(&k), -1);
	}
}

static int dup_error(struct ctx *x, struct sim_coll *c, const bson_t *spec, const bson_t *kv)
{
	bson_t key;
	get_doc(spec, "key", &key);
	char *j = value_json(kv);
	err(x, E_DUPKEY, "E11000 duplicate key error collection: %s index: %s dup key: %s", c->ns,
	    get_str(spec, "name"), j);
	bson_free(j);
	if (x->err_extra) bson_destroy(x->err_extra);
	x->err_extra = bson_new();
	BSON_APPEND_DOCUMENT(x->err_extra, "keyPattern", &key);
	BSON_APPEND_DOCUMENT(x->err_extra, "keyValue", kv);
	return E_DUPKEY;
}

/* is doc in the index? sparse indexes skip documents without any key
 * field, partial indexes those not matching partialFilterExpression */
static bool index_covers(const bson_t *spec, const bson_t *doc)
{
	bson_t pfe, key;
	if (get_doc(spec, "partialFilterExpression", &pfe)) {
		const char *e = NULL;
		if (!sim_match(doc, &pfe, &e)) return false;
	}
	if (get_bool(spec, "sparse", false) && get_doc(spec, "key", &key)) {
		bson_iter_t k, v;
		bson_iter_init(&k, &key);
		while (bson_iter_next(&k))
			if (sim_lookup(doc, bson_iter_key(&k), &v)) return true;
		return false;
	}
	return true;
}

/* single-field keys are multikey: an array contributes each element;
 * a missing field is keyed as null */
static bool one_clash(const bson_iter_t *xa, const bson_iter_t *b, bool hb, bool arr_b)
{
	if (!hb) return BSON_ITER_HOLDS_NULL(xa);
	if (!arr_b)
		return sim_canon(bson_iter_type(xa)) == sim_canon(bson_iter_type(b)) && sim_cmp_iter(xa, b) == 0;
	bson_iter_t eb;
	bson_iter_recurse(b, &eb);
	while (bson_iter_next(&eb))
		if (sim_canon(bson_iter_type(xa)) == sim_canon(bson_iter_type(&eb)) && sim_cmp_iter(xa, &eb) == 0) return true;
	return false;
}

static bool key_values_clash(const bson_iter_t *a, bool ha, const bson_iter_t *b, bool hb, bson_iter_t *hit,
                             bool *hit_null)
{
	bool arr_b = hb && BSON_ITER_HOLDS_ARRAY(b);
	*hit_null = false;
	if (!ha) {
		/* null against null (or missing), or against an array holding null */
		bool r = !hb || BSON_ITER_HOLDS_NULL(b);
		if (!r && arr_b) {
			bson_iter_t eb;
			bson_iter_recurse(b, &eb);
			while (bson_iter_next(&eb)) if (BSON_ITER_HOLDS_NULL(&eb)) r = true;
		}
		*hit_null = r;
		return r;
	}
	if (!BSON_ITER_HOLDS_ARRAY(a)) {
		if (one_clash(a, b, hb, arr_b)) { *hit = *a; return true; }
		return false;
	}
	bson_iter_t ea;
	bson_iter_recurse(a, &ea);
	while (bson_iter_next(&ea))
		if (one_clash(&ea, b, hb, arr_b)) { *hit = ea; return true; }
	return false;
}

struct uprobe {
	struct ctx *x; struct sim_coll *c; size_t i; long self; const char *path;
	bson_iter_t mine; bool hm; int rc;
};

/* is the candidate slot's visible document a duplicate? (sets the error) */
static bool uprobe_slot(uint32_t slot, void *arg)
{
	struct uprobe *p = arg;
	if ((long)slot == p->self || slot >= p->c->nslots) return false;
	const bson_t *d = sim_visible(&p->c->slots[slot], p->x->txn);
	if (!d || !index_covers(p->c->indexes[p->i], d)) return false;
	bson_iter_t theirs, hit;
	bool hit_null;
	bool ht = sim_lookup(d, p->path, &theirs);
	if (!key_values_clash(&p->mine, p->hm, &theirs, ht, &hit, &hit_null)) return false;
	bson_t kv = BSON_INITIALIZER;
	if (hit_null) bson_append_null(&kv, p->path, -1);
	else bson_append_iter(&kv, p->path, -1, &hit);
	p->rc = dup_error(p->x, p->c, p->c->indexes[p->i], &kv);
	bson_destroy(&kv);
	return true;
}

static int check_unique(struct ctx *x, struct sim_coll *c, const bson_t *doc, long self)
{
	for (size_t i = 1; i < c->nidx; i++) {
		if (!index_unique(c->indexes[i]) || !index_covers(c->indexes[i], doc)) continue;
		bson_t key;
		get_doc(c->indexes[i], "key", &key);
		bson_iter_t kf, more;
		bool single = bson_iter_init(&kf, &key) && bson_iter_next(&kf);
		if (single) { more = kf; single = !bson_iter_next(&more); }
		if (single) {
			struct uprobe p;
			memset(&p, 0, sizeof p);
			p.x = x; p.c = c; p.i = i; p.self = self; p.path = bson_iter_key(&kf);
			p.hm = sim_lookup(doc, p.path, &p.mine);
			bool found = false;
			struct sim_uidx *u = i < c->nuidx ? c->uidx[i] : NULL;
			if (!u) {
				for (size_t s = 0; s < c->nslots && !found; s++) found = uprobe_slot((uint32_t)s, &p);
			} else if (!p.hm) {
				found = sim_uidx_probe(u, sim_null_hash(), uprobe_slot, &p);
			} else if (BSON_ITER_HOLDS_ARRAY(&p.mine)) {
				bson_iter_t e;
				bson_iter_recurse(&p.mine, &e);
				while (!found && bson_iter_next(&e)) found = sim_uidx_probe(u, sim_value_hash(&e), uprobe_slot, &p);
			} else {
				found = sim_uidx_probe(u, sim_value_hash(&p.mine), uprobe_slot, &p);
			}
			if (found) return p.rc;
			continue;
		}
		bson_t kv = BSON_INITIALIZER;
		index_key_value(c->indexes[i], doc, &kv);
		for (size_t s = 0; s < c->nslots; s++) {
			if ((long)s == self) continue;
			const bson_t *d = sim_visible(&c->slots[s], x->txn);
			if (!d || !index_covers(c->indexes[i], d)) continue;
			bson_t ok = BSON_INITIALIZER;
			index_key_value(c->indexes[i], d, &ok);
			bool same = sim_cmp_docs(bson_get_data(&kv), kv.len, bson_get_data(&ok), ok.len) == 0;
			bson_destroy(&ok);
			if (same) {
				int rc = dup_error(x, c, c->indexes[i], &kv);
				bson_destroy(&kv);
				return rc;
			}
		}
		bson_destroy(&kv);
	}
	return 0;
}

static int id_dup_error(struct ctx *x, struct sim_coll *c, const bson_iter_t *id)
{
	bson_t kv = BSON_INITIALIZER;
	bson_append_iter(&kv, "_id", 3, id);
	int rc = dup_error(x, c, c->indexes[0], &kv);
	bson_destroy(&kv);
	return rc;
}

/* ---- insert ---- */

static bson_t *with_id_first(const bson_t *in, int *code)
{
	bson_iter_t it;
	bson_t *out;
	*code = 0;
	if (bson_iter_init_find(&it, in, "_id")) {
		if (BSON_ITER_HOLDS_ARRAY(&it) || BSON_ITER_HOLDS_REGEX(&it)) { *code = E_BADVALUE; return NULL; }
		bson_iter_t f;
		bson_iter_init(&f, in);
		bson_iter_next(&f);
		if (!strcmp(bson_iter_key(&f), "_id")) return bson_copy(in);
		out = bson_new();
		bson_append_iter(out, "_id", 3, &it);
		bson_copy_to_excluding_noinit(in, out, "_id", NULL);
		return out;
	}
	out = bson_new();
	bson_oid_t oid;
	bson_oid_init(&oid, NULL);
	BSON_APPEND_OID(out, "_id", &oid);
	bson_copy_to_excluding_noinit(in, out, "", NULL);
	return out;
}

static int insert_one(struct ctx *x, struct sim_coll *c, const bson_t *in)
{
	int code;
	bson_t *doc = with_id_first(in, &code);
	if (!doc) return err(x, E_BADVALUE, "can't use an array for _id");
	if (doc->len > 16 * 1024 * 1024 + 16 * 1024) { bson_destroy(doc); return err(x, 10334, "object to insert too large"); }
	bson_iter_t id;
	bson_iter_init_find(&id, doc, "_id");
	long slot = sim_coll_find_id(c, &id);
	int rc;
	if (slot >= 0) {
		struct sim_slot *s = &c->slots[slot];
		if (s->owner && s->owner != x->txn) {
			bson_destroy(doc);
			return x->txn ? lock_check(x, s) : SIM_WAIT;
		}
		bool dead = !s->owner && !s->doc;    /* deleted, kept for old snapshots */
		if (dead && x->txn) {
			/* simplification: mongod would allow it when the delete precedes the snapshot */
			bson_destroy(doc);
			return err(x, E_WRITECONFLICT, "Write conflict during plan execution and yielding is disabled. :: Please retry your write operation or multi-document transaction.");
		}
		if (!dead && x->txn && s->owner != x->txn && s->ver > x->txn->snapshot) {
			/* the document was inserted after the transaction's snapshot: WiredTiger
			 * reports the _id index insert as a write conflict, not a duplicate
			 * (mongod turns WT_ROLLBACK into WriteConflictException, a
			 * TransientTransactionError) */
			bson_destroy(doc);
			return lock_check(x, s);
		}
		if (!dead && !(s->owner == x->txn && x->txn && !s->doc)) {
			rc = id_dup_error(x, c, &id);
			bson_destroy(doc);
			return rc;
		}
		if (dead && !x->txn) { c->live++; c->dead--; }
		if ((rc = check_unique(x, c, doc, slot))) { bson_destroy(doc); return rc; }
		slot_write(x, c, (size_t)slot, doc);
	} else {
		if ((rc = check_unique(x, c, doc, -1))) { bson_destroy(doc); return rc; }
		slot_insert(x, c, doc);
	}
	if (!is_local(c->db)) log_op(x, "i", c->ns, c->uuid, doc, NULL, NULL);
	return 0;
}

/* inside a transaction a transient error fails the whole command
 * (write_ops_exec.cpp handleError) instead of becoming a writeError */
static bool fatal_in_txn(struct ctx *x)
{
	return x->txn && (x->code == E_WRITECONFLICT || x->code == E_MAXTIMEMS);
}

static void add_write_error(struct ctx *x, bson_t *arr, uint32_t *nerr, int32_t index)
{
	char kb[16]; const char *kp;
	key_str(kb, sizeof kb, (*nerr)++, &kp);
	bson_t e;
	bson_append_document_begin(arr, kp, -1, &e);
	BSON_APPEND_INT32(&e, "index", index);
	BSON_APPEND_INT32(&e, "code", x->code);
	if (x->err_extra) {
		bson_iter_t it;
		bson_iter_init(&it, x->err_extra);
		while (bson_iter_next(&it)) bson_append_iter(&e, NULL, 0, &it);
		bson_destroy(x->err_extra);
		x->err_extra = NULL;
	}
	BSON_APPEND_UTF8(&e, "errmsg", x->errmsg);
	bson_append_document_end(arr, &e);
	x->code = 0;
}

static int64_t deadline_of(struct ctx *x)
{
	int64_t m = get_int(x->cmd, "maxTimeMS", 0);
	return sim_mono_ms() + (m > 0 ? m : 30000);
}

static int not_primary(struct ctx *x)
{
	return err(x, E_NOTWRITABLEPRIMARY, "not primary");
}

/* common tail of insert/update/delete: write errors inside a transaction abort it */
/* the WriteCommandReplyBase fields after n, in write_ops.idl order:
 * electionId, opTime (a replica-set member's), writeErrors; write errors
 * inside a transaction abort it */
static void finish_batch(struct ctx *x, bson_t *werrs, uint32_t nerr)
{
	if (!x->txn) {
		BSON_APPEND_OID(x->reply, "electionId", &sim.election_id);
		append_optime(x->reply, "opTime", sim.oplog.last_ts, sim.term);
	}
	if (nerr) {
		BSON_APPEND_ARRAY(x->reply, "writeErrors", werrs);
		if (x->txn) txn_abort(x->txn);
	}
	bson_destroy(werrs);
}

static int cmd_insert(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	bson_t docs;
	if (!get_doc(x->cmd, "documents", &docs)) return err(x, E_FAILEDTOPARSE, "BSON field 'insert.documents' is missing but a required field");
	if (!writable()) return not_primary(x);
	struct sim_coll *c;
	int rc = coll_for_write(x, name, &c);
	if (rc) return rc;
	bool ordered = get_bool(x->cmd, "ordered", true);
	bson_t werrs = BSON_INITIALIZER;
	uint32_t nerr = 0;
	int32_t n = 0, i = 0;
	int64_t deadline = deadline_of(x);
	bson_iter_t it;
	bson_iter_init(&it, &docs);
	while (bson_iter_next(&it)) {
		bson_t d;
		if (!doc_of(&it, &d)) { err(x, E_TYPEMISMATCH, "documents must be objects"); add_write_error(x, &werrs, &nerr, i++); if (ordered) break; continue; }
		x->stmt = i;
		rc = insert_one(x, c, &d);
		if (rc == SIM_WAIT) {
			if (!wait_locks(deadline)) rc = err(x, E_MAXTIMEMS, "operation exceeded time limit");
			else {
				c = sim_coll_get(x->db, name);
				if (!c && (rc = coll_for_write(x, name, &c))) break;
				bson_iter_t back = it;
				(void)back;
				rc = insert_one(x, c, &d);
				while (rc == SIM_WAIT && wait_locks(deadline)) rc = insert_one(x, c, &d);
				if (rc == SIM_WAIT) rc = err(x, E_MAXTIMEMS, "operation exceeded time limit");
			}
		}
		if (rc && fatal_in_txn(x)) { bson_destroy(&werrs); return rc; }
		if (rc) {
			add_write_error(x, &werrs, &nerr, i);
			if (ordered || x->txn) { i++; break; }
		} else {
			n++;
		}
		i++;
	}
	BSON_APPEND_INT32(x->reply, "n", n);
	finish_batch(x, &werrs, nerr);
	return 0;
}

/* ---- query helpers ---- */

struct slots { size_t *v; size_t n, cap; };

static void slots_push(struct slots *s, size_t v)
{
	if (s->n == s->cap) { s->cap = s->cap ? s->cap * 2 : 16; s->v = realloc(s->v, s->cap * sizeof *s->v); }
	s->v[s->n++] = v;
}

static bool id_only_filter(const bson_t *f, bson_iter_t *id)
{
	bson_iter_t it;
	if (!bson_iter_init(&it, f) || !bson_iter_next(&it)) return false;
	if (strcmp(bson_iter_key(&it), "_id")) return false;
	if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
		bson_iter_t c;
		bson_iter_recurse(&it, &c);
		if (bson_iter_next(&c) && bson_iter_key(&c)[0] == '$') {
			if (strcmp(bson_iter_key(&c), "$eq") || bson_iter_next(&c)) return false;
			bson_iter_recurse(&it, id);
			bson_iter_next(id);
			if (BSON_ITER_HOLDS_DOCUMENT(id) || BSON_ITER_HOLDS_ARRAY(id) || BSON_ITER_HOLDS_REGEX(id)) return false;
			bson_iter_t more = it;
			return !bson_iter_next(&more);
		}
	}
	if (BSON_ITER_HOLDS_ARRAY(&it) || BSON_ITER_HOLDS_REGEX(&it)) return false;
	*id = it;
	bson_iter_t more = it;
	return !bson_iter_next(&more);
}

/* {_id: {$in: [v, ...]}} with plain values (no regex, array or document):
 * *arr is the array.  A real server answers it from the _id index. */
static bool id_in_filter(const bson_t *f, bson_iter_t *arr)
{
	bson_iter_t it, c, v;
	if (!bson_iter_init(&it, f) || !bson_iter_next(&it) || strcmp(bson_iter_key(&it), "_id") ||
	    !BSON_ITER_HOLDS_DOCUMENT(&it))
		return false;
	bson_iter_t more = it;
	if (bson_iter_next(&more)) return false;
	bson_iter_recurse(&it, &c);
	if (!bson_iter_next(&c) || strcmp(bson_iter_key(&c), "$in") || !BSON_ITER_HOLDS_ARRAY(&c)) return false;
	more = c;
	if (bson_iter_next(&more)) return false;
	bson_iter_recurse(&c, &v);
	*arr = v;
	while (bson_iter_next(&v))
		if (BSON_ITER_HOLDS_DOCUMENT(&v) || BSON_ITER_HOLDS_ARRAY(&v) || BSON_ITER_HOLDS_REGEX(&v)) return false;
	return true;
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return x < y ? -1 : x > y;
}

static const bson_t *sort_spec;
static struct sim_coll *sort_coll;
static struct sim_txn *sort_txn;

static int cmp_slots(const void *a, const void *b)
{
	const bson_t *x = sim_visible(&sort_coll->slots[*(const size_t *)a], sort_txn);
	const bson_t *y = sim_visible(&sort_coll->slots[*(const size_t *)b], sort_txn);
	int c = sim_sort_cmp(x, y, sort_spec);
	if (c) return c;
	return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

static int cmp_docs_sort(const void *a, const void *b)
{
	int c = sim_sort_cmp(*(bson_t *const *)a, *(bson_t *const *)b, sort_spec);
	if (c) return c;
	return (*(bson_t *const *)a < *(bson_t *const *)b) ? -1 : 1;
}

/* visible matching slots in natural order (or sorted), at most limit (0 = all) */
static int collect(struct ctx *x, struct sim_coll *c, const bson_t *filter, const bson_t *sort,
                   size_t limit, struct slots *out)
{
	const char *e = NULL;
	bson_iter_t id;
	if (filter && id_only_filter(filter, &id)) {
		long s = sim_coll_find_id(c, &id);
		if (s >= 0 && sim_visible(&c->slots[s], x->txn)) slots_push(out, (size_t)s);
		return 0;
	}
	bool sorted = sort && !bson_empty(sort);
	if (filter && id_in_filter(filter, &id)) {
		/* each value by the _id index, then natural order (or sorted), no duplicates */
		while (bson_iter_next(&id)) {
			long s = sim_coll_find_id(c, &id);
			if (s >= 0 && sim_visible(&c->slots[s], x->txn)) slots_push(out, (size_t)s);
		}
		if (out->n > 1) qsort(out->v, out->n, sizeof *out->v, cmp_size);
		size_t m = 0;
		for (size_t i = 0; i < out->n; i++)
			if (m == 0 || out->v[m - 1] != out->v[i]) out->v[m++] = out->v[i];
		out->n = m;
		if (sorted) {
			sort_spec = sort; sort_coll = c; sort_txn = x->txn;
			if (out->n > 1) qsort(out->v, out->n, sizeof *out->v, cmp_slots);
		}
		if (limit && out->n > limit) out->n = limit;
		return 0;
	}
	for (size_t i = 0; i < c->nslots; i++) {
		const bson_t *d = sim_visible(&c->slots[i], x->txn);
		if (!d) continue;
		if (!sim_match(d, filter, &e)) {
			if (e) return err(x, E_BADVALUE, "%s", e);
			continue;
		}
		slots_push(out, i);
		if (!sorted && limit && out->n >= limit) break;
	}
	if (sorted) {
		sort_spec = sort; sort_coll = c; sort_txn = x->txn;
		if (out->n > 1) qsort(out->v, out->n, sizeof *out->v, cmp_slots);
		if (limit && out->n > limit) out->n = limit;
	}
	return 0;
}

/* ---- update ---- */

static int make_replacement(struct ctx *x, const bson_t *pre, const bson_t *u, bson_t **post)
{
	bson_iter_t pid, uid, it;
	bson_iter_init_find(&pid, pre, "_id");
	if (bson_iter_init_find(&uid, u, "_id")) {
		if (sim_cmp_iter(&pid, &uid) != 0 || bson_iter_type(&pid) != bson_iter_type(&uid)) {
			return err(x, E_IMMUTABLEFIELD, "After applying the update, the (immutable) field '_id' was found to have been altered to _id: ...");
		}
	}
	bson_iter_init(&it, u);
	while (bson_iter_next(&it)) {
		if (bson_iter_key(&it)[0] == '$')
			return err(x, E_DOLLARPREFIXED, "The dollar ($) prefixed field '%s' in '%s' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith.", bson_iter_key(&it), bson_iter_key(&it));
	}
	*post = bson_new();
	bson_append_iter(*post, "_id", 3, &pid);
	bson_copy_to_excluding_noinit(u, *post, "_id", NULL);
	return 0;
}

static void id_doc(const bson_t *doc, bson_t *o2)
{
	bson_iter_t id;
	bson_init(o2);
	if (bson_iter_init_find(&id, doc, "_id")) bson_append_iter(o2, "_id", 3, &id);
}

/* applies u to the document in slot; *changed reports a modification */
static int update_slot(struct ctx *x, struct sim_coll *c, size_t slot, const bson_t *u,
                       bool *changed, bson_t **pre_out, bson_t **post_out, const char *image)
{
	const bson_t *pre = sim_visible(&c->slots[slot], x->txn);
	bson_t *post = NULL, *o = NULL;
	int rc;
	*changed = false;
	if (sim_is_modifier(u)) {
		struct sim_upd_result r;
		char em[512];
		rc = sim_update_apply(pre, u, x->query, sim.oplog_v1, false, &r, em, sizeof em);
		if (rc) return err(x, rc, "%s", em);
		post = r.post;
		o = r.oplog_o;
		if (!r.changed) {
			if (pre_out) *pre_out = bson_copy(pre);
			if (post_out) *post_out = post; else bson_destroy(post);
			return 0;
		}
	} else {
		if ((rc = make_replacement(x, pre, u, &post))) return rc;
		if (post->len == pre->len && !memcmp(bson_get_data(post), bson_get_data(pre), pre->len)) {
			if (pre_out) *pre_out = bson_copy(pre);
			if (post_out) *post_out = post; else bson_destroy(post);
			return 0;
		}
		o = bson_copy(post);
	}
	if ((rc = check_unique(x, c, post, (long)slot))) { bson_destroy(post); bson_destroy(o); return rc; }
	bson_t o2;
	id_doc(pre, &o2);
	if (pre_out) *pre_out = bson_copy(pre);
	if (post_out) *post_out = bson_copy(post);
	slot_write(x, c, slot, post);
	if (!is_local(c->db)) log_op(x, "u", c->ns, c->uuid, o, &o2, image);
	bson_destroy(&o2);
	bson_destroy(o);
	*changed = true;
	return 0;
}

/* builds and inserts the upsert document; returns its _id in *id_out */
static int do_upsert(struct ctx *x, struct sim_coll *c, const bson_t *q, const bson_t *u, bson_t *id_out,
                     bson_t **post_out)
{
	bson_t *doc;
	int rc;
	if (sim_is_modifier(u)) {
		bson_t seed = BSON_INITIALIZER;
		sim_upsert_seed(q, &seed);
		struct sim_upd_result r;
		char em[512];
		rc = sim_update_apply(&seed, u, NULL, sim.oplog_v1, true, &r, em, sizeof em);
		bson_destroy(&seed);
		if (rc) return err(x, rc, "%s", em);
		if (r.oplog_o) bson_destroy(r.oplog_o);
		doc = r.post;
	} else {
		bson_t seed = BSON_INITIALIZER, *tmp = NULL;
		sim_upsert_seed(q, &seed);
		bson_iter_t sid;
		doc = bson_new();
		if (bson_iter_init_find(&sid, &seed, "_id") && !bson_has_field(u, "_id")) bson_append_iter(doc, "_id", 3, &sid);
		bson_copy_to_excluding_noinit(u, doc, "", NULL);
		bson_destroy(&seed);
		(void)tmp;
	}
	int code;
	bson_t *final = with_id_first(doc, &code);
	bson_destroy(doc);
	if (!final) return err(x, E_BADVALUE, "can't use an array for _id");
	bson_iter_t id;
	bson_iter_init_find(&id, final, "_id");
	bson_append_iter(id_out, "_id", 3, &id);
	rc = insert_one(x, c, final);
	if (!rc && post_out) *post_out = bson_copy(final);
	bson_destroy(final);
	return rc;
}

static int cmd_update(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	bson_t ups;
	if (!get_doc(x->cmd, "updates", &ups)) return err(x, E_FAILEDTOPARSE, "BSON field 'update.updates' is missing but a required field");
	if (!writable()) return not_primary(x);
	struct sim_coll *c;
	int rc = coll_for_write(x, name, &c);
	if (rc) return rc;
	bool ordered = get_bool(x->cmd, "ordered", true);
	bson_t werrs = BSON_INITIALIZER, upserted = BSON_INITIALIZER;
	uint32_t nerr = 0, nups = 0;
	int32_t n = 0, nmod = 0, i = 0;
	int64_t deadline = deadline_of(x);
	bson_iter_t it;
	bson_iter_init(&it, &ups);
	for (; bson_iter_next(&it); i++) {
		bson_t spec, q, u;
		x->stmt = i;
		if (!doc_of(&it, &spec) || !get_doc(&spec, "q", &q)) { err(x, E_FAILEDTOPARSE, "BSON field 'update.updates.q' is missing but a required field"); goto werr; }
		bson_iter_t ui;
		if (!bson_iter_init_find(&ui, &spec, "u")) { err(x, E_FAILEDTOPARSE, "BSON field 'update.updates.u' is missing but a required field"); goto werr; }
		if (BSON_ITER_HOLDS_ARRAY(&ui)) { err(x, E_FAILEDTOPARSE, "pipeline-style updates are not supported by mongosim"); goto werr; }
		if (!doc_of(&ui, &u)) { err(x, E_FAILEDTOPARSE, "Update argument must be either an object or an array"); goto werr; }
		bool multi = get_bool(&spec, "multi", false), upsert = get_bool(&spec, "upsert", false);
		if (multi && !sim_is_modifier(&u) && !bson_empty(&u)) { err(x, E_FAILEDTOPARSE, "multi update is not supported for replacement-style update"); goto werr; }
		struct slots s = { 0 };
		for (;;) {
			s.n = 0;
			if ((rc = collect(x, c, &q, NULL, multi ? 0 : 1, &s))) break;
			rc = 0;
			for (size_t k = 0; k < s.n && !rc; k++) rc = lock_check(x, &c->slots[s.v[k]]);
			if (rc != SIM_WAIT) break;
			if (!wait_locks(deadline)) { rc = err(x, E_MAXTIMEMS, "operation exceeded time limit"); break; }
			if (!(c = sim_coll_get(x->db, name)) && (rc = coll_for_write(x, name, &c))) break;
		}
		if (!rc && s.n == 0 && upsert) {
			bson_t idd = BSON_INITIALIZER;
			rc = do_upsert(x, c, &q, &u, &idd, NULL);
			if (!rc) {
				char kb[16]; const char *kp;
				key_str(kb, sizeof kb, nups++, &kp);
				bson_t e;
				bson_append_document_begin(&upserted, kp, -1, &e);
				BSON_APPEND_INT32(&e, "index", i);
				bson_iter_t idi;
				bson_iter_init_find(&idi, &idd, "_id");
				bson_append_iter(&e, "_id", 3, &idi);
				bson_append_document_end(&upserted, &e);
				n++;
			}
			bson_destroy(&idd);
		}
		x->query = &q;
		for (size_t k = 0; k < s.n && !rc; k++) {
			bool ch;
			rc = update_slot(x, c, s.v[k], &u, &ch, NULL, NULL, NULL);
			if (!rc) { n++; if (ch) nmod++; }
		}
		free(s.v);
		if (!rc) continue;
werr:
		if (fatal_in_txn(x)) { bson_destroy(&werrs); bson_destroy(&upserted); return x->code; }
		add_write_error(x, &werrs, &nerr, i);
		if (ordered || x->txn) break;
	}
	BSON_APPEND_INT32(x->reply, "n", n);
	finish_batch(x, &werrs, nerr);
	if (nups) BSON_APPEND_ARRAY(x->reply, "upserted", &upserted);
	bson_destroy(&upserted);
	BSON_APPEND_INT32(x->reply, "nModified", nmod);
	return 0;
}

static int delete_slot(struct ctx *x, struct sim_coll *c, size_t slot, const char *image)
{
	bson_t o;
	id_doc(sim_visible(&c->slots[slot], x->txn), &o);
	slot_write(x, c, slot, NULL);
	if (!is_local(c->db)) log_op(x, "d", c->ns, c->uuid, &o, NULL, image);
	bson_destroy(&o);
	return 0;
}

static int cmd_delete(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	bson_t dels;
	if (!get_doc(x->cmd, "deletes", &dels)) return err(x, E_FAILEDTOPARSE, "BSON field 'delete.deletes' is missing but a required field");
	if (!writable()) return not_primary(x);
	struct sim_coll *c;
	int rc = coll_for_write(x, name, &c);
	if (rc) return rc;
	bool ordered = get_bool(x->cmd, "ordered", true);
	bson_t werrs = BSON_INITIALIZER;
	uint32_t nerr = 0;
	int32_t n = 0, i = 0;
	int64_t deadline = deadline_of(x);
	bson_iter_t it;
	bson_iter_init(&it, &dels);
	for (; bson_iter_next(&it); i++) {
		bson_t spec, q;
		x->stmt = i;
		if (!doc_of(&it, &spec) || !get_doc(&spec, "q", &q)) { err(x, E_FAILEDTOPARSE, "BSON field 'delete.deletes.q' is missing but a required field"); goto werr; }
		int64_t limit = get_int(&spec, "limit", 0);
		struct slots s = { 0 };
		for (;;) {
			s.n = 0;
			if ((rc = collect(x, c, &q, NULL, limit == 1 ? 1 : 0, &s))) break;
			for (size_t k = 0; k < s.n && !rc; k++) rc = lock_check(x, &c->slots[s.v[k]]);
			if (rc != SIM_WAIT) break;
			if (!wait_locks(deadline)) { rc = err(x, E_MAXTIMEMS, "operation exceeded time limit"); break; }
			if (!(c = sim_coll_get(x->db, name)) && (rc = coll_for_write(x, name, &c))) break;
		}
		/* delete from the highest slot down so compaction cannot move pending ones */
		for (size_t k = s.n; k > 0 && !rc; k--) { delete_slot(x, c, s.v[k - 1], NULL); n++; }
		free(s.v);
		if (!rc) continue;
werr:
		if (fatal_in_txn(x)) { bson_destroy(&werrs); return x->code; }
		add_write_error(x, &werrs, &nerr, i);
		if (ordered || x->txn) break;
	}
	if ((c = sim_coll_get(x->db, name))) sim_coll_compact(c);
	BSON_APPEND_INT32(x->reply, "n", n);
	finish_batch(x, &werrs, nerr);
	return 0;
}

/* ---- cursors: find, getMore, killCursors ---- */

#define BATCH_BYTES (16 * 1024 * 1024 - 64 * 1024)

static struct sim_cursor *cursor_new(const char *ns)
{
	struct sim_cursor *c = calloc(1, sizeof *c);
	c->id = sim.next_cursor++;
	c->ns = bson_strdup(ns);
	c->next = sim.cursors;
	sim.cursors = c;
	return c;
}

/* appends up to max docs (and BATCH_BYTES) from a materialised cursor */
static void batch_docs(struct sim_cursor *c, bson_t *arr, int64_t max)
{
	size_t bytes = 0;
	uint32_t k = 0;
	while (c->pos < c->ndocs && (max <= 0 || (int64_t)k < max)) {
		bson_t *d = c->docs[c->pos];
		if (k > 0 && bytes + d->len > BATCH_BYTES) break;
		char kb[16]; const char *kp;
		key_str(kb, sizeof kb, k++, &kp);
		bson_append_document(arr, kp, -1, d);
		bytes += d->len;
		bson_destroy(d);
		c->docs[c->pos++] = NULL;
	}
}

static void cursor_reply(struct ctx *x, const char *ns, bson_t *batch, const char *batch_name, int64_t id)
{
	bson_t cur;
	BSON_APPEND_DOCUMENT_BEGIN(x->reply, "cursor", &cur);
	BSON_APPEND_ARRAY(&cur, batch_name, batch);
	BSON_APPEND_INT64(&cur, "id", id);
	BSON_APPEND_UTF8(&cur, "ns", ns);
	bson_append_document_end(x->reply, &cur);
}

/* answers from a list of owned documents, opening a cursor for the rest */
static void reply_docs(struct ctx *x, const char *ns, bson_t **docs, size_t n, int64_t first_batch,
                       bool single)
{
	struct sim_cursor *c = cursor_new(ns);
	c->docs = docs; c->ndocs = n;
	bson_t arr = BSON_INITIALIZER;
	batch_docs(c, &arr, first_batch);
	int64_t id = c->id;
	if (c->pos >= c->ndocs || single) { cursor_kill(c); id = 0; }
	cursor_reply(x, ns, &arr, "firstBatch", id);
	bson_destroy(&arr);
}

/* ts lower bound from {ts: {$gt|$gte: Timestamp}}; true if ts is the only condition */
static bool ts_bound(const bson_t *filter, uint64_t *after)
{
	bson_iter_t it;
	*after = 0;
	if (!filter || !bson_iter_init(&it, filter)) return true;
	bool only = true;
	while (bson_iter_next(&it)) {
		if (strcmp(bson_iter_key(&it), "ts") || !BSON_ITER_HOLDS_DOCUMENT(&it)) { only = false; continue; }
		bson_iter_t c;
		bson_iter_recurse(&it, &c);
		while (bson_iter_next(&c)) {
			const char *op = bson_iter_key(&c);
			if (!BSON_ITER_HOLDS_TIMESTAMP(&c)) { only = false; continue; }
			uint32_t t, i;
			bson_iter_timestamp(&c, &t, &i);
			uint64_t v = (uint64_t)t << 32 | i;
			if (!strcmp(op, "$gt")) { if (v > *after) *after = v; }
			else if (!strcmp(op, "$gte")) { if (v && v - 1 > *after) *after = v - 1; }
			else only = false;
		}
	}
	return only;
}

/* fills arr from the oplog after c->last_ts; returns the count */
static uint32_t oplog_fill(struct sim_cursor *c, bson_t *arr, int64_t max)
{
	size_t i = sim_oplog_after(c->last_ts), n = sim.oplog.n, bytes = 0;
	uint32_t k = 0;
	const char *e = NULL;
	for (; i < n && (max <= 0 || (int64_t)k < max); i++) {
		struct sim_entry *en = sim_oplog_at(i);
		if (k > 0 && bytes + en->len > BATCH_BYTES) break;
		bson_t d;
		bson_init_static(&d, en->data, en->len);
		c->last_ts = en->ts;
		if (!c->ts_only && !sim_match(&d, c->filter, &e)) continue;
		char kb[16]; const char *kp;
		key_str(kb, sizeof kb, k++, &kp);
		bson_append_document(arr, kp, -1, &d);
		bytes += en->len;
	}
	return k;
}

static int find_oplog(struct ctx *x, const bson_t *filter)
{
	bson_t sort, proj;
	bool has_sort = get_doc(x->cmd, "sort", &sort), has_proj = get_doc(x->cmd, "projection", &proj);
	int64_t limit = get_int(x->cmd, "limit", 0), batch = get_int(x->cmd, "batchSize", 101);
	bool single = get_bool(x->cmd, "singleBatch", false);
	if (limit < 0) { limit = -limit; single = true; }
	bool tailable = get_bool(x->cmd, "tailable", false);
	bson_iter_t it;
	bool reverse = has_sort && bson_iter_init_find(&it, &sort, "$natural") && sim_num(&it) < 0;
	if (!reverse && has_sort && bson_iter_init_find(&it, &sort, "ts") && sim_num(&it) < 0) reverse = true;
	const char *e = NULL;
	if (reverse || has_proj) {
		bson_t **docs = NULL;
		size_t n = 0;
		for (size_t k = 0; k < sim.oplog.n; k++) {
			size_t i = reverse ? sim.oplog.n - 1 - k : k;
			struct sim_entry *en = sim_oplog_at(i);
			bson_t d;
			bson_init_static(&d, en->data, en->len);
			if (!sim_match(&d, filter, &e)) { if (e) return err(x, E_BADVALUE, "%s", e); continue; }
			docs = realloc(docs, (n + 1) * sizeof *docs);
			docs[n] = bson_new();
			if (has_proj) sim_project(&d, &proj, docs[n]); else bson_concat(docs[n], &d);
			n++;
			if (limit && (int64_t)n >= limit) break;
		}
		reply_docs(x, "local.oplog.rs", docs, n, limit && limit < batch ? limit : batch, single);
		return 0;
	}
	struct sim_cursor *c = cursor_new("local.oplog.rs");
	c->oplog = true;
	c->tailable = tailable;
	c->await = get_bool(x->cmd, "awaitData", false);
	c->filter = filter ? bson_copy(filter) : bson_new();
	c->ts_only = ts_bound(filter, &c->last_ts);
	c->batch = limit;   /* remaining limit */
	c->limited = limit > 0;
	bson_t arr = BSON_INITIALIZER;
	int64_t max = batch;
	if (limit && (max <= 0 || limit < max)) max = limit;
	if (!c->ts_only) {
		bson_t probe = BSON_INITIALIZER;
		sim_match(&probe, filter, &e);
		bson_destroy(&probe);
		if (e) { cursor_kill(c); bson_destroy(&arr); return err(x, E_BADVALUE, "%s", e); }
	}
	uint32_t got = oplog_fill(c, &arr, max);
	if (limit) c->batch -= got;
	int64_t id = c->id;
	bool exhausted = sim_oplog_after(c->last_ts) >= sim.oplog.n;
	if (single || (limit && c->batch <= 0) || (!tailable && exhausted)) { cursor_kill(c); id = 0; }
	cursor_reply(x, "local.oplog.rs", &arr, "firstBatch", id);
	bson_destroy(&arr);
	return 0;
}

/* readConcern {level: "snapshot", atClusterTime}: a find materialises its
 * result at once, so it reads the state at the newest ts; an older
 * atClusterTime is served only when nothing wrote to the namespace since,
 * otherwise SnapshotTooOld (mongod keeps 5 minutes of history; callers fall
 * back to a live read, as they must for older servers) */
static int check_snapshot_read(struct ctx *x, const char *ns)
{
	bson_t rc;
	bson_iter_t it;
	if (!get_doc(x->cmd, "readConcern", &rc) || x->txn) return 0;
	const char *level = get_str(&rc, "level");
	if (!level || strcmp(level, "snapshot") || !bson_iter_init_find(&it, &rc, "atClusterTime") ||
	    !BSON_ITER_HOLDS_TIMESTAMP(&it))
		return 0;
	uint32_t t, i;
	bson_iter_timestamp(&it, &t, &i);
	uint64_t at = (uint64_t)t << 32 | i;
	if (at >= sim.oplog.last_ts) return 0;
	char dbcmd[300];
	const char *dot = strchr(ns, '.');
	snprintf(dbcmd, sizeof dbcmd, "%.*s.$cmd", dot ? (int)(dot - ns) : 0, ns);
	bool touched = at < sim.oplog.dropped_ts || (sim.oplog.n && sim_oplog_at(0)->ts > at);
	for (size_t k = sim_oplog_after(at); k < sim.oplog.n && !touched; k++) {
		struct sim_entry *e = sim_oplog_at(k);
		bson_t d;
		bson_init_static(&d, e->data, e->len);
		const char *ens = get_str(&d, "ns");
		if (!ens) continue;
		if (!strcmp(ens, ns)) touched = true;
		else if (!strcmp(ens, dbcmd)) {
			/* DDL: does it name this collection? */
			bson_t o;
			bson_iter_t f;
			if (!get_doc(&d, "o", &o) || !bson_iter_init(&f, &o) || !bson_iter_next(&f)) continue;
			const char *cmdname = bson_iter_key(&f), *v = BSON_ITER_HOLDS_UTF8(&f) ? bson_iter_utf8(&f, NULL) : "";
			const char *to = get_str(&o, "to");
			if (!strcmp(cmdname, "dropDatabase") || !strcmp(v, dot ? dot + 1 : "") || !strcmp(v, ns) || (to && !strcmp(to, ns)))
				touched = true;
		}
		else if (!strcmp(ens, "admin.$cmd") && memmem(e->data, e->len, ns, strlen(ns) + 1)) touched = true;
	}
	if (touched)
		return err(x, 239, "Read timestamp Timestamp(%u, %u) is older than the oldest available timestamp.", t, i);
	return 0;
}

static int cmd_find(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	if (!name) return err(x, E_BADVALUE, "collection name has invalid type");
	if (!bson_utf8_validate(name, strlen(name), false) || !bson_utf8_validate(x->db, strlen(x->db), false))
		return err(x, E_INVALIDNS, "Invalid namespace");
	bson_t filter, sort, proj;
	bool hf = get_doc(x->cmd, "filter", &filter);
	if (is_local(x->db) && !strcmp(name, "oplog.rs")) return find_oplog(x, hf ? &filter : NULL);
	bool hs = get_doc(x->cmd, "sort", &sort), hp = get_doc(x->cmd, "projection", &proj);
	int64_t limit = get_int(x->cmd, "limit", 0), skip = get_int(x->cmd, "skip", 0);
	int64_t batch = get_int(x->cmd, "batchSize", 101);
	bool single = get_bool(x->cmd, "singleBatch", false);
	if (limit < 0) { limit = -limit; single = true; }
	if (skip < 0) return err(x, E_BADVALUE, "skip value must be non-negative, but received: %lld", (long long)skip);
	char ns[512];
	snprintf(ns, sizeof ns, "%s.%s", x->db, name);
	int src = check_snapshot_read(x, ns);
	if (src) return src;
	struct sim_coll *c = sim_coll_get(x->db, name);
	bson_t **docs = NULL;
	size_t n = 0;
	if (c) {
		struct slots s = { 0 };
		bool natural_rev = false;
		bson_iter_t it;
		if (hs && bson_iter_init_find(&it, &sort, "$natural") && sim_num(&it) < 0) natural_rev = true;
		int rc = collect(x, c, hf ? &filter : NULL, hs ? &sort : NULL, (hs || natural_rev) ? 0 : (size_t)(limit ? limit + skip : 0), &s);
		if (rc) { free(s.v); return rc; }
		if (natural_rev)
			for (size_t i = 0; i < s.n / 2; i++) { size_t t = s.v[i]; s.v[i] = s.v[s.n - 1 - i]; s.v[s.n - 1 - i] = t; }
		size_t from = (size_t)skip < s.n ? (size_t)skip : s.n, to = s.n;
		if (limit && from + (size_t)limit < to) to = from + (size_t)limit;
		docs = malloc((to - from + 1) * sizeof *docs);
		for (size_t i = from; i < to; i++) {
			const bson_t *d = sim_visible(&c->slots[s.v[i]], x->txn);
			docs[n] = bson_new();
			if (hp) sim_project(d, &proj, docs[n]); else bson_concat(docs[n], d);
			n++;
		}
		free(s.v);
	}
	int64_t fb = batch > 0 ? batch : 101;
	if (get_int(x->cmd, "batchSize", -1) == 0) fb = 0;
	if (fb == 0) {
		/* batchSize 0: open the cursor, return nothing */
		struct sim_cursor *cur = cursor_new(ns);
		cur->docs = docs; cur->ndocs = n;
		bson_t arr = BSON_INITIALIZER;
		cursor_reply(x, ns, &arr, "firstBatch", cur->id);
		bson_destroy(&arr);
		return 0;
	}
	reply_docs(x, ns, docs, n, fb, single);
	return 0;
}

static int cmd_getmore(struct ctx *x)
{
	bson_iter_t it;
	if (!bson_iter_init_find(&it, x->cmd, "getMore") || !BSON_ITER_HOLDS_INT64(&it))
		return err(x, E_TYPEMISMATCH, "BSON field 'getMore.getMore' is the wrong type, expected type 'long'");
	int64_t id = bson_iter_int64(&it);
	struct sim_cursor *c = cursor_find(id);
	if (!c || c->killed) return err(x, E_CURSORNOTFOUND, "cursor id %lld not found", (long long)id);
	if (c->busy) return err(x, 50738, "Cursor %lld is already in use", (long long)id);
	int64_t batch = get_int(x->cmd, "batchSize", 0);
	bson_t arr = BSON_INITIALIZER;
	char ns[512];
	snprintf(ns, sizeof ns, "%s", c->ns);
	if (!c->oplog) {
		batch_docs(c, &arr, batch);
		int64_t rid = c->id;
		if (c->pos >= c->ndocs) { cursor_kill(c); rid = 0; }
		cursor_reply(x, ns, &arr, "nextBatch", rid);
		bson_destroy(&arr);
		return 0;
	}
	int64_t max = batch;
	if (c->limited && (max <= 0 || c->batch < max)) max = c->batch;
	int64_t wait_ms = get_int(x->cmd, "maxTimeMS", 1000);
	int64_t deadline = sim_mono_ms() + wait_ms;
	uint32_t got = 0;
	c->busy = true;
	for (;;) {
		if (sim.oplog.dropped_ts > c->last_ts) {
			c->busy = false;
			uint64_t l = c->last_ts;
			cursor_kill(c);
			bson_destroy(&arr);
			return err(x, E_CAPPEDPOSITIONLOST,
			           "CollectionScan died due to position in capped collection being deleted. Last seen record id: RecordId(%lld)",
			           (long long)l);
		}
		got = oplog_fill(c, &arr, max);
		if (got || !c->tailable || !c->await || c->killed || sim.stop) break;
		int64_t now = sim_mono_ms();
		if (now >= deadline) break;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		int64_t d = deadline - now;
		ts.tv_sec += d / 1000;
		ts.tv_nsec += (long)(d % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
		if (sim.signal_pending) { sim.signal_pending = false; pthread_cond_broadcast(&sim.cond); }
		pthread_cond_timedwait(&sim.cond, &sim.mu, &ts);
	}
	c->busy = false;
	if (c->killed) {
		cursor_kill(c);
		bson_destroy(&arr);
		return err(x, E_CURSORNOTFOUND, "cursor id %lld not found", (long long)id);
	}
	if (c->limited) c->batch -= got;
	int64_t rid = c->id;
	bool exhausted = sim_oplog_after(c->last_ts) >= sim.oplog.n;
	if ((c->limited && c->batch <= 0) || (!c->tailable && exhausted)) { cursor_kill(c); rid = 0; }
	cursor_reply(x, ns, &arr, "nextBatch", rid);
	bson_destroy(&arr);
	return 0;
}

static int cmd_killcursors(struct ctx *x)
{
	bson_t ids;
	if (!get_doc(x->cmd, "cursors", &ids)) return err(x, E_FAILEDTOPARSE, "BSON field 'killCursors.cursors' is missing but a required field");
	bson_t killed = BSON_INITIALIZER, notfound = BSON_INITIALIZER, empty = BSON_INITIALIZER;
	uint32_t nk = 0, nn = 0;
	bson_iter_t it;
	bson_iter_init(&it, &ids);
	while (bson_iter_next(&it)) {
		int64_t id = bson_iter_as_int64(&it);
		struct sim_cursor *c = cursor_find(id);
		char kb[16]; const char *kp;
		if (c && !c->killed) {
			key_str(kb, sizeof kb, nk++, &kp);
			BSON_APPEND_INT64(&killed, kp, id);
			if (c->busy) { c->killed = true; pthread_cond_broadcast(&sim.cond); }
			else cursor_kill(c);
		} else {
			key_str(kb, sizeof kb, nn++, &kp);
			BSON_APPEND_INT64(&notfound, kp, id);
		}
	}
	BSON_APPEND_ARRAY(x->reply, "cursorsKilled", &killed);
	BSON_APPEND_ARRAY(x->reply, "cursorsNotFound", &notfound);
	BSON_APPEND_ARRAY(x->reply, "cursorsAlive", &empty);
	BSON_APPEND_ARRAY(x->reply, "cursorsUnknown", &empty);
	bson_destroy(&killed); bson_destroy(&notfound); bson_destroy(&empty);
	return 0;
}

/* ---- count, distinct, aggregate ---- */

static int matching_docs(struct ctx *x, const char *name, const bson_t *filter, bson_t ***out, size_t *n)
{
	*out = malloc(sizeof **out);   /* never NULL: stages memmove/qsort it */
	*n = 0;
	struct sim_coll *c = sim_coll_get(x->db, name);
	if (!c) return 0;
	free(*out);
	struct slots s = { 0 };
	int rc = collect(x, c, filter, NULL, 0, &s);
	if (!rc) {
		*out = malloc((s.n + 1) * sizeof **out);
		for (size_t i = 0; i < s.n; i++) (*out)[i] = bson_copy(sim_visible(&c->slots[s.v[i]], x->txn));
		*n = s.n;
	}
	free(s.v);
	return rc;
}

static void free_docs(bson_t **d, size_t n)
{
	for (size_t i = 0; i < n; i++) if (d[i]) bson_destroy(d[i]);
	free(d);
}

static int cmd_count(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	bson_t q;
	bool hq = get_doc(x->cmd, "query", &q);
	bson_t **d; size_t n;
	int rc = matching_docs(x, name ? name : "", hq ? &q : NULL, &d, &n);
	if (rc) return rc;
	free_docs(d, n);
	int64_t skip = get_int(x->cmd, "skip", 0), limit = get_int(x->cmd, "limit", 0);
	int64_t r = (int64_t)n - skip;
	if (r < 0) r = 0;
	if (limit < 0) limit = -limit;
	if (limit && r > limit) r = limit;
	BSON_APPEND_INT32(x->reply, "n", (int32_t)r);
	return 0;
}

static void add_unique(bson_t *arr, uint32_t *n, const bson_iter_t *v, bson_t *seen)
{
	bson_iter_t it;
	bson_iter_init(&it, seen);
	while (bson_iter_next(&it))
		if (sim_canon(bson_iter_type(&it)) == sim_canon(bson_iter_type(v)) && sim_cmp_iter(&it, v) == 0) return;
	char kb[16]; const char *kp;
	key_str(kb, sizeof kb, *n, &kp);
	bson_append_iter(seen, kp, -1, v);
	bson_append_iter(arr, kp, -1, v);
	(*n)++;
}

static int cmd_distinct(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name), *key = get_str(x->cmd, "key");
	if (!key) return err(x, E_FAILEDTOPARSE, "BSON field 'distinct.key' is missing but a required field");
	bson_t q;
	bool hq = get_doc(x->cmd, "query", &q);
	bson_t **d; size_t n;
	int rc = matching_docs(x, name ? name : "", hq ? &q : NULL, &d, &n);
	if (rc) return rc;
	bson_t vals = BSON_INITIALIZER, seen = BSON_INITIALIZER;
	uint32_t nv = 0;
	for (size_t i = 0; i < n; i++) {
		bson_iter_t v;
		if (!sim_lookup(d[i], key, &v)) continue;
		if (BSON_ITER_HOLDS_ARRAY(&v)) {
			bson_iter_t e;
			bson_iter_recurse(&v, &e);
			while (bson_iter_next(&e)) add_unique(&vals, &nv, &e, &seen);
		} else {
			add_unique(&vals, &nv, &v, &seen);
		}
	}
	BSON_APPEND_ARRAY(x->reply, "values", &vals);
	bson_destroy(&vals); bson_destroy(&seen);
	free_docs(d, n);
	return 0;
}

/* evaluates an aggregation expression: "$path", literal, or a document of expressions */
static bool eval_expr(const bson_t *doc, const bson_iter_t *e, bson_t *out, const char *key)
{
	if (BSON_ITER_HOLDS_UTF8(e)) {
		const char *s = bson_iter_utf8(e, NULL);
		if (s[0] == '$' && s[1] != '$') {
			bson_iter_t v;
			if (!sim_lookup(doc, s + 1, &v)) return false;
			bson_append_iter(out, key, -1, &v);
			return true;
		}
	}
	if (BSON_ITER_HOLDS_DOCUMENT(e)) {
		bson_iter_t c;
		bson_iter_recurse(e, &c);
		if (bson_iter_next(&c) && !strcmp(bson_iter_key(&c), "$literal")) {
			bson_append_iter(out, key, -1, &c);
			return true;
		}
		bson_t sub;
		bson_append_document_begin(out, key, -1, &sub);
		bson_iter_recurse(e, &c);
		while (bson_iter_next(&c)) eval_expr(doc, &c, &sub, bson_iter_key(&c));
		bson_append_document_end(out, &sub);
		return true;
	}
	bson_append_iter(out, key, -1, e);
	return true;
}

struct acc {
	const char *op;
	bson_iter_t expr;
	int kind; int64_t li; double d; int64_t cnt;
	bson_t *val; bson_t *arr; uint32_t n; bson_t *seen;
};

struct group { bson_t *key; struct acc *a; };

static void acc_add(struct acc *a, const bson_t *doc)
{
	bson_t tmp = BSON_INITIALIZER;
	bson_iter_t v;
	bool has = eval_expr(doc, &a->expr, &tmp, "v") && bson_iter_init_find(&v, &tmp, "v");
	if (!strcmp(a->op, "$sum") || !strcmp(a->op, "$avg")) {
		if (has && sim_is_number(bson_iter_type(&v))) {
			a->cnt++;
			if (BSON_ITER_HOLDS_DOUBLE(&v)) a->kind = 2;
			else if (BSON_ITER_HOLDS_INT64(&v) && a->kind < 1) a->kind = 1;
			a->d += sim_num(&v);
			a->li += bson_iter_as_int64(&v);
			if (a->kind == 0 && (a->li > INT32_MAX || a->li < INT32_MIN)) a->kind = 1;
		}
	} else if (!strcmp(a->op, "$count")) {
		a->cnt++;
	} else if (!strcmp(a->op, "$min") || !strcmp(a->op, "$max") || !strcmp(a->op, "$first") || !strcmp(a->op, "$last")) {
		bool first = !strcmp(a->op, "$first"), last = !strcmp(a->op, "$last");
		if (!has && !first && !last) goto out;
		bool take;
		if (!a->val) take = true;
		else if (first) take = false;
		else if (last) take = true;
		else {
			bson_iter_t cur;
			bson_iter_init_find(&cur, a->val, "v");
			int c = sim_cmp_iter(&v, &cur);
			take = !strcmp(a->op, "$min") ? c < 0 : c > 0;
		}
		if (take) {
			if (a->val) bson_destroy(a->val);
			a->val = bson_new();
			if (has) bson_append_iter(a->val, "v", 1, &v); else bson_append_null(a->val, "v", 1);
		}
	} else if (!strcmp(a->op, "$push") || !strcmp(a->op, "$addToSet")) {
		if (!a->arr) { a->arr = bson_new(); a->seen = bson_new(); }
		if (has) {
			if (!strcmp(a->op, "$push")) {
				char kb[16]; const char *kp;
				key_str(kb, sizeof kb, a->n++, &kp);
				bson_append_iter(a->arr, kp, -1, &v);
			} else {
				add_unique(a->arr, &a->n, &v, a->seen);
			}
		}
	}
out:
	bson_destroy(&tmp);
}

static void acc_out(struct acc *a, bson_t *out, const char *key)
{
	if (!strcmp(a->op, "$sum")) {
		if (a->kind == 2) BSON_APPEND_DOUBLE(out, key, a->d);
		else if (a->kind == 1) BSON_APPEND_INT64(out, key, a->li);
		else BSON_APPEND_INT32(out, key, (int32_t)a->li);
	} else if (!strcmp(a->op, "$avg")) {
		if (a->cnt) BSON_APPEND_DOUBLE(out, key, a->d / (double)a->cnt);
		else bson_append_null(out, key, -1);
	} else if (!strcmp(a->op, "$count")) {
		BSON_APPEND_INT32(out, key, (int32_t)a->cnt);
	} else if (a->val) {
		bson_iter_t v;
		bson_iter_init_find(&v, a->val, "v");
		bson_append_iter(out, key, -1, &v);
	} else if (a->arr) {
		BSON_APPEND_ARRAY(out, key, a->arr);
	} else if (!strcmp(a->op, "$push") || !strcmp(a->op, "$addToSet")) {
		bson_t e = BSON_INITIALIZER;
		BSON_APPEND_ARRAY(out, key, &e);
		bson_destroy(&e);
	} else {
		bson_append_null(out, key, -1);
	}
	if (a->val) bson_destroy(a->val);
	if (a->arr) bson_destroy(a->arr);
	if (a->seen) bson_destroy(a->seen);
}

static int stage_group(struct ctx *x, const bson_iter_t *spec, bson_t ***docs, size_t *n)
{
	bson_t sp;
	if (!doc_of(spec, &sp)) return err(x, 15947, "a group's fields must be specified in an object");
	bson_iter_t idexpr;
	if (!bson_iter_init_find(&idexpr, &sp, "_id")) return err(x, 15955, "a group specification must include an _id");
	size_t nacc = 0;
	bson_iter_t it;
	bson_iter_init(&it, &sp);
	while (bson_iter_next(&it)) if (strcmp(bson_iter_key(&it), "_id")) nacc++;
	struct group *g = NULL;
	size_t ng = 0;
	for (size_t i = 0; i < *n; i++) {
		bson_t *key = bson_new();
		if (!eval_expr((*docs)[i], &idexpr, key, "_id")) bson_append_null(key, "_id", 3);
		size_t j;
		for (j = 0; j < ng; j++)
			if (g[j].key->len == key->len && !memcmp(bson_get_data(g[j].key), bson_get_data(key), key->len)) break;
		if (j == ng) {
			g = realloc(g, (ng + 1) * sizeof *g);
			g[ng].key = key;
			g[ng].a = calloc(nacc + 1, sizeof *g[ng].a);
			size_t k = 0;
			bson_iter_init(&it, &sp);
			while (bson_iter_next(&it)) {
				if (!strcmp(bson_iter_key(&it), "_id")) continue;
				bson_iter_t op;
				if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &op) || !bson_iter_next(&op)) continue;
				g[ng].a[k].op = bson_iter_key(&op);
				g[ng].a[k].expr = op;
				k++;
			}
			ng++;
		} else {
			bson_destroy(key);
		}
		for (size_t k = 0; k < nacc; k++) if (g[j].a[k].op) acc_add(&g[j].a[k], (*docs)[i]);
	}
	free_docs(*docs, *n);
	*docs = malloc((ng + 1) * sizeof **docs);
	for (size_t j = 0; j < ng; j++) {
		bson_t *o = bson_new();
		bson_concat(o, g[j].key);
		size_t k = 0;
		bson_iter_init(&it, &sp);
		while (bson_iter_next(&it)) {
			if (!strcmp(bson_iter_key(&it), "_id")) continue;
			if (g[j].a[k].op) acc_out(&g[j].a[k], o, bson_iter_key(&it));
			k++;
		}
		(*docs)[j] = o;
		bson_destroy(g[j].key);
		free(g[j].a);
	}
	free(g);
	*n = ng;
	return 0;
}

static bool proj_simple(const bson_t *p)
{
	bson_iter_t it;
	bson_iter_init(&it, p);
	while (bson_iter_next(&it))
		if (!sim_is_number(bson_iter_type(&it)) && !BSON_ITER_HOLDS_BOOL(&it)) return false;
	return true;
}

static int cmd_aggregate(struct ctx *x)
{
	bson_iter_t it;
	bson_t pipe;
	if (!get_doc(x->cmd, "pipeline", &pipe)) return err(x, E_FAILEDTOPARSE, "BSON field 'aggregate.pipeline' is missing but a required field");
	const char *name = get_str(x->cmd, x->name);
	if (!name) return err(x, E_INVALIDNS, "aggregate on a database is not supported by mongosim");
	bson_t **d; size_t n;
	int rc = matching_docs(x, name, NULL, &d, &n);
	if (rc) return rc;
	bson_iter_init(&it, &pipe);
	while (!rc && bson_iter_next(&it)) {
		bson_t st;
		bson_iter_t s;
		if (!doc_of(&it, &st) || !bson_iter_init(&s, &st) || !bson_iter_next(&s)) { rc = err(x, 40323, "A pipeline stage specification object must contain exactly one field."); break; }
		const char *op = bson_iter_key(&s);
		bson_t arg;
		if (!strcmp(op, "$match")) {
			if (!doc_of(&s, &arg)) { rc = err(x, 15959, "the match filter must be an expression in an object"); break; }
			size_t j = 0;
			const char *e = NULL;
			for (size_t i = 0; i < n; i++) {
				if (sim_match(d[i], &arg, &e)) d[j++] = d[i]; else bson_destroy(d[i]);
			}
			n = j;
			if (e) rc = err(x, E_BADVALUE, "%s", e);
		} else if (!strcmp(op, "$sort")) {
			if (!doc_of(&s, &arg)) { rc = err(x, 15973, "the $sort key specification must be an object"); break; }
			sort_spec = &arg;
			if (n > 1) qsort(d, n, sizeof *d, cmp_docs_sort);
		} else if (!strcmp(op, "$limit") || !strcmp(op, "$skip")) {
			int64_t v = sim_int(&s);
			if (v < 0 || (v == 0 && op[1] == 'l')) { rc = err(x, 15958, "the limit must be positive"); break; }
			if (op[1] == 'l') {
				for (size_t i = (size_t)v; i < n; i++) bson_destroy(d[i]);
				if ((size_t)v < n) n = (size_t)v;
			} else {
				size_t k = (size_t)v < n ? (size_t)v : n;
				for (size_t i = 0; i < k; i++) bson_destroy(d[i]);
				memmove(d, d + k, (n - k) * sizeof *d);
				n -= k;
			}
		} else if (!strcmp(op, "$project") || !strcmp(op, "$addFields") || !strcmp(op, "$set")) {
			if (!doc_of(&s, &arg)) { rc = err(x, 15969, "$project specification must be an object"); break; }
			bool add = op[1] != 'p';
			for (size_t i = 0; i < n; i++) {
				bson_t *o = bson_new();
				if (!add && proj_simple(&arg)) {
					sim_project(d[i], &arg, o);
				} else {
					bson_iter_t f, pi;
					if (add) {
						bson_iter_init(&f, d[i]);
						while (bson_iter_next(&f)) if (!bson_has_field(&arg, bson_iter_key(&f))) bson_append_iter(o, NULL, 0, &f);
					} else if (!(bson_iter_init_find(&pi, &arg, "_id") && !bson_iter_as_bool(&pi)) &&
					           bson_iter_init_find(&f, d[i], "_id") && !bson_has_field(&arg, "_id")) {
						bson_append_iter(o, NULL, 0, &f);
					}
					bson_iter_init(&pi, &arg);
					while (bson_iter_next(&pi)) {
						const char *k = bson_iter_key(&pi);
						if (!add && (sim_is_number(bson_iter_type(&pi)) || BSON_ITER_HOLDS_BOOL(&pi))) {
							if (bson_iter_as_bool(&pi) && bson_iter_init_find(&f, d[i], k)) bson_append_iter(o, NULL, 0, &f);
						} else {
							eval_expr(d[i], &pi, o, k);
						}
					}
				}
				bson_destroy(d[i]);
				d[i] = o;
			}
		} else if (!strcmp(op, "$group")) {
			rc = stage_group(x, &s, &d, &n);
		} else if (!strcmp(op, "$count")) {
			const char *f = BSON_ITER_HOLDS_UTF8(&s) ? bson_iter_utf8(&s, NULL) : NULL;
			if (!f || !*f) { rc = err(x, 40156, "the count field must be a non-empty string"); break; }
			size_t cnt = n;
			free_docs(d, n);
			d = malloc(sizeof *d);
			n = 0;
			if (cnt) { d[0] = bson_new(); BSON_APPEND_INT32(d[0], f, (int32_t)cnt); n = 1; }
		} else if (!strcmp(op, "$unwind")) {
			const char *p = BSON_ITER_HOLDS_UTF8(&s) ? bson_iter_utf8(&s, NULL) : NULL;
			if (!p || p[0] != '$') { rc = err(x, 28812, "no path specified to $unwind stage"); break; }
			bson_t **nd = NULL; size_t nn = 0;
			for (size_t i = 0; i < n; i++) {
				bson_iter_t v;
				if (bson_iter_init_find(&v, d[i], p + 1) && BSON_ITER_HOLDS_ARRAY(&v)) {
					bson_iter_t e;
					bson_iter_recurse(&v, &e);
					while (bson_iter_next(&e)) {
						bson_t *o = bson_new();
						bson_iter_t f;
						bson_iter_init(&f, d[i]);
						while (bson_iter_next(&f)) {
							if (!strcmp(bson_iter_key(&f), p + 1)) bson_append_iter(o, p + 1, -1, &e);
							else bson_append_iter(o, NULL, 0, &f);
						}
						nd = realloc(nd, (nn + 1) * sizeof *nd);
						nd[nn++] = o;
					}
				} else if (bson_iter_init_find(&v, d[i], p + 1) && !BSON_ITER_HOLDS_NULL(&v)) {
					nd = realloc(nd, (nn + 1) * sizeof *nd);
					nd[nn++] = bson_copy(d[i]);
				}
			}
			free_docs(d, n);
			d = nd ? nd : malloc(sizeof *d);
			n = nn;
		} else {
			rc = err(x, E_LOCATION, "Unrecognized pipeline stage name: '%s'", op);
		}
	}
	if (rc) { free_docs(d, n); return rc; }
	bson_t cur;
	int64_t batch = 101;
	if (get_doc(x->cmd, "cursor", &cur)) batch = get_int(&cur, "batchSize", 101);
	char ns[512];
	snprintf(ns, sizeof ns, "%s.%s", x->db, name);
	if (batch == 0) {
		struct sim_cursor *c = cursor_new(ns);
		c->docs = d; c->ndocs = n;
		bson_t arr = BSON_INITIALIZER;
		cursor_reply(x, ns, &arr, "firstBatch", c->id);
		bson_destroy(&arr);
		return 0;
	}
	reply_docs(x, ns, d, n, batch, false);
	return 0;
}

/* ---- findAndModify ---- */

static int cmd_findandmodify(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	bson_t q, sort, upd, fields;
	bool hq = get_doc(x->cmd, "query", &q), hs = get_doc(x->cmd, "sort", &sort);
	bool hf = get_doc(x->cmd, "fields", &fields);
	bool remove = get_bool(x->cmd, "remove", false), want_new = get_bool(x->cmd, "new", false);
	bool upsert = get_bool(x->cmd, "upsert", false);
	bson_iter_t ui;
	bool hu = bson_iter_init_find(&ui, x->cmd, "update");
	if (hu && BSON_ITER_HOLDS_ARRAY(&ui)) return err(x, E_FAILEDTOPARSE, "pipeline-style updates are not supported by mongosim");
	if (hu && !doc_of(&ui, &upd)) return err(x, E_FAILEDTOPARSE, "Update argument must be either an object or an array");
	if (remove == hu) return err(x, E_FAILEDTOPARSE, remove ? "Cannot specify both an update and remove=true" : "Either an update or remove=true must be specified");
	if (remove && upsert) return err(x, E_FAILEDTOPARSE, "Cannot specify both upsert=true and remove=true");
	if (!writable()) return not_primary(x);
	struct sim_coll *c;
	int rc = coll_for_write(x, name, &c);
	if (rc) return rc;
	x->stmt = 0;
	bson_t empty = BSON_INITIALIZER;
	struct slots s = { 0 };
	int64_t deadline = deadline_of(x);
	for (;;) {
		s.n = 0;
		if ((rc = collect(x, c, hq ? &q : &empty, hs ? &sort : NULL, 1, &s))) break;
		for (size_t k = 0; k < s.n && !rc; k++) rc = lock_check(x, &c->slots[s.v[k]]);
		if (rc != SIM_WAIT) break;
		if (!wait_locks(deadline)) { rc = err(x, E_MAXTIMEMS, "operation exceeded time limit"); break; }
		if (!(c = sim_coll_get(x->db, name)) && (rc = coll_for_write(x, name, &c))) break;
	}
	bson_t leo = BSON_INITIALIZER;
	bson_t *value = NULL;
	if (!rc && s.n) {
		if (remove) {
			value = bson_copy(sim_visible(&c->slots[s.v[0]], x->txn));
			delete_slot(x, c, s.v[0], x->retryable ? "preImage" : NULL);
			sim_coll_compact(c);
			BSON_APPEND_INT32(&leo, "n", 1);
		} else {
			bool ch;
			bson_t *pre = NULL, *post = NULL;
			x->query = hq ? &q : NULL;
			rc = update_slot(x, c, s.v[0], &upd, &ch, &pre, &post, x->retryable ? (want_new ? "postImage" : "preImage") : NULL);
			if (!rc) {
				value = want_new ? post : pre;
				if (want_new && pre) bson_destroy(pre);
				if (!want_new && post) bson_destroy(post);
				BSON_APPEND_INT32(&leo, "n", 1);
				BSON_APPEND_BOOL(&leo, "updatedExisting", true);
			}
		}
	} else if (!rc && upsert) {
		bson_t idd = BSON_INITIALIZER;
		bson_t *post = NULL;
		rc = do_upsert(x, c, hq ? &q : &empty, &upd, &idd, &post);
		if (!rc) {
			BSON_APPEND_INT32(&leo, "n", 1);
			BSON_APPEND_BOOL(&leo, "updatedExisting", false);
			bson_iter_t idi;
			bson_iter_init_find(&idi, &idd, "_id");
			bson_append_iter(&leo, "upserted", 8, &idi);
			if (want_new) value = post; else if (post) bson_destroy(post);
		}
		bson_destroy(&idd);
	} else if (!rc) {
		BSON_APPEND_INT32(&leo, "n", 0);
		if (!remove) BSON_APPEND_BOOL(&leo, "updatedExisting", false);
	}
	free(s.v);
	bson_destroy(&empty);
	if (!rc) {
		BSON_APPEND_DOCUMENT(x->reply, "lastErrorObject", &leo);
		if (value) {
			if (hf) {
				bson_t p = BSON_INITIALIZER;
				sim_project(value, &fields, &p);
				BSON_APPEND_DOCUMENT(x->reply, "value", &p);
				bson_destroy(&p);
			} else {
				BSON_APPEND_DOCUMENT(x->reply, "value", value);
			}
		} else {
			bson_append_null(x->reply, "value", 5);
		}
	}
	if (value) bson_destroy(value);
	bson_destroy(&leo);
	return rc;
}

/* ---- DDL ---- */

static int cmd_create(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	int rc = check_names(x, x->db, name);
	if (rc) return rc;
	if (!writable()) return not_primary(x);
	if (sim_coll_get(x->db, name)) return err(x, E_NAMESPACEEXISTS, "Collection %s.%s already exists.", x->db, name);
	bson_t opts = BSON_INITIALIZER;
	bson_iter_t it;
	bson_iter_init(&it, x->cmd);
	bson_iter_next(&it);
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		if (k[0] == '$' || !strcmp(k, "lsid") || !strcmp(k, "txnNumber") || !strcmp(k, "writeConcern") ||
		    !strcmp(k, "autocommit") || !strcmp(k, "startTransaction") || !strcmp(k, "comment") ||
		    !strcmp(k, "maxTimeMS") || !strcmp(k, "apiVersion") || !strcmp(k, "apiStrict") || !strcmp(k, "readConcern"))
			continue;
		bson_append_iter(&opts, NULL, 0, &it);
	}
	coll_create(x, x->db, name, &opts);
	bson_destroy(&opts);
	return 0;
}

static void drop_coll(struct ctx *x, struct sim_coll *c)
{
	abort_txns_on(c);
	if (!is_local(c->db)) {
		bson_t o = BSON_INITIALIZER, o2 = BSON_INITIALIZER;
		BSON_APPEND_UTF8(&o, "drop", c->name);
		BSON_APPEND_INT32(&o2, "numRecords", (int32_t)c->live);
		log_cmd(x, c->db, c->uuid, &o, &o2);
		bson_destroy(&o); bson_destroy(&o2);
	}
	/* cursors keep copies, nothing else points at the collection */
	sim_coll_remove(c);
}

static int cmd_drop(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	int rc = check_names(x, x->db, name);
	if (rc) return rc;
	if (!writable()) return not_primary(x);
	struct sim_coll *c = sim_coll_get(x->db, name);
	char ns[512];
	snprintf(ns, sizeof ns, "%s.%s", x->db, name);
	if (!c) return 0;   /* 7.0: dropping a missing collection succeeds */
	BSON_APPEND_INT32(x->reply, "nIndexesWas", (int32_t)c->nidx);
	BSON_APPEND_UTF8(x->reply, "ns", ns);
	drop_coll(x, c);
	return 0;
}

static int cmd_dropdatabase(struct ctx *x)
{
	if (!writable()) return not_primary(x);
	bool any = false;
	for (size_t i = 0; i < sim.ncolls;) {
		if (!strcmp(sim.colls[i]->db, x->db)) { drop_coll(x, sim.colls[i]); any = true; }
		else i++;
	}
	if (any && !is_local(x->db)) {
		bson_t o = BSON_INITIALIZER;
		BSON_APPEND_INT32(&o, "dropDatabase", 1);
		log_cmd(x, x->db, NULL, &o, NULL);
		bson_destroy(&o);
	}
	BSON_APPEND_UTF8(x->reply, "dropped", x->db);
	return 0;
}

static bool split_ns(const char *ns, char *db, size_t dn, const char **coll)
{
	const char *dot = ns ? strchr(ns, '.') : NULL;
	if (!dot || (size_t)(dot - ns) >= dn || !dot[1]) return false;
	memcpy(db, ns, (size_t)(dot - ns));
	db[dot - ns] = 0;
	*coll = dot + 1;
	return true;
}

static int cmd_rename(struct ctx *x)
{
	const char *from = get_str(x->cmd, x->name), *to = get_str(x->cmd, "to");
	char fdb[256], tdb[256];
	const char *fc, *tc;
	if (!split_ns(from, fdb, sizeof fdb, &fc) || !split_ns(to, tdb, sizeof tdb, &tc))
		return err(x, E_INVALIDNS, "Invalid namespace specified '%s'", from ? from : "");
	if (strcmp(x->db, "admin")) return err(x, 13, "renameCollection may only be run against the admin database.");
	int rc = check_names(x, tdb, tc);
	if (rc) return rc;
	if (!writable()) return not_primary(x);
	struct sim_coll *c = sim_coll_get(fdb, fc);
	if (!c) return err(x, E_NSNOTFOUND, "Source collection %s does not exist", from);
	struct sim_coll *t = sim_coll_get(tdb, tc);
	bool drop_target = get_bool(x->cmd, "dropTarget", false);
	if (t && !drop_target) return err(x, E_NAMESPACEEXISTS, "target namespace exists");
	abort_txns_on(c);
	bson_t o = BSON_INITIALIZER;
	BSON_APPEND_UTF8(&o, "renameCollection", from);
	BSON_APPEND_UTF8(&o, "to", to);
	BSON_APPEND_BOOL(&o, "stayTemp", get_bool(x->cmd, "stayTemp", false));
	if (t) {
		append_uuid(&o, "dropTarget", t->uuid);
		abort_txns_on(t);
		sim_coll_remove(t);
	}
	if (!is_local(fdb)) log_cmd(x, fdb, c->uuid, &o, NULL);
	bson_destroy(&o);
	sim_coll_rename(c, tdb, tc);
	return 0;
}

static const char *index_name(const bson_t *spec)
{
	return get_str(spec, "name");
}

static int cmd_createindexes(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	bson_t idx;
	if (!get_doc(x->cmd, "indexes", &idx)) return err(x, E_FAILEDTOPARSE, "BSON field 'createIndexes.indexes' is missing but a required field");
	int rc = check_names(x, x->db, name);
	if (rc) return rc;
	if (!writable()) return not_primary(x);
	struct sim_coll *c = sim_coll_get(x->db, name);
	bool created = false;
	if (!c) { c = coll_create(x, x->db, name, NULL); created = true; }
	int32_t before = (int32_t)c->nidx;
	bson_t *news[64]; size_t nn = 0;
	bson_iter_t it;
	bson_iter_init(&it, &idx);
	while (bson_iter_next(&it) && nn < 64) {
		bson_t spec, key;
		if (!doc_of(&it, &spec) || !get_doc(&spec, "key", &key) || bson_empty(&key)) { rc = err(x, E_FAILEDTOPARSE, "The 'key' field is a required property of an index specification"); break; }
		const char *iname = index_name(&spec);
		if (!iname) { rc = err(x, E_FAILEDTOPARSE, "The 'name' field is a required property of an index specification"); break; }
		bool dup = false;
		for (size_t i = 0; i < c->nidx && !rc; i++) {
			bson_t ek;
			get_doc(c->indexes[i], "key", &ek);
			bool same_key = ek.len == key.len && !memcmp(bson_get_data(&ek), bson_get_data(&key), key.len);
			bool same_name = !strcmp(index_name(c->indexes[i]), iname);
			if (same_key && same_name) {
				if (get_bool(c->indexes[i], "unique", false) != get_bool(&spec, "unique", false) && i > 0)
					rc = err(x, E_INDEXOPTIONSCONFLICT, "An existing index has the same name as the requested index. When index names are not specified, they are auto generated and can cause conflicts. Please refer to our documentation. Requested index: %s, existing index: %s", iname, iname);
				dup = true;
			} else if (same_name) {
				rc = err(x, E_INDEXKEYSPECSCONFLICT, "An existing index has the same name as the requested index. When index names are not specified, they are auto generated and can cause conflicts. Please refer to our documentation. Requested index: %s, existing index: %s", iname, iname);
			} else if (same_key && i > 0) {
				rc = err(x, E_INDEXOPTIONSCONFLICT, "Index already exists with a different name: %s", index_name(c->indexes[i]));
			}
		}
		if (rc) break;
		if (dup) continue;
		bson_t *s = bson_new();
		BSON_APPEND_INT32(s, "v", 2);
		bson_copy_to_excluding_noinit(&spec, s, "v", "ns", NULL);
		news[nn++] = s;
	}
	/* unique indexes must hold on existing data */
	for (size_t k = 0; k < nn && !rc; k++) {
		if (!index_unique(news[k])) continue;
		for (size_t a = 0; a < c->nslots && !rc; a++) {
			const bson_t *da = sim_visible(&c->slots[a], NULL);
			if (!da || !index_covers(news[k], da)) continue;
			bson_t ka = BSON_INITIALIZER;
			index_key_value(news[k], da, &ka);
			for (size_t b = a + 1; b < c->nslots && !rc; b++) {
				const bson_t *db = sim_visible(&c->slots[b], NULL);
				if (!db || !index_covers(news[k], db)) continue;
				bson_t kb = BSON_INITIALIZER;
				index_key_value(news[k], db, &kb);
				if (sim_cmp_docs(bson_get_data(&ka), ka.len, bson_get_data(&kb), kb.len) == 0)
					rc = dup_error(x, c, news[k], &kb);
				bson_destroy(&kb);
			}
			bson_destroy(&ka);
		}
	}
	if (rc) {
		for (size_t k = 0; k < nn; k++) bson_destroy(news[k]);
		return rc;
	}
	/* an empty collection logs createIndexes; otherwise a two-phase build
	 * (startIndexBuild / commitIndexBuild with one indexBuildUUID) */
	if (nn && !is_local(c->db)) {
		if (c->live == 0) {
			for (size_t k = 0; k < nn; k++) {
				bson_t o = BSON_INITIALIZER;
				BSON_APPEND_UTF8(&o, "createIndexes", c->name);
				bson_concat(&o, news[k]);
				log_cmd(x, c->db, c->uuid, &o, NULL);
				bson_destroy(&o);
			}
		} else {
			uint8_t bu[16];
			for (int i = 0; i < 16; i++) bu[i] = (uint8_t)random();
			bu[6] = (bu[6] & 0x0f) | 0x40; bu[8] = (bu[8] & 0x3f) | 0x80;
			for (int phase = 0; phase < 2; phase++) {
				bson_t o = BSON_INITIALIZER, arr;
				BSON_APPEND_UTF8(&o, phase ? "commitIndexBuild" : "startIndexBuild", c->name);
				append_uuid(&o, "indexBuildUUID", bu);
				BSON_APPEND_ARRAY_BEGIN(&o, "indexes", &arr);
				for (size_t k = 0; k < nn; k++) {
					char kb[16]; const char *kp;
					key_str(kb, sizeof kb, (uint32_t)k, &kp);
					BSON_APPEND_DOCUMENT(&arr, kp, news[k]);
				}
				bson_append_array_end(&o, &arr);
				log_cmd(x, c->db, c->uuid, &o, NULL);
				bson_destroy(&o);
			}
		}
	}
	for (size_t k = 0; k < nn; k++) {
		c->indexes = realloc(c->indexes, (c->nidx + 1) * sizeof *c->indexes);
		c->indexes[c->nidx++] = news[k];
	}
	if (nn) sim_uidx_rebuild(c);
	BSON_APPEND_INT32(x->reply, "numIndexesBefore", before);
	BSON_APPEND_INT32(x->reply, "numIndexesAfter", (int32_t)c->nidx);
	if (!nn) BSON_APPEND_UTF8(x->reply, "note", "all indexes already exist");
	BSON_APPEND_BOOL(x->reply, "createdCollectionAutomatically", created);
	return 0;
}

static int cmd_dropindexes(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	if (!writable()) return not_primary(x);
	struct sim_coll *c = sim_coll_get(x->db, name ? name : "");
	if (!c) return err(x, E_NSNOTFOUND, "ns not found %s.%s", x->db, name ? name : "");
	bson_iter_t it;
	if (!bson_iter_init_find(&it, x->cmd, "index")) return err(x, E_FAILEDTOPARSE, "BSON field 'dropIndexes.index' is missing but a required field");
	int32_t was = (int32_t)c->nidx;
	bool drop[256] = { false };
	if (BSON_ITER_HOLDS_UTF8(&it) && !strcmp(bson_iter_utf8(&it, NULL), "*")) {
		for (size_t i = 1; i < c->nidx && i < 256; i++) drop[i] = true;
	} else if (BSON_ITER_HOLDS_UTF8(&it) || BSON_ITER_HOLDS_ARRAY(&it)) {
		bson_iter_t e;
		bool arr = BSON_ITER_HOLDS_ARRAY(&it);
		if (arr) bson_iter_recurse(&it, &e);
		for (bool more = arr ? bson_iter_next(&e) : true; more; more = arr ? bson_iter_next(&e) : false) {
			const char *n = bson_iter_utf8(arr ? &e : &it, NULL);
			if (!n) return err(x, E_TYPEMISMATCH, "index names must be strings");
			if (!strcmp(n, "_id_")) return err(x, 72, "cannot drop _id index");
			size_t i;
			for (i = 1; i < c->nidx; i++) if (!strcmp(index_name(c->indexes[i]), n)) break;
			if (i == c->nidx) return err(x, E_INDEXNOTFOUND, "index not found with name [%s]", n);
			if (i < 256) drop[i] = true;
		}
	} else if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
		bson_t key;
		doc_of(&it, &key);
		size_t i;
		for (i = 0; i < c->nidx; i++) {
			bson_t ek;
			get_doc(c->indexes[i], "key", &ek);
			if (ek.len == key.len && !memcmp(bson_get_data(&ek), bson_get_data(&key), key.len)) break;
		}
		if (i == c->nidx) return err(x, E_INDEXNOTFOUND, "can't find index with key: ...");
		if (i == 0) return err(x, 72, "cannot drop _id index");
		if (i < 256) drop[i] = true;
	} else {
		return err(x, E_TYPEMISMATCH, "BSON field 'dropIndexes.index' is the wrong type");
	}
	size_t j = 0;
	for (size_t i = 0; i < c->nidx; i++) {
		if (i < 256 && drop[i]) {
			if (!is_local(c->db)) {
				bson_t o = BSON_INITIALIZER;
				BSON_APPEND_UTF8(&o, "dropIndexes", c->name);
				BSON_APPEND_UTF8(&o, "index", index_name(c->indexes[i]));
				log_cmd(x, c->db, c->uuid, &o, c->indexes[i]);
				bson_destroy(&o);
			}
			bson_destroy(c->indexes[i]);
		} else {
			c->indexes[j++] = c->indexes[i];
		}
	}
	c->nidx = j;
	sim_uidx_rebuild(c);
	BSON_APPEND_INT32(x->reply, "nIndexesWas", was);
	return 0;
}

static int cmd_collmod(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	if (!writable()) return not_primary(x);
	struct sim_coll *c = sim_coll_get(x->db, name ? name : "");
	if (!c) return err(x, E_NSNOTFOUND, "ns does not exist");
	bson_t o = BSON_INITIALIZER, o2 = BSON_INITIALIZER, co, io;
	bson_t newopts = BSON_INITIALIZER;
	BSON_APPEND_UTF8(&o, "collMod", c->name);
	BSON_APPEND_DOCUMENT_BEGIN(&o2, "collectionOptions_old", &co);
	append_uuid(&co, "uuid", c->uuid);
	bson_iter_t it, old;
	bson_iter_init(&it, x->cmd);
	bson_iter_next(&it);
	bool index_mod = false;
	bson_t index_old = BSON_INITIALIZER;
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		if (k[0] == '$' || !strcmp(k, "lsid") || !strcmp(k, "txnNumber") || !strcmp(k, "writeConcern") || !strcmp(k, "maxTimeMS") || !strcmp(k, "comment"))
			continue;
		bson_append_iter(&o, NULL, 0, &it);
		if (!strcmp(k, "index") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
			bson_t spec;
			doc_of(&it, &spec);
			const char *iname = get_str(&spec, "name");
			size_t i;
			for (i = 0; i < c->nidx; i++) if (iname && !strcmp(index_name(c->indexes[i]), iname)) break;
			if (i == c->nidx) {
				bson_destroy(&o); bson_destroy(&index_old); bson_destroy(&newopts);
				bson_append_document_end(&o2, &co);
				bson_destroy(&o2);
				return err(x, E_INDEXNOTFOUND, "cannot find index %s for ns %s", iname ? iname : "", c->ns);
			}
			index_mod = true;
			bson_iter_t f;
			bson_iter_init(&f, &spec);
			bson_t *ns = bson_copy(c->indexes[i]);
			while (bson_iter_next(&f)) {
				const char *fk = bson_iter_key(&f);
				if (!strcmp(fk, "name") || !strcmp(fk, "keyPattern")) continue;
				bson_iter_t ov;
				char oldk[128];
				snprintf(oldk, sizeof oldk, "%s_old", fk);
				if (bson_iter_init_find(&ov, c->indexes[i], fk)) {
					bson_append_iter(&index_old, fk, -1, &ov);
					bson_append_iter(x->reply, oldk, -1, &ov);
				}
				char newk[128];
				snprintf(newk, sizeof newk, "%s_new", fk);
				bson_append_iter(x->reply, newk, -1, &f);
				bson_t *t = bson_new();
				bson_copy_to_excluding_noinit(ns, t, fk, NULL);
				bson_append_iter(t, fk, -1, &f);
				bson_destroy(ns);
				ns = t;
			}
			bson_destroy(c->indexes[i]);
			c->indexes[i] = ns;
			sim_uidx_rebuild(c);
		} else {
			if (bson_iter_init_find(&old, c->options, k)) bson_append_iter(&co, k, -1, &old);
			bson_append_iter(&newopts, k, -1, &it);
		}
	}
	bson_append_document_end(&o2, &co);
	if (index_mod) {
		BSON_APPEND_DOCUMENT_BEGIN(&o2, "indexOptions_old", &io);
		bson_concat(&io, &index_old);
		bson_append_document_end(&o2, &io);
	}
	if (!bson_empty(&newopts)) {
		bson_t *merged = bson_new();
		bson_iter_init(&it, c->options);
		while (bson_iter_next(&it)) if (!bson_has_field(&newopts, bson_iter_key(&it))) bson_append_iter(merged, NULL, 0, &it);
		bson_concat(merged, &newopts);
		bson_destroy(c->options);
		c->options = merged;
	}
	if (!is_local(c->db)) log_cmd(x, c->db, c->uuid, &o, &o2);
	bson_destroy(&o); bson_destroy(&o2); bson_destroy(&index_old); bson_destroy(&newopts);
	return 0;
}

/* ---- listings ---- */

static void coll_info(struct sim_coll *c, bson_t *d, bool name_only)
{
	BSON_APPEND_UTF8(d, "name", c->name);
	BSON_APPEND_UTF8(d, "type", "collection");
	if (name_only) return;
	BSON_APPEND_DOCUMENT(d, "options", c->options);
	bson_t info;
	BSON_APPEND_DOCUMENT_BEGIN(d, "info", &info);
	BSON_APPEND_BOOL(&info, "readOnly", false);
	append_uuid(&info, "uuid", c->uuid);
	bson_append_document_end(d, &info);
	BSON_APPEND_DOCUMENT(d, "idIndex", c->indexes[0]);
}

static int cmd_listcollections(struct ctx *x)
{
	bson_t filter;
	bool hf = get_doc(x->cmd, "filter", &filter);
	bool name_only = get_bool(x->cmd, "nameOnly", false);
	bson_t **docs = malloc((sim.ncolls + 2) * sizeof *docs);
	size_t n = 0;
	const char *e = NULL;
	for (size_t i = 0; i < sim.ncolls; i++) {
		if (strcmp(sim.colls[i]->db, x->db)) continue;
		bson_t *d = bson_new();
		coll_info(sim.colls[i], d, name_only);
		if (hf && !sim_match(d, &filter, &e)) { bson_destroy(d); continue; }
		docs[n++] = d;
	}
	if (is_local(x->db)) {
		bson_t *d = bson_new();
		BSON_APPEND_UTF8(d, "name", "oplog.rs");
		BSON_APPEND_UTF8(d, "type", "collection");
		if (!name_only) {
			bson_t o, info;
			BSON_APPEND_DOCUMENT_BEGIN(d, "options", &o);
			BSON_APPEND_BOOL(&o, "capped", true);
			BSON_APPEND_INT64(&o, "size", (int64_t)sim.oplog.max_bytes);
			BSON_APPEND_BOOL(&o, "autoIndexId", false);
			bson_append_document_end(d, &o);
			BSON_APPEND_DOCUMENT_BEGIN(d, "info", &info);
			BSON_APPEND_BOOL(&info, "readOnly", false);
			bson_append_document_end(d, &info);
		}
		if (hf && !sim_match(d, &filter, &e)) bson_destroy(d);
		else docs[n++] = d;
	}
	char ns[300];
	snprintf(ns, sizeof ns, "%s.$cmd.listCollections", x->db);
	reply_docs(x, ns, docs, n, 101, false);
	return 0;
}

static int cmd_listindexes(struct ctx *x)
{
	const char *name = get_str(x->cmd, x->name);
	struct sim_coll *c = sim_coll_get(x->db, name ? name : "");
	if (!c) return err(x, E_NSNOTFOUND, "ns does not exist: %s.%s", x->db, name ? name : "");
	bson_t **docs = malloc((c->nidx + 1) * sizeof *docs);
	for (size_t i = 0; i < c->nidx; i++) docs[i] = bson_copy(c->indexes[i]);
	char ns[600];
	snprintf(ns, sizeof ns, "%s.$cmd.listIndexes.%s", x->db, c->name);
	reply_docs(x, ns, docs, c->nidx, 101, false);
	return 0;
}

static int cmd_listdatabases(struct ctx *x)
{
	const char *names[256];
	size_t n = 0;
	const char *fixed[] = { "admin", "config", "local" };
	for (int k = 0; k < 3; k++) names[n++] = fixed[k];
	for (size_t i = 0; i < sim.ncolls && n < 256; i++) {
		size_t j;
		for (j = 0; j < n; j++) if (!strcmp(names[j], sim.colls[i]->db)) break;
		if (j == n) names[n++] = sim.colls[i]->db;
	}
	bool name_only = get_bool(x->cmd, "nameOnly", false);
	bson_t arr;
	int64_t total = 0;
	BSON_APPEND_ARRAY_BEGIN(x->reply, "databases", &arr);
	for (size_t j = 0; j < n; j++) {
		int64_t size = 0;
		bool empty = true;
		for (size_t i = 0; i < sim.ncolls; i++) {
			if (strcmp(sim.colls[i]->db, names[j])) continue;
			empty = false;
			size += 4096 + (int64_t)sim.colls[i]->live * 64;
		}
		if (!strcmp(names[j], "local")) { empty = false; size += (int64_t)sim.oplog.bytes; }
		if (empty && strcmp(names[j], "admin") && strcmp(names[j], "config")) continue;
		if (empty) size = 8192;
		char kb[16]; const char *kp;
		key_str(kb, sizeof kb, (uint32_t)j, &kp);
		bson_t d;
		BSON_APPEND_DOCUMENT_BEGIN(&arr, kp, &d);
		BSON_APPEND_UTF8(&d, "name", names[j]);
		if (!name_only) {
			BSON_APPEND_INT64(&d, "sizeOnDisk", size);
			BSON_APPEND_BOOL(&d, "empty", false);
		}
		bson_append_document_end(&arr, &d);
		total += size;
	}
	bson_append_array_end(x->reply, &arr);
	if (!name_only) {
		BSON_APPEND_INT64(x->reply, "totalSize", total);
		BSON_APPEND_INT64(x->reply, "totalSizeMb", total / (1024 * 1024));
	}
	return 0;
}

static int cmp_by_id(const void *a, const void *b)
{
	const bson_t *x = *(const bson_t *const *)a, *y = *(const bson_t *const *)b;
	bson_iter_t i, j;
	bson_iter_init_find(&i, x, "_id");
	bson_iter_init_find(&j, y, "_id");
	return sim_cmp_iter(&i, &j);
}

static int cmp_coll_names(const void *a, const void *b)
{
	return strcmp((*(struct sim_coll *const *)a)->name, (*(struct sim_coll *const *)b)->name);
}

/* dbHash (src/mongo/db/commands/dbhash.cpp): per collection an md5 over the
 * documents' bytes in _id index order, and an md5 over the collections' hex
 * hashes in name order; reply {host, collections, capped, uuids, md5,
 * timeMillis} */
static int cmd_dbhash(struct ctx *x)
{
	bson_t want;
	bool hw = get_doc(x->cmd, "collections", &want);
	struct sim_coll *cs[1024];
	size_t n = 0;
	for (size_t i = 0; i < sim.ncolls && n < 1024; i++) {
		struct sim_coll *c = sim.colls[i];
		/* dbhash.cpp skips what is not replicated (local, system.profile) and
		 * incremental map-reduce collections */
		if (strcmp(c->db, x->db) || is_local(c->db) || !strcmp(c->name, "system.profile") ||
		    !strncmp(c->name, "tmp.mr.", 7))
			continue;
		if (hw) {
			bool found = false;
			bson_iter_t it;
			bson_iter_init(&it, &want);
			while (bson_iter_next(&it)) if (BSON_ITER_HOLDS_UTF8(&it) && !strcmp(bson_iter_utf8(&it, NULL), c->name)) found = true;
			if (!found) continue;
		}
		cs[n++] = c;
	}
	if (n > 1) qsort(cs, n, sizeof *cs, cmp_coll_names);
	int64_t t0 = sim_mono_ms();
	bson_t colls, uuids, capped;
	struct sim_md5 all;
	sim_md5_init(&all);
	BSON_APPEND_UTF8(x->reply, "host", sim.host);
	bson_init(&colls);
	bson_init(&capped);
	uint32_t ncap = 0;
	for (size_t k = 0; k < n; k++) {
		struct sim_coll *c = cs[k];
		const bson_t **d = malloc((c->nslots + 1) * sizeof *d);
		size_t m = 0;
		for (size_t i = 0; i < c->nslots; i++) {
			const bson_t *v = sim_visible(&c->slots[i], x->txn);
			if (v) d[m++] = v;
		}
		if (m > 1) qsort(d, m, sizeof *d, cmp_by_id);
		struct sim_md5 h;
		sim_md5_init(&h);
		for (size_t i = 0; i < m; i++) sim_md5_update(&h, bson_get_data(d[i]), d[i]->len);
		free(d);
		char hex[33];
		sim_md5_hex(&h, hex);
		BSON_APPEND_UTF8(&colls, c->name, hex);
		sim_md5_update(&all, hex, 32);
		if (c->capped) {
			char kb[16]; const char *kp;
			key_str(kb, sizeof kb, ncap++, &kp);
			BSON_APPEND_UTF8(&capped, kp, c->name);
		}
	}
	BSON_APPEND_DOCUMENT(x->reply, "collections", &colls);
	BSON_APPEND_ARRAY(x->reply, "capped", &capped);
	bson_destroy(&colls);
	bson_destroy(&capped);
	BSON_APPEND_DOCUMENT_BEGIN(x->reply, "uuids", &uuids);
	for (size_t k = 0; k < n; k++) append_uuid(&uuids, cs[k]->name, cs[k]->uuid);
	bson_append_document_end(x->reply, &uuids);
	char hex[33];
	sim_md5_hex(&all, hex);
	BSON_APPEND_UTF8(x->reply, "md5", hex);
	BSON_APPEND_INT32(x->reply, "timeMillis", (int32_t)(sim_mono_ms() - t0));
	return 0;
}

/* ---- transactions ---- */

/* writes the commit: one applyOps entry, or a partialTxn chain of entries of
 * at most --txn-split-ops operations whose last carries count */
static void txn_log_commit(struct ctx *x, struct sim_txn *t)
{
	size_t per = sim.txn_split > 0 ? (size_t)sim.txn_split : t->nops;
	if (per == 0) per = 1;
	uint64_t prev_ts = 0;
	int64_t prev_t = -1;
	for (size_t start = 0; start < t->nops; start += per) {
		size_t end = start + per < t->nops ? start + per : t->nops;
		bool last = end == t->nops;
		int64_t wall;
		uint64_t ts = sim_next_ts(&wall);
		bson_t e = BSON_INITIALIZER, o, arr;
		append_lsid(&e, x->sess);
		BSON_APPEND_INT64(&e, "txnNumber", t->txn_number);
		BSON_APPEND_UTF8(&e, "op", "c");
		BSON_APPEND_UTF8(&e, "ns", "admin.$cmd");
		BSON_APPEND_DOCUMENT_BEGIN(&e, "o", &o);
		BSON_APPEND_ARRAY_BEGIN(&o, "applyOps", &arr);
		for (size_t i = start; i < end; i++) {
			char kb[16]; const char *kp;
			key_str(kb, sizeof kb, (uint32_t)(i - start), &kp);
			BSON_APPEND_DOCUMENT(&arr, kp, t->ops[i]);
		}
		bson_append_array_end(&o, &arr);
		if (!last) BSON_APPEND_BOOL(&o, "partialTxn", true);
		else if (start > 0) BSON_APPEND_INT64(&o, "count", (int64_t)t->nops);
		bson_append_document_end(&e, &o);
		append_ts(&e, "ts", ts);
		BSON_APPEND_INT64(&e, "t", sim.term);
		BSON_APPEND_INT64(&e, "v", 2);
		BSON_APPEND_DATE_TIME(&e, "wall", wall);
		append_optime(&e, "prevOpTime", prev_ts, prev_t);
		sim_oplog_append(&e, ts);
		bson_destroy(&e);
		prev_ts = ts;
		prev_t = sim.term;
	}
}

static int cmd_commit(struct ctx *x)
{
	struct sim_session *s = x->sess;
	if (!s || !x->has_txn_number) return err(x, E_ILLEGALOP, "commitTransaction must be run within a transaction");
	struct sim_txn *t = &s->txn;
	if (t->txn_number == x->txn_number && t->committed) return 0;   /* retried commit */
	if (!t->active || t->txn_number != x->txn_number) {
		x->label = "TransientTransactionError";
		if (t->txn_number == x->txn_number && t->aborted)
			return err(x, E_NOSUCHTXN, "Transaction with { txnNumber: %lld } has been aborted.", (long long)x->txn_number);
		return err(x, E_NOSUCHTXN, "Given transaction number %lld does not match any in-progress transactions. The active transaction number is %lld", (long long)x->txn_number, (long long)t->txn_number);
	}
	if (!writable()) { txn_abort(t); x->label = "TransientTransactionError"; return not_primary(x); }
	if (t->nops) txn_log_commit(x, t);
	txn_release(t, true);
	int64_t n = t->txn_number;
	txn_reset(t);
	t->txn_number = n;
	t->committed = true;
	sim.active_txns--;
	sim_gc_old();
	return 0;
}

static int cmd_abort(struct ctx *x)
{
	struct sim_session *s = x->sess;
	if (!s || !x->has_txn_number) return err(x, E_ILLEGALOP, "abortTransaction must be run within a transaction");
	struct sim_txn *t = &s->txn;
	if (t->txn_number == x->txn_number && t->committed)
		return err(x, 256, "Transaction %lld has been committed.", (long long)x->txn_number);
	if (!t->active || t->txn_number != x->txn_number) {
		x->label = "TransientTransactionError";
		return err(x, E_NOSUCHTXN, "Transaction with { txnNumber: %lld } has been aborted.", (long long)x->txn_number);
	}
	txn_abort(t);
	return 0;
}

/* ---- applyOps (non-transaction command) ---- */

static int apply_one(struct ctx *x, const bson_t *op)
{
	const char *o_op = get_str(op, "op"), *ns = get_str(op, "ns");
	bson_t o, o2;
	bool ho = get_doc(op, "o", &o), ho2 = get_doc(op, "o2", &o2);
	char db[256];
	const char *coll;
	if (!o_op || !ns || !ho) return err(x, E_FAILEDTOPARSE, "applyOps: op, ns and o are required");
	if (!strcmp(o_op, "n")) return 0;
	if (!split_ns(ns, db, sizeof db, &coll)) return err(x, E_INVALIDNS, "invalid ns %s", ns);
	const char *saved = x->db;
	x->db = db;
	int rc = 0;
	struct sim_coll *c = NULL;
	if (strcmp(o_op, "c")) rc = coll_for_write(x, coll, &c);
	if (rc) { x->db = saved; return rc; }
	if (!strcmp(o_op, "i")) {
		bson_iter_t id;
		long slot = bson_iter_init_find(&id, &o, "_id") ? sim_coll_find_id(c, &id) : -1;
		if (slot >= 0) {
			bool ch;
			rc = update_slot(x, c, (size_t)slot, &o, &ch, NULL, NULL, NULL);
		} else {
			rc = insert_one(x, c, &o);
		}
	} else if (!strcmp(o_op, "u") || !strcmp(o_op, "d")) {
		bson_t *q = ho2 ? &o2 : &o;
		struct slots s = { 0 };
		rc = collect(x, c, q, NULL, 1, &s);
		if (!rc && s.n == 0) rc = err(x, E_NOSUCHKEY, "applyOps: no document matches %s", ns);
		if (!rc && o_op[0] == 'd') delete_slot(x, c, s.v[0], NULL);
		else if (!rc) {
			bson_iter_t v;
			if (bson_iter_init_find(&v, &o, "$v") && sim_num(&v) == 2) {
				bson_t diff, post = BSON_INITIALIZER;
				if (!get_doc(&o, "diff", &diff)) rc = err(x, E_FAILEDTOPARSE, "applyOps: $v:2 without diff");
				else if (sim_apply_diff(sim_visible(&c->slots[s.v[0]], x->txn), &diff, &post))
					rc = err(x, E_BADVALUE, "applyOps: malformed $v:2 diff");
				else {
					bool ch;
					bson_t *rep = bson_copy(&post);
					rc = update_slot(x, c, s.v[0], rep, &ch, NULL, NULL, NULL);
					bson_destroy(rep);
				}
				bson_destroy(&post);
			} else {
				bson_t *u = bson_new();
				bson_copy_to_excluding_noinit(&o, u, "$v", NULL);
				bool ch;
				rc = update_slot(x, c, s.v[0], u, &ch, NULL, NULL, NULL);
				bson_destroy(u);
			}
		}
		free(s.v);
	} else if (!strcmp(o_op, "c")) {
		rc = err(x, E_BADVALUE, "applyOps: command entries are not supported by mongosim");
	} else {
		rc = err(x, E_BADVALUE, "applyOps: unknown op '%s'", o_op);
	}
	x->db = saved;
	return rc;
}

/* the ops run as one atomic batch; like mongod's atomic applyOps the
 * oplog gets one applyOps entry holding them */
static int cmd_applyops(struct ctx *x)
{
	bson_t ops;
	if (!get_doc(x->cmd, "applyOps", &ops)) return err(x, E_FAILEDTOPARSE, "ApplyOps command must contain an 'applyOps' array");
	if (!writable()) return not_primary(x);
	if (x->txn) return err(x, E_OPNOTSUPPORTEDINTXN, "Cannot run 'applyOps' in a multi-document transaction.");
	struct sim_txn t = { 0 };
	t.active = true;
	t.snapshot = sim.commit_seq;
	x->txn = &t;
	x->applyops = true;
	sim.active_txns++;
	bool r = x->retryable;
	x->retryable = false;
	bson_iter_t it;
	bson_iter_init(&it, &ops);
	int32_t n = 0;
	int rc = 0;
	bson_t results = BSON_INITIALIZER;
	while (!rc && bson_iter_next(&it)) {
		bson_t op;
		if (!doc_of(&it, &op)) { rc = err(x, E_FAILEDTOPARSE, "applyOps entries must be objects"); break; }
		rc = apply_one(x, &op);
		if (rc == SIM_WAIT) rc = err(x, E_WRITECONFLICT, "applyOps: document locked by a transaction");
		if (!rc) {
			char kb[16]; const char *kp;
			key_str(kb, sizeof kb, (uint32_t)n++, &kp);
			BSON_APPEND_BOOL(&results, kp, true);
		}
	}
	x->txn = NULL;
	if (rc) {
		txn_release(&t, false);
	} else {
		if (t.nops) {
			int64_t wall;
			uint64_t ts = sim_next_ts(&wall);
			bson_t e = BSON_INITIALIZER, o, arr;
			BSON_APPEND_UTF8(&e, "op", "c");
			BSON_APPEND_UTF8(&e, "ns", "admin.$cmd");
			BSON_APPEND_DOCUMENT_BEGIN(&e, "o", &o);
			BSON_APPEND_ARRAY_BEGIN(&o, "applyOps", &arr);
			for (size_t i = 0; i < t.nops; i++) {
				char kb[16]; const char *kp;
				key_str(kb, sizeof kb, (uint32_t)i, &kp);
				BSON_APPEND_DOCUMENT(&arr, kp, t.ops[i]);
			}
			bson_append_array_end(&o, &arr);
			bson_append_document_end(&e, &o);
			append_ts(&e, "ts", ts);
			BSON_APPEND_INT64(&e, "t", sim.term);
			BSON_APPEND_INT64(&e, "v", 2);
			BSON_APPEND_DATE_TIME(&e, "wall", wall);
			sim_oplog_append(&e, ts);
			bson_destroy(&e);
		}
		txn_release(&t, true);
		BSON_APPEND_INT32(x->reply, "applied", n);
		BSON_APPEND_ARRAY(x->reply, "results", &results);
	}
	x->retryable = r;
	sim.active_txns--;
	sim_gc_old();
	bson_destroy(&results);
	for (size_t i = 0; i < t.nops; i++) bson_destroy(t.ops[i]);
	free(t.ops);
	free(t.w);
	return rc;
}

/* ---- hello and server information ---- */

void sim_hello_reply(struct sim_conn *conn, const bson_t *cmd, bool is_hello, bson_t *r)
{
	sim_check_stepup();
	bool primary = !sim.stepped_down;
	bson_t hosts, lw, ot;
	if (get_bool(cmd, "helloOk", false)) BSON_APPEND_BOOL(r, "helloOk", true);
	BSON_APPEND_ARRAY_BEGIN(r, "hosts", &hosts);
	BSON_APPEND_UTF8(&hosts, "0", sim.host);
	bson_append_array_end(r, &hosts);
	BSON_APPEND_UTF8(r, "setName", sim.replset);
	BSON_APPEND_INT32(r, "setVersion", 1);
	BSON_APPEND_BOOL(r, is_hello ? "isWritablePrimary" : "ismaster", primary);
	BSON_APPEND_BOOL(r, "secondary", !primary);
	if (primary) BSON_APPEND_UTF8(r, "primary", sim.host);
	BSON_APPEND_UTF8(r, "me", sim.host);
	if (primary) BSON_APPEND_OID(r, "electionId", &sim.election_id);
	BSON_APPEND_DOCUMENT_BEGIN(r, "lastWrite", &lw);
	BSON_APPEND_DOCUMENT_BEGIN(&lw, "opTime", &ot);
	append_ts(&ot, "ts", sim.oplog.last_ts);
	BSON_APPEND_INT64(&ot, "t", sim.term);
	bson_append_document_end(&lw, &ot);
	BSON_APPEND_DATE_TIME(&lw, "lastWriteDate", (sim.oplog.last_wall / 1000) * 1000);
	BSON_APPEND_DOCUMENT_BEGIN(&lw, "majorityOpTime", &ot);
	append_ts(&ot, "ts", sim.oplog.last_ts);
	BSON_APPEND_INT64(&ot, "t", sim.term);
	bson_append_document_end(&lw, &ot);
	BSON_APPEND_DATE_TIME(&lw, "majorityWriteDate", (sim.oplog.last_wall / 1000) * 1000);
	bson_append_document_end(r, &lw);
	BSON_APPEND_INT32(r, "maxBsonObjectSize", 16 * 1024 * 1024);
	BSON_APPEND_INT32(r, "maxMessageSizeBytes", 48000000);
	BSON_APPEND_INT32(r, "maxWriteBatchSize", 100000);
	BSON_APPEND_DATE_TIME(r, "localTime", sim_now_ms());
	BSON_APPEND_INT32(r, "logicalSessionTimeoutMinutes", 30);
	BSON_APPEND_INT32(r, "connectionId", conn ? conn->id : 0);
	BSON_APPEND_INT32(r, "minWireVersion", 0);
	BSON_APPEND_INT32(r, "maxWireVersion", 17);
	BSON_APPEND_BOOL(r, "readOnly", false);
	BSON_APPEND_DOUBLE(r, "ok", 1.0);
	append_cluster_time(r);
}

static int cmd_buildinfo(struct ctx *x)
{
	bson_t va, st;
	BSON_APPEND_UTF8(x->reply, "version", "6.0.13");
	BSON_APPEND_UTF8(x->reply, "gitVersion", "mongosim");
	BSON_APPEND_ARRAY_BEGIN(x->reply, "versionArray", &va);
	BSON_APPEND_INT32(&va, "0", 6);
	BSON_APPEND_INT32(&va, "1", 0);
	BSON_APPEND_INT32(&va, "2", 13);
	BSON_APPEND_INT32(&va, "3", 0);
	bson_append_array_end(x->reply, &va);
	BSON_APPEND_INT32(x->reply, "bits", 64);
	BSON_APPEND_BOOL(x->reply, "debug", false);
	BSON_APPEND_INT32(x->reply, "maxBsonObjectSize", 16 * 1024 * 1024);
	BSON_APPEND_ARRAY_BEGIN(x->reply, "storageEngines", &st);
	BSON_APPEND_UTF8(&st, "0", "wiredTiger");
	bson_append_array_end(x->reply, &st);
	return 0;
}

static int cmd_getparameter(struct ctx *x)
{
	bool all = false;
	bson_iter_t it;
	if (bson_iter_init_find(&it, x->cmd, "getParameter") && BSON_ITER_HOLDS_UTF8(&it) && !strcmp(bson_iter_utf8(&it, NULL), "*")) all = true;
	bool any = false;
	if (all || bson_has_field(x->cmd, "featureCompatibilityVersion")) {
		bson_t f;
		BSON_APPEND_DOCUMENT_BEGIN(x->reply, "featureCompatibilityVersion", &f);
		BSON_APPEND_UTF8(&f, "version", "6.0");
		bson_append_document_end(x->reply, &f);
		any = true;
	}
	if (all || bson_has_field(x->cmd, "transactionLifetimeLimitSeconds")) { BSON_APPEND_INT32(x->reply, "transactionLifetimeLimitSeconds", 60); any = true; }
	if (all || bson_has_field(x->cmd, "internalQueryEnableLoggingV2OplogEntries")) { BSON_APPEND_BOOL(x->reply, "internalQueryEnableLoggingV2OplogEntries", !sim.oplog_v1); any = true; }
	if (!any) return err(x, 72, "no option found to get");
	return 0;
}

static int cmd_serverstatus(struct ctx *x)
{
	int cur = 0;
	for (struct sim_conn *c = sim.conns; c; c = c->next) if (!c->done) cur++;
	bson_t cn, repl;
	BSON_APPEND_UTF8(x->reply, "host", sim.host);
	BSON_APPEND_UTF8(x->reply, "version", "6.0.13");
	BSON_APPEND_UTF8(x->reply, "process", "mongod");
	BSON_APPEND_INT64(x->reply, "pid", (int64_t)getpid());
	int64_t up = sim_mono_ms() - sim.start_ms;
	BSON_APPEND_DOUBLE(x->reply, "uptime", (double)(up / 1000));
	BSON_APPEND_INT64(x->reply, "uptimeMillis", up);
	BSON_APPEND_DATE_TIME(x->reply, "localTime", sim_now_ms());
	BSON_APPEND_DOCUMENT_BEGIN(x->reply, "connections", &cn);
	BSON_APPEND_INT32(&cn, "current", cur);
	BSON_APPEND_INT32(&cn, "available", 51200 - cur);
	BSON_APPEND_INT32(&cn, "totalCreated", sim.next_conn_id);
	bson_append_document_end(x->reply, &cn);
	BSON_APPEND_DOCUMENT_BEGIN(x->reply, "repl", &repl);
	BSON_APPEND_UTF8(&repl, "setName", sim.replset);
	BSON_APPEND_BOOL(&repl, "isWritablePrimary", !sim.stepped_down);
	BSON_APPEND_UTF8(&repl, "me", sim.host);
	bson_append_document_end(x->reply, &repl);
	return 0;
}

static int cmd_replsetgetstatus(struct ctx *x)
{
	sim_check_stepup();
	bool primary = !sim.stepped_down;
	uint64_t ts = sim.oplog.last_ts;
	int64_t wall = sim.oplog.last_wall;
	bson_t op, mem, m;
	BSON_APPEND_UTF8(x->reply, "set", sim.replset);
	BSON_APPEND_DATE_TIME(x->reply, "date", sim_now_ms());
	BSON_APPEND_INT32(x->reply, "myState", primary ? 1 : 2);
	BSON_APPEND_INT64(x->reply, "term", sim.term);
	BSON_APPEND_INT64(x->reply, "heartbeatIntervalMillis", 2000);
	BSON_APPEND_DOCUMENT_BEGIN(x->reply, "optimes", &op);
	append_optime(&op, "lastCommittedOpTime", ts, sim.term);
	BSON_APPEND_DATE_TIME(&op, "lastCommittedWallTime", wall);
	append_optime(&op, "readConcernMajorityOpTime", ts, sim.term);
	append_optime(&op, "appliedOpTime", ts, sim.term);
	append_optime(&op, "durableOpTime", ts, sim.term);
	BSON_APPEND_DATE_TIME(&op, "lastAppliedWallTime", wall);
	BSON_APPEND_DATE_TIME(&op, "lastDurableWallTime", wall);
	bson_append_document_end(x->reply, &op);
	BSON_APPEND_ARRAY_BEGIN(x->reply, "members", &mem);
	BSON_APPEND_DOCUMENT_BEGIN(&mem, "0", &m);
	BSON_APPEND_INT32(&m, "_id", 0);
	BSON_APPEND_UTF8(&m, "name", sim.host);
	BSON_APPEND_DOUBLE(&m, "health", 1.0);
	BSON_APPEND_INT32(&m, "state", primary ? 1 : 2);
	BSON_APPEND_UTF8(&m, "stateStr", primary ? "PRIMARY" : "SECONDARY");
	BSON_APPEND_INT32(&m, "uptime", (int32_t)((sim_mono_ms() - sim.start_ms) / 1000));
	append_optime(&m, "optime", ts, sim.term);
	BSON_APPEND_DATE_TIME(&m, "optimeDate", (int64_t)(ts >> 32) * 1000);
	BSON_APPEND_DATE_TIME(&m, "lastAppliedWallTime", wall);
	BSON_APPEND_DATE_TIME(&m, "lastDurableWallTime", wall);
	BSON_APPEND_UTF8(&m, "syncSourceHost", "");
	BSON_APPEND_INT32(&m, "syncSourceId", -1);
	BSON_APPEND_UTF8(&m, "infoMessage", "");
	if (primary) BSON_APPEND_OID(&m, "electionId", &sim.election_id);
	BSON_APPEND_INT32(&m, "configVersion", 1);
	BSON_APPEND_INT32(&m, "configTerm", (int32_t)sim.term);
	BSON_APPEND_BOOL(&m, "self", true);
	BSON_APPEND_UTF8(&m, "lastHeartbeatMessage", "");
	bson_append_document_end(&mem, &m);
	bson_append_array_end(x->reply, &mem);
	return 0;
}

/* replSetGetConfig of a one-member set (mongo/db/repl/repl_set_config.idl) */
static int cmd_replsetgetconfig(struct ctx *x)
{
	bson_t cfg, mem, m, tags, st, gle, modes;
	BSON_APPEND_DOCUMENT_BEGIN(x->reply, "config", &cfg);
	BSON_APPEND_UTF8(&cfg, "_id", sim.replset);
	BSON_APPEND_INT32(&cfg, "version", 1);
	BSON_APPEND_INT32(&cfg, "term", (int32_t)sim.term);
	BSON_APPEND_ARRAY_BEGIN(&cfg, "members", &mem);
	BSON_APPEND_DOCUMENT_BEGIN(&mem, "0", &m);
	BSON_APPEND_INT32(&m, "_id", 0);
	BSON_APPEND_UTF8(&m, "host", sim.host);
	BSON_APPEND_BOOL(&m, "arbiterOnly", false);
	BSON_APPEND_BOOL(&m, "buildIndexes", true);
	BSON_APPEND_BOOL(&m, "hidden", false);
	BSON_APPEND_DOUBLE(&m, "priority", 1.0);
	BSON_APPEND_DOCUMENT_BEGIN(&m, "tags", &tags);
	bson_append_document_end(&m, &tags);
	BSON_APPEND_INT64(&m, "secondaryDelaySecs", 0);
	BSON_APPEND_INT32(&m, "votes", 1);
	bson_append_document_end(&mem, &m);
	bson_append_array_end(&cfg, &mem);
	BSON_APPEND_INT64(&cfg, "protocolVersion", 1);
	BSON_APPEND_BOOL(&cfg, "writeConcernMajorityJournalDefault", true);
	BSON_APPEND_DOCUMENT_BEGIN(&cfg, "settings", &st);
	BSON_APPEND_BOOL(&st, "chainingAllowed", true);
	BSON_APPEND_INT32(&st, "heartbeatIntervalMillis", 2000);
	BSON_APPEND_INT32(&st, "heartbeatTimeoutSecs", 10);
	BSON_APPEND_INT32(&st, "electionTimeoutMillis", 10000);
	BSON_APPEND_INT32(&st, "catchUpTimeoutMillis", -1);
	BSON_APPEND_INT32(&st, "catchUpTakeoverDelayMillis", 30000);
	BSON_APPEND_DOCUMENT_BEGIN(&st, "getLastErrorModes", &modes);
	bson_append_document_end(&st, &modes);
	BSON_APPEND_DOCUMENT_BEGIN(&st, "getLastErrorDefaults", &gle);
	BSON_APPEND_INT32(&gle, "w", 1);
	BSON_APPEND_INT32(&gle, "wtimeout", 0);
	bson_append_document_end(&st, &gle);
	BSON_APPEND_OID(&st, "replicaSetId", &sim.replset_id);
	bson_append_document_end(&cfg, &st);
	bson_append_document_end(x->reply, &cfg);
	return 0;
}

static int cmd_startsession(struct ctx *x)
{
	uint8_t id[16];
	for (int i = 0; i < 16; i++) id[i] = (uint8_t)random();
	id[6] = (id[6] & 0x0f) | 0x40; id[8] = (id[8] & 0x3f) | 0x80;
	bson_t d;
	BSON_APPEND_DOCUMENT_BEGIN(x->reply, "id", &d);
	append_uuid(&d, "id", id);
	bson_append_document_end(x->reply, &d);
	BSON_APPEND_INT32(x->reply, "timeoutMinutes", 30);
	return 0;
}

static int cmd_endsessions(struct ctx *x)
{
	bson_t ids;
	if (!get_doc(x->cmd, x->name, &ids)) return 0;
	bson_iter_t it;
	bson_iter_init(&it, &ids);
	while (bson_iter_next(&it)) {
		bson_t s;
		bson_iter_t id;
		const uint8_t *u; uint32_t l; bson_subtype_t st;
		if (!doc_of(&it, &s) || !bson_iter_init_find(&id, &s, "id") || !BSON_ITER_HOLDS_BINARY(&id)) continue;
		bson_iter_binary(&id, &st, &l, &u);
		if (l != 16) continue;
		for (struct sim_session **pp = &sim.sessions; *pp; pp = &(*pp)->next) {
			if (memcmp((*pp)->id, u, 16)) continue;
			struct sim_session *z = *pp;
			txn_abort(&z->txn);
			*pp = z->next;
			txn_reset(&z->txn);
			if (z->retry_reply) bson_destroy(z->retry_reply);
			free(z);
			break;
		}
	}
	return 0;
}

/* ---- fault commands (--enable-faults) ---- */

static int cmd_stepdown(struct ctx *x)
{
	bson_iter_t it;
	bson_iter_init_find(&it, x->cmd, x->name);
	int64_t secs = sim_int(&it);
	if (secs < 0) secs = 0;
	sim.stepped_down = true;
	sim.stepdown_until_ms = sim_mono_ms() + secs * 1000;
	for (struct sim_session *s = sim.sessions; s; s = s->next) txn_abort(&s->txn);
	sim_close_all_conns(x->conn);
	if (x->conn) x->conn->close_after_reply = true;
	pthread_cond_broadcast(&sim.cond);
	sim_log("stepping down for %lld s (term %lld)", (long long)secs, (long long)sim.term);
	return 0;
}

static int cmd_pause(struct ctx *x)
{
	bson_iter_t it;
	bson_iter_init_find(&it, x->cmd, x->name);
	int64_t ms = sim_int(&it);
	__atomic_store_n(&sim.pause_until_ms, sim_mono_ms() + (ms > 0 ? ms : 0), __ATOMIC_RELAXED);
	if (x->conn) x->conn->skip_pause = true;
	return 0;
}

static int cmd_clock(struct ctx *x)
{
	bson_t a;
	if (!get_doc(x->cmd, x->name, &a)) return err(x, E_BADVALUE, "mongosimClock needs {offsetMs: N}");
	sim.clock_offset_ms = get_int(&a, "offsetMs", 0);
	BSON_APPEND_INT64(x->reply, "offsetMs", sim.clock_offset_ms);
	return 0;
}

static int cmd_ping(struct ctx *x) { (void)x; return 0; }

/* ---- dispatch ---- */

enum { F_WRITE = 1, F_TXN_OK = 2, F_RETRYABLE = 4, F_FAULT = 8 };

static const struct command {
	const char *name;
	int (*fn)(struct ctx *);
	int flags;
} commands[] = {
	{ "insert", cmd_insert, F_WRITE | F_TXN_OK | F_RETRYABLE },
	{ "update", cmd_update, F_WRITE | F_TXN_OK | F_RETRYABLE },
	{ "delete", cmd_delete, F_WRITE | F_TXN_OK | F_RETRYABLE },
	{ "findAndModify", cmd_findandmodify, F_WRITE | F_TXN_OK | F_RETRYABLE },
	{ "findandmodify", cmd_findandmodify, F_WRITE | F_TXN_OK | F_RETRYABLE },
	{ "find", cmd_find, F_TXN_OK },
	{ "getMore", cmd_getmore, F_TXN_OK },
	{ "killCursors", cmd_killcursors, F_TXN_OK },
	{ "count", cmd_count, 0 },
	{ "distinct", cmd_distinct, F_TXN_OK },
	{ "aggregate", cmd_aggregate, F_TXN_OK },
	{ "create", cmd_create, F_WRITE | F_TXN_OK },
	{ "drop", cmd_drop, F_WRITE },
	{ "dropDatabase", cmd_dropdatabase, F_WRITE },
	{ "renameCollection", cmd_rename, F_WRITE },
	{ "createIndexes", cmd_createindexes, F_WRITE },
	{ "dropIndexes", cmd_dropindexes, F_WRITE },
	{ "deleteIndexes", cmd_dropindexes, F_WRITE },
	{ "collMod", cmd_collmod, F_WRITE },
	{ "listCollections", cmd_listcollections, 0 },
	{ "listIndexes", cmd_listindexes, 0 },
	{ "listDatabases", cmd_listdatabases, 0 },
	{ "dbHash", cmd_dbhash, 0 },
	{ "dbhash", cmd_dbhash, 0 },
	{ "commitTransaction", cmd_commit, F_TXN_OK },
	{ "abortTransaction", cmd_abort, F_TXN_OK },
	{ "applyOps", cmd_applyops, F_WRITE },
	{ "buildInfo", cmd_buildinfo, 0 },
	{ "buildinfo", cmd_buildinfo, 0 },
	{ "getParameter", cmd_getparameter, 0 },
	{ "serverStatus", cmd_serverstatus, 0 },
	{ "replSetGetStatus", cmd_replsetgetstatus, 0 },
	{ "ping", cmd_ping, 0 },
	{ "startSession", cmd_startsession, 0 },
	{ "endSessions", cmd_endsessions, 0 },
	{ "killSessions", cmd_endsessions, 0 },
	{ "killAllSessions", cmd_ping, 0 },
	{ "replSetGetConfig", cmd_replsetgetconfig, 0 },
	{ "mongosimStepDown", cmd_stepdown, F_FAULT },
	{ "mongosimPause", cmd_pause, F_FAULT },
	{ "mongosimClock", cmd_clock, F_FAULT },
};

static void error_reply(struct ctx *x)
{
	bson_reinit(x->reply);
	BSON_APPEND_DOUBLE(x->reply, "ok", 0.0);
	BSON_APPEND_UTF8(x->reply, "errmsg", x->errmsg);
	BSON_APPEND_INT32(x->reply, "code", x->code);
	BSON_APPEND_UTF8(x->reply, "codeName", code_name(x->code));
	if (x->err_extra) {
		bson_concat(x->reply, x->err_extra);
		bson_destroy(x->err_extra);
		x->err_extra = NULL;
	}
	if (x->label) {
		bson_t l;
		BSON_APPEND_ARRAY_BEGIN(x->reply, "errorLabels", &l);
		BSON_APPEND_UTF8(&l, "0", x->label);
		bson_append_array_end(x->reply, &l);
	}
}

/* transaction and retryable-write bookkeeping; returns non-zero (an error)
 * or 1000 when the saved reply of a retried write was copied */
static int session_prologue(struct ctx *x, const struct command *cmd)
{
	bson_iter_t it;
	bson_t lsid;
	if (!get_doc(x->cmd, "lsid", &lsid)) {
		if (bson_has_field(x->cmd, "txnNumber")) return err(x, E_ILLEGALOP, "Transaction numbers are only allowed on a replica set member or mongos");
		return 0;
	}
	bson_iter_t id;
	const uint8_t *u; uint32_t l; bson_subtype_t st;
	if (!bson_iter_init_find(&id, &lsid, "id") || !BSON_ITER_HOLDS_BINARY(&id)) return err(x, E_FAILEDTOPARSE, "lsid.id must be a UUID");
	bson_iter_binary(&id, &st, &l, &u);
	if (l != 16) return err(x, E_FAILEDTOPARSE, "lsid.id must be a UUID");
	x->sess = session_get(u);
	if (bson_iter_init_find(&it, x->cmd, "txnNumber")) {
		x->has_txn_number = true;
		x->txn_number = bson_iter_as_int64(&it);
	}
	bool autocommit_false = bson_iter_init_find(&it, x->cmd, "autocommit") && !bson_iter_as_bool(&it);
	struct sim_session *s = x->sess;
	struct sim_txn *t = &s->txn;
	if (autocommit_false) {
		if (!x->has_txn_number) return err(x, E_FAILEDTOPARSE, "txnNumber is required with autocommit:false");
		if (!(cmd->flags & F_TXN_OK)) return err(x, E_OPNOTSUPPORTEDINTXN, "Cannot run '%s' in a multi-document transaction.", x->name);
		if (x->txn_number < s->txn_number)
			return err(x, E_TXNTOOOLD, "Cannot start transaction %lld on session because a newer transaction %lld has already started", (long long)x->txn_number, (long long)s->txn_number);
		if (get_bool(x->cmd, "startTransaction", false)) {
			if (x->txn_number == s->txn_number && (t->active || t->committed || t->aborted))
				return err(x, 225, "Cannot start a transaction at given transaction number %lld a transaction with the same number is in state %s", (long long)x->txn_number, t->active ? "in progress" : "committed");
			if (t->active) txn_abort(t);
			txn_reset(t);
			memcpy(t->lsid, s->id, 16);
			t->txn_number = x->txn_number;
			t->active = true;
			t->snapshot = sim.commit_seq;
			s->txn_number = x->txn_number;
			sim.active_txns++;
		}
		if (!strcmp(x->name, "commitTransaction") || !strcmp(x->name, "abortTransaction")) return 0;
		if (!t->active || t->txn_number != x->txn_number) {
			x->label = "TransientTransactionError";
			if (t->txn_number == x->txn_number && t->aborted)
				return err(x, E_NOSUCHTXN, "Transaction with { txnNumber: %lld } has been aborted.", (long long)x->txn_number);
			return err(x, E_NOSUCHTXN, "Given transaction number %lld does not match any in-progress transactions.", (long long)x->txn_number);
		}
		x->in_txn = true;
		x->txn = t;
		return 0;
	}
	if (x->has_txn_number && (cmd->flags & F_RETRYABLE)) {
		if (x->txn_number < s->txn_number)
			return err(x, E_TXNTOOOLD, "Retryable write with txnNumber %lld is prohibited on session because a newer retryable write with txnNumber %lld has already started on this session.", (long long)x->txn_number, (long long)s->txn_number);
		if (x->txn_number == s->retry_txn && s->retry_reply) {
			bson_concat(x->reply, s->retry_reply);
			return 1000;
		}
		if (t->active) txn_abort(t);
		if (x->txn_number > s->txn_number || s->retry_txn != x->txn_number) {
			s->txn_number = x->txn_number;
			s->prev_ts = 0;
			s->prev_t = -1;
		}
		x->retryable = true;
	}
	return 0;
}

void sim_run_command(struct sim_conn *conn, bson_t *cmd, const char *db, bson_t *reply)
{
	struct ctx x;
	memset(&x, 0, sizeof x);
	x.conn = conn;
	x.cmd = cmd;
	x.db = db;
	x.reply = reply;
	bson_iter_t it;
	if (!bson_iter_init(&it, cmd) || !bson_iter_next(&it)) {
		err(&x, E_FAILEDTOPARSE, "Empty command");
		pthread_mutex_lock(&sim.mu);
		error_reply(&x);
		append_cluster_time(reply);
		sim_unlock();
		return;
	}
	x.name = bson_iter_key(&it);
	pthread_mutex_lock(&sim.mu);
	if (!strcasecmp(x.name, "isMaster") || !strcmp(x.name, "hello")) {
		sim_hello_reply(conn, cmd, !strcmp(x.name, "hello"), reply);
		sim_unlock();
		return;
	}
	const struct command *c = NULL;
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (!strcmp(commands[i].name, x.name)) { c = &commands[i]; break; }
	int rc;
	if (!c || ((c->flags & F_FAULT) && !sim.faults)) {
		rc = err(&x, E_CMDNOTFOUND, "no such command: '%s'", x.name);
	} else {
		rc = session_prologue(&x, c);
		if (rc == 1000) {
			/* a retried write: the saved reply already carries ok and times */
			sim_unlock();
			return;
		}
		if (!rc) rc = c->fn(&x);
		if (rc == SIM_WAIT) rc = err(&x, E_WRITECONFLICT, "write conflict");
	}
	if (rc) {
		/* 4.4+ servers label the errors a driver may retry a write after
		 * (mongo/db/error_labels.cpp: isRetryableWriteError) */
		bool retry_code = rc == E_NOTWRITABLEPRIMARY || rc == 13435 || rc == E_INTERRUPTEDREPL || rc == 11600 ||
		                  rc == 189 || rc == 91 || rc == 7 || rc == 6 || rc == 89 || rc == 9001 || rc == 262;
		bool txn_end = !strcmp(x.name, "commitTransaction") || !strcmp(x.name, "abortTransaction");
		if (retry_code && !x.label && ((x.retryable && !x.in_txn) || txn_end)) x.label = "RetryableWriteError";
		if (x.in_txn && x.txn && x.txn->active && strcmp(x.name, "abortTransaction")) {
			txn_abort(x.txn);
			if (rc == E_WRITECONFLICT || rc == E_NOTWRITABLEPRIMARY) x.label = "TransientTransactionError";
		}
		error_reply(&x);
	} else {
		BSON_APPEND_DOUBLE(reply, "ok", 1.0);
	}
	append_cluster_time(reply);
	if (x.retryable && x.sess && !rc) {
		if (x.sess->retry_reply) bson_destroy(x.sess->retry_reply);
		x.sess->retry_reply = bson_copy(reply);
		x.sess->retry_txn = x.txn_number;
	}
	if (x.err_extra) bson_destroy(x.err_extra);
	sim_unlock();
}
