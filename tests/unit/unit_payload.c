/* The notification payload parser: what it accepts, and that anything
 * malformed (payloads are public and may be forged) is refused. */
#include "harness.h"
#include "internal.h"

TEST(payloads_parse_changes_truncates_and_heartbeats)
{
    char buf[9000], op;
    int64_t v;
    sc_ident id;
    CHECK_INT(setcache__parse_payload("1\x1fU\x1f" "5\x1f" "expert\x1f" "3\x1f" "atr", buf,
                                      sizeof buf, &op, &v, &id),
              0);
    CHECK(op == 'U' && v == 5);
    CHECK_STR(id.type, "expert");
    CHECK_STR(id.id, "3");
    CHECK_STR(id.key, "atr");
    CHECK_INT(setcache__parse_payload("1\x1f" "D\x1f" "7\x1f" "a\x1f" "b\x1f" "c", buf,
                                      sizeof buf, &op, &v, &id),
              0);
    CHECK(op == 'D' && v == 7);
    CHECK_INT(setcache__parse_payload("1\x1fT\x1f" "0", buf, sizeof buf, &op, &v, &id), 0);
    CHECK(op == 'T');
    CHECK_INT(setcache__parse_payload("1\x1fH\x1f" "42", buf, sizeof buf, &op, &v, &id), 0);
    CHECK(op == 'H' && v == 42);
    CHECK_INT(setcache__parse_payload("1\x1fK\x1f" "43", buf, sizeof buf, &op, &v, &id), 0);
    CHECK(op == 'K' && v == 43); /* a tick */
    CHECK_INT(setcache__parse_payload("1\x1fK\x1f" "43\x1fx", buf, sizeof buf, &op, &v, &id), -1);
    /* a shared definition changed */
    CHECK_INT(setcache__parse_payload("1\x1f" "F\x1f" "9\x1f" "expert\x1f" "*\x1f" "risk", buf,
                                      sizeof buf, &op, &v, &id),
              0);
    CHECK(op == 'F' && v == 9);
    CHECK_STR(id.key, "risk");
    CHECK_INT(setcache__parse_payload("1\x1f" "F\x1f" "9\x1f" "expert", buf, sizeof buf, &op, &v,
                                      &id),
              -1);
}

TEST(malformed_payloads_are_refused)
{
    char buf[9000], op;
    int64_t v;
    sc_ident id;
    const char *bad[] = {
        "",
        "2\x1fU\x1f" "5\x1f" "expert\x1f" "3\x1f" "k", /* unknown format */
        "1\x1fX\x1f" "5\x1f" "expert\x1f" "3\x1f" "k", /* unknown operation */
        "1\x1fU\x1f" "-5\x1f" "expert\x1f" "3\x1f" "k", /* negative version */
        "1\x1fU\x1f" "x\x1f" "expert\x1f" "3\x1f" "k", /* version not a number */
        "1\x1fU\x1f" "5\x1f" "expert\x1f" "3", /* a field missing */
        "1\x1fU\x1f" "5\x1f" "expert\x1f" "3\x1f" "k\x1f" "x", /* one too many */
        "1\x1fU\x1f" "5\x1f" "Expert\x1f" "3\x1f" "k", /* bad type */
        "1\x1fU\x1f" "5\x1f" "expert\x1f" "3\x1f" "k\x01", /* control character */
        "1\x1fT\x1f" "0\x1f" "x", /* truncate with extra fields */
        "1\x1fUU\x1f" "5\x1f" "expert\x1f" "3\x1f" "k",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (setcache__parse_payload(bad[i], buf, sizeof buf, &op, &v, &id) != -1) {
            t_fail(__FILE__, __LINE__, "payload %zu was accepted", i);
        }
    }
    char big[9100];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK_INT(setcache__parse_payload(big, buf, sizeof buf, &op, &v, &id), -1);
}
