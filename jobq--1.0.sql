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
    middleware    pg_catalog.jsonb               -- checked list, see middleware.c
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
    middleware    pg_catalog.jsonb               -- copied from jobq.handlers
) WITH (fillfactor = 85,
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0,
        autovacuum_analyze_scale_factor = 0.05);

COMMENT ON TABLE jobq.jobs IS 'jobq: jobs waiting, delayed or running';

-- What workers reserve: the ready jobs of a queue in the order they became
-- available.  Delayed jobs sort last and are never scanned before due.
CREATE INDEX jobs_ready_idx ON jobq.jobs
    USING btree (queue, available_at, id) WHERE reserved_by IS NULL;

-- Reservations, for recovering those of workers that are gone.
CREATE INDEX jobs_reserved_idx ON jobq.jobs
    USING btree (reserved_by) WHERE reserved_by IS NOT NULL;

-- Jobs that failed for good (Laravel's failed_jobs).
CREATE TABLE jobq.failed (
    id            bigserial PRIMARY KEY,
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

CREATE INDEX failed_queue_idx ON jobq.failed
    USING btree (queue, failed_at DESC);

CREATE VIEW jobq.failed_jobs AS
    SELECT f.id, f.job_id, f.queue, f.job, f.payload, f.attempts,
           f.exception, f.sqlstate,
           f.error OPERATOR(pg_catalog.->>) 'detail' AS detail,
           f.error OPERATOR(pg_catalog.->>) 'hint' AS hint,
           f.error OPERATOR(pg_catalog.->>) 'context' AS context,
           f.owner, f.dispatched_at, f.failed_at, f.chain_id,
           pg_catalog.jsonb_array_length(f.chain OPERATOR(pg_catalog.->) 'links')
             AS chain_links_left
      FROM jobq.failed f;

COMMENT ON VIEW jobq.failed_jobs IS 'jobq: failed jobs, newest last';

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
    backoff      pg_catalog.interval DEFAULT NULL)
RETURNS pg_catalog.int8
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_dispatch';

COMMENT ON FUNCTION jobq.dispatch(pg_catalog.text, pg_catalog.jsonb, pg_catalog.text,
    pg_catalog.interval, pg_catalog.timestamptz, pg_catalog.int4, pg_catalog.interval,
    pg_catalog.interval)
    IS 'Queue a job: its handler will run with the payload as the calling role';

CREATE FUNCTION jobq.register(
    job     pg_catalog.text,
    queue   pg_catalog.text DEFAULT NULL,
    tries   pg_catalog.int4 DEFAULT NULL,
    timeout pg_catalog.interval DEFAULT NULL,
    backoff pg_catalog.interval DEFAULT NULL,
    middleware pg_catalog.jsonb DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_register';

COMMENT ON FUNCTION jobq.register(pg_catalog.text, pg_catalog.text, pg_catalog.int4,
    pg_catalog.interval, pg_catalog.interval, pg_catalog.jsonb)
    IS 'Declare the default queue, tries, timeout, backoff and middleware of a job handler';

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

CREATE FUNCTION jobq.retry_chain(failed_id pg_catalog.int8)
RETURNS pg_catalog.int8
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_retry_chain';

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
-- Privileges: anyone may dispatch jobs that run as themselves; the tables
-- are written only through these functions.
--------------------------------------------------------------------------

GRANT USAGE ON SCHEMA jobq TO PUBLIC;
REVOKE ALL ON TABLE jobq.jobs, jobq.failed, jobq.handlers, jobq.failed_jobs FROM PUBLIC;
REVOKE ALL ON PROCEDURE jobq.work(pg_catalog.text[], pg_catalog.int4, pg_catalog.bool) FROM PUBLIC;
