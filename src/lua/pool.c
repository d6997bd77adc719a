/*
 * src/lua/pool.c: the binding of the pool's transport (src/core/pool.c) and what the
 * scheduler needs from C.
 *
 * "mproc.PoolBoard": one process's handle on a pool's task and result
 * rings.  The parent builds task frames (header, function bytes, the
 * codec's bytes or packed numbers) and reads result frames; a worker takes
 * and claims tasks, runs packed batches in a C loop and posts results.
 * Nothing here blocks but a worker's wait for its next task; the parent
 * waits through sched.
 *
 * The poller over the pool's descriptors (its notify socket, the workers'
 * sentinels), through which a foreign event loop watches a whole pool
 * (pool:fileno()), is src/lua/poll.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/time.h>

#include "binding.h"

#define BOARD_T "mproc.PoolBoard"

/* {======================================================================
 * Packed numbers (records: src/core/pool.h).  They are written from the
 * Lua table straight into the task frame and read from the result frame
 * straight into the result list: no value-by-value encoding, and no Lua
 * string in between for the parent's collector to deal with.
 * ======================================================================= */

#define PACK_REC MPROC_PACK_REC
#define PACK_GROUP 64

typedef char pack_int_is_int64[sizeof(lua_Integer) == 8 && sizeof(lua_Number) == 8 ? 1 : -1];

/* 0 (nothing written) when the value is not a number; integers are
 * tested first, the common case, so they cost one call less */
static int put_rec(char *p, lua_State *L, int idx) {
  if (lua_isinteger(L, idx)) mproc_pack_int(p, (int64_t)lua_tointeger(L, idx));
  else if (lua_type(L, idx) == LUA_TNUMBER) mproc_pack_float(p, (double)lua_tonumber(L, idx));
  else return 0;
  return 1;
}

/* 0 for a malformed record */
static int push_rec(lua_State *L, const char *s) {
  int64_t i;
  double d;
  switch (mproc_unpack(s, &i, &d)) {
    case 'i': lua_pushinteger(L, (lua_Integer)i); return 1;
    case 'f': lua_pushnumber(L, (lua_Number)d); return 1;
    default: return 0;
  }
}

/* Writes t[first..first+count-1] (t at absolute index t) as records at p;
 * 0 when one is not a number.  Values are fetched in groups, so that one
 * settop pops many. */
static int pack_table(lua_State *L, int t, lua_Integer first, lua_Integer count, char *p) {
  lua_Integer i = 0;
  while (i < count) {
    int g = count - i < PACK_GROUP ? (int)(count - i) : PACK_GROUP, j;
    int top = lua_gettop(L);
    luaL_checkstack(L, g, NULL);
    for (j = 0; j < g; j++) lua_rawgeti(L, t, first + i + j);
    for (j = 1; j <= g; j++, p += PACK_REC)
      if (!put_rec(p, L, top + j)) {
        lua_settop(L, top);
        return 0;
      }
    lua_settop(L, top);
    i += g;
  }
  return 1;
}

/* t[off + k] = the k-th of the n records at s (t at absolute index t);
 * 0 for a malformed record. */
static int unpack_records(lua_State *L, const char *s, size_t n, int t, lua_Integer off) {
  size_t k;
  for (k = 0; k < n; k++, s += PACK_REC) {
    if (!push_rec(L, s)) return 0;
    lua_rawseti(L, t, off + (lua_Integer)k);
  }
  return 1;
}

/* pool_new_list(n) -> {n = n} with room for n list items: a map's result list
 * is filled out of order, and growing it would rehash it many times */
static int l_new_list(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_createtable(L, n > 0 && n < INT_MAX ? (int)n : 0, 1);
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  return 1;
}

/* The worker's side of a chunk: a C loop calls the task function on each
 * item (read from the task frame) and writes its results as records
 * into an accumulator, so neither the items nor the results become Lua
 * values in a table (that costs more than the calls of a trivial
 * function).  The accumulator is a userdata, reused from chunk to chunk,
 * so that an error raised by the function loses nothing: the Lua side
 * reads how far it got and goes on with the next chunk. */

#define ACC_T "mproc.PackedAcc"

/* The accumulator (mproc_packacc) is a userdata; its results that are not
 * numbers are kept in its uservalue, a table. */
static mproc_packacc *checkacc(lua_State *L, int idx) {
  return (mproc_packacc *)luaL_checkudata(L, idx, ACC_T);
}

/* pool_packed_acc(n [, acc]) -> an empty accumulator for n results: acc itself
 * when it has room, else a new one */
static int l_packed_acc(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  mproc_packacc *a = (mproc_packacc *)luaL_testudata(L, 2, ACC_T);
  luaL_argcheck(L, n >= 0 && (uint64_t)n < MPROC_PACKACC_MAX, 1, "bad count");
  if (a == NULL || a->cap < (size_t)n) {
    a = (mproc_packacc *)lua_newuserdatauv(L, mproc_packacc_size((size_t)n), 1);
    luaL_setmetatable(L, ACC_T);
    mproc_packacc_reset(a, (size_t)n, (size_t)n);
  } else {
    lua_settop(L, 2);
    lua_pushnil(L);
    lua_setiuservalue(L, 2, 1);
    mproc_packacc_reset(a, (size_t)n, 0);
  }
  return 1;
}

/* acc[k] = fn(k-th of the n records at s) for k from `from` on; fn, the
 * accumulator and a scratch slot are at fi, ai and ai + 1 */
static int run_records(lua_State *L, int fi, const char *s, mproc_packacc *a, int ai,
                       lua_Integer from, uint64_t *progress) {
  size_t k;
  int res = ai + 1;
  lua_settop(L, ai);
  if (from < 1) from = 1;
  for (k = (size_t)from - 1; k < a->n; k++) {
    a->pos = k + 1;
    if (progress) __atomic_store_n(progress, (uint64_t)k + 1, __ATOMIC_RELAXED);
    lua_pushvalue(L, fi);
    if (!push_rec(L, s + k * PACK_REC)) return luaL_error(L, "malformed packed numbers");
    lua_call(L, 1, 1);
    if (!put_rec(mproc_packacc_rec(a, k), L, res)) {
      if (mproc_packacc_other(a, k)) {
        lua_newtable(L);
        lua_setiuservalue(L, ai, 1);
      }
      lua_getiuservalue(L, ai, 1);
      lua_pushvalue(L, res);
      lua_rawseti(L, -2, (lua_Integer)k + 1);
    }
    lua_settop(L, ai);
  }
  return 0;
}

/* pool_acc_pos(acc) -> the item being run when the last run_pending stopped */
static int l_acc_pos(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)checkacc(L, 1)->pos);
  return 1;
}

/* pool_acc_result(acc) -> the results as a list with n (missing ones nil) */
static int l_acc_result(lua_State *L) {
  mproc_packacc *a = checkacc(L, 1);
  size_t k;
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1);
  lua_createtable(L, a->n < INT_MAX ? (int)a->n : 0, 1);
  lua_pushinteger(L, (lua_Integer)a->n);
  lua_setfield(L, 3, "n");
  for (k = 0; k < a->n; k++) {
    const char *r = mproc_packacc_rec(a, k);
    if (r[0] == 'x') lua_rawgeti(L, 2, (lua_Integer)k + 1);
    else if (!push_rec(L, r)) continue;
    lua_rawseti(L, 3, (lua_Integer)k + 1);
  }
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * Board: one process's handle on a pool's transport (src/core/pool.c)
 * ======================================================================= */

typedef struct board {
  mproc_pool pool;
  int open;
  int slot;               /* a worker's claim slot; -1 in the parent */
  pid_t pid;              /* the process it belongs to */
  mproc_bytes in;         /* frames taken: [inpos, in.len) not handed out */
  size_t inpos;
  mproc_pool_view view;   /* the frame handed out last (maybe mapped) */
  const char *pend;       /* its packed records, until the next get */
  size_t pendn;
  int haspend;
} board;

static board *checkboard(lua_State *L) {
  board *b = (board *)luaL_checkudata(L, 1, BOARD_T);
  if (!b->open) luaL_error(L, "attempt to use a closed pool");
  return b;
}

static void drop_view(board *b) {
  mproc_pool_view_close(&b->view);
  b->haspend = 0;
  b->pend = NULL;
  b->pendn = 0;
}

static int board_gc(lua_State *L) {
  board *b = (board *)luaL_checkudata(L, 1, BOARD_T);
  if (b->open) {
    drop_view(b);
    if (b->pid == getpid()) mproc_pool_close(&b->pool);
    else {                /* inherited (mp.fork): unmap only */
      mproc_ring_close(&b->pool.tasks);
      mproc_ring_close(&b->pool.results);
      if (b->pool.rfd >= 0) close(b->pool.rfd);
      if (b->pool.wfd >= 0) close(b->pool.wfd);
      mproc_bytes_free(&b->pool.over);
    }
    mproc_bytes_free(&b->in);
    b->inpos = 0;
    b->open = 0;
  }
  return 0;
}

/* pool_board() -> true, b | false, "OSError", msg, errno */
static int l_board(lua_State *L) {
  board *b = (board *)lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  b->slot = -1;
  luaL_setmetatable(L, BOARD_T);
  if (mproc_pool_create(&b->pool) < 0) return mproc_fail_errno(L, errno, "pool transport");
  b->open = 1;
  b->pid = getpid();
  lua_pushboolean(L, 1);
  lua_rotate(L, -2, 1);
  return 2;
}

/* pool_board_attach(tasks, results, wfd) -> true, b | false, "OSError"...:
 * a spawned worker's handle on its pool (lua/mproc/pool.lua). */
static int l_board_attach(lua_State *L) {
  const char *tn = luaL_checkstring(L, 1), *rn = luaL_checkstring(L, 2);
  int wfd = (int)luaL_checkinteger(L, 3);
  board *b = (board *)lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  b->slot = -1;
  luaL_setmetatable(L, BOARD_T);
  if (mproc_pool_attach(&b->pool, tn, rn, wfd) < 0)
    return mproc_fail_errno(L, errno, "pool transport");
  b->open = 1;
  b->pid = getpid();
  lua_pushboolean(L, 1);
  lua_rotate(L, -2, 1);
  return 2;
}

/* b:_names() -> the task ring's name, the result ring's, the descriptor
 * workers notify the parent through: what a spawned worker attaches to. */
static int board_names(lua_State *L) {
  board *b = checkboard(L);
  lua_pushstring(L, b->pool.tasks.name);
  lua_pushstring(L, b->pool.results.name);
  lua_pushinteger(L, b->pool.wfd);
  return 3;
}

/* A task frame: the header, the function's bytes, then the body; built in
 * a boxed buffer (freed by the collector if an error unwinds). */
static mproc_bytes *frame_start(lua_State *L, uint64_t tid, uint32_t op, int fnarg,
                              double timeout, uint32_t cs) {
  mproc_bytes *f = mproc_bytes_box(L);
  mproc_task_hdr h;
  size_t fnlen = 0;
  const char *fn = lua_isnoneornil(L, fnarg + 1) ? "" : luaL_checklstring(L, fnarg + 1, &fnlen);
  memset(&h, 0, sizeof h);
  h.tid = tid;
  h.op = op;
  h.fnid = (uint32_t)luaL_optinteger(L, fnarg, 0);
  h.timeout = timeout;
  h.fnlen = (uint32_t)fnlen;
  h.cs = cs;
  luaL_argcheck(L, fnlen <= 0xffffffffu, fnarg + 1, "function too large");
  mproc_reserve(L, f, sizeof h + fnlen);
  memcpy(f->data, &h, sizeof h);
  memcpy(f->data + sizeof h, fn, fnlen);
  f->len = sizeof h + fnlen;
  return f;
}

static int submit(lua_State *L, board *b, mproc_bytes *f) {
  if (mproc_pool_submit(&b->pool, f->data, f->len) < 0)
    return mproc_fail_errno(L, errno, "pool submit");
  mproc_bytes_free(f);
  lua_pushboolean(L, 1);
  return 1;
}

static uint64_t checktid(lua_State *L, int arg) {
  lua_Integer t = luaL_checkinteger(L, arg);
  luaL_argcheck(L, t >= 0, arg, "bad task id");
  return (uint64_t)t;
}

/* b:_apply(tid, fnid, fnbytes, args, timeout) -> true | false, kind, msg */
static int board_apply(lua_State *L) {
  board *b = checkboard(L);
  uint64_t tid = checktid(L, 2);
  double timeout = luaL_optnumber(L, 6, 0);
  mproc_bytes *f;
  luaL_checktype(L, 5, LUA_TTABLE);
  f = frame_start(L, tid, MPROC_TASK_APPLY, 3, timeout, 0);
  mproc_conn_share_begin(L);   /* Pipe ends: workers started before them */
  if (!mproc_encode(L, 5, "args", f)) {
    mproc_conn_share_end(L, 0);
    mproc_bytes_free(f);
    return mproc_fail(L, "SerializeError", "%s", lua_tostring(L, -1));
  }
  mproc_conn_share_end(L, 1);
  return submit(L, b, f);
}

/* b:_batch(tid, star, fnid, fnbytes, cs, items, first, count, timeout)
 * -> true | false, kind, msg.  A map's all-number items travel packed. */
static int board_batch(lua_State *L) {
  board *b = checkboard(L);
  uint64_t tid = checktid(L, 2);
  int star = lua_toboolean(L, 3);
  lua_Integer cs = luaL_checkinteger(L, 6);
  lua_Integer first = luaL_checkinteger(L, 8), count = luaL_checkinteger(L, 9), i;
  double timeout = luaL_optnumber(L, 10, 0);
  mproc_bytes *f;
  size_t base;
  luaL_checktype(L, 7, LUA_TTABLE);
  luaL_argcheck(L, cs >= 1 && cs <= 0x7fffffff, 6, "bad chunk size");
  luaL_argcheck(L, count >= 1 && count < INT_MAX / PACK_REC, 9, "bad count");
  f = frame_start(L, tid, star ? MPROC_TASK_STARBATCH : MPROC_TASK_PACKED, 4, timeout,
                  (uint32_t)cs);
  base = f->len;
  if (!star) {
    mproc_reserve(L, f, (size_t)count * PACK_REC);
    if (pack_table(L, 7, first, count, f->data + base)) {
      f->len = base + (size_t)count * PACK_REC;
      return submit(L, b, f);
    }
    ((mproc_task_hdr *)(void *)f->data)->op = MPROC_TASK_BATCH;
  }
  lua_createtable(L, (int)count, 1);
  for (i = 0; i < count; i++) {
    lua_rawgeti(L, 7, first + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, count);
  lua_setfield(L, -2, "n");
  mproc_conn_share_begin(L);
  if (!mproc_encode(L, lua_gettop(L), "items", f)) {
    mproc_conn_share_end(L, 0);
    mproc_bytes_free(f);
    return mproc_fail(L, "SerializeError", "%s", lua_tostring(L, -1));
  }
  mproc_conn_share_end(L, 1);
  return submit(L, b, f);
}

/* b:_stop(n): n stop orders, after everything queued */
static int board_stop(lua_State *L) {
  board *b = checkboard(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  mproc_task_hdr h;
  memset(&h, 0, sizeof h);
  h.op = MPROC_TASK_STOP;
  for (; n > 0; n--)
    if (mproc_pool_submit(&b->pool, &h, sizeof h) < 0)
      return mproc_fail_errno(L, errno, "pool submit");
  lua_pushboolean(L, 1);
  return 1;
}

/* b:_flush() -> frames still waiting for room in the ring */
static int board_flush(lua_State *L) {
  board *b = checkboard(L);
  lua_pushinteger(L, (lua_Integer)mproc_pool_flush(&b->pool));
  return 1;
}

/* b:_cancel(tid) -> true when the task had not been taken */
static int board_cancel(lua_State *L) {
  board *b = checkboard(L);
  lua_pushboolean(L, mproc_pool_cancel(&b->pool, checktid(L, 2)));
  return 1;
}

/* Next frame of the input buffer: its payload and flags, or NULL (the
 * buffer is then emptied). */
static const char *next_frame(board *b, size_t *len, unsigned *flags) {
  const char *f = mproc_pool_next_frame(&b->in, &b->inpos, len, flags);
  if (f == NULL) b->in.len = b->inpos = 0;
  return f;
}

static int decode_into(lua_State *L, const char *p, size_t n) {
  return mproc_decode(L, p, n, 0);
}

/* b:_get() -> nil (nothing waiting) | tid, kind, value: kind "ok",
 * "err", "batch" with the decoded value, "bad" with a message (it could
 * not be decoded), or "packed" with a count: the records wait for
 * b:_take(count, ...) until the next get. */
static int board_get(lua_State *L) {
  board *b = checkboard(L);
  static const char *const kinds[] = {"?", "ok", "err", "batch", "packed"};
  mproc_result_hdr h;
  const char *p, *body;
  size_t len, blen;
  unsigned flags;
  int r;
  drop_view(b);
  p = next_frame(b, &len, &flags);
  if (p == NULL) {
    if (!mproc_pool_has_results(&b->pool) && !lua_toboolean(L, 2)) return 0;
    if (mproc_pool_collect(&b->pool, &b->in) < 0) return luaL_error(L, "pool: %s", strerror(errno));
    p = next_frame(b, &len, &flags);
    if (p == NULL) return 0;
  }
  if (mproc_pool_view_open(&b->view, p, len, flags) < 0 || b->view.n < sizeof h) {
    uint64_t tid = 0;
    if (len >= 8) memcpy(&tid, p, 8);
    lua_pushinteger(L, (lua_Integer)tid);
    lua_pushliteral(L, "bad");
    lua_pushfstring(L, "cannot receive the result: %s", strerror(errno ? errno : EINVAL));
    return 3;
  }
  r = mproc_result_parse(b->view.p, b->view.n, &h, &body, &blen);
  lua_pushinteger(L, (lua_Integer)h.tid);
  if (r < 0) {
    lua_pushliteral(L, "bad");
    if (h.kind == MPROC_RESULT_PACKED) lua_pushliteral(L, "malformed packed results");
    else lua_pushliteral(L, "malformed result frame");
    return 3;
  }
  if (h.kind == MPROC_RESULT_PACKED) {
    b->pend = body;
    b->pendn = h.count;
    b->haspend = 1;
    lua_pushliteral(L, "packed");
    lua_pushinteger(L, (lua_Integer)h.count);
    return 3;
  }
  lua_pushstring(L, kinds[h.kind]);
  if (!decode_into(L, body, blen)) {
    lua_pushliteral(L, "bad");
    lua_replace(L, -3);
  }
  return 3;
}

/* The packed records handed out last; there must be `count` of them. */
static const char *pending(lua_State *L, board *b, lua_Integer count) {
  if (!b->haspend) luaL_error(L, "no packed values to take");
  if (count < 0 || (size_t)count != b->pendn)
    luaL_error(L, "malformed packed frame: %d values, %d expected", (int)b->pendn, (int)count);
  return b->pend;
}

/* b:_take(count [, t, off]) -> t | a new list with n: the packed records
 * handed out last, set at t[off], t[off+1]... */
static int board_take(lua_State *L) {
  board *b = checkboard(L);
  lua_Integer count = luaL_checkinteger(L, 2), off = 1;
  const char *s = pending(L, b, count);
  if (lua_isnoneornil(L, 3)) {
    lua_settop(L, 2);
    lua_createtable(L, (int)count, 1);
    lua_pushinteger(L, count);
    lua_setfield(L, 3, "n");
  } else {
    luaL_checktype(L, 3, LUA_TTABLE);
    off = luaL_checkinteger(L, 4);
    lua_settop(L, 3);
  }
  if (!unpack_records(L, s, (size_t)count, 3, off)) return luaL_error(L, "malformed packed numbers");
  b->haspend = 0;
  return 1;
}

/* b:_has() -> whether results wait (buffered or in the ring) */
static int board_has(lua_State *L) {
  board *b = checkboard(L);
  lua_pushboolean(L, b->inpos < b->in.len || mproc_pool_has_results(&b->pool));
  return 1;
}

/* b:_spin(seconds) -> whether a result came within that busy wait */
static int board_spin(lua_State *L) {
  board *b = checkboard(L);
  lua_pushboolean(L, b->inpos < b->in.len || mproc_pool_spin(&b->pool, luaL_checknumber(L, 2)));
  return 1;
}

static int board_fileno(lua_State *L) {
  board *b = checkboard(L);
  lua_pushinteger(L, b->pool.rfd);
  return 1;
}

static int checkslot(lua_State *L, int arg) {
  lua_Integer s = luaL_checkinteger(L, arg);
  luaL_argcheck(L, s >= 0 && s < MPROC_RING_CLAIMS, arg, "bad slot");
  return (int)s;
}

/* b:_claim(slot) -> tid (0: none), start, pos */
static int board_claim(lua_State *L) {
  board *b = checkboard(L);
  mproc_ring_claim *c = &mproc_ring_claims(&b->pool.tasks)[checkslot(L, 2)];
  lua_pushinteger(L, (lua_Integer)__atomic_load_n(&c->tid, __ATOMIC_ACQUIRE));
  lua_pushnumber(L, c->start);
  lua_pushinteger(L, (lua_Integer)c->pos);
  return 3;
}

/* b:_clear(slot): the slot is free for a new worker */
static int board_clear(lua_State *L) {
  board *b = checkboard(L);
  mproc_ring_claim *c = &mproc_ring_claims(&b->pool.tasks)[checkslot(L, 2)];
  __atomic_store_n(&c->tid, 0, __ATOMIC_RELEASE);
  c->pos = 0;
  return 0;
}

/* {------ the worker's side ------ */

/* b:_worker(slot): this process is the worker of that slot */
static int board_worker(lua_State *L) {
  board *b = checkboard(L);
  b->slot = checkslot(L, 2);
  b->pid = getpid();
  mproc_pool_worker(&b->pool);
  return 0;
}

static board *checkworker(lua_State *L) {
  board *b = checkboard(L);
  if (b->slot < 0) luaL_error(L, "not a pool worker");
  return b;
}

/* The function of a task: cache[fnid], or decoded from its bytes (and
 * cached when fnid is not 0).  0 with a message pushed on failure. */
static int push_fn(lua_State *L, int cache, const mproc_task_hdr *h, const char *fn) {
  if (h->fnid != 0) {
    if (lua_rawgeti(L, cache, h->fnid) != LUA_TNIL) return 1;
    lua_pop(L, 1);
  }
  if (!mproc_decode(L, fn, h->fnlen, 0)) return 0;
  if (h->fnid != 0) {
    lua_pushvalue(L, -1);
    lua_rawseti(L, cache, h->fnid);
  }
  return 1;
}

/* b:_next(timeout, cache) -> nil (nothing came) | op, tid, fn, payload, cs,
 * timeout.  op: "apply" (payload: the args), "batch"/"star" (the items,
 * with n), "packed" (a count: the records wait for _run_pending), "stop",
 * "none" (skip), "error" (fn: why it could not be decoded). */
static int board_next(lua_State *L) {
  board *b = checkworker(L);
  static const char *const ops[] = {"none", "apply", "batch", "star", "packed", "stop"};
  double timeout = luaL_optnumber(L, 2, -1);
  mproc_task_hdr h;
  const char *p, *fn, *body;
  size_t len, blen;
  unsigned flags;
  int r;
  luaL_checktype(L, 3, LUA_TTABLE);
  drop_view(b);
  b->in.len = b->inpos = 0;
  r = mproc_pool_take(&b->pool, b->slot, &b->in, timeout);
  if (r < 0) return luaL_error(L, "pool: %s", strerror(errno));
  if (r == 0) return 0;
  p = next_frame(b, &len, &flags);
  if (p == NULL || mproc_pool_view_open(&b->view, p, len, flags) < 0 ||
      b->view.n < sizeof h) {
    uint64_t tid = 0;
    if (p && len >= 8) memcpy(&tid, p, 8);
    lua_pushliteral(L, "error");
    lua_pushinteger(L, (lua_Integer)tid);
    lua_pushliteral(L, "cannot receive the task: its frame is damaged or gone");
    return 3;
  }
  if (mproc_task_parse(b->view.p, b->view.n, &h, &fn, &body, &blen) < 0) {
    lua_pushliteral(L, "error");
    lua_pushinteger(L, (lua_Integer)h.tid);
    if (h.op == MPROC_TASK_PACKED && b->view.n - sizeof h >= h.fnlen)
      lua_pushliteral(L, "malformed packed items");
    else lua_pushliteral(L, "cannot receive the task: malformed frame");
    return 3;
  }
  lua_pushstring(L, ops[h.op]);
  lua_pushinteger(L, (lua_Integer)h.tid);
  if (h.op == MPROC_TASK_NONE || h.op == MPROC_TASK_STOP) return 2;
  if (!push_fn(L, 3, &h, fn)) goto bad;
  if (h.op == MPROC_TASK_PACKED) {
    b->pend = body;
    b->pendn = blen / PACK_REC;
    b->haspend = 1;
    lua_pushinteger(L, (lua_Integer)b->pendn);
  } else if (!mproc_decode(L, body, blen, 0)) {
    goto bad;
  }
  lua_pushinteger(L, h.cs);
  lua_pushnumber(L, h.timeout);
  return 6;
bad:   /* the message is on the top */
  lua_pushliteral(L, "error");
  lua_pushinteger(L, (lua_Integer)h.tid);
  lua_pushvalue(L, -3);
  return 3;
}

/* b:_post(tid, kind, value) with kind "ok", "err" or "batch" -> true |
 * false, "SerializeError", msg (nothing posted) */
static int board_post(lua_State *L) {
  board *b = checkworker(L);
  static const char *const kinds[] = {"ok", "err", "batch", NULL};
  mproc_result_hdr h;
  mproc_bytes *f;
  h.tid = checktid(L, 2);
  h.kind = (uint32_t)luaL_checkoption(L, 3, NULL, kinds) + MPROC_RESULT_OK;
  h.count = 0;
  lua_settop(L, 4);
  f = mproc_bytes_box(L);
  mproc_reserve(L, f, sizeof h);
  memcpy(f->data, &h, sizeof h);
  f->len = sizeof h;
  mproc_conn_share_begin(L);   /* a Pipe end made by the task */
  if (!mproc_encode(L, 4, "result", f)) {
    mproc_conn_share_end(L, 0);
    mproc_bytes_free(f);
    return mproc_fail(L, "SerializeError", "%s", lua_tostring(L, -1));
  }
  mproc_conn_share_end(L, 1);
  if (mproc_pool_post(&b->pool, b->slot, f->data, f->len) < 0)
    return luaL_error(L, "pool: %s", strerror(errno));
  mproc_bytes_free(f);
  lua_pushboolean(L, 1);
  return 1;
}

/* b:_post_numbers(tid, acc) -> true, or false when some result is not a
 * number (nothing posted) */
static int board_post_numbers(lua_State *L) {
  board *b = checkworker(L);
  mproc_packacc *a = checkacc(L, 3);
  uint64_t tid = checktid(L, 2);
  if (!mproc_packacc_complete(a)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (mproc_pool_post_packed(&b->pool, b->slot, tid, a) < 0)
    return luaL_error(L, "pool: %s", strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

/* b:_run_pending(fn, acc, from): runs fn over the packed items taken last
 * (see run_records) */
static int board_run_pending(lua_State *L) {
  board *b = checkworker(L);
  mproc_packacc *a = checkacc(L, 3);
  lua_Integer from = luaL_optinteger(L, 4, 1);
  const char *s = pending(L, b, (lua_Integer)a->n);
  luaL_checkany(L, 2);
  return run_records(L, 2, s, a, 3, from, &mproc_ring_claims(&b->pool.tasks)[b->slot].pos);
}

/* b:_progress(pos): the item the worker is at (read after its death) */
static int board_progress(lua_State *L) {
  board *b = checkworker(L);
  mproc_ring_claims(&b->pool.tasks)[b->slot].pos = (uint64_t)luaL_checkinteger(L, 2);
  return 0;
}

/* alarm(seconds): SIGALRM (default action: the process ends) after that
 * long; 0 disarms.  A task's timeout holds even while the parent is busy. */
static int l_alarm(lua_State *L) {
  double t = luaL_checknumber(L, 1);
  struct itimerval it;
  memset(&it, 0, sizeof it);
  if (t > 1e8) t = 0;   /* no alarm that far: forever */
  if (t > 0) {
    it.it_value.tv_sec = (time_t)t;
    it.it_value.tv_usec = (suseconds_t)((t - (double)it.it_value.tv_sec) * 1e6);
    if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0) it.it_value.tv_usec = 1;
  }
  setitimer(ITIMER_REAL, &it, NULL);
  return 0;
}

/* }------ */

static int board_tostring(lua_State *L) {
  board *b = (board *)luaL_checkudata(L, 1, BOARD_T);
  lua_pushfstring(L, "mproc.PoolBoard (%s)", b->open ? b->pool.tasks.name : "closed");
  return 1;
}

/* }====================================================================== */

int mproc_open_pool(lua_State *L) {
  static const luaL_Reg board_methods[] = {
    {"_apply", board_apply},
    {"_batch", board_batch},
    {"_stop", board_stop},
    {"_flush", board_flush},
    {"_cancel", board_cancel},
    {"_get", board_get},
    {"_take", board_take},
    {"_has", board_has},
    {"_spin", board_spin},
    {"_fileno", board_fileno},
    {"_claim", board_claim},
    {"_clear", board_clear},
    {"_worker", board_worker},
    {"_names", board_names},
    {"_next", board_next},
    {"_post", board_post},
    {"_post_numbers", board_post_numbers},
    {"_run_pending", board_run_pending},
    {"_progress", board_progress},
    {"_close", board_gc},
    {NULL, NULL}
  };
  static const luaL_Reg board_meta[] = {
    {"__gc", board_gc},
    {"__close", board_gc},
    {"__tostring", board_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"pool_board", l_board},
    {"pool_board_attach", l_board_attach},
    {"pool_alarm", l_alarm},
    {"pool_new_list", l_new_list},
    {"pool_packed_acc", l_packed_acc},
    {"pool_acc_pos", l_acc_pos},
    {"pool_acc_result", l_acc_result},
    {NULL, NULL}
  };
  mproc_newclass(L, BOARD_T, board_methods, board_meta);
  mproc_newclass(L, ACC_T, NULL, NULL);
  mproc_setfuncs(L, funcs);
  return 0;
}
