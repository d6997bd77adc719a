/* conn.h: the conn part of the C core (no lua.h); included by mproc.h. */
#ifndef MPROC_CONN_H
#define MPROC_CONN_H

#endif
