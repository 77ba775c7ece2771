/*
 * util.c - small helpers every module uses: the monotonic clock, deadlines
 * for timed waits, formatted allocation, doubling growth of arrays, and
 * trimming of messages.
 *
 * Owns: nothing. No locks.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double setcache__mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

struct timespec setcache__deadline(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

char *setcache__aprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    if (vasprintf(&out, fmt, ap) < 0) {
        out = NULL;
    }
    va_end(ap);
    return out;
}

bool setcache__grow(void *arrp, size_t *cap, size_t first, size_t elem)
{
    void *arr;
    memcpy(&arr, arrp, sizeof arr);
    size_t nc = *cap ? *cap * 2 : first;
    void *grown = realloc(arr, nc * elem);
    if (!grown) {
        return false;
    }
    memcpy(arrp, &grown, sizeof grown); /* the caller's pointer now owns it */
    *cap = nc;
    // cppcheck-suppress memleak
    return true;
}

size_t setcache__trim_len(const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ')) {
        n--;
    }
    return n;
}

void setcache__cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}
