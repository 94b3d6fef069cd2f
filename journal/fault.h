/*
 * fault.h — numbered fault points for crash and error tests (sqlite's
 * sqlite3FaultSim idea, armed through the environment like git's GIT_TEST_*).
 *
 *   MMM_FAULT=jnl_commit@3:crash,apply_txn@1:EIO
 *
 * arms point "jnl_commit" to act on its 3rd hit and "apply_txn" on its 1st.
 * The action "crash" is _exit(137), what a kill -9 looks like to the parent;
 * an error name (an errno name such as EIO or ENOSPC, or an MMM_E* name from
 * err.h) makes fault_hit() return that code once.  "@N+" acts on the Nth hit
 * and every later one.  Unarmed points cost one relaxed atomic load.
 *
 * Points in use (grep fault_hit for the full list):
 *   jnl_commit      before a journal write transaction commits
 *   jnl_committed   right after it committed
 */
#ifndef MMM_FAULT_H
#define MMM_FAULT_H

/* Reads MMM_FAULT.  Returns 0, or MMM_EUSAGE (and logs) when it is malformed. */
int fault_init(void);
/* Counts a hit of POINT; returns 0, or the armed error code; never returns on "crash". */
int fault_hit(const char *point);

#endif
