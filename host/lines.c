/* lines: output buffers and line splitting for streamed output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lines.h"
#include "sched.h"

int bm_buf_add(struct bm_buf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *d;
        while (cap < b->len + n + 1)
            cap *= 2;
        d = realloc(b->data, cap);
        if (!d)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void bm_buf_free(struct bm_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void bm_stream_init(struct bm_stream *s, const char *name, size_t max)
{
    memset(s, 0, sizeof *s);
    s->name = name;
    s->max = max;
}

static void emit(struct bm_stream *s, const char *p, size_t n, int ref,
                 const char *who)
{
    lua_State *L = sched_main_state();
    if (ref == LUA_NOREF || ref == LUA_REFNIL)
        return;
    if (n && p[n - 1] == '\r')
        n--;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_pushlstring(L, p, n);
    lua_pushstring(L, s->name);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        fprintf(stderr, "bomarun: on_line callback for %s failed: %s\n", who,
                lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

void bm_stream_feed(struct bm_stream *s, const char *p, size_t n, int ref,
                    const char *who)
{
    const char *nl;
    if (s->all.len + n <= s->max)
        bm_buf_add(&s->all, p, n);
    else
        s->truncated = 1;
    while (n && (nl = memchr(p, '\n', n))) {
        size_t k = (size_t)(nl - p);
        if (s->partial.len) {
            bm_buf_add(&s->partial, p, k);
            emit(s, s->partial.data, s->partial.len, ref, who);
            s->partial.len = 0;
        } else {
            emit(s, p, k, ref, who);
        }
        p += k + 1;
        n -= k + 1;
    }
    if (n)
        bm_buf_add(&s->partial, p, n);
}

void bm_stream_flush(struct bm_stream *s, int ref, const char *who)
{
    if (s->partial.len) {
        emit(s, s->partial.data, s->partial.len, ref, who);
        s->partial.len = 0;
    }
}

void bm_stream_free(struct bm_stream *s)
{
    bm_buf_free(&s->all);
    bm_buf_free(&s->partial);
}

void bm_stream_push(lua_State *L, const struct bm_stream *s)
{
    lua_pushlstring(L, s->all.data ? s->all.data : "", s->all.len);
}
