/*
 * harness.h - a small test runner: each test runs in its own forked process
 * under a timeout, against a real PostgreSQL (SETCACHE_TEST_CONNINFO), with
 * its own schema and channel. The run ends with "N passed, N failed, N skipped".
 */
#ifndef SETCACHE_TEST_HARNESS_H
#define SETCACHE_TEST_HARNESS_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "setcache.h"

typedef void (*t_fn)(void);
void t_register(const char *name, t_fn fn, int timeout_s);

#define TEST_T(name, timeout_s)                                                                    \
    static void name(void);                                                                        \
    __attribute__((constructor)) static void reg_##name(void)                                      \
    {                                                                                              \
        t_register(#name, name, timeout_s);                                                        \
    }                                                                                              \
    static void name(void)
#define TEST(name) TEST_T(name, 30)

/* A function a test runs as a child program (see harness.c, child mode). */
void t_register_child(const char *name, t_fn fn);
/* In a forked child: run the CHILD function name in a fresh copy of this
 * program, with this test's schema and the descriptors up and down in
 * SETCACHE_TEST_UP / SETCACHE_TEST_DOWN. Never returns. */
void t_exec_child(const char *name, int up, int down) __attribute__((noreturn));
#define CHILD(name)                                                                                \
    static void name(void);                                                                        \
    __attribute__((constructor)) static void regc_##name(void)                                     \
    {                                                                                              \
        t_register_child(#name, name);                                                             \
    }                                                                                              \
    static void name(void)

void t_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
void t_skip(const char *why) __attribute__((noreturn));

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            t_fail(__FILE__, __LINE__, "CHECK(%s) failed (errmsg: %s)", #cond, setcache_errmsg()); \
        }                                                                                          \
    } while (0)
#define CHECK_RC(expr, want)                                                                       \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != (want)) {                                                                       \
            t_fail(__FILE__, __LINE__, "%s returned %d (%s), wanted %d (%s); errmsg: %s", #expr,   \
                   rc_, setcache_strerror(rc_), (int)(want), setcache_strerror(want),              \
                   setcache_errmsg());                                                             \
        }                                                                                          \
    } while (0)
#define CHECK_OK(expr) CHECK_RC(expr, SETCACHE_OK)
#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                   \
            t_fail(__FILE__, __LINE__, "%s = \"%.200s\", wanted \"%.200s\"", #a,                   \
                   a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                        \
        }                                                                                          \
    } while (0)
#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            t_fail(__FILE__, __LINE__, "%s = %lld, wanted %lld", #a, a_, b_);                      \
        }                                                                                          \
    } while (0)

/* Run fn before a failing test exits (e.g. to resume a stopped process). */
void t_on_fail(void (*fn)(void));
/* The test's own schema/channel name. */
const char *t_schema(void);
const char *t_conninfo(void);
/* Options for this test: conninfo, schema, channel, create_schema = true. */
void t_options(setcache_options *o);
setcache *t_open(void);
setcache *t_open_with(setcache_options *o);
/* A separate plain libpq connection, the "other program". */
PGconn *t_admin(void);
/* Close the admin connection (e.g. before fork); t_admin() reconnects. */
void t_admin_close(void);
/* Run SQL (printf-style; %s of the schema is the caller's) on the admin
 * connection; fail the test on error. */
void t_sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Run SQL and return the first column of the first row (static buffer). */
const char *t_sql_value(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Like t_sql but returns false on error instead of failing. */
bool t_sql_try(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Statements the server executed whose text mentions this test's schema
 * (pg_stat_statements); -1 when the extension is not available. */
long long t_server_statements(void);
double t_now_ms(void);
/* Poll a string read until it equals want (NULL = SETCACHE_NOT_FOUND), for
 * at most timeout_ms; the ms waited, or -1. */
double t_wait_value(setcache *c, const char *type, const char *id, const char *key,
                    const char *want, int timeout_ms);
/* SETCACHE_TEST_TIMEOUT_SCALE (1 unless running under valgrind or the like). */
double t_scale(void);
void t_sleep_ms(int ms);
/* nkeys rows key_1..key_N = value_1..value_N of one entity, by plain SQL. */
void t_insert_rows(const char *type, const char *id, int nkeys);
setcache_stats t_stats(setcache *c);
/* Server sessions of process pid's handles (their application_name). */
int t_sessions_of(pid_t pid);
/* For setcache_with_conn: *(int *)arg = the connection's backend pid. */
int t_backend_pid(void *arg, PGconn *conn);
/* For setcache_with_conn: DEALLOCATE ALL on the connection (the server
 * forgets its prepared statements); SETCACHE_ERR_DB if that failed. */
int t_deallocate_all(void *arg, PGconn *conn);
/* Run a shell command (formatted); its exit status, -1 if it did not exit. */
int t_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Path of the built tool and library directory. */
const char *t_build_dir(void);

/* Private PostgreSQL clusters a test starts beside the suite's server
 * (initdb in a temp dir, Unix socket only, as the suite server's user);
 * they need tests/withpg.sh's private cluster (else the test is skipped).
 * t_clusters_end() stops and removes every one (immediate stop): call it at
 * the end and give it to t_on_fail. */
/* tests/withpg.sh's PostgreSQL programs (the test is skipped without its
 * private cluster), and the prefix that runs a command as the server's
 * user ("" unless root). */
const char *t_pg_bindir(void);
const char *t_pg_runas(void);
/* A temp directory /tmp/setcache-NAME.XXXXXX the server's user can use. */
void t_pg_dir(char *dir, size_t cap, const char *name);
typedef struct t_cluster {
    char dir[128]; /* its socket directory; the data in dir/data */
    int port;
    char opts[512]; /* server options of every start */
    bool up;
} t_cluster;
/* initdb and start with server options opts (e.g. "-c wal_level=logical"). */
void t_cluster_create(t_cluster *n, const char *name, const char *opts);
/* The same; with skip, a server that won't start with these options skips
 * the test (a visible SKIPPED line) instead of failing it. */
void t_cluster_create_or_skip(t_cluster *n, const char *name, const char *opts, bool skip);
void t_cluster_start(t_cluster *n);
void t_cluster_stop(t_cluster *n, const char *mode); /* "fast", "immediate" */
void t_clusters_end(void);
const char *t_cluster_conninfo(const t_cluster *n); /* static buffer, 4 in turn */
/* SQL on a new connection to the cluster; fail the test on error. */
void t_cluster_sql(const t_cluster *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The first value of the first row ("" when no row), 4 buffers in turn. */
const char *t_cluster_value(const t_cluster *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Like t_cluster_sql, but the error message (static) or NULL on success. */
const char *t_cluster_try(const t_cluster *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The handle's warnings, kept for the test to look at: o.log =
 * t_keep_warnings, o.log_arg = a t_warnings set up with T_WARNINGS_INIT. */
typedef struct t_warnings {
    pthread_mutex_t mu;
    char text[4096];
} t_warnings;
#define T_WARNINGS_INIT                                                                            \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, ""                                                              \
    }
void t_keep_warnings(void *arg, int level, const char *msg);
/* How many of the kept warnings contain what. */
int t_warned(t_warnings *w, const char *what);

#endif
