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

#define MPROC_TRACK_SEG  1   /* a shm.c segment (holders in its header) */
#define MPROC_TRACK_RING 2   /* a ring.c ring (holders in its header) */

/* `name` ("/mproc-...") was created by this process. */
void mproc_track_created(const char *name, int kind);

/* `name` was unlinked (by whoever): the tracker forgets it. */
void mproc_track_unlinked(const char *name);

/* The tracker's pid (0: none started by this process tree yet). */
long mproc_tracker_pid(void);

/* For the tracker: 1 when a live process holds the segment / ring `name`,
 * 0 when none does, -1 when the name is gone or not ours.  alive(pid)
 * says whether a pid is a live (not zombie) process.  No malloc. */
int mproc_seg_name_held(const char *name, int (*alive)(long pid), int final);
int mproc_ring_name_held(const char *name, int (*alive)(long pid), int final);

/* A new tracker knows nothing: these say again what this process
 * created and still has (shm.c, ring.c). */
void mproc_shm_retrack(void);
void mproc_ring_retrack(void);

/* Unlinks ring `name` and its big-message segments.  Async-signal-safe. */
void mproc_ring_unlink_name(const char *name);

#endif
