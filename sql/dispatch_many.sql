-- jobq.dispatch_many(): one job per payload in one statement, ids in
-- payload order, the checks and options of jobq.dispatch, the handler's
-- registered defaults, all or nothing.
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE TABLE app.ran (n int, who text);
CREATE FUNCTION app.note(p jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO app.ran VALUES ((p->>'n')::int, current_user) $$;
CREATE FUNCTION app.gate(ctx jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT '{"action": "run"}'::jsonb $$;
CREATE ROLE jobq_test_carol;
GRANT USAGE ON SCHEMA app TO jobq_test_carol;
GRANT INSERT ON app.ran TO jobq_test_carol;
REVOKE EXECUTE ON FUNCTION app.note(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.note(jsonb) TO jobq_test_carol;

-- ---- ids in payload order; rows with the given options and owner ----
SET ROLE jobq_test_carol;
CREATE TEMP TABLE got AS
SELECT id, ord
  FROM jobq.dispatch_many('app.note',
                          ARRAY['{"n": 3}', '{"n": 1}', '{"n": 2}']::jsonb[],
                          queue => 'bulk', tries => 5, timeout => '1 min',
                          backoff => '7 s') WITH ORDINALITY AS d(id, ord);
RESET ROLE;
-- ids increase with the payload order
SELECT count(*) AS n,
       bool_and(id > COALESCE(prev, 0)) AS in_order
  FROM (SELECT id, lag(id) OVER (ORDER BY ord) AS prev FROM got) s;
SELECT g.ord, j.job, j.payload, j.queue, j.owner, j.tries, j.timeout, j.backoff,
       j.available_at <= now() + interval '1 s' AS available_now
  FROM got g JOIN jobq.jobs j ON j.id = g.id ORDER BY g.ord;
-- they run, as the dispatching role
CALL jobq.work(queues => '{bulk}', stop_when_empty => true);
SELECT n, who FROM app.ran ORDER BY n;
SELECT count(*) AS left FROM jobq.jobs;
DELETE FROM app.ran;
DROP TABLE got;

-- ---- registered defaults apply; a given option wins ----
SELECT jobq.register('app.note', queue => 'reg', tries => 2, timeout => '30 s',
                     backoff_schedule => '{1 s, 2 s}', retry_for => '1 hour',
                     max_exceptions => 3, middleware => '[{"call": "app.gate"}]');
SELECT count(*) FROM jobq.dispatch_many('app.note', '{"{\"n\": 10}", "{\"n\": 11}"}',
                                        delay => '1 hour');
SELECT payload, queue, tries, timeout, backoff, backoff_schedule, backoff_exponential,
       max_exceptions, middleware, retry_until - created_at AS retry_window,
       available_at > now() + interval '59 min' AS delayed
  FROM jobq.jobs ORDER BY id;
-- a given backoff replaces the registered schedule, a given queue the registered one
SELECT count(*) FROM jobq.dispatch_many('app.note', ARRAY['{"n": 12}']::jsonb[],
                                        queue => 'mine', backoff => '3 s');
SELECT payload, queue, backoff, backoff_schedule FROM jobq.jobs
 WHERE payload = '{"n": 12}';
UPDATE jobq.jobs SET available_at = now();
CALL jobq.work(queues => '{reg,mine}', stop_when_empty => true);
SELECT n FROM app.ran ORDER BY n;
SELECT jobq.unregister('app.note');

-- ---- an empty array returns no rows and writes nothing ----
SELECT count(*) FROM jobq.dispatch_many('app.note', '{}');
SELECT count(*) AS jobs FROM jobq.jobs;

-- ---- errors: nothing is written ----
SELECT * FROM jobq.dispatch_many('app.note', ARRAY['{"n": 1}', NULL, '{"n": 3}']::jsonb[]);
SELECT * FROM jobq.dispatch_many('app.note', NULL);
SELECT * FROM jobq.dispatch_many(NULL, ARRAY['{}']::jsonb[]);
SELECT * FROM jobq.dispatch_many('app.nope', ARRAY['{}']::jsonb[]);
SELECT * FROM jobq.dispatch_many('app.note', ARRAY['{}']::jsonb[], queue => 'a,b');
SELECT * FROM jobq.dispatch_many('app.note', ARRAY['{}']::jsonb[], tries => -1);
SELECT * FROM jobq.dispatch_many('app.note', ARRAY['{}']::jsonb[], timeout => '8 days');
SELECT * FROM jobq.dispatch_many('app.note', ARRAY['{}']::jsonb[], backoff => '-1 s');
SELECT * FROM jobq.dispatch_many('app.note', ARRAY['{}']::jsonb[], delay => '1 min',
                                 available_at => now());
SELECT * FROM jobq.dispatch_many('app.note', ARRAY[['{}', '{}']]::jsonb[]);
-- no EXECUTE on the handler
CREATE ROLE jobq_test_dave;
GRANT USAGE ON SCHEMA app TO jobq_test_dave;
SET ROLE jobq_test_dave;
SELECT * FROM jobq.dispatch_many('app.note', ARRAY['{}']::jsonb[]);
RESET ROLE;
SELECT count(*) AS jobs FROM jobq.jobs;

-- ---- a rolled-back dispatch leaves nothing ----
BEGIN;
SELECT count(*) FROM jobq.dispatch_many('app.note', ARRAY['{"n": 1}', '{"n": 2}']::jsonb[]);
ROLLBACK;
SELECT count(*) AS jobs FROM jobq.jobs;

-- ---- external jobs: registered queue and options, no handler needed ----
SELECT jobq.register('resize', queue => 'images', tries => 4, external => true);
SELECT count(*) FROM jobq.dispatch_many('resize', ARRAY['{"f": "a"}', '{"f": "b"}']::jsonb[]);
SELECT job, payload, queue, tries, external FROM jobq.jobs ORDER BY id;
DELETE FROM jobq.jobs;

DROP EXTENSION jobq;
DROP SCHEMA app CASCADE;
DROP ROLE jobq_test_carol;
DROP ROLE jobq_test_dave;
