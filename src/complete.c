/*-------------------------------------------------------------------------
 *
 * complete.c
 *		The outcomes of an attempt, written in the transaction that ran it:
 *		completed jobs are deleted (and a chain link's successor dispatched,
 *		chain.c), failed attempts are retried after their backoff, jobs
 *		that middleware blocked are released, and jobs whose tries are used
 *		up move to the failed store (stopping their chain).
 *
 * Each function runs one prepared statement on the caller's SPI
 * connection.  The caller holds the rows' locks and runs as the extension
 * owner.  Moving a job to the failed store is a single statement that
 * deletes the job and inserts its failed record, so a job is always in
 * exactly one of the two tables.
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

#include "jobq.h"

static SPIPlanPtr complete_plan = NULL;
static SPIPlanPtr retry_plan = NULL;
static SPIPlanPtr fail_plan = NULL;
static SPIPlanPtr release_plan = NULL;

/* the error, as jsonb, built from parameters $n .. $n+4 */
#define ERROR_JSONB(a, b, c, d, e) \
	"pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(" \
	"'sqlstate', $" #a "::pg_catalog.text, 'message', $" #b "::pg_catalog.text," \
	" 'detail', $" #c "::pg_catalog.text, 'hint', $" #d "::pg_catalog.text," \
	" 'context', $" #e "::pg_catalog.text))"

static SPIPlanPtr
prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "jobq: SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * Prepare a statement and keep it for the life of the process (for the
 * other files that need kept plans).
 */
SPIPlanPtr
jobq_prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	return prepare_kept(sql, nargs, argtypes);
}

void
jobq_complete_reset_plans(void)
{
	SPIPlanPtr *plans[] = {&complete_plan, &retry_plan, &fail_plan,
	&release_plan};

	for (int i = 0; i < lengthof(plans); i++)
	{
		if (*plans[i])
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
}

/* Fill values/nulls[at .. at+4] from an error. */
static void
error_params(const JobqError *err, Datum *values, char *nulls, int at)
{
	const char *parts[5] = {err->sqlstate, err->message, err->detail,
	err->hint, err->context};

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
	Datum	   *elems;
	Datum		values[2];
	int			nlinks = 0;
	Oid		   *link_owner;
	int64	   *link_chain_id;
	Jsonb	  **link_chain;

	if (n == 0)
		return;
	if (complete_plan == NULL)
	{
		Oid			types[2] = {INT8ARRAYOID, INT8OID};

		complete_plan = prepare_kept(
									 "WITH d AS (DELETE FROM jobq.jobs"
									 "   WHERE id OPERATOR(pg_catalog.=) ANY ($1)"
									 "     AND reserved_by OPERATOR(pg_catalog.=) $2"
									 "   RETURNING owner, chain_id, chain)"
									 " SELECT owner::pg_catalog.oid, chain_id, chain FROM d",
									 2, types);
	}

	elems = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	values[0] = PointerGetDatum(construct_array(elems, n, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = Int64GetDatum(token);
	if (SPI_execute_plan(complete_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not delete completed jobs");
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
		Datum		chain = SPI_getbinval(tup, desc, 3, &isnull);

		if (isnull)
			continue;
		link_chain[nlinks] = DatumGetJsonbPCopy(chain);
		link_owner[nlinks] = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		link_chain_id[nlinks] = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
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
 * Put a job back in its queue after delay_ms without a failure: used when
 * middleware blocks it.  With refund, the attempt the reservation counted
 * is taken back.
 */
void
jobq_release_job(int64 id, int64 delay_ms, bool refund)
{
	Datum		values[3];

	if (release_plan == NULL)
	{
		Oid			types[3] = {INT8OID, INT8OID, BOOLOID};

		release_plan = prepare_kept(
									"UPDATE jobq.jobs"
									"   SET reserved_by = NULL, reserved_at = NULL,"
									"       attempts = attempts OPERATOR(pg_catalog.-)"
									"         CASE WHEN $3 THEN 1 ELSE 0 END,"
									"       available_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
									"         pg_catalog.make_interval(secs => $2 OPERATOR(pg_catalog./) 1000.0)"
									" WHERE id OPERATOR(pg_catalog.=) $1",
									3, types);
	}
	values[0] = Int64GetDatum(id);
	values[1] = Int64GetDatum(Max(delay_ms, 0));
	values[2] = BoolGetDatum(refund);
	if (SPI_execute_plan(release_plan, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "jobq: could not release job %lld", (long long) id);
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
			jobq_release_job(job->id, d->delay_ms, d->refund);
			break;
		case JOBQ_MW_FAIL:
			memset(&err, 0, sizeof(err));
			strlcpy(err.sqlstate, "JQ004", sizeof(err.sqlstate));
			err.message = d->message;
			jobq_fail_job(job->id, &err);
			break;
		case JOBQ_MW_DELETE:
			jobq_complete_jobs(token, &job->id, 1);
			break;
	}
}

/*
 * Make a job available again after backoff_ms, keeping its attempts, and
 * remember the error that made it fail.
 */
void
jobq_retry_job(int64 id, int64 backoff_ms, const JobqError *err)
{
	Datum		values[7];
	char		nulls[7] = "       ";

	if (retry_plan == NULL)
	{
		Oid			types[7] = {INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID};

		retry_plan = prepare_kept(
								  "UPDATE jobq.jobs"
								  "   SET reserved_by = NULL, reserved_at = NULL,"
								  "       available_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
								  "         pg_catalog.make_interval(secs => $2 OPERATOR(pg_catalog./) 1000.0),"
								  "       last_error = " ERROR_JSONB(3, 4, 5, 6, 7)
								  " WHERE id OPERATOR(pg_catalog.=) $1",
								  7, types);
	}
	values[0] = Int64GetDatum(id);
	values[1] = Int64GetDatum(Max(backoff_ms, 0));
	error_params(err, values, nulls, 2);
	if (SPI_execute_plan(retry_plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "jobq: could not release job %lld for a retry", (long long) id);
}

/*
 * Move a job to the failed store: delete it and insert its failed record in
 * one statement.  A chain link's record keeps the links that did not run,
 * and the chain's failure handler runs (chain.c).
 */
void
jobq_fail_job(int64 id, const JobqError *err)
{
	Datum		values[6];
	char		nulls[6] = "      ";

	if (fail_plan == NULL)
	{
		Oid			types[6] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID};

		fail_plan = prepare_kept(
								 "WITH j AS (DELETE FROM jobq.jobs"
								 "            WHERE id OPERATOR(pg_catalog.=) $1 RETURNING *)"
								 " INSERT INTO jobq.failed"
								 "   (job_id, queue, job, payload, owner, attempts, tries, timeout,"
								 "    backoff, dispatched_at, failed_at, exception, sqlstate, error,"
								 "    chain_id, chain)"
								 " SELECT j.id, j.queue, j.job, j.payload, j.owner, j.attempts,"
								 "   j.tries, j.timeout, j.backoff, j.created_at, pg_catalog.clock_timestamp(), $3, $2,"
								 "   " ERROR_JSONB(2, 3, 4, 5, 6) ","
								 "   j.chain_id, j.chain"
								 " FROM j"
								 " RETURNING id, owner::pg_catalog.oid, chain_id, chain, payload, error",
								 6, types);
	}
	values[0] = Int64GetDatum(id);
	error_params(err, values, nulls, 1);
	/* the failed store always has a message and a SQLSTATE */
	if (nulls[2] == 'n')
	{
		values[2] = CStringGetTextDatum("job failed");
		nulls[2] = ' ';
	}
	if (SPI_execute_plan(fail_plan, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "jobq: could not move job %lld to the failed store", (long long) id);
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		chain = SPI_getbinval(tup, desc, 4, &isnull);

		if (!isnull)
			jobq_chain_failed(DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)),
							  DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull)),
							  DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull)),
							  DatumGetJsonbPCopy(chain),
							  DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 5, &isnull)),
							  DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 6, &isnull)));
	}
}
