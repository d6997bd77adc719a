/* src/core/pipe.h: the conn part of the C core (no lua.h); included by mproc.h.
 *
 * A connection is one end of a stream socket carrying length-prefixed
 * frames.  The descriptor is non-blocking: every call here does what it can
 * without blocking and reports MPROC_CONN_AGAIN otherwise, keeping the
 * progress of a half-sent or half-received frame in the mproc_conn, so the
 * caller waits wherever it likes (the Lua layer waits in sched.wait_fd) and
 * calls again.  A frame is delivered whole or not at all.
 *
 * Frame: a 4-byte big-endian length, or for frames of 1 MiB and more the
 * escape 0xFFFFFFFF followed by an 8-byte big-endian length; then the body.
 * The reader never consumes bytes past the frame it is reading, so an
 * empty socket buffer really means "nothing to receive" (the descriptor can
 * be polled by a foreign event loop).
 */
#ifndef MPROC_CONN_H
#define MPROC_CONN_H

#include <stddef.h>
#include <stdint.h>

#define MPROC_CONN_READ  1
#define MPROC_CONN_WRITE 2

#define MPROC_FRAME_HDRMAX 12          /* the longest frame header */
#define MPROC_CONN_MAXFDS  16          /* descriptors passed with one frame */
#define MPROC_FRAME_LONG   (1u << 20)  /* frames this long use 64-bit lengths */

/* Results of the send/recv calls. */
#define MPROC_CONN_DONE     1   /* frame written / frame received */
#define MPROC_CONN_AGAIN    0   /* would block: wait for the fd, call again */
#define MPROC_CONN_ERROR   (-1) /* errno set (EPIPE/ECONNRESET: peer closed) */
#define MPROC_CONN_EOF     (-2) /* peer closed, no frame in progress */
#define MPROC_CONN_EOF_MID (-3) /* peer closed in the middle of a frame */
#define MPROC_CONN_TOOLONG (-4) /* frame longer than maxlen (c->rlen) */

typedef struct mproc_conn {
  int fd;                       /* -1 once closed */
  int flags;                    /* MPROC_CONN_READ | MPROC_CONN_WRITE */
  /* receive side: the frame being read */
  unsigned char rhdr[MPROC_FRAME_HDRMAX];
  size_t rhave;                 /* header bytes read so far */
  int rbody;                    /* header complete, reading the body */
  uint64_t rlen;                /* body length (once the header is read) */
  char *rbuf;                   /* body buffer */
  size_t rcap, rgot;
  /* send side: a frame partly written (header + data) */
  unsigned char whdr[MPROC_FRAME_HDRMAX];
  size_t whlen;
  const char *wdata;            /* owned by the caller until DONE */
  size_t wlen, wpos;            /* wpos counts header + data bytes written */
  int wpending;
  int wfds[MPROC_CONN_MAXFDS];  /* our dups of descriptors to pass along */
  int nwfds;
  int rfds[MPROC_CONN_MAXFDS];  /* descriptors received with the frame */
  int nrfds;
  /* adaptive spin before blocking in recv */
  double spin;                  /* current budget, seconds */
  double wait_start;            /* when recv last found nothing (0: no wait) */
} mproc_conn;

/* Creates a connected pair of non-blocking, close-on-exec stream sockets.
 * duplex == 0: fds[0] only receives and fds[1] only sends (the unused
 * directions are shut down).  Returns 0, or -1 with errno. */
int mproc_conn_pair(int fds[2], int duplex);

/* Prepares c for fd (already non-blocking) with MPROC_CONN_* flags. */
void mproc_conn_init(mproc_conn *c, int fd, int flags);

/* Closes the descriptor (once) and frees the buffers.  Returns 0 or -1. */
int mproc_conn_close(mproc_conn *c);

/* Writes the header of a frame of n bytes into hdr; returns its size. */
size_t mproc_frame_header(unsigned char *hdr, uint64_t n);

/* Starts sending the frame whose body is data[0..n) (n may be 0) and
 * writes what it can.  With hdr_inline, the caller already put the header
 * in the hdr_inline bytes before data (data - hdr_inline is the frame's
 * start), which saves a separate iovec.  The bytes must stay valid until
 * DONE or ERROR.  Must not be called while c->wpending. */
int mproc_conn_send(mproc_conn *c, const char *data, size_t n, size_t hdr_inline);

/* The same, and the nfds descriptors fds (at most MPROC_CONN_MAXFDS) travel
 * with the frame (SCM_RIGHTS, Unix sockets only).  They are duplicated
 * here, so the caller may close them at once (ERROR with errno when they
 * cannot be duplicated). */
int mproc_conn_send_fds(mproc_conn *c, const char *data, size_t n, size_t hdr_inline,
                        const int *fds, int nfds);

/* Continues a pending frame; DONE when nothing is pending. */
int mproc_conn_flush(mproc_conn *c);

/* Drops a pending frame (after an error). */
void mproc_conn_send_reset(mproc_conn *c);

/* Receives one frame.  DONE: *p, *n hold the body, valid until the next
 * recv or mproc_conn_recv_done.  Frames longer than maxlen give TOOLONG
 * (nothing of the body is read).  When no byte of a frame is there yet,
 * first spins on the socket for a short adaptive time (see src/core/pipe.c). */
int mproc_conn_recv(mproc_conn *c, uint64_t maxlen, const char **p, size_t *n);

/* Moves the descriptors that came with the delivered frame to fds (room
 * for MPROC_CONN_MAXFDS); returns how many.  Those not taken are closed
 * when the next frame starts. */
int mproc_conn_take_fds(mproc_conn *c, int *fds);

/* Releases a large receive buffer after a delivered frame was used. */
void mproc_conn_recv_done(mproc_conn *c);

/* 1 when a frame is partly received (more bytes are expected). */
int mproc_conn_recv_partial(const mproc_conn *c);

#endif
