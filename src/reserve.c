/*-------------------------------------------------------------------------
 *
 * reserve.c
 *		Reserving jobs, and recovering the reservations of processes that
 *		are gone.
 *
 * The reservation protocol (DESIGN.md invariants 2, 4 and 5):
 *
 * Every process that runs jobs holds a reservation token: a bigint unique
 * in time, for which it holds a session-level lock (an advisory lock tag of
 * our own, field4 = JOBQ_LOCK_FIELD4, so it never collides with users'
 * advisory locks).  The lock lives exactly as long as the process, and after
 * a crash restart no lock survives.
 *
 * 1. The reservation transaction picks ready jobs with FOR UPDATE SKIP
 *	  LOCKED, sets reserved_by = token and attempts = attempts + 1, and
 *	  commits: the attempt is durable before any handler runs.
 * 2. The execution transaction (execute.c) locks those rows again, FOR
 *	  UPDATE, for the whole attempt.
 * 3. Other reservers only look at rows with reserved_by IS NULL, so a row
 *	  that is reserved is never handed out twice, however long it runs.
 * 4. A reservation whose token's lock can be taken belongs to a process that
 *	  is gone.  jobq_recover_lost() (run by every worker at start, when any
 *	  process leaves the registry, and every few seconds) makes such jobs
 *	  available again, attempt counted, or moves them to the failed store
 *	  (running their failure handler) if the retry rule (lifecycle.c)
 *	  allows no further attempt: the same rule as for any failed attempt.
 *
 * External jobs (consumer.c) are never reserved here and never carry a
 * reserved_by token: their lease is in lease_token and available_at, so the
 * recovery above leaves them alone.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/reserve.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "jobq.h"

#define JOBQ_LOCK_FIELD4 0x4A51 /* "JQ" */
/* a busy worker scans a queue from its head at least this often ... */
#define JOBQ_FULL_SCAN_MS 50
/* ... and waits this many times as long as the last such scan took */
#define JOBQ_FULL_SCAN_COST 20

static void
token_locktag(LOCKTAG *tag, int64 token)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId,
						 (uint32) ((uint64) token >> 32),
						 (uint32) token,
						 JOBQ_LOCK_FIELD4);
}

/*
 * Make a new reservation token and take its session lock.  Tokens grow with
 * the clock (microseconds, shifted, plus bits of the pid), so a token never
 * repeats one that is stored in an old row; a collision with a live process
 * is caught by the lock itself.
 */
int64
jobq_token_new(void)
{
	for (;;)
	{
		int64		token = ((int64) GetCurrentTimestamp() << 10) |
		(MyProcPid & 0x3ff);
		LOCKTAG		tag;

		token_locktag(&tag, token);
		if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_OK)
			return token;
		CHECK_FOR_INTERRUPTS();
	}
}

void
jobq_token_drop(int64 token)
{
	LOCKTAG		tag;

	if (token == 0)
		return;
	token_locktag(&tag, token);
	LockRelease(&tag, ExclusiveLock, true);
}

/*
 * True if no process holds the token any more.
 */
static bool
token_is_dead(int64 token)
{
	LOCKTAG		tag;

	token_locktag(&tag, token);
	if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_OK)
	{
		LockRelease(&tag, ExclusiveLock, false);
		return true;
	}
	return false;
}

/* ---- prepared statements ---- */

static SPIPlanPtr reserve_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr lost_tokens_plan = NULL;
static SPIPlanPtr lost_jobs_plan = NULL;
static SPIPlanPtr unreserve_plan = NULL;
static SPIPlanPtr load_plan = NULL;

static void announce_batch(JobqJob *jobs, int n);

/*
 * Effective settings: NULL in the row means the worker's default.
 */
static int32
effective_tries(bool isnull, Datum d)
{
	return isnull ? jobq_tries : DatumGetInt32(d);
}

/*
 * The columns of a job that execution needs, in the order
 * job_from_tuple() reads them.
 */
#define JOB_COLUMNS \
	"id, queue, job, payload, owner::pg_catalog.oid, attempts, tries, timeout," \
	" backoff, created_at, available_at, retry_until, max_exceptions, exceptions," \
	" backoff_schedule, backoff_exponential, on_failure, delete_when_missing_models," \
	" reserved_at, middleware"

/*
 * Fill *j from a row of JOB_COLUMNS, copying into cxt and applying the
 * workers' defaults where the row has NULL.
 */
static void
job_from_tuple(JobqJob *j, HeapTuple tup, TupleDesc desc, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	bool		isnull;
	Datum		d;

	memset(j, 0, sizeof(JobqJob));
	j->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	j->queue = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	j->job = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
	j->payload = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 4, &isnull));
	j->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
	j->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	d = SPI_getbinval(tup, desc, 7, &isnull);
	j->tries = effective_tries(isnull, d);
	d = SPI_getbinval(tup, desc, 8, &isnull);
	j->timeout_ms = isnull ? jobq_timeout_ms :
		(int32) Min(jobq_interval_ms(DatumGetIntervalP(d)), JOBQ_MAX_TIMEOUT_MS);
	d = SPI_getbinval(tup, desc, 9, &isnull);
	j->backoff_ms = isnull ? jobq_backoff_ms :
		jobq_interval_ms(DatumGetIntervalP(d));
	j->created_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 10, &isnull));
	/* available_at, only to restore FIFO order */
	j->sort_key = DatumGetTimestampTz(SPI_getbinval(tup, desc, 11, &isnull));
	d = SPI_getbinval(tup, desc, 12, &isnull);
	j->retry_until = isnull ? 0 : DatumGetTimestampTz(d);
	d = SPI_getbinval(tup, desc, 13, &isnull);
	j->max_exceptions = isnull ? 0 : DatumGetInt32(d);
	j->exceptions = DatumGetInt32(SPI_getbinval(tup, desc, 14, &isnull));
	d = SPI_getbinval(tup, desc, 15, &isnull);
	if (!isnull)
	{
		ArrayType  *arr = DatumGetArrayTypeP(d);
		Datum	   *elems;
		bool	   *enulls;
		int			n;

		deconstruct_array(arr, INTERVALOID, sizeof(Interval), false,
						  TYPALIGN_DOUBLE, &elems, &enulls, &n);
		j->backoff_steps = palloc(sizeof(int64) * Max(n, 1));
		for (int i = 0; i < n; i++)
			j->backoff_steps[i] = enulls[i] ? 0 :
				jobq_interval_ms(DatumGetIntervalP(elems[i]));
		j->nbackoff_steps = n;
	}
	j->backoff_exponential = DatumGetBool(SPI_getbinval(tup, desc, 16, &isnull));
	d = SPI_getbinval(tup, desc, 17, &isnull);
	j->on_failure = isnull ? NULL : TextDatumGetCString(d);
	j->delete_when_missing = DatumGetBool(SPI_getbinval(tup, desc, 18, &isnull));
	d = SPI_getbinval(tup, desc, 19, &isnull);
	j->reserved_at = isnull ? 0 : DatumGetTimestampTz(d);
	d = SPI_getbinval(tup, desc, 20, &isnull);
	j->middleware = isnull ? NULL : DatumGetJsonbPCopy(d);
	MemoryContextSwitchTo(old);
}

/*
 * Read job id into *job (copied into cxt), as the workers see it: for the
 * outcomes of jobs that SQL consumers run (consumer.c), which follow the
 * same retry rule.  Returns false if there is no such job.  Caller has SPI
 * connected, runs as the extension owner and has locked the row.
 */
bool
jobq_job_load(int64 id, JobqJob *job, MemoryContext cxt)
{
	Datum		values[1];

	if (load_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		load_plan = jobq_prepare_kept("SELECT " JOB_COLUMNS " FROM jobq.jobs"
								 " WHERE id OPERATOR(pg_catalog.=) $1",
								 1, types);
	}
	values[0] = Int64GetDatum(id);
	if (SPI_execute_plan(load_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not read job %lld", (long long) id);
	if (SPI_processed == 0)
		return false;
	job_from_tuple(job, SPI_tuptable->vals[0], SPI_tuptable->tupdesc, cxt);
	return true;
}

int64
jobq_interval_ms(Interval *iv)
{
	int64		ms;

	ms = iv->time / 1000;
	ms += (int64) iv->day * SECS_PER_DAY * 1000;
	ms += (int64) iv->month * DAYS_PER_MONTH * SECS_PER_DAY * 1000;
	return ms;
}

/*
 * Reserve up to max_jobs ready jobs of one queue, from its head or (hinted)
 * from a position in it.  Returns how many, filled into jobs[].
 */
static int
reserve_in_queue(int64 token, const char *queue, int max_jobs, bool hinted,
				 TimestampTz from_available_at, int64 from_id, JobqJob *jobs,
				 MemoryContext cxt)
{
	Datum		values[5];
	int			n = 0;

	values[0] = Int64GetDatum(token);
	values[1] = CStringGetTextDatum(queue);
	values[2] = Int32GetDatum(max_jobs);
	values[3] = TimestampTzGetDatum(hinted ? from_available_at : DT_NOBEGIN);
	values[4] = Int64GetDatum(hinted ? from_id : PG_INT64_MIN);
	if (jobq_execute_indexed(reserve_plan, values, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "jobq: reservation failed");
	for (uint64 i = 0; i < SPI_processed; i++)
		job_from_tuple(&jobs[n++], SPI_tuptable->vals[i],
					   SPI_tuptable->tupdesc, cxt);
	SPI_freetuptable(SPI_tuptable);
	pfree(DatumGetPointer(values[1]));
	return n;
}

/*
 * Reserve up to max_jobs jobs, serving queues strictly in list order and
 * each queue in the order its jobs became available.  Fills jobs[] (data
 * copied into cxt) and returns how many.  Caller is inside a transaction
 * with SPI connected and a snapshot pushed, and must commit it before
 * running any handler: that commit makes the attempts durable.  hints
 * (JOBQ_SCAN_HINTS of them, or NULL) are the caller's, kept between calls.
 */
int
jobq_reserve_batch(int64 token, List *queues, int max_jobs, JobqJob *jobs,
				   MemoryContext cxt, JobqScanHint *hints)
{
	int			n = 0;
	ListCell   *lc;

	/*
	 * attempts never overflows: it stops at INT_MAX, where jobq_precheck()
	 * fails the job, so tries = 0 cannot break reservation.
	 */
	if (reserve_plan == NULL)
	{
		Oid			types[5] = {INT8OID, TEXTOID, INT4OID, TIMESTAMPTZOID,
		INT8OID};

		/*
		 * Shaped so that one generic plan serves every call: the picked ids
		 * come as an array, so the update always probes the primary key
		 * (with a join on the picked rows the generic plan hashes the whole
		 * table, and planning the statement at each call costs about a
		 * third of the reservation).
		 */
		reserve_plan = jobq_prepare_kept_generic(
											"UPDATE jobq.jobs j"
											"   SET attempts = pg_catalog.int4smaller(j.attempts, 2147483646)"
											"         OPERATOR(pg_catalog.+) 1,"
											"       reserved_by = $1,"
											"       reserved_at = pg_catalog.now()"
											" WHERE j.id OPERATOR(pg_catalog.=) ANY (ARRAY("
											"  SELECT id FROM jobq.jobs"
											"   WHERE queue OPERATOR(pg_catalog.=) $2"
											"     AND reserved_by IS NULL AND NOT external"
											"     AND available_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
											"     AND (available_at, id) OPERATOR(pg_catalog.>=) ($4, $5)"
											"   ORDER BY available_at, id"
											"   LIMIT $3"
											"   FOR UPDATE SKIP LOCKED))"
											" RETURNING " JOB_COLUMNS,
											5, types);
	}

	foreach(lc, queues)
	{
		char	   *queue = (char *) lfirst(lc);
		JobqScanHint *hint = NULL;
		bool		hinted;
		bool		skipped_full;
		int			want = max_jobs - n;
		int			first = n;

		if (n >= max_jobs)
			break;
		if (hints != NULL && foreach_current_index(lc) < JOBQ_SCAN_HINTS)
			hint = &hints[foreach_current_index(lc)];

		/*
		 * A busy worker starts where its last reservation in this queue
		 * ended: the index entries before that belong to jobs reserved
		 * already (the reservation takes them out of the ready index, but
		 * their entries stay until vacuum, and scanning them from the head
		 * each time costs more than the rest of the reservation).  A job
		 * can still appear before the hint (a dispatch that commits late, a
		 * job handed back), so the worker scans from the head whenever the
		 * hinted scan comes back short, and at least every
		 * JOBQ_FULL_SCAN_MS.  Unless such scans are slow: while a long
		 * transaction keeps vacuum from removing the entries of finished
		 * jobs, a scan from the head walks all of them, and one after every
		 * short scan made the churn of jobs nearly stop.  So a worker
		 * spends at most about 1/JOBQ_FULL_SCAN_COST of its time scanning
		 * from the head, and a job that appears before its hint then waits
		 * up to JOBQ_FULL_SCAN_COST times the last such scan.
		 */
		hinted = hint != NULL && hint->valid &&
			!TimestampDifferenceExceeds(hint->full_scan_at, GetCurrentTimestamp(),
										Max(JOBQ_FULL_SCAN_MS,
											(int) (JOBQ_FULL_SCAN_COST * hint->full_scan_ms)));
		if (hinted)
			n += reserve_in_queue(token, queue, want, true, hint->available_at,
								  hint->id, jobs + n, cxt);
		skipped_full = false;
		if (hinted && n - first < want &&
			!TimestampDifferenceExceeds(hint->full_scan_at, GetCurrentTimestamp(),
										(int) (JOBQ_FULL_SCAN_COST * hint->full_scan_ms)))
			skipped_full = true;
		else if (!hinted || n - first < want)
		{
			TimestampTz started = GetCurrentTimestamp();

			n += reserve_in_queue(token, queue, max_jobs - n, false, 0, 0,
								  jobs + n, cxt);
			if (hint != NULL)
			{
				long		secs;
				int			usecs;

				hint->full_scan_at = GetCurrentTimestamp();
				TimestampDifference(started, hint->full_scan_at, &secs, &usecs);
				hint->full_scan_ms = secs * 1000.0 + usecs / 1000.0;
			}
		}

		/* UPDATE ... RETURNING does not keep the subquery's order */
		if (n - first > 1)
			qsort(&jobs[first], n - first, sizeof(JobqJob), jobq_job_cmp);

		/*
		 * A hint only while the queue has more ready jobs than we take, or
		 * while scans from the head are held back (above).
		 */
		if (hint != NULL)
		{
			hint->valid = (n - first == want) || skipped_full;
			if (n > first)
			{
				hint->available_at = jobs[n - 1].sort_key;
				hint->id = jobs[n - 1].id;
			}
		}
	}
	announce_batch(jobs, n);
	return n;
}

/*
 * Send the "processing" events of a reserved batch, delivered when the
 * reservation commits, just before the handlers start.  Only for the jobs
 * that the worker will start without handing them back: those up to the
 * first slow one (jobq_execute_batch hands back the jobs after a slow job,
 * and their next reservation announces them).  A job whose handler turns
 * out slow later than predicted is announced by execute.c instead.
 */
static void
announce_batch(JobqJob *jobs, int n)
{
	if (!jobq_event_wanted(JOBQ_EVENT_PROCESSING))
		return;
	for (int i = 0; i < n; i++)
	{
		jobq_event(JOBQ_EVENT_PROCESSING, jobs[i].id, jobs[i].queue,
				   jobs[i].job, jobs[i].attempts, NULL);
		jobs[i].announced = true;
		if (jobq_handler_is_slow(jobq_handler_get(jobs[i].job)))
			break;
	}
}

/*
 * Order of jobs within one queue: when they became available, then id.
 */
int
jobq_job_cmp(const void *a, const void *b)
{
	const JobqJob *ja = a;
	const JobqJob *jb = b;

	if (ja->sort_key != jb->sort_key)
		return ja->sort_key < jb->sort_key ? -1 : 1;
	if (ja->id != jb->id)
		return ja->id < jb->id ? -1 : 1;
	return 0;
}

/*
 * Milliseconds until the next job of these queues is due: -1 if there is
 * none, 0 if one is due already (typically locked by a reservation of
 * another worker that is about to commit).  One index probe per queue.
 */
int64
jobq_next_due_ms(List *queues)
{
	TimestampTz next = 0;
	bool		any = false;
	ListCell   *lc;
	long		secs;
	int			usecs;

	if (next_due_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		next_due_plan = jobq_prepare_kept_generic(
									 "SELECT available_at FROM jobq.jobs"
									 " WHERE queue OPERATOR(pg_catalog.=) $1"
									 "   AND reserved_by IS NULL AND NOT external"
									 " ORDER BY available_at LIMIT 1",
									 1, types);
	}

	foreach(lc, queues)
	{
		Datum		values[1];
		bool		isnull;
		TimestampTz t;

		values[0] = CStringGetTextDatum((char *) lfirst(lc));
		if (jobq_execute_indexed(next_due_plan, values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "jobq: next-due query failed");
		if (SPI_processed == 0)
			continue;
		t = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull));
		if (!any || t < next)
			next = t;
		any = true;
	}
	if (!any)
		return -1;

	TimestampDifference(GetCurrentTimestamp(), next, &secs, &usecs);
	/* round up: never wake before the job is due */
	return (int64) secs * 1000 + (usecs + 999) / 1000;
}

/*
 * Recover jobs reserved by processes that are gone: each becomes available
 * again with its attempt counted (after its backoff), or goes to the failed
 * store if its tries are used up.  Returns the number of jobs recovered.
 * Caller is in a transaction with SPI connected, running as the extension
 * owner.
 */
int
jobq_recover_lost(int64 own_token)
{
	List	   *dead = NIL;
	ListCell   *lc;
	int			recovered = 0;

	if (lost_tokens_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		lost_tokens_plan = jobq_prepare_kept(
										"SELECT DISTINCT reserved_by FROM jobq.jobs"
										" WHERE reserved_by IS NOT NULL",
										0, NULL);
		lost_jobs_plan = jobq_prepare_kept(
									  "SELECT " JOB_COLUMNS " FROM jobq.jobs"
									  " WHERE reserved_by OPERATOR(pg_catalog.=) $1"
									  " ORDER BY id FOR UPDATE SKIP LOCKED",
									  1, types);
	}

	if (SPI_execute_plan(lost_tokens_plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "jobq: recovery query failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		token = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														SPI_tuptable->tupdesc,
														1, &isnull));

		if (token != own_token && token_is_dead(token))
		{
			int64	   *p = palloc(sizeof(int64));

			*p = token;
			dead = lappend(dead, p);
		}
	}

	foreach(lc, dead)
	{
		int64		token = *(int64 *) lfirst(lc);
		Datum		values[1];
		uint64		nrows;
		JobqJob    *lost;
		JobqError	err;

		values[0] = Int64GetDatum(token);
		if (SPI_execute_plan(lost_jobs_plan, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "jobq: recovery query failed");
		nrows = SPI_processed;
		lost = palloc(sizeof(JobqJob) * (nrows + 1));
		for (uint64 i = 0; i < nrows; i++)
			job_from_tuple(&lost[i], SPI_tuptable->vals[i],
						   SPI_tuptable->tupdesc, CurrentMemoryContext);

		/* a lost attempt is a failed attempt: the same rule applies */
		for (uint64 i = 0; i < nrows; i++)
		{
			memset(&err, 0, sizeof(err));
			strlcpy(err.sqlstate, "JQ001", sizeof(err.sqlstate));
			err.message = psprintf("the worker running attempt %d of job %lld was lost",
								   lost[i].attempts, (long long) lost[i].id);
			err.detail = "The process ended (crash, kill, server restart or error) before the attempt finished.";
			jobq_attempt_failed(&lost[i], &err);
			recovered++;
		}
	}
	return recovered;
}

/*
 * Hand reserved jobs back without running them: used for the jobs of a
 * batch that a worker does not get to (shutdown, or another job of the
 * batch turned out to be slow).  With refund, the attempt counted by the
 * reservation is taken back, since the handler never started.
 */
void
jobq_unreserve(int64 token, JobqJob *jobs, int njobs, bool refund)
{
	Datum	   *ids;
	int			n = 0;
	Datum		values[3];

	if (unreserve_plan == NULL)
	{
		Oid			types[3] = {INT8ARRAYOID, INT8OID, BOOLOID};

		unreserve_plan = jobq_prepare_kept(
									  "UPDATE jobq.jobs"
									  "   SET reserved_by = NULL, reserved_at = NULL,"
									  "       attempts = attempts OPERATOR(pg_catalog.-)"
									  "         CASE WHEN $3 THEN 1 ELSE 0 END"
									  " WHERE id OPERATOR(pg_catalog.=) ANY ($1)"
									  "   AND reserved_by OPERATOR(pg_catalog.=) $2"
									  " RETURNING id",
									  3, types);
	}

	ids = palloc(sizeof(Datum) * (njobs + 1));
	for (int i = 0; i < njobs; i++)
		ids[n++] = Int64GetDatum(jobs[i].id);
	if (n == 0)
		return;

	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = Int64GetDatum(token);
	values[2] = BoolGetDatum(refund);
	if (SPI_execute_plan(unreserve_plan, values, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "jobq: could not hand back reserved jobs");
	for (int i = 0; i < njobs && SPI_processed > 0; i++)
	{
		/* ready again: a sleeping worker may take it at once */
		jobq_wake_at_commit(jobs[i].queue, 1);
		/* an attempt announced as "processing" that did not happen */
		if (jobs[i].announced && jobq_spi_result_has_id(jobs[i].id))
			jobq_event(JOBQ_EVENT_RELEASED, jobs[i].id, jobs[i].queue,
					   jobs[i].job, jobs[i].attempts, NULL);
	}
}

/*
 * Is id in the first column (bigint) of the last SPI result?
 */
bool
jobq_spi_result_has_id(int64 id)
{
	for (uint64 k = 0; k < SPI_processed; k++)
	{
		bool		isnull;

		if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k],
										SPI_tuptable->tupdesc, 1,
										&isnull)) == id)
			return true;
	}
	return false;
}
