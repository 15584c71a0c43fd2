/* loop: the libuv loop, signals, and the live process groups. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"
#include "sched.h"
#include "watchdog.h"

#define MAX_GROUPS 4096

/* The signals that interrupt a run, each counted on its own: the first
 * cancels, the second abandons cleanups, the third kills and exits.
 * SIGHUP (the terminal went away) and SIGQUIT are asked to stop like
 * SIGTERM: a run's cleanups and reports matter more than a core file. */
static const int k_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define NSIGNALS (int)(sizeof k_signals / sizeof k_signals[0])

static uv_loop_t g_loop;
static uv_async_t g_sig_async;
static volatile sig_atomic_t g_counts[NSIGNALS];
static volatile sig_atomic_t g_first_signal;
static int g_seen[NSIGNALS];
/* A plain array so the signal handler can walk it safely. */
static volatile sig_atomic_t g_groups[MAX_GROUPS];

uv_loop_t *loop_init(void)
{
    uv_loop_init(&g_loop);
    return &g_loop;
}

void loop_prepare_group(void)
{
    int i;
    if (watchdog_ensure() != 1)
        return;
    /* A new watchdog (the first, or one that replaced a dead one). */
    for (i = 0; i < MAX_GROUPS; i++)
        if (g_groups[i] > 0)
            watchdog_note('+', g_groups[i]);
}

void loop_track_pgid(int pgid)
{
    int i;
    for (i = 0; i < MAX_GROUPS; i++)
        if (g_groups[i] == 0) {
            g_groups[i] = pgid;
            break;
        }
    if (watchdog_note('+', pgid) != 0)
        loop_prepare_group();
}

void loop_untrack_pgid(int pgid)
{
    int i;
    for (i = 0; i < MAX_GROUPS; i++)
        if (g_groups[i] == pgid)
            g_groups[i] = 0;
    watchdog_note('-', pgid);
}

void loop_kill_all_groups(void)
{
    int i;
    for (i = 0; i < MAX_GROUPS; i++)
        if (g_groups[i] > 0)
            kill(-(pid_t)g_groups[i], SIGKILL);
}

int loop_first_signal(void) { return g_first_signal; }

static int signal_index(int signum)
{
    int i;
    for (i = 0; i < NSIGNALS; i++)
        if (k_signals[i] == signum)
            return i;
    return 0;
}

static void on_raw_signal(int signum)
{
    int n = ++g_counts[signal_index(signum)];
    if (!g_first_signal)
        g_first_signal = signum;
    sched_note_signal();
    if (n >= 3) {
        static const char msg[] = "\nbomarun: third signal: killing every "
                                  "process group and exiting now\n";
        ssize_t r = write(2, msg, sizeof msg - 1);
        (void)r;
        loop_kill_all_groups();
        _exit(128 + signum);
    }
    uv_async_send(&g_sig_async);
}

static void on_sig_async(uv_async_t *h)
{
    int i;
    (void)h;
    for (i = 0; i < NSIGNALS; i++)
        while (g_seen[i] < g_counts[i]) {
            g_seen[i]++;
            sched_on_signal(k_signals[i], g_seen[i]);
        }
}

void loop_install_signals(void)
{
    struct sigaction sa;
    int i;
    uv_async_init(&g_loop, &g_sig_async, on_sig_async);
    uv_unref((uv_handle_t *)&g_sig_async);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_raw_signal;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < NSIGNALS; i++)
        sigaddset(&sa.sa_mask, k_signals[i]);
    sa.sa_flags = SA_RESTART;
    for (i = 0; i < NSIGNALS; i++)
        sigaction(k_signals[i], &sa, NULL);
    /* A closed console (a pipe whose reader left) must not kill the run:
     * writes fail with EPIPE instead, and the journal goes on. */
    signal(SIGPIPE, SIG_IGN);
}
