/* shm.h: the shm part of the C core (no lua.h); included by mproc.h. */
#ifndef MPROC_SHM_H
#define MPROC_SHM_H

#endif
