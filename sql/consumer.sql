-- The SQL consumer API: external jobs reserved over SQL with a lease and a
-- fencing token.  Every call here is its own transaction, as through a
-- transaction-pooling pooler: the claims live in rows, not in the session.
CREATE EXTENSION jobq;
CREATE SCHEMA app;
\set SHOW_CONTEXT never
-- the SQLSTATE a statement raises (NULL if none)
CREATE FUNCTION app.sqlstate_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

-- an external job has no SQL handler, but a name must be registered
SELECT jobq.dispatch('resize_image', '{}');
SELECT jobq.register('resize_image', queue => 'images', tries => 2, external => true);
SELECT jobq.register('', external => true);
SELECT job, queue, tries, external, registered_by FROM jobq.handlers;
SELECT jobq.dispatch('resize_image', '{"file": "a.png"}') AS a \gset
SELECT queue, job, external, attempts, lease_token FROM jobq.jobs WHERE id = :a;

-- in-server workers never run external jobs
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS still_queued FROM jobq.jobs;

-- reserve: id, token, job, payload, queue, attempt, tries, lease expiry
SELECT id = :a AS same, job, payload, queue, attempt, tries,
       lease_expires_at > now() + interval '59 s' AS leased_1min
  FROM jobq.reserve('{images}', lease => '1 min');
SELECT id, token FROM jobq.jobs, LATERAL (SELECT lease_token AS token) t WHERE id = :a \gset a_
-- leased: not available to anybody else
SELECT count(*) AS reserved_again FROM jobq.reserve('{images}');
SELECT jobq.complete(:a_id, :a_token);
SELECT count(*) AS left_after_complete FROM jobq.jobs;
-- a finished job's token is stale
SELECT app.sqlstate_of(format('SELECT jobq.complete(%s, %s)', :a_id, :a_token)) AS complete_twice;
SELECT jobq.complete(:a_id, :a_token);

-- queues in priority order, FIFO within a queue, delayed jobs wait, max
SELECT jobq.dispatch('resize_image', '{"n": 1}', queue => 'low') AS l1 \gset
SELECT jobq.dispatch('resize_image', '{"n": 2}', queue => 'high') AS h1 \gset
SELECT jobq.dispatch('resize_image', '{"n": 3}', queue => 'high') AS h2 \gset
SELECT jobq.dispatch('resize_image', '{"n": 4}', queue => 'high', delay => '1 hour') AS h3 \gset
SELECT payload, queue, attempt FROM jobq.reserve('{high,low}', max => 2);
SELECT payload, queue, attempt FROM jobq.reserve('{high,low}', max => 10);
SELECT count(*) AS nothing_left FROM jobq.reserve('{high,low}', max => 10);

-- release: available again after its delay, the attempt stays counted
SELECT jobq.release(:h1, lease_token) FROM jobq.jobs WHERE id = :h1;
SELECT jobq.release(:h2, lease_token, '1 hour') FROM jobq.jobs WHERE id = :h2;
SELECT payload, attempt FROM jobq.reserve('{high}', max => 10);
SELECT attempts, lease_token IS NULL AS free, available_at > now() + interval '59 min' AS delayed
  FROM jobq.jobs WHERE id = :h2;

-- fail: retried after its backoff while tries remain, then the failed store
SELECT jobq.register('transcode', tries => 2, backoff => '0', external => true);
SELECT jobq.dispatch('transcode', '{"video": 7}') AS t \gset
SELECT jobq.fail(id, token, '{"message": "ffmpeg crashed", "detail": "exit status 3"}')
  FROM jobq.reserve('{default}');
SELECT attempts, lease_token IS NULL AS free, last_error FROM jobq.jobs WHERE id = :t;
SELECT jobq.fail(id, token, to_jsonb('out of disk'::text)) FROM jobq.reserve('{default}');
SELECT count(*) AS queued FROM jobq.jobs WHERE id = :t;
SELECT job_id = :t AS same, job, payload, attempts, exception, sqlstate, detail
  FROM jobq.failed_jobs;
-- a consumer's own SQLSTATE is kept; without an error a generic one
SELECT jobq.dispatch('transcode', '{"video": 8}') AS t \gset
SELECT jobq.fail(id, token, '{"sqlstate": "22023", "message": "bad video"}') FROM jobq.reserve('{default}');
SELECT last_error FROM jobq.jobs WHERE id = :t;
SELECT jobq.fail(id, token) FROM jobq.reserve('{default}');
SELECT exception, sqlstate FROM jobq.failed_jobs WHERE job_id = :t;

-- a lease that expires: the job is available again, its attempt counted;
-- when it was the last try, it goes to the failed store
SELECT jobq.dispatch('transcode', '{"video": 9}') AS t \gset
SELECT id, token FROM jobq.reserve('{default}') \gset old_
SELECT jobq.extend(:old_id, :old_token, '1 ms') > now() AS extended;
SELECT pg_sleep(0.05);
SELECT id = :t AS same, attempt, token > :old_token AS newer_token FROM jobq.reserve('{default}');
SELECT last_error->>'sqlstate' AS sqlstate, last_error->>'message' LIKE 'the lease of attempt 1 of job % expired' AS why
  FROM jobq.jobs WHERE id = :t;
SELECT jobq.extend(id, lease_token, '1 ms') > now() AS extended FROM jobq.jobs WHERE id = :t;
SELECT pg_sleep(0.05);
SELECT count(*) AS reserved FROM jobq.reserve('{default}');
SELECT exception LIKE 'the lease of attempt 2 of job % expired' AS why, sqlstate, attempts
  FROM jobq.failed_jobs WHERE job_id = :t;

-- stale tokens are rejected with SQLSTATE JQ701 and change nothing
SELECT jobq.dispatch('transcode', '{"video": 10}') AS t \gset
SELECT id, token FROM jobq.reserve('{default}') \gset s_
SELECT app.sqlstate_of(format('SELECT jobq.complete(%s, %s)', :s_id, :s_token - 1)) AS wrong_token,
       app.sqlstate_of(format('SELECT jobq.extend(%s, %s)', :s_id, :s_token + 1)) AS wrong_extend,
       app.sqlstate_of(format('SELECT jobq.fail(%s, %s)', :s_id, 0)) AS wrong_fail,
       app.sqlstate_of(format('SELECT jobq.release(%s, %s)', :s_id + 1000, :s_token)) AS no_such_job;
SELECT attempts, lease_token = :s_token AS still_mine FROM jobq.jobs WHERE id = :t;
SELECT jobq.release(:s_id, :s_token);
SELECT jobq.release(:s_id, :s_token);
SELECT jobq.complete(id, token) FROM jobq.reserve('{default}');

-- bad input: clear errors, nothing written
SELECT jobq.dispatch('transcode', '{}') AS t \gset
SELECT * FROM jobq.reserve('{default}', lease => '0');
SELECT * FROM jobq.reserve('{default}', lease => '8 days');
SELECT * FROM jobq.reserve('{default}', max => 0);
SELECT * FROM jobq.reserve('{}');
SELECT * FROM jobq.reserve('{"bad,name"}');
SELECT * FROM jobq.reserve('{default}', lease => NULL);
SELECT jobq.fail(NULL, 1);
SELECT jobq.complete(1, NULL);
SELECT jobq.extend(1, 1, NULL);
SELECT attempts, lease_token IS NULL AS free FROM jobq.jobs WHERE id = :t;
-- a SQL handler's job is not an external job
CREATE FUNCTION app.noop(payload jsonb) RETURNS void LANGUAGE sql AS '';
SELECT jobq.dispatch('app.noop', '{}') AS n \gset
SELECT count(*) AS external_only FROM jobq.reserve('{default}', max => 10);
SELECT app.sqlstate_of(format('SELECT jobq.complete(%s, 1)', :n)) AS not_external;
SELECT jobq.register('app.noop', external => true);
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS left FROM jobq.jobs;
DELETE FROM jobq.jobs;

-- a role reserves and reports only the jobs of roles it belongs to; an
-- external name belongs to the role that registered it
CREATE ROLE jobq_test_ann;
CREATE ROLE jobq_test_bob;
SET ROLE jobq_test_ann;
SELECT jobq.dispatch('transcode', '{"by": "ann"}') > 0 AS ok;
SELECT jobq.register('transcode', external => true);
SET ROLE jobq_test_bob;
SELECT jobq.dispatch('transcode', '{"by": "bob"}') > 0 AS ok;
SELECT payload FROM jobq.reserve('{default}', max => 10);
RESET ROLE;
SELECT id, lease_token FROM jobq.jobs WHERE payload->>'by' = 'bob' \gset bob_
SET ROLE jobq_test_ann;
SELECT jobq.complete(:bob_id, :bob_lease_token);
SELECT payload FROM jobq.reserve('{default}', max => 10);
RESET ROLE;
SELECT payload->>'by' AS by, owner FROM jobq.jobs ORDER BY id;
DELETE FROM jobq.jobs;
DROP ROLE jobq_test_ann, jobq_test_bob;

-- external names: unregister, and no clash with a SQL handler's registration
SELECT jobq.register('app.noop');
SELECT jobq.register('app.noop', external => true);
SELECT jobq.unregister('transcode');
SELECT jobq.dispatch('transcode', '{}');

-- the restart generation that the jobq CLI's workers watch
SELECT jobq.restart_generation();
SELECT jobq.restart();
SELECT jobq.restart_generation();

-- Lease scenario: consumer A reserves with a 3 s lease and extends it
-- every second for 5 s; meanwhile nobody else can reserve the job, and A's
-- complete succeeds.
SELECT jobq.dispatch('resize_image', '{"file": "b.png"}') AS b \gset
SELECT id, token FROM jobq.reserve('{images}', lease => '3 s') \gset A_
SELECT pg_sleep(1);
SELECT jobq.extend(:A_id, :A_token, '3 s') IS NOT NULL AS extended;
SELECT count(*) AS others FROM jobq.reserve('{images}');
SELECT pg_sleep(1);
SELECT jobq.extend(:A_id, :A_token, '3 s') IS NOT NULL AS extended;
SELECT count(*) AS others FROM jobq.reserve('{images}');
SELECT pg_sleep(1);
SELECT jobq.extend(:A_id, :A_token, '3 s') IS NOT NULL AS extended;
SELECT count(*) AS others FROM jobq.reserve('{images}');
SELECT pg_sleep(1);
SELECT jobq.extend(:A_id, :A_token, '3 s') IS NOT NULL AS extended;
SELECT count(*) AS others FROM jobq.reserve('{images}');
SELECT pg_sleep(1);
SELECT jobq.extend(:A_id, :A_token, '3 s') IS NOT NULL AS extended;
SELECT count(*) AS others FROM jobq.reserve('{images}');
SELECT jobq.complete(:A_id, :A_token);
SELECT count(*) AS left FROM jobq.jobs;
-- A reserves again and stops extending: after the lease, consumer B
-- reserves the job (attempt 2); A's late complete and extend are rejected
SELECT jobq.dispatch('resize_image', '{"file": "c.png"}') AS c \gset
SELECT id, token FROM jobq.reserve('{images}', lease => '3 s') \gset A_
SELECT count(*) AS others FROM jobq.reserve('{images}');
SELECT pg_sleep(3.2);
SELECT id = :c AS same, attempt, token AS b_token FROM jobq.reserve('{images}') \gset
SELECT :'same' AS same, :attempt AS attempt;
SELECT jobq.complete(:A_id, :A_token);
SELECT jobq.extend(:A_id, :A_token, '3 s');
SELECT attempts, lease_token = :b_token AS held_by_b FROM jobq.jobs WHERE id = :c;
SELECT jobq.complete(:c, :b_token);
SELECT count(*) AS left FROM jobq.jobs;

-- The lifecycle retry rule applies to consumer outcomes.  From a fresh
-- session, which has run no job (a consumer's backend): the failure
-- handler of an external job runs there, once, when it fails for good.
\c
\set SHOW_CONTEXT never
DELETE FROM jobq.failed;
CREATE TABLE app.failures (job_id bigint, sqlstate text, message text, who text);
GRANT INSERT ON app.failures TO PUBLIC;
CREATE FUNCTION app.on_fail(payload jsonb, error jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.failures
    VALUES ((payload->>'n')::bigint, error->>'sqlstate', error->>'message', current_user)
$$;
-- max_exceptions: the second failed attempt ends the job, tries = 0 or not
SELECT jobq.register('ocr', tries => 0, backoff => '0', max_exceptions => 2,
                     on_failure => 'app.on_fail', external => true);
SELECT jobq.dispatch('ocr', '{"n": 1}') AS o \gset
SELECT jobq.fail(id, token, '"unreadable"') FROM jobq.reserve('{default}');
SELECT attempts, exceptions, lease_token IS NULL AS free FROM jobq.jobs WHERE id = :o;
SELECT jobq.fail(id, token, '"still unreadable"') FROM jobq.reserve('{default}');
SELECT count(*) AS queued FROM jobq.jobs WHERE id = :o;
SELECT attempts, exception, sqlstate FROM jobq.failed_jobs WHERE job_id = :o;
SELECT * FROM app.failures;
-- an expired lease counts as a failed attempt towards max_exceptions
SELECT jobq.dispatch('ocr', '{"n": 2}') AS o \gset
SELECT id, token FROM jobq.reserve('{default}') \gset l_
SELECT jobq.fail(:l_id, :l_token, '"unreadable"');
SELECT jobq.extend(id, token, '1 ms') > now() AS extended FROM jobq.reserve('{default}');
SELECT pg_sleep(0.05);
SELECT count(*) AS reserved FROM jobq.reserve('{default}');
SELECT attempts, sqlstate, exception LIKE 'the lease of attempt 2 of job % expired' AS why
  FROM jobq.failed_jobs WHERE job_id = :o;
SELECT job_id, sqlstate FROM app.failures WHERE job_id = 2;
-- a release on the last try fails the job (JQ002), as in a handler
SELECT jobq.register('ocr', tries => 2, on_failure => 'app.on_fail', external => true);
SELECT jobq.dispatch('ocr', '{"n": 3}') AS o \gset
SELECT jobq.release(id, token) FROM jobq.reserve('{default}');
SELECT attempts, lease_token IS NULL AS free FROM jobq.jobs WHERE id = :o;
SELECT jobq.release(id, token) FROM jobq.reserve('{default}');
SELECT count(*) AS queued FROM jobq.jobs WHERE id = :o;
SELECT attempts, sqlstate, regexp_replace(exception, 'job \d+', 'job N') AS exception
  FROM jobq.failed_jobs WHERE job_id = :o;
SELECT job_id, sqlstate, regexp_replace(message, 'job \d+', 'job N') AS message
  FROM app.failures WHERE job_id = 3;
-- retry_until (registered retry_for) overrides tries: released past it, or
-- reserved after it, the job fails
SELECT jobq.register('ocr', tries => 1, retry_for => '1 hour', external => true);
SELECT jobq.dispatch('ocr', '{"n": 4}') AS o \gset
SELECT retry_until BETWEEN now() + interval '59 min' AND now() + interval '61 min' AS deadline
  FROM jobq.jobs WHERE id = :o;
SELECT jobq.release(id, token) FROM jobq.reserve('{default}');
SELECT jobq.fail(id, token, '"try again"') FROM jobq.reserve('{default}');
SELECT attempts, exceptions FROM jobq.jobs WHERE id = :o;
SELECT jobq.release(id, token, '2 hours') FROM jobq.reserve('{default}');
SELECT attempts, sqlstate, regexp_replace(exception, 'job \d+', 'job N') AS exception
  FROM jobq.failed_jobs WHERE job_id = :o;
SELECT jobq.dispatch('ocr', '{"n": 5}') AS o \gset
UPDATE jobq.jobs SET retry_until = now() - interval '1 s' WHERE id = :o;
SELECT count(*) AS reserved FROM jobq.reserve('{default}');
SELECT attempts, sqlstate, exception LIKE '%passed its retry_until%' AS why
  FROM jobq.failed_jobs WHERE job_id = :o;
SELECT count(*) AS left FROM jobq.jobs;

-- a chain link whose name is registered as an external job is run by a
-- consumer: its completion queues the next link, its failure stops the chain
CREATE TABLE app.chain_log (step text);
CREATE FUNCTION app.ext_step(p jsonb) RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION app.after_ext(p jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.chain_log VALUES (p->>'step') $$;
SELECT jobq.register('app.ext_step', tries => 1, external => true);
SELECT jobq.dispatch_chain('[{"job": "app.ext_step", "payload": {"step": "1"}},
                             {"job": "app.after_ext", "payload": {"step": "2"}}]') IS NOT NULL AS ok;
SELECT job, external, jsonb_array_length(chain->'links') AS links_left FROM jobq.jobs;
SELECT jobq.complete(id, token) FROM jobq.reserve('{default}');
SELECT job, external, payload, chain_id IS NOT NULL AS link FROM jobq.jobs;
CALL jobq.work(stop_when_empty => true);
SELECT step FROM app.chain_log;
SELECT jobq.dispatch_chain('[{"job": "app.ext_step", "payload": {"step": "3"}},
                             {"job": "app.after_ext", "payload": {"step": "4"}}]') IS NOT NULL AS ok;
SELECT jobq.fail(id, token, '"no"') FROM jobq.reserve('{default}');
SELECT count(*) AS queued FROM jobq.jobs;
SELECT payload, chain_links_left FROM jobq.failed_jobs WHERE job = 'app.ext_step';

DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
