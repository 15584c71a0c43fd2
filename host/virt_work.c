/* virt_work: the worker per connection, libvirt's event thread, and the one
 * async handle through which both reach the loop (see virt_int.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/virterror.h>
#include <uv.h>

#include "virt_int.h"

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static uv_async_t g_async;
static int g_inited;
/* Reported by the workers and the event thread, drained on the loop. */
static struct vjob *g_done_head, *g_done_tail;
struct vevent_node {
    struct vevent_node *next;
    int conn_id;
    struct vevent ev;
};
static struct vevent_node *g_ev_head, *g_ev_tail;
/* Loop thread only. */
static int g_pending;  /* jobs submitted and not yet reported */
static int g_nwaiters; /* tasks waiting for an event */
static struct vconn **g_conns;
static int g_nconns;

static void update_ref(void)
{
    if (g_pending > 0 || g_nwaiters > 0)
        uv_ref((uv_handle_t *)&g_async);
    else
        uv_unref((uv_handle_t *)&g_async);
}

void vjob_free(struct vjob *j)
{
    int i, k;
    for (i = 0; i < VJ_STRS; i++)
        free(j->s[i]);
    free(j->err);
    free(j->out[0]);
    free(j->out[1]);
    for (i = 0; i < j->nrows; i++)
        for (k = 0; k < VROW_STRS; k++)
            free(j->rows[i].s[k]);
    free(j->rows);
    free(j);
}

void vjob_fail(struct vjob *j)
{
    virError e;
    memset(&e, 0, sizeof e);
    if (virCopyLastError(&e) > 0 && e.message) {
        j->err = strdup(e.message);
        j->code = verr_name(e.code);
    } else {
        j->err = strdup("libvirt gave no reason");
        j->code = "VIR_ERR_INTERNAL_ERROR";
    }
    virResetError(&e);
    virResetLastError();
    j->ok = 0;
}

void vjob_row(struct vjob *j, const char *const *s, int ns, const long long *n,
              int nn)
{
    struct vrow *r;
    int i;
    if (j->nrows == j->cap) {
        int cap = j->cap ? j->cap * 2 : 8;
        struct vrow *rows = realloc(j->rows, (size_t)cap * sizeof *rows);
        if (!rows)
            return;
        j->rows = rows;
        j->cap = cap;
    }
    r = &j->rows[j->nrows++];
    memset(r, 0, sizeof *r);
    for (i = 0; i < ns && i < VROW_STRS; i++)
        r->s[i] = s[i] ? strdup(s[i]) : NULL;
    for (i = 0; i < nn && i < VROW_NUMS; i++)
        r->n[i] = n[i];
}

static void post_done(struct vjob *j)
{
    pthread_mutex_lock(&g_mu);
    j->next = NULL;
    if (g_done_tail)
        g_done_tail->next = j;
    else
        g_done_head = j;
    g_done_tail = j;
    pthread_mutex_unlock(&g_mu);
    uv_async_send(&g_async);
}

static void *worker(void *arg)
{
    struct vconn *c = arg;
    struct vjob *notice;
    for (;;) {
        struct vjob *j;
        int last;
        pthread_mutex_lock(&c->mu);
        while (!c->head)
            pthread_cond_wait(&c->cv, &c->mu);
        j = c->head;
        c->head = j->next;
        if (!c->head)
            c->tail = NULL;
        pthread_mutex_unlock(&c->mu);
        last = j->op == 1; /* VOP_CLOSE: the worker ends after it */
        /* A job its task gave up on before it started is not run (but
         * closing always runs). */
        if (last || !__atomic_load_n(&j->abandoned, __ATOMIC_ACQUIRE))
            vjob_run(j);
        post_done(j);
        if (last)
            break;
    }
    notice = calloc(1, sizeof *notice);
    if (notice) {
        notice->c = c;
        notice->exit_notice = 1;
        post_done(notice);
    }
    return NULL;
}

static struct vconn *conn_by_id(int id)
{
    return id >= 0 && id < g_nconns ? g_conns[id] : NULL;
}

static void deliver_event(struct vconn *c, const struct vevent *ev)
{
    struct vevent_waiter *ew, *next;
    c->seq++;
    c->ring[c->seq % VEVENT_RING] = *ev;
    ew = c->waiters;
    c->waiters = NULL;
    for (; ew; ew = next) {
        lua_State *co = sched_wait_state(&ew->w);
        next = ew->next;
        g_nwaiters--;
        lua_pushinteger(co, c->seq);
        sched_complete(&ew->w, 1);
        free(ew);
    }
}

static void on_async(uv_async_t *h)
{
    struct vjob *j, *next;
    struct vevent_node *e, *enext;
    (void)h;
    pthread_mutex_lock(&g_mu);
    j = g_done_head;
    g_done_head = g_done_tail = NULL;
    e = g_ev_head;
    g_ev_head = g_ev_tail = NULL;
    pthread_mutex_unlock(&g_mu);
    for (; e; e = enext) {
        struct vconn *c = conn_by_id(e->conn_id);
        enext = e->next;
        if (c && !c->worker_gone)
            deliver_event(c, &e->ev);
        free(e);
    }
    for (; j; j = next) {
        next = j->next;
        if (j->exit_notice) {
            struct vconn *c = j->c;
            pthread_join(c->thread, NULL);
            c->worker_gone = 1;
            g_conns[c->id] = NULL;
            pthread_mutex_destroy(&c->mu);
            pthread_cond_destroy(&c->cv);
            if (c->lua_gone)
                free(c);
            free(j);
            continue;
        }
        g_pending--;
        if (!j->abandoned) {
            lua_State *co = sched_wait_state(&j->w);
            sched_complete(&j->w, vjob_push(co, j));
        }
        vjob_free(j);
    }
    update_ref();
}

static void quiet_errors(void *opaque, virErrorPtr err)
{
    (void)opaque;
    (void)err;
}

static void *event_thread(void *arg)
{
    (void)arg;
    for (;;)
        if (virEventRunDefaultImpl() < 0)
            usleep(100000);
    return NULL;
}

int vwork_init(void)
{
    pthread_t t;
    pthread_attr_t attr;
    if (g_inited)
        return 0;
    if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0)
        return -1;
    virSetErrorFunc(NULL, quiet_errors);
    if (uv_async_init(sched_loop(), &g_async, on_async) != 0)
        return -1;
    uv_unref((uv_handle_t *)&g_async);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, event_thread, NULL) != 0) {
        pthread_attr_destroy(&attr);
        return -1;
    }
    pthread_attr_destroy(&attr);
    g_inited = 1;
    return 0;
}

/* libvirt's event thread: copy, queue, wake the loop. */
static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event,
                        int detail, void *opaque)
{
    struct vevent_node *n = calloc(1, sizeof *n);
    const char *name = virDomainGetName(dom);
    (void)conn;
    if (!n)
        return 0;
    n->conn_id = (int)(intptr_t)opaque;
    snprintf(n->ev.name, sizeof n->ev.name, "%s", name ? name : "");
    if (virDomainGetUUIDString(dom, n->ev.uuid) < 0)
        n->ev.uuid[0] = '\0';
    n->ev.event = event;
    n->ev.detail = detail;
    pthread_mutex_lock(&g_mu);
    if (g_ev_tail)
        g_ev_tail->next = n;
    else
        g_ev_head = n;
    g_ev_tail = n;
    pthread_mutex_unlock(&g_mu);
    uv_async_send(&g_async);
    return 0;
}

/* On the worker, once the connection is open. */
void vwork_listen(struct vconn *c)
{
    c->cb_id = virConnectDomainEventRegisterAny(
        c->conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
        VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), (void *)(intptr_t)c->id, NULL);
}

int vwork_start(struct vconn *c)
{
    int i;
    for (i = 0; i < g_nconns && g_conns[i]; i++)
        ;
    if (i == g_nconns) {
        struct vconn **a = realloc(g_conns, (size_t)(g_nconns + 8) * sizeof *a);
        if (!a)
            return -1;
        memset(a + g_nconns, 0, 8 * sizeof *a);
        g_conns = a;
        g_nconns += 8;
    }
    c->id = i;
    c->cb_id = -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->thread, NULL, worker, c) != 0) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        return -1;
    }
    g_conns[i] = c;
    return 0;
}

void vwork_submit(struct vconn *c, struct vjob *j)
{
    j->c = c;
    j->next = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->tail)
        c->tail->next = j;
    else
        c->head = j;
    c->tail = j;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    g_pending++;
    update_ref();
}

void vwork_watch(struct vevent_waiter *ew)
{
    ew->next = ew->c->waiters;
    ew->c->waiters = ew;
    g_nwaiters++;
    update_ref();
}

void vwork_unwatch(struct vevent_waiter *ew)
{
    struct vevent_waiter **p;
    for (p = &ew->c->waiters; *p; p = &(*p)->next)
        if (*p == ew) {
            *p = ew->next;
            g_nwaiters--;
            break;
        }
    update_ref();
}
