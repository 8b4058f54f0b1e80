/*-------------------------------------------------------------------------
 *
 * utility.c
 *		Utility commands that the workers must make way for: DROP DATABASE
 *		and DROP EXTENSION jobq.
 *
 * DROP DATABASE refuses to drop a database that other processes are
 * connected to, after waiting five seconds for them to leave; only
 * autovacuum workers are asked to.  So, before a DROP DATABASE of a
 * database that jobq serves runs, the database is marked as being dropped
 * in shared memory (the launcher then starts nothing there) and its pool
 * manager and background workers are sent SIGTERM: a running job is
 * cancelled and its worker exits at once.  When the command ends, whether
 * it dropped the database or failed (other sessions still connected), the
 * mark is removed; after a failure the launcher starts the workers again,
 * and the cancelled jobs run again after their backoff (the attempt counts,
 * as with pg_terminate_backend).  DROP DATABASE ... WITH (FORCE) behaves
 * the same, and terminates the other sessions too.
 *
 * DROP EXTENSION jobq waits, like any DDL on jobq's tables, for jobs
 * running at that moment to finish; at its commit the pool manager is told
 * to look again, so the workers stop instead of being restarted.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/utility.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "nodes/parsenodes.h"
#include "storage/latch.h"
#include "tcop/utility.h"

#include "jobq.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/*
 * Mark or unmark a database as being dropped; when marking, stop its
 * pool manager and background workers.
 */
static void
set_dropping(const char *dbname, bool dropping)
{
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < JOBQ_MAX_DATABASES; i++)
	{
		JobqDbState *d = &jobq_shared->dbs[i];

		if (!d->used || strcmp(d->dbname, dbname) != 0)
			continue;
		d->dropping = dropping;
		if (dropping && d->manager_pid != 0)
			kill(d->manager_pid, SIGTERM);
	}
	if (dropping)
	{
		for (int i = 0; i < jobq_shared->nslots; i++)
		{
			JobqSlot   *s = &jobq_shared->slots[i];

			if (s->state != JOBQ_SLOT_FREE && !s->in_session &&
				strcmp(s->dbname, dbname) == 0)
				kill(s->pid, SIGTERM);
		}
	}
	if (jobq_shared->launcher_latch)
		SetLatch(jobq_shared->launcher_latch);
	LWLockRelease(jobq_shared->lock);
}

static bool
drops_jobq(DropStmt *stmt)
{
	ListCell   *lc;

	if (stmt->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, stmt->objects)
	{
		Node	   *obj = lfirst(lc);

		if (IsA(obj, String) && strcmp(strVal(obj), "jobq") == 0)
			return true;
	}
	return false;
}

static void
jobq_process_utility(PlannedStmt *pstmt, const char *queryString,
					 bool readOnlyTree, ProcessUtilityContext context,
					 ParamListInfo params, QueryEnvironment *queryEnv,
					 DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	const char *dropping = NULL;

	if (jobq_shared != NULL && IsA(parsetree, DropdbStmt))
	{
		dropping = ((DropdbStmt *) parsetree)->dbname;
		set_dropping(dropping, true);
	}
	else if (jobq_shared != NULL && IsA(parsetree, DropStmt) &&
			 drops_jobq((DropStmt *) parsetree))
		jobq_pools_changed_at_commit();

	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (dropping)
			set_dropping(dropping, false);
	}
	PG_END_TRY();
}

/*
 * Called from _PG_init while shared_preload_libraries is processed.
 */
void
jobq_utility_init_hooks(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = jobq_process_utility;
}
