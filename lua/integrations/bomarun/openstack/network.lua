--- Network (Neutron): networks, subnets, routers and their interfaces, ports, security groups, floating IPs.
--- The service's collections (generic list/show/find/create/delete/update/
--- wait, from bomarun.openstack) and its own methods, each called as
--- method(handle, service, ...).
local json = require "bomarun.json"

local function net(what, plural)
  return {service = "network", path = "/v2.0/" .. plural, key = plural, single = what, what = what}
end
return {collections = {
  networks = net("network", "networks"), subnets = net("subnet", "subnets"), routers = net("router", "routers"),
  ports = net("port", "ports"), security_groups = net("security_group", "security-groups"),
  floating_ips = net("floatingip", "floatingips"),
}, methods = {
  add_interface = function(h, _, router_id, subnet_id)
    return h:call("PUT", "network", "/v2.0/routers/" .. router_id .. "/add_router_interface",
                  {body = {subnet_id = subnet_id}})
  end,
  remove_interface = function(h, _, router_id, subnet_id)
    return h:call("PUT", "network", "/v2.0/routers/" .. router_id .. "/remove_router_interface",
                  {body = {subnet_id = subnet_id}})
  end,
  set_gateway = function(h, _, router_id, network_id)
    return h:call("PUT", "network", "/v2.0/routers/" .. router_id,
                  {body = {router = {external_gateway_info = network_id and {network_id = network_id} or json.null}}})
  end,
}}
