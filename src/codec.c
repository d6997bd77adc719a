/* stub: replaced by the codec work */
#include "lmproc.h"
int mproc_open_codec(lua_State *L) { (void)L; return 0; }
