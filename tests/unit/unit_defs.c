/* Definitions on a handle that never connects (no JSON defaults, which the
 * server checks): types, defaults, replacement, and foreach's defaults. */
#include "harness.h"
#include "internal.h"

static setcache *bare_handle(void)
{
    setcache *c = calloc(1, sizeof *c);
    CHECK(c != NULL);
    c->max_value_len = SETCACHE_MAX_VALUE_LEN;
    setcache__defs_init(c);
    return c;
}

TEST(definitions_give_types_and_defaults)
{
    setcache *c = bare_handle();
    CHECK_OK(setcache_define(c, "expert", "atr_period", SETCACHE_INT, "14"));
    CHECK_OK(setcache_define(c, "expert", "note", SETCACHE_STRING, NULL));
    CHECK_RC(setcache_define(c, "expert", "bad", SETCACHE_INT, "fourteen"), SETCACHE_ERR_TYPE);
    CHECK_RC(setcache_define(c, "Expert", "k", SETCACHE_INT, "1"), SETCACHE_ERR_ARG);
    CHECK_RC(setcache_define(c, "expert", "k", (setcache_type)99, NULL), SETCACHE_ERR_ARG);
    setcache_type t;
    CHECK(setcache__def_type(c, "expert", 6, "atr_period", 10, &t) && t == SETCACHE_INT);
    CHECK(!setcache__def_type(c, "expert", 6, "bad", 3, &t));
    sc_ident id;
    CHECK_OK(setcache__ident(&id, "expert", "3", "atr_period"));
    sc_read r = {.want = SC_WANT_INT};
    CHECK_OK(setcache__read_default(c, &id, &r));
    CHECK_INT(r.i, 14);
    CHECK_OK(setcache__ident(&id, "expert", "3", "note"));
    r = (sc_read){.want = SC_WANT_INT};
    CHECK_RC(setcache__read_default(c, &id, &r), SETCACHE_NOT_FOUND);
    /* a second definition replaces the first */
    CHECK_OK(setcache_define(c, "expert", "atr_period", SETCACHE_DOUBLE, "1.5"));
    CHECK_OK(setcache__ident(&id, "expert", "3", "atr_period"));
    r = (sc_read){.want = SC_WANT_DOUBLE};
    CHECK_OK(setcache__read_default(c, &id, &r));
    CHECK(r.d == 1.5);
    /* foreach's defaults: only those with no stored value */
    sc_pair *pairs = calloc(1, sizeof *pairs);
    pairs[0] = (sc_pair){strdup("note"), strdup("x"), false};
    size_t n = 1, cap = 1;
    CHECK_OK(setcache_define(c, "expert", "note", SETCACHE_STRING, "dflt"));
    CHECK_OK(setcache__defs_add_defaults(c, "expert", &pairs, &n, &cap));
    CHECK_INT(n, 2);
    CHECK_STR(pairs[1].key, "atr_period");
    CHECK(pairs[1].is_default);
    for (size_t i = 0; i < n; i++) {
        free(pairs[i].key);
        free(pairs[i].value);
    }
    free(pairs);
    setcache__defs_destroy(c, true);
    free(c);
}
