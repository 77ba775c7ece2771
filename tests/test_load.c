/* Loads and reads: one query per entity, shared by concurrent readers,
 * served from memory after; the fill race; eviction; preload; foreach;
 * statistics. */
#include "harness.h"
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

TEST(first_read_loads_entity_in_one_query_then_serves_from_memory)
{
    setcache *c = t_open();
    t_insert_rows("expert", "3", 70);
    long long srv0 = t_server_statements();
    setcache_stats s0 = t_stats(c);
    char buf[64];
    for (int round = 0; round < 100; round++) {
        for (int k = 1; k <= 80; k++) {
            char key[16], want[16];
            snprintf(key, sizeof key, "key_%d", k);
            snprintf(want, sizeof want, "value_%d", k);
            int rc = setcache_get_string(c, "expert", "3", key, buf, sizeof buf, NULL);
            if (k <= 70) {
                CHECK_INT(rc, SETCACHE_OK);
                CHECK_STR(buf, want);
            } else {
                CHECK_INT(rc, SETCACHE_NOT_FOUND);
            }
        }
    }
    setcache_stats s1 = t_stats(c);
    CHECK_INT(s1.loads - s0.loads, 1);
    CHECK_INT(s1.db_queries - s0.db_queries, 1);
    CHECK_INT(s1.misses - s0.misses, 1);
    CHECK_INT(s1.hits - s0.hits, 8000 - 1);
    CHECK_INT(s1.entities, 1);
    CHECK_INT(s1.entries, 70);
    if (srv0 >= 0) {
        CHECK_INT(t_server_statements() - srv0, 1);
    }
    setcache_close(c);
}

/* Readers on different threads take different lock slots, and no two slots
 * share a 128-byte line pair: that needs the handle itself allocated at that
 * alignment (a plain malloc gives 16). */
TEST(reader_lock_slots_are_a_line_pair_apart)
{
    setcache *c = t_open();
    CHECK(((uintptr_t)c & (SC_LINE - 1)) == 0);
    for (int s = 0; s < SC_NSHARDS; s += 21) {
        const sc_brlock *l = &c->cache.shards[s].lock;
        CHECK(((uintptr_t)&l->slot[0] & (SC_LINE - 1)) == 0);
        CHECK((uintptr_t)&l->slot[1] - (uintptr_t)&l->slot[0] == SC_LINE);
    }
    setcache_close(c);
}

/* An entity far larger than its first load, grown by writes, deletes and a
 * plain-SQL rewrite of every row, still answers every key from memory. */
TEST(large_entity_grows_through_writes_and_refreshes)
{
    setcache *c = t_open();
    t_insert_rows("expert", "77", 3);
    CHECK_OK(setcache_load(c, "expert", "77"));
    enum { N = 3000, BATCH = 100 };
    static char keys[N][16], vals[N][16];
    setcache_kv kv[BATCH];
    for (int i = 0; i < N; i += BATCH) {
        for (int j = 0; j < BATCH; j++) {
            snprintf(keys[i + j], sizeof keys[0], "big_%d", i + j);
            snprintf(vals[i + j], sizeof vals[0], "%d", (i + j) * 7);
            kv[j].key = keys[i + j];
            kv[j].value = vals[i + j];
        }
        CHECK_OK(setcache_set_many(c, "expert", "77", kv, BATCH));
    }
    for (int i = 0; i < N; i += 3) {
        CHECK_OK(setcache_delete(c, "expert", "77", keys[i]));
    }
    setcache_stats s0 = t_stats(c);
    CHECK_INT(s0.entries, 3 + N - N / 3);
    int64_t v;
    for (int i = 0; i < N; i++) {
        int rc = setcache_get_int(c, "expert", "77", keys[i], &v);
        if (i % 3 == 0) {
            CHECK_INT(rc, SETCACHE_NOT_FOUND);
        } else {
            CHECK_INT(rc, SETCACHE_OK);
            CHECK_INT(v, (int64_t)i * 7);
        }
    }
    CHECK_INT(t_stats(c).loads, s0.loads);
    t_sql("UPDATE \"%s\".settings SET value = (substr(key, 5)::int * 11)::text "
          "WHERE entity_type = 'expert' AND entity_id = '77' AND key LIKE 'big\\_%%'",
          t_schema());
    double t0 = t_now_ms();
    int wrong = 1;
    while (wrong && t_now_ms() - t0 < 10000 * t_scale()) {
        wrong = 0;
        for (int i = 1; i < N && !wrong; i++) {
            if (i % 3 && (setcache_get_int(c, "expert", "77", keys[i], &v) != SETCACHE_OK ||
                          v != (int64_t)i * 11)) {
                wrong = 1;
            }
        }
        if (wrong) {
            usleep(5000);
        }
    }
    CHECK_INT(wrong, 0);
    char buf[32];
    CHECK_OK(setcache_get_string(c, "expert", "77", "key_2", buf, sizeof buf, NULL));
    CHECK_STR(buf, "value_2");
    CHECK_INT(t_stats(c).entries, 3 + N - N / 3);
    setcache_close(c);
}

struct reader_arg {
    setcache *c;
    long n;
    int errors;
};

static void *hammer(void *p)
{
    struct reader_arg *a = p;
    int64_t v;
    for (long i = 0; i < a->n; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%ld", i % 20);
        if (setcache_get_int(a->c, "account", "1", key, &v) != SETCACHE_OK || v != i % 20) {
            a->errors++;
        }
    }
    return NULL;
}

TEST_T(million_reads_from_8_threads_cause_zero_server_statements, 60)
{
    setcache *c = t_open();
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) SELECT 'account', "
          "'1', 'k' || g, g::text FROM generate_series(0, 19) g",
          t_schema());
    CHECK_OK(setcache_load(c, "account", "1"));
    long long srv0 = t_server_statements();
    long long xact0 = atoll(
        t_sql_value("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"));
    setcache_stats s0 = t_stats(c);
    pthread_t th[8];
    struct reader_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (struct reader_arg){c, 125000, 0};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(args[i].errors, 0);
    }
    setcache_stats s1 = t_stats(c);
    CHECK_INT(s1.db_queries - s0.db_queries, 0);
    CHECK_INT(s1.hits - s0.hits, 1000000);
    if (srv0 >= 0) {
        CHECK_INT(t_server_statements() - srv0, 0);
    }
    CHECK(t_sessions_of(getpid()) <= (int)s1.pool_size + 1);
    (void)xact0;
    setcache_close(c);
}

struct sf_arg {
    setcache *c;
    pthread_barrier_t *b;
    int rc;
    char val[32];
};

static void *first_read(void *p)
{
    struct sf_arg *a = p;
    pthread_barrier_wait(a->b);
    a->rc = setcache_get_string(a->c, "expert", "5", "key_7", a->val, sizeof a->val, NULL);
    return NULL;
}

TEST(single_flight_concurrent_first_reads_share_one_query)
{
    setcache_options o;
    t_options(&o);
    o.pool_size = 8;
    setcache *c = t_open_with(&o);
    t_insert_rows("expert", "5", 60);
    /* Hold the table so that the one load blocks while every thread arrives. */
    t_sql("BEGIN");
    t_sql("LOCK TABLE \"%s\".settings IN ACCESS EXCLUSIVE MODE", t_schema());
    setcache_stats s0 = t_stats(c);
    long long srv0 = t_server_statements();
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, 9);
    pthread_t th[8];
    struct sf_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (struct sf_arg){.c = c, .b = &b};
        pthread_create(&th[i], NULL, first_read, &args[i]);
    }
    pthread_barrier_wait(&b);
    t_sleep_ms(400);
    t_sql("COMMIT");
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(args[i].rc, SETCACHE_OK);
        CHECK_STR(args[i].val, "value_7");
    }
    setcache_stats s1 = t_stats(c);
    CHECK_INT(s1.loads - s0.loads, 1);
    CHECK_INT(s1.db_queries - s0.db_queries, 1);
    CHECK_INT(s1.misses - s0.misses, 8);
    if (srv0 >= 0) {
        CHECK_INT(t_server_statements() - srv0, 1);
    }
    setcache_close(c);
}

/* The fill race: a change commits (and its notification is processed) after
 * the loader's query read the old row but before it installs. */
static int race_fired;

static void race_hook(setcache *c, const char *type, const char *id)
{
    if (race_fired++ || strcmp(id, "race") != 0) {
        return;
    }
    (void)type;
    uint64_t n0 = t_stats(c).hints;
    t_sql("UPDATE \"%s\".settings SET value = 'new' WHERE entity_id = 'race'", t_schema());
    double t0 = t_now_ms();
    while (t_stats(c).hints == n0 && t_now_ms() - t0 < 5000) {
        t_sleep_ms(2); /* until the change has been seen by the cache */
    }
}

TEST(fill_race_never_installs_a_stale_load)
{
    setcache *c = t_open();
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('expert', "
          "'race', 'k', 'old')",
          t_schema());
    double t0 = t_now_ms();
    while (t_stats(c).hints < 1 && t_now_ms() - t0 < 5000) {
        t_sleep_ms(1); /* the insert's own notification is behind us */
    }
    setcache__hooks.after_load_query = race_hook;
    char buf[32];
    CHECK_OK(setcache_get_string(c, "expert", "race", "k", buf, sizeof buf, NULL));
    setcache__hooks.after_load_query = NULL;
    CHECK(race_fired >= 1);
    CHECK_STR(buf, "new");
    for (int i = 0; i < 100; i++) {
        CHECK_OK(setcache_get_string(c, "expert", "race", "k", buf, sizeof buf, NULL));
        CHECK_STR(buf, "new");
    }
    CHECK_INT(t_stats(c).loads, 2);
    setcache_close(c);
}

TEST(max_entities_evicts_whole_entities)
{
    setcache_options o;
    t_options(&o);
    o.max_entities = 5;
    setcache *c = t_open_with(&o);
    for (int e = 0; e < 20; e++) {
        char id[8];
        snprintf(id, sizeof id, "%d", e);
        t_insert_rows("expert", id, 3);
    }
    char buf[32];
    for (int round = 0; round < 2; round++) {
        for (int e = 0; e < 20; e++) {
            char id[8];
            snprintf(id, sizeof id, "%d", e);
            CHECK_OK(setcache_get_string(c, "expert", id, "key_2", buf, sizeof buf, NULL));
            CHECK_STR(buf, "value_2");
            setcache_stats s = t_stats(c);
            CHECK(s.entities <= 5);
            CHECK_INT(s.entries, s.entities * 3);
        }
    }
    setcache_stats s = t_stats(c);
    CHECK(s.evictions >= 30);
    CHECK_INT(s.loads, 40);
    setcache_close(c);
}

TEST(preload_loads_a_type_in_one_streamed_query)
{
    setcache *c = t_open();
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) SELECT 'expert', "
          "e::text, 'key_' || k, e || ':' || k FROM generate_series(1, 300) e, "
          "generate_series(1, 12) k",
          t_schema());
    t_insert_rows("account", "1", 4);
    /* let the listener see those inserts first: entities changed while the
     * preload query runs are left to load lazily */
    double t0 = t_now_ms();
    while (t_stats(c).hints < 3604 && t_now_ms() - t0 < 10000) {
        t_sleep_ms(5);
    }
    setcache_stats s0 = t_stats(c);
    CHECK_OK(setcache_preload(c, "expert"));
    setcache_stats s1 = t_stats(c);
    CHECK_INT(s1.db_queries - s0.db_queries, 1);
    CHECK_INT(s1.entities, 300);
    CHECK_INT(s1.entries, 3600);
    char buf[32], want[32];
    for (int e = 1; e <= 300; e++) {
        char id[8];
        snprintf(id, sizeof id, "%d", e);
        snprintf(want, sizeof want, "%d:7", e);
        CHECK_OK(setcache_get_string(c, "expert", id, "key_7", buf, sizeof buf, NULL));
        CHECK_STR(buf, want);
    }
    CHECK_INT(t_stats(c).db_queries, s1.db_queries);
    CHECK_OK(setcache_preload(c, "nothing_here"));
    setcache_close(c);
}

static int collect(void *arg, const char *key, const char *value, bool is_default)
{
    char *out = arg;
    char line[128];
    snprintf(line, sizeof line, "%s=%s%s;", key, value, is_default ? "(d)" : "");
    strcat(out, line);
    return strcmp(key, "stop_here") == 0 ? 42 : 0;
}

TEST(foreach_merges_defaults_in_key_order_and_stops_early)
{
    setcache *c = t_open();
    CHECK_OK(setcache_define(c, "account", "b_default", SETCACHE_STRING, "dv"));
    CHECK_OK(setcache_define(c, "account", "c_stored", SETCACHE_STRING, "unused"));
    CHECK_OK(setcache_define(c, "expert", "other_type", SETCACHE_STRING, "no"));
    CHECK_OK(setcache_set_string(c, "account", "1", "c_stored", "sv"));
    CHECK_OK(setcache_set_string(c, "account", "1", "a_first", "1"));
    char out[512] = "";
    CHECK_OK(setcache_foreach(c, "account", "1", collect, out));
    CHECK_STR(out, "a_first=1;b_default=dv(d);c_stored=sv;");
    CHECK_OK(setcache_set_string(c, "account", "1", "stop_here", "x"));
    CHECK_OK(setcache_set_string(c, "account", "1", "z_after", "x"));
    out[0] = 0;
    CHECK_INT(setcache_foreach(c, "account", "1", collect, out), 42);
    CHECK_STR(out, "a_first=1;b_default=dv(d);c_stored=sv;stop_here=x;");
    out[0] = 0;
    CHECK_OK(setcache_foreach(c, "account", "empty", collect, out));
    CHECK_STR(out, "b_default=dv(d);c_stored=unused(d);");
    setcache_close(c);
}

TEST(stats_are_honest)
{
    setcache *c = t_open();
    setcache_stats s = t_stats(c);
    CHECK_INT(s.state, SETCACHE_STATE_VALID);
    CHECK_INT(s.pool_size, 4);
    CHECK_INT(s.pool_in_use, 0);
    CHECK_INT(s.hits + s.misses + s.loads + s.writes, 0);
    CHECK_OK(setcache_set_string(c, "account", "1", "api_key", "12345"));
    CHECK_OK(setcache_set_string(c, "account", "1", "api_secret", "abc"));
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "1", "api_key", buf, sizeof buf, NULL));
    CHECK_OK(setcache_get_string(c, "account", "1", "api_key", buf, sizeof buf, NULL));
    s = t_stats(c);
    CHECK_INT(s.writes, 2);
    CHECK_INT(s.loads, 1);
    CHECK_INT(s.misses, 1);
    CHECK_INT(s.hits, 1);
    CHECK_INT(s.entities, 1);
    CHECK_INT(s.entries, 2);
    CHECK_INT(s.bytes, strlen("api_key12345api_secretabc"));
    CHECK_INT(s.pool_in_use, 0);
    setcache_close(c);
}
