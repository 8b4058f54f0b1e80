/*-------------------------------------------------------------------------
 *
 * execute.c
 *		Running a reserved batch of jobs.
 *
 * A batch runs in one transaction (or a few, see below) that first locks
 * the batch's rows FOR UPDATE and keeps them locked for the whole attempt.
 * Each job runs in its own subtransaction:
 *
 *	- as the role that dispatched it, in a security-restricted context, so
 *	  it cannot SET ROLE back to the worker's role or create temporary
 *	  objects that would outlive it;
 *	- with its own GUC nesting level, so SET inside a job does not leak
 *	  into the next one;
 *	- under its timeout, armed here because the statement_timeout GUC is
 *	  not enforced in background workers.
 *
 * A job that fails rolls back alone; its failure (retry with backoff, or
 * move to the failed store) is written in the same outer transaction, so a
 * job's effects and its completion commit together or not at all.
 *
 * How long finished jobs wait for their commit is bounded: before starting
 * the next job, the transaction is committed if it is older than
 * jobq.batch_time, or if the next handler is expected to be slow (its
 * moving average run time, or unknown).  A slow job also hands the rest of
 * its batch back (attempts refunded) so that other workers can take them.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/execute.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "jobq.h"

/* a handler whose average run time exceeds this runs alone */
#define JOBQ_SLOW_HANDLER_MS 1.0
/* longest text kept of each part of an error */
#define JOBQ_MAX_ERROR_TEXT 4000

/* true while a handler runs: SIGTERM then cancels it (worker.c) */
volatile sig_atomic_t jobq_in_handler = false;

static SPIPlanPtr relock_plan = NULL;

typedef enum JobOutcome
{
	OUTCOME_DONE,				/* handler returned */
	OUTCOME_ERROR,				/* handler raised an error */
	OUTCOME_STOPPED,			/* middleware did not let it run */
	OUTCOME_INTERRUPTED			/* cancelled by a server shutdown */
} JobOutcome;

/*
 * Copy a piece of error text, cut to a bounded length and made valid in the
 * database encoding, so that recording the failure can never fail.
 */
static char *
clean_error_text(const char *s)
{
	char	   *copy;
	int			len;

	if (s == NULL)
		return NULL;
	len = strlen(s);
	if (len > JOBQ_MAX_ERROR_TEXT)
		len = pg_mbcliplen(s, len, JOBQ_MAX_ERROR_TEXT);
	copy = pnstrdup(s, len);
	/* replace whatever does not verify, byte by byte */
	for (int i = 0; i < len;)
	{
		int			l = pg_encoding_verifymbchar(GetDatabaseEncoding(),
												 copy + i, len - i);

		if (l <= 0)
		{
			copy[i] = '?';
			l = 1;
		}
		i += l;
	}
	return copy;
}

static void
error_from_edata(JobqError *err, ErrorData *edata)
{
	memset(err, 0, sizeof(JobqError));
	strlcpy(err->sqlstate, unpack_sql_state(edata->sqlerrcode),
			sizeof(err->sqlstate));
	err->message = clean_error_text(edata->message);
	err->detail = clean_error_text(edata->detail);
	err->hint = clean_error_text(edata->hint);
	err->context = clean_error_text(edata->context);
}

/*
 * Check, as the worker, that the job's owner still exists and may execute
 * the handler.  The answer is cached per handler and role; the cache is
 * flushed on any change to pg_proc or roles (handler.c).
 */
static void
check_owner_can_run(JobqJob *job)
{
	JobqHandler *h = job->handler;

	if (h->acl_role == job->owner && h->acl_ok)
		return;
	h->acl_role = InvalidOid;
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(job->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role %u that dispatched job %lld no longer exists",
						job->owner, (long long) job->id)));
	if (pg_proc_aclcheck(h->fn_oid, job->owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for job handler %s", job->job),
				 errdetail("Role %s no longer has EXECUTE on it.",
						   GetUserNameFromId(job->owner, false))));
	h->acl_role = job->owner;
	h->acl_ok = true;
}

/*
 * Run one job's handler in a subtransaction.  On error, fills *err and
 * rolls the subtransaction back; the outer transaction stays usable.
 */
static JobOutcome
run_one(JobqRunner *runner, JobqJob *job, JobqError *err,
		MemoryContext job_cxt, bool *timed_out)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec;
	uint32		save_cancel_holdoff = QueryCancelHoldoffCount;
	volatile TimestampTz started = GetCurrentTimestamp();
	volatile JobOutcome outcome = OUTCOME_DONE;

	*timed_out = false;
	GetUserIdAndSecContext(&save_userid, &save_sec);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(job_cxt);

	PG_TRY();
	{
		JobqHandler *h = job->handler;
		int			gucnest;
		LOCAL_FCINFO(fcinfo, 1);

		jobq_handler_resolve(h);
		if (!OidIsValid(h->fn_oid))
			ereport(ERROR,
					(errcode(ERRCODE_JOBQ_HANDLER_MISSING),
					 errmsg("job handler %s(jsonb) does not exist", job->job),
					 errhint("It was dropped or renamed after the job was dispatched.")));
		check_owner_can_run(job);

		SetUserIdAndSecContext(job->owner,
							   save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		gucnest = NewGUCNestLevel();
		PushActiveSnapshot(GetTransactionSnapshot());

		InitFunctionCallInfoData(*fcinfo, &h->flinfo, 1, InvalidOid,
								 NULL, NULL);
		fcinfo->args[0].value = PointerGetDatum(job->payload);
		fcinfo->args[0].isnull = false;

		/* a cancel that arrived between jobs is not meant for this one */
		QueryCancelPending = false;
		if (job->timeout_ms > 0)
			enable_timeout_after(STATEMENT_TIMEOUT, job->timeout_ms);
		jobq_in_handler = true;
		QueryCancelHoldoffCount = 0;

		/* middleware (middleware.c) may stop the job before its handler */
		jobq_middleware_run(job, &job->decision);
		if (job->decision.action == JOBQ_MW_RUN)
			(void) FunctionCallInvoke(fcinfo);
		else
			outcome = OUTCOME_STOPPED;

		QueryCancelHoldoffCount = save_cancel_holdoff;
		jobq_in_handler = false;
		if (job->timeout_ms > 0)
			disable_timeout(STATEMENT_TIMEOUT, false);
		/* the handler finished: a cancel or timeout now is too late */
		QueryCancelPending = false;

		PopActiveSnapshot();
		AtEOXact_GUC(false, gucnest);
		SetUserIdAndSecContext(save_userid, save_sec);
		if (outcome == OUTCOME_STOPPED)
			RollbackAndReleaseCurrentSubTransaction();	/* frees its slots */
		else
			ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		QueryCancelHoldoffCount = save_cancel_holdoff;
		jobq_in_handler = false;
		if (job->timeout_ms > 0)
			disable_timeout(STATEMENT_TIMEOUT, false);

		MemoryContextSwitchTo(job_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		QueryCancelPending = false;

		error_from_edata(err, edata);
		outcome = OUTCOME_ERROR;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		{
			if (job->timeout_ms > 0 &&
				TimestampDifferenceExceeds(started, GetCurrentTimestamp(),
										   job->timeout_ms - 1))
			{
				*timed_out = true;
				err->message = psprintf("job timed out after %d ms", job->timeout_ms);
				err->detail = clean_error_text(edata->message);
			}
			else if (runner->stop_is_shutdown && *runner->stop_is_shutdown)
				outcome = OUTCOME_INTERRUPTED;
			else if (runner->stop_requested && *runner->stop_requested)
			{
				/* pg_terminate_backend: a failed attempt, saying so */
				strlcpy(err->sqlstate, "57P01", sizeof(err->sqlstate));
				err->message = "the worker was terminated while running the job";
				err->detail = clean_error_text(edata->message);
			}
			else if (runner->in_procedure)
			{
				/* the caller of jobq.work() cancelled: stop after this */
				runner->cancelled = true;
			}
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();

	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;

	/* learn how long this handler takes */
	if (outcome != OUTCOME_STOPPED)
	{
		long		secs;
		int			usecs;
		double		ms;
		JobqHandler *h = job->handler;

		TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
		ms = secs * 1000.0 + usecs / 1000.0;
		h->avg_ms = (h->avg_ms < 0) ? ms : 0.8 * h->avg_ms + 0.2 * ms;
	}
	return outcome;
}

/*
 * Lock the batch's rows that are still ours, for the rest of the attempt.
 * Marks the jobs that disappeared (cancelled by an administrator, say) as
 * finished so they are skipped.
 */
static void
relock_jobs(int64 token, JobqJob *jobs, int from, int to)
{
	Datum	   *elems;
	Datum		values[2];
	int			n = 0;

	if (relock_plan == NULL)
	{
		Oid			types[2] = {INT8ARRAYOID, INT8OID};

		relock_plan = SPI_prepare("SELECT id FROM jobq.jobs"
								  " WHERE id OPERATOR(pg_catalog.=) ANY ($1)"
								  "   AND reserved_by OPERATOR(pg_catalog.=) $2"
								  " ORDER BY id FOR UPDATE",
								  2, types);
		if (relock_plan == NULL)
			elog(ERROR, "jobq: SPI_prepare failed");
		SPI_keepplan(relock_plan);
	}

	elems = palloc(sizeof(Datum) * (to - from));
	for (int i = from; i < to; i++)
		if (!jobs[i].finished)
			elems[n++] = Int64GetDatum(jobs[i].id);
	if (n == 0)
		return;
	values[0] = PointerGetDatum(construct_array(elems, n, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = Int64GetDatum(token);
	if (SPI_execute_plan(relock_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not lock reserved jobs");
	if (SPI_processed < (uint64) n)
	{
		/* some are gone: keep only those returned */
		for (int i = from; i < to; i++)
		{
			bool		present = false;

			if (jobs[i].finished)
				continue;
			for (uint64 k = 0; k < SPI_processed; k++)
			{
				bool		isnull;

				if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k],
												SPI_tuptable->tupdesc, 1,
												&isnull)) == jobs[i].id)
				{
					present = true;
					break;
				}
			}
			if (!present)
				jobs[i].finished = true;
		}
	}
	SPI_freetuptable(SPI_tuptable);
	pfree(elems);
}

/*
 * Record the failure of an attempt: retry after the backoff while tries
 * remain (tries = 0: unlimited), else move the job to the failed store.
 */
static void
record_failure(JobqRunner *runner, JobqJob *job, JobqError *err)
{
	if (job->tries == 0 || job->attempts < job->tries)
		jobq_retry_job(job->id, job->backoff_ms, err);
	else
		jobq_fail_job(job->id, err);
	jobq_slot_count(runner->slot, false);
}

/*
 * Run a reserved batch.  The reservation has committed; each execution
 * transaction is begun and committed here.
 */
void
jobq_execute_batch(JobqRunner *runner, JobqJob *jobs, int njobs)
{
	MemoryContext job_cxt;
	int64	   *done_ids;
	int			i = 0;

	job_cxt = AllocSetContextCreate(CurrentMemoryContext, "jobq job",
									ALLOCSET_DEFAULT_SIZES);
	done_ids = palloc(sizeof(int64) * njobs);

	while (i < njobs)
	{
		int			ndone = 0;
		int			first = i;
		TimestampTz txn_start;

		jobq_runner_begin(runner);
		relock_jobs(runner->token, jobs, i, njobs);
		txn_start = GetCurrentTimestamp();

		for (; i < njobs; i++)
		{
			JobqJob    *job = &jobs[i];
			JobqError	err;
			bool		timed_out;
			bool		slow;
			JobOutcome	outcome;

			if (job->finished)
				continue;

			/* told to stop: hand back what has not started */
			if (jobq_runner_should_stop(runner))
			{
				jobq_unreserve(runner->token, &jobs[i], njobs - i, true);
				for (int k = i; k < njobs; k++)
					jobs[k].finished = true;
				i = njobs;
				break;
			}

			job->handler = jobq_handler_get(job->job);
			slow = job->handler->avg_ms < 0 ||
				job->handler->avg_ms > JOBQ_SLOW_HANDLER_MS;

			/* commit what is done before a slow job, or when it is time */
			if (i > first &&
				(slow || TimestampDifferenceExceeds(txn_start, GetCurrentTimestamp(),
													jobq_batch_time_ms)))
				break;

			/* the rest must not wait behind a slow job: give it back */
			if (slow && i + 1 < njobs)
			{
				jobq_unreserve(runner->token, &jobs[i + 1], njobs - i - 1, true);
				njobs = i + 1;
			}

			job->finished = true;

			/* attempts already beyond tries: fail without running */
			if (job->tries > 0 && job->attempts > job->tries)
			{
				memset(&err, 0, sizeof(err));
				strlcpy(err.sqlstate, "JQ002", sizeof(err.sqlstate));
				err.message = psprintf("job %lld has been attempted too many times (%d of %d)",
									   (long long) job->id, job->attempts, job->tries);
				jobq_fail_job(job->id, &err);
				jobq_slot_count(runner->slot, false);
				continue;
			}

			jobq_slot_set_job(runner->slot, job->id);
			if (!runner->in_procedure)
			{
				char		activity[300];

				snprintf(activity, sizeof(activity), "jobq job %lld: %s",
						 (long long) job->id, job->job);
				pgstat_report_activity(STATE_RUNNING, activity);
			}
			outcome = run_one(runner, job, &err, job_cxt, &timed_out);
			jobq_slot_set_job(runner->slot, 0);
			runner->jobs_run++;

			switch (outcome)
			{
				case OUTCOME_DONE:
					done_ids[ndone++] = job->id;
					jobq_slot_count(runner->slot, true);
					break;
				case OUTCOME_ERROR:
					if (timed_out && job->tries > 0 && job->attempts >= job->tries)
						err.hint = "Raise the job's timeout, or make the handler faster.";
					record_failure(runner, job, &err);
					break;
				case OUTCOME_STOPPED:
					jobq_complete_stopped(runner->token, job);
					break;
				case OUTCOME_INTERRUPTED:
					/* not the job's fault: take the attempt back */
					jobq_unreserve(runner->token, job, 1, true);
					break;
			}
			MemoryContextReset(job_cxt);
		}

		jobq_complete_jobs(runner->token, done_ids, ndone);
		jobq_runner_commit(runner);
	}

	MemoryContextDelete(job_cxt);
	pfree(done_ids);
}
