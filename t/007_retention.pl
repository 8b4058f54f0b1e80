# jobq.failed_retention: the background workers delete expired failed jobs
# in small batches, and keep the others; off by default.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JobqTest;

my $node = jobq_node('retention');
wait_workers($node, 2);

# 1,200 failures from two days ago (more than one batch), 3 recent ones
$node->safe_psql('postgres', q{
INSERT INTO jobq.failed (job_id, queue, job, payload, owner, attempts, dispatched_at,
                         failed_at, exception, sqlstate, error)
SELECT g, 'default', 'public.gone', '{}'::jsonb, 'postgres'::regrole, 1, now() - interval '2 days',
       now() - interval '2 days' + g * interval '1 ms', 'old', 'P0001', '{}'::jsonb
  FROM generate_series(1, 1200) g
UNION ALL
SELECT 5000 + g, 'default', 'public.gone', '{}', 'postgres', 1, now(), now(),
       'recent', 'P0001', '{}'
  FROM generate_series(1, 3) g;
});

# off by default: a worker reserves a job after the failures were written
# (pruning would come first, in the same loop), and nothing goes
$node->safe_psql('postgres', q{SELECT jobq.dispatch('pg_catalog.jsonb_typeof', '{}')});
wait_for($node, 'SELECT count(*) = 0 FROM jobq.jobs', 'a job ran, so the workers loop');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed'), '1203',
	'without jobq.failed_retention nothing is deleted');

$node->safe_psql('postgres', "ALTER SYSTEM SET jobq.failed_retention = '1d'");
$node->reload;
wait_for($node, "SELECT count(*) = 3 FROM jobq.failed",
	'with jobq.failed_retention the workers delete the expired failed jobs');
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT exception, ',') FROM jobq.failed"),
	'recent', 'and keep the recent ones');

$node->stop;
done_testing();
