/*-------------------------------------------------------------------------
 *
 * failed.c
 *		Managing the failed store (Laravel's queue:retry, queue:forget and
 *		queue:flush) and pruning it (jobq.failed_retention).
 *
 * jobq.retry(), jobq.retry_all(), jobq.forget() and jobq.flush() act on
 * the failed jobs the caller may manage: those owned by a role the caller
 * is a member of, or all of them for superusers and members of jobq_admin.
 * They check that in their statements and run them as the extension owner,
 * like jobq.dispatch(), so ordinary roles need no write access to jobq's
 * tables (which row-level security would refuse them anyway).
 *
 * A retry is one statement: it deletes the failed records and inserts the
 * new jobs (same queue, handler, payload, owner and options, attempts
 * reset, available now), so a failed job is either still failed or queued
 * again, never both nor lost.  Two sessions retrying the same failed job
 * queue it once: the second waits for the first's row lock and then finds
 * nothing to delete.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/failed.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_retry);
PG_FUNCTION_INFO_V1(jobq_retry_array);
PG_FUNCTION_INFO_V1(jobq_retry_all);
PG_FUNCTION_INFO_V1(jobq_forget);
PG_FUNCTION_INFO_V1(jobq_flush);

/*
 * Which failed jobs the caller may manage: $1 is true for administrators,
 * $2 the caller.
 */
#define MAY_MANAGE \
	"($1 OR pg_catalog.pg_has_role($2, f.owner::pg_catalog.oid, 'MEMBER'))"

/*
 * The option columns a retried job takes from its failed record.  A new
 * option column of jobq.jobs that jobq.failed keeps too goes here.
 */
#define RETRY_OPTION_COLUMNS "tries, timeout, backoff, max_exceptions," \
	" backoff_schedule, backoff_exponential, on_failure, delete_when_missing_models," \
	" chain_id, chain"
/* ... and their values (a record written by hand may lack the flags) */
#define RETRY_OPTION_VALUES "tries, timeout, backoff, max_exceptions," \
	" backoff_schedule, COALESCE(backoff_exponential, false), on_failure," \
	" COALESCE(delete_when_missing_models, false), chain_id, chain"

/* the retry statement; the failed jobs are chosen by "$3 ..." */
#define RETRY_SQL(selector) \
	"WITH f AS (" \
	"  DELETE FROM jobq.failed f" \
	"   WHERE " selector " AND " MAY_MANAGE \
	"  RETURNING f.id, f.queue, f.job, f.payload, f.owner, " RETRY_OPTION_COLUMNS "," \
	"    f.retry_until OPERATOR(pg_catalog.-) f.dispatched_at AS retry_for," \
	"    pg_catalog.nextval('jobq.jobs_id_seq'::pg_catalog.regclass) AS new_id)," \
	" j AS (" \
	"  INSERT INTO jobq.jobs (id, queue, job, payload, owner, " RETRY_OPTION_COLUMNS "," \
	"                         retry_until, middleware, external, available_at," \
	"                         created_at)" \
	"  SELECT new_id, queue, job, payload, owner, " RETRY_OPTION_VALUES "," \
	"         t.now OPERATOR(pg_catalog.+) COALESCE(" \
	"           (SELECT h.retry_for FROM jobq.handlers h" \
	"             WHERE h.job OPERATOR(pg_catalog.=) f.job), f.retry_for)," \
	"         (SELECT h.middleware FROM jobq.handlers h" \
	"           WHERE h.job OPERATOR(pg_catalog.=) f.job)," \
	"         COALESCE((SELECT h.external FROM jobq.handlers h" \
	"                    WHERE h.job OPERATOR(pg_catalog.=) f.job), false)," \
	"         t.now, t.now" \
	"    FROM f, (SELECT pg_catalog.clock_timestamp() AS now) AS t" \
	"  RETURNING id, queue, job, external)" \
	" SELECT f.id, j.id, j.queue, j.job, j.external" \
	"   FROM f JOIN j ON j.id OPERATOR(pg_catalog.=) f.new_id" \
	"  ORDER BY f.id"

/* chunk size of automatic pruning (jobq.failed_retention) */
#define JOBQ_PRUNE_BATCH 500

/*
 * Is the current user an administrator of jobq: a superuser or a member
 * (with its privileges) of jobq_admin?
 */
static bool
caller_is_admin(void)
{
	Oid			admin;

	if (superuser())
		return true;
	admin = get_role_oid("jobq_admin", true);
	return OidIsValid(admin) && has_privs_of_role(GetUserId(), admin);
}

/*
 * Run a statement as the extension owner with $1 = caller is admin, $2 =
 * caller, $3 = arg (of type argtype; may be null).  Returns SPI's result;
 * the caller has connected SPI.
 */
static int
run_as_owner(const char *sql, Oid argtype, Datum arg, bool argnull)
{
	Oid			types[3] = {BOOLOID, OIDOID, argtype};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', argnull ? 'n' : ' '};
	Oid			save_userid;
	int			save_sec;
	Oid			owner = jobq_extension_owner();
	int			rc;

	if (!OidIsValid(owner))
		elog(ERROR, "jobq: extension jobq is not installed");
	values[0] = BoolGetDatum(caller_is_admin());
	values[1] = ObjectIdGetDatum(GetUserId());
	values[2] = arg;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	rc = SPI_execute_with_args(sql, 3, types, values, nulls, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec);
	return rc;
}

/*
 * Retry the failed jobs chosen by the selector, returning (failed_id,
 * job_id) rows.
 */
static Datum
retry_failed(FunctionCallInfo fcinfo, const char *sql, Oid argtype,
			 Datum arg, bool argnull, bool one)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	uint64		n;

	InitMaterializedSRF(fcinfo, 0);

	SPI_connect();
	if (run_as_owner(sql, argtype, arg, argnull) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not retry failed jobs");
	n = SPI_processed;
	if (one && n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("failed job %lld does not exist",
						(long long) DatumGetInt64(arg)),
				 errhint("See jobq.failed_jobs for the failed jobs you may retry.")));

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		values[2];
		bool		nulls[2] = {false, false};
		bool		isnull;
		char	   *queue;
		char	   *job;

		values[0] = SPI_getbinval(tup, desc, 1, &isnull);
		values[1] = SPI_getbinval(tup, desc, 2, &isnull);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

		queue = SPI_getvalue(tup, desc, 3);
		job = SPI_getvalue(tup, desc, 4);
		/* like jobq_insert_job: the event, else the consumers' wake-up */
		if (!jobq_event(JOBQ_EVENT_QUEUED, DatumGetInt64(values[1]), queue, job,
						0, NULL) &&
			DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull)))
			jobq_notify_external(queue, job);
	}
	SPI_finish();

	if (n > 0)
		jobq_wake_at_commit(NULL, n);
	return (Datum) 0;
}

/*
 * jobq.retry(id bigint) RETURNS TABLE (failed_id bigint, job_id bigint)
 */
Datum
jobq_retry(PG_FUNCTION_ARGS)
{
	return retry_failed(fcinfo,
						RETRY_SQL("f.id OPERATOR(pg_catalog.=) $3"),
						INT8OID, PG_GETARG_DATUM(0), false, true);
}

/*
 * jobq.retry(ids bigint[]) RETURNS TABLE (failed_id bigint, job_id bigint):
 * the ids that do not exist (or that the caller may not manage) are left
 * out of the result.
 */
Datum
jobq_retry_array(PG_FUNCTION_ARGS)
{
	return retry_failed(fcinfo,
						RETRY_SQL("f.id OPERATOR(pg_catalog.=) ANY ($3)"),
						INT8ARRAYOID, PG_GETARG_DATUM(0), false, false);
}

/*
 * jobq.retry_all(queue text DEFAULT NULL) RETURNS TABLE (failed_id bigint,
 * job_id bigint): every failed job of the queue (NULL: of all queues).
 */
Datum
jobq_retry_all(PG_FUNCTION_ARGS)
{
	return retry_failed(fcinfo,
						RETRY_SQL("($3::pg_catalog.text IS NULL OR f.queue OPERATOR(pg_catalog.=) $3)"),
						TEXTOID, PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0),
						PG_ARGISNULL(0), false);
}

/*
 * jobq.forget(id bigint) RETURNS boolean
 */
Datum
jobq_forget(PG_FUNCTION_ARGS)
{
	bool		found;

	SPI_connect();
	if (run_as_owner("DELETE FROM jobq.failed f"
					 " WHERE f.id OPERATOR(pg_catalog.=) $3 AND " MAY_MANAGE,
					 INT8OID, PG_GETARG_DATUM(0), false) != SPI_OK_DELETE)
		elog(ERROR, "jobq: could not forget failed job");
	found = SPI_processed > 0;
	SPI_finish();
	PG_RETURN_BOOL(found);
}

/*
 * jobq.flush(older_than interval DEFAULT NULL) RETURNS bigint: delete the
 * failed jobs that failed strictly more than older_than ago; all of them
 * if it is NULL.
 */
Datum
jobq_flush(PG_FUNCTION_ARGS)
{
	uint64		n;

	if (!PG_ARGISNULL(0))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(0);

		if (jobq_interval_ms(iv) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("older_than must not be negative"),
					 errhint("Use NULL to delete every failed job.")));
	}

	SPI_connect();
	if (run_as_owner("DELETE FROM jobq.failed f"
					 " WHERE ($3::pg_catalog.interval IS NULL"
					 "        OR f.failed_at OPERATOR(pg_catalog.<)"
					 "           (pg_catalog.now() OPERATOR(pg_catalog.-) $3))"
					 "   AND " MAY_MANAGE,
					 INTERVALOID, PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0),
					 PG_ARGISNULL(0)) != SPI_OK_DELETE)
		elog(ERROR, "jobq: could not flush failed jobs");
	n = SPI_processed;
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}

/* ---- automatic pruning, run by the workers (runner.c) ---- */

static SPIPlanPtr prune_plan = NULL;

/*
 * Delete up to JOBQ_PRUNE_BATCH failed jobs older than retention_s seconds,
 * oldest first, skipping rows another worker is deleting.  Returns true if
 * a full batch was deleted (there may be more).  Caller is in a
 * transaction with SPI connected, as the extension owner.
 */
bool
jobq_prune_failed(int retention_s)
{
	Datum		values[2];

	if (prune_plan == NULL)
	{
		Oid			types[2] = {INT4OID, INT4OID};

		prune_plan = SPI_prepare("DELETE FROM jobq.failed"
								 " WHERE id OPERATOR(pg_catalog.=) ANY (ARRAY("
								 "   SELECT id FROM jobq.failed"
								 "    WHERE failed_at OPERATOR(pg_catalog.<) (pg_catalog.now()"
								 "          OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $1))"
								 "    ORDER BY failed_at LIMIT $2"
								 "    FOR UPDATE SKIP LOCKED))",
								 2, types);
		if (prune_plan == NULL)
			elog(ERROR, "jobq: SPI_prepare failed: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(prune_plan);
	}
	values[0] = Int32GetDatum(retention_s);
	values[1] = Int32GetDatum(JOBQ_PRUNE_BATCH);
	if (SPI_execute_plan(prune_plan, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "jobq: could not prune failed jobs");
	if (SPI_processed > 0)
		elog(DEBUG1, "jobq: pruned " UINT64_FORMAT " failed jobs older than %d s",
			 SPI_processed, retention_s);
	return SPI_processed >= JOBQ_PRUNE_BATCH;
}
