/*
 * ringfloor.c: the raw floor for mp.Queue: a single-producer single-
 * consumer byte ring in shared memory between two processes (fork), no
 * lock, no codec, busy-waiting on atomic head/tail.  Prints bench lines:
 *   floor_small   msgs/s  (8-byte messages)
 *   floor_1MiB    MB/s    (1 MiB messages: one copy in, one copy out)
 * usage: cc -O2 -o ringfloor bench/ringfloor.c && ./ringfloor
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CAP ((size_t)4 << 20)

typedef struct { uint64_t head, pad1[7], tail, pad2[7]; char data[]; } ring;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put(ring *r, const char *p, size_t n) {
  uint64_t t = __atomic_load_n(&r->tail, __ATOMIC_RELAXED), i;
  while (CAP - (t - __atomic_load_n(&r->head, __ATOMIC_ACQUIRE)) < n) ;
  for (i = 0; i < n;) {              /* wrap-aware copy */
    size_t off = (t + i) % CAP, k = CAP - off < n - i ? CAP - off : n - i;
    memcpy(r->data + off, p + i, k);
    i += k;
  }
  __atomic_store_n(&r->tail, t + n, __ATOMIC_RELEASE);
}

static void get(ring *r, char *p, size_t n) {
  uint64_t h = __atomic_load_n(&r->head, __ATOMIC_RELAXED), i;
  while (__atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) - h < n) ;
  for (i = 0; i < n;) {
    size_t off = (h + i) % CAP, k = CAP - off < n - i ? CAP - off : n - i;
    memcpy(p + i, r->data + off, k);
    i += k;
  }
  __atomic_store_n(&r->head, h + n, __ATOMIC_RELEASE);
}

static double run(ring *r, size_t msg, long count) {
  char *buf = malloc(msg);
  double t0;
  long i;
  pid_t pid;
  memset(buf, 7, msg);
  r->head = r->tail = 0;
  pid = fork();
  if (pid == 0) {
    for (i = 0; i < count; i++) put(r, buf, msg);
    _exit(0);
  }
  t0 = now();
  for (i = 0; i < count; i++) get(r, buf, msg);
  t0 = now() - t0;
  waitpid(pid, NULL, 0);
  free(buf);
  return t0;
}

int main(void) {
  ring *r = mmap(NULL, sizeof(ring) + CAP, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  long n = 5000000, m = 2000;
  double dt;
  if (r == MAP_FAILED) return 1;
  dt = run(r, 8, n);
  printf("floor_small\t%.9g\tmsgs/s\n", n / dt);
  dt = run(r, (size_t)1 << 20, m);
  printf("floor_1MiB\t%.9g\tMB/s\n", m * 1.048576 / dt);
  return 0;
}
