-- Operations: jobq.restart(), the monitoring views and the definition of
-- worker pools.  (Their effect on running workers is tested in
-- t/003_operations.pl: this instance has no background workers.)
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE TABLE app.ran (n int);
CREATE FUNCTION app.record(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.ran VALUES ((payload->>'n')::int) $$;
CREATE FUNCTION app.boom(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'boom';
END $$;

-- restart generations
SELECT jobq.restart_generation();
SELECT jobq.restart();
SELECT jobq.restart();
SELECT jobq.restart_generation();
SELECT generation, requested_at IS NOT NULL AS requested FROM jobq.restart_state;
BEGIN;
SELECT jobq.restart();
ROLLBACK;
SELECT jobq.restart_generation() AS after_rollback;

-- no background worker runs here, and no session is inside jobq.work()
SELECT count(*) AS workers FROM jobq.workers;

-- jobq.queues: waiting, delayed, failed, and what ran in the last minute
-- (queues of their own: the counters outlive DROP EXTENSION of other tests)
SELECT count(jobq.dispatch('app.record', jsonb_build_object('n', g), queue => 'ops_main'))
  FROM generate_series(1, 3) g;
SELECT count(jobq.dispatch('app.record', jsonb_build_object('n', g), queue => 'ops_main', delay => '1 hour'))
  FROM generate_series(1, 2) g;
SELECT jobq.dispatch('app.record', '{"n": 9}', queue => 'ops_mail') > 0 AS ok;
SELECT jobq.dispatch('app.boom', queue => 'ops_mail', tries => 1) > 0 AS ok;
SELECT queue, ready, delayed, reserved, failed, oldest_ready_age >= '0' AS has_age,
       done_last_minute, failed_last_minute
  FROM jobq.queues WHERE queue LIKE 'ops%' ORDER BY queue;
CALL jobq.work(queues => '{ops_main,ops_mail}', stop_when_empty => true);
SELECT queue, ready, delayed, reserved, failed, oldest_ready_age,
       done_last_minute, failed_last_minute
  FROM jobq.queues WHERE queue LIKE 'ops%' ORDER BY queue;

-- pools
SELECT jobq.create_pool('web', '{high,default}', processes => 2, timeout => '30 s');
SELECT jobq.create_pool('batch', '{"low priority"}', max_jobs => 1000, max_time => '1 hour',
                        max_memory => 256);
SELECT name, queues, processes, max_sleep, timeout, tries, backoff, max_jobs, max_time, max_memory
  FROM jobq.pools ORDER BY name;
-- bad definitions: nothing written
\set VERBOSITY terse
SELECT jobq.create_pool('web');
SELECT jobq.create_pool('x', '{}');
SELECT jobq.create_pool('x', '{a,b,a}');
SELECT jobq.create_pool('x', '{"a,b"}');
SELECT jobq.create_pool('x', '{NULL}');
SELECT jobq.create_pool('x', processes => -1);
SELECT jobq.create_pool('x', max_sleep => '1 ms');
SELECT jobq.create_pool('x', tries => -1);
SELECT jobq.create_pool('x', max_jobs => 0);
SELECT jobq.create_pool(NULL);
SELECT jobq.create_pool('');
SELECT jobq.alter_pool('x', processes => 1);
SELECT jobq.alter_pool('web', processes => 1001);
\set VERBOSITY default
SELECT count(*) AS pools FROM jobq.pools;
-- changes: NULL keeps a setting, reset clears the optional ones first
SELECT jobq.alter_pool('web', processes => 3, max_jobs => 500);
SELECT name, queues, processes, timeout, max_jobs FROM jobq.pools WHERE name = 'web';
SELECT jobq.alter_pool('web', reset => true, tries => 5);
SELECT name, queues, processes, timeout, tries, max_jobs FROM jobq.pools WHERE name = 'web';
SELECT jobq.drop_pool('web');
SELECT jobq.drop_pool('web');
SELECT jobq.drop_pool('web', if_exists => true);
SELECT name FROM jobq.pools;

-- only superusers manage pools, restart workers and see every queue
CREATE ROLE jobq_test_ops;
SET ROLE jobq_test_ops;
SELECT jobq.restart();
SELECT jobq.create_pool('mine');
SELECT * FROM jobq.queues;
SELECT count(*) AS workers FROM jobq.workers;
RESET ROLE;

-- clean up
DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
DROP ROLE jobq_test_ops;
