/*-------------------------------------------------------------------------
 *
 * work.c
 *		CALL jobq.work(): the worker loop, run in the calling session.
 *
 * Like Laravel's queue:work --once / --stop-when-empty, for scripts, tests
 * and servers where jobq is not preloaded.  It commits like a background
 * worker does (so it must be called outside an explicit transaction block)
 * and keeps every invariant of the background workers: the session holds a
 * reservation token for the duration of the call, and whatever it had
 * reserved when it fails is recovered by the next runner.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/work.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_work);

/*
 * CALL jobq.work(queues text[] DEFAULT NULL, max_jobs int DEFAULT NULL,
 *				  stop_when_empty boolean DEFAULT false)
 */
Datum
jobq_work(PG_FUNCTION_ARGS)
{
	JobqRunner	runner;
	bool		nonatomic;
	MemoryContext loop_cxt;
	MemoryContext old;

	nonatomic = fcinfo->context &&
		IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;
	if (!nonatomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("jobq.work() cannot run inside a transaction block"),
				 errdetail("It commits after every batch of jobs, like a worker."),
				 errhint("Run CALL jobq.work(...) on its own, not inside BEGIN ... COMMIT or a function.")));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("jobq.work() cannot run during recovery"),
				 errhint("Run jobs on the primary server.")));
	if (!PG_ARGISNULL(1) && PG_GETARG_INT32(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_jobs must be at least 1")));

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "jobq work",
									 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(loop_cxt);

	memset(&runner, 0, sizeof(runner));
	runner.in_procedure = true;
	runner.loop_cxt = loop_cxt;
	runner.batch_cxt = AllocSetContextCreate(loop_cxt, "jobq batch",
											 ALLOCSET_DEFAULT_SIZES);
	runner.queues = PG_ARGISNULL(0) ?
		jobq_parse_queue_list(jobq_queues) :
		jobq_queue_array_list(PG_GETARG_ARRAYTYPE_P(0), false);
	runner.batch_size = jobq_batch_size;
	runner.max_jobs = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);
	runner.stop_when_empty = PG_ARGISNULL(2) ? false : PG_GETARG_BOOL(2);
	runner.restart_generation = -1;
	MemoryContextSwitchTo(old);

	SPI_connect_ext(SPI_OPT_NONATOMIC);

	runner.token = jobq_token_new();
	runner.slot = jobq_slot_acquire(true, runner.token,
									jobq_queue_list_text(runner.queues, false),
									NULL, JOBQ_POOL_DEFAULT, NULL, 0);

	PG_TRY();
	{
		jobq_runner_loop(&runner);
		if (runner.cancelled)
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 runner.statement_timed_out ?
					 errmsg("canceling statement due to statement timeout") :
					 errmsg("canceling statement due to user request"),
					 errdetail("The running job was cancelled and its attempt recorded as failed.")));
	}
	PG_CATCH();
	{
		/*
		 * Whatever is reserved becomes recoverable once the token is gone;
		 * the next runner (a worker, or the next jobq.work) recovers it.
		 */
		jobq_token_drop(runner.token);
		jobq_slot_release(runner.slot);
		jobq_in_handler = false;
		MemoryContextSwitchTo(old);
		MemoryContextDelete(loop_cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();

	jobq_token_drop(runner.token);
	jobq_slot_release(runner.slot);
	SPI_finish();
	MemoryContextDelete(loop_cxt);

	if (runner.extension_missing)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"jobq\" is not installed in this database")));
	PG_RETURN_VOID();
}
