/*
 * demo.c - `make demo`: the motivating workload two ways, side by side.
 *
 * The old way runs one SELECT per settings access over pooled connections
 * (the fixed version of the session-per-access bug); setcache answers the
 * same reads from memory. A "widget render" reads, for each of the 3
 * accounts, 20 transactions x 3 settings. 16 threads render. Then psql, a
 * separate program, changes a setting with plain SQL and the demo measures
 * how soon the running process reads the new value.
 *
 * With --tables, the same workload lives in the motivating platform's own
 * tables (accountsetting, expertsetting, appsetting with typed value
 * columns), served through setcache_options.tables: nothing is migrated.
 *
 * Needs SETCACHE_TEST_CONNINFO (tests/withpg.sh starts a private server).
 */
#include "setcache.h"
#include "workload.h"
#include <libpq-fe.h>

#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define THREADS 16
#define TXN_PER_ACCOUNT 20
#define READS_PER_TXN 3
#define READS_PER_RENDER (WL_ACCOUNTS * TXN_PER_ACCOUNT * READS_PER_TXN)
#define SCHEMA "setcache_demo"

static const char *conninfo;
static bool tables_mode;
static const char *const render_keys[3] = {"paper_account", "minimum_equity_threshold_percent",
                                           "api_key"};

#define now_ms bench_now_ms

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "demo: %s: %s\n", what, msg);
    exit(1);
}

static PGconn *connect_as(const char *app)
{
    const char *k[] = {"dbname", "application_name", NULL};
    const char *v[] = {conninfo, app, NULL};
    PGconn *c = PQconnectdbParams(k, v, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        die("connect", PQerrorMessage(c));
    }
    return c;
}

static long long scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
        v = atoll(PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return v;
}

/* Statements the server ran against the demo schema (pg_stat_statements). */
static long long server_statements(PGconn *mon)
{
    return scalar(mon, "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query "
                       "LIKE '%" SCHEMA "%' AND query NOT LIKE '%pg_stat_statements%' "
                       "AND query NOT LIKE 'NOTIFY%'");
}

/* ---- a monitor counting server sessions by application_name ---- */
static atomic_int mon_stop;
static atomic_int peak_old, peak_new;
static char new_pattern[64];

static void *monitor(void *arg)
{
    (void)arg;
    PGconn *m = connect_as("setcache-demo-monitor");
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FILTER (WHERE application_name = 'setcache-demo-old'), "
             "count(*) FILTER (WHERE application_name LIKE '%s') FROM pg_stat_activity",
             new_pattern);
    while (!atomic_load(&mon_stop)) {
        PGresult *r = PQexec(m, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            int o = atoi(PQgetvalue(r, 0, 0)), n = atoi(PQgetvalue(r, 0, 1));
            if (o > atomic_load(&peak_old)) {
                atomic_store(&peak_old, o);
            }
            if (n > atomic_load(&peak_new)) {
                atomic_store(&peak_new, n);
            }
        }
        PQclear(r);
        usleep(10000);
    }
    PQfinish(m);
    return NULL;
}

/* ---- the old way: one query per access ---- */
static PGconn *old_pool[THREADS];
static int renders_old;

static void *old_worker(void *arg)
{
    PGconn *c = old_pool[(intptr_t)arg];
    const char *sql = tables_mode ? "SELECT value_str, value_float, value_json FROM " SCHEMA
                                    ".accountsetting WHERE account_id = $2::int AND key = $3 "
                                    "AND $1::text IS NOT NULL"
                                  : "SELECT value FROM " SCHEMA ".settings WHERE entity_type = $1 "
                                    "AND entity_id = $2 AND key = $3";
    for (int r = 0; r < renders_old; r++) {
        for (int a = 0; a < WL_ACCOUNTS; a++) {
            char id[16];
            snprintf(id, sizeof id, "%d", wl_ids[a]);
            for (int t = 0; t < TXN_PER_ACCOUNT; t++) {
                for (int k = 0; k < READS_PER_TXN; k++) {
                    const char *p[3] = {"account", id, render_keys[k]};
                    PGresult *res = PQexecParams(c, sql, 3, NULL, p, NULL, NULL, 0);
                    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
                        die("old way", PQerrorMessage(c));
                    }
                    PQclear(res);
                }
            }
        }
    }
    return NULL;
}

/* ---- setcache ---- */
static setcache *cache;
static int renders_new;

static void *new_worker(void *arg)
{
    (void)arg;
    char buf[128];
    for (int r = 0; r < renders_new; r++) {
        for (int a = 0; a < WL_ACCOUNTS; a++) {
            char id[16];
            snprintf(id, sizeof id, "%d", wl_ids[a]);
            for (int t = 0; t < TXN_PER_ACCOUNT; t++) {
                for (int k = 0; k < READS_PER_TXN; k++) {
                    int rc = setcache_get_string(cache, "account", id, render_keys[k], buf,
                                                 sizeof buf, NULL);
                    if (rc != SETCACHE_OK) {
                        die("setcache read", setcache_errmsg());
                    }
                }
            }
        }
    }
    return NULL;
}

/* The tick loop: a strategy thread binds 5 settings of its expert once and
 * reads all 5 on every tick (bound references: no hashing, no lock). */
#define TICK_KEYS 5
static long ticks;

static void *tick_worker(void *arg)
{
    intptr_t me = (intptr_t)arg;
    char id[16], buf[128];
    snprintf(id, sizeof id, "%d", wl_ids[WL_ACCOUNTS + (int)me % (WL_EXPERTS - WL_ACCOUNTS)]);
    setcache_ref *r[TICK_KEYS];
    for (int k = 0; k < TICK_KEYS; k++) {
        if (setcache_ref_open(cache, "expert", id, wl_expert_hot[3 + k], &r[k]) != SETCACHE_OK) {
            die("setcache_ref_open", setcache_errmsg());
        }
    }
    for (long t = 0; t < ticks; t++) {
        for (int k = 0; k < TICK_KEYS; k++) {
            if (setcache_ref_get_string(r[k], buf, sizeof buf, NULL) != SETCACHE_OK) {
                die("setcache_ref_get_string", setcache_errmsg());
            }
        }
    }
    for (int k = 0; k < TICK_KEYS; k++) {
        setcache_ref_close(r[k]);
    }
    return NULL;
}

static double run_threads(void *(*fn)(void *))
{
    pthread_t th[THREADS];
    double t0 = now_ms();
    for (intptr_t i = 0; i < THREADS; i++) {
        pthread_create(&th[i], NULL, fn, (void *)i);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    return now_ms() - t0;
}

#define cmp_double bench_cmp_d

/* The platform's tables, filled from the workload written to the built-in
 * table, each value in the column the platform's encoding uses. */
static void platform_tables(PGconn *mon)
{
    static const char *const ddl[] = {
        "CREATE TABLE " SCHEMA ".accountdefinition (id serial PRIMARY KEY, name text NOT NULL, "
        "provider text NOT NULL)",
        "CREATE TABLE " SCHEMA ".expertinstance (id serial PRIMARY KEY, account_id int NOT NULL "
        "REFERENCES " SCHEMA ".accountdefinition(id) ON DELETE CASCADE, expert text NOT NULL)",
        "CREATE TABLE " SCHEMA ".accountsetting (id serial PRIMARY KEY, account_id int NOT NULL "
        "REFERENCES " SCHEMA ".accountdefinition(id) ON DELETE CASCADE, key varchar NOT NULL, "
        "value_str varchar, value_float double precision, value_json json, CONSTRAINT "
        "uix_accountsetting_accountid_key UNIQUE (account_id, key))",
        "CREATE TABLE " SCHEMA ".expertsetting (id serial PRIMARY KEY, instance_id int NOT NULL "
        "REFERENCES " SCHEMA ".expertinstance(id) ON DELETE CASCADE, key varchar NOT NULL, "
        "value_str varchar, value_float double precision, value_json json, CONSTRAINT "
        "uix_expertsetting_instanceid_key UNIQUE (instance_id, key))",
        "CREATE TABLE " SCHEMA ".appsetting (id serial PRIMARY KEY, key varchar NOT NULL, "
        "value_str varchar, value_float double precision, value_json json)",
        "INSERT INTO " SCHEMA ".accountdefinition (id, name, provider) SELECT DISTINCT "
        "entity_id::int, 'account ' || entity_id, 'alpaca' FROM " SCHEMA ".settings WHERE "
        "entity_type = 'account'",
        "INSERT INTO " SCHEMA ".expertinstance (id, account_id, expert) SELECT e.id, (SELECT "
        "min(id) FROM " SCHEMA ".accountdefinition), 'TradingAgents' FROM (SELECT DISTINCT "
        "entity_id::int AS id FROM " SCHEMA ".settings WHERE entity_type = 'expert') e",
    };
    for (size_t i = 0; i < sizeof ddl / sizeof ddl[0]; i++) {
        PGresult *r = PQexec(mon, ddl[i]);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            die("creating the platform tables", PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    static const char *const fill =
        "INSERT INTO " SCHEMA ".%s (%s key, value_str, value_float, value_json) SELECT %s key, "
        "CASE WHEN value ~ '^-?[0-9]+(\\.[0-9]+)?$' OR value IN ('true', 'false') OR value ~ "
        "'^[[{]' THEN NULL ELSE value END, "
        "CASE WHEN value ~ '^-?[0-9]+(\\.[0-9]+)?$' THEN value::float8 END, "
        "CASE WHEN value IN ('true', 'false') THEN to_json(value) WHEN value ~ '^[[{]' THEN "
        "value::json END FROM " SCHEMA ".settings WHERE entity_type = '%s'";
    const char *spec[3][3] = {{"accountsetting", "account_id,", "account"},
                              {"expertsetting", "instance_id,", "expert"},
                              {"appsetting", "", "app"}};
    for (int i = 0; i < 3; i++) {
        char sql[1024];
        snprintf(sql, sizeof sql, fill, spec[i][0], spec[i][1],
                 i == 0   ? "entity_id::int,"
                 : i == 1 ? "entity_id::int,"
                          : "",
                 spec[i][2]);
        PGresult *r = PQexec(mon, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            die("filling the platform tables", PQresultErrorMessage(r));
        }
        PQclear(r);
    }
}

/* Print the first lines of a command's output, indented. */
static void show(const char *cmd, int lines)
{
    printf("$ %s\n", cmd);
    char full[1024];
    const char *b = getenv("SETCACHE_BUILD");
    snprintf(full, sizeof full, "%s/%s 2>&1", b ? b : "build", cmd);
    FILE *p = popen(full, "r");
    char line[512];
    int n = 0;
    while (p && fgets(line, sizeof line, p)) {
        if (n++ < lines) {
            printf("  %s", line);
        }
    }
    if (n > lines) {
        printf("  ... (%d lines)\n", n);
    }
    if (p) {
        pclose(p);
    }
}

/* The experts' definitions, published once: the tool shows them, and the
 * database refuses a psql write that breaks one. */
static void managed_settings(setcache *c, PGconn *m)
{
    if (wl_define_experts(c) != SETCACHE_OK) {
        die("define", setcache_errmsg());
    }
    uint64_t invalid = 0;
    if (setcache_publish_definitions(c, &invalid) != SETCACHE_OK) {
        die("publish", setcache_errmsg());
    }
    printf("\nmanaged settings: %lld expert definitions published (type, default, range or "
           "choices, description); %llu stored values break them\n",
           scalar(m, "SELECT count(*) FROM " SCHEMA ".definitions WHERE entity_type = "
                     "'expert'"),
           (unsigned long long)invalid);
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "setcache --conninfo '%s' --schema " SCHEMA " --channel " SCHEMA " describe expert",
             conninfo);
    show(cmd, 6);
    /* with --tables the tool reads the expert table as the processes do */
    snprintf(cmd, sizeof cmd,
             "setcache --conninfo '%s' --schema " SCHEMA " --channel " SCHEMA "%s list expert 5",
             conninfo,
             tables_mode ? " --map expert=" SCHEMA ".expertsetting,instance_id,integer,key,"
                           "value_str:value_float:value_json"
                         : "");
    show(cmd, 6);
    const char *bad = tables_mode
                          ? "UPDATE " SCHEMA ".expertsetting SET value_str = 'banana', "
                            "value_float = NULL WHERE instance_id = 1 AND key = 'atr_period'"
                          : "UPDATE " SCHEMA ".settings SET value = 'banana' WHERE entity_type = "
                            "'expert' AND entity_id = '1' AND key = 'atr_period'";
    printf("$ psql -c \"%s\"\n", bad);
    PGresult *r = PQexec(m, bad);
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        printf("  UPDATE (accepted!)\n");
    } else {
        printf("  ERROR:  %s\n", PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
    }
    PQclear(r);
    int64_t v = 0;
    if (setcache_get_int(c, "expert", "1", "atr_period", &v) == SETCACHE_OK) {
        printf("  every process still reads atr_period = %lld\n", (long long)v);
    }
}

int main(int argc, char **argv)
{
    tables_mode = argc > 1 && strcmp(argv[1], "--tables") == 0;
    conninfo = bench_conninfo("demo");
    PGconn *mon = connect_as("setcache-demo-admin");
    setcache_options o;
    bench_fresh(mon, SCHEMA, conninfo, &o);
    if (setcache_open(&cache, &o) != SETCACHE_OK) {
        die("setcache_open", setcache_errmsg());
    }
    snprintf(new_pattern, sizeof new_pattern, "setcache:%d:%%", (int)getpid());
    for (int k = 0; k < 112; k++) {
        char key[64];
        wl_expert_key(k, key, sizeof key);
        setcache_define(cache, "expert", key, SETCACHE_STRING, "0");
    }
    double t0 = now_ms();
    if (wl_load(cache) != SETCACHE_OK) {
        die("loading the workload", setcache_errmsg());
    }
    long long nrows = scalar(mon, "SELECT count(*) FROM " SCHEMA ".settings");
    static setcache_table_map maps[3];
    if (tables_mode) {
        /* the same data in the platform's own tables, served from there */
        platform_tables(mon);
        setcache_close(cache);
        maps[0] = (setcache_table_map){.entity_type = "account",
                                       .table = SCHEMA ".accountsetting",
                                       .entity_column = "account_id",
                                       .id_kind = SETCACHE_ID_INTEGER,
                                       .key_column = "key",
                                       .str_column = "value_str",
                                       .num_column = "value_float",
                                       .json_column = "value_json"};
        maps[1] = maps[0];
        maps[1].entity_type = "expert";
        maps[1].table = SCHEMA ".expertsetting";
        maps[1].entity_column = "instance_id";
        maps[2] = maps[0];
        maps[2].entity_type = "app";
        maps[2].table = SCHEMA ".appsetting";
        maps[2].entity_column = NULL;
        maps[2].id_kind = SETCACHE_ID_NONE;
        o.tables = maps;
        o.ntables = 3;
        if (setcache_open(&cache, &o) != SETCACHE_OK) {
            die("setcache_open with the platform tables", setcache_errmsg());
        }
    }
    printf("setcache %s demo on %s\n", setcache_version(),
           PQparameterStatus(mon, "server_version"));
    printf("workload: 3 accounts x 6 keys, 26 experts x 52-112 keys, 30 app keys = %lld rows "
           "(written in %.0f ms)\n",
           nrows, now_ms() - t0);
    if (tables_mode) {
        printf("served in place from accountsetting, expertsetting and appsetting (--tables)\n");
    }
    printf("widget render: 3 accounts x %d transactions x %d settings reads = %d reads; %d "
           "threads\n",
           TXN_PER_ACCOUNT, READS_PER_TXN, READS_PER_RENDER, THREADS);
    printf("tick loop: a strategy per thread reads %d settings of its expert every tick through "
           "refs bound once; %d threads\n\n",
           TICK_KEYS, THREADS);

    bool have_pss = server_statements(mon) >= 0;
    pthread_t mt;
    pthread_create(&mt, NULL, monitor, NULL);

    /* the old way */
    for (int i = 0; i < THREADS; i++) {
        old_pool[i] = connect_as("setcache-demo-old");
    }
    renders_old = 10;
    long long s0 = server_statements(mon);
    double ms_old = run_threads(old_worker);
    long long st_old = server_statements(mon) - s0;
    long long reads_old = (long long)renders_old * READS_PER_RENDER * THREADS;
    for (int i = 0; i < THREADS; i++) {
        PQfinish(old_pool[i]);
    }

    /* setcache: same loop, 100x more renders */
    renders_new = 1000;
    setcache_stats a, b;
    setcache_get_stats(cache, &a);
    s0 = server_statements(mon);
    double ms_new = run_threads(new_worker);
    long long st_new = server_statements(mon) - s0;
    setcache_get_stats(cache, &b);
    long long reads_new = (long long)renders_new * READS_PER_RENDER * THREADS;
    /* the tick loop, same threads */
    ticks = 400000;
    setcache_stats ta, tb;
    setcache_get_stats(cache, &ta);
    long long s1 = server_statements(mon);
    double ms_tick = run_threads(tick_worker);
    long long st_tick = server_statements(mon) - s1;
    setcache_get_stats(cache, &tb);
    long long reads_tick = ticks * TICK_KEYS * THREADS;
    atomic_store(&mon_stop, 1);
    pthread_join(mt, NULL);

    printf("%-34s %12s %12s %10s %14s\n", "", "reads", "db stmts", "sessions", "reads/s");
    printf("%-34s %12lld %12lld %10d %14.0f\n", "old way (1 query per access)", reads_old,
           have_pss ? st_old : reads_old, atomic_load(&peak_old), reads_old / (ms_old / 1e3));
    printf("%-34s %12lld %12lld %10d %14.0f\n", "setcache (memory after 1 load)", reads_new,
           have_pss ? st_new : (long long)(b.db_queries - a.db_queries), atomic_load(&peak_new),
           reads_new / (ms_new / 1e3));
    printf("%-34s %12lld %12lld %10d %14.0f\n", "setcache tick loop (5 bound refs)", reads_tick,
           have_pss ? st_tick : (long long)(tb.db_queries - ta.db_queries), atomic_load(&peak_new),
           reads_tick / (ms_tick / 1e3));
    printf("(db stmts counted %s; sessions = peak server sessions of each, sampled every "
           "10 ms; setcache's include its listener)\n\n",
           have_pss ? "on the server by pg_stat_statements" : "by the clients");

    /* a separate program changes a setting with plain SQL */
    printf("psql runs: UPDATE %s WHERE ... account 1, key "
           "'minimum_equity_threshold_percent'\n",
           tables_mode ? SCHEMA ".accountsetting SET value_float = ..."
                       : SCHEMA ".settings SET value = ...");
    double after_exit[5], after_start[5];
    for (int i = 0; i < 5; i++) {
        char want[32], sql[256];
        snprintf(want, sizeof want, "%d.25", 20 + i);
        if (tables_mode) {
            snprintf(sql, sizeof sql,
                     "UPDATE %s.accountsetting SET value_float = %s WHERE account_id = 1 AND "
                     "key = 'minimum_equity_threshold_percent'",
                     SCHEMA, want);
        } else {
            snprintf(sql, sizeof sql,
                     "UPDATE %s.settings SET value = '%s' WHERE entity_type = 'account' AND "
                     "entity_id = '1' AND key = 'minimum_equity_threshold_percent'",
                     SCHEMA, want);
        }
        char *pargv[] = {"psql", "-qX", "-c", sql, (char *)conninfo, NULL};
        pid_t pid;
        double t_start = now_ms();
        if (posix_spawnp(&pid, "psql", NULL, NULL, pargv, environ) != 0) {
            die("psql", "cannot start psql");
        }
        double t_visible = -1;
        int st;
        bool exited = false;
        double t_exit = 0;
        char buf[64];
        while (now_ms() - t_start < 10000 && (t_visible < 0 || !exited)) {
            if (!exited && waitpid(pid, &st, WNOHANG) == pid) {
                exited = true;
                t_exit = now_ms();
            }
            if (t_visible < 0 &&
                setcache_get_string(cache, "account", "1", "minimum_equity_threshold_percent", buf,
                                    sizeof buf, NULL) == SETCACHE_OK &&
                strcmp(buf, want) == 0) {
                t_visible = now_ms();
            }
            usleep(50);
        }
        if (t_visible < 0 || !exited) {
            die("plain SQL change", "not visible within 10 s");
        }
        after_exit[i] = t_visible - t_exit;
        after_start[i] = t_visible - t_start;
    }
    qsort(after_exit, 5, sizeof(double), cmp_double);
    qsort(after_start, 5, sizeof(double), cmp_double);
    printf("new value read by this process: median %.1f ms after psql exited (negative = "
           "before psql had even exited), max %.1f ms; %.1f ms after psql started\n",
           after_exit[2], after_exit[4], after_start[2]);
    managed_settings(cache, mon);
    setcache_get_stats(cache, &b);
    printf("listener state %s, notifications %llu, loads %llu\n",
           b.state == SETCACHE_STATE_VALID ? "VALID" : "not valid",
           (unsigned long long)b.notifications, (unsigned long long)b.loads);
    setcache_close(cache);
    PQclear(PQexec(mon, "DROP SCHEMA IF EXISTS " SCHEMA " CASCADE"));
    PQfinish(mon);
    return 0;
}
