#!/usr/bin/env bash
# Install what building and testing jobq needs on Debian 12 (run as root).
# Does nothing for packages that are already there.
set -euo pipefail

pkgs=(postgresql-15 postgresql-server-dev-15 libipc-run-perl make gcc libpq-dev pgbouncer)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
