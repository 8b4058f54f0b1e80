/*-------------------------------------------------------------------------
 *
 * complete.c
 *		The outcomes of an attempt, written in the transaction that ran it:
 *		completed jobs are deleted (and a chain link's successor dispatched,
 *		chain.c), failed attempts are retried after their backoff, released
 *		jobs (by the handler or its middleware) are put back in place, jobs
 *		whose data is missing are deleted quietly, and jobs that may not be
 *		attempted again (lifecycle.c decides) move to the failed store, after
 *		their failure handler ran (stopping their chain).
 *
 * Each function runs one prepared statement on the caller's SPI
 * connection.  The caller holds the rows' locks and runs as the extension
 * owner.  Moving a job to the failed store is a single statement that
 * deletes the job and inserts its failed record, so a job is always in
 * exactly one of the two tables; the failure handler runs just before it,
 * in the same transaction, so it runs exactly once for each failed record
 * that commits (a crash in between rolls both back, and the recovery of
 * the job runs it again).
 *
 * Every outcome is announced as a job event (events.c): the statements
 * return the id, queue, job and attempt of the rows they change, and the
 * NOTIFY is queued in the same transaction, so it is delivered only if the
 * outcome commits.  A new outcome belongs here, with its event.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/complete.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "jobq.h"

static SPIPlanPtr complete_plan = NULL;
static SPIPlanPtr complete_events_plan = NULL;	/* ... returning the rows */
static SPIPlanPtr complete_leased_plan = NULL;
static SPIPlanPtr retry_plan = NULL;
static SPIPlanPtr fail_plan = NULL;
static SPIPlanPtr release_plan = NULL;
static SPIPlanPtr discard_plan = NULL;
static SPIPlanPtr mw_release_plan = NULL;

static void complete_jobs(int64 token, const int64 *ids, int n,
						  JobqEvent event);

/* the error, as jsonb, built from parameters $n .. $n+4 */
#define ERROR_JSONB(a, b, c, d, e) \
	"pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(" \
	"'sqlstate', $" #a "::pg_catalog.text, 'message', $" #b "::pg_catalog.text," \
	" 'detail', $" #c "::pg_catalog.text, 'hint', $" #d "::pg_catalog.text," \
	" 'context', $" #e "::pg_catalog.text))"

/*
 * Prepare a statement and keep it for the life of the process (shared by
 * the files that run jobq's own statements).
 */
SPIPlanPtr
jobq_prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "jobq: SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * jobq_prepare_kept(), for a statement of the hot path whose generic plan
 * is as good as any custom one (a primary-key probe, a scan of the ready
 * index): planned once per process, not at every call.  Left to choose, the
 * plan cache keeps planning statements such as "id = ANY ($1)" at every
 * call when the arrays are short, because a custom plan then looks a
 * little cheaper.  Run them with jobq_execute_indexed().
 */
SPIPlanPtr
jobq_prepare_kept_generic(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes,
										  CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "jobq: SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * SPI_execute_plan() of a statement prepared by jobq_prepare_kept_generic,
 * planned (if it needs planning now) without sequential or bitmap scans.
 * A generic plan is kept until the table's statistics change, and one made
 * while jobq.jobs was nearly empty (a fresh install, a quiet night) would
 * otherwise scan the whole table at every call once a burst of jobs
 * arrives, until the next VACUUM or ANALYZE.  The settings apply to this
 * statement only; handlers never see them.
 */
int
jobq_execute_indexed(SPIPlanPtr plan, Datum *values, const char *nulls,
					 bool read_only, long count)
{
	int			nestlevel = NewGUCNestLevel();
	int			rc;

	(void) set_config_option("enable_seqscan", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(plan, values, nulls, read_only, count);
	AtEOXact_GUC(true, nestlevel);
	return rc;
}

/* Fill values/nulls[at .. at+4] from an error (all null without one). */
static void
error_params(const JobqError *err, Datum *values, char *nulls, int at)
{
	static const JobqError none;
	const char *parts[5];

	if (err == NULL)
		err = &none;
	parts[0] = err->sqlstate;
	parts[1] = err->message;
	parts[2] = err->detail;
	parts[3] = err->hint;
	parts[4] = err->context;

	for (int i = 0; i < 5; i++)
	{
		if (parts[i] && parts[i][0] != '\0')
		{
			values[at + i] = CStringGetTextDatum(parts[i]);
			nulls[at + i] = ' ';
		}
		else
		{
			values[at + i] = (Datum) 0;
			nulls[at + i] = 'n';
		}
	}
}

/*
 * Delete the jobs whose handlers succeeded, in one statement, then dispatch
 * the next link of those that were chain links: in the same transaction,
 * so a link's successor exists if and only if the link completed.
 */
void
jobq_complete_jobs(int64 token, const int64 *ids, int n)
{
	complete_jobs(token, ids, n, JOBQ_EVENT_PROCESSED);
}

/*
 * jobq_complete_jobs(), announcing the jobs as event (a job deleted by its
 * middleware is "deleted", not "processed").
 */
static void
complete_jobs(int64 token, const int64 *ids, int n, JobqEvent event)
{
	Datum	   *elems;
	Datum		values[2];
	bool		events;
	int			nlinks = 0;
	Oid		   *link_owner;
	int64	   *link_chain_id;
	Jsonb	  **link_chain;

	if (n == 0)
		return;
	if (complete_plan == NULL)
	{
		Oid			types[2] = {INT8ARRAYOID, INT8OID};

		/*
		 * Columns 1-4 (id, queue, job, attempts) are for events.c, and
		 * returned only when processed events are sent; 5-7 for chains.
		 */
#define COMPLETE_SQL(cols) \
		"WITH d AS (DELETE FROM jobq.jobs" \
		"   WHERE id OPERATOR(pg_catalog.=) ANY ($1)" \
		"     AND reserved_by OPERATOR(pg_catalog.=) $2" \
		"   RETURNING " cols ")" \
		" SELECT * FROM d"
		complete_plan = jobq_prepare_kept_generic(COMPLETE_SQL("NULL::pg_catalog.int8, NULL::pg_catalog.text,"
												  " NULL::pg_catalog.text, NULL::pg_catalog.int4,"
												  " owner::pg_catalog.oid, chain_id, chain"),
									 2, types);
		complete_events_plan = jobq_prepare_kept_generic(COMPLETE_SQL("id, queue, job, attempts,"
														 " owner::pg_catalog.oid, chain_id, chain"),
											2, types);
	}
	/* the success path returns the rows only when they are announced */
	events = jobq_event_wanted(event);

	elems = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	values[0] = PointerGetDatum(construct_array(elems, n, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = Int64GetDatum(token);
	if (jobq_execute_indexed(events ? complete_events_plan : complete_plan,
						 values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not delete completed jobs");
	if (events)
		jobq_events_from_spi(event, NULL);
	if (SPI_processed != (uint64) n)
		elog(WARNING, "jobq: %d jobs completed but " UINT64_FORMAT " deleted",
			 n, SPI_processed);

	/* collect the chain links before dispatching reuses SPI_tuptable */
	link_owner = palloc(sizeof(Oid) * (SPI_processed + 1));
	link_chain_id = palloc(sizeof(int64) * (SPI_processed + 1));
	link_chain = palloc(sizeof(Jsonb *) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		chain = SPI_getbinval(tup, desc, 7, &isnull);

		if (isnull)
			continue;
		link_chain[nlinks] = DatumGetJsonbPCopy(chain);
		link_owner[nlinks] = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
		link_chain_id[nlinks] = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
		nlinks++;
	}
	SPI_freetuptable(SPI_tuptable);
	for (int i = 0; i < nlinks; i++)
		jobq_chain_advance(link_owner[i], link_chain_id[i], link_chain[i]);

	pfree(link_owner);
	pfree(link_chain_id);
	pfree(link_chain);
	pfree(elems);
}

/*
 * Delete an external job whose consumer reported success, if lease_token
 * is still its lease (consumer.c has locked the row and checked it).
 * Returns false if the job was not deleted.
 */
bool
jobq_complete_leased(int64 id, int64 lease_token)
{
	Datum		values[2];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		chain;

	if (complete_leased_plan == NULL)
	{
		Oid			types[2] = {INT8OID, INT8OID};

		complete_leased_plan = jobq_prepare_kept(
											"DELETE FROM jobq.jobs"
											" WHERE id OPERATOR(pg_catalog.=) $1"
											"   AND lease_token OPERATOR(pg_catalog.=) $2"
											" RETURNING id, queue, job, attempts,"
											"   owner::pg_catalog.oid, chain_id, chain",
											2, types);
	}
	values[0] = Int64GetDatum(id);
	values[1] = Int64GetDatum(lease_token);
	if (SPI_execute_plan(complete_leased_plan, values, NULL, false, 0) != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "jobq: could not delete completed job %lld", (long long) id);
	jobq_events_from_spi(JOBQ_EVENT_PROCESSED, NULL);
	if (SPI_processed != 1)
		return false;

	/* a chain link (its name registered as external): the chain goes on */
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	chain = SPI_getbinval(tup, desc, 7, &isnull);
	if (!isnull)
		jobq_chain_advance(DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull)),
						   DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull)),
						   DatumGetJsonbPCopy(chain));
	return true;
}

/*
 * A job was released (by its handler, " by its middleware"...) but the
 * retry rule allows no further attempt: fail it for good with JQ002.
 */
static void
fail_released(JobqJob *job, const char *by, char *detail)
{
	JobqError	err;

	memset(&err, 0, sizeof(err));
	strlcpy(err.sqlstate, "JQ002", sizeof(err.sqlstate));
	if (job->retry_until != 0)
		err.message = psprintf("job %lld was released%s past its retry_until",
							   (long long) job->id, by);
	else
		err.message = psprintf("job %lld was released%s on its last attempt (%d of %d)",
							   (long long) job->id, by, job->attempts, job->tries);
	err.detail = detail;
	jobq_fail_job(job, &err);
}

/*
 * Put a job back in its queue after delay_ms without a failure: used when
 * middleware blocks it.  With refund, the attempt the reservation counted
 * is taken back.
 */
static void
middleware_release(int64 id, int64 delay_ms, bool refund)
{
	Datum		values[3];

	if (mw_release_plan == NULL)
	{
		Oid			types[3] = {INT8OID, INT8OID, BOOLOID};

		mw_release_plan = jobq_prepare_kept(
									"UPDATE jobq.jobs"
									"   SET reserved_by = NULL, reserved_at = NULL,"
									"       attempts = attempts OPERATOR(pg_catalog.-)"
									"         CASE WHEN $3 THEN 1 ELSE 0 END,"
									"       available_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
									"         pg_catalog.make_interval(secs => $2 OPERATOR(pg_catalog./) 1000.0)"
									" WHERE id OPERATOR(pg_catalog.=) $1"
									" RETURNING id, queue, job, attempts",
									3, types);
	}
	values[0] = Int64GetDatum(id);
	values[1] = Int64GetDatum(Max(delay_ms, 0));
	values[2] = BoolGetDatum(refund);
	if (SPI_execute_plan(mw_release_plan, values, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "jobq: could not release job %lld", (long long) id);
	jobq_events_from_spi(JOBQ_EVENT_RELEASED, NULL);
}

/*
 * The outcome of an attempt that its middleware stopped before the handler
 * ran (middleware.c): released, failed for good, or deleted quietly (which,
 * like a completion, lets a chain go on).
 */
void
jobq_complete_stopped(int64 token, JobqJob *job)
{
	JobqMiddlewareDecision *d = &job->decision;
	JobqError	err;

	switch (d->action)
	{
		case JOBQ_MW_RUN:
			elog(ERROR, "jobq: job %lld was not stopped", (long long) job->id);
			break;
		case JOBQ_MW_RELEASE:
			{
				/* the retry rule, as for jobq.release(), after any refund */
				JobqJob		after = *job;

				if (d->refund)
					after.attempts--;
				if (jobq_may_try_again(&after, d->delay_ms, false))
				{
					middleware_release(job->id, d->delay_ms, d->refund);
					break;
				}
				fail_released(job, " by its middleware",
							  "Its middleware released it, but it may not be attempted again.");
			}
			break;
		case JOBQ_MW_FAIL:
			memset(&err, 0, sizeof(err));
			strlcpy(err.sqlstate, "JQ005", sizeof(err.sqlstate));
			err.message = d->message;
			jobq_fail_job(job, &err);
			break;
		case JOBQ_MW_DELETE:
			complete_jobs(token, &job->id, 1, JOBQ_EVENT_DELETED);
			break;
	}
}

/*
 * Make a job available again after backoff_ms, keeping its attempts,
 * counting the failed attempt and remembering the error that made it fail.
 */
static void
retry_job(int64 id, int64 backoff_ms, const JobqError *err)
{
	Datum		values[7];
	char		nulls[7] = "       ";

	if (retry_plan == NULL)
	{
		Oid			types[7] = {INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID};

		retry_plan = jobq_prepare_kept(
								  "UPDATE jobq.jobs"
								  "   SET reserved_by = NULL, reserved_at = NULL, lease_token = NULL,"
								  "       available_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
								  "         pg_catalog.make_interval(secs => $2 OPERATOR(pg_catalog./) 1000.0),"
								  "       last_error = " ERROR_JSONB(3, 4, 5, 6, 7) ","
								  "       exceptions = pg_catalog.int4smaller(exceptions, 2147483646)"
								  "         OPERATOR(pg_catalog.+) 1"
								  " WHERE id OPERATOR(pg_catalog.=) $1"
								  " RETURNING id, queue, job, attempts",
								  7, types);
	}
	values[0] = Int64GetDatum(id);
	values[1] = Int64GetDatum(Max(backoff_ms, 0));
	error_params(err, values, nulls, 2);
	if (SPI_execute_plan(retry_plan, values, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "jobq: could not release job %lld for a retry", (long long) id);
	jobq_events_from_spi(JOBQ_EVENT_EXCEPTION, err);
}

/*
 * An attempt failed (error, timeout, worker lost): retry after the backoff
 * if the retry rule allows it, else fail the job for good.
 */
void
jobq_attempt_failed(JobqJob *job, const JobqError *err)
{
	int64		delay_ms = jobq_backoff_for(job);

	if (jobq_may_try_again(job, delay_ms, true))
	{
		retry_job(job->id, delay_ms, err);
		/* due later: the sleeping workers learn when (shmem.c) */
		if (delay_ms > 0)
			jobq_wake_delayed_at_commit(job->queue);
	}
	else
		jobq_fail_job(job, err);
}

/*
 * The handler called jobq.release(delay) and returned: put the job back in
 * place (same row and id, attempts kept, its effects committed with this),
 * available after the delay; or, if the retry rule allows no further
 * attempt, fail it.  Returns false if it failed the job.
 */
bool
jobq_release_job(JobqJob *job, int64 delay_ms)
{
	Datum		values[2];

	if (!jobq_may_try_again(job, delay_ms, false))
	{
		fail_released(job, "",
					  "The job called jobq.release() but may not be attempted again.");
		return false;
	}
	if (release_plan == NULL)
	{
		Oid			types[2] = {INT8OID, INT8OID};

		release_plan = jobq_prepare_kept(
									"UPDATE jobq.jobs"
									"   SET reserved_by = NULL, reserved_at = NULL, lease_token = NULL,"
									"       available_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
									"         pg_catalog.make_interval(secs => $2 OPERATOR(pg_catalog./) 1000.0)"
									" WHERE id OPERATOR(pg_catalog.=) $1"
									" RETURNING id, queue, job, attempts",
									2, types);
	}
	values[0] = Int64GetDatum(job->id);
	values[1] = Int64GetDatum(Max(delay_ms, 0));
	if (SPI_execute_plan(release_plan, values, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "jobq: could not release job %lld", (long long) job->id);
	jobq_events_from_spi(JOBQ_EVENT_RELEASED, NULL);
	if (delay_ms > 0)
		jobq_wake_delayed_at_commit(job->queue);
	return true;
}

/*
 * The job's data is missing (P0002) and it was registered with
 * delete_when_missing_models: delete it quietly, with no failed record and
 * no failure handler.
 */
void
jobq_discard_job(JobqJob *job)
{
	Datum		values[1];

	if (discard_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		discard_plan = jobq_prepare_kept("DELETE FROM jobq.jobs WHERE id OPERATOR(pg_catalog.=) $1"
									" RETURNING id, queue, job, attempts",
									1, types);
	}
	values[0] = Int64GetDatum(job->id);
	if (SPI_execute_plan(discard_plan, values, NULL, false, 0) != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "jobq: could not delete job %lld", (long long) job->id);
	jobq_events_from_spi(JOBQ_EVENT_DELETED, NULL);
}

/*
 * Fail a job for good: run its failure handler (if it has one), then delete
 * the job and insert its failed record in one statement, keeping the
 * failure handler's own error, if it raised one, beside the job's.
 */
void
jobq_fail_job(JobqJob *job, const JobqError *err)
{
	Datum		values[11];
	char		nulls[11];
	JobqError	fh_err;

	memset(nulls, ' ', sizeof(nulls));
	memset(&fh_err, 0, sizeof(fh_err));
	if (job->on_failure != NULL &&
		!jobq_run_failure_handler(job, err, &fh_err))
		error_params(&fh_err, values, nulls, 6);
	else
		for (int i = 6; i < 11; i++)
			nulls[i] = 'n';

	if (fail_plan == NULL)
	{
		Oid			types[11] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};

		fail_plan = jobq_prepare_kept(
								 "WITH j AS (DELETE FROM jobq.jobs"
								 "            WHERE id OPERATOR(pg_catalog.=) $1 RETURNING *)"
								 " INSERT INTO jobq.failed"
								 "   (job_id, queue, job, payload, owner, attempts, tries, timeout,"
								 "    backoff, dispatched_at, failed_at, exception, sqlstate, error,"
								 "    exceptions, retry_until, on_failure, on_failure_error,"
								 "    max_exceptions, backoff_schedule, backoff_exponential,"
								 "    delete_when_missing_models, chain_id, chain)"
								 " SELECT j.id, j.queue, j.job, j.payload, j.owner, j.attempts,"
								 "   j.tries, j.timeout, j.backoff, j.created_at, pg_catalog.clock_timestamp(), $3, $2,"
								 "   " ERROR_JSONB(2, 3, 4, 5, 6) ","
								 "   j.exceptions, j.retry_until, j.on_failure,"
								 "   CASE WHEN $7 IS NOT NULL THEN " ERROR_JSONB(7, 8, 9, 10, 11) " END,"
								 "   j.max_exceptions, j.backoff_schedule, j.backoff_exponential,"
								 "   j.delete_when_missing_models, j.chain_id, j.chain"
								 " FROM j"
								 " RETURNING job_id, queue, job, attempts,"
								 "   id, owner::pg_catalog.oid, chain_id, chain, payload, error",
								 11, types);
	}
	values[0] = Int64GetDatum(job->id);
	error_params(err, values, nulls, 1);
	/* the failed store always has a message and a SQLSTATE */
	if (nulls[2] == 'n')
	{
		values[2] = CStringGetTextDatum("job failed");
		nulls[2] = ' ';
	}
	if (SPI_execute_plan(fail_plan, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "jobq: could not move job %lld to the failed store",
			 (long long) job->id);
	jobq_events_from_spi(JOBQ_EVENT_FAILED, err);
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		chain = SPI_getbinval(tup, desc, 8, &isnull);

		if (!isnull)
			jobq_chain_failed(DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull)),
							  DatumGetObjectId(SPI_getbinval(tup, desc, 6, &isnull)),
							  DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull)),
							  DatumGetJsonbPCopy(chain),
							  DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 9, &isnull)),
							  DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 10, &isnull)));
	}
}
