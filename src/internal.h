/*
 * internal.h - declarations shared by the modules of libsetcache.
 *
 * Every non-static internal symbol starts with setcache__ and has hidden
 * visibility (the build uses -fvisibility=hidden and a version script).
 *
 * One section per file, "=== in file.c ===", in layer order (lowest
 * first): a section declares what its file defines. The layers (which file
 * may call which) are in src/README.md and checked by make lint.
 *
 * Locks. Every lock kind, and the only nesting allowed (a lock is never
 * taken while one listed after it is held; all others are taken alone):
 *   1. shard->lock            (cache.c; one shard at a time, never two)
 *   2. c->defs.lock           (defs.c; taken alone in practice)
 *   3. c->pool.mu             (pool.c; with pool.cv, never across a network call)
 *   4. c->cache.load_mu       (cache.c; with load_cv: waiting for a load in flight)
 *   5. c->listen.state_mu     (listen.c; with state_cv, taken alone)
 *   6. c->dispatch.subs_mu    (dispatch.c; with subs_cv; never with dispatch.mu)
 *   7. c->dispatch.mu         (dispatch.c; with dispatch.cv: the event queue)
 *   8. c->refresh.mu          (refresh.c; with refresh.cv: the hint queue, taken alone)
 *   9. c->refs.mu             (ref.c; the open refs, taken alone)
 *  10. c->snaps.slot[i].mu    (snap.c; open snapshots by read slot, taken alone)
 *  11. c->fast.mu             (stats.c; the per-thread hit counters, taken alone)
 *  12. c->fence.mu            (fence.c; a leaf: taken under a shard lock by the
 *                              installs, or alone)
 * Bound references read their cells with no lock (cell.c: a sequence lock
 * written under the shard's lock).
 * No user code (callbacks, log) runs while any of them is held.
 */
#ifndef SETCACHE_INTERNAL_H
#define SETCACHE_INTERNAL_H

#define SETCACHE_BUILDING 1
#include <libpq-fe.h> /* first: setcache.h declares setcache_with_conn after it */

#include "setcache.h"

#include <locale.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#ifdef SETCACHE_TEST_HOOKS
/* The test build counts every allocation the library makes and can fail
 * the k-th one (setcache__t_fail_alloc, util.c): the out-of-memory sweep. */
void *setcache__t_malloc(size_t n);
void *setcache__t_calloc(size_t n, size_t size);
void *setcache__t_realloc(void *p, size_t n);
char *setcache__t_strdup(const char *s);
int setcache__t_posix_memalign(void **p, size_t align, size_t n);
#undef strdup
#define malloc(n) setcache__t_malloc(n)
#define calloc(n, size) setcache__t_calloc(n, size)
#define realloc(p, n) setcache__t_realloc(p, n)
#define strdup(s) setcache__t_strdup(s)
#define posix_memalign(p, a, n) setcache__t_posix_memalign(p, a, n)
#endif

#include "hash.h"
#define HASH_NONFATAL_OOM 1
/* most entities hold tens of settings: start small, uthash grows as needed */
#define HASH_INITIAL_NUM_BUCKETS 8U
#define HASH_INITIAL_NUM_BUCKETS_LOG2 3U
#include <uthash.h>

#define SC_NSHARDS 64
#define SC_NSTRIPES 32
#define SC_EKEY_MAX (SETCACHE_MAX_TYPE_LEN + 1 + SETCACHE_MAX_ID_LEN + 1)
#define SC_LINE 128 /* the handle is allocated with this alignment */

/* === in util.c === */
void setcache__cond_init(pthread_cond_t *cv); /* waits on CLOCK_MONOTONIC deadlines */
double setcache__mono_ms(void);
struct timespec setcache__deadline(int ms); /* CLOCK_MONOTONIC now + ms */
char *setcache__aprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *setcache__text_array(const char *const *items, size_t n);
/* Double *(T **)arrp's capacity (first when 0); false, unchanged, if out of memory. */
bool setcache__grow(void *arrp, size_t *cap, size_t first, size_t elem);
size_t setcache__trim_len(const char *s, size_t n); /* without trailing newlines, spaces */

/* === in brlock.c === */
/*
 * A read-mostly lock with no shared write on the read path: each thread
 * takes only its own slot's mutex (its own pair of cache lines: x86 cores
 * prefetch lines in adjacent pairs), a writer takes every slot in order. Readers on different cores
 * never touch the same line, so cached reads scale with threads; writers (changes, loads) pay
 * SC_RSLOTS uncontended lock operations.
 */
#define SC_RSLOTS 16
typedef struct sc_rslot {
    pthread_mutex_t mu;
    atomic_uint_fast64_t hits; /* written only by the slot's holder: no lock prefix */
} __attribute__((aligned(SC_LINE))) sc_rslot;
typedef struct sc_brlock {
    sc_rslot slot[SC_RSLOTS];
} sc_brlock;
/* brlock.c: each thread's slot, assigned on its first lock */
extern _Thread_local int setcache__my_rslot __attribute__((visibility("hidden")));
int setcache__rslot_assign(void);
static inline int setcache__rslot(void)
{
    int s = setcache__my_rslot;
    return s >= 0 ? s : setcache__rslot_assign();
}
void setcache__br_init(sc_brlock *l);
void setcache__br_destroy(sc_brlock *l);
void setcache__br_rdlock(sc_brlock *l);
void setcache__br_rdunlock(sc_brlock *l);
void setcache__br_wrlock(sc_brlock *l);
void setcache__br_wrunlock(sc_brlock *l);

/* === in hash.c (the function itself is inline in hash.h) === */
/* setcache__hash_seed and setcache__hash_seed_once: see hash.h */

/* === in error.c === */
int setcache__fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int setcache__fail_pg(int code, const char *what, const PGconn *conn, const PGresult *res);
void setcache__clear_error(void);
const char *setcache__sqlstate(void);

/* === in stats.c === */
void setcache__log(setcache *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void setcache__count(setcache *c, int which, uint64_t n);
uint64_t setcache__counter(setcache *c, int which);

/* Hits of lock-free reads: one counter per thread and handle (stats.c). */
typedef struct sc_tcount {
    atomic_uint_fast64_t n; /* written by its owner only */
    pthread_t owner;
    struct sc_tcount *next; /* in c->fast.counts, under c->fast.mu */
} __attribute__((aligned(SC_LINE))) sc_tcount;
typedef struct sc_fast {
    pthread_mutex_t mu;
    sc_tcount *counts; /* guarded by mu */
    uint64_t gen;      /* this handle's number, unique in the process; immutable */
} sc_fast;
extern _Thread_local uint64_t setcache__tl_gen __attribute__((visibility("hidden")));
extern _Thread_local sc_tcount *setcache__tl_count __attribute__((visibility("hidden")));
sc_tcount *setcache__fast_slot(setcache *c);
uint64_t setcache__fast_hits(setcache *c);
void setcache__stats_init(setcache *c);
void setcache__stats_destroy(setcache *c, bool own_process);
enum {
    SC_ST_MISSES,
    SC_ST_LOADS,
    SC_ST_QUERIES,
    SC_ST_WRITES,
    SC_ST_NOTIFICATIONS,
    SC_ST_INVALIDATIONS,
    SC_ST_RESYNCS,
    SC_ST_RECONNECTS,
    SC_ST_EVICTIONS,
    SC_ST_POOL_WAITS,
    SC_ST_POOL_TIMEOUTS,
    SC_ST_MALFORMED,
    SC_ST_REFRESHES,
    SC_ST_EVENTS,
    SC_ST_HEARTBEATS,
    SC_ST_HINTS,
    SC_ST_DEF_CONFLICTS,
    SC_ST_INVALID,
    SC_ST_COUNT
};

typedef struct sc_stripe {
    atomic_uint_fast64_t n[SC_ST_COUNT];
} __attribute__((aligned(SC_LINE))) sc_stripe;

/* === in value.c === */
enum { SC_PARSED_INT = 1, SC_PARSED_DOUBLE = 2, SC_PARSED_BOOL = 4 };
typedef struct sc_parsed {
    int64_t i;
    double d;
    uint8_t ok; /* SC_PARSED_* bits */
    bool b;
} sc_parsed;

bool setcache__valid_type_name(const char *s, size_t len);
bool setcache__valid_text_ident(const char *s, size_t len); /* UTF-8, no control chars */
bool setcache__valid_utf8(const char *s, size_t len);
bool setcache__valid_sql_name(const char *s);
int setcache__check_identity(const char *t, const char *id, const char *key, size_t *tlen,
                             size_t *ilen, size_t *klen);
bool setcache__parse_int(const char *s, int64_t *out);
bool setcache__parse_double(const char *s, double *out);
bool setcache__parse_bool(const char *s, bool *out);
void setcache__parse_all(const char *s, sc_parsed *p);
int setcache__format_double(double v, char *buf, size_t cap);
const char *setcache__type_name(setcache_type t);

/* What a read wants and where it goes. */
enum { SC_WANT_STRING, SC_WANT_DUP, SC_WANT_INT, SC_WANT_DOUBLE, SC_WANT_BOOL };
typedef struct sc_read {
    int want;
    char *buf;
    size_t cap;
    size_t len;
    char *dup;
    int64_t i;
    double d;
    bool b;
} sc_read;

/* Answer a read from a value and its parsed forms (inline: the last step
 * of every cached read). */
static inline int setcache__fill_from_value(const char *value, size_t vlen, const sc_parsed *p,
                                            sc_read *r)
{
    switch (r->want) {
    case SC_WANT_STRING:
        r->len = vlen;
        if (!r->buf || r->cap <= vlen) {
            return setcache__fail(SETCACHE_ERR_SPACE,
                                  "buffer of %zu bytes is too small: the value needs %zu + 1",
                                  r->cap, vlen);
        }
        memcpy(r->buf, value, vlen + 1);
        return SETCACHE_OK;
    case SC_WANT_DUP:
        r->dup = malloc(vlen + 1);
        if (!r->dup) {
            return setcache__fail(SETCACHE_ERR_NOMEM, "out of memory copying a value");
        }
        memcpy(r->dup, value, vlen + 1);
        r->len = vlen;
        return SETCACHE_OK;
    case SC_WANT_INT:
        if (!(p->ok & SC_PARSED_INT)) {
            return setcache__fail(SETCACHE_ERR_TYPE, "value is not an integer");
        }
        r->i = p->i;
        return SETCACHE_OK;
    case SC_WANT_DOUBLE:
        if (!(p->ok & SC_PARSED_DOUBLE)) {
            return setcache__fail(SETCACHE_ERR_TYPE, "value is not a number");
        }
        r->d = p->d;
        return SETCACHE_OK;
    case SC_WANT_BOOL:
        if (!(p->ok & SC_PARSED_BOOL)) {
            return setcache__fail(SETCACHE_ERR_TYPE, "value is not a boolean");
        }
        r->b = p->b;
        return SETCACHE_OK;
    default:
        return setcache__fail(SETCACHE_ERR_ARG, "bad read request");
    }
}

/* === in ident.c === */
/* An identity prepared once per call: lengths, entity key, hashes. */
typedef struct sc_ident {
    const char *type, *id, *key;
    size_t tlen, ilen, klen;
    unsigned ehash, khash;
    uint16_t ekeylen;
    bool validated;
    char ekey[SC_EKEY_MAX];
} sc_ident;

int setcache__ident(sc_ident *id, const char *type, const char *eid, const char *key);
int setcache__ident_validate(sc_ident *id);
int setcache__ident_key(setcache *c, sc_ident *id, const char *type, const char *eid,
                        const char *key);

/* === in etable.c === */
/* One cached setting (or tombstone). Packed: the value follows the key in
 * data, and its typed forms share one word. 32 bytes before the key.
 * Immutable once made; shared by every view that holds it (refs). */
enum {
    SC_E_TOMB = 1,   /* deleted: carries the version of the deleted row */
    SC_E_INT = 2,    /* num.i holds the value as an integer */
    SC_E_DOUBLE = 4, /* parses as a double: num.i (if SC_E_INT) or num.d */
    SC_E_BOOL = 8,   /* parses as a boolean, SC_E_TRUE its value */
    SC_E_TRUE = 16,
    SC_E_DUP = 32 /* the key appears more than once in a mapped table */
};
typedef struct sc_entry {
    int64_t version;
    union {
        int64_t i;
        double d;
    } num;
    uint32_t hash; /* of the key: its slot in an sc_etable */
    uint32_t vlen;
    uint8_t klen;
    uint8_t flags;    /* SC_E_* */
    atomic_uint refs; /* the tables (views) holding it: shared by copy-on-write */
    char data[];      /* key NUL value NUL */
} sc_entry;
#define SC_TOMB(e) (((e)->flags & SC_E_TOMB) != 0)
#define SC_VAL(e) ((e)->data + (e)->klen + 1)

/*
 * An entity's entries, by key: open addressing with linear probing over an
 * array of entry pointers, a power of two long and at most 3/4 full (one
 * pointer a slot instead of a per-entry chain handle). Entries are replaced,
 * never removed one at a time (a delete leaves a tombstone), so there are no
 * deleted-slot markers. All-zero is an empty table.
 */
typedef struct sc_etable {
    sc_entry **slot;
    uint32_t cap; /* 0 or a power of two */
    uint32_t count;
} sc_etable;

/* The entry for key (klen bytes, hash its setcache__hash), or NULL. Inline:
 * it is the inner step of every cached read. */
static inline sc_entry *setcache__et_find(const sc_etable *t, const char *key, size_t klen,
                                          unsigned hash)
{
    if (t->cap == 0) {
        return NULL;
    }
    uint32_t mask = t->cap - 1;
    for (uint32_t i = hash & mask;; i = (i + 1) & mask) {
        sc_entry *e = t->slot[i];
        if (!e) {
            return NULL; /* never full: an empty slot ends every probe */
        }
        if (e->hash == hash && e->klen == klen && memcmp(e->data, key, klen) == 0) {
            return e;
        }
    }
}

sc_entry *setcache__et_find_str(const sc_etable *t, const char *key);
int setcache__et_reserve(sc_etable *t, size_t n);
int setcache__et_put(sc_etable *t, sc_entry *e, sc_entry **replaced);
void setcache__et_free(sc_etable *t);
void setcache__et_take(sc_etable *dst, sc_etable *src);

sc_entry *setcache__entry_new(const char *key, size_t klen, const char *value, size_t vlen,
                              int64_t version, bool tomb);
void setcache__entry_unref(sc_entry *e);

/*
 * A view: an entity's table of entries with a reference count. The cache
 * holds one per loaded entity and changes it in place while it holds the only
 * reference; a snapshot takes a reference, after which the cache copies the
 * slots (sharing the entries) before its next change, and the snapshot keeps
 * reading the old view with no lock (copy-on-write).
 */
typedef struct sc_eview {
    atomic_uint refs;
    sc_etable t;
} sc_eview;
sc_eview *setcache__view_new(void); /* empty, one reference; NULL: no memory */
sc_eview *setcache__view_clone(const sc_eview *v);
void setcache__view_unref(sc_eview *v);

typedef struct sc_pair {
    char *key;
    char *value;
    bool is_default;
} sc_pair;

int setcache__et_pairs(const sc_etable *t, sc_pair **out, size_t *n);

/* Answer a read from an entry: its typed forms come from the flags. */
static inline int setcache__fill_entry(const sc_entry *e, sc_read *r)
{
    if (e->flags & SC_E_DUP) {
        return setcache__fail(SETCACHE_ERR_DB,
                              "key '%s' appears more than once in its table: which row holds the "
                              "value is ambiguous; remove the duplicates",
                              e->data);
    }
    sc_parsed p;
    p.ok = (uint8_t)(((e->flags & SC_E_INT) ? SC_PARSED_INT : 0) |
                     ((e->flags & SC_E_DOUBLE) ? SC_PARSED_DOUBLE : 0) |
                     ((e->flags & SC_E_BOOL) ? SC_PARSED_BOOL : 0));
    p.i = e->num.i;
    if (e->flags & SC_E_INT) {
        /* an integer that is also read as a double: strtod would give the
         * same value for every decimal integer string */
        p.d = (double)e->num.i;
    } else {
        p.d = e->num.d;
    }
    p.b = (e->flags & SC_E_TRUE) != 0;
    return setcache__fill_from_value(SC_VAL(e), e->vlen, &p, r);
}

/* === in cell.c === */
/*
 * A bound reference's cell: what the cache holds for one setting, published
 * with a sequence lock so that any thread reads it with plain loads, no lock
 * and no write (see cell.c). The links below the published fields are the
 * cache's, guarded by the shard's lock.
 */
#define SC_CELL_WORDS 8
#define SC_CELL_BYTES (SC_CELL_WORDS * 8) /* a value shorter than this is held inline */
enum {
    SC_CELL_VALID = 1, /* the entity is loaded: the cell answers */
    SC_CELL_VALUE = 2, /* a stored value (else the key's default answers) */
    SC_CELL_INT = 4,   /* typed forms, as SC_E_* */
    SC_CELL_DOUBLE = 8,
    SC_CELL_BOOL = 16,
    SC_CELL_TRUE = 32,
    SC_CELL_INLINE = 64 /* the value is in w (len bytes and a NUL) */
};
typedef struct sc_cell {
    atomic_uint seq;   /* odd while a writer changes the fields below */
    atomic_uint state; /* SC_CELL_* */
    atomic_uint len;
    atomic_uchar used;    /* set by a reader when clear; an eviction sweep clears it */
    atomic_bool attached; /* ent is set: written under the shard's lock */
    _Atomic int64_t i;
    _Atomic uint64_t d; /* the double's bits */
    _Atomic uint64_t w[SC_CELL_WORDS];
    /* cache.c's, under the shard's lock */
    struct sc_cell *next, *prev;
    void *ent; /* the sc_entity it is attached to, or NULL */
    const char *key;
    size_t klen;
    unsigned khash;
} sc_cell;

void setcache__cell_store(sc_cell *cl, const sc_entry *en, bool valid);

/* The reader's side: each answers from the cell if it can, with no lock and
 * no write but the cell's own used bit once per eviction sweep, and returns
 * true (out set); false: the locked path answers (not loaded, no stored
 * value, a value too long for the cell or of another type, a buffer too
 * small, or a writer busy). Inline: they are the whole of a bound read. */
static inline void setcache__cell_used(sc_cell *cl)
{
    if (!atomic_load_explicit(&cl->used, memory_order_relaxed)) {
        atomic_store_explicit(&cl->used, 1, memory_order_relaxed);
    }
}

static inline bool setcache__cell_stable(sc_cell *cl, unsigned s)
{
    return !(s & 1) && atomic_load_explicit(&cl->seq, memory_order_relaxed) == s;
}

static inline bool setcache__cell_int(sc_cell *cl, int64_t *out)
{
    unsigned s = atomic_load_explicit(&cl->seq, memory_order_acquire);
    unsigned st = atomic_load_explicit(&cl->state, memory_order_acquire);
    int64_t v = atomic_load_explicit(&cl->i, memory_order_acquire);
    if (!(st & SC_CELL_INT) || !setcache__cell_stable(cl, s)) {
        return false;
    }
    setcache__cell_used(cl);
    *out = v;
    return true;
}

static inline bool setcache__cell_double(sc_cell *cl, double *out)
{
    unsigned s = atomic_load_explicit(&cl->seq, memory_order_acquire);
    unsigned st = atomic_load_explicit(&cl->state, memory_order_acquire);
    uint64_t bits = atomic_load_explicit(&cl->d, memory_order_acquire);
    if (!(st & SC_CELL_DOUBLE) || !setcache__cell_stable(cl, s)) {
        return false;
    }
    setcache__cell_used(cl);
    memcpy(out, &bits, sizeof bits);
    return true;
}

static inline bool setcache__cell_bool(sc_cell *cl, bool *out)
{
    /* the boolean is in the state word itself: one load is consistent */
    unsigned st = atomic_load_explicit(&cl->state, memory_order_acquire);
    if (!(st & SC_CELL_BOOL)) {
        return false;
    }
    setcache__cell_used(cl);
    *out = (st & SC_CELL_TRUE) != 0;
    return true;
}

static inline bool setcache__cell_string(sc_cell *cl, char *buf, size_t cap, size_t *len)
{
    unsigned s = atomic_load_explicit(&cl->seq, memory_order_acquire);
    unsigned st = atomic_load_explicit(&cl->state, memory_order_acquire);
    size_t n = atomic_load_explicit(&cl->len, memory_order_acquire);
    if (!(st & SC_CELL_INLINE) || n >= SC_CELL_BYTES || !buf || cap <= n) {
        return false;
    }
    uint64_t w[SC_CELL_WORDS];
    size_t nw = n / 8 + 1;
    for (size_t k = 0; k < nw; k++) {
        w[k] = atomic_load_explicit(&cl->w[k], memory_order_acquire);
    }
    if (!setcache__cell_stable(cl, s)) {
        return false;
    }
    setcache__cell_used(cl);
    memcpy(buf, w, n + 1);
    *len = n;
    return true;
}

/* === in pool.c === */
/* With prepared_statements: the statements a connection has prepared, by
 * their text's address (each lives as long as the handle). Reset whenever
 * the slot's connection is, or the server no longer knows one of them. */
#define SC_PREP_MAX 16
typedef struct sc_slot {
    PGconn *conn;
    bool busy;
    int nprep;
    unsigned prep_gen; /* in the names: "setcache_<gen>_<index>" */
    const char *prep[SC_PREP_MAX];
} sc_slot;

typedef struct sc_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sc_slot *slots; /* guarded by mu */
    int size;
    const char *conninfo; /* the handle's copy: conninfo, or write_conninfo */
    const char *role;     /* application_name's last part: "pool" or "write" */
    int in_use;           /* guarded by mu */
    /* Backend PIDs with a library write in flight, until its result is
     * applied to the cache: the listener skips their echoes. Lock-free. */
    atomic_int *writing;
    atomic_int *pids; /* backend PIDs of pooled connections, by slot */
    /* The server connections last reached (system identifier/timeline),
     * guarded by mu; server_gen counts the times it changed. */
    char server[48];
    atomic_uint_fast64_t server_gen;
} sc_pool;

typedef int (*sc_conn_fn)(void *arg, PGconn *conn);
int setcache__pool_init(setcache *c);
void setcache__pool_destroy(setcache *c);
void setcache__pool_wake(setcache *c);
void setcache__pool_stats(setcache *c, uint32_t *size, uint32_t *in_use);
uint64_t setcache__server_gen(setcache *c); /* changes when connections reach another server */
int setcache__with_pool(setcache *c, sc_conn_fn fn, void *arg);
int setcache__with_pool_read(setcache *c, sc_conn_fn fn, void *arg);
/* Writes (and setcache_with_conn): on write_conninfo's pool when it names
 * another server, else like setcache__with_pool. */
int setcache__with_write_pool(setcache *c, sc_conn_fn fn, void *arg);
int setcache__writing_begin(setcache *c, PGconn *conn);
void setcache__writing_end(setcache *c, int token);
bool setcache__is_writing(setcache *c, int be_pid);
bool setcache__is_own_backend(setcache *c, int be_pid); /* a pooled connection's */
PGconn *setcache__connect(setcache *c, const char *conninfo, const char *role, int *server_pid);
void setcache__finish_inherited(PGconn *conn);
PGresult *setcache__exec_simple(setcache *c, PGconn *conn, const char *sql, bool *timed_out);
bool setcache__send_limited(setcache *c, PGconn *conn, const char *sql, int n,
                            const char *const *vals, bool *pipelined);
int setcache__limit_taken(setcache *c, PGconn *conn);
bool setcache__pipeline_end(setcache *c, PGconn *conn);
bool setcache__cancelled_by_limit(const PGresult *r); /* statement_timeout cancelled it */
PGresult *setcache__exec(setcache *c, PGconn *conn, const char *sql, int n, const char *const *vals,
                         bool is_write, int *rc);
/* Like setcache__exec; with prepared_statements on and conn a pooled
 * connection, sql goes as a named prepared statement. sql must live as long
 * as the handle (it is remembered by address). */
PGresult *setcache__exec_prepared(setcache *c, PGconn *conn, const char *sql, int n,
                                  const char *const *vals, bool is_write, int *rc);

/* === in schema.c === */
typedef struct sc_sql {
    char *table;     /* "schema"."settings" */
    char *load;      /* one entity */
    char *load_type; /* every entity of a type */
    char *upsert;    /* single upsert RETURNING version, stored value */
    char *upsert_json;
    char *del;       /* single delete RETURNING version */
    char *many;      /* set_many in one statement: (is_set, key, version, value) */
    char *many_fn;   /* the same through "schema".write_many (the built-in table) */
    char *load_many; /* every row of a list of entities */
    char *defs;      /* "schema"."definitions" */
    char *defs_load; /* every shared definition, one row per choice */
    char *defs_put;  /* upsert one definition */
    char *defs_bad;  /* rows breaking their definition: count, first examples */
    char *hist_max;  /* the newest history version of (type, id, key) triples */
} sc_sql;
int setcache__sql_build(sc_sql *s, const char *schema);
void setcache__sql_free(sc_sql *s);
char *setcache__ddl(const char *schema, const char *channel);
char *setcache__notify_fn_ddl(const char *schema, const char *channel, const char *name);
char *setcache__grants_ddl(const char *schema, const char *role, bool writer);
int setcache__ensure_schema(setcache *c, PGconn *conn);
int setcache__table_exists(setcache *c, PGconn *conn, const char *table, bool *exists);
int setcache__apply_ddl_once(setcache *c, PGconn *conn, const char *fn, const char *signature,
                             const char *ddl, const char *what);
char *setcache__quote_ident(const char *s);

/* === in fence.c === */
/* A write through write_conninfo not yet seen at the source: key, value
 * (NULL: deleted) and version. */
typedef struct sc_fenced {
    char *key;
    char *value;
    int64_t version;
} sc_fenced;
typedef struct sc_fence_ent {
    UT_hash_handle hh; /* key: ekey */
    sc_fenced *v;
    size_t n, cap;
    size_t ekeylen;
    char ekey[];
} sc_fence_ent;
typedef struct sc_fence {
    pthread_mutex_t mu;
    sc_fence_ent *table;    /* guarded by mu */
    atomic_size_t entities; /* entities in table: 0 = nothing to merge, no lock */
} sc_fence;
void setcache__fence_init(setcache *c);
void setcache__fence_destroy(setcache *c, bool own_process);
/* A write through write_conninfo committed at version (value NULL: the key
 * was deleted): remembered until the source shows it. No-op unless
 * split_writes. */
int setcache__fence_note(setcache *c, const sc_ident *id, const char *value, int64_t version);
bool setcache__fence_has(setcache *c, const sc_ident *id); /* any key of the entity fenced */
/* Before installing rows read from the source (under the shard's lock):
 * forget what they confirm, put this process's newer writes over the rest.
 * false: out of memory, do not install. */
bool setcache__fence_merge(setcache *c, const sc_ident *id, sc_etable *rows);
/* The source announced a change of id's key at version (the listener and
 * the loads share that server): a write of the key fenced at a version up
 * to it is there now, or overtaken by a newer change; forget it (so the
 * writes of entities this process never reads don't pile up). Called by
 * setcache__classify, under the entity's shard lock, when no load of the
 * entity is in flight. */
void setcache__fence_seen(setcache *c, const sc_ident *id, const char *key, int64_t version);
/* Would setcache__fence_seen(c, id, key, version) forget a write? */
bool setcache__fence_covers(setcache *c, const sc_ident *id, const char *key, int64_t version);
/* Ask the source's history (on conn, one query) the newest version it has
 * of up to SC_FENCE_SWEEP fenced keys: *out (NULL: nothing fenced) has
 * rows (type, id, key, version), as setcache__fence_history's. */
#define SC_FENCE_SWEEP 1000
int setcache__fence_sweep(setcache *c, PGconn *conn, PGresult **out);
/* Before reading ids[0..n) from the source, on the same connection: the
 * newest version its history has of each fenced key (*out NULL: none
 * fenced, or no history to read). */
int setcache__fence_history(setcache *c, PGconn *conn, const sc_ident *const *ids, size_t n,
                            PGresult **out);
/* After: a tombstone of the history's version for each fenced key of id
 * the rows lack. */
int setcache__fence_tombs(const PGresult *hist, const sc_ident *id, sc_etable *rows);

/* === in defs.c === */
typedef struct sc_def {
    UT_hash_handle hh; /* key = type NUL key */
    setcache_type type;
    bool has_default;
    bool shared; /* read from <schema>.definitions */
    sc_parsed p;
    char *dflt;
    /* rules (setcache_definition) */
    char *desc, *pattern;
    bool has_min, has_max;
    double min, max;
    char **choices;
    size_t nchoices, max_length;
    uint16_t dklen;
    char dkey[];
} sc_def;

void setcache__defs_init(setcache *c);
void setcache__defs_destroy(setcache *c, bool own_process);
bool setcache__def_type(setcache *c, const char *type, size_t tlen, const char *key, size_t klen,
                        setcache_type *type_out);
int setcache__read_default(setcache *c, sc_ident *id, sc_read *r);
int setcache__defs_load_shared(setcache *c); /* read <schema>.definitions */
/* A query for the stored rows of one table that break their definition:
 * (count of all, entity type, id, key, problem), at most a few rows. */
typedef struct sc_bad_query {
    const char *table; /* for the log */
    const char *query;
} sc_bad_query;
/* Publish the handle's local definitions in one transaction, then count
 * (and log the first of) the rows each bad query finds: setcache_publish_
 * definitions, given the tables to check. */
int setcache__defs_publish(setcache *c, const sc_bad_query *bad, size_t nbad,
                           uint64_t *invalid_rows);
int setcache__check_rules(setcache *c, const sc_ident *id, const char *v);
int setcache__defs_add_defaults(setcache *c, const char *entity_type, sc_pair **pairs, size_t *n,
                                size_t *cap);

/* === in dispatch.c === */
typedef struct sc_event {
    struct sc_event *next;
    setcache_change ch; /* strings point into data */
    char data[];
} sc_event;

typedef struct sc_sub {
    UT_hash_handle hh; /* in c->subs_by_id */
    uint64_t id;
    char *type, *eid, *key; /* NULL = any */
    setcache_change_fn fn;
    void *arg;
    bool active; /* guarded by subs_mu */
    int refs;    /* dispatcher's references; guarded by subs_mu */
} sc_sub;

typedef struct sc_subidx {
    UT_hash_handle hh;
    sc_sub **subs;
    size_t n, cap;
    uint16_t plen;
    char pattern[];
} sc_subidx;

typedef struct sc_seen {
    UT_hash_handle hh;
    uint64_t order; /* 2 * version + (1 for DELETE) */
    double at_ms;
    uint16_t klen;
    char k[];
} sc_seen;

int setcache__subscribe(setcache *c, const char *entity_type, const char *entity_id,
                        const char *key, setcache_change_fn fn, void *arg, uint64_t *id);
void setcache__dispatch_init(setcache *c);
int setcache__dispatch_start(setcache *c);
void setcache__dispatch_stop(setcache *c);
void setcache__dispatch_destroy(setcache *c, bool own_process);
bool setcache__has_subscribers(setcache *c);
bool setcache__is_subscribed(setcache *c, const char *type, const char *id, const char *key);
void setcache__emit(setcache *c, setcache_change_kind kind, const char *type, const char *id,
                    const char *key, const char *value, const char *old, int64_t version,
                    bool local);
void setcache__emit_resync(setcache *c);
bool setcache__on_dispatch_thread(setcache *c);

/* === in tables.c === */
/* What the typed profile's number column is, which decides how its values
 * are rendered and which integers it can hold exactly. */
enum { SC_NUM_INTEGER, SC_NUM_NUMERIC, SC_NUM_FLOAT8, SC_NUM_FLOAT4 };
typedef struct sc_tmap {
    char *type;
    size_t tlen;
    char *table;        /* as given, for messages */
    int id_kind;        /* setcache_id_kind */
    bool typed;         /* the typed profile (str/num/json columns) */
    bool value_is_json; /* the single value column is json or jsonb */
    int num_kind;       /* SC_NUM_*: the typed profile's number column */
    bool writable;      /* a unique constraint on (entity, key) exists */
    char *fix;          /* the DDL that would make it writable */
    sc_sql sql;         /* load, load_type, load_many, del, upsert (text layout) */
    char *up_str, *up_num, *up_json, *up_jsonstr; /* typed profile upserts */
    char *entity_col, *key_col, *value_col, *str_col, *num_col, *json_col;
} sc_tmap;
int setcache__maps_init(setcache *c, const setcache_table_map *m, size_t n);
int setcache__map_check(const setcache_table_map *m, size_t i);
void setcache__maps_free(setcache *c);
sc_tmap *setcache__map_of(setcache *c, const char *type, size_t tlen);
int setcache__maps_prepare(setcache *c, PGconn *conn);
int setcache__map_check_id(const sc_tmap *m, const char *id);
int setcache__map_check_number(const sc_tmap *m, const char *value, int deftype);
char *setcache__maps_ddl(const char *schema, const char *channel, const setcache_table_map *m,
                         size_t n);
/* A subscriber's side of one mapped table: announce replicated rows, refuse
 * local writes with the trigger function guard ("schema".name()). */
char *setcache__map_replica_ddl(const char *schema, const char *channel,
                                const setcache_table_map *m, const char *guard);
char *setcache__map_quoted(const setcache_table_map *m); /* "schema"."table" */
const sc_sql *setcache__sql_for(setcache *c, const char *type, size_t tlen);
int setcache__maps_apply(setcache *c, PGconn *conn, const setcache_table_map *m, size_t n);
int setcache__rows_add(sc_etable *rows, const char *key, const char *value, size_t vlen,
                       int64_t version);

/* === in cache.c === */
enum { SC_EMPTY = 0, SC_LOADING = 1, SC_LOADED = 2 };

/* A change seen while an entity was loading: the load installs only if its
 * rows already reflect every one of these. */
typedef struct sc_pending {
    int64_t version;
    char *key;
    char op; /* 'U' (set) or 'D' (delete) */
} sc_pending;
#define SC_MAX_PENDING 1024 /* beyond it the load is not installed and runs again */

typedef struct sc_entity {
    UT_hash_handle hh;   /* in shard->table, key = ekey */
    sc_eview *view;      /* the entries while SC_LOADED, else NULL */
    sc_cell *cells;      /* bound references' cells attached to it */
    sc_pending *pending; /* changes seen while SC_LOADING */
    uint32_t npending, cappending;
    uint64_t stamp; /* clock value of the last change seen; guards fills */
    size_t bytes;   /* key + value bytes of entries */
    uint32_t nentries;
    uint8_t state;           /* SC_EMPTY / SC_LOADING / SC_LOADED */
    atomic_uchar referenced; /* CLOCK bit for eviction */
    uint16_t ekeylen;
    char ekey[]; /* type NUL id NUL */
} sc_entity;

typedef struct sc_shard {
    sc_brlock lock;
    sc_entity *table;                  /* guarded by lock */
    uint64_t unknown_stamp;            /* last change to an entity not in table; guarded by lock */
    uint64_t nloaded, nentries, bytes; /* guarded by lock */
} __attribute__((aligned(SC_LINE))) sc_shard;

/* What a lookup in the cache found (setcache__lookup). */
enum { SC_LOOKUP_ANSWERED, SC_LOOKUP_NO_VALUE, SC_LOOKUP_NOT_LOADED };
int setcache__lookup(setcache *c, sc_ident *id, sc_read *r, bool count_hit, int *rc);
#define SC_READ_ROUNDS 50 /* a read gives up after this many loads lost to changes */

/* setcache__begin_load's outcomes (or a negative error code) */
enum { SC_BEGIN_LOADED, SC_BEGIN_WAIT, SC_BEGIN_OWN };
#define SC_LOAD_ROUNDS 3 /* loads lost to changes before a read answers from the rows */
int setcache__begin_load(setcache *c, sc_ident *id, uint64_t *stamp, uint64_t *epoch);
void setcache__finish_load(setcache *c, sc_ident *id, sc_etable *entries, uint64_t stamp,
                           bool *installed);

uint64_t setcache__tick(setcache *c);
void setcache__invalidate_all(setcache *c);
void setcache__fence(setcache *c);
/* One write's outcome, for setcache__apply_local. */
typedef struct sc_local {
    sc_ident *id;
    const char *value; /* the stored value; NULL for a delete */
    int64_t version;
    bool deleted, uncertain;
    bool emit;    /* out: a change newer than what was cached */
    char *old;    /* out, with want_old: the value it replaced (malloc'd) or NULL */
    sc_entry *nw; /* cache.c's */
} sc_local;
void setcache__apply_local(setcache *c, sc_local *v, size_t n, bool want_old);
bool setcache__view_share(setcache *c, sc_ident *id, sc_eview **out);
void setcache__cell_attach(setcache *c, const sc_ident *id, sc_cell *cl);
void setcache__cell_detach(setcache *c, const sc_ident *id, sc_cell *cl);
void setcache__cache_init(setcache *c);
uint64_t setcache__preload_begin(setcache *c);
void setcache__preload_end(setcache *c);
void setcache__cache_wake(setcache *c);
void setcache__cache_destroy(setcache *c, bool own_process);
void setcache__wait_load(setcache *c, uint64_t epoch);
int setcache__install_preloaded(setcache *c, sc_ident *id, sc_etable *entries, uint64_t since);
void setcache__evict_if_needed(setcache *c, const sc_ident *keep);
void setcache__cache_stats(setcache *c, setcache_stats *st);

typedef struct sc_hintref {
    const char *key;
    int64_t version;
    char op;
} sc_hintref;
typedef struct sc_change {
    setcache_change_kind kind;
    int64_t version;
    char *key, *value, *old;
} sc_change;
/* What a batch of hints needs (setcache__classify); SC_ACT_LATER: look again
 * next round (loaded or loading by a reader meanwhile, or a local write raced). */
enum { SC_ACT_SKIP, SC_ACT_REFRESH, SC_ACT_FETCH, SC_ACT_LATER };
/* What setcache__current found. */
enum { SC_CUR_VALUE, SC_CUR_ABSENT, SC_CUR_UNKNOWN };
int setcache__classify(setcache *c, sc_ident *id, const sc_hintref *h, size_t n, bool want_fetch,
                       uint64_t *stamp);
bool setcache__refresh_begin(setcache *c, sc_ident *id, uint64_t *stamp);
bool setcache__refresh_install(setcache *c, sc_ident *id, sc_etable *rows, uint64_t stamp,
                               bool want, sc_change **changes, size_t *nchanges, bool *incomplete);
void setcache__changes_free(sc_change *v, size_t n);
void setcache__invalidate(setcache *c, sc_ident *id);
int setcache__current(setcache *c, sc_ident *id, char **value, int64_t *version);
int setcache__loaded_entities(setcache *c, char ***out, size_t *n);

/* === in load.c === */
int setcache__ensure_loaded(setcache *c, sc_ident *id, sc_etable *answer);
int setcache__load_for_read(setcache *c, sc_ident *id, sc_read *r, bool *answered);
int setcache__read_id(setcache *c, sc_ident *id, sc_read *r);

/* === in refresh.c === */
/* op: I, U, D as announced; SC_HINT_SEEN: the fence's sweep found the
 * version at the source (not counted as a notification, never told to
 * subscribers, dropped rather than retried) */
#define SC_HINT_SEEN 'S'
void setcache__hint(setcache *c, char op, int64_t version, int be_pid, const sc_ident *id);
void setcache__request_resync(setcache *c, uint64_t gen);
void setcache__request_defs_reload(setcache *c);
void setcache__refresh_init(setcache *c);
uint64_t setcache__reconciled_gen(setcache *c);
int setcache__refresh_start(setcache *c);
void setcache__refresh_stop(setcache *c);
void setcache__refresh_destroy(setcache *c, bool own_process);

/* === in ref.c === */
void setcache__refs_init(setcache *c);
void setcache__refs_destroy(setcache *c, bool own_process);

/* === in snap.c === */
void setcache__snaps_init(setcache *c);
void setcache__snaps_destroy(setcache *c, bool own_process);

/* === in listen.c === */
void setcache__listen_init(setcache *c);
int setcache__listener_start(setcache *c);
void setcache__listen_forget(setcache *c);
int setcache__listen_state(setcache *c);
void setcache__listen_destroy(setcache *c, bool own_process);
void setcache__listener_stop(setcache *c);
int setcache__parse_payload(const char *payload, char *buf, size_t cap, char *op, int64_t *version,
                            sc_ident *id);

/* Fault-injection hooks, compiled only into the test build
 * (-DSETCACHE_TEST_HOOKS); SC_HOOK(name, args) is nothing otherwise. */
#ifdef SETCACHE_TEST_HOOKS
#define SC_HOOK(name, ...)                                                                         \
    do {                                                                                           \
        if (setcache__hooks.name) {                                                                \
            setcache__hooks.name(__VA_ARGS__);                                                     \
        }                                                                                          \
    } while (0)
#else
#define SC_HOOK(name, ...)                                                                         \
    do {                                                                                           \
    } while (0)
#endif
typedef struct sc_hooks {
    void (*after_load_query)(setcache *c, const char *type, const char *id);
    void (*listener_before_listen)(setcache *c);    /* connected, not yet listening */
    void (*listener_before_reconcile)(setcache *c); /* listening, not yet reconciled */
} sc_hooks;
#ifdef SETCACHE_TEST_HOOKS
extern sc_hooks setcache__hooks;
void setcache__t_fail_alloc(long k);  /* util.c: the k-th allocation from now fails */
bool setcache__t_alloc_failed(void);  /* it has happened */
size_t setcache__t_alloc_sites(void); /* distinct call sites failed so far */
#endif

/* ---- the handle: immutable options, then each module's own state ---- */

typedef struct sc_cache { /* cache.c */
    sc_shard shards[SC_NSHARDS];
    atomic_uint_fast64_t clock; /* change clock for entity stamps */
    atomic_size_t nentities;    /* entity structs in all shards */
    atomic_int preloading;      /* preloads in flight: remember changed entities */
    atomic_uint evict_hand;
    pthread_mutex_t load_mu; /* with load_cv: waiting for in-flight loads */
    pthread_cond_t load_cv;
    atomic_uint_fast64_t load_epoch;
    atomic_uint_fast64_t server_seen; /* setcache__server_gen the entries come from */
} sc_cache;

typedef struct sc_defs { /* defs.c */
    sc_brlock lock;
    sc_def *table; /* guarded by lock: the definitions in effect */
    sc_def *local; /* guarded by lock: those made in this handle, for publishing */
} sc_defs;

typedef struct sc_listen { /* listen.c */
    pthread_t thread;
    bool started;
    PGconn *conn;        /* touched only by the listener thread (and close in a child) */
    char *hb_sql_prefix; /* NOTIFY "channel", E' ... built at listener start */
    atomic_int state;
    pthread_mutex_t state_mu; /* with state_cv: open waits for the first LISTEN */
    pthread_cond_t state_cv;
} sc_listen;

typedef struct sc_dispatch { /* dispatch.c */
    pthread_mutex_t subs_mu; /* with subs_cv: unsubscribe waits for a running callback */
    pthread_cond_t subs_cv;
    sc_sub *subs_by_id;   /* guarded by subs_mu */
    sc_subidx *subidx;    /* guarded by subs_mu */
    sc_sub *running;      /* guarded by subs_mu */
    uint64_t next_sub_id; /* guarded by subs_mu */
    atomic_size_t nsubs;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu; /* with cv: the event queue and the seen map */
    pthread_cond_t cv;
    sc_event *head, *tail; /* guarded by mu */
    size_t len;            /* guarded by mu */
    sc_seen *seen;         /* guarded by mu */
    bool stop;             /* guarded by mu */
    bool resync_pending;   /* a RESYNC that could not be allocated; guarded by mu */
} sc_dispatch;

typedef struct sc_refs { /* ref.c */
    pthread_mutex_t mu;
    struct setcache_ref *list; /* open refs; guarded by mu */
    size_t n;                  /* guarded by mu */
} sc_refs;

typedef struct sc_snapslot { /* snap.c: open snapshots, striped by read slot */
    pthread_mutex_t mu;
    struct setcache_snapshot *list; /* guarded by mu */
    size_t n;                       /* guarded by mu */
} __attribute__((aligned(SC_LINE))) sc_snapslot;
typedef struct sc_snaps { /* snap.c */
    sc_snapslot slot[SC_RSLOTS];
} sc_snaps;

typedef struct sc_refresh { /* refresh.c */
    pthread_mutex_t mu;     /* with cv: hints from the listener */
    pthread_cond_t cv;
    struct sc_hint *head, *tail;                 /* guarded by mu */
    size_t len;                                  /* guarded by mu */
    bool overflow, truncate, stop, defs_changed; /* guarded by mu */
    uint64_t resync_gen;                         /* guarded by mu */
    atomic_uint_fast64_t reconciled_gen;
    pthread_t thread;
    bool started;
} sc_refresh;

struct setcache {
    /* Immutable after open. */
    char *conninfo, *listen_conninfo, *write_conninfo, *schema, *channel;
    bool split_writes; /* write_conninfo names another server: writes use wpool */
    int pool_size;
    int acquire_timeout_ms;
    int io_timeout_ms;        /* 0: no client-side deadline */
    int statement_timeout_ms; /* 0: the server's own */
    size_t max_entities;
    size_t max_value_len;
    bool create_schema;
    bool shared_definitions;
    bool prepared_statements;
    void (*log)(void *arg, int level, const char *msg);
    void *log_arg;
    int heartbeat_ms, heartbeat_deadline_ms, reconnect_initial_ms, reconnect_max_ms;
    size_t dq_max;
    void (*on_state)(void *arg, int state, const char *reason);
    void *state_arg;
    pid_t pid;
    int wake_fd;   /* eventfd the listener polls: close and the refresher ring it */
    sc_sql sql;    /* schema.c */
    sc_tmap *maps; /* tables.c */
    size_t nmaps;

    atomic_int closing;
    atomic_bool many_by_statement; /* write.c: the write server has no write_many */

    /* Each module's state, touched only by that module. */
    sc_cache cache;
    sc_defs defs;
    sc_pool pool;  /* loads (conninfo) */
    sc_pool wpool; /* writes (write_conninfo), with split_writes only */
    sc_fence fence;
    sc_listen listen;
    sc_dispatch dispatch;
    sc_refresh refresh;
    sc_stripe stripes[SC_NSTRIPES]; /* stats.c */
    sc_fast fast;                   /* stats.c */
    sc_refs refs;
    sc_snaps snaps;
};

/* Count one hit of a lock-free read in this thread's own counter (stats.c):
 * a load and a store to a line no other thread writes. */
static inline void setcache__count_fast_hit(setcache *c)
{
    sc_tcount *t = setcache__tl_gen == c->fast.gen ? setcache__tl_count : setcache__fast_slot(c);
    if (t) {
        atomic_store_explicit(&t->n, atomic_load_explicit(&t->n, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    }
}

#endif /* SETCACHE_INTERNAL_H */