-- A failure handler runs under its job's timeout on the timer of
-- statement_timeout, and gives the timer back as it found it: a client
-- session's statement_timeout still cancels the rest of the statement that
-- ran the handler (here through the SQL consumer API), and an outer
-- handler's timeout still ends the outer job.
CREATE EXTENSION jobq;
CREATE SCHEMA app;
\set SHOW_CONTEXT never
CREATE TABLE app.failures (n int, message text);
CREATE FUNCTION app.on_fail(payload jsonb, error jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.failures VALUES ((payload->>'n')::int, error->>'message') $$;
SELECT jobq.register('scan', tries => 1, timeout => '1 min', on_failure => 'app.on_fail',
                     external => true);
-- a consumer that fails a job for good, then goes on in the same statement
CREATE FUNCTION app.fail_then_sleep(id bigint, token bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM jobq.fail(id, token, '"broken"');
    PERFORM pg_sleep(2);
END $$;
CREATE FUNCTION app.reserve_then_sleep() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count(*) FROM jobq.reserve('{default}');
    PERFORM pg_sleep(2);
END $$;

-- jobq.fail() runs the failure handler; the session's statement_timeout
-- still cancels the statement afterwards (which rolls it all back)
SELECT jobq.dispatch('scan', '{"n": 1}') AS s \gset
SELECT id, token FROM jobq.reserve('{default}') \gset r_
SET statement_timeout = '300ms';
SELECT app.fail_then_sleep(:r_id, :r_token);
RESET statement_timeout;
SELECT count(*) AS still_queued FROM jobq.jobs WHERE id = :s;
SELECT count(*) AS handler_runs FROM app.failures;
-- without the sleep it commits: the handler ran once
SET statement_timeout = '300ms';
SELECT jobq.fail(:r_id, :r_token, '"broken"');
RESET statement_timeout;
SELECT n, message FROM app.failures;

-- the same when jobq.reserve() runs the failure handler (an expired lease
-- on the last try)
SELECT jobq.dispatch('scan', '{"n": 2}') AS s \gset
SELECT count(*) AS reserved FROM jobq.reserve('{default}', lease => '1 ms');
SELECT pg_sleep(0.05);
SET statement_timeout = '300ms';
SELECT app.reserve_then_sleep();
RESET statement_timeout;
SELECT count(*) AS still_queued FROM jobq.jobs WHERE id = :s;
SELECT count(*) AS reserved FROM jobq.reserve('{default}');
SELECT n, message LIKE 'the lease of attempt 1 of job % expired' AS why FROM app.failures WHERE n = 2;

-- a handler acting as a SQL consumer: the failure handler run inside it
-- does not end its timeout (1 s), which still stops it
CREATE FUNCTION app.acts_as_consumer(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT id, token INTO r FROM jobq.reserve('{default}');
    PERFORM jobq.fail(r.id, r.token, '"from a handler"');
    PERFORM pg_sleep(5);
END $$;
SELECT jobq.dispatch('scan', '{"n": 3}') AS s \gset
SELECT jobq.dispatch('app.acts_as_consumer', '{}', queue => 'work', tries => 1,
                     timeout => '1 s') AS w \gset
CALL jobq.work('{work}', stop_when_empty => true);
SELECT sqlstate, exception FROM jobq.failed_jobs WHERE job_id = :w;
-- its writes rolled back, the external job's failure with them
SELECT attempts, lease_token IS NULL AS free FROM jobq.jobs WHERE id = :s;
SELECT count(*) AS handler_runs FROM app.failures WHERE n = 3;

-- CALL jobq.work() is a statement like any other: its statement_timeout
-- cancels the running job (a failed attempt) and then the CALL
CREATE FUNCTION app.nap(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(3) $$;
SELECT jobq.dispatch('app.nap', '{}', queue => 'work', tries => 2, timeout => '1 min') AS w \gset
SET statement_timeout = '500ms';
CALL jobq.work('{work}', stop_when_empty => true);
RESET statement_timeout;
SELECT attempts, exceptions, last_error->>'sqlstate' AS sqlstate, last_error->>'message' AS message
  FROM jobq.jobs WHERE id = :w;

DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
