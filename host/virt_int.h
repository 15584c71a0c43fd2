/* virt_int: what the parts of bomarun._virt share (not a public header).
 *
 * bomarun._virt is a loadable module (bomarun_virt.so): the host dlopens it
 * the first time a runbook requires bomarun.virt, so libvirt and the many
 * libraries it pulls in cost nothing to a run that never touches it.
 *
 * libvirt has only blocking calls.  Each connection has its own worker
 * thread; a call is a job: its arguments are copied into C memory on the
 * loop thread, the worker runs it and captures libvirt's last error there,
 * and the loop learns of the result through one async handle.  libvirt's
 * own event loop (the default implementation) runs on a thread of its own,
 * so domain lifecycle events reach Lua through the same async handle. */
#ifndef BOMARUN_VIRT_INT_H
#define BOMARUN_VIRT_INT_H

#include <pthread.h>

#include <libvirt/libvirt.h>
#include <lua.h>

#include "sched.h"

#define VJ_STRS 4
#define VJ_NUMS 4
#define VROW_STRS 5
#define VROW_NUMS 4
#define VEVENT_RING 64

struct vconn;

struct vrow {
    char *s[VROW_STRS];
    long long n[VROW_NUMS];
};

struct vjob {
    struct vjob *next;
    struct bm_wait w;
    struct vconn *c;
    int op, sub;
    int abandoned;   /* the task stopped waiting: drop the result */
    int exit_notice; /* not a job: the worker has ended */
    unsigned flags;
    char *s[VJ_STRS];
    long long n[VJ_NUMS];
    /* results */
    int ok;
    char *err;
    const char *code;
    char *out[2];
    long long r[6];
    struct vrow *rows;
    int nrows, cap;
};

struct vevent {
    char name[256];
    char uuid[VIR_UUID_STRING_BUFLEN];
    int event, detail;
};

struct vevent_waiter {
    struct vevent_waiter *next;
    struct bm_wait w;
    struct vconn *c;
    long long after;
};

struct vconn {
    int id;
    virConnectPtr conn;
    int cb_id;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct vjob *head, *tail; /* jobs waiting for the worker */
    int closing;              /* no more jobs accepted (loop thread) */
    int worker_gone;          /* the worker has exited and was joined */
    int lua_gone;             /* the Lua handle was collected */
    /* loop thread only */
    long long seq; /* lifecycle events seen so far */
    struct vevent ring[VEVENT_RING];
    struct vevent_waiter *waiters;
};

/* virt_work.c */
int vwork_init(void);               /* event thread, async handle */
int vwork_start(struct vconn *c);   /* the connection's worker */
void vwork_listen(struct vconn *c); /* lifecycle events (worker) */
void vwork_submit(struct vconn *c, struct vjob *j);
/* An event waiter (malloc'd), loop side: completed and freed by the next
 * event; unwatch (on cancel) removes it, the caller frees it. */
void vwork_watch(struct vevent_waiter *ew);
void vwork_unwatch(struct vevent_waiter *ew);
void vjob_free(struct vjob *j);
void vjob_fail(struct vjob *j); /* capture libvirt's last error */
void vjob_row(struct vjob *j, const char *const *s, int ns, const long long *n,
              int nn);
/* Runs on the worker (mod_virt.c). */
void vjob_run(struct vjob *j);
/* Pushes a job's results onto co (mod_virt.c); returns how many. */
int vjob_push(lua_State *co, struct vjob *j);
/* Names a virErrorNumber ("VIR_ERR_NO_DOMAIN"). */
const char *verr_name(int code);

#endif
