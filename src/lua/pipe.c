/*
 * src/lua/pipe.c: the binding of src/core/pipe.c, type "mproc.Conn" (one end of mp.Pipe).
 *
 * The C methods here never block: they do what the socket allows and
 * return `nil, ...` when the caller must wait for the descriptor; the
 * blocking methods (send, recv, poll...) are Lua functions in
 * lua/mproc/pipe.lua that wait through sched.wait_fd and call these again.
 * A half-written or half-read frame stays in the userdata, so a wait cut
 * short by an error (SIGINT) never corrupts the stream.
 *
 * User values of a Conn: 1 = what a pending send points into (a string or
 * the encode buffer), 2 = the reusable encode buffer (an mproc_bytes box).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "binding.h"
#include "../core/tracker.h"

#define LUA_CONN "mproc.Conn"
#define KEEP_WBUF (1024 * 1024)  /* encode buffers up to this are kept */

#define toconn(L) ((mproc_conn *)luaL_checkudata(L, 1, LUA_CONN))

/* Registry tables for passing ends through a pipe (SCM_RIGHTS): PASSING
 * lists the descriptors of the ends met while encoding the value being
 * sent (filled by __mproc_encode); RECEIVED those that came with the frame
 * being decoded (taken by pipe_attach, -1 once taken). */
#define PASSING "mproc.Conn.passing"
#define RECEIVED "mproc.Conn.received"

/* Sending ends through a queue or a pool (the broker, tracker.h): while
 * share_on, each end met while encoding is deposited with the broker and
 * its token kept, so that a message that is not sent after all can take
 * its deposits back.  Plain C state, not a registry table: every queue put
 * and pool submit passes here, with or without ends. */
typedef struct share_token { long pid; uint64_t seq; } share_token;
static int share_on;
static share_token *share_tokens;
static size_t share_n, share_cap;

/* {======================================================================
 * Helpers
 * ======================================================================= */

/* Raises msg with the position of the function `level` levels up: the
 * private methods (_send...) are called by the Lua wrappers of pipe.lua,
 * so their errors point at the wrapper's caller (level 2), as if the
 * wrapper were the C function. */
static int raise_at(lua_State *L, int level, const char *msg) {
  luaL_where(L, level);
  lua_pushstring(L, msg);
  lua_concat(L, 2);
  return lua_error(L);
}

static mproc_conn *checkconn(lua_State *L, int level) {
  mproc_conn *c = toconn(L);
  if (c->fd < 0) raise_at(L, level, "attempt to use a closed pipe");
  return c;
}

static mproc_conn *checkreadable(lua_State *L) {
  mproc_conn *c = checkconn(L, 2);
  if (!(c->flags & MPROC_CONN_READ)) raise_at(L, 2, "connection is write-only");
  return c;
}

static mproc_conn *checkwritable(lua_State *L) {
  mproc_conn *c = checkconn(L, 2);
  if (!(c->flags & MPROC_CONN_WRITE)) raise_at(L, 2, "connection is read-only");
  return c;
}

/* A new Conn, closed until a descriptor is given to it. */
static mproc_conn *newconn(lua_State *L) {
  mproc_conn *c = (mproc_conn *)lua_newuserdatauv(L, sizeof *c, 2);
  mproc_conn_init(c, -1, 0);
  luaL_setmetatable(L, LUA_CONN);
  return c;
}

/* Pushes registry table `name` (created on first use). */
static void fdlist(lua_State *L, const char *name) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, name) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, name);
  }
}

static void fdlist_clear(lua_State *L, int t) {
  lua_Integer i, n = (lua_Integer)lua_rawlen(L, t);
  for (i = n; i >= 1; i--) {
    lua_pushnil(L);
    lua_rawseti(L, t, i);
  }
}

/* A send step failed (the frame was dropped by src/core/pipe.c): errno says why. */
static int send_failed(lua_State *L) {
  int e = errno;
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);
  if (e == EPIPE || e == ECONNRESET)
    return mproc_fail(L, "Closed", "peer closed the pipe");
  return mproc_fail_errno(L, e, "send");
}

/* Result of a send step, the shape of both Conn bindings (net.c too):
 * true, true (sent) | true, false, fd (on its way: wait for fd, then
 * _flush) | false, kind, msg [, errno]. */
static int send_result(lua_State *L, mproc_conn *c, int r) {
  if (r == MPROC_CONN_DONE) {
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 1);  /* drop the anchor of the sent bytes */
    lua_pushboolean(L, 1);
    lua_pushboolean(L, 1);
    return 2;
  }
  if (r == MPROC_CONN_AGAIN) {
    lua_pushboolean(L, 1);
    lua_pushboolean(L, 0);
    lua_pushinteger(L, c->fd);
    return 3;
  }
  return send_failed(L);
}

/* Finishes a frame left pending by an earlier, interrupted send.  Returns
 * 0 when the way is clear, or the number of results to return. */
static int clear_pending(lua_State *L, mproc_conn *c) {
  int r;
  if (!c->wpending) return 0;
  r = mproc_conn_flush(c);
  if (r == MPROC_CONN_DONE) {
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 1);
    return 0;
  }
  if (r == MPROC_CONN_AGAIN) {  /* not our frame yet: wait, then retry */
    lua_pushboolean(L, 1);
    lua_pushboolean(L, 0);
    lua_pushinteger(L, c->fd);
    lua_pushboolean(L, 1);
    return 4;
  }
  return send_failed(L);
}

/* }====================================================================== */

/* {======================================================================
 * Methods
 * ======================================================================= */

static int conn_fileno(lua_State *L) {
  lua_pushinteger(L, checkconn(L, 1)->fd);
  return 1;
}

static int conn_close(lua_State *L) {
  mproc_conn *c = toconn(L);
  mproc_conn_close(c);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 2);
  return 0;
}

/* _send(c, v) -> true, true | true, false, fd [, retry] | false, kind,
 * msg [, errno].  retry: an older frame still blocked the way, v did not
 * go: wait for fd, then call again with v; without it v is on its way,
 * finish it with _flush. */
static int conn_send(lua_State *L) {
  mproc_conn *c = checkwritable(L);
  mproc_bytes *b;
  unsigned char hdr[MPROC_FRAME_HDRMAX];
  int fds[MPROC_CONN_MAXFDS], nfds, i, ok;
  size_t n, hl;
  int r;
  lua_settop(L, 2);
  if ((r = clear_pending(L, c)) != 0) return r;
  if (lua_getiuservalue(L, 1, 2) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    mproc_bytes_box(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 2);
  }
  b = (mproc_bytes *)lua_touserdata(L, 3);
  fdlist(L, PASSING);  /* 4: collects the ends met while encoding */
  fdlist_clear(L, 4);
  lua_pushboolean(L, 1);
  lua_setfield(L, 4, "on");
  b->len = 0;
  mproc_reserve(L, b, MPROC_FRAME_HDRMAX);
  b->len = MPROC_FRAME_HDRMAX;  /* room for the header, filled below */
  ok = mproc_encode(L, 2, "value", b);
  lua_pushnil(L);
  lua_setfield(L, 4, "on");
  nfds = (int)lua_rawlen(L, 4);
  for (i = 0; i < nfds; i++) {
    lua_rawgeti(L, 4, i + 1);
    fds[i] = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  if (nfds) fdlist_clear(L, 4);
  if (!ok) {
    b->len = 0;
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "SerializeError");
    lua_rotate(L, -3, 2);  /* false, kind, message */
    return 3;
  }
  lua_pop(L, 1);
  n = b->len - MPROC_FRAME_HDRMAX;
  hl = mproc_frame_header(hdr, n);
  memcpy(b->data + MPROC_FRAME_HDRMAX - hl, hdr, hl);
  lua_setiuservalue(L, 1, 1);  /* anchor: the buffer */
  r = mproc_conn_send_fds(c, b->data + MPROC_FRAME_HDRMAX, n, hl, fds, nfds);
  if (r == MPROC_CONN_DONE && b->cap > KEEP_WBUF) mproc_bytes_free(b);
  return send_result(L, c, r);
}

/* _send_bytes(c, s, offset, size): offset/size checked by the caller. */
static int conn_send_bytes(lua_State *L) {
  mproc_conn *c = checkwritable(L);
  size_t len, off, size;
  const char *s = luaL_checklstring(L, 2, &len);
  int r;
  off = (size_t)luaL_optinteger(L, 3, 0);
  size = lua_isnoneornil(L, 4) ? len - off : (size_t)luaL_checkinteger(L, 4);
  luaL_argcheck(L, off <= len && size <= len - off, 3, "out of range");
  if ((r = clear_pending(L, c)) != 0) return r;
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, 1);  /* anchor: the string */
  return send_result(L, c, mproc_conn_send(c, s + off, size, 0));
}

/* _flush(c) -> true, true | true, false, fd | false, kind, msg [, errno] */
static int conn_flush(lua_State *L) {
  mproc_conn *c = checkwritable(L);
  int r = mproc_conn_flush(c);
  if (r == MPROC_CONN_DONE) {
    lua_getiuservalue(L, 1, 2);
    if (lua_type(L, -1) == LUA_TUSERDATA) {
      mproc_bytes *b = (mproc_bytes *)lua_touserdata(L, -1);
      if (b->cap > KEEP_WBUF) mproc_bytes_free(b);
    }
    lua_pop(L, 1);
  }
  return send_result(L, c, r);
}

/* _recv(c, raw [, maxlen]) -> true, true, value | true, false, fd
 * (nothing yet) | false, kind, msg [, errno] */
static int conn_recv(lua_State *L) {
  mproc_conn *c = checkreadable(L);
  int raw = lua_toboolean(L, 2);
  uint64_t maxlen = UINT64_MAX;
  const char *p;
  size_t n;
  int r;
  if (!lua_isnoneornil(L, 3)) maxlen = (uint64_t)luaL_checkinteger(L, 3);
  r = mproc_conn_recv(c, maxlen, &p, &n);
  switch (r) {
    case MPROC_CONN_DONE: {
      int fds[MPROC_CONN_MAXFDS], nfds = mproc_conn_take_fds(c, fds), i, ok = 1;
      lua_settop(L, 3);
      if (nfds > 0) {  /* ends passed along: for pipe_attach while decoding */
        fdlist(L, RECEIVED);
        fdlist_clear(L, 4);
        for (i = 0; i < nfds; i++) {
          lua_pushinteger(L, raw ? -1 : fds[i]);
          lua_rawseti(L, 4, i + 1);
          if (raw) close(fds[i]);
        }
      }
      lua_pushboolean(L, 1);
      lua_pushboolean(L, 1);
      if (raw) lua_pushlstring(L, p, n);
      else ok = mproc_decode(L, p, n, 0);
      mproc_conn_recv_done(c);
      if (nfds > 0) {  /* close what the decoding did not adopt */
        for (i = 1; i <= nfds; i++) {
          lua_rawgeti(L, 4, i);
          if (lua_tointeger(L, -1) >= 0) close((int)lua_tointeger(L, -1));
          lua_pop(L, 1);
        }
        fdlist_clear(L, 4);
      }
      if (!ok) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "SerializeError");
        lua_rotate(L, -3, 2);
        return 3;
      }
      return 3;
    }
    case MPROC_CONN_AGAIN:
      lua_pushboolean(L, 1);
      lua_pushboolean(L, 0);
      lua_pushinteger(L, c->fd);
      return 3;
    case MPROC_CONN_EOF:
      return mproc_fail(L, "EOF", "peer closed the pipe");
    case MPROC_CONN_EOF_MID:
      return mproc_fail(L, "EOF", "connection closed in the middle of a message");
    case MPROC_CONN_TOOLONG: {
      uint64_t len = c->rlen;
      mproc_conn_close(c);  /* the rest of the stream cannot be trusted */
      return mproc_fail(L, "OSError",
                        "bad message length: %I bytes, more than maxlen %I "
                        "(the pipe was closed)",
                        (LUAI_UACINT)len, (LUAI_UACINT)maxlen);
    }
    default: {
      int e = errno;
      if (e == ENOMEM) {
        uint64_t len = c->rlen;
        mproc_conn_close(c);
        return mproc_fail(L, "OSError",
                          "cannot receive a message of %I bytes: out of memory "
                          "(the pipe was closed)", (LUAI_UACINT)len);
      }
      return mproc_fail_errno(L, e, "recv");
    }
  }
}

/* _pollfd(c) -> fd of a readable connection (for poll) */
static int conn_pollfd(lua_State *L) {
  lua_pushinteger(L, checkreadable(L)->fd);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * Metamethods
 * ======================================================================= */

static int conn_gc(lua_State *L) {
  mproc_conn *c = (mproc_conn *)luaL_testudata(L, 1, LUA_CONN);
  if (c) mproc_conn_close(c);
  return 0;
}

/* Fields first look in the methods (upvalue 1), then the properties. */
static int conn_index(lua_State *L) {
  mproc_conn *c = toconn(L);
  const char *k;
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  k = lua_tostring(L, 2);
  if (k == NULL || lua_type(L, 2) != LUA_TSTRING) return 1;
  if (strcmp(k, "closed") == 0) lua_pushboolean(L, c->fd < 0);
  else if (strcmp(k, "readable") == 0) lua_pushboolean(L, c->flags & MPROC_CONN_READ);
  else if (strcmp(k, "writable") == 0) lua_pushboolean(L, c->flags & MPROC_CONN_WRITE);
  else lua_pushnil(L);
  return 1;
}

static int conn_tostring(lua_State *L) {
  mproc_conn *c = toconn(L);
  if (c->fd < 0) lua_pushliteral(L, "mproc.Conn (closed)");
  else lua_pushfstring(L, "mproc.Conn (fd %d)", c->fd);
  return 1;
}

/* The codec's by-reference hook: "Pipe",
 * "<pid>:<fd>:<flags>:<index>:<dev>:<ino>:<broker>:<seq>".  index is the
 * end's place among the descriptors that travel with the frame when the
 * value is being sent through a pipe (0 otherwise); dev:ino name the
 * socket, so that a receiver that inherited it can tell; broker:seq the
 * deposit made when the value goes through a queue or a pool (0:0: none). */
static int conn_encode(lua_State *L) {
  mproc_conn *c = checkconn(L, 1);
  lua_Integer n = 0;
  long broker = 0;
  uint64_t seq = 0;
  struct stat st;
  char h[160];
  if (fstat(c->fd, &st) != 0) return luaL_error(L, "fstat: %s", strerror(errno));
  fdlist(L, PASSING);
  if (lua_getfield(L, -1, "on") == LUA_TBOOLEAN) {  /* inside _send */
    n = (lua_Integer)lua_rawlen(L, -2) + 1;
    if (n > MPROC_CONN_MAXFDS)
      return luaL_error(L, "more than %d pipe ends in one message", MPROC_CONN_MAXFDS);
    lua_pushinteger(L, c->fd);
    lua_rawseti(L, -3, n);
  } else if (share_on) {   /* a queue or a pool */
    if (share_n == share_cap) {
      size_t ncap = share_cap ? share_cap * 2 : 8;
      share_token *t = (share_token *)realloc(share_tokens, ncap * sizeof *t);
      if (t == NULL) return luaL_error(L, "not enough memory");
      share_tokens = t;
      share_cap = ncap;
    }
    if (mproc_broker_deposit(c->fd, &broker, &seq) != 0) {
      int e = errno;
      if (e == ENOTSUP)
        return luaL_error(L, "a Pipe end can only go through a pipe or to a child "
                          "on this platform (no SOCK_SEQPACKET to pass it along)");
      return luaL_error(L, "cannot hand the Pipe end to the descriptor broker: %s",
                        strerror(e));
    }
    share_tokens[share_n].pid = (long)getpid();
    share_tokens[share_n].seq = seq;
    share_n++;
  }
  snprintf(h, sizeof h, "%d:%d:%d:%lld:%llu:%llu:%ld:%llu", (int)getpid(), c->fd,
           c->flags, (long long)n, (unsigned long long)st.st_dev,
           (unsigned long long)st.st_ino, broker, (unsigned long long)seq);
  lua_pushliteral(L, "Pipe");
  lua_pushstring(L, h);
  return 2;
}

void mproc_conn_share_begin(lua_State *L) {
  (void)L;
  share_on = 1;
  share_n = 0;
}

void mproc_conn_share_end(lua_State *L, int sent) {
  size_t i;
  (void)L;
  share_on = 0;
  for (i = 0; i < share_n && !sent; i++)  /* never sent: take them back */
    mproc_broker_drop(share_tokens[i].pid, share_tokens[i].seq);
  share_n = 0;
}

/* }====================================================================== */

/* pipe(duplex) -> true, a, b | false, "OSError", msg, errno */
static int l_pipe(lua_State *L) {
  int duplex = lua_toboolean(L, 1), fds[2];
  mproc_conn *a, *b;
  lua_settop(L, 0);
  a = newconn(L);
  b = newconn(L);
  if (mproc_conn_pair(fds, duplex) < 0) return mproc_fail_errno(L, errno, "socketpair");
  mproc_conn_init(a, fds[0], duplex ? MPROC_CONN_READ | MPROC_CONN_WRITE : MPROC_CONN_READ);
  mproc_conn_init(b, fds[1], duplex ? MPROC_CONN_READ | MPROC_CONN_WRITE : MPROC_CONN_WRITE);
  lua_pushboolean(L, 1);
  lua_rotate(L, -3, 1);
  return 3;
}

static mproc_conn *push_end(lua_State *L, int fd, int flags) {
  mproc_conn *c = newconn(L);
  mproc_conn_init(c, fd, flags & (MPROC_CONN_READ | MPROC_CONN_WRITE));
  return c;
}

/* pipe_attach(handle [, abandon]) -> a new end for a handle of
 * conn_encode | nil, why.  In order: a descriptor that came with the
 * frame being decoded (a pipe), the very socket at the same number here
 * (inherited: a dup), the broker's deposit.  abandon (a test hook): claim
 * and leave without the answer. */
static int l_conn_attach(lua_State *L) {
  const char *h = luaL_checkstring(L, 1);
  int abandon = lua_toboolean(L, 2);
  long pid, broker;
  int fd, flags, got;
  long long index;
  unsigned long long dev, ino, seq;
  struct stat st;
  if (sscanf(h, "%ld:%d:%d:%lld:%llu:%llu:%ld:%llu", &pid, &fd, &flags, &index,
             &dev, &ino, &broker, &seq) != 8) {
    lua_pushnil(L);
    lua_pushliteral(L, "malformed handle");
    return 2;
  }
  if (index > 0) {   /* it travelled with the frame (SCM_RIGHTS) */
    fdlist(L, RECEIVED);
    lua_rawgeti(L, -1, (lua_Integer)index);
    got = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : -1;
    lua_pop(L, 1);
    if (got >= 0) {
      push_end(L, got, flags);
      lua_pushinteger(L, -1);
      lua_rawseti(L, -3, (lua_Integer)index);  /* taken */
      return 1;
    }
    lua_pushnil(L);
    lua_pushliteral(L, "its descriptor did not come with the message");
    return 2;
  }
  if (fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
      (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino) {
    int d;
    lua_settop(L, 2);
    newconn(L);   /* before the dup: a memory error must not leak it */
    d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) {
      lua_pushnil(L);
      lua_pushfstring(L, "cannot duplicate the inherited descriptor: %s", strerror(errno));
      return 2;
    }
    mproc_conn_init((mproc_conn *)lua_touserdata(L, 3), d,
                    flags & (MPROC_CONN_READ | MPROC_CONN_WRITE));
    if (seq > 0) mproc_broker_drop(pid, (uint64_t)seq);  /* not needed */
    return 1;
  }
  if (seq == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "a Pipe end can only be received by a process that inherited it,"
                       " through a pipe, a queue or a pool");
    return 2;
  }
  if (mproc_tracker_pid() != broker) {
    lua_pushnil(L);
    lua_pushfstring(L, "this process cannot reach the descriptor broker (pid %I) that "
                    "holds it: only processes started from the sender's process tree "
                    "(fork) share it", (LUAI_UACINT)broker);
    return 2;
  }
  lua_settop(L, 2);
  newconn(L);
  got = mproc_broker_claim(pid, (uint64_t)seq, &fd, abandon);
  if (got == 1) {
    mproc_conn_init((mproc_conn *)lua_touserdata(L, 3), fd,
                    flags & (MPROC_CONN_READ | MPROC_CONN_WRITE));
    return 1;
  }
  lua_pushnil(L);
  if (got == 0 && abandon) lua_pushliteral(L, "abandoned");
  else if (got == 0)
    lua_pushliteral(L, "the descriptor broker no longer holds it: a Pipe end sent through a "
                       "queue or a pool is received once, and is closed a few seconds after "
                       "its sender ended");
  else
    lua_pushfstring(L, "cannot ask the descriptor broker: %s", strerror(errno));
  return 2;
}

/* pipe_deposit(c) -> handle: the handle a queue or a pool would send (a
 * test hook: the deposit waits for its claim). */
static int l_conn_deposit(lua_State *L) {
  checkconn(L, 1);
  lua_settop(L, 1);
  mproc_conn_share_begin(L);
  lua_pushcfunction(L, conn_encode);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 2);
  mproc_conn_share_end(L, 1);
  return 1;
}

/* pipe_collect(true): the Pipe ends met by the encodes until
 * pipe_collect(false) are listed (their index in the list goes into
 * their handle), as inside _send; pipe_collect(false) -> that list of
 * descriptors.  The spawn start method passes them to the new process. */
static int l_conn_collect(lua_State *L) {
  int on = lua_toboolean(L, 1);
  lua_Integer i, n;
  fdlist(L, PASSING);
  if (on) {
    fdlist_clear(L, 2);
    lua_pushboolean(L, 1);
    lua_setfield(L, 2, "on");
    return 0;
  }
  lua_pushnil(L);
  lua_setfield(L, 2, "on");
  n = (lua_Integer)lua_rawlen(L, 2);
  lua_createtable(L, (int)n, 0);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    lua_rawseti(L, -2, i);
  }
  fdlist_clear(L, 2);
  return 1;
}

/* pipe_received(fds): the descriptors that came with the payload of a
 * spawned process, for pipe_attach while it is decoded. */
static int l_conn_received(lua_State *L) {
  lua_Integer i, n;
  luaL_checktype(L, 1, LUA_TTABLE);
  fdlist(L, RECEIVED);
  fdlist_clear(L, 2);
  n = (lua_Integer)lua_rawlen(L, 1);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    mproc_set_cloexec((int)lua_tointeger(L, -1), 1);
    lua_rawseti(L, 2, i);
  }
  return 0;
}

/* pipe_share(true): until pipe_share(false, sent), the Pipe ends that
 * the codec meets are deposited with the descriptor broker (as in a queue
 * put); with sent false the deposits are taken back.  For messages to a
 * manager, whose server or clients did not inherit the ends. */
static int l_conn_share(lua_State *L) {
  if (lua_toboolean(L, 1)) mproc_conn_share_begin(L);
  else mproc_conn_share_end(L, lua_toboolean(L, 2));
  return 0;
}

/* pipe_drop(handle): a receiver that knew the end already tells the
 * broker to close the deposit made for it. */
static int l_conn_drop(lua_State *L) {
  const char *h = luaL_checkstring(L, 1);
  long pid, broker;
  int fd, flags;
  long long index;
  unsigned long long dev, ino, seq;
  if (sscanf(h, "%ld:%d:%d:%lld:%llu:%llu:%ld:%llu", &pid, &fd, &flags, &index,
             &dev, &ino, &broker, &seq) == 8 && seq > 0 && mproc_tracker_pid() == broker)
    mproc_broker_drop(pid, (uint64_t)seq);
  return 0;
}

int mproc_open_conn(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"fileno", conn_fileno},
    {"close", conn_close},
    {"_send", conn_send},
    {"_send_bytes", conn_send_bytes},
    {"_flush", conn_flush},
    {"_recv", conn_recv},
    {"_pollfd", conn_pollfd},
    {NULL, NULL}
  };
  static const luaL_Reg metamethods[] = {
    {"__gc", conn_gc},
    {"__close", conn_gc},
    {"__tostring", conn_tostring},
    {"__mproc_encode", conn_encode},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"pipe_new", l_pipe},
    {"pipe_attach", l_conn_attach},
    {"pipe_drop", l_conn_drop},
    {"pipe_share", l_conn_share},
    {"pipe_deposit", l_conn_deposit},
    {"pipe_collect", l_conn_collect},
    {"pipe_received", l_conn_received},
    {NULL, NULL}
  };
  mproc_indexed_class(L, LUA_CONN, methods, metamethods, conn_index, NULL);
  lua_pop(L, 1);
  mproc_setfuncs(L, funcs);
  return 0;
}
