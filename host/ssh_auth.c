/* ssh_auth: the server's host key against the session's policy (strict
 * known_hosts, accept-new, a pinned fingerprint), then user authentication
 * by key file, agent and password, in that order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssh_int.h"

enum { A_KEY, A_AGENT, A_PASSWORD, A_METHODS };

/* --- host keys ------------------------------------------------------------ */

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

static const char *known_hosts_path(struct ssh_sess *s, char *buf, size_t n)
{
    const char *home = getenv("HOME");
    if (s->known_hosts)
        return s->known_hosts;
    snprintf(buf, n, "%s/.ssh/known_hosts", home ? home : "");
    return buf;
}

/* accept-new: record the key of a host not seen before. */
static int add_known_host(struct ssh_op *op, LIBSSH2_KNOWNHOSTS *kh,
                          const char *file, const char *key, size_t len,
                          int kh_type)
{
    struct ssh_sess *s = op->s;
    char hostname[300];
    int rc;
    if (s->port == 22)
        snprintf(hostname, sizeof hostname, "%s", s->host);
    else
        snprintf(hostname, sizeof hostname, "[%s]:%d", s->host, s->port);
    rc = libssh2_knownhost_addc(kh, hostname, NULL, key, len,
                                "added by bomarun (accept-new)", 29, kh_type,
                                NULL);
    if (rc == 0)
        rc = libssh2_knownhost_writefile(kh, file,
                                         LIBSSH2_KNOWNHOST_FILE_OPENSSH);
    if (rc != 0)
        return ssh_fail(op, "HOSTKEY",
                        "cannot record the new host key in %s: %s", file,
                        ssh_errmsg(s));
    return SSH_DONE;
}

/* The key against known_hosts (or the file the session names). */
static int check_known_hosts(struct ssh_op *op, LIBSSH2_KNOWNHOSTS *kh,
                             const char *key, size_t len, int type)
{
    struct ssh_sess *s = op->s;
    struct libssh2_knownhost *found = NULL;
    char path[1024];
    const char *file = known_hosts_path(s, path, sizeof path);
    int kh_type = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
                  hostkey_to_knownhost(type);
    int rc;
    libssh2_knownhost_readfile(kh, file, LIBSSH2_KNOWNHOST_FILE_OPENSSH);
    rc = libssh2_knownhost_checkp(kh, s->host, s->port, key, len, kh_type,
                                  &found);
    if (rc == LIBSSH2_KNOWNHOST_CHECK_MATCH)
        return SSH_DONE;
    if (rc == LIBSSH2_KNOWNHOST_CHECK_MISMATCH)
        return ssh_fail(op, "HOSTKEY_MISMATCH",
                        "HOST KEY MISMATCH: the server's key %s differs from "
                        "the one recorded in %s; possible man-in-the-middle "
                        "or a rebuilt host; not retrying",
                        s->fingerprint, file);
    if (s->policy != SSH_POLICY_ACCEPT_NEW)
        return ssh_fail(op, "HOSTKEY_UNKNOWN",
                        "host key %s is not in %s (policy strict; use "
                        "accept-new for throwaway hosts)",
                        s->fingerprint, file);
    return add_known_host(op, kh, file, key, len, kh_type);
}

int ssh_check_hostkey(struct ssh_op *op)
{
    struct ssh_sess *s = op->s;
    size_t len;
    int type, rc;
    const char *key = libssh2_session_hostkey(s->ssh, &len, &type);
    const char *hash =
        libssh2_hostkey_hash(s->ssh, LIBSSH2_HOSTKEY_HASH_SHA256);
    LIBSSH2_KNOWNHOSTS *kh;
    op->stage = "host key";
    if (!key || !hash)
        return ssh_fail(op, "HOSTKEY", "the server sent no host key");
    memcpy(s->fingerprint, "SHA256:", 7);
    base64_nopad((const unsigned char *)hash, 32, s->fingerprint + 7);
    if (s->policy == SSH_POLICY_PINNED) {
        if (!s->pin || strcmp(s->pin, s->fingerprint) != 0)
            return ssh_fail(op, "HOSTKEY_MISMATCH",
                            "host key %s does not match the pinned "
                            "fingerprint %s; not retrying",
                            s->fingerprint, s->pin ? s->pin : "(none given)");
        return SSH_DONE;
    }
    kh = libssh2_knownhost_init(s->ssh);
    if (!kh)
        return ssh_fail(op, "HOSTKEY", "cannot start a known_hosts check");
    rc = check_known_hosts(op, kh, key, len, type);
    libssh2_knownhost_free(kh);
    return rc;
}

/* --- authentication ------------------------------------------------------- */

/* Each method returns SSH_AGAIN, SSH_DONE (it worked), SSH_FAILED (stop
 * here), or SSH_PROGRESS: refused or not given, try the next. */

static void note_tried(struct ssh_connect *c, const char *what)
{
    strncat(c->tried, what, sizeof c->tried - strlen(c->tried) - 1);
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

static int auth_key(struct ssh_connect *c)
{
    struct ssh_op *op = &c->dial.op;
    struct ssh_sess *s = op->s;
    int rc;
    if (!s->key)
        return SSH_PROGRESS;
    rc = libssh2_userauth_publickey_fromfile_ex(s->ssh, s->user,
                                                (unsigned)strlen(s->user), NULL,
                                                s->key, s->passphrase);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return SSH_AGAIN;
    if (rc == 0)
        return SSH_DONE;
    if (ssh_is_socket_error(rc))
        return ssh_fail_rc(op, "AUTH", rc, "public key");
    if (rc == LIBSSH2_ERROR_FILE)
        return ssh_fail(op, "KEY_FILE",
                        "cannot use the private key file %s (unreadable, "
                        "bad format, or wrong passphrase)",
                        s->key);
    note_tried(c, is_rsa_key(s->key)
                      ? "publickey(RSA file: this libssh2 signs RSA with "
                        "ssh-rsa/SHA-1 only, which OpenSSH 8.8+ refuses "
                        "unless PubkeyAcceptedAlgorithms +ssh-rsa; prefer an "
                        "ed25519 or ECDSA key) "
                      : "publickey(file) ");
    return SSH_PROGRESS;
}

/* Connects to the agent and takes its first key; 0 if there is none. */
static int agent_start(struct ssh_connect *c)
{
    struct ssh_sess *s = c->dial.op.s;
    c->agent = libssh2_agent_init(s->ssh);
    if (c->agent && s->agent_path)
        libssh2_agent_set_identity_path(c->agent, s->agent_path);
    if (!c->agent || libssh2_agent_connect(c->agent) != 0 ||
        libssh2_agent_list_identities(c->agent) != 0) {
        note_tried(c, "agent(unavailable) ");
        return 0;
    }
    c->ident = NULL;
    if (libssh2_agent_get_identity(c->agent, &c->ident, NULL) != 0) {
        note_tried(c, "agent(no keys) ");
        return 0;
    }
    return 1;
}

static int auth_agent(struct ssh_connect *c)
{
    struct ssh_op *op = &c->dial.op;
    struct ssh_sess *s = op->s;
    int rc;
    if (!s->use_agent)
        return SSH_PROGRESS;
    if (!c->agent && !agent_start(c))
        return SSH_PROGRESS;
    for (;;) {
        rc = libssh2_agent_userauth(c->agent, s->user, c->ident);
        if (rc == LIBSSH2_ERROR_EAGAIN)
            return SSH_AGAIN;
        if (rc == 0)
            return SSH_DONE;
        if (ssh_is_socket_error(rc))
            return ssh_fail_rc(op, "AUTH", rc, "agent");
        if (libssh2_agent_get_identity(c->agent, &c->ident, c->ident) != 0) {
            note_tried(c, "agent ");
            return SSH_PROGRESS;
        }
    }
}

static int auth_password(struct ssh_connect *c)
{
    struct ssh_op *op = &c->dial.op;
    struct ssh_sess *s = op->s;
    int rc;
    if (!s->password)
        return SSH_PROGRESS;
    rc = libssh2_userauth_password_ex(s->ssh, s->user,
                                      (unsigned)strlen(s->user), s->password,
                                      (unsigned)strlen(s->password), NULL);
    if (rc == LIBSSH2_ERROR_EAGAIN)
        return SSH_AGAIN;
    if (rc == 0)
        return SSH_DONE;
    if (ssh_is_socket_error(rc))
        return ssh_fail_rc(op, "AUTH", rc, "password");
    note_tried(c, "password ");
    return SSH_PROGRESS;
}

int ssh_auth(struct ssh_connect *c)
{
    static int (*const methods[A_METHODS])(struct ssh_connect *) = {
        auth_key, auth_agent, auth_password};
    struct ssh_op *op = &c->dial.op;
    size_t n;
    op->stage = "auth";
    while (c->auth_i < A_METHODS) {
        int rc = methods[c->auth_i](c);
        if (rc != SSH_PROGRESS)
            return rc;
        c->auth_i++;
    }
    n = strlen(c->tried);
    if (n == 0)
        return ssh_fail(op, "AUTH",
                        "no authentication method was given (key, agent or "
                        "password)");
    c->tried[n - 1] = '\0';
    return ssh_fail(op, "AUTH",
                    "the server rejected every method tried (%s); not "
                    "retrying",
                    c->tried);
}

void ssh_auth_end(struct ssh_connect *c)
{
    if (!c->agent)
        return;
    libssh2_agent_disconnect(c->agent);
    libssh2_agent_free(c->agent);
    c->agent = NULL;
}
