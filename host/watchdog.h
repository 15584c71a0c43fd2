/* watchdog: a small process that outlives bomarun and kills the process
 * groups bomarun could not (kill -9, a crash, the OOM killer).
 *
 * It is a fork of bomarun made before the Lua state exists when bomarun
 * runs a file (so it costs a fork of a small process and shares nearly all
 * its memory), or at the first process group otherwise.  It runs in a
 * session of its own and holds nothing open but the read end of a pipe:
 * bomarun writes "+PGID\n" when a group starts and "-PGID\n" when it is
 * reaped; at EOF (bomarun exited, however it died) the watchdog SIGKILLs
 * every group still registered and exits. */
#ifndef BOMARUN_WATCHDOG_H
#define BOMARUN_WATCHDOG_H

/* Only the bomarun binary enables it (not a C test or a fuzz harness). */
void watchdog_enable(void);
/* Starts the watchdog unless it runs: 1 when a new one started (it knows
 * no group yet), 0 when one was running, -1 when none can run. */
int watchdog_ensure(void);
/* Tell a running watchdog that a group started ('+') or was reaped ('-').
 * Returns 0, or -1 when there is none (it may have died: see ensure). */
int watchdog_note(char what, int pgid);
/* Close the pipe and reap the watchdog (at exit; idempotent).  It kills
 * the groups still registered. */
void watchdog_stop(void);
/* The running watchdog's pid, or 0. */
int watchdog_pid(void);

#endif
