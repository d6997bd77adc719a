/*
 * src/lua/mproc.c: luaopen_mproc_core, the helpers every binding shares, and the
 * bindings of src/core/poll.c (time, waits for one descriptor or many, sleep).
 */
#define _GNU_SOURCE  /* dladdr */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"

/* {======================================================================
 * Shared helpers
 * ======================================================================= */

int mproc_fail(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  lua_pushboolean(L, 0);
  lua_pushstring(L, kind);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return 3;
}

int mproc_fail_errno(lua_State *L, int err, const char *what) {
  lua_pushboolean(L, 0);
  lua_pushliteral(L, "OSError");
  lua_pushfstring(L, "%s: %s", what, strerror(err));
  lua_pushinteger(L, err);
  return 4;
}

void mproc_setfuncs(lua_State *L, const luaL_Reg *l) {
  luaL_setfuncs(L, l, 0);
}

void mproc_newclass(lua_State *L, const char *tname,
                    const luaL_Reg *methods, const luaL_Reg *metamethods) {
  luaL_newmetatable(L, tname);
  if (metamethods) luaL_setfuncs(L, metamethods, 0);
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

void mproc_indexed_class(lua_State *L, const char *tname, const luaL_Reg *methods,
                         const luaL_Reg *meta, lua_CFunction index, const char *field) {
  luaL_newmetatable(L, tname);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__methods");
  if (field != NULL) lua_pushstring(L, field);
  lua_pushcclosure(L, index, field != NULL ? 2 : 1);
  lua_setfield(L, -2, "__index");
}

void mproc_reserve(lua_State *L, mproc_bytes *b, size_t extra) {
  if (b->cap - b->len >= extra) return;
  if (extra > ((size_t)-1) / 2 - b->len || mproc_bytes_reserve(b, b->len + extra) < 0)
    luaL_error(L, "not enough memory");
}

static int buf_gc(lua_State *L) {
  mproc_bytes_free((mproc_bytes *)luaL_checkudata(L, 1, "mproc.buf"));
  return 0;
}

mproc_bytes *mproc_bytes_box(lua_State *L) {
  mproc_bytes *b = (mproc_bytes *)lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, "mproc.buf")) {
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

/* }====================================================================== */

/* {======================================================================
 * src/core/poll.c bindings
 * ======================================================================= */

int mproc_checkmode(lua_State *L, int arg) {
  const char *m = luaL_checkstring(L, arg);
  int ev = 0;
  for (; *m; m++) {
    if (*m == 'r') ev |= MPROC_WAIT_READ;
    else if (*m == 'w') ev |= MPROC_WAIT_WRITE;
    else luaL_argerror(L, arg, "mode must be \"r\", \"w\" or \"rw\"");
  }
  return ev;
}

/* poll_fd(fd, mode [, timeout]) -> true ready | false timeout/interrupted */
static int l_poll_fd(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  int ev = mproc_checkmode(L, 2);
  double t = luaL_optnumber(L, 3, -1);
  int r = mproc_wait_fd(fd, ev, t);
  if (r < 0) return luaL_error(L, "cannot wait for descriptor %d: %s", fd,
                               strerror(errno));
  lua_pushboolean(L, r);
  return 1;
}

/* poll_many(fds, modes, n [, timeout]) -> ready (a list of booleans,
 * ready[i] for fds[i]; hang-up and errors count as ready), or false when
 * the timeout passed or a signal came (the caller re-checks).  The
 * scheduler's wait for many descriptors at once. */
static int l_poll_many(lua_State *L) {
  lua_Integer i, n = luaL_checkinteger(L, 3);
  double timeout = luaL_optnumber(L, 4, -1);
  struct pollfd stack[16], *pf = stack;
  int r;
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
  r = mproc_wait_many(pf, (size_t)n, timeout);
  if (r < 0) return luaL_error(L, "poll: %s", strerror(errno));
  if (r == 0) {
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

static int l_now(lua_State *L) {
  lua_pushnumber(L, mproc_now());
  return 1;
}

/* sleep(seconds) -> true when it slept the whole time, false on EINTR */
static int l_sleep(lua_State *L) {
  lua_pushboolean(L, mproc_sleep(luaL_checknumber(L, 1)));
  return 1;
}

/* Inserts obj's Lua method and obj below the nargs values on the top:
 * method, obj, args...  Returns the stack index of the method. */
static int push_method(lua_State *L, int obj, const char *method, int nargs) {
  int base;
  obj = lua_absindex(L, obj);
  base = lua_gettop(L) - nargs;
  if (!lua_getmetatable(L, obj)) return luaL_error(L, "no class for %s", method);
  if (lua_getfield(L, -1, "__methods") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_getfield(L, -1, "__index");
  }
  if (!lua_istable(L, -1) || lua_getfield(L, -1, method) != LUA_TFUNCTION)
    return luaL_error(L, "%s: the Lua side of %s is not loaded", method,
                      luaL_typename(L, obj));
  lua_replace(L, -3);
  lua_pop(L, 1);                          /* method */
  lua_insert(L, base + 1);
  lua_pushvalue(L, obj);
  lua_insert(L, base + 2);
  return base + 1;
}

#ifdef MPROC_NO_CALLK
/* Lua 5.1 and LuaJIT cannot yield across a C call: a C method cannot call
 * a slow path that may yield (inside mp.run).  It returns instead the
 * marker core.HANDOVER, the method, obj and the arguments, and the Lua
 * wrapper of the C method (lua/mproc/compat.lua, put around the methods
 * of the classes the Lua side extends) makes the call, a tail call in Lua
 * that may yield.  So every C method that hands over must return what
 * mproc_handover returns, and be called through that wrapper. */
static char handover_marker;

int mproc_handover(lua_State *L, int obj, const char *method, int nargs) {
  int at = push_method(L, obj, method, nargs);
  lua_pushlightuserdata(L, &handover_marker);
  lua_insert(L, at);
  return nargs + 3;
}

/* Calls obj:method(args...) here (it must not yield): for "_fail", which
 * raises, from C functions that go on when it returns. */
static int call_method(lua_State *L, int obj, const char *method, int nargs) {
  int at = push_method(L, obj, method, nargs);
  lua_call(L, nargs + 1, LUA_MULTRET);
  return lua_gettop(L) - at + 1;
}
#else
static int handover_k(lua_State *L, int status, lua_KContext base) {
  (void)status;
  return lua_gettop(L) - (int)base;
}

int mproc_handover(lua_State *L, int obj, const char *method, int nargs) {
  int base = push_method(L, obj, method, nargs) - 1;
  lua_callk(L, nargs + 1, LUA_MULTRET, base, handover_k);
  return handover_k(L, LUA_OK, base);
}

#define call_method mproc_handover
#endif

int mproc_raise_errno(lua_State *L, int obj, int err, const char *what) {
  obj = lua_absindex(L, obj);
  mproc_fail_errno(L, err, what);
  lua_remove(L, -4);                      /* the status */
  return call_method(L, obj, "_fail", 3);
}

/* class(tname) -> methods, metatable: the one way the Lua layer extends a
 * class of a binding (methods written in Lua, a by-reference encoder that
 * codec.reftype sets), instead of reaching into the registry. */
static int l_class(lua_State *L) {
  const char *tname = luaL_checkstring(L, 1);
  if (luaL_getmetatable(L, tname) != LUA_TTABLE)
    return luaL_argerror(L, 1, lua_pushfstring(L, "no class '%s'", tname));
  if (lua_getfield(L, -1, "__methods") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_getfield(L, -1, "__index");
  }
  lua_insert(L, -2);
  return 2;
}

int mproc_open_wait(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"class", l_class},
    {"poll_fd", l_poll_fd},
    {"poll_many", l_poll_many},
    {"now", l_now},
    {"sleep", l_sleep},
    {NULL, NULL}
  };
  mproc_setfuncs(L, funcs);
  return 0;
}

/* }====================================================================== */

typedef int (*opener)(lua_State *L);

/* lua_close unloads C modules, but our signal handlers (SIGCHLD, SIGTERM),
 * watcher threads and exit hooks live on until the process ends: a
 * SIGCHLD after the unload would jump into unmapped code.  One more
 * reference that is never dropped keeps the module mapped. */
static void pin_module(void) {
  static int pinned = 0;
  Dl_info info;
  if (pinned) return;
  if (dladdr((void *)&pin_module, &info) && info.dli_fname &&
      dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) != NULL)
    pinned = 1;
}

int luaopen_mproc_core(lua_State *L) {
  static const opener openers[] = {
    mproc_open_wait, mproc_open_codec, mproc_open_proc, mproc_open_conn,
    mproc_open_sync, mproc_open_shm, mproc_open_queue,
    mproc_open_spawn, mproc_open_net, mproc_open_pool, mproc_open_poll,
    NULL
  };
  int i;
  luaL_checkversion(L);
  pin_module();
  lua_newtable(L);
  for (i = 0; openers[i]; i++) openers[i](L);
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "version");
  /* the VM the module runs in: "5.1", "LuaJIT", "5.3" or "5.4" */
  lua_pushstring(L, mproc_running_vm(L));
  lua_setfield(L, -2, "lua_version");
#ifdef MPROC_NO_CALLK
  lua_pushlightuserdata(L, &handover_marker);
  lua_setfield(L, -2, "HANDOVER");
#endif
  return 1;
}
