# Server events: no worker runs on a standby (they start after promotion),
# and running out of max_worker_processes is logged once, with a hint.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JobqTest;

# ---- standby ----
my $primary = jobq_node('primary', "wal_level = replica\nmax_wal_senders = 4\n");
$primary->safe_psql('postgres', q{
CREATE TABLE runs (n int, on_standby bool);
CREATE FUNCTION record(p jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO runs VALUES ((p->>'n')::int, pg_is_in_recovery()) $$;
});
wait_workers($primary, 2, 'the primary runs its workers');
$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;
$primary->safe_psql('postgres', q{SELECT jobq.dispatch('record', '{"n": 1}', delay => '1 hour')});
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', q{SELECT count(*) FROM jobq.jobs}), '1',
	'the standby has the job');
is($standby->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'jobq%'}),
	'0', 'no jobq launcher, manager or worker runs on the standby');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM jobq.workers}), '0',
	'jobq.workers is empty on the standby');
my ($ret, $out, $err) = $standby->psql('postgres', 'CALL jobq.work(stop_when_empty => true)');
like($err, qr/cannot run during recovery/, 'CALL jobq.work() refuses to run on a standby');
$primary->stop;
$standby->promote;
wait_workers($standby, 2, 'after promotion the workers start');
$standby->safe_psql('postgres', q{UPDATE jobq.jobs SET available_at = now()});
wait_for($standby, 'SELECT count(*) = 1 FROM runs', 'and run the job');
is($standby->safe_psql('postgres', 'SELECT on_standby FROM runs'), 'f',
	'not in recovery');
$standby->stop;

# ---- out of background worker slots ----
# max_worker_processes = 4: the logical replication launcher, jobq's
# launcher, the pool manager and one worker; three workers cannot start
my $small = jobq_node('small', "jobq.workers = 4\nmax_worker_processes = 4\n");
wait_workers($small, 1, 'one worker fits');
# the launcher retries every 5 seconds: give it a few rounds
sleep 12;
my $log = slurp_file($small->logfile);
my $count = () = $log =~ /out of background worker slots/g;
is($count, 1, 'running out of worker slots is logged once, not on every retry');
like($log, qr/HINT:\s+Raise max_worker_processes \(now 4\)/, 'with a hint');
is($small->safe_psql('postgres', q{SELECT count(*) FROM jobq.workers}), '1',
	'the worker that fits runs');

# a smart shutdown does not wait for a long job
$small->safe_psql('postgres', q{
CREATE FUNCTION nap(p jsonb) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(600) $$;
SELECT jobq.dispatch('nap', timeout => '20 min');
});
wait_for($small, q{SELECT count(*) = 1 FROM jobq.workers WHERE state = 'busy'}, 'a long job runs');
$small->stop('smart');
ok(1, 'a smart shutdown stops the busy worker (pg_ctl did not time out)');
$small->start;
wait_for($small, q{SELECT count(*) = 1 FROM jobq.workers WHERE state = 'busy'},
	'the job runs again after the restart');
is($small->safe_psql('postgres', q{SELECT attempts FROM jobq.jobs}), '1',
	'as its first attempt: the interrupted one was refunded');
$small->stop;

done_testing();
