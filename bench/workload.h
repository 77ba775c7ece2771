/*
 * workload.h - the motivating system's shapes (see the design notes):
 * 3 accounts x 6 keys, 26 expert instances x 52-112 keys (80% stored, the
 * rest left to defaults), 30 app keys; the same numeric ids are reused for
 * experts and accounts. Shared by the demo and the benchmarks.
 */
#ifndef SETCACHE_WORKLOAD_H
#define SETCACHE_WORKLOAD_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <time.h>
#include <unistd.h>

#include "setcache.h"

/* ---- helpers shared by the demo and the benchmarks ---- */

static inline double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline double bench_now_s(void)
{
    return bench_now_ms() / 1e3;
}

/* Sleep until the monotonic clock reads at_ms (a paced writer's next slot). */
static inline void bench_sleep_until(double at_ms)
{
    double wait = at_ms - bench_now_ms();
    if (wait > 0) {
        struct timespec ts = {(time_t)(wait / 1000), (long)((wait - 1000.0 * (time_t)(wait / 1000)) * 1e6)};
        nanosleep(&ts, NULL);
    }
}

static inline void bench_die(const char *what, const char *msg)
{
    fprintf(stderr, "bench: %s: %s\n", what, msg);
    exit(1);
}

static inline int bench_cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The server `make bench` / `make demo` provides (tests/withpg.sh); exits
 * when there is none. Standard output is line-buffered for the report. */
static inline const char *bench_conninfo(const char *make_target)
{
    const char *ci = getenv("SETCACHE_TEST_CONNINFO");
    if (!ci) {
        fprintf(stderr, "SETCACHE_TEST_CONNINFO is not set (run `make %s`)\n", make_target);
        exit(1);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    return ci;
}

/* The machine, the server and the options a program ran with: the first
 * line of every section of the report. */
static inline void bench_print_machine(PGconn *pg, const char *options)
{
    char cpu[256] = "unknown CPU", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0 && strchr(line, ':')) {
            snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    const char *host = PQhost(pg);
    printf("machine: %s, %ld cores, %.0f GiB; PostgreSQL %s over %s; setcache options: %s\n\n",
           cpu, sysconf(_SC_NPROCESSORS_ONLN), (double)pages * (double)psize / (1 << 30),
           PQparameterStatus(pg, "server_version"),
           host && host[0] == '/' ? "a Unix socket" : "TCP", options);
}

/* A fresh schema for a run, and options that create and use it. */
static inline void bench_fresh(PGconn *mon, const char *schema, const char *conninfo,
                               setcache_options *o)
{
    char sql[160];
    PQclear(PQexec(mon, "SET client_min_messages = warning"));
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", schema);
    PQclear(PQexec(mon, sql));
    setcache_options_init(o);
    o->conninfo = conninfo;
    o->schema = schema;
    o->channel = schema;
    o->create_schema = true;
}

static const char *const wl_account_keys[6] = {
    "api_key", "api_secret", "paper_account", "minimum_equity_threshold_percent",
    "provider_region", "max_open_positions"};
static const char *const wl_expert_hot[13] = {
    "allow_automated_trade_opening", "enable_buy", "enable_sell",
    "max_virtual_equity_per_instrument_percent", "risk_per_trade_pct", "atr_multiplier",
    "atr_period", "min_stop_loss_pct", "use_atr_stop", "sizing_mode",
    "instrument_selection_method", "enabled_instruments", "min_available_balance_pct"};
static const int wl_key_counts[9] = {52, 53, 54, 62, 72, 82, 84, 97, 112};
/* small, sparse ids; the first three are also the account ids */
static const int wl_ids[26] = {1, 2, 5, 7, 8, 11, 12, 14, 17, 19, 20, 23, 26,
                               29, 31, 33, 36, 38, 41, 44, 47, 50, 53, 57, 60, 64};
#define WL_ACCOUNTS 3
#define WL_EXPERTS 26
#define WL_APP_KEYS 30

static inline unsigned wl_rand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 8) & 0xffffff;
}

/* Key i of an expert: the hot keys first, then generated snake_case names. */
static inline void wl_expert_key(int i, char *out, size_t cap)
{
    if (i < 13) {
        snprintf(out, cap, "%s", wl_expert_hot[i]);
    } else {
        snprintf(out, cap, "strategy_param_%02d_threshold", i);
    }
}

/* The kind of expert key i, fixed per key (as a real settings schema has
 * it), in the motivating system's mix: 39% float, 25% int, 16% str, 13%
 * bool, 5% list, 2% json. */
enum { WL_FLOAT, WL_INT, WL_STR, WL_BOOL, WL_LIST, WL_JSON };
static const int wl_hot_kind[13] = {WL_BOOL,  WL_BOOL,  WL_BOOL, WL_FLOAT, WL_FLOAT,
                                    WL_FLOAT, WL_INT,   WL_FLOAT, WL_BOOL, WL_STR,
                                    WL_STR,   WL_LIST,  WL_FLOAT};
static inline int wl_kind(int i)
{
    if (i < 13) {
        return wl_hot_kind[i];
    }
    int r = (i * 37 + 11) % 100;
    return r < 39 ? WL_FLOAT : r < 64 ? WL_INT : r < 80 ? WL_STR : r < 93 ? WL_BOOL
                                                                   : r < 98 ? WL_LIST : WL_JSON;
}

static const char *const wl_sizing_modes[3] = {"fixed", "risk_percent", "kelly"};
static const char *const wl_selection_methods[3] = {"manual", "screener", "ai_ranked"};

/* A value of expert key i (its kind, within its definition's rules). */
static inline void wl_value(unsigned *seed, int i, char *out, size_t cap)
{
    unsigned r = wl_rand(seed);
    switch (wl_kind(i)) {
    case WL_FLOAT:
        snprintf(out, cap, "%.4f", (r % 100000) / 1000.0);
        break;
    case WL_INT:
        snprintf(out, cap, "%u", 1 + r % 499);
        break;
    case WL_STR:
        snprintf(out, cap, "%s", i == 9 ? wl_sizing_modes[r % 3] : i == 10 ? wl_selection_methods[r % 3]
                                                                           : "NagaAC/gpt-5.1-2025-11-13");
        break;
    case WL_BOOL:
        snprintf(out, cap, "%s", (r & 1) ? "true" : "false");
        break;
    case WL_LIST:
        snprintf(out, cap, "%s", i == 11 ? "[\"AAPL\",\"MSFT\",\"NVDA\",\"AMZN\",\"GOOG\",\"META\"]"
                                         : "[\"alpaca\",\"ibkr\"]");
        break;
    default:
        snprintf(out, cap, "{\"days\":[1,2,3,4,5],\"at\":\"09:30\",\"tz\":\"America/New_York\"}");
    }
}

/* Definitions of the 112 expert keys (types, defaults, ranges, choices,
 * descriptions): what the motivating system's code says about them. */
static inline int wl_define_experts(setcache *c)
{
    static const char *const hot_desc[13] = {
        "open trades without a confirmation", "allow long entries", "allow short entries",
        "largest share of equity per instrument, percent", "equity risked per trade, percent",
        "stop distance in ATRs", "bars in the ATR window", "smallest stop loss, percent",
        "place stops from the ATR", "how positions are sized", "how instruments are chosen",
        "instruments traded (JSON list)", "balance kept free, percent"};
    for (int i = 0; i < 112; i++) {
        char key[64], desc[96];
        wl_expert_key(i, key, sizeof key);
        snprintf(desc, sizeof desc, "%s",
                 i < 13 ? hot_desc[i] : "strategy parameter threshold");
        setcache_definition d = {.entity_type = "expert", .key = key, .description = desc};
        switch (wl_kind(i)) {
        case WL_FLOAT:
            d.type = SETCACHE_DOUBLE;
            d.default_value = "1.0";
            d.has_min = d.has_max = true;
            d.min = 0;
            d.max = 100;
            break;
        case WL_INT:
            d.type = SETCACHE_INT;
            d.default_value = i == 6 ? "14" : "10";
            d.has_min = d.has_max = true;
            d.min = 1;
            d.max = 500;
            break;
        case WL_STR:
            d.type = SETCACHE_STRING;
            if (i == 9 || i == 10) {
                d.choices = i == 9 ? wl_sizing_modes : wl_selection_methods;
                d.nchoices = 3;
                d.default_value = d.choices[0];
            } else {
                d.max_length = 64;
                d.default_value = "NagaAC/gpt-5.1-2025-11-13";
            }
            break;
        case WL_BOOL:
            d.type = SETCACHE_BOOL;
            d.default_value = "false";
            break;
        default:
            d.type = SETCACHE_JSON;
            d.default_value = wl_kind(i) == WL_LIST ? "[]" : "{}";
        }
        int rc = setcache_define_rules(c, &d);
        if (rc != SETCACHE_OK) {
            return rc;
        }
    }
    return SETCACHE_OK;
}

/* Write the whole workload through the library (one set_many per entity). */
static inline int wl_load(setcache *c)
{
    unsigned seed = 42;
    char keys[128][64], vals[128][160];
    setcache_kv kv[128];
    int rc;
    for (int a = 0; a < WL_ACCOUNTS; a++) {
        char id[16];
        snprintf(id, sizeof id, "%d", wl_ids[a]);
        for (int k = 0; k < 6; k++) {
            snprintf(keys[k], sizeof keys[k], "%s", wl_account_keys[k]);
            snprintf(vals[k], sizeof vals[k], k == 2 ? "true" : k == 3 ? "12.5" : "acct-%d-%d",
                     wl_ids[a], k);
            kv[k].key = keys[k];
            kv[k].value = vals[k];
        }
        if ((rc = setcache_set_many(c, "account", id, kv, 6)) != SETCACHE_OK) {
            return rc;
        }
    }
    for (int e = 0; e < WL_EXPERTS; e++) {
        char id[16];
        snprintf(id, sizeof id, "%d", wl_ids[e]);
        int nk = wl_key_counts[e % 9];
        int n = 0;
        for (int k = 0; k < nk; k++) {
            if (k >= 13 && wl_rand(&seed) % 100 >= 80) {
                continue; /* about 20% of the non-hot keys stay at their default */
            }
            wl_expert_key(k, keys[n], sizeof keys[n]);
            wl_value(&seed, k, vals[n], sizeof vals[n]);
            kv[n].key = keys[n];
            kv[n].value = vals[n];
            n++;
        }
        if ((rc = setcache_set_many(c, "expert", id, kv, (size_t)n)) != SETCACHE_OK) {
            return rc;
        }
    }
    for (int k = 0; k < WL_APP_KEYS; k++) {
        snprintf(keys[k], sizeof keys[k], "app_setting_%02d", k);
        wl_value(&seed, k + 20, vals[k], sizeof vals[k]);
        kv[k].key = keys[k];
        kv[k].value = vals[k];
    }
    return setcache_set_many(c, "app", "global", kv, WL_APP_KEYS);
}

#endif
