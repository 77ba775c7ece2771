/* Values and names: validation, parsing, the shortest text of a double. */
#include "harness.h"
#include "internal.h"

#include <math.h>

TEST(integers_parse_in_range_and_nothing_else)
{
    int64_t v;
    CHECK(setcache__parse_int("0", &v) && v == 0);
    CHECK(setcache__parse_int("-42", &v) && v == -42);
    CHECK(setcache__parse_int("9223372036854775807", &v) && v == INT64_MAX);
    CHECK(setcache__parse_int("-9223372036854775808", &v) && v == INT64_MIN);
    const char *bad[] = {"", " 1", "1 ", "9223372036854775808", "1.0", "0x10", "1e3", "abc", "--1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!setcache__parse_int(bad[i], &v));
    }
}

TEST(doubles_parse_decimal_notation_only)
{
    double d;
    CHECK(setcache__parse_double("0.1", &d) && d == 0.1);
    CHECK(setcache__parse_double("-1e-3", &d) && d == -1e-3);
    CHECK(setcache__parse_double("14", &d) && d == 14.0);
    const char *bad[] = {"", " 1", "nan", "inf", "0x1p3", "1e999", "1,5", "1.5 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!setcache__parse_double(bad[i], &d));
    }
}

TEST(booleans_read_the_usual_spellings)
{
    bool b;
    const char *yes[] = {"true", "t", "1", "yes", "on"};
    const char *no[] = {"false", "f", "0", "no", "off"};
    for (size_t i = 0; i < 5; i++) {
        CHECK(setcache__parse_bool(yes[i], &b) && b);
        CHECK(setcache__parse_bool(no[i], &b) && !b);
    }
    CHECK(!setcache__parse_bool("maybe", &b));
    CHECK(!setcache__parse_bool("", &b));
}

/* The shortest text that reads back as the same double: for 200,000
 * doubles spread over every exponent, the text reads back exactly and no
 * text with one significant digit fewer does. */
TEST(set_double_text_is_the_shortest_that_round_trips)
{
    char buf[400], shorter[400];
    setcache__format_double(0.1, buf, sizeof buf);
    CHECK_STR(buf, "0.1");
    setcache__format_double(1.0 / 3, buf, sizeof buf);
    CHECK_STR(buf, "0.3333333333333333");
    setcache__format_double(1e20, buf, sizeof buf);
    CHECK_STR(buf, "1e+20");
    setcache__format_double(5e-324, buf, sizeof buf);
    CHECK_STR(buf, "5e-324");
    setcache__format_double(-0.0, buf, sizeof buf);
    CHECK_STR(buf, "-0");
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double v;
        uint64_t bits = x & ~(0x7ffULL << 52); /* keep every exponent but inf/nan */
        bits |= ((x >> 11) % 2046 + 1) << 52;
        memcpy(&v, &bits, sizeof v);
        setcache__format_double(v, buf, sizeof buf);
        double back;
        CHECK(setcache__parse_double(buf, &back));
        if (back != v) {
            t_fail(__FILE__, __LINE__, "%.17g formatted as %s reads back as %.17g", v, buf, back);
        }
        int digits = 0; /* significant: leading zeros don't count */
        bool lead = true;
        for (const char *p = buf; *p && *p != 'e'; p++) {
            lead = lead && (*p == '-' || *p == '0' || *p == '.');
            digits += !lead && *p >= '0' && *p <= '9';
        }
        if (digits > 1) {
            snprintf(shorter, sizeof shorter, "%.*g", digits - 1, v);
            CHECK(!setcache__parse_double(shorter, &back) || back != v);
        }
    }
}

TEST(identities_refuse_control_characters_and_bad_utf8)
{
    size_t t, i, k;
    CHECK_OK(setcache__check_identity("expert", "3", "atr_period", &t, &i, &k));
    CHECK_OK(setcache__check_identity("expert", "Équipe 7", "clé", &t, &i, &k));
    CHECK_RC(setcache__check_identity("Expert", "3", "k", &t, &i, &k), SETCACHE_ERR_ARG);
    CHECK_RC(setcache__check_identity("expert", "a\tb", "k", &t, &i, &k), SETCACHE_ERR_ARG);
    CHECK_RC(setcache__check_identity("expert", "3", "k\x7f", &t, &i, &k), SETCACHE_ERR_ARG);
    CHECK_RC(setcache__check_identity("expert", "\xc3\x28", "k", &t, &i, &k), SETCACHE_ERR_ARG);
    CHECK_RC(setcache__check_identity("expert", "", "k", &t, &i, &k), SETCACHE_ERR_ARG);
    char longid[300];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    CHECK_RC(setcache__check_identity("expert", longid, "k", &t, &i, &k), SETCACHE_ERR_ARG);
    CHECK(setcache__valid_sql_name("setcache_2"));
    CHECK(!setcache__valid_sql_name("2setcache"));
    CHECK(!setcache__valid_sql_name("Set"));
}

/* Identifiers can't hold what a terminal or a renderer would act on: C1
 * controls and bidirectional formatting characters, besides C0 and DEL. */
TEST(identities_refuse_c1_controls_and_bidirectional_formatting)
{
    size_t t, i, k;
    const char *bad[] = {"a\xc2\x85"
                         "b", /* NEL */
                         "\xc2\x9b"
                         "31m", /* CSI */
                         "\xc2\x80", "\xc2\x9f",
                         "file\xe2\x80\xae"
                         "txt.exe", /* RIGHT-TO-LEFT OVERRIDE */
                         "\xe2\x80\xaa", "\xe2\x81\xa6", "\xe2\x81\xa9"};
    for (size_t n = 0; n < sizeof bad / sizeof bad[0]; n++) {
        CHECK_RC(setcache__check_identity("expert", bad[n], "k", &t, &i, &k), SETCACHE_ERR_ARG);
        CHECK_RC(setcache__check_identity("expert", "3", bad[n], &t, &i, &k), SETCACHE_ERR_ARG);
        CHECK(strstr(setcache_errmsg(), "bidirectional") != NULL);
    }
    /* their neighbours are ordinary text */
    const char *good[] = {"\xc2\xa0", "\xc2\xbf", "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\xa5",
                          "\xe2\x81\xaa", "caf\xc3\xa9"};
    for (size_t n = 0; n < sizeof good / sizeof good[0]; n++) {
        CHECK_OK(setcache__check_identity("expert", good[n], good[n], &t, &i, &k));
    }
}
