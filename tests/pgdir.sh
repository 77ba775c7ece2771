# Sourced by tests/withpg.sh and bench/fleet-topology.sh. Sets bindir to
# the directory of PostgreSQL's programs (pg_config's, else the newest
# /usr/lib/postgresql/*/bin), or exits; pg_private_dir TEMPLATE makes a
# temp directory the server's user can use and sets dir to it, and runas
# to the command prefix that runs as that user (when run as root: servers
# refuse to run as root).
bindir=""
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir 2>/dev/null)/initdb" ]; then
    bindir=$(pg_config --bindir)
else
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
[ -x "$bindir/initdb" ] || { echo "initdb not found (apt-get install postgresql)" >&2; exit 1; }

pg_private_dir() {
    dir=$(mktemp -d "$1") || exit 1
    runas=""
    if [ "$(id -u)" = 0 ]; then
        user=postgres
        id "$user" >/dev/null 2>&1 || user=nobody
        chown "$user" "$dir"
        runas="runuser -u $user --"
    fi
    chmod 755 "$dir"
}
