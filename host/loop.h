/* loop: the one libuv loop, signal delivery, and the list of live process
 * groups that must die with the host. */
#ifndef BOMARUN_LOOP_H
#define BOMARUN_LOOP_H

#include <uv.h>

uv_loop_t *loop_init(void);
/* SIGINT/SIGTERM: the loop learns of them through an async handle; the
 * third one kills every live process group and exits 130 at once. */
void loop_install_signals(void);
void loop_track_pgid(int pgid);
void loop_untrack_pgid(int pgid);
/* SIGKILL every live process group (at exit). */
void loop_kill_all_groups(void);

#endif
