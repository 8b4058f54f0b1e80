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
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_dispatch);
PG_FUNCTION_INFO_V1(jobq_dispatch_sql);
PG_FUNCTION_INFO_V1(jobq_dispatch_many);
PG_FUNCTION_INFO_V1(jobq_register);
PG_FUNCTION_INFO_V1(jobq_unregister);

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr insert_many_plan = NULL;
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

void
jobq_check_delay(Interval *iv)
{
	(void) jobq_checked_interval_ms(iv, "delay", 0, (int64) JOBQ_MAX_DELAY_SECS * 1000);
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
 * Insert one job row and return its id; the workers are woken, and the
 * queued event sent, when the transaction commits.  values/nulls are
 * indexed by JobqInsertArg.  Every way a job begins goes through here
 * (dispatch, the next link of a chain, a retried chain link), except
 * jobq.dispatch_many, whose insert_many fills the same columns the same
 * way for many payloads at once: keep the two statements alike.  The caller
 * has SPI connected and runs as the extension owner; checking the
 * arguments is the caller's business.  Settings left NULL take the
 * handler's registered defaults; backoff, backoff_schedule and
 * backoff_exponential replace the registered ones as a whole when any of
 * them is given, so that a registered schedule does not hide a backoff
 * given here.
 */
int64
jobq_insert_job(Datum *values, const char *nulls)
{
	bool		isnull;
	int64		id;
	char	   *queue;

	if (insert_plan == NULL)
	{
		Oid			types[JOBQ_INS_NARGS] = {TEXTOID, JSONBOID, TEXTOID, OIDOID,
			INT4OID, INTERVALOID, INTERVALOID, TIMESTAMPTZOID, INT8OID, JSONBOID,
		TIMESTAMPTZOID, INT4OID, INTERVALARRAYOID, BOOLOID};

		/*
		 * $1 job, $2 payload, $3 queue, $4 owner, $5 tries, $6 timeout, $7
		 * backoff, $8 available_at, $9 chain_id, $10 chain, $11
		 * retry_until, $12 max_exceptions, $13 backoff_schedule, $14
		 * backoff_exponential
		 */
#define OWN_BACKOFF "($7 IS NOT NULL OR $13 IS NOT NULL OR $14 IS NOT NULL)"
		insert_plan = jobq_prepare_kept(
										"INSERT INTO jobq.jobs"
										"  (job, payload, queue, owner, tries, timeout, backoff,"
										"   available_at, created_at, chain_id, chain, middleware,"
										"   retry_until, max_exceptions, backoff_schedule,"
										"   backoff_exponential, on_failure,"
										"   delete_when_missing_models, external)"
										" SELECT $1, $2,"
										"   COALESCE($3, h.queue, 'default'), $4::pg_catalog.regrole,"
										"   COALESCE($5, h.tries), COALESCE($6, h.timeout),"
										"   CASE WHEN " OWN_BACKOFF " THEN $7 ELSE h.backoff END,"
										"   $8, one.now, $9, $10, h.middleware,"
										"   COALESCE($11, one.now OPERATOR(pg_catalog.+) h.retry_for),"
										"   NULLIF(COALESCE($12, h.max_exceptions), 0),"
										"   CASE WHEN " OWN_BACKOFF " THEN $13 ELSE h.backoff_schedule END,"
										"   COALESCE(CASE WHEN " OWN_BACKOFF " THEN $14"
										"            ELSE h.backoff_exponential END, false),"
										"   h.on_failure, COALESCE(h.delete_when_missing_models, false),"
										"   COALESCE(h.external, false)"
										" FROM (SELECT pg_catalog.clock_timestamp() AS now) AS one"
										" LEFT JOIN jobq.handlers h ON h.job OPERATOR(pg_catalog.=) $1"
										" RETURNING id, queue, external",
										JOBQ_INS_NARGS, types);
#undef OWN_BACKOFF
	}

	if (SPI_execute_plan(insert_plan, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "jobq: could not insert the job");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));
	queue = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

	/*
	 * SQL consumers of external jobs wait for a notification: the queued
	 * event, or when that is not sent (not asked for, or the notification
	 * queue is over jobq.events_queue_limit) the wake-up.
	 */
	if (!jobq_event(JOBQ_EVENT_QUEUED, id, queue,
					TextDatumGetCString(values[JOBQ_INS_JOB]), 0, NULL) &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
								   SPI_tuptable->tupdesc, 3, &isnull)))
		jobq_notify_external(queue, TextDatumGetCString(values[JOBQ_INS_JOB]));
	if (nulls[JOBQ_INS_AVAILABLE_AT] != 'n' &&
		DatumGetTimestampTz(values[JOBQ_INS_AVAILABLE_AT]) > GetCurrentTimestamp())
		jobq_wake_delayed_at_commit(queue);
	else
		jobq_wake_at_commit(queue, 1);
	pfree(queue);
	return id;
}

/*
 * Arguments of jobq.dispatch(job, payload, <options>) and of
 * jobq.dispatch_sql(sql, <options>): the options are the same, in the same
 * order, starting at DISPATCH_OPTS or DISPATCH_SQL_OPTS.
 */
#define DISPATCH_OPTS			2
#define DISPATCH_SQL_OPTS		1
#define OPT_QUEUE				0
#define OPT_DELAY				1
#define OPT_AVAILABLE_AT		2
#define OPT_TRIES				3
#define OPT_TIMEOUT				4
#define OPT_BACKOFF				5
#define OPT_RETRY_UNTIL			6
#define OPT_MAX_EXCEPTIONS		7
#define OPT_BACKOFF_SCHEDULE	8
#define OPT_BACKOFF_EXPONENTIAL 9
#define OPT_CONNECTION			10
#define NOPTS					11

void
jobq_check_max_exceptions(int32 n)
{
	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_exceptions must not be negative"),
				 errhint("Use max_exceptions => 0 (or leave it out) for no limit.")));
}

/*
 * A backoff schedule: a non-empty one-dimensional array of at most
 * JOBQ_MAX_BACKOFF_STEPS intervals, each a valid backoff.
 */
void
jobq_check_backoff_schedule(ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("backoff_schedule must be a one-dimensional array")));
	deconstruct_array(arr, INTERVALOID, sizeof(Interval), false,
					  TYPALIGN_DOUBLE, &elems, &nulls, &n);
	if (n == 0 || n > JOBQ_MAX_BACKOFF_STEPS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("backoff_schedule must have 1 to %d intervals",
						JOBQ_MAX_BACKOFF_STEPS),
				 errhint("For example backoff_schedule => '{1 s, 10 s, 1 min}': one wait per attempt, the last repeating.")));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("backoff_schedule must not contain nulls")));
		jobq_check_backoff(DatumGetIntervalP(elems[i]));
	}
}

/*
 * Check the backoff options of a call: a schedule replaces backoff and
 * backoff_exponential, so it cannot come with them.
 */
static void
check_backoff_options(FunctionCallInfo fcinfo, int backoff, int schedule,
					  int exponential)
{
	if (!PG_ARGISNULL(backoff))
		jobq_check_backoff(PG_GETARG_INTERVAL_P(backoff));
	if (!PG_ARGISNULL(schedule))
	{
		jobq_check_backoff_schedule(PG_GETARG_ARRAYTYPE_P(schedule));
		if (!PG_ARGISNULL(backoff) || !PG_ARGISNULL(exponential))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("backoff_schedule cannot be combined with backoff or backoff_exponential"),
					 errhint("Give one interval per attempt in the schedule, or a base backoff to double.")));
	}
}

/* Is the connection argument 'sync'?  NULL and 'database' queue the job. */
static bool
sync_connection(FunctionCallInfo fcinfo, int arg)
{
	char	   *conn;

	if (PG_ARGISNULL(arg))
		return false;
	conn = text_to_cstring(PG_GETARG_TEXT_PP(arg));
	if (strcmp(conn, "sync") == 0)
		return true;
	if (strcmp(conn, "database") == 0)
		return false;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown connection \"%s\"", conn),
			 errhint("Use connection => 'sync' to run the job now, or leave it out to queue it.")));
	return false;				/* keep the compiler quiet */
}

/*
 * Copy call arguments as they are into insert arguments: for each pair of
 * copied, insert argument copied[i][0] gets call argument base +
 * copied[i][1], NULL included.
 */
static void
copy_args(FunctionCallInfo fcinfo, int base, const int (*copied)[2], int n,
		  Datum *values, char *nulls)
{
	for (int i = 0; i < n; i++)
	{
		int			arg = base + copied[i][1];

		values[copied[i][0]] = PG_ARGISNULL(arg) ? (Datum) 0 : PG_GETARG_DATUM(arg);
		nulls[copied[i][0]] = PG_ARGISNULL(arg) ? 'n' : ' ';
	}
}

/*
 * Dispatch a job (handler name job_text, payload) with the options of the
 * call starting at argument o.  Returns the new job's id, or sets *ran_sync
 * if connection => 'sync' ran it at once.
 */
static int64
dispatch_job(FunctionCallInfo fcinfo, int o, const char *job_text,
			 Datum payload, bool *ran_sync)
{
	char	   *canonical;
	Oid			fnoid;
	Oid			owner = GetUserId();
	Oid			save_userid;
	int			save_sec;
	Datum		values[JOBQ_INS_NARGS];
	char		nulls[JOBQ_INS_NARGS];
	TimestampTz available_at;
	bool		external;
	int64		id;

	*ran_sync = false;
	if (!PG_ARGISNULL(o + OPT_QUEUE))
		jobq_check_queue_name(text_to_cstring(PG_GETARG_TEXT_PP(o + OPT_QUEUE)));
	available_at = compute_available_at(!PG_ARGISNULL(o + OPT_DELAY),
										PG_ARGISNULL(o + OPT_DELAY) ? NULL :
										PG_GETARG_INTERVAL_P(o + OPT_DELAY),
										!PG_ARGISNULL(o + OPT_AVAILABLE_AT),
										PG_ARGISNULL(o + OPT_AVAILABLE_AT) ? 0 :
										PG_GETARG_TIMESTAMPTZ(o + OPT_AVAILABLE_AT));
	if (!PG_ARGISNULL(o + OPT_TRIES))
		jobq_check_tries(PG_GETARG_INT32(o + OPT_TRIES));
	if (!PG_ARGISNULL(o + OPT_TIMEOUT))
		jobq_check_timeout(PG_GETARG_INTERVAL_P(o + OPT_TIMEOUT));
	check_backoff_options(fcinfo, o + OPT_BACKOFF, o + OPT_BACKOFF_SCHEDULE,
						  o + OPT_BACKOFF_EXPONENTIAL);
	if (!PG_ARGISNULL(o + OPT_RETRY_UNTIL) &&
		TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(o + OPT_RETRY_UNTIL)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retry_until must be a finite time"),
				 errhint("Leave it out to let tries decide.")));
	if (!PG_ARGISNULL(o + OPT_MAX_EXCEPTIONS))
		jobq_check_max_exceptions(PG_GETARG_INT32(o + OPT_MAX_EXCEPTIONS));

	/* an external job (consumer.c) has no handler to resolve */
	SPI_connect();
	external = (jobq_registration(job_text, NULL) == JOBQ_REGISTERED_EXTERNAL);
	SPI_finish();
	if (external)
	{
		canonical = pstrdup(job_text);
		fnoid = InvalidOid;
	}
	else
		fnoid = jobq_resolve_handler(job_text, &canonical, true);

	if (sync_connection(fcinfo, o + OPT_CONNECTION))
	{
		if (external)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("external job %s cannot run with connection 'sync'",
							canonical),
					 errhint("External jobs are run by SQL consumers (jobq.reserve()).")));
		if (!PG_ARGISNULL(o + OPT_DELAY) || !PG_ARGISNULL(o + OPT_AVAILABLE_AT))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a job run with connection 'sync' cannot be delayed")));
		jobq_dispatch_sync(canonical, fnoid, payload,
						   PG_ARGISNULL(o + OPT_TIMEOUT) ? NULL :
						   PG_GETARG_INTERVAL_P(o + OPT_TIMEOUT));
		*ran_sync = true;
		return 0;
	}


	memset(nulls, 'n', sizeof(nulls));
	values[JOBQ_INS_JOB] = CStringGetTextDatum(canonical);
	values[JOBQ_INS_PAYLOAD] = payload;
	values[JOBQ_INS_OWNER] = ObjectIdGetDatum(owner);
	values[JOBQ_INS_AVAILABLE_AT] = TimestampTzGetDatum(available_at);
	nulls[JOBQ_INS_JOB] = nulls[JOBQ_INS_PAYLOAD] = ' ';
	nulls[JOBQ_INS_OWNER] = nulls[JOBQ_INS_AVAILABLE_AT] = ' ';
	{
		/* the options copied as they are: (insert argument, option) */
		static const int copied[][2] = {
			{JOBQ_INS_QUEUE, OPT_QUEUE}, {JOBQ_INS_TRIES, OPT_TRIES},
			{JOBQ_INS_TIMEOUT, OPT_TIMEOUT}, {JOBQ_INS_BACKOFF, OPT_BACKOFF},
			{JOBQ_INS_RETRY_UNTIL, OPT_RETRY_UNTIL},
			{JOBQ_INS_MAX_EXCEPTIONS, OPT_MAX_EXCEPTIONS},
			{JOBQ_INS_BACKOFF_SCHEDULE, OPT_BACKOFF_SCHEDULE},
		{JOBQ_INS_BACKOFF_EXPONENTIAL, OPT_BACKOFF_EXPONENTIAL}};

		copy_args(fcinfo, o, copied, lengthof(copied), values, nulls);
	}

	SPI_connect();
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(jobq_extension_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	id = jobq_insert_job(values, nulls);
	SetUserIdAndSecContext(save_userid, save_sec);
	SPI_finish();
	return id;
}

/*
 * jobq.dispatch(job text, payload jsonb DEFAULT '{}', queue text, delay
 *				 interval, available_at timestamptz, tries int, timeout interval,
 *				 backoff interval, retry_until timestamptz, max_exceptions int,
 *				 backoff_schedule interval[], backoff_exponential boolean,
 *				 connection text) RETURNS bigint
 *
 * Returns the job's id; NULL with connection => 'sync' (no job row).
 */
Datum
jobq_dispatch(PG_FUNCTION_ARGS)
{
	bool		ran_sync;
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
	id = dispatch_job(fcinfo, DISPATCH_OPTS,
					  text_to_cstring(PG_GETARG_TEXT_PP(0)),
					  PG_GETARG_DATUM(1), &ran_sync);
	if (ran_sync)
		PG_RETURN_NULL();
	PG_RETURN_INT64(id);
}

/*
 * Arguments of jobq.dispatch_many(job, payloads, queue, delay,
 * available_at, tries, timeout, backoff).
 */
#define MANY_ARG_JOB			0
#define MANY_ARG_PAYLOADS		1
#define MANY_ARG_QUEUE			2
#define MANY_ARG_DELAY			3
#define MANY_ARG_AVAILABLE_AT	4
#define MANY_ARG_TRIES			5
#define MANY_ARG_TIMEOUT		6
#define MANY_ARG_BACKOFF		7

/*
 * Insert one job per element of payloads ($2) in one statement; the other
 * arguments are those of jobq_insert_job's first eight, and the defaults
 * registered for the handler apply as there.  The rows are inserted, and
 * so numbered, in payload order.
 */
static void
insert_many(Datum *values, const char *nulls)
{
	if (insert_many_plan == NULL)
	{
		/*
		 * $1 job, $2 payloads, $3 queue, $4 owner, $5 tries, $6 timeout, $7
		 * backoff, $8 available_at
		 */
		Oid			types[8] = {TEXTOID, JSONBARRAYOID, TEXTOID, OIDOID,
		INT4OID, INTERVALOID, INTERVALOID, TIMESTAMPTZOID};

		insert_many_plan = jobq_prepare_kept(
											 "INSERT INTO jobq.jobs"
											 "  (job, payload, queue, owner, tries, timeout, backoff,"
											 "   available_at, created_at, middleware, retry_until,"
											 "   max_exceptions, backoff_schedule, backoff_exponential,"
											 "   on_failure, delete_when_missing_models, external)"
											 " SELECT $1, p.payload,"
											 "   COALESCE($3, h.queue, 'default'), $4::pg_catalog.regrole,"
											 "   COALESCE($5, h.tries), COALESCE($6, h.timeout),"
											 "   CASE WHEN $7 IS NOT NULL THEN $7 ELSE h.backoff END,"
											 "   $8, one.now, h.middleware,"
											 "   one.now OPERATOR(pg_catalog.+) h.retry_for,"
											 "   NULLIF(h.max_exceptions, 0),"
											 "   CASE WHEN $7 IS NOT NULL THEN NULL ELSE h.backoff_schedule END,"
											 "   COALESCE(CASE WHEN $7 IS NOT NULL THEN NULL"
											 "            ELSE h.backoff_exponential END, false),"
											 "   h.on_failure, COALESCE(h.delete_when_missing_models, false),"
											 "   COALESCE(h.external, false)"
											 " FROM (SELECT pg_catalog.clock_timestamp() AS now) AS one"
											 " LEFT JOIN jobq.handlers h ON h.job OPERATOR(pg_catalog.=) $1"
											 " CROSS JOIN pg_catalog.unnest($2) WITH ORDINALITY AS p(payload, ord)"
											 " ORDER BY p.ord"
											 " RETURNING id, queue, external",
											 8, types);
	}
	if (SPI_execute_plan(insert_many_plan, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "jobq: could not insert the jobs");
}

/*
 * jobq.dispatch_many(job text, payloads jsonb[], queue text, delay
 *					  interval, available_at timestamptz, tries int, timeout
 *					  interval, backoff interval) RETURNS SETOF bigint
 *
 * jobq.dispatch for many payloads of one handler, with the same checks and
 * options, in one INSERT: returns the new jobs' ids in payload order.  A
 * NULL element is an error and nothing is written.
 */
Datum
jobq_dispatch_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ArrayType  *payloads;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n;
	char	   *canonical;
	char	   *queue;
	uint64		ninserted;
	bool		external;
	TimestampTz available_at;
	Datum		values[8];
	char		nulls[8];
	Oid			save_userid;
	int			save_sec;

	if (PG_ARGISNULL(MANY_ARG_JOB))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null"),
				 errhint("Name the handler: a function or procedure taking one jsonb argument.")));
	if (PG_ARGISNULL(MANY_ARG_PAYLOADS))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payloads must not be null"),
				 errhint("Pass an array of jsonb payloads, '{}' for none.")));
	payloads = PG_GETARG_ARRAYTYPE_P(MANY_ARG_PAYLOADS);
	if (ARR_NDIM(payloads) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payloads must be a one-dimensional array")));
	deconstruct_array(payloads, JSONBOID, -1, false, TYPALIGN_INT,
					  &elems, &elem_nulls, &n);
	for (int i = 0; i < n; i++)
		if (elem_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("payloads must not contain nulls"),
					 errdetail("Element %d is null.", i + 1),
					 errhint("Pass '{}' for a job without data.")));

	if (!PG_ARGISNULL(MANY_ARG_QUEUE))
		jobq_check_queue_name(text_to_cstring(PG_GETARG_TEXT_PP(MANY_ARG_QUEUE)));
	available_at = compute_available_at(!PG_ARGISNULL(MANY_ARG_DELAY),
										PG_ARGISNULL(MANY_ARG_DELAY) ? NULL :
										PG_GETARG_INTERVAL_P(MANY_ARG_DELAY),
										!PG_ARGISNULL(MANY_ARG_AVAILABLE_AT),
										PG_ARGISNULL(MANY_ARG_AVAILABLE_AT) ? 0 :
										PG_GETARG_TIMESTAMPTZ(MANY_ARG_AVAILABLE_AT));
	if (!PG_ARGISNULL(MANY_ARG_TRIES))
		jobq_check_tries(PG_GETARG_INT32(MANY_ARG_TRIES));
	if (!PG_ARGISNULL(MANY_ARG_TIMEOUT))
		jobq_check_timeout(PG_GETARG_INTERVAL_P(MANY_ARG_TIMEOUT));
	if (!PG_ARGISNULL(MANY_ARG_BACKOFF))
		jobq_check_backoff(PG_GETARG_INTERVAL_P(MANY_ARG_BACKOFF));

	/* an external job (consumer.c) has no handler to resolve */
	canonical = text_to_cstring(PG_GETARG_TEXT_PP(MANY_ARG_JOB));
	SPI_connect();
	external = (jobq_registration(canonical, NULL) == JOBQ_REGISTERED_EXTERNAL);
	SPI_finish();
	if (!external)
	{
		char	   *given = canonical;

		(void) jobq_resolve_handler(given, &canonical, true);
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (n == 0)
		return (Datum) 0;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = CStringGetTextDatum(canonical);
	values[1] = PointerGetDatum(payloads);
	values[3] = ObjectIdGetDatum(GetUserId());
	values[7] = TimestampTzGetDatum(available_at);
	{
		/* the options copied as they are: (insert argument, call argument) */
		static const int copied[][2] = {{2, MANY_ARG_QUEUE}, {4, MANY_ARG_TRIES},
		{5, MANY_ARG_TIMEOUT}, {6, MANY_ARG_BACKOFF}};

		copy_args(fcinfo, 0, copied, lengthof(copied), values, nulls);
	}

	SPI_connect();
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(jobq_extension_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	insert_many(values, nulls);
	queue = NULL;
	ninserted = SPI_processed;
	if (ninserted > 0)
	{
		SPITupleTable *tt = SPI_tuptable;
		bool		isnull;
		bool		wanted = jobq_event_wanted(JOBQ_EVENT_QUEUED);
		bool		sent = false;

		queue = SPI_getvalue(tt->vals[0], tt->tupdesc, 2);

		for (uint64 i = 0; i < ninserted; i++)
		{
			Datum		id = SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull);
			bool		id_null = false;

			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &id_null);
			if (wanted &&
				jobq_event(JOBQ_EVENT_QUEUED, DatumGetInt64(id), queue, canonical,
						   0, NULL))
				sent = true;
		}
		/* consumers wait for one of the events, or else the wake-up */
		if (!sent && external)
			jobq_notify_external(queue, canonical);
	}
	SetUserIdAndSecContext(save_userid, save_sec);
	if (queue != NULL && available_at > GetCurrentTimestamp())
		jobq_wake_delayed_at_commit(queue);
	else if (queue != NULL)
		jobq_wake_at_commit(queue, (int64) ninserted);
	SPI_finish();
	return (Datum) 0;
}

static void
sql_error_callback(void *arg)
{
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery((const char *) arg);
	}
}

/*
 * jobq.dispatch_sql(sql text, <the options of jobq.dispatch>) RETURNS
 * bigint: a queued closure.  The SQL text must parse and contain at least
 * one statement; it runs (jobq.run_sql) as the dispatching role with the
 * dispatcher's search_path.
 */
Datum
jobq_dispatch_sql(PG_FUNCTION_ARGS)
{
	char	   *sql;
	List	   *stmts;
	bool		ran_sync;
	int64		id;
	Datum		payload;
	StringInfoData buf;
	ErrorContextCallback errcb;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("sql must not be null")));
	sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	/* a syntax error points into the SQL text, not into the caller's query */
	errcb.callback = sql_error_callback;
	errcb.arg = sql;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	stmts = raw_parser(sql, RAW_PARSE_DEFAULT);
	error_context_stack = errcb.previous;
	if (stmts == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sql must contain a statement"),
				 errhint("For example jobq.dispatch_sql('DELETE FROM app.sessions WHERE expires < now()').")));

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"sql\": ");
	escape_json(&buf, sql);
	appendStringInfoString(&buf, ", \"search_path\": ");
	escape_json(&buf, namespace_search_path);
	appendStringInfoChar(&buf, '}');
	payload = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));

	id = dispatch_job(fcinfo, DISPATCH_SQL_OPTS, "jobq.run_sql", payload,
					  &ran_sync);
	if (ran_sync)
		PG_RETURN_NULL();
	PG_RETURN_INT64(id);
}

/*
 * jobq.register's arguments after the first five (job, queue, tries,
 * timeout, backoff).
 */
#define REGISTER_ARG_RETRY_FOR			5
#define REGISTER_ARG_MAX_EXCEPTIONS		6
#define REGISTER_ARG_BACKOFF_SCHEDULE	7
#define REGISTER_ARG_BACKOFF_EXPONENTIAL 8
#define REGISTER_ARG_ON_FAILURE			9
#define REGISTER_ARG_DELETE_WHEN_MISSING 10
#define REGISTER_ARG_MIDDLEWARE			11
#define REGISTER_ARG_EXTERNAL			12
#define REGISTER_NARGS					13

/*
 * jobq.register(job text, queue text, tries int, timeout interval, backoff
 *				 interval, retry_for interval, max_exceptions int,
 *				 backoff_schedule interval[], backoff_exponential boolean,
 *				 on_failure text, delete_when_missing_models boolean)
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
	Datum		values[REGISTER_NARGS + 1];
	char		nulls[REGISTER_NARGS + 1];
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
	check_backoff_options(fcinfo, 4, REGISTER_ARG_BACKOFF_SCHEDULE,
						  REGISTER_ARG_BACKOFF_EXPONENTIAL);
	if (!PG_ARGISNULL(REGISTER_ARG_RETRY_FOR))
		(void) jobq_checked_interval_ms(PG_GETARG_INTERVAL_P(REGISTER_ARG_RETRY_FOR),
								   "retry_for", 1,
								   (int64) JOBQ_MAX_DELAY_SECS * 1000);
	if (!PG_ARGISNULL(REGISTER_ARG_MAX_EXCEPTIONS))
		jobq_check_max_exceptions(PG_GETARG_INT32(REGISTER_ARG_MAX_EXCEPTIONS));
	if (!PG_ARGISNULL(REGISTER_ARG_MIDDLEWARE))
		jobq_middleware_check(PG_GETARG_JSONB_P(REGISTER_ARG_MIDDLEWARE));

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
	for (int i = 1; i < REGISTER_NARGS; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	values[REGISTER_ARG_EXTERNAL] = BoolGetDatum(external);
	nulls[REGISTER_ARG_EXTERNAL] = ' ';
	values[REGISTER_NARGS] = ObjectIdGetDatum(GetUserId());	/* registered_by */
	if (!PG_ARGISNULL(REGISTER_ARG_ON_FAILURE))
	{
		char	   *fh;

		(void) jobq_resolve_failure_handler(text_to_cstring(PG_GETARG_TEXT_PP(REGISTER_ARG_ON_FAILURE)),
											&fh);
		values[REGISTER_ARG_ON_FAILURE] = CStringGetTextDatum(fh);
	}

	if (register_plan == NULL)
	{
		Oid			types[REGISTER_NARGS + 1] = {TEXTOID, TEXTOID, INT4OID, INTERVALOID,
			INTERVALOID, INTERVALOID, INT4OID, INTERVALARRAYOID, BOOLOID, TEXTOID,
		BOOLOID, JSONBOID, BOOLOID, OIDOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("INSERT INTO jobq.handlers AS h"
						   "  (job, queue, tries, timeout, backoff, retry_for, max_exceptions,"
						   "   backoff_schedule, backoff_exponential, on_failure,"
						   "   delete_when_missing_models, middleware, external,"
						   "   registered_by, registered_at)"
						   " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
						   "         $13, $14::pg_catalog.regrole, pg_catalog.now())"
						   " ON CONFLICT (job) DO UPDATE SET"
						   "  queue = excluded.queue, tries = excluded.tries,"
						   "  timeout = excluded.timeout, backoff = excluded.backoff,"
						   "  retry_for = excluded.retry_for,"
						   "  max_exceptions = excluded.max_exceptions,"
						   "  backoff_schedule = excluded.backoff_schedule,"
						   "  backoff_exponential = excluded.backoff_exponential,"
						   "  on_failure = excluded.on_failure,"
						   "  delete_when_missing_models = excluded.delete_when_missing_models,"
						   "  middleware = excluded.middleware,"
						   "  registered_at = excluded.registered_at,"
						   "  external = excluded.external,"
						   "  registered_by = CASE WHEN h.external AND excluded.external"
						   "    THEN h.registered_by ELSE excluded.registered_by END",
						   REGISTER_NARGS + 1, types);
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
