/*
 * tracker.c: the segment tracker process (see tracker.h).
 *
 * The tracker is forked, so it must not use malloc or stdio (the parent
 * may have other threads): its table lives in an anonymous mapping and it
 * only makes plain system calls.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "mproc.h"
#include "tracker.h"

#define NAMELEN 64
#define PASS_EVERY 0.5   /* seconds between looks at dead creators */

typedef struct track_msg {
  uint8_t op, kind, pad[2];   /* op: '+' created, '-' unlinked */
  int32_t pid;                /* the creator */
  char name[NAMELEN];
} track_msg;

/* {======================================================================
 * The client side (every process of the tree)
 * ======================================================================= */

static int tracker_fd = -1;
static dev_t tracker_dev;
static ino_t tracker_ino;
static pid_t tracker_owner, tracker_child;

static void run_tracker(int fd);

/* The descriptor is still our socket (a program may have closed or reused
 * the number since). */
static int tracker_ok(void) {
  struct stat st;
  if (tracker_fd < 0) return 0;
  if (fstat(tracker_fd, &st) != 0) return 0;
  return st.st_dev == tracker_dev && st.st_ino == tracker_ino;
}

static int start_tracker(void) {
  int sv[2];
  struct stat st;
  pid_t pid;
  int type = SOCK_STREAM, old_ours = tracker_ok() && tracker_owner == getpid();
#ifdef SOCK_SEQPACKET
  type = SOCK_SEQPACKET;   /* whole messages from many writers */
#endif
#ifdef SOCK_CLOEXEC
  type |= SOCK_CLOEXEC;    /* no window in which an exec could inherit it */
#endif
  if (socketpair(AF_UNIX, type, 0, sv) != 0) return -1;
  pid = fork();
  if (pid < 0) { close(sv[0]); close(sv[1]); return -1; }
  if (pid == 0) {
    close(sv[1]);
    run_tracker(sv[0]);
  }
  close(sv[0]);
  /* exec'd programs must not keep the tracker waiting */
  mproc_set_cloexec(sv[1], 1);
  if (fstat(sv[1], &st) != 0) { close(sv[1]); return -1; }
  /* a number the program reused since is not ours to close */
  if (old_ours) close(tracker_fd);
  tracker_fd = sv[1];
  tracker_dev = st.st_dev;
  tracker_ino = st.st_ino;
  tracker_owner = getpid();
  tracker_child = pid;
  /* after a tracker died, or in a process that closed the inherited socket */
  mproc_shm_retrack();
  mproc_ring_retrack();
  return 0;
}

static int send_msg(const track_msg *m) {
  ssize_t r;
  do r = send(tracker_fd, m, sizeof *m, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return r == (ssize_t)sizeof *m ? 0 : -1;
}

static void fill(track_msg *m, int op, int kind, const char *name) {
  size_t n = strlen(name);
  memset(m, 0, sizeof *m);
  m->op = (uint8_t)op;
  m->kind = (uint8_t)kind;
  m->pid = (int32_t)getpid();
  if (n >= NAMELEN) n = NAMELEN - 1;
  memcpy(m->name, name, n);
}

void mproc_track_created(const char *name, int kind) {
  track_msg m;
  int saved = errno;
  fill(&m, '+', kind, name);
  if (!tracker_ok() && start_tracker() != 0) goto out;
  if (send_msg(&m) != 0) {
    /* the tracker died: reap ours, start another, say it again */
    if (tracker_owner == getpid() && tracker_child > 0)
      waitpid(tracker_child, NULL, WNOHANG);
    if (start_tracker() == 0) send_msg(&m);
  }
out:
  errno = saved;
}

void mproc_track_unlinked(const char *name) {
  track_msg m;
  int saved = errno;
  if (tracker_ok()) {
    fill(&m, '-', 0, name);
    send_msg(&m);
  }
  errno = saved;
}

long mproc_tracker_pid(void) { return tracker_ok() ? (long)tracker_child : 0; }

/* }====================================================================== */

/* {======================================================================
 * The tracker process
 * ======================================================================= */

typedef struct entry {
  int32_t pid;
  int32_t kind;
  char name[NAMELEN];
} entry;

static entry *table;
static size_t n_entries, cap_entries;

static int grow(void) {
  size_t ncap = cap_entries ? cap_entries * 2 : 256;
  entry *t = mmap(NULL, ncap * sizeof *t, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (t == MAP_FAILED) return -1;
  if (table != NULL) {
    memcpy(t, table, n_entries * sizeof *t);
    munmap(table, cap_entries * sizeof *t);
  }
  table = t;
  cap_entries = ncap;
  return 0;
}

static void forget(size_t i) {
  table[i] = table[--n_entries];
}

static void apply(const track_msg *m) {
  size_t i;
  char name[NAMELEN];
  memcpy(name, m->name, NAMELEN);
  name[NAMELEN - 1] = '\0';
  if (name[0] != '/') return;
  for (i = 0; i < n_entries; i++)
    if (strcmp(table[i].name, name) == 0) break;
  if (m->op == '-') {
    if (i < n_entries) forget(i);
    return;
  }
  if (m->op != '+' || (m->kind != MPROC_TRACK_SEG && m->kind != MPROC_TRACK_RING)) return;
  if (i == n_entries) {
    if (n_entries == cap_entries && grow() != 0) return;
    n_entries++;
  }
  table[i].pid = m->pid;
  table[i].kind = m->kind;
  memcpy(table[i].name, name, NAMELEN);
}

/* A zombie has run its exit path already: it holds nothing. */
static int alive(long pid) {
  if (pid <= 0) return 0;
  if (kill((pid_t)pid, 0) != 0 && errno != EPERM) return 0;
#ifdef __linux__
  {
    char path[40], buf[512];
    int fd;
    ssize_t n;
    char *p;
    int len = 0;
    long v = pid;
    char digits[24];
    /* "/proc/<pid>/stat" without snprintf (not async-signal-safe) */
    do { digits[len++] = (char)('0' + v % 10); v /= 10; } while (v > 0);
    memcpy(path, "/proc/", 6);
    for (n = 0; n < len; n++) path[6 + n] = digits[len - 1 - n];
    memcpy(path + 6 + len, "/stat", 6);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X')) return 0;
  }
#endif
  return 1;
}

/* Many names share a creator: one look at each pid per pass. */
#define SEEN 16
static long seen_pid[SEEN];
static int seen_alive[SEEN], n_seen;

static int creator_alive(long pid) {
  int i, a;
  for (i = 0; i < n_seen; i++)
    if (seen_pid[i] == pid) return seen_alive[i];
  a = alive(pid);
  i = n_seen < SEEN ? n_seen++ : (int)(pid % SEEN);
  seen_pid[i] = pid;
  seen_alive[i] = a;
  return a;
}

static void pass(int final) {
  size_t i = 0;
  n_seen = 0;
  while (i < n_entries) {
    entry *e = &table[i];
    int held;
    if (!final && creator_alive(e->pid)) { i++; continue; }
    held = e->kind == MPROC_TRACK_RING ? mproc_ring_name_held(e->name, alive, final)
                                       : mproc_seg_name_held(e->name, alive, final);
    if (held > 0) { i++; continue; }
    if (held == 0) {
      if (e->kind == MPROC_TRACK_RING) mproc_ring_unlink_name(e->name);
      else shm_unlink(e->name);
    }
    forget(i);
  }
}

static void close_others(int keep) {
  long fd, max = 1024;
  struct rlimit rl;
#if defined(__linux__) && defined(SYS_close_range)
  if (syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0) == 0) {
    for (fd = 0; fd < keep; fd++) close((int)fd);
    return;
  }
#endif
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    max = rl.rlim_cur > 65536 ? 65536 : (long)rl.rlim_cur;
  for (fd = 0; fd < max; fd++)
    if (fd != keep) close((int)fd);
}

static void run_tracker(int fd) {
  struct pollfd p;
  sigset_t none;
  int sig, eof = 0, devnull;
  double last = mproc_now();
  /* Hold nothing of the parent's: no pipe it shares, no terminal. */
  if (fd != 3) {
    if (dup2(fd, 3) < 0) _exit(1);
    fd = 3;
  }
  close_others(fd);
  devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, 0); dup2(devnull, 1); dup2(devnull, 2);
    if (devnull > 2) close(devnull);
  }
  /* Ctrl-C, a hang-up or a group kill of the tree must not stop the
   * cleanup: the tracker ends on its own at EOF. */
  for (sig = 1; sig < 32; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    signal(sig, (sig == SIGINT || sig == SIGTERM || sig == SIGHUP ||
                 sig == SIGQUIT || sig == SIGPIPE) ? SIG_IGN : SIG_DFL);
  }
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  setsid();
  if (chdir("/") != 0) { /* nothing depends on the directory */ }
#ifdef __linux__
  prctl(PR_SET_NAME, "mproc-tracker", 0, 0, 0);
#endif
  p.fd = fd;
  p.events = POLLIN;
  while (!eof) {
    int timeout = n_entries > 0 ? (int)(PASS_EVERY * 1000) : -1;
    int r = poll(&p, 1, timeout);
    if (r > 0) {
      for (;;) {
        track_msg m;
        ssize_t got = recv(fd, &m, sizeof m, MSG_DONTWAIT);
        if (got == (ssize_t)sizeof m) { apply(&m); continue; }
        if (got == 0) eof = 1;
        else if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) eof = 1;
        break;
      }
    }
    if (!eof && n_entries > 0 && mproc_now() - last >= PASS_EVERY) {
      pass(0);
      last = mproc_now();
    }
  }
  pass(1);
  _exit(0);
}

/* }====================================================================== */
