/* src/core/process.h: the proc part of the C core (no lua.h); included by mproc.h.
 *
 * Child processes: fork with the house rules (signals blocked around fork
 * and reset in the child, stdio flushed before, the child dies with its
 * parent), a central child table reaped from a SIGCHLD handler, and the
 * exit path every mproc process runs (daemon children terminated,
 * non-daemon children joined, exit hooks).  Other parts of mproc that start
 * processes (pool workers, manager servers) should fork through
 * mproc_fork so that all of this applies to them too. */
#ifndef MPROC_PROC_H
#define MPROC_PROC_H

#include <sys/types.h>

/* mproc_fork flags */
#define MPROC_FORK_DETACHED 1  /* no parent-death signal, no parent watch,
                                  not joined/terminated at our exit */
#define MPROC_FORK_DAEMON   2  /* terminated (not joined) at our exit */
#define MPROC_FORK_PLAIN    4  /* an mp.fork child: neither joined nor
                                  terminated at exit (it dies with us unless
                                  detached); its sentinel is kept in the
                                  child table for mproc_fork_sentinel */

/* Forks.  Returns the child's pid in the parent, 0 in the child, -1 with
 * errno on failure (nothing is left behind then).  In the parent,
 * *sentinel (when not NULL and the PLAIN flag is not set) receives the
 * read end of a close-on-exec pipe whose write end only the child holds:
 * it becomes readable (EOF) when the child has ended.  The caller owns it.
 * In the child, signal handlers are reset to SIG_DFL (ignored signals stay
 * ignored), the signal mask is emptied, the child table is empty, and the
 * child ends when its parent ends (unless DETACHED). */
pid_t mproc_fork(int flags, int *sentinel);

/* Spawn start method.  Starts the program `path` (searched in PATH when
 * it has no slash) as a child in the table, like mproc_fork's (flags
 * DETACHED and DAEMON apply; reaped, joined and terminated the same way).
 * The child gets its end of a socket pair at descriptor 3 (it keeps it
 * until it ends), the parent's life pipe at 4 in watch mode, and fds[i]
 * at 5 + i.  *boot receives the parent's end (close-on-exec, blocking):
 * the payload goes through it and it turns readable (EOF) when the child
 * has ended, so it is also the sentinel.  -1 with errno on failure. */
#define MPROC_SPAWN_MAXFDS 16
pid_t mproc_spawn_proc(int flags, const char *path, char *const argv[],
                       char *const envp[], const int *fds, int nfds, int *boot);

/* In a program started by mproc_spawn_proc, first thing: descriptor 3
 * becomes our sentinel, the parent watch (watch: descriptor 4) or
 * PR_SET_PDEATHSIG makes us end with `parent`.  -1 when descriptor 3 is
 * not there. */
int mproc_spawned_setup(int detached, pid_t parent, int watch);

/* 1 when a child started now (not detached) watches our life pipe at its
 * descriptor 4 instead of PR_SET_PDEATHSIG. */
int mproc_spawn_watch(int detached);

/* Threads of this process other than mproc's own parent watch (Linux:
 * /proc/self/task), or -1 where the platform does not tell. */
int mproc_thread_count(void);

/* Status of one of our children.  Returns 1 when it has ended (*status
 * gets the raw wait status and the child is forgotten), 0 while it runs,
 * -1 with errno ECHILD when pid is not (or no longer) a child in our
 * table.  With block set, waits for it to end (use after its sentinel
 * became readable: the wait is then short). */
int mproc_child_status(pid_t pid, int block, int *status);

/* Forgets a child without waiting (its object was collected): it is still
 * reaped by the SIGCHLD handler and still handled by the exit path. */
void mproc_child_release(pid_t pid);

/* 1 when pid is a running child in our table, 0 otherwise. */
int mproc_child_running(pid_t pid);

/* Sends sig to a child that still runs (a no-op, returning 0, when it has
 * ended already, so that a recycled pid is never signalled). */
int mproc_child_signal(pid_t pid, int sig);

/* The read end of the sentinel of an mp.fork child (owned by the table),
 * or -1 with errno ECHILD. */
int mproc_fork_sentinel(pid_t pid);

/* A child started by other means (src/core/subprocess.c's posix_spawn):
 * start(arg) runs with every signal blocked and returns the pid (or -1
 * with errno); the child then is in the table like mproc_fork's (flags
 * DETACHED and DAEMON apply: a DETACHED one is neither joined nor
 * terminated at our exit).  Returns the pid, or -1 with errno. */
pid_t mproc_child_start(int flags, pid_t (*start)(void *), void *arg);

/* A descriptor readable once the child pid (in the table) has ended
 * (Linux pidfd), or -1 (ECHILD: not running or being reaped now; ENOSYS:
 * no pidfd here); the caller then polls mproc_child_status. */
int mproc_child_pidfd(pid_t pid);

/* exitcode of a raw wait status: the exit status, or -signum. */
int mproc_exitcode(int status);

/* A descriptor readable after SIGCHLD reaped one of our children
 * (a self-pipe; drained by mproc_child_status).  -1 before the first fork. */
int mproc_child_notify_fd(void);

/* Registers fn to run in the exit path of this process and of every mproc
 * child (after children were joined/terminated), last registered first.
 * Up to 32 hooks; returns -1 (ENOMEM) when full. */
int mproc_on_exit(void (*fn)(void));

/* Registers fn to run first in the exit path, before children are
 * terminated and joined (the forkserver client closes its request socket
 * there, so that the server ends its own children as the exit path
 * would).  Up to 4; -1 (ENOMEM) when full. */
int mproc_on_exit_early(void (*fn)(void));

/* The first part of the exit path, on its own: the early hooks, then
 * daemon children terminated (SIGTERM, SIGKILL after a grace) and the other
 * non-detached children joined.  At most once per process. */
void mproc_end_children(void);

/* The exit path: terminates daemon children (SIGTERM, SIGKILL after a
 * grace), joins the other non-detached children, runs the exit hooks.
 * Runs at most once per process; registered with atexit at the first fork
 * (so os.exit and a normal end of the main script run it). */
void mproc_exit_path(void);

/* The end of a child: the exit path, fflush(NULL), _exit(code). */
void mproc_exit(int code);

/* Number of CPUs usable by this process (at least 1). */
int mproc_cpu_count(void);

/* True when this process has started children: only then can a child
 * killed by SIGKILL have left segments for this process to sweep. */
int mproc_has_forked(void);

#endif
