/* ssh_probe: the banner probe behind ssh.wait_for_port: connect over TCP
 * and read the server's first line, without speaking ssh.  It runs as an
 * operation of a throwaway session, so it shares the dialling and the
 * timeouts of a connect. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "opts.h"
#include "ssh_int.h"

#define WHO "ssh.wait_for_port"

struct ssh_probe {
    struct ssh_dial dial;
    char line[256];
};

/* Reads what came; SSH_DONE once a whole line (or a full buffer) is in. */
static int read_banner(struct ssh_probe *p)
{
    struct ssh_op *op = &p->dial.op;
    char buf[256];
    size_t have;
    ssize_t n = recv(op->s->fd, buf, sizeof buf - 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return SSH_AGAIN;
    if (n < 0)
        return ssh_fail(op, errno == ECONNRESET ? "RESET" : "CONNECT", "%s",
                        strerror(errno));
    if (n == 0)
        return ssh_fail(op, "CLOSED",
                        "the server closed the connection before sending a "
                        "banner");
    have = strlen(p->line);
    snprintf(p->line + have, sizeof p->line - have, "%.*s", (int)n, buf);
    if (strchr(p->line, '\n') || strlen(p->line) >= sizeof p->line - 1) {
        char *nl = strpbrk(p->line, "\r\n");
        if (nl)
            *nl = '\0';
        return SSH_DONE;
    }
    return SSH_PROGRESS;
}

static int step_banner(struct ssh_op *op)
{
    struct ssh_probe *p = (struct ssh_probe *)op;
    int rc;
    if (op->cancelled)
        return ssh_fail(op, "CANCELLED", "cancelled");
    if (op->timed_out)
        return ssh_fail(op, "TIMEOUT", "timed out after %.3g s",
                        (double)op->timeout_ms / 1000.0);
    if (op->phase != SSH_B_READ) {
        rc = ssh_dial(&p->dial);
        if (rc != SSH_DONE)
            return rc;
        op->phase = SSH_B_READ;
        op->stage = "banner";
    }
    return read_banner(p);
}

static void push_banner(lua_State *L, struct ssh_op *op)
{
    lua_pushstring(L, ((struct ssh_probe *)op)->line);
}

static void release_banner(struct ssh_op *op)
{
    ssh_dial_release(&((struct ssh_probe *)op)->dial);
}

/* banner{host=, port=, timeout=} -> banner line | nil, msg, CODE */
static int l_ssh_banner(lua_State *L)
{
    struct ssh_sess *s;
    struct ssh_op *op;
    const char *host;
    int port;
    uint64_t timeout_ms;
    luaL_checktype(L, 1, LUA_TTABLE);
    sched_check_await(L, WHO);
    host = opts_string(L, 1, WHO, "host", NULL);
    if (!host)
        return opts_error(L, WHO, "host", "a string");
    port = (int)opts_integer(L, 1, WHO, "port", 22);
    timeout_ms = opts_ms(L, 1, WHO, "timeout", 5000);
    s = ssh_push_new_sess(L);
    snprintf(s->host, sizeof s->host, "%s", host);
    snprintf(s->user, sizeof s->user, "%s", "(probe)");
    s->port = port;
    op = ssh_op_new(s, SSH_K_BANNER, sizeof(struct ssh_probe), step_banner);
    if (!op)
        return luaL_error(L, "ssh: out of memory");
    op->stage = "connect";
    op->push = push_banner;
    op->release = release_banner;
    op->timeout_ms = timeout_ms;
    lua_pushvalue(L, -1);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return ssh_run_op(L, op, 0);
}

const luaL_Reg ssh_probe_funcs[] = {
    {"banner", l_ssh_banner},
    {NULL, NULL},
};
