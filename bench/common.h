/*
 * common.h - what the read benchmarks share: the settings they read, the
 * Zipf walk over them, the floor (a bare uthash lookup and copy, no lock)
 * and the percentiles of sampled latencies. Include after internal.h (the
 * floor hashes like the library does).
 */
#ifndef SETCACHE_BENCH_COMMON_H
#define SETCACHE_BENCH_COMMON_H

#include <libpq-fe.h>

#include "setcache.h"
#include "workload.h"

/* one stored setting of the workload */
typedef struct bench_target {
    const char *type;
    char id[16];
    char key[64];
} bench_target;

/* The stored settings of a schema's table, ordered by entity then key;
 * exits on error. */
static inline bench_target *bench_targets(PGconn *mon, const char *schema, int *n)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT entity_type, entity_id, key FROM %s.settings ORDER BY entity_type, "
             "entity_id, key",
             schema);
    PGresult *r = PQexec(mon, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench: %s", PQerrorMessage(mon));
        exit(1);
    }
    *n = PQntuples(r);
    bench_target *t = calloc((size_t)*n + 1, sizeof *t);
    for (int i = 0; i < *n; i++) {
        const char *type = PQgetvalue(r, i, 0);
        t[i].type = strcmp(type, "expert") == 0    ? "expert"
                    : strcmp(type, "account") == 0 ? "account"
                                                   : "app";
        snprintf(t[i].id, sizeof t[i].id, "%s", PQgetvalue(r, i, 1));
        snprintf(t[i].key, sizeof t[i].key, "%s", PQgetvalue(r, i, 2));
    }
    PQclear(r);
    return t;
}

/* nseq indices into t: entities uniform, keys of an entity Zipf (s = 1) in
 * their order. Returns the number of entities. */
static inline int bench_zipf_walk(const bench_target *t, int n, int *seq, int nseq)
{
    int *first = malloc(((size_t)n + 1) * sizeof *first), nent = 0;
    for (int i = 0; i < n; i++) {
        if (i == 0 || t[i].type != t[i - 1].type || strcmp(t[i].id, t[i - 1].id) != 0) {
            first[nent++] = i;
        }
    }
    first[nent] = n;
    unsigned s = 12345;
    for (int i = 0; i < nseq; i++) {
        int e = (int)(wl_rand(&s) % (unsigned)nent);
        int m = first[e + 1] - first[e];
        double hn = 0;
        for (int k = 1; k <= m; k++) {
            hn += 1.0 / k;
        }
        double u = (wl_rand(&s) / (double)0xffffff) * hn, acc = 0;
        int k = 0;
        for (; k < m - 1; k++) {
            acc += 1.0 / (k + 1);
            if (acc >= u) {
                break;
            }
        }
        seq[i] = first[e] + k;
    }
    free(first);
    return nent;
}

/* ---- the floor: one uthash table keyed by type NUL id NUL key, no lock ---- */
typedef struct bench_floor_e {
    UT_hash_handle hh;
    char *value;
    size_t vlen;
    size_t klen;
    char k[];
} bench_floor_e;

static inline size_t bench_composite(char *out, const bench_target *t)
{
    size_t a = strlen(t->type), b = strlen(t->id), c = strlen(t->key);
    memcpy(out, t->type, a + 1);
    memcpy(out + a + 1, t->id, b + 1);
    memcpy(out + a + b + 2, t->key, c);
    return a + b + 2 + c;
}

/* The floor holds what the cache answers for each target now. */
static inline void bench_floor_build(bench_floor_e **tab, setcache *c, const bench_target *t,
                                     int n)
{
    bench_floor_e *e, *tmp;
    HASH_ITER(hh, *tab, e, tmp)
    {
        HASH_DEL(*tab, e);
        free(e->value);
        free(e);
    }
    for (int i = 0; i < n; i++) {
        char k[400];
        size_t kl = bench_composite(k, &t[i]);
        e = malloc(sizeof *e + kl);
        memcpy(e->k, k, kl);
        e->klen = kl;
        int rc;
        e->value = setcache_dup_string(c, t[i].type, t[i].id, t[i].key, &rc);
        if (!e->value) {
            fprintf(stderr, "bench: floor: %s\n", setcache_errmsg());
            exit(1);
        }
        e->vlen = strlen(e->value);
        HASH_ADD_KEYPTR(hh, *tab, e->k, e->klen, e);
    }
}

/* The floors copy with the C library's memcpy, as setcache does: left to
 * itself the compiler inlines a `rep movs` here, several times slower for
 * values of a few bytes, which would flatter the comparison. */
static void *(*volatile bench_copy)(void *, const void *, size_t) = memcpy;

/* One floor read into buf; false if the target is missing. */
static inline bool bench_floor_read(bench_floor_e *tab, const bench_target *t, char *buf,
                                    size_t cap)
{
    char k[400];
    size_t kl = bench_composite(k, t);
    bench_floor_e *e;
    HASH_FIND(hh, tab, k, kl, e);
    if (!e || e->vlen >= cap) {
        return false;
    }
    bench_copy(buf, e->value, e->vlen + 1);
    return true;
}

/* ---- results ---- */
typedef struct bench_result {
    double rate, p50, p99, p999;
} bench_result;

/* Percentiles of the samples of n workers (each array freed). */
static inline bench_result bench_percentiles(double rate, double **lat, const int *nlat, int n)
{
    size_t nl = 0;
    for (int i = 0; i < n; i++) {
        nl += (size_t)nlat[i];
    }
    double *all = malloc((nl ? nl : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        memcpy(all + k, lat[i], (size_t)nlat[i] * sizeof *all);
        k += (size_t)nlat[i];
        free(lat[i]);
    }
    qsort(all, nl, sizeof *all, bench_cmp_d);
    bench_result r = {rate, nl ? all[nl / 2] : 0, nl ? all[(size_t)((double)nl * 0.99)] : 0,
                      nl ? all[(size_t)((double)nl * 0.999)] : 0};
    free(all);
    return r;
}

/* The run with the median rate, with its own latencies (v is reordered). */
static inline bench_result bench_median_run(bench_result *v, int n)
{
    for (int x = 0; x < n; x++) {
        for (int y = x + 1; y < n; y++) {
            if (v[y].rate < v[x].rate) {
                bench_result t = v[x];
                v[x] = v[y];
                v[y] = t;
            }
        }
    }
    return v[n / 2];
}

#endif
