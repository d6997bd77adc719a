/*
 * mproc.h: the C core of mproc. No lua.h here: everything declared in this
 * header is usable (and testable) from plain C.
 *
 * Conventions: functions return 0 on success and -1 with errno set on a
 * system failure, unless documented otherwise.  Timeouts are seconds as
 * double; a negative timeout means "wait forever".
 */
#ifndef MPROC_H
#define MPROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* {======================================================================
 * src/core/poll.c: time and readiness
 * ======================================================================= */

/* Seconds on CLOCK_MONOTONIC. */
double mproc_now(void);

#define MPROC_WAIT_READ  1
#define MPROC_WAIT_WRITE 2

/* Waits until fd is ready for `events` (or hung up / in error).
 * Returns 1 ready, 0 timeout or interrupted by a signal (EINTR: the caller
 * re-checks its deadline so Lua's own SIGINT hook can run), -1 on error
 * (EBADF for a closed descriptor, POLLNVAL included). */
int mproc_wait_fd(int fd, int events, double timeout);

/* Sleeps up to `seconds`; returns early (0) on EINTR, 1 when it slept. */
int mproc_sleep(double seconds);

/* Sets or clears O_NONBLOCK / FD_CLOEXEC. */
int mproc_set_nonblock(int fd, int on);
int mproc_set_cloexec(int fd, int on);

/* pipe() with both ends close-on-exec. */
int mproc_cloexec_pipe(int fds[2]);

/* }====================================================================== */

/* One header per concept of the core. */
#include "process.h"
#include "pipe.h"
#include "shared.h"
#include "sync.h"
#include "queue.h"
#include "pool.h"
#include "tracker.h"

#endif
