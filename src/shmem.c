/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		Shared memory: the registry of processes that run jobs, and the
 *		wake-up of sleeping workers when a dispatching transaction commits.
 *
 * The registry has one slot per process that can run jobs (background
 * workers and sessions inside CALL jobq.work()); its size is MaxBackends,
 * so it is bounded by construction.  It is only an index for waking and
 * observing workers: whether a reservation is still held is decided by the
 * reservation token's lock (reserve.c), which needs no shared memory and
 * vanishes with its process, crash restarts included.
 *
 * Copyright (c) 2026, jobq developers
 *
 * IDENTIFICATION
 *		src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "jobq.h"

JobqShared *jobq_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* this process's slot, released at exit if still held */
static JobqSlot *my_slot = NULL;
static bool exit_callback_registered = false;

/*
 * A dispatch happened in the current transaction: wake, at commit, the
 * workers that serve the queues it dispatched to (all of the database's
 * workers when wake_all, or when there were more queues than fit here).
 */
#define JOBQ_WAKE_QUEUES 8
static bool wake_pending = false;
static bool wake_all = false;
static bool wake_everyone = false;	/* a delayed job: all must learn when */
static int64 wake_njobs = 0;
static int	wake_nqueues = 0;
static char wake_queues[JOBQ_WAKE_QUEUES][JOBQ_MAX_QUEUE_NAME_LEN + 1];
static int64 wake_queue_jobs[JOBQ_WAKE_QUEUES];	/* jobs dispatched to each */
/* jobq.restart() was called: tell the database's workers at commit */
static bool restart_pending = false;
/* jobq.pools was changed: tell the database's pool manager at commit */
static bool pools_pending = false;
static bool xact_callback_registered = false;

static Size
jobq_shmem_size(void)
{
	return add_size(offsetof(JobqShared, slots),
					mul_size(MaxBackends, sizeof(JobqSlot)));
}

static void
jobq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(jobq_shmem_size());
	RequestNamedLWLockTranche("jobq", 1);
}

static void
jobq_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	/* after a crash restart everything here is new */
	jobq_shared = NULL;
	my_slot = NULL;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	jobq_shared = ShmemInitStruct("jobq", jobq_shmem_size(), &found);
	if (!found)
	{
		memset(jobq_shared, 0, jobq_shmem_size());
		jobq_shared->lock = &(GetNamedLWLockTranche("jobq"))->lock;
		pg_atomic_init_u64(&jobq_shared->slot_exits, 0);
		pg_atomic_init_u64(&jobq_shared->pools_changed, 0);
		jobq_shared->nslots = MaxBackends;
		for (int i = 0; i < jobq_shared->nslots; i++)
			pg_atomic_init_u32(&jobq_shared->slots[i].sleeping, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Called from _PG_init while shared_preload_libraries is processed.
 */
void
jobq_shmem_init_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = jobq_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = jobq_shmem_startup;
}

bool
jobq_shmem_available(void)
{
	return jobq_shared != NULL;
}

/*
 * Wake every registered process of a database: after a dispatch committed,
 * or after a process left (its reservations may need recovering).
 * Caller holds the registry lock.
 */
int
jobq_wake_database_locked(Oid dboid)
{
	int			n = 0;

	for (int i = 0; i < jobq_shared->nslots; i++)
	{
		JobqSlot   *s = &jobq_shared->slots[i];

		if (s->state != JOBQ_SLOT_FREE && s->dboid == dboid && s->latch)
		{
			SetLatch(s->latch);
			if (!s->in_session)
				n++;
		}
	}
	return n;
}

static void
slot_exit_callback(int code, Datum arg)
{
	if (my_slot != NULL)
		jobq_slot_release(my_slot);
}

/*
 * Register the calling process in the registry.  Returns NULL when there is
 * no shared memory (library not preloaded) or no free slot.
 */
JobqSlot *
jobq_slot_acquire(bool in_session, int64 token, const char *queues,
				  const char *dbname, int pool_idx, const char *pool,
				  int worker_index)
{
	JobqSlot   *slot = NULL;

	if (jobq_shared == NULL)
		return NULL;
	Assert(my_slot == NULL);

	if (!exit_callback_registered)
	{
		on_shmem_exit(slot_exit_callback, (Datum) 0);
		exit_callback_registered = true;
	}

	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < jobq_shared->nslots; i++)
	{
		JobqSlot   *s = &jobq_shared->slots[i];

		/* a background worker's place may be taken by one already */
		if (!in_session && s->state != JOBQ_SLOT_FREE && !s->in_session &&
			s->worker_index == worker_index && s->pool_idx == pool_idx &&
			strcmp(s->dbname, dbname) == 0)
		{
			slot = NULL;
			break;
		}
		if (slot == NULL && s->state == JOBQ_SLOT_FREE)
			slot = s;
	}
	if (slot)
	{
		memset(slot, 0, sizeof(JobqSlot));
		pg_atomic_init_u32(&slot->sleeping, 0);
		slot->state = JOBQ_SLOT_IDLE;
		slot->pid = MyProcPid;
		slot->dboid = MyDatabaseId;
		slot->in_session = in_session;
		slot->worker_index = worker_index;
		slot->pool_idx = pool_idx;
		strlcpy(slot->pool, pool ? pool : "", JOBQ_POOL_NAME_LEN);
		if (dbname)
			strlcpy(slot->dbname, dbname, NAMEDATALEN);
		slot->token = token;
		slot->latch = MyLatch;
		slot->started_at = GetCurrentTimestamp();
		strlcpy(slot->queues, queues ? queues : "", JOBQ_QUEUES_TEXT_LEN);
	}
	LWLockRelease(jobq_shared->lock);

	my_slot = slot;
	return slot;
}

void
jobq_slot_set_token(JobqSlot *slot, int64 token)
{
	if (slot == NULL)
		return;
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	slot->token = token;
	LWLockRelease(jobq_shared->lock);
}

/*
 * Record the job a process is running (0: none).  Only the owner writes its
 * slot's job fields; readers take the lock, so a torn read is impossible.
 */
void
jobq_slot_set_job(JobqSlot *slot, int64 job_id)
{
	if (slot == NULL)
		return;
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	slot->current_job = job_id;
	slot->state = job_id ? JOBQ_SLOT_BUSY : JOBQ_SLOT_IDLE;
	slot->job_started = job_id ? GetCurrentTimestamp() : 0;
	LWLockRelease(jobq_shared->lock);
}

/*
 * The process is about to wait for work (true), or has stopped waiting.
 * A dispatch that finds it waiting claims it (wake_database), so that two
 * dispatches committing at once wake two processes, not the same one twice.
 */
void
jobq_slot_set_sleeping(JobqSlot *slot, bool sleeping)
{
	if (slot == NULL)
		return;
	pg_atomic_write_u32(&slot->sleeping, sleeping ? 1 : 0);
	pg_memory_barrier();
}

/*
 * The queue list a process serves changed (a reload): dispatches wake only
 * the processes that serve their queue, so this must be current.
 */
void
jobq_slot_set_queues(JobqSlot *slot, const char *queues)
{
	if (slot == NULL)
		return;
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	if (strncmp(slot->queues, queues, JOBQ_QUEUES_TEXT_LEN - 1) != 0)
	{
		strlcpy(slot->queues, queues, JOBQ_QUEUES_TEXT_LEN);

		/*
		 * A dispatch to a queue this process no longer serves may have
		 * claimed it (wake_database): pass that wake-up on.
		 */
		jobq_wake_database_locked(slot->dboid);
	}
	LWLockRelease(jobq_shared->lock);
}

/*
 * Count a finished attempt: in the process's slot (jobq.workers) and in the
 * queue's per-second counters (jobq.queues).
 */
void
jobq_slot_count(JobqSlot *slot, const char *queue, bool done)
{
	if (slot == NULL)
		return;
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	if (done)
		slot->jobs_done++;
	else
		slot->jobs_failed++;
	jobq_stats_count(slot->dboid, queue, done);
	LWLockRelease(jobq_shared->lock);
}

/*
 * Give the slot back and wake the database's other workers: whatever this
 * process still had reserved is theirs to recover.
 */
void
jobq_slot_release(JobqSlot *slot)
{
	Oid			dboid;

	if (slot == NULL || jobq_shared == NULL)
		return;
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	dboid = slot->dboid;
	if (slot->clean_exit && !slot->in_session)
	{
		/* tell the launcher to replace this worker without delay */
		JobqExitNote *note = &jobq_shared->exit_notes[jobq_shared->next_exit_note];

		strlcpy(note->dbname, slot->dbname, NAMEDATALEN);
		note->pool_idx = slot->pool_idx;
		note->index = slot->worker_index;
		note->at = GetCurrentTimestamp();
		jobq_shared->next_exit_note = (jobq_shared->next_exit_note + 1) % JOBQ_EXIT_NOTES;
	}
	memset(slot, 0, sizeof(JobqSlot));
	pg_atomic_init_u32(&slot->sleeping, 0);
	pg_atomic_fetch_add_u64(&jobq_shared->slot_exits, 1);
	jobq_wake_database_locked(dboid);
	if (jobq_shared->launcher_latch)
		SetLatch(jobq_shared->launcher_latch);
	LWLockRelease(jobq_shared->lock);
	if (slot == my_slot)
		my_slot = NULL;
}

/*
 * Is background worker number worker_index of database dbname registered?
 * (The launcher's view of its workers, which survives its own restart.)
 */
bool
jobq_worker_is_running(const char *dbname, int pool_idx, int worker_index)
{
	bool		found = false;

	LWLockAcquire(jobq_shared->lock, LW_SHARED);
	for (int i = 0; i < jobq_shared->nslots; i++)
	{
		JobqSlot   *s = &jobq_shared->slots[i];

		if (s->state != JOBQ_SLOT_FREE && !s->in_session &&
			s->worker_index == worker_index && s->pool_idx == pool_idx &&
			strcmp(s->dbname, dbname) == 0)
		{
			found = true;
			break;
		}
	}
	LWLockRelease(jobq_shared->lock);
	return found;
}

uint64
jobq_slot_exit_count(void)
{
	if (jobq_shared == NULL)
		return 0;
	return pg_atomic_read_u64(&jobq_shared->slot_exits);
}

/*
 * The launcher publishes its latch so that backends can ask it to start
 * workers at once (see wake_xact_callback).
 */
void
jobq_launcher_register_latch(void)
{
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	jobq_shared->launcher_pid = MyProcPid;
	jobq_shared->launcher_latch = MyLatch;
	LWLockRelease(jobq_shared->lock);
}

/*
 * The launcher's record of a database, created if needed; NULL if the table
 * is full.  Caller holds the registry lock exclusively.
 */
JobqDbState *
jobq_db_state(const char *dbname)
{
	JobqDbState *free_entry = NULL;

	for (int i = 0; i < JOBQ_MAX_DATABASES; i++)
	{
		JobqDbState *d = &jobq_shared->dbs[i];

		if (d->used && strcmp(d->dbname, dbname) == 0)
			return d;
		if (!d->used && free_entry == NULL)
			free_entry = d;
	}
	if (free_entry)
	{
		memset(free_entry, 0, sizeof(JobqDbState));
		free_entry->used = true;
		strlcpy(free_entry->dbname, dbname, NAMEDATALEN);
	}
	return free_entry;
}

/*
 * jobq.restart() committed: every job runner of this database leaves after
 * its current job (see jobq_runner_should_stop).
 */
static void
restart_database(void)
{
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < jobq_shared->nslots; i++)
	{
		JobqSlot   *s = &jobq_shared->slots[i];

		if (s->state != JOBQ_SLOT_FREE && s->dboid == MyDatabaseId)
		{
			s->restart_requested = true;
			if (s->latch)
				SetLatch(s->latch);
		}
	}
	LWLockRelease(jobq_shared->lock);
}

/*
 * jobq.pools changed: the database's pool manager reads it again.
 */
static void
pools_changed(void)
{
	LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < JOBQ_MAX_DATABASES; i++)
	{
		JobqDbState *d = &jobq_shared->dbs[i];

		if (d->used && d->dboid == MyDatabaseId && d->manager_latch)
			SetLatch(d->manager_latch);
	}
	LWLockRelease(jobq_shared->lock);
}

/*
 * Which queue dispatched to does a process serving this queue list (a slot's
 * text, names joined by commas) take a job of?  Returns the index of a queue
 * of wake_queues that it serves, one whose jobs still want a process
 * (want[i] > 0) if there is such; -1 if it serves none.  A list that may
 * have been cut short, or is unknown, is taken to serve them all.
 */
static int
slot_wake_queue(const char *list, const int64 *want)
{
	const char *p = list;
	int			served = -1;

	if (list[0] == '\0' || strlen(list) >= JOBQ_QUEUES_TEXT_LEN - 1)
	{
		for (int i = 0; i < wake_nqueues; i++)
			if (want[i] > 0)
				return i;
		return 0;
	}
	while (*p)
	{
		const char *end = strchr(p, ',');
		size_t		len = end ? (size_t) (end - p) : strlen(p);

		for (int i = 0; i < wake_nqueues; i++)
			if (strlen(wake_queues[i]) == len &&
				memcmp(wake_queues[i], p, len) == 0)
			{
				if (want[i] > 0)
					return i;
				served = i;
			}
		if (end == NULL)
			break;
		p = end + 1;
	}
	return served;
}

/*
 * Wake the database's processes that serve a queue dispatched to.  Of
 * those, a process that sleeps waiting for work is woken for each job
 * dispatched to a queue it serves; only when fewer of them sleep than there
 * are jobs are they all woken (each then looks for work when it is done with
 * its own), and for a delayed job, which each must learn of to sleep only
 * until it is due.  Waking more processes than there are jobs would only
 * make them race for the same rows, and a process woken for nothing runs a
 * whole reservation transaction, which a busy dispatcher would pay at every
 * commit.  A process whose latch is set always reserves afterwards, so the
 * job is taken: the commit happened before.  If the database has no
 * background worker at all, nudge the launcher, which may have backed off
 * after the workers found no jobq installed.
 */
static void
wake_database(void)
{
	int			workers = 0;
	int64		woken = 0;
	int64		want[JOBQ_WAKE_QUEUES];
	int64		wanted = 0;
	int			pass;

	/* jobs that want a process: per queue, or all in want[0] (wake_all) */
	memset(want, 0, sizeof(want));
	if (wake_all)
		want[0] = wanted = wake_njobs;
	else
	{
		for (int i = 0; i < wake_nqueues; i++)
			wanted += (want[i] = wake_queue_jobs[i]);
	}

	LWLockAcquire(jobq_shared->lock, LW_SHARED);
	for (pass = 0; pass < 2; pass++)
	{
		/*
		 * Second pass, all of them: when fewer slept than jobs were
		 * dispatched (one may be about to sleep, having looked for work just
		 * before the commit), or when a delayed job was dispatched (each
		 * sleeps until its next job is due, and must learn of this one).
		 */
		if (pass == 1 && woken > 0 && wanted == 0 && !wake_everyone)
			break;
		for (int i = 0; i < jobq_shared->nslots; i++)
		{
			JobqSlot   *s = &jobq_shared->slots[i];
			int			q;

			if (s->state == JOBQ_SLOT_FREE || s->dboid != MyDatabaseId)
				continue;
			if (pass == 0 && !s->in_session)
				workers++;
			if (s->latch == NULL)
				continue;
			q = wake_all ? 0 : slot_wake_queue(s->queues, want);
			if (q < 0)
				continue;
			if (pass == 0)
			{
				/* first pass: the sleeping ones, one per job, each claimed */
				if (want[q] <= 0 ||
					pg_atomic_read_u32(&s->sleeping) == 0 ||
					pg_atomic_exchange_u32(&s->sleeping, 0) == 0)
					continue;
				want[q]--;
				wanted--;
			}
			SetLatch(s->latch);
			woken++;
		}
	}
	LWLockRelease(jobq_shared->lock);

	if (workers == 0)
	{
		LWLockAcquire(jobq_shared->lock, LW_EXCLUSIVE);
		if (jobq_shared->launcher_latch != NULL)
		{
			jobq_shared->launcher_kicked = true;
			SetLatch(jobq_shared->launcher_latch);
		}
		LWLockRelease(jobq_shared->lock);
	}
}

/*
 * A transaction that dispatched jobs wakes the workers once it has
 * committed.  Not at XACT_EVENT_COMMIT, though: that event fires after the
 * commit is visible but before the transaction's catalog invalidations are
 * sent, so a worker woken there could see the new job yet run a stale
 * version of a handler replaced in the same transaction.  The xact callback
 * only tracks the outcome; the wake happens in the resource-release
 * callback of the last commit phase, after the invalidations went out.
 * Both run after the commit is durable: they must not throw.  jobq.restart()
 * and changes to jobq.pools are passed on the same way.
 */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* a prepared transaction wakes nobody: max_sleep covers it */
			wake_pending = false;
			wake_all = false;
			wake_njobs = 0;
			wake_nqueues = 0;
			restart_pending = false;
			pools_pending = false;
			break;
		default:
			break;
	}
}

static void
wake_release_callback(ResourceReleasePhase phase, bool isCommit,
					  bool isTopLevel, void *arg)
{
	if (phase != RESOURCE_RELEASE_AFTER_LOCKS || !isTopLevel)
		return;
	if (isCommit && jobq_shared != NULL)
	{
		if (restart_pending)
			restart_database();
		if (pools_pending)
			pools_changed();
		if (wake_pending)
			wake_database();
	}
	wake_pending = false;
	wake_all = false;
	wake_everyone = false;
	wake_njobs = 0;
	wake_nqueues = 0;
	restart_pending = false;
	pools_pending = false;
}

static void
register_callbacks(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		RegisterResourceReleaseCallback(wake_release_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * Called by jobq.restart(): tell the database's workers once this
 * transaction commits.
 */
void
jobq_restart_at_commit(void)
{
	if (jobq_shared == NULL)
		return;
	register_callbacks();
	restart_pending = true;
}

/*
 * Called by the trigger on jobq.pools.
 */
void
jobq_pools_changed_at_commit(void)
{
	if (jobq_shared == NULL)
		return;
	register_callbacks();
	pools_pending = true;
}

/*
 * Called by dispatch of njobs jobs to queue (NULL: to any queue): remember
 * to wake the workers that serve it if this transaction commits.
 */
void
jobq_wake_at_commit(const char *queue, int64 njobs)
{
	if (jobq_shared == NULL)
		return;
	register_callbacks();
	wake_pending = true;
	wake_njobs += njobs;
	if (wake_all)
		return;
	if (queue == NULL || strlen(queue) > JOBQ_MAX_QUEUE_NAME_LEN)
	{
		wake_all = true;
		return;
	}
	for (int i = 0; i < wake_nqueues; i++)
		if (strcmp(wake_queues[i], queue) == 0)
		{
			wake_queue_jobs[i] += njobs;
			return;
		}
	if (wake_nqueues == JOBQ_WAKE_QUEUES)
		wake_all = true;
	else
	{
		strlcpy(wake_queues[wake_nqueues], queue, sizeof(wake_queues[0]));
		wake_queue_jobs[wake_nqueues++] = njobs;
	}
}

/*
 * Called by dispatch of a job to queue that becomes due later: every process
 * that serves the queue is woken at commit to learn when (a process sleeps
 * until its next job is due), not only one, which may have other work when
 * the time comes.
 */
void
jobq_wake_delayed_at_commit(const char *queue)
{
	if (jobq_shared == NULL)
		return;
	jobq_wake_at_commit(queue, 0);
	wake_everyone = true;
}
