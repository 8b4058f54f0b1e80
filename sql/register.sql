-- jobq.register: per-handler defaults, like a Laravel job class's
-- properties.  A dispatch argument wins over them; workers' settings apply
-- when neither gives a value.
CREATE EXTENSION jobq;
CREATE SCHEMA app;
CREATE FUNCTION app.mail(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION app.other(payload jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;

SELECT jobq.register('app.mail', queue => 'mail', tries => 3,
                     timeout => '30 s', backoff => '1 min');
SELECT job, queue, tries, timeout, backoff FROM jobq.handlers;

-- defaults apply to dispatches of that handler only
SELECT jobq.dispatch('app.mail') AS id \gset
SELECT queue, tries, timeout, backoff FROM jobq.jobs WHERE id = :id;
SELECT jobq.dispatch('app.other') AS id \gset
SELECT queue, tries, timeout, backoff FROM jobq.jobs WHERE id = :id;
-- dispatch arguments override, explicit zeros included
SELECT jobq.dispatch('app.mail', queue => 'urgent', tries => 0,
                          timeout => '0', backoff => '0') AS id \gset
SELECT queue, tries, timeout, backoff FROM jobq.jobs WHERE id = :id;

-- registering again replaces every default; the name resolves like dispatch
SET search_path = app;
SELECT jobq.register('mail', tries => 7);
RESET search_path;
SELECT job, queue, tries, timeout, backoff FROM jobq.handlers;
SELECT jobq.dispatch('app.mail') AS id \gset
SELECT queue, tries FROM jobq.jobs WHERE id = :id;

-- defaults of jobs already queued do not change
SELECT count(*) FROM jobq.jobs WHERE job = 'app.mail' AND tries = 3;

-- bad input
SELECT jobq.register(NULL);
SELECT jobq.register('app.nothing');
SELECT jobq.register('app.mail', queue => 'a,b');
SELECT jobq.register('app.mail', tries => -2);
SELECT jobq.register('app.mail', timeout => '-1 s');
SELECT jobq.register('app.mail', backoff => '500 days');

-- only the handler's owner may register it
CREATE ROLE jobq_test_carol;
GRANT USAGE ON SCHEMA app TO jobq_test_carol;
SET ROLE jobq_test_carol;
SELECT jobq.register('app.mail', tries => 100);
SELECT jobq.unregister('app.mail');
RESET ROLE;
ALTER FUNCTION app.other(jsonb) OWNER TO jobq_test_carol;
SET ROLE jobq_test_carol;
SELECT jobq.register('app.other', queue => 'carols');
RESET ROLE;
SELECT job, queue FROM jobq.handlers ORDER BY job;

-- unregister forgets the defaults
SELECT jobq.unregister('app.mail');
SELECT jobq.unregister('app.mail');
SELECT jobq.dispatch('app.mail') AS id \gset
SELECT queue, tries FROM jobq.jobs WHERE id = :id;

-- clean up
DROP SCHEMA app CASCADE;
DROP EXTENSION jobq;
DROP ROLE jobq_test_carol;
