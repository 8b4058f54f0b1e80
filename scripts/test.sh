#!/usr/bin/env bash
# Run the whole jobq test suite: pg_regress (sql/), isolation (specs/) and
# TAP (t/) tests, each against a throwaway PostgreSQL instance.
#
# As root on a fresh Debian 12 machine with PostgreSQL 15 this also installs
# the build dependencies, builds and installs jobq, and runs the tests as
# the postgres user from a private copy of the tree (PostgreSQL refuses to
# run as root).  As another user it expects jobq to be installed already
# and runs the tests in place.
#
#   bash scripts/test.sh            everything
#   bash scripts/test.sh regress    only pg_regress and isolation tests
#   bash scripts/test.sh tap        only the TAP tests
#   bash scripts/test.sh bench      only the benchmark smoke (bench/run.sh --quick)
#
# As root, "everything" ends with the benchmark smoke (about 40 s: tiny
# sizes, no timing is checked, it only proves the harness still runs);
# JOBQ_SKIP_BENCH=1 leaves it out.
# With JOBQ_SANDBOX=DIR, jobq is installed into (and tested against) a
# private copy of PostgreSQL in DIR instead of the system's: see
# scripts/sandbox.sh.  PROVE_TESTS="t/001_workers.pl" picks TAP tests.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
what=${1:-all}

case "$what" in
	all) targets=(installcheck) ;;
	regress) targets=(installcheck TAP_TESTS=) ;;
	tap) targets=(installcheck REGRESS= ISOLATION=) ;;
	bench) targets=() ;;
	*) echo "usage: $0 [all|regress|tap|bench]" >&2; exit 2 ;;
esac

# the benchmark smoke: builds and installs like the tests, then runs
# bench/run.sh --quick against its own throwaway cluster
bench_smoke()
{
	echo "+++ benchmark smoke (bench/run.sh --quick) +++"
	if [ -n "${JOBQ_SANDBOX:-}" ]; then
		bash "$here/bench/run.sh" --quick
	else
		JOBQ_BENCH_SYSTEM=1 bash "$here/bench/run.sh" --quick
	fi
}

if [ "$(id -u)" -ne 0 ]; then
	[ "$what" = bench ] && exec bash "$here/bench/run.sh" --quick
	exec make -C "$here" "${targets[@]}"
fi

if [ "$what" = bench ]; then
	bench_smoke
	exit
fi

"$here/scripts/install-deps.sh"

if [ -n "${JOBQ_SANDBOX:-}" ]; then
	PG_CONFIG=$("$here/scripts/sandbox.sh" "$JOBQ_SANDBOX")
	export PG_CONFIG
fi
make -C "$here" -s
make -C "$here" -s install

work=$(mktemp -d /tmp/jobq-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -a "$here/." "$work/"
chown -R postgres: "$work"

status=0
runuser -u postgres -- env ${PG_CONFIG:+PG_CONFIG=$PG_CONFIG} ${PROVE_TESTS:+PROVE_TESTS="$PROVE_TESTS"} \
	make -C "$work" "${targets[@]}" || status=$?
if [ $status -ne 0 ]; then
	for f in "$work"/regression.diffs "$work"/output_iso/regression.diffs; do
		[ -f "$f" ] && { echo "==== $f"; cat "$f"; }
	done
	for f in "$work"/tmp_check/log/regress_log_*; do
		[ -f "$f" ] && { echo "==== $f (last 60 lines)"; tail -n 60 "$f"; }
	done
	echo "jobq tests FAILED" >&2
else
	echo "jobq tests passed"
	if [ "$what" = all ] && [ -z "${JOBQ_SKIP_BENCH:-}" ]; then
		bench_smoke || { status=$?; echo "jobq benchmark smoke FAILED" >&2; }
	fi
fi
exit $status
