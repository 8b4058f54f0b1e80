# The failure path with real workers: a job killed by its timeout on its
# last try, and kill -9 of the worker at each step of failing a job (in the
# handler, in the failure handler, at the failed record's insert).  Always
# exactly one of {job row, failed record}; the failure handler's effects
# commit exactly once; the handler never starts again.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JobqTest;

my $node = jobq_node('lifecycle');

# A step of the failure path waits while its job is "armed" (a row the test
# commits before dispatching and deletes after the kill), giving a window
# for kill -9: doomed (the handler) then raises; doomed_failed (its failure
# handler) records that it ran; slow_insert is a trigger on the failed
# store's insert.  The wait is polled, so the run after the crash restart
# goes on as soon as the test disarms it.  (A sequence cannot count across
# kill -9: an uncommitted nextval may be lost in the crash.)
$node->safe_psql('postgres', q{
CREATE TABLE fh_done (name text, sqlstate text, who text);
CREATE TABLE armed (name text, step text);
GRANT SELECT ON armed TO PUBLIC;
CREATE FUNCTION wait_if_armed(p jsonb, step text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 1200 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM public.armed a
                               WHERE a.name = p->>'name' AND a.step = wait_if_armed.step);
        PERFORM pg_sleep(0.25);
    END LOOP;
END $$;
CREATE ROLE clerk NOLOGIN;
GRANT INSERT ON fh_done TO clerk;
CREATE FUNCTION doomed(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.wait_if_armed(p, 'handler');
    RAISE EXCEPTION 'doomed %', p->>'name';
END $$;
CREATE FUNCTION doomed_failed(p jsonb, e jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.wait_if_armed(p, 'fh');
    INSERT INTO public.fh_done VALUES (p->>'name', e->>'sqlstate', current_user);
END $$;
CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.wait_if_armed(NEW.payload, 'insert');
    RETURN NEW;
END $$;
CREATE TRIGGER slow_insert BEFORE INSERT ON jobq.failed
    FOR EACH ROW EXECUTE FUNCTION slow_insert();
SELECT jobq.register('doomed', tries => 1, timeout => '10 min',
                     on_failure => 'doomed_failed');
CREATE FUNCTION slow(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('h_' || (p->>'name'));
    PERFORM pg_sleep(300);
END $$;
SELECT jobq.register('slow', tries => 1, timeout => '1 s', on_failure => 'doomed_failed');
GRANT USAGE ON SCHEMA jobq TO clerk;
});
wait_workers($node, 2);

sub dispatch
{
	my ($job, $name, $step, $opts) = @_;
	$node->safe_psql('postgres', "CREATE SEQUENCE h_$name; GRANT USAGE ON SEQUENCE h_$name TO clerk;"
		  . " INSERT INTO armed VALUES ('$name', '$step')");
	return $node->safe_psql('postgres',
		"SET ROLE clerk; SELECT jobq.dispatch('$job', '{\"name\": \"$name\", \"step\": \"$step\"}'"
		  . ($opts // '') . ")");
}

# exactly one of {job row, failed record}, and the failure handler's effects once
sub check_failed_once
{
	my ($id, $name, $what) = @_;
	wait_for($node, "SELECT count(*) = 1 FROM jobq.failed WHERE job_id = $id",
		"$what: the job is failed");
	is($node->safe_psql('postgres',
			"SELECT (SELECT count(*) FROM jobq.jobs WHERE id = $id) || '/' ||"
			  . " (SELECT count(*) FROM jobq.failed WHERE job_id = $id)"),
		'0/1', "$what: exactly one of job row and failed record");
	is($node->safe_psql('postgres', "SELECT count(*) || ' ' || min(who) FROM fh_done WHERE name = '$name'"),
		'1 clerk', "$what: the failure handler's effects committed once, as the job's role");
	is($node->safe_psql('postgres', "SELECT attempts FROM jobq.failed WHERE job_id = $id"),
		'1', "$what: no further attempt was made");
}

# a handler killed by its timeout on its last try
my $id = dispatch('slow', 'timeout', '');
check_failed_once($id, 'timeout', 'timeout on the last try');
is($node->safe_psql('postgres', "SELECT last_value FROM h_timeout"),
	'1', 'the timed-out handler never started again');
is($node->safe_psql('postgres',
		"SELECT sqlstate || ' ' || exception || ' ' || (failed_at - dispatched_at < interval '60 s')"
		  . " FROM jobq.failed WHERE job_id = $id"),
	'57014 job timed out after 1000 ms true', 'failed for its timeout, long before the handler would end');

# kill -9 while the worker sleeps at a step of the failure path
for my $step ('handler', 'fh', 'insert')
{
	my $name = "kill_$step";
	$id = dispatch('doomed', $name, $step);
	my $q = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'jobq worker'"
	  . " AND wait_event = 'PgSleep' AND query = 'jobq job $id: public.doomed'";
	# the failure handler and the insert come after the handler's error
	$node->poll_query_until('postgres', "SELECT EXISTS ($q)")
	  or die "job $id never reached step $step";
	my $pid = $node->safe_psql('postgres', $q);
	is($node->safe_psql('postgres',
			"SELECT (SELECT count(*) FROM jobq.jobs WHERE id = $id) || '/' ||"
			  . " (SELECT count(*) FROM jobq.failed WHERE job_id = $id)"),
		'1/0', "before kill -9 at step $step: the job row only");
	kill9($node, $pid);
	# let the run after the crash restart through
	$node->poll_query_until('postgres',
		"WITH d AS (DELETE FROM armed WHERE name = '$name' RETURNING 1) SELECT true")
	  or die "could not disarm $name";
	check_failed_once($id, $name, "kill -9 at step $step");
	is($node->safe_psql('postgres', "SELECT sqlstate FROM jobq.failed WHERE job_id = $id"),
		'JQ001',
		"kill -9 at step $step: recorded as a lost worker by recovery");
	wait_workers($node, 2);
}

# the crash path follows the same rule: with retry_until ahead, tries => 1
# does not fail a job whose worker was lost; the lost attempt counts
# towards max_exceptions, so the next error (the 2nd failed attempt) fails it
$id = dispatch('doomed', 'deadline', 'handler',
	", tries => 1, retry_until => now() + interval '1 hour', max_exceptions => 2");
my $q = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'jobq worker'"
  . " AND wait_event = 'PgSleep' AND query = 'jobq job $id: public.doomed'";
$node->poll_query_until('postgres', "SELECT EXISTS ($q)") or die "job $id never started";
kill9($node, $node->safe_psql('postgres', $q));
$node->poll_query_until('postgres',
	"WITH d AS (DELETE FROM armed WHERE name = 'deadline' RETURNING 1) SELECT true")
  or die "could not disarm";
wait_for($node, "SELECT count(*) = 1 FROM jobq.failed WHERE job_id = $id",
	'retry_until and max_exceptions after kill -9: the job is failed');
is($node->safe_psql('postgres',
		"SELECT attempts || ' ' || sqlstate || ' ' || exception FROM jobq.failed WHERE job_id = $id"),
	'2 P0001 doomed deadline',
	'retried after the lost attempt despite tries => 1, failed by its 2nd failed attempt');
is($node->safe_psql('postgres', "SELECT count(*) FROM fh_done WHERE name = 'deadline'"),
	'1', 'its failure handler ran once');

$node->stop;
done_testing();
