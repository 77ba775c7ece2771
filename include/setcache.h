/*
 * setcache.h - a coherent in-memory cache of settings stored in PostgreSQL.
 *
 * setcache keeps settings addressed by (entity_type, entity_id, key) in a
 * thread-safe hash cache. The first read of an entity loads all of its
 * settings in one query; every later read of that entity is answered from
 * memory. Writes go through to PostgreSQL and return after COMMIT. A listener
 * thread uses LISTEN/NOTIFY (fired by triggers, so plain SQL writes count too)
 * to keep the cache of every process consistent.
 *
 * This header is the contract. Each declaration states its behaviour on
 * failure, the rule for every parameter, every return code, its thread-safety
 * and who owns what.
 *
 * Guarantees (each proven by the tests the README's table names):
 *   G1 durable write      set_* returns SETCACHE_OK only after COMMIT
 *                         succeeded; a connection lost after the statement
 *                         was sent gives SETCACHE_ERR_UNCERTAIN and the entity
 *                         is invalidated.
 *   G2 read-your-writes   after a write returns, every thread of this process
 *                         reads that version or a newer one.
 *   G3 bounded staleness  while the state is VALID, a change committed by
 *                         any other process (or plain SQL) is read here
 *                         within milliseconds: its notification makes the
 *                         refresher re-read the entity.
 *   G4 monotonic reads    successive reads of one setting within a process
 *                         never go back in version.
 *   G5 no phantom values  every value returned was committed, byte for byte,
 *                         as a load of the row would read it.
 *   G6 convergence        when writes stop and the state is VALID, every
 *                         cached entity equals its rows in the table.
 *   G7 ordered, unique    per setting, change callbacks arrive in increasing
 *      callbacks          version order, at most once per version.
 *   G8 latest state or    for every change, the setting's latest state is
 *      RESYNC             delivered, in version order; versions overwritten
 *                         before they could be read are coalesced into the
 *                         newer one; a gap in what could be followed
 *                         (reconnect, TRUNCATE, queue overflow) is announced
 *                         by a SETCACHE_CHANGE_RESYNC first.
 *   G9 unsubscribe is     after setcache_unsubscribe returns (outside that
 *      final              callback) the callback is not running and never
 *                         runs again.
 *   G10 honest state      never VALID unless the listener is proven alive; a
 *                         silent listener turns INTERRUPTED within
 *                         heartbeat_ms + heartbeat_deadline_ms + 250 ms.
 *   G11 whole            a snapshot of an entity (setcache_snapshot_open)
 *       transactions     never shows part of one transaction's changes to
 *                        that entity: one setcache_set_many, or a plain SQL
 *                        transaction that changes several of its keys, is
 *                        in it wholly or not at all. Every install of the
 *                        library (a write's outcome, a load, a re-read after
 *                        a change, a reconcile) puts one transaction's
 *                        changes to an entity in place at once.
 * Not promised: atomicity across keys for separate plain reads (reading `a`
 * then `b` may give a new `a` and an old `b`: read them from one snapshot),
 * across entities, nor every intermediate version.
 *
 * Threads: a setcache handle may be used from any number of threads at once.
 * Errors: functions that can fail return int: SETCACHE_OK (0), the positive
 * SETCACHE_NOT_FOUND, or a negative SETCACHE_ERR_* code; setcache_errmsg()
 * then describes the calling thread's last error.
 */
#ifndef SETCACHE_H
#define SETCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SETCACHE_BUILDING) && defined(__GNUC__)
#define SETCACHE_API __attribute__((visibility("default")))
#else
#define SETCACHE_API
#endif

#define SETCACHE_VERSION_MAJOR 0
#define SETCACHE_VERSION_MINOR 1
#define SETCACHE_VERSION_PATCH 0
#define SETCACHE_VERSION_STRING "0.1.0"

/* Return codes. Append-only. */
enum {
    SETCACHE_OK = 0,
    SETCACHE_NOT_FOUND = 1,      /* no stored value and no default */
    SETCACHE_ERR_ARG = -1,       /* NULL, empty, too long or malformed argument */
    SETCACHE_ERR_TYPE = -2,      /* value can't be read/written as that type */
    SETCACHE_ERR_SPACE = -3,     /* caller's buffer too small; needed length reported */
    SETCACHE_ERR_DB = -4,        /* the database refused or failed */
    SETCACHE_ERR_TIMEOUT = -5,   /* no pooled connection within acquire_timeout_ms, or the
                                    server cancelled it after statement_timeout_ms */
    SETCACHE_ERR_NOMEM = -6,     /* out of memory; the cache is still consistent */
    SETCACHE_ERR_CLOSED = -7,    /* the handle is shutting down */
    SETCACHE_ERR_UNCERTAIN = -8, /* connection lost after COMMIT was sent */
    SETCACHE_ERR_INVALID = -9    /* the value breaks a rule of its key's definition (min, max,
                                    choices, pattern, max_length); nothing written */
};

/* Log levels passed to setcache_options.log. */
enum { SETCACHE_LOG_ERROR, SETCACHE_LOG_WARN, SETCACHE_LOG_INFO, SETCACHE_LOG_DEBUG };

/* Identifier limits. */
#define SETCACHE_MAX_TYPE_LEN 63
#define SETCACHE_MAX_ID_LEN 255
#define SETCACHE_MAX_KEY_LEN 255
#define SETCACHE_MAX_VALUE_LEN ((size_t)1024 * 1024)

typedef struct setcache setcache;                   /* opaque, thread-safe */
typedef struct setcache_ref setcache_ref;           /* a bound setting: setcache_ref_open */
typedef struct setcache_snapshot setcache_snapshot; /* a whole entity: setcache_snapshot_open */

/*
 * Serve one entity type from a table the application already has, instead
 * of <schema>.settings (since 0.1.0). Names are [a-z_][a-z0-9_]* each.
 */
/*
 * An id has exactly one spelling, the text the server gives the entity
 * column, so that one row is always one cached entity. Any other spelling of
 * the same value is refused with SETCACHE_ERR_ARG (never rewritten) by every
 * call that takes an id: reads, writes, set_many, delete, foreach and
 * subscription filters naming the type. Since: 0.1.0.
 */
typedef enum {
    SETCACHE_ID_INTEGER, /* integer/bigint column; ids in decimal as the server writes
                            them: "0" or an optional "-" then 1-9 first ("012", "+12",
                            "-0", " 12" are refused), within bigint */
    SETCACHE_ID_TEXT,    /* text / varchar: the id is the text, byte for byte */
    SETCACHE_ID_UUID,    /* uuid column; ids in lower-case 8-4-4-4-12 hex form (upper
                            case, braces, no hyphens are refused) */
    SETCACHE_ID_NONE     /* no entity column: global settings, entity id "global" */
} setcache_id_kind;

typedef struct setcache_table_map {
    const char *entity_type;   /* the type these rows are, e.g. "account" */
    const char *table;         /* schema-qualified: "public.accountsetting" */
    const char *entity_column; /* e.g. "account_id"; NULL with SETCACHE_ID_NONE */
    setcache_id_kind id_kind;
    const char *key_column; /* e.g. "key" */
    /* Either one value column (text, json or jsonb) ... */
    const char *value_column;
    /* ... or typed columns, the built-in "typed" profile: strings in
     * str_column, ints and doubles in num_column (smallint, integer, bigint,
     * numeric, real or double precision), booleans as the JSON string
     * "true"/"false" and lists/objects in json_column (json or jsonb). Reads
     * of a row take json_column when it holds more than {} / null, else
     * num_column, else str_column (a legacy str value 'None' means no
     * value). Writes use the key's definition.
     *
     * What every process reads is what a load decodes from the stored row:
     * a write caches the value its own statement returns as stored (jsonb
     * normalised, numbers as the column holds them), never the text sent.
     * num_column renders integral values below 2^63 in magnitude as a
     * decimal integer ("14", "1700000000000000"), others as the column
     * type's own text (double precision and real: the shortest form that
     * reads back as the same number, e.g. "0.1", "1e+20"; numeric: its
     * digits at the column's scale). An integer a double precision (beyond
     * 2^53) or real (beyond 2^24) column can't hold exactly, or a fraction
     * for an integer column, is refused with SETCACHE_ERR_ARG before
     * anything is sent. */
    const char *str_column, *num_column, *json_column;
} setcache_table_map;

/*
 * Options for setcache_open(). Always fill with setcache_options_init()
 * first, then change what you need; fields may be added at the end.
 */
typedef struct setcache_options {
    const char *conninfo;        /* libpq conninfo or URI; NULL or "" = libpq defaults (PG* env) */
    const char *listen_conninfo; /* listener's own server (bypass a pooler); NULL = conninfo */
    const char *schema;          /* default "setcache"; [a-z_][a-z0-9_]{0,62} */
    const char *channel;         /* NOTIFY channel, default "setcache"; same rule */
    int pool_size;               /* connections for loads and writes, default 4, 1..1024 */
    int acquire_timeout_ms;      /* wait for a pooled connection, default 5000, >= 0 */
    size_t max_entities;         /* 0 = unbounded; beyond it whole entities are evicted */
    bool create_schema;          /* create missing table, triggers, functions (idempotent) */
    void (*log)(void *arg, int level, const char *msg); /* NULL = silent; never under a lock */
    void *log_arg;
    /* Extensions (since 0.1.0). */
    size_t max_value_len;      /* largest value accepted, default and cap 1 MiB */
    int heartbeat_ms;          /* tick interval (one ticker per database and channel; the
                                  others probe when ticks stop), default 1000, >= 50 */
    int heartbeat_deadline_ms; /* a tick or probe must return within this, default 1000,
                                  >= 50 */
    int reconnect_initial_ms;  /* first listener reconnect backoff, default 100 */
    int reconnect_max_ms;      /* backoff cap (with jitter), default 10000 */
    size_t dispatch_queue_max; /* change events queued for callbacks, default 10000 */
    /* State changes (CONNECTING/VALID/INTERRUPTED/CLOSED) with the reason;
     * called from a library thread with no lock held. NULL = none. */
    void (*on_state)(void *arg, int state, const char *reason);
    void *state_arg;
    /* Entity types served from existing tables (copied at open). With
     * create_schema, open adds to each a setcache_version column (a one-time
     * rewrite of the table under an exclusive lock) and triggers; without it,
     * `setcache --map ... schema` prints that DDL. A table needs a unique
     * constraint on (entity column, key column) for writes; without one it
     * is served read-only. */
    const setcache_table_map *tables;
    size_t ntables;
    /* A client-side deadline on every round trip of a pooled connection
     * (loads, writes): a server or network that does not answer within it
     * gives SETCACHE_ERR_DB for a read (SETCACHE_ERR_UNCERTAIN for a write
     * whose statement was sent, and the entity is dropped), and the
     * connection is closed, never returned to the pool; a pooled
     * connection's connect and the listener's LISTEN wait no longer either.
     * Pooled connections also get it as tcp_user_timeout unless the
     * conninfo sets one (the listener the smaller of it and heartbeat_ms +
     * heartbeat_deadline_ms). Default
     * 10000; 0 = no deadline (a stalled network waits for TCP). Since 0.1.0.
     * With statement_timeout_ms on, a round trip's deadline is the sum of
     * both (the server is given its own limit first); a stalled network is
     * still found within io_timeout_ms by TCP: every connection's keepalives
     * (idle io/2 s, then 3 probes, 1 s or more apart) and tcp_user_timeout
     * come from it unless the conninfo sets them. */
    int io_timeout_ms;
    /* A load or write the server has not finished within this is cancelled
     * by the server and returns SETCACHE_ERR_TIMEOUT, naming this option; a
     * cancelled write committed nothing and the cache is unchanged. Set per
     * transaction (set_config(..., true), sent in the same round trip as
     * the statement), so it holds behind PgBouncer in transaction mode.
     * Not applied inside setcache_with_conn. Default 30000; 0 = the
     * server's own setting. Since 0.1.0. */
    int statement_timeout_ms;
    /* Read the database's shared definitions (table <schema>.definitions)
     * at open and follow their changes live; where one differs from a
     * definition made in this handle, the shared one wins (it is what the
     * database enforces for every writer) and the difference is logged and
     * counted (setcache_stats.definition_conflicts). Default true. Since
     * 0.1.0. */
    bool shared_definitions;
    /* Writes (set, delete, set_many, setcache_publish_definitions) and
     * setcache_with_conn go to this server, on a pool of their own
     * (pool_size connections, made when first needed); loads stay on
     * conninfo and the listener on listen_conninfo. NULL, "" or the same
     * text as conninfo: everything on conninfo, as before. For a fleet past
     * one primary (docs/DEPLOYMENT.md): conninfo and listen_conninfo a
     * local logical-replication subscriber, this the primary (a multi-host
     * conninfo or a PgBouncer). Reads stay monotonic and read-your-writes
     * while the subscriber lags: every install from it keeps, per key, the
     * newer of what this process wrote and what the rows say (deletions
     * too), until the subscriber shows the write (its notification, its
     * rows, or its replicated history). listen_conninfo must name the same
     * server as conninfo here: its notifications confirm writes. Writes of
     * entities this process never reads are forgotten as they are
     * confirmed (the refresher asks the subscriber's history once a second
     * while any is unconfirmed; a role that may not read the history gets
     * a warning, and its writes are confirmed by notifications and
     * re-reads only), so memory stays bounded by what the subscriber has
     * not applied yet. Since 0.1.0. */
    const char *write_conninfo;
    /* Send the statements a fleet repeats most - an entity's load and
     * re-read, a single set or delete, and the statement_timeout_ms
     * set_config in front of them - as named prepared statements: each
     * pooled connection prepares one the first time it sends it (one more
     * round trip, once, within io_timeout_ms; their names begin "setcache_"),
     * and the server parses and plans it no more. A statement the server
     * no longer knows (a DEALLOCATE, a pooler that moved the session) is
     * prepared again: a read or write sent outside a transaction is then
     * sent once more (the server ran nothing); inside one, the call fails
     * with SETCACHE_ERR_DB. Leave it off behind a pooler in transaction or
     * statement mode that does not carry prepared statements (PgBouncer
     * before 1.21, or without max_prepared_statements): every call would
     * pay a failed try. Default false. Since 0.1.0. */
    bool prepared_statements;
} setcache_options;

/*
 * Fill every field of *o with its default.
 * o: out, must not be NULL (a NULL o is ignored).
 * Threads: any. Since: 0.1.0.
 */
SETCACHE_API void setcache_options_init(setcache_options *o);

/*
 * The library's version, "MAJOR.MINOR.PATCH", equal to SETCACHE_VERSION_STRING
 * of the header it was built with.
 * Ownership: static string. Threads: any. Since: 0.1.0.
 */
SETCACHE_API const char *setcache_version(void);

/*
 * Name a return code, e.g. "SETCACHE_ERR_DB: database error".
 * Ownership: static string, never NULL (unknown codes give "unknown error").
 * Threads: any. Since: 0.1.0.
 */
SETCACHE_API const char *setcache_strerror(int rc);

/*
 * Name a listener state: "CONNECTING", "VALID", "INTERRUPTED" or "CLOSED"
 * (any other value). Ownership: static string, never NULL. Threads: any.
 * Since: 0.1.0.
 */
SETCACHE_API const char *setcache_state_name(int state);

/*
 * Human-readable message for the calling thread's last error (thread-local,
 * like dlerror): e.g. the PostgreSQL error text. Never contains a password or
 * the raw conninfo. "" when the thread has no error yet.
 * Ownership: thread-local buffer valid until the thread's next setcache call.
 * Threads: any. Since: 0.1.0.
 */
SETCACHE_API const char *setcache_errmsg(void);

/*
 * Open a handle: validate the options, connect once to check the server and
 * the schema (creating it when o->create_schema), and start the listener.
 * out: out, must not be NULL; *out is the handle on success, NULL on failure.
 * o:   in, NULL = all defaults; copied, may be freed after the call.
 * With create_schema, the schema (and each mapped table's set-up) is brought
 * to this release's revision; one set up by a newer release is left as it
 * is (logged at SETCACHE_LOG_INFO), or, set up for another channel or other
 * columns, fails the open (SETCACHE_ERR_DB) and changes nothing.
 * Returns SETCACHE_OK; SETCACHE_ERR_ARG (bad option); SETCACHE_ERR_DB (server
 * unreachable, or schema missing and create_schema false, or a newer
 * release's set-up for another configuration); SETCACHE_ERR_NOMEM.
 * Threads: any. Ownership: caller owns *out and must setcache_close() it.
 * Since: 0.1.0.
 */
SETCACHE_API int setcache_open(setcache **out, const setcache_options *o);

/*
 * Stop the listener, join every library thread, close every connection and
 * free everything. NULL is ignored. Calls still running in other threads must
 * have returned before; calls made after it begins get SETCACHE_ERR_CLOSED
 * until it returns (after which the handle is gone). In a child process after
 * fork() it never touches the parent's server sessions (their memory is
 * leaked instead). Threads: once, from any thread. Since: 0.1.0.
 */
SETCACHE_API void setcache_close(setcache *c);

/* ---- Definitions ------------------------------------------------------ */

typedef enum {
    SETCACHE_STRING,
    SETCACHE_INT,
    SETCACHE_DOUBLE,
    SETCACHE_BOOL,
    SETCACHE_JSON
} setcache_type;

/*
 * Define a key of an entity type: its type and optional default. A read of
 * the key with no stored value returns the default; a write is checked
 * against the type (SETCACHE_ERR_TYPE, nothing written). Redefining replaces
 * the previous definition, unless a shared definition of the key exists
 * (see shared_definitions: the shared one is used). Definitions live in
 * this handle until setcache_publish_definitions.
 * default_value: NULL = no default; else it must be valid for the type (a
 * JSON default is validated by the server, so this may query once).
 * Returns OK, ERR_ARG, ERR_TYPE (bad default), ERR_DB/ERR_TIMEOUT (JSON
 * check), ERR_NOMEM, ERR_CLOSED.
 * Threads: any. Ownership: strings are copied. Since: 0.1.0.
 */
SETCACHE_API int setcache_define(setcache *c, const char *entity_type, const char *key,
                                 setcache_type type, const char *default_value);

/*
 * A definition with rules, for setcache_define_rules and
 * setcache_publish_definitions. Fill with {0} and set what you need.
 */
typedef struct setcache_definition {
    const char *entity_type, *key; /* required */
    setcache_type type;
    const char *default_value; /* NULL = none; must obey the rules below */
    const char *description;   /* NULL = none */
    /* SETCACHE_INT and SETCACHE_DOUBLE: bounds, inclusive (compared as
     * doubles here; the server compares exactly) */
    bool has_min, has_max;
    double min, max;
    /* SETCACHE_STRING only: */
    const char *const *choices; /* NULL = any; else the value must equal one of them */
    size_t nchoices;
    const char *pattern; /* a PostgreSQL regular expression (~), checked by the server only:
                            PostgreSQL's regular expressions are not POSIX's */
    size_t max_length;   /* in characters; 0 = no limit */
} setcache_definition;

/*
 * Define a key with rules. Like setcache_define, and every write of the key
 * through this handle is checked against the rules before anything is sent:
 * a value that breaks one gives SETCACHE_ERR_INVALID with a message naming
 * the entity, key, rule and value (the server checks the same rules for
 * every writer once the definition is published, and a write it refuses
 * also gives SETCACHE_ERR_INVALID). A rule on a type it does not fit
 * (choices on an int, min on a string), min > max or a malformed default
 * give SETCACHE_ERR_ARG / SETCACHE_ERR_TYPE; a default that breaks a rule
 * SETCACHE_ERR_INVALID. Nothing is sent to the server (see
 * setcache_publish_definitions). Returns OK, ERR_ARG, ERR_TYPE,
 * ERR_INVALID, ERR_DB/ERR_TIMEOUT (JSON default check), ERR_NOMEM,
 * ERR_CLOSED. Threads: any. Ownership: everything is copied. Since: 0.1.0.
 */
SETCACHE_API int setcache_define_rules(setcache *c, const setcache_definition *d);

/*
 * Upsert every definition made in this handle (setcache_define and
 * setcache_define_rules) into <schema>.definitions, in one transaction, so
 * that the database enforces them for every writer and other handles (with
 * shared_definitions) and the setcache tool see them (the built-in table's
 * and every mapped table's rows are checked, the latter by the value a load
 * decodes). Existing rows that
 * break a published rule are reported — counted, with the first examples,
 * in the log (SETCACHE_LOG_WARN) and in *invalid_rows when not NULL —
 * never rewritten. Returns OK, ERR_INVALID (the server refused a definition:
 * its default breaks its rules, or its pattern does not compile; nothing is
 * published), ERR_DB, ERR_TIMEOUT, ERR_UNCERTAIN, ERR_NOMEM, ERR_CLOSED.
 * Threads: any. Since: 0.1.0.
 */
SETCACHE_API int setcache_publish_definitions(setcache *c, uint64_t *invalid_rows);

/* ---- Reads: served from memory ------------------------------------------
 *
 * Identity: entity_type is 1-63 bytes of [a-z0-9_]; entity_id and key are
 * 1-255 bytes of valid UTF-8 without control characters. A malformed identity
 * gives SETCACHE_ERR_ARG.
 *
 * The first read of an entity loads all of its settings in ONE query
 * (concurrent first reads share that one load); from then on every read of
 * the entity, including keys that do not exist, is answered from memory until
 * a change invalidates it. A read never writes anything and a database error
 * is never answered with a default (it is SETCACHE_ERR_DB/ERR_TIMEOUT).
 *
 * Each returns SETCACHE_OK, SETCACHE_NOT_FOUND (no stored value, no default),
 * SETCACHE_ERR_ARG, SETCACHE_ERR_TYPE, SETCACHE_ERR_DB, SETCACHE_ERR_TIMEOUT,
 * SETCACHE_ERR_NOMEM or SETCACHE_ERR_CLOSED. Threads: any.
 */

/*
 * Copy the value into buf (NUL-terminated). *len (if len is not NULL) gets
 * strlen(value) whatever cap is; when cap <= strlen(value) the result is
 * SETCACHE_ERR_SPACE and buf is left unchanged (buf may be NULL when cap is 0).
 * Since: 0.1.0.
 */
SETCACHE_API int setcache_get_string(setcache *c, const char *entity_type, const char *entity_id,
                                     const char *key, char *buf, size_t cap, size_t *len);

/*
 * Return a malloc'd copy of the value, or NULL with *rc (if rc is not NULL)
 * set to the failure code; *rc is SETCACHE_OK on success.
 * Ownership: the caller free()s the result. Since: 0.1.0.
 */
SETCACHE_API char *setcache_dup_string(setcache *c, const char *entity_type, const char *entity_id,
                                       const char *key, int *rc);

/*
 * Typed reads: the value (or default) must parse completely as the type,
 * else SETCACHE_ERR_TYPE. Values are parsed once when they enter the cache.
 * Booleans read true/false/t/f/1/0/yes/no/on/off, case-insensitive.
 * out: out, must not be NULL; unchanged on failure. Since: 0.1.0.
 */
SETCACHE_API int setcache_get_int(setcache *c, const char *entity_type, const char *entity_id,
                                  const char *key, int64_t *out);
SETCACHE_API int setcache_get_double(setcache *c, const char *entity_type, const char *entity_id,
                                     const char *key, double *out);
SETCACHE_API int setcache_get_bool(setcache *c, const char *entity_type, const char *entity_id,
                                   const char *key, bool *out);

/*
 * Warm one entity (one query unless it is cached already). Since: 0.1.0.
 */
SETCACHE_API int setcache_load(setcache *c, const char *entity_type, const char *entity_id);

/*
 * Warm every entity of a type that has stored settings, in one streamed
 * query. Entities changed while the query ran are left to load lazily.
 * With max_entities set, at most max_entities entities stay cached.
 * Since: 0.1.0.
 */
SETCACHE_API int setcache_preload(setcache *c, const char *entity_type);

/*
 * Call fn for every setting of the entity in key order: stored values, then
 * defaults of defined keys with no stored value (is_default true). fn runs
 * with no library lock held and may call the handle. fn returns non-zero to
 * stop early; setcache_foreach then returns that value. Returns OK when every
 * setting was visited (also for an entity with none).
 * Ownership: key/value strings are valid during the call only. Since: 0.1.0.
 */
SETCACHE_API int setcache_foreach(setcache *c, const char *entity_type, const char *entity_id,
                                  int (*fn)(void *arg, const char *key, const char *value,
                                            bool is_default),
                                  void *arg);

/* ---- Bound references: the hot path ------------------------------------
 *
 * A ref names one setting once; each read through it is a few loads from a
 * cell the cache keeps up to date, with no hashing, no lock and no write to
 * shared memory (the cache publishes every change to the cell with a
 * sequence counter; a reader that overlaps a change tries again on the
 * locked path). A ref follows every change a plain read does (its own
 * writes, other processes, plain SQL, refresh, reconcile after a reconnect,
 * delete, eviction, TRUNCATE): G2, G4 and G5 hold for it. Values of up to 63
 * bytes are held in the cell; a longer value, a key with no stored value (its
 * default), a value of another type (SETCACHE_ERR_TYPE), a buffer too small,
 * and an entity not loaded (evicted, or dropped after an uncertain write) are
 * answered by the plain read path, at a plain read's cost.
 * Hits: each read through a ref counts in setcache_stats.hits; the fast path
 * adds it to a counter only the reading thread writes (one per thread and
 * handle), summed by setcache_get_stats.
 * Eviction: a ref's reads mark its entity recently used as plain reads do
 * (the cell's own flag, set only when an eviction sweep has cleared it).
 */

/*
 * Bind (entity_type, entity_id, key): the same checks as a read, loading the
 * entity if it is not cached. A key with no stored value and no default can
 * be bound (reads give SETCACHE_NOT_FOUND until it is set).
 * Returns SETCACHE_OK with *out set, SETCACHE_ERR_ARG (NULL or invalid
 * argument), SETCACHE_ERR_DB / SETCACHE_ERR_TIMEOUT (the load failed),
 * SETCACHE_ERR_NOMEM or SETCACHE_ERR_CLOSED; *out is NULL on failure.
 * Ownership: the caller closes *out with setcache_ref_close before
 * setcache_close; setcache_close closes refs still open (and logs a warning
 * with their count), after which their pointers are invalid.
 * Threads: any; a ref may be read from several threads at once (for the
 * hottest loops give each thread its own: the reads share nothing then).
 * Memory: about 600 bytes a ref. Since: 0.1.0.
 */
SETCACHE_API int setcache_ref_open(setcache *c, const char *entity_type, const char *entity_id,
                                   const char *key, setcache_ref **out);

/*
 * Reads through a ref, with the codes and meaning of the plain reads: the
 * stored value, else the key's default, else SETCACHE_NOT_FOUND;
 * SETCACHE_ERR_TYPE, SETCACHE_ERR_SPACE (get_string: *len is the length
 * needed), SETCACHE_ERR_ARG (NULL r or out), or the codes of a load when the
 * entity had to be loaded again. out is unchanged on failure. Since: 0.1.0.
 */
SETCACHE_API int setcache_ref_get_int(setcache_ref *r, int64_t *out);
SETCACHE_API int setcache_ref_get_double(setcache_ref *r, double *out);
SETCACHE_API int setcache_ref_get_bool(setcache_ref *r, bool *out);
SETCACHE_API int setcache_ref_get_string(setcache_ref *r, char *buf, size_t cap, size_t *len);

/*
 * Release a ref; NULL is ignored. No read through it may be running or
 * start. Threads: any. Since: 0.1.0.
 */
SETCACHE_API void setcache_ref_close(setcache_ref *r);

/* ---- Entity snapshots: a consistent view of a whole entity -------------
 *
 * A snapshot holds an entity's stored values as they were at one moment,
 * unchanged by later writes (G11). Opening one shares the cache's table of
 * the entity (one reference count; no value is copied); a change to the
 * entity while a snapshot shares it copies the table's slots, not the values
 * (copy-on-write). Defaults are the definitions' at the time of each read.
 */

/*
 * Take a snapshot of an entity, loading it if it is not cached.
 * Returns SETCACHE_OK with *out set, SETCACHE_ERR_ARG, SETCACHE_ERR_DB /
 * SETCACHE_ERR_TIMEOUT (the load failed), SETCACHE_ERR_NOMEM or
 * SETCACHE_ERR_CLOSED; *out is NULL on failure.
 * Ownership: the caller closes *out with setcache_snapshot_close before
 * setcache_close (which closes snapshots still open, as for refs).
 * Threads: any; a snapshot may be read from several threads at once.
 * Memory: about 100 bytes a snapshot, plus the entity's table of slots
 * while it differs from the cache's. Since: 0.1.0.
 */
SETCACHE_API int setcache_snapshot_open(setcache *c, const char *entity_type, const char *entity_id,
                                        setcache_snapshot **out);

/*
 * Reads from a snapshot, with the codes and meaning of the plain reads (the
 * stored value, else the key's default, else SETCACHE_NOT_FOUND; ...;
 * SETCACHE_ERR_ARG for a NULL or invalid key). Never touch the database.
 * Since: 0.1.0.
 */
SETCACHE_API int setcache_snapshot_get_int(setcache_snapshot *s, const char *key, int64_t *out);
SETCACHE_API int setcache_snapshot_get_double(setcache_snapshot *s, const char *key, double *out);
SETCACHE_API int setcache_snapshot_get_bool(setcache_snapshot *s, const char *key, bool *out);
SETCACHE_API int setcache_snapshot_get_string(setcache_snapshot *s, const char *key, char *buf,
                                              size_t cap, size_t *len);

/*
 * Call fn for every setting in the snapshot in key order: stored values,
 * then (merged in order) defaults of defined keys with no stored value,
 * is_default true; as setcache_foreach, fn returns non-zero to stop and
 * that value is returned. Since: 0.1.0.
 */
SETCACHE_API int setcache_snapshot_foreach(setcache_snapshot *s,
                                           int (*fn)(void *arg, const char *key, const char *value,
                                                     bool is_default),
                                           void *arg);

/* Release a snapshot; NULL is ignored. Threads: any. Since: 0.1.0. */
SETCACHE_API void setcache_snapshot_close(setcache_snapshot *s);

/* ---- Writes: through to the database -----------------------------------
 *
 * A write returns only after COMMIT succeeded (G1); then every thread of this
 * process reads the new value (G2). On SETCACHE_ERR_DB the cache is
 * unchanged and setcache_errmsg() carries the server's message. On
 * SETCACHE_ERR_UNCERTAIN the connection was lost after the statement was
 * sent: it may or may not have committed, and the entity was invalidated so
 * the next read shows the truth. A write to a defined key must be valid for
 * its type (SETCACHE_ERR_TYPE, nothing written); JSON is validated by the
 * server as part of the write. Values are valid UTF-8 of at most
 * max_value_len bytes. What this process reads back is what a load would
 * read: the value as the server stored it, returned by the write's own
 * statement (the built-in table stores the text as sent; a mapped table may
 * normalise it, see setcache_table_map). setcache_set_double sends the
 * shortest text that reads back as the same double ("0.1", not
 * "0.10000000000000001"). Returns OK, ERR_ARG, ERR_TYPE, ERR_DB, ERR_TIMEOUT,
 * ERR_UNCERTAIN, ERR_NOMEM, ERR_CLOSED. Threads: any. Ownership: inputs are
 * copied. Since: 0.1.0.
 */
SETCACHE_API int setcache_set_string(setcache *c, const char *entity_type, const char *entity_id,
                                     const char *key, const char *value);
SETCACHE_API int setcache_set_int(setcache *c, const char *entity_type, const char *entity_id,
                                  const char *key, int64_t value);
SETCACHE_API int setcache_set_double(setcache *c, const char *entity_type, const char *entity_id,
                                     const char *key, double value); /* finite only */
SETCACHE_API int setcache_set_bool(setcache *c, const char *entity_type, const char *entity_id,
                                   const char *key, bool value); /* "true" / "false" */
SETCACHE_API int setcache_set_json(setcache *c, const char *entity_type, const char *entity_id,
                                   const char *key, const char *json);
/* Deleting a key that has no stored value succeeds. */
SETCACHE_API int setcache_delete(setcache *c, const char *entity_type, const char *entity_id,
                                 const char *key);

typedef struct setcache_kv {
    const char *key;
    const char *value; /* NULL = delete */
} setcache_kv;

/*
 * Set and delete several keys of one entity in one transaction (one
 * statement): all of them, or none. Keys must be distinct (SETCACHE_ERR_ARG
 * otherwise); n may be 0. Each value is checked as a single set checks it;
 * the server checks again, and any refusal stores nothing. On the built-in
 * table of a schema of revision 4 or later the statement calls
 * "<schema>".write_many, which checks and records the whole call at once
 * (the same versions, history rows and notifications as the row triggers
 * give); against an older schema the statement goes through the row
 * triggers (said once at SETCACHE_LOG_INFO). Readers are not promised to
 * see all keys change at once (a snapshot is: G11).
 * kv: in, n pairs, not NULL unless n is 0; a NULL value deletes its key.
 * Returns OK, ERR_ARG, ERR_TYPE, ERR_INVALID, ERR_DB, ERR_TIMEOUT,
 * ERR_UNCERTAIN, ERR_NOMEM, ERR_CLOSED. Threads: any. Ownership: inputs are
 * copied. Since: 0.1.0.
 */
SETCACHE_API int setcache_set_many(setcache *c, const char *entity_type, const char *entity_id,
                                   const setcache_kv *kv, size_t n);

/* ---- Change notifications ------------------------------------------------ */

typedef enum {
    SETCACHE_CHANGE_SET,
    SETCACHE_CHANGE_DELETE,
    SETCACHE_CHANGE_RESYNC
} setcache_change_kind;

typedef struct setcache_change {
    setcache_change_kind kind;
    const char *entity_type, *entity_id, *key; /* NULL where the event covers more (RESYNC) */
    const char *value;                         /* the new value; NULL for DELETE and RESYNC */
    const char *old_value; /* the value this cache held before; NULL if none or unknown */
    int64_t version;       /* the row's version after the change */
    bool local;            /* made through this handle */
} setcache_change;

typedef void (*setcache_change_fn)(void *arg, const setcache_change *ch);

/*
 * Subscribe to changes of settings matching a filter: entity_type, entity_id
 * and key, each NULL = any (a non-NULL filter must be a valid identifier).
 * fn(arg, change) then runs for every change made anywhere - this handle,
 * another process, plain SQL - on the library's dispatch thread (never the
 * listener's, never under a library lock), after this cache already holds the
 * change.
 *
 * Delivery rules:
 *  - per setting, in increasing version order, at most once per version;
 *    versions overwritten before they could be read are coalesced into the
 *    newer one (the table keeps only the latest value);
 *  - SET carries the new value; DELETE carries value NULL and the deleted
 *    row's version; old_value is what this cache held before, or NULL;
 *    local is true for changes made through this handle's connections;
 *  - a change is never silently missed: after a listener reconnect, a
 *    TRUNCATE or a queue overflow (dispatch_queue_max), every subscriber gets
 *    a RESYNC (entity fields NULL) before delivery resumes, then the changes
 *    found for cached entities;
 *  - a slow callback never delays the cache: the queue is bounded.
 * A callback may call any function of the handle, including subscribe and
 * unsubscribe (itself or others). setcache_close() from inside a callback is
 * refused (it returns at once, the handle stays open, and setcache_errmsg()
 * says why).
 * id: out, must not be NULL; receives the subscription id (never 0).
 * Returns OK, ERR_ARG, ERR_NOMEM, ERR_CLOSED. Threads: any. Ownership: the
 * filter strings are copied; the change and its strings are valid only
 * during the callback. Since: 0.1.0.
 */
SETCACHE_API int setcache_subscribe(setcache *c, const char *entity_type, const char *entity_id,
                                    const char *key, setcache_change_fn fn, void *arg,
                                    uint64_t *id);
/*
 * End a subscription. After it returns (when called outside that
 * subscription's own callback), the callback is not running and is never
 * called again (G9): a callback running on the dispatch thread is waited for.
 * Called from inside the callback itself, it returns at once and the
 * callback is never called again.
 * Returns OK, or ERR_ARG for an unknown id. Threads: any. Since: 0.1.0.
 */
SETCACHE_API int setcache_unsubscribe(setcache *c, uint64_t id);

/* ---- Observability ------------------------------------------------------- */

typedef enum {
    SETCACHE_STATE_CONNECTING,  /* opened; listener not yet confirmed */
    SETCACHE_STATE_VALID,       /* listener confirmed alive: cached reads are fresh */
    SETCACHE_STATE_INTERRUPTED, /* listener lost; reconnecting; last-known values served */
    SETCACHE_STATE_CLOSED
} setcache_state;

typedef struct setcache_stats {
    uint64_t hits;          /* reads answered from memory */
    uint64_t misses;        /* reads that had to wait for a load */
    uint64_t loads;         /* entity loads (queries) */
    uint64_t db_queries;    /* statements sent on pooled connections (not the listener's) */
    uint64_t writes;        /* committed write calls */
    uint64_t notifications; /* notifications received by the listener */
    uint64_t invalidations; /* entities invalidated by changes */
    uint64_t resyncs;       /* full invalidations after a listener (re)connect */
    uint64_t reconnects;    /* listener reconnects */
    uint64_t evictions;     /* entities evicted for max_entities */
    uint64_t pool_waits;    /* acquires that had to wait */
    uint64_t pool_timeouts; /* acquires that gave SETCACHE_ERR_TIMEOUT */
    uint32_t pool_size, pool_in_use;   /* pool_in_use is 0 whenever no call is in flight */
    uint64_t entities, entries, bytes; /* cached entities, entries, key+value bytes */
    setcache_state state;
    /* Extensions (since 0.1.0). */
    uint64_t malformed;            /* notifications ignored as malformed or foreign */
    uint64_t refreshes;            /* entities re-read in the background after a change */
    uint64_t events;               /* change events delivered to callbacks */
    uint64_t heartbeats;           /* listener liveness proofs: ticks received, probes answered */
    uint64_t hints;                /* change notifications the refresher has applied */
    uint64_t definition_conflicts; /* local definitions overridden by a different shared one */
    uint64_t invalid_writes;       /* writes refused with SETCACHE_ERR_INVALID */
} setcache_stats;

/*
 * Copy the handle's counters into *out (a consistent-enough snapshot: each
 * counter is exact, the set is not taken atomically). NULL arguments are
 * ignored. Cost: it visits every shard of the cache (taking each one's read
 * lock briefly) and every reading thread's counters: call it for metrics,
 * not on every request. Threads: any. Since: 0.1.0.
 */
SETCACHE_API void setcache_get_stats(setcache *c, setcache_stats *out);

/* ---- Scoped access to a pooled connection ------------------------------- */

#ifdef LIBPQ_FE_H
/*
 * Borrow a pooled connection for the duration of fn and return it afterwards,
 * whatever fn does: a connection left inside a transaction is rolled back, a
 * broken one is replaced. The connection is to write_conninfo's server when
 * that option names another one (what fn writes there reaches this cache
 * through the listener, like any other program's write), else to
 * conninfo's. Include <libpq-fe.h> before this header to get
 * this declaration. fn must not keep conn after it returns, must not close
 * it, and should not change session state (SET, LISTEN, prepared statements).
 * Returns what fn returned, or SETCACHE_ERR_TIMEOUT / SETCACHE_ERR_DB (no
 * connection could be made) / SETCACHE_ERR_ARG (NULL c or fn) /
 * SETCACHE_ERR_CLOSED without calling fn.
 * Threads: any; a connection is never shared by two calls. Since: 0.1.0.
 */
SETCACHE_API int setcache_with_conn(setcache *c, int (*fn)(void *arg, PGconn *conn), void *arg);
#endif

#ifdef __cplusplus
}
#endif

#endif /* SETCACHE_H */
