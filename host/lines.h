/* lines: growable output buffers and the line splitter shared by the
 * bindings that stream a remote or child process's output (proc, ssh). */
#ifndef BOMARUN_LINES_H
#define BOMARUN_LINES_H

#include <stddef.h>

#include <lua.h>

struct bm_buf {
    char *data;
    size_t len, cap;
};

int bm_buf_add(struct bm_buf *b, const char *p, size_t n);
void bm_buf_free(struct bm_buf *b);

/* One output stream: everything collected (up to `max`), and the line in
 * progress.  Each complete line goes to the Lua function in the registry
 * at on_line_ref (if any) as on_line(line, name), called on the main
 * thread: such callbacks cannot wait. */
struct bm_stream {
    struct bm_buf all;
    struct bm_buf partial;
    size_t max;
    int truncated;
    const char *name; /* "stdout" / "stderr" */
};

void bm_stream_init(struct bm_stream *s, const char *name, size_t max);
void bm_stream_feed(struct bm_stream *s, const char *p, size_t n,
                    int on_line_ref, const char *who);
/* Emit the unfinished last line, if any. */
void bm_stream_flush(struct bm_stream *s, int on_line_ref, const char *who);
void bm_stream_free(struct bm_stream *s);
/* Pushes everything the stream collected as one Lua string. */
void bm_stream_push(lua_State *L, const struct bm_stream *s);

#endif
