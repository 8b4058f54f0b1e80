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
 *	  not enforced in background workers.  The timer is the one of
 *	  statement_timeout: what it was set to before (the statement of a
 *	  client session, or the job of an outer handler) is put back when the
 *	  handler returns, and an earlier outer deadline is never extended
 *	  (TimerSave).
 *
 * A job that fails rolls back alone; its failure (retry with backoff, or
 * move to the failed store) is written in the same outer transaction, so a
 * job's effects and its completion commit together or not at all.  What
 * the handler asked for (jobq.release(), jobq.fail(), see lifecycle.c) is
 * carried out when it returns (record_outcome), and a job's failure handler
 * runs the same way as its handler, in a subtransaction of the transaction
 * that records the failure (jobq_run_failure_handler, from complete.c).
 *
 * How long finished jobs wait for their commit is bounded: before starting
 * the next job, the transaction is committed if it is older than
 * jobq.batch_time, or if the next handler is expected to be slow (its
 * moving average run time, or unknown).  A slow job also hands the rest of
 * its batch back (attempts refunded) so that other workers can take them.
 *
 * The transaction that ends a batch also reserves the next one while the
 * worker is busy (jobq_runner_reserve_next, runner.c): its commit makes the
 * next attempts durable before their handlers run, as a reservation
 * transaction of its own would, with one commit less per batch.
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
 * The STATEMENT_TIMEOUT timer as it was before a handler took it: a client
 * session's statement_timeout (jobq.fail() of a consumer running a failure
 * handler), or the timeout of an outer handler that acts as a consumer.
 */
typedef struct TimerSave
{
	bool		active;			/* it was running */
	TimestampTz fin;			/* ... until then */
} TimerSave;

static void
timer_save(TimerSave *save)
{
	save->active = get_timeout_active(STATEMENT_TIMEOUT);
	save->fin = save->active ? get_timeout_finish_time(STATEMENT_TIMEOUT) : 0;
}

/*
 * Arm the job's timeout on STATEMENT_TIMEOUT, unless the saved deadline
 * comes first: then that one stays, and cancels the handler when reached.
 */
static void
timer_arm(const TimerSave *save, int32 timeout_ms)
{
	TimestampTz fin;

	if (timeout_ms <= 0)
		return;
	fin = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	if (!save->active || fin < save->fin)
		enable_timeout_at(STATEMENT_TIMEOUT, fin);
}

/*
 * Put the timer back as timer_arm() found it, once the caller has disabled
 * it.  A saved deadline that has passed meanwhile (it may have cancelled
 * the handler, a cancel then caught as the handler's error) fires again at
 * once, so that the statement or job it belongs to is still cancelled;
 * unless !refire: then the caller sees to it.  Returns true if the saved
 * deadline has passed.
 */
static bool
timer_restore(const TimerSave *save, bool refire)
{
	bool		passed;

	if (!save->active)
		return false;
	passed = save->fin <= GetCurrentTimestamp();
	if (!passed || refire)
		enable_timeout_at(STATEMENT_TIMEOUT, save->fin);
	return passed;
}

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

void
jobq_error_from_edata(JobqError *err, ErrorData *edata)
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
check_owner_can_run(JobqJob *job, JobqHandler *h)
{
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
				 errmsg("permission denied for %s %s",
						h->key.nargs == 1 ? "job handler" : "failure handler",
						h->key.name),
				 errdetail("Role %s no longer has EXECUTE on it.",
						   GetUserNameFromId(job->owner, false))));
	h->acl_role = job->owner;
	h->acl_ok = true;
}

/*
 * Call a job's handler (h = job->handler, args: the payload) or its failure
 * handler (args: payload, error) in a subtransaction, as the job's owner,
 * under its timeout, with *ctx as the running job's context.  On error,
 * fills *err and rolls the subtransaction back; the outer transaction stays
 * usable.  runner is NULL for a failure handler run by recovery.
 */
static JobOutcome
invoke(JobqRunner *runner, JobqJob *job, JobqHandler *h, Datum *args,
	   JobqContext *ctx, JobqError *err, MemoryContext job_cxt,
	   bool *timed_out)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec;
	uint32		save_cancel_holdoff = QueryCancelHoldoffCount;
	volatile TimestampTz started = GetCurrentTimestamp();
	volatile JobOutcome outcome = OUTCOME_DONE;
	int			nargs = h->key.nargs;
	TimerSave	timer;
	volatile bool outer_expired = false;
	bool		in_work = runner != NULL && runner->in_procedure;

	*timed_out = false;
	timer_save(&timer);
	GetUserIdAndSecContext(&save_userid, &save_sec);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(job_cxt);
	jobq_context_push(ctx, job, nargs == 2);

	PG_TRY();
	{
		int			gucnest;
		LOCAL_FCINFO(fcinfo, 2);

		jobq_handler_resolve(h);
		if (!OidIsValid(h->fn_oid))
			ereport(ERROR,
					(errcode(ERRCODE_JOBQ_HANDLER_MISSING),
					 nargs == 1 ?
					 errmsg("job handler %s(jsonb) does not exist", job->job) :
					 errmsg("failure handler %s(jsonb, jsonb) does not exist",
							job->on_failure),
					 errhint("It was dropped or renamed after the job was dispatched.")));
		check_owner_can_run(job, h);

		SetUserIdAndSecContext(job->owner,
							   save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		gucnest = NewGUCNestLevel();
		PushActiveSnapshot(GetTransactionSnapshot());

		InitFunctionCallInfoData(*fcinfo, &h->flinfo, nargs, InvalidOid,
								 NULL, NULL);
		for (int i = 0; i < nargs; i++)
		{
			fcinfo->args[i].value = args[i];
			fcinfo->args[i].isnull = false;
		}

		/* a cancel that arrived between jobs is not meant for this one */
		QueryCancelPending = false;
		timer_arm(&timer, job->timeout_ms);
		jobq_in_handler = true;
		QueryCancelHoldoffCount = 0;

		/*
		 * Middleware (middleware.c) may stop the job before its handler; a
		 * failure handler (two arguments) runs without it.
		 */
		if (nargs == 1)
			jobq_middleware_run(job, &job->decision);
		if (nargs != 1 || job->decision.action == JOBQ_MW_RUN)
			(void) FunctionCallInvoke(fcinfo);
		else
			outcome = OUTCOME_STOPPED;

		QueryCancelHoldoffCount = save_cancel_holdoff;
		jobq_in_handler = false;
		disable_timeout(STATEMENT_TIMEOUT, false);
		/* the handler finished: a cancel or timeout now is too late */
		QueryCancelPending = false;
		outer_expired = timer_restore(&timer, !in_work);

		PopActiveSnapshot();
		AtEOXact_GUC(false, gucnest);
		SetUserIdAndSecContext(save_userid, save_sec);
		if (outcome == OUTCOME_STOPPED)
			RollbackAndReleaseCurrentSubTransaction();	/* frees its slots */
		else
			ReleaseCurrentSubTransaction();
		jobq_context_pop(ctx);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		jobq_context_pop(ctx);
		QueryCancelHoldoffCount = save_cancel_holdoff;
		jobq_in_handler = false;
		disable_timeout(STATEMENT_TIMEOUT, false);

		MemoryContextSwitchTo(job_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		QueryCancelPending = false;
		outer_expired = timer_restore(&timer, !in_work);

		jobq_error_from_edata(err, edata);
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
			else if (runner == NULL)
			{
				/* a failure handler: its error is kept, whatever the cause */
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

	/*
	 * The statement timeout of CALL jobq.work() passed while the job ran:
	 * record the attempt, then stop with that error (work.c).
	 */
	if (outer_expired && in_work)
	{
		runner->cancelled = true;
		runner->statement_timed_out = true;
	}

	/* learn how long this handler takes */
	if (outcome != OUTCOME_STOPPED)
	{
		long		secs;
		int			usecs;
		double		ms;

		TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
		ms = secs * 1000.0 + usecs / 1000.0;
		h->avg_ms = (h->avg_ms < 0) ? ms : 0.8 * h->avg_ms + 0.2 * ms;
	}
	return outcome;
}

/*
 * Is this handler expected to be slow (or unknown)?  A slow job is committed
 * apart from the others, and the jobs after it in its batch are handed back
 * (jobq_execute_batch).
 */
bool
jobq_handler_is_slow(const JobqHandler *h)
{
	return h->avg_ms < 0 || h->avg_ms > JOBQ_SLOW_HANDLER_MS;
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

		relock_plan = jobq_prepare_kept_generic("SELECT id FROM jobq.jobs"
												" WHERE id OPERATOR(pg_catalog.=) ANY ($1)"
												"   AND reserved_by OPERATOR(pg_catalog.=) $2"
												" ORDER BY id FOR UPDATE",
												2, types);
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
	if (jobq_execute_indexed(relock_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not lock reserved jobs");
	if (SPI_processed < (uint64) n)
	{
		/* some are gone: keep only those returned */
		for (int i = from; i < to; i++)
		{
			if (jobs[i].finished)
				continue;
			if (!jobq_spi_result_has_id(jobs[i].id))
				jobs[i].finished = true;
		}
	}
	SPI_freetuptable(SPI_tuptable);
	pfree(elems);
}

/*
 * Run one job's handler; see invoke().  *ctx returns what the handler
 * asked for (jobq.release(), jobq.fail()).
 */
static JobOutcome
run_one(JobqRunner *runner, JobqJob *job, JobqContext *ctx, JobqError *err,
		MemoryContext job_cxt, bool *timed_out)
{
	Datum		args[1];

	args[0] = PointerGetDatum(job->payload);
	return invoke(runner, job, job->handler, args, ctx, err, job_cxt,
				  timed_out);
}

/*
 * Run a job's failure handler, fn(payload jsonb, error jsonb), as the job's
 * owner in a subtransaction of the transaction that records the failure
 * (complete.c).  Returns false, with its error in *fh_err, if it raised.
 */
bool
jobq_run_failure_handler(JobqJob *job, const JobqError *err, JobqError *fh_err)
{
	Datum		args[2];
	JobqContext ctx;
	bool		timed_out;

	args[0] = PointerGetDatum(job->payload);
	args[1] = PointerGetDatum(jobq_error_jsonb(err));
	/* in the caller's memory, which holds *fh_err too */
	return invoke(NULL, job, jobq_failure_handler_get(job->on_failure),
				  args, &ctx, fh_err, CurrentMemoryContext,
				  &timed_out) == OUTCOME_DONE;
}

/*
 * The outcome of an attempt that ended (complete.c does the writing).
 * Returns true if the job completed.
 */
static bool
record_outcome(JobqRunner *runner, JobqJob *job, JobOutcome outcome,
			   JobqContext *ctx, JobqError *err, bool timed_out)
{
	switch (outcome)
	{
		case OUTCOME_DONE:
			if (ctx->request == JOBQ_REQUEST_RELEASE)
			{
				if (jobq_release_job(job, ctx->release_ms))
					return false;
				break;			/* released with no attempt left: failed */
			}
			if (ctx->request != JOBQ_REQUEST_FAIL)
				return true;
			memset(err, 0, sizeof(JobqError));
			strlcpy(err->sqlstate, "JQ004", sizeof(err->sqlstate));
			err->message = ctx->fail_message;
			err->detail = "The job called jobq.fail().";
			jobq_fail_job(job, err);
			break;
		case OUTCOME_ERROR:
			if (ctx->request == JOBQ_REQUEST_FAIL)
				jobq_fail_job(job, err);	/* no retry, as asked */
			else if (strcmp(err->sqlstate, "P0002") == 0)
			{
				/* no_data_found: the job's data is gone */
				if (job->delete_when_missing)
				{
					jobq_discard_job(job);
					return false;
				}
				jobq_fail_job(job, err);
			}
			else
			{
				if (timed_out && !jobq_may_try_again(job, 0, true))
					err->hint = "Raise the job's timeout, or make the handler faster.";
				jobq_attempt_failed(job, err);
			}
			break;
		case OUTCOME_STOPPED:
			/* middleware released, failed or deleted it */
			jobq_complete_stopped(runner->token, job);
			return false;
		case OUTCOME_INTERRUPTED:
			/* not the job's fault: take the attempt back */
			jobq_unreserve(runner->token, job, 1, true);
			return false;
	}
	jobq_slot_count(runner->slot, job->queue, false);
	return false;
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
	TimestampTz batch_start = GetCurrentTimestamp();
	int64		jobs_before = runner->jobs_run;

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
			JobqContext ctx;
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
			slow = jobq_handler_is_slow(job->handler);

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
				/* ... now, not when the slow job's transaction commits */
				jobq_complete_jobs(runner->token, done_ids, ndone);
				ndone = 0;
				jobq_runner_commit(runner);
				jobq_runner_begin(runner);
				relock_jobs(runner->token, jobs, i, njobs);
				txn_start = GetCurrentTimestamp();
				if (job->finished)
					continue;
			}

			job->finished = true;

			/*
			 * Not announced by the reservation (it expected this job to be
			 * handed back): announce it now, delivered with its outcome.
			 */
			if (!job->announced)
			{
				jobq_event(JOBQ_EVENT_PROCESSING, job->id, job->queue, job->job,
						   job->attempts, NULL);
				job->announced = true;
			}

			/* past its deadline or its tries: fail without running */
			if (!jobq_precheck(job, &err))
			{
				jobq_fail_job(job, &err);
				jobq_slot_count(runner->slot, job->queue, false);
				MemoryContextReset(job_cxt);
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
			outcome = run_one(runner, job, &ctx, &err, job_cxt, &timed_out);
			jobq_slot_set_job(runner->slot, 0);
			runner->jobs_run++;

			if (record_outcome(runner, job, outcome, &ctx, &err, timed_out))
			{
				done_ids[ndone++] = job->id;
				jobq_slot_count(runner->slot, job->queue, true);
			}
			MemoryContextReset(job_cxt);
		}

		jobq_complete_jobs(runner->token, done_ids, ndone);
		/* the batch is done: reserve the next one in the same commit */
		if (i >= njobs)
			jobq_runner_reserve_next(runner);
		jobq_runner_commit(runner);
	}

	MemoryContextDelete(job_cxt);
	pfree(done_ids);

	/* how long a job takes here, for sizing the next batches (runner.c) */
	if (runner->jobs_run > jobs_before)
	{
		long		secs;
		int			usecs;
		double		per_job;

		TimestampDifference(batch_start, GetCurrentTimestamp(), &secs, &usecs);
		per_job = (secs * 1000000.0 + usecs) / (runner->jobs_run - jobs_before);
		runner->job_us = runner->job_us > 0 ?
			0.7 * runner->job_us + 0.3 * per_job : per_job;
	}
}
