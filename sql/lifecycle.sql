-- Job lifecycle: release/fail/current_job from inside a handler, failure
-- handlers, missing models, deadlines, max_exceptions, backoff schedules,
-- synchronous dispatch and queued SQL.
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE TABLE app.log (seq serial, what text, info jsonb);
CREATE SEQUENCE app.runs;      -- handler runs, even rolled-back ones
CREATE SEQUENCE app.others;    -- runs of the other jobs

-- ---- outside a job the in-handler functions raise a clear error ----
SELECT jobq.current_job();
SELECT jobq.release();
SELECT jobq.fail('no');

-- ---- current_job() inside a handler ----
CREATE FUNCTION app.whoami(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.log (what, info) VALUES ('whoami', jobq.current_job());
END $$;
SELECT jobq.dispatch('app.whoami', '{}', queue => 'default', tries => 3) AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT (info->>'id')::bigint = :id AS same_id, info->>'queue' AS queue, info->>'job' AS job,
       info->>'connection' AS connection, info->>'attempt' AS attempt, info->>'tries' AS tries,
       (info->>'dispatched_at')::timestamptz <= (info->>'started_at')::timestamptz AS times_ok,
       info->'retry_until' AS retry_until, info->>'failure_handler' AS in_failure_handler
  FROM app.log WHERE what = 'whoami';

-- ---- release in place: same id, attempts kept, available after the delay ----
CREATE FUNCTION app.releases(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('app.runs');
    INSERT INTO app.log (what) VALUES ('released');   -- effects commit
    PERFORM jobq.release((p->>'delay')::interval);
END $$;
SELECT jobq.dispatch('app.releases', '{"delay": "1 hour"}', tries => 3) AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT id = :id AS same_id, attempts, exceptions, reserved_by IS NULL AS free,
       available_at > now() + interval '59 min' AS delayed
  FROM jobq.jobs;
SELECT count(*) AS effects_kept FROM app.log WHERE what = 'released';
-- released on its last try: failed (JQ002), saying so
UPDATE jobq.jobs SET attempts = 2, available_at = now() WHERE id = :id;
CALL jobq.work(stop_when_empty => true);
SELECT job_id = :id AS same_id, attempts, sqlstate, exception FROM jobq.failed_jobs;
SELECT count(*) AS left_over FROM jobq.jobs;
-- release rejects a bad delay, and the job is retried as a failed attempt
SELECT jobq.dispatch('app.releases', '{"delay": "-1 s"}', tries => 1) AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT exception FROM jobq.failed_jobs WHERE job_id = :id;

-- ---- retry_until 30 min ahead, tries = 1: released 10 times, succeeds on the 11th ----
CREATE FUNCTION app.patient(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE n bigint := nextval('app.runs');
BEGIN
    IF n <= 10 THEN
        PERFORM jobq.release();
    ELSE
        INSERT INTO app.log (what, info) VALUES ('patient done', jobq.current_job());
    END IF;
END $$;
SELECT setval('app.runs', 1, false);
SELECT jobq.dispatch('app.patient', '{}', tries => 1,
                     retry_until => now() + interval '30 min') AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT nextval('app.runs') - 1 AS runs;
SELECT info->>'attempt' AS attempt, info->>'tries' AS tries FROM app.log WHERE what = 'patient done';
SELECT count(*) AS failed FROM jobq.failed_jobs WHERE job_id = :id;
SELECT count(*) AS left_over FROM jobq.jobs;

-- ---- jobq.fail(): fails at once, no retry, effects kept, failure handler runs ----
CREATE FUNCTION app.on_fail(payload jsonb, error jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.log (what, info)
    VALUES ('failure handler', jsonb_build_object('payload', payload, 'error', error,
            'who', current_user, 'job', jobq.current_job()->'failure_handler'));
END $$;
CREATE FUNCTION app.gives_up(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.log (what) VALUES ('gave up');
    PERFORM jobq.fail('the customer is gone');
END $$;
SELECT jobq.register('app.gives_up', tries => 5, on_failure => 'app.on_fail');
SELECT on_failure FROM jobq.handlers WHERE job = 'app.gives_up';
TRUNCATE app.log;
SELECT jobq.dispatch('app.gives_up', '{"n": 1}') AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT attempts, sqlstate, exception, detail, on_failure_error FROM jobq.failed_jobs WHERE job_id = :id;
SELECT what, info FROM app.log ORDER BY seq;

-- ---- failure handler: runs once on the final failure, as the job's role ----
CREATE ROLE jobq_clerk NOLOGIN;
GRANT USAGE ON SCHEMA app TO jobq_clerk;
GRANT INSERT ON app.log TO jobq_clerk;
GRANT USAGE ON SEQUENCE app.log_seq_seq, app.runs TO jobq_clerk;
CREATE FUNCTION app.broken(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('app.runs');
    INSERT INTO app.log (what) VALUES ('broken ran');  -- rolled back
    RAISE EXCEPTION 'broken %', p->>'n' USING ERRCODE = '22012';
END $$;
SELECT jobq.register('app.broken', tries => 3, on_failure => 'app.on_fail');
TRUNCATE app.log;
SELECT setval('app.runs', 1, false);
SET ROLE jobq_clerk;
SELECT jobq.dispatch('app.broken', '{"n": 2}') AS id \gset
RESET ROLE;
CALL jobq.work(stop_when_empty => true);
SELECT nextval('app.runs') - 1 AS runs;
SELECT what, info->'payload' AS payload, info->'error'->>'sqlstate' AS sqlstate,
       info->'error'->>'message' AS message, info->>'who' AS who,
       info->>'job' AS in_failure_handler
  FROM app.log ORDER BY seq;
SELECT attempts, sqlstate, exception, on_failure_error FROM jobq.failed_jobs WHERE job_id = :id;

-- a failure handler that raises: the failure is recorded once, its error beside the job's
CREATE FUNCTION app.bad_on_fail(payload jsonb, error jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.log (what) VALUES ('bad failure handler');  -- rolled back
    PERFORM jobq.release();   -- not allowed here: raises
END $$;
SELECT jobq.register('app.broken', tries => 1, on_failure => 'app.bad_on_fail');
TRUNCATE app.log;
SELECT jobq.dispatch('app.broken', '{"n": 3}') AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS failed_records, min(sqlstate) AS sqlstate, min(exception) AS exception,
       min(on_failure_error->>'sqlstate') AS fh_sqlstate,
       min(on_failure_error->>'message') AS fh_message
  FROM jobq.failed_jobs WHERE job_id = :id;
SELECT count(*) AS fh_effects FROM app.log;
-- registering checks the failure handler
SELECT jobq.register('app.broken', on_failure => 'app.nope');
SELECT jobq.register('app.broken', on_failure => 'app.broken');

-- ---- a timeout on the last try: one failed record, failure handler once, no second start ----
CREATE FUNCTION app.slow(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('app.runs');
    PERFORM pg_sleep(30);
END $$;
SELECT jobq.register('app.slow', tries => 1, timeout => '300 ms', on_failure => 'app.on_fail');
TRUNCATE app.log;
SELECT setval('app.runs', 1, false);
SELECT jobq.dispatch('app.slow') AS id \gset
CALL jobq.work(stop_when_empty => true);
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS failed_records, min(sqlstate) AS sqlstate, min(exception) AS exception,
       bool_and(failed_at - dispatched_at < interval '20 s') AS about_the_timeout
  FROM jobq.failed_jobs WHERE job_id = :id;
SELECT count(*) AS fh_runs, min(info->'error'->>'message') AS fh_saw
  FROM app.log WHERE what = 'failure handler';
SELECT nextval('app.runs') - 1 AS handler_starts;

-- ---- missing models ----
CREATE TABLE app.invoices (id int PRIMARY KEY);
CREATE FUNCTION app.needs_invoice(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE i int;
BEGIN
    PERFORM nextval('app.runs');
    SELECT id INTO STRICT i FROM app.invoices WHERE id = (p->>'id')::int;
END $$;
CREATE FUNCTION app.needs_invoice2(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE i int;
BEGIN
    PERFORM nextval('app.runs');
    SELECT id INTO STRICT i FROM app.invoices WHERE id = (p->>'id')::int;
END $$;
SELECT jobq.register('app.needs_invoice', tries => 5, on_failure => 'app.on_fail',
                     delete_when_missing_models => true);
SELECT jobq.register('app.needs_invoice2', tries => 5, on_failure => 'app.on_fail');
TRUNCATE app.log, jobq.failed;
SELECT setval('app.runs', 1, false);
SELECT jobq.dispatch('app.needs_invoice', '{"id": 1}') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT nextval('app.runs') - 1 AS runs;
SELECT (SELECT count(*) FROM jobq.jobs) AS jobs, (SELECT count(*) FROM jobq.failed) AS failed,
       (SELECT count(*) FROM app.log) AS fh_runs;
-- without the flag: failed at once, no retry, failure handler ran
SELECT setval('app.runs', 1, false);
SELECT jobq.dispatch('app.needs_invoice2', '{"id": 1}') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT nextval('app.runs') - 1 AS runs;
SELECT attempts, sqlstate FROM jobq.failed_jobs;
SELECT count(*) AS fh_runs FROM app.log;

-- ---- tries = 0, always raising, zero backoff: 300 attempts while other jobs flow ----
CREATE FUNCTION app.always(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('app.runs');
    RAISE EXCEPTION 'always';
END $$;
-- each other job records how many attempts the failing job had made, and
-- dispatches the next one
CREATE FUNCTION app.other(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.log (what, info)
    VALUES ('other', jsonb_build_object('n', nextval('app.others'),
            'failing_attempts', (SELECT attempts FROM jobq.jobs WHERE job = 'app.always')));
    PERFORM jobq.dispatch('app.other', '{}');
END $$;
TRUNCATE app.log, jobq.failed;
SELECT setval('app.runs', 1, false);
SELECT jobq.dispatch('app.always', '{}', tries => 0, backoff => '0') AS id \gset
SELECT jobq.dispatch('app.other', '{}') > 0 AS ok;
CALL jobq.work(max_jobs => 600);
SELECT nextval('app.runs') - 1 AS failing_runs;
SELECT attempts, exceptions, tries, last_error->>'message' AS last FROM jobq.jobs WHERE id = :id;
-- (each other job usually sees a new attempt count; not always: when the
-- worker finds the other job's handler slow on a loaded machine it hands
-- the failing job of the same batch back, refunding its attempt)
SELECT count(*) AS others_done,
       count(DISTINCT info->'failing_attempts') > 150 AS interleaved
  FROM app.log WHERE what = 'other';
SELECT count(*) AS failed FROM jobq.failed;
-- at the end of the int range the job fails clearly instead of breaking the queue
UPDATE jobq.jobs SET attempts = 2147483647 WHERE id = :id;
CALL jobq.work(max_jobs => 2);
SELECT sqlstate, exception FROM jobq.failed_jobs WHERE job_id = :id;
DELETE FROM jobq.jobs;

-- ---- max_exceptions: failed attempts count, releases do not ----
CREATE FUNCTION app.flaky(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE n bigint := nextval('app.runs');
BEGIN
    IF n % 2 = 1 THEN
        PERFORM jobq.release();
    ELSE
        RAISE EXCEPTION 'flaky %', n;
    END IF;
END $$;
TRUNCATE jobq.failed;
SELECT setval('app.runs', 1, false);
SELECT jobq.dispatch('app.flaky', '{}', tries => 25, max_exceptions => 3) AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT nextval('app.runs') - 1 AS runs;
SELECT attempts, exception FROM jobq.failed_jobs WHERE job_id = :id;
-- max_exceptions applies with retry_until too (retry_until overrides only tries)
SELECT setval('app.runs', 1, false);
SELECT jobq.dispatch('app.always', '{}', retry_until => now() + interval '1 hour',
                     max_exceptions => 4, tries => 1) AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT nextval('app.runs') - 1 AS runs;
SELECT attempts, exception FROM jobq.failed_jobs WHERE job_id = :id;

-- ---- retry_until: a passed deadline fails without running; retry_for at register ----
SELECT setval('app.runs', 1, false);
SELECT jobq.dispatch('app.always', '{}', retry_until => now() - interval '1 s') AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT nextval('app.runs') - 1 AS runs;
SELECT sqlstate, exception ~ 'passed its retry_until' AS says_why FROM jobq.failed_jobs WHERE job_id = :id;
-- a retry whose backoff would start after the deadline fails now
SELECT jobq.dispatch('app.always', '{}', retry_until => now() + interval '1 hour',
                     backoff => '2 hours') AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT attempts FROM jobq.failed_jobs WHERE job_id = :id;
SELECT jobq.register('app.always', retry_for => '10 min', max_exceptions => 7);
SELECT jobq.dispatch('app.always', '{}', delay => '1 hour') AS id \gset
SELECT retry_until - created_at AS retry_for, max_exceptions FROM jobq.jobs WHERE id = :id;
DELETE FROM jobq.jobs;
SELECT jobq.unregister('app.always');

-- ---- backoff schedules ----
SELECT jobq.dispatch('app.always', '{}', tries => 5,
                     backoff_schedule => '{1 min, 10 min, 1 hour}') AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT attempts, round(extract(epoch FROM available_at - now()) / 60) AS wait_min FROM jobq.jobs;
UPDATE jobq.jobs SET available_at = now();
CALL jobq.work(stop_when_empty => true);
SELECT attempts, round(extract(epoch FROM available_at - now()) / 60) AS wait_min FROM jobq.jobs;
UPDATE jobq.jobs SET available_at = now();
CALL jobq.work(stop_when_empty => true);
UPDATE jobq.jobs SET available_at = now();
CALL jobq.work(stop_when_empty => true);
SELECT attempts, round(extract(epoch FROM available_at - now()) / 60) AS wait_min_last_repeats FROM jobq.jobs;
DELETE FROM jobq.jobs;
-- exponential with jitter: attempt n waits between half and all of backoff * 2^(n-1)
SELECT jobq.dispatch('app.always', '{}', tries => 10, backoff => '1 min',
                     backoff_exponential => true) AS id \gset
CALL jobq.work(stop_when_empty => true);
UPDATE jobq.jobs SET available_at = now();
CALL jobq.work(stop_when_empty => true);
UPDATE jobq.jobs SET available_at = now();
CALL jobq.work(stop_when_empty => true);
SELECT attempts, available_at - now() BETWEEN interval '119 s' AND interval '241 s' AS within_2_to_4_min
  FROM jobq.jobs;
DELETE FROM jobq.jobs;
-- a plain interval stays unambiguous; bad schedules are rejected
SELECT jobq.dispatch('app.always', '{}', backoff => '10 s', delay => '1 h') > 0 AS ok;
SELECT backoff, backoff_schedule, backoff_exponential FROM jobq.jobs;
DELETE FROM jobq.jobs;
SELECT jobq.dispatch('app.always', '{}', backoff_schedule => '{}');
SELECT jobq.dispatch('app.always', '{}', backoff_schedule => '{1 s, NULL}');
SELECT jobq.dispatch('app.always', '{}', backoff_schedule => '{-1 s}');
SELECT jobq.dispatch('app.always', '{}', backoff_schedule => '{1 s}', backoff => '1 s');
SELECT jobq.dispatch('app.always', '{}', max_exceptions => -1);
SELECT jobq.dispatch('app.always', '{}', retry_until => 'infinity');
SELECT jobq.register('app.always', retry_for => '0');
SELECT count(*) AS nothing_written FROM jobq.jobs;

-- ---- dispatch_now and connection => 'sync' ----
CREATE FUNCTION app.now_job(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p ? 'fail' THEN
        RAISE EXCEPTION 'sync failure %', p->>'fail';
    END IF;
    IF p ? 'sleep' THEN
        PERFORM pg_sleep((p->>'sleep')::float8);
    END IF;
    INSERT INTO app.log (what, info)
    VALUES ('now', jsonb_build_object('who', current_user, 'job', jobq.current_job()));
END $$;
TRUNCATE app.log;
BEGIN;
SET ROLE jobq_clerk;
SELECT jobq.dispatch_now('app.now_job', '{"n": 1}');
SELECT jobq.dispatch('app.now_job', '{"n": 2}', connection => 'sync') IS NULL AS no_id;
RESET ROLE;
SELECT info->>'who' AS who, info->'job'->>'connection' AS connection,
       info->'job'->>'id' AS id, info->'job'->>'attempt' AS attempt
  FROM app.log ORDER BY seq;
ROLLBACK;
SELECT count(*) AS rolled_back_with_the_caller FROM app.log;
SELECT jobq.dispatch_now('app.now_job', '{"fail": "x"}');
SELECT jobq.dispatch('app.now_job', '{"fail": "y"}', connection => 'sync');
SELECT jobq.dispatch('app.now_job', '{"sleep": 30}', connection => 'sync', timeout => '200 ms');
SELECT jobq.dispatch('app.now_job', '{}', connection => 'redis');
SELECT jobq.dispatch('app.now_job', '{}', connection => 'sync', delay => '1 s');
-- in a sync job, jobq.fail() raises at once and jobq.release() is refused
CREATE FUNCTION app.sync_asks(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p ? 'fail' THEN PERFORM jobq.fail('no invoice'); END IF;
    PERFORM jobq.release();
END $$;
SELECT jobq.dispatch_now('app.sync_asks', '{"fail": true}');
SELECT jobq.dispatch_now('app.sync_asks', '{}');
-- a sync job run from inside a queued one sees its own context, then the outer one is back
CREATE FUNCTION app.outer_job(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM jobq.dispatch_now('app.now_job', '{"n": 3}');
    INSERT INTO app.log (what, info) VALUES ('outer', jobq.current_job());
END $$;
TRUNCATE app.log;
SELECT jobq.dispatch('app.outer_job') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT what, coalesce(info->'job'->>'connection', info->>'connection') AS connection,
       coalesce(info->'job'->>'job', info->>'job') AS job
  FROM app.log ORDER BY seq;
SELECT count(*) AS no_rows FROM jobq.jobs;

-- ---- dispatch_sql: a queued closure, run as the dispatcher ----
CREATE TABLE app.closure (who text, n int);
GRANT INSERT ON app.closure TO jobq_clerk;
SET ROLE jobq_clerk;
SET search_path = app;   -- the closure runs with the dispatcher's search_path
SELECT jobq.dispatch_sql('INSERT INTO closure VALUES (current_user, 1); INSERT INTO closure VALUES (current_user, 2)') > 0 AS ok;
SELECT jobq.dispatch_sql('INSERT INTO closure VALUES (current_user, 3)', delay => '1 h') > 0 AS ok;
RESET search_path;
RESET ROLE;
SELECT job, payload->>'search_path' AS search_path, owner FROM jobq.jobs ORDER BY id;
UPDATE jobq.jobs SET available_at = now();
CALL jobq.work(stop_when_empty => true);
SELECT who, n FROM app.closure ORDER BY n;
SELECT count(*) AS left_over FROM jobq.jobs;
SELECT jobq.dispatch_sql('');
SELECT jobq.dispatch_sql('  ; -- nothing');
SELECT jobq.dispatch_sql('SELEC 1');
SELECT jobq.dispatch_sql(NULL);
SELECT count(*) AS nothing_queued FROM jobq.jobs;

-- clean up
DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
DROP ROLE jobq_clerk;
