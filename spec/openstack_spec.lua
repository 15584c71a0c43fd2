-- bomarun.openstack against the real local cloud of the test stack
-- (tests/stack/openstack: Keystone, Glance, Nova with the fake driver,
-- Neutron, Octavia with noop drivers, on 127.0.0.1), started once per test
-- run by scripts/test (or here, if it is not running yet).
local openstack = require "bomarun.openstack"
local json = require "bomarun.json"
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local host = require "bomarun._host"
local util = require "support.util"

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local BIN = os.getenv("BOMARUN_BIN") or (SRC .. "/build/bomarun")
local STATE = os.getenv("BOMARUN_OPENSTACK_DIR") or "/tmp/bomarun-openstack"
local CLOUDS = STATE .. "/clouds.yaml"

local admin, member

local function unique(prefix)
  return prefix .. "-" .. host.random_hex(4)
end

local function read_env_file(path)
  local env = {}
  for line in io.lines(path) do
    local k, v = line:match("^export%s+([%w_]+)=(.*)$")
    if k then env[k] = v:gsub("^['\"]", ""):gsub("['\"]$", "") end
  end
  return env
end

-- Run a chunk in a fresh bomarun with the given environment.
local function bomarun_e(code, env)
  return assert(proc.run{argv = {BIN, "-e", code}, env = env, timeout = 120})
end

local function catalog_has(h, service_type)
  return h:endpoint(service_type) ~= nil
end

describe("openstack against the local cloud", function()
  setup(function()
    local r = assert(proc.run{argv = {SRC .. "/scripts/openstack-stack", "start", STATE}, timeout = 900})
    assert(r.code == 0, "the local cloud did not start:\n" .. r.stdout .. r.stderr)
    admin = assert(openstack.connect{cloud = "bomarun-admin", clouds_file = CLOUDS, retries = 2})
    member = assert(openstack.connect{cloud = "bomarun-member", clouds_file = CLOUDS, retries = 2})
  end)

  describe("credentials and scope", function()
    it("loads clouds.yaml from OS_CLIENT_CONFIG_FILE and OS_* variables from an openrc", function()
      local code = [[
        local openstack = require "bomarun.openstack"
        local opts
        if not FROM_ENV then opts = {cloud = "bomarun-admin"} end
        local h = assert(openstack.connect(opts))
        print(h:scope_description(), h:has_role("admin"))
      ]]
      local r = bomarun_e(code:gsub("FROM_ENV", "false"), {OS_CLIENT_CONFIG_FILE = CLOUDS})
      assert.equal(0, r.code, r.stderr)
      assert.matches("project Default/admin\ttrue", r.stdout)
      local env = read_env_file(STATE .. "/admin-openrc")
      r = bomarun_e(code:gsub("FROM_ENV", "true"), env)
      assert.equal(0, r.code, r.stderr)
      assert.matches("project Default/admin\ttrue", r.stdout)
    end)

    it("authenticates with an application credential", function()
      local h = assert(openstack.connect{cloud = "bomarun-appcred", clouds_file = CLOUDS})
      assert.matches("capi%-mgmt", h:scope_description())
      local _, err, code = h:scoped{project = "admin", domain = "Default"}
      assert.equal("SCOPE", code)
      assert.matches("application credential", err)
    end)

    it("keeps scopes apart: a member handle gets 403 where the admin one succeeds", function()
      assert.matches("capi/capi%-mgmt", member:scope_description())
      assert.are_not.equal(member.token, admin.token)
      local body, status = admin:request("GET", "identity", "/v3/users")
      assert.equal(200, status)
      assert.is_table(body.users)
      local mbody, mstatus, mheaders = member:request("GET", "identity", "/v3/users")
      assert.equal(403, mstatus)
      assert.matches("not authorized", openstack.fault_message(mbody):lower())
      assert.truthy(mheaders["x-openstack-request-id"])
      local _, err, code = member:call("GET", "identity", "/v3/users")
      assert.equal("HTTP_403", code)
      assert.matches("openstack: GET http://127%.0%.0%.1:%d+/v3/users: 403: ", err)
      assert.matches("request id req%-", err)
      assert.is_nil(err:find(member.token, 1, true), "the token leaked into an error")
    end)

    it("scoped{} gives a second handle on the same connection with its own token", function()
      local sys = assert(admin:scoped{system = "all"})
      assert.equal("system", sys:scope_description())
      assert.are_not.equal(sys.token, admin.token)
      assert.equal(sys, admin:scoped{system = "all"})
      -- The system handle lists users; the admin project's handle still
      -- acts in its own scope.
      local _, status = sys:request("GET", "identity", "/v3/users")
      assert.equal(200, status)
      assert.matches("project Default/admin", admin:scope_description())
      -- A scope the user holds no role in is refused, and says which.
      local p, err, code = admin:scoped{project = "capi-mgmt", domain = "capi"}
      assert.is_nil(p)
      assert.equal("AUTH", code)
      assert.matches("project capi/capi%-mgmt", err)
      -- The member's own connection narrows to the project it belongs to.
      local mp = assert(member:scoped{project = "capi-mgmt", domain = "capi"})
      assert.matches("capi/capi%-mgmt", mp:scope_description())
    end)

    it("re-issues a token that is about to expire, and once on a 401", function()
      local h = assert(openstack.connect{cloud = "bomarun-admin", clouds_file = CLOUDS})
      local first = h.token
      h.expires_at = os.time() + 10          -- inside the renewal window
      assert(h:call("GET", "identity", "/v3/projects"))
      assert.are_not.equal(first, h.token)
      -- Revoke the current token behind the handle's back: the next call
      -- gets a 401, authenticates again, and succeeds.
      local revoked = h.token
      local _, status = admin:request("DELETE", "identity", "/v3/auth/tokens",
                                      {headers = {["X-Subject-Token"] = revoked}})
      assert.equal(204, status)
      assert(h:call("GET", "identity", "/v3/projects"))
      assert.are_not.equal(revoked, h.token)
    end)

    it("resolves projects by name within a domain", function()
      local p = assert(admin.identity:project("capi-mgmt", "capi"))
      assert.equal("capi-mgmt", p.name)
      local _, err, code = admin.identity:project("no-such-project-" .. host.random_hex(3), "capi")
      assert.equal("NOT_FOUND", code)
      assert.matches("no project named", err)
    end)
  end)

  describe("image", function()
    local file, size
    setup(function()
      file = os.tmpname()
      local r = proc.run{shell = "head -c 3145728 /dev/urandom > " .. file}
      assert(r.code == 0)
      size = 3145728
    end)
    teardown(function() os.remove(file) end)

    it("creates with properties, uploads, waits active, verifies the checksum, updates properties", function()
      local name = unique("bomarun-spec-image")
      local img = assert(admin.image:create{name = name, disk_format = "qcow2", container_format = "bare",
                                            kube_version = "v1.34.8", os_distro = "ubuntu"})
      finally(function() admin.image:delete(img.id) end)
      assert.equal("queued", img.status)
      assert(admin.image:upload(img.id, file))
      assert.equal("active", admin.image:wait_active(img.id, {timeout = 60, interval = 0.2}))
      local got = assert(admin.image:find(name))
      assert.equal(img.id, got.id)
      assert.equal(size, got.size)
      assert.equal("v1.34.8", got.kube_version)
      local v = assert(admin.image:verify(img.id, file))
      assert.equal("sha512", v.algo)
      assert(admin.image:set_properties(img.id, {kube_version = "v1.35.0", os_distro = json.null}))
      got = assert(admin.image:show(img.id))
      assert.equal("v1.35.0", got.kube_version)
      assert.is_nil(got.os_distro)
      local other = os.tmpname()
      proc.run{shell = "head -c 1000 /dev/urandom > " .. other}
      local ok, err, code = admin.image:verify(img.id, other)
      os.remove(other)
      assert.is_nil(ok)
      assert.equal("CHECKSUM", code)
      assert.matches("differs", err)
    end)

    it("imports with glance-direct", function()
      local img = assert(admin.image:create{name = unique("bomarun-spec-direct"), disk_format = "raw",
                                            container_format = "bare"})
      finally(function() admin.image:delete(img.id) end)
      assert(admin.image:stage(img.id, file))
      assert(admin.image:import(img.id, "glance-direct"))
      assert.equal("active", admin.image:wait_active(img.id, {timeout = 60, interval = 0.2}))
    end)

    it("hides another project's private image from a member (404)", function()
      local img = assert(admin.image:create{name = unique("bomarun-spec-private"), disk_format = "raw",
                                            container_format = "bare", visibility = "private"})
      finally(function() admin.image:delete(img.id) end)
      local _, _, code = member.image:show(img.id)
      assert.equal("HTTP_404", code)
    end)

    it("follows pagination with a small page size", function()
      local ids = {}
      local prefix = unique("bomarun-spec-page")
      for k = 1, 3 do
        ids[k] = assert(admin.image:create{name = prefix .. "-" .. k, disk_format = "raw",
                                           container_format = "bare"}).id
      end
      finally(function() for _, id in ipairs(ids) do admin.image:delete(id) end end)
      local items = assert(admin.image.images:list({}, {page_size = 1}))
      local seen = 0
      for _, it in ipairs(items) do if it.name:sub(1, #prefix) == prefix then seen = seen + 1 end end
      assert.equal(3, seen)
      assert.is_true(items.pages >= 3, "only " .. tostring(items.pages) .. " pages")
      local limited = assert(admin.image.images:list({}, {page_size = 1, limit = 2}))
      assert.equal(2, #limited)
    end)
  end)

  it("the example image-stage-verify runbook stages, waits for and verifies an image", function()
    local d = util.tmpdir(finally)
    local file = d .. "/image.qcow2"
    proc.run{shell = "head -c 1048576 /dev/urandom > " .. file}
    local sha = proc.run{argv = {"sha512sum", file}}.stdout:match("^(%x+)")
    local name = unique("bomarun-spec-example")
    util.write(d .. "/site.lua", string.format("return {cloud = 'bomarun-admin', image = '%s', image_file = '%s', " ..
      "image_sha512 = '%s', kube_version = 'v1.34.8', os_distro = 'ubuntu', disk_format = 'raw', timeout = 60}\n",
      name, file, sha))
    local r = assert(proc.run{argv = {BIN, SRC .. "/examples/image-stage-verify.lua", "--profile", d .. "/site.lua",
                                      "--run-dir", d .. "/runs"}, env = {OS_CLIENT_CONFIG_FILE = CLOUDS}, timeout = 120})
    local img = admin.image:find(name)
    if img then finally(function() admin.image:delete(img.id) end) end
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("8%.0%.b%s+PASS", r.stdout)
    assert.equal("active", img.status)
    assert.equal("v1.34.8", img.kube_version)
    -- Run again: the image is found, not created a second time.
    r = assert(proc.run{argv = {BIN, SRC .. "/examples/image-stage-verify.lua", "--profile", d .. "/site.lua",
                                "--run-dir", d .. "/runs"}, env = {OS_CLIENT_CONFIG_FILE = CLOUDS}, timeout = 120})
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal(img.id, admin.image:find(name).id)
  end)

  describe("faults (a loopback fault proxy in front of Glance)", function()
    local proxy, proxy_url, h

    local function control(path)
      local r = assert(require("bomarun.http").request{method = "POST", url = proxy_url .. "/_fault/" .. path})
      assert(r.status == 200, "fault proxy control " .. path .. ": " .. r.status)
    end

    local function counters()
      local r = assert(require("bomarun.http").request{url = proxy_url .. "/_fault"})
      return json.decode(r.body).counters
    end

    setup(function()
      local glance = assert(admin:endpoint("image"))
      local port
      proxy = assert(proc.spawn{argv = {"/usr/bin/python3", SRC .. "/tests/stack/openstack/fault-proxy.py",
                                        "--target", glance, "--quiet"}, keep = true, quiet = true,
                                on_line = function(l) port = port or tonumber(l:match(":(%d+) %->")) end})
      local t0 = task.now()
      while not port and task.now() - t0 < 10 do task.sleep(0.05) end
      assert(port, "the fault proxy did not start")
      proxy_url = "http://127.0.0.1:" .. port
      h = assert(openstack.connect{cloud = "bomarun-admin", clouds_file = CLOUDS, endpoints = {image = proxy_url},
                                   retries = 3, backoff = 0.05})
    end)
    teardown(function() if proxy then proxy:kill("TERM") proxy:wait() end end)
    before_each(function() control("pass") control("counters/clear") end)

    it("retries a GET through 503s until the service recovers", function()
      control("503?count=2")
      local body, status = h:request("GET", "image", "/v2/images", {query = {limit = 1}})
      assert.equal(200, status)
      assert.is_table(body.images)
      local c = counters()
      assert.equal(3, c.requests)
      assert.equal(2, c.faulted)
    end)

    it("gives up after its retries and returns the 503 as data with the service's message", function()
      control("503?count=10")
      local _, status = h:request("GET", "image", "/v2/images", {retries = 2})
      assert.equal(503, status)
      assert.equal(3, counters().requests)
      local _, err, code = h:call("GET", "image", "/v2/images", {retries = 0})
      assert.equal("HTTP_503", code)
      assert.matches("openstack: GET " .. proxy_url:gsub("%p", "%%%0") .. "/v2/images: 503", err)
    end)

    it("never retries a POST", function()
      control("503?count=1")
      local _, status = h:request("POST", "image", "/v2/images", {body = {name = unique("bomarun-spec-noretry"),
                                                                          disk_format = "raw", container_format = "bare"}})
      assert.equal(503, status)
      local c = counters()
      assert.equal(1, c.requests, "the POST was sent " .. c.requests .. " times")
    end)

    it("retries a GET whose connection was reset", function()
      control("reset?count=1")
      local _, status = h:request("GET", "image", "/v2/images", {query = {limit = 1}})
      assert.equal(200, status)
      assert.equal(2, counters().requests)
    end)

    it("times out a slow response, and a POST that timed out is not resent", function()
      control("delay?seconds=3")
      local t0 = task.now()
      local body, err, code = h:request("GET", "image", "/v2/images", {timeout = 0.5, retries = 1})
      assert.is_nil(body)
      assert.equal("TIMEOUT", code)
      assert.matches("openstack: GET ", err)
      assert.is_true(task.now() - t0 < 2.5)
      control("counters/clear")
      local _, _, pcode = h:request("POST", "image", "/v2/images", {timeout = 0.5,
        body = {name = unique("bomarun-spec-slowpost"), disk_format = "raw", container_format = "bare"}})
      assert.equal("TIMEOUT", pcode)
      assert.equal(1, counters().requests)
      control("pass")
      -- The slow POST still reaches Glance after the delay: that is why a
      -- timed-out mutation must never be resent.  Clean up what it made.
      local made = util.wait_for(function()
        for _, img in ipairs(assert(admin.image:list())) do
          if img.name:match("^bomarun%-spec%-slowpost") then return img end
        end
      end, 10, "the delayed POST to reach Glance")
      admin.image:delete(made.id)
    end)

    it("gives every concurrency unit back when 100 requests are cancelled mid-flight", function()
      local c = assert(openstack.connect{cloud = "bomarun-admin", clouds_file = CLOUDS,
                                         endpoints = {image = proxy_url}, retries = 0})
      local cap = c.conn:cap("image")
      local units = cap:counts()
      control("delay?seconds=5")
      local reqs = {}
      for k = 1, 100 do
        reqs[k] = task.spawn(function() return c:request("GET", "image", "/v2/images", {query = {limit = 1}}) end)
      end
      util.wait_for(function() return counters().requests >= units end, 10, "the first requests to reach the proxy")
      local free, waiting = cap:counts()
      assert.equal(0, free)
      assert.equal(100 - units, waiting)
      for k = 1, 100 do reqs[k]:cancel() end
      for k = 1, 100 do assert.is_false((reqs[k]:wait())) end
      assert.same({units, 0}, {cap:counts()})
      control("pass")
      local _, status = task.timeout(20, function() return c:request("GET", "image", "/v2/images", {query = {limit = 1}}) end)
      assert.equal(200, status)
    end)
  end)

  describe("authentication cancelled half-way", function()
    it("leaves no flag behind: the tasks that waited on it, and later requests, authenticate", function()
      local c = assert(openstack.connect{cloud = "bomarun-admin", clouds_file = CLOUDS})
      c.token = nil                       -- the next request re-issues it
      local first = task.spawn(function() return c:request("GET", "image", "/v2/images", {query = {limit = 1}}) end)
      task.yield()                        -- first is now waiting on Keystone
      assert.is_not_nil(c.reauth_in_flight)
      local second = task.spawn(function() return c:request("GET", "image", "/v2/images", {query = {limit = 1}}) end)
      task.yield()                        -- second waits on first's authentication
      first:cancel()
      assert.is_false((first:wait()))
      local ok, _, status = task.timeout(20, function() return second:wait() end)
      assert.is_true(ok)
      assert.equal(200, status)
      assert.is_nil(c.reauth_in_flight)
      local _, status2 = task.timeout(20, function() return c:request("GET", "image", "/v2/images", {query = {limit = 1}}) end)
      assert.equal(200, status2)
    end)
  end)

  describe("compute", function()
    it("creates a server, waits ACTIVE, stops, starts, reboots and deletes it", function()
      if not catalog_has(admin, "compute") then error("no compute endpoint in the local cloud") end
      local flavor = assert(admin.compute.flavors:list())[1]
      assert(flavor, "the local cloud has no flavor")
      local img = assert(admin.image:create{name = unique("bomarun-spec-srvimg"), disk_format = "raw",
                                            container_format = "bare"})
      finally(function() admin.image:delete(img.id) end)
      local tmp = os.tmpname()
      proc.run{shell = "head -c 1024 /dev/zero > " .. tmp}
      assert(admin.image:upload(img.id, tmp))
      os.remove(tmp)
      admin.image:wait_active(img.id, {timeout = 60, interval = 0.2})
      local srv = assert(admin.compute.servers:create{name = unique("bomarun-spec-server"), imageRef = img.id,
                                                      flavorRef = flavor.id, networks = "none"})
      finally(function() admin.compute.servers:delete(srv.id) end)
      assert.equal("ACTIVE", admin.compute.servers:wait(srv.id, {timeout = 120, interval = 0.3}))
      assert(admin.compute:stop(srv.id))
      assert.equal("SHUTOFF", admin.compute.servers:wait(srv.id, {ok = {"SHUTOFF"}, timeout = 60, interval = 0.3}))
      assert(admin.compute:start(srv.id))
      assert.equal("ACTIVE", admin.compute.servers:wait(srv.id, {timeout = 60, interval = 0.3}))
      assert(admin.compute:reboot(srv.id))
      assert.equal("ACTIVE", admin.compute.servers:wait(srv.id, {timeout = 60, interval = 0.3}))
      local all = assert(admin.compute:all_servers())
      local found = false
      for _, s in ipairs(all) do if s.id == srv.id then found = true end end
      assert.is_true(found)
      assert(admin.compute.servers:delete(srv.id))
      assert.equal("DELETED", admin.compute.servers:wait_deleted(srv.id, {timeout = 60, interval = 0.3}))
    end)
  end)

  describe("network", function()
    it("builds network, subnet and router, then cleans up in dependency order", function()
      local n = assert(admin.network.networks:create{name = unique("bomarun-spec-net")})
      local sn = assert(admin.network.subnets:create{name = unique("bomarun-spec-subnet"), network_id = n.id,
                                                     ip_version = 4, cidr = "127.66.0.0/24", enable_dhcp = false})
      local rt = assert(admin.network.routers:create{name = unique("bomarun-spec-router")})
      assert(admin.network:add_interface(rt.id, sn.id))
      -- The wrong order is refused by Neutron: the subnet is in use.
      local _, _, code = admin.network.subnets:delete(sn.id)
      assert.equal("HTTP_409", code)
      assert(admin.network:remove_interface(rt.id, sn.id))
      assert(admin.network.routers:delete(rt.id))
      assert(admin.network.subnets:delete(sn.id))
      assert(admin.network.networks:delete(n.id))
      local _, _, gone = admin.network.networks:show(n.id)
      assert.equal("HTTP_404", gone)
    end)
  end)

  describe("load balancer", function()
    it("creates an LB to ACTIVE, fails it over (admin) to ACTIVE; a member gets 403 on failover", function()
      local n = assert(admin.network.networks:create{name = unique("bomarun-spec-lbnet")})
      finally(function() admin.network.networks:delete(n.id) end)
      local sn = assert(admin.network.subnets:create{network_id = n.id, ip_version = 4, cidr = "127.67.0.0/24",
                                                     enable_dhcp = false})
      finally(function() admin.network.subnets:delete(sn.id) end)
      local lb = assert(admin.loadbalancer.loadbalancers:create{name = unique("bomarun-spec-lb"),
                                                                vip_subnet_id = sn.id})
      finally(function()
        admin.loadbalancer.loadbalancers:delete(lb.id)
        admin.loadbalancer.loadbalancers:wait_deleted(lb.id, {timeout = 60, interval = 0.5})
      end)
      assert.equal("ACTIVE", admin.loadbalancer:wait_active(lb.id, {timeout = 120, interval = 0.3}))
      local _, _, mcode = member.loadbalancer:failover(lb.id)
      assert.is_true(mcode == "HTTP_403" or mcode == "HTTP_404", "a member failed over an admin LB: " .. tostring(mcode))
      assert(admin.loadbalancer:failover(lb.id))
      assert.equal("ACTIVE", admin.loadbalancer:wait_active(lb.id, {timeout = 120, interval = 0.3}))
    end)
  end)
end)
