/* src/core/poll.c: monotonic time and waiting for one descriptor. */
#define _GNU_SOURCE  /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "mproc.h"

double mproc_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int to_ms(double timeout) {
  if (timeout < 0 || timeout > 2e6) return -1;  /* forever (or ~23 days) */
  return (int)ceil(timeout * 1000.0);
}

int mproc_wait_fd(int fd, int events, double timeout) {
  struct pollfd p;
  int r;
  p.fd = fd;
  p.events = (short)(((events & MPROC_WAIT_READ) ? POLLIN : 0) |
                     ((events & MPROC_WAIT_WRITE) ? POLLOUT : 0));
  p.revents = 0;
  r = poll(&p, 1, to_ms(timeout));
  if (r < 0) return errno == EINTR ? 0 : -1;
  if (r == 0) return 0;
  if (p.revents & POLLNVAL) { errno = EBADF; return -1; }
  return 1;
}

int mproc_sleep(double seconds) {
  struct timespec ts;
  if (seconds <= 0) return 1;
  ts.tv_sec = (time_t)seconds;
  ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
  return nanosleep(&ts, NULL) == 0;
}

int mproc_set_nonblock(int fd, int on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -1;
  fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  return fcntl(fd, F_SETFL, fl);
}

int mproc_set_cloexec(int fd, int on) {
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0) return -1;
  fl = on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
  return fcntl(fd, F_SETFD, fl);
}

int mproc_cloexec_pipe(int fds[2]) {
#ifdef __linux__
  return pipe2(fds, O_CLOEXEC);  /* one system call, no window before exec */
#else
  if (pipe(fds) < 0) return -1;
  mproc_set_cloexec(fds[0], 1);
  mproc_set_cloexec(fds[1], 1);
  return 0;
#endif
}
