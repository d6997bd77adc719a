/*
 * src/core/pipe.c: framed messages over a non-blocking stream socket (src/core/pipe.h).
 *
 * Receiving reads the header, then exactly the body: never past the frame,
 * so a socket with nothing readable means "no message", for us and for any
 * event loop polling the descriptor.  A receiver that finds nothing spins a
 * little before the caller blocks: a blocking wake-up on another CPU costs
 * tens of microseconds, more than a whole small round trip, so when replies
 * tend to come fast, catching them while still running pays.  The spin
 * yields the CPU between tries: on a busy machine the peer may be waiting
 * for our very CPU, and a plain busy loop would only delay it.  The spin
 * budget adapts: it halves each time a spin ends empty-handed (an idle
 * receiver soon stops spinning at all) and doubles when a message arrived
 * shortly after the receiver gave up and blocked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sched.h>
#include <unistd.h>

#include "mproc.h"

#ifdef MSG_NOSIGNAL
#define SEND_FLAGS MSG_NOSIGNAL
#else
#define SEND_FLAGS 0  /* SO_NOSIGPIPE is set on the socket instead */
#endif

#define SPIN_MAX    50e-6   /* longest spin before blocking, seconds */
#define SPIN_MIN    1e-6    /* below this the spin is off */
#define SPIN_REGROW 5e-6    /* budget when spinning is switched back on */
#define QUICK_WAIT  100e-6  /* a blocked wait this short means spin more */
#define KEEP_RBUF   (64 * 1024)  /* receive buffers up to this are kept */

/* {======================================================================
 * Setup and teardown
 * ======================================================================= */

static int prepare_fd(int fd) {
#ifdef SO_NOSIGPIPE
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) < 0) return -1;
#endif
#ifdef SOCK_CLOEXEC  /* socketpair's flags did the rest */
  (void)fd;
  return 0;
#else
  if (mproc_set_nonblock(fd, 1) < 0) return -1;
  return mproc_set_cloexec(fd, 1);
#endif
}

int mproc_conn_pair(int fds[2], int duplex) {
  int sv[2], type = SOCK_STREAM, e;
#ifdef SOCK_CLOEXEC
  type |= SOCK_CLOEXEC | SOCK_NONBLOCK;
#endif
  if (socketpair(AF_UNIX, type, 0, sv) < 0) return -1;
  if (prepare_fd(sv[0]) < 0 || prepare_fd(sv[1]) < 0) goto fail;
  if (!duplex) {  /* sv[0] receives, sv[1] sends */
    if (shutdown(sv[0], SHUT_WR) < 0 || shutdown(sv[1], SHUT_RD) < 0) goto fail;
  }
  fds[0] = sv[0];
  fds[1] = sv[1];
  return 0;
fail:
  e = errno;
  close(sv[0]);
  close(sv[1]);
  errno = e;
  return -1;
}

static void close_fds(int *fds, int *n) {
  int i;
  for (i = 0; i < *n; i++) if (fds[i] >= 0) close(fds[i]);
  *n = 0;
}

void mproc_conn_init(mproc_conn *c, int fd, int flags) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
  c->flags = flags;
  c->spin = SPIN_MAX;
}

int mproc_conn_close(mproc_conn *c) {
  int r = 0;
  if (c->fd >= 0) {
    r = close(c->fd);  /* no retry on EINTR: the fd is gone either way */
    c->fd = -1;
  }
  free(c->rbuf);
  c->rbuf = NULL;
  c->rcap = c->rgot = c->rhave = 0;
  c->rbody = 0;
  close_fds(c->rfds, &c->nrfds);
  mproc_conn_send_reset(c);
  return r;
}

/* }====================================================================== */

/* {======================================================================
 * Sending
 * ======================================================================= */

size_t mproc_frame_header(unsigned char *hdr, uint64_t n) {
  int i;
  if (n < MPROC_FRAME_LONG) {
    for (i = 3; i >= 0; i--) { hdr[i] = (unsigned char)(n & 0xff); n >>= 8; }
    return 4;
  }
  hdr[0] = hdr[1] = hdr[2] = hdr[3] = 0xff;
  for (i = 11; i >= 4; i--) { hdr[i] = (unsigned char)(n & 0xff); n >>= 8; }
  return 12;
}

void mproc_conn_send_reset(mproc_conn *c) {
  close_fds(c->wfds, &c->nwfds);
  c->wpending = 0;
  c->wdata = NULL;
  c->wlen = c->wpos = c->whlen = 0;
}

int mproc_conn_flush(mproc_conn *c) {
  while (c->wpending) {
    struct iovec iov[2];
    struct msghdr m;
    union {  /* aligned room for the SCM_RIGHTS message */
      struct cmsghdr h;
      char space[CMSG_SPACE(sizeof(int) * MPROC_CONN_MAXFDS)];
    } cm;
    ssize_t r;
    int k = 0;
    size_t pos = c->wpos;
    if (pos < c->whlen) {
      iov[k].iov_base = c->whdr + pos;
      iov[k].iov_len = c->whlen - pos;
      k++;
      pos = 0;
    } else {
      pos -= c->whlen;
    }
    if (pos < c->wlen) {
      iov[k].iov_base = (void *)(c->wdata + pos);
      iov[k].iov_len = c->wlen - pos;
      k++;
    }
    if (k == 0) { mproc_conn_send_reset(c); break; }
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)k;
    if (c->nwfds > 0) {  /* descriptors go with the first bytes sent */
      struct cmsghdr *h;
      size_t fl = sizeof(int) * (size_t)c->nwfds;
      memset(&cm, 0, sizeof cm);
      m.msg_control = cm.space;
      m.msg_controllen = CMSG_SPACE(fl);
      h = CMSG_FIRSTHDR(&m);
      h->cmsg_level = SOL_SOCKET;
      h->cmsg_type = SCM_RIGHTS;
      h->cmsg_len = CMSG_LEN(fl);
      memcpy(CMSG_DATA(h), c->wfds, fl);
    }
    r = sendmsg(c->fd, &m, SEND_FLAGS);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return MPROC_CONN_AGAIN;
      mproc_conn_send_reset(c);
      return MPROC_CONN_ERROR;
    }
    if (r > 0) close_fds(c->wfds, &c->nwfds);  /* they are on their way */
    c->wpos += (size_t)r;
    if (c->wpos >= c->whlen + c->wlen) mproc_conn_send_reset(c);
  }
  return MPROC_CONN_DONE;
}

int mproc_conn_send(mproc_conn *c, const char *data, size_t n, size_t hdr_inline) {
  return mproc_conn_send_fds(c, data, n, hdr_inline, NULL, 0);
}

int mproc_conn_send_fds(mproc_conn *c, const char *data, size_t n, size_t hdr_inline,
                        const int *fds, int nfds) {
  int i;
  close_fds(c->wfds, &c->nwfds);
  if (nfds > MPROC_CONN_MAXFDS) { errno = EINVAL; return MPROC_CONN_ERROR; }
  for (i = 0; i < nfds; i++) {
    int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
    if (d < 0) { close_fds(c->wfds, &c->nwfds); return MPROC_CONN_ERROR; }
    c->wfds[c->nwfds++] = d;
  }
  if (hdr_inline) {
    c->whlen = 0;
    c->wdata = data - hdr_inline;
    c->wlen = n + hdr_inline;
  } else {
    c->whlen = mproc_frame_header(c->whdr, n);
    c->wdata = data;
    c->wlen = n;
  }
  c->wpos = 0;
  c->wpending = 1;
  return mproc_conn_flush(c);
}

/* }====================================================================== */

/* {======================================================================
 * Receiving
 * ======================================================================= */

static void recv_reset(mproc_conn *c) {
  close_fds(c->rfds, &c->nrfds);  /* passed with the last frame, not taken */
  c->rhave = 0;
  c->rbody = 0;
  c->rgot = 0;
  c->rlen = 0;
}

int mproc_conn_recv_partial(const mproc_conn *c) {
  return c->rhave > 0;
}

void mproc_conn_recv_done(mproc_conn *c) {
  if (c->rcap > KEEP_RBUF) {
    free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = 0;
  }
}

int mproc_conn_take_fds(mproc_conn *c, int *fds) {
  int n = c->nrfds;
  memcpy(fds, c->rfds, sizeof(int) * (size_t)n);
  c->nrfds = 0;
  return n;
}

/* Keeps the descriptors of an SCM_RIGHTS message (closing any beyond our
 * limit: a peer cannot make us leak them). */
static void keep_fds(mproc_conn *c, struct msghdr *m) {
  struct cmsghdr *h;
  for (h = CMSG_FIRSTHDR(m); h; h = CMSG_NXTHDR(m, h)) {
    if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
      size_t i, n = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (i = 0; i < n; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
        if (c->nrfds < MPROC_CONN_MAXFDS) {
          mproc_set_cloexec(fd, 1);
          c->rfds[c->nrfds++] = fd;
        } else {
          close(fd);
        }
      }
    }
  }
}

/* One read into the header (recvmsg: descriptors passed along arrive with
 * a frame's first bytes).  Returns >0 bytes read, 0 EOF, -1 error (errno;
 * EAGAIN when nothing is there). */
static ssize_t read_header(mproc_conn *c) {
  size_t want = c->rhave < 4 ? 4 - c->rhave : MPROC_FRAME_HDRMAX - c->rhave;
  union {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int) * MPROC_CONN_MAXFDS)];
  } cm;
  struct iovec iov;
  struct msghdr m;
  ssize_t r;
  int flags = 0;
#ifdef MSG_CMSG_CLOEXEC
  flags |= MSG_CMSG_CLOEXEC;
#endif
  iov.iov_base = c->rhdr + c->rhave;
  iov.iov_len = want;
  memset(&m, 0, sizeof m);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = cm.space;
  m.msg_controllen = sizeof cm.space;
  do r = recvmsg(c->fd, &m, flags); while (r < 0 && errno == EINTR);
  if (r > 0 && m.msg_controllen > 0) keep_fds(c, &m);
  return r;
}

/* Reads the first bytes of a frame, spinning up to c->spin when nothing is
 * there yet, and adapts the spin budget. */
static ssize_t first_read(mproc_conn *c) {
  ssize_t r = read_header(c);
  double t0, waited = c->wait_start;
  if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
    if (waited > 0) {  /* we blocked before this: was the wait short? */
      c->wait_start = 0;
      if (mproc_now() - waited < QUICK_WAIT) {
        c->spin = c->spin < SPIN_REGROW ? SPIN_REGROW : c->spin * 2;
        if (c->spin > SPIN_MAX) c->spin = SPIN_MAX;
      }
    }
    return r;
  }
  if (waited > 0) return r;  /* woken for nothing: already spun */
  t0 = mproc_now();
  if (c->spin >= SPIN_MIN) {
    do {
      sched_yield();  /* lets the peer run when it shares our CPU */
      r = read_header(c);
      if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        double s = c->spin * 2;  /* it paid: keep spinning, a bit longer */
        c->spin = s > SPIN_MAX ? SPIN_MAX : s;
        return r;
      }
    } while (mproc_now() - t0 < c->spin);
    c->spin /= 2;
    if (c->spin < SPIN_MIN) c->spin = 0;
  }
  c->wait_start = t0;
  errno = EAGAIN;
  return -1;
}

static int read_error(mproc_conn *c) {
  if (errno == EAGAIN || errno == EWOULDBLOCK) return MPROC_CONN_AGAIN;
  if (errno == ECONNRESET)  /* peer closed with data it had not read */
    return c->rhave ? MPROC_CONN_EOF_MID : MPROC_CONN_EOF;
  return MPROC_CONN_ERROR;
}

static uint64_t get_be(const unsigned char *p, int n) {
  uint64_t v = 0;
  int i;
  for (i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

/* Makes room for a body of c->rlen bytes.  Returns 0 or -1 (ENOMEM). */
static int body_buffer(mproc_conn *c) {
  size_t need;
  char *p;
  if (c->rlen > (uint64_t)SIZE_MAX - 1) { errno = ENOMEM; return -1; }
  need = (size_t)c->rlen;
  if (need <= c->rcap && c->rbuf) return 0;
  if (need <= KEEP_RBUF) {
    size_t cap = c->rcap < 4096 ? 4096 : c->rcap;
    while (cap < need) cap *= 2;
    p = realloc(c->rbuf, cap);
    if (!p) { errno = ENOMEM; return -1; }
    c->rbuf = p;
    c->rcap = cap;
    return 0;
  }
  free(c->rbuf);  /* a large body: exactly its size, freed after use */
  c->rbuf = NULL;
  c->rcap = 0;
  p = malloc(need);
  if (!p) { errno = ENOMEM; return -1; }
  c->rbuf = p;
  c->rcap = need;
  return 0;
}

int mproc_conn_recv(mproc_conn *c, uint64_t maxlen, const char **p, size_t *n) {
  ssize_t r;
  if (c->rbody && c->rgot == c->rlen) recv_reset(c);  /* the last frame */
  while (!c->rbody) {  /* the header */
    r = c->rhave == 0 ? first_read(c) : read_header(c);
    if (r < 0) return read_error(c);
    if (r == 0) return c->rhave ? MPROC_CONN_EOF_MID : MPROC_CONN_EOF;
    c->rhave += (size_t)r;
    if (c->rhave == 4 && get_be(c->rhdr, 4) != 0xffffffffu) {
      c->rlen = get_be(c->rhdr, 4);
    } else if (c->rhave == MPROC_FRAME_HDRMAX) {
      c->rlen = get_be(c->rhdr + 4, 8);
    } else {
      continue;
    }
    if (c->rlen > maxlen) return MPROC_CONN_TOOLONG;
    if (body_buffer(c) < 0) return MPROC_CONN_ERROR;
    c->rbody = 1;
    c->rgot = 0;
  }
  while (c->rgot < c->rlen) {  /* the body */
    size_t want = (size_t)c->rlen - c->rgot;
    if (want > (size_t)SSIZE_MAX) want = (size_t)SSIZE_MAX;
    do r = read(c->fd, c->rbuf + c->rgot, want); while (r < 0 && errno == EINTR);
    if (r < 0) return read_error(c);
    if (r == 0) return MPROC_CONN_EOF_MID;
    c->rgot += (size_t)r;
  }
  *p = c->rbuf ? c->rbuf : "";
  *n = (size_t)c->rlen;
  c->rhave = 0;  /* rbody stays set until the next call resets the state */
  return MPROC_CONN_DONE;
}

/* }====================================================================== */
