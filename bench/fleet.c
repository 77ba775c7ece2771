/*
 * fleet.c - a fleet of processes on one server: 8, 32 and 128 processes
 * (pool_size 1, each with a small cached workload and a subscription),
 * idle and at 10 and 100 writes/s by plain SQL. For each: the server's
 * client backends, notifying commits per second (transaction ids the server
 * handed out: a NOTIFY takes one, a listener's wake-up to read the queue
 * does not), notifications received per process per second (the library's
 * counter), server CPU seconds per second (every postgres process, from
 * /proc), and UPDATE sent (its commit included) -> change callback in
 * every process (p50 / p99 / max: the callback fires once the new value is
 * in the cache). Needs SETCACHE_TEST_CONNINFO and a server with max_connections
 * >= 2 x 128 + a few (tests/withpg.sh starts one with 300).
 *
 * Past one primary (run by bench/fleet-topology.sh, which starts a primary
 * with wal_level = logical and N subscriber clusters): the same 128
 * processes attached directly to the primary, then spread over the
 * subscribers (they load and listen there; logical replication brings the
 * primary's changes), side by side: the primary's client backends and
 * walsenders, its notifying commits and CPU, the subscribers' CPU, and
 * UPDATE sent to the primary -> change callback in every process. With
 * --demo, a small fleet (4 processes per subscriber) and one plain-SQL change; with
 * --procs N, N processes instead of 128.
 */
#include "setcache.h"
#include "workload.h"
#include <libpq-fe.h>

#include <dirent.h>
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

#define SCHEMA "setcache_bench_fleet"
#define MAXP 128
#define MAXW 1100
static int PHASE_S = 10; /* seconds a phase (the demo's are shorter) */

typedef struct shared {
    /* the UPDATE sent, ms: latencies start here, so they include its commit.
     * (Its acknowledgement is no origin: with 128 busy processes the writer
     * often ran tens of ms after its commit, and callbacks came "before" it.) */
    double sent[MAXW];
    float cb[MAXP][MAXW]; /* callback in process p, ms after the phase's origin */
    double origin;        /* ms */
    atomic_ullong notif[MAXP];
    /* the parent asks for the notification counters by raising stats_gen;
     * each process answers at its next round (reading the library's stats
     * every round cost the fleet a third of a CPU) */
    atomic_int stats_gen, stats_ack[MAXP];
    atomic_int ready, stop, failed;
} shared;

static const char *conninfo;
static shared *sh;
/* past one primary: the subscribers' conninfos and every postmaster's pid
 * (the primary's first), from bench/fleet-topology.sh */
static const char *schema = SCHEMA;
static char *subs[8];
static int nsubs, pms[9], npms;
static bool on_subs;   /* this run's members attach to the subscribers */
static bool floor_run; /* this run's members are the floor (bare libpq) */
static bool prepared;  /* this run's members open with prepared_statements */

#define now_ms bench_now_ms

static void on_change(void *arg, const setcache_change *ch)
{
    int p = (int)(intptr_t)arg;
    if (ch->kind == SETCACHE_CHANGE_SET && ch->value) {
        int seq = atoi(ch->value);
        if (seq > 0 && seq < MAXW && sh->cb[p][seq] == 0) {
            sh->cb[p][seq] = (float)(now_ms() - sh->origin);
        }
    }
}

static void member(int p)
{
    setcache_options o;
    setcache_options_init(&o);
    o.conninfo = on_subs ? subs[p % nsubs] : conninfo;
    o.schema = schema;
    o.channel = schema;
    o.pool_size = 1;
    o.prepared_statements = prepared;
    setcache *c;
    if (setcache_open(&c, &o) != SETCACHE_OK) {
        atomic_fetch_add(&sh->failed, 1);
        _exit(2);
    }
    uint64_t id;
    setcache_subscribe(c, "expert", "1", "k", on_change, (void *)(intptr_t)p, &id);
    char buf[64];
    setcache_get_string(c, "expert", "1", "k", buf, sizeof buf, NULL);
    setcache_get_string(c, "account", "1", "api_key", buf, sizeof buf, NULL);
    atomic_fetch_add(&sh->ready, 1);
    int answered = 0;
    while (!atomic_load(&sh->stop)) {
        /* the cached workload: a few reads every 10 ms */
        for (int i = 0; i < 5; i++) {
            setcache_get_string(c, "account", "1", "api_key", buf, sizeof buf, NULL);
        }
        int gen = atomic_load(&sh->stats_gen);
        if (gen != answered) {
            setcache_stats s;
            setcache_get_stats(c, &s);
            atomic_store(&sh->notif[p], s.notifications);
            atomic_store(&sh->stats_ack[p], gen);
            answered = gen;
        }
        usleep(10000);
    }
    setcache_close(c);
    _exit(0);
}

/*
 * The floor of any process that must re-read a changed entity from its
 * server: one thread, two bare libpq connections (LISTEN, and a prepared
 * statement re-reading the entity, the library's load statement), no cache,
 * no callback dispatch. Every notification of a round is answered by one
 * re-read, and the new value is "readable" when that re-read returns.
 */
static void floor_member(int p)
{
    const char *ci = on_subs ? subs[p % nsubs] : conninfo;
    PGconn *l = PQconnectdb(ci), *q = PQconnectdb(ci);
    char sql[200];
    snprintf(sql, sizeof sql, "LISTEN %s", schema);
    PGresult *r1 = PQexec(l, sql);
    snprintf(sql, sizeof sql,
             "SELECT key, value, version FROM %s.settings WHERE entity_type = $1 AND "
             "entity_id = $2",
             schema);
    PGresult *r2 = PQprepare(q, "reread", sql, 2, NULL);
    bool ok = PQresultStatus(r1) == PGRES_COMMAND_OK && PQresultStatus(r2) == PGRES_COMMAND_OK;
    PQclear(r1);
    PQclear(r2);
    if (!ok) {
        fprintf(stderr, "fleet floor: %s%s", PQerrorMessage(l), PQerrorMessage(q));
        atomic_fetch_add(&sh->failed, 1);
        _exit(2);
    }
    atomic_fetch_add(&sh->ready, 1);
    unsigned long long seen = 0;
    int answered = 0;
    while (!atomic_load(&sh->stop)) {
        struct pollfd pfd = {.fd = PQsocket(l), .events = POLLIN};
        if (poll(&pfd, 1, 10) > 0) {
            PQconsumeInput(l);
        }
        bool changed = false;
        PGnotify *n;
        while ((n = PQnotifies(l)) != NULL) {
            seen++;
            changed = true;
            PQfreemem(n);
        }
        if (changed) {
            const char *pv[2] = {"expert", "1"};
            PGresult *r = PQexecPrepared(q, "reread", 2, pv, NULL, NULL, 0);
            for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
                int seq = atoi(PQgetvalue(r, i, 1));
                if (strcmp(PQgetvalue(r, i, 0), "k") == 0 && seq > 0 && seq < MAXW &&
                    sh->cb[p][seq] == 0) {
                    sh->cb[p][seq] = (float)(now_ms() - sh->origin);
                }
            }
            PQclear(r);
        }
        int gen = atomic_load(&sh->stats_gen);
        if (gen != answered) {
            atomic_store(&sh->notif[p], seen);
            atomic_store(&sh->stats_ack[p], gen);
            answered = gen;
        }
    }
    PQfinish(l);
    PQfinish(q);
    _exit(0);
}

/* CPU seconds the whole machine has been busy (every process), from
 * /proc/stat: user, nice, system, irq, softirq (not steal: the time the
 * hypervisor gave other machines). */
static double machine_cpu_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long u = 0, ni = 0, sy = 0, id = 0, io = 0, irq = 0, sirq = 0, st = 0;
    int got = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &ni, &sy, &id, &io,
                         &irq, &sirq, &st)
                : 0;
    if (f) {
        fclose(f);
    }
    return got == 8 ? (double)(u + ni + sy + irq + sirq) / (double)sysconf(_SC_CLK_TCK) : 0;
}

static long long next_xid(PGconn *m)
{
    PGresult *r = PQexec(m, "SELECT pg_snapshot_xmax(pg_current_snapshot())");
    long long v = PQresultStatus(r) == PGRES_TUPLES_OK ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

static int client_backends(PGconn *m)
{
    PGresult *r = PQexec(m, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                            "'client backend' AND application_name LIKE 'setcache:%'");
    int v = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

/* CPU seconds used so far by every process named postgres (n == 0), or by
 * the postmasters pm[0..n) and their children. */
static double cpu_of(const int *pm, int n)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    double ticks = 0;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') {
            continue;
        }
        char path[300], line[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) {
            continue;
        }
        if (fgets(line, sizeof line, f)) {
            char *open = strchr(line, '('), *close = strrchr(line, ')');
            if (open && close && strncmp(open + 1, "postgres", 8) == 0) {
                unsigned long ut = 0, st = 0;
                int ppid = 0, pid = atoi(e->d_name);
                /* fields after the name: state ppid ... utime (14) stime (15) */
                if (sscanf(close + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ppid,
                           &ut, &st) == 3) {
                    bool mine = n == 0;
                    for (int i = 0; i < n && !mine; i++) {
                        mine = pid == pm[i] || ppid == pm[i];
                    }
                    ticks += mine ? (double)(ut + st) : 0;
                }
            }
        }
        fclose(f);
    }
    if (d) {
        closedir(d);
    }
    return ticks / (double)sysconf(_SC_CLK_TCK);
}

static double server_cpu_s(void)
{
    return cpu_of(NULL, 0);
}

/* The server's backends of one type ("walsender", "client backend"). */
static int backends_of(PGconn *m, const char *type)
{
    const char *v1[1] = {type};
    PGresult *r = PQexecParams(m, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = $1",
                               1, NULL, v1, NULL, NULL, 0);
    int v = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

/* Every process's notification counter, now (each answers within a round
 * of its loop; at most 5 s). */
static void collect_notifications(int nproc)
{
    int gen = atomic_fetch_add(&sh->stats_gen, 1) + 1;
    double t0 = now_ms();
    for (int p = 0; p < nproc; p++) {
        while (atomic_load(&sh->stats_ack[p]) != gen && now_ms() - t0 < 5000) {
            usleep(1000);
        }
    }
}

static void pct(double *v, size_t n, double *p50, double *p99, double *mx)
{
    qsort(v, n, sizeof *v, bench_cmp_d);
    *p50 = n ? v[n / 2] : -1;
    *p99 = n ? v[(size_t)((double)n * 0.99)] : -1;
    *mx = n ? v[n - 1] : -1;
}

static void phase(PGconn *m, PGconn *w, int nproc, int rate, FILE *tsv)
{
    memset(sh->sent, 0, sizeof sh->sent);
    memset(sh->cb, 0, sizeof sh->cb);
    sh->origin = now_ms();
    unsigned long long n0[MAXP];
    collect_notifications(nproc);
    for (int p = 0; p < nproc; p++) {
        n0[p] = atomic_load(&sh->notif[p]);
    }
    long long x0 = next_xid(m);
    double cpu0 = npms ? cpu_of(pms, 1) : server_cpu_s(), t0 = now_ms();
    double scpu0 = npms > 1 ? cpu_of(pms + 1, npms - 1) : 0, mcpu0 = machine_cpu_s();
    char upd[200];
    snprintf(upd, sizeof upd,
             "UPDATE %s.settings SET value = $1 WHERE entity_type = 'expert' AND entity_id = '1' "
             "AND key = 'k'",
             schema);
    int nwrites = rate * PHASE_S;
    if (nwrites == 0) {
        usleep(PHASE_S * 1000000);
    } else {
        double interval = 1000.0 / rate, next = now_ms();
        for (int s = 1; s <= nwrites && s < MAXW; s++) {
            bench_sleep_until(next);
            next += interval;
            char v[16];
            snprintf(v, sizeof v, "%d", s);
            const char *pv[1] = {v};
            sh->sent[s] = now_ms() - sh->origin;
            PGresult *r = PQexecParams(w, upd, 1, NULL, pv, NULL, NULL, 0);
            PQclear(r);
        }
    }
    double secs = (now_ms() - t0) / 1e3;
    double cpu = ((npms ? cpu_of(pms, 1) : server_cpu_s()) - cpu0) / secs;
    double scpu = npms > 1 ? (cpu_of(pms + 1, npms - 1) - scpu0) / secs : 0;
    double mcpu = (machine_cpu_s() - mcpu0) / secs;
    long long x1 = next_xid(m);
    collect_notifications(nproc);
    usleep(1000000); /* the last changes reach everyone */
    double worst = 0, sum = 0;
    for (int p = 0; p < nproc; p++) {
        double per = (double)(atomic_load(&sh->notif[p]) - n0[p]) / secs;
        worst = per > worst ? per : worst;
        sum += per;
    }
    size_t cap = (size_t)nproc * (size_t)(nwrites + 1), nl = 0, missing = 0;
    double *lat = malloc((cap ? cap : 1) * sizeof *lat);
    for (int s = 1; s <= nwrites && s < MAXW; s++) {
        for (int p = 0; p < nproc; p++) {
            if (sh->cb[p][s] > 0) {
                lat[nl++] = sh->cb[p][s] - sh->sent[s];
            } else {
                missing++; /* coalesced into a later version */
            }
        }
    }
    double p50, p99, mx;
    pct(lat, nl, &p50, &p99, &mx);
    free(lat);
    char l[64];
    if (nl) {
        snprintf(l, sizeof l, "%.2f / %.2f / %.1f", p50, p99, mx);
    } else {
        snprintf(l, sizeof l, "-");
    }
    const char *topo = npms == 0   ? "fleet"
                       : floor_run ? "fleet_subscribers_floor"
                       : prepared  ? "fleet_subscribers_prepared"
                       : on_subs   ? "fleet_subscribers"
                                   : "fleet_direct";
    if (npms == 0) {
        printf("| %3d | %3d | %3d | %6.2f | %6.2f (mean %.2f) | %5.3f | %s | %zu |\n", nproc, rate,
               client_backends(m), (double)(x1 - x0) / secs, worst, sum / nproc, cpu, l, missing);
    } else {
        printf("| %s | %3d | %3d | %3d + %d | %6.2f | %6.2f | %5.3f | %5.3f | %5.3f | %s | %zu |\n",
               floor_run  ? "subscribers, floor"
               : prepared ? "subscribers, prepared_statements"
               : on_subs  ? "subscribers"
                          : "direct",
               nproc, rate, backends_of(m, "client backend"), backends_of(m, "walsender"),
               (double)(x1 - x0) / secs, worst, cpu, scpu, mcpu, l, missing);
    }
    if (tsv) {
        fprintf(tsv, "%s\t%d/%d\tcommits_per_s\t%.2f\n", topo, nproc, rate,
                (double)(x1 - x0) / secs);
        fprintf(tsv, "%s\t%d/%d\tnotifications_per_process_s_max\t%.2f\n", topo, nproc, rate,
                worst);
        fprintf(tsv, "%s\t%d/%d\tserver_cpu_s_per_s\t%.3f\n", topo, nproc, rate, cpu);
        fprintf(tsv, "%s\t%d/%d\tmachine_cpu_s_per_s\t%.3f\n", topo, nproc, rate, mcpu);
        fprintf(tsv, "%s\t%d/%d\treadable_p50_p99_max_ms\t%.2f\t%.2f\t%.1f\n", topo, nproc, rate,
                p50, p99, mx);
    }
}

static void run_rates(PGconn *m, PGconn *w, int nproc, FILE *tsv, const int *rates, int nrates)
{
    memset(sh, 0, sizeof *sh);
    pid_t kids[MAXP];
    for (int p = 0; p < nproc; p++) {
        if ((kids[p] = fork()) == 0) {
            if (floor_run) {
                floor_member(p);
            }
            member(p);
        }
    }
    double t0 = now_ms();
    while (atomic_load(&sh->ready) + atomic_load(&sh->failed) < nproc && now_ms() - t0 < 60000) {
        usleep(10000);
    }
    if (atomic_load(&sh->failed) || atomic_load(&sh->ready) < nproc) {
        fprintf(stderr, "fleet: %d of %d processes failed to open\n", nproc - sh->ready, nproc);
    }
    usleep(3000000); /* settle: start-up probes and loads are over */
    for (int i = 0; i < nrates; i++) {
        phase(m, w, nproc, rates[i], tsv);
    }
    atomic_store(&sh->stop, 1);
    for (int p = 0; p < nproc; p++) {
        int st;
        waitpid(kids[p], &st, 0);
    }
}

static void run(PGconn *m, PGconn *w, int nproc, FILE *tsv)
{
    static const int rates[3] = {0, 10, 100};
    run_rates(m, w, nproc, tsv, rates, 3);
}

/* Has every subscriber the row the phases write? */
static bool replicated(void)
{
    for (int i = 0; i < nsubs; i++) {
        PGconn *s = PQconnectdb(subs[i]);
        char q[160];
        snprintf(q, sizeof q,
                 "SELECT 1 FROM %s.settings WHERE entity_type = 'expert' AND entity_id = '1' "
                 "AND key = 'k'",
                 schema);
        PGresult *r = PQexec(s, q);
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        PQclear(r);
        PQfinish(s);
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* Past one primary (bench/fleet-topology.sh): 128 processes direct, then
 * over the subscribers; --demo: 4 per subscriber, one write a second for
 * 3 s. */
static int topology_main(int argc, char **argv, FILE *tsv)
{
    bool demo = argc > 1 && strcmp(argv[1], "--demo") == 0;
    schema = getenv("SETCACHE_FLEET_SCHEMA");
    char *list = strdup(getenv("SETCACHE_FLEET_SUBSCRIBERS"));
    for (char *t = strtok(list, "|"); t && nsubs < 8; t = strtok(NULL, "|")) {
        subs[nsubs++] = t;
    }
    char *pl = strdup(getenv("SETCACHE_FLEET_PIDS") ? getenv("SETCACHE_FLEET_PIDS") : "");
    for (char *t = strtok(pl, " "); t && npms < 9; t = strtok(NULL, " ")) {
        pms[npms++] = atoi(t);
    }
    free(pl);
    PGconn *m = PQconnectdb(conninfo);
    PGconn *w = PQconnectdb(conninfo);
    if (PQstatus(m) != CONNECTION_OK || PQstatus(w) != CONNECTION_OK || nsubs == 0) {
        fprintf(stderr, "fleet: %s", PQerrorMessage(m));
        return 1;
    }
    setcache_options o;
    setcache_options_init(&o);
    o.conninfo = conninfo;
    o.schema = schema;
    o.channel = schema;
    setcache *c;
    if (setcache_open(&c, &o) != SETCACHE_OK || wl_load(c) != SETCACHE_OK ||
        setcache_set_string(c, "expert", "1", "k", "0") != SETCACHE_OK) {
        fprintf(stderr, "fleet: %s\n", setcache_errmsg());
        return 1;
    }
    setcache_close(c);
    double t0 = now_ms();
    while (!replicated() && now_ms() - t0 < 60000) {
        usleep(50000);
    }
    /* --procs N: another fleet size (a multiple of the subscribers) */
    int nproc = demo ? 4 * nsubs : 128;
    if (argc > 2 && strcmp(argv[1], "--procs") == 0 && atoi(argv[2]) > 0 && atoi(argv[2]) <= MAXP) {
        nproc = atoi(argv[2]) / nsubs * nsubs;
    }
    if (demo) {
        PHASE_S = 3;
    }
    printf("## %s: a primary and %d subscribers (logical replication)\n\n",
           demo ? "The fleet demo" : "A fleet past one primary", nsubs);
    bench_print_machine(m, "pool_size 1, heartbeat_ms 1000 (defaults otherwise)");
    printf("%d processes, each: one handle (pool_size 1), 5 cached reads every 10 ms, a "
           "subscription to the written setting; attached directly to the primary, then %d "
           "per subscriber (loads and LISTEN there); writes by plain SQL UPDATE on the primary "
           "from one connection; %d s a phase; every server on this machine\n\n",
           nproc, nproc / nsubs, PHASE_S);
    printf("| topology | processes | writes/s | primary: client backends + walsenders | "
           "primary notifying commits/s | notifications/s per process, max | primary CPU s/s "
           "| subscribers' CPU s/s | machine CPU s/s | UPDATE sent to the primary -> callback in "
           "every process, ms p50 / p99 / max | coalesced |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|\n");
    static const int bench_rates[3] = {0, 10, 100};
    static const int demo_rates[1] = {1};
    /* direct, subscribers, and (not in the demo) the subscribers with
     * prepared_statements and the floor on the subscribers */
    for (int t = 0; t < (demo ? 2 : 4); t++) {
        on_subs = t >= 1;
        prepared = t == 2;
        floor_run = t == 3;
        run_rates(m, w, nproc, tsv, demo ? demo_rates : bench_rates, demo ? 1 : 3);
    }
    PQfinish(m);
    PQfinish(w);
    free(list);
    return 0;
}

int main(int argc, char **argv)
{
    conninfo = bench_conninfo("bench");
    const char *tp = getenv("SETCACHE_BENCH_TSV");
    FILE *tsv = tp ? fopen(tp, "a") : NULL;
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh != MAP_FAILED && getenv("SETCACHE_FLEET_SUBSCRIBERS")) {
        int rc = topology_main(argc, argv, tsv);
        if (tsv) {
            fclose(tsv);
        }
        return rc;
    }
    PGconn *m = PQconnectdb(conninfo);
    PGconn *w = PQconnectdb(conninfo);
    if (PQstatus(m) != CONNECTION_OK || PQstatus(w) != CONNECTION_OK || sh == MAP_FAILED) {
        fprintf(stderr, "fleet: %s", PQerrorMessage(m));
        return 1;
    }
    setcache_options o;
    bench_fresh(m, SCHEMA, conninfo, &o);
    setcache *c;
    if (setcache_open(&c, &o) != SETCACHE_OK || wl_load(c) != SETCACHE_OK ||
        setcache_set_string(c, "expert", "1", "k", "0") != SETCACHE_OK) {
        fprintf(stderr, "fleet: %s\n", setcache_errmsg());
        return 1;
    }
    setcache_close(c); /* the members alone from here */
    printf("## A fleet of processes on one server\n\n");
    bench_print_machine(m, "pool_size 1, heartbeat_ms 1000 (defaults otherwise)");
    printf("each process: one handle (pool_size 1), 5 cached reads every 10 ms, a subscription "
           "to the written setting; writes by plain SQL UPDATE from one more connection; %d s "
           "a phase\n\n",
           PHASE_S);
    printf("| processes | writes/s | client backends | notifying commits/s | notifications/s "
           "per process, max | server CPU s/s | UPDATE sent -> callback in every process, ms p50 "
           "/ p99 / max | coalesced |\n|---|---|---|---|---|---|---|---|\n");
    int sizes[3] = {8, 32, 128};
    int first = argc > 1 ? atoi(argv[1]) : 0;
    for (int i = 0; i < 3; i++) {
        if (!first || sizes[i] == first) {
            run(m, w, sizes[i], tsv);
        }
    }
    PQclear(PQexec(m, "DROP SCHEMA IF EXISTS " SCHEMA " CASCADE"));
    PQfinish(m);
    PQfinish(w);
    if (tsv) {
        fclose(tsv);
    }
    return 0;
}
