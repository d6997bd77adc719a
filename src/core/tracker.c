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
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "mproc.h"
#include "tracker.h"

#define NAMELEN 64
#define PASS_EVERY 0.5   /* seconds between looks at dead creators */
#define LINGER 5.0       /* seconds a deposit outlives its depositor */
#define EOF_LINGER 10.0  /* seconds the tracker waits at the end for live holders */
#define CLAIM_WAIT 10000 /* ms a receiver waits for the broker's answer */

/* op: '+' created, '-' unlinked (name); 'D' deposit (the descriptor rides
 * along, SCM_RIGHTS), 'C' claim (a reply socket rides along), 'X' drop
 * (pid + seq name a deposit). */
typedef struct track_msg {
  uint8_t op, kind, pad[2];
  int32_t pid;                /* the creator / depositor */
  uint64_t seq;               /* a deposit's number in its depositor */
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

/* Sends n bytes with at most one descriptor as SCM_RIGHTS ancillary data
 * (fd < 0: none).  The tracker's answers use it too. */
static ssize_t send_fd(int sock, const void *p, size_t n, int fd, int flags) {
  struct msghdr mh;
  struct iovec iov;
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
  ssize_t r;
  memset(&mh, 0, sizeof mh);
  memset(&u, 0, sizeof u);
  iov.iov_base = (void *)p;
  iov.iov_len = n;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (fd >= 0) {
    struct cmsghdr *cm;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof u.buf;
    cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
  }
  do r = sendmsg(sock, &mh, flags);
  while (r < 0 && errno == EINTR);
  return r;
}

/* The descriptor broker (tracker.h): one message, one descriptor. */
#ifdef SOCK_SEQPACKET
static int send_with_fd(int sock, const track_msg *m, int fd) {
  return send_fd(sock, m, sizeof *m, fd, MSG_NOSIGNAL) == (ssize_t)sizeof *m ? 0 : -1;
}
#endif

#ifdef MSG_CMSG_CLOEXEC
#define RECV_CLOEXEC MSG_CMSG_CLOEXEC
#else
#define RECV_CLOEXEC 0
#endif

static uint64_t deposit_seq;
static pid_t deposit_pid;

int mproc_broker_deposit(int fd, long *broker, uint64_t *seq) {
#ifdef SOCK_SEQPACKET
  track_msg m;
  if (!tracker_ok() && start_tracker() != 0) return -1;
  if (deposit_pid != getpid()) {  /* a fork child numbers its own */
    deposit_pid = getpid();
    deposit_seq = 0;
  }
  memset(&m, 0, sizeof m);
  m.op = 'D';
  m.pid = (int32_t)getpid();
  m.seq = ++deposit_seq;
  if (send_with_fd(tracker_fd, &m, fd) != 0) {
    /* the tracker died: as mproc_track_created does, start another (only
     * processes forked from now on share it: the others are told so) */
    if (tracker_owner == getpid() && tracker_child > 0)
      waitpid(tracker_child, NULL, WNOHANG);
    if (start_tracker() != 0 || send_with_fd(tracker_fd, &m, fd) != 0) return -1;
  }
  *broker = (long)tracker_child;
  *seq = m.seq;
  return 0;
#else
  (void)fd; (void)broker; (void)seq;
  errno = ENOTSUP;
  return -1;
#endif
}

void mproc_broker_drop(long pid, uint64_t seq) {
  track_msg m;
  int saved = errno;
  if (tracker_ok()) {
    memset(&m, 0, sizeof m);
    m.op = 'X';
    m.pid = (int32_t)pid;
    m.seq = seq;
    send_msg(&m);
  }
  errno = saved;
}

int mproc_broker_claim(long pid, uint64_t seq, int *fd, int abandon) {
#ifdef SOCK_SEQPACKET
  track_msg m;
  int sv[2], r = -1, got = -1;
  char status = 0;
  if (!tracker_ok()) { errno = ENOTCONN; return -1; }
  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0) return -1;
  mproc_set_cloexec(sv[0], 1);
  mproc_set_cloexec(sv[1], 1);
  memset(&m, 0, sizeof m);
  m.op = 'C';
  m.pid = (int32_t)pid;
  m.seq = seq;
  if (send_with_fd(tracker_fd, &m, sv[1]) != 0) goto out;
  close(sv[1]);
  sv[1] = -1;
  if (abandon) return 0;   /* test hook: sv[0] stays open until we die */
  for (;;) {
    struct pollfd p;
    struct msghdr mh;
    struct iovec iov;
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
    struct cmsghdr *cm;
    ssize_t n;
    int pr;
    p.fd = sv[0];
    p.events = POLLIN;
    pr = poll(&p, 1, CLAIM_WAIT);
    if (pr < 0 && errno == EINTR) continue;
    if (pr == 0) { errno = ETIMEDOUT; goto out; }
    if (pr < 0) goto out;
    memset(&mh, 0, sizeof mh);
    iov.iov_base = &status;
    iov.iov_len = 1;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof u.buf;
    n = recvmsg(sv[0], &mh, RECV_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) goto out;
    if (n == 0) { errno = ECONNRESET; goto out; }   /* the broker died */
    for (cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm))
      if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
          cm->cmsg_len >= CMSG_LEN(sizeof(int)))
        memcpy(&got, CMSG_DATA(cm), sizeof(int));
    break;
  }
  if (status == 'y' && got >= 0) {
    *fd = got;
    r = 1;
  } else {
    if (got >= 0) close(got);
    r = 0;
  }
out:
  {
    int saved = errno;
    close(sv[0]);
    if (sv[1] >= 0) close(sv[1]);
    errno = saved;
  }
  return r;
#else
  (void)pid; (void)seq; (void)fd; (void)abandon;
  errno = ENOTSUP;
  return -1;
#endif
}

long mproc_tracker_pid(void) { return tracker_ok() ? (long)tracker_child : 0; }

int mproc_tracker_ensure(void) {
  int saved = errno, r = tracker_ok() ? 0 : start_tracker();
  errno = saved;
  return r;
}

int mproc_tracker_export(int *fd, long *pid) {
  if (!tracker_ok() && start_tracker() != 0) return -1;
  *fd = tracker_fd;
  *pid = (long)tracker_child;
  return 0;
}

int mproc_tracker_adopt(int fd, long pid) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -1;
  if (!S_ISSOCK(st.st_mode) || pid <= 0) { errno = EINVAL; return -1; }
  mproc_set_cloexec(fd, 1);
  tracker_fd = fd;
  tracker_dev = st.st_dev;
  tracker_ino = st.st_ino;
  tracker_owner = 0;          /* not our child: never reaped or closed here */
  tracker_child = (pid_t)pid;
  return 0;
}

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

/* Doubles an array kept in anonymous mappings (no malloc here): *p holds
 * n used elements of `size` bytes out of *cap (0: none yet, first gets). */
static int grow_array(void **p, size_t *cap, size_t n, size_t size, size_t first) {
  size_t ncap = *cap ? *cap * 2 : first;
  void *t = mmap(NULL, ncap * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (t == MAP_FAILED) return -1;
  if (*p != NULL) {
    memcpy(t, *p, n * size);
    munmap(*p, *cap * size);
  }
  *p = t;
  *cap = ncap;
  return 0;
}

static int grow(void) {
  void *p = table;
  int r = grow_array(&p, &cap_entries, n_entries, sizeof *table, 256);
  table = (entry *)p;
  return r;
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

/* Deposited descriptors: one-shot, by (depositor pid, seq).  dead is
 * when the depositor was first seen gone (0: alive). */
typedef struct deposit {
  int32_t pid;
  int fd;
  uint64_t seq;
  double dead;
} deposit;

static deposit *deps;
static size_t n_deps, cap_deps;

static int grow_deps(void) {
  void *p = deps;
  int r = grow_array(&p, &cap_deps, n_deps, sizeof *deps, 64);
  deps = (deposit *)p;
  return r;
}

static size_t find_dep(int32_t pid, uint64_t seq) {
  size_t i;
  for (i = 0; i < n_deps; i++)
    if (deps[i].pid == pid && deps[i].seq == seq) break;
  return i;
}

static void drop_dep(size_t i) {
  close(deps[i].fd);
  deps[i] = deps[--n_deps];
}

/* Answers a claim on the receiver's reply socket: 'y' with the descriptor,
 * or 'n'.  Never blocks: a receiver that is gone (or never reads) gets
 * nothing, and the descriptor in flight is closed with its socket. */
static void answer(const track_msg *m, int reply) {
  size_t i = find_dep(m->pid, m->seq);
  char status = i < n_deps ? 'y' : 'n';
  send_fd(reply, &status, 1, status == 'y' ? deps[i].fd : -1, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (status == 'y') drop_dep(i);   /* one-shot, whether it arrived or not */
}

/* A message with the descriptors that came with it (-1: none). */
static void apply_fd(const track_msg *m, int *fds, int nfds) {
  int i;
  if (m->op == 'D' && nfds >= 1) {
    size_t j = find_dep(m->pid, m->seq);
    if (j < n_deps) drop_dep(j);   /* a reused pid's stale one */
    if (n_deps < cap_deps || grow_deps() == 0) {
      deps[n_deps].pid = m->pid;
      deps[n_deps].seq = m->seq;
      deps[n_deps].fd = fds[0];
      deps[n_deps].dead = 0;
      n_deps++;
      fds[0] = -1;
    }
  } else if (m->op == 'C' && nfds >= 1) {
    answer(m, fds[0]);
  } else if (m->op == 'X') {
    size_t j = find_dep(m->pid, m->seq);
    if (j < n_deps) drop_dep(j);
  }
  for (i = 0; i < nfds; i++)
    if (fds[i] >= 0) close(fds[i]);
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

/* A deposit whose depositor is gone is kept LINGER seconds more (a
 * message it sent may still be on its way), then closed, so that the
 * peer of an end nobody received sees EOF. */
static void pass_deps(void) {
  size_t i = 0;
  double now = mproc_now();
  while (i < n_deps) {
    deposit *d = &deps[i];
    if (creator_alive(d->pid)) { d->dead = 0; i++; continue; }
    if (d->dead == 0) d->dead = now;
    if (now - d->dead >= LINGER) { drop_dep(i); continue; }
    i++;
  }
}

static void pass(int final) {
  size_t i = 0;
  n_seen = 0;
  if (!final) pass_deps();
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

#define MAXFDS 4

/* One message and the descriptors that came with it (at most MAXFDS; a
 * truncated control part has had the rest closed by the kernel). */
static ssize_t recv_msg(int fd, track_msg *m, int *fds, int *nfds) {
  struct msghdr mh;
  struct iovec iov;
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int) * MAXFDS)]; } u;
  struct cmsghdr *cm;
  ssize_t got;
  *nfds = 0;
  memset(&mh, 0, sizeof mh);
  iov.iov_base = m;
  iov.iov_len = sizeof *m;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = u.buf;
  mh.msg_controllen = sizeof u.buf;
  got = recvmsg(fd, &mh, MSG_DONTWAIT | RECV_CLOEXEC);
  if (got < 0) return got;
  for (cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
      size_t k, n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (k = 0; k < n; k++) {
        int f;
        memcpy(&f, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
        if (*nfds < MAXFDS) fds[(*nfds)++] = f;
        else close(f);
      }
    }
  }
  return got;
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
    int busy = n_entries > 0 || n_deps > 0;
    int timeout = busy ? (int)(PASS_EVERY * 1000) : -1;
    int r = poll(&p, 1, timeout);
    if (r > 0) {
      for (;;) {
        track_msg m;
        int fds[MAXFDS], nfds;
        ssize_t got = recv_msg(fd, &m, fds, &nfds);
        if (got == (ssize_t)sizeof m) {
          if (nfds > 0 || m.op == 'X') apply_fd(&m, fds, nfds);
          else apply(&m);
          continue;
        }
        if (got >= 0) {   /* a short message: drop what came with it */
          int i;
          for (i = 0; i < nfds; i++) close(fds[i]);
        }
        if (got == 0) eof = 1;
        else if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) eof = 1;
        else if (got > 0) continue;
        break;
      }
    }
    busy = n_entries > 0 || n_deps > 0;
    if (!eof && busy && mproc_now() - last >= PASS_EVERY) {
      pass(0);
      last = mproc_now();
    }
  }
  /* The tree has ended.  A process that holds a name without holding this
   * socket (one that closed it, or started before it could inherit it) may
   * still be ending: keep looking a while before leaving its names. */
  {
    double until = mproc_now() + EOF_LINGER;
    for (;;) {
      pass(1);
      if (n_entries == 0 || mproc_now() >= until) break;
      mproc_sleep(0.1);
    }
  }
  _exit(0);
}

/* }====================================================================== */
