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
    backoff pg_catalog.interval DEFAULT NULL,
    external pg_catalog.bool DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'jobq_register';

COMMENT ON FUNCTION jobq.register(pg_catalog.text, pg_catalog.text, pg_catalog.int4,
    pg_catalog.interval, pg_catalog.interval, pg_catalog.bool)
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

-- ==== SQL consumer API and the jobq command-line tool (issue 7) ====
--
-- Jobs registered with jobq.register(job, external => true) have no SQL
-- handler: apps reserve them over SQL with a lease and a fencing token, and
-- report the outcome with the token.  The claim lives in the job's row
-- (lease_token, available_at = lease expiry), never in session state, so
-- the API works through transaction-pooling connection poolers.

CREATE SEQUENCE jobq.lease_token_seq AS pg_catalog.int8;

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

-- Restart generation (same definition as the in-server restart work of
-- issue 6): jobq.restart() bumps it; the jobq CLI's workers and in-server
-- workers finish their current jobs and exit when it changes.
CREATE TABLE jobq.restart_state (
    generation   pg_catalog.int8 NOT NULL,
    requested_at pg_catalog.timestamptz
);
INSERT INTO jobq.restart_state (generation, requested_at) VALUES (0, NULL);

CREATE FUNCTION jobq.restart()
RETURNS pg_catalog.int8
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_notify('jobq', '{"event": "restart"}');
    UPDATE jobq.restart_state
       SET generation = generation OPERATOR(pg_catalog.+) 1,
           requested_at = pg_catalog.now()
    RETURNING generation;
$$;

COMMENT ON FUNCTION jobq.restart()
    IS 'Ask every worker to finish its current jobs and restart (like queue:restart)';

CREATE FUNCTION jobq.restart_generation()
RETURNS pg_catalog.int8
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT generation FROM jobq.restart_state $$;

REVOKE ALL ON TABLE jobq.restart_state FROM PUBLIC;
REVOKE ALL ON FUNCTION jobq.restart() FROM PUBLIC;
REVOKE ALL ON SEQUENCE jobq.lease_token_seq FROM PUBLIC;
