/*
 * src/lua/redis.c: mproc.redis, a small hiredis binding for the cluster pool
 * (lua/mproc/cluster.lua).  It is its own module so that mproc.core does
 * not link hiredis: without it only mp.cluster is unavailable.
 *
 * Type "mproc.redis.Conn": one blocking hiredis context with a timeout.
 * Runtime failures follow the core's convention: `false, kind, message`
 * where kind is "OSError" (connection lost, timeout: the context is then
 * broken and must be replaced) or "reply" (Redis answered an error).
 * Replies become Lua values: strings and status lines as strings,
 * integers as integers, nil as false, arrays as tables with n, an error
 * inside an array as a table {err = message}.
 *
 * Pipelining: c:append(argv) queues a command, c:reply() waits for the
 * next reply, c:try_reply() takes one only when it is already readable
 * (the caller waits for c:fileno() in its own poll loop).
 *
 * Also here: catch_signals() / signalled() for `mproc worker`, which must
 * end cleanly on SIGTERM and SIGINT.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "compat.h"   /* lua.h and lauxlib.h, whatever the VM */

#define LUA_REDISCONN "mproc.redis.Conn"
#define MAX_DEPTH 16

typedef struct {
  redisContext *ctx;
  char addr[128];  /* for messages: "unix:/path" or "host:port" */
} rconn;

static int fail(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  lua_pushboolean(L, 0);
  lua_pushstring(L, kind);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return 3;
}

static struct timeval to_tv(double s) {
  struct timeval tv;
  if (s < 0) s = 0;
  if (s > 1e6) s = 1e6;
  tv.tv_sec = (time_t)s;
  tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
  return tv;
}

static rconn *check_conn(lua_State *L) {
  rconn *c = (rconn *)luaL_checkudata(L, 1, LUA_REDISCONN);
  if (c->ctx == NULL) luaL_error(L, "attempt to use a closed redis connection");
  return c;
}

/* The context failed: report and free it (hiredis contexts do not recover). */
static int fail_ctx(lua_State *L, rconn *c, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s", c->ctx->errstr[0] ? c->ctx->errstr : "connection lost");
  if (c->ctx->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
    snprintf(msg, sizeof msg, "timed out");
  redisFree(c->ctx);
  c->ctx = NULL;
  return fail(L, "OSError", "redis %s: %s: %s", c->addr, what, msg);
}

/* {======================================================================
 * Replies
 * ======================================================================= */

static void push_reply(lua_State *L, const redisReply *r, int depth) {
  size_t i;
  luaL_checkstack(L, 4, "redis reply too deep");
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
    lua_pushlstring(L, r->str, r->len);
    break;
  case REDIS_REPLY_INTEGER:
    lua_pushinteger(L, (lua_Integer)r->integer);
    break;
  case REDIS_REPLY_ARRAY:
    lua_createtable(L, r->elements > 1000000 ? 0 : (int)r->elements, 1);
    for (i = 0; i < r->elements; i++) {
      if (depth >= MAX_DEPTH) lua_pushboolean(L, 0);
      else push_reply(L, r->element[i], depth + 1);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushinteger(L, (lua_Integer)r->elements);
    lua_setfield(L, -2, "n");
    break;
  case REDIS_REPLY_ERROR:
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, r->str, r->len);
    lua_setfield(L, -2, "err");
    break;
  default:  /* REDIS_REPLY_NIL */
    lua_pushboolean(L, 0);
    break;
  }
}

/* Pushes `true, value` or `false, "reply", message`; frees the reply. */
static int push_result(lua_State *L, redisReply *r) {
  if (r->type == REDIS_REPLY_ERROR) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "reply");
    lua_pushlstring(L, r->str, r->len);
    freeReplyObject(r);
    return 3;
  }
  lua_pushboolean(L, 1);
  push_reply(L, r, 0);
  freeReplyObject(r);
  return 2;
}

/* }====================================================================== */

/* {======================================================================
 * Commands
 * ======================================================================= */

/* A write to a connection the server closed must not end the process
 * with SIGPIPE: the signal is blocked around each call that writes, and
 * one it raised is taken back before unblocking. */
typedef struct { sigset_t old; int was_pending; } pipeguard;

static void guard_on(pipeguard *g) {
  sigset_t set, pend;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  sigemptyset(&pend);
  sigpending(&pend);
  g->was_pending = sigismember(&pend, SIGPIPE);
  sigprocmask(SIG_BLOCK, &set, &g->old);
}

static void guard_off(pipeguard *g) {
  if (!g->was_pending) {
    sigset_t set, pend;
    struct timespec zero = {0, 0};
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pend);
    sigpending(&pend);
    if (sigismember(&pend, SIGPIPE))
      while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {}
  }
  sigprocmask(SIG_SETMASK, &g->old, NULL);
}

/* Appends the command in the table at `idx` (strings and numbers). */
static int append_argv(lua_State *L, rconn *c, int idx) {
  lua_Integer n, i;
  const char **argv;
  size_t *lens;
  int rc;
  luaL_checktype(L, idx, LUA_TTABLE);
  n = luaL_len(L, idx);
  luaL_argcheck(L, n >= 1 && n <= 1000000, idx, "command must have 1 to 1000000 words");
  argv = (const char **)lua_newuserdatauv(L, (size_t)n * sizeof *argv, 0);
  lens = (size_t *)lua_newuserdatauv(L, (size_t)n * sizeof *lens, 0);
  lua_createtable(L, (int)n, 0);  /* keeps converted numbers alive */
  for (i = 1; i <= n; i++) {
    int t = lua_geti(L, idx, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      return luaL_error(L, "bad command word #%d (string or number expected, got %s)",
                        (int)i, luaL_typename(L, -1));
    argv[i - 1] = lua_tolstring(L, -1, &lens[i - 1]);
    lua_rawseti(L, -2, i);
  }
  rc = redisAppendCommandArgv(c->ctx, (int)n, argv, lens);
  lua_pop(L, 3);
  return rc;
}

/* One reply (waits up to the timeout); 0 when there is none. */
static int get_reply(rconn *c, void **r) {
  pipeguard g;
  int ok;
  *r = NULL;
  guard_on(&g);
  ok = redisGetReply(c->ctx, r) == REDIS_OK && *r != NULL;
  guard_off(&g);
  return ok;
}

/* c:command(argv) -> true, reply | false, kind, message */
static int c_command(lua_State *L) {
  rconn *c = check_conn(L);
  void *r;
  if (append_argv(L, c, 2) != REDIS_OK) return fail_ctx(L, c, "command failed");
  if (!get_reply(c, &r)) return fail_ctx(L, c, "command failed");
  return push_result(L, (redisReply *)r);
}

/* c:pipeline({argv, argv...}) -> true, {reply...} | false, "OSError", msg.
 * Error replies are {err = message} in the list. */
static int c_pipeline(lua_State *L) {
  rconn *c = check_conn(L);
  lua_Integer n, i;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = luaL_len(L, 2);
  for (i = 1; i <= n; i++) {
    lua_geti(L, 2, i);
    if (append_argv(L, c, lua_gettop(L)) != REDIS_OK) return fail_ctx(L, c, "command failed");
    lua_pop(L, 1);
  }
  lua_createtable(L, (int)n, 1);
  for (i = 1; i <= n; i++) {
    void *r;
    if (!get_reply(c, &r)) return fail_ctx(L, c, "command failed");
    push_reply(L, (redisReply *)r, 0);
    freeReplyObject(r);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

/* c:append(argv) -> true | false, "OSError", msg: queued, and written out. */
static int c_append(lua_State *L) {
  rconn *c = check_conn(L);
  int done = 0, ok = 1;
  pipeguard g;
  if (append_argv(L, c, 2) != REDIS_OK) return fail_ctx(L, c, "command failed");
  guard_on(&g);
  while (!done && ok) ok = redisBufferWrite(c->ctx, &done) == REDIS_OK;
  guard_off(&g);
  if (!ok) return fail_ctx(L, c, "write failed");
  lua_pushboolean(L, 1);
  return 1;
}

/* c:reply() -> true, reply | false, kind, msg (waits up to the timeout). */
static int c_reply(lua_State *L) {
  rconn *c = check_conn(L);
  void *r;
  if (!get_reply(c, &r)) return fail_ctx(L, c, "reply failed");
  return push_result(L, (redisReply *)r);
}

/* c:try_reply() -> true, got, reply | false, kind, msg.  Never blocks:
 * reads only what the socket holds already. */
static int c_try_reply(lua_State *L) {
  rconn *c = check_conn(L);
  void *r = NULL;
  struct pollfd p;
  int n;
  if (redisGetReplyFromReader(c->ctx, &r) != REDIS_OK) return fail_ctx(L, c, "bad reply");
  if (r == NULL) {
    p.fd = c->ctx->fd;
    p.events = POLLIN;
    p.revents = 0;
    do n = poll(&p, 1, 0); while (n < 0 && errno == EINTR);
    if (n > 0) {
      if (redisBufferRead(c->ctx) != REDIS_OK) return fail_ctx(L, c, "read failed");
      if (redisGetReplyFromReader(c->ctx, &r) != REDIS_OK) return fail_ctx(L, c, "bad reply");
    }
  }
  if (r == NULL) {
    lua_pushboolean(L, 1);
    lua_pushboolean(L, 0);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_pushboolean(L, 1);
  if (((redisReply *)r)->type == REDIS_REPLY_ERROR) {
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, ((redisReply *)r)->str, ((redisReply *)r)->len);
    lua_setfield(L, -2, "err");
  } else {
    push_reply(L, (redisReply *)r, 0);
  }
  freeReplyObject(r);
  return 3;
}

static int c_fileno(lua_State *L) {
  rconn *c = check_conn(L);
  lua_pushinteger(L, c->ctx->fd);
  return 1;
}

static int c_set_timeout(lua_State *L) {
  rconn *c = check_conn(L);
  if (redisSetTimeout(c->ctx, to_tv(luaL_checknumber(L, 2))) != REDIS_OK)
    return fail_ctx(L, c, "cannot set the timeout");
  lua_pushboolean(L, 1);
  return 1;
}

static int c_closed(lua_State *L) {
  rconn *c = (rconn *)luaL_checkudata(L, 1, LUA_REDISCONN);
  lua_pushboolean(L, c->ctx == NULL);
  return 1;
}

static int c_gc(lua_State *L) {
  rconn *c = (rconn *)luaL_checkudata(L, 1, LUA_REDISCONN);
  if (c->ctx) redisFree(c->ctx);
  c->ctx = NULL;
  return 0;
}

/* connect(host_or_path, port_or_nil, timeout) -> true, conn | false, "OSError", msg.
 * port nil: host is the path of a Unix socket. */
static int l_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_optinteger(L, 2, -1);
  struct timeval tv = to_tv(luaL_optnumber(L, 3, 5.0));
  rconn *c = (rconn *)lua_newuserdatauv(L, sizeof *c, 0);
  c->ctx = NULL;
  luaL_setmetatable(L, LUA_REDISCONN);
  if (port < 0) snprintf(c->addr, sizeof c->addr, "unix:%s", host);
  else snprintf(c->addr, sizeof c->addr, "%s:%d", host, port);
  c->ctx = port < 0 ? redisConnectUnixWithTimeout(host, tv)
                    : redisConnectWithTimeout(host, port, tv);
  if (c->ctx == NULL) return fail(L, "OSError", "redis %s: cannot connect: out of memory", c->addr);
  if (c->ctx->err) {
    int r = fail(L, "OSError", "redis %s: cannot connect: %s", c->addr, c->ctx->errstr);
    redisFree(c->ctx);
    c->ctx = NULL;
    return r;
  }
  if (redisSetTimeout(c->ctx, tv) != REDIS_OK) return fail_ctx(L, c, "cannot set the timeout");
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

/* }====================================================================== */

/* {======================================================================
 * Signals (mproc worker)
 * ======================================================================= */

static volatile sig_atomic_t got_signal = 0;

static void on_signal(int sig) { got_signal = sig; }

/* catch_signals(): SIGTERM and SIGINT set a flag instead of ending the
 * process; blocking calls are interrupted (no SA_RESTART). */
static int l_catch_signals(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
    return luaL_error(L, "sigaction failed: %s", strerror(errno));
  return 0;
}

/* signalled() -> the number of the signal caught, or nil. */
static int l_signalled(lua_State *L) {
  if (got_signal) lua_pushinteger(L, got_signal);
  else lua_pushnil(L);
  return 1;
}

/* }====================================================================== */

int luaopen_mproc_redis(lua_State *L);

int luaopen_mproc_redis(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"command", c_command},
    {"pipeline", c_pipeline},
    {"append", c_append},
    {"reply", c_reply},
    {"try_reply", c_try_reply},
    {"fileno", c_fileno},
    {"set_timeout", c_set_timeout},
    {"closed", c_closed},
    {"close", c_gc},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", c_gc},
    {"__close", c_gc},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"connect", l_connect},
    {"catch_signals", l_catch_signals},
    {"signalled", l_signalled},
    {NULL, NULL}
  };
  luaL_newmetatable(L, LUA_REDISCONN);
  luaL_setfuncs(L, meta, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
