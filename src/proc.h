/* proc.h: the proc part of the C core (no lua.h); included by mproc.h. */
#ifndef MPROC_PROC_H
#define MPROC_PROC_H

#endif
