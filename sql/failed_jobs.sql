-- Managing failed jobs: jobq.failed_jobs, retry, retry_all, forget, flush,
-- automatic retention; and who may see and manage which jobs (row-level
-- security, jobq_admin).
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE TABLE app.done (n int, who text);
-- fails while app.broken holds a row, else records its run
CREATE TABLE app.broken (x int);
INSERT INTO app.broken VALUES (1);
CREATE FUNCTION app.flaky(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM app.broken) THEN
        RAISE EXCEPTION 'flaky %', payload->>'n' USING DETAIL = 'it is broken',
            HINT = 'fix it', ERRCODE = 'P0001';
    END IF;
    INSERT INTO app.done VALUES ((payload->>'n')::int, current_user);
END $$;
GRANT USAGE ON SCHEMA app TO PUBLIC;
GRANT SELECT, INSERT ON app.done TO PUBLIC;
GRANT SELECT ON app.broken TO PUBLIC;

-- three jobs fail for good: two on 'mail' (with options), one on 'default'
SELECT jobq.dispatch('app.flaky', '{"n": 1}', queue => 'mail', tries => 2,
                     timeout => '30 s', backoff => '0') AS j1 \gset
SELECT jobq.dispatch('app.flaky', '{"n": 2}', queue => 'mail', tries => 1) AS j2 \gset
SELECT jobq.dispatch('app.flaky', '{"n": 3}') AS j3 \gset
CALL jobq.work(queues => '{mail,default}', stop_when_empty => true);

-- the DBA's view: the error in parts, the owner, both times
SELECT id, uuid IS NOT NULL AS has_uuid, job_id, queue, job, payload, attempts,
       exception, sqlstate, detail, hint, context, owner,
       failed_at >= dispatched_at AS times_ordered
  FROM jobq.failed_jobs ORDER BY id;
SELECT count(DISTINCT uuid) AS distinct_uuids FROM jobq.failed_jobs;

-- the newest failures of one queue come from an index
INSERT INTO jobq.failed (job_id, queue, job, payload, owner, attempts, dispatched_at,
                         failed_at, exception, sqlstate, error)
SELECT 1000 + g, 'bulk' || (g % 100), 'app.flaky', '{}', 'postgres', 1,
       now() - interval '1 day', now() - interval '1 day' + g * interval '1 s',
       'old', 'P0001', '{}'
  FROM generate_series(1, 10000) g;
ANALYZE jobq.failed;
EXPLAIN (COSTS OFF)
SELECT id, job, exception, failed_at FROM jobq.failed_jobs
 WHERE queue = 'bulk7' ORDER BY failed_at DESC LIMIT 20;
DELETE FROM jobq.failed WHERE queue LIKE 'bulk%';

-- retry: the same queue, handler, payload, owner and options, attempts
-- reset, available now; the failed record is gone in the same transaction
DELETE FROM app.broken;
SELECT id AS f1 FROM jobq.failed WHERE job_id = :j1 \gset
SELECT failed_id = :f1 AS same_failed, job_id > :j3 AS new_job FROM jobq.retry(:f1);
SELECT queue, job, payload, owner, attempts, tries, timeout, backoff, reserved_by,
       available_at <= clock_timestamp() AS available_now
  FROM jobq.jobs;
SELECT count(*) AS still_failed FROM jobq.failed_jobs WHERE job_id = :j1;
CALL jobq.work(queues => '{mail,default}', stop_when_empty => true);
SELECT n, who FROM app.done ORDER BY n;

-- retrying what is not (or no longer) failed is an error, and writes nothing
SELECT * FROM jobq.retry(:f1);
SELECT * FROM jobq.retry(NULL::bigint);

-- a retry that rolls back leaves the failed job where it was
BEGIN;
SELECT count(*) AS retried FROM jobq.retry_all();
ROLLBACK;
SELECT count(*) AS failed, (SELECT count(*) FROM jobq.jobs) AS queued FROM jobq.failed_jobs;

-- retry(ids): those that exist are retried, the others left out
SELECT id AS f2 FROM jobq.failed WHERE job_id = :j2 \gset
SELECT failed_id = :f2 AS retried_f2 FROM jobq.retry(ARRAY[:f2, 999999]);
-- retry_all(queue) takes only that queue's failures
SELECT count(*) AS retried_default FROM jobq.retry_all('default');
SELECT count(*) AS retried_nothing FROM jobq.retry_all('mail');
SELECT queue, payload FROM jobq.jobs ORDER BY id;
CALL jobq.work(queues => '{mail,default}', stop_when_empty => true);
SELECT n FROM app.done ORDER BY n;
SELECT count(*) AS failed_left FROM jobq.failed_jobs;

-- forget and flush
INSERT INTO app.broken VALUES (1);
SELECT count(jobq.dispatch('app.flaky', jsonb_build_object('n', g))) FROM generate_series(10, 14) g;
CALL jobq.work(stop_when_empty => true);
SELECT min(id) AS first_failed FROM jobq.failed \gset
SELECT jobq.forget(:first_failed) AS forgotten, jobq.forget(:first_failed) AS again;
SELECT jobq.forget(NULL) AS forget_null;
UPDATE jobq.failed SET failed_at = now() - interval '2 days' WHERE payload->>'n' IN ('11', '12');
UPDATE jobq.failed SET failed_at = now() - interval '1 day' WHERE payload->>'n' = '13';
SELECT jobq.flush('-1 s');
-- strictly older than: the one that failed exactly 1 day ago stays
SELECT jobq.flush('1 day') AS flushed;
SELECT payload->>'n' AS n FROM jobq.failed_jobs ORDER BY 1;
SELECT jobq.flush() AS flushed_all, jobq.flush() AS nothing_left;

-- jobq.failed_retention: the workers delete expired failed jobs
SELECT count(jobq.dispatch('app.flaky', jsonb_build_object('n', g))) FROM generate_series(20, 23) g;
CALL jobq.work(stop_when_empty => true);
UPDATE jobq.failed SET failed_at = now() - interval '3 hours' WHERE payload->>'n' IN ('20', '21');
SHOW jobq.failed_retention;
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS kept_while_off FROM jobq.failed;
SET jobq.failed_retention = '2h';
CALL jobq.work(stop_when_empty => true);
SELECT payload->>'n' AS n FROM jobq.failed ORDER BY 1;
RESET jobq.failed_retention;
SELECT jobq.flush() >= 0 AS flushed;

-- Who sees and manages what.  alice and bob see only their own jobs and
-- failed jobs; carol (a member of jobq_admin) sees and manages all.
CREATE ROLE jobq_test_alice;
CREATE ROLE jobq_test_bob;
CREATE ROLE jobq_test_carol IN ROLE jobq_admin;
SET ROLE jobq_test_alice;
SELECT jobq.dispatch('app.flaky', '{"n": 100}') AS a1 \gset
SELECT jobq.dispatch('app.flaky', '{"n": 101}', queue => 'later', delay => '1 hour') AS a2 \gset
SET ROLE jobq_test_bob;
SELECT jobq.dispatch('app.flaky', '{"n": 200}') AS b1 \gset
SELECT jobq.dispatch('app.flaky', '{"n": 201}', queue => 'later', delay => '1 hour') AS b2 \gset
RESET ROLE;
CALL jobq.work(stop_when_empty => true);
SET ROLE jobq_test_alice;
SELECT id = :a2 AS own_job FROM jobq.jobs;
SELECT job_id = :a1 AS own_failure, owner FROM jobq.failed_jobs;
SELECT owner FROM jobq.failed;
-- nobody but an admin writes the tables directly
UPDATE jobq.jobs SET attempts = 0;
DELETE FROM jobq.jobs;
INSERT INTO jobq.jobs (queue, job, payload, owner, available_at, created_at)
     VALUES ('default', 'app.flaky', '{}', 'jobq_test_alice', now(), now());
DELETE FROM jobq.failed;
-- bob's failed job is invisible to alice: she cannot retry or forget it
SELECT count(*) AS sees_bobs FROM jobq.failed_jobs WHERE job_id = :b1;
RESET ROLE;
SELECT id AS bf FROM jobq.failed WHERE job_id = :b1 \gset
SET ROLE jobq_test_alice;
SELECT * FROM jobq.retry(:bf);
SELECT count(*) AS retried FROM jobq.retry(ARRAY[:bf]);
SELECT jobq.forget(:bf) AS forgot_bobs;
-- retry_all and flush act on her own failures only
SELECT count(*) AS retried_own FROM jobq.retry_all();
SELECT count(*) AS sees_jobs FROM jobq.jobs;
SELECT jobq.flush() AS flushed_own;
RESET ROLE;
SELECT owner, payload FROM jobq.failed_jobs;
SELECT owner, payload FROM jobq.jobs ORDER BY id;
-- carol, an admin, sees everything and may retry bob's job (it stays his)
SET ROLE jobq_test_carol;
SELECT count(*) AS sees_all_jobs FROM jobq.jobs;
SELECT count(*) AS sees_all_failed FROM jobq.failed_jobs;
SELECT count(*) AS retried_bobs FROM jobq.retry(:bf);
SELECT owner, payload FROM jobq.jobs ORDER BY id;
-- and may write the tables directly
UPDATE jobq.jobs SET available_at = now() WHERE queue = 'later';
DELETE FROM jobq.jobs WHERE payload->>'n' = '201';
RESET ROLE;
DELETE FROM app.broken;
CALL jobq.work(queues => '{default,later}', stop_when_empty => true);
SELECT n, who FROM app.done WHERE n >= 100 ORDER BY n;

-- jobq_admin outlives the extension; the extension can be created again
DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'jobq_admin';
CREATE EXTENSION jobq;
SELECT count(*) AS policies FROM pg_policies WHERE schemaname = 'jobq';
DROP EXTENSION jobq;
DROP ROLE jobq_test_alice;
DROP ROLE jobq_test_bob;
DROP ROLE jobq_test_carol;
