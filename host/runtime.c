/* runtime: the Lua state as the host sets it up (see runtime.h). */
#include <dlfcn.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lualib.h>

#include "mod_crypto.h"
#include "mod_host.h"
#include "mod_http.h"
#include "mod_json.h"
#include "mod_proc.h"
#include "mod_ssh.h"
#include "runtime.h"
#include "sched.h"

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

void runtime_find_lua_dir(char *out, size_t n)
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

/* The shared object that holds bomarun._virt: BOMARUN_VIRT_MODULE, else
 * beside the binary (the build tree), else the installed lib directory. */
static void find_virt_module(char *out, size_t n)
{
    char exe[PATH_MAX];
    size_t len = sizeof exe;
    const char *env = getenv("BOMARUN_VIRT_MODULE");
    char *slash;
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return;
    }
    out[0] = '\0';
    if (uv_exepath(exe, &len) != 0 || !(slash = strrchr(exe, '/')))
        return;
    *slash = '\0';
    snprintf(out, n, "%s/bomarun_virt.so", exe);
    if (!file_exists(out))
        snprintf(out, n, "%s/../%s/bomarun_virt.so", exe, BOMARUN_LIB_REL);
}

/* require "bomarun._virt": libvirt is loaded now, not at start-up. */
static int load_virt(lua_State *L)
{
    char path[PATH_MAX + 64];
    void *so;
    lua_CFunction open;
    find_virt_module(path, sizeof path);
    so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!so)
        return luaL_error(L, "virt: cannot load the libvirt module %s: %s",
                          path, dlerror());
    open = (lua_CFunction)(uintptr_t)dlsym(so, "luaopen_bomarun__virt");
    if (!open)
        return luaL_error(L, "virt: %s has no luaopen_bomarun__virt", path);
    /* Never dlclosed: libvirt keeps threads and global state. */
    lua_pushcfunction(L, open);
    lua_call(L, 0, 1);
    return 1;
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

void runtime_open(lua_State *L, uv_loop_t *loop)
{
    char luadir[PATH_MAX];
    luaL_openlibs(L);
    sched_init(L, loop);
    preload(L, "bomarun._sched", luaopen_bomarun__sched);
    preload(L, "bomarun._proc", luaopen_bomarun__proc);
    preload(L, "bomarun._json", luaopen_bomarun__json);
    preload(L, "bomarun._host", luaopen_bomarun__host);
    preload(L, "bomarun._ssh", luaopen_bomarun__ssh);
    preload(L, "bomarun._http", luaopen_bomarun__http);
    preload(L, "bomarun._crypto", luaopen_bomarun__crypto);
    preload(L, "bomarun._virt", load_virt);
    luaL_requiref(L, "bomarun._host", luaopen_bomarun__host, 0);
    lua_pop(L, 1);
    runtime_find_lua_dir(luadir, sizeof luadir);
    set_paths(L, luadir);
}
