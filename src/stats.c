/*
 * stats.c - the handle's counters and its log callback.
 *
 * Owns: c->stripes, counters in cache-line-sized stripes, so that threads
 * never write the same line: a thread adds to its own stripe (round robin),
 * a reader of the statistics sums them. No locks (relaxed atomics).
 * And c->fast: the hits of lock-free reads (bound references, snapshots),
 * one counter per thread and handle that only that thread writes (a load
 * and a store, no lock prefix: exact, and no line shared with another
 * writer); c->fast.mu (taken alone) guards the list of them.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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

/* ---- per-thread hit counters ---- */

static atomic_uint_fast64_t next_gen = 1;
_Thread_local uint64_t setcache__tl_gen;
_Thread_local sc_tcount *setcache__tl_count;

/* This thread's counter for c, made on its first fast read of c (NULL: no
 * memory; the hit goes uncounted). */
sc_tcount *setcache__fast_slot(setcache *c)
{
    pthread_t me = pthread_self();
    pthread_mutex_lock(&c->fast.mu);
    sc_tcount *t = c->fast.counts;
    while (t && !pthread_equal(t->owner, me)) {
        t = t->next;
    }
    void *mem = NULL;
    if (!t && posix_memalign(&mem, SC_LINE, sizeof *t) == 0 && (t = mem) != NULL) {
        atomic_init(&t->n, 0);
        t->owner = me;
        t->next = c->fast.counts;
        c->fast.counts = t;
    }
    pthread_mutex_unlock(&c->fast.mu);
    if (t) {
        setcache__tl_gen = c->fast.gen;
        setcache__tl_count = t;
    }
    return t;
}

uint64_t setcache__fast_hits(setcache *c)
{
    uint64_t n = 0;
    pthread_mutex_lock(&c->fast.mu);
    for (sc_tcount *t = c->fast.counts; t; t = t->next) {
        n += atomic_load_explicit(&t->n, memory_order_relaxed);
    }
    pthread_mutex_unlock(&c->fast.mu);
    return n;
}

void setcache__stats_init(setcache *c)
{
    pthread_mutex_init(&c->fast.mu, NULL);
    c->fast.gen = atomic_fetch_add(&next_gen, 1); /* never 0, never reused */
}

void setcache__stats_destroy(setcache *c, bool own_process)
{
    for (sc_tcount *t = c->fast.counts, *n; t; t = n) {
        n = t->next;
        free(t);
    }
    c->fast.counts = NULL;
    if (own_process) {
        pthread_mutex_destroy(&c->fast.mu);
    }
}
