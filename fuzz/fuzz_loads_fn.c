/*
 * libFuzzer target for the codec's function path (make fuzz): decoding
 * with functions allowed, as between our own processes or
 * mp.loads(s, {functions = true}).
 *
 * What is meaningful to fuzz here.  Lua has no bytecode verifier: handing
 * fuzzed bytecode to lua_load and running it would only find the VM's
 * undefined behaviour on bad code, which mproc accepts by design for
 * trusted frames (docs/values.md "Trust") and refuses everywhere else.
 * And a decoded value can run its functions by itself (a metatable's __gc
 * on collection), so fuzzed bytecode would be executed, not just loaded.
 * What is ours, and what this target covers, is everything around the
 * bytecode: the T_FUNC framing (varint size, bounds), the upvalue count
 * check, upvalue values, shared upvalues joined by back-reference
 * (offset + index, lua_upvaluejoin), back-references to functions, C
 * functions and registered functions by name, and functions as metatable
 * fields, keys and values at any depth.  So the decoder is built with
 * -DMPROC_FUZZ and its lua_load goes through safe_load below: the fuzzed
 * blob only *selects* one of a few genuine chunks (exact bytes of a
 * genuine chunk, or of the closure nested in CHUNKS[4], select it, so a
 * re-encoded function decodes as itself; anything else is mapped by a hash, and
 * an empty blob or one starting 0xFF is refused, for the error path), and
 * the genuine bytecode is what lua_load gets.  Their closures only return
 * their upvalues, so a __gc that calls one is harmless; the state opens
 * no io, os, debug or package library, so nothing reachable by name can
 * touch the system.
 *
 * A value that decodes is encoded again (the encoder's function path:
 * lua_dump, upvalue identity, _ENV) and that must decode.
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lualib.h"
#include "lauxlib.h"
#include "binding.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Keep in step with FN_CHUNKS in fuzz/seed.lua (same sources, same chunk
 * name), so that its seeds carry these exact bytes.  Each returns the
 * closure to use, except the last (a main chunk: one _ENV upvalue). */
static const char *const CHUNKS[] = {
  "return function() return 1 end",
  "local a; return function() return a end",
  "local a, b; return function() return a, b end",
  "local a; return function() return a, tostring end",
  "local a, b, c, d, e; return function() local function g() return a, e end; "
    "return g, b, c, d end",
  "return 0",
};
#define NCHUNKS (sizeof CHUNKS / sizeof CHUNKS[0])
#define NCODE (NCHUNKS + 1)   /* and g, the closure inside CHUNKS[4] */

static lua_State *L;
static mproc_bytes buf;
static struct { char *p; size_t n; } code[NCODE];

typedef struct reader { const char *p; size_t n; } reader;

static const char *read_once(lua_State *l, void *ud, size_t *sz) {
  reader *r = (reader *)ud;
  (void)l;
  if (r->n == 0) return NULL;
  *sz = r->n;
  r->n = 0;
  return r->p;
}

static int keep_dump(lua_State *l, const void *p, size_t n, void *ud) {
  mproc_bytes *b = (mproc_bytes *)ud;
  if (b->cap - b->len < n) mproc_reserve(l, b, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static int safe_load(lua_State *l, const char *p, size_t n) {
  size_t k, i;
  uint32_t h = 2166136261u;
  reader r;
  if (n == 0 || (unsigned char)p[0] == 0xFF) {
    lua_pushliteral(l, "refused by the fuzz loader");
    return LUA_ERRSYNTAX;
  }
  for (k = 0; k < NCODE; k++)
    if (code[k].n == n && memcmp(code[k].p, p, n) == 0) break;
  if (k == NCODE) {
    for (i = 0; i < n && i < 16; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
    k = (h ^ (uint32_t)n) % NCODE;
  }
  r.p = code[k].p;
  r.n = code[k].n;
  return lua_load(l, read_once, &r, "=(mproc)", "b");
}

static void dump_top(size_t k) {
  mproc_bytes b = {0};
  if (lua_dump(L, keep_dump, &b, 0) != 0) abort();
  code[k].p = b.data;
  code[k].n = b.len;
}

static void setup(void) {
  static const luaL_Reg libs[] = {
    {LUA_GNAME, luaopen_base}, {LUA_COLIBNAME, luaopen_coroutine},
    {LUA_TABLIBNAME, luaopen_table}, {LUA_STRLIBNAME, luaopen_string},
    {LUA_MATHLIBNAME, luaopen_math}, {LUA_UTF8LIBNAME, luaopen_utf8},
    {NULL, NULL}
  };
  const luaL_Reg *lib;
  size_t k;
  L = luaL_newstate();
  for (lib = libs; lib->func; lib++) {
    luaL_requiref(L, lib->name, lib->func, 1);
    lua_pop(L, 1);
  }
  /* nothing that prints or reads files from a __gc */
  lua_pushnil(L); lua_setglobal(L, "print");
  lua_pushnil(L); lua_setglobal(L, "dofile");
  lua_pushnil(L); lua_setglobal(L, "loadfile");
  for (k = 0; k < NCHUNKS; k++) {
    if (luaL_loadbufferx(L, CHUNKS[k], strlen(CHUNKS[k]), "=fz", "t") != LUA_OK) abort();
    if (k + 1 < NCHUNKS) lua_call(L, 0, 1);
    dump_top(k);
    if (k == 4) {
      lua_pushvalue(L, -1);
      lua_call(L, 0, 1);
      dump_top(NCHUNKS);
      lua_pop(L, 1);
    }
    if (k == 1) {   /* one registered Lua function: travels by name */
      lua_newtable(L);
      mproc_open_codec(L);
      lua_getfield(L, -1, "register");
      lua_pushliteral(L, "fz.f");
      lua_pushvalue(L, -4);
      lua_call(L, 2, 0);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  mproc_fuzz_bcload = safe_load;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) setup();
  if (mproc_decode(L, (const char *)data, size, 0)) {
    buf.len = 0;
    if (!mproc_encode(L, -1, "value", &buf)) abort();
    if (!mproc_decode(L, buf.data, buf.len, 0)) abort();
    if (buf.cap > (1 << 20)) mproc_bytes_free(&buf);
  }
  lua_settop(L, 0);
  return 0;
}
