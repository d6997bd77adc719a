/*
 * src/lua/codec_api.c: the Lua API of the codec (src/lua/codec.c): core.codec_dumps
 * and core.codec_loads (status-first), the public mp.dumps and mp.loads
 * (raising), and what makes a value travel by name or by reference
 * (codec_register, codec_register_reftype).
 */
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include "binding.h"
#include "codec.h"

/* {======================================================================
 * Lua functions
 * ======================================================================= */

/* dumps(v [, root [, noref [, namecheck]]]) -> true, s
 * | false, "SerializeError", msg.
 * noref: mproc objects (sent by reference between processes) are refused.
 * namecheck(kind, name, key) -> nil | reason: for each value that travels
 * by name ("module" name[.key], "registered" name), whether the receiver
 * can rebuild it (a spawned interpreter must require the module). */
static int l_dumps(lua_State *L) {
  const char *root = lua_isnoneornil(L, 2) ? "value" : luaL_checkstring(L, 2);
  int noref = lua_toboolean(L, 3), ok, check = lua_isfunction(L, 4);
  cstate *S;
  mproc_bytes *b;
  int own, saved;
  lua_settop(L, 4);
  if (!check) { lua_pushnil(L); lua_replace(L, 4); }
  S = mproc_codec_state(L);   /* at 5 */
  own = !S->enc_busy;
  if (own) { b = &S->sc.out; b->len = 0; }
  else b = mproc_bytes_box(L);
  S->noref = noref;
  saved = S->namecheck;
  S->namecheck = check ? 4 : 0;
  ok = mproc_codec_encode(L, S, 5, 1, root, b);
  S->namecheck = saved;
  S->noref = 0;
  if (!ok) {
    if (own && b->cap > (1 << 20)) mproc_bytes_free(b);
    return mproc_fail(L, "SerializeError", "%s", lua_tostring(L, -1));
  }
  lua_pushboolean(L, 1);
  lua_pushlstring(L, b->data, b->len);
  if (own && b->cap > (1 << 20)) mproc_bytes_free(b);   /* keep no 100 MiB around */
  return 2;
}

/* The public mp.dumps / mp.loads: the same work without a Lua wrapper
 * around it (it costs a tenth of a small round trip).  They still leave
 * making the mp.Error to Lua: a failure calls the raise function given to
 * codec_functions (errors.raise) with "SerializeError", msg. */
static int raise_serialize(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushliteral(L, "SerializeError");
  lua_pushvalue(L, -3);
  lua_call(L, 2, 0);
  return luaL_error(L, "%s", lua_tostring(L, -1));   /* raise returned */
}

static const char *arg_typename(lua_State *L, int arg) {
  if (luaL_getmetafield(L, arg, "__name") == LUA_TSTRING) return lua_tostring(L, -1);
  if (lua_type(L, arg) == LUA_TLIGHTUSERDATA) return "light userdata";
  return luaL_typename(L, arg);
}

/* mp.dumps(v) -> string; upvalues: raise, state */
static int l_pub_dumps(lua_State *L) {
  cstate *S = (cstate *)lua_touserdata(L, lua_upvalueindex(2));
  mproc_bytes *b;
  int own = !S->enc_busy;
  lua_settop(L, 1);
  luaL_checkstack(L, 12, "mproc codec");
  if (own) { b = &S->sc.out; b->len = 0; }
  else b = mproc_bytes_box(L);
  if (!mproc_codec_encode(L, S, lua_upvalueindex(2), 1, "value", b)) {
    if (own && b->cap > (1 << 20)) mproc_bytes_free(b);
    return raise_serialize(L);
  }
  lua_pushlstring(L, b->data, b->len);
  if (own && b->cap > (1 << 20)) mproc_bytes_free(b);
  return 1;
}

/* mp.loads(s [, opts]) -> value; upvalues: raise, state, string cache.
 * Function values (bytecode, C functions by name) only with
 * {functions = true}: Lua has no bytecode verifier, and a decoded __gc
 * would run the sender's code.  Our own frames use mproc_decode. */
static int l_pub_loads(lua_State *L) {
  size_t n;
  const char *s;
  int flags = MPROC_DECODE_NOFUNCS;  /* bytecode is code: only when asked */
  if (lua_type(L, 1) != LUA_TSTRING)
    return luaL_error(L, "bad argument #1 to 'loads' (string expected, got %s)",
                      arg_typename(L, 1));
  s = lua_tolstring(L, 1, &n);
  if (!lua_isnoneornil(L, 2)) {
    if (lua_type(L, 2) != LUA_TTABLE)
      return luaL_error(L, "bad argument #2 to 'loads' (table expected, got %s)",
                        arg_typename(L, 2));
    lua_pushnil(L);
    while (lua_next(L, 2)) {   /* a misspelt option must not pass silently */
      lua_pop(L, 1);
      if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "functions") != 0)
        return luaL_error(L, "bad argument #2 to 'loads' (unknown option '%s'; "
                          "the only one is 'functions')", luaL_tolstring(L, -1, NULL));
    }
    switch (lua_getfield(L, 2, "functions")) {
      case LUA_TNIL: break;
      case LUA_TBOOLEAN: if (lua_toboolean(L, -1)) flags = 0; break;
      default:
        return luaL_error(L, "bad argument #2 to 'loads' (functions must be a boolean, "
                          "got %s)", luaL_typename(L, -1));
    }
  }
  lua_settop(L, 2);
  luaL_checkstack(L, 12, "mproc codec");
  if (!mproc_codec_decode(L, (cstate *)lua_touserdata(L, lua_upvalueindex(2)),
              lua_upvalueindex(2), lua_upvalueindex(3), s, n, flags))
    return raise_serialize(L);
  return 1;
}

/* codec_functions(raise) -> dumps, loads (the public ones) */
static int l_codec_functions(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  mproc_codec_state(L);                            /* 2 */
  lua_getiuservalue(L, 2, UV_STRINGS);     /* 3 */
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, l_pub_dumps, 2);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushcclosure(L, l_pub_loads, 3);
  return 2;
}

/* loads(s [, nofuncs]) -> true, v | false, "SerializeError", msg */
static int l_loads(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  int flags = lua_toboolean(L, 2) ? MPROC_DECODE_NOFUNCS : 0;
  if (lua_toboolean(L, 3)) flags |= MPROC_DECODE_REQUIRE;
  lua_settop(L, 1);
  lua_pushboolean(L, 1);
  if (!mproc_decode(L, s, n, flags))
    return mproc_fail(L, "SerializeError", "%s", lua_tostring(L, -1));
  return 2;
}

static int has_identity(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TTABLE: case LUA_TFUNCTION: case LUA_TUSERDATA:
    case LUA_TLIGHTUSERDATA: case LUA_TTHREAD: return 1;
    default: return lua_type(L, idx) > LUA_TTHREAD;  /* LuaJIT's FFI cdata */
  }
}

/* codec_autorequire(on): in a spawned process, the frames of our own
 * processes may name modules this fresh interpreter has not loaded yet */
static int l_autorequire(lua_State *L) {
  cstate *S = mproc_codec_state(L);
  S->autoreq = lua_toboolean(L, 1);
  return 0;
}

/* register(name, value): value then travels by name */
static int l_register(lua_State *L) {
  cstate *S;
  luaL_checkstring(L, 1);
  luaL_argexpected(L, has_identity(L, 2), 2, "table, function or userdata");
  lua_settop(L, 2);
  S = mproc_codec_state(L);
  lua_getiuservalue(L, 3, UV_REGISTERED);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, -3);
  S->names_ok = 0;
  return 0;
}

/* codec_register_reftype(typename, fn | nil [, seen]): seen(handle) is called
 * when a handle names an object this process knows already. */
static int l_register_reftype(lua_State *L) {
  luaL_checkstring(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  mproc_codec_state(L);
  lua_getiuservalue(L, 4, UV_REFTYPES);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, -3);
  lua_getiuservalue(L, 4, UV_REFSEEN);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

/* Test hook: forgets every identity, as if in an unrelated process. */
static int l_forget_ids(lua_State *L) {
  mproc_codec_state(L);
  mproc_codec_new_weak(L, "k"); lua_setiuservalue(L, -2, UV_OBJID);
  mproc_codec_new_weak(L, "v"); lua_setiuservalue(L, -2, UV_IDOBJ);
  return 0;
}

int mproc_open_codec(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"codec_dumps", l_dumps},
    {"codec_loads", l_loads},
    {"codec_register", l_register},
    {"codec_autorequire", l_autorequire},
    {"codec_register_reftype", l_register_reftype},
    {"codec_functions", l_codec_functions},
    {"codec_forget_ids", l_forget_ids},
    {NULL, NULL}
  };
  mproc_setfuncs(L, funcs);
  mproc_codec_init_vm(L);
  return 0;
}

/* }====================================================================== */
