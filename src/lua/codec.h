/*
 * src/lua/codec.h: what the codec's engine (src/lua/codec.c) shares with its
 * Lua API (src/lua/codec_api.c) and nothing else: the per-universe state
 * and the entry points below mproc_encode/mproc_decode (binding.h), which
 * the other bindings use.
 */
#ifndef MPROC_CODEC_H
#define MPROC_CODEC_H

#include <stdint.h>
#include "binding.h"

/* user values of the state userdata */
enum {
  UV_REGISTERED = 1, /* mp.register: name -> value */
  UV_KEEP,          /* strong refs to everything in the names map */
  UV_REFTYPES,      /* typename -> decoder function */
  UV_OBJID,         /* weak keys: object -> identity id */
  UV_IDOBJ,         /* weak values: identity id -> object */
  UV_DUMPS,         /* weak keys: Lua function -> bytecode string */
  UV_STRINGS,       /* decoder's short string cache: slot -> string */
  UV_REFSEEN,       /* typename -> fn(handle) for a handle of a known object */
  UV_COUNT = UV_REFSEEN
};

/* The encoder's address map (src/lua/codec.c, "Address map"). */
/* 16 bytes: the value (44 bits), the kind (4) and the generation (16)
 * share one word, to keep a big map in cache. */
typedef struct pm_entry {
  const void *p;
  uint64_t meta;
} pm_entry;

typedef struct ptrmap {
  pm_entry *e;
  size_t cap, n;     /* cap is a power of 2; n live entries */
  unsigned gen;      /* 1..2^16-1 */
} ptrmap;

/* One userdata per Lua universe, in the registry (mproc_codec_state). */
typedef struct scratch {
  ptrmap seen;       /* address -> back-reference index */
  mproc_bytes out;     /* core.dumps output */
  mproc_bytes dump;    /* lua_dump output */
} scratch;

/* The decoder's cache of short strings: pushing one from the cache (an
 * array read) is cheaper than interning it again with lua_pushlstring. */
#define SC_SLOTS 256
#define SC_MAXLEN 23

typedef struct sc_slot {
  unsigned char len;
  char s[SC_MAXLEN];
} sc_slot;

typedef struct cstate {
  scratch sc;
  const void *globals;     /* the global table (never changes) */
  sc_slot strc[SC_SLOTS];
  int enc_busy;            /* sc in use: a nested encode (an
                              __mproc_encode that calls dumps) gets its own */
  ptrmap names;            /* address -> offset in blob of a name's bytes */
  mproc_bytes blob;
  int names_ok;
  size_t loaded_n;         /* package.loaded when names was built */
  uintptr_t loaded_sum;
  unsigned long ids;       /* identity counter */
  int noref;               /* dumps(v, root, true): no mproc objects (they
                              are bound to one machine: the cluster pool) */
  int autoreq;             /* a spawned process: a module met by name that
                              is not loaded is required (trusted frames) */
  int namecheck;           /* dumps(v, root, noref, fn): stack index of fn,
                              which says whether a name can be rebuilt by a
                              fresh interpreter (the spawn start method) */
} cstate;

/* Pushes the state userdata (created at the first call) and returns it. */
cstate *mproc_codec_state(lua_State *L);
/* Marks functions with the VM the process runs (called once, at load). */
void mproc_codec_init_vm(lua_State *L);
/* Pushes a new table with weak `mode` ("k" or "v"). */
void mproc_codec_new_weak(lua_State *L, const char *mode);
/* Appends the encoding of the value at idx to b; the state is at sidx.
 * 1, or 0 with the SerializeError message pushed (as mproc_encode). */
int mproc_codec_encode(lua_State *L, cstate *S, int sidx, int idx, const char *root,
                       mproc_bytes *b);
/* Decodes n bytes at p (state at sidx, its string cache at strc) and
 * pushes the value: 1, or 0 with the message pushed (as mproc_decode). */
int mproc_codec_decode(lua_State *L, cstate *S, int sidx, int strc,
                       const char *p, size_t n, int flags);

#endif
