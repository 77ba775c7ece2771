#!/bin/sh
# Start a primary (wal_level = logical) and N subscriber clusters on this
# machine, apply `setcache schema --publisher` to the primary and
# `--subscriber` to each subscriber, run a program against them, and stop
# and remove every cluster afterwards (also on failure or Ctrl-C).
#
# usage: fleet-topology.sh BUILD_DIR NSUBS PROGRAM [ARGS...]
# The program gets SETCACHE_TEST_CONNINFO (the primary),
# SETCACHE_FLEET_SUBSCRIBERS (the subscribers' conninfos, '|'-separated),
# SETCACHE_FLEET_PIDS (postmaster pids: primary first) and
# SETCACHE_FLEET_SCHEMA (the schema both sides were set up with).
set -u
b=$1
nsubs=$2
shift 2
schema=setcache_fleet
. "$(dirname "$0")/../tests/pgdir.sh"
pg_private_dir /tmp/setcache-fleet.XXXXXX
root=$dir
base=$((30000 + $$ % 5000 * 2))
started=""
stop() {
    for i in $started; do
        $runas "$bindir/pg_ctl" -D "$root/n$i" -m immediate -w stop >/dev/null 2>&1
    done
    rm -rf "$root"
}
trap 'stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# node i: 0 is the primary; port base + i; socket in $root
node() {
    i=$1
    opts=$2
    $runas "$bindir/initdb" -D "$root/n$i" -A trust -N -U postgres -E UTF8 >"$root/initdb$i.log" 2>&1 ||
        { cat "$root/initdb$i.log" >&2; exit 1; }
    if ! $runas "$bindir/pg_ctl" -D "$root/n$i" -l "$root/n$i.log" -w -t 60 -o \
        "-c listen_addresses='' -k $root -p $((base + i)) -c fsync=off $opts" \
        start >/dev/null; then
        cat "$root/n$i.log" >&2
        exit 1
    fi
    started="$i $started"
}
ci() {
    echo "host=$root port=$((base + $1)) user=postgres dbname=postgres"
}
# the primary commits synchronously (the default): with synchronous_commit
# off, its WAL reaches the walsenders only at the WAL writer's next round
# (wal_writer_delay, 200 ms)
export PGOPTIONS="-c client_min_messages=warning"
node 0 "-c wal_level=logical -c max_wal_senders=20 -c max_replication_slots=20 -c max_connections=300"
"$b/setcache" --conninfo "$(ci 0)" --schema $schema --channel $schema schema --publisher |
    psql -X -q -v ON_ERROR_STOP=1 "$(ci 0)" >/dev/null || exit 1
subs=""
pids=$(head -n 1 "$root/n0/postmaster.pid")
i=1
while [ "$i" -le "$nsubs" ]; do
    node "$i" "-c max_connections=200 -c wal_retrieve_retry_interval=500ms -c synchronous_commit=off"
    "$b/setcache" --conninfo "$(ci "$i")" --schema $schema --channel $schema schema \
        --subscriber "$(ci 0)" | psql -X -q -v ON_ERROR_STOP=1 "$(ci "$i")" >/dev/null || exit 1
    subs="${subs:+$subs|}$(ci "$i")"
    pids="$pids $(head -n 1 "$root/n$i/postmaster.pid")"
    i=$((i + 1))
done
unset PGOPTIONS
export SETCACHE_TEST_CONNINFO="$(ci 0)" SETCACHE_FLEET_SUBSCRIBERS="$subs" \
    SETCACHE_FLEET_PIDS="$pids" SETCACHE_FLEET_SCHEMA="$schema" SETCACHE_BUILD="$b"
"$@"
