/* src/core/shared.h: the shm part of the C core (no lua.h); included by mproc.h.
 *
 * Shared segments: POSIX shm_open'ed files with a random 0600 name
 * ("/mproc-<pid>-<random>") mapped MAP_SHARED.  Each starts with a header
 * that lists the processes holding a handle to it (pid slots), so that the
 * last holder to let go unlinks the name; a creator also unlinks what it
 * created when it exits (atexit, SIGTERM).  A process maps a segment once:
 * a process-local registry counts its handles (`local`).  A fork child
 * inherits the mappings but not the claim (its handles do not hold names).
 *
 * Small objects (locks, values) are carved out of slab segments: one
 * segment holds many objects; it goes away when its last object does. */
#ifndef MPROC_SHM_H
#define MPROC_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MPROC_SEG_SLAB 1   /* a pool of small objects */
#define MPROC_SEG_USER 2   /* one SharedMemory block */

#define MPROC_SEG_HEADER 512   /* bytes before the data of a segment */

typedef struct mproc_seg mproc_seg;
struct mproc_seg {
  mproc_seg *next;         /* registry list (process-local) */
  char name[64];           /* "/mproc-..." */
  unsigned char *base;     /* mapping; data at base + MPROC_SEG_HEADER */
  size_t size;             /* mapping size */
  size_t used;             /* slab: bytes handed out (creator only) */
  pid_t creator;           /* this process created it: unlink at exit */
  long local;              /* handles in this process */
  int kind;
  int inherited;           /* mapped by a parent before fork: no claim */
  int slot;                /* our holder slot, -1: counted in overflow */
  int released;            /* creator let go while others held it */
};

/* Every object in a slab starts with this header: `attach` checks it. */
typedef struct mproc_objhdr {
  uint32_t magic;          /* MPROC_OBJ_MAGIC */
  uint16_t kind;           /* MPROC_K_* of sync.h */
  uint16_t flags;
  uint32_t gen;            /* random: a stale handle does not match */
  uint32_t size;
} mproc_objhdr;

#define MPROC_OBJ_MAGIC 0x4f50524du  /* "MPRO" */

/* Creates a segment with `size` data bytes (name NULL: a random one).
 * Returns it with one local handle, or NULL with errno set. */
mproc_seg *mproc_seg_create(int kind, size_t size, const char *name);

/* Maps the segment `name` (or finds it mapped) and adds a local handle.
 * NULL with errno: ENOENT when it is gone, EINVAL when not an mproc one. */
mproc_seg *mproc_seg_attach(const char *name);

void mproc_seg_retain(mproc_seg *s);

/* Drops a local handle; the last one unmaps, and unlinks the name when no
 * live process holds it any more. */
void mproc_seg_release(mproc_seg *s);

/* Unlinks the name now (idempotent); mappings stay valid. */
int mproc_seg_unlink(mproc_seg *s);

#define mproc_seg_data(s) ((s)->base + MPROC_SEG_HEADER)
size_t mproc_seg_datasize(const mproc_seg *s);

/* Allocates `n` zeroed bytes (64-aligned) in a slab segment of this
 * process and adds a local handle to it.  Returns NULL with errno set. */
void *mproc_slab_alloc(size_t n, mproc_seg **seg);

/* Fresh random 32-bit value (never 0), for generations. */
uint32_t mproc_random32(void);

/* This process's pid, cached (updated in fork children; set once any
 * segment was created or attached). */
extern pid_t mproc_self_pid;
pid_t mproc_self(void);

/* Registers the exit and fork hooks (once per process); done when the
 * module is opened, so that even a process that never made a segment
 * sweeps up after its SIGKILLed children at exit. */
void mproc_shm_init(void);

/* What the atexit hook does: unlink the segments this process created and
 * let go of the others.  For child paths that end in _exit(). */
void mproc_shm_cleanup(void);

/* For the segment tracker: maps the first len bytes of segment `name` read-only into *p: 2 mapped
 * (munmap it), -1 gone or too short to be ours, 0 empty (its creator died
 * making it), 1 cannot tell (count it as held).  No malloc. */
int mproc_shm_peek(const char *name, size_t len, void **p);

/* Unlinks /dev/shm/mproc-<pid>-* of creators that are gone (SIGKILLed);
 * part of mproc_shm_cleanup.  Linux only (elsewhere it does nothing). */
void mproc_shm_sweep(void);

/* Registers fn to run (after this module's own cleanup) when SIGTERM ends
 * the process, and installs the handler in this process if needed.  fn
 * must be async-signal-safe.  Returns -1 when the table is full. */
int mproc_shm_on_term(void (*fn)(void));

#endif
