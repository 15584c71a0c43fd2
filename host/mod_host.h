#ifndef BOMARUN_MOD_HOST_H
#define BOMARUN_MOD_HOST_H
#include <lua.h>
int luaopen_bomarun__host(lua_State *L);
#endif
