/*-------------------------------------------------------------------------
 *
 * sync.c
 *		Jobs run synchronously: jobq.dispatch_now() and jobq.dispatch(...,
 *		connection => 'sync').
 *
 * The handler runs at once in the caller's transaction, as the calling
 * role in a security-restricted context (like a queued job), under the
 * job's timeout, with jobq.current_job() answering.  Nothing is written to
 * jobq's tables: the handler's error propagates to the caller, whose
 * transaction decides.
 *
 * The timeout is a timeout of our own (not statement_timeout, which the
 * caller may be using); when it fires, the handler is cancelled and the
 * cancel is reported as "job timed out".
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/sync.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_dispatch_now);

static TimeoutId sync_timeout = MAX_TIMEOUTS;
static volatile sig_atomic_t sync_timed_out = false;

static void
sync_timeout_handler(void)
{
	sync_timed_out = true;
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/* the registered timeout of a handler, or -1 if none */
static int64
registered_timeout_ms(const char *job)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	int64		ms = -1;
	Oid			save_userid;
	int			save_sec;

	values[0] = CStringGetTextDatum(job);
	SPI_connect();
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(jobq_extension_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_execute_with_args("SELECT timeout FROM jobq.handlers"
							  " WHERE job OPERATOR(pg_catalog.=) $1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not read the handler's defaults");
	SetUserIdAndSecContext(save_userid, save_sec);
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			ms = jobq_interval_ms(DatumGetIntervalP(d));
	}
	SPI_finish();
	return ms;
}

/*
 * Run the handler fnoid (stored name job) with payload now.  timeout: the
 * call's, or NULL for the registered one, else jobq.timeout.
 */
void
jobq_dispatch_sync(const char *job, Oid fnoid, Datum payload, Interval *timeout)
{
	JobqJob		j;
	JobqContext ctx;
	FmgrInfo	flinfo;
	Oid			save_userid;
	int			save_sec;
	volatile bool armed = false;
	MemoryContext cxt = CurrentMemoryContext;
	int64		timeout_ms;

	timeout_ms = timeout ? jobq_interval_ms(timeout) : registered_timeout_ms(job);
	if (timeout_ms < 0)
		timeout_ms = jobq_timeout_ms;

	memset(&j, 0, sizeof(j));
	j.job = (char *) job;
	j.payload = DatumGetJsonbP(payload);
	j.owner = GetUserId();
	j.attempts = 1;
	j.tries = 1;
	j.timeout_ms = (int32) Min(timeout_ms, JOBQ_MAX_TIMEOUT_MS);
	j.sync = true;
	j.created_at = GetCurrentTimestamp();
	j.reserved_at = j.created_at;

	if (sync_timeout == MAX_TIMEOUTS)
		sync_timeout = RegisterTimeout(USER_TIMEOUT, sync_timeout_handler);

	fmgr_info(fnoid, &flinfo);
	GetUserIdAndSecContext(&save_userid, &save_sec);
	jobq_context_push(&ctx, &j, false);
	sync_timed_out = false;

	PG_TRY();
	{
		int			gucnest;

		LOCAL_FCINFO(fcinfo, 1);

		SetUserIdAndSecContext(save_userid,
							   save_sec | SECURITY_RESTRICTED_OPERATION);
		gucnest = NewGUCNestLevel();
		if (j.timeout_ms > 0)
		{
			enable_timeout_after(sync_timeout, j.timeout_ms);
			armed = true;
		}
		InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = payload;
		fcinfo->args[0].isnull = false;
		(void) FunctionCallInvoke(fcinfo);
		if (armed)
			disable_timeout(sync_timeout, false);
		armed = false;
		AtEOXact_GUC(false, gucnest);
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	PG_CATCH();
	{
		if (armed)
			disable_timeout(sync_timeout, false);
		jobq_context_pop(&ctx);
		if (sync_timed_out)
		{
			ErrorData  *edata;

			sync_timed_out = false;
			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			{
				FlushErrorState();
				ereport(ERROR,
						(errcode(ERRCODE_QUERY_CANCELED),
						 errmsg("job timed out after %d ms", j.timeout_ms),
						 errdetail("The job %s was run synchronously.", job)));
			}
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
	jobq_context_pop(&ctx);
}

/*
 * jobq.dispatch_now(job text, payload jsonb DEFAULT '{}'): run the handler
 * now, in this transaction.
 */
Datum
jobq_dispatch_now(PG_FUNCTION_ARGS)
{
	char	   *canonical;
	Oid			fnoid;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null"),
				 errhint("Pass '{}' for a job without data.")));
	fnoid = jobq_resolve_handler(text_to_cstring(PG_GETARG_TEXT_PP(0)),
								 &canonical, true);
	jobq_dispatch_sync(canonical, fnoid, PG_GETARG_DATUM(1), NULL);
	PG_RETURN_VOID();
}
