-- libvirt per call, side by side: N define/start/destroy/undefine cycles
-- through bomarun.virt against `virsh`, one process per call (the way a
-- shell harness drives libvirt today).
--
--   build/bomarun bench/virt.lua [N] [VIRSH_N]
--     N        cycles through bomarun (default 200)
--     VIRSH_N  cycles through virsh (default 200; 4 processes each)
--
-- test:///default keeps its state only inside one process, so virsh (a
-- process per call) cannot use it in process.  Both tools therefore also
-- run against libvirtd's test driver (test+unix:///default, through the
-- daemon), whose state lives while any connection to it is open: this
-- benchmark holds one.  Rows: bomarun in process (test:///default),
-- bomarun through the daemon, virsh through the daemon.  Needs libvirtd
-- (scripts/virt-stack start) for the daemon rows; without it, only the
-- in-process row is printed.
local bench_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local common = dofile(bench_dir .. "/common.lua")
common.name = "virt"

local host = require "bomarun._host"
local task = require "bomarun.task"
local virt = require "bomarun.virt"

local N = common.count_arg(arg[1], 200, "N")
local VIRSH_N = common.count_arg(arg[2], 200, "VIRSH_N")
local DAEMON = "test+unix:///default"

local function domain(name)
  return {name = name, type = "kvm", memory = 64, vcpus = 1, disks = {}, agent = false}
end

-- Seconds per call over n cycles of 4 calls.
local function bomarun_cycles(c, n)
  local one = function(i)
    local d = assert(c:define(domain("bench-" .. i)))
    assert(d:start()); assert(d:destroy()); assert(d:undefine())
  end
  one(0)   -- warm-up
  local t0 = task.now()
  for i = 1, n do one(i) end
  return (task.now() - t0) / (4 * n)
end

local function virsh_cycles(dir, n)
  local xml = dir .. "/bench-virsh.xml"
  assert(host.write_file(xml, virt.xml.domain(domain("bench-virsh")):gsub("type='kvm'", "type='test'", 1)))
  local calls = {{"define", xml}, {"start", "bench-virsh"}, {"destroy", "bench-virsh"}, {"undefine", "bench-virsh"}}
  local function one()
    for _, cmd in ipairs(calls) do
      common.run_ok("virsh " .. cmd[1], {argv = {"virsh", "-q", "-c", DAEMON, cmd[1], cmd[2]}})
    end
  end
  one()
  local t0 = task.now()
  for _ = 1, n do one() end
  return (task.now() - t0) / (4 * n)
end

local dir = os.tmpname()
os.remove(dir)
assert(host.mkdir(dir))

print(string.format("virt: %d define/start/destroy/undefine cycles (%d calls) per row", N, 4 * N))
local inproc = assert(virt.connect())
local per_inproc = bomarun_cycles(inproc, N)
inproc:close()
print(string.format("  %-44s %8s ms/call", "bomarun, test:///default (in process)", common.ms(per_inproc)))

local held = virt.connect{uri = DAEMON}
if not held then
  print("  (libvirtd not running: scripts/virt-stack start for the daemon rows)")
else
  local per_daemon = bomarun_cycles(held, N)
  print(string.format("  %-44s %8s ms/call", "bomarun, " .. DAEMON, common.ms(per_daemon)))
  local per_virsh = virsh_cycles(dir, VIRSH_N)
  print(string.format("  %-44s %8s ms/call", "virsh, a process per call, " .. DAEMON, common.ms(per_virsh)))
  print(string.format("  virsh per call / bomarun in process: %s; / bomarun through the daemon: %s",
    common.ratio(per_virsh, per_inproc), common.ratio(per_virsh, per_daemon)))
  held:close()
end
os.execute("rm -rf '" .. dir .. "'")
