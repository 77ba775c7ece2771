/*
 * value.c - identifier validation, UTF-8 checks and typed value parsing.
 *
 * Owns: nothing but a "C" locale object for locale-independent number
 * conversion. No locks (the locale is created once, thread-safely).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void make_c_locale(void)
{
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

static locale_t numeric_locale(void)
{
    pthread_once(&c_locale_once, make_c_locale);
    return c_locale;
}

bool setcache__valid_type_name(const char *s, size_t len)
{
    if (len == 0 || len > SETCACHE_MAX_TYPE_LEN) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_')) {
            return false;
        }
    }
    return true;
}

bool setcache__valid_utf8(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c0 = p[i];
        if (c0 < 0x80) {
            if (c0 == 0) {
                return false;
            }
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c0 >= 0xC2 && c0 <= 0xDF) {
            n = 1;
            cp = c0 & 0x1F;
        } else if (c0 >= 0xE0 && c0 <= 0xEF) {
            n = 2;
            cp = c0 & 0x0F;
        } else if (c0 >= 0xF0 && c0 <= 0xF4) {
            n = 3;
            cp = c0 & 0x07;
        } else {
            return false;
        }
        if (i + n >= len) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        /* reject overlong forms, surrogates and values above U+10FFFF */
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

/* Is the character at p (valid UTF-8) one a terminal or a text renderer
 * would act on instead of showing: a C1 control (U+0080-U+009F) or a
 * bidirectional formatting character (U+202A-U+202E, U+2066-U+2069)? */
static bool deceptive_at(const unsigned char *p, size_t left)
{
    if (p[0] == 0xC2 && left >= 2) {
        return p[1] >= 0x80 && p[1] <= 0x9F;
    }
    if (p[0] == 0xE2 && left >= 3) {
        return (p[1] == 0x80 && p[2] >= 0xAA && p[2] <= 0xAE) ||
               (p[1] == 0x81 && p[2] >= 0xA6 && p[2] <= 0xA9);
    }
    return false;
}

bool setcache__valid_text_ident(const char *s, size_t len)
{
    if (len == 0 || len > SETCACHE_MAX_ID_LEN) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7F) {
            return false;
        }
    }
    if (!setcache__valid_utf8(s, len)) {
        return false;
    }
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len; i++) {
        if (deceptive_at(p + i, len - i)) {
            return false;
        }
    }
    return true;
}

/* Schema and channel names: [a-z_][a-z0-9_]{0,62}; they are quoted anyway. */
bool setcache__valid_sql_name(const char *s)
{
    if (!s || !*s) {
        return false;
    }
    size_t len = strlen(s);
    if (len > 63 || (s[0] >= '0' && s[0] <= '9')) {
        return false;
    }
    return setcache__valid_type_name(s, len);
}

static int describe_bad(const char *what, const char *s, size_t max)
{
    if (!s) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is NULL", what);
    }
    size_t len = strnlen(s, max + 1);
    if (len == 0) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is empty", what);
    }
    if (len > max) {
        return setcache__fail(SETCACHE_ERR_ARG, "%s is longer than %zu bytes", what, max);
    }
    return SETCACHE_OK;
}

int setcache__check_identity(const char *t, const char *id, const char *key, size_t *tlen,
                             size_t *ilen, size_t *klen)
{
    int rc;
    if ((rc = describe_bad("entity_type", t, SETCACHE_MAX_TYPE_LEN)) != 0) {
        return rc;
    }
    *tlen = strlen(t);
    if (!setcache__valid_type_name(t, *tlen)) {
        return setcache__fail(SETCACHE_ERR_ARG, "entity_type must be 1-63 bytes of [a-z0-9_]");
    }
    if (id) {
        if ((rc = describe_bad("entity_id", id, SETCACHE_MAX_ID_LEN)) != 0) {
            return rc;
        }
        *ilen = strlen(id);
        if (!setcache__valid_text_ident(id, *ilen)) {
            return setcache__fail(SETCACHE_ERR_ARG,
                                  "entity_id must be valid UTF-8 without control or "
                                  "bidirectional formatting characters");
        }
    }
    if (key) {
        if ((rc = describe_bad("key", key, SETCACHE_MAX_KEY_LEN)) != 0) {
            return rc;
        }
        *klen = strlen(key);
        if (!setcache__valid_text_ident(key, *klen)) {
            return setcache__fail(SETCACHE_ERR_ARG, "key must be valid UTF-8 without control or "
                                                    "bidirectional formatting characters");
        }
    }
    return SETCACHE_OK;
}

bool setcache__parse_int(const char *s, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)s[0])) {
        return false;
    }
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

bool setcache__parse_double(const char *s, double *out)
{
    if (!s || !*s || isspace((unsigned char)s[0])) {
        return false;
    }
    /* decimal notation only: no hex floats, no nan/inf spellings */
    for (const char *p = s; *p; p++) {
        if (!strchr("0123456789+-.eE", *p)) {
            return false;
        }
    }
    errno = 0;
    char *end;
    double v = strtod_l(s, &end, numeric_locale());
    if (errno == ERANGE && (v == HUGE_VAL || v == -HUGE_VAL)) {
        return false;
    }
    if (*end != '\0' || end == s) {
        return false;
    }
    *out = v;
    return true;
}

bool setcache__parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "t", "1", "yes", "on"};
    static const char *const no[] = {"false", "f", "0", "no", "off"};
    if (!s) {
        return false;
    }
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

void setcache__parse_all(const char *s, sc_parsed *p)
{
    memset(p, 0, sizeof *p);
    if (setcache__parse_int(s, &p->i)) {
        p->ok |= SC_PARSED_INT;
    }
    if (setcache__parse_double(s, &p->d)) {
        p->ok |= SC_PARSED_DOUBLE;
    }
    if (setcache__parse_bool(s, &p->b)) {
        p->ok |= SC_PARSED_BOOL;
    }
}

/* The shortest decimal text that reads back as exactly v (at most 17
 * significant digits), so every process stores and reads the same bytes. */
int setcache__format_double(double v, char *buf, size_t cap)
{
    locale_t old = uselocale(numeric_locale());
    int n = 0;
    for (int digits = 1; digits <= 17; digits++) {
        n = snprintf(buf, cap, "%.*g", digits, v);
        double back;
        if (n < 0 || (size_t)n >= cap || (setcache__parse_double(buf, &back) && back == v)) {
            break;
        }
    }
    uselocale(old);
    return n;
}

const char *setcache__type_name(setcache_type t)
{
    switch (t) {
    case SETCACHE_STRING:
        return "string";
    case SETCACHE_INT:
        return "int";
    case SETCACHE_DOUBLE:
        return "double";
    case SETCACHE_BOOL:
        return "bool";
    case SETCACHE_JSON:
        return "json";
    }
    return "unknown";
}
