# Chains, throttle and funnel with real background workers: a chain
# survives its worker being killed, a throttle's bound holds across eight
# workers, and a funnel slot is freed at once when its holder is killed.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JobqTest;

my $node = jobq_node('chains_limits', "jobq.workers = 8\n");

$node->safe_psql('postgres', q{
CREATE TABLE go (name text);
CREATE TABLE done (name text, at timestamptz DEFAULT clock_timestamp());
-- sleeps (up to five minutes) until the test lets it go, then records itself
CREATE FUNCTION sleepy(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM go WHERE name = p->>'name') THEN
        PERFORM pg_sleep(300);
    END IF;
    INSERT INTO done (name) VALUES (p->>'name');
END $$;
CREATE FUNCTION link(p jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO done (name) VALUES (p->>'name') $$;
-- every job ever queued, to count how often a link was enqueued
CREATE TABLE enqueued (name text);
CREATE FUNCTION log_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.enqueued VALUES (NEW.payload->>'name');
    RETURN NULL;
END $$;
CREATE TRIGGER log_enqueue AFTER INSERT ON jobq.jobs
    FOR EACH ROW EXECUTE FUNCTION log_enqueue();
});
wait_workers($node, 8);

# ---- chain A -> B -> C, the worker killed during A
my $a = $node->safe_psql('postgres', q{
SELECT job_id FROM jobq.dispatch_chain('[
    {"job": "sleepy", "payload": {"name": "A"}, "tries": 3, "timeout": "10 min"},
    {"job": "link", "payload": {"name": "B"}},
    {"job": "link", "payload": {"name": "C"}}]')});
my $pid = worker_running_job($node, $a);
$node->safe_psql('postgres', "INSERT INTO go VALUES ('A')");
kill9($node, $pid);
wait_for($node, "SELECT count(*) = 3 FROM done WHERE name IN ('A', 'B', 'C')",
	'after kill -9 during link A the chain completes');
is($node->safe_psql('postgres',
		"SELECT string_agg(name, ',' ORDER BY at) FROM done WHERE name IN ('A', 'B', 'C')"),
	'A,B,C', 'each link ran once, in order');
is($node->safe_psql('postgres',
		"SELECT string_agg(name || '=' || n, ',' ORDER BY name) FROM"
		  . " (SELECT name, count(*) AS n FROM enqueued WHERE name IN ('A', 'B', 'C') GROUP BY name) s"),
	'A=1,B=1,C=1', 'B and C were enqueued exactly once');
ok($node->log_contains("was terminated by signal 9"), 'the server went through a crash restart');
$node->safe_psql('postgres', 'DROP TRIGGER log_enqueue ON jobq.jobs');
wait_workers($node, 8);

# ---- throttle: allow 5 starts every 2 s, 8 workers, 30 ready jobs
$node->safe_psql('postgres', q{
CREATE TABLE starts (at timestamptz);
CREATE FUNCTION throttled(p jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO starts VALUES (clock_timestamp()) $$;
SELECT jobq.register('throttled', middleware =>
    '[{"throttle": {"key": "api", "allow": 5, "every": "2 s"}}]');
SELECT count(jobq.dispatch('throttled', jsonb_build_object('n', g), tries => 1))
  FROM generate_series(1, 30) g;
});
wait_for($node, 'SELECT count(*) = 30 FROM starts', 'all 30 throttled jobs ran');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM jobq.jobs WHERE job = 'public.throttled'")
	  . '/' . $node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed'),
	'0/0', 'none left, none failed: a block does not use up an attempt (tries => 1)');
# The bound is on the times the limiter admitted the jobs; the handler
# records a little later (microseconds, more on a loaded machine), so the
# windows checked are 500 ms shorter than the throttle's 2 s (still far
# from what no limiter, or a fixed window with its boundary bursts, lets
# through: 8 workers start 8 jobs at once).
cmp_ok($node->safe_psql('postgres', q{
    SELECT max((SELECT count(*) FROM starts b
                 WHERE b.at >= a.at AND b.at < a.at + interval '1.5 s'))
      FROM starts a}),
	'<=', 5, 'no window saw more than 5 starts');

# ---- funnel: limit 1; two handlers with the same key never overlap
$node->safe_psql('postgres', q{
CREATE TABLE spans (name text, started timestamptz, ended timestamptz);
CREATE FUNCTION funneled(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    PERFORM pg_sleep(0.2);
    INSERT INTO spans VALUES (p->>'name', t0, clock_timestamp());
END $$;
SELECT jobq.register('funneled', middleware =>
    '[{"funnel": {"key": "one-at-a-time", "limit": 1, "release": "100 ms"}}]');
SELECT count(jobq.dispatch('funneled', jsonb_build_object('name', 'f' || g), tries => 1))
  FROM generate_series(1, 8) g;
});
wait_for($node, 'SELECT count(*) = 8 FROM spans', 'all 8 funneled jobs ran');
is($node->safe_psql('postgres', q{
    SELECT count(*) FROM spans a JOIN spans b ON a.name < b.name
     WHERE tstzrange(a.started, a.ended) && tstzrange(b.started, b.ended)}),
	'0', 'no two of them overlapped');

# ---- kill -9 of a funnel's holder frees its slot at once
$node->safe_psql('postgres', q{
CREATE FUNCTION held(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO spans VALUES (p->>'name', clock_timestamp(), NULL);
    IF NOT EXISTS (SELECT FROM go WHERE name = p->>'name') THEN
        PERFORM pg_sleep(300);
    END IF;
END $$;
SELECT jobq.register('held', middleware =>
    '[{"without_overlapping": {"key": "held", "release": "200 ms"}}]');
});
my $holder = $node->safe_psql('postgres',
	"SELECT jobq.dispatch('held', '{\"name\": \"holder\"}', tries => 2, timeout => '10 min')");
$pid = worker_running_job($node, $holder, 'held');
$node->safe_psql('postgres',
	"SELECT jobq.dispatch('held', '{\"name\": \"next\"}', timeout => '10 min')");
$node->safe_psql('postgres', "INSERT INTO go VALUES ('holder'), ('next')");
# the next one is blocked (released, so available later than it was
# dispatched) while the holder lives
wait_for($node,
	"SELECT available_at > created_at FROM jobq.jobs WHERE payload->>'name' = 'next'",
	'while the holder runs, the next job is blocked');
is($node->safe_psql('postgres', "SELECT count(*) FROM spans WHERE name = 'next'"),
	'0', 'and does not start');
my $killed_at = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
kill9($node, $pid);
wait_for($node, "SELECT count(*) = 1 FROM spans WHERE name = 'next'",
	'after kill -9 of the holder the next job runs');
# a slot with a time-to-live (Laravel's funnel: 60 s) would hold it far longer
cmp_ok($node->safe_psql('postgres',
		"SELECT extract(epoch FROM started - '$killed_at') FROM spans WHERE name = 'next'"),
	'<', 60, 'and it started within seconds of the kill (crash restart included)');
wait_for($node, "SELECT count(*) = 1 FROM spans WHERE name = 'holder'",
	'the killed holder is retried and completes');
wait_workers($node, 8);

# ... and so does pg_terminate_backend, without a crash restart
$holder = $node->safe_psql('postgres',
	"SELECT jobq.dispatch('held', '{\"name\": \"holder2\"}', tries => 2, timeout => '10 min')");
$pid = worker_running_job($node, $holder, 'held');
$node->safe_psql('postgres',
	"SELECT jobq.dispatch('held', '{\"name\": \"next2\"}', timeout => '10 min')");
$node->safe_psql('postgres', "INSERT INTO go VALUES ('holder2'), ('next2')");
wait_for($node,
	"SELECT available_at > created_at FROM jobq.jobs WHERE payload->>'name' = 'next2'",
	'the second holder blocks the next job');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
wait_for($node, "SELECT count(*) = 1 FROM spans WHERE name = 'next2'",
	'after pg_terminate_backend of the holder the next job runs');

$node->stop;
done_testing();
