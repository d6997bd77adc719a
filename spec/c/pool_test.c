/* The pool's transport (src/core/pool.c) from plain C: workers take tasks
 * without the parent, results wait in shared memory until collected, big
 * frames go through their own segment, the claim board names the task
 * a killed worker held, and all-number chunks travel as packed records. */
#define _GNU_SOURCE
#include <errno.h>
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

static void packed_records_round_trip(void) {
  char rec[3 * MPROC_PACK_REC];
  int64_t i = 0;
  double d = 0;
  mproc_pack_int(rec, INT64_MIN);
  mproc_pack_float(rec + MPROC_PACK_REC, -0.5);
  memset(rec + 2 * MPROC_PACK_REC, 'z', MPROC_PACK_REC);
  CHECK_EQ(mproc_unpack(rec, &i, &d), 'i');
  CHECK(i == INT64_MIN);
  CHECK_EQ(mproc_unpack(rec + MPROC_PACK_REC, &i, &d), 'f');
  CHECK(d == -0.5);
  CHECK_EQ(mproc_unpack(rec + 2 * MPROC_PACK_REC, &i, &d), 0);   /* not a record */
}

static void accumulator_knows_when_it_can_travel_packed(void) {
  mproc_packacc *a = malloc(mproc_packacc_size(3));
  CHECK(a != NULL);
  mproc_packacc_reset(a, 3, 3);
  CHECK_EQ(a->cap, 3);
  CHECK(!mproc_packacc_complete(a));                 /* nothing set yet */
  mproc_pack_int(mproc_packacc_rec(a, 0), 1);
  mproc_pack_int(mproc_packacc_rec(a, 1), 2);
  CHECK(!mproc_packacc_complete(a));
  mproc_pack_float(mproc_packacc_rec(a, 2), 3.5);
  CHECK(mproc_packacc_complete(a));
  CHECK_EQ(mproc_packacc_other(a, 1), 1);            /* a string came back */
  CHECK_EQ(mproc_packacc_other(a, 2), 0);
  CHECK(!mproc_packacc_complete(a));
  CHECK_EQ(mproc_packacc_rec(a, 1)[0], 'x');
  mproc_packacc_reset(a, 2, 0);                      /* reused, smaller */
  CHECK_EQ(a->cap, 3);
  CHECK_EQ(a->n, 2);
  CHECK(!a->mixed);
  CHECK_EQ(mproc_packacc_rec(a, 1)[0], 0);
  mproc_packacc_reset(a, 0, 0);
  CHECK(mproc_packacc_complete(a));                  /* an empty chunk */
  free(a);
}

static void frames_are_parsed_or_refused(void) {
  char f[sizeof(mproc_task_hdr) + 3 + 2 * MPROC_PACK_REC];
  mproc_task_hdr h, got;
  mproc_result_hdr rh, rgot;
  char rf[sizeof rh + MPROC_PACK_REC];
  const char *fn, *body;
  size_t blen;
  memset(&h, 0, sizeof h);
  h.tid = 9;
  h.op = MPROC_TASK_PACKED;
  h.fnlen = 3;
  memcpy(f, &h, sizeof h);
  memcpy(f + sizeof h, "abc", 3);
  mproc_pack_int(f + sizeof h + 3, 1);
  mproc_pack_int(f + sizeof h + 3 + MPROC_PACK_REC, 2);
  CHECK_EQ(mproc_task_parse(f, sizeof f, &got, &fn, &body, &blen), 0);
  CHECK_EQ(got.tid, 9);
  CHECK(fn == f + sizeof h && memcmp(fn, "abc", 3) == 0);
  CHECK_EQ(blen, 2 * MPROC_PACK_REC);
  CHECK_EQ(mproc_task_parse(f, sizeof f - 1, &got, &fn, &body, &blen), -1);  /* half a record */
  CHECK_EQ(mproc_task_parse(f, sizeof h - 1, &got, &fn, &body, &blen), -1);
  h.fnlen = 1000;                                    /* longer than the frame */
  memcpy(f, &h, sizeof h);
  CHECK_EQ(mproc_task_parse(f, sizeof f, &got, &fn, &body, &blen), -1);
  h.fnlen = 3;
  h.op = 77;
  memcpy(f, &h, sizeof h);
  CHECK_EQ(mproc_task_parse(f, sizeof f, &got, &fn, &body, &blen), -1);

  memset(&rh, 0, sizeof rh);
  rh.tid = 4;
  rh.kind = MPROC_RESULT_PACKED;
  rh.count = 1;
  memcpy(rf, &rh, sizeof rh);
  mproc_pack_float(rf + sizeof rh, 2.0);
  CHECK_EQ(mproc_result_parse(rf, sizeof rf, &rgot, &body, &blen), 0);
  CHECK(body == rf + sizeof rh);
  rh.count = 2;                                      /* records missing */
  memcpy(rf, &rh, sizeof rh);
  CHECK_EQ(mproc_result_parse(rf, sizeof rf, &rgot, &body, &blen), -1);
  CHECK_EQ(rgot.tid, 4);                             /* still named */
  rh.kind = 0;
  memcpy(rf, &rh, sizeof rh);
  CHECK_EQ(mproc_result_parse(rf, sizeof rf, &rgot, &body, &blen), -1);
}

/* A worker posts a packed chunk; the parent walks the collected frames. */
static void packed_results_arrive_whole(void) {
  mproc_pool p;
  mproc_bytes b = { 0 };
  mproc_packacc *a = malloc(mproc_packacc_size(4));
  size_t pos = 0, len, blen, k;
  unsigned flags;
  const char *f, *body;
  mproc_result_hdr h;
  pid_t w;
  int i, n = 0;
  CHECK(a != NULL);
  CHECK_EQ(mproc_pool_create(&p), 0);
  w = fork();
  if (w == 0) {
    mproc_pool_worker(&p);
    mproc_packacc_reset(a, 4, 4);
    if (mproc_pool_post_packed(&p, 0, 11, a) != -1 || errno != EINVAL) _exit(1);
    for (k = 0; k < 4; k++) mproc_pack_int(mproc_packacc_rec(a, k), (int64_t)k * 10);
    _exit(mproc_pool_post_packed(&p, 0, 12, a) == 0 ? 0 : 2);
  }
  CHECK_EQ(check_wait(w), 0);
  CHECK_EQ(mproc_pool_collect(&p, &b), 1);
  while ((f = mproc_pool_next_frame(&b, &pos, &len, &flags)) != NULL) {
    int64_t v = 0;
    double d;
    n++;
    CHECK_EQ(flags & MPROC_FRAME_BIG, 0);
    CHECK_EQ(mproc_result_parse(f, len, &h, &body, &blen), 0);
    CHECK_EQ(h.tid, 12);
    CHECK_EQ(h.count, 4);
    for (i = 0; i < 4; i++) {
      CHECK_EQ(mproc_unpack(body + (size_t)i * MPROC_PACK_REC, &v, &d), 'i');
      CHECK_EQ(v, i * 10);
    }
  }
  CHECK_EQ(n, 1);
  CHECK_EQ(pos, b.len);
  mproc_bytes_free(&b);
  mproc_pool_close(&p);
  free(a);
}

int main(void) {
  RUN(workers_run_tasks_without_the_parent);
  RUN(cancelled_tasks_never_run);
  RUN(claim_board_names_a_killed_workers_task);
  RUN(big_task_frames_go_through_a_segment);
  RUN(packed_records_round_trip);
  RUN(accumulator_knows_when_it_can_travel_packed);
  RUN(frames_are_parsed_or_refused);
  RUN(packed_results_arrive_whole);
  return check_report("pool");
}
