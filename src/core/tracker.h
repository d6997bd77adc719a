/*
 * tracker.h: the segment tracker (no lua.h).
 *
 * Creators unlink what they made when they exit or get SIGTERM, but a
 * SIGKILLed process runs no code.  The first process of a tree that creates
 * a shared segment forks a small tracker process; the whole tree (fork
 * children inherit the socket, exec'd programs do not) tells it the names
 * it creates and unlinks.  Once a name's creator is gone and no live
 * process holds it, the tracker unlinks it (a ring with its big-message
 * segments); when the last process of the tree is gone (the socket's EOF)
 * it unlinks what nobody holds and exits.
 *
 * All calls are cheap (one send) and async-signal-safe except the first
 * one in a process without a tracker, which forks it.
 */
#ifndef MPROC_TRACKER_H
#define MPROC_TRACKER_H

#include <stdint.h>

#define MPROC_TRACK_SEG  1   /* a src/core/shared.c segment (holders in its header) */
#define MPROC_TRACK_RING 2   /* a src/core/queue.c ring (holders in its header) */

/* `name` ("/mproc-...") was created by this process. */
void mproc_track_created(const char *name, int kind);

/* `name` was unlinked (by whoever): the tracker forgets it. */
void mproc_track_unlinked(const char *name);

/* The tracker's pid (0: none started by this process tree yet). */
long mproc_tracker_pid(void);
/* The spawn start method: a fresh interpreter joins the tree's tracker
 * (segments, descriptor broker) through the socket handed to it.  export:
 * this process's tracker socket and pid (the tracker is started if there
 * is none), -1 with errno.  adopt, in the new process: `fd` is that socket. */
int mproc_tracker_export(int *fd, long *pid);
/* Starts the tracker if this process has none (before a fork: children
 * share it only if it exists then).  0, or -1 when it could not. */
int mproc_tracker_ensure(void);
int mproc_tracker_adopt(int fd, long pid);

/* The descriptor broker (docs/pipe.md).  The tracker also holds
 * descriptors for the tree: a sender deposits a copy (SCM_RIGHTS over the
 * tracker's socket) under a token (its pid, a sequence number), and a
 * receiver that did not inherit it claims it by token through a reply
 * socket of its own.  A deposit is handed out once; one whose depositor
 * ended is closed a few seconds later; all are closed when the tree ends.
 * Needs SOCK_SEQPACKET (else -1, ENOTSUP). */

/* Deposits a copy of fd: 0 with the broker's pid and the deposit's seq
 * (the token is getpid(), *seq), -1 with errno.  Starts a tracker if this
 * process has none. */
int mproc_broker_deposit(int fd, long *broker, uint64_t *seq);

/* Claims deposit (pid, seq): 1 with the descriptor in *fd (close-on-exec),
 * 0 when the broker does not hold it (claimed, or released), -1 with errno
 * (no broker: ENOTCONN).  Blocks for the broker's answer only (at most
 * 10 s).  abandon: send the claim and return 0 at once, leaving the reply
 * socket open and unread (a test hook for a receiver killed mid-way). */
int mproc_broker_claim(long pid, uint64_t seq, int *fd, int abandon);

/* Tells the broker to close deposit (pid, seq) (a receiver that had the
 * end already, or a message that was never sent).  One send, no answer. */
void mproc_broker_drop(long pid, uint64_t seq);

/* For the tracker: 1 when a live process holds the segment / ring `name`,
 * 0 when none does, -1 when the name is gone or not ours.  alive(pid)
 * says whether a pid is a live (not zombie) process.  No malloc. */
int mproc_seg_name_held(const char *name, int (*alive)(long pid), int final);
int mproc_ring_name_held(const char *name, int (*alive)(long pid), int final);

/* A new tracker knows nothing: these say again what this process
 * created and still has (src/core/shared.c, src/core/queue.c). */
void mproc_shm_retrack(void);
void mproc_ring_retrack(void);

/* Unlinks ring `name` and its big-message segments.  Async-signal-safe. */
void mproc_ring_unlink_name(const char *name);

#endif
