/* mod_http: HTTP on the loop (bomarun._http), libcurl's multi interface
 * driven by libuv (the pattern of curl's docs/examples/multi-uv.c): curl
 * tells us which sockets to watch (socket callback) and when to call it
 * back (timer callback); libuv tells curl when a socket is ready.  One multi
 * handle per process keeps connections alive between requests.
 *
 * A request yields its task; completion pushes {status, headers, body} or
 * nil, "http: METHOD URL: why", CODE.  A GET/HEAD that fails on a reused
 * connection the server had silently closed is retried once on a fresh
 * connection. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <openssl/evp.h>

#include "lines.h"
#include "mod_http.h"
#include "opts.h"
#include "sched.h"

#define MAX_BODY (256u << 20)
#define WHO "http.request"

struct req {
    CURL *easy;
    struct curl_slist *hdrs;
    char method[16];
    char *url;
    char *body;
    size_t body_len;
    FILE *upload;
    FILE *download;
    char *download_path;
    EVP_MD_CTX *digest; /* output_digest: hashed as it is written */
    struct bm_buf resp;
    struct bm_buf head; /* raw response header lines */
    char errbuf[CURL_ERROR_SIZE];
    int retried;
    int waiting;
    int in_multi;
    uint64_t t0;
    struct bm_wait w;
};

struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
};

static CURLM *g_multi;
static uv_timer_t g_timer;
static int g_inited;
static int g_inflight; /* the timer keeps the loop alive only while > 0 */

static void inflight(int delta)
{
    g_inflight += delta;
    if (g_inflight > 0)
        uv_ref((uv_handle_t *)&g_timer);
    else
        uv_unref((uv_handle_t *)&g_timer);
}

/* --- completion --------------------------------------------------------- */

static void req_free(struct req *r)
{
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    if (r->upload)
        fclose(r->upload);
    if (r->download)
        fclose(r->download);
    EVP_MD_CTX_free(r->digest);
    free(r->download_path);
    free(r->url);
    free(r->body);
    bm_buf_free(&r->resp);
    bm_buf_free(&r->head);
    free(r);
}

/* Pushes the response headers as {lowercased-name = value} (repeated
 * headers joined with ", ") and returns. */
static void push_headers(lua_State *L, struct req *r)
{
    char *p = r->head.data, *end = p ? p + r->head.len : NULL;
    lua_newtable(L);
    while (p && p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl ? nl : end, *colon, *v, *k;
        size_t klen;
        if (line_end > p && line_end[-1] == '\r')
            line_end--;
        colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon && strncmp(p, "HTTP/", 5) != 0) {
            for (k = p; k < colon; k++)
                *k = (char)tolower((unsigned char)*k);
            klen = (size_t)(colon - p);
            v = colon + 1;
            while (v < line_end && (*v == ' ' || *v == '\t'))
                v++;
            lua_pushlstring(L, p, klen);
            if (lua_rawget(L, -2) == LUA_TSTRING) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(line_end - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(line_end - v));
            }
            lua_pushlstring(L, p, klen);
            lua_insert(L, -2);
            lua_rawset(L, -3);
        }
        p = nl ? nl + 1 : end;
    }
}

static const char *code_for(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT: return "REFUSED";
    case CURLE_COULDNT_RESOLVE_HOST: return "RESOLVE";
    case CURLE_OPERATION_TIMEDOUT: return "TIMEOUT";
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE: return "RESET";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE: return "TLS";
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL: return "BAD_URL";
    case CURLE_READ_ERROR:
    case CURLE_WRITE_ERROR: return "LOCAL_FILE";
    default: return "HTTP";
    }
}

/* Pushes the outcome: a response table, or nil, message, CODE. */
static int push_outcome(lua_State *L, struct req *r, CURLcode rc)
{
    long status = 0;
    double dur = (double)(uv_hrtime() - r->t0) / 1e9;
    if (rc != CURLE_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "http: %s %s: %s", r->method, r->url,
                        r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
        lua_pushstring(L, code_for(rc));
        return 3;
    }
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    push_headers(L, r);
    lua_setfield(L, -2, "headers");
    if (!r->download_path) {
        lua_pushlstring(L, r->resp.data ? r->resp.data : "", r->resp.len);
        lua_setfield(L, -2, "body");
    }
    if (r->digest) {
        unsigned char d[EVP_MAX_MD_SIZE];
        char hex[2 * EVP_MAX_MD_SIZE + 1];
        unsigned dn = 0, i;
        EVP_DigestFinal_ex(r->digest, d, &dn);
        for (i = 0; i < dn; i++)
            snprintf(hex + 2 * i, 3, "%02x", d[i]);
        hex[2 * dn] = '\0';
        lua_pushstring(L, hex);
        lua_setfield(L, -2, "digest");
    }
    lua_pushnumber(L, dur);
    lua_setfield(L, -2, "duration");
    lua_pushboolean(L, r->retried);
    lua_setfield(L, -2, "retried");
    lua_pushstring(L, r->url);
    lua_setfield(L, -2, "url");
    return 1;
}

static int idempotent(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 ||
           strcmp(m, "OPTIONS") == 0;
}

/* The connection was reused and the server had closed it: a new one. */
static int should_retry(struct req *r, CURLcode rc)
{
    long fresh = 1;
    if (r->retried || !idempotent(r->method) || r->download || r->upload)
        return 0;
    if (rc != CURLE_SEND_ERROR && rc != CURLE_RECV_ERROR &&
        rc != CURLE_GOT_NOTHING)
        return 0;
    curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &fresh);
    return fresh == 0;
}

static void check_done(void)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(g_multi, &left))) {
        struct req *r;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        curl_multi_remove_handle(g_multi, r->easy);
        r->in_multi = 0;
        inflight(-1);
        if (should_retry(r, msg->data.result)) {
            CURLcode rc = msg->data.result;
            (void)rc;
            r->retried = 1;
            r->resp.len = 0;
            r->head.len = 0;
            r->errbuf[0] = '\0';
            curl_easy_setopt(r->easy, CURLOPT_FRESH_CONNECT, 1L);
            curl_multi_add_handle(g_multi, r->easy);
            r->in_multi = 1;
            inflight(1);
            continue;
        }
        if (r->waiting) {
            lua_State *co = sched_wait_state(&r->w);
            r->waiting = 0;
            sched_complete(&r->w, push_outcome(co, r, msg->data.result));
            /* A transfer can finish inside the curl timer callback, which
             * libuv (1.44) runs before it polls for I/O in the same
             * UV_RUN_ONCE turn: without this the turn would block in the
             * poll (while a child process keeps the loop alive) although
             * the task is ready.  uv_stop makes that poll not wait. */
            uv_stop(sched_loop());
        }
        req_free(r);
    }
}

/* --- libuv <-> libcurl ------------------------------------------------- */

static void on_timeout(uv_timer_t *h)
{
    int running;
    (void)h;
    curl_multi_socket_action(g_multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done();
}

static int start_timeout(CURLM *m, long ms, void *userp)
{
    (void)m;
    (void)userp;
    if (ms < 0)
        uv_timer_stop(&g_timer);
    else
        bm_timer_start(&g_timer, on_timeout, (uint64_t)ms, 0);
    return 0;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock_ctx *c = h->data;
    int running, flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(g_multi, c->fd, flags, &running);
    check_done();
}

static void ctx_closed(uv_handle_t *h) { free(h->data); }

static int handle_socket(CURL *easy, curl_socket_t s, int action, void *userp,
                         void *socketp)
{
    struct sock_ctx *c = socketp;
    int events = 0;
    (void)easy;
    (void)userp;
    if (action == CURL_POLL_REMOVE) {
        if (c) {
            uv_poll_stop(&c->poll);
            uv_close((uv_handle_t *)&c->poll, ctx_closed);
            curl_multi_assign(g_multi, s, NULL);
        }
        return 0;
    }
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return -1;
        c->fd = s;
        uv_poll_init_socket(sched_loop(), &c->poll, s);
        c->poll.data = c;
        curl_multi_assign(g_multi, s, c);
    }
    if (action != CURL_POLL_OUT)
        events |= UV_READABLE;
    if (action != CURL_POLL_IN)
        events |= UV_WRITABLE;
    uv_poll_start(&c->poll, events, on_poll);
    return 0;
}

static void ensure_multi(void)
{
    if (g_inited)
        return;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    g_multi = curl_multi_init();
    curl_multi_setopt(g_multi, CURLMOPT_SOCKETFUNCTION, handle_socket);
    curl_multi_setopt(g_multi, CURLMOPT_TIMERFUNCTION, start_timeout);
    uv_timer_init(sched_loop(), &g_timer);
    uv_unref((uv_handle_t *)&g_timer);
    g_inited = 1;
}

/* --- building a request -------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct req *r = ud;
    size_t len = size * n;
    if (r->download) {
        if (r->digest)
            EVP_DigestUpdate(r->digest, p, len);
        return fwrite(p, 1, len, r->download);
    }
    if (r->resp.len + len > MAX_BODY)
        return 0; /* CURLE_WRITE_ERROR: refuse unbounded bodies */
    bm_buf_add(&r->resp, p, len);
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct req *r = ud;
    size_t len = size * n;
    /* A new status line (redirect, 100 Continue): start over. */
    if (len > 5 && strncmp(p, "HTTP/", 5) == 0)
        r->head.len = 0;
    bm_buf_add(&r->head, p, len);
    return len;
}

static void req_cancel(struct bm_wait *w)
{
    struct req *r = (struct req *)((char *)w - offsetof(struct req, w));
    r->waiting = 0;
    if (r->in_multi) {
        curl_multi_remove_handle(g_multi, r->easy);
        inflight(-1);
    }
    req_free(r);
}

/* The request's options, read before anything is allocated: a wrong one
 * raises. */
struct req_opts {
    const char *method, *url, *body, *body_file, *output_file, *cainfo;
    const char *output_digest;
    const char *client_cert, *client_key;    /* PEM files */
    const char *ca_pem, *cert_pem, *key_pem; /* PEM in memory */
    size_t body_len, ca_pem_len, cert_pem_len, key_pem_len;
    uint64_t timeout_ms, connect_timeout_ms;
    int insecure;
};

static void read_opts(lua_State *L, struct req_opts *o)
{
    o->method = opts_string(L, 1, WHO, "method", "GET");
    o->url = opts_string(L, 1, WHO, "url", NULL);
    if (!o->url)
        luaL_error(L, "http.request: url is required");
    o->body = opts_lstring(L, 1, WHO, "body", NULL, &o->body_len);
    o->body_file = opts_string(L, 1, WHO, "body_file", NULL);
    o->output_file = opts_string(L, 1, WHO, "output_file", NULL);
    o->output_digest = opts_string(L, 1, WHO, "output_digest", NULL);
    o->cainfo = opts_string(L, 1, WHO, "cainfo", NULL);
    o->ca_pem = opts_lstring(L, 1, WHO, "ca_pem", NULL, &o->ca_pem_len);
    o->client_cert = opts_string(L, 1, WHO, "client_cert", NULL);
    o->client_key = opts_string(L, 1, WHO, "client_key", NULL);
    o->cert_pem =
        opts_lstring(L, 1, WHO, "client_cert_pem", NULL, &o->cert_pem_len);
    o->key_pem =
        opts_lstring(L, 1, WHO, "client_key_pem", NULL, &o->key_pem_len);
    o->timeout_ms = opts_ms(L, 1, WHO, "timeout", 60000);
    o->connect_timeout_ms = opts_ms(L, 1, WHO, "connect_timeout", 10000);
    o->insecure = opts_boolean(L, 1, WHO, "insecure", 0);
    if (opts_push_table(L, 1, WHO, "headers")) /* checked; set_headers */
        lua_pop(L, 1);
}

/* Adds opts.headers (checked by read_opts) to the request. */
static void set_headers(lua_State *L, struct req *r)
{
    if (opts_push_table(L, 1, WHO, "headers")) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                const char *k = lua_tostring(L, -2);
                const char *v = luaL_tolstring(L, -1, NULL);
                lua_pushfstring(L, "%s: %s", k, v);
                r->hdrs = curl_slist_append(r->hdrs, lua_tostring(L, -1));
                lua_pop(L, 2);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    /* No 100-continue round trip before uploads. */
    r->hdrs = curl_slist_append(r->hdrs, "Expect:");
}

/* Pushes nil, "http: METHOD URL: cannot VERB PATH", "LOCAL_FILE". */
static int file_failed(lua_State *L, struct req *r, const char *verb,
                       const char *path)
{
    lua_pushnil(L);
    lua_pushfstring(L, "http: %s %s: cannot %s %s", r->method, r->url, verb,
                    path);
    lua_pushliteral(L, "LOCAL_FILE");
    return 3;
}

static int open_files(lua_State *L, struct req *r, const struct req_opts *o)
{
    if (o->body_file) {
        r->upload = fopen(o->body_file, "rb");
        if (!r->upload)
            return file_failed(L, r, "read", o->body_file);
    }
    if (o->output_file) {
        r->download = fopen(o->output_file, "wb");
        r->download_path = strdup(o->output_file);
        if (!r->download)
            return file_failed(L, r, "write", o->output_file);
        if (o->output_digest) {
            const EVP_MD *md = EVP_get_digestbyname(o->output_digest);
            if (!md)
                return luaL_error(L, "http.request: unknown output_digest %s",
                                  o->output_digest);
            r->digest = EVP_MD_CTX_new();
            EVP_DigestInit_ex(r->digest, md, NULL);
        }
    }
    return 0;
}

static void set_body(struct req *r)
{
    CURL *e = r->easy;
    if (r->upload) {
        long size;
        fseek(r->upload, 0, SEEK_END);
        size = ftell(r->upload);
        fseek(r->upload, 0, SEEK_SET);
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READDATA, r->upload);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)size);
    } else if (r->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)r->body_len);
    }
    if (strcmp(r->method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(r->method, "GET") != 0 || r->body)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
}

/* Sets a PEM blob option; curl copies the bytes, so the Lua string need
 * only live until the request is added. */
static void set_blob(CURL *e, CURLoption opt, const char *pem, size_t len)
{
    struct curl_blob b;
    b.data = (void *)(uintptr_t)pem;
    b.len = len;
    b.flags = CURL_BLOB_COPY;
    curl_easy_setopt(e, opt, &b);
}

/* TLS trust and client identity: a CA file or PEM text, a client
 * certificate and key as files or PEM text (kubeconfig *-data fields;
 * the key never touches the disk). */
static void set_tls(CURL *e, const struct req_opts *o)
{
    if (o->cainfo)
        curl_easy_setopt(e, CURLOPT_CAINFO, o->cainfo);
    if (o->ca_pem)
        set_blob(e, CURLOPT_CAINFO_BLOB, o->ca_pem, o->ca_pem_len);
    if (o->client_cert)
        curl_easy_setopt(e, CURLOPT_SSLCERT, o->client_cert);
    if (o->cert_pem) {
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
        set_blob(e, CURLOPT_SSLCERT_BLOB, o->cert_pem, o->cert_pem_len);
    }
    if (o->client_key)
        curl_easy_setopt(e, CURLOPT_SSLKEY, o->client_key);
    if (o->key_pem) {
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
        set_blob(e, CURLOPT_SSLKEY_BLOB, o->key_pem, o->key_pem_len);
    }
    if (o->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}

static void set_options(struct req *r, const struct req_opts *o)
{
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)o->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "bomarun/" BOMARUN_VERSION);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    set_tls(e, o);
}

/* request{method=, url=, headers=, body=, body_file=, output_file=,
 *         timeout=, connect_timeout=, cainfo=, ca_pem=, client_cert=,
 *         client_key=, client_cert_pem=, client_key_pem=, insecure=}
 *   -> {status, headers, body, duration, retried, url} | nil, msg, CODE */
static int l_http_request(lua_State *L)
{
    struct req_opts o;
    struct req *r;
    int rc;
    luaL_checktype(L, 1, LUA_TTABLE);
    sched_check_await(L, WHO);
    read_opts(L, &o);
    ensure_multi();
    r = calloc(1, sizeof *r);
    if (!r)
        return luaL_error(L, "http: out of memory");
    snprintf(r->method, sizeof r->method, "%s", o.method);
    r->url = strdup(o.url);
    if (o.body && (r->body = malloc(o.body_len + 1))) {
        memcpy(r->body, o.body, o.body_len);
        r->body_len = o.body_len;
    }
    if ((rc = open_files(L, r, &o))) {
        req_free(r);
        return rc;
    }
    r->easy = curl_easy_init();
    set_options(r, &o);
    set_headers(L, r);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->hdrs);
    set_body(r);
    r->t0 = uv_hrtime();
    r->w.cancel = req_cancel;
    r->waiting = 1;
    curl_multi_add_handle(g_multi, r->easy);
    r->in_multi = 1;
    inflight(1);
    lua_settop(L, 0);
    return sched_await(L, &r->w);
}

static const luaL_Reg http_funcs[] = {
    {"request", l_http_request},
    {NULL, NULL},
};

int luaopen_bomarun__http(lua_State *L)
{
    luaL_newlib(L, http_funcs);
    lua_pushstring(L, curl_version());
    lua_setfield(L, -2, "curl_version");
    return 1;
}
