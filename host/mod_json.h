/* mod_json.h - the bomarun._json Lua module (JSON over jansson). */
#ifndef BOMARUN_MOD_JSON_H
#define BOMARUN_MOD_JSON_H

#include <lua.h>

/* Opener for require "bomarun._json"; pushes the module table. */
int luaopen_bomarun__json(lua_State *L);

#endif /* BOMARUN_MOD_JSON_H */
