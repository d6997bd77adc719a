/*
 * src/lua/shared.c: Lua bindings for shared data: Value, Array (typed, in slab
 * segments, each with an optional embedded RLock) and SharedMemory (a
 * segment of its own, attachable by name from any process of the user).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "binding.h"


#define M_VALUE 0x554c4156u
#define M_ARRAY 0x59415241u
#define M_SHM   0x204d4853u

/* {======================================================================
 * Element types
 * ======================================================================= */

enum { T_I8, T_U8, T_I16, T_U16, T_I32, T_U32, T_I64, T_U64, T_F32, T_F64, T_BOOL, T_N };

static const struct {
  const char *name;
  const char *codes;   /* Python typecodes accepted as aliases */
  unsigned size;
} types[T_N] = {
  {"int8", "b", 1}, {"uint8", "B", 1}, {"int16", "h", 2}, {"uint16", "H", 2},
  {"int32", "i", 4}, {"uint32", "I", 4}, {"int64", "lq", 8}, {"uint64", "LQ", 8},
  {"float", "f", 4}, {"double", "d", 8}, {"bool", "?", 1},
};

static int check_type(lua_State *L, int arg) {
  const char *s = luaL_checkstring(L, arg);
  int i;
  for (i = 0; i < T_N; i++)
    if (strcmp(s, types[i].name) == 0 || (s[0] && !s[1] && strchr(types[i].codes, s[0])))
      return i;
  return luaL_argerror(L, arg, lua_pushfstring(L, "unknown type '%s'", s));
}

#define LD(T, p)     __atomic_load_n((T *)(void *)(p), __ATOMIC_RELAXED)
#define ST(T, p, v)  __atomic_store_n((T *)(void *)(p), (T)(v), __ATOMIC_RELAXED)

static void push_elem(lua_State *L, int t, const unsigned char *p) {
  switch (t) {
    case T_I8: lua_pushinteger(L, LD(const int8_t, p)); break;
    case T_U8: lua_pushinteger(L, LD(const uint8_t, p)); break;
    case T_I16: lua_pushinteger(L, LD(const int16_t, p)); break;
    case T_U16: lua_pushinteger(L, LD(const uint16_t, p)); break;
    case T_I32: lua_pushinteger(L, LD(const int32_t, p)); break;
    case T_U32: lua_pushinteger(L, LD(const uint32_t, p)); break;
    case T_I64: lua_pushinteger(L, LD(const int64_t, p)); break;
    case T_U64: lua_pushinteger(L, (lua_Integer)LD(const uint64_t, p)); break;
    case T_F32: {
      uint32_t b = LD(const uint32_t, p);
      float f;
      memcpy(&f, &b, sizeof f);
      lua_pushnumber(L, f);
      break;
    }
    case T_F64: {
      uint64_t b = LD(const uint64_t, p);
      double d;
      memcpy(&d, &b, sizeof d);
      lua_pushnumber(L, d);
      break;
    }
    default: lua_pushboolean(L, LD(const uint8_t, p) != 0); break;
  }
}

/* The bits to store for the Lua value at `idx` (raises an argument error
 * for `arg` when it does not fit the type; `item` > 0 names a list item). */
static void bad_value(lua_State *L, int arg, lua_Integer item, const char *msg) {
  if (item > 0) msg = lua_pushfstring(L, "item %I: %s", (LUAI_UACINT)item, msg);
  luaL_argerror(L, arg, msg);
}

static uint64_t to_bits_at(lua_State *L, int idx, int t, int arg, lua_Integer item) {
  static const lua_Integer lo[] = { -128, 0, -32768, 0, -2147483647 - 1, 0 };
  static const lua_Integer hi[] = { 127, 255, 32767, 65535, 2147483647, 4294967295 };
  int ok;
  if (t == T_BOOL) {
    if (!lua_isboolean(L, idx))
      bad_value(L, arg, item, lua_pushfstring(L, "boolean expected, got %s",
                                              luaL_typename(L, idx)));
    return (uint64_t)lua_toboolean(L, idx);
  }
  if (t == T_F32 || t == T_F64) {
    double d = (double)lua_tonumberx(L, idx, &ok);
    if (!ok || lua_type(L, idx) != LUA_TNUMBER)
      bad_value(L, arg, item, lua_pushfstring(L, "number expected, got %s",
                                              luaL_typename(L, idx)));
    if (t == T_F32) {
      float f = (float)d;
      uint32_t b;
      memcpy(&b, &f, sizeof b);
      return b;
    } else {
      uint64_t b;
      memcpy(&b, &d, sizeof b);
      return b;
    }
  } else {
    lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok || lua_type(L, idx) != LUA_TNUMBER) {
      if (lua_type(L, idx) == LUA_TNUMBER)
        bad_value(L, arg, item, "number has no integer representation");
      bad_value(L, arg, item, lua_pushfstring(L, "number expected, got %s",
                                              luaL_typename(L, idx)));
    }
    if (t < T_I64 && (v < lo[t] || v > hi[t]))
      bad_value(L, arg, item, lua_pushfstring(L, "value out of range for %s", types[t].name));
    return (uint64_t)v;
  }
}

#define to_bits(L, arg, t) to_bits_at(L, arg, t, arg, 0)

static void store_bits(int t, unsigned char *p, uint64_t b) {
  switch (types[t].size) {
    case 1: ST(uint8_t, p, b); break;
    case 2: ST(uint16_t, p, b); break;
    case 4: ST(uint32_t, p, b); break;
    default: ST(uint64_t, p, b); break;
  }
}

/* }====================================================================== */

/* {======================================================================
 * Value and Array objects
 * ======================================================================= */

typedef struct shv {
  mproc_objhdr h;
  uint32_t type, haslock;
  uint64_t n;                    /* elements */
  unsigned char pad[64 - sizeof(mproc_objhdr) - 16];
  mproc_lock lock;               /* at offset 64: attachable as an RLock */
} shv;

#define DATA_OFF (((sizeof(shv)) + 63) & ~(size_t)63)

typedef struct shv_ud {
  uint32_t magic;
  int type;
  mproc_seg *seg;                /* NULL when closed */
  shv *obj;
  unsigned char *data;
  lua_Integer n;
  unsigned size;                 /* element size */
} shv_ud;

static shv_ud *shv_test(lua_State *L, int i, uint32_t magic) {
  shv_ud *u = (shv_ud *)lua_touserdata(L, i);
  if (u == NULL || lua_rawlen(L, i) != sizeof *u || u->magic != magic) return NULL;
  return u;
}

static shv_ud *shv_check(lua_State *L, int i, uint32_t magic) {
  shv_ud *u = shv_test(L, i, magic);
  if (u == NULL) luaL_typeerror(L, i, magic == M_VALUE ? "mproc.Value" : "mproc.Array");
  if (u->seg == NULL)
    luaL_error(L, "attempt to use a closed %s", magic == M_VALUE ? "value" : "array");
  return u;
}

static shv_ud *shv_any(lua_State *L, int i) {
  shv_ud *u = shv_test(L, i, M_VALUE);
  return u ? shv_check(L, i, M_VALUE) : shv_check(L, i, M_ARRAY);
}

static shv_ud *shv_newud(lua_State *L, uint32_t magic) {
  shv_ud *u = (shv_ud *)lua_newuserdatauv(L, sizeof *u, 1);
  memset(u, 0, sizeof *u);
  u->magic = magic;
  luaL_setmetatable(L, magic == M_VALUE ? "mproc.Value" : "mproc.Array");
  return u;
}

static void shv_bind(shv_ud *u, mproc_seg *seg, shv *v) {
  u->seg = seg;
  u->obj = v;
  u->type = (int)v->type;
  u->n = (lua_Integer)v->n;
  u->size = types[v->type].size;
  u->data = (unsigned char *)v + DATA_OFF;
}

/* opts (table or nil) at `arg` of fname: -> lock wanted.  The errors name
 * fname themselves: LuaJIT's luaL_argerror does not find a C function's
 * name in package.loaded (it would say '?'). */
static int want_lock(lua_State *L, int arg, const char *fname) {
  int lock = 1;
  if (lua_isnoneornil(L, arg)) return 1;
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, arg)) {   /* a misspelt option must not pass silently */
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "lock") != 0)
      luaL_error(L, "bad argument #%d to '%s' (unknown option '%s'; the only one is 'lock')",
                 arg, fname, luaL_tolstring(L, -1, NULL));
  }
  if (lua_getfield(L, arg, "lock") != LUA_TNIL) {
    if (!lua_isboolean(L, -1))
      luaL_error(L, "bad argument #%d to '%s' ('lock' must be a boolean)", arg, fname);
    lock = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return lock;
}

static shv *shv_create(lua_State *L, shv_ud *u, int t, lua_Integer n, int lock, int kind) {
  mproc_seg *seg;
  size_t bytes = DATA_OFF + (size_t)n * types[t].size;
  shv *v = (shv *)mproc_slab_alloc(bytes, &seg);
  if (v == NULL) mproc_raise_errno(L, -1, errno, "cannot create shared object");
  v->type = (uint32_t)t;
  v->n = (uint64_t)n;
  v->haslock = (uint32_t)lock;
  if (lock) {
    int rc = mproc_lock_init(&v->lock, 1);
    if (rc) {
      mproc_seg_release(seg);
      mproc_raise_errno(L, -1, rc, "cannot create lock");
    }
  }
  mproc_obj_init(&v->h, kind, bytes);
  shv_bind(u, seg, v);
  return v;
}

/* Value(type, x [, {lock = bool}]) */
static int l_Value(lua_State *L) {
  int t = check_type(L, 1);
  int lock = want_lock(L, 3, "Value");
  uint64_t bits = lua_isnoneornil(L, 2) ? 0 : to_bits(L, 2, t);
  shv_ud *u = shv_newud(L, M_VALUE);
  shv_create(L, u, t, 1, lock, MPROC_K_VALUE);
  store_bits(t, u->data, bits);
  return 1;
}

/* Array(type, n | list [, {lock = bool}]) */
static int l_Array(lua_State *L) {
  int t = check_type(L, 1);
  int lock = want_lock(L, 3, "Array");
  lua_Integer n, i;
  shv_ud *u;
  if (lua_type(L, 2) == LUA_TTABLE) {
    n = (lua_Integer)lua_rawlen(L, 2);
    for (i = 1; i <= n; i++) {   /* check every item before creating */
      lua_rawgeti(L, 2, i);
      to_bits_at(L, -1, t, 2, i);
      lua_pop(L, 1);
    }
  } else {
    n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0 && n <= ((lua_Integer)1 << 40) / types[t].size, 2,
                  "size out of range");
  }
  u = shv_newud(L, M_ARRAY);
  shv_create(L, u, t, n, lock, MPROC_K_ARRAY);
  if (lua_type(L, 2) == LUA_TTABLE) {
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, 2, i);
      store_bits(t, u->data + (size_t)(i - 1) * u->size, to_bits_at(L, -1, t, 2, i));
      lua_pop(L, 1);
    }
  }
  return 1;
}

static int shv_close(lua_State *L) {
  shv_ud *u = (shv_ud *)lua_touserdata(L, 1);
  if (u != NULL && lua_rawlen(L, 1) == sizeof *u && u->seg != NULL) {
    mproc_seg *s = u->seg;
    u->seg = NULL;
    u->obj = NULL;
    u->data = NULL;
    mproc_seg_release(s);
  }
  return 0;
}

static int l_value_get(lua_State *L) {
  shv_ud *u = shv_check(L, 1, M_VALUE);
  push_elem(L, u->type, u->data);
  return 1;
}

static int l_value_set(lua_State *L) {
  shv_ud *u = shv_check(L, 1, M_VALUE);
  store_bits(u->type, u->data, to_bits(L, 2, u->type));
  return 0;
}

/* get_lock() -> the embedded RLock (the same object every time) */
static int l_get_lock(lua_State *L) {
  shv_ud *u = shv_any(L, 1);
  if (!u->obj->haslock)
    return luaL_error(L, "this %s has no lock (created with lock = false)",
                      u->magic == M_VALUE ? "Value" : "Array");
  if (lua_getiuservalue(L, 1, 1) == LUA_TUSERDATA) return 1;
  lua_pop(L, 1);
  mproc_sync_push_rlock(L, u->seg, &u->obj->lock);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 1, 1);
  return 1;
}

#define ADD_INT(T) do { \
    T r = __atomic_add_fetch((T *)(void *)p, (T)d, __ATOMIC_SEQ_CST); \
    lua_pushinteger(L, (lua_Integer)r); \
  } while (0)

/* add(n) -> new value, atomically, without the lock */
static int l_value_add(lua_State *L) {
  shv_ud *u = shv_check(L, 1, M_VALUE);
  unsigned char *p = u->data;
  if (u->type == T_BOOL) return luaL_error(L, "cannot add to a bool Value");
  if (u->type == T_F32 || u->type == T_F64) {
    double d = luaL_checknumber(L, 2);
    if (u->type == T_F64) {
      uint64_t o = LD(uint64_t, p), nb;
      double x;
      do {
        memcpy(&x, &o, sizeof x);
        x += d;
        memcpy(&nb, &x, sizeof nb);
      } while (!__atomic_compare_exchange_n((uint64_t *)(void *)p, &o, nb, 0,
                                            __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
      lua_pushnumber(L, x);
    } else {
      uint32_t o = LD(uint32_t, p), nb;
      float x;
      do {
        memcpy(&x, &o, sizeof x);
        x = (float)(x + d);
        memcpy(&nb, &x, sizeof nb);
      } while (!__atomic_compare_exchange_n((uint32_t *)(void *)p, &o, nb, 0,
                                            __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
      lua_pushnumber(L, x);
    }
    return 1;
  } else {
    /* wraps around like the machine type; computed unsigned (no UB) */
    uint64_t d = (uint64_t)luaL_checkinteger(L, 2);
    switch (u->type) {
      case T_I8: { uint8_t r = __atomic_add_fetch((uint8_t *)p, (uint8_t)d, __ATOMIC_SEQ_CST);
                   lua_pushinteger(L, (int8_t)r); break; }
      case T_U8: ADD_INT(uint8_t); break;
      case T_I16: { uint16_t r = __atomic_add_fetch((uint16_t *)(void *)p, (uint16_t)d,
                                                   __ATOMIC_SEQ_CST);
                    lua_pushinteger(L, (int16_t)r); break; }
      case T_U16: ADD_INT(uint16_t); break;
      case T_I32: { uint32_t r = __atomic_add_fetch((uint32_t *)(void *)p, (uint32_t)d,
                                                   __ATOMIC_SEQ_CST);
                    lua_pushinteger(L, (int32_t)r); break; }
      case T_U32: ADD_INT(uint32_t); break;
      default: ADD_INT(uint64_t); break;
    }
    return 1;
  }
}

/* cas(old, new) -> true when the value was `old` (compared as stored) and
 * is now `new` */
static int l_value_cas(lua_State *L) {
  shv_ud *u = shv_check(L, 1, M_VALUE);
  uint64_t o = to_bits(L, 2, u->type), nb = to_bits(L, 3, u->type);
  unsigned char *p = u->data;
  int ok;
  switch (u->size) {
    case 1: { uint8_t e = (uint8_t)o;
              ok = __atomic_compare_exchange_n(p, &e, (uint8_t)nb, 0, __ATOMIC_SEQ_CST,
                                               __ATOMIC_SEQ_CST); break; }
    case 2: { uint16_t e = (uint16_t)o;
              ok = __atomic_compare_exchange_n((uint16_t *)(void *)p, &e, (uint16_t)nb, 0,
                                               __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); break; }
    case 4: { uint32_t e = (uint32_t)o;
              ok = __atomic_compare_exchange_n((uint32_t *)(void *)p, &e, (uint32_t)nb, 0,
                                               __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); break; }
    default: { uint64_t e = o;
               ok = __atomic_compare_exchange_n((uint64_t *)(void *)p, &e, nb, 0,
                                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); break; }
  }
  lua_pushboolean(L, ok);
  return 1;
}

/* v.value, then the methods (upvalue 1); upvalue 2 is the string "value" */
static shv_ud *trusted(lua_State *L, const char *what);

static int l_value_index(lua_State *L) {
  if (lua_rawequal(L, 2, lua_upvalueindex(2))) {
    shv_ud *u = trusted(L, "value");
    push_elem(L, u->type, u->data);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

static int l_value_newindex(lua_State *L) {
  shv_ud *u = trusted(L, "value");
  if (!lua_rawequal(L, 2, lua_upvalueindex(1)))
    return luaL_error(L, "cannot set field '%s' of a Value (only 'value')",
                      luaL_tolstring(L, 2, NULL));
  store_bits(u->type, u->data, to_bits(L, 3, u->type));
  return 0;
}

static int l_value_encode(lua_State *L) {
  shv_ud *u = shv_check(L, 1, M_VALUE);
  return mproc_sync_encode(L, "mproc.Value", u->seg, u->obj);
}

static lua_Integer arr_index(lua_State *L, shv_ud *u, int arg) {
  int isnum;
  lua_Integer i = lua_tointegerx(L, arg, &isnum);
  if (!isnum) luaL_error(L, "array index must be an integer, got %s", luaL_typename(L, arg));
  if (i < 1 || i > u->n)
    luaL_error(L, "array index %I out of range (1..%I)", (LUAI_UACINT)i, (LUAI_UACINT)u->n);
  return i;
}

/* The metamethods below are reached only through the metatable, which
 * __metatable hides from Lua code: argument 1 is always one of ours.  They
 * skip the type check: element access is the hot path of an Array. */
static shv_ud *trusted(lua_State *L, const char *what) {
  shv_ud *u = (shv_ud *)lua_touserdata(L, 1);
  if (u->seg == NULL) luaL_error(L, "attempt to use a closed %s", what);
  return u;
}

/* a[i], then the methods (upvalue 1) */
static int l_array_index(lua_State *L) {
  int isint;
  lua_Integer i = lua_tointegerx(L, 2, &isint);
  if (isint) {
    shv_ud *u = trusted(L, "array");
    if (i < 1 || i > u->n) arr_index(L, u, 2);   /* raises */
    push_elem(L, u->type, u->data + (size_t)(i - 1) * u->size);
    return 1;
  }
  if (lua_type(L, 2) == LUA_TNUMBER) arr_index(L, trusted(L, "array"), 2);
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

static int l_array_newindex(lua_State *L) {
  shv_ud *u = trusted(L, "array");
  lua_Integer i = arr_index(L, u, 2);
  store_bits(u->type, u->data + (size_t)(i - 1) * u->size, to_bits(L, 3, u->type));
  return 0;
}

static int l_array_len(lua_State *L) {
  lua_pushinteger(L, trusted(L, "array")->n);
  return 1;
}

static int l_array_totable(lua_State *L) {
  shv_ud *u = shv_check(L, 1, M_ARRAY);
  lua_Integer i;
  lua_createtable(L, u->n > INT32_MAX ? 0 : (int)u->n, 0);
  for (i = 0; i < u->n; i++) {
    push_elem(L, u->type, u->data + (size_t)i * u->size);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int l_array_fill(lua_State *L) {
  shv_ud *u = shv_check(L, 1, M_ARRAY);
  uint64_t b = to_bits(L, 2, u->type);
  lua_Integer i;
  for (i = 0; i < u->n; i++) store_bits(u->type, u->data + (size_t)i * u->size, b);
  return 0;
}

static int l_array_encode(lua_State *L) {
  shv_ud *u = shv_check(L, 1, M_ARRAY);
  return mproc_sync_encode(L, "mproc.Array", u->seg, u->obj);
}

static int l_shv_type(lua_State *L) {
  lua_pushstring(L, types[shv_any(L, 1)->type].name);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * SharedMemory
 * ======================================================================= */

typedef struct shm_ud {
  uint32_t magic;
  mproc_seg *seg;            /* NULL when closed */
  unsigned char *data;
  size_t size;
  char name[64];             /* without the leading '/' */
} shm_ud;

static shm_ud *shm_check(lua_State *L, int i, int open) {
  shm_ud *u = (shm_ud *)lua_touserdata(L, i);
  if (u == NULL || lua_rawlen(L, i) != sizeof *u || u->magic != M_SHM)
    luaL_typeerror(L, i, "mproc.SharedMemory");
  if (open && u->seg == NULL) luaL_error(L, "attempt to use a closed shared memory");
  return u;
}

/* SharedMemory{create = true, size = n [, name = s]} | {name = s}
 * -> true, shm | false, kind, message [, errno] */
static int l_SharedMemory(lua_State *L) {
  int create;
  const char *name = NULL;
  lua_Integer size = 0;
  shm_ud *u;
  mproc_seg *seg;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "create");
  create = lua_toboolean(L, -1);
  if (lua_getfield(L, 1, "name") != LUA_TNIL) {
    name = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING || name[0] == '\0' || strchr(name + 1, '/'))
      luaL_argerror(L, 1, "'name' must be a non-empty string without '/'");
  }
  if (lua_getfield(L, 1, "size") != LUA_TNIL || create) {
    int isnum;
    size = lua_tointegerx(L, -1, &isnum);
    if (!isnum || size < 1 || size > ((lua_Integer)1 << 44))
      luaL_argerror(L, 1, "'size' must be a positive integer");
  }
  if (!create && name == NULL) luaL_argerror(L, 1, "'name' expected (or create = true)");
  u = (shm_ud *)lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  u->magic = M_SHM;
  luaL_setmetatable(L, "mproc.SharedMemory");
  if (create) seg = mproc_seg_create(MPROC_SEG_USER, (size_t)size, name);
  else seg = mproc_seg_attach(name);
  if (seg == NULL) {
    int err = errno;
    if (!create && err == ENOENT)
      return mproc_fail(L, "OSError", "no shared memory named '%s'", name);
    return mproc_fail_errno(L, err, create ? "cannot create shared memory"
                                           : "cannot attach shared memory");
  }
  if (seg->kind != MPROC_SEG_USER) {
    mproc_seg_release(seg);
    return mproc_fail(L, "OSError", "'%s' is not a SharedMemory segment", name);
  }
  u->seg = seg;
  u->data = mproc_seg_data(seg);
  u->size = mproc_seg_datasize(seg);
  snprintf(u->name, sizeof u->name, "%s", seg->name + 1);
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

static size_t shm_pos(lua_State *L, shm_ud *u, int arg, lua_Integer def) {
  lua_Integer p = luaL_optinteger(L, arg, def);
  if (p < 1 || (lua_Unsigned)p > (lua_Unsigned)u->size + 1)
    luaL_argerror(L, arg, lua_pushfstring(L, "position %I out of range (1..%I)",
                                          (LUAI_UACINT)p, (LUAI_UACINT)u->size));
  return (size_t)p - 1;
}

/* write(pos, s) */
static int l_shm_write(lua_State *L) {
  shm_ud *u = shm_check(L, 1, 1);
  size_t off = shm_pos(L, u, 2, 1), len;
  const char *s = luaL_checklstring(L, 3, &len);
  if (len > u->size - off)
    luaL_argerror(L, 3, lua_pushfstring(L, "%I bytes at position %I run past the end (%I)",
                                        (LUAI_UACINT)len, (LUAI_UACINT)(off + 1),
                                        (LUAI_UACINT)u->size));
  memcpy(u->data + off, s, len);
  return 0;
}

/* read([pos [, len]]) -> string */
static int l_shm_read(lua_State *L) {
  shm_ud *u = shm_check(L, 1, 1);
  size_t off = shm_pos(L, u, 2, 1);
  lua_Integer len = luaL_optinteger(L, 3, (lua_Integer)(u->size - off));
  if (len < 0 || (lua_Unsigned)len > u->size - off)
    luaL_argerror(L, 3, lua_pushfstring(L, "length %I out of range (0..%I)",
                                        (LUAI_UACINT)len, (LUAI_UACINT)(u->size - off)));
  lua_pushlstring(L, (const char *)u->data + off, (size_t)len);
  return 1;
}

static int l_shm_close(lua_State *L) {
  shm_ud *u = (shm_ud *)lua_touserdata(L, 1);
  if (u != NULL && lua_rawlen(L, 1) == sizeof *u && u->magic == M_SHM && u->seg != NULL) {
    mproc_seg *s = u->seg;
    u->seg = NULL;
    u->data = NULL;
    mproc_seg_release(s);
  }
  return 0;
}

/* unlink(): removes the name now (also after close) */
static int l_shm_unlink(lua_State *L) {
  shm_ud *u = shm_check(L, 1, 0);
  char full[80];
  if (u->seg != NULL) {
    if (mproc_seg_unlink(u->seg) != 0 && errno != ENOENT)
      return mproc_raise_errno(L, 1, errno, "cannot unlink shared memory");
    return 0;
  }
  snprintf(full, sizeof full, "/%s", u->name);
  shm_unlink(full);   /* already gone when the last holder closed it */
  return 0;
}

/* tracker_pid() -> the segment tracker's pid, or 0 before one started */
static int l_tracker_pid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mproc_tracker_pid());
  return 1;
}

static int l_shm_closed(lua_State *L) {
  lua_pushboolean(L, shm_check(L, 1, 0)->seg == NULL);
  return 1;
}

static int l_shm_encode(lua_State *L) {
  shm_ud *u = shm_check(L, 1, 1);
  lua_pushliteral(L, "mproc.SharedMemory");
  lua_pushstring(L, u->name);
  return 2;
}

static int l_shm_index(lua_State *L) {
  const char *k;
  shm_ud *u;
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  if (lua_type(L, 2) != LUA_TSTRING) return 1;
  k = lua_tostring(L, 2);
  u = shm_check(L, 1, 0);
  if (strcmp(k, "name") == 0) lua_pushstring(L, u->name);
  else if (strcmp(k, "size") == 0) lua_pushinteger(L, (lua_Integer)u->size);
  else lua_pushnil(L);
  return 1;
}

/* }====================================================================== */

/* shared_attach(typename, handle) -> true, object | false, kind, message */
static int l_shm_attach(lua_State *L) {
  const char *tname = luaL_checkstring(L, 1);
  const char *handle = luaL_checkstring(L, 2);
  int isval = strcmp(tname, "mproc.Value") == 0;
  mproc_seg *seg;
  shv *v;
  shv_ud *u;
  if (!isval && strcmp(tname, "mproc.Array") != 0)
    return luaL_argerror(L, 1, "unknown shared type");
  lua_getfield(L, LUA_REGISTRYINDEX, "mproc.sync.objects");
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_concat(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL) {
    shv_ud *c = (shv_ud *)lua_touserdata(L, -1);
    if (c != NULL && c->seg != NULL) {     /* unless closed since */
      lua_pushboolean(L, 1);
      lua_insert(L, -2);
      return 2;
    }
  }
  lua_pop(L, 2);
  v = (shv *)mproc_sync_attach(L, handle, isval ? MPROC_K_VALUE : MPROC_K_ARRAY,
                               DATA_OFF, &seg);
  if (v == NULL) return lua_gettop(L) - 2;
  if (v->type >= T_N || DATA_OFF + v->n * types[v->type].size > v->h.size ||
      (isval && v->n != 1)) {
    mproc_seg_release(seg);
    return mproc_fail(L, "OSError", "handle '%s' does not name a live shared object", handle);
  }
  lua_pushboolean(L, 1);
  u = shv_newud(L, isval ? M_VALUE : M_ARRAY);
  shv_bind(u, seg, v);
  return 2;
}

/* getmetatable(x) gives {__name = tname}: Lua code cannot call the
 * trusting metamethods on something else. */
static void protect(lua_State *L, const char *tname) {
  lua_createtable(L, 0, 1);
  lua_pushstring(L, tname);
  lua_setfield(L, -2, "__name");
  lua_setfield(L, -2, "__metatable");
}

int mproc_open_shm(lua_State *L) {
  static const luaL_Reg value_m[] = {
    {"get", l_value_get}, {"set", l_value_set}, {"get_lock", l_get_lock},
    {"add", l_value_add}, {"cas", l_value_cas}, {"close", shv_close},
    {"_type", l_shv_type},
    {NULL, NULL}
  };
  static const luaL_Reg array_m[] = {
    {"totable", l_array_totable}, {"fill", l_array_fill}, {"get_lock", l_get_lock},
    {"close", shv_close}, {"_type", l_shv_type},
    {NULL, NULL}
  };
  static const luaL_Reg shm_m[] = {
    {"write", l_shm_write}, {"read", l_shm_read}, {"close", l_shm_close},
    {"unlink", l_shm_unlink}, {"_closed", l_shm_closed},
    {NULL, NULL}
  };
  static const luaL_Reg value_meta[] = {
    {"__gc", shv_close}, {"__close", shv_close}, {"__mproc_encode", l_value_encode},
    {NULL, NULL}
  };
  static const luaL_Reg array_meta[] = {
    {"__gc", shv_close}, {"__close", shv_close}, {"__mproc_encode", l_array_encode},
    {"__len", l_array_len}, {"__newindex", l_array_newindex},
    {NULL, NULL}
  };
  static const luaL_Reg shm_meta[] = {
    {"__gc", l_shm_close}, {"__close", l_shm_close}, {"__mproc_encode", l_shm_encode},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"Value", l_Value}, {"Array", l_Array}, {"SharedMemory", l_SharedMemory},
    {"shared_attach", l_shm_attach}, {"tracker_pid", l_tracker_pid},
    {NULL, NULL}
  };
  mproc_indexed_class(L, "mproc.Value", value_m, value_meta, l_value_index, "value");
  lua_pushliteral(L, "value");
  lua_pushcclosure(L, l_value_newindex, 1);
  lua_setfield(L, -2, "__newindex");
  protect(L, "mproc.Value");
  lua_pop(L, 1);
  mproc_indexed_class(L, "mproc.Array", array_m, array_meta, l_array_index, NULL);
  protect(L, "mproc.Array");
  lua_pop(L, 1);
  mproc_indexed_class(L, "mproc.SharedMemory", shm_m, shm_meta, l_shm_index, NULL);
  lua_pop(L, 1);
  mproc_setfuncs(L, funcs);
  mproc_shm_init();
  return 0;
}
