/*
 * src/lua/lock.c: Lua bindings of sync.c's locks: Lock, RLock, Semaphore
 * (bounded or not), and the guards of `lock:guard()`.  The handle, close
 * and slow path they share with the other classes are in src/lua/sync.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "sync.h"

/* {======================================================================
 * Lock and RLock
 * ======================================================================= */

/* lock.owner_died is false in the methods table; a holder that recovered
 * a dead owner's lock gets the metatable whose methods say true. */
static void set_died(lua_State *L, int i, sync_ud *u, int died) {
  if (u->died == died) return;
  u->died = died;
  luaL_getmetatable(L, u->magic == M_LOCK ? "mproc.Lock" : "mproc.RLock");
  if (died) lua_getfield(L, -1, "__died");
  lua_setmetatable(L, i);
  if (died) lua_pop(L, 1);
}

static int lock_new(lua_State *L, int recursive) {
  sync_ud *u = mproc_sync_newud(L, recursive ? M_RLOCK : M_LOCK,
                                recursive ? "mproc.RLock" : "mproc.Lock", 1);
  mproc_lock *l = (mproc_lock *)mproc_sync_alloc(L, u, sizeof(mproc_lock));
  int rc = mproc_lock_init(l, recursive);
  if (rc) return mproc_raise_errno(L, -1, rc, "cannot create lock");
  return 1;
}

static int l_Lock(lua_State *L) { return lock_new(L, 0); }
static int l_RLock(lua_State *L) { return lock_new(L, 1); }

int mproc_sync_push_rlock(lua_State *L, mproc_seg *seg, mproc_lock *l) {
  sync_ud *u = mproc_sync_newud(L, M_RLOCK, "mproc.RLock", 1);
  mproc_seg_retain(seg);
  u->seg = seg;
  u->obj = l;
  return 1;
}

/* step(lock, slice) -> true | nothing */
static int lock_step(lua_State *L) {
  sync_ud *u = check_anylock(L, 1);
  int died, rc = mproc_lock_acquire((mproc_lock *)u->obj, luaL_checknumber(L, 2), &died);
  if (rc == 0) {
    set_died(L, 1, u, died);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc == ETIMEDOUT || rc == EINTR) return 0;
  return mproc_fail_errno(L, rc, "cannot acquire lock");
}

int mproc_sync_lock_acquire(lua_State *L, sync_ud *u) {
  double t = lua_isnoneornil(L, 2) ? -1 : mproc_sync_opttimeout(L, 2);
  int died, rc = mproc_lock_try((mproc_lock *)u->obj, &died);
  if (rc == EBUSY) rc = ETIMEDOUT;
  if (rc == 0) {
    if (died != u->died) set_died(L, 1, u, died);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc != ETIMEDOUT) {                 /* the step reports it */
    lua_settop(L, 2);
    return mproc_sync_block(L, lock_step, t);
  }
  if (t == 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (mproc_lock_spin((mproc_lock *)u->obj, &died) == 0) {
    if (died != u->died) set_died(L, 1, u, died);
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 2);
  return mproc_sync_block(L, lock_step, t);
}

static int l_lock_acquire(lua_State *L) {
  sync_ud *u_;
  return mproc_sync_lock_acquire(L, CHECK(L, 1, M_LOCK, "mproc.Lock"));
}

static int l_rlock_acquire(lua_State *L) {
  sync_ud *u_;
  return mproc_sync_lock_acquire(L, CHECK(L, 1, M_RLOCK, "mproc.RLock"));
}

/* The lock u is the object at index idx. */
void mproc_sync_lock_release(lua_State *L, int idx, sync_ud *u) {
  mproc_lock *l = (mproc_lock *)u->obj;
  int rc = mproc_lock_release(l);
  if (rc == 0) return;
  if (rc != EPERM) mproc_raise_errno(L, idx, rc, "cannot release lock");
  if (__atomic_load_n(&l->owner, __ATOMIC_RELAXED) == 0)
    luaL_error(L, "cannot release un-acquired lock");
  luaL_error(L, "cannot release a lock held by another process");
}

static int l_lock_release(lua_State *L) {
  sync_ud *u_;
  mproc_sync_lock_release(L, 1, CHECK(L, 1, M_LOCK, "mproc.Lock"));
  return 0;
}

static int l_rlock_release(lua_State *L) {
  sync_ud *u_;
  mproc_sync_lock_release(L, 1, CHECK(L, 1, M_RLOCK, "mproc.RLock"));
  return 0;
}

/* _release_save(): Condition.wait lets go of every level; -> depth */
static int l_lock_release_save(lua_State *L) {
  sync_ud *u = check_anylock(L, 1);
  mproc_lock *l = (mproc_lock *)u->obj;
  if (!mproc_lock_mine(l)) return luaL_error(L, "cannot wait on un-acquired lock");
  lua_pushinteger(L, (lua_Integer)mproc_rlock_release_all(l));
  return 1;
}

/* _restore(depth): after one acquire, re-takes the other levels */
static int l_lock_restore(lua_State *L) {
  sync_ud *u = check_anylock(L, 1);
  mproc_rlock_restore((mproc_lock *)u->obj, (uint32_t)luaL_checkinteger(L, 2));
  return 0;
}

/* _is_mine() -> bool */
static int l_lock_is_mine(lua_State *L) {
  sync_ud *u = check_anylock(L, 1);
  lua_pushboolean(L, mproc_lock_mine((mproc_lock *)u->obj));
  return 1;
}

static int l_lock_encode(lua_State *L) {
  sync_ud *u = check_anylock(L, 1);
  return mproc_sync_encode(L, u->magic == M_LOCK ? "mproc.Lock" : "mproc.RLock",
                           u->seg, u->obj);
}

/* }====================================================================== */

/* {======================================================================
 * Guards: `local _ <close> = x:guard([timeout])`, or `g:close()` where
 * the VM has no `<close>` (before 5.4)
 * ======================================================================= */

/* Pushes the cached guard of the object at index 1 (user value 1). */
static int push_guard(lua_State *L, sync_ud *u) {
  if (lua_getiuservalue(L, 1, 1) != LUA_TUSERDATA) {
    guard_ud *g;
    lua_pop(L, 1);
    g = (guard_ud *)lua_newuserdatauv(L, sizeof *g, 1);
    g->magic = M_GUARD;
    g->owner = u;
    luaL_setmetatable(L, "mproc.Guard");
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 1);
  }
  return 1;
}

/* The slow path of guard: the Lua method _guard_slow(timeout) acquires
 * (raising Timeout) and returns the guard. */
static int guard_slow(lua_State *L) {
  lua_settop(L, 2);
  return mproc_handover(L, 1, "_guard_slow", 1);
}

int mproc_sync_lock_guard(lua_State *L) {
  sync_ud *u = test(L, 1, M_LOCK);
  int died, rc;
  if (u == NULL) u = test(L, 1, M_RLOCK);
  if (u == NULL) luaL_typeerror(L, 1, "mproc.Lock");
  check_open(L, u);
  if (!lua_isnoneornil(L, 2)) mproc_sync_opttimeout(L, 2);
  rc = mproc_lock_try((mproc_lock *)u->obj, &died);
  if (rc == EBUSY && (lua_isnoneornil(L, 2) || lua_tonumber(L, 2) != 0))
    rc = mproc_lock_spin((mproc_lock *)u->obj, &died);
  if (rc == 0) {
    if (died != u->died) set_died(L, 1, u, died);
    return push_guard(L, u);
  }
  return guard_slow(L);
}

/* _guard(): the guard of an object already acquired */
static int l_any_guard(lua_State *L) {
  sync_ud *u = test(L, 1, M_SEM);
  if (u == NULL) u = check_anylock(L, 1);
  return push_guard(L, check_open(L, u));
}

static int l_guard_close(lua_State *L) {
  guard_ud *g = (guard_ud *)luaL_checkudata(L, 1, "mproc.Guard");
  sync_ud *u = g->owner;
  check_open(L, u);
  if (u->magic == M_SEM) {
    if (mproc_sem_release((mproc_sem *)u->obj, 1) != 0)
      luaL_error(L, "semaphore or lock released too many times");
  } else {
    lua_getiuservalue(L, 1, 1);          /* the lock */
    mproc_sync_lock_release(L, -1, u);
  }
  return 0;
}

/* }====================================================================== */

/* {======================================================================
 * Semaphore, BoundedSemaphore
 * ======================================================================= */

static int sem_new(lua_State *L, int bounded) {
  lua_Integer n = luaL_optinteger(L, 1, 1);
  sync_ud *u;
  luaL_argcheck(L, n >= 0 && n <= INT32_MAX, 1, "initial value must be >= 0");
  u = mproc_sync_newud(L, M_SEM, "mproc.Semaphore", 1);
  mproc_sem_init((mproc_sem *)mproc_sync_alloc(L, u, sizeof(mproc_sem)), (uint32_t)n, bounded);
  return 1;
}

static int l_Semaphore(lua_State *L) { return sem_new(L, 0); }
static int l_BoundedSemaphore(lua_State *L) { return sem_new(L, 1); }

static int sem_step(lua_State *L) {
  sync_ud *u_;
  sync_ud *u = CHECK(L, 1, M_SEM, "mproc.Semaphore");
  if (mproc_sem_acquire((mproc_sem *)u->obj, luaL_checknumber(L, 2)) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  return 0;
}

static int l_sem_acquire(lua_State *L) {
  sync_ud *u_;
  sync_ud *u = CHECK(L, 1, M_SEM, "mproc.Semaphore");
  double t = mproc_sync_opttimeout(L, 2);
  lua_settop(L, 2);
  if (mproc_sem_acquire((mproc_sem *)u->obj, 0) == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (t == 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return mproc_sync_block(L, sem_step, t);
}

static int l_sem_guard(lua_State *L) {
  sync_ud *u_;
  sync_ud *u = CHECK(L, 1, M_SEM, "mproc.Semaphore");
  mproc_sync_opttimeout(L, 2);
  if (mproc_sem_acquire((mproc_sem *)u->obj, 0) == 0) return push_guard(L, u);
  return guard_slow(L);
}

/* release([n]) */
static int l_sem_release(lua_State *L) {
  sync_ud *u_;
  sync_ud *u = CHECK(L, 1, M_SEM, "mproc.Semaphore");
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 1 && n <= INT32_MAX, 2, "n must be >= 1");
  if (mproc_sem_release((mproc_sem *)u->obj, (uint32_t)n) != 0)
    return luaL_error(L, "semaphore or lock released too many times");
  return 0;
}

static int l_sem_get_value(lua_State *L) {
  sync_ud *u_;
  sync_ud *u = CHECK(L, 1, M_SEM, "mproc.Semaphore");
  lua_pushinteger(L, __atomic_load_n(&((mproc_sem *)u->obj)->value, __ATOMIC_SEQ_CST));
  return 1;
}

static int l_sem_encode(lua_State *L) {
  sync_ud *u_;
  sync_ud *u = CHECK(L, 1, M_SEM, "mproc.Semaphore");
  return mproc_sync_encode(L, "mproc.Semaphore", u->seg, u->obj);
}

/* }====================================================================== */

/* The metatable of a lock whose holder found the owner dead: the same
 * metamethods, and methods that say owner_died = true and otherwise fall
 * back to the class's (so methods added later from Lua are there too). */
static void add_died_variant(lua_State *L, const char *tname) {
  luaL_getmetatable(L, tname);
  lua_newtable(L);                       /* the died metatable */
  lua_pushnil(L);
  while (lua_next(L, -3)) {              /* copy metamethods */
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_newtable(L);                       /* its methods */
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "owner_died");
  lua_createtable(L, 0, 1);
  lua_getfield(L, -4, "__index");
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "__index");
  lua_setfield(L, -2, "__died");
  lua_getfield(L, -1, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "owner_died");
  lua_pop(L, 2);
}

int mproc_open_lock(lua_State *L) {
  static const luaL_Reg lock_m[] = {
    {"acquire", l_lock_acquire}, {"release", l_lock_release},
    {"guard", mproc_sync_lock_guard}, {"close", mproc_sync_close},
    {"_release_save", l_lock_release_save},
    {"_restore", l_lock_restore}, {"_is_mine", l_lock_is_mine}, {"_guard", l_any_guard},
    {NULL, NULL}
  };
  static const luaL_Reg rlock_m[] = {
    {"acquire", l_rlock_acquire}, {"release", l_rlock_release},
    {"guard", mproc_sync_lock_guard}, {"close", mproc_sync_close},
    {"_release_save", l_lock_release_save},
    {"_restore", l_lock_restore}, {"_is_mine", l_lock_is_mine}, {"_guard", l_any_guard},
    {NULL, NULL}
  };
  static const luaL_Reg lock_mt[] = {
    {"__gc", mproc_sync_close}, {"__close", mproc_sync_close},
    {"__mproc_encode", l_lock_encode},
    {NULL, NULL}
  };
  static const luaL_Reg sem_m[] = {
    {"acquire", l_sem_acquire}, {"release", l_sem_release}, {"guard", l_sem_guard},
    {"get_value", l_sem_get_value}, {"close", mproc_sync_close}, {"_guard", l_any_guard},
    {NULL, NULL}
  };
  static const luaL_Reg sem_mt[] = {
    {"__gc", mproc_sync_close}, {"__close", mproc_sync_close},
    {"__mproc_encode", l_sem_encode},
    {NULL, NULL}
  };
  /* guard:close() is what `<close>` does, for the VMs without it */
  static const luaL_Reg guard_m[] = {
    {"close", l_guard_close},
    {NULL, NULL}
  };
  static const luaL_Reg guard_mt[] = {
    {"__close", l_guard_close},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"Lock", l_Lock}, {"RLock", l_RLock}, {"Semaphore", l_Semaphore},
    {"BoundedSemaphore", l_BoundedSemaphore},
    {NULL, NULL}
  };
  mproc_newclass(L, "mproc.Lock", lock_m, lock_mt);
  mproc_newclass(L, "mproc.RLock", rlock_m, lock_mt);
  add_died_variant(L, "mproc.Lock");
  add_died_variant(L, "mproc.RLock");
  mproc_newclass(L, "mproc.Semaphore", sem_m, sem_mt);
  mproc_newclass(L, "mproc.Guard", guard_m, guard_mt);
  mproc_setfuncs(L, funcs);
  return 0;
}
