/*-------------------------------------------------------------------------
 *
 * init.c
 *		Module load: configuration parameters, shared memory and utility
 *		hooks, and the launcher's registration.
 *
 * Without shared_preload_libraries the module still loads (jobq.dispatch
 * and CALL jobq.work() work in any session); only the background workers
 * and the wake-up of sleeping workers need preloading.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/init.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "jobq.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *jobq_database = NULL;
int			jobq_workers = 2;
char	   *jobq_queues = NULL;
int			jobq_timeout_ms = 60 * 1000;
int			jobq_tries = 1;
int			jobq_backoff_ms = 0;
int			jobq_max_sleep_ms = 5000;
int			jobq_batch_size = 200;
int			jobq_batch_time_ms = 2;
int			jobq_vacuum_threshold = 10000;
int			jobq_failed_retention_s = 0;

static const struct config_enum_entry events_options[] = {
	{"none", JOBQ_EVENTS_NONE, false},
	{"failures", JOBQ_EVENTS_FAILURES, false},
	{"all", JOBQ_EVENTS_ALL, false},
	{"off", JOBQ_EVENTS_NONE, true},
	{NULL, 0, false}
};

/*
 * jobq.queues must be a comma-separated list of valid queue names.
 */
static bool
check_queue_list(char **newval, void **extra, GucSource source)
{
	char	   *raw = pstrdup(*newval);
	List	   *names;

	if (!SplitGUCList(raw, ',', &names) || names == NIL)
	{
		GUC_check_errdetail("List syntax is invalid or empty.");
		return false;
	}
	list_free(names);
	pfree(raw);
	return true;
}

void
_PG_init(void)
{
	DefineCustomStringVariable("jobq.database",
							   "Databases whose jobs the background workers run (comma-separated).",
							   NULL,
							   &jobq_database,
							   "postgres",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.workers",
							"Number of worker processes per database.",
							NULL,
							&jobq_workers,
							2, 0, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("jobq.queues",
							   "Queues the workers serve, highest priority first (comma-separated).",
							   NULL,
							   &jobq_queues,
							   "default",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   check_queue_list, NULL, NULL);

	DefineCustomIntVariable("jobq.timeout",
							"Default time limit of one attempt of a job (0 = none).",
							NULL,
							&jobq_timeout_ms,
							60 * 1000, 0, JOBQ_MAX_TIMEOUT_MS,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.tries",
							"Default number of attempts of a job (0 = unlimited).",
							NULL,
							&jobq_tries,
							1, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.backoff",
							"Default delay before a failed attempt is retried.",
							NULL,
							&jobq_backoff_ms,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.max_sleep",
							"Longest time an idle worker sleeps before looking for jobs again.",
							"Workers are woken when a dispatching transaction commits and "
							"sleep until the next delayed job is due; this only caps the wait.",
							&jobq_max_sleep_ms,
							5000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.batch_size",
							"Most jobs a worker reserves at once.",
							"Fewer when the jobs are slow: no more than a worker "
							"expects to run in twice jobq.batch_time.",
							&jobq_batch_size,
							200, 1, JOBQ_MAX_BATCH,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.batch_time",
							"Longest time finished jobs of a batch wait for their commit.",
							"Before starting the next job of a batch, a worker commits the "
							"jobs already finished if the transaction is older than this.",
							&jobq_batch_time_ms,
							2, 0, 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.vacuum_threshold",
							"Dead row versions in jobq.jobs that make the pool manager vacuum it (0 = leave it to autovacuum).",
							"The pool manager looks every second; autovacuum may visit a "
							"database only once per autovacuum_naptime.",
							&jobq_vacuum_threshold,
							10000, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.failed_retention",
							"How long failed jobs are kept before the workers delete them (0 = forever).",
							"Workers delete expired failed jobs about once a minute, a few hundred at a time.",
							&jobq_failed_retention_s,
							0, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("jobq.events",
							 "Which job events are sent with NOTIFY on channel jobq.",
							 "none; failures (exception and failed); all (also queued, processing, "
							 "processed, released and deleted).  Every notifying commit takes a "
							 "lock shared by the whole server, so \"all\" serialises committing jobs.",
							 &jobq_events,
							 JOBQ_EVENTS_FAILURES,
							 events_options,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomRealVariable("jobq.events_queue_limit",
							 "Fill of the notification queue above which job events are not sent.",
							 "A full queue would make committing jobs fail; events are dropped "
							 "(and that is logged) instead.",
							 &jobq_events_queue_limit,
							 0.5, 0.0, 1.0,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("jobq");

	if (!process_shared_preload_libraries_in_progress)
		return;

	jobq_shmem_init_hooks();
	jobq_utility_init_hooks();
	jobq_limiter_init_hooks();

	/* never run jobs while pg_upgrade drives the server */
	if (!IsBinaryUpgrade)
		jobq_launcher_register();
}
