/*-------------------------------------------------------------------------
 *
 * consumer.c
 *		The SQL consumer API: external jobs, run by apps over plain SQL.
 *
 * A job registered with jobq.register(job, external => true) has no SQL
 * handler.  jobq's own workers never reserve it (reserve.c only looks at
 * rows with NOT external); apps reserve it with jobq.reserve() and report
 * the outcome with jobq.complete(), jobq.release() or jobq.fail().
 *
 * The claim lives in the job's row, so it survives the consumer's session
 * and works through transaction-pooling poolers:
 *
 *	lease_token		a fencing token, new for every reservation (a sequence,
 *					so a later reservation always has a larger token);
 *	available_at	while leased, when the lease expires.
 *
 * A lease that expired without a report is a failed attempt (JQ703), like
 * one whose worker died: jobq_expire_leases() hands it to the retry rule
 * (complete.c, lifecycle.c), so the job comes back after its backoff or
 * goes to the failed store.  It runs at every jobq.reserve() for the
 * queues asked for, whoever the caller, and in the periodic recovery of
 * the in-server workers (runner.c) for all queues.
 *
 * reserved_by stays NULL for external jobs, so the recovery of reservations
 * held by dead in-server workers (reserve.c) never touches a lease.
 *
 * Every call that reports on a job locks its row and checks that the token
 * is still the job's lease_token; a stale token (the job finished, was
 * handed back, its expired lease was handled, or it was reserved again)
 * raises ERRCODE_JOBQ_STALE_TOKEN and changes nothing.  A lease that has
 * expired but was not handled yet is still honoured.  Lease ends come from
 * the database clock (statement_timestamp()).
 *
 * The outcomes themselves (delete, retry after backoff, move to the failed
 * store) are complete.c's.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/consumer.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_consumer_reserve);
PG_FUNCTION_INFO_V1(jobq_consumer_complete);
PG_FUNCTION_INFO_V1(jobq_consumer_release);
PG_FUNCTION_INFO_V1(jobq_consumer_fail);
PG_FUNCTION_INFO_V1(jobq_consumer_extend);

/* longest external job name (the handler cache's key is 264 bytes) */
#define JOBQ_MAX_EXTERNAL_NAME_LEN	255

static SPIPlanPtr lookup_plan = NULL;
static SPIPlanPtr pick_plan = NULL;
static SPIPlanPtr lease_plan = NULL;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr state_plan = NULL;
static SPIPlanPtr extend_plan = NULL;
static SPIPlanPtr expired_plan = NULL;

/* The caller's identity, saved while running as the extension owner. */
typedef struct OwnerSwitch
{
	Oid			save_userid;
	int			save_sec;
} OwnerSwitch;

static void
become_owner(OwnerSwitch *sw)
{
	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec);
	SetUserIdAndSecContext(jobq_extension_owner(),
						   sw->save_sec | SECURITY_LOCAL_USERID_CHANGE);
}

static void
restore_user(OwnerSwitch *sw)
{
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec);
}

/* ---- external job names ---- */

/*
 * How a job name is registered: JOBQ_NOT_REGISTERED, JOBQ_REGISTERED_SQL
 * (a SQL handler's defaults) or JOBQ_REGISTERED_EXTERNAL.  For an external
 * job, *registered_by is the role that registered it.  Caller is connected
 * to SPI.
 */
JobqRegistration
jobq_registration(const char *job, Oid *registered_by)
{
	OwnerSwitch sw;
	Datum		values[1];
	bool		isnull;
	JobqRegistration result = JOBQ_NOT_REGISTERED;

	if (lookup_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		lookup_plan = jobq_prepare_kept_generic("SELECT external,"
												" registered_by::pg_catalog.oid"
												"  FROM jobq.handlers"
												" WHERE job OPERATOR(pg_catalog.=) $1",
												1, types);
	}
	values[0] = CStringGetTextDatum(job);
	become_owner(&sw);
	if (SPI_execute_plan(lookup_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "jobq: handler lookup failed");
	restore_user(&sw);
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		if (DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull)))
		{
			Datum		d = SPI_getbinval(tup, desc, 2, &isnull);

			result = JOBQ_REGISTERED_EXTERNAL;
			if (registered_by)
				*registered_by = isnull ? InvalidOid : DatumGetObjectId(d);
		}
		else
			result = JOBQ_REGISTERED_SQL;
	}
	return result;
}

/*
 * Check the name of an external job: any text a consumer may match on, but
 * not empty, not too long and without control characters.
 */
void
jobq_check_external_name(const char *job)
{
	size_t		len = strlen(job);

	if (len == 0 || len > JOBQ_MAX_EXTERNAL_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid external job name \"%.*s%s\"",
						(int) pg_mbcliplen(job, len, 40), job,
						len > 40 ? "..." : ""),
				 errdetail("An external job name is 1 to %d bytes long.",
						   JOBQ_MAX_EXTERNAL_NAME_LEN)));
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) job[i];

		if (c < 0x20 || c == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid external job name \"%s\"", job),
					 errdetail("An external job name cannot contain control characters.")));
	}
}

/*
 * Wake SQL consumers that LISTEN on channel jobq when an external job is
 * dispatched without a queued event (sent at commit; identical texts are
 * sent once per transaction, so a bulk dispatch sends one per queue and job
 * name).  Unlike job events, it is sent even while the notification queue
 * is over jobq.events_queue_limit: it is what idle consumers wait for.
 */
void
jobq_notify_external(const char *queue, const char *job)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"event\": \"queued\", \"queue\": ");
	escape_json(&buf, queue);
	appendStringInfoString(&buf, ", \"job\": ");
	escape_json(&buf, job);
	appendStringInfoChar(&buf, '}');
	if (buf.len < NAMEDATALEN * 100)	/* well below NOTIFY's 8000 bytes */
		Async_Notify("jobq", buf.data);
	pfree(buf.data);
}

/* ---- argument checks ---- */

static void
check_id_token(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job id and token must not be null"),
				 errhint("Pass the id and token that jobq.reserve() returned.")));
}

/* other arguments that must not be null */
static void
check_not_null(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

static int64
lease_ms(Interval *lease)
{
	int64		ms = jobq_checked_interval_ms(lease, "lease", 1, JOBQ_MAX_TIMEOUT_MS);

	return ms;
}

/* ---- expired leases ---- */

/*
 * Handle the leases of external jobs that ended without a report: each is a
 * failed attempt (JQ703) that goes through the retry rule, so the job is
 * available again after its backoff, or moves to the failed store (its
 * failure handler run) if no attempt is left.  queues: the queues to look
 * at, or NULL for all.  Handles at most JOBQ_MAX_BATCH per call, skipping
 * jobs locked by a concurrent report.  Returns how many it handled.
 * Caller is connected to SPI and runs as the extension owner.
 */
int
jobq_expire_leases(ArrayType *queues)
{
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	int64	   *ids;
	int			n;
	int			handled = 0;

	if (expired_plan == NULL)
	{
		Oid			types[2] = {TEXTARRAYOID, TIMESTAMPTZOID};

		/*
		 * The time is a parameter, not clock_timestamp(), so that it bounds
		 * the scan of jobs_leased_idx: a volatile function cannot, and the
		 * whole table would be read at every jobq.reserve.
		 */
		expired_plan = jobq_prepare_kept_generic(
												 "SELECT id FROM jobq.jobs"
												 " WHERE lease_token IS NOT NULL AND external"
												 "   AND available_at OPERATOR(pg_catalog.<=) $2"
												 "   AND ($1 IS NULL OR queue OPERATOR(pg_catalog.=) ANY ($1))"
												 " ORDER BY available_at, id"
												 " LIMIT " CppAsString2(JOBQ_MAX_BATCH)
												 " FOR UPDATE SKIP LOCKED",
												 2, types);
	}
	values[0] = PointerGetDatum(queues);
	if (queues == NULL)
		nulls[0] = 'n';
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	if (jobq_execute_indexed(expired_plan, values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not look for expired leases");
	n = (int) SPI_processed;
	if (n == 0)
		return 0;
	ids = palloc(sizeof(int64) * n);
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);

	for (int i = 0; i < n; i++)
	{
		JobqJob		jj;
		JobqError	err;

		if (!jobq_job_load(ids[i], &jj, CurrentMemoryContext))
			continue;
		memset(&err, 0, sizeof(err));
		strlcpy(err.sqlstate, "JQ703", sizeof(err.sqlstate));
		err.message = psprintf("the lease of attempt %d of job %lld expired",
							   jj.attempts, (long long) jj.id);
		err.detail = "The consumer neither reported an outcome nor extended the lease in time.";
		jobq_attempt_failed(&jj, &err);
		handled++;
	}
	pfree(ids);
	return handled;
}

/* ---- reserve ---- */

/*
 * jobq.reserve(queues text[], lease interval DEFAULT '90 s',
 *				max int DEFAULT 1)
 *	RETURNS TABLE (id, token, job, payload, queue, attempt, tries,
 *				   lease_expires_at)
 *
 * Reserves up to max ready external jobs of the given queues, queues in
 * priority order and each in the order its jobs became available, like the
 * in-server workers.  Expired leases of these queues are handled first
 * (jobq_expire_leases), so their jobs come back only after their backoff.
 * Only jobs owned by roles whose privileges the caller has are reserved.
 */
Datum
jobq_consumer_reserve(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *queues;
	Interval   *lease;
	int32		max;
	Oid			caller = GetUserId();
	bool		see_all = superuser();
	OwnerSwitch sw;
	int			n = 0;
	ListCell   *lc;
	TimestampTz now;

	check_not_null(fcinfo, 0, "queues");
	check_not_null(fcinfo, 1, "lease");
	check_not_null(fcinfo, 2, "max");
	queues = jobq_queue_array_list(PG_GETARG_ARRAYTYPE_P(0), false);
	lease = PG_GETARG_INTERVAL_P(1);
	max = PG_GETARG_INT32(2);
	(void) lease_ms(lease);
	if (max < 1 || max > JOBQ_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max must be between 1 and %d", JOBQ_MAX_BATCH)));

	InitMaterializedSRF(fcinfo, 0);

	SPI_connect();
	if (pick_plan == NULL)
	{
		Oid			ptypes[5] = {TEXTOID, INT4OID, BOOLOID, OIDOID,
		TIMESTAMPTZOID};
		Oid			ltypes[2] = {INT8OID, INTERVALOID};

		pick_plan = jobq_prepare_kept(
									  "SELECT id FROM jobq.jobs"
									  " WHERE queue OPERATOR(pg_catalog.=) $1 AND external"
									  "   AND available_at OPERATOR(pg_catalog.<=) $5"
									  "   AND lease_token IS NULL"
									  "   AND ($3 OR pg_catalog.pg_has_role($4, owner::pg_catalog.oid, 'USAGE'))"
									  " ORDER BY available_at, id"
									  " LIMIT $2"
									  " FOR UPDATE SKIP LOCKED",
									  5, ptypes);
		lease_plan = jobq_prepare_kept(
									   "UPDATE jobq.jobs"
									   "   SET attempts = pg_catalog.int4smaller(attempts, 2147483646)"
									   "         OPERATOR(pg_catalog.+) 1,"
									   "       lease_token = pg_catalog.nextval('jobq.lease_token_seq'::pg_catalog.regclass),"
									   "       reserved_at = pg_catalog.statement_timestamp(),"
									   "       available_at = pg_catalog.statement_timestamp() OPERATOR(pg_catalog.+) $2"
									   " WHERE id OPERATOR(pg_catalog.=) $1"
									   " RETURNING id, lease_token, job, payload, queue, attempts, tries,"
									   "   available_at",
									   2, ltypes);
	}

	become_owner(&sw);
	/*
	 * Leases that ended without a report are failed attempts: their jobs
	 * come back after their backoff, counted from now (so a backoff of 0
	 * makes them ready for this very call).
	 */
	(void) jobq_expire_leases(PG_GETARG_ARRAYTYPE_P(0));
	now = GetCurrentTimestamp();
	foreach(lc, queues)
	{
		char	   *queue = (char *) lfirst(lc);

		while (n < max)
		{
			Datum		pvalues[5];
			SPITupleTable *picked;
			uint64		npicked;

			pvalues[0] = CStringGetTextDatum(queue);
			pvalues[1] = Int32GetDatum(max - n);
			pvalues[2] = BoolGetDatum(see_all);
			pvalues[3] = ObjectIdGetDatum(caller);
			pvalues[4] = TimestampTzGetDatum(now);
			if (SPI_execute_plan(pick_plan, pvalues, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "jobq: reservation failed");
			picked = SPI_tuptable;
			npicked = SPI_processed;

			for (uint64 i = 0; i < npicked; i++)
			{
				HeapTuple	tup = picked->vals[i];
				TupleDesc	desc = picked->tupdesc;
				bool		isnull;
				int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
				Datum		lvalues[2];
				Datum		out[8];
				bool		outnulls[8] = {0};
				JobqJob		jj;
				JobqError	err;

				if (!jobq_job_load(id, &jj, CurrentMemoryContext))
					continue;

				/* count the attempt this lease starts, as workers do */
				lvalues[0] = Int64GetDatum(id);
				lvalues[1] = IntervalPGetDatum(lease);
				if (SPI_execute_plan(lease_plan, lvalues, NULL, false, 0) != SPI_OK_UPDATE_RETURNING ||
					SPI_processed != 1)
					elog(ERROR, "jobq: could not lease job %lld", (long long) id);
				tup = SPI_tuptable->vals[0];
				desc = SPI_tuptable->tupdesc;
				for (int c = 0; c < 8; c++)
					out[c] = SPI_getbinval(tup, desc, c + 1, &outnulls[c]);
				jj.attempts = DatumGetInt32(out[5]);

				/* past a deadline or its tries: fail without handing it out */
				if (!jobq_precheck(&jj, &err))
				{
					SPI_freetuptable(SPI_tuptable);
					jobq_fail_job(&jj, &err);
					continue;
				}

				if (jobq_event_wanted(JOBQ_EVENT_PROCESSING))
					jobq_event(JOBQ_EVENT_PROCESSING, id, SPI_getvalue(tup, desc, 5),
							   SPI_getvalue(tup, desc, 3), jj.attempts, NULL);
				/* the payload as a value, not a pointer into the table */
				out[3] = PointerGetDatum(PG_DETOAST_DATUM(out[3]));
				/* effective tries, as the consumer must apply them */
				out[6] = Int32GetDatum(jj.tries);
				outnulls[6] = false;
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
									 out, outnulls);
				SPI_freetuptable(SPI_tuptable);
				n++;
			}
			SPI_freetuptable(picked);
			if (npicked < (uint64) DatumGetInt32(pvalues[1]))
				break;			/* the queue has no more ready jobs */
		}
		if (n >= max)
			break;
	}
	restore_user(&sw);
	SPI_finish();

	return (Datum) 0;
}

/* ---- reports on a reserved job ---- */

/*
 * Raise the error for a token that is not (or no longer) the job's lease,
 * saying why.
 */
static void
stale_token_error(int64 id, int64 token)
{
	Datum		values[1];
	const char *detail;

	if (state_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		state_plan = jobq_prepare_kept("SELECT lease_token, external FROM jobq.jobs"
									   " WHERE id OPERATOR(pg_catalog.=) $1",
									   1, types);
	}
	values[0] = Int64GetDatum(id);
	if (SPI_execute_plan(state_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "jobq: job lookup failed");
	if (SPI_processed == 0)
		detail = psprintf("Job %lld is no longer queued: it completed, failed for good or was removed.",
						  (long long) id);
	else
	{
		bool		isnull;
		bool		ext_isnull;
		Datum		cur = SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull);
		bool		external = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 2,
														  &ext_isnull));

		if (!external)
			detail = psprintf("Job %lld is not an external job: jobq's workers run it.",
							  (long long) id);
		else if (isnull)
			detail = psprintf("Job %lld is not reserved: it was released or retried since.",
							  (long long) id);
		else if (DatumGetInt64(cur) > token)
			detail = psprintf("Job %lld was reserved again after this lease expired.",
							  (long long) id);
		else
			detail = psprintf("Token %lld was never a lease of job %lld.",
							  (long long) token, (long long) id);
	}
	ereport(ERROR,
			(errcode(ERRCODE_JOBQ_STALE_TOKEN),
			 errmsg("reservation token %lld of job %lld is no longer valid",
					(long long) token, (long long) id),
			 errdetail_internal("%s", detail),
			 errhint("Discard the result of this attempt: the job is not yours any more.")));
}

/*
 * Lock the job's row if token is its lease, and check that the caller may
 * act for the job's owner.  Caller is connected to SPI and runs as the
 * extension owner; caller_id is the calling role.
 */
static void
lock_leased_job(int64 id, int64 token, Oid caller_id)
{
	Datum		values[2];
	bool		isnull;
	Oid			owner;

	if (lock_plan == NULL)
	{
		Oid			types[2] = {INT8OID, INT8OID};

		lock_plan = jobq_prepare_kept("SELECT owner::pg_catalog.oid"
									  "  FROM jobq.jobs"
									  " WHERE id OPERATOR(pg_catalog.=) $1"
									  "   AND lease_token OPERATOR(pg_catalog.=) $2"
									  "   AND external"
									  " FOR UPDATE",
									  2, types);
	}
	values[0] = Int64GetDatum(id);
	values[1] = Int64GetDatum(token);
	if (SPI_execute_plan(lock_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not lock job %lld", (long long) id);
	if (SPI_processed == 0)
		stale_token_error(id, token);

	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	if (!superuser_arg(caller_id) && !has_privs_of_role(caller_id, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for job %lld", (long long) id),
				 errdetail("The job belongs to role %s.",
						   GetUserNameFromId(owner, false))));
}

/*
 * jobq.complete(id bigint, token bigint): the attempt succeeded.
 */
Datum
jobq_consumer_complete(PG_FUNCTION_ARGS)
{
	int64		id;
	int64		token;
	Oid			caller = GetUserId();
	OwnerSwitch sw;

	check_id_token(fcinfo);
	id = PG_GETARG_INT64(0);
	token = PG_GETARG_INT64(1);
	SPI_connect();
	become_owner(&sw);
	lock_leased_job(id, token, caller);
	if (!jobq_complete_leased(id, token))
		elog(ERROR, "jobq: locked job %lld vanished", (long long) id);
	restore_user(&sw);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * jobq.release(id bigint, token bigint, delay interval DEFAULT '0'): hand
 * the job back, available again after delay.  The attempt stays counted,
 * as with Laravel's release().
 */
Datum
jobq_consumer_release(PG_FUNCTION_ARGS)
{
	int64		id;
	int64		token;
	int64		delay_ms;
	Oid			caller = GetUserId();
	OwnerSwitch sw;
	JobqJob		jj;

	check_id_token(fcinfo);
	check_not_null(fcinfo, 2, "delay");
	id = PG_GETARG_INT64(0);
	token = PG_GETARG_INT64(1);
	delay_ms = jobq_checked_interval_ms(PG_GETARG_INTERVAL_P(2), "delay", 0,
										(int64) JOBQ_MAX_DELAY_SECS * 1000);
	SPI_connect();
	become_owner(&sw);
	lock_leased_job(id, token, caller);
	if (!jobq_job_load(id, &jj, CurrentMemoryContext))
		elog(ERROR, "jobq: job %lld disappeared", (long long) id);
	(void) jobq_release_job(&jj, delay_ms);
	restore_user(&sw);
	SPI_finish();
	PG_RETURN_VOID();
}

/* A key of a jsonb object as text, NULL if absent or null. */
static char *
jsonb_key_text(Jsonb *jb, const char *key)
{
	JsonbValue	v;

	if (!JB_ROOT_IS_OBJECT(jb) ||
		getKeyJsonValueFromContainer(&jb->root, key, strlen(key), &v) == NULL)
		return NULL;
	if (v.type == jbvNull)
		return NULL;
	if (v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	if (v.type == jbvBinary)
		return JsonbToCString(NULL, v.val.binary.data, v.val.binary.len);
	return JsonbToCString(NULL, &JsonbValueToJsonb(&v)->root, -1);
}

/*
 * The error a consumer reported: an object with any of sqlstate, message,
 * detail, hint and context, or any other JSON value as the message.
 */
static void
error_from_jsonb(Jsonb *jb, JobqError *err)
{
	char	   *sqlstate = NULL;

	memset(err, 0, sizeof(*err));
	if (jb != NULL)
	{
		if (JB_ROOT_IS_OBJECT(jb))
		{
			sqlstate = jsonb_key_text(jb, "sqlstate");
			err->message = jsonb_key_text(jb, "message");
			err->detail = jsonb_key_text(jb, "detail");
			err->hint = jsonb_key_text(jb, "hint");
			err->context = jsonb_key_text(jb, "context");
		}
		else
		{
			JsonbValue	v;

			if (JB_ROOT_IS_SCALAR(jb) && JsonbExtractScalar(&jb->root, &v) &&
				v.type == jbvString)
				err->message = pnstrdup(v.val.string.val, v.val.string.len);
		}
		if (err->message == NULL)
			err->message = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	}
	if (err->message == NULL || err->message[0] == '\0')
		err->message = "the consumer reported a failure";

	/* a valid SQLSTATE of the consumer's, or our own */
	if (sqlstate != NULL && strlen(sqlstate) == 5 &&
		strspn(sqlstate, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 5)
		strlcpy(err->sqlstate, sqlstate, sizeof(err->sqlstate));
	else
		strlcpy(err->sqlstate, "JQ702", sizeof(err->sqlstate));
}

/*
 * jobq.fail(id bigint, token bigint, error jsonb DEFAULT NULL): the attempt
 * failed.  The job is retried after its backoff, or moved to the failed
 * store if that was its last try.
 */
Datum
jobq_consumer_fail(PG_FUNCTION_ARGS)
{
	int64		id;
	int64		token;
	Oid			caller = GetUserId();
	OwnerSwitch sw;
	JobqJob		jj;
	JobqError	err;

	check_id_token(fcinfo);
	id = PG_GETARG_INT64(0);
	token = PG_GETARG_INT64(1);
	error_from_jsonb(PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2), &err);

	SPI_connect();
	become_owner(&sw);
	lock_leased_job(id, token, caller);
	if (!jobq_job_load(id, &jj, CurrentMemoryContext))
		elog(ERROR, "jobq: job %lld disappeared", (long long) id);
	jobq_attempt_failed(&jj, &err);
	restore_user(&sw);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * jobq.extend(id bigint, token bigint, lease interval DEFAULT '90 s')
 *	RETURNS timestamptz
 *
 * The lease now ends lease from now (it may also be shortened); returns
 * the new expiry.
 */
Datum
jobq_consumer_extend(PG_FUNCTION_ARGS)
{
	int64		id;
	int64		token;
	Interval   *lease;
	Oid			caller = GetUserId();
	OwnerSwitch sw;
	Datum		values[2];
	bool		isnull;
	TimestampTz expiry;

	check_id_token(fcinfo);
	check_not_null(fcinfo, 2, "lease");
	id = PG_GETARG_INT64(0);
	token = PG_GETARG_INT64(1);
	lease = PG_GETARG_INTERVAL_P(2);
	(void) lease_ms(lease);
	SPI_connect();
	if (extend_plan == NULL)
	{
		Oid			types[2] = {INT8OID, INTERVALOID};

		extend_plan = jobq_prepare_kept("UPDATE jobq.jobs"
										"   SET available_at = pg_catalog.statement_timestamp()"
										"       OPERATOR(pg_catalog.+) $2"
										" WHERE id OPERATOR(pg_catalog.=) $1"
										" RETURNING available_at",
										2, types);
	}
	become_owner(&sw);
	lock_leased_job(id, token, caller);
	values[0] = Int64GetDatum(id);
	values[1] = IntervalPGetDatum(lease);
	if (SPI_execute_plan(extend_plan, values, NULL, false, 1) != SPI_OK_UPDATE_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "jobq: could not extend the lease of job %lld", (long long) id);
	expiry = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
	restore_user(&sw);
	SPI_finish();
	PG_RETURN_TIMESTAMPTZ(expiry);
}
