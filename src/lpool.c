/*
 * lpool.c: what the pool and the scheduler need from C.
 *
 * "mproc.Chan": one end of a pool channel (a stream socket between the
 * parent and one worker).  Unlike a Pipe end it batches: put() only
 * encodes a frame into the output buffer, flush() writes everything
 * pending in as few write() calls as the socket allows, and get() reads as
 * much as is there in one read() and then hands out whole frames one by
 * one.  With many small tasks in flight this turns one syscall per message
 * into one per batch.  Nothing here blocks; the Lua layer waits through
 * sched.
 *
 * "mproc.Poller": a set of descriptors with one descriptor of its own that
 * is readable while any member is ready (epoll on Linux), so a foreign
 * event loop can watch a whole pool through pool:fileno().
 *
 * poll_many: the scheduler's wait for many descriptors at once.
 *
 * Frame: 4-byte little-endian length, then the codec's bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#ifdef __linux__
#include <sys/epoll.h>
#endif

#include "lmproc.h"

#define CHAN_T   "mproc.Chan"
#define POLLER_T "mproc.PoolPoller"

#define READ_CHUNK  (64 * 1024)       /* bytes asked of each read() */
#define KEEP_BUF    (1024 * 1024)     /* buffers up to this are kept */
#define FRAME_MAX   0xFFFFFFFFu

/* A dead peer must give EPIPE, never kill us with SIGPIPE. */
#ifdef MSG_NOSIGNAL
#define SEND_FLAGS MSG_NOSIGNAL
#else
#define SEND_FLAGS 0
#endif

/* {======================================================================
 * Packed numbers: the items of a map chunk and its results, when they are
 * all numbers, travel as 9-byte records (a type byte, then the 8 bytes of
 * the integer or the float as is).  They are written from the Lua table
 * straight into a channel's output buffer and read from its input buffer
 * straight into the result list: no value-by-value encoding, and no Lua
 * string in between for the parent's collector to deal with.
 * ======================================================================= */

#define PACK_REC 9
#define PACK_GROUP 64

/* 0 (nothing written) when the value is not a number; integers are
 * tested first, the common case, so they cost one call less */
static int put_rec(char *p, lua_State *L, int idx) {
  if (lua_isinteger(L, idx)) {
    lua_Integer v = lua_tointeger(L, idx);
    p[0] = 'i';
    memcpy(p + 1, &v, 8);
  } else if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Number v = lua_tonumber(L, idx);
    p[0] = 'f';
    memcpy(p + 1, &v, 8);
  } else {
    return 0;
  }
  return 1;
}

/* 0 for a malformed record */
static int push_rec(lua_State *L, const char *s) {
  if (s[0] == 'i') {
    lua_Integer v;
    memcpy(&v, s + 1, 8);
    lua_pushinteger(L, v);
  } else if (s[0] == 'f') {
    lua_Number v;
    memcpy(&v, s + 1, 8);
    lua_pushnumber(L, v);
  } else {
    return 0;
  }
  return 1;
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

/* new_list(n) -> {n = n} with room for n list items: a map's result list
 * is filled out of order, and growing it would rehash it many times */
static int l_new_list(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_createtable(L, n > 0 && n < INT_MAX ? (int)n : 0, 1);
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  return 1;
}

/* The worker's side of a chunk: a C loop calls the task function on each
 * item (read from the channel's buffer) and writes its results as records
 * into an accumulator, so neither the items nor the results become Lua
 * values in a table (that costs more than the calls of a trivial
 * function).  The accumulator is a userdata, reused from chunk to chunk,
 * so that an error raised by the function loses nothing: the Lua side
 * reads how far it got and goes on with the next chunk. */

#define ACC_T "mproc.PackedAcc"

typedef struct packacc {
  size_t n;        /* records in use */
  size_t cap;      /* records there is room for */
  size_t pos;      /* 1-based item being run (after an error: the culprit) */
  int mixed;       /* some result is not a number (kept in the uservalue) */
  char rec[1];     /* records; type 0: no value, 'x': in the uservalue */
} packacc;

static packacc *checkacc(lua_State *L, int idx) {
  return (packacc *)luaL_checkudata(L, idx, ACC_T);
}

/* packed_acc(n [, acc]) -> an empty accumulator for n results: acc itself
 * when it has room, else a new one */
static int l_packed_acc(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  packacc *a = (packacc *)luaL_testudata(L, 2, ACC_T);
  luaL_argcheck(L, n >= 0 && (uint64_t)n < ((size_t)-1 >> 1) / PACK_REC, 1, "bad count");
  if (a == NULL || a->cap < (size_t)n) {
    a = (packacc *)lua_newuserdatauv(L, offsetof(packacc, rec) + (size_t)n * PACK_REC + 1, 1);
    a->cap = (size_t)n;
    luaL_setmetatable(L, ACC_T);
  } else {
    lua_settop(L, 2);
    lua_pushnil(L);
    lua_setiuservalue(L, 2, 1);
  }
  a->n = (size_t)n;
  a->pos = 0;
  a->mixed = 0;
  memset(a->rec, 0, (size_t)n * PACK_REC + 1);
  return 1;
}

/* acc[k] = fn(k-th of the n records at s) for k from `from` on; fn, the
 * accumulator and a scratch slot are at fi, ai and ai + 1 */
static int run_records(lua_State *L, int fi, const char *s, packacc *a, int ai, lua_Integer from) {
  size_t k;
  int res = ai + 1;
  lua_settop(L, ai);
  if (from < 1) from = 1;
  for (k = (size_t)from - 1; k < a->n; k++) {
    a->pos = k + 1;
    lua_pushvalue(L, fi);
    if (!push_rec(L, s + k * PACK_REC)) return luaL_error(L, "malformed packed numbers");
    lua_call(L, 1, 1);
    if (!put_rec(a->rec + k * PACK_REC, L, res)) {
      if (!a->mixed) {
        a->mixed = 1;
        lua_newtable(L);
        lua_setiuservalue(L, ai, 1);
      }
      a->rec[k * PACK_REC] = 'x';
      lua_getiuservalue(L, ai, 1);
      lua_pushvalue(L, res);
      lua_rawseti(L, -2, (lua_Integer)k + 1);
    }
    lua_settop(L, ai);
  }
  return 0;
}

/* acc_pos(acc) -> the item being run when the last run_pending stopped */
static int l_acc_pos(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)checkacc(L, 1)->pos);
  return 1;
}

/* Whether every result is a number (put_numbers can send them as is). */
static int acc_complete(const packacc *a) {
  size_t k;
  if (a->mixed) return 0;
  for (k = 0; k < a->n; k++)
    if (a->rec[k * PACK_REC] == 0) return 0;
  return 1;
}

/* acc_result(acc) -> the results as a list with n (missing ones nil) */
static int l_acc_result(lua_State *L) {
  packacc *a = checkacc(L, 1);
  size_t k;
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1);
  lua_createtable(L, a->n < INT_MAX ? (int)a->n : 0, 1);
  lua_pushinteger(L, (lua_Integer)a->n);
  lua_setfield(L, 3, "n");
  for (k = 0; k < a->n; k++) {
    const char *r = a->rec + k * PACK_REC;
    if (r[0] == 'x') lua_rawgeti(L, 2, (lua_Integer)k + 1);
    else if (!push_rec(L, r)) continue;
    lua_rawseti(L, 3, (lua_Integer)k + 1);
  }
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * Chan
 * ======================================================================= */

typedef struct chan {
  int fd;                 /* -1: closed */
  mproc_buf out;          /* frames to write: [outpos, out.len) pending */
  size_t outpos;
  char *in;               /* bytes read: [inpos, inlen) not consumed yet */
  size_t inpos, inlen, incap;
  size_t pendoff, pendn;  /* records of the last packed frame, until the */
  int haspend;            /* next get (see get_packed) */
} chan;

static chan *checkchan(lua_State *L) {
  chan *c = (chan *)luaL_checkudata(L, 1, CHAN_T);
  if (c->fd < 0) luaL_error(L, "attempt to use a closed channel");
  return c;
}

static chan *newchan(lua_State *L) {
  chan *c = (chan *)lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->fd = -1;
  luaL_setmetatable(L, CHAN_T);
  return c;
}

static int chan_gc(lua_State *L) {
  chan *c = (chan *)luaL_checkudata(L, 1, CHAN_T);
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  mproc_buf_free(&c->out);
  c->outpos = 0;
  free(c->in);
  c->in = NULL;
  c->inpos = c->inlen = c->incap = 0;
  return 0;
}

/* chan_pair() -> true, a, b | false, "OSError", msg, errno */
static int l_chan_pair(lua_State *L) {
  int fds[2];
  chan *a, *b;
  lua_settop(L, 0);
  a = newchan(L);
  b = newchan(L);
  if (mproc_conn_pair(fds, 1) < 0) return mproc_fail_errno(L, errno, "socketpair");
  a->fd = fds[0];
  b->fd = fds[1];
  lua_pushboolean(L, 1);
  lua_rotate(L, 1, 1);
  return 3;
}

static void put_le32(char *p, uint32_t v) {
  p[0] = (char)(v & 0xff);
  p[1] = (char)((v >> 8) & 0xff);
  p[2] = (char)((v >> 16) & 0xff);
  p[3] = (char)((v >> 24) & 0xff);
}

static uint32_t get_le32(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
         ((uint32_t)p[3] << 24);
}

/* put(c, v [, root]) -> true | false, "SerializeError", msg
 * Encodes v as one frame at the end of the output buffer (no syscall). */
static int chan_put(lua_State *L) {
  chan *c = checkchan(L);
  const char *root = luaL_optstring(L, 3, "value");
  size_t start, n;
  lua_settop(L, 2);
  if (c->outpos == c->out.len) c->outpos = c->out.len = 0;  /* reuse */
  start = c->out.len;
  mproc_buf_reserve(L, &c->out, 4);
  c->out.len += 4;
  if (!mproc_encode(L, 2, root, &c->out)) {
    c->out.len = start;
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "SerializeError");
    lua_rotate(L, -3, 2);
    return 3;
  }
  n = c->out.len - start - 4;
  if (n > FRAME_MAX) {
    c->out.len = start;
    return mproc_fail(L, "SerializeError", "message too long (%I bytes)",
                      (lua_Integer)n);
  }
  put_le32(c->out.data + start, (uint32_t)n);
  lua_pushboolean(L, 1);
  return 1;
}

/* put_raw(c, s) -> true: appends s (bytes from mp.dumps) as one frame */
static int chan_put_raw(lua_State *L) {
  chan *c = checkchan(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (n > FRAME_MAX) return mproc_fail(L, "SerializeError", "message too long");
  if (c->outpos == c->out.len) c->outpos = c->out.len = 0;
  mproc_buf_reserve(L, &c->out, n + 4);
  put_le32(c->out.data + c->out.len, (uint32_t)n);
  memcpy(c->out.data + c->out.len + 4, s, n);
  c->out.len += n + 4;
  lua_pushboolean(L, 1);
  return 1;
}

/* Packed frames: a kind byte ('P' items, 'R' results; a codec message
 * starts with its version byte, 1), task id, job id and chunk size as
 * 8-byte integers, then the records. */
#define PF_ITEMS   'P'
#define PF_RESULTS 'R'
#define PF_HEAD    25

/* put_numbers(c, kind, tid, jobid, cs, t, first, count) -> true | false
 * put_numbers(c, kind, tid, jobid, cs, acc) -> true | false
 * Appends a packed frame of t[first..first+count-1] or of an accumulator's
 * results; false (nothing appended) when one of them is not a number, or
 * t has a metatable: the caller then sends a table through put. */
static int chan_put_numbers(lua_State *L) {
  chan *c = checkchan(L);
  const char *kind = luaL_checkstring(L, 2);
  lua_Integer hdr[3], first = 1, count;
  packacc *a = (packacc *)luaL_testudata(L, 6, ACC_T);
  size_t start, body;
  char *p;
  hdr[0] = luaL_checkinteger(L, 3);
  hdr[1] = luaL_checkinteger(L, 4);
  hdr[2] = luaL_checkinteger(L, 5);
  if (a != NULL) {
    if (!acc_complete(a)) goto no;
    count = (lua_Integer)a->n;
  } else {
    luaL_checktype(L, 6, LUA_TTABLE);
    first = luaL_checkinteger(L, 7);
    count = luaL_checkinteger(L, 8);
    if (lua_getmetatable(L, 6)) goto no;
  }
  if (count < 1 || (uint64_t)count > (FRAME_MAX - PF_HEAD) / PACK_REC) goto no;
  body = PF_HEAD + (size_t)count * PACK_REC;
  if (c->outpos == c->out.len) c->outpos = c->out.len = 0;
  start = c->out.len;
  mproc_buf_reserve(L, &c->out, 4 + body);
  p = c->out.data + start;
  if (a != NULL) memcpy(p + 4 + PF_HEAD, a->rec, (size_t)count * PACK_REC);
  else if (!pack_table(L, 6, first, count, p + 4 + PF_HEAD)) goto no;
  put_le32(p, (uint32_t)body);
  p[4] = kind[0] == PF_RESULTS ? PF_RESULTS : PF_ITEMS;
  memcpy(p + 5, hdr, sizeof hdr);
  c->out.len = start + 4 + body;
  lua_pushboolean(L, 1);
  return 1;
no:
  lua_pushboolean(L, 0);
  return 1;
}

/* flush(c) -> true (nothing pending) | nil, fd (would block)
 * | false, "Closed"|"OSError", msg [, errno] */
static int chan_flush(lua_State *L) {
  chan *c = checkchan(L);
  while (c->outpos < c->out.len) {
    ssize_t w = send(c->fd, c->out.data + c->outpos, c->out.len - c->outpos, SEND_FLAGS);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        lua_pushnil(L);
        lua_pushinteger(L, c->fd);
        return 2;
      }
      if (errno == EPIPE || errno == ECONNRESET)
        return mproc_fail(L, "Closed", "peer closed the channel");
      return mproc_fail_errno(L, errno, "write");
    }
    c->outpos += (size_t)w;
  }
  c->outpos = c->out.len = 0;
  if (c->out.cap > KEEP_BUF) mproc_buf_free(&c->out);
  lua_pushboolean(L, 1);
  return 1;
}

/* pending(c) -> bytes not written yet */
static int chan_pending(lua_State *L) {
  chan *c = checkchan(L);
  lua_pushinteger(L, (lua_Integer)(c->out.len - c->outpos));
  return 1;
}

/* Length of the complete frame at the read position, or -1. */
static int64_t frame_ready(const chan *c) {
  size_t have = c->inlen - c->inpos;
  uint32_t n;
  if (have < 4) return -1;
  n = get_le32(c->in + c->inpos);
  return have - 4 >= n ? (int64_t)n : -1;
}

/* Makes room for `need` more bytes after inlen (compacting first). */
static int in_reserve(chan *c, size_t need) {
  if (c->inpos > 0 && (c->inpos == c->inlen || c->incap - c->inlen < need)) {
    memmove(c->in, c->in + c->inpos, c->inlen - c->inpos);
    c->inlen -= c->inpos;
    c->inpos = 0;
  }
  if (c->incap - c->inlen < need) {
    size_t cap = c->incap ? c->incap : READ_CHUNK;
    char *p;
    while (cap - c->inlen < need) {
      if (cap > SIZE_MAX / 2) { errno = ENOMEM; return -1; }
      cap *= 2;
    }
    p = (char *)realloc(c->in, cap);
    if (p == NULL) { errno = ENOMEM; return -1; }
    c->in = p;
    c->incap = cap;
  }
  return 0;
}

/* One read(); 1 got bytes, 0 nothing there, -2 EOF, -1 error. */
static int fill(chan *c) {
  size_t want = READ_CHUNK;
  ssize_t r;
  if (c->inlen - c->inpos >= 4) {  /* a large frame: read it all at once */
    size_t n = (size_t)get_le32(c->in + c->inpos) + 4;
    size_t have = c->inlen - c->inpos;
    if (n > have && n - have > want) want = n - have;
  }
  if (in_reserve(c, want) < 0) return -1;
  for (;;) {
    r = read(c->fd, c->in + c->inlen, c->incap - c->inlen);
    if (r > 0) { c->inlen += (size_t)r; return 1; }
    if (r == 0) return -2;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -1;
  }
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __asm__ __volatile__("pause");
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* A packed frame of n bytes at the read position.  Items become the
 * message {6, tid, jobid, count, cs}, results {tid, true, false, nil,
 * "packed"}; the records stay in the input buffer for take() and
 * run_pending(), until the next get. */
static int get_packed(lua_State *L, chan *c, size_t n) {
  const char *f = c->in + c->inpos + 4;
  lua_Integer hdr[3];
  size_t count;
  c->inpos += 4 + n;
  if (n < PF_HEAD || (n - PF_HEAD) % PACK_REC != 0 || (n - PF_HEAD) / PACK_REC > INT_MAX)
    return mproc_fail(L, "SerializeError", "malformed packed frame");
  count = (n - PF_HEAD) / PACK_REC;
  memcpy(hdr, f + 1, sizeof hdr);
  lua_pushboolean(L, 1);
  lua_createtable(L, 5, 0);
  if (f[0] == PF_ITEMS) {
    lua_pushinteger(L, 6);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, hdr[0]);
    lua_rawseti(L, -2, 2);
    lua_pushinteger(L, hdr[1]);
    lua_rawseti(L, -2, 3);
    lua_pushinteger(L, (lua_Integer)count);
    lua_rawseti(L, -2, 4);
    lua_pushinteger(L, hdr[2]);
    lua_rawseti(L, -2, 5);
  } else {
    lua_pushinteger(L, hdr[0]);
    lua_rawseti(L, -2, 1);
    lua_pushboolean(L, 1);
    lua_rawseti(L, -2, 2);
    lua_pushboolean(L, 0);
    lua_rawseti(L, -2, 3);
    lua_pushliteral(L, "packed");
    lua_rawseti(L, -2, 5);
  }
  c->pendoff = (size_t)(f - c->in) + PF_HEAD;
  c->pendn = count;
  c->haspend = 1;
  return 2;
}

/* The records of the packed frame get returned last; there must be
 * `count` of them. */
static const char *pending(lua_State *L, chan *c, lua_Integer count) {
  if (!c->haspend) luaL_error(L, "no packed values to take");
  if (count < 0 || (size_t)count != c->pendn)
    luaL_error(L, "malformed packed frame: %d values, %d expected", (int)c->pendn, (int)count);
  return c->in + c->pendoff;
}

/* take(c, count [, t, off]) -> t | a new list with n: the records of the
 * packed frame that get returned last, set at t[off], t[off+1]... */
static int chan_take(lua_State *L) {
  chan *c = checkchan(L);
  lua_Integer count = luaL_checkinteger(L, 2), off = 1;
  const char *s = pending(L, c, count);
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
  c->haspend = 0;
  if (!unpack_records(L, s, (size_t)count, 3, off))
    return luaL_error(L, "malformed packed numbers");
  return 1;
}

/* run_pending(c, fn, acc, from): acc[k] = fn(k-th pending record) for k
 * from `from` on (the accumulator was made for as many records).  The
 * records stay pending: after an error, the caller goes on from later. */
static int chan_run_pending(lua_State *L) {
  chan *c = checkchan(L);
  packacc *a = checkacc(L, 3);
  lua_Integer from = luaL_checkinteger(L, 4);
  const char *s = pending(L, c, (lua_Integer)a->n);
  return run_records(L, 2, s, a, 3, from);
}

/* get(c [, spin]) -> true, value | nil, fd (nothing complete yet)
 * | false, "EOF"|"SerializeError"|"OSError", msg [, errno]
 * With spin > 0 (seconds), keeps trying that long before giving up. */
static int chan_get(lua_State *L) {
  chan *c = checkchan(L);
  double spin = luaL_optnumber(L, 2, 0), t0 = 0;
  int64_t n;
  int r;
  c->haspend = 0;  /* the last results frame's records are given up now */
  if (c->inpos == c->inlen && c->inpos > 0) {
    c->inpos = c->inlen = 0;
    if (c->incap > KEEP_BUF) { free(c->in); c->in = NULL; c->incap = 0; }
  }
  while ((n = frame_ready(c)) < 0) {
    r = fill(c);
    if (r > 0) continue;
    if (r == -2) {
      if (c->inlen > c->inpos)
        return mproc_fail(L, "EOF", "channel closed in the middle of a message");
      return mproc_fail(L, "EOF", "peer closed the channel");
    }
    if (r < 0) {
      if (errno == ECONNRESET) return mproc_fail(L, "EOF", "peer closed the channel");
      return mproc_fail_errno(L, errno, "read");
    }
    if (spin > 0) {
      if (t0 == 0) t0 = mproc_now();
      else if (mproc_now() - t0 >= spin) spin = 0;
      if (spin > 0) { cpu_relax(); continue; }
    }
    lua_pushnil(L);
    lua_pushinteger(L, c->fd);
    return 2;
  }
  if (n > 0 && (c->in[c->inpos + 4] == PF_ITEMS || c->in[c->inpos + 4] == PF_RESULTS))
    return get_packed(L, c, (size_t)n);
  lua_pushboolean(L, 1);
  /* consumed before decoding: a decoder of a by-reference object may
   * raise, and the frame must not be seen again */
  c->inpos += 4 + (size_t)n;
  r = mproc_decode(L, c->in + c->inpos - (size_t)n, (size_t)n, 0);
  if (c->inpos == c->inlen) {
    c->inpos = c->inlen = 0;
    if (c->incap > KEEP_BUF) { free(c->in); c->in = NULL; c->incap = 0; }
  }
  if (!r) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "SerializeError");
    lua_rotate(L, -3, 2);
    return 3;
  }
  return 2;
}

/* buffered(c) -> true when a whole frame is already read and waiting */
static int chan_buffered(lua_State *L) {
  chan *c = checkchan(L);
  lua_pushboolean(L, frame_ready(c) >= 0);
  return 1;
}

static int chan_fileno(lua_State *L) {
  lua_pushinteger(L, checkchan(L)->fd);
  return 1;
}

static int chan_tostring(lua_State *L) {
  chan *c = (chan *)luaL_checkudata(L, 1, CHAN_T);
  if (c->fd < 0) lua_pushliteral(L, "mproc.Chan (closed)");
  else lua_pushfstring(L, "mproc.Chan (fd %d)", c->fd);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * Poller
 * ======================================================================= */

typedef struct poller {
  int fd;   /* epoll descriptor; -1 closed or not available */
  int open;
} poller;

static poller *checkpoller(lua_State *L) {
  poller *p = (poller *)luaL_checkudata(L, 1, POLLER_T);
  if (!p->open) luaL_error(L, "attempt to use a closed poller");
  return p;
}

static int poller_gc(lua_State *L) {
  poller *p = (poller *)luaL_checkudata(L, 1, POLLER_T);
  if (p->fd >= 0) close(p->fd);
  p->fd = -1;
  p->open = 0;
  return 0;
}

/* poller() -> true, p | false, "OSError", ... ; p:fileno() is nil where
 * there is no epoll (the pool then waits on its members one by one). */
static int l_poller(lua_State *L) {
  poller *p = (poller *)lua_newuserdatauv(L, sizeof *p, 0);
  p->fd = -1;
  p->open = 0;
  luaL_setmetatable(L, POLLER_T);
#ifdef __linux__
  p->fd = epoll_create1(EPOLL_CLOEXEC);
  if (p->fd < 0) return mproc_fail_errno(L, errno, "epoll_create1");
#endif
  p->open = 1;
  lua_pushboolean(L, 1);
  lua_rotate(L, -2, 1);
  return 2;
}

/* p:ctl(op, fd [, mode]) with op "add", "mod" or "del" -> true | false... */
static int poller_ctl(lua_State *L) {
  poller *p = checkpoller(L);
  static const char *const ops[] = {"add", "mod", "del", NULL};
  int op = luaL_checkoption(L, 2, NULL, ops);
  int fd = (int)luaL_checkinteger(L, 3);
  int ev = op == 2 ? 0 : mproc_checkmode(L, 4);
#ifdef __linux__
  {
    struct epoll_event e;
    static const int eops[] = {EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL};
    memset(&e, 0, sizeof e);
    e.events = ((ev & MPROC_WAIT_READ) ? EPOLLIN : 0) |
               ((ev & MPROC_WAIT_WRITE) ? EPOLLOUT : 0);
    e.data.fd = fd;
    if (epoll_ctl(p->fd, eops[op], fd, &e) < 0) {
      if (!(op == 2 && (errno == ENOENT || errno == EBADF)))
        return mproc_fail_errno(L, errno, "epoll_ctl");
    }
  }
#else
  (void)p; (void)op; (void)fd; (void)ev;
#endif
  lua_pushboolean(L, 1);
  return 1;
}

/* p:_ready(t) -> n: fills t[fd] = true for each member ready now (no
 * wait) and returns how many; -1 where there is no epoll (then every
 * member must be checked). */
static int poller_ready(lua_State *L) {
  poller *p = checkpoller(L);
  luaL_checktype(L, 2, LUA_TTABLE);
#ifdef __linux__
  {
    struct epoll_event ev[64];
    int i, n;
    do n = epoll_wait(p->fd, ev, 64, 0); while (n < 0 && errno == EINTR);
    if (n < 0) return luaL_error(L, "epoll_wait: %s", strerror(errno));
    for (i = 0; i < n; i++) {
      lua_pushboolean(L, 1);
      lua_rawseti(L, 2, ev[i].data.fd);
    }
    lua_pushinteger(L, n);
  }
#else
  (void)p;
  lua_pushinteger(L, -1);
#endif
  return 1;
}

static int poller_fileno(lua_State *L) {
  poller *p = checkpoller(L);
  if (p->fd < 0) lua_pushnil(L);
  else lua_pushinteger(L, p->fd);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * poll_many
 * ======================================================================= */

/* poll_many(fds, modes, n [, timeout]) -> ready (a list of booleans,
 * ready[i] for fds[i]; hang-up and errors count as ready), or false when
 * the timeout passed or a signal came (the caller re-checks). */
static int l_poll_many(lua_State *L) {
  lua_Integer i, n = luaL_checkinteger(L, 3);
  double timeout = luaL_optnumber(L, 4, -1);
  struct pollfd stack[16], *pf = stack;
  int ms, r;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_argcheck(L, n >= 0 && n <= INT_MAX / (int)sizeof *pf, 3, "out of range");
  if (n > 16) pf = (struct pollfd *)lua_newuserdatauv(L, (size_t)n * sizeof *pf, 0);
  for (i = 0; i < n; i++) {
    const char *m;
    lua_rawgeti(L, 1, i + 1);
    pf[i].fd = (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    lua_rawgeti(L, 2, i + 1);
    m = lua_tostring(L, -1);
    pf[i].events = 0;
    if (m != NULL) {
      if (strchr(m, 'r')) pf[i].events |= POLLIN;
      if (strchr(m, 'w')) pf[i].events |= POLLOUT;
    }
    lua_pop(L, 1);
    pf[i].revents = 0;
  }
  if (timeout < 0 || timeout > 2e6) ms = -1;
  else {
    double t = timeout * 1000.0;
    ms = (int)t;
    if ((double)ms < t) ms++;
  }
  r = poll(pf, (nfds_t)n, ms);
  if (r < 0 && errno != EINTR) return luaL_error(L, "poll: %s", strerror(errno));
  if (r <= 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_pushboolean(L, pf[i].revents != 0);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* }====================================================================== */


int mproc_open_pool(lua_State *L) {
  static const luaL_Reg chan_methods[] = {
    {"_put", chan_put},
    {"_put_raw", chan_put_raw},
    {"_put_numbers", chan_put_numbers},
    {"_take", chan_take},
    {"_run_pending", chan_run_pending},
    {"_flush", chan_flush},
    {"_get", chan_get},
    {"_pending", chan_pending},
    {"_buffered", chan_buffered},
    {"_fileno", chan_fileno},
    {"_close", chan_gc},
    {NULL, NULL}
  };
  static const luaL_Reg chan_meta[] = {
    {"__gc", chan_gc},
    {"__close", chan_gc},
    {"__tostring", chan_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg poller_methods[] = {
    {"_ctl", poller_ctl},
    {"_ready", poller_ready},
    {"_fileno", poller_fileno},
    {"_close", poller_gc},
    {NULL, NULL}
  };
  static const luaL_Reg poller_meta[] = {
    {"__gc", poller_gc},
    {"__close", poller_gc},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"chan_pair", l_chan_pair},
    {"pool_poller", l_poller},
    {"poll_many", l_poll_many},
    {"new_list", l_new_list},
    {"packed_acc", l_packed_acc},
    {"acc_pos", l_acc_pos},
    {"acc_result", l_acc_result},
    {NULL, NULL}
  };
  mproc_newclass(L, CHAN_T, chan_methods, chan_meta);
  mproc_newclass(L, POLLER_T, poller_methods, poller_meta);
  mproc_newclass(L, ACC_T, NULL, NULL);
  mproc_setfuncs(L, funcs);
  return 0;
}
