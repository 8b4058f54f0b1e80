-- jobq.dispatch: the SQL API and its errors.  No background worker runs
-- here (see test/jobq.conf); jobs stay where dispatch put them.
CREATE EXTENSION jobq;

CREATE SCHEMA app;
CREATE TABLE app.log (n int, who text);
CREATE FUNCTION app.handle(payload jsonb) RETURNS void
    LANGUAGE sql AS $$ INSERT INTO app.log VALUES ((payload->>'n')::int, current_user) $$;
CREATE PROCEDURE app.proc(payload jsonb)
    LANGUAGE sql AS $$ INSERT INTO app.log VALUES ((payload->>'n')::int, 'proc') $$;
CREATE FUNCTION app.two_args(a jsonb, b int) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION app.int_arg(a int) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION app.many(a jsonb) RETURNS SETOF int LANGUAGE sql AS $$ SELECT 1 $$;
CREATE AGGREGATE app.agg(jsonb) (sfunc = jsonb_concat, stype = jsonb);
CREATE PROCEDURE app.with_out(a jsonb, OUT r int) LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION app."Odd Name"(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;

-- dispatch returns the new job's id; the row holds what the worker needs
SELECT jobq.dispatch('app.handle', '{"n": 1}') AS id \gset
SELECT id = :id AS same_id, queue, job, payload, owner, attempts, tries,
       timeout, backoff, reserved_by, last_error,
       available_at <= clock_timestamp() AS available_now,
       created_at <= clock_timestamp() AS created
  FROM jobq.jobs;

-- names are resolved with the caller's search_path and stored qualified
SET search_path = app, public;
SELECT jobq.dispatch('handle') > 0 AS ok;
SELECT jobq.dispatch('handle(jsonb)', '[1, 2]') > 0 AS ok;
SELECT jobq.dispatch('proc', '{"n": 2}') > 0 AS ok;
SELECT jobq.dispatch('"Odd Name"') > 0 AS ok;
RESET search_path;
SELECT job, payload FROM jobq.jobs ORDER BY id;

-- queue, tries, timeout and backoff are stored as given
SELECT jobq.dispatch('app.handle', '{}', queue => 'mail', tries => 5,
                     timeout => '2 min', backoff => '10 s') AS id \gset
SELECT queue, tries, timeout, backoff FROM jobq.jobs WHERE id = :id;

-- delay and available_at
SELECT jobq.dispatch('app.handle', delay => '1 hour') AS id \gset
SELECT available_at >= clock_timestamp() + interval '59 min' AS delayed,
       available_at <= clock_timestamp() + interval '61 min' AS not_too_late
  FROM jobq.jobs WHERE id = :id;
SELECT date_trunc('day', now()) + interval '300 days' AS at \gset
SELECT jobq.dispatch('app.handle', available_at => :'at') AS id \gset
SELECT available_at = :'at' AS exact FROM jobq.jobs WHERE id = :id;
-- a time in the past means now
SELECT jobq.dispatch('app.handle', available_at => '2000-01-01') AS id \gset
SELECT available_at > '2001-01-01' AND available_at <= now() AS clamped
  FROM jobq.jobs WHERE id = :id;

-- dispatch is transactional
SELECT count(*) AS before FROM jobq.jobs \gset
BEGIN;
SELECT jobq.dispatch('app.handle', '{"n": 99}') > 0 AS dispatched;
ROLLBACK;
SELECT count(*) = :before AS nothing_added FROM jobq.jobs;

-- errors: each names the problem and writes nothing
SELECT jobq.dispatch(NULL);
SELECT jobq.dispatch('app.handle', NULL);
SELECT jobq.dispatch('app.nope');
SELECT jobq.dispatch('nope');
SELECT jobq.dispatch('no_schema.nope');
SELECT jobq.dispatch('app.two_args');
SELECT jobq.dispatch('app.int_arg');
SELECT jobq.dispatch('app.handle(int)');
SELECT jobq.dispatch('app.handle(jsonb');
SELECT jobq.dispatch('');
SELECT jobq.dispatch('a.b.c.d');
SELECT jobq.dispatch('app.many');
SELECT jobq.dispatch('app.agg');
SELECT jobq.dispatch('app.with_out');
SELECT jobq.dispatch('app.handle', '{"s": "\u0000"}');
SELECT jobq.dispatch('app.handle', '{"s": "\ud800"}');
SELECT jobq.dispatch('app.handle', 'not json');
SELECT jobq.dispatch('app.handle', convert_from('\xc3'::bytea, 'UTF8')::jsonb);
SELECT jobq.dispatch('app.handle', queue => '');
SELECT jobq.dispatch('app.handle', queue => 'a,b');
SELECT jobq.dispatch('app.handle', queue => E'tab\there');
SELECT jobq.dispatch('app.handle', queue => ' padded');
SELECT jobq.dispatch('app.handle', queue => repeat('é', 1000));
SELECT jobq.dispatch('app.handle', delay => '-1 s');
SELECT jobq.dispatch('app.handle', delay => '400 days');
SELECT jobq.dispatch('app.handle', delay => '1 s', available_at => now());
SELECT jobq.dispatch('app.handle', available_at => 'infinity');
SELECT jobq.dispatch('app.handle', available_at => '-infinity');
SELECT jobq.dispatch('app.handle', delay => '1000000 years');
SELECT jobq.dispatch('app.handle', delay => 'NaN');
SELECT jobq.dispatch('app.handle', tries => 'NaN');
SELECT jobq.dispatch('app.handle', timeout => '1 mon');
SELECT jobq.dispatch('app.handle', available_at => now() + interval '400 days');
SELECT jobq.dispatch('app.handle', tries => -1);
SELECT jobq.dispatch('app.handle', timeout => '-1 s');
SELECT jobq.dispatch('app.handle', timeout => '400 days');
SELECT jobq.dispatch('app.handle', timeout => '10 us');
SELECT jobq.dispatch('app.handle', backoff => '-5 min');
SELECT jobq.dispatch('app.handle', backoff => '1 day -25 hours');
SELECT jobq.dispatch('app.handle', backoff => '400 days');
SELECT count(*) = :before AS nothing_added FROM jobq.jobs;

-- boundaries that are accepted
SELECT jobq.dispatch('app.handle', queue => repeat('q', 63), tries => 0,
                     timeout => '0', backoff => '0', delay => '0') > 0 AS ok;
SELECT jobq.dispatch('app.handle', queue => 'Ünïcødé queue') > 0 AS ok;
SELECT queue FROM jobq.jobs WHERE queue LIKE 'Ü%';

-- a large payload is fine
SELECT jobq.dispatch('app.handle',
         jsonb_build_object('blob', repeat('x', 5 * 1024 * 1024))) AS id \gset
SELECT length(payload->>'blob') AS big FROM jobq.jobs WHERE id = :id;
-- ... and processed
CREATE TABLE app.sizes (n int);
CREATE FUNCTION app.measure(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.sizes VALUES (length(payload->>'blob')) $$;
SELECT jobq.dispatch('app.measure', jsonb_build_object('blob', repeat('y', 5 * 1024 * 1024)),
                     queue => 'big') > 0 AS ok;
CALL jobq.work(queues => '{big}', stop_when_empty => true);
SELECT n FROM app.sizes;
SELECT count(*) AS left_in_big FROM jobq.jobs WHERE queue = 'big';
SELECT count(*) AS failed FROM jobq.failed_jobs;

-- EXECUTE privilege of the caller is required
CREATE ROLE jobq_test_alice;
GRANT USAGE ON SCHEMA app TO jobq_test_alice;
REVOKE EXECUTE ON FUNCTION app.handle(jsonb) FROM PUBLIC;
SET ROLE jobq_test_alice;
SELECT jobq.dispatch('app.handle');
-- ordinary roles see only their own jobs (none yet) and cannot write the tables
SELECT count(*) FROM jobq.jobs;
INSERT INTO jobq.jobs (queue, job, payload, owner, available_at, created_at)
     VALUES ('default', 'app.handle', '{}', 'jobq_test_alice', now(), now());
RESET ROLE;
GRANT EXECUTE ON FUNCTION app.handle(jsonb) TO jobq_test_alice;
SET ROLE jobq_test_alice;
SELECT jobq.dispatch('app.handle', '{"who": "alice"}') > 0 AS ok;
RESET ROLE;
-- the job is owned by the role that dispatched it
SELECT owner FROM jobq.jobs WHERE payload = '{"who": "alice"}';
-- a role without USAGE on the schema cannot even name the handler
CREATE ROLE jobq_test_bob;
SET ROLE jobq_test_bob;
SELECT jobq.dispatch('app.handle');
RESET ROLE;

-- dispatch writes jobq's tables as the extension's owner, which a session
-- remembers: it must notice that jobq was created again by another role
-- and that the first owner is gone
CREATE ROLE jobq_test_owner SUPERUSER;
DROP EXTENSION jobq;
SET ROLE jobq_test_owner;
CREATE EXTENSION jobq;
RESET ROLE;
\c -
SELECT jobq.dispatch('app.handle', '{"n": 50}') > 0 AS ok;
DROP EXTENSION jobq;
CREATE EXTENSION jobq;
DROP ROLE jobq_test_owner;
SELECT jobq.dispatch('app.handle', '{"n": 51}') > 0 AS ok;
SELECT payload FROM jobq.jobs;

-- clean up
DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
DROP ROLE jobq_test_alice;
DROP ROLE jobq_test_bob;
