/*-------------------------------------------------------------------------
 *
 * status.c
 *		jobq.restart() and what the monitoring views read from shared
 *		memory: the registry of job runners (jobq.workers) and per-queue
 *		counters of finished attempts (jobq.queues).
 *
 * jobq.restart() bumps the generation in jobq.restart_state (which
 * processes without shared memory, and clients outside the server, can
 * compare) and, once its transaction commits, flags every job runner of
 * the database in the registry and sets its latch (shmem.c).  A flagged
 * runner finishes the job it is running, hands the rest of its batch back
 * and leaves; the launcher starts its replacement at once.  No job is
 * interrupted, so none is lost or run twice, and the replacement resolves
 * every handler afresh.
 *
 * The counters: JOBQ_STAT_QUEUES entries of (database, queue), each a ring
 * of JOBQ_STAT_SECONDS one-second buckets; a bucket is reused when its
 * second has passed.  When every entry is taken, the one used least
 * recently is given to the new queue.  Memory is therefore fixed, and the
 * counts are exact for the last minute of any queue that is still in the
 * table.  They live in shared memory only: a server restart resets them.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/status.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_restart);
PG_FUNCTION_INFO_V1(jobq_worker_status);
PG_FUNCTION_INFO_V1(jobq_queue_stats);
PG_FUNCTION_INFO_V1(jobq_stats_available);

/* index of the counters this process updated last */
static int	last_stat = -1;

/*
 * jobq.restart() RETURNS int8: the new generation.
 */
Datum
jobq_restart(PG_FUNCTION_ARGS)
{
	Oid			owner;
	Oid			save_userid;
	int			save_sec;
	int64		generation;
	bool		isnull;

	owner = jobq_extension_owner();
	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"jobq\" is not installed in this database")));

	/* the caller was allowed to execute this: write as the owner */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	SPI_connect();
	if (SPI_execute("UPDATE jobq.restart_state"
					"   SET generation = generation OPERATOR(pg_catalog.+) 1,"
					"       requested_at = pg_catalog.now()"
					" RETURNING generation", false, 0) != SPI_OK_UPDATE_RETURNING ||
		SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("jobq.restart_state must hold exactly one row")));
	generation = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);

	jobq_restart_at_commit();
	/* wakes the jobq CLI's workers, which LISTEN on the channel jobq */
	Async_Notify("jobq", "{\"event\": \"restart\"}");
	PG_RETURN_INT64(generation);
}

/*
 * The generation in jobq.restart_state, read by a runner that has no
 * shared memory to be told through.  Caller is in a runner transaction
 * (SPI connected, snapshot pushed, running as the extension owner).
 */
int64
jobq_restart_generation_read(void)
{
	bool		isnull;
	int64		generation = 0;

	if (SPI_execute("SELECT generation FROM jobq.restart_state", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		generation = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
	return generation;
}

/*
 * Count one finished attempt of a queue.  Caller holds the registry lock
 * exclusively.
 */
void
jobq_stats_count(Oid dboid, const char *queue, bool done)
{
	JobqQueueStat *st = NULL;
	JobqQueueStat *victim = NULL;
	TimestampTz now = GetCurrentTimestamp();
	int64		second = now / USECS_PER_SEC;
	int			b;

	if (queue == NULL)
		return;
	/* most jobs of a process are of the queue its last job was of */
	if (last_stat >= 0 && jobq_shared->stats[last_stat].dboid == dboid &&
		strcmp(jobq_shared->stats[last_stat].queue, queue) == 0)
		st = &jobq_shared->stats[last_stat];
	for (int i = 0; i < JOBQ_STAT_QUEUES && st == NULL; i++)
	{
		JobqQueueStat *s = &jobq_shared->stats[i];

		if (s->dboid == dboid && strcmp(s->queue, queue) == 0)
		{
			st = s;
			break;
		}
		if (victim == NULL || s->dboid == InvalidOid ||
			(victim->dboid != InvalidOid && s->last_used < victim->last_used))
			victim = s;
	}
	if (st == NULL)
	{
		st = victim;
		memset(st, 0, sizeof(JobqQueueStat));
		st->dboid = dboid;
		strlcpy(st->queue, queue, sizeof(st->queue));
	}
	last_stat = st - jobq_shared->stats;
	st->last_used = now;
	b = (int) (second % JOBQ_STAT_SECONDS);
	if (st->second[b] != second)
	{
		st->second[b] = second;
		st->done[b] = 0;
		st->failed[b] = 0;
	}
	if (done)
		st->done[b]++;
	else
		st->failed[b]++;
}

/*
 * jobq.stats_available(): are the counters of jobq.queues kept (the
 * library is preloaded)?
 */
Datum
jobq_stats_available(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(jobq_shmem_available());
}

/*
 * jobq.queue_stats(): per queue of this database, the attempts that
 * succeeded and failed in the last 60 seconds.
 */
Datum
jobq_queue_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		now_second = GetCurrentTimestamp() / USECS_PER_SEC;

	InitMaterializedSRF(fcinfo, 0);
	if (!jobq_shmem_available())
		return (Datum) 0;

	LWLockAcquire(jobq_shared->lock, LW_SHARED);
	for (int i = 0; i < JOBQ_STAT_QUEUES; i++)
	{
		JobqQueueStat *s = &jobq_shared->stats[i];
		int64		done = 0;
		int64		failed = 0;
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		if (s->dboid != MyDatabaseId)
			continue;
		for (int b = 0; b < JOBQ_STAT_SECONDS; b++)
		{
			/* the current second and the 59 before it */
			if (s->second[b] > now_second - JOBQ_STAT_SECONDS &&
				s->second[b] <= now_second)
			{
				done += s->done[b];
				failed += s->failed[b];
			}
		}
		values[0] = CStringGetTextDatum(s->queue);
		values[1] = Int64GetDatum(done);
		values[2] = Int64GetDatum(failed);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(jobq_shared->lock);
	return (Datum) 0;
}

/*
 * jobq.worker_status(): the registry, one row per process that runs jobs
 * (background workers and sessions in CALL jobq.work()), every database.
 */
Datum
jobq_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JobqSlot   *copy;
	int			n = 0;

	InitMaterializedSRF(fcinfo, 0);
	if (!jobq_shmem_available())
		return (Datum) 0;

	/* copy under the lock, look names up after */
	copy = palloc(sizeof(JobqSlot) * jobq_shared->nslots);
	LWLockAcquire(jobq_shared->lock, LW_SHARED);
	for (int i = 0; i < jobq_shared->nslots; i++)
		if (jobq_shared->slots[i].state != JOBQ_SLOT_FREE)
			copy[n++] = jobq_shared->slots[i];
	LWLockRelease(jobq_shared->lock);

	for (int i = 0; i < n; i++)
	{
		JobqSlot   *s = &copy[i];
		Datum		values[11];
		bool		nulls[11];
		char	   *dbname;

		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(s->pid);
		dbname = s->dbname[0] ? s->dbname : get_database_name(s->dboid);
		if (dbname)
			values[1] = CStringGetTextDatum(dbname);
		else
			nulls[1] = true;
		if (s->in_session)
			nulls[2] = true;
		else
			values[2] = CStringGetTextDatum(s->pool_idx == JOBQ_POOL_DEFAULT ?
											"default" : s->pool);
		values[3] = CStringGetTextDatum(s->queues);
		values[4] = CStringGetTextDatum(s->in_session ? "session" : "background");
		values[5] = CStringGetTextDatum(s->state == JOBQ_SLOT_BUSY ? "busy" : "idle");
		if (s->current_job != 0)
		{
			values[6] = Int64GetDatum(s->current_job);
			values[7] = TimestampTzGetDatum(s->job_started);
		}
		else
			nulls[6] = nulls[7] = true;
		values[8] = Int64GetDatum(s->jobs_done);
		values[9] = Int64GetDatum(s->jobs_failed);
		values[10] = TimestampTzGetDatum(s->started_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
