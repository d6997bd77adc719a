/* The pool's transport (src/core/pool.c) from plain C: workers take tasks
 * without the parent, results wait in shared memory until collected, big
 * frames go through their own segment, and the claim board names the task
 * a killed worker held. */
#define _GNU_SOURCE
#include <poll.h>
#include "check.h"
#include "mproc.h"

typedef struct { mproc_task_hdr h; uint64_t x; } task;
typedef struct { mproc_result_hdr h; uint64_t y; } result;

static void submit(mproc_pool *p, uint64_t tid, uint64_t x) {
  task t;
  memset(&t, 0, sizeof t);
  t.h.tid = tid;
  t.h.op = MPROC_TASK_APPLY;
  t.x = x;
  CHECK_EQ(mproc_pool_submit(p, &t, sizeof t), 0);
}

/* A worker: doubles x until no task came for 0.5 s. */
static void worker(mproc_pool *p, int slot) {
  mproc_bytes b = { 0 };
  mproc_pool_worker(p);
  for (;;) {
    mproc_pool_view v;
    uint32_t len, flags;
    task t;
    result r;
    b.len = 0;
    if (mproc_pool_take(p, slot, &b, 0.5) != 1) _exit(0);
    memcpy(&len, b.data, 4);
    memcpy(&flags, b.data + 4, 4);
    if (mproc_pool_view_open(&v, b.data + 8, len, flags) != 0) _exit(3);
    memcpy(&t, v.p, sizeof t);
    mproc_pool_view_close(&v);
    if (t.x == 666) pause();          /* to be killed holding the task */
    memset(&r, 0, sizeof r);
    r.h.tid = t.h.tid;
    r.h.kind = MPROC_RESULT_OK;
    r.y = t.x * 2;
    if (mproc_pool_post(p, slot, &r, sizeof r) != 0) _exit(4);
  }
}

/* Collects results until `want` came (5 s at most); their sum of y. */
static uint64_t collect(mproc_pool *p, int want, int *got) {
  mproc_bytes b = { 0 };
  uint64_t sum = 0;
  double end = mproc_now() + 5;
  *got = 0;
  while (*got < want && mproc_now() < end) {
    size_t off = 0;
    int n;
    struct pollfd pf = { p->rfd, POLLIN, 0 };
    b.len = 0;
    n = mproc_pool_collect(p, &b);
    CHECK(n >= 0);
    if (n <= 0) { poll(&pf, 1, 100); continue; }
    while (off < b.len) {
      uint32_t len;
      result r;
      memcpy(&len, b.data + off, 4);
      memcpy(&r, b.data + off + 8, sizeof r);
      sum += r.y;
      (*got)++;
      off += 8 + ((len + 7) & ~(size_t)7);
    }
  }
  mproc_bytes_free(&b);
  return sum;
}

static void workers_run_tasks_without_the_parent(void) {
  mproc_pool p;
  pid_t w[2];
  int i, got;
  uint64_t want = 0;
  CHECK_EQ(mproc_pool_create(&p), 0);
  for (i = 0; i < 2; i++) { w[i] = fork(); if (w[i] == 0) worker(&p, i); }
  for (i = 1; i <= 500; i++) { submit(&p, (uint64_t)i, (uint64_t)i); want += 2u * (uint64_t)i; }
  CHECK_EQ(mproc_pool_flush(&p), 0);
  check_sleep(0.3);                  /* the parent does other things */
  CHECK(mproc_pool_has_results(&p));
  CHECK_EQ(collect(&p, 500, &got), want);
  CHECK_EQ(got, 500);
  for (i = 0; i < 2; i++) CHECK_EQ(check_wait(w[i]), 0);
  mproc_pool_close(&p);
}

static void cancelled_tasks_never_run(void) {
  mproc_pool p;
  pid_t w;
  int got;
  CHECK_EQ(mproc_pool_create(&p), 0);
  submit(&p, 1, 10);
  submit(&p, 2, 20);
  CHECK_EQ(mproc_pool_cancel(&p, 2), 1);
  CHECK_EQ(mproc_pool_cancel(&p, 99), 0);
  w = fork();
  if (w == 0) worker(&p, 0);
  CHECK_EQ(collect(&p, 1, &got), 20);
  CHECK_EQ(check_wait(w), 0);
  CHECK(!mproc_pool_has_results(&p));                  /* task 2 never ran */
  mproc_pool_close(&p);
}

static void claim_board_names_a_killed_workers_task(void) {
  mproc_pool p;
  pid_t w;
  int i;
  CHECK_EQ(mproc_pool_create(&p), 0);
  w = fork();
  if (w == 0) worker(&p, 5);
  submit(&p, 77, 666);
  for (i = 0; i < 100 && __atomic_load_n(&mproc_ring_claims(&p.tasks)[5].tid,
                                        __ATOMIC_ACQUIRE) != 77; i++) check_sleep(0.02);
  kill(w, SIGKILL);
  CHECK_EQ(check_wait(w), -SIGKILL);
  CHECK_EQ(mproc_ring_claims(&p.tasks)[5].tid, 77);   /* the parent can tell */
  mproc_pool_close(&p);
}

static void big_task_frames_go_through_a_segment(void) {
  mproc_pool p;
  size_t n = 9u << 20;
  char *frame = calloc(1, n);
  mproc_bytes b = { 0 };
  mproc_pool_view v;
  uint32_t len, flags;
  pid_t w;
  task t;
  CHECK(frame != NULL);
  memset(&t, 0, sizeof t);
  t.h.tid = 5;
  t.h.op = MPROC_TASK_APPLY;
  memcpy(frame, &t, sizeof t);
  frame[n - 1] = 42;
  CHECK_EQ(mproc_pool_create(&p), 0);
  CHECK_EQ(mproc_pool_submit(&p, frame, n), 0);
  w = fork();
  if (w == 0) {
    mproc_pool_worker(&p);
    if (mproc_pool_take(&p, 0, &b, 2) != 1) _exit(1);
    memcpy(&len, b.data, 4);
    memcpy(&flags, b.data + 4, 4);
    if (!(flags & MPROC_FRAME_BIG)) _exit(2);
    if (mproc_pool_view_open(&v, b.data + 8, len, flags) != 0) _exit(3);
    _exit(v.n == n && v.p[n - 1] == 42 ? 0 : 4);
  }
  CHECK_EQ(check_wait(w), 0);
  mproc_pool_close(&p);
  free(frame);
}

int main(void) {
  RUN(workers_run_tasks_without_the_parent);
  RUN(cancelled_tasks_never_run);
  RUN(claim_board_names_a_killed_workers_task);
  RUN(big_task_frames_go_through_a_segment);
  return check_report("pool");
}
