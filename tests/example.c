/* The README's example: read settings at memory speed, write them through. */
#include <setcache.h>
#include <stdio.h>

int main(void)
{
    setcache_options o;
    setcache_options_init(&o);
    o.conninfo = "";        /* libpq defaults: PGHOST, PGDATABASE, ... */
    o.create_schema = true; /* table, version sequence and triggers */

    setcache *c;
    if (setcache_open(&c, &o) != SETCACHE_OK) {
        fprintf(stderr, "open: %s\n", setcache_errmsg());
        return 1;
    }
    setcache_define(c, "account", "paper_account", SETCACHE_BOOL, "true");
    setcache_define(c, "account", "minimum_equity_threshold_percent", SETCACHE_DOUBLE, "10");

    /* Write through: returns after COMMIT; every thread reads it at once. */
    if (setcache_set_double(c, "account", "42", "minimum_equity_threshold_percent", 12.5) != 0) {
        fprintf(stderr, "set: %s\n", setcache_errmsg());
    }

    /* The first read of account 42 loads all its settings in one query;
     * every later read is a hash lookup. */
    bool paper;
    double threshold;
    if (setcache_get_bool(c, "account", "42", "paper_account", &paper) == SETCACHE_OK &&
        setcache_get_double(c, "account", "42", "minimum_equity_threshold_percent", &threshold) ==
            SETCACHE_OK) {
        printf("paper=%d threshold=%g\n", paper, threshold);
    }
    setcache_close(c);
    return 0;
}
