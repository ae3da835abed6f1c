#!/usr/bin/env bash
# PostgreSQL's server binaries from Debian's packages, for the records tests (root only).
#
# The tests (tests/records/postgres.py) run every records test against SQLite and against
# a throw-away PostgreSQL cluster they create in a temporary folder, as the `postgres`
# user the package creates, on a free loopback port; nothing here starts a server. In CI
# (CI=true) the PostgreSQL variant fails when the binaries are missing, so this script
# must have run; elsewhere it is skipped.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "install-postgres: not root; install Debian's postgresql to run the PostgreSQL tests" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-postgres: no apt-get; install PostgreSQL (initdb, pg_ctl) by hand" >&2
  exit 0
fi
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && id postgres >/dev/null 2>&1; then
  exit 0
fi
echo "install-postgres: installing postgresql ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The package's own cluster and service are not used (and cannot start without systemd).
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
echo "install-postgres: $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
