/*
 * defs.c - key definitions: each (entity type, key) may have a type and a
 * default. Writes are checked against the type; reads with no stored value
 * answer from the default.
 *
 * Owns: c->defs.table, a uthash table under c->defs.lock (a read-mostly lock,
 * taken alone: never while a shard lock is held). A JSON default is checked
 * by the server on a pooled connection before any lock is taken.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void setcache__defs_init(setcache *c)
{
    setcache__br_init(&c->defs.lock);
}

/* Free every definition; the lock too when this is the process that made
 * it (in a forked child it may be held by a thread that does not exist). */
void setcache__defs_destroy(setcache *c, bool own_process)
{
    sc_def *d, *tmp;
    HASH_ITER(hh, c->defs.table, d, tmp)
    {
        HASH_DEL(c->defs.table, d);
        free(d->dflt);
        free(d);
    }
    if (own_process) {
        setcache__br_destroy(&c->defs.lock);
    }
}

typedef struct json_check {
    setcache *c;
    const char *text;
} json_check;

static int check_json_conn(void *arg, PGconn *conn)
{
    json_check *j = arg;
    const char *v[1] = {j->text};
    int rc;
    PGresult *r = setcache__exec(j->c, conn, "SELECT $1::json IS NOT NULL", 1, v, false, &rc);
    if (!r) {
        if (strcmp(setcache__sqlstate(), "22P02") == 0) {
            return setcache__fail(SETCACHE_ERR_TYPE, "default is not valid JSON");
        }
        return rc;
    }
    PQclear(r);
    return SETCACHE_OK;
}

int setcache_define(setcache *c, const char *entity_type, const char *key, setcache_type type,
                    const char *default_value)
{
    if (!c) {
        return setcache__fail(SETCACHE_ERR_ARG, "handle is NULL");
    }
    size_t tlen, ilen, klen;
    int rc = setcache__check_identity(entity_type, NULL, key, &tlen, &ilen, &klen);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    if (!key) {
        return setcache__fail(SETCACHE_ERR_ARG, "key is NULL");
    }
    if ((int)type < SETCACHE_STRING || (int)type > SETCACHE_JSON) {
        return setcache__fail(SETCACHE_ERR_ARG, "unknown type %d", (int)type);
    }
    sc_parsed p;
    memset(&p, 0, sizeof p);
    if (default_value) {
        size_t vlen = strnlen(default_value, c->max_value_len + 1);
        if (vlen > c->max_value_len || !setcache__valid_utf8(default_value, vlen)) {
            return setcache__fail(SETCACHE_ERR_ARG,
                                  "default must be valid UTF-8 of at most %zu bytes",
                                  c->max_value_len);
        }
        setcache__parse_all(default_value, &p);
        if ((type == SETCACHE_INT && !(p.ok & SC_PARSED_INT)) ||
            (type == SETCACHE_DOUBLE && !(p.ok & SC_PARSED_DOUBLE)) ||
            (type == SETCACHE_BOOL && !(p.ok & SC_PARSED_BOOL))) {
            return setcache__fail(SETCACHE_ERR_TYPE, "default '%.64s' is not a valid %s",
                                  default_value, setcache__type_name(type));
        }
        if (type == SETCACHE_JSON) {
            json_check j = {c, default_value};
            if ((rc = setcache__with_pool(c, check_json_conn, &j)) != SETCACHE_OK) {
                return rc;
            }
        }
    }
    size_t dklen = tlen + 1 + klen;
    sc_def *d = calloc(1, sizeof *d + dklen + 1);
    if (!d) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    memcpy(d->dkey, entity_type, tlen);
    memcpy(d->dkey + tlen + 1, key, klen);
    d->dklen = (uint16_t)dklen;
    d->type = type;
    d->p = p;
    if (default_value) {
        d->has_default = true;
        d->dflt = strdup(default_value);
        if (!d->dflt) {
            free(d);
            return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        }
    }
    setcache__br_wrlock(&c->defs.lock);
    sc_def *old;
    HASH_FIND(hh, c->defs.table, d->dkey, d->dklen, old);
    if (old) {
        HASH_DEL(c->defs.table, old);
    }
    HASH_ADD_KEYPTR(hh, c->defs.table, d->dkey, d->dklen, d);
    bool added = d->hh.tbl != NULL;
    if (!added && old) {
        HASH_ADD_KEYPTR(hh, c->defs.table, old->dkey, old->dklen, old); /* restore */
        old = NULL;
    }
    setcache__br_wrunlock(&c->defs.lock);
    if (old) {
        free(old->dflt);
        free(old);
    }
    if (!added) {
        free(d->dflt);
        free(d);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    return SETCACHE_OK;
}

static sc_def *def_find_locked(setcache *c, const char *type, size_t tlen, const char *key,
                               size_t klen)
{
    char k[SETCACHE_MAX_TYPE_LEN + 1 + SETCACHE_MAX_KEY_LEN + 1];
    memcpy(k, type, tlen);
    k[tlen] = '\0';
    memcpy(k + tlen + 1, key, klen);
    sc_def *d;
    HASH_FIND(hh, c->defs.table, k, tlen + 1 + klen, d);
    return d;
}

/* Is (type, key) defined? Then *type_out is its type. */
bool setcache__def_type(setcache *c, const char *type, size_t tlen, const char *key, size_t klen,
                        setcache_type *type_out)
{
    setcache__br_rdlock(&c->defs.lock);
    sc_def *d = def_find_locked(c, type, tlen, key, klen);
    if (d) {
        *type_out = d->type;
    }
    setcache__br_rdunlock(&c->defs.lock);
    return d != NULL;
}

/* No stored value: answer from the key's default, or NOT_FOUND. */
int setcache__read_default(setcache *c, sc_ident *id, sc_read *r)
{
    int rc = setcache__ident_validate(id);
    if (rc != SETCACHE_OK) {
        return rc;
    }
    setcache__br_rdlock(&c->defs.lock);
    sc_def *d = def_find_locked(c, id->type, id->tlen, id->key, id->klen);
    if (d && d->has_default) {
        rc = setcache__fill_from_value(d->dflt, strlen(d->dflt), &d->p, r);
    } else {
        rc = setcache__fail(SETCACHE_NOT_FOUND, "no stored value and no default");
    }
    setcache__br_rdunlock(&c->defs.lock);
    return rc;
}

/* Append to *pairs (n used of *cap) the defaults of type's defined keys that
 * have no stored value among the first n pairs. */
int setcache__defs_add_defaults(setcache *c, const char *entity_type, sc_pair **pairs_p,
                                size_t *n_p, size_t *cap_p)
{
    sc_pair *pairs = *pairs_p;
    size_t n = *n_p, cap = *cap_p;
    int rc = SETCACHE_OK;
    setcache__br_rdlock(&c->defs.lock);
    sc_def *d, *tmp;
    HASH_ITER(hh, c->defs.table, d, tmp)
    {
        if (!d->has_default || strcmp(d->dkey, entity_type) != 0) {
            continue;
        }
        const char *dk = d->dkey + strlen(d->dkey) + 1;
        bool stored = false;
        for (size_t i = 0; i < n && !stored; i++) {
            stored = !pairs[i].is_default && strcmp(pairs[i].key, dk) == 0;
        }
        if (stored) {
            continue;
        }
        if (n == cap && !setcache__grow(&pairs, &cap, 16, sizeof *pairs)) {
            rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
            break;
        }
        pairs[n].key = strdup(dk);
        pairs[n].value = strdup(d->dflt);
        pairs[n].is_default = true;
        n++;
        if (!pairs[n - 1].key || !pairs[n - 1].value) {
            rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
            break;
        }
    }
    setcache__br_rdunlock(&c->defs.lock);
    *pairs_p = pairs;
    *n_p = n;
    *cap_p = cap;
    return rc;
}
