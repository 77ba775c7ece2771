/*
 * snap.c - entity snapshots: an entity's stored values as they were at one
 * moment, read with no lock (G11).
 *
 * Owns: c->snaps: the lists of open snapshots (closed by setcache_close if
 * the caller did not), one per read slot so that threads opening snapshots
 * don't share a lock; each under its own mutex (taken alone). A snapshot holds a
 * reference to the view the cache had when it was opened (cache.c copies
 * the slots before changing a view a snapshot shares), or, when the entity
 * could not be installed, a view of its own made from the rows of a load.
 * Every install of the cache puts one transaction's changes to an entity in
 * place under one hold of the shard's lock, so a view never holds part of
 * a transaction.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct setcache_snapshot {
    setcache *c;
    sc_eview *view;
    struct setcache_snapshot *next, *prev; /* in its slot's list, under its mutex */
    int slot;                              /* c->snaps.slot[slot] */
    const char *type, *eid;                /* the entity: in data */
    char data[];                           /* type NUL id NUL */
};

/* The view of a loaded entity, or of the rows of a load that could not be
 * installed (the entity changed under every try). */
static int take_view(setcache *c, sc_ident *id, sc_eview **out)
{
    for (int round = 0; round < SC_READ_ROUNDS; round++) {
        if (setcache__view_share(c, id, out)) {
            setcache__count_fast_hit(c);
            return SETCACHE_OK;
        }
        if (round == 0) {
            setcache__count(c, SC_ST_MISSES, 1);
        }
        sc_etable rows = {0};
        int rc = setcache__ensure_loaded(c, id, &rows);
        if (rc != SETCACHE_OK) {
            return rc;
        }
        if (rows.slot) {
            sc_eview *v = setcache__view_new();
            if (!v) {
                setcache__et_free(&rows);
                return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
            }
            setcache__et_take(&v->t, &rows);
            *out = v;
            return SETCACHE_OK;
        }
    }
    return setcache__fail(SETCACHE_ERR_DB, "entity %s/%s changed too often to be loaded", id->type,
                          id->id);
}

int setcache_snapshot_open(setcache *c, const char *entity_type, const char *entity_id,
                           setcache_snapshot **out)
{
    if (!out) {
        return setcache__fail(SETCACHE_ERR_ARG, "out is NULL");
    }
    *out = NULL;
    if (!c) {
        return setcache__fail(SETCACHE_ERR_ARG, "handle is NULL");
    }
    sc_ident id; /* fully validated on the way to the database only */
    int rc = setcache__ident(&id, entity_type, entity_id, NULL);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    if (atomic_load(&c->closing)) {
        return setcache__fail(SETCACHE_ERR_CLOSED, "handle is closing");
    }
    setcache_snapshot *s = calloc(1, sizeof *s + id.tlen + id.ilen + 2);
    if (!s) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    char *t = s->data, *i = t + id.tlen + 1;
    memcpy(t, entity_type, id.tlen + 1);
    memcpy(i, entity_id, id.ilen + 1);
    s->type = t;
    s->eid = i;
    s->c = c;
    rc = take_view(c, &id, &s->view);
    if (rc != SETCACHE_OK) {
        free(s);
        return rc;
    }
    s->slot = setcache__rslot();
    sc_snapslot *sl = &c->snaps.slot[s->slot];
    pthread_mutex_lock(&sl->mu);
    s->next = sl->list;
    if (s->next) {
        s->next->prev = s;
    }
    sl->list = s;
    sl->n++;
    pthread_mutex_unlock(&sl->mu);
    *out = s;
    return SETCACHE_OK;
}

/* Answer a read of key from the snapshot: its stored value, else the key's
 * default. */
static int snap_read(setcache_snapshot *s, const char *key, sc_read *r)
{
    if (!s || !key) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is NULL", s ? "key" : "snapshot");
    }
    size_t klen = strnlen(key, SETCACHE_MAX_KEY_LEN + 1);
    if (klen > 0 && klen <= SETCACHE_MAX_KEY_LEN) {
        unsigned khash = setcache__hash(key, klen);
        const sc_entry *en = setcache__et_find(&s->view->t, key, klen, khash);
        if (en && !SC_TOMB(en)) { /* only valid keys are ever stored */
            setcache__count_fast_hit(s->c);
            return setcache__fill_entry(en, r);
        }
    }
    sc_ident kid;
    int rc = setcache__ident_key(s->c, &kid, s->type, s->eid, key);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    return setcache__read_default(s->c, &kid, r); /* validates the key first */
}

int setcache_snapshot_get_int(setcache_snapshot *s, const char *key, int64_t *out)
{
    if (!out) {
        return setcache__fail(SETCACHE_ERR_ARG, "out is NULL");
    }
    sc_read r = {.want = SC_WANT_INT};
    int rc = snap_read(s, key, &r);
    if (rc == SETCACHE_OK) {
        *out = r.i;
    }
    return rc;
}

int setcache_snapshot_get_double(setcache_snapshot *s, const char *key, double *out)
{
    if (!out) {
        return setcache__fail(SETCACHE_ERR_ARG, "out is NULL");
    }
    sc_read r = {.want = SC_WANT_DOUBLE};
    int rc = snap_read(s, key, &r);
    if (rc == SETCACHE_OK) {
        *out = r.d;
    }
    return rc;
}

int setcache_snapshot_get_bool(setcache_snapshot *s, const char *key, bool *out)
{
    if (!out) {
        return setcache__fail(SETCACHE_ERR_ARG, "out is NULL");
    }
    sc_read r = {.want = SC_WANT_BOOL};
    int rc = snap_read(s, key, &r);
    if (rc == SETCACHE_OK) {
        *out = r.b;
    }
    return rc;
}

int setcache_snapshot_get_string(setcache_snapshot *s, const char *key, char *buf, size_t cap,
                                 size_t *len)
{
    sc_read r = {.want = SC_WANT_STRING, .buf = buf, .cap = cap};
    int rc = snap_read(s, key, &r);
    if (len && (rc == SETCACHE_OK || rc == SETCACHE_ERR_SPACE)) {
        *len = r.len;
    }
    return rc;
}

static int cmp_pair(const void *a, const void *b)
{
    return strcmp(((const sc_pair *)a)->key, ((const sc_pair *)b)->key);
}

int setcache_snapshot_foreach(setcache_snapshot *s,
                              int (*fn)(void *arg, const char *key, const char *value,
                                        bool is_default),
                              void *arg)
{
    if (!s || !fn) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is NULL", s ? "fn" : "snapshot");
    }
    sc_pair *pairs = NULL;
    size_t n = 0;
    int rc = setcache__et_pairs(&s->view->t, &pairs, &n);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    size_t cap = n;
    rc = setcache__defs_add_defaults(s->c, s->type, &pairs, &n, &cap);
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

void setcache_snapshot_close(setcache_snapshot *s)
{
    if (!s) {
        return;
    }
    sc_snapslot *sl = &s->c->snaps.slot[s->slot];
    pthread_mutex_lock(&sl->mu);
    if (s->prev) {
        s->prev->next = s->next;
    } else {
        sl->list = s->next;
    }
    if (s->next) {
        s->next->prev = s->prev;
    }
    sl->n--;
    pthread_mutex_unlock(&sl->mu);
    setcache__view_unref(s->view);
    free(s);
}

void setcache__snaps_init(setcache *c)
{
    for (int i = 0; i < SC_RSLOTS; i++) {
        pthread_mutex_init(&c->snaps.slot[i].mu, NULL);
    }
}

/* Free the snapshots the caller left open. own_process as in
 * setcache__cache_destroy. */
void setcache__snaps_destroy(setcache *c, bool own_process)
{
    size_t open = 0;
    for (int i = 0; i < SC_RSLOTS; i++) {
        sc_snapslot *sl = &c->snaps.slot[i];
        open += sl->n;
        for (setcache_snapshot *s = sl->list, *n; s; s = n) {
            n = s->next;
            setcache__view_unref(s->view);
            free(s);
        }
        sl->list = NULL;
        sl->n = 0;
        if (own_process) {
            pthread_mutex_destroy(&sl->mu);
        }
    }
    if (open) {
        setcache__log(c, SETCACHE_LOG_WARN, "setcache_close: %zu snapshots were still open; closed",
                      open);
    }
}
