/*
 * managed.c - what managed settings cost a write: setcache_set_int and
 * setcache_set_many (20 keys) with the row triggers as the core schema makes
 * them (version and notification only, no WHEN), as the managed schema makes
 * them (also the check against the key's definition and the history row,
 * and the stamp's and WHEN's standing aside for write_many) for a key
 * with no definition, and for keys defined with rules; and, for where the
 * time goes, the managed function without its history inserts (check
 * only) and without its definition lookup (history only). set_many goes, as
 * shipped, through the managed schema's write_many (the check and history
 * of the whole call at once); the core figures, and the per-row figures for
 * comparison, come from a second handle that sends set_many as one
 * statement through the row triggers (it met the schema without write_many
 * once, and stays with the statement). The same table; blocks of calls
 * alternate between the variants; medians of per-call latency.
 */
#include "internal.h" /* setcache__notify_fn_ddl, setcache__ddl: the core triggers */
#include "setcache.h"
#include "workload.h"
#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCHEMA "setcache_bench_m"
#define N 300
#define REPS 9

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_d);
    return v[n / 2];
}

static void sql(PGconn *pg, const char *q)
{
    PGresult *r = PQexec(pg, q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        bench_die(q, PQerrorMessage(pg));
    }
    PQclear(r);
}

/* Remove from s every piece that starts with from and ends with the first
 * `end` after it (inclusive). */
static void cut_all(char *s, const char *from, const char *end)
{
    char *p;
    while ((p = strstr(s, from)) != NULL) {
        char *q = strstr(p, end);
        if (!q) {
            bench_die("cut", from);
        }
        q += strlen(end);
        memmove(p, q, strlen(q) + 1);
    }
}

/* The piece of text that starts with the first (last: from the end)
 * `from` and ends with the first `end` after it (inclusive). malloc'd. */
static char *piece(const char *s, const char *from, const char *end, int last)
{
    const char *p = strstr(s, from);
    for (const char *n = p; last && n; n = strstr(n + 1, from)) {
        p = n;
    }
    const char *q = p ? strstr(p, end) : NULL;
    if (!q) {
        bench_die("the schema's DDL changed shape", from);
    }
    q += strlen(end);
    char *out = malloc((size_t)(q - p) + 1);
    if (!out) {
        bench_die("piece", "out of memory");
    }
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
    return out;
}

/* The row triggers: as the core DDL makes them (CORE: the stamp, and the
 * notification trigger that only announces, both without a WHEN - the
 * write without validation and history, and without what write_many
 * needs), as the managed DDL makes them (FULL: the stamp that stands
 * aside for write_many; checks, history and notification; as shipped),
 * and the managed ones without their history inserts (CHECK) or without
 * the definition lookup and check (HISTORY): where the time goes. */
enum { CORE, FULL, CHECK, HISTORY };
static void managed(PGconn *pg, int mode)
{
    static char *fn[4], *stamp[2], *triggers[2];
    if (!fn[CORE]) {
        PGresult *r =
            PQexec(pg, "SELECT pg_get_functiondef('" SCHEMA ".settings_notify'::regproc)");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            bench_die("functiondef", PQerrorMessage(pg));
        }
        fn[FULL] = strdup(PQgetvalue(r, 0, 0));
        fn[CHECK] = strdup(fn[FULL]);
        fn[HISTORY] = strdup(fn[FULL]);
        PQclear(r);
        cut_all(fn[CHECK], "INSERT INTO ", ";");
        cut_all(fn[HISTORY], "SELECT * INTO d FROM ", ";");
        char *f = strstr(fn[HISTORY], "IF FOUND THEN");
        if (!f || strstr(fn[CHECK], "history (")) {
            bench_die("variants", "the managed trigger function changed shape");
        }
        memcpy(f, "IF false THEN", 13);
        /* the core DDL's own function, as the library writes it */
        fn[CORE] = setcache__notify_fn_ddl(SCHEMA, SCHEMA, "settings_notify");
        /* the stamp and the two triggers: the core DDL's come first in the
         * whole DDL, the managed DDL's (as shipped) last */
        char *ddl = setcache__ddl(SCHEMA, SCHEMA);
        if (!ddl) {
            bench_die("ddl", "out of memory");
        }
        for (int last = 0; last < 2; last++) {
            stamp[last] = piece(ddl, "CREATE OR REPLACE FUNCTION \"" SCHEMA "\".settings_stamp()",
                                "$fn$;\n", last);
            triggers[last] = piece(ddl, "DROP TRIGGER IF EXISTS settings_stamp ",
                                   "EXECUTE FUNCTION \"" SCHEMA "\".settings_notify();\n", last);
        }
        free(ddl);
        if (strstr(triggers[0], "WHEN") || !strstr(triggers[1], "WHEN")) {
            bench_die("variants", "the core triggers have a WHEN, or the managed ones none");
        }
    }
    int shipped = mode != CORE;
    sql(pg, stamp[shipped]);
    sql(pg, fn[mode]);
    sql(pg, triggers[shipped]);
}

/* median µs of N set_int to entity id, key k */
static double singles(setcache *c, const char *id, const char *k)
{
    static double v[N];
    for (int i = 0; i < N; i++) {
        double t0 = now_us();
        if (setcache_set_int(c, "expert", id, k, 1 + i % 90) != SETCACHE_OK) {
            bench_die("set_int", setcache_errmsg());
        }
        v[i] = now_us() - t0;
    }
    return median(v, N);
}

/* median µs of N/10 set_many of 20 keys (key_0..key_19) to entity id */
static double manys(setcache *c, const char *id)
{
    static double v[N / 10];
    char keys[20][16], vals[20][16];
    setcache_kv kv[20];
    for (int i = 0; i < N / 10; i++) {
        for (int k = 0; k < 20; k++) {
            snprintf(keys[k], sizeof keys[k], "key_%d", k);
            snprintf(vals[k], sizeof vals[k], "%d", 1 + (i + k) % 90);
            kv[k].key = keys[k];
            kv[k].value = vals[k];
        }
        double t0 = now_us();
        if (setcache_set_many(c, "expert", id, kv, 20) != SETCACHE_OK) {
            bench_die("set_many", setcache_errmsg());
        }
        v[i] = now_us() - t0;
    }
    return median(v, N / 10);
}

int main(void)
{
    const char *conninfo = bench_conninfo("bench");
    PGconn *pg = PQconnectdb(conninfo);
    setcache_options o;
    bench_fresh(pg, SCHEMA, conninfo, &o);
    PQclear(PQexec(pg, "CHECKPOINT"));
    o.pool_size = 1;
    setcache *c, *cs;
    if (setcache_open(&c, &o) != SETCACHE_OK || setcache_open(&cs, &o) != SETCACHE_OK) {
        bench_die("open", setcache_errmsg());
    }
    /* cs: set_many as one statement from now on */
    const char *fn = SCHEMA ".write_many(text, text, text[], text[], text[], boolean[])";
    char q[256];
    snprintf(q, sizeof q, "ALTER FUNCTION %s RENAME TO write_many_away", fn);
    sql(pg, q);
    setcache_kv one = {"first", "1"};
    if (setcache_set_many(cs, "expert", "u", &one, 1) != SETCACHE_OK) {
        bench_die("set_many", setcache_errmsg());
    }
    sql(pg, "ALTER FUNCTION " SCHEMA ".write_many_away(text, text, text[], text[], text[], "
            "boolean[]) RENAME TO write_many");
    /* rules for the "defined" keys: an int in [1, 100] */
    sql(pg, "INSERT INTO " SCHEMA ".definitions (entity_type, key, type, default_value, "
            "description, min_value, max_value) SELECT 'expert', k, 'int', '1', 'a bounded int', "
            "1, 100 FROM (SELECT 'atr_period' UNION ALL SELECT 'key_' || g FROM "
            "generate_series(0, 19) g) AS x(k)");
    /* undefined keys on entity "u", defined ones on "d" */
    double core1[REPS], undef1[REPS], def1[REPS], core20[REPS], undef20[REPS], def20[REPS];
    double chk1[REPS], chk20[REPS], hist1[REPS], hist20[REPS], row20[REPS];
    setcache_set_int(c, "expert", "u", "plain", 1);
    setcache_set_int(c, "expert", "d", "atr_period", 1);
    for (int r = 0; r < REPS; r++) {
        managed(pg, CORE);
        core1[r] = singles(cs, "d", "atr_period");
        core20[r] = manys(cs, "d");
        managed(pg, CHECK);
        chk1[r] = singles(cs, "d", "atr_period");
        chk20[r] = manys(cs, "d");
        managed(pg, HISTORY);
        hist1[r] = singles(cs, "d", "atr_period");
        hist20[r] = manys(cs, "d");
        managed(pg, FULL);
        row20[r] = manys(cs, "d");
        undef1[r] = singles(c, "u", "plain");
        def1[r] = singles(c, "d", "atr_period");
        def20[r] = manys(c, "d");
        /* set_many of undefined keys: another entity type has no definitions */
        char keys[20][16], vals[20][16];
        setcache_kv kv[20];
        static double v[N / 10];
        for (int i = 0; i < N / 10; i++) {
            for (int k = 0; k < 20; k++) {
                snprintf(keys[k], sizeof keys[k], "free_%d", k);
                snprintf(vals[k], sizeof vals[k], "%d", i);
                kv[k].key = keys[k];
                kv[k].value = vals[k];
            }
            double t0 = now_us();
            if (setcache_set_many(c, "expert", "u", kv, 20) != SETCACHE_OK) {
                bench_die("set_many", setcache_errmsg());
            }
            v[i] = now_us() - t0;
        }
        undef20[r] = median(v, N / 10);
    }
    double mc1 = median(core1, REPS), mu1 = median(undef1, REPS), md1 = median(def1, REPS);
    double mc20 = median(core20, REPS), mu20 = median(undef20, REPS), md20 = median(def20, REPS);
    double mk1 = median(chk1, REPS), mk20 = median(chk20, REPS);
    double mh1 = median(hist1, REPS), mh20 = median(hist20, REPS);
    double mr20 = median(row20, REPS);
    printf("## Managed settings: what validation and history cost a write\n\n");
    bench_print_machine(pg, "pool_size 1");
    printf("median latency per call, microseconds (median of %d alternating runs of %d "
           "set_int / %d set_many), one connection, same table\n\n",
           REPS, N, N / 10);
    printf("| what | core (validate and history off) | managed, key undefined | managed, key "
           "with rules | ratio (rules / core) | target | set_many per row (one statement) | "
           "where it goes, per row: check only | history only |\n"
           "|---|---|---|---|---|---|---|---|---|\n");
    printf("| set_int | %.1f | %.1f | %.1f | %.2fx | <= 1.3x | - | %.1f (%.2fx) | %.1f (%.2fx) "
           "|\n",
           mc1, mu1, md1, md1 / mc1, mk1, mk1 / mc1, mh1, mh1 / mc1);
    printf("| set_many of 20 keys | %.1f | %.1f | %.1f | %.2fx | <= 1.3x | %.1f (%.2fx) | %.1f "
           "(%.2fx) | %.1f (%.2fx) |\n",
           mc20, mu20, md20, md20 / mc20, mr20, mr20 / mc20, mk20, mk20 / mc20, mh20, mh20 / mc20);
    const char *tp = getenv("SETCACHE_BENCH_TSV");
    FILE *t = tp ? fopen(tp, "a") : NULL;
    if (t) {
        fprintf(t, "managed\tset_int_us\t1\t%.1f\t%.1f\t%.3f\n", mc1, md1, md1 / mc1);
        fprintf(t, "managed\tset_many20_us\t1\t%.1f\t%.1f\t%.3f\n", mc20, md20, md20 / mc20);
        fclose(t);
    }
    setcache_close(cs);
    setcache_close(c);
    sql(pg, "DROP SCHEMA IF EXISTS " SCHEMA " CASCADE");
    PQfinish(pg);
    return 0;
}
