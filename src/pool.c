/*-------------------------------------------------------------------------
 *
 * pool.c
 *		Worker pools: the pool manager of each database, and the shared
 *		memory copy of jobq.pools that the launcher and workers read.
 *
 * Pools are rows of the table jobq.pools in each database (written through
 * jobq.create_pool / alter_pool / drop_pool, or directly).  The launcher is
 * connected to no database and cannot read them, so for every database in
 * jobq.database it runs one small background worker, the pool manager,
 * which:
 *
 *	- connects to the database and checks that jobq is installed there;
 *	- reads jobq.pools and publishes it into jobq_shared->pools[] (and the
 *	  database's JobqDbState), giving a pool a new version whenever its
 *	  definition changes;
 *	- sleeps on its latch, which a transaction that changed jobq.pools sets
 *	  when it commits (a statement trigger on the table, shmem.c), and which
 *	  the launcher sets when a dispatch commits in a database without
 *	  workers; it reads the table again every JOBQ_POOL_REREAD_MS anyway, so
 *	  a change it was not told about (CREATE EXTENSION, a restore) is seen
 *	  within seconds;
 *	- vacuums jobq.jobs when dead row versions pile up (vacuum.c).
 *
 * The launcher starts the workers that the published state asks for: the
 * default pool (jobq.workers processes serving jobq.queues, configured by
 * the parameters) when the database has no pool, else `processes` workers
 * for each pool.  A worker is told its pool's slot and version; it leaves
 * between jobs when the version it was started with is no longer current,
 * and the launcher starts its replacement with the new definition.  So a
 * change takes effect without a server restart and without interrupting a
 * job.  Shared memory is rebuilt by a crash restart; the managers then
 * publish every database's pools again, and every pool comes back.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/pool.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "jobq.h"

/* a pool manager reads jobq.pools at least this often */
#define JOBQ_POOL_REREAD_MS 10000

PG_FUNCTION_INFO_V1(jobq_pools_trigger);
PG_FUNCTION_INFO_V1(jobq_check_pool_queues);

static JobqWorkerArgs manager_args;
static bool too_many_pools_logged = false;

/*
 * Copy the definition of pools[pool_idx] if it still has this version.
 */
bool
jobq_pool_load(int pool_idx, uint64 version, JobqPoolConf *conf)
{
	bool		ok = false;

	if (pool_idx < 0 || pool_idx >= JOBQ_MAX_POOLS)
		return false;
	LWLockAcquire(jobq_shared->lock, LW_SHARED);
	if (jobq_shared->pools[pool_idx].used &&
		jobq_shared->pools[pool_idx].version == version)
	{
		*conf = jobq_shared->pools[pool_idx];
		ok = true;
	}
	LWLockRelease(jobq_shared->lock);
	return ok;
}

/*
 * Is a worker started for this pool (and version) still wanted as it is?
 * For the default pool: as long as its database has no pool.
 */
bool
jobq_pool_is_current(const char *dbname, int pool_idx, uint64 version)
{
	bool		current = true;

	LWLockAcquire(jobq_shared->lock, LW_SHARED);
	if (pool_idx >= 0 && pool_idx < JOBQ_MAX_POOLS)
		current = jobq_shared->pools[pool_idx].used &&
			jobq_shared->pools[pool_idx].version == version;
	else
	{
		for (int i = 0; i < JOBQ_MAX_DATABASES; i++)
		{
			JobqDbState *d = &jobq_shared->dbs[i];

			if (d->used && strcmp(d->dbname, dbname) == 0)
				current = (d->npools == 0);
		}
	}
	LWLockRelease(jobq_shared->lock);
	return current;
}

/*
 * CHECK constraint of jobq.pools.queues: a non-empty list of valid queue
 * names, without repeats.
 */
Datum
jobq_check_pool_queues(PG_FUNCTION_ARGS)
{
	List	   *queues = jobq_queue_array_list(PG_GETARG_ARRAYTYPE_P(0), true);
	char	   *text = jobq_queue_list_text(queues, true);

	if (strlen(text) >= JOBQ_QUEUES_TEXT_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the queue list of a pool is too long"),
				 errdetail("The names, separated by commas, must take less than %d bytes.",
						   JOBQ_QUEUES_TEXT_LEN)));
	PG_RETURN_BOOL(true);
}

/*
 * Statement trigger on jobq.pools: the pool manager reads the table again
 * once the transaction commits.
 */
Datum
jobq_pools_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("jobq_pools_trigger: not called by trigger manager")));
	jobq_pools_changed_at_commit();
	return PointerGetDatum(NULL);
}

/* ---- the pool manager ---- */

static int
interval_ms_or(HeapTuple tup, TupleDesc desc, int col, int dflt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? dflt : (int) Min(DatumGetInt64(d), INT_MAX);
}

/*
 * Read jobq.pools into rows[] (at most max); returns how many, or -1 if
 * jobq is not installed.
 */
static int
read_pools(JobqPoolConf *rows, int max)
{
	int			n = 0;
	Oid			owner;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "jobq: reading jobq.pools");

	owner = jobq_extension_owner();
	if (!OidIsValid(owner))
		n = -1;
	else
	{
		if (SPI_execute("SELECT name, queues, processes,"
						"  (pg_catalog.extract('epoch', max_sleep) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8,"
						"  (pg_catalog.extract('epoch', timeout) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8,"
						"  tries,"
						"  (pg_catalog.extract('epoch', backoff) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8,"
						"  max_jobs,"
						"  (pg_catalog.extract('epoch', max_time) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8,"
						"  max_memory OPERATOR(pg_catalog.*) 1024"
						" FROM jobq.pools ORDER BY name", true, 0) != SPI_OK_SELECT)
			elog(ERROR, "jobq: could not read jobq.pools");

		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			JobqPoolConf *c;
			bool		isnull;
			Datum		d;
			List	   *queues;

			if (n >= max)
			{
				if (!too_many_pools_logged)
					ereport(LOG,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("jobq: database \"%s\" has more than %d pools; the others are ignored",
									manager_args.dbname, max)));
				too_many_pools_logged = true;
				break;
			}
			c = &rows[n++];
			memset(c, 0, sizeof(JobqPoolConf));
			c->used = true;
			strlcpy(c->dbname, manager_args.dbname, NAMEDATALEN);
			strlcpy(c->name, TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull)),
					JOBQ_POOL_NAME_LEN);
			/* the queues, as a list the workers parse back */
			d = SPI_getbinval(tup, desc, 2, &isnull);
			queues = jobq_queue_array_list(DatumGetArrayTypeP(d), false);
			strlcpy(c->queues, jobq_queue_list_text(queues, true), JOBQ_QUEUES_TEXT_LEN);
			c->processes = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
			c->max_sleep_ms = interval_ms_or(tup, desc, 4, -1);
			c->timeout_ms = interval_ms_or(tup, desc, 5, -1);
			d = SPI_getbinval(tup, desc, 6, &isnull);
			c->tries = isnull ? -1 : DatumGetInt32(d);
			c->backoff_ms = interval_ms_or(tup, desc, 7, -1);
			d = SPI_getbinval(tup, desc, 8, &isnull);
			c->max_jobs = isnull ? 0 : DatumGetInt64(d);
			d = SPI_getbinval(tup, desc, 9, &isnull);
			c->max_time_ms = isnull ? 0 : DatumGetInt64(d);
			d = SPI_getbinval(tup, desc, 10, &isnull);
			c->max_memory_kb = isnull ? 0 : DatumGetInt64(d);
		}
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return n;
}

/*
 * Publish what read_pools() found.  A pool whose definition is unchanged
 * keeps its slot and version, so its workers carry on.
 */
static void
publish_pools(JobqPoolConf *rows, int n)
{
	bool		matched[JOBQ_MAX_POOLS];
	bool		changed = false;
	bool		first;
	int			published = 0;
	JobqDbState *d;

	memset(matched, 0, sizeof(matched));
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	d = jobq_db_state(manager_args.dbname);
	if (d == NULL)
	{
		LWLockRelease(jobq_shared->lock);
		return;
	}
	first = !d->loaded;

	for (int i = 0; i < JOBQ_MAX_POOLS; i++)
	{
		JobqPoolConf *p = &jobq_shared->pools[i];
		JobqPoolConf cmp;
		bool		keep = false;

		if (!p->used || strcmp(p->dbname, manager_args.dbname) != 0)
			continue;
		cmp = *p;
		cmp.version = 0;
		for (int k = 0; k < Max(n, 0); k++)
		{
			if (!matched[k] && memcmp(&cmp, &rows[k], sizeof(JobqPoolConf)) == 0)
			{
				matched[k] = true;
				keep = true;
				published++;
				break;
			}
		}
		if (!keep)
		{
			p->used = false;
			changed = true;
		}
	}
	for (int k = 0; k < Max(n, 0); k++)
	{
		if (matched[k])
			continue;
		for (int i = 0; i < JOBQ_MAX_POOLS; i++)
		{
			JobqPoolConf *p = &jobq_shared->pools[i];

			if (p->used)
				continue;
			*p = rows[k];
			p->version = ++jobq_shared->pool_versions;
			changed = true;
			published++;
			break;
		}
	}

	d->dboid = MyDatabaseId;
	d->loaded = true;
	d->installed = (n >= 0);
	d->npools = published;
	if (changed)
	{
		/* idle workers look at once whether they are still wanted */
		pg_atomic_fetch_add_u64(&jobq_shared->pools_changed, 1);
		jobq_wake_database_locked(MyDatabaseId);
	}
	if ((changed || first) && jobq_shared->launcher_latch)
		SetLatch(jobq_shared->launcher_latch);
	LWLockRelease(jobq_shared->lock);

	if (published < Max(n, 0))
		ereport(LOG,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("jobq: only %d of the %d pools of database \"%s\" can run",
						published, n, manager_args.dbname),
				 errdetail("All databases together can have at most %d pools.",
						   JOBQ_MAX_POOLS)));
}

static void
manager_exit(int code, Datum arg)
{
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < JOBQ_MAX_DATABASES; i++)
	{
		JobqDbState *d = &jobq_shared->dbs[i];

		if (d->used && d->manager_pid == MyProcPid)
		{
			d->manager_pid = 0;
			d->manager_latch = NULL;
		}
	}
	if (jobq_shared->launcher_latch)
		SetLatch(jobq_shared->launcher_latch);
	LWLockRelease(jobq_shared->lock);
}

void
jobq_pool_manager_main(Datum main_arg)
{
	JobqPoolConf *rows;
	JobqDbState *d;
	bool		reread_pools = true;
	TimestampTz last_read = 0;
	TimestampTz last_vacuum_check = 0;

	memcpy(&manager_args, MyBgworkerEntry->bgw_extra, sizeof(manager_args));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(manager_args.dbname, NULL, 0);
	pgstat_report_appname("jobq pool manager");

	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	d = jobq_db_state(manager_args.dbname);
	if (d != NULL && d->manager_pid != 0 && d->manager_pid != MyProcPid)
		d = NULL;				/* another manager is running already */
	else if (d != NULL)
	{
		d->dboid = MyDatabaseId;
		d->manager_pid = MyProcPid;
		d->manager_latch = MyLatch;
	}
	LWLockRelease(jobq_shared->lock);
	if (d == NULL)
		proc_exit(0);
	before_shmem_exit(manager_exit, (Datum) 0);

	rows = MemoryContextAlloc(TopMemoryContext,
							  sizeof(JobqPoolConf) * JOBQ_MAX_POOLS);
	for (;;)
	{
		int			n;
		long		sleep_ms = JOBQ_POOL_REREAD_MS;
		TimestampTz now = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (reread_pools ||
			TimestampDifferenceExceeds(last_read, now, JOBQ_POOL_REREAD_MS))
		{
			n = read_pools(rows, JOBQ_MAX_POOLS);
			publish_pools(rows, n);
			last_read = now;
		}
		reread_pools = false;
		/* and keep jobq.jobs small under churn (vacuum.c) */
		sleep_ms = Min(sleep_ms, jobq_maybe_vacuum_jobs(&last_vacuum_check));

		if (WaitLatch(MyLatch,
					  WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					  sleep_ms, PG_WAIT_EXTENSION) & WL_LATCH_SET)
			reread_pools = true;
		ResetLatch(MyLatch);
	}
}
