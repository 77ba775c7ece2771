/* Changes from outside reach the cache: plain SQL, two types with one
 * id, a killed listener backend. */
#include "harness.h"
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

TEST(plain_sql_update_delete_truncate_reach_the_cache)
{
    setcache *c = t_open();
    CHECK_OK(setcache_define(c, "expert", "enable_buy", SETCACHE_BOOL, "false"));
    t_insert_rows("expert", "8", 10);
    CHECK_OK(setcache_load(c, "expert", "8"));
    double delays[20];
    for (int i = 0; i < 20; i++) {
        char want[32];
        snprintf(want, sizeof want, "updated-%d", i);
        t_sql("UPDATE \"%s\".settings SET value = '%s' WHERE entity_type = 'expert' AND "
              "entity_id = '8' AND key = 'key_3'",
              t_schema(), want);
        delays[i] = t_wait_value(c, "expert", "8", "key_3", want, 5000);
        CHECK(delays[i] >= 0);
    }
    /* median delay from commit acknowledgement to a visible read */
    for (int i = 0; i < 20; i++) {
        for (int j = i + 1; j < 20; j++) {
            if (delays[j] < delays[i]) {
                double t = delays[i];
                delays[i] = delays[j];
                delays[j] = t;
            }
        }
    }
    /* informative only: speed is judged by bench/latency.c */
    fprintf(stderr, "    plain-SQL UPDATE visible after: median %.2f ms, max %.2f ms\n", delays[10],
            delays[19]);
    t_sql("DELETE FROM \"%s\".settings WHERE entity_id = '8' AND key = 'key_4'", t_schema());
    CHECK(t_wait_value(c, "expert", "8", "key_4", NULL, 5000) >= 0);
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('expert', "
          "'8', 'enable_buy', 'true')",
          t_schema());
    CHECK(t_wait_value(c, "expert", "8", "enable_buy", "true", 5000) >= 0);
    t_sql("DELETE FROM \"%s\".settings WHERE key = 'enable_buy'", t_schema());
    CHECK(t_wait_value(c, "expert", "8", "enable_buy", "false", 5000) >= 0); /* the default */
    t_sql("TRUNCATE \"%s\".settings", t_schema());
    CHECK(t_wait_value(c, "expert", "8", "key_1", NULL, 5000) >= 0);
    CHECK(t_stats(c).notifications >= 23);
    setcache_close(c);
}

TEST(same_id_in_two_types_is_two_entities)
{
    setcache *c = t_open();
    t_insert_rows("expert", "3", 5);
    t_insert_rows("account", "3", 5);
    CHECK_OK(setcache_load(c, "expert", "3"));
    CHECK_OK(setcache_load(c, "account", "3"));
    setcache_stats s0 = t_stats(c);
    t_sql("UPDATE \"%s\".settings SET value = 'x' WHERE entity_type = 'expert' AND key = "
          "'key_1'",
          t_schema());
    CHECK(t_wait_value(c, "expert", "3", "key_1", "x", 5000) >= 0);
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "3", "key_1", buf, sizeof buf, NULL));
    CHECK_STR(buf, "value_1");
    setcache_stats s1 = t_stats(c);
    CHECK_INT(s1.refreshes - s0.refreshes, 1); /* only the expert was read again */
    CHECK_INT(s1.invalidations - s0.invalidations, 0);
    CHECK_INT(s1.loads - s0.loads, 0);
    setcache_close(c);
}

TEST(listener_survives_a_killed_backend)
{
    setcache *c = t_open();
    CHECK_INT(t_stats(c).state, SETCACHE_STATE_VALID);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v0"));
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    t_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
          "'setcache:%d:listen'",
          (int)getpid());
    double t0 = t_now_ms();
    while (t_stats(c).state == SETCACHE_STATE_VALID && t_now_ms() - t0 < 3000) {
        t_sleep_ms(5);
    }
    CHECK_INT(t_stats(c).state, SETCACHE_STATE_INTERRUPTED);
    /* a change committed while nobody listens */
    t_sql("UPDATE \"%s\".settings SET value = 'v1' WHERE key = 'k'", t_schema());
    while (t_stats(c).state != SETCACHE_STATE_VALID && t_now_ms() - t0 < 5000) {
        t_sleep_ms(5);
    }
    CHECK_INT(t_stats(c).state, SETCACHE_STATE_VALID);
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v1");
    setcache_stats s = t_stats(c);
    CHECK_INT(s.reconnects, 1);
    CHECK_INT(s.resyncs, 1);
    setcache_close(c);
}
