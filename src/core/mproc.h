/*
 * mproc.h: the C core of mproc. No lua.h here: everything declared in this
 * header is usable (and testable) from plain C.
 *
 * Conventions: functions return 0 on success and -1 with errno set on a
 * system failure, unless documented otherwise.  Timeouts are seconds as
 * double; a negative timeout means "wait forever".
 */
#ifndef MPROC_H
#define MPROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One header per concept of the core. */
#include "poll.h"
#include "process.h"
#include "pipe.h"
#include "shared.h"
#include "sync.h"
#include "queue.h"
#include "pool.h"
#include "tracker.h"

#endif
