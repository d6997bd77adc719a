/*
 * src/lua/compat.c: the functions of compat.h (what Lua 5.1, LuaJIT and
 * 5.3 lack of the 5.4 API the bindings use).  Nothing here for 5.4 but
 * mproc_tofile.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include "binding.h"

/* {======================================================================
 * io files
 * ======================================================================= */

FILE *mproc_tofile(lua_State *L, int idx) {
#if LUA_VERSION_NUM >= 502
  luaL_Stream *s = (luaL_Stream *)luaL_testudata(L, idx, LUA_FILEHANDLE);
  return s != NULL && s->closef != NULL ? s->f : NULL;
#else
  /* 5.1: a FILE **, NULL once closed; LuaJIT's IOFileUD starts with the
   * same pointer, NULL once closed too. */
  FILE **pf = (FILE **)luaL_testudata(L, idx, LUA_FILEHANDLE);
  return pf != NULL ? *pf : NULL;
#endif
}

/* }====================================================================== */

#if LUA_VERSION_NUM < 502 && !defined(MPROC_LUAJIT)
mproc_upvalueid_fn mproc_upvalueid_p;
mproc_upvaluejoin_fn mproc_upvaluejoin_p;

/* LuaJIT's own calls, from the process's symbols (POSIX dlopen(NULL));
 * once per process, whatever the number of states (threads) loading us. */
static pthread_once_t luajit_calls_once = PTHREAD_ONCE_INIT;

static void find_luajit_calls(void) {
  void *self = dlopen(NULL, RTLD_NOW);
  if (self == NULL) return;
  *(void **)&mproc_upvalueid_p = dlsym(self, "lua_upvalueid");
  *(void **)&mproc_upvaluejoin_p = dlsym(self, "lua_upvaluejoin");
  if (mproc_upvalueid_p == NULL || mproc_upvaluejoin_p == NULL)
    mproc_upvalueid_p = NULL, mproc_upvaluejoin_p = NULL;
  dlclose(self);
}
#endif

const char *mproc_running_vm(lua_State *L) {
#if LUA_VERSION_NUM < 502 && !defined(MPROC_LUAJIT)
  int jit;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "jit");
  jit = lua_type(L, -1) == LUA_TTABLE;
  lua_pop(L, 2);
  if (jit) {
    pthread_once(&luajit_calls_once, find_luajit_calls);
    return "LuaJIT";
  }
#else
  (void)L;
#endif
  return MPROC_LUA_VERSION;
}

#if LUA_VERSION_NUM < 504
/* {======================================================================
 * Numbered user values (5.4) over one table of them
 * ======================================================================= */

#if LUA_VERSION_NUM < 502
#  define set_uv(L, i) lua_setfenv((L), (i))
#  define get_uv(L, i) lua_getfenv((L), (i))
#else
#  define set_uv(L, i) lua_setuservalue((L), (i))
#  define get_uv(L, i) ((void)lua_getuservalue((L), (i)))
#endif

/* The table keeps its size at [0]: 5.4 refuses a user value beyond it.
 * A userdata made with none keeps its default user value (nil, or on 5.1
 * the creator's environment, which has no [0]).  Until its first value is
 * set, a userdata shares one empty table per size, marked by a negative
 * size: making a Lock must not cost a table (LuaJIT, bench/cases/sync). */
static char shared_uv_key[8];

/* Pushes a table for nuv user values, its size (negative: shared) at [0]. */
static void push_uv_table(lua_State *L, int nuv, int size) {
  lua_createtable(L, nuv, 1);
  lua_pushinteger(L, size);
  lua_rawseti(L, -2, 0);
}

void *mproc_newuserdatauv(lua_State *L, size_t size, int nuv) {
  void *p = lua_newuserdata(L, size);
  if (nuv <= 0) return p;
  if ((size_t)nuv < sizeof shared_uv_key) {
    lua_pushlightuserdata(L, &shared_uv_key[nuv]);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_type(L, -1) != LUA_TTABLE) {
      lua_pop(L, 1);
      push_uv_table(L, 0, -nuv);
      lua_pushlightuserdata(L, &shared_uv_key[nuv]);
      lua_pushvalue(L, -2);
      lua_rawset(L, LUA_REGISTRYINDEX);
    }
  } else {
    push_uv_table(L, nuv, nuv);
  }
  set_uv(L, -2);
  return p;
}

/* Pushes the table of the user values of the userdata at idx and returns
 * 1 when it holds a value n (2 when that table is a shared empty one);
 * otherwise pushes nothing. */
static int uv_table(lua_State *L, int idx, int n) {
  if (lua_type(L, idx) != LUA_TUSERDATA || n < 1) return 0;
  get_uv(L, idx);
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_Integer size;
    lua_rawgeti(L, -1, 0);
    size = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n <= size) return 1;
    if (n <= -size) return 2;
  }
  lua_pop(L, 1);
  return 0;
}

int mproc_getiuservalue(lua_State *L, int idx, int n) {
  idx = lua_absindex(L, idx);
  if (!uv_table(L, idx, n)) {
    lua_pushnil(L);
    return LUA_TNONE;
  }
  lua_rawgeti(L, -1, n);
  lua_remove(L, -2);
  return lua_type(L, -1);
}

int mproc_setiuservalue(lua_State *L, int idx, int n) {
  idx = lua_absindex(L, idx);
  int found = uv_table(L, idx, n);
  if (!found) {
    lua_pop(L, 1);
    return 0;
  }
  if (found == 2) {   /* the first value: a table of its own */
    int nuv;
    lua_rawgeti(L, -1, 0);
    nuv = (int)-lua_tointeger(L, -1);
    lua_pop(L, 2);                      /* the size, the shared table */
    push_uv_table(L, nuv, nuv);
    lua_pushvalue(L, -1);
    set_uv(L, idx);
  }
  lua_insert(L, -2);
  lua_rawseti(L, -2, n);
  lua_pop(L, 1);
  return 1;
}

/* }====================================================================== */

/* 5.4's message: "<tname> expected, got <__name or type>". */
int mproc_typeerror(lua_State *L, int arg, const char *tname) {
  const char *got;
  if (luaL_getmetafield(L, arg, "__name") == LUA_TSTRING) got = lua_tostring(L, -1);
  else if (lua_type(L, arg) == LUA_TLIGHTUSERDATA) got = "light userdata";
  else got = luaL_typename(L, arg);
  return luaL_argerror(L, arg, lua_pushfstring(L, "%s expected, got %s", tname, got));
}
#endif

#if LUA_VERSION_NUM < 503
/* {======================================================================
 * lua_pushfstring with "%I" (5.3): the pieces are pushed one by one and
 * concatenated, the VM's own formatter doing the directives it knows.
 * ======================================================================= */

#undef lua_pushvfstring
#undef lua_pushfstring
#undef luaL_error

const char *mproc_pushvfstring(lua_State *L, const char *fmt, va_list ap) {
  int n = 0;
  const char *e;
  luaL_checkstack(L, 4, "formatting a message");
  while ((e = strchr(fmt, '%')) != NULL) {
    lua_pushlstring(L, fmt, (size_t)(e - fmt));
    switch (e[1]) {
      case 's': {
        const char *s = va_arg(ap, const char *);
        lua_pushstring(L, s != NULL ? s : "(null)");
        break;
      }
      case 'd': lua_pushfstring(L, "%d", va_arg(ap, int)); break;
      case 'c': lua_pushfstring(L, "%c", va_arg(ap, int)); break;
      case 'f': lua_pushfstring(L, "%f", va_arg(ap, double)); break;
      case 'p': lua_pushfstring(L, "%p", va_arg(ap, void *)); break;
      case 'I': {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)va_arg(ap, LUAI_UACINT));
        lua_pushstring(L, buf);
        break;
      }
      case '%': lua_pushliteral(L, "%"); break;
      default:
        return luaL_error(L, "invalid option '%%%c' to 'lua_pushfstring'", e[1]), NULL;
    }
    n += 2;
    fmt = e + 2;
    if (n >= 32) {   /* keep the stack short */
      lua_concat(L, n);
      n = 1;
    }
  }
  lua_pushstring(L, fmt);
  lua_concat(L, n + 1);
  return lua_tostring(L, -1);
}

const char *mproc_pushfstring(lua_State *L, const char *fmt, ...) {
  const char *s;
  va_list ap;
  va_start(ap, fmt);
  s = mproc_pushvfstring(L, fmt, ap);
  va_end(ap);
  return s;
}

int mproc_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  luaL_where(L, 1);
  va_start(ap, fmt);
  mproc_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

/* }====================================================================== */
#endif
