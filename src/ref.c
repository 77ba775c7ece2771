/*
 * ref.c - bound references: one setting named once, read through a cell the
 * cache keeps current (cell.c), with no hashing, no lock and no shared write.
 *
 * Owns: c->refs: the list of open refs (closed by setcache_close if the
 * caller did not), under c->refs.mu (taken alone). The read path takes no
 * lock: it reads the cell, and counts its hit in the calling thread's own
 * counter (stats.c); whatever the cell can't answer goes the plain read's way
 * (setcache__read_id), after which the cell is attached again if its entity
 * had gone.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Allocated on a 64-byte boundary: a typed read touches one cache line
 * (c and the cell's seq, state and typed forms). */
struct setcache_ref {
    setcache *c;
    sc_cell cell;                     /* what the fast path reads */
    struct setcache_ref *next, *prev; /* in c->refs.list, under c->refs.mu */
    sc_ident id;                      /* its strings in data */
    char data[];                      /* type NUL id NUL key NUL */
};

int setcache_ref_open(setcache *c, const char *entity_type, const char *entity_id, const char *key,
                      setcache_ref **out)
{
    if (!out) {
        return setcache__fail(SETCACHE_ERR_ARG, "out is NULL");
    }
    *out = NULL;
    sc_ident id;
    int rc = setcache__ident_key(c, &id, entity_type, entity_id, key);
    if (rc == SETCACHE_OK) {
        rc = setcache__ident_validate(&id);
    }
    if (rc != SETCACHE_OK) {
        return rc;
    }
    if (atomic_load(&c->closing)) {
        return setcache__fail(SETCACHE_ERR_CLOSED, "handle is closing");
    }
    size_t size = (sizeof(setcache_ref) + id.tlen + id.ilen + id.klen + 3 + 63) / 64 * 64;
    void *mem = NULL;
    setcache_ref *r = posix_memalign(&mem, 64, size) == 0 ? mem : NULL;
    if (!r) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    memset(r, 0, size);
    char *t = r->data, *i = t + id.tlen + 1, *k = i + id.ilen + 1;
    memcpy(t, entity_type, id.tlen + 1);
    memcpy(i, entity_id, id.ilen + 1);
    memcpy(k, key, id.klen + 1);
    setcache__ident(&r->id, t, i, k);
    r->id.validated = true;
    r->c = c;
    r->cell.key = k;
    r->cell.klen = id.klen;
    r->cell.khash = r->id.khash;
    /* resolve once: the entity is loaded (as a read would) and the cell
     * attached to it */
    rc = setcache__ensure_loaded(c, &r->id, NULL);
    if (rc != SETCACHE_OK) {
        free(r);
        return rc;
    }
    setcache__cell_attach(c, &r->id, &r->cell);
    pthread_mutex_lock(&c->refs.mu);
    r->next = c->refs.list;
    if (r->next) {
        r->next->prev = r;
    }
    c->refs.list = r;
    c->refs.n++;
    pthread_mutex_unlock(&c->refs.mu);
    *out = r;
    return SETCACHE_OK;
}

/* What the cell can't answer: a plain read, then attach the cell again if
 * its entity had gone (evicted, or not installed). Out of line: the fast
 * paths stay a few loads. */
__attribute__((noinline)) static int slow_read(setcache_ref *r, sc_read *rd)
{
    setcache *c = r->c;
    int rc = setcache__read_id(c, &r->id, rd);
    if (!atomic_load_explicit(&r->cell.attached, memory_order_relaxed) &&
        rc != SETCACHE_ERR_CLOSED) {
        setcache__cell_attach(c, &r->id, &r->cell);
    }
    return rc;
}

__attribute__((noinline)) static int slow_typed(setcache_ref *r, int want, void *out)
{
    if (!r || !out) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is NULL", r ? "out" : "ref");
    }
    sc_read rd = {.want = want};
    int rc = slow_read(r, &rd);
    if (rc == SETCACHE_OK) {
        if (want == SC_WANT_INT) {
            *(int64_t *)out = rd.i;
        } else if (want == SC_WANT_DOUBLE) {
            *(double *)out = rd.d;
        } else {
            *(bool *)out = rd.b;
        }
    }
    return rc;
}

int setcache_ref_get_int(setcache_ref *r, int64_t *out)
{
    if (r && out && setcache__cell_int(&r->cell, out)) {
        setcache__count_fast_hit(r->c);
        return SETCACHE_OK;
    }
    return slow_typed(r, SC_WANT_INT, out);
}

int setcache_ref_get_double(setcache_ref *r, double *out)
{
    if (r && out && setcache__cell_double(&r->cell, out)) {
        setcache__count_fast_hit(r->c);
        return SETCACHE_OK;
    }
    return slow_typed(r, SC_WANT_DOUBLE, out);
}

int setcache_ref_get_bool(setcache_ref *r, bool *out)
{
    if (r && out && setcache__cell_bool(&r->cell, out)) {
        setcache__count_fast_hit(r->c);
        return SETCACHE_OK;
    }
    return slow_typed(r, SC_WANT_BOOL, out);
}

__attribute__((noinline)) static int slow_string(setcache_ref *r, char *buf, size_t cap,
                                                 size_t *len)
{
    if (!r) {
        return setcache__fail(SETCACHE_ERR_ARG, "ref is NULL");
    }
    sc_read rd = {.want = SC_WANT_STRING, .buf = buf, .cap = cap};
    int rc = slow_read(r, &rd);
    if (len && (rc == SETCACHE_OK || rc == SETCACHE_ERR_SPACE)) {
        *len = rd.len;
    }
    return rc;
}

int setcache_ref_get_string(setcache_ref *r, char *buf, size_t cap, size_t *len)
{
    size_t n;
    if (r && setcache__cell_string(&r->cell, buf, cap, &n)) {
        setcache__count_fast_hit(r->c);
        if (len) {
            *len = n;
        }
        return SETCACHE_OK;
    }
    return slow_string(r, buf, cap, len);
}

static void ref_free(setcache_ref *r)
{
    setcache__cell_detach(r->c, &r->id, &r->cell);
    free(r);
}

void setcache_ref_close(setcache_ref *r)
{
    if (!r) {
        return;
    }
    setcache *c = r->c;
    pthread_mutex_lock(&c->refs.mu);
    if (r->prev) {
        r->prev->next = r->next;
    } else {
        c->refs.list = r->next;
    }
    if (r->next) {
        r->next->prev = r->prev;
    }
    c->refs.n--;
    pthread_mutex_unlock(&c->refs.mu);
    ref_free(r);
}

void setcache__refs_init(setcache *c)
{
    pthread_mutex_init(&c->refs.mu, NULL);
}

/* Free the refs the caller left open, after setcache__cache_destroy has
 * detached their cells (no shard lock is taken here). own_process as in
 * setcache__cache_destroy. */
void setcache__refs_destroy(setcache *c, bool own_process)
{
    if (c->refs.n) {
        setcache__log(c, SETCACHE_LOG_WARN, "setcache_close: %zu refs were still open; closed",
                      c->refs.n);
    }
    for (setcache_ref *r = c->refs.list, *n; r; r = n) {
        n = r->next;
        free(r);
    }
    c->refs.list = NULL;
    c->refs.n = 0;
    if (own_process) {
        pthread_mutex_destroy(&c->refs.mu);
    }
}
