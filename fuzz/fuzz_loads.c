/*
 * libFuzzer target for the mproc codec (make fuzz).  Each input goes to
 * mproc_decode with functions rejected, as mp.loads(s) does by default:
 * the decoder must never crash, whatever the bytes.  A value that decodes
 * is encoded again and that encoding must decode, which puts the encoder
 * through the odd shapes (cycles, sparse tables, deep nesting) that the
 * fuzzer invents.
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "lua.h"
#include "lualib.h"
#include "lauxlib.h"
#include "binding.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static mproc_bytes buf;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) {
    L = luaL_newstate();
    luaL_openlibs(L);
  }
  if (mproc_decode(L, (const char *)data, size, MPROC_DECODE_NOFUNCS)) {
    buf.len = 0;
    if (!mproc_encode(L, -1, "value", &buf)) abort();
    if (!mproc_decode(L, buf.data, buf.len, MPROC_DECODE_NOFUNCS)) abort();
    if (buf.cap > (1 << 20)) mproc_bytes_free(&buf);
  }
  lua_settop(L, 0);
  return 0;
}
