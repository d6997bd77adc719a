/* src/core/subprocess.h: running other programs (no lua.h).  Not included by mproc.h:
 * only src/core/subprocess.c and src/lua/subprocess.c use it.
 *
 * mproc_spawn starts a program with posix_spawn (posix_spawnp when the
 * name has no slash), optionally with pipes for its standard streams, a
 * working directory and an environment.  Errors of the exec itself (a
 * missing program: ENOENT, EACCES...) are returned, not turned into an exit
 * code 127, because glibc's posix_spawn reports them to the parent.
 * The children are in src/core/process.c's child table (DETACHED: not
 * joined at our exit): the SIGCHLD handler reaps them; ask with
 * mproc_child_status, wait with mproc_child_pidfd, signal with
 * mproc_child_signal, forget with mproc_child_release. */
#ifndef MPROC_SPAWN_H
#define MPROC_SPAWN_H

#include <sys/types.h>
#include "mproc.h"

/* What a standard stream of the child is connected to. */
#define MPROC_STDIO_INHERIT 0   /* the parent's */
#define MPROC_STDIO_PIPE    1   /* a new pipe; the parent gets the other end */
#define MPROC_STDIO_DEVNULL 2   /* /dev/null */
#define MPROC_STDIO_FD      3   /* a descriptor of the parent (fd[i]) */
#define MPROC_STDIO_STDOUT  4   /* stderr only: wherever stdout goes */

typedef struct mproc_spawn_opts {
  char *const *argv;            /* argv[0] is the program; NULL-terminated */
  char *const *envp;            /* NULL: the parent's environment */
  const char *cwd;              /* NULL: the parent's */
  int mode[3];                  /* MPROC_STDIO_* for fds 0, 1, 2 */
  int fd[3];                    /* for MPROC_STDIO_FD */
  int new_session;              /* setsid() in the child (or its own group) */
} mproc_spawn_opts;

/* Starts the program.  Returns 0 with *pid set and pipes[i] the parent's
 * end (non-blocking, close-on-exec) of each PIPE stream, -1 otherwise; or
 * -1 with errno (nothing is left behind then). */
int mproc_spawn(const mproc_spawn_opts *o, pid_t *pid, int pipes[3]);

/* Writes without raising SIGPIPE: returns bytes written, or -1 with errno
 * (EPIPE when the reader is gone, EAGAIN when the pipe is full). */
ssize_t mproc_write_nosigpipe(int fd, const void *p, size_t n);

/* {======================================================================
 * communicate: feeding stdin while draining stdout and stderr, so that a
 * child filling one pipe while we wait on another never deadlocks.
 * ======================================================================= */

typedef struct mproc_comm {
  int *pipes;                 /* the caller's three parent ends (mproc_spawn's
                                 pipes): each is closed and set to -1 when it
                                 is done */
  const char *in;             /* the input (the caller keeps it alive) */
  size_t inlen, inpos;
  mproc_bytes out[2];         /* what stdout and stderr gave */
  mproc_poller set;           /* the open pipes; set.epfd -1 without epoll */
  int polled;                 /* set is usable */
} mproc_comm;

/* Starts communicate over pipes (non-blocking, as mproc_spawn makes them)
 * with n bytes of input at in (stdin is closed at once when there are
 * none).  c is zeroed first; it never fails (without a poller, step asks
 * for short waits). */
void mproc_comm_start(mproc_comm *c, int pipes[3], const char *in, size_t n);
/* Moves everything the pipes allow now, without blocking.  1 when every
 * pipe is closed (done), 0 when the caller must wait: until *waitfd is
 * readable, or when *slice is set (no descriptor covers every pipe), at
 * most a short slice; then step again.  -1 with errno (ENOMEM, a read or
 * write error). */
int mproc_comm_step(mproc_comm *c, int *waitfd, int *slice);
/* Steps and waits until done or `timeout` seconds passed (negative:
 * forever): 1 done, 0 timed out (call again to go on; nothing is lost),
 * -1 with errno.  For C callers; the Lua layer waits through sched. */
int mproc_comm_run(mproc_comm *c, double timeout);
/* Frees the buffers and the poller (not the pipes: they are the caller's). */
void mproc_comm_end(mproc_comm *c);

/* }====================================================================== */

#endif
