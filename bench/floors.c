/* What the OS allows on this machine, for the process and subprocess
 * cases: fork + _exit + waitpid, and posix_spawn of /bin/true + waitpid,
 * from a small C program.  Prints "metric<TAB>seconds" lines. */
#define _POSIX_C_SOURCE 200809L
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  int i, n = 400, st;
  double t0, best = 1e9;
  char *child[] = {"/bin/true", NULL};
  int spawn = argc > 1 && strcmp(argv[1], "spawn") == 0;
  for (int rep = 0; rep < 3; rep++) {
    t0 = now();
    for (i = 0; i < n; i++) {
      pid_t p;
      if (spawn) {
        if (posix_spawn(&p, child[0], NULL, NULL, child, environ) != 0) return 1;
      } else {
        p = fork();
        if (p == 0) _exit(0);
      }
      waitpid(p, &st, 0);
    }
    if ((now() - t0) / n < best) best = (now() - t0) / n;
  }
  printf("%s\t%.9g\n", spawn ? "c_spawn_floor" : "c_fork_floor", best);
  return 0;
}
