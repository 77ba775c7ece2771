/*
 * write.c - write-through: upsert, delete and set_many, each one statement
 * in autocommit (so its COMMIT is part of the one round trip), then the
 * cache is updated by the version and the value the statement returned:
 * the value as the server stored it (decoded as a load decodes it), never
 * the text that was sent, so what the writer reads back is what a load reads.
 *
 * Owns: nothing. Borrows connections through setcache__with_write_pool only; takes
 * the defs lock (through setcache__def_type) and shard locks (through
 * setcache__apply_local), never together; then tells subscribers or the
 * refresher with no lock held.
 */
#include "internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Check a value against the length limit, UTF-8 and the key's definition.
 * *json is set when the server must validate it as JSON. */
static int check_value(setcache *c, sc_ident *id, const char *value, bool *json, int *deftype)
{
    if (!value) {
        return setcache__fail(SETCACHE_ERR_ARG, "value is NULL");
    }
    size_t vlen = strnlen(value, c->max_value_len + 1);
    if (vlen > c->max_value_len) {
        return setcache__fail(SETCACHE_ERR_ARG, "value is longer than %zu bytes", c->max_value_len);
    }
    if (!setcache__valid_utf8(value, vlen)) {
        return setcache__fail(SETCACHE_ERR_ARG, "value is not valid UTF-8");
    }
    setcache_type t;
    *deftype = -1;
    if (setcache__def_type(c, id->type, id->tlen, id->key, id->klen, &t)) {
        *deftype = (int)t;
        int64_t iv;
        double dv;
        bool bv;
        switch (t) {
        case SETCACHE_INT:
            if (!setcache__parse_int(value, &iv)) {
                return setcache__fail(SETCACHE_ERR_TYPE, "%s/%s is defined as int", id->type,
                                      id->key);
            }
            break;
        case SETCACHE_DOUBLE:
            if (!setcache__parse_double(value, &dv)) {
                return setcache__fail(SETCACHE_ERR_TYPE, "%s/%s is defined as double", id->type,
                                      id->key);
            }
            break;
        case SETCACHE_BOOL:
            if (!setcache__parse_bool(value, &bv)) {
                return setcache__fail(SETCACHE_ERR_TYPE, "%s/%s is defined as bool", id->type,
                                      id->key);
            }
            break;
        case SETCACHE_JSON:
            *json = true;
            break;
        case SETCACHE_STRING:
            break;
        }
        return setcache__check_rules(c, id, value);
    }
    return SETCACHE_OK;
}

/* Put the outcomes of one transaction's writes to one entity in the cache
 * at once, then tell subscribers, or (when an outcome is unknown) let the
 * refresher read the truth and tell them what it finds. */
static void apply_locals(setcache *c, sc_local *v, size_t n)
{
    bool subs = setcache__has_subscribers(c);
    /* written on another server than the loads read: remembered until that
     * source shows them (out of memory: the cache holds the write until
     * its entity is read again) */
    for (size_t j = 0; c->split_writes && j < n; j++) {
        sc_local *l = &v[j];
        if (!l->uncertain && (!l->deleted || l->version > 0)) {
            (void)setcache__fence_note(c, l->id, l->deleted ? NULL : l->value, l->version);
        }
    }
    setcache__apply_local(c, v, n, subs);
    for (size_t j = 0; j < n; j++) {
        sc_local *l = &v[j];
        if (subs && l->emit) {
            setcache__emit(c, l->deleted ? SETCACHE_CHANGE_DELETE : SETCACHE_CHANGE_SET,
                           l->id->type, l->id->id, l->id->key, l->value, l->old, l->version, true);
        }
        if (l->uncertain && l->id->key) {
            setcache__hint(c, 'U', 0, 0, l->id);
        }
        free(l->old);
    }
}

static void apply_local(setcache *c, sc_ident *id, const char *value, int64_t version, bool deleted,
                        bool uncertain)
{
    sc_local l = {
        .id = id, .value = value, .version = version, .deleted = deleted, .uncertain = uncertain};
    apply_locals(c, &l, 1);
}

static bool is_json_error(void)
{
    /* invalid_text_representation: the json input function rejected it */
    return strcmp(setcache__sqlstate(), "22P02") == 0;
}

struct write_job;
typedef struct write_job {
    setcache *c;
    sc_ident *id;
    const char *value; /* NULL = delete */
    bool json;
    int deftype; /* the key's defined type, -1 if undefined */
    int64_t version;
    char *stored; /* the value as stored (RETURNING), NULL for none; malloc'd */
    bool unknown; /* committed, but stored could not be kept (out of memory) */
    int token;    /* setcache__writing_begin */
} write_job;

/* Which column a write to a mapped table uses: the key's definition
 * decides (typed profile); undefined keys are stored as strings. */
static const char *map_upsert(const sc_tmap *m, const struct write_job *j)
{
    if (j->json) {
        return m->up_json;
    }
    if (!m->typed) {
        return m->up_str;
    }
    switch (j->deftype) {
    case SETCACHE_INT:
    case SETCACHE_DOUBLE:
        return m->up_num;
    case SETCACHE_BOOL:
        return m->up_jsonstr; /* the JSON string "true" / "false" */
    default:
        return m->up_str;
    }
}

/* Refuse what a mapped table can't take, before anything is sent. */
static int map_writable(setcache *c, sc_ident *id, const char *value, int deftype)
{
    sc_tmap *map = c->nmaps ? setcache__map_of(c, id->type, id->tlen) : NULL;
    if (!map) {
        return SETCACHE_OK;
    }
    if (!map->writable) {
        return setcache__fail(SETCACHE_ERR_DB,
                              "%s has no unique constraint on its entity and key columns, so "
                              "entity type '%s' is read-only; to allow writes: %s",
                              map->table, map->type, map->fix);
    }
    int rc = setcache__map_check_id(map, id->id);
    if (rc == SETCACHE_OK && value) {
        rc = setcache__map_check_number(map, value, deftype);
    }
    return rc;
}

/* The statement of one write; j->version is the row version it returned. */
static int write_stmt(write_job *j, PGconn *conn)
{
    setcache *c = j->c;
    int rc;
    PGresult *r;
    sc_tmap *map = c->nmaps ? setcache__map_of(c, j->id->type, j->id->tlen) : NULL;
    if (j->value) {
        const char *vals[4] = {j->id->type, j->id->id, j->id->key, j->value};
        const char *sql = map ? map_upsert(map, j) : j->json ? c->sql.upsert_json : c->sql.upsert;
        r = setcache__exec_prepared(c, conn, sql, 4, vals, true, &rc);
    } else {
        const char *vals[3] = {j->id->type, j->id->id, j->id->key};
        r = setcache__exec_prepared(c, conn, map ? map->sql.del : c->sql.del, 3, vals, true, &rc);
    }
    if (!r) {
        if (rc == SETCACHE_ERR_DB && j->json && is_json_error()) {
            rc = SETCACHE_ERR_TYPE;
        }
        return rc;
    }
    j->version = 0;
    free(j->stored);
    j->stored = NULL;
    if (PQntuples(r) > 0 && !setcache__parse_int(PQgetvalue(r, 0, 0), &j->version)) {
        rc = setcache__fail(SETCACHE_ERR_DB, "bad version returned");
    } else if (j->value && PQntuples(r) > 0 && !PQgetisnull(r, 0, 1)) {
        j->stored = strdup(PQgetvalue(r, 0, 1));
        j->unknown = j->stored == NULL; /* the cache will read it again */
    }
    PQclear(r);
    return rc;
}

/* One write on a pooled connection, marked as this handle's until the
 * caller has applied it (setcache__writing_end). */
static int write_one(void *arg, PGconn *conn)
{
    write_job *j = arg;
    j->token = setcache__writing_begin(j->c, conn);
    return write_stmt(j, conn);
}

static int do_write(setcache *c, const char *type, const char *eid, const char *key,
                    const char *value, bool force_json, bool is_delete)
{
    sc_ident id;
    int rc = setcache__ident_key(c, &id, type, eid, key);
    if (rc == SETCACHE_OK) {
        rc = setcache__ident_validate(&id);
    }
    if (rc != SETCACHE_OK) {
        return rc;
    }
    bool json = force_json;
    int deftype = -1;
    if (!is_delete && (rc = check_value(c, &id, value, &json, &deftype)) != SETCACHE_OK) {
        return rc;
    }
    if ((rc = map_writable(c, &id, is_delete ? NULL : value, deftype)) != SETCACHE_OK) {
        return rc;
    }
    if (deftype == SETCACHE_JSON) {
        json = true;
    }
    if (atomic_load(&c->closing)) {
        return setcache__fail(SETCACHE_ERR_CLOSED, "handle is closing");
    }
    write_job j = {c, &id, is_delete ? NULL : value, json, deftype, 0, NULL, false, -1};
    rc = setcache__with_write_pool(c, write_one, &j);
    if (rc == SETCACHE_OK) {
        /* a row that holds no value (e.g. the legacy 'None') reads as deleted */
        apply_local(c, &id, j.stored, j.version, j.stored == NULL, j.unknown);
        setcache__count(c, SC_ST_WRITES, 1);
    } else if (rc == SETCACHE_ERR_UNCERTAIN) {
        apply_local(c, &id, NULL, 0, is_delete, true);
    }
    setcache__writing_end(c, j.token);
    free(j.stored);
    return rc;
}

int setcache_set_string(setcache *c, const char *entity_type, const char *entity_id,
                        const char *key, const char *value)
{
    return do_write(c, entity_type, entity_id, key, value, false, false);
}

int setcache_set_json(setcache *c, const char *entity_type, const char *entity_id, const char *key,
                      const char *json)
{
    return do_write(c, entity_type, entity_id, key, json, true, false);
}

int setcache_set_int(setcache *c, const char *entity_type, const char *entity_id, const char *key,
                     int64_t value)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, value);
    return do_write(c, entity_type, entity_id, key, buf, false, false);
}

int setcache_set_double(setcache *c, const char *entity_type, const char *entity_id,
                        const char *key, double value)
{
    if (!isfinite(value)) {
        return setcache__fail(SETCACHE_ERR_ARG, "value is not a finite number");
    }
    char buf[64];
    setcache__format_double(value, buf, sizeof buf);
    return do_write(c, entity_type, entity_id, key, buf, false, false);
}

int setcache_set_bool(setcache *c, const char *entity_type, const char *entity_id, const char *key,
                      bool value)
{
    return do_write(c, entity_type, entity_id, key, value ? "true" : "false", false, false);
}

int setcache_delete(setcache *c, const char *entity_type, const char *entity_id, const char *key)
{
    return do_write(c, entity_type, entity_id, key, NULL, false, true);
}

/* ---- set_many ---- */

static char *bool_array(const bool *items, size_t n)
{
    char *out = malloc(2 * n + 3);
    if (!out) {
        return NULL;
    }
    char *p = out;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }
        *p++ = items[i] ? 't' : 'f';
    }
    *p++ = '}';
    *p = '\0';
    return out;
}

/* One key of a set_many, checked: its identity and how it is written. */
typedef struct many_item {
    sc_ident id;
    const char *value; /* NULL = delete */
    bool json;
    int deftype; /* the key's defined type, -1 if undefined */
} many_item;

static int cmp_item(const void *a, const void *b)
{
    return strcmp(((const many_item *)a)->id.key, ((const many_item *)b)->id.key);
}

/*
 * Step 1 of set_many: check every key and value (and, for a mapped table,
 * that the table takes it), then that no key appears twice. items[] comes
 * back sorted by key. Nothing is sent.
 */
static int check_items(setcache *c, const sc_ident *ent, const setcache_kv *kv, size_t n,
                       const sc_tmap *map, many_item *items)
{
    for (size_t i = 0; i < n; i++) {
        many_item *it = &items[i];
        if (!kv[i].key) {
            return setcache__fail(SETCACHE_ERR_ARG, "kv[%zu].key is NULL", i);
        }
        int rc = setcache__ident(&it->id, ent->type, ent->id, kv[i].key);
        if (rc == SETCACHE_OK) {
            rc = setcache__ident_validate(&it->id);
        }
        it->value = kv[i].value;
        it->json = false;
        it->deftype = -1;
        if (rc == SETCACHE_OK && it->value) {
            rc = check_value(c, &it->id, it->value, &it->json, &it->deftype);
        }
        if (rc == SETCACHE_OK && it->value && map) {
            /* the table and the id were checked once, for the entity */
            rc = setcache__map_check_number(map, it->value, it->deftype);
        }
        if (rc != SETCACHE_OK) {
            return rc;
        }
        it->json |= it->deftype == SETCACHE_JSON;
    }
    qsort(items, n, sizeof *items, cmp_item);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(items[i - 1].id.key, items[i].id.key) == 0) {
            return setcache__fail(SETCACHE_ERR_ARG, "key '%s' appears twice", items[i].id.key);
        }
    }
    return SETCACHE_OK;
}

typedef struct many_job {
    setcache *c;
    const char *vals[6];
    bool any_json;
    bool by_statement; /* the plain statement, not write_many */
    PGresult *res;
    int token;
} many_job;

/* The server has no "schema".write_many (a schema made by an older
 * release, applied without create_schema): nothing ran. Another missing
 * function (one write_many calls) is not this. */
static bool no_write_many(void)
{
    return strcmp(setcache__sqlstate(), "42883") == 0 &&
           strstr(setcache_errmsg(), "write_many(") != NULL;
}

static int write_many(void *arg, PGconn *conn)
{
    many_job *j = arg;
    int rc;
    j->token = setcache__writing_begin(j->c, conn);
    j->res = NULL;
    rc = SETCACHE_ERR_DB;
    if (!j->by_statement) {
        /* the managed schema's function: the same rows, versions, history
         * and notifications as the statement, checked and recorded once
         * for the whole call instead of once per row */
        j->res = setcache__exec(j->c, conn, j->c->sql.many_fn, 6, j->vals, true, &rc);
        if (!j->res && rc == SETCACHE_ERR_DB && no_write_many()) {
            /* said by the one call that switches the handle, not by every
             * call that met the function missing at the same time */
            if (!atomic_exchange(&j->c->many_by_statement, true)) {
                setcache__log(j->c, SETCACHE_LOG_INFO,
                              "set_many: the schema has no write_many (made by an older "
                              "release): one statement instead; apply `setcache schema` to get "
                              "it");
            }
            j->by_statement = true;
        }
    }
    if (j->by_statement) {
        j->res = setcache__exec(j->c, conn, j->c->sql.many, 6, j->vals, true, &rc);
    }
    if (!j->res && rc == SETCACHE_ERR_DB && j->any_json && is_json_error()) {
        rc = SETCACHE_ERR_TYPE;
    }
    return rc;
}

/* set_many on a mapped table: one transaction of one statement per key. */
typedef struct mm_job {
    setcache *c;
    size_t n;
    write_job *jobs;
    int token;
} mm_job;

static int write_many_mapped(void *arg, PGconn *conn)
{
    mm_job *m = arg;
    setcache *c = m->c;
    int rc;
    m->token = setcache__writing_begin(c, conn);
    PQclear(setcache__exec(c, conn, "BEGIN", 0, NULL, false, &rc));
    for (size_t i = 0; i < m->n && rc == SETCACHE_OK; i++) {
        rc = write_stmt(&m->jobs[i], conn); /* marked once, by m->token */
        if (rc == SETCACHE_ERR_UNCERTAIN) {
            rc = SETCACHE_ERR_DB; /* before COMMIT: nothing was committed */
        }
    }
    if (rc == SETCACHE_OK) {
        PQclear(setcache__exec(c, conn, "COMMIT", 0, NULL, true, &rc));
    }
    return rc; /* a transaction left open is rolled back by the pool */
}

/* set_many on a mapped table, its items checked: one transaction. */
static int set_many_mapped(setcache *c, many_item *items, size_t n)
{
    write_job *jobs = calloc(n, sizeof *jobs);
    if (!jobs) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        jobs[i] = (write_job){
            c, &items[i].id, items[i].value, items[i].json, items[i].deftype, 0, NULL, false, -1};
    }
    mm_job m = {c, n, jobs, -1};
    int rc = setcache__with_write_pool(c, write_many_mapped, &m);
    sc_local *v = NULL;
    if ((rc == SETCACHE_OK || rc == SETCACHE_ERR_UNCERTAIN) && !(v = calloc(n, sizeof *v))) {
        for (size_t i = 0; i < n; i++) { /* no memory to apply them: read them again */
            apply_local(c, &items[i].id, NULL, 0, false, true);
        }
    } else if (rc == SETCACHE_OK || rc == SETCACHE_ERR_UNCERTAIN) {
        for (size_t i = 0; i < n; i++) {
            v[i] = (sc_local){.id = &items[i].id,
                              .value = jobs[i].stored,
                              .version = jobs[i].version,
                              .deleted = jobs[i].stored == NULL,
                              .uncertain = rc == SETCACHE_ERR_UNCERTAIN || jobs[i].unknown};
        }
        apply_locals(c, v, n);
        if (rc == SETCACHE_OK) {
            setcache__count(c, SC_ST_WRITES, 1);
        }
    }
    setcache__writing_end(c, m.token);
    free(v);
    for (size_t i = 0; i < n; i++) {
        free(jobs[i].stored);
    }
    free(jobs);
    return rc;
}

/* The built-in table's set_many statement's array parameters. */
typedef struct many_arrays {
    char *del, *keys, *vals, *json;
} many_arrays;

static void arrays_free(many_arrays *a)
{
    free(a->del);
    free(a->keys);
    free(a->vals);
    free(a->json);
}

static int build_arrays(const many_item *items, size_t n, many_arrays *a, bool *any_json)
{
    const char **dkeys = malloc(n * sizeof *dkeys);
    const char **skeys = malloc(n * sizeof *skeys);
    const char **svals = malloc(n * sizeof *svals);
    bool *sjson = malloc(n * sizeof *sjson);
    size_t nd = 0, ns = 0;
    *any_json = false;
    if (dkeys && skeys && svals && sjson) {
        for (size_t i = 0; i < n; i++) {
            if (items[i].value) {
                skeys[ns] = items[i].id.key;
                svals[ns] = items[i].value;
                sjson[ns++] = items[i].json;
                *any_json |= items[i].json;
            } else {
                dkeys[nd++] = items[i].id.key;
            }
        }
        a->del = setcache__text_array(dkeys, nd);
        a->keys = setcache__text_array(skeys, ns);
        a->vals = setcache__text_array(svals, ns);
        a->json = bool_array(sjson, ns);
    }
    free(dkeys);
    free(skeys);
    free(svals);
    free(sjson);
    if (!a->del || !a->keys || !a->vals || !a->json) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    return SETCACHE_OK;
}

/* Apply every returned row by its version, all at once; a deleted key with
 * no row returned had nothing to delete. */
static void apply_many(setcache *c, many_item *items, size_t n, PGresult *res)
{
    sc_local *v = calloc(n, sizeof *v);
    if (!v) {
        for (size_t i = 0; i < n; i++) { /* no memory to apply them: read them again */
            apply_local(c, &items[i].id, NULL, 0, false, true);
        }
        return;
    }
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        many_item probe;
        probe.id.key = PQgetvalue(res, r, 1);
        many_item *hit = bsearch(&probe, items, n, sizeof *items, cmp_item);
        int64_t version;
        if (!hit || !setcache__parse_int(PQgetvalue(res, r, 2), &version)) {
            continue;
        }
        const char *stored = PQgetisnull(res, r, 3) ? NULL : PQgetvalue(res, r, 3);
        v[hit - items] = (sc_local){
            .id = &hit->id, .value = stored, .version = version, .deleted = stored == NULL};
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].id) {
            v[m++] = v[i];
        } else if (!items[i].value) { /* a delete that found no row */
            v[m++] = (sc_local){.id = &items[i].id, .deleted = true};
        }
    }
    apply_locals(c, v, m);
    free(v);
}

/* set_many on the built-in table, its items checked: one statement. */
static int set_many_builtin(setcache *c, many_item *items, size_t n)
{
    many_arrays a = {0};
    many_job j;
    memset(&j, 0, sizeof j);
    j.token = -1;
    int rc = build_arrays(items, n, &a, &j.any_json);
    if (rc == SETCACHE_OK && atomic_load(&c->closing)) {
        rc = setcache__fail(SETCACHE_ERR_CLOSED, "handle is closing");
    }
    if (rc == SETCACHE_OK) {
        j.c = c;
        j.vals[0] = items[0].id.type;
        j.vals[1] = items[0].id.id;
        j.vals[2] = a.del;
        j.vals[3] = a.keys;
        j.vals[4] = a.vals;
        j.vals[5] = a.json;
        j.by_statement = atomic_load(&c->many_by_statement);
        rc = setcache__with_write_pool(c, write_many, &j);
    }
    if (rc == SETCACHE_ERR_UNCERTAIN) {
        for (size_t i = 0; i < n; i++) {
            apply_local(c, &items[i].id, NULL, 0, false, true);
        }
    } else if (rc == SETCACHE_OK) {
        apply_many(c, items, n, j.res);
        setcache__count(c, SC_ST_WRITES, 1);
    }
    setcache__writing_end(c, j.token);
    PQclear(j.res);
    arrays_free(&a);
    return rc;
}

int setcache_set_many(setcache *c, const char *entity_type, const char *entity_id,
                      const setcache_kv *kv, size_t n)
{
    if (!c) {
        return setcache__fail(SETCACHE_ERR_ARG, "handle is NULL");
    }
    if (n > 0 && !kv) {
        return setcache__fail(SETCACHE_ERR_ARG, "kv is NULL");
    }
    sc_ident id;
    int rc = setcache__ident(&id, entity_type, entity_id, NULL);
    if (rc == SETCACHE_OK) {
        rc = setcache__ident_validate(&id);
    }
    if (rc != SETCACHE_OK || n == 0) {
        return rc;
    }
    const sc_tmap *map = c->nmaps ? setcache__map_of(c, id.type, id.tlen) : NULL;
    if (map && (rc = map_writable(c, &id, NULL, -1)) != SETCACHE_OK) {
        return rc;
    }
    many_item *items = calloc(n, sizeof *items);
    if (!items) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    rc = check_items(c, &id, kv, n, map, items);
    if (rc == SETCACHE_OK) {
        rc = map ? set_many_mapped(c, items, n) : set_many_builtin(c, items, n);
    }
    free(items);
    return rc;
}
