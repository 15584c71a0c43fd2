/* C tests for the scheduler: tasks run, wait, are cancelled and time out on
 * the real loop, driven from Lua snippets as the main task. */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "loop.h"
#include "mod_proc.h"
#include "sched.h"

static int failures, passes;

/* Runs `code` as the main task of a fresh host; returns its first result
 * as a string (or the error) in out. */
static int run_main(const char *code, char *out, size_t n)
{
    uv_loop_t loop;
    lua_State *L = luaL_newstate();
    int failed;
    uv_loop_init(&loop);
    luaL_openlibs(L);
    sched_init(L, &loop);
    luaL_requiref(L, "bomarun._sched", luaopen_bomarun__sched, 0);
    lua_setglobal(L, "sched");
    luaL_requiref(L, "bomarun._proc", luaopen_bomarun__proc, 0);
    lua_setglobal(L, "proc");
    if (luaL_loadstring(L, code) != LUA_OK) {
        snprintf(out, n, "load: %s", lua_tostring(L, -1));
        lua_close(L);
        return 1;
    }
    failed = sched_run_main(L, 0);
    sched_push_main_result(L);
    if (failed)
        snprintf(out, n, "error: %s", luaL_tolstring(L, -1, NULL));
    else {
        lua_rawgeti(L, -1, 1);
        snprintf(out, n, "%s", luaL_tolstring(L, -1, NULL));
    }
    sched_drain(5000);
    sched_close();
    lua_close(L);
    uv_loop_close(&loop);
    return failed;
}

static void expect(const char *name, const char *code, const char *want)
{
    char got[4096];
    run_main(code, got, sizeof got);
    if (strstr(got, want)) {
        passes++;
        printf("ok - %s\n", name);
    } else {
        failures++;
        printf("not ok - %s\n#   want substring: %s\n#   got: %s\n", name, want,
               got);
    }
}

int main(void)
{
    expect("sleeps wake in deadline order",
           "local order = {}\n"
           "local a = sched.spawn(function() sched.sleep(0.06) "
           "order[#order+1] = 'a' end)\n"
           "local b = sched.spawn(function() sched.sleep(0.02) "
           "order[#order+1] = 'b' end)\n"
           "local c = sched.spawn(function() sched.sleep(0.04) "
           "order[#order+1] = 'c' end)\n"
           "a:wait() b:wait() c:wait()\n"
           "return table.concat(order)",
           "bca");
    expect("sleeps overlap: three 100 ms sleeps take ~100 ms",
           "local t0 = sched.now()\n"
           "local ts = {}\n"
           "for i = 1, 3 do ts[i] = sched.spawn(sched.sleep, 0.1) end\n"
           "for i = 1, 3 do ts[i]:wait() end\n"
           "local d = sched.now() - t0\n"
           "return (d >= 0.095 and d < 0.25) and 'overlap' or ('took ' .. d)",
           "overlap");
    expect("wait returns the task's results",
           "local t = sched.spawn(function(x, y) sched.yield() "
           "return x + y, 'z' end, 2, 3)\n"
           "local ok, v, z = t:wait()\n"
           "return tostring(ok) .. ' ' .. v .. z",
           "true 5z");
    expect("an error reaches the waiter with a traceback",
           "local t = sched.spawn(function() error('boom') end)\n"
           "local ok, err = t:wait()\n"
           "return tostring(ok) .. ' ' .. err",
           "false [string");
    expect(
        "cancel reaches an in-flight sleep at once",
        "local t = sched.spawn(function() sched.sleep(30) return 'slept' end)\n"
        "sched.sleep(0.01)\n"
        "local t0 = sched.now()\n"
        "t:cancel('stop', 'CANCELLED')\n"
        "local ok, err = t:wait()\n"
        "return t:status() .. ' ' .. sched.cancel_code(err) .. ' ' .. "
        "tostring(sched.now() - t0 < 0.05)",
        "cancelled CANCELLED true");
    expect("cancel propagates to children",
           "local child\n"
           "local parent = sched.spawn(function()\n"
           "  child = sched.spawn(function() sched.sleep(30) end)\n"
           "  sched.sleep(30)\n"
           "end)\n"
           "sched.sleep(0.01)\n"
           "parent:cancel()\n"
           "parent:wait()\n"
           "sched.yield()\n"
           "return child:status()",
           "cancelled");
    expect("a finished task cancels the children it left running",
           "local child\n"
           "local parent = sched.spawn(function()\n"
           "  child = sched.spawn(function() sched.sleep(30) end)\n"
           "end)\n"
           "parent:wait()\n"
           "local ok, err = child:wait()\n"
           "return child:status()",
           "cancelled");
    expect(
        "a wait with a timeout returns TIMEOUT and leaves the task running",
        "local t = sched.spawn(function() sched.sleep(0.2) return 'late' end)\n"
        "local r1, _, code = t:wait(0.02)\n"
        "local ok, v = t:wait()\n"
        "return tostring(r1) .. ' ' .. code .. ' ' .. v",
        "nil TIMEOUT late");
    expect("the count hook stops a runaway loop past its deadline",
           "local t = sched.spawn(function() while true do end end)\n"
           "t:set_deadline(0.1)\n"
           "local ok, err = t:wait()\n"
           "return sched.cancel_code(err)",
           "TIMEOUT");
    expect("a wait from a non-yieldable context is a clear error",
           "local ok, err = pcall(table.sort, {3, 2, 1}, function(a, b) "
           "sched.sleep(0) return a < b end)\n"
           "return err",
           "non-yieldable context");
    expect("a yield outside any coroutine fails that task, not the host",
           "local t = sched.spawn(function() coroutine.yield(1) end)\n"
           "local ok, err = t:wait()\n"
           "return err",
           "coroutine.yield was called outside");
    expect("tasks waiting on each other are a detected deadlock, not a hang",
           "local a, b\n"
           "a = sched.spawn(function() sched.yield() return b:wait() end)\n"
           "b = sched.spawn(function() sched.yield() return a:wait() end)\n"
           "return a:wait()",
           "error: deadlock");
    expect(
        "a task cannot wait for itself",
        "local a\n"
        "a = sched.spawn(function() sched.sleep(0) local me = sched.current() "
        "return me end)\n"
        "local b = sched.spawn(function() return select(2, a:wait()) end)\n"
        "local c\n"
        "c = sched.spawn(function() c:wait() end)\n"
        "return 'no deadlock: ' .. tostring(select(2, c:wait()))",
        "cannot wait for itself");
    expect("proc.run kills a timed-out process group",
           "local r, msg, code = proc.run{"
           "argv = {'sh', '-c', 'sleep 30 & sleep 30'}, "
           "timeout = 0.2, grace = 0.2}\n"
           "return code .. ' ' .. tostring(r)",
           "TIMEOUT nil");
    expect("tasks never started are cancelled without running",
           "local ran = false\n"
           "local t = sched.spawn(function() ran = true end)\n"
           "t:cancel()\n"
           "t:wait()\n"
           "return tostring(ran) .. ' ' .. t:status()",
           "false cancelled");
    printf("1..%d\n", passes + failures);
    printf("%d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
