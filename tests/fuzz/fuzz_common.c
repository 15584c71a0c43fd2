/* fuzz_common: the Lua state behind every harness (fuzz_common.h). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "fuzz_common.h"
#include "loop.h"
#include "runtime.h"
#include "sched.h"

#define FUZZ_DIR BOMARUN_SOURCE_DIR "/tests/fuzz"
/* Lua's heap is bounded so that `("x"):rep(1e10)` in a fuzzed profile is
 * a Lua error ("not enough memory"), not libFuzzer's out-of-memory. */
#define HEAP_LIMIT ((size_t)256 << 20)
#define DRAIN_MS 1000

static lua_State *g_L;
static int g_driver_ref = LUA_NOREF;
static char g_tmpdir[64];
static char g_path[128];
static char g_luadir[PATH_MAX];
static size_t g_luadir_len;
static size_t g_heap;

/* --- Lua line coverage for libFuzzer ----------------------------------- *
 * The Lua VM is not instrumented, so without this the fuzzer would see
 * only the C bindings.  Each line executed in the library's own files
 * (lua/...) bumps a counter in libFuzzer's extra-counters section, keyed
 * AFL-style by (previous line, this line). */
#define COV_SIZE (1u << 16)
#define EXTRA_COUNTERS                                                         \
    __attribute__((used, section("__libfuzzer_extra_counters")))
static EXTRA_COUNTERS uint8_t g_lua_cov[COV_SIZE];
static uint32_t g_prev;
static const char *g_last_source;
static int g_last_ours;

static uint32_t mix(uintptr_t a, uint32_t b)
{
    uint64_t h = ((uint64_t)a ^ ((uint64_t)b << 32)) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 40);
}

static void hook(lua_State *L, lua_Debug *ar)
{
    uint32_t cur;
    if (ar->event == LUA_HOOKCOUNT) {
        sched_count_hook(L, ar);
        return;
    }
    if (!lua_getinfo(L, "S", ar))
        return;
    /* The source string of a loaded chunk is interned and lives as long as
     * its functions: a stable key for the library's modules, loaded once. */
    if (ar->source != g_last_source) {
        g_last_source = ar->source;
        g_last_ours = ar->source[0] == '@' &&
                      strncmp(ar->source + 1, g_luadir, g_luadir_len) == 0;
    }
    if (!g_last_ours)
        return;
    cur = mix((uintptr_t)ar->source, (uint32_t)ar->currentline);
    g_lua_cov[(cur ^ g_prev) % COV_SIZE]++;
    g_prev = cur >> 1;
}

/* --- the state --------------------------------------------------------- */

static void *bounded_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (!ptr)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        g_heap -= osize;
        return NULL;
    }
    if (nsize > osize && g_heap + (nsize - osize) > HEAP_LIMIT)
        return NULL;
    ptr = realloc(ptr, nsize);
    if (ptr)
        g_heap = g_heap - osize + nsize;
    return ptr;
}

/* fuzz_bug(msg): the driver found a bug; libFuzzer keeps the input. */
static int l_fuzz_bug(lua_State *L)
{
    fprintf(stderr, "\nfuzz: BUG: %s\n", luaL_tolstring(L, 1, NULL));
    abort();
    return 0;
}

static void remove_tmpdir(void)
{
    unlink(g_path);
    rmdir(g_tmpdir);
}

/* At exit, the driver may say what it saw (fuzz_at_exit()). */
static void at_exit(void)
{
    lua_getglobal(g_L, "fuzz_at_exit");
    if (lua_isfunction(g_L, -1))
        lua_pcall(g_L, 0, 0, 0);
    lua_settop(g_L, 0);
    remove_tmpdir();
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "fuzz: %s: %s\n", what, why);
    abort();
}

void fuzz_init(const char *name)
{
    static uv_loop_t *loop;
    char driver[PATH_MAX];
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/bomarun-fuzz-XXXXXX");
    if (!mkdtemp(g_tmpdir))
        die("mkdtemp", strerror(errno));
    snprintf(g_path, sizeof g_path, "%s/input", g_tmpdir);
    loop = loop_init();
    if (!(g_L = lua_newstate(bounded_alloc, NULL)))
        die("lua_newstate", "out of memory");
    runtime_open(g_L, loop);
    runtime_find_lua_dir(g_luadir, sizeof g_luadir);
    g_luadir_len = strlen(g_luadir);
    /* BOMARUN_FUZZ_LUA_COV=0: C coverage only (faster, blinder). */
    if (!getenv("BOMARUN_FUZZ_LUA_COV") ||
        strcmp(getenv("BOMARUN_FUZZ_LUA_COV"), "0") != 0)
        lua_sethook(g_L, hook, LUA_MASKCOUNT | LUA_MASKLINE, 1000);
    lua_pushcfunction(g_L, l_fuzz_bug);
    lua_setglobal(g_L, "fuzz_bug");
    lua_pushliteral(g_L, FUZZ_DIR);
    lua_setglobal(g_L, "FUZZ_DIR");
    lua_pushboolean(g_L, getenv("BOMARUN_FUZZ_STRICT") != NULL);
    lua_setglobal(g_L, "FUZZ_STRICT");
    snprintf(driver, sizeof driver, "%s/%s.lua", FUZZ_DIR, name);
    if (luaL_dofile(g_L, driver) != LUA_OK || !lua_isfunction(g_L, -1))
        die(driver, lua_isstring(g_L, -1) ? lua_tostring(g_L, -1)
                                          : "does not return a function");
    g_driver_ref = luaL_ref(g_L, LUA_REGISTRYINDEX);
    atexit(at_exit);
}

static void write_input(const uint8_t *data, size_t size)
{
    FILE *f = fopen(g_path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        die(g_path, strerror(errno));
}

void fuzz_one(const uint8_t *data, size_t size)
{
    int failed;
    write_input(data, size);
    g_prev = 0;
    lua_settop(g_L, 0);
    lua_rawgeti(g_L, LUA_REGISTRYINDEX, g_driver_ref);
    lua_pushlstring(g_L, (const char *)data, size);
    lua_pushstring(g_L, g_path);
    failed = sched_run_main(g_L, 2);
    if (failed) {
        sched_push_main_result(g_L);
        die("the driver raised", luaL_tolstring(g_L, -1, NULL));
    }
    if (!sched_drain(DRAIN_MS))
        die("after the driver", "tasks or handles still live after 1 s");
    lua_settop(g_L, 0);
    /* Free this input's garbage now: libFuzzer runs LeakSanitizer after
     * any input that malloc'ed more than it freed, and a full scan costs
     * far more than a collection. */
    lua_gc(g_L, LUA_GCCOLLECT);
}
