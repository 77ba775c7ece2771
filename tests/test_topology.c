/* The topologies deployments run, with real parts: the pool behind a real
 * PgBouncer (transaction and session mode, the listener direct), a
 * streaming standby promoted after its primary dies, and a network
 * partition between a process and its server over TCP, in a network
 * namespace. Each test starts what it needs and stops it, also on failure. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The test server's socket directory and port, from its conninfo. */
static void server_address(char *host, size_t cap, int *port)
{
    PQconninfoOption *opts = PQconninfoParse(t_conninfo(), NULL);
    CHECK(opts != NULL);
    host[0] = '\0';
    *port = 5432;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val && strcmp(o->keyword, "host") == 0) {
            snprintf(host, cap, "%s", o->val);
        } else if (o->val && strcmp(o->keyword, "port") == 0) {
            *port = atoi(o->val);
        }
    }
    PQconninfoFree(opts);
    CHECK(host[0] == '/');
}

/* Run this program again on the tests named (substrings), with env set,
 * its output indented under this test's; true if every one of them passed
 * (n of them, none failed or skipped). */
static bool run_nested(const char *const *names, int n, const char *env_name, const char *env_val)
{
    int out[2];
    CHECK(pipe(out) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(out[1], 2);
        close(out[0]);
        close(out[1]);
        setenv(env_name, env_val, 1);
        const char *argv[64];
        int k = 0;
        argv[k++] = "setcache-tests";
        for (int i = 0; i < n && k < 63; i++) {
            argv[k++] = names[i];
        }
        argv[k] = NULL;
        execv("/proc/self/exe", (char *const *)argv);
        _exit(3);
    }
    close(out[1]);
    FILE *f = fdopen(out[0], "r");
    char line[1024];
    int passed = -1, failed = -1, skipped = -1;
    while (fgets(line, sizeof line, f)) {
        fprintf(stderr, "    | %s", line);
        sscanf(line, "%d passed, %d failed, %d skipped", &passed, &failed, &skipped);
    }
    fclose(f);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 && passed == n && failed == 0 && skipped == 0;
}

/* ---- PgBouncer ---- */

static char bdir[128];
static pid_t bouncer_pid;

static void stop_bouncer(void)
{
    if (bouncer_pid > 0) {
        kill(bouncer_pid, SIGTERM);
        for (int i = 0; i < 500 && kill(bouncer_pid, 0) == 0; i++) {
            usleep(10000);
        }
        if (kill(bouncer_pid, 0) == 0) {
            kill(bouncer_pid, SIGKILL);
        }
        bouncer_pid = 0;
    }
    if (bdir[0]) {
        t_sh("rm -rf '%s'", bdir);
        bdir[0] = '\0';
    }
    t_sql_try("ALTER SYSTEM RESET log_statement");
    t_sql_try("SELECT pg_reload_conf()");
}

/* Start PgBouncer in front of the test server on a private socket; its
 * conninfo in ci. */
static void start_bouncer(const char *mode, int pool, char *ci, size_t cap)
{
    if (getenv("SETCACHE_TEST_PGBOUNCER") && strcmp(getenv("SETCACHE_TEST_PGBOUNCER"), "0") == 0) {
        t_skip("SETCACHE_TEST_PGBOUNCER=0");
    }
    t_pg_bindir();
    if (t_sh("command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer") != 0) {
        t_skip("pgbouncer not found (apt-get install pgbouncer)");
    }
    t_on_fail(stop_bouncer);
    char host[256];
    int port;
    server_address(host, sizeof host, &port);
    t_pg_dir(bdir, sizeof bdir, "pgbouncer");
    int bport = 40000 + (int)(getpid() % 20000);
    char path[256];
    snprintf(path, sizeof path, "%s/users.txt", bdir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fprintf(f, "\"postgres\" \"\"\n");
    fclose(f);
    snprintf(path, sizeof path, "%s/pgbouncer.ini", bdir);
    f = fopen(path, "w");
    CHECK(f != NULL);
    fprintf(f,
            "[databases]\npostgres = host=%s port=%d dbname=postgres\n"
            "[pgbouncer]\nlisten_addr =\nunix_socket_dir = %s\nlisten_port = %d\n"
            "auth_type = trust\nauth_file = %s/users.txt\npool_mode = %s\n"
            "default_pool_size = %d\nreserve_pool_size = 0\nmax_client_conn = 1000\n"
            "admin_users = postgres\nlogfile = %s/pgbouncer.log\npidfile = %s/pgbouncer.pid\n",
            host, port, bdir, bport, bdir, mode, pool, bdir, bdir);
    fclose(f);
    if (*t_pg_runas()) {
        CHECK_INT(t_sh("chown -R $(stat -c %%U '%s') '%s'", getenv("SETCACHE_PGDATA"), bdir), 0);
    }
    CHECK_INT(t_sh("%s $(command -v pgbouncer || echo /usr/sbin/pgbouncer) -d -q '%s'",
                   t_pg_runas(), path),
              0);
    snprintf(path, sizeof path, "%s/pgbouncer.pid", bdir);
    double t0 = t_now_ms();
    while (bouncer_pid <= 0 && t_now_ms() - t0 < 5000) {
        f = fopen(path, "r");
        if (f) {
            int p = 0;
            if (fscanf(f, "%d", &p) == 1) {
                bouncer_pid = p;
            }
            fclose(f);
        }
        t_sleep_ms(10);
    }
    CHECK(bouncer_pid > 0);
    snprintf(ci, cap, "host=%s port=%d dbname=postgres user=postgres", bdir, bport);
    t0 = t_now_ms();
    bool up = false;
    while (!up && t_now_ms() - t0 < 5000) {
        PGconn *c = PQconnectdb(ci);
        up = PQstatus(c) == CONNECTION_OK;
        PQfinish(c);
        if (!up) {
            t_sleep_ms(20);
        }
    }
    CHECK(up);
}

/* Watches the server's sessions while the suite runs through PgBouncer:
 * the library's pooled sessions (they come only through it) and its
 * listeners (direct). */
typedef struct watch {
    atomic_int stop;
    int max_pool, max_listen, samples;
} watch;

static void *watch_sessions(void *arg)
{
    watch *w = arg;
    PGconn *a = PQconnectdb(t_conninfo());
    double t0 = t_now_ms();
    while (PQstatus(a) == CONNECTION_OK && !atomic_load(&w->stop) && t_now_ms() - t0 < 600000) {
        PGresult *r = PQexec(a, "SELECT count(*) FILTER (WHERE application_name LIKE "
                                "'setcache:%:pool'), count(*) FILTER (WHERE application_name "
                                "LIKE 'setcache:%:listen') FROM pg_stat_activity");
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            int p = atoi(PQgetvalue(r, 0, 0)), l = atoi(PQgetvalue(r, 0, 1));
            w->max_pool = p > w->max_pool ? p : w->max_pool;
            w->max_listen = l > w->max_listen ? l : w->max_listen;
            w->samples++;
        }
        PQclear(r);
        t_sleep_ms(20);
    }
    PQfinish(a);
    return NULL;
}

/* Statements the server ran by name (prepared) and unnamed, from its log
 * since offset. */
static void count_executes(long offset, int *named, int *unnamed)
{
    *named = *unnamed = 0;
    FILE *f = fopen(getenv("SETCACHE_PG_LOG"), "r");
    CHECK(f != NULL);
    fseek(f, offset, SEEK_SET);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        const char *e = strstr(line, "LOG:  execute ");
        if (!e) {
            continue;
        }
        e += strlen("LOG:  execute ");
        if (strncmp(e, "<unnamed>", 9) == 0) {
            (*unnamed)++;
        } else {
            (*named)++;
            if (*named <= 3) {
                fprintf(stderr, "    named statement: %s", e);
            }
        }
    }
    fclose(f);
}

static long log_size(void)
{
    struct stat st;
    return getenv("SETCACHE_PG_LOG") && stat(getenv("SETCACHE_PG_LOG"), &st) == 0 ? (long)st.st_size
                                                                                  : -1;
}

/* The write and coherence tests, with the pool through PgBouncer. */
static const char *const through_bouncer[] = {
    "read_your_writes_across_threads",
    "write_db_failure_leaves_cache_unchanged",
    "monotonic_reads_under_concurrent_writers",
    "no_phantom_values_from_aborted_writes",
    "delete_falls_back_to_default_then_not_found",
    "preload_loads_a_type_in_one_streamed_query",
    "external_pgbench_writer_converges",
    "writes_inside_every_reconnect_gap_are_never_missed",
    "reconcile_after_reconnect_is_batched_and_never_blocks_readers",
    "load_in_flight_across_a_reconnect_is_not_installed",
    "g11_snapshot_never_holds_part_of_a_transaction",
    "statement_timeout_cancels_on_the_server_and_changes_nothing",
    /* session mode only: a client connection keeps its server backend, so
     * a test can stop the backend of its write, and the library tells its
     * own writes' notifications by backend (in transaction mode one may
     * cost a re-read, which these two count) */
    "uncertain_write_is_reported_and_invalidates",
    "local_write_echo_does_not_invalidate",
    "set_many_is_one_statement_and_applies_by_version",
};
#define SESSION_ONLY 3

static void suite_through_bouncer(const char *mode, int pool)
{
    char ci[512];
    start_bouncer(mode, pool, ci, sizeof ci);
    long offset = log_size();
    CHECK(offset >= 0);
    t_sql("ALTER SYSTEM SET log_statement = 'all'");
    t_sql("SELECT pg_reload_conf()");
    t_sleep_ms(200);
    watch w = {0};
    pthread_t th;
    pthread_create(&th, NULL, watch_sessions, &w);
    int n = (int)(sizeof through_bouncer / sizeof through_bouncer[0]);
    if (strcmp(mode, "transaction") == 0) {
        n -= SESSION_ONLY; /* a transaction may run on another server backend than the last */
    }
    bool ok = run_nested(through_bouncer, n, "SETCACHE_TEST_POOL_CONNINFO", ci);
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    t_sql("ALTER SYSTEM RESET log_statement");
    t_sql("SELECT pg_reload_conf()");
    int named, unnamed;
    count_executes(offset, &named, &unnamed);
    fprintf(stderr,
            "    %s mode: %d tests; server sessions of the library at most %d pooled (PgBouncer "
            "pool %d) + %d listeners; %d unnamed and %d named statements executed\n",
            mode, n, w.max_pool, pool, w.max_listen, unnamed, named);
    CHECK(ok);
    CHECK(w.samples > 10);
    CHECK(w.max_pool <= pool);
    CHECK(w.max_pool >= 1 && w.max_listen >= 1);
    CHECK(unnamed > 100); /* the log was read */
    CHECK_INT(named, 0);
    stop_bouncer();
}

TEST_T(pgbouncer_transaction_mode_runs_the_write_and_coherence_tests, 600)
{
    suite_through_bouncer("transaction", 4);
}

TEST_T(pgbouncer_session_mode_runs_the_write_and_coherence_tests, 600)
{
    suite_through_bouncer("session", 8);
}

/* ---- failover to a promoted standby ---- */

static char fdir[128];
static int fport[2];
static bool fup[2];

static void stop_nodes(void)
{
    for (int i = 0; i < 2; i++) {
        if (fup[i]) {
            t_sh("%s %s/pg_ctl -D %s/n%d -m immediate -w stop >/dev/null 2>&1", t_pg_runas(),
                 getenv("SETCACHE_PG_BINDIR"), fdir, i);
            fup[i] = false;
        }
    }
    if (fdir[0]) {
        t_sh("rm -rf '%s'", fdir);
        fdir[0] = '\0';
    }
}

static void node_start(int i)
{
    CHECK_INT(t_sh("%s %s/pg_ctl -D %s/n%d -l %s/n%d.log -w -t 60 -o \"-c listen_addresses='' "
                   "-k %s -p %d -c fsync=off -c wal_level=replica -c hot_standby=on -c "
                   "max_wal_senders=5\" start >/dev/null 2>&1",
                   t_pg_runas(), t_pg_bindir(), fdir, i, fdir, i, fdir, fport[i]),
              0);
    fup[i] = true;
}

static void node_stop(int i, const char *how)
{
    CHECK_INT(t_sh("%s %s/pg_ctl -D %s/n%d -m %s -w stop >/dev/null 2>&1", t_pg_runas(),
                   t_pg_bindir(), fdir, i, how),
              0);
    fup[i] = false;
}

/* One value from node i ("" when the query gave no row). */
static const char *node_value(int i, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *node_value(int i, const char *fmt, ...)
{
    static char out[4][256];
    static int turn;
    char *v = out[turn++ % 4];
    char sql[1024], ci[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    snprintf(ci, sizeof ci, "host=%s port=%d user=postgres dbname=postgres", fdir, fport[i]);
    PGconn *a = PQconnectdb(ci);
    CHECK(PQstatus(a) == CONNECTION_OK);
    PGresult *r = PQexec(a, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        t_fail(__FILE__, __LINE__, "%s on node %d: %s", sql, i, PQerrorMessage(a));
    }
    snprintf(v, 256, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    PQfinish(a);
    return v;
}

typedef struct reader_job {
    setcache *c;
    char got[64];
    int rc;
} reader_job;

static void *read_once(void *arg)
{
    reader_job *j = arg;
    j->rc = setcache_get_string(j->c, "account", "1", "a", j->got, sizeof j->got, NULL);
    return NULL;
}

/* Every cached setting of accounts 1..n equals node i's rows. */
static bool cache_equals_node(setcache *c, int node, int n)
{
    for (int e = 1; e <= n; e++) {
        for (const char *k = "a"; *k <= 'b'; k = *k == 'a' ? "b" : "c") {
            const char *want = node_value(node,
                                          "SELECT value FROM \"%s\".settings WHERE entity_type = "
                                          "'account' AND entity_id = '%d' AND key = '%s'",
                                          t_schema(), e, k);
            char id[16], buf[64];
            snprintf(id, sizeof id, "%d", e);
            if (setcache_get_string(c, "account", id, k, buf, sizeof buf, NULL) != SETCACHE_OK ||
                strcmp(buf, want) != 0) {
                return false;
            }
        }
    }
    return true;
}

/* A streaming standby (asynchronous) misses the last writes, the primary
 * dies (immediate stop), the standby is promoted; the library follows with
 * a multi-host conninfo. A write the new primary acknowledged is read back
 * by every thread at once, also before the listener is back and although
 * the cache holds higher versions from the lost timeline; VALID within 15 s
 * of the promotion, and 2 s after it every cached entity equals the new
 * primary's rows. */
TEST_T(failover_to_a_promoted_standby_keeps_no_value_of_the_lost_timeline, 180)
{
    t_pg_bindir();
    t_on_fail(stop_nodes);
    t_pg_dir(fdir, sizeof fdir, "failover");
    fport[0] = 50000 + (int)(getpid() % 7000) * 2;
    fport[1] = fport[0] + 1;
    CHECK_INT(t_sh("%s %s/initdb -D %s/n0 -U postgres -A trust -N >/dev/null 2>&1", t_pg_runas(),
                   t_pg_bindir(), fdir),
              0);
    node_start(0);
    CHECK_INT(t_sh("%s %s/pg_basebackup -D %s/n1 -R -X stream -h %s -p %d -U postgres "
                   ">/dev/null 2>&1",
                   t_pg_runas(), t_pg_bindir(), fdir, fdir, fport[0]),
              0);
    node_start(1);
    double t0 = t_now_ms();
    while (strcmp(node_value(0, "SELECT count(*) FROM pg_stat_replication WHERE state = "
                                "'streaming'"),
                  "1") != 0 &&
           t_now_ms() - t0 < 20000) {
        t_sleep_ms(50);
    }
    CHECK_STR(node_value(1, "SELECT pg_is_in_recovery()::text"), "true");

    char ci[512];
    snprintf(ci, sizeof ci,
             "host=%s,%s port=%d,%d user=postgres dbname=postgres "
             "target_session_attrs=read-write connect_timeout=2",
             fdir, fdir, fport[0], fport[1]);
    setcache_options o;
    t_options(&o);
    o.conninfo = ci;
    o.listen_conninfo = ci;
    o.pool_size = 2;
    o.reconnect_initial_ms = 2500; /* leave a window before the listener is back */
    o.reconnect_max_ms = 3000;
    setcache *c = t_open_with(&o);
    const int n = 20;
    for (int e = 1; e <= n; e++) {
        char id[16];
        snprintf(id, sizeof id, "%d", e);
        CHECK_OK(setcache_set_string(c, "account", id, "a", "v1"));
        CHECK_OK(setcache_set_string(c, "account", id, "b", "v1"));
    }
    CHECK(cache_equals_node(c, 0, n));
    /* the standby has all of that, then stops */
    const char *lsn = node_value(0, "SELECT pg_current_wal_lsn()::text");
    t0 = t_now_ms();
    while (strcmp(node_value(1, "SELECT (pg_last_wal_replay_lsn() >= '%s')::text", lsn), "true") !=
               0 &&
           t_now_ms() - t0 < 20000) {
        t_sleep_ms(20);
    }
    node_stop(1, "fast");
    /* writes the standby never sees: more than a sequence's WAL prefetch
     * (32), so their versions are above anything the standby will give */
    char buf[64];
    for (int round = 0; round < 10; round++) {
        for (int e = 1; e <= 10; e++) {
            char id[16], v[32];
            snprintf(id, sizeof id, "%d", e);
            snprintf(v, sizeof v, "lost-%d", round);
            CHECK_OK(setcache_set_string(c, "account", id, "a", v));
        }
    }
    CHECK_OK(setcache_get_string(c, "account", "2", "a", buf, sizeof buf, NULL));
    CHECK_STR(buf, "lost-9");
    long long lost_max =
        atoll(node_value(0, "SELECT max(version) FROM \"%s\".settings", t_schema()));
    node_stop(0, "immediate");
    node_start(1);
    CHECK_INT(t_sh("%s %s/pg_ctl -D %s/n1 -w -t 60 promote >/dev/null 2>&1", t_pg_runas(),
                   t_pg_bindir(), fdir),
              0);
    double promoted = t_now_ms();

    /* a write acknowledged by the new primary, read back at once by every
     * thread, listener or not */
    int rc = SETCACHE_ERR_DB;
    while (rc != SETCACHE_OK && t_now_ms() - promoted < 10000) {
        rc = setcache_set_string(c, "account", "1", "a", "after");
        if (rc != SETCACHE_OK) {
            t_sleep_ms(50);
        }
    }
    CHECK_OK(rc);
    int state = t_stats(c).state;
    reader_job jobs[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        jobs[k] = (reader_job){.c = c};
        pthread_create(&th[k], NULL, read_once, &jobs[k]);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        CHECK_OK(jobs[k].rc);
        CHECK_STR(jobs[k].got, "after");
    }
    long long after_v = atoll(node_value(1,
                                         "SELECT version FROM \"%s\".settings WHERE entity_id = "
                                         "'1' AND key = 'a'",
                                         t_schema()));
    fprintf(stderr,
            "    write on the new primary %.0f ms after the promotion (listener %s): read back "
            "by 4 threads; its version %lld < %lld on the lost timeline\n",
            t_now_ms() - promoted, setcache_state_name(state), after_v, lost_max);
    CHECK(after_v < lost_max); /* the cache held higher versions than the new primary's */
    /* no value of the lost timeline is answered, listener or not */
    CHECK_OK(setcache_get_string(c, "account", "2", "a", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v1");

    t0 = t_now_ms();
    while (t_stats(c).state != SETCACHE_STATE_VALID && t_now_ms() - promoted < 15000) {
        t_sleep_ms(10);
    }
    CHECK_INT(t_stats(c).state, SETCACHE_STATE_VALID);
    double valid = t_now_ms();
    bool same = false;
    while (!same && t_now_ms() - valid < 2000) {
        same = cache_equals_node(c, 1, n);
        if (!same) {
            t_sleep_ms(20);
        }
    }
    fprintf(stderr,
            "    VALID %.0f ms after the promotion; cache equal to the new primary %.0f ms "
            "after VALID\n",
            valid - promoted, t_now_ms() - valid);
    CHECK(same);
    /* and it keeps following the new primary */
    CHECK_OK(setcache_set_string(c, "account", "3", "b", "new"));
    CHECK_OK(setcache_get_string(c, "account", "3", "b", buf, sizeof buf, NULL));
    CHECK_STR(buf, "new");
    setcache_close(c);
    stop_nodes();
}

/* ---- a network partition, over TCP, in a network namespace ---- */

static char ns[32], veth[16], pdir[128];
static int pport, home_ns = -1, octet;
static bool pup, nft_used;

static void end_partition(void)
{
    if (home_ns >= 0) {
        setns(home_ns, CLONE_NEWNET); /* back, so that the links can be seen */
        close(home_ns);
        home_ns = -1;
    }
    if (pup) {
        t_sh("%s %s/pg_ctl -D %s/data -m immediate -w stop >/dev/null 2>&1", t_pg_runas(),
             getenv("SETCACHE_PG_BINDIR"), pdir);
        pup = false;
    }
    if (ns[0]) {
        t_sh("ip netns del %s >/dev/null 2>&1", ns); /* its end of the pair and its rules go */
        ns[0] = '\0';
    }
    if (veth[0]) {
        t_sh("ip link del %s >/dev/null 2>&1", veth);
        veth[0] = '\0';
    }
    if (pdir[0]) {
        t_sh("rm -rf '%s'", pdir);
        pdir[0] = '\0';
    }
}

/* Drop (or let through again) every packet between the namespace and the
 * server, from inside the namespace. */
static void cut(bool on)
{
    if (on) {
        nft_used = t_sh("ip netns exec %s nft -f - >/dev/null 2>&1 <<'EOF'\n"
                        "table inet setcache_partition {\n"
                        "  chain in { type filter hook input priority 0; ip saddr 10.213.%d.1 "
                        "drop; }\n"
                        "  chain out { type filter hook output priority 0; ip daddr 10.213.%d.1 "
                        "drop; }\n"
                        "}\nEOF",
                        ns, octet, octet) == 0;
        if (!nft_used) {
            CHECK_INT(t_sh("ip netns exec %s ip link set sc%dn down", ns, octet), 0);
        }
    } else if (nft_used) {
        CHECK_INT(t_sh("ip netns exec %s nft delete table inet setcache_partition", ns), 0);
    } else {
        CHECK_INT(t_sh("ip netns exec %s ip link set sc%dn up", ns, octet), 0);
    }
}

static int open_fds(void)
{
    return t_sh("exit $(ls /proc/%d/fd | wc -l)", (int)getpid());
}

static int server_sessions(const char *sock)
{
    char ci[256];
    snprintf(ci, sizeof ci, "host=%s port=%d user=postgres dbname=postgres", sock, pport);
    PGconn *a = PQconnectdb(ci);
    CHECK(PQstatus(a) == CONNECTION_OK);
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'setcache:%d:%%'",
             (int)getpid());
    PGresult *r = PQexec(a, sql);
    int n = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    PQfinish(a);
    return n;
}

static void psql_on(const char *sock, const char *sql)
{
    CHECK_INT(t_sh("psql -q 'host=%s port=%d user=postgres dbname=postgres' -c \"%s\" "
                   ">/dev/null 2>&1",
                   sock, pport, sql),
              0);
}

/* Cached reads during the partition must answer within 5 ms. A read that
 * waits - for the network, a lock, anything - does so by a voluntary
 * context switch: one that took over 5 ms and waited fails the test. On a
 * shared VM a read can also lose its CPU without a switch the kernel sees
 * (the hypervisor takes the vCPU): those are counted, and more than 1 % of
 * them over 5 ms fails the test too. */
typedef struct read_watch {
    int reads, slow_unwaited;
    double worst, worst_waited;
} read_watch;

static void cached_read(setcache *c, const char *id, char *buf, size_t cap, read_watch *w)
{
    struct rusage u0, u1;
    getrusage(RUSAGE_THREAD, &u0);
    double r0 = t_now_ms();
    CHECK_OK(setcache_get_string(c, "account", id, "a", buf, cap, NULL));
    double took = t_now_ms() - r0;
    getrusage(RUSAGE_THREAD, &u1);
    bool waited = u1.ru_nvcsw != u0.ru_nvcsw;
    w->reads++;
    w->worst = took > w->worst ? took : w->worst;
    if (waited) {
        w->worst_waited = took > w->worst_waited ? took : w->worst_waited;
        if (took > 5) {
            t_fail(__FILE__, __LINE__, "a cached read waited and took %.1f ms", took);
        }
    } else if (took > 5) {
        w->slow_unwaited++;
    }
}

/* The process reaches its server over a veth pair and TCP from its own
 * network namespace; then every packet between them is dropped, and later
 * let through again. INTERRUPTED within heartbeat_ms + heartbeat_deadline_ms
 * + 250 ms; cached reads keep answering (each within 5 ms); a write and a
 * load issued meanwhile return within io_timeout_ms + 1 s
 * (SETCACHE_ERR_UNCERTAIN for the write whose statement was sent,
 * SETCACHE_ERR_DB for the load); after healing, VALID within 15 s and what
 * changed meanwhile visible within 2 s of VALID; at most pool_size + 1
 * sessions on the server and no descriptor left behind. */
TEST_T(network_partition_over_tcp_turns_into_clear_errors_and_heals, 180)
{
    t_pg_bindir();
    if (geteuid() != 0) {
        t_skip("network namespaces need root");
    }
    t_on_fail(end_partition);
    octet = 1 + (int)(getpid() % 250);
    snprintf(ns, sizeof ns, "setcache-part-%d", (int)getpid());
    if (t_sh("ip netns add %s >/dev/null 2>&1", ns) != 0) {
        ns[0] = '\0';
        t_skip("cannot create a network namespace here (ip netns add failed)");
    }
    snprintf(veth, sizeof veth, "sc%dh", octet);
    CHECK_INT(t_sh("ip link add %s type veth peer name sc%dn && ip link set sc%dn netns %s && "
                   "ip addr add 10.213.%d.1/30 dev %s && ip link set %s up && "
                   "ip netns exec %s ip addr add 10.213.%d.2/30 dev sc%dn && "
                   "ip netns exec %s ip link set sc%dn up && ip netns exec %s ip link set lo up",
                   veth, octet, octet, ns, octet, veth, veth, ns, octet, octet, ns, octet, ns),
              0);
    /* a server on the host's end, reaping sessions of vanished clients with
     * its own keepalives */
    t_pg_dir(pdir, sizeof pdir, "partition");
    pport = 45000 + (int)(getpid() % 5000);
    CHECK_INT(t_sh("%s %s/initdb -D %s/data -U postgres -A trust -N >/dev/null 2>&1", t_pg_runas(),
                   t_pg_bindir(), pdir),
              0);
    CHECK_INT(t_sh("%s sh -c \"echo 'host all all 10.213.%d.0/30 trust' >> %s/data/pg_hba.conf\"",
                   t_pg_runas(), octet, pdir),
              0);
    CHECK_INT(t_sh("%s %s/pg_ctl -D %s/data -l %s/server.log -w -t 60 -o \"-c "
                   "listen_addresses=10.213.%d.1 -p %d -k %s -c fsync=off -c "
                   "tcp_keepalives_idle=1 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3\" "
                   "start >/dev/null 2>&1",
                   t_pg_runas(), t_pg_bindir(), pdir, pdir, octet, pport, pdir),
              0);
    pup = true;

    /* this process moves into the namespace (it has no thread yet) */
    home_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    char path[96];
    snprintf(path, sizeof path, "/var/run/netns/%s", ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(home_ns >= 0 && fd >= 0);
    CHECK_INT(setns(fd, CLONE_NEWNET), 0);
    close(fd);

    int fds0 = open_fds();
    char ci[256];
    snprintf(ci, sizeof ci, "host=10.213.%d.1 port=%d user=postgres dbname=postgres", octet, pport);
    setcache_options o;
    t_options(&o);
    o.conninfo = ci;
    o.listen_conninfo = NULL;
    o.pool_size = 1;
    o.io_timeout_ms = 2000;
    o.heartbeat_ms = 500;
    o.heartbeat_deadline_ms = 500;
    setcache *c = t_open_with(&o);
    char buf[64];
    for (int e = 1; e <= 5; e++) {
        char id[16];
        snprintf(id, sizeof id, "%d", e);
        CHECK_OK(setcache_set_string(c, "account", id, "a", "v1"));
        CHECK_OK(setcache_get_string(c, "account", id, "a", buf, sizeof buf, NULL));
    }
    double t0 = t_now_ms();
    while (t_stats(c).state != SETCACHE_STATE_VALID && t_now_ms() - t0 < 10000) {
        t_sleep_ms(10);
    }
    CHECK_INT(t_stats(c).state, SETCACHE_STATE_VALID);

    cut(true);
    double cut_at = t_now_ms();
    /* cached reads answer at once while the listener finds out */
    read_watch rw = {0};
    while (t_stats(c).state == SETCACHE_STATE_VALID && t_now_ms() - cut_at < 5000) {
        char id[16];
        snprintf(id, sizeof id, "%d", 1 + rw.reads % 5);
        cached_read(c, id, buf, sizeof buf, &rw);
        usleep(200);
    }
    double interrupted = t_now_ms() - cut_at;
    CHECK(t_stats(c).state != SETCACHE_STATE_VALID);
    CHECK(interrupted <= o.heartbeat_ms + o.heartbeat_deadline_ms + 250);

    /* a write on the established connection, then a load (a new one) */
    t0 = t_now_ms();
    CHECK_RC(setcache_set_string(c, "account", "1", "a", "cut"), SETCACHE_ERR_UNCERTAIN);
    double write_ms = t_now_ms() - t0;
    CHECK(write_ms <= o.io_timeout_ms + 1000);
    t0 = t_now_ms();
    CHECK_RC(setcache_get_string(c, "account", "99", "a", buf, sizeof buf, NULL), SETCACHE_ERR_DB);
    double load_ms = t_now_ms() - t0;
    CHECK(load_ms <= o.io_timeout_ms + 1000);
    for (int e = 2; e <= 5; e++) {
        char id[16];
        snprintf(id, sizeof id, "%d", e);
        cached_read(c, id, buf, sizeof buf, &rw);
        CHECK_STR(buf, "v1");
    }
    /* meanwhile, on the server (its Unix socket is not cut) */
    char upd[256];
    snprintf(upd, sizeof upd,
             "UPDATE \\\"%s\\\".settings SET value = 'meanwhile' WHERE entity_id = '2'",
             t_schema());
    psql_on(pdir, upd);

    cut(false);
    double healed = t_now_ms();
    while (t_stats(c).state != SETCACHE_STATE_VALID && t_now_ms() - healed < 15000) {
        t_sleep_ms(10);
    }
    CHECK_INT(t_stats(c).state, SETCACHE_STATE_VALID);
    double valid = t_now_ms();
    bool seen = false;
    while (!seen && t_now_ms() - valid < 2000) {
        seen = setcache_get_string(c, "account", "2", "a", buf, sizeof buf, NULL) == SETCACHE_OK &&
               strcmp(buf, "meanwhile") == 0;
        if (!seen) {
            t_sleep_ms(10);
        }
    }
    double seen_ms = t_now_ms() - valid;
    CHECK(seen);
    /* the write's outcome is whatever the table says */
    CHECK_OK(setcache_get_string(c, "account", "1", "a", buf, sizeof buf, NULL));
    CHECK(strcmp(buf, "v1") == 0 || strcmp(buf, "cut") == 0);
    CHECK_OK(setcache_set_string(c, "account", "1", "a", "after"));
    /* the sessions cut off end on the server (its keepalives) */
    int sessions = server_sessions(pdir);
    t0 = t_now_ms();
    while (sessions > o.pool_size + 1 && t_now_ms() - t0 < 10000) {
        t_sleep_ms(100);
        sessions = server_sessions(pdir);
    }
    fprintf(stderr,
            "    partition (%s): INTERRUPTED after %.0f ms, %d cached reads meanwhile (worst "
            "%.2f ms; %d over 5 ms without waiting); write "
            "SETCACHE_ERR_UNCERTAIN after %.0f ms, load SETCACHE_ERR_DB after "
            "%.0f ms; VALID %.0f ms after healing, the change made meanwhile seen %.0f ms after "
            "VALID; %d sessions\n",
            nft_used ? "nftables" : "link down", interrupted, rw.reads, rw.worst, rw.slow_unwaited,
            write_ms, load_ms, valid - healed, seen_ms, sessions);
    CHECK(sessions <= o.pool_size + 1);
    CHECK(rw.reads > 100 && rw.slow_unwaited * 100 <= rw.reads);
    setcache_close(c);
    CHECK_INT(open_fds(), fds0);
    end_partition();
}
