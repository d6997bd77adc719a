/*
 * pool.h: the Pool's transport (no lua.h; included by mproc.h).
 *
 * Two rings (src/core/queue.h): the task ring that idle workers take from, and the
 * result ring where results wait until the parent collects them.  Nothing
 * needs the parent in between: a worker takes a task and records it in its
 * slot of the task ring's claim board in one journaled change, so when a
 * worker dies the parent reads from the board which task was lost.
 *
 * Task frame:   mproc_task_hdr, function bytes (fnlen), body
 * Result frame: mproc_result_hdr, body
 * A frame that does not fit the ring goes whole into its own segment; the
 * ring then carries [id, segment name] with MPROC_FRAME_BIG.
 *
 * Wake-ups: workers sleep on the task ring (futex/condvar of src/core/queue.c); the
 * parent's descriptor is a socket that a worker sends one byte to when it
 * posts a result the parent has not been told about yet (the ring's
 * notify word), so a foreign event loop can watch it.
 */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include "queue.h"

typedef struct mproc_task_hdr {
  uint64_t tid;        /* 0: a stop order */
  uint32_t op;         /* MPROC_TASK_* */
  uint32_t fnid;       /* the worker caches the function under it; 0: never */
  double timeout;      /* seconds from the claim; 0: none */
  uint32_t fnlen;      /* function bytes after the header */
  uint32_t cs;         /* chunk size of a batch */
} mproc_task_hdr;

typedef struct mproc_result_hdr {
  uint64_t tid;
  uint32_t kind;       /* MPROC_RESULT_* */
  uint32_t count;      /* packed records */
} mproc_result_hdr;

enum { MPROC_TASK_NONE = 0, MPROC_TASK_APPLY, MPROC_TASK_BATCH, MPROC_TASK_STARBATCH,
       MPROC_TASK_PACKED, MPROC_TASK_STOP };
enum { MPROC_RESULT_OK = 1, MPROC_RESULT_ERR, MPROC_RESULT_BATCH,
       MPROC_RESULT_PACKED };

typedef struct mproc_pool {
  mproc_ring tasks, results;
  int rfd, wfd;        /* notify socket pair: the parent reads, workers send */
  mproc_bytes over;    /* parent: task frames the ring had no room for */
  size_t overpos;
  pid_t parent;        /* worker: the pool's process */
  pid_t owner;         /* the process that created the rings */
} mproc_pool;

/* A frame's bytes: in a private buffer, or mapped from its segment. */
typedef struct mproc_pool_view {
  const char *p;
  size_t n;
  void *map;
  size_t maplen;
} mproc_pool_view;

int mproc_pool_create(mproc_pool *p);
/* A worker started with the spawn method: attaches the rings by name and
 * takes wfd (the notify socket's worker end).  0 or -1 (errno). */
int mproc_pool_attach(mproc_pool *p, const char *tasks, const char *results, int wfd);
/* Parent: drops everything (queued tasks and results included) and ends
 * the rings, even while a worker being terminated still maps them.  A
 * spawned worker: lets go of them. */
void mproc_pool_close(mproc_pool *p);
/* In a new worker: keeps what a worker needs. */
void mproc_pool_worker(mproc_pool *p);

/* Parent.  Queues a whole task frame (header first); when neither the
 * ring nor a segment can take it now, it waits in a private overflow that
 * mproc_pool_flush pushes later.  0 or -1 (errno). */
int mproc_pool_submit(mproc_pool *p, const void *frame, size_t n);
/* Pushes what the overflow holds; returns how many frames are still
 * waiting there. */
size_t mproc_pool_flush(mproc_pool *p);
/* 1 when the task was still queued (it will not run), else 0. */
int mproc_pool_cancel(mproc_pool *p, uint64_t tid);
/* Moves every waiting result frame into out (ring frame format: uint32
 * length, uint32 flags, payload, padded to 8) and rearms the descriptor.
 * Returns the number of frames, or -1 (errno). */
int mproc_pool_collect(mproc_pool *p, mproc_bytes *out);
/* Results waiting (a hint, no lock). */
int mproc_pool_has_results(const mproc_pool *p);
/* Spins up to `seconds` for a result to wait; 1 when one does. */
int mproc_pool_spin(const mproc_pool *p, double seconds);

/* Worker.  Waits up to `timeout` (< 0: forever) for a task and takes it
 * into `out` (claimed in `slot`).  1 taken, 0 none, -1 error. */
int mproc_pool_take(mproc_pool *p, int slot, mproc_bytes *out, double timeout);
/* Posts a result frame, then releases the claim of task `tid` in `slot`
 * and wakes the parent.  0 or -1 (errno). */
int mproc_pool_post(mproc_pool *p, int slot, const void *frame, size_t n);

/* The payload of a frame popped into a buffer (flags from its header). */
int mproc_pool_view_open(mproc_pool_view *v, const char *payload, size_t len, unsigned flags);
void mproc_pool_view_close(mproc_pool_view *v);

/* The next frame of a buffer filled by mproc_pool_collect or
 * mproc_pool_take, from *pos on: its payload (len bytes, flags), with *pos
 * moved past it; NULL when none is left. */
const char *mproc_pool_next_frame(const mproc_bytes *in, size_t *pos, size_t *len,
                                  unsigned *flags);

/* A task frame's parts (fn: the function's h->fnlen bytes; body: the rest,
 * blen bytes).  0, or -1 when the frame is malformed (too short, unknown
 * op, function longer than the frame, packed body not whole records). */
int mproc_task_parse(const char *p, size_t n, mproc_task_hdr *h, const char **fn,
                     const char **body, size_t *blen);
/* A result frame's parts.  0, or -1 when its kind is unknown or a packed
 * body does not hold h->count records (the header is read whenever n
 * holds one, so the caller can name the task). */
int mproc_result_parse(const char *p, size_t n, mproc_result_hdr *h, const char **body,
                       size_t *blen);

/* {======================================================================
 * Packed numbers: the items of a map chunk and its results, when they are
 * all numbers, travel as records of MPROC_PACK_REC bytes: a type byte ('i'
 * a 64-bit integer, 'f' a double), then the 8 bytes of the value as is
 * (sender and receiver are the same machine).  Task: MPROC_TASK_PACKED,
 * records after the function bytes.  Result: MPROC_RESULT_PACKED, count
 * records after the header.
 * ======================================================================= */

#define MPROC_PACK_REC 9

static inline void mproc_pack_int(char *rec, int64_t v) {
  rec[0] = 'i';
  memcpy(rec + 1, &v, 8);
}

static inline void mproc_pack_float(char *rec, double v) {
  rec[0] = 'f';
  memcpy(rec + 1, &v, 8);
}

/* The record's type, 'i' (value in *i) or 'f' (in *d); anything else (0)
 * is not a number record. */
static inline int mproc_unpack(const char *rec, int64_t *i, double *d) {
  if (rec[0] == 'i') memcpy(i, rec + 1, 8);
  else if (rec[0] == 'f') memcpy(d, rec + 1, 8);
  else return 0;
  return rec[0];
}

/* A worker's results of a packed chunk, as records: type 0 not set yet,
 * 'x' a value that is not a number (the binding keeps it elsewhere). */
typedef struct mproc_packacc {
  size_t n;        /* records in use */
  size_t cap;      /* records there is room for */
  size_t pos;      /* 1-based item being run (after an error: the culprit) */
  int mixed;       /* some result is not a number */
  char rec[1];     /* n records (+1 byte, so that n may be 0) */
} mproc_packacc;

/* Largest n an accumulator may hold. */
#define MPROC_PACKACC_MAX ((((size_t)-1) >> 1) / MPROC_PACK_REC)
/* Bytes of an accumulator with room for n records. */
size_t mproc_packacc_size(size_t n);
/* Room for n results (cap is set when the memory is new), none set. */
void mproc_packacc_reset(mproc_packacc *a, size_t n, size_t cap);
/* Record k (0-based). */
static inline char *mproc_packacc_rec(mproc_packacc *a, size_t k) {
  return a->rec + k * MPROC_PACK_REC;
}
/* Marks result k as not a number; 1 when it is the first such. */
int mproc_packacc_other(mproc_packacc *a, size_t k);
/* 1 when every result is set and a number (the chunk can travel packed). */
int mproc_packacc_complete(const mproc_packacc *a);
/* Posts the results as a packed frame for task tid (mproc_pool_post).
 * 0, or -1 (errno; EINVAL: some result is missing or not a number). */
int mproc_pool_post_packed(mproc_pool *p, int slot, uint64_t tid, const mproc_packacc *a);

/* }====================================================================== */

#endif
