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

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct sc_def *def_find_locked(setcache *c, const char *type, size_t tlen, const char *key,
                                      size_t klen);
static void def_free(sc_def *d);

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
        def_free(d);
    }
    HASH_ITER(hh, c->defs.local, d, tmp)
    {
        HASH_DEL(c->defs.local, d);
        def_free(d);
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

static void def_free(sc_def *d)
{
    if (!d) {
        return;
    }
    free(d->dflt);
    free(d->desc);
    free(d->pattern);
    for (size_t i = 0; i < d->nchoices; i++) {
        free(d->choices[i]);
    }
    free(d->choices);
    free(d);
}

/* What rule v breaks under d (written to msg), or NULL: the library's half
 * of the rules (the server's value_problem has the same, and the pattern). */
static const char *rule_broken(const sc_def *d, const char *v, char *msg, size_t cap)
{
    sc_parsed p;
    setcache__parse_all(v, &p);
    double n = d->type == SETCACHE_INT ? (double)p.i : p.d;
    if ((d->type == SETCACHE_INT || d->type == SETCACHE_DOUBLE) && d->has_min && n < d->min) {
        snprintf(msg, cap, "%.80s is below the minimum %.17g", v, d->min);
        return "min";
    }
    if ((d->type == SETCACHE_INT || d->type == SETCACHE_DOUBLE) && d->has_max && n > d->max) {
        snprintf(msg, cap, "%.80s is above the maximum %.17g", v, d->max);
        return "max";
    }
    if (d->nchoices) {
        bool found = false;
        for (size_t i = 0; i < d->nchoices && !found; i++) {
            found = strcmp(d->choices[i], v) == 0;
        }
        if (!found) {
            snprintf(msg, cap, "'%.80s' is not one of the %zu choices", v, d->nchoices);
            return "choices";
        }
    }
    if (d->max_length) {
        size_t chars = 0;
        for (const unsigned char *q = (const unsigned char *)v; *q; q++) {
            chars += (*q & 0xc0) != 0x80;
        }
        if (chars > d->max_length) {
            snprintf(msg, cap, "'%.80s' has %zu characters, more than %zu", v, chars,
                     d->max_length);
            return "max_length";
        }
    }
    return NULL;
}

/* A definition's rules fit its type. */
static int check_rules_fit(const setcache_definition *d)
{
    bool number = d->type == SETCACHE_INT || d->type == SETCACHE_DOUBLE;
    if ((d->has_min || d->has_max) && !number) {
        return setcache__fail(SETCACHE_ERR_ARG, "min and max are for int and double keys");
    }
    if ((d->nchoices || d->pattern || d->max_length) && d->type != SETCACHE_STRING) {
        return setcache__fail(SETCACHE_ERR_ARG, "choices, pattern and max_length are for string "
                                                "keys");
    }
    if (d->has_min && d->has_max && d->min > d->max) {
        return setcache__fail(SETCACHE_ERR_ARG, "min %.17g is above max %.17g", d->min, d->max);
    }
    if ((d->has_min && !isfinite(d->min)) || (d->has_max && !isfinite(d->max))) {
        return setcache__fail(SETCACHE_ERR_ARG, "min and max must be finite");
    }
    if (d->nchoices && !d->choices) {
        return setcache__fail(SETCACHE_ERR_ARG, "nchoices without choices");
    }
    for (size_t i = 0; i < d->nchoices; i++) {
        if (!d->choices[i] || !setcache__valid_utf8(d->choices[i], strlen(d->choices[i]))) {
            return setcache__fail(SETCACHE_ERR_ARG, "choice %zu is NULL or not UTF-8", i);
        }
    }
    if ((d->pattern && !setcache__valid_utf8(d->pattern, strlen(d->pattern))) ||
        (d->description && !setcache__valid_utf8(d->description, strlen(d->description)))) {
        return setcache__fail(SETCACHE_ERR_ARG, "pattern and description must be UTF-8");
    }
    return SETCACHE_OK;
}

static char *dup_opt(const char *s, bool *nomem)
{
    char *r = s ? strdup(s) : NULL;
    *nomem |= s && !r;
    return r;
}

/* The sc_def for d (checked), or NULL with the error set. */
/* The code of def_new's last failure (this thread). */
static _Thread_local int last_rc;

static sc_def *def_new(setcache *c, const setcache_definition *d, bool shared)
{
    size_t tlen, ilen, klen;
    last_rc = setcache__check_identity(d->entity_type, NULL, d->key, &tlen, &ilen, &klen);
    if (last_rc != SETCACHE_OK) {
        return NULL;
    }
    if (!d->key) {
        last_rc = setcache__fail(SETCACHE_ERR_ARG, "key is NULL");
        return NULL;
    }
    if ((int)d->type < SETCACHE_STRING || (int)d->type > SETCACHE_JSON) {
        last_rc = setcache__fail(SETCACHE_ERR_ARG, "unknown type %d", (int)d->type);
        return NULL;
    }
    if ((last_rc = check_rules_fit(d)) != SETCACHE_OK) {
        return NULL;
    }
    sc_parsed p;
    memset(&p, 0, sizeof p);
    const char *dv = d->default_value;
    if (dv) {
        size_t vlen = strnlen(dv, c->max_value_len + 1);
        if (vlen > c->max_value_len || !setcache__valid_utf8(dv, vlen)) {
            last_rc =
                setcache__fail(SETCACHE_ERR_ARG, "default must be valid UTF-8 of at most %zu bytes",
                               c->max_value_len);
            return NULL;
        }
        setcache__parse_all(dv, &p);
        if ((d->type == SETCACHE_INT && !(p.ok & SC_PARSED_INT)) ||
            (d->type == SETCACHE_DOUBLE && !(p.ok & SC_PARSED_DOUBLE)) ||
            (d->type == SETCACHE_BOOL && !(p.ok & SC_PARSED_BOOL))) {
            last_rc = setcache__fail(SETCACHE_ERR_TYPE, "default '%.64s' is not a valid %s", dv,
                                     setcache__type_name(d->type));
            return NULL;
        }
        if (d->type == SETCACHE_JSON && !shared) {
            json_check j = {c, dv};
            if ((last_rc = setcache__with_pool(c, check_json_conn, &j)) != SETCACHE_OK) {
                return NULL;
            }
        }
    }
    size_t dklen = tlen + 1 + klen;
    sc_def *n = calloc(1, sizeof *n + dklen + 1);
    if (!n) {
        last_rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memcpy(n->dkey, d->entity_type, tlen);
    memcpy(n->dkey + tlen + 1, d->key, klen);
    n->dklen = (uint16_t)dklen;
    n->type = d->type;
    n->p = p;
    n->shared = shared;
    n->has_min = d->has_min;
    n->has_max = d->has_max;
    n->min = d->min;
    n->max = d->max;
    n->max_length = d->max_length;
    bool nomem = false;
    n->has_default = dv != NULL;
    n->dflt = dup_opt(dv, &nomem);
    n->desc = dup_opt(d->description, &nomem);
    n->pattern = dup_opt(d->pattern, &nomem);
    if (d->nchoices) {
        n->choices = calloc(d->nchoices, sizeof *n->choices);
        nomem |= !n->choices;
        for (size_t i = 0; n->choices && i < d->nchoices; i++) {
            n->choices[i] = dup_opt(d->choices[i], &nomem);
            n->nchoices = i + 1;
        }
    }
    if (nomem) {
        def_free(n);
        last_rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        return NULL;
    }
    char msg[192];
    const char *rule = dv ? rule_broken(n, dv, msg, sizeof msg) : NULL;
    if (rule) {
        last_rc = setcache__fail(SETCACHE_ERR_INVALID, "invalid default for %s %s: %s (rule: %s)",
                                 d->entity_type, d->key, msg, rule);
        def_free(n);
        return NULL;
    }
    return n;
}

/* Do two definitions say the same (type, default, rules)? */
static bool def_same(const sc_def *a, const sc_def *b)
{
    bool same = a->type == b->type && a->has_default == b->has_default &&
                (!a->has_default || strcmp(a->dflt, b->dflt) == 0) && a->has_min == b->has_min &&
                a->has_max == b->has_max && (!a->has_min || a->min == b->min) &&
                (!a->has_max || a->max == b->max) && a->max_length == b->max_length &&
                a->nchoices == b->nchoices && !a->pattern == !b->pattern &&
                (!a->pattern || strcmp(a->pattern, b->pattern) == 0);
    for (size_t i = 0; same && i < a->nchoices; i++) {
        same = strcmp(a->choices[i], b->choices[i]) == 0;
    }
    return same;
}

/* Install n (taken). A local definition never replaces a shared one (the
 * database enforces the shared one for every writer); a shared one replaces
 * a local one; a difference between them is logged and counted. */
static int def_install(setcache *c, sc_def *n)
{
    setcache__br_wrlock(&c->defs.lock);
    sc_def *old;
    HASH_FIND(hh, c->defs.table, n->dkey, n->dklen, old);
    bool conflict = old && old->shared != n->shared && !def_same(old, n);
    bool keep_old = old && old->shared && !n->shared;
    bool added = true;
    if (!keep_old) {
        if (old) {
            HASH_DEL(c->defs.table, old);
        }
        HASH_ADD_KEYPTR(hh, c->defs.table, n->dkey, n->dklen, n);
        added = n->hh.tbl != NULL;
        if (!added && old) {
            HASH_ADD_KEYPTR(hh, c->defs.table, old->dkey, old->dklen, old); /* restore */
            old = NULL;
        }
    }
    setcache__br_wrunlock(&c->defs.lock);
    if (conflict) {
        setcache__count(c, SC_ST_DEF_CONFLICTS, 1);
        setcache__log(c, SETCACHE_LOG_WARN,
                      "definition of %s %s differs from the shared one in %s.definitions; the "
                      "shared one is used (the database enforces it for every writer)",
                      n->dkey, n->dkey + strlen(n->dkey) + 1, c->schema);
    }
    if (keep_old) {
        def_free(n);
        return SETCACHE_OK;
    }
    if (!added) {
        def_free(n);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    def_free(old);
    return SETCACHE_OK;
}

/* Remember a local definition for setcache_publish_definitions (n taken),
 * whether or not a shared one is in effect. */
static int remember_local(setcache *c, sc_def *n)
{
    setcache__br_wrlock(&c->defs.lock);
    sc_def *old;
    HASH_FIND(hh, c->defs.local, n->dkey, n->dklen, old);
    if (old) {
        HASH_DEL(c->defs.local, old);
    }
    HASH_ADD_KEYPTR(hh, c->defs.local, n->dkey, n->dklen, n);
    bool added = n->hh.tbl != NULL;
    if (!added && old) {
        HASH_ADD_KEYPTR(hh, c->defs.local, old->dkey, old->dklen, old);
        old = NULL;
    }
    setcache__br_wrunlock(&c->defs.lock);
    def_free(old);
    if (!added) {
        def_free(n);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    return SETCACHE_OK;
}

int setcache_define_rules(setcache *c, const setcache_definition *d)
{
    if (!c || !d) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is NULL", c ? "definition" : "handle");
    }
    sc_def *n = def_new(c, d, false);
    if (!n) {
        return last_rc;
    }
    sc_def *copy = def_new(c, d, true); /* checked above: no second JSON round trip */
    if (!copy) {
        def_free(n);
        return last_rc;
    }
    copy->shared = false;
    int rc = remember_local(c, copy);
    return rc == SETCACHE_OK ? def_install(c, n) : (def_free(n), rc);
}

int setcache_define(setcache *c, const char *entity_type, const char *key, setcache_type type,
                    const char *default_value)
{
    setcache_definition d = {
        .entity_type = entity_type, .key = key, .type = type, .default_value = default_value};
    return setcache_define_rules(c, &d);
}

/* ---- shared definitions (<schema>.definitions) ---- */

static int type_of(const char *name, setcache_type *t)
{
    static const char *const names[] = {"string", "int", "double", "bool", "json"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(name, names[i]) == 0) {
            *t = (setcache_type)i;
            return SETCACHE_OK;
        }
    }
    return SETCACHE_ERR_TYPE;
}

/* Rows of defs_load, one per choice, grouped by definition. */
static int install_shared(setcache *c, PGresult *r)
{
    int rows = PQntuples(r);
    int rc = SETCACHE_OK;
    const char **choices = calloc((size_t)rows + 1, sizeof *choices);
    if (!choices) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < rows && rc == SETCACHE_OK;) {
        setcache_definition d = {.entity_type = PQgetvalue(r, i, 0), .key = PQgetvalue(r, i, 1)};
        int j = i;
        size_t nc = 0;
        while (j < rows && strcmp(PQgetvalue(r, j, 0), d.entity_type) == 0 &&
               strcmp(PQgetvalue(r, j, 1), d.key) == 0) {
            if (!PQgetisnull(r, j, 9)) {
                choices[nc++] = PQgetvalue(r, j, 9);
            }
            j++;
        }
        if (type_of(PQgetvalue(r, i, 2), &d.type) == SETCACHE_OK) {
            d.default_value = PQgetisnull(r, i, 3) ? NULL : PQgetvalue(r, i, 3);
            d.description = PQgetvalue(r, i, 4);
            d.has_min = !PQgetisnull(r, i, 5);
            d.min = d.has_min ? strtod(PQgetvalue(r, i, 5), NULL) : 0;
            d.has_max = !PQgetisnull(r, i, 6);
            d.max = d.has_max ? strtod(PQgetvalue(r, i, 6), NULL) : 0;
            d.pattern = PQgetisnull(r, i, 7) ? NULL : PQgetvalue(r, i, 7);
            d.max_length = PQgetisnull(r, i, 8) ? 0 : (size_t)atol(PQgetvalue(r, i, 8));
            d.choices = nc ? choices : NULL;
            d.nchoices = nc;
            sc_def *n = def_new(c, &d, true);
            if (n) {
                rc = def_install(c, n);
            } else if (last_rc == SETCACHE_ERR_NOMEM) {
                rc = SETCACHE_ERR_NOMEM;
            } else {
                setcache__log(c, SETCACHE_LOG_WARN, "shared definition of %s %s ignored: %s",
                              d.entity_type, d.key, setcache_errmsg());
            }
        }
        i = j;
    }
    free(choices);
    return rc;
}

/* Drop shared definitions that are gone from the table (present: names in r). */
static void drop_missing_shared(setcache *c, PGresult *r)
{
    int rows = PQntuples(r);
    setcache__br_wrlock(&c->defs.lock);
    sc_def *d, *tmp;
    HASH_ITER(hh, c->defs.table, d, tmp)
    {
        if (!d->shared) {
            continue;
        }
        bool present = false;
        const char *k = d->dkey + strlen(d->dkey) + 1;
        for (int i = 0; i < rows && !present; i++) {
            present =
                strcmp(PQgetvalue(r, i, 0), d->dkey) == 0 && strcmp(PQgetvalue(r, i, 1), k) == 0;
        }
        if (!present) {
            HASH_DEL(c->defs.table, d);
            def_free(d);
        }
    }
    setcache__br_wrunlock(&c->defs.lock);
}

static int load_shared_conn(void *arg, PGconn *conn)
{
    setcache *c = arg;
    int rc;
    const char *v[1] = {c->sql.defs};
    PGresult *r = setcache__exec(c, conn, "SELECT to_regclass($1) IS NOT NULL", 1, v, false, &rc);
    if (!r) {
        return rc;
    }
    bool exists = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!exists) {
        return SETCACHE_OK; /* a schema from before shared definitions: none */
    }
    r = setcache__exec(c, conn, c->sql.defs_load, 0, NULL, false, &rc);
    if (!r && strcmp(setcache__sqlstate(), "42501") == 0) {
        /* a role granted only the settings (before shared definitions):
         * it works on without them; the server still enforces them */
        setcache__log(c, SETCACHE_LOG_WARN,
                      "no permission to read %s: working without shared definitions (grant "
                      "SELECT on it to this role)",
                      c->sql.defs);
        return SETCACHE_OK;
    }
    if (!r) {
        return rc;
    }
    drop_missing_shared(c, r);
    rc = install_shared(c, r);
    PQclear(r);
    return rc;
}

/* Read <schema>.definitions into the handle (shared_definitions). */
int setcache__defs_load_shared(setcache *c)
{
    if (!c->shared_definitions) {
        return SETCACHE_OK;
    }
    return setcache__with_pool_read(c, load_shared_conn, c);
}

/* Check v against the rules of id's key (the type was checked before). */
int setcache__check_rules(setcache *c, const sc_ident *id, const char *v)
{
    char msg[192];
    const char *rule = NULL;
    setcache__br_rdlock(&c->defs.lock);
    sc_def *d = def_find_locked(c, id->type, id->tlen, id->key, id->klen);
    if (d) {
        rule = rule_broken(d, v, msg, sizeof msg);
    }
    setcache__br_rdunlock(&c->defs.lock);
    if (!rule) {
        return SETCACHE_OK;
    }
    setcache__count(c, SC_ST_INVALID, 1);
    return setcache__fail(SETCACHE_ERR_INVALID, "invalid value for %s %s %s: %s (rule: %s)",
                          id->type, id->id, id->key, msg, rule);
}

/* ---- publishing ---- */

typedef struct publish_job {
    setcache *c;
    sc_def **defs;
    size_t n;
    uint64_t invalid;
    const sc_bad_query *bad; /* stored rows breaking a definition, per table */
    size_t nbad;
} publish_job;

static int publish_one(setcache *c, PGconn *conn, const sc_def *d)
{
    char mn[32], mx[32], ml[24];
    snprintf(mn, sizeof mn, "%.17g", d->min);
    snprintf(mx, sizeof mx, "%.17g", d->max);
    snprintf(ml, sizeof ml, "%zu", d->max_length);
    char *ch =
        d->nchoices ? setcache__text_array((const char *const *)d->choices, d->nchoices) : NULL;
    if (d->nchoices && !ch) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    const char *v[10] = {d->dkey,
                         d->dkey + strlen(d->dkey) + 1,
                         setcache__type_name(d->type),
                         d->has_default ? d->dflt : NULL,
                         d->desc ? d->desc : "",
                         d->has_min ? mn : NULL,
                         d->has_max ? mx : NULL,
                         ch,
                         d->pattern,
                         d->max_length ? ml : NULL};
    int rc;
    PGresult *r = setcache__exec(c, conn, c->sql.defs_put, 10, v, true, &rc);
    free(ch);
    PQclear(r);
    return rc;
}

static int publish_conn(void *arg, PGconn *conn)
{
    publish_job *j = arg;
    setcache *c = j->c;
    int rc;
    PQclear(setcache__exec(c, conn, "BEGIN", 0, NULL, false, &rc));
    for (size_t i = 0; i < j->n && rc == SETCACHE_OK; i++) {
        rc = publish_one(c, conn, j->defs[i]);
    }
    /* stored rows breaking a definition: the built-in table's, then each
     * mapped table's (read by the value a load decodes) */
    for (size_t t = 0; t < j->nbad && rc == SETCACHE_OK; t++) {
        PGresult *r = setcache__exec(c, conn, j->bad[t].query, 0, NULL, false, &rc);
        if (rc == SETCACHE_OK && PQntuples(r) > 0) {
            uint64_t n = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
            j->invalid += n;
            for (int i = 0; i < PQntuples(r); i++) {
                setcache__log(c, SETCACHE_LOG_WARN,
                              "%llu stored settings of %s break a published definition (left "
                              "as they are), e.g. %s %s %s: %s",
                              (unsigned long long)n, j->bad[t].table, PQgetvalue(r, i, 1),
                              PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4));
            }
        }
        PQclear(r);
    }
    if (rc == SETCACHE_OK) {
        PQclear(setcache__exec(c, conn, "COMMIT", 0, NULL, true, &rc));
    }
    if (rc != SETCACHE_OK) {
        j->invalid = 0;
    }
    return rc; /* a failed transaction is rolled back when the connection is returned */
}

int setcache__defs_publish(setcache *c, const sc_bad_query *bad, size_t nbad,
                           uint64_t *invalid_rows)
{
    if (invalid_rows) {
        *invalid_rows = 0;
    }
    publish_job j = {c, NULL, 0, 0, bad, nbad};
    /* a copy of the local definitions: no lock is held across the network */
    setcache__br_rdlock(&c->defs.lock);
    size_t cap = HASH_COUNT(c->defs.local);
    j.defs = calloc(cap ? cap : 1, sizeof *j.defs);
    bool nomem = !j.defs;
    sc_def *d, *tmp;
    HASH_ITER(hh, c->defs.local, d, tmp)
    {
        if (nomem) {
            continue;
        }
        setcache_definition x = {.entity_type = d->dkey,
                                 .key = d->dkey + strlen(d->dkey) + 1,
                                 .type = d->type,
                                 .default_value = d->has_default ? d->dflt : NULL,
                                 .description = d->desc,
                                 .has_min = d->has_min,
                                 .has_max = d->has_max,
                                 .min = d->min,
                                 .max = d->max,
                                 .choices = (const char *const *)d->choices,
                                 .nchoices = d->nchoices,
                                 .pattern = d->pattern,
                                 .max_length = d->max_length};
        sc_def *copy = def_new(c, &x, true); /* checked when defined; no JSON round trip */
        nomem = !copy;
        if (copy) {
            j.defs[j.n++] = copy;
        }
    }
    setcache__br_rdunlock(&c->defs.lock);
    int rc = nomem ? setcache__fail(SETCACHE_ERR_NOMEM, "out of memory")
                   : setcache__with_write_pool(c, publish_conn, &j);
    for (size_t i = 0; i < j.n; i++) {
        def_free(j.defs[i]);
    }
    free(j.defs);
    if (rc == SETCACHE_OK) {
        if (invalid_rows) {
            *invalid_rows = j.invalid;
        }
        rc = setcache__defs_load_shared(c); /* what the table now says is what is used */
    }
    return rc;
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
