/*
 * src/core/subprocess.c: posix_spawn with pipes (the children go into
 * src/core/process.c's child table), writes that cannot raise SIGPIPE, and
 * communicate's pump.  The idea of reporting exec failures to the parent comes
 * from libuv (src/unix/process.c); glibc's posix_spawn already does it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mproc.h"
#include "subprocess.h"

extern char **environ;


static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* The signals that the child gets back to their default action: exec
 * keeps ignored signals ignored, and Lua hosts often ignore SIGPIPE. */
static void default_signals(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGPIPE);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGQUIT);
  sigaddset(set, SIGHUP);
  sigaddset(set, SIGCHLD);
#ifdef SIGXFSZ
  sigaddset(set, SIGXFSZ);
#endif
}

typedef struct spawn_call {
  const mproc_spawn_opts *o;
  posix_spawn_file_actions_t *fa;
  posix_spawnattr_t *at;
  char *const *env;
  pid_t pid;
} spawn_call;

/* mproc_child_start's start: the pid, or -1 with errno. */
static pid_t spawn_start(void *arg) {
  spawn_call *c = (spawn_call *)arg;
  const char *file = c->o->argv[0];
  int e = strchr(file, '/') ? posix_spawn(&c->pid, file, c->fa, c->at, c->o->argv, c->env)
                            : posix_spawnp(&c->pid, file, c->fa, c->at, c->o->argv, c->env);
  if (e != 0) {
    errno = e;
    return -1;
  }
  return c->pid;
}

int mproc_spawn(const mproc_spawn_opts *o, pid_t *pid, int pipes[3]) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  sigset_t set;
  int child_end[3] = {-1, -1, -1}, p[2], i, err = 0, devnull = -1;
  char *const *env = o->envp ? o->envp : environ;
  for (i = 0; i < 3; i++) pipes[i] = -1;
  for (i = 0; i < 3 && !err; i++) {
    if (o->mode[i] == MPROC_STDIO_PIPE) {
      if (mproc_cloexec_pipe(p) < 0) { err = errno; break; }
      /* fd 0: the child reads p[0]; fds 1, 2: the child writes p[1] */
      child_end[i] = i == 0 ? p[0] : p[1];
      pipes[i] = i == 0 ? p[1] : p[0];
      mproc_set_nonblock(pipes[i], 1);
    } else if (o->mode[i] == MPROC_STDIO_DEVNULL && devnull < 0) {
      devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
      if (devnull < 0) err = errno;
    }
  }
  if (err) goto done;
  if ((err = posix_spawn_file_actions_init(&fa)) != 0) goto done;
  if ((err = posix_spawnattr_init(&at)) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    goto done;
  }
  for (i = 0; i < 3 && !err; i++) {
    switch (o->mode[i]) {
      case MPROC_STDIO_PIPE:
        err = posix_spawn_file_actions_adddup2(&fa, child_end[i], i);
        break;
      case MPROC_STDIO_DEVNULL:
        err = posix_spawn_file_actions_adddup2(&fa, devnull, i);
        break;
      case MPROC_STDIO_FD:
        err = posix_spawn_file_actions_adddup2(&fa, o->fd[i], i);
        break;
      case MPROC_STDIO_STDOUT:
        err = posix_spawn_file_actions_adddup2(&fa, 1, 2);
        break;
      default: break;
    }
  }
  if (!err && o->cwd) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 29))
    err = posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
#else
    err = ENOSYS;  /* no posix_spawn chdir action on this C library */
#endif
  }
  if (!err) {
    default_signals(&set);
    err = posix_spawnattr_setsigdefault(&at, &set);
  }
  if (!err) {
    sigemptyset(&set);
    err = posix_spawnattr_setsigmask(&at, &set);
  }
  if (!err) {
    short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
    if (o->new_session) {
      /* a session (and process group) of its own: killpg(pid) ends the whole
       * tree; without POSIX_SPAWN_SETSID, at least a group of its own */
#ifdef POSIX_SPAWN_SETSID
      flags |= POSIX_SPAWN_SETSID;
#else
      flags |= POSIX_SPAWN_SETPGROUP;
      err = posix_spawnattr_setpgroup(&at, 0);
#endif
    }
    if (!err) err = posix_spawnattr_setflags(&at, flags);
  }
  if (!err) {
    spawn_call sc;
    sc.o = o;
    sc.fa = &fa;
    sc.at = &at;
    sc.env = env;
    /* in the child table (DETACHED: not joined at our exit, as Python
     * leaves its Popen children): the SIGCHLD handler reaps it */
    if (mproc_child_start(MPROC_FORK_DETACHED, spawn_start, &sc) < 0) err = errno;
    else *pid = sc.pid;
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
done:
  for (i = 0; i < 3; i++) {
    close_fd(&child_end[i]);
    if (err) close_fd(&pipes[i]);
  }
  close_fd(&devnull);
  if (err) {
    errno = err;
    return -1;
  }
  return 0;
}

ssize_t mproc_write_nosigpipe(int fd, const void *p, size_t n) {
  sigset_t pipe_set, old, pending;
  ssize_t w;
  int e;
  struct timespec zero = {0, 0};
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  /* SIGPIPE pending already (from someone else): leave it alone */
  sigpending(&pending);
  if (sigismember(&pending, SIGPIPE)) {
    do w = write(fd, p, n); while (w < 0 && errno == EINTR);
    return w;
  }
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  do w = write(fd, p, n); while (w < 0 && errno == EINTR);
  e = errno;
  if (w < 0 && e == EPIPE) {
    /* consume the SIGPIPE our write raised, then unblock */
    while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {}
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = e;
  return w;
}

/* {======================================================================
 * communicate
 * ======================================================================= */

#define COMM_CHUNK 65536
#define COMM_SLICE 0.01

/* A pipe is done: out of the poller first (poll() would see it closed). */
static void comm_close(mproc_comm *c, int i) {
  if (c->polled) mproc_poller_del(&c->set, c->pipes[i]);
  close_fd(&c->pipes[i]);
}

void mproc_comm_start(mproc_comm *c, int pipes[3], const char *in, size_t n) {
  int i;
  memset(c, 0, sizeof *c);
  c->pipes = pipes;
  c->in = in;
  c->inlen = in ? n : 0;
  if (c->inlen == 0) close_fd(&pipes[0]);
  c->polled = mproc_poller_init(&c->set) == 0;
  for (i = 0; i < 3 && c->polled; i++) {
    if (pipes[i] < 0) continue;
    if (mproc_poller_ctl(&c->set, MPROC_POLLER_ADD, pipes[i],
                         i == 0 ? MPROC_WAIT_WRITE : MPROC_WAIT_READ) < 0) {
      mproc_poller_close(&c->set);
      c->polled = 0;
    }
  }
}

/* One pass over the pipes; 1 when something moved, 0 when every pipe
 * would block, -1 on an error (errno). */
static int comm_once(mproc_comm *c) {
  int moved = 0, i;
  if (c->pipes[0] >= 0) {
    size_t left = c->inlen - c->inpos;
    ssize_t w = mproc_write_nosigpipe(c->pipes[0], c->in + c->inpos,
                                      left > COMM_CHUNK ? COMM_CHUNK : left);
    if (w > 0) {
      c->inpos += (size_t)w;
      moved = 1;
      if (c->inpos >= c->inlen) comm_close(c, 0);
    } else if (w < 0 && errno == EPIPE) {
      comm_close(c, 0);   /* the program does not read its input */
      moved = 1;
    } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      return -1;
    }
  }
  for (i = 1; i <= 2; i++) {
    mproc_bytes *b = &c->out[i - 1];
    ssize_t r;
    if (c->pipes[i] < 0) continue;
    if (b->cap - b->len < COMM_CHUNK && mproc_bytes_reserve(b, b->len + COMM_CHUNK) < 0)
      return -1;
    do r = read(c->pipes[i], b->data + b->len, b->cap - b->len);
    while (r < 0 && errno == EINTR);
    if (r > 0) {
      b->len += (size_t)r;
      moved = 1;
    } else if (r == 0) {
      comm_close(c, i);
      moved = 1;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return -1;
    }
  }
  return moved;
}

int mproc_comm_step(mproc_comm *c, int *waitfd, int *slice) {
  int r, i;
  while ((r = comm_once(c)) > 0) {}
  if (r < 0) return -1;
  *waitfd = -1;
  *slice = 0;
  for (i = 0; i < 3 && *waitfd < 0; i++)
    if (c->pipes[i] >= 0) *waitfd = c->pipes[i];
  if (*waitfd < 0) return 1;
  if (c->polled && mproc_poller_fileno(&c->set) >= 0) *waitfd = mproc_poller_fileno(&c->set);
  else *slice = 1;
  return 0;
}

int mproc_comm_run(mproc_comm *c, double timeout) {
  double deadline = timeout < 0 ? -1 : mproc_now() + timeout;
  for (;;) {
    int fd, slice, r = mproc_comm_step(c, &fd, &slice), out[8];
    double left = deadline < 0 ? -1 : deadline - mproc_now();
    if (r != 0) return r;
    if (deadline >= 0 && left <= 0) return 0;
    if (c->polled) {   /* every pipe at once, poll() fallback included */
      if (mproc_poller_wait(&c->set, out, 8, left) < 0) return -1;
    } else {
      if (slice && (left < 0 || left > COMM_SLICE)) left = COMM_SLICE;
      if (mproc_wait_fd(fd, MPROC_WAIT_READ, left) < 0) return -1;
    }
  }
}

void mproc_comm_end(mproc_comm *c) {
  int i;
  for (i = 0; i < 2; i++) mproc_bytes_free(&c->out[i]);
  if (c->polled) mproc_poller_close(&c->set);
  c->polled = 0;
  c->in = NULL;
}

/* }====================================================================== */
