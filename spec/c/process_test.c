/* Children from plain C (src/core/process.c, src/core/subprocess.c): exit codes and
 * sentinels, no zombie, a child ends with its parent, and spawned programs
 * with pipes and their own process group. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include "check.h"
#include "mproc.h"
#include "subprocess.h"

static int readable_within(int fd, int ms) {
  struct pollfd p = { fd, POLLIN, 0 };
  return poll(&p, 1, ms) == 1;
}

static void fork_gives_exit_codes_and_sentinels(void) {
  int sentinel = -1, status = 0;
  pid_t p = mproc_fork(0, &sentinel);
  if (p == 0) mproc_exit(7);
  CHECK(p > 0 && sentinel >= 0);
  CHECK(readable_within(sentinel, 5000));     /* EOF once it ended */
  CHECK_EQ(mproc_child_status(p, 1, &status), 1);
  CHECK_EQ(mproc_exitcode(status), 7);
  CHECK_EQ(mproc_child_status(p, 0, &status), -1);   /* forgotten */
  CHECK_EQ(errno, ECHILD);
  close(sentinel);
  p = mproc_fork(0, &sentinel);
  if (p == 0) { pause(); mproc_exit(0); }
  CHECK_EQ(mproc_child_running(p), 1);
  CHECK_EQ(mproc_child_signal(p, SIGKILL), 0);
  CHECK(readable_within(sentinel, 5000));
  CHECK_EQ(mproc_child_status(p, 1, &status), 1);
  CHECK_EQ(mproc_exitcode(status), -SIGKILL);
  CHECK_EQ(mproc_child_signal(p, SIGKILL), 0);       /* ended: a no-op */
  close(sentinel);
}

/* A middle process SIGKILLed: its mproc child must not outlive it. */
static void child_ends_with_its_parent(void) {
  int fds[2];
  pid_t mid, grandchild = 0;
  int i, alive = 1;
  CHECK_EQ(pipe(fds), 0);
  mid = fork();
  if (mid == 0) {
    int s;
    pid_t g = mproc_fork(0, &s);
    if (g == 0) { for (;;) pause(); }
    if (write(fds[1], &g, sizeof g) != sizeof g) _exit(2);
    for (;;) pause();
  }
  CHECK_EQ(read(fds[0], &grandchild, sizeof grandchild), (long)sizeof grandchild);
  kill(mid, SIGKILL);
  CHECK_EQ(check_wait(mid), -SIGKILL);
  for (i = 0; i < 40 && alive; i++) {   /* within 2 s */
    alive = kill(grandchild, 0) == 0;
    if (alive) check_sleep(0.05);
  }
  CHECK(!alive);
  close(fds[0]);
  close(fds[1]);
}

static void spawn_runs_programs_with_pipes(void) {
  char *argv[] = { "/bin/sh", "-c", "read x; echo \"got $x\"; echo err >&2; exit 3", NULL };
  mproc_spawn_opts o;
  int pipes[3] = { -1, -1, -1 }, status = 0;
  pid_t pid;
  char buf[64];
  ssize_t n;
  memset(&o, 0, sizeof o);
  o.argv = argv;
  o.mode[0] = o.mode[1] = MPROC_STDIO_PIPE;
  o.mode[2] = MPROC_STDIO_DEVNULL;
  CHECK_EQ(mproc_spawn(&o, &pid, pipes), 0);
  CHECK_EQ(mproc_write_nosigpipe(pipes[0], "hi\n", 3), 3);
  close(pipes[0]);
  CHECK(readable_within(pipes[1], 5000));
  n = read(pipes[1], buf, sizeof buf - 1);
  CHECK_EQ(n, 7);
  if (n > 0) { buf[n] = 0; CHECK(strcmp(buf, "got hi\n") == 0); }
  close(pipes[1]);
  CHECK_EQ(mproc_spawn_reap(pid, 1, &status), 1);
  CHECK_EQ(mproc_exitcode(status), 3);
}

static void spawn_reports_a_missing_program(void) {
  char *argv[] = { "/nonexistent/prog", NULL };
  mproc_spawn_opts o;
  int pipes[3] = { -1, -1, -1 };
  pid_t pid;
  memset(&o, 0, sizeof o);
  o.argv = argv;
  CHECK_EQ(mproc_spawn(&o, &pid, pipes), -1);
  CHECK_EQ(errno, ENOENT);
}

static void spawn_new_session_gets_its_own_group(void) {
  char *argv[] = { "/bin/sleep", "5", NULL };
  mproc_spawn_opts o;
  int pipes[3] = { -1, -1, -1 }, status = 0;
  pid_t pid;
  memset(&o, 0, sizeof o);
  o.argv = argv;
  o.new_session = 1;
  CHECK_EQ(mproc_spawn(&o, &pid, pipes), 0);
  CHECK_EQ(getpgid(pid), pid);
  CHECK_EQ(kill(-pid, SIGTERM), 0);          /* the whole group */
  CHECK_EQ(mproc_spawn_reap(pid, 1, &status), 1);
  CHECK_EQ(mproc_exitcode(status), -SIGTERM);
}

int main(void) {
  RUN(fork_gives_exit_codes_and_sentinels);
  RUN(child_ends_with_its_parent);
  RUN(spawn_runs_programs_with_pipes);
  RUN(spawn_reports_a_missing_program);
  RUN(spawn_new_session_gets_its_own_group);
  return check_report("process");
}
