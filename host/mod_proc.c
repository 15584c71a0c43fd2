/* mod_proc: subprocesses on the loop (bomarun._proc).
 *
 * Every child is spawned detached (setsid), so it leads its own process
 * group; timeouts and cancellation signal the whole group (SIGTERM, then
 * SIGKILL after a grace period).  A process is finished when it has exited
 * and both output pipes reached EOF; if something else in its group keeps a
 * pipe open after the leader exited (a background grandchild holding
 * stdout), the group is killed and the pipes closed after a short drain
 * period, so no descendant can hang the run. */
#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include <lauxlib.h>

#include "lines.h"
#include "loop.h"
#include "mod_proc.h"
#include "opts.h"
#include "sched.h"

#define PROC_MT "bomarun.proc"
#define DEFAULT_GRACE_MS 2000
#define DEFAULT_DRAIN_MS 2000
#define DEFAULT_MAX_OUTPUT (64u << 20)
#define WHO "proc"

extern char **environ;

enum { S_RUNNING, S_TERMINATING, S_KILLED, S_DRAINING, S_DONE };

/* Signal names, for p:kill(name) and for the end a process met. */
static const struct {
    const char *name;
    int sig;
} sigs[] = {
    {"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT},   {"HUP", SIGHUP},
    {"QUIT", SIGQUIT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"STOP", SIGSTOP},
    {"CONT", SIGCONT}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"ABRT", SIGABRT},
    {"SEGV", SIGSEGV}, {"BUS", SIGBUS},   {"FPE", SIGFPE},   {"ILL", SIGILL},
    {"TRAP", SIGTRAP}, {"SYS", SIGSYS},
};

/* Pushes "SIGKILL" (or "SIG34" for a signal without a name here). */
static void push_signal_name(lua_State *L, int sig)
{
    size_t k;
    for (k = 0; k < sizeof sigs / sizeof sigs[0]; k++)
        if (sigs[k].sig == sig) {
            lua_pushfstring(L, "SIG%s", sigs[k].name);
            return;
        }
    lua_pushfstring(L, "SIG%d", sig);
}

struct proc {
    uv_process_t process;
    uv_pipe_t pipes[3]; /* 0 stdin, 1 stdout, 2 stderr */
    uv_timer_t timer;   /* timeout, grace or drain, by stage */
    uv_write_t wreq;
    int pipe_open[3];
    int open_handles;
    int pid;
    int stage;
    int exited;
    int64_t exit_status;
    int term_signal;
    int timed_out, cancelled, lingering;
    int keep; /* a service: outlives its spawning task */
    uint64_t t_start, t_end;
    uint64_t timeout_ms, grace_ms, drain_ms;
    size_t max_output;
    struct bm_stream out[3]; /* stdout (1) and stderr (2) */
    int on_line_ref;
    int on_start_ref, on_exit_ref; /* called once each */
    int self_ref;
    int ud_gone;
    int waiting;
    struct bm_wait w;
    struct bm_resource owner; /* the spawning task: we die with it */
    char *stdin_data;
    size_t stdin_len;
    char **argv, **env; /* until spawned; freed with p if an option raises */
    char desc[200];
};

static void strv_free(char **v)
{
    size_t i;
    if (!v)
        return;
    for (i = 0; v[i]; i++)
        free(v[i]);
    free(v);
}

static void proc_free(struct proc *p)
{
    int i;
    lua_State *L = sched_main_state();
    for (i = 1; i < 3; i++)
        bm_stream_free(&p->out[i]);
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, p->on_line_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, p->on_start_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, p->on_exit_ref);
    }
    strv_free(p->argv);
    strv_free(p->env);
    free(p->stdin_data);
    free(p);
}

static void handle_closed(uv_handle_t *h)
{
    struct proc *p = h->data;
    if (--p->open_handles > 0)
        return;
    if (p->self_ref != LUA_NOREF) {
        /* Nothing of libuv points at p now: let the handle be collected. */
        luaL_unref(sched_main_state(), LUA_REGISTRYINDEX, p->self_ref);
        p->self_ref = LUA_NOREF;
    }
    if (p->ud_gone)
        proc_free(p);
}

static void close_handle(struct proc *p, uv_handle_t *h)
{
    (void)p;
    if (!uv_is_closing(h))
        uv_close(h, handle_closed);
}

/* --- finishing ---------------------------------------------------------- */

static void push_result(lua_State *L, struct proc *p)
{
    lua_createtable(L, 0, 12);
    if (p->exited && p->term_signal == 0) {
        lua_pushinteger(L, (lua_Integer)p->exit_status);
        lua_setfield(L, -2, "code");
    }
    if (p->term_signal) {
        lua_pushinteger(L, p->term_signal);
        lua_setfield(L, -2, "signal");
    }
    bm_stream_push(L, &p->out[1]);
    lua_setfield(L, -2, "stdout");
    bm_stream_push(L, &p->out[2]);
    lua_setfield(L, -2, "stderr");
    lua_pushnumber(L, (lua_Number)(p->t_end - p->t_start) / 1e9);
    lua_setfield(L, -2, "duration");
    lua_pushinteger(L, p->pid);
    lua_setfield(L, -2, "pid");
    lua_pushboolean(L, p->timed_out);
    lua_setfield(L, -2, "timed_out");
    lua_pushboolean(L, p->lingering);
    lua_setfield(L, -2, "lingering");
    lua_pushboolean(L, p->out[1].truncated || p->out[2].truncated);
    lua_setfield(L, -2, "truncated");
}

/* Pushes what a wait returns; returns the count. */
static int push_outcome(lua_State *L, struct proc *p)
{
    if (!p->timed_out) {
        push_result(L, p);
        return 1;
    }
    lua_pushnil(L);
    lua_pushfstring(L,
                    "proc: %s (pid %d) timed out after %f s; its process "
                    "group was killed",
                    p->desc, p->pid, (lua_Number)p->timeout_ms / 1000.0);
    lua_pushliteral(L, "TIMEOUT");
    push_result(L, p);
    return 4;
}

/* Calls the on_exit option once, with (pid, code|nil, signal name|nil):
 * like on_line, from the loop (or the closing of the handle), so it cannot
 * wait; an error in it is reported, not raised. */
static void notify_exit(lua_State *L, struct proc *p)
{
    int ref = p->on_exit_ref;
    if (ref == LUA_NOREF || !L)
        return;
    p->on_exit_ref = LUA_NOREF;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    lua_pushinteger(L, p->pid);
    if (p->exited && p->term_signal == 0)
        lua_pushinteger(L, (lua_Integer)p->exit_status);
    else
        lua_pushnil(L);
    if (p->term_signal)
        push_signal_name(L, p->term_signal);
    else
        lua_pushnil(L);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
        fprintf(stderr, "bomarun: on_exit callback for %s failed: %s\n",
                p->desc, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

/* L: the thread to run the on_exit callback on. */
static void finish_on(lua_State *L, struct proc *p)
{
    int i;
    if (p->stage == S_DONE)
        return;
    p->stage = S_DONE;
    p->t_end = uv_hrtime();
    uv_timer_stop(&p->timer);
    close_handle(p, (uv_handle_t *)&p->timer);
    for (i = 0; i < 3; i++)
        if (p->pipe_open[i]) {
            p->pipe_open[i] = 0;
            close_handle(p, (uv_handle_t *)&p->pipes[i]);
        }
    loop_untrack_pgid(p->pid);
    sched_disown(&p->owner);
    notify_exit(L, p);
    if (p->waiting) {
        lua_State *co = sched_wait_state(&p->w);
        int n;
        p->waiting = 0;
        n = push_outcome(co, p);
        sched_complete(&p->w, n);
    }
}

static void finish(struct proc *p) { finish_on(sched_main_state(), p); }

static void close_pipes(struct proc *p)
{
    int i;
    for (i = 1; i < 3; i++)
        if (p->pipe_open[i]) {
            bm_stream_flush(&p->out[i], p->on_line_ref, p->desc);
            p->pipe_open[i] = 0;
            uv_read_stop((uv_stream_t *)&p->pipes[i]);
            close_handle(p, (uv_handle_t *)&p->pipes[i]);
        }
}

static int pipes_done(struct proc *p)
{
    return !p->pipe_open[1] && !p->pipe_open[2];
}

static void kill_group(struct proc *p, int sig)
{
    if (p->pid <= 0)
        return; /* never started: kill(0) would hit our own group */
    /* The group may outlive its leader; signal it regardless. */
    if (kill(-(pid_t)p->pid, sig) != 0 && !p->exited)
        kill((pid_t)p->pid, sig);
}

static void on_timer(uv_timer_t *h);
static void terminate(struct proc *p);

static void start_stage(struct proc *p, int stage, uint64_t ms)
{
    p->stage = stage;
    uv_timer_stop(&p->timer);
    bm_timer_start(&p->timer, on_timer, ms, 0);
}

static void terminate(struct proc *p)
{
    kill_group(p, SIGTERM);
    start_stage(p, S_TERMINATING, p->grace_ms);
}

static void on_timer(uv_timer_t *h)
{
    struct proc *p = h->data;
    switch (p->stage) {
    case S_RUNNING: /* the timeout */
        p->timed_out = 1;
        terminate(p);
        break;
    case S_TERMINATING: /* the grace period ran out */
        kill_group(p, SIGKILL);
        p->stage = S_KILLED;
        close_pipes(p);
        if (p->exited)
            finish(p);
        break;
    case S_DRAINING: /* exited, but the group holds the pipes */
        kill_group(p, SIGKILL);
        p->lingering = 1;
        close_pipes(p);
        finish(p);
        break;
    default: break;
    }
}

static void on_child_exit(uv_process_t *h, int64_t status, int sig)
{
    struct proc *p = h->data;
    p->exited = 1;
    p->exit_status = status;
    p->term_signal = sig;
    close_handle(p, (uv_handle_t *)h);
    if (pipes_done(p))
        finish(p);
    else if (p->stage == S_RUNNING)
        start_stage(p, S_DRAINING, p->drain_ms);
    else if (p->stage == S_KILLED)
        finish(p);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char chunk[65536];
    (void)h;
    (void)hint;
    /* Reads are consumed synchronously in on_read, so one buffer serves. */
    buf->base = chunk;
    buf->len = sizeof chunk;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct proc *p = s->data;
    int fd = s == (uv_stream_t *)&p->pipes[1] ? 1 : 2;
    if (n > 0) {
        bm_stream_feed(&p->out[fd], buf->base, (size_t)n, p->on_line_ref,
                       p->desc);
        return;
    }
    if (n == 0)
        return;
    bm_stream_flush(&p->out[fd], p->on_line_ref, p->desc);
    p->pipe_open[fd] = 0;
    uv_read_stop(s);
    close_handle(p, (uv_handle_t *)s);
    if (pipes_done(p) && p->exited)
        finish(p);
}

static void on_written(uv_write_t *req, int status)
{
    struct proc *p = req->data;
    (void)status; /* EPIPE: the child did not want its input */
    if (p->pipe_open[0]) {
        p->pipe_open[0] = 0;
        close_handle(p, (uv_handle_t *)&p->pipes[0]);
    }
}

/* --- spawning ----------------------------------------------------------- */

/* An option string as C sees it: one with a NUL byte would be cut short,
 * silently running something else, so it raises. */
static const char *c_string(lua_State *L, int i, const char *what)
{
    size_t len;
    const char *s = lua_tolstring(L, i, &len);
    if (strlen(s) != len)
        luaL_error(L, "proc: %s contains a NUL byte", what);
    return s;
}

static char *dup_or_raise(lua_State *L, const char *s)
{
    char *d = strdup(s);
    if (!d)
        luaL_error(L, "proc: out of memory");
    return d;
}

/* p->argv from opts.shell or opts.argv.  p owns it from the start, so an
 * error raised half-way leaks nothing (the handle's __gc frees p). */
static void argv_from(lua_State *L, int opts, struct proc *p)
{
    char what[32];
    size_t n, i, used = 0;
    const char *shell = opts_string(L, opts, WHO, "shell", NULL);
    if (shell) {
        lua_getfield(L, opts, "shell");
        shell = c_string(L, -1, "option 'shell'");
        if (!(p->argv = calloc(4, sizeof *p->argv)))
            luaL_error(L, "proc: out of memory");
        p->argv[0] = dup_or_raise(L, "/bin/sh");
        p->argv[1] = dup_or_raise(L, "-c");
        p->argv[2] = dup_or_raise(L, shell);
        lua_pop(L, 1);
        snprintf(p->desc, sizeof p->desc, "sh -c '%s'", p->argv[2]);
        return;
    }
    if (!opts_push_table(L, opts, WHO, "argv"))
        luaL_error(L, "proc: argv (a list of strings) or shell (a string) "
                      "is required");
    n = lua_rawlen(L, -1);
    if (n == 0)
        luaL_error(L, "proc: argv is empty");
    if (!(p->argv = calloc(n + 1, sizeof *p->argv)))
        luaL_error(L, "proc: out of memory");
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        if (!lua_isstring(L, -1))
            luaL_error(L, "proc: argv[%d] is a %s, not a string", (int)i + 1,
                       luaL_typename(L, -1));
        snprintf(what, sizeof what, "argv[%d]", (int)i + 1);
        p->argv[i] = dup_or_raise(L, c_string(L, -1, what));
        if (used < sizeof p->desc - 1)
            used += (size_t)snprintf(p->desc + used, sizeof p->desc - used,
                                     "%s%s", i ? " " : "", p->argv[i]);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* The string at i as a message shows it: a NUL byte as \0.  Pushes it. */
static const char *shown(lua_State *L, int i)
{
    luaL_Buffer b;
    size_t len, k;
    const char *s = lua_tolstring(L, i, &len);
    luaL_buffinit(L, &b);
    for (k = 0; k < len; k++)
        if (s[k])
            luaL_addchar(&b, s[k]);
        else
            luaL_addstring(&b, "\\0");
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

static int env_key_match(const char *entry, const char *key, size_t klen)
{
    return strncmp(entry, key, klen) == 0 && entry[klen] == '=';
}

/* The key at -2 and value at -1 of opts.env, checked: a key is a non-empty
 * string without '=' or NUL (the child would see another variable), a
 * value a string, number or boolean without NUL.  Returns the key. */
static const char *env_entry(lua_State *L, size_t *klen)
{
    const char *k;
    int t = lua_type(L, -1);
    if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "proc: option 'env': keys must be strings, not a %s",
                   luaL_typename(L, -2));
    k = lua_tolstring(L, -2, klen);
    if (*klen == 0)
        luaL_error(L, "proc: option 'env': a key is empty");
    if (strlen(k) != *klen)
        luaL_error(L, "proc: option 'env': key '%s' contains a NUL byte",
                   shown(L, -2));
    if (strchr(k, '='))
        luaL_error(L, "proc: option 'env': key '%s' contains '='", k);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
        luaL_error(L,
                   "proc: option 'env': env['%s'] is a %s, not a string "
                   "(or false to remove it)",
                   k, luaL_typename(L, -1));
    if (t == LUA_TSTRING) {
        size_t vlen;
        const char *v = lua_tolstring(L, -1, &vlen);
        if (strlen(v) != vlen)
            luaL_error(L, "proc: option 'env': env['%s'] contains a NUL byte",
                       shown(L, -2));
    }
    return k;
}

/* p->env: ours (unless clear_env), with opts.env applied (a false value
 * removes a variable).  Left NULL to inherit.  Owned by p as argv is. */
static void env_from(lua_State *L, int opts, struct proc *p)
{
    char **env;
    size_t n = 0, cap, i;
    int clear = opts_boolean(L, opts, WHO, "clear_env", 0);
    if (!opts_push_table(L, opts, WHO, "env")) {
        if (!clear)
            return;
        lua_pushnil(L); /* in place of the table */
    }
    cap = 16;
    if (!clear)
        for (i = 0; environ[i]; i++)
            cap++;
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            cap++;
            lua_pop(L, 1);
        }
    }
    if (!(p->env = env = calloc(cap + 1, sizeof *env)))
        luaL_error(L, "proc: out of memory");
    if (!clear)
        for (i = 0; environ[i]; i++)
            env[n++] = dup_or_raise(L, environ[i]);
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            size_t klen;
            const char *k = env_entry(L, &klen);
            for (i = 0; i < n; i++)
                if (env_key_match(env[i], k, klen)) {
                    free(env[i]);
                    env[i] = env[--n];
                    env[n] = NULL;
                    break;
                }
            if (lua_toboolean(L, -1)) {
                size_t vlen;
                const char *v;
                lua_pushvalue(L, -1);
                v = luaL_tolstring(L, -1, &vlen);
                if (!(env[n] = malloc(klen + vlen + 2)))
                    luaL_error(L, "proc: out of memory");
                memcpy(env[n], k, klen);
                env[n][klen] = '=';
                memcpy(env[n] + klen + 1, v, vlen + 1);
                n++;
                lua_pop(L, 2);
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

static void read_options(lua_State *L, struct proc *p)
{
    const char *in;
    size_t len;
    p->timeout_ms = opts_ms(L, 1, WHO, "timeout", 0);
    p->grace_ms = opts_ms(L, 1, WHO, "grace", DEFAULT_GRACE_MS);
    p->drain_ms = opts_ms(L, 1, WHO, "drain", DEFAULT_DRAIN_MS);
    p->max_output =
        (size_t)opts_integer(L, 1, WHO, "max_output", DEFAULT_MAX_OUTPUT);
    bm_stream_init(&p->out[1], "stdout", p->max_output);
    bm_stream_init(&p->out[2], "stderr", p->max_output);
    p->keep = opts_boolean(L, 1, WHO, "keep", 0);
    in = opts_lstring(L, 1, WHO, "stdin", NULL, &len);
    if (in && (p->stdin_data = malloc(len + 1))) {
        memcpy(p->stdin_data, in, len + 1);
        p->stdin_len = len;
    }
    p->on_line_ref = opts_ref_function(L, 1, WHO, "on_line");
    p->on_start_ref = opts_ref_function(L, 1, WHO, "on_start");
    p->on_exit_ref = opts_ref_function(L, 1, WHO, "on_exit");
}

/* Pushes nil, "proc: cannot start ...", CODE; returns 3. */
static int spawn_failed(lua_State *L, struct proc *p, int err, const char *cwd)
{
    lua_pushnil(L);
    if (cwd && err == UV_ENOENT)
        lua_pushfstring(L, "proc: cannot start %s (in %s): %s: %s", p->desc,
                        cwd, uv_err_name(err), uv_strerror(err));
    else
        lua_pushfstring(L, "proc: cannot start %s: %s: %s", p->desc,
                        uv_err_name(err), uv_strerror(err));
    lua_pushstring(L, uv_err_name(err));
    return 3;
}

/* The task that spawned p finished while p still runs: no orphans. */
static void owner_finished(struct bm_resource *r)
{
    struct proc *p = (struct proc *)((char *)r - offsetof(struct proc, owner));
    if (p->stage == S_RUNNING)
        terminate(p);
    else if (p->stage == S_DRAINING)
        on_timer(&p->timer);
}

static int do_spawn(lua_State *L, struct proc *p, const char *cwd)
{
    uv_process_options_t o;
    uv_stdio_container_t stdio[3];
    uv_loop_t *loop = sched_loop();
    int i, r;
    memset(&o, 0, sizeof o);
    o.file = p->argv[0];
    o.args = p->argv;
    o.env = p->env;
    o.cwd = cwd;
    o.exit_cb = on_child_exit;
    o.flags = UV_PROCESS_DETACHED; /* setsid: its own process group */
    o.stdio_count = 3;
    o.stdio = stdio;
    for (i = 0; i < 3; i++) {
        uv_pipe_init(loop, &p->pipes[i], 0);
        p->pipes[i].data = p;
        stdio[i].data.stream = (uv_stream_t *)&p->pipes[i];
    }
    stdio[0].flags =
        p->stdin_data ? UV_CREATE_PIPE | UV_READABLE_PIPE : UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    p->process.data = p;
    p->t_start = uv_hrtime();
    loop_prepare_group(); /* the watchdog runs before the group exists */
    r = uv_spawn(loop, &p->process, &o);
    p->open_handles = 5; /* process, timer, three pipes */
    if (r < 0) {
        p->stage = S_DONE;
        for (i = 0; i < 3; i++)
            close_handle(p, (uv_handle_t *)&p->pipes[i]);
        close_handle(p, (uv_handle_t *)&p->timer);
        close_handle(p, (uv_handle_t *)&p->process);
        return spawn_failed(L, p, r, cwd);
    }
    p->pid = p->process.pid;
    p->stage = S_RUNNING;
    loop_track_pgid(p->pid);
    p->owner.release = owner_finished;
    if (!p->keep)
        sched_own(&p->owner);
    for (i = 1; i < 3; i++) {
        p->pipe_open[i] = 1;
        uv_read_start((uv_stream_t *)&p->pipes[i], on_alloc, on_read);
    }
    if (p->stdin_data) {
        uv_buf_t b = uv_buf_init(p->stdin_data, (unsigned)p->stdin_len);
        p->pipe_open[0] = 1;
        p->wreq.data = p;
        uv_write(&p->wreq, (uv_stream_t *)&p->pipes[0], &b, 1, on_written);
    } else {
        close_handle(p, (uv_handle_t *)&p->pipes[0]);
    }
    if (p->timeout_ms)
        bm_timer_start(&p->timer, on_timer, p->timeout_ms, 0);
    return 0;
}

static struct proc *check_proc(lua_State *L, int i)
{
    struct proc **pp = luaL_checkudata(L, i, PROC_MT);
    if (!*pp)
        luaL_error(L, "proc: the handle is closed");
    return *pp;
}

/* Calls the on_start option with the pid (the group's id) once the process
 * runs; an error in it is reported, not raised: the process runs now. */
static void notify_start(lua_State *L, struct proc *p)
{
    int ref = p->on_start_ref;
    if (ref == LUA_NOREF)
        return;
    p->on_start_ref = LUA_NOREF;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    lua_pushinteger(L, p->pid);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "bomarun: on_start callback for %s failed: %s\n",
                p->desc, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

/* spawn(opts) -> handle | nil, msg, CODE */
static int l_proc_spawn(lua_State *L)
{
    struct proc *p, **pp;
    const char *cwd;
    int n;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    pp = lua_newuserdatauv(L, sizeof *pp, 0); /* index 2 */
    *pp = NULL;
    luaL_setmetatable(L, PROC_MT);
    if (!(p = *pp = calloc(1, sizeof *p)))
        return luaL_error(L, "proc: out of memory");
    p->on_line_ref = p->on_start_ref = p->on_exit_ref = LUA_NOREF;
    p->self_ref = LUA_NOREF;
    p->stage = S_DONE; /* until it runs: nothing for __gc to stop */
    /* Option errors raise: the userdata's __gc frees p and what it holds. */
    read_options(L, p);
    argv_from(L, 1, p);
    env_from(L, 1, p);
    if ((cwd = opts_string(L, 1, WHO, "cwd", NULL))) {
        lua_getfield(L, 1, "cwd");
        cwd = c_string(L, -1, "option 'cwd'");
        lua_pop(L, 1); /* opts still holds it */
    }
    n = do_spawn(L, p, cwd);
    strv_free(p->argv);
    strv_free(p->env);
    p->argv = p->env = NULL;
    if (n)
        return n;
    lua_pushvalue(L, 2);
    p->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    notify_start(L, p);
    lua_settop(L, 2);
    return 1;
}

static void wait_cancel(struct bm_wait *w)
{
    struct proc *p = (struct proc *)((char *)w - offsetof(struct proc, w));
    p->waiting = 0;
    p->cancelled = 1;
    if (p->stage == S_RUNNING)
        terminate(p);
    else if (p->stage == S_DRAINING)
        on_timer(&p->timer);
}

/* p:wait() -> result | nil, msg, "TIMEOUT", result */
static int l_proc_wait(lua_State *L)
{
    struct proc *p = check_proc(L, 1);
    if (p->stage == S_DONE)
        return push_outcome(L, p);
    if (p->waiting)
        return luaL_error(L, "proc: another task is already waiting for %s",
                          p->desc);
    sched_check_await(L, "proc.wait");
    p->waiting = 1;
    p->w.cancel = wait_cancel;
    lua_settop(L, 0);
    return sched_await(L, &p->w);
}

/* run(opts) -> result | nil, msg, CODE [, result] */
static int l_proc_run(lua_State *L)
{
    int n;
    sched_check_await(L, "proc.run");
    n = l_proc_spawn(L);
    if (n != 1)
        return n;
    lua_replace(L, 1);
    lua_settop(L, 1);
    return l_proc_wait(L);
}

static int signal_from(lua_State *L, int i)
{
    const char *s;
    size_t k;
    if (lua_isnoneornil(L, i))
        return SIGTERM;
    if (lua_type(L, i) == LUA_TNUMBER)
        return (int)lua_tointeger(L, i);
    s = luaL_checkstring(L, i);
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    for (k = 0; k < sizeof sigs / sizeof sigs[0]; k++)
        if (strcmp(s, sigs[k].name) == 0)
            return sigs[k].sig;
    return luaL_argerror(L, i, "unknown signal name");
}

/* p:kill([sig]) -> true | nil, msg, CODE ; signals the whole group */
static int l_proc_kill(lua_State *L)
{
    struct proc *p = check_proc(L, 1);
    int sig = signal_from(L, 2);
    if (p->stage == S_DONE) {
        lua_pushnil(L);
        lua_pushfstring(L, "proc: %s (pid %d) has already finished", p->desc,
                        p->pid);
        lua_pushliteral(L, "ESRCH");
        return 3;
    }
    kill_group(p, sig);
    lua_pushboolean(L, 1);
    return 1;
}

/* p:terminate() -> ; SIGTERM the group, SIGKILL after the grace period */
static int l_proc_terminate(lua_State *L)
{
    struct proc *p = check_proc(L, 1);
    if (p->stage == S_RUNNING)
        terminate(p);
    else if (p->stage == S_DRAINING)
        on_timer(&p->timer);
    return 0;
}

/* p:pid() -> integer */
static int l_proc_pid(lua_State *L)
{
    lua_pushinteger(L, check_proc(L, 1)->pid);
    return 1;
}

/* p:done() -> boolean */
static int l_proc_done(lua_State *L)
{
    lua_pushboolean(L, check_proc(L, 1)->stage == S_DONE);
    return 1;
}

static int l_proc_tostring(lua_State *L)
{
    struct proc **pp = luaL_checkudata(L, 1, PROC_MT);
    struct proc *p = *pp;
    if (!p)
        lua_pushliteral(L, "proc (closed)");
    else
        lua_pushfstring(L, "proc %d: %s", p->pid, p->desc);
    return 1;
}

/* __gc and __close: a process still running is killed with its group and
 * its pipes are closed (waiting tasks still get its result).  Only
 * <close> or the state closing can get here while it runs: until its
 * handles are closed, p->self_ref keeps the userdata alive. */
static int l_proc_gc(lua_State *L)
{
    struct proc **pp = luaL_checkudata(L, 1, PROC_MT);
    struct proc *p = *pp;
    if (!p)
        return 0;
    *pp = NULL;
    if (p->stage != S_DONE) {
        kill_group(p, SIGKILL);
        uv_timer_stop(&p->timer);
        p->stage = S_KILLED;
        close_pipes(p);
        if (p->exited)
            finish_on(L, p);
    }
    p->ud_gone = 1;
    /* Memory goes in the last close callback while libuv still owns it. */
    if (p->open_handles == 0)
        proc_free(p);
    return 0;
}

/* clang-format off */
static const luaL_Reg proc_methods[] = {
    {"wait", l_proc_wait},
    {"kill", l_proc_kill},
    {"terminate", l_proc_terminate},
    {"pid", l_proc_pid},
    {"done", l_proc_done},
    {NULL, NULL},
};
/* clang-format on */

static const luaL_Reg proc_meta[] = {
    {"__gc", l_proc_gc},
    {"__close", l_proc_gc},
    {"__tostring", l_proc_tostring},
    {NULL, NULL},
};

static const luaL_Reg proc_funcs[] = {
    {"spawn", l_proc_spawn},
    {"run", l_proc_run},
    {NULL, NULL},
};

int luaopen_bomarun__proc(lua_State *L)
{
    if (luaL_newmetatable(L, PROC_MT)) {
        luaL_setfuncs(L, proc_meta, 0);
        luaL_newlib(L, proc_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    luaL_newlib(L, proc_funcs);
    return 1;
}
