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
    backoff pg_catalog.interval DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_register';

COMMENT ON FUNCTION jobq.register(pg_catalog.text, pg_catalog.text, pg_catalog.int4,
    pg_catalog.interval, pg_catalog.interval)
    IS 'Declare the default queue, tries, timeout and backoff of a job handler';

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
-- Privileges: anyone may dispatch jobs that run as themselves; the tables
-- are written only through these functions.
--------------------------------------------------------------------------

GRANT USAGE ON SCHEMA jobq TO PUBLIC;
REVOKE ALL ON TABLE jobq.jobs, jobq.failed, jobq.handlers, jobq.failed_jobs FROM PUBLIC;
REVOKE ALL ON PROCEDURE jobq.work(pg_catalog.text[], pg_catalog.int4, pg_catalog.bool) FROM PUBLIC;
