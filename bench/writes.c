/*
 * writes.c - write-through cost against raw libpq on the same table and
 * trigger: setcache_set_int vs one raw upsert statement, setcache_set_many
 * of 20 keys vs a raw transaction of 20 upserts. Medians of interleaved runs.
 * Also cold start and memory: setcache_preload of 10,000 entities x 30 keys
 * and the resident memory per cached setting beyond its key and value bytes.
 */
#include "setcache.h"
#include "workload.h"
#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA "setcache_bench_w"
#define N 1000
#define REPS 9 /* interleaved runs; the medians of them are reported */

static const char *conninfo;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

#define cmp_d bench_cmp_d

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

static const char *UPSERT = "INSERT INTO " SCHEMA ".settings (entity_type, entity_id, key, value) "
                            "VALUES ($1, $2, $3, $4) ON CONFLICT (entity_type, entity_id, key) "
                            "DO UPDATE SET value = EXCLUDED.value RETURNING version";

static double raw_single(PGconn *c)
{
    static double v[N];
    for (int i = 0; i < N; i++) {
        char val[16];
        snprintf(val, sizeof val, "%d", i);
        const char *p[4] = {"expert", "1", "atr_period", val};
        double t0 = now_us();
        PGresult *r = PQexecParams(c, UPSERT, 4, NULL, p, NULL, NULL, 0);
        v[i] = now_us() - t0;
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "raw: %s", PQerrorMessage(c));
            exit(1);
        }
        PQclear(r);
    }
    return median(v, N);
}

static double lib_single(setcache *c)
{
    static double v[N];
    for (int i = 0; i < N; i++) {
        double t0 = now_us();
        if (setcache_set_int(c, "expert", "1", "atr_period", i) != SETCACHE_OK) {
            fprintf(stderr, "set: %s\n", setcache_errmsg());
            exit(1);
        }
        v[i] = now_us() - t0;
    }
    return median(v, N);
}

static double raw_many(PGconn *c)
{
    static double v[N / 10];
    for (int i = 0; i < N / 10; i++) {
        double t0 = now_us();
        PQclear(PQexec(c, "BEGIN"));
        for (int k = 0; k < 20; k++) {
            char key[16], val[16];
            snprintf(key, sizeof key, "key_%d", k);
            snprintf(val, sizeof val, "%d", i);
            const char *p[4] = {"expert", "2", key, val};
            PQclear(PQexecParams(c, UPSERT, 4, NULL, p, NULL, NULL, 0));
        }
        PQclear(PQexec(c, "COMMIT"));
        v[i] = now_us() - t0;
    }
    return median(v, N / 10);
}

static double lib_many(setcache *c)
{
    static double v[N / 10];
    char keys[20][16], vals[20][16];
    setcache_kv kv[20];
    for (int i = 0; i < N / 10; i++) {
        for (int k = 0; k < 20; k++) {
            snprintf(keys[k], sizeof keys[k], "key_%d", k);
            snprintf(vals[k], sizeof vals[k], "%d", i);
            kv[k].key = keys[k];
            kv[k].value = vals[k];
        }
        double t0 = now_us();
        if (setcache_set_many(c, "expert", "2", kv, 20) != SETCACHE_OK) {
            fprintf(stderr, "set_many: %s\n", setcache_errmsg());
            exit(1);
        }
        v[i] = now_us() - t0;
    }
    return median(v, N / 10);
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f && fscanf(f, "%ld %ld", &pages, &res) != 2) {
        res = 0;
    }
    if (f) {
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(void)
{
    conninfo = bench_conninfo("bench");
    PGconn *raw = PQconnectdb(conninfo);
    setcache_options o;
    bench_fresh(raw, SCHEMA, conninfo, &o);
    /* start from a quiet server: flush what the programs before left dirty
     * (needs superuser or pg_checkpoint; the figures stand without it) */
    PQclear(PQexec(raw, "CHECKPOINT"));
    o.pool_size = 1;
    setcache *c;
    if (setcache_open(&c, &o) != SETCACHE_OK) {
        fprintf(stderr, "open: %s\n", setcache_errmsg());
        return 1;
    }
    setcache_set_int(c, "expert", "1", "atr_period", 0);
    setcache_load(c, "expert", "1");
    setcache_load(c, "expert", "2");
    double rs[REPS], ls[REPS], rm[REPS], lm[REPS];
    for (int i = 0; i < REPS; i++) {
        rs[i] = raw_single(raw);
        ls[i] = lib_single(c);
        rm[i] = raw_many(raw);
        lm[i] = lib_many(c);
    }
    double mrs = median(rs, REPS), mls = median(ls, REPS), mrm = median(rm, REPS),
           mlm = median(lm, REPS);
    printf("## Writes\n\n");
    bench_print_machine(raw, "pool_size 1");
    printf("median latency per call (median of %d interleaved runs of %d calls), "
           "microseconds, one connection each, same table and trigger\n\n",
           REPS, N);
    printf("| what | raw libpq | setcache | ratio | target |\n|---|---|---|---|---|\n");
    printf("| one upsert (set_int) | %.1f | %.1f | %.2fx | <= 1.15x |\n", mrs, mls, mls / mrs);
    printf("| 20 keys (set_many vs BEGIN + 20 upserts + COMMIT) | %.1f | %.1f | %.2fx | - |\n", mrm,
           mlm, mlm / mrm);
    const char *tp = getenv("SETCACHE_BENCH_TSV");
    FILE *t = tp ? fopen(tp, "a") : NULL;
    if (t) {
        fprintf(t, "writes\tset_int_us\t1\t%.1f\t%.1f\t%.3f\n", mrs, mls, mls / mrs);
        fprintf(t, "writes\tset_many20_us\t1\t%.1f\t%.1f\t%.3f\n", mrm, mlm, mlm / mrm);
    }
    setcache_close(c);

    /* cold start and memory */
    PQclear(PQexec(raw, "INSERT INTO " SCHEMA ".settings (entity_type, entity_id, key, value) "
                        "SELECT 'expert', e::text, 'strategy_param_' || k || '_threshold', "
                        "(e * k % 1000)::text || '.25' FROM generate_series(1, 10000) e, "
                        "generate_series(1, 30) k ON CONFLICT DO NOTHING"));
    PGresult *r = PQexec(raw, "SELECT count(*), sum(octet_length(key) + octet_length(value)) "
                              "FROM " SCHEMA ".settings WHERE entity_type = 'expert'");
    long rows = atol(PQgetvalue(r, 0, 0));
    long kvbytes = atol(PQgetvalue(r, 0, 1));
    PQclear(r);
    o.pool_size = 1;
    if (setcache_open(&c, &o) != SETCACHE_OK) {
        return 1;
    }
    usleep(300000);
    long before = rss_kb();
    double t0 = now_us();
    if (setcache_preload(c, "expert") != SETCACHE_OK) {
        fprintf(stderr, "preload: %s\n", setcache_errmsg());
        return 1;
    }
    double ms = (now_us() - t0) / 1000;
    long after = rss_kb();
    setcache_stats st;
    setcache_get_stats(c, &st);
    double per = ((after - before) * 1024.0 - (double)kvbytes) / (double)st.entries;
    printf("\n## Cold start and memory\n\n");
    printf("| what | value | target |\n|---|---|---|\n");
    printf("| setcache_preload of %llu entities, %llu settings (one streamed query) | %.0f ms | "
           "< 2000 ms for 300,000 |\n",
           (unsigned long long)st.entities, (unsigned long long)st.entries, ms);
    printf("| resident memory per cached setting beyond its key and value (%ld bytes) | %.0f "
           "bytes | <= 96 |\n",
           kvbytes / (rows ? rows : 1), per);
    if (t) {
        fprintf(t, "coldstart\tpreload_ms\t%llu\t%.0f\n", (unsigned long long)st.entries, ms);
        fprintf(t, "memory\toverhead_bytes_per_setting\t%llu\t%.0f\n",
                (unsigned long long)st.entries, per);
        fclose(t);
    }
    setcache_close(c);
    PQclear(PQexec(raw, "DROP SCHEMA IF EXISTS " SCHEMA " CASCADE"));
    PQfinish(raw);
    return 0;
}
