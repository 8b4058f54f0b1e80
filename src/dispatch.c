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

/* arguments of jobq.register() after job, queue, tries, timeout, backoff */
#define REGISTER_ARG_EXTERNAL	5

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr register_plan = NULL;
static SPIPlanPtr unregister_plan = NULL;

/*
 * An interval argument as milliseconds, checked against [min_ms, max_ms].
 */
int64
jobq_checked_interval_ms(Interval *iv, const char *what, int64 min_ms, int64 max_ms)
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
	int64		ms = jobq_checked_interval_ms(iv, "timeout", 0, JOBQ_MAX_TIMEOUT_MS);

	if (ms == 0 && (iv->time != 0 || iv->day != 0 || iv->month != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must be at least 1 ms, or 0 for none")));
}

void
jobq_check_backoff(Interval *iv)
{
	(void) jobq_checked_interval_ms(iv, "backoff", 0, (int64) JOBQ_MAX_DELAY_SECS * 1000);
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
		(void) jobq_checked_interval_ms(delay, "delay", 0,
								   (int64) JOBQ_MAX_DELAY_SECS * 1000);
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
	Datum		values[8];
	char		nulls[8];
	TimestampTz available_at;
	bool		isnull;
	bool		external;
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
	SPI_connect();
	/* an external job (consumer.c) has no handler to resolve */
	external = (jobq_registration(job, NULL) == JOBQ_REGISTERED_EXTERNAL);
	if (external)
		canonical = job;
	else
		(void) jobq_resolve_handler(job, &canonical, true);

	/* $1 job, $2 payload, $3 queue, $4 owner, $5 tries, $6 timeout,
	 * $7 backoff, $8 available_at */
	values[0] = CStringGetTextDatum(canonical);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = ObjectIdGetDatum(owner);
	values[4] = PG_GETARG_DATUM(5);
	values[5] = PG_GETARG_DATUM(6);
	values[6] = PG_GETARG_DATUM(7);
	values[7] = TimestampTzGetDatum(available_at);
	memset(nulls, ' ', sizeof(nulls));
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	nulls[4] = PG_ARGISNULL(5) ? 'n' : ' ';
	nulls[5] = PG_ARGISNULL(6) ? 'n' : ' ';
	nulls[6] = PG_ARGISNULL(7) ? 'n' : ' ';

	if (insert_plan == NULL)
	{
		Oid			types[8] = {TEXTOID, JSONBOID, TEXTOID, OIDOID, INT4OID,
		INTERVALOID, INTERVALOID, TIMESTAMPTZOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("INSERT INTO jobq.jobs"
						   "  (job, payload, queue, owner, tries, timeout, backoff,"
						   "   available_at, created_at, external)"
						   " SELECT $1, $2,"
						   "   COALESCE($3, h.queue, 'default'), $4::pg_catalog.regrole,"
						   "   COALESCE($5, h.tries), COALESCE($6, h.timeout),"
						   "   COALESCE($7, h.backoff), $8, pg_catalog.clock_timestamp(),"
						   "   COALESCE(h.external, false)"
						   " FROM (SELECT) AS one"
						   " LEFT JOIN jobq.handlers h ON h.job OPERATOR(pg_catalog.=) $1"
						   " RETURNING id, queue",
						   8, types);
		if (plan == NULL)
			elog(ERROR, "jobq: SPI_prepare failed: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		insert_plan = plan;
	}

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(jobq_extension_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_execute_plan(insert_plan, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "jobq: could not insert the job");
	SetUserIdAndSecContext(save_userid, save_sec);

	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));
	if (external)
		jobq_notify_external(SPI_getvalue(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 2),
							 canonical);
	SPI_finish();

	if (!external)
		jobq_wake_at_commit();
	PG_RETURN_INT64(id);
}

/*
 * jobq.register(job text, queue text DEFAULT NULL, tries int DEFAULT NULL,
 *				 timeout interval DEFAULT NULL, backoff interval DEFAULT NULL,
 *				 external boolean DEFAULT false)
 *
 * Declares a handler's defaults, like the properties of a Laravel job
 * class.  Replaces all of them: an omitted one means "no default".  Only
 * the handler's owner (or a superuser) may register it.
 *
 * With external => true, job is a name with no SQL handler: its jobs are
 * run by SQL consumers (consumer.c), never by jobq's workers.  The role
 * that first registers an external name owns it.
 */
Datum
jobq_register(PG_FUNCTION_ARGS)
{
	char	   *canonical;
	Oid			fnoid;
	Oid			save_userid;
	int			save_sec;
	Datum		values[7];
	char		nulls[7];
	bool		external;
	Oid			registered_by = InvalidOid;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null")));
	external = !PG_ARGISNULL(REGISTER_ARG_EXTERNAL) &&
		PG_GETARG_BOOL(REGISTER_ARG_EXTERNAL);
	if (!PG_ARGISNULL(1))
		jobq_check_queue_name(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	if (!PG_ARGISNULL(2))
		jobq_check_tries(PG_GETARG_INT32(2));
	if (!PG_ARGISNULL(3))
		jobq_check_timeout(PG_GETARG_INTERVAL_P(3));
	if (!PG_ARGISNULL(4))
		jobq_check_backoff(PG_GETARG_INTERVAL_P(4));

	SPI_connect();
	if (external)
	{
		JobqRegistration reg;

		canonical = text_to_cstring(PG_GETARG_TEXT_PP(0));
		jobq_check_external_name(canonical);
		reg = jobq_registration(canonical, &registered_by);
		if (reg == JOBQ_REGISTERED_SQL)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("job %s is registered with a SQL handler", canonical),
					 errhint("Unregister it first, or choose another name for the external job.")));
		if (reg == JOBQ_REGISTERED_EXTERNAL && OidIsValid(registered_by) &&
			!has_privs_of_role(GetUserId(), registered_by))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be member of role %s to register external job %s",
							GetUserNameFromId(registered_by, false), canonical),
					 errdetail("Role %s registered it.",
							   GetUserNameFromId(registered_by, false))));
	}
	else
	{
		fnoid = jobq_resolve_handler(text_to_cstring(PG_GETARG_TEXT_PP(0)),
									 &canonical, false);
		if (!pg_proc_ownercheck(fnoid, GetUserId()))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be owner of function %s to register it as a job handler",
							format_procedure(fnoid))));
	}

	values[0] = CStringGetTextDatum(canonical);
	memset(nulls, ' ', sizeof(nulls));
	for (int i = 1; i < 5; i++)
	{
		values[i] = PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	values[5] = BoolGetDatum(external);
	values[6] = ObjectIdGetDatum(GetUserId());

	if (register_plan == NULL)
	{
		Oid			types[7] = {TEXTOID, TEXTOID, INT4OID, INTERVALOID, INTERVALOID,
		BOOLOID, OIDOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("INSERT INTO jobq.handlers AS h"
						   "  (job, queue, tries, timeout, backoff, registered_at,"
						   "   external, registered_by)"
						   " VALUES ($1, $2, $3, $4, $5, pg_catalog.now(), $6,"
						   "   $7::pg_catalog.regrole)"
						   " ON CONFLICT (job) DO UPDATE SET"
						   "  queue = excluded.queue, tries = excluded.tries,"
						   "  timeout = excluded.timeout, backoff = excluded.backoff,"
						   "  registered_at = excluded.registered_at,"
						   "  external = excluded.external,"
						   "  registered_by = CASE WHEN h.external AND excluded.external"
						   "    THEN h.registered_by ELSE excluded.registered_by END",
						   7, types);
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
	char	   *job = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			registered_by = InvalidOid;

	SPI_connect();
	if (jobq_registration(job, &registered_by) == JOBQ_REGISTERED_EXTERNAL)
	{
		canonical = job;
		if (OidIsValid(registered_by) &&
			!has_privs_of_role(GetUserId(), registered_by))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be member of role %s to unregister external job %s",
							GetUserNameFromId(registered_by, false), job)));
	}
	else
	{
		fnoid = jobq_resolve_handler(job, &canonical, false);
		if (!pg_proc_ownercheck(fnoid, GetUserId()))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be owner of function %s to unregister it",
							format_procedure(fnoid))));
	}

	values[0] = CStringGetTextDatum(canonical);
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
