/*
 * refresh.c - the refresher thread: turns the listener's hints into fresh
 * cache contents and change events, so that the listener itself never waits
 * on the database.
 *
 * Owns: the hint queue (c->rq_*, under rq_mu, bounded: on overflow the next
 * round reconciles everything) and the refresher thread. Borrows pooled
 * connections through setcache__with_pool_read only. Takes rq_mu alone;
 * shard locks and subs_mu only through cache.c and dispatch.c.
 *
 * A round takes every queued hint, groups them by entity and:
 *  - skips what the cache already reflects (by version), notes hints for
 *    entities being loaded, and remembers the rest for preload;
 *  - re-reads loaded entities that changed, and loads uncached ones someone
 *    subscribed to, in batched queries of up to SC_BATCH entities - a burst
 *    of 10,000 changed rows costs a handful of queries, not one per row;
 *  - swaps the new rows in by version while readers keep reading the old
 *    ones (refresh-ahead: no reader takes a miss because something changed);
 *  - tells subscribers what changed.
 * After a listener (re)connect, a TRUNCATE, or a queue overflow, a round
 * first announces a RESYNC and reconciles every cached entity the same way
 * (compare whole entities with the table: the version sequence is not commit
 * order, so a high-water mark alone could miss a change).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SC_BATCH 1000
#define SC_RQ_MAX 100000
#define SC_MAX_TRIES 5

typedef struct sc_hint {
    struct sc_hint *next;
    int64_t version;
    int be_pid;
    int tries;
    char op;
    char *type, *id, *key;
    char data[];
} sc_hint;

/* ---- the queue (listener side: never blocks on the database) ---- */

static void append_locked(setcache *c, sc_hint *h)
{
    if (c->refresh.tail) {
        c->refresh.tail->next = h;
    } else {
        c->refresh.head = h;
    }
    c->refresh.tail = h;
    c->refresh.len++;
}

void setcache__hint(setcache *c, char op, int64_t version, int be_pid, const sc_ident *id)
{
    size_t n = id->tlen + id->ilen + id->klen + 3;
    sc_hint *h = malloc(sizeof *h + n);
    pthread_mutex_lock(&c->refresh.mu);
    if (!h || c->refresh.len >= SC_RQ_MAX) {
        c->refresh.overflow = true; /* the next round reconciles everything */
        free(h);
    } else {
        h->next = NULL;
        h->version = version;
        h->be_pid = be_pid;
        h->tries = 0;
        h->op = op;
        h->type = h->data;
        memcpy(h->type, id->type, id->tlen + 1);
        h->id = h->type + id->tlen + 1;
        memcpy(h->id, id->id, id->ilen + 1);
        h->key = h->id + id->ilen + 1;
        memcpy(h->key, id->key, id->klen + 1);
        append_locked(c, h);
    }
    pthread_cond_signal(&c->refresh.cv);
    pthread_mutex_unlock(&c->refresh.mu);
}

static void requeue(setcache *c, sc_hint *h)
{
    h->next = NULL;
    pthread_mutex_lock(&c->refresh.mu);
    append_locked(c, h);
    pthread_mutex_unlock(&c->refresh.mu);
}

/* gen > 0: a listener (re)connect; 0: a TRUNCATE. */
void setcache__request_resync(setcache *c, uint64_t gen)
{
    pthread_mutex_lock(&c->refresh.mu);
    if (gen) {
        c->refresh.resync_gen = gen;
    } else {
        c->refresh.truncate = true;
    }
    pthread_cond_signal(&c->refresh.cv);
    pthread_mutex_unlock(&c->refresh.mu);
}

/* A shared definition changed: the refresher reads them again. */
void setcache__request_defs_reload(setcache *c)
{
    pthread_mutex_lock(&c->refresh.mu);
    c->refresh.defs_changed = true;
    pthread_cond_signal(&c->refresh.cv);
    pthread_mutex_unlock(&c->refresh.mu);
}

/* ---- batched reads ---- */

typedef struct group {
    UT_hash_handle hh; /* in a round's groups; key: id.ekey */
    UT_hash_handle hb; /* in one batch's routing table; same key */
    sc_ident id;
    sc_hint **hints;
    size_t n, cap;
    bool subscribed;
    int act;
    uint64_t stamp;
    sc_etable rows;
} group;

typedef struct batch_job {
    setcache *c;
    group **g;
    size_t n;
    group *byname; /* hash of the same groups, for routing rows */
} batch_job;

static int read_batch(void *arg, PGconn *conn)
{
    batch_job *b = arg;
    setcache *c = b->c;
    /* One entity (a change's usual round) is read with the load's own
     * statement, whose plan costs the server a fraction of the list join's
     * (that planning was most of a fleet's server CPU per change); its rows
     * lack the entity's columns. */
    bool one = b->n == 1;
    const char **types = NULL, **ids = NULL;
    /* with write_conninfo: the entities, for the fence's history query */
    const sc_ident **ids_of = c->split_writes ? malloc(b->n * sizeof *ids_of) : NULL;
    char *at = NULL, *ai = NULL;
    int rc = SETCACHE_OK;
    PGresult *r = NULL, *hist = NULL;
    if (c->split_writes && !ids_of) {
        rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!one) {
        types = malloc(b->n * sizeof *types);
        ids = malloc(b->n * sizeof *ids);
        for (size_t j = 0; types && ids && j < b->n; j++) {
            types[j] = b->g[j]->id.type;
            ids[j] = b->g[j]->id.id;
        }
        at = types && ids ? setcache__text_array(types, b->n) : NULL;
        ai = types && ids ? setcache__text_array(ids, b->n) : NULL;
        if (!at || !ai) {
            rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    if (c->split_writes) {
        /* writes here the source may not show yet: its history first */
        for (size_t j = 0; j < b->n; j++) {
            ids_of[j] = &b->g[j]->id;
        }
        if ((rc = setcache__fence_history(c, conn, ids_of, b->n, &hist)) != SETCACHE_OK) {
            goto out;
        }
    }
    const sc_sql *q = setcache__sql_for(c, b->g[0]->id.type, b->g[0]->id.tlen);
    const char *vals[2] = {one ? b->g[0]->id.type : at, one ? b->g[0]->id.id : ai};
    r = one ? setcache__exec_prepared(c, conn, q->load, 2, vals, false, &rc)
            : setcache__exec(c, conn, q->load_many, 2, vals, false, &rc);
    if (!r) {
        goto out;
    }
    int rows = PQntuples(r), col = one ? 0 : 2; /* where key, value and version start */
    for (int i = 0; i < rows && rc == SETCACHE_OK; i++) {
        group *g = b->g[0];
        if (!one) {
            sc_ident id;
            if (setcache__ident(&id, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), NULL) !=
                SETCACHE_OK) {
                continue;
            }
            HASH_FIND(hb, b->byname, id.ekey, id.ekeylen, g);
            if (!g) {
                continue;
            }
        }
        const char *key = PQgetvalue(r, i, col);
        int64_t v;
        if (!setcache__parse_int(PQgetvalue(r, i, col + 2), &v)) {
            continue;
        }
        rc = setcache__rows_add(&g->rows, key, PQgetvalue(r, i, col + 1),
                                (size_t)PQgetlength(r, i, col + 1), v);
    }
    for (size_t j = 0; hist && rc == SETCACHE_OK && j < b->n; j++) {
        rc = setcache__fence_tombs(hist, &b->g[j]->id, &b->g[j]->rows);
    }
out:
    PQclear(hist);
    free(ids_of);
    PQclear(r);
    free(at);
    free(ai);
    free(types);
    free(ids);
    return rc;
}

static int cmp_group_type(const void *a, const void *b)
{
    const group *x = *(const group *const *)a, *y = *(const group *const *)b;
    return strcmp(x->id.type, y->id.type);
}

/* Read the rows of up to SC_BATCH groups per query, one entity type (so
 * one table) per query. */
static int read_groups(setcache *c, group **g, size_t n)
{
    if (c->nmaps && n > 1) {
        qsort(g, n, sizeof *g, cmp_group_type);
    }
    for (size_t off = 0; off < n;) {
        size_t m = n - off < SC_BATCH ? n - off : SC_BATCH;
        for (size_t j = 1; c->nmaps && j < m; j++) {
            if (strcmp(g[off + j]->id.type, g[off]->id.type) != 0) {
                m = j;
                break;
            }
        }
        batch_job b = {c, g + off, m, NULL};
        int rc = SETCACHE_OK;
        for (size_t j = 0; j < m; j++) {
            group *x = g[off + j];
            HASH_ADD_KEYPTR(hb, b.byname, x->id.ekey, x->id.ekeylen, x);
            if (!x->hb.tbl) {
                rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
            }
        }
        if (rc == SETCACHE_OK) {
            rc = setcache__with_pool_read(c, read_batch, &b);
        }
        HASH_CLEAR(hb, b.byname);
        if (rc != SETCACHE_OK) {
            return rc;
        }
        off += m;
    }
    return SETCACHE_OK;
}

static void emit_changes(setcache *c, sc_ident *id, sc_change *ch, size_t n, bool incomplete)
{
    for (size_t j = 0; j < n; j++) {
        if (ch[j].key) {
            setcache__emit(c, ch[j].kind, id->type, id->id, ch[j].key, ch[j].value, ch[j].old,
                           ch[j].version, false);
        }
    }
    if (incomplete) {
        setcache__emit_resync(c);
    }
}

/* ---- reconcile ---- */

/* Compare every cached entity with the table and install the differences.
 * Readers keep the last-known values meanwhile. */
static void reconcile_all(setcache *c)
{
    char **ekeys = NULL;
    size_t n = 0;
    setcache__fence(c);
    if (setcache__loaded_entities(c, &ekeys, &n) != SETCACHE_OK) {
        setcache__invalidate_all(c);
    }
    size_t nkeys = n;
    group *gs = calloc(n ? n : 1, sizeof *gs);
    group **gp = calloc(n ? n : 1, sizeof *gp);
    size_t m = 0;
    if (!gs || !gp) {
        setcache__invalidate_all(c);
        n = 0;
    }
    for (size_t j = 0; j < n; j++) {
        const char *t = ekeys[j];
        const char *i = t + strlen(t) + 1;
        group *g = &gs[m];
        if (setcache__ident(&g->id, t, i, NULL) == SETCACHE_OK &&
            setcache__refresh_begin(c, &g->id, &g->stamp)) {
            gp[m++] = g;
        }
    }
    int rc = read_groups(c, gp, m);
    for (size_t j = 0; j < m; j++) {
        group *g = gp[j];
        if (rc != SETCACHE_OK) {
            setcache__invalidate(c, &g->id); /* could not compare: load again on demand */
        } else {
            sc_change *ch;
            size_t nch;
            bool incomplete;
            if (setcache__refresh_install(c, &g->id, &g->rows, g->stamp,
                                          setcache__has_subscribers(c), &ch, &nch, &incomplete)) {
                emit_changes(c, &g->id, ch, nch, incomplete);
                setcache__changes_free(ch, nch);
            } else {
                setcache__invalidate(c, &g->id); /* changed meanwhile: load on demand */
            }
        }
        setcache__et_free(&g->rows);
    }
    if (rc != SETCACHE_OK) {
        setcache__log(c, SETCACHE_LOG_WARN, "reconcile failed (%s); cached entities dropped",
                      setcache_errmsg());
    }
    for (size_t j = 0; j < nkeys; j++) {
        free(ekeys[j]);
    }
    free(ekeys);
    free(gs);
    free(gp);
}

/* ---- one round of hints ---- */

static void emit_for_hint(setcache *c, group *g, sc_hint *h)
{
    sc_ident kid = g->id;
    kid.key = h->key;
    kid.klen = strlen(h->key);
    HASH_VALUE(h->key, kid.klen, kid.khash);
    char *value;
    int64_t version;
    int st = setcache__current(c, &kid, &value, &version);
    bool local = setcache__is_own_backend(c, h->be_pid);
    if (st == SC_CUR_VALUE) {
        setcache__emit(c, SETCACHE_CHANGE_SET, h->type, h->id, h->key, value, NULL, version, local);
    } else if (st == SC_CUR_ABSENT) {
        setcache__emit(c, SETCACHE_CHANGE_DELETE, h->type, h->id, h->key, NULL, NULL,
                       version > h->version ? version : h->version, local);
    }
    free(value);
}

/* Step 1 of a round: group the hints by entity (a hint that can't be a row
 * of its table is counted as malformed and dropped). */
static group *group_hints(setcache *c, sc_hint *list, size_t *ngroups)
{
    group *groups = NULL;
    *ngroups = 0;
    for (sc_hint *h = list, *next; h; h = next) {
        next = h->next;
        sc_ident id;
        sc_tmap *map;
        if (setcache__ident(&id, h->type, h->id, NULL) != SETCACHE_OK ||
            ((map = setcache__map_of(c, id.type, id.tlen)) &&
             setcache__map_check_id(map, id.id) != SETCACHE_OK)) {
            setcache__count(c, SC_ST_MALFORMED, 1); /* can't be a row of its table */
            free(h);
            continue;
        }
        group *g;
        HASH_FIND(hh, groups, id.ekey, id.ekeylen, g);
        if (!g) {
            g = calloc(1, sizeof *g);
            if (g) {
                g->id = id;
                HASH_ADD_KEYPTR(hh, groups, g->id.ekey, g->id.ekeylen, g);
                if (!g->hh.tbl) {
                    free(g);
                    g = NULL;
                } else {
                    (*ngroups)++;
                }
            }
        }
        if (g && g->n == g->cap) {
            setcache__grow(&g->hints, &g->cap, 4, sizeof *g->hints); /* full if it fails */
        }
        if (!g || g->n == g->cap) {
            /* out of memory: this change can't be followed; say so. A group
             * without hints goes too: its identity points into h. */
            if (g && g->n == 0) {
                HASH_DEL(groups, g);
                free(g->hints);
                free(g);
                (*ngroups)--;
            }
            free(h);
            setcache__emit_resync(c);
            continue;
        }
        g->hints[g->n++] = h;
    }
    return groups;
}

/* Step 2: decide what one entity's hints need (g->act); true when it is to
 * be read (a refresh, or a fetch whose load this round owns). Without
 * can_read (out of memory) nothing is read: the entity is dropped instead. */
static bool classify_group(setcache *c, group *g, bool can_read)
{
    for (size_t j = 0; j < g->n && !g->subscribed; j++) {
        g->subscribed = setcache__is_subscribed(c, g->id.type, g->id.id, g->hints[j]->key);
    }
    sc_hintref refs[64] = {{0}};
    sc_hintref *rv = g->n <= 64 ? refs : malloc(g->n * sizeof *rv);
    if (!rv) {
        setcache__invalidate(c, &g->id);
        g->act = SC_ACT_SKIP;
        return false;
    }
    for (size_t j = 0; j < g->n; j++) {
        rv[j].key = g->hints[j]->key;
        rv[j].version = g->hints[j]->version;
        rv[j].op = g->hints[j]->op;
    }
    g->act = setcache__classify(c, &g->id, rv, g->n, g->subscribed, &g->stamp);
    size_t announced = 0;
    for (size_t j = 0; j < g->n; j++) {
        announced += g->hints[j]->op != SC_HINT_SEEN;
    }
    setcache__count(c, SC_ST_HINTS, announced);
    if (rv != refs) {
        free(rv);
    }
    if (g->act == SC_ACT_FETCH) {
        uint64_t epoch;
        if (setcache__begin_load(c, &g->id, &g->stamp, &epoch) != SC_BEGIN_OWN) {
            g->act = SC_ACT_LATER; /* loaded or loading by a reader: look again next round */
            return false;
        }
        if (!can_read) {
            bool inst;
            setcache__finish_load(c, &g->id, NULL, g->stamp, &inst);
            g->act = SC_ACT_SKIP;
            return false;
        }
        return true;
    }
    if (g->act == SC_ACT_REFRESH) {
        if (!can_read) {
            setcache__invalidate(c, &g->id);
            g->act = SC_ACT_SKIP;
            return false;
        }
        return true;
    }
    return false;
}

/* Step 3: install what was read for one entity (rc: how the reading went). */
static void install_group(setcache *c, group *x, int rc)
{
    if (x->act == SC_ACT_FETCH) {
        bool inst = false;
        setcache__finish_load(c, &x->id, rc == SETCACHE_OK ? &x->rows : NULL, x->stamp, &inst);
        if (inst) {
            setcache__count(c, SC_ST_LOADS, 1);
        } else {
            x->act = SC_ACT_LATER;
        }
    } else {
        sc_change *ch = NULL;
        size_t nch = 0;
        bool incomplete = false;
        if (rc == SETCACHE_OK &&
            setcache__refresh_install(c, &x->id, &x->rows, x->stamp, setcache__has_subscribers(c),
                                      &ch, &nch, &incomplete)) {
            emit_changes(c, &x->id, ch, nch, incomplete);
            setcache__changes_free(ch, nch);
        } else if (rc != SETCACHE_OK) {
            setcache__invalidate(c, &x->id); /* readers load it again */
        } else {
            x->act = SC_ACT_LATER; /* a local write raced: read again next round */
        }
    }
    setcache__et_free(&x->rows);
}

/* Step 4: tell subscribers, or queue the hints again for the next round
 * (a bounded number of times, then drop the entity and announce a RESYNC);
 * free the groups. Returns whether any hint was queued again. */
static bool finish_groups(setcache *c, group *groups)
{
    bool requeued = false;
    group *g, *tmp;
    HASH_ITER(hh, groups, g, tmp)
    {
        for (size_t j = 0; j < g->n; j++) {
            sc_hint *h = g->hints[j];
            if (h->op == SC_HINT_SEEN) {
                free(h); /* the fence's: nothing to tell, nothing to retry */
                continue;
            }
            if (g->act == SC_ACT_LATER) {
                if (++h->tries <= SC_MAX_TRIES) {
                    requeue(c, h);
                    requeued = true;
                    continue;
                }
                setcache__invalidate(c, &g->id);
                setcache__emit_resync(c);
            } else if (g->subscribed) {
                emit_for_hint(c, g, h);
            }
            free(h);
        }
        HASH_DEL(groups, g); /* NOLINT(clang-analyzer-core.NullDereference): uthash */
        free(g->hints);
        free(g);
    }
    return requeued;
}

/* One round of hints: group, classify, read what changed in batches,
 * install, tell subscribers. Returns whether any hint waits for another
 * round (a failed read, a load in flight). */
static bool process_hints(setcache *c, sc_hint *list)
{
    size_t ngroups;
    group *groups = group_hints(c, list, &ngroups);
    group **todo = calloc(ngroups ? ngroups : 1, sizeof *todo);
    size_t ntodo = 0;
    group *g, *tmp;
    HASH_ITER(hh, groups, g, tmp)
    {
        bool read = classify_group(c, g, todo != NULL);
        if (read && todo) {
            todo[ntodo++] = g;
        }
    }
    int rc = todo ? read_groups(c, todo, ntodo) : SETCACHE_ERR_NOMEM;
    for (size_t j = 0; j < ntodo; j++) {
        install_group(c, todo[j], rc);
    }
    if (rc != SETCACHE_OK && ntodo) {
        setcache__log(c, SETCACHE_LOG_WARN, "refresh failed: %s", setcache_errmsg());
    }
    free(todo);
    return finish_groups(c, groups);
}

/* What the source has of the fenced writes goes the way of its
 * announcements: a load in flight whose rows may predate it notes it and
 * does not install them, and the fence forgets the key once classified. */
static int sweep_fence(void *arg, PGconn *conn)
{
    setcache *c = arg;
    PGresult *r;
    int rc = setcache__fence_sweep(c, conn, &r);
    for (int i = 0; r && i < PQntuples(r); i++) {
        sc_ident id;
        int64_t v;
        if (setcache__ident(&id, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2)) ==
                SETCACHE_OK &&
            setcache__parse_int(PQgetvalue(r, i, 3), &v) &&
            setcache__fence_covers(c, &id, id.key, v)) {
            setcache__hint(c, SC_HINT_SEEN, v, 0, &id);
        }
    }
    PQclear(r);
    return rc;
}

/* Is the fence's sweep due: writes fenced, and a second since the last? */
static bool sweep_due(setcache *c, const struct timespec *last)
{
    if (atomic_load(&c->fence.entities) == 0) {
        return false;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - last->tv_sec) * 1000 + (now.tv_nsec - last->tv_nsec) / 1000000 >= 1000;
}

/* Once a second while writes are fenced: forget those the source has (the
 * writes of entities nobody here reads would otherwise stay). A history
 * this role can't read (or an older schema without one) turns it off. */
static void maybe_sweep(setcache *c, struct timespec *last, bool *off)
{
    if (*off || !sweep_due(c, last)) {
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, last);
    if (setcache__with_pool_read(c, sweep_fence, c) == SETCACHE_OK) {
        return;
    }
    const char *state = setcache__sqlstate();
    if (strcmp(state, "42501") == 0 || strcmp(state, "42P01") == 0) {
        *off = true;
        setcache__log(c, SETCACHE_LOG_WARN,
                      "the source's history is not readable (%s): writes through "
                      "write_conninfo are confirmed only by its notifications and re-reads",
                      setcache_errmsg());
    } else {
        setcache__log(c, SETCACHE_LOG_DEBUG, "fence: asking the source failed (%s)",
                      setcache_errmsg());
    }
}

static void *refresh_main(void *arg)
{
    setcache *c = arg;
    uint64_t done_gen = 0;
    struct timespec swept = {0, 0};
    bool sweep_off = false;
    for (;;) {
        pthread_mutex_lock(&c->refresh.mu);
        while (!c->refresh.head && !c->refresh.overflow && !c->refresh.truncate &&
               !c->refresh.defs_changed && c->refresh.resync_gen == done_gen && !c->refresh.stop &&
               (sweep_off || !sweep_due(c, &swept))) {
            struct timespec ts = setcache__deadline(1000);
            pthread_cond_timedwait(&c->refresh.cv, &c->refresh.mu, &ts);
        }
        if (c->refresh.stop) {
            pthread_mutex_unlock(&c->refresh.mu);
            break;
        }
        sc_hint *list = c->refresh.head;
        c->refresh.head = c->refresh.tail = NULL;
        c->refresh.len = 0;
        bool full = c->refresh.overflow || c->refresh.truncate || c->refresh.resync_gen != done_gen;
        uint64_t gen = c->refresh.resync_gen;
        /* after a reconnect a definition change may have been missed too */
        bool defs = c->refresh.defs_changed || (c->refresh.resync_gen != done_gen && done_gen);
        c->refresh.overflow = c->refresh.truncate = c->refresh.defs_changed = false;
        pthread_mutex_unlock(&c->refresh.mu);

        if (defs && setcache__defs_load_shared(c) != SETCACHE_OK) {
            setcache__log(c, SETCACHE_LOG_WARN, "reading the shared definitions failed (%s)",
                          setcache_errmsg());
        }

        if (full) {
            if (gen > 1 || gen == done_gen) {
                setcache__count(c, SC_ST_RESYNCS, 1); /* not the first connect */
            }
            setcache__emit_resync(c);
            reconcile_all(c);
            if (gen != done_gen) {
                done_gen = gen;
                atomic_store(&c->refresh.reconciled_gen, gen);
                uint64_t one = 1;
                ssize_t w = write(c->wake_fd, &one, sizeof one); /* tell the listener */
                (void)w;
            }
        }
        bool requeued = list && process_hints(c, list);
        if (atomic_load(&c->closing)) {
            continue;
        }
        maybe_sweep(c, &swept, &sweep_off);
        /* a failing database or a load in flight: don't spin on requeued
         * hints (hints that simply arrived meanwhile go at once) */
        if (requeued) {
            struct timespec ts = {0, 2 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

int setcache__refresh_start(setcache *c)
{
    if (pthread_create(&c->refresh.thread, NULL, refresh_main, c) != 0) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "cannot start the refresh thread");
    }
    c->refresh.started = true;
    return SETCACHE_OK;
}

/* The last resync generation whose reconcile is done. */
uint64_t setcache__reconciled_gen(setcache *c)
{
    return atomic_load(&c->refresh.reconciled_gen);
}

void setcache__refresh_init(setcache *c)
{
    pthread_mutex_init(&c->refresh.mu, NULL);
    setcache__cond_init(&c->refresh.cv);
}

/* Join the refresher thread. */
void setcache__refresh_stop(setcache *c)
{
    if (c->refresh.started && getpid() == c->pid) { /* none runs in a forked child */
        pthread_mutex_lock(&c->refresh.mu);
        c->refresh.stop = true;
        pthread_cond_broadcast(&c->refresh.cv);
        pthread_mutex_unlock(&c->refresh.mu);
        pthread_join(c->refresh.thread, NULL);
    }
    c->refresh.started = false;
}

/* After setcache__refresh_stop: free queued hints; own_process as in
 * setcache__cache_destroy. */
void setcache__refresh_destroy(setcache *c, bool own_process)
{
    for (sc_hint *h = c->refresh.head, *n; h; h = n) {
        n = h->next;
        free(h);
    }
    c->refresh.head = c->refresh.tail = NULL;
    c->refresh.len = 0;
    if (own_process) {
        pthread_mutex_destroy(&c->refresh.mu);
        pthread_cond_destroy(&c->refresh.cv);
    }
}
