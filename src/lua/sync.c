/*
 * src/lua/sync.c: Lua bindings of sync.c: Lock, RLock, Semaphore (bounded or
 * not), Event, Condition, Barrier, and the guards of `lock:guard()`.
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

#include "binding.h"


#define M_LOCK    0x4b434f4cu
#define M_RLOCK   0x4b434f52u
#define M_SEM     0x204d4553u
#define M_EVENT   0x544e5645u
#define M_COND    0x444e4f43u
#define M_BARRIER 0x52524142u
#define M_GUARD   0x44524147u

typedef struct sync_ud {
  uint32_t magic;
  int died;              /* Lock/RLock: this holder found the owner dead */
  mproc_seg *seg;        /* NULL when closed */
  void *obj;
} sync_ud;

typedef struct guard_ud {
  uint32_t magic;
  sync_ud *owner;        /* kept alive by user value 1 */
} guard_ud;

/* For "attempt to use a closed <what>". */
static const char *what(uint32_t magic) {
  switch (magic) {
    case M_SEM: return "semaphore";
    case M_EVENT: return "event";
    case M_COND: return "condition";
    case M_BARRIER: return "barrier";
    default: return "lock";
  }
}

/* {======================================================================
 * Common machinery
 * ======================================================================= */

/* The checker: a size and tag test is enough (Lua code cannot forge a
 * userdata) and much cheaper than luaL_checkudata on the hot path. */
static sync_ud *test(lua_State *L, int i, uint32_t magic) {
  sync_ud *u = (sync_ud *)lua_touserdata(L, i);
  if (u == NULL || lua_rawlen(L, i) != sizeof *u || u->magic != magic) return NULL;
  return u;
}

static sync_ud *check_open(lua_State *L, sync_ud *u) {
  if (u->seg == NULL) luaL_error(L, "attempt to use a closed %s", what(u->magic));
  return u;
}

#define CHECK(L, i, M, tname) \
  check_open(L, (u_ = test(L, i, M)) ? u_ : (luaL_typeerror(L, i, tname), u_))

/* Either kind of lock (for Condition and guards). */
static sync_ud *check_anylock(lua_State *L, int i) {
  sync_ud *u = test(L, i, M_LOCK);
  if (u == NULL) u = test(L, i, M_RLOCK);
  if (u == NULL) luaL_typeerror(L, i, "mproc.Lock or mproc.RLock");
  return check_open(L, u);
}

double mproc_sync_opttimeout(lua_State *L, int arg) {
  double t;
  if (lua_isnoneornil(L, arg)) return -1;
  t = luaL_checknumber(L, arg);
  if (!(t >= 0)) luaL_argerror(L, arg, "timeout must be >= 0");
  return t == HUGE_VAL ? -1 : t;
}

static sync_ud *newud(lua_State *L, uint32_t magic, const char *tname, int nuv) {
  sync_ud *u = (sync_ud *)lua_newuserdatauv(L, sizeof *u, nuv);
  memset(u, 0, sizeof *u);
  u->magic = magic;
  luaL_setmetatable(L, tname);
  return u;
}

/* Creates the object (on the stack top) in a slab; /dev/shm full or out
 * of memory raise OSError (through the class's _fail, sync.lua). */
static void *alloc_obj(lua_State *L, sync_ud *u, size_t size) {
  mproc_seg *seg;
  void *p = mproc_slab_alloc(size, &seg);
  if (p == NULL) mproc_raise_errno(L, -1, errno, "cannot create shared object");
  u->seg = seg;
  u->obj = p;
  return p;
}

static int ud_close(lua_State *L) {
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
  lua_pushfstring(L, "%s:%I:%I", seg->name, (lua_Integer)off, (lua_Integer)h->gen);
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
static int block(lua_State *L, lua_CFunction step, double timeout) {
  lua_pushcfunction(L, step);
  if (timeout < 0) lua_pushnil(L);
  else lua_pushnumber(L, timeout);
  return mproc_handover(L, 1, "_block", 2);
}

/* }====================================================================== */

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
  sync_ud *u = newud(L, recursive ? M_RLOCK : M_LOCK,
                     recursive ? "mproc.RLock" : "mproc.Lock", 1);
  mproc_lock *l = (mproc_lock *)alloc_obj(L, u, sizeof(mproc_lock));
  int rc = mproc_lock_init(l, recursive);
  if (rc) return mproc_raise_errno(L, -1, rc, "cannot create lock");
  return 1;
}

static int l_Lock(lua_State *L) { return lock_new(L, 0); }
static int l_RLock(lua_State *L) { return lock_new(L, 1); }

int mproc_sync_push_rlock(lua_State *L, mproc_seg *seg, mproc_lock *l) {
  sync_ud *u = newud(L, M_RLOCK, "mproc.RLock", 1);
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

static int lock_acquire_u(lua_State *L, sync_ud *u) {
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
    return block(L, lock_step, t);
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
  return block(L, lock_step, t);
}

static int l_lock_acquire(lua_State *L) {
  sync_ud *u_;
  return lock_acquire_u(L, CHECK(L, 1, M_LOCK, "mproc.Lock"));
}

static int l_rlock_acquire(lua_State *L) {
  sync_ud *u_;
  return lock_acquire_u(L, CHECK(L, 1, M_RLOCK, "mproc.RLock"));
}

/* The lock u is the object at index idx. */
static void lock_release_u(lua_State *L, int idx, sync_ud *u) {
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
  lock_release_u(L, 1, CHECK(L, 1, M_LOCK, "mproc.Lock"));
  return 0;
}

static int l_rlock_release(lua_State *L) {
  sync_ud *u_;
  lock_release_u(L, 1, CHECK(L, 1, M_RLOCK, "mproc.RLock"));
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
 * Guards: `local _ <close> = x:guard([timeout])`
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

static int l_lock_guard(lua_State *L) {
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
    lock_release_u(L, -1, u);
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
  u = newud(L, M_SEM, "mproc.Semaphore", 1);
  mproc_sem_init((mproc_sem *)alloc_obj(L, u, sizeof(mproc_sem)), (uint32_t)n, bounded);
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
  return block(L, sem_step, t);
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

/* {======================================================================
 * Event
 * ======================================================================= */

static int l_Event(lua_State *L) {
  sync_ud *u = newud(L, M_EVENT, "mproc.Event", 0);
  mproc_event_init((mproc_event *)alloc_obj(L, u, sizeof(mproc_event)));
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
  return block(L, event_step, t);
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
  u = newud(L, M_COND, "mproc.Condition", 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  c = (mproc_cond *)alloc_obj(L, u, sizeof(mproc_cond));
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

static int l_cond_acquire(lua_State *L) { return lock_acquire_u(L, to_lock(L)); }
static int l_cond_release(lua_State *L) { lock_release_u(L, 1, to_lock(L)); return 0; }
static int l_cond_guard(lua_State *L) { to_lock(L); return l_lock_guard(L); }

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
  u = newud(L, M_BARRIER, "mproc.Barrier", 1);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  rc = mproc_barrier_init((mproc_barrier *)alloc_obj(L, u, sizeof(mproc_barrier)),
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
      u = newud(L, types[i].magic, tname, 1);
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

int mproc_open_sync(lua_State *L) {
  static const luaL_Reg lock_m[] = {
    {"acquire", l_lock_acquire}, {"release", l_lock_release}, {"guard", l_lock_guard},
    {"close", ud_close}, {"_release_save", l_lock_release_save},
    {"_restore", l_lock_restore}, {"_is_mine", l_lock_is_mine}, {"_guard", l_any_guard},
    {NULL, NULL}
  };
  static const luaL_Reg rlock_m[] = {
    {"acquire", l_rlock_acquire}, {"release", l_rlock_release}, {"guard", l_lock_guard},
    {"close", ud_close}, {"_release_save", l_lock_release_save},
    {"_restore", l_lock_restore}, {"_is_mine", l_lock_is_mine}, {"_guard", l_any_guard},
    {NULL, NULL}
  };
  static const luaL_Reg lock_mt[] = {
    {"__gc", ud_close}, {"__close", ud_close}, {"__mproc_encode", l_lock_encode},
    {NULL, NULL}
  };
  static const luaL_Reg sem_m[] = {
    {"acquire", l_sem_acquire}, {"release", l_sem_release}, {"guard", l_sem_guard},
    {"get_value", l_sem_get_value}, {"close", ud_close}, {"_guard", l_any_guard},
    {NULL, NULL}
  };
  static const luaL_Reg sem_mt[] = {
    {"__gc", ud_close}, {"__close", ud_close}, {"__mproc_encode", l_sem_encode},
    {NULL, NULL}
  };
  static const luaL_Reg event_m[] = {
    {"set", l_event_set}, {"clear", l_event_clear}, {"is_set", l_event_is_set},
    {"wait", l_event_wait}, {"close", ud_close},
    {NULL, NULL}
  };
  static const luaL_Reg event_mt[] = {
    {"__gc", ud_close}, {"__close", ud_close}, {"__mproc_encode", l_event_encode},
    {NULL, NULL}
  };
  static const luaL_Reg cond_m[] = {
    {"acquire", l_cond_acquire}, {"release", l_cond_release}, {"guard", l_cond_guard},
    {"notify", l_cond_notify}, {"notify_all", l_cond_notify_all}, {"close", ud_close},
    {"_lock", l_cond_lock}, {"_enter", l_cond_enter}, {"_leave", l_cond_leave},
    {"_step", cond_step},
    {NULL, NULL}
  };
  static const luaL_Reg cond_mt[] = {
    {"__gc", ud_close}, {"__close", ud_close}, {"__mproc_encode", l_cond_encode},
    {NULL, NULL}
  };
  static const luaL_Reg barrier_m[] = {
    {"reset", l_barrier_reset}, {"abort", l_barrier_abort}, {"close", ud_close},
    {"_arrive", l_barrier_arrive}, {"_pass", l_barrier_pass}, {"_step", barrier_step},
    {"_info", l_barrier_info}, {"_set_action", l_barrier_set_action},
    {"_encode", l_barrier_encode},
    {NULL, NULL}
  };
  static const luaL_Reg barrier_mt[] = {
    {"__gc", ud_close}, {"__close", ud_close},
    {NULL, NULL}
  };
  static const luaL_Reg guard_mt[] = {
    {"__close", l_guard_close},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"Lock", l_Lock}, {"RLock", l_RLock}, {"Semaphore", l_Semaphore},
    {"BoundedSemaphore", l_BoundedSemaphore}, {"Event", l_Event},
    {"Condition", l_Condition}, {"Barrier", l_Barrier}, {"sync_attach", l_sync_attach},
    {NULL, NULL}
  };
  mproc_newclass(L, "mproc.Lock", lock_m, lock_mt);
  mproc_newclass(L, "mproc.RLock", rlock_m, lock_mt);
  add_died_variant(L, "mproc.Lock");
  add_died_variant(L, "mproc.RLock");
  mproc_newclass(L, "mproc.Semaphore", sem_m, sem_mt);
  mproc_newclass(L, "mproc.Event", event_m, event_mt);
  mproc_indexed_class(L, "mproc.Condition", cond_m, cond_mt, l_cond_index, NULL);
  lua_pop(L, 1);
  mproc_indexed_class(L, "mproc.Barrier", barrier_m, barrier_mt, l_barrier_index, NULL);
  lua_pop(L, 1);
  mproc_newclass(L, "mproc.Guard", NULL, guard_mt);
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
