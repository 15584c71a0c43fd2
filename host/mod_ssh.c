/* mod_ssh: ssh sessions on the loop (bomarun._ssh), over libssh2 in
 * non-blocking mode.
 *
 * A session owns a socket polled by libuv and a list of operations in
 * flight (connect, exec, sftp put/get, close).  Each operation is a small
 * state machine whose step function retries its libssh2 call; on EAGAIN it
 * returns and the session polls the directions libssh2 asks for.  Every
 * socket event "pumps" the session: each operation is stepped until a whole
 * pass makes no progress and reads nothing new (a read by one channel may
 * queue data for another, so one pass is not enough).
 *
 * libssh2 allows one partially sent packet per session: while an operation
 * holds one (EAGAIN with the outbound direction blocked) only it is stepped.
 * Session-level requests (opening a channel, starting SFTP) keep state in
 * the session itself, so one operation at a time may be in such a phase;
 * SFTP operations run one at a time.  Channels (commands) otherwise run
 * concurrently over one session. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <libssh2.h>
#include <libssh2_sftp.h>

#include "lines.h"
#include "mod_ssh.h"
#include "sched.h"

#define SESS_MT "bomarun.ssh_session"
#define CHUNK 32768
#define MAX_OUTPUT (64u << 20)

enum { AGAIN = 0, DONE = 1, PROGRESS = 2, FAILED = -1 };
enum { K_CONNECT, K_EXEC, K_PUT, K_GET, K_CLOSE, K_BANNER, K_REAP };
enum { POLICY_STRICT, POLICY_ACCEPT_NEW, POLICY_PINNED };

struct op;

struct sess {
    LIBSSH2_SESSION *ssh;
    int fd;
    uv_poll_t poll;
    uv_timer_t keepalive;
    int handles;               /* open libuv handles (poll, keepalive) */
    int poll_events;
    struct op *ops;
    struct op *send_owner;     /* holds a partially sent packet */
    struct op *lock_owner;     /* in a session-level phase */
    struct op *sftp_owner;     /* the one SFTP operation in flight */
    LIBSSH2_SFTP *sftp;
    unsigned long rx;          /* bytes received: progress for the pump */
    int connected, dead, closed, ud_gone, freed;
    int self_ref;
    char host[256];
    int port;
    char user[128];
    char fingerprint[80];
    char banner[256];
    char dead_reason[300];
    /* connect parameters */
    char *key, *passphrase, *password, *agent_path, *known_hosts, *pin;
    int use_agent, policy, keepalive_s;
};

struct op {
    struct op *next;
    struct sess *s;
    int kind, phase;
    int (*step)(struct op *);
    struct bm_wait w;
    int waiting, cancelled, timed_out, finished, linked;
    int sync;                  /* inside run_op's first pump */
    int rc;                    /* DONE or FAILED once finished */
    int fail_pending;          /* failed; finishing the channel first */
    uv_timer_t timer;
    int timer_open;
    uint64_t t0, timeout_ms;
    char err[1024];
    char code[24];
    const char *stage;
    /* exec */
    LIBSSH2_CHANNEL *ch;
    char *cmd;
    char *in;
    size_t in_len, in_off;
    int eof_sent;
    struct bm_stream out[2];
    int on_line_ref;
    int exit_status;
    char exit_signal[32];
    /* sftp */
    LIBSSH2_SFTP_HANDLE *fh;
    int local_fd;
    char *remote, *local;
    long mode;
    int to_memory;
    char *buf;
    size_t buf_len, buf_off;
    struct bm_buf data;
    uint64_t bytes;
    /* connect */
    struct addrinfo *ai;
    uv_getaddrinfo_t gai;
    int gai_pending, gai_status;
    LIBSSH2_AGENT *agent;
    struct libssh2_agent_publickey *ident;
    int auth_i;
    char tried[400];
    char banner_line[256];
};

static void pump(struct sess *s);
static void sess_release(struct sess *s);
static int fail(struct op *op, const char *code, const char *fmt, ...);
static void op_finish(struct op *op, int rc);

/* --- errors ------------------------------------------------------------- */

static const char *ssh_errmsg(struct sess *s)
{
    char *msg = NULL;
    int len = 0;
    if (!s->ssh)
        return "no session";
    libssh2_session_last_error(s->ssh, &msg, &len, 0);
    return msg && *msg ? msg : "unknown libssh2 error";
}

/* Record a failure: "ssh: STAGE: user@host:port: reason" with CODE. */
static int fail(struct op *op, const char *code, const char *fmt, ...)
{
    char reason[400];
    va_list ap;
    struct sess *s = op->s;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    snprintf(op->err, sizeof op->err, "ssh: %s: %s@%s:%d: %s", op->stage,
             s->user, s->host, s->port, reason);
    snprintf(op->code, sizeof op->code, "%s", code);
    return FAILED;
}

static int is_socket_error(int rc)
{
    return rc == LIBSSH2_ERROR_SOCKET_RECV || rc == LIBSSH2_ERROR_SOCKET_SEND ||
           rc == LIBSSH2_ERROR_SOCKET_DISCONNECT ||
           rc == LIBSSH2_ERROR_SOCKET_TIMEOUT || rc == LIBSSH2_ERROR_TIMEOUT;
}

/* A libssh2 call failed with rc: the whole session may be gone. */
static int fail_rc(struct op *op, const char *code, int rc, const char *what)
{
    struct sess *s = op->s;
    if (is_socket_error(rc)) {
        s->dead = 1;
        snprintf(s->dead_reason, sizeof s->dead_reason,
                 "the connection was lost (%s)", ssh_errmsg(s));
        return fail(op, "DISCONNECTED", "%s: the connection was lost: %s",
                    what, ssh_errmsg(s));
    }
    return fail(op, code, "%s: %s", what, ssh_errmsg(s));
}

/* --- lifetime ----------------------------------------------------------- */

static void free_strings(struct sess *s)
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
    struct sess *s = h->data;
    if (--s->handles == 0 && s->ud_gone)
        free(s);
}

/* Tear the session down at once: no more network traffic is attempted. */
static void sess_release(struct sess *s)
{
    if (s->freed)
        return;
    s->freed = 1;
    s->connected = 0;
    while (s->ops) {
        struct op *op = s->ops;
        if (!op->err[0])
            fail(op, "DISCONNECTED", "the session was closed");
        op_finish(op, FAILED);
    }
    if (s->fd >= 0) {
        shutdown(s->fd, SHUT_RDWR);
    }
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

static void op_timer_closed(uv_handle_t *h)
{
    struct op *op = h->data;
    bm_stream_free(&op->out[0]);
    bm_stream_free(&op->out[1]);
    bm_buf_free(&op->data);
    free(op->cmd);
    free(op->in);
    free(op->remote);
    free(op->local);
    free(op->buf);
    free(op);
}

static void op_free(struct op *op)
{
    lua_State *L = sched_main_state();
    if (op->local_fd >= 0)
        close(op->local_fd);
    if (op->ai)
        freeaddrinfo(op->ai);
    if (op->on_line_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, op->on_line_ref);
    uv_close((uv_handle_t *)&op->timer, op_timer_closed);
}

static void unlink_op(struct op *op)
{
    struct sess *s = op->s;
    struct op **pp = &s->ops;
    while (*pp && *pp != op)
        pp = &(*pp)->next;
    if (*pp)
        *pp = op->next;
    op->linked = 0;
    if (s->send_owner == op)
        s->send_owner = NULL;
    if (s->lock_owner == op)
        s->lock_owner = NULL;
    if (s->sftp_owner == op)
        s->sftp_owner = NULL;
}

static void push_result(lua_State *L, struct op *op);

/* Pushes what the waiting call returns; returns the count. */
static int push_outcome(lua_State *L, struct op *op)
{
    if (op->rc == DONE && !op->timed_out) {
        push_result(L, op);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, op->err);
    lua_pushstring(L, op->code);
    if (op->kind == K_EXEC) {
        push_result(L, op);   /* the partial output: no evidence lost */
        return 4;
    }
    return 3;
}

/* After the outcome was delivered: let go of the op and, where the op
 * decides the session's fate, of the session. */
static void op_dispose(struct op *op)
{
    struct sess *s = op->s;
    if (op->kind == K_CONNECT && op->rc == DONE && !op->cancelled) {
        /* From now on Lua references alone keep the session. */
        luaL_unref(sched_main_state(), LUA_REGISTRYINDEX, s->self_ref);
        s->self_ref = LUA_NOREF;
    } else if (op->kind == K_CONNECT || op->kind == K_CLOSE ||
               op->kind == K_BANNER) {
        sess_release(s);
    }
    op_free(op);
}

/* The operation ended (done or failed): answer the waiting task. */
static void op_finish(struct op *op, int rc)
{
    op->finished = 1;
    op->rc = rc;
    uv_timer_stop(&op->timer);
    unlink_op(op);
    if (op->sync)
        return;                /* run_op delivers it */
    if (op->waiting) {
        lua_State *co = sched_wait_state(&op->w);
        op->waiting = 0;
        sched_complete(&op->w, push_outcome(co, op));
    }
    op_dispose(op);
}

/* --- the pump ----------------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events);

static void arm(struct sess *s)
{
    int ev = 0, dir;
    if (!s->handles || s->freed)
        return;
    if (s->ops) {
        ev = UV_READABLE;
        if ((s->ops->kind == K_CONNECT || s->ops->kind == K_BANNER) &&
            s->ops->phase == 1)
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

static int outbound_blocked(struct sess *s)
{
    return s->ssh && (libssh2_session_block_directions(s->ssh) &
                      LIBSSH2_SESSION_BLOCK_OUTBOUND);
}

/* One pass over the operations; returns whether anything moved. */
static int pump_pass(struct sess *s)
{
    struct op *op = s->ops, *next;
    int moved = 0;
    while (op) {
        int rc;
        next = op->next;
        if (s->send_owner && s->send_owner != op) {
            op = next;
            continue;
        }
        if (s->dead && op->kind != K_CLOSE && op->kind != K_BANNER) {
            op_finish(op, fail(op, "DISCONNECTED", "%s", s->dead_reason));
            moved = 1;
            op = next;
            continue;
        }
        rc = op->step(op);
        if (rc == AGAIN && outbound_blocked(s))
            s->send_owner = op;
        else if (s->send_owner == op)
            s->send_owner = NULL;
        if (rc == DONE || rc == FAILED) {
            op_finish(op, rc);
            moved = 1;
        } else if (rc == PROGRESS) {
            moved = 1;
        }
        if (s->freed)
            return 0;
        op = next;
    }
    return moved;
}

static void pump(struct sess *s)
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
        if (++guard > 64)
            break;
    }
    arm(s);
    if (guard > 64 && s->ops) {
        /* More to do: come back on the next turn without waiting. */
        s->poll_events = -1;
        uv_poll_start(&s->poll, UV_READABLE | UV_WRITABLE, on_poll);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sess *s = h->data;
    (void)events;
    if (status < 0 && s->ops && s->ops->kind != K_CONNECT) {
        s->dead = 1;
        snprintf(s->dead_reason, sizeof s->dead_reason,
                 "the connection was lost (%s)", uv_strerror(status));
    }
    pump(s);
}

static ssize_t counting_recv(libssh2_socket_t fd, void *buf, size_t len,
                             int flags, void **abstract)
{
    struct sess *s = *abstract;
    ssize_t n = recv(fd, buf, len, flags);
    if (n < 0)
        return -errno;
    s->rx += (unsigned long)n;
    return n;
}

static void op_timed_out(uv_timer_t *h);

static void start_op(struct op *op)
{
    struct sess *s = op->s;
    struct op **pp = &s->ops;
    while (*pp)
        pp = &(*pp)->next;
    *pp = op;
    op->linked = 1;
    op->t0 = uv_hrtime();
    if (op->timeout_ms)
        bm_timer_start(&op->timer, op_timed_out, op->timeout_ms, 0);
}

static struct op *new_op(struct sess *s, int kind, int (*step)(struct op *))
{
    struct op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->s = s;
    op->kind = kind;
    op->step = step;
    op->local_fd = -1;
    op->on_line_ref = LUA_NOREF;
    op->stage = "channel";
    uv_timer_init(sched_loop(), &op->timer);
    op->timer.data = op;
    return op;
}

/* --- connect -------------------------------------------------------------- */

static int hostkey_to_knownhost(int type)
{
    switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
    case LIBSSH2_HOSTKEY_TYPE_DSS: return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return LIBSSH2_KNOWNHOST_KEY_ED25519;
    default: return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
    }
}

static void base64_nopad(const unsigned char *in, size_t n, char *out)
{
    static const char t[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;
    char *o = out;
    for (i = 0; i + 2 < n; i += 3) {
        *o++ = t[in[i] >> 2];
        *o++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        *o++ = t[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
        *o++ = t[in[i + 2] & 63];
    }
    if (n - i == 1) {
        *o++ = t[in[i] >> 2];
        *o++ = t[(in[i] & 3) << 4];
    } else if (n - i == 2) {
        *o++ = t[in[i] >> 2];
        *o++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
        *o++ = t[(in[i + 1] & 15) << 2];
    }
    *o = '\0';
}

static const char *known_hosts_path(struct sess *s, char *buf, size_t n)
{
    const char *home = getenv("HOME");
    if (s->known_hosts)
        return s->known_hosts;
    snprintf(buf, n, "%s/.ssh/known_hosts", home ? home : "");
    return buf;
}

static int check_hostkey(struct op *op)
{
    struct sess *s = op->s;
    size_t len;
    int type, kh_type, rc;
    const char *key = libssh2_session_hostkey(s->ssh, &len, &type);
    const char *hash = libssh2_hostkey_hash(s->ssh,
                                            LIBSSH2_HOSTKEY_HASH_SHA256);
    LIBSSH2_KNOWNHOSTS *kh;
    char path[1024], hostname[300];
    const char *file;
    struct libssh2_knownhost *found = NULL;
    op->stage = "host key";
    if (!key || !hash)
        return fail(op, "HOSTKEY", "the server sent no host key");
    memcpy(s->fingerprint, "SHA256:", 7);
    base64_nopad((const unsigned char *)hash, 32, s->fingerprint + 7);
    if (s->policy == POLICY_PINNED) {
        if (!s->pin || strcmp(s->pin, s->fingerprint) != 0)
            return fail(op, "HOSTKEY_MISMATCH", "host key %s does not match "
                        "the pinned fingerprint %s; not retrying",
                        s->fingerprint, s->pin ? s->pin : "(none given)");
        return DONE;
    }
    file = known_hosts_path(s, path, sizeof path);
    kh = libssh2_knownhost_init(s->ssh);
    if (!kh)
        return fail(op, "HOSTKEY", "cannot start a known_hosts check");
    libssh2_knownhost_readfile(kh, file, LIBSSH2_KNOWNHOST_FILE_OPENSSH);
    kh_type = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
              hostkey_to_knownhost(type);
    rc = libssh2_knownhost_checkp(kh, s->host, s->port, key, len, kh_type,
                                  &found);
    if (rc == LIBSSH2_KNOWNHOST_CHECK_MATCH) {
        libssh2_knownhost_free(kh);
        return DONE;
    }
    if (rc == LIBSSH2_KNOWNHOST_CHECK_MISMATCH) {
        libssh2_knownhost_free(kh);
        return fail(op, "HOSTKEY_MISMATCH", "HOST KEY MISMATCH: the server's "
                    "key %s differs from the one recorded in %s; possible "
                    "man-in-the-middle or a rebuilt host; not retrying",
                    s->fingerprint, file);
    }
    if (s->policy != POLICY_ACCEPT_NEW) {
        libssh2_knownhost_free(kh);
        return fail(op, "HOSTKEY_UNKNOWN", "host key %s is not in %s "
                    "(policy strict; use accept-new for throwaway hosts)",
                    s->fingerprint, file);
    }
    if (s->port == 22)
        snprintf(hostname, sizeof hostname, "%s", s->host);
    else
        snprintf(hostname, sizeof hostname, "[%s]:%d", s->host, s->port);
    rc = libssh2_knownhost_addc(kh, hostname, NULL, key, len,
                                "added by bomarun (accept-new)", 29,
                                kh_type, NULL);
    if (rc == 0)
        rc = libssh2_knownhost_writefile(kh, file,
                                         LIBSSH2_KNOWNHOST_FILE_OPENSSH);
    libssh2_knownhost_free(kh);
    if (rc != 0)
        return fail(op, "HOSTKEY", "cannot record the new host key in %s: %s",
                    file, ssh_errmsg(s));
    return DONE;
}

/* Whether a key file holds an RSA key: its .pub says so, or it is a PEM
 * RSA key.  Only used to explain a rejection. */
static int is_rsa_key(const char *path)
{
    char buf[64], pub[1100];
    int rsa = 0;
    FILE *f;
    snprintf(pub, sizeof pub, "%s.pub", path);
    if ((f = fopen(pub, "r"))) {
        rsa = fgets(buf, sizeof buf, f) && strncmp(buf, "ssh-rsa ", 8) == 0;
        fclose(f);
        return rsa;
    }
    if ((f = fopen(path, "r"))) {
        rsa = fgets(buf, sizeof buf, f) && strstr(buf, "RSA PRIVATE KEY");
        fclose(f);
    }
    return rsa;
}

/* Methods in order: key file, agent, password.  Returns AGAIN, DONE (one
 * worked), or FAILED once every method was refused. */
static int step_auth(struct op *op)
{
    struct sess *s = op->s;
    int rc;
    op->stage = "auth";
    for (;;) {
        if (op->auth_i == 0) {
            if (!s->key) {
                op->auth_i = 1;
                continue;
            }
            rc = libssh2_userauth_publickey_fromfile_ex(
                s->ssh, s->user, (unsigned)strlen(s->user), NULL, s->key,
                s->passphrase);
            if (rc == LIBSSH2_ERROR_EAGAIN)
                return AGAIN;
            if (rc == 0)
                return DONE;
            if (is_socket_error(rc))
                return fail_rc(op, "AUTH", rc, "public key");
            if (rc == LIBSSH2_ERROR_FILE)
                return fail(op, "KEY_FILE", "cannot use the private key file "
                            "%s (unreadable, bad format, or wrong "
                            "passphrase)", s->key);
            strncat(op->tried, is_rsa_key(s->key) ? "publickey(RSA file: "
                    "this libssh2 signs RSA with ssh-rsa/SHA-1 only, which "
                    "OpenSSH 8.8+ refuses unless PubkeyAcceptedAlgorithms "
                    "+ssh-rsa; prefer an ed25519 or ECDSA key) "
                    : "publickey(file) ",
                    sizeof op->tried - strlen(op->tried) - 1);
            op->auth_i = 1;
        } else if (op->auth_i == 1) {
            if (!s->use_agent) {
                op->auth_i = 2;
                continue;
            }
            if (!op->agent) {
                op->agent = libssh2_agent_init(s->ssh);
                if (op->agent && s->agent_path)
                    libssh2_agent_set_identity_path(op->agent, s->agent_path);
                if (!op->agent || libssh2_agent_connect(op->agent) != 0 ||
                    libssh2_agent_list_identities(op->agent) != 0) {
                    strncat(op->tried, "agent(unavailable) ",
                            sizeof op->tried - strlen(op->tried) - 1);
                    op->auth_i = 2;
                    continue;
                }
                op->ident = NULL;
                if (libssh2_agent_get_identity(op->agent, &op->ident, NULL)
                    != 0) {
                    strncat(op->tried, "agent(no keys) ",
                            sizeof op->tried - strlen(op->tried) - 1);
                    op->auth_i = 2;
                    continue;
                }
            }
            rc = libssh2_agent_userauth(op->agent, s->user, op->ident);
            if (rc == LIBSSH2_ERROR_EAGAIN)
                return AGAIN;
            if (rc == 0)
                return DONE;
            if (is_socket_error(rc))
                return fail_rc(op, "AUTH", rc, "agent");
            if (libssh2_agent_get_identity(op->agent, &op->ident, op->ident)
                != 0) {
                strncat(op->tried, "agent ",
                        sizeof op->tried - strlen(op->tried) - 1);
                op->auth_i = 2;
            }
        } else if (op->auth_i == 2) {
            if (!s->password) {
                op->auth_i = 3;
                continue;
            }
            rc = libssh2_userauth_password_ex(s->ssh, s->user,
                                              (unsigned)strlen(s->user),
                                              s->password,
                                              (unsigned)strlen(s->password),
                                              NULL);
            if (rc == LIBSSH2_ERROR_EAGAIN)
                return AGAIN;
            if (rc == 0)
                return DONE;
            if (is_socket_error(rc))
                return fail_rc(op, "AUTH", rc, "password");
            strncat(op->tried, "password ",
                    sizeof op->tried - strlen(op->tried) - 1);
            op->auth_i = 3;
        } else {
            if (!op->tried[0])
                return fail(op, "AUTH", "no authentication method was given "
                            "(key, agent or password)");
            op->tried[strlen(op->tried) - 1] = '\0';
            return fail(op, "AUTH", "the server rejected every method tried "
                        "(%s); not retrying", op->tried);
        }
    }
}

static int tcp_connect(struct op *op)
{
    struct sess *s = op->s;
    struct addrinfo *ai = op->ai;
    int fd, rc, one = 1;
    op->stage = "connect";
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0)
        return fail(op, "CONNECT", "socket: %s", strerror(errno));
    /* Requests are small and sequential: Nagle plus delayed ACKs would add
     * tens of milliseconds to each. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return fail(op, e == ECONNREFUSED ? "REFUSED" : "CONNECT", "%s",
                    strerror(e));
    }
    s->fd = fd;
    uv_poll_init(sched_loop(), &s->poll, fd);
    s->poll.data = s;
    uv_timer_init(sched_loop(), &s->keepalive);
    s->keepalive.data = s;
    s->handles = 2;
    s->poll_events = 0;
    return PROGRESS;
}

static int connect_finished(struct op *op)
{
    struct sess *s = op->s;
    int err = 0;
    socklen_t len = sizeof err;
    op->stage = "connect";
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return AGAIN;
    if (err)
        return fail(op, err == ECONNREFUSED ? "REFUSED" :
                    err == ETIMEDOUT ? "TIMEOUT" : "CONNECT", "%s",
                    strerror(err));
    return PROGRESS;
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res)
{
    struct op *op = req->data;
    op->gai_pending = 0;
    op->gai_status = status;
    op->ai = res;
    if (op->finished) {
        if (res)
            freeaddrinfo(res);
        op->ai = NULL;
        return;
    }
    pump(op->s);
}

static int resolve(struct op *op)
{
    struct sess *s = op->s;
    struct addrinfo hints;
    char port[16];
    op->stage = "resolve";
    if (op->ai)
        return PROGRESS;
    if (op->gai_pending)
        return AGAIN;
    if (op->gai_status)
        return fail(op, "RESOLVE", "cannot resolve %s: %s", s->host,
                    uv_strerror(op->gai_status));
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    snprintf(port, sizeof port, "%d", s->port);
    if (getaddrinfo(s->host, port, &hints, &op->ai) == 0)
        return PROGRESS;
    op->ai = NULL;
    hints.ai_flags = 0;
    op->gai.data = op;
    op->gai_pending = 1;
    if (uv_getaddrinfo(sched_loop(), &op->gai, on_resolved, s->host, port,
                       &hints) != 0) {
        op->gai_pending = 0;
        return fail(op, "RESOLVE", "cannot resolve %s", s->host);
    }
    return AGAIN;
}

static int new_session(struct op *op)
{
    struct sess *s = op->s;
    s->ssh = libssh2_session_init_ex(NULL, NULL, NULL, s);
    if (!s->ssh)
        return fail(op, "HANDSHAKE", "cannot create an ssh session");
    libssh2_session_callback_set(s->ssh, LIBSSH2_CALLBACK_RECV,
                                 (void *)counting_recv);
    libssh2_session_set_blocking(s->ssh, 0);
    if (s->keepalive_s > 0)
        libssh2_keepalive_config(s->ssh, 1, (unsigned)s->keepalive_s);
    return PROGRESS;
}

static void on_keepalive(uv_timer_t *h)
{
    struct sess *s = h->data;
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

static int step_connect(struct op *op)
{
    struct sess *s = op->s;
    int rc;
    if (op->cancelled)
        return fail(op, "CANCELLED", "cancelled");
    switch (op->phase) {
    case 0:
        rc = resolve(op);
        if (rc == PROGRESS) {
            rc = tcp_connect(op);
            if (rc == PROGRESS) {
                op->phase = 1;
                return PROGRESS;
            }
        }
        return rc;
    case 1:
        rc = connect_finished(op);
        if (rc != PROGRESS)
            return rc;
        rc = new_session(op);
        if (rc != PROGRESS)
            return rc;
        op->phase = 2;
        /* fall through */
    case 2:
        op->stage = "handshake";
        rc = libssh2_session_handshake(s->ssh, s->fd);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return AGAIN;
        if (rc != 0)
            return fail_rc(op, "HANDSHAKE", rc, "the ssh handshake failed");
        {
            const char *b = libssh2_session_banner_get(s->ssh);
            snprintf(s->banner, sizeof s->banner, "%s", b ? b : "");
        }
        rc = check_hostkey(op);
        if (rc != DONE)
            return rc;
        op->phase = 3;
        /* fall through */
    case 3:
        rc = step_auth(op);
        if (rc != DONE)
            return rc;
        if (op->agent) {
            libssh2_agent_disconnect(op->agent);
            libssh2_agent_free(op->agent);
            op->agent = NULL;
        }
        s->connected = 1;
        if (s->keepalive_s > 0) {
            bm_timer_start(&s->keepalive, on_keepalive,
                           (uint64_t)s->keepalive_s * 1000,
                           (uint64_t)s->keepalive_s * 1000);
            uv_unref((uv_handle_t *)&s->keepalive);
        }
        return DONE;
    }
    return fail(op, "BUG", "bad connect phase");
}

/* --- exec ---------------------------------------------------------------- */

enum { E_OPEN, E_EXEC, E_IO, E_CLOSE, E_WAIT_CLOSED, E_FREE };

static int take_lock(struct op *op)
{
    struct sess *s = op->s;
    if (s->lock_owner && s->lock_owner != op)
        return 0;
    s->lock_owner = op;
    return 1;
}

static void drop_lock(struct op *op)
{
    if (op->s->lock_owner == op)
        op->s->lock_owner = NULL;
}

static void *open_channel(LIBSSH2_SESSION *ssh)
{
    return libssh2_channel_open_session(ssh);
}

static void *open_sftp(LIBSSH2_SESSION *ssh)
{
    return libssh2_sftp_init(ssh);
}

/* A session-level request returning a handle (NULL with EAGAIN while it is
 * pending) keeps its state in the session: run it under the session lock.
 * Returns DONE with *out set, AGAIN, or FAILED. */
static int locked_open(struct op *op, void *(*open)(LIBSSH2_SESSION *),
                       void **out, const char *code, const char *what)
{
    struct sess *s = op->s;
    int rc;
    if (!take_lock(op))
        return AGAIN;
    *out = open(s->ssh);
    if (!*out) {
        rc = libssh2_session_last_errno(s->ssh);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return AGAIN;
        drop_lock(op);
        return fail_rc(op, code, rc, what);
    }
    drop_lock(op);
    return DONE;
}

static int exec_io(struct op *op)
{
    char buf[CHUNK];
    int moved = 0, i;
    ssize_t n;
    struct sess *s = op->s;
    if (op->in_off < op->in_len) {
        n = libssh2_channel_write(op->ch, op->in + op->in_off,
                                  op->in_len - op->in_off);
        if (n > 0) {
            op->in_off += (size_t)n;
            moved = 1;
        } else if (n != LIBSSH2_ERROR_EAGAIN && n < 0) {
            op->in_off = op->in_len;   /* the command stopped reading */
        }
    }
    if (op->in_off >= op->in_len && !op->eof_sent) {
        n = libssh2_channel_send_eof(op->ch);
        if (n == 0 || (n != LIBSSH2_ERROR_EAGAIN))
            op->eof_sent = 1;
    }
    for (i = 0; i < 2; i++) {
        for (;;) {
            n = libssh2_channel_read_ex(op->ch, i ? SSH_EXTENDED_DATA_STDERR : 0,
                                        buf, sizeof buf);
            if (n > 0) {
                bm_stream_feed(&op->out[i], buf, (size_t)n, op->on_line_ref,
                               op->cmd);
                moved = 1;
                continue;
            }
            if (n < 0 && n != LIBSSH2_ERROR_EAGAIN)
                return fail_rc(op, "EXEC", (int)n, "reading output");
            break;
        }
    }
    if (libssh2_channel_eof(op->ch)) {
        bm_stream_flush(&op->out[0], op->on_line_ref, op->cmd);
        bm_stream_flush(&op->out[1], op->on_line_ref, op->cmd);
        op->phase = E_CLOSE;
        return PROGRESS;
    }
    (void)s;
    return moved ? PROGRESS : AGAIN;
}

static void read_exit(struct op *op)
{
    char *sig = NULL;
    size_t siglen = 0;
    op->exit_status = libssh2_channel_get_exit_status(op->ch);
    if (libssh2_channel_get_exit_signal(op->ch, &sig, &siglen, NULL, NULL,
                                        NULL, NULL) == 0 && sig) {
        snprintf(op->exit_signal, sizeof op->exit_signal, "%.*s",
                 (int)siglen, sig);
        libssh2_free(op->s->ssh, sig);
    }
}

/* A channel given up on: close and free it whenever the server lets us. */
static int step_reap(struct op *op)
{
    int rc;
    op->stage = "channel";
    if (op->phase == 0) {
        rc = libssh2_channel_close(op->ch);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return AGAIN;
        op->phase = 1;
    }
    rc = libssh2_channel_free(op->ch);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return AGAIN;
    op->ch = NULL;
    return DONE;
}

static void reap_channel(struct sess *s, LIBSSH2_CHANNEL *ch)
{
    struct op *op = new_op(s, K_REAP, step_reap);
    if (!op)
        return;
    op->ch = ch;
    start_op(op);
}

static int step_exec(struct op *op)
{
    struct sess *s = op->s;
    int rc;
    for (;;) {
        switch (op->phase) {
        case E_OPEN:
            op->stage = "channel";
            if (op->cancelled || op->timed_out)
                return fail(op, op->timed_out ? "TIMEOUT" : "CANCELLED",
                            "gave up before the channel opened");
            rc = locked_open(op, open_channel, (void **)&op->ch, "CHANNEL",
                             "cannot open a channel");
            if (rc != DONE)
                return rc;
            op->phase = E_EXEC;
            break;
        case E_EXEC:
            op->stage = "exec";
            if (op->cancelled || op->timed_out) {
                op->phase = E_FREE;
                break;
            }
            rc = libssh2_channel_exec(op->ch, op->cmd);
            if (rc == LIBSSH2_ERROR_EAGAIN)
                return AGAIN;
            if (rc != 0) {
                fail_rc(op, "EXEC", rc, "the server refused to run the "
                        "command");
                op->phase = E_FREE;
                op->fail_pending = 1;
                break;
            }
            op->phase = E_IO;
            break;
        case E_IO:
            op->stage = "exec";
            if (op->cancelled || op->timed_out) {
                op->phase = E_CLOSE;
                break;
            }
            rc = exec_io(op);
            if (rc != PROGRESS || op->phase == E_IO)
                return rc;
            break;
        case E_CLOSE:
            if (op->timed_out || op->cancelled) {
                /* Closing waits for the server's close, which comes only
                 * when the command ends: do that in the background and
                 * answer now. */
                reap_channel(s, op->ch);
                op->ch = NULL;
                op->phase = E_FREE;
                break;
            }
            rc = libssh2_channel_close(op->ch);
            if (rc == LIBSSH2_ERROR_EAGAIN)
                return AGAIN;
            op->phase = (op->timed_out || op->cancelled || rc != 0)
                        ? E_FREE : E_WAIT_CLOSED;
            break;
        case E_WAIT_CLOSED:
            rc = libssh2_channel_wait_closed(op->ch);
            if (rc == LIBSSH2_ERROR_EAGAIN)
                return AGAIN;
            read_exit(op);
            op->phase = E_FREE;
            break;
        case E_FREE:
            if (op->ch) {
                rc = libssh2_channel_free(op->ch);
                if (rc == LIBSSH2_ERROR_EAGAIN)
                    return AGAIN;
                op->ch = NULL;
            }
            if (op->fail_pending || op->timed_out || op->cancelled) {
                if (op->fail_pending)
                    return FAILED;
                if (op->timed_out)
                    return fail(op, "TIMEOUT", "`%s` timed out after %.3g s; "
                                "the channel was closed", op->cmd,
                                (double)op->timeout_ms / 1000.0);
                return fail(op, "CANCELLED", "cancelled");
            }
            return DONE;
        }
    }
}

/* --- sftp ---------------------------------------------------------------- */

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

static int sftp_fail(struct op *op, const char *what)
{
    struct sess *s = op->s;
    int rc = libssh2_session_last_errno(s->ssh);
    if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL && s->sftp) {
        unsigned long e = libssh2_sftp_last_error(s->sftp);
        return fail(op, "SFTP", "%s %s: %s (SFTP status %lu)", what,
                    op->remote, sftp_errname(e), e);
    }
    return fail_rc(op, "SFTP", rc, what);
}

enum { S_WAIT, S_INIT, S_OPEN, S_STAT, S_XFER, S_CLOSE };

static int sftp_io_put(struct op *op)
{
    ssize_t n;
    if (op->buf_off >= op->buf_len) {
        if (op->to_memory) {
            if (op->buf_len)   /* the whole string went in one buffer */
                return DONE;
        } else {
            n = read(op->local_fd, op->buf, CHUNK);
            if (n < 0)
                return fail(op, "LOCAL_FILE", "reading %s: %s", op->local,
                            strerror(errno));
            if (n == 0)
                return DONE;
            op->buf_len = (size_t)n;
            op->buf_off = 0;
        }
    }
    if (op->buf_len == 0)
        return DONE;
    n = libssh2_sftp_write(op->fh, op->buf + op->buf_off,
                           op->buf_len - op->buf_off);
    if (n == LIBSSH2_ERROR_EAGAIN)
        return AGAIN;
    if (n < 0)
        return sftp_fail(op, "writing");
    op->buf_off += (size_t)n;
    op->bytes += (uint64_t)n;
    if (op->to_memory && op->buf_off >= op->buf_len)
        return DONE;
    return PROGRESS;
}

static int sftp_io_get(struct op *op)
{
    char buf[CHUNK];
    ssize_t n = libssh2_sftp_read(op->fh, buf, sizeof buf);
    if (n == LIBSSH2_ERROR_EAGAIN)
        return AGAIN;
    if (n < 0)
        return sftp_fail(op, "reading");
    if (n == 0)
        return DONE;
    op->bytes += (uint64_t)n;
    if (op->to_memory) {
        bm_buf_add(&op->data, buf, (size_t)n);
    } else {
        size_t off = 0;
        while (off < (size_t)n) {
            ssize_t w = write(op->local_fd, buf + off, (size_t)n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return fail(op, "LOCAL_FILE", "writing %s: %s", op->local,
                            strerror(errno));
            off += (size_t)w;
        }
    }
    return PROGRESS;
}

static int step_sftp(struct op *op)
{
    struct sess *s = op->s;
    int rc;
    op->stage = "sftp";
    for (;;) {
        switch (op->phase) {
        case S_WAIT:
            if (op->cancelled || op->timed_out)
                return fail(op, op->timed_out ? "TIMEOUT" : "CANCELLED",
                            "gave up waiting for the SFTP channel");
            if (s->sftp_owner && s->sftp_owner != op)
                return AGAIN;
            s->sftp_owner = op;
            op->phase = s->sftp ? S_OPEN : S_INIT;
            break;
        case S_INIT:
            rc = locked_open(op, open_sftp, (void **)&s->sftp, "SFTP",
                             "cannot start SFTP");
            if (rc != DONE)
                return rc;
            op->phase = S_OPEN;
            break;
        case S_OPEN:
            if (op->cancelled || op->timed_out)
                return fail(op, op->timed_out ? "TIMEOUT" : "CANCELLED",
                            "gave up before the transfer started");
            op->fh = libssh2_sftp_open_ex(
                s->sftp, op->remote, (unsigned)strlen(op->remote),
                op->kind == K_PUT ? LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT |
                                    LIBSSH2_FXF_TRUNC : LIBSSH2_FXF_READ,
                op->mode, LIBSSH2_SFTP_OPENFILE);
            if (!op->fh) {
                if (libssh2_session_last_errno(s->ssh) == LIBSSH2_ERROR_EAGAIN)
                    return AGAIN;
                return sftp_fail(op, "cannot open");
            }
            op->phase = op->kind == K_GET ? S_STAT : S_XFER;
            break;
        case S_STAT: {
            LIBSSH2_SFTP_ATTRIBUTES a;
            rc = libssh2_sftp_fstat_ex(op->fh, &a, 0);
            if (rc == LIBSSH2_ERROR_EAGAIN)
                return AGAIN;
            if (rc == 0 && (a.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS))
                op->mode = (long)(a.permissions & 07777);
            op->phase = S_XFER;
            break;
        }
        case S_XFER:
            if (op->cancelled || op->timed_out) {
                op->phase = S_CLOSE;
                break;
            }
            rc = op->kind == K_PUT ? sftp_io_put(op) : sftp_io_get(op);
            if (rc == DONE) {
                op->phase = S_CLOSE;
                break;
            }
            if (rc == FAILED) {
                op->fail_pending = 1;
                op->phase = S_CLOSE;
                break;
            }
            return rc;
        case S_CLOSE:
            if (op->fh) {
                rc = libssh2_sftp_close_handle(op->fh);
                if (rc == LIBSSH2_ERROR_EAGAIN)
                    return AGAIN;
                op->fh = NULL;
            }
            s->sftp_owner = NULL;
            if (op->fail_pending)
                return FAILED;
            if (op->timed_out)
                return fail(op, "TIMEOUT", "transfer of %s timed out",
                            op->remote);
            if (op->cancelled)
                return fail(op, "CANCELLED", "cancelled");
            if (op->kind == K_GET && !op->to_memory && op->mode > 0)
                fchmod(op->local_fd, (mode_t)op->mode);
            return DONE;
        }
    }
}

/* --- close ----------------------------------------------------------------- */

static int step_close(struct op *op)
{
    struct sess *s = op->s;
    int rc;
    op->stage = "close";
    if (s->dead || op->cancelled || op->timed_out)
        return DONE;
    for (struct op *o = s->ops; o; o = o->next)   /* let the others finish */
        if (o != op && o->kind != K_REAP)
            return AGAIN;
    if (s->sftp && op->phase == 0) {
        rc = libssh2_sftp_shutdown(s->sftp);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return AGAIN;
        s->sftp = NULL;
    }
    op->phase = 1;
    rc = libssh2_session_disconnect(s->ssh, "bomarun closing");
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return AGAIN;
    return DONE;
}

/* --- timeouts and cancellation -------------------------------------------- */

static void op_timed_out(uv_timer_t *h)
{
    struct op *op = h->data;
    op->timed_out = 1;
    if (op->kind == K_CONNECT) {
        const char *stage = op->phase <= 1 ? "connect" :
                            op->phase == 2 ? "handshake" : "auth";
        op->stage = stage;
        fail(op, "TIMEOUT", "timed out after %.3g s%s",
             (double)op->timeout_ms / 1000.0,
             op->phase == 2 ? " (the TCP connection was accepted but no ssh "
                              "banner or handshake reply came)" : "");
        op_finish(op, FAILED);
        return;
    }
    pump(op->s);
}

static void op_cancel(struct bm_wait *w)
{
    struct op *op = (struct op *)((char *)w - offsetof(struct op, w));
    op->waiting = 0;
    op->cancelled = 1;
    if (op->kind == K_CONNECT) {
        fail(op, "CANCELLED", "cancelled");
        op_finish(op, FAILED);
        return;
    }
    pump(op->s);
}

/* Queue op, pump once, and wait for it (or answer at once if it ended
 * already).  `keep` stack slots stay below the results (the session). */
static int run_op(lua_State *L, struct op *op, int keep)
{
    op->w.cancel = op_cancel;
    start_op(op);
    op->sync = 1;
    pump(op->s);
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

/* --- results --------------------------------------------------------------- */

static void push_result(lua_State *L, struct op *op)
{
    double dur = (double)(uv_hrtime() - op->t0) / 1e9;
    switch (op->kind) {
    case K_CONNECT:
        lua_rawgeti(L, LUA_REGISTRYINDEX, op->s->self_ref);
        break;
    case K_EXEC:
        lua_createtable(L, 0, 8);
        if (!op->exit_signal[0] && !op->timed_out && !op->cancelled) {
            lua_pushinteger(L, op->exit_status);
            lua_setfield(L, -2, "status");
        }
        if (op->exit_signal[0]) {
            lua_pushstring(L, op->exit_signal);
            lua_setfield(L, -2, "signal");
        }
        bm_stream_push(L, &op->out[0]);
        lua_setfield(L, -2, "stdout");
        bm_stream_push(L, &op->out[1]);
        lua_setfield(L, -2, "stderr");
        lua_pushnumber(L, dur);
        lua_setfield(L, -2, "duration");
        lua_pushboolean(L, op->timed_out);
        lua_setfield(L, -2, "timed_out");
        break;
    case K_GET:
        if (op->to_memory) {
            lua_pushlstring(L, op->data.data ? op->data.data : "",
                            op->data.len);
            break;
        }
        /* fall through */
    case K_PUT:
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, (lua_Integer)op->bytes);
        lua_setfield(L, -2, "bytes");
        lua_pushinteger(L, op->mode);
        lua_setfield(L, -2, "mode");
        lua_pushnumber(L, dur);
        lua_setfield(L, -2, "duration");
        break;
    case K_BANNER:
        lua_pushstring(L, op->banner_line);
        break;
    default:
        lua_pushboolean(L, 1);
        break;
    }
}

/* --- Lua API ------------------------------------------------------------- */

static struct sess *check_sess(lua_State *L, int i)
{
    struct sess **pp = luaL_checkudata(L, i, SESS_MT);
    if (!*pp || (*pp)->freed)
        luaL_error(L, "ssh: the session is closed");
    return *pp;
}

static char *opt_strdup(lua_State *L, int t, const char *k)
{
    char *v = NULL;
    int type = lua_getfield(L, t, k);
    if (type == LUA_TSTRING)
        v = strdup(lua_tostring(L, -1));
    else if (type != LUA_TNIL && !(type == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
        luaL_error(L, "ssh: %s must be a string (or false)", k);
    lua_pop(L, 1);
    return v;
}

static double opt_num(lua_State *L, int t, const char *k, double dflt)
{
    double v = dflt;
    if (lua_getfield(L, t, k) != LUA_TNIL) {
        if (!lua_isnumber(L, -1))
            luaL_error(L, "ssh: %s must be a number", k);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static void read_connect_opts(lua_State *L, struct sess *s)
{
    const char *host, *user, *policy;
    host = (lua_getfield(L, 1, "host"), luaL_optstring(L, -1, NULL));
    if (!host)
        luaL_error(L, "ssh.connect: host is required");
    snprintf(s->host, sizeof s->host, "%s", host);
    lua_pop(L, 1);
    user = (lua_getfield(L, 1, "user"), luaL_optstring(L, -1, NULL));
    snprintf(s->user, sizeof s->user, "%s", user ? user :
             (getenv("USER") ? getenv("USER") : "root"));
    lua_pop(L, 1);
    s->port = (int)opt_num(L, 1, "port", 22);
    s->keepalive_s = (int)opt_num(L, 1, "keepalive", 30);
    s->key = opt_strdup(L, 1, "key");
    s->passphrase = opt_strdup(L, 1, "passphrase");
    s->password = opt_strdup(L, 1, "password");
    s->known_hosts = opt_strdup(L, 1, "known_hosts");
    s->pin = opt_strdup(L, 1, "fingerprint");
    lua_getfield(L, 1, "agent");
    if (lua_type(L, -1) == LUA_TSTRING) {
        s->use_agent = 1;
        s->agent_path = strdup(lua_tostring(L, -1));
    } else {
        s->use_agent = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    policy = (lua_getfield(L, 1, "host_key_policy"),
              luaL_optstring(L, -1, "strict"));
    if (strcmp(policy, "strict") == 0)
        s->policy = POLICY_STRICT;
    else if (strcmp(policy, "accept-new") == 0)
        s->policy = POLICY_ACCEPT_NEW;
    else if (strcmp(policy, "pinned") == 0)
        s->policy = POLICY_PINNED;
    else
        luaL_error(L, "ssh.connect: host_key_policy must be strict, "
                   "accept-new or pinned, not '%s'", policy);
    lua_pop(L, 1);
    if (s->policy == POLICY_PINNED && !s->pin)
        luaL_error(L, "ssh.connect: host_key_policy 'pinned' needs "
                   "fingerprint = \"SHA256:...\"");
}

static int l_sess_gc(lua_State *L);

/* Pushes a new, unconnected session handle; its __gc frees it if what
 * follows raises. */
static struct sess *push_new_sess(lua_State *L)
{
    struct sess **pp, *s = calloc(1, sizeof *s);
    if (!s)
        luaL_error(L, "ssh: out of memory");
    s->fd = -1;
    s->self_ref = LUA_NOREF;
    pp = lua_newuserdatauv(L, sizeof *pp, 0);
    *pp = s;
    luaL_setmetatable(L, SESS_MT);
    return s;
}

/* Pushes nil, "ssh: STAGE: user@host:port: why", "DISCONNECTED". */
static int push_not_connected(lua_State *L, struct sess *s, const char *stage)
{
    lua_pushnil(L);
    lua_pushfstring(L, "ssh: %s: %s@%s:%d: %s", stage, s->user, s->host,
                    s->port, s->dead ? s->dead_reason :
                    "the session is not connected");
    lua_pushliteral(L, "DISCONNECTED");
    return 3;
}

/* connect(opts) -> session | nil, msg, CODE */
static int l_ssh_connect(lua_State *L)
{
    struct sess *s;
    struct op *op;
    luaL_checktype(L, 1, LUA_TTABLE);
    sched_check_await(L, "ssh.connect");
    s = push_new_sess(L);
    read_connect_opts(L, s);    /* raises on bad options; __gc frees s */
    lua_pushvalue(L, -1);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    op = new_op(s, K_CONNECT, step_connect);
    op->stage = "connect";
    op->timeout_ms = (uint64_t)(opt_num(L, 1, "timeout", 10) * 1000);
    return run_op(L, op, 0);
}

/* s:exec(cmd [, opts]) -> result | nil, msg, CODE, partial */
static int l_sess_exec(lua_State *L)
{
    struct sess *s = check_sess(L, 1);
    const char *cmd = luaL_checkstring(L, 2);
    struct op *op;
    sched_check_await(L, "ssh exec");
    if (!s->connected || s->dead)
        return push_not_connected(L, s, "exec");
    op = new_op(s, K_EXEC, step_exec);
    op->cmd = strdup(cmd);
    bm_stream_init(&op->out[0], "stdout", MAX_OUTPUT);
    bm_stream_init(&op->out[1], "stderr", MAX_OUTPUT);
    if (lua_istable(L, 3)) {
        op->timeout_ms = (uint64_t)(opt_num(L, 3, "timeout", 0) * 1000);
        if (lua_getfield(L, 3, "stdin") == LUA_TSTRING) {
            const char *in = lua_tolstring(L, -1, &op->in_len);
            op->in = malloc(op->in_len + 1);
            memcpy(op->in, in, op->in_len);
        }
        lua_pop(L, 1);
        if (lua_getfield(L, 3, "on_line") == LUA_TFUNCTION)
            op->on_line_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    }
    return run_op(L, op, 1);
}

static int start_transfer(lua_State *L, struct sess *s, int kind,
                          const char *remote, const char *local,
                          const char *data, size_t len, long mode)
{
    struct op *op;
    sched_check_await(L, kind == K_PUT ? "ssh put" : "ssh get");
    if (!s->connected || s->dead)
        return push_not_connected(L, s, "sftp");
    op = new_op(s, kind, step_sftp);
    op->stage = "sftp";
    op->remote = strdup(remote);
    op->mode = mode;
    if (local) {
        op->local = strdup(local);
        op->local_fd = kind == K_PUT ? open(local, O_RDONLY | O_CLOEXEC)
                       : open(local, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                              0600);
        if (op->local_fd < 0) {
            int e = errno;
            lua_pushnil(L);
            lua_pushfstring(L, "ssh: sftp: cannot open local file %s: %s",
                            local, strerror(e));
            lua_pushliteral(L, "LOCAL_FILE");
            op_free(op);
            return 3;
        }
        if (kind == K_PUT && mode < 0) {
            struct stat st;
            if (fstat(op->local_fd, &st) == 0)
                op->mode = (long)(st.st_mode & 07777);
        }
        op->buf = malloc(CHUNK);
    } else {
        op->to_memory = 1;
        if (kind == K_PUT) {
            op->buf = malloc(len ? len : 1);
            memcpy(op->buf, data, len);
            op->buf_len = len;
        }
    }
    if (op->mode < 0)
        op->mode = 0644;
    if (lua_istable(L, 5))
        op->timeout_ms = (uint64_t)(opt_num(L, 5, "timeout", 0) * 1000);
    return run_op(L, op, 1);
}

static long opt_mode(lua_State *L, int i)
{
    long mode = -1;
    if (lua_istable(L, i)) {
        if (lua_getfield(L, i, "mode") == LUA_TNUMBER)
            mode = (long)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    return mode;
}

/* s:put(local, remote [, opts]) -> {bytes, mode, duration} | nil, msg, CODE */
static int l_sess_put(lua_State *L)
{
    struct sess *s = check_sess(L, 1);
    const char *local = luaL_checkstring(L, 2);
    const char *remote = luaL_checkstring(L, 3);
    long mode = opt_mode(L, 4);
    lua_settop(L, 4);
    lua_pushvalue(L, 4);    /* opts at 5 for start_transfer */
    return start_transfer(L, s, K_PUT, remote, local, NULL, 0, mode);
}

/* s:get(remote, local [, opts]) -> {bytes, mode, duration} | nil, msg, CODE */
static int l_sess_get(lua_State *L)
{
    struct sess *s = check_sess(L, 1);
    const char *remote = luaL_checkstring(L, 2);
    const char *local = luaL_checkstring(L, 3);
    lua_settop(L, 4);
    lua_pushvalue(L, 4);
    return start_transfer(L, s, K_GET, remote, local, NULL, 0, 0);
}

/* s:put_string(text, remote [, opts]) -> {bytes, ...} | nil, msg, CODE */
static int l_sess_put_string(lua_State *L)
{
    struct sess *s = check_sess(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    const char *remote = luaL_checkstring(L, 3);
    long mode = opt_mode(L, 4);
    lua_settop(L, 4);
    lua_pushvalue(L, 4);
    return start_transfer(L, s, K_PUT, remote, NULL, text, len, mode);
}

/* s:get_string(remote [, opts]) -> text | nil, msg, CODE */
static int l_sess_get_string(lua_State *L)
{
    struct sess *s = check_sess(L, 1);
    const char *remote = luaL_checkstring(L, 2);
    lua_settop(L, 3);
    lua_pushnil(L);
    lua_pushvalue(L, 3);    /* opts at 5 */
    return start_transfer(L, s, K_GET, remote, NULL, NULL, 0, 0);
}

/* s:close() -> true ; a polite disconnect, then the session is gone */
static int l_sess_close(lua_State *L)
{
    struct sess **pp = luaL_checkudata(L, 1, SESS_MT);
    struct sess *s = *pp;
    struct op *op;
    if (!s || s->freed || s->closed) {
        lua_pushboolean(L, 1);
        return 1;
    }
    s->closed = 1;
    if (!s->connected || s->dead || !lua_isyieldable(L) || !sched_current()) {
        sess_release(s);
        lua_pushboolean(L, 1);
        return 1;
    }
    op = new_op(s, K_CLOSE, step_close);
    op->timeout_ms = 5000;
    return run_op(L, op, 1);
}

/* s:alive() -> boolean */
static int l_sess_alive(lua_State *L)
{
    struct sess **pp = luaL_checkudata(L, 1, SESS_MT);
    struct sess *s = *pp;
    lua_pushboolean(L, s && !s->freed && s->connected && !s->dead &&
                       !s->closed);
    return 1;
}

/* s:info() -> {host, port, user, fingerprint, banner} */
static int l_sess_info(lua_State *L)
{
    struct sess **pp = luaL_checkudata(L, 1, SESS_MT);
    struct sess *s = *pp;
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
    struct sess **pp = luaL_checkudata(L, 1, SESS_MT);
    struct sess *s = *pp;
    if (!s)
        lua_pushliteral(L, "ssh session (closed)");
    else
        lua_pushfstring(L, "ssh session %s@%s:%d%s", s->user, s->host,
                        s->port, s->freed ? " (closed)" : "");
    return 1;
}

static int l_sess_gc(lua_State *L)
{
    struct sess **pp = luaL_checkudata(L, 1, SESS_MT);
    struct sess *s = *pp;
    if (!s)
        return 0;
    *pp = NULL;
    if (sched_main_state() == NULL)
        return 0;
    s->self_ref = LUA_NOREF;   /* the registry is going or already let go */
    sess_release(s);
    s->ud_gone = 1;
    if (s->handles == 0)
        free(s);
    return 0;
}

/* --- banner probe: TCP connect and read the first line ------------------- */

static int step_banner(struct op *op)
{
    struct sess *s = op->s;
    int rc;
    char buf[256];
    ssize_t n;
    size_t have;
    if (op->cancelled)
        return fail(op, "CANCELLED", "cancelled");
    if (op->phase == 0) {
        rc = resolve(op);
        if (rc != PROGRESS)
            return rc;
        rc = tcp_connect(op);
        if (rc != PROGRESS)
            return rc;
        op->phase = 1;
        return PROGRESS;
    }
    if (op->phase == 1) {
        rc = connect_finished(op);
        if (rc != PROGRESS)
            return rc;
        op->phase = 2;
        op->stage = "banner";
    }
    n = recv(s->fd, buf, sizeof buf - 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return AGAIN;
    if (n < 0)
        return fail(op, errno == ECONNRESET ? "RESET" : "CONNECT", "%s",
                    strerror(errno));
    if (n == 0)
        return fail(op, "CLOSED", "the server closed the connection before "
                    "sending a banner");
    have = strlen(op->banner_line);
    snprintf(op->banner_line + have, sizeof op->banner_line - have, "%.*s",
             (int)n, buf);
    if (strchr(op->banner_line, '\n') ||
        strlen(op->banner_line) >= sizeof op->banner_line - 1) {
        char *nl = strpbrk(op->banner_line, "\r\n");
        if (nl)
            *nl = '\0';
        return DONE;
    }
    return PROGRESS;
}

/* banner{host=, port=, timeout=} -> banner line | nil, msg, CODE */
static int l_ssh_banner(lua_State *L)
{
    struct sess *s;
    struct op *op;
    luaL_checktype(L, 1, LUA_TTABLE);
    sched_check_await(L, "ssh.wait_for_port");
    s = push_new_sess(L);
    lua_getfield(L, 1, "host");
    snprintf(s->host, sizeof s->host, "%s", luaL_checkstring(L, -1));
    lua_pop(L, 1);
    snprintf(s->user, sizeof s->user, "%s", "(probe)");
    s->port = (int)opt_num(L, 1, "port", 22);
    lua_pushvalue(L, -1);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    op = new_op(s, K_BANNER, step_banner);
    op->stage = "connect";
    op->timeout_ms = (uint64_t)(opt_num(L, 1, "timeout", 5) * 1000);
    return run_op(L, op, 0);
}

static const luaL_Reg sess_methods[] = {
    {"_exec", l_sess_exec},
    {"put", l_sess_put},
    {"get", l_sess_get},
    {"put_string", l_sess_put_string},
    {"get_string", l_sess_get_string},
    {"close", l_sess_close},
    {"alive", l_sess_alive},
    {"info", l_sess_info},
    {NULL, NULL}
};

static const luaL_Reg sess_meta[] = {
    {"__gc", l_sess_gc},
    {"__close", l_sess_gc},
    {"__tostring", l_sess_tostring},
    {NULL, NULL}
};

static const luaL_Reg ssh_funcs[] = {
    {"connect", l_ssh_connect},
    {"banner", l_ssh_banner},
    {NULL, NULL}
};

int luaopen_bomarun__ssh(lua_State *L)
{
    static int inited;
    if (!inited) {
        libssh2_init(0);
        inited = 1;
    }
    if (luaL_newmetatable(L, SESS_MT)) {
        luaL_setfuncs(L, sess_meta, 0);
        luaL_newlib(L, sess_methods);
        lua_setfield(L, -2, "__index");
    }
    luaL_newlib(L, ssh_funcs);
    /* The methods table, so bomarun.ssh can add Lua methods. */
    lua_getfield(L, -2, "__index");
    lua_setfield(L, -2, "methods");
    lua_remove(L, -2);
    return 1;
}
