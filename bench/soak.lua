-- Soak: one bomarun process doing N subprocesses, N HTTP requests and N ssh
-- execs (default N = 10000 each), in batches, sampling its open file
-- descriptors (/proc/self/fd) and resident memory after every batch.  It
-- prints the figures and fails when either grows after warm-up: no sample
-- after warm-up may hold more than FD_SLACK fds above the warm-up high-water
-- mark (libcurl keeps a cache of idle connections whose size varies by one
-- or two with timing; a leak of one fd per 100 operations would show +50),
-- and RSS may not end more than RSS_SLACK_MIB above its warm-up high-water
-- mark.
--
--   build/bomarun bench/soak.lua [N]
--
-- Peers: tests/stack/http_test_server.py and the test sshd
-- (tests/stack/sshd.lua), both on 127.0.0.1.  Run by the suite (ctest
-- `soak`, plain build) and by bench/run.
local root = (arg[0]:match("^(.*)/bench/[^/]*$") or ".")
package.path = root .. "/tests/stack/?.lua;" .. package.path
local bench_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local common = dofile(bench_dir .. "/common.lua")
common.name = "soak"

local host = require "bomarun._host"
local http = require "bomarun.http"
local proc = require "bomarun.proc"
local ssh = require "bomarun.ssh"
local task = require "bomarun.task"
local sshd = require "sshd"

local N = common.count_arg(arg[1], 10000, "N")
local BATCH = math.max(1, N // 20)
local WARMUP_BATCHES = 4
local CONCURRENCY = 8
local RSS_SLACK_MIB = 6
local FD_SLACK = 2

local function open_fds()
  local p = assert(io.popen("ls /proc/" .. host.getpid() .. "/fd"))
  local n = 0
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n - 1   -- the ls pipe itself
end

-- Run fn(i) for i = 1..N, CONCURRENCY at a time, sampling after each batch.
local function soak(name, fn)
  local samples = {}
  local t0 = task.now()
  local done = 0
  while done < N do
    local size = math.min(BATCH, N - done)
    local fns = {}
    for k = 1, size do
      local i = done + k
      fns[k] = function() fn(i) end
    end
    task.parallel(fns, {limit = CONCURRENCY})
    done = done + size
    -- A quiescent point: handles closed by the last batch finish closing
    -- on the next turns of the loop.
    task.sleep(0.05)
    collectgarbage()
    samples[#samples + 1] = {fds = open_fds(), rss = host.rss()}
  end
  local wall = task.now() - t0
  local warm_rss, warm_fds = 0, 0
  for k = 1, math.min(WARMUP_BATCHES, #samples) do
    warm_rss = math.max(warm_rss, samples[k].rss)
    warm_fds = math.max(warm_fds, samples[k].fds)
  end
  local last = samples[#samples]
  local max_fds = 0
  for k = WARMUP_BATCHES + 1, #samples do max_fds = math.max(max_fds, samples[k].fds) end
  print(string.format("soak: %-10s %6d in %6.1f s (%.2f ms each); fds after warm-up %d, at the end %d (max %d); " ..
    "RSS after warm-up %.1f MiB, at the end %.1f MiB (%+.1f MiB)", name, N, wall, wall * 1000 / N,
    warm_fds, last.fds, math.max(max_fds, last.fds), warm_rss / 1048576, last.rss / 1048576,
    (last.rss - warm_rss) / 1048576))
  local problems = {}
  if max_fds > warm_fds + FD_SLACK then
    problems[#problems + 1] = string.format("%s: open fds grew from %d after warm-up to %d (slack %d)", name,
      warm_fds, max_fds, FD_SLACK)
  end
  if last.rss - warm_rss > RSS_SLACK_MIB * 1048576 then
    problems[#problems + 1] = string.format("%s: RSS grew by %.1f MiB after warm-up (slack %d MiB)", name,
      (last.rss - warm_rss) / 1048576, RSS_SLACK_MIB)
  end
  return problems
end

local function start_http_server()
  local port
  local server = assert(proc.spawn{argv = {"/usr/bin/python3", root .. "/tests/stack/http_test_server.py"},
                                   quiet = true, keep = true, on_line = function(l) port = port or tonumber(l) end})
  local t0 = task.now()
  while not port and task.now() - t0 < 10 do task.sleep(0.02) end
  if not port then common.fail("the test HTTP server did not start") end
  return server, "http://127.0.0.1:" .. port
end

local problems = {}
local function add(list) for _, p in ipairs(list) do problems[#problems + 1] = p end end

print(string.format("soak: %d each of subprocesses, HTTP requests and ssh execs, %d at a time, sampled every %d",
  N, CONCURRENCY, BATCH))
add(soak("proc", function(i)
  local r = proc.run{argv = {"/bin/echo", tostring(i)}, timeout = 30, quiet = true}
  if not r or r.code ~= 0 then common.fail("proc " .. i .. " failed") end
end))

local server, base = start_http_server()
local ok, err = pcall(function()
  add(soak("http", function(i)
    local r, herr = http.request{url = base .. "/echo?i=" .. i, timeout = 30}
    if not r or r.status ~= 200 then common.fail("http " .. i .. ": " .. tostring(herr or r.status)) end
  end))
end)
server:kill("TERM")
server:wait()
if not ok then error(err, 0) end

local d = sshd.start_new()
ok, err = pcall(function()
  local s = assert(ssh.connect{host = d.host, port = d.port, user = d.user, key = d.keys.ed25519,
                               known_hosts = d.known_hosts, host_key_policy = "strict", timeout = 10})
  add(soak("ssh", function(i)
    local r, serr = s:exec("true", {timeout = 30, quiet = true})
    if not r or r.status ~= 0 then common.fail("ssh exec " .. i .. ": " .. tostring(serr)) end
  end))
  s:close()
end)
d:remove()
if not ok then error(err, 0) end

if #problems > 0 then common.fail(table.concat(problems, "; ")) end
print("soak: no growth in open fds or RSS after warm-up")
