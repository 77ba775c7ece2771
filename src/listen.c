/*
 * listen.c - the listener thread: its own connection (listen_conninfo),
 * LISTEN on the channel, a heartbeat that proves the connection alive, and
 * every notification passed to the refresher as a hint. The listener never
 * waits on the database for the cache: the refresher re-reads changed
 * entities in the background while readers keep the old values
 * (refresh-ahead), and this handle's own writes are recognised by backend
 * pid and skipped.
 *
 * Owns: c->listen: the listener's PGconn (only this thread touches it) and
 * the state (state_mu with state_cv, taken alone, to wake setcache_open).
 * Never runs user code except the log and state callbacks, with no lock
 * held.
 *
 * On every (re)connect the order is: LISTEN (committed), then ask the
 * refresher to reconcile (it announces a RESYNC and compares every cached
 * entity with the table, so changes made while nobody listened are found),
 * then VALID. While INTERRUPTED, last-known values keep being served.
 *
 * Liveness at O(1) per process. One listener per database and channel is
 * the ticker: it holds a session advisory lock (SC_TICK_LOCK, a hash of the
 * channel) on its listener connection and sends one tick (a NOTIFY on the
 * channel, "1 US K US seq") every heartbeat_ms; every listener takes any
 * tick it receives as proof that its connection delivers notifications.
 * The ticker's proof is its own tick coming back. A listener that has seen
 * no proof for heartbeat_ms + SC_TICK_SLACK probes its own session: one
 * round trip that tries the lock and sends a NOTIFY on a channel only it
 * listens on (setcache_probe_<backend pid>); if the lock is taken, it is the
 * ticker from then on (so a dead ticker is replaced within one heartbeat).
 * A tick or probe not back within heartbeat_deadline_ms turns the state
 * INTERRUPTED and the connection is made again with backoff. Ticks and
 * probes commit with synchronous_commit off: they never wait for a WAL
 * flush while holding the notify queue's lock. With N idle processes the
 * server sees one notifying commit per heartbeat and N deliveries of it,
 * not N and N squared.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define SC_PAYLOAD_MAX 8000
#define SC_TICK_LOCK 1396899841 /* the advisory lock's first key: "SC\0\1" */
#define SC_TICK_SLACK_MAX 100   /* ms a tick may be late before a probe */

/* Move to a state and tell the log and the state callback (no lock held). */
static void set_state(setcache *c, int st, const char *why)
{
    int old = atomic_exchange(&c->listen.state, st);
    pthread_mutex_lock(&c->listen.state_mu);
    pthread_cond_broadcast(&c->listen.state_cv);
    pthread_mutex_unlock(&c->listen.state_mu);
    if (old != st) {
        setcache__log(c, st == SETCACHE_STATE_VALID ? SETCACHE_LOG_INFO : SETCACHE_LOG_WARN,
                      "listener %s -> %s%s%s", setcache_state_name(old), setcache_state_name(st),
                      why ? ": " : "", why ? why : "");
        if (c->on_state) {
            c->on_state(c->state_arg, st, why ? why : "");
        }
    }
}

static void drain_wake(setcache *c)
{
    uint64_t v;
    while (read(c->wake_fd, &v, sizeof v) > 0) {
    }
}

/* Sleep up to ms, waking early when the handle closes. */
static void nap(setcache *c, int ms)
{
    double until = setcache__mono_ms() + ms;
    while (!atomic_load(&c->closing)) {
        double left = until - setcache__mono_ms();
        if (left <= 0) {
            break;
        }
        struct pollfd p = {c->wake_fd, POLLIN, 0};
        if (poll(&p, 1, (int)left + 1) > 0) {
            drain_wake(c);
        }
    }
}

/*
 * Parse "1 US op US version US type US id US key" (US = 0x1f) or
 * "1 US T US 0". The payload is copied into buf so the identity can point
 * into it. Returns 0 and fills *op, *version, *id (key NULL for 'T'), or -1
 * for anything malformed: payloads are public and may be forged.
 */
int setcache__parse_payload(const char *payload, char *buf, size_t cap, char *op, int64_t *version,
                            sc_ident *id)
{
    size_t len = strnlen(payload, cap);
    if (len >= cap || len > SC_PAYLOAD_MAX) {
        return -1;
    }
    memcpy(buf, payload, len + 1);
    char *f[7];
    int nf = 0;
    char *p = buf;
    f[nf++] = p;
    while ((p = strchr(p, '\x1f')) != NULL) {
        if (nf == 7) {
            return -1;
        }
        *p++ = '\0';
        f[nf++] = p;
    }
    if (strcmp(f[0], "1") != 0 || nf < 3 || strlen(f[1]) != 1) {
        return -1;
    }
    *op = f[1][0];
    if (!setcache__parse_int(f[2], version) || *version < 0) {
        return -1;
    }
    if (*op == 'T' || *op == 'H' || *op == 'K') {
        return nf == 3 ? 0 : -1;
    }
    if ((*op != 'I' && *op != 'U' && *op != 'D' && *op != 'F') || nf != 6) {
        return -1;
    }
    if (setcache__ident(id, f[3], f[4], f[5]) != SETCACHE_OK ||
        setcache__ident_validate(id) != SETCACHE_OK) {
        return -1;
    }
    return 0;
}

typedef struct listener {
    PGconn *conn;
    int backend_pid;
    bool ticker;        /* holds the tick lock: sends the ticks */
    bool inflight;      /* a tick or probe query not yet complete */
    bool got_lock;      /* the probe in flight took the tick lock */
    bool elect;         /* no probe sent yet on this connection */
    int64_t hb_seq;     /* last tick or probe sent */
    int64_t hb_waiting; /* tick or probe not yet back, 0 = none */
    double hb_sent_ms, hb_next_ms;
    double proof_ms; /* last proof that notifications arrive */
    char probe_channel[40];
    const char *hb_sql_prefix; /* NOTIFY "channel", E' (owned by the handle) */
} listener;

/* Notifications are hints: identifiers, operation and version; never values. */
static void handle_notify(setcache *c, listener *l, PGnotify *n)
{
    setcache__count(c, SC_ST_NOTIFICATIONS, 1);
    char buf[SC_PAYLOAD_MAX + 1];
    char op;
    int64_t version;
    sc_ident id;
    if (strcmp(n->relname, l->probe_channel) == 0) {
        /* only our own probe: the channel is ours, but anyone may NOTIFY */
        if (n->be_pid == l->backend_pid && setcache__parse_int(n->extra, &version) &&
            version == l->hb_waiting) {
            l->hb_waiting = 0;
            l->proof_ms = setcache__mono_ms();
            setcache__count(c, SC_ST_HEARTBEATS, 1);
        }
        return;
    }
    if (strcmp(n->relname, c->channel) != 0 ||
        setcache__parse_payload(n->extra, buf, sizeof buf, &op, &version, &id) != 0) {
        setcache__count(c, SC_ST_MALFORMED, 1);
        return;
    }
    if (op == 'K') {
        /* a tick: whoever sent it, it arrived, so this connection delivers */
        l->proof_ms = setcache__mono_ms();
        if (l->ticker && n->be_pid == l->backend_pid && version == l->hb_waiting) {
            l->hb_waiting = 0;
        }
        setcache__count(c, SC_ST_HEARTBEATS, 1);
        return;
    }
    if (op == 'H') {
        return; /* a heartbeat of an older version of the library */
    }
    if (op == 'F') {
        setcache__request_defs_reload(c); /* a shared definition changed */
        return;
    }
    if (op == 'T') {
        setcache__request_resync(c, 0);
    } else if (setcache__is_writing(c, n->be_pid)) {
        /* the echo of a library write still in flight: its result is applied
         * to the cache by version when it returns (or invalidates it) */
        return;
    } else {
        setcache__hint(c, op, version, n->be_pid, &id);
    }
}

static PGconn *listen_connect(setcache *c)
{
    const char *ci = c->listen_conninfo ? c->listen_conninfo : c->conninfo;
    PGconn *conn = setcache__connect(c, ci, "listen", NULL);
    if (!conn) {
        return NULL;
    }
    SC_HOOK(listener_before_listen, c);
    char *q = setcache__quote_ident(c->channel);
    size_t n = q ? strlen(q) + 128 : 0;
    char *sql = q ? malloc(n) : NULL;
    if (!sql) {
        free(q);
        PQfinish(conn);
        return NULL;
    }
    /* ticks and probes never wait for a WAL flush (see the top) */
    snprintf(sql, n, "SET synchronous_commit = off; LISTEN setcache_probe_%d; LISTEN %s",
             PQbackendPID(conn), q);
    bool timed_out;
    PGresult *r = setcache__exec_simple(c, conn, sql, &timed_out);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (timed_out) {
        setcache__fail(SETCACHE_ERR_DB, "LISTEN: no answer within io_timeout_ms (%d ms)",
                       c->io_timeout_ms);
    } else if (!ok) {
        setcache__fail_pg(SETCACHE_ERR_DB, "LISTEN", conn, r);
    }
    PQclear(r);
    free(sql);
    free(q);
    if (!ok || PQsetnonblocking(conn, 1) != 0) {
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* The tick lock's second key: the channel's hash, so that handles on other
 * channels of the same database elect their own ticker; every process and
 * version of the library must compute the same. */
static int tick_key(const setcache *c)
{
    /* FNV-1a: the same in every process (the cache's hash is seeded) */
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)c->channel; *p; p++) {
        h = (h ^ *p) * 16777619u;
    }
    return (int)(h & 0x7fffffff);
}

/* The ticker's tick (also its own proof), or anyone else's probe: a round
 * trip that tries the tick lock and a NOTIFY only this session receives. */
static bool send_heartbeat(setcache *c, listener *l)
{
    char sql[256];
    l->hb_seq++;
    if (l->ticker) {
        snprintf(sql, sizeof sql, "%s1\x1fK\x1f%lld'", l->hb_sql_prefix, (long long)l->hb_seq);
    } else {
        snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%d, %d); NOTIFY %s, '%lld'",
                 SC_TICK_LOCK, tick_key(c), l->probe_channel, (long long)l->hb_seq);
    }
    if (!PQsendQuery(l->conn, sql)) {
        return false;
    }
    l->inflight = true;
    l->got_lock = false;
    l->elect = false;
    l->hb_waiting = l->hb_seq;
    l->hb_sent_ms = setcache__mono_ms();
    l->hb_next_ms = l->hb_sent_ms + c->heartbeat_ms;
    return PQflush(l->conn) >= 0;
}

/* How late a tick may be before this listener probes its own session. */
static double tick_slack(const setcache *c)
{
    int s = c->heartbeat_ms / 4;
    return s < SC_TICK_SLACK_MAX ? s : SC_TICK_SLACK_MAX;
}

/* Serve one connection until it fails or the handle closes. Returns the
 * reason it ended (static or libpq text), NULL when closing. */
static const char *serve(setcache *c, listener *l, uint64_t gen, double *valid_since)
{
    int sock = PQsocket(l->conn);
    l->hb_waiting = 0;
    l->ticker = false;
    l->inflight = false;
    l->elect = true;
    l->hb_next_ms = setcache__mono_ms(); /* probe at once: elect a ticker if none */
    l->proof_ms = l->hb_next_ms;         /* LISTEN just came back */
    snprintf(l->probe_channel, sizeof l->probe_channel, "setcache_probe_%d", l->backend_pid);
    bool valid = false;
    while (!atomic_load(&c->closing)) {
        double now = setcache__mono_ms();
        if (!valid && setcache__reconciled_gen(c) == gen) {
            /* LISTEN is in effect and what changed unseen has been reconciled */
            valid = true;
            *valid_since = now;
            set_state(c, SETCACHE_STATE_VALID, NULL);
        }
        if (l->hb_waiting && now - l->hb_sent_ms > c->heartbeat_deadline_ms) {
            return "heartbeat not answered in time (silent listener)";
        }
        /* the ticker ticks every heartbeat; anyone else probes when the
         * ticks stop (then l->hb_next_ms follows the last proof) */
        if (!l->ticker && !l->elect) {
            l->hb_next_ms = l->proof_ms + c->heartbeat_ms + tick_slack(c);
        }
        if (!l->hb_waiting && !l->inflight && now >= l->hb_next_ms && !send_heartbeat(c, l)) {
            return PQerrorMessage(l->conn);
        }
        double wake = l->hb_waiting ? l->hb_sent_ms + c->heartbeat_deadline_ms : l->hb_next_ms;
        int timeout = (int)(wake - now) + 1;
        if (timeout > 250) {
            timeout = 250;
        }
        if (timeout < 1) {
            timeout = 1;
        }
        short out = PQflush(l->conn) == 1 ? POLLOUT : 0;
        struct pollfd p[2] = {{sock, (short)(POLLIN | out), 0}, {c->wake_fd, POLLIN, 0}};
        int n = poll(p, 2, timeout);
        if (n < 0 && errno != EINTR) {
            return "poll failed";
        }
        if (n > 0 && (p[1].revents & POLLIN)) {
            drain_wake(c);
        }
        if (atomic_load(&c->closing)) {
            break;
        }
        if (n > 0 && (p[0].revents & (POLLIN | POLLERR | POLLHUP))) {
            if (!PQconsumeInput(l->conn)) {
                return PQerrorMessage(l->conn);
            }
            while (l->inflight && !PQisBusy(l->conn)) {
                PGresult *r = PQgetResult(l->conn);
                if (!r) {
                    l->inflight = false; /* the query is complete */
                    if (l->got_lock && !l->ticker) {
                        l->ticker = true; /* tick now */
                        l->hb_next_ms = setcache__mono_ms();
                        setcache__log(c, SETCACHE_LOG_INFO, "listener: this process ticks");
                    }
                    break;
                }
                if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                    strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
                    l->got_lock = true;
                }
                PQclear(r);
            }
            PGnotify *nt;
            while ((nt = PQnotifies(l->conn)) != NULL) {
                handle_notify(c, l, nt);
                PQfreemem(nt);
            }
        }
        if (PQstatus(l->conn) != CONNECTION_OK) {
            return "connection lost";
        }
    }
    return NULL;
}

static void *listener_main(void *arg)
{
    setcache *c = arg;
    int backoff = c->reconnect_initial_ms;
    bool ever = false;
    uint64_t gen = 0;
    double valid_since = 0;
    unsigned seed = (unsigned)c->pid ^ (unsigned)time(NULL);
    listener l;
    memset(&l, 0, sizeof l);
    l.hb_sql_prefix = c->listen.hb_sql_prefix;

    while (!atomic_load(&c->closing) && l.hb_sql_prefix) {
        PGconn *conn = listen_connect(c);
        const char *why = NULL;
        char msg[256];
        if (conn) {
            c->listen.conn = conn;
            l.conn = conn;
            l.backend_pid = PQbackendPID(conn);
            if (ever) {
                setcache__count(c, SC_ST_RECONNECTS, 1);
            }
            ever = true;
            /* LISTEN is committed: now reconcile what may have changed
             * unseen; VALID once that is done (see serve). */
            SC_HOOK(listener_before_reconcile, c);
            setcache__request_resync(c, ++gen);
            why = serve(c, &l, gen, &valid_since);
            snprintf(msg, sizeof msg, "%s", why ? why : "");
            c->listen.conn = NULL;
            l.conn = NULL;
            PQfinish(conn);
        } else {
            snprintf(msg, sizeof msg, "%s", setcache_errmsg());
        }
        if (atomic_load(&c->closing)) {
            break;
        }
        msg[setcache__trim_len(msg, strlen(msg))] = '\0';
        set_state(c, SETCACHE_STATE_INTERRUPTED, msg);
        /* a connection that became VALID was healthy: the backoff starts over;
         * consecutive failures to get there double it up to the cap */
        if (valid_since > 0) {
            backoff = c->reconnect_initial_ms;
        }
        valid_since = 0;
        int jittered = backoff / 2 + (int)(rand_r(&seed) % (unsigned)(backoff / 2 + 1));
        nap(c, jittered);
        backoff = backoff * 2 > c->reconnect_max_ms ? c->reconnect_max_ms : backoff * 2;
    }
    return NULL;
}

/* In a forked child: the listener thread does not exist here and its
 * connection is the parent's; free it without ending the parent's session. */
void setcache__listen_forget(setcache *c)
{
    if (c->listen.conn) {
        setcache__finish_inherited(c->listen.conn);
        c->listen.conn = NULL;
    }
    c->listen.started = false;
    atomic_store(&c->listen.state, SETCACHE_STATE_CLOSED);
}

int setcache__listen_state(setcache *c)
{
    return atomic_load(&c->listen.state);
}

void setcache__listen_init(setcache *c)
{
    atomic_init(&c->listen.state, SETCACHE_STATE_CONNECTING);
    pthread_mutex_init(&c->listen.state_mu, NULL);
    setcache__cond_init(&c->listen.state_cv);
}

/* After setcache__listener_stop; own_process as in setcache__cache_destroy. */
void setcache__listen_destroy(setcache *c, bool own_process)
{
    if (own_process) {
        pthread_mutex_destroy(&c->listen.state_mu);
        pthread_cond_destroy(&c->listen.state_cv);
    }
    free(c->listen.hb_sql_prefix);
    c->listen.hb_sql_prefix = NULL;
}

int setcache__listener_start(setcache *c)
{
    char *q = setcache__quote_ident(c->channel);
    size_t pn = q ? strlen(q) + 16 : 0;
    c->listen.hb_sql_prefix = q ? malloc(pn) : NULL;
    if (!c->listen.hb_sql_prefix) {
        free(q);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    snprintf(c->listen.hb_sql_prefix, pn, "NOTIFY %s, E'", q);
    free(q);
    if (pthread_create(&c->listen.thread, NULL, listener_main, c) != 0) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "cannot start the listener thread");
    }
    c->listen.started = true;
    /* Wait (bounded) for the first LISTEN, so that reads right after open are
     * already covered by notifications. */
    int wait_ms = c->acquire_timeout_ms > 1000 ? c->acquire_timeout_ms : 1000;
    struct timespec dl = setcache__deadline(wait_ms);
    pthread_mutex_lock(&c->listen.state_mu);
    while (atomic_load(&c->listen.state) != SETCACHE_STATE_VALID) {
        if (pthread_cond_timedwait(&c->listen.state_cv, &c->listen.state_mu, &dl) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&c->listen.state_mu);
    if (atomic_load(&c->listen.state) != SETCACHE_STATE_VALID) {
        setcache__log(c, SETCACHE_LOG_WARN,
                      "listener not confirmed after %d ms; reads are served, state stays "
                      "CONNECTING until it is",
                      wait_ms);
    }
    return SETCACHE_OK;
}

/* Join the listener thread (c->closing is set). The wake descriptor stays
 * open until every library thread has stopped. */
void setcache__listener_stop(setcache *c)
{
    if (c->listen.started) {
        uint64_t one = 1;
        ssize_t w = write(c->wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(c->listen.thread, NULL);
        c->listen.started = false;
    }
    atomic_store(&c->listen.state, SETCACHE_STATE_CLOSED);
}
