/* ssh_sftp: file transfer over SFTP (s:put, s:get, s:put_string,
 * s:get_string).  The session's SFTP channel is started by the first
 * transfer and kept; transfers run one at a time. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "opts.h"
#include "ssh_int.h"

enum { S_WAIT, S_INIT, S_OPEN, S_STAT, S_XFER, S_CLOSE };

/* What a phase returns, besides SSH_*: go on to the next phase now. */
enum { NEXT = 3 };

struct ssh_xfer {
    struct ssh_op op;
    LIBSSH2_SFTP_HANDLE *fh;
    int local_fd;
    char *remote, *local;
    long mode;
    int to_memory; /* put_string / get_string */
    char *buf;     /* what is being written */
    size_t buf_len, buf_off;
    struct bm_buf data; /* get_string: what was read */
    uint64_t bytes;
};

static const char *sftp_errname(unsigned long e)
{
    switch (e) {
    case LIBSSH2_FX_NO_SUCH_FILE: return "no such file";
    case LIBSSH2_FX_PERMISSION_DENIED: return "permission denied";
    case LIBSSH2_FX_FAILURE: return "failure";
    case LIBSSH2_FX_NO_SUCH_PATH: return "no such path";
    case LIBSSH2_FX_FILE_ALREADY_EXISTS: return "file exists";
    case LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM: return "no space left";
    case LIBSSH2_FX_QUOTA_EXCEEDED: return "quota exceeded";
    default: return "sftp error";
    }
}

static int sftp_fail(struct ssh_xfer *x, const char *what)
{
    struct ssh_sess *s = x->op.s;
    int rc = libssh2_session_last_errno(s->ssh);
    if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL && s->sftp) {
        unsigned long e = libssh2_sftp_last_error(s->sftp);
        return ssh_fail(&x->op, "SFTP", "%s %s: %s (SFTP status %lu)", what,
                        x->remote, sftp_errname(e), e);
    }
    return ssh_fail_rc(&x->op, "SFTP", rc, what);
}

/* --- moving the bytes ----------------------------------------------------- */

static int sftp_io_put(struct ssh_xfer *x)
{
    ssize_t n;
    if (x->buf_off >= x->buf_len) {
        if (x->to_memory) {
            if (x->buf_len) /* the whole string went in one buffer */
                return SSH_DONE;
        } else {
            n = read(x->local_fd, x->buf, SSH_CHUNK);
            if (n < 0)
                return ssh_fail(&x->op, "LOCAL_FILE", "reading %s: %s",
                                x->local, strerror(errno));
            if (n == 0)
                return SSH_DONE;
            x->buf_len = (size_t)n;
            x->buf_off = 0;
        }
    }
    if (x->buf_len == 0)
        return SSH_DONE;
    n = libssh2_sftp_write(x->fh, x->buf + x->buf_off, x->buf_len - x->buf_off);
    if (n == LIBSSH2_ERROR_EAGAIN)
        return SSH_AGAIN;
    if (n < 0)
        return sftp_fail(x, "writing");
    x->buf_off += (size_t)n;
    x->bytes += (uint64_t)n;
    if (x->to_memory && x->buf_off >= x->buf_len)
        return SSH_DONE;
    return SSH_PROGRESS;
}

static int write_local(struct ssh_xfer *x, const char *buf, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(x->local_fd, buf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return ssh_fail(&x->op, "LOCAL_FILE", "writing %s: %s", x->local,
                            strerror(errno));
        off += (size_t)w;
    }
    return SSH_PROGRESS;
}

static int sftp_io_get(struct ssh_xfer *x)
{
    char buf[SSH_CHUNK];
    ssize_t n = libssh2_sftp_read(x->fh, buf, sizeof buf);
    if (n == LIBSSH2_ERROR_EAGAIN)
        return SSH_AGAIN;
    if (n < 0)
        return sftp_fail(x, "reading");
    if (n == 0)
        return SSH_DONE;
    x->bytes += (uint64_t)n;
    if (x->to_memory) {
        bm_buf_add(&x->data, buf, (size_t)n);
        return SSH_PROGRESS;
    }
    return write_local(x, buf, (size_t)n);
}

/* --- the transfer's phases ------------------------------------------------ */

static void *open_sftp(LIBSSH2_SESSION *ssh) { return libssh2_sftp_init(ssh); }

/* Waits for the session's SFTP channel, starting it if need be. */
static int phase_channel(struct ssh_xfer *x)
{
    struct ssh_op *op = &x->op;
    struct ssh_sess *s = op->s;
    int rc;
    if (op->phase == S_WAIT) {
        if (op->cancelled || op->timed_out)
            return ssh_fail(op, op->timed_out ? "TIMEOUT" : "CANCELLED",
                            "gave up waiting for the SFTP channel");
        if (s->sftp_owner && s->sftp_owner != op)
            return SSH_AGAIN;
        s->sftp_owner = op;
        op->phase = s->sftp ? S_OPEN : S_INIT;
        return NEXT;
    }
    rc = ssh_locked_open(op, open_sftp, (void **)&s->sftp, "SFTP",
                         "cannot start SFTP");
    if (rc != SSH_DONE)
        return rc;
    op->phase = S_OPEN;
    return NEXT;
}

static int phase_open(struct ssh_xfer *x)
{
    struct ssh_op *op = &x->op;
    struct ssh_sess *s = op->s;
    unsigned long flags =
        op->kind == SSH_K_PUT
            ? LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_TRUNC
            : LIBSSH2_FXF_READ;
    if (op->cancelled || op->timed_out)
        return ssh_fail(op, op->timed_out ? "TIMEOUT" : "CANCELLED",
                        "gave up before the transfer started");
    x->fh =
        libssh2_sftp_open_ex(s->sftp, x->remote, (unsigned)strlen(x->remote),
                             flags, x->mode, LIBSSH2_SFTP_OPENFILE);
    if (!x->fh) {
        if (libssh2_session_last_errno(s->ssh) == LIBSSH2_ERROR_EAGAIN)
            return SSH_AGAIN;
        return sftp_fail(x, "cannot open");
    }
    op->phase = op->kind == SSH_K_GET ? S_STAT : S_XFER;
    return NEXT;
}

/* A get keeps the remote file's mode. */
static int phase_stat(struct ssh_xfer *x)
{
    LIBSSH2_SFTP_ATTRIBUTES a;
    int rc = libssh2_sftp_fstat_ex(x->fh, &a, 0);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return SSH_AGAIN;
    if (rc == 0 && (a.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS))
        x->mode = (long)(a.permissions & 07777);
    x->op.phase = S_XFER;
    return NEXT;
}

static int phase_xfer(struct ssh_xfer *x)
{
    struct ssh_op *op = &x->op;
    int rc;
    if (op->cancelled || op->timed_out) {
        op->phase = S_CLOSE;
        return NEXT;
    }
    rc = op->kind == SSH_K_PUT ? sftp_io_put(x) : sftp_io_get(x);
    if (rc == SSH_FAILED)
        op->fail_pending = 1;
    if (rc != SSH_DONE && rc != SSH_FAILED)
        return rc;
    op->phase = S_CLOSE;
    return NEXT;
}

static int phase_close(struct ssh_xfer *x)
{
    struct ssh_op *op = &x->op;
    if (x->fh) {
        int rc = libssh2_sftp_close_handle(x->fh);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return SSH_AGAIN;
        x->fh = NULL;
    }
    op->s->sftp_owner = NULL;
    if (op->fail_pending)
        return SSH_FAILED;
    if (op->timed_out)
        return ssh_fail(op, "TIMEOUT", "transfer of %s timed out", x->remote);
    if (op->cancelled)
        return ssh_fail(op, "CANCELLED", "cancelled");
    if (op->kind == SSH_K_GET && !x->to_memory && x->mode > 0)
        fchmod(x->local_fd, (mode_t)x->mode);
    return SSH_DONE;
}

static int step_sftp(struct ssh_op *op)
{
    struct ssh_xfer *x = (struct ssh_xfer *)op;
    int rc;
    op->stage = "sftp";
    do {
        switch (op->phase) {
        case S_WAIT:
        case S_INIT: rc = phase_channel(x); break;
        case S_OPEN: rc = phase_open(x); break;
        case S_STAT: rc = phase_stat(x); break;
        case S_XFER: rc = phase_xfer(x); break;
        default: rc = phase_close(x); break;
        }
    } while (rc == NEXT);
    return rc;
}

/* --- results and the Lua methods ------------------------------------------ */

static void push_xfer(lua_State *L, struct ssh_op *op)
{
    struct ssh_xfer *x = (struct ssh_xfer *)op;
    if (op->kind == SSH_K_GET && x->to_memory) {
        lua_pushlstring(L, x->data.data ? x->data.data : "", x->data.len);
        return;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)x->bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, x->mode);
    lua_setfield(L, -2, "mode");
    lua_pushnumber(L, (double)(uv_hrtime() - op->t0) / 1e9);
    lua_setfield(L, -2, "duration");
}

static void release_xfer(struct ssh_op *op)
{
    struct ssh_xfer *x = (struct ssh_xfer *)op;
    if (x->local_fd >= 0)
        close(x->local_fd);
    x->local_fd = -1;
    bm_buf_free(&x->data);
    free(x->remote);
    free(x->local);
    free(x->buf);
}

/* Pushes nil, msg, "LOCAL_FILE" if the local file cannot be opened. */
static int open_local(lua_State *L, struct ssh_xfer *x, const char *local)
{
    x->local = strdup(local);
    x->local_fd =
        x->op.kind == SSH_K_PUT
            ? open(local, O_RDONLY | O_CLOEXEC)
            : open(local, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (x->local_fd < 0) {
        int e = errno;
        lua_pushnil(L);
        lua_pushfstring(L, "ssh: sftp: cannot open local file %s: %s", local,
                        strerror(e));
        lua_pushliteral(L, "LOCAL_FILE");
        return 3;
    }
    if (x->op.kind == SSH_K_PUT && x->mode < 0) {
        struct stat st;
        if (fstat(x->local_fd, &st) == 0)
            x->mode = (long)(st.st_mode & 07777);
    }
    x->buf = malloc(SSH_CHUNK);
    return 0;
}

/* Starts a transfer: from or to the file `local`, or from (put) or to (get)
 * memory when local is NULL.  The options table, if any, is at 5. */
static int start_transfer(lua_State *L, struct ssh_sess *s, int kind,
                          const char *remote, const char *local,
                          const char *data, size_t len, long mode)
{
    const char *who = kind == SSH_K_PUT ? "ssh put" : "ssh get";
    struct ssh_xfer *x;
    uint64_t timeout_ms = 0;
    int n;
    sched_check_await(L, who);
    if (!s->connected || s->dead)
        return ssh_push_not_connected(L, s, "sftp");
    if (lua_istable(L, 5))
        timeout_ms = opts_ms(L, 5, who, "timeout", 0);
    x = (struct ssh_xfer *)ssh_op_new(s, kind, sizeof *x, step_sftp);
    if (!x)
        return luaL_error(L, "ssh: out of memory");
    x->op.stage = "sftp";
    x->op.push = push_xfer;
    x->op.release = release_xfer;
    x->op.timeout_ms = timeout_ms;
    x->local_fd = -1;
    x->remote = strdup(remote);
    x->mode = mode;
    if (local && (n = open_local(L, x, local))) {
        ssh_op_free(&x->op);
        return n;
    }
    if (!local) {
        x->to_memory = 1;
        if (kind == SSH_K_PUT && (x->buf = malloc(len ? len : 1))) {
            memcpy(x->buf, data, len);
            x->buf_len = len;
        }
    }
    if (x->mode < 0)
        x->mode = 0644;
    return ssh_run_op(L, &x->op, 1);
}

/* The mode option (for a put) in the table at i, or -1. */
static long opt_mode(lua_State *L, int i, const char *who)
{
    if (!lua_istable(L, i))
        return -1;
    return (long)opts_integer(L, i, who, "mode", -1);
}

/* s:put(local, remote [, opts]) -> {bytes, mode, duration} | nil, msg, CODE */
static int l_sess_put(lua_State *L)
{
    struct ssh_sess *s = ssh_check_sess(L, 1);
    const char *local = luaL_checkstring(L, 2);
    const char *remote = luaL_checkstring(L, 3);
    long mode = opt_mode(L, 4, "ssh put");
    lua_settop(L, 4);
    lua_pushvalue(L, 4); /* opts at 5 for start_transfer */
    return start_transfer(L, s, SSH_K_PUT, remote, local, NULL, 0, mode);
}

/* s:get(remote, local [, opts]) -> {bytes, mode, duration} | nil, msg, CODE */
static int l_sess_get(lua_State *L)
{
    struct ssh_sess *s = ssh_check_sess(L, 1);
    const char *remote = luaL_checkstring(L, 2);
    const char *local = luaL_checkstring(L, 3);
    lua_settop(L, 4);
    lua_pushvalue(L, 4);
    return start_transfer(L, s, SSH_K_GET, remote, local, NULL, 0, 0);
}

/* s:put_string(text, remote [, opts]) -> {bytes, ...} | nil, msg, CODE */
static int l_sess_put_string(lua_State *L)
{
    struct ssh_sess *s = ssh_check_sess(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    const char *remote = luaL_checkstring(L, 3);
    long mode = opt_mode(L, 4, "ssh put");
    lua_settop(L, 4);
    lua_pushvalue(L, 4);
    return start_transfer(L, s, SSH_K_PUT, remote, NULL, text, len, mode);
}

/* s:get_string(remote [, opts]) -> text | nil, msg, CODE */
static int l_sess_get_string(lua_State *L)
{
    struct ssh_sess *s = ssh_check_sess(L, 1);
    const char *remote = luaL_checkstring(L, 2);
    lua_settop(L, 3);
    lua_pushnil(L);
    lua_pushvalue(L, 3); /* opts at 5 */
    return start_transfer(L, s, SSH_K_GET, remote, NULL, NULL, 0, 0);
}

const luaL_Reg ssh_sftp_methods[] = {
    {"put", l_sess_put},
    {"get", l_sess_get},
    {"put_string", l_sess_put_string},
    {"get_string", l_sess_get_string},
    {NULL, NULL},
};
