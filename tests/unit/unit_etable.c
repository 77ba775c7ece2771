/* The per-entity entry table and the table hash. */
#include "harness.h"
#include "internal.h"

/* The per-entity table: every key found after growth, a put with a key
 * already there replaces (and hands back) the old entry, misses are misses,
 * and the table stays at most 3/4 full. */
TEST(entry_table_finds_replaces_and_grows)
{
    enum { N = 20000 };
    sc_etable t = {0};
    CHECK(setcache__et_find_str(&t, "absent") == NULL);
    char key[32];
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof key, "key_%d", i);
        sc_entry *e = setcache__entry_new(key, (size_t)n, "v1", 2, i, false);
        CHECK(e != NULL);
        sc_entry *old = (sc_entry *)1;
        CHECK_OK(setcache__et_put(&t, e, &old));
        CHECK(old == NULL);
        CHECK((size_t)t.count * 4 <= (size_t)t.cap * 3);
        CHECK((t.cap & (t.cap - 1)) == 0);
    }
    CHECK_INT(t.count, N);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "key_%d", i);
        sc_entry *e = setcache__et_find_str(&t, key);
        CHECK(e != NULL);
        CHECK_STR(e->data, key);
        CHECK_INT(e->version, i);
        snprintf(key, sizeof key, "key_%d", N + i);
        CHECK(setcache__et_find_str(&t, key) == NULL);
    }
    for (int i = 0; i < N; i += 2) {
        int n = snprintf(key, sizeof key, "key_%d", i);
        sc_entry *was = setcache__et_find_str(&t, key);
        sc_entry *e = setcache__entry_new(key, (size_t)n, "12345", 5, N + i, false);
        CHECK(e != NULL);
        sc_entry *old = NULL;
        CHECK_OK(setcache__et_put(&t, e, &old));
        CHECK(old == was);
        free(old);
    }
    CHECK_INT(t.count, N);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "key_%d", i);
        sc_entry *e = setcache__et_find_str(&t, key);
        CHECK(e != NULL);
        CHECK_INT(e->version, i % 2 ? i : N + i);
        CHECK_STR(SC_VAL(e), i % 2 ? "v1" : "12345");
        CHECK(i % 2 || ((e->flags & SC_E_INT) && e->num.i == 12345));
    }
    sc_etable u = {0};
    setcache__et_take(&u, &t);
    CHECK(t.slot == NULL && t.cap == 0 && t.count == 0);
    CHECK(setcache__et_find_str(&u, "key_7") != NULL);
    setcache__et_free(&u);
    CHECK(u.slot == NULL && u.count == 0);
}

/* The table hash depends on every byte and on the length (its 0-7 byte
 * tail is read in overlapping words), and no simple change to a key (one
 * byte, the same change to two bytes, swapped halves) keeps its hash. */
TEST(hash_depends_on_every_byte_and_the_length)
{
    char a[32], b[32];
    for (size_t len = 0; len <= 24; len++) {
        for (size_t i = 0; i < sizeof a; i++) {
            a[i] = (char)('a' + i % 26);
        }
        unsigned h = setcache__hash(a, len);
        CHECK(h != setcache__hash(a, len + 1));
        for (size_t pos = 0; pos < len; pos++) {
            memcpy(b, a, sizeof a);
            b[pos] ^= 0x20;
            CHECK(setcache__hash(b, len) != h);
            for (size_t q = pos + 1; q < len; q++) { /* the same change twice */
                b[q] ^= 0x20;
                CHECK(setcache__hash(b, len) != h);
                b[q] ^= 0x20;
            }
        }
        memcpy(b, a, sizeof a);
        b[len] ^= 0x20; /* a byte beyond the length changes nothing */
        CHECK_INT(setcache__hash(b, len), h);
    }
    /* a word with its halves swapped is another key, whatever the seed */
    CHECK(setcache__hash("abcdefgh", 8) != setcache__hash("efghabcd", 8));
    CHECK(setcache__hash("key_abcdefgh", 12) != setcache__hash("key_efghabcd", 12));
    /* an entity's (type, id): where one ends and the other begins counts */
    CHECK(setcache__hash2("ab", 2, "c", 1) != setcache__hash2("a", 1, "bc", 2));
    CHECK(setcache__hash2("expert", 6, "12", 2) != setcache__hash2("expert1", 7, "2", 1));
    CHECK(setcache__hash2("expert", 6, "12", 2) != setcache__hash2("expert", 6, "21", 2));
    CHECK(setcache__hash2("expert", 6, "12", 2) == setcache__hash2("expert!", 6, "12?", 2));
}
