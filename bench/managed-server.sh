#!/bin/sh
# What the managed schema's check and history cost a write on the server,
# beside the core schema's trigger and a statement-level alternative, and
# what one history row costs by itself.
#
# usage: make all && SETCACHE_BUILD=build sh tests/withpg.sh sh bench/managed-server.sh [SECONDS]
# (ROUNDS=N in the environment: N alternating rounds instead of 3)
#
# 1. set_many's statement (20 keys, all defined as int with a range) and
#    set_int's upsert, run by pgbench (one connection, SECONDS each, default
#    5) with the settings row trigger as the core schema makes it (version
#    and notification), as the managed schema makes it (also the check
#    against the definition and the history row, per row), and with the
#    core trigger plus statement-level triggers over transition tables (one
#    history insert and one check query per statement); three alternating
#    rounds; and, as shipped since schema revision 4, set_many through the
#    schema's write_many (the check and history of the whole call at once,
#    the row triggers standing aside for it), single writes through the
#    managed row trigger ("function"). The core variant has the core
#    DDL's own stamp and triggers (no WHEN: the write without validation,
#    history and write_many's standing aside); the others the schema's
#    stamp and triggers as shipped.
#    Client latency from pgbench, server execution time from
#    pg_stat_statements when the server has it (tests/withpg.sh loads it).
# 2. A set-based INSERT of 20,000 rows into copies of the history table: as
#    created, and with each of its indexes alone: microseconds per row.
set -eu
ci=$SETCACHE_TEST_CONNINFO
b=${SETCACHE_BUILD:-build}
secs=${1:-5}
tmp=$(mktemp -d /tmp/setcache-managed.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
sql() { psql -X -q -v ON_ERROR_STOP=1 "$ci" "$@"; }
export PGOPTIONS="-c client_min_messages=warning"

"$b/setcache" --conninfo "$ci" --schema sm --channel sm schema >"$tmp/schema.sql"
sql -f "$tmp/schema.sql" >/dev/null
sql -c "INSERT INTO sm.definitions (entity_type, key, type, default_value, description,
        min_value, max_value) SELECT 'expert', 'key_' || g, 'int', '1', 'a key', 1, 100
        FROM generate_series(0, 19) g ON CONFLICT DO NOTHING"
# the core DDL's stamp, notification function and triggers: the first of
# each in the whole DDL (the managed DDL replaces them further down)
awk -f "$(dirname "$0")/core-triggers.awk" "$tmp/schema.sql" >"$tmp/core.sql"
grep -q WHEN "$tmp/core.sql" && { echo "the core triggers have a WHEN: the DDL changed shape" >&2; exit 1; }
# as shipped: the functions and triggers as the schema has them now
sql -At -c "SELECT pg_get_functiondef('sm.settings_stamp'::regproc) || ';'
            UNION ALL SELECT pg_get_functiondef('sm.settings_notify'::regproc) || ';'
            UNION ALL SELECT 'DROP TRIGGER IF EXISTS ' || tgname || ' ON sm.settings; ' ||
                             pg_get_triggerdef(oid) || ';'
              FROM pg_trigger WHERE tgrelid = 'sm.settings'::regclass
               AND tgname IN ('settings_stamp', 'settings_notify')" >"$tmp/managed.sql"
cat >"$tmp/nostmt.sql" <<'SQL'
DROP TRIGGER IF EXISTS stmt_ins ON sm.settings;
DROP TRIGGER IF EXISTS stmt_upd ON sm.settings;
SQL
# the statement-level alternative: per trigger, one statement writes the
# history rows ($2: their SELECT) and finds the first invalid row (an
# UPDATE's rows paired by key: a rename shows as a delete and an insert)
stmt_fn() {
    cat <<SQL
CREATE OR REPLACE FUNCTION sm.$1() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS \$fn\$
DECLARE b record;
BEGIN
    WITH h AS (INSERT INTO sm.history (entity_type, entity_id, key, op, old_value, new_value,
                                       version)
               $2)
    SELECT n.entity_type, n.entity_id, n.key, p.problem INTO b
      FROM n JOIN sm.definitions d ON d.entity_type = n.entity_type AND d.key = n.key,
           LATERAL (SELECT sm.value_problem(d, n.value) AS problem) p
     WHERE p.problem IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid value for % % %: %', b.entity_type, b.entity_id, b.key, b.problem
        USING ERRCODE = 'check_violation', CONSTRAINT = 'setcache_definition';
    END IF;
    RETURN NULL;
END \$fn\$;
SQL
}
{
    stmt_fn stmt_ins "SELECT entity_type, entity_id, key, 'insert', NULL, value, version FROM n"
    stmt_fn stmt_upd "SELECT coalesce(n.entity_type, o.entity_type),
                      coalesce(n.entity_id, o.entity_id), coalesce(n.key, o.key),
                      CASE WHEN o.key IS NULL THEN 'insert' WHEN n.key IS NULL THEN 'delete'
                      ELSE 'update' END, o.value, n.value, coalesce(n.version, o.version)
                 FROM n FULL JOIN o USING (entity_type, entity_id, key)"
    cat <<'SQL'
CREATE TRIGGER stmt_ins AFTER INSERT ON sm.settings REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION sm.stmt_ins();
CREATE TRIGGER stmt_upd AFTER UPDATE ON sm.settings REFERENCING NEW TABLE AS n OLD TABLE AS o
    FOR EACH STATEMENT EXECUTE FUNCTION sm.stmt_upd();
SQL
} >"$tmp/stmt.sql"
# set_many's statement as the library sends it (20 keys, no deletions), and
# set_int's upsert
keys=$(seq -s, -f 'key_%g' 0 19)
cat >"$tmp/many.sql" <<SQL
\\set v random(1, 90)
WITH d AS (DELETE FROM sm.settings WHERE entity_type = 'expert' AND entity_id = 'd' AND key = ANY ('{}'::text[]) RETURNING key, version), u AS (INSERT INTO sm.settings (entity_type, entity_id, key, value) SELECT 'expert', 'd', x.k, CASE WHEN x.j THEN (x.v::json)::text ELSE x.v END FROM unnest('{$keys}'::text[], array_fill(:v::text, ARRAY[20]), array_fill(false, ARRAY[20])) AS x(k, v, j) ON CONFLICT (entity_type, entity_id, key) DO UPDATE SET value = EXCLUDED.value RETURNING key, version, value) SELECT false, key, version, NULL::text FROM d UNION ALL SELECT true, key, version, value FROM u;
SQL
cat >"$tmp/one.sql" <<'SQL'
\set v random(1, 90)
INSERT INTO sm.settings (entity_type, entity_id, key, value) VALUES ('expert', 'e', 'key_3', :v::text) ON CONFLICT (entity_type, entity_id, key) DO UPDATE SET value = EXCLUDED.value RETURNING version, value;
SQL
cat >"$tmp/fmany.sql" <<SQL
\\set v random(1, 90)
SELECT * FROM sm.write_many('expert', 'd', '{}', '{$keys}'::text[], array_fill(:v::text, ARRAY[20]), array_fill(false, ARRAY[20]));
SQL
pss=$(psql -X -At "$ci" -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")

variant() {
    case $1 in
    core) sql -f "$tmp/nostmt.sql" -f "$tmp/core.sql" ;;
    managed | function) sql -f "$tmp/nostmt.sql" -f "$tmp/managed.sql" ;;
    statement) sql -f "$tmp/nostmt.sql" -f "$tmp/core.sql" -f "$tmp/stmt.sql" ;;
    esac
}
run() { # variant call script
    [ "$pss" = 1 ] && sql -c "SELECT pg_stat_statements_reset()" >/dev/null
    lat=$(pgbench -n -M extended -f "$3" -T "$secs" "$ci" 2>&1 | sed -n 's/^latency average = //p')
    srv=-
    [ "$pss" = 1 ] && srv=$(psql -X -At "$ci" -c "SELECT round((sum(total_exec_time) /
        sum(calls))::numeric * 1000, 1) FROM pg_stat_statements WHERE query LIKE
        '%INSERT INTO sm.settings%' OR query LIKE '%sm.write_many(%'")
    echo "| $1 | $2 | $lat | $srv |"
}
# the function shape writes each change's history once (the row trigger
# stood aside) and every key's value
variant function
sql -c "TRUNCATE sm.history"
sql -c "SELECT count(*) FROM sm.write_many('expert', 'f', '{}', '{$keys}'::text[],
        array_fill('7'::text, ARRAY[20]), array_fill(false, ARRAY[20]))" >/dev/null
sql -c "SELECT count(*) FROM sm.write_many('expert', 'f', '{key_0}', '{key_1}'::text[],
        '{8}'::text[], '{f}'::bool[])" >/dev/null
got=$(psql -X -At "$ci" -c "SELECT count(*) FILTER (WHERE op = 'insert') || ' ' ||
      count(*) FILTER (WHERE op = 'update') || ' ' || count(*) FILTER (WHERE op = 'delete')
      FROM sm.history WHERE entity_id = 'f'")
vals=$(psql -X -At "$ci" -c "SELECT count(*) || ' ' || sum(value::int) FROM sm.settings
       WHERE entity_id = 'f'")
if [ "$got" != "20 1 1" ] || [ "$vals" != "19 134" ]; then
    echo "the function shape wrote history '$got' (want '20 1 1') and rows '$vals'" >&2
    exit 1
fi

echo "## Managed settings on the server: set_many of 20 keys and set_int"
echo
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) CPUs;" \
    "$(psql -X -At "$ci" -c 'SELECT version()' | cut -d' ' -f1-2); pgbench, one connection, ${secs} s each"
echo
echo "| row triggers | call | client latency | server execution, us |"
echo "|---|---|---|---|"
for round in $(seq 1 "${ROUNDS:-3}"); do
    for v in core managed statement function; do
        variant $v
        if [ $v = function ]; then
            run $v set_many "$tmp/fmany.sql"
        else
            run $v set_many "$tmp/many.sql"
        fi
        run $v set_int "$tmp/one.sql"
    done
done
variant managed
sql -c "SELECT op, count(*) AS history_rows FROM sm.history GROUP BY 1 ORDER BY 1"

echo
echo "## One history row by itself: a set-based INSERT of 20,000 rows, us per row"
echo
sql <<'SQL'
CREATE TABLE sm.h_none (LIKE sm.history INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
CREATE TABLE sm.h_pk (LIKE sm.history INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE sm.h_pk ADD PRIMARY KEY (id);
CREATE TABLE sm.h_by_setting (LIKE sm.history INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
CREATE INDEX ON sm.h_by_setting (entity_type, entity_id, key, id);
CREATE TABLE sm.h_brin (LIKE sm.history INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
CREATE INDEX ON sm.h_brin USING brin (changed_at);
CREATE FUNCTION sm.insert_us(t text) RETURNS numeric LANGUAGE plpgsql AS $fn$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE format('INSERT INTO %s (entity_type, entity_id, key, op, old_value, new_value, '
                   'version) SELECT ''expert'', ''d'', ''key_'' || (g %% 20), ''update'', '
                   '''x'', ''y'', g FROM generate_series(1, 20000) g', t);
    RETURN round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1e6 / 20000, 1);
END
$fn$;
SQL
echo "| history table | round 1 | round 2 |"
echo "|---|---|---|"
for t in history h_none h_pk h_by_setting h_brin; do
    a=$(psql -X -At "$ci" -c "SELECT sm.insert_us('sm.$t')")
    c=$(psql -X -At "$ci" -c "SELECT sm.insert_us('sm.$t')")
    echo "| $t | $a | $c |"
done
sql -c "DROP SCHEMA sm CASCADE" >/dev/null
