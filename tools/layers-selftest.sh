#!/bin/sh
# Prove that tools/layers.sh can fail: objects where a low file calls up, or
# sideways within its layer, or a file the table does not name, must be
# refused; a downward call must pass. Uses the real layer table.
set -u
here=$(dirname "$0")
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
cc=${CC:-cc}
obj() { # obj NAME 'C source'
    printf '%s\n' "$2" > "$tmp/$1.c" && $cc -c -o "$tmp/$1.o" "$tmp/$1.c" || exit 2
}
fail=0
expect() { # expect 0|1 WHAT
    "$here/layers.sh" "$tmp" > "$tmp/out" 2>&1
    got=$?
    if [ "$got" != "$1" ]; then
        echo "layers self-test: $2: exit $got, wanted $1"; cat "$tmp/out"; fail=1
    fi
    rm -f "$tmp"/*.o "$tmp"/*.c
}
obj cache 'int setcache__cache_f(void); int setcache__cache_f(void) { return 1; }'
obj util 'int setcache__cache_f(void); int setcache__util_f(void); int setcache__util_f(void) { return setcache__cache_f(); }'
expect 1 "util.c (layer 0) calling up into cache.c"
obj load 'int setcache__load_f(void); int setcache__load_f(void) { return 1; }'
obj refresh 'int setcache__load_f(void); int setcache__refresh_f(void); int setcache__refresh_f(void) { return setcache__load_f(); }'
expect 1 "refresh.c calling load.c in its own layer"
obj nowhere 'int setcache__nowhere_f(void); int setcache__nowhere_f(void) { return 1; }'
expect 1 "a file in no layer"
obj util 'int setcache__util_f(void); int setcache__util_f(void) { return 1; }'
obj cache 'int setcache__util_f(void); int setcache__cache_f(void); int setcache__cache_f(void) { return setcache__util_f(); }'
expect 0 "cache.c calling down into util.c"
[ $fail = 0 ] && echo "layers self-test: an upward, a sideways call and an unnamed file are refused"
exit $fail
