/*
 * hash.h - the hash function behind every table of the library (uthash's
 * and the per-entity sc_etable): 8 bytes per step, each step a bijection of
 * the state (xor, odd multiply, rotate), so two keys of one length that
 * differ collide only through the seed, which is drawn once per process;
 * a full-avalanche finalizer at the end. Included (through internal.h)
 * before uthash.h; the benchmark's floors use it too, so that the comparison
 * is of the same lookup.
 */
#ifndef SETCACHE_HASH_H
#define SETCACHE_HASH_H

#include <stdint.h>
#include <string.h>

extern uint64_t setcache__hash_seed;
void setcache__hash_seed_once(void); /* hash.c: draw the seed, once per process */

static inline uint64_t setcache__hash_step(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    return (h << 31) | (h >> 33);
}

/* every output bit depends on every input bit (MurmurHash3's finalizer) */
static inline uint64_t setcache__hash_final(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Feed len bytes at p into the state. */
static inline uint64_t setcache__hash_bytes(uint64_t h, const unsigned char *p, size_t len)
{
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = setcache__hash_step(h, w);
        p += 8;
        len -= 8;
    }
    /* the last 1-7 bytes as one little-endian word, read without a byte-wise
     * copy (which would stall the load that follows it): two overlapping
     * 4-byte reads for 4-7 bytes, first/middle/last byte for 1-3 */
    if (len >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + len - 4, 4);
        h = setcache__hash_step(h, lo | ((uint64_t)hi << (8 * (len - 4))));
    } else if (len > 0) {
        h = setcache__hash_step(h, p[0] | ((uint64_t)p[len / 2] << (8 * (len / 2))) |
                                       ((uint64_t)p[len - 1] << (8 * (len - 1))));
    }
    return h;
}

static inline unsigned setcache__hash(const void *key, size_t len)
{
    uint64_t h = setcache__hash_seed ^ (len * 0xd6e8feb86659fd93ULL);
    h = setcache__hash_final(setcache__hash_bytes(h, (const unsigned char *)key, len));
    return (unsigned)(h ^ (h >> 32));
}

/* The hash of a pair of strings (an entity's type and id), read where they
 * are: hashing a copy made just before would stall on the copy's stores. */
static inline unsigned setcache__hash2(const void *a, size_t alen, const void *b, size_t blen)
{
    uint64_t h = setcache__hash_seed ^ (alen * 0xd6e8feb86659fd93ULL);
    h = setcache__hash_bytes(h, (const unsigned char *)a, alen);
    h = setcache__hash_step(h, blen * 0x9e3779b97f4a7c15ULL + 1);
    h = setcache__hash_final(setcache__hash_bytes(h, (const unsigned char *)b, blen));
    return (unsigned)(h ^ (h >> 32));
}

#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = setcache__hash((keyptr), (keylen)))

#endif
