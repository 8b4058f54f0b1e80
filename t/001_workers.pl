# Background workers drain a queue: every job runs exactly once, in-flight
# jobs are never handed out twice however long they run, delays are kept,
# dispatch is transactional, and jobs run as the role that dispatched them.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JobqTest;

my $node = jobq_node('workers', "jobq.workers = 8\n");

$node->safe_psql('postgres', q{
CREATE TABLE runs (n int PRIMARY KEY, pid int, ran_at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION record(p jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO runs (n, pid) VALUES ((p->>'n')::int, pg_backend_pid()) $$;
CREATE SEQUENCE sleeper_starts;
CREATE FUNCTION sleeper(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('sleeper_starts');
    PERFORM pg_sleep((p->>'secs')::float8);
    INSERT INTO runs (n, pid) VALUES ((p->>'n')::int, pg_backend_pid());
END $$;
});

wait_workers($node, 8, 'the launcher starts 8 workers');

# 20,000 jobs, dispatched in 4 transactions, drained by 8 workers
for my $from (1, 5001, 10001, 15001)
{
	my $to = $from + 4999;
	$node->safe_psql('postgres',
		"SELECT count(jobq.dispatch('record', jsonb_build_object('n', g))) FROM generate_series($from, $to) g");
}
wait_for($node, 'SELECT count(*) = 0 FROM jobq.jobs', 'the queue drains');

is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT n), min(n), max(n) FROM runs'),
	'20000|20000|1|20000', 'every job ran exactly once');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed_jobs'),
	'0', 'no job failed (a second run would have hit the primary key)');
cmp_ok($node->safe_psql('postgres', 'SELECT count(DISTINCT pid) FROM runs'),
	'>', 1, 'several workers took part');
ok(!$node->log_contains('deadlock detected'), 'no deadlock');

# a handler running far longer than any internal interval (max_sleep,
# recovery sweeps, batch time) runs once, while other jobs keep flowing
$node->safe_psql('postgres', q{
TRUNCATE runs;
SELECT jobq.dispatch('sleeper', '{"n": 0, "secs": 12}', timeout => '1 min');
});
wait_for($node, q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'jobq job %: public.sleeper'},
	'the long job starts');
$node->safe_psql('postgres',
	"SELECT count(jobq.dispatch('record', jsonb_build_object('n', g))) FROM generate_series(1, 200) g");
wait_for($node, 'SELECT count(*) = 200 FROM runs', 'short jobs run while the long one runs');
is($node->safe_psql('postgres', "SELECT count(*) FROM jobq.jobs WHERE job = 'public.sleeper'"),
	'1', 'the long job is still running');
wait_for($node, 'SELECT count(*) = 0 FROM jobq.jobs', 'the long job ends');
is($node->safe_psql('postgres', 'SELECT count(*) FROM runs WHERE n = 0'), '1',
	'the long job completed once');
is($node->safe_psql('postgres', q{SELECT last_value FROM sleeper_starts}), '1',
	'the long job was started once');

# delayed jobs never start before they are due
$node->safe_psql('postgres', q{
TRUNCATE runs;
CREATE TABLE due (n int, id bigint, available_at timestamptz);
INSERT INTO due (n, id)
SELECT g, jobq.dispatch('record', jsonb_build_object('n', g),
                        delay => interval '1 s' + g * interval '300 ms')
  FROM generate_series(1, 5) g;
UPDATE due SET available_at = j.available_at FROM jobq.jobs j WHERE j.id = due.id;
});
wait_for($node, 'SELECT count(*) = 5 FROM runs', 'delayed jobs run');
is($node->safe_psql('postgres', 'SELECT count(available_at) FROM due'), '5',
	'the due times were read before the jobs ran');
is($node->safe_psql('postgres',
		'SELECT count(*) FROM runs JOIN due USING (n) WHERE runs.ran_at < due.available_at'),
	'0', 'no delayed job started early');

# a dispatch rolled back never runs; a committed one after it does
$node->safe_psql('postgres', q{
TRUNCATE runs;
BEGIN;
SELECT jobq.dispatch('record', '{"n": -1}');
ROLLBACK;
SELECT jobq.dispatch('record', '{"n": -2}');
});
wait_for($node, 'SELECT count(*) = 1 FROM runs WHERE n = -2', 'the committed job runs');
is($node->safe_psql('postgres', 'SELECT count(*) FROM runs WHERE n = -1'), '0',
	'the rolled-back job never ran');

# a job runs as the role that dispatched it, NOLOGIN roles included
$node->safe_psql('postgres', q{
CREATE TABLE whoami (who text, superuser boolean);
CREATE ROLE app_role NOLOGIN;
GRANT INSERT ON whoami TO app_role;
CREATE FUNCTION whoami(p jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO whoami SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user $$;
SET ROLE app_role;
SELECT jobq.dispatch('whoami');
});
wait_for($node, 'SELECT count(*) = 1 FROM whoami', 'the role\'s job runs');
is($node->safe_psql('postgres', 'SELECT who, superuser FROM whoami'), 'app_role|f',
	'the job ran as the dispatching role, not as the worker\'s superuser');

# workers keep running jobs across many catalog changes (each one flushes
# their handler cache; the invalidation callbacks must not pile up)
$node->safe_psql('postgres', q{
TRUNCATE runs;
CREATE PROCEDURE churn(n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        EXECUTE format('CREATE OR REPLACE FUNCTION churned(p jsonb) RETURNS void'
                       ' LANGUAGE sql AS %L',
                       'INSERT INTO runs (n) VALUES (' || i || ')');
        PERFORM jobq.dispatch('churned');
        COMMIT;
        PERFORM pg_sleep(0.01);
        WHILE EXISTS (SELECT FROM jobq.jobs) LOOP
            PERFORM pg_sleep(0.01);
        END LOOP;
    END LOOP;
END $$;
CALL churn(150);
});
is($node->safe_psql('postgres', 'SELECT count(*), sum(n) FROM runs'), '150|11325',
	'150 jobs each run the handler version current at their dispatch');
is($node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT sqlstate || ' ' || exception, '; ') FROM jobq.failed_jobs"),
	'', 'no job failed across catalog churn');

# committed jobs survive a restart and run afterwards
$node->safe_psql('postgres', q{
TRUNCATE runs;
SELECT jobq.dispatch('record', jsonb_build_object('n', g), delay => '3 s')
  FROM generate_series(1, 10) g;
});
$node->restart;
wait_for($node, 'SELECT count(*) = 10 FROM runs', 'jobs queued before a restart run after it');

# the number of workers follows jobq.workers on reload
$node->safe_psql('postgres', "ALTER SYSTEM SET jobq.workers = 3");
$node->reload;
wait_workers($node, 3, 'workers scale down on reload');
$node->safe_psql('postgres', "ALTER SYSTEM SET jobq.workers = 5");
$node->reload;
wait_workers($node, 5, 'workers scale up on reload');

$node->stop;
done_testing();
