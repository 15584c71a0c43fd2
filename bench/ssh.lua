-- Per-command cost over ssh, side by side against the same loopback sshd:
-- bomarun over one session, fresh `ssh` processes, `ssh` with ControlMaster,
-- and `ansible -m command`; then 200 sessions at once from one process.
--
--   build/bomarun bench/ssh.lua [N] [ANSIBLE_N] [SESSIONS]
--     N          sequential `true` commands per client (default 100)
--     ANSIBLE_N  ansible runs (default 5: each costs seconds)
--     SESSIONS   concurrent sessions (default 200)
--
-- The sshd is the test stack's (tests/stack/sshd.lua): its own config and
-- keys on 127.0.0.1, stopped at the end.
local bench_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local root = bench_dir .. "/.."
package.path = root .. "/tests/stack/?.lua;" .. package.path
local common = dofile(bench_dir .. "/common.lua")
common.name = "ssh"

local host = require "bomarun._host"
local ssh = require "bomarun.ssh"
local sshd = require "sshd"
local task = require "bomarun.task"

local N = common.count_arg(arg[1], 100, "N")
local ANSIBLE_N = common.count_arg(arg[2], 5, "ANSIBLE_N")
local SESSIONS = common.count_arg(arg[3], 200, "SESSIONS")

local function ssh_argv(server, extra)
  local argv = {"ssh", "-q", "-i", server.keys.ed25519, "-p", tostring(server.port),
                "-o", "UserKnownHostsFile=" .. server.known_hosts, "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-F", "/dev/null"}
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = server.user .. "@127.0.0.1"
  argv[#argv + 1] = "true"
  return argv
end

local function time_loop(n, fn)
  fn()   -- warm-up
  local t0 = task.now()
  for _ = 1, n do fn() end
  return (task.now() - t0) / n
end

local function bench_sequential(server, dir)
  local target = {host = "127.0.0.1", port = server.port, user = server.user, key = server.keys.ed25519,
                  known_hosts = server.known_hosts}
  local s = assert(ssh.connect(target))
  local per_bomarun = time_loop(N, function()
    local r = assert(s:exec("true", {quiet = true}))
    if r.status ~= 0 then common.fail("bomarun exec exited " .. tostring(r.status)) end
  end)
  s:close()

  local per_fresh = time_loop(N, function() common.run_ok("ssh", {argv = ssh_argv(server)}) end)

  local control = {"-o", "ControlMaster=auto", "-o", "ControlPath=" .. dir .. "/cm-%C", "-o", "ControlPersist=60"}
  local per_cm = time_loop(N, function() common.run_ok("ssh (ControlMaster)", {argv = ssh_argv(server, control)}) end)
  common.run_ok("ssh -O exit", {argv = (function()
    local a = ssh_argv(server, control)
    a[#a] = nil
    table.insert(a, 2, "-O")
    table.insert(a, 3, "exit")
    return a
  end)()})

  local inv = dir .. "/inventory.ini"
  local f = assert(io.open(inv, "w"))
  f:write(string.format("bench ansible_host=127.0.0.1 ansible_port=%d ansible_user=%s " ..
    "ansible_ssh_private_key_file=%s ansible_python_interpreter=/usr/bin/python3 " ..
    "ansible_ssh_common_args='-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o ControlMaster=no'\n",
    server.port, server.user, server.keys.ed25519, server.known_hosts))
  f:close()
  local env = {ANSIBLE_NOCOLOR = "1", ANSIBLE_HOST_KEY_CHECKING = "True", ANSIBLE_RETRY_FILES_ENABLED = "0",
               ANSIBLE_LOCAL_TEMP = dir .. "/ansible-local", ANSIBLE_SSH_CONTROL_PATH_DIR = dir .. "/cp"}
  local per_ansible = time_loop(ANSIBLE_N, function()
    common.run_ok("ansible -m command", {argv = {"ansible", "bench", "-i", inv, "-m", "command", "-a", "true"},
                                        env = env, timeout = 120})
  end)

  print(string.format("ssh: %d sequential `true` commands against one loopback sshd (ansible: %d runs)", N, ANSIBLE_N))
  print(string.format("  %-34s %10s %10s", "client", "ms/command", "vs bomarun"))
  local rows = {{"bomarun, one session", per_bomarun}, {"ssh, fresh process each", per_fresh},
                {"ssh, ControlMaster", per_cm}, {"ansible -m command", per_ansible}}
  for _, row in ipairs(rows) do
    print(string.format("  %-34s %10s %10s", row[1], common.ms(row[2]), common.ratio(row[2], per_bomarun)))
  end
  print(string.format("ssh: bomarun %s ms/command; fresh ssh %s ms (%s, bar 20x: %s); ControlMaster %s ms (%s); " ..
    "ansible %s ms (%s, bar 100x: %s)",
    common.ms(per_bomarun), common.ms(per_fresh), common.ratio(per_fresh, per_bomarun),
    per_fresh / per_bomarun >= 20 and "met" or "NOT met",
    common.ms(per_cm), common.ratio(per_cm, per_bomarun),
    common.ms(per_ansible), common.ratio(per_ansible, per_bomarun),
    per_ansible / per_bomarun >= 100 and "met" or "NOT met"))
end

local function bench_fanout(server)
  local target = {host = "127.0.0.1", port = server.port, user = server.user, key = server.keys.ed25519,
                  known_hosts = server.known_hosts, timeout = 60}
  collectgarbage("collect")
  local before = host.rss()
  local sessions, fns = {}, {}
  local peak = before
  for k = 1, SESSIONS do
    fns[k] = function()
      local s = assert(ssh.connect(target))
      sessions[k] = s
      local r = assert(s:exec("echo " .. k, {quiet = true}))
      peak = math.max(peak, host.rss())
      return r.stdout
    end
  end
  local t0 = task.now()
  local out = task.parallel(fns)
  local wall = task.now() - t0
  for k = 1, SESSIONS do
    if out[k] ~= k .. "\n" then common.fail("session " .. k .. " answered " .. tostring(out[k])) end
  end
  for k = 1, SESSIONS do sessions[k]:close() end
  print(string.format("ssh: %d sessions at once, each connecting and running one command: %.2f s wall; " ..
    "peak RSS +%.1f MiB over %.1f MiB at start = %.1f KiB per session",
    SESSIONS, wall, (peak - before) / 1048576, before / 1048576, (peak - before) / SESSIONS / 1024))
end

local server = sshd.start_new()
local ok, err = pcall(common.with_tmpdir, function(dir)
  bench_sequential(server, dir)
  bench_fanout(server)
end)
server:remove()
if not ok then error(err, 0) end
