/*
 * src/lua/subprocess.c: the binding of src/core/subprocess.c, type "mproc.Popen" (a started
 * program).  The C methods never block: lua/mproc/subprocess.lua waits
 * through sched.wait_fd and calls them again.  communicate's pump is the
 * core's (mproc_comm_*): one _step moves what the pipes allow.
 *
 * User value 1 of a Popen: the input string of communicate (kept alive).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "binding.h"
#include "../core/subprocess.h"

#define LUA_POPEN "mproc.Popen"
#define CHUNK 65536

typedef struct spawn_ud {
  pid_t pid;                /* 0: none (half-built) */
  int reaped, status;
  int pidfd;                /* -1 until asked for */
  int pipes[3];             /* parent ends, -1 when closed */
  int comm;                 /* communicate started */
  mproc_comm c;             /* its pump (input: user value 1) */
} spawn_ud;

#define toud(L) ((spawn_ud *)luaL_checkudata(L, 1, LUA_POPEN))

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* {======================================================================
 * Creation
 * ======================================================================= */

static spawn_ud *newud(lua_State *L) {
  spawn_ud *u = (spawn_ud *)lua_newuserdatauv(L, sizeof *u, 1);
  memset(u, 0, sizeof *u);
  u->pidfd = -1;
  u->pipes[0] = u->pipes[1] = u->pipes[2] = -1;
  luaL_setmetatable(L, LUA_POPEN);
  return u;
}

/* A NULL-terminated array of the strings of the list at idx, in a
 * userdata pushed on the stack (freed by the collector). */
static char **strarray(lua_State *L, int idx, lua_Integer n) {
  char **a = (char **)lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *a, 0);
  lua_Integer i;
  for (i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    a[i - 1] = (char *)lua_tostring(L, -1);  /* kept alive by the list */
    if (a[i - 1] == NULL) luaL_error(L, "argv[%d] is not a string", (int)i);
    lua_pop(L, 1);
  }
  a[n] = NULL;
  return a;
}

/* spawn(argv, cwd|nil, envlist|nil, m0, fd0, m1, fd1, m2, fd2 [, new_session])
 *   -> true, popen | false, "OSError", msg, errno
 * argv and envlist are lists of strings ("K=V"); the Lua layer checked
 * every argument. */
static int l_spawn(lua_State *L) {
  mproc_spawn_opts o;
  spawn_ud *u;
  lua_Integer n;
  int i, e;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 1, 1, "argv must not be empty");
  memset(&o, 0, sizeof o);
  o.cwd = luaL_optstring(L, 2, NULL);
  for (i = 0; i < 3; i++) {
    o.mode[i] = (int)luaL_checkinteger(L, 4 + 2 * i);
    o.fd[i] = (int)luaL_optinteger(L, 5 + 2 * i, -1);
  }
  o.new_session = lua_toboolean(L, 10);
  lua_settop(L, 9);
  o.argv = strarray(L, 1, n);
  if (!lua_isnil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    o.envp = strarray(L, 3, luaL_len(L, 3));
  }
  u = newud(L);
  if (mproc_spawn(&o, &u->pid, u->pipes) < 0) {
    e = errno;
    u->pid = 0;
    lua_pushfstring(L, "cannot run '%s'", o.argv[0]);
    return mproc_fail_errno(L, e, lua_tostring(L, -1));
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

/* subprocess_file_fileno(f) -> fd of a Lua io file, or nil */
static int l_file_fileno(lua_State *L) {
  FILE *f = mproc_tofile(L, 1);
  if (f == NULL) return 0;
  fflush(f);  /* what Lua buffered goes first */
  lua_pushinteger(L, fileno(f));
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * Status
 * ======================================================================= */

static void set_status(spawn_ud *u, int st) {
  u->reaped = 1;
  u->status = st;
  close_fd(&u->pidfd);
}

/* _poll([block]) -> true, returncode | true, nil (running) | false, ... */
static int p_poll(lua_State *L) {
  spawn_ud *u = toud(L);
  int st, r;
  if (!u->reaped && u->pid > 0) {
    r = mproc_child_status(u->pid, lua_toboolean(L, 2), &st);
    if (r < 0) return mproc_fail_errno(L, errno, "waitpid");
    if (r == 1) set_status(u, st);
  }
  lua_pushboolean(L, 1);
  if (u->reaped) lua_pushinteger(L, mproc_exitcode(u->status));
  else lua_pushnil(L);
  return 2;
}

/* _waitfd() -> a descriptor readable once the child ended, or nil */
static int p_waitfd(lua_State *L) {
  spawn_ud *u = toud(L);
  if (u->reaped || u->pid <= 0) return 0;
  if (u->pidfd < 0) u->pidfd = mproc_child_pidfd(u->pid);
  if (u->pidfd < 0) return 0;
  lua_pushinteger(L, u->pidfd);
  return 1;
}

/* _signal(sig) -> true | false, "OSError", ...; a no-op once reaped, so
 * that a recycled pid is never signalled. */
static int p_signal(lua_State *L) {
  spawn_ud *u = toud(L);
  int sig = (int)luaL_checkinteger(L, 2);
  if (!u->reaped && u->pid > 0 && mproc_child_signal(u->pid, sig) < 0 && errno != ESRCH)
    return mproc_fail_errno(L, errno, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

static int p_pid(lua_State *L) {
  lua_pushinteger(L, toud(L)->pid);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * Streams
 * ======================================================================= */

static int checkstream(lua_State *L, int arg) {
  lua_Integer i = luaL_checkinteger(L, arg);
  luaL_argcheck(L, i >= 0 && i <= 2, arg, "stream must be 0, 1 or 2");
  return (int)i;
}

/* _fd(i) -> the parent's end of pipe i, or nil */
static int p_fd(lua_State *L) {
  spawn_ud *u = toud(L);
  int i = checkstream(L, 2);
  if (u->pipes[i] < 0) return 0;
  lua_pushinteger(L, u->pipes[i]);
  return 1;
}

static int p_closefd(lua_State *L) {
  spawn_ud *u = toud(L);
  close_fd(&u->pipes[checkstream(L, 2)]);
  return 0;
}

/* _write(s, pos) -> true, bytes written (0: pipe full)
 *                 | false, "Closed"/"OSError", msg [, errno] */
static int p_write(lua_State *L) {
  spawn_ud *u = toud(L);
  size_t n, pos = (size_t)luaL_checkinteger(L, 3);
  const char *s = luaL_checklstring(L, 2, &n);
  ssize_t w;
  if (u->pipes[0] < 0) return mproc_fail(L, "Closed", "stdin is closed");
  if (pos > n) pos = n;
  w = mproc_write_nosigpipe(u->pipes[0], s + pos, n - pos);
  if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) w = 0;
  else if (w < 0 && errno == EPIPE)
    return mproc_fail(L, "Closed", "the program closed its stdin");
  else if (w < 0) return mproc_fail_errno(L, errno, "write");
  lua_pushboolean(L, 1);
  lua_pushinteger(L, (lua_Integer)w);
  return 2;
}

/* _read(i, max) -> true, bytes | true, nil (EOF) | true, false (empty) */
static int p_read(lua_State *L) {
  spawn_ud *u = toud(L);
  int i = checkstream(L, 2);
  lua_Integer max = luaL_optinteger(L, 3, CHUNK);
  luaL_Buffer b;
  ssize_t r;
  char *p;
  if (max <= 0) max = CHUNK;
  if (u->pipes[i] < 0) {
    lua_pushboolean(L, 1);
    lua_pushnil(L);
    return 2;
  }
  p = luaL_buffinitsize(L, &b, (size_t)max);
  do r = read(u->pipes[i], p, (size_t)max); while (r < 0 && errno == EINTR);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    lua_pushboolean(L, 1);
    lua_pushboolean(L, 0);
    return 2;
  }
  if (r < 0) return mproc_fail_errno(L, errno, "read");
  if (r == 0) {
    lua_pushboolean(L, 1);
    lua_pushnil(L);
    return 2;
  }
  /* nothing may be pushed between buffinitsize and pushresult: the buffer's
   * box sits on top of the stack (5.3 took a value pushed over it for the
   * box and crashed; 5.4 returned the box as the first result) */
  luaL_pushresultsize(&b, (size_t)r);
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

/* }====================================================================== */

/* {======================================================================
 * communicate
 * ======================================================================= */

/* _comm(input|nil): starts communicate (once per object). */
static int p_comm(lua_State *L) {
  spawn_ud *u = toud(L);
  const char *in = NULL;
  size_t n = 0;
  if (u->comm) return 0;
  u->comm = 1;
  if (lua_type(L, 2) == LUA_TSTRING && u->pipes[0] >= 0) {
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, 1, 1);
    in = lua_tolstring(L, 2, &n);
  }
  mproc_comm_start(&u->c, u->pipes, in, n);
  return 0;
}

/* _step() -> true, done, waitfd, slice | false, "OSError", ...
 * done: every pipe closed.  Otherwise wait until waitfd is readable
 * (the poller over the pipes) or, when slice is true (no epoll), at most
 * a short slice, then call again (mproc_comm_step). */
static int p_step(lua_State *L) {
  spawn_ud *u = toud(L);
  int r, fd, slice;
  if (!u->comm) return luaL_error(L, "communicate was not started");
  r = mproc_comm_step(&u->c, &fd, &slice);
  if (r < 0) return mproc_fail_errno(L, errno, "communicate");
  lua_pushboolean(L, 1);
  lua_pushboolean(L, r);
  if (r) return 2;
  lua_pushinteger(L, fd);
  lua_pushboolean(L, slice);
  return 4;
}

/* _result() -> stdout, stderr (nil for a stream that was not a pipe);
 * ends communicate (the buffers are freed). */
static int p_result(lua_State *L) {
  spawn_ud *u = toud(L);
  int i;
  for (i = 0; i < 2; i++) {
    if (u->c.out[i].data) lua_pushlstring(L, u->c.out[i].data, u->c.out[i].len);
    else lua_pushnil(L);
  }
  mproc_comm_end(&u->c);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);
  return 2;
}

/* }====================================================================== */

/* Closes the pipes and, if the child was not reaped, leaves it to the
 * child table (reaped when it ends, no zombie).  Never blocks. */
static int p_gc(lua_State *L) {
  spawn_ud *u = (spawn_ud *)luaL_testudata(L, 1, LUA_POPEN);
  int i;
  if (u == NULL) return 0;
  mproc_comm_end(&u->c);   /* before the pipes: it may watch them */
  for (i = 0; i < 3; i++) close_fd(&u->pipes[i]);
  close_fd(&u->pidfd);
  if (u->pid > 0 && !u->reaped) {
    int st;
    if (mproc_child_status(u->pid, 0, &st) == 1) set_status(u, st);
    else mproc_child_release(u->pid);   /* the SIGCHLD handler reaps it */
    u->reaped = 1;   /* not ours any more */
  }
  return 0;
}

int mproc_open_spawn(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"_pid", p_pid},
    {"_poll", p_poll},
    {"_waitfd", p_waitfd},
    {"_signal", p_signal},
    {"_fd", p_fd},
    {"_closefd", p_closefd},
    {"_write", p_write},
    {"_read", p_read},
    {"_comm", p_comm},
    {"_step", p_step},
    {"_result", p_result},
    {NULL, NULL}
  };
  static const luaL_Reg metamethods[] = {
    {"__gc", p_gc},
    {"__close", p_gc},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"subprocess_spawn", l_spawn},
    {"subprocess_file_fileno", l_file_fileno},
    {NULL, NULL}
  };
  mproc_newclass(L, LUA_POPEN, methods, metamethods);
  mproc_setfuncs(L, funcs);
  lua_pushinteger(L, MPROC_STDIO_INHERIT); lua_setfield(L, -2, "STDIO_INHERIT");
  lua_pushinteger(L, MPROC_STDIO_PIPE); lua_setfield(L, -2, "STDIO_PIPE");
  lua_pushinteger(L, MPROC_STDIO_DEVNULL); lua_setfield(L, -2, "STDIO_DEVNULL");
  lua_pushinteger(L, MPROC_STDIO_FD); lua_setfield(L, -2, "STDIO_FD");
  lua_pushinteger(L, MPROC_STDIO_STDOUT); lua_setfield(L, -2, "STDIO_STDOUT");
  return 0;
}
