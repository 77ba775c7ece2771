/* Identities: entity keys and hashes, and the one spelling of a mapped id. */
#include "harness.h"
#include "internal.h"

TEST(an_identity_keys_type_and_id_apart)
{
    sc_ident a, b;
    CHECK_OK(setcache__ident(&a, "expert", "12", "k"));
    CHECK_OK(setcache__ident(&b, "expert1", "2", "k"));
    CHECK(a.ekeylen == b.ekeylen && memcmp(a.ekey, b.ekey, a.ekeylen) != 0);
    CHECK_INT(a.tlen, 6);
    CHECK_INT(a.ilen, 2);
    CHECK_INT(a.klen, 1);
    CHECK(!a.validated);
    CHECK_OK(setcache__ident_validate(&a));
    CHECK(a.validated);
    CHECK_RC(setcache__ident(&a, NULL, "1", "k"), SETCACHE_ERR_ARG);
    CHECK_RC(setcache__ident(&a, "expert", "", "k"), SETCACHE_ERR_ARG);
}

static sc_tmap map_of_kind(int kind)
{
    sc_tmap m;
    memset(&m, 0, sizeof m);
    m.type = "t";
    m.id_kind = kind;
    return m;
}

TEST(integer_ids_have_the_servers_spelling_only)
{
    sc_tmap m = map_of_kind(SETCACHE_ID_INTEGER);
    const char *good[] = {"0", "7", "12", "-5", "9223372036854775807", "-9223372036854775808"};
    const char *bad[] = {"012", "+12", "-0", "00", " 12", "12 ", "1e1", "0x1", "",
                         "9223372036854775808", "-012", "1.0", "-"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        CHECK_OK(setcache__map_check_id(&m, good[i]));
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(setcache__map_check_id(&m, bad[i]), SETCACHE_ERR_ARG);
    }
}

TEST(uuid_ids_have_the_servers_spelling_only)
{
    sc_tmap m = map_of_kind(SETCACHE_ID_UUID);
    CHECK_OK(setcache__map_check_id(&m, "6f1c2a9e-3b4d-4e5f-8a7b-0c1d2e3f4a5b"));
    CHECK_RC(setcache__map_check_id(&m, "6F1C2A9E-3B4D-4E5F-8A7B-0C1D2E3F4A5B"), SETCACHE_ERR_ARG);
    CHECK(strstr(setcache_errmsg(), "lower case") != NULL);
    CHECK_RC(setcache__map_check_id(&m, "6f1c2a9e3b4d4e5f8a7b0c1d2e3f4a5b"), SETCACHE_ERR_ARG);
    CHECK_RC(setcache__map_check_id(&m, "{6f1c2a9e-3b4d-4e5f-8a7b-0c1d2e3f4a5b}"),
             SETCACHE_ERR_ARG);
    CHECK_RC(setcache__map_check_id(&m, "6f1c2a9e-3b4d-4e5f-8a7b-0c1d2e3f4a5g"), SETCACHE_ERR_ARG);
    sc_tmap g = map_of_kind(SETCACHE_ID_NONE);
    CHECK_OK(setcache__map_check_id(&g, "global"));
    CHECK_RC(setcache__map_check_id(&g, "Global"), SETCACHE_ERR_ARG);
    sc_tmap t = map_of_kind(SETCACHE_ID_TEXT);
    CHECK_OK(setcache__map_check_id(&t, "Any Text 012"));
}

TEST(a_number_column_refuses_what_it_cannot_hold_exactly)
{
    sc_tmap m = map_of_kind(SETCACHE_ID_INTEGER);
    m.typed = true;
    m.num_col = "n";
    m.table = "s.t";
    m.num_kind = SC_NUM_FLOAT8;
    CHECK_OK(setcache__map_check_number(&m, "9007199254740992", SETCACHE_INT));
    CHECK_OK(setcache__map_check_number(&m, "-9007199254740992", SETCACHE_INT));
    CHECK_RC(setcache__map_check_number(&m, "9007199254740993", SETCACHE_INT), SETCACHE_ERR_ARG);
    CHECK_OK(setcache__map_check_number(&m, "0.1", SETCACHE_DOUBLE));
    CHECK_OK(setcache__map_check_number(&m, "9007199254740993", SETCACHE_STRING)); /* a string */
    m.num_kind = SC_NUM_FLOAT4;
    CHECK_OK(setcache__map_check_number(&m, "16777216", SETCACHE_INT));
    CHECK_RC(setcache__map_check_number(&m, "16777217", SETCACHE_INT), SETCACHE_ERR_ARG);
    m.num_kind = SC_NUM_INTEGER;
    CHECK_OK(setcache__map_check_number(&m, "3", SETCACHE_DOUBLE));
    CHECK_OK(setcache__map_check_number(&m, "9223372036854775807", SETCACHE_INT));
    CHECK_RC(setcache__map_check_number(&m, "0.5", SETCACHE_DOUBLE), SETCACHE_ERR_ARG);
    m.num_kind = SC_NUM_NUMERIC;
    CHECK_OK(setcache__map_check_number(&m, "9007199254740993", SETCACHE_INT));
    CHECK_OK(setcache__map_check_number(&m, "0.5", SETCACHE_DOUBLE));
}
