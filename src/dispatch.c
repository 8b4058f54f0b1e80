/*-------------------------------------------------------------------------
 *
 * dispatch.c
 *		jobq.dispatch() and jobq.register(): where a job begins.
 *
 * dispatch validates every argument (nothing is written if any is wrong),
 * resolves the handler with the caller's search_path and checks the
 * caller's EXECUTE right on it (handler.c), then inserts the job as the
 * extension owner, stamped with the caller as its owner: the role the job
 * will run as.  The insert is part of the caller's transaction, so a job
 * dispatched in a transaction that rolls back never exists, and one that
 * commits is as durable as any row.  At commit the database's workers are
 * woken (shmem.c).
 *
 * Settings: a dispatch argument wins over the handler's registered default
 * (jobq.register), which wins over the workers' defaults (jobq.tries,
 * jobq.timeout, jobq.backoff; applied when the job runs, shown as NULL in
 * jobq.jobs).
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/dispatch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_dispatch);
PG_FUNCTION_INFO_V1(jobq_register);
PG_FUNCTION_INFO_V1(jobq_unregister);

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr register_plan = NULL;
static SPIPlanPtr unregister_plan = NULL;

/*
 * An interval argument as milliseconds, checked against [min_ms, max_ms].
 */
static int64
checked_interval_ms(Interval *iv, const char *what, int64 min_ms, int64 max_ms)
{
	int64		ms = jobq_interval_ms(iv);

	if (ms < min_ms || ms > max_ms)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s is out of range",
						what,
						DatumGetCString(DirectFunctionCall1(interval_out,
															IntervalPGetDatum(iv)))),
				 errdetail("It must be between %lld ms and %lld ms.",
						   (long long) min_ms, (long long) max_ms)));
	return ms;
}

void
jobq_check_tries(int32 tries)
{
	if (tries < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tries must not be negative"),
				 errhint("Use tries => 0 for unlimited attempts.")));
}

void
jobq_check_timeout(Interval *iv)
{
	int64		ms = checked_interval_ms(iv, "timeout", 0, JOBQ_MAX_TIMEOUT_MS);

	if (ms == 0 && (iv->time != 0 || iv->day != 0 || iv->month != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must be at least 1 ms, or 0 for none")));
}

void
jobq_check_backoff(Interval *iv)
{
	(void) checked_interval_ms(iv, "backoff", 0, (int64) JOBQ_MAX_DELAY_SECS * 1000);
}

void
jobq_check_delay(Interval *iv)
{
	(void) checked_interval_ms(iv, "delay", 0, (int64) JOBQ_MAX_DELAY_SECS * 1000);
}

/*
 * When a job dispatched now with this delay or available_at may first run.
 */
static TimestampTz
compute_available_at(bool has_delay, Interval *delay,
					 bool has_at, TimestampTz at)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz limit = now + (int64) JOBQ_MAX_DELAY_SECS * USECS_PER_SEC;

	if (has_delay && has_at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delay and available_at cannot both be given"),
				 errhint("Use delay for a time from now, available_at for a point in time.")));
	if (has_delay)
	{
		jobq_check_delay(delay);
		return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													   TimestampTzGetDatum(now),
													   IntervalPGetDatum(delay)));
	}
	if (has_at)
	{
		if (TIMESTAMP_NOT_FINITE(at) || at > limit)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("available_at must be a finite time at most %d days ahead",
							JOBQ_MAX_DELAY_SECS / SECS_PER_DAY)));
		/* a time in the past means now */
		return Max(at, now);
	}
	return now;
}

/*
 * Insert one job row and return its id; the workers are woken when the
 * transaction commits.  values/nulls are indexed by JobqInsertArg.  Every
 * way a job begins goes through here (dispatch, the next link of a chain,
 * a retried chain link).  The caller has SPI connected and runs as the
 * extension owner; checking the arguments is the caller's business.
 * Settings left NULL take the handler's registered defaults.
 */
int64
jobq_insert_job(Datum *values, const char *nulls)
{
	bool		isnull;

	if (insert_plan == NULL)
	{
		Oid			types[JOBQ_INS_NARGS] = {TEXTOID, JSONBOID, TEXTOID, OIDOID,
			INT4OID, INTERVALOID, INTERVALOID, TIMESTAMPTZOID, INT8OID, JSONBOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("INSERT INTO jobq.jobs"
						   "  (job, payload, queue, owner, tries, timeout, backoff,"
						   "   available_at, created_at, chain_id, chain, middleware)"
						   " SELECT $1, $2,"
						   "   COALESCE($3, h.queue, 'default'), $4::pg_catalog.regrole,"
						   "   COALESCE($5, h.tries), COALESCE($6, h.timeout),"
						   "   COALESCE($7, h.backoff), $8, pg_catalog.clock_timestamp(),"
						   "   $9, $10, h.middleware"
						   " FROM (SELECT) AS one"
						   " LEFT JOIN jobq.handlers h ON h.job OPERATOR(pg_catalog.=) $1"
						   " RETURNING id",
						   JOBQ_INS_NARGS, types);
		if (plan == NULL)
			elog(ERROR, "jobq: SPI_prepare failed: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		insert_plan = plan;
	}

	if (SPI_execute_plan(insert_plan, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "jobq: could not insert the job");
	jobq_wake_at_commit();
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * jobq.dispatch(job text, payload jsonb DEFAULT '{}', queue text DEFAULT NULL,
 *				 delay interval DEFAULT NULL, available_at timestamptz DEFAULT NULL,
 *				 tries int DEFAULT NULL, timeout interval DEFAULT NULL,
 *				 backoff interval DEFAULT NULL) RETURNS bigint
 */
Datum
jobq_dispatch(PG_FUNCTION_ARGS)
{
	char	   *job;
	char	   *canonical;
	Oid			owner = GetUserId();
	Oid			save_userid;
	int			save_sec;
	Datum		values[JOBQ_INS_NARGS];
	char		nulls[JOBQ_INS_NARGS];
	TimestampTz available_at;
	int64		id;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null"),
				 errhint("Name the handler: a function or procedure taking one jsonb argument.")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null"),
				 errhint("Pass '{}' for a job without data.")));
	if (!PG_ARGISNULL(2))
		jobq_check_queue_name(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	available_at = compute_available_at(!PG_ARGISNULL(3),
										PG_ARGISNULL(3) ? NULL : PG_GETARG_INTERVAL_P(3),
										!PG_ARGISNULL(4),
										PG_ARGISNULL(4) ? 0 : PG_GETARG_TIMESTAMPTZ(4));
	if (!PG_ARGISNULL(5))
		jobq_check_tries(PG_GETARG_INT32(5));
	if (!PG_ARGISNULL(6))
		jobq_check_timeout(PG_GETARG_INTERVAL_P(6));
	if (!PG_ARGISNULL(7))
		jobq_check_backoff(PG_GETARG_INTERVAL_P(7));

	job = text_to_cstring(PG_GETARG_TEXT_PP(0));
	(void) jobq_resolve_handler(job, &canonical, true);

	values[JOBQ_INS_JOB] = CStringGetTextDatum(canonical);
	values[JOBQ_INS_PAYLOAD] = PG_GETARG_DATUM(1);
	values[JOBQ_INS_QUEUE] = PG_GETARG_DATUM(2);
	values[JOBQ_INS_OWNER] = ObjectIdGetDatum(owner);
	values[JOBQ_INS_TRIES] = PG_GETARG_DATUM(5);
	values[JOBQ_INS_TIMEOUT] = PG_GETARG_DATUM(6);
	values[JOBQ_INS_BACKOFF] = PG_GETARG_DATUM(7);
	values[JOBQ_INS_AVAILABLE_AT] = TimestampTzGetDatum(available_at);
	memset(nulls, ' ', sizeof(nulls));
	nulls[JOBQ_INS_QUEUE] = PG_ARGISNULL(2) ? 'n' : ' ';
	nulls[JOBQ_INS_TRIES] = PG_ARGISNULL(5) ? 'n' : ' ';
	nulls[JOBQ_INS_TIMEOUT] = PG_ARGISNULL(6) ? 'n' : ' ';
	nulls[JOBQ_INS_BACKOFF] = PG_ARGISNULL(7) ? 'n' : ' ';
	nulls[JOBQ_INS_CHAIN_ID] = 'n';
	nulls[JOBQ_INS_CHAIN] = 'n';

	SPI_connect();
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(jobq_extension_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	id = jobq_insert_job(values, nulls);
	SetUserIdAndSecContext(save_userid, save_sec);
	SPI_finish();

	PG_RETURN_INT64(id);
}

/* jobq.register's arguments, by position */
#define REGISTER_ARG_JOB			0
#define REGISTER_ARG_MIDDLEWARE		5
#define REGISTER_NARGS				6

/*
 * jobq.register(job text, queue text DEFAULT NULL, tries int DEFAULT NULL,
 *				 timeout interval DEFAULT NULL, backoff interval DEFAULT NULL,
 *				 middleware jsonb DEFAULT NULL)
 *
 * Declares a handler's defaults, like the properties of a Laravel job
 * class.  Replaces all of them: an omitted one means "no default".  Only
 * the handler's owner (or a superuser) may register it.
 */
Datum
jobq_register(PG_FUNCTION_ARGS)
{
	char	   *canonical;
	Oid			fnoid;
	Oid			save_userid;
	int			save_sec;
	Datum		values[REGISTER_NARGS];
	char		nulls[REGISTER_NARGS];

	if (PG_ARGISNULL(REGISTER_ARG_JOB))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null")));
	if (!PG_ARGISNULL(1))
		jobq_check_queue_name(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	if (!PG_ARGISNULL(2))
		jobq_check_tries(PG_GETARG_INT32(2));
	if (!PG_ARGISNULL(3))
		jobq_check_timeout(PG_GETARG_INTERVAL_P(3));
	if (!PG_ARGISNULL(4))
		jobq_check_backoff(PG_GETARG_INTERVAL_P(4));
	if (!PG_ARGISNULL(REGISTER_ARG_MIDDLEWARE))
		jobq_middleware_check(PG_GETARG_JSONB_P(REGISTER_ARG_MIDDLEWARE));

	fnoid = jobq_resolve_handler(text_to_cstring(PG_GETARG_TEXT_PP(REGISTER_ARG_JOB)),
								 &canonical, false);
	if (!pg_proc_ownercheck(fnoid, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of function %s to register it as a job handler",
						format_procedure(fnoid))));

	values[0] = CStringGetTextDatum(canonical);
	memset(nulls, ' ', sizeof(nulls));
	for (int i = 1; i < REGISTER_NARGS; i++)
	{
		values[i] = PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}

	SPI_connect();
	if (register_plan == NULL)
	{
		Oid			types[REGISTER_NARGS] = {TEXTOID, TEXTOID, INT4OID,
		INTERVALOID, INTERVALOID, JSONBOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("INSERT INTO jobq.handlers AS h"
						   "  (job, queue, tries, timeout, backoff, middleware,"
						   "   registered_at)"
						   " VALUES ($1, $2, $3, $4, $5, $6, pg_catalog.now())"
						   " ON CONFLICT (job) DO UPDATE SET"
						   "  queue = excluded.queue, tries = excluded.tries,"
						   "  timeout = excluded.timeout, backoff = excluded.backoff,"
						   "  middleware = excluded.middleware,"
						   "  registered_at = excluded.registered_at",
						   REGISTER_NARGS, types);
		if (plan == NULL)
			elog(ERROR, "jobq: SPI_prepare failed");
		SPI_keepplan(plan);
		register_plan = plan;
	}
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(jobq_extension_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_execute_plan(register_plan, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "jobq: could not register the handler");
	SetUserIdAndSecContext(save_userid, save_sec);
	SPI_finish();

	PG_RETURN_VOID();
}

/*
 * jobq.unregister(job text) RETURNS boolean: forget a handler's defaults.
 */
Datum
jobq_unregister(PG_FUNCTION_ARGS)
{
	char	   *canonical;
	Oid			fnoid;
	Oid			save_userid;
	int			save_sec;
	Datum		values[1];
	bool		deleted;

	fnoid = jobq_resolve_handler(text_to_cstring(PG_GETARG_TEXT_PP(0)),
								 &canonical, false);
	if (!pg_proc_ownercheck(fnoid, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of function %s to unregister it",
						format_procedure(fnoid))));

	values[0] = CStringGetTextDatum(canonical);
	SPI_connect();
	if (unregister_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("DELETE FROM jobq.handlers WHERE job OPERATOR(pg_catalog.=) $1",
						   1, types);
		if (plan == NULL)
			elog(ERROR, "jobq: SPI_prepare failed");
		SPI_keepplan(plan);
		unregister_plan = plan;
	}
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(jobq_extension_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_execute_plan(unregister_plan, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "jobq: could not unregister the handler");
	deleted = SPI_processed > 0;
	SetUserIdAndSecContext(save_userid, save_sec);
	SPI_finish();

	PG_RETURN_BOOL(deleted);
}
