/*
 * stats.c - the handle's counters and its log callback.
 *
 * Owns: c->stripes, counters in cache-line-sized stripes, so that threads
 * never write the same line: a thread adds to its own stripe (round robin),
 * a reader of the statistics sums them. No locks (relaxed atomics).
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

static atomic_uint next_stripe;
static _Thread_local unsigned my_stripe = UINT32_MAX;

void setcache__count(setcache *c, int which, uint64_t n)
{
    if (my_stripe == UINT32_MAX) {
        my_stripe = atomic_fetch_add(&next_stripe, 1) % SC_NSTRIPES;
    }
    atomic_fetch_add_explicit(&c->stripes[my_stripe].n[which], n, memory_order_relaxed);
}

uint64_t setcache__counter(setcache *c, int which)
{
    uint64_t sum = 0;
    for (int i = 0; i < SC_NSTRIPES; i++) {
        sum += atomic_load_explicit(&c->stripes[i].n[which], memory_order_relaxed);
    }
    return sum;
}

void setcache__log(setcache *c, int level, const char *fmt, ...)
{
    if (!c->log) {
        return;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    c->log(c->log_arg, level, msg);
}
