#ifndef BOMARUN_MOD_SSH_H
#define BOMARUN_MOD_SSH_H
#include <lua.h>
int luaopen_bomarun__ssh(lua_State *L);
#endif
