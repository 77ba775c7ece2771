/*
 * cli_admin.c - the setcache tool's managed-settings commands, which read
 * and write the schema's own tables (definitions, history, settings)
 * directly on a pooled connection:
 *
 *   describe [TYPE [KEY]]                         the shared definitions
 *   history TYPE [ID [KEY]] [--since TIME] [--limit N], history --prune --older-than AGE
 *   get TYPE ID KEY --at TIME                     the value then, from the history
 *   export [TYPE [ID]]                            definitions and values as JSON
 *   import FILE [--dry-run] [--prune]             validate all, show the diff, apply
 *
 * JSON is made and parsed by the server (jsonb functions), never here.
 * Identifiers in SQL text: the schema name only, which setcache_open has
 * validated ([a-z_][a-z0-9_]*); everything else is a parameter.
 */
#define _GNU_SOURCE
#include <libpq-fe.h> /* first: setcache.h declares setcache_with_conn after it */

#include "cli.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --json: describe and history print what the server made of the rows. */
static bool as_json;

static int print_document(PGresult *r)
{
    printf("%s\n", PQgetvalue(r, 0, 0)); /* JSON, made by the server */
    return 0;
}

typedef struct query_job {
    const char *sql;
    const char *const *vals;
    int n;
    int (*print)(PGresult *r); /* the exit code */
    int code;
} query_job;

static int run_query(void *arg, PGconn *conn)
{
    query_job *q = arg;
    PGresult *r = PQexecParams(conn, q->sql, q->n, NULL, q->vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fputs("setcache: ", stderr);
        tool_put_escaped(stderr, PQresultErrorMessage(r));
        fputc('\n', stderr);
        q->code = 3;
    } else {
        q->code = q->print(r);
    }
    PQclear(r);
    return SETCACHE_OK;
}

/* One field for a person, or "-" for NULL. */
static void put_field(PGresult *r, int i, int j)
{
    tool_put_escaped(stdout, PQgetisnull(r, i, j) ? "-" : PQgetvalue(r, i, j));
}

static int print_definitions(PGresult *r)
{
    for (int i = 0; i < PQntuples(r); i++) {
        put_field(r, i, 0); /* type.key */
        printf("\t%s", PQgetvalue(r, i, 1));
        fputs("\tdefault ", stdout);
        put_field(r, i, 2);
        fputs("\t", stdout);
        put_field(r, i, 3); /* rules */
        fputs("\t", stdout);
        put_field(r, i, 4); /* description */
        fputc('\n', stdout);
    }
    return 0;
}

static int print_history(PGresult *r)
{
    for (int i = 0; i < PQntuples(r); i++) {
        for (int j = 0; j < PQnfields(r); j++) {
            if (j) {
                fputc('\t', stdout);
            }
            put_field(r, i, j);
        }
        fputc('\n', stdout);
    }
    return 0;
}

static int print_value_at(PGresult *r)
{
    if (PQntuples(r) == 0 || PQgetisnull(r, 0, 0)) {
        fprintf(stderr, "setcache: get --at: no value at that time (unset, deleted, or before the "
                        "history began)\n");
        return 1;
    }
    if (isatty(STDOUT_FILENO)) {
        tool_put_escaped(stdout, PQgetvalue(r, 0, 0));
        fputc('\n', stdout);
    } else {
        printf("%s\n", PQgetvalue(r, 0, 0));
    }
    return 0;
}

static int print_pruned(PGresult *r)
{
    printf("%s history rows deleted\n", PQcmdTuples(r));
    return 0;
}

static int query(setcache *c, const char *sql, const char *const *vals, int n,
                 int (*print)(PGresult *r))
{
    query_job q = {sql, vals, n, print, 0};
    int rc = setcache_with_conn(c, run_query, &q);
    return rc != SETCACHE_OK ? tool_fail(rc, "query") : q.code;
}

static int describe(setcache *c, const char *schema, int nargs, char **args)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT entity_type || '.' || key, type, default_value, nullif(concat_ws(' ', "
             "CASE WHEN min_value IS NOT NULL OR max_value IS NOT NULL THEN '[' || "
             "coalesce(min_value::text, '') || '..' || coalesce(max_value::text, '') || ']' END, "
             "CASE WHEN choices IS NOT NULL THEN 'one of ' || array_to_string(choices, '|') END, "
             "CASE WHEN pattern IS NOT NULL THEN 'matching ' || pattern END, CASE WHEN "
             "max_length IS NOT NULL THEN 'at most ' || max_length || ' characters' END), ''), "
             "nullif(description, '') FROM \"%s\".definitions WHERE ($1::text IS NULL OR "
             "entity_type = $1) AND ($2::text IS NULL OR key = $2) ORDER BY entity_type, key",
             schema);
    const char *v[2] = {nargs > 0 ? args[0] : NULL, nargs > 1 ? args[1] : NULL};
    if (as_json) {
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(jsonb_pretty(jsonb_agg(jsonb_strip_nulls(jsonb_build_object("
                 "'entity_type', entity_type, 'key', key, 'type', type, 'default', "
                 "default_value, 'description', nullif(description, ''), 'min', min_value, "
                 "'max', max_value, 'choices', to_jsonb(choices), 'pattern', pattern, "
                 "'max_length', max_length, 'version', version, 'updated_at', updated_at)) "
                 "ORDER BY entity_type COLLATE \"C\", key COLLATE \"C\")), '[]') FROM "
                 "\"%s\".definitions WHERE ($1::text IS NULL OR entity_type = $1) AND ($2::text "
                 "IS NULL OR key = $2)",
                 schema);
        return query(c, sql, v, 2, print_document);
    }
    return query(c, sql, v, 2, print_definitions);
}

/* "90d" -> "90 days", "12h" -> "12 hours"; anything else as PostgreSQL reads
 * an interval. */
static void interval_of(const char *age, char *out, size_t cap)
{
    size_t n = strlen(age);
    char unit = n ? age[n - 1] : 0;
    bool digits = n > 1 && strspn(age, "0123456789") == n - 1;
    if (digits && (unit == 'd' || unit == 'h' || unit == 'm' || unit == 's')) {
        const char *name = unit == 'd'   ? "days"
                           : unit == 'h' ? "hours"
                           : unit == 'm' ? "minutes"
                                         : "seconds";
        snprintf(out, cap, "%.*s %s", (int)(n - 1), age, name);
    } else {
        snprintf(out, cap, "%s", age);
    }
}

/* history TYPE [ID [KEY]] [--since TIME] [--limit N] | history --prune --older-than AGE */
static int history(setcache *c, const char *schema, int nargs, char **args)
{
    const char *pos[3] = {NULL, NULL, NULL}, *since = NULL, *limit = "100", *older = NULL;
    bool prune = false;
    int npos = 0;
    for (int k = 0; k < nargs; k++) {
        const char *a = args[k];
        if (strcmp(a, "--prune") == 0) {
            prune = true;
        } else if (strcmp(a, "--since") == 0 && k + 1 < nargs) {
            since = args[++k];
        } else if (strcmp(a, "--limit") == 0 && k + 1 < nargs) {
            limit = args[++k];
        } else if (strcmp(a, "--older-than") == 0 && k + 1 < nargs) {
            older = args[++k];
        } else if (strncmp(a, "--", 2) != 0 && npos < 3) {
            pos[npos++] = a;
        } else {
            return tool_usage();
        }
    }
    char sql[1024];
    if (prune) {
        if (!older || npos) {
            return tool_usage();
        }
        char iv[64];
        interval_of(older, iv, sizeof iv);
        snprintf(sql, sizeof sql,
                 "DELETE FROM \"%s\".history WHERE changed_at < now() - $1::interval", schema);
        const char *v[1] = {iv};
        return query(c, sql, v, 1, print_pruned);
    }
    if (npos == 0 || older) {
        return tool_usage();
    }
    snprintf(sql, sizeof sql,
             "SELECT changed_at, entity_id, key, op, old_value, new_value, version, role, "
             "application_name, client_addr, xid FROM \"%s\".history WHERE entity_type = $1 "
             "AND ($2::text IS NULL OR entity_id = $2) AND ($3::text IS NULL OR key = $3) AND "
             "($4::timestamptz IS NULL OR changed_at >= $4) ORDER BY id DESC LIMIT $5::bigint",
             schema);
    const char *v[5] = {pos[0], pos[1], pos[2], since, limit};
    if (as_json) {
        char wrapped[1400];
        snprintf(wrapped, sizeof wrapped,
                 "SELECT coalesce(jsonb_pretty(jsonb_agg(to_jsonb(h))), '[]') FROM (%s) AS h", sql);
        return query(c, wrapped, v, 5, print_document);
    }
    return query(c, sql, v, 5, print_history);
}

static int get_at(setcache *c, const char *schema, char **args)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT CASE WHEN op IN ('delete', 'truncate') THEN NULL ELSE new_value END FROM "
             "\"%s\".history WHERE entity_type = $1 AND entity_id = $2 AND key = $3 AND "
             "changed_at <= $4::timestamptz ORDER BY id DESC LIMIT 1",
             schema);
    const char *v[4] = {args[0], args[1], args[2], args[4]};
    return query(c, sql, v, 4, print_value_at);
}

/* ---- export ---- */

/* One stable, sorted JSON document: the definitions of the types in scope
 * and the settings in scope (byte order: COLLATE "C"). */
static int export_doc(setcache *c, const char *schema, int nargs, char **args)
{
    if (nargs > 2) {
        return tool_usage();
    }
    char sql[2048];
    snprintf(sql, sizeof sql,
             "SELECT jsonb_pretty(jsonb_build_object('format', 'setcache-export-1', 'scope', "
             "jsonb_build_object('entity_type', $1::text, 'entity_id', $2::text), "
             "'definitions', coalesce((SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object("
             "'entity_type', entity_type, 'key', key, 'type', type, 'default', default_value, "
             "'description', nullif(description, ''), 'min', min_value, 'max', max_value, "
             "'choices', to_jsonb(choices), 'pattern', pattern, 'max_length', max_length)) "
             "ORDER BY entity_type COLLATE \"C\", key COLLATE \"C\") FROM \"%s\".definitions "
             "WHERE $1::text IS NULL OR entity_type = $1), '[]'::jsonb), 'settings', "
             "coalesce((SELECT jsonb_agg(jsonb_build_object('entity_type', entity_type, "
             "'entity_id', entity_id, 'key', key, 'value', value) ORDER BY entity_type COLLATE "
             "\"C\", entity_id COLLATE \"C\", key COLLATE \"C\") FROM \"%s\".settings WHERE "
             "($1::text IS NULL OR entity_type = $1) AND ($2::text IS NULL OR entity_id = $2)), "
             "'[]'::jsonb)))",
             schema, schema);
    const char *v[2] = {nargs > 0 ? args[0] : NULL, nargs > 1 ? args[1] : NULL};
    return query(c, sql, v, 2, print_document);
}

/* ---- import ---- */

typedef struct import_job {
    const char *schema, *doc;
    bool dry_run, prune;
    int code;
} import_job;

/* Run sql on conn; the result when it succeeded, else NULL (message in
 * *err, which the caller frees). */
static PGresult *run(PGconn *conn, const char *sql, int n, const char *const *v, char **err)
{
    PGresult *r = PQexecParams(conn, sql, n, NULL, v, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        return r;
    }
    const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    *err = strdup(m ? m : PQerrorMessage(conn));
    PQclear(r);
    return NULL;
}

static bool ok(PGconn *conn, const char *sql)
{
    char *err = NULL;
    PGresult *r = run(conn, sql, 0, NULL, &err);
    if (!r) {
        fputs("setcache: import: ", stderr);
        tool_put_escaped(stderr, err ? err : "out of memory");
        fputc('\n', stderr);
        free(err);
        return false;
    }
    PQclear(r);
    return true;
}

/* The changes the document makes, definitions first: what (d = definition,
 * s = setting), op (+ add, ~ change, - remove), type, id, key, old, new. */
static const char diff_sql[] =
    "WITH d AS (SELECT * FROM pg_temp.import_defs), s AS (SELECT * FROM "
    "pg_temp.import_settings), scope AS (SELECT $1::text AS t, $2::text AS i) "
    "SELECT * FROM (SELECT 'd' AS what, CASE WHEN o.key IS NULL THEN '+' ELSE '~' END AS op, "
    "d.entity_type AS t, '' AS i, d.key AS k, NULL::text AS old, d.type AS new FROM d LEFT JOIN "
    "\"%s\".definitions o USING (entity_type, key) WHERE "
    "o.key IS NULL OR (o.type, o.default_value, o.description, o.min_value, o.max_value, "
    "o.choices, o.pattern, o.max_length) IS DISTINCT FROM (d.type, d.\"default\", "
    "coalesce(d.description, ''), d.min, d.max, d.choices, d.pattern, d.max_length) "
    "UNION ALL SELECT 'd', '-', o.entity_type, '', o.key, o.type, NULL FROM \"%s\".definitions o, "
    "scope WHERE $3 AND (scope.t IS NULL OR o.entity_type = scope.t) AND NOT EXISTS (SELECT 1 "
    "FROM d WHERE d.entity_type = o.entity_type AND d.key = o.key) "
    "UNION ALL SELECT 's', CASE WHEN o.key IS NULL THEN '+' ELSE '~' END, s.entity_type, "
    "s.entity_id, s.key, o.value, s.value FROM s LEFT JOIN \"%s\".settings o USING "
    "(entity_type, entity_id, key) WHERE o.value IS DISTINCT FROM s.value "
    "UNION ALL SELECT 's', '-', o.entity_type, o.entity_id, o.key, o.value, NULL FROM "
    "\"%s\".settings o, scope WHERE $3 AND (scope.t IS NULL OR o.entity_type = scope.t) AND "
    "(scope.i IS NULL OR o.entity_id = scope.i) AND NOT EXISTS (SELECT 1 FROM s WHERE "
    "s.entity_type = o.entity_type AND s.entity_id = o.entity_id AND s.key = o.key) "
    ") AS u ORDER BY what, t COLLATE \"C\", i COLLATE \"C\", k COLLATE \"C\"";

/* Apply one change of the diff in its own savepoint; its error, or NULL. */
static char *apply_change(PGconn *conn, const char *schema, PGresult *d, int i)
{
    const char *what = PQgetvalue(d, i, 0), *op = PQgetvalue(d, i, 1);
    const char *v[4] = {PQgetvalue(d, i, 2), PQgetvalue(d, i, 4), PQgetvalue(d, i, 3),
                        PQgetvalue(d, i, 6)};
    char sql[1024];
    int n = 2;
    if (*what == 'd' && *op == '-') {
        snprintf(sql, sizeof sql,
                 "DELETE FROM \"%s\".definitions WHERE entity_type = $1 AND key = $2", schema);
    } else if (*what == 'd') {
        snprintf(sql, sizeof sql,
                 "INSERT INTO \"%s\".definitions AS o (entity_type, key, type, default_value, "
                 "description, min_value, max_value, choices, pattern, max_length) SELECT "
                 "entity_type, key, type, \"default\", coalesce(description, ''), min, max, "
                 "choices, pattern, max_length FROM pg_temp.import_defs WHERE entity_type = $1 "
                 "AND key = $2 ON CONFLICT (entity_type, key) DO UPDATE SET type = "
                 "EXCLUDED.type, default_value = EXCLUDED.default_value, description = "
                 "EXCLUDED.description, min_value = EXCLUDED.min_value, max_value = "
                 "EXCLUDED.max_value, choices = EXCLUDED.choices, pattern = EXCLUDED.pattern, "
                 "max_length = EXCLUDED.max_length",
                 schema);
    } else if (*op == '-') {
        snprintf(
            sql, sizeof sql,
            "DELETE FROM \"%s\".settings WHERE entity_type = $1 AND key = $2 AND entity_id = $3",
            schema);
        n = 3;
    } else {
        snprintf(sql, sizeof sql,
                 "INSERT INTO \"%s\".settings (entity_type, key, entity_id, value) VALUES ($1, $2, "
                 "$3, $4) ON CONFLICT (entity_type, entity_id, key) DO UPDATE SET value = "
                 "EXCLUDED.value",
                 schema);
        n = 4;
    }
    char *err = NULL, *end_err = NULL;
    PGresult *r = run(conn, "SAVEPOINT setcache_import_item", 0, NULL, &err);
    if (!r) {
        return err;
    }
    PQclear(r);
    r = run(conn, sql, n, v, &err);
    bool applied = r != NULL;
    PQclear(r);
    /* an item that failed is undone alone; the transaction goes on */
    PQclear(run(conn,
                applied ? "RELEASE SAVEPOINT setcache_import_item"
                        : "ROLLBACK TO SAVEPOINT setcache_import_item",
                0, NULL, &end_err));
    free(end_err);
    return applied ? NULL : (err ? err : strdup("failed"));
}

static void print_change(FILE *f, PGresult *d, int i, const char *err)
{
    const char *what = PQgetvalue(d, i, 0), *op = PQgetvalue(d, i, 1);
    fprintf(f, "%s%s %s ", err ? "invalid: " : "", op, *what == 'd' ? "definition" : "setting");
    tool_put_escaped(f, PQgetvalue(d, i, 2));
    fputc(' ', f);
    if (*what == 's') {
        tool_put_escaped(f, PQgetvalue(d, i, 3));
        fputc(' ', f);
    }
    tool_put_escaped(f, PQgetvalue(d, i, 4));
    if (*what == 's' && *op != '-') {
        fputs(*op == '~' ? ": " : " = ", f);
        if (*op == '~') {
            tool_put_escaped(f, PQgetvalue(d, i, 5));
            fputs(" -> ", f);
        }
        tool_put_escaped(f, PQgetvalue(d, i, 6));
    }
    if (err) {
        fputs(": ", f);
        tool_put_escaped(f, err);
    }
    fputc('\n', f);
}

static int import_conn(void *arg, PGconn *conn)
{
    import_job *j = arg;
    j->code = 3;
    if (!ok(conn, "BEGIN")) {
        return SETCACHE_OK;
    }
    /* the server parses the document */
    const char *v[1] = {j->doc};
    char *err = NULL;
    PGresult *r = run(conn,
                      "SELECT $1::jsonb ->> 'format', $1::jsonb -> 'scope' ->> 'entity_type', "
                      "$1::jsonb -> 'scope' ->> 'entity_id'",
                      1, v, &err);
    if (!r || strcmp(PQgetvalue(r, 0, 0), "setcache-export-1") != 0) {
        fprintf(stderr, "setcache: import: not a setcache export (format setcache-export-1)%s",
                err ? ": " : "\n");
        if (err) {
            tool_put_escaped(stderr, err);
            fputc('\n', stderr);
        }
        free(err);
        PQclear(r);
        ok(conn, "ROLLBACK");
        j->code = 2;
        return SETCACHE_OK;
    }
    char scope_t[256] = "", scope_i[512] = "";
    bool has_t = !PQgetisnull(r, 0, 1), has_i = !PQgetisnull(r, 0, 2);
    snprintf(scope_t, sizeof scope_t, "%s", PQgetvalue(r, 0, 1));
    snprintf(scope_i, sizeof scope_i, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    r = run(conn,
            "CREATE TEMP TABLE import_defs ON COMMIT DROP AS SELECT * FROM "
            "jsonb_to_recordset(coalesce($1::jsonb -> 'definitions', '[]')) AS x(entity_type "
            "text, key text, type text, \"default\" text, description text, min numeric, max "
            "numeric, choices text[], pattern text, max_length integer)",
            1, v, &err);
    PQclear(r);
    if (r) {
        r = run(conn,
                "CREATE TEMP TABLE import_settings ON COMMIT DROP AS SELECT * FROM "
                "jsonb_to_recordset(coalesce($1::jsonb -> 'settings', '[]')) AS x(entity_type "
                "text, entity_id text, key text, value text)",
                1, v, &err);
        PQclear(r);
    }
    if (!r) {
        fputs("setcache: import: ", stderr);
        tool_put_escaped(stderr, err ? err : "out of memory");
        fputc('\n', stderr);
        free(err);
        ok(conn, "ROLLBACK");
        j->code = 2;
        return SETCACHE_OK;
    }
    char sql[4096];
    snprintf(sql, sizeof sql, diff_sql, j->schema, j->schema, j->schema, j->schema);
    const char *dv[3] = {has_t ? scope_t : NULL, has_i ? scope_i : NULL, j->prune ? "t" : "f"};
    PGresult *d = run(conn, sql, 3, dv, &err);
    if (!d) {
        fputs("setcache: import: ", stderr);
        tool_put_escaped(stderr, err ? err : "out of memory");
        fputc('\n', stderr);
        free(err);
        ok(conn, "ROLLBACK");
        return SETCACHE_OK;
    }
    int n = PQntuples(d), bad = 0;
    /* everything is tried (so that every invalid item is listed), in one
     * transaction that commits only if all of it is valid */
    for (int i = 0; i < n; i++) {
        char *e = apply_change(conn, j->schema, d, i);
        if (e) {
            print_change(stderr, d, i, e);
            bad++;
            free(e);
        }
    }
    if (bad) {
        ok(conn, "ROLLBACK");
        fprintf(stderr, "setcache: import: %d of %d changes invalid; nothing was imported\n", bad,
                n);
        PQclear(d);
        j->code = 2;
        return SETCACHE_OK;
    }
    for (int i = 0; i < n; i++) {
        print_change(stdout, d, i, NULL);
    }
    PQclear(d);
    if (j->dry_run || n == 0) {
        j->code = ok(conn, "ROLLBACK") ? 0 : 3;
        printf("%d changes%s\n", n, j->dry_run ? "; dry run: nothing written" : "; nothing to do");
        return SETCACHE_OK;
    }
    j->code = ok(conn, "COMMIT") ? 0 : 3;
    if (j->code == 0) {
        printf("%d changes imported\n", n);
    }
    return SETCACHE_OK;
}

/* import FILE [--dry-run] [--prune] */
static int import_doc(setcache *c, const char *schema, int nargs, char **args)
{
    import_job j = {schema, NULL, false, false, 0};
    const char *file = NULL;
    for (int k = 0; k < nargs; k++) {
        if (strcmp(args[k], "--dry-run") == 0) {
            j.dry_run = true;
        } else if (strcmp(args[k], "--prune") == 0) {
            j.prune = true;
        } else if (!file && strncmp(args[k], "--", 2) != 0) {
            file = args[k];
        } else {
            return tool_usage();
        }
    }
    if (!file) {
        return tool_usage();
    }
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    if (!f) {
        fprintf(stderr, "setcache: import: cannot open %s\n", file);
        return 2;
    }
    size_t cap = 1 << 16, len = 0, got;
    char *doc = malloc(cap + 1);
    while (doc && (got = fread(doc + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap && cap < ((size_t)1 << 30)) {
            char *bigger = realloc(doc, cap * 2 + 1);
            if (!bigger) {
                free(doc);
                doc = NULL;
                break;
            }
            doc = bigger;
            cap *= 2;
        }
    }
    if (f != stdin) {
        fclose(f);
    }
    if (!doc) {
        fprintf(stderr, "setcache: import: out of memory reading %s\n", file);
        return 4;
    }
    doc[len] = '\0';
    j.doc = doc;
    int rc = setcache_with_conn(c, import_conn, &j);
    free(doc);
    return rc != SETCACHE_OK ? tool_fail(rc, "import") : j.code;
}

int tool_admin(setcache *c, const char *schema, bool json, const char *cmd, int nargs, char **args)
{
    as_json = json;
    if (strcmp(cmd, "describe") == 0) {
        return nargs > 2 ? tool_usage() : describe(c, schema, nargs, args);
    }
    if (strcmp(cmd, "history") == 0) {
        return history(c, schema, nargs, args);
    }
    if (strcmp(cmd, "export") == 0) {
        return export_doc(c, schema, nargs, args);
    }
    if (strcmp(cmd, "import") == 0) {
        return import_doc(c, schema, nargs, args);
    }
    return get_at(c, schema, args);
}
