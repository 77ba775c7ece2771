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
