/*
 * tiers.c - the motivating workload at three sizes, with a writer.
 *
 * Tiers: the motivating system (3 accounts x 6 keys, 26 experts x 52-112
 * keys, 30 app keys), the same with 100 experts, and with 1,000 experts
 * (about 100,000 settings). In each, 16 reader threads read stored settings,
 * Zipf (s = 1) over the keys of an entity, uniform over entities, while a
 * writer process changes a random expert setting 10 times a second with
 * plain SQL (the triggers notify every cache). Beside setcache, in the same
 * run and on the same keys: the floor (a bare uthash lookup and copy, no
 * lock) and the fixed old way (a prepared SELECT per read, 16 threads with a
 * connection each). Reports reads/s, latency, the writes made and the server
 * statements that were not the writer's (the cache's reloads of what it
 * changed). Needs SETCACHE_TEST_CONNINFO.
 */
#include <libpq-fe.h>
#include "setcache.h"
#include "workload.h"

#include "internal.h" /* the floor hashes like the library */
#include "common.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

#define SCHEMA "setcache_tiers"
#define NSEQ (1 << 20)
#define THREADS 16
#define REPS 3

typedef bench_target target;
typedef bench_result result;

static target *targets;
static int ntargets;
static int *seq;
static const char *conninfo;
static FILE *tsv;

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "tiers: %s: %s\n", what, msg);
    exit(1);
}

/* ---- the writer process: forked before any thread or connection ---- */

static int cmd_fd[2], ack_fd[2];

/* Until told to stop: every 100 ms, a random stored key of a random expert
 * of the tier gets a new value. Answers the number of rows changed. */
static void writer_main(void)
{
    PGconn *w = PQconnectdb(conninfo);
    if (PQstatus(w) != CONNECTION_OK) {
        _exit(2);
    }
    for (;;) {
        int nexperts;
        if (read(cmd_fd[0], &nexperts, sizeof nexperts) != (ssize_t)sizeof nexperts ||
            nexperts <= 0) {
            break;
        }
        unsigned s = 777u + (unsigned)nexperts;
        long done = 0;
        double next = bench_now_ms();
        for (;;) {
            struct timeval tv = {0, 0};
            fd_set fds;
            FD_ZERO(&fds);
            FD_SET(cmd_fd[0], &fds);
            double wait = next - bench_now_ms();
            if (wait > 0) {
                tv.tv_usec = (long)(wait * 1000);
            }
            if (select(cmd_fd[0] + 1, &fds, NULL, NULL, &tv) > 0) {
                int stop;
                if (read(cmd_fd[0], &stop, sizeof stop) != (ssize_t)sizeof stop) {
                    _exit(3);
                }
                break;
            }
            next += 100;
            int e = (int)(wl_rand(&s) % (unsigned)nexperts);
            char id[16], key[64], val[32];
            snprintf(id, sizeof id, "%d", e < WL_EXPERTS ? wl_ids[e] : 100 + e);
            wl_expert_key((int)(wl_rand(&s) % 13), key, sizeof key); /* always stored */
            snprintf(val, sizeof val, "%ld", done);
            const char *v[3] = {val, id, key};
            PGresult *r = PQexecParams(w,
                                       "UPDATE " SCHEMA ".settings SET value = $1 WHERE "
                                       "entity_type = 'expert' AND entity_id = $2 AND key = $3",
                                       3, NULL, v, NULL, NULL, 0);
            if (PQresultStatus(r) == PGRES_COMMAND_OK && atoi(PQcmdTuples(r)) == 1) {
                done++;
            }
            PQclear(r);
        }
        if (write(ack_fd[1], &done, sizeof done) != (ssize_t)sizeof done) {
            _exit(4);
        }
    }
    PQfinish(w);
    _exit(0);
}

static void writer_start(int nexperts)
{
    if (write(cmd_fd[1], &nexperts, sizeof nexperts) != (ssize_t)sizeof nexperts) {
        die("writer", "start");
    }
}

static long writer_stop(void)
{
    int stop = 0;
    long done = 0;
    if (write(cmd_fd[1], &stop, sizeof stop) != (ssize_t)sizeof stop ||
        read(ack_fd[0], &done, sizeof done) != (ssize_t)sizeof done) {
        die("writer", "stop");
    }
    return done;
}

/* ---- one tier's data ---- */

/* The motivating shapes with n experts: the motivating system's 26, and
 * more with ids from 126 up, written through the library. */
static void load_tier(setcache *c, int nexperts)
{
    if (wl_load(c) != SETCACHE_OK) { /* accounts, the 26 experts, app keys */
        die("load", setcache_errmsg());
    }
    unsigned seed = 4242;
    char keys[128][64], vals[128][160];
    setcache_kv kv[128];
    for (int e = WL_EXPERTS; e < nexperts; e++) {
        char id[16];
        snprintf(id, sizeof id, "%d", 100 + e);
        int nk = wl_key_counts[e % 9], n = 0;
        for (int k = 0; k < nk; k++) {
            if (k >= 13 && wl_rand(&seed) % 100 >= 80) {
                continue;
            }
            wl_expert_key(k, keys[n], sizeof keys[n]);
            wl_value(&seed, k, vals[n], sizeof vals[n]);
            kv[n].key = keys[n];
            kv[n].value = vals[n];
            n++;
        }
        if (setcache_set_many(c, "expert", id, kv, (size_t)n) != SETCACHE_OK) {
            die("load", setcache_errmsg());
        }
    }
}

/* ---- the floor (common.h) ---- */
static bench_floor_e *floor_tab;

/* ---- runs ---- */
typedef struct worker {
    setcache *c;
    bool floor;
    int start;
    double secs_wanted, secs;
    long n, errors;
    atomic_int *go;
    double *lat;
    int nlat;
    uint64_t sink;
} __attribute__((aligned(128))) worker;

static double timer_ns;

static void *read_worker(void *p)
{
    worker *w = p;
    char buf[512];
    while (!atomic_load(w->go)) {
    }
    long errors = 0, i = 0;
    int nlat = 0;
    uint64_t sink = 0;
    double t0 = bench_now_ms(), end = t0 + w->secs_wanted * 1000;
    for (;; i++) {
        if ((i & 1023) == 0 && bench_now_ms() >= end) {
            break;
        }
        const target *t = &targets[seq[(w->start + i) & (NSEQ - 1)]];
        bool sample = (i & 63) == 0 && nlat < 200000;
        struct timespec a, b;
        if (sample) {
            clock_gettime(CLOCK_MONOTONIC, &a);
        }
        if (w->floor) {
            if (!bench_floor_read(floor_tab, t, buf, sizeof buf)) {
                errors++;
            }
        } else if (setcache_get_string(w->c, t->type, t->id, t->key, buf, sizeof buf, NULL) !=
                   SETCACHE_OK) {
            errors++;
        }
        if (sample) {
            clock_gettime(CLOCK_MONOTONIC, &b);
            double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec) - timer_ns;
            w->lat[nlat++] = ns > 0 ? ns : 0;
        }
        sink += (unsigned char)buf[0];
        __asm__ volatile("" : : "r"(sink) : "memory");
    }
    w->secs = (bench_now_ms() - t0) / 1000;
    w->n = i;
    w->errors = errors;
    w->nlat = nlat;
    w->sink = sink;
    return NULL;
}

static result run(setcache *c, bool floor, double secs)
{
    static worker w[THREADS];
    pthread_t th[THREADS];
    atomic_int go = 0;
    for (int i = 0; i < THREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].c = c;
        w[i].floor = floor;
        w[i].start = i * 7919;
        w[i].secs_wanted = secs;
        w[i].go = &go;
        w[i].lat = malloc(200000 * sizeof(double));
        pthread_create(&th[i], NULL, read_worker, &w[i]);
    }
    atomic_store(&go, 1);
    double rate = 0;
    double *lat[THREADS];
    int nlat[THREADS];
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        if (w[i].errors) {
            die("reads", "unexpected read errors");
        }
        rate += w[i].n / w[i].secs;
        lat[i] = w[i].lat;
        nlat[i] = w[i].nlat;
    }
    return bench_percentiles(rate, lat, nlat, THREADS);
}

/* ---- the fixed old way: a prepared SELECT per read, a connection each ---- */
typedef struct oldw {
    double secs;
    long n;
    int start;
} oldw;

static void *old_worker(void *p)
{
    oldw *o = p;
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        die("connect", PQerrorMessage(c));
    }
    PQclear(PQprepare(c, "get",
                      "SELECT value FROM " SCHEMA ".settings WHERE entity_type = $1 AND "
                      "entity_id = $2 AND key = $3",
                      3, NULL));
    double t0 = bench_now_ms();
    long i = 0;
    while (bench_now_ms() - t0 < o->secs * 1000) {
        const target *t = &targets[seq[(o->start + i * 13) & (NSEQ - 1)]];
        const char *v[3] = {t->type, t->id, t->key};
        PGresult *r = PQexecPrepared(c, "get", 3, v, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            die("old way", PQerrorMessage(c));
        }
        PQclear(r);
        i++;
    }
    o->secs = (bench_now_ms() - t0) / 1000;
    o->n = i;
    PQfinish(c);
    return NULL;
}

static double run_old(double secs)
{
    pthread_t th[THREADS];
    oldw o[THREADS];
    for (int i = 0; i < THREADS; i++) {
        o[i] = (oldw){secs, 0, i * 7919};
        pthread_create(&th[i], NULL, old_worker, &o[i]);
    }
    double rate = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        rate += o[i].n / o[i].secs;
    }
    return rate;
}

/* statements of this schema that were neither the writer's UPDATEs nor
 * NOTIFYs: what the caches sent */
static long long cache_statements(PGconn *mon)
{
    PGresult *r = PQexec(mon, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query "
                              "LIKE '%" SCHEMA "%' AND query NOT LIKE 'UPDATE%' AND query NOT "
                              "LIKE 'NOTIFY%' AND query NOT LIKE '%pg_stat_statements%'");
    long long v = PQresultStatus(r) == PGRES_TUPLES_OK ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

int main(void)
{
    conninfo = bench_conninfo("bench");
    if (pipe(cmd_fd) != 0 || pipe(ack_fd) != 0) {
        die("pipe", "failed");
    }
    pid_t writer = fork();
    if (writer == 0) {
        writer_main();
    }
    if (writer < 0) {
        die("fork", "failed");
    }
    const char *tp = getenv("SETCACHE_BENCH_TSV");
    tsv = tp ? fopen(tp, "a") : NULL;
    seq = malloc(NSEQ * sizeof *seq);
    PGconn *mon = PQconnectdb(conninfo);
    if (PQstatus(mon) != CONNECTION_OK) {
        die("connect", PQerrorMessage(mon));
    }
    struct timespec a;
    double t0 = bench_now_ms();
    for (int i = 0; i < 100000; i++) {
        clock_gettime(CLOCK_MONOTONIC, &a);
    }
    timer_ns = (bench_now_ms() - t0) / 100000 * 1e6;

    printf("## The motivating workload, three sizes, with a writer\n\n");
    bench_print_machine(mon, "defaults; every tier preloaded");
    printf("%d reader threads; Zipf keys, uniform entities; a writer process changes a random "
           "expert setting 10 times a second with plain SQL meanwhile; each read figure the "
           "median of %d interleaved runs of 1.5 s; latency sampled 1 in 64\n\n",
           THREADS, REPS);
    printf("| tier | settings | what | reads/s | p50 ns | p99 ns | p99.9 ns | writes | cache "
           "statements |\n|---|---|---|---|---|---|---|---|---|\n");
    const int tiers[3] = {WL_EXPERTS, 100, 1000};
    for (int ti = 0; ti < 3; ti++) {
        int nexp = tiers[ti];
        setcache_options o;
        bench_fresh(mon, SCHEMA, conninfo, &o);
        setcache *c;
        if (setcache_open(&c, &o) != SETCACHE_OK) {
            die("open", setcache_errmsg());
        }
        load_tier(c, nexp);
        setcache_close(c); /* a fresh process's view: start cold */
        o.create_schema = false;
        if (setcache_open(&c, &o) != SETCACHE_OK) {
            die("open", setcache_errmsg());
        }
        free(targets);
        targets = bench_targets(mon, SCHEMA, &ntargets);
        int nent = bench_zipf_walk(targets, ntargets, seq, NSEQ);
        if (setcache_preload(c, "expert") != SETCACHE_OK ||
            setcache_preload(c, "account") != SETCACHE_OK ||
            setcache_preload(c, "app") != SETCACHE_OK) {
            die("preload", setcache_errmsg());
        }
        bench_floor_build(&floor_tab, c, targets, ntargets);
        writer_start(nexp);
        long long st0 = cache_statements(mon);
        setcache_stats s0, s1;
        setcache_get_stats(c, &s0);
        result fl[REPS], ca[REPS];
        for (int rep = 0; rep < REPS; rep++) {
            fl[rep] = run(c, true, 1.5);
            ca[rep] = run(c, false, 1.5);
        }
        long long st1 = cache_statements(mon);
        setcache_get_stats(c, &s1);
        double old = run_old(1.5);
        long writes = writer_stop();
        result f = bench_median_run(fl, REPS), m = bench_median_run(ca, REPS);
        char label[32];
        snprintf(label, sizeof label, "%d experts (%d entities)", nexp, nent);
        printf("| %s | %d | floor: bare uthash lookup + copy, no lock | %.0f | %.0f | %.0f | %.0f "
               "| | |\n",
               label, ntargets, f.rate, f.p50, f.p99, f.p999);
        printf("| %s | %d | setcache_get_string (cached) | %.0f | %.0f | %.0f | %.0f | %ld | "
               "%lld (db_queries %llu) |\n",
               label, ntargets, m.rate, m.p50, m.p99, m.p999, writes, st1 - st0,
               (unsigned long long)(s1.db_queries - s0.db_queries));
        printf("| %s | %d | old fixed: prepared SELECT per read, a connection per thread | %.0f "
               "| - | - | - | | |\n",
               label, ntargets, old);
        printf("| %s | %d | ratios | cached/floor time %.2fx; cached/old %.0fx | | | | | |\n",
               label, ntargets, f.rate / m.rate, m.rate / old);
        if (tsv) {
            fprintf(tsv, "tiers\t%d\tfloor\t%.0f\t%.0f\t%.0f\t%.0f\n", nexp, f.rate, f.p50, f.p99,
                    f.p999);
            fprintf(tsv, "tiers\t%d\tcached\t%.0f\t%.0f\t%.0f\t%.0f\t%ld\t%lld\n", nexp, m.rate,
                    m.p50, m.p99, m.p999, writes, st1 - st0);
            fprintf(tsv, "tiers\t%d\told_prepared\t%.0f\n", nexp, old);
        }
        setcache_close(c);
    }
    int end = 0;
    if (write(cmd_fd[1], &end, sizeof end) != (ssize_t)sizeof end) {
        die("writer", "end");
    }
    int status;
    waitpid(writer, &status, 0);
    if (tsv) {
        fclose(tsv);
    }
    PQclear(PQexec(mon, "DROP SCHEMA IF EXISTS " SCHEMA " CASCADE"));
    PQfinish(mon);
    return 0;
}
