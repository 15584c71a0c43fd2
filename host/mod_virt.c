/* mod_virt: bomarun._virt, the libvirt binding (see virt_int.h), loaded on
 * demand from bomarun_virt.so.  The friendly API is bomarun.virt (Lua);
 * this layer is one generic call per connection:
 *
 *   _virt.new() -> conn ; conn:open(uri, readonly) -> uri, hostname
 *   conn:call(op, sub, flags, n, s1, s2, s3, s4) -> results | nil, msg, CODE
 *   conn:event_seq() -> n ; conn:events_since(n) -> {{name=, uuid=,
 *       event=, detail=}, ...} ; conn:wait_event(after) -> seq (a wait)
 *   conn:close()
 *   _virt.lock(path, holder) -> lock | nil, holder_text, "LOCKED"
 *
 * Every call but the event reads is a wait: the task yields while the
 * connection's worker runs it. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <lauxlib.h>

#include "virt_errnames.h"
#include "virt_int.h"
#include "virt_ops.h"

#define CONN_MT "bomarun.virt.conn"
#define LOCK_MT "bomarun.virt.lock"

struct conn_box {
    struct vconn *c;
};

const char *verr_name(int code)
{
    if (code >= 0 && code < (int)(sizeof g_errnames / sizeof *g_errnames) &&
        g_errnames[code])
        return g_errnames[code];
    return "VIR_ERR_UNKNOWN";
}

static const char *const op_names[] = {"open", "close",  "define",  "lookup",
                                       "list", "domain", "network", "pool",
                                       "node", NULL};
static const char *const dom_subs[] = {"start",
                                       "shutdown",
                                       "destroy",
                                       "reboot",
                                       "reset",
                                       "undefine",
                                       "suspend",
                                       "resume",
                                       "state",
                                       "info",
                                       "xml",
                                       "get_metadata",
                                       "set_metadata",
                                       "addresses",
                                       "snapshot_create",
                                       "snapshot_list",
                                       "snapshot_revert",
                                       "snapshot_delete",
                                       NULL};
static const char *const net_subs[] = {"list",     "define", "start", "destroy",
                                       "undefine", "leases", "xml",   NULL};
static const char *const pool_subs[] = {
    "list",    "define",   "build",      "start",    "destroy",    "undefine",
    "refresh", "vol_list", "vol_create", "vol_path", "vol_delete", NULL};

/* Field names of the rows each listing returns. */
struct row_names {
    const char *s[VROW_STRS];
    const char *n[VROW_NUMS];
};
static const struct row_names rows_domains = {
    {"name", "uuid", "metadata"}, {"state", "active", "persistent"}};
static const struct row_names rows_addrs = {{"iface", "mac", "ip"},
                                            {"prefix", "family"}};
static const struct row_names rows_snaps = {{"name", "xml"}, {"current"}};
static const struct row_names rows_nets = {{"name", "uuid", "xml"},
                                           {"active", "persistent"}};
static const struct row_names rows_leases = {{"iface", "mac", "ip", "hostname"},
                                             {"expiry", "prefix", "family"}};
static const struct row_names rows_vols = {{"name", "path"},
                                           {"capacity", "allocation"}};

static const struct row_names *row_names_of(struct vjob *j)
{
    if (j->op == VOP_LIST)
        return &rows_domains;
    if (j->op == VOP_DOM)
        return j->sub == DOM_ADDRS ? &rows_addrs : &rows_snaps;
    if (j->op == VOP_NET)
        return j->sub == NET_LEASES ? &rows_leases : &rows_nets;
    return j->sub == VOL_LIST ? &rows_vols : &rows_nets;
}

static int has_rows(struct vjob *j)
{
    return j->op == VOP_LIST ||
           (j->op == VOP_DOM &&
            (j->sub == DOM_ADDRS || j->sub == DOM_SNAP_LIST)) ||
           (j->op == VOP_NET && (j->sub == NET_LIST || j->sub == NET_LEASES)) ||
           (j->op == VOP_POOL && (j->sub == POOL_LIST || j->sub == VOL_LIST));
}

static void push_rows(lua_State *co, struct vjob *j)
{
    const struct row_names *names = row_names_of(j);
    int i, k;
    lua_createtable(co, j->nrows, 0);
    for (i = 0; i < j->nrows; i++) {
        lua_createtable(co, 0, VROW_STRS + VROW_NUMS);
        for (k = 0; k < VROW_STRS && names->s[k]; k++)
            if (j->rows[i].s[k]) {
                lua_pushstring(co, j->rows[i].s[k]);
                lua_setfield(co, -2, names->s[k]);
            }
        for (k = 0; k < VROW_NUMS && names->n[k]; k++) {
            lua_pushinteger(co, j->rows[i].n[k]);
            lua_setfield(co, -2, names->n[k]);
        }
        lua_rawseti(co, -2, i + 1);
    }
}

static void push_info(lua_State *co, struct vjob *j)
{
    static const char *const keys[] = {"state", "max_memory_kib", "memory_kib",
                                       "vcpus", "cpu_time_ns",    "id"};
    int i;
    lua_createtable(co, 0, 6);
    for (i = 0; i < 6; i++) {
        lua_pushinteger(co, j->r[i]);
        lua_setfield(co, -2, keys[i]);
    }
}

static void push_node(lua_State *co, struct vjob *j)
{
    lua_createtable(co, 0, 6);
    lua_pushinteger(co, j->r[0]);
    lua_setfield(co, -2, "free_memory");
    lua_pushinteger(co, j->r[1]);
    lua_setfield(co, -2, "memory_kib");
    lua_pushinteger(co, j->r[2]);
    lua_setfield(co, -2, "cpus");
    lua_pushinteger(co, j->r[3]);
    lua_setfield(co, -2, "libvirt_version");
    lua_pushstring(co, j->out[0] ? j->out[0] : "");
    lua_setfield(co, -2, "hostname");
    lua_pushstring(co, j->out[1] ? j->out[1] : "");
    lua_setfield(co, -2, "model");
}

int vjob_push(lua_State *co, struct vjob *j)
{
    if (!j->ok) {
        lua_pushnil(co);
        lua_pushstring(co, j->err ? j->err : "failed");
        lua_pushstring(co, j->code ? j->code : "VIR_ERR_INTERNAL_ERROR");
        return 3;
    }
    if (has_rows(j)) {
        push_rows(co, j);
        return 1;
    }
    if (j->op == VOP_NODE) {
        push_node(co, j);
        return 1;
    }
    if (j->op == VOP_DOM && j->sub == DOM_STATE) {
        lua_pushinteger(co, j->r[0]);
        lua_pushinteger(co, j->r[1]);
        lua_pushboolean(co, (int)j->r[2]);
        return 3;
    }
    if (j->op == VOP_DOM && j->sub == DOM_INFO) {
        push_info(co, j);
        return 1;
    }
    if (j->out[0] || j->out[1]) {
        lua_pushstring(co, j->out[0] ? j->out[0] : "");
        lua_pushstring(co, j->out[1] ? j->out[1] : "");
        return 2;
    }
    lua_pushboolean(co, 1);
    return 1;
}

static void job_cancel(struct bm_wait *w)
{
    struct vjob *j = (struct vjob *)((char *)w - offsetof(struct vjob, w));
    __atomic_store_n(&j->abandoned, 1, __ATOMIC_RELEASE);
}

static struct vjob *job_new(lua_State *L)
{
    struct vjob *j = calloc(1, sizeof *j);
    if (!j)
        luaL_error(L, "virt: out of memory");
    j->w.cancel = job_cancel;
    return j;
}

static void job_strings(lua_State *L, struct vjob *j, int first)
{
    int i;
    for (i = 0; i < VJ_STRS; i++)
        if (lua_type(L, first + i) == LUA_TSTRING)
            j->s[i] = strdup(lua_tostring(L, first + i));
}

/* new() -> conn: a handle with its worker, not connected yet. */
static int l_new(lua_State *L)
{
    struct conn_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->c = NULL;
    luaL_setmetatable(L, CONN_MT);
    box->c = calloc(1, sizeof *box->c);
    if (!box->c || vwork_start(box->c) != 0) {
        free(box->c);
        box->c = NULL;
        return luaL_error(L, "virt: cannot start a worker thread");
    }
    return 1;
}

static struct vconn *check_conn(lua_State *L)
{
    struct conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    if (!box->c || box->c->closing)
        luaL_error(L, "virt: the connection is closed");
    return box->c;
}

/* conn:open(uri, readonly) -> uri, hostname | nil, msg, CODE (a wait) */
static int l_conn_open(lua_State *L)
{
    struct vconn *c = check_conn(L);
    const char *uri = luaL_checkstring(L, 2);
    struct vjob *j;
    sched_check_await(L, "virt.connect");
    j = job_new(L);
    j->op = VOP_OPEN;
    j->flags = lua_toboolean(L, 3) ? 1u : 0u;
    j->s[0] = strdup(uri);
    vwork_submit(c, j);
    return sched_await(L, &j->w);
}

/* conn:call(op, sub, flags, n, s1, s2, s3, s4) */
static int l_call(lua_State *L)
{
    struct vconn *c = check_conn(L);
    int op = luaL_checkoption(L, 2, NULL, op_names), sub = 0;
    struct vjob *j;
    if (op == VOP_OPEN || op == VOP_CLOSE)
        return luaL_argerror(L, 2, "use open and close");
    if (op == VOP_DOM)
        sub = luaL_checkoption(L, 3, NULL, dom_subs);
    else if (op == VOP_NET)
        sub = luaL_checkoption(L, 3, NULL, net_subs);
    else if (op == VOP_POOL)
        sub = luaL_checkoption(L, 3, NULL, pool_subs);
    sched_check_await(L, "virt call");
    j = job_new(L);
    j->op = op;
    j->sub = sub;
    j->flags = (unsigned)luaL_optinteger(L, 4, 0);
    j->n[0] = luaL_optinteger(L, 5, 0);
    job_strings(L, j, 6);
    vwork_submit(c, j);
    return sched_await(L, &j->w);
}

static void conn_shut(struct vconn *c)
{
    struct vjob *j;
    if (!c || c->closing)
        return;
    c->closing = 1;
    j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->op = VOP_CLOSE;
    j->abandoned = 1;
    vwork_submit(c, j);
}

static int l_close(lua_State *L)
{
    struct conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    conn_shut(box->c);
    return 0;
}

static int l_gc(lua_State *L)
{
    struct conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    struct vconn *c = box->c;
    box->c = NULL;
    if (!c)
        return 0;
    conn_shut(c);
    c->lua_gone = 1;
    if (c->worker_gone)
        free(c);
    return 0;
}

static int l_event_seq(lua_State *L)
{
    struct conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    lua_pushinteger(L, box->c ? box->c->seq : 0);
    return 1;
}

static int l_events_since(lua_State *L)
{
    struct conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    long long after = luaL_checkinteger(L, 2), s, first;
    int n = 0;
    lua_newtable(L);
    if (!box->c)
        return 1;
    first = box->c->seq - VEVENT_RING + 1;
    for (s = after + 1 > first ? after + 1 : first; s <= box->c->seq; s++) {
        const struct vevent *ev = &box->c->ring[s % VEVENT_RING];
        lua_createtable(L, 0, 4);
        lua_pushstring(L, ev->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, ev->uuid);
        lua_setfield(L, -2, "uuid");
        lua_pushinteger(L, ev->event);
        lua_setfield(L, -2, "event");
        lua_pushinteger(L, ev->detail);
        lua_setfield(L, -2, "detail");
        lua_pushinteger(L, s);
        lua_setfield(L, -2, "seq");
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static void waiter_cancel(struct bm_wait *w)
{
    struct vevent_waiter *ew =
        (struct vevent_waiter *)((char *)w - offsetof(struct vevent_waiter, w));
    vwork_unwatch(ew);
    free(ew);
}

/* conn:wait_event(after) -> seq: at once if an event came after `after`. */
static int l_wait_event(lua_State *L)
{
    struct vconn *c = check_conn(L);
    long long after = luaL_checkinteger(L, 2);
    struct vevent_waiter *ew;
    if (c->seq > after) {
        lua_pushinteger(L, c->seq);
        return 1;
    }
    sched_check_await(L, "virt wait_event");
    ew = calloc(1, sizeof *ew);
    if (!ew)
        return luaL_error(L, "virt: out of memory");
    ew->c = c;
    ew->after = after;
    ew->w.cancel = waiter_cancel;
    vwork_watch(ew);
    return sched_await(L, &ew->w);
}

/* --- the host lock ------------------------------------------------------ */

struct lock_box {
    int fd;
};

/* lock(path, holder) -> lock | nil, holder_text, "LOCKED" | nil, msg, "ERRNO"
 * flock(2) on the file: released by the kernel if the holder dies, so a
 * crashed run never leaves the host locked.  The holder's description is
 * written into the file for the next one's error message. */
static int l_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t hn;
    const char *holder = luaL_checklstring(L, 2, &hn);
    struct lock_box *box;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot open %s: %s", path, strerror(errno));
        lua_pushstring(L, "LOCAL_FILE");
        return 3;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char buf[1024];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        int e = errno;
        close(fd);
        lua_pushnil(L);
        if (n >= 0) {
            buf[n] = '\0';
            lua_pushstring(L, buf);
            lua_pushstring(L, "LOCKED");
        } else {
            lua_pushfstring(L, "cannot read %s: %s", path, strerror(e));
            lua_pushstring(L, "LOCAL_FILE");
        }
        return 3;
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, holder, hn, 0) != (ssize_t)hn) {
        int e = errno;
        close(fd);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot write %s: %s", path, strerror(e));
        lua_pushstring(L, "LOCAL_FILE");
        return 3;
    }
    box = lua_newuserdatauv(L, sizeof *box, 0);
    box->fd = fd;
    luaL_setmetatable(L, LOCK_MT);
    return 1;
}

static int l_unlock(lua_State *L)
{
    struct lock_box *box = luaL_checkudata(L, 1, LOCK_MT);
    if (box->fd >= 0) {
        if (ftruncate(box->fd, 0) != 0) {
            /* the content is only a hint for the next holder's message */
        }
        close(box->fd); /* releases the flock */
        box->fd = -1;
    }
    return 0;
}

static int l_errname(lua_State *L)
{
    lua_pushstring(L, verr_name((int)luaL_checkinteger(L, 1)));
    return 1;
}

static const luaL_Reg conn_methods[] = {{"open", l_conn_open},
                                        {"call", l_call},
                                        {"close", l_close},
                                        {"event_seq", l_event_seq},
                                        {"events_since", l_events_since},
                                        {"wait_event", l_wait_event},
                                        {NULL, NULL}};

static const luaL_Reg lock_methods[] = {{"release", l_unlock},
                                        {"__gc", l_unlock},
                                        {"__close", l_unlock},
                                        {NULL, NULL}};

static const luaL_Reg funcs[] = {
    {"new", l_new}, {"lock", l_lock}, {"errname", l_errname}, {NULL, NULL}};

__attribute__((visibility("default"))) int luaopen_bomarun__virt(lua_State *L);

int luaopen_bomarun__virt(lua_State *L)
{
    if (vwork_init() != 0)
        return luaL_error(L, "virt: cannot initialise libvirt");
    if (luaL_newmetatable(L, CONN_MT)) {
        luaL_newlib(L, conn_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, LOCK_MT)) {
        luaL_setfuncs(L, lock_methods, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
