# Upkeep of jobq.jobs under churn: the workers' statements keep using the
# indexes when the table grows from empty (their plans are made once), and
# the pool manager vacuums the table when dead row versions pile up, without
# waiting for autovacuum (turned off here).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JobqTest;

my $node = jobq_node('upkeep', "autovacuum = off\njobq.vacuum_threshold = 0\n");
$node->safe_psql('postgres',
	'CREATE FUNCTION noop(p jsonb) RETURNS void LANGUAGE sql AS $$ $$');
wait_workers($node, 2);

sub stat_of_jobs
{
	my ($column) = @_;
	# statistics are reported by each process at most once a second, and
	# by an idle worker when it wakes (at least every few seconds)
	sleep 6;
	return $node->safe_psql('postgres',
		"SELECT $column FROM pg_stat_user_tables WHERE relid = 'jobq.jobs'::regclass");
}

# The workers have planned their statements on an empty table.  20,000
# jobs arrive: reserving them must not read the whole table every time.
my $read_before = stat_of_jobs('seq_tup_read');
$node->safe_psql('postgres',
	"SELECT count(*) FROM jobq.dispatch_many('noop', array_fill('{}'::jsonb, ARRAY[20000]))");
wait_for($node, 'SELECT NOT EXISTS (SELECT FROM jobq.jobs)', 'the burst is drained');
my $read = stat_of_jobs('seq_tup_read') - $read_before;
note("rows read by sequential scans of jobq.jobs: $read");
cmp_ok($read, '<', 20000,
	'the workers did not scan the table sequentially (a plan made while it was empty)');

# with jobq.vacuum_threshold set, the pool manager vacuums the table
is(stat_of_jobs('vacuum_count'), '0', 'no VACUUM so far (threshold 0 = off, autovacuum off)');
$node->append_conf('postgresql.conf', "jobq.vacuum_threshold = 1000\n");
$node->reload;
$node->safe_psql('postgres',
	"SELECT count(*) FROM jobq.dispatch_many('noop', array_fill('{}'::jsonb, ARRAY[2000]))");
wait_for($node, 'SELECT NOT EXISTS (SELECT FROM jobq.jobs)', 'the jobs are drained');
wait_for($node,
	"SELECT vacuum_count > 0 FROM pg_stat_user_tables WHERE relid = 'jobq.jobs'::regclass",
	'the pool manager vacuumed jobq.jobs');
ok(!$node->log_contains('skipping vacuum'), 'no vacuum was skipped with a warning');

done_testing();
