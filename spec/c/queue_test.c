/* The shared-memory ring (src/core/queue.c) from plain C: frames whole and in
 * order, big messages, bounded waits, and the failure map: a waiter or a
 * lock holder SIGKILLed at any point leaves the ring usable by the others. */
#define _GNU_SOURCE
#include "check.h"
#include "mproc.h"
#include "queue.h"

/* Puts one frame (waiting up to 2 s for room). */
static int put(mproc_ring *r, const void *p, size_t n) {
  int ok;
  if (mproc_ring_lock(r) != 0) return -1;
  while ((ok = mproc_ring_room(r, n)) != 1)
    if (mproc_ring_wait(r, MPROC_WAIT_PUT, n, 2.0) != 1) { mproc_ring_unlock(r); return -1; }
  mproc_ring_push(r, p, n, 0);
  mproc_ring_unlock(r);
  return 0;
}

/* Gets one frame's payload into out (waiting up to `t` s); its length or -1. */
static long get(mproc_ring *r, char *out, size_t max, double t) {
  mproc_bytes b = { 0 };
  uint32_t len;
  int got;
  if (mproc_ring_lock(r) != 0) return -1;
  while ((got = mproc_ring_pop(r, &b)) == 0)
    if (mproc_ring_wait(r, MPROC_WAIT_GET, 0, t) != 1) break;
  mproc_ring_unlock(r);
  if (got != 1) { mproc_bytes_free(&b); return -1; }
  memcpy(&len, b.data, 4);
  if (len > max) len = (uint32_t)max;
  memcpy(out, b.data + 8, len);
  mproc_bytes_free(&b);
  return (long)len;
}

static void frames_keep_order_across_wraparound(void) {
  mproc_ring r;
  char buf[600], want[600];
  int i;
  CHECK_EQ(mproc_ring_create(&r, 4096, 0, MPROC_RING_QUEUE), 0);
  for (i = 0; i < 200; i++) {   /* 200 x ~500 B through 4 KiB: wraps often */
    size_t n = 1 + (size_t)(i * 37) % 500;
    memset(want, 'a' + i % 26, n);
    CHECK_EQ(put(&r, want, n), 0);
    CHECK_EQ(get(&r, buf, sizeof buf, 0), (long)n);
    CHECK(memcmp(buf, want, n) == 0);
  }
  CHECK_EQ(mproc_ring_count(&r), 0);
  mproc_ring_close(&r);
}

static void bounded_ring_reports_full_and_get_times_out(void) {
  mproc_ring r;
  char buf[8];
  double t0;
  CHECK_EQ(mproc_ring_create(&r, 0, 2, MPROC_RING_QUEUE), 0);
  CHECK_EQ(put(&r, "x", 1), 0);
  CHECK_EQ(put(&r, "y", 1), 0);
  mproc_ring_lock(&r);
  CHECK_EQ(mproc_ring_room(&r, 1), 0);           /* item limit reached */
  t0 = mproc_now();
  CHECK_EQ(mproc_ring_wait(&r, MPROC_WAIT_PUT, 1, 0.2), 0);
  CHECK(mproc_now() - t0 >= 0.15);
  mproc_ring_unlock(&r);
  CHECK_EQ(get(&r, buf, 8, 0), 1);
  CHECK_EQ(get(&r, buf, 8, 0), 1);
  t0 = mproc_now();
  CHECK_EQ(get(&r, buf, 8, 0.2), -1);            /* empty: times out */
  CHECK(mproc_now() - t0 >= 0.15 && mproc_now() - t0 < 2.0);
  mproc_ring_close(&r);
}

static void big_message_goes_through_its_own_segment(void) {
  mproc_ring r;
  size_t n = 3u << 20;
  char *big = malloc(n), name[MPROC_RING_NAMELEN + 32];
  mproc_bytes b = { 0 };
  uint32_t len, flags;
  void *p;
  size_t plen;
  CHECK(big != NULL);
  memset(big, 7, n);
  big[n - 1] = 9;
  CHECK_EQ(mproc_ring_create(&r, 4096, 0, MPROC_RING_QUEUE), 0);
  CHECK(n > mproc_ring_big_threshold(&r));
  CHECK_EQ(mproc_ring_big_write(&r, big, n, name), 0);
  mproc_ring_lock(&r);
  mproc_ring_push(&r, name, strlen(name), MPROC_FRAME_BIG);
  CHECK_EQ(mproc_ring_pop(&r, &b), 1);
  mproc_ring_unlock(&r);
  memcpy(&len, b.data, 4);
  memcpy(&flags, b.data + 4, 4);
  CHECK(flags & MPROC_FRAME_BIG);
  CHECK_EQ(mproc_ring_big_map(b.data + 8, len, &p, &plen), 0);
  CHECK_EQ(plen, n);
  CHECK(memcmp(p, big, n) == 0);
  mproc_ring_big_release(p, plen);
  /* mapped once: the name is gone */
  CHECK_EQ(mproc_ring_big_map(b.data + 8, len, &p, &plen), -1);
  mproc_bytes_free(&b);
  mproc_ring_close(&r);
  free(big);
}

/* The bug of issue 12: with a process-shared condvar, a killed waiter
 * made a later signal block forever under the ring's mutex (in about half
 * the runs: a few rounds).  The checks run in children with an alarm, so
 * a wedged ring fails the test instead of hanging it. */
static void killed_waiter_does_not_block_the_others(void) {
  mproc_ring r;
  int round;
  CHECK_EQ(mproc_ring_create(&r, 0, 0, MPROC_RING_QUEUE), 0);
  for (round = 0; round < 4; round++) {
    pid_t w[2], c;
    int i;
    for (i = 0; i < 2; i++) {
      w[i] = fork();
      if (w[i] == 0) {            /* takes until the empty stop frame */
        char buf[8];
        alarm(20);
        while (get(&r, buf, 8, 30) > 0) {}
        _exit(0);
      }
    }
    check_sleep(0.3);             /* both asleep in the wait */
    kill(w[0], SIGKILL);
    CHECK_EQ(check_wait(w[0]), -SIGKILL);
    c = fork();
    if (c == 0) {
      char buf[8];
      double end = mproc_now() + 10;
      alarm(15);
      for (i = 0; i < 300; i++) if (put(&r, "n", 1) != 0) _exit(1);
      if (put(&r, "", 0) != 0) _exit(2);
      while (mproc_now() < end) {
        mproc_ring_lock(&r);
        i = (int)mproc_ring_count(&r);
        mproc_ring_unlock(&r);
        if (i == 0) break;
        check_sleep(0.01);
      }
      if (i != 0) _exit(3);
      if (put(&r, "m", 1) != 0 || get(&r, buf, 8, 5) != 1 || buf[0] != 'm') _exit(4);
      _exit(0);
    }
    CHECK_EQ(check_wait(c), 0);   /* the others were not stuck */
    CHECK_EQ(check_wait(w[1]), 0);  /* nor the live waiter */
  }
  mproc_ring_close(&r);
}

static void holder_killed_with_the_lock_is_rolled_back(void) {
  mproc_ring r;
  char buf[8];
  pid_t c;
  int fds[2];
  CHECK_EQ(mproc_ring_create(&r, 0, 0, MPROC_RING_QUEUE), 0);
  CHECK_EQ(put(&r, "a", 1), 0);
  CHECK_EQ(pipe(fds), 0);
  c = fork();
  if (c == 0) {
    mproc_ring_lock(&r);            /* dies holding it */
    if (write(fds[1], "1", 1) != 1) _exit(2);
    pause();
    _exit(0);
  }
  CHECK_EQ(read(fds[0], buf, 1), 1);
  kill(c, SIGKILL);
  CHECK_EQ(check_wait(c), -SIGKILL);
  CHECK_EQ(get(&r, buf, 8, 1), 1);  /* the lock is recovered, the item kept */
  CHECK_EQ(buf[0], 'a');
  CHECK_EQ(put(&r, "b", 1), 0);
  CHECK_EQ(get(&r, buf, 8, 1), 1);
  close(fds[0]);
  close(fds[1]);
  mproc_ring_close(&r);
}

static void joinable_counts_unfinished_tasks(void) {
  mproc_ring r;
  char buf[8];
  CHECK_EQ(mproc_ring_create(&r, 0, 0, MPROC_RING_JOINABLE), 0);
  CHECK_EQ(put(&r, "t", 1), 0);
  CHECK_EQ(get(&r, buf, 8, 0), 1);
  mproc_ring_lock(&r);
  CHECK_EQ(mproc_ring_unfinished(&r), 1);
  CHECK_EQ(mproc_ring_wait(&r, MPROC_WAIT_JOIN, 0, 0.05), 0);
  CHECK_EQ(mproc_ring_task_done(&r), 0);
  CHECK_EQ(mproc_ring_task_done(&r), 1);  /* nothing left to mark */
  CHECK_EQ(mproc_ring_wait(&r, MPROC_WAIT_JOIN, 0, 0.05), 1);
  mproc_ring_unlock(&r);
  mproc_ring_close(&r);
}

static void attach_by_name_and_refuse_strangers(void) {
  mproc_ring r, r2;
  char buf[8];
  CHECK_EQ(mproc_ring_create(&r, 0, 0, MPROC_RING_QUEUE), 0);
  CHECK_EQ(mproc_ring_attach(&r2, r.name), 0);
  CHECK_EQ(put(&r2, "q", 1), 0);
  CHECK_EQ(get(&r, buf, 8, 0), 1);
  mproc_ring_close(&r2);
  mproc_ring_close(&r);
  CHECK_EQ(mproc_ring_attach(&r2, "/mproc-q-no-such-ring"), -1);
}

int main(void) {
  RUN(frames_keep_order_across_wraparound);
  RUN(bounded_ring_reports_full_and_get_times_out);
  RUN(big_message_goes_through_its_own_segment);
  RUN(killed_waiter_does_not_block_the_others);
  RUN(holder_killed_with_the_lock_is_rolled_back);
  RUN(joinable_counts_unfinished_tasks);
  RUN(attach_by_name_and_refuse_strangers);
  return check_report("queue");
}
