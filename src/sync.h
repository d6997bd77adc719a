/* sync.h: the sync part of the C core (no lua.h); included by mproc.h. */
#ifndef MPROC_SYNC_H
#define MPROC_SYNC_H

#endif
