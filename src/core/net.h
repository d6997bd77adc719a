/* src/core/net.h: stream sockets for remote managers, and the crypto they use
 * (no lua.h).  Not included by mproc.h: only src/core/net.c and src/lua/net.c use it.
 *
 * Every socket made here is non-blocking and close-on-exec; callers wait
 * for readiness themselves (the Lua layer through sched.wait_fd) and frame
 * with src/core/pipe.h.  Unix socket paths starting with a NUL byte are Linux
 * abstract names (no file to clean up). */
#ifndef MPROC_NET_H
#define MPROC_NET_H

#include <stddef.h>
#include <stdint.h>

/* Listens on host:port (port 0: any free port, *bound gets it).  Returns
 * the descriptor or -1 with errno; a failed name lookup gives EINVAL with
 * *gai set to the getaddrinfo error (0 otherwise). */
int mproc_net_listen_tcp(const char *host, int port, int backlog, int *bound, int *gai);

/* Listens on a Unix socket path (len bytes, may start with NUL). */
int mproc_net_listen_unix(const char *path, size_t len, int backlog);

/* Starts connecting; *inprogress is set when the caller must wait for the
 * descriptor to be writable and then call mproc_net_connect_finish. */
int mproc_net_connect_tcp(const char *host, int port, int *inprogress, int *gai);
int mproc_net_connect_unix(const char *path, size_t len, int *inprogress);

/* 0 when the pending connect succeeded, -1 with errno otherwise. */
int mproc_net_connect_finish(int fd);

/* Accepts one connection: its descriptor, or -1 with errno (EAGAIN:
 * none pending). */
int mproc_net_accept(int lfd);

/* HMAC-SHA256 of msg under key into out (32 bytes); 0 or -1. */
int mproc_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                      unsigned char out[32]);

/* n cryptographically strong random bytes; 0 or -1. */
int mproc_random_bytes(void *p, size_t n);

/* Constant-time comparison of n bytes: 1 when equal. */
int mproc_bytes_equal(const void *a, const void *b, size_t n);

/* Wipes n bytes (key material) in a way the compiler keeps. */
void mproc_cleanse(void *p, size_t n);

/* {======================================================================
 * Session crypto of manager connections: HKDF-SHA256 to derive keys,
 * AES-256-GCM with the 64-bit sequence number of the direction as nonce
 * (a replayed, reordered, dropped or altered frame fails to open).
 * ======================================================================= */

#define MPROC_AEAD_KEY 32
#define MPROC_AEAD_TAG 16

typedef struct mproc_aead {
  void *ctx;                  /* EVP_CIPHER_CTX, key set once */
  uint64_t seq;               /* nonce of the next frame */
  int encrypt;
} mproc_aead;

/* HKDF-SHA256 (RFC 5869): outlen bytes into out; 0 or -1. */
int mproc_hkdf_sha256(const void *salt, size_t slen, const void *ikm, size_t ilen,
                      const void *info, size_t nlen, unsigned char *out, size_t outlen);

/* 0 or -1 (no context, bad key); a->ctx is NULL before and after free. */
int mproc_aead_init(mproc_aead *a, const unsigned char key[MPROC_AEAD_KEY], int encrypt);
void mproc_aead_free(mproc_aead *a);

/* Encrypts n bytes of in into out (n + MPROC_AEAD_TAG bytes: ciphertext,
 * then tag) under the next sequence number.  0 or -1. */
int mproc_aead_seal(mproc_aead *a, const void *in, size_t n, unsigned char *out);

/* Checks and decrypts n bytes (ciphertext + tag) of in into out (n -
 * MPROC_AEAD_TAG bytes; out may be in) under the next sequence number.
 * 0, or -1 when the frame is not the next one the peer sealed. */
int mproc_aead_open(mproc_aead *a, const unsigned char *in, size_t n, unsigned char *out);

/* }====================================================================== */

#endif
