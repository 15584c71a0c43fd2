/* main: the bomarun host.  Sets up Lua and the loop, then runs the CLI
 * (lua/engine/bomarun/cli.lua) as the main task; everything else is Lua. */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "loop.h"
#include "runtime.h"
#include "sched.h"
#include "watchdog.h"

#define EXIT_INTERRUPTED 130
#define EXIT_TERMINATED 143
#define DRAIN_MS 10000

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

/* The Lua side answers 130 for an interrupted run (143 for SIGTERM); the
 * status names the signal that interrupted it, 128 + its number as a shell
 * reports a process a signal killed: SIGHUP 129, SIGQUIT 131. */
static int signal_status(int code)
{
    int sig = loop_first_signal();
    if ((code == EXIT_INTERRUPTED || code == EXIT_TERMINATED) && sig)
        return 128 + sig;
    return code;
}

/* Whether bomarun is about to run a file (a runbook or script: process
 * groups to come) rather than a fast path: -e, --version, help, report,
 * plan.  Those start the watchdog only if they start a process group. */
static int runs_a_file(int argc, char **argv)
{
    static const char *const fast[] = {"help", "report", "plan"};
    size_t k;
    if (argc < 2 || argv[1][0] == '-')
        return 0;
    for (k = 0; k < sizeof fast / sizeof fast[0]; k++)
        if (strcmp(argv[1], fast[k]) == 0)
            return 0;
    return 1;
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
        return signal_status(code);
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
    return code ? signal_status(code) : 1;
}

int main(int argc, char **argv)
{
    uv_loop_t *loop;
    lua_State *L;
    int failed, code;
    watchdog_enable();
    /* Forked now, while bomarun is small and has no thread: a fork costs
     * little and the watchdog shares nearly all its memory. */
    if (runs_a_file(argc, argv))
        watchdog_ensure();
    loop = loop_init();
    L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "bomarun: cannot create the Lua state\n");
        return 70;
    }
    runtime_open(L, loop);
    loop_install_signals();
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
    watchdog_stop();
    return code;
}
