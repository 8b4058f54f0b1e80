# jobq work: external workers draining external jobs over the SQL consumer
# API: every job runs exactly once; a worker killed with kill -9 mid-job
# loses nothing; leases are extended while a command runs; timeouts,
# SIGTERM, jobq.restart() and jobq listen.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JobqTest;

my $node = jobq_node('cli_work');
my $dir = PostgreSQL::Test::Utils::tempdir;
my $conn = $node->connstr('postgres');

# the jobq CLI is installed next to psql
my ($out, $err);
ok(IPC::Run::run([ 'jobq', '--version' ], '>', \$out, '2>', \$err),
	'jobq is installed');

$node->safe_psql('postgres', q{
SELECT jobq.register('append', external => true, tries => 3);
SELECT jobq.register('slow_once', external => true, tries => 3);
});

# Start a jobq work process with its output in a log file; returns its pid.
sub start_worker
{
	my ($name, @args) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>>', "$dir/$name.log") or die;
		open(STDERR, '>&', \*STDOUT) or die;
		exec('jobq', 'work', '-d', $conn, @args) or die "exec: $!";
	}
	return $pid;
}

# Wait for a process to exit; returns its exit status (-1 on timeout).
sub wait_exit
{
	my ($pid, $secs) = @_;
	for (1 .. $secs * 10)
	{
		my $r = waitpid($pid, POSIX::WNOHANG());
		return $? >> 8 if $r == $pid;
		select(undef, undef, undef, 0.1);
	}
	return -1;
}

sub lines_of
{
	my ($file) = @_;
	return () unless -e $file;
	open(my $fh, '<', $file) or die;
	chomp(my @l = <$fh>);
	close($fh);
	return @l;
}

sub uniq_count
{
	my %seen = map { $_ => 1 } @_;
	return scalar(keys %seen);
}

use POSIX ();

# ---- 4 workers drain 5,000 external jobs: each runs exactly once ----
my $total = 5000;
$node->safe_psql('postgres',
	"SELECT jobq.dispatch('append', jsonb_build_object('n', g)) FROM generate_series(1, $total) g");
my $ran = "$dir/ran.txt";
my @pids = map {
	start_worker("drain$_", '--queue', 'default', '--exec',
		"echo \$JOBQ_JOB_ID >> $ran", '--stop-when-empty', '--quiet',
		'--sleep', '0.2')
} 1 .. 4;
my @codes = map { wait_exit($_, 600) } @pids;
is_deeply(\@codes, [ 0, 0, 0, 0 ], 'the four workers stopped when the queue was empty');
my @ids = lines_of($ran);
is(scalar(@ids), $total, "$total commands ran");
is(uniq_count(@ids), $total, 'each job ran exactly once');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.jobs'), '0', 'no job left');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed'), '0',
	'no job failed (in-server workers never took one)');

# ---- kill -9 a worker mid-job: its job comes back after the lease ----
# slow_once sleeps on its first attempt until killed; the others append.
my $ran2 = "$dir/ran2.txt";
my $started = "$dir/started.txt";
my $slow_id = $node->safe_psql('postgres', "SELECT jobq.dispatch('slow_once', '{}')");
my $exec = qq{if [ "\$JOBQ_JOB" = slow_once ] && [ "\$JOBQ_ATTEMPT" = 1 ]; then }
  . qq{echo \$JOBQ_JOB_ID >> $started; sleep 120; fi; echo \$JOBQ_JOB_ID >> $ran2};
my $victim = start_worker('victim', '--exec', $exec, '--lease', '3', '--quiet');
ok( $node->poll_query_until('postgres',
		"SELECT attempts = 1 AND lease_token IS NOT NULL FROM jobq.jobs WHERE id = $slow_id"),
	'the victim reserved the slow job');
for (1 .. 100)
{
	last if lines_of($started);
	select(undef, undef, undef, 0.1);
}
is((lines_of($started))[0], $slow_id, 'its command is running');
my $n2 = 1000;
$node->safe_psql('postgres',
	"SELECT jobq.dispatch('append', jsonb_build_object('n', g)) FROM generate_series(1, $n2) g");
my @others = map {
	start_worker("after_kill$_", '--exec', $exec, '--lease', '3', '--quiet', '--sleep', '0.5')
} 1 .. 3;
kill 'KILL', $victim;
waitpid($victim, 0);
ok( $node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM jobq.jobs'),
	'the other workers ran every job, the killed one after its lease');
kill 'TERM', @others;
@codes = map { wait_exit($_, 60) } @others;
is_deeply(\@codes, [ 0, 0, 0 ], 'SIGTERM stops the workers with exit code 0');
my @ids2 = lines_of($ran2);
is(uniq_count(@ids2), $n2 + 1, 'nothing lost: every job completed');
is(scalar(@ids2), $n2 + 1, 'and none ran to the end twice');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed'), '0', 'no failures');
like(slurp_file("$dir/after_kill1.log") . slurp_file("$dir/after_kill2.log")
	  . slurp_file("$dir/after_kill3.log"), qr/^$/,
	'quiet workers logged nothing');

# ---- the lease is extended while a command runs longer than it ----
my $long = "$dir/long.txt";
$node->safe_psql('postgres', "SELECT jobq.dispatch('append', '{}')");
my $w = start_worker('long', '--once', '--lease', '1', '--exec',
	"sleep 3; echo \$JOBQ_ATTEMPT >> $long");
# meanwhile nobody else gets the job
for (1 .. 3)
{
	sleep 1;
	is($node->safe_psql('postgres', q{SELECT count(*) FROM jobq.reserve('{default}')}),
		'0', 'a job whose lease is being extended is not reserved by others');
}
is(wait_exit($w, 60), 0, '--once exits after one job');
is(join(',', lines_of($long)), '1', 'the long command ran once, in attempt 1');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.jobs'), '0', 'and completed');

# ---- a command past its timeout is killed; its attempt fails ----
$node->safe_psql('postgres', "SELECT jobq.dispatch('append', '{}', tries => 1)");
$w = start_worker('timeout', '--stop-when-empty', '--timeout', '1', '--exec',
	'echo partial output >&2; sleep 60');
is(wait_exit($w, 60), 0, 'worker with a timed-out job stops when empty');
is( $node->safe_psql('postgres',
		'SELECT exception, detail, sqlstate FROM jobq.failed_jobs'),
	"the command timed out after 1 s and was killed|partial output\n|JQ702",
	'the timed-out attempt is in the failed store with the stderr tail');

# ---- payload on stdin, job data in the environment ----
my $envf = "$dir/env.txt";
my $id = $node->safe_psql('postgres',
	q{SELECT jobq.dispatch('append', '{"x": "y"}', queue => 'high')});
$w = start_worker('env', '--queue', 'low,high', '--once', '--exec',
	"cat > $envf; echo \" \$JOBQ_JOB_ID \$JOBQ_JOB \$JOBQ_QUEUE \$JOBQ_ATTEMPT\" >> $envf");
is(wait_exit($w, 60), 0, 'worker ran the job');
is(slurp_file($envf), qq{{"x": "y"} $id append high 1\n}, 'payload on stdin, job in env');

# ---- a failing command: retried, then failed with its stderr ----
$node->safe_psql('postgres', 'DELETE FROM jobq.failed');
$node->safe_psql('postgres', "SELECT jobq.dispatch('append', '{}', tries => 2)");
$w = start_worker('fails', '--stop-when-empty', '--exec', 'echo no such file >&2; exit 3');
is(wait_exit($w, 60), 0, 'worker stops when empty');
is( $node->safe_psql('postgres', 'SELECT attempts, exception, detail FROM jobq.failed_jobs'),
	"2|the command exited with status 3|no such file\n",
	'failed after its tries, with the exit status and stderr');
like(slurp_file("$dir/fails.log"), qr/attempt 1\): failed: the command exited with status 3/,
	'the worker logs the failure');

# ---- exit 75 releases the job: tried again ----
$node->safe_psql('postgres', "SELECT jobq.dispatch('append', '{}', tries => 5)");
my $rel = "$dir/rel.txt";
$w = start_worker('release', '--stop-when-empty', '--exec',
	qq{echo \$JOBQ_ATTEMPT >> $rel; [ "\$JOBQ_ATTEMPT" = 2 ] || exit 75});
is(wait_exit($w, 60), 0, 'worker stops when empty');
is(join(',', lines_of($rel)), '1,2', 'a released job is tried again');

# ---- SIGTERM: the running command finishes and is reported ----
my $graceful = "$dir/graceful.txt";
my $gstart = "$dir/gstart.txt";
$node->safe_psql('postgres', "SELECT jobq.dispatch('append', '{}')");
$w = start_worker('graceful', '--exec', "echo go >> $gstart; sleep 2; echo done >> $graceful");
for (1 .. 300)
{
	last if lines_of($gstart);
	select(undef, undef, undef, 0.1);
}
kill 'TERM', $w;
is(wait_exit($w, 60), 0, 'SIGTERM: exit code 0');
is(join(',', lines_of($graceful)), 'done', 'the current job finished');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.jobs'), '0', 'and was completed');
like(slurp_file("$dir/graceful.log"), qr/stopping \(SIGTERM\)/, 'the worker says why it stops');

# ---- jobq restart: idle workers exit ----
$w = start_worker('restart', '--sleep', '30', '--exec', 'true');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name LIKE 'jobq work %'}),
	'worker connected');
IPC::Run::run([ 'jobq', '-d', $conn, 'restart' ], '>', \$out, '2>', \$err);
like($out, qr/^restart requested, generation 1$/m, 'jobq restart bumps the generation');
is(wait_exit($w, 60), 0, 'the worker exits after jobq restart');
like(slurp_file("$dir/restart.log"), qr/stopping \(jobq\.restart\(\)\)/, 'because of the restart');

# ---- jobq listen prints events as JSON lines ----
my ($lout, $lerr) = ('', '');
my $lh = IPC::Run::start([ 'jobq', 'listen', '-d', $conn, '--count', '1' ],
	'>', \$lout, '2>', \$lerr, IPC::Run::timeout(60));
$lh->pump until $lerr =~ /listening/;
$node->safe_psql('postgres', q{SELECT jobq.dispatch('append', '{}', queue => 'ev')});
$lh->finish;
is($lout, qq({"event": "queued", "queue": "ev", "job": "append"}\n),
	'jobq listen prints the queued event');

# ---- usage errors ----
IPC::Run::run([ 'jobq', 'work', '--concurrency', '0', '--exec', 'true' ], '>', \$out, '2>', \$err);
is($? >> 8, 2, 'bad option: exit code 2');
IPC::Run::run([ 'jobq', 'work' ], '>', \$out, '2>', \$err);
like($err, qr/--exec CMD is required/, 'work needs --exec');

$node->stop;
done_testing();
