/*
 * cache.c - the sharded in-memory cache: entity state and its transitions
 * (lookups, load and refresh installs, local writes, invalidation,
 * eviction). No I/O and no calls up: each function returns an outcome
 * (SC_LOOKUP_*, SC_BEGIN_*, SC_ACT_*, SC_CUR_*, whether to emit) that its
 * caller acts on.
 *
 * Owns: c->cache.shards. Each shard is a uthash table of entities under one
 * read-mostly lock; each loaded entity holds a view (an sc_etable of its
 * entries with a reference count: snapshots share it, and a change copies
 * the slots while one does) and the cells of the bound references attached
 * to it, which every change to their key updates in place. Readers
 * take the shard's read lock only; installs, invalidations and evictions take
 * its write lock. One shard lock at a time, never with another library lock
 * held (see internal.h for the global order).
 *
 * Versions and stamps. Every entry (and tombstone) carries its row version; a
 * change never installs an older version over a newer one. A load marks its
 * entity SC_LOADING; every change to one key seen meanwhile (notification or
 * local write) is noted in e->pending with its version, and the load installs
 * only if its rows reflect each of them (the fill race: a load that read
 * version v is never installed after the change to v+1 was seen). Changes
 * that can't be named per key (TRUNCATE, resync, an uncertain write, too many
 * pending) advance the entity's stamp from c->cache.clock instead, and a load
 * installs only if the stamp is unchanged. Changes to entities not in the
 * table advance shard->unknown_stamp, or, while a preload runs, leave an
 * empty entity stamped with the change, which guards preload the same way.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void follow_server(setcache *c);

static inline sc_shard *shard_of(setcache *c, unsigned ehash)
{
    return &c->cache.shards[(ehash >> 20) % SC_NSHARDS];
}

uint64_t setcache__tick(setcache *c)
{
    return atomic_fetch_add(&c->cache.clock, 1) + 1;
}

static void count_entries(const sc_etable *t, uint32_t *n, size_t *bytes)
{
    *n = 0;
    *bytes = 0;
    for (uint32_t i = 0; i < t->cap; i++) {
        const sc_entry *e = t->slot[i];
        if (e && !SC_TOMB(e)) {
            (*n)++;
            *bytes += e->klen + e->vlen;
        }
    }
}

static sc_entity *find_locked(sc_shard *sh, const sc_ident *id)
{
    sc_entity *e;
    HASH_FIND_BYHASHVALUE(hh, sh->table, id->ekey, id->ekeylen, id->ehash, e);
    return e;
}

static const sc_etable no_entries;

/* The entity's entries: empty unless it is loaded. */
static inline const sc_etable *tab(const sc_entity *e)
{
    return e->view ? &e->view->t : &no_entries;
}

static bool cell_is(const sc_cell *cl, const char *key, size_t klen, unsigned khash)
{
    return cl->khash == khash && cl->klen == klen && memcmp(cl->key, key, klen) == 0;
}

/* Publish the entity's value for key (every key when key is NULL) to the
 * cells attached to it. */
static void cells_update_locked(sc_entity *e, const char *key, size_t klen, unsigned khash)
{
    bool loaded = e->state == SC_LOADED;
    for (sc_cell *cl = e->cells; cl; cl = cl->next) {
        if (!key || cell_is(cl, key, klen, khash)) {
            setcache__cell_store(
                cl, loaded ? setcache__et_find(tab(e), cl->key, cl->klen, cl->khash) : NULL,
                loaded);
        }
    }
}

/* The entity goes: its cells answer nothing until attached again. */
static void cells_detach_locked(sc_entity *e)
{
    for (sc_cell *cl = e->cells, *n; cl; cl = n) {
        n = cl->next;
        setcache__cell_store(cl, NULL, false);
        cl->ent = NULL;
        cl->next = cl->prev = NULL;
        atomic_store_explicit(&cl->attached, false, memory_order_relaxed);
    }
    e->cells = NULL;
}

/* Was any attached cell read since the last sweep? Clears the marks. */
static bool cells_used_locked(sc_entity *e)
{
    bool used = false;
    for (sc_cell *cl = e->cells; cl; cl = cl->next) {
        if (atomic_load_explicit(&cl->used, memory_order_relaxed)) {
            atomic_store_explicit(&cl->used, 0, memory_order_relaxed);
            used = true;
        }
    }
    return used;
}

/* Make a loaded entity's view its own to change: while a snapshot shares
 * it, change a copy of the slots (the entries are shared). false: no
 * memory. */
static bool own_view_locked(sc_entity *e)
{
    if (atomic_load_explicit(&e->view->refs, memory_order_acquire) == 1) {
        return true; /* no snapshot holds it, and none can take it now */
    }
    sc_eview *n = setcache__view_clone(e->view);
    if (!n) {
        return false;
    }
    setcache__view_unref(e->view);
    e->view = n;
    return true;
}

/* Drop an entity's entries; it must be loaded again before it answers. */
static void unload_locked(setcache *c, sc_shard *sh, sc_entity *e)
{
    if (e->state == SC_LOADED) {
        sh->nloaded--;
        sh->nentries -= e->nentries;
        sh->bytes -= e->bytes;
        setcache__count(c, SC_ST_INVALIDATIONS, 1);
    }
    setcache__view_unref(e->view);
    e->view = NULL;
    e->nentries = 0;
    e->bytes = 0;
    e->state = SC_EMPTY;
    cells_update_locked(e, NULL, 0, 0);
}

/* Install entries (taken: *entries is left empty) into an entity that is
 * not loaded (or whose counts the caller has taken off the shard's), in the
 * new view *nv (taken: *nv is left NULL). */
static void set_entries_locked(sc_shard *sh, sc_entity *e, sc_etable *entries, sc_eview **nv)
{
    uint32_t n;
    size_t bytes;
    count_entries(entries, &n, &bytes);
    setcache__et_take(&(*nv)->t, entries);
    setcache__view_unref(e->view);
    e->view = *nv;
    *nv = NULL;
    e->nentries = n;
    e->bytes = bytes;
    e->state = SC_LOADED;
    atomic_store_explicit(&e->referenced, 1, memory_order_relaxed);
    sh->nloaded++;
    sh->nentries += n;
    sh->bytes += bytes;
    cells_update_locked(e, NULL, 0, 0);
}

static sc_entity *create_locked(setcache *c, sc_shard *sh, const sc_ident *id)
{
    sc_entity *e = calloc(1, sizeof *e + id->ekeylen);
    if (!e) {
        return NULL;
    }
    memcpy(e->ekey, id->ekey, id->ekeylen);
    e->ekeylen = id->ekeylen;
    e->stamp = sh->unknown_stamp;
    HASH_ADD_KEYPTR_BYHASHVALUE(hh, sh->table, e->ekey, e->ekeylen, id->ehash, e);
    if (!e->hh.tbl) {
        free(e);
        return NULL;
    }
    atomic_fetch_add(&c->cache.nentities, 1);
    return e;
}

static void pending_clear(sc_entity *e)
{
    for (uint32_t i = 0; i < e->npending; i++) {
        free(e->pending[i].key);
    }
    free(e->pending);
    e->pending = NULL;
    e->npending = 0;
    e->cappending = 0;
}

/* Note a change to one key of a loading entity; when that is not possible
 * the entity's stamp moves, and the load will not be installed. */
static void note_pending_locked(setcache *c, sc_entity *e, char op, int64_t version,
                                const sc_ident *id)
{
    if (e->npending < SC_MAX_PENDING) {
        sc_pending *np = e->pending;
        if (e->npending == e->cappending) {
            size_t cap = e->cappending;
            np = setcache__grow(&e->pending, &cap, 8, sizeof *np) ? e->pending : NULL;
            e->cappending = (uint32_t)cap;
        }
        char *k = np ? malloc(id->klen + 1) : NULL;
        if (k) {
            memcpy(k, id->key, id->klen);
            k[id->klen] = '\0';
            np[e->npending].key = k;
            np[e->npending].version = version;
            np[e->npending].op = op;
            e->npending++;
            return;
        }
    }
    e->stamp = setcache__tick(c);
}

/* Do the loaded rows already reflect every change seen during the load? */
static bool pending_reflected(const sc_entity *e, const sc_etable *rows)
{
    for (uint32_t i = 0; i < e->npending; i++) {
        const sc_pending *p = &e->pending[i];
        const sc_entry *en = setcache__et_find_str(rows, p->key);
        /* a tombstone (the source's history: deleted at that version) is
         * no row */
        if (p->op == 'D' ? (en && !SC_TOMB(en) && en->version <= p->version)
                         : (!en || en->version < p->version)) {
            return false;
        }
    }
    return true;
}

/* An entity changed that is not in the table: remember it for preload. */
static void note_unknown_locked(setcache *c, sc_shard *sh, const sc_ident *id)
{
    uint64_t t = setcache__tick(c);
    if (atomic_load(&c->cache.preloading) > 0) {
        sc_entity *e = create_locked(c, sh, id);
        if (e) {
            e->stamp = t;
            return;
        }
    }
    sh->unknown_stamp = t;
}

/* A hit, counted in the reader's own slot (it holds that slot's mutex, so
 * no other thread writes the counter now): no shared write, no lock prefix. */
static inline void count_hit(sc_shard *sh, int slot)
{
    atomic_uint_fast64_t *h = &sh->lock.slot[slot].hits;
    atomic_store_explicit(h, atomic_load_explicit(h, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* ---- reads ---- */

/*
 * Look a read up in the cache: a hash lookup and a copy under this thread's
 * slot of the shard's lock. SC_LOOKUP_ANSWERED: *rc is the answer;
 * SC_LOOKUP_NO_VALUE: the entity is loaded and holds no value for the key
 * (the caller answers from the definitions); SC_LOOKUP_NOT_LOADED. A hit is
 * counted when count_hit.
 */
int setcache__lookup(setcache *c, sc_ident *id, sc_read *r, bool count, int *rc)
{
    sc_shard *sh = shard_of(c, id->ehash);
    int slot = setcache__rslot(); /* this thread's: no other reader writes its line */
    pthread_mutex_t *mu = &sh->lock.slot[slot].mu;
    pthread_mutex_lock(mu);
    sc_entity *e = find_locked(sh, id);
    if (!e || e->state != SC_LOADED) {
        pthread_mutex_unlock(mu);
        return SC_LOOKUP_NOT_LOADED;
    }
    if (c->max_entities && !atomic_load_explicit(&e->referenced, memory_order_relaxed)) {
        atomic_store_explicit(&e->referenced, 1, memory_order_relaxed);
    }
    const sc_entry *en = setcache__et_find(&e->view->t, id->key, id->klen, id->khash);
    if (count) {
        count_hit(sh, slot);
    }
    if (en && !SC_TOMB(en)) {
        *rc = setcache__fill_entry(en, r);
        pthread_mutex_unlock(mu);
        return SC_LOOKUP_ANSWERED;
    }
    pthread_mutex_unlock(mu);
    return SC_LOOKUP_NO_VALUE;
}

/* ---- loads ---- */

/* A preload begins: changes to uncached entities are remembered until it
 * ends. Returns the change clock, the preload's "since". */
uint64_t setcache__preload_begin(setcache *c)
{
    atomic_fetch_add(&c->cache.preloading, 1);
    return atomic_load(&c->cache.clock);
}

void setcache__preload_end(setcache *c)
{
    atomic_fetch_sub(&c->cache.preloading, 1);
}

void setcache__cache_init(setcache *c)
{
    for (int i = 0; i < SC_NSHARDS; i++) {
        setcache__br_init(&c->cache.shards[i].lock);
    }
    pthread_mutex_init(&c->cache.load_mu, NULL);
    setcache__cond_init(&c->cache.load_cv);
}

/* Wake every reader waiting for a load (the handle is closing). */
void setcache__cache_wake(setcache *c)
{
    pthread_mutex_lock(&c->cache.load_mu);
    pthread_cond_broadcast(&c->cache.load_cv);
    pthread_mutex_unlock(&c->cache.load_mu);
}

/* Wait (in 50 ms steps, until the handle closes) for a load in flight that
 * began in *epoch to end. */
void setcache__wait_load(setcache *c, uint64_t epoch)
{
    pthread_mutex_lock(&c->cache.load_mu);
    while (atomic_load(&c->cache.load_epoch) == epoch && !atomic_load(&c->closing)) {
        struct timespec ts = setcache__deadline(50);
        pthread_cond_timedwait(&c->cache.load_cv, &c->cache.load_mu, &ts);
    }
    pthread_mutex_unlock(&c->cache.load_mu);
}

/* Returns SC_BEGIN_LOADED (loaded already), SC_BEGIN_WAIT (someone else is
 * loading: wait on *epoch), SC_BEGIN_OWN (the caller owns the load, *stamp
 * recorded), or a negative error code. */
int setcache__begin_load(setcache *c, sc_ident *id, uint64_t *stamp, uint64_t *epoch)
{
    sc_shard *sh = shard_of(c, id->ehash);
    setcache__br_wrlock(&sh->lock);
    sc_entity *e = find_locked(sh, id);
    if (!e) {
        e = create_locked(c, sh, id);
        if (!e) {
            setcache__br_wrunlock(&sh->lock);
            return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        }
    }
    int rc;
    if (e->state == SC_LOADED) {
        rc = SC_BEGIN_LOADED;
    } else if (e->state == SC_LOADING) {
        *epoch = atomic_load(&c->cache.load_epoch);
        rc = SC_BEGIN_WAIT;
    } else {
        e->state = SC_LOADING;
        *stamp = e->stamp;
        rc = SC_BEGIN_OWN;
    }
    setcache__br_wrunlock(&sh->lock);
    return rc;
}

/* End a load the caller owns. Installs *entries (taking them, *entries left
 * empty) only when no change to the entity was seen since the load began. */
void setcache__finish_load(setcache *c, sc_ident *id, sc_etable *entries, uint64_t stamp,
                           bool *installed)
{
    follow_server(c);
    sc_shard *sh = shard_of(c, id->ehash);
    *installed = false;
    sc_eview *nv = entries ? setcache__view_new() : NULL;
    setcache__br_wrlock(&sh->lock);
    sc_entity *e = find_locked(sh, id); /* a loading entity is never evicted */
    if (e) {
        /* rows from a source that may lag keep this process's newer writes */
        if (nv && e->stamp == stamp && setcache__fence_merge(c, id, entries) &&
            pending_reflected(e, entries)) {
            set_entries_locked(sh, e, entries, &nv);
            *installed = true;
        } else {
            e->state = SC_EMPTY;
            e->stamp = setcache__tick(c);
        }
        pending_clear(e);
    }
    setcache__br_wrunlock(&sh->lock);
    setcache__view_unref(nv);
    atomic_fetch_add(&c->cache.load_epoch, 1);
    pthread_mutex_lock(&c->cache.load_mu);
    pthread_cond_broadcast(&c->cache.load_cv);
    pthread_mutex_unlock(&c->cache.load_mu);
    if (*installed) {
        setcache__evict_if_needed(c, id);
    }
}

/* Install one entity found by preload, unless it is cached or loading
 * already, or changed since the preload's query began (stamp > since).
 * Returns 1 if installed (entries taken), 0 if skipped, or an error. */
int setcache__install_preloaded(setcache *c, sc_ident *id, sc_etable *entries, uint64_t since)
{
    follow_server(c);
    sc_shard *sh = shard_of(c, id->ehash);
    int rc = 0;
    sc_eview *nv = setcache__view_new();
    if (!nv) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    if (setcache__fence_has(c, id)) {
        setcache__view_unref(nv);
        return 0; /* a write here the source may not show: loaded (with the
                     history's check) when first read */
    }
    setcache__br_wrlock(&sh->lock);
    sc_entity *e = find_locked(sh, id);
    if (e) {
        if (e->state == SC_EMPTY && e->stamp <= since) {
            set_entries_locked(sh, e, entries, &nv);
            rc = 1;
        }
    } else if (sh->unknown_stamp <= since) {
        e = create_locked(c, sh, id);
        if (!e) {
            rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        } else {
            set_entries_locked(sh, e, entries, &nv);
            rc = 1;
        }
    }
    setcache__br_wrunlock(&sh->lock);
    setcache__view_unref(nv);
    if (rc == 1) {
        setcache__evict_if_needed(c, id);
    }
    return rc;
}

/* ---- changes ---- */

/* Move every shard's clock for entities not in the table, and the stamp of
 * every entity (so that no load in flight is installed); with unload, also
 * drop what loaded entities hold. */
static void stamp_all(setcache *c, bool unload)
{
    for (int i = 0; i < SC_NSHARDS; i++) {
        sc_shard *sh = &c->cache.shards[i];
        setcache__br_wrlock(&sh->lock);
        uint64_t t = setcache__tick(c);
        sh->unknown_stamp = t;
        sc_entity *e, *tmp;
        HASH_ITER(hh, sh->table, e, tmp)
        {
            if (unload && e->state == SC_LOADED) {
                unload_locked(c, sh, e);
            }
            if (unload || e->state == SC_LOADING) {
                e->stamp = t;
            }
        }
        setcache__br_wrunlock(&sh->lock);
    }
}

/* Connections reached another server (a promoted standby, or another
 * cluster): versions from before are not comparable with its own, so every
 * cached entity is dropped, and loads in flight are not installed, before
 * anything from it is. Called by every install; an atomic load when
 * nothing changed. */
static void follow_server(setcache *c)
{
    uint64_t gen = setcache__server_gen(c);
    uint_fast64_t seen = atomic_load(&c->cache.server_seen);
    if (gen != seen && atomic_compare_exchange_strong(&c->cache.server_seen, &seen, gen)) {
        stamp_all(c, true);
    }
}

/* Before a reconcile: loads and preloads in flight may have read a snapshot
 * older than a change whose notification was lost; make sure they are not
 * installed (their readers load again, after the fence). */
void setcache__fence(setcache *c)
{
    stamp_all(c, false);
}

/* Forget everything (events may have been missed and can't be reconciled). */
void setcache__invalidate_all(setcache *c)
{
    stamp_all(c, true);
}

/* Put nw in place of the entry with its key, if any (nw taken). */
static bool put_entry_locked(sc_shard *sh, sc_entity *e, sc_entry *nw)
{
    sc_entry *old;
    if (!own_view_locked(e) || setcache__et_put(&e->view->t, nw, &old) != SETCACHE_OK) {
        setcache__entry_unref(nw);
        return false;
    }
    if (old && !SC_TOMB(old)) {
        e->nentries--;
        e->bytes -= old->klen + old->vlen;
        sh->nentries--;
        sh->bytes -= old->klen + old->vlen;
    }
    setcache__entry_unref(old);
    if (!SC_TOMB(nw)) {
        e->nentries++;
        e->bytes += nw->klen + nw->vlen;
        sh->nentries++;
        sh->bytes += nw->klen + nw->vlen;
    }
    cells_update_locked(e, nw->data, nw->klen, nw->hash);
    return true;
}

/* One write's outcome (sc_local) applied to an entity the caller holds the
 * shard's write lock of. */
static void apply_one_locked(setcache *c, sc_shard *sh, sc_local *l, bool want_old)
{
    sc_ident *id = l->id;
    sc_entry *nw = l->nw;
    l->nw = NULL;
    l->emit = !l->uncertain && (!l->deleted || l->version > 0);
    sc_entity *e = find_locked(sh, id);
    if (!e) {
        note_unknown_locked(c, sh, id);
        goto out;
    }
    if (e->state == SC_LOADING && !l->uncertain) {
        if (l->deleted && l->version == 0) {
            goto out; /* nothing changed in the table */
        }
        note_pending_locked(c, e, l->deleted ? 'D' : 'U', l->version, id);
        goto out;
    }
    e->stamp = setcache__tick(c);
    if (e->state != SC_LOADED) {
        goto out;
    }
    if (l->uncertain) {
        unload_locked(c, sh, e);
        goto out;
    }
    const sc_entry *en = setcache__et_find(tab(e), id->key, id->klen, id->khash);
    if (want_old && en && !SC_TOMB(en)) {
        l->old = strdup(SC_VAL(en));
    }
    if (!l->deleted) {
        if (en && !SC_TOMB(en) && en->version >= l->version) {
            l->emit = false; /* a newer version is cached already */
            goto out;
        }
        if ((en && SC_TOMB(en) && en->version >= l->version) || !nw) {
            unload_locked(c, sh, e); /* can't tell which is newer, or no memory */
            goto out;
        }
        if (!put_entry_locked(sh, e, nw)) {
            unload_locked(c, sh, e);
        }
        nw = NULL;
    } else if (l->version > 0) {
        if (en && !SC_TOMB(en) && en->version > l->version) {
            l->emit = false; /* re-inserted since */
            goto out;
        }
        if (!nw) {
            unload_locked(c, sh, e);
            goto out;
        }
        if (!put_entry_locked(sh, e, nw)) {
            unload_locked(c, sh, e);
        }
        nw = NULL;
    } else if (en && !SC_TOMB(en)) {
        unload_locked(c, sh, e); /* the cache held a row the table no longer has */
    }
out:
    setcache__entry_unref(nw);
}

/*
 * Writes through this handle to one entity committed (or may have), in one
 * transaction: v[0..n) are its outcomes, applied under one hold of the
 * shard's lock, so that no reader or snapshot sees some of them without the
 * others. Each: value NULL with deleted = a delete; version the row version
 * the statement returned (0 = the delete found no row); uncertain = the
 * outcome is unknown (the entity is dropped). Sets each one's emit (a change
 * newer than what was cached: subscribers are to be told) and, with
 * want_old, old (the value it replaced, malloc'd, or NULL).
 */
void setcache__apply_local(setcache *c, sc_local *v, size_t n, bool want_old)
{
    follow_server(c);
    if (n == 0) {
        return;
    }
    for (size_t j = 0; j < n; j++) {
        sc_local *l = &v[j];
        l->old = NULL;
        l->nw = NULL;
        if (!l->uncertain && (!l->deleted || l->version > 0)) {
            l->nw = setcache__entry_new(l->id->key, l->id->klen, l->value,
                                        l->value ? strlen(l->value) : 0, l->version, l->deleted);
        }
    }
    sc_shard *sh = shard_of(c, v[0].id->ehash); /* one entity: one shard */
    setcache__br_wrlock(&sh->lock);
    for (size_t j = 0; j < n; j++) {
        apply_one_locked(c, sh, &v[j], want_old);
    }
    setcache__br_wrunlock(&sh->lock);
}

/* ---- eviction ---- */

/* Evict whole entities (CLOCK: a referenced entity gets a second chance)
 * until at most max_entities remain. Loading entities are never evicted. */
void setcache__evict_if_needed(setcache *c, const sc_ident *keep)
{
    if (!c->max_entities) {
        return;
    }
    for (int pass = 0; pass < 3 * SC_NSHARDS; pass++) {
        if (atomic_load(&c->cache.nentities) <= c->max_entities) {
            return;
        }
        sc_shard *sh = &c->cache.shards[atomic_fetch_add(&c->cache.evict_hand, 1) % SC_NSHARDS];
        setcache__br_wrlock(&sh->lock);
        sc_entity *e, *tmp;
        HASH_ITER(hh, sh->table, e, tmp)
        {
            if (atomic_load(&c->cache.nentities) <= c->max_entities) {
                break;
            }
            if (e->state == SC_LOADING || (keep && e->ekeylen == keep->ekeylen &&
                                           memcmp(e->ekey, keep->ekey, keep->ekeylen) == 0)) {
                continue; /* loading, or just installed for a reader */
            }
            bool used = cells_used_locked(e); /* read through a bound reference */
            if (atomic_load_explicit(&e->referenced, memory_order_relaxed) || used) {
                atomic_store_explicit(&e->referenced, 0, memory_order_relaxed);
                continue;
            }
            bool was_loaded = e->state == SC_LOADED;
            if (was_loaded) {
                sh->nloaded--;
                sh->nentries -= e->nentries;
                sh->bytes -= e->bytes;
            }
            if (e->stamp > sh->unknown_stamp) {
                sh->unknown_stamp = e->stamp;
            }
            cells_detach_locked(e);
            setcache__view_unref(e->view);
            pending_clear(e);
            HASH_DEL(sh->table, e); /* NOLINT(clang-analyzer-core.NullDereference): uthash */
            free(e);
            atomic_fetch_sub(&c->cache.nentities, 1);
            if (was_loaded) {
                setcache__count(c, SC_ST_EVICTIONS, 1);
            }
        }
        setcache__br_wrunlock(&sh->lock);
    }
}

void setcache__cache_stats(setcache *c, setcache_stats *st)
{
    st->entities = st->entries = st->bytes = 0;
    for (int i = 0; i < SC_NSHARDS; i++) {
        sc_shard *sh = &c->cache.shards[i];
        for (int j = 0; j < SC_RSLOTS; j++) {
            st->hits += atomic_load_explicit(&sh->lock.slot[j].hits, memory_order_relaxed);
        }
        setcache__br_rdlock(&sh->lock);
        st->entities += sh->nloaded;
        st->entries += sh->nentries;
        st->bytes += sh->bytes;
        setcache__br_rdunlock(&sh->lock);
    }
}

/* Free every entity. own_process: also the locks (in a forked child, a
 * condition variable may count the parent's waiters: destroying it would
 * block). */
void setcache__cache_destroy(setcache *c, bool own_process)
{
    for (int i = 0; i < SC_NSHARDS; i++) {
        sc_shard *sh = &c->cache.shards[i];
        sc_entity *e, *tmp;
        HASH_ITER(hh, sh->table, e, tmp)
        {
            cells_detach_locked(e);
            setcache__view_unref(e->view);
            pending_clear(e);
            HASH_DEL(sh->table, e); /* NOLINT(clang-analyzer-core.NullDereference): uthash */
            free(e);
        }
        setcache__br_destroy(&sh->lock);
    }
    if (own_process) {
        pthread_mutex_destroy(&c->cache.load_mu);
        pthread_cond_destroy(&c->cache.load_cv);
    }
}

/* ---- background refresh (refresh.c) ---- */

/*
 * Decide what a batch of hints for one entity needs. Returns SC_ACT_SKIP
 * (nothing to read: loading entities note them as pending, loaded ones
 * already reflect them, uncached ones are remembered for preload),
 * SC_ACT_REFRESH (a loaded entity to re-read; *stamp recorded) or
 * SC_ACT_FETCH (not cached, but subscribed: load it; want_fetch).
 */
int setcache__classify(setcache *c, sc_ident *id, const sc_hintref *h, size_t n, bool want_fetch,
                       uint64_t *stamp)
{
    sc_shard *sh = shard_of(c, id->ehash);
    int act = SC_ACT_SKIP;
    setcache__br_wrlock(&sh->lock);
    sc_entity *e = find_locked(sh, id);
    if (e && e->state == SC_LOADING) {
        for (size_t j = 0; j < n; j++) {
            sc_ident kid = *id;
            kid.key = h[j].key;
            kid.klen = strlen(h[j].key);
            note_pending_locked(c, e, h[j].op == 'D' ? 'D' : 'U', h[j].version, &kid);
        }
    } else if (e && e->state == SC_LOADED) {
        for (size_t j = 0; j < n && act == SC_ACT_SKIP; j++) {
            const sc_entry *en = setcache__et_find_str(tab(e), h[j].key);
            bool skip;
            if (en && (en->flags & SC_E_DUP)) {
                skip = false; /* not one row at one version: any change re-reads it */
            } else if (h[j].op == 'D') {
                skip = !en || (SC_TOMB(en) && en->version >= h[j].version) ||
                       (!SC_TOMB(en) && en->version > h[j].version);
            } else {
                skip =
                    en && (SC_TOMB(en) ? en->version == h[j].version : en->version >= h[j].version);
            }
            if (!skip) {
                act = SC_ACT_REFRESH;
                *stamp = e->stamp;
            }
        }
    } else if (want_fetch) {
        act = SC_ACT_FETCH;
    } else if (e) {
        e->stamp = setcache__tick(c);
    } else {
        note_unknown_locked(c, sh, id);
    }
    /* the source has these versions now: this process's writes up to them
     * need no fence - unless a load is in flight, whose rows may predate
     * them and may still answer a read (load.c): its install confirms them,
     * or a later hint does */
    for (size_t j = 0; j < n && (!e || e->state != SC_LOADING); j++) {
        setcache__fence_seen(c, id, h[j].key, h[j].version);
    }
    setcache__br_wrunlock(&sh->lock);
    return act;
}

/* Record the stamp of a loaded entity before a reconcile re-reads it.
 * false if it is not loaded (nothing to reconcile). */
bool setcache__refresh_begin(setcache *c, sc_ident *id, uint64_t *stamp)
{
    sc_shard *sh = shard_of(c, id->ehash);
    setcache__br_rdlock(&sh->lock);
    sc_entity *e = find_locked(sh, id);
    bool ok = e && e->state == SC_LOADED;
    if (ok) {
        *stamp = e->stamp;
    }
    setcache__br_rdunlock(&sh->lock);
    return ok;
}

static int add_change(sc_change **v, size_t *n, size_t *cap, setcache_change_kind kind,
                      const char *key, const char *value, const char *old, int64_t version)
{
    if (*n == *cap && !setcache__grow(v, cap, 8, sizeof **v)) {
        return -1;
    }
    sc_change *ch = &(*v)[*n];
    ch->kind = kind;
    ch->version = version;
    ch->key = strdup(key);
    ch->value = value ? strdup(value) : NULL;
    ch->old = old ? strdup(old) : NULL;
    (*n)++;
    if (!ch->key || (value && !ch->value) || (old && !ch->old)) {
        return -1;
    }
    return 0;
}

void setcache__changes_free(sc_change *v, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        free(v[j].key);
        free(v[j].value);
        free(v[j].old);
    }
    free(v);
}

/*
 * Swap freshly read rows into a loaded entity, unless a local write changed
 * it since *stamp was taken (then false, and the caller reads again). Rows
 * are a snapshot taken after every change already applied, so the whole
 * table is replaced. With want (there are subscribers), *changes lists what
 * differs (set and deleted keys with old values); *incomplete is set if that
 * list is incomplete.
 */
bool setcache__refresh_install(setcache *c, sc_ident *id, sc_etable *rows, uint64_t stamp,
                               bool want, sc_change **changes, size_t *nchanges, bool *incomplete)
{
    follow_server(c);
    sc_shard *sh = shard_of(c, id->ehash);
    size_t cap = 0;
    *changes = NULL;
    *nchanges = 0;
    *incomplete = false;
    sc_eview *nv = setcache__view_new();
    if (!nv) {
        return false; /* read again next round */
    }
    setcache__br_wrlock(&sh->lock);
    sc_entity *e = find_locked(sh, id);
    if (!e || e->state != SC_LOADED || e->stamp != stamp || !setcache__fence_merge(c, id, rows)) {
        setcache__br_wrunlock(&sh->lock);
        setcache__view_unref(nv);
        return false;
    }
    if (want) {
        /* (rows may hold tombstones: keys the source deleted, or this
         * process did) */
        for (uint32_t i = 0; i < rows->cap; i++) {
            const sc_entry *n = rows->slot[i];
            if (!n || SC_TOMB(n)) {
                continue;
            }
            const sc_entry *o = setcache__et_find(tab(e), n->data, n->klen, n->hash);
            if (!o || SC_TOMB(o) || o->version != n->version || strcmp(SC_VAL(o), SC_VAL(n)) != 0) {
                if (add_change(changes, nchanges, &cap, SETCACHE_CHANGE_SET, n->data, SC_VAL(n),
                               o && !SC_TOMB(o) ? SC_VAL(o) : NULL, n->version) != 0) {
                    *incomplete = true;
                }
            }
        }
        for (uint32_t i = 0; i < tab(e)->cap; i++) {
            const sc_entry *o = tab(e)->slot[i];
            if (!o || SC_TOMB(o)) {
                continue;
            }
            const sc_entry *nr = setcache__et_find(rows, o->data, o->klen, o->hash);
            if ((!nr || SC_TOMB(nr)) &&
                add_change(changes, nchanges, &cap, SETCACHE_CHANGE_DELETE, o->data, NULL,
                           SC_VAL(o), nr ? nr->version : o->version) != 0) {
                *incomplete = true;
            }
        }
    }
    sh->nentries -= e->nentries;
    sh->bytes -= e->bytes;
    sh->nloaded--;
    set_entries_locked(sh, e, rows, &nv);
    setcache__br_wrunlock(&sh->lock);
    setcache__count(c, SC_ST_REFRESHES, 1);
    return true;
}

/* Drop a loaded entity the refresher could not re-read in time. */
void setcache__invalidate(setcache *c, sc_ident *id)
{
    sc_shard *sh = shard_of(c, id->ehash);
    setcache__br_wrlock(&sh->lock);
    sc_entity *e = find_locked(sh, id);
    if (e) {
        if (e->state == SC_LOADED) {
            unload_locked(c, sh, e);
        }
        e->stamp = setcache__tick(c);
    }
    setcache__br_wrunlock(&sh->lock);
}

/* What the cache holds for one setting now: SC_CUR_VALUE (*value malloc'd),
 * SC_CUR_ABSENT (the entity is loaded and has none), SC_CUR_UNKNOWN (not
 * loaded, or no memory to copy it). */
int setcache__current(setcache *c, sc_ident *id, char **value, int64_t *version)
{
    sc_shard *sh = shard_of(c, id->ehash);
    int rc = SC_CUR_UNKNOWN;
    *value = NULL;
    *version = 0;
    setcache__br_rdlock(&sh->lock);
    sc_entity *e = find_locked(sh, id);
    if (e && e->state == SC_LOADED) {
        const sc_entry *en = setcache__et_find(tab(e), id->key, id->klen, id->khash);
        if (en && !SC_TOMB(en)) {
            *value = strdup(SC_VAL(en));
            *version = en->version;
            rc = *value ? SC_CUR_VALUE : SC_CUR_UNKNOWN;
        } else {
            *version = en ? en->version : 0;
            rc = SC_CUR_ABSENT;
        }
    }
    setcache__br_rdunlock(&sh->lock);
    return rc;
}

/* Identities (type, id) of every loaded entity, for a reconcile. */
int setcache__loaded_entities(setcache *c, char ***out, size_t *n)
{
    size_t cap = 0, cnt = 0;
    char **v = NULL;
    int rc = SETCACHE_OK;
    for (int i = 0; i < SC_NSHARDS && rc == SETCACHE_OK; i++) {
        sc_shard *sh = &c->cache.shards[i];
        setcache__br_rdlock(&sh->lock);
        sc_entity *e, *tmp;
        HASH_ITER(hh, sh->table, e, tmp)
        {
            if (e->state != SC_LOADED) {
                continue;
            }
            if (cnt == cap && !setcache__grow(&v, &cap, 64, sizeof *v)) {
                rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
                break;
            }
            v[cnt] = malloc(e->ekeylen);
            if (!v[cnt]) {
                rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
                break;
            }
            memcpy(v[cnt], e->ekey, e->ekeylen);
            cnt++;
        }
        setcache__br_rdunlock(&sh->lock);
    }
    *out = v;
    *n = cnt;
    return rc;
}

/* ---- snapshots and bound references (snap.c, ref.c) ---- */

/* Share a loaded entity's view (one more reference, released with
 * setcache__view_unref); false if it is not loaded. */
bool setcache__view_share(setcache *c, sc_ident *id, sc_eview **out)
{
    sc_shard *sh = shard_of(c, id->ehash);
    setcache__br_rdlock(&sh->lock);
    sc_entity *e = find_locked(sh, id);
    bool loaded = e && e->state == SC_LOADED;
    if (loaded) {
        /* under the read lock: a writer, holding the write lock, sees it */
        atomic_fetch_add_explicit(&e->view->refs, 1, memory_order_relaxed);
        if (c->max_entities && !atomic_load_explicit(&e->referenced, memory_order_relaxed)) {
            atomic_store_explicit(&e->referenced, 1, memory_order_relaxed);
        }
        *out = e->view;
    }
    setcache__br_rdunlock(&sh->lock);
    return loaded;
}

/* Attach a cell (its key set) to its entity, if the entity is in the table,
 * and publish its value; a cell attached already is left as it is. */
void setcache__cell_attach(setcache *c, const sc_ident *id, sc_cell *cl)
{
    sc_shard *sh = shard_of(c, id->ehash);
    setcache__br_wrlock(&sh->lock);
    sc_entity *e = cl->ent ? NULL : find_locked(sh, id);
    if (e) {
        cl->prev = NULL;
        cl->next = e->cells;
        if (e->cells) {
            e->cells->prev = cl;
        }
        e->cells = cl;
        cl->ent = e;
        atomic_store_explicit(&cl->attached, true, memory_order_relaxed);
        cells_update_locked(e, cl->key, cl->klen, cl->khash);
    }
    setcache__br_wrunlock(&sh->lock);
}

/* Detach a cell from its entity (if attached): nothing writes it after. */
void setcache__cell_detach(setcache *c, const sc_ident *id, sc_cell *cl)
{
    sc_shard *sh = shard_of(c, id->ehash);
    setcache__br_wrlock(&sh->lock);
    sc_entity *e = cl->ent;
    if (e) {
        if (cl->prev) {
            cl->prev->next = cl->next;
        } else {
            e->cells = cl->next;
        }
        if (cl->next) {
            cl->next->prev = cl->prev;
        }
        cl->ent = NULL;
        cl->next = cl->prev = NULL;
        atomic_store_explicit(&cl->attached, false, memory_order_relaxed);
    }
    setcache__br_wrunlock(&sh->lock);
}
