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
    registered_at pg_catalog.timestamptz NOT NULL
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
    last_error    pg_catalog.jsonb               -- why the last attempt failed
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
    error         pg_catalog.jsonb NOT NULL      -- sqlstate, message, detail, hint, context
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
           f.owner, f.dispatched_at, f.failed_at
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
    delete_when_missing_models pg_catalog.bool DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_register';

COMMENT ON FUNCTION jobq.register(pg_catalog.text, pg_catalog.text, pg_catalog.int4,
    pg_catalog.interval, pg_catalog.interval, pg_catalog.interval, pg_catalog.int4,
    pg_catalog.interval[], pg_catalog.bool, pg_catalog.text, pg_catalog.bool)
    IS 'Declare the defaults of a job handler: queue, tries, timeout, backoff, deadline, failure handler';

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
    ADD COLUMN on_failure pg_catalog.text,
    ADD COLUMN on_failure_error pg_catalog.jsonb;  -- the failure handler's own error

CREATE OR REPLACE VIEW jobq.failed_jobs AS
    SELECT f.id, f.job_id, f.queue, f.job, f.payload, f.attempts,
           f.exception, f.sqlstate,
           f.error OPERATOR(pg_catalog.->>) 'detail' AS detail,
           f.error OPERATOR(pg_catalog.->>) 'hint' AS hint,
           f.error OPERATOR(pg_catalog.->>) 'context' AS context,
           f.owner, f.dispatched_at, f.failed_at,
           f.on_failure_error
      FROM jobq.failed f;

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
