/* virt_ops: the operations a virt job names, and their sub-operations. The
 * order of each list matches the names mod_virt.c accepts from Lua. */
#ifndef BOMARUN_VIRT_OPS_H
#define BOMARUN_VIRT_OPS_H

/* VOP_CLOSE must stay 1: the worker ends after it. */
enum vop {
    VOP_OPEN,
    VOP_CLOSE,
    VOP_DEFINE,
    VOP_LOOKUP,
    VOP_LIST,
    VOP_DOM,
    VOP_NET,
    VOP_POOL,
    VOP_NODE
};

enum vdom {
    DOM_START,
    DOM_SHUTDOWN,
    DOM_DESTROY,
    DOM_REBOOT,
    DOM_RESET,
    DOM_UNDEFINE,
    DOM_SUSPEND,
    DOM_RESUME,
    DOM_STATE,
    DOM_INFO,
    DOM_XML,
    DOM_GET_META,
    DOM_SET_META,
    DOM_ADDRS,
    DOM_SNAP_CREATE,
    DOM_SNAP_LIST,
    DOM_SNAP_REVERT,
    DOM_SNAP_DELETE
};

enum vnet {
    NET_LIST,
    NET_DEFINE,
    NET_START,
    NET_DESTROY,
    NET_UNDEFINE,
    NET_LEASES,
    NET_XML
};

enum vpool {
    POOL_LIST,
    POOL_DEFINE,
    POOL_BUILD,
    POOL_START,
    POOL_DESTROY,
    POOL_UNDEFINE,
    POOL_REFRESH,
    VOL_LIST,
    VOL_CREATE,
    VOL_PATH,
    VOL_DELETE
};

#endif
