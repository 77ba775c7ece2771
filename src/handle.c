/*
 * handle.c - the handle: options, open/close, definitions, the public read
 * entry points, foreach, statistics and logging.
 *
 * Owns: struct setcache and its definitions table (c->defs under
 * c->defs_lock, a read-write lock taken alone, after any shard lock has been
 * released). Counters live in cache-line-sized stripes so that readers on
 * different threads never write the same line.
 * Called by: applications (the public API) and every other module.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- options, version ---- */

void setcache_options_init(setcache_options *o)
{
    if (!o) {
        return;
    }
    memset(o, 0, sizeof *o);
    o->schema = "setcache";
    o->channel = "setcache";
    o->pool_size = 4;
    o->acquire_timeout_ms = 5000;
    o->max_value_len = SETCACHE_MAX_VALUE_LEN;
    o->heartbeat_ms = 1000;
    o->heartbeat_deadline_ms = 1000;
    o->reconnect_initial_ms = 100;
    o->reconnect_max_ms = 10000;
    o->dispatch_queue_max = 10000;
}

const char *setcache_version(void)
{
    return SETCACHE_VERSION_STRING;
}

/* ---- open / close ---- */

typedef struct open_job {
    setcache *c;
    const setcache_options *o;
} open_job;

static int check_schema_conn(void *arg, PGconn *conn)
{
    open_job *j = arg;
    int rc = setcache__ensure_schema(j->c, conn);
    if (rc == SETCACHE_OK && j->c->create_schema && j->o->ntables) {
        rc = setcache__maps_apply(j->c, conn, j->o->tables, j->o->ntables);
    }
    if (rc == SETCACHE_OK) {
        rc = setcache__maps_prepare(j->c, conn);
    }
    return rc;
}

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static void free_handle(setcache *c)
{
    setcache__refresh_stop(c);
    setcache__dispatch_stop(c);
    if (c->wake_fd >= 0) {
        close(c->wake_fd);
        c->wake_fd = -1;
    }
    setcache__pool_destroy(c);
    setcache__cache_destroy(c);
    sc_def *d, *tmp;
    HASH_ITER(hh, c->defs, d, tmp)
    {
        HASH_DEL(c->defs, d);
        free(d->dflt);
        free(d);
    }
    /* In a forked child, condition variables may still count the parent's
     * waiters (threads that do not exist here): destroying them would block. */
    if (getpid() == c->pid) {
        setcache__br_destroy(&c->defs_lock);
        pthread_mutex_destroy(&c->load_mu);
        pthread_cond_destroy(&c->load_cv);
        pthread_mutex_destroy(&c->state_mu);
        pthread_cond_destroy(&c->state_cv);
        pthread_mutex_destroy(&c->subs_mu);
        pthread_cond_destroy(&c->subs_cv);
        pthread_mutex_destroy(&c->dq_mu);
        pthread_cond_destroy(&c->dq_cv);
        pthread_mutex_destroy(&c->rq_mu);
        pthread_cond_destroy(&c->rq_cv);
    }
    setcache__sql_free(&c->sql);
    setcache__maps_free(c);
    free(c->hb_sql_prefix);
    free(c->conninfo);
    free(c->listen_conninfo);
    free(c->schema);
    free(c->channel);
    free(c);
}

int setcache_open(setcache **out, const setcache_options *o)
{
    setcache__hash_seed_once();
    if (!out) {
        return setcache__fail(SETCACHE_ERR_ARG, "out is NULL");
    }
    *out = NULL;
    setcache_options defaults;
    setcache_options_init(&defaults);
    if (!o) {
        o = &defaults;
    }
    const char *schema = o->schema ? o->schema : defaults.schema;
    const char *channel = o->channel ? o->channel : defaults.channel;
    if (!setcache__valid_sql_name(schema)) {
        return setcache__fail(SETCACHE_ERR_ARG, "schema must match [a-z_][a-z0-9_]{0,62}");
    }
    if (!setcache__valid_sql_name(channel)) {
        return setcache__fail(SETCACHE_ERR_ARG, "channel must match [a-z_][a-z0-9_]{0,62}");
    }
    if (o->pool_size < 1 || o->pool_size > 1024) {
        return setcache__fail(SETCACHE_ERR_ARG, "pool_size must be 1..1024, not %d",
                              o->pool_size);
    }
    if (o->acquire_timeout_ms < 0) {
        return setcache__fail(SETCACHE_ERR_ARG, "acquire_timeout_ms must be >= 0");
    }
    if (o->heartbeat_ms < 50 || o->heartbeat_deadline_ms < 50) {
        return setcache__fail(SETCACHE_ERR_ARG, "heartbeat_ms and heartbeat_deadline_ms must be "
                                                "at least 50");
    }
    if (o->reconnect_initial_ms < 1 || o->reconnect_max_ms < o->reconnect_initial_ms) {
        return setcache__fail(SETCACHE_ERR_ARG, "need 1 <= reconnect_initial_ms <= "
                                                "reconnect_max_ms");
    }
    if (o->dispatch_queue_max < 1) {
        return setcache__fail(SETCACHE_ERR_ARG, "dispatch_queue_max must be at least 1");
    }
    if (o->max_value_len > SETCACHE_MAX_VALUE_LEN) {
        return setcache__fail(SETCACHE_ERR_ARG, "max_value_len must be at most %zu",
                              SETCACHE_MAX_VALUE_LEN);
    }

    /* aligned as its lock slots are declared, so that no two share a line */
    void *mem = NULL;
    if (posix_memalign(&mem, SC_LINE, sizeof(setcache)) != 0) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    setcache *c = memset(mem, 0, sizeof(setcache));
    c->pid = getpid();
    c->wake_fd = -1;
    c->conninfo = dup_or_null(o->conninfo);
    c->listen_conninfo = dup_or_null(o->listen_conninfo);
    c->schema = strdup(schema);
    c->channel = strdup(channel);
    c->pool_size = o->pool_size;
    c->acquire_timeout_ms = o->acquire_timeout_ms;
    c->max_entities = o->max_entities;
    c->max_value_len = o->max_value_len ? o->max_value_len : SETCACHE_MAX_VALUE_LEN;
    c->create_schema = o->create_schema;
    c->log = o->log;
    c->log_arg = o->log_arg;
    c->heartbeat_ms = o->heartbeat_ms;
    c->heartbeat_deadline_ms = o->heartbeat_deadline_ms;
    c->reconnect_initial_ms = o->reconnect_initial_ms;
    c->reconnect_max_ms = o->reconnect_max_ms;
    c->dq_max = o->dispatch_queue_max;
    c->on_state = o->on_state;
    c->state_arg = o->state_arg;
    atomic_init(&c->state, SETCACHE_STATE_CONNECTING);
    for (int i = 0; i < SC_NSHARDS; i++) {
        setcache__br_init(&c->shards[i].lock);
    }
    setcache__br_init(&c->defs_lock);
    pthread_mutex_init(&c->load_mu, NULL);
    pthread_mutex_init(&c->state_mu, NULL);
    pthread_mutex_init(&c->subs_mu, NULL);
    pthread_mutex_init(&c->dq_mu, NULL);
    pthread_mutex_init(&c->rq_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->load_cv, &ca);
    pthread_cond_init(&c->state_cv, &ca);
    pthread_cond_init(&c->subs_cv, &ca);
    pthread_cond_init(&c->dq_cv, &ca);
    pthread_cond_init(&c->rq_cv, &ca);
    pthread_condattr_destroy(&ca);

    int rc;
    if ((o->conninfo && *o->conninfo && !c->conninfo) ||
        (o->listen_conninfo && *o->listen_conninfo && !c->listen_conninfo) || !c->schema ||
        !c->channel) {
        rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = setcache__sql_build(&c->sql, c->schema)) != SETCACHE_OK ||
        (rc = setcache__pool_init(c)) != SETCACHE_OK) {
        goto fail;
    }
    open_job oj = {c, o};
    if ((rc = setcache__maps_init(c, o->tables, o->ntables)) != SETCACHE_OK ||
        (rc = setcache__with_pool(c, check_schema_conn, &oj)) != SETCACHE_OK) {
        goto fail;
    }
    if ((rc = setcache__dispatch_start(c)) != SETCACHE_OK ||
        (rc = setcache__refresh_start(c)) != SETCACHE_OK ||
        (rc = setcache__listener_start(c)) != SETCACHE_OK) {
        atomic_store(&c->closing, 1);
        goto fail;
    }
    *out = c;
    return SETCACHE_OK;
fail:
    free_handle(c);
    return rc;
}

void setcache_close(setcache *c)
{
    if (!c) {
        return;
    }
    if (setcache__on_dispatch_thread(c)) {
        /* joining the dispatch thread from itself would deadlock */
        setcache__log(c, SETCACHE_LOG_ERROR, "setcache_close called from a change callback: "
                                             "refused, the handle stays open");
        setcache__fail(SETCACHE_ERR_ARG, "setcache_close may not be called from a change "
                                         "callback; the handle stays open");
        return;
    }
    atomic_store(&c->closing, 1);
    if (getpid() == c->pid) {
        pthread_mutex_lock(&c->load_mu);
        pthread_cond_broadcast(&c->load_cv);
        pthread_mutex_unlock(&c->load_mu);
        pthread_mutex_lock(&c->pool.mu);
        pthread_cond_broadcast(&c->pool.cv);
        pthread_mutex_unlock(&c->pool.mu);
        setcache__listener_stop(c);
    } else {
        /* no library thread exists in a forked child */
        c->refresher_started = false;
        c->dispatcher_started = false;
        /* a forked child: the listener thread does not exist here, and its
         * connection is the parent's */
        if (c->listen_conn) {
            setcache__finish_inherited(c->listen_conn);
        }
    }
    atomic_store(&c->state, SETCACHE_STATE_CLOSED);
    if (c->on_state && getpid() == c->pid) {
        c->on_state(c->state_arg, SETCACHE_STATE_CLOSED, "closed");
    }
    free_handle(c);
}

/* ---- definitions ---- */

typedef struct json_check {
    setcache *c;
    const char *text;
} json_check;

static int check_json_conn(void *arg, PGconn *conn)
{
    json_check *j = arg;
    const char *v[1] = {j->text};
    int rc;
    PGresult *r = setcache__exec(j->c, conn, "SELECT $1::json IS NOT NULL", 1, v, false, &rc);
    if (!r) {
        if (strcmp(setcache__sqlstate(), "22P02") == 0) {
            return setcache__fail(SETCACHE_ERR_TYPE, "default is not valid JSON");
        }
        return rc;
    }
    PQclear(r);
    return SETCACHE_OK;
}

int setcache_define(setcache *c, const char *entity_type, const char *key, setcache_type type,
                    const char *default_value)
{
    if (!c) {
        return setcache__fail(SETCACHE_ERR_ARG, "handle is NULL");
    }
    size_t tlen, ilen, klen;
    int rc = setcache__check_identity(entity_type, NULL, key, &tlen, &ilen, &klen);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    if (!key) {
        return setcache__fail(SETCACHE_ERR_ARG, "key is NULL");
    }
    if ((int)type < SETCACHE_STRING || (int)type > SETCACHE_JSON) {
        return setcache__fail(SETCACHE_ERR_ARG, "unknown type %d", (int)type);
    }
    sc_parsed p;
    memset(&p, 0, sizeof p);
    if (default_value) {
        size_t vlen = strnlen(default_value, c->max_value_len + 1);
        if (vlen > c->max_value_len || !setcache__valid_utf8(default_value, vlen)) {
            return setcache__fail(SETCACHE_ERR_ARG,
                                  "default must be valid UTF-8 of at most %zu bytes",
                                  c->max_value_len);
        }
        setcache__parse_all(default_value, &p);
        if ((type == SETCACHE_INT && !(p.ok & SC_PARSED_INT)) ||
            (type == SETCACHE_DOUBLE && !(p.ok & SC_PARSED_DOUBLE)) ||
            (type == SETCACHE_BOOL && !(p.ok & SC_PARSED_BOOL))) {
            return setcache__fail(SETCACHE_ERR_TYPE, "default '%.64s' is not a valid %s",
                                  default_value, setcache__type_name(type));
        }
        if (type == SETCACHE_JSON) {
            json_check j = {c, default_value};
            if ((rc = setcache__with_pool(c, check_json_conn, &j)) != SETCACHE_OK) {
                return rc;
            }
        }
    }
    size_t dklen = tlen + 1 + klen;
    sc_def *d = calloc(1, sizeof *d + dklen + 1);
    if (!d) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    memcpy(d->dkey, entity_type, tlen);
    memcpy(d->dkey + tlen + 1, key, klen);
    d->dklen = (uint16_t)dklen;
    d->type = type;
    d->p = p;
    if (default_value) {
        d->has_default = true;
        d->dflt = strdup(default_value);
        if (!d->dflt) {
            free(d);
            return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        }
    }
    setcache__br_wrlock(&c->defs_lock);
    sc_def *old;
    HASH_FIND(hh, c->defs, d->dkey, d->dklen, old);
    if (old) {
        HASH_DEL(c->defs, old);
    }
    HASH_ADD_KEYPTR(hh, c->defs, d->dkey, d->dklen, d);
    bool added = d->hh.tbl != NULL;
    if (!added && old) {
        HASH_ADD_KEYPTR(hh, c->defs, old->dkey, old->dklen, old); /* restore */
        old = NULL;
    }
    setcache__br_wrunlock(&c->defs_lock);
    if (old) {
        free(old->dflt);
        free(old);
    }
    if (!added) {
        free(d->dflt);
        free(d);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    return SETCACHE_OK;
}

static sc_def *def_find_locked(setcache *c, const char *type, size_t tlen, const char *key,
                               size_t klen)
{
    char k[SETCACHE_MAX_TYPE_LEN + 1 + SETCACHE_MAX_KEY_LEN + 1];
    memcpy(k, type, tlen);
    k[tlen] = '\0';
    memcpy(k + tlen + 1, key, klen);
    sc_def *d;
    HASH_FIND(hh, c->defs, k, tlen + 1 + klen, d);
    return d;
}

/* Is (type, key) defined? Then *type_out is its type. */
bool setcache__def_type(setcache *c, const char *type, size_t tlen, const char *key, size_t klen,
                        setcache_type *type_out)
{
    setcache__br_rdlock(&c->defs_lock);
    sc_def *d = def_find_locked(c, type, tlen, key, klen);
    if (d) {
        *type_out = d->type;
    }
    setcache__br_rdunlock(&c->defs_lock);
    return d != NULL;
}

/* No stored value: answer from the key's default, or NOT_FOUND. */
int setcache__read_default(setcache *c, sc_ident *id, sc_read *r)
{
    int rc = setcache__ident_validate(id);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    setcache__br_rdlock(&c->defs_lock);
    sc_def *d = def_find_locked(c, id->type, id->tlen, id->key, id->klen);
    if (d && d->has_default) {
        rc = setcache__fill_from_value(d->dflt, strlen(d->dflt), &d->p, r);
    } else {
        rc = setcache__fail(SETCACHE_NOT_FOUND, "no stored value and no default");
    }
    setcache__br_rdunlock(&c->defs_lock);
    return rc;
}

/* ---- reads ---- */

static int read_key(setcache *c, const char *type, const char *eid, const char *key, sc_read *r)
{
    sc_ident id;
    int rc = setcache__ident_key(c, &id, type, eid, key);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    return setcache__read(c, &id, r);
}

int setcache_get_string(setcache *c, const char *entity_type, const char *entity_id,
                        const char *key, char *buf, size_t cap, size_t *len)
{
    sc_read r = {.want = SC_WANT_STRING, .buf = buf, .cap = cap};
    int rc = read_key(c, entity_type, entity_id, key, &r);
    if (len && (rc == SETCACHE_OK || rc == SETCACHE_ERR_SPACE)) {
        *len = r.len;
    }
    return rc;
}

char *setcache_dup_string(setcache *c, const char *entity_type, const char *entity_id,
                          const char *key, int *rc)
{
    sc_read r = {.want = SC_WANT_DUP};
    int x = read_key(c, entity_type, entity_id, key, &r);
    if (rc) {
        *rc = x;
    }
    return x == SETCACHE_OK ? r.dup : NULL;
}

int setcache_get_int(setcache *c, const char *entity_type, const char *entity_id,
                     const char *key, int64_t *out)
{
    if (!out) {
        return setcache__fail(SETCACHE_ERR_ARG, "out is NULL");
    }
    sc_read r = {.want = SC_WANT_INT};
    int rc = read_key(c, entity_type, entity_id, key, &r);
    if (rc == SETCACHE_OK) {
        *out = r.i;
    }
    return rc;
}

int setcache_get_double(setcache *c, const char *entity_type, const char *entity_id,
                        const char *key, double *out)
{
    if (!out) {
        return setcache__fail(SETCACHE_ERR_ARG, "out is NULL");
    }
    sc_read r = {.want = SC_WANT_DOUBLE};
    int rc = read_key(c, entity_type, entity_id, key, &r);
    if (rc == SETCACHE_OK) {
        *out = r.d;
    }
    return rc;
}

int setcache_get_bool(setcache *c, const char *entity_type, const char *entity_id,
                      const char *key, bool *out)
{
    if (!out) {
        return setcache__fail(SETCACHE_ERR_ARG, "out is NULL");
    }
    sc_read r = {.want = SC_WANT_BOOL};
    int rc = read_key(c, entity_type, entity_id, key, &r);
    if (rc == SETCACHE_OK) {
        *out = r.b;
    }
    return rc;
}

/* ---- foreach ---- */

static int cmp_pair(const void *a, const void *b)
{
    return strcmp(((const sc_pair *)a)->key, ((const sc_pair *)b)->key);
}

int setcache_foreach(setcache *c, const char *entity_type, const char *entity_id,
                     int (*fn)(void *arg, const char *key, const char *value, bool is_default),
                     void *arg)
{
    if (!c || !fn) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is NULL", c ? "fn" : "handle");
    }
    sc_ident id;
    int rc = setcache__ident(&id, entity_type, entity_id, NULL);
    if (rc == SETCACHE_OK) {
        rc = setcache__ident_validate(&id);
    }
    if (rc != SETCACHE_OK) {
        return rc;
    }
    sc_pair *pairs = NULL;
    size_t n = 0, cap = 0;
    /* Stored values: read every key through a snapshot of the entity. */
    rc = setcache__snapshot_entity(c, &id, &pairs, &n);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    cap = n;
    /* Defaults of defined keys with no stored value. */
    setcache__br_rdlock(&c->defs_lock);
    sc_def *d, *tmp;
    HASH_ITER(hh, c->defs, d, tmp)
    {
        if (!d->has_default || strcmp(d->dkey, entity_type) != 0) {
            continue;
        }
        const char *dk = d->dkey + strlen(d->dkey) + 1;
        bool stored = false;
        for (size_t i = 0; i < n && !stored; i++) {
            stored = !pairs[i].is_default && strcmp(pairs[i].key, dk) == 0;
        }
        if (stored) {
            continue;
        }
        if (n == cap && !setcache__grow(&pairs, &cap, 16, sizeof *pairs)) {
            rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
            break;
        }
        pairs[n].key = strdup(dk);
        pairs[n].value = strdup(d->dflt);
        pairs[n].is_default = true;
        n++;
        if (!pairs[n - 1].key || !pairs[n - 1].value) {
            rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
            break;
        }
    }
    setcache__br_rdunlock(&c->defs_lock);
    if (rc == SETCACHE_OK) {
        qsort(pairs, n, sizeof *pairs, cmp_pair);
        for (size_t i = 0; i < n; i++) {
            int stop = fn(arg, pairs[i].key, pairs[i].value, pairs[i].is_default);
            if (stop) {
                rc = stop;
                break;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(pairs[i].key);
        free(pairs[i].value);
    }
    free(pairs);
    return rc;
}

/* ---- stats ---- */

void setcache_get_stats(setcache *c, setcache_stats *out)
{
    if (!c || !out) {
        return;
    }
    memset(out, 0, sizeof *out);
    /* hits are counted in the read slots: setcache__cache_stats adds them */
    out->misses = setcache__counter(c, SC_ST_MISSES);
    out->loads = setcache__counter(c, SC_ST_LOADS);
    out->db_queries = setcache__counter(c, SC_ST_QUERIES);
    out->writes = setcache__counter(c, SC_ST_WRITES);
    out->notifications = setcache__counter(c, SC_ST_NOTIFICATIONS);
    out->invalidations = setcache__counter(c, SC_ST_INVALIDATIONS);
    out->resyncs = setcache__counter(c, SC_ST_RESYNCS);
    out->reconnects = setcache__counter(c, SC_ST_RECONNECTS);
    out->evictions = setcache__counter(c, SC_ST_EVICTIONS);
    out->pool_waits = setcache__counter(c, SC_ST_POOL_WAITS);
    out->pool_timeouts = setcache__counter(c, SC_ST_POOL_TIMEOUTS);
    pthread_mutex_lock(&c->pool.mu);
    out->pool_size = (uint32_t)c->pool.size;
    out->pool_in_use = (uint32_t)c->pool.in_use;
    pthread_mutex_unlock(&c->pool.mu);
    setcache__cache_stats(c, out);
    out->state = (setcache_state)atomic_load(&c->state);
    out->malformed = setcache__counter(c, SC_ST_MALFORMED);
    out->refreshes = setcache__counter(c, SC_ST_REFRESHES);
    out->events = setcache__counter(c, SC_ST_EVENTS);
    out->heartbeats = setcache__counter(c, SC_ST_HEARTBEATS);
    out->hints = setcache__counter(c, SC_ST_HINTS);
}
