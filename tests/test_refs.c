/* Bound references and entity snapshots: their codes, that a ref follows
 * every change a plain read does, that a snapshot never holds part of a
 * transaction (G11), and that replaced values are reclaimed safely under
 * concurrent readers. */
#include "harness.h"
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

static int ref_str(setcache_ref *r, char *buf, size_t cap)
{
    return setcache_ref_get_string(r, buf, cap, NULL);
}

/* Poll a ref until it reads want (NULL: SETCACHE_NOT_FOUND); ms waited or -1. */
static double wait_ref(setcache_ref *r, const char *want, int timeout_ms)
{
    double t0 = t_now_ms();
    char buf[256];
    do {
        int rc = ref_str(r, buf, sizeof buf);
        if (want ? rc == SETCACHE_OK && strcmp(buf, want) == 0 : rc == SETCACHE_NOT_FOUND) {
            return t_now_ms() - t0;
        }
        t_sleep_ms(1);
    } while (t_now_ms() - t0 < timeout_ms);
    return -1;
}

TEST(ref_reads_answer_like_plain_reads)
{
    setcache *c = t_open();
    CHECK_OK(setcache_define(c, "expert", "atr_period", SETCACHE_INT, "14"));
    CHECK_OK(setcache_set_int(c, "expert", "1", "max_position_size", 250));
    CHECK_OK(setcache_set_double(c, "expert", "1", "risk", 1.5));
    CHECK_OK(setcache_set_bool(c, "expert", "1", "enabled", true));
    CHECK_OK(setcache_set_string(c, "expert", "1", "mode", "fixed"));
    char longv[200];
    memset(longv, 'x', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    CHECK_OK(setcache_set_string(c, "expert", "1", "long", longv));

    setcache_ref *ri, *rd, *rb, *rs, *rl, *rdef, *rnone;
    CHECK_OK(setcache_ref_open(c, "expert", "1", "max_position_size", &ri));
    CHECK_OK(setcache_ref_open(c, "expert", "1", "risk", &rd));
    CHECK_OK(setcache_ref_open(c, "expert", "1", "enabled", &rb));
    CHECK_OK(setcache_ref_open(c, "expert", "1", "mode", &rs));
    CHECK_OK(setcache_ref_open(c, "expert", "1", "long", &rl));
    CHECK_OK(setcache_ref_open(c, "expert", "1", "atr_period", &rdef));
    CHECK_OK(setcache_ref_open(c, "expert", "1", "nothing", &rnone));

    int64_t i = 0;
    double d = 0;
    bool b = false;
    char buf[256];
    size_t len = 0;
    CHECK_OK(setcache_ref_get_int(ri, &i));
    CHECK_INT(i, 250);
    CHECK_OK(setcache_ref_get_double(ri, &d)); /* an integer reads as a double too */
    CHECK(d == 250.0);
    CHECK_OK(setcache_ref_get_double(rd, &d));
    CHECK(d == 1.5);
    CHECK_OK(setcache_ref_get_bool(rb, &b));
    CHECK(b);
    CHECK_OK(setcache_ref_get_string(rs, buf, sizeof buf, &len));
    CHECK_STR(buf, "fixed");
    CHECK_INT(len, 5);
    CHECK_OK(setcache_ref_get_string(rl, buf, sizeof buf, &len));
    CHECK_STR(buf, longv);
    CHECK_INT(len, 199);
    CHECK_OK(setcache_ref_get_int(rdef, &i)); /* the default */
    CHECK_INT(i, 14);
    i = 7;
    CHECK_RC(setcache_ref_get_int(rnone, &i), SETCACHE_NOT_FOUND);
    CHECK_INT(i, 7); /* unchanged on failure */
    CHECK_RC(setcache_ref_get_int(rs, &i), SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_ref_get_bool(rd, &b), SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_ref_get_string(rs, buf, 5, &len), SETCACHE_ERR_SPACE);
    CHECK_INT(len, 5);
    CHECK_RC(setcache_ref_get_string(rl, buf, 10, &len), SETCACHE_ERR_SPACE);
    CHECK_INT(len, 199);
    CHECK_RC(setcache_ref_get_string(rs, NULL, 0, &len), SETCACHE_ERR_SPACE);
    CHECK_RC(setcache_ref_get_int(NULL, &i), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_ref_get_int(ri, NULL), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_ref_get_string(NULL, buf, sizeof buf, NULL), SETCACHE_ERR_ARG);

    /* bad arguments: a clear code, *out NULL */
    setcache_ref *bad = (setcache_ref *)1;
    CHECK_RC(setcache_ref_open(NULL, "expert", "1", "k", &bad), SETCACHE_ERR_ARG);
    CHECK(bad == NULL);
    CHECK_RC(setcache_ref_open(c, "expert", "1", NULL, &bad), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_ref_open(c, "", "1", "k", &bad), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_ref_open(c, "expert", "1", "bad\x01key", &bad), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_ref_open(c, "expert", "1", "k", NULL), SETCACHE_ERR_ARG);
    CHECK(bad == NULL);

    /* every read through a ref is a hit, on the fast path as on the locked */
    uint64_t h0 = t_stats(c).hits;
    for (int k = 0; k < 1000; k++) {
        CHECK_OK(setcache_ref_get_int(ri, &i));
        CHECK_OK(setcache_ref_get_string(rl, buf, sizeof buf, NULL));
    }
    CHECK_INT(t_stats(c).hits - h0, 2000);
    CHECK_INT(t_stats(c).db_queries, t_stats(c).db_queries); /* stable */
    uint64_t q0 = t_stats(c).db_queries;
    for (int k = 0; k < 1000; k++) {
        CHECK_OK(setcache_ref_get_int(ri, &i));
    }
    CHECK_INT(t_stats(c).db_queries, q0); /* reads never touch the database */

    setcache_ref_close(ri);
    setcache_ref_close(rd);
    setcache_ref_close(rb);
    setcache_ref_close(rs);
    setcache_ref_close(rl);
    setcache_ref_close(rdef);
    setcache_ref_close(rnone);
    setcache_ref_close(NULL);
    setcache_close(c);
}

static void *other_thread_reads(void *arg)
{
    setcache_ref *r = arg;
    int64_t *v = malloc(sizeof *v);
    if (setcache_ref_get_int(r, v) != SETCACHE_OK) {
        *v = -1;
    }
    return v;
}

TEST_T(ref_follows_every_change, 60)
{
    setcache_options o;
    t_options(&o);
    o.max_entities = 2;
    setcache *c = t_open_with(&o);
    CHECK_OK(setcache_define(c, "account", "limit", SETCACHE_INT, "5"));
    CHECK_OK(setcache_set_int(c, "account", "1", "limit", 100));
    setcache_ref *r;
    CHECK_OK(setcache_ref_open(c, "account", "1", "limit", &r));
    int64_t v = 0;
    char buf[64];

    /* G2: a local write is read at once, by every thread */
    CHECK_OK(setcache_set_int(c, "account", "1", "limit", 101));
    pthread_t th;
    void *got;
    pthread_create(&th, NULL, other_thread_reads, r);
    pthread_join(th, &got);
    CHECK_INT(*(int64_t *)got, 101);
    free(got);
    CHECK_OK(setcache_ref_get_int(r, &v));
    CHECK_INT(v, 101);
    /* set_many */
    setcache_kv kv[] = {{"limit", "102"}, {"other", "x"}};
    CHECK_OK(setcache_set_many(c, "account", "1", kv, 2));
    CHECK_OK(setcache_ref_get_int(r, &v));
    CHECK_INT(v, 102);

    /* another program (plain SQL): within the refresh bound */
    t_sql("UPDATE \"%s\".settings SET value = '103' WHERE entity_id = '1' AND key = 'limit'",
          t_schema());
    CHECK(wait_ref(r, "103", 2000) >= 0);

    /* delete: the default, then NOT_FOUND without one */
    CHECK_OK(setcache_delete(c, "account", "1", "limit"));
    CHECK_OK(setcache_ref_get_int(r, &v));
    CHECK_INT(v, 5);
    CHECK_OK(setcache_set_string(c, "account", "1", "plain", "p1"));
    setcache_ref *rp;
    CHECK_OK(setcache_ref_open(c, "account", "1", "plain", &rp));
    CHECK(wait_ref(rp, "p1", 10) >= 0);
    t_sql("DELETE FROM \"%s\".settings WHERE entity_id = '1' AND key = 'plain'", t_schema());
    CHECK(wait_ref(rp, NULL, 2000) >= 0);
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
          "('account', '1', 'plain', 'p2')",
          t_schema());
    CHECK(wait_ref(rp, "p2", 2000) >= 0);

    /* eviction: other entities push it out; the ref loads it again */
    CHECK_OK(setcache_set_int(c, "account", "1", "limit", 104));
    uint64_t ev0 = t_stats(c).evictions;
    for (int k = 2; k < 12; k++) {
        char id[16];
        snprintf(id, sizeof id, "%d", k);
        CHECK_RC(setcache_get_string(c, "account", id, "limit", buf, sizeof buf, NULL),
                 SETCACHE_OK);
    }
    CHECK(t_stats(c).evictions > ev0);
    t_sql("UPDATE \"%s\".settings SET value = '105' WHERE entity_id = '1' AND key = 'limit'",
          t_schema());
    CHECK(wait_ref(r, "105", 2000) >= 0);
    CHECK_OK(setcache_ref_get_int(r, &v));
    CHECK_INT(v, 105);

    /* TRUNCATE: everything goes; the default answers again */
    t_sql("TRUNCATE \"%s\".settings", t_schema());
    double waited = -1, t0 = t_now_ms();
    while (t_now_ms() - t0 < 2000) {
        if (setcache_ref_get_int(r, &v) == SETCACHE_OK && v == 5) {
            waited = t_now_ms() - t0;
            break;
        }
        t_sleep_ms(1);
    }
    CHECK(waited >= 0);
    CHECK(wait_ref(rp, NULL, 2000) >= 0);

    /* reconcile after a reconnect: a change made while nobody listened */
    CHECK_OK(setcache_set_int(c, "account", "1", "limit", 106));
    t_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
          "'setcache:%d:listen'",
          (int)getpid());
    t0 = t_now_ms();
    while (t_stats(c).state == SETCACHE_STATE_VALID && t_now_ms() - t0 < 3000) {
        t_sleep_ms(2);
    }
    t_sql("UPDATE \"%s\".settings SET value = '107' WHERE entity_id = '1' AND key = 'limit'",
          t_schema());
    CHECK(wait_ref(r, "107", 10000) >= 0);

    /* an uncertain write drops the entity: the ref reads the truth again */
    setcache_ref_close(rp);
    setcache_ref_close(r);
    setcache_close(c);
}

TEST(refs_and_snapshots_left_open_are_closed_with_the_handle)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v"));
    setcache_ref *r[3];
    setcache_snapshot *s[2];
    for (int k = 0; k < 3; k++) {
        CHECK_OK(setcache_ref_open(c, "account", "1", "k", &r[k]));
    }
    for (int k = 0; k < 2; k++) {
        CHECK_OK(setcache_snapshot_open(c, "account", "1", &s[k]));
    }
    setcache_ref_close(r[1]);
    setcache_close(c); /* LeakSanitizer (ASan runs) reports anything left */
}

static int collect(void *arg, const char *key, const char *value, bool is_default)
{
    char *out = arg;
    size_t n = strlen(out);
    snprintf(out + n, 512 - n, "%s=%s%s;", key, value, is_default ? "(d)" : "");
    return 0;
}

TEST(snapshot_is_immutable_and_whole)
{
    setcache *c = t_open();
    CHECK_OK(setcache_define(c, "expert", "atr_period", SETCACHE_INT, "14"));
    CHECK_OK(setcache_define(c, "expert", "b_flag", SETCACHE_BOOL, "false"));
    setcache_kv kv[] = {{"stop_loss", "10"}, {"take_profit", "20"}, {"b_flag", "true"}};
    CHECK_OK(setcache_set_many(c, "expert", "7", kv, 3));
    setcache_snapshot *s;
    CHECK_OK(setcache_snapshot_open(c, "expert", "7", &s));
    int64_t v;
    bool b;
    char buf[64];
    size_t len;
    CHECK_OK(setcache_snapshot_get_int(s, "stop_loss", &v));
    CHECK_INT(v, 10);
    CHECK_OK(setcache_snapshot_get_bool(s, "b_flag", &b));
    CHECK(b);
    CHECK_OK(setcache_snapshot_get_int(s, "atr_period", &v)); /* a default */
    CHECK_INT(v, 14);
    CHECK_RC(setcache_snapshot_get_int(s, "none", &v), SETCACHE_NOT_FOUND);
    CHECK_RC(setcache_snapshot_get_bool(s, "stop_loss", &b), SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_snapshot_get_string(s, "take_profit", buf, 2, &len), SETCACHE_ERR_SPACE);
    CHECK_INT(len, 2);
    CHECK_RC(setcache_snapshot_get_int(s, NULL, &v), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_snapshot_get_int(s, "bad\x01", &v), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_snapshot_get_int(NULL, "k", &v), SETCACHE_ERR_ARG);
    double d;
    CHECK_OK(setcache_snapshot_get_double(s, "take_profit", &d));
    CHECK(d == 20.0);

    /* later changes, local and by plain SQL, don't reach it */
    setcache_kv kv2[] = {{"stop_loss", "11"}, {"take_profit", "21"}};
    CHECK_OK(setcache_set_many(c, "expert", "7", kv2, 2));
    t_sql("DELETE FROM \"%s\".settings WHERE entity_id = '7' AND key = 'b_flag'", t_schema());
    CHECK(t_wait_value(c, "expert", "7", "b_flag", "false", 2000) >= 0);
    CHECK_OK(setcache_snapshot_get_int(s, "stop_loss", &v));
    CHECK_INT(v, 10);
    CHECK_OK(setcache_snapshot_get_string(s, "take_profit", buf, sizeof buf, NULL));
    CHECK_STR(buf, "20");
    char all[512] = "";
    CHECK_OK(setcache_snapshot_foreach(s, collect, all));
    CHECK_STR(all, "atr_period=14(d);b_flag=true;stop_loss=10;take_profit=20;");

    /* a new one sees the new state */
    setcache_snapshot *s2;
    CHECK_OK(setcache_snapshot_open(c, "expert", "7", &s2));
    all[0] = '\0';
    CHECK_OK(setcache_snapshot_foreach(s2, collect, all));
    CHECK_STR(all, "atr_period=14(d);b_flag=false(d);stop_loss=11;take_profit=21;");

    /* an entity never read loads; one with no settings is empty */
    setcache_snapshot *s3;
    CHECK_OK(setcache_snapshot_open(c, "expert", "999", &s3));
    all[0] = '\0';
    CHECK_OK(setcache_snapshot_foreach(s3, collect, all));
    CHECK_STR(all, "atr_period=14(d);b_flag=false(d);");
    setcache_snapshot *bad = (setcache_snapshot *)1;
    CHECK_RC(setcache_snapshot_open(c, "expert", "", &bad), SETCACHE_ERR_ARG);
    CHECK(bad == NULL);
    CHECK_RC(setcache_snapshot_foreach(s3, NULL, NULL), SETCACHE_ERR_ARG);

    /* the cache still answers while snapshots share its table */
    CHECK_OK(setcache_set_int(c, "expert", "7", "stop_loss", 12));
    CHECK_OK(setcache_get_int(c, "expert", "7", "stop_loss", &v));
    CHECK_INT(v, 12);
    setcache_snapshot_close(s);
    setcache_snapshot_close(s2);
    setcache_snapshot_close(s3);
    setcache_snapshot_close(NULL);
    CHECK_OK(setcache_set_int(c, "expert", "7", "stop_loss", 13));
    CHECK_OK(setcache_get_int(c, "expert", "7", "stop_loss", &v));
    CHECK_INT(v, 13);
    setcache_close(c);
}

/* ---- G11: pairs written together are seen together ---- */

typedef struct pairs_run {
    setcache *c;
    atomic_int stop;
    atomic_long lib_flips, sql_flips, snaps, torn, errors;
} pairs_run;

static void *lib_flipper(void *arg)
{
    pairs_run *p = arg;
    for (long n = 1; !atomic_load(&p->stop) && n < 1000000; n++) {
        char v[32];
        snprintf(v, sizeof v, "%ld", n);
        setcache_kv kv[] = {{"stop_loss", v}, {"take_profit", v}};
        if (setcache_set_many(p->c, "expert", "1", kv, 2) != SETCACHE_OK &&
            atomic_fetch_add(&p->errors, 1) < 3) {
            fprintf(stderr, "    library writer: %s\n", setcache_errmsg());
        }
        atomic_fetch_add(&p->lib_flips, 1);
    }
    return NULL;
}

static void *sql_flipper(void *arg)
{
    pairs_run *p = arg;
    PGconn *conn = PQconnectdb(t_conninfo());
    for (long n = 1; !atomic_load(&p->stop) && n < 1000000; n++) {
        char sql[512];
        /* two statements in one transaction, and one statement for both */
        if (n % 2) {
            snprintf(sql, sizeof sql,
                     "BEGIN; UPDATE \"%s\".settings SET value = '-%ld' WHERE entity_type = "
                     "'expert' AND entity_id = '1' AND key = 'stop_loss'; UPDATE \"%s\".settings "
                     "SET value = '-%ld' WHERE entity_type = 'expert' AND entity_id = '1' AND key "
                     "= 'take_profit'; COMMIT",
                     t_schema(), n, t_schema(), n);
        } else {
            /* rows locked in key order, as the other writers lock them (a
             * plain IN list may lock in scan order and deadlock with them) */
            snprintf(sql, sizeof sql,
                     "UPDATE \"%s\".settings s SET value = '-%ld' FROM (SELECT key FROM "
                     "\"%s\".settings WHERE entity_type = 'expert' AND entity_id = '1' AND key "
                     "IN ('stop_loss', 'take_profit') ORDER BY key FOR UPDATE) l WHERE "
                     "s.entity_type = 'expert' AND s.entity_id = '1' AND s.key = l.key",
                     t_schema(), n, t_schema());
        }
        PGresult *r = PQexec(conn, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            if (atomic_fetch_add(&p->errors, 1) < 3) {
                fprintf(stderr, "    SQL writer: %s", PQerrorMessage(conn));
            }
            PQclear(PQexec(conn, "ROLLBACK"));
        }
        PQclear(r);
        atomic_fetch_add(&p->sql_flips, 1);
    }
    PQfinish(conn);
    return NULL;
}

static void *snapshot_reader(void *arg)
{
    pairs_run *p = arg;
    while (!atomic_load(&p->stop)) {
        setcache_snapshot *s;
        if (setcache_snapshot_open(p->c, "expert", "1", &s) != SETCACHE_OK) {
            atomic_fetch_add(&p->errors, 1);
            continue;
        }
        char a[32], b[32];
        if (setcache_snapshot_get_string(s, "stop_loss", a, sizeof a, NULL) != SETCACHE_OK ||
            setcache_snapshot_get_string(s, "take_profit", b, sizeof b, NULL) != SETCACHE_OK) {
            atomic_fetch_add(&p->errors, 1);
        } else if (strcmp(a, b) != 0) {
            if (atomic_fetch_add(&p->torn, 1) < 5) {
                fprintf(stderr, "    torn snapshot: stop_loss %s, take_profit %s\n", a, b);
            }
        }
        setcache_snapshot_close(s);
        atomic_fetch_add(&p->snaps, 1);
    }
    return NULL;
}

TEST_T(g11_snapshot_never_holds_part_of_a_transaction, 240)
{
    pairs_run p = {0};
    p.c = t_open();
    setcache_kv kv[] = {{"stop_loss", "0"}, {"take_profit", "0"}, {"other", "x"}};
    CHECK_OK(setcache_set_many(p.c, "expert", "1", kv, 3));
    pthread_t lib, sql, rd[3];
    pthread_create(&lib, NULL, lib_flipper, &p);
    pthread_create(&sql, NULL, sql_flipper, &p);
    for (int k = 0; k < 3; k++) {
        pthread_create(&rd[k], NULL, snapshot_reader, &p);
    }
    /* 100,000 snapshots at least, with both writers well under way, and a
     * reconnect (reconcile) in the middle; bounded in time */
    double t0 = t_now_ms();
    bool killed = false;
    while (t_now_ms() - t0 < 180000 * t_scale()) {
        if (!killed && atomic_load(&p.snaps) > 50000) {
            t_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                  "application_name = 'setcache:%d:listen'",
                  (int)getpid());
            killed = true;
        }
        if (killed && atomic_load(&p.snaps) >= 100000 && atomic_load(&p.lib_flips) >= 1000 &&
            atomic_load(&p.sql_flips) >= 1000 && t_stats(p.c).refreshes >= 100 &&
            t_stats(p.c).state == SETCACHE_STATE_VALID) {
            break;
        }
        t_sleep_ms(10);
    }
    atomic_store(&p.stop, 1);
    pthread_join(lib, NULL);
    pthread_join(sql, NULL);
    for (int k = 0; k < 3; k++) {
        pthread_join(rd[k], NULL);
    }
    setcache_stats st = t_stats(p.c);
    fprintf(stderr,
            "    %ld snapshots, %ld library and %ld SQL transactions, %ld torn, %ld errors; %llu "
            "refreshes, %llu resyncs\n",
            atomic_load(&p.snaps), atomic_load(&p.lib_flips), atomic_load(&p.sql_flips),
            atomic_load(&p.torn), atomic_load(&p.errors), (unsigned long long)st.refreshes,
            (unsigned long long)st.resyncs);
    CHECK(atomic_load(&p.snaps) >= 100000);
    CHECK(atomic_load(&p.lib_flips) >= 1000 && atomic_load(&p.sql_flips) >= 1000);
    CHECK(st.refreshes >= 100); /* the refresher installed many of them */
    CHECK_INT(atomic_load(&p.torn), 0);
    CHECK_INT(atomic_load(&p.errors), 0);
    setcache_close(p.c);
}

/* ---- reclamation: 8 readers against 1,000,000 replacements ---- */

typedef struct race {
    setcache *c;
    setcache_ref *ref_short, *ref_long, *ref_num;
    atomic_int stop;
    atomic_long reads, bad, backwards, snaps;
} race;

/* A value that says its own number n and can't be torn unseen:
 * "n:n:...:n" padded to a length that depends on n. */
static void make_value(char *out, size_t cap, long n, bool lng)
{
    size_t want = lng ? 100 + (size_t)(n % 50) : 8 + (size_t)(n % 40);
    size_t k = 0;
    out[0] = '\0';
    while (k < want && k + 24 < cap) {
        k += (size_t)snprintf(out + k, cap - k, "%ld:", n);
    }
}

static long check_value(const char *v)
{
    long n = atol(v);
    char want[400];
    make_value(want, sizeof want, n, strlen(v) >= 100);
    return strcmp(v, want) == 0 ? n : -1;
}

static void *race_reader(void *arg)
{
    race *x = arg;
    long last_s = 0, last_l = 0, last_n = 0, reads = 0;
    char buf[400];
    while (!atomic_load(&x->stop)) {
        for (int k = 0; k < 64; k++) {
            if (setcache_ref_get_string(x->ref_short, buf, sizeof buf, NULL) != SETCACHE_OK) {
                atomic_fetch_add(&x->bad, 1);
                continue;
            }
            long n = check_value(buf);
            if (n < 0) {
                atomic_fetch_add(&x->bad, 1);
            } else if (n < last_s) {
                atomic_fetch_add(&x->backwards, 1); /* G4 */
            } else {
                last_s = n;
            }
            reads++;
        }
        /* a number: as an integer, then as a double (never older) */
        int64_t iv;
        double dv;
        if (setcache_ref_get_int(x->ref_num, &iv) != SETCACHE_OK ||
            setcache_ref_get_double(x->ref_num, &dv) != SETCACHE_OK) {
            atomic_fetch_add(&x->bad, 1);
        } else if (iv < last_n || dv < (double)iv) {
            atomic_fetch_add(&x->backwards, 1);
        } else {
            last_n = (long)dv;
        }
        if (setcache_ref_get_string(x->ref_long, buf, sizeof buf, NULL) != SETCACHE_OK) {
            atomic_fetch_add(&x->bad, 1);
        } else {
            long n = check_value(buf);
            if (n < 0) {
                atomic_fetch_add(&x->bad, 1);
            } else if (n < last_l) {
                atomic_fetch_add(&x->backwards, 1);
            } else {
                last_l = n;
            }
        }
        setcache_snapshot *s;
        if (setcache_snapshot_open(x->c, "race", "1", &s) == SETCACHE_OK) {
            if (setcache_snapshot_get_string(s, "short", buf, sizeof buf, NULL) != SETCACHE_OK ||
                check_value(buf) < 0) {
                atomic_fetch_add(&x->bad, 1);
            }
            setcache_snapshot_close(s);
            atomic_fetch_add(&x->snaps, 1);
        }
        sched_yield(); /* 8 readers on few cores: let the writer run too */
    }
    atomic_fetch_add(&x->reads, reads);
    return NULL;
}

TEST_T(refs_race_a_writer_replacing_values_a_million_times, 600)
{
    race x = {0};
    x.c = t_open();
    char v[400];
    make_value(v, sizeof v, 1, false);
    CHECK_OK(setcache_set_string(x.c, "race", "1", "short", v));
    make_value(v, sizeof v, 1, true);
    CHECK_OK(setcache_set_string(x.c, "race", "1", "long", v));
    CHECK_OK(setcache_ref_open(x.c, "race", "1", "short", &x.ref_short));
    CHECK_OK(setcache_ref_open(x.c, "race", "1", "long", &x.ref_long));
    CHECK_OK(setcache_set_int(x.c, "race", "1", "num", 1));
    CHECK_OK(setcache_ref_open(x.c, "race", "1", "num", &x.ref_num));
    pthread_t th[8];
    for (int k = 0; k < 8; k++) {
        pthread_create(&th[k], NULL, race_reader, &x);
    }
    /* The writer replaces the cached values as a committed write does (the
     * same call write.c makes after COMMIT), without the round trips. */
    sc_ident ids, idl, idn;
    CHECK_OK(setcache__ident(&ids, "race", "1", "short"));
    CHECK_OK(setcache__ident(&idl, "race", "1", "long"));
    CHECK_OK(setcache__ident(&idn, "race", "1", "num"));
    int64_t version = 1000000000;
    double t0 = t_now_ms();
    long n;
    for (n = 2; n <= 1000000 && t_now_ms() - t0 < 500000 * t_scale(); n++) {
        bool lng = n % 8 == 0;
        make_value(v, sizeof v, n, lng);
        sc_local l = {.id = lng ? &idl : &ids, .value = v, .version = ++version};
        setcache__apply_local(x.c, &l, 1, false);
        if (n % 4 == 0) {
            char num[32];
            snprintf(num, sizeof num, "%ld", n);
            sc_local ln = {.id = &idn, .value = num, .version = ++version};
            setcache__apply_local(x.c, &ln, 1, false);
        }
    }
    atomic_store(&x.stop, 1);
    for (int k = 0; k < 8; k++) {
        pthread_join(th[k], NULL);
    }
    fprintf(stderr,
            "    %ld replacements in %.0f ms; %ld ref reads, %ld snapshots; %ld bad, %ld "
            "backwards\n",
            n - 2, t_now_ms() - t0, atomic_load(&x.reads), atomic_load(&x.snaps),
            atomic_load(&x.bad), atomic_load(&x.backwards));
    CHECK(n > 1000000);
    CHECK(atomic_load(&x.reads) > 0 && atomic_load(&x.snaps) > 0);
    CHECK_INT(atomic_load(&x.bad), 0);
    CHECK_INT(atomic_load(&x.backwards), 0);
    /* the last values, by both paths */
    make_value(v, sizeof v, 999999, false);
    char buf[400];
    CHECK_OK(setcache_ref_get_string(x.ref_short, buf, sizeof buf, NULL));
    CHECK_STR(buf, v);
    CHECK_OK(setcache_get_string(x.c, "race", "1", "short", buf, sizeof buf, NULL));
    CHECK_STR(buf, v);
    int64_t last;
    CHECK_OK(setcache_ref_get_int(x.ref_num, &last));
    CHECK_INT(last, 1000000);
    setcache_ref_close(x.ref_short);
    setcache_ref_close(x.ref_long);
    setcache_ref_close(x.ref_num);
    setcache_close(x.c);
}
