/*
 * src/lua/sync.h: what the bindings of sync.c share and nothing else: the
 * handle userdata of every shared object (src/lua/sync.c), the locks,
 * semaphores and guards (src/lua/lock.c), the events, conditions and
 * barriers (src/lua/cond.c).  What src/lua/shared.c uses is in binding.h.
 */
#ifndef LMPROC_SYNC_H
#define LMPROC_SYNC_H

#include <stdint.h>
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
static inline const char *what(uint32_t magic) {
  switch (magic) {
    case M_SEM: return "semaphore";
    case M_EVENT: return "event";
    case M_COND: return "condition";
    case M_BARRIER: return "barrier";
    default: return "lock";
  }
}

/* The checker: a size and tag test is enough (Lua code cannot forge a
 * userdata) and much cheaper than luaL_checkudata on the hot path (inline:
 * the split into files costs it no call). */
static inline sync_ud *test(lua_State *L, int i, uint32_t magic) {
  sync_ud *u = (sync_ud *)lua_touserdata(L, i);
  if (u == NULL || lua_rawlen(L, i) != sizeof *u || u->magic != magic) return NULL;
  return u;
}

static inline sync_ud *check_open(lua_State *L, sync_ud *u) {
  if (u->seg == NULL) luaL_error(L, "attempt to use a closed %s", what(u->magic));
  return u;
}

#define CHECK(L, i, M, tname) \
  check_open(L, (u_ = test(L, i, M)) ? u_ : (luaL_typeerror(L, i, tname), u_))

/* Either kind of lock (for Condition and guards). */
static inline sync_ud *check_anylock(lua_State *L, int i) {
  sync_ud *u = test(L, i, M_LOCK);
  if (u == NULL) u = test(L, i, M_RLOCK);
  if (u == NULL) luaL_typeerror(L, i, "mproc.Lock or mproc.RLock");
  return check_open(L, u);
}

/* Hidden: none of these leave the module, and a call between the files
 * stays a direct one (lock.acquire's fast path goes through lock.c's
 * mproc_sync_lock_acquire, which the PLT would slow down). */
#define SYNC_INTERNAL __attribute__((visibility("hidden")))

/* src/lua/sync.c: the common machinery. */
SYNC_INTERNAL sync_ud *mproc_sync_newud(lua_State *L, uint32_t magic, const char *tname,
                                        int nuv);
SYNC_INTERNAL void *mproc_sync_alloc(lua_State *L, sync_ud *u, size_t size);
SYNC_INTERNAL int mproc_sync_close(lua_State *L);
SYNC_INTERNAL int mproc_sync_block(lua_State *L, lua_CFunction step, double timeout);

/* src/lua/lock.c: what a Condition does through its lock. */
SYNC_INTERNAL int mproc_sync_lock_acquire(lua_State *L, sync_ud *u);
SYNC_INTERNAL void mproc_sync_lock_release(lua_State *L, int idx, sync_ud *u);
SYNC_INTERNAL int mproc_sync_lock_guard(lua_State *L);

/* The openers of lock.c and cond.c, called by mproc_open_sync. */
SYNC_INTERNAL int mproc_open_lock(lua_State *L);
SYNC_INTERNAL int mproc_open_cond(lua_State *L);

#endif
