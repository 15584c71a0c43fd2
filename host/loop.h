/* loop: the one libuv loop, signal delivery, and the list of live process
 * groups that must die with the host. */
#ifndef BOMARUN_LOOP_H
#define BOMARUN_LOOP_H

#include <uv.h>

uv_loop_t *loop_init(void);
/* SIGINT, SIGTERM, SIGHUP, SIGQUIT: the loop learns of them through an
 * async handle (sched_on_signal); the third of one kind kills every live
 * process group and exits 128 + its number at once.  SIGPIPE is ignored. */
void loop_install_signals(void);
/* The first of those signals received, or 0. */
int loop_first_signal(void);
/* Before starting a process group: makes sure the watchdog runs (when the
 * binary enabled it), so a group is never started unguarded. */
void loop_prepare_group(void);
/* A group started / was reaped: the list, and the watchdog, know it. */
void loop_track_pgid(int pgid);
void loop_untrack_pgid(int pgid);
/* SIGKILL every live process group (at exit). */
void loop_kill_all_groups(void);

#endif
