/* Running other programs from plain C (src/core/subprocess.c): pipes,
 * exec errors, a process group of their own, and communicate's pump, which
 * feeds stdin while draining stdout and stderr so that no pipe fills up
 * while we wait on another. */
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
  CHECK_EQ(mproc_child_status(pid, 1, &status), 1);
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
  CHECK_EQ(mproc_child_status(pid, 1, &status), 1);
  CHECK_EQ(mproc_exitcode(status), -SIGTERM);
}

static pid_t run_sh(const char *script, int pipes[3], int err_mode) {
  char *argv[] = { "/bin/sh", "-c", NULL, NULL };
  mproc_spawn_opts o;
  pid_t pid = 0;
  argv[2] = (char *)script;
  memset(&o, 0, sizeof o);
  o.argv = argv;
  o.mode[0] = o.mode[1] = MPROC_STDIO_PIPE;
  o.mode[2] = err_mode;
  CHECK_EQ(mproc_spawn(&o, &pid, pipes), 0);
  return pid;
}

/* 1 MiB through cat: far more than a pipe holds, in both directions. */
static void communicate_feeds_and_drains_at_once(void) {
  size_t n = 1u << 20, i;
  char *in = malloc(n);
  int pipes[3], status = 0, ok = 1;
  mproc_comm c;
  pid_t pid = run_sh("cat; echo done >&2", pipes, MPROC_STDIO_PIPE);
  CHECK(in != NULL);
  for (i = 0; i < n; i++) in[i] = (char)('a' + i % 26);
  mproc_comm_start(&c, pipes, in, n);
  CHECK_EQ(mproc_comm_run(&c, 10), 1);
  CHECK_EQ(pipes[0], -1);
  CHECK_EQ(pipes[1], -1);
  CHECK_EQ(pipes[2], -1);
  CHECK_EQ(c.out[0].len, n);
  for (i = 0; i < n && i < c.out[0].len; i++) ok &= c.out[0].data[i] == in[i];
  CHECK(ok);
  CHECK_EQ(c.out[1].len, 5);
  CHECK(c.out[1].len == 5 && memcmp(c.out[1].data, "done\n", 5) == 0);
  mproc_comm_end(&c);
  CHECK_EQ(mproc_child_status(pid, 1, &status), 1);
  CHECK_EQ(mproc_exitcode(status), 0);
  free(in);
}

/* step never blocks: it says what to wait for. */
static void communicate_step_names_what_to_wait_for(void) {
  int pipes[3], fd = -2, slice = -1, status = 0;
  mproc_comm c;
  pid_t pid = run_sh("read x; echo \"<$x>\"", pipes, MPROC_STDIO_INHERIT);
  mproc_comm_start(&c, pipes, NULL, 0);
  CHECK_EQ(pipes[0], -1);              /* no input: stdin closed at once */
  CHECK_EQ(mproc_comm_step(&c, &fd, &slice), 0);
  CHECK(fd >= 0);
  if (mproc_poller_fileno(&c.set) >= 0) {
    CHECK_EQ(fd, mproc_poller_fileno(&c.set));
    CHECK_EQ(slice, 0);
  }
  CHECK(readable_within(fd, 5000));
  CHECK_EQ(mproc_comm_run(&c, 5), 1);
  CHECK(c.out[0].len == 3 && memcmp(c.out[0].data, "<>\n", 3) == 0);
  CHECK(c.out[1].data == NULL);        /* stderr was not a pipe */
  mproc_comm_end(&c);
  CHECK_EQ(mproc_child_status(pid, 1, &status), 1);
}

/* A deadline passes, nothing is lost, and a later run goes on. */
static void communicate_times_out_and_resumes(void) {
  int pipes[3], status = 0;
  mproc_comm c;
  double t0;
  pid_t pid = run_sh("echo early; sleep 0.4; echo late", pipes, MPROC_STDIO_DEVNULL);
  mproc_comm_start(&c, pipes, NULL, 0);
  t0 = mproc_now();
  CHECK_EQ(mproc_comm_run(&c, 0.1), 0);
  CHECK(mproc_now() - t0 < 0.35);
  CHECK_EQ(mproc_comm_run(&c, 5), 1);
  CHECK(c.out[0].len == 11 && memcmp(c.out[0].data, "early\nlate\n", 11) == 0);
  mproc_comm_end(&c);
  CHECK_EQ(mproc_child_status(pid, 1, &status), 1);
}

/* A program that never reads its input: EPIPE ends the feeding, no
 * SIGPIPE kills us. */
static void communicate_survives_a_program_ignoring_stdin(void) {
  size_t n = 4u << 20;
  char *in = calloc(1, n);
  int pipes[3], status = 0;
  mproc_comm c;
  pid_t pid = run_sh("exec 0<&-; echo bye", pipes, MPROC_STDIO_INHERIT);
  CHECK(in != NULL);
  mproc_comm_start(&c, pipes, in, n);
  CHECK_EQ(mproc_comm_run(&c, 10), 1);
  CHECK(c.inpos < n);
  CHECK(c.out[0].len == 4 && memcmp(c.out[0].data, "bye\n", 4) == 0);
  mproc_comm_end(&c);
  CHECK_EQ(mproc_child_status(pid, 1, &status), 1);
  free(in);
}

/* One child table: a program's end is seen through a pidfd (Linux), a
 * forgotten one is reaped by the SIGCHLD handler (no zombie), and none is
 * joined at our exit (Python leaves its Popen children running). */
static void programs_are_children_of_the_table(void) {
  char *argv[] = { "/bin/sleep", "0.1", NULL };
  char *longer[] = { "/bin/sleep", "5", NULL };
  mproc_spawn_opts o;
  int pipes[3], status = 0, fd, i, fds[2];
  pid_t pid, helper, sleeper = 0;
  double t0;
  memset(&o, 0, sizeof o);
  o.argv = argv;
  CHECK_EQ(mproc_spawn(&o, &pid, pipes), 0);
  CHECK_EQ(mproc_child_running(pid), 1);
  fd = mproc_child_pidfd(pid);
  if (fd >= 0) {
    CHECK_EQ(mproc_wait_fd(fd, MPROC_WAIT_READ, 5), 1);
    close(fd);
  }
  CHECK_EQ(mproc_child_status(pid, 1, &status), 1);
  CHECK_EQ(mproc_exitcode(status), 0);
  CHECK_EQ(mproc_child_pidfd(pid), -1);            /* gone from the table */

  CHECK_EQ(mproc_spawn(&o, &pid, pipes), 0);
  mproc_child_release(pid);
  for (i = 0; i < 100 && kill(pid, 0) == 0; i++) check_sleep(0.02);
  CHECK(kill(pid, 0) < 0 && errno == ESRCH);       /* reaped, not a zombie */

  CHECK_EQ(pipe(fds), 0);
  helper = fork();
  if (helper == 0) {
    pid_t p;
    o.argv = longer;
    if (mproc_spawn(&o, &p, pipes) < 0) _exit(2);
    if (write(fds[1], &p, sizeof p) != sizeof p) _exit(3);
    mproc_exit(0);                                 /* the exit path */
  }
  t0 = mproc_now();
  CHECK_EQ(check_wait(helper), 0);
  CHECK(mproc_now() - t0 < 3);                     /* did not wait for sleep 5 */
  CHECK_EQ(read(fds[0], &sleeper, sizeof sleeper), (long)sizeof sleeper);
  if (sleeper > 0) kill(sleeper, SIGKILL);
  close(fds[0]);
  close(fds[1]);
}

int main(void) {
  signal(SIGPIPE, SIG_DFL);   /* a SIGPIPE would end the test */
  RUN(spawn_runs_programs_with_pipes);
  RUN(spawn_reports_a_missing_program);
  RUN(spawn_new_session_gets_its_own_group);
  RUN(programs_are_children_of_the_table);
  RUN(communicate_feeds_and_drains_at_once);
  RUN(communicate_step_names_what_to_wait_for);
  RUN(communicate_times_out_and_resumes);
  RUN(communicate_survives_a_program_ignoring_stdin);
  return check_report("subprocess");
}
