/* jobq--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION jobq" to load this file. \quit

-- Every name in this script is schema-qualified (pg_catalog included), so
-- nothing here depends on the search_path of whoever creates the extension.

--------------------------------------------------------------------------
-- Tables
--------------------------------------------------------------------------

-- Handler defaults declared with jobq.register(), like the properties of a
-- Laravel job class.  NULL: no default (the worker's setting applies).
CREATE TABLE jobq.handlers (
    job           pg_catalog.text PRIMARY KEY,   -- schema-qualified handler
    queue         pg_catalog.text,
    tries         pg_catalog.int4 CHECK (tries OPERATOR(pg_catalog.>=) 0),
    timeout       pg_catalog.interval,
    backoff       pg_catalog.interval,
    registered_at pg_catalog.timestamptz NOT NULL,
    middleware    pg_catalog.jsonb,              -- checked list, see middleware.c
    -- external: no SQL handler, only SQL consumers (jobq.reserve) run it
    external      pg_catalog.bool NOT NULL DEFAULT false,
    registered_by pg_catalog.regrole
);

-- Jobs that are waiting, delayed or running.  A job leaves this table when
-- it completes (deleted) or fails for good (moved to jobq.failed), in the
-- same transaction as its handler's effects.
CREATE TABLE jobq.jobs (
    id            bigserial PRIMARY KEY,
    queue         pg_catalog.text NOT NULL,
    job           pg_catalog.text NOT NULL,      -- schema-qualified handler
    payload       pg_catalog.jsonb NOT NULL,
    owner         pg_catalog.regrole NOT NULL,   -- the job runs as this role
    attempts      pg_catalog.int4 NOT NULL DEFAULT 0
                  CHECK (attempts OPERATOR(pg_catalog.>=) 0),
    tries         pg_catalog.int4 CHECK (tries OPERATOR(pg_catalog.>=) 0),
    timeout       pg_catalog.interval,           -- NULL: jobq.timeout
    backoff       pg_catalog.interval,           -- NULL: jobq.backoff
    available_at  pg_catalog.timestamptz NOT NULL,
    created_at    pg_catalog.timestamptz NOT NULL,
    reserved_at   pg_catalog.timestamptz,
    reserved_by   pg_catalog.int8,               -- reservation token of a worker
    last_error    pg_catalog.jsonb,              -- why the last attempt failed
    chain_id      pg_catalog.int8,               -- the chain this job is a link of
    chain         pg_catalog.jsonb,              -- the links after it (chain.c)
    middleware    pg_catalog.jsonb,              -- copied from jobq.handlers
    -- external jobs (see "SQL consumer API"): run by SQL consumers only.
    -- While leased, lease_token is the holder's fencing token and
    -- available_at is when the lease expires; reserved_by stays NULL.
    external      pg_catalog.bool NOT NULL DEFAULT false,
    lease_token   pg_catalog.int8
) WITH (fillfactor = 85,
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0,
        autovacuum_analyze_scale_factor = 0.05);

COMMENT ON TABLE jobq.jobs IS 'jobq: jobs waiting, delayed or running';

-- What workers reserve: the ready jobs of a queue in the order they became
-- available.  Delayed jobs sort last and are never scanned before due.
-- External jobs are never in it: in-server workers do not run them.
CREATE INDEX jobs_ready_idx ON jobq.jobs
    USING btree (queue, available_at, id)
    WHERE reserved_by IS NULL AND NOT external;

-- What SQL consumers reserve (jobq.reserve): external jobs, ready or with
-- an expired lease (a leased job's available_at is its lease expiry).
CREATE INDEX jobs_external_idx ON jobq.jobs
    USING btree (queue, available_at, id) WHERE external;

-- Reservations, for recovering those of workers that are gone.
CREATE INDEX jobs_reserved_idx ON jobq.jobs
    USING btree (reserved_by) WHERE reserved_by IS NOT NULL;

-- Jobs that failed for good (Laravel's failed_jobs).
CREATE TABLE jobq.failed (
    id            bigserial PRIMARY KEY,
    uuid          pg_catalog.uuid NOT NULL UNIQUE DEFAULT pg_catalog.gen_random_uuid(),
    job_id        pg_catalog.int8 NOT NULL,
    queue         pg_catalog.text NOT NULL,
    job           pg_catalog.text NOT NULL,
    payload       pg_catalog.jsonb NOT NULL,
    owner         pg_catalog.regrole NOT NULL,
    attempts      pg_catalog.int4 NOT NULL,
    tries         pg_catalog.int4,
    timeout       pg_catalog.interval,
    backoff       pg_catalog.interval,
    dispatched_at pg_catalog.timestamptz NOT NULL,
    failed_at     pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    exception     pg_catalog.text NOT NULL,      -- the error message
    sqlstate      pg_catalog.text NOT NULL,
    error         pg_catalog.jsonb NOT NULL,     -- sqlstate, message, detail, hint, context
    chain_id      pg_catalog.int8,               -- the chain the job was a link of
    chain         pg_catalog.jsonb               -- the links that did not run (chain.c)
);

COMMENT ON TABLE jobq.failed IS 'jobq: jobs that failed for good';

-- The newest failures of one queue (jobq.failed_jobs WHERE queue = ...
-- ORDER BY failed_at DESC), and the oldest of all, for jobq.flush() and
-- jobq.failed_retention.
CREATE INDEX failed_queue_idx ON jobq.failed
    USING btree (queue, failed_at DESC);
CREATE INDEX failed_at_idx ON jobq.failed
    USING btree (failed_at);

-- pg_dump keeps queued and failed jobs and registered handlers.
SELECT pg_catalog.pg_extension_config_dump('jobq.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('jobq.jobs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('jobq.failed', '');
SELECT pg_catalog.pg_extension_config_dump('jobq.failed_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('jobq.handlers', '');

--------------------------------------------------------------------------
-- Functions
--------------------------------------------------------------------------

CREATE FUNCTION jobq.dispatch(
    job          pg_catalog.text,
    payload      pg_catalog.jsonb DEFAULT '{}',
    queue        pg_catalog.text DEFAULT NULL,
    delay        pg_catalog.interval DEFAULT NULL,
    available_at pg_catalog.timestamptz DEFAULT NULL,
    tries        pg_catalog.int4 DEFAULT NULL,
    timeout      pg_catalog.interval DEFAULT NULL,
    backoff      pg_catalog.interval DEFAULT NULL,
    retry_until  pg_catalog.timestamptz DEFAULT NULL,
    max_exceptions pg_catalog.int4 DEFAULT NULL,
    backoff_schedule pg_catalog.interval[] DEFAULT NULL,
    backoff_exponential pg_catalog.bool DEFAULT NULL,
    connection   pg_catalog.text DEFAULT NULL)
RETURNS pg_catalog.int8
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_dispatch';

COMMENT ON FUNCTION jobq.dispatch(pg_catalog.text, pg_catalog.jsonb, pg_catalog.text,
    pg_catalog.interval, pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.interval,
    pg_catalog.interval, pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.interval[],
    pg_catalog.bool, pg_catalog.text)
    IS 'Queue a job: its handler will run with the payload as the calling role';

CREATE FUNCTION jobq.dispatch_many(
    job          pg_catalog.text,
    payloads     pg_catalog.jsonb[],
    queue        pg_catalog.text DEFAULT NULL,
    delay        pg_catalog.interval DEFAULT NULL,
    available_at pg_catalog.timestamptz DEFAULT NULL,
    tries        pg_catalog.int4 DEFAULT NULL,
    timeout      pg_catalog.interval DEFAULT NULL,
    backoff      pg_catalog.interval DEFAULT NULL)
RETURNS SETOF pg_catalog.int8
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_dispatch_many';

COMMENT ON FUNCTION jobq.dispatch_many(pg_catalog.text, pg_catalog.jsonb[], pg_catalog.text,
    pg_catalog.interval, pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.interval,
    pg_catalog.interval)
    IS 'Queue one job of a handler per payload in one statement; returns the ids in payload order';

CREATE FUNCTION jobq.register(
    job     pg_catalog.text,
    queue   pg_catalog.text DEFAULT NULL,
    tries   pg_catalog.int4 DEFAULT NULL,
    timeout pg_catalog.interval DEFAULT NULL,
    backoff pg_catalog.interval DEFAULT NULL,
    retry_for pg_catalog.interval DEFAULT NULL,
    max_exceptions pg_catalog.int4 DEFAULT NULL,
    backoff_schedule pg_catalog.interval[] DEFAULT NULL,
    backoff_exponential pg_catalog.bool DEFAULT NULL,
    on_failure pg_catalog.text DEFAULT NULL,
    delete_when_missing_models pg_catalog.bool DEFAULT NULL,
    middleware pg_catalog.jsonb DEFAULT NULL,
    external pg_catalog.bool DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_register';

COMMENT ON FUNCTION jobq.register(pg_catalog.text, pg_catalog.text, pg_catalog.int4,
    pg_catalog.interval, pg_catalog.interval, pg_catalog.interval, pg_catalog.int4,
    pg_catalog.interval[], pg_catalog.bool, pg_catalog.text, pg_catalog.bool,
    pg_catalog.jsonb, pg_catalog.bool)
    IS 'Declare the defaults of a job handler: queue, tries, timeout, backoff, deadline, failure handler, middleware; or an external job';

CREATE FUNCTION jobq.unregister(job pg_catalog.text)
RETURNS pg_catalog.bool
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_unregister';

CREATE PROCEDURE jobq.work(
    queues          pg_catalog.text[] DEFAULT NULL,
    max_jobs        pg_catalog.int4 DEFAULT NULL,
    stop_when_empty pg_catalog.bool DEFAULT false)
LANGUAGE C
AS 'MODULE_PATHNAME', 'jobq_work';

COMMENT ON PROCEDURE jobq.work(pg_catalog.text[], pg_catalog.int4, pg_catalog.bool)
    IS 'Run jobs in this session (like queue:work), committing after each batch';

-- ==== chains and middleware (issue 4) ====

-- Chain ids.  A chain has no row of its own: each link carries the chain
-- id and the links after it (jobq.jobs.chain), and so does a failed link's
-- record (jobq.failed.chain), from which jobq.retry_chain() resumes it.
CREATE SEQUENCE jobq.chain_id_seq;
SELECT pg_catalog.pg_extension_config_dump('jobq.chain_id_seq', '');

CREATE FUNCTION jobq.dispatch_chain(
    links      pg_catalog.jsonb,
    queue      pg_catalog.text DEFAULT NULL,
    delay      pg_catalog.interval DEFAULT NULL,
    on_failure pg_catalog.text DEFAULT NULL,
    OUT job_id   pg_catalog.int8,
    OUT chain_id pg_catalog.int8)
RETURNS record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_dispatch_chain';

COMMENT ON FUNCTION jobq.dispatch_chain(pg_catalog.jsonb, pg_catalog.text,
    pg_catalog.interval, pg_catalog.text)
    IS 'Queue a chain of jobs: each link is dispatched when the one before it succeeds';

-- The same as jobq.retry(failed_id), returning only the new job's id.
CREATE FUNCTION jobq.retry_chain(failed_id pg_catalog.int8)
RETURNS pg_catalog.int8
LANGUAGE sql STRICT VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT r.job_id FROM jobq.retry(failed_id) AS r $$;

COMMENT ON FUNCTION jobq.retry_chain(pg_catalog.int8)
    IS 'Queue a failed job again; if it was a chain link, the rest of the chain follows it';

-- Limiters shared by every backend of the cluster (shared memory).
CREATE FUNCTION jobq.throttle(key pg_catalog.text, allow pg_catalog.int4,
                              every pg_catalog.interval)
RETURNS pg_catalog.bool
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_throttle';

COMMENT ON FUNCTION jobq.throttle(pg_catalog.text, pg_catalog.int4, pg_catalog.interval)
    IS 'Count a start under key and return true if fewer than allow were counted in the last every; false (nothing counted) otherwise';

CREATE FUNCTION jobq.funnel(key pg_catalog.text, "limit" pg_catalog.int4)
RETURNS pg_catalog.bool
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_funnel';

COMMENT ON FUNCTION jobq.funnel(pg_catalog.text, pg_catalog.int4)
    IS 'Take one of limit slots of key until the end of the transaction; false if all are taken';

--------------------------------------------------------------------------
-- ==== job lifecycle: deadlines, exceptions, releases, sync, closures, failure handlers ====
--------------------------------------------------------------------------

-- Registered defaults (copied into each job at dispatch, like the others).
ALTER TABLE jobq.handlers
    ADD COLUMN retry_for pg_catalog.interval,
    ADD COLUMN max_exceptions pg_catalog.int4
        CHECK (max_exceptions OPERATOR(pg_catalog.>=) 0),
    ADD COLUMN backoff_schedule pg_catalog.interval[],
    ADD COLUMN backoff_exponential pg_catalog.bool,
    ADD COLUMN on_failure pg_catalog.text,          -- schema.fn(payload jsonb, error jsonb)
    ADD COLUMN delete_when_missing_models pg_catalog.bool;

ALTER TABLE jobq.jobs
    ADD COLUMN retry_until pg_catalog.timestamptz,  -- NULL: tries decides
    ADD COLUMN max_exceptions pg_catalog.int4
        CHECK (max_exceptions OPERATOR(pg_catalog.>=) 0),
    ADD COLUMN exceptions pg_catalog.int4 NOT NULL DEFAULT 0
        CHECK (exceptions OPERATOR(pg_catalog.>=) 0),  -- failed attempts (not releases)
    ADD COLUMN backoff_schedule pg_catalog.interval[],
    ADD COLUMN backoff_exponential pg_catalog.bool NOT NULL DEFAULT false,
    ADD COLUMN on_failure pg_catalog.text,
    ADD COLUMN delete_when_missing_models pg_catalog.bool NOT NULL DEFAULT false;

ALTER TABLE jobq.failed
    ADD COLUMN exceptions pg_catalog.int4,
    ADD COLUMN retry_until pg_catalog.timestamptz,
    ADD COLUMN max_exceptions pg_catalog.int4,     -- options kept for jobq.retry()
    ADD COLUMN backoff_schedule pg_catalog.interval[],
    ADD COLUMN backoff_exponential pg_catalog.bool,
    ADD COLUMN delete_when_missing_models pg_catalog.bool,
    ADD COLUMN on_failure pg_catalog.text,
    ADD COLUMN on_failure_error pg_catalog.jsonb;  -- the failure handler's own error

-- The DBA's view of the failed store.  security_invoker: a role sees its
-- own failed jobs only (row-level security on jobq.failed, see the end of
-- this script).
CREATE VIEW jobq.failed_jobs WITH (security_invoker = true) AS
    SELECT f.id, f.uuid, f.job_id, f.queue, f.job, f.payload, f.attempts,
           f.exception, f.sqlstate,
           f.error OPERATOR(pg_catalog.->>) 'detail' AS detail,
           f.error OPERATOR(pg_catalog.->>) 'hint' AS hint,
           f.error OPERATOR(pg_catalog.->>) 'context' AS context,
           f.owner, f.dispatched_at, f.failed_at,
           f.on_failure_error, f.chain_id,
           pg_catalog.jsonb_array_length(f.chain OPERATOR(pg_catalog.->) 'links')
             AS chain_links_left
      FROM jobq.failed f;

COMMENT ON VIEW jobq.failed_jobs IS 'jobq: failed jobs, newest last';

-- From inside a running handler.
CREATE FUNCTION jobq.release(delay pg_catalog.interval DEFAULT '0')
RETURNS void
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'jobq_release_current';

COMMENT ON FUNCTION jobq.release(pg_catalog.interval)
    IS 'From inside a running job: put it back on its queue after the delay when the handler returns';

CREATE FUNCTION jobq.fail(message pg_catalog.text)
RETURNS void
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'jobq_fail_current';

COMMENT ON FUNCTION jobq.fail(pg_catalog.text)
    IS 'From inside a running job: fail it for good, without retrying';

CREATE FUNCTION jobq.current_job()
RETURNS pg_catalog.jsonb
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'jobq_current_job';

COMMENT ON FUNCTION jobq.current_job()
    IS 'From inside a running job: its id, queue, job, attempt, tries, dispatch and start times';

-- Synchronous dispatch: the handler runs now, in the caller's transaction.
CREATE FUNCTION jobq.dispatch_now(
    job     pg_catalog.text,
    payload pg_catalog.jsonb DEFAULT '{}')
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_dispatch_now';

COMMENT ON FUNCTION jobq.dispatch_now(pg_catalog.text, pg_catalog.jsonb)
    IS 'Run a job handler now, in this transaction, as the calling role; its error propagates';

-- Queued closures: the handler of jobs dispatched by jobq.dispatch_sql.
-- It runs, like any handler, as the role that dispatched the job.
CREATE FUNCTION jobq.run_sql(payload pg_catalog.jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    -- the dispatcher's search_path, for the rest of this job only
    PERFORM pg_catalog.set_config('search_path',
        payload OPERATOR(pg_catalog.->>) 'search_path', true);
    EXECUTE payload OPERATOR(pg_catalog.->>) 'sql';
END
$$;

COMMENT ON FUNCTION jobq.run_sql(pg_catalog.jsonb)
    IS 'Handler of jobs dispatched with jobq.dispatch_sql: runs payload->>''sql''';

CREATE FUNCTION jobq.dispatch_sql(
    sql          pg_catalog.text,
    queue        pg_catalog.text DEFAULT NULL,
    delay        pg_catalog.interval DEFAULT NULL,
    available_at pg_catalog.timestamptz DEFAULT NULL,
    tries        pg_catalog.int4 DEFAULT NULL,
    timeout      pg_catalog.interval DEFAULT NULL,
    backoff      pg_catalog.interval DEFAULT NULL,
    retry_until  pg_catalog.timestamptz DEFAULT NULL,
    max_exceptions pg_catalog.int4 DEFAULT NULL,
    backoff_schedule pg_catalog.interval[] DEFAULT NULL,
    backoff_exponential pg_catalog.bool DEFAULT NULL,
    connection   pg_catalog.text DEFAULT NULL)
RETURNS pg_catalog.int8
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_dispatch_sql';

COMMENT ON FUNCTION jobq.dispatch_sql(pg_catalog.text, pg_catalog.text, pg_catalog.interval,
    pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.interval, pg_catalog.interval,
    pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.interval[], pg_catalog.bool,
    pg_catalog.text)
    IS 'Queue a SQL text as a job (a queued closure), run as the calling role';

--------------------------------------------------------------------------
-- Privileges: anyone may dispatch jobs that run as themselves; the tables
-- are written only through these functions.
--------------------------------------------------------------------------

GRANT USAGE ON SCHEMA jobq TO PUBLIC;
REVOKE ALL ON TABLE jobq.jobs, jobq.failed, jobq.handlers, jobq.failed_jobs FROM PUBLIC;
REVOKE ALL ON PROCEDURE jobq.work(pg_catalog.text[], pg_catalog.int4, pg_catalog.bool) FROM PUBLIC;

-- ==== worker pools and operations (issue 6) ====

-- Worker pools of this database (Laravel's queue:work options plus
-- Supervisor's numprocs).  While the table is empty the database has the
-- default pool, configured by the jobq.* parameters.  NULL settings fall
-- back to those parameters.  Changes take effect at commit, without a
-- server restart: a trigger tells the database's pool manager.
CREATE FUNCTION jobq.check_pool_queues(queues pg_catalog.text[])
RETURNS pg_catalog.bool
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'jobq_check_pool_queues';

CREATE TABLE jobq.pools (
    name        pg_catalog.text PRIMARY KEY
                CHECK (pg_catalog.octet_length(name) OPERATOR(pg_catalog.<=) 63
                       AND name OPERATOR(pg_catalog.~) '^[^[:cntrl:]]+$'),
    queues      pg_catalog.text[] NOT NULL
                CHECK (jobq.check_pool_queues(queues)),
    processes   pg_catalog.int4 NOT NULL DEFAULT 1
                CHECK (processes OPERATOR(pg_catalog.>=) 0
                       AND processes OPERATOR(pg_catalog.<=) 1000),
    max_sleep   pg_catalog.interval
                CHECK (max_sleep OPERATOR(pg_catalog.>=) '10 ms'
                       AND max_sleep OPERATOR(pg_catalog.<=) '1 hour'),
    timeout     pg_catalog.interval
                CHECK (timeout OPERATOR(pg_catalog.>=) '0'
                       AND timeout OPERATOR(pg_catalog.<=) '7 days'),
    tries       pg_catalog.int4 CHECK (tries OPERATOR(pg_catalog.>=) 0),
    backoff     pg_catalog.interval
                CHECK (backoff OPERATOR(pg_catalog.>=) '0'
                       AND backoff OPERATOR(pg_catalog.<=) '24 days'),
    max_jobs    pg_catalog.int8 CHECK (max_jobs OPERATOR(pg_catalog.>) 0),
    max_time    pg_catalog.interval
                CHECK (max_time OPERATOR(pg_catalog.>=) '1 s'
                       AND max_time OPERATOR(pg_catalog.<=) '24 days'),
    max_memory  pg_catalog.int8                 -- MB
                CHECK (max_memory OPERATOR(pg_catalog.>) 0
                       AND max_memory OPERATOR(pg_catalog.<=) 1048576)
);

COMMENT ON TABLE jobq.pools IS 'jobq: worker pools of this database';

SELECT pg_catalog.pg_extension_config_dump('jobq.pools', '');

CREATE FUNCTION jobq.pools_trigger()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'jobq_pools_trigger';

CREATE TRIGGER pools_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON jobq.pools
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.pools_trigger();

-- fires the trigger: the pool manager learns at commit that jobq is
-- installed, and the default pool starts without waiting for its next look
TRUNCATE jobq.pools;

CREATE FUNCTION jobq.create_pool(
    name       pg_catalog.text,
    queues     pg_catalog.text[] DEFAULT '{default}',
    processes  pg_catalog.int4 DEFAULT 1,
    max_sleep  pg_catalog.interval DEFAULT NULL,
    timeout    pg_catalog.interval DEFAULT NULL,
    tries      pg_catalog.int4 DEFAULT NULL,
    backoff    pg_catalog.interval DEFAULT NULL,
    max_jobs   pg_catalog.int8 DEFAULT NULL,
    max_time   pg_catalog.interval DEFAULT NULL,
    max_memory pg_catalog.int8 DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR queues IS NULL OR processes IS NULL THEN
        RAISE EXCEPTION 'name, queues and processes must not be null'
            USING ERRCODE = '22004';
    END IF;
    INSERT INTO jobq.pools (name, queues, processes, max_sleep, timeout, tries,
                            backoff, max_jobs, max_time, max_memory)
    VALUES (create_pool.name, create_pool.queues, create_pool.processes,
            create_pool.max_sleep, create_pool.timeout, create_pool.tries,
            create_pool.backoff, create_pool.max_jobs, create_pool.max_time,
            create_pool.max_memory);
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'pool "%" already exists', create_pool.name
        USING ERRCODE = '42710', HINT = 'Use jobq.alter_pool() to change it.';
END $$;

COMMENT ON FUNCTION jobq.create_pool(pg_catalog.text, pg_catalog.text[], pg_catalog.int4,
    pg_catalog.interval, pg_catalog.interval, pg_catalog.int4, pg_catalog.interval,
    pg_catalog.int8, pg_catalog.interval, pg_catalog.int8)
    IS 'Create a worker pool: its processes start when the transaction commits';

-- NULL arguments leave a setting as it is; reset => true first resets every
-- optional setting to NULL (the jobq.* parameters).
CREATE FUNCTION jobq.alter_pool(
    name       pg_catalog.text,
    queues     pg_catalog.text[] DEFAULT NULL,
    processes  pg_catalog.int4 DEFAULT NULL,
    max_sleep  pg_catalog.interval DEFAULT NULL,
    timeout    pg_catalog.interval DEFAULT NULL,
    tries      pg_catalog.int4 DEFAULT NULL,
    backoff    pg_catalog.interval DEFAULT NULL,
    max_jobs   pg_catalog.int8 DEFAULT NULL,
    max_time   pg_catalog.interval DEFAULT NULL,
    max_memory pg_catalog.int8 DEFAULT NULL,
    reset      pg_catalog.bool DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p jobq.pools;
BEGIN
    SELECT * INTO p FROM jobq.pools WHERE pools.name = alter_pool.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pool "%" does not exist', alter_pool.name
            USING ERRCODE = '42704', HINT = 'Create it with jobq.create_pool().';
    END IF;
    IF reset THEN
        p.max_sleep := NULL; p.timeout := NULL; p.tries := NULL; p.backoff := NULL;
        p.max_jobs := NULL; p.max_time := NULL; p.max_memory := NULL;
    END IF;
    UPDATE jobq.pools
       SET queues     = coalesce(alter_pool.queues, p.queues),
           processes  = coalesce(alter_pool.processes, p.processes),
           max_sleep  = coalesce(alter_pool.max_sleep, p.max_sleep),
           timeout    = coalesce(alter_pool.timeout, p.timeout),
           tries      = coalesce(alter_pool.tries, p.tries),
           backoff    = coalesce(alter_pool.backoff, p.backoff),
           max_jobs   = coalesce(alter_pool.max_jobs, p.max_jobs),
           max_time   = coalesce(alter_pool.max_time, p.max_time),
           max_memory = coalesce(alter_pool.max_memory, p.max_memory)
     WHERE pools.name = alter_pool.name;
END $$;

COMMENT ON FUNCTION jobq.alter_pool(pg_catalog.text, pg_catalog.text[], pg_catalog.int4,
    pg_catalog.interval, pg_catalog.interval, pg_catalog.int4, pg_catalog.interval,
    pg_catalog.int8, pg_catalog.interval, pg_catalog.int8, pg_catalog.bool)
    IS 'Change a worker pool: its processes are replaced after their current job';

CREATE FUNCTION jobq.drop_pool(name pg_catalog.text, if_exists pg_catalog.bool DEFAULT false)
RETURNS pg_catalog.bool
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM jobq.pools WHERE pools.name = drop_pool.name;
    IF NOT FOUND AND NOT if_exists THEN
        RAISE EXCEPTION 'pool "%" does not exist', drop_pool.name
            USING ERRCODE = '42704';
    END IF;
    RETURN FOUND;
END $$;

COMMENT ON FUNCTION jobq.drop_pool(pg_catalog.text, pg_catalog.bool)
    IS 'Drop a worker pool: its processes leave after their current job';

-- ==== SQL consumer API and the jobq command-line tool (issue 7) ====
--
-- Jobs registered with jobq.register(job, external => true) have no SQL
-- handler: apps reserve them over SQL with a lease and a fencing token, and
-- report the outcome with the token.  The claim lives in the job's row
-- (lease_token, available_at = lease expiry), never in session state, so
-- the API works through transaction-pooling connection poolers.

CREATE SEQUENCE jobq.lease_token_seq AS pg_catalog.int8;

-- Leases, for handling those that ended without a report (consumer.c:
-- jobq.reserve and the workers' periodic recovery fail such attempts).
CREATE INDEX jobs_leased_idx ON jobq.jobs
    USING btree (available_at) WHERE lease_token IS NOT NULL;

CREATE FUNCTION jobq.reserve(
    queues pg_catalog.text[],
    lease  pg_catalog.interval DEFAULT '90 s',
    max    pg_catalog.int4 DEFAULT 1)
RETURNS TABLE (id pg_catalog.int8, token pg_catalog.int8, job pg_catalog.text,
               payload pg_catalog.jsonb, queue pg_catalog.text,
               attempt pg_catalog.int4, tries pg_catalog.int4,
               lease_expires_at pg_catalog.timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1
AS 'MODULE_PATHNAME', 'jobq_consumer_reserve';

COMMENT ON FUNCTION jobq.reserve(pg_catalog.text[], pg_catalog.interval, pg_catalog.int4)
    IS 'Reserve external jobs with a lease: returns each job with its fencing token';

CREATE FUNCTION jobq.complete(id pg_catalog.int8, token pg_catalog.int8)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_consumer_complete';

COMMENT ON FUNCTION jobq.complete(pg_catalog.int8, pg_catalog.int8)
    IS 'Report that a reserved external job succeeded: it is deleted';

CREATE FUNCTION jobq.release(id pg_catalog.int8, token pg_catalog.int8,
                             delay pg_catalog.interval DEFAULT '0')
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_consumer_release';

COMMENT ON FUNCTION jobq.release(pg_catalog.int8, pg_catalog.int8, pg_catalog.interval)
    IS 'Hand a reserved external job back, available again after delay (the attempt stays counted)';

CREATE FUNCTION jobq.fail(id pg_catalog.int8, token pg_catalog.int8,
                          error pg_catalog.jsonb DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_consumer_fail';

COMMENT ON FUNCTION jobq.fail(pg_catalog.int8, pg_catalog.int8, pg_catalog.jsonb)
    IS 'Report a failed attempt of a reserved external job: retried after its backoff, or failed for good';

CREATE FUNCTION jobq.extend(id pg_catalog.int8, token pg_catalog.int8,
                            lease pg_catalog.interval DEFAULT '90 s')
RETURNS pg_catalog.timestamptz
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_consumer_extend';

COMMENT ON FUNCTION jobq.extend(pg_catalog.int8, pg_catalog.int8, pg_catalog.interval)
    IS 'Extend the lease of a reserved external job to lease from now; returns the new expiry';

-- jobq.restart() (queue:restart): every job runner of this database (and
-- every jobq CLI worker) finishes its current job, leaves and is replaced.
CREATE TABLE jobq.restart_state (
    generation   pg_catalog.int8 NOT NULL,
    requested_at pg_catalog.timestamptz
);
INSERT INTO jobq.restart_state (generation, requested_at) VALUES (0, NULL);

CREATE FUNCTION jobq.restart()
RETURNS pg_catalog.int8
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_restart';

COMMENT ON FUNCTION jobq.restart()
    IS 'Replace every worker of this database after its current job (queue:restart)';

CREATE FUNCTION jobq.restart_generation()
RETURNS pg_catalog.int8
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SECURITY DEFINER
AS $$ SELECT generation FROM jobq.restart_state $$;

-- Monitoring
CREATE FUNCTION jobq.worker_status(
    OUT pid pg_catalog.int4, OUT database pg_catalog.text, OUT pool pg_catalog.text,
    OUT queues pg_catalog.text, OUT kind pg_catalog.text, OUT state pg_catalog.text,
    OUT job_id pg_catalog.int8, OUT job_started_at pg_catalog.timestamptz,
    OUT jobs_done pg_catalog.int8, OUT jobs_failed pg_catalog.int8,
    OUT started_at pg_catalog.timestamptz)
RETURNS SETOF record
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'jobq_worker_status';

CREATE VIEW jobq.workers AS
    SELECT pid, database, pool, queues, kind, state, job_id, job_started_at,
           jobs_done, jobs_failed, started_at
      FROM jobq.worker_status();

COMMENT ON VIEW jobq.workers IS 'jobq: processes running jobs, in every database';

CREATE FUNCTION jobq.queue_stats(
    OUT queue pg_catalog.text, OUT done pg_catalog.int8, OUT failed pg_catalog.int8)
RETURNS SETOF record
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED
AS 'MODULE_PATHNAME', 'jobq_queue_stats';

CREATE FUNCTION jobq.stats_available()
RETURNS pg_catalog.bool
LANGUAGE C VOLATILE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'jobq_stats_available';

CREATE VIEW jobq.queues AS
    WITH j AS (
        SELECT queue,
               pg_catalog.count(*) FILTER (WHERE reserved_by IS NULL
                   AND available_at OPERATOR(pg_catalog.<=) pg_catalog.now()) AS ready,
               pg_catalog.count(*) FILTER (WHERE reserved_by IS NULL
                   AND available_at OPERATOR(pg_catalog.>) pg_catalog.now()) AS delayed,
               pg_catalog.count(*) FILTER (WHERE reserved_by IS NOT NULL) AS reserved,
               pg_catalog.min(available_at) FILTER (WHERE reserved_by IS NULL
                   AND available_at OPERATOR(pg_catalog.<=) pg_catalog.now()) AS oldest_ready
          FROM jobq.jobs GROUP BY queue),
    f AS (SELECT queue, pg_catalog.count(*) AS failed FROM jobq.failed GROUP BY queue),
    s AS (SELECT queue, done, failed FROM jobq.queue_stats())
    SELECT q.queue,
           COALESCE(j.ready, 0) AS ready,
           COALESCE(j.delayed, 0) AS delayed,
           COALESCE(j.reserved, 0) AS reserved,
           COALESCE(f.failed, 0) AS failed,
           pg_catalog.now() OPERATOR(pg_catalog.-) j.oldest_ready AS oldest_ready_age,
           CASE WHEN jobq.stats_available() THEN COALESCE(s.done, 0) END AS done_last_minute,
           CASE WHEN jobq.stats_available() THEN COALESCE(s.failed, 0) END AS failed_last_minute
      FROM (SELECT queue FROM j UNION SELECT queue FROM f UNION SELECT queue FROM s) q
      LEFT JOIN j ON j.queue OPERATOR(pg_catalog.=) q.queue
      LEFT JOIN f ON f.queue OPERATOR(pg_catalog.=) q.queue
      LEFT JOIN s ON s.queue OPERATOR(pg_catalog.=) q.queue;

COMMENT ON VIEW jobq.queues IS 'jobq: per queue, jobs waiting, delayed, running and failed, and throughput';

-- Only superusers manage pools and restart workers, and see the queues of
-- every role; anyone may see which workers run (like pg_stat_activity).
REVOKE ALL ON TABLE jobq.pools, jobq.restart_state, jobq.queues FROM PUBLIC;
REVOKE ALL ON FUNCTION jobq.create_pool(pg_catalog.text, pg_catalog.text[], pg_catalog.int4,
    pg_catalog.interval, pg_catalog.interval, pg_catalog.int4, pg_catalog.interval,
    pg_catalog.int8, pg_catalog.interval, pg_catalog.int8) FROM PUBLIC;
REVOKE ALL ON FUNCTION jobq.alter_pool(pg_catalog.text, pg_catalog.text[], pg_catalog.int4,
    pg_catalog.interval, pg_catalog.interval, pg_catalog.int4, pg_catalog.interval,
    pg_catalog.int8, pg_catalog.interval, pg_catalog.int8, pg_catalog.bool) FROM PUBLIC;
REVOKE ALL ON FUNCTION jobq.drop_pool(pg_catalog.text, pg_catalog.bool) FROM PUBLIC;
REVOKE ALL ON FUNCTION jobq.restart() FROM PUBLIC;
REVOKE ALL ON FUNCTION jobq.pools_trigger() FROM PUBLIC;
GRANT SELECT ON jobq.workers TO PUBLIC;
-- ==== failed jobs, events and security (issue 5) ====

-- Failed jobs, like Laravel's queue:retry, queue:forget and queue:flush.
-- Written in C (src/failed.c): they act as the extension owner on the rows
-- the caller may manage, the caller's own (or those of roles it is a member
-- of), or all of them for members of jobq_admin.
CREATE FUNCTION jobq.retry(id pg_catalog.int8)
RETURNS TABLE (failed_id pg_catalog.int8, job_id pg_catalog.int8)
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_retry';

COMMENT ON FUNCTION jobq.retry(pg_catalog.int8)
    IS 'Dispatch a failed job again (same queue, handler, payload and options) and forget its failure';

CREATE FUNCTION jobq.retry(ids pg_catalog.int8[])
RETURNS TABLE (failed_id pg_catalog.int8, job_id pg_catalog.int8)
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_retry_array';

COMMENT ON FUNCTION jobq.retry(pg_catalog.int8[])
    IS 'Dispatch these failed jobs again and forget their failures';

CREATE FUNCTION jobq.retry_all(queue pg_catalog.text DEFAULT NULL)
RETURNS TABLE (failed_id pg_catalog.int8, job_id pg_catalog.int8)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_retry_all';

COMMENT ON FUNCTION jobq.retry_all(pg_catalog.text)
    IS 'Dispatch again every failed job (of one queue) that the caller may manage';

CREATE FUNCTION jobq.forget(id pg_catalog.int8)
RETURNS pg_catalog.bool
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_forget';

COMMENT ON FUNCTION jobq.forget(pg_catalog.int8)
    IS 'Delete one failed job; true if it existed and the caller may manage it';

CREATE FUNCTION jobq.flush(older_than pg_catalog.interval DEFAULT NULL)
RETURNS pg_catalog.int8
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_flush';

COMMENT ON FUNCTION jobq.flush(pg_catalog.interval)
    IS 'Delete the failed jobs that failed strictly more than older_than ago (NULL: all); returns how many';

-- Roles.  jobq_admin sees and manages every job and failed job.  Roles are
-- cluster-wide and outlive the extension: create it only if it is missing,
-- so that DROP EXTENSION / CREATE EXTENSION (and a restore) work again.
DO $do$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles
                    WHERE rolname OPERATOR(pg_catalog.=) 'jobq_admin') THEN
        CREATE ROLE jobq_admin NOLOGIN;
    END IF;
END
$do$;

-- Row-level security: every role may read its own jobs and failed jobs
-- (those of roles it is a member of); only jobq_admin (and superusers, and
-- the extension owner, which the workers run as) writes the tables
-- directly.  Everyone else changes them through the functions above.
ALTER TABLE jobq.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobq.failed ENABLE ROW LEVEL SECURITY;

CREATE POLICY jobs_own ON jobq.jobs FOR SELECT TO PUBLIC
    USING (pg_catalog.pg_has_role(owner::pg_catalog.oid, 'MEMBER'));
CREATE POLICY jobs_admin ON jobq.jobs FOR ALL TO jobq_admin
    USING (true) WITH CHECK (true);
CREATE POLICY failed_own ON jobq.failed FOR SELECT TO PUBLIC
    USING (pg_catalog.pg_has_role(owner::pg_catalog.oid, 'MEMBER'));
CREATE POLICY failed_admin ON jobq.failed FOR ALL TO jobq_admin
    USING (true) WITH CHECK (true);

GRANT SELECT ON TABLE jobq.jobs, jobq.failed, jobq.failed_jobs TO PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE jobq.jobs, jobq.failed TO jobq_admin;
GRANT SELECT ON TABLE jobq.handlers TO jobq_admin;
GRANT USAGE ON SEQUENCE jobq.jobs_id_seq, jobq.failed_id_seq TO jobq_admin;
REVOKE ALL ON SEQUENCE jobq.lease_token_seq FROM PUBLIC;
