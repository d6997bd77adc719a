/*
 * src/core/shared.c: shared segments, their lifetime across processes, and the slab
 * allocator for small shared objects.  See src/core/shared.h for the model.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/random.h>
#endif

#include "mproc.h"

#define SEG_MAGIC   0x4d505347u   /* "MPSG" */
#define SEG_VERSION 1
#define SEG_SLOTS   100
#define SLAB_SIZE   ((size_t)1 << 20)

/* The shared header at the start of every segment (fits MPROC_SEG_HEADER). */
typedef struct seg_hdr {
  uint32_t magic, version, kind, unlinked;
  uint64_t size;                 /* data bytes */
  uint32_t overflow;             /* holders that found no free slot */
  uint32_t pad;
  uint32_t holders[SEG_SLOTS];   /* pids of the processes holding it */
} seg_hdr;

typedef char seg_hdr_fits[sizeof(seg_hdr) <= MPROC_SEG_HEADER ? 1 : -1];

#define HDR(s) ((seg_hdr *)(void *)(s)->base)

static mproc_seg *registry;      /* every segment this process maps */
static mproc_seg *active_slab;   /* where small objects go */
pid_t mproc_self_pid;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static struct sigaction prev_term;
static volatile sig_atomic_t term_installed;

pid_t mproc_self(void) {
  if (mproc_self_pid == 0) mproc_self_pid = getpid();
  return mproc_self_pid;
}

/* {======================================================================
 * Holders: pid slots in the header
 * ======================================================================= */

/* Returns the slot taken, or -1 when counted in `overflow`. */
static int claim(seg_hdr *h, pid_t pid) {
  int i;
  for (i = 0; i < SEG_SLOTS; i++) {
    uint32_t zero = 0;
    if (__atomic_compare_exchange_n(&h->holders[i], &zero, (uint32_t)pid, 0,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      return i;
  }
  __atomic_add_fetch(&h->overflow, 1, __ATOMIC_SEQ_CST);
  return -1;
}

/* Async-signal-safe. */
static void unclaim(seg_hdr *h, pid_t pid, int slot) {
  uint32_t p = (uint32_t)pid;
  if (slot >= 0)
    __atomic_compare_exchange_n(&h->holders[slot], &p, 0, 0,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  else
    __atomic_sub_fetch(&h->overflow, 1, __ATOMIC_SEQ_CST);
}

/* True when some live process still holds the segment; slots of dead
 * processes (SIGKILLed, ended by _exit) are cleared on the way.
 * Async-signal-safe. */
static int held(seg_hdr *h) {
  int i, any = 0;
  if (__atomic_load_n(&h->overflow, __ATOMIC_SEQ_CST) > 0) return 1;
  for (i = 0; i < SEG_SLOTS; i++) {
    uint32_t p = __atomic_load_n(&h->holders[i], __ATOMIC_SEQ_CST);
    if (p == 0) continue;
    if (kill((pid_t)p, 0) == -1 && errno == ESRCH) {
      __atomic_compare_exchange_n(&h->holders[i], &p, 0, 0,
                                  __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
      continue;
    }
    any = 1;
  }
  return any;
}

/* Unlinks once, whoever gets here first.  Async-signal-safe. */
static void unlink_once(mproc_seg *s) {
  if (__atomic_exchange_n(&HDR(s)->unlinked, 1, __ATOMIC_SEQ_CST) == 0) {
    shm_unlink(s->name);
    mproc_track_unlinked(s->name);
  }
}

/* }====================================================================== */

/* {======================================================================
 * Process exit, SIGTERM and fork
 * ======================================================================= */

/* Unlinks what this process created and lets go of what it attached.
 * Async-signal-safe: the registry is only changed with SIGTERM blocked. */
static volatile pid_t cleaned_pid;

static void cleanup_signal_safe(void) {
  pid_t me = getpid();
  mproc_seg *s;
  if (cleaned_pid == me) return;
  cleaned_pid = me;
  for (s = registry; s != NULL; s = s->next) {
    if (s->creator == me) {
      unlink_once(s);
    } else if (!s->inherited) {
      unclaim(HDR(s), me, s->slot);
      s->inherited = 1;   /* nothing more to let go of */
      if (!held(HDR(s))) unlink_once(s);
    }
  }
}

/* Other parts (queue rings) that keep their own segments clean up here
 * too; their hooks must be async-signal-safe. */
#define MAX_TERM_HOOKS 4
static void (*term_hooks[MAX_TERM_HOOKS])(void);
static volatile sig_atomic_t n_term_hooks;

static void on_term(int sig, siginfo_t *info, void *ctx) {
  int saved = errno, i;
  cleanup_signal_safe();
  for (i = 0; i < n_term_hooks; i++) term_hooks[i]();
  if (prev_term.sa_flags & SA_SIGINFO) {
    if (prev_term.sa_sigaction) prev_term.sa_sigaction(sig, info, ctx);
  } else if (prev_term.sa_handler != SIG_DFL && prev_term.sa_handler != SIG_IGN) {
    prev_term.sa_handler(sig);
  } else {
    /* default action: die by the signal, as if we had not been here */
    sigset_t set;
    signal(sig, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
  }
  errno = saved;
}

static void block_term(sigset_t *old) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, old);
}

static void restore_mask(const sigset_t *old) {
  pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* Segments whose creator died without cleaning up (SIGKILL) may be
 * unlinked by anyone: "at the latest when its creator exits". */
void mproc_shm_sweep(void) {
#ifdef __linux__
  DIR *d = opendir("/dev/shm");
  struct dirent *e;
  if (d == NULL) return;
  while ((e = readdir(d)) != NULL) {
    char full[300];
    long pid;
    char *end;
    if (strncmp(e->d_name, "mproc-", 6) != 0) continue;
    pid = strtol(e->d_name + 6, &end, 10);
    if (end == e->d_name + 6 || *end != '-' || pid <= 0) continue;
    if (kill((pid_t)pid, 0) == -1 && errno == ESRCH) {
      snprintf(full, sizeof full, "/%s", e->d_name);
      shm_unlink(full);
    }
  }
  closedir(d);
#endif
}

void mproc_shm_cleanup(void) {
  sigset_t old;
  int was_clean = cleaned_pid == getpid();
  block_term(&old);
  cleanup_signal_safe();
  restore_mask(&old);
  /* a sweep reads /dev/shm (and its 32 KiB buffer touches the heap,
   * costly after fork): only a process that had children needs it */
  if (!was_clean && mproc_has_forked()) mproc_shm_sweep();
}

/* Runs at exit, and also when the module is unloaded (dlclose at
 * lua_close): then the SIGTERM handler must not point into us any more. */
static void at_exit(void) {
  mproc_shm_cleanup();
  if (term_installed) {
    struct sigaction cur;
    term_installed = 0;
    if (sigaction(SIGTERM, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
        cur.sa_sigaction == on_term)
      sigaction(SIGTERM, &prev_term, NULL);
  }
}

/* A fork child keeps the mappings (its copies of the handles use them) but
 * neither claims them nor owns what the parent created. */
static void at_fork_child(void) {
  mproc_seg *s;
  mproc_self_pid = getpid();
  active_slab = NULL;
  for (s = registry; s != NULL; s = s->next) s->inherited = 1;
}

static void init_process(void) {
  mproc_self_pid = getpid();
  atexit(at_exit);
  mproc_on_exit(mproc_shm_cleanup);   /* child paths that end in _exit */
  pthread_atfork(NULL, NULL, at_fork_child);
}

/* Per process: a fork child may have had its handlers reset (src/core/process.c does),
 * so this runs again in a child that creates a segment. */
static pid_t term_pid;

static void install_term(void) {
  struct sigaction sa, cur;
  if (term_pid == mproc_self()) return;
  term_pid = mproc_self();
  if (sigaction(SIGTERM, NULL, &cur) != 0) return;
  if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_term) return;
  if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_IGN) return;
  prev_term = cur;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_term;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGTERM, &sa, NULL) == 0) term_installed = 1;
}

static void init(void) { pthread_once(&init_once, init_process); }

int mproc_shm_on_term(void (*fn)(void)) {
  int i;
  sigset_t old;
  init();
  install_term();
  for (i = 0; i < n_term_hooks; i++)
    if (term_hooks[i] == fn) return 0;
  if (n_term_hooks >= MAX_TERM_HOOKS) return -1;
  block_term(&old);
  term_hooks[n_term_hooks] = fn;
  n_term_hooks = n_term_hooks + 1;
  restore_mask(&old);
  return 0;
}

void mproc_shm_init(void) { init(); }

/* }====================================================================== */

/* {======================================================================
 * Segments
 * ======================================================================= */

uint32_t mproc_random32(void) {
  static uint64_t state;
  uint32_t r = 0;
#ifdef __linux__
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) r = 0;
#endif
  while (r == 0) {   /* fallback: splitmix64 over time, pid and a counter */
    struct timespec ts;
    uint64_t z;
    clock_gettime(CLOCK_REALTIME, &ts);
    state += 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    r = (uint32_t)(z ^ (z >> 31));
  }
  return r;
}

static void link_seg(mproc_seg *s) {
  sigset_t old;
  block_term(&old);
  s->next = registry;
  registry = s;
  restore_mask(&old);
}

static void unlink_seg(mproc_seg *s) {
  sigset_t old;
  mproc_seg **p;
  block_term(&old);
  for (p = &registry; *p != NULL; p = &(*p)->next)
    if (*p == s) { *p = s->next; break; }
  if (active_slab == s) active_slab = NULL;
  restore_mask(&old);
}

static void full_name(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s%s", name[0] == '/' ? "" : "/", name);
}

static void reap_released(void);

mproc_seg *mproc_seg_create(int kind, size_t size, const char *name) {
  mproc_seg *s;
  seg_hdr *h;
  int fd, err, tries = 0;
  size_t total;
  init();
  install_term();
  reap_released();
  if (size > ((size_t)1 << 46)) { errno = ENOMEM; return NULL; }
  total = MPROC_SEG_HEADER + (size ? size : 1);
  s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  for (;;) {
    if (name != NULL) {
      if (strlen(name) + 2 > sizeof s->name) { free(s); errno = ENAMETOOLONG; return NULL; }
      full_name(s->name, sizeof s->name, name);
    } else {
      snprintf(s->name, sizeof s->name, "/mproc-%ld-%08x%08x", (long)mproc_self(),
               (unsigned)mproc_random32(), (unsigned)mproc_random32());
    }
    fd = shm_open(s->name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) break;
    if (errno != EEXIST || name != NULL || ++tries > 10) { free(s); return NULL; }
  }
  if (ftruncate(fd, (off_t)total) != 0) goto fail_fd;
  s->base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (s->base == MAP_FAILED) goto fail_fd;
  close(fd);
  s->size = total;
  s->creator = mproc_self();
  s->local = 1;
  s->kind = kind;
  h = HDR(s);
  h->version = SEG_VERSION;
  h->kind = (uint32_t)kind;
  h->size = size;
  s->slot = claim(h, s->creator);
  __atomic_store_n(&h->magic, SEG_MAGIC, __ATOMIC_RELEASE);
  link_seg(s);
  mproc_track_created(s->name, MPROC_TRACK_SEG);
  return s;
fail_fd:
  err = errno;
  close(fd);
  shm_unlink(s->name);
  free(s);
  errno = err;
  return NULL;
}

mproc_seg *mproc_seg_attach(const char *name) {
  char full[64];
  mproc_seg *s;
  struct stat st;
  seg_hdr *h;
  void *base;
  int fd, err, slot;
  init();
  if (strlen(name) + 2 > sizeof full) { errno = ENOENT; return NULL; }
  full_name(full, sizeof full, name);
  for (s = registry; s != NULL; s = s->next) {
    if (strcmp(s->name, full) == 0) {
      if ((s->inherited && s->creator != mproc_self()) || s->released) {
        /* inherited from a parent, or let go of earlier: an explicit
         * attach holds the name (again) */
        s->slot = claim(HDR(s), mproc_self());
        s->inherited = 0;
        s->released = 0;
      }
      s->local++;
      return s;
    }
  }
  fd = shm_open(full, O_RDWR, 0);
  if (fd < 0) return NULL;
  if (fstat(fd, &st) != 0) { err = errno; close(fd); errno = err; return NULL; }
  if ((size_t)st.st_size < MPROC_SEG_HEADER) { close(fd); errno = EINVAL; return NULL; }
  base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  err = errno;
  close(fd);
  if (base == MAP_FAILED) { errno = err; return NULL; }
  h = (seg_hdr *)base;
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != SEG_MAGIC ||
      h->version != SEG_VERSION ||
      h->size + MPROC_SEG_HEADER > (uint64_t)st.st_size) {
    munmap(base, (size_t)st.st_size);
    errno = EINVAL;
    return NULL;
  }
  slot = claim(h, mproc_self());
  if (__atomic_load_n(&h->unlinked, __ATOMIC_SEQ_CST)) {  /* lost a race */
    unclaim(h, mproc_self(), slot);
    munmap(base, (size_t)st.st_size);
    errno = ENOENT;
    return NULL;
  }
  s = calloc(1, sizeof *s);
  if (s == NULL) {
    unclaim(h, mproc_self(), slot);
    munmap(base, (size_t)st.st_size);
    errno = ENOMEM;
    return NULL;
  }
  memcpy(s->name, full, sizeof full);
  s->base = base;
  s->size = (size_t)st.st_size;
  s->local = 1;
  s->kind = (int)h->kind;
  s->slot = slot;
  link_seg(s);
  return s;
}

void mproc_seg_retain(mproc_seg *s) { s->local++; }

static void drop_seg(mproc_seg *s) {
  unlink_seg(s);
  munmap(s->base, s->size);
  free(s);
}

/* Segments this creator let go of while other processes held them: those
 * holders may have died since (SIGKILL leaves their claims behind). */
static void reap_released(void) {
  mproc_seg *s = registry, *next;
  for (; s != NULL; s = next) {
    next = s->next;
    if (s->released && s->creator == mproc_self() && !held(HDR(s))) {
      unlink_once(s);
      drop_seg(s);
    }
  }
}

void mproc_seg_release(mproc_seg *s) {
  if (--s->local > 0) return;
  if (!s->inherited) {
    unclaim(HDR(s), mproc_self(), s->slot);
    if (held(HDR(s)) && s->creator == mproc_self()) {
      /* others still use it: stay mapped and listed, so that it goes at
       * our exit at the latest (or sooner, see reap_released) */
      sigset_t old;
      block_term(&old);
      s->released = 1;
      if (active_slab == s) active_slab = NULL;
      restore_mask(&old);
      return;
    }
    /* a holder that did not create it unlinks only as the last one */
    if (s->creator == mproc_self() || !held(HDR(s))) unlink_once(s);
  }
  drop_seg(s);
  reap_released();
}

int mproc_seg_unlink(mproc_seg *s) {
  if (__atomic_exchange_n(&HDR(s)->unlinked, 1, __ATOMIC_SEQ_CST) == 0) {
    int r = shm_unlink(s->name);
    mproc_track_unlinked(s->name);
    return r;
  }
  return 0;
}

int mproc_shm_peek(const char *name, size_t len, void **p) {
  struct stat st;
  int fd = shm_open(name, O_RDONLY, 0);
  if (fd < 0) return errno == ENOENT ? -1 : 1;
  if (fstat(fd, &st) != 0) { close(fd); return 1; }
  if ((size_t)st.st_size < len) {
    close(fd);
    return st.st_size == 0 ? 0 : -1;   /* empty: its creator died making it */
  }
  *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  return *p == MAP_FAILED ? 1 : 2;
}

void mproc_shm_retrack(void) {
  mproc_seg *s;
  pid_t me = mproc_self();
  for (s = registry; s != NULL; s = s->next)
    if (s->creator == me && !HDR(s)->unlinked) mproc_track_created(s->name, MPROC_TRACK_SEG);
}

/* For the tracker (another process): maps only the header. */
int mproc_seg_name_held(const char *name, int (*alive)(long pid), int final) {
  const seg_hdr *h;
  void *p;
  int i, any = mproc_shm_peek(name, MPROC_SEG_HEADER, &p);
  if (any != 2) return any;
  h = (const seg_hdr *)p;
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != SEG_MAGIC) {
    any = h->magic == 0 ? 0 : -1;
  } else {
    any = !final && __atomic_load_n(&h->overflow, __ATOMIC_SEQ_CST) > 0;
    for (i = 0; i < SEG_SLOTS && !any; i++) {
      uint32_t pid = __atomic_load_n(&h->holders[i], __ATOMIC_SEQ_CST);
      if (pid != 0 && alive((long)pid)) any = 1;
    }
  }
  munmap(p, MPROC_SEG_HEADER);
  return any;
}

size_t mproc_seg_datasize(const mproc_seg *s) {
  return (size_t)((const seg_hdr *)(const void *)s->base)->size;
}

void *mproc_slab_alloc(size_t n, mproc_seg **seg) {
  mproc_seg *s = active_slab;
  unsigned char *p;
  n = (n + 63) & ~(size_t)63;
  if (s == NULL || s->creator != mproc_self() || s->used + n > mproc_seg_datasize(s)) {
    s = mproc_seg_create(MPROC_SEG_SLAB, n > SLAB_SIZE ? n : SLAB_SIZE, NULL);
    if (s == NULL) return NULL;
    active_slab = s;
  } else {
    s->local++;
  }
  p = mproc_seg_data(s) + s->used;
  s->used += n;
  *seg = s;
  return p;
}

/* }====================================================================== */
