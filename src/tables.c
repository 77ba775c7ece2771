/*
 * tables.c - entity types served from tables the application already has
 * (setcache_options.tables): validation, the SQL for each mapped table
 * (reads decode the typed profile into one text value; writes encode by the
 * key's definition), the DDL that versions and notifies such a table, and
 * the checks made at open (does the table exist, is it writable).
 *
 * Owns: c->maps (immutable after open). No locks.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "tool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "schema.table" with both parts valid names. */
static bool valid_table(const char *t)
{
    if (!t) {
        return false;
    }
    const char *dot = strchr(t, '.');
    if (!dot || strchr(dot + 1, '.') || dot == t || dot - t > 63) {
        return false;
    }
    char s[64];
    memcpy(s, t, (size_t)(dot - t));
    s[dot - t] = '\0';
    return setcache__valid_sql_name(s) && setcache__valid_sql_name(dot + 1);
}

/* "schema"."table" */
static char *quote_table(const char *t)
{
    const char *dot = strchr(t, '.');
    return setcache__aprintf("\"%.*s\".\"%s\"", (int)(dot - t), t, dot + 1);
}

int setcache__map_check(const setcache_table_map *m, size_t i)
{
    size_t tl, il, kl;
    if (!m->entity_type ||
        setcache__check_identity(m->entity_type, NULL, NULL, &tl, &il, &kl) != SETCACHE_OK) {
        return setcache__fail(SETCACHE_ERR_ARG, "tables[%zu].entity_type is not a valid type", i);
    }
    if (!valid_table(m->table)) {
        return setcache__fail(SETCACHE_ERR_ARG,
                              "tables[%zu].table must be schema.table, each [a-z_][a-z0-9_]*", i);
    }
    if ((unsigned)m->id_kind > SETCACHE_ID_NONE) {
        return setcache__fail(SETCACHE_ERR_ARG, "tables[%zu].id_kind is unknown", i);
    }
    if ((m->id_kind == SETCACHE_ID_NONE) != (m->entity_column == NULL) ||
        (m->entity_column && !setcache__valid_sql_name(m->entity_column))) {
        return setcache__fail(SETCACHE_ERR_ARG,
                              "tables[%zu].entity_column must be a valid name, and NULL exactly "
                              "when id_kind is SETCACHE_ID_NONE",
                              i);
    }
    if (!setcache__valid_sql_name(m->key_column)) {
        return setcache__fail(SETCACHE_ERR_ARG, "tables[%zu].key_column is not a valid name", i);
    }
    bool one = m->value_column != NULL;
    bool typed = m->str_column || m->num_column || m->json_column;
    if (one == typed || (one && !setcache__valid_sql_name(m->value_column)) ||
        (typed &&
         (!setcache__valid_sql_name(m->str_column) || !setcache__valid_sql_name(m->num_column) ||
          !setcache__valid_sql_name(m->json_column)))) {
        return setcache__fail(SETCACHE_ERR_ARG,
                              "tables[%zu]: give either value_column or all of str_column, "
                              "num_column and json_column, as valid names",
                              i);
    }
    return SETCACHE_OK;
}

static const char *id_sqltype(int kind)
{
    return kind == SETCACHE_ID_INTEGER ? "bigint" : kind == SETCACHE_ID_UUID ? "uuid" : "text";
}

/*
 * The canonical text of the typed profile's number column N, the one
 * rendering every process reads (loads, refreshes and writes alike):
 * integral values of magnitude below 2^63 as a decimal integer (exactly the
 * stored value), every other value as the column type's own output
 * (double precision and real: the shortest text that reads back as the same
 * number; numeric: its exact digits).
 */
static char *num_expr(const sc_tmap *m)
{
    const char *N = m->num_col;
    switch (m->num_kind) {
    case SC_NUM_INTEGER:
        return setcache__aprintf("\"%s\"::text", N);
    case SC_NUM_NUMERIC:
        return setcache__aprintf(
            "CASE WHEN \"%s\" = trunc(\"%s\") THEN trunc(\"%s\")::text ELSE \"%s\"::text "
            "END",
            N, N, N, N);
    default:
        return setcache__aprintf(
            "CASE WHEN \"%s\" = trunc(\"%s\") AND abs(\"%s\") < 9223372036854775808 "
            "THEN \"%s\"::bigint::text ELSE \"%s\"::text END",
            N, N, N, N, N);
    }
}

/* The decoded text value of a row, NULL when the row holds no value. The
 * same expression serves loads and the RETURNING clause of every write, so
 * a writer caches exactly what a load would read. */
static char *decode_expr(const sc_tmap *m)
{
    if (m->typed) {
        char *num = num_expr(m);
        char *out =
            num ? setcache__aprintf(
                      "CASE WHEN \"%s\" IS NOT NULL AND \"%s\"::text NOT IN ('{}', 'null') THEN "
                      "CASE WHEN json_typeof(\"%s\"::json) = 'string' THEN \"%s\"::json #>> '{}' "
                      "ELSE "
                      "\"%s\"::text END "
                      "WHEN \"%s\" IS NOT NULL THEN %s "
                      "WHEN \"%s\" IS NOT NULL AND \"%s\" <> 'None' THEN \"%s\"::text END",
                      m->json_col, m->json_col, m->json_col, m->json_col, m->json_col, m->num_col,
                      num, m->str_col, m->str_col, m->str_col)
                : NULL;
        free(num);
        return out;
    }
    if (m->value_is_json) {
        return setcache__aprintf(
            "CASE WHEN json_typeof(\"%s\"::json) = 'string' THEN \"%s\"::json #>> '{}' "
            "ELSE \"%s\"::text END",
            m->value_col, m->value_col, m->value_col);
    }
    return setcache__aprintf("\"%s\"::text", m->value_col);
}

/* Upserts return the row's version and its decoded value ($1 and $2, the entity
 * type and id, are referenced so that every statement takes the same
 * parameters, also for a global table with no entity column). */
#define TYPED_UPSERT                                                                               \
    "INSERT INTO %s (%s, \"%s\", \"%s\", \"%s\") VALUES (%s, %s, %s, %s) ON CONFLICT (%s) DO "     \
    "UPDATE SET \"%s\" = EXCLUDED.\"%s\", \"%s\" = EXCLUDED.\"%s\", \"%s\" = EXCLUDED.\"%s\" "     \
    "RETURNING setcache_version, %s, $1::text, $2::text"
#define TEXT_UPSERT                                                                                \
    "INSERT INTO %s (%s, \"%s\") VALUES (%s, %s) ON CONFLICT (%s) DO UPDATE SET \"%s\" = "         \
    "EXCLUDED.\"%s\" RETURNING setcache_version, %s, $1::text"

/* Build every statement of one mapped table. The parameters are those of
 * the built-in statements ($1 type, $2 id, $3 key, $4 value), so callers
 * need not care which table a type lives in. */
static int build_sql(sc_tmap *m, const char *qt, const char *schema)
{
    char *dec = decode_expr(m);
    if (!dec) {
        return -1;
    }
    const char *ty = id_sqltype(m->id_kind);
    bool none = m->id_kind == SETCACHE_ID_NONE;
    char *idexpr = none ? strdup("'global'") : setcache__aprintf("\"%s\"::text", m->entity_col);
    char *match = none ? strdup("$2::text = 'global'")
                       : setcache__aprintf("\"%s\" = $2::%s", m->entity_col, ty);
    char *many = none ? strdup("'global' = ANY ($2::text[])")
                      : setcache__aprintf("\"%s\" = ANY ($2::%s[])", m->entity_col, ty);
    if (!idexpr || !match || !many) {
        free(dec);
        free(idexpr);
        free(match);
        free(many);
        return -1;
    }
    const char *K = m->key_col;
    m->sql.table = strdup(qt);
    m->sql.load =
        setcache__aprintf("SELECT k, v, ver FROM (SELECT \"%s\"::text AS k, %s AS v, "
                          "setcache_version AS ver FROM %s WHERE %s AND $1::text IS NOT NULL) x "
                          "WHERE v IS NOT NULL",
                          K, dec, qt, match);
    m->sql.load_type =
        setcache__aprintf("SELECT id, k, v, ver FROM (SELECT %s AS id, \"%s\"::text AS k, %s "
                          "AS v, setcache_version AS ver FROM %s WHERE $1::text IS NOT "
                          "NULL) x WHERE v IS NOT NULL ORDER BY id",
                          idexpr, K, dec, qt);
    m->sql.load_many =
        setcache__aprintf("SELECT '%s'::text, id, k, v, ver FROM (SELECT %s AS id, \"%s\"::text "
                          "AS k, %s AS v, setcache_version AS ver FROM %s WHERE %s AND "
                          "$1::text[] IS NOT NULL) x WHERE v IS NOT NULL",
                          m->type, idexpr, K, dec, qt, many);
    /* rows breaking their shared definition, as the built-in table's */
    m->sql.defs_bad = setcache__aprintf(
        "SELECT count(*) OVER (), '%s', x.id, x.k, p.problem FROM (SELECT %s AS id, \"%s\"::text "
        "AS k, %s AS v FROM %s) x JOIN \"%s\".definitions d ON d.entity_type = '%s' AND d.key = "
        "x.k CROSS JOIN LATERAL (SELECT \"%s\".value_problem(d, x.v) AS problem) p WHERE x.v IS "
        "NOT NULL AND p.problem IS NOT NULL ORDER BY 3, 4 LIMIT 3",
        m->type, idexpr, K, dec, qt, schema, m->type, schema);
    m->sql.del =
        setcache__aprintf("DELETE FROM %s WHERE %s AND \"%s\" = $3 AND $1::text IS NOT NULL "
                          "RETURNING setcache_version",
                          qt, match, K);
    char *cols = none ? setcache__aprintf("\"%s\"", K)
                      : setcache__aprintf("\"%s\", \"%s\"", m->entity_col, K);
    char *vals = none ? strdup("$3") : setcache__aprintf("$2::%s, $3", ty);
    if (m->typed) {
        const char *S = m->str_col, *N = m->num_col, *J = m->json_col;
        /* numbers go in as numeric, so the column's own assignment cast is
         * the only rounding (exact for integer and numeric columns) */
        m->up_str = setcache__aprintf(TYPED_UPSERT, qt, cols, S, N, J, vals, "$4", "NULL", "NULL",
                                      cols, S, S, N, N, J, J, dec);
        m->up_num = setcache__aprintf(TYPED_UPSERT, qt, cols, S, N, J, vals, "NULL", "$4::numeric",
                                      "NULL", cols, S, S, N, N, J, J, dec);
        m->up_json = setcache__aprintf(TYPED_UPSERT, qt, cols, S, N, J, vals, "NULL", "NULL",
                                       "$4::json", cols, S, S, N, N, J, J, dec);
        m->up_jsonstr = setcache__aprintf(TYPED_UPSERT, qt, cols, S, N, J, vals, "NULL", "NULL",
                                          "to_json($4::text)", cols, S, S, N, N, J, J, dec);
    } else {
        const char *V = m->value_col;
        m->up_str =
            setcache__aprintf(TEXT_UPSERT, qt, cols, V, vals,
                              m->value_is_json ? "to_json($4::text)" : "$4", cols, V, V, dec);
        m->up_json =
            setcache__aprintf(TEXT_UPSERT, qt, cols, V, vals,
                              m->value_is_json ? "$4::json" : "($4::json)::text", cols, V, V, dec);
    }
    free(cols);
    free(vals);
    free(dec);
    free(idexpr);
    free(match);
    free(many);
    bool ok = m->sql.table && m->sql.load && m->sql.load_type && m->sql.load_many && m->sql.del &&
              m->sql.defs_bad && m->up_str && m->up_json &&
              (!m->typed || (m->up_num && m->up_jsonstr));
    return ok ? 0 : -1;
}

static void map_free(sc_tmap *m)
{
    setcache__sql_free(&m->sql);
    free(m->type);
    free(m->table);
    free(m->fix);
    free(m->up_str);
    free(m->up_num);
    free(m->up_json);
    free(m->up_jsonstr);
    free(m->entity_col);
    free(m->key_col);
    free(m->value_col);
    free(m->str_col);
    free(m->num_col);
    free(m->json_col);
}

static char *dup_opt(const char *s, bool *oom)
{
    if (!s) {
        return NULL;
    }
    char *d = strdup(s);
    *oom |= d == NULL;
    return d;
}

int setcache__maps_init(setcache *c, const setcache_table_map *m, size_t n)
{
    if (n && !m) {
        return setcache__fail(SETCACHE_ERR_ARG, "tables is NULL but ntables is %zu", n);
    }
    for (size_t i = 0; i < n; i++) {
        int rc = setcache__map_check(&m[i], i);
        if (rc != SETCACHE_OK) {
            return rc;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(m[i].entity_type, m[j].entity_type) == 0) {
                return setcache__fail(SETCACHE_ERR_ARG, "entity type '%s' is mapped twice",
                                      m[i].entity_type);
            }
        }
    }
    if (!n) {
        return SETCACHE_OK;
    }
    c->maps = calloc(n, sizeof *c->maps);
    if (!c->maps) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    c->nmaps = n;
    bool oom = false;
    for (size_t i = 0; i < n; i++) {
        sc_tmap *t = &c->maps[i];
        t->type = dup_opt(m[i].entity_type, &oom);
        t->tlen = strlen(m[i].entity_type);
        t->table = dup_opt(m[i].table, &oom);
        t->id_kind = m[i].id_kind;
        t->typed = m[i].value_column == NULL;
        t->entity_col = dup_opt(m[i].entity_column, &oom);
        t->key_col = dup_opt(m[i].key_column, &oom);
        t->value_col = dup_opt(m[i].value_column, &oom);
        t->str_col = dup_opt(m[i].str_column, &oom);
        t->num_col = dup_opt(m[i].num_column, &oom);
        t->json_col = dup_opt(m[i].json_column, &oom);
    }
    return oom ? setcache__fail(SETCACHE_ERR_NOMEM, "out of memory") : SETCACHE_OK;
}

void setcache__maps_free(setcache *c)
{
    for (size_t i = 0; i < c->nmaps; i++) {
        map_free(&c->maps[i]);
    }
    free(c->maps);
    c->maps = NULL;
    c->nmaps = 0;
}

sc_tmap *setcache__map_of(setcache *c, const char *type, size_t tlen)
{
    for (size_t i = 0; i < c->nmaps; i++) {
        if (c->maps[i].tlen == tlen && memcmp(c->maps[i].type, type, tlen) == 0) {
            return &c->maps[i];
        }
    }
    return NULL;
}

/* Is id the server's own text of a bigint: 0, or an optional minus and a
 * digit 1-9 first, within range? ("012", "+12", "-0" and " 12" are not.) */
static bool canonical_integer(const char *id)
{
    const char *d = id[0] == '-' ? id + 1 : id;
    if (d[0] < '1' || d[0] > '9') {
        return strcmp(id, "0") == 0;
    }
    for (const char *p = d; *p; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
    }
    int64_t v;
    return setcache__parse_int(id, &v); /* in range */
}

/* Is id the server's own text of a uuid: 8-4-4-4-12 lower-case hex? */
static bool canonical_uuid(const char *id, bool *upper)
{
    *upper = false;
    if (strlen(id) != 36) {
        return false;
    }
    bool up = false;
    for (size_t i = 0; i < 36; i++) {
        char ch = id[i];
        bool ok = i == 8 || i == 13 || i == 18 || i == 23
                      ? ch == '-'
                      : (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
        up |= !ok && ch >= 'A' && ch <= 'F';
        if (!ok && !(ch >= 'A' && ch <= 'F' && i != 8 && i != 13 && i != 18 && i != 23)) {
            return false; /* not a uuid at all */
        }
    }
    *upper = up; /* a uuid, but in upper case */
    return !up;
}

/*
 * An id must be the one spelling the server itself gives the row's entity
 * column, before it is used as a cache key or sent: one row, one entity.
 * Other spellings of the same value are refused, never rewritten.
 */
int setcache__map_check_id(const sc_tmap *m, const char *id)
{
    if (m->id_kind == SETCACHE_ID_NONE) {
        if (strcmp(id, "global") != 0) {
            return setcache__fail(SETCACHE_ERR_ARG, "entity type '%s' has one entity, \"global\"",
                                  m->type);
        }
    } else if (m->id_kind == SETCACHE_ID_INTEGER) {
        if (!canonical_integer(id)) {
            return setcache__fail(SETCACHE_ERR_ARG,
                                  "entity ids of '%s' are integers written as the server writes "
                                  "them (decimal, no sign but '-', no leading zeros, within "
                                  "bigint): '%.64s' is not",
                                  m->type, id);
        }
    } else if (m->id_kind == SETCACHE_ID_UUID) {
        bool upper;
        if (!canonical_uuid(id, &upper)) {
            return setcache__fail(SETCACHE_ERR_ARG,
                                  upper ? "entity ids of '%s' are UUIDs in lower case, as the "
                                          "server writes them: '%.64s' has upper-case letters"
                                        : "entity ids of '%s' are UUIDs written as the server "
                                          "writes them (8-4-4-4-12 lower-case hex digits): "
                                          "'%.64s' is not",
                                  m->type, id);
        }
    }
    return SETCACHE_OK;
}

/* Is v a value the number column holds exactly? An integer beyond what a
 * double precision (2^53) or real (2^24) column can represent would be
 * stored rounded: refused. */
static bool exact_in_float(int kind, int64_t v)
{
    if (kind == SC_NUM_FLOAT4) {
        float f = (float)v;
        return f > -9.2233720368547758e18f && f < 9.2233720368547758e18f && (int64_t)f == v;
    }
    double d = (double)v;
    return d > -9.2233720368547758e18 && d < 9.2233720368547758e18 && (int64_t)d == v;
}

/*
 * Before a number is sent to the typed profile's number column: an integer
 * the column cannot hold exactly, or a fraction for an integer column, is
 * refused rather than silently rounded. deftype is the key's defined type
 * (-1 if none); only SETCACHE_INT and SETCACHE_DOUBLE go to that column.
 */
int setcache__map_check_number(const sc_tmap *m, const char *value, int deftype)
{
    if (!m->typed || (deftype != SETCACHE_INT && deftype != SETCACHE_DOUBLE)) {
        return SETCACHE_OK;
    }
    int64_t iv;
    bool integral = setcache__parse_int(value, &iv);
    if (integral && (m->num_kind == SC_NUM_FLOAT8 || m->num_kind == SC_NUM_FLOAT4) &&
        !exact_in_float(m->num_kind, iv)) {
        return setcache__fail(SETCACHE_ERR_ARG,
                              "%s cannot be stored exactly in %s column %s of %s (integers up to "
                              "2^%d can)",
                              value, m->num_kind == SC_NUM_FLOAT8 ? "double precision" : "real",
                              m->num_col, m->table, m->num_kind == SC_NUM_FLOAT8 ? 53 : 24);
    }
    double dv;
    if (!integral && m->num_kind == SC_NUM_INTEGER && setcache__parse_double(value, &dv) &&
        dv > -9.2e18 && dv < 9.2e18 && dv != (double)(int64_t)dv) {
        return setcache__fail(SETCACHE_ERR_ARG,
                              "%s is not an integer, and column %s of %s holds integers only",
                              value, m->num_col, m->table);
    }
    return SETCACHE_OK;
}

/* Which SC_NUM_* a column type (format_type) is; -1 if it is no number. */
static int num_kind_of(const char *ty)
{
    if (strcmp(ty, "smallint") == 0 || strcmp(ty, "integer") == 0 || strcmp(ty, "bigint") == 0) {
        return SC_NUM_INTEGER;
    }
    if (strncmp(ty, "numeric", 7) == 0) {
        return SC_NUM_NUMERIC;
    }
    if (strcmp(ty, "double precision") == 0) {
        return SC_NUM_FLOAT8;
    }
    if (strcmp(ty, "real") == 0) {
        return SC_NUM_FLOAT4;
    }
    return -1;
}

/* The type of column col of table qt (format_type), malloc'd; NULL with
 * the error set if there is no such column. */
static char *column_type(setcache *c, PGconn *conn, const char *qt, const sc_tmap *m,
                         const char *col, int *rc)
{
    const char *v[2] = {qt, col};
    PGresult *r = setcache__exec(c, conn,
                                 "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                                 "attrelid = $1::regclass AND attname = $2 AND NOT attisdropped",
                                 2, v, false, rc);
    char *ty = NULL;
    if (r && PQntuples(r) == 1) {
        ty = strdup(PQgetvalue(r, 0, 0));
        if (!ty) {
            *rc = setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        }
    } else if (*rc == SETCACHE_OK) {
        *rc = setcache__fail(SETCACHE_ERR_DB, "%s has no column %s", m->table, col);
    }
    PQclear(r);
    return ty;
}

/* At open: the table exists, what the value column is, whether a unique
 * constraint allows upserts; then build the statements. */
int setcache__maps_prepare(setcache *c, PGconn *conn)
{
    for (size_t i = 0; i < c->nmaps; i++) {
        sc_tmap *m = &c->maps[i];
        char *qt = quote_table(m->table);
        if (!qt) {
            return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        }
        bool exists;
        int rc = setcache__table_exists(c, conn, qt, &exists);
        if (rc != SETCACHE_OK || !exists) {
            free(qt);
            return rc != SETCACHE_OK ? rc
                                     : setcache__fail(SETCACHE_ERR_DB,
                                                      "mapped table %s does not exist", m->table);
        }
        PGresult *r;
        char *ty = column_type(c, conn, qt, m, m->typed ? m->num_col : m->value_col, &rc);
        if (!ty) {
            free(qt);
            return rc;
        }
        if (m->typed) {
            m->num_kind = num_kind_of(ty);
        } else {
            m->value_is_json = strcmp(ty, "json") == 0 || strcmp(ty, "jsonb") == 0;
        }
        if (m->typed && m->num_kind < 0) {
            rc = setcache__fail(SETCACHE_ERR_DB,
                                "%s.%s is %s; the number column of the typed profile must be "
                                "smallint, integer, bigint, numeric, real or double precision",
                                m->table, m->num_col, ty);
        }
        free(ty);
        if (rc != SETCACHE_OK) {
            free(qt);
            return rc;
        }
        const char *v4[1] = {qt};
        r = setcache__exec(c, conn,
                           "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND "
                           "attname = 'setcache_version' AND NOT attisdropped",
                           1, v4, false, &rc);
        bool versioned = r && strcmp(PQgetvalue(r, 0, 0), "1") == 0;
        PQclear(r);
        if (rc == SETCACHE_OK && !versioned) {
            free(qt);
            return setcache__fail(SETCACHE_ERR_DB,
                                  "mapped table %s has no setcache_version column: open with "
                                  "create_schema, or apply the output of `setcache --map ... "
                                  "schema`",
                                  m->table);
        }
        char *cols = m->entity_col ? setcache__aprintf("{%s,%s}", m->entity_col, m->key_col)
                                   : setcache__aprintf("{%s}", m->key_col);
        const char *v3[2] = {qt, cols};
        r = setcache__exec(
            c, conn,
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = "
            "$1::regclass AND i.indisunique AND i.indpred IS NULL AND "
            "(SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute "
            "a WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) = "
            "(SELECT array_agg(x ORDER BY x) FROM unnest($2::text[]) x))",
            2, v3, false, &rc);
        m->writable = r && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
        m->fix =
            setcache__aprintf("ALTER TABLE %s ADD CONSTRAINT %s_setcache_key UNIQUE (%s%s%s)", qt,
                              strchr(m->table, '.') + 1, m->entity_col ? m->entity_col : "",
                              m->entity_col ? ", " : "", m->key_col);
        free(cols);
        if (rc != SETCACHE_OK || build_sql(m, qt, c->schema) != 0 || !m->fix) {
            free(qt);
            return rc != SETCACHE_OK ? rc : setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        }
        free(qt);
    }
    return SETCACHE_OK;
}

/*
 * The DDL that versions and notifies mapped tables: a setcache_version
 * column (adding it rewrites the table once, under an exclusive lock), a
 * trigger that gives every INSERT and UPDATE a new version, and triggers that
 * notify exactly like the built-in table. All names were validated.
 */
/*
 * The decoded text value of row R ("NEW.", "OLD." or "" for a table's own
 * columns) inside the DDL's functions: the same value as decode_expr, but
 * written without knowing the columns' types (the DDL is printed before any
 * connection: `setcache schema`), so the number rendering asks pg_typeof.
 * PL/pgSQL compiles a trigger function once per table, so the branches
 * always see one type.
 */
static char *row_value_expr(const setcache_table_map *m, const char *R)
{
    if (!m->str_column) {
        const char *V = m->value_column;
        return setcache__aprintf(
            "CASE WHEN pg_typeof(%s\"%s\") IN ('json'::regtype, 'jsonb'::regtype) THEN "
            "CASE WHEN json_typeof(%s\"%s\"::text::json) = 'string' THEN "
            "%s\"%s\"::text::json #>> '{}' ELSE %s\"%s\"::text END ELSE %s\"%s\"::text END",
            R, V, R, V, R, V, R, V, R, V);
    }
    const char *S = m->str_column, *N = m->num_column, *J = m->json_column;
    return setcache__aprintf(
        "CASE WHEN %s\"%s\" IS NOT NULL AND %s\"%s\"::text NOT IN ('{}', 'null') THEN "
        "CASE WHEN json_typeof(%s\"%s\"::text::json) = 'string' THEN %s\"%s\"::text::json #>> '{}' "
        "ELSE %s\"%s\"::text END "
        "WHEN %s\"%s\" IS NOT NULL THEN "
        "CASE WHEN pg_typeof(%s\"%s\") IN ('smallint'::regtype, 'integer'::regtype, "
        "'bigint'::regtype) THEN %s\"%s\"::text "
        "WHEN pg_typeof(%s\"%s\") = 'numeric'::regtype THEN CASE WHEN %s\"%s\" = trunc(%s\"%s\") "
        "THEN trunc(%s\"%s\")::text ELSE %s\"%s\"::text END "
        "WHEN %s\"%s\" = trunc(%s\"%s\") AND abs(%s\"%s\") < 9223372036854775808 THEN "
        "%s\"%s\"::bigint::text ELSE %s\"%s\"::text END "
        "WHEN %s\"%s\" IS NOT NULL AND %s\"%s\"::text <> 'None' THEN %s\"%s\"::text END",
        R, J, R, J, R, J, R, J, R, J, R, N, R, N, R, N, R, N, R, N, R, N, R, N, R, N, R, N, R, N, R,
        N, R, N, R, N, R, S, R, S, R, S);
}

/* A mapped row's id text for row R ("OLD.", "NEW." or "" for the table's own
 * columns). malloc'd. */
static char *row_id_expr(const setcache_table_map *m, const char *R)
{
    return m->entity_column ? setcache__aprintf("%s\"%s\"::text", R, m->entity_column)
                            : strdup("'global'");
}

/* "an UPDATE moved the row to another entity or key". malloc'd. */
static char *row_moved_expr(const setcache_table_map *m)
{
    const char *E = m->entity_column, *K = m->key_column;
    return E ? setcache__aprintf("(OLD.\"%s\", OLD.\"%s\") IS DISTINCT FROM (NEW.\"%s\", "
                                 "NEW.\"%s\")",
                                 E, K, E, K)
             : setcache__aprintf("OLD.\"%s\" IS DISTINCT FROM NEW.\"%s\"", K, K);
}

/* The part of a mapped table's DDL that versions and announces its rows, and
 * (managed settings) checks each written value against its key's definition
 * and records the change in the history, as the built-in table's triggers
 * do. */
static char *map_ddl(const char *schema, const char *channel, const setcache_table_map *m)
{
    const char *S = schema, *C = channel, *T = m->entity_type, *K = m->key_column;
    char *qt = quote_table(m->table);
    char *oldid = row_id_expr(m, "OLD.");
    char *newid = row_id_expr(m, "NEW.");
    char *ownid = row_id_expr(m, "");
    char *chk = row_moved_expr(m);
    char *oldv = row_value_expr(m, "OLD.");
    char *newv = row_value_expr(m, "NEW.");
    char *ownv = row_value_expr(m, "");
    char *out = NULL;
    if (qt && oldid && newid && ownid && chk && oldv && newv && ownv) {
        char *head = setcache__aprintf(
            "\n-- entity type %s served from %s\n"
            "ALTER TABLE %s ADD COLUMN IF NOT EXISTS setcache_version bigint NOT NULL\n"
            "    DEFAULT nextval('\"%s\".settings_version_seq');\n"
            "CREATE OR REPLACE FUNCTION \"%s\".map_stamp() RETURNS trigger LANGUAGE "
            "plpgsql AS $fn$\n"
            "BEGIN\n    NEW.setcache_version := "
            "pg_catalog.nextval('\"%s\".settings_version_seq');\n"
            "    RETURN NEW;\nEND\n$fn$;\n",
            T, m->table, qt, S, S, S);
        /* as settings_notify: check, history, notify; a row whose columns
         * hold no value (it reads as absent) is neither checked nor recorded */
        char *fn = setcache__aprintf(
            "CREATE OR REPLACE FUNCTION \"%s\".\"notify_%s\"() RETURNS trigger LANGUAGE plpgsql\n"
            "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$\n"
            "DECLARE d \"%s\".definitions; problem text; oldv text; newv text;\n"
            "    renamed boolean := TG_OP = 'UPDATE' AND %s;\n"
            "BEGIN\n"
            "    IF TG_OP <> 'INSERT' THEN\n"
            "        oldv := %s;\n"
            "    END IF;\n"
            "    IF TG_OP <> 'DELETE' THEN\n"
            "        newv := %s;\n"
            "        IF newv IS NOT NULL THEN\n"
            "            SELECT * INTO d FROM \"%s\".definitions\n"
            "             WHERE entity_type = '%s' AND key = NEW.\"%s\"::text;\n"
            "            IF FOUND THEN\n"
            "                problem := \"%s\".value_problem(d, newv);\n"
            "                IF problem IS NOT NULL THEN\n"
            "                    RAISE EXCEPTION 'invalid value for %% %% %%: %%', '%s', %s,\n"
            "                          NEW.\"%s\", problem\n"
            "                    USING ERRCODE = 'check_violation', CONSTRAINT = "
            "'setcache_definition',\n"
            "                          SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;\n"
            "                END IF;\n"
            "            END IF;\n"
            "        END IF;\n"
            "    END IF;\n"
            "    IF TG_OP = 'DELETE' OR renamed THEN\n"
            "        IF oldv IS NOT NULL THEN\n"
            "            INSERT INTO \"%s\".history (entity_type, entity_id, key, op, old_value, "
            "version)\n"
            "            VALUES ('%s', %s, OLD.\"%s\"::text, 'delete', oldv, "
            "OLD.setcache_version);\n"
            "        END IF;\n"
            "        PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', 'D', OLD.setcache_version,\n"
            "                          '%s', %s, OLD.\"%s\"));\n"
            "    END IF;\n"
            "    IF TG_OP <> 'DELETE' THEN\n"
            "        IF renamed THEN\n"
            "            oldv := NULL;\n"
            "        END IF;\n"
            "        IF newv IS DISTINCT FROM oldv THEN\n"
            "            INSERT INTO \"%s\".history (entity_type, entity_id, key, op, old_value, "
            "new_value,\n"
            "                                       version)\n"
            "            VALUES ('%s', %s, NEW.\"%s\"::text,\n"
            "                    CASE WHEN oldv IS NULL THEN 'insert' WHEN newv IS NULL THEN "
            "'delete'\n"
            "                         ELSE 'update' END, oldv, newv, NEW.setcache_version);\n"
            "        END IF;\n"
            "        PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', left(TG_OP, 1),\n"
            "                          NEW.setcache_version, '%s', %s, NEW.\"%s\"));\n"
            "    END IF;\n"
            "    RETURN NULL;\nEND\n$fn$;\n",
            S, T, S, chk, oldv, newv, S, T, K, S, T, newid, K, S, T, oldid, K, C, T, oldid, K, S, T,
            newid, K, C, T, newid, K);
        char *trunc = setcache__aprintf(
            "CREATE OR REPLACE FUNCTION \"%s\".\"history_truncate_%s\"() RETURNS trigger\n"
            "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$\n"
            "BEGIN\n"
            "    INSERT INTO \"%s\".history (entity_type, entity_id, key, op, old_value, version)\n"
            "    SELECT '%s', id, k, 'truncate', v, ver FROM (SELECT %s AS id, \"%s\"::text AS "
            "k,\n"
            "           %s AS v, setcache_version AS ver FROM %s) x WHERE v IS NOT NULL;\n"
            "    RETURN NULL;\nEND\n$fn$;\n"
            "DROP TRIGGER IF EXISTS setcache_stamp ON %s;\n"
            "CREATE TRIGGER setcache_stamp BEFORE INSERT OR UPDATE ON %s\n"
            "    FOR EACH ROW EXECUTE FUNCTION \"%s\".map_stamp();\n"
            "DROP TRIGGER IF EXISTS setcache_notify ON %s;\n"
            "CREATE TRIGGER setcache_notify AFTER INSERT OR UPDATE OR DELETE ON %s\n"
            "    FOR EACH ROW EXECUTE FUNCTION \"%s\".\"notify_%s\"();\n"
            "DROP TRIGGER IF EXISTS setcache_history_truncate ON %s;\n"
            "CREATE TRIGGER setcache_history_truncate BEFORE TRUNCATE ON %s\n"
            "    FOR EACH STATEMENT EXECUTE FUNCTION \"%s\".\"history_truncate_%s\"();\n"
            "DROP TRIGGER IF EXISTS setcache_notify_truncate ON %s;\n"
            "CREATE TRIGGER setcache_notify_truncate AFTER TRUNCATE ON %s\n"
            "    FOR EACH STATEMENT EXECUTE FUNCTION \"%s\".settings_notify_truncate();\n",
            S, T, S, T, ownid, K, ownv, qt, qt, qt, S, qt, qt, S, T, qt, qt, S, T, qt, qt, S);
        out = head && fn && trunc ? setcache__aprintf("%s%s%s", head, fn, trunc) : NULL;
        free(head);
        free(fn);
        free(trunc);
    }
    free(qt);
    free(oldid);
    free(newid);
    free(ownid);
    free(chk);
    free(oldv);
    free(newv);
    free(ownv);
    return out;
}

/* A subscriber's side of one mapped table (see replica.c): a row trigger
 * that only announces replicated rows (checks and history were done on the
 * primary and arrive replicated), firing only in the apply worker (ENABLE
 * REPLICA); the TRUNCATE announcement fires for replicated TRUNCATEs too
 * (ENABLE ALWAYS); every local write is refused by guard. */
char *setcache__map_replica_ddl(const char *schema, const char *channel,
                                const setcache_table_map *m, const char *guard)
{
    const char *S = schema, *C = channel, *T = m->entity_type, *K = m->key_column;
    char *qt = quote_table(m->table);
    char *oldid = row_id_expr(m, "OLD.");
    char *newid = row_id_expr(m, "NEW.");
    char *chk = row_moved_expr(m);
    char *out =
        qt && oldid && newid && chk
            ? setcache__aprintf(
                  "\n-- entity type %s: replicated rows of %s are announced here\n"
                  "CREATE OR REPLACE FUNCTION \"%s\".\"replicated_notify_%s\"() RETURNS trigger\n"
                  "LANGUAGE plpgsql AS $fn$\n"
                  "BEGIN\n"
                  "    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND %s) THEN\n"
                  "        PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', 'D', "
                  "OLD.setcache_version,\n"
                  "                          '%s', %s, OLD.\"%s\"));\n"
                  "    END IF;\n"
                  "    IF TG_OP <> 'DELETE' THEN\n"
                  "        PERFORM pg_notify('%s', concat_ws(E'\\x1f', '1', left(TG_OP, 1),\n"
                  "                          NEW.setcache_version, '%s', %s, NEW.\"%s\"));\n"
                  "    END IF;\n"
                  "    RETURN NULL;\nEND\n$fn$;\n"
                  "DROP TRIGGER IF EXISTS setcache_replicated_notify ON %s;\n"
                  "CREATE TRIGGER setcache_replicated_notify AFTER INSERT OR UPDATE OR DELETE ON "
                  "%s\n"
                  "    FOR EACH ROW EXECUTE FUNCTION \"%s\".\"replicated_notify_%s\"();\n"
                  "ALTER TABLE %s ENABLE REPLICA TRIGGER setcache_replicated_notify;\n"
                  "ALTER TABLE %s ENABLE ALWAYS TRIGGER setcache_notify_truncate;\n"
                  "DROP TRIGGER IF EXISTS setcache_subscriber_guard ON %s;\n"
                  "CREATE TRIGGER setcache_subscriber_guard BEFORE INSERT OR UPDATE OR DELETE OR "
                  "TRUNCATE ON %s\n"
                  "    FOR EACH STATEMENT EXECUTE FUNCTION %s;\n",
                  T, m->table, S, T, chk, C, T, oldid, K, C, T, newid, K, qt, qt, S, T, qt, qt, qt,
                  qt, guard)
            : NULL;
    free(qt);
    free(oldid);
    free(newid);
    free(chk);
    return out;
}

/* The GRANT and publication name of a mapped table: "schema"."table". */
char *setcache__map_quoted(const setcache_table_map *m)
{
    return quote_table(m->table);
}

char *setcache__maps_ddl(const char *schema, const char *channel, const setcache_table_map *m,
                         size_t n)
{
    char *out = strdup("");
    for (size_t i = 0; out && i < n; i++) {
        char *part = map_ddl(schema, channel, &m[i]);
        char *joined = part ? setcache__aprintf("%s%s", out, part) : NULL;
        free(out);
        out = joined;
        free(part);
    }
    return out;
}

/* Add a row to a detached table; a key seen twice (possible in a mapped
 * table without a unique constraint) is marked, not silently picked. */
int setcache__rows_add(sc_etable *rows, const char *key, const char *value, size_t vlen,
                       int64_t version)
{
    size_t klen = strlen(key);
    if (klen == 0 || klen > SETCACHE_MAX_KEY_LEN) {
        return SETCACHE_OK; /* not addressable: only a mapped table can hold it */
    }
    sc_entry *e = setcache__et_find(rows, key, klen, setcache__hash(key, klen));
    if (e) {
        e->flags |= SC_E_DUP;
        if (version > e->version) {
            e->version = version;
        }
        return SETCACHE_OK;
    }
    e = setcache__entry_new(key, klen, value, vlen, version, false);
    if (!e) {
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory loading an entity");
    }
    sc_entry *replaced;
    if (setcache__et_put(rows, e, &replaced) != SETCACHE_OK) {
        free(e);
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory loading an entity");
    }
    return SETCACHE_OK; /* nothing replaced: the key was not there */
}

const sc_sql *setcache__sql_for(setcache *c, const char *type, size_t tlen)
{
    sc_tmap *m = c->nmaps ? setcache__map_of(c, type, tlen) : NULL;
    return m ? &m->sql : &c->sql;
}

/* The signature a mapped table's notify function carries once set up
 * (map revision 3: map_stamp names nextval with its schema). Keep what
 * follows the revision as it is in later revisions: an older release
 * compares it to its own to tell a newer release's set-up for the same
 * table and columns from one for another (setcache__apply_ddl_once). */
static char *signature(const char *channel, const setcache_table_map *m)
{
    return setcache__aprintf(
        "setcache map 3 channel %s table %s entity %s key %s value %s %s %s %s", channel, m->table,
        m->entity_column ? m->entity_column : "-", m->key_column,
        m->value_column ? m->value_column : "-", m->str_column ? m->str_column : "-",
        m->num_column ? m->num_column : "-", m->json_column ? m->json_column : "-");
}

/* Publishing checks the stored rows of the built-in table and of every
 * mapped table against the definitions it publishes. */
int setcache_publish_definitions(setcache *c, uint64_t *invalid_rows)
{
    if (!c) {
        return setcache__fail(SETCACHE_ERR_ARG, "handle is NULL");
    }
    sc_bad_query *bad = calloc(c->nmaps + 1, sizeof *bad);
    if (!bad) {
        if (invalid_rows) {
            *invalid_rows = 0;
        }
        return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
    }
    bad[0] = (sc_bad_query){c->sql.table, c->sql.defs_bad};
    for (size_t i = 0; i < c->nmaps; i++) {
        bad[i + 1] = (sc_bad_query){c->maps[i].table, c->maps[i].sql.defs_bad};
    }
    int rc = setcache__defs_publish(c, bad, c->nmaps + 1, invalid_rows);
    free(bad);
    return rc;
}

/* With create_schema: version and notify each mapped table unless it is set
 * up already for this channel (so concurrent opens don't lock it again). */
int setcache__maps_apply(setcache *c, PGconn *conn, const setcache_table_map *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *sig = signature(c->channel, &m[i]);
        char *fn = setcache__aprintf("\"%s\".\"notify_%s\"()", c->schema, m[i].entity_type);
        char *ddl = setcache__maps_ddl(c->schema, c->channel, &m[i], 1);
        char *all = sig && fn && ddl
                        ? setcache__aprintf("%sCOMMENT ON FUNCTION %s IS '%s';\n", ddl, fn, sig)
                        : NULL;
        int rc = all ? setcache__apply_ddl_once(c, conn, fn, sig, all, "setting up a mapped table")
                     : setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
        free(sig);
        free(fn);
        free(ddl);
        free(all);
        if (rc != SETCACHE_OK) {
            return rc;
        }
    }
    return SETCACHE_OK;
}

/* A mapped table's GRANTs (see setcache__grants_ddl): the reader SELECTs
 * it, the writer also changes it (its versions come from the built-in
 * table's sequence, granted with the built-in table). */
static char *map_grants(const setcache_table_map *m, const char *role, bool writer)
{
    char *qt = quote_table(m->table);
    const char *dot = strchr(m->table, '.');
    char *out =
        qt ? setcache__aprintf("GRANT USAGE ON SCHEMA \"%.*s\" TO %s;\n"
                               "GRANT %s ON %s TO %s;\n",
                               (int)(dot - m->table), m->table, role,
                               writer ? "SELECT, INSERT, UPDATE, DELETE" : "SELECT", qt, role)
           : NULL;
    free(qt);
    return out;
}

/* A role name fit to quote: 1-63 bytes, no control characters. */
static int check_role(const char *what, const char *role)
{
    size_t n = strlen(role);
    bool ok = n >= 1 && n <= 63;
    for (size_t i = 0; ok && i < n; i++) {
        ok = (unsigned char)role[i] >= 0x20 && role[i] != 0x7F;
    }
    return ok ? SETCACHE_OK
              : setcache__fail(SETCACHE_ERR_ARG,
                               "%s must be a role name of 1-63 bytes without control characters",
                               what);
}

/* The GRANTs for one role on the built-in table and every mapped table. */
static char *grants_for(const char *schema, const setcache_table_map *m, size_t n, const char *role,
                        bool writer)
{
    char *q = setcache__quote_ident(role);
    char *out = q ? setcache__grants_ddl(schema, q, writer) : NULL;
    for (size_t i = 0; out && i < n; i++) {
        char *g = map_grants(&m[i], q, writer);
        char *joined = g ? setcache__aprintf("%s%s", out, g) : NULL;
        free(out);
        free(g);
        out = joined;
    }
    free(q);
    return out;
}

int setcache__tool_schema(const char *schema, const char *channel, const setcache_table_map *m,
                          size_t n, const char *reader, const char *writer, char **out)
{
    *out = NULL;
    int rc = SETCACHE_OK;
    if (reader) {
        rc = check_role("--reader-role", reader);
    }
    if (rc == SETCACHE_OK && writer) {
        rc = check_role("--writer-role", writer);
    }
    if (rc != SETCACHE_OK) {
        return rc;
    }
    char *ddl = setcache__ddl(schema, channel);
    if (!ddl) {
        return setcache__fail(SETCACHE_ERR_ARG,
                              "schema and channel must match [a-z_][a-z0-9_]{0,62}");
    }
    for (size_t i = 0; i < n; i++) {
        char msg[600];
        if (setcache__map_check(&m[i], i) != SETCACHE_OK) {
            snprintf(msg, sizeof msg, "%s", setcache_errmsg());
            free(ddl);
            return setcache__fail(SETCACHE_ERR_ARG, "--map: %s", msg);
        }
    }
    char *maps = setcache__maps_ddl(schema, channel, m, n);
    char *rg = reader ? grants_for(schema, m, n, reader, false) : strdup("");
    char *wg = writer ? grants_for(schema, m, n, writer, true) : strdup("");
    bool roles = reader || writer;
    *out = maps && rg && wg ? setcache__aprintf("%s%s%s%s%s", ddl, maps,
                                                roles ? "\n-- least-privilege roles\n" : "", rg, wg)
                            : NULL;
    free(ddl);
    free(maps);
    free(rg);
    free(wg);
    return *out ? SETCACHE_OK : setcache__fail(SETCACHE_ERR_NOMEM, "out of memory");
}
