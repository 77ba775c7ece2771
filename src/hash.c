/*
 * hash.c - the seed of the table hash (hash.h), drawn once per process from
 * /dev/urandom (or the clock and pid) before the first handle opens, so
 * that collisions can't be planned from outside.
 *
 * Owns: setcache__hash_seed (written once, under pthread_once). No locks.
 */
#include "internal.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

uint64_t setcache__hash_seed = 0x243f6a8885a308d3ULL;

static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

/* Seed the table hash once per process, before any table exists. */
static void seed_hash(void)
{
    uint64_t s = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&s, sizeof s, 1, f) != 1) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    if (f) {
        fclose(f);
    }
    setcache__hash_seed ^= s;
}

void setcache__hash_seed_once(void)
{
    pthread_once(&seed_once, seed_hash);
}
