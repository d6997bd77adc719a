/*
 * src/lua/process.c: bindings of src/core/process.c.  A started process is represented by a
 * small "mproc.Child" userdata (pid + sentinel descriptor) that the Lua
 * layer (lua/mproc/process.lua) wraps; its __gc closes the sentinel and
 * forgets the child without ever waiting.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "binding.h"

#define CHILD_T "mproc.Child"

typedef struct lchild {
  pid_t pid;        /* 0: closed */
  int sentinel;     /* -1: closed */
  int ended;
  int exitcode;
} lchild;

#define tochild(L, i) ((lchild *)luaL_checkudata(L, i, CHILD_T))

static lchild *checkchild(lua_State *L, int i) {
  lchild *c = tochild(L, i);
  if (c->pid == 0) luaL_error(L, "attempt to use a closed process");
  return c;
}

/* {======================================================================
 * Forking
 * ======================================================================= */

/* process_fork(detached, daemon) -> true, pid, child | true, 0 (in the child)
 * | false, "OSError", msg, errno */
/* As Python does after fork: a child reseeds math.random, or siblings
 * would all draw the parent's sequence (math.randomseed() alone would not
 * do: its seed comes from time(NULL) and addresses that fork copies). */
static void reseed_random(lua_State *L) {
  int top = lua_gettop(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE &&
      lua_getfield(L, -1, "math") == LUA_TTABLE &&
      lua_getfield(L, -1, "randomseed") == LUA_TFUNCTION) {
    lua_pushinteger(L, (lua_Integer)(mproc_now() * 1e9));
    lua_pushinteger(L, (lua_Integer)getpid());
    lua_pcall(L, 2, 0, 0);
  }
  lua_settop(L, top);
}

/* A child handle, closed until the process is started (no error can come
 * after the start). */
static lchild *new_child(lua_State *L) {
  lchild *c = (lchild *)lua_newuserdatauv(L, sizeof *c, 0);
  c->pid = 0;
  c->sentinel = -1;
  c->ended = 0;
  c->exitcode = 0;
  luaL_setmetatable(L, CHILD_T);
  return c;
}

/* lua.c closes the state, finalizing every object, before C's atexit runs
 * the exit path that joins the children; a Lock or Queue given to a child
 * that attaches it by name (spawn, or a queue item) would be gone by then.
 * The newest object with a finalizer is finalized first, so this one,
 * made anew at each start, ends the children before the others go (a
 * replaced one is disarmed and does nothing). */
static const char end_key = 'e';

static int end_children_gc(lua_State *L) {
  int *armed = (int *)lua_touserdata(L, 1);
  if (armed && *armed) {
    *armed = 0;
    mproc_end_children();
  }
  return 0;
}

static void arm_end_children(lua_State *L) {
  int *u;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &end_key) == LUA_TUSERDATA)
    *(int *)lua_touserdata(L, -1) = 0;
  lua_pop(L, 1);
  u = (int *)lua_newuserdatauv(L, sizeof *u, 0);
  *u = 1;
  if (luaL_newmetatable(L, "mproc.EndChildren")) {
    lua_pushcfunction(L, end_children_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &end_key);
}

/* process_arm_end_children(): the forkserver's children count too. */
static int l_arm_end_children(lua_State *L) {
  arm_end_children(L);
  return 0;
}

static int l_proc_fork(lua_State *L) {
  int flags = 0, fd = -1;
  pid_t pid;
  lchild *c;
  if (lua_toboolean(L, 1)) flags |= MPROC_FORK_DETACHED;
  if (lua_toboolean(L, 2)) flags |= MPROC_FORK_DAEMON;
  c = new_child(L);
  pid = mproc_fork(flags, &fd);
  if (pid < 0) return mproc_fail_errno(L, errno, "fork");
  if (pid == 0) reseed_random(L);
  lua_pushboolean(L, 1);
  lua_pushinteger(L, pid);
  if (pid == 0) return 2;
  c->pid = pid;
  c->sentinel = fd;
  lua_pushvalue(L, -3);
  if (!(flags & MPROC_FORK_DETACHED)) arm_end_children(L);   /* leaves the stack as it was */
  return 3;
}

/* fork([detached]) -> true, pid | true, 0 | false, "OSError", msg, errno */
static int l_fork(lua_State *L) {
  int flags = MPROC_FORK_PLAIN;
  pid_t pid;
  if (lua_toboolean(L, 1)) flags |= MPROC_FORK_DETACHED;
  pid = mproc_fork(flags, NULL);
  if (pid < 0) return mproc_fail_errno(L, errno, "fork");
  if (pid == 0) reseed_random(L);
  lua_pushboolean(L, 1);
  lua_pushinteger(L, pid);
  return 2;
}

/* {======================================================================
 * The spawn start method
 * ======================================================================= */

/* A list of strings at idx as a NULL-terminated array in a userdata
 * (collected with it); NULL for nil. */
static char **strlist(lua_State *L, int idx, const char *what) {
  lua_Integer i, n;
  char **v;
  if (lua_isnoneornil(L, idx)) return NULL;
  luaL_checktype(L, idx, LUA_TTABLE);
  n = (lua_Integer)lua_rawlen(L, idx);
  luaL_argcheck(L, n < 65536, idx, "list too long");
  v = (char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 1);
  lua_pushvalue(L, idx);
  lua_setiuservalue(L, -2, 1);   /* the strings stay alive with it */
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
      luaL_error(L, "bad %s entry %d (string expected)", what, (int)i);
    v[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  v[n] = NULL;
  return v;
}

extern char **environ;

/* The environment with the "K=V" entries of over (NULL-terminated) in
 * place of the inherited ones of the same names: in a userdata. */
static char **merge_env(lua_State *L, char **over) {
  size_t n = 0, m = 0, i, j, k = 0;
  char **v;
  while (over[n]) n++;
  while (environ && environ[m]) m++;
  v = (char **)lua_newuserdatauv(L, sizeof(char *) * (n + m + 1), 0);
  for (i = 0; i < n; i++) v[k++] = over[i];
  for (j = 0; j < m; j++) {
    const char *eq = strchr(environ[j], '=');
    size_t kl = eq ? (size_t)(eq - environ[j]) + 1 : strlen(environ[j]);
    int dup = 0;
    for (i = 0; i < n && !dup; i++) dup = strncmp(over[i], environ[j], kl) == 0;
    if (!dup) v[k++] = environ[j];
  }
  v[k] = NULL;
  return v;
}

/* process_spawn(path, argv, env|nil, fds|nil, detached, daemon): env lists
 * "K=V" entries that replace or add to the inherited environment
 * -> true, pid, child (its fileno: the boot socket and sentinel)
 * | false, "OSError", msg, errno */
static int l_spawn_proc(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char **argv = strlist(L, 2, "argv"), **envp = strlist(L, 3, "env");
  int fds[MPROC_SPAWN_MAXFDS], nfds = 0, flags = 0, boot = -1;
  pid_t pid;
  lchild *c;
  luaL_argcheck(L, argv && argv[0], 2, "non-empty list expected");
  if (envp) envp = merge_env(L, envp);
  if (!lua_isnoneornil(L, 4)) {
    lua_Integer i, n;
    luaL_checktype(L, 4, LUA_TTABLE);
    n = (lua_Integer)lua_rawlen(L, 4);
    luaL_argcheck(L, n <= MPROC_SPAWN_MAXFDS, 4, "too many descriptors");
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, 4, i);
      fds[nfds++] = (int)luaL_checkinteger(L, -1);
      lua_pop(L, 1);
    }
  }
  if (lua_toboolean(L, 5)) flags |= MPROC_FORK_DETACHED;
  if (lua_toboolean(L, 6)) flags |= MPROC_FORK_DAEMON;
  c = new_child(L);
  pid = mproc_spawn_proc(flags, path, argv, envp, fds, nfds, &boot);
  if (pid < 0) return mproc_fail_errno(L, errno, path);
  c->pid = pid;
  c->sentinel = boot;
  if (!(flags & MPROC_FORK_DETACHED)) arm_end_children(L);
  lua_pushboolean(L, 1);
  lua_pushinteger(L, pid);
  lua_pushvalue(L, -3);
  return 3;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* process_boot_send(child, s) -> true | false, "OSError", ...: the payload,
 * length first; then no more from us (the child reads to the end). */
static int l_boot_send(lua_State *L) {
  lchild *c = checkchild(L, 1);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  uint64_t len = n;
  if (write_all(c->sentinel, (const char *)&len, sizeof len) < 0 ||
      write_all(c->sentinel, s, n) < 0)
    return mproc_fail_errno(L, errno, "send to the spawned process");
  shutdown(c->sentinel, SHUT_WR);
  lua_pushboolean(L, 1);
  return 1;
}

/* process_boot_recv() -> the payload (in a spawned child; descriptor 3) | nil */
static int l_boot_recv(lua_State *L) {
  uint64_t len = 0;
  size_t got = 0;
  char *buf;
  while (got < sizeof len) {
    ssize_t r = read(3, (char *)&len + got, sizeof len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    got += (size_t)r;
  }
  if (len > (uint64_t)1 << 40) return 0;
  buf = (char *)lua_newuserdatauv(L, (size_t)len + 1, 0);
  got = 0;
  while (got < len) {
    ssize_t r = read(3, buf + got, (size_t)len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    got += (size_t)r;
  }
  lua_pushlstring(L, buf, (size_t)len);
  return 1;
}

/* process_spawned_setup(detached, parent_pid, watch) -> true | nil */
static int l_spawned_setup(lua_State *L) {
  int r = mproc_spawned_setup(lua_toboolean(L, 1), (pid_t)luaL_checkinteger(L, 2),
                              lua_toboolean(L, 3));
  if (r < 0) return 0;
  reseed_random(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* tracker_export() -> fd, pid | false, kind, msg: the segment tracker's
 * socket, for a spawned interpreter to join this tree's tracker. */
static int l_tracker_export(lua_State *L) {
  int fd;
  long pid;
  if (mproc_tracker_export(&fd, &pid) != 0) return mproc_fail_errno(L, errno, "tracker");
  lua_pushinteger(L, fd);
  lua_pushinteger(L, (lua_Integer)pid);
  return 2;
}

/* tracker_ensure(): starts the tree's tracker now if there is none, so
 * that the children started next share it (a manager server must reach
 * the descriptor broker). */
static int l_tracker_ensure(lua_State *L) {
  (void)L;
  mproc_tracker_ensure();
  return 0;
}

/* tracker_adopt(fd, pid) -> true | nil: in a spawned process. */
static int l_tracker_adopt(lua_State *L) {
  if (mproc_tracker_adopt((int)luaL_checkinteger(L, 1), (long)luaL_checkinteger(L, 2)) != 0)
    return 0;
  lua_pushboolean(L, 1);
  return 1;
}

static int l_spawn_watch(lua_State *L) {
  lua_pushboolean(L, mproc_spawn_watch(lua_toboolean(L, 1)));
  return 1;
}

/* process_thread_count() -> n | nil (the platform does not tell) */
static int l_thread_count(lua_State *L) {
  int n = mproc_thread_count();
  if (n < 0) return 0;
  lua_pushinteger(L, n);
  return 1;
}

/* process_set_comm(name): the process name that ps and /proc/<pid>/stat show
 * (Linux; the forkserver calls itself "mproc-forkserv") */
static int l_set_comm(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
#ifdef __linux__
  prctl(PR_SET_NAME, name, 0, 0, 0);
#else
  (void)name;
#endif
  return 0;
}

/* process_exe_path() -> the running program's path | nil */
static int l_exe_path(lua_State *L) {
#ifdef __linux__
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
  }
#endif
  (void)L;
  return 0;
}

/* {------ forkserver: frames with descriptors on a blocking socket ------ */

#define FD_MAX 16

/* fd_send(fd, data [, fds]) -> true | false, "OSError", ...: one frame
 * (u64 length, then data) with the descriptors fds (SCM_RIGHTS). */
static int l_fd_send(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), fds[FD_MAX], n = 0, i;
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  uint64_t hdr = len;
  struct msghdr mh;
  struct iovec iov;
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int) * FD_MAX)]; } cm;
  ssize_t w;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    n = (int)lua_rawlen(L, 3);
    luaL_argcheck(L, n <= FD_MAX, 3, "too many descriptors");
    for (i = 0; i < n; i++) {
      lua_rawgeti(L, 3, i + 1);
      fds[i] = (int)luaL_checkinteger(L, -1);
      lua_pop(L, 1);
    }
  }
  memset(&mh, 0, sizeof mh);
  iov.iov_base = &hdr;
  iov.iov_len = sizeof hdr;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (n > 0) {
    memset(&cm, 0, sizeof cm);
    mh.msg_control = cm.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
    cm.h.cmsg_level = SOL_SOCKET;
    cm.h.cmsg_type = SCM_RIGHTS;
    cm.h.cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
    memcpy(CMSG_DATA(&cm.h), fds, sizeof(int) * (size_t)n);
  }
  do w = sendmsg(fd, &mh, MSG_NOSIGNAL);
  while (w < 0 && errno == EINTR);
  if (w < 0) return mproc_fail_errno(L, errno, "sendmsg");
  if ((size_t)w < sizeof hdr &&
      write_all(fd, (const char *)&hdr + w, sizeof hdr - (size_t)w) < 0)
    return mproc_fail_errno(L, errno, "send");
  if (write_all(fd, data, len) < 0) return mproc_fail_errno(L, errno, "send");
  lua_pushboolean(L, 1);
  return 1;
}

static int read_all(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* fd_recv(fd) -> data, fds (close-on-exec) | nil at EOF or error */
static int l_fd_recv(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), i, n = 0;
  uint64_t hdr;
  struct msghdr mh;
  struct iovec iov;
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int) * FD_MAX)]; } cm;
  struct cmsghdr *c;
  ssize_t r;
  char *buf;
  memset(&mh, 0, sizeof mh);
  iov.iov_base = &hdr;
  iov.iov_len = sizeof hdr;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cm.buf;
  mh.msg_controllen = sizeof cm.buf;
  do r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
  while (r < 0 && errno == EINTR);
  if (r <= 0) return 0;
  lua_newtable(L);
  for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int)), got[FD_MAX];
      if (k > FD_MAX) k = FD_MAX;
      memcpy(got, CMSG_DATA(c), sizeof(int) * (size_t)k);
      for (i = 0; i < k; i++) {
        lua_pushinteger(L, got[i]);
        lua_rawseti(L, -2, ++n);
      }
    }
  }
  if ((size_t)r < sizeof hdr && read_all(fd, (char *)&hdr + r, sizeof hdr - (size_t)r) < 0)
    return 0;
  if (hdr > ((uint64_t)1 << 40)) return 0;
  buf = (char *)lua_newuserdatauv(L, (size_t)hdr + 1, 0);
  if (read_all(fd, buf, (size_t)hdr) < 0) return 0;
  lua_pushlstring(L, buf, (size_t)hdr);
  lua_replace(L, -2);
  lua_insert(L, -2);
  return 2;
}

/* fd_socket_pair() -> true, a, b | false, "OSError", ...: blocking,
 * close-on-exec */
static int l_socket_pair(lua_State *L) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return mproc_fail_errno(L, errno, "socketpair");
  lua_pushboolean(L, 1);
  lua_pushinteger(L, sv[0]);
  lua_pushinteger(L, sv[1]);
  return 3;
}

static int shut_fd = -1;
static pid_t shut_pid;   /* a forked child inherits the hook, not the server */
static void shut_at_exit(void) {
  if (shut_fd >= 0 && shut_pid == getpid()) shutdown(shut_fd, SHUT_RDWR);
}

/* fd_shutdown_at_exit(fd): first thing in the exit path, fd is shut down
 * (the forkserver then ends its children as our exit path would). */
static int l_shutdown_at_exit(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  if (shut_pid == 0 && mproc_on_exit_early(shut_at_exit) < 0)
    return mproc_fail_errno(L, errno, "exit hook");
  shut_fd = fd;
  shut_pid = getpid();
  lua_pushboolean(L, 1);
  return 1;
}

/* }------------------------------------------------------------------- */

/* }====================================================================== */

/* exit(code): the exit path of a child, then _exit; never returns */
static int l_exit(lua_State *L) {
  int code;
  if (lua_isboolean(L, 1)) code = lua_toboolean(L, 1) ? 0 : 1;
  else code = (int)luaL_optinteger(L, 1, 0);
  mproc_exit(code);
  return 0;
}

/* }====================================================================== */

/* {======================================================================
 * Children
 * ======================================================================= */

static void child_record(lchild *c, int status) {
  c->ended = 1;
  c->exitcode = mproc_exitcode(status);
}

/* child_poll(c [, block]) -> true, exitcode | true, nil (running)
 * | false, "OSError", msg, errno */
static int l_child_poll(lua_State *L) {
  lchild *c = checkchild(L, 1);
  int block = lua_toboolean(L, 2), status, r;
  if (!c->ended) {
    r = mproc_child_status(c->pid, block, &status);
    if (r < 0) return mproc_fail_errno(L, errno, "waitpid");
    if (r > 0) child_record(c, status);
  }
  lua_pushboolean(L, 1);
  if (c->ended) lua_pushinteger(L, c->exitcode);
  else lua_pushnil(L);
  return 2;
}

/* child_signal(c, sig) -> true | false, "OSError", ... (no-op once ended) */
static int l_child_signal(lua_State *L) {
  lchild *c = checkchild(L, 1);
  int sig = (int)luaL_checkinteger(L, 2);
  if (!c->ended && mproc_child_signal(c->pid, sig) < 0)
    return mproc_fail_errno(L, errno, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

static int l_child_fileno(lua_State *L) {
  lua_pushinteger(L, checkchild(L, 1)->sentinel);
  return 1;
}

/* __gc and __close: tolerant of closed objects, never waits */
static int l_child_close(lua_State *L) {
  lchild *c = tochild(L, 1);
  if (c->sentinel >= 0) close(c->sentinel);
  c->sentinel = -1;
  if (c->pid > 0 && !c->ended) mproc_child_release(c->pid);
  c->pid = 0;
  return 0;
}

/* waitpid(pid, block) -> true, exitcode | true, nil | false, OSError... */
static int l_waitpid(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  int status, r = mproc_child_status(pid, lua_toboolean(L, 2), &status);
  if (r < 0) return mproc_fail_errno(L, errno, "waitpid");
  lua_pushboolean(L, 1);
  if (r > 0) lua_pushinteger(L, mproc_exitcode(status));
  else lua_pushnil(L);
  return 2;
}

/* process_fork_sentinel(pid) -> fd | nil (not an mp.fork child of ours) */
static int l_fork_sentinel(lua_State *L) {
  int fd = mproc_fork_sentinel((pid_t)luaL_checkinteger(L, 1));
  if (fd < 0) lua_pushnil(L);
  else lua_pushinteger(L, fd);
  return 1;
}

static int l_child_running(lua_State *L) {
  lua_pushboolean(L, mproc_child_running((pid_t)luaL_checkinteger(L, 1)));
  return 1;
}

static int l_child_notify_fd(lua_State *L) {
  int fd = mproc_child_notify_fd();
  if (fd < 0) lua_pushnil(L);
  else lua_pushinteger(L, fd);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
 * Small functions
 * ======================================================================= */

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int l_getppid(lua_State *L) {
  lua_pushinteger(L, getppid());
  return 1;
}

static int l_cpu_count(lua_State *L) {
  lua_pushinteger(L, mproc_cpu_count());
  return 1;
}

/* kill(pid, sig) -> true | false, "OSError", msg, errno */
static int l_kill(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  int sig = (int)luaL_checkinteger(L, 2);
  if (kill(pid, sig) < 0) return mproc_fail_errno(L, errno, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* fd_close(fd): for descriptors handed out by the core */
static int l_close_fd(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  lua_pushboolean(L, close(fd) == 0);
  return 1;
}

/* }====================================================================== */

int mproc_open_proc(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"process_fork", l_proc_fork},
    {"fork", l_fork},
    {"exit", l_exit},
    {"process_spawn", l_spawn_proc},
    {"process_boot_send", l_boot_send},
    {"process_boot_recv", l_boot_recv},
    {"process_spawned_setup", l_spawned_setup},
    {"tracker_export", l_tracker_export},
    {"process_arm_end_children", l_arm_end_children},
    {"tracker_adopt", l_tracker_adopt},
    {"tracker_ensure", l_tracker_ensure},
    {"process_spawn_watch", l_spawn_watch},
    {"process_thread_count", l_thread_count},
    {"process_exe_path", l_exe_path},
    {"process_set_comm", l_set_comm},
    {"fd_send", l_fd_send},
    {"fd_recv", l_fd_recv},
    {"fd_socket_pair", l_socket_pair},
    {"fd_shutdown_at_exit", l_shutdown_at_exit},
    {"child_poll", l_child_poll},
    {"child_signal", l_child_signal},
    {"child_fileno", l_child_fileno},
    {"child_close", l_child_close},
    {"child_running", l_child_running},
    {"child_notify_fd", l_child_notify_fd},
    {"waitpid", l_waitpid},
    {"process_fork_sentinel", l_fork_sentinel},
    {"getpid", l_getpid},
    {"getppid", l_getppid},
    {"cpu_count", l_cpu_count},
    {"kill", l_kill},
    {"fd_close", l_close_fd},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", l_child_close},
    {"__close", l_child_close},
    {NULL, NULL}
  };
  mproc_newclass(L, CHILD_T, NULL, meta);
  mproc_setfuncs(L, funcs);
  lua_pushinteger(L, SIGTERM);
  lua_setfield(L, -2, "SIGTERM");
  lua_pushinteger(L, SIGKILL);
  lua_setfield(L, -2, "SIGKILL");
  /* the errno a status-first failure carries, where Lua code tells them apart */
  lua_pushinteger(L, ENOENT);
  lua_setfield(L, -2, "ENOENT");
  return 0;
}
