/*
 * src/lua/net.c: the binding of src/core/net.c: sockets for remote managers, type
 * "mproc.NetConn" (a framed stream connection, src/core/pipe.h framing over TCP or
 * a Unix socket), and the crypto helpers of the authkey handshake (the
 * manager server's poller is src/lua/poll.c).  Nothing here blocks:
 * lua/mproc/manager.lua waits through sched.wait_fd.
 *
 * User value 1 of a NetConn: the string a pending send points into.
 *
 * Once the authkey handshake is done (in Lua, lua/mproc/manager.lua),
 * _secure derives one key per direction from the authkey and both
 * challenges (HKDF-SHA256), and from then on every frame is sealed with
 * AES-256-GCM under the direction's sequence number: a frame that was
 * altered, replayed, reordered, dropped or forged fails to open, and the
 * connection is then broken for good (shut down both ways; every later
 * call fails) before a byte of it is decoded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netdb.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "binding.h"
#include "../core/net.h"

#define LUA_NETCONN "mproc.NetConn"

typedef struct netconn {
  mproc_conn c;
  int secure;                  /* frames are sealed */
  int broken;                  /* a frame failed to open: no more I/O */
  mproc_aead tx, rx;
  unsigned char *sbuf;         /* header + sealed frame being sent */
  size_t scap;
} netconn;

#define KEEP_SBUF (64 * 1024)
#define BROKEN_MSG "a frame failed authentication (altered, replayed, reordered or " \
  "forged on the way): connection closed"

static int fail_net(lua_State *L, int gai, const char *what) {
  if (gai != 0 && gai != EAI_SYSTEM)
    return mproc_fail(L, "OSError", "%s: %s", what, gai_strerror(gai));
  return mproc_fail_errno(L, errno, what);
}

/* {======================================================================
 * Sockets
 * ======================================================================= */

static int l_listen_tcp(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2), bound = 0, gai = 0;
  int fd = mproc_net_listen_tcp(host, port, (int)luaL_optinteger(L, 3, 128), &bound, &gai);
  if (fd < 0) return fail_net(L, gai, lua_pushfstring(L, "cannot listen on %s:%d", host, port));
  lua_pushboolean(L, 1);
  lua_pushinteger(L, fd);
  lua_pushinteger(L, bound);
  return 3;
}

static int l_listen_unix(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  int fd = mproc_net_listen_unix(path, len, (int)luaL_optinteger(L, 2, 128));
  if (fd < 0) return mproc_fail_errno(L, errno, "cannot listen on a Unix socket");
  lua_pushboolean(L, 1);
  lua_pushinteger(L, fd);
  return 2;
}

static int l_connect_tcp(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2), inprog = 0, gai = 0;
  int fd = mproc_net_connect_tcp(host, port, &inprog, &gai);
  if (fd < 0) return fail_net(L, gai, lua_pushfstring(L, "cannot connect to %s:%d", host, port));
  lua_pushboolean(L, 1);
  lua_pushinteger(L, fd);
  lua_pushboolean(L, inprog);
  return 3;
}

static int l_connect_unix(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  int inprog = 0, fd = mproc_net_connect_unix(path, len, &inprog);
  if (fd < 0) return mproc_fail_errno(L, errno, "cannot connect to a Unix socket");
  lua_pushboolean(L, 1);
  lua_pushinteger(L, fd);
  lua_pushboolean(L, inprog);
  return 3;
}

static int l_connect_finish(lua_State *L) {
  if (mproc_net_connect_finish((int)luaL_checkinteger(L, 1)) < 0)
    return mproc_fail_errno(L, errno, "cannot connect");
  lua_pushboolean(L, 1);
  return 1;
}

/* accept(lfd) -> true, fd | true, nil (none pending) | false, ... */
static int l_accept(lua_State *L) {
  int fd = mproc_net_accept((int)luaL_checkinteger(L, 1));
  lua_pushboolean(L, 1);
  if (fd >= 0) {
    lua_pushinteger(L, fd);
    return 2;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED || errno == EPROTO)
    return 1;
  lua_pop(L, 1);
  return mproc_fail_errno(L, errno, "accept");
}

/* }====================================================================== */

/* {======================================================================
 * NetConn
 * ======================================================================= */

static netconn *checknc(lua_State *L) {
  netconn *nc = (netconn *)luaL_checkudata(L, 1, LUA_NETCONN);
  if (nc->c.fd < 0) luaL_error(L, "attempt to use a closed connection");
  return nc;
}

/* conn(fd) -> NetConn owning fd (non-blocking already) */
static int l_conn(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  netconn *nc = (netconn *)lua_newuserdatauv(L, sizeof *nc, 1);
  memset(nc, 0, sizeof *nc);
  mproc_conn_init(&nc->c, -1, 0);
  luaL_setmetatable(L, LUA_NETCONN);
  mproc_conn_init(&nc->c, fd, MPROC_CONN_READ | MPROC_CONN_WRITE);
  return 1;
}

/* A frame failed to open: nothing more goes either way (the peer sees the
 * connection close at once); the owner still closes the descriptor. */
static int broken(lua_State *L, netconn *nc) {
  if (!nc->broken) {
    nc->broken = 1;
    shutdown(nc->c.fd, SHUT_RDWR);
    mproc_conn_send_reset(&nc->c);
  }
  return mproc_fail(L, "AuthenticationError", BROKEN_MSG);
}

static void free_sbuf(netconn *nc) {
  free(nc->sbuf);
  nc->sbuf = NULL;
  nc->scap = 0;
}

static int send_result(lua_State *L, netconn *nc, int r) {
  mproc_conn *c = &nc->c;
  if (r != MPROC_CONN_AGAIN && nc->scap > KEEP_SBUF) free_sbuf(nc);
  if (r == MPROC_CONN_ERROR) {
    int e = errno;
    mproc_conn_send_reset(c);
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 1);
    if (e == EPIPE || e == ECONNRESET) return mproc_fail(L, "Closed", "the peer closed the connection");
    return mproc_fail_errno(L, e, "send");
  }
  if (r == MPROC_CONN_DONE) {
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 1);
  }
  lua_pushboolean(L, 1);
  lua_pushboolean(L, r == MPROC_CONN_DONE);
  if (r == MPROC_CONN_DONE) return 2;
  lua_pushinteger(L, c->fd);
  return 3;
}

/* Seals s[0..n) into nc->sbuf and starts sending it. */
static int send_sealed(lua_State *L, netconn *nc, const char *s, size_t n) {
  unsigned char hdr[MPROC_FRAME_HDRMAX];
  size_t hl, need;
  if (n > SIZE_MAX - MPROC_FRAME_HDRMAX - MPROC_AEAD_TAG)
    return mproc_fail(L, "SerializeError", "frame too long");
  need = MPROC_FRAME_HDRMAX + n + MPROC_AEAD_TAG;
  if (need > nc->scap) {
    unsigned char *p = (unsigned char *)malloc(need);
    if (p == NULL) return luaL_error(L, "not enough memory");
    free(nc->sbuf);
    nc->sbuf = p;
    nc->scap = need;
  }
  if (mproc_aead_seal(&nc->tx, s, n, nc->sbuf + MPROC_FRAME_HDRMAX) < 0)
    return mproc_fail(L, "OSError", "cannot seal a frame (libcrypto)");
  hl = mproc_frame_header(hdr, (uint64_t)n + MPROC_AEAD_TAG);
  memcpy(nc->sbuf + MPROC_FRAME_HDRMAX - hl, hdr, hl);
  return send_result(L, nc, mproc_conn_send(&nc->c, (const char *)nc->sbuf + MPROC_FRAME_HDRMAX,
                                            n + MPROC_AEAD_TAG, hl));
}

/* _send(bytes) -> true, true | true, false, fd (wait for fd, then _flush)
 * | false, "Closed"/"OSError"/"AuthenticationError", msg [, errno]: the
 * shape of the pipe's Conn (src/lua/pipe.c) */
static int nc_send(lua_State *L) {
  netconn *nc = checknc(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (nc->c.wpending) return luaL_error(L, "a frame is still being sent");
  if (nc->broken) return broken(L, nc);
  if (nc->secure) return send_sealed(L, nc, s, n);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, 1);   /* keeps s alive until DONE */
  return send_result(L, nc, mproc_conn_send(&nc->c, s, n, 0));
}

static int nc_flush(lua_State *L) {
  netconn *nc = checknc(L);
  if (nc->broken) return broken(L, nc);
  return send_result(L, nc, mproc_conn_flush(&nc->c));
}

/* _recv(maxlen, mode) -> true, true, value | true, false, fd (nothing yet)
 *                      | false, kind, message [, errno]
 * mode: "raw" (the bytes), "value" (decoded, functions allowed: the peer
 * has authenticated), "data" (decoded, functions rejected). */
static int nc_recv(lua_State *L) {
  netconn *nc = checknc(L);
  mproc_conn *c = &nc->c;
  lua_Integer maxlen = luaL_checkinteger(L, 2);
  const char *mode = luaL_checkstring(L, 3);
  const char *p;
  size_t n;
  uint64_t max = (uint64_t)(maxlen < 0 ? 0 : maxlen);
  int r;
  if (nc->broken) return broken(L, nc);
  r = mproc_conn_recv(c, nc->secure ? max + MPROC_AEAD_TAG : max, &p, &n);
  switch (r) {
    case MPROC_CONN_AGAIN:
      lua_pushboolean(L, 1);
      lua_pushboolean(L, 0);
      lua_pushinteger(L, c->fd);
      return 3;
    case MPROC_CONN_EOF:
      return mproc_fail(L, "EOF", "the peer closed the connection");
    case MPROC_CONN_EOF_MID:
      return mproc_fail(L, "EOF", "the peer closed the connection in the middle of a frame");
    case MPROC_CONN_TOOLONG:
      return mproc_fail(L, "SerializeError", "frame too long (over %I bytes)",
                        (LUAI_UACINT)maxlen);
    case MPROC_CONN_ERROR:
      if (errno == ECONNRESET || errno == EPIPE)
        return mproc_fail(L, "EOF", "the peer reset the connection");
      return mproc_fail_errno(L, errno, "recv");
    default: break;
  }
  if (nc->secure) {   /* p is c->rbuf: opened in place */
    if (mproc_aead_open(&nc->rx, (const unsigned char *)p, n, (unsigned char *)p) < 0) {
      mproc_conn_recv_done(c);
      return broken(L, nc);
    }
    n -= MPROC_AEAD_TAG;
  }
  lua_pushboolean(L, 1);
  lua_pushboolean(L, 1);
  if (mode[0] == 'r') {
    lua_pushlstring(L, p, n);
  } else if (!mproc_decode(L, p, n, mode[0] == 'd' ? MPROC_DECODE_NOFUNCS : 0)) {
    mproc_conn_recv_done(c);
    return mproc_fail(L, "SerializeError", "%s", lua_tostring(L, -1));
  }
  mproc_conn_recv_done(c);
  return 3;
}

/* _secure(authkey, challenge_s, challenge_c, role): after the handshake
 * (role "client" or "server"), every frame is sealed from now on.  The
 * keys: HKDF-SHA256 with the authkey as input key material, both
 * challenges (each with its 2-byte length) as salt, and the direction as
 * info; each side seals with its own direction's key. */
static int nc_secure(lua_State *L) {
  static const char C2S[] = "mproc manager v1 client->server";
  static const char S2C[] = "mproc manager v1 server->client";
  netconn *nc = checknc(L);
  size_t kl, sl, cl;
  const char *key = luaL_checklstring(L, 2, &kl);
  const char *chs = luaL_checklstring(L, 3, &sl);
  const char *chc = luaL_checklstring(L, 4, &cl);
  const char *role = luaL_checkstring(L, 5);
  unsigned char salt[2 * (2 + 256)], kc[MPROC_AEAD_KEY], ks[MPROC_AEAD_KEY];
  int client = strcmp(role, "client") == 0, ok;
  luaL_argcheck(L, client || strcmp(role, "server") == 0, 5, "'client' or 'server' expected");
  luaL_argcheck(L, sl > 0 && sl <= 256, 3, "challenge of 1 to 256 bytes expected");
  luaL_argcheck(L, cl > 0 && cl <= 256, 4, "challenge of 1 to 256 bytes expected");
  if (nc->secure) return luaL_error(L, "the connection is secured already");
  salt[0] = (unsigned char)(sl >> 8); salt[1] = (unsigned char)sl;
  memcpy(salt + 2, chs, sl);
  salt[2 + sl] = (unsigned char)(cl >> 8); salt[3 + sl] = (unsigned char)cl;
  memcpy(salt + 4 + sl, chc, cl);
  ok = mproc_hkdf_sha256(salt, 4 + sl + cl, key, kl, C2S, sizeof C2S - 1, kc, sizeof kc) == 0 &&
       mproc_hkdf_sha256(salt, 4 + sl + cl, key, kl, S2C, sizeof S2C - 1, ks, sizeof ks) == 0 &&
       mproc_aead_init(&nc->tx, client ? kc : ks, 1) == 0 &&
       mproc_aead_init(&nc->rx, client ? ks : kc, 0) == 0;
  mproc_cleanse(kc, sizeof kc);
  mproc_cleanse(ks, sizeof ks);
  if (!ok) {
    mproc_aead_free(&nc->tx);
    mproc_aead_free(&nc->rx);
    return mproc_fail(L, "OSError", "cannot set up the session keys (libcrypto)");
  }
  nc->secure = 1;
  lua_pushboolean(L, 1);
  return 1;
}

static int nc_fileno(lua_State *L) {
  lua_pushinteger(L, checknc(L)->c.fd);
  return 1;
}

static int nc_pending(lua_State *L) {
  lua_pushboolean(L, checknc(L)->c.wpending);
  return 1;
}

static int nc_gc(lua_State *L) {
  netconn *nc = (netconn *)luaL_testudata(L, 1, LUA_NETCONN);
  if (nc) {
    mproc_conn_close(&nc->c);
    mproc_aead_free(&nc->tx);
    mproc_aead_free(&nc->rx);
    free_sbuf(nc);
    nc->secure = 0;
  }
  return 0;
}

static int nc_closed(lua_State *L) {
  netconn *nc = (netconn *)luaL_checkudata(L, 1, LUA_NETCONN);
  lua_pushboolean(L, nc->c.fd < 0);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * Crypto
 * ======================================================================= */

static int l_hmac(lua_State *L) {
  size_t kl, ml;
  const char *k = luaL_checklstring(L, 1, &kl);
  const char *m = luaL_checklstring(L, 2, &ml);
  unsigned char out[32];
  if (mproc_hmac_sha256(k, kl, m, ml, out) < 0) return luaL_error(L, "HMAC failed");
  lua_pushlstring(L, (const char *)out, 32);
  return 1;
}

static int l_random_bytes(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_Buffer b;
  char *p;
  luaL_argcheck(L, n >= 0 && n <= 4096, 1, "size out of range");
  p = luaL_buffinitsize(L, &b, (size_t)n);
  if (mproc_random_bytes(p, (size_t)n) < 0) return luaL_error(L, "no random bytes");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

static int l_bytes_equal(lua_State *L) {
  size_t al, bl;
  const char *a = luaL_checklstring(L, 1, &al);
  const char *b = luaL_checklstring(L, 2, &bl);
  lua_pushboolean(L, al == bl && mproc_bytes_equal(a, b, al));
  return 1;
}

/* }====================================================================== */

int mproc_open_net(lua_State *L) {
  static const luaL_Reg nc_methods[] = {
    {"_fileno", nc_fileno},
    {"_close", nc_gc},
    {"_send", nc_send},
    {"_flush", nc_flush},
    {"_recv", nc_recv},
    {"_pending", nc_pending},
    {"_closed", nc_closed},
    {"_secure", nc_secure},
    {NULL, NULL}
  };
  static const luaL_Reg nc_meta[] = {
    {"__gc", nc_gc},
    {"__close", nc_gc},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"net_listen_tcp", l_listen_tcp},
    {"net_listen_unix", l_listen_unix},
    {"net_connect_tcp", l_connect_tcp},
    {"net_connect_unix", l_connect_unix},
    {"net_connect_finish", l_connect_finish},
    {"net_accept", l_accept},
    {"net_conn", l_conn},
    {"net_hmac_sha256", l_hmac},
    {"net_random_bytes", l_random_bytes},
    {"net_bytes_equal", l_bytes_equal},
    {NULL, NULL}
  };
  mproc_newclass(L, LUA_NETCONN, nc_methods, nc_meta);
  mproc_setfuncs(L, funcs);
  return 0;
}
