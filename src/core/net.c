/*
 * src/core/net.c: TCP and Unix stream sockets and the crypto of
 * manager connections from OpenSSL's libcrypto (never hand-made crypto):
 * HMAC-SHA256 for the authkey challenge, then HKDF-SHA256 session keys and
 * AES-256-GCM for every frame after it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "mproc.h"
#include "net.h"

/* A non-blocking close-on-exec socket. */
static int new_socket(int family) {
  int fd;
#ifdef SOCK_NONBLOCK
  fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
#else
  fd = socket(family, SOCK_STREAM, 0);
  if (fd >= 0) {
    mproc_set_nonblock(fd, 1);
    mproc_set_cloexec(fd, 1);
  }
#endif
  return fd;
}

static void close_keep_errno(int fd) {
  int e = errno;
  close(fd);
  errno = e;
}

static void tune_tcp(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int lookup(const char *host, int port, int passive, struct addrinfo **res, int *gai) {
  struct addrinfo hints;
  char serv[16];
  int r;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  snprintf(serv, sizeof serv, "%d", port);
  if (host && !*host) host = NULL;
  r = getaddrinfo(host, serv, &hints, res);
  *gai = r;
  if (r != 0) {
    errno = r == EAI_SYSTEM ? errno : EINVAL;
    return -1;
  }
  return 0;
}

int mproc_net_listen_tcp(const char *host, int port, int backlog, int *bound, int *gai) {
  struct addrinfo *res, *ai;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  int fd = -1, one = 1;
  if (lookup(host, port, 1, &res, gai) < 0) return -1;
  for (ai = res; ai; ai = ai->ai_next) {
    fd = new_socket(ai->ai_family);
    if (fd < 0) continue;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) break;
    close_keep_errno(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) return -1;
  *bound = port;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
    if (ss.ss_family == AF_INET) *bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else if (ss.ss_family == AF_INET6) *bound = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  }
  return fd;
}

static int unix_addr(struct sockaddr_un *sa, const char *path, size_t len, socklen_t *sl) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (len == 0 || len >= sizeof sa->sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(sa->sun_path, path, len);
  *sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] ? 1 : 0));
  return 0;
}

int mproc_net_listen_unix(const char *path, size_t len, int backlog) {
  struct sockaddr_un sa;
  socklen_t sl;
  int fd;
  if (unix_addr(&sa, path, len, &sl) < 0) return -1;
  fd = new_socket(AF_UNIX);
  if (fd < 0) return -1;
  if (bind(fd, (struct sockaddr *)&sa, sl) < 0 || listen(fd, backlog) < 0) {
    close_keep_errno(fd);
    return -1;
  }
  return fd;
}

static int start_connect(int fd, const struct sockaddr *sa, socklen_t sl, int *inprogress) {
  int r;
  *inprogress = 0;
  do r = connect(fd, sa, sl); while (r < 0 && errno == EINTR);
  if (r == 0) return 0;
  if (errno == EINPROGRESS || errno == EAGAIN) {
    *inprogress = 1;
    return 0;
  }
  return -1;
}

int mproc_net_connect_tcp(const char *host, int port, int *inprogress, int *gai) {
  struct addrinfo *res, *ai;
  int fd = -1;
  if (lookup(host, port, 0, &res, gai) < 0) return -1;
  for (ai = res; ai; ai = ai->ai_next) {
    fd = new_socket(ai->ai_family);
    if (fd < 0) continue;
    if (start_connect(fd, ai->ai_addr, ai->ai_addrlen, inprogress) == 0) break;
    close_keep_errno(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) tune_tcp(fd);
  return fd;
}

int mproc_net_connect_unix(const char *path, size_t len, int *inprogress) {
  struct sockaddr_un sa;
  socklen_t sl;
  int fd;
  if (unix_addr(&sa, path, len, &sl) < 0) return -1;
  fd = new_socket(AF_UNIX);
  if (fd < 0) return -1;
  if (start_connect(fd, (struct sockaddr *)&sa, sl, inprogress) < 0) {
    close_keep_errno(fd);
    return -1;
  }
  return fd;
}

int mproc_net_connect_finish(int fd) {
  int err = 0;
  socklen_t l = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0) return -1;
  if (err) {
    errno = err;
    return -1;
  }
  return 0;
}

int mproc_net_accept(int lfd) {
  int fd;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
#ifdef __linux__
  do fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
  while (fd < 0 && errno == EINTR);
#else
  do fd = accept(lfd, (struct sockaddr *)&ss, &sl);
  while (fd < 0 && errno == EINTR);
  if (fd >= 0) {
    mproc_set_nonblock(fd, 1);
    mproc_set_cloexec(fd, 1);
  }
#endif
  if (fd >= 0 && (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) tune_tcp(fd);
  return fd;
}

/* {======================================================================
 * Crypto (libcrypto)
 * ======================================================================= */

int mproc_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                      unsigned char out[32]) {
  unsigned int olen = 32;
  static const unsigned char nokey = 0;
  if (klen > 0x7fffffff) return -1;
  if (HMAC(EVP_sha256(), klen ? key : &nokey, (int)klen, (const unsigned char *)msg, mlen,
           out, &olen) == NULL || olen != 32)
    return -1;
  return 0;
}

int mproc_random_bytes(void *p, size_t n) {
  if (n > 0x7fffffff) return -1;
  return RAND_bytes((unsigned char *)p, (int)n) == 1 ? 0 : -1;
}

int mproc_bytes_equal(const void *a, const void *b, size_t n) {
  return CRYPTO_memcmp(a, b, n) == 0;
}

void mproc_cleanse(void *p, size_t n) {
  OPENSSL_cleanse(p, n);
}

int mproc_hkdf_sha256(const void *salt, size_t slen, const void *ikm, size_t ilen,
                      const void *info, size_t nlen, unsigned char *out, size_t outlen) {
  static const unsigned char none = 0;
  EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
  size_t got = outlen;
  int ok;
  if (pc == NULL) return -1;
  if (slen > 0x7fffffff || ilen > 0x7fffffff || nlen > 0x7fffffff) {
    EVP_PKEY_CTX_free(pc);
    return -1;
  }
  /* an empty authkey is still a key (HMAC allows it; HKDF wants bytes) */
  ok = EVP_PKEY_derive_init(pc) > 0 &&
       EVP_PKEY_CTX_set_hkdf_md(pc, EVP_sha256()) > 0 &&
       EVP_PKEY_CTX_set1_hkdf_salt(pc, slen ? salt : &none, (int)slen) > 0 &&
       EVP_PKEY_CTX_set1_hkdf_key(pc, ilen ? ikm : &none, ilen ? (int)ilen : 1) > 0 &&
       EVP_PKEY_CTX_add1_hkdf_info(pc, nlen ? info : &none, (int)nlen) > 0 &&
       EVP_PKEY_derive(pc, out, &got) > 0 && got == outlen;
  EVP_PKEY_CTX_free(pc);
  return ok ? 0 : -1;
}

int mproc_aead_init(mproc_aead *a, const unsigned char key[MPROC_AEAD_KEY], int encrypt) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int ok;
  a->ctx = NULL;
  a->seq = 0;
  a->encrypt = encrypt;
  if (ctx == NULL) return -1;
  ok = encrypt ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, NULL)
               : EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, NULL);
  if (ok != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return -1;
  }
  a->ctx = ctx;
  return 0;
}

void mproc_aead_free(mproc_aead *a) {
  if (a->ctx) EVP_CIPHER_CTX_free((EVP_CIPHER_CTX *)a->ctx);
  a->ctx = NULL;
}

/* 96-bit nonce: 4 zero bytes, the sequence number big-endian.  Each key
 * serves one direction of one connection, so a nonce never repeats. */
static int next_nonce(mproc_aead *a, unsigned char iv[12]) {
  uint64_t s = a->seq;
  int i;
  if (a->ctx == NULL || s == UINT64_MAX) return -1;   /* never wraps */
  memset(iv, 0, 4);
  for (i = 11; i >= 4; i--) { iv[i] = (unsigned char)(s & 0xff); s >>= 8; }
  a->seq++;
  return 0;
}

#define AEAD_STEP 0x40000000   /* EVP lengths are ints: chunks of 1 GiB */

int mproc_aead_seal(mproc_aead *a, const void *in, size_t n, unsigned char *out) {
  EVP_CIPHER_CTX *ctx = (EVP_CIPHER_CTX *)a->ctx;
  const unsigned char *p = (const unsigned char *)in;
  unsigned char iv[12];
  size_t done = 0;
  int len;
  if (!a->encrypt || next_nonce(a, iv) < 0) return -1;
  if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1) return -1;
  while (done < n) {
    int step = n - done > AEAD_STEP ? AEAD_STEP : (int)(n - done);
    if (EVP_EncryptUpdate(ctx, out + done, &len, p + done, step) != 1 || len != step)
      return -1;
    done += (size_t)step;
  }
  if (EVP_EncryptFinal_ex(ctx, out + n, &len) != 1) return -1;
  return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, MPROC_AEAD_TAG, out + n) == 1 ? 0 : -1;
}

int mproc_aead_open(mproc_aead *a, const unsigned char *in, size_t n, unsigned char *out) {
  EVP_CIPHER_CTX *ctx = (EVP_CIPHER_CTX *)a->ctx;
  unsigned char iv[12], tag[MPROC_AEAD_TAG];
  size_t done = 0, m;
  int len;
  if (a->encrypt || n < MPROC_AEAD_TAG || next_nonce(a, iv) < 0) return -1;
  m = n - MPROC_AEAD_TAG;
  memcpy(tag, in + m, MPROC_AEAD_TAG);   /* out may overwrite in */
  if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1) return -1;
  while (done < m) {
    int step = m - done > AEAD_STEP ? AEAD_STEP : (int)(m - done);
    if (EVP_DecryptUpdate(ctx, out + done, &len, in + done, step) != 1 || len != step)
      return -1;
    done += (size_t)step;
  }
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, MPROC_AEAD_TAG, tag) != 1) return -1;
  return EVP_DecryptFinal_ex(ctx, out + m, &len) > 0 ? 0 : -1;
}

/* }====================================================================== */

