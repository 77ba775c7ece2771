/* Every allocation failure survived: the test build fails the k-th
 * allocation the library makes, for k = 1, 2, ... until a round makes fewer
 * than k; each public call returns OK or SETCACHE_ERR_NOMEM, nothing
 * crashes or leaks (ASan), the background threads keep running, and once
 * the failures stop every cache converges to the table (G6). */
#include "harness.h"
#include "internal.h"

#include <unistd.h>

typedef int (*op_fn)(setcache *c, long k);

static char mtab[128];

static setcache *open_oom(void)
{
    const char *s = t_schema();
    t_sql("CREATE SCHEMA IF NOT EXISTS \"%s\"", s);
    t_sql("CREATE TABLE IF NOT EXISTS \"%s\".mapped (id bigint NOT NULL, k text NOT NULL, v text, "
          "UNIQUE (id, k))",
          s);
    snprintf(mtab, sizeof mtab, "%s.mapped", s);
    static setcache_table_map m;
    m = (setcache_table_map){.entity_type = "m",
                             .table = mtab,
                             .entity_column = "id",
                             .id_kind = SETCACHE_ID_INTEGER,
                             .key_column = "k",
                             .value_column = "v"};
    setcache_options o;
    t_options(&o);
    o.tables = &m;
    o.ntables = 1;
    o.reconnect_initial_ms = 20;
    o.reconnect_max_ms = 100;
    return t_open_with(&o);
}

/* Sweep one call; returns the rounds it took. */
static long sweep(setcache *c, const char *name, op_fn op)
{
    for (long k = 1; k <= 3000; k++) {
        setcache__t_fail_alloc(k);
        int rc = op(c, k);
        bool failed = setcache__t_alloc_failed();
        setcache__t_fail_alloc(0);
        if (rc != SETCACHE_OK && rc != SETCACHE_ERR_NOMEM && rc != SETCACHE_NOT_FOUND) {
            t_fail(__FILE__, __LINE__, "%s, allocation %ld failing: rc %d (%s): %s", name, k, rc,
                   setcache_strerror(rc), setcache_errmsg());
        }
        if (!failed) {
            if (rc != SETCACHE_OK && rc != SETCACHE_NOT_FOUND) {
                t_fail(__FILE__, __LINE__, "%s with no failure: rc %d", name, rc);
            }
            return k;
        }
    }
    t_fail(__FILE__, __LINE__, "%s: still allocating after 3000 rounds", name);
}

static char idbuf[32];
static const char *id_of(long k)
{
    snprintf(idbuf, sizeof idbuf, "%ld", k);
    return idbuf;
}

static int op_load(setcache *c, long k)
{
    char buf[32];
    int rc = setcache_get_string(c, "acct", id_of(k + 100), "key_1", buf, sizeof buf, NULL);
    return rc == SETCACHE_OK && strcmp(buf, "value_1") != 0 ? SETCACHE_ERR_DB : rc;
}

static int op_write(setcache *c, long k)
{
    char v[32];
    snprintf(v, sizeof v, "v%ld", k);
    return setcache_set_string(c, "w", "1", "k", v);
}

static int op_set_many(setcache *c, long k)
{
    char v[32];
    snprintf(v, sizeof v, "m%ld", k);
    setcache_kv kv[3] = {{"a", v}, {"b", v}, {"gone", NULL}};
    return setcache_set_many(c, "w", "2", kv, 3);
}

static int op_mapped(setcache *c, long k)
{
    char v[32];
    snprintf(v, sizeof v, "x%ld", k);
    setcache_kv kv[2] = {{"a", v}, {"b", NULL}};
    char buf[32];
    int rc = setcache_get_string(c, "m", id_of(k + 1000), "a", buf, sizeof buf, NULL);
    if (rc == SETCACHE_OK || rc == SETCACHE_NOT_FOUND) {
        rc = setcache_set_many(c, "m", id_of(k + 1000), kv, 2);
    }
    if (rc == SETCACHE_OK) {
        rc = setcache_set_string(c, "m", id_of(k + 1000), "c", v);
    }
    return rc;
}

static void nothing(void *arg, const setcache_change *ch)
{
    (void)arg;
    (void)ch;
}

static int op_subscribe(setcache *c, long k)
{
    uint64_t id;
    int rc = setcache_subscribe(c, "acct", id_of(k), NULL, nothing, NULL, &id);
    if (rc == SETCACHE_OK) {
        CHECK_OK(setcache_unsubscribe(c, id));
    }
    return rc;
}

static int count_kv(void *arg, const char *key, const char *value, bool is_default)
{
    (void)key;
    (void)value;
    (void)is_default;
    ++*(int *)arg;
    return 0;
}

static int op_foreach(setcache *c, long k)
{
    int n = 0;
    int rc = setcache_foreach(c, "acct", id_of(k + 1000), count_kv, &n);
    return rc == SETCACHE_OK && n != 6 ? SETCACHE_ERR_DB : rc; /* 5 stored, 1 default */
}

static int op_define(setcache *c, long k)
{
    char key[32];
    snprintf(key, sizeof key, "d%ld", k);
    return setcache_define(c, "acct", key, SETCACHE_INT, "5");
}

static int op_define_rules(setcache *c, long k)
{
    static const char *const modes[] = {"live", "paper"};
    char key[32];
    snprintf(key, sizeof key, "r%ld", k);
    setcache_definition d = {.entity_type = "acct",
                             .key = key,
                             .type = SETCACHE_STRING,
                             .default_value = "paper",
                             .description = "a mode",
                             .choices = modes,
                             .nchoices = 2,
                             .max_length = 8};
    return setcache_define_rules(c, &d);
}

static int op_publish(setcache *c, long k)
{
    (void)k;
    return setcache_publish_definitions(c, NULL);
}

static int op_dup(setcache *c, long k)
{
    (void)k;
    int rc;
    char *v = setcache_dup_string(c, "acct", "1", "key_2", &rc);
    free(v);
    return rc;
}

/* A ref to an entity not cached yet, read by every path; a write while a
 * snapshot shares the entity's table (the copy of its slots). */
static int op_ref(setcache *c, long k)
{
    setcache_ref *r;
    int rc = setcache_ref_open(c, "acct", id_of(k + 3000), "key_2", &r);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    char buf[64];
    int64_t v;
    rc = setcache_ref_get_string(r, buf, sizeof buf, NULL);
    if (rc == SETCACHE_OK && strcmp(buf, "value_2") != 0) {
        rc = SETCACHE_ERR_DB;
    }
    int rc2 = setcache_ref_get_int(r, &v); /* not an integer: the locked path */
    if (rc == SETCACHE_OK && rc2 != SETCACHE_ERR_TYPE && rc2 != SETCACHE_ERR_NOMEM) {
        rc = SETCACHE_ERR_DB;
    }
    setcache_ref_close(r);
    return rc;
}

static int op_snapshot(setcache *c, long k)
{
    setcache_snapshot *s;
    int rc = setcache_snapshot_open(c, "acct", id_of(k + 3000), &s);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    rc = setcache_set_string(c, "acct", id_of(k + 3000), "key_1", "new");
    char buf[64];
    int rc2 = setcache_snapshot_get_string(s, "key_1", buf, sizeof buf, NULL);
    if (rc2 != SETCACHE_OK || strcmp(buf, "value_1") != 0) {
        rc = SETCACHE_ERR_DB; /* the snapshot must not change */
    }
    setcache_snapshot_close(s);
    return rc;
}

static int op_preload(setcache *c, long k)
{
    (void)k;
    return setcache_preload(c, "pre");
}

static long changes;

/* Background: a plain-SQL change to a subscribed, loaded entity makes the
 * listener, the refresher and the dispatcher allocate. */
static int op_refresh(setcache *c, long k)
{
    (void)c;
    t_sql("UPDATE \"%s\".settings SET value = '%ld' WHERE entity_type = 'acct' AND entity_id = "
          "'1' AND key = 'key_3'",
          t_schema(), k);
    changes = k;
    t_sleep_ms(15);
    return SETCACHE_OK;
}

/* Background: a reconnect makes the refresher reconcile every entity. */
static int op_reconcile(setcache *c, long k)
{
    t_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
          "'setcache:%d:listen'",
          (int)getpid());
    t_sql("UPDATE \"%s\".settings SET value = 'r%ld' WHERE entity_type = 'acct' AND entity_id = "
          "'2' AND key = 'key_4'",
          t_schema(), k);
    double t0 = t_now_ms();
    setcache_stats st;
    do {
        t_sleep_ms(10);
        setcache_get_stats(c, &st);
    } while (st.state != SETCACHE_STATE_VALID && t_now_ms() - t0 < 3000);
    return SETCACHE_OK;
}

TEST_T(every_allocation_failure_is_survived_and_the_cache_converges, 240)
{
    setcache *c = open_oom();
    const char *s = t_schema();
    t_sql(
        "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) SELECT 'acct', e::text, "
        "'key_' || k, 'value_' || k FROM generate_series(1, 4000) e, generate_series(1, 5) k",
        s);
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) SELECT 'pre', e::text, "
          "'k', 'v' FROM generate_series(1, 20) e",
          s);
    t_sql("INSERT INTO \"%s\".mapped (id, k, v) SELECT e, 'a', 'm' FROM generate_series(1000, "
          "1400) e",
          s);
    CHECK_OK(setcache_define(c, "acct", "dflt", SETCACHE_STRING, "x"));
    uint64_t sub;
    CHECK_OK(setcache_subscribe(c, "acct", NULL, NULL, nothing, NULL, &sub));
    char buf[32];
    CHECK_OK(setcache_get_string(c, "acct", "1", "key_1", buf, sizeof buf, NULL));
    CHECK_OK(setcache_get_string(c, "acct", "2", "key_1", buf, sizeof buf, NULL));
    CHECK_RC(setcache_get_string(c, "w", "1", "k", buf, sizeof buf, NULL), SETCACHE_NOT_FOUND);
    struct {
        const char *name;
        op_fn fn;
    } ops[] = {{"read (load)", op_load},    {"write", op_write},
               {"set_many", op_set_many},   {"mapped table", op_mapped},
               {"subscribe", op_subscribe}, {"foreach", op_foreach},
               {"define", op_define},       {"define_rules", op_define_rules},
               {"publish", op_publish},     {"dup_string", op_dup},
               {"preload", op_preload},     {"ref", op_ref},
               {"snapshot", op_snapshot},   {"refresh and dispatch", op_refresh},
               {"reconcile", op_reconcile}};
    long rounds = 0;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        long r = sweep(c, ops[i].name, ops[i].fn);
        fprintf(stderr, "    %-22s %ld rounds\n", ops[i].name, r);
        rounds += r;
    }
    fprintf(stderr, "    %ld rounds; %zu allocation sites failed at least once\n", rounds,
            setcache__t_alloc_sites());
    /* the failures have stopped: the threads still run and every cache
     * converges to the table */
    t_sql("UPDATE \"%s\".settings SET value = 'final' WHERE entity_type = 'acct' AND entity_id = "
          "'1' AND key = 'key_5'",
          s);
    CHECK(t_wait_value(c, "acct", "1", "key_5", "final", 5000) >= 0);
    /* a failure the listener met (any thread's allocation may fail) may
     * still be reconnecting it: VALID again within the backoff */
    double t0 = t_now_ms();
    while (t_stats(c).state != SETCACHE_STATE_VALID && t_now_ms() - t0 < 10000 * t_scale()) {
        t_sleep_ms(10);
    }
    CHECK_INT(t_stats(c).state, SETCACHE_STATE_VALID);
    const char *check[][3] = {{"acct", "1", "key_3"}, {"acct", "2", "key_4"}, {"w", "1", "k"},
                              {"w", "2", "a"},        {"w", "2", "b"},        {"w", "2", "gone"}};
    for (size_t i = 0; i < sizeof check / sizeof check[0]; i++) {
        const char *want =
            t_sql_value("SELECT coalesce((SELECT value FROM \"%s\".settings WHERE entity_type = "
                        "'%s' AND entity_id = '%s' AND key = '%s'), '(none)')",
                        s, check[i][0], check[i][1], check[i][2]);
        char w[64];
        snprintf(w, sizeof w, "%s", want);
        double d = t_wait_value(c, check[i][0], check[i][1], check[i][2],
                                strcmp(w, "(none)") == 0 ? NULL : w, 3000);
        if (d < 0) {
            t_fail(__FILE__, __LINE__, "%s/%s/%s did not converge to %s", check[i][0], check[i][1],
                   check[i][2], w);
        }
    }
    for (long k = 1000; k < 1060; k++) {
        char want[64];
        snprintf(want, sizeof want, "%s",
                 t_sql_value("SELECT coalesce((SELECT v FROM \"%s\".mapped WHERE id = %ld AND k = "
                             "'a'), '(none)')",
                             s, k));
        CHECK(t_wait_value(c, "m", id_of(k), "a", strcmp(want, "(none)") == 0 ? NULL : want,
                           3000) >= 0);
    }
    CHECK_OK(setcache_unsubscribe(c, sub));
    setcache_close(c);
}

/* Writes through write_conninfo (here the same server by another conninfo
 * text, so writes take their own pool and are fenced until a load shows
 * them): a write, then a read of another entity that evicts one, so that
 * fenced entities are loaded again (the history is asked first). */
static int op_fenced(setcache *c, long k)
{
    char v[32];
    snprintf(v, sizeof v, "f%ld", k);
    int rc = setcache_set_string(c, "f", id_of(k % 7), "k", v);
    if (rc == SETCACHE_OK && k % 3 == 0) {
        rc = setcache_delete(c, "f", id_of(k % 7), "k");
    }
    char buf[32];
    int r2 = setcache_get_string(c, "f", id_of((k + 3) % 7), "k", buf, sizeof buf, NULL);
    return rc != SETCACHE_OK ? rc : r2;
}

TEST_T(every_allocation_failure_is_survived_with_writes_elsewhere, 240)
{
    setcache_options o;
    t_options(&o);
    char wci[1024];
    snprintf(wci, sizeof wci, "%s connect_timeout=10", t_conninfo());
    o.write_conninfo = wci;
    o.max_entities = 2;
    o.reconnect_initial_ms = 20;
    o.reconnect_max_ms = 100;
    setcache *c = t_open_with(&o);
    long r = sweep(c, "fenced write and load", op_fenced);
    fprintf(stderr, "    fenced write and load %ld rounds\n", r);
    for (int id = 0; id < 7; id++) {
        char want[64];
        snprintf(want, sizeof want, "%s",
                 t_sql_value("SELECT coalesce((SELECT value FROM \"%s\".settings WHERE "
                             "entity_type = 'f' AND entity_id = '%d' AND key = 'k'), '(none)')",
                             t_schema(), id));
        char sid[8];
        snprintf(sid, sizeof sid, "%d", id);
        if (t_wait_value(c, "f", sid, "k", strcmp(want, "(none)") == 0 ? NULL : want, 3000) < 0) {
            t_fail(__FILE__, __LINE__, "f/%d/k did not converge to %s", id, want);
        }
    }
    setcache_close(c);
}
