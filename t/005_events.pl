# Job events over LISTEN/NOTIFY, seen by a real listening client: the
# exact sequence for a job that succeeds, one retried then succeeding, one
# failing for good; releases, quiet deletes, middleware releases, external
# jobs, chain links; nothing for a rolled-back dispatch; bounded size with
# long multibyte error messages; jobq.events = failures; and a notification
# queue over jobq.events_queue_limit stops events, never jobs.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Encode qw(decode);
use Time::HiRes qw(usleep);
use JobqTest;

my $node = jobq_node('events', "jobq.events = 'all'\n");

$node->safe_psql('postgres', q{
CREATE TABLE done (n int);
CREATE SEQUENCE flaky_runs;
CREATE FUNCTION ok(p jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO done VALUES ((p->>'n')::int) $$;
-- fails on its first run only (a sequence is not rolled back)
CREATE FUNCTION flaky(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('flaky_runs') = 1 THEN
        RAISE EXCEPTION 'flaky failure' USING ERRCODE = 'P0001';
    END IF;
    INSERT INTO done VALUES ((p->>'n')::int);
END $$;
CREATE FUNCTION slow(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.02);
    INSERT INTO done VALUES ((p->>'n')::int);
END $$;
CREATE FUNCTION failing(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'always fails' USING ERRCODE = '22012';
END $$;
-- an error message of 30,000 bytes of multibyte text and control characters
CREATE FUNCTION wordy(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', repeat(E'\u00e9\u20ac\u0001"\\\\', 4000);
END $$;
});
wait_workers($node, 2);

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN jobq');

# every notification received so far, in order, as [raw payload, decoded]
my @events;

sub collect
{
	my $out = $listener->query_safe('SELECT 1');
	while ($out =~ /Asynchronous notification "jobq" with payload "(.*)" received from server process/g)
	{
		my $raw = $1;
		push @events, [ $raw, JSON::PP->new->utf8->decode($raw) ];
	}
}

# events of job $id, waiting until one of them is a $last event
sub events_of
{
	my ($id, $last) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	for (;;)
	{
		collect();
		my @mine = map { $_->[1] } grep { $_->[1]{id} == $id } @events;
		return @mine if grep { $_->{event} eq $last } @mine;
		if (time > $deadline)
		{
			diag("timed out waiting for $last of job $id");
			return @mine;
		}
		usleep(50_000);
	}
}

sub sequence
{
	return join ' ', map { "$_->{event}:$_->{attempt}" } @_;
}

# a job that succeeds
my $id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('ok', '{"n": 1}', queue => 'default')});
my @ev = events_of($id, 'processed');
is(sequence(@ev), 'queued:0 processing:1 processed:1', 'a job that succeeds');
is_deeply([ map { "$_->{queue}/$_->{job}" } @ev ], [ ('default/public.ok') x 3 ],
	'each event names the queue and the job');
ok(!(grep { exists $_->{payload} } @ev), 'never the payload');

# one retried, then succeeding
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('flaky', '{"n": 2}', tries => 3)});
@ev = events_of($id, 'processed');
is(sequence(@ev), 'queued:0 processing:1 exception:1 processing:2 processed:2',
	'a job retried, then succeeding');
is("$ev[2]{sqlstate} $ev[2]{message}", 'P0001 flaky failure', 'the exception event has the error');

# one failing for good
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('failing', '{"n": 3}', tries => 2)});
@ev = events_of($id, 'failed');
is(sequence(@ev), 'queued:0 processing:1 exception:1 processing:2 failed:2',
	'a job failing for good');
is("$ev[4]{sqlstate} $ev[4]{message}", '22012 always fails', 'the failed event has the error');
is($node->safe_psql('postgres', "SELECT count(*) FROM jobq.failed WHERE job_id = $id"), '1',
	'it is in the failed store');

# slow jobs dispatched together: a worker reserves them as a batch, runs the
# first and hands the others back; each job still gets exactly one
# processing event per attempt, announced when it is about to run
my @ids = split /\n/, $node->safe_psql('postgres',
	q{SELECT jobq.dispatch('slow', jsonb_build_object('n', 100 + g)) FROM generate_series(1, 6) g});
foreach my $slow (@ids)
{
	is(sequence(events_of($slow, 'processed')), 'queued:0 processing:1 processed:1',
		"slow job $slow of a batch");
}

# a dispatch that rolls back sends nothing
my $rolled_back = $node->safe_psql('postgres', q{
BEGIN;
SELECT jobq.dispatch('ok', '{"n": 4}');
ROLLBACK;
});
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('ok', '{"n": 5}')});
events_of($id, 'processed');
is(scalar(grep { $_->[1]{id} == $rolled_back } @events), 0,
	'no event for a job whose dispatch rolled back');

# a retry of a failed job is queued again
my ($failed_id) = $node->safe_psql('postgres',
	"SELECT id FROM jobq.failed WHERE job_id = (SELECT max(job_id) FROM jobq.failed)");
$id = $node->safe_psql('postgres', "SELECT job_id FROM jobq.retry($failed_id)");
@ev = events_of($id, 'failed');
is(sequence(@ev), 'queued:0 processing:1 exception:1 processing:2 failed:2',
	'a retried failed job is queued again, with its tries');

# long multibyte messages are cut on a character boundary, well under 8000 bytes
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('wordy', '{}')});
events_of($id, 'failed');
my ($wordy) = grep { $_->[1]{id} == $id && $_->[1]{event} eq 'failed' } @events;
cmp_ok(length($wordy->[0]), '<', 4000, 'the notification stays well under 8000 bytes');
my $pattern = decode('UTF-8', "\xc3\xa9\xe2\x82\xac\x01\"\\");
my $msg = $wordy->[1]{message};
ok(length($msg) > 50 && ($pattern x 4000) =~ /^\Q$msg\E/,
	'the message is a prefix of the error, cut between characters');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM jobq.failed WHERE job_id = $id AND length(exception) > 1000"),
	'1', 'the job with odd bytes in its error is failed once, its error kept');

# the outcomes of the lifecycle, middleware, chains and the SQL consumer
# API, and every way a job is inserted, send their events
$node->safe_psql('postgres', q{
CREATE SEQUENCE gate_calls;
CREATE FUNCTION rel(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (jobq.current_job()->>'attempt')::int = 1 THEN
        PERFORM jobq.release('0');
    END IF;
    INSERT INTO done VALUES ((p->>'n')::int);
END $$;
CREATE FUNCTION gone(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'no such row' USING ERRCODE = 'P0002';
END $$;
-- middleware that deletes the jobs that ask for it, holds the others back
-- once (its first call), then lets them run
CREATE FUNCTION gate(ctx jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT CASE WHEN ctx->'payload' ? 'delete'
                THEN '{"action": "delete"}'::jsonb
                WHEN nextval('gate_calls') = 1
                THEN '{"action": "release", "delay": "0"}'::jsonb
                ELSE '{"action": "run"}'::jsonb END $$;
CREATE FUNCTION gated(p jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO done VALUES ((p->>'n')::int) $$;
SELECT jobq.register('gone', delete_when_missing_models => true);
SELECT jobq.register('gated', middleware => '[{"call": "public.gate"}]');
SELECT jobq.register('ext_job', tries => 1, external => true);
});
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('rel', '{"n": 30}', tries => 2)});
is(sequence(events_of($id, 'processed')),
	'queued:0 processing:1 released:1 processing:2 processed:2',
	'a job that releases itself is released, then processed');
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('gone', '{}')});
is(sequence(events_of($id, 'deleted')), 'queued:0 processing:1 deleted:1',
	'a job whose data is missing is deleted quietly');
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('gated', '{"n": 31}')});
is(sequence(events_of($id, 'processed')),
	'queued:0 processing:1 released:0 processing:1 processed:1',
	'a job held back by middleware is released (its attempt refunded)');
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('gated', '{"delete": true}')});
is(sequence(events_of($id, 'deleted')), 'queued:0 processing:1 deleted:1',
	'a job deleted by its middleware is deleted, not processed');
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('ext_job', '{}')});
$node->safe_psql('postgres', q{SELECT jobq.complete(id, token) FROM jobq.reserve('{default}')});
is(sequence(events_of($id, 'processed')), 'queued:0 processing:1 processed:1',
	'an external job completed by a consumer is processed');
# a consumer's lease that expires is a failed attempt, retried by the next
# reservation
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('ext_job', '{}', tries => 2)});
$node->safe_psql('postgres',
	q{SELECT jobq.extend(id, token, '1 ms') FROM jobq.reserve('{default}')});
usleep(20_000);
$node->safe_psql('postgres', q{SELECT jobq.complete(id, token) FROM jobq.reserve('{default}')});
@ev = events_of($id, 'processed');
is(sequence(@ev), 'queued:0 processing:1 exception:1 processing:2 processed:2',
	'an expired lease is an exception, then the next lease processes it');
is($ev[2]{sqlstate}, 'JQ703', 'with the expired lease\'s SQLSTATE');
# a chain: its second link is queued when the first completes (ids are
# taken from jobq.jobs_id_seq one by one, and nothing else dispatches now)
$id = $node->safe_psql('postgres',
	q{SELECT job_id FROM jobq.dispatch_chain('[{"job": "ok", "payload": {"n": 32}}, {"job": "ok", "payload": {"n": 33}}]')});
is(sequence(events_of($id, 'processed')), 'queued:0 processing:1 processed:1',
	'the first link of a chain');
is(sequence(events_of($id + 1, 'processed')), 'queued:0 processing:1 processed:1',
	'the next link of a chain is queued');
# a failed chain link retried with retry_chain is queued again
$id = $node->safe_psql('postgres',
	q{SELECT job_id FROM jobq.dispatch_chain('[{"job": "failing", "tries": 1}, {"job": "ok", "payload": {"n": 34}}]')});
events_of($id, 'failed');
$id = $node->safe_psql('postgres',
	"SELECT jobq.retry_chain(id) FROM jobq.failed WHERE job_id = $id");
is(sequence(events_of($id, 'failed')), 'queued:0 processing:1 failed:1',
	'a chain link retried with retry_chain is queued');

# jobq.events = failures: only exception and failed events
$node->safe_psql('postgres', "ALTER SYSTEM SET jobq.events = 'failures'");
$node->reload;
wait_for($node, "SELECT current_setting('jobq.events') = 'failures'", 'setting reloaded');
my $quiet = $node->safe_psql('postgres', q{SELECT jobq.dispatch('ok', '{"n": 6}')});
wait_for($node, "SELECT count(*) = 1 FROM done WHERE n = 6", 'the quiet job ran');
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('failing', '{}')});
@ev = events_of($id, 'failed');
is(sequence(@ev), 'failed:1', 'with failures, a failing job sends failed only');
is(scalar(grep { $_->[1]{id} == $quiet } @events), 0, 'and a succeeding job nothing');

# with failures, SQL consumers are still woken when an external job is
# queued: by its dispatch, and by a retry of its failed record
sub wakeups
{
	collect();
	return scalar(grep {
			!exists $_->[1]{id} && $_->[1]{event} eq 'queued'
			  && $_->[1]{job} eq 'ext_job' && $_->[1]{queue} eq 'ext'
	} @events);
}
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('ext_job', '{}', queue => 'ext')});
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
usleep(50_000) while wakeups() < 1 && time < $deadline;
is(wakeups(), 1, 'dispatching an external job wakes the consumers');
$node->safe_psql('postgres',
	q{SELECT jobq.fail(id, token, '"no"') FROM jobq.reserve('{ext}')});
$node->safe_psql('postgres', "SELECT * FROM jobq.retry_all('ext')");
usleep(50_000) while wakeups() < 2 && time < $deadline;
is(wakeups(), 2, 'retrying a failed external job wakes the consumers');

# over jobq.events_queue_limit no event is sent, jobs still run, it is logged
$node->safe_psql('postgres', "ALTER SYSTEM SET jobq.events = 'all'");
$node->safe_psql('postgres', "ALTER SYSTEM SET jobq.events_queue_limit = 0");
$node->reload;
wait_for($node, "SELECT current_setting('jobq.events_queue_limit') = '0'", 'limit reloaded');
my $log_offset = -s $node->logfile;
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('ok', '{"n": 7}')});
wait_for($node, "SELECT count(*) = 1 FROM done WHERE n = 7", 'the job runs without events');
wait_for($node, "SELECT count(*) = 0 FROM jobq.jobs WHERE id = $id", 'and completes');
$node->safe_psql('postgres', "ALTER SYSTEM RESET jobq.events_queue_limit");
$node->reload;
wait_for($node, "SELECT current_setting('jobq.events_queue_limit') = '0.5'", 'limit back');
my $after = $node->safe_psql('postgres', q{SELECT jobq.dispatch('ok', '{"n": 8}')});
events_of($after, 'processed');
is(scalar(grep { $_->[1]{id} == $id } @events), 0, 'no event while over the limit');
ok($node->log_contains('job events are not being sent', $log_offset), 'and that was logged');

$listener->quit;
$node->stop;
done_testing();
