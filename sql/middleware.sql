-- Middleware (jobq.register(..., middleware => ...)) and the limiters
-- jobq.throttle() and jobq.funnel().  Concurrency is in specs/funnel.spec
-- and t/003_chains_limits.pl.
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE TABLE app.ran (seq serial, name text);
CREATE FUNCTION app.work(p jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.ran (name) VALUES (p->>'name') $$;

-- the SQL limiters
SELECT jobq.throttle('sql-key', 2, '1 hour') AS first,
       jobq.throttle('sql-key', 2, '1 hour') AS second;
SELECT jobq.throttle('sql-key', 2, '1 hour') AS third_refused;
SELECT jobq.throttle('other-key', 2, '1 hour') AS other_key;
-- a tiny window empties quickly
SELECT jobq.throttle('fast', 1, '1 ms') AS a;
SELECT pg_sleep(0.01);
SELECT jobq.throttle('fast', 1, '1 ms') AS b;
-- a funnel slot is held until the end of the transaction
BEGIN;
SELECT jobq.funnel('f', 2) AS slot, jobq.funnel('f', 2) AS same_backend_again;
COMMIT;
SELECT jobq.throttle('k', 0, '1 s');
SELECT jobq.throttle('k', 1000, '1 s');
SELECT jobq.throttle('k', 1, '0 s');
SELECT jobq.throttle('', 1, '1 s');
SELECT jobq.funnel('k', 0);

-- throttle as middleware: allow 2 per hour per account; a blocked job is
-- released until the window has room, and its attempt is refunded
SELECT jobq.register('app.work', middleware =>
    '[{"throttle": {"key": "acct:{account}", "allow": 2, "every": "1 hour"}}]');
SELECT middleware FROM jobq.handlers;
SELECT count(jobq.dispatch('app.work', jsonb_build_object('name', 'a' || g, 'account', 1)))
  FROM generate_series(1, 3) g;
SELECT jobq.dispatch('app.work', '{"name": "b1", "account": 2}') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT name FROM app.ran ORDER BY seq;
SELECT payload->>'name' AS name, attempts, reserved_by IS NULL AS waiting,
       available_at > now() + interval '59 min' AS until_window_has_room
  FROM jobq.jobs;
DELETE FROM jobq.jobs;

-- consume_attempt: the block counts as an attempt; a fixed release delay
SELECT jobq.register('app.work', middleware =>
    '[{"throttle": {"key": "acct:{account}", "allow": 2, "every": "1 hour",
                    "release": "5 min", "consume_attempt": true}}]');
SELECT jobq.dispatch('app.work', '{"name": "a4", "account": 1}', tries => 3) > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT payload->>'name' AS name, attempts,
       available_at BETWEEN now() + interval '4 min' AND now() + interval '6 min' AS after_release
  FROM jobq.jobs;
DELETE FROM jobq.jobs;
-- the retry rule applies to a middleware release as to jobq.release(): a
-- block that consumes the last try fails the job (JQ002), and so does a
-- release (even refunded) past the job's retry_until
SELECT jobq.dispatch('app.work', '{"name": "a5", "account": 1}', tries => 1) > 0 AS ok;
SELECT jobq.dispatch('app.work', '{"name": "a6", "account": 1}', tries => 3,
                     retry_until => now() + interval '1 min') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS queued FROM jobq.jobs;
SELECT payload->>'name' AS name, attempts, sqlstate, regexp_replace(exception, 'job \d+', 'job N') AS exception
  FROM jobq.failed_jobs ORDER BY payload->>'name';
DELETE FROM jobq.failed;
SELECT jobq.register('app.work', middleware =>
    '[{"throttle": {"key": "acct:{account}", "allow": 2, "every": "1 hour", "release": "5 min"}}]');
SELECT jobq.dispatch('app.work', '{"name": "a7", "account": 1}', tries => 1,
                     retry_until => now() + interval '1 min') > 0 AS ok;
SELECT jobq.dispatch('app.work', '{"name": "a8", "account": 1}', tries => 1,
                     retry_until => now() + interval '1 hour') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT payload->>'name' AS name, attempts FROM jobq.jobs;
SELECT payload->>'name' AS name, attempts, sqlstate, regexp_replace(exception, 'job \d+', 'job N') AS exception
  FROM jobq.failed_jobs;
DELETE FROM jobq.jobs;
DELETE FROM jobq.failed;

-- a key that needs a missing payload field fails the attempt, saying so
SELECT jobq.dispatch('app.work', '{"name": "nokey"}', tries => 1) > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT sqlstate, exception FROM jobq.failed_jobs;
DELETE FROM jobq.failed;

-- without_overlapping with nobody holding the key just runs (a key held
-- by another session: specs/funnel.spec)
TRUNCATE app.ran;
SELECT jobq.register('app.work', middleware =>
    '[{"without_overlapping": {"key": "inv:{name}", "release": "2 s"}}]');
SELECT jobq.dispatch('app.work', '{"name": "w1"}') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT name FROM app.ran;

-- custom middleware: a function of the job's context that decides
CREATE TABLE app.seen (context jsonb, who text);
CREATE FUNCTION app.gate(ctx jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.seen VALUES (ctx, current_user);
    RETURN CASE ctx->'payload'->>'name'
        WHEN 'release' THEN '{"action": "release", "delay": "1 hour"}'
        WHEN 'fail' THEN '{"action": "fail", "message": "not today"}'
        WHEN 'delete' THEN '{"action": "delete"}'
        WHEN 'bogus' THEN '{"action": "maybe"}'
        WHEN 'none' THEN NULL
        ELSE '{"action": "run"}' END;
END $$;
TRUNCATE app.ran;
SELECT jobq.register('app.work', middleware => '[{"call": "app.gate"}]');
SELECT count(jobq.dispatch('app.work', jsonb_build_object('name', n), tries => 1))
  FROM unnest('{run,release,fail,delete,bogus,none}'::text[]) n;
CALL jobq.work(stop_when_empty => true);
SELECT name FROM app.ran ORDER BY seq;
SELECT payload->>'name' AS name, attempts,
       available_at > now() + interval '59 min' AS released FROM jobq.jobs;
SELECT payload->>'name' AS name, sqlstate, exception FROM jobq.failed_jobs ORDER BY id;
SELECT context->>'job' AS job, context->>'queue' AS queue, context->'attempts' AS attempts,
       context->'tries' AS tries, who
  FROM app.seen WHERE context->'payload'->>'name' = 'run';
DELETE FROM jobq.jobs;
DELETE FROM jobq.failed;
-- a chain link deleted by middleware counts as done: the chain goes on;
-- one failed by middleware stops it
TRUNCATE app.ran;
SELECT jobq.dispatch_chain('[{"job": "app.work", "payload": {"name": "delete"}},
                             {"job": "app.work", "payload": {"name": "after-delete"}}]') IS NOT NULL AS ok;
SELECT jobq.dispatch_chain('[{"job": "app.work", "payload": {"name": "fail"}},
                             {"job": "app.work", "payload": {"name": "after-fail"}}]') IS NOT NULL AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT name FROM app.ran ORDER BY seq;
SELECT payload->>'name' AS name, sqlstate, chain_links_left FROM jobq.failed_jobs;
DELETE FROM jobq.failed;

-- middleware applies in order: the first that does not say run decides
CREATE FUNCTION app.never(ctx jsonb) RETURNS jsonb LANGUAGE sql AS
    $$ SELECT '{"action": "release", "delay": "1 hour"}'::jsonb $$;
SELECT jobq.register('app.work', middleware =>
    '[{"call": "app.never"}, {"throttle": {"key": "order", "allow": 1, "every": "1 hour"}}]');
SELECT jobq.dispatch('app.work', '{"name": "o"}') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT jobq.throttle('order', 1, '1 hour') AS throttle_untouched;
DELETE FROM jobq.jobs;

-- middleware runs before the handler only, not before the failure handler;
-- what a stopping middleware did is rolled back with the attempt; a job
-- failed by middleware (JQ005) has its failure handler run once
CREATE TABLE app.failures (name text, sqlstate text, message text);
CREATE FUNCTION app.on_fail(p jsonb, e jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.failures VALUES (p->>'name', e->>'sqlstate', e->>'message') $$;
CREATE FUNCTION app.boom(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.ran (name) VALUES (p->>'name');
    IF p->>'name' = 'boom' THEN RAISE EXCEPTION 'boom'; END IF;
END $$;
TRUNCATE app.ran, app.seen;
SELECT jobq.register('app.boom', tries => 1, on_failure => 'app.on_fail', middleware =>
    '[{"call": "app.gate"}, {"throttle": {"key": "fh", "allow": 10, "every": "1 hour"}}]');
SELECT count(jobq.dispatch('app.boom', jsonb_build_object('name', n)))
  FROM unnest('{run,release,fail,delete,boom}'::text[]) n;
CALL jobq.work(stop_when_empty => true);
SELECT name FROM app.ran ORDER BY seq;
SELECT context->'payload'->>'name' AS gate_saw FROM app.seen;
SELECT payload->>'name' AS name, attempts FROM jobq.jobs;
SELECT payload->>'name' AS name, sqlstate, exception FROM jobq.failed_jobs ORDER BY id;
SELECT * FROM app.failures ORDER BY name;
-- the throttle counted the two jobs that ran (run, boom), not the failure
-- handler of boom: one more start is allowed under 3
SELECT jobq.throttle('fh', 3, '1 hour') AS third, jobq.throttle('fh', 3, '1 hour') AS fourth;
DELETE FROM jobq.jobs;
DELETE FROM jobq.failed;
SELECT jobq.unregister('app.boom');

-- registering checks the list
SELECT jobq.register('app.work', middleware => '{"throttle": {}}');
SELECT jobq.register('app.work', middleware => '[42]');
SELECT jobq.register('app.work', middleware => '[{"throttle": {"allow": 5}}]');
SELECT jobq.register('app.work', middleware => '[{"throttle": {"allow": 5, "every": "1 s", "limit": 2}}]');
SELECT jobq.register('app.work', middleware => '[{"funnel": {"key": "x"}}]');
SELECT jobq.register('app.work', middleware => '[{"funnel": {"limit": 2, "release": "soon"}}]');
SELECT jobq.register('app.work', middleware => '[{"without_overlapping": {}, "funnel": {}}]');
SELECT jobq.register('app.work', middleware => '[{"rate_limit": {}}]');
SELECT jobq.register('app.work', middleware => '[{"call": "app.missing"}]');
SELECT jobq.register('app.work', middleware => '[{"call": "app.work"}]');
SET search_path = app, public;
SELECT jobq.register('app.work', middleware => '[{"call": "gate"}]');
RESET search_path;
SELECT jobq.register('app.work', middleware => '[{"funnel": {"limit": 2, "consume_attempt": "yes"}}]');
SELECT middleware FROM jobq.handlers;

-- clean up
DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
