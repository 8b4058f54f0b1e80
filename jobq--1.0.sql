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
    error         pg_catalog.jsonb NOT NULL      -- sqlstate, message, detail, hint, context
);

COMMENT ON TABLE jobq.failed IS 'jobq: jobs that failed for good';

-- The newest failures of one queue (jobq.failed_jobs WHERE queue = ...
-- ORDER BY failed_at DESC), and the oldest of all, for jobq.flush() and
-- jobq.failed_retention.
CREATE INDEX failed_queue_idx ON jobq.failed
    USING btree (queue, failed_at DESC);
CREATE INDEX failed_at_idx ON jobq.failed
    USING btree (failed_at);

-- security_invoker: a role sees its own failed jobs only (row-level
-- security on jobq.failed, see the end of this script).
CREATE VIEW jobq.failed_jobs WITH (security_invoker = true) AS
    SELECT f.id, f.uuid, f.job_id, f.queue, f.job, f.payload, f.attempts,
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
