/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The launcher: a static background worker that starts and supervises
 *		the job workers of every database listed in jobq.database.
 *
 * It connects to no database (it appears in pg_stat_activity without one),
 * so it cannot read a database's jobq.pools itself.  For each database it
 * runs a pool manager (pool.c), which publishes the database's pools in
 * shared memory, and from that it keeps running (as dynamic workers,
 * BGW_NEVER_RESTART, so that it alone decides):
 *
 *	- the default pool, jobq.workers workers serving jobq.queues, in a
 *	  database where jobq is installed and jobq.pools is empty;
 *	- otherwise `processes` workers for each pool.
 *
 * A worker that stops is started again: at once if it left on purpose
 * (jobq.restart(), its pool changed, a recycling limit: it says so in an
 * exit note in shared memory) or had run for a while, with a growing delay
 * (up to a minute) if it keeps dying quickly.  A backend that commits a
 * dispatch in a database without workers sets launcher_kicked, which
 * cancels those delays and makes the pool managers look again.
 *
 * Workers no longer wanted because their pool changed leave by themselves
 * after their current job; the launcher only terminates workers of a
 * database removed from jobq.database and default-pool workers beyond a
 * lowered jobq.workers.
 *
 * Its view of which workers run comes from the registry in shared memory,
 * so a restarted launcher adopts the workers that are still running
 * instead of starting them twice.  After a crash restart, the postmaster
 * starts the launcher again and it starts every worker anew.
 *
 * jobq.database and jobq.workers are read again on SIGHUP.
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
	int			pool_idx;		/* JOBQ_POOL_MANAGER, _DEFAULT or pools[] */
	int			index;			/* 1 .. processes (0: manager) */
	uint64		version;		/* of the pool, when wanted */
	BackgroundWorkerHandle *handle; /* NULL if adopted or not started */
	TimestampTz started_at;
	TimestampTz next_start;		/* backoff: do not start before */
	int			quick_exits;	/* consecutive */
	bool		wanted;
	bool		terminate;		/* unwanted and to be stopped by us */
} WorkerEntry;

static List *entries = NIL;		/* of WorkerEntry * */
static List *databases = NIL;	/* jobq.database, parsed */
static bool out_of_slots_logged = false;
static bool too_many_databases_logged = false;

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
find_entry(const char *dbname, int pool_idx, int index)
{
	ListCell   *lc;

	foreach(lc, entries)
	{
		WorkerEntry *e = lfirst(lc);

		if (e->index == index && e->pool_idx == pool_idx &&
			strcmp(e->dbname, dbname) == 0)
			return e;
	}
	return NULL;
}

static void
want(const char *dbname, int pool_idx, int index, uint64 version)
{
	WorkerEntry *e = find_entry(dbname, pool_idx, index);

	if (e == NULL)
	{
		e = MemoryContextAllocZero(TopMemoryContext, sizeof(WorkerEntry));
		strlcpy(e->dbname, dbname, NAMEDATALEN);
		e->pool_idx = pool_idx;
		e->index = index;
		entries = lappend(entries, e);
	}
	e->wanted = true;
	e->version = version;
}

/* jobq.database, after start and SIGHUP */
static void
read_databases(void)
{
	char	   *raw;
	List	   *dbs = NIL;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	list_free_deep(databases);
	databases = NIL;
	raw = pstrdup(jobq_database);
	if (!SplitGUCList(raw, ',', &dbs))
		ereport(LOG,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("jobq: invalid list in jobq.database: \"%s\"", jobq_database)));
	else
	{
		foreach(lc, dbs)
		{
			char	   *db = lfirst(lc);

			if (strlen(db) > 0 && strlen(db) < NAMEDATALEN)
				databases = lappend(databases, pstrdup(db));
		}
	}
	MemoryContextSwitchTo(old);
}

static bool
database_listed(const char *dbname)
{
	ListCell   *lc;

	foreach(lc, databases)
		if (strcmp((char *) lfirst(lc), dbname) == 0)
			return true;
	return false;
}

/*
 * Mark the entries that the configuration and the published pools want,
 * adding new ones, and decide which of the others to stop.
 */
static void
read_wanted_workers(void)
{
	ListCell   *lc;

	foreach(lc, entries)
	{
		WorkerEntry *e = lfirst(lc);

		e->wanted = false;
		e->terminate = false;
	}

	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	/* forget databases no longer listed, and their pools */
	for (int i = 0; i < JOBQ_MAX_DATABASES; i++)
	{
		JobqDbState *d = &jobq_shared->dbs[i];

		if (d->used && !database_listed(d->dbname))
			d->used = false;
	}
	for (int p = 0; p < JOBQ_MAX_POOLS; p++)
	{
		JobqPoolConf *pc = &jobq_shared->pools[p];

		if (pc->used && !database_listed(pc->dbname))
		{
			pc->used = false;
			pg_atomic_fetch_add_u64(&jobq_shared->pools_changed, 1);
		}
	}
	foreach(lc, databases)
	{
		char	   *db = lfirst(lc);
		JobqDbState *d = jobq_db_state(db);

		if (d == NULL)
		{
			if (!too_many_databases_logged)
				ereport(LOG,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("jobq: more than %d databases in jobq.database; \"%s\" is not served",
								JOBQ_MAX_DATABASES, db)));
			too_many_databases_logged = true;
			continue;
		}
		if (d->paused)
			continue;
		want(db, JOBQ_POOL_MANAGER, 0, 0);
		if (!d->loaded || !d->installed)
			continue;
		if (d->npools == 0)
		{
			for (int i = 1; i <= jobq_workers; i++)
				want(db, JOBQ_POOL_DEFAULT, i, 0);
			continue;
		}
		for (int p = 0; p < JOBQ_MAX_POOLS; p++)
		{
			JobqPoolConf *pc = &jobq_shared->pools[p];

			if (!pc->used || strcmp(pc->dbname, db) != 0)
				continue;
			for (int i = 1; i <= pc->processes; i++)
				want(db, p, i, pc->version);
		}
	}

	/*
	 * Workers of a changed pool leave by themselves after their job.  We
	 * stop the others: anything of an unlisted database, a manager, and
	 * default-pool workers beyond jobq.workers.
	 */
	foreach(lc, entries)
	{
		WorkerEntry *e = lfirst(lc);
		JobqDbState *d;

		if (e->wanted)
			continue;
		if (!database_listed(e->dbname) || e->pool_idx == JOBQ_POOL_MANAGER)
			e->terminate = true;
		else if (e->pool_idx == JOBQ_POOL_DEFAULT)
		{
			d = jobq_db_state(e->dbname);
			e->terminate = (d != NULL && d->npools == 0 && !d->paused);
		}
	}
	LWLockRelease(jobq_shared->lock);
}

/*
 * Did this entry's worker leave on purpose since it was started?
 */
static bool
left_on_purpose(WorkerEntry *e)
{
	bool		found = false;

	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < JOBQ_EXIT_NOTES; i++)
	{
		JobqExitNote *note = &jobq_shared->exit_notes[i];

		if (note->at != 0 && note->at >= e->started_at &&
			note->pool_idx == e->pool_idx && note->index == e->index &&
			strcmp(note->dbname, e->dbname) == 0)
		{
			note->at = 0;
			found = true;
		}
	}
	LWLockRelease(jobq_shared->lock);
	return found;
}

/* Is a manager of this database registered (started by an earlier launcher)? */
static bool
manager_running(const char *dbname, pid_t *pid)
{
	bool		found = false;

	LWLockAcquire(jobq_shared->lock, LW_SHARED);
	for (int i = 0; i < JOBQ_MAX_DATABASES; i++)
	{
		JobqDbState *d = &jobq_shared->dbs[i];

		if (d->used && d->manager_pid != 0 && strcmp(d->dbname, dbname) == 0)
		{
			found = true;
			if (pid)
				*pid = d->manager_pid;
		}
	}
	LWLockRelease(jobq_shared->lock);
	return found;
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

		if (left_on_purpose(e) ||
			TimestampDifferenceExceeds(e->started_at, now, JOBQ_QUICK_EXIT_MS))
			e->quick_exits = 0;
		else
			e->quick_exits++;
		e->next_start = TimestampTzPlusMilliseconds(now,
													Min(JOBQ_MAX_BACKOFF_MS,
														e->quick_exits == 0 ? 0 :
														500L << Min(e->quick_exits, 8)));
	}
	/* started by an earlier launcher, or registering right now */
	if (e->pool_idx == JOBQ_POOL_MANAGER)
		return manager_running(e->dbname, NULL);
	return jobq_worker_is_running(e->dbname, e->pool_idx, e->index);
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
	if (e->pool_idx == JOBQ_POOL_MANAGER)
	{
		strlcpy(bgw.bgw_function_name, "jobq_pool_manager_main", BGW_MAXLEN);
		snprintf(bgw.bgw_name, BGW_MAXLEN, "jobq pool manager for database %s",
				 e->dbname);
		strlcpy(bgw.bgw_type, "jobq pool manager", BGW_MAXLEN);
	}
	else
	{
		strlcpy(bgw.bgw_function_name, "jobq_worker_main", BGW_MAXLEN);
		snprintf(bgw.bgw_name, BGW_MAXLEN, "jobq worker %d for database %s",
				 e->index, e->dbname);
		strlcpy(bgw.bgw_type, "jobq worker", BGW_MAXLEN);
	}
	bgw.bgw_notify_pid = MyProcPid;

	memset(&args, 0, sizeof(args));
	strlcpy(args.dbname, e->dbname, NAMEDATALEN);
	args.index = e->index;
	args.pool_idx = e->pool_idx;
	args.pool_version = e->version;
	StaticAssertStmt(sizeof(args) <= BGW_EXTRALEN, "worker args too large");
	memcpy(bgw.bgw_extra, &args, sizeof(args));

	if (!RegisterDynamicBackgroundWorker(&bgw, &e->handle))
	{
		e->handle = NULL;
		e->next_start = TimestampTzPlusMilliseconds(now, 5000);
		if (!out_of_slots_logged)
			ereport(LOG,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("jobq: out of background worker slots, cannot start %s for database \"%s\"",
							e->pool_idx == JOBQ_POOL_MANAGER ? "the pool manager" : "a worker",
							e->dbname),
					 errdetail("Workers are started as slots become free; this is logged once until one could be started."),
					 errhint("Raise max_worker_processes (now %d): jobq needs one for its launcher, and per database one for its pool manager and one per worker of its pools, besides parallel query.",
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
	pid_t		pid;

	if (e->handle != NULL)
		TerminateBackgroundWorker(e->handle);
	else if (e->pool_idx == JOBQ_POOL_MANAGER)
	{
		if (manager_running(e->dbname, &pid))
			kill(pid, SIGTERM);
	}
	else
	{
		/* adopted: find its pid in the registry */
		LWLockAcquire(jobq_shared->lock, LW_SHARED);
		for (int i = 0; i < jobq_shared->nslots; i++)
		{
			JobqSlot   *s = &jobq_shared->slots[i];

			if (s->state != JOBQ_SLOT_FREE && !s->in_session &&
				s->worker_index == e->index && s->pool_idx == e->pool_idx &&
				strcmp(s->dbname, e->dbname) == 0)
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
	read_databases();

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
			read_databases();
		}

		LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
		kicked = jobq_shared->launcher_kicked;
		jobq_shared->launcher_kicked = false;
		/* a dispatch in a database without workers: managers look again */
		if (kicked)
			for (int i = 0; i < JOBQ_MAX_DATABASES; i++)
				if (jobq_shared->dbs[i].used && jobq_shared->dbs[i].manager_latch)
					SetLatch(jobq_shared->dbs[i].manager_latch);
		LWLockRelease(jobq_shared->lock);

		read_wanted_workers();

		now = GetCurrentTimestamp();
		foreach(lc, entries)
		{
			WorkerEntry *e = lfirst(lc);
			bool		running = entry_running(e, now);

			if (!e->wanted)
			{
				if (running)
				{
					if (e->terminate)
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
