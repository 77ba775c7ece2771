/*
 * harness.c - the runner behind harness.h. Each test forks; the child gets a
 * timeout (scaled by SETCACHE_TEST_TIMEOUT_SCALE, e.g. under valgrind), its
 * own schema, and drops that schema at the end.
 */
#include "harness.h"

#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define LEAK_CHECK() __lsan_do_recoverable_leak_check()
#else
#define LEAK_CHECK() 0
#endif

#define MAX_TESTS 256

static struct {
    const char *name;
    t_fn fn;
    int timeout_s;
} tests[MAX_TESTS];
static int ntests;
static const char *cur_name;
static char schema[64];
static PGconn *admin;

void t_register(const char *name, t_fn fn, int timeout_s)
{
    if (ntests < MAX_TESTS) {
        tests[ntests].name = name;
        tests[ntests].fn = fn;
        tests[ntests].timeout_s = timeout_s;
        ntests++;
    }
}

static void (*on_fail)(void);

void t_on_fail(void (*fn)(void))
{
    on_fail = fn;
}

void t_fail(const char *file, int line, const char *fmt, ...)
{
    if (on_fail) {
        on_fail();
    }
    va_list ap;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    _exit(1);
}

void t_skip(const char *why)
{
    fprintf(stderr, "    skipped: %s\n", why);
    _exit(77);
}

const char *t_schema(void)
{
    return schema;
}

const char *t_conninfo(void)
{
    const char *ci = getenv("SETCACHE_TEST_CONNINFO");
    return ci ? ci : "";
}

const char *t_build_dir(void)
{
    const char *b = getenv("SETCACHE_BUILD");
    return b && *b ? b : "build";
}

static void dbg_log(void *a, int l, const char *m)
{
    (void)a;
    fprintf(stderr, "LOG%d %s\n", l, m);
}

void t_options(setcache_options *o)
{
    setcache_options_init(o);
    o->conninfo = t_conninfo();
    /* behind a pooler (tests/test_topology.c): the pool through it, the
     * listener direct */
    const char *pooled = getenv("SETCACHE_TEST_POOL_CONNINFO");
    if (pooled) {
        o->listen_conninfo = o->conninfo;
        o->conninfo = pooled;
    }
    o->schema = schema;
    o->channel = schema;
    if (getenv("SETCACHE_TEST_LOG")) {
        o->log = dbg_log;
    }
    o->create_schema = true;
}

setcache *t_open_with(setcache_options *o)
{
    setcache *c = NULL;
    int rc = setcache_open(&c, o);
    if (rc != SETCACHE_OK) {
        t_fail(__FILE__, __LINE__, "setcache_open: %s: %s", setcache_strerror(rc),
               setcache_errmsg());
    }
    return c;
}

setcache *t_open(void)
{
    setcache_options o;
    t_options(&o);
    return t_open_with(&o);
}

PGconn *t_admin(void)
{
    if (!admin) {
        const char *ci = t_conninfo();
        admin = PQconnectdb(ci);
        if (PQstatus(admin) != CONNECTION_OK) {
            t_fail(__FILE__, __LINE__, "admin connect: %s", PQerrorMessage(admin));
        }
        PQclear(PQexec(admin, "SET client_min_messages = warning"));
    }
    return admin;
}

void t_admin_close(void)
{
    if (admin) {
        PQfinish(admin);
        admin = NULL;
    }
}

static PGresult *vrun(const char *fmt, va_list ap)
{
    char *sql;
    if (vasprintf(&sql, fmt, ap) < 0) {
        t_fail(__FILE__, __LINE__, "out of memory");
    }
    PGresult *r = PQexec(t_admin(), sql);
    free(sql);
    return r;
}

static bool ok_result(PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

void t_sql(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *r = vrun(fmt, ap);
    va_end(ap);
    if (!ok_result(r)) {
        t_fail(__FILE__, __LINE__, "SQL failed: %s", PQresultErrorMessage(r));
    }
    PQclear(r);
}

bool t_sql_try(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *r = vrun(fmt, ap);
    va_end(ap);
    bool ok = ok_result(r);
    PQclear(r);
    return ok;
}

const char *t_sql_value(const char *fmt, ...)
{
    static char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    PGresult *r = vrun(fmt, ap);
    va_end(ap);
    if (!ok_result(r) || PQntuples(r) < 1) {
        t_fail(__FILE__, __LINE__, "SQL value failed: %s", PQresultErrorMessage(r));
    }
    snprintf(buf, sizeof buf, "%s", PQgetisnull(r, 0, 0) ? "(null)" : PQgetvalue(r, 0, 0));
    PQclear(r);
    return buf;
}

long long t_server_statements(void)
{
    PGresult *r = PQexec(t_admin(), "SELECT 1 FROM pg_extension WHERE extname = "
                                    "'pg_stat_statements'");
    bool have = ok_result(r) && PQntuples(r) == 1;
    PQclear(r);
    if (!have) {
        return -1;
    }
    /* the listener's heartbeat (NOTIFY on the channel) runs whatever the
     * application does; every other statement of the test counts */
    const char *v = t_sql_value("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE "
                                "query LIKE '%%\"%s\"%%' AND query NOT LIKE 'NOTIFY%%'",
                                schema);
    return atoll(v);
}

double t_scale(void)
{
    const char *s = getenv("SETCACHE_TEST_TIMEOUT_SCALE");
    return s && atof(s) > 0 ? atof(s) : 1.0;
}

double t_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

double t_wait_value(setcache *c, const char *type, const char *id, const char *key,
                    const char *want, int timeout_ms)
{
    double t0 = t_now_ms();
    char buf[256];
    while (t_now_ms() - t0 < timeout_ms) {
        int rc = setcache_get_string(c, type, id, key, buf, sizeof buf, NULL);
        if ((want && rc == SETCACHE_OK && strcmp(buf, want) == 0) ||
            (!want && rc == SETCACHE_NOT_FOUND)) {
            return t_now_ms() - t0;
        }
        usleep(200);
    }
    return -1;
}

void t_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Only where a database was given (the unit tier runs without one). */
static void drop_schema(void)
{
    if (schema[0] && getenv("SETCACHE_TEST_CONNINFO")) {
        PGconn *a = PQconnectdb(t_conninfo());
        if (PQstatus(a) == CONNECTION_OK) {
            char sql[160];
            snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS \"%s\" CASCADE", schema);
            PQclear(PQexec(a, "SET client_min_messages = warning"));
            PQclear(PQexec(a, sql));
        }
        PQfinish(a);
    }
}

static void on_alarm(int sig)
{
    (void)sig;
    if (on_fail) {
        on_fail();
    }
    signal(SIGALRM, SIG_DFL);
    raise(SIGALRM);
}

static bool selected(const char *name, int argc, char **argv)
{
    if (argc <= 1) {
        return true;
    }
    for (int i = 1; i < argc; i++) {
        if (strstr(name, argv[i])) {
            return true;
        }
    }
    return false;
}

/* Child mode: a test that must run its child in a fresh program (under
 * ThreadSanitizer, which can't start threads after a multi-threaded fork)
 * re-executes this binary with SETCACHE_TEST_CHILD naming the function and
 * SETCACHE_TEST_SCHEMA its schema; the function runs alone, in-process. */
static struct {
    const char *name;
    t_fn fn;
} children[8];
static int nchildren;

void t_register_child(const char *name, t_fn fn)
{
    if (nchildren < 8) {
        children[nchildren].name = name;
        children[nchildren].fn = fn;
        nchildren++;
    }
}

void t_exec_child(const char *name, int up, int down)
{
    char fd[16];
    snprintf(fd, sizeof fd, "%d", up);
    setenv("SETCACHE_TEST_UP", fd, 1);
    snprintf(fd, sizeof fd, "%d", down);
    setenv("SETCACHE_TEST_DOWN", fd, 1);
    setenv("SETCACHE_TEST_SCHEMA", schema, 1);
    setenv("SETCACHE_TEST_CHILD", name, 1);
    execl("/proc/self/exe", "setcache-tests", (char *)NULL);
    _exit(3);
}

static void run_child_mode(const char *name)
{
    const char *s = getenv("SETCACHE_TEST_SCHEMA");
    snprintf(schema, sizeof schema, "%s", s ? s : "");
    cur_name = name;
    for (int i = 0; i < nchildren; i++) {
        if (strcmp(children[i].name, name) == 0) {
            children[i].fn();
            fflush(NULL);
            _exit(0);
        }
    }
    fprintf(stderr, "no child function %s\n", name);
    _exit(2);
}

int main(int argc, char **argv)
{
    if (getenv("SETCACHE_TEST_CHILD")) {
        run_child_mode(getenv("SETCACHE_TEST_CHILD"));
    }
    int passed = 0, failed = 0, skipped = 0;
    double scale = 1;
    const char *s = getenv("SETCACHE_TEST_TIMEOUT_SCALE");
    if (s && atof(s) > 0) {
        scale = atof(s);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < ntests; i++) {
        if (!selected(tests[i].name, argc, argv)) {
            continue;
        }
        cur_name = tests[i].name;
        snprintf(schema, sizeof schema, "t_%.40s_%d", cur_name, (int)(getpid() % 100000));
        double t0 = t_now_ms();
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            setpgid(0, 0);
            alarm((unsigned)(tests[i].timeout_s * scale + 0.5));
            signal(SIGALRM, on_alarm);
            tests[i].fn();
            if (admin) {
                PQfinish(admin);
                admin = NULL;
            }
            drop_schema();
            fflush(NULL);
            /* the child ends with _exit, so ask for the leak report here */
            _exit(LEAK_CHECK() ? 1 : 0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        /* end whatever the test left running in its own process group */
        kill(-pid, SIGKILL);
        double ms = t_now_ms() - t0;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            printf("ok      %s (%.0f ms)\n", cur_name, ms);
            passed++;
        } else if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
            printf("skip    %s\n", cur_name);
            skipped++;
        } else {
            if (WIFSIGNALED(st)) {
                printf("FAIL    %s: killed by signal %d%s (%.0f ms)\n", cur_name, WTERMSIG(st),
                       WTERMSIG(st) == SIGALRM ? " (timeout)" : "", ms);
            } else {
                printf("FAIL    %s: exit %d (%.0f ms)\n", cur_name, WEXITSTATUS(st), ms);
            }
            drop_schema();
            failed++;
        }
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    if (skipped && getenv("CI")) {
        printf("a skip counts as a failure in CI\n");
        return 1;
    }
    return failed ? 1 : 0;
}

void t_insert_rows(const char *type, const char *id, int nkeys)
{
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) "
          "SELECT '%s', '%s', 'key_' || g, 'value_' || g FROM generate_series(1, %d) g",
          t_schema(), type, id, nkeys);
}

setcache_stats t_stats(setcache *c)
{
    setcache_stats s;
    setcache_get_stats(c, &s);
    return s;
}

int t_sessions_of(pid_t pid)
{
    return atoi(t_sql_value("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                            "'setcache:%d:%%'",
                            (int)pid));
}

int t_backend_pid(void *arg, PGconn *conn)
{
    *(int *)arg = PQbackendPID(conn);
    if (getenv("SETCACHE_TEST_POOL_CONNINFO")) {
        /* behind a pooler PQbackendPID is the pooler's own number: ask the
         * server (in session mode the same backend serves what follows) */
        PGresult *r = PQexec(conn, "SELECT pg_backend_pid()");
        *(int *)arg = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : 0;
        PQclear(r);
    }
    return 0;
}

int t_deallocate_all(void *arg, PGconn *conn)
{
    (void)arg;
    PGresult *r = PQexec(conn, "DEALLOCATE ALL");
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? SETCACHE_OK : SETCACHE_ERR_DB;
    PQclear(r);
    return rc;
}

int t_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- private clusters ---- */

#define MAX_CLUSTERS 8
static t_cluster *clusters[MAX_CLUSTERS];
static int nclusters;

const char *t_pg_bindir(void)
{
    const char *b = getenv("SETCACHE_PG_BINDIR");
    if (!b || !getenv("SETCACHE_PGDATA")) {
        t_skip("needs the private test cluster of tests/withpg.sh (SETCACHE_PG_BINDIR)");
    }
    return b;
}

const char *t_pg_runas(void)
{
    const char *r = getenv("SETCACHE_PG_RUNAS");
    return r ? r : "";
}

void t_pg_dir(char *dir, size_t cap, const char *name)
{
    snprintf(dir, cap, "/tmp/setcache-%s.XXXXXX", name);
    if (!mkdtemp(dir)) {
        t_fail(__FILE__, __LINE__, "mkdtemp failed");
    }
    chmod(dir, 0755);
    if (*t_pg_runas() &&
        t_sh("chown $(stat -c %%U '%s') '%s'", getenv("SETCACHE_PGDATA"), dir) != 0) {
        t_fail(__FILE__, __LINE__, "chown %s failed", dir);
    }
}

static bool cluster_start(t_cluster *n, bool must);

void t_cluster_create(t_cluster *n, const char *name, const char *opts)
{
    t_cluster_create_or_skip(n, name, opts, false);
}

void t_cluster_create_or_skip(t_cluster *n, const char *name, const char *opts, bool skip)
{
    const char *bin = t_pg_bindir();
    memset(n, 0, sizeof *n);
    t_pg_dir(n->dir, sizeof n->dir, name);
    if (nclusters < MAX_CLUSTERS) {
        clusters[nclusters++] = n;
    }
    /* a port per process and cluster, away from the suite's and other tests' */
    n->port = 40000 + (int)(getpid() % 2000) * 4 + nclusters - 1;
    snprintf(n->opts, sizeof n->opts, "%s", opts ? opts : "");
    if (t_sh("%s %s/initdb -D %s/data -U postgres -A trust -N >%s/initdb.log 2>&1", t_pg_runas(),
             bin, n->dir, n->dir) != 0) {
        t_fail(__FILE__, __LINE__, "initdb in %s failed", n->dir);
    }
    if (!cluster_start(n, !skip)) {
        char why[600];
        snprintf(why, sizeof why, "a server with %s could not be started here", n->opts);
        t_clusters_end();
        t_skip(why);
    }
}

/* Start; on failure show the log's end, then fail the test (must) or
 * return false. */
static bool cluster_start(t_cluster *n, bool must)
{
    if (t_sh("%s %s/pg_ctl -D %s/data -l %s/server.log -w -t 60 -o \"-c listen_addresses='' -k "
             "%s -p %d -c fsync=off %s\" start >/dev/null 2>&1",
             t_pg_runas(), t_pg_bindir(), n->dir, n->dir, n->dir, n->port, n->opts) != 0) {
        t_sh("tail -5 %s/server.log >&2", n->dir);
        if (must) {
            t_fail(__FILE__, __LINE__, "starting the cluster in %s failed", n->dir);
        }
        return false;
    }
    n->up = true;
    return true;
}

void t_cluster_start(t_cluster *n)
{
    cluster_start(n, true);
}

void t_cluster_stop(t_cluster *n, const char *mode)
{
    if (n->up) {
        n->up = false;
        if (t_sh("%s %s/pg_ctl -D %s/data -m %s -w stop >/dev/null 2>&1", t_pg_runas(),
                 t_pg_bindir(), n->dir, mode) != 0) {
            t_fail(__FILE__, __LINE__, "stopping the cluster in %s failed", n->dir);
        }
    }
}

void t_clusters_end(void)
{
    for (int i = nclusters - 1; i >= 0; i--) {
        t_cluster *n = clusters[i];
        if (n->up) {
            n->up = false;
            t_sh("%s %s/pg_ctl -D %s/data -m immediate -w stop >/dev/null 2>&1", t_pg_runas(),
                 getenv("SETCACHE_PG_BINDIR"), n->dir);
        }
        if (n->dir[0]) {
            t_sh("rm -rf '%s'", n->dir);
            n->dir[0] = '\0';
        }
    }
    nclusters = 0;
}

const char *t_cluster_conninfo(const t_cluster *n)
{
    static char out[4][256];
    static int turn;
    char *v = out[turn++ % 4];
    snprintf(v, 256, "host=%s port=%d user=postgres dbname=postgres", n->dir, n->port);
    return v;
}

static PGresult *cluster_run(const t_cluster *n, const char *fmt, va_list ap, PGconn **conn)
{
    char sql[8192];
    vsnprintf(sql, sizeof sql, fmt, ap);
    *conn = PQconnectdb(t_cluster_conninfo(n));
    if (PQstatus(*conn) != CONNECTION_OK) {
        t_fail(__FILE__, __LINE__, "connecting to %s: %s", n->dir, PQerrorMessage(*conn));
    }
    return PQexec(*conn, sql);
}

void t_cluster_sql(const t_cluster *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGconn *a;
    PGresult *r = cluster_run(n, fmt, ap, &a);
    va_end(ap);
    if (!ok_result(r)) {
        t_fail(__FILE__, __LINE__, "SQL on %s failed: %s", n->dir, PQerrorMessage(a));
    }
    PQclear(r);
    PQfinish(a);
}

const char *t_cluster_value(const t_cluster *n, const char *fmt, ...)
{
    static char out[4][1024];
    static int turn;
    char *v = out[turn++ % 4];
    va_list ap;
    va_start(ap, fmt);
    PGconn *a;
    PGresult *r = cluster_run(n, fmt, ap, &a);
    va_end(ap);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        t_fail(__FILE__, __LINE__, "SQL value on %s failed: %s", n->dir, PQerrorMessage(a));
    }
    snprintf(v, 1024, "%s", PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    PQfinish(a);
    return v;
}

const char *t_cluster_try(const t_cluster *n, const char *fmt, ...)
{
    static char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    PGconn *a;
    PGresult *r = cluster_run(n, fmt, ap, &a);
    va_end(ap);
    bool ok = ok_result(r);
    snprintf(msg, sizeof msg, "%s", PQerrorMessage(a));
    PQclear(r);
    PQfinish(a);
    return ok ? NULL : msg;
}

void t_keep_warnings(void *arg, int level, const char *msg)
{
    t_warnings *w = arg;
    if (level == SETCACHE_LOG_WARN) {
        pthread_mutex_lock(&w->mu);
        size_t n = strlen(w->text);
        snprintf(w->text + n, sizeof w->text - n, "%s\n", msg);
        pthread_mutex_unlock(&w->mu);
    }
}

int t_warned(t_warnings *w, const char *what)
{
    int n = 0;
    pthread_mutex_lock(&w->mu);
    for (const char *p = strstr(w->text, what); p; p = strstr(p + 1, what)) {
        n++;
    }
    pthread_mutex_unlock(&w->mu);
    return n;
}
