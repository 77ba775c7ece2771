#!/bin/sh
# What the managed schema costs a write on the server, in instructions:
# deterministic, so it can be compared on a shared machine whose timings
# wander by more than the difference (see bench/README.md).
#
# usage: make all && sh bench/managed-instructions.sh [BUILD]
# (needs valgrind and PostgreSQL's server programs; takes a few minutes;
# DDL=FILE: that schema DDL, for schema sm and channel sm, instead of the
# build's - e.g. an older release's `setcache --schema sm --channel sm schema`;
# PARTS=1: then also what each part of a single write costs, see the end)
#
# A private cluster gets the schema as `setcache schema` prints it (20 int
# keys defined with a range, 20 settings rows); then, for each variant, a
# single-user backend (postgres --single) runs under callgrind 50 and then
# 250 times the same statement, each its own transaction (commit
# included), from a fresh copy of that cluster; the difference / 200 is one
# call's instructions, start-up excluded. Variants: the core DDL's own row
# triggers (the stamp and the notification, no WHEN: the write without
# validation, history and write_many's standing aside), the schema as
# shipped, and the core notification function under the shipped stamp and
# triggers (what standing aside costs every write). Statements: set_int's
# upsert, set_many's statement of 20 keys (through the row triggers) and
# set_many through write_many.
set -eu
b=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/tests/pgdir.sh"
command -v valgrind >/dev/null 2>&1 || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
pg_private_dir /tmp/setcache-instr.XXXXXX
port=$((20000 + $$ % 20000))
stop() {
    $runas "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT
export PGOPTIONS="-c client_min_messages=warning"
trap 'exit 130' INT
trap 'exit 143' TERM

$runas "$bindir/initdb" -D "$dir/pristine" -A trust -N -U postgres -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
if [ -n "${DDL:-}" ]; then
    cp "$DDL" "$dir/schema.sql"
else
    "$b/setcache" --conninfo "dbname=unused" --schema sm --channel sm schema >"$dir/schema.sql"
fi
chmod 644 "$dir/schema.sql"
$runas "$bindir/pg_ctl" -D "$dir/pristine" -l "$dir/server.log" -w \
    -o "-c listen_addresses='' -k $dir -p $port" start >/dev/null
psql -X -q -v ON_ERROR_STOP=1 "host=$dir port=$port user=postgres dbname=postgres" \
    -f "$dir/schema.sql" -c "
    INSERT INTO sm.definitions (entity_type, key, type, default_value, description, min_value,
                                max_value)
    SELECT 'expert', 'key_' || g, 'int', '1', 'a key', 1, 100 FROM generate_series(0, 19) g;
    INSERT INTO sm.settings (entity_type, entity_id, key, value)
    SELECT 'expert', e, 'key_' || g, '5' FROM generate_series(0, 19) g, (VALUES ('e'), ('d')) AS x(e)" \
    >/dev/null
$runas "$bindir/pg_ctl" -D "$dir/pristine" -w stop >/dev/null

# the core DDL's stamp, notification function and triggers: the first of
# each in the whole DDL (the managed DDL replaces them further down)
awk -f "$here/bench/core-triggers.awk" "$dir/schema.sql" >"$dir/core.sql"
grep -q WHEN "$dir/core.sql" && { echo "the core triggers have a WHEN: the DDL changed shape" >&2; exit 1; }
[ "$(grep -c 'CREATE TRIGGER' "$dir/core.sql")" = 2 ] || { echo "core triggers not found" >&2; exit 1; }
echo "SELECT 1;" >"$dir/shipped.sql"
# the core notification function under the stamp and triggers as shipped:
# what standing aside for write_many costs every write, managed or not
awk '/^CREATE OR REPLACE FUNCTION "sm".settings_notify\(\)/ { on = 1 } on { print }
     on && /^\$fn\$;$/ { exit }' "$dir/core.sql" >"$dir/aside.sql"
chmod 644 "$dir/core.sql" "$dir/shipped.sql" "$dir/aside.sql"

keys=$(seq -s, -f 'key_%g' 0 19)
one="INSERT INTO sm.settings (entity_type, entity_id, key, value) VALUES ('expert', 'e', 'key_3', '%d') ON CONFLICT (entity_type, entity_id, key) DO UPDATE SET value = EXCLUDED.value RETURNING version, value;"
many="WITH d AS (DELETE FROM sm.settings WHERE entity_type = 'expert' AND entity_id = 'd' AND key = ANY ('{}'::text[]) RETURNING key, version), u AS (INSERT INTO sm.settings (entity_type, entity_id, key, value) SELECT 'expert', 'd', x.k, CASE WHEN x.j THEN (x.v::json)::text ELSE x.v END FROM unnest('{$keys}'::text[], array_fill('%d'::text, ARRAY[20]), array_fill(false, ARRAY[20])) AS x(k, v, j) ON CONFLICT (entity_type, entity_id, key) DO UPDATE SET value = EXCLUDED.value RETURNING key, version, value) SELECT false, key, version, NULL::text FROM d UNION ALL SELECT true, key, version, value FROM u;"
fn="SELECT * FROM sm.write_many('expert', 'd', '{}', '{$keys}'::text[], array_fill('%d'::text, ARRAY[20]), array_fill(false, ARRAY[20]));"

# instructions of N runs of statement $3 after setup $1 (a fresh cluster)
count() { # setup n statement
    in="$dir/in.sql"
    { cat "$dir/$1.sql"; echo; i=0
      while [ "$i" -lt "$2" ]; do printf "$3\n\n" $((i % 90 + 1)); i=$((i + 1)); done; } >"$in"
    chmod 644 "$in"
    rm -rf "$dir/data"
    $runas cp -a "$dir/pristine" "$dir/data"
    $runas valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bindir/postgres" --single -j \
        -D "$dir/data" -c fsync=off postgres <"$in" 2>"$dir/vg.log" >"$dir/out.log"
    # a single-user backend reports a statement's error on its stderr,
    # which is valgrind's log here: a failing statement must not be timed
    if grep -q ERROR "$dir/out.log" "$dir/vg.log"; then
        grep -h -m1 ERROR "$dir/out.log" "$dir/vg.log" >&2
        exit 1
    fi
    sed -n 's/.*Collected : //p' "$dir/vg.log"
}
per_call() { # setup statement
    a=$(count "$1" 50 "$2")
    c=$(count "$1" 250 "$2")
    echo $(((c - a) / 200))
}

echo "## Managed settings on the server, in instructions per call"
echo
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); PostgreSQL" \
    "$(psql --version | cut -d' ' -f3-), $(valgrind --version), one single-user backend," \
    "each call its own transaction (commit included)"
echo
echo "| call | core DDL's row triggers | as shipped | ratio |"
echo "|---|---|---|---|"
c1=$(per_call core "$one")
s1=$(per_call shipped "$one")
a1=$(per_call aside "$one")
echo "| set_int (upsert, row triggers) | $c1 | $s1 | $(echo "$s1 $c1" | awk '{printf "%.2fx", $1 / $2}') |"
echo "| set_int, core notification function under the shipped stamp and triggers | $c1 | $a1 | $(echo "$a1 $c1" | awk '{printf "%.2fx", $1 / $2}') |"
c20=$(per_call core "$many")
s20=$(per_call shipped "$fn")
r20=$(per_call shipped "$many")
echo "| set_many of 20 keys (write_many) | $c20 | $s20 | $(echo "$s20 $c20" | awk '{printf "%.2fx", $1 / $2}') |"
echo "| set_many of 20 keys, one statement through the row triggers | $c20 | $r20 | $(echo "$r20 $c20" | awk '{printf "%.2fx", $1 / $2}') |"

# PARTS=1: where a single write's extra work goes. Each line is the
# shipped schema with one part taken away (a throwaway change, made here to
# the schema as printed, never shipped: each removes something the schema
# promises), and what the single write then saves.
[ -n "${PARTS:-}" ] || exit 0
# the managed notification function: the second in the whole DDL
awk '/^CREATE OR REPLACE FUNCTION "sm".settings_notify\(\)/ { n++ } n == 2 { print }
     n == 2 && /^\$fn\$;$/ { exit }' "$dir/schema.sql" >"$dir/notify.sql"
variant() { # name, then a sed program for the managed notification function,
            # or "-" and the SQL itself
    if [ "$2" = - ]; then
        printf '%s\n' "$3" >"$dir/$1.sql"
    else
        sed "$2" "$dir/notify.sql" >"$dir/$1.sql"
        cmp -s "$dir/notify.sql" "$dir/$1.sql" && { echo "variant $1: the edit found nothing (the DDL changed shape)" >&2; exit 1; }
    fi
    chmod 644 "$dir/$1.sql"
}
variant when - 'DROP TRIGGER settings_notify ON sm.settings;

CREATE TRIGGER settings_notify AFTER INSERT OR UPDATE OR DELETE ON sm.settings FOR EACH ROW EXECUTE FUNCTION sm.settings_notify();'
variant setpath 's/SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS/SECURITY DEFINER AS/'
variant check 's/problem := "sm".value_problem(d, NEW.value);/problem := NULL;/'
variant lookup '/SELECT \* INTO d FROM "sm".definitions/,/^        END IF;$/d'
variant history '/^        INSERT INTO "sm".history (entity_type, entity_id, key, op, old_value, new_value,$/,/NEW.version);$/d'
variant pkey - 'ALTER TABLE sm.history DROP CONSTRAINT history_pkey;'
variant idseq - 'ALTER TABLE sm.history DROP CONSTRAINT history_pkey, ALTER COLUMN id DROP DEFAULT,
    ALTER COLUMN id DROP NOT NULL;'
variant bysetting - 'DROP INDEX sm.history_by_setting;'
variant brin - 'DROP INDEX sm.history_by_time;'
variant rules - 'CREATE OR REPLACE FUNCTION sm.value_problem(d sm.definitions, v text) RETURNS text
LANGUAGE plpgsql STABLE AS $fn$ BEGIN RETURN NULL; END $fn$;'
# all the parts that are not themselves a check or a history row, at once
variant lean - "$(cat "$dir/setpath.sql")

$(cat "$dir/when.sql")

$(cat "$dir/idseq.sql")

$(cat "$dir/brin.sql")"
echo
echo "### Where a single write's extra work goes: set_int as shipped ($s1) less one part"
echo
echo "| part taken away | set_int without it | saves | ratio to the core ($c1) without it |"
echo "|---|---|---|---|"
for v in "when:the notification trigger's WHEN (write_many's standing aside)" \
         "setpath:the notification function's fixed search_path (SECURITY DEFINER kept)" \
         "check:value_problem's call (the definition still looked up)" \
         "lookup:the definition's lookup and the check" \
         "history:the history row" \
         "pkey:the history's primary key (id)" \
         "idseq:the history's primary key and its id sequence" \
         "bysetting:the history's index by setting" \
         "brin:the history's BRIN index on changed_at" \
         "rules:the rules' own work (value_problem called, returns at once)" \
         "lean:the WHEN, the fixed search_path, the history's primary key, id sequence and BRIN index, together"; do
    name=${v%%:*}
    n=$(per_call "$name" "$one")
    echo "| ${v#*:} | $n | $((s1 - n)) | $(echo "$n $c1" | awk '{printf "%.2fx", $1 / $2}') |"
done
