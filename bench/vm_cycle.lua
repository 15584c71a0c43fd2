-- The whole VM integration cycle on a real guest, side by side: bomarun
-- (`build/bomarun runbooks/vm-integration.lua --profile local-vm`) and the
-- seed's way as a shell script (bench/vm_cycle_scripted.sh: virt-install,
-- cloud-localds, `virsh domifaddr` polling, ssh loops, ansible-playbook), one
-- after the other on the same image, playbooks and extra-vars.  For each: the
-- wall time, the guest's own time, ansible-playbook's time and what is left,
-- the tool's own overhead.
--
--   build/bomarun bench/vm_cycle.lua [ROUNDS]
--     ROUNDS  cycles per tool (default 1; the order alternates per round)
--   VM_CYCLE_MAX_LOAD  the load average to wait for before each cycle (1.0)
--
-- Needs libvirtd (scripts/virt-stack start); the image comes from
-- `scripts/virt-stack image` (built when missing, untimed).  Installs
-- virtinst and cloud-image-utils when missing (vm_cycle_scripted.sh --deps).
-- One guest at a time: before each cycle it waits until no domain is running
-- on qemu:///system and the host lock (/run/lock/bomarun-virt-cycle.lock)
-- is free; it holds that lock while the script runs.
--
-- How the guest's time is measured, the same way for both tools and without
-- either tool's help: the bench reads the guest's serial console while the
-- cycle runs (every 20 ms; it keeps the file open, so the teardown's rm does
-- not take it away) and stamps each line with the host clock.
--   boot      the domain running (the tool's start call has returned: the
--             virt `start` event in bomarun's journal, the end of
--             virt-install) through the firmware and the kernel's start (the
--             minimum over the boot's printk lines of host stamp - printk
--             time) to the later of cloud-init's "finished" line and login
--             being possible (ssh.service started, systemd-user-sessions
--             finished)
--   reboot    the first shutdown line on the console after the boot's
--             cloud-init (the guest acting on the reboot request) to login
--             being possible in the new boot
--   ansible   the three ansible-playbook runs (apply base, apply service,
--             verify): bomarun's from its journal (ansible_recap duration),
--             the script's from its PHASE lines
--   overhead  wall - boot - reboot - ansible.  Everything else is the tool's:
--             its own start, image check, overlay, seed, define and start,
--             noticing that the guest is ready, the reboot request, the
--             checks, the snapshot, the teardown (libvirt's and qemu's work
--             for the snapshot and the destroy is in it, and shown apart).
--             A stricter figure also counts the firmware (domain running to
--             the guest kernel's start) as the tool's.
local bench_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local root = bench_dir .. "/.."
local common = dofile(bench_dir .. "/common.lua")
common.name = "vm_cycle"

local host = require "bomarun._host"
local json = require "bomarun.json"
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local virt = require "bomarun.virt"

local ROUNDS = common.count_arg(arg[1], 1, "ROUNDS")
local BIN = os.getenv("BOMARUN") or (root .. "/build/bomarun")
local URI = "qemu:///system"
local PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
local CMDLINE = "root=/dev/vda rw console=ttyS0"   -- both guests boot the same kernel command line
local SCRIPT = bench_dir .. "/vm_cycle_scripted.sh"
local MAX_LOAD = tonumber(os.getenv("VM_CYCLE_MAX_LOAD") or "") or 1.0

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function lines_of(s)
  local out = {}
  for l in (s or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- Seconds since the epoch of a UTC date (libvirt's qemu log).
local function utc_epoch(y, m, d, hh, mm, ss)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + hh * 3600 + mm * 60 + ss
end

-- Preconditions -----------------------------------------------------------------

local function image_dir()
  local r = common.run_ok("scripts/virt-stack image", {argv = {root .. "/scripts/virt-stack", "image"}, timeout = 1800})
  local ls = lines_of(r.stdout)
  local dir = ls[#ls] and trim(ls[#ls])
  if not dir or not host.exists(dir .. "/debian-12.qcow2") then
    common.fail("scripts/virt-stack image printed no image directory")
  end
  return dir
end

local function load1()
  return tonumber(((read("/proc/loadavg") or ""):match("^(%S+)"))) or 0
end

-- Wait until no domain runs on qemu:///system and the cycle lock is free
-- (another engineer's guest would skew both the timings and theirs), then
-- up to 30 min for the 1-minute load average to drop below MAX_LOAD (the
-- last cycle's guest, or someone's test run); after that it runs anyway and
-- says so.
local function wait_for_idle_host()
  local deadline, load_deadline, said = task.now() + 3600, task.now() + 1800, nil
  while true do
    local r = proc.run{argv = {"virsh", "-c", URI, "list", "--name"}, timeout = 60, quiet = true}
    local up = r and r.code == 0
    local running = up and trim(r.stdout):gsub("%s+", " ") or ""
    local lock = up and running == "" and virt.lock{name = "cycle", holder = "bench/vm_cycle.lua (probe)"}
    local why
    if not up then
      why = "libvirtd does not answer (scripts/virt-stack start)"
    elseif running ~= "" then
      why = "domains running: " .. running
    elseif not lock then
      why = "the cycle lock is held"
    else
      lock:release()
      if load1() < MAX_LOAD then return end
      if task.now() > load_deadline then
        print(string.format("vm_cycle: WARNING: the load average is still %.2f after 30 min: running anyway", load1()))
        return
      end
      why = string.format("the load average to drop below %.1f", MAX_LOAD)
    end
    if why ~= said then print("vm_cycle: waiting: " .. why) end
    said = why
    if task.now() > deadline then common.fail("the host did not become idle within an hour (" .. why .. ")") end
    task.sleep(5)
  end
end

-- Other guests that ran during a cycle, and the highest 1-minute load
-- average (every 5 s), so a run that shared the CPUs says so (the cycle's
-- own guest and ansible gave 1.3 to 2.6 on the 2-core machine).
local function watch_neighbours()
  local w = {seen = {}, stopping = false, max_load = 0}
  w.task = task.spawn(function()
    while not w.stopping do
      local r = proc.run{argv = {"virsh", "-c", URI, "list", "--name"}, timeout = 30, quiet = true}
      for name in ((r and r.stdout) or ""):gmatch("%S+") do w.seen[name] = true end
      w.max_load = math.max(w.max_load, load1())
      for _ = 1, 50 do
        if w.stopping then break end
        task.sleep(0.1)
      end
    end
  end)
  function w.stop(own)
    w.stopping = true
    w.task:wait()
    local others = {}
    for name in pairs(w.seen) do
      if name ~= own then others[#others + 1] = name end
    end
    table.sort(others)
    return others
  end
  return w
end

-- The serial console, read as it is written --------------------------------------

-- When libvirt started qemu for the domain (the first line of its qemu log,
-- read while the domain runs: the log is not always there after the
-- teardown), or nil.
local function qemu_started(name)
  local log = read("/var/log/libvirt/qemu/" .. name .. ".log")
  if not log then return nil end
  local y, m, d, hh, mm, ss = log:match("(%d+)%-(%d+)%-(%d+) (%d+):(%d+):([%d.]+)%+0000: starting up")
  if not y then return nil end
  return utc_epoch(tonumber(y), tonumber(m), tonumber(d), tonumber(hh), tonumber(mm), tonumber(ss))
end

-- Tail the file find() names (once it exists) every 20 ms; each complete line
-- is kept with the host time it was read at.  w.name (the domain: from
-- name_of(path), or set by the caller) gives w.qemu_start.  w.stop() reads
-- the rest.
local function watch_console(find, name_of)
  local w = {lines = {}, stopping = false}
  local function add(text, t)
    text = text:gsub("\27%[[%d;?]*[A-Za-z]", ""):gsub("\r", "")
    w.lines[#w.lines + 1] = {t = t, text = text}
  end
  w.task = task.spawn(function()
    local f, buf = nil, ""
    local function pump()
      local data = f:read("a")
      f:seek("cur")          -- clear EOF, so the next read sees what qemu appends
      if data and #data > 0 then
        local t = host.time()
        buf = buf .. data
        while true do
          local nl = buf:find("\n", 1, true)
          if not nl then break end
          add(buf:sub(1, nl - 1), t)
          buf = buf:sub(nl + 1)
        end
      end
    end
    while not w.stopping do
      if f then
        pump()
        if w.name and not w.qemu_start then w.qemu_start = qemu_started(w.name) end
        task.sleep(0.02)
      else
        local path = find()
        f = path and io.open(path, "rb")
        if f and name_of then w.name = name_of(path) end
        if not f then task.sleep(0.1) end
      end
    end
    if f then
      pump()
      if buf ~= "" then add(buf, host.time()) end
      f:close()
    end
  end)
  function w.stop()
    w.stopping = true
    w.task:wait()
  end
  return w
end

-- The guest's own time from the console lines (see the top of the file).
local function guest_times(lines)
  local starts = {}
  for i, l in ipairs(lines) do
    if l.text:match("^%[%s*[%d.]+%] Linux version ") then starts[#starts + 1] = i end
  end
  if #starts ~= 2 then common.fail(#starts .. " boots on the serial console, expected 2") end
  local boots = {}
  for k, first in ipairs(starts) do
    local last = (starts[k + 1] or (#lines + 1)) - 1
    local b = {first = first, last = last}
    for i = first, last do
      local l = lines[i]
      local stamp = tonumber(l.text:match("^%[%s*([%d.]+)%]"))
      if stamp and not l.text:find("cloud-init[", 1, true) then
        b.kernel = math.min(b.kernel or math.huge, l.t - stamp)
      end
      if not b.sshd and l.text:find("Started", 1, true) and l.text:find("OpenBSD Secure Shell server", 1, true) then
        b.sshd = l.t
      end
      if not b.sessions and l.text:find("Finished", 1, true) and l.text:find("Permit User Sessions", 1, true) then
        b.sessions = l.t
      end
      if not b.ci and l.text:find("Cloud%-init v%. [%d.]+ finished at") then
        b.ci, b.ci_index = l.t, i
        b.ci_up = tonumber(l.text:match("Up ([%d.]+) seconds"))
      end
    end
    if not (b.kernel and b.sshd and b.sessions) then
      common.fail("boot " .. k .. ": no kernel start, sshd start or user sessions on the console")
    end
    b.login = math.max(b.sshd, b.sessions)
    boots[k] = b
  end
  local b1, b2 = boots[1], boots[2]
  if not b1.ci then common.fail("no 'Cloud-init ... finished' line in the first boot") end
  for i = b1.ci_index + 1, b1.last do
    local text = lines[i].text
    if text:find("Stopp") or text:find("Removed slice", 1, true) or text:find("Unmount", 1, true)
       or text:find("reboot", 1, true) then
      b1.shutdown = lines[i].t
      break
    end
  end
  if not b1.shutdown then common.fail("no shutdown line on the console before the second boot") end
  local ready1 = math.max(b1.ci, b1.login)
  return {kernel = b1.kernel, ready = ready1, boot = ready1 - b1.kernel, ci_up = b1.ci_up,
          shutdown = b1.shutdown, back = b2.login, reboot = b2.login - b1.shutdown,
          kernel2 = b2.kernel}
end


-- Nothing of a cycle left: no domain, no qemu process, no files.  Both tools
-- leave libvirt's per-domain qemu log (/var/log/libvirt/qemu/NAME.log): it is
-- read above and removed here.
local function check_nothing_left(name, dir)
  local left = {}
  local d = proc.run{argv = {"virsh", "-c", URI, "dominfo", name}, quiet = true, timeout = 30}
  if d.code == 0 then
    left[#left + 1] = "domain " .. name
    proc.run{argv = {"virsh", "-c", URI, "destroy", name}, quiet = true, timeout = 60}
    proc.run{argv = {"virsh", "-c", URI, "undefine", name, "--snapshots-metadata"}, quiet = true, timeout = 60}
  end
  local ps = proc.run{argv = {"pgrep", "-f", "guest=" .. name .. ","}, quiet = true, timeout = 10}
  if ps.code == 0 then left[#left + 1] = "qemu process " .. trim(ps.stdout) end
  local ls = proc.run{shell = "ls -A " .. proc.quote(dir) .. " 2>/dev/null", quiet = true}
  if trim(ls.stdout) ~= "" then left[#left + 1] = "files in " .. dir .. ": " .. trim(ls.stdout):gsub("\n", " ") end
  local qlog = "/var/log/libvirt/qemu/" .. name .. ".log"
  local had_log = host.exists(qlog) and true or false
  os.remove(qlog)
  if #left > 0 then common.fail("left behind by the cycle: " .. table.concat(left, "; ")) end
  return had_log
end

-- The two cycles ------------------------------------------------------------------

-- The timeline of a run: t0, t_end (host clock), the ansible runs as
-- {start, duration}, the reboot request, and the named phases the tool
-- reports, in order.
local function run_bomarun(img, tmp)
  local runs, vms = tmp .. "/runs", tmp .. "/vms"
  assert(host.mkdir(vms))
  local w = watch_console(function()
    local r = proc.run{shell = "ls " .. proc.quote(vms) .. "/*/console.log 2>/dev/null", quiet = true}
    return r.code == 0 and lines_of(r.stdout)[1] or nil
  end, function(path) return path:match("([^/]+)/console%.log$") end)
  local argv = {BIN, "runbooks/vm-integration.lua", "--profile", "local-vm", "--run-dir", runs, "--no-color",
                "--set", "workdir=" .. vms,
                "--set", "image_url=file://" .. img .. "/debian-12.qcow2",
                "--set", "kernel_url=file://" .. img .. "/vmlinuz",
                "--set", "initrd_url=file://" .. img .. "/initrd.img",
                "--set", "sha512sums=" .. img .. "/SHA512SUMS",
                "--set", "cache=" .. img,
                "--set", "cmdline=" .. CMDLINE}
  local t0 = host.time()
  local r, err = proc.run{argv = argv, cwd = root, env = {PATH = PATH}, timeout = 1800, quiet = true}
  w.stop()
  local ls = proc.run{shell = "ls -d " .. proc.quote(runs) .. "/*/", quiet = true}
  local dir = lines_of(ls.stdout)[1]
  if not r or r.code ~= 0 then
    -- the runbook's ledger tears down on failure; if libvirt went away under
    -- it, remove what is left of this run
    local report = dir and json.decode(read(dir .. "report.json") or "null")
    local id = type(report) == "table" and report.run and report.run.id
    local c = id and virt.connect{uri = URI}
    if c then
      c:prune{run = id, files = vms}
      c:close()
    end
    common.fail("bomarun cycle: " .. tostring(err or ("exit " .. tostring(r.code))) .. "\n"
      .. ((r and r.stdout or ""):sub(-1500)) .. "\n" .. (dir and read(dir .. "/summary.txt") or ""))
  end
  local tl = {tool = "bomarun", t0 = t0, t_end = t0 + r.duration, wall = r.duration, ansible = {}, phases = {},
              console = w.lines}
  local snap_start, cleanups = nil, {}
  for _, line in ipairs(lines_of(read(dir .. "events.jsonl"))) do
    local e = json.decode(line)
    if e.type == "ansible_start" then
      tl.ansible[#tl.ansible + 1] = {start = e.t}
    elseif e.type == "ansible_recap" then
      tl.ansible[#tl.ansible].duration = e.duration
    elseif e.type == "virt" and e.op == "reboot" then
      tl.reboot_request = e.t
    elseif e.type == "virt" and e.op == "start" then
      tl.started = e.t
    elseif e.type == "virt" and e.op == "snapshot" then
      tl.snapshot = e.t - snap_start
    elseif e.type == "step_start" and e.id == "it.9" then
      snap_start = e.t
    elseif e.type == "cleanup_start" then
      cleanups[e.index] = e.description
    elseif e.type == "cleanup_end" and (cleanups[e.index] or ""):match("^destroy and undefine") then
      tl.destroy = e.duration
    elseif e.type == "capture" and e.key == "vm_name" then
      tl.name = e.value
    elseif e.type == "step_end" and e.kind == "step" then
      tl.phases[#tl.phases + 1] = {name = e.id, duration = e.duration}
    end
  end
  tl.qemu_start = w.qemu_start or qemu_started(tl.name)
  tl.qemu_log_left = check_nothing_left(tl.name, vms)
  return tl
end

local function run_scripted(img, tmp)
  local work = tmp .. "/scripted"
  local w = watch_console(function() return work .. "/console.log" end)
  local lock = virt.lock{name = "cycle", holder = "bench/vm_cycle.lua (the scripted cycle, pid " .. host.getpid() .. ")"}
  if not lock then common.fail("the cycle lock was taken between the check and the scripted run") end
  local t0 = host.time()
  local r, err = proc.run{argv = {"bash", SCRIPT, img, work}, cwd = root, timeout = 1800, quiet = true,
                          env = {PATH = PATH, VM_KERNEL_ARGS = CMDLINE},
                          on_line = function(line, stream)
                            if stream == "stdout" then w.name = w.name or line:match("^DOMAIN (%S+)$") end
                          end}
  lock:release()
  w.stop()
  local tl = {tool = "scripted", t0 = t0, wall = r and r.duration, ansible = {}, phases = {}, console = w.lines}
  for _, line in ipairs(lines_of(r and r.stdout)) do
    local name, a, b = line:match("^PHASE (%S+) ([%d.]+) ([%d.]+)$")
    if name then
      a, b = tonumber(a), tonumber(b)
      tl.phases[#tl.phases + 1] = {name = name, duration = b - a}
      if name:match("^apply%-") or name == "verify" then tl.ansible[#tl.ansible + 1] = {start = a, duration = b - a} end
      if name == "reboot" then tl.reboot_request = a end
      if name == "define+start" then tl.started = b end
      if name == "snapshot" then tl.snapshot = b - a end
      if name == "destroy" or name == "undefine" then tl.destroy = (tl.destroy or 0) + b - a end
    end
    tl.name = tl.name or line:match("^DOMAIN (%S+)$")
  end
  if not r or r.code ~= 0 then
    if tl.name then pcall(check_nothing_left, tl.name, work) end
    common.fail("scripted cycle: " .. tostring(err or ("exit " .. tostring(r.code))) .. "\n"
      .. ((r and r.stderr or ""):sub(-1500)))
  end
  tl.t_end = t0 + r.duration
  tl.qemu_start = w.qemu_start or qemu_started(tl.name)
  tl.qemu_log_left = check_nothing_left(tl.name, work)
  return tl
end

-- The figures of one run: guest, ansible, overhead and where the overhead went.
local function figures(tl)
  if #tl.ansible ~= 3 then common.fail(tl.tool .. ": " .. #tl.ansible .. " ansible runs, expected 3") end
  local g = guest_times(tl.console)
  local a = tl.ansible
  local ansible = 0
  for _, x in ipairs(a) do ansible = ansible + x.duration end
  if not tl.started then common.fail(tl.tool .. ": no mark for the domain's start") end
  local f = {tool = tl.tool, wall = tl.wall, boot = g.ready - tl.started, reboot = g.reboot, ansible = ansible,
             firmware = g.kernel - tl.started, g = g, tl = tl}
  f.guest = f.boot + f.reboot
  f.overhead = tl.wall - f.guest - ansible
  f.strict = f.overhead + f.firmware
  -- The same overhead, cut at marks both tools share (they add up to it).
  f.parts = {
    {"tool start to the domain running (start-up, image, overlay, seed, define, start)", tl.started - tl.t0},
    {"guest ready to apply 1 (noticing ssh and cloud-init)", a[1].start - g.ready},
    {"apply 1 to apply 2", a[2].start - (a[1].start + a[1].duration)},
    {"apply 2 to the guest acting on the reboot", g.shutdown - (a[2].start + a[2].duration)},
    {"guest back to verify (noticing the new boot)", a[3].start - g.back},
    {"after verify (checks, snapshot, teardown, reports)", tl.t_end - (a[3].start + a[3].duration)},
  }
  for _, p in ipairs(f.parts) do
    if p[2] < -0.05 then common.fail(tl.tool .. ": the console and the tool's times disagree: " .. p[1] .. " " .. p[2]) end
  end
  f.qemu_to_kernel = tl.qemu_start and (g.kernel - tl.qemu_start)
  f.request_to_shutdown = tl.reboot_request and (g.shutdown - tl.reboot_request)
  return f
end

-- Output ----------------------------------------------------------------------------

local function s1(x) return string.format("%.1f", x) end
local function s2(x) return string.format("%.2f", x) end

local function print_run(f)
  local g = f.g
  print(string.format("  %s: wall %s s = boot %s + reboot %s + ansible %s + overhead %s"
    .. " (%s with the firmware counted as overhead)",
    f.tool, s1(f.wall), s1(f.boot), s1(f.reboot), s1(f.ansible), s2(f.overhead), s2(f.strict)))
  print(string.format("    guest: domain running to kernel %s s (qemu process start to kernel %s s), kernel to ready %s s"
    .. " (cloud-init finished at Up %s s); shutdown to login %s s (reboot request to the first shutdown line %s s)",
    s2(f.firmware), f.qemu_to_kernel and s2(f.qemu_to_kernel) or "?", s1(g.ready - g.kernel),
    g.ci_up and s1(g.ci_up) or "?", s1(f.reboot), f.request_to_shutdown and s2(f.request_to_shutdown) or "?"))
  print(string.format("    libvirt/qemu work inside the overhead: snapshot %s s, destroy + undefine %s s",
    f.tl.snapshot and s2(f.tl.snapshot) or "?", f.tl.destroy and s2(f.tl.destroy) or "?"))
  local durs = {}
  for _, x in ipairs(f.tl.ansible) do durs[#durs + 1] = s1(x.duration) end
  print("    ansible-playbook runs: " .. table.concat(durs, " + ") .. " s")
  for _, p in ipairs(f.parts) do print(string.format("    overhead %6s s  %s", s2(p[2]), p[1])) end
  print("    left behind: no domain, no qemu process, no files" .. (f.tl.qemu_log_left
    and "; libvirt's qemu log /var/log/libvirt/qemu/" .. f.tl.name .. ".log (removed by the bench)" or ""))
  local ph = {}
  for _, p in ipairs(f.tl.phases) do ph[#ph + 1] = p.name .. " " .. s2(p.duration) end
  print("    " .. (f.tool == "bomarun" and "steps" or "phases") .. ": " .. table.concat(ph, ", "))
end

local function median_of(fs, key)
  local xs = {}
  for _, f in ipairs(fs) do xs[#xs + 1] = f[key] end
  return common.median(xs)
end

-- Main ---------------------------------------------------------------------------------

if not host.exists(BIN) then common.fail(BIN .. " is missing: scripts/build.sh") end
common.run_ok("vm_cycle_scripted.sh --deps", {argv = {"bash", SCRIPT, "--deps"}, timeout = 1800})
wait_for_idle_host()
local probe = common.run_ok("virsh version", {argv = {"virsh", "-c", URI, "version"}, timeout = 30})
local img = image_dir()
print(string.format("vm_cycle: the VM integration cycle on a real TCG guest, %d round(s); image %s", ROUNDS, img))
print("  " .. (probe.stdout:match("Running hypervisor: ([^\n]+)") or "") .. "; "
  .. (trim(common.run_ok("virt-install --version", {argv = {"virt-install", "--version"}}).stdout))
  .. " (virt-install); " .. trim(common.run_ok("ansible-playbook --version",
       {argv = {"ansible-playbook", "--version"}}).stdout):match("^[^\n]+"))

local results = {bomarun = {}, scripted = {}}
for round = 1, ROUNDS do
  local order = round % 2 == 1 and {"bomarun", "scripted"} or {"scripted", "bomarun"}
  for _, tool in ipairs(order) do
    wait_for_idle_host()
    common.with_tmpdir(function(tmp)
      print(string.format("vm_cycle: round %d: %s cycle (load average %s) ...", round, tool,
        (read("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)") or "?"))
      local nb = watch_neighbours()
      local ok, tl = pcall(tool == "bomarun" and run_bomarun or run_scripted, img, tmp)
      local others = nb.stop(ok and tl.name or nil)
      if not ok then error(tl, 0) end
      local f = figures(tl)
      f.others, f.max_load = others, nb.max_load
      results[tool][#results[tool] + 1] = f
      print_run(f)
      print(string.format("    highest 1-minute load average during the cycle: %.2f", nb.max_load))
      if #others > 0 then
        print("    WARNING: other guests ran during this cycle (the CPUs were shared): " .. table.concat(others, " "))
      end
    end)
  end
end

local b, s = results.bomarun, results.scripted
local cols = {"wall", "boot", "reboot", "ansible", "overhead", "strict"}
print(string.format("vm_cycle: %s of %d run(s) each, seconds", ROUNDS > 1 and "median" or "one run", ROUNDS))
print(string.format("  %-30s %8s %8s %8s %8s %9s %9s", "tool", "wall", "boot", "reboot", "ansible", "overhead",
  "+firmware"))
local med = {}
for _, row in ipairs({{"bomarun (runbook)", b}, {"scripted (virt-install + sh)", s}}) do
  local m = {}
  for _, k in ipairs(cols) do m[k] = median_of(row[2], k) end
  med[#med + 1] = m
  print(string.format("  %-30s %8s %8s %8s %8s %9s %9s", row[1], s1(m.wall), s1(m.boot), s1(m.reboot),
    s1(m.ansible), s2(m.overhead), s2(m.strict)))
end
local mb, ms = med[1], med[2]
print(string.format("  %-30s %8s %8s %8s %8s %9s %9s", "scripted / bomarun", common.ratio(ms.wall, mb.wall),
  common.ratio(ms.boot, mb.boot), common.ratio(ms.reboot, mb.reboot), common.ratio(ms.ansible, mb.ansible),
  common.ratio(ms.overhead, mb.overhead), common.ratio(ms.strict, mb.strict)))
print(string.format("vm_cycle: bomarun overhead %s s (bar < 5 s: %s; %s s counting the firmware: %s), "
  .. "scripted %s s (%s s) (bomarun below it: %s); wall %s s vs %s s",
  s2(mb.overhead), mb.overhead < 5 and "met" or "NOT met", s2(mb.strict), mb.strict < 5 and "met" or "NOT met",
  s2(ms.overhead), s2(ms.strict), (mb.overhead < ms.overhead and mb.strict < ms.strict) and "met" or "NOT met",
  s1(mb.wall), s1(ms.wall)))
