/*
 * pingpong.c: the floor under the pipe bench, in plain C.  A parent and a
 * forked child bounce a 16-byte message over a socketpair, first with
 * blocking reads, then with non-blocking reads that spin (sched_yield
 * between tries) before blocking, as src/core/pipe.c does.  Prints microseconds
 * per round trip.  Not part of the build:
 *   cc -O2 -o /tmp/pingpong bench/pingpong.c && /tmp/pingpong [rounds]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Reads n bytes; spin > 0: non-blocking tries for up to spin seconds first. */
static int get(int fd, char *p, size_t n, double spin) {
  size_t got = 0;
  double t0 = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r > 0) { got += (size_t)r; continue; }
    if (r == 0) return -1;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -1;
    if (spin > 0) {
      if (t0 == 0) t0 = now();
      if (now() - t0 < spin) { sched_yield(); continue; }
    }
    struct pollfd pf = { fd, POLLIN, 0 };
    poll(&pf, 1, -1);
  }
  return 0;
}

static void put(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) { struct pollfd pf = { fd, POLLOUT, 0 }; poll(&pf, 1, -1); continue; }
      exit(1);
    }
    p += r; n -= (size_t)r;
  }
}

static double run(long rounds, double spin) {
  int sv[2];
  char msg[16] = "ping";
  pid_t pid;
  double t0;
  long i;
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) exit(1);
  if (spin > 0) {
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
  }
  pid = fork();
  if (pid == 0) {
    close(sv[0]);
    while (get(sv[1], msg, sizeof msg, spin) == 0) put(sv[1], msg, sizeof msg);
    _exit(0);
  }
  close(sv[1]);
  t0 = now();
  for (i = 0; i < rounds; i++) {
    put(sv[0], msg, sizeof msg);
    if (get(sv[0], msg, sizeof msg, spin) < 0) exit(1);
  }
  t0 = (now() - t0) / (double)rounds;
  close(sv[0]);
  waitpid(pid, NULL, 0);
  return t0;
}

int main(int argc, char **argv) {
  long rounds = argc > 1 ? atol(argv[1]) : 100000;
  printf("blocking reads:        %.2f us per round trip\n", run(rounds, 0) * 1e6);
  printf("spin 50 us, then block: %.2f us per round trip\n", run(rounds, 50e-6) * 1e6);
  return 0;
}
