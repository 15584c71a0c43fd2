/* loop: the libuv loop, signals, and the live process groups. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"
#include "sched.h"

#define MAX_GROUPS 4096

static uv_loop_t g_loop;
static uv_async_t g_sig_async;
static volatile sig_atomic_t g_sigint_count, g_sigterm_count;
static int g_seen_int, g_seen_term;
/* A plain array so the signal handler can walk it safely. */
static volatile sig_atomic_t g_groups[MAX_GROUPS];

uv_loop_t *loop_init(void)
{
    uv_loop_init(&g_loop);
    return &g_loop;
}

void loop_track_pgid(int pgid)
{
    int i;
    for (i = 0; i < MAX_GROUPS; i++)
        if (g_groups[i] == 0) {
            g_groups[i] = pgid;
            return;
        }
}

void loop_untrack_pgid(int pgid)
{
    int i;
    for (i = 0; i < MAX_GROUPS; i++)
        if (g_groups[i] == pgid)
            g_groups[i] = 0;
}

void loop_kill_all_groups(void)
{
    int i;
    for (i = 0; i < MAX_GROUPS; i++)
        if (g_groups[i] > 0)
            kill(-(pid_t)g_groups[i], SIGKILL);
}

static void on_raw_signal(int signum)
{
    int n;
    if (signum == SIGINT)
        n = ++g_sigint_count;
    else
        n = ++g_sigterm_count;
    sched_note_signal();
    if (n >= 3) {
        static const char msg[] = "\nbomarun: third signal: killing every "
                                  "process group and exiting now\n";
        ssize_t r = write(2, msg, sizeof msg - 1);
        (void)r;
        loop_kill_all_groups();
        _exit(130);
    }
    uv_async_send(&g_sig_async);
}

static void on_sig_async(uv_async_t *h)
{
    (void)h;
    while (g_seen_int < g_sigint_count) {
        g_seen_int++;
        sched_on_signal(SIGINT, g_seen_int);
    }
    while (g_seen_term < g_sigterm_count) {
        g_seen_term++;
        sched_on_signal(SIGTERM, g_seen_term);
    }
}

void loop_install_signals(void)
{
    struct sigaction sa;
    uv_async_init(&g_loop, &g_sig_async, on_sig_async);
    uv_unref((uv_handle_t *)&g_sig_async);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_raw_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}
