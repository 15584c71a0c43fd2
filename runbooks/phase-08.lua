-- Phase 08 -- Workload-Cluster Acceptance (D-011), from the seed
-- openstack-caracal-ipv4/runbooks/phase-08-workload-cluster-acceptance.md.
--
-- Prove tenant self-service Kubernetes end to end: create a workload cluster
-- from the template, confirm it converges (Ready nodes, CNI, CCM/CSI, API
-- LB), then run the D-011 acceptance bar.  Passing D-011 is the gate that
-- unlocks the project-completion tasks.
--
--   bomarun plan runbooks/phase-08.lua --profile caracal-ipv4
--   bomarun runbooks/phase-08.lua --profile caracal-ipv4
--
-- Decisions: D-011 (acceptance bar; amended by D-019 -- item 8 Designate
-- deferred), D-031/D-036 (driver/engine/chart coherence), D-039 (app-cred
-- roles incl. load-balancer_member), D-040 (reserved-host-memory), D-041
-- (non-HA mgmt manual start), D-042 (driver contract coherence -> health
-- HEALTHY after phase-07).  Troubleshooting: appendix-A -- stuck-delete
-- finalizer, LB-failover, OOM/manual-start, uninitialized-taint, CNI-label,
-- DOCFIX-021.
--
-- Scope hygiene (the seed's preambles, DOCFIX-034): one connection, two
-- handles.  `admin` is the admin-openrc scope (LB amphora/failover: these
-- 403 under tenant member scope); `project` is capi-mgmt, resolved by name
-- while admin-scoped and then narrowed to (cluster CRUD, show, config).  No
-- id is hard-coded: the profile's per-rebuild ids are only compared with
-- what the names resolve to, and a difference is logged.
--
-- Every constant of the seed's ENV list comes from the profile
-- (profiles/caracal-ipv4.lua); docs/phase-08.md says what each step runs
-- against on the local profile.
local runbook = require "bomarun.runbook"
local openstack = require "bomarun.openstack"
local http = require "bomarun.http"
local json = require "bomarun.json"
local proc = require "bomarun.proc"
local task = require "bomarun.task"

-- One connection for the run, made on first use (so --only/--resume work).
local conn, scopes = nil, {}
local function cloud(s)
  if not conn then
    local err
    conn, err = openstack.connect{cloud = s.env.cloud, clouds_file = s.env.clouds_file}
    if not conn then s:fail("authenticate to cloud " .. tostring(s.env.cloud) .. ": " .. tostring(err)) end
  end
  return conn
end
-- Admin scope: the admin-openrc project (token -> admin).
local function admin(s)
  if not scopes.admin then
    local h, err = cloud(s):scoped{project = s.env.admin_project, domain = s.env.admin_domain}
    if not h then s:fail("admin scope " .. s.env.admin_project .. ": " .. tostring(err)) end
    scopes.admin = h
  end
  return scopes.admin
end
-- Project scope: capi-mgmt in domain capi, resolved by name, then narrowed to.
-- With `project_cloud` in the profile the narrowing uses that clouds.yaml
-- entry's credentials (a site whose admin holds no role in capi-mgmt).
local function project(s)
  if not scopes.project then
    local base = cloud(s)
    if s.env.project_cloud then
      local err
      base, err = openstack.connect{cloud = s.env.project_cloud, clouds_file = s.env.clouds_file}
      if not base then s:fail("authenticate to cloud " .. s.env.project_cloud .. ": " .. tostring(err)) end
    end
    local h, err = base:scoped{project = s.env.project, domain = s.env.project_domain}
    if not h then s:fail("project scope " .. s.env.project_domain .. "/" .. s.env.project .. ": " .. tostring(err)) end
    scopes.project = h
  end
  return scopes.project
end

local function expand(path)
  if type(path) == "string" and path:sub(1, 2) == "~/" then return (os.getenv("HOME") or "") .. path:sub(2) end
  return path
end

local function errtext(err) return err and (": " .. tostring(err)) or "" end

-- h:call's answer to a request without a body (DELETE, failover): the body
-- (often empty), the status and the headers; or nil, message, CODE.
local function accepted(_, status_or_err)
  if type(status_or_err) == "number" then return true end
  return nil, status_or_err
end
-- The same, a 404 (already gone) counting as done.
local function gone(_, status_or_err, code)
  if type(status_or_err) == "number" or code == "HTTP_404" then return true end
  return nil, status_or_err
end
-- "%{cluster}" etc. in a profile string, from the run's values.
local function fill(fmt, vars)
  return (fmt:gsub("%%{([%w_]+)}", function(k) return tostring(vars[k] or "") end))
end

-- A per-rebuild id in the profile is informational only: compare and log.
local function compare_rebuild_id(s, what, resolved)
  local known = (s.env.rebuild_ids or {})[what]
  if known and known ~= resolved then
    s:log("%s resolved to %s (the profile's per-rebuild id %s is stale: the name wins)", what, resolved, known)
  end
end

-- The image's driver properties (top-level in Glance v2).
local function image_props(img)
  local p = img.properties or {}
  return img.kube_version or p.kube_version, img.os_distro or p.os_distro
end

-- Run a command the profile names: {argv = {...}} locally, or
-- {via = "ssh", host =, port =, user =, key =, known_hosts =, host_key_policy =, command = "..."}.
local function run_named(spec, timeout)
  if spec.via == "ssh" then
    local ssh = require "bomarun.ssh"
    local sess, err = ssh.connect{host = spec.host, port = spec.port or 22, user = spec.user, key = expand(spec.key),
                                  known_hosts = expand(spec.known_hosts), host_key_policy = spec.host_key_policy or "strict",
                                  timeout = timeout}
    if not sess then return nil, "ssh " .. tostring(spec.user) .. "@" .. tostring(spec.host) .. errtext(err) end
    local r, xerr = sess:exec(spec.command, {timeout = timeout})
    sess:close()
    if not r then return nil, "ssh exec " .. spec.command .. errtext(xerr) end
    return {code = r.status, stdout = r.stdout, stderr = r.stderr}
  end
  local r, err = proc.run{argv = spec.argv, timeout = timeout}
  if not r then return nil, table.concat(spec.argv, " ") .. errtext(err) end
  return r
end

-- The D-011 items' verdicts, read back from the run's own journal (the
-- step_end events), for the exit gate's summary in the seed's form.
local function verdicts(s)
  local out = {}
  local f = io.open(s.run.dir .. "/events.jsonl")
  if not f then return out end
  for line in f:lines() do
    if line:find('"step_end"', 1, true) then
      local ev = json.decode(line)
      if type(ev) == "table" and ev.kind == "item" then out[ev.id] = ev.status end
    end
  end
  f:close()
  return out
end

-- An acceptance item, with what it checks declared for the reader.
local function item(id, title, body, gates)
  return runbook.item{id, title, body, gates = gates}
end

local cluster_cleanup  -- 8.1's ledger entry, discharged by 8.5

-- Delete a cluster and wait until it is gone (404).  A delete that lands
-- while Heat is still creating makes Heat cancel the create first (the
-- cluster shows CREATE_FAILED), so the delete is asked again whenever the
-- cluster is not DELETE_IN_PROGRESS, until it is gone or the time is up.
local function delete_cluster_to_gone(ci, id, timeout)
  local deadline = task.now() + timeout
  local last
  while true do
    local c, err, code = ci.clusters:show(id)
    if not c and code == "HTTP_404" then return true end
    if c then
      last = c.status
      if c.status ~= "DELETE_IN_PROGRESS" then
        local ok, derr = gone(ci.clusters:delete(id))
        if not ok then last = c.status .. " (delete: " .. tostring(derr) .. ")" end
      end
    else
      last = tostring(err)
    end
    if task.now() >= deadline then
      return nil, string.format("cluster %s not gone after %d s: %s", id, timeout, last)
    end
    task.sleep(5)
  end
end

local function cluster_show(s, id)
  return project(s).container_infra.clusters:show(id)
end

-- The reasons a cluster failed: its status_reason, its faults and each
-- nodegroup's status_reason.
local function failure_reasons(s, c)
  local lines = {"status_reason: " .. tostring(c.status_reason)}
  if type(c.faults) == "table" then
    for k, v in pairs(c.faults) do lines[#lines + 1] = "fault " .. tostring(k) .. ": " .. tostring(v) end
  end
  local ngs = project(s):call("GET", "container-infra", "/clusters/" .. c.uuid .. "/nodegroups")
  for _, ng in ipairs(type(ngs) == "table" and ngs.nodegroups or {}) do
    local full = project(s):call("GET", "container-infra", "/clusters/" .. c.uuid .. "/nodegroups/" .. ng.uuid) or ng
    if full.status and full.status ~= "CREATE_COMPLETE" then
      lines[#lines + 1] = string.format("nodegroup %s (%s): %s: %s", tostring(full.name), tostring(full.role),
                                        tostring(full.status), tostring(full.status_reason))
    end
  end
  return table.concat(lines, "; ")
end

-- The API load balancer the driver made for the cluster (admin scope sees
-- every project's): the profile's match string, with %{cluster},
-- %{stack_id}, %{project_id}, %{uuid} filled in, found in the LB's name.
local function find_api_lb(s)
  local want = fill(s.env.api_lb_match, {cluster = s.env.cluster, stack_id = s.state.stack_id,
                                         project_id = s.state.project_id, uuid = s.state.cluster_id})
  local lbs, err = admin(s).loadbalancer.loadbalancers:list({project_id = s.state.project_id})
  if not lbs then return nil, err end
  local hits = {}
  for _, lb in ipairs(lbs) do
    if type(lb.name) == "string" and lb.name:find(want, 1, true) then hits[#hits + 1] = lb end
  end
  if #hits ~= 1 then
    return nil, string.format("%d load balancers in project %s have '%s' in their name", #hits,
                              tostring(s.state.project_id), want)
  end
  return hits[1]
end

local function k8s_client(s)
  local k8s = require "bomarun.k8s"
  local opts = {kubeconfig = s.state.kubeconfig}
  for k, v in pairs(s.env.k8s_connect or {}) do opts[k] = expand(v) end
  return k8s.connect(opts)
end

return runbook{
  id = "phase-08",
  title = "Phase 08 -- Workload-Cluster Acceptance (D-011)",
  description = "Create a workload cluster from the template, confirm it converges (Ready nodes, CNI, CCM/CSI, "
    .. "API LB), then run the D-011 acceptance bar (amended by D-019). Passing D-011 unlocks the "
    .. "project-completion tasks.",
  decisions = {"D-011", "D-019", "D-031", "D-036", "D-039", "D-040", "D-041", "D-042", "D-012"},
  profile = "caracal-ipv4",
  needs = {cloud = "string", admin_project = "string", admin_domain = "string", project = "string",
           project_domain = "string", template = "string", image = "string", kube_version = "string",
           os_distro = "string", ext_net = "string", keypair = "string", cluster = "string",
           workload_cidr = "string", flavors = "table", image_source = "table", template_attrs = "table",
           reserved_memory = "table", charms_status = "table", core_services = "table", tenant_vm = "table",
           vault = "table", snapshot = "table", kubeconfig_dir = "string", api_lb_match = "string",
           addons = "table"},
  defaults = {master_count = 1, node_count = 2, node_total = 3, create_timeout = 1200, poll_interval = 30,
              image_timeout = 600, k8s_timeout = 600, failover_timeout = 600, delete_timeout = 1200,
              clean_delete = false, expect_health = "HEALTHY", round_robin = {},
              api_lb_operating_status = "ONLINE"},

  runbook.phase{"Prerequisites (must be true entering phase-08)",
    runbook.step{"8.0.1", "Scope handles: admin, then capi-mgmt resolved by name (DOCFIX-034)",
      gates = {"admin scope authenticates", "capi-mgmt resolves by name in its domain and the token narrows to it"},
      function(s)
        local a = admin(s)
        s:log("admin: %s", a:scope_description())
        local pr, err = a.identity:project(s.env.project, s.env.project_domain)
        s:gate(pr ~= nil, "project " .. s.env.project_domain .. "/" .. s.env.project .. " resolves by name" .. errtext(err))
        compare_rebuild_id(s, "project", pr.id)
        s:capture("project_id", pr.id)
        local p = project(s)
        s:gate(p.project and p.project.id == pr.id, "the project token is scoped to " .. pr.id)
        s:log("project: %s", p:scope_description())
        if a.project then compare_rebuild_id(s, "admin_project", a.project.id) end
      end},
    runbook.step{"8.0.2", "phase-04: the external provider network is present", function(s)
      local net, err = admin(s).network.networks:find(s.env.ext_net)
      s:gate(net ~= nil, "network " .. s.env.ext_net .. " present" .. errtext(err))
      s:gate(net["router:external"] == true, s.env.ext_net .. " is router:external (API-LB and node FIPs come from it)")
      compare_rebuild_id(s, "ext_net", net.id)
      s:capture("ext_net_id", net.id)
    end},
    runbook.step{"8.0.3", "phase-05: the load-balancer API (Octavia) answers", function(s)
      local body, status = project(s):request("GET", "load-balancer", "/v2/lbaas/loadbalancers", {query = {limit = 1}})
      s:gate(status == 200 and type(body) == "table",
             "GET /v2/lbaas/loadbalancers answers 200 (got " .. tostring(status) .. ")")
    end},
    runbook.step{"8.0.4", "D-040: reserved_host_memory_mb in effect on a compute host",
      gates = {"the profile's command reports reserved_host_memory_mb = the profile's value (8192)"},
      function(s)
        local rm = s.env.reserved_memory
        local r, err = run_named(rm, rm.timeout or 60)
        s:gate(r ~= nil, "reserved-memory command ran" .. errtext(err))
        s:log("%s", (r.stdout or ""):gsub("%s+$", ""))
        local v = tonumber((r.stdout or ""):match("reserved_host_memory_mb%s*=%s*(%d+)")
                           or (r.stdout or ""):match("^%s*(%d+)%s*$"))
        s:capture("reserved_host_memory_mb", v)
        s:gate(v == rm.expect, string.format("reserved_host_memory_mb = %s (expect %s; default 512 over-commits "
          .. "the hyperconverged hosts)", tostring(v), tostring(rm.expect)))
      end},
    runbook.step{"8.0.5", "Image present AND carrying kube_version / os_distro (P6-CONTRACT)",
      gates = {"a present image carries kube_version and os_distro (the driver reads the version from the image)"},
      function(s)
        local img, err, code = admin(s).image:find(s.env.image)
        if not img then
          s:gate(code == "NOT_FOUND", "image lookup " .. s.env.image .. errtext(err))
          s:log("image %s ABSENT: 8.0.6 stages and verifies it (FINDING-3)", s.env.image)
          s:capture("image_absent", true)
          return
        end
        compare_rebuild_id(s, "image", img.id)
        s:capture("image_absent", false)
        s:capture("image_id", img.id)
        local kv, od = image_props(img)
        s:log("kube_version= %s os_distro= %s status= %s", tostring(kv), tostring(od), tostring(img.status))
        s:gate(kv == s.env.kube_version, "image kube_version = " .. s.env.kube_version .. " (got " .. tostring(kv) .. ")")
        s:gate(od == s.env.os_distro, "image os_distro = " .. s.env.os_distro .. " (got " .. tostring(od) .. ")")
      end},
    runbook.step{"8.0.6", "Stage-and-verify the image if absent (FINDING-3: curl + sha512, glance-direct import)",
      mutation = true, timeout = 7200,
      gates = {"sha512 of the downloaded file = the manifest's", "image data sent (glance-direct import)"},
      function(s)
        if not s.state.image_absent then s:skip("image " .. s.env.image .. " present") end
        local src = s.env.image_source
        local path = expand(src.staging)
        local have = false
        local f = io.open(path)
        if f then
          f:close()
          local r = proc.run{argv = {"sha512sum", path}, timeout = 3600}
          have = r and r.code == 0 and r.stdout:match("^(%x+)") == src.sha512
          s:log(have and "[OK] staged image present + sha512-valid; skipping download"
                      or "[..] staged file present but its sha512 differs: downloading again")
        end
        if not have then
          -- libcurl's UA passes the CDN (glance's urllib UA 403s); hashed as it streams.
          local part = path .. ".part"
          local r, err = http.request{url = src.url, output_file = part, output_digest = "sha512",
                                      timeout = src.timeout or 3600}
          s:gate(r ~= nil and r.status == 200, "download " .. src.url .. " (HTTP " .. tostring(r and r.status) .. ")"
                 .. errtext(err))
          if r.digest ~= src.sha512 then
            os.remove(part)
            s:gate(false, "sha512 mismatch exp=" .. src.sha512 .. " got=" .. tostring(r.digest))
          end
          s:gate(os.rename(part, path), "staged " .. path)
          s:log("[OK] sha512 verified against the manifest (%s)", src.manifest or "profile")
        end
        local a = admin(s)
        local img, err = a.image:create{name = s.env.image, disk_format = src.disk_format or "qcow2",
          container_format = src.container_format or "bare", visibility = src.visibility,
          os_distro = s.env.os_distro, kube_version = s.env.kube_version}
        s:gate(img ~= nil, "image record " .. s.env.image .. " created" .. errtext(err))
        s:capture("image_id", img.id)
        s:cleanup("delete image " .. s.env.image .. " (" .. img.id .. ")",
                  function() assert(accepted(a.image:delete(img.id))) end)
        local ok, uerr
        if (src.import_method or "glance-direct") == "glance-direct" then
          ok, uerr = a.image:stage(img.id, path)
          if ok then ok, uerr = a.image:import(img.id, "glance-direct") end
        else
          ok, uerr = a.image:upload(img.id, path)
        end
        s:gate(ok ~= nil, "image data sent (" .. (src.import_method or "glance-direct") .. ")" .. errtext(uerr))
        s:poll{function()
                 local i, e = a.image:show(img.id)
                 if not i then return nil, e end
                 return i.status
               end, ok = {"active"}, fail = {"killed", "deleted", "deactivated"},
               timeout = s.env.image_timeout, interval = src.poll_interval or 15, what = "image status"}
      end},
    runbook.step{"8.0.7", "GATE: image active with kube_version / os_distro", function(s)
      local img, err = admin(s).image:show(s.state.image_id)
      s:gate(img ~= nil, "image " .. tostring(s.state.image_id) .. " shows" .. errtext(err))
      local kv, od = image_props(img)
      s:gate(img.status == "active", "image status active (got " .. tostring(img.status) .. ")")
      s:gate(kv == s.env.kube_version, "kube_version = " .. s.env.kube_version)
      s:gate(od == s.env.os_distro, "os_distro = " .. s.env.os_distro)
    end},
    runbook.step{"8.0.8", "Cluster template present, else created with network_driver calico pinned (DOCFIX-032)",
      mutation = true,
      gates = {"template network_driver = calico (chart 0.25.1 ships only Calico; never flannel)"},
      function(s)
        local ci = project(s).container_infra
        local t, err, code = ci.templates:find(s.env.template)
        if t then
          compare_rebuild_id(s, "template", t.uuid)
          s:log("template OK: %s (%s)", s.env.template, t.uuid)
        else
          s:gate(code == "NOT_FOUND", "template lookup " .. s.env.template .. errtext(err))
          s:log("template ABSENT -- creating it")
          local attrs = {name = s.env.template, image_id = s.state.image_id, external_network_id = s.state.ext_net_id,
                         master_flavor_id = s.env.flavors.master, flavor_id = s.env.flavors.worker,
                         network_driver = "calico"}
          for k, v in pairs(s.env.template_attrs) do
            if k == "fixed_network" or k == "fixed_subnet" then
              local coll = k == "fixed_network" and project(s).network.networks or project(s).network.subnets
              local obj, ferr = coll:find(v)
              s:gate(obj ~= nil, k .. " " .. v .. " resolves by name" .. errtext(ferr))
              attrs[k] = obj.id
            elseif k ~= "network_driver" then
              attrs[k] = v
            end
          end
          attrs.labels = attrs.labels or {}
          attrs.labels.fixed_subnet_cidr = attrs.labels.fixed_subnet_cidr or s.env.workload_cidr
          t, err = ci.templates:create(attrs)
          s:gate(t ~= nil, "template " .. s.env.template .. " created" .. errtext(err))
          s:cleanup("delete cluster template " .. s.env.template .. " (" .. t.uuid .. ")",
                    function() assert(accepted(ci.templates:delete(t.uuid))) end)
        end
        s:capture("template_id", t.uuid)
        s:gate(t.network_driver == "calico", "template network_driver = calico (got " .. tostring(t.network_driver) .. ")")
      end},
  },

  runbook.phase{"Workload cluster (8.1-8.3)",
    runbook.step{"8.1", "Create the workload cluster (MUTATION; the driver mints the app-cred, D-039)",
      mutation = true, timeout = 300,
      function(s)
        local ci = project(s).container_infra
        local existing = ci.clusters:find(s.env.cluster)
        s:gate(existing == nil, "no cluster named " .. s.env.cluster .. " exists yet")
        local c, err = ci.clusters:create{name = s.env.cluster, cluster_template_id = s.state.template_id,
          keypair = s.env.keypair, master_count = s.env.master_count, node_count = s.env.node_count}
        s:gate(c ~= nil, "cluster " .. s.env.cluster .. " create accepted" .. errtext(err))
        s:capture("cluster_id", c.uuid)
        cluster_cleanup = s:cleanup("delete cluster " .. s.env.cluster .. " (" .. c.uuid .. ")", function()
          assert(delete_cluster_to_gone(ci, c.uuid, s.env.delete_timeout))
        end)
        local shown = cluster_show(s, c.uuid)
        s:log("uuid %s status %s", c.uuid, tostring(shown and shown.status))
      end},
    runbook.step{"8.2", "Watch to CREATE_COMPLETE; capture api_address, the API LB and health_status",
      timeout = 3600,
      gates = {"status = CREATE_COMPLETE (CREATE_FAILED fails at once with status_reason and nodegroup faults)",
               "API LB ACTIVE/ONLINE", "health_status HEALTHY (D-042)"},
      function(s)
        local st = s:poll{function()
                            local c, err = cluster_show(s, s.state.cluster_id)
                            if not c then return nil, err end
                            return c.status
                          end, ok = {"CREATE_COMPLETE", "CREATE_FAILED"},
                          timeout = s.env.create_timeout, interval = s.env.poll_interval, what = "cluster status"}
        local c = assert(cluster_show(s, s.state.cluster_id))
        if st == "CREATE_FAILED" then
          s:gate(false, "cluster " .. s.env.cluster .. " CREATE_FAILED (appendix-A: stuck-delete / app-cred 403 / OOM): "
                 .. failure_reasons(s, c))
        end
        s:gate(st == "CREATE_COMPLETE", "status = CREATE_COMPLETE")
        local health = c.health_status ~= json.null and c.health_status or nil
        s:log("api_address %s master_count %s node_count %s health_status %s", tostring(c.api_address),
              tostring(c.master_count), tostring(c.node_count), tostring(health))
        s:capture("api_address", c.api_address)
        s:capture("stack_id", c.stack_id)
        s:capture("health_status", health)
        s:capture("cluster_status", st)
        local lb, err = find_api_lb(s)
        s:gate(lb ~= nil, "the cluster's API load balancer found" .. errtext(err))
        s:capture("api_lb_id", lb.id)
        s:capture("api_lb_vip", lb.vip_address)
        s:log("API LB %s VIP %s %s/%s", lb.id, tostring(lb.vip_address), lb.provisioning_status, lb.operating_status)
        s:gate(lb.provisioning_status == "ACTIVE" and lb.operating_status == s.env.api_lb_operating_status,
               "API LB ACTIVE/" .. s.env.api_lb_operating_status .. " (got " .. lb.provisioning_status .. "/"
               .. lb.operating_status .. ")")
        if s.env.expect_health then
          s:check(c.health_status == s.env.expect_health, "health_status " .. s.env.expect_health .. " (got "
                  .. tostring(c.health_status) .. "; UNHEALTHY here is the D-042 cosmetic one: phase-07's driver clears it)")
        end
      end},
    runbook.step{"8.3", "Retrieve the workload kubeconfig; verify nodes / CNI / addons", timeout = 1800,
      gates = {"the kubeconfig directory is created (DOCFIX-037)", "3 nodes Ready at the image's kube_version",
               "Calico pods Running", "CCM Running, not crash-looping (D-011 item 5)", "Cinder CSI + CoreDNS Running",
               "no stuck pods"},
      function(s)
        local dir = expand(fill(s.env.kubeconfig_dir, {cluster = s.env.cluster, run = s.run.id}))
        -- DOCFIX-037: `coe cluster config --dir` does NOT create the dir.
        local r = proc.run{argv = {"mkdir", "-p", dir}, timeout = 10}
        s:gate(r and r.code == 0, "kubeconfig directory " .. dir .. " created")
        local path, err = project(s).container_infra:config(s.state.cluster_id, dir .. "/config")
        s:gate(path ~= nil, "kubeconfig from Magnum written to " .. dir .. "/config" .. errtext(err))
        s:capture("kubeconfig", dir .. "/config")
        local kc, kerr = k8s_client(s)
        s:gate(kc ~= nil, "the workload API answers with the kubeconfig" .. errtext(kerr))
        local nodes, nerr = kc:wait_nodes{count = s.env.node_total, version = s.env.kube_version,
                                          timeout = s.env.k8s_timeout, interval = 10}
        s:gate(nodes ~= nil, string.format("%d nodes Ready at %s", s.env.node_total, s.env.kube_version) .. errtext(nerr))
        s:capture("nodes_ready", #nodes)
        for _, a in ipairs(s.env.addons) do
          local pods, perr = kc:wait_pods{namespace = a.namespace, label_selector = a.label_selector, min = a.min,
                                          timeout = s.env.k8s_timeout, interval = 10}
          s:gate(pods ~= nil, a.name .. " pods Running (" .. a.namespace .. " " .. a.label_selector .. ")" .. errtext(perr))
          s:log("%s: %d pods Running", a.name, #pods)
        end
        local all, aerr = kc:wait_pods{all_namespaces = true, timeout = s.env.k8s_timeout, interval = 10}
        s:gate(all ~= nil, "no stuck pods (every pod Running or Succeeded)" .. errtext(aerr))
        s:capture("addons_ok", true)
      end},
  },

  runbook.acceptance{"D-011", "Step 8.4 -- D-011 acceptance bar (the gate)",
    item("D-011.1", "All charms active/idle (phase-03 re-confirmed)", function(i)
      local r, err = run_named(i.env.charms_status, 120)
      i:gate(r ~= nil and r.code == 0, "charm status command ran" .. errtext(err or (r and r.stderr)))
      local st, jerr = json.decode(r.stdout)
      i:gate(type(st) == "table", "status output is JSON" .. errtext(jerr))
      local n = 0
      local function unit(name, u)
        n = n + 1
        local ws = u["workload-status"] and u["workload-status"].current
        local js = u["juju-status"] and u["juju-status"].current
        i:check(ws == "active" and js == "idle", string.format("%s: %s/%s", name, tostring(ws), tostring(js)))
        for sub, su in pairs(u.subordinates or {}) do unit(sub, su) end
      end
      for app, a in pairs(st.applications or {}) do
        local as = a["application-status"] and a["application-status"].current
        i:check(as == "active", string.format("application %s: %s", app, tostring(as)))
        for uname, u in pairs(a.units or {}) do unit(uname, u) end
      end
      i:check(n > 0, n .. " units, nothing but active/idle")
    end, {"the profile's status command (juju status --format=json), parsed: every application active, "
                   .. "every unit and subordinate active/idle"}),
    item("D-011.2", "API reachability from the jumphost: every CORE service VIP answers (DOCFIX-039: gss out of scope)",
      function(i)
        local a = admin(i)
        local n = 0
        for _, svc in ipairs(i.env.core_services) do
          local url, err = a:endpoint(svc)
          if i:check(url ~= nil, svc .. " endpoint in the catalog" .. errtext(err)) then
            local base = url:match("^(https?://[^/]+)")
            local r, herr = http.request{url = base .. "/", timeout = 10, insecure = i.env.vip_insecure}
            local code = r and r.status
            i:check(code and code >= 200 and code < 500, string.format("%s %s answers %s", svc, base,
               tostring(code) .. errtext(herr)))
            n = n + 1
          end
        end
        for _, extra in ipairs(i.env.extra_vips or {}) do
          local r, herr = http.request{url = extra.url, timeout = 10, insecure = i.env.vip_insecure}
          i:check(r and r.status >= 200 and r.status < 500, extra.name .. " " .. extra.url .. " answers" .. errtext(herr))
        end
        i:check(n == #i.env.core_services, n .. " core VIPs checked")
      end, {"each core service's public endpoint from the catalog answers (2xx-4xx)"}),
    item("D-011.3", "API reachability from a tenant VM (Option B: the mgmt VM reaches the provider VIP)",
      function(i)
        local vm = i.env.tenant_vm
        local host = vm.host
        if not host then
          -- DOCFIX-038: the mgmt FIP is per-rebuild: resolved from the server, never hard-coded.
          local srv, err = project(i).compute.servers:find(vm.server)
          i:gate(srv ~= nil, "mgmt VM " .. tostring(vm.server) .. " found" .. errtext(err))
          for _, addrs in pairs(srv.addresses or {}) do
            for _, ad in ipairs(addrs) do
              if ad["OS-EXT-IPS:type"] == "floating" then host = ad.addr end
            end
          end
          i:gate(host ~= nil, "mgmt VM floating IP found")
        end
        local vip = vm.vip
        if not vip then
          local url = assert(admin(i):endpoint(vm.vip_service or "identity"))
          vip = url:match("^https?://([^/]+)")
          if not vip:find(":%d+$") then vip = vip .. (url:match("^https") and ":443" or ":80") end
        end
        local vhost, vport = vip:match("^%[?([^%]]+)%]?:(%d+)$")
        local cmd = string.format("timeout 6 bash -c 'exec 3<>/dev/tcp/%s/%s' && echo VIP-OK || echo VIP-FAIL",
                                  vhost, vport)
        local r, err = run_named({via = "ssh", host = host, port = vm.port, user = vm.user, key = vm.key,
                                  known_hosts = vm.known_hosts, host_key_policy = vm.host_key_policy, command = cmd}, 30)
        i:gate(r ~= nil, "ssh " .. tostring(vm.user) .. "@" .. host .. errtext(err))
        i:check(r.stdout:match("VIP%-OK") ~= nil, "tenant VM " .. host .. " reaches " .. vhost .. ":" .. vport
           .. " (" .. r.stdout:gsub("%s+$", "") .. ")")
      end, {"ssh to the mgmt VM (FIP resolved, DOCFIX-038); /dev/tcp probe of the provider VIP prints VIP-OK"}),
    item("D-011.4", "Octavia LB pattern re-passes: round-robin via a throwaway LoadBalancer Service, admin-scope failover",
      function(i)
        local rr = i.env.round_robin
        if rr.enabled ~= false then
          -- DOCFIX-040: no hand-built LB; the CCM builds it for a Service.
          local kc = assert(k8s_client(i))
          local ns, name = rr.namespace or "default", rr.name or "rr"
          local labels = {app = name}
          local dep = {apiVersion = "apps/v1", kind = "Deployment", metadata = {name = name, namespace = ns, labels = labels},
            spec = {replicas = 2, selector = {matchLabels = labels}, template = {metadata = {labels = labels},
              spec = {containers = {{name = "agnhost",
                image = rr.image or "registry.k8s.io/e2e-test-images/agnhost:2.40",
                args = {"netexec", "--http-port=8080"}}}}}}}
          local svc = {apiVersion = "v1", kind = "Service", metadata = {name = name, namespace = ns},
            spec = {type = "LoadBalancer", selector = labels, ports = {{port = 80, targetPort = 8080}}}}
          local _, derr = kc:create(dep)
          i:gate(derr == nil, "deployment " .. name .. " created" .. errtext(derr))
          local _, serr = kc:create(svc)
          -- Torn down whatever happens below (tears down the Octavia LB).
          local ok, perr = pcall(function()
            i:gate(serr == nil, "service " .. name .. " (type=LoadBalancer) created" .. errtext(serr))
            local ext, aerr = kc:service_address(name, {namespace = ns, timeout = rr.timeout or 600, interval = 5})
            i:gate(ext ~= nil, "EXTERNAL-IP assigned" .. errtext(aerr))
            local target = (rr.address_map or {})[ext] or ext
            local seen, n = {}, 0
            for _ = 1, 10 do
              local r = http.request{url = "http://" .. target .. (rr.port_suffix or "") .. "/hostname", timeout = 5}
              if r and r.status == 200 then
                local h = r.body:gsub("%s+$", "")
                if not seen[h] then seen[h], n = true, n + 1 end
              end
            end
            i:check(n >= 2, string.format("round-robin: %d pod names seen through %s (expect both)", n, ext))
          end)
          kc:delete("services", name, {namespace = ns, ignore_not_found = true})
          kc:delete("deployments", name, {namespace = ns, ignore_not_found = true})
          if not ok then error(perr, 0) end
        else
          i:log("round-robin: not run on this profile (round_robin.enabled = false): %s", tostring(rr.why))
        end
        -- Failover/recovery (admin scope) against the workload-cluster API LB.
        local a = admin(i)
        local fok, ferr = accepted(a.loadbalancer:failover(i.state.api_lb_id))
        i:gate(fok, "admin-scope failover of API LB " .. tostring(i.state.api_lb_id) .. " accepted" .. errtext(ferr))
        local st, werr = a.loadbalancer:wait_active(i.state.api_lb_id, {timeout = i.env.failover_timeout, interval = 5})
        i:check(st == "ACTIVE", "failover returns to ACTIVE" .. errtext(werr))
        local lb = a.loadbalancer.loadbalancers:show(i.state.api_lb_id)
        i:check(lb and lb.operating_status == i.env.api_lb_operating_status, "operating_status "
           .. i.env.api_lb_operating_status .. " (got " .. tostring(lb and lb.operating_status) .. ")")
        if rr.enabled == false then
          i:outstanding("round-robin through a LoadBalancer Service not run on this site (" .. tostring(rr.why)
                        .. "); failover PASS")
        end
      end, {"throwaway rr Deployment + type=LoadBalancer Service: both pod names seen (DOCFIX-040)",
                     "admin-scope failover of the API LB back to ACTIVE, operating_status ONLINE"}),
    item("D-011.5", "End-to-end Magnum CAPI cluster create, CCM not crash-looping (= the 8.1-8.3 gate)", function(i)
      i:check(i.state.cluster_status == "CREATE_COMPLETE", "8.2: CREATE_COMPLETE")
      i:check(i.state.nodes_ready == i.env.node_total, "8.3: " .. i.env.node_total .. " nodes Ready")
      i:check(i.state.addons_ok == true, "8.3: Calico, CCM, Cinder CSI, CoreDNS Running; no stuck pods")
    end, {"= the 8.1-8.3 gate: CREATE_COMPLETE, nodes Ready, CCM Running"}),
    item("D-011.6", "Vault unsealed (MANUAL unseal is the v1 standard; a re-confirmation, not a re-init)", function(i)
      local v = i.env.vault
      local r, err = http.request{url = v.url .. "/v1/sys/seal-status", timeout = 10, cainfo = expand(v.cacert),
                                  insecure = v.insecure}
      i:gate(r ~= nil and r.status == 200, "GET /v1/sys/seal-status" .. errtext(err or (r and r.status)))
      local st = json.decode(r.body)
      i:gate(type(st) == "table", "seal-status is JSON")
      i:check(st.sealed == false, string.format("vault Sealed=%s (%s %s, shares %s, threshold %s)", tostring(st.sealed),
         tostring(st.type), tostring(st.version), tostring(st.n), tostring(st.t)))
    end, {"GET /v1/sys/seal-status: sealed = false"}),
    item("D-011.7", "KVM snapshot baseline taken (D-012: Snapshot 1 post-validation, Snapshot 2 post-tenant-setup)",
      function(i)
        local sn = i.env.snapshot
        local virt = require "bomarun.virt"
        local c, err = virt.connect{uri = sn.uri}
        i:gate(c ~= nil, "hypervisor " .. tostring(sn.uri) .. errtext(err))
        local missing = {}
        for _, name in ipairs(sn.domains) do
          local d, derr = c:domain(name)
          if i:check(d ~= nil, "domain " .. name .. errtext(derr)) then
            local have = false
            for _, snap in ipairs(d:snapshots() or {}) do
              if snap.name == sn.name then have = true end
            end
            if not have then missing[#missing + 1] = name end
          end
        end
        c:close()
        if #missing > 0 then
          i:outstanding(string.format("operator takes '%s' (qcow2-level, per-VM) on %s (%d of %d VMs lack it: %s)",
            sn.name, tostring(sn.uri), #missing, #sn.domains, table.concat(missing, ", ")))
        end
      end, {"every listed VM has 'Snapshot 1' on the hypervisor (bomarun.virt); else OUTSTANDING (operator)"}),
    runbook.item{"D-011.8", "Designate zones + tenant hostname resolution",
      deferred = "D-019: Designate deferred (do-doc-10-dns dropped); moot under IP-only B5; re-scope when DNS returns (v2)"},
  },

  runbook.step{"8.5", "(Optional) Clean delete verification: delete to gone (discharges 8.1's ledger entry)",
    mutation = true,
    gates = {"cluster deleted to 404 (a wedge: appendix-A stuck-delete, OpenStackCluster finalizer)"},
    function(s)
      if not s.env.clean_delete then s:skip("clean_delete is off in the profile") end
      local ci = project(s).container_infra
      local ok, err = accepted(ci.clusters:delete(s.state.cluster_id))
      s:gate(ok, "delete " .. s.env.cluster .. " accepted" .. errtext(err))
      local st, werr = ci.clusters:wait_deleted(s.state.cluster_id, {timeout = s.env.delete_timeout, interval = 5})
      s:gate(st ~= nil, "cluster " .. s.env.cluster .. " deleted to gone" .. errtext(werr))
      if cluster_cleanup then cluster_cleanup:done() end
    end},

  runbook.step{"8.6", "EXIT GATE (phase-08 / v1 acceptance): summary", function(s)
    local verdict = verdicts(s)
    verdict["D-011.8"] = verdict["D-011.8"] or "DEFERRED"
    local function v(id, extra)
      local x = verdict[id] or "NOT_RUN"
      if x == "OUTSTANDING" and extra then return x .. " (" .. extra .. ")" end
      return x
    end
    local summary = string.format("ACCEPTANCE SUMMARY (%s, run %s): .1 charms %s; .2 core VIPs %s; .3 tenant->VIP %s; "
      .. ".4 Octavia round-robin + admin-scope failover %s; .5 E2E CAPI create %s; .6 vault manual unseal %s; "
      .. ".7 snapshot %s; .8 Designate %s (D-019).",
      s.run.profile or "site", s.run.id, v("D-011.1"), v("D-011.2"), v("D-011.3"), v("D-011.4"), v("D-011.5"),
      v("D-011.6"), v("D-011.7", "operator"), v("D-011.8"))
    local bad = {}
    for k = 1, 6 do
      local id = "D-011." .. k
      if verdict[id] ~= "PASS" and not (k == 4 and verdict[id] == "OUTSTANDING") then bad[#bad + 1] = "." .. k end
    end
    local verdict_line
    if #bad > 0 then
      verdict_line = "=> v1 is NOT ACCEPTED; failing: " .. table.concat(bad, ", ") .. "."
    elseif verdict["D-011.4"] == "OUTSTANDING" then
      verdict_line = "=> v1 is NOT YET ACCEPTED; .4 round-robin is outstanding on this site."
    elseif verdict["D-011.7"] == "PASS" then
      verdict_line = "=> v1 is FUNCTIONALLY ACCEPTED; the .7 snapshot baseline is taken: the accept-gate formally closes."
    else
      verdict_line = "=> v1 is FUNCTIONALLY ACCEPTED; the .7 snapshot baseline is the only item left to formally close the gate."
    end
    local lines = {
      string.format("8.1-8.3: %s %s, %s Ready nodes, Calico, CCM/CSI/CoreDNS, API LB %s", s.env.cluster,
                    tostring(s.state.cluster_status), tostring(s.state.nodes_ready), tostring(s.state.api_lb_id)),
      "health_status " .. tostring(s.state.health_status), summary, verdict_line}
    if #bad == 0 then
      lines[#lines + 1] = "=> Project-completion tasks unlocked: consolidate the per-phase runbooks into "
        .. "docs/v1-deploy-runbook.md; revert the repo OpenStack/openstack-caracal-ipv4 to PRIVATE."
    end
    local text = table.concat(lines, "\n")
    for _, l in ipairs(lines) do s:log("%s", l) end
    s:artifact("acceptance-summary.txt", text .. "\n")
    s:capture("acceptance_summary", summary .. " " .. verdict_line)
    s:gate(#bad == 0, "D-011 items 1-6 PASS")
    if s.env.expect_health then
      s:check(s.state.health_status == s.env.expect_health, "health_status " .. s.env.expect_health)
    end
  end},
}
