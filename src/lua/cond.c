/*
 * src/lua/cond.c: Lua bindings of sync.c's waits on shared state: Event,
 * Condition (over a Lock or RLock of src/lua/lock.c), Barrier.  The handle,
 * close and slow path they share with the other classes are in
 * src/lua/sync.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "sync.h"

/* {======================================================================
 * Event
 * ======================================================================= */

static int l_Event(lua_State *L) {
  sync_ud *u = mproc_sync_newud(L, M_EVENT, "mproc.Event", 0);
  mproc_event_init((mproc_event *)mproc_sync_alloc(L, u, sizeof(mproc_event)));
  return 1;
}

static int event_step(lua_State *L) {
  sync_ud *u_;
  sync_ud *u = CHECK(L, 1, M_EVENT, "mproc.Event");
  if (mproc_event_wait((mproc_event *)u->obj, luaL_checknumber(L, 2)) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  return 0;
}

static int l_event_wait(lua_State *L) {
  sync_ud *u_;
  sync_ud *u = CHECK(L, 1, M_EVENT, "mproc.Event");
  double t = mproc_sync_opttimeout(L, 2);
  lua_settop(L, 2);
  if (__atomic_load_n(&((mproc_event *)u->obj)->flag, __ATOMIC_SEQ_CST) || t == 0) {
    lua_pushboolean(L, __atomic_load_n(&((mproc_event *)u->obj)->flag, __ATOMIC_SEQ_CST) != 0);
    return 1;
  }
  return mproc_sync_block(L, event_step, t);
}

static int l_event_set(lua_State *L) {
  sync_ud *u_;
  mproc_event_set((mproc_event *)CHECK(L, 1, M_EVENT, "mproc.Event")->obj);
  return 0;
}

static int l_event_clear(lua_State *L) {
  sync_ud *u_;
  mproc_event_clear((mproc_event *)CHECK(L, 1, M_EVENT, "mproc.Event")->obj);
  return 0;
}

static int l_event_is_set(lua_State *L) {
  sync_ud *u_;
  sync_ud *u = CHECK(L, 1, M_EVENT, "mproc.Event");
  lua_pushboolean(L, __atomic_load_n(&((mproc_event *)u->obj)->flag, __ATOMIC_SEQ_CST) != 0);
  return 1;
}

static int l_event_encode(lua_State *L) {
  sync_ud *u_;
  sync_ud *u = CHECK(L, 1, M_EVENT, "mproc.Event");
  return mproc_sync_encode(L, "mproc.Event", u->seg, u->obj);
}

/* }====================================================================== */

/* {======================================================================
 * Condition: C core for the waiter bookkeeping; wait and wait_for are in
 * lua/mproc/sync.lua.  User value 1: the lock.
 * ======================================================================= */

/* Condition(lock) -- the lock is made by sync.lua when not given */
static int l_Condition(lua_State *L) {
  sync_ud *u;
  mproc_cond *c;
  int rc;
  check_anylock(L, 1);
  u = mproc_sync_newud(L, M_COND, "mproc.Condition", 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  c = (mproc_cond *)mproc_sync_alloc(L, u, sizeof(mproc_cond));
  rc = mproc_cond_init(c);
  if (rc) return mproc_raise_errno(L, -1, rc, "cannot create condition");
  return 1;
}

static sync_ud *check_cond(lua_State *L) {
  sync_ud *u_;
  return CHECK(L, 1, M_COND, "mproc.Condition");
}

/* Replaces self (index 1) by the condition's lock. */
static sync_ud *to_lock(lua_State *L) {
  check_cond(L);
  lua_getiuservalue(L, 1, 1);
  lua_replace(L, 1);
  return check_anylock(L, 1);
}

static int l_cond_acquire(lua_State *L) { return mproc_sync_lock_acquire(L, to_lock(L)); }
static int l_cond_release(lua_State *L) {
  mproc_sync_lock_release(L, 1, to_lock(L));
  return 0;
}
static int l_cond_guard(lua_State *L) { to_lock(L); return mproc_sync_lock_guard(L); }

static int l_cond_lock(lua_State *L) {
  check_cond(L);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static void need_owner(lua_State *L, const char *op) {
  sync_ud *u = check_cond(L);
  sync_ud *lk;
  (void)u;
  lua_getiuservalue(L, 1, 1);
  lk = (sync_ud *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (lk == NULL || lk->seg == NULL || !mproc_lock_mine((mproc_lock *)lk->obj))
    luaL_error(L, "cannot %s on un-acquired lock", op);
}

/* notify([n]) */
static int l_cond_notify(lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 2, 1);
  need_owner(L, "notify");
  luaL_argcheck(L, n >= 0, 2, "n must be >= 0");
  mproc_cond_notify((mproc_cond *)check_cond(L)->obj, n);
  return 0;
}

static int l_cond_notify_all(lua_State *L) {
  need_owner(L, "notify");
  mproc_cond_notify((mproc_cond *)check_cond(L)->obj, -1);
  return 0;
}

/* _enter() -> ticket: registers a waiter; the caller then releases the lock */
static int l_cond_enter(lua_State *L) {
  need_owner(L, "wait");
  lua_pushinteger(L, mproc_cond_enter((mproc_cond *)check_cond(L)->obj));
  return 1;
}

/* step(cond, slice, ticket) -> true | nothing */
static int cond_step(lua_State *L) {
  sync_ud *u = check_cond(L);
  double slice = luaL_checknumber(L, 2);
  uint32_t ticket = (uint32_t)luaL_checkinteger(L, 3);
  if (mproc_cond_wait((mproc_cond *)u->obj, ticket, slice) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  return 0;
}

/* _leave(ticket) -> notified after all */
static int l_cond_leave(lua_State *L) {
  sync_ud *u = check_cond(L);
  uint32_t ticket = (uint32_t)luaL_checkinteger(L, 2);
  lua_pushboolean(L, mproc_cond_leave((mproc_cond *)u->obj, ticket));
  return 1;
}

static int l_cond_encode(lua_State *L) {
  sync_ud *u = check_cond(L);
  return mproc_sync_encode(L, "mproc.Condition", u->seg, u->obj);
}

/* __index: methods, then owner_died (of its lock) */
static int l_cond_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "owner_died") == 0) {
    sync_ud *lk;
    check_cond(L);
    lua_getiuservalue(L, 1, 1);
    lk = (sync_ud *)lua_touserdata(L, -1);
    lua_pushboolean(L, lk != NULL && lk->died);
    return 1;
  }
  return 0;
}

/* }====================================================================== */

/* {======================================================================
 * Barrier: arrive/wait in C; Barrier:wait (with the action) in sync.lua.
 * User value 1: the action (or nil).
 * ======================================================================= */

/* Barrier(parties, action, timeout) */
static int l_Barrier(lua_State *L) {
  lua_Integer parties = luaL_checkinteger(L, 1);
  double t = mproc_sync_opttimeout(L, 3);
  sync_ud *u;
  int rc;
  lua_settop(L, 3);
  luaL_argcheck(L, parties >= 1 && parties <= INT32_MAX, 1, "parties must be >= 1");
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  u = mproc_sync_newud(L, M_BARRIER, "mproc.Barrier", 1);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  rc = mproc_barrier_init((mproc_barrier *)mproc_sync_alloc(L, u, sizeof(mproc_barrier)),
                          (uint32_t)parties, t);
  if (rc) return mproc_raise_errno(L, -1, rc, "cannot create barrier");
  return 1;
}

static sync_ud *check_barrier(lua_State *L) {
  sync_ud *u_;
  return CHECK(L, 1, M_BARRIER, "mproc.Barrier");
}

static int broken(lua_State *L) {
  return mproc_fail(L, "BrokenBarrier", "barrier is broken");
}

/* _arrive(pass) -> true, index, gen, last | false, "BrokenBarrier", msg.
 * With pass (no action to run) the last arriver releases the others. */
static int l_barrier_arrive(lua_State *L) {
  mproc_barrier *b = (mproc_barrier *)check_barrier(L)->obj;
  uint32_t index, gen;
  int last;
  if (mproc_barrier_arrive(b, &index, &gen, &last) != 0) return broken(L);
  if (last && lua_toboolean(L, 2)) mproc_barrier_pass(b);
  lua_pushboolean(L, 1);
  lua_pushinteger(L, index);
  lua_pushinteger(L, gen);
  lua_pushboolean(L, last);
  return 4;
}

/* step(barrier, slice, gen) -> true | nothing | false, "BrokenBarrier", msg */
static int barrier_step(lua_State *L) {
  mproc_barrier *b = (mproc_barrier *)check_barrier(L)->obj;
  int rc = mproc_barrier_wait(b, (uint32_t)luaL_checkinteger(L, 3), luaL_checknumber(L, 2));
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc == EPIPE) return broken(L);
  return 0;
}

static int l_barrier_pass(lua_State *L) {
  mproc_barrier_pass((mproc_barrier *)check_barrier(L)->obj);
  return 0;
}

static int l_barrier_abort(lua_State *L) {
  mproc_barrier_abort((mproc_barrier *)check_barrier(L)->obj);
  return 0;
}

static int l_barrier_reset(lua_State *L) {
  mproc_barrier_reset((mproc_barrier *)check_barrier(L)->obj);
  return 0;
}

/* _info() -> action, default timeout (nil: none) */
static int l_barrier_info(lua_State *L) {
  mproc_barrier *b = (mproc_barrier *)check_barrier(L)->obj;
  lua_getiuservalue(L, 1, 1);
  if (b->timeout < 0) lua_pushnil(L);
  else lua_pushnumber(L, b->timeout);
  return 2;
}

static int l_barrier_set_action(lua_State *L) {
  check_barrier(L);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

static int l_barrier_encode(lua_State *L) {
  sync_ud *u = check_barrier(L);
  return mproc_sync_encode(L, "mproc.Barrier", u->seg, u->obj);
}

static int l_barrier_index(lua_State *L) {
  const char *k;
  mproc_barrier *b;
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  k = lua_tostring(L, 2);
  b = (mproc_barrier *)check_barrier(L)->obj;
  if (strcmp(k, "parties") == 0) lua_pushinteger(L, b->parties);
  else if (strcmp(k, "n_waiting") == 0) lua_pushinteger(L, mproc_barrier_waiting(b));
  else if (strcmp(k, "broken") == 0)
    lua_pushboolean(L, __atomic_load_n(&b->broken, __ATOMIC_SEQ_CST) != 0);
  else lua_pushnil(L);
  return 1;
}

/* }====================================================================== */

int mproc_open_cond(lua_State *L) {
  static const luaL_Reg event_m[] = {
    {"set", l_event_set}, {"clear", l_event_clear}, {"is_set", l_event_is_set},
    {"wait", l_event_wait}, {"close", mproc_sync_close},
    {NULL, NULL}
  };
  static const luaL_Reg event_mt[] = {
    {"__gc", mproc_sync_close}, {"__close", mproc_sync_close},
    {"__mproc_encode", l_event_encode},
    {NULL, NULL}
  };
  static const luaL_Reg cond_m[] = {
    {"acquire", l_cond_acquire}, {"release", l_cond_release}, {"guard", l_cond_guard},
    {"notify", l_cond_notify}, {"notify_all", l_cond_notify_all},
    {"close", mproc_sync_close},
    {"_lock", l_cond_lock}, {"_enter", l_cond_enter}, {"_leave", l_cond_leave},
    {"_step", cond_step},
    {NULL, NULL}
  };
  static const luaL_Reg cond_mt[] = {
    {"__gc", mproc_sync_close}, {"__close", mproc_sync_close},
    {"__mproc_encode", l_cond_encode},
    {NULL, NULL}
  };
  static const luaL_Reg barrier_m[] = {
    {"reset", l_barrier_reset}, {"abort", l_barrier_abort}, {"close", mproc_sync_close},
    {"_arrive", l_barrier_arrive}, {"_pass", l_barrier_pass}, {"_step", barrier_step},
    {"_info", l_barrier_info}, {"_set_action", l_barrier_set_action},
    {"_encode", l_barrier_encode},
    {NULL, NULL}
  };
  static const luaL_Reg barrier_mt[] = {
    {"__gc", mproc_sync_close}, {"__close", mproc_sync_close},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"Event", l_Event}, {"Condition", l_Condition}, {"Barrier", l_Barrier},
    {NULL, NULL}
  };
  mproc_newclass(L, "mproc.Event", event_m, event_mt);
  mproc_indexed_class(L, "mproc.Condition", cond_m, cond_mt, l_cond_index, NULL);
  lua_pop(L, 1);
  mproc_indexed_class(L, "mproc.Barrier", barrier_m, barrier_mt, l_barrier_index, NULL);
  lua_pop(L, 1);
  mproc_setfuncs(L, funcs);
  return 0;
}
