# What happens to a job when its worker is killed, terminated or
# cancelled, or the job times out or keeps failing.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JobqTest;

my $node = jobq_node('failures');

# sleepy: sleeps for up to five minutes until the test lets it go (a row
# in go, committed while the first attempt sleeps, so later attempts do
# not sleep), then records that it completed.  Its starts are counted by a
# sequence named in the payload, which no rollback takes back.
$node->safe_psql('postgres', q{
CREATE TABLE done (name text, starts bigint);
CREATE TABLE go (name text);
CREATE FUNCTION sleepy(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    starts bigint := nextval(p->>'seq');
BEGIN
    IF NOT EXISTS (SELECT FROM go WHERE name = p->>'name') THEN
        PERFORM pg_sleep(300);
    END IF;
    INSERT INTO done VALUES (p->>'name', starts);
END $$;
CREATE FUNCTION failing(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'always fails' USING ERRCODE = 'P0001';
END $$;
});
wait_workers($node, 2);

sub dispatch_sleepy
{
	my ($name, $opts) = @_;
	$node->safe_psql('postgres', "CREATE SEQUENCE seq_$name");
	return $node->safe_psql('postgres',
		"SELECT jobq.dispatch('sleepy', '{\"name\": \"$name\", \"seq\": \"seq_$name\"}' $opts)");
}

# let later attempts of a sleepy job through
sub let_go
{
	my ($name) = @_;
	$node->safe_psql('postgres', "INSERT INTO go VALUES ('$name')");
}

# kill -9 of a worker mid-job: the server restarts, the job is available
# again with its attempt counted, and runs again
my $id = dispatch_sleepy('crash', ", tries => 2, timeout => '10 min'");
my $pid = worker_running_job($node, $id);
let_go('crash');
kill9($node, $pid);
wait_for($node, "SELECT count(*) = 1 FROM done WHERE name = 'crash'",
	'after kill -9 the job runs again and completes');
ok($node->log_contains("was terminated by signal 9"), 'the server went through a crash restart');
wait_workers($node, 2, 'the launcher restarted the workers after the crash restart');

# kill -9 on the last try: the job lands in the failed store, saying why
$id = dispatch_sleepy('crash_last', ", tries => 1, timeout => '10 min'");
$pid = worker_running_job($node, $id);
kill9($node, $pid);
wait_for($node, "SELECT count(*) = 1 FROM jobq.failed_jobs WHERE job_id = $id",
	'after kill -9 on its last try the job is failed');
like($node->safe_psql('postgres',
		"SELECT sqlstate || ' ' || exception || ' / ' || attempts FROM jobq.failed_jobs WHERE job_id = $id"),
	qr/^JQ001 the worker running attempt 1 of job \d+ was lost \/ 1$/,
	'the failure says the worker was lost');
is($node->safe_psql('postgres', "SELECT count(*) FROM done WHERE name = 'crash_last'"),
	'0', 'the failed job did not complete');

# pg_terminate_backend stops the worker promptly and counts as a failed
# attempt (so a job that terminates its own worker cannot run forever);
# the launcher replaces the worker
wait_workers($node, 2);
$id = dispatch_sleepy('terminate', ", tries => 2, timeout => '10 min'");
$pid = worker_running_job($node, $id);
let_go('terminate');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
wait_for($node, "SELECT count(*) = 1 FROM done WHERE name = 'terminate'",
	'a job interrupted by pg_terminate_backend runs again');
is($node->safe_psql('postgres', "SELECT starts FROM done WHERE name = 'terminate'"),
	'2', 'it was started twice: interrupted, then completed');
wait_for($node,
	"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'jobq worker' AND pid <> $pid",
	'the launcher replaced the terminated worker');
ok($node->log_contains('stopped on request'), 'the worker logged why it stopped');

$id = dispatch_sleepy('terminate_last', ", tries => 1, timeout => '10 min'");
$pid = worker_running_job($node, $id);
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
wait_for($node, "SELECT count(*) = 1 FROM jobq.failed_jobs WHERE job_id = $id",
	'a job terminated on its last try is failed');
is($node->safe_psql('postgres', "SELECT sqlstate, exception FROM jobq.failed_jobs WHERE job_id = $id"),
	'57P01|the worker was terminated while running the job', 'saying why');
wait_workers($node, 2);

# a server shutdown is not the job's fault: the interrupted attempt is
# refunded and the job runs again after the restart, even with one try
$id = dispatch_sleepy('shutdown', ", tries => 1, timeout => '10 min'");
$pid = worker_running_job($node, $id);
let_go('shutdown');
$node->stop('fast');
$node->start;
wait_for($node, "SELECT count(*) = 1 FROM done WHERE name = 'shutdown'",
	'a job interrupted by a fast shutdown runs after the restart');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed_jobs WHERE job_id = ' . $id),
	'0', 'and was not failed');
wait_workers($node, 2);

# pg_cancel_backend cancels only the running job (a failed attempt); the
# worker lives on and the job is retried
$id = dispatch_sleepy('cancel', ", tries => 2, timeout => '10 min'");
$pid = worker_running_job($node, $id);
let_go('cancel');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
wait_for($node, "SELECT count(*) = 1 FROM done WHERE name = 'cancel'",
	'a cancelled job is retried and completes');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $pid AND backend_type = 'jobq worker'"),
	'1', 'the cancelled worker survived');

# with no tries left, a cancel fails the job with the cancel's SQLSTATE
$id = dispatch_sleepy('cancel_last', ", tries => 1, timeout => '10 min'");
$pid = worker_running_job($node, $id);
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
wait_for($node, "SELECT count(*) = 1 FROM jobq.failed_jobs WHERE job_id = $id",
	'a job cancelled on its last try is failed');
is($node->safe_psql('postgres', "SELECT sqlstate FROM jobq.failed_jobs WHERE job_id = $id"),
	'57014', 'with the query_canceled SQLSTATE');

# the timeout is enforced by the worker
$id = dispatch_sleepy('timeout', ", timeout => '1 s', tries => 1");
wait_for($node, "SELECT count(*) = 1 FROM jobq.failed_jobs WHERE job_id = $id",
	'a job over its timeout is failed');
is($node->safe_psql('postgres', "SELECT sqlstate, exception FROM jobq.failed_jobs WHERE job_id = $id"),
	'57014|job timed out after 1000 ms', 'the failure says it timed out');
cmp_ok($node->safe_psql('postgres',
		"SELECT extract(epoch FROM failed_at - dispatched_at) FROM jobq.failed_jobs WHERE job_id = $id"),
	'<', 30, 'it did not run to the end of its sleep');

# a failing handler is retried after its backoff, then failed for good
$id = $node->safe_psql('postgres',
	"SELECT jobq.dispatch('failing', tries => 3, backoff => '1 s')");
wait_for($node, "SELECT count(*) = 1 FROM jobq.failed_jobs WHERE job_id = $id",
	'a failing job reaches the failed store after its tries');
is($node->safe_psql('postgres',
		"SELECT attempts, exception, failed_at - dispatched_at >= interval '2 s' FROM jobq.failed_jobs WHERE job_id = $id"),
	'3|always fails|t', 'after three attempts separated by the backoff');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.jobs'), '0', 'nothing is left queued');

$node->stop;
done_testing();
