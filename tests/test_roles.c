/* Least privilege with real roles: what `setcache schema --reader-role
 * --writer-role` grants is enough to read and follow (reader) or also write
 * (writer), and nothing more. */
#include "harness.h"

#include <stdarg.h>

static char reader[64], writer[64], nobody[64];

static void drop_roles(void)
{
    const char *roles[3] = {reader, writer, nobody};
    for (int i = 0; i < 3; i++) {
        if (roles[i][0]) {
            t_sql_try("DROP OWNED BY %s", roles[i]);
            t_sql_try("DROP ROLE IF EXISTS %s", roles[i]);
        }
    }
}

/* The tool's DDL with options OPTS (before the command: --map ...) and
 * ROLES (after it: --reader-role, --writer-role) applied by psql, as a DBA
 * would. */
static void apply_tool_ddl(const char *opts, const char *roles)
{
    const char *s = t_schema();
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s/setcache --schema %s --channel %s %s schema %s | psql -q -v ON_ERROR_STOP=1 "
             "'%s' >/dev/null 2>&1",
             t_build_dir(), s, s, opts, roles, t_conninfo());
    CHECK(system(cmd) == 0);
}

/* Three roles, and the schema with the readers' and writers' GRANTs. */
static void set_up_roles(void)
{
    const char *s = t_schema();
    snprintf(reader, sizeof reader, "%.40s_r", s);
    snprintf(writer, sizeof writer, "%.40s_w", s);
    snprintf(nobody, sizeof nobody, "%.40s_n", s);
    t_on_fail(drop_roles);
    t_sql("CREATE ROLE %s LOGIN", reader);
    t_sql("CREATE ROLE %s LOGIN", writer);
    t_sql("CREATE ROLE %s LOGIN", nobody);
    char roles[160];
    snprintf(roles, sizeof roles, "--reader-role %s --writer-role %s", reader, writer);
    apply_tool_ddl("", roles);
}

static setcache *open_as(const char *role, int *rc)
{
    char ci[1024];
    snprintf(ci, sizeof ci, "%s user=%s", t_conninfo(), role);
    setcache_options o;
    t_options(&o);
    o.conninfo = ci;
    o.create_schema = false;
    setcache *c = NULL;
    *rc = setcache_open(&c, &o);
    return c;
}

TEST(a_reader_reads_and_follows_changes_but_cannot_write)
{
    set_up_roles();
    const char *s = t_schema();
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('account', "
          "'1', 'k', 'v1')",
          s);
    int rc;
    setcache *r = open_as(reader, &rc);
    CHECK_OK(rc);
    char buf[32];
    CHECK_OK(setcache_get_string(r, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v1");
    t_sql("UPDATE \"%s\".settings SET value = 'v2' WHERE key = 'k'", s);
    CHECK(t_wait_value(r, "account", "1", "k", "v2", 5000) >= 0);
    CHECK_RC(setcache_set_string(r, "account", "1", "k", "mine"), SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "permission denied") != NULL);
    CHECK(strstr(setcache_errmsg(), "settings") != NULL);
    CHECK_RC(setcache_delete(r, "account", "1", "k"), SETCACHE_ERR_DB);
    CHECK_OK(setcache_get_string(r, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v2"); /* the cache is unchanged */
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE key = 'k'", s), "v2");
    setcache_close(r);
    drop_roles();
}

TEST(a_writer_writes_but_cannot_forge_versions_or_touch_the_schema)
{
    set_up_roles();
    const char *s = t_schema();
    int rc;
    setcache *w = open_as(writer, &rc);
    CHECK_OK(rc);
    CHECK_OK(setcache_set_string(w, "account", "1", "k", "w1"));
    char buf[32];
    CHECK_OK(setcache_get_string(w, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "w1");
    setcache_close(w);
    /* the writer's own SQL: the trigger gives every row its version */
    char ci[1024];
    snprintf(ci, sizeof ci, "%s user=%s", t_conninfo(), writer);
    PGconn *pc = PQconnectdb(ci);
    CHECK(PQstatus(pc) == CONNECTION_OK);
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value, version) VALUES "
             "('account', '1', 'forged', 'x', 9000000000) RETURNING version",
             s);
    PGresult *res = PQexec(pc, sql);
    CHECK(PQresultStatus(res) == PGRES_TUPLES_OK);
    CHECK(strcmp(PQgetvalue(res, 0, 0), "9000000000") != 0);
    PQclear(res);
    const char *refused[] = {"ALTER TABLE %s DISABLE TRIGGER settings_stamp",
                             "DROP TRIGGER settings_notify ON %s",
                             "ALTER TABLE %s ADD COLUMN x int", "TRUNCATE %s",
                             "SELECT setval('%s_version_seq', 9000000000)"};
    char table[128];
    snprintf(table, sizeof table, "\"%s\".settings", s);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        const char *at = strstr(refused[i], "%s");
        snprintf(sql, sizeof sql, "%.*s%s%s", (int)(at - refused[i]), refused[i], table, at + 2);
        res = PQexec(pc, sql);
        if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK) {
            t_fail(__FILE__, __LINE__, "the writer could: %s", sql);
        }
        CHECK(strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42501") == 0 ||
              strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42P01") == 0);
        PQclear(res);
    }
    PQfinish(pc);
    drop_roles();
}

TEST(a_role_with_no_privileges_fails_at_open_with_a_clear_message)
{
    set_up_roles();
    int rc;
    setcache *c = open_as(nobody, &rc);
    CHECK(c == NULL);
    CHECK_INT(rc, SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "permission denied") != NULL);
    CHECK(strstr(setcache_errmsg(), t_schema()) != NULL);
    drop_roles();
}

/* A table of the test's schema, "schema".prefs (uid, name, v), and its map
 * as entity type "pref"; tab (at least 128 bytes) holds its name. */
static setcache_table_map prefs_table(char *tab)
{
    const char *s = t_schema();
    t_sql("CREATE SCHEMA IF NOT EXISTS \"%s\"", s);
    t_sql("CREATE TABLE \"%s\".prefs (uid bigint NOT NULL, name text NOT NULL, v text, UNIQUE "
          "(uid, name))",
          s);
    snprintf(tab, 128, "%s.prefs", s);
    return (setcache_table_map){.entity_type = "pref",
                                .table = tab,
                                .entity_column = "uid",
                                .id_kind = SETCACHE_ID_INTEGER,
                                .key_column = "name",
                                .value_column = "v"};
}

TEST(mapped_tables_get_the_same_grants)
{
    const char *s = t_schema();
    char tab[128], map[192], grants[160];
    setcache_table_map m = prefs_table(tab);
    snprintf(reader, sizeof reader, "%.40s_r", s);
    snprintf(writer, sizeof writer, "%.40s_w", s);
    t_on_fail(drop_roles);
    t_sql("CREATE ROLE %s LOGIN", reader);
    t_sql("CREATE ROLE %s LOGIN", writer);
    snprintf(map, sizeof map, "--map pref=%s,uid,integer,name,v", tab);
    snprintf(grants, sizeof grants, "--reader-role %s --writer-role %s", reader, writer);
    apply_tool_ddl(map, grants);
    const char *roles[2] = {writer, reader};
    setcache *c[2];
    for (int i = 0; i < 2; i++) {
        char ci[1024];
        snprintf(ci, sizeof ci, "%s user=%s", t_conninfo(), roles[i]);
        setcache_options o;
        t_options(&o);
        o.conninfo = ci;
        o.create_schema = false;
        o.tables = &m;
        o.ntables = 1;
        CHECK_OK(setcache_open(&c[i], &o));
    }
    char buf[32];
    CHECK_RC(setcache_get_string(c[1], "pref", "7", "theme", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_OK(setcache_set_string(c[0], "pref", "7", "theme", "dark"));
    CHECK(t_wait_value(c[1], "pref", "7", "theme", "dark", 5000) >= 0);
    CHECK_RC(setcache_set_string(c[1], "pref", "7", "theme", "light"), SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "permission denied") != NULL);
    CHECK_OK(setcache_get_string(c[1], "pref", "7", "theme", buf, sizeof buf, NULL));
    CHECK_STR(buf, "dark");
    setcache_close(c[0]);
    setcache_close(c[1]);
    drop_roles();
}

/* The row triggers stand aside only for "schema".write_many run as the
 * schema's owner: a writer that sets setcache.batch itself can't write at
 * all (insufficient_privilege; nothing changes, a DELETE neither) and,
 * once it resets it, gets its rows checked, stamped and recorded;
 * write_many does only what its caller may do (a reader can't write
 * through it); a writer's set_many through it records each change once. */
TEST(only_write_many_as_the_owner_makes_the_row_triggers_stand_aside)
{
    set_up_roles();
    const char *s = t_schema();
    t_sql("INSERT INTO \"%s\".definitions (entity_type, key, type, max_value) VALUES ('account', "
          "'n', 'int', 10)",
          s);
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('account', "
          "'1', 'k', 'v1')",
          s);
    long long v1 = atoll(t_sql_value("SELECT version FROM \"%s\".settings WHERE key = 'k'", s));
    char ci[1024], sql[512];
    snprintf(ci, sizeof ci, "%s user=%s", t_conninfo(), writer);
    PGconn *pc = PQconnectdb(ci);
    CHECK(PQstatus(pc) == CONNECTION_OK);
    PQclear(PQexec(pc, "SET setcache.batch = 'on'"));
    char refused[3][256];
    snprintf(refused[0], sizeof refused[0],
             "UPDATE \"%s\".settings SET value = 'w2' WHERE key = 'k'", s);
    snprintf(refused[1], sizeof refused[1],
             "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
             "('account', '1', 'n', '9')",
             s);
    snprintf(refused[2], sizeof refused[2], "DELETE FROM \"%s\".settings WHERE key = 'k'", s);
    for (int q = 0; q < 3; q++) {
        PGresult *no = PQexec(pc, refused[q]);
        CHECK(PQresultStatus(no) == PGRES_FATAL_ERROR);
        CHECK_STR(PQresultErrorField(no, PG_DIAG_SQLSTATE), "42501");
        CHECK(strstr(PQresultErrorMessage(no), "setcache.batch is reserved") != NULL);
        PQclear(no);
    }
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE key = 'k'", s), "v1");
    CHECK(atoll(t_sql_value("SELECT version FROM \"%s\".settings WHERE key = 'k'", s)) == v1);
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".settings WHERE key = 'n'", s), "0");
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".history WHERE op <> 'insert'", s), "0");
    /* reset: checked, stamped and recorded as always */
    PQclear(PQexec(pc, "RESET setcache.batch"));
    snprintf(sql, sizeof sql, "UPDATE \"%s\".settings SET value = 'w2' WHERE key = 'k'", s);
    PGresult *res = PQexec(pc, sql);
    CHECK(PQresultStatus(res) == PGRES_COMMAND_OK);
    PQclear(res);
    CHECK(atoll(t_sql_value("SELECT version FROM \"%s\".settings WHERE key = 'k'", s)) > v1);
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".history WHERE key = 'k' AND op = 'update' "
                          "AND new_value = 'w2'",
                          s),
              "1");
    snprintf(sql, sizeof sql,
             "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('account', "
             "'1', 'n', '99')",
             s);
    res = PQexec(pc, sql);
    CHECK(PQresultStatus(res) == PGRES_FATAL_ERROR);
    CHECK(strstr(PQresultErrorMessage(res), "rule: max") != NULL);
    PQclear(res);
    PQfinish(pc);

    /* a reader calling the function itself */
    snprintf(ci, sizeof ci, "%s user=%s", t_conninfo(), reader);
    pc = PQconnectdb(ci);
    CHECK(PQstatus(pc) == CONNECTION_OK);
    snprintf(sql, sizeof sql,
             "SELECT * FROM \"%s\".write_many('account', '1', '{}', '{k}', '{by-reader}', '{f}')",
             s);
    res = PQexec(pc, sql);
    CHECK(PQresultStatus(res) == PGRES_FATAL_ERROR);
    CHECK(strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42501") == 0);
    PQclear(res);
    PQfinish(pc);
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE key = 'k'", s), "w2");

    /* the writer's set_many: through the function, each change once */
    int rc;
    setcache *w = open_as(writer, &rc);
    CHECK_OK(rc);
    setcache_kv kv[] = {{"k", "w3"}, {"n", "4"}};
    CHECK_OK(setcache_set_many(w, "account", "1", kv, 2));
    CHECK_STR(t_sql_value("SELECT string_agg(concat_ws(' ', key, op, coalesce(old_value, '-'), "
                          "new_value), '; ' ORDER BY key, id) FROM \"%s\".history",
                          s),
              "k insert - v1; k update v1 w2; k update w2 w3; n insert - 4");
    /* and deletes through it (the writer's grants include DELETE) */
    setcache_kv del[] = {{"n", NULL}};
    CHECK_OK(setcache_set_many(w, "account", "1", del, 1));
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".settings WHERE key = 'n'", s), "0");
    CHECK_STR(t_sql_value("SELECT string_agg(concat_ws(' ', op, old_value), '; ' ORDER BY id) "
                          "FROM \"%s\".history WHERE key = 'n'",
                          s),
              "insert; delete 4");
    setcache_close(w);
    drop_roles();
}

/* A statement of the writer's session pc, built like printf; its status. */
static ExecStatusType writer_exec(PGconn *pc, char *sqlstate, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static ExecStatusType writer_exec(PGconn *pc, char *sqlstate, size_t cap, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    PGresult *res = PQexec(pc, sql);
    ExecStatusType st = PQresultStatus(res);
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (sqlstate) {
        snprintf(sqlstate, cap, "%s", code ? code : "");
    }
    PQclear(res);
    return st;
}

/* The stamp triggers run with the writer's search_path, which the writer
 * chooses. A writer that puts a schema of its own first, with a nextval, a
 * clock_timestamp and a current_setting that lie and = and <> on text that
 * are always false, still can't choose a version (settings, a mapped
 * table, definitions), write with setcache.batch on (which would skip the
 * checks and the history), or store a default its definition refuses. */
TEST(a_writer_s_own_functions_and_operators_cannot_stand_in_for_the_built_in_ones)
{
    set_up_roles();
    const char *s = t_schema();
    char tab[128], map[192], roles[96];
    prefs_table(tab);
    snprintf(map, sizeof map, "--map pref=%s,uid,integer,name,v", tab);
    snprintf(roles, sizeof roles, "--writer-role %s", writer);
    apply_tool_ddl(map, roles);
    t_sql("INSERT INTO \"%s\".definitions (entity_type, key, type, max_value) VALUES ('account', "
          "'n', 'int', 10)",
          s);
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('account', "
          "'1', 'n', '5')",
          s);
    t_sql("CREATE SCHEMA %.40s_ev AUTHORIZATION %s", s, writer);
    long long before = atoll(t_sql_value("SELECT last_value FROM \"%s\".settings_version_seq", s));

    char ci[1024], code[8];
    snprintf(ci, sizeof ci, "%s user=%s", t_conninfo(), writer);
    PGconn *pc = PQconnectdb(ci);
    CHECK(PQstatus(pc) == CONNECTION_OK);
    /* made in the first schema of its search_path: its own */
    CHECK(writer_exec(pc, code, sizeof code, "SET search_path = %.40s_ev, pg_catalog", s) ==
          PGRES_COMMAND_OK);
    const char *shadows[] = {
        "CREATE FUNCTION nextval(regclass) RETURNS bigint LANGUAGE sql AS "
        "'SELECT 9000000000::bigint'",
        "CREATE FUNCTION clock_timestamp() RETURNS timestamptz LANGUAGE sql AS "
        "$$SELECT '2000-01-01'::timestamptz$$",
        "CREATE FUNCTION current_setting(text, boolean) RETURNS text LANGUAGE sql AS "
        "$$SELECT 'off'::text$$",
        "CREATE FUNCTION no(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT false'",
        "CREATE OPERATOR = (LEFTARG = text, RIGHTARG = text, FUNCTION = no)",
        "CREATE OPERATOR <> (LEFTARG = text, RIGHTARG = text, FUNCTION = no)",
    };
    for (size_t i = 0; i < sizeof shadows / sizeof shadows[0]; i++) {
        CHECK(writer_exec(pc, code, sizeof code, "%s", shadows[i]) == PGRES_COMMAND_OK);
    }
    /* the shadows are in effect in the writer's session */
    PGresult *res = PQexec(pc, "SELECT nextval('pg_class'), 'a' = 'a'");
    CHECK(PQresultStatus(res) == PGRES_TUPLES_OK);
    CHECK_STR(PQgetvalue(res, 0, 0), "9000000000");
    CHECK_STR(PQgetvalue(res, 0, 1), "f");
    PQclear(res);

    /* a version of its own choice: settings, a mapped table, definitions */
    static const struct {
        const char *table, *columns, *values, *version, *row;
    } forged[3] = {
        {"settings", "entity_type, entity_id, key, value, version, updated_at",
         "'account', '1', 'k', 'x', 1, '2001-01-01'", "version", "key = 'k'"},
        {"prefs", "uid, name, v, setcache_version", "7, 'theme', 'dark', 1", "setcache_version",
         "name = 'theme'"},
        {"definitions", "entity_type, key, type, version", "'account', 'm', 'int', 1", "version",
         "key = 'm'"},
    };
    for (int i = 0; i < 3; i++) {
        CHECK(writer_exec(pc, code, sizeof code, "INSERT INTO \"%s\".%s (%s) VALUES (%s)", s,
                          forged[i].table, forged[i].columns,
                          forged[i].values) == PGRES_COMMAND_OK);
        long long v = atoll(t_sql_value("SELECT %s FROM \"%s\".%s WHERE %s", forged[i].version, s,
                                        forged[i].table, forged[i].row));
        CHECK(v > before && v < 9000000000LL);
    }
    CHECK_STR(t_sql_value("SELECT updated_at > now() - interval '1 hour' FROM \"%s\".settings "
                          "WHERE key = 'k'",
                          s),
              "t");

    /* a default its own definition refuses */
    CHECK(writer_exec(pc, code, sizeof code,
                      "INSERT INTO \"%s\".definitions (entity_type, key, type, default_value) "
                      "VALUES ('account', 'b', 'int', 'banana')",
                      s) == PGRES_FATAL_ERROR);
    CHECK_STR(code, "23514");
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".definitions WHERE key = 'b'", s), "0");

    /* setcache.batch on: refused, nothing changed, nothing unrecorded */
    CHECK(writer_exec(pc, code, sizeof code, "SET setcache.batch = 'on'") == PGRES_COMMAND_OK);
    CHECK(writer_exec(pc, code, sizeof code,
                      "UPDATE \"%s\".settings SET value = '99' WHERE key OPERATOR(pg_catalog.=) "
                      "'n'",
                      s) == PGRES_FATAL_ERROR);
    CHECK_STR(code, "42501");
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE key = 'n'", s), "5");
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".history WHERE key = 'n'", s), "1");
    PQfinish(pc);
    drop_roles();
}

/* A schema and a mapped table set up by the previous release (revision 5,
 * map revision 2: stamps that name nextval through the writer's
 * search_path) get this release's qualified stamps when a process of this
 * release opens with create_schema. */
TEST(stamps_set_up_by_the_previous_release_are_replaced_at_open)
{
    const char *s = t_schema();
    char tab[128];
    setcache_table_map m = prefs_table(tab);
    setcache_options o;
    t_options(&o);
    o.tables = &m;
    o.ntables = 1;
    setcache *c = NULL;
    CHECK_OK(setcache_open(&c, &o));
    setcache_close(c);
    /* as the previous release left them */
    t_sql("CREATE OR REPLACE FUNCTION \"%s\".settings_stamp() RETURNS trigger LANGUAGE plpgsql AS "
          "$fn$BEGIN NEW.version := nextval('\"%s\".settings_version_seq'); RETURN NEW; END$fn$",
          s, s);
    t_sql("CREATE OR REPLACE FUNCTION \"%s\".map_stamp() RETURNS trigger LANGUAGE plpgsql AS "
          "$fn$BEGIN NEW.setcache_version := nextval('\"%s\".settings_version_seq'); RETURN NEW; "
          "END$fn$",
          s, s);
    t_sql("COMMENT ON FUNCTION \"%s\".settings_notify() IS 'setcache schema 5 channel %s'", s, s);
    t_sql("DO $$ DECLARE f regprocedure := '\"%s\".\"notify_pref\"()'; BEGIN EXECUTE "
          "format('COMMENT ON FUNCTION %%s IS %%L', f, replace(obj_description(f, 'pg_proc'), "
          "'setcache map 3 ', 'setcache map 2 ')); END $$",
          s);
    CHECK_STR(t_sql_value("SELECT obj_description('\"%s\".\"notify_pref\"()'::regprocedure, "
                          "'pg_proc') LIKE 'setcache map 2 %%'",
                          s),
              "t");
    CHECK_OK(setcache_open(&c, &o));
    setcache_close(c);
    const char *fns[2] = {"settings_stamp", "map_stamp"};
    for (int i = 0; i < 2; i++) {
        CHECK_STR(t_sql_value("SELECT prosrc LIKE '%%pg_catalog.nextval(%%' FROM pg_proc WHERE "
                              "oid = '\"%s\".%s()'::regprocedure",
                              s, fns[i]),
                  "t");
    }
}

/* Every message a handle logs, at any level, into a t_warnings (its
 * listener thread logs too). */
static void keep_all(void *arg, int level, const char *msg)
{
    (void)level;
    t_warnings *w = arg;
    pthread_mutex_lock(&w->mu);
    size_t n = strlen(w->text);
    snprintf(w->text + n, sizeof w->text - n, "%s\n", msg);
    pthread_mutex_unlock(&w->mu);
}

/* A schema set up by a newer release is left as it is by this one's open
 * (its DDL would undo the newer one's, fixes included, during a rolling
 * upgrade); set up for another channel, the open fails and says what to
 * do, changing nothing. */
TEST(a_newer_release_s_schema_is_left_as_it_is)
{
    setcache_close(t_open()); /* this revision */
    const char *s = t_schema();
    /* something this release's DDL would put back */
    t_sql("DROP INDEX \"%s\".history_by_time", s);
    t_sql("COMMENT ON FUNCTION \"%s\".settings_notify() IS 'setcache schema 99 channel %s'", s, s);
    static t_warnings said = T_WARNINGS_INIT;
    setcache_options o;
    t_options(&o);
    o.log = keep_all;
    o.log_arg = &said;
    setcache *c = t_open_with(&o);
    CHECK(t_warned(&said, "is newer than this release's"));
    CHECK_STR(t_sql_value("SELECT to_regclass('\"%s\".history_by_time') IS NULL", s), "t");
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v"));
    setcache_close(c);
    t_sql("COMMENT ON FUNCTION \"%s\".settings_notify() IS 'setcache schema 99 channel other'", s);
    c = NULL;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_DB);
    CHECK(c == NULL);
    CHECK(strstr(setcache_errmsg(), "set up by a newer release") != NULL);
    CHECK_STR(t_sql_value("SELECT to_regclass('\"%s\".history_by_time') IS NULL", s), "t");
    CHECK_STR(t_sql_value("SELECT obj_description('\"%s\".settings_notify()'::regprocedure, "
                          "'pg_proc')",
                          s),
              "setcache schema 99 channel other");
}
