/*
 * codec.c: Lua values <-> bytes, the format every mproc message uses.
 *
 * One recursive pass each way.  The encoder remembers the objects it has
 * written in a C hash map keyed by address (reused from message to message,
 * entries stamped with a generation so nothing is cleared), so shared
 * references and cycles become back-references.  The decoder keeps the
 * objects it built in one reusable Lua table, cleared after each message.
 * Wire format: see docs/values.md ("Wire format").  The Lua functions
 * (core.dumps, mp.loads, register...) are in src/lua/codec_api.c.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "binding.h"
#include "codec.h"

#define CODEC_VERSION 1
/* Deep enough for real data (lua-cjson's default).  The recursion is on
 * the C stack: 1000 levels each way fit in a 256 KiB stack (2 MiB with
 * ASan), and every level checks the Lua stack (enc_enter, dec_enter). */
#define MAXDEPTH 1000
/* An error path longer than this many segments keeps its ends only. */
#define PATH_HEAD 6
#define PATH_TAIL 4

/* {======================================================================
 * Tags
 * 0x00..0x7F integers 0..127, 0x80..0xBF strings of 0..63 bytes,
 * 0xE0..0xFF integers -32..-1, 0xC0..0xD4 the tags below.
 * ======================================================================= */

enum {
  T_NIL = 0xC0, T_FALSE, T_TRUE,
  T_INT8, T_INT16, T_INT32, T_INT64, T_FLOAT,
  T_STR8, T_STR16, T_STR32, T_STR64,
  /* Objects.  Each has a second tag (+ T_SHARED) that the encoder patches
   * in when a back-reference to it follows: only those are remembered by
   * the decoder, keyed by the offset of their tag. */
  T_TABLE,      /* varint narr, u8 nhash, narr values, nhash key/values */
  T_TABLEMT,    /* same, then the metatable */
  T_FUNC,       /* u8 VM, varint size, bytecode, u8 nups, nups upvalues */
  T_OBJREF,     /* three strings: typename, identity id, handle */
  T_STABLE, T_STABLEMT, T_SFUNC, T_SOBJREF,
  T_REF,        /* varint offset of an object written earlier */
  T_GLOBALS,    /* the receiver's global table */
  T_NAMEREG,    /* string: a name given to mp.register */
  T_NAMEMOD,    /* string: package.loaded[name] */
  T_NAMEFIELD   /* two strings: package.loaded[mod][key] */
};
#define T_SHARED (T_STABLE - T_TABLE)
#define FIXSTR_MAX 63
#define NHASH_MORE 255  /* nhash byte: 255 or more pairs, ended by a nil key */

/* The VM that made a function's bytecode, the byte after T_FUNC: bytecode
 * loads only in the VM that made it, so a function from another VM is
 * refused by name (a frame without functions crosses between any two). */
static const char *const vm_names[] = {
  "an unknown Lua", "Lua 5.1", "LuaJIT", "Lua 5.2", "Lua 5.3", "Lua 5.4"
};
#define VM_COUNT (sizeof vm_names / sizeof vm_names[0])
#if defined(MPROC_LUAJIT)
#  define VM_BUILT 2
#elif LUA_VERSION_NUM >= 504
#  define VM_BUILT 5
#elif LUA_VERSION_NUM == 503
#  define VM_BUILT 4
#elif LUA_VERSION_NUM == 502
#  define VM_BUILT 3
#else
#  define VM_BUILT 1
#endif
/* the VM this process runs: the one built for, but LuaJIT for a 5.1 build
 * LuaJIT loaded (mproc_running_vm) */
static unsigned char vm_self = VM_BUILT;

void mproc_codec_init_vm(lua_State *L) {
  vm_self = strcmp(mproc_running_vm(L), "LuaJIT") == 0 ? 2 : VM_BUILT;
}

/* kinds of keys in the encoder's address map */
enum { K_OBJ = 1, K_UPVAL = 2 };


/* }====================================================================== */

/* {======================================================================
 * Address map: open addressing, linear probing.  An entry is live when its
 * gen equals the map's gen, so starting a new message is `gen++`.
 * ======================================================================= */


#define PM_GENBITS 16
#define PM_KINDBITS 4
#define PM_VSHIFT (PM_GENBITS + PM_KINDBITS)
#define PM_TAG(m, kind) ((uint64_t)(m)->gen | ((uint64_t)(kind) << PM_GENBITS))
#define PM_TAGMASK ((UINT64_C(1) << PM_VSHIFT) - 1)
#define PM_GENMASK ((UINT64_C(1) << PM_GENBITS) - 1)
#define pm_live(m, e) (((e)->meta & PM_GENMASK) == (m)->gen)
#define pm_value(e) ((e)->meta >> PM_VSHIFT)


/* Objects allocated one after another get neighbouring slots (the low
 * bits dominate), which keeps a walk over a big structure cache-friendly;
 * the higher bits break up large power-of-two strides. */
static size_t pm_hash(const void *p, int kind) {
  uintptr_t h = (uintptr_t)p;
  return (size_t)((h >> 4) ^ (h >> 17) ^ (h >> 31)) + (size_t)kind;
}

static void pm_newgen(ptrmap *m) {
  m->n = 0;
  if (++m->gen > PM_GENMASK) {   /* wrapped: stale entries would look live */
    if (m->e) memset(m->e, 0, m->cap * sizeof *m->e);
    m->gen = 1;
  }
}

static void pm_free(ptrmap *m) {
  free(m->e);
  m->e = NULL;
  m->cap = m->n = 0;
}

static pm_entry *pm_find(const ptrmap *m, const void *p, int kind) {
  size_t mask, i;
  if (m->cap == 0) return NULL;
  mask = m->cap - 1;
  uint64_t tag = PM_TAG(m, kind);
  for (i = pm_hash(p, kind) & mask;; i = (i + 1) & mask) {
    pm_entry *e = &m->e[i];
    if (!pm_live(m, e)) return NULL;
    if (e->p == p && (e->meta & PM_TAGMASK) == tag) return e;
  }
}

static void pm_grow(lua_State *L, ptrmap *m) {
  size_t ncap = m->cap ? m->cap * 2 : 64, i;
  pm_entry *ne = calloc(ncap, sizeof *ne), *old = m->e;
  if (ne == NULL) luaL_error(L, "not enough memory");
  for (i = 0; i < m->cap; i++) {
    if (pm_live(m, &old[i])) {
      int kind = (int)((old[i].meta >> PM_GENBITS) & ((1u << PM_KINDBITS) - 1));
      size_t j = pm_hash(old[i].p, kind) & (ncap - 1);
      while (pm_live(m, &ne[j])) j = (j + 1) & (ncap - 1);
      ne[j] = old[i];
    }
  }
  free(old);
  m->e = ne;
  m->cap = ncap;
}

/* Finds (p, kind) or inserts it with value v (*isnew set).  May raise a
 * memory error. */
static pm_entry *pm_get(lua_State *L, ptrmap *m, const void *p, int kind,
                        uint64_t v, int *isnew) {
  size_t mask, i;
  uint64_t tag;
  if (m->gen == 0) m->gen = 1;
  if ((m->n + 1) * 2 > m->cap) pm_grow(L, m);
  mask = m->cap - 1;
  tag = PM_TAG(m, kind);
  for (i = pm_hash(p, kind) & mask;; i = (i + 1) & mask) {
    pm_entry *e = &m->e[i];
    if (!pm_live(m, e)) {
      e->p = p; e->meta = tag | (v << PM_VSHIFT);
      m->n++;
      *isnew = 1;
      return e;
    }
    if (e->p == p && (e->meta & PM_TAGMASK) == tag) { *isnew = 0; return e; }
  }
}

/* Adds or replaces (p, kind) -> v.  May raise a memory error. */
static void pm_put(lua_State *L, ptrmap *m, const void *p, int kind, uint64_t v) {
  int isnew;
  pm_entry *e = pm_get(L, m, p, kind, v, &isnew);
  if (!isnew) e->meta = (e->meta & PM_TAGMASK) | (v << PM_VSHIFT);
}

/* }====================================================================== */

/* {======================================================================
 * State: one userdata per Lua universe, in the registry (its type, cstate,
 * is in src/lua/codec.h: the Lua API in src/lua/codec_api.c uses it too)
 * ======================================================================= */

static const char STATE_KEY = 'c';
#define SCRATCH_T "mproc.codec.scratch"

static void scratch_free(scratch *sc) {
  pm_free(&sc->seen);
  mproc_bytes_free(&sc->out);
  mproc_bytes_free(&sc->dump);
}

static int scratch_gc(lua_State *L) {
  scratch_free((scratch *)lua_touserdata(L, 1));
  return 0;
}

static int state_gc(lua_State *L) {
  cstate *S = (cstate *)lua_touserdata(L, 1);
  scratch_free(&S->sc);
  pm_free(&S->names);
  mproc_bytes_free(&S->blob);
  return 0;
}

void mproc_codec_new_weak(lua_State *L, const char *mode) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
}

/* Pushes the state userdata and returns it. */
cstate *mproc_codec_state(lua_State *L) {
  cstate *S;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY) == LUA_TUSERDATA)
    return (cstate *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  S = (cstate *)lua_newuserdatauv(L, sizeof *S, UV_COUNT);
  memset(S, 0, sizeof *S);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_newtable(L); lua_setiuservalue(L, -2, UV_REGISTERED);
  lua_newtable(L); lua_setiuservalue(L, -2, UV_KEEP);
  lua_newtable(L); lua_setiuservalue(L, -2, UV_REFTYPES);
  mproc_codec_new_weak(L, "k"); lua_setiuservalue(L, -2, UV_OBJID);
  mproc_codec_new_weak(L, "v"); lua_setiuservalue(L, -2, UV_IDOBJ);
  mproc_codec_new_weak(L, "k"); lua_setiuservalue(L, -2, UV_DUMPS);
  lua_createtable(L, SC_SLOTS, 0); lua_setiuservalue(L, -2, UV_STRINGS);
  lua_newtable(L); lua_setiuservalue(L, -2, UV_REFSEEN);
  lua_pushglobaltable(L);
  S->globals = lua_topointer(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
  return S;
}

/* Pushes a fresh scratch (for a nested encode) that the GC frees. */
static scratch *new_scratch(lua_State *L) {
  scratch *sc = (scratch *)lua_newuserdatauv(L, sizeof *sc, 0);
  memset(sc, 0, sizeof *sc);
  if (luaL_newmetatable(L, SCRATCH_T)) {
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return sc;
}

/* }====================================================================== */

/* {======================================================================
 * Byte output
 * ======================================================================= */

static void put_bytes(lua_State *L, mproc_bytes *b, const void *p, size_t n) {
  if (b->cap - b->len < n) mproc_reserve(L, b, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

static void put_byte(lua_State *L, mproc_bytes *b, unsigned c) {
  if (b->cap == b->len) mproc_reserve(L, b, 1);
  b->data[b->len++] = (char)c;
}

static int varint_len(uint64_t v) {
  int n = 1;
  while (v >= 0x80) { v >>= 7; n++; }
  return n;
}

/* Writes v as LEB128 in exactly w bytes (padded with 0x80 continuations),
 * at dst. */
static void varint_write(unsigned char *dst, uint64_t v, int w) {
  int i;
  for (i = 0; i < w - 1; i++) { dst[i] = (unsigned char)((v & 0x7F) | 0x80); v >>= 7; }
  dst[w - 1] = (unsigned char)(v & 0x7F);
}

static void put_varint(lua_State *L, mproc_bytes *b, uint64_t v) {
  int w = varint_len(v);
  if (b->cap - b->len < (size_t)w) mproc_reserve(L, b, (size_t)w);
  varint_write((unsigned char *)b->data + b->len, v, w);
  b->len += (size_t)w;
}

static void put_le(lua_State *L, mproc_bytes *b, unsigned tag, uint64_t v, int n) {
  unsigned char t[9];
  int i;
  t[0] = (unsigned char)tag;
  for (i = 0; i < n; i++) { t[1 + i] = (unsigned char)(v & 0xFF); v >>= 8; }
  put_bytes(L, b, t, (size_t)n + 1);
}

static void put_integer(lua_State *L, mproc_bytes *b, lua_Integer i) {
  if (i >= 0 && i <= 127) put_byte(L, b, (unsigned)i);
  else if (i >= -32 && i < 0) put_byte(L, b, (unsigned)(0xE0 + (i + 32)));
  else if (i >= INT8_MIN && i <= INT8_MAX) put_le(L, b, T_INT8, (uint64_t)i, 1);
  else if (i >= INT16_MIN && i <= INT16_MAX) put_le(L, b, T_INT16, (uint64_t)i, 2);
  else if (i >= INT32_MIN && i <= INT32_MAX) put_le(L, b, T_INT32, (uint64_t)i, 4);
  else put_le(L, b, T_INT64, (uint64_t)i, 8);
}

static void put_string(lua_State *L, mproc_bytes *b, const char *s, size_t n) {
  if (n <= FIXSTR_MAX) {
    if (b->cap - b->len < n + 1) mproc_reserve(L, b, n + 1);
    char *d = b->data + b->len;
    *d++ = (char)(0x80 + n);
    if (n <= 16) { size_t i; for (i = 0; i < n; i++) d[i] = s[i]; }  /* no call */
    else memcpy(d, s, n);
    b->len += n + 1;
    return;
  }
  if (n <= 0xFF) put_le(L, b, T_STR8, n, 1);
  else if (n <= 0xFFFF) put_le(L, b, T_STR16, n, 2);
  else if (n <= 0xFFFFFFFFu) put_le(L, b, T_STR32, n, 4);
  else put_le(L, b, T_STR64, n, 8);
  put_bytes(L, b, s, n);
}

/* }====================================================================== */

/* {======================================================================
 * Names: objects that travel by name (mp.register, package.loaded modules
 * and the C functions found in them).  The map goes from an address to
 * the ready-made wire bytes of the name, kept in `blob` as u32 length +
 * bytes.  UV_KEEP holds the objects so that no address is reused while it
 * is in the map.
 * ======================================================================= */

/* Records the name bytes in b2 (len n) for the object at idx; a first
 * name wins unless override. */
static void names_add(lua_State *L, cstate *S, int idx, int keep,
                      const char *bytes, size_t n, int override) {
  const void *p = lua_topointer(L, idx);
  pm_entry *e = pm_find(&S->names, p, lua_type(L, idx));
  uint32_t len = (uint32_t)n;
  if (e && !override) return;
  pm_put(L, &S->names, p, lua_type(L, idx), S->blob.len);
  put_bytes(L, &S->blob, &len, sizeof len);
  put_bytes(L, &S->blob, bytes, n);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, keep);
}

/* Wire bytes of a name (tag, then one or two strings) into tmp. */
static void name_bytes(lua_State *L, mproc_bytes *tmp, unsigned tag,
                       const char *a, size_t na, const char *k, size_t nk) {
  tmp->len = 0;
  put_byte(L, tmp, tag);
  put_string(L, tmp, a, na);
  if (k) put_string(L, tmp, k, nk);
}

/* Pushes package.loaded (or nil). */
static int push_loaded(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  return lua_type(L, -1) == LUA_TTABLE;
}

static void loaded_sig(lua_State *L, int loaded, size_t *n, uintptr_t *sum) {
  *n = 0; *sum = 0;
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    (*n)++;
    *sum += (uintptr_t)lua_topointer(L, -1) * 31u + (uintptr_t)lua_topointer(L, -2);
    lua_pop(L, 1);
  }
}

/* Rebuilds the names map.  sidx: the state userdata. */
static void names_build(lua_State *L, cstate *S, int sidx) {
  int top = lua_gettop(L), loaded, keep;
  mproc_bytes *tmp = &S->sc.dump;   /* never in use here: lua_dump runs no Lua */
  pm_newgen(&S->names);
  S->blob.len = 0;
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, sidx, UV_KEEP);
  keep = lua_gettop(L);
  if (push_loaded(L)) {
    loaded = lua_gettop(L);
    loaded_sig(L, loaded, &S->loaded_n, &S->loaded_sum);
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
      size_t nm;
      const char *m;
      int mod = lua_gettop(L), t = lua_type(L, mod);
      if (lua_type(L, -2) != LUA_TSTRING ||
          (t != LUA_TTABLE && !lua_iscfunction(L, mod))) {
        lua_pop(L, 1);
        continue;
      }
      m = lua_tolstring(L, -2, &nm);
      name_bytes(L, tmp, T_NAMEMOD, m, nm, NULL, 0);
      names_add(L, S, mod, keep, tmp->data, tmp->len, 0);
      if (t == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, mod)) {
          if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
            size_t nk;
            const char *k = lua_tolstring(L, -2, &nk);
            name_bytes(L, tmp, T_NAMEFIELD, m, nm, k, nk);
            names_add(L, S, lua_gettop(L), keep, tmp->data, tmp->len, 0);
          }
          lua_pop(L, 1);
        }
      }
      lua_pop(L, 1);
    }
  } else {
    S->loaded_n = 0; S->loaded_sum = 0;
  }
  lua_settop(L, keep);
  lua_getiuservalue(L, sidx, UV_REGISTERED);
  lua_pushnil(L);
  while (lua_next(L, keep + 1)) {
    size_t nn;
    const char *n = lua_tolstring(L, -2, &nn);
    name_bytes(L, tmp, T_NAMEREG, n, nn, NULL, 0);
    names_add(L, S, lua_gettop(L), keep, tmp->data, tmp->len, 1);
    lua_pop(L, 1);
  }
  tmp->len = 0;
  S->names_ok = 1;
  lua_settop(L, top);
}

/* Rebuilds the names map if package.loaded changed since it was built. */
static void names_refresh(lua_State *L, cstate *S, int sidx) {
  size_t n;
  uintptr_t sum;
  if (!S->names_ok) { names_build(L, S, sidx); return; }
  if (push_loaded(L)) loaded_sig(L, lua_gettop(L), &n, &sum);
  else n = 0, sum = 0;
  lua_pop(L, 1);
  if (n != S->loaded_n || sum != S->loaded_sum) names_build(L, S, sidx);
}

/* }====================================================================== */

/* {======================================================================
 * Encoder
 * ======================================================================= */

enum { P_INDEX, P_KEY, P_META, P_UPVAL, P_KEYOF };

typedef struct pseg {
  int kind;
  int keyidx;            /* P_KEY: stack index of the key */
  lua_Integer i;         /* P_INDEX */
  const char *name;      /* P_UPVAL */
} pseg;

typedef struct Enc {
  lua_State *L;
  cstate *S;
  scratch *sc;
  mproc_bytes *b;
  size_t base;           /* offset of the version byte in b */
  const char *root;
  const void *globals;
  int sidx;              /* state userdata */
  int errslot;           /* stack slot receiving the error message */
  int depth, npath;
  int fresh;             /* names map checked against package.loaded */
  int rebuilt;           /* names map rebuilt after a C function miss */
  pseg path[MAXDEPTH + 8];
} Enc;

static int enc_typed(Enc *E, int idx, int t);
static int enc_check_name(Enc *E, const unsigned char *p, size_t n);
#define enc_value(E, idx) enc_typed(E, idx, lua_type((E)->L, idx))

static int is_reserved(const char *s) {
  static const char *const words[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for",
    "function", "goto", "if", "in", "local", "nil", "not", "or", "repeat",
    "return", "then", "true", "until", "while", NULL
  };
  int i;
  for (i = 0; words[i]; i++) if (strcmp(s, words[i]) == 0) return 1;
  return 0;
}

static int is_ident(const char *s, size_t n) {
  size_t i;
  if (n == 0 || strlen(s) != n) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return 0;
  }
  return !is_reserved(s);
}

static void add_quoted(luaL_Buffer *B, const char *s, size_t n) {
  size_t i;
  luaL_addchar(B, '"');
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') { luaL_addchar(B, '\\'); luaL_addchar(B, (char)c); }
    else if (c == '\n') luaL_addstring(B, "\\n");
    else if (c < 32 || c == 127) {
      char t[8];
      snprintf(t, sizeof t, "\\%u", c);
      luaL_addstring(B, t);
    } else luaL_addchar(B, (char)c);
  }
  luaL_addchar(B, '"');
}

/* Appends the path segment to B (the key of a P_KEY is read at its slot,
 * which stays valid: B grows above it). */
static void add_seg(lua_State *L, luaL_Buffer *B, const pseg *s) {
  char t[64];
  switch (s->kind) {
    case P_INDEX:
      snprintf(t, sizeof t, "[%lld]", (long long)s->i);
      luaL_addstring(B, t);
      break;
    case P_META: luaL_addstring(B, "<metatable>"); break;
    case P_KEYOF: luaL_addstring(B, "<key>"); break;
    case P_UPVAL:
      luaL_addstring(B, "<upvalue ");
      luaL_addstring(B, s->name ? s->name : "?");
      luaL_addchar(B, '>');
      break;
    default: {
      int k = s->keyidx;
      switch (lua_type(L, k)) {
        case LUA_TSTRING: {
          size_t n;
          const char *str = lua_tolstring(L, k, &n);
          if (is_ident(str, n)) { luaL_addchar(B, '.'); luaL_addlstring(B, str, n); }
          else { luaL_addchar(B, '['); add_quoted(B, str, n); luaL_addchar(B, ']'); }
          break;
        }
        case LUA_TNUMBER:
          if (lua_isinteger(L, k))
            snprintf(t, sizeof t, "[%lld]", (long long)lua_tointeger(L, k));
          else
            snprintf(t, sizeof t, "[%.17g]", (double)lua_tonumber(L, k));
          luaL_addstring(B, t);
          break;
        case LUA_TBOOLEAN:
          luaL_addstring(B, lua_toboolean(L, k) ? "[true]" : "[false]");
          break;
        default:
          luaL_addstring(B, "[<");
          luaL_addstring(B, luaL_typename(L, k));
          luaL_addstring(B, ">]");
      }
    }
  }
}

/* The text of the error value at the top of the stack, without calling
 * anything: a string, an mp.Error's "kind: message", else its type. */
static const char *err_text(lua_State *L) {
  int t = lua_type(L, -1);
  if (t == LUA_TSTRING || t == LUA_TNUMBER) return lua_tostring(L, -1);
  if (t == LUA_TTABLE) {
    const char *kind, *msg;
    lua_pushliteral(L, "kind");
    lua_rawget(L, -2);
    lua_pushliteral(L, "message");
    lua_rawget(L, -3);
    kind = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (msg) {
      if (kind) lua_pushfstring(L, "%s: %s", kind, msg);
      else lua_pushvalue(L, -1);
      lua_replace(L, -4);   /* in place of the error value */
      lua_pop(L, 2);
      return lua_tostring(L, -1);
    }
    lua_pop(L, 2);
  }
  return lua_pushfstring(L, "error object is a %s value", luaL_typename(L, -1));
}

/* Builds "root.path: message" into the error slot; returns 0. */
static int enc_fail(Enc *E, const char *fmt, ...) {
  lua_State *L = E->L;
  luaL_Buffer B;
  va_list ap;
  int i;
  if (!lua_checkstack(L, 8)) return 0;  /* keeps the generic message */
  luaL_buffinit(L, &B);
  luaL_addstring(&B, E->root);
  for (i = 0; i < E->npath; i++) {
    if (E->npath > PATH_HEAD + PATH_TAIL + 1 && i == PATH_HEAD) {
      luaL_addstring(&B, "...");
      i = E->npath - PATH_TAIL - 1;
      continue;
    }
    add_seg(L, &B, &E->path[i]);
  }
  luaL_addstring(&B, ": ");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  luaL_addvalue(&B);
  luaL_pushresult(&B);
  lua_replace(L, E->errslot);
  return 0;
}

static const char *kind_name(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TLIGHTUSERDATA: return "light userdata";
    case LUA_TTHREAD: return "coroutine";
    case LUA_TFUNCTION: return "C function";
    default:
      if (lua_type(L, idx) > LUA_TTHREAD) return "LuaJIT FFI cdata (send it by mp.register's name)";
      return lua_typename(L, lua_type(L, idx));
  }
}

/* The path segment of the child being written.  Only containers push
 * one, after enc_enter, so npath <= depth <= MAXDEPTH. */
#define SEG(E) (&(E)->path[(E)->npath])

/* Writes the child at idx (of type t) under the segment set up at
 * SEG(E). */
static int enc_child_t(Enc *E, int idx, int t) {
  E->npath++;
  if (!enc_typed(E, idx, t)) return 0;
  E->npath--;
  return 1;
}
#define enc_child(E, idx) enc_child_t(E, idx, lua_type((E)->L, idx))

/* nil, booleans, numbers and strings: they cannot fail. */
#define IS_SCALAR(t) ((t) <= LUA_TSTRING && (t) != LUA_TLIGHTUSERDATA)

static void enc_scalar(Enc *E, int idx, int t) {
  lua_State *L = E->L;
  switch (t) {
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      put_string(L, E->b, s, n);
      break;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) put_integer(L, E->b, lua_tointeger(L, idx));
      else {
        double x = (double)lua_tonumber(L, idx);
        uint64_t u;
        memcpy(&u, &x, sizeof u);
        put_le(L, E->b, T_FLOAT, u, 8);
      }
      break;
    case LUA_TBOOLEAN:
      put_byte(L, E->b, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
      break;
    default: put_byte(L, E->b, T_NIL);
  }
}

/* Entering a container: depth and stack room. */
static int enc_enter(Enc *E) {
  if (++E->depth > MAXDEPTH)
    return enc_fail(E, "nesting deeper than %d levels", MAXDEPTH);
  if (!lua_checkstack(E->L, 10))
    return enc_fail(E, "nesting too deep (Lua stack overflow)");
  return 1;
}

/* Writes the name of the object at idx if it has one: 1 written, 0 no
 * name, -1 refused (the receiver could not rebuild it; error set). */
static int enc_name(Enc *E, int idx) {
  pm_entry *e = pm_find(&E->S->names, lua_topointer(E->L, idx), lua_type(E->L, idx));
  uint32_t len;
  if (e == NULL) return 0;
  memcpy(&len, E->S->blob.data + pm_value(e), sizeof len);
  if (E->S->namecheck &&
      !enc_check_name(E, (const unsigned char *)E->S->blob.data + pm_value(e) + sizeof len, len))
    return -1;
  put_bytes(E->L, E->b, E->S->blob.data + pm_value(e) + sizeof len, len);
  return 1;
}

/* Marks the object written at offset off as shared. */
static void enc_share(Enc *E, uint64_t off) {
  unsigned char *t = (unsigned char *)E->b->data + E->base + off;
  if (*t < T_STABLE) *t = (unsigned char)(*t + T_SHARED);
}

/* Back-reference to an object already written; otherwise remembers that
 * the object is about to be written at the current offset. */
static int enc_seen(Enc *E, const void *p) {
  int isnew;
  pm_entry *e = pm_get(E->L, &E->sc->seen, p, K_OBJ, E->b->len - E->base, &isnew);
  uint64_t off;
  if (isnew) return 0;
  off = pm_value(e);
  enc_share(E, off);
  put_byte(E->L, E->b, T_REF);
  put_varint(E->L, E->b, off);
  return 1;
}

/* An mproc object (metatable at mt has __mproc_encode, at fn): OBJREF. */
static int enc_objref(Enc *E, int idx, int fn) {
  lua_State *L = E->L;
  cstate *S = E->S;
  size_t ntn, nid, nh;
  const char *tn, *id, *h;
  int top = lua_gettop(L);
  if (S->noref) {
    const char *name = luaL_typename(L, idx);
    if (lua_getmetatable(L, idx)) {
      if (lua_getfield(L, -1, "__name") == LUA_TSTRING) name = lua_tostring(L, -1);
    }
    return enc_fail(E, "cannot send a %s to another machine (mproc objects are bound "
                    "to the machine that made them)", name);
  }
  lua_pushvalue(L, fn);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
    const char *msg = err_text(L);
    return enc_fail(E, "cannot send a %s (__mproc_encode failed: %s)",
                    luaL_typename(L, idx), msg);
  }
  if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
    return enc_fail(E, "cannot send a %s (__mproc_encode must return two strings)",
                    luaL_typename(L, idx));
  tn = lua_tolstring(L, -2, &ntn);
  h = lua_tolstring(L, -1, &nh);
  lua_getiuservalue(L, E->sidx, UV_OBJID);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) != LUA_TSTRING) {
    char t[64];
    lua_pop(L, 1);
    snprintf(t, sizeof t, "%ld:%lu", (long)getpid(), ++S->ids);
    lua_pushstring(L, t);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);                          /* objid[obj] = id */
    lua_getiuservalue(L, E->sidx, UV_IDOBJ);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, idx);
    lua_rawset(L, -3);                          /* idobj[id] = obj */
    lua_pop(L, 1);
  }
  id = lua_tolstring(L, -1, &nid);
  put_byte(L, E->b, T_OBJREF);
  put_string(L, E->b, tn, ntn);
  put_string(L, E->b, id, nid);
  put_string(L, E->b, h, nh);
  lua_settop(L, top);
  return 1;
}

/* If the value at idx has a metatable with __mproc_encode, encodes it as
 * an OBJREF and returns 1 (or 0 on failure, *done set); otherwise leaves
 * the metatable (or nothing) pushed and returns *mt. */
static int enc_meta(Enc *E, int idx, int *done, int *hasmt) {
  lua_State *L = E->L;
  *done = 0; *hasmt = 0;
  if (!lua_getmetatable(L, idx)) return 1;
  lua_pushliteral(L, "__mproc_encode");
  if (lua_rawget(L, -2) == LUA_TFUNCTION) {
    int ok = enc_objref(E, idx, lua_gettop(L));
    lua_pop(L, 2);
    *done = 1;
    return ok;
  }
  lua_pop(L, 1);
  *hasmt = 1;    /* metatable stays on the stack top */
  return 1;
}

static int enc_table(Enc *E, int idx) {
  lua_State *L = E->L;
  mproc_bytes *b = E->b;
  const void *p = lua_topointer(L, idx);
  lua_Unsigned narr, i, nhash = 0;
  size_t at, hat;
  int w, done, hasmt, mt = 0, key, named;
  if (p == E->globals) { put_byte(L, b, T_GLOBALS); return 1; }
  if (E->S->names.n && (named = enc_name(E, idx)) != 0) return named > 0;
  if (enc_seen(E, p)) return 1;
  if (!enc_enter(E)) return 0;
  if (!enc_meta(E, idx, &done, &hasmt)) return 0;
  if (done) { E->depth--; return 1; }
  if (hasmt) mt = lua_gettop(L);
  narr = (lua_Unsigned)lua_rawlen(L, idx);
  w = varint_len(narr);
  if (b->cap - b->len < (size_t)w + 2) mproc_reserve(L, b, (size_t)w + 2);
  b->data[b->len++] = (char)(hasmt ? T_TABLEMT : T_TABLE);
  at = b->len;
  b->len += (size_t)w;   /* narr, rewritten (same width) below */
  hat = b->len++;        /* nhash, patched in below */
  if (narr > 0) {
    /* list part; a border far past the live elements (a sparse table)
     * stops early and the rest goes to the hash part */
    lua_Unsigned nils = 0;
    pseg *sg = SEG(E);
    int top = lua_gettop(L) + 1;
    sg->kind = P_INDEX;
    for (i = 1; i <= narr; i++) {
      int t = lua_rawgeti(L, idx, (lua_Integer)i);
      if (t == LUA_TNIL) {
        if (++nils > 32 && nils > i / 2) { lua_pop(L, 1); break; }
        put_byte(L, b, T_NIL);
      } else if (IS_SCALAR(t)) enc_scalar(E, top, t);
      else {
        sg->i = (lua_Integer)i;
        if (!enc_child_t(E, top, t)) return 0;
      }
      lua_pop(L, 1);
    }
    narr = i - 1;
  }
  varint_write((unsigned char *)b->data + at, narr, w);
  lua_pushnil(L);
  key = lua_gettop(L);
  while (lua_next(L, idx)) {
    pseg *sg = SEG(E);
    int kt = lua_type(L, key), vt;
    if (kt == LUA_TNUMBER && narr > 0) {   /* float keys are never integral */
      int isint;
      lua_Integer k = lua_tointegerx(L, key, &isint);
      if (isint && k >= 1 && (lua_Unsigned)k <= narr) { lua_pop(L, 1); continue; }
    }
    if (IS_SCALAR(kt)) enc_scalar(E, key, kt);
    else {
      sg->kind = P_KEYOF;
      if (!enc_child_t(E, key, kt)) return 0;
    }
    vt = lua_type(L, key + 1);
    if (IS_SCALAR(vt)) enc_scalar(E, key + 1, vt);
    else {
      sg->kind = P_KEY; sg->keyidx = key;
      if (!enc_child_t(E, key + 1, vt)) return 0;
    }
    lua_pop(L, 1);
    nhash++;
  }
  if (nhash < NHASH_MORE) b->data[hat] = (char)nhash;
  else {
    b->data[hat] = (char)NHASH_MORE;
    put_byte(L, b, T_NIL);    /* ends the pairs */
  }
  if (mt) {
    SEG(E)->kind = P_META;
    if (!enc_child(E, mt)) return 0;
    lua_settop(L, mt - 1);
  }
  E->depth--;
  return 1;
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  put_bytes(L, (mproc_bytes *)ud, p, n);
  return 0;
}

/* Pushes the bytecode of the Lua function at idx (cached per closure). */
static void push_bytecode(Enc *E, int idx) {
  lua_State *L = E->L;
  lua_getiuservalue(L, E->sidx, UV_DUMPS);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) != LUA_TSTRING) {
    mproc_bytes *d = &E->sc->dump;
    lua_pop(L, 1);
    d->len = 0;
    lua_pushvalue(L, idx);
    lua_dump(L, dump_writer, d, 0);    /* keep debug info: line numbers */
    lua_pop(L, 1);
    lua_pushlstring(L, d->data, d->len);
    if (d->cap > 65536) mproc_bytes_free(d);
    else d->len = 0;
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
}

static int enc_function(Enc *E, int idx) {
  lua_State *L = E->L;
  mproc_bytes *b = E->b;
  const void *p = lua_topointer(L, idx);
  uint64_t self;
  size_t n;
  const char *code;
  int nups, i, named;
  if (lua_iscfunction(L, idx)) {
    if (E->S->names.n && (named = enc_name(E, idx)) != 0) return named > 0;
    if (!E->rebuilt) {   /* maybe loaded since the map was built */
      E->rebuilt = 1;
      names_build(L, E->S, E->sidx);
      if ((named = enc_name(E, idx)) != 0) return named > 0;
    }
    return enc_fail(E, "cannot send a C function (not found in package.loaded; "
                       "use mp.register)");
  }
  if (!E->fresh) {   /* upvalues often hold modules loaded lately */
    E->fresh = 1;
    names_refresh(L, E->S, E->sidx);
  }
  if (E->S->names.n && (named = enc_name(E, idx)) != 0) return named > 0;
  self = b->len - E->base;
  if (enc_seen(E, p)) return 1;
  if (!enc_enter(E)) return 0;
  push_bytecode(E, idx);
  code = lua_tolstring(L, -1, &n);
  put_byte(L, b, T_FUNC);
  put_byte(L, b, vm_self);
  put_varint(L, b, n);
  put_bytes(L, b, code, n);
  lua_pop(L, 1);
  for (nups = 0; lua_getupvalue(L, idx, nups + 1) != NULL; nups++) lua_pop(L, 1);
  put_byte(L, b, (unsigned)nups);
  for (i = 1; i <= nups; i++) {
    int isnew;
    pm_entry *e;
    pseg *sg = SEG(E);
    const char *name = lua_getupvalue(L, idx, i);
    lua_pop(L, 1);
    if (strcmp(name, "_ENV") == 0) {   /* the receiver's globals */
      put_byte(L, b, 0);
      put_byte(L, b, T_GLOBALS);
      continue;
    }
    e = pm_get(L, &E->sc->seen, lua_upvalueid(L, idx, i), K_UPVAL,
               (self << 8) | (uint64_t)i, &isnew);
    if (!isnew) {   /* shared with a function written earlier: join it */
      uint64_t v = pm_value(e);
      enc_share(E, v >> 8);
      put_byte(L, b, 1);
      put_varint(L, b, v >> 8);
      put_byte(L, b, (unsigned)(v & 0xFF));
      continue;
    }
    put_byte(L, b, 0);
    sg->kind = P_UPVAL;
    sg->name = name;
    lua_getupvalue(L, idx, i);
    if (!enc_child(E, lua_gettop(L))) return 0;
    lua_pop(L, 1);
  }
  E->depth--;
  return 1;
}

/* userdata, light userdata, coroutines, LuaJIT cdata: by name or as mproc
 * objects */
static int enc_other(Enc *E, int idx) {
  lua_State *L = E->L;
  int t = lua_type(L, idx), named;
  if (E->S->names.n && (named = enc_name(E, idx)) != 0) return named > 0;
  if (t == LUA_TUSERDATA) {
    int done, hasmt;
    if (enc_seen(E, lua_topointer(L, idx))) return 1;
    if (!enc_meta(E, idx, &done, &hasmt)) return 0;
    if (hasmt) lua_pop(L, 1);
    if (done) return 1;
  }
  return enc_fail(E, "cannot send a %s", kind_name(L, idx));
}

static int enc_typed(Enc *E, int idx, int t) {
  switch (t) {
    case LUA_TTABLE: return enc_table(E, idx);
    case LUA_TFUNCTION: return enc_function(E, idx);
    case LUA_TLIGHTUSERDATA: case LUA_TUSERDATA: case LUA_TTHREAD:
      return enc_other(E, idx);
    default:
      if (!IS_SCALAR(t)) return enc_other(E, idx);  /* LuaJIT's cdata: by name only */
      enc_scalar(E, idx, t);
      return 1;
  }
}

/* mproc_encode with the state userdata S at sidx. */
int mproc_codec_encode(lua_State *L, cstate *S, int sidx, int idx, const char *root,
                  mproc_bytes *b) {
  Enc E;
  scratch *sc;
  size_t len0 = b->len;
  int top = lua_gettop(L), ok;
  lua_pushnil(L);   /* error slot */
  if (S->enc_busy) sc = new_scratch(L);
  else { sc = &S->sc; S->enc_busy = 1; }
  if (!S->names_ok) names_build(L, S, sidx);
  E.L = L; E.S = S; E.sc = sc; E.b = b;
  E.sidx = sidx;
  E.globals = S->globals;
  E.root = root ? root : "value";
  E.errslot = top + 1;
  E.depth = E.npath = E.fresh = E.rebuilt = 0;
  pm_newgen(&sc->seen);
  E.base = b->len;
  put_byte(L, b, CODEC_VERSION);
  ok = enc_value(&E, idx);
  if (sc->seen.cap > (1 << 18)) pm_free(&sc->seen);   /* after a huge message */
  if (sc == &S->sc) S->enc_busy = 0;
  if (!ok) {
    b->len = len0;
    lua_settop(L, top + 1);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushfstring(L, "%s: cannot encode (Lua stack overflow)", E.root);
    }
    return 0;
  }
  lua_settop(L, top);
  return 1;
}

int mproc_encode(lua_State *L, int idx, const char *root, mproc_bytes *b) {
  cstate *S;
  int top, ok;
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 12, "mproc codec");
  top = lua_gettop(L);
  S = mproc_codec_state(L);
  ok = mproc_codec_encode(L, S, top + 1, idx, root, b);
  lua_remove(L, top + 1);
  return ok;
}

/* }====================================================================== */

/* {======================================================================
 * Decoder
 * ======================================================================= */

typedef struct Dec {
  lua_State *L;
  const unsigned char *s, *p, *e;
  int flags;
  int depth;
  cstate *S;
  int strc;              /* stack slot of the short string cache */
  int refs;              /* stack slot of the shared objects table */
  int hasrefs;           /* that table exists (made at the first one) */
  int sidx;
  char err[256];
} Dec;

static int dec_value(Dec *D);

/* Pushes a short string (1..SC_MAXLEN bytes), from the cache if there. */
static void push_short(Dec *D, const char *s, size_t n) {
  lua_State *L = D->L;
  unsigned h = 2166136261u;
  size_t i;
  sc_slot *sl;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  h = (h ^ (h >> 16)) & (SC_SLOTS - 1);
  sl = &D->S->strc[h];
  if (sl->len == n && memcmp(sl->s, s, n) == 0) {
    lua_rawgeti(L, D->strc, (lua_Integer)h + 1);
    return;
  }
  lua_pushlstring(L, s, n);
  lua_pushvalue(L, -1);
  lua_rawseti(L, D->strc, (lua_Integer)h + 1);
  sl->len = (unsigned char)n;
  memcpy(sl->s, s, n);
}

static int dec_fail(Dec *D, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(D->err, sizeof D->err, fmt, ap);
  va_end(ap);
  return 0;
}

static int dec_bad(Dec *D, const char *what) {
  return dec_fail(D, "malformed data (%s at byte %lu)", what,
                  (unsigned long)(D->p - D->s));
}

/* Untrusted input (mp.loads by default, a proxy handle) meets a function. */
#define NOFUNCS_MSG \
  "cannot receive a function here (functions are refused without {functions = true})"

#define NEED(D, n) \
  if ((size_t)((D)->e - (D)->p) < (size_t)(n)) return dec_bad(D, "unexpected end")

static int get_varint(Dec *D, uint64_t *v) {
  uint64_t r = 0;
  int shift = 0;
  for (;;) {
    unsigned c;
    NEED(D, 1);
    c = *D->p++;
    if (shift == 63 && (c & 0x7E)) return dec_bad(D, "varint overflow");
    r |= (uint64_t)(c & 0x7F) << shift;
    if (!(c & 0x80)) break;
    shift += 7;
    if (shift > 63) return dec_bad(D, "varint overflow");
  }
  *v = r;
  return 1;
}

static uint64_t get_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  int i;
  for (i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Reads a string header + bytes (any string tag). */
static int get_string(Dec *D, const char **s, size_t *n) {
  unsigned c;
  uint64_t len;
  int w;
  NEED(D, 1);
  c = *D->p++;
  if (c >= 0x80 && c <= 0x80 + FIXSTR_MAX) len = c - 0x80;
  else {
    switch (c) {
      case T_STR8: w = 1; break;
      case T_STR16: w = 2; break;
      case T_STR32: w = 4; break;
      case T_STR64: w = 8; break;
      default: D->p--; return dec_bad(D, "string expected");
    }
    NEED(D, w);
    len = get_le(D->p, w);
    D->p += w;
  }
  NEED(D, len);
  *s = (const char *)D->p;
  *n = (size_t)len;
  D->p += len;
  return 1;
}

static int dec_enter(Dec *D) {
  if (++D->depth > MAXDEPTH)
    return dec_fail(D, "malformed data (nesting deeper than %d levels)", MAXDEPTH);
  if (!lua_checkstack(D->L, 10))
    return dec_fail(D, "malformed data (Lua stack overflow)");
  return 1;
}

/* Remembers the object at idx if its tag (at `at`) says it is shared. */
static void dec_mark(Dec *D, int idx, const unsigned char *at) {
  lua_State *L = D->L;
  if (*at < T_STABLE) return;
  if (!D->hasrefs) {
    lua_newtable(L);
    lua_replace(L, D->refs);
    D->hasrefs = 1;
  }
  lua_pushvalue(L, idx);
  lua_rawseti(L, D->refs, (lua_Integer)(at - D->s));
}

/* Pushes the shared object whose tag is at offset off, or fails. */
static int dec_getref(Dec *D, uint64_t off) {
  if (!D->hasrefs || off >= (uint64_t)(D->p - D->s)) return 0;
  if (lua_rawgeti(D->L, D->refs, (lua_Integer)off) == LUA_TNIL) {
    lua_pop(D->L, 1);
    return 0;
  }
  return 1;
}

static int dec_table(Dec *D, const unsigned char *tag, int withmt) {
  lua_State *L = D->L;
  uint64_t narr, i;
  unsigned nhash;
  int t;
  if (!dec_enter(D)) return 0;
  if (!get_varint(D, &narr)) return 0;
  NEED(D, 1);
  nhash = *D->p++;
  /* each value takes a byte at least: bounds the presizing */
  if (narr > (uint64_t)(D->e - D->p) || nhash * 2 > (uint64_t)(D->e - D->p))
    return dec_bad(D, "table size larger than the data");
  lua_createtable(L, narr > (1 << 24) ? (1 << 24) : (int)narr, (int)nhash);
  t = lua_gettop(L);
  dec_mark(D, t, tag);
  for (i = 1; i <= narr; i++) {
    if (!dec_value(D)) return 0;
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (i = 0; nhash == NHASH_MORE || i < nhash; i++) {
    const unsigned char *at = D->p;
    if (nhash == NHASH_MORE) {   /* pairs until a nil key */
      NEED(D, 1);
      if (*D->p == T_NIL) { D->p++; break; }
    }
    if (!dec_value(D)) return 0;
    if (lua_type(L, -1) == LUA_TNIL ||
        (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) &&
         lua_tonumber(L, -1) != lua_tonumber(L, -1))) {
      D->p = at;
      return dec_bad(D, "nil or NaN table key");
    }
    if (!dec_value(D)) return 0;
    lua_rawset(L, t);
  }
  if (withmt) {
    const unsigned char *at = D->p;
    if (!dec_value(D)) return 0;
    if (lua_type(L, -1) != LUA_TTABLE) { D->p = at; return dec_bad(D, "metatable not a table"); }
    lua_setmetatable(L, t);
  }
  D->depth--;
  return 1;
}

#ifdef MPROC_FUZZ
mproc_bcload_fn mproc_fuzz_bcload = NULL;
#endif

typedef struct reader { const char *p; size_t n; } reader;

static const char *bc_reader(lua_State *L, void *ud, size_t *sz) {
  reader *r = (reader *)ud;
  (void)L;
  if (r->n == 0) return NULL;
  *sz = r->n;
  r->n = 0;
  return r->p;
}

static int lua_nups(lua_State *L, int f) {
  lua_Debug ar;
  lua_pushvalue(L, f);
  lua_getinfo(L, ">u", &ar);
  return ar.nups;
}

static int dec_function(Dec *D, const unsigned char *at) {
  lua_State *L = D->L;
  uint64_t size;
  reader r;
  int f, nups, i;
  if (D->flags & MPROC_DECODE_NOFUNCS) {
    D->p = at;
    return dec_fail(D, NOFUNCS_MSG);
  }
  if (!dec_enter(D)) return 0;
  NEED(D, 1);
  if (*D->p != vm_self) {
    unsigned vm = *D->p < VM_COUNT ? *D->p : 0;
    D->p = at;
    return dec_fail(D, "cannot receive a function made by %s here (this is %s: "
                    "functions cross only between processes of the same Lua version)",
                    vm_names[vm], vm_names[vm_self]);
  }
  D->p++;
  if (!get_varint(D, &size)) return 0;
  NEED(D, size);
  r.p = (const char *)D->p;
  r.n = (size_t)size;
  D->p += size;
#ifdef MPROC_FUZZ
  if (mproc_fuzz_bcload != NULL) {
    if (mproc_fuzz_bcload(L, r.p, r.n) != LUA_OK) {
      const char *msg = lua_tostring(L, -1);
      dec_fail(D, "malformed data (bad function at byte %lu: %s)",
               (unsigned long)(at - D->s), msg ? msg : "?");
      return 0;
    }
  } else
#endif
  if (lua_load(L, bc_reader, &r, "=(mproc)", "b") != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    dec_fail(D, "malformed data (bad function at byte %lu: %s)",
             (unsigned long)(at - D->s), msg ? msg : "?");
    return 0;
  }
  f = lua_gettop(L);
  dec_mark(D, f, at);
  NEED(D, 1);
  nups = *D->p++;
  if (nups != lua_nups(L, f)) return dec_bad(D, "wrong upvalue count");
  for (i = 1; i <= nups; i++) {
    NEED(D, 1);
    if (*D->p == 0) {
      D->p++;
      if (!dec_value(D)) return 0;
      lua_setupvalue(L, f, i);
    } else if (*D->p == 1) {
      uint64_t ref;
      int m, other;
      D->p++;
      if (!get_varint(D, &ref)) return 0;
      NEED(D, 1);
      m = *D->p++;
      if (!dec_getref(D, ref)) return dec_bad(D, "bad upvalue reference");
      other = lua_gettop(L);
      if (!lua_isfunction(L, other) || lua_iscfunction(L, other) ||
          m < 1 || m > lua_nups(L, other))
        return dec_bad(D, "bad upvalue reference");
#ifdef MPROC_UPVALUE_JOIN
      lua_upvaluejoin(L, f, i, other, m);
#else   /* plain 5.1 (compat.h): its own frames hold no shared upvalue */
      if (mproc_upvaluejoin_p == NULL)
        return dec_bad(D, "shared upvalues need Lua 5.2 or later, or LuaJIT");
      mproc_upvaluejoin_p(L, f, i, other, m);
#endif
      lua_pop(L, 1);
    } else return dec_bad(D, "bad upvalue");
  }
  D->depth--;
  return 1;
}

/* Pushes package.loaded[mod] (and [key]) or fails naming it. */
static int dec_name(Dec *D, unsigned tag) {
  lua_State *L = D->L;
  const char *a, *k = NULL;
  size_t na, nk = 0;
  if (!get_string(D, &a, &na)) return 0;
  if (tag == T_NAMEFIELD && !get_string(D, &k, &nk)) return 0;
  if (tag == T_NAMEREG) {
    lua_getiuservalue(L, D->sidx, UV_REGISTERED);
    lua_pushlstring(L, a, na);
    if (lua_rawget(L, -2) == LUA_TNIL)
      return dec_fail(D, "cannot receive \"%s\" here (not registered with mp.register)",
                      lua_pushlstring(L, a, na));
    lua_remove(L, -2);
    return 1;
  }
  if (!push_loaded(L)) return dec_fail(D, "cannot receive modules here (no package.loaded)");
  lua_pushlstring(L, a, na);
  if (lua_rawget(L, -2) == LUA_TNIL && ((D->flags & MPROC_DECODE_REQUIRE) ||
      (D->S->autoreq && !(D->flags & MPROC_DECODE_NOFUNCS)))) {
    /* a spawned interpreter: the module the sender had loaded */
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushlstring(L, a, na);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      const char *why = err_text(L);
      return dec_fail(D, "cannot receive module \"%.*s\" here (require failed: %s)",
                      (int)na, a, why);
    }
  }
  if (lua_isnil(L, -1))
    return dec_fail(D, "cannot receive module \"%s\" here (not loaded)",
                    lua_pushlstring(L, a, na));
  if (k) {
    if (lua_type(L, -1) != LUA_TTABLE ||
        (lua_pushlstring(L, k, nk), lua_rawget(L, -2)) == LUA_TNIL)
      return dec_fail(D, "cannot receive \"%s.%s\" here (not in the loaded module)",
                      lua_pushlstring(L, a, na), lua_pushlstring(L, k, nk));
    lua_remove(L, -2);
  }
  lua_remove(L, -2);
  return 1;
}

static int dec_objref(Dec *D, const unsigned char *at) {
  lua_State *L = D->L;
  const char *tn, *id, *h;
  size_t ntn, nid, nh;
  int top = lua_gettop(L);
  if (!get_string(D, &tn, &ntn) || !get_string(D, &id, &nid) || !get_string(D, &h, &nh))
    return 0;
  lua_getiuservalue(L, D->sidx, UV_IDOBJ);
  lua_pushlstring(L, id, nid);
  if (lua_rawget(L, -2) != LUA_TNIL) {
    /* known here already: its type may want to hear of the handle (a Pipe
     * end's deposit with the broker is not needed) */
    lua_getiuservalue(L, D->sidx, UV_REFSEEN);
    lua_pushlstring(L, tn, ntn);
    if (lua_rawget(L, -2) == LUA_TFUNCTION) {
      lua_pushlstring(L, h, nh);
      if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
    } else {
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
    lua_getiuservalue(L, D->sidx, UV_REFTYPES);
    lua_pushlstring(L, tn, ntn);
    if (lua_rawget(L, -2) != LUA_TFUNCTION)
      return dec_fail(D, "cannot receive a %s here (no decoder registered for it)",
                      lua_pushlstring(L, tn, ntn));
    lua_pushlstring(L, h, nh);
    /* the decoder may decode more (a Barrier's action): it must allow
     * functions only when this message may carry them */
    lua_pushboolean(L, !(D->flags & MPROC_DECODE_NOFUNCS));
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
      const char *msg = err_text(L);
      return dec_fail(D, "cannot receive a %s (%s)", lua_pushlstring(L, tn, ntn), msg);
    }
    if (lua_isnil(L, -1))
      return dec_fail(D, "cannot receive a %s (its decoder returned nil)",
                      lua_pushlstring(L, tn, ntn));
    if (lua_type(L, -1) == LUA_TTABLE || lua_type(L, -1) == LUA_TUSERDATA) {
      int obj = lua_gettop(L);
      lua_pushlstring(L, id, nid);
      lua_pushvalue(L, obj);
      lua_rawset(L, top + 1);                 /* idobj[id] = obj */
      lua_getiuservalue(L, D->sidx, UV_OBJID);
      lua_pushvalue(L, obj);
      if (lua_rawget(L, -2) == LUA_TNIL) {
        lua_pushvalue(L, obj);
        lua_pushlstring(L, id, nid);
        lua_rawset(L, -4);                    /* objid[obj] = id */
      }
      lua_pop(L, 2);
    }
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  dec_mark(D, top + 1, at);
  return 1;
}

static int dec_value(Dec *D) {
  lua_State *L = D->L;
  unsigned c;
  NEED(D, 1);
  c = *D->p++;
  if (c < 0x80) { lua_pushinteger(L, (lua_Integer)c); return 1; }
  if (c <= 0x80 + FIXSTR_MAX) {
    size_t n = c - 0x80;
    NEED(D, n);
    if (n - 1 < SC_MAXLEN) push_short(D, (const char *)D->p, n);
    else lua_pushlstring(L, (const char *)D->p, n);
    D->p += n;
    return 1;
  }
  if (c >= 0xE0) { lua_pushinteger(L, (lua_Integer)c - 0x100); return 1; }
  switch (c) {
    case T_NIL: lua_pushnil(L); return 1;
    case T_FALSE: lua_pushboolean(L, 0); return 1;
    case T_TRUE: lua_pushboolean(L, 1); return 1;
    case T_INT8: NEED(D, 1);
      lua_pushinteger(L, (lua_Integer)D->p[0] - ((D->p[0] & 0x80) ? 0x100 : 0));
      D->p += 1; return 1;
    case T_INT16: NEED(D, 2); {
      lua_Integer v = (lua_Integer)get_le(D->p, 2);
      lua_pushinteger(L, v >= 0x8000 ? v - 0x10000 : v);
      D->p += 2; return 1;
    }
    case T_INT32: NEED(D, 4); {
      lua_Integer v = (lua_Integer)get_le(D->p, 4);
      lua_pushinteger(L, v >= INT64_C(0x80000000) ? v - INT64_C(0x100000000) : v);
      D->p += 4; return 1;
    }
    case T_INT64: NEED(D, 8); {
      uint64_t u = get_le(D->p, 8);
      int64_t v;
      memcpy(&v, &u, sizeof v);
      lua_pushinteger(L, (lua_Integer)v);
      D->p += 8; return 1;
    }
    case T_FLOAT: NEED(D, 8); {
      uint64_t u = get_le(D->p, 8);
      double x;
      memcpy(&x, &u, sizeof x);
      lua_pushnumber(L, (lua_Number)x);
      D->p += 8; return 1;
    }
    case T_STR8: case T_STR16: case T_STR32: case T_STR64: {
      const char *s;
      size_t n;
      D->p--;
      if (!get_string(D, &s, &n)) return 0;
      lua_pushlstring(L, s, n);
      return 1;
    }
    case T_TABLE: case T_STABLE: return dec_table(D, D->p - 1, 0);
    case T_TABLEMT: case T_STABLEMT: return dec_table(D, D->p - 1, 1);
    case T_REF: {
      uint64_t r;
      const unsigned char *at = D->p - 1;
      if (!get_varint(D, &r)) return 0;
      if (!dec_getref(D, r)) { D->p = at; return dec_bad(D, "bad reference"); }
      if ((D->flags & MPROC_DECODE_NOFUNCS) && lua_isfunction(L, -1))
        return dec_fail(D, NOFUNCS_MSG);
      return 1;
    }
    case T_GLOBALS:
      lua_pushglobaltable(L);
      return 1;
    case T_NAMEREG: case T_NAMEMOD: case T_NAMEFIELD: case T_OBJREF: case T_SOBJREF: {
      int ok = (c == T_OBJREF || c == T_SOBJREF) ? dec_objref(D, D->p - 1) : dec_name(D, c);
      if (ok && (D->flags & MPROC_DECODE_NOFUNCS) && lua_isfunction(L, -1))
        return dec_fail(D, NOFUNCS_MSG);
      return ok;
    }
    case T_FUNC: case T_SFUNC: return dec_function(D, D->p - 1);
    default:
      D->p--;
      return dec_bad(D, "unknown tag");
  }
}

/* mproc_decode with the state S at sidx and its string cache at strc
 * (stack or upvalue indices). */
int mproc_codec_decode(lua_State *L, cstate *S, int sidx, int strc,
                  const char *p, size_t n, int flags) {
  Dec D;
  int top = lua_gettop(L), ok;
  if (n == 0) { lua_pushliteral(L, "malformed data (empty)"); return 0; }
  if ((unsigned char)p[0] != CODEC_VERSION) {
    lua_pushfstring(L, "malformed data (format version %d, expected %d)",
                    (int)(unsigned char)p[0], CODEC_VERSION);
    return 0;
  }
  lua_pushnil(L);
  D.refs = top + 1;
  D.hasrefs = 0;
  D.S = S;
  D.sidx = sidx;
  D.strc = strc;
  D.L = L;
  D.s = (const unsigned char *)p;
  D.p = D.s + 1;
  D.e = D.s + n;
  D.flags = flags;
  D.depth = 0;
  D.err[0] = '\0';
  ok = dec_value(&D);
  if (ok && D.p != D.e) ok = dec_bad(&D, "trailing bytes");
  if (!ok) {
    lua_settop(L, top);
    lua_pushstring(L, D.err);
    return 0;
  }
  lua_replace(L, top + 1);
  return 1;
}

int mproc_decode(lua_State *L, const char *p, size_t n, int flags) {
  cstate *S;
  int top, ok;
  luaL_checkstack(L, 12, "mproc codec");
  top = lua_gettop(L);
  S = mproc_codec_state(L);
  lua_getiuservalue(L, top + 1, UV_STRINGS);
  ok = mproc_codec_decode(L, S, top + 1, top + 2, p, n, flags);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return ok;
}

/* }====================================================================== */

/* {======================================================================
 * Names a fresh interpreter must rebuild (the spawn start method)
 * ======================================================================= */

/* The encoder met the name bytes p[0..n) (tag, one or two strings): asks
 * the check function (cstate.namecheck) whether the receiver can rebuild
 * it; it returns nil when it can, else the reason.  0 on refusal. */
static int enc_check_name(Enc *E, const unsigned char *p, size_t n) {
  lua_State *L = E->L;
  Dec D;
  const char *a, *k = NULL;
  size_t na, nk = 0;
  int top = lua_gettop(L);
  memset(&D, 0, sizeof D);
  D.L = L;
  D.s = p;
  D.p = p + 1;
  D.e = p + n;
  if (n == 0 || !get_string(&D, &a, &na)) return 1;   /* not ours to judge */
  if (p[0] == T_NAMEFIELD && !get_string(&D, &k, &nk)) return 1;
  lua_pushvalue(L, E->S->namecheck);
  lua_pushstring(L, p[0] == T_NAMEREG ? "registered" : "module");
  lua_pushlstring(L, a, na);
  if (k) lua_pushlstring(L, k, nk);
  else lua_pushnil(L);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK || lua_type(L, -1) == LUA_TSTRING) {
    int r = enc_fail(E, "%s", err_text(L));
    lua_settop(L, top);
    return r;
  }
  lua_settop(L, top);
  return 1;
}

/* }====================================================================== */
