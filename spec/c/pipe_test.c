/* Framed messages over a socket pair (src/core/pipe.c) from plain C: frames of
 * any size arrive whole across partial writes, descriptors travel with a
 * frame, and a peer that dies mid-frame is told apart from a clean EOF. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include "check.h"
#include "mproc.h"
#include "pipe.h"

static int wait_fd(int fd, short ev) {
  struct pollfd p = { fd, ev, 0 };
  return poll(&p, 1, 5000);
}

static int send_all(mproc_conn *c, const char *p, size_t n, const int *fds, int nfds) {
  int r = nfds ? mproc_conn_send_fds(c, p, n, 0, fds, nfds) : mproc_conn_send(c, p, n, 0);
  while (r == MPROC_CONN_AGAIN) {
    if (wait_fd(c->fd, POLLOUT) <= 0) return -1;
    r = mproc_conn_flush(c);
  }
  return r;
}

static int recv_one(mproc_conn *c, const char **p, size_t *n) {
  int r;
  while ((r = mproc_conn_recv(c, (uint64_t)1 << 40, p, n)) == MPROC_CONN_AGAIN)
    if (wait_fd(c->fd, POLLIN) <= 0) return -9;
  return r;
}

static void frames_of_every_size_arrive_whole(void) {
  int fds[2];
  size_t sizes[] = { 0, 1, 125, 126, 65535, 65536, 5u << 20 };
  size_t i, k;
  pid_t p;
  mproc_conn rc;
  CHECK_EQ(mproc_conn_pair(fds, 1), 0);
  p = fork();
  if (p == 0) {                   /* writer: the socket buffer fills, it waits */
    mproc_conn wc;
    char *buf = malloc(5u << 20);
    close(fds[0]);
    mproc_conn_init(&wc, fds[1], MPROC_CONN_READ | MPROC_CONN_WRITE);
    for (i = 0; i < sizeof sizes / sizeof *sizes; i++) {
      for (k = 0; k < sizes[i]; k++) buf[k] = (char)(k * 7 + i);
      if (send_all(&wc, buf, sizes[i], NULL, 0) != MPROC_CONN_DONE) _exit(1);
    }
    _exit(0);
  }
  close(fds[1]);
  mproc_conn_init(&rc, fds[0], MPROC_CONN_READ | MPROC_CONN_WRITE);
  for (i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    const char *d;
    size_t n;
    int same = 1;
    CHECK_EQ(recv_one(&rc, &d, &n), MPROC_CONN_DONE);
    CHECK_EQ(n, sizes[i]);
    for (k = 0; k < n && same; k++) same = d[k] == (char)(k * 7 + i);
    CHECK(same);
  }
  CHECK_EQ(recv_one(&rc, &(const char *){0}, &(size_t){0}), MPROC_CONN_EOF);
  CHECK_EQ(check_wait(p), 0);
  mproc_conn_close(&rc);
}

static void descriptors_travel_with_a_frame(void) {
  int fds[2], pp[2], got[MPROC_CONN_MAXFDS];
  mproc_conn a, b;
  const char *d;
  size_t n;
  char c = 0;
  CHECK_EQ(mproc_conn_pair(fds, 1), 0);
  CHECK_EQ(pipe(pp), 0);
  mproc_conn_init(&a, fds[0], MPROC_CONN_READ | MPROC_CONN_WRITE);
  mproc_conn_init(&b, fds[1], MPROC_CONN_READ | MPROC_CONN_WRITE);
  CHECK_EQ(send_all(&a, "fd", 2, &pp[1], 1), MPROC_CONN_DONE);
  close(pp[1]);                   /* dup'ed by send: ours may go */
  CHECK_EQ(recv_one(&b, &d, &n), MPROC_CONN_DONE);
  CHECK_EQ(mproc_conn_take_fds(&b, got), 1);
  CHECK_EQ(write(got[0], "!", 1), 1);
  CHECK_EQ(read(pp[0], &c, 1), 1);
  CHECK_EQ(c, '!');
  close(got[0]);
  CHECK_EQ(read(pp[0], &c, 1), 0);  /* the last write end is gone: EOF */
  close(pp[0]);
  mproc_conn_close(&a);
  mproc_conn_close(&b);
}

static void death_mid_frame_is_not_a_clean_eof(void) {
  int fds[2];
  mproc_conn rc;
  const char *d;
  size_t n;
  unsigned char hdr[MPROC_FRAME_HDRMAX];
  size_t h;
  CHECK_EQ(mproc_conn_pair(fds, 1), 0);
  h = mproc_frame_header(hdr, 1000);   /* announce 1000 bytes, send 10 */
  CHECK_EQ(write(fds[1], hdr, h), (long)h);
  CHECK_EQ(write(fds[1], "0123456789", 10), 10);
  close(fds[1]);
  mproc_conn_init(&rc, fds[0], MPROC_CONN_READ);
  CHECK_EQ(recv_one(&rc, &d, &n), MPROC_CONN_EOF_MID);
  mproc_conn_close(&rc);
}

static void oversized_frames_are_refused_unread(void) {
  int fds[2];
  mproc_conn a, b;
  const char *d;
  size_t n;
  int r;
  CHECK_EQ(mproc_conn_pair(fds, 1), 0);
  mproc_conn_init(&a, fds[0], MPROC_CONN_READ | MPROC_CONN_WRITE);
  mproc_conn_init(&b, fds[1], MPROC_CONN_READ | MPROC_CONN_WRITE);
  CHECK_EQ(send_all(&a, "0123456789", 10, NULL, 0), MPROC_CONN_DONE);
  while ((r = mproc_conn_recv(&b, 4, &d, &n)) == MPROC_CONN_AGAIN) wait_fd(b.fd, POLLIN);
  CHECK_EQ(r, MPROC_CONN_TOOLONG);
  CHECK_EQ(b.rlen, 10);
  mproc_conn_close(&a);
  mproc_conn_close(&b);
}

int main(void) {
  RUN(frames_of_every_size_arrive_whole);
  RUN(descriptors_travel_with_a_frame);
  RUN(death_mid_frame_is_not_a_clean_eof);
  RUN(oversized_frames_are_refused_unread);
  return check_report("pipe");
}
