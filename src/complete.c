/*-------------------------------------------------------------------------
 *
 * complete.c
 *		The outcomes of an attempt, written in the transaction that ran it:
 *		completed jobs are deleted, failed attempts are retried after their
 *		backoff, and jobs whose tries are used up move to the failed store.
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
static SPIPlanPtr complete_leased_plan = NULL;
static SPIPlanPtr retry_plan = NULL;
static SPIPlanPtr fail_plan = NULL;

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

void
jobq_complete_reset_plans(void)
{
	SPIPlanPtr *plans[] = {&complete_plan, &complete_leased_plan, &retry_plan,
	&fail_plan};

	for (int i = 0; i < lengthof(plans); i++)
	{
		if (*plans[i])
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
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
 * Delete the jobs whose handlers succeeded, in one statement.
 */
void
jobq_complete_jobs(int64 token, const int64 *ids, int n)
{
	Datum	   *elems;
	Datum		values[2];

	if (n == 0)
		return;
	if (complete_plan == NULL)
	{
		Oid			types[2] = {INT8ARRAYOID, INT8OID};

		complete_plan = prepare_kept(
									 "DELETE FROM jobq.jobs"
									 " WHERE id OPERATOR(pg_catalog.=) ANY ($1)"
									 "   AND reserved_by OPERATOR(pg_catalog.=) $2",
									 2, types);
	}

	elems = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	values[0] = PointerGetDatum(construct_array(elems, n, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = Int64GetDatum(token);
	if (SPI_execute_plan(complete_plan, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "jobq: could not delete completed jobs");
	if (SPI_processed != (uint64) n)
		elog(WARNING, "jobq: %d jobs completed but " UINT64_FORMAT " deleted",
			 n, SPI_processed);
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

	if (complete_leased_plan == NULL)
	{
		Oid			types[2] = {INT8OID, INT8OID};

		complete_leased_plan = prepare_kept(
											"DELETE FROM jobq.jobs"
											" WHERE id OPERATOR(pg_catalog.=) $1"
											"   AND lease_token OPERATOR(pg_catalog.=) $2",
											2, types);
	}
	values[0] = Int64GetDatum(id);
	values[1] = Int64GetDatum(lease_token);
	if (SPI_execute_plan(complete_leased_plan, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "jobq: could not delete completed job %lld", (long long) id);
	return SPI_processed == 1;
}

/*
 * Make a job available again after backoff_ms, keeping its attempts, and
 * remember the error that made it fail.  Without an error (err == NULL: an
 * external consumer released the job) last_error is left as it was.
 * A reservation or lease the job had ends.
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
								  "   SET reserved_by = NULL, reserved_at = NULL, lease_token = NULL,"
								  "       available_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
								  "         pg_catalog.make_interval(secs => $2 OPERATOR(pg_catalog./) 1000.0),"
								  "       last_error = CASE WHEN $3 IS NULL AND $4 IS NULL THEN last_error"
								  "         ELSE " ERROR_JSONB(3, 4, 5, 6, 7) " END"
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
 * one statement.
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
								 "    backoff, dispatched_at, failed_at, exception, sqlstate, error)"
								 " SELECT j.id, j.queue, j.job, j.payload, j.owner, j.attempts,"
								 "   j.tries, j.timeout, j.backoff, j.created_at, pg_catalog.clock_timestamp(), $3, $2,"
								 "   " ERROR_JSONB(2, 3, 4, 5, 6)
								 " FROM j",
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
	if (SPI_execute_plan(fail_plan, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "jobq: could not move job %lld to the failed store", (long long) id);
}
