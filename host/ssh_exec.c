/* ssh_exec: commands over channels of a session (s:_exec).
 *
 * A command opens a channel (a session-level request, under the session
 * lock), runs, streams both outputs line by line, and ends with its exit
 * status.  A command given up on (timeout, cancel) is answered at once; its
 * channel is closed in the background by a reap operation, since a close
 * waits for the server's, which comes only when the command ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opts.h"
#include "ssh_int.h"

#define WHO "ssh exec"

enum { E_OPEN, E_EXEC, E_IO, E_CLOSE, E_WAIT_CLOSED, E_FREE };

/* What a phase returns, besides SSH_*: go on to the next phase now. */
enum { NEXT = 3 };

struct ssh_exec {
    struct ssh_op op;
    LIBSSH2_CHANNEL *ch;
    char *cmd;
    char *in; /* stdin, sent then closed */
    size_t in_len, in_off;
    int eof_sent;
    struct bm_stream out[2];
    int on_line_ref;
    int exit_status;
    char exit_signal[32];
};

/* A channel given up on, closed and freed whenever the server lets us. */
struct ssh_reap {
    struct ssh_op op;
    LIBSSH2_CHANNEL *ch;
};

static int step_reap(struct ssh_op *op)
{
    struct ssh_reap *r = (struct ssh_reap *)op;
    int rc;
    op->stage = "channel";
    if (op->phase == 0) {
        rc = libssh2_channel_close(r->ch);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return SSH_AGAIN;
        op->phase = 1;
    }
    rc = libssh2_channel_free(r->ch);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return SSH_AGAIN;
    r->ch = NULL;
    return SSH_DONE;
}

static void reap_channel(struct ssh_sess *s, LIBSSH2_CHANNEL *ch)
{
    struct ssh_op *op =
        ssh_op_new(s, SSH_K_REAP, sizeof(struct ssh_reap), step_reap);
    if (!op)
        return;
    ((struct ssh_reap *)op)->ch = ch;
    ssh_op_start(op);
}

/* --- the command's phases ------------------------------------------------- */

static void *open_channel(LIBSSH2_SESSION *ssh)
{
    return libssh2_channel_open_session(ssh);
}

static void send_input(struct ssh_exec *e, int *moved)
{
    ssize_t n;
    if (e->in_off < e->in_len) {
        n = libssh2_channel_write(e->ch, e->in + e->in_off,
                                  e->in_len - e->in_off);
        if (n > 0) {
            e->in_off += (size_t)n;
            *moved = 1;
        } else if (n != LIBSSH2_ERROR_EAGAIN && n < 0) {
            e->in_off = e->in_len; /* the command stopped reading */
        }
    }
    if (e->in_off >= e->in_len && !e->eof_sent) {
        n = libssh2_channel_send_eof(e->ch);
        if (n == 0 || (n != LIBSSH2_ERROR_EAGAIN))
            e->eof_sent = 1;
    }
}

static int exec_io(struct ssh_exec *e)
{
    char buf[SSH_CHUNK];
    int moved = 0, i;
    ssize_t n;
    send_input(e, &moved);
    for (i = 0; i < 2; i++) {
        for (;;) {
            n = libssh2_channel_read_ex(e->ch, i ? SSH_EXTENDED_DATA_STDERR : 0,
                                        buf, sizeof buf);
            if (n > 0) {
                bm_stream_feed(&e->out[i], buf, (size_t)n, e->on_line_ref,
                               e->cmd);
                moved = 1;
                continue;
            }
            if (n < 0 && n != LIBSSH2_ERROR_EAGAIN)
                return ssh_fail_rc(&e->op, "EXEC", (int)n, "reading output");
            break;
        }
    }
    if (libssh2_channel_eof(e->ch)) {
        bm_stream_flush(&e->out[0], e->on_line_ref, e->cmd);
        bm_stream_flush(&e->out[1], e->on_line_ref, e->cmd);
        e->op.phase = E_CLOSE;
        return SSH_PROGRESS;
    }
    return moved ? SSH_PROGRESS : SSH_AGAIN;
}

static void read_exit(struct ssh_exec *e)
{
    char *sig = NULL;
    size_t siglen = 0;
    e->exit_status = libssh2_channel_get_exit_status(e->ch);
    if (libssh2_channel_get_exit_signal(e->ch, &sig, &siglen, NULL, NULL, NULL,
                                        NULL) == 0 &&
        sig) {
        snprintf(e->exit_signal, sizeof e->exit_signal, "%.*s", (int)siglen,
                 sig);
        libssh2_free(e->op.s->ssh, sig);
    }
}

static int phase_exec(struct ssh_exec *e)
{
    struct ssh_op *op = &e->op;
    int rc;
    op->stage = "exec";
    if (op->cancelled || op->timed_out) {
        op->phase = E_FREE;
        return NEXT;
    }
    rc = libssh2_channel_exec(e->ch, e->cmd);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return SSH_AGAIN;
    if (rc != 0) {
        ssh_fail_rc(op, "EXEC", rc, "the server refused to run the command");
        op->phase = E_FREE;
        op->fail_pending = 1;
        return NEXT;
    }
    op->phase = E_IO;
    return NEXT;
}

static int phase_close(struct ssh_exec *e)
{
    struct ssh_op *op = &e->op;
    int rc;
    if (op->timed_out || op->cancelled) {
        /* Closing waits for the server's close, which comes only when the
         * command ends: do that in the background and answer now. */
        reap_channel(op->s, e->ch);
        e->ch = NULL;
        op->phase = E_FREE;
        return NEXT;
    }
    rc = libssh2_channel_close(e->ch);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return SSH_AGAIN;
    op->phase = rc != 0 ? E_FREE : E_WAIT_CLOSED;
    return NEXT;
}

/* The channel is gone: how the command ended. */
static int phase_free(struct ssh_exec *e)
{
    struct ssh_op *op = &e->op;
    if (e->ch) {
        int rc = libssh2_channel_free(e->ch);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return SSH_AGAIN;
        e->ch = NULL;
    }
    if (op->fail_pending)
        return SSH_FAILED;
    if (op->timed_out)
        return ssh_fail(op, "TIMEOUT",
                        "`%s` timed out after %.3g s; the channel was closed",
                        e->cmd, (double)op->timeout_ms / 1000.0);
    if (op->cancelled)
        return ssh_fail(op, "CANCELLED", "cancelled");
    return SSH_DONE;
}

/* Runs one phase: NEXT, or what the step returns. */
static int exec_phase(struct ssh_exec *e)
{
    struct ssh_op *op = &e->op;
    int rc;
    switch (op->phase) {
    case E_OPEN:
        op->stage = "channel";
        if (op->cancelled || op->timed_out)
            return ssh_fail(op, op->timed_out ? "TIMEOUT" : "CANCELLED",
                            "gave up before the channel opened");
        rc = ssh_locked_open(op, open_channel, (void **)&e->ch, "CHANNEL",
                             "cannot open a channel");
        if (rc != SSH_DONE)
            return rc;
        op->phase = E_EXEC;
        return NEXT;
    case E_EXEC: return phase_exec(e);
    case E_IO:
        op->stage = "exec";
        if (op->cancelled || op->timed_out) {
            op->phase = E_CLOSE;
            return NEXT;
        }
        rc = exec_io(e);
        return rc == SSH_PROGRESS && op->phase != E_IO ? NEXT : rc;
    case E_CLOSE: return phase_close(e);
    case E_WAIT_CLOSED:
        rc = libssh2_channel_wait_closed(e->ch);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return SSH_AGAIN;
        read_exit(e);
        op->phase = E_FREE;
        return NEXT;
    default: return phase_free(e);
    }
}

static int step_exec(struct ssh_op *op)
{
    int rc;
    do
        rc = exec_phase((struct ssh_exec *)op);
    while (rc == NEXT);
    return rc;
}

/* --- results and the Lua method ------------------------------------------- */

static void push_exec(lua_State *L, struct ssh_op *op)
{
    struct ssh_exec *e = (struct ssh_exec *)op;
    double dur = (double)(uv_hrtime() - op->t0) / 1e9;
    lua_createtable(L, 0, 8);
    if (!e->exit_signal[0] && !op->timed_out && !op->cancelled) {
        lua_pushinteger(L, e->exit_status);
        lua_setfield(L, -2, "status");
    }
    if (e->exit_signal[0]) {
        lua_pushstring(L, e->exit_signal);
        lua_setfield(L, -2, "signal");
    }
    bm_stream_push(L, &e->out[0]);
    lua_setfield(L, -2, "stdout");
    bm_stream_push(L, &e->out[1]);
    lua_setfield(L, -2, "stderr");
    lua_pushnumber(L, dur);
    lua_setfield(L, -2, "duration");
    lua_pushboolean(L, op->timed_out);
    lua_setfield(L, -2, "timed_out");
}

static void release_exec(struct ssh_op *op)
{
    struct ssh_exec *e = (struct ssh_exec *)op;
    lua_State *L = sched_main_state();
    if (e->on_line_ref != LUA_NOREF && L)
        luaL_unref(L, LUA_REGISTRYINDEX, e->on_line_ref);
    bm_stream_free(&e->out[0]);
    bm_stream_free(&e->out[1]);
    free(e->cmd);
    free(e->in);
}

/* s:_exec(cmd [, opts]) -> result | nil, msg, CODE, partial
 * opts: timeout, stdin, on_line */
static int l_sess_exec(lua_State *L)
{
    struct ssh_sess *s = ssh_check_sess(L, 1);
    const char *cmd = luaL_checkstring(L, 2), *in = NULL;
    struct ssh_exec *e;
    uint64_t timeout_ms = 0;
    size_t in_len = 0;
    int on_line_ref = LUA_NOREF;
    sched_check_await(L, WHO);
    if (!s->connected || s->dead)
        return ssh_push_not_connected(L, s, "exec");
    if (lua_istable(L, 3)) { /* read before anything needs freeing */
        timeout_ms = opts_ms(L, 3, WHO, "timeout", 0);
        in = opts_lstring(L, 3, WHO, "stdin", NULL, &in_len);
        on_line_ref = opts_ref_function(L, 3, WHO, "on_line");
    }
    e = (struct ssh_exec *)ssh_op_new(s, SSH_K_EXEC, sizeof *e, step_exec);
    if (!e) {
        luaL_unref(L, LUA_REGISTRYINDEX, on_line_ref);
        return luaL_error(L, "ssh: out of memory");
    }
    e->op.push = push_exec;
    e->op.release = release_exec;
    e->op.timeout_ms = timeout_ms;
    e->on_line_ref = on_line_ref;
    bm_stream_init(&e->out[0], "stdout", SSH_MAX_OUTPUT);
    bm_stream_init(&e->out[1], "stderr", SSH_MAX_OUTPUT);
    e->cmd = strdup(cmd);
    if (in && (e->in = malloc(in_len + 1))) {
        memcpy(e->in, in, in_len);
        e->in_len = in_len;
    }
    return ssh_run_op(L, &e->op, 1);
}

const luaL_Reg ssh_exec_methods[] = {
    {"_exec", l_sess_exec},
    {NULL, NULL},
};
