# The SQL consumer API through a real PgBouncer in transaction pooling
# mode: claims live in rows, not in session state, so a reservation made
# over one client connection is completed over another, and jobq work
# processes sharing a single server connection drain a queue.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JobqTest;

my $pgbouncer;
for my $d (split(/:/, $ENV{PATH} // ''), '/usr/sbin', '/usr/local/sbin', '/usr/bin')
{
	if (-x "$d/pgbouncer")
	{
		$pgbouncer = "$d/pgbouncer";
		last;
	}
}
plan skip_all => 'pgbouncer is not installed (Debian package pgbouncer; scripts/install-deps.sh installs it)'
  unless $pgbouncer;

my $node = jobq_node('pgbouncer');
my $dir = PostgreSQL::Test::Utils::tempdir;
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $user = $node->safe_psql('postgres', 'SELECT current_user');

open(my $fh, '>', "$dir/users.txt") or die;
print $fh qq{"$user" ""\n};
close($fh);
open($fh, '>', "$dir/pgbouncer.ini") or die;
print $fh <<"EOF";
[databases]
postgres = host=@{[ $node->host ]} port=@{[ $node->port ]} dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
default_pool_size = 1
max_client_conn = 20
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
close($fh);

my ($bout, $berr) = ('', '');
my $bouncer = IPC::Run::start([ $pgbouncer, "$dir/pgbouncer.ini" ],
	'>', \$bout, '2>', \$berr);
my $via = "host=127.0.0.1 port=$port dbname=postgres user=$user";

# one statement over a new client connection through PgBouncer
sub via_bouncer
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $via,
			'-c', $sql ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	chomp $out;
	return ($? >> 8, $out, $err);
}

my $up = 0;
for (1 .. 300)
{
	my ($rc) = via_bouncer('SELECT 1');
	if ($rc == 0)
	{
		$up = 1;
		last;
	}
	select(undef, undef, undef, 0.1);
}
ok($up, 'PgBouncer accepts connections') or BAIL_OUT("pgbouncer did not start: $berr");

$node->safe_psql('postgres', q{SELECT jobq.register('ext', external => true, tries => 2)});
my $id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('ext', '{"n": 1}')});

# reserve over one client connection, extend and complete over others
my ($rc, $out, $err) = via_bouncer(q{SELECT id || ' ' || token FROM jobq.reserve('{default}', '1 hour')});
is($rc, 0, 'reserve through PgBouncer');
my ($rid, $token) = split / /, $out;
is($rid, $id, 'the job is reserved');
($rc, $out) = via_bouncer(q{SELECT count(*) FROM jobq.reserve('{default}')});
is($out, '0', 'nobody else gets it, whatever server connection serves them');
($rc, $out) = via_bouncer("SELECT jobq.extend($id, $token, '1 hour') > now()");
is($out, 't', 'extend over another client connection');
($rc, $out, $err) = via_bouncer("SELECT jobq.complete($id, $token)");
is($rc, 0, 'complete over another client connection');
($rc, $out, $err) = via_bouncer("SELECT jobq.complete($id, $token)");
isnt($rc, 0, 'a second complete fails');
like($err, qr/reservation token $token of job $id is no longer valid/,
	'the stale token is rejected');

# a stale token after the lease expired and another consumer reserved it
$id = $node->safe_psql('postgres', q{SELECT jobq.dispatch('ext', '{"n": 2}')});
($rc, $out) = via_bouncer(q{SELECT token FROM jobq.reserve('{default}', '1 s')});
my $old = $out;
ok( $node->poll_query_until('postgres',
		"SELECT available_at < now() FROM jobq.jobs WHERE id = $id"),
	'the lease expires');
($rc, $out) = via_bouncer(q{SELECT attempt FROM jobq.reserve('{default}', '1 hour')});
is($out, '2', 'another consumer reserves it: attempt 2');
($rc, $out, $err) = via_bouncer("SELECT jobq.extend($id, $old, '1 hour')");
like($err, qr/was reserved again after this lease expired/, 'the late extend is rejected');
$node->safe_psql('postgres', 'DELETE FROM jobq.jobs');

# two jobq work processes sharing one server connection drain a queue
my $n = 300;
my $ran = "$dir/ran.txt";
$node->safe_psql('postgres',
	"SELECT jobq.dispatch('ext', jsonb_build_object('n', g)) FROM generate_series(1, $n) g");
my @h = map {
	my ($o, $e) = ('', '');
	IPC::Run::start(
		[
			'jobq', 'work', '-d', $via, '--exec', "echo \$JOBQ_JOB_ID >> $ran",
			'--stop-when-empty', '--quiet', '--sleep', '0.2'
		],
		'>', \$o, '2>', \$e, IPC::Run::timeout(300));
} 1 .. 2;
my @codes = map { $_->finish; $? >> 8 } @h;
is_deeply(\@codes, [ 0, 0 ], 'the workers stopped when the queue was empty');
open($fh, '<', $ran) or die;
chomp(my @ids = <$fh>);
close($fh);
my %seen = map { $_ => 1 } @ids;
is(scalar(@ids), $n, "$n commands ran");
is(scalar(keys %seen), $n, 'each job exactly once');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.jobs'), '0', 'no job left');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jobq.failed'), '0', 'none failed');
$bouncer->signal('TERM');
$bouncer->finish;
$node->stop;
done_testing();
