/* ssh_pump: the operations of an ssh session and the pump that drives
 * them, over libssh2 in non-blocking mode.
 *
 * Each operation (connect, exec, sftp put/get, close, banner probe) is a
 * small state machine whose step function retries its libssh2 call; on
 * EAGAIN it returns and the session polls the directions libssh2 asks for.
 * Every socket event "pumps" the session: each operation is stepped until a
 * whole pass makes no progress and reads nothing new (a read by one channel
 * may queue data for another, so one pass is not enough).
 *
 * libssh2 allows one partially sent packet per session: while an operation
 * holds one (EAGAIN with the outbound direction blocked) only it is stepped.
 * Session-level requests (opening a channel, starting SFTP) keep state in
 * the session itself, so one operation at a time may be in such a phase;
 * SFTP operations run one at a time.  Channels (commands) otherwise run
 * concurrently over one session. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "ssh_int.h"

#define PUMP_PASSES 64

/* --- errors ------------------------------------------------------------- */

const char *ssh_errmsg(struct ssh_sess *s)
{
    char *msg = NULL;
    int len = 0;
    if (!s->ssh)
        return "no session";
    libssh2_session_last_error(s->ssh, &msg, &len, 0);
    return msg && *msg ? msg : "unknown libssh2 error";
}

int ssh_fail(struct ssh_op *op, const char *code, const char *fmt, ...)
{
    char reason[400];
    va_list ap;
    struct ssh_sess *s = op->s;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    snprintf(op->err, sizeof op->err, "ssh: %s: %s@%s:%d: %s", op->stage,
             s->user, s->host, s->port, reason);
    snprintf(op->code, sizeof op->code, "%s", code);
    return SSH_FAILED;
}

int ssh_is_socket_error(int rc)
{
    return rc == LIBSSH2_ERROR_SOCKET_RECV || rc == LIBSSH2_ERROR_SOCKET_SEND ||
           rc == LIBSSH2_ERROR_SOCKET_DISCONNECT ||
           rc == LIBSSH2_ERROR_SOCKET_TIMEOUT || rc == LIBSSH2_ERROR_TIMEOUT;
}

int ssh_fail_rc(struct ssh_op *op, const char *code, int rc, const char *what)
{
    struct ssh_sess *s = op->s;
    if (ssh_is_socket_error(rc)) {
        s->dead = 1;
        snprintf(s->dead_reason, sizeof s->dead_reason,
                 "the connection was lost (%s)", ssh_errmsg(s));
        return ssh_fail(op, "DISCONNECTED", "%s: the connection was lost: %s",
                        what, ssh_errmsg(s));
    }
    return ssh_fail(op, code, "%s: %s", what, ssh_errmsg(s));
}

/* --- lifetime ----------------------------------------------------------- */

static void op_timed_out(uv_timer_t *h);

struct ssh_op *ssh_op_new(struct ssh_sess *s, int kind, size_t size,
                          int (*step)(struct ssh_op *))
{
    struct ssh_op *op = calloc(1, size);
    if (!op)
        return NULL;
    op->s = s;
    op->kind = kind;
    op->step = step;
    op->stage = "channel";
    uv_timer_init(sched_loop(), &op->timer);
    op->timer.data = op;
    return op;
}

void ssh_op_start(struct ssh_op *op)
{
    struct ssh_sess *s = op->s;
    struct ssh_op **pp = &s->ops;
    while (*pp)
        pp = &(*pp)->next;
    *pp = op;
    op->t0 = uv_hrtime();
    if (op->timeout_ms)
        bm_timer_start(&op->timer, op_timed_out, op->timeout_ms, 0);
}

/* The memory goes once the timer closed and no request points at it. */
static void op_timer_closed(uv_handle_t *h)
{
    struct ssh_op *op = h->data;
    op->timer_closed = 1;
    if (!op->busy)
        free(op);
}

void ssh_op_unbusy(struct ssh_op *op)
{
    if (--op->busy == 0 && op->timer_closed)
        free(op);
}

void ssh_op_free(struct ssh_op *op)
{
    if (op->release)
        op->release(op);
    op->release = NULL;
    uv_close((uv_handle_t *)&op->timer, op_timer_closed);
}

static void unlink_op(struct ssh_op *op)
{
    struct ssh_sess *s = op->s;
    struct ssh_op **pp = &s->ops;
    while (*pp && *pp != op)
        pp = &(*pp)->next;
    if (*pp)
        *pp = op->next;
    if (s->send_owner == op)
        s->send_owner = NULL;
    if (s->lock_owner == op)
        s->lock_owner = NULL;
    if (s->sftp_owner == op)
        s->sftp_owner = NULL;
}

static void push_result(lua_State *L, struct ssh_op *op)
{
    if (op->push)
        op->push(L, op);
    else
        lua_pushboolean(L, 1);
}

/* Pushes what the waiting call returns; returns the count. */
static int push_outcome(lua_State *L, struct ssh_op *op)
{
    if (op->rc == SSH_DONE && !op->timed_out) {
        push_result(L, op);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, op->err);
    lua_pushstring(L, op->code);
    if (op->kind == SSH_K_EXEC) {
        push_result(L, op); /* the partial output: no evidence lost */
        return 4;
    }
    return 3;
}

/* After the outcome was delivered: let go of the op and, where the op
 * decides the session's fate, of the session. */
static void op_dispose(struct ssh_op *op)
{
    struct ssh_sess *s = op->s;
    int kind = op->kind;
    if (kind == SSH_K_CONNECT && op->rc == SSH_DONE && !op->cancelled) {
        /* From now on Lua references alone keep the session. */
        luaL_unref(sched_main_state(), LUA_REGISTRYINDEX, s->self_ref);
        s->self_ref = LUA_NOREF;
        ssh_op_free(op);
        return;
    }
    ssh_op_free(op); /* first: what it holds may need the session */
    if (kind == SSH_K_CONNECT || kind == SSH_K_CLOSE || kind == SSH_K_BANNER)
        ssh_sess_release(s);
}

/* The operation ended (done or failed): answer the waiting task. */
void ssh_op_finish(struct ssh_op *op, int rc)
{
    op->finished = 1;
    op->rc = rc;
    uv_timer_stop(&op->timer);
    unlink_op(op);
    if (op->sync)
        return; /* ssh_run_op delivers it */
    if (op->waiting) {
        lua_State *co = sched_wait_state(&op->w);
        op->waiting = 0;
        sched_complete(&op->w, push_outcome(co, op));
    }
    op_dispose(op);
}

/* --- the pump ----------------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events);

static void arm(struct ssh_sess *s)
{
    int ev = 0, dir;
    if (!s->handles || s->freed)
        return;
    if (s->ops) {
        ev = UV_READABLE;
        if ((s->ops->kind == SSH_K_CONNECT || s->ops->kind == SSH_K_BANNER) &&
            s->ops->phase == SSH_DIAL_CONNECTING)
            ev = UV_WRITABLE;
        if (s->ssh) {
            dir = libssh2_session_block_directions(s->ssh);
            if (dir & LIBSSH2_SESSION_BLOCK_OUTBOUND)
                ev |= UV_WRITABLE;
        }
    }
    if (ev == s->poll_events)
        return;
    s->poll_events = ev;
    if (ev && s->fd >= 0)
        uv_poll_start(&s->poll, ev, on_poll);
    else
        uv_poll_stop(&s->poll);
}

static int outbound_blocked(struct ssh_sess *s)
{
    return s->ssh && (libssh2_session_block_directions(s->ssh) &
                      LIBSSH2_SESSION_BLOCK_OUTBOUND);
}

/* Steps one operation; returns whether it moved. */
static int step_one(struct ssh_sess *s, struct ssh_op *op)
{
    int rc;
    if (s->dead && op->kind != SSH_K_CLOSE && op->kind != SSH_K_BANNER) {
        ssh_op_finish(op, ssh_fail(op, "DISCONNECTED", "%s", s->dead_reason));
        return 1;
    }
    rc = op->step(op);
    if (rc == SSH_AGAIN && outbound_blocked(s))
        s->send_owner = op;
    else if (s->send_owner == op)
        s->send_owner = NULL;
    if (rc == SSH_DONE || rc == SSH_FAILED) {
        ssh_op_finish(op, rc);
        return 1;
    }
    return rc == SSH_PROGRESS;
}

/* One pass over the operations; returns whether anything moved. */
static int pump_pass(struct ssh_sess *s)
{
    struct ssh_op *op = s->ops, *next;
    int moved = 0;
    while (op) {
        next = op->next;
        if (!s->send_owner || s->send_owner == op) {
            if (step_one(s, op))
                moved = 1;
            if (s->freed)
                return 0;
        }
        op = next;
    }
    return moved;
}

void ssh_pump(struct ssh_sess *s)
{
    int guard = 0;
    for (;;) {
        unsigned long rx = s->rx;
        int moved = pump_pass(s);
        if (s->freed)
            return;
        if (!moved && rx == s->rx)
            break;
        /* Yield to the loop now and then so one busy session cannot starve
         * everything else. */
        if (++guard > PUMP_PASSES)
            break;
    }
    arm(s);
    if (guard > PUMP_PASSES && s->ops) {
        /* More to do: come back on the next turn without waiting. */
        s->poll_events = -1;
        uv_poll_start(&s->poll, UV_READABLE | UV_WRITABLE, on_poll);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct ssh_sess *s = h->data;
    (void)events;
    if (status < 0 && s->ops && s->ops->kind != SSH_K_CONNECT) {
        s->dead = 1;
        snprintf(s->dead_reason, sizeof s->dead_reason,
                 "the connection was lost (%s)", uv_strerror(status));
    }
    ssh_pump(s);
}

/* --- the session lock ----------------------------------------------------- */

static int take_lock(struct ssh_op *op)
{
    struct ssh_sess *s = op->s;
    if (s->lock_owner && s->lock_owner != op)
        return 0;
    s->lock_owner = op;
    return 1;
}

static void drop_lock(struct ssh_op *op)
{
    if (op->s->lock_owner == op)
        op->s->lock_owner = NULL;
}

/* A session-level request returning a handle (NULL with EAGAIN while it is
 * pending) keeps its state in the session: run it under the session lock. */
int ssh_locked_open(struct ssh_op *op, void *(*open)(LIBSSH2_SESSION *),
                    void **out, const char *code, const char *what)
{
    struct ssh_sess *s = op->s;
    int rc;
    if (!take_lock(op))
        return SSH_AGAIN;
    *out = open(s->ssh);
    if (!*out) {
        rc = libssh2_session_last_errno(s->ssh);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return SSH_AGAIN;
        drop_lock(op);
        return ssh_fail_rc(op, code, rc, what);
    }
    drop_lock(op);
    return SSH_DONE;
}

/* --- timeouts, cancellation, waiting -------------------------------------- */

/* A connect cannot clean up by stepping: it ends at once. */
static void connect_timed_out(struct ssh_op *op)
{
    op->stage = op->phase <= SSH_DIAL_CONNECTING ? "connect"
                : op->phase == SSH_C_HANDSHAKE   ? "handshake"
                                                 : "auth";
    ssh_fail(op, "TIMEOUT", "timed out after %.3g s%s",
             (double)op->timeout_ms / 1000.0,
             op->phase == SSH_C_HANDSHAKE
                 ? " (the TCP connection was accepted but no ssh banner or "
                   "handshake reply came)"
                 : "");
    ssh_op_finish(op, SSH_FAILED);
}

static void op_timed_out(uv_timer_t *h)
{
    struct ssh_op *op = h->data;
    op->timed_out = 1;
    if (op->kind == SSH_K_CONNECT) {
        connect_timed_out(op);
        return;
    }
    ssh_pump(op->s);
}

static void op_cancel(struct bm_wait *w)
{
    struct ssh_op *op =
        (struct ssh_op *)((char *)w - offsetof(struct ssh_op, w));
    op->waiting = 0;
    op->cancelled = 1;
    if (op->kind == SSH_K_CONNECT) {
        ssh_fail(op, "CANCELLED", "cancelled");
        ssh_op_finish(op, SSH_FAILED);
        return;
    }
    ssh_pump(op->s);
}

int ssh_run_op(lua_State *L, struct ssh_op *op, int keep)
{
    op->w.cancel = op_cancel;
    ssh_op_start(op);
    op->sync = 1;
    ssh_pump(op->s);
    op->sync = 0;
    if (op->finished) {
        int n = push_outcome(L, op);
        op_dispose(op);
        return n;
    }
    op->waiting = 1;
    lua_settop(L, keep);
    return sched_await(L, &op->w);
}
