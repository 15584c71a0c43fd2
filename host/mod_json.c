/*
 * mod_json.c - the bomarun._json Lua module: JSON <-> Lua values over jansson.
 *
 * Mapping (encode(decode(text)) gives back an equal document):
 *   object   <-> table with metatable object_mt
 *                (registry "bomarun.json.object")
 *   array    <-> table with metatable array_mt  (registry "bomarun.json.array")
 *   string   <-> string (must be valid UTF-8 when encoding; NUL bytes allowed)
 *   integer  <-> integer subtype number
 *   real     <-> float subtype number (2.0 encodes as 2.0, never as 2)
 *   true/false <-> boolean
 *   null     <-> json.null, a unique light userdata (nil cannot live in tables)
 *
 * Unmarked tables (no json metatable) are classified by their keys: exactly
 * 1..n (n > 0) is an array, only string keys is an object, and the empty
 * table is an object "{}" - use json.array() for "[]".  Object keys are
 * sorted by default so output is deterministic (Lua's traversal order is
 * not); pass sort_keys = false to get traversal order instead.
 *
 * Memory: every jansson tree and dumped string lives in a "box" userdata
 * that is to-be-closed and has __gc, so a Lua error raised half way through
 * a conversion (bad value, out of memory) cannot leak it.
 */
#include "mod_json.h"

#include <jansson.h>
#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_MT "bomarun.json.array"
#define OBJECT_MT "bomarun.json.object"
#define BOX_MT "bomarun.json.box"

/*
 * Encode nesting limit.  It bounds our C recursion on self-built deep
 * tables, and equals jansson's parser limit so that everything decode
 * accepts can be encoded again.
 */
#define MAX_DEPTH JSON_PARSER_MAX_DEPTH

/* Error paths keep this many steps at each end of a deeper path. */
#define PATH_SHOWN 16

/* Stack slots one encode level may use (child, lua_next pair, path, error). */
#define LEVEL_SLOTS 8

/* Only the address matters: it is the identity of json.null. */
static char null_sentinel;
#define NULL_SENTINEL ((void *)&null_sentinel)

/*
 * Raise "json: <message>" without luaL_error's position prefix: that would
 * name the bomarun.json wrapper rather than the caller, and the encoder's
 * path errors use the same plain form.
 */
static int raise_error(lua_State *L, const char *fmt, ...)
{
    va_list ap;

    lua_pushliteral(L, "json: ");
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

/* ------------------------------------------------------------------ */
/* Box: owner of jansson memory while Lua code may still longjmp out. */

struct json_box {
    json_t *root;
    char *text;
};

static void box_clear(struct json_box *box)
{
    json_decref(box->root); /* NULL-safe */
    box->root = NULL;
    if (box->text != NULL) {
        /* json_dumps() text comes from jansson's (replaceable) allocator. */
        json_free_t free_fn;
        json_get_alloc_funcs(NULL, &free_fn);
        free_fn(box->text);
        box->text = NULL;
    }
}

/* __gc / __close: (box [, err]) -> () */
static int l_json_box_release(lua_State *L)
{
    box_clear(luaL_checkudata(L, 1, BOX_MT));
    return 0;
}

/* [-0, +1] push an empty box and mark its slot to-be-closed */
static struct json_box *push_box(lua_State *L)
{
    struct json_box *box = lua_newuserdatauv(L, sizeof *box, 0);

    box->root = NULL;
    box->text = NULL;
    luaL_setmetatable(L, BOX_MT);
    lua_toclose(L, -1);
    return box;
}

/* ------------------------------------------------------------------ */
/* Options */

/* Reject unknown option names: a typo would otherwise be silently ignored. */
static void check_option_names(lua_State *L, int idx, const char *const names[])
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            raise_error(L, "option names must be strings");
        const char *key = lua_tostring(L, -1);
        int known = 0;
        for (int i = 0; names[i] != NULL && !known; i++)
            known = strcmp(key, names[i]) == 0;
        if (!known)
            raise_error(L, "unknown option '%s'", key);
    }
}

/* Boolean option at opts[name]; absent means dflt. */
static int bool_option(lua_State *L, int idx, const char *name, int dflt)
{
    int value = dflt;

    if (lua_getfield(L, idx, name) != LUA_TNIL)
        value = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return value;
}

/* Integer option at opts[name] within [lo, hi]; absent means dflt. */
static int int_option(lua_State *L, int idx, const char *name, int lo, int hi,
                      int dflt)
{
    int value = dflt;

    if (lua_getfield(L, idx, name) != LUA_TNIL) {
        int isint;
        lua_Integer n = lua_tointegerx(L, -1, &isint);
        if (!isint || n < lo || n > hi)
            raise_error(L, "option '%s' must be an integer from %d to %d", name,
                        lo, hi);
        value = (int)n;
    }
    lua_pop(L, 1);
    return value;
}

/* Validate the optional opts table at idx; returns 0 if absent. */
static int have_options(lua_State *L, int idx, const char *const names[])
{
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    check_option_names(L, idx, names);
    return 1;
}

static size_t decode_flags(lua_State *L, int idx)
{
    static const char *const names[] = {"reject_duplicates", NULL};
    /* DECODE_ANY: scalars are documents too; ALLOW_NUL: Lua strings hold \0. */
    size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL;

    if (have_options(L, idx, names) &&
        bool_option(L, idx, "reject_duplicates", 0))
        flags |= JSON_REJECT_DUPLICATES;
    return flags;
}

static size_t encode_flags(lua_State *L, int idx)
{
    static const char *const names[] = {"indent", "sort_keys", "ensure_ascii",
                                        NULL};
    size_t flags = JSON_ENCODE_ANY | JSON_SORT_KEYS | JSON_COMPACT;

    if (!have_options(L, idx, names))
        return flags;
    int indent = int_option(L, idx, "indent", 0, JSON_MAX_INDENT, 0);
    if (indent > 0)
        flags = (flags & ~(size_t)JSON_COMPACT) | JSON_INDENT(indent);
    if (!bool_option(L, idx, "sort_keys", 1))
        flags &= ~(size_t)JSON_SORT_KEYS;
    if (bool_option(L, idx, "ensure_ascii", 0))
        flags |= JSON_ENSURE_ASCII;
    return flags;
}

/* ------------------------------------------------------------------ */
/* Decode: jansson tree -> Lua values */

static void push_json(lua_State *L, json_t *value);

/* [-0, +1] */
static void push_array(lua_State *L, json_t *array)
{
    size_t n = json_array_size(array);

    lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
    luaL_setmetatable(L, ARRAY_MT);
    for (size_t i = 0; i < n; i++) {
        push_json(L, json_array_get(array, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* [-0, +1] */
static void push_object(lua_State *L, json_t *object)
{
    size_t n = json_object_size(object);
    const char *key;
    size_t key_len;
    json_t *value;

    lua_createtable(L, 0, n > INT_MAX ? INT_MAX : (int)n);
    luaL_setmetatable(L, OBJECT_MT);
    json_object_keylen_foreach (object, key, key_len, value) {
        lua_pushlstring(L, key, key_len);
        push_json(L, value);
        lua_rawset(L, -3);
    }
}

/* [-0, +1] recursion depth is bounded by jansson's JSON_PARSER_MAX_DEPTH */
static void push_json(lua_State *L, json_t *value)
{
    luaL_checkstack(L, 3, "json: document nested too deeply");
    switch (json_typeof(value)) {
    case JSON_OBJECT: push_object(L, value); break;
    case JSON_ARRAY: push_array(L, value); break;
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(value), json_string_length(value));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(value));
        break;
    case JSON_REAL:
        lua_pushnumber(L, (lua_Number)json_real_value(value));
        break;
    case JSON_TRUE: lua_pushboolean(L, 1); break;
    case JSON_FALSE: lua_pushboolean(L, 0); break;
    case JSON_NULL: lua_pushlightuserdata(L, NULL_SENTINEL); break;
    }
}

/* decode(text [, opts]) -> value | nil, "json: LINE:COL: reason", "JSON" */
static int l_json_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    size_t flags = decode_flags(L, 2);
    json_error_t err;

    lua_settop(L, 2);
    struct json_box *box = push_box(L);
    /* loadb, not loads: the text may contain NUL bytes. */
    box->root = json_loadb(text, len, flags, &err);
    if (box->root == NULL) {
        /*
         * Running out of memory is not a property of the input.  jansson
         * leaves the text empty when it fails to allocate its lexer.
         */
        if (json_error_code(&err) == json_error_out_of_memory ||
            err.text[0] == '\0')
            return raise_error(L, "out of memory");
        lua_pushnil(L);
        lua_pushfstring(L, "json: %d:%d: %s", err.line, err.column, err.text);
        lua_pushliteral(L, "JSON");
        return 3;
    }
    push_json(L, box->root);
    box_clear(box); /* free the tree now rather than at the closing return */
    return 1;
}

/* ------------------------------------------------------------------ */
/* Encode: Lua values -> jansson tree */

struct encoder {
    lua_State *L;
    int path;      /* stack index: path[d] = key leading to depth d */
    int visiting;  /* stack index: set of tables on the current path */
    int depth;     /* nesting of the value being converted; root is 0 */
    int precision; /* significant digits all reals need to round-trip */
};

/* How a table is marked by its metatable. */
enum mark { MARK_NONE, MARK_ARRAY, MARK_OBJECT, MARK_FOREIGN };

static enum mark table_mark(lua_State *L, int idx)
{
    enum mark mark = MARK_FOREIGN;

    if (!lua_getmetatable(L, idx))
        return MARK_NONE;
    luaL_getmetatable(L, ARRAY_MT);
    if (lua_rawequal(L, -1, -2))
        mark = MARK_ARRAY;
    lua_pop(L, 1);
    luaL_getmetatable(L, OBJECT_MT);
    if (lua_rawequal(L, -1, -2))
        mark = MARK_OBJECT;
    lua_pop(L, 2);
    return mark;
}

static int is_identifier(const char *s, size_t len)
{
    if (len == 0 || !(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') ||
                      (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

/* [-0, +1] render one path step: .name, ["other key"] or [index] */
static void push_path_step(lua_State *L, int path, int depth)
{
    size_t len;

    if (lua_rawgeti(L, path, depth) == LUA_TNUMBER) {
        lua_pushfstring(L, "[%I]", (LUAI_UACINT)lua_tointeger(L, -1));
    } else {
        const char *key = lua_tolstring(L, -1, &len);
        if (is_identifier(key, len)) {
            lua_pushfstring(L, ".%s", key);
        } else {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            luaL_addstring(&b, "[\"");
            for (size_t i = 0; i < len; i++) {
                if (key[i] == '"' || key[i] == '\\')
                    luaL_addchar(&b, '\\');
                luaL_addchar(&b, key[i]);
            }
            luaL_addstring(&b, "\"]");
            luaL_pushresult(&b);
        }
    }
    lua_remove(L, -2);
}

/* [-0, +1] the JSONPath-like location of the current value, e.g. $.a[3] */
static void push_path(struct encoder *e)
{
    lua_State *L = e->L;
    luaL_Buffer b;

    luaL_buffinit(L, &b);
    luaL_addchar(&b, '$');
    for (int d = 1; d <= e->depth; d++) {
        if (d == PATH_SHOWN + 1 && e->depth > 2 * PATH_SHOWN) {
            luaL_addstring(&b, "...");
            d = e->depth - PATH_SHOWN + 1;
        }
        push_path_step(L, e->path, d);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
}

/* Raise "json: <message> at <path>"; the box frees the partial tree. */
static int encode_error(struct encoder *e, const char *fmt, ...)
{
    lua_State *L = e->L;
    va_list ap;

    luaL_checkstack(L, 12, "json: value nested too deeply");
    lua_pushliteral(L, "json: ");
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_pushliteral(L, " at ");
    push_path(e);
    lua_concat(L, 4);
    return lua_error(L);
}

static int out_of_memory(struct encoder *e)
{
    return encode_error(e, "out of memory");
}

/*
 * jansson's own UTF-8 check is not public and its constructors return NULL
 * for both bad UTF-8 and out-of-memory; checking here keeps the two errors
 * apart.  Same rules as jansson: no overlong forms, no surrogates, and
 * nothing above U+10FFFF.
 */
static int utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    while (i < len) {
        uint32_t c = s[i], min;
        size_t extra;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            extra = 1;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3;
            min = 0x10000;
        } else {
            return 0;
        }
        c &= 0x3Fu >> extra; /* payload bits of the lead byte */
        if (len - i - 1 < extra)
            return 0;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        i += extra + 1;
    }
    return 1;
}

/*
 * Fewest significant digits (15..17) with which x survives a print/parse
 * round trip.  jansson prints every real in a document with one precision,
 * so we use the largest any real needs: 0.1 stays "0.1" instead of %.17g's
 * "0.10000000000000001", unless some other real needs all 17 digits.
 */
static int real_digits(double x)
{
    char buf[40];

    for (int digits = 15; digits < 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, x);
        if (strtod(buf, NULL) == x)
            return digits;
    }
    return 17;
}

static json_t *new_number(struct encoder *e, int idx)
{
    lua_State *L = e->L;

    if (lua_isinteger(L, idx))
        return json_integer((json_int_t)lua_tointeger(L, idx));
    double x = (double)lua_tonumber(L, idx);
    if (isnan(x))
        encode_error(e, "cannot encode NaN");
    if (isinf(x))
        encode_error(e, "cannot encode %s", x > 0 ? "inf" : "-inf");
    int digits = real_digits(x);
    if (digits > e->precision)
        e->precision = digits;
    return json_real(x);
}

static json_t *new_string(struct encoder *e, int idx)
{
    size_t len;
    const char *s = lua_tolstring(e->L, idx, &len);

    if (!utf8_valid(s, len))
        encode_error(e, "invalid UTF-8 in string");
    return json_stringn_nocheck(s, len);
}

/* What the keys of a table look like; filled without raising errors. */
struct key_scan {
    lua_Integer ints; /* integer keys */
    lua_Integer strs; /* string keys */
    lua_Integer max;  /* largest integer key */
    int nonpositive;  /* some integer key is < 1 */
    int bad_utf8;     /* some string key is not valid UTF-8 */
    int bad_type;     /* type of the first non-string non-integer key */
    int bad_float;    /* ...and whether it was a float */
};

static void scan_keys(lua_State *L, int idx, struct key_scan *scan)
{
    memset(scan, 0, sizeof *scan);
    scan->bad_type = LUA_TNONE;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_isinteger(L, -1)) {
            lua_Integer k = lua_tointeger(L, -1);
            scan->ints++;
            scan->nonpositive |= k < 1;
            if (k > scan->max)
                scan->max = k;
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            size_t len;
            const char *key =
                lua_tolstring(L, -1, &len); /* no conversion: a string */
            scan->strs++;
            scan->bad_utf8 |= !utf8_valid(key, len);
        } else if (scan->bad_type == LUA_TNONE) {
            scan->bad_type = lua_type(L, -1);
            scan->bad_float = scan->bad_type == LUA_TNUMBER;
        }
    }
}

/* Distinct integer keys, all >= 1, as many as the largest: exactly 1..n. */
static int dense(const struct key_scan *scan)
{
    return scan->ints > 0 && !scan->nonpositive && scan->max == scan->ints;
}

/* Decide whether the table at idx becomes an array (1) or object (0), or
 * raise. */
static int table_is_array(struct encoder *e, int idx)
{
    lua_State *L = e->L;
    enum mark mark = table_mark(L, idx);
    struct key_scan scan;

    scan_keys(L, idx, &scan);
    if (scan.bad_float)
        encode_error(e, "cannot use a non-integer number as a key");
    if (scan.bad_type != LUA_TNONE)
        encode_error(e, "cannot use a %s as a key",
                     lua_typename(L, scan.bad_type));
    if (scan.bad_utf8) /* checked here so the error names the object */
        encode_error(e, "invalid UTF-8 in object key");
    if (mark == MARK_ARRAY) {
        if (scan.strs > 0)
            encode_error(e, "array has a string key");
        if (scan.ints > 0 && !dense(&scan))
            encode_error(e, "sparse array (keys must be 1..n)");
        return 1;
    }
    if (mark == MARK_OBJECT) {
        if (scan.ints > 0)
            encode_error(e, "object has an integer key (keys must be strings)");
        return 0;
    }
    if (scan.ints > 0 && scan.strs > 0)
        encode_error(e, "table mixes integer and string keys");
    if (scan.ints > 0 && !dense(&scan))
        encode_error(e, "sparse array (keys must be 1..n)");
    return scan.ints > 0;
}

/* Empty array or object for the table at idx, after all checks that may
 * raise. */
static json_t *new_container(struct encoder *e, int idx)
{
    lua_State *L = e->L;

    if (e->depth >= MAX_DEPTH)
        encode_error(e, "nesting deeper than %d", MAX_DEPTH);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, e->visiting) != LUA_TNIL)
        encode_error(e, "cycle");
    lua_pop(L, 1);
    return table_is_array(e, idx) ? json_array() : json_object();
}

/*
 * A new, childless jansson value for the Lua value at idx.  Anything that
 * can raise happens before the value is created, and callers attach it to
 * the tree (owned by the box) before converting children, so an error
 * never strands an unowned jansson value.
 */
static json_t *new_node(struct encoder *e, int idx)
{
    lua_State *L = e->L;
    json_t *node = NULL;
    int type = lua_type(L, idx);

    if (type == LUA_TBOOLEAN)
        node = json_boolean(lua_toboolean(L, idx));
    else if (type == LUA_TNUMBER)
        node = new_number(e, idx);
    else if (type == LUA_TSTRING)
        node = new_string(e, idx);
    else if (type == LUA_TTABLE)
        node = new_container(e, idx);
    else if (type == LUA_TLIGHTUSERDATA &&
             lua_touserdata(L, idx) == NULL_SENTINEL)
        node = json_null();
    else if (type == LUA_TNIL)
        encode_error(e, "cannot encode nil (use json.null)");
    else
        encode_error(e, "cannot encode a %s", lua_typename(L, type));
    if (node == NULL)
        out_of_memory(e);
    return node;
}

static void fill_node(struct encoder *e, int idx, json_t *node);

/* Convert the value at the top of the stack and attach it (key NULL:
 * append). */
static void add_child(struct encoder *e, json_t *parent, const char *key,
                      size_t key_len)
{
    int idx = lua_gettop(e->L);
    json_t *child = new_node(e, idx);
    int rc = key != NULL
                 ? json_object_setn_new_nocheck(parent, key, key_len, child)
                 : json_array_append_new(parent, child);

    if (rc != 0) /* both calls have already released child */
        out_of_memory(e);
    fill_node(e, idx, child); /* child is now owned by parent */
}

/* Record the key leading to the next level in path[depth]. */
static void set_path_key(struct encoder *e, int key_idx)
{
    lua_pushvalue(e->L, key_idx);
    lua_rawseti(e->L, e->path, e->depth);
}

static void fill_array(struct encoder *e, int idx, json_t *array)
{
    lua_State *L = e->L;
    lua_Integer n =
        (lua_Integer)lua_rawlen(L, idx); /* dense, so the border is n */

    for (lua_Integer i = 1; i <= n; i++) {
        lua_pushinteger(L, i);
        set_path_key(e, -1);
        lua_pop(L, 1);
        lua_rawgeti(L, idx, i);
        add_child(e, array, NULL, 0);
        lua_pop(L, 1);
    }
}

static void fill_object(struct encoder *e, int idx, json_t *object)
{
    lua_State *L = e->L;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t len;
        /* A valid UTF-8 string: table_is_array checked every key. */
        const char *key = lua_tolstring(L, -2, &len);
        set_path_key(e, -2);
        add_child(e, object, key, len);
        lua_pop(L, 1);
    }
}

/* Convert the children of the table at idx into node (already in the tree). */
static void fill_node(struct encoder *e, int idx, json_t *node)
{
    lua_State *L = e->L;

    if (!json_is_array(node) && !json_is_object(node))
        return;
    luaL_checkstack(L, LEVEL_SLOTS, "json: value nested too deeply");
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, e->visiting);
    e->depth++;
    if (json_is_array(node))
        fill_array(e, idx, node);
    else
        fill_object(e, idx, node);
    e->depth--;
    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, e->visiting); /* shared (acyclic) subtables are fine */
}

/* encode(value [, opts]) -> text */
static int l_json_encode(lua_State *L)
{
    struct encoder e = {L, 0, 0, 0, 0};
    size_t flags;

    luaL_checkany(L, 1);
    flags = encode_flags(L, 2);
    lua_settop(L, 2);
    struct json_box *box = push_box(L);
    lua_newtable(L);
    e.path = lua_gettop(L);
    lua_newtable(L);
    e.visiting = lua_gettop(L);

    box->root = new_node(&e, 1);
    fill_node(&e, 1, box->root);
    if (e.precision > 0)
        flags |= JSON_REAL_PRECISION(e.precision);
    box->text = json_dumps(box->root, flags);
    if (box->text == NULL)
        return raise_error(L, "out of memory");
    lua_pushstring(L, box->text);
    box_clear(box);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Marking helpers */

/* [-0, +1] set metatable tname on arg 1 (or a new table) and push it */
static int mark_table(lua_State *L, const char *tname)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    /* Replacing a class metatable would silently break the caller's object. */
    if (table_mark(L, 1) == MARK_FOREIGN)
        return luaL_argerror(L, 1, "table already has a non-JSON metatable");
    luaL_setmetatable(L, tname);
    return 1;
}

/* array([t]) -> t marked as a JSON array */
static int l_json_array(lua_State *L) { return mark_table(L, ARRAY_MT); }

/* object([t]) -> t marked as a JSON object */
static int l_json_object(lua_State *L) { return mark_table(L, OBJECT_MT); }

/* is_array(v) -> boolean: whether encode would emit v as a JSON array */
static int l_json_is_array(lua_State *L)
{
    int result = 0;

    luaL_checkany(L, 1);
    if (lua_type(L, 1) == LUA_TTABLE) {
        enum mark mark = table_mark(L, 1);
        if (mark == MARK_ARRAY) {
            result = 1;
        } else if (mark != MARK_OBJECT) {
            struct key_scan scan;
            scan_keys(L, 1, &scan);
            result =
                dense(&scan) && scan.strs == 0 && scan.bad_type == LUA_TNONE;
        }
    }
    lua_pushboolean(L, result);
    return 1;
}

/* ------------------------------------------------------------------ */

static const luaL_Reg json_funcs[] = {
    {"decode", l_json_decode},
    {"encode", l_json_encode},
    {"array", l_json_array},
    {"object", l_json_object},
    {"is_array", l_json_is_array},
    /* placeholders, filled in by luaopen_bomarun__json */
    {"null", NULL},
    {"array_mt", NULL},
    {"object_mt", NULL},
    {NULL, NULL},
};

/* require "bomarun._json" -> module table */
int luaopen_bomarun__json(lua_State *L)
{
    if (luaL_newmetatable(L, BOX_MT)) {
        lua_pushcfunction(L, l_json_box_release);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_json_box_release);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);

    luaL_newlib(L, json_funcs);
    lua_pushlightuserdata(L, NULL_SENTINEL);
    lua_setfield(L, -2, "null");
    luaL_newmetatable(L, ARRAY_MT); /* also sets __name */
    lua_setfield(L, -2, "array_mt");
    luaL_newmetatable(L, OBJECT_MT);
    lua_setfield(L, -2, "object_mt");
    return 1;
}
