/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The launcher: a static background worker that starts and supervises
 *		the job workers of every database listed in jobq.database.
 *
 * It connects to no database (it appears in pg_stat_activity without one).  For each database it keeps jobq.workers
 * dynamic workers running (BGW_NEVER_RESTART, so that it alone decides):
 * a worker that stops is started again, at once if it had run for a while,
 * with a growing delay (up to a minute) if it keeps stopping quickly, as it
 * does in a database where jobq is not installed.  A backend that commits a
 * dispatch in a database without workers sets launcher_kicked, which
 * cancels those delays.
 *
 * Its view of which workers run comes from the registry in shared memory,
 * so a restarted launcher adopts the workers that are still running
 * instead of starting them twice.  After a crash restart, the postmaster
 * starts the launcher again and it starts every worker anew.
 *
 * jobq.database and jobq.workers are read again on SIGHUP: workers of
 * databases no longer listed, or beyond the new count, are stopped.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"
#include "utils/wait_event.h"

#include "jobq.h"

/* a worker that stops sooner than this after starting is backed off */
#define JOBQ_QUICK_EXIT_MS		10000
#define JOBQ_MAX_BACKOFF_MS		60000
#define JOBQ_LAUNCHER_NAP_MS	1000

typedef struct WorkerEntry
{
	char		dbname[NAMEDATALEN];
	int			index;			/* 1 .. jobq.workers */
	BackgroundWorkerHandle *handle; /* NULL if adopted or not started */
	TimestampTz started_at;
	TimestampTz next_start;		/* backoff: do not start before */
	int			quick_exits;	/* consecutive */
	bool		wanted;
} WorkerEntry;

static List *entries = NIL;		/* of WorkerEntry * */
static bool out_of_slots_logged = false;

/*
 * Register the launcher; called from _PG_init while preloading.
 */
void
jobq_launcher_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "jobq", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "jobq_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "jobq launcher", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "jobq launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

static WorkerEntry *
find_entry(const char *dbname, int index)
{
	ListCell   *lc;

	foreach(lc, entries)
	{
		WorkerEntry *e = lfirst(lc);

		if (e->index == index && strcmp(e->dbname, dbname) == 0)
			return e;
	}
	return NULL;
}

/*
 * Mark the entries that the configuration wants, adding new ones.
 */
static void
read_wanted_workers(void)
{
	char	   *raw = pstrdup(jobq_database);
	List	   *dbs = NIL;
	ListCell   *lc;
	MemoryContext old;

	foreach(lc, entries)
		((WorkerEntry *) lfirst(lc))->wanted = false;

	if (!SplitGUCList(raw, ',', &dbs))
	{
		ereport(LOG,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("jobq: invalid list in jobq.database: \"%s\"", jobq_database)));
		return;
	}

	old = MemoryContextSwitchTo(TopMemoryContext);
	foreach(lc, dbs)
	{
		char	   *db = lfirst(lc);

		if (strlen(db) == 0 || strlen(db) >= NAMEDATALEN)
			continue;
		for (int i = 1; i <= jobq_workers; i++)
		{
			WorkerEntry *e = find_entry(db, i);

			if (e == NULL)
			{
				e = palloc0(sizeof(WorkerEntry));
				strlcpy(e->dbname, db, NAMEDATALEN);
				e->index = i;
				entries = lappend(entries, e);
			}
			e->wanted = true;
		}
	}
	MemoryContextSwitchTo(old);
}

/*
 * Is the entry's worker running (or starting)?  Collects a stopped
 * worker's handle and updates the backoff.
 */
static bool
entry_running(WorkerEntry *e, TimestampTz now)
{
	pid_t		pid;

	if (e->handle != NULL)
	{
		switch (GetBackgroundWorkerPid(e->handle, &pid))
		{
			case BGWH_STARTED:
			case BGWH_NOT_YET_STARTED:
				return true;
			case BGWH_POSTMASTER_DIED:
				proc_exit(1);
				break;
			case BGWH_STOPPED:
				break;
		}
		pfree(e->handle);
		e->handle = NULL;

		if (TimestampDifferenceExceeds(e->started_at, now, JOBQ_QUICK_EXIT_MS))
			e->quick_exits = 0;
		else
			e->quick_exits++;
		e->next_start = TimestampTzPlusMilliseconds(now,
													Min(JOBQ_MAX_BACKOFF_MS,
														e->quick_exits == 0 ? 0 :
														500L << Min(e->quick_exits, 8)));
	}
	/* started by an earlier launcher, or registering right now */
	return jobq_worker_is_running(e->dbname, e->index);
}

static void
start_worker(WorkerEntry *e, TimestampTz now)
{
	BackgroundWorker bgw;
	JobqWorkerArgs args;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, "jobq", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "jobq_worker_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "jobq worker %d for database %s",
			 e->index, e->dbname);
	strlcpy(bgw.bgw_type, "jobq worker", BGW_MAXLEN);
	bgw.bgw_notify_pid = MyProcPid;

	memset(&args, 0, sizeof(args));
	strlcpy(args.dbname, e->dbname, NAMEDATALEN);
	args.index = e->index;
	StaticAssertStmt(sizeof(args) <= BGW_EXTRALEN, "worker args too large");
	memcpy(bgw.bgw_extra, &args, sizeof(args));

	if (!RegisterDynamicBackgroundWorker(&bgw, &e->handle))
	{
		e->handle = NULL;
		e->next_start = TimestampTzPlusMilliseconds(now, 5000);
		if (!out_of_slots_logged)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("jobq: out of background worker slots, cannot start worker %d for database \"%s\"",
							e->index, e->dbname),
					 errhint("Raise max_worker_processes (now %d): jobq needs one for its launcher and jobq.workers for each database, besides parallel query.",
							 max_worker_processes)));
		out_of_slots_logged = true;
		return;
	}
	out_of_slots_logged = false;
	e->started_at = now;
}

/*
 * Stop a worker the configuration no longer wants.
 */
static void
stop_worker(WorkerEntry *e)
{
	if (e->handle != NULL)
		TerminateBackgroundWorker(e->handle);
	else
	{
		/* adopted: find its pid in the registry */
		LWLockAcquire(jobq_shared->lock, LW_SHARED);
		for (int i = 0; i < jobq_shared->nslots; i++)
		{
			JobqSlot   *s = &jobq_shared->slots[i];

			if (s->state != JOBQ_SLOT_FREE && !s->in_session &&
				s->worker_index == e->index && strcmp(s->dbname, e->dbname) == 0)
				kill(s->pid, SIGTERM);
		}
		LWLockRelease(jobq_shared->lock);
	}
}

void
jobq_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* no database, like core's launcher: only to show in pg_stat_activity */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("jobq launcher");

	jobq_launcher_register_latch();
	read_wanted_workers();

	for (;;)
	{
		TimestampTz now;
		long		nap = JOBQ_LAUNCHER_NAP_MS;
		bool		kicked;
		List	   *keep = NIL;
		ListCell   *lc;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			read_wanted_workers();
		}

		LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
		kicked = jobq_shared->launcher_kicked;
		jobq_shared->launcher_kicked = false;
		LWLockRelease(jobq_shared->lock);

		now = GetCurrentTimestamp();
		foreach(lc, entries)
		{
			WorkerEntry *e = lfirst(lc);
			bool		running = entry_running(e, now);

			if (!e->wanted)
			{
				if (running)
				{
					stop_worker(e);
					keep = lappend(keep, e);
				}
				else
					pfree(e);
				continue;
			}
			keep = lappend(keep, e);
			if (running)
				continue;
			if (kicked)
			{
				e->next_start = 0;
				e->quick_exits = 0;
			}
			if (now >= e->next_start)
				start_worker(e, now);
			else
			{
				long		secs;
				int			usecs;

				TimestampDifference(now, e->next_start, &secs, &usecs);
				nap = Min(nap, secs * 1000 + usecs / 1000 + 1);
			}
		}
		list_free(entries);
		entries = keep;

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 nap, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
