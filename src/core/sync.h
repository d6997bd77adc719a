/* sync.h: the sync part of the C core (no lua.h); included by mproc.h.
 *
 * Process-shared synchronisation objects that live in shared memory (slab
 * objects of src/core/shared.h).  Locks are robust process-shared pthread mutexes: a
 * holder that dies hands the lock to the next acquirer with EOWNERDEAD
 * (reported as `died`).  Everything else sleeps on a futex word (Linux;
 * elsewhere short sleeps), so a waiter that dies leaves nothing stuck, and
 * every timeout is measured on CLOCK_MONOTONIC.
 *
 * Blocking calls take a timeout (seconds; < 0 forever) and return 0 on
 * success, ETIMEDOUT when it ran out, or another errno value.  Bindings
 * wait in short slices so that signals reach Lua. */
#ifndef MPROC_SYNC_H
#define MPROC_SYNC_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include "shared.h"

enum {
  MPROC_K_LOCK = 1, MPROC_K_RLOCK, MPROC_K_SEM, MPROC_K_EVENT, MPROC_K_COND,
  MPROC_K_BARRIER, MPROC_K_VALUE, MPROC_K_ARRAY
};

typedef struct mproc_lock {
  mproc_objhdr h;
  pthread_mutex_t m;
  uint32_t owner;          /* pid of the holder, 0 when free */
  uint32_t count;          /* RLock recursion depth */
} mproc_lock;

typedef struct mproc_sem {
  mproc_objhdr h;
  uint32_t value, waiters;
  uint32_t bounded, maxvalue;
} mproc_sem;

typedef struct mproc_event {
  mproc_objhdr h;
  uint32_t flag;
} mproc_event;

typedef struct mproc_cond {
  mproc_objhdr h;
  pthread_mutex_t m;
  uint32_t seq;            /* futex word: bumped by every notify */
  uint32_t waiters;        /* registered, not yet left */
  uint32_t wakeup, woken;  /* notifications granted / taken */
} mproc_cond;

typedef struct mproc_barrier {
  mproc_objhdr h;
  pthread_mutex_t m;
  uint32_t parties, count, broken;
  uint32_t gen, reset_gen, seq;
  double timeout;          /* default wait timeout, < 0: none */
} mproc_barrier;

/* Fills an object header. */
void mproc_obj_init(mproc_objhdr *h, int kind, size_t size);

/* Futex-style sleep while *addr == val (at most `timeout` s), and wake. */
int mproc_futex_wait(uint32_t *addr, uint32_t val, double timeout);
void mproc_futex_wake(uint32_t *addr, int n);

/* Locks (Lock: recursive = 0; RLock: 1).  acquire: 0 (and *died = 1 when
 * the previous holder died holding it), ETIMEDOUT or an errno.  release:
 * 0, EPERM when this process does not hold it. */
int mproc_lock_init(mproc_lock *l, int recursive);
int mproc_lock_acquire(mproc_lock *l, double timeout, int *died);
/* Spins briefly for a lock held by a running process: 0 or EBUSY. */
int mproc_lock_spin(mproc_lock *l, int *died);
/* RLock: releases every level at once and returns the depth (for Condition
 * waits); restore re-takes `depth` levels after an acquire. */
uint32_t mproc_rlock_release_all(mproc_lock *l);
void mproc_rlock_restore(mproc_lock *l, uint32_t depth);
/* Does this process hold it? */
int mproc_lock_mine(const mproc_lock *l);

/* The uncontended paths, inline for the bindings' hot path (src/core/shared.h's
 * mproc_self_pid is this process's pid).  try: 0 (and *died), EBUSY, or an
 * errno; it never blocks.  release: 0 or EPERM when not held here. */
static inline int mproc_lock_try(mproc_lock *l, int *died) {
  uint32_t me = (uint32_t)mproc_self_pid;
  int rc;
  *died = 0;
  if (__atomic_load_n(&l->owner, __ATOMIC_RELAXED) == me && l->h.kind == MPROC_K_LOCK)
    return EBUSY;   /* not recursive: its holder cannot take it again */
  rc = pthread_mutex_trylock(&l->m);
  if (rc == EOWNERDEAD) {
    pthread_mutex_consistent(&l->m);
    *died = 1;
    l->count = 0;
    rc = 0;
  }
  if (rc) return rc;
  l->count++;
  __atomic_store_n(&l->owner, me, __ATOMIC_RELAXED);
  return 0;
}

static inline int mproc_lock_release(mproc_lock *l) {
  uint32_t me = (uint32_t)mproc_self_pid;
  int rc;
  if (__atomic_load_n(&l->owner, __ATOMIC_RELAXED) != me || l->count == 0) return EPERM;
  if (--l->count == 0) __atomic_store_n(&l->owner, 0, __ATOMIC_RELAXED);
  rc = pthread_mutex_unlock(&l->m);
  if (rc) {   /* should not happen: put the books back */
    l->count++;
    __atomic_store_n(&l->owner, me, __ATOMIC_RELAXED);
  }
  return rc;
}

/* Semaphores: acquire 0 / ETIMEDOUT; release 0, or ERANGE when a bounded
 * semaphore would go above its initial value. */
void mproc_sem_init(mproc_sem *s, uint32_t value, int bounded);
int mproc_sem_acquire(mproc_sem *s, double timeout);
int mproc_sem_release(mproc_sem *s, uint32_t n);

void mproc_event_init(mproc_event *e);
int mproc_event_wait(mproc_event *e, double timeout);
void mproc_event_set(mproc_event *e);
void mproc_event_clear(mproc_event *e);

/* Condition variable core (the user lock is handled by the caller):
 * enter registers a waiter and returns its ticket; a waiter may only take
 * a notification granted after it registered, so one that re-registers
 * cannot steal what was meant for an older waiter.  wait returns 0 when
 * notified (the waiter has left), ETIMEDOUT when the slice ran out (still
 * registered); leave ends a wait that timed out and returns 1 if a
 * notification came after all. */
int mproc_cond_init(mproc_cond *c);
uint32_t mproc_cond_enter(mproc_cond *c);
int mproc_cond_wait(mproc_cond *c, uint32_t ticket, double timeout);
int mproc_cond_leave(mproc_cond *c, uint32_t ticket);
/* Wakes up to n waiters (n < 0: all); returns how many were notified. */
uint32_t mproc_cond_notify(mproc_cond *c, int64_t n);

/* Barrier.  arrive: 0 with *index (1..parties), *gen and *last (1 when the
 * caller completed the party and must call pass, after running an action),
 * or EPIPE when broken.  wait: 0 passed, EPIPE broken (also after reset),
 * ETIMEDOUT the slice ran out. */
int mproc_barrier_init(mproc_barrier *b, uint32_t parties, double timeout);
int mproc_barrier_arrive(mproc_barrier *b, uint32_t *index, uint32_t *gen, int *last);
void mproc_barrier_pass(mproc_barrier *b);
int mproc_barrier_wait(mproc_barrier *b, uint32_t gen, double timeout);
void mproc_barrier_abort(mproc_barrier *b);
void mproc_barrier_reset(mproc_barrier *b);
uint32_t mproc_barrier_waiting(mproc_barrier *b);

#endif
