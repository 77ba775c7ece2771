/*
 * soak.c - `make soak`: the library under everything at once, for
 * SOAK_SECONDS (default 600). This process reads with 8 threads and keeps a
 * subscriber attached; 2 writer processes (each with its own handle) and
 * psql keep changing settings; the listener's backend is killed every 30 s
 * and the server restarted (-m fast) every 120 s. Once a minute (and at
 * the end) it reports RSS, open fds, server sessions, errors by code and
 * stale reads. It fails when RSS or open fds grow more than 5 % from the
 * baseline (just after minute 2, or 10 s after half-way on runs shorter
 * than 4 minutes; between two listener kills) to the end, when a read is stale for longer than 2 s of VALID, when a read
 * returns a value no writer has written, or when a read fails while the
 * state has been VALID for 2 s and no server restart overlapped it (the
 * listener may hear of a restart after a read does; under AddressSanitizer the RSS rule gives
 * way to LeakSanitizer's check at exit). Needs the private cluster of
 * tests/withpg.sh (SETCACHE_PGDATA) to restart it.
 */
#define _GNU_SOURCE
#include <libpq-fe.h>
#include "setcache.h"

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NENT 8  /* entities */
#define NKEY 4  /* keys per entity and writer */
#define NWRITERS 3 /* 2 processes + psql */

/* What the writers committed, shared with the readers (MAP_SHARED). */
typedef struct slot {
    atomic_long attempted; /* a value is attempted before it is sent */
    atomic_long committed; /* and recorded after COMMIT returned */
    atomic_long committed_at_ms;
} slot;
typedef struct shared {
    slot s[NWRITERS][NENT][NKEY];
    atomic_int stop;
} shared;

static shared *sh;
static const char *conninfo;
static double t_start;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void opts(setcache_options *o)
{
    setcache_options_init(o);
    o->conninfo = conninfo;
    o->schema = "soak";
    o->channel = "soak";
    o->create_schema = true;
    o->pool_size = 2;
    o->reconnect_initial_ms = 50;
    o->reconnect_max_ms = 1000;
}

static void key_name(char *k, size_t cap, int w, int key)
{
    snprintf(k, cap, "w%d_k%d", w, key);
}

/* ---- writers ---- */

static void writer_process(int w)
{
    setcache_options o;
    opts(&o);
    setcache *c = NULL;
    for (int tries = 0; !c && tries < 100 && !atomic_load(&sh->stop); tries++) {
        if (setcache_open(&c, &o) != SETCACHE_OK) {
            c = NULL;
            usleep(100000);
        }
    }
    if (!c) {
        _exit(2);
    }
    for (unsigned n = 0; !atomic_load(&sh->stop); n++) {
        int e = (int)(n % NENT), k = (int)((n / NENT) % NKEY);
        slot *s = &sh->s[w][e][k];
        long v = atomic_load(&s->committed) + 1;
        atomic_store(&s->attempted, v);
        char id[8], key[16];
        snprintf(id, sizeof id, "%d", e);
        key_name(key, sizeof key, w, k);
        int rc = setcache_set_int(c, "soak", id, key, v);
        if (rc == SETCACHE_OK) {
            atomic_store(&s->committed_at_ms, (long)now_ms());
            atomic_store(&s->committed, v);
        } else if (rc == SETCACHE_ERR_UNCERTAIN) {
            /* it may have committed: the next attempt rewrites it anyway */
        }
        usleep(20000); /* about 50 writes/s per writer */
    }
    setcache_close(c);
    _exit(0);
}

/* psql as a third writer, every 2 s */
static void psql_write(int n)
{
    int e = n % NENT, k = (n / NENT) % NKEY;
    slot *s = &sh->s[2][e][k];
    long v = atomic_load(&s->committed) + 1;
    atomic_store(&s->attempted, v);
    char key[16], cmd[1024];
    key_name(key, sizeof key, 2, k);
    snprintf(cmd, sizeof cmd,
             "psql -qX '%s' -c \"INSERT INTO soak.settings (entity_type, entity_id, key, value) "
             "VALUES ('soak', '%d', '%s', '%ld') ON CONFLICT (entity_type, entity_id, key) DO "
             "UPDATE SET value = EXCLUDED.value\" >/dev/null 2>&1",
             conninfo, e, key, v);
    if (system(cmd) == 0) {
        atomic_store(&s->committed_at_ms, (long)now_ms());
        atomic_store(&s->committed, v);
    }
}

/* ---- the reading process ---- */

static atomic_long valid_since; /* ms, 0 while not VALID */
/* odd while the server is being restarted; +2 per restart */
static atomic_long restart_gen;
static atomic_long reads, stale_now, stale_worst_ms, phantoms, bad_errors, ok_errors;
static atomic_long by_code[16];
static atomic_long events;

static void on_state(void *arg, int state, const char *reason)
{
    (void)arg;
    (void)reason;
    atomic_store(&valid_since, state == SETCACHE_STATE_VALID ? (long)now_ms() : 0);
}

static void on_change(void *arg, const setcache_change *ch)
{
    (void)arg;
    (void)ch;
    atomic_fetch_add(&events, 1);
}

static bool valid_for(double ms)
{
    long since = atomic_load(&valid_since);
    return since > 0 && now_ms() - (double)since >= ms;
}

static void *reader(void *p)
{
    setcache *c = p;
    unsigned n = (unsigned)(uintptr_t)pthread_self();
    while (!atomic_load(&sh->stop)) {
        n = n * 1103515245u + 12345u;
        int w = (int)((n >> 8) % NWRITERS), e = (int)((n >> 12) % NENT),
            k = (int)((n >> 16) % NKEY);
        char id[8], key[16];
        snprintf(id, sizeof id, "%d", e);
        key_name(key, sizeof key, w, k);
        slot *s = &sh->s[w][e][k];
        long before = atomic_load(&s->committed);
        long at = atomic_load(&s->committed_at_ms);
        long gen = atomic_load(&restart_gen);
        int64_t v = 0;
        int rc = setcache_get_int(c, "soak", id, key, &v);
        atomic_fetch_add(&reads, 1);
        if (rc != SETCACHE_OK && rc != SETCACHE_NOT_FOUND) {
            atomic_fetch_add(&by_code[-rc & 15], 1);
            /* a read may fail while the server is away (a restart overlapped
             * it: the listener may not have said so yet); not after 2 s of
             * VALID otherwise */
            bool away = (gen & 1) || atomic_load(&restart_gen) != gen;
            atomic_fetch_add(valid_for(2000) && !away ? &bad_errors : &ok_errors, 1);
            continue;
        }
        if (rc == SETCACHE_OK && v > atomic_load(&s->attempted)) {
            atomic_fetch_add(&phantoms, 1); /* a value nobody has written */
        }
        long have = rc == SETCACHE_OK ? (long)v : 0;
        if (have < before && valid_for(2000)) {
            /* stale: a newer value committed before this read began */
            long age = (long)now_ms() - at;
            long vs = atomic_load(&valid_since);
            long since_valid = (long)now_ms() - vs;
            long over = age < since_valid ? age : since_valid;
            if (over > 2000) {
                atomic_fetch_add(&stale_now, 1);
            }
            long worst = atomic_load(&stale_worst_ms);
            while (over > worst && !atomic_compare_exchange_weak(&stale_worst_ms, &worst, over)) {
            }
        }
    }
    return NULL;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) {
            resident = 0;
        }
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        n += de->d_name[0] != '.';
    }
    if (d) {
        closedir(d);
    }
    return n - 1; /* the directory's own */
}

/* 5 samples 100 ms apart, the most of them for the baseline and the least
 * at the end: a socket being replaced at either moment (a listener
 * reconnecting) counts for nothing, while a leak stays and shows. */
static void settled(long *rss, int *fds, bool most)
{
    *rss = rss_kib();
    *fds = open_fds();
    for (int i = 0; i < 4; i++) {
        usleep(100000);
        long r = rss_kib();
        int f = open_fds();
        *rss = (most ? r > *rss : r < *rss) ? r : *rss;
        *fds = (most ? f > *fds : f < *fds) ? f : *fds;
    }
}

static PGconn *admin;

static long sql_long(const char *sql)
{
    if (PQstatus(admin) != CONNECTION_OK) {
        PQreset(admin);
    }
    PGresult *r = PQexec(admin, sql);
    long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

static void report(const char *when)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'setcache:%d:%%'",
             (int)getpid());
    printf("%-8s t=%4.0fs rss %ld KiB, fds %d, sessions %ld, reads %ld, events %ld, errors "
           "(expected %ld, unexpected %ld; by code:",
           when, (now_ms() - t_start) / 1000, rss_kib(), open_fds(), sql_long(sql),
           atomic_load(&reads), atomic_load(&events), atomic_load(&ok_errors),
           atomic_load(&bad_errors));
    for (int i = 1; i < 16; i++) {
        if (atomic_load(&by_code[i])) {
            printf(" %s=%ld", setcache_strerror(-i), atomic_load(&by_code[i]));
        }
    }
    printf("), stale > 2 s of VALID %ld (worst %ld ms), phantoms %ld\n", atomic_load(&stale_now),
           atomic_load(&stale_worst_ms), atomic_load(&phantoms));
    fflush(stdout);
}

static void restart_server(void)
{
    const char *bindir = getenv("SETCACHE_PG_BINDIR"), *data = getenv("SETCACHE_PGDATA");
    const char *runas = getenv("SETCACHE_PG_RUNAS");
    const char *log = getenv("SETCACHE_PG_LOG"); /* the restarted server logs where it did */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s/pg_ctl -D %s -w -t 60 %s%s%s -m fast restart >/dev/null 2>&1",
             runas ? runas : "", bindir, data, log ? "-l '" : "", log ? log : "", log ? "'" : "");
    atomic_fetch_add(&restart_gen, 1);
    if (system(cmd) != 0) {
        printf("soak: the server did not restart\n");
    }
    atomic_fetch_add(&restart_gen, 1);
    PQreset(admin);
}

int main(void)
{
    conninfo = getenv("SETCACHE_TEST_CONNINFO");
    const char *secs = getenv("SOAK_SECONDS");
    double seconds = secs && atof(secs) > 0 ? atof(secs) : 600;
    if (!conninfo || !getenv("SETCACHE_PGDATA")) {
        fprintf(stderr, "soak: run through make soak (needs the private cluster)\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        return 2;
    }
    memset(sh, 0, sizeof *sh);
    admin = PQconnectdb(conninfo);
    PQclear(PQexec(admin, "SET client_min_messages = warning"));
    PQclear(PQexec(admin, "DROP SCHEMA IF EXISTS soak CASCADE"));
    /* the schema first, then the writers (before any thread exists here) */
    setcache_options o;
    opts(&o);
    setcache *c;
    if (setcache_open(&c, &o) != SETCACHE_OK) {
        fprintf(stderr, "soak: open: %s\n", setcache_errmsg());
        return 2;
    }
    setcache_close(c);
    fflush(NULL);
    pid_t kids[2];
    for (int w = 0; w < 2; w++) {
        kids[w] = fork();
        if (kids[w] == 0) {
            writer_process(w); /* leaves the parent's admin session alone */
        }
    }
    o.on_state = on_state;
    o.pool_size = 1; /* a fixed number of sessions and sockets to watch */
    if (setcache_open(&c, &o) != SETCACHE_OK) {
        fprintf(stderr, "soak: open: %s\n", setcache_errmsg());
        atomic_store(&sh->stop, 1);
        return 2;
    }
    uint64_t sub;
    setcache_subscribe(c, "soak", NULL, NULL, on_change, NULL, &sub);
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        pthread_create(&th[i], NULL, reader, c);
    }
    t_start = now_ms();
    /* minute 2 for the baseline and a restart every 2 minutes; a run shorter
     * than 4 minutes (CI's) restarts once at a third and takes the baseline
     * half-way, after that restart */
    double baseline_at = seconds >= 240 ? 135 : seconds / 2 + 10; /* between two kills */
    double restart_every = seconds >= 240 ? 120 : seconds;
    long rss0 = 0;
    int fds0 = 0;
    double next_kill = 30, next_report = 60, next_psql = 2;
    double next_restart = seconds >= 240 ? 120 : seconds / 3;
    int npsql = 0;
    printf("soak: %.0f s; baseline for growth at %.0f s; listener killed every 30 s, server "
           "restarted at %.0f s and every %.0f s after\n",
           seconds, baseline_at, next_restart, restart_every);
    report("start");
    for (;;) {
        double t = (now_ms() - t_start) / 1000;
        if (t >= seconds) {
            break;
        }
        if (t >= next_psql) {
            psql_write(npsql++);
            next_psql += 2;
        }
        if (t >= next_kill) {
            char sql[256];
            snprintf(sql, sizeof sql,
                     "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                     "application_name = 'setcache:%d:listen'",
                     (int)getpid());
            sql_long(sql);
            next_kill += 30;
        }
        if (t >= next_restart) {
            restart_server();
            next_restart += restart_every;
        }
        if (!rss0 && t >= baseline_at) {
            settled(&rss0, &fds0, true);
            report("baseline");
        }
        if (t >= next_report) {
            report("minute");
            next_report += 60;
        }
        usleep(50000);
    }
    /* let the last changes settle and the listener be VALID for 2 s (up to
     * 15 s) before the end state is judged */
    usleep(3000000);
    for (int i = 0; i < 120 && !valid_for(2000); i++) {
        usleep(100000);
    }
    long rss1;
    int fds1;
    settled(&rss1, &fds1, false);
    report("end");
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
    }
    int fail = 0;
    for (int w = 0; w < 2; w++) {
        int st;
        waitpid(kids[w], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            printf("soak: writer %d ended badly\n", w);
            fail = 1;
        }
    }
    setcache_unsubscribe(c, sub);
    setcache_close(c);
    PQfinish(admin);
    printf("soak: RSS %ld -> %ld KiB, open fds %d -> %d from the baseline to the end\n", rss0, rss1,
           fds0, fds1);
#if defined(__SANITIZE_ADDRESS__)
    /* Under AddressSanitizer RSS also holds shadow memory, the quarantine
     * and the allocator's caches; LeakSanitizer's exact check when this
     * process exits takes the RSS rule's place. */
    bool judge_rss = false;
#else
    bool judge_rss = true;
#endif
    if (judge_rss && rss0 && rss1 > rss0 + rss0 / 20) {
        printf("soak: RSS grew from %ld to %ld KiB (more than 5 %%)\n", rss0, rss1);
        fail = 1;
    }
    if (fds0 && fds1 > fds0 + fds0 / 20) {
        printf("soak: open fds grew from %d to %d (more than 5 %%)\n", fds0, fds1);
        fail = 1;
    }
    fail |= atomic_load(&stale_now) > 0 || atomic_load(&phantoms) > 0 ||
            atomic_load(&bad_errors) > 0;
    long checks = atomic_load(&reads);
    printf("soak: %s: %ld reads checked, %d passed, %d failed\n", fail ? "FAILED" : "ok", checks,
           fail ? 0 : 1, fail ? 1 : 0);
    return fail;
}
