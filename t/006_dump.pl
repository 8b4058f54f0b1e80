# pg_dump of a database using jobq keeps its pending jobs, failed jobs and
# registered handlers, and restores cleanly into a new database where the
# jobs run and new ids continue after the old ones.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JobqTest;

# the workers serve 'postgres' only: the jobs of 'app' stay where they are
my $node = jobq_node('dump');
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('postgres', 'CREATE ROLE jobq_dump_user');
$node->safe_psql('app', q{
CREATE EXTENSION jobq;
CREATE SCHEMA shop;
CREATE TABLE shop.sent (n int, who text);
CREATE FUNCTION shop.send(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p ? 'fail' THEN
        RAISE EXCEPTION 'cannot send %', p->>'n' USING DETAIL = 'no route';
    END IF;
    INSERT INTO shop.sent VALUES ((p->>'n')::int, current_user);
END $$;
GRANT USAGE ON SCHEMA shop TO jobq_dump_user;
GRANT INSERT ON shop.sent TO jobq_dump_user;
SELECT jobq.register('shop.send', queue => 'mail', tries => 3, timeout => '1 min');
-- two that fail for good, as jobq_dump_user
SET ROLE jobq_dump_user;
SELECT jobq.dispatch('shop.send', '{"n": 1, "fail": true}', tries => 1);
SELECT jobq.dispatch('shop.send', '{"n": 2, "fail": true}', tries => 1, queue => 'low');
RESET ROLE;
CALL jobq.work(queues => '{mail,low}', stop_when_empty => true);
-- pending: ready, delayed, with options, owned by two roles
SET ROLE jobq_dump_user;
SELECT jobq.dispatch('shop.send', '{"n": 3}');
SELECT jobq.dispatch('shop.send', '{"n": 4}', delay => '2 hours', backoff => '5 s');
RESET ROLE;
SELECT jobq.dispatch('shop.send', '{"n": 5, "text": "caf\u00e9 \u2603"}', queue => 'low', tries => 7);
});

my $jobs_q = q{SELECT id, queue, job, payload, owner, attempts, tries, timeout, backoff,
  available_at, created_at, reserved_by, last_error FROM jobq.jobs ORDER BY id};
my $failed_q = q{SELECT id, uuid, job_id, queue, job, payload, owner, attempts, tries,
  timeout, backoff, dispatched_at, failed_at, exception, sqlstate, error
  FROM jobq.failed ORDER BY id};
my $handlers_q = q{SELECT * FROM jobq.handlers ORDER BY job};

my %before = map { $_ => $node->safe_psql('app', $_) } ($jobs_q, $failed_q, $handlers_q);
is(scalar(split /\n/, $before{$jobs_q}), 3, 'three pending jobs before the dump');
is(scalar(split /\n/, $before{$failed_q}), 2, 'two failed jobs before the dump');

my $dump = $node->basedir . '/app.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('app'), '-f', $dump ],
	'pg_dump succeeds');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
my ($stdout, $stderr);
IPC::Run::run([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ],
	'>', \$stdout, '2>', \$stderr);
is($?, 0, 'pg_restore succeeds');
is($stderr, '', 'without errors or warnings');

foreach my $q ($jobs_q, $failed_q, $handlers_q)
{
	is($node->safe_psql('restored', $q), $before{$q},
		'restored identically: ' . ($q =~ /FROM (jobq\.\w+)/)[0]);
}

# the restored database works: row-level security, retry, new ids, running
is($node->safe_psql('restored', q{
SET ROLE jobq_dump_user;
SELECT count(*) FROM jobq.jobs;}), '2', 'a role still sees only its own jobs');
my $new = $node->safe_psql('restored', q{SELECT jobq.dispatch('shop.send', '{"n": 6}')});
ok($new > (split /\|/, (split /\n/, $before{$jobs_q})[-1])[0], 'new ids continue after the restored ones');
$node->safe_psql('restored', q{
SELECT count(*) FROM jobq.retry_all('low');
UPDATE jobq.jobs SET available_at = now();
CALL jobq.work(queues => '{mail,low}', stop_when_empty => true);
});
is($node->safe_psql('restored', 'SELECT n, who FROM shop.sent ORDER BY n'),
	"3|jobq_dump_user\n4|jobq_dump_user\n5|postgres\n6|postgres",
	'the restored jobs run, as their owners');
is($node->safe_psql('restored', q{SELECT count(*) FROM jobq.failed_jobs}), '2',
	'the failed jobs are there (one retried and failed again)');

$node->stop;
done_testing();
