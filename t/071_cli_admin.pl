# The jobq CLI's operator commands: monitor --once and failed for a known
# state, dispatch, retry/forget/flush (issue 5's functions), --help,
# server errors with their hint, exit codes.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JobqTest;

my $node = jobq_node('cli_admin');
my $conn = $node->connstr('postgres');
wait_workers($node, 2);

# run jobq with arguments; returns (exit code, stdout, stderr)
sub jobq
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'jobq', @_ ], '>', \$out, '2>', \$err, IPC::Run::timeout(60));
	return ($? >> 8, $out, $err);
}

# ---- a known state ----
$node->safe_psql('postgres', q{
SELECT jobq.register('ext', external => true, tries => 1);
SELECT jobq.dispatch('ext', '{"n": 1}');
SELECT jobq.dispatch('ext', '{"n": 2}');
SELECT jobq.dispatch('ext', '{"n": 3}', delay => '1 hour');
SELECT jobq.dispatch('ext', '{"n": 4}', queue => 'high');
SELECT jobq.dispatch('ext', '{"n": 5}', queue => 'low');
SELECT count(*) FROM jobq.reserve('{high}', lease => '1 hour');
SELECT jobq.fail(id, token, '{"message": "disk full"}') FROM jobq.reserve('{low}');
});
my $high_id = $node->safe_psql('postgres', q{SELECT id FROM jobq.jobs WHERE queue = 'high'});

my ($rc, $out, $err) = jobq('-d', $conn, 'monitor', '--once');
is($rc, 0, 'monitor --once: exit code 0');
like($out, qr/^QUEUE\s+READY\s+DELAYED\s+RUNNING\s+FAILED$/m, 'queues header');
like($out, qr/^default\s+2\s+1\s+0\s+0$/m, 'default: 2 ready, 1 delayed');
like($out, qr/^high\s+0\s+0\s+1\s+0$/m, 'high: 1 running (leased)');
like($out, qr/^low\s+0\s+0\s+0\s+1$/m, 'low: 1 failed');
like($out, qr/^\s*$high_id\s+high\s+ext\s+1\s+lease\s/m, 'the leased job is listed as running');
is(scalar(() = $out =~ /^\s*\d+\s+in-server\s/mg), 2, 'the two in-server workers are listed');
unlike($out, qr/\e\[/, 'no terminal codes with --once');

# the in-server workers' recovery of lost reservations (at once when a
# worker exits, else every few seconds) leaves a lease alone
my $lease = $node->safe_psql('postgres',
	"SELECT attempts, lease_token, available_at FROM jobq.jobs WHERE id = $high_id");
$node->safe_psql('postgres',
	q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'jobq worker'});
wait_workers($node, 2, 'the launcher restarts the workers');
sleep 6;
is( $node->safe_psql('postgres',
		"SELECT attempts, lease_token, available_at FROM jobq.jobs WHERE id = $high_id"),
	$lease, 'a leased job is not recovered by the in-server workers');

($rc, $out, $err) = jobq('failed', '-d', $conn);
is($rc, 0, 'failed: exit code 0');
like($out, qr/^id\s+job_id\s+queue\s+job\s+attempts\s+failed_at\s+sqlstate\s+error$/m,
	'failed: header');
like($out, qr/^\s*\d+\s+\d+\s+low\s+ext\s+1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+JQ702\s+disk full$/m,
	'failed: the failed job');
($rc, $out, $err) = jobq('failed', '-d', $conn, '--queue', 'default');
is($out, "No failed jobs in queue default.\n", 'failed --queue filters');

# ---- dispatch ----
($rc, $out, $err) = jobq('-d', $conn, 'dispatch', 'ext', '{"n": 6}', '--queue', 'cli',
	'--delay', '10 min');
is($rc, 0, 'dispatch: exit code 0');
like($out, qr/^\d+$/, 'dispatch prints the id');
chomp $out;
is( $node->safe_psql('postgres',
		"SELECT queue, payload, available_at > now() + '9 min' FROM jobq.jobs WHERE id = $out"),
	'cli|{"n": 6}|t', 'the job is queued as asked');

# ---- server errors are shown with their hint; exit codes ----
($rc, $out, $err) = jobq('-d', $conn, 'dispatch', 'no_such_handler');
is($rc, 1, 'server error: exit code 1');
like($err, qr/ERROR:  job handler no_such_handler\(jsonb\) does not exist \(SQLSTATE 42883\)\nHINT:  /,
	'the error is shown with its SQLSTATE and hint');
($rc, $out, $err) = jobq('-d', 'host=/nonexistent port=1', 'failed');
is($rc, 3, 'no connection: exit code 3');
($rc, $out, $err) = jobq('frobnicate');
is($rc, 2, 'unknown command: exit code 2');
($rc, $out, $err) = jobq('dispatch');
is($rc, 2, 'missing argument: exit code 2');

# ---- --help for each command ----
for my $cmd (qw(work dispatch failed retry forget flush restart listen monitor))
{
	($rc, $out, $err) = jobq($cmd, '--help');
	ok($rc == 0 && $out =~ /^jobq $cmd: / && $out =~ /Usage:/, "$cmd --help");
}
($rc, $out, $err) = jobq('--help');
like($out, qr/Exit codes:/, 'jobq --help documents the exit codes');

# ---- retry, forget, flush: issue 5's functions ----
SKIP:
{
	skip 'jobq.forget(bigint) is not installed (failed-job management, issue 5)', 8
	  if $node->safe_psql('postgres',
		q{SELECT to_regprocedure('jobq.forget(bigint)') IS NULL}) eq 't';

	my $fid = $node->safe_psql('postgres', 'SELECT id FROM jobq.failed');
	($rc, $out, $err) = jobq('-d', $conn, 'retry', $fid);
	is($rc, 0, 'retry ID: exit code 0');
	is( $node->safe_psql('postgres',
			q{SELECT count(*) FROM jobq.jobs WHERE queue = 'low' AND NOT EXISTS (SELECT FROM jobq.failed)}),
		'1', 'the failed job is queued again');

	$node->safe_psql('postgres',
		q{SELECT jobq.fail(id, token, '{"message": "again"}') FROM jobq.reserve('{low}')});
	($rc, $out, $err) = jobq('-d', $conn, 'retry', 'all', '--queue', 'low');
	is($rc, 0, 'retry all --queue: exit code 0');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed'), '0', 'retried');

	$node->safe_psql('postgres',
		q{SELECT jobq.fail(id, token, '{"message": "again"}') FROM jobq.reserve('{low}')});
	$fid = $node->safe_psql('postgres', 'SELECT id FROM jobq.failed');
	($rc, $out, $err) = jobq('-d', $conn, 'forget', $fid);
	is($rc, 0, 'forget: exit code 0');
	($rc, $out, $err) = jobq('-d', $conn, 'forget', $fid);
	is($rc, 4, 'forget of a missing failed job: exit code 4');

	$node->safe_psql('postgres', q{SELECT jobq.dispatch('ext', '{}', queue => 'low')});
	$node->safe_psql('postgres',
		q{SELECT jobq.fail(id, token, '{"message": "again"}') FROM jobq.reserve('{low}')});
	($rc, $out, $err) = jobq('-d', $conn, 'flush');
	is($rc, 0, 'flush: exit code 0');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed'), '0', 'flushed');
}

$node->stop;
done_testing();
