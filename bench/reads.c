/*
 * reads.c - cached reads against the floor and the old ways, in one run.
 *
 *   floor       a bare uthash lookup and copy of the same three strings, no lock
 *   same tables the library's own two-level table (entities, then an sc_etable
 *               of entries), looked up and copied with no lock and no API:
 *               what the lock and the call itself cost
 *   setcache    setcache_get_string / setcache_get_int on warm entities
 *   old fixed   one parameterised SELECT per read over a persistent connection
 *               (PQexecParams, and the prepared-statement variant)
 *   old broken  connect, query, disconnect per read
 *
 * Keys follow the motivating workload: Zipf (s = 1) over the keys of an
 * entity, uniform over entities. Prints a Markdown table and appends TSV rows
 * to $SETCACHE_BENCH_TSV when set. Needs SETCACHE_TEST_CONNINFO.
 */
#include <libpq-fe.h>
#include "setcache.h"
#include "workload.h"

#include "internal.h" /* the floors hash like the library and use its table */
#include "common.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA "setcache_bench"
#define NSEQ (1 << 20)

typedef bench_target target;
typedef bench_result result;

static target *targets;
static int ntargets;
static int *seq;     /* indices into targets, NSEQ of them */
static int *seq_int; /* the same walk over the integer-valued settings only */
static const char *conninfo;
static FILE *tsv;

#define now_s bench_now_s
#define die bench_die

/* ---- the floor: one uthash table, no lock (common.h) ---- */
static bench_floor_e *floor_tab;

/* ---- the library's own tables, no lock ---- */
typedef struct same_e {
    UT_hash_handle hh;
    sc_etable entries;
    size_t klen;
    char k[];
} same_e;
static same_e *same_tab[SC_NSHARDS]; /* sharded by entity hash, as the library's */

static size_t entity_key(char *out, const target *t)
{
    size_t a = strlen(t->type), b = strlen(t->id);
    memcpy(out, t->type, a + 1);
    memcpy(out + a + 1, t->id, b + 1);
    return a + b + 2;
}

static void same_add(const target *t, const char *value)
{
    char k[400];
    size_t kl = entity_key(k, t);
    unsigned h = setcache__hash2(t->type, strlen(t->type), t->id, strlen(t->id));
    same_e **tab = &same_tab[(h >> 20) % SC_NSHARDS];
    same_e *e;
    HASH_FIND_BYHASHVALUE(hh, *tab, k, kl, h, e);
    if (!e) {
        e = calloc(1, sizeof *e + kl);
        memcpy(e->k, k, kl);
        e->klen = kl;
        HASH_ADD_KEYPTR_BYHASHVALUE(hh, *tab, e->k, e->klen, h, e);
    }
    sc_entry *old;
    sc_entry *en = setcache__entry_new(t->key, strlen(t->key), value, strlen(value), 1, false);
    if (!en || setcache__et_put(&e->entries, en, &old) != SETCACHE_OK) {
        fprintf(stderr, "bench: out of memory\n");
        exit(1);
    }
    free(old);
}

/* ---- runs ---- */
typedef enum { RUN_FLOOR, RUN_SAME, RUN_STRING, RUN_INT } run_kind;
typedef struct worker {
    setcache *c;
    run_kind kind;
    int start;
    long n;
    atomic_int *go;
    double secs;
    long errors;
    double *lat; /* sampled latencies, ns */
    int nlat;
    volatile uint64_t sink;
} __attribute__((aligned(128))) worker; /* each its own pair of cache lines */

static double timer_overhead_ns;

static void *read_worker(void *p)
{
    worker *w = p;
    char buf[512], k[400];
    while (!atomic_load(w->go)) {
    }
    /* the loop writes only locals: workers share no written cache line */
    long errors = 0;
    int nlat = 0;
    uint64_t sink = 0;
    double *lat = w->lat;
    double t0 = now_s();
    for (long i = 0; i < w->n; i++) {
        const int *sq = w->kind == RUN_INT ? seq_int : seq;
        const target *t = &targets[sq[(w->start + i) & (NSEQ - 1)]];
        bool sample = (i & 63) == 0 && nlat < 200000;
        struct timespec a, b;
        if (sample) {
            clock_gettime(CLOCK_MONOTONIC, &a);
        }
        if (w->kind == RUN_FLOOR) {
            if (!bench_floor_read(floor_tab, t, buf, sizeof buf)) {
                errors++;
            }
        } else if (w->kind == RUN_SAME) {
            size_t tl = strlen(t->type), il = strlen(t->id);
            unsigned h = setcache__hash2(t->type, tl, t->id, il);
            size_t kl = entity_key(k, t);
            same_e *e;
            HASH_FIND_BYHASHVALUE(hh, same_tab[(h >> 20) % SC_NSHARDS], k, kl, h, e);
            size_t klen = strlen(t->key);
            const sc_entry *en =
                e ? setcache__et_find(&e->entries, t->key, klen, setcache__hash(t->key, klen))
                  : NULL;
            if (en && en->vlen < sizeof buf) {
                bench_copy(buf, SC_VAL(en), en->vlen + 1);
            } else {
                errors++;
            }
        } else if (w->kind == RUN_STRING) {
            if (setcache_get_string(w->c, t->type, t->id, t->key, buf, sizeof buf, NULL) != 0) {
                errors++;
            }
        } else {
            int64_t v = 0;
            if (setcache_get_int(w->c, t->type, t->id, t->key, &v) != SETCACHE_OK) {
                errors++;
            }
            sink += (uint64_t)v;
        }
        if (sample) {
            clock_gettime(CLOCK_MONOTONIC, &b);
            double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec) - timer_overhead_ns;
            lat[nlat++] = ns > 0 ? ns : 0;
        }
        sink += (unsigned char)buf[0];
        __asm__ volatile("" : : "r"(sink) : "memory"); /* keep the copy */
    }
    w->secs = now_s() - t0;
    w->errors = errors;
    w->nlat = nlat;
    w->sink = sink;
    return NULL;
}

#define cmp_d bench_cmp_d

static result run_reads(setcache *c, run_kind kind, int threads, long per_thread)
{
    pthread_t th[64];
    worker w[64];
    atomic_int go = 0;
    for (int i = 0; i < threads; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].c = c;
        w[i].kind = kind;
        w[i].start = i * 7919;
        w[i].n = per_thread;
        w[i].go = &go;
        w[i].lat = malloc(200000 * sizeof(double));
        pthread_create(&th[i], NULL, read_worker, &w[i]);
    }
    double t0 = now_s();
    atomic_store(&go, 1);
    double total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (w[i].errors) {
            die("reads", "unexpected read errors");
        }
    }
    total = now_s() - t0;
    double *lat[64];
    int nlat[64];
    for (int i = 0; i < threads; i++) {
        lat[i] = w[i].lat;
        nlat[i] = w[i].nlat;
    }
    return bench_percentiles(threads * (double)per_thread / total, lat, nlat, threads);
}

/* ---- the old ways ---- */
enum { OLD_PARAMS, OLD_PREPARED, OLD_BROKEN };
#define OLD_SAMPLES 200000

typedef struct oldw {
    int mode;
    int start;
    double secs;
    long n;
    double *lat; /* every query's latency, ns */
    int nlat;
} __attribute__((aligned(128))) oldw;

static const char *const old_sql = "SELECT value FROM " SCHEMA ".settings WHERE entity_type = $1 "
                                   "AND entity_id = $2 AND key = $3";

static PGconn *old_connect(void)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        die("connect", PQerrorMessage(c));
    }
    return c;
}

static void old_query(PGconn *c, int mode, const target *t)
{
    const char *v[3] = {t->type, t->id, t->key};
    PGresult *r = mode == OLD_PREPARED ? PQexecPrepared(c, "get", 3, v, NULL, NULL, 0)
                                       : PQexecParams(c, old_sql, 3, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        die("old way", PQerrorMessage(c));
    }
    PQclear(r);
}

static void *old_worker(void *p)
{
    oldw *o = p;
    PGconn *c = NULL;
    if (o->mode != OLD_BROKEN) {
        c = old_connect();
        if (o->mode == OLD_PREPARED) {
            PQclear(PQprepare(c, "get", old_sql, 3, NULL));
        }
    }
    double t0 = now_s();
    long i = 0;
    while (now_s() - t0 < o->secs) {
        const target *t = &targets[seq[(o->start + i * 13) & (NSEQ - 1)]];
        double a = now_s();
        if (o->mode == OLD_BROKEN) { /* the session-per-access pattern */
            PGconn *b = old_connect();
            old_query(b, OLD_PARAMS, t);
            PQfinish(b);
        } else {
            old_query(c, o->mode, t);
        }
        if (o->nlat < OLD_SAMPLES) {
            o->lat[o->nlat++] = (now_s() - a) * 1e9;
        }
        i++;
    }
    o->secs = now_s() - t0;
    o->n = i;
    PQfinish(c);
    return NULL;
}

/* threads clients, a connection each (a new one per read when broken) */
static result run_old(int threads, int mode, double secs)
{
    pthread_t th[16];
    static oldw o[16];
    for (int i = 0; i < threads; i++) {
        memset(&o[i], 0, sizeof o[i]);
        o[i].mode = mode;
        o[i].start = i * 7919;
        o[i].secs = secs;
        o[i].lat = malloc(OLD_SAMPLES * sizeof(double));
        pthread_create(&th[i], NULL, old_worker, &o[i]);
    }
    double rate = 0;
    double *lat[16];
    int nlat[16];
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        rate += o[i].n / o[i].secs;
        lat[i] = o[i].lat;
        nlat[i] = o[i].nlat;
    }
    return bench_percentiles(rate, lat, nlat, threads);
}

static long long server_statements(PGconn *mon)
{
    PGresult *r = PQexec(mon, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query "
                              "LIKE '%" SCHEMA "%' AND query NOT LIKE 'NOTIFY%' AND query NOT "
                              "LIKE '%pg_stat_statements%'");
    long long v = PQresultStatus(r) == PGRES_TUPLES_OK ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

static void row(const char *name, int threads, double rate, double p50, double p99, double p999,
                const char *note)
{
    if (p50 >= 0) {
        printf("| %-38s | %3d | %14.0f | %8.1f | %8.1f | %8.1f | %s |\n", name, threads, rate, p50,
               p99, p999, note);
    } else {
        printf("| %-38s | %3d | %14.0f | %8s | %8s | %8s | %s |\n", name, threads, rate, "-", "-",
               "-", note);
    }
    if (tsv) {
        fprintf(tsv, "reads\t%s\t%d\t%.0f\t%.1f\t%.1f\t%.1f\n", name, threads, rate, p50, p99,
                p999);
    }
}

int main(void)
{
    conninfo = bench_conninfo("bench");
    const char *tp = getenv("SETCACHE_BENCH_TSV");
    tsv = tp ? fopen(tp, "a") : NULL;
    PGconn *mon = PQconnectdb(conninfo);
    setcache_options o;
    bench_fresh(mon, SCHEMA, conninfo, &o);
    setcache *c;
    if (setcache_open(&c, &o) != SETCACHE_OK) {
        die("open", setcache_errmsg());
    }
    if (wl_load(c) != SETCACHE_OK) {
        die("workload", setcache_errmsg());
    }
    /* the stored keys, with Zipf weights per entity */
    targets = bench_targets(mon, SCHEMA, &ntargets);
    seq = malloc(NSEQ * sizeof *seq);
    bench_zipf_walk(targets, ntargets, seq, NSEQ);
    /* the integer walk: the same sequence with non-integer settings skipped */
    seq_int = malloc(NSEQ * sizeof *seq_int);
    int ni = 0;
    for (int round = 0; ni < NSEQ && round < 64; round++) {
        for (int i = 0; i < NSEQ && ni < NSEQ; i++) {
            int64_t v;
            const target *t = &targets[seq[i]];
            if (round == 0 && i < 4) {
                (void)t;
            }
            if (setcache_get_int(c, t->type, t->id, t->key, &v) == SETCACHE_OK) {
                seq_int[ni++] = seq[i];
            }
        }
    }
    /* the floors and a warm cache */
    bench_floor_build(&floor_tab, c, targets, ntargets);
    for (int i = 0; i < ntargets; i++) {
        const bench_floor_e *e;
        char k[400];
        size_t kl = bench_composite(k, &targets[i]);
        HASH_FIND(hh, floor_tab, k, kl, e);
        same_add(&targets[i], e->value);
    }
    struct timespec a, b;
    double t0 = now_s();
    for (int i = 0; i < 100000; i++) {
        clock_gettime(CLOCK_MONOTONIC, &a);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    timer_overhead_ns = (now_s() - t0) / 100000 * 1e9;

    printf("## Reads\n\n");
    bench_print_machine(mon, "defaults");
    printf("%d settings (the motivating workload), Zipf keys, uniform entities; each figure the "
           "median of 5 interleaved runs; latency sampled 1 in 64 (timer overhead %.0f ns "
           "subtracted)\n\n",
           ntargets, timer_overhead_ns);
    printf("| %-38s | thr | %14s | %8s | %8s | %8s | note |\n", "what", "reads/s", "p50 ns",
           "p99 ns", "p99.9 ns");
    printf("|---|---|---|---|---|---|---|\n");

    /* Each figure is the median of REPS runs, interleaved (floor, string,
     * int, floor, ...) so that noise from other tenants hits all alike. */
    enum { REPS = 5 };
    long per = 1500000;
    long long st0 = server_statements(mon);
    setcache_stats s0, s1;
    setcache_get_stats(c, &s0);
    int thr[] = {1, 2, 4, 8, 16};
    double floor1 = 0, floor2 = 0, str1 = 0, str2 = 0, str16 = 0, same1 = 0;
    for (int ti = 0; ti < 5; ti++) {
        int n = thr[ti];
        long each = per / (n > 2 ? n / 2 : 1);
        result runs[4][REPS];
        for (int rep = 0; rep < REPS; rep++) {
            runs[0][rep] = run_reads(c, RUN_FLOOR, n, each);
            runs[1][rep] = run_reads(c, RUN_STRING, n, each);
            runs[2][rep] = run_reads(c, RUN_INT, n, each);
            runs[3][rep] = run_reads(c, RUN_SAME, n, each);
        }
        result med[4];
        for (int k = 0; k < 4; k++) {
            med[k] = bench_median_run(runs[k], REPS);
        }
        row("floor: bare uthash lookup + copy", n, med[0].rate, med[0].p50, med[0].p99, med[0].p999,
            "no lock");
        row("same tables as setcache, no lock", n, med[3].rate, med[3].p50, med[3].p99, med[3].p999,
            "no lock, no API");
        row("setcache_get_string (cached)", n, med[1].rate, med[1].p50, med[1].p99, med[1].p999,
            "");
        row("setcache_get_int (cached)", n, med[2].rate, med[2].p50, med[2].p99, med[2].p999, "");
        if (n == 1) {
            floor1 = med[0].rate;
            str1 = med[1].rate;
            same1 = med[3].rate;
        } else if (n == 2) {
            floor2 = med[0].rate;
            str2 = med[1].rate;
        } else if (n == 16) {
            str16 = med[1].rate;
        }
    }
    setcache_get_stats(c, &s1);
    long long st_cached = server_statements(mon) - st0;
    /* the old ways, 1-16 clients, a second each; their statements counted */
    static const char *const old_names[3] = {"old fixed: SELECT per read",
                                             "old fixed: prepared SELECT per read",
                                             "old broken: connect+query+close"};
    static const char *const old_notes[3] = {
        "a persistent connection each", "a persistent connection each", "a session per access"};
    double oldp1 = 0, oldp2 = 0;
    for (int mode = 0; mode < 3; mode++) {
        for (int ti = 0; ti < 5; ti++) {
            long long q0 = server_statements(mon);
            result x = run_old(thr[ti], mode, 1.0);
            long long q = server_statements(mon) - q0;
            char note[96];
            snprintf(note, sizeof note, "%s; %lld server statements", old_notes[mode], q);
            row(old_names[mode], thr[ti], x.rate, x.p50, x.p99, x.p999, note);
            if (mode == OLD_PREPARED && thr[ti] == 1) {
                oldp1 = x.rate;
            } else if (mode == OLD_PREPARED && thr[ti] == 2) {
                oldp2 = x.rate;
            }
        }
    }
    double floorp2 = floor2;
    printf("\nserver statements during the cached read phase: %lld (pg_stat_statements); "
           "db_queries %llu\n",
           st_cached, (unsigned long long)(s1.db_queries - s0.db_queries));
    printf("\n| ratio | value | target |\n|---|---|---|\n");
    printf("| cached 1-thread time / floor time | %.2fx | <= 1.5x |\n", floor1 / str1);
    printf("| cached 2 threads / 1 thread | %.2fx | >= 1.8x |\n", str2 / str1);
    printf("| cached scaling / floor scaling (2 threads) | %.0f%% | >= 90%% |\n",
           100 * (str2 / str1) / (floor2 / floor1));
    printf("| cached 16 threads / 2 threads | %.2fx | >= 1.0x |\n", str16 / str2);
    printf("| cached / prepared SELECT, 1 thread | %.0fx | >= 600x |\n", str1 / oldp1);
    printf("| cached / prepared SELECT, 2 threads | %.0fx | >= 200x |\n", str2 / oldp2);
    printf("| floor / prepared SELECT, 1 thread | %.0fx | (physical reference) |\n",
           floor1 / oldp1);
    printf("| floor / prepared SELECT, 2 threads | %.0fx | (physical reference) |\n",
           floorp2 / oldp2);
    printf("| floor 2 threads / 1 thread | %.2fx | (physical reference) |\n", floor2 / floor1);
    printf("| cached 1-thread time / same tables without lock or API | %.2fx | (what the lock "
           "and the call cost) |\n",
           same1 / str1);
    if (tsv) {
        fprintf(tsv, "ratio\tcached_over_floor_time_1t\t1\t%.3f\n", floor1 / str1);
        fprintf(tsv, "ratio\tcached_over_same_tables_time_1t\t1\t%.3f\n", same1 / str1);
        fprintf(tsv, "ratio\tscaling_2t\t2\t%.3f\n", str2 / str1);
        fprintf(tsv, "ratio\tvs_prepared_1t\t1\t%.1f\n", str1 / oldp1);
        fprintf(tsv, "ratio\tvs_prepared_2t\t2\t%.1f\n", str2 / oldp2);
        fprintf(tsv, "statements\tcached_read_phase\t0\t%lld\n", st_cached);
        fclose(tsv);
    }
    setcache_close(c);
    PQclear(PQexec(mon, "DROP SCHEMA IF EXISTS " SCHEMA " CASCADE"));
    PQfinish(mon);
    return 0;
}
