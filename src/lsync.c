/* stub: replaced by the shared-memory/synchronisation work */
#include "lmproc.h"
int mproc_open_sync(lua_State *L) { (void)L; return 0; }
