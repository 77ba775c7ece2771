/*
 * cell.c - the value cell behind a bound reference: one setting's current
 * value and typed forms, written by the cache under its shard's write lock
 * and read by any thread with no lock and no write (a sequence lock).
 *
 * Owns: the cell's published fields (seq, state, len, i, d, w). The links and
 * the key (next, prev, ent, key) belong to cache.c, under the shard's lock.
 *
 * The protocol. A writer (one at a time: it holds the shard's write lock)
 * makes seq odd, stores the fields with release order, and makes seq even
 * again with release order. A reader loads seq with acquire order, the fields
 * with acquire order, then seq again: if both are the same even number, no
 * writer touched the fields in between (a field written by a writer that had
 * begun would make the second load see the odd or a later number, since its
 * release store orders the odd seq before it). Every shared field is an
 * atomic, so the protocol is free of data races as C11 defines them, and the
 * reader never writes: nothing is ever freed under it, because the value is
 * copied into the cell itself (up to SC_CELL_BYTES - 1 bytes; a longer value
 * is read on the locked path).
 */
#include "internal.h"

#include <string.h>

static void store_words(sc_cell *cl, const char *v, size_t len)
{
    uint64_t w[SC_CELL_WORDS] = {0};
    memcpy(w, v, len); /* the NUL and the rest of the word are zero */
    size_t nw = len / 8 + 1;
    for (size_t i = 0; i < nw; i++) {
        atomic_store_explicit(&cl->w[i], w[i], memory_order_release);
    }
}

/* Publish what the cache holds for the cell's key: en (NULL or a tombstone:
 * no stored value), or with valid false, nothing the cell can answer from
 * (the entity is not loaded). The caller holds the shard's write lock. */
void setcache__cell_store(sc_cell *cl, const sc_entry *en, bool valid)
{
    unsigned s = atomic_load_explicit(&cl->seq, memory_order_relaxed);
    atomic_store_explicit(&cl->seq, s + 1, memory_order_relaxed);
    unsigned st = 0;
    if (valid && !(en && (en->flags & SC_E_DUP))) { /* a duplicated key reads as an error */
        st = SC_CELL_VALID;
        if (en && !SC_TOMB(en)) {
            st |= SC_CELL_VALUE;
            if (en->flags & SC_E_INT) {
                st |= SC_CELL_INT;
                atomic_store_explicit(&cl->i, en->num.i, memory_order_release);
            }
            if (en->flags & SC_E_DOUBLE) {
                double d = (en->flags & SC_E_INT) ? (double)en->num.i : en->num.d;
                uint64_t bits;
                memcpy(&bits, &d, sizeof bits);
                st |= SC_CELL_DOUBLE;
                atomic_store_explicit(&cl->d, bits, memory_order_release);
            }
            if (en->flags & SC_E_BOOL) {
                st |= SC_CELL_BOOL | ((en->flags & SC_E_TRUE) ? SC_CELL_TRUE : 0);
            }
            if (en->vlen < SC_CELL_BYTES) {
                st |= SC_CELL_INLINE;
                atomic_store_explicit(&cl->len, en->vlen, memory_order_release);
                store_words(cl, SC_VAL(en), en->vlen);
            }
        }
    }
    atomic_store_explicit(&cl->state, st, memory_order_release);
    atomic_store_explicit(&cl->seq, s + 2, memory_order_release);
}
