-- CALL jobq.work(): running jobs in this session, with the same rules as
-- the background workers.
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE TABLE app.ran (seq serial, n int, queue text, who text);
CREATE FUNCTION app.record(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.ran (n, queue, who)
    VALUES ((payload->>'n')::int, payload->>'q', current_user) $$;
CREATE PROCEDURE app.record_proc(payload jsonb) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.ran (n, queue, who) VALUES ((payload->>'n')::int, 'proc', current_user);
END $$;

-- FIFO within a queue, strict priority between queues
SELECT count(jobq.dispatch('app.record', jsonb_build_object('n', g, 'q', 'low'), queue => 'low'))
  FROM generate_series(1, 3) g;
SELECT count(jobq.dispatch('app.record', jsonb_build_object('n', g, 'q', 'default')))
  FROM generate_series(1, 3) g;
SELECT count(jobq.dispatch('app.record', jsonb_build_object('n', g, 'q', 'high'), queue => 'high'))
  FROM generate_series(1, 3) g;
CALL jobq.work(queues => '{high,default,low}', stop_when_empty => true);
SELECT queue, n FROM app.ran ORDER BY seq;
SELECT count(*) AS left_over FROM jobq.jobs;

-- a queue nobody serves is left alone
TRUNCATE app.ran;
SELECT jobq.dispatch('app.record', '{"n": 1}', queue => 'elsewhere') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS ran FROM app.ran;
SELECT queue, attempts FROM jobq.jobs;
CALL jobq.work(queues => '{elsewhere}', stop_when_empty => true);
SELECT count(*) AS ran FROM app.ran;

-- max_jobs stops after that many jobs
TRUNCATE app.ran;
SELECT count(jobq.dispatch('app.record', jsonb_build_object('n', g)))
  FROM generate_series(1, 5) g;
CALL jobq.work(max_jobs => 2);
SELECT count(*) AS ran FROM app.ran;
SELECT count(*) AS waiting FROM jobq.jobs;
CALL jobq.work(stop_when_empty => true);
SELECT array_agg(n ORDER BY seq) AS fifo FROM app.ran;

-- a delayed job does not run before it is due
TRUNCATE app.ran;
SELECT jobq.dispatch('app.record', '{"n": 7}', delay => '1 hour') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS ran FROM app.ran;
UPDATE jobq.jobs SET available_at = now() - interval '1 s';
CALL jobq.work(stop_when_empty => true);
SELECT n FROM app.ran;

-- procedures are handlers too
TRUNCATE app.ran;
SELECT jobq.dispatch('app.record_proc', '{"n": 8}') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT n, queue FROM app.ran;

-- a job runs as the role that dispatched it, NOLOGIN roles included
TRUNCATE app.ran;
CREATE ROLE jobq_test_dave NOLOGIN;
GRANT USAGE ON SCHEMA app TO jobq_test_dave;
GRANT INSERT ON app.ran TO jobq_test_dave;
GRANT USAGE ON SEQUENCE app.ran_seq_seq TO jobq_test_dave;
SET ROLE jobq_test_dave;
SELECT jobq.dispatch('app.record', '{"n": 9}') > 0 AS ok;
RESET ROLE;
CALL jobq.work(stop_when_empty => true);
SELECT n, who FROM app.ran;

-- settings a job changes do not leak into the next job
CREATE TABLE app.seen (setting text);
CREATE FUNCTION app.set_it(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.flag', 'leaked', false);
    SET work_mem = '77MB';
END $$;
CREATE FUNCTION app.read_it(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.seen VALUES (coalesce(nullif(current_setting('app.flag', true), ''), '<unset>'));
    INSERT INTO app.seen VALUES (current_setting('work_mem'));
END $$;
SELECT jobq.dispatch('app.set_it') > 0 AS ok;
SELECT jobq.dispatch('app.read_it') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT setting FROM app.seen;
SELECT coalesce(nullif(current_setting('app.flag', true), ''), '<unset>') AS in_session;

-- a replaced handler is picked up; a dropped one fails the job clearly
TRUNCATE app.ran;
CREATE FUNCTION app.changing(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.ran (n) VALUES (1) $$;
SELECT jobq.dispatch('app.changing') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
CREATE OR REPLACE FUNCTION app.changing(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.ran (n) VALUES (2) $$;
SELECT jobq.dispatch('app.changing') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT array_agg(n ORDER BY seq) AS versions FROM app.ran;
SELECT jobq.dispatch('app.changing') > 0 AS ok;
DROP FUNCTION app.changing(jsonb);
CALL jobq.work(stop_when_empty => true);
SELECT job, attempts, sqlstate, exception FROM jobq.failed_jobs;

-- bad calls
CALL jobq.work(queues => '{}');
CALL jobq.work(queues => '{"a,b"}');
CALL jobq.work(queues => ARRAY[NULL]::text[]);
CALL jobq.work(max_jobs => 0);
BEGIN;
CALL jobq.work(stop_when_empty => true);
ROLLBACK;
-- a DO block at top level may commit, so it may call jobq.work()
DO $$ BEGIN CALL jobq.work(stop_when_empty => true); END $$;
-- a function may not
CREATE FUNCTION app.nested() RETURNS void LANGUAGE plpgsql AS $$
BEGIN CALL jobq.work(stop_when_empty => true); END $$;
SELECT app.nested();
-- only privileged roles may run other roles' jobs
SET ROLE jobq_test_dave;
CALL jobq.work(stop_when_empty => true);
RESET ROLE;

-- clean up
DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
DROP ROLE jobq_test_dave;
