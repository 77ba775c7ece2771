/*
 * fence.c - read-your-writes past a lagging source. With write_conninfo
 * naming another server (a fleet's primary) the cache loads from and
 * listens to a logical-replication subscriber, which may not have a write
 * this process made a moment ago. Every such write is remembered here, per
 * key, with its version and value (or deletion), until the source shows
 * it; every install of rows read from the source first merges them: a key
 * whose rows are at least as new is confirmed and forgotten, any other
 * keeps this process's newer value (or absence).
 *
 * The rows alone can't tell "deleted since" from "not arrived yet" for a
 * key they lack, so before reading an entity with fenced keys the fetcher
 * asks the source's history (replicated from the primary with the rows) for
 * the newest version it has recorded of each; read before the rows, a
 * version at least the fenced one proves the rows reflect the write and
 * whatever came after, and the fetcher adds a tombstone of that version
 * where the rows lack the key.
 *
 * A key is also forgotten when the source announces a change of it at the
 * fenced version or later (the listener hears the server the loads read):
 * the source has the write then, and the writes of entities this process
 * never reads do not pile up. What that misses (the source announced the
 * write before its writer noted it; notifications lost with a listener's
 * connection) the refresher's sweep asks the source's history about, once
 * a second while anything is fenced, and hands what it finds back to the
 * refresher as hints of their own kind (SC_HINT_SEEN).
 *
 * Owns: c->fence. Lock: fence.mu, a leaf (taken under a shard lock by the
 * installs, never with another lock after it).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void setcache__fence_init(setcache *c)
{
    pthread_mutex_init(&c->fence.mu, NULL);
    c->fence.table = NULL;
    atomic_store(&c->fence.entities, 0);
}

static void ent_free(sc_fence_ent *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->v[i].key);
        free(f->v[i].value);
    }
    free(f->v);
    free(f);
}

void setcache__fence_destroy(setcache *c, bool own_process)
{
    sc_fence_ent *f, *tmp;
    HASH_ITER(hh, c->fence.table, f, tmp)
    {
        HASH_DEL(c->fence.table, f);
        ent_free(f);
    }
    if (own_process) {
        pthread_mutex_destroy(&c->fence.mu);
    }
}

static sc_fence_ent *find_locked(setcache *c, const sc_ident *id)
{
    sc_fence_ent *f;
    HASH_FIND(hh, c->fence.table, id->ekey, id->ekeylen, f);
    return f;
}

/* The place of key (klen bytes) among f's fenced keys; f->n if absent. */
static size_t key_at(const sc_fence_ent *f, const char *key, size_t klen)
{
    for (size_t i = 0; i < f->n; i++) {
        if (strlen(f->v[i].key) == klen && memcmp(f->v[i].key, key, klen) == 0) {
            return i;
        }
    }
    return f->n;
}

/* Forget f once it holds no key. */
static void drop_if_empty_locked(setcache *c, sc_fence_ent *f)
{
    if (f && f->n == 0) {
        HASH_DEL(c->fence.table, f);
        ent_free(f);
        atomic_fetch_sub(&c->fence.entities, 1);
    }
}

int setcache__fence_note(setcache *c, const sc_ident *id, const char *value, int64_t version)
{
    if (!c->split_writes) {
        return SETCACHE_OK;
    }
    int rc = SETCACHE_OK;
    pthread_mutex_lock(&c->fence.mu);
    sc_fence_ent *f = find_locked(c, id);
    if (!f) {
        f = calloc(1, sizeof *f + id->ekeylen);
        if (!f) {
            rc = SETCACHE_ERR_NOMEM;
            goto out;
        }
        memcpy(f->ekey, id->ekey, id->ekeylen);
        f->ekeylen = id->ekeylen;
        HASH_ADD_KEYPTR(hh, c->fence.table, f->ekey, f->ekeylen, f);
        if (!f->hh.tbl) { /* the table could not be made (HASH_NONFATAL_OOM) */
            free(f);
            f = NULL;
            rc = SETCACHE_ERR_NOMEM;
            goto out;
        }
        atomic_fetch_add(&c->fence.entities, 1);
    }
    size_t at = key_at(f, id->key, id->klen); /* f->n: a new one */
    if (at < f->n && f->v[at].version >= version) {
        goto out; /* a newer write of this key is fenced already */
    }
    char *nv = value ? strdup(value) : NULL;
    if (value && !nv) {
        rc = SETCACHE_ERR_NOMEM;
        goto out;
    }
    if (at >= f->n) {
        at = f->n;
        char *key = malloc(id->klen + 1);
        if (!key || (f->n == f->cap && !setcache__grow(&f->v, &f->cap, 4, sizeof *f->v))) {
            free(key);
            free(nv);
            rc = SETCACHE_ERR_NOMEM;
            goto out;
        }
        memcpy(key, id->key, id->klen);
        key[id->klen] = '\0';
        f->v[at].key = key;
        f->v[at].value = NULL;
        f->n++;
    }
    free(f->v[at].value);
    f->v[at].value = nv;
    f->v[at].version = version;
out:
    drop_if_empty_locked(c, f);
    pthread_mutex_unlock(&c->fence.mu);
    return rc == SETCACHE_OK ? rc : setcache__fail(rc, "out of memory");
}

bool setcache__fence_has(setcache *c, const sc_ident *id)
{
    if (atomic_load(&c->fence.entities) == 0) {
        return false; /* the common case: nothing fenced, no lock */
    }
    pthread_mutex_lock(&c->fence.mu);
    bool has = find_locked(c, id) != NULL;
    pthread_mutex_unlock(&c->fence.mu);
    return has;
}

bool setcache__fence_merge(setcache *c, const sc_ident *id, sc_etable *rows)
{
    if (atomic_load(&c->fence.entities) == 0) {
        return true;
    }
    bool ok = true;
    pthread_mutex_lock(&c->fence.mu);
    sc_fence_ent *f = find_locked(c, id);
    for (size_t i = 0; f && i < f->n;) {
        sc_fenced *k = &f->v[i];
        const sc_entry *r = setcache__et_find_str(rows, k->key);
        /* the source shows the write, or a newer change: a write's row (or
         * the tombstone of its deletion since: a deleted row's version) at
         * least as new; a deletion's tombstone, or a row inserted since */
        bool shown =
            r && (k->value || SC_TOMB(r) ? r->version >= k->version : r->version > k->version);
        if (shown) {
            free(k->key);
            free(k->value);
            f->v[i] = f->v[--f->n];
            continue;
        }
        sc_entry *mine =
            setcache__entry_new(k->key, strlen(k->key), k->value, k->value ? strlen(k->value) : 0,
                                k->version, k->value == NULL);
        sc_entry *old = NULL;
        if (!mine || setcache__et_put(rows, mine, &old) != SETCACHE_OK) {
            setcache__entry_unref(mine);
            ok = false; /* not installed: read again */
            break;
        }
        setcache__entry_unref(old);
        i++;
    }
    drop_if_empty_locked(c, f);
    pthread_mutex_unlock(&c->fence.mu);
    return ok;
}

bool setcache__fence_covers(setcache *c, const sc_ident *id, const char *key, int64_t version)
{
    pthread_mutex_lock(&c->fence.mu);
    sc_fence_ent *f = find_locked(c, id);
    size_t at = f ? key_at(f, key, strlen(key)) : 0;
    bool covers = f && at < f->n && f->v[at].version <= version;
    pthread_mutex_unlock(&c->fence.mu);
    return covers;
}

void setcache__fence_seen(setcache *c, const sc_ident *id, const char *key, int64_t version)
{
    if (atomic_load(&c->fence.entities) == 0) {
        return;
    }
    pthread_mutex_lock(&c->fence.mu);
    sc_fence_ent *f = find_locked(c, id);
    size_t at = f ? key_at(f, key, strlen(key)) : 0;
    if (f && at < f->n && f->v[at].version <= version) {
        free(f->v[at].key);
        free(f->v[at].value);
        f->v[at] = f->v[--f->n];
    }
    drop_if_empty_locked(c, f);
    pthread_mutex_unlock(&c->fence.mu);
}

/* Append copies of f's fenced keys (entity type, entity id, key) to
 * own[0..2] while *m < max; false: out of memory. */
static bool copy_keys_locked(const sc_fence_ent *f, char **own[3], size_t *m, size_t *cap,
                             size_t max)
{
    const char *type = f->ekey, *eid = f->ekey + strlen(f->ekey) + 1; /* "type\0id\0" */
    for (size_t i = 0; i < f->n && *m < max; i++) {
        if (*m == *cap) {
            size_t grown = 0;
            for (int a = 0; a < 3; a++) {
                grown = *cap;
                if (!setcache__grow(&own[a], &grown, 8, sizeof *own[a])) {
                    return false;
                }
            }
            *cap = grown;
        }
        own[0][*m] = strdup(type);
        own[1][*m] = strdup(eid);
        own[2][*m] = strdup(f->v[i].key);
        (*m)++;
        if (!own[0][*m - 1] || !own[1][*m - 1] || !own[2][*m - 1]) {
            return false;
        }
    }
    return true;
}

/* The fenced keys of the entities ids[0..n) - with ids NULL, of every
 * fenced entity, up to SC_FENCE_SWEEP keys - as three parallel text-array
 * literals arr[0..2] (type, id, key); NULL when none is fenced. */
static int fenced_arrays(setcache *c, const sc_ident *const *ids, size_t n, char *arr[3])
{
    arr[0] = arr[1] = arr[2] = NULL;
    char **own[3] = {NULL, NULL, NULL}; /* copies: the fence may change once unlocked */
    size_t m = 0, cap = 0;
    bool ok = true;
    pthread_mutex_lock(&c->fence.mu);
    if (ids) {
        for (size_t j = 0; j < n && ok; j++) {
            sc_fence_ent *f = find_locked(c, ids[j]);
            ok = !f || copy_keys_locked(f, own, &m, &cap, SIZE_MAX);
        }
    } else {
        for (sc_fence_ent *f = c->fence.table; f && ok && m < SC_FENCE_SWEEP; f = f->hh.next) {
            ok = copy_keys_locked(f, own, &m, &cap, SC_FENCE_SWEEP);
        }
    }
    pthread_mutex_unlock(&c->fence.mu);
    for (int a = 0; a < 3 && ok && m > 0; a++) {
        ok = (arr[a] = setcache__text_array((const char **)own[a], m)) != NULL;
    }
    for (int a = 0; a < 3; a++) {
        for (size_t i = 0; i < m; i++) {
            free(own[a][i]);
        }
        free(own[a]);
        if (!ok) {
            free(arr[a]);
            arr[a] = NULL;
        }
    }
    return ok ? SETCACHE_OK : setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
}

/* The source history's newest version of each key fenced_arrays gives
 * (*out NULL: none fenced); errors as setcache__exec's. */
static int history_of(setcache *c, PGconn *conn, const sc_ident *const *ids, size_t n,
                      PGresult **out)
{
    *out = NULL;
    if (atomic_load(&c->fence.entities) == 0) {
        return SETCACHE_OK;
    }
    char *arr[3];
    int rc = fenced_arrays(c, ids, n, arr);
    if (rc != SETCACHE_OK || !arr[0]) {
        return rc;
    }
    const char *vals[3] = {arr[0], arr[1], arr[2]};
    *out = setcache__exec(c, conn, c->sql.hist_max, 3, vals, false, &rc);
    for (int a = 0; a < 3; a++) {
        free(arr[a]);
    }
    return rc;
}

int setcache__fence_history(setcache *c, PGconn *conn, const sc_ident *const *ids, size_t n,
                            PGresult **out)
{
    int rc = history_of(c, conn, ids, n, out);
    if (!*out && rc == SETCACHE_ERR_DB && PQstatus(conn) == CONNECTION_OK) {
        /* no history to ask (no right to read it, or an older schema): the
         * fence holds until the rows show the writes */
        setcache__log(c, SETCACHE_LOG_DEBUG, "fence: history not readable: %s", setcache_errmsg());
        return SETCACHE_OK;
    }
    return rc;
}

int setcache__fence_sweep(setcache *c, PGconn *conn, PGresult **out)
{
    return history_of(c, conn, NULL, 0, out);
}

int setcache__fence_tombs(const PGresult *hist, const sc_ident *id, sc_etable *rows)
{
    int n = hist ? PQntuples(hist) : 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(PQgetvalue(hist, i, 0), id->type) != 0 ||
            strcmp(PQgetvalue(hist, i, 1), id->id) != 0) {
            continue;
        }
        const char *key = PQgetvalue(hist, i, 2);
        int64_t v;
        if (setcache__et_find_str(rows, key) || !setcache__parse_int(PQgetvalue(hist, i, 3), &v)) {
            continue;
        }
        sc_entry *t = setcache__entry_new(key, strlen(key), NULL, 0, v, true);
        sc_entry *old = NULL;
        if (!t || setcache__et_put(rows, t, &old) != SETCACHE_OK) {
            setcache__entry_unref(t);
            return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        }
        setcache__entry_unref(old);
    }
    return SETCACHE_OK;
}
