--- Compute (Nova): servers and their actions, flavors, keypairs, hypervisors.
--- The service's collections (generic list/show/find/create/delete/update/
--- wait, from bomarun.openstack) and its own methods, each called as
--- method(handle, service, ...).
local json = require "bomarun.json"

local function action(h, id, body)
  return h:call("POST", "compute", "/servers/" .. id .. "/action", {body = body})
end
return {collections = {
  servers = {service = "compute", path = "/servers", list_path = "/servers/detail", key = "servers",
             single = "server", what = "server", ok = {"ACTIVE"}, fail = {"ERROR"}},
  flavors = {service = "compute", path = "/flavors", list_path = "/flavors/detail", key = "flavors",
             single = "flavor", what = "flavor", name_filter = false},
  keypairs = {service = "compute", path = "/os-keypairs", key = "keypairs", single = "keypair", what = "keypair",
              name_filter = false},
  hypervisors = {service = "compute", path = "/os-hypervisors", list_path = "/os-hypervisors/detail",
                 key = "hypervisors", single = "hypervisor", what = "hypervisor", name_filter = false},
}, methods = {
  start = function(h, _, id) return action(h, id, {["os-start"] = json.null}) end,
  stop = function(h, _, id) return action(h, id, {["os-stop"] = json.null}) end,
  reboot = function(h, _, id, kind) return action(h, id, {reboot = {type = kind or "SOFT"}}) end,
  console_log = function(h, _, id, lines)
    local body, err, code = action(h, id, {["os-getConsoleOutput"] = {length = lines}})
    if not body then return nil, err, code end
    return body.output
  end,
  --- Servers in every project (admin).
  all_servers = function(_, s, query)
    local q = {all_tenants = 1}
    for k, v in pairs(query or {}) do q[k] = v end
    return s.servers:list(q)
  end,
  --- Keypairs come wrapped: {keypair = {...}} per item.
  keypair_names = function(_, s)
    local items, err, code = s.keypairs:list()
    if not items then return nil, err, code end
    local names = {}
    for _, it in ipairs(items) do names[#names + 1] = (it.keypair or it).name end
    return names
  end,
}}
