/*-------------------------------------------------------------------------
 *
 * jobq.h
 *		Declarations shared by the jobq extension's source files.
 *
 * The path of one job through the code:
 *
 *	dispatch.c	jobq.dispatch() validates the call, resolves the handler
 *				(handler.c) and inserts a row into jobq.jobs; at commit the
 *				workers of the database are woken (shmem.c).
 *	worker.c	a background worker, started and supervised by launcher.c
 *				as one process of a pool (pool.c: jobq.pools, read by each
 *				database's pool manager), connects to the database and runs
 *				the loop in runner.c until told to stop or to be replaced
 *				(jobq.restart(), pool changes, recycling limits).
 *	work.c		CALL jobq.work() runs the same loop in a client session.
 *	runner.c	the loop: recover jobs of dead workers (and external jobs
 *				whose consumers' leases ended, consumer.c), reserve a batch,
 *				execute it, sleep until the next job is due.
 *	reserve.c	the reservation transaction (FOR UPDATE SKIP LOCKED,
 *				attempts counted and committed) and recovery of reservations
 *				whose worker is gone.
 *	execute.c	the execution transaction: each job runs in a
 *				subtransaction as its owner, under its timeout, after its
 *				middleware (middleware.c) let it through.
 *	complete.c	the outcomes of an attempt: delete, retry, release in
 *				place, quiet delete, move to the failed store (running the
 *				failure handler first), each also announced by events.c
 *				(NOTIFY).
 *	chain.c		when a chain link completes, complete.c dispatches the next
 *				link in the same transaction; a failing link stops the chain.
 *	lifecycle.c	what a running handler sees and asks for (current_job(),
 *				release(), fail()), the one rule that decides whether a job
 *				is attempted again, and backoff schedules.
 *	failed.c	jobq.retry(), jobq.forget(), jobq.flush() and pruning of
 *				the failed store.
 *	status.c	jobq.restart(), and the jobq.workers / jobq.queues views over
 *				shared memory (shmem.c).
 *	utility.c	workers make way for DROP DATABASE and DROP EXTENSION.
 *	consumer.c	external jobs (no SQL handler) take another path: apps
 *				reserve them over SQL with a lease and a fencing token
 *				(jobq.reserve) and report the outcome with the token
 *				(jobq.complete/release/fail/extend); a lease that ends
 *				without a report is a failed attempt; outcomes in complete.c.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/jobq.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_H
#define JOBQ_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "utils/array.h"
#include "utils/jsonb.h"

/* SQLSTATEs of our own: class "JQ" (implementation-defined) */
#define ERRCODE_JOBQ_WORKER_LOST		MAKE_SQLSTATE('J','Q','0','0','1')
#define ERRCODE_JOBQ_TOO_MANY_ATTEMPTS	MAKE_SQLSTATE('J','Q','0','0','2')
#define ERRCODE_JOBQ_HANDLER_MISSING	MAKE_SQLSTATE('J','Q','0','0','3')
#define ERRCODE_JOBQ_FAILED_BY_HANDLER	MAKE_SQLSTATE('J','Q','0','0','4')
#define ERRCODE_JOBQ_MIDDLEWARE_FAILED	MAKE_SQLSTATE('J','Q','0','0','5')
/* SQL consumer API (consumer.c): JQ7xx */
#define ERRCODE_JOBQ_STALE_TOKEN		MAKE_SQLSTATE('J','Q','7','0','1')
#define ERRCODE_JOBQ_CONSUMER_FAILED	MAKE_SQLSTATE('J','Q','7','0','2')
#define ERRCODE_JOBQ_LEASE_EXPIRED		MAKE_SQLSTATE('J','Q','7','0','3')

/* Limits of what dispatch accepts (documented in README.md) */
#define JOBQ_MAX_QUEUE_NAME_LEN		63	/* bytes, like an identifier */
#define JOBQ_MAX_DELAY_SECS			(366 * SECS_PER_DAY)
#define JOBQ_MAX_TIMEOUT_MS			(7 * SECS_PER_DAY * 1000)
#define JOBQ_MAX_BATCH				1000	/* jobq.batch_size's maximum */
#define JOBQ_MAX_BACKOFF_STEPS		100 /* elements of a backoff_schedule */
#define JOBQ_MAX_EXP_BACKOFF_MS		((int64) SECS_PER_DAY * 1000)	/* cap */

/* ---- GUCs (init.c) ---- */
extern char *jobq_database;
extern int	jobq_workers;
extern char *jobq_queues;
extern int	jobq_timeout_ms;
extern int	jobq_tries;
extern int	jobq_backoff_ms;
extern int	jobq_max_sleep_ms;
extern int	jobq_batch_size;
extern int	jobq_batch_time_ms;
extern int	jobq_vacuum_threshold;
extern int	jobq_failed_retention_s;
extern int	jobq_events;
extern double jobq_events_queue_limit;

/* ---- shared memory and the worker registry (shmem.c) ---- */

typedef enum JobqSlotState
{
	JOBQ_SLOT_FREE = 0,
	JOBQ_SLOT_IDLE,
	JOBQ_SLOT_BUSY
} JobqSlotState;

#define JOBQ_QUEUES_TEXT_LEN 256
#define JOBQ_POOL_NAME_LEN		64	/* pool names: 1 to 63 bytes */
#define JOBQ_MAX_POOLS			64	/* pools of all databases together */
#define JOBQ_MAX_DATABASES		64	/* databases in jobq.database */
#define JOBQ_EXIT_NOTES			64
#define JOBQ_STAT_QUEUES		128 /* queues with per-second counters */
#define JOBQ_STAT_SECONDS		60

/* pool_idx of a slot or launcher entry that is not one of jobq.pools */
#define JOBQ_POOL_DEFAULT		(-1)	/* the pool defined by the GUCs */
#define JOBQ_POOL_MANAGER		(-2)	/* a database's pool manager */

typedef struct JobqSlot
{
	JobqSlotState state;
	pid_t		pid;
	Oid			dboid;
	bool		in_session;		/* CALL jobq.work(), not a background worker */
	int			worker_index;	/* background worker: its number, from 1 */
	int			pool_idx;		/* background worker: jobq_shared->pools[] */
	char		dbname[NAMEDATALEN];	/* background worker: its database */
	char		pool[JOBQ_POOL_NAME_LEN];
	int64		token;			/* reservation token, see reserve.c */
	Latch	   *latch;
	int64		current_job;	/* 0 when idle */
	TimestampTz job_started;
	TimestampTz started_at;
	int64		jobs_done;
	int64		jobs_failed;
	bool		restart_requested;	/* jobq.restart(): exit after this job */
	bool		clean_exit;		/* leaving on purpose: replace at once */
	pg_atomic_uint32 sleeping;	/* 1 while waiting for work: a dispatch
								 * that claims it (0) wakes it */
	char		queues[JOBQ_QUEUES_TEXT_LEN];
} JobqSlot;

/* One row of jobq.pools, published by its database's pool manager. */
typedef struct JobqPoolConf
{
	bool		used;
	char		dbname[NAMEDATALEN];
	char		name[JOBQ_POOL_NAME_LEN];
	char		queues[JOBQ_QUEUES_TEXT_LEN];	/* a list for jobq.queues */
	int			processes;
	int			max_sleep_ms;	/* -1: the GUC's value */
	int			timeout_ms;		/* -1: the GUC's value */
	int			tries;			/* -1: the GUC's value */
	int			backoff_ms;		/* -1: the GUC's value */
	int64		max_jobs;		/* recycling limits, 0 = none */
	int64		max_time_ms;
	int64		max_memory_kb;
	uint64		version;		/* changes whenever the definition does */
} JobqPoolConf;

/* What the launcher knows of a database in jobq.database. */
typedef struct JobqDbState
{
	bool		used;
	char		dbname[NAMEDATALEN];
	Oid			dboid;			/* set by the manager once connected */
	bool		loaded;			/* the manager has read jobq.pools */
	bool		installed;		/* jobq is installed there */
	bool		paused;			/* a command needs it free of connections */
	int			npools;
	pid_t		manager_pid;
	Latch	   *manager_latch;
} JobqDbState;

/* A background worker that left on purpose (restart, recycling). */
typedef struct JobqExitNote
{
	char		dbname[NAMEDATALEN];
	int			pool_idx;
	int			index;
	TimestampTz at;
} JobqExitNote;

/* Jobs done and failed per second, for jobq.queues. */
typedef struct JobqQueueStat
{
	Oid			dboid;			/* InvalidOid: free */
	char		queue[JOBQ_MAX_QUEUE_NAME_LEN + 1];
	TimestampTz last_used;
	int64		second[JOBQ_STAT_SECONDS];	/* which second each bucket holds */
	uint32		done[JOBQ_STAT_SECONDS];
	uint32		failed[JOBQ_STAT_SECONDS];
} JobqQueueStat;

typedef struct JobqShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	bool		launcher_kicked;	/* a backend wants workers started now */
	pg_atomic_uint64 slot_exits;	/* bumped whenever a slot is released */
	pg_atomic_uint64 pools_changed; /* bumped whenever pools[] changes */
	uint64		pool_versions;	/* source of JobqPoolConf.version */
	JobqPoolConf pools[JOBQ_MAX_POOLS];
	JobqDbState dbs[JOBQ_MAX_DATABASES];
	JobqExitNote exit_notes[JOBQ_EXIT_NOTES];
	int			next_exit_note;
	JobqQueueStat stats[JOBQ_STAT_QUEUES];
	int			nslots;
	JobqSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} JobqShared;

extern JobqShared *jobq_shared;

extern void jobq_shmem_init_hooks(void);
extern bool jobq_shmem_available(void);
extern JobqSlot *jobq_slot_acquire(bool in_session, int64 token,
								   const char *queues, const char *dbname,
								   int pool_idx, const char *pool,
								   int worker_index);
extern bool jobq_worker_is_running(const char *dbname, int pool_idx,
								   int worker_index);
extern void jobq_slot_set_token(JobqSlot *slot, int64 token);
extern void jobq_slot_set_job(JobqSlot *slot, int64 job_id);
extern void jobq_slot_set_queues(JobqSlot *slot, const char *queues);
extern void jobq_slot_count(JobqSlot *slot, const char *queue, bool done);
extern void jobq_slot_release(JobqSlot *slot);
extern uint64 jobq_slot_exit_count(void);
extern void jobq_wake_at_commit(const char *queue, int64 njobs);
extern void jobq_wake_delayed_at_commit(const char *queue);
extern void jobq_slot_set_sleeping(JobqSlot *slot, bool sleeping);
extern int	jobq_wake_database_locked(Oid dboid);
extern void jobq_restart_at_commit(void);
extern void jobq_pools_changed_at_commit(void);
extern JobqDbState *jobq_db_state(const char *dbname);
extern void jobq_launcher_register_latch(void);

/* ---- handlers (handler.c) ---- */

/* A handler resolved for execution in a worker (cached per process). */
typedef struct JobqHandlerKey
{
	char		name[264];		/* the stored job (or on_failure) text */
	int			nargs;			/* 1: job handler, 2: failure handler */
} JobqHandlerKey;

typedef struct JobqHandler
{
	JobqHandlerKey key;			/* hash key */
	bool		resolved;		/* looked up since the cache was last flushed */
	Oid			fn_oid;			/* InvalidOid if it could not be resolved */
	bool		is_procedure;
	FmgrInfo	flinfo;
	Oid			acl_role;		/* last role whose EXECUTE right was checked */
	bool		acl_ok;
	double		avg_ms;			/* moving average of run time, -1 unknown */
} JobqHandler;

extern Oid	jobq_resolve_handler(const char *job, char **canonical,
								 bool check_execute);
extern JobqHandler *jobq_handler_get(const char *job);
extern JobqHandler *jobq_failure_handler_get(const char *fn);
extern Oid	jobq_resolve_failure_handler(const char *fn, char **canonical);
extern void jobq_handler_resolve(JobqHandler *h);
extern void jobq_handler_cache_init(void);

/* what middleware decided about an attempt */
typedef enum JobqMiddlewareAction
{
	JOBQ_MW_RUN,				/* run the handler */
	JOBQ_MW_RELEASE,			/* back to the queue after delay_ms */
	JOBQ_MW_FAIL,				/* fail for good with message */
	JOBQ_MW_DELETE				/* delete quietly, as if it completed */
} JobqMiddlewareAction;

typedef struct JobqMiddlewareDecision
{
	JobqMiddlewareAction action;
	int64		delay_ms;		/* JOBQ_MW_RELEASE */
	bool		refund;			/* JOBQ_MW_RELEASE: attempt not counted */
	char	   *message;		/* JOBQ_MW_FAIL */
} JobqMiddlewareDecision;

/* ---- reservation (reserve.c) ---- */

/* One job of a reserved batch, as returned by the reservation query. */
typedef struct JobqJob
{
	int64		id;
	char	   *queue;
	char	   *job;
	Jsonb	   *payload;
	Oid			owner;
	int32		attempts;		/* including this attempt */
	int32		tries;			/* effective: 0 means unlimited */
	int32		timeout_ms;		/* effective: 0 means none */
	int64		backoff_ms;		/* effective */
	int64	   *backoff_steps;	/* backoff_schedule in ms, or NULL */
	int			nbackoff_steps;
	bool		backoff_exponential;
	TimestampTz retry_until;	/* 0: none (tries decides) */
	int32		max_exceptions; /* 0: no limit */
	int32		exceptions;		/* failed attempts before this one */
	char	   *on_failure;		/* failure handler, or NULL */
	bool		delete_when_missing;	/* P0002 deletes the job quietly */
	bool		sync;			/* run by dispatch_now: no row */
	TimestampTz created_at;
	TimestampTz reserved_at;	/* when this attempt began */
	TimestampTz sort_key;		/* available_at: FIFO order in a queue */
	Jsonb	   *middleware;		/* NULL: none (middleware.c) */
	JobqMiddlewareDecision decision;	/* what the middleware decided */
	JobqHandler *handler;		/* resolved by execute.c */
	bool		started;		/* handler invoked in this attempt */
	bool		finished;		/* completion recorded in this txn */
	bool		announced;		/* its "processing" event was sent */
} JobqJob;

extern int	jobq_job_cmp(const void *a, const void *b);
extern int64 jobq_token_new(void);
extern void jobq_token_drop(int64 token);
/*
 * Where a busy worker's last reservation in a queue ended (reserve.c): its
 * next one starts there, past the index entries of jobs reserved already.
 */
#define JOBQ_SCAN_HINTS 8		/* for the first queues of a list */
typedef struct JobqScanHint
{
	bool		valid;
	TimestampTz available_at;
	int64		id;
	TimestampTz full_scan_at;	/* last scan from the queue's head */
	double		full_scan_ms;	/* how long that scan took */
} JobqScanHint;

extern int	jobq_reserve_batch(int64 token, List *queues, int max_jobs,
							   JobqJob *jobs, MemoryContext cxt,
							   JobqScanHint *hints);
extern int64 jobq_next_due_ms(List *queues);
extern int	jobq_recover_lost(int64 token_to_skip);
extern bool jobq_job_load(int64 id, JobqJob *job, MemoryContext cxt);
extern void jobq_unreserve(int64 token, JobqJob *jobs, int njobs,
						   bool refund);
extern bool jobq_spi_result_has_id(int64 id);

/* ---- completion: the outcomes of an attempt (complete.c) ---- */

/* An error as recorded in last_error and in the failed store. */
typedef struct JobqError
{
	char		sqlstate[6];
	char	   *message;
	char	   *detail;
	char	   *hint;
	char	   *context;
} JobqError;

extern void jobq_complete_jobs(int64 token, const int64 *ids, int n);
extern void jobq_attempt_failed(JobqJob *job, const JobqError *err);
extern bool jobq_release_job(JobqJob *job, int64 delay_ms);
extern void jobq_discard_job(JobqJob *job);
extern void jobq_fail_job(JobqJob *job, const JobqError *err);
extern void jobq_complete_stopped(int64 token, JobqJob *job);
extern bool jobq_complete_leased(int64 id, int64 lease_token);
extern struct _SPI_plan *jobq_prepare_kept(const char *sql, int nargs,
										   Oid *argtypes);
extern struct _SPI_plan *jobq_prepare_kept_generic(const char *sql, int nargs,
												   Oid *argtypes);
extern int	jobq_execute_indexed(struct _SPI_plan *plan, Datum *values,
								 const char *nulls, bool read_only, long count);

/* ---- events over NOTIFY (events.c) ---- */

/* jobq.events */
typedef enum JobqEventsMode
{
	JOBQ_EVENTS_NONE,
	JOBQ_EVENTS_FAILURES,
	JOBQ_EVENTS_ALL
} JobqEventsMode;

typedef enum JobqEvent
{
	JOBQ_EVENT_QUEUED,
	JOBQ_EVENT_PROCESSING,
	JOBQ_EVENT_PROCESSED,
	JOBQ_EVENT_RELEASED,
	JOBQ_EVENT_EXCEPTION,
	JOBQ_EVENT_FAILED,
	JOBQ_EVENT_DELETED
} JobqEvent;

extern bool jobq_event_wanted(JobqEvent event);
extern bool jobq_event(JobqEvent event, int64 id, const char *queue,
					   const char *job, int32 attempt, const JobqError *err);
extern void jobq_events_from_spi(JobqEvent event, const JobqError *err);

/* ---- the failed store (failed.c) ---- */

extern bool jobq_prune_failed(int retention_s);

/* ---- the SQL consumer API: external jobs (consumer.c) ---- */

typedef enum JobqRegistration
{
	JOBQ_NOT_REGISTERED,
	JOBQ_REGISTERED_SQL,		/* defaults of a SQL handler */
	JOBQ_REGISTERED_EXTERNAL	/* an external job: no SQL handler */
} JobqRegistration;

extern JobqRegistration jobq_registration(const char *job, Oid *registered_by);
extern void jobq_check_external_name(const char *job);
extern void jobq_notify_external(const char *queue, const char *job);
extern int	jobq_expire_leases(ArrayType *queues);

/* ---- execution (execute.c) ---- */

typedef struct JobqRunner JobqRunner;

extern void jobq_execute_batch(JobqRunner *runner, JobqJob *jobs, int njobs);
extern bool jobq_handler_is_slow(const JobqHandler *h);
extern bool jobq_run_failure_handler(JobqJob *job, const JobqError *err,
									 JobqError *fh_err);
extern void jobq_error_from_edata(JobqError *err, ErrorData *edata);

/* ---- the running job and the retry rule (lifecycle.c) ---- */

typedef enum JobqRequest
{
	JOBQ_REQUEST_NONE = 0,
	JOBQ_REQUEST_RELEASE,		/* jobq.release(delay) */
	JOBQ_REQUEST_FAIL			/* jobq.fail(message) */
} JobqRequest;

/* What a running handler sees (current_job()) and asked for. */
typedef struct JobqContext
{
	JobqJob    *job;
	bool		failure_handler;	/* running the job's on_failure */
	TimestampTz started_at;
	JobqRequest request;
	int64		release_ms;
	char	   *fail_message;
	struct JobqContext *outer;	/* a sync job run from inside a job */
} JobqContext;

extern void jobq_context_push(JobqContext *ctx, JobqJob *job,
							  bool failure_handler);
extern void jobq_context_pop(JobqContext *ctx);
extern bool jobq_may_try_again(const JobqJob *job, int64 delay_ms,
							   bool is_exception);
extern bool jobq_precheck(const JobqJob *job, JobqError *err);
extern int64 jobq_backoff_for(const JobqJob *job);
extern Jsonb *jobq_error_jsonb(const JobqError *err);

/* ---- the loop (runner.c) ---- */

struct JobqRunner
{
	bool		in_procedure;	/* CALL jobq.work(), not a background worker */
	int64		token;			/* reservation token (reserve.c) */
	Oid			owner;			/* extension owner: writes jobq's tables */
	bool		refresh_owner;	/* look the owner up again */
	bool		extension_missing;	/* jobq is not installed: stop */
	List	   *queues;			/* List of char *, priority order */
	int			batch_size;
	double		job_us;			/* moving average of a job's time in a
								 * batch, commit included; 0 = not known */
	int64		max_jobs;		/* 0 = no limit */
	bool		stop_when_empty;
	int64		jobs_run;
	JobqSlot   *slot;			/* NULL without shared memory */
	volatile sig_atomic_t *stop_requested;	/* set by SIGTERM in a worker */
	volatile sig_atomic_t *stop_is_shutdown;	/* ... sent by the postmaster */
	bool		cancelled;		/* a job was cancelled in CALL jobq.work() */
	bool		statement_timed_out;	/* ... by the CALL's statement_timeout */
	bool		recycle;		/* leave after the current job (restart,
								 * pool changed, recycling limit) */
	bool		(*should_recycle) (JobqRunner *runner); /* asked between jobs */
	int64		restart_generation; /* without shared memory: at start */
	TimestampTz started_at;
	void		(*on_reload) (JobqRunner *runner);	/* after SIGHUP */
	uint64		seen_exits;
	TimestampTz last_recovery;
	TimestampTz next_prune;		/* when to apply jobq.failed_retention */
	JobqJob    *jobs;			/* the batch, JOBQ_MAX_BATCH entries */
	MemoryContext loop_cxt;		/* lives as long as the loop */
	MemoryContext batch_cxt;	/* reset after every batch */
	/* the next batch, reserved by the transaction that ended the last one */
	JobqJob    *next_jobs;		/* JOBQ_MAX_BATCH entries */
	int			nnext;			/* how many; 0 = none */
	MemoryContext next_cxt;		/* holds their data */
	JobqScanHint hints[JOBQ_SCAN_HINTS];	/* per queue, list order */
};

extern void jobq_runner_loop(JobqRunner *runner);
extern char *jobq_queue_list_text(List *queues, bool quote);
extern List *jobq_queue_array_list(ArrayType *arr, bool reject_repeats);
extern bool jobq_runner_should_stop(JobqRunner *runner);
extern void jobq_runner_begin(JobqRunner *runner);
extern void jobq_runner_commit(JobqRunner *runner);
extern void jobq_runner_reserve_next(JobqRunner *runner);
extern void jobq_runner_forget_next(JobqRunner *runner);
extern List *jobq_parse_queue_list(const char *text);
extern void jobq_check_queue_name(const char *queue);

/* ---- vacuuming jobq.jobs (vacuum.c, run by the pool manager) ---- */

#define JOBQ_VACUUM_CHECK_MS		1000
extern long jobq_maybe_vacuum_jobs(TimestampTz *last_check);

/* ---- background workers (worker.c, launcher.c) ---- */

extern volatile sig_atomic_t jobq_in_handler;
extern PGDLLEXPORT void jobq_worker_main(Datum main_arg);
extern PGDLLEXPORT void jobq_launcher_main(Datum main_arg);
extern PGDLLEXPORT void jobq_pool_manager_main(Datum main_arg);
extern void jobq_launcher_register(void);

/* what the launcher passes to a worker in bgw_extra */
typedef struct JobqWorkerArgs
{
	char		dbname[NAMEDATALEN];
	int			index;
	int			pool_idx;		/* JOBQ_POOL_DEFAULT, _MANAGER or pools[] */
	uint64		pool_version;
} JobqWorkerArgs;

/* ---- pools (pool.c) ---- */

extern bool jobq_pool_load(int pool_idx, uint64 version, JobqPoolConf *conf);
extern bool jobq_pool_is_current(const char *dbname, int pool_idx,
								 uint64 version);

/* ---- DROP DATABASE and DROP EXTENSION (utility.c) ---- */

extern void jobq_utility_init_hooks(void);

/* ---- restart and monitoring (status.c) ---- */

extern int64 jobq_restart_generation_read(void);
extern void jobq_stats_count(Oid dboid, const char *queue, bool done);

/* ---- dispatch (dispatch.c): argument checks shared with other entry points ---- */

/* parameters of jobq_insert_job(), by position */
typedef enum JobqInsertArg
{
	JOBQ_INS_JOB,				/* text: canonical handler name */
	JOBQ_INS_PAYLOAD,			/* jsonb */
	JOBQ_INS_QUEUE,				/* text, NULL: registered or 'default' */
	JOBQ_INS_OWNER,				/* oid of the role the job runs as */
	JOBQ_INS_TRIES,				/* int4, NULL: registered default */
	JOBQ_INS_TIMEOUT,			/* interval, NULL: registered default */
	JOBQ_INS_BACKOFF,			/* interval, NULL: registered default */
	JOBQ_INS_AVAILABLE_AT,		/* timestamptz */
	JOBQ_INS_CHAIN_ID,			/* int8, NULL: not a chain link */
	JOBQ_INS_CHAIN,				/* jsonb: the links after this one */
	JOBQ_INS_RETRY_UNTIL,		/* timestamptz, NULL: registered retry_for */
	JOBQ_INS_MAX_EXCEPTIONS,	/* int4, NULL: registered default */
	JOBQ_INS_BACKOFF_SCHEDULE,	/* interval[], NULL: see jobq_insert_job */
	JOBQ_INS_BACKOFF_EXPONENTIAL,	/* bool, NULL: see jobq_insert_job */
	JOBQ_INS_NARGS
} JobqInsertArg;

extern int64 jobq_insert_job(Datum *values, const char *nulls);
extern void jobq_check_delay(Interval *iv);
extern void jobq_check_tries(int32 tries);
extern void jobq_check_timeout(Interval *iv);
extern void jobq_check_backoff(Interval *iv);
extern void jobq_check_backoff_schedule(ArrayType *arr);
extern void jobq_check_max_exceptions(int32 n);

/* ---- synchronous jobs (sync.c) ---- */

extern void jobq_dispatch_sync(const char *job, Oid fnoid, Datum payload,
							   Interval *timeout);

/* ---- chains (chain.c) ---- */

extern void jobq_chain_advance(Oid owner, int64 chain_id, Jsonb *chain);
extern void jobq_chain_failed(int64 failed_id, Oid owner, int64 chain_id,
							  Jsonb *chain, Jsonb *payload, Jsonb *error);

/* ---- middleware and limiters (middleware.c) ---- */

extern void jobq_middleware_check(Jsonb *middleware);
extern void jobq_middleware_run(JobqJob *job, JobqMiddlewareDecision *d);
extern void jobq_limiter_init_hooks(void);
extern int64 jobq_checked_interval_ms(Interval *iv, const char *what,
									  int64 min_ms, int64 max_ms);

/* ---- helpers ---- */

extern int64 jobq_interval_ms(Interval *iv);
extern Oid	jobq_extension_owner(void);

#endif							/* JOBQ_H */
