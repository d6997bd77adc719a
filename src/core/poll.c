/* src/core/poll.c: monotonic time, waiting for one descriptor or many, and
 * the poller (a set of descriptors kept across waits). */
#define _GNU_SOURCE  /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/epoll.h>
#endif

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

static short poll_events(int events) {
  return (short)(((events & MPROC_WAIT_READ) ? POLLIN : 0) |
                 ((events & MPROC_WAIT_WRITE) ? POLLOUT : 0));
}

int mproc_wait_fd(int fd, int events, double timeout) {
  struct pollfd p;
  int r;
  p.fd = fd;
  p.events = poll_events(events);
  p.revents = 0;
  r = poll(&p, 1, to_ms(timeout));
  if (r < 0) return errno == EINTR ? 0 : -1;
  if (r == 0) return 0;
  if (p.revents & POLLNVAL) { errno = EBADF; return -1; }
  return 1;
}

int mproc_wait_many(struct pollfd *pf, size_t n, double timeout) {
  int r = poll(pf, (nfds_t)n, to_ms(timeout));
  if (r < 0) return errno == EINTR ? 0 : -1;
  return r;
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

/* {======================================================================
 * Poller
 * ======================================================================= */

int mproc_poller_init(mproc_poller *p) {
  memset(p, 0, sizeof *p);
  p->epfd = -1;
#ifdef __linux__
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->epfd < 0) return -1;
#endif
  return 0;
}

void mproc_poller_close(mproc_poller *p) {
  if (p->epfd >= 0) close(p->epfd);
  p->epfd = -1;
  free(p->fds);
  p->fds = NULL;
  p->n = p->cap = 0;
}

#ifndef __linux__
static struct pollfd *member(mproc_poller *p, int fd) {
  size_t i;
  for (i = 0; i < p->n; i++)
    if (p->fds[i].fd == fd) return &p->fds[i];
  return NULL;
}
#endif

int mproc_poller_ctl(mproc_poller *p, int op, int fd, int events) {
#ifdef __linux__
  static const int eops[] = {EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL};
  struct epoll_event ev;
  if (op < MPROC_POLLER_ADD || op > MPROC_POLLER_DEL) { errno = EINVAL; return -1; }
  memset(&ev, 0, sizeof ev);
  ev.events = ((events & MPROC_WAIT_READ) ? EPOLLIN : 0) |
              ((events & MPROC_WAIT_WRITE) ? EPOLLOUT : 0);
  ev.data.fd = fd;
  return epoll_ctl(p->epfd, eops[op], fd, &ev);
#else
  struct pollfd *m = member(p, fd);
  if (op == MPROC_POLLER_ADD) {
    if (m) { errno = EEXIST; return -1; }
    if (p->n == p->cap) {
      size_t cap = p->cap ? p->cap * 2 : 16;
      struct pollfd *nf = realloc(p->fds, cap * sizeof *nf);
      if (!nf) return -1;
      p->fds = nf;
      p->cap = cap;
    }
    m = &p->fds[p->n++];
    m->fd = fd;
  } else if (!m) {
    errno = ENOENT;
    return -1;
  } else if (op == MPROC_POLLER_DEL) {
    *m = p->fds[--p->n];
    return 0;
  }
  m->events = poll_events(events);
  m->revents = 0;
  return 0;
#endif
}

int mproc_poller_add(mproc_poller *p, int fd) {
  return mproc_poller_ctl(p, MPROC_POLLER_ADD, fd, MPROC_WAIT_READ);
}

int mproc_poller_del(mproc_poller *p, int fd) {
  return mproc_poller_ctl(p, MPROC_POLLER_DEL, fd, 0);
}

int mproc_poller_wait(mproc_poller *p, int *out, int max, double timeout) {
#ifdef __linux__
  struct epoll_event ev[64];
  int r, i;
  if (max > 64) max = 64;
  if (max < 1) { errno = EINVAL; return -1; }
  r = epoll_wait(p->epfd, ev, max, to_ms(timeout));
  if (r < 0) return errno == EINTR ? 0 : -1;
  for (i = 0; i < r; i++) out[i] = ev[i].data.fd;
  return r;
#else
  size_t i;
  int r, k = 0;
  r = mproc_wait_many(p->fds, p->n, timeout);
  if (r <= 0) return r;
  for (i = 0; i < p->n && k < max; i++)
    if (p->fds[i].revents) out[k++] = p->fds[i].fd;
  return k;
#endif
}

int mproc_poller_ready(mproc_poller *p, int *out, int max) {
  int r;
#ifdef __linux__
  struct epoll_event ev[64];
  int i;
  if (max > 64) max = 64;
  if (max < 1) { errno = EINVAL; return -1; }
  do r = epoll_wait(p->epfd, ev, max, 0); while (r < 0 && errno == EINTR);
  for (i = 0; i < r; i++) out[i] = ev[i].data.fd;
#else
  do r = poll(p->fds, (nfds_t)p->n, 0); while (r < 0 && errno == EINTR);
  if (r > 0) {
    size_t i;
    r = 0;
    for (i = 0; i < p->n && r < max; i++)
      if (p->fds[i].revents) out[r++] = p->fds[i].fd;
  }
#endif
  return r;
}

int mproc_poller_fileno(const mproc_poller *p) {
  return p->epfd;
}

/* }====================================================================== */
