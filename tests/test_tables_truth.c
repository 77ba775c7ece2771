/* Existing tables: one truth per row. The writer and a bystander must read
 * the bytes the server stored (as a load decodes them) after every change,
 * from the library, from psql and from a cascade; one spelling per id. */
#include "harness.h"

#include <stdarg.h>
#include <sys/wait.h>

/* After a write by w: w reads want (NULL = NOT_FOUND) at once (G2), and
 * the bystander b within 100 ms. After a change from outside (own =
 * false), both within 100 ms. */
static void agree_at(const char *file, int line, bool own, setcache *w, setcache *b,
                     const char *type, const char *id, const char *key, const char *want)
{
    int limit = (int)(100 * t_scale());
    double dw = t_wait_value(w, type, id, key, want, own ? 1 : limit);
    double db = t_wait_value(b, type, id, key, want, limit);
    char wb[512], bb[512];
    int wrc = setcache_get_string(w, type, id, key, wb, sizeof wb, NULL);
    int brc = setcache_get_string(b, type, id, key, bb, sizeof bb, NULL);
    if (dw < 0 || db < 0) {
        t_fail(file, line,
               "%s/%s/%s: wanted \"%s\"; the writer reads rc %d \"%s\"%s, the bystander rc %d "
               "\"%s\" after 100 ms",
               type, id, key, want ? want : "(not found)", wrc, wrc == SETCACHE_OK ? wb : "",
               own ? " at once" : " after 100 ms", brc, brc == SETCACHE_OK ? bb : "");
    }
}
#define AGREE(w, b, type, id, key, want)                                                           \
    agree_at(__FILE__, __LINE__, true, w, b, type, id, key, want)
#define AGREE_OUTSIDE(w, b, type, id, key, want)                                                   \
    agree_at(__FILE__, __LINE__, false, w, b, type, id, key, want)

/* A fresh handle (a load) reads the same as the running ones. */
static void fresh_agrees(setcache_options *o, setcache *w, const char *type, const char *id,
                         const char *key)
{
    setcache *f = t_open_with(o);
    char fb[512], wb[512];
    int frc = setcache_get_string(f, type, id, key, fb, sizeof fb, NULL);
    int wrc = setcache_get_string(w, type, id, key, wb, sizeof wb, NULL);
    CHECK_INT(frc, wrc);
    if (frc == SETCACHE_OK) {
        CHECK_STR(wb, fb);
    }
    setcache_close(f);
}

static char tab1[128], tab2[128];

static void map_of_shape(setcache_table_map *m, const char *table, const char *type, int kind,
                         const char *idcol)
{
    *m = (setcache_table_map){.entity_type = type,
                              .table = table,
                              .entity_column = idcol,
                              .id_kind = kind,
                              .key_column = "name"};
}

#define U1 "6f1c2a9e-3b4d-4e5f-8a7b-0c1d2e3f4a5b"

/* Shape: uuid ids, one value column; run for text, json and jsonb. */
static void one_value_column(const char *coltype, const char *spaced_json, const char *stored_json)
{
    const char *s = t_schema();
    t_sql("CREATE SCHEMA IF NOT EXISTS \"%s\"", s);
    t_sql("CREATE TABLE \"%s\".owners (id uuid PRIMARY KEY)", s);
    t_sql("CREATE TABLE \"%s\".prefs (owner uuid NOT NULL REFERENCES \"%s\".owners(id) ON DELETE "
          "CASCADE, name text NOT NULL, doc %s, PRIMARY KEY (owner, name))",
          s, s, coltype);
    t_sql("INSERT INTO \"%s\".owners VALUES ('" U1 "')", s);
    snprintf(tab1, sizeof tab1, "%s.prefs", s);
    setcache_table_map m;
    map_of_shape(&m, tab1, "owner", SETCACHE_ID_UUID, "owner");
    m.value_column = "doc";
    setcache_options o;
    t_options(&o);
    o.tables = &m;
    o.ntables = 1;
    setcache *w = t_open_with(&o), *b = t_open_with(&o);
    char buf[64];
    /* both have the entity cached: the writer installs what its writes return */
    CHECK_RC(setcache_get_string(w, "owner", U1, "layout", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_RC(setcache_get_string(b, "owner", U1, "layout", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    /* library writes: JSON, strings, numbers */
    CHECK_OK(setcache_set_json(w, "owner", U1, "layout", spaced_json));
    AGREE(w, b, "owner", U1, "layout", stored_json);
    CHECK_OK(setcache_set_string(w, "owner", U1, "title", "desk"));
    AGREE(w, b, "owner", U1, "title", "desk");
    CHECK_OK(setcache_set_double(w, "owner", U1, "ratio", 0.1));
    AGREE(w, b, "owner", U1, "ratio", "0.1");
    CHECK_OK(setcache_set_int(w, "owner", U1, "since_us", 1700000000000000));
    AGREE(w, b, "owner", U1, "since_us", "1700000000000000");
    int64_t iv = 0;
    CHECK_OK(setcache_get_int(b, "owner", U1, "since_us", &iv));
    CHECK_INT(iv, 1700000000000000);
    setcache_kv kv[2] = {{"layout", "{\"z\":   0, \"y\": 1}"}, {"title", NULL}};
    CHECK_OK(setcache_define(w, "owner", "layout", SETCACHE_JSON, NULL));
    CHECK_OK(setcache_set_many(w, "owner", U1, kv, 2));
    AGREE(w, b, "owner", U1, "layout",
          strcmp(coltype, "jsonb") == 0 ? "{\"y\": 1, \"z\": 0}" : "{\"z\":   0, \"y\": 1}");
    AGREE(w, b, "owner", U1, "title", NULL);
    /* psql writes */
    t_sql("UPDATE \"%s\".prefs SET doc = '%s' WHERE name = 'layout'", s, spaced_json);
    AGREE_OUTSIDE(w, b, "owner", U1, "layout", stored_json);
    fresh_agrees(&o, w, "owner", U1, "layout");
    fresh_agrees(&o, w, "owner", U1, "ratio");
    /* a cascade */
    t_sql("DELETE FROM \"%s\".owners", s);
    AGREE_OUTSIDE(w, b, "owner", U1, "layout", NULL);
    AGREE_OUTSIDE(w, b, "owner", U1, "since_us", NULL);
    setcache_close(w);
    setcache_close(b);
}

TEST(writer_and_bystander_read_the_stored_text_of_a_text_column)
{
    one_value_column("text", "{\"b\": 1,   \"a\": [true, null]}",
                     "{\"b\": 1,   \"a\": [true, null]}");
}

TEST(writer_and_bystander_read_the_stored_text_of_a_json_column)
{
    one_value_column("json", "{\"b\": 1,   \"a\": [true, null]}",
                     "{\"b\": 1,   \"a\": [true, null]}");
}

TEST(writer_and_bystander_read_the_normalised_text_of_a_jsonb_column)
{
    one_value_column("jsonb", "{\"b\": 1,   \"a\": [true, null]}",
                     "{\"a\": [true, null], \"b\": 1}");
}

/* Shape: bigint ids, typed columns with other names, the number column of
 * the given type; keys i (int), d (double), f (bool), j (json), s. */
static setcache_options typed_shape(setcache_table_map *m, const char *numtype)
{
    const char *s = t_schema();
    t_sql("CREATE SCHEMA IF NOT EXISTS \"%s\"", s);
    t_sql("CREATE TABLE \"%s\".strategy (id bigint PRIMARY KEY)", s);
    t_sql("CREATE TABLE \"%s\".strategy_cfg (sid bigint NOT NULL REFERENCES \"%s\".strategy(id) "
          "ON DELETE CASCADE, name text NOT NULL, s_val text, n_val %s, j_val jsonb, "
          "UNIQUE (sid, name))",
          s, s, numtype);
    t_sql("INSERT INTO \"%s\".strategy VALUES (12), (-5)", s);
    snprintf(tab2, sizeof tab2, "%s.strategy_cfg", s);
    map_of_shape(m, tab2, "strategy", SETCACHE_ID_INTEGER, "sid");
    m->str_column = "s_val";
    m->num_column = "n_val";
    m->json_column = "j_val";
    setcache_options o;
    t_options(&o);
    o.tables = m;
    o.ntables = 1;
    return o;
}

static void define_typed(setcache *c)
{
    CHECK_OK(setcache_define(c, "strategy", "i", SETCACHE_INT, NULL));
    CHECK_OK(setcache_define(c, "strategy", "d", SETCACHE_DOUBLE, NULL));
    CHECK_OK(setcache_define(c, "strategy", "f", SETCACHE_BOOL, NULL));
    CHECK_OK(setcache_define(c, "strategy", "j", SETCACHE_JSON, NULL));
}

/* Writes and psql changes common to every number column type. */
static void typed_common(setcache_options *o, setcache *w, setcache *b, const char *numtype)
{
    const char *s = t_schema();
    char buf[64];
    CHECK_RC(setcache_get_string(w, "strategy", "12", "i", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_RC(setcache_get_string(b, "strategy", "12", "i", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_OK(setcache_set_int(w, "strategy", "12", "i", 1700000000000000));
    AGREE(w, b, "strategy", "12", "i", "1700000000000000");
    int64_t iv = 0;
    CHECK_OK(setcache_get_int(b, "strategy", "12", "i", &iv));
    CHECK_INT(iv, 1700000000000000);
    CHECK_OK(setcache_set_int(w, "strategy", "12", "i", -9007199254740992)); /* -2^53 */
    AGREE(w, b, "strategy", "12", "i", "-9007199254740992");
    CHECK_OK(setcache_set_double(w, "strategy", "12", "d", 3.0));
    AGREE(w, b, "strategy", "12", "d", "3");
    CHECK_OK(setcache_set_bool(w, "strategy", "12", "f", true));
    AGREE(w, b, "strategy", "12", "f", "true");
    CHECK_OK(setcache_set_json(w, "strategy", "12", "j", "{\"b\": 1,   \"a\": [true, null]}"));
    AGREE(w, b, "strategy", "12", "j", "{\"a\": [true, null], \"b\": 1}");
    CHECK_OK(setcache_set_string(w, "strategy", "12", "s", "None")); /* the legacy "no value" */
    AGREE(w, b, "strategy", "12", "s", NULL);
    CHECK_OK(setcache_set_string(w, "strategy", "12", "s", "x"));
    AGREE(w, b, "strategy", "12", "s", "x");
    setcache_kv kv[3] = {{"i", "42"}, {"j", "[1,  2]"}, {"s", NULL}};
    CHECK_OK(setcache_set_many(w, "strategy", "12", kv, 3));
    AGREE(w, b, "strategy", "12", "i", "42");
    AGREE(w, b, "strategy", "12", "j", "[1, 2]");
    AGREE(w, b, "strategy", "12", "s", NULL);
    /* psql: an integral number of any size reads as an integer */
    t_sql("UPDATE \"%s\".strategy_cfg SET n_val = 1700000000000000 WHERE name = 'i'", s);
    AGREE_OUTSIDE(w, b, "strategy", "12", "i", "1700000000000000");
    CHECK_OK(setcache_get_int(w, "strategy", "12", "i", &iv));
    CHECK_INT(iv, 1700000000000000);
    t_sql("INSERT INTO \"%s\".strategy_cfg (sid, name, n_val) VALUES (-5, 'i', 7)", s);
    CHECK_OK(setcache_get_int(b, "strategy", "-5", "i", &iv));
    CHECK_INT(iv, 7);
    CHECK_OK(setcache_get_int(w, "strategy", "-5", "i", &iv));
    CHECK_OK(setcache_set_int(w, "strategy", "-5", "i", 8));
    AGREE(w, b, "strategy", "-5", "i", "8");
    fresh_agrees(o, w, "strategy", "12", "i");
    fresh_agrees(o, w, "strategy", "12", "d");
    fresh_agrees(o, w, "strategy", "12", "j");
    (void)numtype;
}

static void typed_cascade(setcache *w, setcache *b)
{
    t_sql("DELETE FROM \"%s\".strategy WHERE id = 12", t_schema());
    AGREE_OUTSIDE(w, b, "strategy", "12", "i", NULL);
    AGREE_OUTSIDE(w, b, "strategy", "12", "j", NULL);
}

TEST(double_precision_column_reads_one_canonical_text_everywhere)
{
    setcache_table_map m;
    setcache_options o = typed_shape(&m, "double precision");
    setcache *w = t_open_with(&o), *b = t_open_with(&o);
    define_typed(w);
    define_typed(b);
    typed_common(&o, w, b, "double precision");
    CHECK_OK(setcache_set_double(w, "strategy", "12", "d", 0.1));
    AGREE(w, b, "strategy", "12", "d", "0.1");
    CHECK_OK(setcache_set_double(w, "strategy", "12", "d", 1.0 / 3));
    AGREE(w, b, "strategy", "12", "d", "0.3333333333333333");
    CHECK_OK(setcache_set_double(w, "strategy", "12", "d", 1e20)); /* beyond bigint */
    AGREE(w, b, "strategy", "12", "d", "1e+20");
    CHECK_OK(setcache_set_int(w, "strategy", "12", "i", 9007199254740992)); /* 2^53 */
    AGREE(w, b, "strategy", "12", "i", "9007199254740992");
    /* 2^53 + 1 can't be held by a double precision column: refused, nothing changes */
    CHECK_RC(setcache_set_int(w, "strategy", "12", "i", 9007199254740993), SETCACHE_ERR_ARG);
    CHECK(strstr(setcache_errmsg(), "exactly") != NULL);
    CHECK(strstr(setcache_errmsg(), "n_val") != NULL);
    AGREE(w, b, "strategy", "12", "i", "9007199254740992");
    CHECK_STR(t_sql_value("SELECT n_val::bigint FROM \"%s\".strategy_cfg WHERE sid = 12 AND name "
                          "= 'i'",
                          t_schema()),
              "9007199254740992");
    setcache_kv kv[1] = {{"i", "9007199254740993"}};
    CHECK_RC(setcache_set_many(w, "strategy", "12", kv, 1), SETCACHE_ERR_ARG);
    t_sql("UPDATE \"%s\".strategy_cfg SET n_val = 0.1 WHERE sid = 12 AND name = 'd'", t_schema());
    AGREE_OUTSIDE(w, b, "strategy", "12", "d", "0.1");
    typed_cascade(w, b);
    setcache_close(w);
    setcache_close(b);
}

TEST(numeric_column_reads_one_canonical_text_everywhere)
{
    setcache_table_map m;
    setcache_options o = typed_shape(&m, "numeric(30,4)");
    setcache *w = t_open_with(&o), *b = t_open_with(&o);
    define_typed(w);
    define_typed(b);
    typed_common(&o, w, b, "numeric");
    CHECK_OK(setcache_set_int(w, "strategy", "12", "i", 9007199254740993)); /* exact here */
    AGREE(w, b, "strategy", "12", "i", "9007199254740993");
    CHECK_OK(setcache_set_double(w, "strategy", "12", "d", 0.1));
    AGREE(w, b, "strategy", "12", "d", "0.1000");                      /* the column's own scale */
    CHECK_OK(setcache_set_double(w, "strategy", "12", "d", 0.123456)); /* rounded by the column */
    AGREE(w, b, "strategy", "12", "d", "0.1235");
    t_sql("UPDATE \"%s\".strategy_cfg SET n_val = 14.00 WHERE sid = 12 AND name = 'd'", t_schema());
    AGREE_OUTSIDE(w, b, "strategy", "12", "d", "14");
    typed_cascade(w, b);
    setcache_close(w);
    setcache_close(b);
}

TEST(bigint_column_reads_one_canonical_text_everywhere)
{
    setcache_table_map m;
    setcache_options o = typed_shape(&m, "bigint");
    setcache *w = t_open_with(&o), *b = t_open_with(&o);
    define_typed(w);
    define_typed(b);
    typed_common(&o, w, b, "bigint");
    CHECK_OK(setcache_set_int(w, "strategy", "12", "i", INT64_MAX));
    AGREE(w, b, "strategy", "12", "i", "9223372036854775807");
    /* a fraction for an integer column is refused, not rounded */
    CHECK_RC(setcache_set_double(w, "strategy", "12", "d", 0.5), SETCACHE_ERR_ARG);
    CHECK(strstr(setcache_errmsg(), "integers only") != NULL);
    AGREE(w, b, "strategy", "12", "d", "3");
    typed_cascade(w, b);
    setcache_close(w);
    setcache_close(b);
}

TEST(the_built_in_table_stores_the_shortest_text_of_a_double)
{
    setcache *w = t_open(), *b = t_open();
    char buf[64];
    CHECK_RC(setcache_get_string(w, "account", "1", "x", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_RC(setcache_get_string(b, "account", "1", "x", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_OK(setcache_set_double(w, "account", "1", "x", 0.1));
    AGREE(w, b, "account", "1", "x", "0.1");
    CHECK_OK(setcache_set_double(w, "account", "1", "x", 1.0 / 3));
    AGREE(w, b, "account", "1", "x", "0.3333333333333333");
    CHECK_OK(setcache_set_double(w, "account", "1", "x", 5e-324));
    AGREE(w, b, "account", "1", "x", "5e-324");
    double d = 0;
    CHECK_OK(setcache_get_double(b, "account", "1", "x", &d));
    CHECK(d == 5e-324);
    CHECK_OK(setcache_set_json(w, "account", "1", "j", "{\"b\": 1,   \"a\": 2}"));
    AGREE(w, b, "account", "1", "j", "{\"b\": 1,   \"a\": 2}");
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE key = 'x'", t_schema()),
              "5e-324");
    setcache_close(w);
    setcache_close(b);
}

static void noop_change(void *arg, const setcache_change *ch)
{
    (void)arg;
    (void)ch;
}

static int count_pairs(void *arg, const char *key, const char *value, bool is_default)
{
    (void)key;
    (void)value;
    (void)is_default;
    ++*(int *)arg;
    return 0;
}

/* Every public path refuses another spelling of a mapped id. */
static void refused_everywhere(setcache *c, const char *type, const char *id)
{
    char buf[64];
    int64_t iv;
    uint64_t sub;
    int n = 0;
    setcache_kv kv[1] = {{"k", "v"}};
    CHECK_RC(setcache_get_string(c, type, id, "k", buf, sizeof buf, NULL), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_get_int(c, type, id, "k", &iv), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_set_string(c, type, id, "k", "v"), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_delete(c, type, id, "k"), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_set_many(c, type, id, kv, 1), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_foreach(c, type, id, count_pairs, &n), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_subscribe(c, type, id, NULL, noop_change, NULL, &sub), SETCACHE_ERR_ARG);
}

TEST(integer_and_uuid_ids_have_one_spelling_and_others_are_refused)
{
    const char *s = t_schema();
    t_sql("CREATE SCHEMA IF NOT EXISTS \"%s\"", s);
    t_sql("CREATE TABLE \"%s\".acct (acct_id bigint NOT NULL, name text NOT NULL, v text, UNIQUE "
          "(acct_id, name))",
          s);
    t_sql("CREATE TABLE \"%s\".dev (dev_id uuid NOT NULL, name text NOT NULL, v text, UNIQUE "
          "(dev_id, name))",
          s);
    t_sql("INSERT INTO \"%s\".acct VALUES (12, 'k', 'twelve'), (0, 'k', 'zero'), (-3, 'k', "
          "'minus')",
          s);
    t_sql("INSERT INTO \"%s\".dev VALUES ('" U1 "', 'k', 'dev')", s);
    char ta[128], td[128];
    snprintf(ta, sizeof ta, "%s.acct", s);
    snprintf(td, sizeof td, "%s.dev", s);
    setcache_table_map m[2];
    map_of_shape(&m[0], ta, "acct", SETCACHE_ID_INTEGER, "acct_id");
    m[0].value_column = "v";
    map_of_shape(&m[1], td, "dev", SETCACHE_ID_UUID, "dev_id");
    m[1].value_column = "v";
    setcache_options o;
    t_options(&o);
    o.tables = m;
    o.ntables = 2;
    setcache *c = t_open_with(&o), *b = t_open_with(&o);
    char buf[64];
    CHECK_OK(setcache_get_string(c, "acct", "12", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "twelve");
    CHECK_OK(setcache_get_string(c, "acct", "0", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "zero");
    CHECK_OK(setcache_get_string(c, "acct", "-3", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "minus");
    const char *bad_int[] = {
        "012", "+12", "-0", "00", " 12", "12 ", "1e1", "0x1", "9223372036854775808", "-012"};
    for (size_t i = 0; i < sizeof bad_int / sizeof bad_int[0]; i++) {
        refused_everywhere(c, "acct", bad_int[i]);
    }
    CHECK(strstr(setcache_errmsg(), "leading zeros") != NULL);
    CHECK_OK(setcache_get_string(c, "dev", U1, "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "dev");
    const char *bad_uuid[] = {
        "6F1C2A9E-3B4D-4E5F-8A7B-0C1D2E3F4A5B", "6f1c2a9e3b4d4e5f8a7b0c1d2e3f4a5b",
        "{6f1c2a9e-3b4d-4e5f-8a7b-0c1d2e3f4a5b}", "6f1c2a9e-3b4d-4e5f-8a7b-0c1d2e3f4a5"};
    for (size_t i = 0; i < sizeof bad_uuid / sizeof bad_uuid[0]; i++) {
        refused_everywhere(c, "dev", bad_uuid[i]);
    }
    CHECK_RC(setcache_get_string(c, "dev", bad_uuid[0], "k", buf, sizeof buf, NULL),
             SETCACHE_ERR_ARG);
    CHECK(strstr(setcache_errmsg(), "lower case") != NULL);
    /* one row, one entity: nothing was cached under the other spellings */
    setcache_stats st;
    setcache_get_stats(c, &st);
    CHECK_INT(st.entities, 4);
    /* the canonical spelling follows changes from anywhere */
    CHECK_OK(setcache_set_string(c, "acct", "12", "k", "12b"));
    AGREE(c, b, "acct", "12", "k", "12b");
    t_sql("UPDATE \"%s\".acct SET v = '12c' WHERE acct_id = 12", s);
    AGREE_OUTSIDE(c, b, "acct", "12", "k", "12c");
    t_sql("UPDATE \"%s\".dev SET v = 'dev2'", s);
    AGREE_OUTSIDE(c, b, "dev", U1, "k", "dev2");
    /* the tool refuses them too, with the library's message */
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s/setcache --conninfo '%s' --schema %s --channel %s --map acct=%s,acct_id,integer,"
             "name,v get acct 012 k 2>&1",
             t_build_dir(), t_conninfo(), s, s, ta);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    char out[1024];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    if (!strstr(out, "leading zeros")) {
        t_fail(__FILE__, __LINE__, "tool said: %s", out);
    }
    setcache_close(c);
    setcache_close(b);
}

TEST(deleting_either_of_two_duplicate_rows_heals_the_key_in_running_processes)
{
    const char *s = t_schema();
    t_sql("CREATE SCHEMA IF NOT EXISTS \"%s\"", s);
    t_sql("CREATE TABLE \"%s\".site (id serial PRIMARY KEY, k text NOT NULL, value_str text, "
          "value_num double precision, value_json json)",
          s);
    t_sql("INSERT INTO \"%s\".site (k, value_str) VALUES ('model', 'older')", s);
    t_sql("INSERT INTO \"%s\".site (k, value_str) VALUES ('model', 'newer')", s);
    char tab[128];
    snprintf(tab, sizeof tab, "%s.site", s);
    setcache_table_map m = {.entity_type = "site",
                            .table = tab,
                            .id_kind = SETCACHE_ID_NONE,
                            .key_column = "k",
                            .str_column = "value_str",
                            .num_column = "value_num",
                            .json_column = "value_json"};
    setcache_options o;
    t_options(&o);
    o.tables = &m;
    o.ntables = 1;
    setcache *a = t_open_with(&o), *b = t_open_with(&o);
    char buf[64];
    for (int round = 0; round < 2; round++) {
        CHECK_RC(setcache_get_string(a, "site", "global", "model", buf, sizeof buf, NULL),
                 SETCACHE_ERR_DB);
        CHECK(strstr(setcache_errmsg(), "more than once") != NULL);
        CHECK_RC(setcache_get_string(b, "site", "global", "model", buf, sizeof buf, NULL),
                 SETCACHE_ERR_DB);
        /* round 0 deletes the older row (its version is the lower one),
         * round 1 the newer */
        t_sql("DELETE FROM \"%s\".site WHERE id = (SELECT %s(id) FROM \"%s\".site WHERE k = "
              "'model')",
              s, round == 0 ? "min" : "max", s);
        const char *want = round == 0 ? "newer" : "older";
        CHECK(t_wait_value(a, "site", "global", "model", want, (int)(100 * t_scale())) >= 0);
        CHECK(t_wait_value(b, "site", "global", "model", want, (int)(100 * t_scale())) >= 0);
        if (round == 0) {
            t_sql("UPDATE \"%s\".site SET value_str = 'older'", s);
            CHECK(t_wait_value(a, "site", "global", "model", "older", 1000) >= 0);
            t_sql("INSERT INTO \"%s\".site (k, value_str) VALUES ('model', 'newer')", s);
            double t0 = t_now_ms();
            while (setcache_get_string(a, "site", "global", "model", buf, sizeof buf, NULL) !=
                       SETCACHE_ERR_DB &&
                   t_now_ms() - t0 < 1000) {
                t_sleep_ms(1);
            }
            while (setcache_get_string(b, "site", "global", "model", buf, sizeof buf, NULL) !=
                       SETCACHE_ERR_DB &&
                   t_now_ms() - t0 < 1000) {
                t_sleep_ms(1);
            }
        }
    }
    setcache_close(a);
    setcache_close(b);
}

TEST(text_ids_a_real_column_and_a_writable_global_table_read_one_truth)
{
    const char *s = t_schema();
    t_sql("CREATE SCHEMA IF NOT EXISTS \"%s\"", s);
    t_sql("CREATE TABLE \"%s\".desk_cfg (desk text NOT NULL, opt text NOT NULL, str text, num "
          "real, js json, PRIMARY KEY (desk, opt))",
          s);
    t_sql("CREATE TABLE \"%s\".global_cfg (opt text PRIMARY KEY, str text, num real, js json)", s);
    char t1[128], t2[128];
    snprintf(t1, sizeof t1, "%s.desk_cfg", s);
    snprintf(t2, sizeof t2, "%s.global_cfg", s);
    setcache_table_map m[2] = {{.entity_type = "desk",
                                .table = t1,
                                .entity_column = "desk",
                                .id_kind = SETCACHE_ID_TEXT,
                                .key_column = "opt",
                                .str_column = "str",
                                .num_column = "num",
                                .json_column = "js"},
                               {.entity_type = "glob",
                                .table = t2,
                                .id_kind = SETCACHE_ID_NONE,
                                .key_column = "opt",
                                .str_column = "str",
                                .num_column = "num",
                                .json_column = "js"}};
    setcache_options o;
    t_options(&o);
    o.tables = m;
    o.ntables = 2;
    setcache *w = t_open_with(&o), *b = t_open_with(&o);
    const char *ids[2][2] = {{"desk", "Équipe 7 / FX"}, {"glob", "global"}};
    for (int k = 0; k < 2; k++) {
        const char *ty = ids[k][0], *id = ids[k][1];
        char buf[64];
        CHECK_OK(setcache_define(w, ty, "lim", SETCACHE_DOUBLE, NULL));
        CHECK_OK(setcache_define(w, ty, "n", SETCACHE_INT, NULL));
        CHECK_RC(setcache_get_string(w, ty, id, "lim", buf, sizeof buf, NULL), SETCACHE_NOT_FOUND);
        CHECK_RC(setcache_get_string(b, ty, id, "lim", buf, sizeof buf, NULL), SETCACHE_NOT_FOUND);
        CHECK_OK(setcache_set_double(w, ty, id, "lim", 0.1));
        AGREE(w, b, ty, id, "lim", "0.1");                    /* real's own shortest text */
        CHECK_OK(setcache_set_int(w, ty, id, "n", 16777216)); /* 2^24 */
        AGREE(w, b, ty, id, "n", "16777216");
        int64_t iv = 0;
        CHECK_OK(setcache_get_int(b, ty, id, "n", &iv));
        CHECK_INT(iv, 16777216);
        CHECK_RC(setcache_set_int(w, ty, id, "n", 16777217), SETCACHE_ERR_ARG);
        AGREE(w, b, ty, id, "n", "16777216");
        CHECK_OK(setcache_set_json(w, ty, id, "doc", "{\"b\":  1}"));
        AGREE(w, b, ty, id, "doc", "{\"b\":  1}"); /* json keeps its text */
        t_sql("UPDATE %s SET num = 2.5 WHERE opt = 'lim'", k == 0 ? t1 : t2);
        AGREE_OUTSIDE(w, b, ty, id, "lim", "2.5");
        CHECK_OK(setcache_delete(w, ty, id, "lim"));
        AGREE(w, b, ty, id, "lim", NULL);
        fresh_agrees(&o, w, ty, id, "n");
    }
    setcache_close(w);
    setcache_close(b);
}
