/* err.c — mmm_strerror() and the symbolic names of error codes. */
#include <errno.h>
#include <string.h>
#include <lmdb.h>
#include "err.h"

static const char *const mmm_msgs[] = {
	[MMM_ENOTFOUND - MMM_EBASE] = "not found",
	[MMM_EEND - MMM_EBASE] = "end of data",
	[MMM_EPOISONED - MMM_EBASE] = "journal refuses writes after an earlier write failure",
	[MMM_ECORRUPT - MMM_EBASE] = "data is corrupt",
	[MMM_EGAP - MMM_EBASE] = "would leave a gap",
	[MMM_EORDER - MMM_EBASE] = "timestamps out of order",
	[MMM_EBSON - MMM_EBASE] = "malformed BSON",
	[MMM_ECONFIG - MMM_EBASE] = "bad configuration",
	[MMM_EUSAGE - MMM_EBASE] = "bad argument",
	[MMM_EVERSION - MMM_EBASE] = "unsupported format version",
	[MMM_EOWNER - MMM_EBASE] = "source belongs to another journal",
	[MMM_ECONFLICT - MMM_EBASE] = "conflicting data for the same key",
	[MMM_ESERVER - MMM_EBASE] = "server error",
	[MMM_ETRUNC - MMM_EBASE] = "truncated input",
	[MMM_EIDENTITY - MMM_EBASE] = "server identity changed",
};

static const char *const mmm_names[] = {
	[MMM_ENOTFOUND - MMM_EBASE] = "MMM_ENOTFOUND",
	[MMM_EEND - MMM_EBASE] = "MMM_EEND",
	[MMM_EPOISONED - MMM_EBASE] = "MMM_EPOISONED",
	[MMM_ECORRUPT - MMM_EBASE] = "MMM_ECORRUPT",
	[MMM_EGAP - MMM_EBASE] = "MMM_EGAP",
	[MMM_EORDER - MMM_EBASE] = "MMM_EORDER",
	[MMM_EBSON - MMM_EBASE] = "MMM_EBSON",
	[MMM_ECONFIG - MMM_EBASE] = "MMM_ECONFIG",
	[MMM_EUSAGE - MMM_EBASE] = "MMM_EUSAGE",
	[MMM_EVERSION - MMM_EBASE] = "MMM_EVERSION",
	[MMM_EOWNER - MMM_EBASE] = "MMM_EOWNER",
	[MMM_ECONFLICT - MMM_EBASE] = "MMM_ECONFLICT",
	[MMM_ESERVER - MMM_EBASE] = "MMM_ESERVER",
	[MMM_ETRUNC - MMM_EBASE] = "MMM_ETRUNC",
	[MMM_EIDENTITY - MMM_EBASE] = "MMM_EIDENTITY",
};

static const struct { int code; const char *name; } errno_names[] = {
	{ EIO, "EIO" }, { ENOSPC, "ENOSPC" }, { EACCES, "EACCES" }, { EPERM, "EPERM" },
	{ ENOENT, "ENOENT" }, { ENOMEM, "ENOMEM" }, { EINTR, "EINTR" }, { EAGAIN, "EAGAIN" },
	{ EEXIST, "EEXIST" }, { EINVAL, "EINVAL" }, { EROFS, "EROFS" }, { EDQUOT, "EDQUOT" },
	{ ECONNREFUSED, "ECONNREFUSED" }, { ECONNRESET, "ECONNRESET" }, { ETIMEDOUT, "ETIMEDOUT" },
	{ EPIPE, "EPIPE" }, { EBADF, "EBADF" }, { EFBIG, "EFBIG" },
};

const char *mmm_strerror(int rc)
{
	if (rc >= MMM_EBASE && rc < MMM_ELAST)
		return mmm_msgs[rc - MMM_EBASE];
	if (rc <= MDB_KEYEXIST && rc >= MDB_LAST_ERRCODE - 20)
		return mdb_strerror(rc);
	if (rc > 0)
		return strerror(rc);
	if (rc == 0)
		return "success";
	return "unknown error";
}

const char *mmm_errname(int rc)
{
	if (rc >= MMM_EBASE && rc < MMM_ELAST)
		return mmm_names[rc - MMM_EBASE];
	for (size_t i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++)
		if (errno_names[i].code == rc)
			return errno_names[i].name;
	return NULL;
}

int mmm_errcode(const char *name)
{
	for (int rc = MMM_EBASE; rc < MMM_ELAST; rc++)
		if (strcmp(mmm_names[rc - MMM_EBASE], name) == 0)
			return rc;
	for (size_t i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++)
		if (strcmp(errno_names[i].name, name) == 0)
			return errno_names[i].code;
	return 0;
}
