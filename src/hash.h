/*
 * hash.h - the hash function behind every uthash table of the library: 8
 * bytes per step with a multiply-xorshift mix, seeded once per process so
 * that hostile identifiers can't be chosen to collide. Included (through
 * internal.h) before uthash.h; the benchmark's floor uses it too, so that the
 * comparison is of the same lookup.
 */
#ifndef SETCACHE_HASH_H
#define SETCACHE_HASH_H

#include <stdint.h>
#include <string.h>

extern uint64_t setcache__hash_seed;

static inline uint64_t setcache__mix(uint64_t h)
{
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ULL;
    h ^= h >> 32;
    return h;
}

static inline unsigned setcache__hash(const void *key, size_t len)
{
    const unsigned char *p = (const unsigned char *)key;
    uint64_t h = setcache__hash_seed ^ (len * 0x9e3779b97f4a7c15ULL);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = setcache__mix(h ^ w) + 0x9e3779b97f4a7c15ULL;
        p += 8;
        len -= 8;
    }
    /* the last 0-7 bytes, read without a byte-wise copy (which would stall
     * the load that follows it): two overlapping 4-byte reads cover 4-7,
     * first, middle and last byte cover 1-3 */
    uint64_t w = 0;
    if (len >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + len - 4, 4);
        w = lo | ((uint64_t)hi << 32);
    } else if (len > 0) {
        w = p[0] | ((uint64_t)p[len / 2] << 8) | ((uint64_t)p[len - 1] << 16);
    }
    h = setcache__mix(h ^ w ^ ((uint64_t)len << 56));
    return (unsigned)(h ^ (h >> 32));
}

#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = setcache__hash((keyptr), (keylen)))

#endif
