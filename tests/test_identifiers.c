/* Identifiers that can't deceive: the library, the table's constraints and
 * the tool agree; rows from before the rule are reported, never dropped. */
#include "harness.h"

#include <pthread.h>

#define RLO "\xe2\x80\xae"
#define NEL "\xc2\x85"

TEST(library_and_table_refuse_c1_and_bidirectional_identifiers)
{
    setcache *c = t_open();
    const char *s = t_schema();
    CHECK_RC(setcache_set_string(c, "account", "1", "fee" RLO "gnp", "x"), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_set_string(c, "account", "1" NEL, "k", "x"), SETCACHE_ERR_ARG);
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".settings", s), "0");
    /* psql can't store what the library refuses to read */
    CHECK(!t_sql_try("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                     "('account', '1', 'fee' || U&'\\202E' || 'gnp', 'x')",
                     s));
    CHECK(!t_sql_try("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                     "('account', '1' || U&'\\0085', 'k', 'x')",
                     s));
    CHECK(t_sql_try("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                    "('account', '1', 'caf' || U&'\\00E9', 'x')",
                    s));
    CHECK_STR(
        t_sql_value("SELECT convalidated FROM pg_constraint WHERE conname = "
                    "'settings_identifiers_visible' AND conrelid = '\"%s\".settings'::regclass",
                    s),
        "t");
    setcache_close(c);
}

TEST(rows_from_before_the_rule_are_reported_at_upgrade_never_dropped)
{
    setcache_close(t_open()); /* the schema, at this revision */
    const char *s = t_schema();
    /* a table from before the rule, holding a row it now refuses */
    t_sql("ALTER TABLE \"%s\".settings DROP CONSTRAINT settings_identifiers_visible", s);
    t_sql("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES ('account', "
          "'1', 'fee' || U&'\\202E' || 'gnp', 'x'), ('account', '1', 'plain', 'y')",
          s);
    t_sql("COMMENT ON FUNCTION \"%s\".settings_notify() IS 'setcache schema 1 channel %s'", s, s);
    t_warnings w = T_WARNINGS_INIT;
    setcache_options o;
    t_options(&o);
    o.log = t_keep_warnings;
    o.log_arg = &w;
    setcache *c = t_open_with(&o);
    bool said = t_warned(&w, "1 rows") && t_warned(&w, "cannot address them");
    if (!said) {
        t_fail(__FILE__, __LINE__, "no warning; the log said: %s", w.text);
    }
    CHECK_STR(t_sql_value("SELECT count(*) FROM \"%s\".settings", s), "2"); /* nothing dropped */
    CHECK_STR(
        t_sql_value("SELECT convalidated FROM pg_constraint WHERE conname = "
                    "'settings_identifiers_visible' AND conrelid = '\"%s\".settings'::regclass",
                    s),
        "f"); /* in force for new rows, not yet for the old one */
    CHECK(!t_sql_try("INSERT INTO \"%s\".settings (entity_type, entity_id, key, value) VALUES "
                     "('account', '2', 'a' || U&'\\2066', 'x')",
                     s));
    char buf[16];
    CHECK_OK(setcache_get_string(c, "account", "1", "plain", buf, sizeof buf, NULL));
    CHECK_STR(buf, "y");
    setcache_close(c);
}

static int run_cmd(char *out, size_t cap, const char *cmd)
{
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    return pclose(p);
}

TEST(the_tool_escapes_what_a_terminal_would_act_on)
{
    setcache *c = t_open();
    const char *hostile = "a\x1b[2Jb" RLO "c" NEL "d\\e\nf";
    CHECK_OK(setcache_set_string(c, "account", "1", "note", hostile));
    setcache_close(c);
    char base[1024], cmd[1400], out[2048];
    snprintf(base, sizeof base, "%s/setcache --conninfo '%s' --schema %s --channel %s",
             t_build_dir(), t_conninfo(), t_schema(), t_schema());
    snprintf(cmd, sizeof cmd, "%s list account 1", base);
    CHECK_INT(run_cmd(out, sizeof out, cmd), 0);
    CHECK_STR(out, "note=a\\x1b[2Jb\\u202ec\\u0085d\\\\e\\nf\n");
    /* a program reading get's output gets the bytes */
    snprintf(cmd, sizeof cmd, "%s get account 1 note", base);
    CHECK_INT(run_cmd(out, sizeof out, cmd), 0);
    CHECK(strncmp(out, hostile, strlen(hostile)) == 0 && out[strlen(hostile)] == '\n');
    /* a terminal gets the escapes (script gives the tool a pseudo-terminal) */
    snprintf(cmd, sizeof cmd, "script -qec \"%s get account 1 note\" /dev/null </dev/null", base);
    CHECK_INT(run_cmd(out, sizeof out, cmd), 0);
    CHECK(strstr(out, "a\\x1b[2Jb\\u202ec\\u0085d\\\\e\\nf") != NULL);
    CHECK(strchr(out, 0x1b) == NULL);
}
