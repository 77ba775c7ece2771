/* Managed settings: definitions with rules, shared through the database and
 * enforced there for every writer; the history of every change. */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

static const char *const modes[] = {"live", "paper"};

/* The expert definitions these tests publish. */
static void define_expert(setcache *c)
{
    setcache_definition d[] = {
        {.entity_type = "expert",
         .key = "risk_limit",
         .type = SETCACHE_INT,
         .default_value = "10",
         .description = "largest position, in lots",
         .has_min = true,
         .min = 1,
         .has_max = true,
         .max = 100},
        {.entity_type = "expert",
         .key = "ratio",
         .type = SETCACHE_DOUBLE,
         .has_max = true,
         .max = 1.5},
        {.entity_type = "expert",
         .key = "mode",
         .type = SETCACHE_STRING,
         .default_value = "paper",
         .choices = modes,
         .nchoices = 2},
        {.entity_type = "expert",
         .key = "symbol",
         .type = SETCACHE_STRING,
         .pattern = "^[A-Z]+$",
         .max_length = 6},
        {.entity_type = "expert", .key = "enabled", .type = SETCACHE_BOOL},
        {.entity_type = "expert", .key = "params", .type = SETCACHE_JSON},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        CHECK_OK(setcache_define_rules(c, &d[i]));
    }
}

static long long settings_rows(void)
{
    return atoll(t_sql_value("SELECT count(*) FROM \"%s\".settings", t_schema()));
}

/* A psql write breaking each kind of rule fails with a message naming the
 * entity, key, rule and value, and stores nothing; valid ones are stored. */
TEST(psql_writes_breaking_each_rule_are_refused_and_store_nothing)
{
    setcache *c = t_open();
    define_expert(c);
    uint64_t invalid = 99;
    CHECK_OK(setcache_publish_definitions(c, &invalid));
    CHECK_INT(invalid, 0);
    struct {
        const char *key, *value, *rule;
    } bad[] = {
        {"risk_limit", "banana", "(rule: type)"}, {"risk_limit", "1000", "(rule: max)"},
        {"risk_limit", "0", "(rule: min)"},       {"ratio", "abc", "(rule: type)"},
        {"ratio", "2.5", "(rule: max)"},          {"mode", "demo", "(rule: choices)"},
        {"symbol", "eurusd", "(rule: pattern)"},  {"symbol", "EURUSDX", "(rule: max_length)"},
        {"enabled", "maybe", "(rule: type)"},     {"params", "{bad", "(rule: type)"},
    };
    long long rows0 = settings_rows();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!t_sql_try("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) "
                         "VALUES ('expert', '3', '%s', '%s')",
                         t_schema(), bad[i].key, bad[i].value));
        const char *msg = PQerrorMessage(t_admin());
        if (!strstr(msg, "expert 3") || !strstr(msg, bad[i].key) || !strstr(msg, bad[i].rule) ||
            !strstr(msg, bad[i].value)) {
            t_fail(__FILE__, __LINE__, "message for %s=%s: %s", bad[i].key, bad[i].value, msg);
        }
    }
    fprintf(stderr, "    e.g. %s", PQerrorMessage(t_admin()));
    /* an UPDATE is checked too */
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('expert', "
          "'3', 'risk_limit', '50'), ('expert', '3', 'ratio', '0.5'), ('expert', '3', 'mode', "
          "'live'), ('expert', '3', 'symbol', 'EURUSD'), ('expert', '3', 'enabled', 'yes'), "
          "('expert', '3', 'params', '{\"a\": 1}'), ('expert', '3', 'free', 'anything')",
          t_schema());
    CHECK(!t_sql_try("UPDATE \"%s\".settings SET value = '101' WHERE key = 'risk_limit'",
                     t_schema()));
    CHECK_INT(settings_rows(), rows0 + 7);
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE key = 'risk_limit'", t_schema()),
              "50");
    /* a definition whose default breaks its own rule is refused */
    CHECK(!t_sql_try("INSERT INTO \"%s\".definitions (entity_type, key, type, default_value, "
                     "min_value) VALUES ('expert', 'lots', 'int', '0', 1)",
                     t_schema()));
    CHECK(strstr(PQerrorMessage(t_admin()), "(rule: min)") != NULL);
    setcache_close(c);
}

/* Until the handle's pooled connections have been idle for 300 ms (the
 * refresher's reload of the definitions just published, announced by their
 * notifications, is over), at most 5 s. */
static void wait_pool_quiet(setcache *c)
{
    double t0 = t_now_ms();
    uint64_t q = t_stats(c).db_queries;
    for (int quiet = 0; quiet < 3 && t_now_ms() - t0 < 5000;) {
        t_sleep_ms(100);
        uint64_t now = t_stats(c).db_queries;
        quiet = now == q ? quiet + 1 : 0;
        q = now;
    }
}

/* The library checks the same rules before it sends: SETCACHE_ERR_INVALID,
 * no round trip; the pattern (PostgreSQL's regular expressions) is the
 * server's, and its refusal is SETCACHE_ERR_INVALID too. */
TEST(library_refuses_invalid_values_before_sending)
{
    setcache *c = t_open();
    define_expert(c);
    CHECK_OK(setcache_publish_definitions(c, NULL));
    CHECK_OK(setcache_set_int(c, "expert", "3", "risk_limit", 20));
    wait_pool_quiet(c);
    setcache_stats s0 = t_stats(c);
    CHECK_RC(setcache_set_int(c, "expert", "3", "risk_limit", 1000), SETCACHE_ERR_INVALID);
    CHECK(strstr(setcache_errmsg(), "expert 3 risk_limit") != NULL);
    CHECK(strstr(setcache_errmsg(), "(rule: max)") != NULL);
    CHECK_RC(setcache_set_string(c, "expert", "3", "mode", "demo"), SETCACHE_ERR_INVALID);
    CHECK(strstr(setcache_errmsg(), "(rule: choices)") != NULL);
    CHECK_RC(setcache_set_string(c, "expert", "3", "symbol", "EURUSDX"), SETCACHE_ERR_INVALID);
    CHECK(strstr(setcache_errmsg(), "(rule: max_length)") != NULL);
    setcache_kv kv[2] = {{"mode", "live"}, {"ratio", "9"}};
    CHECK_RC(setcache_set_many(c, "expert", "3", kv, 2), SETCACHE_ERR_INVALID);
    setcache_stats s1 = t_stats(c);
    CHECK_INT(s1.db_queries - s0.db_queries, 0);
    CHECK_INT(s1.invalid_writes - s0.invalid_writes, 4);
    /* the pattern is the server's */
    CHECK_RC(setcache_set_string(c, "expert", "3", "symbol", "eurusd"), SETCACHE_ERR_INVALID);
    CHECK(strstr(setcache_errmsg(), "(rule: pattern)") != NULL);
    char buf[32];
    CHECK_RC(setcache_get_string(c, "expert", "3", "symbol", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    int64_t v;
    CHECK_OK(setcache_get_int(c, "expert", "3", "risk_limit", &v));
    CHECK_INT(v, 20);
    CHECK_OK(setcache_get_string(c, "expert", "3", "mode", buf, sizeof buf, NULL));
    CHECK_STR(buf, "paper"); /* the default */
    /* rules are checked when defined */
    setcache_definition bad_default = {.entity_type = "expert",
                                       .key = "x",
                                       .type = SETCACHE_INT,
                                       .default_value = "0",
                                       .has_min = true,
                                       .min = 1};
    CHECK_RC(setcache_define_rules(c, &bad_default), SETCACHE_ERR_INVALID);
    setcache_definition misfit = {
        .entity_type = "expert", .key = "x", .type = SETCACHE_INT, .max_length = 3};
    CHECK_RC(setcache_define_rules(c, &misfit), SETCACHE_ERR_ARG);
    setcache_definition upside = {.entity_type = "expert",
                                  .key = "x",
                                  .type = SETCACHE_DOUBLE,
                                  .has_min = true,
                                  .min = 2,
                                  .has_max = true,
                                  .max = 1};
    CHECK_RC(setcache_define_rules(c, &upside), SETCACHE_ERR_ARG);
    setcache_close(c);
}

/* A second handle, open before the definitions are published, gets them
 * live: defaults answer, rules apply; a local definition that differs is
 * overridden by the shared one, logged and counted. */
TEST(shared_definitions_reach_a_second_handle_live)
{
    setcache *a = t_open();
    setcache *b = t_open();
    CHECK_OK(setcache_define(b, "expert", "risk_limit", SETCACHE_INT, "7"));
    char buf[32];
    CHECK_OK(setcache_get_string(b, "expert", "3", "risk_limit", buf, sizeof buf, NULL));
    CHECK_STR(buf, "7");
    CHECK_RC(setcache_get_string(b, "expert", "3", "mode", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    define_expert(a);
    double t0 = t_now_ms();
    CHECK_OK(setcache_publish_definitions(a, NULL));
    bool seen = false;
    while (!seen && t_now_ms() - t0 < 5000) {
        seen =
            setcache_get_string(b, "expert", "3", "mode", buf, sizeof buf, NULL) == SETCACHE_OK &&
            strcmp(buf, "paper") == 0;
        if (!seen) {
            t_sleep_ms(5);
        }
    }
    fprintf(stderr, "    the other handle has the published definitions %.0f ms later\n",
            t_now_ms() - t0);
    CHECK(seen);
    CHECK_OK(setcache_get_string(b, "expert", "3", "risk_limit", buf, sizeof buf, NULL));
    CHECK_STR(buf, "10"); /* the shared one wins */
    CHECK(t_stats(b).definition_conflicts >= 1);
    CHECK_RC(setcache_set_int(b, "expert", "3", "risk_limit", 500), SETCACHE_ERR_INVALID);
    /* publishing is how a handle changes a shared definition: its own
     * (default 7, no range) replaces the shared one everywhere */
    CHECK_OK(setcache_publish_definitions(b, NULL));
    CHECK_OK(setcache_get_string(b, "expert", "3", "risk_limit", buf, sizeof buf, NULL));
    CHECK_STR(buf, "7");
    t0 = t_now_ms();
    while (setcache_get_string(a, "expert", "3", "risk_limit", buf, sizeof buf, NULL) ==
               SETCACHE_OK &&
           strcmp(buf, "7") != 0 && t_now_ms() - t0 < 5000) {
        t_sleep_ms(5);
    }
    CHECK_STR(buf, "7");
    CHECK_OK(setcache_set_int(b, "expert", "3", "risk_limit", 500));
    /* a new handle reads them at open */
    setcache *c = t_open();
    CHECK_OK(setcache_get_string(c, "expert", "9", "mode", buf, sizeof buf, NULL));
    CHECK_STR(buf, "paper");
    /* a definition removed from the table is forgotten */
    t_sql("DELETE FROM \"%s\".definitions WHERE key = 'mode'", t_schema());
    t0 = t_now_ms();
    while (setcache_get_string(c, "expert", "9", "mode", buf, sizeof buf, NULL) == SETCACHE_OK &&
           t_now_ms() - t0 < 5000) {
        t_sleep_ms(5);
    }
    CHECK_RC(setcache_get_string(c, "expert", "9", "mode", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    setcache_close(c);
    setcache_close(b);
    setcache_close(a);
}

/* Publishing reports stored rows that break a rule, and changes none. */
TEST(publish_reports_existing_invalid_rows_and_rewrites_nothing)
{
    setcache *c = t_open();
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) SELECT 'expert', "
          "g::text, 'risk_limit', (g * 50)::text FROM generate_series(1, 5) g",
          t_schema());
    define_expert(c);
    uint64_t invalid = 0;
    CHECK_OK(setcache_publish_definitions(c, &invalid));
    CHECK_INT(invalid, 3); /* 150, 200, 250 > 100 */
    CHECK_STR(t_sql_value("SELECT string_agg(value, ',' ORDER BY entity_id) FROM \"%s\".settings",
                          t_schema()),
              "50,100,150,200,250");
    /* publishing again changes nothing: no new version, no notification */
    const char *v0 = t_sql_value("SELECT max(version) FROM \"%s\".definitions", t_schema());
    char before[32];
    snprintf(before, sizeof before, "%s", v0);
    CHECK_OK(setcache_publish_definitions(c, NULL));
    CHECK_STR(t_sql_value("SELECT max(version) FROM \"%s\".definitions", t_schema()), before);
    setcache_close(c);
}

/* Every change is in the history, with role, application and transaction:
 * library writes, psql writes, deletes and TRUNCATE (one row per setting). */
TEST(history_records_library_psql_and_truncate)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "account", "42", "risk", "1"));
    CHECK_OK(setcache_set_string(c, "account", "42", "risk", "2"));
    setcache_kv kv[2] = {{"a", "x"}, {"b", "y"}};
    CHECK_OK(setcache_set_many(c, "account", "42", kv, 2));
    CHECK_OK(setcache_delete(c, "account", "42", "a"));
    t_sql("SET application_name = 'deploy-script'");
    t_sql("UPDATE \"%s\".settings SET value = '3' WHERE key = 'risk'", t_schema());
    t_sql("TRUNCATE \"%s\".settings", t_schema());
    char want[128];
    snprintf(want, sizeof want, "setcache:%d:pool", (int)getpid());
    const char *got =
        t_sql_value("SELECT string_agg(concat_ws(' ', key, op, coalesce(old_value, '-'), "
                    "coalesce(new_value, '-'), CASE WHEN application_name = '%s' THEN 'lib' "
                    "ELSE application_name END, role), '; ' ORDER BY id) FROM \"%s\".history",
                    want, t_schema());
    fprintf(stderr, "    %s\n", got);
    CHECK_STR(got, "risk insert - 1 lib postgres; risk update 1 2 lib postgres; a insert - x lib "
                   "postgres; b insert - y lib postgres; a delete x - lib postgres; risk update 2 "
                   "3 deploy-script postgres; b truncate y - deploy-script postgres; risk "
                   "truncate 3 - deploy-script postgres");
    /* one transaction, one xid: set_many's two rows */
    CHECK_STR(t_sql_value("SELECT count(DISTINCT xid) FROM \"%s\".history WHERE op = 'insert' "
                          "AND key IN ('a', 'b')",
                          t_schema()),
              "1");
    /* a refused write leaves no history */
    CHECK_OK(setcache_define_rules(
        c, &(setcache_definition){.entity_type = "account", .key = "risk", .type = SETCACHE_INT}));
    CHECK_OK(setcache_publish_definitions(c, NULL));
    long long h0 = atoll(t_sql_value("SELECT count(*) FROM \"%s\".history", t_schema()));
    CHECK(!t_sql_try("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                     "('account', '42', 'risk', 'x')",
                     t_schema()));
    CHECK_INT(atoll(t_sql_value("SELECT count(*) FROM \"%s\".history", t_schema())), h0);
    setcache_close(c);
}

static const char *history_of(const char *entity_id)
{
    return t_sql_value("SELECT coalesce(string_agg(concat_ws(' ', key, op, coalesce(old_value, "
                       "'-'), coalesce(new_value, '-')), '; ' ORDER BY key, id), '') FROM "
                       "\"%s\".history WHERE entity_id = '%s'",
                       t_schema(), entity_id);
}

/* A log callback counting what says set_many fell back to its statement. */
static void count_fallbacks(void *arg, int level, const char *msg)
{
    if (level == SETCACHE_LOG_INFO && strstr(msg, "no write_many")) {
        atomic_fetch_add((atomic_int *)arg, 1);
    }
}

/* setcache_set_many goes through "schema".write_many: each change is
 * checked and recorded once (the row triggers stand aside for that function
 * alone), stamped with a new version and announced to other handles; an
 * invalid value anywhere in the call stores nothing. With the function gone
 * (a schema made by an older release) one statement does the same through
 * the row triggers. */
TEST(set_many_through_write_many_checks_and_records_each_change_once)
{
    atomic_int fallbacks = 0;
    setcache_options o;
    t_options(&o);
    o.log = count_fallbacks;
    o.log_arg = &fallbacks;
    setcache *c = t_open_with(&o);
    define_expert(c);
    CHECK_OK(setcache_publish_definitions(c, NULL));
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('expert', "
          "'3', 'risk_limit', '5'), ('expert', '3', 'gone', 'g')",
          t_schema());
    setcache *other = t_open();
    char buf[64];
    CHECK_OK(setcache_get_string(other, "expert", "3", "gone", buf, sizeof buf, NULL));
    long long v0 = atoll(t_sql_value("SELECT max(version) FROM \"%s\".settings", t_schema()));
    bool pss = t_server_statements() >= 0; /* tests/withpg.sh loads pg_stat_statements */
    if (pss) {
        t_sql("SELECT pg_stat_statements_reset()");
    }

    setcache_kv kv[] = {{"risk_limit", "7"}, {"mode", "live"}, {"note", "hi"}, {"gone", NULL}};
    CHECK_OK(setcache_set_many(c, "expert", "3", kv, 4));
    const char *h = history_of("3");
    fprintf(stderr, "    %s\n", h);
    CHECK_STR(h, "gone insert - g; gone delete g -; mode insert - live; note insert - hi; "
                 "risk_limit insert - 5; risk_limit update 5 7");
    if (pss) {
        CHECK_STR(t_sql_value("SELECT count(*) FROM pg_stat_statements WHERE query LIKE "
                              "'%%write_many(%%' AND calls = 1"),
                  "1");
    }
    /* each stored row got a version of its own, newer than before */
    CHECK_STR(t_sql_value("SELECT count(DISTINCT version) || ' ' || bool_and(version > %lld) FROM "
                          "\"%s\".settings WHERE entity_id = '3'",
                          v0, t_schema()),
              "3 true");
    CHECK(t_wait_value(other, "expert", "3", "risk_limit", "7", 5000) >= 0);
    CHECK(t_wait_value(other, "expert", "3", "note", "hi", 5000) >= 0);
    CHECK(t_wait_value(other, "expert", "3", "gone", NULL, 5000) >= 0);

    /* checked on the server: a handle that knows no rules sends it */
    t_options(&o);
    o.shared_definitions = false;
    setcache *blind = t_open_with(&o);
    setcache_kv bad[] = {{"note", "changed"}, {"risk_limit", "500"}};
    CHECK_RC(setcache_set_many(blind, "expert", "3", bad, 2), SETCACHE_ERR_INVALID);
    fprintf(stderr, "    %s\n", setcache_errmsg());
    CHECK(strstr(setcache_errmsg(), "risk_limit") != NULL);
    CHECK(strstr(setcache_errmsg(), "rule: max") != NULL);
    CHECK_STR(history_of("3"), h);
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE entity_id = '3' AND key = "
                          "'note'",
                          t_schema()),
              "hi");

    /* an older release applied its DDL again (the row trigger without its
     * WHEN): write_many leaves every row to the row triggers, recorded once */
    t_sql("DROP TRIGGER settings_notify ON \"%s\".settings", t_schema());
    t_sql("CREATE TRIGGER settings_notify AFTER INSERT OR UPDATE OR DELETE ON \"%s\".settings "
          "FOR EACH ROW EXECUTE FUNCTION \"%s\".settings_notify()",
          t_schema(), t_schema());
    setcache_kv older[] = {{"risk_limit", "9"}, {"mode", "paper"}};
    CHECK_OK(setcache_set_many(c, "expert", "3", older, 2));
    CHECK_STR(t_sql_value("SELECT string_agg(concat_ws(' ', key, op, old_value, new_value), '; ' "
                          "ORDER BY key, id) FROM (SELECT * FROM \"%s\".history WHERE "
                          "entity_id = '3' ORDER BY id DESC LIMIT 3) h",
                          t_schema()),
              "mode update live paper; risk_limit update 5 7; risk_limit update 7 9");
    CHECK(t_wait_value(other, "expert", "3", "mode", "paper", 5000) >= 0);

    CHECK_INT(atomic_load(&fallbacks), 0);

    /* without the function: the statement and the row triggers (said once) */
    t_sql("DROP FUNCTION \"%s\".write_many(text, text, text[], text[], text[], boolean[])",
          t_schema());
    setcache_kv again[] = {{"risk_limit", "8"}, {"note", NULL}, {"symbol", "EUR"}};
    CHECK_OK(setcache_set_many(c, "expert", "3", again, 3));
    CHECK_OK(setcache_set_many(c, "expert", "3", kv, 2));
    CHECK_STR(t_sql_value("SELECT string_agg(concat_ws(' ', key, op, coalesce(old_value, '-'), "
                          "coalesce(new_value, '-')), '; ' ORDER BY key, id) FROM (SELECT * "
                          "FROM \"%s\".history WHERE entity_id = '3' ORDER BY id DESC LIMIT 5) h",
                          t_schema()),
              "mode update paper live; note delete hi -; risk_limit update 9 8; risk_limit update "
              "8 7; symbol insert - EUR");
    CHECK(t_wait_value(other, "expert", "3", "symbol", "EUR", 5000) >= 0);
    CHECK_INT(atomic_load(&fallbacks), 1);
    setcache_close(blind);
    setcache_close(other);
    setcache_close(c);
}

typedef struct many_call {
    setcache *c;
    int rc;
} many_call;

static void *set_y_and_z(void *arg)
{
    many_call *m = arg;
    setcache_kv kv[] = {{"y", "mine-y"}, {"z", "mine-z"}};
    m->rc = setcache_set_many(m->c, "account", "5", kv, 2);
    return NULL;
}

/* write_many reads the old values of the rows there and inserts the rest;
 * a key another transaction inserts meanwhile is written again by its next
 * pass: an update of that transaction's value, recorded as one. */
TEST(write_many_writes_again_a_key_inserted_meanwhile)
{
    setcache *c = t_open();
    PGconn *tx = PQconnectdb(t_conninfo());
    CHECK(PQstatus(tx) == CONNECTION_OK);
    char sql[256];
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
             "('account', '5', 'z', 'theirs')",
             t_schema());
    PGresult *r = PQexec(tx, sql);
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    many_call m = {c, -1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, set_y_and_z, &m) == 0);
    /* set_many waits on the uncommitted z */
    double t0 = t_now_ms();
    bool waiting = false;
    while (!waiting && t_now_ms() - t0 < 5000) {
        waiting = atoi(t_sql_value("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type "
                                   "= 'Lock' AND query LIKE '%%write_many%%'")) > 0;
        t_sleep_ms(10);
    }
    r = PQexec(tx, "COMMIT");
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    pthread_join(th, NULL);
    PQfinish(tx);
    CHECK(waiting);
    CHECK_OK(m.rc);
    CHECK_STR(history_of("5"), "y insert - mine-y; z insert - theirs; z update theirs mine-z");
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "5", "z", buf, sizeof buf, NULL));
    CHECK_STR(buf, "mine-z");
    setcache_close(c);
}

/* The server reads and prepares a trigger's WHEN again for every statement;
 * an SQL function in it is parsed and inlined each time (revision 4's
 * standing_aside() there cost every write 23% more server work). The
 * settings' row triggers: the stamp has no WHEN, and the notification
 * trigger's calls built-in functions only. */
TEST(the_row_triggers_whens_call_only_built_in_functions)
{
    setcache *c = t_open();
    const char *s = t_schema();
    CHECK_STR(t_sql_value("SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                          "'\"%s\".settings'::regclass AND tgname = 'settings_stamp' AND tgqual "
                          "IS NULL",
                          s),
              "1");
    /* functions named in the notification trigger's WHEN, by language */
    CHECK_STR(t_sql_value("SELECT string_agg(DISTINCT l.lanname, ',') FROM pg_trigger t, "
                          "regexp_matches(t.tgqual, ':funcid (\\d+)', 'g') AS m, pg_proc p, "
                          "pg_language l WHERE t.tgrelid = '\"%s\".settings'::regclass AND "
                          "t.tgname = 'settings_notify' AND p.oid = m[1]::oid AND l.oid = "
                          "p.prolang",
                          s),
              "internal");
    setcache_close(c);
}
