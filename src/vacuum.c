/*-------------------------------------------------------------------------
 *
 * vacuum.c
 *		Keeping jobq.jobs small under churn: the pool manager of each
 *		database vacuums the table itself once enough dead row versions
 *		have piled up.
 *
 * Every job leaves two dead row versions behind (the one its reservation
 * replaced, and the deleted one).  Autovacuum visits a database at most
 * every autovacuum_naptime (a minute by default), and a busy queue leaves
 * millions of dead versions in that time: the table and its indexes grow
 * to hundreds of megabytes, new jobs are appended at the end instead of
 * reusing space, and every reservation walks past more dead index entries.
 * So the pool manager (pool.c) looks at the table's dead-version count
 * every JOBQ_VACUUM_CHECK_MS and, past jobq.vacuum_threshold, runs a plain
 * VACUUM of jobq.jobs (without truncation), unless autovacuum is at work on
 * the table or a long transaction has kept the removal horizon where it
 * was at the last VACUUM.
 * A plain VACUUM takes a lock that does not conflict with the workers'
 * reads and writes.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/vacuum.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "jobq.h"

/*
 * The dead row versions of jobq.jobs as the cumulative statistics have
 * them (backends report within a second or so), or -1 if jobq is not
 * installed.  Needs a transaction.
 */
static int64
jobs_dead_versions(Oid *relid)
{
	Oid			nsp = get_namespace_oid("jobq", true);
	PgStat_StatTabEntry *tab;

	*relid = OidIsValid(nsp) ? get_relname_relid("jobs", nsp) : InvalidOid;
	if (!OidIsValid(*relid))
		return -1;
	/* the statistics as of now, not as first read in this transaction */
	pgstat_clear_snapshot();
	tab = pgstat_fetch_stat_tabentry(*relid);
	return tab != NULL ? tab->n_dead_tuples : 0;
}

/*
 * VACUUM (SKIP_LOCKED, TRUNCATE false) jobq.jobs, as a top-level command of this process.
 * Called between transactions by a background worker connected to the
 * database as a superuser (the pool manager).
 */
static void
vacuum_jobs(Oid relid)
{
	MemoryContext portal_cxt;
	VacuumStmt *stmt;
	ParseState *pstate;

	/* VACUUM keeps its own memory under PortalContext, as in a backend */
	portal_cxt = AllocSetContextCreate(TopMemoryContext, "jobq vacuum",
									   ALLOCSET_DEFAULT_SIZES);
	PortalContext = portal_cxt;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	MemoryContextSwitchTo(portal_cxt);
	pgstat_report_activity(STATE_RUNNING, "VACUUM (SKIP_LOCKED, TRUNCATE false) jobq.jobs");

	/*
	 * Without truncation: under churn the empty pages at the end of the
	 * table are soon used again, and truncating them needs an exclusive
	 * lock that the workers never leave free; VACUUM then retries for up
	 * to 5 seconds, during which dead versions pile up again.  Autovacuum
	 * still gives the space back when the queue is quiet.
	 */
	stmt = makeNode(VacuumStmt);
	stmt->options = list_make2(makeDefElem("skip_locked", NULL, -1),
							   makeDefElem("truncate", (Node *) makeString("false"), -1));
	/* by OID: a table dropped meanwhile is skipped quietly, as autovacuum does */
	stmt->rels = list_make1(makeVacuumRelation(NULL, relid, NIL));
	stmt->is_vacuumcmd = true;
	pstate = make_parsestate(NULL);
	ExecVacuum(pstate, stmt, true);

	/* VACUUM committed its own transactions and left a new one open */
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	PortalContext = NULL;
	MemoryContextDelete(portal_cxt);
}

/*
 * The removal horizon of jobq.jobs when it was last vacuumed here: while
 * a long transaction holds the horizon back, no dead version newer than it
 * can be removed, and vacuuming the growing table again every second would
 * only add to the load.
 */
static TransactionId last_horizon = InvalidTransactionId;

/*
 * Should jobq.jobs be vacuumed now?  Its dead versions are past the
 * threshold, the removal horizon moved since the last VACUUM here, and no
 * other VACUUM is at work on it (VACUUM (SKIP_LOCKED) would skip it as
 * well, after starting up).  *horizon is set to the current horizon.
 */
static bool
vacuum_due(Oid *relid, TransactionId *horizon)
{
	bool		due = false;
	int64		dead;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	dead = jobs_dead_versions(relid);
	if (dead >= jobq_vacuum_threshold)
	{
		Relation	rel = try_relation_open(*relid, AccessShareLock);

		if (rel != NULL)
		{
			*horizon = GetOldestNonRemovableTransactionId(rel);
			relation_close(rel, AccessShareLock);
			due = !TransactionIdEquals(*horizon, last_horizon) &&
				ConditionalLockRelationOid(*relid, ShareUpdateExclusiveLock);
		}
	}
	CommitTransactionCommand();
	return due;
}

/*
 * Vacuum jobq.jobs if jobq.vacuum_threshold dead versions have piled up.
 * Called by the pool manager between its other duties; *last_check is its
 * own, so that it looks at most every JOBQ_VACUUM_CHECK_MS.  Returns how
 * long the caller may sleep before it should call again.
 */
long
jobq_maybe_vacuum_jobs(TimestampTz *last_check)
{
	TimestampTz now = GetCurrentTimestamp();
	Oid			relid;
	TransactionId horizon;

	if (jobq_vacuum_threshold <= 0)
		return JOBQ_VACUUM_CHECK_MS;
	if (*last_check != 0 &&
		!TimestampDifferenceExceeds(*last_check, now, JOBQ_VACUUM_CHECK_MS))
	{
		long		secs;
		int			usecs;

		TimestampDifference(now,
							TimestampTzPlusMilliseconds(*last_check,
														JOBQ_VACUUM_CHECK_MS),
							&secs, &usecs);
		return secs * 1000 + usecs / 1000 + 1;
	}
	*last_check = now;

	if (vacuum_due(&relid, &horizon))
	{
		vacuum_jobs(relid);
		last_horizon = horizon;
	}
	return JOBQ_VACUUM_CHECK_MS;
}
