/* sched: tasks (coroutines) on one libuv loop.
 *
 * A binding that must wait embeds a struct bm_wait in its request, calls
 * sched_await() (which yields the calling coroutine), and later, from a libuv
 * callback, pushes its results onto sched_wait_state() and calls
 * sched_complete().  Only the scheduler calls lua_resume.  If the task is
 * cancelled first, the binding's cancel callback runs instead and no
 * completion may follow it. */
#ifndef BOMARUN_SCHED_H
#define BOMARUN_SCHED_H

#include <lua.h>
#include <uv.h>

struct bm_task;

struct bm_wait {
    struct bm_task *task;
    /* Stop the operation; after this the binding never calls complete. */
    void (*cancel)(struct bm_wait *w);
};

/* Something a task owns that must not outlive it (a spawned process): when
 * the task finishes, for whatever reason, `release` runs for each resource
 * it still owns.  The owner unlinks it with sched_disown when done. */
struct bm_resource {
    struct bm_resource *next, *prev;
    struct bm_task *owner;
    void (*release)(struct bm_resource *r);
};

/* Attach r to the current task (no-op outside any task). */
void sched_own(struct bm_resource *r);
void sched_disown(struct bm_resource *r);

/* uv_timer_start measures from the loop's cached clock, which is stale
 * after Lua ran for a while without yielding; every timer the host starts
 * goes through here so "in 100 ms" means from now. */
static inline int bm_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t ms,
                                 uint64_t repeat)
{
    uv_update_time(t->loop);
    return uv_timer_start(t, cb, ms, repeat);
}

void sched_init(lua_State *L, uv_loop_t *loop);
uv_loop_t *sched_loop(void);
lua_State *sched_main_state(void);

/* The task being resumed right now, or NULL outside any task. */
struct bm_task *sched_current(void);

/* Raise unless L may wait here: inside a task, in a yieldable context, and
 * not already cancelled.  `what` names the awaitable for the message. */
void sched_check_await(lua_State *L, const char *what);

/* Yield the current task until w completes; returns through a continuation
 * with the completion's results (or raises the cancellation error). */
int sched_await(lua_State *L, struct bm_wait *w);

/* The state to push completion results onto before sched_complete. */
lua_State *sched_wait_state(struct bm_wait *w);
void sched_complete(struct bm_wait *w, int nres);

/* Create a task running the function at the top of L's stack with nargs
 * arguments below it... (function first, then args, as for lua_call).
 * Pops them and pushes the task handle. */
struct bm_task *sched_spawn(lua_State *L, int nargs, const char *name);

/* Run the loop until the main task has finished and nothing else is live.
 * Returns 0 when the main task ended without error.  May be called again
 * on the same state (one main task per fuzz input). */
int sched_run_main(lua_State *L, int nargs);

/* Cancel a task (and its children) with a reason and a stable code. */
void sched_cancel(struct bm_task *t, const char *reason, const char *code);
struct bm_task *sched_main_task(void);

/* Pushes the main task's results, as a table: {ok=, n=, ...}. */
void sched_push_main_result(lua_State *L);

int luaopen_bomarun__sched(lua_State *L);

/* After the main task: run until quiescent or `ms` passed (1 if quiet). */
int sched_drain(int ms);
/* Mark that lua_close is about to run: handles free without unref. */
void sched_close(void);

/* Called by loop.c when SIGINT, SIGTERM, SIGHUP or SIGQUIT arrives (from
 * the loop, not the handler). */
void sched_on_signal(int signum, int count);
/* The count hook sched_init installs (deadlines, pending interrupts), for
 * an embedder that installs a hook of its own and must chain to it (the
 * fuzz harnesses add line coverage). */
void sched_count_hook(lua_State *L, lua_Debug *ar);
/* Set from the raw signal handler: lets the count hook stop a task that is
 * spinning in Lua code and so never lets the loop run. */
void sched_note_signal(void);

#endif
