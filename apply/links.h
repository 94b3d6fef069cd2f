/*
 * links.h — replication links, stored on the destination in `mmm.links`
 * (shape in apply/LINKS.md).  A link maps a source namespace, "db.coll" or
 * "db.*", to a destination namespace of the same form.
 */
#ifndef MMM_LINKS_H
#define MMM_LINKS_H
#include <stddef.h>
#include <stdint.h>
#include <mongoc/mongoc.h>

#define LINK_NS_MAX 256

struct app_link {
	char id[3 * LINK_NS_MAX];     /* "<src server>/<src ns>=><dst ns>" */
	uint8_t src[16];              /* source server UUID */
	char src_name[128];
	char src_ns[LINK_NS_MAX];
	char dst_ns[LINK_NS_MAX];
	char ops[8];                  /* subset of "iudc" */
	int forward;                  /* also pass on what the source received */
	uint64_t start_ts;            /* apply entries from here on (0: all) */
	uint64_t applied_until;       /* apply's own: entries up to here went through this link already */
};

/* Reads every link of the destination behind C.  *out is malloc'd. */
int links_read(mongoc_client_t *c, struct app_link **out, size_t *n, bson_error_t *err);
/* Writes (upserts) L on the destination behind C. */
int links_write(mongoc_client_t *c, const struct app_link *l, bson_error_t *err);
/* Deletes every link (and checkpoint) of the destination behind C. */
int links_clear(mongoc_client_t *c, bson_error_t *err);
/* Fills l->id from its fields. */
void link_make_id(struct app_link *l);

/* Checks a namespace argument: "db.coll" or "db.*"; 0 or MMM_EUSAGE with a reason. */
int link_check_ns(const char *ns, char *why, size_t len);
/* Maps the source namespace NS through L into DST: 1 when L covers NS. */
int link_map_ns(const struct app_link *l, const char *ns, char *dst, size_t len);
/* Maps a source database through L (for database-wide commands): 1 when L
 * covers the whole database ("db.*"). */
int link_map_db(const struct app_link *l, const char *db, char *dst, size_t len);
/* Whether L replicates op kind OP ('i','u','d','c'). */
int link_has_op(const struct app_link *l, char op);

#endif
