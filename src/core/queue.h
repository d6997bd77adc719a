/*
 * src/core/queue.h: the shared-memory message ring under mp.Queue (no lua.h).
 *
 * One segment holds a header (robust process-shared mutex, three futex
 * words, counters) and a byte ring of frames.  Waiters sleep on a futex
 * word with the mutex released (no condvar: a waiter SIGKILLed anywhere
 * leaves nothing that blocks the others).  A frame
 * is whole or absent: the writer copies its bytes past the tail and only
 * then publishes the new tail; every change of the counters is journaled
 * first, so a process killed while holding the mutex is rolled back by the
 * next locker (EOWNERDEAD).  Messages too large for the ring's free space
 * go to their own segment ("big" frames carry its name); the consumer
 * maps, reads and unlinks it.
 *
 * Functions return 0 / -1 with errno, unless documented otherwise.
 */
#ifndef MPROC_RING_H
#define MPROC_RING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MPROC_RING_QUEUE     0
#define MPROC_RING_JOINABLE  1
#define MPROC_RING_SIMPLE    2

#define MPROC_FRAME_BIG      1u  /* payload = name of the segment holding it */
#define MPROC_FRAME_CANCELLED 2u /* skipped by mproc_ring_pop_claim */

#define MPROC_RING_NAMELEN   48

typedef struct mproc_ring_hdr mproc_ring_hdr;

/* One process's handle on a ring. */
typedef struct mproc_ring {
  mproc_ring_hdr *h;             /* NULL when closed */
  size_t maplen;
  pid_t pid;                     /* process that opened this handle */
  char name[MPROC_RING_NAMELEN];
} mproc_ring;

/* The growable byte buffer of the core and of the bindings (frames copied
 * out of a ring, encoded values, a child's output); grown to at least `need`
 * bytes in all, doubling from 256.  0 or -1 (ENOMEM). */
typedef struct mproc_bytes {
  char *data;
  size_t len, cap;
} mproc_bytes;

int mproc_bytes_reserve(mproc_bytes *b, size_t need);
void mproc_bytes_free(mproc_bytes *b);

/* Creates a ring of `cap` data bytes (0: default) holding at most
 * `maxsize` items (0: unbounded). */
int mproc_ring_create(mproc_ring *r, size_t cap, uint64_t maxsize, int kind);
/* Attaches the ring named `name` (EINVAL when it is not a ring). */
int mproc_ring_attach(mproc_ring *r, const char *name);
/* Drops the handle.  The last handle unlinks the ring and the big-message
 * segments still queued.  A handle inherited through fork only unmaps. */
void mproc_ring_close(mproc_ring *r);
void mproc_ring_end(mproc_ring *r);

int mproc_ring_kind(const mproc_ring *r);
uint64_t mproc_ring_maxsize(const mproc_ring *r);
size_t mproc_ring_capacity(const mproc_ring *r);
/* Frames above this size always go to their own segment. */
size_t mproc_ring_big_threshold(const mproc_ring *r);

/* {======================================================================
 * Locked operations: call between mproc_ring_lock and mproc_ring_unlock.
 * ======================================================================= */

/* Locks; repairs the ring when the previous owner died.  Returns 0, or -1
 * (ENOTRECOVERABLE...). */
int mproc_ring_lock(mproc_ring *r);
void mproc_ring_unlock(mproc_ring *r);

uint64_t mproc_ring_count(const mproc_ring *r);
uint64_t mproc_ring_unfinished(const mproc_ring *r);

/* 1 when an item of `n` payload bytes may be put now, 0 when the item
 * limit is reached, -1 when the items allow it but the bytes do not fit. */
int mproc_ring_room(const mproc_ring *r, size_t n);

/* Free bytes in the ring. */
size_t mproc_ring_free(const mproc_ring *r);

/* Appends one frame (caller checked room); wakes a getter. */
void mproc_ring_push(mproc_ring *r, const void *p, size_t n, unsigned flags);

/* Pops the oldest frame and appends it to `out` as it was in the ring:
 * uint32 length, uint32 flags, payload, padded to 8 bytes.  Returns 1
 * popped, 0 empty, -1 out of memory (the frame stays). */
int mproc_ring_pop(mproc_ring *r, mproc_bytes *out);

/* JoinableQueue: marks one task done.  Returns 0, or 1 when no task was
 * unfinished (nothing changes). */
int mproc_ring_task_done(mproc_ring *r);

#define MPROC_WAIT_GET  0   /* until an item is there */
#define MPROC_WAIT_PUT  1   /* until an item of `n` bytes fits */
#define MPROC_WAIT_JOIN 2   /* until no task is unfinished */

/* Waits (mutex held, released while waiting) until the condition holds or
 * `seconds` passed.  Returns 1 when it holds, 0 on timeout or when a
 * signal interrupted the sleep, -1 when the mutex could not be taken back
 * (then it is not held; unlocking it anyway is harmless). */
int mproc_ring_wait(mproc_ring *r, int what, size_t n, double seconds);

/* }====================================================================== */

/* Spins briefly, without the lock, until the ring looks non-empty
 * (getting) or not full (putting).  Returns 1 when it looks ready. */
int mproc_ring_spin(const mproc_ring *r, int what);

/* {======================================================================
 * Claims: the pool's task ring (src/core/pool.c).  Every ring has a board of
 * MPROC_RING_CLAIMS slots; a frame's id is its first 8 payload bytes.
 * ======================================================================= */

#define MPROC_RING_CLAIMS 1024

typedef struct mproc_ring_claim {
  uint64_t tid;                  /* id of the frame taken, 0: none */
  double start;                  /* mproc_now() when it was taken */
  uint64_t pos;                  /* progress, as its taker reports it */
} mproc_ring_claim;

mproc_ring_claim *mproc_ring_claims(mproc_ring *r);
/* A word in the ring's header for the pool's wake-up protocol. */
uint32_t *mproc_ring_notify(mproc_ring *r);

/* Locked.  Pops the oldest frame not cancelled (as mproc_ring_pop) and
 * records its id in claims[slot] in the same journaled change: a process
 * that dies at any instruction leaves either the frame in the ring and the
 * slot as it was, or the frame gone and its id in the slot.  Cancelled
 * frames met on the way are dropped (with their big segments).  1 / 0 / -1
 * as mproc_ring_pop. */
int mproc_ring_pop_claim(mproc_ring *r, mproc_bytes *out, int slot);

/* Locked.  Marks the queued frame with id `id` cancelled: 1, or 0 when no
 * such frame is queued (taken already, or never there). */
int mproc_ring_cancel(mproc_ring *r, uint64_t id);

/* }====================================================================== */

/* {======================================================================
 * Big messages: their own segment, named after the ring.
 * ======================================================================= */

/* Copies n bytes into a new segment; its name (NUL-terminated) goes to
 * `name` (at least MPROC_RING_NAMELEN + 24 bytes). */
int mproc_ring_big_write(mproc_ring *r, const void *p, size_t n, char *name);
/* Maps the segment `name` (read-only) and unlinks it; *p and *n describe
 * the mapping, released with mproc_ring_big_release. */
int mproc_ring_big_map(const char *name, size_t namelen, void **p, size_t *n);
void mproc_ring_big_release(void *p, size_t n);
/* Unlinks a big segment that will not be delivered. */
void mproc_ring_big_discard(const char *name, size_t namelen);

/* }====================================================================== */

#endif
