#!/bin/sh
# Run a command with a PostgreSQL to talk to, exported as SETCACHE_TEST_CONNINFO.
# Uses SETCACHE_TEST_CONNINFO, or libpq's PG* environment, when set; otherwise
# starts a private cluster (initdb + pg_ctl in a temp dir, Unix socket only,
# fsync off, as an unprivileged user when run as root) and stops it on exit,
# also on failure or Ctrl-C.
set -u
if [ -n "${SETCACHE_TEST_CONNINFO+x}" ] || [ -n "${PGHOST:-}${PGDATABASE:-}${PGPORT:-}${PGSERVICE:-}" ]; then
    export SETCACHE_TEST_CONNINFO="${SETCACHE_TEST_CONNINFO:-}"
    exec "$@"
fi
. "$(dirname "$0")/pgdir.sh"
pg_private_dir /tmp/setcache-pg.XXXXXX
port=$((20000 + $$ % 20000))
stop() {
    $runas "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$dir"
}
trap 'stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
$runas "$bindir/initdb" -D "$dir/data" -A trust -N -U postgres -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
  || $runas "$bindir/initdb" -D "$dir/data" -A trust -N -U postgres -E UTF8 >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
opts="-c listen_addresses='' -k $dir -p $port -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_preload_libraries=pg_stat_statements"
# SETCACHE_PG_DURABLE=1: commits flushed to disk, as a production server does
[ -n "${SETCACHE_PG_DURABLE:-}" ] && opts="-c listen_addresses='' -k $dir -p $port -c max_connections=300 -c shared_preload_libraries=pg_stat_statements"
if ! $runas "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$opts" start >/dev/null; then
    cat "$dir/server.log" >&2; exit 1
fi
export SETCACHE_TEST_CONNINFO="host=$dir port=$port user=postgres dbname=postgres"
export SETCACHE_PG_BINDIR="$bindir" SETCACHE_PGDATA="$dir/data" SETCACHE_PG_RUNAS="$runas" SETCACHE_PG_OPTS="$opts" SETCACHE_PG_LOG="$dir/server.log"
psql "$SETCACHE_TEST_CONNINFO" -qAtc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null 2>&1 || true
"$@"
