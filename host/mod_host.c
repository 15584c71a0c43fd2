/* mod_host: small operating-system helpers Lua lacks (bomarun._host). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <uv.h>

#include "loop.h"
#include "mod_host.h"

/* Pushes nil, "what: path: reason", CODE. */
static int fail(lua_State *L, const char *what, const char *path, int err)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s: %s", what, path, strerror(err));
    lua_pushstring(L, uv_err_name(uv_translate_sys_error(err)));
    return 3;
}

/* write_file(path, data [, mode]) -> true | nil, msg, CODE ; the file is
 * created with `mode` (default 0600) and set to it if it existed, before a
 * byte is written; every write and the close are checked. */
static int l_host_write_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    mode_t mode = (mode_t)luaL_optinteger(L, 3, 0600);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return fail(L, "write_file", path, errno);
    if (fchmod(fd, mode) != 0) {
        int e = errno;
        close(fd);
        return fail(L, "write_file", path, e);
    }
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            return fail(L, "write_file", path, e);
        }
        s += w;
        n -= (size_t)w;
    }
    if (close(fd) != 0)
        return fail(L, "write_file", path, errno);
    lua_pushboolean(L, 1);
    return 1;
}

/* isatty(fd) -> boolean */
static int l_host_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* mkdir(path [, mode]) -> true | nil, msg, CODE ; like mkdir -p */
static int l_host_mkdir(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    mode_t mode = (mode_t)luaL_optinteger(L, 2, 0755);
    char buf[PATH_MAX];
    size_t i;
    if (len == 0 || len >= sizeof buf)
        return luaL_argerror(L, 1, "bad path length");
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, mode) != 0 && errno != EEXIST)
                return fail(L, "mkdir", buf, errno);
            buf[i] = c;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* exists(path) -> "file" | "directory" | "other" | nil */
static int l_host_exists(lua_State *L)
{
    struct stat st;
    if (stat(luaL_checkstring(L, 1), &st) != 0)
        return 0;
    lua_pushstring(L, S_ISREG(st.st_mode)   ? "file"
                      : S_ISDIR(st.st_mode) ? "directory"
                                            : "other");
    return 1;
}

/* realpath(path) -> absolute path | nil, msg, CODE */
static int l_host_realpath(lua_State *L)
{
    char buf[PATH_MAX];
    const char *p = luaL_checkstring(L, 1);
    if (!realpath(p, buf))
        return fail(L, "realpath", p, errno);
    lua_pushstring(L, buf);
    return 1;
}

/* exepath() -> path of the running binary */
static int l_host_exepath(lua_State *L)
{
    char buf[PATH_MAX];
    size_t n = sizeof buf;
    if (uv_exepath(buf, &n) != 0)
        return 0;
    lua_pushlstring(L, buf, n);
    return 1;
}

/* time() -> wall-clock seconds since the epoch (float) */
static int l_host_time(lua_State *L)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (lua_Number)tv.tv_sec + tv.tv_usec / 1e6);
    return 1;
}

/* now() -> monotonic seconds (float) */
static int l_host_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
    return 1;
}

/* getpid() -> integer */
static int l_host_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* hostname() -> string */
static int l_host_hostname(lua_State *L)
{
    char buf[256];
    if (gethostname(buf, sizeof buf) != 0)
        strcpy(buf, "unknown");
    buf[sizeof buf - 1] = '\0';
    lua_pushstring(L, buf);
    return 1;
}

/* random_hex(nbytes) -> hex string from the system's random source */
static int l_host_random_hex(lua_State *L)
{
    unsigned char raw[64];
    char hex[129];
    int n = (int)luaL_optinteger(L, 1, 4), i;
    if (n < 1 || n > 64)
        return luaL_argerror(L, 1, "1..64 bytes");
    if (uv_random(NULL, NULL, raw, (size_t)n, 0, NULL) != 0)
        for (i = 0; i < n; i++)
            raw[i] = (unsigned char)(rand() ^ (int)uv_hrtime());
    for (i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    lua_pushlstring(L, hex, (size_t)n * 2);
    return 1;
}

/* write(fd, s) -> ; unbuffered write, used for console updates in place */
static int l_host_write(lua_State *L)
{
    size_t n;
    int fd = (int)luaL_checkinteger(L, 1);
    const char *s = luaL_checklstring(L, 2, &n);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* rss() -> resident set size of this process in bytes (Linux) */
static int l_host_rss(lua_State *L)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    if (kb < 0)
        return 0;
    lua_pushinteger(L, (lua_Integer)kb * 1024);
    return 1;
}

/* exit(code) -> never returns; kills live process groups first */
static int l_host_exit(lua_State *L)
{
    int code;
    if (lua_isboolean(L, 1))
        code = lua_toboolean(L, 1) ? 0 : 1;
    else
        code = (int)luaL_optinteger(L, 1, 0);
    fflush(NULL);
    loop_kill_all_groups();
    exit(code);
    return 0;
}

/* clang-format off */
static const luaL_Reg host_funcs[] = {
    {"isatty", l_host_isatty},
    {"mkdir", l_host_mkdir},
    {"exists", l_host_exists},
    {"realpath", l_host_realpath},
    {"exepath", l_host_exepath},
    {"time", l_host_time},
    {"now", l_host_now},
    {"getpid", l_host_getpid},
    {"hostname", l_host_hostname},
    {"random_hex", l_host_random_hex},
    {"write", l_host_write},
    {"write_file", l_host_write_file},
    {"exit", l_host_exit},
    {"rss", l_host_rss},
    {NULL, NULL},
};
/* clang-format on */

int luaopen_bomarun__host(lua_State *L)
{
    luaL_newlib(L, host_funcs);
    lua_pushstring(L, BOMARUN_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
