# Helpers shared by jobq's TAP tests.
package JobqTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Exporter 'import';

our @EXPORT = qw(jobq_node wait_for wait_workers worker_running_job kill9);

# A started node with jobq preloaded and its workers serving 'postgres'.
# Extra lines of configuration may be given.
sub jobq_node
{
	my ($name, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.database = 'postgres'
jobq.workers = 2
jobq.max_sleep = '500ms'
max_worker_processes = 24
restart_after_crash = on
log_min_messages = log
} . ($extra // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION jobq');
	return $node;
}

# kill -9 a server process, and wait for the crash restart it causes to
# finish.  Queries sent meanwhile can fail in ways the test harness does not
# retry (psql exits before reading its input: "ack Broken pipe").
sub kill9
{
	my ($node, $pid) = @_;
	my $offset = -s $node->logfile;
	kill 'KILL', $pid;
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
	return;
}

# Poll until the query returns 't', failing the test (not dying) on timeout.
sub wait_for
{
	my ($node, $query, $what) = @_;
	ok($node->poll_query_until('postgres', $query), $what);
}

# Wait until exactly $n jobq workers are running.
sub wait_workers
{
	my ($node, $n, $what) = @_;
	wait_for($node,
		"SELECT count(*) = $n FROM pg_stat_activity WHERE backend_type = 'jobq worker'",
		$what // "$n workers running");
}

# The pid of the worker running job $id (as shown in pg_stat_activity),
# waiting for it to start.  The handler is public.sleepy unless given.
sub worker_running_job
{
	my ($node, $id, $handler) = @_;
	$handler //= 'sleepy';
	my $q = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'jobq worker'"
	  . " AND state = 'active' AND query = 'jobq job $id: public.$handler'";
	$node->poll_query_until('postgres', "SELECT EXISTS ($q)")
	  or die "job $id never started";
	return $node->safe_psql('postgres', $q);
}

1;
