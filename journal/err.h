/*
 * err.h — error codes shared by every mmm module.
 *
 * Functions return int: 0 on success, a positive errno value for system
 * errors, or one of the negative MMM_E* codes below (a reserved range just
 * above LMDB's MDB_* codes, so an LMDB return value passes through unchanged).
 * mmm_strerror() describes all three kinds.  mmm_errname() gives the symbolic
 * name ("EIO", "MMM_EGAP"), which MMM_FAULT accepts too (see fault.h).
 */
#ifndef MMM_ERR_H
#define MMM_ERR_H

enum {
	MMM_EBASE = -30700,
	MMM_ENOTFOUND = MMM_EBASE,   /* no such source, key or entry */
	MMM_EEND,                    /* iteration finished: not an error */
	MMM_EPOISONED,               /* a write failed before: the journal handle refuses writes */
	MMM_ECORRUPT,                /* a block, segment or record fails its checks */
	MMM_EGAP,                    /* data would leave a hole in a source's sequence */
	MMM_EORDER,                  /* an entry's ts is not after the one before it */
	MMM_EBSON,                   /* malformed BSON */
	MMM_ECONFIG,                 /* bad configuration */
	MMM_EUSAGE,                  /* bad argument or value */
	MMM_EVERSION,                /* unsupported on-disk format version */
	MMM_EOWNER,                  /* the source belongs to another journal (captured vs received) */
	MMM_ECONFLICT,               /* same key, different content */
	MMM_ESERVER,                 /* a server answered with an error */
	MMM_ETRUNC,                  /* input ends in the middle of a record */
	MMM_EIDENTITY,               /* a server is not the replica set recorded for it */
	MMM_ELAST
};

/* Text for any return code: errno, LMDB or MMM_E*.  Never NULL; static storage. */
const char *mmm_strerror(int rc);
/* Symbolic name of a code ("EIO", "MMM_EGAP"), or NULL when it has none. */
const char *mmm_errname(int rc);
/* The code with that symbolic name, or 0 when the name is unknown. */
int mmm_errcode(const char *name);

#endif
