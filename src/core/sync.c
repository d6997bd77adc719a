/*
 * sync.c: process-shared locks, semaphores, events, conditions and
 * barriers living in shared memory.  See sync.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include "mproc.h"

#define LOAD(p)     __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define ADD(p, v)   __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)
#define SUB(p, v)   __atomic_sub_fetch((p), (v), __ATOMIC_SEQ_CST)

/* Generations need to differ, not to be secret: a xorshift seeded once. */
static uint32_t next_gen(void) {
  static uint32_t x;
  if (x == 0) x = mproc_random32();
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return x ? x : 1;
}

void mproc_obj_init(mproc_objhdr *h, int kind, size_t size) {
  h->kind = (uint16_t)kind;
  h->flags = 0;
  h->gen = next_gen();
  h->size = (uint32_t)size;
  __atomic_store_n(&h->magic, MPROC_OBJ_MAGIC, __ATOMIC_RELEASE);
}

/* Seconds left until `deadline` (< 0: none), at least 0. */
static double left_until(double deadline) {
  double l;
  if (deadline < 0) return -1;
  l = deadline - mproc_now();
  return l > 0 ? l : 0;
}

static double deadline_of(double timeout) {
  return timeout < 0 ? -1 : mproc_now() + timeout;
}

/* {======================================================================
 * Futex words
 * ======================================================================= */

#ifdef __linux__
int mproc_futex_wait(uint32_t *addr, uint32_t val, double timeout) {
  struct timespec ts, *tp = NULL;
  long r;
  if (timeout >= 0) {
    if (timeout > 1e6) timeout = 1e6;
    ts.tv_sec = (time_t)timeout;
    ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
    tp = &ts;
  }
  /* relative timeouts of FUTEX_WAIT run on CLOCK_MONOTONIC */
  r = syscall(SYS_futex, addr, FUTEX_WAIT, val, tp, NULL, 0);
  if (r == 0 || errno == EAGAIN) return 0;
  return errno;   /* ETIMEDOUT, EINTR */
}

void mproc_futex_wake(uint32_t *addr, int n) {
  syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
}
#else
/* No futex: poll the word every millisecond. */
int mproc_futex_wait(uint32_t *addr, uint32_t val, double timeout) {
  double d = deadline_of(timeout);
  while (LOAD(addr) == val) {
    double l = left_until(d);
    if (l == 0) return ETIMEDOUT;
    mproc_sleep(l < 0 || l > 0.001 ? 0.001 : l);
  }
  return 0;
}

void mproc_futex_wake(uint32_t *addr, int n) { (void)addr; (void)n; }
#endif

/* }====================================================================== */

/* {======================================================================
 * Robust mutexes
 * ======================================================================= */

static int mutex_init(pthread_mutex_t *m, int recursive) {
  pthread_mutexattr_t a;
  int rc = pthread_mutexattr_init(&a);
  if (rc) return rc;
  rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (!rc) rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (!rc) rc = pthread_mutexattr_settype(&a, recursive ? PTHREAD_MUTEX_RECURSIVE
                                                        : PTHREAD_MUTEX_NORMAL);
  if (!rc) rc = pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  return rc;
}

static int timed_lock(pthread_mutex_t *m, double timeout) {
  struct timespec ts;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
  clock_gettime(CLOCK_MONOTONIC, &ts);
#else
  clock_gettime(CLOCK_REALTIME, &ts);   /* no clocklock: the best we have */
#endif
  if (timeout > 1e6) timeout = 1e6;
  ts.tv_sec += (time_t)timeout;
  ts.tv_nsec += (long)((timeout - (double)(time_t)timeout) * 1e9);
  if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
  return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#else
  return pthread_mutex_timedlock(m, &ts);
#endif
}

/* Internal mutexes guard a few words for a few instructions: a holder that
 * died there leaves them usable. */
static void ilock(pthread_mutex_t *m) {
  if (pthread_mutex_lock(m) == EOWNERDEAD) pthread_mutex_consistent(m);
}

static void iunlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

/* }====================================================================== */

/* {======================================================================
 * Lock and RLock
 * ======================================================================= */

int mproc_lock_init(mproc_lock *l, int recursive) {
  int rc = mutex_init(&l->m, recursive);
  if (rc) return rc;
  mproc_obj_init(&l->h, recursive ? MPROC_K_RLOCK : MPROC_K_LOCK, sizeof *l);
  return 0;
}

int mproc_lock_mine(const mproc_lock *l) {
  return __atomic_load_n(&l->owner, __ATOMIC_RELAXED) == (uint32_t)mproc_self();
}

int mproc_lock_acquire(mproc_lock *l, double timeout, int *died) {
  uint32_t me = (uint32_t)mproc_self();
  int rc = mproc_lock_try(l, died);
  if (rc != EBUSY || timeout == 0) return rc == EBUSY ? ETIMEDOUT : rc;
  if (l->h.kind == MPROC_K_LOCK && __atomic_load_n(&l->owner, __ATOMIC_RELAXED) == me) {
    /* not recursive: the holder waits like anyone else, in vain */
    if (timeout > 0) mproc_sleep(timeout);
    else pause();
    return ETIMEDOUT;
  }
  if (timeout < 0) rc = pthread_mutex_lock(&l->m);
  else rc = timed_lock(&l->m, timeout);
  if (rc == EOWNERDEAD) {
    pthread_mutex_consistent(&l->m);
    *died = 1;
    l->count = 0;
    rc = 0;
  }
  if (rc) return rc == EBUSY ? ETIMEDOUT : rc;
  l->count++;
  __atomic_store_n(&l->owner, me, __ATOMIC_RELAXED);
  return 0;
}

/* A holder on another CPU usually lets go within a microsecond: spin a
 * little (reading our owner word, not hammering the mutex) before going
 * to sleep in the kernel. */
#define SPINS 200

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

int mproc_lock_spin(mproc_lock *l, int *died) {
  int i, rc = EBUSY;
  for (i = 0; i < SPINS && rc == EBUSY; i++) {
    if (__atomic_load_n(&l->owner, __ATOMIC_RELAXED) != 0) {
      cpu_relax();
      continue;
    }
    rc = mproc_lock_try(l, died);
  }
  return rc;
}

uint32_t mproc_rlock_release_all(mproc_lock *l) {
  uint32_t n = 0;
  while (mproc_lock_mine(l) && l->count > 0) {
    if (mproc_lock_release(l) != 0) break;
    n++;
  }
  return n;
}

/* After one successful acquire: take the remaining depth - 1 levels. */
void mproc_rlock_restore(mproc_lock *l, uint32_t depth) {
  int died;
  while (depth-- > 1) mproc_lock_acquire(l, 0, &died);
}

/* }====================================================================== */

/* {======================================================================
 * Semaphore
 * ======================================================================= */

void mproc_sem_init(mproc_sem *s, uint32_t value, int bounded) {
  s->value = value;
  s->bounded = bounded ? 1 : 0;
  s->maxvalue = value;
  mproc_obj_init(&s->h, MPROC_K_SEM, sizeof *s);
}

int mproc_sem_acquire(mproc_sem *s, double timeout) {
  double d = -2;   /* computed when first needed: the fast path reads no clock */
  for (;;) {
    uint32_t v = LOAD(&s->value);
    double l;
    int rc;
    while (v > 0)
      if (__atomic_compare_exchange_n(&s->value, &v, v - 1, 0, __ATOMIC_SEQ_CST,
                                      __ATOMIC_SEQ_CST))
        return 0;
    if (timeout == 0) return ETIMEDOUT;
    if (d == -2) d = deadline_of(timeout);
    l = left_until(d);
    if (l == 0) return ETIMEDOUT;
    ADD(&s->waiters, 1);
    rc = mproc_futex_wait(&s->value, 0, l);
    SUB(&s->waiters, 1);
    if (rc == EINTR) return EINTR;
  }
}

int mproc_sem_release(mproc_sem *s, uint32_t n) {
  uint32_t v = LOAD(&s->value);
  for (;;) {
    if ((s->bounded && (uint64_t)v + n > s->maxvalue) || (uint64_t)v + n > UINT32_MAX)
      return ERANGE;
    if (__atomic_compare_exchange_n(&s->value, &v, v + n, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST))
      break;
  }
  if (LOAD(&s->waiters) > 0) mproc_futex_wake(&s->value, n > INT_MAX ? INT_MAX : (int)n);
  return 0;
}

/* }====================================================================== */

/* {======================================================================
 * Event
 * ======================================================================= */

void mproc_event_init(mproc_event *e) {
  mproc_obj_init(&e->h, MPROC_K_EVENT, sizeof *e);
}

int mproc_event_wait(mproc_event *e, double timeout) {
  double d = deadline_of(timeout);
  while (LOAD(&e->flag) == 0) {
    double l = left_until(d);
    int rc;
    if (l == 0) return ETIMEDOUT;
    rc = mproc_futex_wait(&e->flag, 0, l);
    if (rc == EINTR) return EINTR;
  }
  return 0;
}

void mproc_event_set(mproc_event *e) {
  if (__atomic_exchange_n(&e->flag, 1, __ATOMIC_SEQ_CST) == 0)
    mproc_futex_wake(&e->flag, INT_MAX);
}

void mproc_event_clear(mproc_event *e) { STORE(&e->flag, 0); }

/* }====================================================================== */

/* {======================================================================
 * Condition: notify grants wakeups that registered waiters take (the
 * scheme of the old LinuxThreads/glibc condvars, on a futex word).
 * ======================================================================= */

int mproc_cond_init(mproc_cond *c) {
  int rc = mutex_init(&c->m, 0);
  if (rc) return rc;
  mproc_obj_init(&c->h, MPROC_K_COND, sizeof *c);
  return 0;
}

uint32_t mproc_cond_enter(mproc_cond *c) {
  uint32_t ticket;
  ilock(&c->m);
  c->waiters++;
  ticket = c->wakeup;
  iunlock(&c->m);
  return ticket;
}

/* Under c->m: takes a wakeup granted since `ticket` was issued. */
static int take_wakeup(mproc_cond *c, uint32_t ticket) {
  if (c->wakeup == ticket || c->woken == c->wakeup) return 0;
  c->woken++;
  c->waiters--;
  return 1;
}

int mproc_cond_wait(mproc_cond *c, uint32_t ticket, double timeout) {
  uint32_t seq;
  int got;
  ilock(&c->m);
  got = take_wakeup(c, ticket);
  seq = c->seq;
  iunlock(&c->m);
  if (got) return 0;
  mproc_futex_wait(&c->seq, seq, timeout);
  ilock(&c->m);
  got = take_wakeup(c, ticket);
  iunlock(&c->m);
  return got ? 0 : ETIMEDOUT;
}

int mproc_cond_leave(mproc_cond *c, uint32_t ticket) {
  int got;
  ilock(&c->m);
  got = take_wakeup(c, ticket);
  if (!got && c->waiters > 0) c->waiters--;
  iunlock(&c->m);
  return got;
}

uint32_t mproc_cond_notify(mproc_cond *c, int64_t n) {
  uint32_t k;
  ilock(&c->m);
  k = c->waiters - (c->wakeup - c->woken);   /* waiters not granted yet */
  if (n >= 0 && (uint64_t)n < k) k = (uint32_t)n;
  if (k > 0) {
    c->wakeup += k;
    ADD(&c->seq, 1);
  }
  iunlock(&c->m);
  if (k > 0) mproc_futex_wake(&c->seq, INT_MAX);
  return k;
}

/* }====================================================================== */

/* {======================================================================
 * Barrier
 * ======================================================================= */

int mproc_barrier_init(mproc_barrier *b, uint32_t parties, double timeout) {
  int rc = mutex_init(&b->m, 0);
  if (rc) return rc;
  b->parties = parties;
  b->timeout = timeout;
  b->reset_gen = UINT32_MAX;
  mproc_obj_init(&b->h, MPROC_K_BARRIER, sizeof *b);
  return 0;
}

int mproc_barrier_arrive(mproc_barrier *b, uint32_t *index, uint32_t *gen, int *last) {
  ilock(&b->m);
  if (b->broken) { iunlock(&b->m); return EPIPE; }
  *gen = b->gen;
  *index = ++b->count;
  *last = b->count >= b->parties;
  iunlock(&b->m);
  return 0;
}

void mproc_barrier_pass(mproc_barrier *b) {
  ilock(&b->m);
  b->gen++;
  b->count = 0;
  ADD(&b->seq, 1);
  iunlock(&b->m);
  mproc_futex_wake(&b->seq, INT_MAX);
}

int mproc_barrier_wait(mproc_barrier *b, uint32_t gen, double timeout) {
  double d = deadline_of(timeout);
  for (;;) {
    uint32_t seq;
    double l;
    ilock(&b->m);
    if (b->gen != gen) {
      int rc = b->reset_gen == gen ? EPIPE : 0;
      iunlock(&b->m);
      return rc;
    }
    if (b->broken) { iunlock(&b->m); return EPIPE; }
    seq = b->seq;
    iunlock(&b->m);
    l = left_until(d);
    if (l == 0) return ETIMEDOUT;
    if (mproc_futex_wait(&b->seq, seq, l) == EINTR) return ETIMEDOUT;
  }
}

void mproc_barrier_abort(mproc_barrier *b) {
  ilock(&b->m);
  b->broken = 1;
  ADD(&b->seq, 1);
  iunlock(&b->m);
  mproc_futex_wake(&b->seq, INT_MAX);
}

void mproc_barrier_reset(mproc_barrier *b) {
  ilock(&b->m);
  b->reset_gen = b->gen;   /* its waiters see the barrier broken */
  b->gen++;
  b->count = 0;
  b->broken = 0;
  ADD(&b->seq, 1);
  iunlock(&b->m);
  mproc_futex_wake(&b->seq, INT_MAX);
}

uint32_t mproc_barrier_waiting(mproc_barrier *b) {
  uint32_t n;
  ilock(&b->m);
  n = b->broken ? 0 : b->count;
  iunlock(&b->m);
  return n;
}

/* }====================================================================== */
