/* The process-shared objects of src/core/sync.c from plain C, living in a slab
 * segment shared with forked children: a holder or waiter SIGKILLed at any
 * point leaves nothing stuck, every wait honours its timeout. */
#define _GNU_SOURCE
#include "check.h"
#include "mproc.h"

static void *obj(size_t n) {
  mproc_seg *seg;
  void *p = mproc_slab_alloc(n, &seg);
  CHECK(p != NULL);
  return p;
}

static void lock_excludes_and_times_out(void) {
  mproc_lock *l = obj(sizeof *l);
  int died = 0, fds[2];
  char c;
  pid_t p;
  double t0;
  CHECK_EQ(mproc_lock_init(l, 0), 0);
  CHECK_EQ(pipe(fds), 0);
  p = fork();
  if (p == 0) {
    int d;
    if (mproc_lock_acquire(l, 1, &d) != 0) _exit(1);
    if (write(fds[1], "1", 1) != 1) _exit(2);
    check_sleep(0.3);
    _exit(mproc_lock_release(l));
  }
  CHECK_EQ(read(fds[0], &c, 1), 1);
  t0 = mproc_now();
  CHECK_EQ(mproc_lock_acquire(l, 0.05, &died), ETIMEDOUT);
  CHECK(mproc_now() - t0 >= 0.04);
  CHECK_EQ(mproc_lock_acquire(l, 5, &died), 0);   /* released by the child */
  CHECK_EQ(died, 0);
  CHECK(mproc_lock_mine(l));
  CHECK_EQ(mproc_lock_release(l), 0);
  CHECK_EQ(mproc_lock_release(l), EPERM);          /* not held any more */
  CHECK_EQ(check_wait(p), 0);
  close(fds[0]);
  close(fds[1]);
}

static void holder_death_hands_the_lock_on(void) {
  mproc_lock *l = obj(sizeof *l);
  int died = 0, fds[2];
  char c;
  pid_t p;
  CHECK_EQ(mproc_lock_init(l, 1), 0);
  CHECK_EQ(pipe(fds), 0);
  p = fork();
  if (p == 0) {
    int d;
    mproc_lock_acquire(l, 1, &d);
    mproc_lock_acquire(l, 1, &d);               /* two levels deep */
    if (write(fds[1], "1", 1) != 1) _exit(2);
    pause();
    _exit(0);
  }
  CHECK_EQ(read(fds[0], &c, 1), 1);
  kill(p, SIGKILL);
  CHECK_EQ(check_wait(p), -SIGKILL);
  CHECK_EQ(mproc_lock_acquire(l, 2, &died), 0);
  CHECK_EQ(died, 1);                               /* told, and the depth reset */
  CHECK_EQ(l->count, 1);
  CHECK_EQ(mproc_lock_release(l), 0);
  CHECK_EQ(mproc_lock_acquire(l, 0, &died), 0);
  CHECK_EQ(died, 0);
  CHECK_EQ(mproc_lock_release(l), 0);
  close(fds[0]);
  close(fds[1]);
}

static void semaphore_counts_and_bounds(void) {
  mproc_sem *s = obj(sizeof *s);
  pid_t p;
  mproc_sem_init(s, 1, 1);
  CHECK_EQ(mproc_sem_acquire(s, 0), 0);
  CHECK_EQ(mproc_sem_acquire(s, 0.05), ETIMEDOUT);
  p = fork();
  if (p == 0) { check_sleep(0.1); _exit(mproc_sem_release(s, 1)); }
  CHECK_EQ(mproc_sem_acquire(s, 5), 0);            /* woken by the child */
  CHECK_EQ(check_wait(p), 0);
  CHECK_EQ(mproc_sem_release(s, 1), 0);
  CHECK_EQ(mproc_sem_release(s, 1), ERANGE);       /* bounded at 1 */
}

static void killed_waiters_leave_nothing_stuck(void) {
  mproc_sem *s = obj(sizeof *s);
  mproc_event *e = obj(sizeof *e);
  pid_t w[4], ok;
  int i;
  mproc_sem_init(s, 0, 0);
  mproc_event_init(e);
  for (i = 0; i < 4; i++) {
    w[i] = fork();
    if (w[i] == 0) _exit(i % 2 ? mproc_event_wait(e, 30) : mproc_sem_acquire(s, 30));
  }
  ok = fork();                                     /* a survivor of each kind */
  if (ok == 0) _exit(mproc_sem_acquire(s, 10) || mproc_event_wait(e, 10));
  check_sleep(0.3);
  for (i = 0; i < 4; i++) kill(w[i], SIGKILL);
  for (i = 0; i < 4; i++) CHECK_EQ(check_wait(w[i]), -SIGKILL);
  mproc_event_set(e);
  CHECK_EQ(mproc_sem_release(s, 1), 0);
  CHECK_EQ(check_wait(ok), 0);
  CHECK_EQ(mproc_event_wait(e, 0), 0);
  mproc_event_clear(e);
  CHECK_EQ(mproc_event_wait(e, 0.02), ETIMEDOUT);
}

static void condition_notifies_registered_waiters_only(void) {
  mproc_cond *c = obj(sizeof *c);
  uint32_t t;
  pid_t p, dead;
  CHECK_EQ(mproc_cond_init(c), 0);
  CHECK_EQ(mproc_cond_notify(c, 1), 0);            /* nobody waits: lost */
  dead = fork();
  if (dead == 0) { uint32_t k = mproc_cond_enter(c); mproc_cond_wait(c, k, 30); _exit(0); }
  check_sleep(0.2);
  kill(dead, SIGKILL);
  CHECK_EQ(check_wait(dead), -SIGKILL);
  p = fork();
  if (p == 0) {
    uint32_t k = mproc_cond_enter(c);
    int r;
    while ((r = mproc_cond_wait(c, k, 0.05)) == ETIMEDOUT) {}
    _exit(r);
  }
  check_sleep(0.2);
  CHECK(mproc_cond_notify(c, -1) >= 1);            /* the dead one may count */
  CHECK_EQ(check_wait(p), 0);
  t = mproc_cond_enter(c);
  CHECK_EQ(mproc_cond_wait(c, t, 0.02), ETIMEDOUT);
  CHECK_EQ(mproc_cond_leave(c, t), 0);
}

static void barrier_passes_parties_and_breaks_on_abort(void) {
  mproc_barrier *b = obj(sizeof *b);
  uint32_t idx, gen;
  int last, i;
  pid_t p[2];
  CHECK_EQ(mproc_barrier_init(b, 3, -1), 0);
  for (i = 0; i < 2; i++) {
    p[i] = fork();
    if (p[i] == 0) {
      uint32_t x, g;
      int l, r;
      if (mproc_barrier_arrive(b, &x, &g, &l) != 0) _exit(9);
      if (l) { mproc_barrier_pass(b); _exit(0); }
      while ((r = mproc_barrier_wait(b, g, 0.05)) == ETIMEDOUT) {}
      _exit(r);
    }
  }
  check_sleep(0.2);
  CHECK_EQ(mproc_barrier_arrive(b, &idx, &gen, &last), 0);
  if (last) mproc_barrier_pass(b);
  else while (mproc_barrier_wait(b, gen, 0.05) == ETIMEDOUT) {}
  for (i = 0; i < 2; i++) CHECK_EQ(check_wait(p[i]), 0);
  CHECK_EQ(mproc_barrier_arrive(b, &idx, &gen, &last), 0);
  mproc_barrier_abort(b);
  CHECK_EQ(mproc_barrier_wait(b, gen, 0.05), EPIPE);
}

int main(void) {
  RUN(lock_excludes_and_times_out);
  RUN(holder_death_hands_the_lock_on);
  RUN(semaphore_counts_and_bounds);
  RUN(killed_waiters_leave_nothing_stuck);
  RUN(condition_notifies_registered_waiters_only);
  RUN(barrier_passes_parties_and_breaks_on_abort);
  return check_report("sync");
}
