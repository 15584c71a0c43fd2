--- Load balancer (Octavia): load balancers, listeners, pools, members, amphorae, failover.
--- The service's collections (generic list/show/find/create/delete/update/
--- wait, from bomarun.openstack) and its own methods, each called as
--- method(handle, service, ...).

local function lbaas(what, plural)
  return {service = "load-balancer", path = "/v2/lbaas/" .. plural, key = plural, single = what, what = what,
          ok = {"ACTIVE"}, fail = {"ERROR"}}
end
return {collections = {
  loadbalancers = lbaas("loadbalancer", "loadbalancers"), listeners = lbaas("listener", "listeners"),
  pools = lbaas("pool", "pools"),
  amphorae = {service = "load-balancer", path = "/v2/octavia/amphorae", key = "amphorae", single = "amphora",
              what = "amphora", name_filter = false},
}, methods = {
  --- Members of a pool.
  members = function(h, _, pool_id)
    return h:collection({service = "load-balancer", path = "/v2/lbaas/pools/" .. pool_id .. "/members",
                          key = "members", single = "member", what = "member"})
  end,
  --- Fail over a load balancer (admin). Never retried.
  failover = function(h, _, id)
    return h:call("PUT", "load-balancer", "/v2/lbaas/loadbalancers/" .. id .. "/failover")
  end,
  amphora_failover = function(h, _, id)
    return h:call("PUT", "load-balancer", "/v2/octavia/amphorae/" .. id .. "/failover")
  end,
  --- Wait for provisioning_status ACTIVE (fail at once on ERROR).
  wait_active = function(_, s, id, spec)
    spec = spec or {}
    spec.field = "provisioning_status"
    return s.loadbalancers:wait(id, spec)
  end,
}}
