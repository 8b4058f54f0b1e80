#!/usr/bin/env bash
# Make a private copy of the PostgreSQL 15 installation in DIR, so that a
# branch of jobq can be installed and tested there without touching the
# system's (several worktrees can then be tested at once):
#
#   JOBQ_SANDBOX=/tmp/pg-mybranch bash scripts/test.sh
#
# runs the whole suite against DIR, creating it first if needed.  By hand:
#   bash scripts/sandbox.sh DIR
#   make install PG_CONFIG=DIR/usr/lib/postgresql/15/bin/pg_config
# PostgreSQL finds its share and library directories relative to its
# binaries, so the copy's server loads the copy's jobq.
set -euo pipefail

dir=${1:?usage: $0 DIR}
pg=$(pg_config --bindir | sed 's|/bin$||')          # /usr/lib/postgresql/15
share=$(pg_config --sharedir)                       # /usr/share/postgresql/15
inc=$(dirname "$(dirname "$(pg_config --includedir-server)")")   # /usr/include/postgresql

if [ ! -x "$dir$pg/bin/pg_config" ]; then
	mkdir -p "$dir$(dirname "$pg")" "$dir$(dirname "$share")" "$dir$(dirname "$inc")"
	cp -a "$pg" "$dir$(dirname "$pg")/"
	cp -a "$share" "$dir$(dirname "$share")/"
	ln -sfn "$inc" "$dir$inc"
	rm -f "$dir$pg/lib/jobq.so" "$dir$share"/extension/jobq[.-]*
	chmod 755 "$dir"
fi
echo "$dir$pg/bin/pg_config"
