/* main: the bomarun host.  Sets up Lua and the loop, then runs the CLI
 * (lua/engine/bomarun/cli.lua) as the main task; everything else is Lua. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lualib.h>

#include "loop.h"
#include "mod_crypto.h"
#include "mod_host.h"
#include "mod_http.h"
#include "mod_json.h"
#include "mod_proc.h"
#include "mod_ssh.h"
#include "sched.h"

#define EXIT_INTERRUPTED 130
#define EXIT_TERMINATED 143
#define DRAIN_MS 10000

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The Lua library: $BOMARUN_LUA_DIR, else the installed share directory
 * next to the binary, else the source tree the binary was built from. */
static void find_lua_dir(char *out, size_t n)
{
    char exe[PATH_MAX], probe[PATH_MAX + 64];
    size_t len = sizeof exe;
    const char *env = getenv("BOMARUN_LUA_DIR");
    char *slash;
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return;
    }
    if (uv_exepath(exe, &len) == 0 && (slash = strrchr(exe, '/'))) {
        *slash = '\0';
        snprintf(probe, sizeof probe, "%s/../%s/lua/engine/bomarun/cli.lua",
                 exe, BOMARUN_SHARE_REL);
        if (file_exists(probe)) {
            snprintf(probe, sizeof probe, "%s/../%s/lua", exe,
                     BOMARUN_SHARE_REL);
            if (n >= PATH_MAX && realpath(probe, out))
                return;
        }
    }
    snprintf(out, n, "%s/lua", BOMARUN_SOURCE_DIR);
}

static void preload(lua_State *L, const char *name, lua_CFunction f)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, f);
    lua_setfield(L, -2, name);
    lua_pop(L, 2);
}

/* The library's three layers (docs/architecture.md), each a tree of
 * bomarun.* modules: require names do not say the layer. */
static void set_paths(lua_State *L, const char *dir)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L,
                    "%s/core/?.lua;%s/core/?/init.lua;"
                    "%s/integrations/?.lua;%s/integrations/?/init.lua;"
                    "%s/engine/?.lua;%s/engine/?/init.lua;%s",
                    dir, dir, dir, dir, dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "bomarun._host");
    if (lua_istable(L, -1)) {
        lua_pushstring(L, dir);
        lua_setfield(L, -2, "lua_dir");
    }
    lua_pop(L, 2);
}

/* Pushes cli.main and the argument table: the main task's function. */
static int push_cli(lua_State *L, int argc, char **argv)
{
    int i;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "bomarun.cli");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "bomarun: cannot load its Lua library: %s\n",
                lua_tostring(L, -1));
        return -1;
    }
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    lua_createtable(L, argc, 0);
    for (i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    return 0;
}

/* The exit status the main task's outcome stands for. */
static int outcome(lua_State *L, int failed)
{
    int code = 0;
    sched_push_main_result(L);
    if (!failed) {
        lua_rawgeti(L, -1, 1);
        code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
        lua_pop(L, 2);
        return code;
    }
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "code");
        if (lua_isstring(L, -1) &&
            strcmp(lua_tostring(L, -1), "INTERRUPTED") == 0) {
            lua_getfield(L, -2, "message");
            code = lua_isstring(L, -1) && strstr(lua_tostring(L, -1), "SIGTERM")
                       ? EXIT_TERMINATED
                       : EXIT_INTERRUPTED;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    fprintf(stderr, "bomarun: %s\n", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
    return code ? code : 1;
}

int main(int argc, char **argv)
{
    char luadir[PATH_MAX];
    uv_loop_t *loop = loop_init();
    lua_State *L = luaL_newstate();
    int failed, code;
    if (!L) {
        fprintf(stderr, "bomarun: cannot create the Lua state\n");
        return 70;
    }
    luaL_openlibs(L);
    sched_init(L, loop);
    loop_install_signals();
    preload(L, "bomarun._sched", luaopen_bomarun__sched);
    preload(L, "bomarun._proc", luaopen_bomarun__proc);
    preload(L, "bomarun._json", luaopen_bomarun__json);
    preload(L, "bomarun._host", luaopen_bomarun__host);
    preload(L, "bomarun._ssh", luaopen_bomarun__ssh);
    preload(L, "bomarun._http", luaopen_bomarun__http);
    preload(L, "bomarun._crypto", luaopen_bomarun__crypto);
    luaL_requiref(L, "bomarun._host", luaopen_bomarun__host, 0);
    lua_pop(L, 1);
    find_lua_dir(luadir, sizeof luadir);
    set_paths(L, luadir);
    if (push_cli(L, argc, argv) != 0)
        return 70;
    failed = sched_run_main(L, 1);
    code = outcome(L, failed);
    fflush(stdout);
    if (sched_drain(DRAIN_MS)) {
        sched_close();
        lua_close(L);
    } else {
        loop_kill_all_groups();
    }
    return code;
}
