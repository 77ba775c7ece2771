/* TLS verified end to end, and no secret in any output: each test starts
 * its own cluster on 127.0.0.1 with ssl=on, a certificate signed by a CA it
 * makes with openssl, and password (SCRAM) authentication over TLS only. */
#include "harness.h"

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[128];
static int port;
static bool started;
static const char *password = "Pw-s3cr3t-7f2a91";

static void stop_cluster(void)
{
    const char *runas = getenv("SETCACHE_PG_RUNAS");
    if (started) {
        t_sh("%s %s/pg_ctl -D %s/data -m immediate -w stop >/dev/null 2>&1", runas ? runas : "",
             getenv("SETCACHE_PG_BINDIR"), dir);
        started = false;
    }
    if (dir[0]) {
        t_sh("rm -rf '%s'", dir);
        dir[0] = '\0';
    }
}

/* A CA, a server certificate for "localhost" signed by it, another CA, and
 * a cluster that takes only TLS connections with a password. */
static void start_tls_cluster(void)
{
    const char *bindir = getenv("SETCACHE_PG_BINDIR"), *pgdata = getenv("SETCACHE_PGDATA");
    const char *runas = getenv("SETCACHE_PG_RUNAS");
    if (!bindir || !pgdata) {
        t_skip("needs the private test cluster's binaries (SETCACHE_PG_BINDIR)");
    }
    if (t_sh("command -v openssl >/dev/null") != 0) {
        t_skip("openssl not found");
    }
    t_on_fail(stop_cluster);
    snprintf(dir, sizeof dir, "/tmp/setcache-tls.XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    chmod(dir, 0755);
    port = 30000 + (int)(getpid() % 20000);
    CHECK_INT(t_sh("(cd '%s' && "
                   "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 "
                   "-subj /CN=setcache-test-ca && "
                   "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt "
                   "-days 2 -subj /CN=another-ca && "
                   "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
                   "-subj /CN=localhost && "
                   "printf 'subjectAltName=DNS:localhost\\n' > san.ext && "
                   "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
                   "-out server.crt -days 2 -extfile san.ext && chmod 600 server.key) "
                   ">/dev/null 2>&1",
                   dir),
              0);
    /* the server runs as the owner of the test cluster's data directory */
    CHECK_INT(t_sh("chown $(stat -c %%U '%s') '%s' '%s/server.key' '%s/server.crt'", pgdata, dir,
                   dir, dir),
              0);
    CHECK_INT(t_sh("%s %s/initdb -D %s/data -U postgres -A trust -N >/dev/null 2>&1",
                   runas ? runas : "", bindir, dir),
              0);
    CHECK_INT(
        t_sh("%s sh -c \"printf 'local all all trust\\nhostssl all all 127.0.0.1/32 "
             "scram-sha-256\\nhostnossl all all 127.0.0.1/32 reject\\n' > %s/data/pg_hba.conf\"",
             runas ? runas : "", dir),
        0);
    CHECK_INT(
        t_sh("%s %s/pg_ctl -D %s/data -l %s/server.log -w -t 60 -o \"-c "
             "listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c ssl=on -c "
             "ssl_cert_file=%s/server.crt -c ssl_key_file=%s/server.key\" start >/dev/null 2>&1",
             runas ? runas : "", bindir, dir, dir, port, dir, dir, dir),
        0);
    started = true;
    CHECK_INT(t_sh("psql -q 'host=%s port=%d user=postgres dbname=postgres' -c \"CREATE ROLE app "
                   "LOGIN SUPERUSER PASSWORD '%s'\" >/dev/null 2>&1",
                   dir, port, password),
              0);
}

/* The admin's view over the Unix socket: one value. */
static void admin_value(char *out, size_t cap, const char *sql)
{
    char conn[256];
    snprintf(conn, sizeof conn, "host=%s port=%d user=postgres dbname=postgres", dir, port);
    PGconn *a = PQconnectdb(conn);
    CHECK(PQstatus(a) == CONNECTION_OK);
    PGresult *r = PQexec(a, sql);
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK);
    snprintf(out, cap, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    PQfinish(a);
}

typedef struct capture {
    pthread_mutex_t mu;
    char text[16384];
} capture;

static void keep(capture *k, const char *what, const char *msg)
{
    pthread_mutex_lock(&k->mu);
    size_t n = strlen(k->text);
    snprintf(k->text + n, sizeof k->text - n, "%s: %s\n", what, msg ? msg : "");
    pthread_mutex_unlock(&k->mu);
}

static void on_log(void *arg, int level, const char *msg)
{
    (void)level;
    keep(arg, "log", msg);
}

static void on_state(void *arg, int state, const char *reason)
{
    (void)state;
    keep(arg, "state", reason);
}

static setcache *open_with(const char *conninfo, capture *k, int *rc)
{
    setcache_options o;
    t_options(&o);
    o.conninfo = conninfo;
    o.log = on_log;
    o.log_arg = k;
    o.on_state = on_state;
    o.state_arg = k;
    o.heartbeat_ms = 200;
    o.heartbeat_deadline_ms = 200;
    o.reconnect_initial_ms = 50;
    o.reconnect_max_ms = 200;
    setcache *c = NULL;
    *rc = setcache_open(&c, &o);
    keep(k, "errmsg", setcache_errmsg());
    return c;
}

static const char *sessions_sql = "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) FROM "
                                  "pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE "
                                  "a.application_name LIKE 'setcache:%'";

TEST_T(tls_verify_full_for_every_session_and_no_fallback, 90)
{
    start_tls_cluster();
    capture k = {PTHREAD_MUTEX_INITIALIZER, ""};
    char ci[1024], out[64];
    snprintf(ci, sizeof ci,
             "host=localhost port=%d dbname=postgres user=app password=%s sslmode=verify-full "
             "sslrootcert=%s/ca.crt",
             port, password, dir);
    int rc;
    setcache *c = open_with(ci, &k, &rc);
    CHECK_OK(rc);
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "over tls"));
    char buf[32];
    CHECK_OK(setcache_get_string(c, "account", "1", "k", buf, sizeof buf, NULL));
    CHECK_STR(buf, "over tls");
    admin_value(out, sizeof out, sessions_sql);
    CHECK_STR(out, "2/2"); /* the pooled connection and the listener */
    /* a change by another program arrives through the TLS listener */
    char sql[512];
    snprintf(sql, sizeof sql, "UPDATE \"%s\".settings SET value = 'changed' WHERE key = 'k'",
             t_schema());
    admin_value(out, sizeof out, sql);
    CHECK(t_wait_value(c, "account", "1", "k", "changed", 5000) >= 0);
    /* the listener's reconnect keeps TLS */
    setcache_stats s0;
    setcache_get_stats(c, &s0);
    admin_value(out, sizeof out,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                "application_name LIKE 'setcache:%:listen'");
    CHECK_STR(out, "1");
    double t0 = t_now_ms();
    setcache_stats s1 = s0;
    while ((s1.reconnects == s0.reconnects || s1.state != SETCACHE_STATE_VALID) &&
           t_now_ms() - t0 < 10000) {
        t_sleep_ms(20);
        setcache_get_stats(c, &s1);
    }
    CHECK(s1.reconnects > s0.reconnects && s1.state == SETCACHE_STATE_VALID);
    admin_value(out, sizeof out, sessions_sql);
    CHECK_STR(out, "2/2");
    setcache_close(c);
    /* a wrong CA, a wrong host name: open fails with libpq's reason */
    snprintf(ci, sizeof ci,
             "host=localhost port=%d dbname=postgres user=app password=%s sslmode=verify-full "
             "sslrootcert=%s/other.crt",
             port, password, dir);
    CHECK(open_with(ci, &k, &rc) == NULL);
    CHECK_INT(rc, SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "certificate verify failed") != NULL);
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d dbname=postgres user=app password=%s sslmode=verify-full "
             "sslrootcert=%s/ca.crt",
             port, password, dir);
    CHECK(open_with(ci, &k, &rc) == NULL);
    CHECK_INT(rc, SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "does not match host name") != NULL);
    admin_value(out, sizeof out, sessions_sql);
    CHECK_STR(out, "0/0");
    CHECK(strstr(k.text, password) == NULL);
    stop_cluster();
}

TEST_T(no_password_in_any_output, 90)
{
    start_tls_cluster();
    capture k = {PTHREAD_MUTEX_INITIALIZER, ""};
    char ci[1024];
    int rc;
    for (int f = 0; f < 2; f++) {
        /* the right password, then a wrong one (the password text of the
         * wrong one is the right one with a suffix: both must stay out) */
        for (int wrong = 0; wrong < 2; wrong++) {
            char pw[64];
            snprintf(pw, sizeof pw, "%s%s", password, wrong ? "-nope" : "");
            if (f == 0) { /* key/value form */
                snprintf(ci, sizeof ci,
                         "host=localhost port=%d dbname=postgres user=app password=%s "
                         "sslmode=verify-full sslrootcert=%s/ca.crt",
                         port, pw, dir);
            } else { /* URI form */
                snprintf(ci, sizeof ci,
                         "postgresql://app:%s@localhost:%d/postgres?sslmode=verify-full&"
                         "sslrootcert=%s/ca.crt",
                         pw, port, dir);
            }
            setcache *c = open_with(ci, &k, &rc);
            if (wrong) {
                CHECK(c == NULL);
                CHECK(strstr(setcache_errmsg(), "password authentication failed") != NULL);
                continue;
            }
            CHECK_OK(rc);
            CHECK_OK(setcache_set_string(c, "account", "1", "k", "v"));
            /* the server drops every session: reasons are logged and passed on */
            char out[64];
            admin_value(out, sizeof out,
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                        "application_name LIKE 'setcache:%'");
            t_sleep_ms(600);
            setcache_close(c);
        }
    }
    /* PGPASSWORD, and a host that does not answer */
    setenv("PGPASSWORD", password, 1);
    snprintf(ci, sizeof ci,
             "host=localhost port=%d dbname=postgres user=app sslmode=verify-full "
             "sslrootcert=%s/ca.crt",
             port, dir);
    setcache *c = open_with(ci, &k, &rc);
    CHECK_OK(rc);
    setcache_close(c);
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=1 dbname=postgres user=app password=%s", password);
    CHECK(open_with(ci, &k, &rc) == NULL);
    unsetenv("PGPASSWORD");
    /* the tool: every command's output and error, right and wrong password */
    char cmd[2048], toolout[256];
    snprintf(toolout, sizeof toolout, "%s/tool.out", dir);
    const char *cmds[] = {"get account 1 k", "list account 1", "stats", "set account 1 k w",
                          "get account 1 nothing"};
    for (int wrong = 0; wrong < 2; wrong++) {
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
            snprintf(cmd, sizeof cmd,
                     "%s/setcache --schema %s --channel %s --conninfo 'host=localhost port=%d "
                     "dbname=postgres user=app password=%s%s sslmode=verify-full "
                     "sslrootcert=%s/ca.crt' %s >>%s 2>&1",
                     t_build_dir(), t_schema(), t_schema(), port, password, wrong ? "-nope" : "",
                     dir, cmds[i], toolout);
            t_sh("%s", cmd);
        }
        snprintf(cmd, sizeof cmd,
                 "timeout -s INT 2 %s/setcache --schema %s --channel %s --conninfo "
                 "'host=localhost port=%d dbname=postgres user=app password=%s%s "
                 "sslmode=verify-full sslrootcert=%s/ca.crt' watch >>%s 2>&1",
                 t_build_dir(), t_schema(), t_schema(), port, password, wrong ? "-nope" : "", dir,
                 toolout);
        t_sh("%s", cmd);
    }
    CHECK_INT(t_sh("grep -q 'password authentication failed' %s", toolout), 0);
    CHECK_INT(t_sh("grep -q 'account' %s || grep -q 'VALID' %s", toolout, toolout), 0);
    if (t_sh("grep -q -- '%s' %s", password, toolout) == 0) {
        t_sh("cat %s >&2", toolout);
        t_fail(__FILE__, __LINE__, "the tool printed the password");
    }
    if (strstr(k.text, password)) {
        t_fail(__FILE__, __LINE__, "the password was in: %s", k.text);
    }
    CHECK(strstr(k.text, "password authentication failed") != NULL); /* the reasons were seen */
    stop_cluster();
}
