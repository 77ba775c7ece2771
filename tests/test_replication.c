/* Past one primary: processes read and listen on a local subscriber that
 * PostgreSQL's own logical replication keeps in step with the primary. A
 * primary (wal_level = logical) and two subscriber clusters are started by
 * the test, the DDL of both sides is applied from `setcache schema
 * --publisher` / `--subscriber` (twice: idempotent), and read-only
 * processes attached to each subscriber must see every plain-SQL change on
 * the primary, with the primary's versions. */
#include "harness.h"
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

static t_cluster primary, sub[2];
static char prefs_map[160];

/* Apply the tool's DDL of one side (twice: it must be idempotent). */
static void apply_side(const t_cluster *n, const char *side)
{
    for (int round = 0; round < 2; round++) {
        int rc = t_sh("%s/setcache --schema %s --channel %s --map '%s' schema %s | "
                      "psql -X -q -v ON_ERROR_STOP=1 '%s' >/dev/null 2>%s/apply.log",
                      t_build_dir(), t_schema(), t_schema(), prefs_map, side, t_cluster_conninfo(n),
                      n->dir);
        if (rc != 0) {
            t_sh("cat %s/apply.log >&2", n->dir);
            t_fail(__FILE__, __LINE__, "applying `schema %s` (round %d) failed", side, round + 1);
        }
    }
}

/* The application's own table, on every cluster (a subscriber's tables
 * must exist before it subscribes). */
static void app_table(const t_cluster *n)
{
    t_cluster_sql(n, "CREATE TABLE public.prefs (user_name text NOT NULL, name text NOT NULL, "
                     "val jsonb, PRIMARY KEY (user_name, name))");
}

static void setup(void)
{
    t_on_fail(t_clusters_end);
    /* where a wal_level = logical server can't be started, the tests skip */
    t_cluster_create_or_skip(
        &primary, "primary",
        "-c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10", true);
    /* a re-enabled subscription's worker starts at most this long after its
     * last start (default 5 s; docs/DEPLOYMENT.md) */
    const char *opts = "-c max_logical_replication_workers=4 -c wal_retrieve_retry_interval=500ms";
    t_cluster_create(&sub[0], "sub1", opts);
    t_cluster_create(&sub[1], "sub2", opts);
    snprintf(prefs_map, sizeof prefs_map, "user=public.prefs,user_name,text,name,val");
    app_table(&primary);
    apply_side(&primary, "--publisher");
    char side[512];
    snprintf(side, sizeof side, "--subscriber \"%s\"", t_cluster_conninfo(&primary));
    for (int i = 0; i < 2; i++) {
        app_table(&sub[i]);
        apply_side(&sub[i], side);
    }
}

static setcache *open_with(const t_cluster *n, const t_cluster *writes, size_t max_entities)
{
    static setcache_table_map m;
    m = (setcache_table_map){.entity_type = "user",
                             .table = "public.prefs",
                             .entity_column = "user_name",
                             .id_kind = SETCACHE_ID_TEXT,
                             .key_column = "name",
                             .value_column = "val"};
    setcache_options o;
    t_options(&o);
    char *ci = strdup(t_cluster_conninfo(n)); /* the handle copies it */
    o.conninfo = ci;
    o.listen_conninfo = ci;
    o.create_schema = false;
    o.tables = &m;
    o.ntables = 1;
    o.pool_size = 2;
    o.max_entities = max_entities;
    char *wci = writes ? strdup(t_cluster_conninfo(writes)) : NULL;
    o.write_conninfo = wci;
    setcache *c = t_open_with(&o);
    free(ci);
    free(wci);
    return c;
}

static setcache *open_on(const t_cluster *n)
{
    return open_with(n, NULL, 0);
}

/* Every row's (identity, version) on a cluster, in one string. */
static const char *versions(const t_cluster *n)
{
    return t_cluster_value(
        n,
        "SELECT coalesce(string_agg(concat_ws(':', entity_type, entity_id, key, version), ' ' "
        "ORDER BY entity_type, entity_id, key), '') FROM \"%s\".settings",
        t_schema());
}

static bool same_rows_everywhere(int timeout_ms)
{
    double t0 = t_now_ms();
    while (t_now_ms() - t0 < timeout_ms) {
        const char *p = versions(&primary);
        if (strcmp(p, versions(&sub[0])) == 0 && strcmp(p, versions(&sub[1])) == 0) {
            return true;
        }
        t_sleep_ms(20);
    }
    return false;
}

/* Wait until every handle reads want (NULL: not found); the largest wait. */
static double wait_all(setcache **c, const char *type, const char *id, const char *key,
                       const char *want)
{
    double worst = 0;
    for (int i = 0; i < 2; i++) {
        double w = t_wait_value(c[i], type, id, key, want, 5000);
        if (w < 0) {
            t_fail(__FILE__, __LINE__, "process on subscriber %d never read %s %s %s = %s", i + 1,
                   type, id, key, want ? want : "(none)");
        }
        worst = w > worst ? w : worst;
    }
    return worst;
}

TEST_T(subscribers_serve_every_plain_sql_change_with_the_primary_versions, 180)
{
    setup();
    const char *s = t_schema();
    /* rows from before the subscription existed arrive by its initial copy */
    t_cluster_sql(&primary,
                  "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                  "('account', '1', 'a', 'x1'), ('account', '1', 'c', 'gone'), ('account', '2', "
                  "'a', 'y1')",
                  s);
    setcache *c[2] = {open_on(&sub[0]), open_on(&sub[1])};
    fprintf(stderr, "    initial copy read on both subscribers after %.0f ms\n",
            wait_all(c, "account", "1", "a", "x1"));
    CHECK(same_rows_everywhere(5000));
    /* plain SQL on the primary: update, insert, delete */
    double t0 = t_now_ms();
    t_cluster_sql(&primary,
                  "UPDATE \"%s\".settings SET value = 'x2' WHERE key = 'a' AND "
                  "entity_id = '1'",
                  s);
    double sql_ms = t_now_ms() - t0;
    double w = wait_all(c, "account", "1", "a", "x2");
    fprintf(stderr,
            "    UPDATE on the primary read on both subscribers %.1f ms after it "
            "returned\n",
            w);
    (void)sql_ms;
    t_cluster_sql(&primary,
                  "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                  "('account', '1', 'b', 'new')",
                  s);
    wait_all(c, "account", "1", "b", "new");
    t_cluster_sql(&primary, "DELETE FROM \"%s\".settings WHERE key = 'c'", s);
    wait_all(c, "account", "1", "c", NULL);
    /* versions come from the primary unchanged */
    CHECK(same_rows_everywhere(5000));
    fprintf(stderr, "    versions equal on the primary and both subscribers: %s\n",
            versions(&sub[0]));
    /* the existing-tables feature, replicated the same way */
    t_cluster_sql(&primary, "INSERT INTO public.prefs VALUES ('ann', 'theme', '\"dark\"')");
    wait_all(c, "user", "ann", "theme", "dark");
    t_cluster_sql(&primary, "UPDATE public.prefs SET val = '\"light\"' WHERE name = 'theme'");
    wait_all(c, "user", "ann", "theme", "light");
    CHECK_STR(t_cluster_value(&sub[1], "SELECT setcache_version FROM public.prefs"),
              t_cluster_value(&primary, "SELECT setcache_version FROM public.prefs"));
    /* shared definitions replicate and reach the processes live */
    t_cluster_sql(&primary,
                  "INSERT INTO \"%s\".definitions (entity_type, key, type, default_value, "
                  "min_value, max_value) VALUES ('account', 'limit', 'int', '7', 0, 10)",
                  s);
    wait_all(c, "account", "1", "limit", "7");
    /* the primary checks, and its history arrives replicated */
    CHECK(t_cluster_try(&primary,
                        "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) "
                        "VALUES ('account', '1', 'limit', '11')",
                        s) != NULL);
    t0 = t_now_ms();
    while (strcmp(t_cluster_value(&sub[0], "SELECT count(*) FROM \"%s\".history", s),
                  t_cluster_value(&primary, "SELECT count(*) FROM \"%s\".history", s)) != 0 &&
           t_now_ms() - t0 < 5000) {
        t_sleep_ms(20);
    }
    CHECK_STR(t_cluster_value(&sub[0], "SELECT count(*) FROM \"%s\".history", s),
              t_cluster_value(&primary, "SELECT count(*) FROM \"%s\".history", s));
    /* a subscriber refuses local writes: they would fork it from the primary */
    const char *err = t_cluster_try(&sub[0],
                                    "INSERT INTO \"%s\".settings (entity_type, entity_id, key, "
                                    "value) VALUES ('account', '9', 'k', 'v')",
                                    s);
    CHECK(err != NULL && strstr(err, "subscriber") != NULL);
    fprintf(stderr, "    local write on a subscriber: %s", err);
    CHECK(t_cluster_try(&sub[0], "TRUNCATE public.prefs") != NULL);
    /* TRUNCATE is replicated and announced */
    t_cluster_sql(&primary, "TRUNCATE \"%s\".settings", s);
    wait_all(c, "account", "1", "a", NULL);
    wait_all(c, "account", "2", "a", NULL);
    CHECK(same_rows_everywhere(5000));
    setcache_close(c[0]);
    setcache_close(c[1]);
    t_clusters_end();
}

/* A subscription disabled: the subscriber's processes keep what they read
 * (never an older value) while the primary moves on; re-enabled, every
 * cache converges within 2 s. A subscriber restarted: its processes
 * reconnect and converge. */
TEST_T(subscribers_disabled_or_restarted_converge_once_back, 180)
{
    setup();
    const char *s = t_schema();
    t_cluster_sql(&primary,
                  "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                  "('account', '1', 'a', 'v1')",
                  s);
    setcache *c[2] = {open_on(&sub[0]), open_on(&sub[1])};
    wait_all(c, "account", "1", "a", "v1");
    t_cluster_sql(&sub[0], "ALTER SUBSCRIPTION \"%s\" DISABLE", s);
    t_cluster_sql(&primary, "UPDATE \"%s\".settings SET value = 'v2' WHERE key = 'a'", s);
    t_cluster_sql(&primary,
                  "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                  "('account', '1', 'b', 'b1')",
                  s);
    CHECK(t_wait_value(c[1], "account", "1", "a", "v2", 5000) >= 0);
    /* the disabled side: still the value it had, for a while */
    char buf[64];
    double t0 = t_now_ms();
    while (t_now_ms() - t0 < 500) {
        CHECK_OK(setcache_get_string(c[0], "account", "1", "a", buf, sizeof buf, NULL));
        CHECK_STR(buf, "v1");
        t_sleep_ms(10);
    }
    t_cluster_sql(&sub[0], "ALTER SUBSCRIPTION \"%s\" ENABLE", s);
    t0 = t_now_ms();
    CHECK(t_wait_value(c[0], "account", "1", "a", "v2", 2000) >= 0);
    CHECK(t_wait_value(c[0], "account", "1", "b", "b1", 2000) >= 0);
    fprintf(stderr, "    re-enabled subscription: converged %.0f ms later\n", t_now_ms() - t0);
    /* a subscriber restarted while the primary changes */
    t_cluster_stop(&sub[1], "fast");
    t_cluster_sql(&primary, "UPDATE \"%s\".settings SET value = 'v3' WHERE key = 'a'", s);
    t0 = t_now_ms();
    t_cluster_start(&sub[1]);
    CHECK(t_wait_value(c[1], "account", "1", "a", "v3", 15000) >= 0);
    fprintf(stderr,
            "    restarted subscriber: its process read the change %.0f ms after the "
            "start command (which waits until the server accepts connections)\n",
            t_now_ms() - t0);
    CHECK(same_rows_everywhere(5000));
    setcache_close(c[0]);
    setcache_close(c[1]);
    t_clusters_end();
}

static bool wait_valid(setcache *c, int timeout_ms)
{
    double t0 = t_now_ms();
    while (t_now_ms() - t0 < timeout_ms) {
        if (t_stats(c).state == SETCACHE_STATE_VALID) {
            return true;
        }
        t_sleep_ms(10);
    }
    return false;
}

/* What a read of account 1 key gives ("-" for not found). */
static const char *read_a1(setcache *c, const char *key)
{
    static char buf[4][64];
    static int turn;
    char *b = buf[turn++ % 4];
    int rc = setcache_get_string(c, "account", "1", key, b, 64, NULL);
    if (rc == SETCACHE_NOT_FOUND) {
        return "-";
    }
    CHECK_OK(rc);
    return b;
}

static void check_own_writes(setcache *c, const char *when)
{
    if (strcmp(read_a1(c, "a"), "v2") != 0 || strcmp(read_a1(c, "b"), "b1") != 0 ||
        strcmp(read_a1(c, "d"), "-") != 0) {
        t_fail(__FILE__, __LINE__, "%s: a=%s b=%s d=%s, wanted v2 b1 -", when, read_a1(c, "a"),
               read_a1(c, "b"), read_a1(c, "d"));
    }
}

/* A process loads and listens on a subscriber and writes to the primary
 * (write_conninfo). With the subscriber stopped from following (its
 * subscription disabled), the process's writes succeed and are read back at
 * once, and no re-read from the lagging subscriber takes them back: not a
 * reload after eviction, not the reconcile after the subscriber restarts.
 * Re-enabled, every cache converges within 2 s, including a delete by
 * another program of a key this process had just written. */
TEST_T(a_process_on_a_lagging_subscriber_reads_its_own_writes, 180)
{
    setup();
    const char *s = t_schema();
    t_cluster_sql(&primary,
                  "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                  "('account', '1', 'a', 'v1'), ('account', '1', 'd', 'd0'), ('account', '2', "
                  "'x', 'y')",
                  s);
    setcache *c = open_with(&sub[0], &primary, 1); /* one entity: reads evict */
    setcache *other = open_on(&sub[1]);
    CHECK(t_wait_value(c, "account", "1", "a", "v1", 5000) >= 0);
    t_cluster_sql(&sub[0], "ALTER SUBSCRIPTION \"%s\" DISABLE", s);
    CHECK_OK(setcache_set_string(c, "account", "1", "a", "v2"));
    CHECK_OK(setcache_set_string(c, "account", "1", "b", "b1"));
    CHECK_OK(setcache_delete(c, "account", "1", "d"));
    check_own_writes(c, "at once");
    CHECK_STR(t_cluster_value(&sub[0], "SELECT value FROM \"%s\".settings WHERE key = 'a'", s),
              "v1"); /* the subscriber does lag */
    /* evicted, then loaded again from the lagging subscriber */
    uint64_t loads0 = t_stats(c).loads;
    char buf[64];
    CHECK_OK(setcache_get_string(c, "account", "2", "x", buf, sizeof buf, NULL));
    check_own_writes(c, "reloaded after eviction");
    CHECK(t_stats(c).loads >= loads0 + 2);
    /* the other subscriber follows: the write reaches its processes */
    CHECK(t_wait_value(other, "account", "1", "a", "v2", 5000) >= 0);
    CHECK(t_wait_value(other, "account", "1", "d", NULL, 5000) >= 0);
    /* the lagging subscriber restarts: the reconcile re-reads from it */
    uint64_t refreshes0 = t_stats(c).refreshes;
    t_cluster_stop(&sub[0], "fast");
    t_cluster_start(&sub[0]);
    CHECK(wait_valid(c, 15000));
    double t0 = t_now_ms();
    while (t_stats(c).refreshes == refreshes0 && t_now_ms() - t0 < 5000) {
        t_sleep_ms(10);
    }
    CHECK(t_stats(c).refreshes > refreshes0);
    check_own_writes(c, "after the subscriber's restart and the reconcile");
    for (t0 = t_now_ms(); t_now_ms() - t0 < 300;) {
        check_own_writes(c, "while the subscriber lags");
        t_sleep_ms(5);
    }
    /* caught up: the same as the primary within 2 s, also for a key this
     * process wrote and another program then deleted */
    CHECK_OK(setcache_set_string(c, "account", "1", "e", "e1"));
    t_cluster_sql(&primary, "DELETE FROM \"%s\".settings WHERE key = 'e'", s);
    t_cluster_sql(&sub[0], "ALTER SUBSCRIPTION \"%s\" ENABLE", s);
    t0 = t_now_ms();
    CHECK(t_wait_value(c, "account", "1", "e", NULL, 2000) >= 0);
    t_cluster_sql(&primary, "UPDATE \"%s\".settings SET value = 'v3' WHERE key = 'a'", s);
    CHECK(t_wait_value(c, "account", "1", "a", "v3", 2000) >= 0);
    CHECK(t_wait_value(other, "account", "1", "a", "v3", 2000) >= 0);
    fprintf(stderr, "    re-enabled: converged %.0f ms later\n", t_now_ms() - t0);
    CHECK_STR(read_a1(c, "b"), "b1");
    CHECK_STR(read_a1(c, "d"), "-");
    CHECK(same_rows_everywhere(5000));
    setcache_close(c);
    setcache_close(other);
    t_clusters_end();
}

typedef struct reader4 {
    setcache *c;
    char got[64];
} reader4;

static void *read_a(void *arg)
{
    reader4 *r = arg;
    if (setcache_get_string(r->c, "account", "1", "a", r->got, sizeof r->got, NULL) !=
        SETCACHE_OK) {
        snprintf(r->got, sizeof r->got, "(error)");
    }
    return NULL;
}

static atomic_int restart_in_load;

/* In the loading thread, between the load's query and its install. */
static void restart_hook(setcache *c, const char *type, const char *id)
{
    (void)c;
    if (strcmp(type, "account") == 0 && strcmp(id, "1") == 0 &&
        atomic_exchange(&restart_in_load, 0)) {
        t_cluster_stop(&sub[0], "fast");
        t_cluster_start(&sub[0]);
    }
}

static atomic_int loads_to_lose, enable_in_last;

/* In the loading thread: so many changes of the entity arrive during the
 * load (more than a load can note) that it can't be installed; after
 * SC_LOAD_ROUNDS such loads the read answers from the rows of the last. */
static void lose_hook(setcache *c, const char *type, const char *id)
{
    if (strcmp(type, "account") != 0 || strcmp(id, "1") != 0 || atomic_load(&loads_to_lose) <= 0) {
        return;
    }
    if (atomic_fetch_sub(&loads_to_lose, 1) == 1 && atomic_exchange(&enable_in_last, 0)) {
        /* the last load's rows predate the write; the subscriber applies
         * it now and announces it while that load is in flight */
        uint64_t a0 = t_stats(c).hints;
        t_cluster_sql(&sub[0], "ALTER SUBSCRIPTION \"%s\" ENABLE", t_schema());
        double t0 = t_now_ms();
        while (strcmp(t_cluster_value(&sub[0],
                                      "SELECT value FROM \"%s\".settings WHERE entity_type = "
                                      "'account' AND entity_id = '1' AND key = 'a'",
                                      t_schema()),
                      "v4") != 0 &&
               t_now_ms() - t0 < 5000) {
            t_sleep_ms(5);
        }
        while (t_stats(c).hints == a0 && t_now_ms() - t0 < 5000) {
            t_sleep_ms(2);
        }
    }
    uint64_t h0 = t_stats(c).hints;
    int n = SC_MAX_PENDING + 10;
    t_cluster_sql(&sub[0],
                  "SELECT pg_notify('%s', concat_ws(E'\\x1f', '1', 'U', g, 'account', '1', "
                  "'burst_' || g)) FROM generate_series(1, %d) g",
                  t_schema(), n);
    double t0 = t_now_ms();
    while (t_stats(c).hints < h0 + (uint64_t)n && t_now_ms() - t0 < 5000) {
        t_sleep_ms(2); /* until the refresher has seen them */
    }
}

/* The fence across the rest: every thread reads a write at once; a load
 * from the lagging subscriber whose server restarts between its query and
 * its install, a primary restart, and a mapped table's write. */
TEST_T(own_writes_hold_across_a_restart_mid_load_and_a_primary_restart, 180)
{
    setup();
    const char *s = t_schema();
    t_cluster_sql(&primary,
                  "INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                  "('account', '1', 'a', 'v1'), ('account', '2', 'x', 'y')",
                  s);
    setcache *c = open_with(&sub[0], &primary, 1);
    CHECK(t_wait_value(c, "account", "1", "a", "v1", 5000) >= 0);
    t_cluster_sql(&sub[0], "ALTER SUBSCRIPTION \"%s\" DISABLE", s);
    CHECK_OK(setcache_set_string(c, "account", "1", "a", "v2"));
    pthread_t th[4];
    reader4 r[4];
    for (int i = 0; i < 4; i++) {
        r[i].c = c;
        CHECK(pthread_create(&th[i], NULL, read_a, &r[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_STR(r[i].got, "v2");
    }
    /* evicted; loaded again while the subscriber restarts mid-load */
    char buf[64];
    CHECK_OK(setcache_get_string(c, "account", "2", "x", buf, sizeof buf, NULL));
    atomic_store(&restart_in_load, 1);
    setcache__hooks.after_load_query = restart_hook;
    const char *got = read_a1(c, "a");
    setcache__hooks.after_load_query = NULL;
    CHECK(atomic_load(&restart_in_load) == 0); /* the restart did happen */
    CHECK_STR(got, "v2");
    CHECK(wait_valid(c, 15000));
    CHECK_STR(read_a1(c, "a"), "v2");
    /* evicted; every load of the next read loses to a burst of changes and
     * the read answers from the lagging rows of its last load: the fence
     * holds there too */
    CHECK_OK(setcache_get_string(c, "account", "2", "x", buf, sizeof buf, NULL));
    atomic_store(&loads_to_lose, SC_LOAD_ROUNDS);
    setcache__hooks.after_load_query = lose_hook;
    got = read_a1(c, "a");
    setcache__hooks.after_load_query = NULL;
    CHECK_INT(atomic_load(&loads_to_lose), 0); /* no load was installed */
    CHECK_STR(got, "v2");
    CHECK_STR(t_cluster_value(&sub[0], "SELECT value FROM \"%s\".settings WHERE key = 'a'", s),
              "v1");
    CHECK_STR(read_a1(c, "a"), "v2");
    /* the primary restarts; the next write goes through a new connection */
    t_cluster_stop(&primary, "fast");
    t_cluster_start(&primary);
    int rc = setcache_set_string(c, "account", "1", "a", "v3");
    if (rc != SETCACHE_OK) { /* the pooled connection died with the server */
        CHECK_RC(rc, SETCACHE_ERR_DB);
        CHECK_OK(setcache_set_string(c, "account", "1", "a", "v3"));
    }
    CHECK_STR(read_a1(c, "a"), "v3");
    CHECK_OK(setcache_get_string(c, "account", "2", "x", buf, sizeof buf, NULL));
    CHECK_STR(read_a1(c, "a"), "v3");
    /* a mapped table's write, the same way */
    CHECK_OK(setcache_set_string(c, "user", "ann", "theme", "mine"));
    CHECK_OK(setcache_get_string(c, "account", "2", "x", buf, sizeof buf, NULL));
    CHECK_OK(setcache_get_string(c, "user", "ann", "theme", buf, sizeof buf, NULL));
    CHECK_STR(buf, "mine");
    CHECK_STR(t_cluster_value(&sub[0], "SELECT count(*) FROM public.prefs"), "0");
    /* caught up: the primary's rows */
    t_cluster_sql(&sub[0], "ALTER SUBSCRIPTION \"%s\" ENABLE", s);
    CHECK(same_rows_everywhere(5000));
    t_cluster_sql(&primary, "UPDATE public.prefs SET val = '\"theirs\"'");
    CHECK(t_wait_value(c, "user", "ann", "theme", "theirs", 2000) >= 0);
    CHECK_STR(read_a1(c, "a"), "v3");
    /* the answer from the rows of a lost load again, while the subscriber
     * applies and announces the write during that load: the announcement
     * must not end the fence before the stale rows have answered */
    t_cluster_sql(&sub[0], "ALTER SUBSCRIPTION \"%s\" DISABLE", s);
    double t0 = t_now_ms();
    while (strcmp(t_cluster_value(&sub[0], "SELECT count(*) FROM pg_stat_subscription WHERE pid "
                                           "IS NOT NULL"),
                  "0") != 0 &&
           t_now_ms() - t0 < 5000) {
        t_sleep_ms(10); /* the apply worker has stopped */
    }
    CHECK_OK(setcache_set_string(c, "account", "1", "a", "v4"));
    CHECK_OK(setcache_get_string(c, "account", "2", "x", buf, sizeof buf, NULL));
    atomic_store(&loads_to_lose, SC_LOAD_ROUNDS);
    atomic_store(&enable_in_last, 1);
    setcache__hooks.after_load_query = lose_hook;
    got = read_a1(c, "a");
    setcache__hooks.after_load_query = NULL;
    CHECK_INT(atomic_load(&enable_in_last), 0);
    CHECK_STR(got, "v4");
    CHECK_STR(read_a1(c, "a"), "v4");
    /* the writes of entities this process never reads are forgotten once
     * the source announces them: nothing piles up */
    for (int i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        CHECK_OK(setcache_set_string(c, "account", id, "k", "v"));
    }
    t0 = t_now_ms();
    while (atomic_load(&c->fence.entities) > 0 && t_now_ms() - t0 < 5000) {
        t_sleep_ms(10);
    }
    CHECK_INT(atomic_load(&c->fence.entities), 0);
    setcache_close(c);
    /* a role that may not read the history: one warning, no more asking,
     * and its writes are still confirmed by the subscriber's announcements */
    t_cluster_sql(&sub[0],
                  "CREATE ROLE nohist LOGIN; GRANT USAGE ON SCHEMA \"%s\" TO nohist; GRANT "
                  "SELECT ON \"%s\".settings, \"%s\".definitions, public.prefs TO nohist",
                  s, s, s);
    t_warnings w = T_WARNINGS_INIT;
    setcache_options o;
    t_options(&o);
    char ci[512], wci[512];
    snprintf(ci, sizeof ci, "%s user=nohist", t_cluster_conninfo(&sub[0]));
    snprintf(wci, sizeof wci, "%s", t_cluster_conninfo(&primary));
    o.conninfo = ci;
    o.listen_conninfo = ci;
    o.write_conninfo = wci;
    o.create_schema = false;
    o.log = t_keep_warnings;
    o.log_arg = &w;
    c = t_open_with(&o);
    t_cluster_sql(&sub[0], "ALTER SUBSCRIPTION \"%s\" DISABLE", s);
    CHECK_OK(setcache_set_string(c, "account", "9", "k", "v"));
    const char *warning = "history is not readable";
    t0 = t_now_ms();
    while (t_warned(&w, warning) == 0 && t_now_ms() - t0 < 5000) {
        t_sleep_ms(10);
    }
    t_sleep_ms(2500); /* two more seconds: no more asking, no more warnings */
    CHECK_INT(t_warned(&w, warning), 1);
    CHECK_INT(atomic_load(&c->fence.entities), 1);
    t_cluster_sql(&sub[0], "ALTER SUBSCRIPTION \"%s\" ENABLE", s);
    t0 = t_now_ms();
    while (atomic_load(&c->fence.entities) > 0 && t_now_ms() - t0 < 5000) {
        t_sleep_ms(10);
    }
    CHECK_INT(atomic_load(&c->fence.entities), 0);
    setcache_close(c);
    t_clusters_end();
}

static void drop_publication(void)
{
    t_sql_try("DROP PUBLICATION IF EXISTS \"%s\"", t_schema());
}

/* `setcache --map MAP schema --publisher | psql` on the suite's server; its
 * exit status, stderr in err. */
static int apply_publisher(const char *map, const char *err)
{
    return t_sh("%s/setcache --schema %s --channel %s --map '%s' schema --publisher | psql -X -q "
                "-v ON_ERROR_STOP=1 '%s' >/dev/null 2>%s",
                t_build_dir(), t_schema(), t_schema(), map, t_conninfo(), err);
}

/* The primary's side refuses to publish a table the primary could then no
 * longer UPDATE or DELETE (no replica identity), names it, and publishes
 * nothing; given one, it publishes every table. (On the suite's server:
 * only the DDL is applied, nothing subscribes.) */
TEST(publisher_refuses_a_table_without_a_replica_identity)
{
    const char *s = t_schema();
    t_on_fail(drop_publication);
    t_sql("CREATE SCHEMA IF NOT EXISTS \"%s\"", s);
    t_sql("CREATE TABLE \"%s\".nopk (id int NOT NULL, k text NOT NULL, v text, UNIQUE (id, k))", s);
    char map[200], err[128];
    snprintf(map, sizeof map, "n=%s.nopk,id,integer,k,v", s);
    snprintf(err, sizeof err, "/tmp/setcache-publisher-%d.err", (int)getpid());
    CHECK(apply_publisher(map, err) != 0);
    CHECK_INT(t_sh("grep -q 'nopk has no primary key or replica identity' %s", err), 0);
    CHECK_STR(t_sql_value("SELECT count(*) FROM pg_publication WHERE pubname = '%s'", s), "0");
    t_sql("ALTER TABLE \"%s\".nopk REPLICA IDENTITY FULL", s);
    CHECK_INT(apply_publisher(map, err), 0);
    CHECK_STR(t_sql_value("SELECT count(*) FROM pg_publication_tables WHERE pubname = '%s'", s),
              "4");
    t_sh("rm -f %s", err);
    drop_publication();
}
