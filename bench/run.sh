#!/usr/bin/env bash
# jobq benchmarks: one command that starts its own throwaway PostgreSQL
# (fsync and synchronous_commit on), measures every figure of the
# performance issue next to pgbench baselines taken in the same run, and
# prints a table of figures and ratios.
#
#   bash bench/run.sh            standard sizes (about 10-15 minutes)
#   bash bench/run.sh --quick    tiny sizes: a smoke test that the harness works
#   BENCH_CHURN=1000000 bash bench/run.sh    any size variable overridden
#
# Run as root with JOBQ_SANDBOX=DIR (it builds and installs jobq into a
# private copy of PostgreSQL there first, see scripts/sandbox.sh) or as a
# user that can run PostgreSQL with jobq installed.  Results are also written to
# bench/results/<time>.txt.  Absolute numbers depend on the machine; the
# ratios to the pgbench figures are what compares across machines.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-standard}

case "$mode" in
	--quick)
		BURN=2000 BURN_SMALL=1000 DISPATCH_SECS=2 BULK=5000 LATENCY_N=50
		BACKLOG=20000 CHURN=20000 MEMORY_JOBS=20000 DEL1_TX=200 DEL100_TX=100
		RR_SECS=2 ;;
	standard|--standard)
		BURN=100000 BURN_SMALL=20000 DISPATCH_SECS=10 BULK=100000 LATENCY_N=1000
		BACKLOG=1000000 CHURN=10000000 MEMORY_JOBS=1000000 DEL1_TX=1000 DEL100_TX=2500
		RR_SECS=60 ;;
	*) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac
# any size can be overridden from the environment, e.g. BENCH_CHURN=1000000
for v in BURN BURN_SMALL DISPATCH_SECS BULK LATENCY_N BACKLOG CHURN MEMORY_JOBS DEL1_TX DEL100_TX RR_SECS; do
	o=BENCH_$v
	[ -n "${!o:-}" ] && printf -v "$v" '%s' "${!o}"
done

# With JOBQ_SANDBOX=DIR (as scripts/test.sh) jobq is built and installed
# into a private copy of PostgreSQL in DIR, never into the system's; a
# PG_CONFIG given in the environment is honoured the same way.
if [ -n "${JOBQ_SANDBOX:-}" ]; then
	PG_CONFIG=$("$here/scripts/sandbox.sh" "$JOBQ_SANDBOX")
fi
PG_CONFIG=${PG_CONFIG:-pg_config}
export PG_CONFIG
if [ "$(id -u)" -eq 0 ]; then
	if [ "$PG_CONFIG" = pg_config ] && [ -z "${JOBQ_BENCH_SYSTEM:-}" ]; then
		echo "bench/run.sh: as root, set JOBQ_SANDBOX=DIR (a private copy of PostgreSQL)" >&2
		echo "  or JOBQ_BENCH_SYSTEM=1 to install jobq into the system's PostgreSQL" >&2
		exit 2
	fi
	"$here/scripts/install-deps.sh"
	make -C "$here" -s >/dev/null
	make -C "$here" -s install >/dev/null
	as_pg() { runuser -u postgres -- "$@"; }
else
	as_pg() { "$@"; }
fi
bindir=$("$PG_CONFIG" --bindir)

dir=$(mktemp -d /tmp/jobq-bench.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
port=$(( 20000 + RANDOM % 20000 ))
db=jobq_bench
cleanup()
{
	as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT

q() { as_pg "$bindir/psql" -X -q -At -h "$dir" -p "$port" -d $db -v ON_ERROR_STOP=1 -c "$1"; }
pgb() { as_pg "$bindir/pgbench" -h "$dir" -p "$port" -n "$@" $db 2>&1; }
now() { date +%s.%N; }

as_pg "$bindir/initdb" -D "$dir/data" -A trust >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
shared_preload_libraries = 'jobq'
jobq.database = '$db'
jobq.workers = 2
jobq.queues = 'default'
max_worker_processes = 16
max_connections = 100
shared_buffers = 1GB
max_wal_size = 4GB
checkpoint_timeout = 30min
track_commit_timestamp = on
fsync = on
synchronous_commit = on
CONF
as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
as_pg "$bindir/createdb" -h "$dir" -p "$port" $db
as_pg "$bindir/psql" -X -q -h "$dir" -p "$port" -d $db -v ON_ERROR_STOP=1 -f "$here/bench/setup.sql" >/dev/null

results=()
report() { results+=("$(printf '%-58s %14s   %s' "$1" "$2" "${3:-}")"); printf '%-58s %14s   %s\n' "$1" "$2" "${3:-}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# workers idle on a queue that nothing is dispatched to, until a run starts
park_workers() { q "ALTER SYSTEM SET jobq.queues = 'parked'"; q "SELECT pg_reload_conf()" >/dev/null; sleep 0.5; }
serve() { q "ALTER SYSTEM SET jobq.queues = '$1'"; q "SELECT pg_reload_conf()" >/dev/null; }
wait_workers() { until [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'jobq worker'")" -ge 2 ]; do sleep 0.1; done; }

# Is queue 'burn' done (no job due or running)?  Asked so that the ready and
# reservations indexes answer: with a million delayed jobs present, a
# sequential scan would take a core away from the workers at every poll.
burn_done="SELECT NOT EXISTS (SELECT FROM jobq.jobs WHERE queue = 'burn' AND reserved_by IS NULL AND NOT external AND available_at <= now())
               AND NOT EXISTS (SELECT FROM jobq.jobs WHERE reserved_by IS NOT NULL AND queue = 'burn')"

# burn-down: jobs/s for N pre-dispatched jobs of a handler on queue 'burn'
burn_down()
{
	local n=$1 handler=$2 t0 t1
	park_workers
	q "SELECT count(*) FROM jobq.dispatch_many('$handler', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, $n) g), queue => 'burn')" >/dev/null
	q "VACUUM ANALYZE jobq.jobs" >/dev/null
	t0=$(now)
	serve burn
	until [ "$(q "$burn_done")" = t ]; do sleep 0.02; done
	t1=$(now)
	awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}

echo "== jobq benchmark ($mode): $(nproc) cores, PostgreSQL $(q 'SHOW server_version'), fsync on"
wait_workers

# ---- baselines
q "INSERT INTO bench.del SELECT g, 'default', '{\"n\": 1}' FROM generate_series(1, $(( DEL100_TX * 4 * 100 + DEL1_TX * 32 + 1000 ))) g" >/dev/null
q "VACUUM ANALYZE bench.del" >/dev/null
cat > "$dir/del1.sql" <<'SQL'
DELETE FROM bench.del WHERE id = (SELECT nextval('bench.del1_seq') + 100000000);
SQL
cat > "$dir/del100.sql" <<'SQL'
WITH k AS (SELECT nextval('bench.del100_seq') * 100 AS b) DELETE FROM bench.del USING k WHERE id >= k.b AND id < k.b + 100;
SQL
# the single deletes take the keys above what the set deletes use
q "SELECT setval('bench.del1_seq', 1)" >/dev/null
q "UPDATE bench.del SET id = id + 100000000 WHERE id > $(( DEL100_TX * 4 * 100 + 200 ))" >/dev/null
q "SELECT setval('bench.del1_seq', $(( DEL100_TX * 4 * 100 + 200 )))" >/dev/null
q "VACUUM ANALYZE bench.del" >/dev/null
chmod 644 "$dir"/*.sql
del1=$(pgb -c 32 -j 2 -t "$DEL1_TX" -f "$dir/del1.sql" | awk '/^tps/ { printf "%.0f", $3 }')
report "pgbench: 1 pk DELETE per tx, 32 clients (tx/s)" "$del1"
del100=$(pgb -c 4 -j 2 -t "$DEL100_TX" -f "$dir/del100.sql" | awk '/^tps/ { printf "%.0f", $3 * 100 }')
report "pgbench: DELETE of 100 pks per tx, 4 clients (rows/s)" "$del100"

# ---- burn-down, empty table
for events in $(q "SELECT CASE WHEN EXISTS (SELECT FROM pg_settings WHERE name = 'jobq.events') THEN 'none all' ELSE 'default' END"); do
	if [ "$events" != default ]; then
		q "ALTER SYSTEM SET jobq.events = '$events'" >/dev/null
		q "SELECT pg_reload_conf()" >/dev/null
	fi
	small=$(burn_down "$BURN_SMALL" bench.noop)
	report "burn-down of $BURN_SMALL no-op jobs, events=$events (jobs/s)" "$small" "x$(ratio "$small" "$del100") of set-delete"
	burn=$(burn_down "$BURN" bench.noop)
	report "burn-down of $BURN no-op jobs, events=$events (jobs/s)" "$burn" "x$(ratio "$burn" "$del100") of set-delete; target >= 0.30 and 200000"
done
burn_empty=$burn

# ---- latency of effects, under the same load
q "TRUNCATE bench.effects" >/dev/null
burn_down "$BURN_SMALL" bench.effect >/dev/null
eff=$(q "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY d)::numeric, 3) || ' / ' ||
                round(percentile_cont(0.99) WITHIN GROUP (ORDER BY d)::numeric, 3) || ' / ' || round(max(d)::numeric, 3)
           FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - returned) * 1000 AS d FROM bench.effects) s")
report "effects committed after handler returned p50/p99/max (ms)" "$eff" "target max <= 10"

# ---- dispatch
park_workers
cat > "$dir/dispatch.sql" <<'SQL'
SELECT jobq.dispatch('bench.noop', '{"n": 1}', queue => 'nobody');
SQL
cat > "$dir/insert.sql" <<'SQL'
INSERT INTO bench.plain (queue, job, payload, owner, available_at, created_at) VALUES ('nobody', 'bench.noop', '{"n": 1}', current_user::regrole, clock_timestamp(), clock_timestamp());
SQL
chmod 644 "$dir"/*.sql
ins=$(pgb -c 4 -j 2 -T "$DISPATCH_SECS" -f "$dir/insert.sql" | awk '/^tps/ { printf "%.0f", $3 }')
report "plain INSERT of a job-shaped row, 4 clients (rows/s)" "$ins"
q "TRUNCATE bench.plain" >/dev/null
t0=$(now)
q "INSERT INTO bench.plain (queue, job, payload, owner, available_at, created_at)
   SELECT 'nobody', 'bench.noop', jsonb_build_object('n', g), current_user::regrole, clock_timestamp(), clock_timestamp()
     FROM generate_series(1, $BULK) g" >/dev/null
t1=$(now)
bulk_ins=$(awk -v n="$BULK" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
report "plain INSERT ... SELECT of $BULK job-shaped rows (rows/s)" "$bulk_ins" "baseline"
# dispatch sends a "queued" event per job with events = all: both settings
for events in none all; do
	q "ALTER SYSTEM SET jobq.events = '$events'" >/dev/null
	q "SELECT pg_reload_conf()" >/dev/null
	dis=$(pgb -c 4 -j 2 -T "$DISPATCH_SECS" -f "$dir/dispatch.sql" | awk '/^tps/ { printf "%.0f", $3 }')
	report "jobq.dispatch, one per statement, 4 clients, events=$events (jobs/s)" "$dis" "x$(ratio "$dis" "$ins") of INSERT; target >= 0.8"
	q "DELETE FROM jobq.jobs WHERE queue = 'nobody'" >/dev/null
	t0=$(now)
	q "SELECT count(*) FROM jobq.dispatch_many('bench.noop', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, $BULK) g), queue => 'nobody')" >/dev/null
	t1=$(now)
	bulk=$(awk -v n="$BULK" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
	report "bulk: jobq.dispatch_many of $BULK payloads, events=$events (jobs/s)" "$bulk" "x$(ratio "$bulk" "$bulk_ins") of INSERT ... SELECT; target >= 300000"
	q "DELETE FROM jobq.jobs WHERE queue = 'nobody'" >/dev/null
done
q "DELETE FROM jobq.jobs WHERE queue = 'nobody'" >/dev/null
q "VACUUM jobq.jobs" >/dev/null

# ---- idle latency
serve default
wait_workers
gcc -O2 -o "$dir/latency" "$here/bench/latency.c" -I"$("$PG_CONFIG" --includedir)" -L"$("$PG_CONFIG" --libdir)" -lpq
lat=$(as_pg "$dir/latency" "host=$dir port=$port dbname=$db" "$LATENCY_N")
report "idle latency commit -> handler start p50/p90/p99/max (ms)" "$(echo "$lat" | awk '{ printf "%s / %s / %s / %s", $1, $2, $3, $4 }')" "target p50 <= 0.3, p99 <= 2"

# ---- backlog: delayed jobs and failed records present
q "INSERT INTO jobq.jobs (queue, job, payload, owner, available_at, created_at)
   SELECT 'burn', 'bench.noop', '{}', 'postgres', now() + interval '1 day', now() FROM generate_series(1, $BACKLOG)" >/dev/null
q "INSERT INTO jobq.failed (job_id, queue, job, payload, owner, attempts, dispatched_at, exception, sqlstate, error)
   SELECT g, 'burn', 'bench.noop', '{}', 'postgres', 1, now(), 'failed', 'P0001', '{}' FROM generate_series(1, $BACKLOG) g" >/dev/null
q "VACUUM ANALYZE jobq.jobs" >/dev/null
park_workers
q "SELECT count(*) FROM jobq.dispatch_many('bench.noop', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, $BURN) g), queue => 'burn')" >/dev/null
t0=$(now)
serve burn
until [ "$(q "$burn_done")" = t ]; do sleep 0.02; done
t1=$(now)
backlog=$(awk -v n="$BURN" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
report "burn-down of $BURN with $BACKLOG delayed + $BACKLOG failed present (jobs/s)" "$backlog" "x$(ratio "$backlog" "$burn_empty") of empty; target >= 0.8"
q "DELETE FROM jobq.jobs" >/dev/null
q "TRUNCATE jobq.failed" >/dev/null
q "VACUUM ANALYZE jobq.jobs" >/dev/null

# ---- memory of a worker over many jobs
serve default
wait_workers
rss() { for p in $(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'jobq worker' ORDER BY pid"); do awk '/^RssAnon/ { print $2 }' "/proc/$p/status"; done | sort -n | tail -1; }
q "SELECT count(jobq.dispatch('bench.noop', '{}')) FROM generate_series(1, 1000)" >/dev/null
until [ "$(q "SELECT NOT EXISTS (SELECT FROM jobq.jobs)")" = t ]; do sleep 0.05; done
before=$(rss)
left=$MEMORY_JOBS
while [ "$left" -gt 0 ]; do
	chunk=$(( left < 100000 ? left : 100000 ))
	q "SELECT count(*) FROM jobq.dispatch_many('bench.noop', array_fill('{}'::jsonb, ARRAY[$chunk]))" >/dev/null
	until [ "$(q "SELECT count(*) < 20000 FROM jobq.jobs")" = t ]; do sleep 0.05; done
	left=$(( left - chunk ))
done
until [ "$(q "SELECT NOT EXISTS (SELECT FROM jobq.jobs)")" = t ]; do sleep 0.05; done
after=$(rss)
report "worker private memory before/after $MEMORY_JOBS jobs (kB)" "$before / $after" "growth $(( after - before )) kB; target < 5120"

# ---- churn: jobs back to back, with a REPEATABLE READ transaction held open
q "VACUUM jobq.jobs" >/dev/null
dispatched=0 done_prev=0 t_prev=$(now) first="" last="" rr_pid="" slowest=""
rr_started=0 size_before_rr=n/a
start=$(now)
while [ "$dispatched" -lt "$CHURN" ] || [ "$(q "SELECT EXISTS (SELECT FROM jobq.jobs)")" = t ]; do
	waiting=$(q "SELECT count(*) FROM jobq.jobs")
	if [ "$waiting" -lt 50000 ] && [ "$dispatched" -lt "$CHURN" ]; then
		chunk=$(( CHURN - dispatched < 50000 ? CHURN - dispatched : 50000 ))
		q "SELECT count(*) FROM jobq.dispatch_many('bench.noop', array_fill('{}'::jsonb, ARRAY[$chunk]))" >/dev/null
		dispatched=$(( dispatched + chunk ))
		waiting=$(( waiting + chunk ))
	fi
	processed=$(( dispatched - waiting ))
	t=$(now)
	if awk -v a="$t_prev" -v b="$t" 'BEGIN { exit !(b - a >= 10) }'; then
		rate=$(awk -v n=$(( processed - done_prev )) -v a="$t_prev" -v b="$t" 'BEGIN { printf "%.0f", n / (b - a) }')
		[ -z "$first" ] && first=$rate
		last=$rate
		[ -n "$rr_pid" ] && kill -0 "$rr_pid" 2>/dev/null && slowest=${slowest:-$rate} && [ "$rate" -lt "$slowest" ] && slowest=$rate
		done_prev=$processed t_prev=$t
		# hold a REPEATABLE READ snapshot open once the run is warm
		if [ "$rr_started" = 0 ] && [ "$processed" -gt $(( CHURN / 4 )) ]; then
			size_before_rr=$(q "SELECT pg_size_pretty(pg_total_relation_size('jobq.jobs'))")
			(q "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM jobq.jobs; SELECT pg_sleep($RR_SECS); COMMIT" >/dev/null) &
			rr_pid=$! rr_started=1
		fi
	fi
	sleep 0.2
done
size=$(q "SELECT pg_size_pretty(pg_total_relation_size('jobq.jobs'))")
report "churn: jobs table + indexes before the REPEATABLE READ tx" "$size_before_rr" "target < 64 MB"
report "churn: $CHURN jobs, jobs table + indexes afterwards" "$size" "(grown while vacuum waited)"
report "churn: first / last 10 s throughput (jobs/s)" "$first / $last" "x$(ratio "$last" "$first"); target >= 0.8"
report "churn: slowest 10 s with a REPEATABLE READ tx open (jobs/s)" "${slowest:-n/a}" "x$(ratio "${slowest:-0}" "$first") of first"

mkdir -p "$here/bench/results"
out="$here/bench/results/$(date +%Y%m%d-%H%M%S)-$mode.txt"
printf '%s\n' "jobq benchmark ($mode), $(date -u), $(nproc) cores, $(q 'SELECT version()')" "${results[@]}" > "$out"
echo "== written to $out"
