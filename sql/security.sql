-- A job runs as the role that dispatched it, in a security-restricted
-- context: it cannot climb back to the worker's role.
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE TABLE app.private (secret text);
INSERT INTO app.private VALUES ('superuser only');
CREATE TABLE app.results (what text, result text);
CREATE ROLE jobq_test_erin;
GRANT USAGE ON SCHEMA app TO jobq_test_erin;
GRANT INSERT ON app.results TO jobq_test_erin;

CREATE FUNCTION app.try(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        EXECUTE payload->>'sql';
        INSERT INTO app.results VALUES (payload->>'what', 'allowed as ' || current_user);
    EXCEPTION WHEN OTHERS THEN
        INSERT INTO app.results VALUES (payload->>'what', SQLSTATE || ': ' || SQLERRM);
    END;
END $$;

-- a failed job of the superuser (failed id 1), and one of its jobs waiting
CREATE FUNCTION app.boom(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT 1/0 $$;
SELECT jobq.dispatch('app.boom') > 0 AS ok;
CALL jobq.work(stop_when_empty => true);
SELECT jobq.dispatch('app.boom', queue => 'parked') > 0 AS ok;
SET ROLE jobq_test_erin;
SELECT jobq.dispatch('app.try', '{"what": "read private", "sql": "SELECT * FROM app.private"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "set role", "sql": "SET ROLE postgres"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "reset role", "sql": "RESET ROLE"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "set_config role", "sql": "SELECT set_config(''role'', ''postgres'', false)"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "session authorization", "sql": "SET SESSION AUTHORIZATION DEFAULT"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "temp table", "sql": "CREATE TEMP TABLE t (x int)"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "write jobs", "sql": "DELETE FROM jobq.jobs"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "set local role", "sql": "SET LOCAL ROLE postgres"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "set_config session_authorization", "sql": "SELECT set_config(''session_authorization'', session_user, true)"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "reset session authorization", "sql": "RESET SESSION AUTHORIZATION"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "grant jobq_admin", "sql": "GRANT jobq_admin TO jobq_test_erin"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "alter role", "sql": "ALTER ROLE jobq_test_erin SUPERUSER"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "write failed", "sql": "DELETE FROM jobq.failed"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "read others jobs", "sql": "DO $d$ BEGIN IF (SELECT count(*) FROM jobq.jobs WHERE owner <> current_user::regrole) > 0 THEN RAISE EXCEPTION ''sees others''; END IF; END $d$"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "retry others failed", "sql": "SELECT jobq.retry(1)"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "flush others failed", "sql": "DO $d$ BEGIN IF jobq.flush() > 0 THEN RAISE EXCEPTION ''flushed others''; END IF; END $d$"}') > 0 AS ok;
SELECT jobq.dispatch('app.try', '{"what": "dispatch", "sql": "SELECT jobq.dispatch(''app.try'', ''{\"what\": \"nested\", \"sql\": \"SELECT 1\"}'')"}') > 0 AS ok;
RESET ROLE;

CALL jobq.work(stop_when_empty => true);
SELECT what, result FROM app.results ORDER BY what;
-- the nested job was dispatched by the job, so it belongs to the same role;
-- the superuser's failed job is still there
SELECT job, owner FROM jobq.failed_jobs;

-- a role that lost EXECUTE after dispatching: the job fails, clearly
CREATE FUNCTION app.guarded(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SET ROLE jobq_test_erin;
SELECT jobq.dispatch('app.guarded') > 0 AS ok;
RESET ROLE;
REVOKE EXECUTE ON FUNCTION app.guarded(jsonb) FROM PUBLIC;
CALL jobq.work(stop_when_empty => true);
SELECT job, owner, sqlstate, exception, detail FROM jobq.failed_jobs WHERE job = 'app.guarded';

-- clean up
DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
DROP ROLE jobq_test_erin;
