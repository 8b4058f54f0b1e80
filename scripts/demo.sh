#!/usr/bin/env bash
# The main job: build and install jobq, start a throwaway PostgreSQL with
# jobq preloaded, and run a small shop's background work through it while
# you watch: several queues with priorities, delayed jobs, a flaky handler
# that fails and is retried, handlers that fail for good, a timeout, chains
# of two jobs, and the job events a LISTEN client receives.
#
#   bash scripts/demo.sh          (as root on a fresh Debian 12 machine)
#   KEEP=1 bash scripts/demo.sh   keep the cluster running afterwards
#
# With JOBQ_SANDBOX=DIR, jobq is installed into (and the demo run with) a
# private copy of PostgreSQL in DIR instead of the system's, as with
# scripts/test.sh (see scripts/sandbox.sh).  As a user other than root
# without JOBQ_SANDBOX, jobq must already be installed.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)

[ "$(id -u)" -eq 0 ] && "$here/scripts/install-deps.sh"
if [ -n "${JOBQ_SANDBOX:-}" ]; then
	PG_CONFIG=$("$here/scripts/sandbox.sh" "$JOBQ_SANDBOX")
else
	PG_CONFIG=$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)
fi
export PG_CONFIG
bindir=$("$PG_CONFIG" --bindir)

if [ "$(id -u)" -eq 0 ] || [ -n "${JOBQ_SANDBOX:-}" ]; then
	echo "== building and installing jobq into $(dirname "$bindir")"
	make -C "$here" -s PG_CONFIG="$PG_CONFIG" >/dev/null
	make -C "$here" -s install PG_CONFIG="$PG_CONFIG" >/dev/null
fi
if [ "$(id -u)" -eq 0 ]; then
	as_pg() { runuser -u postgres -- "$@"; }
else
	as_pg() { "$@"; }
fi

dir=$(mktemp -d /tmp/jobq-demo.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
port=$(( 20000 + RANDOM % 20000 ))
psql_demo() { as_pg "$bindir/psql" -X -q -h "$dir" -p "$port" -d jobq_demo -v ON_ERROR_STOP=1 "$@"; }

listener=
cleanup()
{
	[ -n "$listener" ] && kill "$listener" 2>/dev/null
	if [ "${KEEP:-0}" = 1 ]; then
		echo "== cluster left running: psql -h $dir -p $port -d jobq_demo (stop: $bindir/pg_ctl -D $dir/data stop)"
	else
		as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
		rm -rf "$dir"
	fi
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL in $dir (port $port)"
as_pg "$bindir/initdb" -D "$dir/data" -A trust --no-sync >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
shared_preload_libraries = 'jobq'
jobq.workers = 4
jobq.queues = 'high, default, low'
jobq.events = 'all'
max_worker_processes = 16
CONF
as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
as_pg "$bindir/createdb" -h "$dir" -p "$port" jobq_demo
# serve the new database: the launcher picks this up on reload
as_pg "$bindir/psql" -X -q -h "$dir" -p "$port" -d jobq_demo \
	-c "ALTER SYSTEM SET jobq.database = 'jobq_demo'" -c "SELECT pg_reload_conf()" >/dev/null

echo "== creating the shop (demo/schema.sql) and dispatching its work (demo/workload.sql)"
psql_demo -f "$here/demo/schema.sql" >/dev/null
# a LISTEN client: the jobq CLI prints every job event as a JSON line
pguser=$([ "$(id -u)" -eq 0 ] && echo postgres || id -un)
"$bindir/jobq" listen -d "host=$dir port=$port dbname=jobq_demo user=$pguser" \
	>"$dir/events.jsonl" 2>"$dir/listen.log" &
listener=$!
for _ in $(seq 1 50); do
	grep -q listening "$dir/listen.log" 2>/dev/null && break
	sleep 0.1
done
started=$(psql_demo -Atc "SELECT clock_timestamp()")
psql_demo -f "$here/demo/workload.sql" >/dev/null &
workload=$!

echo "== progress (4 workers serving high, default, low)"
printf '%8s %6s %8s %8s %9s %6s %5s %8s %7s\n' \
	time ready delayed running retrying outbox paid reports failed
idle=0
for i in $(seq 1 120); do
	line=$(psql_demo -At -F ' ' -v started="$started" -c "
		SELECT to_char(extract(epoch FROM clock_timestamp() - '$started'::timestamptz), 'FM990.0') || 's',
		       count(*) FILTER (WHERE reserved_by IS NULL AND available_at <= now()),
		       count(*) FILTER (WHERE reserved_by IS NULL AND available_at > now()),
		       count(*) FILTER (WHERE reserved_by IS NOT NULL),
		       count(*) FILTER (WHERE last_error IS NOT NULL),
		       (SELECT count(*) FROM shop.outbox),
		       (SELECT count(*) FROM shop.orders WHERE paid IS NOT NULL),
		       (SELECT count(*) FROM shop.reports),
		       (SELECT count(*) FROM jobq.failed)
		  FROM jobq.jobs")
	# shellcheck disable=SC2086
	printf '%8s %6s %8s %8s %9s %6s %5s %8s %7s\n' $line
	if ! kill -0 "$workload" 2>/dev/null && [ "$(echo "$line" | awk '{print $2+$3+$4}')" = 0 ]; then
		idle=$((idle + 1))
		[ $idle -ge 1 ] && break
	fi
	sleep 0.5
done
wait "$workload"

echo
echo "== the jobq processes (pg_stat_activity)"
psql_demo -c "SELECT pid, backend_type, datname, state, query FROM pg_stat_activity
               WHERE backend_type LIKE 'jobq%' ORDER BY backend_type, pid"

kill "$listener" && wait "$listener" || true
listener=

echo
echo "== server log: errors and crashes"
# (the pool manager of database postgres leaves when jobq.database changes)
grep -E 'jobq (worker|launcher)|ERROR|FATAL|PANIC' "$dir/server.log" |
	grep -v 'terminating background worker "jobq pool manager" due to administrator command' |
	tail -n 5 | grep . || echo "(none)"

echo
echo "== job events received by a LISTEN client (jobq listen), by kind"
grep -o '"event": *"[a-z]*"' "$dir/events.jsonl" | sed 's/.*"\([a-z]*\)"$/\1/' |
	sort | uniq -c | sort -rn
echo "-- the 'failed' events:"
grep '"event": *"failed"' "$dir/events.jsonl" || true

psql_demo -f "$here/demo/summary.sql"
