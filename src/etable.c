/*
 * etable.c - the per-entity table of entries: open addressing, linear
 * probing, one pointer a slot (see sc_etable in internal.h).
 *
 * Owns: the slot arrays and, through them, the entries they point to. No
 * locks: a table is either detached (being filled by one thread) or inside
 * an entity, guarded by its shard's lock.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* The smallest power of two that holds n entries at most 3/4 full. */
static uint32_t cap_for(size_t n)
{
    uint32_t cap = 4;
    while ((size_t)cap * 3 < n * 4) {
        cap *= 2;
    }
    return cap;
}

static void place(sc_entry **slot, uint32_t cap, sc_entry *e)
{
    uint32_t mask = cap - 1;
    uint32_t i = e->hash & mask;
    while (slot[i]) {
        i = (i + 1) & mask;
    }
    slot[i] = e;
}

/* Make room for n entries in all, without moving again before then. */
int setcache__et_reserve(sc_etable *t, size_t n)
{
    if (n > UINT32_MAX / 2) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "too many settings in one entity");
    }
    if (t->cap && (size_t)t->cap * 3 >= n * 4) {
        return SETCACHE_OK;
    }
    uint32_t cap = cap_for(n);
    sc_entry **slot = calloc(cap, sizeof *slot);
    if (!slot) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < t->cap; i++) {
        if (t->slot[i]) {
            place(slot, cap, t->slot[i]);
        }
    }
    free(t->slot);
    t->slot = slot;
    t->cap = cap;
    return SETCACHE_OK;
}

sc_entry *setcache__et_find_str(const sc_etable *t, const char *key)
{
    size_t klen = strlen(key);
    return setcache__et_find(t, key, klen, setcache__hash(key, klen));
}

/*
 * Add e (its hash set), or replace the entry with the same key: the one
 * replaced goes to *replaced (NULL if none) for the caller to free. On
 * failure (no memory) the table is unchanged and e not taken.
 */
int setcache__et_put(sc_etable *t, sc_entry *e, sc_entry **replaced)
{
    *replaced = NULL;
    if (t->cap) {
        uint32_t mask = t->cap - 1;
        for (uint32_t i = e->hash & mask; t->slot[i]; i = (i + 1) & mask) {
            sc_entry *o = t->slot[i];
            if (o->hash == e->hash && o->klen == e->klen &&
                memcmp(o->data, e->data, e->klen) == 0) {
                t->slot[i] = e;
                *replaced = o;
                return SETCACHE_OK;
            }
        }
    }
    if (t->cap == 0 || ((size_t)t->count + 1) * 4 > (size_t)t->cap * 3) {
        int rc = setcache__et_reserve(t, t->cap ? (size_t)t->cap * 3 / 4 + 1 : 1);
        if (rc != SETCACHE_OK) {
            return rc;
        }
    }
    place(t->slot, t->cap, e);
    t->count++;
    return SETCACHE_OK;
}

/* Drop one reference to an entry; the last frees it. An entry held once is
 * held by one table only, which no other thread can copy now: it is freed
 * without an atomic read-modify-write. */
void setcache__entry_unref(sc_entry *e)
{
    if (e && (atomic_load_explicit(&e->refs, memory_order_acquire) == 1 ||
              atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)) {
        free(e);
    }
}

/* Release every entry and the slots; the table is empty again. */
void setcache__et_free(sc_etable *t)
{
    for (uint32_t i = 0; i < t->cap; i++) {
        setcache__entry_unref(t->slot[i]);
    }
    free(t->slot);
    memset(t, 0, sizeof *t);
}

/* Move src's entries into dst (empty before); src is left empty. */
void setcache__et_take(sc_etable *dst, sc_etable *src)
{
    *dst = *src;
    memset(src, 0, sizeof *src);
}

/* A new entry (or tombstone) with its typed forms parsed once. malloc'd;
 * NULL when out of memory. */
sc_entry *setcache__entry_new(const char *key, size_t klen, const char *value, size_t vlen,
                              int64_t version, bool tomb)
{
    if (tomb) {
        vlen = 0;
    }
    sc_entry *e = malloc(offsetof(sc_entry, data) + klen + 1 + vlen + 1);
    if (!e) {
        return NULL;
    }
    memset(e, 0, offsetof(sc_entry, data));
    atomic_init(&e->refs, 1);
    e->hash = setcache__hash(key, klen);
    memcpy(e->data, key, klen);
    e->data[klen] = '\0';
    e->klen = (uint8_t)klen;
    e->version = version;
    e->vlen = (uint32_t)vlen;
    char *v = e->data + klen + 1;
    if (vlen) {
        memcpy(v, value, vlen);
    }
    v[vlen] = '\0';
    if (tomb) {
        e->flags = SC_E_TOMB;
        return e;
    }
    sc_parsed p;
    setcache__parse_all(v, &p);
    if (p.ok & SC_PARSED_INT) {
        e->flags |= SC_E_INT;
        e->num.i = p.i;
    } else if (p.ok & SC_PARSED_DOUBLE) {
        e->num.d = p.d;
    }
    if (p.ok & SC_PARSED_DOUBLE) {
        e->flags |= SC_E_DOUBLE;
    }
    if (p.ok & SC_PARSED_BOOL) {
        e->flags |= SC_E_BOOL | (p.b ? SC_E_TRUE : 0);
    }
    return e;
}

/* ---- views ---- */

sc_eview *setcache__view_new(void)
{
    sc_eview *v = calloc(1, sizeof *v);
    if (v) {
        atomic_init(&v->refs, 1);
    }
    return v;
}

/* A new view (one reference) with the same entries, each held once more. */
sc_eview *setcache__view_clone(const sc_eview *v)
{
    sc_eview *n = setcache__view_new();
    if (!n) {
        return NULL;
    }
    if (v->t.cap) {
        n->t.slot = malloc(v->t.cap * sizeof *n->t.slot);
        if (!n->t.slot) {
            free(n);
            return NULL;
        }
        memcpy(n->t.slot, v->t.slot, v->t.cap * sizeof *n->t.slot);
        n->t.cap = v->t.cap;
        n->t.count = v->t.count;
        for (uint32_t i = 0; i < n->t.cap; i++) {
            if (n->t.slot[i]) {
                atomic_fetch_add_explicit(&n->t.slot[i]->refs, 1, memory_order_relaxed);
            }
        }
    }
    return n;
}

/* Drop one reference to a view; the last releases its entries. */
void setcache__view_unref(sc_eview *v)
{
    if (v && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1) {
        setcache__et_free(&v->t);
        free(v);
    }
}

/* Copy every stored (not deleted) setting of a table into a new array. */
int setcache__et_pairs(const sc_etable *t, sc_pair **out, size_t *n)
{
    size_t cnt = t->count;
    sc_pair *p = calloc(cnt ? cnt : 1, sizeof *p);
    if (!p) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    size_t k = 0;
    for (uint32_t i = 0; i < t->cap; i++) {
        const sc_entry *e = t->slot[i];
        if (!e || SC_TOMB(e)) {
            continue;
        }
        p[k].key = strdup(e->data);
        p[k].value = strdup(SC_VAL(e));
        k++;
        if (!p[k - 1].key || !p[k - 1].value) {
            for (size_t j = 0; j < k; j++) {
                free(p[j].key);
                free(p[j].value);
            }
            free(p);
            return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        }
    }
    *out = p;
    *n = k;
    return SETCACHE_OK;
}
