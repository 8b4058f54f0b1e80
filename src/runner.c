/*-------------------------------------------------------------------------
 *
 * runner.c
 *		The loop that runs jobs, shared by background workers (worker.c) and
 *		CALL jobq.work() (work.c):
 *
 *		1. recover reservations of processes that are gone (reserve.c),
 *		2. reserve a batch and commit, so its attempts are durable,
 *		3. execute the batch (execute.c),
 *		4. with nothing to do, sleep until woken by a committing dispatch or
 *		   until the next delayed job is due.
 *
 * Transactions are begun and committed through jobq_runner_begin() and
 * jobq_runner_commit(): a background worker drives them directly, a
 * procedure commits through SPI.  Both run jobq's own statements as the
 * extension's owner and always at READ COMMITTED.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/runner.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_type.h"
#include "catalog/pg_extension.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"
#include "utils/wait_event.h"

#include "jobq.h"

/* how often a worker looks for lost reservations without being told to */
#define JOBQ_RECOVERY_INTERVAL_MS 5000
/* how often a worker applies jobq.failed_retention; sooner while behind */
#define JOBQ_PRUNE_INTERVAL_MS 60000
#define JOBQ_PRUNE_AGAIN_MS 1000
/* nap when a due job is locked by another worker's reservation */
#define JOBQ_BUSY_NAP_MS 5

static Oid	runner_save_userid;
static int	runner_save_sec;
static MemoryContext runner_save_cxt;

/*
 * Queue names: 1 to 63 bytes, no control characters, no commas (they
 * separate queues in lists), no leading or trailing space.
 */
void
jobq_check_queue_name(const char *queue)
{
	size_t		len = strlen(queue);

	if (len == 0 || len > JOBQ_MAX_QUEUE_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid queue name \"%.*s%s\"",
						(int) pg_mbcliplen(queue, len, 40), queue,
						len > 40 ? "..." : ""),
				 errdetail("A queue name is 1 to %d bytes long.",
						   JOBQ_MAX_QUEUE_NAME_LEN)));
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) queue[i];

		if (c < 0x20 || c == 0x7f || c == ',')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid queue name \"%s\"", queue),
					 errdetail("A queue name cannot contain commas or control characters.")));
	}
	if (isspace((unsigned char) queue[0]) || isspace((unsigned char) queue[len - 1]))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid queue name \"%s\"", queue),
				 errdetail("A queue name cannot begin or end with white space.")));
}

/*
 * Parse a comma-separated queue list (jobq.queues), keeping its order and
 * dropping repeats.  Returns a List of palloc'd strings.
 */
List *
jobq_parse_queue_list(const char *text)
{
	char	   *raw = pstrdup(text);
	List	   *names;
	List	   *result = NIL;
	ListCell   *lc;

	if (!SplitGUCList(raw, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid queue list \"%s\"", text)));
	foreach(lc, names)
	{
		char	   *q = (char *) lfirst(lc);
		ListCell   *lc2;
		bool		dup = false;

		jobq_check_queue_name(q);
		foreach(lc2, result)
			if (strcmp((char *) lfirst(lc2), q) == 0)
				dup = true;
		if (!dup)
			result = lappend(result, pstrdup(q));
	}
	if (result == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the queue list is empty")));
	return result;
}

/*
 * The extension's owner, as last looked up (dispatch needs it at every call),
 * with the table jobq.jobs it was looked up with: valid until that table's
 * relcache entry, or the syscache of roles, is invalidated.  DROP EXTENSION
 * drops the table (but leaves the schema jobq, which the extension does not
 * own), CREATE EXTENSION makes a new one, and REASSIGN OWNED, which alone
 * changes an extension's owner, reassigns the table with it.
 */
static Oid	cached_owner = InvalidOid;
static Oid	cached_jobs_relid = InvalidOid;
static bool owner_callback_registered = false;

static void
owner_inval_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	cached_owner = InvalidOid;
}

static void
owner_relcache_callback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == cached_jobs_relid)
		cached_owner = InvalidOid;
}

/*
 * The extension's owner (jobq's tables are written as this role), or
 * InvalidOid if jobq is not installed in this database.  Needs a
 * transaction.
 */
Oid
jobq_extension_owner(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			owner = InvalidOid;

	if (!owner_callback_registered)
	{
		CacheRegisterSyscacheCallback(AUTHOID, owner_inval_callback, (Datum) 0);
		CacheRegisterRelcacheCallback(owner_relcache_callback, (Datum) 0);
		owner_callback_registered = true;
	}
	if (OidIsValid(cached_owner))
		return cached_owner;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("jobq"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		Form_pg_extension ext = (Form_pg_extension) GETSTRUCT(tup);

		owner = ext->extowner;
		cached_jobs_relid = get_relname_relid("jobs", ext->extnamespace);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	/* remembered only while there is a table whose invalidation resets it */
	if (OidIsValid(owner) && OidIsValid(cached_jobs_relid))
		cached_owner = owner;
	return owner;
}

/*
 * Begin a transaction for jobq's own work, with SPI connected, a snapshot
 * pushed and the extension owner as current user.  With refresh_owner, the
 * owner is looked up again first; if jobq is no longer installed,
 * runner->owner is left invalid and the user is not switched: the caller
 * must check.  The caller's memory context stays current.
 */
void
jobq_runner_begin(JobqRunner *runner)
{
	runner_save_cxt = CurrentMemoryContext;
	if (!runner->in_procedure)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
	}
	/* jobq's statements assume READ COMMITTED, whatever the default */
	if (!FirstSnapshotSet)
		XactIsoLevel = XACT_READ_COMMITTED;
	PushActiveSnapshot(GetTransactionSnapshot());
	if (runner->refresh_owner || !OidIsValid(runner->owner))
	{
		runner->owner = jobq_extension_owner();
		runner->refresh_owner = false;
	}
	GetUserIdAndSecContext(&runner_save_userid, &runner_save_sec);
	if (OidIsValid(runner->owner))
		SetUserIdAndSecContext(runner->owner,
							   runner_save_sec | SECURITY_LOCAL_USERID_CHANGE);
	MemoryContextSwitchTo(runner_save_cxt);
}

void
jobq_runner_commit(JobqRunner *runner)
{
	SetUserIdAndSecContext(runner_save_userid, runner_save_sec);
	PopActiveSnapshot();
	if (runner->in_procedure)
		SPI_commit();
	else
	{
		SPI_finish();
		CommitTransactionCommand();
		pgstat_report_stat(false);
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	MemoryContextSwitchTo(runner_save_cxt);
}

/*
 * Is it time to look for lost reservations?  Always at start, whenever a
 * process left the registry (its reservations may be lost), and every few
 * seconds in any case.
 */
static bool
recovery_due(JobqRunner *runner)
{
	uint64		exits = jobq_slot_exit_count();

	if (runner->last_recovery == 0 || exits != runner->seen_exits ||
		TimestampDifferenceExceeds(runner->last_recovery, GetCurrentTimestamp(),
								   JOBQ_RECOVERY_INTERVAL_MS))
	{
		runner->seen_exits = exits;
		runner->last_recovery = GetCurrentTimestamp();
		return true;
	}
	return false;
}

/*
 * Should the runner stop before its next job?  Besides being told to stop
 * (SIGTERM, a cancelled CALL), a runner leaves to be replaced: after
 * jobq.restart(), or when its pool changed or it reached a recycling limit
 * (worker.c).  Leaving never interrupts a job: this is asked between jobs.
 */
bool
jobq_runner_should_stop(JobqRunner *runner)
{
	if (!runner->recycle)
	{
		if (runner->slot != NULL &&
			((volatile JobqSlot *) runner->slot)->restart_requested)
			runner->recycle = true;
		else if (runner->should_recycle != NULL &&
				 runner->should_recycle(runner))
			runner->recycle = true;
	}
	return runner->cancelled || runner->recycle ||
		(runner->stop_requested != NULL && *runner->stop_requested);
}

/*
 * Queues given as text[]: every name checked.  Repeats are dropped, or
 * with reject_repeats are an error.  Returns a List of palloc'd strings.
 */
List *
jobq_queue_array_list(ArrayType *arr, bool reject_repeats)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *q;
		ListCell   *lc;
		bool		dup = false;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("queue names must not be null")));
		q = TextDatumGetCString(elems[i]);
		jobq_check_queue_name(q);
		foreach(lc, result)
			if (strcmp((char *) lfirst(lc), q) == 0)
				dup = true;
		if (dup && reject_repeats)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("queue \"%s\" is listed twice", q),
					 errhint("List each queue once, highest priority first.")));
		if (!dup)
			result = lappend(result, q);
	}
	if (result == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the queue list is empty")));
	return result;
}

/*
 * A queue list as text.  With quote, names with white space or double
 * quotes are quoted so that jobq_parse_queue_list() reads the list back
 * unchanged; without, the names are only joined by commas (for display:
 * queue names cannot contain commas).
 */
char *
jobq_queue_list_text(List *queues, bool quote)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	foreach(lc, queues)
	{
		const char *q = (const char *) lfirst(lc);
		bool		needs_quotes = false;

		if (buf.len > 0)
			appendStringInfoChar(&buf, ',');
		for (const char *c = q; *c && quote; c++)
			if (isspace((unsigned char) *c) || *c == '"')
				needs_quotes = true;
		if (!needs_quotes)
		{
			appendStringInfoString(&buf, q);
			continue;
		}
		appendStringInfoChar(&buf, '"');
		for (const char *c = q; *c; c++)
		{
			if (*c == '"')
				appendStringInfoChar(&buf, '"');
			appendStringInfoChar(&buf, *c);
		}
		appendStringInfoChar(&buf, '"');
	}
	return buf.data;
}

/*
 * The attempts just reserved must be on disk before any handler runs, even
 * with synchronous_commit = off: a handler that crashes the server must not
 * be retried forever (invariant 4).  For the current transaction only.
 */
static void
attempts_durable(void)
{
	if (synchronous_commit < SYNCHRONOUS_COMMIT_LOCAL_FLUSH)
		(void) set_config_option("synchronous_commit", "local",
								 PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * How many jobs to reserve at once: jobq.batch_size, but no more than the
 * worker is expected to run in twice jobq.batch_time (at least one), so
 * that jobs do not wait in a worker's batch behind slower ones while other
 * workers could take them.  Fast jobs get whole batches, and with them one
 * commit for many jobs.
 */
static int
batch_limit(JobqRunner *runner)
{
	int			limit = Min(runner->batch_size, JOBQ_MAX_BATCH);

	if (runner->job_us > 0)
	{
		double		fit = 2000.0 * Max(jobq_batch_time_ms, 1) / runner->job_us;

		if (fit < limit)
			limit = Max((int) fit, 1);
	}
	if (runner->max_jobs > 0)
		limit = Min(limit, runner->max_jobs - runner->jobs_run);
	return limit;
}

/*
 * Called by execute.c in the transaction that ends a batch, before it
 * commits: reserve the next batch in that transaction, saving a
 * reservation transaction (and its commit) per batch while the worker is
 * busy.  Only when the loop would go straight on to another reservation:
 * a background worker with shared memory that is not stopping, with no
 * reload, recovery or pruning due (those belong to the reservation
 * transaction of the loop) and jobs left to run under max_jobs.
 */
void
jobq_runner_reserve_next(JobqRunner *runner)
{
	int			limit;
	TimestampTz now;

	if (runner->in_procedure || runner->slot == NULL || ConfigReloadPending ||
		jobq_runner_should_stop(runner))
		return;
	now = GetCurrentTimestamp();
	if (runner->last_recovery == 0 ||
		jobq_slot_exit_count() != runner->seen_exits ||
		TimestampDifferenceExceeds(runner->last_recovery, now,
								   JOBQ_RECOVERY_INTERVAL_MS))
		return;
	if (jobq_failed_retention_s > 0 && now >= runner->next_prune)
		return;
	limit = batch_limit(runner);
	if (limit <= 0)
		return;

	if (runner->next_jobs == NULL)
	{
		runner->next_jobs = MemoryContextAlloc(runner->loop_cxt,
											   sizeof(JobqJob) * JOBQ_MAX_BATCH);
		runner->next_cxt = AllocSetContextCreate(runner->loop_cxt,
												 "jobq next batch",
												 ALLOCSET_DEFAULT_SIZES);
	}
	Assert(runner->nnext == 0);
	runner->nnext = jobq_reserve_batch(runner->token, runner->queues, limit,
									   runner->next_jobs, runner->next_cxt,
									   runner->hints);
	if (runner->nnext > 0)
		attempts_durable();
}

/*
 * After an error: the next batch's reservation either rolled back or is
 * recovered once the caller gives up its token.
 */
void
jobq_runner_forget_next(JobqRunner *runner)
{
	runner->nnext = 0;
	if (runner->next_cxt != NULL)
		MemoryContextReset(runner->next_cxt);
	memset(runner->hints, 0, sizeof(runner->hints));
}

/*
 * Run jobs until told to stop: *stop_requested, max_jobs reached, or (with
 * stop_when_empty) no job ready.  Returns normally in those cases; errors
 * propagate to the caller, which owns the recovery.
 */
void
jobq_runner_loop(JobqRunner *runner)
{
	JobqJob    *jobs;
	bool		was_idle = true;

	jobq_handler_cache_init();
	if (runner->jobs == NULL)
		runner->jobs = MemoryContextAlloc(runner->loop_cxt,
										  sizeof(JobqJob) * JOBQ_MAX_BATCH);
	jobs = runner->jobs;

	for (;;)
	{
		int			n;
		int			limit;
		int64		next_due = -1;
		long		sleep_ms;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (jobq_runner_should_stop(runner))
		{
			/* a next batch reserved already never started: hand it back */
			if (runner->nnext > 0)
			{
				old = MemoryContextSwitchTo(runner->batch_cxt);
				jobq_runner_begin(runner);
				jobq_unreserve(runner->token, runner->next_jobs,
							   runner->nnext, true);
				jobq_runner_commit(runner);
				MemoryContextSwitchTo(old);
				jobq_runner_forget_next(runner);
			}
			break;
		}
		if (!runner->in_procedure && ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (runner->on_reload)
				runner->on_reload(runner);
			/* the queue list may have changed */
			memset(runner->hints, 0, sizeof(runner->hints));
		}
		/* reserved by the transaction that ended the last batch: run it */
		if (runner->nnext > 0)
		{
			JobqJob    *swap_jobs = runner->jobs;
			MemoryContext swap_cxt = runner->batch_cxt;

			n = runner->nnext;
			runner->jobs = jobs = runner->next_jobs;
			runner->batch_cxt = runner->next_cxt;
			runner->next_jobs = swap_jobs;
			runner->next_cxt = swap_cxt;
			runner->nnext = 0;

			old = MemoryContextSwitchTo(runner->batch_cxt);
			jobq_execute_batch(runner, jobs, n);
			MemoryContextSwitchTo(old);
			MemoryContextReset(runner->batch_cxt);
			was_idle = false;
			continue;
		}

		if (runner->max_jobs > 0 && runner->jobs_run >= runner->max_jobs)
			break;
		limit = batch_limit(runner);

		old = MemoryContextSwitchTo(runner->batch_cxt);

		/* after idling, check that jobq is still installed */
		runner->refresh_owner = was_idle;
		jobq_runner_begin(runner);
		if (!OidIsValid(runner->owner))
		{
			jobq_runner_commit(runner);
			MemoryContextSwitchTo(old);
			runner->extension_missing = true;
			break;
		}
		if (runner->slot == NULL)
		{
			/* no shared memory to be told through: compare generations */
			int64		generation = jobq_restart_generation_read();

			if (runner->restart_generation < 0)
				runner->restart_generation = generation;
			else if (generation != runner->restart_generation)
			{
				runner->recycle = true;
				jobq_runner_commit(runner);
				MemoryContextSwitchTo(old);
				break;
			}
		}
		if (recovery_due(runner))
		{
			jobq_recover_lost(runner->token);
			/* and external jobs whose consumers' leases ended (consumer.c) */
			(void) jobq_expire_leases(NULL);
		}
		if (jobq_failed_retention_s > 0 &&
			GetCurrentTimestamp() >= runner->next_prune)
		{
			bool		more = jobq_prune_failed(jobq_failed_retention_s);

			runner->next_prune = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															 more ? JOBQ_PRUNE_AGAIN_MS :
															 JOBQ_PRUNE_INTERVAL_MS);
		}
		n = jobq_reserve_batch(runner->token, runner->queues, limit, jobs,
							   runner->batch_cxt,
							   runner->in_procedure ? NULL : runner->hints);
		if (n == 0)
			next_due = jobq_next_due_ms(runner->queues);
		else
			attempts_durable();
		jobq_runner_commit(runner);

		if (n > 0)
			jobq_execute_batch(runner, jobs, n);
		MemoryContextSwitchTo(old);
		MemoryContextReset(runner->batch_cxt);
		was_idle = (n == 0);
		if (n > 0)
			continue;

		if (runner->stop_when_empty)
			break;

		/* sleep until woken, or until the next job is due */
		sleep_ms = jobq_max_sleep_ms;
		if (next_due == 0)
			sleep_ms = JOBQ_BUSY_NAP_MS;
		else if (next_due > 0 && next_due < sleep_ms)
			sleep_ms = (long) next_due;
		sleep_ms = Min(sleep_ms, JOBQ_RECOVERY_INTERVAL_MS);

		jobq_slot_set_sleeping(runner->slot, true);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		jobq_slot_set_sleeping(runner->slot, false);
		ResetLatch(MyLatch);
	}
}
