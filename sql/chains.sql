-- Job chains: dispatch_chain, advancing in the completing transaction,
-- stopping on failure, on_failure, retry_chain.
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE TABLE app.ran (seq serial, link text, who text);
CREATE SEQUENCE app.calls;
-- a link records itself, or fails while its failure budget is above 0
CREATE TABLE app.fail_budget (link text PRIMARY KEY, left_ int);
CREATE FUNCTION app.link(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    budget int;
BEGIN
    PERFORM nextval('app.calls');
    SELECT left_ INTO budget FROM app.fail_budget WHERE link = p->>'name';
    IF budget > 0 THEN
        RAISE EXCEPTION 'link % fails (% left)', p->>'name', budget;
    END IF;
    INSERT INTO app.ran (link, who) VALUES (p->>'name', current_user);
END $$;
CREATE TABLE app.chain_failures (payload jsonb, error jsonb, who text);
CREATE FUNCTION app.on_chain_failure(payload jsonb, error jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO app.chain_failures VALUES (payload, error, current_user) $$;
-- burns one unit of a link's failure budget, outside the job's rollback
CREATE FUNCTION app.spend(name text) RETURNS void LANGUAGE sql AS $$
    UPDATE app.fail_budget SET left_ = left_ - 1 WHERE link = name $$;

-- A -> B -> C, all succeed, in order, one job at a time
SELECT job_id > 0 AS has_job, chain_id > 0 AS has_chain
  FROM jobq.dispatch_chain('[{"job": "app.link", "payload": {"name": "A"}},
                             {"job": "app.link", "payload": {"name": "B"}},
                             {"job": "app.link", "payload": {"name": "C"}}]');
-- only the first link is a job; it carries the rest of the chain
SELECT job, payload->>'name' AS name, queue, chain_id IS NOT NULL AS in_chain,
       jsonb_array_length(chain->'links') AS links_after,
       chain->'links'->0->>'job' AS next_job
  FROM jobq.jobs;
CALL jobq.work(max_jobs => 1);
SELECT link FROM app.ran ORDER BY seq;
SELECT payload->>'name' AS name, jsonb_array_length(chain->'links') AS links_after,
       attempts FROM jobq.jobs;
CALL jobq.work(stop_when_empty => true);
SELECT link FROM app.ran ORDER BY seq;
SELECT count(*) AS left_over FROM jobq.jobs;

-- A fails once, then succeeds: B and C each run once, after A
TRUNCATE app.ran;
INSERT INTO app.fail_budget VALUES ('A1', 1);
SELECT chain_id AS chain FROM jobq.dispatch_chain(
    '[{"job": "app.link", "payload": {"name": "A1"}, "tries": 3},
      {"job": "app.link", "payload": {"name": "B1"}},
      {"job": "app.link", "payload": {"name": "C1"}}]') \gset
CALL jobq.work(max_jobs => 1);
-- A's failed attempt is retried; the chain does not advance
SELECT payload->>'name' AS name, attempts, last_error->>'message' AS last_error
  FROM jobq.jobs;
SELECT app.spend('A1');
CALL jobq.work(stop_when_empty => true);
SELECT link, count(*) AS runs, min(seq) AS first FROM app.ran GROUP BY link ORDER BY first;

-- each link has its own settings and starts at attempt 1
TRUNCATE app.ran;
SELECT jobq.dispatch_chain('[{"job": "app.link", "payload": {"name": "X"}, "tries": 7, "timeout": "5 min"},
                             {"job": "app.link", "payload": {"name": "Y"}, "backoff": "3 s"},
                             {"job": "app.link", "payload": {"name": "Z"}, "queue": "other"}]',
                           queue => 'chains') IS NOT NULL AS ok;
SELECT queue, tries, timeout, backoff, attempts FROM jobq.jobs;
CALL jobq.work(queues => '{chains}', max_jobs => 1);
SELECT queue, tries, timeout, backoff, attempts FROM jobq.jobs;
CALL jobq.work(queues => '{chains}', max_jobs => 1);
SELECT queue, tries, timeout, backoff, attempts FROM jobq.jobs;
CALL jobq.work(queues => '{other}', stop_when_empty => true);
SELECT link FROM app.ran ORDER BY seq;

-- a link's delay counts from when it is dispatched; chain delay is the default
SELECT jobq.dispatch_chain('[{"job": "app.link", "payload": {"name": "D1"}, "delay": "0 s"},
                             {"job": "app.link", "payload": {"name": "D2"}}]',
                           delay => '1 hour') IS NOT NULL AS ok;
SELECT payload->>'name' AS name, available_at < now() + interval '1 min' AS due_soon FROM jobq.jobs;
CALL jobq.work(stop_when_empty => true);
SELECT payload->>'name' AS name, available_at > now() + interval '59 min' AS delayed FROM jobq.jobs;
DELETE FROM jobq.jobs;

-- A fails for good: B and C never run; the failed record tells the chain
-- and how many links were left; on_failure runs once, as the owner
TRUNCATE app.ran;
INSERT INTO app.fail_budget VALUES ('A2', 100);
CREATE ROLE jobq_chain_user NOLOGIN;
GRANT USAGE ON SCHEMA app TO jobq_chain_user;
GRANT INSERT ON app.ran, app.chain_failures TO jobq_chain_user;
GRANT SELECT ON app.fail_budget TO jobq_chain_user;
GRANT USAGE ON SEQUENCE app.calls, app.ran_seq_seq TO jobq_chain_user;
SET ROLE jobq_chain_user;
SELECT chain_id AS chain FROM jobq.dispatch_chain(
    '[{"job": "app.link", "payload": {"name": "A2"}, "tries": 2},
      {"job": "app.link", "payload": {"name": "B2"}},
      {"job": "app.link", "payload": {"name": "C2"}}]',
    on_failure => 'app.on_chain_failure') \gset
RESET ROLE;
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS ran FROM app.ran;
SELECT count(*) AS queued FROM jobq.jobs;
SELECT payload->>'name' AS name, attempts, exception, chain_id = :chain AS same_chain,
       chain_links_left, owner
  FROM jobq.failed_jobs;
SELECT payload->>'name' AS name, error->>'message' AS message,
       (error->>'chain_id')::bigint = :chain AS same_chain,
       error->>'links_left' AS links_left,
       (error->>'failed_id')::bigint = (SELECT id FROM jobq.failed) AS failed_id, who
  FROM app.chain_failures;

-- retry_chain of A's failed record: A, B and C complete
UPDATE app.fail_budget SET left_ = 0 WHERE link = 'A2';
SELECT id AS failed_id FROM jobq.failed \gset
SET ROLE jobq_chain_user;
SELECT jobq.retry_chain(:failed_id) > 0 AS requeued;
RESET ROLE;
SELECT payload->>'name' AS name, attempts, tries, chain_id = :chain AS same_chain,
       jsonb_array_length(chain->'links') AS links_after, owner
  FROM jobq.jobs;
SELECT count(*) AS failed FROM jobq.failed;
CALL jobq.work(stop_when_empty => true);
SELECT link, who FROM app.ran ORDER BY seq;
SELECT count(*) AS failure_handler_runs FROM app.chain_failures;

-- retrying needs the failed job to exist and to be the caller's
SELECT jobq.retry_chain(-1);
INSERT INTO app.fail_budget VALUES ('E', 100);
SELECT jobq.dispatch_chain('[{"job": "app.link", "payload": {"name": "E"}, "tries": 1},
                             {"job": "app.link", "payload": {"name": "F"}}]') IS NOT NULL AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT id AS failed_id FROM jobq.failed WHERE payload->>'name' = 'E' \gset
SET ROLE jobq_chain_user;
SELECT jobq.retry_chain(:failed_id);
RESET ROLE;
-- an on_failure that errors is reported and does not undo the failure
CREATE FUNCTION app.bad_on_failure(payload jsonb, error jsonb) RETURNS void
LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'on_failure broke'; END $$;
SELECT jobq.dispatch_chain('[{"job": "app.link", "payload": {"name": "E"}, "tries": 1},
                             {"job": "app.link", "payload": {"name": "F"}}]',
                           on_failure => 'app.bad_on_failure') IS NOT NULL AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT count(*) AS failed_e FROM jobq.failed WHERE payload->>'name' = 'E';
SELECT count(*) AS ran_f FROM app.ran WHERE link = 'F';

-- bad chains are rejected and nothing is written
SELECT jobq.dispatch_chain(NULL);
SELECT jobq.dispatch_chain('[]');
SELECT jobq.dispatch_chain('{"job": "app.link"}');
SELECT jobq.dispatch_chain('[{"job": "app.link"}, 42]');
SELECT jobq.dispatch_chain('[{"job": "app.link"}, {"payload": {}}]');
SELECT jobq.dispatch_chain('[{"job": "app.link"}, {"job": "app.nope"}]');
SELECT jobq.dispatch_chain('[{"job": "app.link", "tries": -1}]');
SELECT jobq.dispatch_chain('[{"job": "app.link", "delay": "soon"}]');
SELECT jobq.dispatch_chain('[{"job": "app.link", "retries": 3}]');
SELECT jobq.dispatch_chain('[{"job": "app.link", "payload": null}]');
SELECT jobq.dispatch_chain('[{"job": "app.link", "queue": "a,b"}]');
SELECT jobq.dispatch_chain('[{"job": "app.link"}]', on_failure => 'app.link');
SELECT jobq.dispatch_chain('[{"job": "app.link"}]', on_failure => 'app.missing');
SELECT count(*) AS nothing_written FROM jobq.jobs;

-- clean up
DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
DROP ROLE jobq_chain_user;
