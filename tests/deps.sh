#!/bin/sh
# Install what the build, the tests and the demo need, or say exactly how.
# Used by `make check`, `make demo`, `make bench` and .ci/run; with
# BUILD_ONLY=1 (plain `make`) it only checks what compiling needs and prints
# the apt-get line.
missing=""
have_cmd() { command -v "$1" >/dev/null 2>&1; }
pgbin() {
    if have_cmd pg_config && [ -x "$(pg_config --bindir 2>/dev/null)/initdb" ]; then
        pg_config --bindir; return
    fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
have_cmd cc || have_cmd gcc || missing="$missing gcc"
have_cmd make || missing="$missing make"
have_cmd pkg-config || missing="$missing pkg-config"
{ [ -f /usr/include/postgresql/libpq-fe.h ] || pkg-config --exists libpq 2>/dev/null; } || missing="$missing libpq-dev"
[ -f /usr/include/uthash.h ] || missing="$missing uthash-dev"
if [ -n "${BUILD_ONLY:-}" ]; then
    # `make`: what compiling needs, never installed from here
    [ -z "$missing" ] && exit 0
    echo "setcache: cannot build, missing:$missing" >&2
    echo "    sudo apt-get install -y$missing" >&2
    exit 1
fi
b=$(pgbin)
{ [ -n "$b" ] && [ -x "$b/initdb" ] && [ -x "$b/pg_ctl" ]; } || missing="$missing postgresql"
have_cmd psql || missing="$missing postgresql-client"
ls /usr/share/postgresql/*/extension/pg_stat_statements.control >/dev/null 2>&1 || missing="$missing postgresql-contrib"
have_cmd nm || missing="$missing binutils"
have_cmd openssl || missing="$missing openssl" # the TLS tests make their own CA
{ have_cmd pgbouncer || [ -x /usr/sbin/pgbouncer ]; } || missing="$missing pgbouncer" # topology tests
{ have_cmd nft || [ -x /usr/sbin/nft ]; } || missing="$missing nftables"   # the partition test
{ have_cmd ip || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ]; } || missing="$missing iproute2"
have_cmd jq || missing="$missing jq"                                     # the tool's JSON, checked
have_cmd groff || missing="$missing groff-base"                         # the man page, checked
if [ -n "${LINT:-}" ]; then
    have_cmd cppcheck || missing="$missing cppcheck"
    have_cmd clang-tidy || missing="$missing clang-tidy"
fi
if [ -n "${FUZZ:-}" ]; then
    have_cmd clang || missing="$missing clang"
    ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 \
        || missing="$missing libclang-rt-14-dev"
fi
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && have_cmd apt-get; then
    echo "deps: installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq $missing >/dev/null || {
        echo "deps: apt-get install failed for:$missing" >&2; exit 1; }
    exit 0
fi
echo "deps: missing:$missing" >&2
echo "deps: run this, then try again:" >&2
echo "    sudo apt-get install -y$missing" >&2
exit 1
