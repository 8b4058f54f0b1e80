# Operations: jobq.restart() with busy workers, the jobq.workers view,
# worker pools (strict priority, changes without a server restart,
# recycling, kill -9 of a pool process), and CALL jobq.work() on a server
# where jobq is not preloaded.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JobqTest;
use IPC::Run;

# CALL jobq.work() in a session of its own; returns the harness
sub start_work
{
	my ($node, $out, $err) = @_;
	return IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', 'CALL jobq.work()' ],
		'>', $out, '2>', $err, IPC::Run::timeout(120));
}

my $node = jobq_node('operations', "jobq.workers = 4\n");

# gated: waits (up to five minutes) for a row in go, then records its run
$node->safe_psql('postgres', q{
CREATE TABLE runs (n int PRIMARY KEY, pid int, q text, started bigint);
CREATE TABLE go (ok bool);
CREATE SEQUENCE gated_starts;
CREATE SEQUENCE start_order;
CREATE FUNCTION gated(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('gated_starts');
    FOR i IN 1..3000 LOOP
        EXIT WHEN EXISTS (SELECT FROM go);
        PERFORM pg_sleep(0.1);
    END LOOP;
    INSERT INTO runs (n, pid) VALUES ((p->>'n')::int, pg_backend_pid());
END $$;
CREATE FUNCTION record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO runs VALUES ((p->>'n')::int, pg_backend_pid(), p->>'q', nextval('start_order'));
END $$;
});

wait_workers($node, 4);
wait_for($node, q{SELECT count(*) = 4 FROM jobq.workers
    WHERE database = 'postgres' AND pool = 'default' AND kind = 'background'
      AND queues = 'default' AND state = 'idle' AND job_id IS NULL},
	'jobq.workers shows the 4 idle workers of the default pool');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jobq.workers w
    JOIN pg_stat_activity a USING (pid) WHERE a.backend_type = 'jobq worker'}),
	'4', 'each of them is a live jobq worker');

# ---- jobq.restart() with 4 busy workers ----
# dispatched together: a worker hands the rest of its batch back before it
# starts a slow job, so each gated job lands on its own worker
$node->safe_psql('postgres',
	"SELECT jobq.dispatch('gated', jsonb_build_object('n', g), timeout => '10 min') FROM generate_series(1, 4) g");
wait_for($node, q{SELECT count(*) = 4 FROM jobq.workers WHERE state = 'busy'
    AND job_id IS NOT NULL AND job_started_at IS NOT NULL},
	'the 4 workers are busy, each with its job shown');
# these wait: every worker is busy
$node->safe_psql('postgres',
	"SELECT jobq.dispatch('record', jsonb_build_object('n', g)) FROM generate_series(5, 24) g");
my $old = $node->safe_psql('postgres', q{SELECT string_agg(pid::text, ',') FROM jobq.workers});
is($node->safe_psql('postgres', 'SELECT jobq.restart()'), '1',
	'jobq.restart() returns the new generation');
# the running jobs are not interrupted: the workers are still there
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid IN ($old)"),
	'4', 'busy workers are not interrupted by the restart');
$node->safe_psql('postgres', 'INSERT INTO go VALUES (true)');
wait_for($node, "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid IN ($old)",
	'each worker exits after its current job');
wait_for($node, "SELECT count(*) = 4 FROM jobq.workers WHERE pid NOT IN ($old)",
	'4 replacements start');
wait_for($node, 'SELECT count(*) = 0 FROM jobq.jobs', 'the queue drains');
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT n) FROM runs'), '24|24',
	'every job ran exactly once');
is($node->safe_psql('postgres', 'SELECT last_value FROM gated_starts'), '4',
	'the gated jobs were started once each');
is($node->safe_psql('postgres', "SELECT count(*) FROM runs WHERE n <= 4 AND pid IN ($old)"), '4',
	'the running jobs completed on the old workers');
is($node->safe_psql('postgres', "SELECT count(*) FROM runs WHERE n > 4 AND pid IN ($old)"), '0',
	'jobs waiting at the restart ran on the new workers');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed'), '0', 'no job failed');
ok($node->log_contains('leaves to be replaced: jobq.restart\(\) was called'),
	'the workers logged why they left');

# a session inside CALL jobq.work() returns after jobq.restart()
my ($wout, $werr) = ('', '');
my $work = start_work($node, \$wout, \$werr);
wait_for($node, q{SELECT count(*) = 1 FROM jobq.workers WHERE kind = 'session' AND pool IS NULL},
	'jobq.workers shows a session in CALL jobq.work()');
$node->safe_psql('postgres', 'SELECT jobq.restart()');
ok($work->finish, 'CALL jobq.work() returns after jobq.restart()') or diag($werr);

# a handler replaced after the restart: jobs dispatched afterwards see it
$node->safe_psql('postgres', q{
CREATE OR REPLACE FUNCTION record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO runs VALUES ((p->>'n')::int + 1000, pg_backend_pid(), p->>'q', nextval('start_order'));
END $$;
SELECT jobq.restart();
SELECT jobq.dispatch('record', '{"n": 1}');
});
wait_for($node, 'SELECT count(*) = 1 FROM runs WHERE n = 1001',
	'a job dispatched after the restart ran the new handler');

# jobq.queues counts what ran in the last minute
is($node->safe_psql('postgres', q{SELECT ready, delayed, reserved, failed, done_last_minute >= 25,
    failed_last_minute FROM jobq.queues WHERE queue = 'default'}),
	'0|0|0|0|t|0', 'jobq.queues shows the jobs done in the last minute');

# ---- pools ----
$node->safe_psql('postgres', q{SELECT jobq.create_pool('main', '{high,default}', processes => 0)});
wait_for($node, q{SELECT count(*) = 0 FROM jobq.workers WHERE database = 'postgres'},
	'a pool with no process replaces the default pool, without a server restart');

# strict priority: jobs in both queues, the pool starts one process
$node->safe_psql('postgres', q{
TRUNCATE runs;
SELECT jobq.dispatch('record', jsonb_build_object('n', g, 'q', 'default')) FROM generate_series(1, 30) g;
SELECT jobq.dispatch('record', jsonb_build_object('n', g, 'q', 'high'), queue => 'high') FROM generate_series(31, 60) g;
SELECT jobq.alter_pool('main', processes => 1);
});
wait_for($node, 'SELECT count(*) = 60 FROM runs', 'the pool runs both queues');
is($node->safe_psql('postgres', q{SELECT max(started) FILTER (WHERE q = 'high')
    < min(started) FILTER (WHERE q = 'default') FROM runs}),
	't', 'every high job started before any default job');
is($node->safe_psql('postgres', q{SELECT pool, queues FROM jobq.workers}),
	'main|high,default', 'jobq.workers shows the pool and its queues');

# kill -9 of a pool process: the pool comes back, no ghost in jobq.workers
$node->safe_psql('postgres', q{SELECT jobq.alter_pool('main', processes => 2)});
wait_for($node, q{SELECT count(*) = 2 FROM jobq.workers WHERE pool = 'main'}, 'the pool grows to 2');
my $victim = $node->safe_psql('postgres', q{SELECT min(pid) FROM jobq.workers});
kill9($node, $victim);
wait_for($node, qq{SELECT count(*) = 2 FROM jobq.workers WHERE pool = 'main' AND pid <> $victim},
	'replacements run after kill -9 of a pool process');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jobq.workers w
    WHERE NOT EXISTS (SELECT FROM pg_stat_activity a WHERE a.pid = w.pid AND a.backend_type = 'jobq worker')}),
	'0', 'jobq.workers shows no ghost');
$node->safe_psql('postgres', q{TRUNCATE runs; SELECT jobq.dispatch('record', '{"n": 1}')});
wait_for($node, 'SELECT count(*) = 1 FROM runs', 'the pool runs jobs after the crash restart');

# recycling: a pool whose processes leave after 3 jobs
$node->safe_psql('postgres', q{
SELECT jobq.drop_pool('main');
SELECT jobq.create_pool('recycled', processes => 1, max_jobs => 3, timeout => '1 s', tries => 1);
});
wait_for($node, q{SELECT count(*) = 1 FROM jobq.workers WHERE pool = 'recycled'}, 'the new pool runs');
$node->safe_psql('postgres', q{
TRUNCATE runs;
SELECT jobq.dispatch('record', jsonb_build_object('n', g)) FROM generate_series(1, 12) g;
});
wait_for($node, 'SELECT count(*) = 12 FROM runs', 'the recycled pool runs every job');
cmp_ok($node->safe_psql('postgres', 'SELECT count(DISTINCT pid) FROM runs'), '>=', 4,
	'its process was replaced every 3 jobs')
  or diag($node->safe_psql('postgres',
	'SELECT pid, count(*) FROM runs GROUP BY pid; SELECT * FROM jobq.workers; SELECT * FROM jobq.pools'));
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed'), '0', 'no job failed');

# the pool's timeout applies to jobs that set none
$node->safe_psql('postgres', q{
CREATE FUNCTION nap(p jsonb) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(60) $$;
SELECT jobq.dispatch('nap');
});
wait_for($node, 'SELECT count(*) = 1 FROM jobq.failed', 'a job over the pool\'s timeout fails');
is($node->safe_psql('postgres', 'SELECT exception FROM jobq.failed'), 'job timed out after 1000 ms',
	'after the pool\'s timeout');

# dropping the last pool brings the default pool back
$node->safe_psql('postgres', q{SELECT jobq.drop_pool('recycled')});
wait_for($node, q{SELECT count(*) = 4 FROM jobq.workers WHERE pool = 'default'},
	'without pools the default pool runs again');

# ---- DROP EXTENSION and DROP DATABASE of a served database ----
$node->safe_psql('postgres', q{
CREATE DATABASE other;
ALTER SYSTEM SET jobq.database = 'postgres, other';
SELECT pg_reload_conf();
});
$node->safe_psql('other', 'CREATE EXTENSION jobq');
wait_for($node, q{SELECT count(*) = 4 FROM jobq.workers WHERE database = 'other'},
	'a database added to jobq.database gets its workers');
my $drop_log = -s $node->logfile;
$node->safe_psql('other', 'DROP EXTENSION jobq');
wait_for($node, q{SELECT count(*) = 0 FROM pg_stat_activity
    WHERE datname = 'other' AND backend_type = 'jobq worker'},
	'DROP EXTENSION completes and the workers leave');
# the pool manager and the workers remember the extension's owner: they must
# see that jobq is gone (the schema jobq stays), not query its tables
sleep(2);
unlike(slurp_file($node->logfile, $drop_log), qr/relation "jobq\.\w+" does not exist/,
	'after DROP EXTENSION no process queries the dropped tables');
$node->safe_psql('other', 'CREATE EXTENSION jobq');
wait_for($node, q{SELECT count(*) = 4 FROM jobq.workers WHERE database = 'other'},
	'CREATE EXTENSION brings them back');
# commands that need the database free of connections get it
$node->safe_psql('postgres', 'CREATE DATABASE copy TEMPLATE other');
ok(1, 'CREATE DATABASE ... TEMPLATE of a served database succeeds');
wait_for($node, q{SELECT count(*) = 4 FROM jobq.workers WHERE database = 'other'},
	'and the workers come back');
$node->safe_psql('postgres', 'DROP DATABASE copy');
$node->safe_psql('other', q{
CREATE FUNCTION stuck(p jsonb) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(300) $$;
SELECT jobq.dispatch('stuck', timeout => '10 min');
});
wait_for($node, q{SELECT count(*) = 1 FROM jobq.workers WHERE database = 'other' AND state = 'busy'},
	'a job runs in the database to drop');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE other');
is($ret, 0, 'DROP DATABASE of a served database with a running job succeeds')
  or diag($stderr);
wait_for($node, q{SELECT count(*) = 0 FROM jobq.workers WHERE database = 'other'},
	'no worker of the dropped database is left');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET jobq.database; SELECT pg_reload_conf()});
$node->stop;

# ---- CALL jobq.work() without shared_preload_libraries ----
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', q{
CREATE EXTENSION jobq;
CREATE TABLE runs (n int PRIMARY KEY);
CREATE FUNCTION record(p jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO runs VALUES ((p->>'n')::int) $$;
SELECT jobq.dispatch('record', jsonb_build_object('n', g)) FROM generate_series(1, 25) g;
});
$plain->safe_psql('postgres', 'CALL jobq.work(stop_when_empty => true)');
is($plain->safe_psql('postgres', 'SELECT count(*), count(DISTINCT n) FROM runs'), '25|25',
	'without preloading, CALL jobq.work(stop_when_empty => true) drains the queue and returns');
is($plain->safe_psql('postgres', q{SELECT count(*) FROM jobq.workers}), '0',
	'jobq.workers is empty without shared memory');
($wout, $werr) = ('', '');
$work = start_work($plain, \$wout, \$werr);
wait_for($plain, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE query = 'CALL jobq.work()'},
	'a session runs CALL jobq.work() without shared memory');
$plain->safe_psql('postgres', 'SELECT jobq.restart()');
ok($work->finish, 'it returns after jobq.restart(), noticed through jobq.restart_state')
  or diag($werr);
$plain->safe_psql('postgres', q{SELECT jobq.dispatch('record', '{"n": 100}')});
is($plain->safe_psql('postgres', q{SELECT ready, done_last_minute IS NULL FROM jobq.queues}), '1|t',
	'jobq.queues counts jobs; the per-minute counters need shared memory');
$plain->stop;

done_testing();
