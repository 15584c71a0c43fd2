-- The resources the shipped runbooks use, per service, on top of the
-- generic collections in bomarun.openstack.  Each service is reached from
-- a handle: p.image, p.compute, p.network, p.loadbalancer, p.identity,
-- p.container_infra.
local json = require "bomarun.json"
local proc = require "bomarun.proc"

return function(M, service, collection)
  local S = M.services

  -- Identity (Keystone v3) ------------------------------------------------
  S.identity = service({
    projects = {service = "identity", path = "/v3/projects", key = "projects", single = "project", what = "project"},
    domains = {service = "identity", path = "/v3/domains", key = "domains", single = "domain", what = "domain"},
    users = {service = "identity", path = "/v3/users", key = "users", single = "user", what = "user"},
    roles = {service = "identity", path = "/v3/roles", key = "roles", single = "role", what = "role"},
  }, {
    --- Role assignments, filtered ({["user.id"] = ..., ["scope.project.id"] = ...}).
    role_assignments = function(h, _, query)
      return h:list("identity", "/v3/role_assignments", "role_assignments", {query = query})
    end,
    --- A project by name (in a domain, by name or id) or id.
    project = function(h, s, name_or_id, domain)
      local q
      if domain then
        local d, err, code = s.domains:find(domain)
        if not d then return nil, err, code end
        q = {domain_id = d.id}
      end
      return s.projects:find(name_or_id, q)
    end,
  })

  -- Image (Glance v2) -------------------------------------------------------
  S.image = service({
    images = {service = "image", path = "/v2/images", key = "images", what = "image",
              ok = {"active"}, fail = {"killed", "deleted", "deactivated"}},
  }, {
    list = function(_, s, query, opts) return s.images:list(query, opts) end,
    show = function(_, s, id) return s.images:show(id) end,
    find = function(_, s, name_or_id) return s.images:find(name_or_id) end,
    delete = function(_, s, id) return s.images:delete(id) end,
    --- Create an image record (queued): attrs may carry custom properties
    --- (kube_version, os_distro, ...) as top-level keys, as Glance wants.
    create = function(h, _, attrs)
      return h:call("POST", "image", "/v2/images", {body = attrs})
    end,
    --- Upload image data from a file (streamed, not loaded into memory).
    upload = function(h, _, id, path)
      return h:call("PUT", "image", "/v2/images/" .. id .. "/file", {body_file = path,
        content_type = "application/octet-stream", timeout = 3600})
    end,
    --- Stage data for the glance-direct import, then import it.
    stage = function(h, _, id, path)
      return h:call("PUT", "image", "/v2/images/" .. id .. "/stage", {body_file = path,
        content_type = "application/octet-stream", timeout = 3600})
    end,
    --- Import staged data ("glance-direct") or let Glance fetch a URL
    --- ("web-download", uri).
    import = function(h, _, id, method, uri)
      return h:call("POST", "image", "/v2/images/" .. id .. "/import",
                    {body = {method = {name = method, uri = uri}}})
    end,
    --- Set (or remove, with json.null) properties: a JSON-patch.
    set_properties = function(h, s, id, props)
      local img, err, code = s.images:show(id)
      if not img then return nil, err, code end
      local ops = {}
      local keys = {}
      for k in pairs(props) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do
        local v = props[k]
        if v == json.null then
          if img[k] ~= nil then ops[#ops + 1] = {op = "remove", path = "/" .. k} end
        else
          ops[#ops + 1] = {op = img[k] == nil and "add" or "replace", path = "/" .. k, value = v}
        end
      end
      return h:call("PATCH", "image", "/v2/images/" .. id, {body = json.array(ops),
        content_type = "application/openstack-images-v2.1-json-patch"})
    end,
    --- Wait for status active (fail at once on killed/deleted).
    wait_active = function(_, s, id, spec)
      spec = spec or {}
      spec.ok, spec.fail = {"active"}, {"killed", "deleted", "deactivated"}
      return s.images:wait(id, spec)
    end,
    --- Verify the image's os_hash_value against a local file (sha512 by
    --- default, Glance's os_hash_algo otherwise).
    verify = function(_, s, id, path)
      local img, err, code = s.images:show(id)
      if not img then return nil, err, code end
      local algo = img.os_hash_algo or "sha512"
      local tool = ({sha512 = "sha512sum", sha256 = "sha256sum", sha384 = "sha384sum", sha1 = "sha1sum",
                     md5 = "md5sum"})[algo]
      if not tool then return nil, "openstack: unsupported os_hash_algo " .. tostring(algo), "UNSUPPORTED" end
      local r, perr = proc.run{argv = {tool, path}, timeout = 3600, quiet = true}
      if not r then return nil, perr, "LOCAL_FILE" end
      local local_hash = r.stdout:match("^(%x+)")
      if not img.os_hash_value then
        return nil, "openstack: image " .. id .. " has no os_hash_value yet (status " .. tostring(img.status) .. ")", "NOT_READY"
      end
      if local_hash ~= img.os_hash_value then
        return nil, string.format("openstack: image %s %s %s differs from %s of %s", id, algo,
          img.os_hash_value, local_hash, path), "CHECKSUM"
      end
      return {algo = algo, value = local_hash}
    end,
  })

  -- Compute (Nova) ---------------------------------------------------------------
  local function action(h, id, body)
    return h:call("POST", "compute", "/servers/" .. id .. "/action", {body = body})
  end
  S.compute = service({
    servers = {service = "compute", path = "/servers", list_path = "/servers/detail", key = "servers",
               single = "server", what = "server", ok = {"ACTIVE"}, fail = {"ERROR"}},
    flavors = {service = "compute", path = "/flavors", list_path = "/flavors/detail", key = "flavors",
               single = "flavor", what = "flavor", name_filter = false},
    keypairs = {service = "compute", path = "/os-keypairs", key = "keypairs", single = "keypair", what = "keypair",
                name_filter = false},
    hypervisors = {service = "compute", path = "/os-hypervisors", list_path = "/os-hypervisors/detail",
                   key = "hypervisors", single = "hypervisor", what = "hypervisor", name_filter = false},
  }, {
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
  })

  -- Network (Neutron) --------------------------------------------------------------
  local function net(what, plural)
    return {service = "network", path = "/v2.0/" .. plural, key = plural, single = what, what = what}
  end
  S.network = service({
    networks = net("network", "networks"), subnets = net("subnet", "subnets"), routers = net("router", "routers"),
    ports = net("port", "ports"), security_groups = net("security_group", "security-groups"),
    floating_ips = net("floatingip", "floatingips"),
  }, {
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
  })

  -- Load balancer (Octavia) ----------------------------------------------------------
  local function lbaas(what, plural)
    return {service = "load-balancer", path = "/v2/lbaas/" .. plural, key = plural, single = what, what = what,
            ok = {"ACTIVE"}, fail = {"ERROR"}}
  end
  S.loadbalancer = service({
    loadbalancers = lbaas("loadbalancer", "loadbalancers"), listeners = lbaas("listener", "listeners"),
    pools = lbaas("pool", "pools"),
    amphorae = {service = "load-balancer", path = "/v2/octavia/amphorae", key = "amphorae", single = "amphora",
                what = "amphora", name_filter = false},
  }, {
    --- Members of a pool.
    members = function(h, _, pool_id)
      return collection(h, {service = "load-balancer", path = "/v2/lbaas/pools/" .. pool_id .. "/members",
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
  })

  -- Container infra (Magnum) -----------------------------------------------------------
  S.container_infra = service({
    templates = {service = "container-infra", path = "/clustertemplates", key = "clustertemplates",
                 what = "cluster template", bare_create = true, update_method = "PATCH", name_filter = false},
    clusters = {service = "container-infra", path = "/clusters", key = "clusters", what = "cluster",
                bare_create = true, ok = {"CREATE_COMPLETE", "UPDATE_COMPLETE"},
                fail = {"CREATE_FAILED", "UPDATE_FAILED", "DELETE_FAILED"}, show_after_find = true,
                name_filter = false},
  }, {
    --- Resize a cluster's default worker group.
    resize = function(h, _, id, node_count)
      return h:call("POST", "container-infra", "/clusters/" .. id .. "/actions/resize",
                    {body = {node_count = node_count}})
    end,
    --- health_status and its reason, as the runbooks gate on them.
    health = function(_, s, id)
      local c, err, code = s.clusters:show(id)
      if not c then return nil, err, code end
      return {status = c.health_status, reason = c.health_status_reason}
    end,
    --- Write a kubeconfig for the cluster to `path` (mode 0600), as
    --- `openstack coe cluster config` does for Kubernetes: the cluster's CA,
    --- and a client certificate Magnum signs for a key made here (the key
    --- never leaves this machine).  Returns path.
    config = function(h, s, id, path)
      local c, err, code = s.clusters:show(id)
      if not c then return nil, err, code end
      if not c.api_address then
        return nil, "openstack: cluster " .. id .. " has no api_address yet (status " .. tostring(c.status) .. ")",
          "NOT_READY"
      end
      local ca, cerr, ccode = h:call("GET", "container-infra", "/certificates/" .. c.uuid)
      if not ca then return nil, cerr, ccode end
      local dir = os.tmpname()
      os.remove(dir)
      local ok, perr = proc.run{argv = {"mkdir", "-m", "700", dir}, quiet = true}
      if not ok or ok.code ~= 0 then return nil, "openstack: cannot make a temporary directory: " .. tostring(perr), "LOCAL_FILE" end
      local function cleanup() proc.run{argv = {"rm", "-rf", dir}, quiet = true} end
      local r = proc.run{argv = {"openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", dir .. "/key.pem",
                                 "-subj", "/CN=admin/O=system:masters", "-out", dir .. "/csr.pem"}, timeout = 60, quiet = true}
      if not r or r.code ~= 0 then cleanup() return nil, "openstack: openssl could not make a key and CSR", "LOCAL" end
      local f = io.open(dir .. "/csr.pem")
      local csr = f:read("a")
      f:close()
      local signed, serr, scode = h:call("POST", "container-infra", "/certificates",
                                         {body = {cluster_uuid = c.uuid, csr = csr}})
      if not signed then cleanup() return nil, serr, scode end
      f = io.open(dir .. "/key.pem")
      local key = f:read("a")
      f:close()
      cleanup()
      local function b64(text)
        local rr = proc.run{argv = {"base64", "-w0"}, stdin = text, quiet = true}
        return rr.stdout
      end
      local name = c.name or c.uuid
      local yaml = table.concat({
        "apiVersion: v1", "kind: Config", "clusters:", "- name: " .. name, "  cluster:",
        "    server: " .. c.api_address, "    certificate-authority-data: " .. b64(ca.pem),
        "users:", "- name: admin", "  user:", "    client-certificate-data: " .. b64(signed.pem),
        "    client-key-data: " .. b64(key),
        "contexts:", "- name: default", "  context:", "    cluster: " .. name, "    user: admin",
        "current-context: default", ""}, "\n")
      local out = io.open(path, "w")
      if not out then return nil, "openstack: cannot write " .. path, "LOCAL_FILE" end
      out:close()
      proc.run{argv = {"chmod", "600", path}, quiet = true}
      out = io.open(path, "w")
      out:write(yaml)
      out:close()
      return path
    end,
  })
end
