/*
 * pool.c - the bounded connection pool and the one scoped way to borrow it.
 *
 * Owns: c->pool (slots, each with a lazily made PGconn) and, when
 * write_conninfo names another server, c->wpool for writes, the same way.
 * Lock: each pool's mu, held only to pick or return a slot, never across a
 * network call.
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
/* The pool slot this thread borrowed (-1: none) and its pool, for
 * setcache__writing_begin. */
static _Thread_local int cur_slot = -1;
static _Thread_local sc_pool *cur_pool;

static void free_arrays(sc_pool *p)
{
    free(p->slots);
    free(p->writing);
    free(p->pids);
    p->slots = NULL;
    p->writing = NULL;
    p->pids = NULL;
}

static int one_init(sc_pool *p, int size, const char *conninfo, const char *role)
{
    p->size = size;
    p->conninfo = conninfo;
    p->role = role;
    p->slots = calloc((size_t)p->size, sizeof *p->slots);
    p->writing = calloc((size_t)p->size, sizeof *p->writing);
    p->pids = calloc((size_t)p->size, sizeof *p->pids);
    if (!p->slots || !p->writing || !p->pids) {
        free_arrays(p);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    setcache__cond_init(&p->cv);
    pthread_mutex_init(&p->mu, NULL);
    return SETCACHE_OK;
}

static void one_destroy(setcache *c, sc_pool *p);

int setcache__pool_init(setcache *c)
{
    int rc = one_init(&c->pool, c->pool_size, c->conninfo, "pool");
    if (rc == SETCACHE_OK && c->split_writes &&
        (rc = one_init(&c->wpool, c->pool_size, c->write_conninfo, "write")) != SETCACHE_OK) {
        one_destroy(c, &c->pool);
    }
    return rc;
}

void setcache__pool_stats(setcache *c, uint32_t *size, uint32_t *in_use)
{
    *size = 0;
    *in_use = 0;
    for (int k = 0; k < (c->split_writes ? 2 : 1); k++) {
        sc_pool *p = k == 0 ? &c->pool : &c->wpool;
        pthread_mutex_lock(&p->mu);
        *size += (uint32_t)p->size;
        *in_use += (uint32_t)p->in_use;
        pthread_mutex_unlock(&p->mu);
    }
}

/* Wake every borrower waiting for a connection (the handle is closing). */
void setcache__pool_wake(setcache *c)
{
    for (int k = 0; k < (c->split_writes ? 2 : 1); k++) {
        sc_pool *p = k == 0 ? &c->pool : &c->wpool;
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
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
    one_destroy(c, &c->pool);
    if (c->split_writes) {
        one_destroy(c, &c->wpool);
    }
}

static void one_destroy(setcache *c, sc_pool *p)
{
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
    free_arrays(p);
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

/* Which server a connection reached: its system identifier and timeline
 * (the timeline a primary writes on; a standby's from its last restart
 * point). A standby promoted to primary keeps the system identifier and
 * starts a new timeline: versions learned from before are not comparable
 * with its own, and setcache__server_gen tells the cache so. */
static const char server_sql[] =
    "SELECT s.system_identifier::text || '/' || CASE WHEN pg_is_in_recovery() THEN "
    "(SELECT timeline_id FROM pg_control_checkpoint())::text ELSE ('x' || "
    "substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text END, "
    "pg_backend_pid() FROM pg_control_system() s";

static PGresult *exec_within(setcache *c, PGconn *conn, const char *sql, int n,
                             const char *const *vals, bool prep, bool *timed_out, bool *lost);

/* False when the connection failed on the way (message set); a server
 * that won't tell (functions revoked) is logged and accepted. *pid: the
 * server's backend (behind PgBouncer PQbackendPID is the pooler's number). */
static bool learn_server(setcache *c, PGconn *conn, int *pid, bool identity)
{
    *pid = PQbackendPID(conn);
    bool timed_out, lost;
    PGresult *r = exec_within(c, conn, server_sql, 0, NULL, false, &timed_out, &lost);
    setcache__count(c, SC_ST_QUERIES, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        bool broken = timed_out || PQstatus(conn) != CONNECTION_OK;
        if (broken) {
            setcache__fail_pg(SETCACHE_ERR_DB, "connecting", conn, r);
        } else {
            setcache__log(c, SETCACHE_LOG_DEBUG, "which server: unknown (%s)",
                          r ? PQresultErrorMessage(r) : PQerrorMessage(conn));
        }
        PQclear(r);
        return !broken;
    }
    *pid = atoi(PQgetvalue(r, 0, 1));
    if (!identity) {
        PQclear(r); /* a write server's: versions are the loads' source's to order */
        return true;
    }
    char was[sizeof c->pool.server];
    pthread_mutex_lock(&c->pool.mu);
    snprintf(was, sizeof was, "%s", c->pool.server);
    bool changed = was[0] && strcmp(was, PQgetvalue(r, 0, 0)) != 0;
    snprintf(c->pool.server, sizeof c->pool.server, "%s", PQgetvalue(r, 0, 0));
    if (changed) {
        atomic_fetch_add(&c->pool.server_gen, 1);
    }
    pthread_mutex_unlock(&c->pool.mu);
    if (changed) {
        setcache__log(c, SETCACHE_LOG_WARN,
                      "connected to another server or timeline (system/timeline %s, was %s): "
                      "versions learned before are not comparable; cached entities dropped",
                      PQgetvalue(r, 0, 0), was);
    }
    PQclear(r);
    return true;
}

uint64_t setcache__server_gen(setcache *c)
{
    return atomic_load(&c->pool.server_gen);
}

/*
 * Connect without blocking the caller past timeout_ms, and give up at once
 * when the handle closes (the listener's connect must not hold up
 * setcache_close). Sets application_name to setcache:<pid>:<role> so sessions
 * can be counted, and TCP keepalives and tcp_user_timeout from io_timeout_ms
 * unless the conninfo says otherwise. Server notices go to the log.
 */
PGconn *setcache__connect(setcache *c, const char *conninfo, const char *role, int *server_pid)
{
    char app[64], user_timeout[32], idle[16], interval[16];
    snprintf(app, sizeof app, "setcache:%ld:%s", (long)c->pid, role);
    bool listener = strcmp(role, "listen") == 0;
    /* TCP gives up on a silent peer within io_timeout_ms: sent data not
     * acknowledged (tcp_user_timeout), or an idle link whose keepalives go
     * unanswered (half the time idle, then 3 probes); the listener's own
     * liveness bound is the heartbeat's, if shorter */
    int io = c->io_timeout_ms > 0 ? c->io_timeout_ms : 16000;
    int ut = io;
    if (listener && c->heartbeat_ms + c->heartbeat_deadline_ms < ut) {
        ut = c->heartbeat_ms + c->heartbeat_deadline_ms;
    }
    int idle_s = io / 2000 > 1 ? io / 2000 : 1;
    int interval_s = (io / 1000 - idle_s) / 3 > 1 ? (io / 1000 - idle_s) / 3 : 1;
    snprintf(user_timeout, sizeof user_timeout, "%d", ut);
    snprintf(idle, sizeof idle, "%d", idle_s);
    snprintf(interval, sizeof interval, "%d", interval_s);
    const char *keys[8], *vals[8];
    int n = 0;
    /* defaults first: the conninfo (expanded from dbname) overrides them */
    keys[n] = "keepalives";
    vals[n++] = "1";
    keys[n] = "keepalives_idle";
    vals[n++] = idle;
    keys[n] = "keepalives_interval";
    vals[n++] = interval;
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
    /* a network gone silent is io_timeout_ms's to report */
    int timeout_ms =
        listener ? 10000 : (c->acquire_timeout_ms > 2000 ? c->acquire_timeout_ms : 2000);
    if (c->io_timeout_ms > 0 && c->io_timeout_ms < timeout_ms) {
        timeout_ms = c->io_timeout_ms;
    }
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
    int pid;
    if (!learn_server(c, conn, &pid, strcmp(role, "write") != 0)) {
        PQfinish(conn);
        return NULL;
    }
    if (server_pid) {
        *server_pid = pid;
    }
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

static int acquire(setcache *c, sc_pool *p, int *slot_out)
{
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
    bool fresh = !conn;
    if (!conn) {
        int pid = 0;
        conn = setcache__connect(c, p->conninfo, p->role, &pid);
        atomic_store(&p->pids[slot], pid);
    }
    pthread_mutex_lock(&p->mu);
    p->slots[slot].conn = conn;
    if (fresh) {
        p->slots[slot].nprep = 0; /* a new session (every closed one's slot comes here) */
    }
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

static void release(setcache *c, sc_pool *p, int slot)
{
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
        atomic_store(&p->pids[slot], 0);
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
static int with_one(setcache *c, sc_pool *p, sc_conn_fn fn, void *arg)
{
    int slot = -1;
    int rc = acquire(c, p, &slot);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    cur_slot = slot;
    cur_pool = p;
    rc = fn(arg, p->slots[slot].conn);
    cur_slot = -1;
    cur_pool = NULL;
    release(c, p, slot);
    return rc;
}

int setcache__with_pool(setcache *c, sc_conn_fn fn, void *arg)
{
    return with_one(c, &c->pool, fn, arg);
}

int setcache__with_write_pool(setcache *c, sc_conn_fn fn, void *arg)
{
    return with_one(c, c->split_writes ? &c->wpool : &c->pool, fn, arg);
}

/* Like setcache__with_pool, for idempotent reads: when the connection turns
 * out to be dead (a server restart closes every pooled session at once), run
 * fn once more on a fresh connection. */
int setcache__with_pool_read(setcache *c, sc_conn_fn fn, void *arg)
{
    int slot = -1;
    int rc = SETCACHE_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        if ((rc = acquire(c, &c->pool, &slot)) != SETCACHE_OK) {
            return rc;
        }
        PGconn *conn = c->pool.slots[slot].conn;
        io_timed_out = false;
        double t0 = setcache__mono_ms();
        cur_slot = slot;
        cur_pool = &c->pool;
        rc = fn(arg, conn);
        cur_slot = -1;
        cur_pool = NULL;
        /* a dead connection found at once (a restarted server closes every
         * session) is tried once more on a fresh one; not one that went
         * silent (TCP gave up, or the deadline passed): then the network
         * may be, and the caller hears now */
        bool quick = c->io_timeout_ms <= 0 || setcache__mono_ms() - t0 < c->io_timeout_ms / 2.0;
        bool lost =
            rc == SETCACHE_ERR_DB && PQstatus(conn) != CONNECTION_OK && !io_timed_out && quick;
        release(c, &c->pool, slot);
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
    if (cur_pool && cur_pool != &c->pool) {
        return -1; /* written on another server than the one listened to: its
                      echo comes from elsewhere (a subscriber's apply worker) */
    }
    /* the server's backend, learned at connect (behind PgBouncer in session
     * mode it serves every transaction; in transaction mode it may not, and
     * an echo costs a re-read) */
    int pid = cur_slot >= 0 ? atomic_load(&c->pool.pids[cur_slot]) : 0;
    if (pid == 0) {
        pid = PQbackendPID(conn);
    }
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
    return setcache__with_write_pool(c, fn, arg);
}

/* How long a round trip may take: the server's own statement limit first,
 * then io_timeout_ms for the network (0: no deadline). */
static int round_trip_ms(const setcache *c)
{
    if (c->io_timeout_ms <= 0) {
        return 0;
    }
    return c->io_timeout_ms + (c->statement_timeout_ms > 0 ? c->statement_timeout_ms : 0);
}

/*
 * Send one statement. Outside a transaction, with statement_timeout_ms on,
 * it goes in a pipeline behind set_config('statement_timeout', ms, true)
 * and before one Sync: one implicit transaction (or, for BEGIN, the
 * explicit one it opens), one round trip, the limit gone with the
 * transaction, so a pooler in transaction mode never carries it over.
 * Sets *pipelined (then set_config's result comes first, and the Sync's
 * last: setcache__limit_taken, setcache__pipeline_end). Returns false if it
 * could not be sent (a half-sent pipeline's connection is shut down).
 */
static const char LIMIT_SQL[] = "SELECT set_config('statement_timeout', $1, true)";

/* sql by its prepared statement's name, or by its text (name NULL). */
static int send_one(PGconn *conn, const char *sql, const char *name, int n, const char *const *vals)
{
    return name ? PQsendQueryPrepared(conn, name, n, vals, NULL, NULL, 0)
                : PQsendQueryParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
}

static bool send_limited_as(setcache *c, PGconn *conn, const char *sql, const char *name,
                            const char *limit_name, int n, const char *const *vals, bool *pipelined)
{
    *pipelined = false;
    if (c->statement_timeout_ms <= 0 || PQtransactionStatus(conn) != PQTRANS_IDLE) {
        return send_one(conn, sql, name, n, vals) == 1;
    }
    char ms[16];
    snprintf(ms, sizeof ms, "%d", c->statement_timeout_ms);
    const char *v[1] = {ms};
    if (!PQenterPipelineMode(conn)) {
        return false;
    }
    *pipelined = true;
    if (send_one(conn, LIMIT_SQL, limit_name, 1, v) == 1 &&
        send_one(conn, sql, name, n, vals) == 1 && PQpipelineSync(conn) == 1) {
        return true;
    }
    shutdown(PQsocket(conn), SHUT_RDWR); /* half sent: never reused */
    PQconsumeInput(conn);
    return false;
}

bool setcache__send_limited(setcache *c, PGconn *conn, const char *sql, int n,
                            const char *const *vals, bool *pipelined)
{
    return send_limited_as(c, conn, sql, NULL, NULL, n, vals, pipelined);
}

/* Read set_config's result (blocking). SETCACHE_OK, or the failure. */
int setcache__limit_taken(setcache *c, PGconn *conn)
{
    (void)c;
    int rc = SETCACHE_OK;
    PGresult *r;
    while ((r = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_TUPLES_OK && st != PGRES_SINGLE_TUPLE && rc == SETCACHE_OK) {
            rc = setcache__fail_pg(SETCACHE_ERR_DB, "statement_timeout_ms", conn, r);
        }
        PQclear(r);
        if (PQstatus(conn) != CONNECTION_OK) {
            break;
        }
    }
    return rc;
}

/* Read the pipeline's Sync and leave pipeline mode (blocking). */
bool setcache__pipeline_end(setcache *c, PGconn *conn)
{
    (void)c;
    bool synced = false;
    for (int i = 0; i < 8 && !synced && PQstatus(conn) == CONNECTION_OK; i++) {
        PGresult *r = PQgetResult(conn);
        synced = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        PQclear(r);
    }
    if (!synced || !PQexitPipelineMode(conn)) {
        shutdown(PQsocket(conn), SHUT_RDWR); /* an unknown state: never reused */
        PQconsumeInput(conn);
        return false;
    }
    return true;
}

/* Results read so far of one statement: the last of the statement's own,
 * or the error that stopped the pipeline before it. */
typedef struct answer {
    bool pipelined;
    int part; /* pipelined: 0 = set_config, 1 = the statement, 2 = done */
    PGresult *last, *early;
} answer;

/* Take one result (NULL ends a statement's results). Returns true when the
 * answer is complete. */
static bool take(answer *a, PGresult *r)
{
    if (!a->pipelined) {
        if (!r) {
            return true;
        }
        PQclear(a->last);
        a->last = r;
        return false;
    }
    if (!r) {
        a->part += a->part < 2;
        return false;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_PIPELINE_SYNC) {
        PQclear(r);
        return true;
    }
    /* (single-row mode asked for an earlier query on this connection can
     * carry over to set_config's: its row then comes alone, still a success) */
    if (a->part == 0 && st != PGRES_TUPLES_OK && st != PGRES_SINGLE_TUPLE && !a->early) {
        a->early = r; /* set_config failed: the statement was not run */
        return false;
    }
    if (a->part == 1 && st != PGRES_PIPELINE_ABORTED) {
        PQclear(a->last);
        a->last = r;
        return false;
    }
    PQclear(r);
    return false;
}

static PGresult *answer_result(setcache *c, PGconn *conn, answer *a)
{
    if (a->pipelined && PQpipelineStatus(conn) != PQ_PIPELINE_OFF && !PQexitPipelineMode(conn)) {
        setcache__log(c, SETCACHE_LOG_DEBUG, "could not leave pipeline mode: %s",
                      PQerrorMessage(conn));
        shutdown(PQsocket(conn), SHUT_RDWR); /* an unknown state: never reused */
        PQconsumeInput(conn);
    }
    if (a->early) {
        PQclear(a->last);
        return a->early;
    }
    return a->last;
}

/* Wait for the answer a describes, no longer than limit ms (0: no limit):
 * on expiry the connection's socket is shut down (so it is never reused)
 * and *timed_out set. The last result, as PQexecParams gives it. */
static PGresult *await_answer(setcache *c, PGconn *conn, answer *a, int limit, bool *timed_out)
{
    double deadline = setcache__mono_ms() + limit;
    if (PQflush(conn) < 0) {
        return NULL;
    }
    for (;;) {
        while (!PQisBusy(conn)) {
            if (take(a, PQgetResult(conn))) {
                return answer_result(c, conn, a);
            }
        }
        double left = deadline - setcache__mono_ms();
        struct pollfd p = {PQsocket(conn), POLLIN, 0};
        int pr = limit <= 0 ? poll(&p, 1, -1) : left > 0 ? poll(&p, 1, (int)left + 1) : 0;
        if (pr <= 0 && !(pr < 0 && errno == EINTR)) {
            *timed_out = pr == 0;                /* else poll failed: a broken connection */
            shutdown(PQsocket(conn), SHUT_RDWR); /* never reused: libpq sees it closed */
            PQconsumeInput(conn);
            PQclear(a->last);
            PQclear(a->early);
            return NULL;
        }
        if (pr > 0 && !PQconsumeInput(conn)) {
            PGresult *r; /* the connection broke: its error, as PQexecParams gives it */
            for (int i = 0; i < 4 && (r = PQgetResult(conn)) != NULL; i++) {
                if (PQresultStatus(r) == PGRES_PIPELINE_SYNC ||
                    PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
                    PQclear(r);
                    continue;
                }
                PQclear(a->last);
                a->last = r;
            }
            PQclear(a->early);
            return a->last;
        }
    }
}

/* What became of a statement's preparation. */
enum { PREP_UNNAMED, PREP_NAMED, PREP_LOST };

/* The borrowed slot whose connection conn is, or NULL. */
static sc_slot *borrowed_slot(PGconn *conn)
{
    return cur_pool && cur_slot >= 0 && cur_pool->slots[cur_slot].conn == conn
               ? &cur_pool->slots[cur_slot]
               : NULL;
}

/*
 * With prepared_statements on and conn the borrowed pooled connection: the
 * name (in name[cap]) under which sql is prepared on it, prepared now if it
 * is not yet (one round trip, within io_timeout_ms). PREP_UNNAMED: send it
 * by its text (the option off, not a pooled connection, no room left, or
 * the server would not prepare it); PREP_LOST: the connection broke or the
 * round trip ran out of time (*timed_out); nothing of the call was sent.
 */
static int prepared_name(setcache *c, PGconn *conn, const char *sql, int n, char *name, size_t cap,
                         bool *timed_out)
{
    sc_slot *s = c->prepared_statements ? borrowed_slot(conn) : NULL;
    if (!s) {
        return PREP_UNNAMED;
    }
    /* only its borrower touches the slot's list */
    for (int i = 0; i < s->nprep; i++) {
        if (s->prep[i] == sql) {
            snprintf(name, cap, "setcache_%u_%d", s->prep_gen, i);
            return PREP_NAMED;
        }
    }
    if (s->nprep == SC_PREP_MAX || PQpipelineStatus(conn) != PQ_PIPELINE_OFF) {
        return PREP_UNNAMED;
    }
    snprintf(name, cap, "setcache_%u_%d", s->prep_gen, s->nprep);
    if (!PQsendPrepare(conn, name, sql, n, NULL)) {
        return PREP_LOST;
    }
    answer a = {0};
    PGresult *r = await_answer(c, conn, &a, c->io_timeout_ms, timed_out);
    setcache__count(c, SC_ST_QUERIES, 1);
    int out = PREP_UNNAMED;
    if (r && PQresultStatus(r) == PGRES_COMMAND_OK) {
        s->prep[s->nprep++] = sql;
        out = PREP_NAMED;
    } else if (!r || PQstatus(conn) != CONNECTION_OK) {
        out = PREP_LOST;
    } else {
        setcache__log(c, SETCACHE_LOG_DEBUG, "preparing %s failed, sent by its text: %s", name,
                      PQresultErrorMessage(r));
    }
    PQclear(r);
    return out;
}

/* The server no longer knows a prepared statement, or its plan no longer
 * fits (the statement did not run). */
static bool prepared_stale(const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    return state && (strcmp(state, "26000") == 0 ||
                     (strcmp(state, "0A000") == 0 && msg && strstr(msg, "cached plan")));
}

/* The results of one statement (the last, as PQexecParams gives), waiting
 * no longer than round_trip_ms; with prep, as a prepared statement where
 * prepared_name gives one (*lost: its preparation failed, nothing sent). */
static PGresult *exec_within(setcache *c, PGconn *conn, const char *sql, int n,
                             const char *const *vals, bool prep, bool *timed_out, bool *lost)
{
    *timed_out = false;
    *lost = false;
    answer a = {0};
    char name[40], lname[40];
    const char *nm = NULL, *ln = NULL;
    int k = prep ? prepared_name(c, conn, sql, n, name, sizeof name, timed_out) : PREP_UNNAMED;
    if (k == PREP_NAMED) {
        nm = name;
        if (c->statement_timeout_ms > 0 && PQtransactionStatus(conn) == PQTRANS_IDLE) {
            k = prepared_name(c, conn, LIMIT_SQL, 1, lname, sizeof lname, timed_out);
            ln = k == PREP_NAMED ? lname : NULL;
        }
    }
    if (k == PREP_LOST) {
        *lost = true;
        return NULL;
    }
    if (!send_limited_as(c, conn, sql, nm, ln, n, vals, &a.pipelined)) {
        return NULL;
    }
    return await_answer(c, conn, &a, round_trip_ms(c), timed_out);
}

/* Text with several statements and no parameters (the listener's LISTEN),
 * waiting no longer than io_timeout_ms; the last result, or NULL (a round
 * trip past the deadline sets *timed_out and closes the socket). */
PGresult *setcache__exec_simple(setcache *c, PGconn *conn, const char *sql, bool *timed_out)
{
    *timed_out = false;
    answer a = {0};
    if (!PQsendQuery(conn, sql)) {
        return NULL;
    }
    return await_answer(c, conn, &a, c->io_timeout_ms, timed_out);
}

/* The server cancelled the statement because of statement_timeout. */
bool setcache__cancelled_by_limit(const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    return state && strcmp(state, "57014") == 0 && msg && strstr(msg, "statement timeout");
}

/*
 * Run one parameterised statement and classify failure: a server error is
 * SETCACHE_ERR_DB (SETCACHE_ERR_TIMEOUT when statement_timeout_ms cancelled
 * it: nothing was committed); a lost connection or a round trip past its
 * deadline is SETCACHE_ERR_UNCERTAIN for a write (the statement, and with
 * autocommit its COMMIT, may have been applied) and SETCACHE_ERR_DB
 * otherwise. Returns the result (caller PQclear()s) or NULL.
 */
static PGresult *exec_as(setcache *c, PGconn *conn, const char *sql, int n, const char *const *vals,
                         bool is_write, bool prep, int *rc)
{
    bool timed_out, lost;
    bool idle = PQtransactionStatus(conn) == PQTRANS_IDLE;
    PGresult *r = exec_within(c, conn, sql, n, vals, prep, &timed_out, &lost);
    sc_slot *s = prep && c->prepared_statements ? borrowed_slot(conn) : NULL;
    if (s && r && prepared_stale(r)) {
        /* forgotten by the server: prepare afresh, under new names (some of
         * the old may still exist); outside a transaction nothing ran, so
         * the statement goes once more */
        setcache__log(c, SETCACHE_LOG_DEBUG, "a prepared statement was gone: %s",
                      PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
        s->nprep = 0;
        s->prep_gen++;
        if (idle) {
            PQclear(r);
            setcache__count(c, SC_ST_QUERIES, 1);
            r = exec_within(c, conn, sql, n, vals, prep, &timed_out, &lost);
        }
    }
    setcache__count(c, SC_ST_QUERIES, 1);
    io_timed_out = timed_out;
    if (lost) {
        *rc = timed_out ? setcache__fail(SETCACHE_ERR_DB,
                                         "no answer from the server within io_timeout_ms (%d ms) "
                                         "to preparing a statement; the connection is closed",
                                         c->io_timeout_ms)
                        : setcache__fail_pg(SETCACHE_ERR_DB, "connection lost", conn, NULL);
        return NULL;
    }
    if (timed_out) {
        *rc = setcache__fail(
            is_write ? SETCACHE_ERR_UNCERTAIN : SETCACHE_ERR_DB,
            "no answer from the server within io_timeout_ms (%d ms%s)%s; the connection is closed",
            c->io_timeout_ms, c->statement_timeout_ms > 0 ? " past statement_timeout_ms" : "",
            is_write ? " after the write was sent (outcome unknown)" : "");
        return NULL;
    }
    ExecStatusType st = PQresultStatus(r);
    if (r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) {
        *rc = SETCACHE_OK;
        return r;
    }
    const char *constraint = r ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL;
    if (constraint && strcmp(constraint, "setcache_definition") == 0) {
        /* the server's rules (the settings row trigger): its message names them */
        setcache__count(c, SC_ST_INVALID, 1);
        *rc = setcache__fail(SETCACHE_ERR_INVALID, "%s",
                             PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
    } else if (r && PQstatus(conn) == CONNECTION_OK && setcache__cancelled_by_limit(r)) {
        *rc = setcache__fail(SETCACHE_ERR_TIMEOUT,
                             "the server cancelled the statement after statement_timeout_ms "
                             "(%d ms)%s",
                             c->statement_timeout_ms, is_write ? "; nothing was written" : "");
    } else if (PQstatus(conn) != CONNECTION_OK) {
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

PGresult *setcache__exec(setcache *c, PGconn *conn, const char *sql, int n, const char *const *vals,
                         bool is_write, int *rc)
{
    return exec_as(c, conn, sql, n, vals, is_write, false, rc);
}

PGresult *setcache__exec_prepared(setcache *c, PGconn *conn, const char *sql, int n,
                                  const char *const *vals, bool is_write, int *rc)
{
    return exec_as(c, conn, sql, n, vals, is_write, true, rc);
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
