#!/usr/bin/env bash
# Makes sure PostgreSQL answers at 127.0.0.1:5432 with trust auth for the tests: starts the local cluster when
# it is down, and on a bare Debian installs PostgreSQL first. It never stops or reconfigures a running server.
set -euo pipefail
ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if command -v pg_isready >/dev/null && ready; then
  echo "postgres: already running at 127.0.0.1:5432"
  exit 0
fi
if ! command -v pg_ctlcluster >/dev/null; then
  echo "postgres: not installed; installing from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  fresh=1
fi
ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ -z "$ver" ]; then
  ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  pg_createcluster "$ver" main --port 5432 >/dev/null
  fresh=1
fi
if [ -n "${fresh:-}" ]; then
  # A cluster this script created: trust local TCP connections, as on the project's machines.
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(host\s+all\s+all\s+::1\/128\s+)\S+/\1trust/; s/^(local\s+all\s+all\s+)\S+/\1trust/' "$hba"
fi
echo "postgres: starting cluster $ver/main"
pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
for _ in $(seq 1 60); do
  if ready; then
    psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
      || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
    echo "postgres: ready"
    exit 0
  fi
  sleep 0.5
done
echo "postgres: did not become ready at 127.0.0.1:5432" >&2
exit 1
