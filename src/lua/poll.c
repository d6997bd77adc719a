/*
 * src/lua/poll.c: the binding of the poller of src/core/poll.c, type
 * "mproc.Poller": a set of descriptors kept across waits.  It is the one
 * poller of the Lua side: the pool watches its notify socket and its
 * workers' sentinels with it (pool:fileno()), the manager server its
 * listening socket and connections.
 *
 * core.poll_new() -> true, p | false, "OSError", message, errno
 *   p:_ctl(op, fd [, mode]) op "add", "mod" or "del"; mode "r" (default),
 *                           "w" or "rw" -> true | false, "OSError", ...
 *                           (removing a descriptor that is not there, or
 *                           is closed, is not an error)
 *   p:_ready(t)             t[fd] = true for each member ready now (no
 *                           wait) -> how many
 *   p:_wait([timeout])      waits up to timeout seconds (default: forever)
 *                           -> true, {fd, ...} (maybe empty) | false, ...
 *   p:_fileno()             a descriptor readable while a member is ready,
 *                           or nil where there is none (no epoll)
 *   p:_close(), __gc, __close
 * Any method but _close on a closed poller raises.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <string.h>

#include "binding.h"

#define POLLER_T "mproc.Poller"
#define READY_MAX 64

typedef struct poller {
  mproc_poller set;
  int open;
} poller;

static poller *checkpoller(lua_State *L) {
  poller *p = (poller *)luaL_checkudata(L, 1, POLLER_T);
  if (!p->open) luaL_error(L, "attempt to use a closed poller");
  return p;
}

static int poller_close(lua_State *L) {
  poller *p = (poller *)luaL_checkudata(L, 1, POLLER_T);
  if (p->open) mproc_poller_close(&p->set);
  p->open = 0;
  return 0;
}

static int l_poll_new(lua_State *L) {
  poller *p = (poller *)lua_newuserdatauv(L, sizeof *p, 0);
  p->open = 0;
  luaL_setmetatable(L, POLLER_T);
  if (mproc_poller_init(&p->set) < 0) return mproc_fail_errno(L, errno, "poller");
  p->open = 1;
  lua_pushboolean(L, 1);
  lua_rotate(L, -2, 1);
  return 2;
}

static int poller_ctl(lua_State *L) {
  static const char *const ops[] = {"add", "mod", "del", NULL};
  static const int cops[] = {MPROC_POLLER_ADD, MPROC_POLLER_MOD, MPROC_POLLER_DEL};
  poller *p = checkpoller(L);
  int op = luaL_checkoption(L, 2, NULL, ops);
  int fd = (int)luaL_checkinteger(L, 3);
  int ev = 0;
  if (cops[op] != MPROC_POLLER_DEL)
    ev = lua_isnoneornil(L, 4) ? MPROC_WAIT_READ : mproc_checkmode(L, 4);
  if (mproc_poller_ctl(&p->set, cops[op], fd, ev) < 0 &&
      !(cops[op] == MPROC_POLLER_DEL && (errno == ENOENT || errno == EBADF)))
    return mproc_fail_errno(L, errno, "poller ctl");
  lua_pushboolean(L, 1);
  return 1;
}

static int poller_ready(lua_State *L) {
  poller *p = checkpoller(L);
  int out[READY_MAX], i, n;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = mproc_poller_ready(&p->set, out, READY_MAX);
  if (n < 0) return luaL_error(L, "poller: %s", strerror(errno));
  for (i = 0; i < n; i++) {
    lua_pushboolean(L, 1);
    lua_rawseti(L, 2, out[i]);
  }
  lua_pushinteger(L, n);
  return 1;
}

static int poller_wait(lua_State *L) {
  poller *p = checkpoller(L);
  int out[READY_MAX], i, n;
  n = mproc_poller_wait(&p->set, out, READY_MAX, luaL_optnumber(L, 2, -1));
  if (n < 0) return mproc_fail_errno(L, errno, "poller wait");
  lua_pushboolean(L, 1);
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    lua_pushinteger(L, out[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 2;
}

static int poller_fileno(lua_State *L) {
  int fd = mproc_poller_fileno(&checkpoller(L)->set);
  if (fd < 0) lua_pushnil(L);
  else lua_pushinteger(L, fd);
  return 1;
}

static int poller_tostring(lua_State *L) {
  poller *p = (poller *)luaL_checkudata(L, 1, POLLER_T);
  lua_pushstring(L, p->open ? "mproc.Poller" : "mproc.Poller (closed)");
  return 1;
}

int mproc_open_poll(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"_ctl", poller_ctl},
    {"_ready", poller_ready},
    {"_wait", poller_wait},
    {"_fileno", poller_fileno},
    {"_close", poller_close},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", poller_close},
    {"__close", poller_close},
    {"__tostring", poller_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"poll_new", l_poll_new},
    {NULL, NULL}
  };
  mproc_newclass(L, POLLER_T, methods, meta);
  mproc_setfuncs(L, funcs);
  return 0;
}
