/*
 * brlock.c - the read-mostly lock (sc_brlock): each reading thread takes
 * only its own slot's mutex, on its own pair of cache lines, so readers on
 * different cores never write a shared line; a writer takes every slot in
 * order. Used by the cache's shards and by the definitions table.
 *
 * Owns: the round-robin slot counter and each thread's slot number.
 * Locks: only the slots of the lock it is given.
 */
#include "internal.h"

static atomic_uint next_rslot;
_Thread_local int setcache__my_rslot = -1;

/* The first lock of a thread: give it the next slot, round robin. */
int setcache__rslot_assign(void)
{
    setcache__my_rslot = (int)(atomic_fetch_add(&next_rslot, 1) % SC_RSLOTS);
    return setcache__my_rslot;
}

void setcache__br_init(sc_brlock *l)
{
    for (int i = 0; i < SC_RSLOTS; i++) {
        pthread_mutex_init(&l->slot[i].mu, NULL);
        atomic_init(&l->slot[i].hits, 0);
    }
}

void setcache__br_destroy(sc_brlock *l)
{
    for (int i = 0; i < SC_RSLOTS; i++) {
        pthread_mutex_destroy(&l->slot[i].mu);
    }
}

void setcache__br_rdlock(sc_brlock *l)
{
    pthread_mutex_lock(&l->slot[setcache__rslot()].mu);
}

void setcache__br_rdunlock(sc_brlock *l)
{
    pthread_mutex_unlock(&l->slot[setcache__rslot()].mu);
}

void setcache__br_wrlock(sc_brlock *l)
{
    for (int i = 0; i < SC_RSLOTS; i++) {
        pthread_mutex_lock(&l->slot[i].mu);
    }
}

void setcache__br_wrunlock(sc_brlock *l)
{
    for (int i = SC_RSLOTS - 1; i >= 0; i--) {
        pthread_mutex_unlock(&l->slot[i].mu);
    }
}
