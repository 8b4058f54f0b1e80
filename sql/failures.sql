-- Failed attempts: retries with backoff, the failed store, timeouts, and
-- atomic completion (a failed job's effects roll back, its failure stays).
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE TABLE app.effects (n int);
CREATE SEQUENCE app.calls;   -- counts handler runs, even rolled-back ones
CREATE FUNCTION app.always_fails(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('app.calls');
    INSERT INTO app.effects VALUES (1);
    RAISE EXCEPTION 'cannot send invoice %', payload->>'invoice'
        USING DETAIL = 'The mail server said no.', HINT = 'Check the address.',
              ERRCODE = 'P0001';
END $$;
CREATE FUNCTION app.sleeps(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('app.calls');
    INSERT INTO app.effects VALUES (2);
    PERFORM pg_sleep((payload->>'secs')::float8);
END $$;

-- tries = 3, no backoff: three runs, then one failed record; no effects
SELECT jobq.dispatch('app.always_fails', '{"invoice": 42}', tries => 3) AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT nextval('app.calls') - 1 AS runs;
SELECT count(*) AS effects FROM app.effects;
SELECT count(*) AS still_queued FROM jobq.jobs;
SELECT job_id = :id AS same_job, queue, job, payload, attempts, exception,
       sqlstate, detail, hint, context IS NOT NULL AS has_context, owner,
       failed_at >= dispatched_at AS ordered
  FROM jobq.failed_jobs;

-- with a backoff the job waits between attempts, its error remembered
SELECT setval('app.calls', 1, false);
SELECT jobq.dispatch('app.always_fails', '{"invoice": 43}', tries => 2,
                     backoff => '1 hour') AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT attempts, reserved_by IS NULL AS free,
       available_at > now() + interval '59 min' AS backed_off,
       last_error->>'message' AS last_message, last_error->>'sqlstate' AS last_state
  FROM jobq.jobs WHERE id = :id;
-- once due again it runs its last attempt and fails for good
UPDATE jobq.jobs SET available_at = now() - interval '1 s' WHERE id = :id;
CALL jobq.work(stop_when_empty => true);
SELECT nextval('app.calls') - 1 AS runs;
SELECT attempts, exception FROM jobq.failed_jobs WHERE job_id = :id;

-- unlimited tries (0) keep retrying
SELECT jobq.dispatch('app.always_fails', '{}', tries => 0, backoff => '1 hour') AS id \gset
CALL jobq.work(stop_when_empty => true);
UPDATE jobq.jobs SET available_at = now() - interval '1 s', attempts = 1000 WHERE id = :id;
CALL jobq.work(stop_when_empty => true);
SELECT attempts, tries FROM jobq.jobs WHERE id = :id;
DELETE FROM jobq.jobs WHERE id = :id;

-- a job whose attempts are already beyond its tries fails without running
SELECT setval('app.calls', 1, false);
SELECT jobq.dispatch('app.always_fails', '{}', tries => 2, backoff => '1 hour') AS id \gset
UPDATE jobq.jobs SET attempts = 2, available_at = now() - interval '1 s' WHERE id = :id;
CALL jobq.work(stop_when_empty => true);
SELECT nextval('app.calls') - 1 AS runs;
SELECT attempts, sqlstate, exception FROM jobq.failed_jobs WHERE job_id = :id;

-- the timeout is enforced; on the last try the job fails saying so
TRUNCATE app.effects;
SELECT jobq.dispatch('app.sleeps', '{"secs": 30}', timeout => '200 ms') AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT attempts, sqlstate, exception, detail, hint FROM jobq.failed_jobs WHERE job_id = :id;
SELECT failed_at - dispatched_at < interval '20 s' AS did_not_wait_30s
  FROM jobq.failed_jobs WHERE job_id = :id;
SELECT count(*) AS effects FROM app.effects;
-- with tries left, a timed-out attempt is retried later
SELECT jobq.dispatch('app.sleeps', '{"secs": 30}', timeout => '200 ms', tries => 2,
                     backoff => '1 hour') AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT attempts, last_error->>'message' AS last_message FROM jobq.jobs WHERE id = :id;
DELETE FROM jobq.jobs WHERE id = :id;
-- a job within its timeout completes
SELECT jobq.dispatch('app.sleeps', '{"secs": 0.05}', timeout => '20 s') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS effects FROM app.effects;

-- the worker's defaults apply when the job has none: jobq.tries = 1
SELECT jobq.dispatch('app.always_fails', '{"invoice": 44}') AS id \gset
CALL jobq.work(stop_when_empty => true);
SELECT attempts FROM jobq.failed_jobs WHERE job_id = :id;

-- a handler that fails in the middle of other jobs fails alone
CREATE TABLE app.ok (n int);
CREATE FUNCTION app.fine(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.ok VALUES ((payload->>'n')::int) $$;
SELECT count(jobq.dispatch(CASE WHEN g % 3 = 0 THEN 'app.always_fails' ELSE 'app.fine' END,
                           jsonb_build_object('n', g)))
  FROM generate_series(1, 30) g;
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS succeeded FROM app.ok;
SELECT count(*) AS failed FROM jobq.failed_jobs
 WHERE payload ? 'n' AND job = 'app.always_fails';
SELECT count(*) AS left_over FROM jobq.jobs;

-- clean up
DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
