/* ssh_int: what the files of the ssh binding (bomarun._ssh) share.
 *
 *   mod_ssh.c    the module table, the session handle, connecting
 *   ssh_pump.c   operations: lifetime, the pump, timeouts, errors
 *   ssh_auth.c   host-key policies and user authentication
 *   ssh_exec.c   commands over channels
 *   ssh_sftp.c   file transfer over SFTP
 *   ssh_probe.c  the banner probe behind ssh.wait_for_port
 *
 * A session owns a socket polled by libuv and a list of operations in
 * flight.  Every operation starts with a struct ssh_op, which the pump
 * steps; each kind puts it first in its own struct (struct ssh_exec, ...). */
#ifndef BOMARUN_SSH_INT_H
#define BOMARUN_SSH_INT_H

#include <netdb.h>
#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <libssh2.h>
#include <libssh2_sftp.h>

#include "lines.h"
#include "sched.h"

#define SSH_SESS_MT "bomarun.ssh_session"
#define SSH_CHUNK 32768
#define SSH_MAX_OUTPUT (64u << 20)

/* What a step function returns. */
enum { SSH_AGAIN = 0, SSH_DONE = 1, SSH_PROGRESS = 2, SSH_FAILED = -1 };

enum {
    SSH_K_CONNECT,
    SSH_K_EXEC,
    SSH_K_PUT,
    SSH_K_GET,
    SSH_K_CLOSE,
    SSH_K_BANNER,
    SSH_K_REAP
};

enum { SSH_POLICY_STRICT, SSH_POLICY_ACCEPT_NEW, SSH_POLICY_PINNED };

/* Phases of a connect and of a banner probe: the first two are dialling;
 * a probe reads the banner line in SSH_B_READ. */
enum {
    SSH_DIAL_RESOLVE,
    SSH_DIAL_CONNECTING, /* TCP connect in progress: poll writable */
    SSH_C_HANDSHAKE,     /* connect: ssh handshake and host key */
    SSH_C_AUTH,          /* connect: user authentication */
    SSH_B_READ = SSH_C_HANDSHAKE
};

struct ssh_op;

struct ssh_sess {
    LIBSSH2_SESSION *ssh;
    int fd;
    uv_poll_t poll;
    uv_timer_t keepalive;
    int handles; /* open libuv handles (poll, keepalive) */
    int poll_events;
    struct ssh_op *ops;
    struct ssh_op *send_owner; /* holds a partially sent packet */
    struct ssh_op *lock_owner; /* in a session-level phase */
    struct ssh_op *sftp_owner; /* the one SFTP operation in flight */
    LIBSSH2_SFTP *sftp;
    unsigned long rx; /* bytes received: progress for the pump */
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

/* The part of every operation the pump knows. */
struct ssh_op {
    struct ssh_op *next;
    struct ssh_sess *s;
    int kind, phase;
    /* Retries the operation's libssh2 calls: SSH_AGAIN, SSH_PROGRESS,
     * SSH_DONE or SSH_FAILED. */
    int (*step)(struct ssh_op *op);
    /* Pushes the result of a successful operation (true when NULL). */
    void (*push)(lua_State *L, struct ssh_op *op);
    /* Lets go of what the kind holds; runs once, when the op is freed. */
    void (*release)(struct ssh_op *op);
    struct bm_wait w;
    int waiting, cancelled, timed_out, finished;
    int sync;         /* inside ssh_run_op's first pump */
    int rc;           /* SSH_DONE or SSH_FAILED once finished */
    int fail_pending; /* failed; finishing the channel first */
    int busy;         /* libuv requests still pointing at the op */
    int timer_closed;
    uv_timer_t timer;
    uint64_t t0, timeout_ms;
    char err[1024];
    char code[24];
    const char *stage;
};

/* Resolving the host and connecting the TCP socket. */
struct ssh_dial {
    struct ssh_op op;
    struct addrinfo *ai;
    uv_getaddrinfo_t gai;
    int gai_pending, gai_status;
};

struct ssh_connect {
    struct ssh_dial dial;
    LIBSSH2_AGENT *agent;
    struct libssh2_agent_publickey *ident;
    int auth_i;      /* the method being tried */
    char tried[400]; /* the methods refused, for the message */
};

/* --- ssh_pump.c ---------------------------------------------------------- */

const char *ssh_errmsg(struct ssh_sess *s);
/* Records "ssh: STAGE: user@host:port: reason" and CODE; SSH_FAILED. */
int ssh_fail(struct ssh_op *op, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A libssh2 call failed with rc: the whole session may be gone. */
int ssh_fail_rc(struct ssh_op *op, const char *code, int rc, const char *what);
int ssh_is_socket_error(int rc);

/* A new operation of `size` bytes (a struct starting with struct ssh_op),
 * or NULL when out of memory. */
struct ssh_op *ssh_op_new(struct ssh_sess *s, int kind, size_t size,
                          int (*step)(struct ssh_op *));
void ssh_op_start(struct ssh_op *op);
void ssh_op_free(struct ssh_op *op);
/* A libuv request that pointed at op ended (see busy). */
void ssh_op_unbusy(struct ssh_op *op);
void ssh_op_finish(struct ssh_op *op, int rc);
/* Queue op, pump once, and wait for it (or answer at once if it ended
 * already).  `keep` stack slots stay below the results. */
int ssh_run_op(lua_State *L, struct ssh_op *op, int keep);

void ssh_pump(struct ssh_sess *s);

/* Runs a session-level request returning a handle under the session lock;
 * SSH_DONE with *out set, SSH_AGAIN, or SSH_FAILED. */
int ssh_locked_open(struct ssh_op *op, void *(*open)(LIBSSH2_SESSION *),
                    void **out, const char *code, const char *what);

/* --- mod_ssh.c ----------------------------------------------------------- */

struct ssh_sess *ssh_check_sess(lua_State *L, int i);
struct ssh_sess *ssh_push_new_sess(lua_State *L);
int ssh_push_not_connected(lua_State *L, struct ssh_sess *s, const char *stage);
void ssh_sess_release(struct ssh_sess *s);
/* Resolves the host and connects the socket, from phase SSH_DIAL_RESOLVE;
 * SSH_DONE once the TCP connection is up. */
int ssh_dial(struct ssh_dial *d);
void ssh_dial_release(struct ssh_dial *d);

/* --- ssh_auth.c ---------------------------------------------------------- */

/* Checks the server's host key against the session's policy. */
int ssh_check_hostkey(struct ssh_op *op);
/* Tries key file, agent, password in turn; SSH_DONE once one worked. */
int ssh_auth(struct ssh_connect *c);
void ssh_auth_end(struct ssh_connect *c);

/* --- the methods and functions of the other files ---------------------- */

extern const luaL_Reg ssh_exec_methods[];
extern const luaL_Reg ssh_sftp_methods[];
extern const luaL_Reg ssh_probe_funcs[];

#endif
