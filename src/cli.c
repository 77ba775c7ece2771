/*
 * cli.c - the `setcache` command-line tool.
 *
 *   setcache [options] get TYPE ID KEY
 *   setcache [options] set TYPE ID KEY VALUE
 *   setcache [options] delete TYPE ID KEY
 *   setcache [options] list TYPE ID
 *   setcache [options] init          create the schema (same DDL as `schema`)
 *   setcache [options] schema        print the DDL for a DBA
 *   setcache [options] stats         counters and state of a fresh handle
 *   setcache [options] watch [TYPE [ID [KEY]]]   one JSON line per change
 *   setcache [options] describe [TYPE [KEY]]      the shared definitions
 *   setcache [options] history TYPE [ID [KEY]] [--since TIME] [--limit N]
 *   setcache [options] history --prune --older-than AGE
 *   setcache [options] get TYPE ID KEY --at TIME  the value then, from the history
 *
 * Options: --conninfo STR (else SETCACHE_CONNINFO, else libpq's PG* env),
 * --schema NAME, --channel NAME, --define TYPE.KEY=KIND[:DEFAULT] (repeatable).
 * Exit codes: 0 ok, 1 not found, 2 usage or invalid value, 3 database/connection,
 * 4 other.
 */
#define _GNU_SOURCE
#include <libpq-fe.h> /* first: setcache.h declares setcache_with_conn after it */

#include "setcache.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "tool.h"

/* --map TYPE=TABLE,ENTITY_COLUMN,integer|text|uuid|none,KEY_COLUMN,VALUE_COLUMN
 *   or the typed profile's last field STR_COLUMN:NUM_COLUMN:JSON_COLUMN */
static int parse_map(char *arg, setcache_table_map *m)
{
    memset(m, 0, sizeof *m);
    char *eq = strchr(arg, '=');
    if (!eq) {
        return -1;
    }
    *eq = '\0';
    m->entity_type = arg;
    char *f[5];
    int n = 0;
    for (char *p = eq + 1, *tok; n < 5 && (tok = strsep(&p, ",")) != NULL;) {
        f[n++] = tok;
    }
    if (n != 5) {
        return -1;
    }
    m->table = f[0];
    m->entity_column = strcmp(f[1], "-") == 0 ? NULL : f[1];
    static const char *const kinds[] = {"integer", "text", "uuid", "none"};
    int k = -1;
    for (int i = 0; i < 4; i++) {
        if (strcmp(f[2], kinds[i]) == 0) {
            k = i;
        }
    }
    if (k < 0) {
        return -1;
    }
    m->id_kind = (setcache_id_kind)k;
    m->key_column = f[3];
    char *c1 = strchr(f[4], ':');
    if (c1) {
        char *c2 = strchr(c1 + 1, ':');
        if (!c2) {
            return -1;
        }
        *c1 = *c2 = '\0';
        m->str_column = f[4];
        m->num_column = c1 + 1;
        m->json_column = c2 + 1;
    } else {
        m->value_column = f[4];
    }
    return 0;
}

int tool_usage(void)
{
    fprintf(
        stderr,
        "usage: setcache [--conninfo STR] [--schema NAME] [--channel NAME] [--json]\n"
        "                [--define TYPE.KEY=string|int|double|bool|json[:DEFAULT]]...\n"
        "                [--map TYPE=SCHEMA.TABLE,ENTITY_COL|-,integer|text|uuid|none,KEY_COL,\n"
        "                       VALUE_COL|STR_COL:NUM_COL:JSON_COL]...\n"
        "                COMMAND ...\n"
        "commands:\n"
        "  get TYPE ID KEY          print the value (or default)\n"
        "  set TYPE ID KEY VALUE    write through (returns after COMMIT)\n"
        "  delete TYPE ID KEY       delete a stored value\n"
        "  list TYPE ID             every setting, defaults marked\n"
        "  init                     create the table, sequence and triggers\n"
        "  schema [--reader-role R] [--writer-role W]\n"
        "         [--publisher | --subscriber PRIMARY_CONNINFO]\n"
        "                           print that DDL (and those roles' GRANTs)\n"
        "  stats [--prometheus]     print counters and listener state (Prometheus text format)\n"
        "  describe [TYPE [KEY]]    the shared definitions: types, defaults, rules\n"
        "  history TYPE [ID [KEY]] [--since TIME] [--limit N]\n"
        "                           changes, newest first (who, when, from where)\n"
        "  history --prune --older-than AGE   delete history older than AGE (90d, 12h)\n"
        "  get TYPE ID KEY --at TIME          the value as of TIME, from the history\n"
        "  export [TYPE [ID]]       definitions and values as one sorted JSON document\n"
        "  import FILE|- [--dry-run] [--prune]\n"
        "                           check all, print the changes, apply them in one transaction\n"
        "  watch [TYPE [ID [KEY]]]  one JSON line per change until SIGINT/SIGTERM\n"
        "connection: --conninfo, else SETCACHE_CONNINFO, else libpq's PG* variables\n");
    return 2;
}

static int exit_code(int rc)
{
    switch (rc) {
    case SETCACHE_OK:
        return 0;
    case SETCACHE_NOT_FOUND:
        return 1;
    case SETCACHE_ERR_ARG:
    case SETCACHE_ERR_TYPE:
    case SETCACHE_ERR_SPACE:
    case SETCACHE_ERR_INVALID:
        return 2;
    case SETCACHE_ERR_DB:
    case SETCACHE_ERR_TIMEOUT:
    case SETCACHE_ERR_UNCERTAIN:
        return 3;
    default:
        return 4;
    }
}

/* Say what failed: the code's name, then the message unless the name
 * already says it. */
int tool_fail(int rc, const char *what)
{
    const char *name = setcache_strerror(rc), *msg = setcache_errmsg();
    fprintf(stderr, "setcache: %s: %s", what, name);
    if (*msg && !strstr(name, msg)) {
        fputs(": ", stderr);
        tool_put_escaped(stderr, msg);
    }
    fprintf(stderr, "\n");
    return exit_code(rc);
}

/* The length of a character a terminal would act on instead of showing
 * (C0, DEL, C1 U+0080-U+009F, bidirectional formatting U+202A-U+202E and
 * U+2066-U+2069), or 0. */
static size_t active_len(const unsigned char *p)
{
    if (*p < 0x20 || *p == 0x7F) {
        return 1;
    }
    if (p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F) {
        return 2;
    }
    if (p[0] == 0xE2 && ((p[1] == 0x80 && p[2] >= 0xAA && p[2] <= 0xAE) ||
                         (p[1] == 0x81 && p[2] >= 0xA6 && p[2] <= 0xA9))) {
        return 3;
    }
    return 0;
}

/* Text for a person: every such character (and the backslash) written as
 * an escape (\n, \t, \x1b, \u202e, \\), everything else as it is. */
void tool_put_escaped(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = active_len(p);
        if (*p == '\\') {
            fputs("\\\\", f);
        } else if (n == 1 && (*p == '\n' || *p == '\t')) {
            fputs(*p == '\n' ? "\\n" : "\\t", f);
        } else if (n == 1) {
            fprintf(f, "\\x%02x", *p);
        } else if (n == 2) {
            fprintf(f, "\\u%04x", ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu));
        } else if (n == 3) {
            fprintf(f, "\\u%04x", ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu));
        } else {
            fputc(*p, f);
        }
        p += n ? n : 1;
    }
}

static int print_kv_json(void *arg, const char *key, const char *value, bool is_default)
{
    int *n = arg;
    fputs((*n)++ ? ",\n    {\"key\": " : "\n    {\"key\": ", stdout);
    tool_json_str(stdout, key);
    fputs(", \"value\": ", stdout);
    tool_json_str(stdout, value);
    printf(", \"default\": %s}", is_default ? "true" : "false");
    return 0;
}

static int print_kv(void *arg, const char *key, const char *value, bool is_default)
{
    (void)arg;
    tool_put_escaped(stdout, key); /* one setting a line, whatever the value holds */
    fputc('=', stdout);
    tool_put_escaped(stdout, value);
    fputs(is_default ? "\t(default)\n" : "\n", stdout);
    return 0;
}

/* ---- watch ---- */

void tool_json_str(FILE *f, const char *s)
{
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default: {
            size_t n = active_len(p);
            if (n == 1) {
                fprintf(f, "\\u%04x", *p);
            } else if (n == 2) {
                fprintf(f, "\\u%04x", ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu));
                p++;
            } else if (n == 3) {
                fprintf(f, "\\u%04x",
                        ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu));
                p += 2;
            } else {
                fputc(*p, f);
            }
        }
        }
    }
    fputc('"', f);
}

static void on_change(void *arg, const setcache_change *ch)
{
    (void)arg;
    static const char *const kinds[] = {"set", "delete", "resync"};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    printf("{\"kind\":\"%s\",\"entity_type\":", kinds[ch->kind]);
    tool_json_str(stdout, ch->entity_type);
    fputs(",\"entity_id\":", stdout);
    tool_json_str(stdout, ch->entity_id);
    fputs(",\"key\":", stdout);
    tool_json_str(stdout, ch->key);
    printf(",\"version\":%lld,\"value\":", (long long)ch->version);
    tool_json_str(stdout, ch->value);
    fputs(",\"old_value\":", stdout);
    tool_json_str(stdout, ch->old_value);
    printf(",\"local\":%s,\"received_at\":\"%s.%06ldZ\"}\n", ch->local ? "true" : "false", ts,
           (long)tv.tv_usec);
    fflush(stdout);
}

static void on_state(void *arg, int state, const char *reason)
{
    (void)arg;
    fprintf(stderr, "setcache watch: %s%s%s\n", setcache_state_name(state),
            reason && *reason ? ": " : "", reason ? reason : "");
}

static int watch(setcache_options *o, int nargs, char **a)
{
    /* signals are taken by sigwait here, never by library threads */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    o->on_state = on_state;
    setcache *c = NULL;
    int rc = setcache_open(&c, o);
    if (rc != SETCACHE_OK) {
        return tool_fail(rc, "open");
    }
    uint64_t id;
    rc = setcache_subscribe(c, nargs > 0 ? a[0] : NULL, nargs > 1 ? a[1] : NULL,
                            nargs > 2 ? a[2] : NULL, on_change, NULL, &id);
    if (rc != SETCACHE_OK) {
        int code = tool_fail(rc, "watch");
        setcache_close(c);
        return code;
    }
    setcache_stats st;
    setcache_get_stats(c, &st);
    fprintf(stderr, "setcache watch: listening (%s)\n", setcache_state_name((int)st.state));
    int sig = 0;
    sigwait(&set, &sig);
    setcache_unsubscribe(c, id);
    setcache_close(c);
    return 0;
}

struct define {
    char *type, *key, *dflt;
    setcache_type kind;
};

static int parse_define(const char *arg, struct define *d)
{
    char *s = strdup(arg);
    if (!s) {
        return -1;
    }
    char *dot = strchr(s, '.');
    char *eq = dot ? strchr(dot, '=') : NULL;
    if (!dot || !eq) {
        free(s);
        return -1;
    }
    *dot = '\0';
    *eq = '\0';
    char *kind = eq + 1;
    char *colon = strchr(kind, ':');
    d->dflt = NULL;
    if (colon) {
        *colon = '\0';
        d->dflt = colon + 1;
    }
    static const char *const kinds[] = {"string", "int", "double", "bool", "json"};
    int k = -1;
    for (int i = 0; i < 5; i++) {
        if (strcmp(kind, kinds[i]) == 0) {
            k = i;
        }
    }
    if (k < 0) {
        free(s);
        return -1;
    }
    d->type = s;
    d->key = dot + 1;
    d->kind = (setcache_type)k;
    return 0;
}

/* What the command line asks for. */
typedef struct invocation {
    setcache_options o;
    struct define defs[64];
    int ndefs;
    setcache_table_map maps[16];
    bool json; /* --json: get, list, describe, history, stats */
    const char *cmd;
    int nargs;
    char **args;
} invocation;

/* Parse the options before the command; 0, or the exit code to end with. */
static int parse_options(int argc, char **argv, invocation *in)
{
    setcache_options_init(&in->o);
    in->o.conninfo = getenv("SETCACHE_CONNINFO");
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "--json") == 0) {
            in->json = true;
            continue;
        }
        if (i + 1 >= argc) {
            return tool_usage();
        }
        if (strcmp(argv[i], "--conninfo") == 0) {
            in->o.conninfo = argv[++i];
        } else if (strcmp(argv[i], "--schema") == 0) {
            in->o.schema = argv[++i];
        } else if (strcmp(argv[i], "--channel") == 0) {
            in->o.channel = argv[++i];
        } else if (strcmp(argv[i], "--map") == 0) {
            if (in->o.ntables == 16 || parse_map(argv[++i], &in->maps[in->o.ntables]) != 0) {
                fprintf(stderr, "setcache: bad --map '%s'\n", argv[i]);
                return 2;
            }
            in->o.ntables++;
            in->o.tables = in->maps;
        } else if (strcmp(argv[i], "--define") == 0) {
            if (in->ndefs == 64 || parse_define(argv[++i], &in->defs[in->ndefs]) != 0) {
                fprintf(stderr, "setcache: bad --define '%s'\n", argv[i]);
                return 2;
            }
            in->ndefs++;
        } else {
            fprintf(stderr, "setcache: unknown option '%s'\n", argv[i]);
            return tool_usage();
        }
    }
    if (i >= argc) {
        return tool_usage();
    }
    in->cmd = argv[i++];
    in->nargs = argc - i;
    in->args = argv + i;
    return 0;
}

/* How many arguments a command takes; -1 for an unknown command. */
static int arity(const char *cmd)
{
    static const struct {
        const char *name;
        int args;
    } cmds[] = {{"get", 3},   {"delete", 3},   {"set", 4},     {"list", 2},   {"init", 0},
                {"stats", 0}, {"describe", 0}, {"history", 0}, {"export", 0}, {"import", 0}};
    for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++) {
        if (strcmp(cmd, cmds[k].name) == 0) {
            return cmds[k].args;
        }
    }
    return -1;
}

/* schema [--reader-role R] [--writer-role W] [--publisher | --subscriber PRIMARY] */
static int print_schema(const invocation *in)
{
    const char *reader = NULL, *writer = NULL, *primary = NULL;
    bool publisher = false;
    for (int k = 0; k < in->nargs; k++) {
        const char *opt = in->args[k];
        if (strcmp(opt, "--publisher") == 0 && !publisher && !primary) {
            publisher = true;
            continue;
        }
        if (k + 1 >= in->nargs) {
            return tool_usage();
        }
        if (strcmp(opt, "--reader-role") == 0) {
            reader = in->args[++k];
        } else if (strcmp(opt, "--writer-role") == 0) {
            writer = in->args[++k];
        } else if (strcmp(opt, "--subscriber") == 0 && !publisher && !primary) {
            primary = in->args[++k];
        } else {
            return tool_usage();
        }
    }
    char *ddl = NULL, *side = NULL;
    int rc = setcache__tool_schema(in->o.schema, in->o.channel, in->o.tables, in->o.ntables, reader,
                                   writer, &ddl);
    if (rc == SETCACHE_OK && (publisher || primary)) {
        rc = setcache__tool_replication(in->o.schema, in->o.channel, in->o.tables, in->o.ntables,
                                        primary, &side);
    }
    if (rc != SETCACHE_OK) {
        fprintf(stderr, "setcache: %s\n", setcache_errmsg());
        free(ddl);
        return rc == SETCACHE_ERR_ARG ? 2 : 4;
    }
    fputs(ddl, stdout);
    if (side) {
        fputs(side, stdout);
    }
    free(ddl);
    free(side);
    return 0;
}

/* The counters, by name, with the Prometheus help text of each. */
typedef struct counter {
    const char *name, *help;
    uint64_t value;
} counter;

static size_t counters(const setcache_stats *st, counter *out)
{
    const counter all[] = {
        {"hits", "Reads answered from memory.", st->hits},
        {"misses", "Reads that waited for a load.", st->misses},
        {"loads", "Entity loads.", st->loads},
        {"db_queries", "Statements sent on pooled connections.", st->db_queries},
        {"writes", "Committed write calls.", st->writes},
        {"notifications", "Notifications received by the listener.", st->notifications},
        {"invalidations", "Entities invalidated by changes.", st->invalidations},
        {"resyncs", "Full reconciles after a listener reconnect.", st->resyncs},
        {"reconnects", "Listener reconnects.", st->reconnects},
        {"evictions", "Entities evicted for max_entities.", st->evictions},
        {"pool_waits", "Pool acquires that had to wait.", st->pool_waits},
        {"pool_timeouts", "Pool acquires that timed out.", st->pool_timeouts},
        {"malformed", "Notifications ignored as malformed or foreign.", st->malformed},
        {"refreshes", "Entities re-read in the background after a change.", st->refreshes},
        {"events", "Change events delivered to callbacks.", st->events},
        {"heartbeats", "Listener liveness proofs.", st->heartbeats},
        {"hints", "Change notifications applied by the refresher.", st->hints},
        {"definition_conflicts", "Local definitions overridden by a shared one.",
         st->definition_conflicts},
        {"invalid_writes", "Writes refused as breaking a definition.", st->invalid_writes},
    };
    memcpy(out, all, sizeof all);
    return sizeof all / sizeof all[0];
}

/* stats [--prometheus]; --json */
static int print_stats(setcache *c, const invocation *in)
{
    bool prom = in->nargs == 1 && strcmp(in->args[0], "--prometheus") == 0;
    if (in->nargs > 1 || (in->nargs == 1 && !prom)) {
        return tool_usage();
    }
    setcache_stats st;
    setcache_get_stats(c, &st);
    counter cs[32];
    size_t n = counters(&st, cs);
    const char *state = setcache_state_name((int)st.state);
    if (prom) {
        /* the Prometheus text exposition format */
        for (size_t i = 0; i < n; i++) {
            printf("# HELP setcache_%s_total %s\n# TYPE setcache_%s_total counter\n"
                   "setcache_%s_total %llu\n",
                   cs[i].name, cs[i].help, cs[i].name, cs[i].name, (unsigned long long)cs[i].value);
        }
        printf("# HELP setcache_pool_size Connections the pool may hold.\n"
               "# TYPE setcache_pool_size gauge\nsetcache_pool_size %u\n"
               "# HELP setcache_pool_in_use Pooled connections lent out.\n"
               "# TYPE setcache_pool_in_use gauge\nsetcache_pool_in_use %u\n",
               st.pool_size, st.pool_in_use);
        printf("# HELP setcache_cached_entities Entities in the cache.\n"
               "# TYPE setcache_cached_entities gauge\nsetcache_cached_entities %llu\n"
               "# HELP setcache_cached_entries Settings in the cache.\n"
               "# TYPE setcache_cached_entries gauge\nsetcache_cached_entries %llu\n",
               (unsigned long long)st.entities, (unsigned long long)st.entries);
        printf("# HELP setcache_state The listener state (1 for the current one).\n"
               "# TYPE setcache_state gauge\n");
        for (int k = SETCACHE_STATE_CONNECTING; k <= SETCACHE_STATE_CLOSED; k++) {
            printf("setcache_state{state=\"%s\"} %d\n", setcache_state_name(k), k == (int)st.state);
        }
        return 0;
    }
    if (in->json) {
        printf("{\"state\": \"%s\", \"version\": \"%s\", \"pool_size\": %u, "
               "\"pool_in_use\": %u, \"entities\": %llu, \"entries\": %llu",
               state, setcache_version(), st.pool_size, st.pool_in_use,
               (unsigned long long)st.entities, (unsigned long long)st.entries);
        for (size_t i = 0; i < n; i++) {
            printf(", \"%s\": %llu", cs[i].name, (unsigned long long)cs[i].value);
        }
        printf("}\n");
        return 0;
    }
    printf("state\t%s\nversion\t%s\npool_size\t%u\npool_in_use\t%u\nentities\t%llu\n"
           "entries\t%llu\n",
           state, setcache_version(), st.pool_size, st.pool_in_use, (unsigned long long)st.entities,
           (unsigned long long)st.entries);
    for (size_t i = 0; i < n; i++) {
        printf("%s\t%llu\n", cs[i].name, (unsigned long long)cs[i].value);
    }
    return 0;
}

/* Run get, set, delete, list, init or stats on a handle; the exit code. */
static int run_command(setcache *c, const invocation *in)
{
    const char *cmd = in->cmd;
    char **a = in->args;
    int rc;
    if (strcmp(cmd, "describe") == 0 || strcmp(cmd, "history") == 0 || strcmp(cmd, "export") == 0 ||
        strcmp(cmd, "import") == 0 || (strcmp(cmd, "get") == 0 && in->nargs == 5)) {
        return tool_admin(c, in->o.schema, in->json, cmd, in->nargs, in->args);
    }
    if (strcmp(cmd, "get") == 0) {
        char *v = setcache_dup_string(c, a[0], a[1], a[2], &rc);
        if (!v) {
            return tool_fail(rc, "get");
        }
        if (in->json) {
            fputs("{\"entity_type\": ", stdout);
            tool_json_str(stdout, a[0]);
            fputs(", \"entity_id\": ", stdout);
            tool_json_str(stdout, a[1]);
            fputs(", \"key\": ", stdout);
            tool_json_str(stdout, a[2]);
            fputs(", \"value\": ", stdout);
            tool_json_str(stdout, v);
            fputs("}\n", stdout);
        } else if (isatty(STDOUT_FILENO)) {
            tool_put_escaped(stdout, v); /* a person reads it: nothing the terminal would act on */
            fputc('\n', stdout);
        } else {
            printf("%s\n", v); /* a program reads it: the value byte for byte */
        }
        free(v);
        return 0;
    }
    if (strcmp(cmd, "set") == 0) {
        rc = setcache_set_string(c, a[0], a[1], a[2], a[3]);
        return rc ? tool_fail(rc, "set") : 0;
    }
    if (strcmp(cmd, "delete") == 0) {
        rc = setcache_delete(c, a[0], a[1], a[2]);
        return rc ? tool_fail(rc, "delete") : 0;
    }
    if (strcmp(cmd, "list") == 0) {
        if (in->json) {
            int n = 0;
            fputs("{\"entity_type\": ", stdout);
            tool_json_str(stdout, a[0]);
            fputs(", \"entity_id\": ", stdout);
            tool_json_str(stdout, a[1]);
            fputs(", \"settings\": [", stdout);
            rc = setcache_foreach(c, a[0], a[1], print_kv_json, &n);
            fputs(n ? "\n]}\n" : "]}\n", stdout);
        } else {
            rc = setcache_foreach(c, a[0], a[1], print_kv, NULL);
        }
        return rc ? tool_fail(rc, "list") : 0;
    }
    if (strcmp(cmd, "init") == 0) {
        printf("schema \"%s\" is ready (channel \"%s\")\n", in->o.schema, in->o.channel);
        return 0;
    }
    return print_stats(c, in);
}

int main(int argc, char **argv)
{
    static invocation in; /* static: zeroed, and off the stack */
    int code = parse_options(argc, argv, &in);
    if (code != 0) {
        return code;
    }
    if (strcmp(in.cmd, "schema") == 0) {
        return print_schema(&in);
    }
    if (strcmp(in.cmd, "watch") == 0) {
        if (in.nargs > 3) {
            return tool_usage();
        }
        in.o.pool_size = 1;
        return watch(&in.o, in.nargs, in.args);
    }
    int want = arity(in.cmd);
    if (want < 0 && strcmp(in.cmd, "schema") != 0) {
        fprintf(stderr, "setcache: unknown command '%s'\n", in.cmd);
        return tool_usage();
    }
    /* the managed-settings commands check their own arguments */
    bool variadic = strcmp(in.cmd, "describe") == 0 || strcmp(in.cmd, "history") == 0 ||
                    strcmp(in.cmd, "export") == 0 || strcmp(in.cmd, "import") == 0 ||
                    strcmp(in.cmd, "stats") == 0;
    bool at = strcmp(in.cmd, "get") == 0 && in.nargs == 5 && strcmp(in.args[3], "--at") == 0;
    if (!variadic && !at && in.nargs != want) {
        return tool_usage();
    }
    in.o.create_schema = strcmp(in.cmd, "init") == 0;
    in.o.pool_size = 1;
    setcache *c = NULL;
    int rc = setcache_open(&c, &in.o);
    if (rc != SETCACHE_OK) {
        return tool_fail(rc, "open");
    }
    for (int d = 0; d < in.ndefs && rc == SETCACHE_OK; d++) {
        rc = setcache_define(c, in.defs[d].type, in.defs[d].key, in.defs[d].kind, in.defs[d].dflt);
    }
    code = rc == SETCACHE_OK ? run_command(c, &in) : tool_fail(rc, "define");
    for (int d = 0; d < in.ndefs; d++) {
        free(in.defs[d].type);
    }
    setcache_close(c);
    fflush(stdout);
    return code;
}
