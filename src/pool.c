/*
 * pool.c - the bounded connection pool and the one scoped way to borrow it.
 *
 * Owns: c->pool (slots, each with a lazily made PGconn). Lock: pool.mu, held
 * only to pick or return a slot, never across a network call.
 * Every borrow goes through setcache__with_pool(), which always gives back what it
 * took: a connection left inside a transaction is rolled back, a broken one
 * is closed and replaced lazily.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Set by setcache__exec when a round trip ran out of io_timeout_ms: the
 * caller's connection is closed, and a read is not tried again. */
static _Thread_local bool io_timed_out;

static void free_arrays(setcache *c)
{
    free(c->pool.slots);
    free(c->pool.writing);
    free(c->pool.pids);
    c->pool.slots = NULL;
    c->pool.writing = NULL;
    c->pool.pids = NULL;
}

int setcache__pool_init(setcache *c)
{
    sc_pool *p = &c->pool;
    p->size = c->pool_size;
    p->slots = calloc((size_t)p->size, sizeof *p->slots);
    p->writing = calloc((size_t)p->size, sizeof *p->writing);
    c->pool.pids = calloc((size_t)p->size, sizeof *c->pool.pids);
    if (!p->slots || !p->writing || !c->pool.pids) {
        free_arrays(c);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    setcache__cond_init(&p->cv);
    pthread_mutex_init(&p->mu, NULL);
    return SETCACHE_OK;
}

void setcache__pool_stats(setcache *c, uint32_t *size, uint32_t *in_use)
{
    pthread_mutex_lock(&c->pool.mu);
    *size = (uint32_t)c->pool.size;
    *in_use = (uint32_t)c->pool.in_use;
    pthread_mutex_unlock(&c->pool.mu);
}

/* Wake every borrower waiting for a connection (the handle is closing). */
void setcache__pool_wake(setcache *c)
{
    pthread_mutex_lock(&c->pool.mu);
    pthread_cond_broadcast(&c->pool.cv);
    pthread_mutex_unlock(&c->pool.mu);
}

/* Free a connection inherited from the parent process without ending the
 * parent's session: the socket is swapped for /dev/null in this process
 * only, so PQfinish's goodbye message goes nowhere. */
void setcache__finish_inherited(PGconn *conn)
{
    int fd = PQsocket(conn);
    if (fd >= 0) {
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0 || dup2(devnull, fd) < 0) {
            if (devnull >= 0) {
                close(devnull);
            }
            return; /* leak rather than end the parent's session */
        }
        close(devnull);
    }
    PQfinish(conn);
}

void setcache__pool_destroy(setcache *c)
{
    sc_pool *p = &c->pool;
    if (!p->slots) {
        return;
    }
    bool same_process = getpid() == c->pid;
    for (int i = 0; i < p->size; i++) {
        /* In a forked child the connections belong to the parent: a plain
         * PQfinish would end the parent's sessions. */
        if (p->slots[i].conn) {
            if (same_process) {
                PQfinish(p->slots[i].conn);
            } else {
                setcache__finish_inherited(p->slots[i].conn);
            }
        }
    }
    free_arrays(c);
    if (same_process) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
    }
}

/* Server notices (and libpq's own) go to the log callback, never to stderr. */
static void on_notice(void *arg, const char *msg)
{
    setcache *c = arg;
    size_t n = setcache__trim_len(msg, strlen(msg));
    bool warn = strncmp(msg, "WARNING:", 8) == 0; /* e.g. rows the schema upgrade reports */
    setcache__log(c, warn ? SETCACHE_LOG_WARN : SETCACHE_LOG_DEBUG, "server: %.*s", (int)n, msg);
}

/*
 * Connect without blocking the caller past timeout_ms, and give up at once
 * when the handle closes (the listener's connect must not hold up
 * setcache_close). Sets application_name to setcache:<pid>:<role> so sessions
 * can be counted, and TCP keepalives unless the conninfo says otherwise; the
 * listener also gets a tcp_user_timeout. Server notices go to the log.
 */
PGconn *setcache__connect(setcache *c, const char *conninfo, const char *role)
{
    char app[64], user_timeout[32];
    snprintf(app, sizeof app, "setcache:%ld:%s", (long)c->pid, role);
    bool listener = strcmp(role, "listen") == 0;
    snprintf(user_timeout, sizeof user_timeout, "%d",
             listener ? c->heartbeat_ms + c->heartbeat_deadline_ms : c->io_timeout_ms);
    const char *keys[8], *vals[8];
    int n = 0;
    /* defaults first: the conninfo (expanded from dbname) overrides them */
    keys[n] = "keepalives";
    vals[n++] = "1";
    keys[n] = "keepalives_idle";
    vals[n++] = "10";
    keys[n] = "keepalives_interval";
    vals[n++] = "2";
    keys[n] = "keepalives_count";
    vals[n++] = "3";
    if (listener || c->io_timeout_ms > 0) {
        keys[n] = "tcp_user_timeout";
        vals[n++] = user_timeout;
    }
    if (conninfo && *conninfo) {
        keys[n] = "dbname";
        vals[n++] = conninfo;
    }
    keys[n] = "application_name";
    vals[n++] = app;
    keys[n] = NULL;
    vals[n] = NULL;
    PGconn *conn = PQconnectStartParams(keys, vals, 1);
    if (!conn) {
        setcache__fail(SETCACHE_ERR_NOMEM, "out of memory connecting");
        return NULL;
    }
    int timeout_ms =
        listener ? 10000 : (c->acquire_timeout_ms > 2000 ? c->acquire_timeout_ms : 2000);
    double deadline = setcache__mono_ms() + timeout_ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
           st != PGRES_POLLING_FAILED) {
        if (atomic_load(&c->closing)) {
            PQfinish(conn);
            setcache__fail(SETCACHE_ERR_CLOSED, "handle is closing");
            return NULL;
        }
        double left = deadline - setcache__mono_ms();
        if (left <= 0) {
            PQfinish(conn);
            setcache__fail(SETCACHE_ERR_DB, "connecting: no answer within %d ms", timeout_ms);
            return NULL;
        }
        struct pollfd p[2] = {{PQsocket(conn), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0},
                              {listener ? c->wake_fd : -1, POLLIN, 0}};
        if (p[0].fd < 0) {
            break;
        }
        int r = poll(p, 2, left > 100 ? 100 : (int)left + 1);
        if (r > 0 && (p[1].revents & POLLIN)) {
            uint64_t v;
            ssize_t rd = read(c->wake_fd, &v, sizeof v); /* reset; closing is checked above */
            (void)rd;
        }
        if (r > 0 && p[0].revents) {
            st = PQconnectPoll(conn);
        }
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        setcache__fail_pg(SETCACHE_ERR_DB, "connecting", conn, NULL);
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, on_notice, c);
    return conn;
}

/* A pooled connection is usable if it is OK and the server has not closed it
 * while it sat idle (PQconsumeInput never blocks: libpq sockets are
 * non-blocking). */
static bool healthy(PGconn *conn)
{
    /* A terminated backend sends an error message, then closes: read until
     * nothing is pending, so that the end of the stream is seen too. */
    for (int i = 0; i < 4 && PQstatus(conn) == CONNECTION_OK; i++) {
        struct pollfd p = {PQsocket(conn), POLLIN, 0};
        if (poll(&p, 1, 0) <= 0) {
            break;
        }
        if (!PQconsumeInput(conn)) {
            return false;
        }
    }
    return PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE;
}

static int acquire(setcache *c, int *slot_out)
{
    sc_pool *p = &c->pool;
    struct timespec dl = setcache__deadline(c->acquire_timeout_ms);
    bool waited = false;
    int slot = -1;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (atomic_load(&c->closing)) {
            pthread_mutex_unlock(&p->mu);
            return setcache__fail(SETCACHE_ERR_CLOSED, "handle is closing");
        }
        for (int i = 0; i < p->size; i++) {
            if (!p->slots[i].busy && (slot < 0 || p->slots[i].conn)) {
                slot = i;
                if (p->slots[i].conn) {
                    break;
                }
            }
        }
        if (slot >= 0) {
            break;
        }
        if (!waited) {
            waited = true;
            setcache__count(c, SC_ST_POOL_WAITS, 1);
        }
        int e = pthread_cond_timedwait(&p->cv, &p->mu, &dl);
        if (e == ETIMEDOUT) {
            pthread_mutex_unlock(&p->mu);
            setcache__count(c, SC_ST_POOL_TIMEOUTS, 1);
            return setcache__fail(SETCACHE_ERR_TIMEOUT,
                                  "no pooled connection became free within %d ms (pool_size "
                                  "%d, all in use)",
                                  c->acquire_timeout_ms, p->size);
        }
    }
    p->slots[slot].busy = true;
    p->in_use++;
    PGconn *conn = p->slots[slot].conn;
    pthread_mutex_unlock(&p->mu);

    if (conn && !healthy(conn)) {
        PQfinish(conn);
        conn = NULL;
    }
    if (!conn) {
        conn = setcache__connect(c, c->conninfo, "pool");
    }
    atomic_store(&c->pool.pids[slot], conn ? PQbackendPID(conn) : 0);
    pthread_mutex_lock(&p->mu);
    p->slots[slot].conn = conn;
    if (!conn) {
        p->slots[slot].busy = false;
        p->in_use--;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        return SETCACHE_ERR_DB; /* message set by setcache__connect */
    }
    pthread_mutex_unlock(&p->mu);
    *slot_out = slot;
    return SETCACHE_OK;
}

static void release(setcache *c, int slot)
{
    sc_pool *p = &c->pool;
    PGconn *conn = p->slots[slot].conn; /* only this borrower touches it */
    bool keep = PQstatus(conn) == CONNECTION_OK;
    if (keep) {
        PGTransactionStatusType ts = PQtransactionStatus(conn);
        if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
            PGresult *r = PQexec(conn, "ROLLBACK");
            setcache__count(c, SC_ST_QUERIES, 1);
            keep = PQresultStatus(r) == PGRES_COMMAND_OK;
            PQclear(r);
        } else if (ts != PQTRANS_IDLE) {
            keep = false; /* a query still active or unknown state */
        }
    }
    if (!keep) {
        atomic_store(&c->pool.pids[slot], 0);
        PQfinish(conn);
        conn = NULL;
    }
    pthread_mutex_lock(&p->mu);
    p->slots[slot].conn = conn;
    p->slots[slot].busy = false;
    p->in_use--;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* The only way to borrow a pooled connection: fn runs with it, and it is
 * returned whatever fn did. */
int setcache__with_pool(setcache *c, sc_conn_fn fn, void *arg)
{
    int slot = -1;
    int rc = acquire(c, &slot);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    rc = fn(arg, c->pool.slots[slot].conn);
    release(c, slot);
    return rc;
}

/* Like setcache__with_pool, for idempotent reads: when the connection turns
 * out to be dead (a server restart closes every pooled session at once), run
 * fn once more on a fresh connection. */
int setcache__with_pool_read(setcache *c, sc_conn_fn fn, void *arg)
{
    int slot = -1;
    int rc = SETCACHE_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        if ((rc = acquire(c, &slot)) != SETCACHE_OK) {
            return rc;
        }
        PGconn *conn = c->pool.slots[slot].conn;
        io_timed_out = false;
        rc = fn(arg, conn);
        /* a dead connection is tried once more on a fresh one, unless it
         * went silent: then the network may be, and the caller hears now */
        bool lost = rc == SETCACHE_ERR_DB && PQstatus(conn) != CONNECTION_OK && !io_timed_out;
        release(c, slot);
        if (!lost) {
            break;
        }
    }
    return rc;
}

/* Mark a library write on conn as in flight; returns a token for
 * setcache__writing_end (-1 if none: at most pool_size writes run at once,
 * each on its own connection, so a free place always exists). */
int setcache__writing_begin(setcache *c, PGconn *conn)
{
    int pid = PQbackendPID(conn);
    for (int i = 0; i < c->pool.size; i++) {
        int zero = 0;
        if (atomic_compare_exchange_strong(&c->pool.writing[i], &zero, pid)) {
            return i;
        }
    }
    return -1;
}

void setcache__writing_end(setcache *c, int token)
{
    if (token >= 0) {
        atomic_store(&c->pool.writing[token], 0);
    }
}

bool setcache__is_writing(setcache *c, int be_pid)
{
    for (int i = 0; i < c->pool.size; i++) {
        if (atomic_load(&c->pool.writing[i]) == be_pid) {
            return true;
        }
    }
    return false;
}

int setcache_with_conn(setcache *c, int (*fn)(void *arg, PGconn *conn), void *arg)
{
    if (!c || !fn) {
        return setcache__fail(SETCACHE_ERR_ARG, "setcache_with_conn: NULL %s", c ? "fn" : "c");
    }
    return setcache__with_pool(c, fn, arg);
}

/*
 * Run one parameterised statement and classify failure: a server error is
 * SETCACHE_ERR_DB; a lost connection is SETCACHE_ERR_UNCERTAIN for a write
 * (the statement, and with autocommit its COMMIT, may have been applied) and
 * SETCACHE_ERR_DB otherwise. Returns the result (caller PQclear()s) or NULL.
 */
/* The results of one statement (the last, as PQexecParams gives), waiting
 * no longer than io_timeout_ms: on expiry the connection's socket is shut
 * down (so the pool drops it) and *timed_out set. */
static PGresult *exec_within(setcache *c, PGconn *conn, const char *sql, int n,
                             const char *const *vals, bool *timed_out)
{
    *timed_out = false;
    if (c->io_timeout_ms <= 0) {
        return PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
    }
    if (!PQsendQueryParams(conn, sql, n, NULL, vals, NULL, NULL, 0)) {
        return NULL;
    }
    double deadline = setcache__mono_ms() + c->io_timeout_ms;
    PGresult *last = NULL;
    for (;;) {
        while (!PQisBusy(conn)) {
            PGresult *r = PQgetResult(conn);
            if (!r) {
                return last;
            }
            PQclear(last);
            last = r;
        }
        double left = deadline - setcache__mono_ms();
        struct pollfd p = {PQsocket(conn), POLLIN, 0};
        int pr = left > 0 ? poll(&p, 1, (int)left + 1) : 0;
        if (pr <= 0 && !(pr < 0 && errno == EINTR)) {
            *timed_out = pr == 0;                /* else poll failed: a broken connection */
            shutdown(PQsocket(conn), SHUT_RDWR); /* never reused: libpq sees it closed */
            PQconsumeInput(conn);
            PQclear(last);
            return NULL;
        }
        if (pr > 0 && !PQconsumeInput(conn)) {
            PGresult *r; /* the connection broke: its error, as PQexecParams gives it */
            for (int i = 0; i < 4 && (r = PQgetResult(conn)) != NULL; i++) {
                PQclear(last);
                last = r;
            }
            return last;
        }
    }
}

PGresult *setcache__exec(setcache *c, PGconn *conn, const char *sql, int n, const char *const *vals,
                         bool is_write, int *rc)
{
    bool timed_out;
    PGresult *r = exec_within(c, conn, sql, n, vals, &timed_out);
    setcache__count(c, SC_ST_QUERIES, 1);
    io_timed_out = timed_out;
    if (timed_out) {
        *rc = setcache__fail(
            is_write ? SETCACHE_ERR_UNCERTAIN : SETCACHE_ERR_DB,
            "no answer from the server within io_timeout_ms (%d ms)%s; the connection is closed",
            c->io_timeout_ms, is_write ? " after the write was sent (outcome unknown)" : "");
        return NULL;
    }
    ExecStatusType st = PQresultStatus(r);
    if (r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) {
        *rc = SETCACHE_OK;
        return r;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        *rc = setcache__fail_pg(is_write ? SETCACHE_ERR_UNCERTAIN : SETCACHE_ERR_DB,
                                is_write ? "connection lost during write (outcome unknown)"
                                         : "connection lost",
                                conn, r);
    } else if (!r) {
        *rc = setcache__fail_pg(SETCACHE_ERR_NOMEM, "query", conn, NULL);
    } else {
        *rc = setcache__fail_pg(SETCACHE_ERR_DB, "database error", conn, r);
    }
    PQclear(r);
    return NULL;
}

bool setcache__is_own_backend(setcache *c, int be_pid)
{
    for (int i = 0; i < c->pool.size; i++) {
        if (atomic_load(&c->pool.pids[i]) == be_pid) {
            return true;
        }
    }
    return false;
}
