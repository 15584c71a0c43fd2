/* opts: reading a binding's table of options.
 *
 * Each reader looks up `key` in the table at `idx`.  An absent field (nil)
 * gives the default; a field of the wrong type raises
 * "<who>: option '<key>' must be <what>", where `who` names the Lua
 * function ("ssh.connect").  A wrong option is a programmer error, so it
 * raises rather than returning nil, msg, CODE. */
#ifndef BOMARUN_OPTS_H
#define BOMARUN_OPTS_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

/* The Lua type of opts[key] (LUA_TNIL when absent); pushes nothing. */
int opts_type(lua_State *L, int idx, const char *key);

/* A string, or def when absent or false.  The pointer stays valid while
 * the table holds the string; *len (if not NULL) gets its length. */
const char *opts_lstring(lua_State *L, int idx, const char *who,
                         const char *key, const char *def, size_t *len);
const char *opts_string(lua_State *L, int idx, const char *who, const char *key,
                        const char *def);

/* A number (or a string convertible to one, as for luaL_checknumber). */
lua_Number opts_number(lua_State *L, int idx, const char *who, const char *key,
                       lua_Number def);
lua_Integer opts_integer(lua_State *L, int idx, const char *who,
                         const char *key, lua_Integer def);
int opts_boolean(lua_State *L, int idx, const char *who, const char *key,
                 int def);

/* A duration in seconds (a number >= 0), returned in milliseconds. */
uint64_t opts_ms(lua_State *L, int idx, const char *who, const char *key,
                 uint64_t def_ms);

/* A function, kept in the registry: returns the reference, or LUA_NOREF
 * when absent. */
int opts_ref_function(lua_State *L, int idx, const char *who, const char *key);

/* A table: pushes it and returns 1, or pushes nothing and returns 0 when
 * absent. */
int opts_push_table(lua_State *L, int idx, const char *who, const char *key);

/* Raises "<who>: option '<key>' must be <what>". */
int opts_error(lua_State *L, const char *who, const char *key,
               const char *what);

#endif
