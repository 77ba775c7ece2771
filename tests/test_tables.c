/* Entity types served from tables an application already has: the
 * motivating platform's schema, and a differently shaped table. */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

/* The platform's tables, moved to PostgreSQL, in the test's schema. */
static void platform_ddl(void)
{
    const char *s = t_schema();
    t_sql("CREATE SCHEMA IF NOT EXISTS \"%s\"", s);
    t_sql("CREATE TABLE \"%s\".accountdefinition (id serial PRIMARY KEY, name text NOT NULL, "
          "provider text NOT NULL)",
          s);
    t_sql("CREATE TABLE \"%s\".expertinstance (id serial PRIMARY KEY, account_id int NOT NULL "
          "REFERENCES \"%s\".accountdefinition(id) ON DELETE CASCADE, expert text NOT NULL)",
          s, s);
    t_sql("CREATE TABLE \"%s\".accountsetting (id serial PRIMARY KEY, account_id int NOT NULL "
          "REFERENCES \"%s\".accountdefinition(id) ON DELETE CASCADE, key varchar NOT NULL, "
          "value_str varchar, value_float double precision, value_json json, CONSTRAINT "
          "uix_accountsetting_accountid_key UNIQUE (account_id, key))",
          s, s);
    t_sql("CREATE TABLE \"%s\".expertsetting (id serial PRIMARY KEY, instance_id int NOT NULL "
          "REFERENCES \"%s\".expertinstance(id) ON DELETE CASCADE, key varchar NOT NULL, "
          "value_str varchar, value_float double precision, value_json json, CONSTRAINT "
          "uix_expertsetting_instanceid_key UNIQUE (instance_id, key))",
          s, s);
    t_sql("CREATE TABLE \"%s\".appsetting (id serial PRIMARY KEY, key varchar NOT NULL, value_str "
          "varchar, value_float double precision, value_json json)",
          s);
    for (int a = 1; a <= 3; a++) {
        t_sql("INSERT INTO \"%s\".accountdefinition (id, name, provider) VALUES (%d, 'acct%d', "
              "'alpaca')",
              s, a, a);
        t_sql("INSERT INTO \"%s\".expertinstance (id, account_id, expert) VALUES (%d, %d, "
              "'TradingAgents')",
              s, a, a);
    }
}

static char tab_acc[96], tab_exp[96], tab_app[96];

/* The platform's three tables mapped into o (from t_options), opened. */
static setcache *open_platform_with(setcache_options *o)
{
    snprintf(tab_acc, sizeof tab_acc, "%s.accountsetting", t_schema());
    snprintf(tab_exp, sizeof tab_exp, "%s.expertsetting", t_schema());
    snprintf(tab_app, sizeof tab_app, "%s.appsetting", t_schema());
    static setcache_table_map maps[3];
    maps[0] = (setcache_table_map){.entity_type = "account",
                                   .table = tab_acc,
                                   .entity_column = "account_id",
                                   .id_kind = SETCACHE_ID_INTEGER,
                                   .key_column = "key",
                                   .str_column = "value_str",
                                   .num_column = "value_float",
                                   .json_column = "value_json"};
    maps[1] = maps[0];
    maps[1].entity_type = "expert";
    maps[1].table = tab_exp;
    maps[1].entity_column = "instance_id";
    maps[2] = maps[0];
    maps[2].entity_type = "app";
    maps[2].table = tab_app;
    maps[2].entity_column = NULL;
    maps[2].id_kind = SETCACHE_ID_NONE;
    o->tables = maps;
    o->ntables = 3;
    return t_open_with(o);
}

static setcache *open_platform(void)
{
    setcache_options o;
    t_options(&o);
    return open_platform_with(&o);
}

TEST(mapped_table_reads_follow_every_encoding_rule)
{
    platform_ddl();
    const char *s = t_schema();
    t_sql("INSERT INTO \"%s\".expertsetting (instance_id, key, value_str, value_float, value_json) "
          "VALUES "
          "(3, 'sizing_mode', 'fixed', NULL, NULL), "
          "(3, 'atr_period', NULL, 14, NULL), "
          "(3, 'risk_per_trade_pct', NULL, 1.5, '{}'), "
          "(3, 'enable_buy', NULL, NULL, '\"true\"'), "
          "(3, 'enable_sell', NULL, NULL, '\"false\"'), "
          "(3, 'enabled_instruments', NULL, NULL, '[\"AAPL\", \"MSFT\"]'), "
          "(3, 'schedule', NULL, NULL, '{\"days\": [1, 2]}'), "
          "(3, 'legacy_none', 'None', NULL, NULL), "
          "(3, 'legacy_int', '42', NULL, NULL), "
          "(3, 'json_null', 'kept', NULL, 'null'), "
          "(3, 'empty', NULL, NULL, NULL)",
          s);
    setcache *c = open_platform();
    CHECK_OK(setcache_define(c, "expert", "legacy_none", SETCACHE_STRING, "dflt"));
    char buf[128];
    int64_t iv;
    double dv;
    bool bv;
    CHECK_OK(setcache_get_string(c, "expert", "3", "sizing_mode", buf, sizeof buf, NULL));
    CHECK_STR(buf, "fixed");
    CHECK_OK(setcache_get_int(c, "expert", "3", "atr_period", &iv));
    CHECK_INT(iv, 14);
    CHECK_OK(setcache_get_string(c, "expert", "3", "atr_period", buf, sizeof buf, NULL));
    CHECK_STR(buf, "14");
    CHECK_OK(setcache_get_double(c, "expert", "3", "risk_per_trade_pct", &dv));
    CHECK(dv == 1.5); /* an unused value_json of {} falls through to the number */
    CHECK_OK(setcache_get_bool(c, "expert", "3", "enable_buy", &bv));
    CHECK(bv);
    CHECK_OK(setcache_get_bool(c, "expert", "3", "enable_sell", &bv));
    CHECK(!bv);
    CHECK_OK(setcache_get_string(c, "expert", "3", "enabled_instruments", buf, sizeof buf, NULL));
    CHECK_STR(buf, "[\"AAPL\", \"MSFT\"]");
    CHECK_OK(setcache_get_string(c, "expert", "3", "schedule", buf, sizeof buf, NULL));
    CHECK_STR(buf, "{\"days\": [1, 2]}");
    CHECK_OK(setcache_get_string(c, "expert", "3", "legacy_none", buf, sizeof buf, NULL));
    CHECK_STR(buf, "dflt"); /* 'None' means no value: the default answers */
    CHECK_OK(setcache_get_int(c, "expert", "3", "legacy_int", &iv));
    CHECK_INT(iv, 42);
    CHECK_OK(setcache_get_string(c, "expert", "3", "json_null", buf, sizeof buf, NULL));
    CHECK_STR(buf, "kept");
    CHECK_RC(setcache_get_string(c, "expert", "3", "empty", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_RC(setcache_get_string(c, "expert", "x3", "sizing_mode", buf, sizeof buf, NULL),
             SETCACHE_ERR_ARG); /* integer ids */
    setcache_stats st;
    setcache_get_stats(c, &st);
    CHECK_INT(st.loads, 1);
    setcache_close(c);
}

TEST(mapped_table_writes_use_the_column_of_the_definition)
{
    platform_ddl();
    setcache *c = open_platform();
    CHECK_OK(setcache_define(c, "account", "max_open_positions", SETCACHE_INT, "5"));
    CHECK_OK(
        setcache_define(c, "account", "minimum_equity_threshold_percent", SETCACHE_DOUBLE, NULL));
    CHECK_OK(setcache_define(c, "account", "paper_account", SETCACHE_BOOL, "true"));
    CHECK_OK(setcache_define(c, "account", "symbols", SETCACHE_JSON, "[]"));
    CHECK_OK(setcache_set_int(c, "account", "2", "max_open_positions", 7));
    CHECK_OK(setcache_set_double(c, "account", "2", "minimum_equity_threshold_percent", 12.5));
    CHECK_OK(setcache_set_bool(c, "account", "2", "paper_account", false));
    CHECK_OK(setcache_set_json(c, "account", "2", "symbols", "[\"AAPL\"]"));
    CHECK_OK(setcache_set_string(c, "account", "2", "api_key", "k-123"));
    CHECK_RC(setcache_set_string(c, "account", "2", "symbols", "[broken"), SETCACHE_ERR_TYPE);
    const char *s = t_schema();
    CHECK_STR(t_sql_value("SELECT concat_ws('|', value_str, value_float, value_json::text) FROM "
                          "\"%s\".accountsetting WHERE key = 'max_open_positions'",
                          s),
              "7");
    CHECK_STR(t_sql_value("SELECT value_float FROM \"%s\".accountsetting WHERE key = "
                          "'minimum_equity_threshold_percent'",
                          s),
              "12.5");
    CHECK_STR(t_sql_value("SELECT value_json::text FROM \"%s\".accountsetting WHERE key = "
                          "'paper_account'",
                          s),
              "\"false\"");
    CHECK_STR(t_sql_value("SELECT value_json::text FROM \"%s\".accountsetting WHERE key = "
                          "'symbols'",
                          s),
              "[\"AAPL\"]");
    CHECK_STR(
        t_sql_value("SELECT coalesce(value_str, '-') || coalesce(value_float::text, '-') FROM "
                    "\"%s\".accountsetting WHERE key = 'api_key'",
                    s),
        "k-123-");
    setcache_close(c);
    /* a fresh handle reads each back through the encoding rules */
    c = open_platform();
    CHECK_OK(setcache_define(c, "account", "max_open_positions", SETCACHE_INT, "5"));
    int64_t iv;
    bool bv;
    char buf[64];
    CHECK_OK(setcache_get_int(c, "account", "2", "max_open_positions", &iv));
    CHECK_INT(iv, 7);
    CHECK_OK(setcache_get_bool(c, "account", "2", "paper_account", &bv));
    CHECK(!bv);
    CHECK_OK(setcache_get_string(c, "account", "2", "symbols", buf, sizeof buf, NULL));
    CHECK_STR(buf, "[\"AAPL\"]");
    CHECK_OK(setcache_delete(c, "account", "2", "api_key"));
    CHECK_RC(setcache_get_string(c, "account", "2", "api_key", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    setcache_kv kv[2] = {{"api_key", "k-2"}, {"max_open_positions", NULL}};
    CHECK_OK(setcache_set_many(c, "account", "2", kv, 2));
    CHECK_OK(setcache_get_string(c, "account", "2", "api_key", buf, sizeof buf, NULL));
    CHECK_STR(buf, "k-2");
    CHECK_OK(setcache_get_int(c, "account", "2", "max_open_positions", &iv));
    CHECK_INT(iv, 5); /* deleted: the default */
    setcache_close(c);
}

TEST(mapped_table_changes_by_others_and_cascades_reach_the_cache)
{
    platform_ddl();
    const char *s = t_schema();
    t_sql("INSERT INTO \"%s\".accountsetting (account_id, key, value_float) VALUES (3, "
          "'minimum_equity_threshold_percent', 10)",
          s);
    t_sql("INSERT INTO \"%s\".expertsetting (instance_id, key, value_float) VALUES (3, "
          "'atr_period', 14)",
          s);
    setcache *c = open_platform();
    int64_t iv;
    CHECK_OK(setcache_get_int(c, "expert", "3", "atr_period", &iv));
    CHECK_OK(setcache_get_int(c, "account", "3", "minimum_equity_threshold_percent", &iv));
    setcache_stats s0;
    setcache_get_stats(c, &s0);
    double worst = 0;
    for (int i = 0; i < 10; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", 20 + i);
        t_sql("UPDATE \"%s\".expertsetting SET value_float = %d WHERE instance_id = 3 AND key = "
              "'atr_period'",
              s, 20 + i);
        double d = t_wait_value(c, "expert", "3", "atr_period", want, 5000);
        CHECK(d >= 0);
        worst = d > worst ? d : worst;
    }
    /* informative only: speed is judged by the benchmarks */
    fprintf(stderr, "    plain-SQL UPDATE of expertsetting visible after at most %.2f ms\n", worst);
    /* expert 3 and account 3 are different entities */
    setcache_stats s1;
    setcache_get_stats(c, &s1);
    CHECK_INT(s1.loads, s0.loads);
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "3", "minimum_equity_threshold_percent", buf,
                                 sizeof buf, NULL));
    CHECK_STR(buf, "10");
    /* the parent goes: ON DELETE CASCADE removes both settings rows */
    t_sql("DELETE FROM \"%s\".accountdefinition WHERE id = 3", s);
    CHECK(t_wait_value(c, "expert", "3", "atr_period", NULL, 5000) >= 0);
    CHECK(t_wait_value(c, "account", "3", "minimum_equity_threshold_percent", NULL, 5000) >= 0);
    setcache_close(c);
}

TEST(table_without_unique_key_is_read_only_and_duplicates_are_reported)
{
    platform_ddl();
    const char *s = t_schema();
    t_sql("INSERT INTO \"%s\".appsetting (key, value_str) VALUES ('site_name', 'desk'), "
          "('default_model', 'a'), ('default_model', 'b')",
          s);
    setcache *c = open_platform();
    char buf[64];
    CHECK_OK(setcache_get_string(c, "app", "global", "site_name", buf, sizeof buf, NULL));
    CHECK_STR(buf, "desk");
    CHECK_RC(setcache_get_string(c, "app", "global", "default_model", buf, sizeof buf, NULL),
             SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "more than once") != NULL);
    CHECK_RC(setcache_get_string(c, "app", "other", "site_name", buf, sizeof buf, NULL),
             SETCACHE_ERR_ARG);
    CHECK_RC(setcache_set_string(c, "app", "global", "site_name", "x"), SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "read-only") != NULL);
    CHECK(strstr(setcache_errmsg(), "ADD CONSTRAINT") != NULL);
    CHECK(strstr(setcache_errmsg(), "UNIQUE (key)") != NULL);
    CHECK_STR(t_sql_value("SELECT value_str FROM \"%s\".appsetting WHERE key = 'site_name'", s),
              "desk");
    /* plain SQL still reaches it */
    t_sql("UPDATE \"%s\".appsetting SET value_str = 'trading desk' WHERE key = 'site_name'", s);
    CHECK(t_wait_value(c, "app", "global", "site_name", "trading desk", 5000) >= 0);
    setcache_close(c);
}

TEST(second_shape_text_ids_and_one_jsonb_value_column)
{
    const char *s = t_schema();
    t_sql("CREATE SCHEMA IF NOT EXISTS \"%s\"", s);
    t_sql("CREATE TABLE \"%s\".user_prefs (user_name text NOT NULL, name text NOT NULL, val "
          "jsonb, PRIMARY KEY (user_name, name))",
          s);
    t_sql("INSERT INTO \"%s\".user_prefs VALUES ('ann', 'theme', '\"dark\"'), ('ann', 'cols', "
          "'[1, 2, 3]'), ('bob', 'theme', '\"light\"')",
          s);
    char tab[96];
    snprintf(tab, sizeof tab, "%s.user_prefs", s);
    setcache_table_map m = {.entity_type = "user",
                            .table = tab,
                            .entity_column = "user_name",
                            .id_kind = SETCACHE_ID_TEXT,
                            .key_column = "name",
                            .value_column = "val"};
    setcache_options o;
    t_options(&o);
    o.tables = &m;
    o.ntables = 1;
    setcache *c = t_open_with(&o);
    char buf[64];
    CHECK_OK(setcache_get_string(c, "user", "ann", "theme", buf, sizeof buf, NULL));
    CHECK_STR(buf, "dark");
    CHECK_OK(setcache_get_string(c, "user", "ann", "cols", buf, sizeof buf, NULL));
    CHECK_STR(buf, "[1, 2, 3]");
    CHECK_OK(setcache_set_string(c, "user", "bob", "theme", "it's \"quoted\""));
    CHECK_STR(t_sql_value("SELECT val::text FROM \"%s\".user_prefs WHERE user_name = 'bob'", s),
              "\"it's \\\"quoted\\\"\"");
    CHECK_OK(setcache_get_string(c, "user", "bob", "theme", buf, sizeof buf, NULL));
    CHECK_STR(buf, "it's \"quoted\"");
    CHECK_OK(setcache_set_json(c, "user", "bob", "cols", "{\"a\": 1}"));
    CHECK_RC(setcache_set_json(c, "user", "bob", "cols", "{nope"), SETCACHE_ERR_TYPE);
    t_sql("UPDATE \"%s\".user_prefs SET val = '\"blue\"' WHERE user_name = 'ann' AND name = "
          "'theme'",
          s);
    CHECK(t_wait_value(c, "user", "ann", "theme", "blue", 5000) >= 0);
    t_sql("DELETE FROM \"%s\".user_prefs WHERE user_name = 'ann'", s);
    CHECK(t_wait_value(c, "user", "ann", "cols", NULL, 5000) >= 0);
    /* the built-in table keeps working beside it */
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v"));
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v");
    setcache_close(c);
}

TEST(mapping_options_are_validated_and_missing_setup_is_explained)
{
    setcache_close(t_open());
    char tab[96];
    snprintf(tab, sizeof tab, "%s.nothing_here", t_schema());
    setcache_table_map bad[] = {
        {.entity_type = "x",
         .table = "no_schema_dot",
         .entity_column = "id",
         .key_column = "k",
         .value_column = "v"},
        {.entity_type = "x",
         .table = "a.b;drop",
         .entity_column = "id",
         .key_column = "k",
         .value_column = "v"},
        {.entity_type = "x",
         .table = "a.b",
         .entity_column = NULL,
         .id_kind = SETCACHE_ID_TEXT,
         .key_column = "k",
         .value_column = "v"},
        {.entity_type = "x", .table = "a.b", .entity_column = "id", .key_column = "k"},
        {.entity_type = "x",
         .table = "a.b",
         .entity_column = "id",
         .key_column = "k",
         .value_column = "v",
         .str_column = "s"},
        {.entity_type = "Bad",
         .table = "a.b",
         .entity_column = "id",
         .key_column = "k",
         .value_column = "v"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setcache_options o;
        t_options(&o);
        o.tables = &bad[i];
        o.ntables = 1;
        setcache *c = (setcache *)1;
        CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_ARG);
        CHECK(c == NULL);
    }
    setcache_table_map missing = {.entity_type = "x",
                                  .table = tab,
                                  .entity_column = "id",
                                  .key_column = "k",
                                  .value_column = "v"};
    setcache_options o;
    t_options(&o);
    o.tables = &missing;
    o.ntables = 1;
    setcache *c;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "does not exist") != NULL);
    /* an existing table not set up, opened without create_schema */
    t_sql("CREATE TABLE %s (id int, k text, v text, UNIQUE (id, k))", tab);
    o.create_schema = false;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "setcache_version") != NULL);
    /* the DBA's route: setcache --map ... schema */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s/setcache --schema %s --channel %s --map x=%s,id,integer,k,v schema | psql -q -v "
             "ON_ERROR_STOP=1 '%s' >/dev/null 2>&1",
             t_build_dir(), t_schema(), t_schema(), tab, t_conninfo());
    CHECK(system(cmd) == 0);
    c = t_open_with(&o);
    CHECK_OK(setcache_set_string(c, "x", "5", "k1", "v1"));
    CHECK_STR(t_sql_value("SELECT v FROM %s WHERE id = 5", tab), "v1");
    setcache_close(c);
}

struct mreader {
    setcache *c;
    atomic_int *stop;
    int backwards, errors;
    long reads;
};

static void *mapped_reader(void *p)
{
    struct mreader *m = p;
    int64_t last_a = -1, last_b = -1;
    double t0 = t_now_ms();
    while (!atomic_load(m->stop) && t_now_ms() - t0 < 30000) {
        int64_t v;
        if (setcache_get_int(m->c, "expert", "1", "ext", &v) == SETCACHE_OK) {
            m->backwards += v < last_a;
            last_a = v;
        } else {
            m->errors++;
        }
        if (setcache_get_int(m->c, "expert", "1", "loc", &v) == SETCACHE_OK) {
            m->backwards += v < last_b;
            last_b = v;
        } else {
            m->errors++;
        }
        if (++m->reads % 64 == 0) {
            usleep(50);
        }
    }
    return NULL;
}

TEST_T(mapped_table_keeps_the_guarantees_under_concurrent_writers, 60)
{
    platform_ddl();
    const char *s = t_schema();
    t_sql("INSERT INTO \"%s\".expertsetting (instance_id, key, value_float) VALUES (1, 'ext', 0), "
          "(1, 'loc', 0)",
          s);
    setcache *c = open_platform();
    CHECK_OK(setcache_define(c, "expert", "loc", SETCACHE_INT, NULL));
    atomic_int stop = 0;
    struct mreader r[2] = {{c, &stop, 0, 0, 0}, {c, &stop, 0, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&th[i], NULL, mapped_reader, &r[i]);
    }
    PGconn *other = PQconnectdb(t_conninfo());
    for (int i = 1; i <= 200; i++) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "UPDATE \"%s\".expertsetting SET value_float = %d WHERE instance_id = 1 AND key "
                 "= 'ext'",
                 s, i);
        PQclear(PQexec(other, sql));
        CHECK_OK(setcache_set_int(c, "expert", "1", "loc", i)); /* G2: read it back at once */
        int64_t v;
        CHECK_OK(setcache_get_int(c, "expert", "1", "loc", &v));
        CHECK_INT(v, i);
    }
    PQfinish(other);
    CHECK(t_wait_value(c, "expert", "1", "ext", "200", 2000) >= 0); /* G6 */
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(r[i].backwards, 0); /* G4 */
        CHECK_INT(r[i].errors, 0);
        CHECK(r[i].reads > 0);
    }
    setcache_close(c);
}

typedef struct delrec {
    pthread_mutex_t mu;
    int sets, deletes;
} delrec;

static void count_kinds(void *arg, const setcache_change *ch)
{
    delrec *d = arg;
    pthread_mutex_lock(&d->mu);
    d->sets += ch->kind == SETCACHE_CHANGE_SET;
    d->deletes += ch->kind == SETCACHE_CHANGE_DELETE;
    pthread_mutex_unlock(&d->mu);
}

TEST(mapped_table_changes_reach_subscribers)
{
    platform_ddl();
    setcache *c = open_platform();
    delrec d = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
    uint64_t id;
    CHECK_OK(setcache_subscribe(c, "expert", NULL, NULL, count_kinds, &d, &id));
    t_sql("INSERT INTO \"%s\".expertsetting (instance_id, key, value_str) VALUES (2, 'a', 'x'), "
          "(2, 'b', 'y')",
          t_schema());
    double t0 = t_now_ms();
    for (;;) {
        pthread_mutex_lock(&d.mu);
        bool done = d.sets >= 2;
        pthread_mutex_unlock(&d.mu);
        if (done || t_now_ms() - t0 > 5000) {
            break;
        }
        t_sleep_ms(2);
    }
    t_sql("DELETE FROM \"%s\".accountdefinition WHERE id = 2", t_schema()); /* cascades */
    t0 = t_now_ms();
    for (;;) {
        pthread_mutex_lock(&d.mu);
        bool done = d.sets >= 2 && d.deletes >= 2;
        pthread_mutex_unlock(&d.mu);
        if (done || t_now_ms() - t0 > 5000) {
            break;
        }
        t_sleep_ms(2);
    }
    CHECK(d.sets >= 2);
    CHECK_INT(d.deletes, 2);
    CHECK_OK(setcache_unsubscribe(c, id));
    setcache_close(c);
}

/* The value of KEY as the history's newest row for it says ("-" for none). */
static const char *history_value(const char *type, const char *id, const char *key)
{
    return t_sql_value("SELECT coalesce((SELECT coalesce(new_value, '-') FROM \"%s\".history "
                       "WHERE entity_type = '%s' AND entity_id = '%s' AND key = '%s' ORDER BY id "
                       "DESC LIMIT 1), '-')",
                       t_schema(), type, id, key);
}

/* Managed settings cover mapped tables: a write of any writer is checked
 * against the shared definition (by the value a load would read) and
 * recorded in the history, with the value every process reads. */
TEST(mapped_tables_check_every_writer_and_keep_history)
{
    platform_ddl();
    const char *s = t_schema();
    setcache *c = open_platform();
    CHECK_OK(setcache_define_rules(c, &(setcache_definition){.entity_type = "account",
                                                             .key = "risk",
                                                             .type = SETCACHE_INT,
                                                             .has_min = true,
                                                             .min = 0,
                                                             .has_max = true,
                                                             .max = 100}));
    const char *modes[] = {"live", "paper"};
    CHECK_OK(setcache_define_rules(c, &(setcache_definition){.entity_type = "app",
                                                             .key = "mode",
                                                             .type = SETCACHE_STRING,
                                                             .choices = modes,
                                                             .nchoices = 2}));
    CHECK_OK(setcache_define_rules(
        c, &(setcache_definition){.entity_type = "expert", .key = "on", .type = SETCACHE_BOOL}));
    /* a stored row breaking a rule is reported when published, left as it is */
    t_sql("INSERT INTO \"%s\".accountsetting (account_id, key, value_float) VALUES (3, 'risk', "
          "1000)",
          s);
    uint64_t invalid = 0;
    CHECK_OK(setcache_publish_definitions(c, &invalid));
    CHECK_INT(invalid, 1);
    CHECK_STR(t_sql_value("SELECT value_float FROM \"%s\".accountsetting WHERE account_id = 3", s),
              "1000");
    /* the library's writes: recorded as every process reads them */
    CHECK_OK(setcache_set_int(c, "account", "1", "risk", 5));
    CHECK_OK(setcache_set_bool(c, "expert", "1", "on", true));
    CHECK_OK(setcache_set_double(c, "expert", "1", "ratio", 1.5));
    /* (the app table has no unique key: read-only for the library) */
    t_sql("INSERT INTO \"%s\".appsetting (key, value_str) VALUES ('mode', 'live')", s);
    CHECK_OK(setcache_set_json(c, "expert", "1", "list", "[1,  2]"));
    CHECK_STR(history_value("account", "1", "risk"), "5");
    CHECK_STR(history_value("expert", "1", "on"), "true");
    CHECK_STR(history_value("expert", "1", "ratio"), "1.5");
    CHECK_STR(history_value("app", "global", "mode"), "live");
    char buf[64];
    CHECK_OK(setcache_get_string(c, "expert", "1", "list", buf, sizeof buf, NULL));
    CHECK_STR(history_value("expert", "1", "list"), buf);
    /* plain SQL breaking a rule is refused with its message, nothing stored */
    struct {
        const char *verb, *table, *rest, *what;
    } bad[] = {
        {"UPDATE", "accountsetting", "SET value_float = 500 WHERE account_id = 1 AND key = 'risk'",
         "account 1 risk: 500 is above the maximum 100 (rule: max)"},
        {"UPDATE", "accountsetting", "SET value_float = 2.5 WHERE account_id = 1 AND key = 'risk'",
         "account 1 risk: '2.5' is not an int (rule: type)"},
        {"INSERT INTO", "accountsetting",
         "(account_id, key, value_str) VALUES (2, 'risk', "
         "'banana')",
         "account 2 risk: 'banana' is not an int (rule: type)"},
        {"UPDATE", "appsetting", "SET value_str = 'demo' WHERE key = 'mode'",
         "app global mode: 'demo' is not one of live, paper (rule: choices)"},
        {"UPDATE", "expertsetting", "SET value_json = '\"maybe\"' WHERE key = 'on'",
         "expert 1 on: 'maybe' is not a bool (rule: type)"},
    };
    long long h0 = atoll(t_sql_value("SELECT count(*) FROM \"%s\".history", s));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!t_sql_try("%s \"%s\".%s %s", bad[i].verb, s, bad[i].table, bad[i].rest));
        const char *msg = PQerrorMessage(t_admin());
        if (!strstr(msg, bad[i].what)) {
            t_fail(__FILE__, __LINE__, "message for %s %s: %s", bad[i].table, bad[i].rest, msg);
        }
    }
    fprintf(stderr, "    e.g. %s", PQerrorMessage(t_admin()));
    CHECK_INT(atoll(t_sql_value("SELECT count(*) FROM \"%s\".history", s)), h0);
    CHECK_STR(
        t_sql_value(
            "SELECT value_float FROM \"%s\".accountsetting WHERE account_id = 1 AND key = 'risk'",
            s),
        "5");
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".accountsetting WHERE account_id = 2", s),
              "0");
    /* valid plain SQL: stored, recorded with its role and application name */
    t_sql("SET application_name = 'deploy-script'");
    t_sql("UPDATE \"%s\".accountsetting SET value_float = 7 WHERE account_id = 1 AND key = 'risk'",
          s);
    CHECK(t_wait_value(c, "account", "1", "risk", "7", 5000) >= 0);
    CHECK_STR(
        t_sql_value(
            "SELECT concat_ws(' ', op, old_value, new_value, application_name) "
            "FROM \"%s\".history WHERE entity_id = '1' AND key = 'risk' ORDER BY id DESC LIMIT 1",
            s),
        "update 5 7 deploy-script");
    /* an update of another column changes no value: no history row */
    t_sql("UPDATE \"%s\".accountsetting SET value_str = NULL WHERE account_id = 1 AND key = 'risk'",
          s);
    CHECK_INT(atoll(t_sql_value("SELECT count(*) FROM \"%s\".history", s)), h0 + 1);
    /* delete and truncate */
    CHECK_OK(setcache_delete(c, "expert", "1", "ratio"));
    CHECK_STR(t_sql_value("SELECT concat_ws(' ', op, old_value, coalesce(new_value, '-')) FROM "
                          "\"%s\".history WHERE key = 'ratio' ORDER BY id DESC LIMIT 1",
                          s),
              "delete 1.5 -");
    t_sql("TRUNCATE \"%s\".appsetting", s);
    CHECK_STR(t_sql_value("SELECT concat_ws(' ', entity_id, op, old_value) FROM \"%s\".history "
                          "WHERE key = 'mode' ORDER BY id DESC LIMIT 1",
                          s),
              "global truncate live");
    CHECK(t_wait_value(c, "app", "global", "mode", NULL, 5000) >= 0);
    setcache_close(c);
}

static const char *account_1_stored(void)
{
    return t_sql_value("SELECT string_agg(key || '=' || value_str, ',' ORDER BY key) FROM "
                       "\"%s\".accountsetting WHERE account_id = 1",
                       t_schema());
}

/* With prepared_statements, a mapped table's set_many writes its keys one
 * statement at a time inside one transaction: a prepared statement the
 * server lost fails that call with SETCACHE_ERR_DB and writes nothing (the
 * transaction is rolled back); the next call prepares afresh. */
TEST(prepared_statements_lost_inside_a_transaction_fail_and_write_nothing)
{
    platform_ddl();
    setcache_options o;
    t_options(&o);
    o.pool_size = 1; /* setcache_with_conn borrows the same session */
    o.prepared_statements = true;
    setcache *c = open_platform_with(&o);
    setcache_kv kv[2] = {{"a", "1"}, {"b", "2"}};
    CHECK_OK(setcache_set_many(c, "account", "1", kv, 2));
    CHECK_OK(setcache_with_conn(c, t_deallocate_all, NULL));
    kv[0].value = "3";
    kv[1].value = "4";
    CHECK_RC(setcache_set_many(c, "account", "1", kv, 2), SETCACHE_ERR_DB);
    CHECK_STR(account_1_stored(), "a=1,b=2");
    char buf[16];
    CHECK_OK(setcache_get_string(c, "account", "1", "a", buf, sizeof buf, NULL));
    CHECK_STR(buf, "1");
    CHECK_OK(setcache_set_many(c, "account", "1", kv, 2));
    CHECK_STR(account_1_stored(), "a=3,b=4");
    CHECK_OK(setcache_get_string(c, "account", "1", "b", buf, sizeof buf, NULL));
    CHECK_STR(buf, "4");
    setcache_close(c);
}
