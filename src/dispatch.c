/*
 * dispatch.c - subscriptions and the dispatch thread that runs callbacks.
 *
 * Owns: the subscriptions (c->dispatch.subs_by_id and the filter index c->dispatch.subidx,
 * under subs_mu) and the bounded event queue with its per-setting order map
 * (c->dq_*, c->dispatch.seen, under dq_mu). Lock order: subs_mu and dq_mu are never
 * held together, nor with a shard lock. Callbacks run on the dispatch thread
 * with no lock held.
 *
 * Matching costs eight hash lookups per event whatever the number of
 * subscriptions: each subscription is indexed under its filter pattern (which
 * of type/id/key it names), and an event looks up the eight patterns it could
 * match.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEEN_TTL_MS 60000.0

/* Pattern key: mask byte, then the named parts, each NUL-terminated. */
static size_t pattern(char *out, int mask, const char *t, const char *i, const char *k)
{
    size_t n = 0;
    out[n++] = (char)('0' + mask);
    const char *parts[3] = {t, i, k};
    for (int b = 0; b < 3; b++) {
        if (mask & (1 << b)) {
            size_t l = strlen(parts[b]);
            memcpy(out + n, parts[b], l + 1);
            n += l + 1;
        }
    }
    return n;
}

#define SC_PATTERN_MAX (2 + SETCACHE_MAX_TYPE_LEN + SETCACHE_MAX_ID_LEN + SETCACHE_MAX_KEY_LEN + 3)

static int sub_mask(const sc_sub *s)
{
    return (s->type ? 1 : 0) | (s->eid ? 2 : 0) | (s->key ? 4 : 0);
}

/* Append to a growing array; false when out of memory (nothing changed). */
static bool push_sub(sc_sub ***v, size_t *n, size_t *cap, sc_sub *s)
{
    if (*n == *cap && !setcache__grow(v, cap, 8, sizeof **v)) {
        return false;
    }
    (*v)[(*n)++] = s;
    return true;
}

/* Collect the active subscriptions an event matches (all of them for a
 * RESYNC), taking a reference on each. Caller holds subs_mu. */
static size_t match_locked(setcache *c, const setcache_change *ch, sc_sub ***out)
{
    size_t n = 0, cap = 0;
    sc_sub **v = NULL;
    if (ch->kind == SETCACHE_CHANGE_RESYNC) {
        sc_sub *s, *tmp;
        HASH_ITER(hh, c->dispatch.subs_by_id, s, tmp)
        {
            if (!push_sub(&v, &n, &cap, s)) {
                break; /* out of memory: deliver to those collected */
            }
        }
    } else {
        char key[SC_PATTERN_MAX];
        for (int mask = 0; mask < 8; mask++) {
            size_t kl = pattern(key, mask, ch->entity_type, ch->entity_id, ch->key);
            sc_subidx *ix;
            HASH_FIND(hh, c->dispatch.subidx, key, kl, ix);
            if (!ix) {
                continue;
            }
            for (size_t j = 0; j < ix->n && push_sub(&v, &n, &cap, ix->subs[j]); j++) {
            }
        }
    }
    for (size_t j = 0; j < n; j++) {
        v[j]->refs++;
    }
    *out = v;
    return n;
}

bool setcache__has_subscribers(setcache *c)
{
    return atomic_load_explicit(&c->dispatch.nsubs, memory_order_acquire) > 0;
}

bool setcache__is_subscribed(setcache *c, const char *type, const char *id, const char *key)
{
    if (!setcache__has_subscribers(c)) {
        return false;
    }
    bool hit = false;
    char k[SC_PATTERN_MAX];
    pthread_mutex_lock(&c->dispatch.subs_mu);
    for (int mask = 0; mask < 8 && !hit; mask++) {
        if ((mask & 4) && !key) {
            /* no key: any subscription naming a key of this entity counts */
            sc_subidx *ix, *tmp;
            HASH_ITER(hh, c->dispatch.subidx, ix, tmp)
            {
                if (ix->pattern[0] == (char)('0' + mask) && ix->n > 0) {
                    const char *p = ix->pattern + 1;
                    bool ok = true;
                    if (mask & 1) {
                        ok = strcmp(p, type) == 0;
                        p += strlen(p) + 1;
                    }
                    if (ok && (mask & 2)) {
                        ok = strcmp(p, id) == 0;
                    }
                    if (ok) {
                        hit = true;
                        break;
                    }
                }
            }
            continue;
        }
        size_t kl = pattern(k, mask, type, id, key);
        sc_subidx *ix;
        HASH_FIND(hh, c->dispatch.subidx, k, kl, ix);
        hit = ix && ix->n > 0;
    }
    pthread_mutex_unlock(&c->dispatch.subs_mu);
    return hit;
}

static sc_event *event_new(setcache_change_kind kind, const char *t, const char *i, const char *k,
                           const char *v, const char *old, int64_t version, bool local)
{
    const char *parts[5] = {t, i, k, v, old};
    size_t len[5], total = 0;
    for (int j = 0; j < 5; j++) {
        len[j] = parts[j] ? strlen(parts[j]) + 1 : 0;
        total += len[j];
    }
    sc_event *e = malloc(sizeof *e + total);
    if (!e) {
        return NULL;
    }
    memset(e, 0, sizeof *e);
    const char **dst[5] = {&e->ch.entity_type, &e->ch.entity_id, &e->ch.key, &e->ch.value,
                           &e->ch.old_value};
    char *p = e->data;
    for (int j = 0; j < 5; j++) {
        if (parts[j]) {
            memcpy(p, parts[j], len[j]);
            *dst[j] = p;
            p += len[j];
        }
    }
    e->ch.kind = kind;
    e->ch.version = version;
    e->ch.local = local;
    return e;
}

static void queue_clear_locked(setcache *c)
{
    sc_event *e = c->dispatch.head;
    while (e) {
        sc_event *n = e->next;
        free(e);
        e = n;
    }
    c->dispatch.head = c->dispatch.tail = NULL;
    c->dispatch.len = 0;
}

static void push_locked(setcache *c, sc_event *e)
{
    if (c->dispatch.len >= c->dq_max && e->ch.kind != SETCACHE_CHANGE_RESYNC) {
        /* overflow: what is pending collapses into one RESYNC */
        queue_clear_locked(c);
        sc_event *r = event_new(SETCACHE_CHANGE_RESYNC, NULL, NULL, NULL, NULL, NULL, 0, false);
        setcache__count(c, SC_ST_RESYNCS, 1);
        free(e);
        e = r;
        if (!e) {
            c->dispatch.resync_pending = true;
            pthread_cond_signal(&c->dispatch.cv);
            return;
        }
    }
    if (c->dispatch.tail) {
        c->dispatch.tail->next = e;
    } else {
        c->dispatch.head = e;
    }
    c->dispatch.tail = e;
    c->dispatch.len++;
    pthread_cond_signal(&c->dispatch.cv);
}

/* Queue a change for the subscribers it matches: only if its version is
 * newer than the last one queued for that setting (order and uniqueness). */
void setcache__emit(setcache *c, setcache_change_kind kind, const char *type, const char *id,
                    const char *key, const char *value, const char *old, int64_t version,
                    bool local)
{
    if (!setcache__is_subscribed(c, type, id, key)) {
        return;
    }
    sc_event *e = event_new(kind, type, id, key, kind == SETCACHE_CHANGE_DELETE ? NULL : value, old,
                            version, local);
    if (!e) {
        setcache__emit_resync(c); /* can't name the change: announce a gap */
        return;
    }
    size_t tl = strlen(type), il = strlen(id), kl = strlen(key);
    char k[SETCACHE_MAX_TYPE_LEN + SETCACHE_MAX_ID_LEN + SETCACHE_MAX_KEY_LEN + 3];
    memcpy(k, type, tl + 1);
    memcpy(k + tl + 1, id, il + 1);
    memcpy(k + tl + il + 2, key, kl);
    size_t klen = tl + il + 2 + kl;
    uint64_t order = 2 * (uint64_t)version + (kind == SETCACHE_CHANGE_DELETE ? 1 : 0);
    pthread_mutex_lock(&c->dispatch.mu);
    sc_seen *s;
    HASH_FIND(hh, c->dispatch.seen, k, klen, s);
    if (s && s->order >= order) {
        pthread_mutex_unlock(&c->dispatch.mu);
        free(e);
        return;
    }
    if (!s) {
        s = malloc(sizeof *s + klen);
        if (s) {
            memcpy(s->k, k, klen);
            s->klen = (uint16_t)klen;
            HASH_ADD_KEYPTR(hh, c->dispatch.seen, s->k, s->klen, s);
            if (!s->hh.tbl) {
                free(s);
                s = NULL;
            }
        }
    }
    if (s) {
        s->order = order;
        s->at_ms = setcache__mono_ms();
    }
    push_locked(c, e);
    pthread_mutex_unlock(&c->dispatch.mu);
}

void setcache__emit_resync(setcache *c)
{
    if (!setcache__has_subscribers(c)) {
        return;
    }
    sc_event *e = event_new(SETCACHE_CHANGE_RESYNC, NULL, NULL, NULL, NULL, NULL, 0, false);
    pthread_mutex_lock(&c->dispatch.mu);
    if (e && c->dispatch.tail && c->dispatch.tail->ch.kind == SETCACHE_CHANGE_RESYNC) {
        free(e); /* one RESYNC already waits at the end: it covers this gap too */
    } else if (e) {
        push_locked(c, e);
    } else {
        queue_clear_locked(c); /* out of memory: still announce the gap */
        c->dispatch.resync_pending = true;
        pthread_cond_signal(&c->dispatch.cv);
    }
    pthread_mutex_unlock(&c->dispatch.mu);
}

static void sub_free(sc_sub *s)
{
    free(s->type);
    free(s->eid);
    free(s->key);
    free(s);
}

static void release_locked(setcache *c, sc_sub *s)
{
    if (--s->refs == 0 && !s->active) {
        (void)c;
        sub_free(s);
    }
}

static void prune_seen_locked(setcache *c, double now)
{
    sc_seen *s, *tmp;
    HASH_ITER(hh, c->dispatch.seen, s, tmp)
    {
        if (now - s->at_ms > SEEN_TTL_MS) {
            HASH_DEL(c->dispatch.seen, s);
            free(s);
        }
    }
}

static void *dispatch_main(void *arg)
{
    setcache *c = arg;
    double last_prune = setcache__mono_ms();
    for (;;) {
        pthread_mutex_lock(&c->dispatch.mu);
        while (!c->dispatch.head && !c->dispatch.resync_pending && !c->dispatch.stop) {
            struct timespec ts = setcache__deadline(1000);
            pthread_cond_timedwait(&c->dispatch.cv, &c->dispatch.mu, &ts);
            double now = setcache__mono_ms();
            if (now - last_prune > 1000) {
                prune_seen_locked(c, now);
                last_prune = now;
            }
        }
        if (c->dispatch.stop) {
            pthread_mutex_unlock(&c->dispatch.mu);
            break;
        }
        sc_event stack_resync; /* announced without allocating */
        sc_event *e;
        if (c->dispatch.resync_pending) {
            c->dispatch.resync_pending = false;
            memset(&stack_resync, 0, sizeof stack_resync);
            stack_resync.ch.kind = SETCACHE_CHANGE_RESYNC;
            e = &stack_resync;
        } else {
            e = c->dispatch.head;
            c->dispatch.head = e->next;
            if (!c->dispatch.head) {
                c->dispatch.tail = NULL;
            }
            c->dispatch.len--;
        }
        pthread_mutex_unlock(&c->dispatch.mu);

        sc_sub **subs = NULL;
        pthread_mutex_lock(&c->dispatch.subs_mu);
        size_t n = match_locked(c, &e->ch, &subs);
        pthread_mutex_unlock(&c->dispatch.subs_mu);
        for (size_t j = 0; j < n; j++) {
            sc_sub *s = subs[j];
            pthread_mutex_lock(&c->dispatch.subs_mu);
            bool run = s->active;
            if (run) {
                c->dispatch.running = s;
            }
            pthread_mutex_unlock(&c->dispatch.subs_mu);
            if (run) {
                s->fn(s->arg, &e->ch);
                setcache__count(c, SC_ST_EVENTS, 1);
            }
            pthread_mutex_lock(&c->dispatch.subs_mu);
            c->dispatch.running = NULL;
            pthread_cond_broadcast(&c->dispatch.subs_cv);
            release_locked(c, s);
            pthread_mutex_unlock(&c->dispatch.subs_mu);
        }
        free(subs);
        if (e != &stack_resync) {
            free(e);
        }
    }
    return NULL;
}

bool setcache__on_dispatch_thread(setcache *c)
{
    return c->dispatch.started && pthread_equal(pthread_self(), c->dispatch.thread);
}

int setcache__dispatch_start(setcache *c)
{
    if (pthread_create(&c->dispatch.thread, NULL, dispatch_main, c) != 0) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "cannot start the dispatch thread");
    }
    c->dispatch.started = true;
    return SETCACHE_OK;
}

void setcache__dispatch_init(setcache *c)
{
    pthread_mutex_init(&c->dispatch.subs_mu, NULL);
    pthread_mutex_init(&c->dispatch.mu, NULL);
    setcache__cond_init(&c->dispatch.subs_cv);
    setcache__cond_init(&c->dispatch.cv);
}

/* Join the dispatch thread (events still queued are dropped). */
void setcache__dispatch_stop(setcache *c)
{
    if (c->dispatch.started && getpid() == c->pid) { /* none runs in a forked child */
        pthread_mutex_lock(&c->dispatch.mu);
        c->dispatch.stop = true;
        pthread_cond_broadcast(&c->dispatch.cv);
        pthread_mutex_unlock(&c->dispatch.mu);
        pthread_join(c->dispatch.thread, NULL);
    }
    c->dispatch.started = false;
}

/* After setcache__dispatch_stop: free the queue, the order map and every
 * subscription; own_process as in setcache__cache_destroy. */
void setcache__dispatch_destroy(setcache *c, bool own_process)
{
    queue_clear_locked(c);
    sc_seen *s, *st;
    HASH_ITER(hh, c->dispatch.seen, s, st)
    {
        HASH_DEL(c->dispatch.seen, s);
        free(s);
    }
    sc_subidx *ix, *it;
    HASH_ITER(hh, c->dispatch.subidx, ix, it)
    {
        HASH_DEL(c->dispatch.subidx, ix);
        free(ix->subs);
        free(ix);
    }
    sc_sub *sb, *sbt;
    HASH_ITER(hh, c->dispatch.subs_by_id, sb, sbt)
    {
        HASH_DEL(c->dispatch.subs_by_id, sb);
        sub_free(sb);
    }
    if (own_process) {
        pthread_mutex_destroy(&c->dispatch.subs_mu);
        pthread_cond_destroy(&c->dispatch.subs_cv);
        pthread_mutex_destroy(&c->dispatch.mu);
        pthread_cond_destroy(&c->dispatch.cv);
    }
}

/* ---- public ---- */

static char *dup_filter(const char *s, bool *oom)
{
    if (!s) {
        return NULL;
    }
    char *d = strdup(s);
    if (!d) {
        *oom = true;
    }
    return d;
}

/* Filters name a valid type, id and key, or NULL for any. */
static int check_filters(const char *entity_type, const char *entity_id, const char *key)
{
    size_t tl, il, kl;
    int rc = SETCACHE_OK;
    if (entity_type) {
        rc = setcache__check_identity(entity_type, NULL, NULL, &tl, &il, &kl);
    }
    if (rc == SETCACHE_OK && (entity_id || key)) {
        rc = setcache__check_identity("x", entity_id, key, &tl, &il, &kl);
    }
    return rc;
}

/* A new subscription with copies of its filters; NULL when out of memory. */
static sc_sub *sub_new(const char *entity_type, const char *entity_id, const char *key,
                       setcache_change_fn fn, void *arg)
{
    sc_sub *s = calloc(1, sizeof *s);
    if (!s) {
        return NULL;
    }
    bool oom = false;
    s->type = dup_filter(entity_type, &oom);
    s->eid = dup_filter(entity_id, &oom);
    s->key = dup_filter(key, &oom);
    s->fn = fn;
    s->arg = arg;
    s->active = true;
    if (oom) {
        sub_free(s);
        return NULL;
    }
    return s;
}

/* The filter index entry for pattern pk (made if new), with room for one
 * more subscription; NULL when out of memory. */
static sc_subidx *index_slot_locked(setcache *c, const char *pk, size_t pl)
{
    sc_subidx *ix;
    HASH_FIND(hh, c->dispatch.subidx, pk, pl, ix);
    if (!ix) {
        ix = calloc(1, sizeof *ix + pl);
        if (!ix) {
            return NULL;
        }
        memcpy(ix->pattern, pk, pl);
        ix->plen = (uint16_t)pl;
        HASH_ADD_KEYPTR(hh, c->dispatch.subidx, ix->pattern, ix->plen, ix);
        if (!ix->hh.tbl) {
            free(ix);
            return NULL;
        }
    }
    if (ix->n == ix->cap) {
        setcache__grow(&ix->subs, &ix->cap, 4, sizeof *ix->subs); /* full if it fails */
    }
    return ix->subs && ix->n < ix->cap ? ix : NULL;
}

int setcache__subscribe(setcache *c, const char *entity_type, const char *entity_id,
                        const char *key, setcache_change_fn fn, void *arg, uint64_t *id)
{
    if (!c || !fn || !id) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is NULL", !c ? "handle" : !fn ? "fn" : "id");
    }
    int rc = check_filters(entity_type, entity_id, key);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    if (atomic_load(&c->closing)) {
        return setcache__fail(SETCACHE_ERR_CLOSED, "handle is closing");
    }
    sc_sub *s = sub_new(entity_type, entity_id, key, fn, arg);
    if (!s) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    char pk[SC_PATTERN_MAX];
    size_t pl = pattern(pk, sub_mask(s), s->type, s->eid, s->key);
    pthread_mutex_lock(&c->dispatch.subs_mu);
    sc_subidx *ix = index_slot_locked(c, pk, pl);
    if (ix) {
        s->id = ++c->dispatch.next_sub_id;
        HASH_ADD(hh, c->dispatch.subs_by_id, id, sizeof s->id, s);
    }
    if (ix && s->hh.tbl) {
        ix->subs[ix->n++] = s;
        atomic_fetch_add_explicit(&c->dispatch.nsubs, 1, memory_order_release);
        *id = s->id;
    } else {
        rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_unlock(&c->dispatch.subs_mu);
    if (rc != SETCACHE_OK) {
        sub_free(s);
    }
    return rc;
}

int setcache_unsubscribe(setcache *c, uint64_t id)
{
    if (!c) {
        return setcache__fail(SETCACHE_ERR_ARG, "handle is NULL");
    }
    pthread_mutex_lock(&c->dispatch.subs_mu);
    sc_sub *s;
    HASH_FIND(hh, c->dispatch.subs_by_id, &id, sizeof id, s);
    if (!s) {
        pthread_mutex_unlock(&c->dispatch.subs_mu);
        return setcache__fail(SETCACHE_ERR_ARG, "no subscription %llu", (unsigned long long)id);
    }
    HASH_DEL(c->dispatch.subs_by_id, s);
    char pk[SC_PATTERN_MAX];
    size_t pl = pattern(pk, sub_mask(s), s->type, s->eid, s->key);
    sc_subidx *ix;
    HASH_FIND(hh, c->dispatch.subidx, pk, pl, ix);
    if (ix) {
        for (size_t j = 0; j < ix->n; j++) {
            if (ix->subs[j] == s) {
                ix->subs[j] = ix->subs[--ix->n];
                break;
            }
        }
        if (ix->n == 0) {
            HASH_DEL(c->dispatch.subidx, ix);
            free(ix->subs);
            free(ix);
        }
    }
    s->active = false;
    s->refs++; /* ours, so the dispatcher can't free it while we wait */
    atomic_fetch_sub_explicit(&c->dispatch.nsubs, 1, memory_order_release);
    if (!setcache__on_dispatch_thread(c)) {
        while (c->dispatch.running == s) {
            pthread_cond_wait(&c->dispatch.subs_cv, &c->dispatch.subs_mu);
        }
    }
    release_locked(c, s); /* frees it unless the dispatcher still holds it */
    pthread_mutex_unlock(&c->dispatch.subs_mu);
    return SETCACHE_OK;
}
