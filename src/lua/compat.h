/*
 * compat.h: one source for Lua 5.1, LuaJIT 2.1, 5.3 and 5.4.  The bindings
 * are written against the 5.4 API; every binding includes this (through
 * binding.h) instead of lua.h and lauxlib.h.
 *
 * Before 5.2 most of the 5.3 API comes from Debian's lua-compat53-dev
 * (compat-5.3.h, included, never copied).  What it lacks, or what we want
 * done our way, is here and in compat.c:
 * - 5.4's numbered user values (lua_newuserdatauv...): emulated with one
 *   user value (5.3) or environment table (5.1), a table holding the n
 *   values;
 * - luaL_typeerror and luaL_argexpected, public only since 5.4;
 * - "%I" (a lua_Integer) in lua_pushfstring and luaL_error, unknown before
 *   5.3: our formatter replaces theirs there;
 * - lua_upvalueid, missing from plain 5.1 (LuaJIT has it, and
 *   lua_upvaluejoin): upvalues shared between functions are then sent as
 *   copies (MPROC_UPVALUE_JOIN tells the codec);
 * - the FILE * of an io file (luaL_Stream since 5.2, FILE ** before);
 * - MPROC_LUA_VERSION, the VM the module is built for (core.lua_version).
 * Yields across a C call (lua_callk) exist only since 5.2: how mproc.c's
 * mproc_handover does without them is explained there (MPROC_NO_CALLK).
 */
#ifndef MPROC_COMPAT_H
#define MPROC_COMPAT_H

#include <stdio.h>
#include "lua.h"
#include "lauxlib.h"

#if LUA_VERSION_NUM < 502
/* LuaJIT's lua.h defines LUA_OK (one of its 5.2 extensions), 5.1's does
 * not; luajit.h itself is not always on the include path. */
#  if defined(LUA_OK)
#    define MPROC_LUAJIT 1
#  endif
#  if defined(__has_include)
#    if __has_include(<compat-5.3.h>)
#      include <compat-5.3.h>
#    else  /* Debian keeps it beside 5.1's headers, not LuaJIT's */
#      include <lua5.1/compat-5.3.h>
#    endif
#  else
#    include <compat-5.3.h>
#  endif
#  define MPROC_NO_CALLK 1
/* Every number is a float before 5.3: an integral one is sent as an
 * integer (what compat-5.3 says too), but not -0.0, whose sign would be
 * lost, nor one beyond lua_Integer (whose cast is undefined). */
#  include <math.h>
#  undef lua_isinteger
#  define lua_isinteger mproc_isinteger
static inline int mproc_isinteger(lua_State *L, int idx) {
  lua_Number n, lim = ldexp(1.0, (int)sizeof(lua_Integer) * 8 - 1);
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  n = lua_tonumber(L, idx);
  return n >= -lim && n < lim && n == (lua_Number)(lua_Integer)n && !(n == 0 && signbit(n));
}
#  ifndef LUA_LOADED_TABLE
#    define LUA_LOADED_TABLE "_LOADED"   /* package.loaded, as in 5.1's loadlib */
#  endif
#  ifndef LUAI_UACINT
#    define LUAI_UACINT lua_Integer      /* what our "%I" reads */
#  endif
#endif

#if defined(MPROC_LUAJIT)
#  define MPROC_LUA_VERSION "LuaJIT"
#elif LUA_VERSION_NUM >= 504
#  define MPROC_LUA_VERSION "5.4"
#elif LUA_VERSION_NUM == 503
#  define MPROC_LUA_VERSION "5.3"
#elif LUA_VERSION_NUM == 502
#  define MPROC_LUA_VERSION "5.2"
#else
#  define MPROC_LUA_VERSION "5.1"
#endif

/* The codec joins upvalues that functions share (lua_upvalueid and
 * lua_upvaluejoin): every VM but plain 5.1. */
#if LUA_VERSION_NUM >= 502 || defined(MPROC_LUAJIT)
#  define MPROC_UPVALUE_JOIN 1
#else
/* 5.1's headers: LuaJIT's lua_upvalueid/lua_upvaluejoin when LuaJIT loaded
 * this build (looked up at load time), else none.  Without them, an address
 * unique to upvalue n of the closure at f (inside the closure object: one
 * word per upvalue follows its header) keeps the codec's bookkeeping going;
 * no two functions share one. */
#  define lua_upvalueid(L, f, n) \
     (mproc_upvalueid_p != NULL ? mproc_upvalueid_p((L), (f), (n)) \
      : (void *)((const char *)lua_topointer((L), (f)) + (n)))
#endif

/* The hidden helpers of compat.c. */
#if defined(__GNUC__)
#  define MPROC_COMPAT_API __attribute__((visibility("hidden"))) extern
#else
#  define MPROC_COMPAT_API extern
#endif

#if !defined(MPROC_UPVALUE_JOIN)
typedef void *(*mproc_upvalueid_fn)(lua_State *L, int f, int n);
typedef void (*mproc_upvaluejoin_fn)(lua_State *L, int f1, int n1, int f2, int n2);
MPROC_COMPAT_API mproc_upvalueid_fn mproc_upvalueid_p;
MPROC_COMPAT_API mproc_upvaluejoin_fn mproc_upvaluejoin_p;
#endif

/* The FILE * of the io file at idx, NULL when it is not an open one. */
MPROC_COMPAT_API FILE *mproc_tofile(lua_State *L, int idx);

/* MPROC_LUA_VERSION, but "LuaJIT" when LuaJIT loaded a build made with
 * 5.1's headers (luarocks --lua-version=5.1 without LuaJIT's LUA_INCDIR):
 * the same binary runs in both, and bytecode must not cross. */
MPROC_COMPAT_API const char *mproc_running_vm(lua_State *L);

#if LUA_VERSION_NUM < 504
MPROC_COMPAT_API void *mproc_newuserdatauv(lua_State *L, size_t size, int nuv);
MPROC_COMPAT_API int mproc_getiuservalue(lua_State *L, int idx, int n);
MPROC_COMPAT_API int mproc_setiuservalue(lua_State *L, int idx, int n);
MPROC_COMPAT_API int mproc_typeerror(lua_State *L, int arg, const char *tname);
#  define lua_newuserdatauv mproc_newuserdatauv
#  define lua_getiuservalue mproc_getiuservalue
#  define lua_setiuservalue mproc_setiuservalue
#  define luaL_typeerror mproc_typeerror
#  define luaL_argexpected(L, cond, arg, tname) \
     ((void)((cond) || luaL_typeerror((L), (arg), (tname))))
#endif

#if LUA_VERSION_NUM < 503
#  include <stdarg.h>
MPROC_COMPAT_API const char *mproc_pushvfstring(lua_State *L, const char *fmt, va_list ap);
MPROC_COMPAT_API const char *mproc_pushfstring(lua_State *L, const char *fmt, ...);
MPROC_COMPAT_API int mproc_error(lua_State *L, const char *fmt, ...);
#  define lua_pushvfstring mproc_pushvfstring
#  define lua_pushfstring mproc_pushfstring
#  define luaL_error mproc_error
#endif

#endif
