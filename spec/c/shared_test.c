/* Shared segments (src/core/shared.c) from plain C: a name lives while a live
 * process holds it, the last holder unlinks it, slab objects share
 * segments, and a SIGKILLed creator's segments are swept. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include "check.h"
#include "mproc.h"

static int exists(const char *name) {
  int fd = shm_open(name, O_RDONLY, 0);
  if (fd < 0) return 0;
  close(fd);
  return 1;
}

static void last_holder_unlinks(void) {
  mproc_seg *s = mproc_seg_create(MPROC_SEG_USER, 4096, NULL);
  char name[64];
  int go[2], done[2];
  char c;
  pid_t p;
  CHECK(s != NULL);
  if (!s) return;
  snprintf(name, sizeof name, "%s", s->name);
  CHECK_EQ(pipe(go), 0);
  CHECK_EQ(pipe(done), 0);
  p = fork();
  if (p == 0) {          /* attaches by name: a holder of its own */
    mproc_seg *t = mproc_seg_attach(name);
    if (!t) _exit(1);
    mproc_seg_data(t)[0] = 'k';
    if (write(done[1], "1", 1) != 1) _exit(2);
    if (read(go[0], &c, 1) != 1) _exit(3);
    mproc_seg_release(t);
    mproc_shm_cleanup();   /* what a child's exit path does */
    _exit(0);
  }
  CHECK_EQ(read(done[0], &c, 1), 1);
  CHECK_EQ(mproc_seg_data(s)[0], 'k');
  mproc_seg_release(s);  /* the creator lets go first */
  CHECK(exists(name));   /* the child still holds it */
  CHECK_EQ(write(go[1], "1", 1), 1);
  CHECK_EQ(check_wait(p), 0);
  CHECK(!exists(name));  /* the last holder unlinked it */
  close(go[0]); close(go[1]); close(done[0]); close(done[1]);
}

static void attach_refuses_what_is_not_ours(void) {
  int fd = shm_open("/mproc-core-test-foreign", O_CREAT | O_RDWR, 0600);
  CHECK(fd >= 0);
  CHECK_EQ(ftruncate(fd, 4096), 0);
  close(fd);
  CHECK(mproc_seg_attach("/mproc-core-test-foreign") == NULL);
  CHECK_EQ(errno, EINVAL);
  shm_unlink("/mproc-core-test-foreign");
  CHECK(mproc_seg_attach("/mproc-core-test-gone") == NULL);
  CHECK_EQ(errno, ENOENT);
}

static void slab_objects_share_a_segment(void) {
  mproc_seg *a, *b;
  char *x = mproc_slab_alloc(100, &a), *y = mproc_slab_alloc(100, &b);
  CHECK(x && y);
  CHECK(a == b);
  CHECK(((uintptr_t)x & 63) == 0 && ((uintptr_t)y & 63) == 0);
  CHECK(x[0] == 0 && x[99] == 0);
  mproc_seg_release(a);
  mproc_seg_release(b);
}

/* A creator SIGKILLed: the segment tracker (or the sweep at a parent's
 * exit) removes its names once nobody holds them. */
static void killed_creators_segments_go(void) {
  int fds[2];
  char name[64] = { 0 };
  pid_t p;
  int i;
  CHECK_EQ(pipe(fds), 0);
  p = fork();
  if (p == 0) {
    mproc_seg *s = mproc_seg_create(MPROC_SEG_USER, 4096, NULL);
    if (!s || write(fds[1], s->name, sizeof name) != (ssize_t)sizeof name) _exit(1);
    pause();
    _exit(0);
  }
  CHECK_EQ(read(fds[0], name, sizeof name), (long)sizeof name);
  CHECK(exists(name));
  kill(p, SIGKILL);
  CHECK_EQ(check_wait(p), -SIGKILL);
  for (i = 0; i < 60 && exists(name); i++) check_sleep(0.05);   /* 3 s */
  CHECK(!exists(name));
  close(fds[0]);
  close(fds[1]);
}

int main(void) {
  mproc_shm_init();
  RUN(last_holder_unlinks);
  RUN(attach_refuses_what_is_not_ours);
  RUN(slab_objects_share_a_segment);
  RUN(killed_creators_segments_go);
  return check_report("shared");
}
