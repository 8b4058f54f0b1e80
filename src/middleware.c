/*-------------------------------------------------------------------------
 *
 * middleware.c
 *		Job middleware (jobq.register(..., middleware => ...)) and the
 *		limiters behind it, also callable from SQL: jobq.throttle() and
 *		jobq.funnel().
 *
 * Middleware is a JSON array, checked at register time and copied into each
 * job at dispatch.  Before a job's handler runs (execute.c, inside the
 * job's subtransaction, as the job's role, under its timeout), each entry
 * is applied in order; the first that does not say "run" decides:
 *
 *	{"throttle": {"key": k, "allow": n, "every": iv, "release": iv,
 *				  "consume_attempt": b}}
 *	{"funnel": {"key": k, "limit": n, "release": iv, "consume_attempt": b}}
 *	{"without_overlapping": {"key": k, "release": iv, "consume_attempt": b}}
 *	{"call": "schema.fn"}
 *
 * A key may interpolate top-level payload fields: "api:{account}".  The
 * default key is the handler's name.  A blocked job is released (put back
 * in its queue) after "release", and by default its attempt is refunded.
 *
 * throttle: a sliding-window log in shared memory.  For each key the times
 * of the last JOBQ_THROTTLE_MAX_ALLOW admitted starts are kept; a call is
 * admitted if fewer than allow of them are later than now - every, and its
 * time is then recorded.  Times are taken while holding the limiter's
 * lock, so they are in admission order.  Bound: in any half-open interval
 * of length every, at most allow calls are admitted.  (If allow+1 were
 * admitted in [t, t + every), then when the last of them was admitted the
 * allow-th most recent admitted start was at or after t, i.e. later than
 * now - every, and it would have been refused.)  Refused calls are not
 * recorded, and the state does not roll back with the caller's
 * transaction: an admitted start counts even if its job then fails.
 * This assumes the system clock does not step backwards.
 *
 * funnel: the slots of a key are transaction-level locks on advisory lock
 * tags of our own (database, 64-bit hash of the key, slot number with the
 * high bit set, so they never collide with users' advisory locks or with
 * reserve.c's token locks).  A job (or a transaction calling
 * jobq.funnel()) that gets one holds it until its transaction ends: a
 * middleware slot is released when the job's subtransaction aborts, or
 * when the worker's transaction commits, and with the backend if it dies
 * (kill -9, crash): nothing can leak.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/middleware.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "jobq.h"

PG_FUNCTION_INFO_V1(jobq_throttle);
PG_FUNCTION_INFO_V1(jobq_funnel);

/* most starts a throttle may allow per window (size of each key's log) */
#define JOBQ_THROTTLE_MAX_ALLOW		256
/* keys throttled at once, cluster-wide */
#define JOBQ_THROTTLE_KEYS			512
/* longest throttle window */
#define JOBQ_THROTTLE_MAX_EVERY_MS	((int64) SECS_PER_DAY * 1000)
/* most slots of one funnel key */
#define JOBQ_FUNNEL_MAX_LIMIT		1000
/* field4 of a funnel slot's advisory lock tag: high bit set */
#define JOBQ_FUNNEL_FIELD4(slot)	((uint16) (0x8000 | (slot)))
/* default wait before a job blocked by a funnel is tried again */
#define JOBQ_FUNNEL_DEFAULT_RELEASE_MS 1000
/* longest key, after interpolation */
#define JOBQ_MAX_KEY_LEN			1000

/* ---- throttle state in shared memory ---- */

typedef struct ThrottleEntry
{
	Oid			dboid;			/* InvalidOid: free */
	uint64		keyhash;
	TimestampTz expires;		/* no start of the log counts after this */
	int			count;			/* starts in the log */
	int			next;			/* where the next start goes */
	TimestampTz starts[JOBQ_THROTTLE_MAX_ALLOW];	/* ring, oldest at next
													 * when full */
} ThrottleEntry;

typedef struct ThrottleShared
{
	LWLock	   *lock;
	ThrottleEntry entries[JOBQ_THROTTLE_KEYS];
} ThrottleShared;

static ThrottleShared *throttle_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
limiter_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(ThrottleShared));
	RequestNamedLWLockTranche("jobq throttle", 1);
}

static void
limiter_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	throttle_shared = ShmemInitStruct("jobq throttle", sizeof(ThrottleShared),
									  &found);
	if (!found)
	{
		memset(throttle_shared, 0, sizeof(ThrottleShared));
		throttle_shared->lock = &(GetNamedLWLockTranche("jobq throttle"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Called from _PG_init while shared_preload_libraries is processed.
 */
void
jobq_limiter_init_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = limiter_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = limiter_shmem_startup;
}

static uint64
key_hash(const char *key)
{
	return hash_bytes_extended((const unsigned char *) key, strlen(key), 0);
}

/*
 * The throttle itself: admit and record a start under key if fewer than
 * allow starts were admitted in the last every_ms.  When refused, *wait_ms
 * is how long until the oldest of those leaves the window.
 */
static bool
throttle_admit(const char *key, int allow, int64 every_ms, int64 *wait_ms)
{
	uint64		hash = key_hash(key);
	ThrottleEntry *e = NULL;
	ThrottleEntry *spare = NULL;
	TimestampTz now;
	int64		every_us = every_ms * 1000;
	bool		admitted;

	if (throttle_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq throttles need jobq in shared_preload_libraries")));

	LWLockAcquire(throttle_shared->lock, LW_EXCLUSIVE);
	now = GetCurrentTimestamp();
	for (int i = 0; i < JOBQ_THROTTLE_KEYS; i++)
	{
		ThrottleEntry *c = &throttle_shared->entries[i];

		if (c->dboid == MyDatabaseId && c->keyhash == hash)
		{
			e = c;
			break;
		}
		/* a free entry, or one whose every start has left its window */
		if (spare == NULL && (c->dboid == InvalidOid || c->expires <= now))
			spare = c;
	}
	if (e == NULL)
	{
		if (spare == NULL)
		{
			LWLockRelease(throttle_shared->lock);
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("too many throttle keys in use (at most %d at once)",
							JOBQ_THROTTLE_KEYS),
					 errhint("Use fewer distinct throttle keys, or shorter windows.")));
		}
		e = spare;
		memset(e, 0, sizeof(ThrottleEntry));
		e->dboid = MyDatabaseId;
		e->keyhash = hash;
	}

	/* the allow-th most recent start decides */
	if (e->count >= allow)
	{
		int			k = (e->next - allow + JOBQ_THROTTLE_MAX_ALLOW) % JOBQ_THROTTLE_MAX_ALLOW;
		TimestampTz oldest = e->starts[k];

		admitted = (oldest <= now - every_us);
		if (!admitted)
			*wait_ms = (oldest + every_us - now) / 1000 + 1;
	}
	else
		admitted = true;

	if (admitted)
	{
		e->starts[e->next] = now;
		e->next = (e->next + 1) % JOBQ_THROTTLE_MAX_ALLOW;
		if (e->count < JOBQ_THROTTLE_MAX_ALLOW)
			e->count++;
		e->expires = Max(e->expires, now + every_us);
	}
	LWLockRelease(throttle_shared->lock);
	return admitted;
}

/*
 * The funnel itself: take one of limit slots of key until the end of the
 * current (sub)transaction.  A slot this backend holds already counts.
 */
static bool
funnel_enter(const char *key, int limit)
{
	uint64		hash = key_hash(key);

	for (int slot = 0; slot < limit; slot++)
	{
		LOCKTAG		tag;

		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (hash >> 32),
							 (uint32) hash, JOBQ_FUNNEL_FIELD4(slot));
		if (LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL)
			return true;
	}
	return false;
}

/* ---- argument checks ---- */

static void
check_key(const char *key)
{
	if (key[0] == '\0' || strlen(key) > JOBQ_MAX_KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a limiter key must be 1 to %d bytes long", JOBQ_MAX_KEY_LEN)));
}

static void
check_allow(int64 allow)
{
	if (allow < 1 || allow > JOBQ_THROTTLE_MAX_ALLOW)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("throttle allow must be between 1 and %d", JOBQ_THROTTLE_MAX_ALLOW),
				 errhint("For higher rates use a shorter window: allow 100 every 1 s rather than 6000 every 1 min.")));
}

static int64
check_every(Interval *iv)
{
	int64		ms = jobq_interval_ms(iv);

	if (ms < 1 || ms > JOBQ_THROTTLE_MAX_EVERY_MS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("throttle every must be between 1 ms and 1 day")));
	return ms;
}

static void
check_limit(int64 limit)
{
	if (limit < 1 || limit > JOBQ_FUNNEL_MAX_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("funnel limit must be between 1 and %d", JOBQ_FUNNEL_MAX_LIMIT)));
}

/*
 * jobq.throttle(key text, allow int, every interval) RETURNS boolean
 */
Datum
jobq_throttle(PG_FUNCTION_ARGS)
{
	char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		allow = PG_GETARG_INT32(1);
	int64		every_ms;
	int64		wait_ms;

	check_key(key);
	check_allow(allow);
	every_ms = check_every(PG_GETARG_INTERVAL_P(2));
	PG_RETURN_BOOL(throttle_admit(key, allow, every_ms, &wait_ms));
}

/*
 * jobq.funnel(key text, "limit" int) RETURNS boolean
 */
Datum
jobq_funnel(PG_FUNCTION_ARGS)
{
	char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		limit = PG_GETARG_INT32(1);

	check_key(key);
	check_limit(limit);
	PG_RETURN_BOOL(funnel_enter(key, limit));
}

/* ---- reading the middleware list ---- */

typedef enum MiddlewareKind
{
	MW_THROTTLE,
	MW_FUNNEL,
	MW_WITHOUT_OVERLAPPING,
	MW_CALL
} MiddlewareKind;

/* one entry of the list, parsed */
typedef struct Middleware
{
	MiddlewareKind kind;
	char	   *key;			/* NULL: the handler's name */
	int64		allow;			/* throttle */
	int64		every_ms;		/* throttle */
	int64		limit;			/* funnel */
	int64		release_ms;		/* -1: the kind's default */
	bool		consume_attempt;
	char	   *call;			/* custom: function name */
} Middleware;

static void
mw_error_callback(void *arg)
{
	errcontext("middleware entry %d", *(int *) arg);
}

static char *
jbv_text(JsonbValue *v, const char *what)
{
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("middleware %s must be a string", what)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static int64
jbv_int(JsonbValue *v, const char *what)
{
	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("middleware %s must be a number", what)));
	return DatumGetInt64(DirectFunctionCall1(numeric_int8,
											 NumericGetDatum(v->val.numeric)));
}

static int64
jbv_interval_ms(JsonbValue *v, const char *what)
{
	char	   *s = jbv_text(v, what);
	Interval   *iv;

	iv = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(s),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
	return jobq_interval_ms(iv);
}

/*
 * Parse one entry: an object with exactly one key naming the kind.
 */
static void
parse_entry(JsonbValue *elem, Middleware *mw)
{
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *kind = NULL;
	JsonbValue	params;
	int			nkeys = 0;

	memset(mw, 0, sizeof(Middleware));
	mw->release_ms = -1;
	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a middleware entry must be a JSON object"),
				 errhint("For example {\"throttle\": {\"allow\": 5, \"every\": \"10 s\"}}.")));

	it = JsonbIteratorInit(elem->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &v, true);
		kind = pnstrdup(k.val.string.val, k.val.string.len);
		params = v;
		nkeys++;
	}
	if (nkeys != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a middleware entry must have exactly one key: throttle, funnel, without_overlapping or call")));

	if (strcmp(kind, "call") == 0)
	{
		mw->kind = MW_CALL;
		mw->call = jbv_text(&params, "call");
		return;
	}
	else if (strcmp(kind, "throttle") == 0)
		mw->kind = MW_THROTTLE;
	else if (strcmp(kind, "funnel") == 0)
		mw->kind = MW_FUNNEL;
	else if (strcmp(kind, "without_overlapping") == 0)
		mw->kind = MW_WITHOUT_OVERLAPPING;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown middleware \"%s\"", kind),
				 errhint("Middleware is throttle, funnel, without_overlapping or call.")));

	if (params.type != jbvBinary || !JsonContainerIsObject(params.val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the parameters of middleware %s must be a JSON object", kind)));

	it = JsonbIteratorInit(params.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *name;

		if (tok != WJB_KEY)
			continue;
		name = pnstrdup(k.val.string.val, k.val.string.len);
		(void) JsonbIteratorNext(&it, &v, true);
		if (strcmp(name, "key") == 0)
		{
			mw->key = jbv_text(&v, "key");
			check_key(mw->key);
		}
		else if (strcmp(name, "allow") == 0 && mw->kind == MW_THROTTLE)
			mw->allow = jbv_int(&v, "allow");
		else if (strcmp(name, "every") == 0 && mw->kind == MW_THROTTLE)
			mw->every_ms = jbv_interval_ms(&v, "every");
		else if (strcmp(name, "limit") == 0 && mw->kind == MW_FUNNEL)
			mw->limit = jbv_int(&v, "limit");
		else if (strcmp(name, "release") == 0)
		{
			mw->release_ms = jbv_interval_ms(&v, "release");
			if (mw->release_ms < 0 || mw->release_ms > (int64) JOBQ_MAX_DELAY_SECS * 1000)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("middleware release must be between 0 and %d days",
								JOBQ_MAX_DELAY_SECS / SECS_PER_DAY)));
		}
		else if (strcmp(name, "consume_attempt") == 0)
		{
			if (v.type != jbvBool)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("middleware consume_attempt must be true or false")));
			mw->consume_attempt = v.val.boolean;
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("middleware %s has no parameter \"%s\"", kind, name)));
	}

	if (mw->kind == MW_THROTTLE)
	{
		if (mw->allow == 0 || mw->every_ms == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("middleware throttle needs allow and every"),
					 errhint("For example {\"throttle\": {\"allow\": 5, \"every\": \"10 s\"}}.")));
		check_allow(mw->allow);
		if (mw->every_ms < 1 || mw->every_ms > JOBQ_THROTTLE_MAX_EVERY_MS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("throttle every must be between 1 ms and 1 day")));
	}
	else if (mw->kind == MW_FUNNEL)
	{
		if (mw->limit == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("middleware funnel needs limit"),
					 errhint("For example {\"funnel\": {\"key\": \"api\", \"limit\": 2}}.")));
		check_limit(mw->limit);
	}
	else
		mw->limit = 1;			/* without_overlapping */
}

/*
 * Parse the whole list into *out (palloc'd); returns the number of entries.
 */
static int
parse_middleware(Jsonb *middleware, Middleware **out)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = 0;
	int			entry = 0;
	ErrorContextCallback errcb;

	if (!JB_ROOT_IS_ARRAY(middleware) || JB_ROOT_IS_SCALAR(middleware))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("middleware must be a JSON array"),
				 errhint("For example '[{\"without_overlapping\": {\"key\": \"invoice:{invoice_id}\"}}]'.")));
	*out = palloc(sizeof(Middleware) * Max(JB_ROOT_COUNT(middleware), 1));

	errcb.callback = mw_error_callback;
	errcb.arg = &entry;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	it = JsonbIteratorInit(&middleware->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		entry = n + 1;
		parse_entry(&v, &(*out)[n]);
		n++;
	}
	error_context_stack = errcb.previous;
	return n;
}

/*
 * The function of a {"call": ...} entry: name(jsonb) returning jsonb.
 */
static Oid
resolve_call(const char *name)
{
	Oid			fnoid = jobq_resolve_handler(name, NULL, false);

	if (get_func_rettype(fnoid) != JSONBOID || get_func_prokind(fnoid) != PROKIND_FUNCTION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("middleware function %s must be a function returning jsonb", name),
				 errhint("CREATE FUNCTION ... (context jsonb) RETURNS jsonb.")));
	return fnoid;
}

/*
 * Check a middleware list given to jobq.register: errors name what is
 * wrong; custom functions must exist.
 */
void
jobq_middleware_check(Jsonb *middleware)
{
	Middleware *mws;
	int			n = parse_middleware(middleware, &mws);

	for (int i = 0; i < n; i++)
	{
		char	   *name;
		char	   *paren;

		if (mws[i].kind != MW_CALL)
			continue;
		/* workers look it up by name with their own search_path */
		name = pstrdup(mws[i].call);
		if ((paren = strchr(name, '(')) != NULL)
			*paren = '\0';
		if (list_length(stringToQualifiedNameList(name)) < 2)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("middleware function name \"%s\" must be schema-qualified",
							mws[i].call),
					 errhint("Workers do not use your search_path: write \"schema.%s\".",
							 mws[i].call)));
		(void) resolve_call(mws[i].call);
	}
}

/* ---- applying middleware to a job ---- */

/*
 * A key with {field} replaced by the payload's top-level field.
 */
static char *
interpolate_key(const char *pattern, JobqJob *job)
{
	StringInfoData buf;
	const char *p = pattern;

	if (pattern == NULL)
		return job->job;
	initStringInfo(&buf);
	while (*p)
	{
		const char *close;

		if (*p != '{' || (close = strchr(p, '}')) == NULL)
		{
			appendStringInfoChar(&buf, *p++);
			continue;
		}
		{
			int			len = close - p - 1;
			JsonbValue	v;
			JsonbValue *found = NULL;

			if (JB_ROOT_IS_OBJECT(job->payload))
				found = getKeyJsonValueFromContainer(&job->payload->root,
													 p + 1, len, &v);
			if (found == NULL || found->type == jbvNull)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("middleware key \"%s\" needs payload field \"%.*s\", which job %lld does not have",
								pattern, len, p + 1, (long long) job->id)));
			if (found->type == jbvString)
				appendBinaryStringInfo(&buf, found->val.string.val, found->val.string.len);
			else if (found->type == jbvNumeric)
				appendStringInfoString(&buf,
									   DatumGetCString(DirectFunctionCall1(numeric_out,
																		   NumericGetDatum(found->val.numeric))));
			else if (found->type == jbvBool)
				appendStringInfoString(&buf, found->val.boolean ? "true" : "false");
			else
				appendStringInfoString(&buf, JsonbToCString(NULL, found->val.binary.data,
															found->val.binary.len));
			p = close + 1;
		}
	}
	check_key(buf.data);
	return buf.data;
}

/* the context a {"call": ...} function receives */
static Jsonb *
call_context(JobqJob *job)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"id\": %lld, \"attempts\": %d, \"tries\": %d, \"job\": ",
					 (long long) job->id, job->attempts, job->tries);
	escape_json(&buf, job->job);
	appendStringInfoString(&buf, ", \"queue\": ");
	escape_json(&buf, job->queue);
	appendStringInfoString(&buf, ", \"payload\": ");
	(void) JsonbToCString(&buf, &job->payload->root, VARSIZE(job->payload));
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * Apply a custom middleware function and read its decision:
 * NULL or {"action": "run"}; {"action": "release", "delay": iv,
 * "consume_attempt": b}; {"action": "fail", "message": text};
 * {"action": "delete"}.
 */
static void
apply_call(Middleware *mw, JobqJob *job, JobqMiddlewareDecision *d)
{
	Oid			fnoid = resolve_call(mw->call);
	FmgrInfo	flinfo;
	Datum		result;
	Jsonb	   *res;
	JsonbValue	v;
	JsonbValue *found;
	char	   *action;

	LOCAL_FCINFO(fcinfo, 1);

	if (pg_proc_aclcheck(fnoid, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for middleware function %s", mw->call)));

	fmgr_info(fnoid, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(call_context(job));
	fcinfo->args[0].isnull = false;
	result = FunctionCallInvoke(fcinfo);
	if (fcinfo->isnull)
		return;					/* run */
	res = DatumGetJsonbP(result);
	if (!JB_ROOT_IS_OBJECT(res))
		goto bad;
	found = getKeyJsonValueFromContainer(&res->root, "action", 6, &v);
	if (found == NULL || found->type != jbvString)
		goto bad;
	action = pnstrdup(found->val.string.val, found->val.string.len);
	if (strcmp(action, "run") == 0)
		return;
	if (strcmp(action, "release") == 0)
	{
		d->action = JOBQ_MW_RELEASE;
		d->refund = true;
		found = getKeyJsonValueFromContainer(&res->root, "delay", 5, &v);
		if (found != NULL && found->type != jbvNull)
		{
			d->delay_ms = jbv_interval_ms(found, "delay");
			if (d->delay_ms < 0 || d->delay_ms > (int64) JOBQ_MAX_DELAY_SECS * 1000)
				goto bad;
		}
		found = getKeyJsonValueFromContainer(&res->root, "consume_attempt", 15, &v);
		if (found != NULL && found->type == jbvBool)
			d->refund = !found->val.boolean;
		return;
	}
	if (strcmp(action, "fail") == 0)
	{
		d->action = JOBQ_MW_FAIL;
		found = getKeyJsonValueFromContainer(&res->root, "message", 7, &v);
		d->message = (found != NULL && found->type == jbvString) ?
			pnstrdup(found->val.string.val, found->val.string.len) :
			psprintf("job failed by middleware %s", mw->call);
		return;
	}
	if (strcmp(action, "delete") == 0)
	{
		d->action = JOBQ_MW_DELETE;
		return;
	}
bad:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("middleware function %s returned an invalid decision", mw->call),
			 errhint("Return NULL or {\"action\": \"run\"}, {\"action\": \"release\", \"delay\": \"10 s\"}, {\"action\": \"fail\", \"message\": \"...\"} or {\"action\": \"delete\"}.")));
}

/*
 * Apply a job's middleware, in order, until one does not say "run".
 * Called as the job's role inside its subtransaction, before its handler.
 */
void
jobq_middleware_run(JobqJob *job, JobqMiddlewareDecision *d)
{
	Middleware *mws;
	int			n;

	memset(d, 0, sizeof(JobqMiddlewareDecision));
	d->action = JOBQ_MW_RUN;
	if (job->middleware == NULL)
		return;
	n = parse_middleware(job->middleware, &mws);
	for (int i = 0; i < n && d->action == JOBQ_MW_RUN; i++)
	{
		Middleware *mw = &mws[i];
		int64		wait_ms = 0;

		switch (mw->kind)
		{
			case MW_THROTTLE:
				if (!throttle_admit(interpolate_key(mw->key, job), (int) mw->allow,
									mw->every_ms, &wait_ms))
				{
					d->action = JOBQ_MW_RELEASE;
					d->delay_ms = mw->release_ms >= 0 ? mw->release_ms : wait_ms;
					d->refund = !mw->consume_attempt;
				}
				break;
			case MW_FUNNEL:
			case MW_WITHOUT_OVERLAPPING:
				if (!funnel_enter(interpolate_key(mw->key, job), (int) mw->limit))
				{
					d->action = JOBQ_MW_RELEASE;
					d->delay_ms = mw->release_ms >= 0 ? mw->release_ms :
						JOBQ_FUNNEL_DEFAULT_RELEASE_MS;
					d->refund = !mw->consume_attempt;
				}
				break;
			case MW_CALL:
				apply_call(mw, job, d);
				break;
		}
	}
}
