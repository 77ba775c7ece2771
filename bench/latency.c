/*
 * latency.c - invalidation latency: from the commit acknowledgement in one
 * process to (a) the new value being readable in another process and (b)
 * the change callback firing there; at 100 and 1,000 writes/s, with 1, 8 and
 * 32 listening processes. The floor beside it: a bare NOTIFY round trip
 * between two libpq connections, measured in the same run.
 */
#include "setcache.h"
#include "workload.h"
#include <libpq-fe.h>

#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA "setcache_bench_lat"
#define MAXW 4000
#define MAXP 32

typedef struct shared {
    double ack[MAXW];      /* commit acknowledged, ms */
    double seen[MAXW];     /* readable in process 0 */
    double cb[MAXP][MAXW]; /* callback in process p */
    atomic_int ready;
    atomic_int stop;
} shared;

static const char *conninfo;
static shared *sh;

#define now_ms bench_now_ms
#define cmp_d bench_cmp_d

static void pct(double *v, int n, double *p50, double *p99, double *mx)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    *p50 = n ? v[n / 2] : -1;
    *p99 = n ? v[(int)(n * 0.99)] : -1;
    *mx = n ? v[n - 1] : -1;
}

static void on_change(void *arg, const setcache_change *ch)
{
    int p = (int)(intptr_t)arg;
    if (ch->kind == SETCACHE_CHANGE_SET && ch->value) {
        int seq = atoi(ch->value);
        if (seq > 0 && seq < MAXW && sh->cb[p][seq] == 0) {
            sh->cb[p][seq] = now_ms();
        }
    }
}

static void listener_proc(int p)
{
    setcache_options o;
    setcache_options_init(&o);
    o.conninfo = conninfo;
    o.schema = SCHEMA;
    o.channel = SCHEMA;
    o.pool_size = 1;
    setcache *c;
    if (setcache_open(&c, &o) != SETCACHE_OK) {
        _exit(2);
    }
    uint64_t id;
    setcache_subscribe(c, "expert", "1", "k", on_change, (void *)(intptr_t)p, &id);
    int64_t v = 0;
    setcache_get_int(c, "expert", "1", "k", &v);
    atomic_fetch_add(&sh->ready, 1);
    int64_t last = v;
    while (!atomic_load(&sh->stop)) {
        if (p == 0) {
            /* process 0 also polls reads: when is the new value readable? */
            if (setcache_get_int(c, "expert", "1", "k", &v) == SETCACHE_OK && v != last) {
                double t = now_ms();
                if (v > 0 && v < MAXW && sh->seen[v] == 0) {
                    sh->seen[v] = t;
                }
                last = v;
            }
            usleep(20); /* 20 us resolution, without starving the library's threads */
        } else {
            usleep(10000);
        }
    }
    setcache_close(c);
    _exit(0);
}

static void run(int nproc, int rate, int nwrites, PGconn *w)
{
    memset(sh, 0, sizeof *sh);
    pid_t kids[MAXP];
    for (int p = 0; p < nproc; p++) {
        if ((kids[p] = fork()) == 0) {
            listener_proc(p);
        }
    }
    while (atomic_load(&sh->ready) < nproc) {
        usleep(1000);
    }
    usleep(200000);
    double interval = 1000.0 / rate, next = now_ms();
    for (int s = 1; s <= nwrites; s++) {
        bench_sleep_until(next);
        next += interval;
        char v[16];
        snprintf(v, sizeof v, "%d", s);
        const char *pv[1] = {v};
        PGresult *r = PQexecParams(w,
                                   "UPDATE " SCHEMA ".settings SET value = $1 WHERE "
                                   "entity_type = 'expert' AND entity_id = '1' AND key = 'k'",
                                   1, NULL, pv, NULL, NULL, 0);
        sh->ack[s] = now_ms();
        PQclear(r);
    }
    usleep(500000);
    atomic_store(&sh->stop, 1);
    for (int p = 0; p < nproc; p++) {
        int st;
        waitpid(kids[p], &st, 0);
    }
    static double rd[MAXW], cbv[MAXW * MAXP];
    int nr = 0, nc = 0, coalesced = 0;
    for (int s = 1; s <= nwrites; s++) {
        if (sh->seen[s] > 0) {
            rd[nr++] = sh->seen[s] - sh->ack[s];
        }
        for (int p = 0; p < nproc; p++) {
            if (sh->cb[p][s] > 0) {
                cbv[nc++] = sh->cb[p][s] - sh->ack[s];
            } else {
                coalesced++;
            }
        }
    }
    double r50, r99, rmx, c50, c99, cmx;
    pct(rd, nr, &r50, &r99, &rmx);
    pct(cbv, nc, &c50, &c99, &cmx);
    printf("| %4d writes/s | %2d | %6.3f | %6.3f | %7.3f | %6.3f | %6.3f | %7.3f | %d of %d |\n",
           rate, nproc, r50, r99, rmx, c50, c99, cmx, coalesced, nwrites * nproc);
    const char *tp = getenv("SETCACHE_BENCH_TSV");
    FILE *t = tp ? fopen(tp, "a") : NULL;
    if (t) {
        fprintf(t, "latency\treadable_p50_p99_max_ms\t%d/%d\t%.3f\t%.3f\t%.3f\n", rate, nproc, r50,
                r99, rmx);
        fprintf(t, "latency\tcallback_p50_p99_max_ms\t%d/%d\t%.3f\t%.3f\t%.3f\n", rate, nproc, c50,
                c99, cmx);
        fclose(t);
    }
}

/* The floor: NOTIFY on one connection, LISTEN on another, in one process. */
static void notify_floor(void)
{
    PGconn *l = PQconnectdb(conninfo), *n = PQconnectdb(conninfo);
    PQclear(PQexec(l, "LISTEN bench_floor"));
    static double v[2000];
    for (int i = 0; i < 2000; i++) {
        PQclear(PQexec(n, "NOTIFY bench_floor, 'x'"));
        double t0 = now_ms();
        for (;;) {
            struct pollfd p = {PQsocket(l), POLLIN, 0};
            poll(&p, 1, 1000);
            PQconsumeInput(l);
            PGnotify *nt = PQnotifies(l);
            if (nt) {
                PQfreemem(nt);
                break;
            }
        }
        v[i] = now_ms() - t0;
    }
    double p50, p99, mx;
    pct(v, 2000, &p50, &p99, &mx);
    printf("| floor: bare NOTIFY commit ack -> LISTEN connection | 1 | %6.3f | %6.3f | %7.3f | "
           "- | - | - | - |\n",
           p50, p99, mx);
    PQfinish(l);
    PQfinish(n);
}

int main(void)
{
    conninfo = bench_conninfo("bench");
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    PGconn *w = PQconnectdb(conninfo);
    setcache_options o;
    bench_fresh(w, SCHEMA, conninfo, &o);
    setcache *c;
    if (setcache_open(&c, &o) != SETCACHE_OK || setcache_set_int(c, "expert", "1", "k", 0) != 0) {
        fprintf(stderr, "setup: %s\n", setcache_errmsg());
        return 1;
    }
    setcache_close(c);
    printf("## Invalidation latency\n\n");
    bench_print_machine(w, "pool_size 1, otherwise defaults, in every listening process");
    printf("from the commit acknowledgement of a plain-SQL UPDATE in "
           "one process to the new value being readable in another (process 0 polls) and to "
           "the callback in every listening process; ms\n\n");
    printf("(negative: readable before the writing process saw its own acknowledgement; "
           "versions overwritten before they were read are coalesced into the newer one, so "
           "not every write has a callback of its own)\n\n");
    printf("| rate | procs | read p50 | read p99 | read max | cb p50 | cb p99 | cb max | "
           "versions coalesced |\n|---|---|---|---|---|---|---|---|---|\n");
    notify_floor();
    run(1, 100, 300, w);
    run(1, 1000, 2000, w);
    run(8, 100, 300, w);
    run(8, 1000, 2000, w);
    run(32, 100, 300, w);
    run(32, 1000, 2000, w);
    PQclear(PQexec(w, "DROP SCHEMA IF EXISTS " SCHEMA " CASCADE"));
    PQfinish(w);
    return 0;
}
