-- jobq.retry() and jobq.retry_all() queue a failed job again with the
-- options it was dispatched with (lifecycle, chain, middleware, external),
-- its deadline recomputed from the handler's registered retry_for; a
-- retried chain link resumes its chain, as with jobq.retry_chain().
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE TABLE app.ran (name text, attempt int);
CREATE TABLE app.broken (x int);
CREATE TABLE app.failures (name text, sqlstate text);
CREATE FUNCTION app.step(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p->>'breaks' = 'yes' AND EXISTS (SELECT FROM app.broken) THEN
        RAISE EXCEPTION 'step % is broken', p->>'name';
    END IF;
    INSERT INTO app.ran VALUES (p->>'name', (jobq.current_job()->>'attempt')::int);
END $$;
CREATE FUNCTION app.on_fail(p jsonb, e jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.failures VALUES (p->>'name', e->>'sqlstate') $$;
CREATE FUNCTION app.gate(ctx jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT '{"action": "run"}'::jsonb $$;
INSERT INTO app.broken VALUES (1);

-- ---- lifecycle options and middleware are kept; retry_until recomputed ----
SELECT jobq.register('app.step', tries => 1, retry_for => '2 hours', max_exceptions => 2,
                     backoff_schedule => '{1 s, 1 min}', on_failure => 'app.on_fail',
                     delete_when_missing_models => true,
                     middleware => '[{"call": "app.gate"}]');
SELECT jobq.dispatch('app.step', '{"name": "a", "breaks": "yes"}') AS a \gset
-- retry_until overrides tries; the second failed attempt ends it
CALL jobq.work(stop_when_empty => true);
UPDATE jobq.jobs SET available_at = now();
CALL jobq.work(stop_when_empty => true);
SELECT name, sqlstate FROM app.failures;
SELECT id AS fa FROM jobq.failed WHERE job_id = :a \gset
SELECT retry_until - dispatched_at AS window, max_exceptions, backoff_schedule,
       on_failure, delete_when_missing_models
  FROM jobq.failed WHERE id = :fa;
-- the registered deadline is now 5 hours: the retried job gets it from now
SELECT jobq.register('app.step', tries => 1, retry_for => '5 hours', max_exceptions => 2,
                     backoff_schedule => '{1 s, 1 min}', on_failure => 'app.on_fail',
                     delete_when_missing_models => true,
                     middleware => '[{"call": "app.gate"}]');
SELECT failed_id = :fa AS same FROM jobq.retry(:fa);
SELECT attempts, exceptions, tries,
       retry_until - created_at AS retry_for,
       max_exceptions, backoff_schedule, backoff_exponential, on_failure,
       delete_when_missing_models, middleware, external, chain_id
  FROM jobq.jobs;
-- it fails, is retried after 1 s (the first step of the schedule), and
-- fails for good at its second failed attempt, its failure handler run
CALL jobq.work(stop_when_empty => true);
SELECT attempts, exceptions, available_at > now() AS backing_off,
       last_error->>'message' AS last_error
  FROM jobq.jobs;
UPDATE jobq.jobs SET available_at = now();
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS queued FROM jobq.jobs;
SELECT attempts, sqlstate, exception FROM jobq.failed_jobs;
SELECT name, sqlstate FROM app.failures;
DELETE FROM jobq.failed;

-- ---- without a registered retry_for, the original window is kept ----
SELECT jobq.register('app.step', tries => 1);
SELECT jobq.dispatch('app.step', '{"name": "b", "breaks": "yes"}',
                     retry_until => now() + interval '30 min', max_exceptions => 1) AS b \gset
CALL jobq.work(stop_when_empty => true);
SELECT sqlstate, exception FROM jobq.failed_jobs WHERE job_id = :b;
SELECT count(*) AS retried FROM jobq.retry_all();
SELECT retry_until BETWEEN clock_timestamp() + interval '29 min'
                       AND clock_timestamp() + interval '30 min' AS window_kept,
       max_exceptions, on_failure, middleware
  FROM jobq.jobs;
-- and a job without a deadline gets none
DELETE FROM jobq.jobs;
SELECT jobq.dispatch('app.step', '{"name": "c", "breaks": "yes"}') AS c \gset
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS retried FROM jobq.retry_all();
SELECT retry_until IS NULL AS no_deadline, tries FROM jobq.jobs;
DELETE FROM jobq.jobs;
DELETE FROM jobq.failed;

-- ---- a failed chain link: jobq.retry() resumes the chain like retry_chain ----
SELECT jobq.unregister('app.step');
TRUNCATE app.ran;
SELECT chain_id AS ch1 FROM jobq.dispatch_chain('[
    {"job": "app.step", "payload": {"name": "1.a"}},
    {"job": "app.step", "payload": {"name": "1.b", "breaks": "yes"}, "tries": 1},
    {"job": "app.step", "payload": {"name": "1.c"}}]') \gset
SELECT chain_id AS ch2 FROM jobq.dispatch_chain('[
    {"job": "app.step", "payload": {"name": "2.a"}},
    {"job": "app.step", "payload": {"name": "2.b", "breaks": "yes"}, "tries": 1},
    {"job": "app.step", "payload": {"name": "2.c"}}]') \gset
CALL jobq.work(stop_when_empty => true);
SELECT name FROM app.ran ORDER BY name;
SELECT chain_id = :ch1 AS first_chain, payload->>'name' AS name, chain_links_left
  FROM jobq.failed_jobs ORDER BY chain_id;
DELETE FROM app.broken;
SELECT count(*) AS retried FROM jobq.retry((SELECT id FROM jobq.failed WHERE chain_id = :ch1));
SELECT jobq.retry_chain((SELECT id FROM jobq.failed WHERE chain_id = :ch2)) > 0 AS requeued;
SELECT chain_id = :ch1 AS first_chain, payload->>'name' AS name, attempts, tries,
       jsonb_array_length(chain->'links') AS links_left
  FROM jobq.jobs ORDER BY chain_id;
CALL jobq.work(stop_when_empty => true);
SELECT name FROM app.ran ORDER BY name;
SELECT count(*) AS queued, (SELECT count(*) FROM jobq.failed) AS failed FROM jobq.jobs;

-- ---- an external job stays external ----
SELECT jobq.register('thumbnail', tries => 1, external => true);
SELECT jobq.dispatch('thumbnail', '{"n": 1}') AS t \gset
SELECT jobq.fail(id, token, '"no disk"') FROM jobq.reserve('{default}');
SELECT count(*) AS retried FROM jobq.retry_all();
SELECT job, external, attempts FROM jobq.jobs;
CALL jobq.work(stop_when_empty => true);
SELECT payload, attempt FROM jobq.reserve('{default}');

DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
