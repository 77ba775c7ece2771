/* Tests of the API surface: options, codes, argument checking, types. */
#include "harness.h"

#include <math.h>
#include <pthread.h>

TEST(open_without_create_schema_explains_missing_table)
{
    setcache_options o;
    t_options(&o);
    o.create_schema = false;
    setcache *c = (setcache *)0x1;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_DB);
    CHECK(c == NULL);
    CHECK(strstr(setcache_errmsg(), "does not exist") != NULL);
    CHECK(strstr(setcache_errmsg(), "setcache schema") != NULL);
    /* after creating it, opening without create_schema works */
    setcache_close(t_open());
    o.create_schema = false;
    c = t_open_with(&o);
    setcache_close(c);
}

static long long rows(void)
{
    return atoll(t_sql_value("SELECT count(*) FROM \"%s\".settings", t_schema()));
}

TEST(bad_input_returns_arg_and_changes_nothing)
{
    setcache_options o;
    t_options(&o);
    o.max_value_len = 16;
    setcache *c = t_open_with(&o);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "orig"));
    setcache_stats st0;
    setcache_get_stats(c, &st0);
    long long rows0 = rows();

    char t64[65], s256[257];
    memset(t64, 'a', 64);
    t64[64] = 0;
    memset(s256, 'b', 256);
    s256[256] = 0;
    const char *bad_types[] = {NULL, "", t64, "Account", "acc-ount", "acc ount", "ключ"};
    const char *bad_texts[] = {NULL,      "",     s256,       "new\nline", "tab\there",
                               "del\x7f", "\xff", "\xc0\x80", "\xe2\x82",  "\xed\xa0\x80",
                               "esc\x1b"};
    char buf[64];
    size_t len;
    int64_t iv;
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        const char *t = bad_types[i];
        CHECK_RC(setcache_set_string(c, t, "1", "k", "v"), SETCACHE_ERR_ARG);
        CHECK_RC(setcache_get_string(c, t, "1", "k", buf, sizeof buf, &len), SETCACHE_ERR_ARG);
        CHECK_RC(setcache_get_int(c, t, "1", "k", &iv), SETCACHE_ERR_ARG);
        CHECK_RC(setcache_delete(c, t, "1", "k"), SETCACHE_ERR_ARG);
        CHECK_RC(setcache_define(c, t, "k", SETCACHE_INT, "1"), SETCACHE_ERR_ARG);
        CHECK_RC(setcache_load(c, t, "1"), SETCACHE_ERR_ARG);
        CHECK_RC(setcache_preload(c, t), SETCACHE_ERR_ARG);
    }
    for (size_t i = 0; i < sizeof bad_texts / sizeof bad_texts[0]; i++) {
        const char *s = bad_texts[i];
        CHECK_RC(setcache_set_string(c, "account", s, "k", "v"), SETCACHE_ERR_ARG);
        CHECK_RC(setcache_set_string(c, "account", "1", s, "v"), SETCACHE_ERR_ARG);
        CHECK_RC(setcache_get_string(c, "account", s, "k", buf, sizeof buf, &len),
                 SETCACHE_ERR_ARG);
        CHECK_RC(setcache_get_string(c, "account", "1", s, buf, sizeof buf, &len),
                 SETCACHE_ERR_ARG);
        CHECK_RC(setcache_delete(c, "account", "1", s), SETCACHE_ERR_ARG);
        setcache_kv kv[2] = {{"ok", "v"}, {s, "v"}};
        CHECK_RC(setcache_set_many(c, "account", "1", kv, 2), SETCACHE_ERR_ARG);
    }
    /* values: invalid UTF-8 and longer than max_value_len (16 here) */
    const char *bad_values[] = {NULL, "\xff", "abc\xc3", "01234567890123456"};
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        CHECK_RC(setcache_set_string(c, "account", "1", "k", bad_values[i]), SETCACHE_ERR_ARG);
        CHECK_RC(setcache_set_json(c, "account", "1", "k", bad_values[i]), SETCACHE_ERR_ARG);
        setcache_kv kv[2] = {{"k", "fine"}, {"k2", bad_values[i]}};
        if (bad_values[i]) {
            CHECK_RC(setcache_set_many(c, "account", "1", kv, 2), SETCACHE_ERR_ARG);
        }
    }
    CHECK_RC(setcache_set_double(c, "account", "1", "k", NAN), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_set_double(c, "account", "1", "k", INFINITY), SETCACHE_ERR_ARG);
    setcache_kv dup[2] = {{"k", "a"}, {"k", "b"}};
    CHECK_RC(setcache_set_many(c, "account", "1", dup, 2), SETCACHE_ERR_ARG);
    CHECK(strstr(setcache_errmsg(), "twice"));
    CHECK_RC(setcache_set_many(c, "account", "1", NULL, 1), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_get_int(c, "account", "1", "k", NULL), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_define(c, "account", "k", (setcache_type)99, NULL), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_foreach(c, "account", "1", NULL, NULL), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_get_string(NULL, "account", "1", "k", buf, sizeof buf, &len),
             SETCACHE_ERR_ARG);
    CHECK_RC(setcache_set_string(NULL, "account", "1", "k", "v"), SETCACHE_ERR_ARG);
    int rc = 0;
    CHECK(setcache_dup_string(c, "account", "1", NULL, &rc) == NULL);
    CHECK_INT(rc, SETCACHE_ERR_ARG);
    CHECK_RC(setcache_with_conn(c, NULL, NULL), SETCACHE_ERR_ARG);

    /* nothing changed: counters, table, cache */
    setcache_stats st1;
    setcache_get_stats(c, &st1);
    CHECK_INT(st1.writes, st0.writes);
    CHECK_INT(st1.db_queries, st0.db_queries);
    CHECK_INT(rows(), rows0);
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, &len));
    CHECK_STR(buf, "orig");
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE key = 'k'", t_schema()), "orig");
    setcache_close(c);
}

TEST(get_string_small_buffer_reports_length_and_leaves_buffer)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "account", "1", "api_key", "0123456789"));
    char buf[8];
    memcpy(buf, "XXXXXXX", 8);
    size_t len = 0;
    CHECK_RC(setcache_get_string(c, "account", "1", "api_key", buf, sizeof buf, &len),
             SETCACHE_ERR_SPACE);
    CHECK_INT(len, 10);
    CHECK_STR(buf, "XXXXXXX");
    len = 0;
    CHECK_RC(setcache_get_string(c, "account", "1", "api_key", NULL, 0, &len), SETCACHE_ERR_SPACE);
    CHECK_INT(len, 10);
    char big[11];
    CHECK_RC(setcache_get_string(c, "account", "1", "api_key", big, 10, &len), SETCACHE_ERR_SPACE);
    CHECK_OK(setcache_get_string(c, "account", "1", "api_key", big, 11, &len));
    CHECK_STR(big, "0123456789");
    CHECK_OK(setcache_get_string(c, "account", "1", "api_key", big, 11, NULL));
    setcache_close(c);
}

TEST(injection_strings_round_trip_byte_for_byte)
{
    const char *nasty[] = {"'; DROP TABLE settings; --",
                           "\"quoted\"",
                           "back\\slash\\",
                           "{\"a\",\"b\"}",
                           "{}",
                           "NULL",
                           "$1 $2",
                           "%s%n%x",
                           "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87 \xe2\x9c\x93 \xf0\x9f\x8e\x89",
                           "a|b\x1f"
                           "c",
                           " leading and trailing "};
    size_t n = sizeof nasty / sizeof nasty[0];
    setcache *c = t_open();
    for (size_t i = 0; i < n; i++) {
        /* the unit-separator string is not a valid id or key, only a value */
        bool ident_ok = strchr(nasty[i], '\x1f') == NULL;
        const char *id = ident_ok ? nasty[i] : "plain";
        char key[64];
        snprintf(key, sizeof key, "k%zu", i);
        CHECK_OK(setcache_set_string(c, "account", id, ident_ok ? nasty[i] : key, nasty[i]));
        CHECK_OK(setcache_set_string(c, "expert", "many", key, "x"));
    }
    setcache_kv kv[16];
    char keys[16][32];
    for (size_t i = 0; i < n; i++) {
        snprintf(keys[i], sizeof keys[i], "m%zu", i);
        kv[i].key = strchr(nasty[i], '\x1f') ? keys[i] : nasty[i];
        kv[i].value = nasty[i];
    }
    CHECK_OK(setcache_set_many(c, "expert", "many", kv, n));
    setcache_close(c);

    /* a fresh handle reads everything back from the table */
    c = t_open();
    for (size_t i = 0; i < n; i++) {
        bool ident_ok = strchr(nasty[i], '\x1f') == NULL;
        char key[64];
        snprintf(key, sizeof key, "k%zu", i);
        int rc;
        char *v = setcache_dup_string(c, "account", ident_ok ? nasty[i] : "plain",
                                      ident_ok ? nasty[i] : key, &rc);
        CHECK_INT(rc, SETCACHE_OK);
        CHECK_STR(v, nasty[i]);
        free(v);
        v = setcache_dup_string(c, "expert", "many", kv[i].key, &rc);
        CHECK_INT(rc, SETCACHE_OK);
        CHECK_STR(v, nasty[i]);
        free(v);
    }
    /* settings, definitions, history: nothing else */
    CHECK_STR(t_sql_value("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables "
                          "WHERE schemaname = '%s'",
                          t_schema()),
              "definitions,history,settings");
    setcache_close(c);
}

TEST(defaults_and_not_found_are_served_from_memory)
{
    setcache *c = t_open();
    CHECK_OK(setcache_define(c, "expert", "atr_period", SETCACHE_INT, "14"));
    CHECK_OK(setcache_define(c, "expert", "sizing_mode", SETCACHE_STRING, NULL));
    CHECK_OK(setcache_define(c, "expert", "enabled_instruments", SETCACHE_JSON, "[]"));
    CHECK_OK(setcache_set_int(c, "expert", "7", "atr_multiplier", 3));
    int64_t v = 0;
    CHECK_OK(setcache_get_int(c, "expert", "7", "atr_period", &v));
    CHECK_INT(v, 14);
    setcache_stats s0, s1;
    setcache_get_stats(c, &s0);
    for (int i = 0; i < 1000; i++) {
        CHECK_OK(setcache_get_int(c, "expert", "7", "atr_period", &v));
        CHECK_RC(setcache_get_int(c, "expert", "7", "no_such_key", &v), SETCACHE_NOT_FOUND);
        CHECK_RC(setcache_get_int(c, "expert", "7", "sizing_mode", &v), SETCACHE_NOT_FOUND);
    }
    int rc;
    char *j = setcache_dup_string(c, "expert", "7", "enabled_instruments", &rc);
    CHECK_STR(j, "[]");
    free(j);
    setcache_get_stats(c, &s1);
    CHECK_INT(s1.db_queries, s0.db_queries);
    CHECK_INT(s1.loads, s0.loads);
    CHECK(s1.hits >= s0.hits + 3000);
    /* an entity with no rows at all is loaded once, then answered from memory */
    CHECK_OK(setcache_get_int(c, "expert", "999", "atr_period", &v));
    CHECK_RC(setcache_get_int(c, "expert", "999", "nothing", &v), SETCACHE_NOT_FOUND);
    setcache_stats s2;
    setcache_get_stats(c, &s2);
    CHECK_INT(s2.loads, s1.loads + 1);
    setcache_close(c);
}

TEST(typed_reads_parse_once_and_reject_mismatch)
{
    setcache *c = t_open();
    struct {
        const char *text;
        int int_ok;
        long long i;
        int dbl_ok;
        double d;
        int bool_ok;
        bool b;
    } cases[] = {
        {"42", 1, 42, 1, 42, 0, false},
        {"-7", 1, -7, 1, -7, 0, false},
        {"1", 1, 1, 1, 1, 1, true},
        {"0", 1, 0, 1, 0, 1, false},
        {" 42", 0, 0, 0, 0, 0, false},
        {"42abc", 0, 0, 0, 0, 0, false},
        {"4.5", 0, 0, 1, 4.5, 0, false},
        {"1e3", 0, 0, 1, 1000, 0, false},
        {"YES", 0, 0, 0, 0, 1, true},
        {"off", 0, 0, 0, 0, 1, false},
        {"T", 0, 0, 0, 0, 1, true},
        {"nan", 0, 0, 0, 0, 0, false},
        {"0x10", 0, 0, 0, 0, 0, false},
        {"99999999999999999999", 0, 0, 1, 1e20, 0, false},
        {"9223372036854775807", 1, 9223372036854775807LL, 1, 9223372036854775807.0, 0, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%zu", i);
        CHECK_OK(setcache_set_string(c, "expert", "1", key, cases[i].text));
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%zu", i);
        int64_t iv = -1;
        double dv = -1;
        bool bv = false;
        int rc = setcache_get_int(c, "expert", "1", key, &iv);
        CHECK_INT(rc, cases[i].int_ok ? SETCACHE_OK : SETCACHE_ERR_TYPE);
        if (cases[i].int_ok) {
            CHECK_INT(iv, cases[i].i);
        } else {
            CHECK_INT(iv, -1);
        }
        rc = setcache_get_double(c, "expert", "1", key, &dv);
        CHECK_INT(rc, cases[i].dbl_ok ? SETCACHE_OK : SETCACHE_ERR_TYPE);
        if (cases[i].dbl_ok) {
            CHECK(dv == cases[i].d);
        }
        rc = setcache_get_bool(c, "expert", "1", key, &bv);
        CHECK_INT(rc, cases[i].bool_ok ? SETCACHE_OK : SETCACHE_ERR_TYPE);
        if (cases[i].bool_ok) {
            CHECK(bv == cases[i].b);
        }
    }
    setcache_close(c);
}

TEST(define_checks_writes_against_type)
{
    setcache *c = t_open();
    CHECK_OK(setcache_define(c, "expert", "atr_period", SETCACHE_INT, "14"));
    CHECK_OK(setcache_define(c, "expert", "use_atr_stop", SETCACHE_BOOL, "false"));
    CHECK_OK(setcache_define(c, "expert", "risk_per_trade_pct", SETCACHE_DOUBLE, "1.5"));
    CHECK_OK(setcache_define(c, "expert", "schedule", SETCACHE_JSON, NULL));
    CHECK_RC(setcache_define(c, "expert", "bad_int", SETCACHE_INT, "fourteen"), SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_define(c, "expert", "bad_json", SETCACHE_JSON, "{nope"), SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_set_string(c, "expert", "1", "atr_period", "abc"), SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_set_bool(c, "expert", "1", "atr_period", true), SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_set_string(c, "expert", "1", "use_atr_stop", "maybe"), SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_set_string(c, "expert", "1", "risk_per_trade_pct", "1.5x"),
             SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_set_string(c, "expert", "1", "schedule", "{\"days\": [1, 2"),
             SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_set_json(c, "expert", "1", "undefined_json", "[1,"), SETCACHE_ERR_TYPE);
    setcache_kv kv[2] = {{"atr_period", "20"}, {"schedule", "{broken"}};
    CHECK_RC(setcache_set_many(c, "expert", "1", kv, 2), SETCACHE_ERR_TYPE);
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".settings", t_schema()), "0");

    CHECK_OK(setcache_set_int(c, "expert", "1", "atr_period", 21));
    CHECK_OK(setcache_set_string(c, "expert", "1", "use_atr_stop", "on"));
    CHECK_OK(setcache_set_int(c, "expert", "1", "risk_per_trade_pct", 2));
    const char *sched = "{ \"days\" : [1, 2],\n  \"at\": \"09:30\" }";
    CHECK_OK(setcache_set_string(c, "expert", "1", "schedule", sched));
    int64_t iv;
    bool bv;
    double dv;
    CHECK_OK(setcache_get_int(c, "expert", "1", "atr_period", &iv));
    CHECK_INT(iv, 21);
    CHECK_OK(setcache_get_bool(c, "expert", "1", "use_atr_stop", &bv));
    CHECK(bv);
    CHECK_OK(setcache_get_double(c, "expert", "1", "risk_per_trade_pct", &dv));
    CHECK(dv == 2.0);
    int rc;
    char *s = setcache_dup_string(c, "expert", "1", "schedule", &rc);
    CHECK_STR(s, sched);
    free(s);
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE key = 'schedule'", t_schema()),
              sched);
    setcache_close(c);
}

TEST(set_double_round_trips_exactly)
{
    setcache *c = t_open();
    double vals[] = {0.1, 1e-300, -2.5, 123456789.123456789, 1.0 / 3.0, 0.0, 6.02214076e23};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        char key[8];
        snprintf(key, sizeof key, "d%zu", i);
        CHECK_OK(setcache_set_double(c, "expert", "2", key, vals[i]));
    }
    setcache_close(c);
    c = t_open();
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        char key[8];
        snprintf(key, sizeof key, "d%zu", i);
        double d = -1;
        CHECK_OK(setcache_get_double(c, "expert", "2", key, &d));
        CHECK(d == vals[i]);
    }
    setcache_close(c);
}

