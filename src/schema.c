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

#define SC_SCHEMA_REVISION                                                                         \
    "6" /* 2: identifiers that cannot deceive; 3: managed settings;                                \
           4: set_many through write_many; 5: the row triggers without a                           \
           function in their WHEN; 6: functions that run with the writer's                         \
           search_path name only qualified functions and operators */
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

/* set_many's one statement on table t: for the entity (p[0], p[1]), delete
 * the keys p[2] and upsert the keys p[3] with the values p[4] (p[5]: which
 * are JSON, stored as the server renders them); rows (is_set, key, version,
 * value). The library sends it with parameters; write_many runs the same
 * with its arguments when the row triggers are to do the work. malloc'd. */
static char *many_sql(const char *t, const char *const p[6])
{
    return setcache__aprintf(
        "WITH d AS (DELETE FROM %s WHERE entity_type = %s AND entity_id = %s AND key = "
        "ANY (%s) RETURNING key, version), "
        "u AS (INSERT INTO %s (entity_type, entity_id, key, value) "
        "SELECT %s, %s, x.k, CASE WHEN x.j THEN (x.v::json)::text ELSE x.v END "
        "FROM unnest(%s, %s, %s) AS x(k, v, j) "
        "ON CONFLICT (entity_type, entity_id, key) DO UPDATE SET value = EXCLUDED.value "
        "RETURNING key, version, value) "
        "SELECT false, key, version, NULL::text FROM d UNION ALL SELECT true, key, version, value "
        "FROM u",
        t, p[0], p[1], p[2], t, p[0], p[1], p[3], p[4], p[5]);
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
    static const char *const params[6] = {"$1",         "$2",         "$3::text[]",
                                          "$4::text[]", "$5::text[]", "$6::bool[]"};
    s->many = many_sql(t, params);
    s->load_many =
        setcache__aprintf("SELECT s.entity_type, s.entity_id, s.key, s.value, s.version FROM %s s "
                          "JOIN unnest($1::text[], $2::text[]) AS x(t, i) ON s.entity_type = "
                          "x.t AND s.entity_id = x.i",
                          t);
    char *qs2 = setcache__quote_ident(schema);
    s->defs = qs2 ? setcache__aprintf("%s.definitions", qs2) : NULL;
    s->many_fn = qs2 ? setcache__aprintf("SELECT present, key, version, value FROM "
                                         "%s.write_many($1, $2, $3::text[], $4::text[], "
                                         "$5::text[], $6::boolean[])",
                                         qs2)
                     : NULL;
    s->defs_load =
        s->defs ? setcache__aprintf("SELECT d.entity_type, d.key, d.type, d.default_value, "
                                    "d.description, d.min_value::float8, d.max_value::float8, "
                                    "d.pattern, d.max_length, c.choice FROM %s d LEFT JOIN LATERAL "
                                    "unnest(d.choices) WITH ORDINALITY AS c(choice, n) ON true "
                                    "ORDER BY d.entity_type, d.key, c.n",
                                    s->defs)
                : NULL;
    s->defs_put =
        s->defs ? setcache__aprintf(
                      "INSERT INTO %s AS d (entity_type, key, type, default_value, description, "
                      "min_value, max_value, choices, pattern, max_length) VALUES ($1, $2, $3, $4, "
                      "$5, $6::numeric, $7::numeric, $8::text[], $9, $10::integer) ON CONFLICT "
                      "(entity_type, key) DO UPDATE SET type = EXCLUDED.type, default_value = "
                      "EXCLUDED.default_value, description = EXCLUDED.description, min_value = "
                      "EXCLUDED.min_value, max_value = EXCLUDED.max_value, choices = "
                      "EXCLUDED.choices, pattern = EXCLUDED.pattern, max_length = "
                      "EXCLUDED.max_length WHERE (d.type, d.default_value, d.description, "
                      "d.min_value, d.max_value, d.choices, d.pattern, d.max_length) IS DISTINCT "
                      "FROM (EXCLUDED.type, EXCLUDED.default_value, EXCLUDED.description, "
                      "EXCLUDED.min_value, EXCLUDED.max_value, EXCLUDED.choices, "
                      "EXCLUDED.pattern, EXCLUDED.max_length)",
                      s->defs)
                : NULL;
    s->defs_bad =
        s->defs && qs2
            ? setcache__aprintf("SELECT count(*) OVER (), s.entity_type, s.entity_id, "
                                "s.key, p.problem FROM %s s JOIN %s d USING (entity_type, "
                                "key) CROSS JOIN LATERAL (SELECT %s.value_problem(d, "
                                "s.value) AS problem) p WHERE p.problem IS NOT NULL "
                                "ORDER BY 2, 3, 4 LIMIT 3",
                                t, s->defs, qs2)
            : NULL;
    s->hist_max = setcache__aprintf(
        "SELECT f.t, f.i, f.k, max(h.version) FROM unnest($1::text[], $2::text[], $3::text[]) "
        "AS f(t, i, k) JOIN \"%s\".history h ON h.entity_type = f.t AND h.entity_id = f.i AND "
        "h.key = f.k GROUP BY 1, 2, 3",
        schema);
    free(qs2);
    if (!s->load || !s->load_type || !s->upsert || !s->upsert_json || !s->del || !s->many ||
        !s->many_fn || !s->load_many || !s->defs || !s->defs_load || !s->defs_put || !s->defs_bad ||
        !s->hist_max) {
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
    free(s->many_fn);
    free(s->load_many);
    free(s->defs);
    free(s->defs_load);
    free(s->defs_put);
    free(s->defs_bad);
    free(s->hist_max);
    memset(s, 0, sizeof *s);
}

/*
 * The DDL for one schema and channel. Both names must have passed
 * setcache__valid_sql_name ([a-z_][a-z0-9_]*), so they are safe inside the
 * quoted identifiers and string literals below. malloc'd.
 */
static char *core_ddl(const char *schema, const char *channel)
{
    const char *S = schema;
    const char *C = channel;
    char *notify = setcache__notify_fn_ddl(schema, channel, "settings_notify");
    char *out =
        !notify
            ? NULL
            : setcache__aprintf(
                  "CREATE SCHEMA IF NOT EXISTS \"%s\";\n"
                  "CREATE SEQUENCE IF NOT EXISTS \"%s\".settings_version_seq;\n"
                  "CREATE TABLE IF NOT EXISTS \"%s\".settings (\n"
                  "    entity_type text NOT NULL CHECK (entity_type ~ '^[a-z0-9_]{1,63}$'),\n"
                  "    entity_id   text NOT NULL CHECK (octet_length(entity_id) BETWEEN 1 AND 255\n"
                  "                                     AND entity_id !~ '[\\x01-\\x1f\\x7f]'),\n"
                  "    key         text NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 255\n"
                  "                                     AND key !~ '[\\x01-\\x1f\\x7f]'),\n"
                  "    value       text NOT NULL CHECK (octet_length(value) <= 1048576),\n"
                  "    version     bigint NOT NULL DEFAULT "
                  "nextval('\"%s\".settings_version_seq'),\n"
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
                  "        ALTER TABLE \"%s\".settings ADD CONSTRAINT "
                  "settings_identifiers_visible\n"
                  "            CHECK (entity_id !~ '" SC_DECEPTIVE "' AND key !~ '" SC_DECEPTIVE
                  "') NOT VALID;\n"
                  "    END IF;\n"
                  "    SELECT count(*) INTO bad FROM \"%s\".settings\n"
                  "     WHERE entity_id ~ '" SC_DECEPTIVE "' OR key ~ '" SC_DECEPTIVE "';\n"
                  "    IF bad = 0 THEN\n"
                  "        ALTER TABLE \"%s\".settings VALIDATE CONSTRAINT "
                  "settings_identifiers_visible;\n"
                  "    ELSE\n"
                  "        RAISE WARNING '%% rows of \"%s\".settings have an entity_id or key with "
                  "a control "
                  "or "
                  "bidirectional formatting character; setcache cannot address them: rename or "
                  "delete them', "
                  "bad;\n"
                  "    END IF;\n"
                  "END\n"
                  "$do$;\n"
                  "\n"
                  "-- Every INSERT and UPDATE gets a new version; writers give only the four\n"
                  "-- columns entity_type, entity_id, key, value. (The stamp runs with the\n"
                  "-- writer's search_path: every name in it is qualified, so a writer's own\n"
                  "-- functions can't stand in for them.)\n"
                  "CREATE OR REPLACE FUNCTION \"%s\".settings_stamp() RETURNS trigger\n"
                  "LANGUAGE plpgsql AS $fn$\n"
                  "BEGIN\n"
                  "    NEW.version := pg_catalog.nextval('\"%s\".settings_version_seq');\n"
                  "    NEW.updated_at := pg_catalog.clock_timestamp();\n"
                  "    RETURN NEW;\n"
                  "END\n"
                  "$fn$;\n"
                  "\n"
                  "%s"
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
                  "CREATE TRIGGER settings_notify AFTER INSERT OR UPDATE OR DELETE ON "
                  "\"%s\".settings\n"
                  "    FOR EACH ROW EXECUTE FUNCTION \"%s\".settings_notify();\n"
                  "DROP TRIGGER IF EXISTS settings_notify_truncate ON \"%s\".settings;\n"
                  "CREATE TRIGGER settings_notify_truncate AFTER TRUNCATE ON \"%s\".settings\n"
                  "    FOR EACH STATEMENT EXECUTE FUNCTION \"%s\".settings_notify_truncate();\n"
                  "COMMENT ON FUNCTION \"%s\".settings_notify() IS 'setcache "
                  "schema " SC_SCHEMA_REVISION " channel %s';\n",
                  S, S, S, S, S, S, S, S, S, S, S, S, S, notify ? notify : "", S, C, S, S, S, S, S,
                  S, S, S, S, S, C);
    free(notify);
    return out;
}

/* A row trigger function NAME that only announces a change of a settings
 * row (the managed schema replaces settings_notify with one that also
 * checks and records it; a subscriber announces replicated rows with this
 * one). Notifications carry identifiers, operation and version, never the
 * value: '1' US op US version US entity_type US entity_id US key (US =
 * 0x1f). malloc'd. */
char *setcache__notify_fn_ddl(const char *schema, const char *channel, const char *name)
{
    return setcache__aprintf(
        "-- Notifications carry identifiers, operation and version, never the value:\n"
        "-- '1' US op US version US entity_type US entity_id US key (US = 0x1f).\n"
        "CREATE OR REPLACE FUNCTION \"%s\".%s() RETURNS trigger\n"
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
        "$fn$;\n",
        schema, name, channel, channel);
}

/*
 * Managed settings: shared definitions (type, default, description, rules),
 * enforced by a trigger on every INSERT and UPDATE of the settings whoever
 * writes, and the history of every change, written by triggers. Names as for
 * core_ddl. malloc'd.
 */
static char *managed_ddl(const char *schema, const char *channel)
{
    const char *S = schema;
    const char *C = channel;
    char *part[9];
    /* definitions and the rules */
    part[0] = setcache__aprintf(
        "CREATE TABLE IF NOT EXISTS \"%s\".definitions (\n"
        "    entity_type   text NOT NULL CHECK (entity_type ~ '^[a-z0-9_]{1,63}$'),\n"
        "    key           text NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 255\n"
        "                                       AND key !~ '[\\x01-\\x1f\\x7f]'),\n"
        "    type          text NOT NULL CHECK (type IN ('string', 'int', 'double', 'bool', "
        "'json')),\n"
        "    default_value text CHECK (octet_length(default_value) <= 1048576),\n"
        "    description   text NOT NULL DEFAULT '',\n"
        "    min_value     numeric,\n"
        "    max_value     numeric,\n"
        "    choices       text[] CHECK (cardinality(choices) > 0),\n"
        "    pattern       text,\n"
        "    max_length    integer CHECK (max_length > 0),\n"
        "    version       bigint NOT NULL DEFAULT nextval('\"%s\".settings_version_seq'),\n"
        "    updated_at    timestamptz NOT NULL DEFAULT now(),\n"
        "    PRIMARY KEY (entity_type, key),\n"
        "    CONSTRAINT definitions_range CHECK (min_value IS NULL OR max_value IS NULL\n"
        "                                        OR min_value <= max_value),\n"
        "    CONSTRAINT definitions_numbers_only CHECK ((min_value IS NULL AND max_value IS "
        "NULL)\n"
        "                                               OR type IN ('int', 'double')),\n"
        "    CONSTRAINT definitions_strings_only CHECK ((choices IS NULL AND pattern IS NULL\n"
        "                                                AND max_length IS NULL) OR type = "
        "'string')\n"
        ");\n",
        S, S);
    part[1] = setcache__aprintf(
        "-- What is wrong with value v under definition d (NULL: nothing). The same\n"
        "-- rules as the library's (value.c): int = a decimal in the bigint range;\n"
        "-- double = decimal notation, finite; bool = true/t/1/yes/on or\n"
        "-- false/f/0/no/off (any case); json = what the server's json type takes.\n"
        "CREATE OR REPLACE FUNCTION \"%s\".value_problem(d \"%s\".definitions, v text)\n"
        "RETURNS text LANGUAGE plpgsql STABLE AS $fn$\n"
        "DECLARE n numeric;\n"
        "BEGIN\n"
        "    -- as few statements as the rules allow: a single write runs it\n"
        "    CASE d.type\n"
        "    WHEN 'int' THEN\n"
        "        IF v !~ '^[+-]?[0-9]{1,30}$' THEN\n"
        "            RETURN format('%%s is not an int (rule: type)', quote_literal(left(v, 80)));\n"
        "        END IF;\n"
        "        n := v::numeric;\n"
        "        IF n < -9223372036854775808 OR n > 9223372036854775807 THEN\n"
        "            RETURN format('%%s is outside the int range (rule: type)', v);\n"
        "        END IF;\n"
        "    WHEN 'double' THEN\n"
        "        IF v !~ '^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$' THEN\n"
        "            RETURN format('%%s is not a double (rule: type)', quote_literal(left(v, "
        "80)));\n"
        "        END IF;\n"
        "        BEGIN\n"
        "            n := v::double precision::numeric;\n"
        "        EXCEPTION WHEN numeric_value_out_of_range THEN\n"
        "            RETURN format('%%s is outside the double range (rule: type)', left(v, 80));\n"
        "        END;\n"
        "    WHEN 'bool' THEN\n"
        "        IF lower(v) NOT IN ('true', 't', '1', 'yes', 'on', 'false', 'f', '0', 'no', "
        "'off') THEN\n"
        "            RETURN format('%%s is not a bool (rule: type)', quote_literal(left(v, 80)));\n"
        "        END IF;\n"
        "        RETURN NULL;\n"
        "    WHEN 'json' THEN\n"
        "        BEGIN\n"
        "            PERFORM v::json;\n"
        "        EXCEPTION WHEN invalid_text_representation THEN\n"
        "            RETURN format('%%s is not JSON (rule: type)', quote_literal(left(v, 80)));\n"
        "        END;\n"
        "        RETURN NULL;\n"
        "    ELSE\n"
        "        -- a string: only strings have choices, a pattern, a length\n"
        "        IF (v = ANY (d.choices)) IS FALSE THEN\n"
        "            RETURN format('%%s is not one of %%s (rule: choices)', "
        "quote_literal(left(v, 80)),\n"
        "                          array_to_string(d.choices, ', '));\n"
        "        END IF;\n"
        "        IF v !~ d.pattern THEN\n"
        "            RETURN format('%%s does not match %%s (rule: pattern)', "
        "quote_literal(left(v, 80)),\n"
        "                          quote_literal(d.pattern));\n"
        "        END IF;\n"
        "        IF char_length(v) > d.max_length THEN\n"
        "            RETURN format('%%s has %%s characters, more than %%s (rule: max_length)',\n"
        "                          quote_literal(left(v, 80)), char_length(v), d.max_length);\n"
        "        END IF;\n"
        "        RETURN NULL;\n"
        "    END CASE;\n"
        "    -- a number (no minimum or maximum: NULL, not below or above)\n"
        "    IF n < d.min_value THEN\n"
        "        RETURN format('%%s is below the minimum %%s (rule: min)', v, d.min_value);\n"
        "    END IF;\n"
        "    IF n > d.max_value THEN\n"
        "        RETURN format('%%s is above the maximum %%s (rule: max)', v, d.max_value);\n"
        "    END IF;\n"
        "    RETURN NULL;\n"
        "END\n"
        "$fn$;\n"
        "\n",
        S, S);
    /* definitions' own checks and announcements */
    part[2] = setcache__aprintf(
        "-- A definition's pattern must compile and its default obey its own rules.\n"
        "-- Writers write definitions: this and definitions_notify run with a fixed\n"
        "-- search_path (they are called once per definition written), so a\n"
        "-- writer's own functions and operators can't stand in for the built-in.\n"
        "CREATE OR REPLACE FUNCTION \"%s\".definitions_check() RETURNS trigger\n"
        "LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$\n"
        "DECLARE problem text;\n"
        "BEGIN\n"
        "    IF NEW.pattern IS NOT NULL THEN\n"
        "        PERFORM '' ~ NEW.pattern;\n"
        "    END IF;\n"
        "    IF NEW.default_value IS NOT NULL THEN\n"
        "        problem := \"%s\".value_problem(NEW, NEW.default_value);\n"
        "        IF problem IS NOT NULL THEN\n"
        "            RAISE EXCEPTION 'invalid default for %% %%: %%', NEW.entity_type, NEW.key, "
        "problem\n"
        "            USING ERRCODE = 'check_violation', CONSTRAINT = 'setcache_definition';\n"
        "        END IF;\n"
        "    END IF;\n"
        "    NEW.version := nextval('\"%s\".settings_version_seq');\n"
        "    NEW.updated_at := clock_timestamp();\n"
        "    RETURN NEW;\n"
        "END\n"
        "$fn$;\n"
        "\n"
        "-- Definition changes are announced like settings: op F, entity_id '*'.\n"
        "CREATE OR REPLACE FUNCTION \"%s\".definitions_notify() RETURNS trigger\n"
        "LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$\n"
        "DECLARE r \"%s\".definitions;\n"
        "BEGIN\n"
        "    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;\n"
        "    PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', 'F', r.version, r.entity_type, "
        "'*',\n"
        "                      r.key));\n"
        "    RETURN NULL;\n"
        "END\n"
        "$fn$;\n"
        "\n",
        S, S, S, S, S, C);
    /* history */
    part[3] = setcache__aprintf(
        "-- History: one row per change of a setting, written by trigger in the\n"
        "-- changing transaction (so it commits or rolls back with it). TRUNCATE\n"
        "-- writes one row per removed setting. changed_at is the clock when the\n"
        "-- row changed (inside its transaction); role is the session's login role.\n"
        "CREATE TABLE IF NOT EXISTS \"%s\".history (\n"
        "    id               bigserial PRIMARY KEY,\n"
        "    entity_type      text NOT NULL,\n"
        "    entity_id        text NOT NULL,\n"
        "    key              text NOT NULL,\n"
        "    op               text NOT NULL, -- insert, update, delete, truncate\n"
        "    old_value        text,\n"
        "    new_value        text,\n"
        "    version          bigint,\n"
        "    changed_at       timestamptz NOT NULL DEFAULT clock_timestamp(),\n"
        "    role             text NOT NULL DEFAULT session_user,\n"
        "    application_name text DEFAULT current_setting('application_name'),\n"
        "    client_addr      inet DEFAULT inet_client_addr(),\n"
        "    xid              bigint NOT NULL DEFAULT txid_current()\n"
        ");\n"
        "-- no CHECK on op since revision 5 (preparing it cost every write 5%%);\n"
        "-- only the schema's functions and owner can write the history\n"
        "ALTER TABLE \"%s\".history DROP CONSTRAINT IF EXISTS history_op_check;\n"
        "CREATE INDEX IF NOT EXISTS history_by_setting ON \"%s\".history (entity_type, "
        "entity_id, key, id);\n"
        "-- rows arrive in time order: a BRIN index serves --since and pruning at\n"
        "-- almost no cost per insert\n"
        "CREATE INDEX IF NOT EXISTS history_by_time ON \"%s\".history USING brin (changed_at);\n"
        "\n",
        S, S, S, S);
    /* the checks and history of every settings row */
    part[4] = setcache__aprintf(
        "-- The row trigger that announces a change (see the core DDL) also checks\n"
        "-- it against its key's definition, whoever writes it (an invalid value\n"
        "-- fails the statement: check_violation, constraint setcache_definition,\n"
        "-- and nothing is stored), and writes its history. One call per row does\n"
        "-- all three. It runs as the owner: writers get no right on the history,\n"
        "-- so they can't forge or erase it.\n"
        "CREATE OR REPLACE FUNCTION \"%s\".settings_notify() RETURNS trigger\n"
        "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$\n"
        "DECLARE d \"%s\".definitions; problem text;\n"
        "    renamed boolean := TG_OP = 'UPDATE' AND (OLD.entity_type, OLD.entity_id, OLD.key)\n"
        "                       IS DISTINCT FROM (NEW.entity_type, NEW.entity_id, NEW.key);\n"
        "BEGIN\n"
        "    IF TG_OP <> 'DELETE' THEN\n"
        "        SELECT * INTO d FROM \"%s\".definitions\n"
        "         WHERE entity_type = NEW.entity_type AND key = NEW.key;\n"
        "        IF FOUND THEN\n"
        "            problem := \"%s\".value_problem(d, NEW.value);\n"
        "            IF problem IS NOT NULL THEN\n"
        "                RAISE EXCEPTION 'invalid value for %% %% %%: %%', NEW.entity_type,\n"
        "                      NEW.entity_id, NEW.key, problem\n"
        "                USING ERRCODE = 'check_violation', CONSTRAINT = 'setcache_definition',\n"
        "                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;\n"
        "            END IF;\n"
        "        END IF;\n"
        "    END IF;\n"
        "    IF TG_OP = 'DELETE' OR renamed THEN\n"
        "        INSERT INTO \"%s\".history (entity_type, entity_id, key, op, old_value, "
        "version)\n"
        "        VALUES (OLD.entity_type, OLD.entity_id, OLD.key, 'delete', OLD.value, "
        "OLD.version);\n"
        "        PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', 'D', OLD.version,\n"
        "                          OLD.entity_type, OLD.entity_id, OLD.key));\n"
        "    END IF;\n"
        "    IF TG_OP <> 'DELETE' THEN\n"
        "        INSERT INTO \"%s\".history (entity_type, entity_id, key, op, old_value, "
        "new_value,\n"
        "                                   version)\n"
        "        VALUES (NEW.entity_type, NEW.entity_id, NEW.key,\n"
        "                CASE WHEN TG_OP = 'UPDATE' AND NOT renamed THEN 'update' ELSE 'insert' "
        "END,\n"
        "                CASE WHEN TG_OP = 'UPDATE' AND NOT renamed THEN OLD.value END, "
        "NEW.value,\n"
        "                NEW.version);\n"
        "        PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', left(TG_OP, 1), "
        "NEW.version,\n"
        "                          NEW.entity_type, NEW.entity_id, NEW.key));\n"
        "    END IF;\n"
        "    RETURN NULL;\n"
        "END\n"
        "$fn$;\n"
        "\n"
        "CREATE OR REPLACE FUNCTION \"%s\".settings_history_truncate() RETURNS trigger\n"
        "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$\n"
        "BEGIN\n"
        "    INSERT INTO \"%s\".history (entity_type, entity_id, key, op, old_value, version)\n"
        "    SELECT entity_type, entity_id, key, 'truncate', value, version FROM "
        "\"%s\".settings;\n"
        "    RETURN NULL;\n"
        "END\n"
        "$fn$;\n"
        "\n",
        S, S, S, S, S, C, S, C, S, S, S);
    /* set_many's function; its fallback runs the library's own statement */
    static const char *const args[6] = {"t", "i", "dels", "ks", "vs", "js"};
    char *table = setcache__aprintf("\"%s\".settings", S);
    char *fallback = table ? many_sql(table, args) : NULL;
    free(table);
    part[5] =
        !fallback
            ? NULL
            : setcache__aprintf(
                  "-- setcache_set_many's path: one call checks every value with one query\n"
                  "-- and writes the rows, their history and their notifications set-based\n"
                  "-- (the same rows, versions, history and announcements as the row\n"
                  "-- triggers', at a fraction of their cost per row). The row triggers\n"
                  "-- stand aside for it alone: standing_aside() is true only while this\n"
                  "-- function runs (its SET clause) as the owner that created the schema,\n"
                  "-- and settings_stamp refuses any other write while setcache.batch is\n"
                  "-- on. It runs as that owner, so it checks the caller's own privileges\n"
                  "-- on the settings first (anyone may call it; it does only what the\n"
                  "-- caller may do).\n"
                  "DO $do$\n"
                  "BEGIN\n"
                  "    EXECUTE format($f$CREATE OR REPLACE FUNCTION \"%s\".standing_aside() "
                  "RETURNS boolean\n"
                  "        LANGUAGE sql STABLE AS $b$SELECT coalesce(pg_catalog.current_setting(\n"
                  "        'setcache.batch', true) OPERATOR(pg_catalog.=) 'on', false)\n"
                  "        AND current_user OPERATOR(pg_catalog.=) %%L$b$$f$, current_user);\n"
                  "END\n"
                  "$do$;\n"
                  "\n"
                  "CREATE OR REPLACE FUNCTION \"%s\".write_many(t text, i text, dels text[], ks "
                  "text[],\n"
                  "                                            vs text[], js boolean[])\n"
                  "RETURNS TABLE (present boolean, key text, version bigint, value text)\n"
                  "LANGUAGE plpgsql SECURITY DEFINER\n"
                  "SET search_path = pg_catalog, pg_temp SET setcache.batch = 'on' AS $fn$\n"
                  "#variable_conflict use_column\n"
                  "DECLARE b record; r record; todo text[] := ks; done text[]; tries int := 0;\n"
                  "    caller text := CASE WHEN current_setting('role') = 'none' THEN "
                  "session_user\n"
                  "                   ELSE current_setting('role') END;\n"
                  "BEGIN\n"
                  "    IF NOT (has_table_privilege(caller, '\"%s\".settings', 'SELECT')\n"
                  "            AND has_table_privilege(caller, '\"%s\".settings', 'INSERT')\n"
                  "            AND has_table_privilege(caller, '\"%s\".settings', 'UPDATE')\n"
                  "            AND (cardinality(dels) = 0\n"
                  "                 OR has_table_privilege(caller, '\"%s\".settings', 'DELETE'))) "
                  "THEN\n"
                  "        RAISE EXCEPTION 'permission denied for table settings'\n"
                  "        USING ERRCODE = 'insufficient_privilege';\n"
                  "    END IF;\n"
                  "    IF NOT \"%s\".standing_aside()\n"
                  "       OR (SELECT count(*) FROM pg_catalog.pg_trigger t\n"
                  "             JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid\n"
                  "            WHERE t.tgrelid = '\"%s\".settings'::regclass\n"
                  "              AND ((t.tgname = 'settings_stamp'\n"
                  "                    AND p.prosrc LIKE '%%standing_aside()%%')\n"
                  "                   OR (t.tgname = 'settings_notify' AND t.tgqual IS NOT "
                  "NULL))) <> 2\n"
                  "    THEN\n"
                  "        -- not run as the schema's creator (its owner changed), or the row\n"
                  "        -- triggers would not stand aside (an older release applied its\n"
                  "        -- DDL again): the row triggers do it all (all of them: the\n"
                  "        -- setting goes back to off until the function returns)\n"
                  "        PERFORM set_config('setcache.batch', 'off', true);\n"
                  "        RETURN QUERY %s;\n"
                  "        RETURN;\n"
                  "    END IF;\n",
                  S, S, S, S, S, S, S, S, fallback);
    free(fallback);
    part[6] = setcache__aprintf(
        "    SELECT x.k, p.problem INTO b\n"
        "      FROM unnest(ks, vs, js) WITH ORDINALITY AS x(k, v, j, n)\n"
        "      JOIN \"%s\".definitions d ON d.entity_type = t AND d.key = x.k,\n"
        "      LATERAL (SELECT \"%s\".value_problem(d, CASE WHEN x.j THEN (x.v::json)::text\n"
        "                                              ELSE x.v END) AS problem) p\n"
        "     WHERE p.problem IS NOT NULL ORDER BY x.n LIMIT 1;\n"
        "    IF FOUND THEN\n"
        "        RAISE EXCEPTION 'invalid value for %% %% %%: %%', t, i, b.k, b.problem\n"
        "        USING ERRCODE = 'check_violation', CONSTRAINT = 'setcache_definition',\n"
        "              SCHEMA = '%s', TABLE = 'settings';\n"
        "    END IF;\n"
        "    -- the rows there are locked and read (their old values), the rest\n"
        "    -- inserted; a key another writer inserted meanwhile is written again\n"
        "    -- by the next pass (a few, then a serialization failure)\n"
        "    LOOP\n"
        "        done := '{}';\n"
        "        FOR r IN\n"
        "        WITH x AS (SELECT x.k, CASE WHEN x.j THEN (x.v::json)::text ELSE x.v END AS v\n"
        "                     FROM unnest(ks, vs, js) AS x(k, v, j) WHERE x.k = ANY (todo)),\n"
        "        o AS (SELECT s.key, s.value FROM \"%s\".settings s\n"
        "               WHERE s.entity_type = t AND s.entity_id = i AND s.key = ANY (todo)\n"
        "               FOR UPDATE),\n"
        "        d AS (DELETE FROM \"%s\".settings s WHERE s.entity_type = t AND s.entity_id = i\n"
        "                 AND s.key = ANY (dels) RETURNING s.key, s.version, s.value),\n"
        "        ins AS (INSERT INTO \"%s\".settings AS s (entity_type, entity_id, key, value,\n"
        "                                                  version, updated_at)\n"
        "                SELECT t, i, x.k, x.v, nextval('\"%s\".settings_version_seq'),\n"
        "                       clock_timestamp()\n"
        "                  FROM x WHERE x.k NOT IN (SELECT o.key FROM o)\n"
        "                ON CONFLICT DO NOTHING RETURNING s.key, s.version, s.value),\n"
        "        upd AS (UPDATE \"%s\".settings s\n"
        "                   SET value = x.v, version = nextval('\"%s\".settings_version_seq'),\n"
        "                       updated_at = clock_timestamp()\n"
        "                  FROM x JOIN o ON o.key = x.k\n"
        "                 WHERE s.entity_type = t AND s.entity_id = i AND s.key = x.k\n"
        "                RETURNING s.key, s.version, s.value, o.value AS old),\n"
        "        a AS (SELECT 'D' AS op, d.key, d.version, d.value AS old, NULL::text AS new\n"
        "                FROM d\n"
        "              UNION ALL SELECT 'I', ins.key, ins.version, NULL, ins.value FROM ins\n"
        "              UNION ALL SELECT 'U', upd.key, upd.version, upd.old, upd.value FROM upd),\n"
        "        h AS (INSERT INTO \"%s\".history (entity_type, entity_id, key, op, old_value,\n"
        "                                         new_value, version)\n"
        "              SELECT t, i, a.key, CASE a.op WHEN 'D' THEN 'delete' WHEN 'I' THEN "
        "'insert'\n"
        "                     ELSE 'update' END, a.old, a.new, a.version FROM a)\n"
        "        SELECT * FROM a\n"
        "        LOOP\n"
        "            PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', r.op, r.version, t, i,\n"
        "                                              r.key));\n"
        "            present := r.op <> 'D'; key := r.key; version := r.version; value := r.new;\n"
        "            IF present THEN\n"
        "                done := done || r.key;\n"
        "            END IF;\n"
        "            RETURN NEXT;\n"
        "        END LOOP;\n"
        "        EXIT WHEN cardinality(done) = cardinality(todo);\n"
        "        todo := ARRAY(SELECT k FROM unnest(todo) AS k WHERE k <> ALL (done));\n"
        "        dels := '{}';\n"
        "        tries := tries + 1;\n"
        "        IF tries > 3 THEN\n"
        "            RAISE EXCEPTION 'set_many: keys inserted by other writers at the same time, "
        "'\n"
        "                            'again and again: %%', todo\n"
        "            USING ERRCODE = 'serialization_failure';\n"
        "        END IF;\n"
        "    END LOOP;\n"
        "END\n"
        "$fn$;\n"
        "\n",
        S, S, S, S, S, S, S, S, S, S, C);
    /* the stamp, as the managed schema makes it */
    part[7] = setcache__aprintf(
        "-- Every INSERT and UPDATE gets a new version (as in the core DDL) but\n"
        "-- the rows write_many writes itself (it gives their versions). With\n"
        "-- setcache.batch on only write_many, run as the schema's creator, may\n"
        "-- write: settings_notify's WHEN trusts the setting, so any other write\n"
        "-- with it on - a DELETE too - fails here, before the row changes.\n"
        "-- (Checked in the body, not in a WHEN: a trigger's WHEN is read and\n"
        "-- prepared again for every statement, a cost every write would pay.)\n"
        "-- It runs with the writer's search_path, which the writer chooses: every\n"
        "-- function and operator in it (and in standing_aside(), which is inlined\n"
        "-- here) is qualified, so a writer's own can't stand in for them.\n"
        "CREATE OR REPLACE FUNCTION \"%s\".settings_stamp() RETURNS trigger\n"
        "LANGUAGE plpgsql AS $fn$\n"
        "BEGIN\n"
        "    IF pg_catalog.current_setting('setcache.batch', true) OPERATOR(pg_catalog.=) 'on' "
        "THEN\n"
        "        IF NOT \"%s\".standing_aside() THEN\n"
        "            RAISE EXCEPTION 'setcache.batch is reserved for \"%s\".write_many'\n"
        "            USING ERRCODE = 'insufficient_privilege',\n"
        "                  HINT = 'Reset it: every other write is checked, versioned "
        "and recorded.';\n"
        "        END IF;\n"
        "    ELSIF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN\n"
        "        NEW.version := pg_catalog.nextval('\"%s\".settings_version_seq');\n"
        "        NEW.updated_at := pg_catalog.clock_timestamp();\n"
        "    END IF;\n"
        "    IF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN\n"
        "        RETURN OLD;\n"
        "    END IF;\n"
        "    RETURN NEW;\n"
        "END\n"
        "$fn$;\n"
        "\n",
        S, S, S, S);
    /* the triggers */
    part[8] = setcache__aprintf(
        "-- The stamp also sees DELETEs (it refuses them with setcache.batch on but\n"
        "-- for write_many). The notification trigger's WHEN is as small as it can\n"
        "-- be (it is prepared again for every statement): settings_stamp has\n"
        "-- made sure only write_many runs with the setting on.\n"
        "DROP TRIGGER IF EXISTS settings_stamp ON \"%s\".settings;\n"
        "CREATE TRIGGER settings_stamp BEFORE INSERT OR UPDATE OR DELETE ON \"%s\".settings\n"
        "    FOR EACH ROW EXECUTE FUNCTION \"%s\".settings_stamp();\n"
        "DROP TRIGGER IF EXISTS settings_notify ON \"%s\".settings;\n"
        "CREATE TRIGGER settings_notify AFTER INSERT OR UPDATE OR DELETE ON \"%s\".settings\n"
        "    FOR EACH ROW WHEN (current_setting('setcache.batch', true) IS DISTINCT FROM 'on')\n"
        "    EXECUTE FUNCTION \"%s\".settings_notify();\n"
        "DROP TRIGGER IF EXISTS settings_history_truncate ON \"%s\".settings;\n"
        "CREATE TRIGGER settings_history_truncate BEFORE TRUNCATE ON \"%s\".settings\n"
        "    FOR EACH STATEMENT EXECUTE FUNCTION \"%s\".settings_history_truncate();\n"
        "DROP TRIGGER IF EXISTS definitions_check ON \"%s\".definitions;\n"
        "CREATE TRIGGER definitions_check BEFORE INSERT OR UPDATE ON \"%s\".definitions\n"
        "    FOR EACH ROW EXECUTE FUNCTION \"%s\".definitions_check();\n"
        "DROP TRIGGER IF EXISTS definitions_notify ON \"%s\".definitions;\n"
        "CREATE TRIGGER definitions_notify AFTER INSERT OR UPDATE OR DELETE ON "
        "\"%s\".definitions\n"
        "    FOR EACH ROW EXECUTE FUNCTION \"%s\".definitions_notify();\n",
        S, S, S, S, S, S, S, S, S, S, S, S, S, S, S);
    char *all = NULL;
    bool whole = true;
    for (int k = 0; k < 9; k++) {
        whole = whole && part[k];
    }
    if (whole) {
        all = setcache__aprintf("%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%s", part[0], part[1], part[2],
                                part[3], part[4], part[5], part[6], part[7], part[8]);
    }
    for (int k = 0; k < 9; k++) {
        free(part[k]);
    }
    return all;
}

/* The whole DDL: core_ddl, then managed_ddl. NULL for an invalid name or
 * out of memory. */
char *setcache__ddl(const char *schema, const char *channel)
{
    if (!setcache__valid_sql_name(schema) || !setcache__valid_sql_name(channel)) {
        return NULL;
    }
    char *core = core_ddl(schema, channel);
    char *managed = managed_ddl(schema, channel);
    char *all = core && managed ? setcache__aprintf("%s\n%s", core, managed) : NULL;
    free(core);
    free(managed);
    return all;
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
                                 "GRANT SELECT ON \"%s\".settings, \"%s\".definitions, "
                                 "\"%s\".history TO %s;\n",
                                 S, role, S, S, S, role);
    }
    return setcache__aprintf("GRANT USAGE ON SCHEMA \"%s\" TO %s;\n"
                             "GRANT SELECT, INSERT, UPDATE, DELETE ON \"%s\".settings TO %s;\n"
                             "GRANT SELECT, INSERT, UPDATE ON \"%s\".definitions TO %s;\n"
                             "GRANT SELECT ON \"%s\".history TO %s;\n"
                             "GRANT USAGE ON SEQUENCE \"%s\".settings_version_seq TO %s;\n",
                             S, role, S, role, S, role, S, role, S, role);
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
 * The kind (0: "setcache schema N channel ...", 1: "setcache map N channel
 * ...") and revision N of a signature, *rest pointing past N; kind -1 when
 * the text has neither shape.
 */
static int signature_revision(const char *sig, long *rev, const char **rest)
{
    static const char *const kinds[2] = {"setcache schema ", "setcache map "};
    for (int k = 0; k < 2; k++) {
        size_t n = strlen(kinds[k]);
        if (strncmp(sig, kinds[k], n) == 0 && sig[n] >= '0' && sig[n] <= '9') {
            char *end;
            *rev = strtol(sig + n, &end, 10);
            *rest = end;
            return k;
        }
    }
    return -1;
}

/*
 * A signature installed by a newer release (a higher revision of the same
 * kind; what follows the revision keeps its form across revisions, so it
 * can be compared): the DDL is left as it is - an older release applying its own
 * again would undo the newer one's changes, fixes included, during a
 * rolling upgrade. Fine when the rest (channel, table, columns) matches;
 * otherwise an error that says what to do. 0: not newer; 1: newer and
 * matching; -1: newer, not matching (*rc set).
 */
static int newer_release(setcache *c, const char *installed, const char *signature, int *rc)
{
    long have = 0, mine = 0;
    const char *irest = NULL, *mrest = NULL;
    int kind = signature_revision(installed, &have, &irest);
    if (kind < 0 || signature_revision(signature, &mine, &mrest) != kind || have <= mine) {
        return 0;
    }
    if (strcmp(irest, mrest) == 0) {
        setcache__log(c, SETCACHE_LOG_INFO, "'%s' is newer than this release's '%s': left as it is",
                      installed, signature);
        return 1;
    }
    *rc = setcache__fail(SETCACHE_ERR_DB,
                         "'%s' was set up by a newer release (this one makes '%s'): apply the "
                         "newer release's `setcache schema` for this configuration",
                         installed, signature);
    return -1;
}

/*
 * Apply ddl once, idempotently and safely under concurrent opens: in one
 * transaction under an advisory lock on the schema, unless the function fn
 * ("schema"."name"()) already carries the comment signature (the DDL sets
 * it), so opens that find it current neither fail nor lock a table, or
 * carries a newer release's (see newer_release). what names the step in an
 * error.
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
    bool installed = rc == SETCACHE_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0);
    bool current = installed && strcmp(PQgetvalue(r, 0, 0), signature) == 0;
    if (installed && !current && newer_release(c, PQgetvalue(r, 0, 0), signature, &rc) != 0) {
        current = true; /* left as it is, or rc says why not */
    }
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
