/*
 * src/core/poll.h: time and readiness (src/core/poll.c; included by mproc.h).
 *
 * One descriptor: mproc_wait_fd.  Many descriptors once: mproc_wait_many
 * (the scheduler's wait).  A set kept across waits: the poller (epoll on
 * Linux, poll() elsewhere), whose own descriptor, where there is one, is
 * readable while a member is ready, so a foreign event loop can watch the
 * whole set (pool:fileno(), the manager server).
 */
#ifndef MPROC_POLL_H
#define MPROC_POLL_H

#include <poll.h>
#include <stddef.h>

/* Seconds on CLOCK_MONOTONIC. */
double mproc_now(void);

#define MPROC_WAIT_READ  1
#define MPROC_WAIT_WRITE 2

/* Waits until fd is ready for `events` (or hung up / in error).
 * Returns 1 ready, 0 timeout or interrupted by a signal (EINTR: the caller
 * re-checks its deadline so Lua's own SIGINT hook can run), -1 on error
 * (EBADF for a closed descriptor, POLLNVAL included). */
int mproc_wait_fd(int fd, int events, double timeout);

/* poll() over pf[0..n) with a timeout in seconds (negative: forever).
 * Returns how many are ready (revents set; hang-up, errors and closed
 * descriptors count), 0 on timeout or EINTR, -1 with errno. */
int mproc_wait_many(struct pollfd *pf, size_t n, double timeout);

/* Sleeps up to `seconds`; returns early (0) on EINTR, 1 when it slept. */
int mproc_sleep(double seconds);

/* Sets or clears O_NONBLOCK / FD_CLOEXEC. */
int mproc_set_nonblock(int fd, int on);
int mproc_set_cloexec(int fd, int on);

/* pipe() with both ends close-on-exec. */
int mproc_cloexec_pipe(int fds[2]);

/* {======================================================================
 * Poller: a set of descriptors with their interest
 * ======================================================================= */

typedef struct mproc_poller {
  int epfd;                   /* Linux: the epoll descriptor; else -1 */
  struct pollfd *fds;         /* poll() fallback: the members */
  size_t n, cap;
} mproc_poller;

enum { MPROC_POLLER_ADD, MPROC_POLLER_MOD, MPROC_POLLER_DEL };

int mproc_poller_init(mproc_poller *p);
void mproc_poller_close(mproc_poller *p);
/* Adds fd (op MPROC_POLLER_ADD), changes its interest (MOD) or removes it
 * (DEL; `events` unused) with `events` MPROC_WAIT_* bits.  0 or -1 (errno:
 * EEXIST, ENOENT as epoll_ctl gives them). */
int mproc_poller_ctl(mproc_poller *p, int op, int fd, int events);
int mproc_poller_add(mproc_poller *p, int fd);      /* read interest */
int mproc_poller_del(mproc_poller *p, int fd);
/* Fills out[0..max) with ready descriptors, waiting up to timeout
 * (negative: forever; 0: never).  Returns how many, 0 on timeout or
 * EINTR, -1 with errno. */
int mproc_poller_wait(mproc_poller *p, int *out, int max, double timeout);
/* The members ready now, without waiting (EINTR retried): how many, or -1
 * with errno. */
int mproc_poller_ready(mproc_poller *p, int *out, int max);
/* A descriptor readable while a member is ready, or -1 (poll() fallback:
 * there is none, the caller checks the members itself). */
int mproc_poller_fileno(const mproc_poller *p);

/* }====================================================================== */

#endif
