/*-------------------------------------------------------------------------
 *
 * handler.c
 *		Job handlers: resolving a handler name at dispatch, and the cache of
 *		resolved handlers that a worker keeps for execution.
 *
 * A handler is a function or procedure taking exactly one jsonb argument.
 * Dispatch resolves the name with the caller's search_path and stores it
 * schema-qualified; workers resolve the stored name again, so a handler
 * replaced with CREATE OR REPLACE (or dropped and created again) is picked
 * up without restarting anything.  The worker's cache is flushed whenever
 * pg_proc, pg_namespace or role membership changes.  Failure handlers
 * (jobq.register's on_failure, taking (jsonb, jsonb)) are resolved and
 * cached the same way, keyed by name and number of arguments.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/handler.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "jobq.h"

/*
 * Split "name" or "name(jsonb)" into a qualified name list.  Any argument
 * list other than a single jsonb is an error.
 */
static List *
parse_handler_name(const char *job)
{
	char	   *s = pstrdup(job);
	char	   *paren;
	int			len;

	/* trim trailing white space */
	len = strlen(s);
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		s[--len] = '\0';

	paren = strchr(s, '(');
	if (paren != NULL)
	{
		char	   *args = paren + 1;
		char	   *end = s + len - 1;

		if (*end != ')')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid job handler name \"%s\"", job),
					 errhint("Name a function or procedure, e.g. 'app.send_invoice' or 'app.send_invoice(jsonb)'.")));
		*end = '\0';
		*paren = '\0';
		while (isspace((unsigned char) *args))
			args++;
		len = strlen(args);
		while (len > 0 && isspace((unsigned char) args[len - 1]))
			args[--len] = '\0';
		if (pg_strcasecmp(args, "jsonb") != 0 &&
			pg_strcasecmp(args, "pg_catalog.jsonb") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
					 errmsg("job handler \"%s\" must take exactly one argument of type jsonb",
							job),
					 errhint("The handler receives the job's payload: CREATE FUNCTION ... (payload jsonb).")));
	}

	if (*s == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("job handler name must not be empty")));

	return stringToQualifiedNameList(s);
}

/*
 * Look up name(jsonb) (nargs = 1) or name(jsonb, jsonb) (nargs = 2) among
 * functions and procedures.
 */
static Oid
lookup_routine(List *names, int nargs)
{
	ObjectWithArgs *owa = makeNode(ObjectWithArgs);

	owa->objname = names;
	owa->objargs = NIL;
	for (int i = 0; i < nargs; i++)
		owa->objargs = lappend(owa->objargs, makeTypeNameFromOid(JSONBOID, -1));
	owa->args_unspecified = false;
	return LookupFuncWithArgs(OBJECT_ROUTINE, owa, true);
}

/* Is this pg_proc row usable as a handler taking nargs jsonb arguments? */
static bool
usable_routine(HeapTuple tup, int nargs)
{
	Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(tup);

	return proc->pronargs == nargs && !proc->proretset &&
		heap_attisnull(tup, Anum_pg_proc_proargmodes, NULL) &&
		(proc->prokind == PROKIND_FUNCTION ||
		 proc->prokind == PROKIND_PROCEDURE);
}

/*
 * Resolve a failure handler name (jobq.register's on_failure) as the
 * current user would: a function or procedure taking (payload jsonb, error
 * jsonb).  Returns its OID and, in *canonical, its schema-qualified name.
 */
Oid
jobq_resolve_failure_handler(const char *fn, char **canonical)
{
	List	   *names;
	Oid			fnoid;
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		ok;

	if (strchr(fn, '(') != NULL || fn[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid failure handler name \"%s\"", fn),
				 errhint("Name a function taking (payload jsonb, error jsonb), e.g. 'app.invoice_failed'.")));
	names = stringToQualifiedNameList(fn);
	fnoid = lookup_routine(names, 2);
	if (!OidIsValid(fnoid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("failure handler %s(jsonb, jsonb) does not exist",
						NameListToString(names)),
				 errhint("Create a function taking (payload jsonb, error jsonb), or schema-qualify the name.")));
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fnoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fnoid);
	ok = usable_routine(tup, 2);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	*canonical = quote_qualified_identifier(get_namespace_name(proc->pronamespace),
											NameStr(proc->proname));
	ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s cannot be a failure handler", format_procedure(fnoid)),
				 errdetail("A failure handler takes (payload jsonb, error jsonb), has no output arguments and does not return a set.")));
	return fnoid;
}

/*
 * Resolve a handler name as the current user would, with the current
 * search_path.  Returns the function's OID and, in *canonical, its
 * schema-qualified name (the form stored in jobq.jobs).  Errors name the
 * problem: unknown function, wrong signature, unusable kind, missing
 * EXECUTE privilege (if check_execute).
 */
Oid
jobq_resolve_handler(const char *job, char **canonical, bool check_execute)
{
	List	   *names = parse_handler_name(job);
	Oid			fnoid;
	HeapTuple	tup;
	Form_pg_proc proc;

	fnoid = lookup_routine(names, 1);
	if (!OidIsValid(fnoid))
	{
		FuncCandidateList others;

		others = FuncnameGetCandidates(names, -1, NIL, false, false, false,
									   true);
		if (others != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("job handler %s must take exactly one argument of type jsonb",
							NameListToString(names)),
					 errdetail("A routine of that name exists: %s.",
							   format_procedure(others->oid)),
					 errhint("The handler receives the job's payload: CREATE FUNCTION ... (payload jsonb).")));
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("job handler %s(jsonb) does not exist",
						NameListToString(names)),
				 errhint("Create a function or procedure taking one jsonb argument, or schema-qualify the name.")));
	}

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fnoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fnoid);
	proc = (Form_pg_proc) GETSTRUCT(tup);

	if (proc->prokind == PROKIND_AGGREGATE || proc->prokind == PROKIND_WINDOW)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s is an aggregate or window function, not a job handler",
						format_procedure(fnoid))));
	if (proc->proretset)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("job handler %s must not return a set",
						format_procedure(fnoid))));
	if (proc->pronargs != 1 ||
		!heap_attisnull(tup, Anum_pg_proc_proargmodes, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("job handler %s must take exactly one argument of type jsonb",
						format_procedure(fnoid)),
				 errdetail("A handler cannot have output arguments.")));

	if (canonical)
		*canonical = quote_qualified_identifier(get_namespace_name(proc->pronamespace),
												NameStr(proc->proname));
	ReleaseSysCache(tup);

	if (check_execute &&
		pg_proc_aclcheck(fnoid, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for job handler %s",
						format_procedure(fnoid)),
				 errdetail("A job runs with the privileges of the role that dispatches it."),
				 errhint("GRANT EXECUTE ON FUNCTION %s TO %s;",
						 format_procedure(fnoid),
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
	return fnoid;
}

/* ---- the worker's cache ---- */

static HTAB *handler_cache = NULL;
static MemoryContext handler_cxt = NULL;
static bool handler_cache_stale = false;
static bool callbacks_registered = false;

static void
handler_inval_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	/* only flag it: entries may be in use right now */
	handler_cache_stale = true;
}

void
jobq_handler_cache_init(void)
{
	HASHCTL		ctl;

	if (handler_cache != NULL)
		return;

	handler_cxt = AllocSetContextCreate(TopMemoryContext, "jobq handlers",
										ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(JobqHandlerKey);
	ctl.entrysize = sizeof(JobqHandler);
	ctl.hcxt = handler_cxt;
	handler_cache = hash_create("jobq handlers", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/*
	 * The cache is rebuilt after every catalog change, but the callbacks
	 * must be registered only once per process: core has a fixed number of
	 * slots for them and no way to unregister.
	 */
	if (!callbacks_registered)
	{
		CacheRegisterSyscacheCallback(PROCOID, handler_inval_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, handler_inval_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, handler_inval_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, handler_inval_callback, (Datum) 0);
		callbacks_registered = true;
	}
}

/*
 * Flush the cache if the catalogs changed.  Call only between jobs, when no
 * entry is in use.
 */
static void
handler_cache_refresh(void)
{
	if (!handler_cache_stale)
		return;
	handler_cache_stale = false;
	hash_destroy(handler_cache);
	MemoryContextDelete(handler_cxt);
	handler_cache = NULL;
	jobq_handler_cache_init();
}

/*
 * The cache entry of the handler stored as 'job', created (unresolved) if
 * new.  Does not throw for a bad name: resolution happens later, inside the
 * job's subtransaction (jobq_handler_resolve).  Call between jobs: it may
 * flush the cache.  Any backend may call it (a SQL consumer's jobq.fail()
 * runs the job's failure handler), so the cache is created on first use.
 */
static JobqHandler *
handler_lookup(const char *name, int nargs)
{
	JobqHandler *h;
	bool		found;
	JobqHandlerKey key;

	/* a backend that runs no jobs may still run a failure handler */
	if (handler_cache == NULL)
		jobq_handler_cache_init();
	handler_cache_refresh();

	memset(&key, 0, sizeof(key));
	strlcpy(key.name, name, sizeof(key.name));
	key.nargs = nargs;
	h = hash_search(handler_cache, &key, HASH_ENTER, &found);
	if (!found)
	{
		h->resolved = false;
		h->fn_oid = InvalidOid;
		h->is_procedure = false;
		h->acl_role = InvalidOid;
		h->acl_ok = false;
		h->avg_ms = -1;
	}
	return h;
}

JobqHandler *
jobq_handler_get(const char *job)
{
	return handler_lookup(job, 1);
}

/*
 * The cache entry of a failure handler (on_failure), taking (jsonb, jsonb).
 * Call between jobs, like jobq_handler_get.
 */
JobqHandler *
jobq_failure_handler_get(const char *fn)
{
	return handler_lookup(fn, 2);
}

/*
 * Resolve a cache entry: find the function again by its stored
 * (qualified) name.  A handler that no longer exists, or no longer has the
 * right shape, leaves fn_oid invalid; a name that does not parse throws.
 * Call inside the job's subtransaction.
 */
void
jobq_handler_resolve(JobqHandler *h)
{
	List	   *names;
	Oid			fnoid;
	HeapTuple	tup;

	if (h->resolved)
		return;

	names = stringToQualifiedNameList(h->key.name);
	fnoid = lookup_routine(names, h->key.nargs);
	if (OidIsValid(fnoid))
	{
		tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fnoid));
		if (HeapTupleIsValid(tup))
		{
			Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(tup);

			if (usable_routine(tup, h->key.nargs))
			{
				fmgr_info_cxt(fnoid, &h->flinfo, handler_cxt);
				h->fn_oid = fnoid;
				h->is_procedure = (proc->prokind == PROKIND_PROCEDURE);
			}
			ReleaseSysCache(tup);
		}
	}
	h->resolved = true;
}
