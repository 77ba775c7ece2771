/*
 * listen.c - the listener thread: its own connection (listen_conninfo),
 * LISTEN on the channel, and every notification applied to the cache as a
 * hint (drop what is stale; the next read loads it again).
 *
 * Owns: the listener's PGconn (only this thread touches it), c->wake_fd and
 * c->state. Takes shard locks through cache.c; never runs user code except
 * the log callback, with no lock held. Started and stopped by handle.c.
 *
 * On every (re)connect the order is: LISTEN (committed), then forget what
 * the cache held (changes made while nobody listened may be missed), then
 * VALID. While INTERRUPTED, last-known values keep being served.
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

#define SC_BACKOFF_MIN_MS 100
#define SC_BACKOFF_MAX_MS 10000
#define SC_PAYLOAD_MAX 8000

static const char *state_name(int st)
{
    switch (st) {
    case SETCACHE_STATE_CONNECTING:
        return "CONNECTING";
    case SETCACHE_STATE_VALID:
        return "VALID";
    case SETCACHE_STATE_INTERRUPTED:
        return "INTERRUPTED";
    default:
        return "CLOSED";
    }
}

static void set_state(setcache *c, int st, const char *why)
{
    int old = atomic_exchange(&c->state, st);
    pthread_mutex_lock(&c->state_mu);
    pthread_cond_broadcast(&c->state_cv);
    pthread_mutex_unlock(&c->state_mu);
    if (old != st) {
        setcache__log(c, st == SETCACHE_STATE_VALID ? SETCACHE_LOG_INFO : SETCACHE_LOG_WARN,
                      "listener %s -> %s%s%s", state_name(old), state_name(st), why ? ": " : "",
                      why ? why : "");
    }
}

/* Sleep up to ms, waking early when the handle closes. */
static void nap(setcache *c, int ms)
{
    struct pollfd p = {c->wake_fd, POLLIN, 0};
    poll(&p, 1, ms);
}

/*
 * Parse "1 US op US version US type US id US key" (US = 0x1f) or
 * "1 US T US 0". The payload is copied into buf so the identity can point
 * into it. Returns 0 and fills *op, *version, *id (key NULL for 'T'), or -1
 * for anything malformed: payloads are public and may be forged.
 */
int setcache__parse_payload(const char *payload, char *buf, size_t cap, char *op,
                            int64_t *version, sc_ident *id)
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
    if (*op == 'T') {
        return nf == 3 ? 0 : -1;
    }
    if ((*op != 'I' && *op != 'U' && *op != 'D') || nf != 6) {
        return -1;
    }
    if (setcache__ident(id, f[3], f[4], f[5]) != SETCACHE_OK ||
        setcache__ident_validate(id) != SETCACHE_OK) {
        return -1;
    }
    return 0;
}

static void handle_notify(setcache *c, PGnotify *n)
{
    setcache__count(c, SC_ST_NOTIFICATIONS, 1);
    if (strcmp(n->relname, c->channel) != 0) {
        return;
    }
    char buf[SC_PAYLOAD_MAX + 1];
    char op;
    int64_t version;
    sc_ident id;
    if (setcache__parse_payload(n->extra, buf, sizeof buf, &op, &version, &id) != 0) {
        setcache__count(c, SC_ST_MALFORMED, 1);
        return;
    }
    if (op == 'T') {
        setcache__invalidate_all(c);
    } else if (setcache__is_writing(c, n->be_pid)) {
        /* the echo of a library write still in flight: its result is applied
         * to the cache by version when it returns (or invalidates it) */
        return;
    } else {
        setcache__apply_hint(c, op, version, &id);
    }
}

static PGconn *listen_connect(setcache *c)
{
    const char *ci = c->listen_conninfo ? c->listen_conninfo : c->conninfo;
    PGconn *conn = setcache__connect(c, ci, "listen");
    if (!conn) {
        return NULL;
    }
    char *q = setcache__quote_ident(c->channel);
    size_t n = q ? strlen(q) + 8 : 0;
    char *sql = q ? malloc(n) : NULL;
    if (!sql) {
        free(q);
        PQfinish(conn);
        return NULL;
    }
    snprintf(sql, n, "LISTEN %s", q);
    PGresult *r = PQexec(conn, sql);
    setcache__count(c, SC_ST_QUERIES, 1);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        setcache__fail_pg(SETCACHE_ERR_DB, "LISTEN", conn, r);
    }
    PQclear(r);
    free(sql);
    free(q);
    if (!ok) {
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

static void *listener_main(void *arg)
{
    setcache *c = arg;
    int backoff = SC_BACKOFF_MIN_MS;
    bool ever_valid = false;
    unsigned seed = (unsigned)c->pid ^ (unsigned)time(NULL);

    while (!atomic_load(&c->closing)) {
        PGconn *conn = listen_connect(c);
        c->listen_conn = conn;
        if (!conn) {
            const char *why = setcache_errmsg();
            if (ever_valid) {
                set_state(c, SETCACHE_STATE_INTERRUPTED, why);
            } else {
                setcache__log(c, SETCACHE_LOG_WARN, "listener: %s", why);
            }
            nap(c, backoff / 2 + (int)(rand_r(&seed) % (unsigned)(backoff / 2 + 1)));
            backoff = backoff * 2 > SC_BACKOFF_MAX_MS ? SC_BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        /* LISTEN is in effect: now forget whatever may have changed unseen. */
        if (ever_valid) {
            setcache__count(c, SC_ST_RECONNECTS, 1);
            setcache__count(c, SC_ST_RESYNCS, 1);
        }
        setcache__invalidate_all(c);
        set_state(c, SETCACHE_STATE_VALID, NULL);
        ever_valid = true;
        backoff = SC_BACKOFF_MIN_MS;

        int sock = PQsocket(conn);
        const char *why = NULL;
        while (!atomic_load(&c->closing)) {
            struct pollfd p[2] = {{sock, POLLIN, 0}, {c->wake_fd, POLLIN, 0}};
            int n = poll(p, 2, 1000);
            if (n < 0 && errno != EINTR) {
                why = "poll failed";
                break;
            }
            if (atomic_load(&c->closing)) {
                break;
            }
            if (n > 0 && (p[0].revents & (POLLIN | POLLERR | POLLHUP))) {
                if (!PQconsumeInput(conn)) {
                    why = PQerrorMessage(conn);
                    break;
                }
                PGnotify *nt;
                while ((nt = PQnotifies(conn)) != NULL) {
                    handle_notify(c, nt);
                    PQfreemem(nt);
                }
            }
            if (PQstatus(conn) != CONNECTION_OK) {
                why = "connection lost";
                break;
            }
        }
        if (!atomic_load(&c->closing)) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s", why ? why : "connection lost");
            size_t ml = strlen(msg);
            while (ml && (msg[ml - 1] == '\n' || msg[ml - 1] == ' ')) {
                msg[--ml] = '\0';
            }
            set_state(c, SETCACHE_STATE_INTERRUPTED, msg);
        }
        c->listen_conn = NULL;
        PQfinish(conn);
        if (!atomic_load(&c->closing)) {
            nap(c, backoff);
        }
    }
    return NULL;
}

int setcache__listener_start(setcache *c)
{
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd < 0) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "eventfd: %s", strerror(errno));
    }
    if (pthread_create(&c->listener, NULL, listener_main, c) != 0) {
        close(c->wake_fd);
        c->wake_fd = -1;
        return setcache__fail(SETCACHE_ERR_NOMEM, "cannot start the listener thread");
    }
    c->listener_started = true;
    /* Wait (bounded) for the first LISTEN, so that reads right after open are
     * already covered by notifications. */
    int wait_ms = c->acquire_timeout_ms > 1000 ? c->acquire_timeout_ms : 1000;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += wait_ms / 1000;
    dl.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->state_mu);
    while (atomic_load(&c->state) != SETCACHE_STATE_VALID) {
        if (pthread_cond_timedwait(&c->state_cv, &c->state_mu, &dl) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&c->state_mu);
    if (atomic_load(&c->state) != SETCACHE_STATE_VALID) {
        setcache__log(c, SETCACHE_LOG_WARN,
                      "listener not confirmed after %d ms; reads are served, state stays "
                      "CONNECTING until it is",
                      wait_ms);
    }
    return SETCACHE_OK;
}

void setcache__listener_stop(setcache *c)
{
    if (c->listener_started) {
        uint64_t one = 1;
        ssize_t w = write(c->wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(c->listener, NULL);
        c->listener_started = false;
    }
    if (c->wake_fd >= 0) {
        close(c->wake_fd);
        c->wake_fd = -1;
    }
}
