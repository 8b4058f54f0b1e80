/*-------------------------------------------------------------------------
 *
 * utility.c
 *		Utility commands that the workers must make way for.
 *
 * Some commands refuse to run while other processes are connected to a
 * database, after waiting five seconds for them to leave (only autovacuum
 * workers are asked to): DROP DATABASE, CREATE DATABASE using it as the
 * template, ALTER DATABASE RENAME and ALTER DATABASE SET TABLESPACE.
 * Before such a command runs on a database that jobq serves, the database
 * is paused in shared memory (the launcher starts nothing there) and its
 * pool manager leaves; then
 *
 *	- for DROP DATABASE its workers are sent SIGTERM: a running job is
 *	  cancelled (its data goes with the database) and they exit at once;
 *	- for the other commands its workers leave after their current job, as
 *	  after jobq.restart(): a job that ends within those five seconds lets
 *	  the command through, a longer one makes it fail as any busy session
 *	  would.
 *
 * When the command ends, whether it succeeded or failed, the pause is
 * lifted and the launcher starts the workers again (after a failed DROP
 * DATABASE, cancelled jobs run again after their backoff: the attempt
 * counts, as with pg_terminate_backend).
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
 * Pause or resume a database.  When pausing, its pool manager leaves, and
 * its workers too: at once (terminate) or after their current job.
 */
static void
pause_database(const char *dbname, bool pause, bool terminate)
{
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < JOBQ_MAX_DATABASES; i++)
	{
		JobqDbState *d = &jobq_shared->dbs[i];

		if (!d->used || strcmp(d->dbname, dbname) != 0)
			continue;
		d->paused = pause;
		if (pause && d->manager_pid != 0)
			kill(d->manager_pid, SIGTERM);
	}
	if (pause)
	{
		for (int i = 0; i < jobq_shared->nslots; i++)
		{
			JobqSlot   *s = &jobq_shared->slots[i];

			if (s->state == JOBQ_SLOT_FREE || s->in_session ||
				strcmp(s->dbname, dbname) != 0)
				continue;
			if (terminate)
				kill(s->pid, SIGTERM);
			else
			{
				s->restart_requested = true;
				if (s->latch)
					SetLatch(s->latch);
			}
		}
	}
	if (jobq_shared->launcher_latch)
		SetLatch(jobq_shared->launcher_latch);
	LWLockRelease(jobq_shared->lock);
}

/*
 * The database a command needs free of other connections, if any; sets
 * *terminate for DROP DATABASE.
 */
static const char *
database_to_pause(Node *parsetree, bool *terminate)
{
	ListCell   *lc;

	*terminate = false;
	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			*terminate = true;
			return ((DropdbStmt *) parsetree)->dbname;
		case T_CreatedbStmt:
			foreach(lc, ((CreatedbStmt *) parsetree)->options)
			{
				DefElem    *opt = lfirst(lc);

				if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL &&
					IsA(opt->arg, String))
					return strVal(opt->arg);
			}
			return NULL;
		case T_AlterDatabaseStmt:
			foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
			{
				DefElem    *opt = lfirst(lc);

				if (strcmp(opt->defname, "tablespace") == 0)
					return ((AlterDatabaseStmt *) parsetree)->dbname;
			}
			return NULL;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				return ((RenameStmt *) parsetree)->subname;
			return NULL;
		default:
			return NULL;
	}
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
	const char *paused = NULL;
	bool		terminate = false;

	if (jobq_shared != NULL)
	{
		paused = database_to_pause(parsetree, &terminate);
		if (paused)
			pause_database(paused, true, terminate);
		else if (IsA(parsetree, DropStmt) && drops_jobq((DropStmt *) parsetree))
			jobq_pools_changed_at_commit();
	}

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
		if (paused)
			pause_database(paused, false, false);
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
