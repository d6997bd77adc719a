/*
 * binding.h: what the Lua bindings of mproc.core share.  Each binding file
 * has one opener that adds its functions to the core table on the stack top.
 */
#ifndef LMPROC_H
#define LMPROC_H

#include <stddef.h>
#include "compat.h"
#include "../core/mproc.h"

int mproc_open_wait(lua_State *L);
int mproc_open_codec(lua_State *L);
int mproc_open_proc(lua_State *L);
int mproc_open_conn(lua_State *L);
int mproc_open_sync(lua_State *L);
int mproc_open_shm(lua_State *L);
int mproc_open_queue(lua_State *L);
int mproc_open_spawn(lua_State *L);
int mproc_open_net(lua_State *L);
int mproc_open_pool(lua_State *L);
int mproc_open_poll(lua_State *L);

/* Runtime failures are returned, not raised (STYLE.md): the C function
 * pushes false, kind, message and returns 3; lua/mproc/errors.lua turns
 * that into an mp.Error.  mproc_fail_errno adds errno as a 4th value and
 * uses kind "OSError". */
int mproc_fail(lua_State *L, const char *kind, const char *fmt, ...);
int mproc_fail_errno(lua_State *L, int err, const char *what);

/* Hands over to the Lua side of a class (methods added with core.class):
 * calls obj:method(args...) with the nargs values on the stack top and
 * returns what it returns (yieldable).  A C method whose call would block
 * hands over to its Lua slow path so; a runtime failure is handed, as
 * kind, message [, errno], to the class's "_fail", which raises it. */
int mproc_handover(lua_State *L, int obj, const char *method, int nargs);
/* obj:_fail("OSError", "<what>: <strerror>", err): raises the OSError. */
int mproc_raise_errno(lua_State *L, int obj, int err, const char *what);

/* A wait mode argument "r", "w" or "rw" as MPROC_WAIT_* bits. */
int mproc_checkmode(lua_State *L, int arg);

/* Adds the functions of `l` to the table on the stack top. */
void mproc_setfuncs(lua_State *L, const luaL_Reg *l);

/* Creates metatable `tname` with `methods` in __index and `metamethods`
 * in it; leaves nothing on the stack. */
void mproc_newclass(lua_State *L, const char *tname,
                    const luaL_Reg *methods, const luaL_Reg *metamethods);

/* A class whose __index is a C function (fields as well as methods): the
 * metatable `tname` with `meta`, a table of `methods` kept as __methods
 * (core.class gives it to Lua), and __index, a closure of `index` over
 * that table and, when given, the name of the field it serves.  Leaves
 * the metatable on the stack. */
void mproc_indexed_class(lua_State *L, const char *tname, const luaL_Reg *methods,
                         const luaL_Reg *meta, lua_CFunction index, const char *field);

/* src/lua/pipe.c: between begin and end, the Pipe ends that the codec meets are
 * deposited with the descriptor broker (tracker.h) for a receiver that may
 * not have inherited them (a queue, a pool).  end(L, 0): the message was
 * not sent, the deposits are dropped. */
void mproc_conn_share_begin(lua_State *L);
void mproc_conn_share_end(lua_State *L, int sent);

/* src/lua/sync.c (push_rlock: src/lua/lock.c), shared with src/lua/shared.c:
 * handles of objects in slab segments. */
int mproc_sync_encode(lua_State *L, const char *tname, mproc_seg *seg, const void *obj);
void *mproc_sync_attach(lua_State *L, const char *handle, int kind, size_t minsize,
                        mproc_seg **seg);
int mproc_sync_push_rlock(lua_State *L, mproc_seg *seg, mproc_lock *l);
double mproc_sync_opttimeout(lua_State *L, int arg);

/* {======================================================================
 * The one growable buffer is the core's mproc_bytes (src/core/queue.h);
 * the bindings grow it through mproc_reserve, which raises instead of
 * failing.
 * ======================================================================= */

/* Grows b to hold at least `extra` more bytes; raises a memory error. */
void mproc_reserve(lua_State *L, mproc_bytes *b, size_t extra);

/* Pushes a userdata holding an empty mproc_bytes whose __gc frees it, so
 * a buffer is never leaked when an error unwinds the stack. */
mproc_bytes *mproc_bytes_box(lua_State *L);

/* }====================================================================== */

/* {======================================================================
 * codec.c: Lua values <-> bytes.  Encoding appends to an mproc_bytes so
 * that callers (pipes, queues, the pool) can frame it without an extra
 * copy.
 * ======================================================================= */

/* Appends the encoding of the value at `idx` to b (b->len grows).  On an
 * unsendable value returns 0 and pushes the SerializeError message (with
 * the path, starting at `root`, e.g. "args[2].config: cannot send a
 * userdata"); b->len is then restored.  Returns 1 on success, pushing
 * nothing.  May raise only memory errors (b stays valid, caller frees). */
int mproc_encode(lua_State *L, int idx, const char *root, mproc_bytes *b);

#define MPROC_DECODE_NOFUNCS 1  /* reject function values (untrusted input) */
#define MPROC_DECODE_REQUIRE 2  /* require a module met by name if not loaded */

/* Decodes n bytes at p.  Returns 1 and pushes the value, or returns 0 and
 * pushes the SerializeError message.  Never crashes on malformed input. */
int mproc_decode(lua_State *L, const char *p, size_t n, int flags);

#ifdef MPROC_FUZZ
/* Fuzz builds only (make fuzz): when set, the decoder hands a function's
 * bytecode to this instead of lua_load (LUA_OK and the function pushed, or
 * an error status and a message), so a fuzz target can exercise the
 * function path without loading unverified bytecode. */
typedef int (*mproc_bcload_fn)(lua_State *L, const char *p, size_t n);
extern mproc_bcload_fn mproc_fuzz_bcload;
#endif

/* }====================================================================== */

#endif
