/*
 * src/lua/sync.c: Lua bindings of sync.c, what every shared object has: the
 * handle userdata, its close, the slow path, the handles that carry it to
 * another process (and sync_attach, their decoder), and the opener.  The
 * classes are in src/lua/lock.c (Lock, RLock, Semaphore, guards) and
 * src/lua/cond.c (Event, Condition, Barrier); sync.h is what they share.
 *
 * Fast paths (an uncontended acquire) stay in C, straight in __index.  A
 * call that must wait, or that failed, hands over to the slow path of its
 * class, `x:_block(step, timeout)`, a Lua method that lua/mproc/sync.lua
 * adds through core.class: it waits through sched.wait_shared, calling the
 * C `step` in slices; a step returns its status (true when done, nothing
 * when the slice ran out, false, kind, message on failure).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"

/* {======================================================================
 * Common machinery
 * ======================================================================= */

double mproc_sync_opttimeout(lua_State *L, int arg) {
  double t;
  if (lua_isnoneornil(L, arg)) return -1;
  t = luaL_checknumber(L, arg);
  if (!(t >= 0)) luaL_argerror(L, arg, "timeout must be >= 0");
  return t == HUGE_VAL ? -1 : t;
}

sync_ud *mproc_sync_newud(lua_State *L, uint32_t magic, const char *tname, int nuv) {
  sync_ud *u = (sync_ud *)lua_newuserdatauv(L, sizeof *u, nuv);
  memset(u, 0, sizeof *u);
  u->magic = magic;
  luaL_setmetatable(L, tname);
  return u;
}

/* Creates the object (on the stack top) in a slab; /dev/shm full or out
 * of memory raise OSError (through the class's _fail, sync.lua). */
void *mproc_sync_alloc(lua_State *L, sync_ud *u, size_t size) {
  mproc_seg *seg;
  void *p = mproc_slab_alloc(size, &seg);
  if (p == NULL) mproc_raise_errno(L, -1, errno, "cannot create shared object");
  u->seg = seg;
  u->obj = p;
  return p;
}

int mproc_sync_close(lua_State *L) {
  sync_ud *u = (sync_ud *)lua_touserdata(L, 1);
  if (u != NULL && lua_rawlen(L, 1) == sizeof *u && u->seg != NULL) {
    mproc_seg *s = u->seg;
    /* A held robust mutex is on glibc's list of this thread: unmapping it
     * would crash the next lock call.  Closed or collected while held
     * (a script that raised holding it) means released. */
    if ((u->magic == M_LOCK || u->magic == M_RLOCK) && u->obj != NULL)
      mproc_rlock_release_all((mproc_lock *)u->obj);
    u->seg = NULL;
    u->obj = NULL;
    mproc_seg_release(s);
  }
  return 0;
}

/* Handles: "<segment name>:<offset>:<generation>".  Objects that were
 * encoded are remembered (weak) so that decoding one in this process, or
 * in a fork child, gives back the very same object. */
int mproc_sync_encode(lua_State *L, const char *tname, mproc_seg *seg, const void *obj) {
  const mproc_objhdr *h = (const mproc_objhdr *)obj;
  size_t off = (size_t)((const unsigned char *)obj - mproc_seg_data(seg));
  lua_pushstring(L, tname);
  lua_pushfstring(L, "%s:%I:%I", seg->name, (LUAI_UACINT)off, (LUAI_UACINT)h->gen);
  if (lua_getfield(L, LUA_REGISTRYINDEX, "mproc.sync.objects") == LUA_TTABLE) {
    lua_pushvalue(L, -3);
    lua_pushvalue(L, -3);
    lua_concat(L, 2);
    lua_pushvalue(L, 1);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
  return 2;
}

/* Parses and maps a handle; returns the object or NULL after pushing a
 * failure (false, kind, message). */
void *mproc_sync_attach(lua_State *L, const char *handle, int kind, size_t minsize,
                        mproc_seg **seg) {
  char name[64];
  const char *c1 = strchr(handle, ':'), *c2;
  unsigned long long off, gen;
  mproc_objhdr *h;
  mproc_seg *s;
  if (c1 == NULL || (size_t)(c1 - handle) >= sizeof name ||
      (c2 = strchr(c1 + 1, ':')) == NULL ||
      sscanf(c1 + 1, "%llu", &off) != 1 || sscanf(c2 + 1, "%llu", &gen) != 1) {
    mproc_fail(L, "OSError", "malformed handle '%s'", handle);
    return NULL;
  }
  memcpy(name, handle, (size_t)(c1 - handle));
  name[c1 - handle] = '\0';
  s = mproc_seg_attach(name);
  if (s == NULL) {
    if (errno == ENOENT) mproc_fail(L, "OSError", "shared object %s no longer exists", handle);
    else mproc_fail_errno(L, errno, "cannot attach shared object");
    return NULL;
  }
  if (off % 64 != 0 || off + minsize > mproc_seg_datasize(s)) goto bad;
  h = (mproc_objhdr *)(void *)(mproc_seg_data(s) + off);
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != MPROC_OBJ_MAGIC ||
      h->kind != kind || h->gen != gen || h->size < minsize ||
      off + h->size > mproc_seg_datasize(s))
    goto bad;
  *seg = s;
  return h;
bad:
  mproc_seg_release(s);
  mproc_fail(L, "OSError", "handle '%s' does not name a live shared object", handle);
  return NULL;
}

/* The slow path: returns what the object's Lua method _block(step,
 * timeout) returns (the step's results, or false when the timeout ran
 * out).  The object is at index 1. */
int mproc_sync_block(lua_State *L, lua_CFunction step, double timeout) {
  lua_pushcfunction(L, step);
  if (timeout < 0) lua_pushnil(L);
  else lua_pushnumber(L, timeout);
  return mproc_handover(L, 1, "_block", 2);
}

/* }====================================================================== */

/* {======================================================================
 * Attaching by handle (the decoders of the codec)
 * ======================================================================= */

/* sync_attach(typename, handle) -> true, object | false, kind, message */
static int l_sync_attach(lua_State *L) {
  const char *tname = luaL_checkstring(L, 1);
  const char *handle = luaL_checkstring(L, 2);
  static const struct { const char *tname; uint32_t magic; int kind; size_t size; } types[] = {
    {"mproc.Lock", M_LOCK, MPROC_K_LOCK, sizeof(mproc_lock)},
    {"mproc.RLock", M_RLOCK, MPROC_K_RLOCK, sizeof(mproc_lock)},
    {"mproc.Semaphore", M_SEM, MPROC_K_SEM, sizeof(mproc_sem)},
    {"mproc.Event", M_EVENT, MPROC_K_EVENT, sizeof(mproc_event)},
    {"mproc.Condition", M_COND, MPROC_K_COND, sizeof(mproc_cond)},
    {"mproc.Barrier", M_BARRIER, MPROC_K_BARRIER, sizeof(mproc_barrier)},
  };
  size_t i;
  lua_getfield(L, LUA_REGISTRYINDEX, "mproc.sync.objects");
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_concat(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL) {   /* encoded here (or before fork) */
    sync_ud *c = (sync_ud *)lua_touserdata(L, -1);
    if (c != NULL && c->seg != NULL) {      /* unless closed since */
      lua_pushboolean(L, 1);
      lua_insert(L, -2);
      return 2;
    }
  }
  lua_pop(L, 2);
  for (i = 0; i < sizeof types / sizeof types[0]; i++) {
    if (strcmp(tname, types[i].tname) == 0) {
      mproc_seg *seg;
      void *obj;
      sync_ud *u;
      if (types[i].magic == M_COND) check_anylock(L, 3);
      obj = mproc_sync_attach(L, handle, types[i].kind, types[i].size, &seg);
      if (obj == NULL) return lua_gettop(L) - (types[i].magic == M_COND ? 3 : 2);
      lua_pushboolean(L, 1);
      u = mproc_sync_newud(L, types[i].magic, tname, 1);
      u->seg = seg;
      u->obj = obj;
      if (types[i].magic == M_COND) {
        lua_pushvalue(L, 3);
        lua_setiuservalue(L, -2, 1);
      }
      return 2;
    }
  }
  return luaL_argerror(L, 1, "unknown shared type");
}

/* }====================================================================== */

int mproc_open_sync(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"sync_attach", l_sync_attach},
    {NULL, NULL}
  };
  mproc_open_lock(L);
  mproc_open_cond(L);
  /* handle -> object, weak: what this process encoded */
  if (lua_getfield(L, LUA_REGISTRYINDEX, "mproc.sync.objects") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "mproc.sync.objects");
  } else {
    lua_pop(L, 1);
  }
  mproc_setfuncs(L, funcs);
  return 0;
}
