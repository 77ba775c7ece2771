/* Tests of change subscriptions (G7-G9) and `setcache watch`. */
#include "harness.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXEV 4096

typedef struct ev {
    int kind;
    char t[64], i[64], k[64], v[160], old[160];
    bool has_v, has_old, local;
    int64_t version;
} ev;

typedef struct rec {
    pthread_mutex_t mu;
    int n;
    ev e[MAXEV];
} rec;

static rec *rec_new(void)
{
    rec *r = calloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

static void copy(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s ? s : "");
}

static void record(void *arg, const setcache_change *ch)
{
    rec *r = arg;
    pthread_mutex_lock(&r->mu);
    if (r->n < MAXEV) {
        ev *e = &r->e[r->n];
        e->kind = ch->kind;
        copy(e->t, sizeof e->t, ch->entity_type);
        copy(e->i, sizeof e->i, ch->entity_id);
        copy(e->k, sizeof e->k, ch->key);
        copy(e->v, sizeof e->v, ch->value);
        copy(e->old, sizeof e->old, ch->old_value);
        e->has_v = ch->value != NULL;
        e->has_old = ch->old_value != NULL;
        e->local = ch->local;
        e->version = ch->version;
        r->n++;
    }
    pthread_mutex_unlock(&r->mu);
}

static int count(rec *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static bool wait_count(rec *r, int n, int timeout_ms)
{
    double t0 = t_now_ms();
    while (count(r) < n && t_now_ms() - t0 < timeout_ms) {
        t_sleep_ms(1);
    }
    return count(r) >= n;
}

TEST(subscribe_delivers_local_remote_and_plain_sql_changes)
{
    setcache *c = t_open();
    rec *r = rec_new();
    uint64_t id;
    CHECK_OK(setcache_subscribe(c, "account", NULL, NULL, record, r, &id));
    CHECK(id != 0);
    CHECK_OK(setcache_set_string(c, "account", "1", "api_key", "k1"));
    CHECK(wait_count(r, 1, 5000));
    CHECK_INT(r->e[0].kind, SETCACHE_CHANGE_SET);
    CHECK_STR(r->e[0].t, "account");
    CHECK_STR(r->e[0].i, "1");
    CHECK_STR(r->e[0].k, "api_key");
    CHECK_STR(r->e[0].v, "k1");
    CHECK(r->e[0].local);
    CHECK(r->e[0].version > 0);
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "1", "api_key", buf, sizeof buf, NULL));
    /* a plain-SQL change by another program */
    t_sql("UPDATE \"%s\".settings SET value = 'k2' WHERE key = 'api_key'", t_schema());
    CHECK(wait_count(r, 2, 5000));
    CHECK_INT(r->e[1].kind, SETCACHE_CHANGE_SET);
    CHECK_STR(r->e[1].v, "k2");
    CHECK(r->e[1].has_old);
    CHECK_STR(r->e[1].old, "k1");
    CHECK(!r->e[1].local);
    CHECK(r->e[1].version > r->e[0].version);
    /* the cache held the change before the callback ran */
    CHECK_OK(setcache_get_string(c, "account", "1", "api_key", buf, sizeof buf, NULL));
    CHECK_STR(buf, "k2");
    t_sql("DELETE FROM \"%s\".settings WHERE key = 'api_key'", t_schema());
    CHECK(wait_count(r, 3, 5000));
    CHECK_INT(r->e[2].kind, SETCACHE_CHANGE_DELETE);
    CHECK(!r->e[2].has_v);
    CHECK_STR(r->e[2].old, "k2");
    /* another type does not match; an uncached entity still reaches us */
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
          "('expert', '1', 'x', 'y'), ('account', '77', 'paper_account', 'true')",
          t_schema());
    CHECK(wait_count(r, 4, 5000));
    t_sleep_ms(100);
    CHECK_INT(count(r), 4);
    CHECK_STR(r->e[3].i, "77");
    CHECK_STR(r->e[3].v, "true");
    CHECK_OK(setcache_unsubscribe(c, id));
    CHECK_RC(setcache_unsubscribe(c, id), SETCACHE_ERR_ARG);
    setcache_close(c);
    free(r);
}

TEST(subscribe_filters_by_type_id_and_key)
{
    setcache *c = t_open();
    rec *all = rec_new(), *type = rec_new(), *ent = rec_new(), *one = rec_new(),
        *anykey = rec_new();
    uint64_t ids[5];
    CHECK_OK(setcache_subscribe(c, NULL, NULL, NULL, record, all, &ids[0]));
    CHECK_OK(setcache_subscribe(c, "expert", NULL, NULL, record, type, &ids[1]));
    CHECK_OK(setcache_subscribe(c, "expert", "3", NULL, record, ent, &ids[2]));
    CHECK_OK(setcache_subscribe(c, "expert", "3", "enable_buy", record, one, &ids[3]));
    CHECK_OK(setcache_subscribe(c, NULL, NULL, "enable_buy", record, anykey, &ids[4]));
    CHECK_RC(setcache_subscribe(c, "Bad-Type", NULL, NULL, record, all, &ids[0]), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_subscribe(c, NULL, "bad\nid", NULL, record, all, &ids[0]), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_subscribe(c, NULL, NULL, NULL, NULL, all, &ids[0]), SETCACHE_ERR_ARG);
    CHECK_OK(setcache_set_string(c, "expert", "3", "enable_buy", "true"));  /* all five */
    CHECK_OK(setcache_set_string(c, "expert", "3", "enable_sell", "true")); /* all, type, ent */
    CHECK_OK(setcache_set_string(c, "expert", "4", "enable_buy", "true"));  /* all, type, anykey */
    CHECK_OK(setcache_set_string(c, "account", "3", "enable_buy", "x"));    /* all, anykey */
    CHECK_OK(setcache_set_string(c, "account", "3", "other", "x"));         /* all */
    CHECK(wait_count(all, 5, 5000));
    t_sleep_ms(200);
    CHECK_INT(count(all), 5);
    CHECK_INT(count(type), 3);
    CHECK_INT(count(ent), 2);
    CHECK_INT(count(one), 1);
    CHECK_INT(count(anykey), 3);
    for (int i = 0; i < 5; i++) {
        CHECK_OK(setcache_unsubscribe(c, ids[i]));
    }
    setcache_close(c);
    free(all);
    free(type);
    free(ent);
    free(one);
    free(anykey);
}

enum { ROUND_SET, ROUND_AFTER_RESYNC, ROUND_MISSED };

/* One round of subscribe_then_commit_elsewhere_misses_nothing: the change
 * to v must arrive as a SET of v, or (G8: after a listener reconnect) after
 * a RESYNC; a RESYNC with no SET after it counts only if the cache holds v
 * (the change was made before the gap and is found by reading). Any other
 * first change, or nothing within 5 s, is a miss, described on stderr. */
static int round_got(setcache *c, rec *r, const char *v)
{
    if (!wait_count(r, 1, 5000)) {
        fprintf(stderr, "    wanted %s, no event in 5 s\n", v);
        return ROUND_MISSED;
    }
    int resyncs = 0;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int n = r->n;
        while (resyncs < n && r->e[resyncs].kind == SETCACHE_CHANGE_RESYNC) {
            resyncs++;
        }
        bool more = resyncs < n;
        bool ok =
            more && r->e[resyncs].kind == SETCACHE_CHANGE_SET && strcmp(r->e[resyncs].v, v) == 0;
        if (more && !ok) {
            fprintf(stderr,
                    "    wanted %s, got %d events: after %d RESYNC, kind %d, value '%s', "
                    "version %lld\n",
                    v, n, resyncs, (int)r->e[resyncs].kind, r->e[resyncs].v,
                    (long long)r->e[resyncs].version);
        }
        pthread_mutex_unlock(&r->mu);
        if (more) {
            return !ok ? ROUND_MISSED : resyncs ? ROUND_AFTER_RESYNC : ROUND_SET;
        }
        if (!wait_count(r, n + 1, 5000)) {
            break; /* only RESYNCs */
        }
    }
    if (t_wait_value(c, "account", "1", "k", v, 5000) < 0) {
        fprintf(stderr, "    wanted %s, got %d RESYNC and no SET, and the cache does not hold it\n",
                v, resyncs);
        return ROUND_MISSED;
    }
    fprintf(stderr, "    wanted %s: %d RESYNC, the cache holds it\n", v, resyncs);
    return ROUND_AFTER_RESYNC;
}

TEST_T(subscribe_then_commit_elsewhere_misses_nothing, 120)
{
    setcache *c = t_open();
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('account', "
          "'1', 'k', '0')",
          t_schema());
    PGconn *other = PQconnectdb(t_conninfo());
    CHECK(PQstatus(other) == CONNECTION_OK);
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE \"%s\".settings SET value = $1 WHERE entity_id = '1' AND key = 'k'",
             t_schema());
    int missed = 0, after_resync = 0;
    double t0 = t_now_ms();
    int rounds = 0;
    rec *rp = rec_new();
    for (; rounds < 10000 && t_now_ms() - t0 < 90000 * t_scale(); rounds++) {
        rec *r = rp;
        pthread_mutex_lock(&r->mu);
        r->n = 0;
        pthread_mutex_unlock(&r->mu);
        uint64_t id;
        CHECK_OK(setcache_subscribe(c, "account", "1", "k", record, r, &id));
        char v[16];
        snprintf(v, sizeof v, "%d", rounds + 1);
        const char *p[1] = {v};
        PGresult *res = PQexecParams(other, sql, 1, NULL, p, NULL, NULL, 0);
        CHECK(PQresultStatus(res) == PGRES_COMMAND_OK);
        PQclear(res);
        int got = round_got(c, r, v);
        missed += got == ROUND_MISSED;
        after_resync += got == ROUND_AFTER_RESYNC;
        CHECK_OK(setcache_unsubscribe(c, id));
    }
    free(rp);
    fprintf(stderr, "    %d rounds, %d missed, %d answered by a RESYNC and the cache\n", rounds,
            missed, after_resync);
    CHECK_INT(rounds, 10000);
    CHECK_INT(missed, 0);
    PQfinish(other);
    setcache_close(c);
}

TEST_T(per_setting_order_and_uniqueness_under_4_writer_processes, 120)
{
    setcache_close(t_open()); /* schema */
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
          "('expert', '1', 'a', '0'), ('expert', '1', 'b', '0')",
          t_schema());
    int go[2];
    CHECK(pipe(go) == 0);
    pid_t kids[4];
    for (int w = 0; w < 4; w++) {
        kids[w] = fork();
        if (kids[w] == 0) {
            char x;
            close(go[1]);
            if (read(go[0], &x, 1) != 1) {
                _exit(1);
            }
            PGconn *a = PQconnectdb(t_conninfo());
            char sql[256];
            for (int i = 0; i < 200; i++) {
                snprintf(sql, sizeof sql,
                         "UPDATE \"%s\".settings SET value = (value::int + 1)::text WHERE "
                         "entity_id = '1' AND key = '%s'",
                         t_schema(), (i + w) % 2 ? "a" : "b");
                PQclear(PQexec(a, sql));
            }
            PQfinish(a);
            _exit(0);
        }
    }
    close(go[0]);
    setcache *c = t_open();
    rec *r = rec_new();
    uint64_t id;
    CHECK_OK(setcache_subscribe(c, "expert", "1", NULL, record, r, &id));
    CHECK(write(go[1], "gggg", 4) == 4);
    close(go[1]);
    for (int w = 0; w < 4; w++) {
        int st;
        waitpid(kids[w], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    /* wait until both final values have been delivered */
    double t0 = t_now_ms();
    bool done = false;
    while (!done && t_now_ms() - t0 < 10000) {
        pthread_mutex_lock(&r->mu);
        bool fa = false, fb = false;
        for (int i = 0; i < r->n; i++) {
            fa |= strcmp(r->e[i].k, "a") == 0 && strcmp(r->e[i].v, "400") == 0;
            fb |= strcmp(r->e[i].k, "b") == 0 && strcmp(r->e[i].v, "400") == 0;
        }
        pthread_mutex_unlock(&r->mu);
        done = fa && fb;
        t_sleep_ms(5);
    }
    CHECK(done);
    int64_t last[2] = {0, 0};
    int prev_val[2] = {0, 0};
    for (int i = 0; i < r->n; i++) {
        CHECK_INT(r->e[i].kind, SETCACHE_CHANGE_SET);
        int k = strcmp(r->e[i].k, "a") == 0 ? 0 : 1;
        CHECK(r->e[i].version > last[k]); /* increasing: in order, at most once */
        last[k] = r->e[i].version;
        int v = atoi(r->e[i].v);
        CHECK(v > prev_val[k]);
        prev_val[k] = v;
        CHECK(!r->e[i].local);
    }
    fprintf(stderr, "    %d events for 800 commits (later versions coalesce earlier ones)\n", r->n);
    CHECK_OK(setcache_unsubscribe(c, id));
    setcache_close(c);
    free(r);
}

/* ---- re-entrancy ---- */

typedef struct reent {
    setcache *c;
    atomic_int calls, errors, self_calls;
    _Atomic uint64_t other_id;
} reent;

static void noop(void *arg, const setcache_change *ch)
{
    (void)arg;
    (void)ch;
}

static void reentrant(void *arg, const setcache_change *ch)
{
    reent *x = arg;
    if (ch->kind != SETCACHE_CHANGE_SET) {
        return;
    }
    atomic_fetch_add(&x->calls, 1);
    char buf[64];
    /* read, write (a key this subscription does not match), subscribe,
     * unsubscribe another subscription */
    if (setcache_get_string(x->c, "expert", "1", "k", buf, sizeof buf, NULL) != SETCACHE_OK ||
        setcache_set_string(x->c, "account", "1", "echo", ch->value) != SETCACHE_OK) {
        atomic_fetch_add(&x->errors, 1);
    }
    uint64_t tmp;
    if (setcache_subscribe(x->c, "app", NULL, NULL, noop, NULL, &tmp) != SETCACHE_OK ||
        setcache_unsubscribe(x->c, tmp) != SETCACHE_OK) {
        atomic_fetch_add(&x->errors, 1);
    }
    uint64_t other = atomic_exchange(&x->other_id, 0);
    if (other && setcache_unsubscribe(x->c, other) != SETCACHE_OK) {
        atomic_fetch_add(&x->errors, 1);
    }
    setcache_close(x->c); /* refused from a callback */
}

typedef struct selfsub {
    reent *x;
    _Atomic uint64_t id;
} selfsub;

static void self_unsubscriber(void *arg, const setcache_change *ch)
{
    selfsub *me = arg;
    (void)ch;
    if (setcache_unsubscribe(me->x->c, atomic_load(&me->id)) != SETCACHE_OK) {
        atomic_fetch_add(&me->x->errors, 1);
    }
    atomic_fetch_add(&me->x->self_calls, 1);
}

TEST_T(callback_reentrancy_never_deadlocks, 240)
{
    setcache *c = t_open();
    reent x;
    memset(&x, 0, sizeof x);
    x.c = c;
    uint64_t id;
    CHECK_OK(setcache_subscribe(c, "expert", "1", "k", reentrant, &x, &id));
    double t0 = t_now_ms();
    int rounds = 0;
    selfsub *subs = calloc(10000, sizeof *subs);
    for (; rounds < 10000 && t_now_ms() - t0 < 180000 * t_scale(); rounds++) {
        uint64_t oid;
        CHECK_OK(setcache_subscribe(c, "expert", "1", "k", noop, NULL, &oid));
        atomic_store(&x.other_id, oid);
        uint64_t sid;
        subs[rounds].x = &x;
        CHECK_OK(setcache_subscribe(c, "expert", "1", "k", self_unsubscriber, &subs[rounds], &sid));
        atomic_store(&subs[rounds].id, sid);
        int before = atomic_load(&x.calls);
        CHECK_OK(setcache_set_int(c, "expert", "1", "k", rounds));
        double t1 = t_now_ms();
        while ((atomic_load(&x.calls) == before || atomic_load(&x.self_calls) <= rounds) &&
               t_now_ms() - t1 < 5000) {
            sched_yield();
        }
        CHECK(atomic_load(&x.calls) > before);
        CHECK_INT(atomic_load(&x.self_calls), rounds + 1); /* once, then never again */
    }
    CHECK_INT(rounds, 10000);
    CHECK_INT(atomic_load(&x.errors), 0);
    free(subs);
    /* close from inside a callback was refused: the handle still works */
    char buf[16];
    CHECK_OK(setcache_get_string(c, "account", "1", "echo", buf, sizeof buf, NULL));
    CHECK_OK(setcache_unsubscribe(c, id));
    setcache_close(c);
}

typedef struct slow {
    atomic_int in_cb, after_unsub_calls, done;
    atomic_int unsubscribed;
    int sleep_ms;
} slow;

static void slow_cb(void *arg, const setcache_change *ch)
{
    slow *s = arg;
    (void)ch;
    if (atomic_load(&s->unsubscribed)) {
        atomic_fetch_add(&s->after_unsub_calls, 1);
    }
    atomic_store(&s->in_cb, 1);
    t_sleep_ms(s->sleep_ms);
    atomic_fetch_add(&s->done, 1);
    atomic_store(&s->in_cb, 0);
}

TEST(unsubscribe_from_another_thread_waits_for_running_callback)
{
    setcache *c = t_open();
    slow s;
    memset(&s, 0, sizeof s);
    s.sleep_ms = 300;
    uint64_t id;
    CHECK_OK(setcache_subscribe(c, "account", NULL, NULL, slow_cb, &s, &id));
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "1"));
    double t0 = t_now_ms();
    while (!atomic_load(&s.in_cb) && t_now_ms() - t0 < 5000) {
        t_sleep_ms(1);
    }
    CHECK(atomic_load(&s.in_cb));
    CHECK_OK(setcache_unsubscribe(c, id));
    atomic_store(&s.unsubscribed, 1);
    CHECK(!atomic_load(&s.in_cb)); /* it had finished before unsubscribe returned */
    CHECK_INT(atomic_load(&s.done), 1);
    CHECK(t_now_ms() - t0 >= 250);
    for (int i = 0; i < 5; i++) {
        CHECK_OK(setcache_set_int(c, "account", "1", "k", i + 10));
    }
    t_sleep_ms(300);
    CHECK_INT(atomic_load(&s.after_unsub_calls), 0);
    setcache_close(c);
}

/* A subscriber that stays in its first callback until released. */
typedef struct blocker {
    atomic_int calls, release;
} blocker;

static void blocking_cb(void *arg, const setcache_change *ch)
{
    blocker *b = arg;
    (void)ch;
    atomic_fetch_add(&b->calls, 1);
    for (int i = 0; i < 30000 && !atomic_load(&b->release); i++) { /* at most 30 s */
        t_sleep_ms(1);
    }
}

/* Callbacks run on their own thread: while one is stuck, the cache goes on
 * applying changes (checked by what is readable meanwhile, not by time). */
TEST_T(blocked_subscriber_does_not_hold_up_cache_updates, 60)
{
    setcache *c = t_open();
    blocker b;
    memset(&b, 0, sizeof b);
    uint64_t id;
    CHECK_OK(setcache_subscribe(c, "expert", NULL, NULL, blocking_cb, &b, &id));
    CHECK_OK(setcache_set_string(c, "expert", "5", "k", "start"));
    double t0 = t_now_ms();
    while (atomic_load(&b.calls) == 0 && t_now_ms() - t0 < 5000 * t_scale()) {
        t_sleep_ms(1);
    }
    CHECK_INT(atomic_load(&b.calls), 1); /* in its first callback, and staying there */
    double worst = 0;
    for (int i = 0; i < 20; i++) {
        char want[16];
        snprintf(want, sizeof want, "v%d", i);
        t_sql("UPDATE \"%s\".settings SET value = '%s' WHERE entity_id = '5'", t_schema(), want);
        double d = t_wait_value(c, "expert", "5", "k", want, (int)(5000 * t_scale()));
        CHECK(d >= 0);
        worst = d > worst ? d : worst;
    }
    CHECK_INT(atomic_load(&b.calls), 1); /* every change above was applied meanwhile */
    fprintf(stderr, "    worst update delay with a subscriber blocked throughout: %.1f ms\n",
            worst);
    atomic_store(&b.release, 1);
    t0 = t_now_ms();
    while (atomic_load(&b.calls) < 2 && t_now_ms() - t0 < 5000 * t_scale()) {
        t_sleep_ms(1);
    }
    CHECK(atomic_load(&b.calls) >= 2); /* then it hears of them (perhaps collapsed) */
    CHECK_OK(setcache_unsubscribe(c, id));
    setcache_close(c);
}

typedef struct gate {
    atomic_int open;
    rec r;
} gate;

static void gated(void *arg, const setcache_change *ch)
{
    gate *g = arg;
    while (!atomic_load(&g->open)) {
        t_sleep_ms(1);
    }
    record(&g->r, ch);
}

TEST_T(queue_overflow_collapses_into_resync, 60)
{
    setcache_options o;
    t_options(&o);
    o.dispatch_queue_max = 10;
    setcache *c = t_open_with(&o);
    gate *g = calloc(1, sizeof *g);
    pthread_mutex_init(&g->r.mu, NULL);
    uint64_t id;
    CHECK_OK(setcache_subscribe(c, "expert", NULL, NULL, gated, g, &id));
    for (int i = 0; i < 200; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        CHECK_OK(setcache_set_string(c, "expert", "1", key, "v"));
    }
    setcache_stats st;
    setcache_get_stats(c, &st);
    CHECK(st.resyncs >= 1);
    atomic_store(&g->open, 1);
    t_sleep_ms(300);
    int n = count(&g->r);
    CHECK(n <= 12); /* bounded: at most the queue, the one in hand and the RESYNC */
    bool resync = false;
    for (int i = 0; i < n; i++) {
        resync |= g->r.e[i].kind == SETCACHE_CHANGE_RESYNC;
    }
    CHECK(resync);
    /* delivery resumes after the RESYNC */
    CHECK_OK(setcache_set_string(c, "expert", "1", "after", "x"));
    CHECK(wait_count(&g->r, n + 1, 5000));
    CHECK_STR(g->r.e[n].k, "after");
    CHECK_OK(setcache_unsubscribe(c, id));
    setcache_close(c);
    free(g);
}

TEST(reconnect_announces_resync_then_the_changes_found)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v0"));
    CHECK_OK(setcache_set_string(c, "account", "1", "gone", "x"));
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    rec *r = rec_new();
    uint64_t id;
    CHECK_OK(setcache_subscribe(c, "account", NULL, NULL, record, r, &id));
    setcache_stats s0;
    setcache_get_stats(c, &s0);
    /* stop the listener from hearing, then change things in the gap: only
     * once its backend is gone (pg_terminate_backend returns before that,
     * and a backend still alive would hear the change before the gap) */
    int lpid = atoi(t_sql_value("SELECT pid FROM pg_stat_activity WHERE application_name = "
                                "'setcache:%d:listen'",
                                (int)getpid()));
    CHECK(lpid > 0);
    t_sql("SELECT pg_terminate_backend(%d)", lpid);
    double t0 = t_now_ms();
    while (atoi(t_sql_value("SELECT count(*) FROM pg_stat_activity WHERE pid = %d", lpid)) > 0 &&
           t_now_ms() - t0 < 5000) {
        t_sleep_ms(2);
    }
    t_sql("UPDATE \"%s\".settings SET value = 'v1' WHERE key = 'k'", t_schema());
    t_sql("DELETE FROM \"%s\".settings WHERE key = 'gone'", t_schema());
    /* The echoes of the two writes above may still reach the subscriber
     * before the gap (as SETs of v0 and x: the latest state then); what
     * the gap changed must come after a RESYNC. */
    double tw = t_now_ms();
    int first = -1;
    while (first < 0 && t_now_ms() - tw < 10000) {
        pthread_mutex_lock(&r->mu);
        for (int i = 0; i < r->n && first < 0; i++) {
            if (r->e[i].kind == SETCACHE_CHANGE_RESYNC) {
                first = i;
            }
        }
        pthread_mutex_unlock(&r->mu);
        t_sleep_ms(2);
    }
    CHECK(first >= 0);
    for (int i = 0; i < first; i++) {
        CHECK(r->e[i].kind == SETCACHE_CHANGE_SET);
        CHECK(strcmp(r->e[i].v, "v0") == 0 || strcmp(r->e[i].v, "x") == 0);
    }
    CHECK(wait_count(r, first + 3, 10000));
    bool set = false, del = false;
    for (int i = first + 1; i < r->n; i++) {
        set |= r->e[i].kind == SETCACHE_CHANGE_SET && strcmp(r->e[i].v, "v1") == 0 &&
               strcmp(r->e[i].old, "v0") == 0;
        del |= r->e[i].kind == SETCACHE_CHANGE_DELETE && strcmp(r->e[i].k, "gone") == 0;
    }
    CHECK(set && del);
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v1");
    setcache_stats s1;
    setcache_get_stats(c, &s1);
    CHECK_INT(s1.loads, s0.loads); /* reconciled in the background, no reader reload */
    CHECK_OK(setcache_unsubscribe(c, id));
    setcache_close(c);
    free(r);
}

/* Run one statement with psql, printf-style. */
static void psql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void psql(const char *fmt, ...)
{
    char stmt[512], cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(stmt, sizeof stmt, fmt, ap);
    va_end(ap);
    char quoted[1024];
    size_t q = 0;
    for (const char *p = stmt; *p && q + 5 < sizeof quoted; p++) {
        if (*p == '\'') {
            memcpy(quoted + q, "'\\''", 4);
            q += 4;
        } else {
            quoted[q++] = *p;
        }
    }
    quoted[q] = '\0';
    snprintf(cmd, sizeof cmd, "psql -qX -v ON_ERROR_STOP=1 -c '%s' '%s' >/dev/null", quoted,
             t_conninfo());
    CHECK(system(cmd) == 0);
}

TEST(watch_prints_one_json_line_per_change)
{
    setcache_close(t_open()); /* schema */
    int out[2];
    CHECK(pipe(out) == 0);
    char tool[512];
    snprintf(tool, sizeof tool, "%s/setcache", t_build_dir());
    pid_t kid = fork();
    if (kid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        int devnull = open("/dev/null", 1);
        dup2(devnull, 2);
        execl(tool, "setcache", "--conninfo", t_conninfo(), "--schema", t_schema(), "--channel",
              t_schema(), "watch", "account", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    /* wait until the watcher's listener is up */
    double t0 = t_now_ms();
    while (t_now_ms() - t0 < 5000 &&
           atoi(t_sql_value("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                            "'setcache:%d:listen'",
                            (int)kid)) == 0) {
        t_sleep_ms(10);
    }
    t_sleep_ms(200);
    /* the changes are made by psql, a separate program */
    psql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('expert', "
         "'1', 'no', 'x')",
         t_schema());
    psql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('account', "
         "'7', 'api_key', 'a\"b\\c')",
         t_schema());
    double t_commit = t_now_ms(); /* psql has exited: its commit is acknowledged */
    char line[1024];
    FILE *f = fdopen(out[0], "r");
    CHECK(fgets(line, sizeof line, f) != NULL);
    double delay = t_now_ms() - t_commit;
    fprintf(stderr, "    line after %.1f ms: %s", delay, line); /* speed: bench/latency.c */
    CHECK(strstr(line, "\"kind\":\"set\"") != NULL);
    CHECK(strstr(line, "\"entity_type\":\"account\"") != NULL);
    CHECK(strstr(line, "\"entity_id\":\"7\"") != NULL);
    CHECK(strstr(line, "\"key\":\"api_key\"") != NULL);
    CHECK(strstr(line, "\"value\":\"a\\\"b\\\\c\"") != NULL);
    CHECK(strstr(line, "\"local\":false") != NULL);
    CHECK(strstr(line, "\"received_at\":\"") != NULL);
    psql("DELETE FROM \"%s\".settings WHERE entity_id = '7'", t_schema());
    CHECK(fgets(line, sizeof line, f) != NULL);
    CHECK(strstr(line, "\"kind\":\"delete\"") != NULL);
    CHECK(strstr(line, "\"value\":null") != NULL);
    kill(kid, SIGTERM);
    int st;
    waitpid(kid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fclose(f);
}
