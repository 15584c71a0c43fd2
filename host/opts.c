/* opts: reading a binding's table of options (see opts.h). */
#include <string.h>

#include <lauxlib.h>

#include "opts.h"

int opts_error(lua_State *L, const char *who, const char *key, const char *what)
{
    return luaL_error(L, "%s: option '%s' must be %s", who, key, what);
}

int opts_type(lua_State *L, int idx, const char *key)
{
    int type = lua_getfield(L, idx, key);
    lua_pop(L, 1);
    return type;
}

const char *opts_lstring(lua_State *L, int idx, const char *who,
                         const char *key, const char *def, size_t *len)
{
    const char *v = def;
    int type = lua_getfield(L, idx, key);
    if (type == LUA_TSTRING)
        v = lua_tolstring(L, -1, len);
    else if (type != LUA_TNIL &&
             !(type == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
        opts_error(L, who, key, "a string");
    else if (len)
        *len = def ? strlen(def) : 0;
    lua_pop(L, 1); /* the string stays alive in the options table */
    return v;
}

const char *opts_string(lua_State *L, int idx, const char *who, const char *key,
                        const char *def)
{
    return opts_lstring(L, idx, who, key, def, NULL);
}

lua_Number opts_number(lua_State *L, int idx, const char *who, const char *key,
                       lua_Number def)
{
    lua_Number v = def;
    int isnum;
    if (lua_getfield(L, idx, key) != LUA_TNIL) {
        v = lua_tonumberx(L, -1, &isnum);
        if (!isnum)
            opts_error(L, who, key, "a number");
    }
    lua_pop(L, 1);
    return v;
}

lua_Integer opts_integer(lua_State *L, int idx, const char *who,
                         const char *key, lua_Integer def)
{
    lua_Integer v = def;
    int isint;
    if (lua_getfield(L, idx, key) != LUA_TNIL) {
        v = lua_tointegerx(L, -1, &isint);
        if (!isint)
            opts_error(L, who, key, "an integer");
    }
    lua_pop(L, 1);
    return v;
}

int opts_boolean(lua_State *L, int idx, const char *who, const char *key,
                 int def)
{
    int v = def;
    int type = lua_getfield(L, idx, key);
    if (type == LUA_TBOOLEAN)
        v = lua_toboolean(L, -1);
    else if (type != LUA_TNIL)
        opts_error(L, who, key, "a boolean");
    lua_pop(L, 1);
    return v;
}

uint64_t opts_ms(lua_State *L, int idx, const char *who, const char *key,
                 uint64_t def_ms)
{
    lua_Number s;
    int isnum;
    if (lua_getfield(L, idx, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return def_ms;
    }
    s = lua_tonumberx(L, -1, &isnum);
    if (!isnum || s != s || s < 0)
        opts_error(L, who, key, "a number of seconds >= 0");
    lua_pop(L, 1);
    if (s > 1e9) /* about 30 years: keeps the conversion defined */
        s = 1e9;
    return (uint64_t)(s * 1000.0 + 0.5);
}

int opts_ref_function(lua_State *L, int idx, const char *who, const char *key)
{
    int type = lua_getfield(L, idx, key);
    if (type == LUA_TFUNCTION)
        return luaL_ref(L, LUA_REGISTRYINDEX);
    if (type != LUA_TNIL)
        opts_error(L, who, key, "a function");
    lua_pop(L, 1);
    return LUA_NOREF;
}

int opts_push_table(lua_State *L, int idx, const char *who, const char *key)
{
    int type = lua_getfield(L, idx, key);
    if (type == LUA_TTABLE)
        return 1;
    if (type != LUA_TNIL)
        opts_error(L, who, key, "a table");
    lua_pop(L, 1);
    return 0;
}
