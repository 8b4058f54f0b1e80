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
 *	worker.c	a background worker, started and supervised by launcher.c,
 *				connects to the database and runs the loop in runner.c.
 *	work.c		CALL jobq.work() runs the same loop in a client session.
 *	runner.c	the loop: recover jobs of dead workers, reserve a batch,
 *				execute it, sleep until the next job is due.
 *	reserve.c	the reservation transaction (FOR UPDATE SKIP LOCKED,
 *				attempts counted and committed) and recovery of reservations
 *				whose worker is gone.
 *	execute.c	the execution transaction: each job runs in a
 *				subtransaction as its owner, under its timeout; completion,
 *				retry or move to the failed store commit with its effects.
 *	consumer.c	external jobs (no SQL handler) take another path: apps
 *				reserve them over SQL with a lease and a fencing token
 *				(jobq.reserve) and report the outcome with the token
 *				(jobq.complete/release/fail/extend); outcomes in complete.c.
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
#include "utils/array.h"
#include "utils/jsonb.h"

/* SQLSTATEs of our own: class "JQ" (implementation-defined) */
#define ERRCODE_JOBQ_WORKER_LOST		MAKE_SQLSTATE('J','Q','0','0','1')
#define ERRCODE_JOBQ_TOO_MANY_ATTEMPTS	MAKE_SQLSTATE('J','Q','0','0','2')
#define ERRCODE_JOBQ_HANDLER_MISSING	MAKE_SQLSTATE('J','Q','0','0','3')
/* SQL consumer API (consumer.c): JQ7xx */
#define ERRCODE_JOBQ_STALE_TOKEN		MAKE_SQLSTATE('J','Q','7','0','1')
#define ERRCODE_JOBQ_CONSUMER_FAILED	MAKE_SQLSTATE('J','Q','7','0','2')
#define ERRCODE_JOBQ_LEASE_EXPIRED		MAKE_SQLSTATE('J','Q','7','0','3')

/* Limits of what dispatch accepts (documented in README.md) */
#define JOBQ_MAX_QUEUE_NAME_LEN		63	/* bytes, like an identifier */
#define JOBQ_MAX_DELAY_SECS			(366 * SECS_PER_DAY)
#define JOBQ_MAX_TIMEOUT_MS			(7 * SECS_PER_DAY * 1000)
#define JOBQ_MAX_BATCH				1000	/* jobq.batch_size's maximum */

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

/* ---- shared memory and the worker registry (shmem.c) ---- */

typedef enum JobqSlotState
{
	JOBQ_SLOT_FREE = 0,
	JOBQ_SLOT_IDLE,
	JOBQ_SLOT_BUSY
} JobqSlotState;

#define JOBQ_QUEUES_TEXT_LEN 256

typedef struct JobqSlot
{
	JobqSlotState state;
	pid_t		pid;
	Oid			dboid;
	bool		in_session;		/* CALL jobq.work(), not a background worker */
	int			worker_index;	/* background worker: its number, from 1 */
	char		dbname[NAMEDATALEN];	/* background worker: its database */
	int64		token;			/* reservation token, see reserve.c */
	Latch	   *latch;
	int64		current_job;	/* 0 when idle */
	TimestampTz job_started;
	TimestampTz started_at;
	int64		jobs_done;
	int64		jobs_failed;
	char		queues[JOBQ_QUEUES_TEXT_LEN];
} JobqSlot;

typedef struct JobqShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	bool		launcher_kicked;	/* a backend wants workers started now */
	pg_atomic_uint64 slot_exits;	/* bumped whenever a slot is released */
	int			nslots;
	JobqSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} JobqShared;

extern JobqShared *jobq_shared;

extern void jobq_shmem_init_hooks(void);
extern bool jobq_shmem_available(void);
extern JobqSlot *jobq_slot_acquire(bool in_session, int64 token,
								   const char *queues, const char *dbname,
								   int worker_index);
extern bool jobq_worker_is_running(const char *dbname, int worker_index);
extern void jobq_slot_set_token(JobqSlot *slot, int64 token);
extern void jobq_slot_set_job(JobqSlot *slot, int64 job_id);
extern void jobq_slot_count(JobqSlot *slot, bool done);
extern void jobq_slot_release(JobqSlot *slot);
extern uint64 jobq_slot_exit_count(void);
extern void jobq_wake_at_commit(void);
extern void jobq_launcher_register_latch(void);

/* ---- handlers (handler.c) ---- */

/* A handler resolved for execution in a worker (cached per process). */
typedef struct JobqHandler
{
	char		name[264];		/* hash key: the stored job text */
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
extern void jobq_handler_resolve(JobqHandler *h);
extern void jobq_handler_cache_init(void);

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
	TimestampTz created_at;
	TimestampTz sort_key;		/* available_at: FIFO order in a queue */
	JobqHandler *handler;		/* resolved by execute.c */
	bool		started;		/* handler invoked in this attempt */
	bool		finished;		/* completion recorded in this txn */
} JobqJob;

extern SPIPlanPtr jobq_prepare_kept(const char *sql, int nargs, Oid *argtypes);
extern int	jobq_job_cmp(const void *a, const void *b);
extern int64 jobq_token_new(void);
extern void jobq_token_drop(int64 token);
extern int	jobq_reserve_batch(int64 token, List *queues, int max_jobs,
							   JobqJob *jobs, MemoryContext cxt);
extern int64 jobq_next_due_ms(List *queues);
extern int	jobq_recover_lost(int64 token_to_skip);
extern void jobq_unreserve(int64 token, JobqJob *jobs, int njobs,
						   bool refund);
extern void jobq_reserve_reset_plans(void);

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
extern bool jobq_complete_leased(int64 id, int64 lease_token);
extern void jobq_retry_job(int64 id, int64 backoff_ms, const JobqError *err);
extern void jobq_fail_job(int64 id, const JobqError *err);
extern void jobq_complete_reset_plans(void);

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

/* ---- execution (execute.c) ---- */

typedef struct JobqRunner JobqRunner;

extern void jobq_execute_batch(JobqRunner *runner, JobqJob *jobs, int njobs);

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
	int64		max_jobs;		/* 0 = no limit */
	bool		stop_when_empty;
	int64		jobs_run;
	JobqSlot   *slot;			/* NULL without shared memory */
	volatile sig_atomic_t *stop_requested;	/* set by SIGTERM in a worker */
	volatile sig_atomic_t *stop_is_shutdown;	/* ... sent by the postmaster */
	bool		cancelled;		/* a job was cancelled in CALL jobq.work() */
	void		(*on_reload) (JobqRunner *runner);	/* after SIGHUP */
	uint64		seen_exits;
	TimestampTz last_recovery;
	JobqJob    *jobs;			/* the batch, JOBQ_MAX_BATCH entries */
	MemoryContext loop_cxt;		/* lives as long as the loop */
	MemoryContext batch_cxt;	/* reset after every batch */
};

extern void jobq_runner_loop(JobqRunner *runner);
extern bool jobq_runner_should_stop(JobqRunner *runner);
extern void jobq_runner_begin(JobqRunner *runner);
extern void jobq_runner_commit(JobqRunner *runner);
extern List *jobq_parse_queue_list(const char *text);
extern List *jobq_queues_from_array(ArrayType *arr);
extern void jobq_check_queue_name(const char *queue);

/* ---- background workers (worker.c, launcher.c) ---- */

extern volatile sig_atomic_t jobq_in_handler;
extern PGDLLEXPORT void jobq_worker_main(Datum main_arg);
extern PGDLLEXPORT void jobq_launcher_main(Datum main_arg);
extern void jobq_launcher_register(void);

/* what the launcher passes to a worker in bgw_extra */
typedef struct JobqWorkerArgs
{
	char		dbname[NAMEDATALEN];
	int			index;
} JobqWorkerArgs;

/* ---- dispatch (dispatch.c): argument checks shared with other entry points ---- */

extern void jobq_check_tries(int32 tries);
extern void jobq_check_timeout(Interval *iv);
extern void jobq_check_backoff(Interval *iv);
extern int64 jobq_checked_interval_ms(Interval *iv, const char *what,
									  int64 min_ms, int64 max_ms);

/* ---- helpers ---- */

extern int64 jobq_interval_ms(Interval *iv);
extern Oid	jobq_extension_owner(void);

#endif							/* JOBQ_H */
