/* The API surface that needs no server: options, version, codes and state
 * names, argument checks made before connecting, the error message. */
#include "harness.h"

#include <pthread.h>

TEST(options_init_fills_every_default)
{
    setcache_options o;
    memset(&o, 0x5a, sizeof o);
    setcache_options_init(&o);
    CHECK(o.conninfo == NULL && o.listen_conninfo == NULL);
    CHECK_STR(o.schema, "setcache");
    CHECK_STR(o.channel, "setcache");
    CHECK_INT(o.pool_size, 4);
    CHECK_INT(o.acquire_timeout_ms, 5000);
    CHECK_INT(o.max_entities, 0);
    CHECK(!o.create_schema);
    CHECK(o.log == NULL && o.log_arg == NULL);
    CHECK_INT(o.max_value_len, 1024 * 1024);
}

TEST(version_matches_header)
{
    CHECK_STR(setcache_version(), SETCACHE_VERSION_STRING);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", SETCACHE_VERSION_MAJOR, SETCACHE_VERSION_MINOR,
             SETCACHE_VERSION_PATCH);
    CHECK_STR(setcache_version(), want);
}

TEST(strerror_names_every_code)
{
    int codes[] = {SETCACHE_OK,           SETCACHE_NOT_FOUND, SETCACHE_ERR_ARG,
                   SETCACHE_ERR_TYPE,     SETCACHE_ERR_SPACE, SETCACHE_ERR_DB,
                   SETCACHE_ERR_TIMEOUT,  SETCACHE_ERR_NOMEM, SETCACHE_ERR_CLOSED,
                   SETCACHE_ERR_UNCERTAIN, SETCACHE_ERR_INVALID};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        CHECK(strncmp(setcache_strerror(codes[i]), "SETCACHE_", 9) == 0);
        for (size_t j = 0; j < i; j++) {
            CHECK(strcmp(setcache_strerror(codes[i]), setcache_strerror(codes[j])) != 0);
        }
    }
    CHECK_STR(setcache_strerror(12345), "unknown error");
    CHECK(SETCACHE_NOT_FOUND > 0 && SETCACHE_ERR_ARG < 0 && SETCACHE_ERR_UNCERTAIN < 0);
}

TEST(open_rejects_bad_options_and_sets_out_null)
{
    setcache_options o;
    setcache *c = (setcache *)0x1;
    CHECK_RC(setcache_open(NULL, NULL), SETCACHE_ERR_ARG);
    const char *bad_names[] = {
        "",          "Upper",
        "has space", "9starts_digit",
        "quo\"te",   "a234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        setcache_options_init(&o);
        o.schema = bad_names[i];
        c = (setcache *)0x1;
        CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_ARG);
        CHECK(c == NULL);
        setcache_options_init(&o);
        o.channel = bad_names[i];
        CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_ARG);
    }
    setcache_options_init(&o);
    o.pool_size = 0;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_ARG);
    CHECK(strstr(setcache_errmsg(), "pool_size"));
    setcache_options_init(&o);
    o.acquire_timeout_ms = -1;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_ARG);
    setcache_options_init(&o);
    o.io_timeout_ms = -1;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_ARG);
    CHECK(strstr(setcache_errmsg(), "io_timeout_ms"));
    setcache_options_init(&o);
    o.statement_timeout_ms = -1;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_ARG);
    CHECK(strstr(setcache_errmsg(), "statement_timeout_ms"));
    setcache_options_init(&o);
    o.max_value_len = 2 * 1024 * 1024;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_ARG);
}

TEST(open_reports_unreachable_server_without_password)
{
    setcache_options o;
    setcache_options_init(&o);
    o.conninfo = "host=/nonexistent-setcache-dir port=1 user=nobody password=sekrit-pw";
    setcache *c = (setcache *)0x1;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_DB);
    CHECK(c == NULL);
    CHECK(strstr(setcache_errmsg(), "connect") != NULL);
    CHECK(strstr(setcache_errmsg(), "sekrit") == NULL);
    o.conninfo = "postgresql://nobody:sekrit-pw@/db?host=/nonexistent-setcache-dir&port=1";
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_DB);
    CHECK(strstr(setcache_errmsg(), "sekrit") == NULL);
}

static void *other_thread_error(void *arg)
{
    (void)arg;
    setcache_options o;
    setcache_options_init(&o);
    o.pool_size = -5;
    setcache *c;
    setcache_open(&c, &o);
    return strstr(setcache_errmsg(), "pool_size") ? (void *)1 : NULL;
}

TEST(errmsg_is_thread_local)
{
    setcache_options o;
    setcache_options_init(&o);
    o.schema = "BAD";
    setcache *c;
    CHECK_RC(setcache_open(&c, &o), SETCACHE_ERR_ARG);
    char mine[256];
    snprintf(mine, sizeof mine, "%s", setcache_errmsg());
    pthread_t t;
    void *res;
    pthread_create(&t, NULL, other_thread_error, NULL);
    pthread_join(t, &res);
    CHECK(res == (void *)1);
    CHECK_STR(setcache_errmsg(), mine);
}

TEST(state_names_are_stable)
{
    CHECK_STR(setcache_state_name(SETCACHE_STATE_CONNECTING), "CONNECTING");
    CHECK_STR(setcache_state_name(SETCACHE_STATE_VALID), "VALID");
    CHECK_STR(setcache_state_name(SETCACHE_STATE_INTERRUPTED), "INTERRUPTED");
    CHECK_STR(setcache_state_name(SETCACHE_STATE_CLOSED), "CLOSED");
    CHECK_STR(setcache_state_name(99), "CLOSED");
}
