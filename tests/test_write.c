/* Writes: read-your-writes, failures that change nothing, uncertain
 * outcomes, echoes of this handle's own writes, monotonic reads, no phantom
 * values, set_many and deletes. */
#include "harness.h"
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

struct ryw {
    setcache *c;
    pthread_barrier_t *b;
    int rounds;
    int64_t written;
    int bad;
};

static void *ryw_reader(void *p)
{
    struct ryw *a = p;
    for (int i = 0; i < a->rounds; i++) {
        pthread_barrier_wait(a->b); /* the write has returned */
        int64_t v = -1;
        if (setcache_get_int(a->c, "account", "9", "counter", &v) != SETCACHE_OK ||
            v < a->written) {
            a->bad++;
        }
        pthread_barrier_wait(a->b);
    }
    return NULL;
}

TEST(read_your_writes_across_threads)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_int(c, "account", "9", "counter", 0));
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, 4);
    struct ryw a = {c, &b, 200, 0, 0};
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        pthread_create(&th[i], NULL, ryw_reader, &a);
    }
    for (int i = 1; i <= a.rounds; i++) {
        CHECK_OK(setcache_set_int(c, "account", "9", "counter", i));
        a.written = i;
        pthread_barrier_wait(&b);
        pthread_barrier_wait(&b);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
    }
    CHECK_INT(a.bad, 0);
    /* deletes too */
    CHECK_OK(setcache_delete(c, "account", "9", "counter"));
    int64_t v;
    CHECK_RC(setcache_get_int(c, "account", "9", "counter", &v), SETCACHE_NOT_FOUND);
    setcache_close(c);
}

TEST(write_db_failure_leaves_cache_unchanged)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "account", "4", "api_key", "good"));
    CHECK_OK(setcache_set_string(c, "account", "4", "api_secret", "s1"));
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "4", "api_key", buf, sizeof buf, NULL));
    t_sql("ALTER TABLE \"%s\".settings ADD CONSTRAINT no_bad_values CHECK (value <> 'bad')",
          t_schema());
    CHECK_RC(setcache_set_string(c, "account", "4", "api_key", "bad"), SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "no_bad_values") != NULL);
    CHECK_OK(setcache_get_string(c, "account", "4", "api_key", buf, sizeof buf, NULL));
    CHECK_STR(buf, "good");
    setcache_kv kv[3] = {{"api_secret", "s2"}, {"api_key", "bad"}, {"new_key", "n"}};
    CHECK_RC(setcache_set_many(c, "account", "4", kv, 3), SETCACHE_ERR_DB);
    CHECK_OK(setcache_get_string(c, "account", "4", "api_secret", buf, sizeof buf, NULL));
    CHECK_STR(buf, "s1");
    CHECK_RC(setcache_get_string(c, "account", "4", "new_key", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_STR(t_sql_value("SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM "
                          "\"%s\".settings",
                          t_schema()),
              "api_key=good,api_secret=s1");
    /* privileges revoked: the write fails cleanly too */
    t_sql("DROP ROLE IF EXISTS sc_ro_%d", (int)getpid());
    t_sql("CREATE ROLE sc_ro_%d LOGIN", (int)getpid());
    t_sql("GRANT USAGE ON SCHEMA \"%s\" TO sc_ro_%d", t_schema(), (int)getpid());
    t_sql("GRANT SELECT ON \"%s\".settings TO sc_ro_%d", t_schema(), (int)getpid());
    char ci[1024];
    snprintf(ci, sizeof ci, "%s user=sc_ro_%d", t_conninfo(), (int)getpid());
    setcache_options o;
    t_options(&o);
    o.conninfo = ci;
    o.create_schema = false;
    setcache *ro = t_open_with(&o);
    CHECK_OK(setcache_get_string(ro, "account", "4", "api_key", buf, sizeof buf, NULL));
    CHECK_RC(setcache_set_string(ro, "account", "4", "api_key", "x"), SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "permission denied") != NULL);
    CHECK_OK(setcache_get_string(ro, "account", "4", "api_key", buf, sizeof buf, NULL));
    CHECK_STR(buf, "good");
    setcache_close(ro);
    t_sql("DROP OWNED BY sc_ro_%d", (int)getpid());
    t_sql("DROP ROLE sc_ro_%d", (int)getpid());
    setcache_close(c);
}

struct killer {
    int pid;
    int delay_ms;
};

static void *kill_later(void *p)
{
    struct killer *k = p;
    t_sleep_ms(k->delay_ms);
    PGconn *a = PQconnectdb(t_conninfo());
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", k->pid);
    PQclear(PQexec(a, sql));
    PQfinish(a);
    return NULL;
}

TEST(uncertain_write_is_reported_and_invalidates)
{
    setcache_options o;
    t_options(&o);
    o.pool_size = 1;
    setcache *c = t_open_with(&o);
    CHECK_OK(setcache_set_string(c, "account", "2", "slow", "before"));
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "2", "slow", buf, sizeof buf, NULL));
    t_sql("CREATE FUNCTION \"%s\".slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
          "PERFORM pg_sleep(3); RETURN NEW; END $$",
          t_schema());
    t_sql("CREATE TRIGGER slow BEFORE UPDATE ON \"%s\".settings FOR EACH ROW WHEN "
          "(NEW.value = 'during') EXECUTE FUNCTION \"%s\".slow()",
          t_schema(), t_schema());
    struct killer k = {0, 500};
    CHECK_OK(setcache_with_conn(c, t_backend_pid, &k.pid));
    setcache_stats s0 = t_stats(c);
    pthread_t th;
    pthread_create(&th, NULL, kill_later, &k);
    CHECK_RC(setcache_set_string(c, "account", "2", "slow", "during"), SETCACHE_ERR_UNCERTAIN);
    pthread_join(th, NULL);
    CHECK(strstr(setcache_errmsg(), "outcome unknown") != NULL);
    /* the entity was invalidated: the next read loads the truth */
    CHECK_OK(setcache_get_string(c, "account", "2", "slow", buf, sizeof buf, NULL));
    CHECK_STR(buf, "before");
    CHECK_INT(t_stats(c).loads - s0.loads, 1);
    setcache_close(c);
}

TEST(local_write_echo_does_not_invalidate)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "account", "5", "a", "1"));
    CHECK_OK(setcache_load(c, "account", "5"));
    setcache_stats s0 = t_stats(c);
    for (int i = 0; i < 20; i++) {
        char v[8];
        snprintf(v, sizeof v, "%d", i);
        CHECK_OK(setcache_set_string(c, "account", "5", "a", v));
        CHECK_OK(setcache_delete(c, "account", "5", "b"));
        CHECK_OK(setcache_set_string(c, "account", "5", "b", v));
    }
    double t0 = t_now_ms();
    /* 20 sets of a, 19 deletes of b (the first found nothing), 20 sets of b */
    while (t_stats(c).notifications < s0.notifications + 59 && t_now_ms() - t0 < 5000) {
        t_sleep_ms(5);
    }
    t_sleep_ms(100);
    setcache_stats s1 = t_stats(c);
    CHECK(s1.notifications - s0.notifications >= 59);
    CHECK_INT(s1.invalidations - s0.invalidations, 0);
    CHECK_INT(s1.loads - s0.loads, 0);
    setcache_close(c);
}

struct mono {
    setcache *c;
    atomic_int *stop;
    int backwards, errors;
    long reads;
};

static void *mono_reader(void *p)
{
    struct mono *m = p;
    int64_t last_loc = -1, last_ext = -1;
    double t0 = t_now_ms();
    while (!atomic_load(m->stop) && m->reads < 5000000 && t_now_ms() - t0 < 30000) {
        if (m->reads % 64 == 0) {
            sched_yield(); /* let the writers run on a busy or serialising machine */
        }
        int64_t v;
        int rc = setcache_get_int(m->c, "expert", "m", "loc", &v);
        if (rc == SETCACHE_OK) {
            if (v < last_loc) {
                m->backwards++;
            }
            last_loc = v;
        } else if (rc != SETCACHE_NOT_FOUND) {
            m->errors++;
        }
        rc = setcache_get_int(m->c, "expert", "m", "ext", &v);
        if (rc == SETCACHE_OK) {
            if (v < last_ext) {
                m->backwards++;
            }
            last_ext = v;
        } else if (rc != SETCACHE_NOT_FOUND) {
            m->errors++;
        }
        m->reads++;
    }
    return NULL;
}

TEST_T(monotonic_reads_under_concurrent_writers, 60)
{
    /* the outside writer is forked before the handle exists, and waits */
    int go[2];
    CHECK(pipe(go) == 0);
    pid_t child = fork();
    if (child == 0) {
        char x;
        close(go[1]);
        if (read(go[0], &x, 1) != 1) {
            _exit(1);
        }
        PGconn *a = PQconnectdb(t_conninfo());
        for (int i = 1; i <= 300; i++) {
            char sql[256];
            snprintf(sql, sizeof sql,
                     "UPDATE \"%s\".settings SET value = '%d' WHERE entity_id = 'm' AND key = "
                     "'ext'",
                     t_schema(), i);
            PQclear(PQexec(a, sql));
        }
        PQfinish(a);
        _exit(0);
    }
    close(go[0]);
    setcache *c = t_open();
    CHECK_OK(setcache_set_int(c, "expert", "m", "loc", 0));
    CHECK_OK(setcache_set_int(c, "expert", "m", "ext", 0));
    CHECK(write(go[1], "g", 1) == 1);
    close(go[1]);
    atomic_int stop = 0;
    struct mono m[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        m[i] = (struct mono){c, &stop, 0, 0, 0};
        pthread_create(&th[i], NULL, mono_reader, &m[i]);
    }
    for (int i = 1; i <= 300; i++) {
        CHECK_OK(setcache_set_int(c, "expert", "m", "loc", i));
    }
    int st;
    waitpid(child, &st, 0);
    CHECK(t_wait_value(c, "expert", "m", "ext", "300", 5000) >= 0);
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(m[i].backwards, 0);
        CHECK_INT(m[i].errors, 0);
        CHECK(m[i].reads > 0);
    }
    int64_t v;
    CHECK_OK(setcache_get_int(c, "expert", "m", "loc", &v));
    CHECK_INT(v, 300);
    setcache_close(c);
}

struct phantom {
    setcache *c;
    atomic_int *stop;
    int seen;
};

static void *phantom_reader(void *p)
{
    struct phantom *ph = p;
    char buf[32];
    double t0 = t_now_ms();
    for (long n = 0; !atomic_load(ph->stop) && n < 5000000 && t_now_ms() - t0 < 30000; n++) {
        if (n % 64 == 0) {
            sched_yield();
        }
        if (setcache_get_string(ph->c, "account", "ph", "k", buf, sizeof buf, NULL) ==
                SETCACHE_OK &&
            strncmp(buf, "phantom", 7) == 0) {
            ph->seen++;
        }
    }
    return NULL;
}

TEST_T(no_phantom_values_from_aborted_writes, 60)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "account", "ph", "k", "committed"));
    t_sql("ALTER TABLE \"%s\".settings ADD CONSTRAINT no_phantom2 CHECK (value <> 'phantom2')",
          t_schema());
    atomic_int stop = 0;
    struct phantom ph[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        ph[i] = (struct phantom){c, &stop, 0};
        pthread_create(&th[i], NULL, phantom_reader, &ph[i]);
    }
    for (int i = 0; i < 100; i++) {
        t_sql("BEGIN");
        t_sql("UPDATE \"%s\".settings SET value = 'phantom' WHERE entity_id = 'ph'", t_schema());
        t_sql("ROLLBACK");
        CHECK_RC(setcache_set_string(c, "account", "ph", "k", "phantom2"), SETCACHE_ERR_DB);
        /* a committed write in between keeps the listener busy */
        if (i % 10 == 0) {
            t_sql("UPDATE \"%s\".settings SET value = 'committed%d' WHERE entity_id = 'ph'",
                  t_schema(), i);
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        CHECK_INT(ph[i].seen, 0);
    }
    setcache_close(c);
}

TEST(set_many_is_one_statement_and_applies_by_version)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "expert", "9", "gone", "x"));
    CHECK_OK(setcache_load(c, "expert", "9"));
    setcache_kv kv[110];
    char keys[110][32], vals[110][32];
    for (int i = 0; i < 109; i++) {
        snprintf(keys[i], sizeof keys[i], "setting_%d", i);
        snprintf(vals[i], sizeof vals[i], "v%d", i);
        kv[i].key = keys[i];
        kv[i].value = vals[i];
    }
    kv[109].key = "gone";
    kv[109].value = NULL;
    setcache_stats s0 = t_stats(c);
    long long srv0 = t_server_statements();
    CHECK_OK(setcache_set_many(c, "expert", "9", kv, 110));
    setcache_stats s1 = t_stats(c);
    CHECK_INT(s1.db_queries - s0.db_queries, 1);
    if (srv0 >= 0) {
        CHECK_INT(t_server_statements() - srv0, 1);
    }
    char buf[32];
    for (int i = 0; i < 109; i++) {
        CHECK_OK(setcache_get_string(c, "expert", "9", keys[i], buf, sizeof buf, NULL));
        CHECK_STR(buf, vals[i]);
    }
    CHECK_RC(setcache_get_string(c, "expert", "9", "gone", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_INT(t_stats(c).loads, s1.loads);
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".settings", t_schema()), "109");
    CHECK_OK(setcache_set_many(c, "expert", "9", kv, 0));
    setcache_close(c);
}

TEST(delete_falls_back_to_default_then_not_found)
{
    setcache *c = t_open();
    CHECK_OK(setcache_define(c, "account", "paper_account", SETCACHE_BOOL, "true"));
    CHECK_OK(setcache_set_bool(c, "account", "1", "paper_account", false));
    bool b = true;
    CHECK_OK(setcache_get_bool(c, "account", "1", "paper_account", &b));
    CHECK(!b);
    CHECK_OK(setcache_delete(c, "account", "1", "paper_account"));
    CHECK_OK(setcache_get_bool(c, "account", "1", "paper_account", &b));
    CHECK(b);
    CHECK_OK(setcache_delete(c, "account", "1", "paper_account")); /* nothing to delete */
    CHECK_OK(setcache_set_string(c, "account", "1", "other", "v"));
    CHECK_OK(setcache_delete(c, "account", "1", "other"));
    CHECK_RC(setcache_get_bool(c, "account", "1", "other", &b), SETCACHE_NOT_FOUND);
    setcache_close(c);
}
