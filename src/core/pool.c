/*
 * pool.c: the Pool's transport (see pool.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "mproc.h"

#define POOL_RING_CAP ((size_t)8 << 20)
#ifdef MSG_NOSIGNAL
#define SEND_FLAGS MSG_NOSIGNAL
#else
#define SEND_FLAGS 0
#endif

#define BIGREC (8 + MPROC_RING_NAMELEN + 24)   /* id + segment name */

int mproc_pool_create(mproc_pool *p) {
  int fds[2], e;
  memset(p, 0, sizeof *p);
  p->rfd = p->wfd = -1;
  p->owner = getpid();
  if (mproc_ring_create(&p->tasks, POOL_RING_CAP, 0, MPROC_RING_SIMPLE) < 0) return -1;
  if (mproc_ring_create(&p->results, POOL_RING_CAP, 0, MPROC_RING_SIMPLE) < 0) goto fail;
  /* a socket, not a pipe: a worker whose parent is gone gets EPIPE from
   * send(MSG_NOSIGNAL), never SIGPIPE */
  if (mproc_conn_pair(fds, 0) < 0) goto fail;
  p->rfd = fds[0];
  p->wfd = fds[1];
  return 0;
fail:
  e = errno;
  mproc_ring_close(&p->tasks);
  mproc_ring_close(&p->results);
  errno = e;
  return -1;
}

int mproc_pool_attach(mproc_pool *p, const char *tasks, const char *results, int wfd) {
  int e;
  memset(p, 0, sizeof *p);
  p->rfd = -1;
  p->wfd = -1;
  if (mproc_ring_attach(&p->tasks, tasks) < 0) return -1;
  if (mproc_ring_attach(&p->results, results) < 0) {
    e = errno;
    mproc_ring_close(&p->tasks);
    errno = e;
    return -1;
  }
  p->wfd = wfd;
  return 0;
}

void mproc_pool_close(mproc_pool *p) {
  /* the parent's handle ends the rings; a worker's lets go of them */
  if (p->owner == getpid()) {
    mproc_ring_end(&p->tasks);
    mproc_ring_end(&p->results);
  } else {
    mproc_ring_close(&p->tasks);
    mproc_ring_close(&p->results);
  }
  if (p->rfd >= 0) close(p->rfd);
  if (p->wfd >= 0) close(p->wfd);
  p->rfd = p->wfd = -1;
  mproc_bytes_free(&p->over);
  p->overpos = 0;
}

void mproc_pool_worker(mproc_pool *p) {
  p->parent = getppid();
  if (p->rfd >= 0) close(p->rfd);
  p->rfd = -1;
  mproc_bytes_free(&p->over);   /* the parent's, not ours to push */
  p->overpos = 0;
}

/* {======================================================================
 * Pushing frames: in the ring, or in a segment of their own
 * ======================================================================= */

/* 1 pushed, 0 no room now, -1 error.  A frame above the ring's threshold,
 * or that does not fit now, goes to a segment; the ring carries its id
 * and name. */
static int push(mproc_ring *r, const char *f, size_t n) {
  char rec[BIGREC];
  size_t rn;
  int fits = n <= mproc_ring_big_threshold(r);
  if (fits) {
    if (mproc_ring_lock(r) < 0) return -1;
    if (mproc_ring_room(r, n) == 1) {
      mproc_ring_push(r, f, n, 0);
      mproc_ring_unlock(r);
      return 1;
    }
    mproc_ring_unlock(r);
  }
  memcpy(rec, f, 8);
  if (mproc_ring_big_write(r, f, n, rec + 8) < 0) return -1;
  rn = 8 + strlen(rec + 8);
  if (mproc_ring_lock(r) < 0) {
    mproc_ring_big_discard(rec + 8, rn - 8);
    return -1;
  }
  if (mproc_ring_room(r, rn) != 1) {
    mproc_ring_unlock(r);
    mproc_ring_big_discard(rec + 8, rn - 8);
    return 0;
  }
  mproc_ring_push(r, rec, rn, MPROC_FRAME_BIG);
  mproc_ring_unlock(r);
  return 1;
}

static int overflow_add(mproc_pool *p, const void *frame, size_t n) {
  uint64_t len = n;
  size_t need = p->over.len + 8 + ((n + 7) & ~(size_t)7);
  if (mproc_bytes_reserve(&p->over, need) < 0) return -1;
  memcpy(p->over.data + p->over.len, &len, 8);
  memcpy(p->over.data + p->over.len + 8, frame, n);
  p->over.len = need;
  return 0;
}

size_t mproc_pool_flush(mproc_pool *p) {
  size_t left = 0, pos = p->overpos;
  while (pos < p->over.len) {
    uint64_t len;
    memcpy(&len, p->over.data + pos, 8);
    if (push(&p->tasks, p->over.data + pos + 8, (size_t)len) != 1) break;
    pos += 8 + (((size_t)len + 7) & ~(size_t)7);
  }
  p->overpos = pos;
  if (pos >= p->over.len) {
    p->over.len = p->overpos = 0;
    return 0;
  }
  for (; pos < p->over.len; left++) {
    uint64_t len;
    memcpy(&len, p->over.data + pos, 8);
    pos += 8 + (((size_t)len + 7) & ~(size_t)7);
  }
  return left;
}

int mproc_pool_submit(mproc_pool *p, const void *frame, size_t n) {
  int r;
  if (p->over.len > p->overpos && mproc_pool_flush(p) > 0)
    return overflow_add(p, frame, n);   /* keep the order */
  r = push(&p->tasks, (const char *)frame, n);
  if (r == 0) return overflow_add(p, frame, n);
  return r < 0 ? -1 : 0;
}

int mproc_pool_cancel(mproc_pool *p, uint64_t tid) {
  int found;
  size_t pos = p->overpos;
  for (; pos < p->over.len;) {   /* not pushed yet: mark it stopped */
    uint64_t len, id;
    memcpy(&len, p->over.data + pos, 8);
    memcpy(&id, p->over.data + pos + 8, 8);
    if (id == tid) {
      mproc_task_hdr h;
      memcpy(&h, p->over.data + pos + 8, sizeof h);
      h.op = MPROC_TASK_NONE;  /* taken and skipped */
      h.tid = 0;
      memcpy(p->over.data + pos + 8, &h, sizeof h);
      return 1;
    }
    pos += 8 + (((size_t)len + 7) & ~(size_t)7);
  }
  if (mproc_ring_lock(&p->tasks) < 0) return 0;
  found = mproc_ring_cancel(&p->tasks, tid);
  mproc_ring_unlock(&p->tasks);
  return found;
}

/* }====================================================================== */

/* {======================================================================
 * Results
 * ======================================================================= */

int mproc_pool_collect(mproc_pool *p, mproc_bytes *out) {
  char junk[64];
  int n = 0, r;
  while (p->rfd >= 0 && read(p->rfd, junk, sizeof junk) > 0) {}
  __atomic_store_n(mproc_ring_notify(&p->results), 0, __ATOMIC_SEQ_CST);
  if (mproc_ring_lock(&p->results) < 0) return -1;
  while ((r = mproc_ring_pop(&p->results, out)) == 1) n++;
  mproc_ring_unlock(&p->results);
  return r < 0 && n == 0 ? -1 : n;
}

int mproc_pool_has_results(const mproc_pool *p) {
  return mproc_ring_count(&p->results) > 0;
}

int mproc_pool_spin(const mproc_pool *p, double seconds) {
  double end = mproc_now() + seconds;
  do {
    if (mproc_ring_spin(&p->results, MPROC_WAIT_GET)) return 1;
  } while (mproc_now() < end);
  return 0;
}

/* }====================================================================== */

/* {======================================================================
 * The worker's side
 * ======================================================================= */

int mproc_pool_take(mproc_pool *p, int slot, mproc_bytes *out, double timeout) {
  double deadline = timeout < 0 ? -1 : mproc_now() + timeout;
  int r;
  if (slot < 0 || slot >= MPROC_RING_CLAIMS) { errno = EINVAL; return -1; }
  if (mproc_ring_lock(&p->tasks) < 0) return -1;
  r = mproc_ring_pop_claim(&p->tasks, out, slot);
  if (r == 0 && timeout != 0) {
    /* a task often follows the last one closely: a short spin saves the
     * futex sleep and wake-up of both sides */
    mproc_ring_unlock(&p->tasks);
    mproc_ring_spin(&p->tasks, MPROC_WAIT_GET);
    if (mproc_ring_lock(&p->tasks) < 0) return -1;
  }
  for (;;) {
    double left;
    if (r == 0) r = mproc_ring_pop_claim(&p->tasks, out, slot);
    if (r != 0) break;
    left = deadline < 0 ? 1.0 : deadline - mproc_now();
    if (left <= 0) break;
    if (mproc_ring_wait(&p->tasks, MPROC_WAIT_GET, 0, left) < 0) { r = -1; break; }
  }
  mproc_ring_unlock(&p->tasks);
  if (r == 1) mproc_ring_claims(&p->tasks)[slot].start = mproc_now();
  return r;
}

int mproc_pool_post(mproc_pool *p, int slot, const void *frame, size_t n) {
  mproc_ring_claim *c = &mproc_ring_claims(&p->tasks)[slot];
  uint64_t tid;
  int r;
  memcpy(&tid, frame, 8);
  /* the parent keeps every result: waiting here happens only when the
   * ring is full of frames it has not collected */
  while ((r = push(&p->results, (const char *)frame, n)) == 0) {
    if (getppid() != p->parent) { errno = EPIPE; return -1; }  /* nobody to wait for */
    if (mproc_ring_lock(&p->results) < 0) return -1;
    mproc_ring_wait(&p->results, MPROC_WAIT_PUT, BIGREC, 0.05);
    mproc_ring_unlock(&p->results);
  }
  if (r < 0) return -1;
  /* the result is in: only now may the claim go */
  if (slot >= 0 && slot < MPROC_RING_CLAIMS &&
      __atomic_load_n(&c->tid, __ATOMIC_RELAXED) == tid)
    __atomic_store_n(&c->tid, 0, __ATOMIC_RELEASE);
  if (__atomic_exchange_n(mproc_ring_notify(&p->results), 1, __ATOMIC_SEQ_CST) == 0) {
    ssize_t w;
    do w = send(p->wfd, "", 1, SEND_FLAGS); while (w < 0 && errno == EINTR);
  }
  return 0;
}

/* }====================================================================== */

int mproc_pool_view_open(mproc_pool_view *v, const char *payload, size_t len, unsigned flags) {
  memset(v, 0, sizeof *v);
  if (!(flags & MPROC_FRAME_BIG)) {
    v->p = payload;
    v->n = len;
    return 0;
  }
  if (len <= 8) { errno = EINVAL; return -1; }
  if (mproc_ring_big_map(payload + 8, len - 8, &v->map, &v->maplen) < 0) return -1;
  v->p = (const char *)v->map;
  v->n = v->maplen;
  return 0;
}

void mproc_pool_view_close(mproc_pool_view *v) {
  if (v->map) mproc_ring_big_release(v->map, v->maplen);
  memset(v, 0, sizeof *v);
}

const char *mproc_pool_next_frame(const mproc_bytes *in, size_t *pos, size_t *len,
                                  unsigned *flags) {
  uint32_t hd[2];
  const char *f;
  if (*pos + 8 > in->len) return NULL;
  f = in->data + *pos;
  memcpy(hd, f, 8);
  *pos += 8 + ((hd[0] + 7) & ~(size_t)7);
  *len = hd[0];
  *flags = hd[1];
  return f + 8;
}

int mproc_task_parse(const char *p, size_t n, mproc_task_hdr *h, const char **fn,
                     const char **body, size_t *blen) {
  if (n < sizeof *h) return -1;
  memcpy(h, p, sizeof *h);
  if (h->op > MPROC_TASK_STOP || n - sizeof *h < h->fnlen) return -1;
  *fn = p + sizeof *h;
  *body = *fn + h->fnlen;
  *blen = n - sizeof *h - h->fnlen;
  if (h->op == MPROC_TASK_PACKED && *blen % MPROC_PACK_REC != 0) return -1;
  return 0;
}

int mproc_result_parse(const char *p, size_t n, mproc_result_hdr *h, const char **body,
                       size_t *blen) {
  if (n < sizeof *h) return -1;
  memcpy(h, p, sizeof *h);
  if (h->kind < MPROC_RESULT_OK || h->kind > MPROC_RESULT_PACKED) return -1;
  *body = p + sizeof *h;
  *blen = n - sizeof *h;
  if (h->kind == MPROC_RESULT_PACKED && *blen / MPROC_PACK_REC != h->count) return -1;
  return 0;
}

/* {======================================================================
 * Packed numbers
 * ======================================================================= */

size_t mproc_packacc_size(size_t n) {
  return offsetof(mproc_packacc, rec) + n * MPROC_PACK_REC + 1;
}

void mproc_packacc_reset(mproc_packacc *a, size_t n, size_t cap) {
  if (cap) a->cap = cap;
  a->n = n;
  a->pos = 0;
  a->mixed = 0;
  memset(a->rec, 0, n * MPROC_PACK_REC + 1);
}

int mproc_packacc_other(mproc_packacc *a, size_t k) {
  int first = !a->mixed;
  a->mixed = 1;
  a->rec[k * MPROC_PACK_REC] = 'x';
  return first;
}

int mproc_packacc_complete(const mproc_packacc *a) {
  size_t k;
  if (a->mixed) return 0;
  for (k = 0; k < a->n; k++)
    if (a->rec[k * MPROC_PACK_REC] == 0) return 0;
  return 1;
}

int mproc_pool_post_packed(mproc_pool *p, int slot, uint64_t tid, const mproc_packacc *a) {
  mproc_result_hdr h;
  char *f;
  size_t n = sizeof h + a->n * MPROC_PACK_REC;
  int r;
  if (!mproc_packacc_complete(a) || a->n > 0xffffffffu) { errno = EINVAL; return -1; }
  memset(&h, 0, sizeof h);
  h.tid = tid;
  h.kind = MPROC_RESULT_PACKED;
  h.count = (uint32_t)a->n;
  f = malloc(n);
  if (f == NULL) return -1;
  memcpy(f, &h, sizeof h);
  memcpy(f + sizeof h, a->rec, a->n * MPROC_PACK_REC);
  r = mproc_pool_post(p, slot, f, n);
  free(f);
  return r;
}

/* }====================================================================== */
