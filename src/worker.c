/*-------------------------------------------------------------------------
 *
 * worker.c
 *		A background worker that runs the jobs of one database.
 *
 * Started (and restarted) by the launcher (launcher.c).  It connects to its
 * database as the bootstrap superuser, takes a reservation token, registers
 * in shared memory and runs the loop in runner.c.  Each job runs as the
 * role that dispatched it (execute.c), never as the worker's role.
 *
 * Signals:
 *	SIGTERM	the running job is cancelled, jobs of the batch not yet started
 *			are given back, then the worker exits.  From the postmaster
 *			(server shutdown) the cancelled attempt is refunded: the job
 *			runs again after the restart.  From anyone else
 *			(pg_terminate_backend) it counts as a failed attempt, so a job
 *			that terminates its own worker cannot run forever.
 *	SIGINT	(pg_cancel_backend): cancels the running job only, which counts
 *			as a failed attempt.  Between jobs the cancel is ignored.
 *	SIGHUP	reloads the configuration.
 *
 * A worker belongs to a pool: the default pool (the jobq.* parameters) or
 * one of jobq.pools, whose settings it applies as overrides of those
 * parameters.  Between jobs it leaves, to be replaced at once by the
 * launcher, after jobq.restart(), when its pool's definition changed, or
 * when it reached one of its pool's recycling limits (max_jobs, max_time,
 * max_memory).  Leaving that way never interrupts a job.

 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "jobq.h"

static volatile sig_atomic_t got_sigterm = false;
static volatile sig_atomic_t sigterm_from_postmaster = false;

/* what this worker was started for */
static JobqWorkerArgs args;
static JobqPoolConf pool;		/* args.pool_idx >= 0: its definition */
static const char *recycle_reason = NULL;
static uint64 seen_pool_changes = 0;

/*
 * SIGTERM comes from the postmaster at shutdown, or from a backend
 * (pg_terminate_backend, DROP DATABASE ... WITH (FORCE)).  The sender
 * decides whether the interrupted job's attempt counts (see execute.c), so
 * the handler is installed with SA_SIGINFO.
 */
static void
jobq_worker_sigterm(int signo, siginfo_t *info, void *context)
{
	int			save_errno = errno;

	got_sigterm = true;
	if (info != NULL && info->si_pid == PostmasterPid)
		sigterm_from_postmaster = true;
	/* stop the running handler the way a cancel would */
	if (jobq_in_handler)
	{
		InterruptPending = true;
		QueryCancelPending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Between jobs: should this worker leave to be replaced?  When its pool was
 * changed or dropped (or, in the default pool, pools were created), or it
 * reached one of its pool's recycling limits.  The pool check costs one
 * atomic read unless some pool changed; memory is measured every 16 jobs.
 */
static bool
worker_should_recycle(JobqRunner *runner)
{
	static int	calls = 0;
	uint64		changes = pg_atomic_read_u64(&jobq_shared->pools_changed);

	if (changes != seen_pool_changes)
	{
		seen_pool_changes = changes;
		if (!jobq_pool_is_current(args.dbname, args.pool_idx, args.pool_version))
		{
			recycle_reason = "its pool was changed";
			return true;
		}
	}
	if (pool.max_time_ms > 0 &&
		TimestampDifferenceExceeds(runner->started_at, GetCurrentTimestamp(),
								   (int) Min(pool.max_time_ms, INT_MAX)))
	{
		recycle_reason = "it reached its pool's max_time";
		return true;
	}
	if (pool.max_memory_kb > 0 && ++calls % 16 == 0 &&
		MemoryContextMemAllocated(TopMemoryContext, true) / 1024 > pool.max_memory_kb)
	{
		recycle_reason = "it reached its pool's max_memory";
		return true;
	}
	return false;
}

/*
 * A pool worker takes its pool's settings as overrides of jobq's
 * parameters, so that the rest of the code (and a reload) sees them.
 */
static void
apply_pool_settings(void)
{
	char		buf[32];

	SetConfigOption("jobq.queues", pool.queues, PGC_POSTMASTER, PGC_S_OVERRIDE);
#define OVERRIDE_INT(guc, value) \
	do { \
		if ((value) >= 0) \
		{ \
			snprintf(buf, sizeof(buf), "%d", (value)); \
			SetConfigOption(guc, buf, PGC_POSTMASTER, PGC_S_OVERRIDE); \
		} \
	} while (0)
	OVERRIDE_INT("jobq.max_sleep", pool.max_sleep_ms);
	OVERRIDE_INT("jobq.timeout", pool.timeout_ms);
	OVERRIDE_INT("jobq.tries", pool.tries);
	OVERRIDE_INT("jobq.backoff", pool.backoff_ms);
#undef OVERRIDE_INT
}

/* after SIGHUP: pick up changed queues and batch size */
static void
worker_reload(JobqRunner *runner)
{
	MemoryContext old = MemoryContextSwitchTo(runner->loop_cxt);

	runner->queues = jobq_parse_queue_list(jobq_queues);
	runner->batch_size = jobq_batch_size;
	jobq_slot_set_queues(runner->slot,
						 jobq_queue_list_text(runner->queues, false));
	MemoryContextSwitchTo(old);
}

void
jobq_worker_main(Datum main_arg)
{
	JobqRunner	runner;

	struct sigaction act;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));


	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	memset(&act, 0, sizeof(act));
	act.sa_sigaction = jobq_worker_sigterm;
	sigemptyset(&act.sa_mask);
	act.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGTERM, &act, NULL);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(args.dbname, NULL, 0);
	pgstat_report_appname("jobq worker");

	/* the pool's definition as the launcher saw it, or leave */
	memset(&pool, 0, sizeof(pool));
	seen_pool_changes = pg_atomic_read_u64(&jobq_shared->pools_changed);
	if (args.pool_idx >= 0)
	{
		if (!jobq_pool_load(args.pool_idx, args.pool_version, &pool))
		{
			elog(DEBUG1, "jobq worker %d of database \"%s\": its pool changed before it started",
				 args.index, args.dbname);
			proc_exit(0);
		}
		apply_pool_settings();
	}
	else
	{
		/* pools may have been created since the launcher decided */
		if (!jobq_pool_is_current(args.dbname, args.pool_idx, 0))
			proc_exit(0);
		strlcpy(pool.name, "default", JOBQ_POOL_NAME_LEN);
	}

	/* cancels are for running jobs only (see run_one) */
	HOLD_CANCEL_INTERRUPTS();

	memset(&runner, 0, sizeof(runner));
	runner.in_procedure = false;
	runner.stop_requested = &got_sigterm;
	runner.stop_is_shutdown = &sigterm_from_postmaster;
	runner.on_reload = worker_reload;
	runner.should_recycle = worker_should_recycle;
	runner.started_at = GetCurrentTimestamp();
	runner.max_jobs = pool.max_jobs;
	runner.loop_cxt = AllocSetContextCreate(TopMemoryContext, "jobq worker",
											ALLOCSET_DEFAULT_SIZES);
	runner.batch_cxt = AllocSetContextCreate(runner.loop_cxt, "jobq batch",
											 ALLOCSET_DEFAULT_SIZES);
	worker_reload(&runner);

	runner.token = jobq_token_new();
	runner.slot = jobq_slot_acquire(false, runner.token,
									jobq_queue_list_text(runner.queues, false),
									args.dbname, args.pool_idx, pool.name,
									args.index);
	if (runner.slot == NULL)
	{
		/* another worker already has this place (launcher restarted) */
		elog(DEBUG1, "jobq worker %d of database \"%s\" is running already",
			 args.index, args.dbname);
		proc_exit(0);
	}

	elog(DEBUG1, "jobq worker %d started in database \"%s\"",
		 args.index, args.dbname);

	for (;;)
	{
		volatile bool failed = false;

		PG_TRY();
		{
			jobq_runner_loop(&runner);
		}
		PG_CATCH();
		{
			/*
			 * An error outside any job (a job's own errors are caught in
			 * execute.c).  Abort, and give up the token so that whatever
			 * this worker had reserved is recovered with its attempt
			 * counted.
			 */
			HOLD_INTERRUPTS();
			MemoryContextSwitchTo(TopMemoryContext);
			EmitErrorReport();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			jobq_in_handler = false;
			RESUME_INTERRUPTS();
			failed = true;
		}
		PG_END_TRY();

		if (!failed)
			break;

		/* go on with a new token, after a pause */
		QueryCancelHoldoffCount = 1;
		MemoryContextReset(runner.batch_cxt);
		jobq_runner_forget_next(&runner);
		jobq_token_drop(runner.token);
		runner.token = jobq_token_new();
		jobq_slot_set_token(runner.slot, runner.token);
		jobq_slot_set_job(runner.slot, 0);
		runner.last_recovery = 0;
		runner.owner = InvalidOid;

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	if (runner.extension_missing)
		elog(DEBUG1, "jobq is not installed in database \"%s\"; worker %d exits",
			 args.dbname, args.index);
	else if (got_sigterm)
		ereport(LOG,
				(errmsg("jobq worker %d of database \"%s\" stopped on request",
						args.index, args.dbname)));
	else if (runner.recycle || (runner.max_jobs > 0 && runner.jobs_run >= runner.max_jobs))
	{
		/* the launcher replaces it at once */
		runner.slot->clean_exit = true;
		if (runner.slot->restart_requested)
			recycle_reason = "jobq.restart() was called, or a command needs the database free";
		else if (recycle_reason == NULL)
			recycle_reason = "it reached its pool's max_jobs";
		ereport(LOG,
				(errmsg("jobq worker %d of pool \"%s\" in database \"%s\" leaves to be replaced: %s",
						args.index, pool.name, args.dbname, recycle_reason)));
	}
	proc_exit(0);
}
