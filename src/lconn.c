/* stub: replaced by the conn work */
#include "lmproc.h"
int mproc_open_conn(lua_State *L) { (void)L; return 0; }
