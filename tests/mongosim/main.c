/*
 * main.c — mongosim: arguments, the listener, one thread per connection and
 * the wire protocol (OP_QUERY handshake answered with OP_REPLY, OP_MSG with
 * kind-0 and kind-1 sections; mongo/rpc/op_msg.h, message.h).  Malformed
 * messages close that connection with a log line.
 */
#include "sim.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct sim_server sim;

#define OP_REPLY 1
#define OP_QUERY 2004
#define OP_MSG 2013
#define MAX_MSG (48 * 1000 * 1000)

static int sig_pipe[2] = { -1, -1 };

void sim_unlock(void)
{
	if (sim.signal_pending) {
		sim.signal_pending = false;
		pthread_cond_broadcast(&sim.cond);
	}
	pthread_mutex_unlock(&sim.mu);
}

void sim_log(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	fprintf(stderr, "%02d:%02d:%02d.%03ld mongosim: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
	        ts.tv_nsec / 1000000, buf);
}

static void on_signal(int sig)
{
	(void)sig;
	sim.stop = 1;
	if (sig_pipe[1] >= 0) {
		ssize_t r = write(sig_pipe[1], "x", 1);
		(void)r;
	}
}

static int read_full(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = recv(fd, p, n, 0);
		if (r == 0) return -1;
		if (r < 0) { if (errno == EINTR) continue; return -1; }
		p += r; n -= (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
		if (r < 0) { if (errno == EINTR) continue; return -1; }
		p += r; n -= (size_t)r;
	}
	return 0;
}

static void put32(uint8_t *p, int32_t v) { memcpy(p, &v, 4); }

static int32_t next_reply_id(void)
{
	static uint32_t id;
	return (int32_t)(__atomic_add_fetch(&id, 1, __ATOMIC_RELAXED) & 0x7fffffff);
}
static int32_t get32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

static void wait_pause(void)
{
	for (;;) {
		int64_t until = __atomic_load_n(&sim.pause_until_ms, __ATOMIC_RELAXED);
		int64_t now = sim_mono_ms();
		if (until <= now || sim.stop) return;
		int64_t d = until - now;
		struct timespec ts = { d / 1000, (d % 1000) * 1000000 };
		nanosleep(&ts, NULL);
	}
}

static int send_msg(struct sim_conn *c, int32_t req_id, const bson_t *reply)
{
	uint8_t hdr[21];
	int32_t len = 16 + 4 + 1 + (int32_t)reply->len;
	put32(hdr, len);
	put32(hdr + 4, next_reply_id());
	put32(hdr + 8, req_id);
	put32(hdr + 12, OP_MSG);
	put32(hdr + 16, 0);
	hdr[20] = 0;
	if (!c->skip_pause) wait_pause();
	c->skip_pause = false;
	if (write_full(c->fd, hdr, sizeof hdr)) return -1;
	return write_full(c->fd, bson_get_data(reply), reply->len);
}

static int send_reply(int fd, int32_t req_id, const bson_t *reply, int32_t flags)
{
	uint8_t hdr[36];
	put32(hdr, 36 + (int32_t)reply->len);
	put32(hdr + 4, next_reply_id());
	put32(hdr + 8, req_id);
	put32(hdr + 12, OP_REPLY);
	put32(hdr + 16, flags);
	memset(hdr + 20, 0, 8);     /* cursorID */
	put32(hdr + 28, 0);         /* startingFrom */
	put32(hdr + 32, 1);         /* numberReturned */
	wait_pause();
	if (write_full(fd, hdr, sizeof hdr)) return -1;
	return write_full(fd, bson_get_data(reply), reply->len);
}

/* structural BSON check: lengths, element types, terminators (libbson's
 * bson_validate also checks UTF-8, which costs a third of a bulk insert) */
static bool check_doc(const uint8_t *p, size_t len, int depth)
{
	if (len < 5 || depth > 200 || (size_t)get32(p) != len || p[len - 1] != 0) return false;
	size_t i = 4, end = len - 1;
	while (i < end) {
		uint8_t t = p[i++];
		const uint8_t *z = memchr(p + i, 0, end - i);
		if (!z) return false;
		i = (size_t)(z - p) + 1;
		size_t left = end - i, n;
		switch (t) {
		case 0x01: case 0x09: case 0x11: case 0x12: n = 8; break;
		case 0x10: n = 4; break;
		case 0x08: n = 1; if (left >= 1 && p[i] > 1) return false; break;
		case 0x06: case 0x0A: case 0x7F: case 0xFF: n = 0; break;
		case 0x07: n = 12; break;
		case 0x13: n = 16; break;
		case 0x02: case 0x0D: case 0x0E: {
			if (left < 4) return false;
			int32_t sl = get32(p + i);
			if (sl < 1 || (size_t)sl > left - 4 || p[i + 4 + (size_t)sl - 1] != 0) return false;
			n = 4 + (size_t)sl;
			break;
		}
		case 0x05: {
			if (left < 5) return false;
			int32_t bl = get32(p + i);
			if (bl < 0 || (size_t)bl > left - 5) return false;
			n = 5 + (size_t)bl;
			break;
		}
		case 0x03: case 0x04: {
			if (left < 5) return false;
			int32_t dl = get32(p + i);
			if (dl < 5 || (size_t)dl > left || !check_doc(p + i, (size_t)dl, depth + 1)) return false;
			n = (size_t)dl;
			break;
		}
		case 0x0B: {
			const uint8_t *a = memchr(p + i, 0, left);
			if (!a) return false;
			const uint8_t *b = memchr(a + 1, 0, (size_t)(p + end - a - 1));
			if (!b) return false;
			n = (size_t)(b - (p + i)) + 1;
			break;
		}
		case 0x0C: {
			if (left < 4) return false;
			int32_t sl = get32(p + i);
			if (sl < 1 || (size_t)sl > left - 4) return false;
			n = 4 + (size_t)sl + 12;
			break;
		}
		case 0x0F: {
			if (left < 4) return false;
			int32_t cl = get32(p + i);
			if (cl < 14 || (size_t)cl > left) return false;
			n = (size_t)cl;
			break;
		}
		default: return false;
		}
		if (n > left) return false;
		i += n;
	}
	return i == end;
}

static bool valid_doc(const uint8_t *p, size_t avail, uint32_t *len)
{
	if (avail < 5) return false;
	int32_t l = get32(p);
	if (l < 5 || (size_t)l > avail) return false;
	if (!check_doc(p, (size_t)l, 0)) return false;
	*len = (uint32_t)l;
	return true;
}

/* returns 0 to keep the connection, -1 to close it */
static int handle_query(struct sim_conn *c, int32_t req_id, const uint8_t *b, size_t n)
{
	if (n < 4 + 1 + 8) { sim_log("conn%d: truncated OP_QUERY, closing", c->id); return -1; }
	const uint8_t *p = b + 4;
	const uint8_t *z = memchr(p, 0, n - 4);
	if (!z) { sim_log("conn%d: OP_QUERY without namespace, closing", c->id); return -1; }
	char ns[256];
	snprintf(ns, sizeof ns, "%s", (const char *)p);
	p = z + 1 + 8;   /* skip, return */
	if ((size_t)(p - b) > n) { sim_log("conn%d: truncated OP_QUERY, closing", c->id); return -1; }
	uint32_t dl;
	if (!valid_doc(p, n - (size_t)(p - b), &dl)) { sim_log("conn%d: invalid BSON in OP_QUERY, closing", c->id); return -1; }
	bson_t q;
	bson_init_static(&q, p, dl);
	bson_t reply = BSON_INITIALIZER;
	size_t nl = strlen(ns);
	if (nl < 5 || strcmp(ns + nl - 5, ".$cmd")) {
		BSON_APPEND_UTF8(&reply, "$err", "OP_QUERY is no longer supported. The client driver may require an upgrade.");
		BSON_APPEND_INT32(&reply, "code", 5739101);
		int rc = send_reply(c->fd, req_id, &reply, 2);
		bson_destroy(&reply);
		return rc;
	}
	ns[nl - 5] = 0;
	/* unwrap {$query: {...}} */
	bson_iter_t it;
	bson_t inner, *cmd;
	if (bson_iter_init_find(&it, &q, "$query") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
		const uint8_t *d; uint32_t l;
		bson_iter_document(&it, &l, &d);
		bson_init_static(&inner, d, l);
		cmd = bson_copy(&inner);
	} else {
		cmd = bson_copy(&q);
	}
	bson_iter_init(&it, cmd);
	const char *name = bson_iter_next(&it) ? bson_iter_key(&it) : "";
	if (!strcasecmp(name, "isMaster") || !strcmp(name, "hello")) {
		pthread_mutex_lock(&sim.mu);
		sim_hello_reply(c, cmd, !strcmp(name, "hello"), &reply);
		sim_unlock();
	} else {
		sim_run_command(c, cmd, ns, &reply);
	}
	bson_destroy(cmd);
	int rc = send_reply(c->fd, req_id, &reply, 0);
	bson_destroy(&reply);
	return rc;
}

static int handle_msg(struct sim_conn *c, int32_t req_id, const uint8_t *b, size_t n)
{
	if (n < 5) { sim_log("conn%d: truncated OP_MSG, closing", c->id); return -1; }
	uint32_t flags = (uint32_t)get32(b);
	if (flags & ~(1u | 2u | (1u << 16))) { sim_log("conn%d: OP_MSG with unknown required flags 0x%x, closing", c->id, flags); return -1; }
	size_t end = n;
	if (flags & 1) { if (end < 9) return -1; end -= 4; }
	size_t off = 4;
	const uint8_t *body = NULL; uint32_t body_len = 0;
	bson_t *cmd = NULL;
	struct { const char *id; const uint8_t *p; size_t n; } seq[8];
	int nseq = 0;
	while (off < end) {
		uint8_t kind = b[off++];
		if (kind == 0) {
			uint32_t l;
			if (body || !valid_doc(b + off, end - off, &l)) { sim_log("conn%d: invalid BSON in OP_MSG, closing", c->id); return -1; }
			body = b + off; body_len = l;
			off += l;
		} else if (kind == 1) {
			if (end - off < 4) { sim_log("conn%d: truncated OP_MSG section, closing", c->id); return -1; }
			int32_t sl = get32(b + off);
			if (sl < 5 || (size_t)sl > end - off || nseq == 8) { sim_log("conn%d: bad OP_MSG section size, closing", c->id); return -1; }
			const uint8_t *sp = b + off + 4, *se = b + off + sl;
			const uint8_t *z = memchr(sp, 0, (size_t)(se - sp));
			if (!z) { sim_log("conn%d: bad OP_MSG section identifier, closing", c->id); return -1; }
			seq[nseq].id = (const char *)sp;
			seq[nseq].p = z + 1;
			seq[nseq].n = (size_t)(se - z - 1);
			const uint8_t *q = z + 1;
			while (q < se) {
				uint32_t l;
				if (!valid_doc(q, (size_t)(se - q), &l)) { sim_log("conn%d: invalid BSON in OP_MSG sequence, closing", c->id); return -1; }
				q += l;
			}
			nseq++;
			off += (size_t)sl;
		} else {
			sim_log("conn%d: unknown OP_MSG section kind %d, closing", c->id, kind);
			return -1;
		}
	}
	if (!body) { sim_log("conn%d: OP_MSG without body, closing", c->id); return -1; }
	bson_t bd;
	bson_init_static(&bd, body, body_len);
	size_t total = body_len + 64;
	for (int i = 0; i < nseq; i++) total += seq[i].n + seq[i].n / 8 + 64;   /* + array keys */
	cmd = bson_sized_new(total);
	bson_concat(cmd, &bd);
	for (int i = 0; i < nseq; i++) {
		bson_t arr;
		bson_append_array_begin(cmd, seq[i].id, -1, &arr);
		const uint8_t *q = seq[i].p, *se = seq[i].p + seq[i].n;
		uint32_t k = 0;
		while (q < se) {
			uint32_t l = (uint32_t)get32(q);
			bson_t d;
			bson_init_static(&d, q, l);
			char kb[16]; const char *kp;
			bson_uint32_to_string(k++, &kp, kb, sizeof kb);
			bson_append_document(&arr, kp, -1, &d);
			q += l;
		}
		bson_append_array_end(cmd, &arr);
	}
	bson_iter_t it;
	char db[256] = "";
	if (bson_iter_init_find(&it, cmd, "$db") && BSON_ITER_HOLDS_UTF8(&it))
		snprintf(db, sizeof db, "%s", bson_iter_utf8(&it, NULL));
	bson_t reply = BSON_INITIALIZER;
	if (!*db || !bson_utf8_validate(db, strlen(db), false)) {
		BSON_APPEND_DOUBLE(&reply, "ok", 0);
		BSON_APPEND_UTF8(&reply, "errmsg", "OP_MSG requests require a $db argument");
		BSON_APPEND_INT32(&reply, "code", 40571);
		BSON_APPEND_UTF8(&reply, "codeName", "Location40571");
	} else {
		sim_run_command(c, cmd, db, &reply);
	}
	bson_destroy(cmd);
	int rc = 0;
	if (!(flags & 2)) rc = send_msg(c, req_id, &reply);
	bson_destroy(&reply);
	return rc;
}

static void *conn_main(void *arg)
{
	struct sim_conn *c = arg;
	uint8_t hdr[16];
	uint8_t *buf = NULL;
	size_t cap = 0;
	while (!sim.stop) {
		if (read_full(c->fd, hdr, 16)) break;
		int32_t len = get32(hdr), req = get32(hdr + 4), opcode = get32(hdr + 12);
		if (len < 16 || len > MAX_MSG) { sim_log("conn%d: bad message length %d, closing", c->id, len); break; }
		if ((size_t)len - 16 > cap) { cap = (size_t)len - 16; free(buf); buf = malloc(cap ? cap : 1); }
		if (read_full(c->fd, buf, (size_t)len - 16)) {
			sim_log("conn%d: truncated message (%d bytes announced), closing", c->id, len);
			break;
		}
		int rc;
		if (opcode == OP_MSG) rc = handle_msg(c, req, buf, (size_t)len - 16);
		else if (opcode == OP_QUERY) rc = handle_query(c, req, buf, (size_t)len - 16);
		else { sim_log("conn%d: unknown opcode %d, closing", c->id, opcode); rc = -1; }
		if (rc || c->close_after_reply) break;
	}
	free(buf);
	pthread_mutex_lock(&sim.mu);
	shutdown(c->fd, SHUT_RDWR);
	c->done = true;
	pthread_mutex_unlock(&sim.mu);
	return NULL;
}

void sim_close_all_conns(struct sim_conn *except)
{
	for (struct sim_conn *c = sim.conns; c; c = c->next)
		if (c != except && !c->done) shutdown(c->fd, SHUT_RDWR);
}

static void reap(bool all)
{
	pthread_mutex_lock(&sim.mu);
	struct sim_conn **pp = &sim.conns;
	while (*pp) {
		struct sim_conn *c = *pp;
		if (all) shutdown(c->fd, SHUT_RDWR);
		if (c->done || all) {
			*pp = c->next;
			pthread_cond_broadcast(&sim.cond);
			pthread_mutex_unlock(&sim.mu);
			pthread_join(c->th, NULL);
			close(c->fd);
			free(c);
			pthread_mutex_lock(&sim.mu);
			pp = &sim.conns;
			continue;
		}
		pp = &c->next;
	}
	pthread_mutex_unlock(&sim.mu);
}

static void *noop_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&sim.mu);
	while (!sim.stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 200 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
		pthread_cond_timedwait(&sim.noop_cond, &sim.mu, &ts);
		if (sim.stop) break;
		sim_check_stepup();
		if (sim.noop_interval > 0 && !sim.stepped_down &&
		    sim_mono_ms() - sim.last_append_mono >= (int64_t)sim.noop_interval * 1000)
			sim_noop("periodic noop");
		if (sim.signal_pending) {
			sim.signal_pending = false;
			pthread_cond_broadcast(&sim.cond);
		}
	}
	pthread_mutex_unlock(&sim.mu);
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mongosim --port N [--bind 127.0.0.1] [--replset NAME] [--dbpath DIR]\n"
	           "                [--oplog-size-mb N] [--oplog-format v2|v1] [--noop-interval SECS]\n"
	           "                [--txn-split-ops N] [--enable-faults]\n");
}

int main(int argc, char **argv)
{
	const char *bind_addr = "127.0.0.1";
	int port = -1;
	size_t oplog_mb = 1024;
	sim.replset = "rs0";
	sim.noop_interval = 10;
	sim.term = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
		if (!strcmp(a, "--enable-faults")) { sim.faults = true; continue; }
		if (!v) { usage(stderr); return 2; }
		i++;
		if (!strcmp(a, "--port")) port = atoi(v);
		else if (!strcmp(a, "--bind")) bind_addr = v;
		else if (!strcmp(a, "--replset")) sim.replset = (char *)v;
		else if (!strcmp(a, "--dbpath")) sim.dbpath = (char *)v;
		else if (!strcmp(a, "--oplog-size-mb")) oplog_mb = (size_t)atol(v);
		else if (!strcmp(a, "--oplog-format")) {
			if (!strcmp(v, "v1")) sim.oplog_v1 = 1;
			else if (strcmp(v, "v2")) { usage(stderr); return 2; }
		} else if (!strcmp(a, "--noop-interval")) sim.noop_interval = atoi(v);
		else if (!strcmp(a, "--txn-split-ops")) sim.txn_split = atoi(v);
		else { fprintf(stderr, "mongosim: unknown option '%s'\n", a); usage(stderr); return 2; }
	}
	if (port < 0 || port > 65535 || oplog_mb == 0) { usage(stderr); return 2; }
	srandom((unsigned)(time(NULL) ^ getpid()));
	/* all work is serialised by sim.mu: one malloc arena growing in large
	 * steps beats per-thread arenas growing page by page (mprotect) */
	mallopt(M_ARENA_MAX, 1);
	mallopt(M_TOP_PAD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	signal(SIGPIPE, SIG_IGN);
	pthread_mutex_init(&sim.mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sim.cond, &ca);
	pthread_cond_init(&sim.noop_cond, &ca);
	pthread_condattr_destroy(&ca);
	sim_oplog_init(oplog_mb * 1024 * 1024);
	sim.next_cursor = ((int64_t)random() << 20) | 1;
	sim.start_ms = sim_mono_ms();

	int ls = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) { fprintf(stderr, "mongosim: bad --bind address '%s'\n", bind_addr); return 2; }
	if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 128)) {
		fprintf(stderr, "mongosim: unable to listen on %s:%d: %s\n", bind_addr, port, strerror(errno));
		return 1;
	}
	socklen_t sl = sizeof sa;
	getsockname(ls, (struct sockaddr *)&sa, &sl);
	sim.port = ntohs(sa.sin_port);
	/* the name clients must use for the member (hello.hosts/me/primary) */
	snprintf(sim.host, sizeof sim.host, "%s:%d", strcmp(bind_addr, "0.0.0.0") ? bind_addr : "127.0.0.1", sim.port);

	bson_oid_init(&sim.replset_id, NULL);
	if (sim.dbpath) {
		if (sim_load(sim.dbpath)) return 1;
	}
	pthread_mutex_lock(&sim.mu);
	if (sim.oplog.n == 0) {
		sim_noop("initiating set");
	} else {
		sim.term++;   /* a restarted node wins a new election */
		sim_noop("new primary");
	}
	sim_election_id();
	sim_unlock();

	if (pipe(sig_pipe)) return 1;
	struct sigaction act = { .sa_handler = on_signal };
	sigemptyset(&act.sa_mask);
	sigaction(SIGTERM, &act, NULL);
	sigaction(SIGINT, &act, NULL);

	pthread_t noop_th;
	pthread_create(&noop_th, NULL, noop_main, NULL);
	printf("ready port=%d\n", sim.port);
	fflush(stdout);
	sim_log("listening on %s (replset %s)", sim.host, sim.replset);

	while (!sim.stop) {
		struct pollfd pf[2] = { { ls, POLLIN, 0 }, { sig_pipe[0], POLLIN, 0 } };
		int r = poll(pf, 2, 1000);
		reap(false);
		if (r <= 0 || !(pf[0].revents & POLLIN)) continue;
		int fd = accept(ls, NULL, NULL);
		if (fd < 0) continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct sim_conn *c = calloc(1, sizeof *c);
		c->fd = fd;
		pthread_mutex_lock(&sim.mu);
		c->id = ++sim.next_conn_id;
		c->next = sim.conns;
		sim.conns = c;
		pthread_mutex_unlock(&sim.mu);
		if (pthread_create(&c->th, NULL, conn_main, c)) {
			pthread_mutex_lock(&sim.mu);
			c->done = true;
			pthread_mutex_unlock(&sim.mu);
		}
	}
	sim_log("shutting down");
	close(ls);
	pthread_mutex_lock(&sim.mu);
	pthread_cond_broadcast(&sim.cond);
	pthread_cond_broadcast(&sim.noop_cond);
	pthread_mutex_unlock(&sim.mu);
	reap(true);
	pthread_join(noop_th, NULL);
	int rc = 0;
	if (sim.dbpath && sim_save(sim.dbpath)) rc = 1;
	sim_cursors_free();
	sim_sessions_free();
	for (size_t i = 0; i < sim.ncolls; i++) sim_coll_free(sim.colls[i]);
	free(sim.colls);
	free(sim.gc);
	sim_oplog_free();
	close(sig_pipe[0]);
	close(sig_pipe[1]);
	return rc;
}
