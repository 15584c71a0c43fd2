/* virt_ops: the libvirt calls, run on a connection's worker thread (see
 * virt_int.h).  Each reads its job's copied arguments and leaves results in
 * the job; nothing here touches Lua. */
#include <stdlib.h>
#include <string.h>

#include <libvirt/virterror.h>

#include "virt_int.h"
#include "virt_ops.h"

static void set_out(struct vjob *j, int i, const char *s)
{
    j->out[i] = s ? strdup(s) : NULL;
}

static int is_uuid(const char *s)
{
    return strlen(s) == VIR_UUID_STRING_BUFLEN - 1 && s[8] == '-' &&
           s[13] == '-';
}

static virDomainPtr dom_of(struct vjob *j)
{
    const char *id = j->s[0];
    return is_uuid(id) ? virDomainLookupByUUIDString(j->c->conn, id)
                       : virDomainLookupByName(j->c->conn, id);
}

static void name_uuid(struct vjob *j, const char *name,
                      int (*uuid)(void *, char *), void *obj)
{
    char u[VIR_UUID_STRING_BUFLEN];
    set_out(j, 0, name);
    if (uuid(obj, u) == 0)
        set_out(j, 1, u);
}

static int dom_uuid(void *d, char *u) { return virDomainGetUUIDString(d, u); }
static int net_uuid(void *n, char *u) { return virNetworkGetUUIDString(n, u); }
static int pool_uuid(void *p, char *u)
{
    return virStoragePoolGetUUIDString(p, u);
}

static void op_open(struct vjob *j)
{
    unsigned flags = j->flags ? VIR_CONNECT_RO : 0;
    struct vconn *c = j->c;
    char *uri, *host;
    c->conn = virConnectOpenAuth(j->s[0], virConnectAuthPtrDefault, flags);
    if (!c->conn) {
        vjob_fail(j);
        return;
    }
    vwork_listen(c);
    uri = virConnectGetURI(c->conn);
    host = virConnectGetHostname(c->conn);
    set_out(j, 0, uri);
    set_out(j, 1, host);
    free(uri);
    free(host);
    virResetLastError();
    j->ok = 1;
}

static void op_close(struct vjob *j)
{
    struct vconn *c = j->c;
    if (c->conn) {
        if (c->cb_id >= 0)
            virConnectDomainEventDeregisterAny(c->conn, c->cb_id);
        virConnectClose(c->conn);
        c->conn = NULL;
    }
    j->ok = 1;
}

static void op_list(struct vjob *j)
{
    virDomainPtr *doms = NULL;
    int n = virConnectListAllDomains(j->c->conn, &doms, 0), i;
    if (n < 0) {
        vjob_fail(j);
        return;
    }
    for (i = 0; i < n; i++) {
        char u[VIR_UUID_STRING_BUFLEN] = "";
        char *meta = NULL;
        int state = 0, reason = 0;
        long long nums[3];
        const char *strs[3];
        virDomainGetUUIDString(doms[i], u);
        virDomainGetState(doms[i], &state, &reason, 0);
        if (j->s[0])
            meta = virDomainGetMetadata(doms[i], VIR_DOMAIN_METADATA_ELEMENT,
                                        j->s[0], VIR_DOMAIN_AFFECT_CURRENT);
        strs[0] = virDomainGetName(doms[i]);
        strs[1] = u;
        strs[2] = meta;
        nums[0] = state;
        nums[1] = virDomainIsActive(doms[i]) == 1;
        nums[2] = virDomainIsPersistent(doms[i]) == 1;
        vjob_row(j, strs, 3, nums, 3);
        free(meta);
        virDomainFree(doms[i]);
    }
    free(doms);
    virResetLastError();
    j->ok = 1;
}

static void dom_addresses(struct vjob *j, virDomainPtr d)
{
    virDomainInterfacePtr *ifs = NULL;
    int n = virDomainInterfaceAddresses(d, &ifs, (unsigned)j->n[0], 0), i;
    size_t k;
    if (n < 0) {
        vjob_fail(j);
        return;
    }
    for (i = 0; i < n; i++) {
        for (k = 0; k < ifs[i]->naddrs; k++) {
            const char *s[3] = {ifs[i]->name, ifs[i]->hwaddr,
                                ifs[i]->addrs[k].addr};
            long long nums[2] = {ifs[i]->addrs[k].prefix,
                                 ifs[i]->addrs[k].type};
            vjob_row(j, s, 3, nums, 2);
        }
        virDomainInterfaceFree(ifs[i]);
    }
    free(ifs);
    j->ok = 1;
}

static void dom_snapshots(struct vjob *j, virDomainPtr d)
{
    virDomainSnapshotPtr *snaps = NULL;
    int n = virDomainListAllSnapshots(d, &snaps, 0), i;
    if (n < 0) {
        vjob_fail(j);
        return;
    }
    for (i = 0; i < n; i++) {
        char *xml = virDomainSnapshotGetXMLDesc(snaps[i], 0);
        const char *s[2] = {virDomainSnapshotGetName(snaps[i]), xml};
        long long cur = virDomainSnapshotIsCurrent(snaps[i], 0) == 1;
        vjob_row(j, s, 2, &cur, 1);
        free(xml);
        virDomainSnapshotFree(snaps[i]);
    }
    free(snaps);
    virResetLastError();
    j->ok = 1;
}

/* Snapshot by name: revert or delete. */
static int dom_snapshot_op(struct vjob *j, virDomainPtr d)
{
    virDomainSnapshotPtr s = virDomainSnapshotLookupByName(d, j->s[1], 0);
    int rc;
    if (!s)
        return -1;
    rc = j->sub == DOM_SNAP_REVERT ? virDomainRevertToSnapshot(s, j->flags)
                                   : virDomainSnapshotDelete(s, j->flags);
    virDomainSnapshotFree(s);
    return rc;
}

static int dom_state(struct vjob *j, virDomainPtr d)
{
    int state = 0, reason = 0;
    if (virDomainGetState(d, &state, &reason, 0) < 0)
        return -1;
    j->r[0] = state;
    j->r[1] = reason;
    j->r[2] = virDomainIsPersistent(d) == 1;
    return 0;
}

static int dom_info(struct vjob *j, virDomainPtr d)
{
    virDomainInfo info;
    if (virDomainGetInfo(d, &info) < 0)
        return -1;
    j->r[0] = info.state;
    j->r[1] = (long long)info.maxMem;
    j->r[2] = (long long)info.memory;
    j->r[3] = info.nrVirtCpu;
    j->r[4] = (long long)info.cpuTime;
    j->r[5] =
        virDomainGetID(d) == (unsigned)-1 ? -1LL : (long long)virDomainGetID(d);
    return 0;
}

static int dom_text(struct vjob *j, virDomainPtr d)
{
    char *text = NULL;
    if (j->sub == DOM_XML)
        text = virDomainGetXMLDesc(d, j->flags);
    else if (j->sub == DOM_GET_META)
        text = virDomainGetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, j->s[1],
                                    j->flags);
    else {
        virDomainSnapshotPtr s =
            virDomainSnapshotCreateXML(d, j->s[1], j->flags);
        if (!s)
            return -1;
        set_out(j, 0, virDomainSnapshotGetName(s));
        virDomainSnapshotFree(s);
        return 0;
    }
    if (!text)
        return -1;
    set_out(j, 0, text);
    free(text);
    return 0;
}

static void op_dom(struct vjob *j)
{
    virDomainPtr d = dom_of(j);
    int rc = 0;
    if (!d) {
        vjob_fail(j);
        return;
    }
    switch (j->sub) {
    case DOM_START: rc = virDomainCreate(d); break;
    case DOM_SHUTDOWN: rc = virDomainShutdownFlags(d, j->flags); break;
    case DOM_DESTROY: rc = virDomainDestroyFlags(d, j->flags); break;
    case DOM_REBOOT: rc = virDomainReboot(d, j->flags); break;
    case DOM_RESET: rc = virDomainReset(d, 0); break;
    case DOM_UNDEFINE: rc = virDomainUndefineFlags(d, j->flags); break;
    case DOM_SUSPEND: rc = virDomainSuspend(d); break;
    case DOM_RESUME: rc = virDomainResume(d); break;
    case DOM_STATE: rc = dom_state(j, d); break;
    case DOM_INFO: rc = dom_info(j, d); break;
    case DOM_XML:
    case DOM_GET_META:
    case DOM_SNAP_CREATE: rc = dom_text(j, d); break;
    case DOM_SET_META:
        rc = virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, j->s[1],
                                  j->s[2], j->s[3], j->flags);
        break;
    case DOM_ADDRS:
        dom_addresses(j, d);
        virDomainFree(d);
        return;
    case DOM_SNAP_LIST:
        dom_snapshots(j, d);
        virDomainFree(d);
        return;
    case DOM_SNAP_REVERT:
    case DOM_SNAP_DELETE: rc = dom_snapshot_op(j, d); break;
    default: rc = -1; break;
    }
    if (rc < 0)
        vjob_fail(j);
    else
        j->ok = 1;
    virDomainFree(d);
}

static void op_define(struct vjob *j)
{
    virDomainPtr d = virDomainDefineXML(j->c->conn, j->s[0]);
    if (!d) {
        vjob_fail(j);
        return;
    }
    name_uuid(j, virDomainGetName(d), dom_uuid, d);
    virDomainFree(d);
    j->ok = 1;
}

static void op_lookup(struct vjob *j)
{
    virDomainPtr d = dom_of(j);
    if (!d) {
        vjob_fail(j);
        return;
    }
    name_uuid(j, virDomainGetName(d), dom_uuid, d);
    virDomainFree(d);
    j->ok = 1;
}

static void net_list(struct vjob *j)
{
    virNetworkPtr *nets = NULL;
    int n = virConnectListAllNetworks(j->c->conn, &nets, 0), i;
    if (n < 0) {
        vjob_fail(j);
        return;
    }
    for (i = 0; i < n; i++) {
        char u[VIR_UUID_STRING_BUFLEN] = "";
        char *xml = virNetworkGetXMLDesc(nets[i], 0);
        const char *s[3] = {virNetworkGetName(nets[i]), u, xml};
        long long nums[2] = {virNetworkIsActive(nets[i]) == 1,
                             virNetworkIsPersistent(nets[i]) == 1};
        virNetworkGetUUIDString(nets[i], u);
        vjob_row(j, s, 3, nums, 2);
        free(xml);
        virNetworkFree(nets[i]);
    }
    free(nets);
    j->ok = 1;
}

static int net_leases(struct vjob *j, virNetworkPtr net)
{
    virNetworkDHCPLeasePtr *leases = NULL;
    int n = virNetworkGetDHCPLeases(net, NULL, &leases, 0), i;
    if (n < 0)
        return -1;
    for (i = 0; i < n; i++) {
        const char *s[4] = {leases[i]->iface, leases[i]->mac, leases[i]->ipaddr,
                            leases[i]->hostname};
        long long nums[3] = {leases[i]->expirytime, leases[i]->prefix,
                             leases[i]->type};
        vjob_row(j, s, 4, nums, 3);
        virNetworkDHCPLeaseFree(leases[i]);
    }
    free(leases);
    return 0;
}

static void op_net(struct vjob *j)
{
    virNetworkPtr net;
    int rc = 0;
    if (j->sub == NET_LIST) {
        net_list(j);
        return;
    }
    net = j->sub == NET_DEFINE ? virNetworkDefineXML(j->c->conn, j->s[0])
                               : virNetworkLookupByName(j->c->conn, j->s[0]);
    if (!net) {
        vjob_fail(j);
        return;
    }
    switch (j->sub) {
    case NET_DEFINE: name_uuid(j, virNetworkGetName(net), net_uuid, net); break;
    case NET_START: rc = virNetworkCreate(net); break;
    case NET_DESTROY: rc = virNetworkDestroy(net); break;
    case NET_UNDEFINE: rc = virNetworkUndefine(net); break;
    case NET_LEASES: rc = net_leases(j, net); break;
    case NET_XML: {
        char *xml = virNetworkGetXMLDesc(net, 0);
        rc = xml ? 0 : -1;
        set_out(j, 0, xml);
        free(xml);
        break;
    }
    default: rc = -1; break;
    }
    if (rc < 0)
        vjob_fail(j);
    else
        j->ok = 1;
    virNetworkFree(net);
}

static void pool_list(struct vjob *j)
{
    virStoragePoolPtr *pools = NULL;
    int n = virConnectListAllStoragePools(j->c->conn, &pools, 0), i;
    if (n < 0) {
        vjob_fail(j);
        return;
    }
    for (i = 0; i < n; i++) {
        char u[VIR_UUID_STRING_BUFLEN] = "";
        char *xml = virStoragePoolGetXMLDesc(pools[i], 0);
        const char *s[3] = {virStoragePoolGetName(pools[i]), u, xml};
        long long nums[2] = {virStoragePoolIsActive(pools[i]) == 1,
                             virStoragePoolIsPersistent(pools[i]) == 1};
        virStoragePoolGetUUIDString(pools[i], u);
        vjob_row(j, s, 3, nums, 2);
        free(xml);
        virStoragePoolFree(pools[i]);
    }
    free(pools);
    j->ok = 1;
}

static int vol_list(struct vjob *j, virStoragePoolPtr pool)
{
    virStorageVolPtr *vols = NULL;
    int n = virStoragePoolListAllVolumes(pool, &vols, 0), i;
    if (n < 0)
        return -1;
    for (i = 0; i < n; i++) {
        char *path = virStorageVolGetPath(vols[i]);
        virStorageVolInfo info;
        const char *s[2] = {virStorageVolGetName(vols[i]), path};
        long long nums[2] = {0, 0};
        if (virStorageVolGetInfo(vols[i], &info) == 0) {
            nums[0] = (long long)info.capacity;
            nums[1] = (long long)info.allocation;
        }
        vjob_row(j, s, 2, nums, 2);
        free(path);
        virStorageVolFree(vols[i]);
    }
    free(vols);
    return 0;
}

static int vol_op(struct vjob *j, virStoragePoolPtr pool)
{
    virStorageVolPtr v;
    char *path;
    int rc = 0;
    if (j->sub == VOL_CREATE)
        v = virStorageVolCreateXML(pool, j->s[1], 0);
    else
        v = virStorageVolLookupByName(pool, j->s[1]);
    if (!v)
        return -1;
    if (j->sub == VOL_DELETE)
        rc = virStorageVolDelete(v, 0);
    else {
        path = virStorageVolGetPath(v);
        set_out(j, 0, path);
        free(path);
    }
    virStorageVolFree(v);
    return rc;
}

static void op_pool(struct vjob *j)
{
    virStoragePoolPtr pool;
    int rc = 0;
    if (j->sub == POOL_LIST) {
        pool_list(j);
        return;
    }
    pool = j->sub == POOL_DEFINE
               ? virStoragePoolDefineXML(j->c->conn, j->s[0], 0)
               : virStoragePoolLookupByName(j->c->conn, j->s[0]);
    if (!pool) {
        vjob_fail(j);
        return;
    }
    switch (j->sub) {
    case POOL_DEFINE:
        name_uuid(j, virStoragePoolGetName(pool), pool_uuid, pool);
        break;
    case POOL_BUILD: rc = virStoragePoolBuild(pool, 0); break;
    case POOL_START: rc = virStoragePoolCreate(pool, 0); break;
    case POOL_DESTROY: rc = virStoragePoolDestroy(pool); break;
    case POOL_UNDEFINE: rc = virStoragePoolUndefine(pool); break;
    case POOL_REFRESH: rc = virStoragePoolRefresh(pool, 0); break;
    case VOL_LIST: rc = vol_list(j, pool); break;
    case VOL_CREATE:
    case VOL_PATH:
    case VOL_DELETE: rc = vol_op(j, pool); break;
    default: rc = -1; break;
    }
    if (rc < 0)
        vjob_fail(j);
    else
        j->ok = 1;
    virStoragePoolFree(pool);
}

static void op_node(struct vjob *j)
{
    virNodeInfo info;
    unsigned long long free_mem = virNodeGetFreeMemory(j->c->conn);
    unsigned long ver = 0;
    char *host;
    if (virNodeGetInfo(j->c->conn, &info) < 0) {
        vjob_fail(j);
        return;
    }
    virResetLastError(); /* free memory is 0 where the driver cannot say */
    virConnectGetLibVersion(j->c->conn, &ver);
    host = virConnectGetHostname(j->c->conn);
    j->r[0] = (long long)free_mem;
    j->r[1] = (long long)info.memory;
    j->r[2] = info.cpus;
    j->r[3] = (long long)ver;
    set_out(j, 0, host);
    set_out(j, 1, info.model);
    free(host);
    j->ok = 1;
}

void vjob_run(struct vjob *j)
{
    if (j->op != VOP_OPEN && j->op != VOP_CLOSE && !j->c->conn) {
        j->err = strdup("the connection is closed");
        j->code = "VIR_ERR_INVALID_CONN";
        return;
    }
    switch (j->op) {
    case VOP_OPEN: op_open(j); break;
    case VOP_CLOSE: op_close(j); break;
    case VOP_DEFINE: op_define(j); break;
    case VOP_LOOKUP: op_lookup(j); break;
    case VOP_LIST: op_list(j); break;
    case VOP_DOM: op_dom(j); break;
    case VOP_NET: op_net(j); break;
    case VOP_POOL: op_pool(j); break;
    case VOP_NODE: op_node(j); break;
    default: break;
    }
}
