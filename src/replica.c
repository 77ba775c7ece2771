/*
 * replica.c - the DDL of a fleet past one primary, through PostgreSQL's own
 * logical replication: the primary's side (a publication of the settings,
 * their definitions and history, and the mapped tables) and a subscriber's
 * side (the same tables, announcing the rows the apply worker writes,
 * refusing local writes, and the subscription itself). Text only: nothing
 * here connects; a DBA applies it with psql.
 *
 * Owns: nothing (no state). No locks.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "tool.h"

#include <stdlib.h>
#include <string.h>

/* s as a SQL string literal's body (quotes doubled). malloc'd. */
static char *sql_literal_body(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++) {
        n += *p == '\'' ? 2 : 1;
    }
    char *out = malloc(n + 1);
    if (!out) {
        return NULL;
    }
    char *o = out;
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            *o++ = '\'';
        }
        *o++ = *p;
    }
    *o = '\0';
    return out;
}

/* "a", "b", ... of the published tables: the built-in ones, then each
 * mapped table. Also the same as a text[] of regclass names for checks.
 * malloc'd. */
static char *table_list(const char *schema, const setcache_table_map *m, size_t n, bool literal)
{
    char *out = literal ? setcache__aprintf("'\"%s\".settings', '\"%s\".definitions', "
                                            "'\"%s\".history'",
                                            schema, schema, schema)
                        : setcache__aprintf("\"%s\".settings, \"%s\".definitions, \"%s\".history",
                                            schema, schema, schema);
    for (size_t i = 0; out && i < n; i++) {
        char *q = setcache__map_quoted(&m[i]);
        char *joined = q ? setcache__aprintf(literal ? "%s, '%s'" : "%s, %s", out, q) : NULL;
        free(q);
        free(out);
        out = joined;
    }
    return out;
}

static char *publisher_ddl(const char *schema, const setcache_table_map *m, size_t n)
{
    char *tables = table_list(schema, m, n, false);
    char *names = table_list(schema, m, n, true);
    char *out =
        tables && names
            ? setcache__aprintf(
                  "\n-- Logical replication, the primary's side: one publication, named like\n"
                  "-- the schema, of the settings, their definitions and history, and the\n"
                  "-- mapped tables. Every subscriber host subscribes to it (setcache schema\n"
                  "-- --subscriber). Every published table needs a replica identity (a primary\n"
                  "-- key), or the primary itself would refuse UPDATE and DELETE on it.\n"
                  "DO $do$\n"
                  "DECLARE t regclass;\n"
                  "BEGIN\n"
                  "    IF current_setting('wal_level') <> 'logical' THEN\n"
                  "        RAISE WARNING 'wal_level is %%: subscribers need wal_level = logical "
                  "(ALTER SYSTEM SET wal_level = logical, then restart)',\n"
                  "              current_setting('wal_level');\n"
                  "    END IF;\n"
                  "    FOREACH t IN ARRAY ARRAY[%s]::regclass[] LOOP\n"
                  "        IF NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = t AND "
                  "i.indisprimary)\n"
                  "           AND (SELECT relreplident FROM pg_class WHERE oid = t) IN ('d', 'n') "
                  "THEN\n"
                  "            RAISE EXCEPTION 'table %% has no primary key or replica identity: "
                  "give it one (ALTER TABLE %% ADD PRIMARY KEY ..., or REPLICA IDENTITY FULL) "
                  "before publishing it', t, t;\n"
                  "        END IF;\n"
                  "    END LOOP;\n"
                  "    IF EXISTS (SELECT FROM pg_publication WHERE pubname = '%s') THEN\n"
                  "        ALTER PUBLICATION \"%s\" SET TABLE %s;\n"
                  "    ELSE\n"
                  "        CREATE PUBLICATION \"%s\" FOR TABLE %s;\n"
                  "    END IF;\n"
                  "END\n"
                  "$do$;\n",
                  names, schema, schema, tables, schema, tables)
            : NULL;
    free(tables);
    free(names);
    return out;
}

static char *subscriber_ddl(const char *schema, const char *channel, const setcache_table_map *m,
                            size_t n, const char *primary)
{
    const char *S = schema;
    char *notify = setcache__notify_fn_ddl(schema, channel, "replicated_notify");
    char *guard = setcache__aprintf("\"%s\".subscriber_guard()", S);
    char *ci = sql_literal_body(primary);
    char *out =
        notify && guard && ci
            ? setcache__aprintf(
                  "\n-- Logical replication, a subscriber's side. The apply worker writes the\n"
                  "-- primary's rows as they are (versions included) with\n"
                  "-- session_replication_role = replica, so the ordinary triggers (versions,\n"
                  "-- checks, history) do not fire for them: the primary did all that, and its\n"
                  "-- history arrives replicated. The triggers below announce each replicated\n"
                  "-- row (ENABLE REPLICA: in the apply worker only) and each replicated\n"
                  "-- TRUNCATE (ENABLE ALWAYS) to the processes listening here.\n"
                  "%s"
                  "DROP TRIGGER IF EXISTS settings_replicated_notify ON \"%s\".settings;\n"
                  "CREATE TRIGGER settings_replicated_notify AFTER INSERT OR UPDATE OR DELETE ON "
                  "\"%s\".settings\n"
                  "    FOR EACH ROW EXECUTE FUNCTION \"%s\".replicated_notify();\n"
                  "ALTER TABLE \"%s\".settings ENABLE REPLICA TRIGGER settings_replicated_notify;\n"
                  "ALTER TABLE \"%s\".settings ENABLE ALWAYS TRIGGER settings_notify_truncate;\n"
                  "ALTER TABLE \"%s\".definitions ENABLE ALWAYS TRIGGER definitions_notify;\n"
                  "\n"
                  "-- Local writes would fork this server from the primary: refused (the\n"
                  "-- apply worker's are not affected).\n"
                  "CREATE OR REPLACE FUNCTION %s RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
                  "BEGIN\n"
                  "    RAISE EXCEPTION '%% on %%.%% refused: this server is a setcache subscriber, "
                  "its rows come from the primary: write to the primary',\n"
                  "          TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME\n"
                  "    USING ERRCODE = 'read_only_sql_transaction';\n"
                  "END\n"
                  "$fn$;\n"
                  "DROP TRIGGER IF EXISTS setcache_subscriber_guard ON \"%s\".settings;\n"
                  "CREATE TRIGGER setcache_subscriber_guard BEFORE INSERT OR UPDATE OR DELETE OR "
                  "TRUNCATE ON \"%s\".settings\n"
                  "    FOR EACH STATEMENT EXECUTE FUNCTION %s;\n"
                  "DROP TRIGGER IF EXISTS setcache_subscriber_guard ON \"%s\".definitions;\n"
                  "CREATE TRIGGER setcache_subscriber_guard BEFORE INSERT OR UPDATE OR DELETE OR "
                  "TRUNCATE ON \"%s\".definitions\n"
                  "    FOR EACH STATEMENT EXECUTE FUNCTION %s;\n"
                  "DROP TRIGGER IF EXISTS setcache_subscriber_guard ON \"%s\".history;\n"
                  "CREATE TRIGGER setcache_subscriber_guard BEFORE INSERT OR UPDATE OR DELETE OR "
                  "TRUNCATE ON \"%s\".history\n"
                  "    FOR EACH STATEMENT EXECUTE FUNCTION %s;\n",
                  notify, S, S, S, S, S, S, guard, S, S, guard, S, S, guard, S, S, guard)
            : NULL;
    for (size_t i = 0; out && i < n; i++) {
        char *part = setcache__map_replica_ddl(schema, channel, &m[i], guard);
        char *joined = part ? setcache__aprintf("%s%s", out, part) : NULL;
        free(part);
        free(out);
        out = joined;
    }
    if (out) {
        /* CREATE SUBSCRIPTION can't run in a transaction block (so not in a
         * DO block): psql's \gexec runs it only when it is missing. Its
         * slot on the primary is named after this server and database, so
         * that every subscriber host has its own. */
        char *sub = setcache__aprintf(
            "\n-- The subscription (psql: \\gexec runs it only if it does not exist yet).\n"
            "-- Its replication slot on the primary is named after this server and\n"
            "-- database, so every subscriber has its own. The initial copy of the\n"
            "-- tables is announced like any replicated row.\n"
            "SELECT format('CREATE SUBSCRIPTION %%I CONNECTION %%L PUBLICATION %%I WITH "
            "(slot_name = %%L)',\n"
            "              '%s', '%s', '%s',\n"
            "              format('%.20s_%%s_%%s', s.system_identifier, d.oid))\n"
            "  FROM pg_control_system() s, pg_database d\n"
            " WHERE d.datname = current_database()\n"
            "   AND NOT EXISTS (SELECT FROM pg_subscription WHERE subname = '%s' AND subdbid = "
            "d.oid)\n"
            "\\gexec\n",
            S, ci, S, S, S);
        char *joined = sub ? setcache__aprintf("%s%s", out, sub) : NULL;
        free(sub);
        free(out);
        out = joined;
    }
    free(notify);
    free(guard);
    free(ci);
    return out;
}

int setcache__tool_replication(const char *schema, const char *channel, const setcache_table_map *m,
                               size_t n, const char *primary, char **out)
{
    *out = NULL;
    if (!setcache__valid_sql_name(schema) || !setcache__valid_sql_name(channel)) {
        return setcache__fail(SETCACHE_ERR_ARG,
                              "schema and channel must match [a-z_][a-z0-9_]{0,62}");
    }
    if (primary && (!*primary || strpbrk(primary, "\n\r") != NULL)) {
        return setcache__fail(SETCACHE_ERR_ARG,
                              "--subscriber needs the primary's conninfo, on one line");
    }
    for (size_t i = 0; i < n; i++) {
        if (setcache__map_check(&m[i], i) != SETCACHE_OK) {
            return SETCACHE_ERR_ARG;
        }
    }
    *out = primary ? subscriber_ddl(schema, channel, m, n, primary) : publisher_ddl(schema, m, n);
    return *out ? SETCACHE_OK : setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
}
