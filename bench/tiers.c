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

typedef struct target {
    const char *type;
    char id[16];
    char key[64];
} target;

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

/* The stored keys of the tier's entities and a Zipf walk over them. */
static int build_walk(PGconn *mon)
{
    PGresult *r = PQexec(mon, "SELECT entity_type, entity_id, key FROM " SCHEMA
                              ".settings ORDER BY entity_type, entity_id, key");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        die("walk", PQerrorMessage(mon));
    }
    ntargets = PQntuples(r);
    free(targets);
    targets = calloc((size_t)ntargets, sizeof *targets);
    int *first = calloc((size_t)ntargets + 1, sizeof *first);
    int nent = 0;
    for (int i = 0; i < ntargets; i++) {
        const char *type = PQgetvalue(r, i, 0);
        targets[i].type = strcmp(type, "expert") == 0    ? "expert"
                          : strcmp(type, "account") == 0 ? "account"
                                                         : "app";
        snprintf(targets[i].id, sizeof targets[i].id, "%s", PQgetvalue(r, i, 1));
        snprintf(targets[i].key, sizeof targets[i].key, "%s", PQgetvalue(r, i, 2));
        if (i == 0 || strcmp(targets[i].id, targets[i - 1].id) != 0 ||
            targets[i].type != targets[i - 1].type) {
            first[nent++] = i;
        }
    }
    first[nent] = ntargets;
    PQclear(r);
    unsigned s = 12345;
    for (int i = 0; i < NSEQ; i++) {
        int e = (int)(wl_rand(&s) % (unsigned)nent);
        int n = first[e + 1] - first[e];
        double hn = 0;
        for (int k = 1; k <= n; k++) {
            hn += 1.0 / k;
        }
        double u = (wl_rand(&s) / (double)0xffffff) * hn, acc = 0;
        int k = 0;
        for (; k < n - 1; k++) {
            acc += 1.0 / (k + 1);
            if (acc >= u) {
                break;
            }
        }
        seq[i] = first[e] + k;
    }
    free(first);
    return nent;
}

/* ---- the floor ---- */
typedef struct floor_e {
    UT_hash_handle hh;
    char *value;
    size_t vlen;
    size_t klen;
    char k[];
} floor_e;
static floor_e *floor_tab;

static size_t composite(char *out, const target *t)
{
    size_t a = strlen(t->type), b = strlen(t->id), c = strlen(t->key);
    memcpy(out, t->type, a + 1);
    memcpy(out + a + 1, t->id, b + 1);
    memcpy(out + a + b + 2, t->key, c);
    return a + b + 2 + c;
}

static void floor_build(setcache *c)
{
    floor_e *e, *tmp;
    HASH_ITER(hh, floor_tab, e, tmp)
    {
        HASH_DEL(floor_tab, e);
        free(e->value);
        free(e);
    }
    for (int i = 0; i < ntargets; i++) {
        char k[400];
        size_t kl = composite(k, &targets[i]);
        e = malloc(sizeof *e + kl);
        memcpy(e->k, k, kl);
        e->klen = kl;
        int rc;
        e->value = setcache_dup_string(c, targets[i].type, targets[i].id, targets[i].key, &rc);
        if (!e->value) {
            die("floor", setcache_errmsg());
        }
        e->vlen = strlen(e->value);
        HASH_ADD_KEYPTR(hh, floor_tab, e->k, e->klen, e);
    }
}

/* as in reads.c: the C library's memcpy, not an inlined `rep movs` */
static void *(*volatile copy_fn)(void *, const void *, size_t) = memcpy;

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
    char buf[512], k[400];
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
            size_t kl = composite(k, t);
            floor_e *e;
            HASH_FIND(hh, floor_tab, k, kl, e);
            if (e && e->vlen < sizeof buf) {
                copy_fn(buf, e->value, e->vlen + 1);
            } else {
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

typedef struct result {
    double rate, p50, p99, p999;
} result;

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
    size_t nl = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        if (w[i].errors) {
            die("reads", "unexpected read errors");
        }
        rate += w[i].n / w[i].secs;
        nl += (size_t)w[i].nlat;
    }
    double *all = malloc(nl * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < THREADS; i++) {
        memcpy(all + k, w[i].lat, (size_t)w[i].nlat * sizeof *all);
        k += (size_t)w[i].nlat;
        free(w[i].lat);
    }
    qsort(all, nl, sizeof *all, bench_cmp_d);
    result r = {rate, all[nl / 2], all[(size_t)(nl * 0.99)], all[(size_t)(nl * 0.999)]};
    free(all);
    return r;
}

static result median_of(result *v, int n)
{
    for (int x = 0; x < n; x++) {
        for (int y = x + 1; y < n; y++) {
            if (v[y].rate < v[x].rate) {
                result t = v[x];
                v[x] = v[y];
                v[y] = t;
            }
        }
    }
    return v[n / 2];
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
    conninfo = getenv("SETCACHE_TEST_CONNINFO");
    if (!conninfo) {
        die("setup", "SETCACHE_TEST_CONNINFO is not set (run `make bench`)");
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
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
        int nent = build_walk(mon);
        if (setcache_preload(c, "expert") != SETCACHE_OK ||
            setcache_preload(c, "account") != SETCACHE_OK ||
            setcache_preload(c, "app") != SETCACHE_OK) {
            die("preload", setcache_errmsg());
        }
        floor_build(c);
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
        result f = median_of(fl, REPS), m = median_of(ca, REPS);
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
        printf("| %s | %d | ratios | cached/floor time %.2fx; cached/old %.0fx | | | | | |\n", label,
               ntargets, f.rate / m.rate, m.rate / old);
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
