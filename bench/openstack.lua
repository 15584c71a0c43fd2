-- Per-call cost against the local cloud, side by side: bomarun (one
-- authenticated connection, token reused) vs the `openstack` CLI, the same
-- calls against the same services; then N load balancers' status polled
-- concurrently.
--
--   build/bomarun bench/openstack.lua [N] [CLI_N] [LBS]
--     N      bomarun calls of each kind (default 50)
--     CLI_N  CLI calls of each kind (default 5: each costs over a second)
--     LBS    load balancers polled concurrently (default 100)
--
-- Needs the local cloud: scripts/openstack-stack start (done here if it is
-- not running).
local bench_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local root = bench_dir .. "/.."
local common = dofile(bench_dir .. "/common.lua")
common.name = "openstack"

local openstack = require "bomarun.openstack"
local task = require "bomarun.task"
local host = require "bomarun._host"

local N = common.count_arg(arg[1], 50, "N")
local CLI_N = common.count_arg(arg[2], 5, "CLI_N")
local LBS = common.count_arg(arg[3], 100, "LBS")
local STATE = os.getenv("BOMARUN_OPENSTACK_DIR") or "/tmp/bomarun-openstack"

local function time_each(n, fn)
  fn()
  local d = {}
  for k = 1, n do
    local t0 = task.now()
    fn()
    d[k] = task.now() - t0
  end
  return common.median(d)
end

local function cli(args)
  local argv = {"openstack", "--os-cloud", "bomarun-admin"}
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return function()
    common.run_ok("openstack " .. table.concat(args, " "), {argv = argv, timeout = 120,
      env = {OS_CLIENT_CONFIG_FILE = STATE .. "/clouds.yaml", PYTHONWARNINGS = "ignore"}})
  end
end

-- The same GET with curl and the same token: the service's own floor.
local function curl_each(n, h, service, path, headers)
  local url = assert(h:endpoint(service)) .. path
  local argv = {"curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "-H", "X-Auth-Token: " .. h.token}
  for _, hd in ipairs(headers or {}) do argv[#argv + 1] = "-H" argv[#argv + 1] = hd end
  argv[#argv + 1] = url
  local d = {}
  for k = 1, n do
    local r = common.run_ok("curl " .. path, {argv = argv})
    d[k] = tonumber(r.stdout)
  end
  return common.median(d)
end

local function main()
  common.run_ok("openstack-stack start", {argv = {root .. "/scripts/openstack-stack", "start", STATE}, timeout = 900})
  local h = assert(openstack.connect{cloud = "bomarun-admin", clouds_file = STATE .. "/clouds.yaml"})
  local img = assert(h.image:create{name = "bomarun-bench-" .. host.random_hex(3), disk_format = "raw",
                                    container_format = "bare"})
  local ok, err = pcall(function()
    local show = time_each(N, function() assert(h:call("GET", "image", "/v2/images/" .. img.id)) end)
    local list = time_each(N, function() assert(h:call("GET", "compute", "/servers")) end)
    local cli_show = time_each(CLI_N, cli({"image", "show", img.id, "-f", "json"}))
    local cli_list = time_each(CLI_N, cli({"server", "list", "-f", "json"}))
    local curl_show = curl_each(N, h, "image", "/v2/images/" .. img.id)
    local curl_list = curl_each(N, h, "compute", "/servers", {"OpenStack-API-Version: compute 2.79"})
    print(string.format("openstack: median per call, same services (bomarun and curl %d calls, CLI %d)", N, CLI_N))
    print(string.format("  %-16s %12s %12s %12s %8s", "call", "bomarun ms", "curl ms", "CLI ms", "CLI/bomarun"))
    print(string.format("  %-16s %12s %12s %12s %8s", "image show", common.ms(show), common.ms(curl_show),
      common.ms(cli_show), common.ratio(cli_show, show)))
    print(string.format("  %-16s %12s %12s %12s %8s", "server list", common.ms(list), common.ms(curl_list),
      common.ms(cli_list), common.ratio(cli_list, list)))
    print("  (curl: one process per call with the same token, i.e. the service's own time plus curl's start)")
    print(string.format("openstack: image show %s ms vs CLI %s ms (%s); server list %s ms vs CLI %s ms (%s); bar 100x: %s",
      common.ms(show), common.ms(cli_show), common.ratio(cli_show, show),
      common.ms(list), common.ms(cli_list), common.ratio(cli_list, list),
      (cli_show / show >= 100 and cli_list / list >= 100) and "met" or "NOT met"))

    -- N load balancers, then every one's status polled at once.
    local net = assert(h.network.networks:create{name = "bomarun-bench-lbnet"})
    local sn = assert(h.network.subnets:create{network_id = net.id, ip_version = 4, cidr = "127.68.0.0/22",
                                               enable_dhcp = false})
    local lbs = {}
    local t0 = task.now()
    for k = 1, LBS do
      local lb, err = h.loadbalancer.loadbalancers:create{name = "bomarun-bench-lb-" .. k, vip_subnet_id = sn.id}
      if not lb then common.fail(err) end
      lbs[k] = lb.id
    end
    local fns = {}
    for k = 1, LBS do fns[k] = function() return h.loadbalancer:wait_active(lbs[k], {timeout = 600, interval = 1,
      quiet = true}) end end
    task.parallel(fns)
    local created = task.now() - t0
    local rounds = {}
    for r = 1, 5 do
      local polls = {}
      for k = 1, LBS do polls[k] = function() return assert(h.loadbalancer.loadbalancers:show(lbs[k])).provisioning_status end end
      local p0 = task.now()
      local st = task.parallel(polls)
      rounds[r] = task.now() - p0
      for k = 1, LBS do if st[k] ~= "ACTIVE" then common.fail("LB " .. lbs[k] .. " is " .. tostring(st[k])) end end
    end
    print(string.format("openstack: %d load balancers created and ACTIVE in %.1f s; one status poll of all %d " ..
      "concurrently (8 in flight per service): median %.0f ms, %.1f ms per LB", LBS, created, LBS,
      common.median(rounds) * 1000, common.median(rounds) * 1000 / LBS))
    for k = 1, LBS do
      local ok, err = h.loadbalancer.loadbalancers:delete(lbs[k])
      if not ok then common.fail(err) end
    end
    for k = 1, LBS do h.loadbalancer.loadbalancers:wait_deleted(lbs[k], {timeout = 300, interval = 1, quiet = true}) end
    h.network.subnets:delete(sn.id)
    h.network.networks:delete(net.id)
  end)
  h.image:delete(img.id)
  if not ok then error(err, 0) end
end

main()
