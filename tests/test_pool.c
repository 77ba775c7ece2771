/* The connection pool and the handle's life: timeouts, scoped borrows,
 * broken connections, concurrent schema creation, fork, close. */
#include "harness.h"
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

static int hold_conn(void *arg, PGconn *conn)
{
    (void)conn;
    t_sleep_ms(*(int *)arg);
    return 7;
}

static void *holder(void *p)
{
    static int ms = 1500;
    return (void *)(intptr_t)setcache_with_conn(p, hold_conn, &ms);
}

TEST(acquire_timeout_gives_clear_error_not_hang)
{
    setcache_options o;
    t_options(&o);
    o.pool_size = 1;
    o.acquire_timeout_ms = 300;
    setcache *c = t_open_with(&o);
    pthread_t th;
    pthread_create(&th, NULL, holder, c);
    t_sleep_ms(100);
    CHECK_INT(t_stats(c).pool_in_use, 1);
    double t0 = t_now_ms();
    CHECK_RC(setcache_set_string(c, "account", "1", "k", "v"), SETCACHE_ERR_TIMEOUT);
    double waited = t_now_ms() - t0;
    CHECK(waited >= 250 && waited < 1400);
    CHECK(strstr(setcache_errmsg(), "300 ms") != NULL);
    CHECK(strstr(setcache_errmsg(), "pool_size 1") != NULL);
    CHECK_RC(setcache_load(c, "account", "1"), SETCACHE_ERR_TIMEOUT);
    void *res;
    pthread_join(th, &res);
    CHECK_INT((intptr_t)res, 7);
    setcache_stats s = t_stats(c);
    CHECK_INT(s.pool_timeouts, 2);
    CHECK(s.pool_waits >= 2);
    CHECK_INT(s.pool_in_use, 0);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v"));
    setcache_close(c);
}

static int leave_open_txn(void *arg, PGconn *conn)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
             "('account', '1', 'uncommitted', 'x')",
             (const char *)arg);
    PGresult *r = PQexec(conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? 11 : -100;
}

static int leave_failed_txn(void *arg, PGconn *conn)
{
    (void)arg;
    PQclear(PQexec(conn, "BEGIN; SELECT 1/0"));
    return PQtransactionStatus(conn) == PQTRANS_INERROR ? 12 : -100;
}

static int check_idle(void *arg, PGconn *conn)
{
    (void)arg;
    return PQtransactionStatus(conn) == PQTRANS_IDLE ? 13 : -100;
}

TEST(with_conn_returns_connection_whatever_fn_does)
{
    setcache_options o;
    t_options(&o);
    o.pool_size = 1;
    setcache *c = t_open_with(&o);
    CHECK_INT(setcache_with_conn(c, leave_open_txn, (void *)t_schema()), 11);
    CHECK_INT(t_stats(c).pool_in_use, 0);
    CHECK_INT(setcache_with_conn(c, check_idle, NULL), 13);
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".settings", t_schema()), "0");
    CHECK_INT(setcache_with_conn(c, leave_failed_txn, NULL), 12);
    CHECK_INT(setcache_with_conn(c, check_idle, NULL), 13);
    CHECK_INT(t_stats(c).pool_in_use, 0);
    setcache_close(c);
}

TEST(broken_pool_connection_is_replaced)
{
    setcache_options o;
    t_options(&o);
    o.pool_size = 1;
    setcache *c = t_open_with(&o);
    int pid1 = 0, pid2 = 0;
    CHECK_OK(setcache_with_conn(c, t_backend_pid, &pid1));
    t_sql("SELECT pg_terminate_backend(%d)", pid1);
    t_sleep_ms(200);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "after-kill"));
    CHECK_OK(setcache_with_conn(c, t_backend_pid, &pid2));
    CHECK(pid2 != pid1 && pid2 > 0);
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "after-kill");
    setcache_close(c);
}

TEST(create_schema_concurrent_opens_are_safe)
{
    pid_t kids[6];
    for (int i = 0; i < 6; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            setcache_options o;
            t_options(&o);
            setcache *c = NULL;
            int rc = setcache_open(&c, &o);
            if (rc == SETCACHE_OK) {
                rc = setcache_set_int(c, "account", "1", "k", i);
                setcache_close(c);
            }
            _exit(rc == SETCACHE_OK ? 0 : 1);
        }
    }
    for (int i = 0; i < 6; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    /* stamp, notify (which also checks and writes the history), notify on
     * truncate, history of a truncate: each once, however many opened at
     * once */
    CHECK_STR(t_sql_value("SELECT count(*) FROM pg_trigger WHERE tgrelid = '\"%s\".settings'::"
                          "regclass AND NOT tgisinternal",
                          t_schema()),
              "4");
}

TEST(fork_child_close_leaves_parent_sessions)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "parent"));
    int pid1 = 0, pid2 = 0;
    CHECK_OK(setcache_with_conn(c, t_backend_pid, &pid1));
    /* let the library's threads go idle: what a thread holds on its stack at
     * fork() time can't be freed in the child (it matters to leak checkers) */
    t_sleep_ms(300);
    pid_t kid = fork();
    if (kid == 0) {
        setcache_close(c);
        _exit(0);
    }
    int st;
    waitpid(kid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    t_sleep_ms(100);
    CHECK_OK(setcache_with_conn(c, t_backend_pid, &pid2));
    CHECK_INT(pid2, pid1);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "still"));
    CHECK_INT(t_stats(c).state, SETCACHE_STATE_VALID);
    setcache_close(c);
}

TEST(close_is_prompt_and_later_sessions_are_gone)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v"));
    CHECK(t_sessions_of(getpid()) >= 2);
    double t0 = t_now_ms();
    setcache_close(c);
    CHECK(t_now_ms() - t0 < 1000);
    t0 = t_now_ms();
    while (t_sessions_of(getpid()) > 0 && t_now_ms() - t0 < 3000) {
        t_sleep_ms(10);
    }
    CHECK_INT(t_sessions_of(getpid()), 0);
    setcache_close(NULL);
}

/* The child's part: its own handle reads the parent's value, writes one,
 * says so on fd up, waits on fd down for the parent's next change and reads
 * it through its own listener. Exit 0 when every step worked. */
static void fork_child_body(int up, int down)
{
    char b = 0, buf[32];
    setcache *own = t_open();
    int ok = setcache_get_string(own, "account", "1", "from_parent", buf, sizeof buf, NULL) ==
                 SETCACHE_OK &&
             strcmp(buf, "p1") == 0;
    ok = ok && setcache_set_string(own, "account", "1", "from_child", "c1") == SETCACHE_OK;
    ok = ok && write(up, "r", 1) == 1 && read(down, &b, 1) == 1; /* the parent changed it */
    ok = ok && t_wait_value(own, "account", "1", "from_parent", "p2", 5000) >= 0;
    setcache_close(own);
    _exit(ok ? 0 : 1);
}

/* The same body in a fresh program (child mode), fds from the environment. */
CHILD(fork_child_program)
{
    fork_child_body(atoi(getenv("SETCACHE_TEST_UP")), atoi(getenv("SETCACHE_TEST_DOWN")));
}

/* A forked child opens and uses a handle of its own while the parent's
 * keeps working; closing the child's inherited copy touches none of the
 * parent's sessions. Under ThreadSanitizer (no threads after a
 * multi-threaded fork) the child re-executes this binary first. */
TEST(fork_child_opens_its_own_handle_while_the_parent_keeps_working)
{
    setcache *c = t_open();
    CHECK_OK(setcache_set_string(c, "account", "1", "from_parent", "p1"));
    int pid1 = 0, pid2 = 0;
    CHECK_OK(setcache_with_conn(c, t_backend_pid, &pid1));
    int mine = t_sessions_of(getpid());
    t_admin_close(); /* the child must not share the admin connection */
    t_sleep_ms(300);
    int up[2], down[2];
    CHECK(pipe(up) == 0 && pipe(down) == 0);
    pid_t kid = fork();
    if (kid == 0) {
        setcache_close(c); /* the inherited copy: the parent's sessions stay */
#if defined(__SANITIZE_THREAD__)
        t_exec_child("fork_child_program", up[1], down[0]);
#else
        fork_child_body(up[1], down[0]);
#endif
    }
    char b = 0;
    CHECK(read(up[0], &b, 1) == 1);
    CHECK(t_sessions_of(kid) >= 2); /* the child's own pool and listener */
    CHECK(t_wait_value(c, "account", "1", "from_child", "c1", 5000) >= 0);
    CHECK_OK(setcache_set_string(c, "account", "1", "from_parent", "p2"));
    CHECK(write(down[1], "g", 1) == 1);
    int st;
    waitpid(kid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    double t0 = t_now_ms();
    while (t_sessions_of(kid) > 0 && t_now_ms() - t0 < 3000) {
        t_sleep_ms(10);
    }
    CHECK_INT(t_sessions_of(kid), 0);
    CHECK_INT(t_sessions_of(getpid()), mine);
    CHECK_OK(setcache_with_conn(c, t_backend_pid, &pid2));
    CHECK_INT(pid2, pid1);
    CHECK_OK(setcache_set_string(c, "account", "1", "from_parent", "p3"));
    CHECK_INT(t_stats(c).state, SETCACHE_STATE_VALID);
    setcache_close(c);
}

/* ---- io_timeout_ms: a server that stops answering ---- */

static int stalled[2];
static void resume_stalled(void)
{
    for (int i = 0; i < 2; i++) {
        if (stalled[i] > 0) {
            kill(stalled[i], SIGCONT);
            stalled[i] = 0;
        }
    }
}

/* The pooled connection's backend is stopped (a server or network that
 * goes silent): a load gives SETCACHE_ERR_DB and a write
 * SETCACHE_ERR_UNCERTAIN within io_timeout_ms (+ 1 s), naming the option;
 * cached reads keep answering; the silent connection is closed, never
 * reused; once the server answers again the cache converges and no session
 * is left over. */
TEST_T(io_timeout_turns_a_silent_server_into_clear_errors, 60)
{
    t_on_fail(resume_stalled);
    setcache_options o;
    t_options(&o);
    o.pool_size = 1;
    o.io_timeout_ms = 500;
    o.statement_timeout_ms = 250; /* the deadline: 250 + 500 ms */
    setcache *c = t_open_with(&o);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v1"));
    char buf[64];
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));

    /* a load on a silent connection */
    CHECK_OK(setcache_with_conn(c, t_backend_pid, &stalled[0]));
    CHECK(stalled[0] > 0 && kill(stalled[0], SIGSTOP) == 0);
    double t0 = t_now_ms();
    CHECK_RC(setcache_get_string(c, "account", "2", "k", buf, sizeof buf, NULL), SETCACHE_ERR_DB);
    double took = t_now_ms() - t0;
    CHECK(strstr(setcache_errmsg(), "io_timeout_ms") != NULL);
    fprintf(stderr, "    load on a silent connection: SETCACHE_ERR_DB after %.0f ms\n", took);
    CHECK(took >= 700 && took <= 750 + 1000);
    /* cached reads are answered from memory meanwhile */
    t0 = t_now_ms();
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK(t_now_ms() - t0 < 5);
    CHECK_STR(buf, "v1");

    /* the silent connection was closed: the next call gets a fresh one;
     * stop that one too, before a write */
    int fresh = 0;
    CHECK_OK(setcache_with_conn(c, t_backend_pid, &fresh));
    CHECK(fresh > 0 && fresh != stalled[0]);
    stalled[1] = fresh;
    CHECK(kill(fresh, SIGSTOP) == 0);
    t0 = t_now_ms();
    CHECK_RC(setcache_set_string(c, "account", "1", "k", "v2"), SETCACHE_ERR_UNCERTAIN);
    took = t_now_ms() - t0;
    CHECK(strstr(setcache_errmsg(), "io_timeout_ms") != NULL);
    fprintf(stderr, "    write on a silent connection: SETCACHE_ERR_UNCERTAIN after %.0f ms\n",
            took);
    CHECK(took <= 750 + 1000);

    /* the server answers again: whatever the write did, the cache follows
     * the table, and the stopped sessions end */
    resume_stalled();
    double t1 = t_now_ms();
    bool same = false;
    while (!same && t_now_ms() - t1 < 5000) {
        const char *v = t_sql_value("SELECT coalesce(max(value), '') FROM \"%s\".settings WHERE "
                                    "entity_id = '1' AND key = 'k'",
                                    t_schema());
        char want[64];
        snprintf(want, sizeof want, "%s", v);
        same = setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL) == SETCACHE_OK &&
               strcmp(buf, want) == 0;
        t_sleep_ms(20);
    }
    CHECK(same);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v3"));
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v3");
    while (t_sessions_of(getpid()) > o.pool_size + 1 && t_now_ms() - t1 < 5000) {
        t_sleep_ms(20);
    }
    CHECK(t_sessions_of(getpid()) <= o.pool_size + 1);
    setcache_close(c);
}

/* With prepared_statements, a write whose statement is not prepared yet on
 * a silent connection fails while preparing it: nothing of the write was
 * sent, so SETCACHE_ERR_DB (not UNCERTAIN) within io_timeout_ms, naming
 * the preparation; the table and the cache are unchanged, the connection
 * is closed, and the next write prepares afresh on a new one. */
TEST_T(prepared_statements_not_prepared_in_time_fail_and_write_nothing, 60)
{
    t_on_fail(resume_stalled);
    setcache_options o;
    t_options(&o);
    o.pool_size = 1;
    o.io_timeout_ms = 500;
    o.prepared_statements = true;
    setcache *c = t_open_with(&o);
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('account', "
          "'1', 'k', 'v1')",
          t_schema());
    char buf[64];
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL)); /* the load */
    CHECK_STR(buf, "v1");

    CHECK_OK(setcache_with_conn(c, t_backend_pid, &stalled[0]));
    CHECK(stalled[0] > 0 && kill(stalled[0], SIGSTOP) == 0);
    double t0 = t_now_ms();
    CHECK_RC(setcache_set_string(c, "account", "1", "k", "v2"), SETCACHE_ERR_DB);
    double took = t_now_ms() - t0;
    fprintf(stderr, "    %s (after %.0f ms)\n", setcache_errmsg(), took);
    CHECK(strstr(setcache_errmsg(), "preparing a statement") != NULL);
    CHECK(took >= 450 && took <= 500 + 1000);
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v1");

    /* the server answers again: the stopped session reads a Parse and the
     * closed socket, and runs nothing */
    resume_stalled();
    double t1 = t_now_ms();
    while (t_sessions_of(getpid()) > o.pool_size + 1 && t_now_ms() - t1 < 5000) {
        t_sleep_ms(20);
    }
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE entity_id = '1' AND key = 'k'",
                          t_schema()),
              "v1");
    int fresh = 0;
    CHECK_OK(setcache_with_conn(c, t_backend_pid, &fresh));
    CHECK(fresh > 0 && fresh != stalled[0]);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v3"));
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v3");
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE entity_id = '1' AND key = 'k'",
                          t_schema()),
              "v3");
    CHECK(t_sessions_of(getpid()) <= o.pool_size + 1);
    setcache_close(c);
}

/* ---- statement_timeout_ms: a statement the server does not finish ---- */

static PGconn *locker;
static void end_locker(void)
{
    if (locker) {
        PQfinish(locker);
        locker = NULL;
    }
}

static void locker_sql(const char *sql)
{
    PGresult *r = PQexec(locker, sql);
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    CHECK(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
}

static int show_statement_timeout(void *arg, PGconn *conn)
{
    PGresult *r = PQexec(conn, "SHOW statement_timeout");
    snprintf(arg, 32, "%s", PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "?");
    PQclear(r);
    return SETCACHE_OK;
}

/* A write waiting for a row lock and a load waiting for a table lock are
 * cancelled by the server after statement_timeout_ms: SETCACHE_ERR_TIMEOUT
 * naming the option, nothing written, the cache unchanged, the limit not
 * left behind on the session (it is set per transaction). */
TEST_T(statement_timeout_cancels_on_the_server_and_changes_nothing, 60)
{
    t_on_fail(end_locker);
    setcache_options o;
    t_options(&o);
    o.pool_size = 2;
    o.statement_timeout_ms = 300;
    setcache *c = t_open_with(&o);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v1"));
    char buf[64];
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));

    locker = PQconnectdb(t_conninfo());
    CHECK(PQstatus(locker) == CONNECTION_OK);
    char sql[256];
    snprintf(sql, sizeof sql,
             "BEGIN; SELECT 1 FROM \"%s\".settings WHERE entity_type = 'account' AND "
             "entity_id = '1' AND key = 'k' FOR UPDATE",
             t_schema());
    locker_sql(sql);

    double t0 = t_now_ms();
    CHECK_RC(setcache_set_string(c, "account", "1", "k", "v2"), SETCACHE_ERR_TIMEOUT);
    double took = t_now_ms() - t0;
    CHECK(strstr(setcache_errmsg(), "statement_timeout_ms") != NULL);
    fprintf(stderr, "    write behind a row lock: SETCACHE_ERR_TIMEOUT after %.0f ms (%s)\n", took,
            setcache_errmsg());
    CHECK(took >= 280 && took <= 300 + 1500);
    setcache_kv kv[2] = {{"k", "v2"}, {"k2", "x"}};
    CHECK_RC(setcache_set_many(c, "account", "1", kv, 2), SETCACHE_ERR_TIMEOUT);
    CHECK(strstr(setcache_errmsg(), "statement_timeout_ms") != NULL);
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v1");
    CHECK_RC(setcache_get_string(c, "account", "1", "k2", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);

    /* a load behind a table lock */
    snprintf(sql, sizeof sql, "LOCK TABLE \"%s\".settings IN ACCESS EXCLUSIVE MODE", t_schema());
    locker_sql(sql);
    t0 = t_now_ms();
    CHECK_RC(setcache_get_string(c, "account", "2", "k", buf, sizeof buf, NULL),
             SETCACHE_ERR_TIMEOUT);
    took = t_now_ms() - t0;
    CHECK(strstr(setcache_errmsg(), "statement_timeout_ms") != NULL);
    fprintf(stderr, "    load behind a table lock: SETCACHE_ERR_TIMEOUT after %.0f ms\n", took);
    CHECK(took >= 280 && took <= 300 + 1500);
    CHECK_RC(setcache_preload(c, "expert"), SETCACHE_ERR_TIMEOUT);
    CHECK(strstr(setcache_errmsg(), "statement_timeout_ms") != NULL);
    /* cached reads answer meanwhile */
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v1");
    locker_sql("ROLLBACK");
    end_locker();

    /* nothing was written; the limit is not left on the session */
    CHECK_STR(t_sql_value("SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM "
                          "\"%s\".settings WHERE entity_id = '1'",
                          t_schema()),
              "k=v1");
    char shown[32];
    CHECK_OK(setcache_with_conn(c, show_statement_timeout, shown));
    CHECK_STR(shown, "0");
    CHECK_RC(setcache_get_string(c, "account", "2", "k", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_OK(setcache_set_many(c, "account", "1", kv, 2));
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "v2");
    CHECK_OK(setcache_preload(c, "account"));
    CHECK_OK(setcache_get_string(c, "account", "1", "k2", buf, sizeof buf, NULL));
    CHECK_STR(buf, "x");
    setcache_close(c);
}

/* ---- the listener's LISTEN has a deadline too ---- */

static int stopped_listener;
static void resume_listener(void)
{
    if (stopped_listener > 0) {
        kill(stopped_listener, SIGCONT);
        stopped_listener = 0;
    }
}

/* The first listener session is stopped after connecting, before LISTEN. */
static void stop_first_listener(setcache *c)
{
    (void)c;
    if (stopped_listener != 0) {
        return;
    }
    PGconn *a = PQconnectdb(t_conninfo());
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT pid FROM pg_stat_activity WHERE application_name = 'setcache:%d:listen'",
             (int)getpid());
    PGresult *r = PQexec(a, sql);
    int pid =
        PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    PQfinish(a);
    stopped_listener = pid;
    if (pid > 0) {
        kill(pid, SIGSTOP);
    }
}

/* A server that goes silent between the listener's connect and its LISTEN:
 * the LISTEN round trip gives up after io_timeout_ms, the listener
 * reconnects, and the handle turns VALID (without the deadline it would
 * wait for the stopped backend for ever). */
TEST_T(listener_listen_round_trip_has_a_deadline, 60)
{
    t_on_fail(resume_listener);
    setcache__hooks.listener_before_listen = stop_first_listener;
    setcache_options o;
    t_options(&o);
    o.io_timeout_ms = 500;
    double t0 = t_now_ms();
    setcache *c = t_open_with(&o);
    while (t_stats(c).state != SETCACHE_STATE_VALID && t_now_ms() - t0 < 10000) {
        t_sleep_ms(10);
    }
    double took = t_now_ms() - t0;
    setcache__hooks.listener_before_listen = NULL;
    fprintf(stderr,
            "    VALID %.0f ms after open, the first listener session stopped before LISTEN\n",
            took);
    CHECK(stopped_listener > 0);
    CHECK_INT(t_stats(c).state, SETCACHE_STATE_VALID);
    CHECK(took < 500 + 3000);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "v"));
    resume_listener();
    /* the stopped session, shut down by the client, ends once resumed */
    double t1 = t_now_ms();
    while (t_sessions_of(getpid()) > o.pool_size + 1 && t_now_ms() - t1 < 5000) {
        t_sleep_ms(20);
    }
    CHECK(t_sessions_of(getpid()) <= o.pool_size + 1);
    setcache_close(c);
}

/* ---- prepared_statements: prepared once per connection, again when gone ---- */

typedef struct prep_seen {
    int n;                /* the session's setcache_ statements */
    long long executions; /* of the upsert's, by the server's plan counters */
    bool limit, load, upsert;
} prep_seen;

static int count_prepared(void *arg, PGconn *conn)
{
    prep_seen *s = arg;
    memset(s, 0, sizeof *s);
    PGresult *r = PQexec(conn, "SELECT statement, generic_plans + custom_plans FROM "
                               "pg_prepared_statements WHERE name LIKE 'setcache\\_%'");
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
        const char *sql = PQgetvalue(r, i, 0);
        s->n++;
        s->limit |= strstr(sql, "set_config('statement_timeout'") != NULL;
        s->load |= strncmp(sql, "SELECT key, value, version FROM", 31) == 0;
        if (strncmp(sql, "INSERT INTO", 11) == 0) {
            s->upsert = true;
            s->executions = atoll(PQgetvalue(r, i, 1));
        }
    }
    int rc = PQresultStatus(r) == PGRES_TUPLES_OK ? SETCACHE_OK : SETCACHE_ERR_DB;
    PQclear(r);
    return rc;
}

/* With prepared_statements, a pooled connection prepares the load, the
 * single write and the statement_timeout set_config once and runs them by
 * name; statements the server lost (DEALLOCATE ALL, as a pooler's reset
 * does) are prepared again without failing a read, a re-read or a write;
 * without the option nothing is prepared. */
TEST_T(prepared_statements_are_prepared_once_and_again_when_gone, 60)
{
    setcache_options o;
    t_options(&o);
    o.pool_size = 1; /* setcache_with_conn borrows the same session */
    o.prepared_statements = true;
    setcache *c = t_open_with(&o);
    char buf[64];
    for (int i = 0; i < 20; i++) {
        snprintf(buf, sizeof buf, "v%d", i);
        CHECK_OK(setcache_set_string(c, "account", "1", "k", buf));
    }
    CHECK_RC(setcache_get_string(c, "account", "2", "k", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    prep_seen s;
    CHECK_OK(setcache_with_conn(c, count_prepared, &s));
    fprintf(stderr, "    prepared: %d statements, the upsert run %lld times\n", s.n, s.executions);
    CHECK(s.limit && s.load && s.upsert);
    CHECK(s.n == 3);
    CHECK(s.executions == 20);

    /* a change by plain SQL is re-read with the prepared load */
    t_sql("UPDATE \"%s\".settings SET value = 'sql1' WHERE entity_type = 'account' AND "
          "entity_id = '1' AND key = 'k'",
          t_schema());
    CHECK(t_wait_value(c, "account", "1", "k", "sql1", 5000) >= 0);

    /* the server forgets them: reads, re-reads and writes go on */
    CHECK_OK(setcache_with_conn(c, t_deallocate_all, NULL));
    t_sql("UPDATE \"%s\".settings SET value = 'sql2' WHERE entity_type = 'account' AND "
          "entity_id = '1' AND key = 'k'",
          t_schema());
    CHECK(t_wait_value(c, "account", "1", "k", "sql2", 5000) >= 0);
    CHECK_OK(setcache_with_conn(c, t_deallocate_all, NULL));
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "after"));
    CHECK_OK(setcache_with_conn(c, t_deallocate_all, NULL));
    CHECK_RC(setcache_get_string(c, "account", "3", "k", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_OK(setcache_with_conn(c, count_prepared, &s));
    fprintf(stderr, "    after DEALLOCATE ALL and a load: %d statements (load %d, limit %d)\n", s.n,
            s.load, s.limit);
    /* (a statement prepared before the failure that told of the loss may
     * stay on the session under its old name) */
    CHECK(s.load && s.limit);
    CHECK_STR(t_sql_value("SELECT value FROM \"%s\".settings WHERE entity_type = 'account' AND "
                          "entity_id = '1' AND key = 'k'",
                          t_schema()),
              "after");
    setcache_close(c);

    /* off by default: nothing prepared */
    t_options(&o);
    o.pool_size = 1;
    c = t_open_with(&o);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "off"));
    CHECK_RC(setcache_get_string(c, "account", "4", "k", buf, sizeof buf, NULL),
             SETCACHE_NOT_FOUND);
    CHECK_OK(setcache_with_conn(c, count_prepared, &s));
    CHECK(s.n == 0);
    setcache_close(c);
}
