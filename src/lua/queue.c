/*
 * src/lua/queue.c: Lua binding of the shared-memory ring (src/core/queue.h): the userdata
 * behind mp.Queue, mp.JoinableQueue and mp.SimpleQueue.
 *
 * The common case runs in C only (put/get are methods in __index): encode
 * into a reusable buffer, lock, copy, publish, unlock.  When a call would
 * block, C hands over to the slow path of its class, a Lua method that
 * lua/mproc/queue.lua adds through core.class (_slow_put, _slow_get,
 * _slow_join): it waits through sched.wait_shared and retries with the
 * _put_frames/_try_get/_wait primitives, which return their status
 * (true, ... | false, kind, message [, errno]).  A runtime failure of a
 * method is handed, as such a status, to the class's _fail, which raises
 * it as an mp.Error (lua/mproc/errors.lua).
 *
 * Encoded batches use the ring's own frame layout (uint32 length, uint32
 * flags, payload padded to 8), so the slow path can carry them as a string.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"
#include "../core/queue.h"

#define QUEUE_MT     "mproc.Queue"
#define JQUEUE_MT    "mproc.JoinableQueue"
#define SQUEUE_MT    "mproc.SimpleQueue"
#define BYTES_MT     "mproc.queue.bytes"
#define NAME_MAX_BIG (MPROC_RING_NAMELEN + 24)

static const char *const kind_mt[] = { QUEUE_MT, JQUEUE_MT, SQUEUE_MT };
static char queue_key;                /* marks the three metatables */

typedef struct lqueue {
  mproc_ring ring;                    /* ring.h == NULL: closed */
  mproc_bytes enc, in;                /* reused by put and get */
  int enc_busy, in_busy;              /* reentrancy (codec hooks) guards */
} lqueue;

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* {======================================================================
 * Checks and failures
 * ======================================================================= */

static lqueue *toqueue(lua_State *L, int idx) {
  lqueue *q = (lqueue *)lua_touserdata(L, idx);
  int ok = 0;
  if (q && lua_getmetatable(L, idx)) {
    ok = lua_rawgetp(L, -1, &queue_key) != LUA_TNIL;
    lua_pop(L, 2);
  }
  if (!ok) luaL_typeerror(L, idx, QUEUE_MT);
  return q;
}

static lqueue *checkqueue(lua_State *L) {
  lqueue *q = toqueue(L, 1);
  if (q->ring.h == NULL) luaL_error(L, "attempt to use a closed queue");
  return q;
}

/* Timeout argument: nil or math.huge -> -1 (forever), else >= 0. */
static double opt_timeout(lua_State *L, int idx) {
  double t;
  if (lua_isnoneornil(L, idx)) return -1;
  t = luaL_checknumber(L, idx);
  if (!(t >= 0)) luaL_argerror(L, idx, "timeout must be >= 0");
  return t == HUGE_VAL ? -1 : t;
}

static int handover(lua_State *L, const char *method, int nargs) {
  return mproc_handover(L, 1, method, nargs);
}

/* A runtime failure: self:_fail(kind, message [, errno [, pushed]])
 * raises it.  The message is on the stack top. */
static int fail_top(lua_State *L, const char *kind) {
  lua_pushstring(L, kind);
  lua_insert(L, -2);
  return handover(L, "_fail", 2);
}

static int fail_msg(lua_State *L, const char *kind, const char *msg) {
  lua_pushstring(L, msg);
  return fail_top(L, kind);
}

/* Pushes false, "OSError", "<what>: <strerror>", errno; returns 4. */
static int push_errno(lua_State *L, int err, const char *what) {
  return mproc_fail_errno(L, err, what);
}

static int fail_errno(lua_State *L, int err, const char *what) {
  return mproc_raise_errno(L, 1, err, what);
}

/* A private byte buffer that survives errors: the queue's own when free,
 * else a boxed one (reentrant use from a codec hook). */
static int bytes_gc(lua_State *L) {
  mproc_bytes_free((mproc_bytes *)luaL_checkudata(L, 1, BYTES_MT));
  return 0;
}

static mproc_bytes *boxed_bytes(lua_State *L) {
  mproc_bytes *b = (mproc_bytes *)lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, BYTES_MT);
  return b;
}

static void reserve(lua_State *L, mproc_bytes *b, size_t need) {
  if (mproc_bytes_reserve(b, need) < 0) luaL_error(L, "not enough memory");
}

/* }====================================================================== */

/* {======================================================================
 * Encoding into frames
 * ======================================================================= */

/* Appends the frame of the value at idx to b.  Big values go to their own
 * segment now (outside any lock).  Returns 1, or 0 with the SerializeError
 * message pushed (b unchanged).  The codec appends to b itself (a memory
 * error it raises leaves b a valid buffer of its owner). */
static int encode_frame(lua_State *L, lqueue *q, mproc_bytes *b, int idx,
                        const char *root) {
  size_t start = b->len, n;
  uint32_t hd[2];
  reserve(L, b, b->len + 8);
  b->len = start + 8;
  if (!mproc_encode(L, idx, root, b)) { b->len = start; return 0; }
  n = b->len - start - 8;
  if (n > 0xffffffffu || n > mproc_ring_big_threshold(&q->ring)) {
    char name[NAME_MAX_BIG];
    if (mproc_ring_big_write(&q->ring, b->data + start + 8, n, name) < 0) {
      int e = errno;
      b->len = start;
      lua_pushfstring(L, "cannot store a message of %I bytes: %s",
                      (LUAI_UACINT)n, strerror(e));
      return -1;
    }
    n = strlen(name);
    memcpy(b->data + start + 8, name, n);
    hd[1] = MPROC_FRAME_BIG;
  } else {
    hd[1] = 0;
  }
  hd[0] = (uint32_t)n;
  memcpy(b->data + start, hd, 8);
  b->len = start + 8 + n;
  reserve(L, b, pad8(b->len));
  memset(b->data + b->len, 0, pad8(b->len) - b->len);
  b->len = pad8(b->len);
  return 1;
}

/* Unlinks the big segments of frames s[pos..len) that were not sent. */
static void discard_frames(const char *s, size_t len, size_t pos) {
  while (pos + 8 <= len) {
    uint32_t hd[2];
    memcpy(hd, s + pos, 8);
    if (pos + 8 + hd[0] > len) break;
    if (hd[1] & MPROC_FRAME_BIG) mproc_ring_big_discard(s + pos + 8, hd[0]);
    pos += 8 + pad8(hd[0]);
  }
}

/* Pushes frames of s from *pos on, under one lock, while they fit.
 * A frame that fits the item limit but not the free bytes is moved to its
 * own segment.  Returns 1 when all went, 0 when the queue is full, -1 on
 * a system error (errno). *pushed counts the frames sent. */
static int push_frames(lqueue *q, const char *s, size_t len, size_t *pos,
                       lua_Integer *pushed) {
  mproc_ring *r = &q->ring;
  int res = 1;
  if (mproc_ring_lock(r) < 0) return -1;
  while (*pos + 8 <= len) {
    uint32_t hd[2];
    int room;
    memcpy(hd, s + *pos, 8);
    room = mproc_ring_room(r, hd[0]);
    /* the last eighth of the ring is kept for the names of spilled
     * messages, so an unbounded queue rarely waits for bytes */
    if (room == 1 && hd[0] > NAME_MAX_BIG &&
        mproc_ring_free(r) < 8 + pad8(hd[0]) + mproc_ring_capacity(r) / 8)
      room = -1;
    if (room == -1 && !(hd[1] & MPROC_FRAME_BIG) && hd[0] > NAME_MAX_BIG) {
      char name[NAME_MAX_BIG];
      if (mproc_ring_room(r, NAME_MAX_BIG) != 1) { res = 0; break; }
      if (mproc_ring_big_write(r, s + *pos + 8, hd[0], name) < 0) {
        res = -1;
        break;
      }
      mproc_ring_push(r, name, strlen(name), MPROC_FRAME_BIG);
    } else if (room != 1) {
      res = 0;
      break;
    } else {
      mproc_ring_push(r, s + *pos + 8, hd[0], hd[1]);
    }
    *pos += 8 + pad8(hd[0]);
    (*pushed)++;
  }
  mproc_ring_unlock(r);
  return res;
}

/* }====================================================================== */

/* {======================================================================
 * Decoding frames
 * ======================================================================= */

/* Pushes the value of the frame at f. Returns 1, or 0 with an error kind
 * in *kind and its message pushed. */
static int decode_frame(lua_State *L, const char *f, const char **kind) {
  uint32_t hd[2];
  memcpy(hd, f, 8);
  if (hd[1] & MPROC_FRAME_BIG) {
    void *p;
    size_t n;
    int ok;
    if (mproc_ring_big_map(f + 8, hd[0], &p, &n) < 0) {
      *kind = "OSError";
      lua_pushfstring(L, "cannot read a large message: %s", strerror(errno));
      return 0;
    }
    ok = mproc_decode(L, (const char *)p, n, 0);
    mproc_ring_big_release(p, n);
    if (!ok) *kind = "SerializeError";
    return ok;
  }
  if (!mproc_decode(L, f + 8, hd[0], 0)) {
    *kind = "SerializeError";
    return 0;
  }
  return 1;
}

/* Pops up to max frames under one lock into a buffer.  Returns the count
 * (0: empty; -1: the lock failed, errno) and the buffer; *boxed tells whether the buffer is a boxed
 * one on the stack top. */
static int pop_frames(lua_State *L, lqueue *q, lua_Integer max,
                      mproc_bytes **out, int *boxed) {
  mproc_bytes *b;
  int got = 0, r = 1;
  if (q->in_busy) { b = boxed_bytes(L); *boxed = 1; }
  else { b = &q->in; b->len = 0; *boxed = 0; }
  *out = b;
  if (mproc_ring_lock(&q->ring) < 0) return -1;
  while (got < max && (r = mproc_ring_pop(&q->ring, b)) == 1) got++;
  mproc_ring_unlock(&q->ring);
  if (r < 0) luaL_error(L, "not enough memory");
  return got;
}

/* Decodes `got` frames of b: one value, or a list with n when `list`.
 * Returns 1, or 0 with the error kind in *kind and its message pushed. */
static int push_popped(lua_State *L, lqueue *q, mproc_bytes *b, int boxed,
                       int got, int list, const char **kind) {
  size_t pos = 0;
  int i, bad = 0;
  if (!boxed) q->in_busy = 1;
  if (list) lua_createtable(L, got, 1);
  for (i = 1; i <= got; i++) {
    uint32_t len;
    memcpy(&len, b->data + pos, 4);
    if (bad) {                        /* still consume the big segments */
      uint32_t fl;
      memcpy(&fl, b->data + pos + 4, 4);
      if (fl & MPROC_FRAME_BIG) mproc_ring_big_discard(b->data + pos + 8, len);
    } else if (!decode_frame(L, b->data + pos, kind)) {
      bad = lua_gettop(L);
    } else if (list) {
      lua_rawseti(L, -2, i);
    }
    pos += 8 + pad8(len);
  }
  if (!boxed) q->in_busy = 0;
  if (bad) {
    lua_settop(L, bad);
    return 0;
  }
  if (list) {
    lua_pushinteger(L, got);
    lua_setfield(L, -2, "n");
  }
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * Methods
 * ======================================================================= */

static uint64_t locked_count(lua_State *L, lqueue *q, int unfinished);

/* "list.x: ..." -> "list[i].x: ...": put_many's element named only for an
 * error (formatting every element's name cost a fifth of a batch). */
static void name_element(lua_State *L, lua_Integer i) {
  size_t n;
  const char *m = lua_tolstring(L, -1, &n);
  if (m == NULL || n < 4 || memcmp(m, "list", 4) != 0) return;
  lua_pushfstring(L, "list[%I]%s", (LUAI_UACINT)i, m + 4);
  lua_replace(L, -2);
}

/* Encodes the values (one, or a list) into frames and puts them; blocks
 * through the slow path when full. */
static int do_put(lua_State *L, lqueue *q, int many, double t) {
  mproc_bytes *b;
  size_t pos = 0;
  lua_Integer pushed = 0, i, n = 1;
  int boxed = 0, r = 1;
  if (q->enc_busy) { b = boxed_bytes(L); boxed = 1; }
  else { b = &q->enc; b->len = 0; q->enc_busy = 1; }
  mproc_conn_share_begin(L);   /* Pipe ends: for a getter that lacks them */
  if (many) {
    lua_getfield(L, 2, "n");
    n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)luaL_len(L, 2);
    lua_pop(L, 1);
    for (i = 1; i <= n; i++) {
      lua_geti(L, 2, i);
      r = encode_frame(L, q, b, lua_gettop(L), "list");
      if (r == 0) name_element(L, i);
      lua_pop(L, 1 - (r <= 0));       /* keep the message on failure */
      if (r <= 0) break;
    }
  } else {
    r = encode_frame(L, q, b, 2, "value");
  }
  if (!boxed) q->enc_busy = 0;
  if (r <= 0) {                       /* nothing was sent: drop big ones */
    mproc_conn_share_end(L, 0);
    discard_frames(b->data, b->len, 0);
    return fail_top(L, r == 0 ? "SerializeError" : "OSError");
  }
  r = push_frames(q, b->data, b->len, &pos, &pushed);
  if (r == 0 && t != 0 && mproc_ring_spin(&q->ring, MPROC_WAIT_PUT))
    r = push_frames(q, b->data, b->len, &pos, &pushed);
  /* deposits of a message that surely never went are taken back; those of
   * the slow path stay with the broker until the sender ends */
  mproc_conn_share_end(L, r == 1 || pushed > 0 || !(r < 0 || t == 0));
  if (r == 1) return 0;
  if (r < 0 || t == 0) {
    int e = errno;
    discard_frames(b->data, b->len, pos);
    if (r < 0) return fail_errno(L, e, "queue put");
    lua_pushliteral(L, "Full");
    lua_pushliteral(L, "queue is full");
    if (!many) return handover(L, "_fail", 2);
    lua_pushnil(L);
    lua_pushinteger(L, pushed);
    return handover(L, "_fail", 4);
  }
  /* the slow path: rest of the frames as a string */
  lua_settop(L, 1);
  lua_pushlstring(L, b->data + pos, b->len - pos);
  if (t < 0) lua_pushnil(L); else lua_pushnumber(L, t);
  lua_pushinteger(L, pushed);
  return handover(L, "_slow_put", 3);
}

/* q:put(v [, timeout]) */
static int q_put(lua_State *L) {
  lqueue *q = checkqueue(L);
  double t = opt_timeout(L, 3);
  luaL_checkany(L, 2);
  lua_settop(L, 3);
  return do_put(L, q, 0, t);
}

static int q_put_nowait(lua_State *L) {
  lqueue *q = checkqueue(L);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  return do_put(L, q, 0, 0);
}

/* q:put_many(list [, timeout]) */
static int q_put_many(lua_State *L) {
  lqueue *q = checkqueue(L);
  double t = opt_timeout(L, 3);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 3);
  return do_put(L, q, 1, t);
}

/* q:_put_frames(s [, pos]) -> true, next pos (1-based), frames pushed,
 * done? | false, kind, message, errno */
static int q_put_frames(lua_State *L) {
  lqueue *q = checkqueue(L);
  size_t len, pos;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_Integer pushed = 0;
  int r;
  pos = (size_t)luaL_optinteger(L, 3, 1) - 1;
  if (pos > len) pos = len;
  r = push_frames(q, s, len, &pos, &pushed);
  if (r < 0) {
    int e = errno;
    discard_frames(s, len, pos);
    return push_errno(L, e, "queue put");
  }
  lua_pushboolean(L, 1);
  lua_pushinteger(L, (lua_Integer)pos + 1);
  lua_pushinteger(L, pushed);
  lua_pushboolean(L, r == 1);
  return 4;
}

/* q:_discard(s, pos): unlinks the big segments of unsent frames. */
static int q_discard(lua_State *L) {
  size_t len, pos;
  const char *s;
  toqueue(L, 1);
  s = luaL_checklstring(L, 2, &len);
  pos = (size_t)luaL_optinteger(L, 3, 1) - 1;
  if (pos < len) discard_frames(s, len, pos);
  return 0;
}

static int do_get(lua_State *L, lqueue *q, lua_Integer max, int list, double t) {
  mproc_bytes *b;
  const char *kind = NULL;
  int boxed, got = pop_frames(L, q, max, &b, &boxed);
  if (got == 0 && t != 0 && mproc_ring_spin(&q->ring, MPROC_WAIT_GET)) {
    if (boxed) lua_pop(L, 1);
    got = pop_frames(L, q, max, &b, &boxed);
  }
  if (got < 0) return fail_errno(L, errno, "queue lock");
  if (got > 0) {
    if (push_popped(L, q, b, boxed, got, list, &kind)) return 1;
    return fail_top(L, kind);
  }
  if (t == 0) return fail_msg(L, "Empty", "queue is empty");
  lua_settop(L, 1);
  if (t < 0) lua_pushnil(L); else lua_pushnumber(L, t);
  if (list) lua_pushinteger(L, max); else lua_pushnil(L);
  return handover(L, "_slow_get", 2);
}

/* q:get([timeout]) */
static int q_get(lua_State *L) {
  lqueue *q = checkqueue(L);
  return do_get(L, q, 1, 0, opt_timeout(L, 2));
}

static int q_get_nowait(lua_State *L) {
  return do_get(L, checkqueue(L), 1, 0, 0);
}

/* q:get_many(max [, timeout]) -> list with n */
static int q_get_many(lua_State *L) {
  lqueue *q = checkqueue(L);
  lua_Integer max = luaL_checkinteger(L, 2);
  double t = opt_timeout(L, 3);
  luaL_argcheck(L, max >= 1, 2, "max must be >= 1");
  if (max > 1000000) max = 1000000;
  return do_get(L, q, max, 1, t);
}

/* q:_try_get([max]) -> true, value | true, list | false (empty) |
 * false, kind, message [, errno] */
static int q_try_get(lua_State *L) {
  lqueue *q = checkqueue(L);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  mproc_bytes *b;
  const char *kind = NULL;
  int boxed, got;
  got = pop_frames(L, q, max > 0 ? max : 1, &b, &boxed);
  if (got < 0) return push_errno(L, errno, "queue lock");
  if (got == 0) { lua_pushboolean(L, 0); return 1; }
  if (!push_popped(L, q, b, boxed, got, max > 0, &kind)) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, kind);
    lua_rotate(L, -3, -1);            /* false, kind, message */
    return 3;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

/* q:join([timeout]) -> true, or false when the timeout ran out */
static int q_join(lua_State *L) {
  lqueue *q = checkqueue(L);
  double t = opt_timeout(L, 2);
  if (locked_count(L, q, 1) == 0) { lua_pushboolean(L, 1); return 1; }
  if (t == 0) { lua_pushboolean(L, 0); return 1; }
  lua_settop(L, 1);
  if (t < 0) lua_pushnil(L); else lua_pushnumber(L, t);
  return handover(L, "_slow_join", 1);
}

/* q:_wait(what, seconds) -> true, ready? | false, kind, message, errno.
 * what: "get", "put", "join" */
static int q_wait(lua_State *L) {
  static const char *const whats[] = { "get", "put", "join", NULL };
  lqueue *q = checkqueue(L);
  int what = luaL_checkoption(L, 2, NULL, whats);
  double s = luaL_checknumber(L, 3);
  int r;
  if (mproc_ring_lock(&q->ring) < 0) return push_errno(L, errno, "queue lock");
  r = mproc_ring_wait(&q->ring, what, NAME_MAX_BIG, s);
  mproc_ring_unlock(&q->ring);
  if (r < 0) return push_errno(L, errno, "queue wait");
  lua_pushboolean(L, 1);
  lua_pushboolean(L, r);
  return 2;
}

static uint64_t locked_count(lua_State *L, lqueue *q, int unfinished) {
  uint64_t n;
  if (mproc_ring_lock(&q->ring) < 0) fail_errno(L, errno, "queue lock");
  n = unfinished ? mproc_ring_unfinished(&q->ring) : mproc_ring_count(&q->ring);
  mproc_ring_unlock(&q->ring);
  return n;
}

static int q_qsize(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)locked_count(L, checkqueue(L), 0));
  return 1;
}

static int q_empty(lua_State *L) {
  lua_pushboolean(L, locked_count(L, checkqueue(L), 0) == 0);
  return 1;
}

static int q_full(lua_State *L) {
  lqueue *q = checkqueue(L);
  uint64_t max = mproc_ring_maxsize(&q->ring);
  lua_pushboolean(L, max > 0 && locked_count(L, q, 0) >= max);
  return 1;
}

static int q_task_done(lua_State *L) {
  lqueue *q = checkqueue(L);
  int r;
  if (mproc_ring_kind(&q->ring) != MPROC_RING_JOINABLE)
    return luaL_error(L, "task_done() needs a JoinableQueue");
  if (mproc_ring_lock(&q->ring) < 0) return fail_errno(L, errno, "queue lock");
  r = mproc_ring_task_done(&q->ring);
  mproc_ring_unlock(&q->ring);
  if (r) return luaL_error(L, "task_done() called too many times");
  return 0;
}

/* q:_unfinished() -> number of tasks not marked done */
static int q_unfinished(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)locked_count(L, checkqueue(L), 1));
  return 1;
}

static int q_gc(lua_State *L) {
  lqueue *q = toqueue(L, 1);
  mproc_ring_close(&q->ring);
  mproc_bytes_free(&q->enc);
  mproc_bytes_free(&q->in);
  return 0;
}

/* mt.__mproc_encode(q) -> typename, handle (the ring's name) */
static int q_encode(lua_State *L) {
  lqueue *q = checkqueue(L);
  lua_pushstring(L, kind_mt[mproc_ring_kind(&q->ring)]);
  lua_pushstring(L, q->ring.name);
  return 2;
}

static int q_tostring(lua_State *L) {
  lqueue *q = toqueue(L, 1);
  if (q->ring.h == NULL) lua_pushliteral(L, "mproc.Queue (closed)");
  else lua_pushfstring(L, "%s (%s)", kind_mt[mproc_ring_kind(&q->ring)],
                       q->ring.name);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * Constructors
 * ======================================================================= */

static lqueue *newqueue(lua_State *L) {
  lqueue *q = (lqueue *)lua_newuserdatauv(L, sizeof *q, 0);
  memset(q, 0, sizeof *q);            /* created closed */
  return q;
}

/* queue_new(kind, maxsize, ring_size) -> true, q | false, kind, msg, errno */
static int l_queue_new(lua_State *L) {
  static const char *const kinds[] = { "Queue", "JoinableQueue", "SimpleQueue",
                                       NULL };
  int kind = luaL_checkoption(L, 1, NULL, kinds);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  lua_Integer size = luaL_optinteger(L, 3, 0);
  lqueue *q = newqueue(L);
  luaL_setmetatable(L, kind_mt[kind]);
  if (mproc_ring_create(&q->ring, size > 0 ? (size_t)size : 0,
                        max > 0 ? (uint64_t)max : 0, kind) < 0)
    return mproc_fail_errno(L, errno, "cannot create a queue");
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

/* queue_attach(handle) -> true, q | false, kind, msg, errno */
static int l_queue_attach(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lqueue *q = newqueue(L);
  luaL_setmetatable(L, QUEUE_MT);
  if (mproc_ring_attach(&q->ring, name) < 0)
    return mproc_fail_errno(L, errno, "cannot attach a queue");
  luaL_setmetatable(L, kind_mt[mproc_ring_kind(&q->ring)]);
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

static const luaL_Reg queue_methods[] = {
  {"put", q_put}, {"get", q_get},
  {"put_nowait", q_put_nowait}, {"get_nowait", q_get_nowait},
  {"put_many", q_put_many}, {"get_many", q_get_many},
  {"qsize", q_qsize}, {"empty", q_empty}, {"full", q_full},
  {"close", q_gc},
  {"_put_frames", q_put_frames}, {"_discard", q_discard},
  {"_try_get", q_try_get}, {"_wait", q_wait},
  {NULL, NULL}
};

static const luaL_Reg joinable_extra[] = {
  {"task_done", q_task_done}, {"join", q_join},
  {"_unfinished", q_unfinished},
  {NULL, NULL}
};

static const luaL_Reg simple_methods[] = {
  {"put", q_put}, {"get", q_get}, {"empty", q_empty}, {"close", q_gc},
  {"_put_frames", q_put_frames}, {"_discard", q_discard},
  {"_try_get", q_try_get}, {"_wait", q_wait},
  {NULL, NULL}
};

static const luaL_Reg queue_meta[] = {
  {"__gc", q_gc}, {"__close", q_gc}, {"__tostring", q_tostring},
  {"__mproc_encode", q_encode},
  {NULL, NULL}
};

static void newqueueclass(lua_State *L, const char *tname,
                          const luaL_Reg *methods, const luaL_Reg *extra) {
  mproc_newclass(L, tname, methods, queue_meta);
  luaL_getmetatable(L, tname);
  lua_pushboolean(L, 1);
  lua_rawsetp(L, -2, &queue_key);
  if (extra) {
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, extra, 0);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

int mproc_open_queue(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"queue_new", l_queue_new}, {"queue_attach", l_queue_attach},
    {NULL, NULL}
  };
  newqueueclass(L, QUEUE_MT, queue_methods, NULL);
  newqueueclass(L, JQUEUE_MT, queue_methods, joinable_extra);
  newqueueclass(L, SQUEUE_MT, simple_methods, NULL);
  if (luaL_newmetatable(L, BYTES_MT)) {
    lua_pushcfunction(L, bytes_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  mproc_setfuncs(L, funcs);
  return 0;
}

/* }====================================================================== */
