/* stub: replaced by the shared-memory/synchronisation work */
#include "lmproc.h"
int mproc_open_shm(lua_State *L) { (void)L; return 0; }
