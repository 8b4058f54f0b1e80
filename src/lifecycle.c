/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *		The running job as its handler sees it, and the rule that decides
 *		whether a job is attempted again.
 *
 * While a handler (or a failure handler, or a job run synchronously) runs,
 * execute.c pushes a JobqContext here.  jobq.current_job() reads it;
 * jobq.release() and jobq.fail() only record a request in it, which the
 * caller carries out when the handler returns (complete.c), so that the
 * outcome is written in one place, in the transaction of the attempt.
 *
 * The retry rule (README "Deadlines, tries and exceptions") is
 * jobq_may_try_again(); every path that ends an attempt without success
 * (error, timeout, release, a worker lost, see reserve.c) goes through it.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/lifecycle.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_release_current);
PG_FUNCTION_INFO_V1(jobq_fail_current);
PG_FUNCTION_INFO_V1(jobq_current_job);

/* innermost running job of this process, NULL outside any */
static JobqContext *current_ctx = NULL;

void
jobq_context_push(JobqContext *ctx, JobqJob *job, bool failure_handler)
{
	memset(ctx, 0, sizeof(JobqContext));
	ctx->job = job;
	ctx->failure_handler = failure_handler;
	ctx->started_at = GetCurrentTimestamp();
	ctx->outer = current_ctx;
	current_ctx = ctx;
}

void
jobq_context_pop(JobqContext *ctx)
{
	current_ctx = ctx->outer;
}

static JobqContext *
running_context(const char *fn, bool allow_failure_handler)
{
	if (current_ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s can only be called while a job runs", fn),
				 errhint("Call it from a job handler run by a jobq worker, jobq.work() or jobq.dispatch_now().")));
	if (current_ctx->failure_handler && !allow_failure_handler)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s cannot be called from a failure handler", fn),
				 errdetail("The job has already failed for good.")));
	return current_ctx;
}

/*
 * jobq.release(delay interval DEFAULT '0'): when the handler returns, put
 * the job back on its queue, available after the delay.  The attempt stays
 * counted; the retry rule still applies (a release on the last try fails
 * the job).  The last request made wins.
 */
Datum
jobq_release_current(PG_FUNCTION_ARGS)
{
	JobqContext *ctx = running_context("jobq.release()", false);
	Interval   *delay = PG_GETARG_INTERVAL_P(0);
	int64		ms = jobq_interval_ms(delay);

	if (ms < 0 || ms > (int64) JOBQ_MAX_DELAY_SECS * 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("release delay %s is out of range",
						DatumGetCString(DirectFunctionCall1(interval_out,
															IntervalPGetDatum(delay)))),
				 errdetail("It must be between 0 and %d days.",
						   JOBQ_MAX_DELAY_SECS / SECS_PER_DAY)));
	if (ctx->job->sync)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a job run synchronously cannot be released"),
				 errhint("Dispatch it to a queue to be able to release it.")));
	ctx->request = JOBQ_REQUEST_RELEASE;
	ctx->release_ms = ms;
	PG_RETURN_VOID();
}

/*
 * jobq.fail(message text): when the handler returns, fail the job for good
 * (no retry), recording the message.  In a job run synchronously the error
 * is raised at once and propagates to the caller.
 */
Datum
jobq_fail_current(PG_FUNCTION_ARGS)
{
	JobqContext *ctx = running_context("jobq.fail()", false);
	char	   *message = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (ctx->job->sync)
		ereport(ERROR,
				(errcode(ERRCODE_JOBQ_FAILED_BY_HANDLER),
				 errmsg("%s", message),
				 errdetail("The job called jobq.fail().")));
	/* kept beyond the job's memory: the request is read after it returns */
	if (ctx->fail_message)
		pfree(ctx->fail_message);
	ctx->fail_message = MemoryContextStrdup(TopTransactionContext, message);
	ctx->request = JOBQ_REQUEST_FAIL;
	PG_RETURN_VOID();
}

static void
json_key(StringInfo buf, const char *key)
{
	if (buf->len > 1)
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
}

static void
json_time(StringInfo buf, const char *key, TimestampTz t)
{
	json_key(buf, key);
	if (t == 0)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, timestamptz_to_str(t));
}

/*
 * jobq.current_job() RETURNS jsonb: the running job, as its handler sees it.
 */
Datum
jobq_current_job(PG_FUNCTION_ARGS)
{
	JobqContext *ctx = running_context("jobq.current_job()", true);
	JobqJob    *job = ctx->job;
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	json_key(&buf, "id");
	if (job->sync)
		appendStringInfoString(&buf, "null");
	else
		appendStringInfo(&buf, INT64_FORMAT, job->id);
	json_key(&buf, "queue");
	if (job->sync)
		appendStringInfoString(&buf, "null");
	else
		escape_json(&buf, job->queue);
	json_key(&buf, "job");
	escape_json(&buf, job->job);
	json_key(&buf, "connection");
	escape_json(&buf, job->sync ? "sync" : "database");
	json_key(&buf, "attempt");
	appendStringInfo(&buf, "%d", job->attempts);
	json_key(&buf, "tries");
	appendStringInfo(&buf, "%d", job->tries);
	json_key(&buf, "exceptions");
	appendStringInfo(&buf, "%d", job->exceptions);
	json_key(&buf, "max_exceptions");
	if (job->max_exceptions > 0)
		appendStringInfo(&buf, "%d", job->max_exceptions);
	else
		appendStringInfoString(&buf, "null");
	json_time(&buf, "retry_until", job->retry_until);
	json_time(&buf, "dispatched_at", job->created_at);
	json_time(&buf, "started_at", job->reserved_at ? job->reserved_at : ctx->started_at);
	json_key(&buf, "failure_handler");
	appendStringInfoString(&buf, ctx->failure_handler ? "true" : "false");
	appendStringInfoChar(&buf, '}');

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/* ---- the retry rule ---- */

/*
 * May a job whose attempt just ended without success be attempted again,
 * delay_ms from now?  is_exception: the attempt failed (error, timeout,
 * worker lost), as opposed to a release.  The one rule, in this order:
 *
 *	1. max_exceptions (if set): an attempt that fails as the
 *	   max_exceptions-th failed attempt ends the job;
 *	2. retry_until (if set): the job is attempted again only if the next
 *	   attempt can start before it; tries is then ignored;
 *	3. otherwise tries: again only while attempts < tries (0 = unlimited).
 *
 * jobq.fail() and missing models (P0002) end a job before this is asked.
 */
bool
jobq_may_try_again(const JobqJob *job, int64 delay_ms, bool is_exception)
{
	/* the attempt counter cannot grow further */
	if (job->attempts >= PG_INT32_MAX)
		return false;
	if (is_exception && job->max_exceptions > 0 &&
		job->exceptions + 1 >= job->max_exceptions)
		return false;
	if (job->retry_until != 0)
		return GetCurrentTimestamp() + delay_ms * 1000 < job->retry_until;
	return job->tries == 0 || job->attempts < job->tries;
}

/*
 * Before running a reserved job: may this attempt run at all?  A job that
 * already passed its retry_until, or (without retry_until) was reserved
 * more times than its tries, fails without running; *err says why.
 */
bool
jobq_precheck(const JobqJob *job, JobqError *err)
{
	memset(err, 0, sizeof(JobqError));
	strlcpy(err->sqlstate, "JQ002", sizeof(err->sqlstate));
	if (job->retry_until != 0)
	{
		if (GetCurrentTimestamp() < job->retry_until &&
			job->attempts < PG_INT32_MAX)
			return true;
		err->message = psprintf("job %lld passed its retry_until (%s) before attempt %d",
								(long long) job->id,
								timestamptz_to_str(job->retry_until),
								job->attempts);
		return false;
	}
	if (job->attempts >= PG_INT32_MAX)
	{
		err->message = psprintf("job %lld has used up its attempt counter (%d)",
								(long long) job->id, job->attempts);
		return false;
	}
	if (job->tries > 0 && job->attempts > job->tries)
	{
		err->message = psprintf("job %lld has been attempted too many times (%d of %d)",
								(long long) job->id, job->attempts, job->tries);
		return false;
	}
	return true;
}

/*
 * The wait before the next attempt after a failed one: the
 * backoff_schedule's entry for this attempt (the last one repeating), else
 * with backoff_exponential the backoff doubled for every attempt after the
 * first, capped at one day, with "equal jitter" (a random time between half
 * of it and all of it), else the backoff.
 */
int64
jobq_backoff_for(const JobqJob *job)
{
	int			n = Max(job->attempts, 1);

	if (job->nbackoff_steps > 0)
		return job->backoff_steps[Min(n, job->nbackoff_steps) - 1];
	if (job->backoff_exponential && job->backoff_ms > 0)
	{
		int64		d = job->backoff_ms;

		for (int i = 1; i < n && d < JOBQ_MAX_EXP_BACKOFF_MS; i++)
			d *= 2;
		d = Min(d, JOBQ_MAX_EXP_BACKOFF_MS);
		return d / 2 + (int64) (pg_prng_double(&pg_global_prng_state) * (d - d / 2));
	}
	return job->backoff_ms;
}

/*
 * An error as jsonb: {"sqlstate", "message", "detail", "hint", "context"},
 * absent parts left out.  The argument a failure handler receives.
 */
Jsonb *
jobq_error_jsonb(const JobqError *err)
{
	const char *keys[5] = {"sqlstate", "message", "detail", "hint", "context"};
	const char *parts[5] = {err->sqlstate, err->message, err->detail,
	err->hint, err->context};
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < 5; i++)
	{
		if (parts[i] == NULL || parts[i][0] == '\0')
			continue;
		json_key(&buf, keys[i]);
		escape_json(&buf, parts[i]);
	}
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
