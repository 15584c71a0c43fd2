#ifndef BOMARUN_MOD_HTTP_H
#define BOMARUN_MOD_HTTP_H
#include <lua.h>
int luaopen_bomarun__http(lua_State *L);
#endif
