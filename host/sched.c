/* sched: the run queue and the only caller of lua_resume.
 *
 * A task is a Lua coroutine plus a struct bm_task.  A task waits by yielding
 * a sentinel from sched_await(); the binding it waits on later pushes results
 * onto the task's stack and calls sched_complete(), which only marks the task
 * ready.  sched_run_main() alternates between resuming ready tasks and one
 * turn of the libuv loop.
 *
 * Structure: tasks form a tree (spawn makes a child of the current task).
 * Cancelling a task cancels its children; a task that ends cancels the
 * children still running, so nothing outlives the code that started it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>

#include <lauxlib.h>
#include <lualib.h>

#include "sched.h"

#define TASK_MT "bomarun.task"
#define CANCEL_MT "bomarun.cancelled"
#define HOOK_COUNT 1000

enum { T_READY, T_RUNNING, T_WAITING, T_DONE };

struct waiter;

struct bm_task {
    lua_State *co;
    int co_ref;     /* registry ref to the thread while live */
    int ud_ref;     /* registry ref to the handle while live */
    int locals_ref; /* task-local table, or LUA_NOREF */
    unsigned long id;
    char name[64];
    int state;
    int started;
    int nargs; /* values pushed on co for the next resume */
    struct bm_wait *wait;
    struct bm_task *parent;
    struct bm_task *first_child, *next_sibling, *prev_sibling;
    struct bm_task *next_ready;
    struct waiter *joiners;
    struct bm_resource *resources;
    int cancelled;
    char *cancel_reason;
    char cancel_code[16];
    uint64_t deadline; /* uv_hrtime() ns; 0 = none */
    uint64_t resumed_at;
    int ok;
    int result_ref; /* {n=, ...} on success, the error otherwise */
    int observed;
};

static lua_State *g_L;
static uv_loop_t *g_loop;
static struct bm_task *g_current;
static struct bm_task *g_main;
static struct bm_task *ready_head, *ready_tail;
static unsigned long g_next_id = 1;
static int g_closing;
static int g_signal_handler_ref = LUA_NOREF;
static int g_main_ref = LUA_NOREF;         /* the main task's handle */
static volatile sig_atomic_t g_signal_raw; /* set by the raw handler */
static int g_signal_dispatched;

static char SENTINEL_YIELD;  /* yielded by every host wait */
static char SENTINEL_CANCEL; /* resumed into a wait that was cancelled */

uv_loop_t *sched_loop(void) { return g_loop; }
lua_State *sched_main_state(void) { return g_L; }
struct bm_task *sched_current(void) { return g_current; }
struct bm_task *sched_main_task(void) { return g_main; }

static void make_ready(struct bm_task *t, int nargs)
{
    t->nargs = nargs;
    t->state = T_READY;
    t->next_ready = NULL;
    if (ready_tail)
        ready_tail->next_ready = t;
    else
        ready_head = t;
    ready_tail = t;
}

static struct bm_task *ready_pop(void)
{
    struct bm_task *t = ready_head;
    if (t) {
        ready_head = t->next_ready;
        if (!ready_head)
            ready_tail = NULL;
        t->next_ready = NULL;
    }
    return t;
}

/* --- cancellation errors -------------------------------------------- */

/* Pushes a cancellation error object {message=, code=}. */
static void push_cancel_error(lua_State *L, const char *msg, const char *code)
{
    lua_createtable(L, 0, 2);
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    luaL_setmetatable(L, CANCEL_MT);
}

static int raise_cancel(lua_State *L, struct bm_task *t)
{
    push_cancel_error(L, t->cancel_reason ? t->cancel_reason : "cancelled",
                      t->cancel_code[0] ? t->cancel_code : "CANCELLED");
    return lua_error(L);
}

/* --- waiting -------------------------------------------------------- */

void sched_check_await(lua_State *L, const char *what)
{
    struct bm_task *t = g_current;
    if (!t)
        luaL_error(L,
                   "%s must be called from a task (a runbook body, a "
                   "script run by bomarun, or a function given to "
                   "task.spawn)",
                   what);
    if (!lua_isyieldable(L))
        luaL_error(L,
                   "%s cannot wait here: it was called from a "
                   "non-yieldable context (a metamethod, a table.sort "
                   "comparator, a string.gsub callback or another C "
                   "function); move the wait out of it",
                   what);
    if (t->cancelled)
        raise_cancel(L, t);
}

static int await_k(lua_State *L, int status, lua_KContext ctx)
{
    int base = (int)ctx;
    int n = lua_gettop(L) - base;
    (void)status;
    if (n >= 1 && lua_touserdata(L, base + 1) == &SENTINEL_CANCEL) {
        struct bm_task *t = g_current;
        if (t)
            return raise_cancel(L, t);
        push_cancel_error(L, "cancelled", "CANCELLED");
        return lua_error(L);
    }
    return n;
}

static int yield_to_sched(lua_State *L)
{
    int base = lua_gettop(L);
    lua_pushlightuserdata(L, &SENTINEL_YIELD);
    return lua_yieldk(L, 1, (lua_KContext)base, await_k);
}

int sched_await(lua_State *L, struct bm_wait *w)
{
    w->task = g_current;
    g_current->wait = w;
    return yield_to_sched(L);
}

lua_State *sched_wait_state(struct bm_wait *w)
{
    lua_checkstack(w->task->co, 8);
    return w->task->co;
}

void sched_complete(struct bm_wait *w, int nres)
{
    struct bm_task *t = w->task;
    if (t->wait == w)
        t->wait = NULL;
    make_ready(t, nres);
}

/* --- waiters: in a list, with an optional timeout -------------------- */

/* A task waiting for something (a task to finish, an event to be set): it
 * sits in that thing's list until woken, and its timer, if it has one,
 * ends the wait early with what on_timeout pushes.  A sleep is a waiter
 * with a timer and no list. */
struct waiter {
    struct bm_wait w;
    struct waiter **list; /* the list it is in, or NULL */
    struct waiter *next;
    void *what; /* the task or event waited for */
    /* Pushes the timeout's results on co; returns their count. */
    int (*on_timeout)(lua_State *co, struct waiter *wt);
    int has_timer;
    uv_timer_t timer;
};

static void waiter_closed(uv_handle_t *h) { free(h->data); }

static void waiter_free(struct waiter *wt)
{
    if (wt->has_timer) {
        uv_timer_stop(&wt->timer);
        uv_close((uv_handle_t *)&wt->timer, waiter_closed);
    } else {
        free(wt);
    }
}

static void waiter_unlink(struct waiter *wt)
{
    struct waiter **pp = wt->list;
    while (pp && *pp && *pp != wt)
        pp = &(*pp)->next;
    if (pp && *pp)
        *pp = wt->next;
    wt->list = NULL;
}

static void waiter_cancel(struct bm_wait *w)
{
    struct waiter *wt = (struct waiter *)w;
    waiter_unlink(wt);
    waiter_free(wt);
}

static void waiter_timed_out(uv_timer_t *h)
{
    struct waiter *wt = h->data;
    lua_State *co = sched_wait_state(&wt->w);
    waiter_unlink(wt);
    sched_complete(&wt->w, wt->on_timeout(co, wt));
    uv_close((uv_handle_t *)h, waiter_closed);
}

/* Yields the current task as a waiter for `what` in *list (list NULL: in
 * none), for at most `ms` if on_timeout is given.  `who` names the wait
 * for an error. */
static int waiter_await(lua_State *L, const char *who, struct waiter **list,
                        void *what, uint64_t ms,
                        int (*on_timeout)(lua_State *, struct waiter *))
{
    struct waiter *wt = calloc(1, sizeof *wt);
    if (!wt)
        return luaL_error(L, "%s: out of memory", who);
    wt->w.cancel = waiter_cancel;
    wt->what = what;
    wt->on_timeout = on_timeout;
    if (list) {
        wt->list = list;
        wt->next = *list;
        *list = wt;
    }
    if (on_timeout) {
        wt->has_timer = 1;
        uv_timer_init(g_loop, &wt->timer);
        wt->timer.data = wt;
        bm_timer_start(&wt->timer, waiter_timed_out, ms, 0);
    }
    return sched_await(L, &wt->w);
}

/* Completes every waiter in *list with what push(co, arg) pushes. */
static void waiters_wake(struct waiter **list,
                         int (*push)(lua_State *co, void *arg), void *arg)
{
    struct waiter *wt = *list;
    *list = NULL;
    while (wt) {
        struct waiter *next = wt->next;
        lua_State *co = sched_wait_state(&wt->w);
        wt->list = NULL;
        sched_complete(&wt->w, push(co, arg));
        waiter_free(wt);
        wt = next;
    }
}

/* --- resources a task owns ------------------------------------------ */

void sched_own(struct bm_resource *r)
{
    struct bm_task *t = g_current;
    r->owner = t;
    r->prev = NULL;
    r->next = NULL;
    if (!t)
        return;
    r->next = t->resources;
    if (t->resources)
        t->resources->prev = r;
    t->resources = r;
}

void sched_disown(struct bm_resource *r)
{
    struct bm_task *t = r->owner;
    if (!t)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        t->resources = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->owner = NULL;
    r->next = r->prev = NULL;
}

static void release_resources(struct bm_task *t)
{
    struct bm_resource *r;
    while ((r = t->resources)) {
        sched_disown(r);
        r->release(r);
    }
}

/* --- the task tree -------------------------------------------------- */

static void unlink_child(struct bm_task *t)
{
    struct bm_task *p = t->parent;
    if (!p)
        return;
    if (t->prev_sibling)
        t->prev_sibling->next_sibling = t->next_sibling;
    else
        p->first_child = t->next_sibling;
    if (t->next_sibling)
        t->next_sibling->prev_sibling = t->prev_sibling;
    t->parent = t->next_sibling = t->prev_sibling = NULL;
}

static void link_child(struct bm_task *p, struct bm_task *t)
{
    t->parent = p;
    t->prev_sibling = NULL;
    t->next_sibling = p->first_child;
    if (p->first_child)
        p->first_child->prev_sibling = t;
    p->first_child = t;
}

void sched_cancel(struct bm_task *t, const char *reason, const char *code)
{
    struct bm_task *c;
    if (t->state == T_DONE)
        return;
    if (!t->cancelled) {
        t->cancelled = 1;
        t->cancel_reason = strdup(reason ? reason : "cancelled");
        snprintf(t->cancel_code, sizeof t->cancel_code, "%s",
                 code ? code : "CANCELLED");
    }
    for (c = t->first_child; c; c = c->next_sibling)
        sched_cancel(c, reason, code);
    if (t->state == T_WAITING) {
        struct bm_wait *w = t->wait;
        t->wait = NULL;
        if (w && w->cancel)
            w->cancel(w);
        lua_checkstack(t->co, 2);
        lua_pushlightuserdata(t->co, &SENTINEL_CANCEL);
        make_ready(t, 1);
    }
}

static struct bm_task *check_task(lua_State *L, int i)
{
    struct bm_task **pp = luaL_checkudata(L, i, TASK_MT);
    return *pp;
}

struct bm_task *sched_spawn(lua_State *L, int nargs, const char *name)
{
    struct bm_task *t = calloc(1, sizeof *t);
    struct bm_task **pp;
    if (!t)
        luaL_error(L, "task: out of memory");
    t->id = g_next_id++;
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    t->locals_ref = LUA_NOREF;
    t->result_ref = LUA_NOREF;
    t->co = lua_newthread(L);
    lua_insert(L, -(nargs + 2));    /* thread below fn and args */
    lua_xmove(L, t->co, nargs + 1); /* fn and args onto the thread */
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->nargs = nargs;
    pp = lua_newuserdatauv(L, sizeof *pp, 0);
    *pp = t;
    luaL_setmetatable(L, TASK_MT);
    lua_pushvalue(L, -1);
    t->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (g_current) {
        link_child(g_current, t);
        t->deadline = g_current->deadline;
    }
    make_ready(t, nargs);
    return t;
}

/* --- finishing ------------------------------------------------------ */

static int push_outcome(lua_State *L, struct bm_task *t);

static int push_joined(lua_State *co, void *t) { return push_outcome(co, t); }

static void wake_joiners(struct bm_task *t)
{
    waiters_wake(&t->joiners, push_joined, t);
}

static int is_cancel_error(lua_State *L, int i)
{
    int r = 0;
    if (lua_getmetatable(L, i)) {
        luaL_getmetatable(L, CANCEL_MT);
        r = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return r;
}

/* Moves the error at co's top to g_L, with a traceback attached: appended
 * to a string error, or as field `traceback` of a table error. */
static void take_error(struct bm_task *t)
{
    lua_State *co = t->co;
    const char *msg = lua_tostring(co, -1);
    if (lua_type(co, -1) == LUA_TSTRING) {
        luaL_traceback(g_L, co, msg, 0);
        lua_pop(co, 1);
    } else if (lua_istable(co, -1)) {
        lua_xmove(co, g_L, 1);
        if (!is_cancel_error(g_L, -1)) {
            luaL_traceback(g_L, co, NULL, 0);
            lua_setfield(g_L, -2, "traceback");
        }
    } else {
        const char *s = luaL_tolstring(co, -1, NULL);
        luaL_traceback(g_L, co, s, 0);
        lua_pop(co, 2);
    }
}

/* A failure nobody waits for would vanish: say so on stderr. */
static void warn_unobserved(struct bm_task *t)
{
    int top = lua_gettop(g_L);
    lua_rawgeti(g_L, LUA_REGISTRYINDEX, t->result_ref);
    if (!is_cancel_error(g_L, -1))
        fprintf(stderr,
                "bomarun: task %lu%s%s%s failed and nobody is "
                "waiting on it: %s\n",
                t->id, t->name[0] ? " (" : "", t->name, t->name[0] ? ")" : "",
                luaL_tolstring(g_L, -1, NULL));
    lua_settop(g_L, top);
}

static void finish(struct bm_task *t, int ok, int nres)
{
    struct bm_task *c;
    if (ok) {
        int i;
        lua_createtable(g_L, nres, 1);
        lua_checkstack(g_L, nres + 4);
        lua_xmove(t->co, g_L, nres);
        for (i = nres; i >= 1; i--)
            lua_rawseti(g_L, -(i + 1), i);
        lua_pushinteger(g_L, nres);
        lua_setfield(g_L, -2, "n");
    } else {
        take_error(t);
        lua_resetthread(t->co); /* close pending to-be-closed variables */
    }
    t->result_ref = luaL_ref(g_L, LUA_REGISTRYINDEX);
    t->ok = ok;
    t->state = T_DONE;
    release_resources(t);
    while ((c = t->first_child)) {
        sched_cancel(c, "its parent task finished", "CANCELLED");
        unlink_child(c);
    }
    unlink_child(t);
    if (!ok && !t->joiners && t != g_main)
        warn_unobserved(t);
    wake_joiners(t);
    luaL_unref(g_L, LUA_REGISTRYINDEX, t->co_ref);
    t->co_ref = LUA_NOREF;
    t->co = NULL;
    luaL_unref(g_L, LUA_REGISTRYINDEX, t->ud_ref);
    t->ud_ref = LUA_NOREF;
}

static void resume_task(struct bm_task *t)
{
    int nres = 0, st, nargs = t->nargs;
    if (!t->started && t->cancelled) {
        lua_settop(t->co, 0);
        push_cancel_error(t->co, t->cancel_reason, t->cancel_code);
        finish(t, 0, 0);
        return;
    }
    if (t->started)
        nargs = t->nargs;
    t->started = 1;
    t->nargs = 0;
    t->state = T_RUNNING;
    g_current = t;
    t->resumed_at = uv_hrtime();
    st = lua_resume(t->co, g_L, nargs, &nres);
    g_current = NULL;
    if (st == LUA_YIELD) {
        int host = nres == 1 && lua_touserdata(t->co, -1) == &SENTINEL_YIELD;
        lua_pop(t->co, nres);
        if (host && t->state == T_RUNNING) {
            t->state = T_WAITING;
            return;
        }
        if (host) /* completed (or cancelled) before it yielded */
            return;
        lua_pushstring(t->co, "coroutine.yield was called outside any "
                              "coroutine of this task: tasks wait with the "
                              "bomarun.task functions, not by yielding");
        finish(t, 0, 0);
    } else if (st == LUA_OK) {
        finish(t, 1, nres);
    } else {
        finish(t, 0, 0);
    }
}

static void run_ready(void)
{
    struct bm_task *t;
    while ((t = ready_pop()))
        resume_task(t);
}

/* --- the count hook: a spinning task cannot hang the host ----------- */

static void count_hook(lua_State *L, lua_Debug *ar)
{
    struct bm_task *t = g_current;
    uint64_t now;
    (void)ar;
    if (!t)
        return;
    if (!t->deadline && !(g_signal_raw && !g_signal_dispatched))
        return;
    now = uv_hrtime();
    /* The task is marked cancelled as well as raised into: a runbook's
     * pcall that catches this error cannot go on as if nothing happened
     * (boot.lua's pcall refuses to run in a cancelled task). */
    if (t->deadline && now > t->deadline) {
        sched_cancel(t,
                     "timed out while running Lua code that never "
                     "waited (a runaway loop?)",
                     "TIMEOUT");
        push_cancel_error(L,
                          "timed out while running Lua code that never "
                          "waited (a runaway loop?)",
                          "TIMEOUT");
        lua_error(L);
    }
    if (g_signal_raw && !g_signal_dispatched &&
        now - t->resumed_at > 500000000ull) {
        g_signal_dispatched = 1;
        sched_cancel(t,
                     "interrupted while running Lua code that never "
                     "waited (a runaway loop?)",
                     "INTERRUPTED");
        push_cancel_error(L,
                          "interrupted while running Lua code that "
                          "never waited (a runaway loop?)",
                          "INTERRUPTED");
        lua_error(L);
    }
}

void sched_count_hook(lua_State *L, lua_Debug *ar) { count_hook(L, ar); }

void sched_note_signal(void) { g_signal_raw = 1; }

/* The name the Lua handler gets, and the cancellation's message (the exit
 * status follows the name: main.c). */
static const char *signal_name(int signum, const char **message)
{
    switch (signum) {
    case SIGTERM: *message = "terminated (SIGTERM)"; return "SIGTERM";
    case SIGHUP: *message = "hung up (SIGHUP)"; return "SIGHUP";
    case SIGQUIT: *message = "quit (SIGQUIT)"; return "SIGQUIT";
    default: *message = "interrupted (SIGINT)"; return "SIGINT";
    }
}

void sched_on_signal(int signum, int count)
{
    const char *message;
    const char *name = signal_name(signum, &message);
    g_signal_dispatched = 1;
    g_signal_raw = 0;
    if (g_signal_handler_ref != LUA_NOREF) {
        lua_rawgeti(g_L, LUA_REGISTRYINDEX, g_signal_handler_ref);
        lua_pushstring(g_L, name);
        lua_pushinteger(g_L, count);
        if (lua_pcall(g_L, 2, 0, 0) != LUA_OK) {
            fprintf(stderr, "bomarun: signal handler failed: %s\n",
                    lua_tostring(g_L, -1));
            lua_pop(g_L, 1);
        } else {
            g_signal_dispatched = 0;
            return;
        }
    }
    if (g_main)
        sched_cancel(g_main, message, "INTERRUPTED");
    g_signal_dispatched = 0;
}

/* --- sleeping ------------------------------------------------------- */

static int sleep_over(lua_State *co, struct waiter *wt)
{
    (void)co;
    (void)wt;
    return 0;
}

static uint64_t to_ms(lua_State *L, int i)
{
    lua_Number s = luaL_checknumber(L, i);
    if (s != s || s < 0)
        luaL_argerror(L, i, "seconds must be a number >= 0");
    if (s > 1e9)
        s = 1e9;
    return (uint64_t)(s * 1000.0 + 0.5);
}

/* sleep(seconds) -> */
static int l_sched_sleep(lua_State *L)
{
    uint64_t ms = to_ms(L, 1);
    sched_check_await(L, "task.sleep");
    lua_settop(L, 0);
    return waiter_await(L, "task.sleep", NULL, NULL, ms, sleep_over);
}

/* yield() -> ; lets every other ready task run first */
static int l_sched_yield(lua_State *L)
{
    sched_check_await(L, "task.yield");
    lua_settop(L, 0);
    make_ready(g_current, 0); /* completed before the yield */
    return yield_to_sched(L);
}

/* --- task handles ---------------------------------------------------- */

static int join_timed_out(lua_State *co, struct waiter *wt)
{
    struct bm_task *t = wt->what;
    lua_pushnil(co);
    lua_pushfstring(co,
                    "task %d%s%s%s is still running after the wait's "
                    "timeout",
                    (int)t->id, t->name[0] ? " (" : "", t->name,
                    t->name[0] ? ")" : "");
    lua_pushliteral(co, "TIMEOUT");
    return 3;
}

/* Pushes ok, results... (or false, err) of a finished task; returns count. */
static int push_outcome(lua_State *L, struct bm_task *t)
{
    int n, i;
    t->observed = 1;
    lua_pushboolean(L, t->ok);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->result_ref);
    if (!t->ok)
        return 2;
    lua_getfield(L, -1, "n");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n + 2, "too many results");
    for (i = 1; i <= n; i++)
        lua_rawgeti(L, -i, i);
    lua_remove(L, -(n + 1));
    return n + 1;
}

/* t:wait([timeout]) -> ok, results... | false, err | nil, msg, "TIMEOUT" */
static int l_task_wait(lua_State *L)
{
    struct bm_task *t = check_task(L, 1);
    int timed = !lua_isnoneornil(L, 2);
    uint64_t ms = timed ? to_ms(L, 2) : 0;
    if (t->state == T_DONE)
        return push_outcome(L, t);
    sched_check_await(L, "task:wait");
    if (t == g_current)
        return luaL_error(L, "task:wait: a task cannot wait for itself");
    lua_settop(L, 0);
    return waiter_await(L, "task:wait", &t->joiners, t, ms,
                        timed ? join_timed_out : NULL);
}

/* t:cancel([reason [, code]]) -> */
static int l_task_cancel(lua_State *L)
{
    struct bm_task *t = check_task(L, 1);
    sched_cancel(t, luaL_optstring(L, 2, "cancelled"),
                 luaL_optstring(L, 3, "CANCELLED"));
    return 0;
}

/* t:status() -> "ready"|"running"|"waiting"|"done"|"failed"|"cancelled" */
static int l_task_status(lua_State *L)
{
    struct bm_task *t = check_task(L, 1);
    static const char *names[] = {"ready", "running", "waiting", "done"};
    if (t->state == T_DONE && !t->ok) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->result_ref);
        lua_pushstring(L, is_cancel_error(L, -1) ? "cancelled" : "failed");
        return 1;
    }
    lua_pushstring(L, names[t->state]);
    return 1;
}

/* t:id() -> integer */
static int l_task_id(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_task(L, 1)->id);
    return 1;
}

/* t:name() -> string */
static int l_task_name(lua_State *L)
{
    lua_pushstring(L, check_task(L, 1)->name);
    return 1;
}

/* t:parent() -> task | nil */
static int l_task_parent(lua_State *L)
{
    struct bm_task *t = check_task(L, 1);
    if (!t->parent || t->parent->ud_ref == LUA_NOREF)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->parent->ud_ref);
    return 1;
}

/* t:locals() -> table (task-local storage, created on first use) */
static int l_task_locals(lua_State *L)
{
    struct bm_task *t = check_task(L, 1);
    if (t->locals_ref == LUA_NOREF) {
        lua_newtable(L);
        t->locals_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->locals_ref);
    return 1;
}

/* t:set_deadline(seconds) -> ; the count hook stops it past the deadline */
static int l_task_set_deadline(lua_State *L)
{
    struct bm_task *t = check_task(L, 1);
    uint64_t d = uv_hrtime() + to_ms(L, 2) * 1000000ull;
    if (!t->deadline || d < t->deadline)
        t->deadline = d;
    return 0;
}

/* t:cancelled() -> reason, code | nil */
static int l_task_cancelled(lua_State *L)
{
    struct bm_task *t = check_task(L, 1);
    if (!t->cancelled)
        return 0;
    lua_pushstring(L, t->cancel_reason);
    lua_pushstring(L, t->cancel_code);
    return 2;
}

static int l_task_tostring(lua_State *L)
{
    struct bm_task *t = check_task(L, 1);
    lua_pushfstring(L, "task %d%s%s%s", (int)t->id, t->name[0] ? " (" : "",
                    t->name, t->name[0] ? ")" : "");
    return 1;
}

static void task_free(struct bm_task *t)
{
    if (!g_closing) {
        luaL_unref(g_L, LUA_REGISTRYINDEX, t->result_ref);
        luaL_unref(g_L, LUA_REGISTRYINDEX, t->locals_ref);
    }
    free(t->cancel_reason);
    free(t);
}

static int l_task_gc(lua_State *L)
{
    struct bm_task **pp = luaL_checkudata(L, 1, TASK_MT);
    struct bm_task *t = *pp;
    /* A live task holds a reference to its own handle, so only a finished
     * task (or any task, while the state is being closed) gets here. */
    if (t && (t->state == T_DONE || g_closing)) {
        if (t == g_main)
            g_main = NULL;
        task_free(t);
        *pp = NULL;
    }
    return 0;
}

/* spawn(fn, ...) -> task */
static int l_sched_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    sched_spawn(L, lua_gettop(L) - 1, NULL);
    return 1;
}

/* spawn_named(name, fn, ...) -> task */
static int l_sched_spawn_named(lua_State *L)
{
    char name[64];
    snprintf(name, sizeof name, "%s", luaL_checkstring(L, 1));
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_remove(L, 1);
    sched_spawn(L, lua_gettop(L) - 1, name);
    return 1;
}

/* current() -> task | nil */
static int l_sched_current(lua_State *L)
{
    if (!g_current)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_current->ud_ref);
    return 1;
}

/* now() -> seconds (monotonic, float) */
static int l_sched_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
    return 1;
}

/* on_signal(fn) -> ; fn(signame, count) runs on SIGINT/TERM/HUP/QUIT */
static int l_sched_on_signal(lua_State *L)
{
    if (g_signal_handler_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, g_signal_handler_ref);
    g_signal_handler_ref = LUA_NOREF;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TFUNCTION);
        lua_settop(L, 1);
        g_signal_handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return 0;
}

/* cancel_error(message, code) -> error object */
static int l_sched_cancel_error(lua_State *L)
{
    push_cancel_error(L, luaL_checkstring(L, 1),
                      luaL_optstring(L, 2, "CANCELLED"));
    return 1;
}

/* cancel_code(err) -> code | nil ; whether err is a cancellation */
static int l_sched_cancel_code(lua_State *L)
{
    if (!is_cancel_error(L, 1))
        return 0;
    lua_getfield(L, 1, "code");
    return 1;
}

static int l_cancel_tostring(lua_State *L)
{
    lua_getfield(L, 1, "message");
    return 1;
}

/* --- events: wait until someone sets it -------------------------------- */

#define EVENT_MT "bomarun.event"

struct event {
    int set;
    int values_ref; /* {n=, ...} given to set() */
    struct waiter *waiters;
};

static int event_timed_out(lua_State *co, struct waiter *wt)
{
    (void)wt;
    lua_pushnil(co);
    lua_pushliteral(co, "the event was not set before the wait's timeout");
    lua_pushliteral(co, "TIMEOUT");
    return 3;
}

/* Pushes true, values... of a set event; returns the count. */
static int push_event_values(lua_State *L, struct event *ev)
{
    int n, i;
    lua_pushboolean(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ev->values_ref);
    lua_getfield(L, -1, "n");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n + 2, "too many values");
    for (i = 1; i <= n; i++)
        lua_rawgeti(L, -i, i);
    lua_remove(L, -(n + 1));
    return n + 1;
}

static int push_set_values(lua_State *co, void *ev)
{
    return push_event_values(co, ev);
}

/* event() -> event */
static int l_sched_event(lua_State *L)
{
    struct event *ev = lua_newuserdatauv(L, sizeof *ev, 0);
    memset(ev, 0, sizeof *ev);
    ev->values_ref = LUA_NOREF;
    luaL_setmetatable(L, EVENT_MT);
    return 1;
}

/* ev:wait([timeout]) -> true, values... | nil, msg, "TIMEOUT" */
static int l_event_wait(lua_State *L)
{
    struct event *ev = luaL_checkudata(L, 1, EVENT_MT);
    int timed = !lua_isnoneornil(L, 2);
    uint64_t ms = timed ? to_ms(L, 2) : 0;
    if (ev->set)
        return push_event_values(L, ev);
    sched_check_await(L, "event:wait");
    lua_settop(L, 1); /* the event stays referenced while waited on */
    return waiter_await(L, "event:wait", &ev->waiters, ev, ms,
                        timed ? event_timed_out : NULL);
}

/* ev:set(values...) -> ; wakes every waiter (and later waits return at
 * once until clear) */
static int l_event_set(lua_State *L)
{
    struct event *ev = luaL_checkudata(L, 1, EVENT_MT);
    int n = lua_gettop(L) - 1, i;
    lua_createtable(L, n, 1);
    for (i = 1; i <= n; i++) {
        lua_pushvalue(L, i + 1);
        lua_rawseti(L, -2, i);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    luaL_unref(L, LUA_REGISTRYINDEX, ev->values_ref);
    ev->values_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ev->set = 1;
    waiters_wake(&ev->waiters, push_set_values, ev);
    return 0;
}

/* ev:clear() -> ; later waits wait again */
static int l_event_clear(lua_State *L)
{
    struct event *ev = luaL_checkudata(L, 1, EVENT_MT);
    ev->set = 0;
    return 0;
}

/* ev:is_set() -> boolean */
static int l_event_is_set(lua_State *L)
{
    struct event *ev = luaL_checkudata(L, 1, EVENT_MT);
    lua_pushboolean(L, ev->set);
    return 1;
}

static int l_event_gc(lua_State *L)
{
    struct event *ev = luaL_checkudata(L, 1, EVENT_MT);
    if (!g_closing)
        luaL_unref(L, LUA_REGISTRYINDEX, ev->values_ref);
    return 0;
}

/* clang-format off */
static const luaL_Reg event_methods[] = {
    {"wait", l_event_wait},
    {"set", l_event_set},
    {"clear", l_event_clear},
    {"is_set", l_event_is_set},
    {NULL, NULL},
};
/* clang-format on */

/* clang-format off */
static const luaL_Reg task_methods[] = {
    {"wait", l_task_wait},
    {"cancel", l_task_cancel},
    {"status", l_task_status},
    {"id", l_task_id},
    {"name", l_task_name},
    {"parent", l_task_parent},
    {"locals", l_task_locals},
    {"set_deadline", l_task_set_deadline},
    {"cancelled", l_task_cancelled},
    {NULL, NULL},
};
/* clang-format on */

static const luaL_Reg task_meta[] = {
    {"__gc", l_task_gc},
    {"__tostring", l_task_tostring},
    {NULL, NULL},
};

static const luaL_Reg sched_funcs[] = {
    {"spawn", l_sched_spawn},
    {"spawn_named", l_sched_spawn_named},
    {"current", l_sched_current},
    {"sleep", l_sched_sleep},
    {"yield", l_sched_yield},
    {"now", l_sched_now},
    {"on_signal", l_sched_on_signal},
    {"cancel_error", l_sched_cancel_error},
    {"cancel_code", l_sched_cancel_code},
    {"event", l_sched_event},
    {NULL, NULL},
};

int luaopen_bomarun__sched(lua_State *L)
{
    luaL_newlib(L, sched_funcs);
    lua_pushlightuserdata(L, &SENTINEL_YIELD);
    lua_setfield(L, -2, "SENTINEL");
    return 1;
}

/* --- set-up and the main run --------------------------------------- */

void sched_init(lua_State *L, uv_loop_t *loop)
{
    g_L = L;
    g_main_ref = LUA_NOREF;
    g_loop = loop;
    luaL_newmetatable(L, TASK_MT);
    luaL_setfuncs(L, task_meta, 0);
    luaL_newlib(L, task_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, EVENT_MT);
    lua_pushcfunction(L, l_event_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newlib(L, event_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, CANCEL_MT);
    lua_pushcfunction(L, l_cancel_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    /* Threads created later inherit the hook from the main thread. */
    lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_COUNT);
}

static int live_tasks_exist(void) { return ready_head != NULL; }

int sched_run_main(lua_State *L, int nargs)
{
    int ok;
    /* Called again (a fuzz harness runs one main task per input): the
     * previous main task's handle may go now. */
    luaL_unref(L, LUA_REGISTRYINDEX, g_main_ref);
    g_main = sched_spawn(L, nargs, "main");
    /* Keep the main task's handle (and so its struct) until the next run
     * or the state closes: its result is read after it finished. */
    g_main_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    for (;;) {
        int alive;
        run_ready();
        if (g_main->state == T_DONE)
            break;
        alive = uv_run(g_loop, UV_RUN_ONCE);
        if (!alive && !live_tasks_exist() && g_main->state != T_DONE) {
            /* Nothing can ever wake the waiting tasks. */
            sched_cancel(g_main,
                         "deadlock: every task is waiting and "
                         "nothing can wake them",
                         "DEADLOCK");
        }
    }
    ok = g_main->ok;
    return ok ? 0 : 1;
}

void sched_push_main_result(lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_main->result_ref);
}

static void guard_fired(uv_timer_t *h) { (void)h; }

/* Let finished work drain: cancelled tasks unwind, killed process groups
 * are reaped, handles close.  Bounded by `ms`; returns 1 if quiescent. */
int sched_drain(int ms)
{
    uv_timer_t guard;
    int quiet = 0;
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000ull;
    /* An unreferenced timer bounds each blocking turn without keeping the
     * loop alive by itself. */
    uv_timer_init(g_loop, &guard);
    bm_timer_start(&guard, guard_fired, (uint64_t)ms, 0);
    uv_unref((uv_handle_t *)&guard);
    for (;;) {
        run_ready();
        if (!uv_loop_alive(g_loop) && !ready_head) {
            quiet = 1;
            break;
        }
        if (uv_hrtime() > end)
            break;
        uv_run(g_loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(g_loop, UV_RUN_NOWAIT);
    return quiet;
}

void sched_close(void) { g_closing = 1; }
