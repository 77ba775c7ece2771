/*
 * read.c - the public reads: typed getters and setcache_dup_string, each
 * answered by setcache__read_id (load.c): a lookup in the cache, then (on a
 * miss) one shared load, then the key's default; setcache_foreach, a
 * snapshot of the entity visited in key order (snap.c).
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

/* A snapshot of the entity (loaded if need be), visited in key order. */
int setcache_foreach(setcache *c, const char *entity_type, const char *entity_id,
                     int (*fn)(void *arg, const char *key, const char *value, bool is_default),
                     void *arg)
{
    if (!c || !fn) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is NULL", c ? "fn" : "handle");
    }
    setcache_snapshot *s;
    int rc = setcache_snapshot_open(c, entity_type, entity_id, &s);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    rc = setcache_snapshot_foreach(s, fn, arg);
    setcache_snapshot_close(s);
    return rc;
}
