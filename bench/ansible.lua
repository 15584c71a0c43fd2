-- What bomarun.ansible adds over running the same ansible-playbook directly:
-- the same playbook file and the same inventory file against the test
-- stack's sshd on 127.0.0.1, N runs each way, alternating, side by side in
-- one process.
--
--   build/bomarun bench/ansible.lua [N] [TASKS]
--     N      timed runs each way (default 8), after one untimed warm-up each
--     TASKS  tasks in the play (default 10)
--
-- direct:      proc.run{argv = {"ansible-playbook", "-i", INV, PLAY}} -- the
--              figure is the whole call's wall time
-- via bomarun: ansible.playbook{playbook = PLAY, inventory = INV} -- the
--              whole call: private temp dir, callback plugin, event tailing,
--              live lines, result tables, ssh master shutdown, cleanup
--
-- Both get the same environment for Ansible's own state: a fresh ssh
-- ControlPath directory and local temp per run (so neither reuses the other's
-- ControlPersist master), no colour, no retry files.  After each direct run
-- its ssh master is told to exit (untimed), as bomarun does inside its call.
local bench_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local root = bench_dir .. "/.."
package.path = root .. "/tests/stack/?.lua;" .. package.path
local common = dofile(bench_dir .. "/common.lua")
common.name = "ansible"

local ansible = require "bomarun.ansible"
local sshd = require "sshd"
local task = require "bomarun.task"

local N = common.count_arg(arg[1], 8, "N")
local TASKS = common.count_arg(arg[2], 10, "TASKS")

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function playbook_text(dir)
  local lines = {"- name: bench", "  hosts: bench", "  gather_facts: false", "  tasks:"}
  local kinds = {
    function(k) return {"    - name: ping " .. k, "      ansible.builtin.ping:"} end,
    function(k) return {"    - name: command " .. k, "      ansible.builtin.command: echo " .. k,
                        "      changed_when: false"} end,
    function(k) return {"    - name: file " .. k, "      ansible.builtin.file:",
                        "        path: " .. dir .. "/out-" .. k, "        state: directory"} end,
    function(k) return {"    - name: copy " .. k, "      ansible.builtin.copy:",
                        "        dest: " .. dir .. "/copy-" .. k, "        content: \"run {{ 100 | random }}\\n\""} end,
    function(k) return {"    - name: debug " .. k, "      ansible.builtin.debug:", "        msg: task " .. k} end,
  }
  for k = 1, TASKS do
    for _, l in ipairs(kinds[(k - 1) % #kinds + 1](k)) do lines[#lines + 1] = l end
  end
  return table.concat(lines, "\n") .. "\n"
end

local function run_direct(play, inv, dir, k)
  local cp = dir .. "/direct-cp-" .. k
  local env = {ANSIBLE_SSH_CONTROL_PATH_DIR = cp, ANSIBLE_LOCAL_TEMP = dir .. "/direct-local-" .. k,
               ANSIBLE_REMOTE_TEMP = dir .. "/direct-remote-" .. k,
               ANSIBLE_NOCOLOR = "1", ANSIBLE_RETRY_FILES_ENABLED = "0"}
  local t0 = task.now()
  local r = common.run_ok("ansible-playbook (direct)", {argv = {"ansible-playbook", "-i", inv, play}, env = env,
                                                        timeout = 600})
  local wall = task.now() - t0
  if not r.stdout:find("PLAY RECAP", 1, true) or not r.stdout:find("failed=0", 1, true) then
    common.fail("direct run without a clean PLAY RECAP:\n" .. r.stdout:sub(-600))
  end
  -- Untimed: end its ControlPersist master, as bomarun does inside its call.
  common.run_ok("ssh -O exit", {shell = "for s in " .. cp .. "/*; do [ -S \"$s\" ] && " ..
    "ssh -F /dev/null -o ControlPath=\"$s\" -O exit x >/dev/null 2>&1; done; rm -rf " .. cp, timeout = 30})
  return wall
end

local function run_bomarun(play, inv, dir)
  local t0 = task.now()
  local res, err = ansible.playbook{playbook = play, inventory = inv, timeout = 600, echo = false,
                                    tmp_dir = dir}
  local wall = task.now() - t0
  if not res then common.fail("bomarun run: " .. tostring(err)) end
  if not res.ok then common.fail("bomarun run failed: " .. res.msg) end
  if #res.events ~= TASKS then common.fail(string.format("bomarun run: %d events for %d tasks", #res.events, TASKS)) end
  -- What bomarun spends around the process (set-up, master exit, clean-up).
  return wall, wall - res.duration
end

local function run_inline(inv_table, dir)
  local play = {name = "bench", hosts = "bench", gather_facts = false, tasks = {}}
  for k = 1, TASKS do play.tasks[k] = {name = "ping " .. k, ping = {}} end
  local t0 = task.now()
  local res, err = ansible.playbook{play = play, inventory = inv_table, timeout = 600, echo = false, tmp_dir = dir}
  local wall = task.now() - t0
  if not res or not res.ok then common.fail("inline run: " .. tostring(err or res.msg)) end
  return wall
end

local function fmt(s) return string.format("%.3f", s) end

local server = sshd.start_new()
local ok, err = pcall(common.with_tmpdir, function(dir)
  local play = dir .. "/bench.yml"
  write(play, playbook_text(dir))
  local inv = dir .. "/inventory.ini"
  write(inv, string.format("bench ansible_host=127.0.0.1 ansible_port=%d ansible_user=%s " ..
    "ansible_ssh_private_key_file=%s ansible_python_interpreter=/usr/bin/python3 " ..
    "ansible_ssh_common_args='-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes'\n",
    server.port, server.user, server.keys.ed25519, server.known_hosts))

  run_direct(play, inv, dir, 0)          -- warm-ups: page cache, sshd
  run_bomarun(play, inv, dir)
  local direct, via, outside = {}, {}, {}
  for k = 1, N do                         -- alternate, so drift hits both sides
    if k % 2 == 1 then
      direct[k] = run_direct(play, inv, dir, k)
      via[k], outside[k] = run_bomarun(play, inv, dir)
    else
      via[k], outside[k] = run_bomarun(play, inv, dir)
      direct[k] = run_direct(play, inv, dir, k)
    end
  end
  local inv_table = {hosts = {bench = {ansible_host = "127.0.0.1"}},
                     connection = {user = server.user, port = server.port, key = server.keys.ed25519,
                                   known_hosts = server.known_hosts, python = "/usr/bin/python3"}}
  local inline = run_inline(inv_table, dir)

  local md, mv = common.median(direct), common.median(via)
  local overhead = (mv - md) / md * 100
  -- Two estimators that resist a loaded machine: the minimum of each side,
  -- and the median of the per-pair differences (each pair ran back to back).
  local pair = {}
  for k = 1, N do pair[k] = (via[k] - direct[k]) / direct[k] * 100 end
  local min_over = (common.min(via) - common.min(direct)) / common.min(direct) * 100
  print(string.format("ansible: %d runs each way, alternating, of a %d-task play over ssh to a loopback sshd " ..
    "(one untimed warm-up each)", N, TASKS))
  print(string.format("  %-38s %s", "direct ansible-playbook (s):", table.concat((function()
    local t = {} for k = 1, N do t[k] = fmt(direct[k]) end return t end)(), " ")))
  print(string.format("  %-38s %s", "via bomarun ansible.playbook (s):", table.concat((function()
    local t = {} for k = 1, N do t[k] = fmt(via[k]) end return t end)(), " ")))
  print(string.format("  %-38s %s (one run; ping tasks, for reference)", "inline play + table inventory (s):",
    fmt(inline)))
  print(string.format("  %-38s %+.1f%% (paired median), %+.1f%% (min %.3f s vs %.3f s)", "overhead, other estimators:",
    common.median(pair), min_over, common.min(via), common.min(direct)))
  print(string.format("  %-38s median %s ms (%.1f%% of the via-bomarun median)", "bomarun's time outside the process:",
    common.ms(common.median(outside)), common.median(outside) / mv * 100))
  print(string.format("ansible: direct median %.3f s, via bomarun %.3f s, overhead %+.1f%% (target under 5%%: %s)",
    md, mv, overhead, overhead < 5 and "met" or "NOT met"))
end)
server:remove()
if not ok then error(err, 0) end
