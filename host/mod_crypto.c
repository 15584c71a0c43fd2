/* bomarun._crypto: digests, base64, and a private key with its CSR, on
 * OpenSSL's libcrypto (already linked through libcurl and libssh2).
 *
 * Work that can take long (hashing a file of gigabytes, making an RSA key)
 * runs on libuv's thread pool while the task waits; a cancelled wait
 * abandons the job, whose result is then dropped when the pool hands it
 * back.  Short work on strings in memory runs in place. */
#include "mod_crypto.h"
#include "sched.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#define HASHER_MT "bomarun.hasher"
#define MAX_SUBJECT 8

/* --- helpers ------------------------------------------------------------ */

static const EVP_MD *check_md(lua_State *L, int i)
{
    const char *name = luaL_checkstring(L, i);
    const EVP_MD *md = EVP_get_digestbyname(name);
    if (!md)
        luaL_error(
            L, "crypto: unknown digest '%s' (sha512, sha256, sha1, md5, ...)",
            name);
    return md;
}

static void to_hex(const unsigned char *d, unsigned n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned i;
    for (i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The last libcrypto error as text (or `fallback`). */
static void ssl_error(char *buf, size_t n, const char *fallback)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, n);
    else
        snprintf(buf, n, "%s", fallback);
    ERR_clear_error();
}

/* --- digest(algo, data) -> hex ------------------------------------------ */

static int l_crypto_digest(lua_State *L)
{
    const EVP_MD *md = check_md(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    unsigned char d[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned dn = 0;
    if (!EVP_Digest(s, n, d, &dn, md, NULL))
        return luaL_error(L, "crypto.digest: libcrypto failed");
    to_hex(d, dn, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* --- hasher(algo) -> h ; h:update(s) -> h ; h:hex() -> hex --------------- */

struct hasher {
    EVP_MD_CTX *ctx;
    int done;
};

static struct hasher *check_hasher(lua_State *L)
{
    struct hasher *h = luaL_checkudata(L, 1, HASHER_MT);
    if (!h->ctx)
        luaL_error(L, "crypto: hasher is closed");
    return h;
}

static int l_crypto_hasher(lua_State *L)
{
    const EVP_MD *md = check_md(L, 1);
    struct hasher *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->ctx = NULL; /* created closed, then opened */
    h->done = 0;
    luaL_setmetatable(L, HASHER_MT);
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || !EVP_DigestInit_ex(h->ctx, md, NULL))
        return luaL_error(L, "crypto.hasher: libcrypto failed");
    return 1;
}

static int l_hasher_update(lua_State *L)
{
    struct hasher *h = check_hasher(L);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (h->done)
        return luaL_error(L, "crypto: hasher:update after hex()");
    EVP_DigestUpdate(h->ctx, s, n);
    lua_settop(L, 1);
    return 1;
}

static int l_hasher_hex(lua_State *L)
{
    struct hasher *h = check_hasher(L);
    unsigned char d[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned dn = 0;
    if (h->done)
        return luaL_error(L, "crypto: hasher:hex called twice");
    h->done = 1;
    EVP_DigestFinal_ex(h->ctx, d, &dn);
    to_hex(d, dn, hex);
    lua_pushstring(L, hex);
    return 1;
}

static int l_hasher_gc(lua_State *L)
{
    struct hasher *h = luaL_checkudata(L, 1, HASHER_MT);
    if (h->ctx) {
        EVP_MD_CTX_free(h->ctx);
        h->ctx = NULL;
    }
    return 0;
}

/* --- base64 ------------------------------------------------------------- */

/* b64encode(s) -> text (one line) */
static int l_crypto_b64encode(lua_State *L)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, 4 * ((n + 2) / 3) + 1);
    int w = EVP_EncodeBlock((unsigned char *)out, s, (int)n);
    luaL_pushresultsize(&b, (size_t)w);
    return 1;
}

/* b64decode(text) -> s | nil, msg, "INVALID" (whitespace is ignored) */
static int l_crypto_b64decode(lua_State *L)
{
    size_t n, i, k = 0;
    const char *s = luaL_checklstring(L, 1, &n);
    char *clean = malloc(n + 1), *out;
    int w, pad = 0;
    if (!clean)
        return luaL_error(L, "crypto.b64decode: out of memory");
    for (i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t')
            clean[k++] = s[i];
    out = malloc(k / 4 * 3 + 3);
    if (!out || k % 4 != 0) {
        free(clean);
        free(out);
        lua_pushnil(L);
        lua_pushstring(
            L, "crypto.b64decode: not base64 (length is not a multiple of 4)");
        lua_pushliteral(L, "INVALID");
        return 3;
    }
    w = EVP_DecodeBlock((unsigned char *)out, (unsigned char *)clean, (int)k);
    if (k >= 1 && clean[k - 1] == '=')
        pad++;
    if (k >= 2 && clean[k - 2] == '=')
        pad++;
    free(clean);
    if (w < 0) {
        free(out);
        lua_pushnil(L);
        lua_pushstring(L, "crypto.b64decode: not base64");
        lua_pushliteral(L, "INVALID");
        return 3;
    }
    lua_pushlstring(L, out, (size_t)(w - pad));
    free(out);
    return 1;
}

/* --- jobs on the thread pool ------------------------------------------- */

enum job_kind { JOB_FILE_DIGEST, JOB_KEY_CSR };

struct job {
    uv_work_t req;
    struct bm_wait w;
    enum job_kind kind;
    int abandoned; /* the task stopped waiting: drop the result */
    int ok;
    char err[300];
    /* JOB_FILE_DIGEST */
    const EVP_MD *md;
    char *path;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    /* JOB_KEY_CSR */
    int bits;
    int nsubj;
    char *subj[MAX_SUBJECT][2];
    char *key_pem, *csr_pem;
};

static void job_free(struct job *j)
{
    int i;
    free(j->path);
    for (i = 0; i < j->nsubj; i++) {
        free(j->subj[i][0]);
        free(j->subj[i][1]);
    }
    free(j->key_pem);
    free(j->csr_pem);
    free(j);
}

static void file_digest_work(struct job *j)
{
    unsigned char buf[1 << 16], d[EVP_MAX_MD_SIZE];
    unsigned dn = 0;
    size_t n;
    FILE *f = fopen(j->path, "rb");
    EVP_MD_CTX *ctx;
    if (!f) {
        snprintf(j->err, sizeof j->err, "crypto: cannot open %s: %s", j->path,
                 strerror(errno));
        return;
    }
    ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, j->md, NULL);
    while (!j->abandoned && (n = fread(buf, 1, sizeof buf, f)) > 0)
        EVP_DigestUpdate(ctx, buf, n);
    if (ferror(f))
        snprintf(j->err, sizeof j->err, "crypto: reading %s: %s", j->path,
                 strerror(errno));
    else {
        EVP_DigestFinal_ex(ctx, d, &dn);
        to_hex(d, dn, j->hex);
        j->ok = 1;
    }
    EVP_MD_CTX_free(ctx);
    fclose(f);
}

/* PEM text of what `write` puts in a memory BIO, malloc'd. */
static char *pem_of(BIO *bio)
{
    char *data, *out;
    long n = BIO_get_mem_data(bio, &data);
    out = malloc((size_t)n + 1);
    if (out) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
    }
    return out;
}

static int build_csr(struct job *j, EVP_PKEY *key, X509_REQ *req)
{
    X509_NAME *name = X509_REQ_get_subject_name(req);
    int i;
    for (i = 0; i < j->nsubj; i++)
        if (!X509_NAME_add_entry_by_txt(name, j->subj[i][0], MBSTRING_UTF8,
                                        (unsigned char *)j->subj[i][1], -1, -1,
                                        0))
            return 0;
    return X509_REQ_set_version(req, 0) && X509_REQ_set_pubkey(req, key) &&
           X509_REQ_sign(req, key, EVP_sha256()) > 0;
}

static void key_csr_work(struct job *j)
{
    EVP_PKEY *key = EVP_RSA_gen((unsigned)j->bits);
    X509_REQ *req = X509_REQ_new();
    BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
    if (!key || !req || !kb || !cb || !build_csr(j, key, req) ||
        !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
        !PEM_write_bio_X509_REQ(cb, req))
        ssl_error(j->err, sizeof j->err, "crypto: cannot make the key and CSR");
    else {
        j->key_pem = pem_of(kb);
        j->csr_pem = pem_of(cb);
        j->ok = j->key_pem && j->csr_pem;
    }
    BIO_free(kb);
    BIO_free(cb);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
}

static void job_work(uv_work_t *req)
{
    struct job *j = req->data;
    if (j->kind == JOB_FILE_DIGEST)
        file_digest_work(j);
    else
        key_csr_work(j);
}

static int push_job_result(lua_State *co, struct job *j)
{
    if (!j->ok) {
        lua_pushnil(co);
        lua_pushstring(co, j->err);
        lua_pushstring(co,
                       j->kind == JOB_FILE_DIGEST ? "LOCAL_FILE" : "CRYPTO");
        return 3;
    }
    if (j->kind == JOB_FILE_DIGEST) {
        lua_pushstring(co, j->hex);
        return 1;
    }
    lua_pushstring(co, j->key_pem);
    lua_pushstring(co, j->csr_pem);
    return 2;
}

static void job_done(uv_work_t *req, int status)
{
    struct job *j = req->data;
    if (!j->abandoned && status == 0) {
        lua_State *co = sched_wait_state(&j->w);
        sched_complete(&j->w, push_job_result(co, j));
    }
    job_free(j);
}

/* The task was cancelled: the pool still owns the job; its result is
 * dropped in job_done (a job not started yet is not run at all). */
static void job_cancel(struct bm_wait *w)
{
    struct job *j = (struct job *)((char *)w - offsetof(struct job, w));
    j->abandoned = 1;
    uv_cancel((uv_req_t *)&j->req);
}

static int job_start(lua_State *L, struct job *j)
{
    j->req.data = j;
    j->w.cancel = job_cancel;
    if (uv_queue_work(sched_loop(), &j->req, job_work, job_done) != 0) {
        job_free(j);
        return luaL_error(L, "crypto: cannot queue work on the thread pool");
    }
    return sched_await(L, &j->w);
}

static struct job *job_new(lua_State *L, enum job_kind kind)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        luaL_error(L, "crypto: out of memory");
    j->kind = kind;
    return j;
}

/* digest_file(algo, path) -> hex | nil, msg, "LOCAL_FILE" (a wait) */
static int l_crypto_digest_file(lua_State *L)
{
    const EVP_MD *md = check_md(L, 1);
    const char *path = luaL_checkstring(L, 2);
    struct job *j;
    sched_check_await(L, "crypto.digest_file");
    j = job_new(L, JOB_FILE_DIGEST);
    j->md = md;
    j->path = strdup(path);
    return job_start(L, j);
}

/* key_and_csr(bits, {{"CN", "admin"}, {"O", "system:masters"}, ...})
 *   -> key_pem, csr_pem | nil, msg, "CRYPTO" (a wait) */
static int l_crypto_key_and_csr(lua_State *L)
{
    lua_Integer bits = luaL_checkinteger(L, 1);
    struct job *j;
    int i, n;
    luaL_argcheck(L, bits >= 2048 && bits <= 8192, 1,
                  "RSA bits must be 2048..8192");
    luaL_checktype(L, 2, LUA_TTABLE);
    n = (int)luaL_len(L, 2);
    luaL_argcheck(L, n <= MAX_SUBJECT, 2, "at most 8 subject entries");
    for (i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        luaL_argcheck(L, lua_istable(L, -1), 2,
                      "each subject entry is {field, value}");
        lua_geti(L, -1, 1);
        lua_geti(L, -2, 2);
        luaL_argcheck(
            L, lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING,
            2, "each subject entry is {field, value}, both strings");
        lua_pop(L, 3);
    }
    sched_check_await(L, "crypto.key_and_csr");
    j = job_new(L, JOB_KEY_CSR);
    j->bits = (int)bits;
    for (i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        lua_geti(L, -1, 1);
        lua_geti(L, -2, 2);
        j->subj[j->nsubj][0] = strdup(lua_tostring(L, -2));
        j->subj[j->nsubj][1] = strdup(lua_tostring(L, -1));
        j->nsubj++;
        lua_pop(L, 3);
    }
    return job_start(L, j);
}

static const luaL_Reg hasher_methods[] = {
    {"update", l_hasher_update}, {"hex", l_hasher_hex}, {NULL, NULL}};

static const luaL_Reg hasher_meta[] = {
    {"__gc", l_hasher_gc}, {"__close", l_hasher_gc}, {NULL, NULL}};

static const luaL_Reg crypto_funcs[] = {{"digest", l_crypto_digest},
                                        {"hasher", l_crypto_hasher},
                                        {"digest_file", l_crypto_digest_file},
                                        {"b64encode", l_crypto_b64encode},
                                        {"b64decode", l_crypto_b64decode},
                                        {"key_and_csr", l_crypto_key_and_csr},
                                        {NULL, NULL}};

int luaopen_bomarun__crypto(lua_State *L)
{
    luaL_newmetatable(L, HASHER_MT);
    luaL_setfuncs(L, hasher_meta, 0);
    luaL_newlib(L, hasher_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, crypto_funcs);
    return 1;
}
