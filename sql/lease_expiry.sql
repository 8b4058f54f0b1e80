-- An external job's lease that ends without a report is a failed attempt
-- (JQ703) under the one retry rule: the job comes back after its backoff,
-- or moves to the failed store when no attempt is left.  Any consumer of
-- the queue and the workers' periodic recovery notice it.
CREATE EXTENSION jobq;
CREATE SCHEMA app;
\set SHOW_CONTEXT never
CREATE FUNCTION app.sqlstate_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
CREATE TABLE app.failures (n int, sqlstate text, message text, who text);
GRANT INSERT ON app.failures TO PUBLIC;
CREATE FUNCTION app.on_fail(payload jsonb, error jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.failures
    VALUES ((payload->>'n')::int, error->>'sqlstate', error->>'message', current_user) $$;
SELECT jobq.register('scan', tries => 2, backoff => '1 hour', on_failure => 'app.on_fail',
                     external => true);

-- the lease ends: the next reservation does not hand the job out before
-- its backoff
SELECT jobq.dispatch('scan', '{"n": 1}') AS s \gset
SELECT id, token FROM jobq.reserve('{default}', lease => '1 ms') \gset a_
SELECT pg_sleep(0.05);
SELECT count(*) AS reserved FROM jobq.reserve('{default}');
SELECT attempts, exceptions, lease_token IS NULL AS free,
       available_at > now() + interval '59 min' AS after_backoff,
       last_error->>'sqlstate' AS sqlstate,
       last_error->>'message' LIKE 'the lease of attempt 1 of job % expired' AS why
  FROM jobq.jobs WHERE id = :s;
-- the old holder's reports are rejected and change nothing
SELECT app.sqlstate_of(format('SELECT jobq.fail(%s, %s)', :a_id, :a_token)) AS late_fail,
       app.sqlstate_of(format('SELECT jobq.extend(%s, %s)', :a_id, :a_token)) AS late_extend,
       app.sqlstate_of(format('SELECT jobq.release(%s, %s)', :a_id, :a_token)) AS late_release;
SELECT jobq.complete(:a_id, :a_token);
SELECT attempts, exceptions FROM jobq.jobs WHERE id = :s;

-- after the backoff (brought forward here) it is leased again: attempt 2,
-- its last; that lease ends too: the job fails for good with 2 attempts
UPDATE jobq.jobs SET available_at = now() WHERE id = :s;
SELECT id = :s AS same, attempt, tries FROM jobq.reserve('{default}', lease => '1 ms');
SELECT pg_sleep(0.05);
SELECT count(*) AS reserved FROM jobq.reserve('{default}');
SELECT count(*) AS queued FROM jobq.jobs WHERE id = :s;
SELECT attempts, sqlstate, exception LIKE 'the lease of attempt 2 of job % expired' AS why
  FROM jobq.failed_jobs WHERE job_id = :s;
SELECT n, sqlstate FROM app.failures;

-- a consumer that may not reserve the job (another role's) still handles
-- the expired lease of its queue; the failure handler runs as the owner
CREATE ROLE jobq_test_lease_other;
SELECT jobq.dispatch('scan', '{"n": 2}', tries => 1) AS s \gset
SELECT count(*) AS reserved FROM jobq.reserve('{default}', lease => '1 ms');
SELECT pg_sleep(0.05);
SET ROLE jobq_test_lease_other;
SELECT count(*) AS reserved FROM jobq.reserve('{default}');
RESET ROLE;
SELECT count(*) AS queued FROM jobq.jobs WHERE id = :s;
SELECT attempts, sqlstate FROM jobq.failed_jobs WHERE job_id = :s;
SELECT n, sqlstate, who = current_user AS as_owner FROM app.failures WHERE n = 2;
DROP ROLE jobq_test_lease_other;

-- a reservation of another queue leaves the lease alone; the workers'
-- periodic recovery (here CALL jobq.work) handles it
SELECT jobq.dispatch('scan', '{"n": 3}') AS s \gset
SELECT count(*) AS reserved FROM jobq.reserve('{default}', lease => '1 ms');
SELECT pg_sleep(0.05);
SELECT count(*) AS reserved FROM jobq.reserve('{other}');
SELECT attempts, exceptions, lease_token IS NOT NULL AS leased FROM jobq.jobs WHERE id = :s;
CALL jobq.work(stop_when_empty => true);
SELECT attempts, exceptions, lease_token IS NULL AS free,
       available_at > now() + interval '59 min' AS after_backoff,
       last_error->>'sqlstate' AS sqlstate
  FROM jobq.jobs WHERE id = :s;

-- with a backoff of 0 the same reservation that handles the expired lease
-- hands the job out again
SELECT jobq.dispatch('scan', '{"n": 4}', backoff => '0') AS s \gset
SELECT count(*) AS reserved FROM jobq.reserve('{default}', lease => '1 ms');
SELECT pg_sleep(0.05);
SELECT id = :s AS same, attempt FROM jobq.reserve('{default}');

-- a job past its retry_until when it is reserved fails without being
-- handed out, its attempt counted as the workers count it
SELECT jobq.dispatch('scan', '{"n": 5}', retry_until => now() + interval '50 ms') AS s \gset
SELECT pg_sleep(0.1);
SELECT count(*) AS reserved FROM jobq.reserve('{default}');
SELECT attempts, sqlstate, exception LIKE 'job % passed its retry_until (%) before attempt 1' AS why
  FROM jobq.failed_jobs WHERE job_id = :s;

-- looking for ended leases reads only the leases that ended, not every job
-- leased (it is done at every jobq.reserve)
SELECT count(*) FROM jobq.dispatch_many('scan',
    array_fill('{}'::jsonb, ARRAY[20000]), queue => 'many');
SELECT count(*) FROM (SELECT jobq.reserve('{many}', lease => '1 hour', max => 1000)
                        FROM generate_series(1, 20)) r;
ANALYZE jobq.jobs;
BEGIN;
SELECT count(*) AS reserved FROM jobq.reserve('{many}');
SELECT seq_tup_read + idx_tup_fetch < 100 AS few_rows_read
  FROM pg_stat_xact_user_tables WHERE relid = 'jobq.jobs'::regclass;
ROLLBACK;
DELETE FROM jobq.jobs WHERE queue = 'many';

DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
