/* Waiting from plain C (src/core/poll.c): one descriptor, many at once,
 * and the poller, whose own descriptor (where there is one) is readable
 * while a member is ready. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include "check.h"
#include "mproc.h"

static void wait_fd_times_out_then_sees_data(void) {
  int fds[2];
  double t0;
  CHECK_EQ(mproc_cloexec_pipe(fds), 0);
  t0 = mproc_now();
  CHECK_EQ(mproc_wait_fd(fds[0], MPROC_WAIT_READ, 0.05), 0);
  CHECK(mproc_now() - t0 >= 0.04);
  CHECK_EQ(mproc_wait_fd(fds[1], MPROC_WAIT_WRITE, 0), 1);
  CHECK_EQ(write(fds[1], "x", 1), 1);
  CHECK_EQ(mproc_wait_fd(fds[0], MPROC_WAIT_READ, -1), 1);
  close(fds[0]);
  close(fds[1]);
  CHECK_EQ(mproc_wait_fd(fds[0], MPROC_WAIT_READ, 0), -1);
  CHECK_EQ(errno, EBADF);
}

static void wait_many_reports_each_descriptor(void) {
  int a[2], b[2];
  struct pollfd pf[2];
  char c;
  CHECK_EQ(mproc_cloexec_pipe(a), 0);
  CHECK_EQ(mproc_cloexec_pipe(b), 0);
  pf[0].fd = a[0]; pf[0].events = POLLIN;
  pf[1].fd = b[0]; pf[1].events = POLLIN;
  CHECK_EQ(mproc_wait_many(pf, 2, 0.02), 0);
  CHECK_EQ(write(b[1], "x", 1), 1);
  CHECK_EQ(mproc_wait_many(pf, 2, 1), 1);
  CHECK_EQ(pf[0].revents, 0);
  CHECK(pf[1].revents & POLLIN);
  close(b[1]);                      /* hang-up counts as ready too */
  CHECK_EQ(read(b[0], &c, 1), 1);
  CHECK_EQ(mproc_wait_many(pf, 2, 1), 1);
  CHECK(pf[1].revents != 0);
  close(a[0]); close(a[1]); close(b[0]);
}

static void poller_tracks_members_and_interest(void) {
  mproc_poller p;
  int a[2], b[2], out[8], n;
  char c;
  CHECK_EQ(mproc_poller_init(&p), 0);
  CHECK_EQ(mproc_cloexec_pipe(a), 0);
  CHECK_EQ(mproc_cloexec_pipe(b), 0);
  CHECK_EQ(mproc_poller_add(&p, a[0]), 0);
  CHECK_EQ(mproc_poller_ctl(&p, MPROC_POLLER_ADD, b[0], MPROC_WAIT_READ), 0);
  CHECK_EQ(mproc_poller_ctl(&p, MPROC_POLLER_ADD, b[0], MPROC_WAIT_READ), -1);
  CHECK_EQ(errno, EEXIST);
  CHECK_EQ(mproc_poller_ready(&p, out, 8), 0);
  CHECK_EQ(mproc_poller_wait(&p, out, 8, 0.02), 0);
  if (mproc_poller_fileno(&p) >= 0)
    CHECK_EQ(mproc_wait_fd(mproc_poller_fileno(&p), MPROC_WAIT_READ, 0), 0);

  CHECK_EQ(write(b[1], "x", 1), 1);
  n = mproc_poller_wait(&p, out, 8, 1);
  CHECK_EQ(n, 1);
  CHECK_EQ(out[0], b[0]);
  if (mproc_poller_fileno(&p) >= 0)   /* a foreign loop sees the set */
    CHECK_EQ(mproc_wait_fd(mproc_poller_fileno(&p), MPROC_WAIT_READ, 0), 1);
  CHECK_EQ(mproc_poller_ready(&p, out, 8), 1);

  /* interest changed to writing: a pipe's read end never is writable */
  CHECK_EQ(mproc_poller_ctl(&p, MPROC_POLLER_MOD, b[0], MPROC_WAIT_WRITE), 0);
  CHECK_EQ(mproc_poller_ready(&p, out, 8), 0);
  CHECK_EQ(mproc_poller_ctl(&p, MPROC_POLLER_MOD, b[0], MPROC_WAIT_READ), 0);
  CHECK_EQ(mproc_poller_ready(&p, out, 8), 1);

  /* a write end with write interest is ready at once */
  CHECK_EQ(mproc_poller_ctl(&p, MPROC_POLLER_ADD, a[1], MPROC_WAIT_WRITE), 0);
  n = mproc_poller_ready(&p, out, 8);
  CHECK_EQ(n, 2);
  CHECK_EQ(mproc_poller_ready(&p, out, 1), 1);   /* never more than max */

  CHECK_EQ(mproc_poller_del(&p, a[1]), 0);
  CHECK_EQ(mproc_poller_del(&p, b[0]), 0);
  CHECK_EQ(mproc_poller_ready(&p, out, 8), 0);
  CHECK_EQ(mproc_poller_del(&p, b[0]), -1);
  CHECK_EQ(errno, ENOENT);
  CHECK_EQ(read(b[0], &c, 1), 1);

  /* a member's writer gone: the hang-up wakes the set */
  close(a[1]);
  CHECK_EQ(mproc_poller_wait(&p, out, 8, 1), 1);
  CHECK_EQ(out[0], a[0]);
  mproc_poller_close(&p);
  CHECK_EQ(p.epfd, -1);
  mproc_poller_close(&p);           /* twice is harmless */
  close(a[0]); close(b[0]); close(b[1]);
}

int main(void) {
  RUN(wait_fd_times_out_then_sees_data);
  RUN(wait_many_reports_each_descriptor);
  RUN(poller_tracks_members_and_interest);
  return check_report("poll");
}
