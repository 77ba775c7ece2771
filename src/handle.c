/*
 * handle.c - the handle: options, open and close (each module's state set
 * up and torn down in order), subscribe, statistics, setcache_with_conn.
 *
 * Owns: struct setcache itself (its allocation and the immutable options).
 * Takes the pool's lock only to read its counters for statistics.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
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
    o->io_timeout_ms = 10000;
    o->statement_timeout_ms = 30000;
    o->shared_definitions = true;
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

/* How far open got; unwind(c, stage) undoes that stage and every earlier
 * one, in reverse order. */
enum { ST_ALLOCATED, ST_MODULES, ST_SQL, ST_POOL, ST_MAPS, ST_THREADS };

static void unwind(setcache *c, int stage)
{
    /* In a forked child, the parent's threads don't exist here, and locks
     * and condition variables may count the parent's waiters. */
    bool own = getpid() == c->pid;
    switch (stage) {
    case ST_THREADS:
        setcache__refresh_stop(c);
        setcache__dispatch_stop(c);
        /* fall through */
    case ST_MAPS:
        setcache__maps_free(c);
        /* fall through */
    case ST_POOL:
        setcache__pool_destroy(c);
        /* fall through */
    case ST_SQL:
        setcache__sql_free(&c->sql);
        /* fall through */
    case ST_MODULES:
        setcache__refresh_destroy(c, own);
        setcache__dispatch_destroy(c, own);
        setcache__listen_destroy(c, own);
        setcache__defs_destroy(c, own);
        setcache__fence_destroy(c, own);
        setcache__cache_destroy(c, own); /* detaches every ref's cell */
        setcache__refs_destroy(c, own);
        setcache__snaps_destroy(c, own);
        setcache__stats_destroy(c, own);
        if (c->wake_fd >= 0) {
            close(c->wake_fd);
        }
        /* fall through */
    case ST_ALLOCATED:
    default:
        free(c->conninfo);
        free(c->listen_conninfo);
        free(c->write_conninfo);
        free(c->schema);
        free(c->channel);
        free(c);
    }
}

/* The handle's immutable copy of the options (strings are duplicated; a
 * failed copy is a NULL the caller checks). */
static void copy_options(setcache *c, const setcache_options *o, const char *schema,
                         const char *channel)
{
    c->pid = getpid();
    c->wake_fd = -1;
    c->conninfo = dup_or_null(o->conninfo);
    c->listen_conninfo = dup_or_null(o->listen_conninfo);
    c->write_conninfo = dup_or_null(o->write_conninfo);
    /* writes go elsewhere only when write_conninfo names another server */
    c->split_writes = c->write_conninfo && *c->write_conninfo &&
                      (!c->conninfo || strcmp(c->write_conninfo, c->conninfo) != 0);
    c->schema = strdup(schema);
    c->channel = strdup(channel);
    c->pool_size = o->pool_size;
    c->acquire_timeout_ms = o->acquire_timeout_ms;
    c->io_timeout_ms = o->io_timeout_ms;
    c->statement_timeout_ms = o->statement_timeout_ms;
    c->max_entities = o->max_entities;
    c->max_value_len = o->max_value_len ? o->max_value_len : SETCACHE_MAX_VALUE_LEN;
    c->create_schema = o->create_schema;
    c->shared_definitions = o->shared_definitions;
    c->prepared_statements = o->prepared_statements;
    c->log = o->log;
    c->log_arg = o->log_arg;
    c->heartbeat_ms = o->heartbeat_ms;
    c->heartbeat_deadline_ms = o->heartbeat_deadline_ms;
    c->reconnect_initial_ms = o->reconnect_initial_ms;
    c->reconnect_max_ms = o->reconnect_max_ms;
    c->dq_max = o->dispatch_queue_max;
    c->on_state = o->on_state;
    c->state_arg = o->state_arg;
}

/* Every option in range (schema and channel after defaulting). */
static int check_options(const setcache_options *o, const char *schema, const char *channel)
{
    if (!setcache__valid_sql_name(schema)) {
        return setcache__fail(SETCACHE_ERR_ARG, "schema must match [a-z_][a-z0-9_]{0,62}");
    }
    if (!setcache__valid_sql_name(channel)) {
        return setcache__fail(SETCACHE_ERR_ARG, "channel must match [a-z_][a-z0-9_]{0,62}");
    }
    if (o->pool_size < 1 || o->pool_size > 1024) {
        return setcache__fail(SETCACHE_ERR_ARG, "pool_size must be 1..1024, not %d", o->pool_size);
    }
    if (o->acquire_timeout_ms < 0) {
        return setcache__fail(SETCACHE_ERR_ARG, "acquire_timeout_ms must be >= 0");
    }
    if (o->io_timeout_ms < 0) {
        return setcache__fail(SETCACHE_ERR_ARG, "io_timeout_ms must be >= 0 (0: no deadline)");
    }
    if (o->statement_timeout_ms < 0) {
        return setcache__fail(SETCACHE_ERR_ARG,
                              "statement_timeout_ms must be >= 0 (0: the server's setting)");
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
    return SETCACHE_OK;
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
    int rc = check_options(o, schema, channel);
    if (rc != SETCACHE_OK) {
        return rc;
    }

    /* aligned as its lock slots are declared, so that no two share a line */
    void *mem = NULL;
    if (posix_memalign(&mem, SC_LINE, sizeof(setcache)) != 0) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    setcache *c = memset(mem, 0, sizeof(setcache));
    copy_options(c, o, schema, channel);
    if ((o->conninfo && *o->conninfo && !c->conninfo) ||
        (o->listen_conninfo && *o->listen_conninfo && !c->listen_conninfo) ||
        (o->write_conninfo && *o->write_conninfo && !c->write_conninfo) || !c->schema ||
        !c->channel) {
        unwind(c, ST_ALLOCATED);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    setcache__stats_init(c);
    setcache__cache_init(c);
    setcache__refs_init(c);
    setcache__snaps_init(c);
    setcache__defs_init(c);
    setcache__fence_init(c);
    setcache__listen_init(c);
    setcache__dispatch_init(c);
    setcache__refresh_init(c);
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd < 0) {
        rc = setcache__fail(SETCACHE_ERR_NOMEM, "eventfd: %s", strerror(errno));
        goto fail_modules;
    }
    if ((rc = setcache__sql_build(&c->sql, c->schema)) != SETCACHE_OK) {
        goto fail_modules;
    }
    if ((rc = setcache__pool_init(c)) != SETCACHE_OK) {
        goto fail_sql;
    }
    open_job oj = {c, o};
    if ((rc = setcache__maps_init(c, o->tables, o->ntables)) != SETCACHE_OK ||
        (rc = setcache__with_pool(c, check_schema_conn, &oj)) != SETCACHE_OK) {
        goto fail_maps;
    }
    if ((rc = setcache__defs_load_shared(c)) != SETCACHE_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", setcache_errmsg());
        setcache__fail(rc,
                       "reading the shared definitions (%s.definitions): %s; grant SELECT on "
                       "it, or open with shared_definitions = false",
                       c->schema, why);
        goto fail_maps;
    }
    if ((rc = setcache__dispatch_start(c)) != SETCACHE_OK ||
        (rc = setcache__refresh_start(c)) != SETCACHE_OK ||
        (rc = setcache__listener_start(c)) != SETCACHE_OK) {
        atomic_store(&c->closing, 1);
        unwind(c, ST_THREADS);
        return rc;
    }
    *out = c;
    return SETCACHE_OK;
fail_maps:
    unwind(c, ST_MAPS);
    return rc;
fail_sql:
    unwind(c, ST_SQL);
    return rc;
fail_modules:
    unwind(c, ST_MODULES);
    return rc;
}

void setcache_close(setcache *c)
{
    if (!c) {
        return;
    }
    if (setcache__on_dispatch_thread(c)) {
        /* joining the dispatch thread from itself would deadlock */
        setcache__log(c, SETCACHE_LOG_ERROR,
                      "setcache_close called from a change callback: "
                      "refused, the handle stays open");
        setcache__fail(SETCACHE_ERR_ARG, "setcache_close may not be called from a change "
                                         "callback; the handle stays open");
        return;
    }
    atomic_store(&c->closing, 1);
    bool own = getpid() == c->pid;
    if (own) {
        setcache__cache_wake(c);
        setcache__pool_wake(c);
        setcache__listener_stop(c);
    } else {
        setcache__listen_forget(c); /* a forked child: no library thread exists here */
    }
    if (c->on_state && own) {
        c->on_state(c->state_arg, SETCACHE_STATE_CLOSED, "closed");
    }
    unwind(c, ST_THREADS);
}

/* ---- subscriptions ---- */

int setcache_subscribe(setcache *c, const char *entity_type, const char *entity_id, const char *key,
                       setcache_change_fn fn, void *arg, uint64_t *id)
{
    if (c && entity_type && entity_id && c->nmaps) {
        /* a mapped type's changes carry the server's spelling of the id */
        sc_tmap *map = setcache__map_of(c, entity_type, strlen(entity_type));
        int rc = map ? setcache__map_check_id(map, entity_id) : SETCACHE_OK;
        if (rc != SETCACHE_OK) {
            return rc;
        }
    }
    return setcache__subscribe(c, entity_type, entity_id, key, fn, arg, id);
}

/* ---- stats ---- */

void setcache_get_stats(setcache *c, setcache_stats *out)
{
    if (!c || !out) {
        return;
    }
    memset(out, 0, sizeof *out);
    /* hits are counted in the read slots (setcache__cache_stats adds them)
     * and, for lock-free reads, in per-thread counters */
    out->hits = setcache__fast_hits(c);
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
    setcache__pool_stats(c, &out->pool_size, &out->pool_in_use);
    setcache__cache_stats(c, out);
    out->state = (setcache_state)setcache__listen_state(c);
    out->malformed = setcache__counter(c, SC_ST_MALFORMED);
    out->refreshes = setcache__counter(c, SC_ST_REFRESHES);
    out->events = setcache__counter(c, SC_ST_EVENTS);
    out->heartbeats = setcache__counter(c, SC_ST_HEARTBEATS);
    out->hints = setcache__counter(c, SC_ST_HINTS);
    out->definition_conflicts = setcache__counter(c, SC_ST_DEF_CONFLICTS);
    out->invalid_writes = setcache__counter(c, SC_ST_INVALID);
}
