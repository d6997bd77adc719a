/*
 * thread_host.c: a program that embeds Lua the way game engines and
 * editors do, with a second thread of its own running, then runs the Lua
 * file argv[1] (spec/start_method_spec.lua drives it).  fork is unsafe
 * here; mproc must refuse it and work through the spawn start method.
 * The same source builds against Lua 5.4, 5.3, 5.1 and LuaJIT (`make
 * hosts`: build/thread_host, build-<vm>/thread_host).
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

static volatile int stop;

/* The host's own work: holds a lock most of the time, as an audio or
 * render thread would. */
static pthread_mutex_t host_lock = PTHREAD_MUTEX_INITIALIZER;

static void *host_thread(void *arg) {
  struct timespec ts = {0, 1000000};
  (void)arg;
  while (!stop) {
    pthread_mutex_lock(&host_lock);
    nanosleep(&ts, NULL);
    pthread_mutex_unlock(&host_lock);
  }
  return NULL;
}

int main(int argc, char **argv) {
  pthread_t t;
  lua_State *L;
  int status;
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua\n", argv[0]);
    return 2;
  }
  if (pthread_create(&t, NULL, host_thread, NULL) != 0) {
    fprintf(stderr, "thread_host: cannot start the thread\n");
    return 2;
  }
  L = luaL_newstate();
  luaL_openlibs(L);   /* no `arg` table: this is not the lua program */
  status = luaL_dofile(L, argv[1]);
  if (status != 0) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "thread_host: %s\n", msg ? msg : "(error object is not a string)");
  }
  lua_close(L);
  stop = 1;
  pthread_join(t, NULL);
  return status == 0 ? 0 : 1;
}
