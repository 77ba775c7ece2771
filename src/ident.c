/*
 * ident.c - an identity (entity type, entity id, key) prepared once per
 * call: lengths checked, the entity key built, both hashes computed; full
 * validation (UTF-8, no control characters) only where a call may reach the
 * database or answer from definitions.
 *
 * Owns: nothing (sc_ident lives on the caller's stack). No locks.
 */
#include "internal.h"

#include <string.h>

int setcache__ident(sc_ident *id, const char *type, const char *eid, const char *key)
{
    if (!type || !eid) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is NULL", !type ? "entity_type" : "entity_id");
    }
    id->type = type;
    id->id = eid;
    id->key = key;
    id->validated = false;
    id->tlen = strnlen(type, SETCACHE_MAX_TYPE_LEN + 1);
    id->ilen = strnlen(eid, SETCACHE_MAX_ID_LEN + 1);
    if (id->tlen == 0 || id->tlen > SETCACHE_MAX_TYPE_LEN || id->ilen == 0 ||
        id->ilen > SETCACHE_MAX_ID_LEN) {
        return setcache__ident_validate(id);
    }
    memcpy(id->ekey, type, id->tlen);
    id->ekey[id->tlen] = '\0';
    memcpy(id->ekey + id->tlen + 1, eid, id->ilen);
    id->ekey[id->tlen + 1 + id->ilen] = '\0';
    id->ekeylen = (uint16_t)(id->tlen + id->ilen + 2);
    id->ehash = setcache__hash2(type, id->tlen, eid, id->ilen);
    if (key) {
        id->klen = strnlen(key, SETCACHE_MAX_KEY_LEN + 1);
        if (id->klen == 0 || id->klen > SETCACHE_MAX_KEY_LEN) {
            return setcache__ident_validate(id);
        }
        id->khash = setcache__hash(key, id->klen);
    } else {
        id->klen = 0;
        id->khash = 0;
    }
    return SETCACHE_OK;
}

/* The identity of a call naming one setting: the handle and key must be
 * given; lengths are checked and hashes computed (full validation later). */
int setcache__ident_key(setcache *c, sc_ident *id, const char *type, const char *eid,
                        const char *key)
{
    if (!c) {
        return setcache__fail(SETCACHE_ERR_ARG, "handle is NULL");
    }
    if (!key) {
        return setcache__fail(SETCACHE_ERR_ARG, "key is NULL");
    }
    return setcache__ident(id, type, eid, key);
}

/* Full validation, done only on paths that may reach the database or answer
 * from definitions: a hit in the cache proves the identity valid, since only
 * valid identities are ever installed. */
int setcache__ident_validate(sc_ident *id)
{
    if (id->validated) {
        return SETCACHE_OK;
    }
    size_t t, i, k;
    int rc = setcache__check_identity(id->type, id->id, id->key, &t, &i, &k);
    if (rc == SETCACHE_OK) {
        id->validated = true;
    }
    return rc;
}
