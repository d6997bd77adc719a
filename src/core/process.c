/*
 * src/core/process.c: forking children, the child table, reaping, the exit path.
 *
 * The child table is a list of fixed blocks that are never moved or freed,
 * so the SIGCHLD handler can walk it at any time.  The main thread changes
 * it only with SIGCHLD blocked; a slot becomes visible to the handler when
 * its state is set to RUNNING, last.  The handler reaps only the pids of
 * the table (never waitpid(-1): os.execute and io.popen children belong to
 * their callers).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#include "mproc.h"


/* {======================================================================
 * The child table
 * ======================================================================= */

enum { SLOT_FREE, SLOT_RESERVED, SLOT_RUNNING, SLOT_EXITED, SLOT_REAPING };

/* In a process that runs other threads (a host that embeds Lua), SIGCHLD
 * may be handled by another thread while this one reaps: whoever moves a
 * slot from RUNNING to REAPING (atomically) is the only one that calls
 * waitpid for it, so the other never takes an ECHILD for a lost child. */
#define LIVE(s) ((s)->state == SLOT_RUNNING || (s)->state == SLOT_REAPING)
#define CLAIM(s) __sync_bool_compare_and_swap(&(s)->state, SLOT_RUNNING, SLOT_REAPING)

typedef struct slot {
  volatile sig_atomic_t state;
  volatile sig_atomic_t lost;     /* reaped by someone else: no status */
  int status;                     /* raw wait status once EXITED */
  pid_t pid;
  int flags;                      /* MPROC_FORK_* */
  int sentinel;                   /* PLAIN children: read end, else -1 */
  int owned;                      /* someone will ask for the status */
  unsigned long seq;
} slot;

#define BLOCK_SLOTS 64
#define MAX_KEPT    1024  /* exited mp.fork children nobody asked about */

typedef struct sblock {
  slot slots[BLOCK_SLOTS];
  struct sblock *volatile next;
} sblock;

static sblock *volatile blocks;
static unsigned long seq_counter;
static pid_t forked_by;  /* the last process that forked (children inherit it) */
static pid_t inited_pid;          /* the process whose handler is installed */
static int notify_r = -1, notify_w = -1;
static struct sigaction old_chld;
static int atexit_done;

#define FOR_SLOTS(b, s, i) \
  for (b = blocks; b; b = b->next) \
    for (i = 0, s = b->slots; i < BLOCK_SLOTS; i++, s = b->slots + i)

static void block_chld(sigset_t *old) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, old);
}

static void restore_mask(const sigset_t *old) {
  pthread_sigmask(SIG_SETMASK, old, NULL);
}

static void on_sigchld(int sig, siginfo_t *si, void *uc) {
  int saved = errno, any = 0, st, i;
  sblock *b;
  slot *s;
  FOR_SLOTS(b, s, i) {
    if (s->state != SLOT_RUNNING || !CLAIM(s)) continue;
    pid_t r = waitpid(s->pid, &st, WNOHANG);
    if (r == s->pid) {
      s->status = st;
      s->state = SLOT_EXITED;
      any = 1;
    } else if (r < 0 && errno == ECHILD) {
      s->lost = 1;
      s->state = SLOT_EXITED;
      any = 1;
    } else {
      s->state = SLOT_RUNNING;
    }
  }
  if (any && notify_w >= 0) {
    ssize_t w = write(notify_w, "c", 1);
    (void)w;  /* full pipe: a notice is pending anyway */
  }
  if (old_chld.sa_flags & SA_SIGINFO) {
    if (old_chld.sa_sigaction) old_chld.sa_sigaction(sig, si, uc);
  } else if (old_chld.sa_handler != SIG_DFL && old_chld.sa_handler != SIG_IGN) {
    old_chld.sa_handler(sig);
  }
  errno = saved;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void slot_free(slot *s) {
  close_fd(&s->sentinel);
  s->pid = 0;
  s->flags = 0;
  s->owned = 0;
  s->lost = 0;
  s->state = SLOT_FREE;
}

/* With signals blocked.  Reuses a free slot, frees the finished ones
 * nobody will ask about, and bounds the statuses kept for mp.fork. */
static slot *slot_alloc(void) {
  sblock *b, *nb;
  slot *s, *found = NULL, *oldest = NULL;
  int i, kept = 0;
  FOR_SLOTS(b, s, i) {
    if (s->state == SLOT_EXITED && !s->owned) slot_free(s);
    if (s->state == SLOT_EXITED && (s->flags & MPROC_FORK_PLAIN)) {
      kept++;
      if (!oldest || s->seq < oldest->seq) oldest = s;
    }
    if (!found && s->state == SLOT_FREE) found = s;
  }
  if (!found && kept >= MAX_KEPT) {
    slot_free(oldest);
    found = oldest;
  }
  if (!found) {
    nb = calloc(1, sizeof *nb);
    if (!nb) return NULL;
    for (i = 0; i < BLOCK_SLOTS; i++) nb->slots[i].sentinel = -1;
    /* append: the handler sees a fully built block */
    if (!blocks) blocks = nb;
    else {
      for (b = blocks; b->next; b = b->next) {}
      b->next = nb;
    }
    found = nb->slots;
  }
  found->state = SLOT_RESERVED;
  found->sentinel = -1;
  return found;
}

/* With SIGCHLD blocked. */
static slot *slot_find(pid_t pid) {
  sblock *b;
  slot *s;
  int i;
  if (pid <= 0) return NULL;
  FOR_SLOTS(b, s, i) {
    if ((LIVE(s) || s->state == SLOT_EXITED) && s->pid == pid)
      return s;
  }
  return NULL;
}

static void drain_notify(void) {
  char buf[64];
  if (notify_r < 0) return;
  while (read(notify_r, buf, sizeof buf) > 0) {}
}

int mproc_child_notify_fd(void) {
  return inited_pid == getpid() ? notify_r : -1;
}

int mproc_exitcode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

/* Reaps s if it ended (blocking if asked); 1 ended, 0 running, -1 lost. */
static int slot_reap(slot *s, int block, int *status) {
  pid_t r;
  int st;
  while (LIVE(s) && !CLAIM(s)) {   /* another thread's handler reaps it */
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
  if (s->state == SLOT_REAPING) {
    do r = waitpid(s->pid, &st, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
      s->state = SLOT_RUNNING;
      return 0;
    }
    if (r == s->pid) s->status = st;
    else s->lost = 1;
    s->state = SLOT_EXITED;
  }
  if (s->lost) return -1;
  if (status) *status = s->status;
  return 1;
}

int mproc_child_status(pid_t pid, int block, int *status) {
  sigset_t old;
  slot *s;
  int r;
  block_chld(&old);
  drain_notify();
  s = slot_find(pid);
  if (!s) {
    restore_mask(&old);
    errno = ECHILD;
    return -1;
  }
  r = slot_reap(s, block, status);
  if (r != 0) slot_free(s);
  restore_mask(&old);
  if (r < 0) errno = ECHILD;
  return r;
}

void mproc_child_release(pid_t pid) {
  sigset_t old;
  slot *s;
  block_chld(&old);
  s = slot_find(pid);
  if (s) {
    if (s->state == SLOT_EXITED) slot_free(s);
    else s->owned = 0;
  }
  restore_mask(&old);
}

int mproc_child_running(pid_t pid) {
  sigset_t old;
  slot *s;
  int r;
  block_chld(&old);
  s = slot_find(pid);
  r = s && LIVE(s);
  restore_mask(&old);
  return r;
}

int mproc_child_signal(pid_t pid, int sig) {
  sigset_t old;
  slot *s;
  int r = 0;
  block_chld(&old);
  s = slot_find(pid);
  /* a RUNNING slot is at worst a zombie not yet reaped: the pid is ours */
  if (s && LIVE(s)) r = kill(pid, sig);
  restore_mask(&old);
  return r;
}

int mproc_fork_sentinel(pid_t pid) {
  sigset_t old;
  slot *s;
  int fd = -1;
  block_chld(&old);
  s = slot_find(pid);
  if (s) fd = s->sentinel;
  restore_mask(&old);
  if (fd < 0) errno = ECHILD;
  return fd;
}

/* }====================================================================== */

/* {======================================================================
 * Parent death: PR_SET_PDEATHSIG on Linux, a parent pipe watch elsewhere
 * (and on Linux with MPROC_NO_PDEATHSIG=1).  Each process that forks in
 * watch mode holds the only write end of its "life pipe"; its children
 * inherit the read end and a small thread SIGTERMs the child on EOF.
 * ======================================================================= */

static int life_r = -1, life_w = -1;  /* this process's life pipe */
static int watch_fd = -1;             /* the parent's life pipe, read end */
static int my_sentinel = -1;          /* write end of our own sentinel */
static pid_t watcher_pid;             /* the process whose watch thread runs */
extern char **environ;

static int use_pipe_watch(void) {
#ifdef __linux__
  const char *e = getenv("MPROC_NO_PDEATHSIG");
  return e && e[0] == '1';
#else
  return 1;
#endif
}

static int ensure_life_pipe(void) {
  int fds[2];
  if (life_w >= 0) return 0;
  if (mproc_cloexec_pipe(fds) < 0) return -1;
  life_r = fds[0];
  life_w = fds[1];
  return 0;
}

static void *watcher(void *arg) {
  int fd = (int)(intptr_t)arg;
  char c;
  ssize_t r;
  for (;;) {
    r = read(fd, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;  /* EOF: the parent is gone */
  }
  kill(getpid(), SIGTERM);
  return NULL;
}

/* Called with every signal blocked, so the thread keeps them blocked. */
static void start_watcher(int fd) {
  pthread_t t;
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&a, 64 * 1024);
  if (pthread_create(&t, &a, watcher, (void *)(intptr_t)fd) != 0) {
    static const char msg[] = "mproc: cannot start the parent watch thread\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
  } else {
    watcher_pid = getpid();
  }
  pthread_attr_destroy(&a);
}

/* }====================================================================== */

/* {======================================================================
 * Fork
 * ======================================================================= */

static int ensure_init(void) {
  struct sigaction sa;
  int fds[2];
  if (inited_pid == getpid()) return 0;
  if (mproc_cloexec_pipe(fds) < 0) return -1;
  mproc_set_nonblock(fds[0], 1);
  mproc_set_nonblock(fds[1], 1);
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigchld;
  sa.sa_flags = SA_RESTART | SA_SIGINFO | SA_NOCLDSTOP;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGCHLD, &sa, &old_chld) < 0) {
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  notify_r = fds[0];
  notify_w = fds[1];
  if (!atexit_done) {
    atexit(mproc_exit_path);  /* inherited by children with the memory */
    atexit_done = 1;
  }
  inited_pid = getpid();
  return 0;
}

/* The standard signals only: real-time ones are rarely caught, and the
 * first of them are reserved by the C library (a sigaction each costs
 * start latency). */
static void reset_signals(void) {
  struct sigaction cur, dfl;
  int sig;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (sig = 1; sig < 32 && sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    if (sigaction(sig, NULL, &cur) < 0) continue;
    if ((cur.sa_flags & SA_SIGINFO) ||
        (cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN))
      sigaction(sig, &dfl, NULL);
  }
}

/* In the child, with every signal blocked. */
static void child_setup(int flags, int sp_w, pid_t parent, int watch) {
  sblock *b;
  slot *s;
  int i, detached = flags & MPROC_FORK_DETACHED;
  sigset_t none;
  /* the parent's children are not ours */
  FOR_SLOTS(b, s, i) {
    close_fd(&s->sentinel);
    s->state = SLOT_FREE;
  }
  close_fd(&notify_r);
  close_fd(&notify_w);
  memset(&old_chld, 0, sizeof old_chld);
  old_chld.sa_handler = SIG_DFL;
  inited_pid = 0;
  /* only the parent's own child may hold its sentinel */
  close_fd(&my_sentinel);
  my_sentinel = sp_w;
  /* the parent's life pipe: never hold its write end; watch its read end */
  close_fd(&life_w);
  close_fd(&watch_fd);
  if (watch && !detached) watch_fd = life_r;
  else close_fd(&life_r);
  life_r = -1;
  reset_signals();
#ifdef __linux__
  if (!detached && !watch) prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
  watcher_pid = 0;   /* the parent's watch thread was not copied */
  if (watch_fd >= 0) start_watcher(watch_fd);
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, NULL);
  /* the parent may be gone already (then PDEATHSIG will never come) */
  if (!detached && getppid() != parent) {
    kill(getpid(), SIGTERM);
    _exit(128 + SIGTERM);
  }
}

pid_t mproc_fork(int flags, int *sentinel) {
  int sp[2], watch = 0, e;
  pid_t parent = getpid(), pid;
  sigset_t all, old;
  slot *s;
  if (ensure_init() < 0) return -1;
  if (!(flags & MPROC_FORK_DETACHED) && use_pipe_watch()) {
    if (ensure_life_pipe() < 0) return -1;
    watch = 1;
  }
  if (mproc_cloexec_pipe(sp) < 0) return -1;
  fflush(NULL);  /* else buffered output would be written twice */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  s = slot_alloc();
  if (!s) {
    restore_mask(&old);
    close(sp[0]);
    close(sp[1]);
    errno = ENOMEM;
    return -1;
  }
  pid = fork();
  if (pid < 0) {
    e = errno;
    s->state = SLOT_FREE;
    restore_mask(&old);
    close(sp[0]);
    close(sp[1]);
    errno = e;
    return -1;
  }
  if (pid == 0) {
    close(sp[0]);
    child_setup(flags, sp[1], parent, watch);
    return 0;
  }
  close(sp[1]);
  forked_by = parent;
  s->pid = pid;
  s->flags = flags;
  s->seq = ++seq_counter;
  s->owned = 1;
  s->lost = 0;
  if (flags & MPROC_FORK_PLAIN) s->sentinel = sp[0];
  else if (sentinel) *sentinel = sp[0];
  else close(sp[0]);
  s->state = SLOT_RUNNING;  /* last: now the handler may reap it */
  restore_mask(&old);
  return pid;
}

/* {------ children started elsewhere (src/core/subprocess.c) ------ */

pid_t mproc_child_start(int flags, pid_t (*start)(void *), void *arg) {
  sigset_t all, old;
  slot *s;
  pid_t pid;
  int e;
  if (ensure_init() < 0) return -1;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  s = slot_alloc();
  if (!s) {
    restore_mask(&old);
    errno = ENOMEM;
    return -1;
  }
  pid = start(arg);
  if (pid <= 0) {
    e = pid < 0 ? errno : EINVAL;
    s->state = SLOT_FREE;
    restore_mask(&old);
    errno = e;
    return -1;
  }
  s->pid = pid;   /* not forked_by: a program is not an mproc process */
  s->flags = flags & ~MPROC_FORK_PLAIN;
  s->seq = ++seq_counter;
  s->owned = 1;
  s->lost = 0;
  s->state = SLOT_RUNNING;  /* last: now the handler may reap it */
  restore_mask(&old);
  return pid;
}

int mproc_child_pidfd(pid_t pid) {
#if defined(__linux__) && defined(SYS_pidfd_open)
  sigset_t old;
  slot *s;
  int fd = -1;
  block_chld(&old);
  s = slot_find(pid);
  /* RUNNING before and after the open: no reaper took the pid in between
   * (it moves a slot to REAPING first), so fd is this child's */
  if (s && s->state == SLOT_RUNNING) {
    fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0 && (s->state != SLOT_RUNNING || s->pid != pid)) {
      close(fd);
      fd = -1;
    }
  }
  restore_mask(&old);
  if (fd >= 0) mproc_set_cloexec(fd, 1);
  else errno = ECHILD;
  return fd;
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

/* }------ */

/* }====================================================================== */

/* {======================================================================
 * Spawn: a fresh program (the "spawn" start method) as a child of the
 * table.  Its descriptors: 3 its end of the boot socket (the payload comes
 * through it; held until it ends, so the parent's end is its sentinel), 4
 * the parent's life pipe in watch mode, then the extra ones (pipe ends).
 * ======================================================================= */

#define SPAWN_FD0 3
#define SPAWN_HIGH 64   /* copies above the targets: dup2 order is safe */

pid_t mproc_spawn_proc(int flags, const char *path, char *const argv[],
                       char *const envp[], const int *fds, int nfds, int *boot) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int sv[2], watch = 0, e = 0, i, copies[3 + MPROC_SPAWN_MAXFDS], ncopies = 0;
  pid_t pid = -1;
  sigset_t all, old, none;
  slot *s;
  if (nfds < 0 || nfds > MPROC_SPAWN_MAXFDS) { errno = EINVAL; return -1; }
  if (ensure_init() < 0) return -1;
  if (!(flags & MPROC_FORK_DETACHED) && use_pipe_watch()) {
    if (ensure_life_pipe() < 0) return -1;
    watch = 1;
  }
#ifdef SOCK_CLOEXEC
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -1;
#else
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return -1;
  mproc_set_cloexec(sv[0], 1);
  mproc_set_cloexec(sv[1], 1);
#endif
  /* the sources, copied above every target descriptor */
  copies[ncopies] = fcntl(sv[1], F_DUPFD_CLOEXEC, SPAWN_HIGH);
  if (copies[ncopies] >= 0) ncopies++;
  if (ncopies == 1 && watch) {
    copies[ncopies] = fcntl(life_r, F_DUPFD_CLOEXEC, SPAWN_HIGH);
    if (copies[ncopies] >= 0) ncopies++;
  }
  for (i = 0; i < nfds && ncopies == 1 + watch + i; i++) {
    copies[ncopies] = fcntl(fds[i], F_DUPFD_CLOEXEC, SPAWN_HIGH);
    if (copies[ncopies] >= 0) ncopies++;
  }
  if (ncopies != 1 + watch + nfds) { e = errno; goto done; }
  if ((e = posix_spawn_file_actions_init(&fa)) != 0) goto done;
  if ((e = posix_spawnattr_init(&at)) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    goto done;
  }
  for (i = 0; i < ncopies && e == 0; i++) {
    int target = i == 0 ? SPAWN_FD0 : watch && i == 1 ? SPAWN_FD0 + 1
               : SPAWN_FD0 + 2 + (i - 1 - watch);
    e = posix_spawn_file_actions_adddup2(&fa, copies[i], target);
  }
  sigemptyset(&none);
  if (e == 0) e = posix_spawnattr_setsigmask(&at, &none);
  if (e == 0) e = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
  if (e == 0) {
    fflush(NULL);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    s = slot_alloc();
    if (!s) e = ENOMEM;
    else {
      e = strchr(path, '/') ? posix_spawn(&pid, path, &fa, &at, argv, envp ? envp : environ)
                            : posix_spawnp(&pid, path, &fa, &at, argv, envp ? envp : environ);
      if (e != 0) s->state = SLOT_FREE;
      else {
        forked_by = getpid();
        s->pid = pid;
        s->flags = flags & ~MPROC_FORK_PLAIN;
        s->seq = ++seq_counter;
        s->owned = 1;
        s->lost = 0;
        s->state = SLOT_RUNNING;
      }
    }
    restore_mask(&old);
  }
  posix_spawnattr_destroy(&at);
  posix_spawn_file_actions_destroy(&fa);
done:
  for (i = 0; i < ncopies; i++) close(copies[i]);
  close(sv[1]);
  if (e != 0) {
    close(sv[0]);
    errno = e;
    return -1;
  }
  *boot = sv[0];
  return pid;
}

int mproc_spawned_setup(int detached, pid_t parent, int watch) {
  sigset_t all, old;
  if (fcntl(SPAWN_FD0, F_GETFD) < 0) return -1;
  mproc_set_cloexec(SPAWN_FD0, 1);   /* not for the programs we run */
  my_sentinel = SPAWN_FD0;
  if (!detached && watch && fcntl(SPAWN_FD0 + 1, F_GETFD) >= 0) {
    mproc_set_cloexec(SPAWN_FD0 + 1, 1);
    watch_fd = SPAWN_FD0 + 1;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    start_watcher(watch_fd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
#ifdef __linux__
  if (!detached && !watch) prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
  if (!detached && parent > 0 && getppid() != parent) {
    kill(getpid(), SIGTERM);
    _exit(128 + SIGTERM);
  }
  return 0;
}

int mproc_spawn_watch(int detached) {
  return !detached && use_pipe_watch();
}

int mproc_thread_count(void) {
#ifdef __linux__
  DIR *d = opendir("/proc/self/task");
  struct dirent *de;
  int n = 0;
  if (!d) return -1;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] != '.') n++;
  }
  closedir(d);
  if (watcher_pid == getpid() && n > 1) n--;   /* our own parent watch */
  return n;
#else
  return -1;
#endif
}

/* }====================================================================== */

/* {======================================================================
 * Exit path
 * ======================================================================= */

#define MAX_HOOKS 32
static void (*hooks[MAX_HOOKS])(void);
static int n_hooks;
static pid_t exit_done_pid;

#define MAX_EARLY 4
static void (*early[MAX_EARLY])(void);
static int n_early;

int mproc_on_exit_early(void (*fn)(void)) {
  if (n_early >= MAX_EARLY) {
    errno = ENOMEM;
    return -1;
  }
  early[n_early++] = fn;
  return 0;
}

int mproc_on_exit(void (*fn)(void)) {
  if (n_hooks >= MAX_HOOKS) {
    errno = ENOMEM;
    return -1;
  }
  hooks[n_hooks++] = fn;
  return 0;
}

static void nap(double s) {
  struct timespec ts;
  ts.tv_sec = 0;
  ts.tv_nsec = (long)(s * 1e9);
  nanosleep(&ts, NULL);
}

#define DAEMON_GRACE 1.0  /* seconds between SIGTERM and SIGKILL */

static pid_t join_done_pid;

void mproc_end_children(void) {
  sblock *b;
  slot *s;
  int i, left, st;
  double deadline;
  sigset_t old;
  if (join_done_pid == getpid()) return;
  join_done_pid = getpid();
  while (n_early > 0) early[--n_early]();
  block_chld(&old);
  if (inited_pid == getpid()) {
    /* daemon children are terminated (first, as Python does) */
    FOR_SLOTS(b, s, i) {
      if (LIVE(s) && (s->flags & MPROC_FORK_DAEMON) &&
          !(s->flags & (MPROC_FORK_DETACHED | MPROC_FORK_PLAIN)))
        kill(s->pid, SIGTERM);
    }
    /* the other children are joined; detached and mp.fork ones are not */
    FOR_SLOTS(b, s, i) {
      if (LIVE(s) &&
          !(s->flags & (MPROC_FORK_DAEMON | MPROC_FORK_DETACHED | MPROC_FORK_PLAIN)))
        slot_reap(s, 1, &st);
    }
    deadline = mproc_now() + DAEMON_GRACE;
    do {
      left = 0;
      FOR_SLOTS(b, s, i) {
        if (LIVE(s) && (s->flags & MPROC_FORK_DAEMON) &&
            !(s->flags & (MPROC_FORK_DETACHED | MPROC_FORK_PLAIN)))
          left += slot_reap(s, 0, &st) == 0;
      }
      if (left) nap(0.002);
    } while (left && mproc_now() < deadline);
    if (left) {
      FOR_SLOTS(b, s, i) {
        if (LIVE(s) && (s->flags & MPROC_FORK_DAEMON) &&
            !(s->flags & (MPROC_FORK_DETACHED | MPROC_FORK_PLAIN))) {
          kill(s->pid, SIGKILL);
          slot_reap(s, 1, &st);
        }
      }
    }
  }
  restore_mask(&old);
}

void mproc_exit_path(void) {
  sigset_t old;
  if (exit_done_pid == getpid()) return;
  exit_done_pid = getpid();
  mproc_end_children();
  block_chld(&old);
  while (n_hooks > 0) hooks[--n_hooks]();
  restore_mask(&old);
}

void mproc_exit(int code) {
  mproc_exit_path();
  fflush(NULL);
  _exit(code);
}

int mproc_has_forked(void) {
  return forked_by != 0 && forked_by == getpid();
}

int mproc_cpu_count(void) {
  long n;
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    n = CPU_COUNT(&set);
    if (n > 0) return (int)n;
  }
#endif
  n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* }====================================================================== */
