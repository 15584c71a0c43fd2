-- runbooks/phase-08.lua: plan mode (no request sent), the prerequisite
-- failure path, and the run end to end against the project's local cloud
-- (profiles/local-phase08.lua): real Keystone/Glance/Nova(fake driver)/
-- Neutron/Octavia(noop amphora)/Heat/Magnum, with the one stand-in the
-- stack has (heat-signaller-standin.py reports Heat's software deployments
-- as the agent on a cluster VM would).  What cannot run here comes from
-- recordings: the Kubernetes API (tests/stack/k8s/replay_server.py, HTTPS
-- with a client certificate), `juju status --format=json` and Vault's
-- seal-status (served by this spec's loopback HTTP server).  The test sshd
-- (tests/stack/sshd.lua) stands for the compute host (D-040) and the mgmt
-- VM (D-011.3).  Every server this spec starts is stopped by its PID.
package.path = (os.getenv("BOMARUN_SOURCE") or ".") .. "/tests/stack/?.lua;" .. package.path
local sshd = require "sshd"
local http = require "bomarun.http"
local json = require "bomarun.json"
local openstack = require "bomarun.openstack"
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local host = require "bomarun._host"
local util = require "support.util"

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local BIN = os.getenv("BOMARUN_BIN") or (SRC .. "/build/bomarun")
local STATE = os.getenv("BOMARUN_OPENSTACK_DIR") or "/tmp/bomarun-openstack"
local CLOUDS = STATE .. "/clouds.yaml"
local DATA = os.getenv("BOMARUN_K8S_RECORDED") or (SRC .. "/tests/data/k8s-recorded")
local P = "p08-" .. host.random_hex(3)

-- A loopback HTTP server (Python's http.server) serving a directory; it
-- prints its port, then one line per request it receives.
local HTTPD = [[
import http.server, sys, functools
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        print("REQ %s %s" % (self.command, self.path), flush=True)
    def do_POST(self):
        print("REQ POST %s" % self.path, flush=True); self.send_error(404)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(H, directory=sys.argv[1]))
print(s.server_address[1], flush=True)
s.serve_forever()
]]

local function spawn_server(argv, what)
  local port
  local lines = {}
  local h = assert(proc.spawn{argv = argv, quiet = true, keep = true, on_line = function(l, stream)
    if stream == "stdout" then
      if not port then port = tonumber(l) else lines[#lines + 1] = l end
    end
  end})
  local t0 = task.now()
  while not port and task.now() - t0 < 30 do task.sleep(0.02) end
  assert(port, what .. " did not start")
  return {handle = h, port = port, lines = lines}
end

local function stop_server(srv)
  if not srv then return end
  local pid = srv.handle:pid()
  srv.handle:kill("TERM")
  srv.handle:wait()
  util.wait_dead(pid, 5)
end

local web, replay, server, dir, certs
local admin, member, fx = nil, nil, {}

local function report(run_parent)
  local dirs = util.run_dirs(run_parent)
  assert(#dirs == 1, "expected one run directory in " .. run_parent .. ", got " .. #dirs)
  local text = util.read(dirs[1] .. "/report.json")
  assert(text, "no report.json in " .. dirs[1])
  return assert(json.decode(text)), dirs[1]
end

local function entry(rep, id)
  for _, e in ipairs(rep.entries) do
    if e.id == id then return e end
    for _, it in ipairs(e.items or {}) do
      if it.id == id then return it end
    end
  end
end

local function messages(e)
  local out = {}
  for _, g in ipairs(e.gates or {}) do out[#out + 1] = g.message end
  for _, c in ipairs(e.checks or {}) do out[#out + 1] = c.message end
  if e.error then out[#out + 1] = tostring(e.error) end
  if e.message then out[#out + 1] = tostring(e.message) end
  return table.concat(out, "\n")
end

-- The --set arguments that point the local profile at this spec's servers.
local function local_sets(extra)
  local sets = {
    "template=" .. P .. "-tmpl", "image=" .. P .. "-img", "cluster=" .. P .. "-c1",
    "ext_net=" .. P .. "-ext", "keypair=" .. P .. "-key",
    "template_attrs.fixed_network=" .. P .. "-fixed", "template_attrs.fixed_subnet=" .. P .. "-fixed-subnet",
    "image_source.url=http://127.0.0.1:" .. web.port .. "/image.qcow2",
    "image_source.sha512=" .. fx.sha512, "image_source.staging=" .. dir .. "/staged-" .. P .. ".qcow2",
    "reserved_memory.port=" .. server.port, "reserved_memory.user=" .. server.user,
    "reserved_memory.key=" .. server.keys.ed25519, "reserved_memory.known_hosts=" .. server.known_hosts,
    "tenant_vm.port=" .. server.port, "tenant_vm.user=" .. server.user,
    "tenant_vm.key=" .. server.keys.ed25519, "tenant_vm.known_hosts=" .. server.known_hosts,
    "k8s_connect.server=https://127.0.0.1:" .. replay.port, "k8s_connect.ca=" .. certs .. "/ca.crt",
    "k8s_connect.cert=" .. certs .. "/client.crt", "k8s_connect.key=" .. certs .. "/client.key",
    "vault.url=http://127.0.0.1:" .. web.port, "kubeconfig_dir=" .. dir .. "/kube/%{run}/%{cluster}",
  }
  for k, v in pairs(extra or {}) do
    for i = #sets, 1, -1 do
      if sets[i]:match("^([^=]+)=") == k then table.remove(sets, i) end
    end
    sets[#sets + 1] = k .. "=" .. v
  end
  local args = {}
  for _, s in ipairs(sets) do args[#args + 1] = "--set"; args[#args + 1] = s end
  return args
end

-- Another cluster name; the API LB the spec made stays the one 8.2 finds.
local function other_cluster(suffix)
  return local_sets({cluster = P .. "-" .. suffix, api_lb_match = P .. "-c1-kubeapi"})
end

local function runbook_argv(run_parent, sets)
  local argv = {BIN, "runbooks/phase-08.lua", "--profile", "local-phase08", "--run-dir", run_parent, "--no-color"}
  for _, a in ipairs(sets) do argv[#argv + 1] = a end
  return argv
end

-- The replay server's scenario (tests/stack/k8s/routes.json).
local function scenario(use)
  local r = assert(http.request{method = "PUT", url = "https://127.0.0.1:" .. replay.port .. "/_replay/scenario",
                                body = {use = use, routes = {}}, cainfo = certs .. "/ca.crt",
                                client_cert = certs .. "/client.crt", client_key = certs .. "/client.key"})
  assert(r.status == 200, "replay scenario: HTTP " .. r.status)
end

-- Run the runbook; once its 8.1 has created the cluster, start the Heat
-- signaller stand-in for it (as the cluster owner, capi-member).
local function run_with_standin(run_parent, sets, fail, timeout, on_cluster)
  local out = {}
  local rb = assert(proc.spawn{argv = runbook_argv(run_parent, sets), cwd = SRC, quiet = true,
                               on_line = function(l) out[#out + 1] = l end})
  local name = P .. "-c1"
  for _, a in ipairs(sets) do
    local v = a:match("^cluster=(.*)$")
    if v then name = v end
  end
  local agent
  local t0 = task.now()
  while not agent and not rb:done() and task.now() - t0 < 300 do
    local c = member.container_infra.clusters:find(name)
    if c and on_cluster then
      on_cluster(rb, c)
      break
    elseif c then
      local argv = {"/usr/bin/python3", SRC .. "/tests/stack/openstack/lib/heat-signaller-standin.py",
                    "--cloud", "bomarun-member", "--cluster", c.uuid, "--timeout", "400", "--interval", "0.5"}
      if fail then argv[#argv + 1] = "--fail" end
      agent = assert(proc.spawn{argv = argv, env = {OS_CLIENT_CONFIG_FILE = CLOUDS}, quiet = true, keep = true})
    else
      task.sleep(0.5)
    end
  end
  local res = task.timeout(timeout, function() return rb:wait() end)
  if not res then rb:kill("INT") res = rb:wait() end
  if agent then agent:kill("TERM") agent:wait() end
  return res, table.concat(out, "\n")
end

describe("runbooks/phase-08.lua", function()
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(host.mkdir(dir))
    certs = dir .. "/certs"
    assert(host.mkdir(certs))
    -- What the loopback HTTP server serves: a real qcow2 (the image the
    -- runbook stages) and Vault's recorded seal-status.
    local www = dir .. "/www"
    assert(host.mkdir(www))
    assert(assert(proc.run{argv = {"mkdir", "-p", www .. "/v1/sys"}}).code == 0)
    assert(assert(proc.run{argv = {"qemu-img", "create", "-q", "-f", "qcow2", www .. "/image.qcow2", "16M"}}).code == 0)
    util.write(www .. "/v1/sys/seal-status", assert(util.read(DATA .. "/vault-seal-status-unsealed-docs.json")))
    fx.sha512 = assert(proc.run{argv = {"sha512sum", www .. "/image.qcow2"}}).stdout:match("^(%x+)")
    web = spawn_server({"/usr/bin/python3", "-c", HTTPD, www}, "the loopback HTTP server")
    replay = spawn_server({"/usr/bin/python3", SRC .. "/tests/stack/k8s/replay_server.py", "--data", DATA,
                           "--certs", certs}, "the k8s replay server")
    server = sshd.start_new()
  end)

  teardown(function()
    if admin then
      if fx.lb then admin.loadbalancer.loadbalancers:delete(fx.lb) end
      for _, name in ipairs({P .. "-c1", P .. "-c2", P .. "-c3", P .. "-c4"}) do
        local c = member and member.container_infra.clusters:find(name)
        if c then
          member.container_infra.clusters:delete(c.uuid)
          member.container_infra.clusters:wait_deleted(c.uuid, {timeout = 300, interval = 2})
        end
      end
      local t = member and member.container_infra.templates:find(P .. "-tmpl")
      if t then member.container_infra.templates:delete(t.uuid) end
      for _, name in ipairs({P .. "-img", P .. "-noprop", P .. "-badsum"}) do
        local img = admin.image:find(name)
        if img then admin.image:delete(img.id) end
      end
      if member then member:call("DELETE", "compute", "/os-keypairs/" .. P .. "-key") end
      if fx.lb then admin.loadbalancer.loadbalancers:wait_deleted(fx.lb, {timeout = 60, interval = 1}) end
      for _, id in ipairs({fx.ext, fx.fixed}) do
        for _, sn in ipairs(admin.network.subnets:list({network_id = id}) or {}) do admin.network.subnets:delete(sn.id) end
        admin.network.networks:delete(id)
      end
    end
    stop_server(web)
    stop_server(replay)
    if server then server:stop() end
    if dir then proc.run{argv = {"rm", "-rf", dir}} end
  end)

  it("plan --profile caracal-ipv4 prints every step, gate and D-011 item with mutations marked, and sends nothing",
    function()
      -- Every endpoint the runbook could reach points at the loopback
      -- server, which logs each request it receives: it must log none.
      local clouds = util.write(dir .. "/clouds-plan.yaml", table.concat({
        "clouds:", "  plan-trap:", "    auth:", "      auth_url: http://127.0.0.1:" .. web.port .. "/v3",
        "      username: admin", "      password: never-sent", "      project_name: admin",
        "      user_domain_name: Default", "      project_domain_name: Default", ""}, "\n"))
      local trap = "http://127.0.0.1:" .. web.port
      local before = #web.lines
      local r = util.bomarun({"plan", "runbooks/phase-08.lua", "--profile", "caracal-ipv4", "--no-color",
        "--set", "clouds_file=" .. clouds, "--set", "cloud=plan-trap",
        "--set", "image_source.url=" .. trap .. "/image.qcow2", "--set", "vault.url=" .. trap},
        {cwd = SRC})
      assert.equal(0, r.code, r.stdout .. r.stderr)
      local out = r.stdout
      for _, id in ipairs({"8.0.1", "8.0.2", "8.0.3", "8.0.4", "8.0.5", "8.0.6", "8.0.7", "8.0.8", "8.1", "8.2", "8.3",
                           "D-011.1", "D-011.2", "D-011.3", "D-011.4", "D-011.5", "D-011.6", "D-011.7", "D-011.8",
                           "8.5", "8.6"}) do
        assert.truthy(out:find("\n%s+" .. id:gsub("%p", "%%%0") .. "%s"), "plan lacks " .. id .. "\n" .. out)
      end
      for _, mut in ipairs({"8.0.6", "8.0.8", "8.1", "8.5"}) do
        assert.truthy(out:find(mut:gsub("%p", "%%%0") .. "%s[^\n]*%[MUTATION"), mut .. " not marked a mutation")
      end
      assert.matches("13 steps %(4 mutations%), 8 acceptance items; nothing was run", out)
      assert.matches("status = CREATE_COMPLETE", out)
      assert.matches("network_driver = calico", out)
      assert.matches("DOCFIX%-037", out)
      assert.matches("D%-011%.8[^\n]*DEFERRED by D%-019", out)
      assert.matches("cleanup: \"delete cluster \"", out)
      task.sleep(0.3)
      assert.equal(before, #web.lines, "plan mode sent a request: " .. table.concat(web.lines, "; "))
    end)

  describe("against the local cloud", function()
    setup(function()
      local r = assert(proc.run{argv = {SRC .. "/scripts/openstack-stack", "start", "--layers", "all", STATE},
                                timeout = 900})
      assert(r.code == 0, "the local cloud did not start:\n" .. r.stdout .. r.stderr)
      admin = assert(openstack.connect{cloud = "bomarun-admin", clouds_file = CLOUDS})
      member = assert(openstack.connect{cloud = "bomarun-member", clouds_file = CLOUDS})
      -- What earlier phases leave on a site: the provider network
      -- (phase-04), a tenant network for the cluster and the keypair.
      fx.ext = assert(admin.network.networks:create{name = P .. "-ext", ["router:external"] = true,
        ["provider:network_type"] = "flat", ["provider:physical_network"] = P .. "-ext"}).id
      assert(admin.network.subnets:create{network_id = fx.ext, ip_version = 4, cidr = "127.14.0.0/24", enable_dhcp = false})
      -- The cluster's network belongs to capi-mgmt, as a tenant network does.
      local pid = assert(admin.identity:project("capi-mgmt", "capi")).id
      fx.fixed = assert(admin.network.networks:create{name = P .. "-fixed", project_id = pid,
        ["provider:network_type"] = "flat", ["provider:physical_network"] = P .. "-fixed"}).id
      fx.fixed_subnet = assert(admin.network.subnets:create{name = P .. "-fixed-subnet", network_id = fx.fixed,
        project_id = pid,
        ip_version = 4, cidr = "127.15.0.0/24", enable_dhcp = false}).id
      proc.run{argv = {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir .. "/kp"}}
      assert(member:call("POST", "compute", "/os-keypairs",
        {body = {keypair = {name = P .. "-key", public_key = util.read(dir .. "/kp.pub")}}}))
      -- The Heat driver here makes no API load balancer (that is the
      -- capi-helm driver's); a real Octavia LB in capi-mgmt named as the
      -- profile's api_lb_match expects takes its place for 8.2 and D-011.4.
      local lb = assert(member.loadbalancer.loadbalancers:create{name = P .. "-c1-kubeapi", vip_subnet_id = fx.fixed_subnet})
      fx.lb = lb.id
      assert(member.loadbalancer:wait_active(lb.id, {timeout = 120, interval = 1}))
      scenario({"phase08"})
    end)

    it("a missing image property fails the prerequisites before anything mutates", function()
      local img = assert(admin.image:create{name = P .. "-noprop", disk_format = "qcow2", container_format = "bare",
                                            visibility = "public", os_distro = "fedora-coreos"})
      local parent = dir .. "/runs-noprop"
      local r = assert(proc.run{argv = runbook_argv(parent, local_sets({image = P .. "-noprop"})), cwd = SRC,
                                timeout = 300})
      assert.equal(1, r.code, r.stdout .. r.stderr)
      local rep = report(parent)
      for _, id in ipairs({"8.0.1", "8.0.2", "8.0.3", "8.0.4"}) do
        assert.equal("PASS", entry(rep, id).status, id .. ": " .. messages(entry(rep, id)))
      end
      local e = entry(rep, "8.0.5")
      assert.equal("FAIL", e.status)
      assert.matches("kube_version = v1%.8%.4 %(got nil%)", messages(e))
      for _, id in ipairs({"8.0.6", "8.0.8", "8.1", "8.2", "8.5"}) do
        assert.equal("NOT_RUN", entry(rep, id).status, id)
      end
      assert.equal(0, #rep.cleanups, "nothing was registered for undoing: nothing mutated")
      assert.is_nil(member.container_infra.templates:find(P .. "-tmpl"))
      assert.is_nil(member.container_infra.clusters:find(P .. "-c1"))
      assert(admin.image:delete(img.id))
    end)

    it("8.0 refuses a download whose sha512 is not the manifest's, and creates no image", function()
      local parent = dir .. "/runs-badsum"
      local r = assert(proc.run{argv = runbook_argv(parent, local_sets({image = P .. "-badsum",
        ["image_source.sha512"] = string.rep("ab", 64)})), cwd = SRC, timeout = 300})
      assert.equal(1, r.code, r.stdout .. r.stderr)
      local rep = report(parent)
      assert.equal("PASS", entry(rep, "8.0.5").status)
      local e = entry(rep, "8.0.6")
      assert.equal("FAIL", e.status)
      assert.matches("sha512 mismatch exp=" .. string.rep("ab", 64) .. " got=" .. fx.sha512, messages(e))
      assert.equal("NOT_RUN", entry(rep, "8.1").status)
      local _, _, code = admin.image:find(P .. "-badsum")
      assert.equal("NOT_FOUND", code)
      assert.is_nil(util.read(dir .. "/staged-" .. P .. ".qcow2.part"), "the partial download was left")
      assert.is_nil(util.read(dir .. "/staged-" .. P .. ".qcow2"))
    end)

    it("runs end to end: stage-and-verify, template, CREATE_COMPLETE, k8s checks, D-011, clean delete", function()
      local parent = dir .. "/runs-e2e"
      local res, out = run_with_standin(parent, local_sets(), false, 900)
      local rep, rdir = report(parent)
      assert.equal(0, res.code, out)
      for _, id in ipairs({"8.0.1", "8.0.2", "8.0.3", "8.0.4", "8.0.5", "8.0.6", "8.0.7", "8.0.8", "8.1", "8.2", "8.3",
                           "D-011.1", "D-011.2", "D-011.3", "D-011.5", "D-011.6", "8.5", "8.6"}) do
        assert.equal("PASS", entry(rep, id).status, id .. ": " .. messages(entry(rep, id)) .. "\n" .. out)
      end
      assert.equal("OUTSTANDING", entry(rep, "D-011.4").status)   -- round-robin not runnable here; failover ran
      assert.matches("failover returns to ACTIVE", messages(entry(rep, "D-011.4")))
      assert.equal("OUTSTANDING", entry(rep, "D-011.7").status)
      assert.equal("DEFERRED", entry(rep, "D-011.8").status)
      -- The image was staged from the loopback server and verified.
      local img = assert(admin.image:find(P .. "-img"))
      assert.equal("active", img.status)
      assert.equal("v1.8.4", img.kube_version)
      assert.truthy(util.read(dir .. "/staged-" .. P .. ".qcow2"))
      local t = assert(member.container_infra.templates:find(P .. "-tmpl"))
      assert.equal("calico", t.network_driver)
      -- 8.3: the kubeconfig directory was made and Magnum's kubeconfig written.
      assert.matches("client%-certificate%-data", util.read(tostring(rep.captures.kubeconfig)) or "",
                     "no kubeconfig at " .. tostring(rep.captures.kubeconfig))
      assert.equal(3, rep.captures.nodes_ready)
      -- 8.5 deleted the cluster and discharged 8.1's ledger entry.
      assert.is_nil(member.container_infra.clusters:find(P .. "-c1"))
      local discharged
      for _, c in ipairs(rep.cleanups) do
        if c.description:find("delete cluster " .. P .. "-c1 (", 1, true) == 1 then discharged = c.status end
      end
      assert.equal("DISCHARGED", discharged)
      local summary = util.read(rdir .. "/artifacts/8.6-acceptance-summary.txt")
      assert(summary, "no acceptance summary in " .. rdir .. "/artifacts")
      assert.matches("ACCEPTANCE SUMMARY", summary)
      assert.matches("%.1 charms PASS; %.2 core VIPs PASS; %.3 tenant%->VIP PASS;", summary)
      assert.matches("%.7 snapshot OUTSTANDING %(operator%); %.8 Designate DEFERRED %(D%-019%)", summary)
      assert.matches("=> v1 is", summary)
    end)

    it("a CREATE_FAILED cluster fails 8.2 at once with its reason, and the run's cleanups delete it", function()
      local parent = dir .. "/runs-failed"
      local t0 = task.now()
      local res, out = run_with_standin(parent, other_cluster("c2"), true, 900)
      assert.equal(1, res.code, out)
      local rep = report(parent)
      assert.equal("PASS", entry(rep, "8.1").status)
      local e = entry(rep, "8.2")
      assert.equal("FAIL", e.status)
      local msg = messages(e)
      assert.matches("CREATE_FAILED", msg)
      assert.matches("status_reason: %S+", msg)
      assert.truthy(e.duration < 240, "8.2 did not fail at once: " .. e.duration)
      for _, id in ipairs({"8.3", "8.5"}) do assert.equal("NOT_RUN", entry(rep, id).status) end
      local ran
      for _, c in ipairs(rep.cleanups) do
        if c.description:find("delete cluster " .. P .. "-c2 (", 1, true) == 1 then ran = c.status end
      end
      assert.equal("DONE", ran)
      assert.is_nil(member.container_infra.clusters:find(P .. "-c2"))
      assert.truthy(task.now() - t0 < 900)
    end)

    it("a crash-looping pod fails 8.3 at once naming pod, container and reason; the cleanups delete the cluster",
      function()
        scenario({"phase08", "phase08-crashloop"})
        finally(function() scenario({"phase08"}) end)
        local parent = dir .. "/runs-crashloop"
        local res, out = run_with_standin(parent, other_cluster("c3"), false, 900)
        assert.equal(1, res.code, out)
        local rep = report(parent)
        assert.equal("PASS", entry(rep, "8.2").status)
        local e = entry(rep, "8.3")
        assert.equal("FAIL", e.status)
        local msg = messages(e)
        assert.matches("no stuck pods", msg)
        assert.matches("CrashLoopBackOff", msg)
        assert.matches("pod %S+/%S+ container %S+", msg)
        assert.truthy(e.duration < 20, "8.3 did not fail at once: " .. e.duration)
        assert.equal("NOT_RUN", entry(rep, "8.5").status)
        assert.is_nil(member.container_infra.clusters:find(P .. "-c3"))
      end)

    it("Ctrl-C during 8.2 deletes the cluster through the cleanup ledger", function()
      local parent = dir .. "/runs-sigint"
      -- No stand-in: the cluster stays CREATE_IN_PROGRESS while 8.2 polls.
      local res, out = run_with_standin(parent, other_cluster("c4"), false, 600, function(rb)
        util.wait_for(function()
          local ev = util.read(util.run_dirs(parent)[1] .. "/events.jsonl") or ""
          return ev:find('"step_start"[^\n]*"8%.2"') or ev:find('"id":"8%.2"[^\n]*"step_start"')
        end, 120, "step 8.2 to start")
        task.sleep(2)
        rb:kill("INT")
      end)
      assert.equal(130, res.code, out)
      local rep = report(parent)
      assert.equal("INTERRUPTED", entry(rep, "8.2").status)
      local ran
      for _, c in ipairs(rep.cleanups) do
        if c.description:find("delete cluster " .. P .. "-c4 (", 1, true) == 1 then ran = c.status end
      end
      assert.equal("DONE", ran)
      assert.is_nil(member.container_infra.clusters:find(P .. "-c4"))
    end)
  end)
end)
