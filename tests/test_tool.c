/* Tests of the build products: exported symbols, SONAME, the setcache tool. */
#include "harness.h"

#include <stdarg.h>
#include <sys/wait.h>

static int run(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p) {
        t_fail(__FILE__, __LINE__, "popen failed");
    }
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    char rest[4096]; /* read to the end: a full buffer must not end the writer */
    while (fread(rest, 1, sizeof rest, p) > 0) {
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(exported_symbols_are_only_setcache)
{
    char out[16384];
    CHECK_INT(run(out, sizeof out, "nm -D --defined-only %s/libsetcache.so | awk '{print $3}'",
                  t_build_dir()),
              0);
    int n = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "setcache_", 9) != 0) {
            t_fail(__FILE__, __LINE__, "exported symbol '%s' is not setcache_*", line);
        }
        n++;
    }
    /* exactly the functions the header exports */
    CHECK_INT(run(out, sizeof out, "grep -c '^SETCACHE_API' include/setcache.h"), 0);
    CHECK_INT(n, atoi(out));
    CHECK_INT(run(out, sizeof out, "readelf -d %s/libsetcache.so | grep SONAME", t_build_dir()), 0);
    CHECK(strstr(out, "libsetcache.so.0") != NULL);
}

TEST(tool_get_set_delete_list_schema_and_exit_codes)
{
    char out[8192];
    const char *b = t_build_dir();
    char base[1024];
    snprintf(base, sizeof base, "%s/setcache --conninfo '%s' --schema %s --channel %s", b,
             t_conninfo(), t_schema(), t_schema());
    CHECK_INT(run(out, sizeof out, "%s get account 1 api_key 2>&1", base), 3);
    CHECK(strstr(out, "setcache schema") != NULL);
    CHECK_INT(run(out, sizeof out, "%s init", base), 0);
    CHECK_INT(run(out, sizeof out, "%s set account 1 api_key 'k|\"y' 2>&1", base), 0);
    CHECK_INT(run(out, sizeof out, "%s get account 1 api_key", base), 0);
    CHECK_STR(out, "k|\"y\n");
    CHECK_INT(run(out, sizeof out, "%s get account 1 missing 2>&1", base), 1);
    /* the reason once, not repeated after the code's name */
    CHECK_STR(out, "setcache: get: SETCACHE_NOT_FOUND: no stored value and no default\n");
    CHECK_INT(run(out, sizeof out, "%s frobnicate 2>&1", base), 2);
    const char *unknown_cmd = "setcache: unknown command 'frobnicate'\nusage:";
    CHECK(strncmp(out, unknown_cmd, strlen(unknown_cmd)) == 0);
    CHECK_INT(run(out, sizeof out, "%s --frob x get a 1 k 2>&1", base), 2);
    const char *unknown_opt = "setcache: unknown option '--frob'\nusage:";
    CHECK(strncmp(out, unknown_opt, strlen(unknown_opt)) == 0);
    CHECK_INT(run(out, sizeof out, "%s get Account 1 x 2>&1", base), 2);
    CHECK(strstr(out, "entity_type") != NULL);
    CHECK_INT(
        run(out, sizeof out, "%s --define account.paper_account=bool:true list account 1", base),
        0);
    CHECK_STR(out, "api_key=k|\"y\npaper_account=true\t(default)\n");
    CHECK_INT(run(out, sizeof out, "%s --define account.n=int set account 1 n abc 2>&1", base), 2);
    CHECK_INT(run(out, sizeof out, "%s delete account 1 api_key", base), 0);
    CHECK_INT(run(out, sizeof out, "%s get account 1 api_key 2>/dev/null", base), 1);
    CHECK_INT(run(out, sizeof out, "%s stats", base), 0);
    CHECK(strstr(out, "state\tVALID") != NULL);
    CHECK_INT(run(out, sizeof out, "%s/setcache --schema myschema --channel mychan schema", b), 0);
    CHECK(strstr(out, "CREATE TABLE IF NOT EXISTS \"myschema\".settings") != NULL);
    CHECK(strstr(out, "pg_notify('mychan'") != NULL);
    CHECK_INT(run(out, sizeof out, "%s/setcache --schema 'x;drop' schema 2>&1", b), 2);
    CHECK_INT(run(out, sizeof out, "%s/setcache bogus 2>&1", b), 2);
    CHECK(strstr(out, "usage") != NULL);
    /* the printed DDL applies by hand, and the library then opens without create_schema */
    CHECK_INT(run(out, sizeof out,
                  "%s/setcache --schema %s_dba --channel %s schema | psql -q -v ON_ERROR_STOP=1 "
                  "'%s' 2>&1",
                  b, t_schema(), t_schema(), t_conninfo()),
              0);
    CHECK_INT(run(out, sizeof out,
                  "%s/setcache --conninfo '%s' --schema %s_dba set account 1 k v 2>&1", b,
                  t_conninfo(), t_schema()),
              0);
    t_sql("DROP SCHEMA \"%s_dba\" CASCADE", t_schema());
}

/* describe, list with shared defaults, history, get --at, prune, and an
 * invalid value refused with exit code 2. */
TEST(tool_describes_definitions_and_answers_from_history)
{
    setcache *c = t_open();
    static const char *const modes[] = {"live", "paper"};
    setcache_definition d[] = {
        {.entity_type = "expert",
         .key = "risk_limit",
         .type = SETCACHE_INT,
         .default_value = "10",
         .description = "largest position, in lots",
         .has_min = true,
         .min = 1,
         .has_max = true,
         .max = 100},
        {.entity_type = "expert",
         .key = "mode",
         .type = SETCACHE_STRING,
         .default_value = "paper",
         .choices = modes,
         .nchoices = 2},
    };
    for (int i = 0; i < 2; i++) {
        CHECK_OK(setcache_define_rules(c, &d[i]));
    }
    CHECK_OK(setcache_publish_definitions(c, NULL));
    setcache_close(c);
    char out[8192], base[1024];
    snprintf(base, sizeof base, "%s/setcache --conninfo '%s' --schema %s --channel %s",
             t_build_dir(), t_conninfo(), t_schema(), t_schema());
    CHECK_INT(run(out, sizeof out, "%s describe expert", base), 0);
    CHECK_STR(out, "expert.mode\tstring\tdefault paper\tone of live|paper\t-\n"
                   "expert.risk_limit\tint\tdefault 10\t[1..100]\tlargest position, in lots\n");
    CHECK_INT(run(out, sizeof out, "%s describe expert mode", base), 0);
    CHECK(strncmp(out, "expert.mode\t", 12) == 0 && strstr(out, "risk_limit") == NULL);
    /* list shows the shared defaults, marked, with no --define */
    CHECK_INT(run(out, sizeof out, "%s list expert 3", base), 0);
    CHECK_STR(out, "mode=paper\t(default)\nrisk_limit=10\t(default)\n");
    CHECK_INT(run(out, sizeof out, "%s set expert 3 risk_limit 500 2>&1", base), 2);
    CHECK(strstr(out, "SETCACHE_ERR_INVALID") && strstr(out, "(rule: max)"));
    CHECK_INT(run(out, sizeof out, "%s set expert 3 risk_limit 20", base), 0);
    const char *t1 = t_sql_value("SELECT clock_timestamp()");
    char at[64];
    snprintf(at, sizeof at, "%s", t1);
    t_sleep_ms(20);
    CHECK_INT(run(out, sizeof out, "%s set expert 3 risk_limit 30", base), 0);
    CHECK_INT(run(out, sizeof out, "%s get expert 3 risk_limit --at '%s'", base, at), 0);
    CHECK_STR(out, "20\n");
    CHECK_INT(run(out, sizeof out, "%s get expert 3 risk_limit --at '2000-01-01' 2>&1", base), 1);
    CHECK_INT(run(out, sizeof out, "%s history expert 3 risk_limit --limit 1", base), 0);
    CHECK(strstr(out, "\t3\trisk_limit\tupdate\t20\t30\t") != NULL);
    CHECK(strstr(out, "\tpostgres\tsetcache:") != NULL);
    CHECK_INT(run(out, sizeof out, "%s history expert --since '%s'", base, at), 0);
    CHECK(strstr(out, "\tupdate\t20\t30\t") != NULL && !strstr(out, "\tinsert\t"));
    CHECK_INT(run(out, sizeof out, "%s history --prune --older-than 1d", base), 0);
    CHECK_STR(out, "0 history rows deleted\n");
    t_sql("UPDATE \"%s\".history SET changed_at = changed_at - interval '100 days' WHERE op = "
          "'insert'",
          t_schema());
    CHECK_INT(run(out, sizeof out, "%s history --prune --older-than 90d", base), 0);
    CHECK_STR(out, "1 history rows deleted\n");
    CHECK_INT(run(out, sizeof out, "%s history 2>&1", base), 2);
}

static long long history_rows(const char *schema)
{
    return atoll(t_sql_value("SELECT count(*) FROM \"%s\".history", schema));
}

/* export -> import into an empty schema reproduces every definition and
 * value byte for byte; --dry-run writes nothing; one invalid item writes
 * nothing and is listed; a second import writes nothing. */
TEST(tool_export_import_round_trip_dry_run_and_all_or_nothing)
{
    setcache *c = t_open();
    static const char *const modes[] = {"live", "paper"};
    setcache_definition d[] = {
        {.entity_type = "expert",
         .key = "risk_limit",
         .type = SETCACHE_INT,
         .default_value = "10",
         .description = "largest position \"lots\"",
         .has_min = true,
         .min = 1,
         .has_max = true,
         .max = 100},
        {.entity_type = "expert",
         .key = "mode",
         .type = SETCACHE_STRING,
         .default_value = "paper",
         .choices = modes,
         .nchoices = 2,
         .pattern = "^[a-z]+$",
         .max_length = 8},
    };
    for (int i = 0; i < 2; i++) {
        CHECK_OK(setcache_define_rules(c, &d[i]));
    }
    CHECK_OK(setcache_publish_definitions(c, NULL));
    CHECK_OK(setcache_set_int(c, "expert", "3", "risk_limit", 20));
    CHECK_OK(setcache_set_string(c, "expert", "3", "mode", "live"));
    CHECK_OK(setcache_set_string(c, "expert", "4", "note", "tab\there, quote \" and ü\\"));
    CHECK_OK(setcache_set_string(c, "account", "1", "k", "{\"a\": [1, 2]}"));
    setcache_close(c);
    char out[16384], a[16384], base[1024], other[1024], file[256], sch2[96];
    snprintf(base, sizeof base, "%s/setcache --conninfo '%s' --schema %s --channel %s",
             t_build_dir(), t_conninfo(), t_schema(), t_schema());
    snprintf(sch2, sizeof sch2, "%.60s_b", t_schema());
    snprintf(other, sizeof other, "%s/setcache --conninfo '%s' --schema %s --channel %s",
             t_build_dir(), t_conninfo(), sch2, sch2);
    snprintf(file, sizeof file, "/tmp/setcache-export-%d.json", (int)getpid());
    CHECK_INT(run(out, sizeof out, "%s export > %s && cat %s", base, file, file), 0);
    snprintf(a, sizeof a, "%s", out);
    CHECK(strstr(a, "\"format\": \"setcache-export-1\"") != NULL);
    CHECK_INT(run(out, sizeof out, "jq -e '.settings | length' %s", file), 0);
    CHECK_STR(out, "4\n");
    CHECK_INT(
        run(out, sizeof out, "%s init >/dev/null && %s import %s --dry-run", other, other, file),
        0);
    CHECK(strstr(out, "+ setting expert 3 risk_limit = 20") != NULL);
    CHECK(strstr(out, "dry run: nothing written") != NULL);
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".settings", sch2), "0");
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".definitions", sch2), "0");
    CHECK_INT(history_rows(sch2), 0);
    CHECK_INT(run(out, sizeof out, "%s import %s", other, file), 0);
    CHECK(strstr(out, "6 changes imported") != NULL);
    CHECK_INT(run(out, sizeof out, "%s export", other), 0);
    CHECK_STR(out, a); /* byte for byte */
    long long h = history_rows(sch2);
    CHECK_INT(run(out, sizeof out, "%s import %s", other, file), 0);
    CHECK_STR(out, "0 changes; nothing to do\n");
    CHECK_INT(history_rows(sch2), h);
    /* one invalid item among valid ones: nothing is written, it is listed */
    CHECK_INT(run(out, sizeof out,
                  "jq '(.settings[] | select(.key == \"risk_limit\") | .value) = \"150\" | "
                  ".settings += [{\"entity_type\": \"expert\", "
                  "\"entity_id\": \"9\", \"key\": \"mode\", \"value\": \"paper\"}]' %s > %s.bad",
                  file, file),
              0);
    const char *v0 = t_sql_value("SELECT max(version) FROM \"%s\".settings", sch2);
    char before[32];
    snprintf(before, sizeof before, "%s", v0);
    CHECK_INT(run(out, sizeof out, "%s import %s.bad 2>&1", other, file), 2);
    CHECK(strstr(out, "invalid: ~ setting expert 3 risk_limit: 20 -> 150: invalid value for "
                      "expert 3 risk_limit: 150 is above the maximum 100 (rule: max)") != NULL);
    CHECK(strstr(out, "1 of 2 changes invalid; nothing was imported") != NULL);
    CHECK_STR(t_sql_value("SELECT max(version) FROM \"%s\".settings", sch2), before);
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".settings WHERE entity_id = '9'", sch2), "0");
    CHECK_INT(history_rows(sch2), h);
    /* --prune removes what the file does not have */
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('expert', "
          "'5', 'extra', 'x')",
          sch2);
    CHECK_INT(run(out, sizeof out, "%s import %s", other, file), 0);
    CHECK_STR(out, "0 changes; nothing to do\n");
    CHECK_INT(run(out, sizeof out, "%s import %s --prune", other, file), 0);
    CHECK(strstr(out, "- setting expert 5 extra") != NULL);
    CHECK_INT(run(out, sizeof out, "%s export", other), 0);
    CHECK_STR(out, a);
    CHECK_INT(run(out, sizeof out, "%s import /nonexistent.json 2>&1", other), 2);
    CHECK_INT(run(out, sizeof out, "echo '{\"x\": 1}' | %s import - 2>&1", other), 2);
    CHECK(strstr(out, "not a setcache export") != NULL);
    t_sh("rm -f %s %s.bad", file, file);
    t_sql("DROP SCHEMA \"%s\" CASCADE", sch2);
}

/* --json output parses (jq), and stats --prometheus is in the text
 * exposition format (promtool when installed, else a line-by-line check). */
TEST(tool_json_and_prometheus_outputs_parse)
{
    setcache *c = t_open();
    setcache_definition d = {.entity_type = "expert",
                             .key = "risk_limit",
                             .type = SETCACHE_INT,
                             .default_value = "10",
                             .has_max = true,
                             .max = 100};
    CHECK_OK(setcache_define_rules(c, &d));
    CHECK_OK(setcache_publish_definitions(c, NULL));
    CHECK_OK(setcache_set_string(c, "expert", "3", "note", "a \"quoted\"\ttab\x1b"));
    setcache_close(c);
    char out[16384], base[1024];
    snprintf(base, sizeof base, "%s/setcache --conninfo '%s' --schema %s --channel %s --json",
             t_build_dir(), t_conninfo(), t_schema(), t_schema());
    CHECK_INT(run(out, sizeof out, "%s get expert 3 note | jq -r .value", base), 0);
    CHECK_STR(out, "a \"quoted\"\ttab\x1b\n");
    CHECK_INT(
        run(out, sizeof out, "%s list expert 3 | jq -c '[.settings[] | [.key, .default]]'", base),
        0);
    CHECK_STR(out, "[[\"note\",false],[\"risk_limit\",true]]\n");
    CHECK_INT(
        run(out, sizeof out, "%s describe expert | jq -c '.[0] | [.key, .max, .default]'", base),
        0);
    CHECK_STR(out, "[\"risk_limit\",100,\"10\"]\n");
    CHECK_INT(
        run(out, sizeof out, "%s history expert 3 | jq -r '.[0].op + \" \" + .[0].role'", base), 0);
    CHECK_STR(out, "insert postgres\n");
    CHECK_INT(run(out, sizeof out, "%s stats | jq -r '.state + \" \" + (.hits | tostring)'", base),
              0);
    CHECK(strncmp(out, "VALID ", 6) == 0 || strncmp(out, "CONNECTING ", 11) == 0);
    CHECK_INT(run(out, sizeof out, "%s stats --prometheus > /tmp/setcache-prom-%d.txt", base,
                  (int)getpid()),
              0);
    char path[64];
    snprintf(path, sizeof path, "/tmp/setcache-prom-%d.txt", (int)getpid());
    if (t_sh("command -v promtool >/dev/null") == 0) {
        CHECK_INT(t_sh("promtool check metrics < %s", path), 0);
    } else {
        /* every sample's metric has HELP and TYPE before it; names and
         * values are well formed */
        CHECK_INT(t_sh("awk '/^# HELP /{h[$3]=1; next} /^# TYPE /{if (!h[$3] || ($4 != \"counter\" "
                       "&& $4 != \"gauge\")) exit 1; t[$3]=1; next} /^#/{exit 1} {n=$1; "
                       "sub(/\\{.*/, \"\", n); if (!t[n] || $0 !~ /^setcache_[a-z_]+(\\{state=\""
                       "[A-Z]+\"\\})? [0-9]+$/) exit 1; s++} END {exit s < 20}' %s",
                       path),
                  0);
    }
    CHECK_INT(run(out, sizeof out, "grep -c '^setcache_state{' %s", path), 0);
    CHECK_STR(out, "4\n");
    CHECK_INT(run(out, sizeof out, "grep '^setcache_hits_total ' %s", path), 0);
    t_sh("rm -f %s", path);
}

/* The man page renders without a warning and names every command the
 * tool's usage names. */
TEST(man_page_renders_and_covers_every_command)
{
    if (t_sh("command -v groff >/dev/null") != 0) {
        t_skip("groff not found");
    }
    char out[8192];
    CHECK_INT(run(out, sizeof out, "groff -ww -z -man man/setcache.1 2>&1"), 0);
    CHECK_STR(out, "");
    const char *cmds[] = {"get",    "set",    "delete", "list",   "describe", "history",
                          "export", "import", "init",   "schema", "stats",    "watch"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        CHECK_INT(run(out, sizeof out, "grep -c '^\\.B[IR]* %s' man/setcache.1", cmds[i]), 0);
        CHECK_INT(
            run(out, sizeof out, "%s/setcache 2>&1 | grep -c '^  %s'", t_build_dir(), cmds[i]), 0);
    }
}
