/* src/core/subprocess.h: running other programs (no lua.h).  Not included by mproc.h:
 * only src/core/subprocess.c and src/lua/subprocess.c use it.
 *
 * mproc_spawn starts a program with posix_spawn (posix_spawnp when the
 * name has no slash), optionally with pipes for its standard streams, a
 * working directory and an environment.  Errors of the exec itself (a
 * missing program: ENOENT, EACCES...) are returned, not turned into an exit
 * code 127, because glibc's posix_spawn reports them to the parent.
 * These children are NOT in src/core/process.c's child table: their caller reaps them
 * with mproc_spawn_reap (waitpid on that one pid). */
#ifndef MPROC_SPAWN_H
#define MPROC_SPAWN_H

#include <sys/types.h>

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

/* Reaps pid.  Returns 1 when it ended (*status: the raw wait status), 0
 * while it runs (block == 0), -1 with errno. */
int mproc_spawn_reap(pid_t pid, int block, int *status);

/* A descriptor readable when pid has ended (Linux pidfd), or -1 when the
 * system has none (the caller then polls with mproc_spawn_reap). */
int mproc_spawn_pidfd(pid_t pid);

/* Hands a child that may still run to a list reaped later (at the next
 * spawn and the next reap of a zombie list), so an object collected before
 * its child ended leaves no zombie.  Never blocks. */
void mproc_spawn_abandon(pid_t pid);

/* Writes without raising SIGPIPE: returns bytes written, or -1 with errno
 * (EPIPE when the reader is gone, EAGAIN when the pipe is full). */
ssize_t mproc_write_nosigpipe(int fd, const void *p, size_t n);

#endif
