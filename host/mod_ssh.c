/* mod_ssh: ssh sessions on the loop (bomarun._ssh), over libssh2 in
 * non-blocking mode: the module table, the session handle, and connecting
 * (resolve, TCP, handshake; host keys and authentication are in
 * ssh_auth.c).  The operations and their pump are in ssh_pump.c, commands
 * in ssh_exec.c, file transfer in ssh_sftp.c, the banner probe in
 * ssh_probe.c; ssh_int.h is what they share. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mod_ssh.h"
#include "opts.h"
#include "ssh_int.h"

#define WHO "ssh.connect"

/* --- the session's lifetime --------------------------------------------- */

static void free_strings(struct ssh_sess *s)
{
    if (s->passphrase)
        memset(s->passphrase, 0, strlen(s->passphrase));
    if (s->password)
        memset(s->password, 0, strlen(s->password));
    free(s->key);
    free(s->passphrase);
    free(s->password);
    free(s->agent_path);
    free(s->known_hosts);
    free(s->pin);
    s->key = s->passphrase = s->password = NULL;
    s->agent_path = s->known_hosts = s->pin = NULL;
}

static void sess_handle_closed(uv_handle_t *h)
{
    struct ssh_sess *s = h->data;
    if (--s->handles == 0 && s->ud_gone)
        free(s);
}

/* Tear the session down at once: no more network traffic is attempted. */
void ssh_sess_release(struct ssh_sess *s)
{
    if (s->freed)
        return;
    s->freed = 1;
    s->connected = 0;
    while (s->ops) {
        struct ssh_op *op = s->ops;
        if (!op->err[0])
            ssh_fail(op, "DISCONNECTED", "the session was closed");
        ssh_op_finish(op, SSH_FAILED);
    }
    if (s->fd >= 0)
        shutdown(s->fd, SHUT_RDWR);
    if (s->ssh) {
        /* With the socket shut down, nothing here can block for long. */
        libssh2_session_set_blocking(s->ssh, 1);
        libssh2_session_set_timeout(s->ssh, 1000);
        if (s->sftp)
            libssh2_sftp_shutdown(s->sftp);
        libssh2_session_free(s->ssh);
        s->ssh = NULL;
        s->sftp = NULL;
    }
    if (s->handles) {
        uv_close((uv_handle_t *)&s->poll, sess_handle_closed);
        uv_close((uv_handle_t *)&s->keepalive, sess_handle_closed);
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    free_strings(s);
    if (s->self_ref != LUA_NOREF) {
        luaL_unref(sched_main_state(), LUA_REGISTRYINDEX, s->self_ref);
        s->self_ref = LUA_NOREF;
    }
}

/* --- dialling: resolve and connect the socket ----------------------------- */

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct ssh_dial *d = req->data;
    struct ssh_op *op = &d->op;
    d->gai_pending = 0;
    if (op->finished) {
        if (res)
            freeaddrinfo(res);
        ssh_op_unbusy(op); /* may free op */
        return;
    }
    d->gai_status = status;
    d->ai = res;
    ssh_op_unbusy(op);
    ssh_pump(op->s);
}

static int resolve(struct ssh_dial *d)
{
    struct ssh_op *op = &d->op;
    struct ssh_sess *s = op->s;
    struct addrinfo hints;
    char port[16];
    op->stage = "resolve";
    if (d->ai)
        return SSH_PROGRESS;
    if (d->gai_pending)
        return SSH_AGAIN;
    if (d->gai_status)
        return ssh_fail(op, "RESOLVE", "cannot resolve %s: %s", s->host,
                        uv_strerror(d->gai_status));
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    snprintf(port, sizeof port, "%d", s->port);
    if (getaddrinfo(s->host, port, &hints, &d->ai) == 0)
        return SSH_PROGRESS;
    d->ai = NULL;
    hints.ai_flags = 0;
    d->gai.data = d;
    if (uv_getaddrinfo(sched_loop(), &d->gai, on_resolved, s->host, port,
                       &hints) != 0)
        return ssh_fail(op, "RESOLVE", "cannot resolve %s", s->host);
    d->gai_pending = 1;
    op->busy++;
    return SSH_AGAIN;
}

static int tcp_connect(struct ssh_dial *d)
{
    struct ssh_op *op = &d->op;
    struct ssh_sess *s = op->s;
    struct addrinfo *ai = d->ai;
    int fd, rc, one = 1;
    op->stage = "connect";
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0)
        return ssh_fail(op, "CONNECT", "socket: %s", strerror(errno));
    /* Requests are small and sequential: Nagle plus delayed ACKs would add
     * tens of milliseconds to each. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return ssh_fail(op, e == ECONNREFUSED ? "REFUSED" : "CONNECT", "%s",
                        strerror(e));
    }
    s->fd = fd;
    uv_poll_init(sched_loop(), &s->poll, fd);
    s->poll.data = s;
    uv_timer_init(sched_loop(), &s->keepalive);
    s->keepalive.data = s;
    s->handles = 2;
    s->poll_events = 0;
    return SSH_PROGRESS;
}

static int connect_finished(struct ssh_op *op)
{
    int err = 0;
    socklen_t len = sizeof err;
    op->stage = "connect";
    if (getsockopt(op->s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return SSH_AGAIN;
    if (err)
        return ssh_fail(op,
                        err == ECONNREFUSED ? "REFUSED"
                        : err == ETIMEDOUT  ? "TIMEOUT"
                                            : "CONNECT",
                        "%s", strerror(err));
    return SSH_PROGRESS;
}

int ssh_dial(struct ssh_dial *d)
{
    struct ssh_op *op = &d->op;
    int rc;
    if (op->phase == SSH_DIAL_RESOLVE) {
        rc = resolve(d);
        if (rc == SSH_PROGRESS)
            rc = tcp_connect(d);
        if (rc != SSH_PROGRESS)
            return rc;
        op->phase = SSH_DIAL_CONNECTING;
        return SSH_PROGRESS;
    }
    rc = connect_finished(op);
    return rc == SSH_PROGRESS ? SSH_DONE : rc;
}

void ssh_dial_release(struct ssh_dial *d)
{
    if (d->ai)
        freeaddrinfo(d->ai);
    d->ai = NULL;
}

/* --- connect: the ssh session over the socket ----------------------------- */

static ssize_t counting_recv(libssh2_socket_t fd, void *buf, size_t len,
                             int flags, void **abstract)
{
    struct ssh_sess *s = *abstract;
    ssize_t n = recv(fd, buf, len, flags);
    if (n < 0)
        return -errno;
    s->rx += (unsigned long)n;
    return n;
}

static int new_session(struct ssh_op *op)
{
    struct ssh_sess *s = op->s;
    s->ssh = libssh2_session_init_ex(NULL, NULL, NULL, s);
    if (!s->ssh)
        return ssh_fail(op, "HANDSHAKE", "cannot create an ssh session");
    libssh2_session_callback_set(s->ssh, LIBSSH2_CALLBACK_RECV,
                                 (void *)counting_recv);
    libssh2_session_set_blocking(s->ssh, 0);
    if (s->keepalive_s > 0)
        libssh2_keepalive_config(s->ssh, 1, (unsigned)s->keepalive_s);
    return SSH_PROGRESS;
}

static int handshake(struct ssh_op *op)
{
    struct ssh_sess *s = op->s;
    const char *b;
    int rc;
    op->stage = "handshake";
    rc = libssh2_session_handshake(s->ssh, s->fd);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return SSH_AGAIN;
    if (rc != 0)
        return ssh_fail_rc(op, "HANDSHAKE", rc, "the ssh handshake failed");
    b = libssh2_session_banner_get(s->ssh);
    snprintf(s->banner, sizeof s->banner, "%s", b ? b : "");
    return ssh_check_hostkey(op);
}

static void on_keepalive(uv_timer_t *h)
{
    struct ssh_sess *s = h->data;
    int next = 0;
    /* Only an idle session: a busy one proves itself alive, and a keepalive
     * must not interleave with another operation's partial packet. */
    if (!s->connected || s->ops || s->freed)
        return;
    if (libssh2_keepalive_send(s->ssh, &next) != 0 &&
        libssh2_session_last_errno(s->ssh) != LIBSSH2_ERROR_EAGAIN) {
        s->dead = 1;
        snprintf(s->dead_reason, sizeof s->dead_reason,
                 "the connection was lost (keepalive: %s)", ssh_errmsg(s));
    }
}

static void session_ready(struct ssh_sess *s)
{
    uint64_t ms = (uint64_t)s->keepalive_s * 1000;
    s->connected = 1;
    if (s->keepalive_s > 0) {
        bm_timer_start(&s->keepalive, on_keepalive, ms, ms);
        uv_unref((uv_handle_t *)&s->keepalive);
    }
}

static int step_connect(struct ssh_op *op)
{
    struct ssh_connect *c = (struct ssh_connect *)op;
    int rc;
    if (op->cancelled)
        return ssh_fail(op, "CANCELLED", "cancelled");
    switch (op->phase) {
    case SSH_DIAL_RESOLVE:
    case SSH_DIAL_CONNECTING:
        rc = ssh_dial(&c->dial);
        if (rc != SSH_DONE)
            return rc;
        rc = new_session(op);
        if (rc != SSH_PROGRESS)
            return rc;
        op->phase = SSH_C_HANDSHAKE;
        /* fall through */
    case SSH_C_HANDSHAKE:
        rc = handshake(op);
        if (rc != SSH_DONE)
            return rc;
        op->phase = SSH_C_AUTH;
        /* fall through */
    case SSH_C_AUTH:
        rc = ssh_auth(c);
        if (rc != SSH_DONE)
            return rc;
        ssh_auth_end(c);
        session_ready(op->s);
        return SSH_DONE;
    }
    return ssh_fail(op, "BUG", "bad connect phase");
}

static void push_session(lua_State *L, struct ssh_op *op)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, op->s->self_ref);
}

static void release_connect(struct ssh_op *op)
{
    struct ssh_connect *c = (struct ssh_connect *)op;
    ssh_auth_end(c);
    ssh_dial_release(&c->dial);
}

/* --- close ---------------------------------------------------------------- */

static int step_close(struct ssh_op *op)
{
    struct ssh_sess *s = op->s;
    int rc;
    op->stage = "close";
    if (s->dead || op->cancelled || op->timed_out)
        return SSH_DONE;
    for (struct ssh_op *o = s->ops; o; o = o->next) /* let the others end */
        if (o != op && o->kind != SSH_K_REAP)
            return SSH_AGAIN;
    if (s->sftp && op->phase == 0) {
        rc = libssh2_sftp_shutdown(s->sftp);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return SSH_AGAIN;
        s->sftp = NULL;
    }
    op->phase = 1;
    rc = libssh2_session_disconnect(s->ssh, "bomarun closing");
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return SSH_AGAIN;
    return SSH_DONE;
}

/* --- Lua API ------------------------------------------------------------- */

struct ssh_sess *ssh_check_sess(lua_State *L, int i)
{
    struct ssh_sess **pp = luaL_checkudata(L, i, SSH_SESS_MT);
    if (!*pp || (*pp)->freed)
        luaL_error(L, "ssh: the session is closed");
    return *pp;
}

static char *opt_strdup(lua_State *L, const char *key)
{
    const char *v = opts_string(L, 1, WHO, key, NULL);
    return v ? strdup(v) : NULL;
}

static void read_policy(lua_State *L, struct ssh_sess *s)
{
    const char *policy = opts_string(L, 1, WHO, "host_key_policy", "strict");
    if (strcmp(policy, "strict") == 0)
        s->policy = SSH_POLICY_STRICT;
    else if (strcmp(policy, "accept-new") == 0)
        s->policy = SSH_POLICY_ACCEPT_NEW;
    else if (strcmp(policy, "pinned") == 0)
        s->policy = SSH_POLICY_PINNED;
    else
        luaL_error(L,
                   "ssh.connect: host_key_policy must be strict, "
                   "accept-new or pinned, not '%s'",
                   policy);
    if (s->policy == SSH_POLICY_PINNED && !s->pin)
        luaL_error(L, "ssh.connect: host_key_policy 'pinned' needs "
                      "fingerprint = \"SHA256:...\"");
}

/* agent = true (use $SSH_AUTH_SOCK) or a socket path. */
static void read_agent(lua_State *L, struct ssh_sess *s)
{
    int type = opts_type(L, 1, "agent");
    if (type == LUA_TSTRING) {
        s->use_agent = 1;
        s->agent_path = opt_strdup(L, "agent");
    } else if (type == LUA_TBOOLEAN || type == LUA_TNIL) {
        s->use_agent = opts_boolean(L, 1, WHO, "agent", 0);
    } else {
        opts_error(L, WHO, "agent", "a boolean or a socket path");
    }
}

static void read_connect_opts(lua_State *L, struct ssh_sess *s)
{
    const char *host = opts_string(L, 1, WHO, "host", NULL);
    const char *user = opts_string(L, 1, WHO, "user", NULL);
    if (!host)
        luaL_error(L, "ssh.connect: host is required");
    snprintf(s->host, sizeof s->host, "%s", host);
    if (!user)
        user = getenv("USER") ? getenv("USER") : "root";
    snprintf(s->user, sizeof s->user, "%s", user);
    s->port = (int)opts_integer(L, 1, WHO, "port", 22);
    s->keepalive_s = (int)opts_number(L, 1, WHO, "keepalive", 30);
    s->key = opt_strdup(L, "key");
    s->passphrase = opt_strdup(L, "passphrase");
    s->password = opt_strdup(L, "password");
    s->known_hosts = opt_strdup(L, "known_hosts");
    s->pin = opt_strdup(L, "fingerprint");
    read_agent(L, s);
    read_policy(L, s);
}

static int l_sess_gc(lua_State *L);

/* Pushes a new, unconnected session handle; its __gc frees it if what
 * follows raises. */
struct ssh_sess *ssh_push_new_sess(lua_State *L)
{
    struct ssh_sess **pp, *s = calloc(1, sizeof *s);
    if (!s)
        luaL_error(L, "ssh: out of memory");
    s->fd = -1;
    s->self_ref = LUA_NOREF;
    pp = lua_newuserdatauv(L, sizeof *pp, 0);
    *pp = s;
    luaL_setmetatable(L, SSH_SESS_MT);
    return s;
}

/* Pushes nil, "ssh: STAGE: user@host:port: why", "DISCONNECTED". */
int ssh_push_not_connected(lua_State *L, struct ssh_sess *s, const char *stage)
{
    lua_pushnil(L);
    lua_pushfstring(L, "ssh: %s: %s@%s:%d: %s", stage, s->user, s->host,
                    s->port,
                    s->dead ? s->dead_reason : "the session is not connected");
    lua_pushliteral(L, "DISCONNECTED");
    return 3;
}

/* connect(opts) -> session | nil, msg, CODE */
static int l_ssh_connect(lua_State *L)
{
    struct ssh_sess *s;
    struct ssh_op *op;
    uint64_t timeout_ms;
    luaL_checktype(L, 1, LUA_TTABLE);
    sched_check_await(L, WHO);
    s = ssh_push_new_sess(L);
    read_connect_opts(L, s); /* raises on bad options; __gc frees s */
    timeout_ms = opts_ms(L, 1, WHO, "timeout", 10000);
    op = ssh_op_new(s, SSH_K_CONNECT, sizeof(struct ssh_connect), step_connect);
    if (!op)
        return luaL_error(L, "ssh: out of memory");
    op->stage = "connect";
    op->push = push_session;
    op->release = release_connect;
    op->timeout_ms = timeout_ms;
    lua_pushvalue(L, -1);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return ssh_run_op(L, op, 0);
}

/* s:close() -> true ; a polite disconnect, then the session is gone */
static int l_sess_close(lua_State *L)
{
    struct ssh_sess **pp = luaL_checkudata(L, 1, SSH_SESS_MT);
    struct ssh_sess *s = *pp;
    struct ssh_op *op = NULL;
    if (!s || s->freed || s->closed) {
        lua_pushboolean(L, 1);
        return 1;
    }
    s->closed = 1;
    if (s->connected && !s->dead && lua_isyieldable(L) && sched_current())
        op = ssh_op_new(s, SSH_K_CLOSE, sizeof *op, step_close);
    if (!op) {
        ssh_sess_release(s);
        lua_pushboolean(L, 1);
        return 1;
    }
    op->timeout_ms = 5000;
    return ssh_run_op(L, op, 1);
}

/* s:alive() -> boolean */
static int l_sess_alive(lua_State *L)
{
    struct ssh_sess **pp = luaL_checkudata(L, 1, SSH_SESS_MT);
    struct ssh_sess *s = *pp;
    lua_pushboolean(L,
                    s && !s->freed && s->connected && !s->dead && !s->closed);
    return 1;
}

/* s:info() -> {host, port, user, fingerprint, banner} */
static int l_sess_info(lua_State *L)
{
    struct ssh_sess **pp = luaL_checkudata(L, 1, SSH_SESS_MT);
    struct ssh_sess *s = *pp;
    lua_createtable(L, 0, 5);
    if (!s)
        return 1;
    lua_pushstring(L, s->host);
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, s->port);
    lua_setfield(L, -2, "port");
    lua_pushstring(L, s->user);
    lua_setfield(L, -2, "user");
    lua_pushstring(L, s->fingerprint);
    lua_setfield(L, -2, "fingerprint");
    lua_pushstring(L, s->banner);
    lua_setfield(L, -2, "banner");
    return 1;
}

static int l_sess_tostring(lua_State *L)
{
    struct ssh_sess **pp = luaL_checkudata(L, 1, SSH_SESS_MT);
    struct ssh_sess *s = *pp;
    if (!s)
        lua_pushliteral(L, "ssh session (closed)");
    else
        lua_pushfstring(L, "ssh session %s@%s:%d%s", s->user, s->host, s->port,
                        s->freed ? " (closed)" : "");
    return 1;
}

/* __gc and __close */
static int l_sess_gc(lua_State *L)
{
    struct ssh_sess **pp = luaL_checkudata(L, 1, SSH_SESS_MT);
    struct ssh_sess *s = *pp;
    if (!s)
        return 0;
    *pp = NULL;
    if (sched_main_state() == NULL)
        return 0;
    s->self_ref = LUA_NOREF; /* the registry is going or already let go */
    ssh_sess_release(s);
    s->ud_gone = 1;
    if (s->handles == 0)
        free(s);
    return 0;
}

static const luaL_Reg sess_methods[] = {
    {"close", l_sess_close},
    {"alive", l_sess_alive},
    {"info", l_sess_info},
    {NULL, NULL},
};

static const luaL_Reg sess_meta[] = {
    {"__gc", l_sess_gc},
    {"__close", l_sess_gc},
    {"__tostring", l_sess_tostring},
    {NULL, NULL},
};

static const luaL_Reg ssh_funcs[] = {
    {"connect", l_ssh_connect},
    {NULL, NULL},
};

int luaopen_bomarun__ssh(lua_State *L)
{
    static int inited;
    if (!inited) {
        libssh2_init(0);
        inited = 1;
    }
    if (luaL_newmetatable(L, SSH_SESS_MT)) {
        luaL_setfuncs(L, sess_meta, 0);
        luaL_newlib(L, sess_methods);
        luaL_setfuncs(L, ssh_exec_methods, 0);
        luaL_setfuncs(L, ssh_sftp_methods, 0);
        lua_setfield(L, -2, "__index");
    }
    luaL_newlib(L, ssh_funcs);
    luaL_setfuncs(L, ssh_probe_funcs, 0);
    /* The methods table, so bomarun.ssh can add Lua methods. */
    lua_getfield(L, -2, "__index");
    lua_setfield(L, -2, "methods");
    lua_remove(L, -2);
    return 1;
}
