/*
 * read.c - the public reads: typed getters, setcache_dup_string and
 * setcache_foreach, each answered by setcache__read_id (load.c): a lookup in
 * the cache, then (on a miss) one shared load, then the key's default.
 *
 * Owns: nothing. Takes no lock itself: the cache, the loader and the
 * definitions take theirs, one at a time.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- reads ---- */

static int read_key(setcache *c, const char *type, const char *eid, const char *key, sc_read *r)
{
    sc_ident id;
    int rc = setcache__ident_key(c, &id, type, eid, key);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    return setcache__read_id(c, &id, r);
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

int setcache_get_int(setcache *c, const char *entity_type, const char *entity_id, const char *key,
                     int64_t *out)
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

int setcache_get_bool(setcache *c, const char *entity_type, const char *entity_id, const char *key,
                      bool *out)
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

/* Copy every stored setting of an entity (loading it if needed). */
static int snapshot_entity(setcache *c, sc_ident *id, sc_pair **out, size_t *n)
{
    for (int round = 0; round < SC_READ_ROUNDS; round++) {
        int rc = SETCACHE_OK;
        if (setcache__copy_loaded(c, id, out, n, &rc)) {
            return rc;
        }
        sc_etable rows = {0};
        rc = setcache__ensure_loaded(c, id, &rows);
        if (rc != SETCACHE_OK) {
            return rc;
        }
        if (rows.slot) {
            rc = setcache__et_pairs(&rows, out, n);
            setcache__et_free(&rows);
            return rc;
        }
    }
    return setcache__fail(SETCACHE_ERR_DB, "entity %s/%s changed too often to be loaded", id->type,
                          id->id);
}

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
    rc = snapshot_entity(c, &id, &pairs, &n);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    cap = n;
    /* Defaults of defined keys with no stored value. */
    rc = setcache__defs_add_defaults(c, entity_type, &pairs, &n, &cap);
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
