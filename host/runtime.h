/* runtime: the Lua side of the host, set up once for the binary and for
 * anything else that embeds the library (the fuzz harnesses). */
#ifndef BOMARUN_RUNTIME_H
#define BOMARUN_RUNTIME_H

#include <stddef.h>

#include <lua.h>
#include <uv.h>

/* On a fresh state: the standard libraries, the scheduler on `loop`, every
 * C binding in package.preload, and package.path over the library's three
 * layers (lua/core, lua/integrations, lua/engine; docs/architecture.md).
 * Installs no signal handlers: that is the binary's business. */
void runtime_open(lua_State *L, uv_loop_t *loop);

/* The Lua library: $BOMARUN_LUA_DIR, else the installed share directory
 * next to the binary, else the source tree the binary was built from. */
void runtime_find_lua_dir(char *out, size_t n);

#endif
