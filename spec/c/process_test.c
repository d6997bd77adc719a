/* Children from plain C (src/core/process.c): exit codes and sentinels, no
 * zombie, a child ends with its parent.  Programs run by src/core/subprocess.c:
 * spec/c/subprocess_test.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include "check.h"
#include "mproc.h"

/* Running, not a zombie: an orphan's zombie waits for init, which may
 * reap it seconds later. */
static int running(pid_t pid) {
  char path[64], buf[256], *p;
  ssize_t n;
  int fd;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  fd = open(path, O_RDONLY);
  if (fd < 0) return kill(pid, 0) == 0;   /* no /proc: the old test */
  n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  p = strrchr(buf, ')');
  return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

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
    alive = running(grandchild);
    if (alive) check_sleep(0.05);
  }
  CHECK(!alive);
  close(fds[0]);
  close(fds[1]);
}

int main(void) {
  RUN(fork_gives_exit_codes_and_sentinels);
  RUN(child_ends_with_its_parent);
  return check_report("process");
}
