/*
 * src/core/queue.c: the shared-memory message ring of mp.Queue (see src/core/queue.h).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mproc.h"
#include "queue.h"

#define RING_MAGIC   0x6d717232u   /* "mqr2": futex words, no condvars */
#define RING_DEFCAP  ((size_t)4 << 20)
#define RING_MINCAP  ((size_t)4096)
#define FRAME_HDR    8

struct mproc_ring_hdr {
  uint32_t magic, kind;
  uint64_t cap, maxsize, dataoff;
  int32_t overflow;             /* handles not in `holders` (under mu) */
  uint32_t pad0;
  struct { int32_t pid, n; } holders[64];  /* open handles per process */
  uint64_t seq;                 /* big-segment counter (atomic) */
  pthread_mutex_t mu;
  /* Futex words, bumped under mu when an item comes (w_get), goes (w_put)
   * or the last task is done (w_join).  No condvar: glibc's process-shared
   * condvar waits for a SIGKILLed waiter inside pthread_cond_signal. */
  uint32_t w_get, w_put, w_join;
  /* guarded by mu */
  uint64_t head, tail;          /* byte offsets, only grow */
  uint64_t count, unfinished;
  /* sleepers per word; a dead one stays counted: a spurious wake, no more */
  uint32_t getters, putters, joiners;
  /* journal: the values before the change in progress */
  uint32_t j_valid;
  uint64_t j_head, j_tail, j_count, j_unfinished;
  uint32_t j_claim;             /* claim slot + 1 changed with it, 0: none */
  uint32_t notify;              /* see mproc_ring_notify */
  uint64_t j_claim_tid;
  mproc_ring_claim claims[MPROC_RING_CLAIMS];
};

#define DATA(h) ((char *)(h) + (h)->dataoff)
#define FENCE() __atomic_signal_fence(__ATOMIC_SEQ_CST)

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* {======================================================================
 * Private buffers
 * ======================================================================= */

int mproc_bytes_reserve(mproc_bytes *b, size_t need) {
  size_t cap;
  char *p;
  if (b->cap >= need) return 0;
  cap = b->cap ? b->cap : 256;
  while (cap < need) {
    if (cap > ((size_t)-1) / 2) { errno = ENOMEM; return -1; }
    cap *= 2;
  }
  p = realloc(b->data, cap);
  if (p == NULL) { errno = ENOMEM; return -1; }
  b->data = p;
  b->cap = cap;
  return 0;
}

void mproc_bytes_free(mproc_bytes *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* }====================================================================== */

/* {======================================================================
 * Unlinking: rings this process created are unlinked at its exit
 * ======================================================================= */

typedef struct created {
  struct created *next;
  pid_t pid;
  char name[MPROC_RING_NAMELEN];
} created;

static created *created_list;
static int atexit_done;

/* Unlinks the big segments of ring `name` (Linux: every leftover, even
 * one whose frame was never published). */
static void unlink_bigs(const char *name) {
#ifdef __linux__
  DIR *d = opendir("/dev/shm");
  struct dirent *e;
  size_t n = strlen(name + 1);
  char path[300];
  if (d == NULL) return;
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, name + 1, n) == 0 && e->d_name[n] == '.' &&
        strlen(e->d_name) < sizeof path - 1) {
      snprintf(path, sizeof path, "/%s", e->d_name);
      shm_unlink(path);
    }
  }
  closedir(d);
#else
  (void)name;
#endif
}

/* Unlinks the big segments still queued in a mapped ring. */
static void discard_queued(mproc_ring_hdr *h) {
  uint64_t off = h->head;
  char name[MPROC_RING_NAMELEN + 32];
  while (off < h->tail) {
    const char *f = DATA(h) + (off & (h->cap - 1));
    uint32_t len, flags;
    memcpy(&len, f, 4);
    memcpy(&flags, f + 4, 4);
    if ((flags & MPROC_FRAME_BIG) && len < sizeof name) {
      uint64_t p = (off + FRAME_HDR) & (h->cap - 1);
      size_t first = h->cap - p < len ? (size_t)(h->cap - p) : len;
      memcpy(name, DATA(h) + p, first);
      memcpy(name + first, DATA(h), len - first);
      name[len] = '\0';
      shm_unlink(name);
    }
    off += FRAME_HDR + pad8(len);
  }
}

/* created_list changes with SIGTERM blocked: the SIGTERM hook walks it. */
static void block_term(sigset_t *old) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, old);
}

static void forget_created(const char *name) {
  created **pp = &created_list, *gone = NULL;
  sigset_t old;
  block_term(&old);
  while (*pp) {
    if (strcmp((*pp)->name, name) == 0) {
      gone = *pp;
      *pp = gone->next;
      break;
    }
    pp = &(*pp)->next;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  free(gone);
}

static void unlink_at_exit(void) {
  pid_t me = getpid();
  created *c;
  for (c = created_list; c; c = c->next) {
    if (c->pid != me) continue;       /* inherited through fork: not ours */
    shm_unlink(c->name);
    unlink_bigs(c->name);
    mproc_track_unlinked(c->name);
  }
}

/* The big segments of ring `name`, without opendir (it allocates): raw
 * getdents64 into a stack buffer, so a SIGTERM handler may call it. */
static void unlink_bigs_signal_safe(const char *name) {
#if defined(__linux__) && defined(SYS_getdents64)
  char buf[4096], path[300];
  size_t n = strlen(name + 1);
  long got;
  int fd = open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  while ((got = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
    long off = 0;
    while (off < got) {
      struct dirent64 *e = (struct dirent64 *)(void *)(buf + off);
      size_t len = strlen(e->d_name);
      if (strncmp(e->d_name, name + 1, n) == 0 && e->d_name[n] == '.' &&
          len < sizeof path - 1) {
        path[0] = '/';
        memcpy(path + 1, e->d_name, len + 1);
        shm_unlink(path);
      }
      off += e->d_reclen;
    }
  }
  close(fd);
#else
  (void)name;
#endif
}

/* SIGTERM: the rings this process created go as they would at exit. */
static void unlink_on_term(void) {
  pid_t me = getpid();
  created *c;
  for (c = created_list; c; c = c->next) {
    if (c->pid != me) continue;
    shm_unlink(c->name);
    unlink_bigs_signal_safe(c->name);
    mproc_track_unlinked(c->name);
  }
}

void mproc_ring_retrack(void) {
  pid_t me = getpid();
  created *c;
  for (c = created_list; c; c = c->next)
    if (c->pid == me) mproc_track_created(c->name, MPROC_TRACK_RING);
}

void mproc_ring_unlink_name(const char *name) {
  shm_unlink(name);
  unlink_bigs_signal_safe(name);
}

/* For the tracker (another process): reads the holders without the mutex
 * (its holder may be the dead one); a stale answer only delays. */
int mproc_ring_name_held(const char *name, int (*alive)(long pid), int final) {
  const mproc_ring_hdr *h;
  void *p;
  int i, any = mproc_shm_peek(name, sizeof *h, &p);
  if (any != 2) return any;
  h = (const mproc_ring_hdr *)p;
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != RING_MAGIC) {
    any = h->magic == 0 ? 0 : -1;
  } else {
    any = !final && __atomic_load_n(&h->overflow, __ATOMIC_SEQ_CST) > 0;
    for (i = 0; i < 64 && !any; i++) {
      int32_t pid = __atomic_load_n(&h->holders[i].pid, __ATOMIC_SEQ_CST);
      if (pid > 0 && h->holders[i].n > 0 && alive((long)pid)) any = 1;
    }
  }
  munmap(p, sizeof *h);
  return any;
}

static void remember_created(const char *name) {
  created *c = (created *)calloc(1, sizeof *c);
  sigset_t old;
  if (c == NULL) return;              /* still unlinked by its last close */
  if (!atexit_done) atexit_done = (atexit(unlink_at_exit) == 0);
  mproc_shm_on_term(unlink_on_term);
  c->pid = getpid();
  memcpy(c->name, name, MPROC_RING_NAMELEN);
  block_term(&old);
  c->next = created_list;
  created_list = c;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* }====================================================================== */

/* {======================================================================
 * Create, attach, close
 * ======================================================================= */

static void random_name(char *buf, size_t n) {
  static unsigned counter;
  struct timespec ts;
  uint64_t x;
  clock_gettime(CLOCK_REALTIME, &ts);
  x = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec ^
      ((uint64_t)++counter << 40) ^ (uint64_t)(uintptr_t)&ts;
  x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29;
  snprintf(buf, n, "/mproc-q%ld-%012llx", (long)getpid(),
           (unsigned long long)(x & 0xffffffffffffull));
}

static int init_sync(mproc_ring_hdr *h) {
  pthread_mutexattr_t ma;
  int e = 0;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
#if defined(PTHREAD_MUTEX_ROBUST) || defined(__linux__)
  pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
#endif
  e = pthread_mutex_init(&h->mu, &ma);
  pthread_mutexattr_destroy(&ma);
  if (e) { errno = e; return -1; }
  return 0;
}

int mproc_ring_create(mproc_ring *r, size_t cap, uint64_t maxsize, int kind) {
  size_t c = RING_MINCAP, dataoff = pad8(sizeof(mproc_ring_hdr));
  size_t len;
  int fd = -1, tries;
  void *p;
  mproc_ring_hdr *h;
  if (cap == 0) cap = RING_DEFCAP;
  while (c < cap) c *= 2;             /* a power of two: cheap wrapping */
  dataoff = (dataoff + 63) & ~(size_t)63;
  len = dataoff + c;
  for (tries = 0; tries < 16 && fd < 0; tries++) {
    random_name(r->name, sizeof r->name);
    fd = shm_open(r->name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 && errno != EEXIST) return -1;
  }
  if (fd < 0) return -1;
  if (ftruncate(fd, (off_t)len) < 0) goto fail;
  p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) goto fail;
  close(fd);
  h = (mproc_ring_hdr *)p;
  memset(h, 0, sizeof *h);
  h->kind = (uint32_t)kind;
  h->cap = c;
  h->maxsize = maxsize;
  h->dataoff = dataoff;
  h->holders[0].pid = (int32_t)getpid();
  h->holders[0].n = 1;
  if (init_sync(h) < 0) {
    int e = errno;
    munmap(p, len);
    shm_unlink(r->name);
    errno = e;
    return -1;
  }
  __atomic_store_n(&h->magic, RING_MAGIC, __ATOMIC_RELEASE);
  r->h = h;
  r->maplen = len;
  r->pid = getpid();
  remember_created(r->name);
  mproc_track_created(r->name, MPROC_TRACK_RING);
  return 0;
fail:
  {
    int e = errno;
    close(fd);
    shm_unlink(r->name);
    errno = e;
  }
  return -1;
}

static int pid_alive(int32_t pid) {
  return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* Adds d (+1 / -1) to pid's handle count (mutex held); returns how many
 * handles live processes still hold.  Dead holders (SIGKILLed) are
 * dropped, so they do not keep the ring alive. */
static int hold(mproc_ring_hdr *h, pid_t me, int d) {
  int i, live = h->overflow, done = 0;
  for (i = 0; i < 64 && !done; i++)
    if (h->holders[i].pid == (int32_t)me) {
      h->holders[i].n += d;
      if (h->holders[i].n <= 0) h->holders[i].pid = 0;
      done = 1;
    }
  for (i = 0; i < 64 && !done && d > 0; i++)
    if (h->holders[i].pid == 0 || !pid_alive(h->holders[i].pid)) {
      h->holders[i].pid = (int32_t)me;
      h->holders[i].n = d;
      done = 1;
    }
  if (!done) {
    if (d > 0 || h->overflow > 0) h->overflow += d;
  }
  for (i = 0; i < 64; i++)
    if (h->holders[i].pid && pid_alive(h->holders[i].pid))
      live += h->holders[i].n;
  return live;
}

int mproc_ring_attach(mproc_ring *r, const char *name) {
  struct stat st;
  int fd;
  void *p;
  mproc_ring_hdr *h;
  if (strlen(name) >= sizeof r->name || name[0] != '/') {
    errno = EINVAL;
    return -1;
  }
  fd = shm_open(name, O_RDWR, 0);
  if (fd < 0) return -1;
  if (fstat(fd, &st) < 0) { int e = errno; close(fd); errno = e; return -1; }
  if ((size_t)st.st_size < sizeof(mproc_ring_hdr) + RING_MINCAP) {
    close(fd);
    errno = EINVAL;
    return -1;
  }
  p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return -1;
  h = (mproc_ring_hdr *)p;
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != RING_MAGIC ||
      h->dataoff + h->cap != (uint64_t)st.st_size) {
    munmap(p, (size_t)st.st_size);
    errno = EINVAL;
    return -1;
  }
  r->h = h;
  r->maplen = (size_t)st.st_size;
  r->pid = getpid();
  strcpy(r->name, name);
  if (mproc_ring_lock(r) == 0) {
    hold(h, r->pid, 1);
    mproc_ring_unlock(r);
  }
  return 0;
}

static void ring_close(mproc_ring *r, int owner) {
  mproc_ring_hdr *h = r->h;
  int last = 0;
  if (h == NULL) return;
  if (r->pid == getpid() && mproc_ring_lock(r) == 0) {
    last = hold(h, r->pid, -1) == 0;
    mproc_ring_unlock(r);
  }
  r->h = NULL;
  if (last || owner) {
    /* last handle: nobody can reach the queued messages any more */
    shm_unlink(r->name);
    discard_queued(h);
    unlink_bigs(r->name);
    forget_created(r->name);
    mproc_track_unlinked(r->name);
  }
  munmap(h, r->maplen);
}

void mproc_ring_close(mproc_ring *r) { ring_close(r, 0); }

/* The owner ends the ring whoever still maps it: a pool's rings are its
 * parent's alone, and a worker still alive then is being terminated (a
 * pool collected unclosed signals its workers in the same collection). */
void mproc_ring_end(mproc_ring *r) { ring_close(r, 1); }

int mproc_ring_kind(const mproc_ring *r) { return (int)r->h->kind; }
uint64_t mproc_ring_maxsize(const mproc_ring *r) { return r->h->maxsize; }
size_t mproc_ring_capacity(const mproc_ring *r) { return (size_t)r->h->cap; }
size_t mproc_ring_big_threshold(const mproc_ring *r) {
  return (size_t)r->h->cap / 4;
}

/* }====================================================================== */

/* {======================================================================
 * Locking and recovery
 * ======================================================================= */

static void journal_begin(mproc_ring_hdr *h) {
  h->j_claim = 0;
  h->j_head = h->head;
  h->j_tail = h->tail;
  h->j_count = h->count;
  h->j_unfinished = h->unfinished;
  FENCE();
  h->j_valid = 1;
  FENCE();
}

static void journal_end(mproc_ring_hdr *h) {
  FENCE();
  h->j_valid = 0;
}

/* The owner died holding the mutex: undo its unfinished change, so its
 * message is absent (put) or still there (get). */
static void repair(mproc_ring_hdr *h) {
  if (h->j_valid) {
    __atomic_store_n(&h->head, h->j_head, __ATOMIC_RELAXED);
    __atomic_store_n(&h->tail, h->j_tail, __ATOMIC_RELAXED);
    __atomic_store_n(&h->count, h->j_count, __ATOMIC_RELAXED);
    h->unfinished = h->j_unfinished;
    if (h->j_claim > 0 && h->j_claim <= MPROC_RING_CLAIMS)
      __atomic_store_n(&h->claims[h->j_claim - 1].tid, h->j_claim_tid, __ATOMIC_RELAXED);
    h->j_valid = 0;
  }
#if defined(PTHREAD_MUTEX_ROBUST) || defined(__linux__)
  pthread_mutex_consistent(&h->mu);
#endif
}

int mproc_ring_lock(mproc_ring *r) {
  int e;
  do e = pthread_mutex_lock(&r->h->mu); while (e == EINTR);
  if (e == EOWNERDEAD) { repair(r->h); e = 0; }
  if (e) { errno = e; return -1; }
  return 0;
}

void mproc_ring_unlock(mproc_ring *r) {
  pthread_mutex_unlock(&r->h->mu);
}

/* Under mu: publishes a change of `w` and wakes sleepers (n; INT_MAX all)
 * only when some may sleep, so the uncontended path makes no syscall. */
static void bump(uint32_t *w, uint32_t sleepers, int n) {
  __atomic_store_n(w, *w + 1, __ATOMIC_RELEASE);
  if (sleepers) mproc_futex_wake(w, n);
}

uint64_t mproc_ring_count(const mproc_ring *r) { return r->h->count; }
uint64_t mproc_ring_unfinished(const mproc_ring *r) {
  return r->h->unfinished;
}

static uint64_t frame_size(size_t n) { return FRAME_HDR + pad8(n); }

int mproc_ring_room(const mproc_ring *r, size_t n) {
  const mproc_ring_hdr *h = r->h;
  if (h->maxsize && h->count >= h->maxsize) return 0;
  if (h->cap - (h->tail - h->head) < frame_size(n)) return -1;
  return 1;
}

size_t mproc_ring_free(const mproc_ring *r) {
  return (size_t)(r->h->cap - (r->h->tail - r->h->head));
}

void mproc_ring_push(mproc_ring *r, const void *p, size_t n, unsigned flags) {
  mproc_ring_hdr *h = r->h;
  uint64_t mask = h->cap - 1, t = h->tail;
  char *d = DATA(h);
  uint32_t hd[2];
  uint64_t pos = (t + FRAME_HDR) & mask;
  size_t first = h->cap - pos < n ? (size_t)(h->cap - pos) : n;
  hd[0] = (uint32_t)n;
  hd[1] = (uint32_t)flags;
  memcpy(d + (t & mask), hd, FRAME_HDR);   /* never wraps: 8-aligned */
  memcpy(d + pos, p, first);
  if (first < n) memcpy(d, (const char *)p + first, n - first);
  /* the frame is written: publish it */
  journal_begin(h);
  __atomic_store_n(&h->tail, t + frame_size(n), __ATOMIC_RELEASE);
  __atomic_store_n(&h->count, h->count + 1, __ATOMIC_RELEASE);
  if (h->kind == MPROC_RING_JOINABLE) h->unfinished++;
  journal_end(h);
  bump(&h->w_get, h->getters, 1);
}

int mproc_ring_pop(mproc_ring *r, mproc_bytes *out) {
  mproc_ring_hdr *h = r->h;
  uint64_t mask = h->cap - 1, hd = h->head, pos;
  const char *d = DATA(h);
  uint32_t len;
  size_t first, fs;
  char *o;
  if (h->count == 0) return 0;
  memcpy(&len, d + (hd & mask), 4);
  fs = (size_t)frame_size(len);
  if (mproc_bytes_reserve(out, out->len + fs) < 0) return -1;
  o = out->data + out->len;
  memcpy(o, d + (hd & mask), FRAME_HDR);
  pos = (hd + FRAME_HDR) & mask;
  first = h->cap - pos < len ? (size_t)(h->cap - pos) : len;
  memcpy(o + FRAME_HDR, d + pos, first);
  if (first < len) memcpy(o + FRAME_HDR + first, d, len - first);
  out->len += fs;
  journal_begin(h);
  __atomic_store_n(&h->head, hd + fs, __ATOMIC_RELEASE);
  __atomic_store_n(&h->count, h->count - 1, __ATOMIC_RELEASE);
  journal_end(h);
  bump(&h->w_put, h->putters, INT_MAX);   /* each may need other room */
  return 1;
}

int mproc_ring_task_done(mproc_ring *r) {
  mproc_ring_hdr *h = r->h;
  if (h->unfinished == 0) return 1;
  h->unfinished--;                    /* one store: no journal needed */
  if (h->unfinished == 0) bump(&h->w_join, h->joiners, INT_MAX);
  return 0;
}

static int holds(const mproc_ring *r, int what, size_t n) {
  switch (what) {
    case MPROC_WAIT_GET: return r->h->count > 0;
    case MPROC_WAIT_PUT: return mproc_ring_room(r, n) == 1;
    default: return r->h->unfinished == 0;
  }
}

/* Reads the word under mu, unlocks, sleeps while it is unchanged (at most
 * until the deadline), relocks and checks again.  Only the mutex is held
 * across process boundaries, and it is robust: a waiter killed anywhere
 * leaves at most a stale sleeper count behind. */
int mproc_ring_wait(mproc_ring *r, int what, size_t n, double seconds) {
  mproc_ring_hdr *h = r->h;
  uint32_t *w = what == MPROC_WAIT_GET ? &h->w_get :
                what == MPROC_WAIT_PUT ? &h->w_put : &h->w_join;
  uint32_t *sleepers = what == MPROC_WAIT_GET ? &h->getters :
                       what == MPROC_WAIT_PUT ? &h->putters : &h->joiners;
  double deadline = mproc_now() + (seconds > 0 ? seconds : 0);
  for (;;) {
    uint32_t seen;
    double left;
    int e;
    if (holds(r, what, n)) return 1;
    left = deadline - mproc_now();
    if (left <= 0) return 0;
    seen = *w;
    (*sleepers)++;
    mproc_ring_unlock(r);
    e = mproc_futex_wait(w, seen, left);
    if (mproc_ring_lock(r) < 0) return -1;   /* ENOTRECOVERABLE: unlocked */
    (*sleepers)--;
    if (e == EINTR) return holds(r, what, n);  /* let the caller see it */
  }
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

int mproc_ring_spin(const mproc_ring *r, int what) {
  const mproc_ring_hdr *h = r->h;
  int i;
  for (i = 0; i < 4000; i++) {
    uint64_t c = __atomic_load_n(&h->count, __ATOMIC_RELAXED);
    if (what == MPROC_WAIT_GET ? c > 0 : (h->maxsize == 0 || c < h->maxsize))
      return 1;
    cpu_relax();
  }
  return 0;
}

/* }====================================================================== */

/* {======================================================================
 * Claims (the pool's task ring)
 * ======================================================================= */

mproc_ring_claim *mproc_ring_claims(mproc_ring *r) { return r->h->claims; }
uint32_t *mproc_ring_notify(mproc_ring *r) { return &r->h->notify; }

/* The id in the first 8 payload bytes of the frame at offset `off`. */
static uint64_t frame_id(const mproc_ring_hdr *h, uint64_t off, uint32_t len) {
  uint64_t mask = h->cap - 1, pos = (off + FRAME_HDR) & mask, id = 0;
  size_t first;
  if (len < 8) return 0;
  first = h->cap - pos < 8 ? (size_t)(h->cap - pos) : 8;
  memcpy(&id, DATA(h) + pos, first);
  if (first < 8) memcpy((char *)&id + first, DATA(h), 8 - first);
  return id;
}

int mproc_ring_pop_claim(mproc_ring *r, mproc_bytes *out, int slot) {
  mproc_ring_hdr *h = r->h;
  uint64_t mask = h->cap - 1;
  for (;;) {
    uint64_t hd = h->head, pos;
    const char *d = DATA(h);
    uint32_t hdr[2];
    size_t first, fs;
    char *o;
    if (h->count == 0) return 0;
    memcpy(hdr, d + (hd & mask), FRAME_HDR);
    fs = (size_t)frame_size(hdr[0]);
    if (hdr[1] & MPROC_FRAME_CANCELLED) {
      if (hdr[1] & MPROC_FRAME_BIG) {   /* its segment goes with it */
        char name[MPROC_RING_NAMELEN + 32];
        size_t n = hdr[0] > 8 ? hdr[0] - 8 : 0, k;
        if (n >= sizeof name) n = 0;
        for (k = 0; k < n; k++) name[k] = d[(hd + FRAME_HDR + 8 + k) & mask];
        if (n) mproc_ring_big_discard(name, n);
      }
      journal_begin(h);
      __atomic_store_n(&h->head, hd + fs, __ATOMIC_RELEASE);
      __atomic_store_n(&h->count, h->count - 1, __ATOMIC_RELEASE);
      journal_end(h);
      bump(&h->w_put, h->putters, INT_MAX);
      continue;
    }
    if (mproc_bytes_reserve(out, out->len + fs) < 0) return -1;
    o = out->data + out->len;
    memcpy(o, hdr, FRAME_HDR);
    pos = (hd + FRAME_HDR) & mask;
    first = h->cap - pos < hdr[0] ? (size_t)(h->cap - pos) : hdr[0];
    memcpy(o + FRAME_HDR, d + pos, first);
    if (first < hdr[0]) memcpy(o + FRAME_HDR + first, d, hdr[0] - first);
    out->len += fs;
    /* the pop and the claim are one change: a popper that dies half-way
     * leaves the frame in the ring and its claim as it was */
    h->j_head = hd;
    h->j_tail = h->tail;
    h->j_count = h->count;
    h->j_unfinished = h->unfinished;
    h->j_claim = (uint32_t)slot + 1;
    h->j_claim_tid = h->claims[slot].tid;
    FENCE();
    h->j_valid = 1;
    FENCE();
    __atomic_store_n(&h->head, hd + fs, __ATOMIC_RELEASE);
    __atomic_store_n(&h->count, h->count - 1, __ATOMIC_RELEASE);
    h->claims[slot].pos = 0;
    __atomic_store_n(&h->claims[slot].tid, frame_id(h, hd, hdr[0]), __ATOMIC_RELEASE);
    journal_end(h);
    bump(&h->w_put, h->putters, INT_MAX);
    return 1;
  }
}

int mproc_ring_cancel(mproc_ring *r, uint64_t id) {
  mproc_ring_hdr *h = r->h;
  uint64_t off = h->head, mask = h->cap - 1;
  while (off < h->tail) {
    uint32_t hdr[2];
    memcpy(hdr, DATA(h) + (off & mask), FRAME_HDR);
    if (!(hdr[1] & MPROC_FRAME_CANCELLED) && frame_id(h, off, hdr[0]) == id) {
      hdr[1] |= MPROC_FRAME_CANCELLED;  /* one store: no journal needed */
      memcpy(DATA(h) + (off & mask) + 4, &hdr[1], 4);
      return 1;
    }
    off += frame_size(hdr[0]);
  }
  return 0;
}

/* }====================================================================== */

/* {======================================================================
 * Big messages
 * ======================================================================= */

int mproc_ring_big_write(mproc_ring *r, const void *p, size_t n, char *name) {
  uint64_t seq = __atomic_add_fetch(&r->h->seq, 1, __ATOMIC_RELAXED);
  const char *s = (const char *)p;
  int fd;
  snprintf(name, MPROC_RING_NAMELEN + 24, "%s.%llx", r->name,
           (unsigned long long)seq);
  fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return -1;
  while (n > 0) {                     /* write(): ENOSPC is reported here */
    ssize_t w = write(fd, s, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
    if (w < 0) {
      int e = errno;
      if (e == EINTR) continue;
      close(fd);
      shm_unlink(name);
      errno = e;
      return -1;
    }
    s += w;
    n -= (size_t)w;
  }
  close(fd);
  return 0;
}

static int big_name(const char *name, size_t namelen, char *buf) {
  if (namelen == 0 || namelen >= MPROC_RING_NAMELEN + 24 || name[0] != '/' ||
      memchr(name, '\0', namelen)) {
    errno = EINVAL;
    return -1;
  }
  memcpy(buf, name, namelen);
  buf[namelen] = '\0';
  return 0;
}

int mproc_ring_big_map(const char *name, size_t namelen, void **p, size_t *n) {
  char buf[MPROC_RING_NAMELEN + 24];
  struct stat st;
  int fd, flags = MAP_SHARED;
  void *m;
  if (big_name(name, namelen, buf) < 0) return -1;
  fd = shm_open(buf, O_RDONLY, 0);
  if (fd < 0) return -1;
  shm_unlink(buf);                    /* delivered once: gone from the fs */
  if (fstat(fd, &st) < 0) { int e = errno; close(fd); errno = e; return -1; }
  if (st.st_size == 0) { close(fd); errno = EINVAL; return -1; }
#ifdef MAP_POPULATE
  flags |= MAP_POPULATE;
#endif
  m = mmap(NULL, (size_t)st.st_size, PROT_READ, flags, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return -1;
  *p = m;
  *n = (size_t)st.st_size;
  return 0;
}

void mproc_ring_big_release(void *p, size_t n) {
  munmap(p, n);
}

void mproc_ring_big_discard(const char *name, size_t namelen) {
  char buf[MPROC_RING_NAMELEN + 24];
  if (big_name(name, namelen, buf) == 0) shm_unlink(buf);
}

/* }====================================================================== */
