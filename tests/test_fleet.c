/* A fleet of processes on one database: the server-side cost of N idle
 * listeners is one notifying commit per heartbeat and N deliveries of it
 * (the ticker), and G10 holds for every member, the ticker's death
 * included. 48 real processes, each with its own handle (pool_size 1). */
#include "harness.h"
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FLEET 48
#define TICK_LOCK "1396899841"

/* ---- a member (a child program) ---- */

static atomic_int member_interrupts;
static _Atomic long long member_interrupted_at; /* CLOCK_MONOTONIC ms of the last INTERRUPTED */

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void member_state(void *arg, int state, const char *why)
{
    (void)arg;
    (void)why;
    if (state == SETCACHE_STATE_INTERRUPTED) {
        atomic_store(&member_interrupted_at, (long long)mono_ms());
        atomic_fetch_add(&member_interrupts, 1);
    }
}

/* Commands on fd SETCACHE_TEST_DOWN, one byte each: 'n' report
 * "notifications interrupts interrupted_at state" as a line on
 * SETCACHE_TEST_UP; 's' or end of file: close and exit. */
CHILD(fleet_member)
{
    int up = atoi(getenv("SETCACHE_TEST_UP")), down = atoi(getenv("SETCACHE_TEST_DOWN"));
    setcache_options o;
    t_options(&o);
    o.create_schema = false;
    o.pool_size = 1;
    o.on_state = member_state;
    setcache *c = NULL;
    if (setcache_open(&c, &o) != SETCACHE_OK) {
        dprintf(up, "open failed: %s\n", setcache_errmsg());
        _exit(1);
    }
    char buf[64];
    setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL);
    double t0 = mono_ms();
    while (t_stats(c).state != SETCACHE_STATE_VALID && mono_ms() - t0 < 30000) {
        t_sleep_ms(10);
    }
    dprintf(up, "r\n");
    for (;;) {
        struct pollfd p = {down, POLLIN, 0};
        if (poll(&p, 1, 300000) <= 0) {
            break; /* bounded: the parent is gone */
        }
        char cmd;
        if (read(down, &cmd, 1) != 1 || cmd == 's') {
            break;
        }
        if (cmd == 'n') {
            setcache_stats s = t_stats(c);
            dprintf(up, "%llu %d %lld %d\n", (unsigned long long)s.notifications,
                    atomic_load(&member_interrupts), atomic_load(&member_interrupted_at),
                    (int)s.state);
        }
    }
    setcache_close(c);
}

/* ---- the fleet (the test process) ---- */

typedef struct member {
    pid_t pid;
    int up, down; /* our ends */
    FILE *in;
} member;

static member fleet[FLEET];
static int nfleet;
static int stopped_backend;

static void fleet_kill(void)
{
    if (stopped_backend > 0) {
        kill(stopped_backend, SIGCONT);
        stopped_backend = 0;
    }
    for (int i = 0; i < nfleet; i++) {
        if (fleet[i].pid > 0) {
            kill(fleet[i].pid, SIGKILL);
            waitpid(fleet[i].pid, NULL, 0);
            fleet[i].pid = 0;
        }
    }
}

static void spawn(member *m)
{
    int up[2], down[2];
    CHECK(pipe(up) == 0 && pipe(down) == 0);
    pid_t kid = fork();
    CHECK(kid >= 0);
    if (kid == 0) {
        close(up[0]);
        close(down[1]);
        t_exec_child("fleet_member", up[1], down[0]);
    }
    close(up[1]);
    close(down[0]);
    m->pid = kid;
    m->up = up[0];
    m->down = down[1];
    m->in = fdopen(up[0], "r");
}

/* One line from a member, within timeout_ms; false on timeout or EOF. */
static bool line_from(member *m, char *buf, size_t cap, int timeout_ms)
{
    struct pollfd p = {m->up, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) {
        return false;
    }
    return fgets(buf, (int)cap, m->in) != NULL;
}

typedef struct report {
    unsigned long long notifications;
    int interrupts;
    double interrupted_at;
    int state;
} report;

static report ask(member *m)
{
    report r = {0};
    char line[128];
    CHECK(write(m->down, "n", 1) == 1);
    CHECK(line_from(m, line, sizeof line, 5000));
    CHECK(sscanf(line, "%llu %d %lf %d", &r.notifications, &r.interrupts, &r.interrupted_at,
                 &r.state) == 4);
    return r;
}

/* The next transaction id the server will hand out: a NOTIFY takes one, a
 * read-only transaction (a listener's wake-up) does not. */
static long long next_xid(void)
{
    return atoll(t_sql_value("SELECT pg_snapshot_xmax(pg_current_snapshot())"));
}

/* The backend holding the tick lock, and the member it belongs to (-1). */
static int ticker_backend(int *member_index)
{
    int be = atoi(t_sql_value("SELECT coalesce(max(pid), 0) FROM pg_locks WHERE locktype = "
                              "'advisory' AND classid = " TICK_LOCK " AND granted"));
    *member_index = -1;
    if (be > 0) {
        int owner = atoi(t_sql_value("SELECT coalesce(max(split_part(application_name, ':', "
                                     "2)::int), 0) FROM pg_stat_activity WHERE pid = %d",
                                     be));
        for (int i = 0; i < nfleet; i++) {
            if (fleet[i].pid == owner) {
                *member_index = i;
            }
        }
    }
    return be;
}

TEST_T(fleet_of_48_costs_one_tick_per_heartbeat_and_survives_its_ticker, 240)
{
    t_on_fail(fleet_kill);
    setcache *c = t_open(); /* creates the schema; its own listener joins the fleet */
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v"));
    t_admin_close(); /* the children must not share the admin connection */
    nfleet = 0;
    for (int i = 0; i < FLEET; i++) {
        spawn(&fleet[i]);
        nfleet++;
    }
    char line[256];
    for (int i = 0; i < FLEET; i++) {
        if (!line_from(&fleet[i], line, sizeof line, 60000) || line[0] != 'r') {
            t_fail(__FILE__, __LINE__, "member %d did not start: %s", i, line);
        }
    }
    t_sleep_ms(3000); /* a ticker is elected and the start-up probes are over */

    /* idle cost over 10 s: notifying commits on the server, notifications
     * each member receives */
    report r0[FLEET], r1[FLEET];
    for (int i = 0; i < FLEET; i++) {
        r0[i] = ask(&fleet[i]);
    }
    long long x0 = next_xid();
    double t0 = t_now_ms();
    t_sleep_ms(10000);
    long long x1 = next_xid();
    double secs = (t_now_ms() - t0) / 1e3;
    double worst = 0;
    for (int i = 0; i < FLEET; i++) {
        r1[i] = ask(&fleet[i]);
        double per = (double)(r1[i].notifications - r0[i].notifications) / secs;
        worst = per > worst ? per : worst;
        CHECK_INT(r1[i].state, SETCACHE_STATE_VALID);
        CHECK_INT(r1[i].interrupts, 0);
    }
    double commits = (double)(x1 - x0) / secs;
    fprintf(stderr,
            "    %d idle processes (and this one): %.2f notifying commits/s on the server, at "
            "most %.2f notifications/s received by one process\n",
            FLEET, commits, worst);
    CHECK(commits <= 2.0);
    CHECK(worst <= 2.0);

    /* the ticker dies: another takes over within a heartbeat, and nobody
     * else turns INTERRUPTED */
    int ti;
    int be = ticker_backend(&ti);
    CHECK(be > 0);
    if (ti < 0) {
        /* this process ticks: close its handle to hand the role over */
        setcache_close(c);
        c = NULL;
    } else {
        kill(fleet[ti].pid, SIGKILL);
        waitpid(fleet[ti].pid, NULL, 0);
        fleet[ti].pid = 0;
    }
    double td = t_now_ms();
    int nb = 0, nti = -1;
    while (t_now_ms() - td < 5000) {
        nb = ticker_backend(&nti);
        if (nb > 0 && nb != be) {
            break;
        }
        t_sleep_ms(20);
    }
    double took = t_now_ms() - td;
    fprintf(stderr, "    the ticker died; a new one holds the lock after %.0f ms\n", took);
    CHECK(nb > 0 && nb != be);
    CHECK(took <= 1000 + 100 + 250 + 500); /* heartbeat + slack + 250 ms, + the session's end */
    t_sleep_ms(3000);
    for (int i = 0; i < FLEET; i++) {
        if (fleet[i].pid > 0) {
            report r = ask(&fleet[i]);
            CHECK_INT(r.interrupts, 0);
            CHECK_INT(r.state, SETCACHE_STATE_VALID);
        }
    }

    /* G10 for a member that is not the ticker: its listener backend stops */
    int victim = -1;
    for (int i = 0; i < FLEET && victim < 0; i++) {
        if (fleet[i].pid > 0 && i != nti) {
            victim = i;
        }
    }
    CHECK(victim >= 0);
    int vbe = atoi(t_sql_value("SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE "
                               "application_name = 'setcache:%d:listen'",
                               (int)fleet[victim].pid));
    CHECK(vbe > 0);
    stopped_backend = vbe;
    double ts = mono_ms();
    CHECK(kill(vbe, SIGSTOP) == 0);
    report rv = {0};
    while (mono_ms() - ts < 5000) {
        rv = ask(&fleet[victim]);
        if (rv.interrupts > 0) {
            break;
        }
        t_sleep_ms(50);
    }
    kill(vbe, SIGCONT);
    stopped_backend = 0;
    CHECK(rv.interrupts > 0);
    double detect = rv.interrupted_at - ts;
    fprintf(stderr, "    a member's silent listener detected after %.0f ms\n", detect);
    CHECK(detect <= 1000 + 1000 + 250);

    for (int i = 0; i < FLEET; i++) {
        if (fleet[i].pid > 0) {
            CHECK(write(fleet[i].down, "s", 1) == 1);
        }
    }
    for (int i = 0; i < FLEET; i++) {
        if (fleet[i].pid > 0) {
            int st = 0;
            double tw = t_now_ms();
            while (waitpid(fleet[i].pid, &st, WNOHANG) == 0 && t_now_ms() - tw < 10000) {
                t_sleep_ms(10);
            }
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            fleet[i].pid = 0;
            fclose(fleet[i].in);
            close(fleet[i].down);
        }
    }
    nfleet = 0;
    if (c) {
        setcache_close(c);
    }
}
