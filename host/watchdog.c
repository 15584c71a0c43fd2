/* watchdog: kills the process groups a dead bomarun leaves (watchdog.h).
 *
 * Why a process: SIGKILL cannot be caught, so the only code that can run
 * after bomarun dies is another process's.  Why a pipe: its EOF is the one
 * notification of death that needs no polling and cannot be missed, and a
 * message shorter than PIPE_BUF is written atomically.  Why a fork and not
 * an exec: re-executing bomarun loads its libraries again (libcurl's tree,
 * libcrypto: milliseconds), and bomarun's exit waits for the watchdog. */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "watchdog.h"

#define MAX_GROUPS 4096 /* as many as loop.c tracks */
#define REAP_MS 1000

static int g_enabled;
static int g_fd = -1; /* the write end */
static pid_t g_pid;   /* the watchdog */
static pid_t g_owner; /* the process that started it (not a fork of it) */

/* --- the watchdog process --------------------------------------------- *
 * Forked from a process that may have had threads: from here on only
 * async-signal-safe calls, and no malloc (a static table). */

static int g_groups[MAX_GROUPS];

/* One message: "+PGID" or "-PGID".  A pgid of 0 or 1 would make kill()
 * hit our own group or every process we may signal: never accepted. */
static void apply(const char *line, size_t len)
{
    long pgid = 0;
    size_t i;
    int k;
    if (len < 2 || len > 11 || (line[0] != '+' && line[0] != '-'))
        return;
    for (i = 1; i < len; i++) {
        if (line[i] < '0' || line[i] > '9')
            return;
        pgid = pgid * 10 + (line[i] - '0');
    }
    if (pgid <= 1 || pgid > INT_MAX)
        return;
    for (k = 0; k < MAX_GROUPS; k++)
        if (line[0] == '+' ? g_groups[k] == 0 : g_groups[k] == pgid) {
            g_groups[k] = line[0] == '+' ? (int)pgid : 0;
            return;
        }
}

/* Everything but fd 0 (the pipe): the watchdog must not keep a terminal,
 * a log file or a caller's pipe open after bomarun is gone. */
static void close_all_but_stdin(void)
{
    int fd, max;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 1u, ~0u, 0u) == 0)
        return;
#endif
    max = (int)sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (fd = 1; fd < max; fd++)
        close(fd);
}

static void ignore_signals(void)
{
    static const int ignored[] = {SIGINT,  SIGTERM, SIGHUP,  SIGQUIT, SIGPIPE,
                                  SIGTSTP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
    struct sigaction sa;
    size_t k;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    for (k = 0; k < sizeof ignored / sizeof ignored[0]; k++)
        sigaction(ignored[k], &sa, NULL);
}

static int watchdog_run(void)
{
    char buf[4096], line[16];
    size_t used = 0, i;
    ssize_t n;
    sigset_t none;
    int k;
    /* Its own session: the Ctrl-C (or hang-up) that reaches bomarun's
     * process group does not reach the watchdog. */
    setsid();
#ifdef __linux__
    prctl(PR_SET_NAME, "bomarun-wdog", 0, 0, 0);
#endif
    ignore_signals();
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    close_all_but_stdin();
    if (chdir("/") != 0) {
        /* A busy directory is all it costs. */
    }
    for (;;) {
        n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* EOF: bomarun is gone */
        for (i = 0; i < (size_t)n; i++) {
            if (buf[i] != '\n') {
                if (used < sizeof line)
                    line[used] = buf[i];
                used++;
                continue;
            }
            apply(line, used);
            used = 0;
        }
    }
    for (k = 0; k < MAX_GROUPS; k++)
        if (g_groups[k] > 1)
            kill(-(pid_t)g_groups[k], SIGKILL);
    return 0;
}

/* --- bomarun's side ----------------------------------------------------- */

void watchdog_enable(void) { g_enabled = 1; }

int watchdog_pid(void) { return g_fd >= 0 ? (int)g_pid : 0; }

/* Keep a pipe end off fds 0-2: if bomarun was started with them closed,
 * pipe2 would hand them out and console output would go to the watchdog. */
static int above_stdio(int fd)
{
    int moved;
    if (fd > 2)
        return fd;
    moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return moved;
}

/* Waits up to `wait_ms` for the watchdog to exit (it does within
 * microseconds of reading EOF), polling briefly: a blocking waitpid could
 * hang on a watchdog that was stopped (SIGSTOP). */
static void reap(int wait_ms)
{
    struct timespec step = {0, 20000}; /* 20 us */
    long waited_us = 0;
    int st;
    while (g_pid > 0) {
        pid_t r = waitpid(g_pid, &st, WNOHANG);
        if (r == g_pid || (r < 0 && errno != EINTR) ||
            waited_us >= (long)wait_ms * 1000)
            break;
        if (r == 0) {
            nanosleep(&step, NULL);
            waited_us += 20;
        }
    }
    g_pid = 0;
}

/* Signals stay blocked across the fork so that none reaches the child
 * while it still has bomarun's handlers. */
static pid_t fork_watchdog(int rd, int wr)
{
    sigset_t all, old;
    pid_t pid;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0) {
        close(wr);
        if (dup2(rd, 0) < 0)
            _exit(1);
        /* _exit: no atexit handlers, no stdio buffers flushed twice. */
        _exit(watchdog_run());
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return pid;
}

int watchdog_ensure(void)
{
    int fds[2];
    if (!g_enabled)
        return -1;
    if (g_fd >= 0 && g_owner == getpid())
        return 0;
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    fds[0] = above_stdio(fds[0]);
    fds[1] = above_stdio(fds[1]);
    g_pid = fds[0] >= 0 && fds[1] >= 0 ? fork_watchdog(fds[0], fds[1]) : -1;
    if (fds[0] >= 0)
        close(fds[0]);
    if (g_pid <= 0) {
        if (fds[1] >= 0)
            close(fds[1]);
        g_pid = 0;
        return -1;
    }
    g_fd = fds[1];
    if (!g_owner)
        atexit(watchdog_stop);
    g_owner = getpid();
    return 1;
}

int watchdog_note(char what, int pgid)
{
    char msg[24];
    int n = snprintf(msg, sizeof msg, "%c%d\n", what, pgid);
    ssize_t w;
    if (g_fd < 0 || g_owner != getpid())
        return -1;
    do
        w = write(g_fd, msg, (size_t)n);
    while (w < 0 && errno == EINTR);
    if (w == n)
        return 0;
    /* EPIPE (SIGPIPE is ignored): it died; ensure starts another. */
    close(g_fd);
    g_fd = -1;
    reap(0);
    return -1;
}

void watchdog_stop(void)
{
    if (g_fd < 0 || g_owner != getpid())
        return;
    close(g_fd);
    g_fd = -1;
    /* It exits as soon as it reads EOF; reap it so it is not left behind
     * as a zombie for an init that may never wait for it. */
    reap(REAP_MS);
}
