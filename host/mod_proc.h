#ifndef BOMARUN_MOD_PROC_H
#define BOMARUN_MOD_PROC_H
#include <lua.h>
int luaopen_bomarun__proc(lua_State *L);
#endif
