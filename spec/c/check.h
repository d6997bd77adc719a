/* check.h: the little harness of the core C tests in spec/c/.
 * A test is a function; CHECK records a failure with its line and goes on,
 * so one run lists every broken expectation.  Death tests fork a child and
 * kill it at a chosen point: the core must survive whoever dies. */
#ifndef MPROC_CHECK_H
#define MPROC_CHECK_H
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int check_failed, check_run;

#define CHECK(c) do { if (!(c)) { check_failed++; \
  fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); } } while (0)
#define CHECK_EQ(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
  if (a_ != b_) { check_failed++; fprintf(stderr, "%s:%d: %s == %s failed: %lld vs %lld\n", \
  __FILE__, __LINE__, #a, #b, a_, b_); } } while (0)

#define RUN(t) do { int before_ = check_failed; check_run++; t(); \
  printf("%s %s\n", check_failed == before_ ? "ok  " : "FAIL", #t); fflush(stdout); } while (0)

static inline int check_report(const char *what) {
  printf("%s: %d tests, %d failed checks\n", what, check_run, check_failed);
  return check_failed ? 1 : 0;
}

/* Sleeps s seconds (not interrupted by SIGCHLD). */
static inline void check_sleep(double s) {
  struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
  while (nanosleep(&ts, &ts) != 0) {}
}

/* Waits for a plain fork() child; its exit code, or -signal. */
static inline int check_wait(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0) {}
  return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}
#endif
