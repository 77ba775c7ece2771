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
#ifdef SETCACHE_TEST_HOOKS
    void *probe = setcache__t_malloc(1); /* vasprintf's allocation, counted */
    if (!probe) {
        return NULL;
    }
    free(probe);
#endif
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

#ifdef SETCACHE_TEST_HOOKS
/* The allocation hooks of the test build. setcache__t_fail_alloc(k) makes
 * the k-th allocation from now fail (once); the distinct call sites that
 * were failed are kept, so that a sweep can say how many it reached. */
static atomic_long countdown;
static atomic_size_t nsites;
static atomic_uintptr_t sites[4096]; /* threads fail allocations concurrently */

static bool fail_now(void *site)
{
    if (atomic_load_explicit(&countdown, memory_order_relaxed) <= 0 ||
        atomic_fetch_sub(&countdown, 1) != 1) {
        return false;
    }
    size_t n = atomic_load(&nsites);
    for (size_t i = 0; i < n && i < 4096; i++) {
        if (atomic_load_explicit(&sites[i], memory_order_relaxed) == (uintptr_t)site) {
            return true;
        }
    }
    size_t slot = atomic_fetch_add(&nsites, 1);
    if (slot < 4096) {
        atomic_store_explicit(&sites[slot], (uintptr_t)site, memory_order_relaxed);
    }
    return true;
}

void setcache__t_fail_alloc(long k)
{
    atomic_store(&countdown, k);
}

bool setcache__t_alloc_failed(void)
{
    return atomic_load(&countdown) <= 0;
}

size_t setcache__t_alloc_sites(void)
{
    size_t n = atomic_load(&nsites);
    return n < 4096 ? n : 4096;
}

void *setcache__t_malloc(size_t n)
{
    return fail_now(__builtin_return_address(0)) ? NULL : (malloc)(n);
}

void *setcache__t_calloc(size_t n, size_t size)
{
    return fail_now(__builtin_return_address(0)) ? NULL : (calloc)(n, size);
}

void *setcache__t_realloc(void *p, size_t n)
{
    return fail_now(__builtin_return_address(0)) ? NULL : (realloc)(p, n);
}

char *setcache__t_strdup(const char *s)
{
    return fail_now(__builtin_return_address(0)) ? NULL : (strdup)(s);
}

int setcache__t_posix_memalign(void **p, size_t align, size_t n)
{
    return fail_now(__builtin_return_address(0)) ? 12 /* ENOMEM */ : (posix_memalign)(p, align, n);
}
#endif

/* A PostgreSQL array literal of text, {"a","b\"c"}, for a text[] parameter.
 * malloc'd; NULL when out of memory. */
char *setcache__text_array(const char *const *items, size_t n)
{
    size_t need = 3;
    for (size_t i = 0; i < n; i++) {
        need += 2 * strlen(items[i]) + 3;
    }
    char *out = malloc(need);
    if (!out) {
        return NULL;
    }
    char *p = out;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }
        *p++ = '"';
        for (const char *s = items[i]; *s; s++) {
            if (*s == '"' || *s == '\\') {
                *p++ = '\\';
            }
            *p++ = *s;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return out;
}
