/*
 * load.c - loading entities from the table: one query per entity, shared by
 * every concurrent reader (single-flight), and preload of a whole type in one
 * streamed query.
 *
 * Owns: no state of its own. Borrows pooled connections through
 * setcache__with_pool only; waits for a load in flight and takes shard
 * locks only through cache.c.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef SETCACHE_TEST_HOOKS
sc_hooks setcache__hooks;
#endif

/* Add one row to a detached table of entries. */
static int add_row(sc_etable *rows, const char *key, const char *value, const char *version)
{
    int64_t v = 0;
    if (!setcache__parse_int(version, &v)) {
        return setcache__fail(SETCACHE_ERR_DB, "bad version '%s' in table", version);
    }
    return setcache__rows_add(rows, key, value, strlen(value), v);
}

typedef struct load_job {
    setcache *c;
    sc_ident *id;
    sc_etable entries;
} load_job;

static int load_query(void *arg, PGconn *conn)
{
    load_job *j = arg;
    setcache *c = j->c;
    const char *vals[2] = {j->id->type, j->id->id};
    int rc;
    /* writes here the source may not show yet: its history first (fence.c) */
    PGresult *hist = NULL;
    const sc_ident *one = j->id;
    if (c->split_writes && setcache__fence_has(c, j->id) &&
        (rc = setcache__fence_history(c, conn, &one, 1, &hist)) != SETCACHE_OK) {
        return rc;
    }
    PGresult *r = setcache__exec_prepared(
        c, conn, setcache__sql_for(c, j->id->type, j->id->tlen)->load, 2, vals, false, &rc);
    if (!r) {
        PQclear(hist);
        return rc;
    }
    setcache__count(c, SC_ST_LOADS, 1);
    int n = PQntuples(r);
    if (n > 0) {
        rc = setcache__et_reserve(&j->entries, (size_t)n);
    }
    for (int i = 0; i < n && rc == SETCACHE_OK; i++) {
        rc = add_row(&j->entries, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    }
    if (rc == SETCACHE_OK && hist) {
        rc = setcache__fence_tombs(hist, j->id, &j->entries);
    }
    PQclear(hist);
    PQclear(r);
    if (rc != SETCACHE_OK) {
        setcache__et_free(&j->entries);
    }
    return rc;
}

/*
 * Make the entity loaded, or leave with the rows of a query in *answer when
 * the entity changed under every one of three loads (the caller answers from
 * them: a committed snapshot taken after the read began). Waits for a load
 * another thread has in flight instead of sending a second query.
 */
int setcache__ensure_loaded(setcache *c, sc_ident *id, sc_etable *answer)
{
    int rc = setcache__ident_validate(id);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    sc_tmap *map = c->nmaps ? setcache__map_of(c, id->type, id->tlen) : NULL;
    if (map && (rc = setcache__map_check_id(map, id->id)) != SETCACHE_OK) {
        return rc;
    }
    for (int own = 0;;) {
        if (atomic_load(&c->closing)) {
            return setcache__fail(SETCACHE_ERR_CLOSED, "handle is closing");
        }
        uint64_t stamp = 0, epoch = 0;
        int st = setcache__begin_load(c, id, &stamp, &epoch);
        if (st < 0) {
            return st;
        }
        if (st == SC_BEGIN_LOADED) {
            return SETCACHE_OK;
        }
        if (st == SC_BEGIN_WAIT) {
            setcache__wait_load(c, epoch);
            continue;
        }
        load_job j = {c, id, {0}};
        rc = setcache__with_pool_read(c, load_query, &j);
        if (rc == SETCACHE_OK) {
            SC_HOOK(after_load_query, c, id->type, id->id);
        }
        bool installed = false;
        setcache__finish_load(c, id, rc == SETCACHE_OK ? &j.entries : NULL, stamp, &installed);
        if (rc != SETCACHE_OK) {
            return rc;
        }
        if (installed) {
            return SETCACHE_OK;
        }
        if (++own >= SC_LOAD_ROUNDS && answer) {
            setcache__et_take(answer, &j.entries);
            return SETCACHE_OK;
        }
        setcache__et_free(&j.entries);
        if (own >= SC_LOAD_ROUNDS) {
            return SETCACHE_OK; /* warmed as far as possible; reads will load */
        }
    }
}

int setcache__load_for_read(setcache *c, sc_ident *id, sc_read *r, bool *answered)
{
    sc_etable rows = {0};
    int rc = setcache__ensure_loaded(c, id, &rows);
    if (rc != SETCACHE_OK || !rows.slot) {
        return rc;
    }
    *answered = true;
    /* the rows of a source that may lag keep this process's newer writes
     * here too; they may hold tombstones (deleted keys) */
    if (!setcache__fence_merge(c, id, &rows)) {
        setcache__et_free(&rows);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    const sc_entry *en = setcache__et_find(&rows, id->key, id->klen, id->khash);
    if (en && !SC_TOMB(en)) {
        rc = setcache__fill_entry(en, r);
    } else {
        rc = setcache__read_default(c, id, r);
    }
    setcache__et_free(&rows);
    return rc;
}

/*
 * Answer a read: from the cache when the entity is loaded, else after
 * loading it once (concurrent readers share the load), else from the rows
 * of a load that could not be installed; a key with no stored value answers
 * from its default.
 */
int setcache__read_id(setcache *c, sc_ident *id, sc_read *r)
{
    bool missed = false;
    for (int round = 0; round < SC_READ_ROUNDS; round++) {
        int rc = SETCACHE_OK;
        int found = setcache__lookup(c, id, r, !missed, &rc);
        if (found == SC_LOOKUP_ANSWERED) {
            return rc;
        }
        if (found == SC_LOOKUP_NO_VALUE) {
            return setcache__read_default(c, id, r);
        }
        if (atomic_load_explicit(&c->closing, memory_order_relaxed)) {
            return setcache__fail(SETCACHE_ERR_CLOSED, "handle is closing");
        }
        if (!missed) {
            missed = true;
            setcache__count(c, SC_ST_MISSES, 1);
        }
        bool answered = false;
        rc = setcache__load_for_read(c, id, r, &answered);
        if (rc != SETCACHE_OK || answered) {
            return rc;
        }
    }
    return setcache__fail(SETCACHE_ERR_DB, "entity %s/%s changed too often to be loaded; try again",
                          id->type, id->id);
}

int setcache_load(setcache *c, const char *entity_type, const char *entity_id)
{
    if (!c) {
        return setcache__fail(SETCACHE_ERR_ARG, "handle is NULL");
    }
    sc_ident id;
    int rc = setcache__ident(&id, entity_type, entity_id, NULL);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    return setcache__ensure_loaded(c, &id, NULL);
}

/* ---- preload ---- */

typedef struct preload_job {
    setcache *c;
    const char *type;
    uint64_t since;
    char cur[SETCACHE_MAX_ID_LEN + 1];
    bool have;
    sc_etable entries;
} preload_job;

static int flush_group(preload_job *j)
{
    if (!j->have) {
        return SETCACHE_OK;
    }
    sc_ident id;
    int rc = setcache__ident(&id, j->type, j->cur, NULL);
    if (rc == SETCACHE_OK) {
        rc = setcache__install_preloaded(j->c, &id, &j->entries, j->since);
        if (rc > 0) {
            rc = SETCACHE_OK;
        }
    }
    setcache__et_free(&j->entries);
    j->have = false;
    return rc;
}

static int preload_query(void *arg, PGconn *conn)
{
    preload_job *j = arg;
    setcache *c = j->c;
    const char *vals[1] = {j->type};
    setcache__count(c, SC_ST_QUERIES, 1);
    /* statement_timeout_ms rides in the same round trip (pool.c) */
    bool piped;
    if (!setcache__send_limited(c, conn, setcache__sql_for(c, j->type, strlen(j->type))->load_type,
                                1, vals, &piped)) {
        return setcache__fail_pg(SETCACHE_ERR_DB, "preload", conn, NULL);
    }
    int rc = piped ? setcache__limit_taken(c, conn) : SETCACHE_OK;
    PQsetSingleRowMode(conn);
    PGresult *r;
    while ((r = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE && rc == SETCACHE_OK) {
            const char *eid = PQgetvalue(r, 0, 0);
            if (j->have && strcmp(eid, j->cur) != 0) {
                rc = flush_group(j);
            }
            if (rc == SETCACHE_OK && !j->have) {
                size_t n = strlen(eid);
                if (n > SETCACHE_MAX_ID_LEN) {
                    n = SETCACHE_MAX_ID_LEN; /* impossible under the CHECK constraint */
                }
                memcpy(j->cur, eid, n);
                j->cur[n] = '\0';
                j->have = true;
            }
            if (rc == SETCACHE_OK) {
                rc = add_row(&j->entries, PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
                             PQgetvalue(r, 0, 3));
            }
        } else if (st == PGRES_TUPLES_OK) {
            if (rc == SETCACHE_OK) {
                rc = flush_group(j);
            }
        } else if (st != PGRES_SINGLE_TUPLE && rc == SETCACHE_OK) {
            rc = setcache__cancelled_by_limit(r)
                     ? setcache__fail(SETCACHE_ERR_TIMEOUT,
                                      "preload: the server cancelled the statement after "
                                      "statement_timeout_ms (%d ms)",
                                      c->statement_timeout_ms)
                     : setcache__fail_pg(SETCACHE_ERR_DB, "preload", conn, r);
        }
        PQclear(r);
    }
    setcache__et_free(&j->entries);
    if (piped && !setcache__pipeline_end(c, conn) && rc == SETCACHE_OK) {
        rc = setcache__fail_pg(SETCACHE_ERR_DB, "preload", conn, NULL);
    }
    if (rc == SETCACHE_OK) {
        setcache__count(c, SC_ST_LOADS, 1);
    }
    return rc;
}

int setcache_preload(setcache *c, const char *entity_type)
{
    if (!c) {
        return setcache__fail(SETCACHE_ERR_ARG, "handle is NULL");
    }
    size_t t, i, k;
    int rc = setcache__check_identity(entity_type, NULL, NULL, &t, &i, &k);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    if (atomic_load(&c->closing)) {
        return setcache__fail(SETCACHE_ERR_CLOSED, "handle is closing");
    }
    preload_job j;
    memset(&j, 0, sizeof j);
    j.c = c;
    j.type = entity_type;
    j.since = setcache__preload_begin(c);
    rc = setcache__with_pool_read(c, preload_query, &j);
    setcache__preload_end(c);
    return rc;
}
