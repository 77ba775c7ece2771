/*
 * schema.c - all SQL text: identifier quoting, the statements the library
 * sends, the DDL (table, version sequence, triggers) and its idempotent,
 * concurrency-safe creation.
 *
 * Owns: the sc_sql strings of a handle (built at open, freed at close).
 * No locks: callers pass a borrowed connection.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SC_SCHEMA_REVISION "2" /* 2: identifiers that cannot deceive */
/* A regular expression for the characters identifiers may not hold beyond
 * C0 controls and DEL (the table's first checks): C1 controls and the
 * bidirectional formatting characters. */
#define SC_DECEPTIVE "[\\u0080-\\u009f\\u202a-\\u202e\\u2066-\\u2069]"

/* Double-quote an identifier, doubling embedded quotes. malloc'd. */
char *setcache__quote_ident(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(2 * n + 3);
    if (!out) {
        return NULL;
    }
    char *p = out;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') {
            *p++ = '"';
        }
        *p++ = s[i];
    }
    *p++ = '"';
    *p = '\0';
    return out;
}

int setcache__sql_build(sc_sql *s, const char *schema)
{
    memset(s, 0, sizeof *s);
    char *qs = setcache__quote_ident(schema);
    if (!qs) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    s->table = setcache__aprintf("%s.settings", qs);
    free(qs);
    if (!s->table) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    const char *t = s->table;
    s->load = setcache__aprintf("SELECT key, value, version FROM %s WHERE entity_type = $1 AND "
                                "entity_id = $2",
                                t);
    s->load_type =
        setcache__aprintf("SELECT entity_id, key, value, version FROM %s WHERE entity_type = "
                          "$1 ORDER BY entity_id",
                          t);
    s->upsert =
        setcache__aprintf("INSERT INTO %s (entity_type, entity_id, key, value) VALUES ($1, $2, $3, "
                          "$4) ON CONFLICT (entity_type, entity_id, key) DO UPDATE SET value = "
                          "EXCLUDED.value RETURNING version, value",
                          t);
    s->upsert_json =
        setcache__aprintf("INSERT INTO %s (entity_type, entity_id, key, value) VALUES ($1, $2, "
                          "$3, ($4::json)::text) ON CONFLICT (entity_type, entity_id, key) DO "
                          "UPDATE SET value = EXCLUDED.value RETURNING version, value",
                          t);
    s->del =
        setcache__aprintf("DELETE FROM %s WHERE entity_type = $1 AND entity_id = $2 AND key = $3 "
                          "RETURNING version",
                          t);
    s->many = setcache__aprintf(
        "WITH d AS (DELETE FROM %s WHERE entity_type = $1 AND entity_id = $2 AND key = "
        "ANY ($3::text[]) RETURNING key, version), "
        "u AS (INSERT INTO %s (entity_type, entity_id, key, value) "
        "SELECT $1, $2, x.k, CASE WHEN x.j THEN (x.v::json)::text ELSE x.v END "
        "FROM unnest($4::text[], $5::text[], $6::bool[]) AS x(k, v, j) "
        "ON CONFLICT (entity_type, entity_id, key) DO UPDATE SET value = EXCLUDED.value "
        "RETURNING key, version, value) "
        "SELECT false, key, version, NULL::text FROM d UNION ALL SELECT true, key, version, value "
        "FROM u",
        t, t);
    s->load_many =
        setcache__aprintf("SELECT s.entity_type, s.entity_id, s.key, s.value, s.version FROM %s s "
                          "JOIN unnest($1::text[], $2::text[]) AS x(t, i) ON s.entity_type = "
                          "x.t AND s.entity_id = x.i",
                          t);
    if (!s->load || !s->load_type || !s->upsert || !s->upsert_json || !s->del || !s->many ||
        !s->load_many) {
        setcache__sql_free(s);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    return SETCACHE_OK;
}

void setcache__sql_free(sc_sql *s)
{
    free(s->table);
    free(s->load);
    free(s->load_type);
    free(s->upsert);
    free(s->upsert_json);
    free(s->del);
    free(s->many);
    free(s->load_many);
    memset(s, 0, sizeof *s);
}

/*
 * The DDL for one schema and channel. Both names must have passed
 * setcache__valid_sql_name ([a-z_][a-z0-9_]*), so they are safe inside the
 * quoted identifiers and string literals below. malloc'd.
 */
char *setcache__ddl(const char *schema, const char *channel)
{
    if (!setcache__valid_sql_name(schema) || !setcache__valid_sql_name(channel)) {
        return NULL;
    }
    const char *S = schema;
    const char *C = channel;
    return setcache__aprintf(
        "CREATE SCHEMA IF NOT EXISTS \"%s\";\n"
        "CREATE SEQUENCE IF NOT EXISTS \"%s\".settings_version_seq;\n"
        "CREATE TABLE IF NOT EXISTS \"%s\".settings (\n"
        "    entity_type text NOT NULL CHECK (entity_type ~ '^[a-z0-9_]{1,63}$'),\n"
        "    entity_id   text NOT NULL CHECK (octet_length(entity_id) BETWEEN 1 AND 255\n"
        "                                     AND entity_id !~ '[\\x01-\\x1f\\x7f]'),\n"
        "    key         text NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 255\n"
        "                                     AND key !~ '[\\x01-\\x1f\\x7f]'),\n"
        "    value       text NOT NULL CHECK (octet_length(value) <= 1048576),\n"
        "    version     bigint NOT NULL DEFAULT nextval('\"%s\".settings_version_seq'),\n"
        "    updated_at  timestamptz NOT NULL DEFAULT now(),\n"
        "    PRIMARY KEY (entity_type, entity_id, key)\n"
        ");\n"
        "ALTER SEQUENCE \"%s\".settings_version_seq OWNED BY \"%s\".settings.version;\n"
        "\n"
        "-- Identifiers with C1 controls or bidirectional formatting characters could\n"
        "-- deceive whoever reads them in a terminal: refused from now on. Rows from\n"
        "-- before this rule are counted and reported, never changed.\n"
        "DO $do$\n"
        "DECLARE bad bigint;\n"
        "BEGIN\n"
        "    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid =\n"
        "                   '\"%s\".settings'::regclass AND conname = "
        "'settings_identifiers_visible') THEN\n"
        "        ALTER TABLE \"%s\".settings ADD CONSTRAINT settings_identifiers_visible\n"
        "            CHECK (entity_id !~ '" SC_DECEPTIVE "' AND key !~ '" SC_DECEPTIVE
        "') NOT VALID;\n"
        "    END IF;\n"
        "    SELECT count(*) INTO bad FROM \"%s\".settings\n"
        "     WHERE entity_id ~ '" SC_DECEPTIVE "' OR key ~ '" SC_DECEPTIVE "';\n"
        "    IF bad = 0 THEN\n"
        "        ALTER TABLE \"%s\".settings VALIDATE CONSTRAINT settings_identifiers_visible;\n"
        "    ELSE\n"
        "        RAISE WARNING '%% rows of \"%s\".settings have an entity_id or key with a control "
        "or "
        "bidirectional formatting character; setcache cannot address them: rename or delete them', "
        "bad;\n"
        "    END IF;\n"
        "END\n"
        "$do$;\n"
        "\n"
        "-- Every INSERT and UPDATE gets a new version; writers give only the four\n"
        "-- columns entity_type, entity_id, key, value.\n"
        "CREATE OR REPLACE FUNCTION \"%s\".settings_stamp() RETURNS trigger\n"
        "LANGUAGE plpgsql AS $fn$\n"
        "BEGIN\n"
        "    NEW.version := nextval('\"%s\".settings_version_seq');\n"
        "    NEW.updated_at := clock_timestamp();\n"
        "    RETURN NEW;\n"
        "END\n"
        "$fn$;\n"
        "\n"
        "-- Notifications carry identifiers, operation and version, never the value:\n"
        "-- '1' US op US version US entity_type US entity_id US key (US = 0x1f).\n"
        "CREATE OR REPLACE FUNCTION \"%s\".settings_notify() RETURNS trigger\n"
        "LANGUAGE plpgsql AS $fn$\n"
        "BEGIN\n"
        "    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND\n"
        "       (OLD.entity_type, OLD.entity_id, OLD.key) IS DISTINCT FROM\n"
        "       (NEW.entity_type, NEW.entity_id, NEW.key)) THEN\n"
        "        PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', 'D', OLD.version,\n"
        "                          OLD.entity_type, OLD.entity_id, OLD.key));\n"
        "    END IF;\n"
        "    IF TG_OP <> 'DELETE' THEN\n"
        "        PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', left(TG_OP, 1), NEW.version,\n"
        "                          NEW.entity_type, NEW.entity_id, NEW.key));\n"
        "    END IF;\n"
        "    RETURN NULL;\n"
        "END\n"
        "$fn$;\n"
        "\n"
        "CREATE OR REPLACE FUNCTION \"%s\".settings_notify_truncate() RETURNS trigger\n"
        "LANGUAGE plpgsql AS $fn$\n"
        "BEGIN\n"
        "    PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', 'T', '0'));\n"
        "    RETURN NULL;\n"
        "END\n"
        "$fn$;\n"
        "\n"
        "DROP TRIGGER IF EXISTS settings_stamp ON \"%s\".settings;\n"
        "CREATE TRIGGER settings_stamp BEFORE INSERT OR UPDATE ON \"%s\".settings\n"
        "    FOR EACH ROW EXECUTE FUNCTION \"%s\".settings_stamp();\n"
        "DROP TRIGGER IF EXISTS settings_notify ON \"%s\".settings;\n"
        "CREATE TRIGGER settings_notify AFTER INSERT OR UPDATE OR DELETE ON \"%s\".settings\n"
        "    FOR EACH ROW EXECUTE FUNCTION \"%s\".settings_notify();\n"
        "DROP TRIGGER IF EXISTS settings_notify_truncate ON \"%s\".settings;\n"
        "CREATE TRIGGER settings_notify_truncate AFTER TRUNCATE ON \"%s\".settings\n"
        "    FOR EACH STATEMENT EXECUTE FUNCTION \"%s\".settings_notify_truncate();\n"
        "COMMENT ON FUNCTION \"%s\".settings_notify() IS 'setcache schema " SC_SCHEMA_REVISION
        " channel %s';\n",
        S, S, S, S, S, S, S, S, S, S, S, S, S, S, C, C, S, C, S, S, S, S, S, S, S, S, S, S, C);
}

/*
 * The GRANTs of the least-privilege roles on schema's objects: a reader may
 * use the schema and SELECT the settings (LISTEN needs no privilege); a
 * writer may also INSERT, UPDATE and DELETE them, and take versions from the
 * sequence (the stamp trigger runs as the writer; USAGE allows nextval, not
 * setval). Neither owns anything, so neither can alter the table, its
 * triggers or the sequence, and the trigger overwrites any version a writer
 * gives. role is a quoted identifier. malloc'd.
 */
char *setcache__grants_ddl(const char *schema, const char *role, bool writer)
{
    const char *S = schema;
    if (!writer) {
        return setcache__aprintf("GRANT USAGE ON SCHEMA \"%s\" TO %s;\n"
                                 "GRANT SELECT ON \"%s\".settings TO %s;\n",
                                 S, role, S, role);
    }
    return setcache__aprintf("GRANT USAGE ON SCHEMA \"%s\" TO %s;\n"
                             "GRANT SELECT, INSERT, UPDATE, DELETE ON \"%s\".settings TO %s;\n"
                             "GRANT USAGE ON SEQUENCE \"%s\".settings_version_seq TO %s;\n",
                             S, role, S, role, S, role);
}

static int exec_simple(setcache *c, PGconn *conn, const char *sql, int n, const char *const *vals,
                       PGresult **keep)
{
    int rc = SETCACHE_OK;
    PGresult *r = setcache__exec(c, conn, sql, n, vals, false, &rc);
    if (keep && r) {
        *keep = r;
    } else {
        PQclear(r);
    }
    return rc;
}

/* Does the table (a quoted, qualified name) exist? */
int setcache__table_exists(setcache *c, PGconn *conn, const char *table, bool *exists)
{
    PGresult *r = NULL;
    const char *v[1] = {table};
    int rc = exec_simple(c, conn, "SELECT to_regclass($1) IS NOT NULL", 1, v, &r);
    *exists = rc == SETCACHE_OK && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return rc;
}

/*
 * Apply ddl once, idempotently and safely under concurrent opens: in one
 * transaction under an advisory lock on the schema, unless the function fn
 * ("schema"."name"()) already carries the comment signature (the DDL sets
 * it), so opens that find it current neither fail nor lock a table. what
 * names the step in an error.
 */
int setcache__apply_ddl_once(setcache *c, PGconn *conn, const char *fn, const char *signature,
                             const char *ddl, const char *what)
{
    PGresult *r = NULL;
    int rc = exec_simple(c, conn, "BEGIN", 0, NULL, NULL);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    const char *lv[1] = {c->schema};
    rc = exec_simple(c, conn, "SELECT pg_advisory_xact_lock(hashtext('setcache:' || $1))", 1, lv,
                     NULL);
    const char *fv[1] = {fn};
    if (rc == SETCACHE_OK) {
        rc = exec_simple(c, conn, "SELECT obj_description(to_regprocedure($1), 'pg_proc')", 1, fv,
                         &r);
    }
    bool current = rc == SETCACHE_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) &&
                   strcmp(PQgetvalue(r, 0, 0), signature) == 0;
    PQclear(r);
    if (rc == SETCACHE_OK && !current) {
        /* Multi-statement text without parameters: every name in it was
         * validated and quoted by its builder. */
        PGresult *dr = PQexec(conn, ddl);
        setcache__count(c, SC_ST_QUERIES, 1);
        if (PQresultStatus(dr) != PGRES_COMMAND_OK) {
            rc = setcache__fail_pg(SETCACHE_ERR_DB, what, conn, dr);
        }
        PQclear(dr);
    }
    if (rc == SETCACHE_OK) {
        rc = exec_simple(c, conn, "COMMIT", 0, NULL, NULL);
    }
    if (rc != SETCACHE_OK && PQtransactionStatus(conn) != PQTRANS_IDLE) {
        PQclear(PQexec(conn, "ROLLBACK"));
    }
    return rc;
}

/*
 * Make sure the schema exists. With create_schema, apply the DDL once (see
 * setcache__apply_ddl_once) unless the installed revision and channel
 * already match. Without it, fail with a message that says what to do.
 */
int setcache__ensure_schema(setcache *c, PGconn *conn)
{
    if (!c->create_schema) {
        bool exists;
        int rc = setcache__table_exists(c, conn, c->sql.table, &exists);
        if (rc == SETCACHE_OK && !exists) {
            rc = setcache__fail(SETCACHE_ERR_DB,
                                "table %s does not exist: open with create_schema, or apply the "
                                "output of `setcache schema`",
                                c->sql.table);
        }
        return rc;
    }
    char *fn = setcache__aprintf("\"%s\".settings_notify()", c->schema);
    char *want = setcache__aprintf("setcache schema " SC_SCHEMA_REVISION " channel %s", c->channel);
    char *ddl = setcache__ddl(c->schema, c->channel);
    int rc = fn && want && ddl
                 ? setcache__apply_ddl_once(c, conn, fn, want, ddl, "creating the schema")
                 : setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    free(fn);
    free(want);
    free(ddl);
    return rc;
}

/* A PostgreSQL array literal of text, {"a","b\"c"}, for a text[] parameter.
 * malloc'd; NULL when out of memory. */
char *setcache__text_array(const char *const *items, size_t n)
{
    size_t need = 3;
    for (size_t i = 0; i < n; i++) {
        need += 2 * strlen(items[i]) + 3;
    }
    char *out = malloc(need);
    if (!out) {
        return NULL;
    }
    char *p = out;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }
        *p++ = '"';
        for (const char *s = items[i]; *s; s++) {
            if (*s == '"' || *s == '\\') {
                *p++ = '\\';
            }
            *p++ = *s;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return out;
}
