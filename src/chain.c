/*-------------------------------------------------------------------------
 *
 * chain.c
 *		Job chains (Laravel's withChain): jobq.dispatch_chain(),
 *		jobq.retry_chain(), and what happens when a link completes or fails
 *		for good.
 *
 * A chain has no row of its own.  Each link in jobq.jobs carries the chain
 * id and, in its "chain" column, what is left of the chain:
 *
 *		{"on_failure": "schema.fn", "links": [link, ...]}
 *
 * where each link is the object given to dispatch_chain, checked, with the
 * handler name made canonical and the chain's queue and delay defaults
 * filled in.  Only the first link is a job; the others are data.
 *
 *	- When a link completes, complete.c deletes it and calls
 *	  jobq_chain_advance() in the same statement sequence of the same
 *	  transaction: the next link becomes a job (with the rest of the chain)
 *	  if and only if the current link's completion commits.  A link that is
 *	  retried or released is not complete, so the chain waits.
 *	- When a link fails for good, its failed record keeps chain_id and the
 *	  chain (so the links that did not run are known), and the chain's
 *	  on_failure function runs once, as the chain's owner, in the failing
 *	  transaction (jobq_chain_failed).
 *	- jobq.retry_chain(failed_id) queues the failed link again with the
 *	  rest of its chain: when it completes, the chain resumes.
 *
 * Each link is a new job: attempts start at 0 and its tries, timeout and
 * backoff are its own (or its handler's registered defaults).
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/chain.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_dispatch_chain);

/* the most links one chain may have */
#define JOBQ_MAX_CHAIN_LINKS 1000

static SPIPlanPtr links_plan = NULL;
static SPIPlanPtr normalize_plan = NULL;
static SPIPlanPtr next_link_plan = NULL;

/*
 * Fill jobq_insert_job()'s arguments from a row: col[i] is the column
 * holding argument i, 0 for those the caller sets (left NULL here).
 */
static void
insert_args_from_row(HeapTuple tup, TupleDesc desc, const int *col,
					 Datum *values, char *nulls)
{
	memset(nulls, 'n', JOBQ_INS_NARGS);
	for (int i = 0; i < JOBQ_INS_NARGS; i++)
	{
		bool		isnull;

		if (col[i] == 0)
			continue;
		values[i] = SPI_getbinval(tup, desc, col[i], &isnull);
		nulls[i] = isnull ? 'n' : ' ';
	}
}

/* columns of next_link_plan holding each insert argument */
static const int next_link_cols[JOBQ_INS_NARGS] = {1, 2, 3, 0, 4, 5, 6, 7, 0, 8};

/* the keys a link may have */
#define LINK_KEYS "{job,payload,queue,delay,tries,timeout,backoff}"

/* columns of links_plan */
enum
{
	LINK_TYPE = 1, LINK_JOB, LINK_QUEUE, LINK_DELAY,
	LINK_TRIES, LINK_TIMEOUT, LINK_BACKOFF, LINK_UNKNOWN_KEYS, LINK_PAYLOAD_TYPE
};

/* error context: which link is being checked */
static void
link_error_callback(void *arg)
{
	errcontext("chain link %d", *(int *) arg);
}

static char *
text_col(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static Interval *
interval_from_text(const char *s)
{
	return DatumGetIntervalP(DirectFunctionCall3(interval_in,
												 CStringGetDatum(s),
												 ObjectIdGetDatum(InvalidOid),
												 Int32GetDatum(-1)));
}

/*
 * Check every link of a chain as the calling role would be checked by
 * jobq.dispatch (handler, EXECUTE right, queue, delay, tries, timeout,
 * backoff).  Returns the canonical handler names, one per link.
 */
static Datum *
check_links(Jsonb *links, int *nlinks)
{
	Datum		values[1];
	Datum	   *canonical;
	int			n;
	ErrorContextCallback errcb;
	int			linkno = 0;

	if (links_plan == NULL)
	{
		Oid			types[1] = {JSONBOID};

		links_plan = jobq_prepare_kept(
									   "SELECT pg_catalog.jsonb_typeof(e.l),"
									   "  e.l OPERATOR(pg_catalog.->>) 'job',"
									   "  e.l OPERATOR(pg_catalog.->>) 'queue',"
									   "  e.l OPERATOR(pg_catalog.->>) 'delay',"
									   "  e.l OPERATOR(pg_catalog.->>) 'tries',"
									   "  e.l OPERATOR(pg_catalog.->>) 'timeout',"
									   "  e.l OPERATOR(pg_catalog.->>) 'backoff',"
									   "  (SELECT pg_catalog.string_agg(k, ', ' ORDER BY k)"
									   "     FROM pg_catalog.jsonb_object_keys(CASE"
									   "       WHEN pg_catalog.jsonb_typeof(e.l) OPERATOR(pg_catalog.=) 'object'"
									   "       THEN e.l ELSE '{}' END) AS k"
									   "    WHERE k OPERATOR(pg_catalog.<>) ALL ('" LINK_KEYS "'::pg_catalog.text[])),"
									   "  pg_catalog.jsonb_typeof(e.l OPERATOR(pg_catalog.->) 'payload')"
									   " FROM pg_catalog.jsonb_array_elements($1) WITH ORDINALITY AS e(l, n)"
									   " ORDER BY e.n",
									   1, types);
	}

	values[0] = JsonbPGetDatum(links);
	if (SPI_execute_plan(links_plan, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not read the chain's links");
	n = (int) SPI_processed;
	canonical = palloc(sizeof(Datum) * Max(n, 1));

	errcb.callback = link_error_callback;
	errcb.arg = &linkno;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *type = text_col(tup, desc, LINK_TYPE);
		char	   *unknown = text_col(tup, desc, LINK_UNKNOWN_KEYS);
		char	   *job = text_col(tup, desc, LINK_JOB);
		char	   *payload_type = text_col(tup, desc, LINK_PAYLOAD_TYPE);
		char	   *s;
		char	   *name;

		linkno = i + 1;
		if (strcmp(type, "object") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("chain link %d must be a JSON object, not %s", linkno, type),
					 errhint("Give each link as {\"job\": \"schema.fn\", \"payload\": {...}, ...}.")));
		if (unknown != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("chain link %d has unknown keys: %s", linkno, unknown),
					 errhint("A link may have job, payload, queue, delay, tries, timeout and backoff.")));
		if (job == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("chain link %d has no job", linkno),
					 errhint("Name the link's handler: {\"job\": \"schema.fn\"}.")));
		if (payload_type != NULL && strcmp(payload_type, "null") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("the payload of chain link %d must not be null", linkno),
					 errhint("Leave it out, or pass {}, for a job without data.")));
		if ((s = text_col(tup, desc, LINK_QUEUE)) != NULL)
			jobq_check_queue_name(s);
		if ((s = text_col(tup, desc, LINK_DELAY)) != NULL)
			jobq_check_delay(interval_from_text(s));
		if ((s = text_col(tup, desc, LINK_TRIES)) != NULL)
			jobq_check_tries(DatumGetInt32(DirectFunctionCall1(int4in,
															   CStringGetDatum(s))));
		if ((s = text_col(tup, desc, LINK_TIMEOUT)) != NULL)
			jobq_check_timeout(interval_from_text(s));
		if ((s = text_col(tup, desc, LINK_BACKOFF)) != NULL)
			jobq_check_backoff(interval_from_text(s));

		(void) jobq_resolve_handler(job, &name, true);
		canonical[i] = CStringGetTextDatum(name);
	}

	error_context_stack = errcb.previous;
	*nlinks = n;
	return canonical;
}

/*
 * Resolve a chain's on_failure function: name(jsonb, jsonb), a function
 * the caller may execute.  Returns its schema-qualified name.
 */
static char *
resolve_on_failure(const char *name, Oid *fnoid_out, bool missing_ok)
{
	Oid			argtypes[2] = {JSONBOID, JSONBOID};
	Oid			fnoid;
	HeapTuple	tup;
	Form_pg_proc proc;
	char	   *canonical;

	fnoid = LookupFuncName(stringToQualifiedNameList(name), 2, argtypes, true);
	if (!OidIsValid(fnoid))
	{
		if (missing_ok)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("chain failure handler %s(jsonb, jsonb) does not exist", name),
				 errhint("It receives the failed link's payload and the error: CREATE FUNCTION ... (payload jsonb, error jsonb).")));
	}
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fnoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fnoid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("chain failure handler %s must be a function not returning a set",
						format_procedure(fnoid))));
	canonical = quote_qualified_identifier(get_namespace_name(proc->pronamespace),
										   NameStr(proc->proname));
	ReleaseSysCache(tup);
	*fnoid_out = fnoid;
	return canonical;
}

/*
 * Turn the first of the chain's links into a job, carrying the rest.
 * Returns the new job's id, or 0 if no link is left.  Caller has SPI
 * connected and runs as the extension owner.
 */
static int64
dispatch_next_link(Oid owner, int64 chain_id, Jsonb *chain)
{
	Datum		values[JOBQ_INS_NARGS];
	char		nulls[JOBQ_INS_NARGS];
	Datum		args[1];
	HeapTuple	tup;
	TupleDesc	desc;

	if (next_link_plan == NULL)
	{
		Oid			types[1] = {JSONBOID};

		next_link_plan = jobq_prepare_kept(
										   "SELECT n OPERATOR(pg_catalog.->>) 'job',"
										   "  COALESCE(n OPERATOR(pg_catalog.->) 'payload', '{}'),"
										   "  n OPERATOR(pg_catalog.->>) 'queue',"
										   "  (n OPERATOR(pg_catalog.->>) 'tries')::pg_catalog.int4,"
										   "  (n OPERATOR(pg_catalog.->>) 'timeout')::pg_catalog.interval,"
										   "  (n OPERATOR(pg_catalog.->>) 'backoff')::pg_catalog.interval,"
										   "  pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)"
										   "    COALESCE((n OPERATOR(pg_catalog.->>) 'delay')::pg_catalog.interval,"
										   "             '0'::pg_catalog.interval),"
										   "  $1 OPERATOR(pg_catalog.#-) '{links,0}'"
										   " FROM (SELECT $1 OPERATOR(pg_catalog.->) 'links'"
										   "         OPERATOR(pg_catalog.->) 0 AS n) AS s"
										   " WHERE n IS NOT NULL",
										   1, types);
	}

	args[0] = JsonbPGetDatum(chain);
	if (SPI_execute_plan(next_link_plan, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not read the next link of chain %lld",
			 (long long) chain_id);
	if (SPI_processed == 0)
		return 0;				/* that was the last link */

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	insert_args_from_row(tup, desc, next_link_cols, values, nulls);
	values[JOBQ_INS_OWNER] = ObjectIdGetDatum(owner);
	values[JOBQ_INS_CHAIN_ID] = Int64GetDatum(chain_id);
	nulls[JOBQ_INS_OWNER] = nulls[JOBQ_INS_CHAIN_ID] = ' ';
	return jobq_insert_job(values, nulls);
}

/*
 * A chain link completed (complete.c): dispatch the next one.
 */
void
jobq_chain_advance(Oid owner, int64 chain_id, Jsonb *chain)
{
	(void) dispatch_next_link(owner, chain_id, chain);
}

/*
 * jobq.dispatch_chain(links jsonb, queue text DEFAULT NULL,
 *					   delay interval DEFAULT NULL, on_failure text DEFAULT NULL,
 *					   OUT job_id bigint, OUT chain_id bigint)
 *
 * Checks every link (nothing is written if any is wrong), then queues the
 * first one.  queue and delay are defaults for links that do not set their
 * own; a link's delay counts from when the link is dispatched.
 */
Datum
jobq_dispatch_chain(PG_FUNCTION_ARGS)
{
	Jsonb	   *links;
	Datum	   *canonical;
	int			nlinks;
	char	   *on_failure = NULL;
	Oid			owner = GetUserId();
	Oid			save_userid;
	int			save_sec;
	Datum		values[4];
	char		nulls[4];
	Jsonb	   *chain;
	int64		chain_id;
	int64		job_id;
	bool		isnull;
	TupleDesc	tupdesc;
	Datum		result[2];
	bool		result_nulls[2] = {false, false};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("links must not be null")));
	links = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_ARRAY(links) || JB_ROOT_IS_SCALAR(links) ||
		JB_ROOT_COUNT(links) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("links must be a non-empty JSON array of links"),
				 errhint("For example: '[{\"job\": \"app.a\"}, {\"job\": \"app.b\", \"payload\": {\"id\": 1}}]'.")));
	if (JB_ROOT_COUNT(links) > JOBQ_MAX_CHAIN_LINKS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a chain may have at most %d links", JOBQ_MAX_CHAIN_LINKS)));
	if (!PG_ARGISNULL(1))
		jobq_check_queue_name(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	if (!PG_ARGISNULL(2))
		jobq_check_delay(PG_GETARG_INTERVAL_P(2));
	if (!PG_ARGISNULL(3))
	{
		Oid			fnoid;

		on_failure = resolve_on_failure(text_to_cstring(PG_GETARG_TEXT_PP(3)),
										&fnoid, false);
		if (pg_proc_aclcheck(fnoid, owner, ACL_EXECUTE) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for chain failure handler %s", on_failure)));
	}
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "jobq: dispatch_chain must return a record");

	SPI_connect();
	canonical = check_links(links, &nlinks);

	/* the stored chain: links made canonical, chain defaults filled in */
	if (normalize_plan == NULL)
	{
		Oid			types[4] = {JSONBOID, TEXTARRAYOID, TEXTOID, INTERVALOID};

		normalize_plan = jobq_prepare_kept(
										   "SELECT pg_catalog.jsonb_agg("
										   "  pg_catalog.jsonb_build_object('queue', $3, 'delay', $4::pg_catalog.text)"
										   "  OPERATOR(pg_catalog.||) e.l"
										   "  OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('job', $2[e.n])"
										   "  ORDER BY e.n)"
										   " FROM pg_catalog.jsonb_array_elements($1) WITH ORDINALITY AS e(l, n)",
										   4, types);
	}
	values[0] = JsonbPGetDatum(links);
	values[1] = PointerGetDatum(construct_array(canonical, nlinks, TEXTOID,
												-1, false, TYPALIGN_INT));
	values[2] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	values[3] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	memset(nulls, ' ', sizeof(nulls));
	nulls[2] = PG_ARGISNULL(1) ? 'n' : ' ';
	nulls[3] = PG_ARGISNULL(2) ? 'n' : ' ';
	if (SPI_execute_plan(normalize_plan, values, nulls, true, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "jobq: could not build the chain");
	{
		Datum		links_datum = SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull);
		JsonbParseState *state = NULL;
		JsonbValue	k;
		JsonbValue	v;
		JsonbValue *res;

		/* {"on_failure": ..., "links": [...]} */
		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		if (on_failure)
		{
			k.type = jbvString;
			k.val.string.val = "on_failure";
			k.val.string.len = strlen("on_failure");
			pushJsonbValue(&state, WJB_KEY, &k);
			v.type = jbvString;
			v.val.string.val = on_failure;
			v.val.string.len = strlen(on_failure);
			pushJsonbValue(&state, WJB_VALUE, &v);
		}
		k.type = jbvString;
		k.val.string.val = "links";
		k.val.string.len = strlen("links");
		pushJsonbValue(&state, WJB_KEY, &k);
		v.type = jbvBinary;
		v.val.binary.data = &DatumGetJsonbP(links_datum)->root;
		v.val.binary.len = VARSIZE(DatumGetJsonbP(links_datum)) - VARHDRSZ;
		pushJsonbValue(&state, WJB_VALUE, &v);
		res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
		chain = JsonbValueToJsonb(res);
	}

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(jobq_extension_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_execute("SELECT pg_catalog.nextval('jobq.chain_id_seq')", false, 1) != SPI_OK_SELECT)
		elog(ERROR, "jobq: could not allocate a chain id");
	chain_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	job_id = dispatch_next_link(owner, chain_id, chain);
	SetUserIdAndSecContext(save_userid, save_sec);
	SPI_finish();

	result[0] = Int64GetDatum(job_id);
	result[1] = Int64GetDatum(chain_id);
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_nulls)));
}

/*
 * A chain link failed for good (complete.c), its failed record written:
 * run the chain's on_failure function, if any, once, as the chain's owner,
 * in a subtransaction of the failing transaction.  An error there is
 * logged and does not undo the failure.
 *
 * error is the failed record's error, to which the chain id, the failed
 * record's id and the number of links that did not run are added.
 */
void
jobq_chain_failed(int64 failed_id, Oid owner, int64 chain_id, Jsonb *chain,
				  Jsonb *payload, Jsonb *error)
{
	JsonbValue	v;
	JsonbValue *found;
	char	   *name;
	Oid			fnoid;
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec;
	Jsonb	   *err_arg;
	int			links_left = 0;

	found = getKeyJsonValueFromContainer(&chain->root, "on_failure",
										 strlen("on_failure"), &v);
	if (found == NULL || found->type != jbvString)
		return;
	name = pnstrdup(found->val.string.val, found->val.string.len);

	found = getKeyJsonValueFromContainer(&chain->root, "links",
										 strlen("links"), &v);
	if (found != NULL && found->type == jbvBinary &&
		JsonContainerIsArray(found->val.binary.data))
		links_left = JsonContainerSize(found->val.binary.data);

	{
		char	   *extra = psprintf("{\"chain_id\": %lld, \"failed_id\": %lld, \"links_left\": %d}",
									 (long long) chain_id, (long long) failed_id,
									 links_left);

		err_arg = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
													 JsonbPGetDatum(error),
													 DirectFunctionCall1(jsonb_in,
																		 CStringGetDatum(extra))));
	}

	GetUserIdAndSecContext(&save_userid, &save_sec);
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		int			gucnest;

		if (resolve_on_failure(name, &fnoid, true) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("chain failure handler %s(jsonb, jsonb) does not exist", name)));
		if (pg_proc_aclcheck(fnoid, owner, ACL_EXECUTE) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for chain failure handler %s", name)));
		SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		gucnest = NewGUCNestLevel();
		PushActiveSnapshot(GetTransactionSnapshot());
		{
			FmgrInfo	flinfo;

			LOCAL_FCINFO(fcinfo, 2);

			/* like a handler, the function's result (even NULL) is ignored */
			fmgr_info(fnoid, &flinfo);
			InitFunctionCallInfoData(*fcinfo, &flinfo, 2, InvalidOid, NULL, NULL);
			fcinfo->args[0].value = JsonbPGetDatum(payload);
			fcinfo->args[0].isnull = false;
			fcinfo->args[1].value = JsonbPGetDatum(err_arg);
			fcinfo->args[1].isnull = false;
			(void) FunctionCallInvoke(fcinfo);
		}
		PopActiveSnapshot();
		AtEOXact_GUC(false, gucnest);
		SetUserIdAndSecContext(save_userid, save_sec);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		SetUserIdAndSecContext(save_userid, save_sec);
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ereport(WARNING,
				(errmsg("jobq: failure handler %s of chain %lld failed: %s",
						name, (long long) chain_id, edata->message),
				 errdetail("The link's failed record %lld is kept.",
						   (long long) failed_id)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
}

