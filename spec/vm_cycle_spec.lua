-- The real libvirt tier: libvirtd and virtlogd started by the project's
-- scripts (scripts/virt-stack start; no systemd), the Debian guest image
-- built offline by debootstrap (scripts/virt-stack image, cached), a TCG
-- guest reached through a loopback forward.  scripts/test starts both
-- before ctest; run alone:  scripts/virt-stack start && scripts/virt-stack image
--
-- The whole cycle (runbooks/vm-integration.lua --profile local-vm), the image
-- download path over loopback HTTP (and a corrupted copy refused), SIGINT
-- mid-boot (everything gone; kept with --keep), and the host lock.
local virt = require "bomarun.virt"
local json = require "bomarun.json"
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local host = require "bomarun._host"
local util = require "support.util"

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local BIN = os.getenv("BOMARUN_BIN") or (SRC .. "/build/bomarun")
local URI = "qemu:///system"
local IMAGE_DIR = (os.getenv("HOME") or "/root") .. "/.cache/bomarun/guest-image/current"

local function events(dir)
  local out = {}
  for line in (util.read(dir .. "/events.jsonl") or ""):gmatch("[^\n]+") do
    out[#out + 1] = json.decode(line)
  end
  return out
end

local function run_dir_of(parent)
  local dirs = util.run_dirs(parent)
  assert.equal(1, #dirs, "one run directory under " .. parent)
  return dirs[1]
end

-- The value a run captured under `key` (from its journal).
local function captured(dir, key)
  local v
  for _, e in ipairs(events(dir)) do
    if e.type == "capture" and e.key == key then v = e.value end
  end
  return v
end

-- Nothing of a run left in libvirt, on disk or as a qemu process.
local function assert_nothing_left(c, dir, workdir)
  local run_id = assert(json.decode(util.read(dir .. "/report.json"))).run.id
  local name = assert(captured(dir, "vm_name"), "the run captured its VM's name")
  for _, d in ipairs(assert(c:domains())) do
    assert.is_false(d.owner ~= nil and d.owner.run == run_id, "domain " .. d.name .. " of run " .. run_id .. " left")
    assert.are_not.equal(name, d.name)
  end
  local ls = proc.run{shell = "ls -A " .. workdir .. " 2>/dev/null | grep -c . || true"}
  assert.equal("0", (ls.stdout:gsub("%s", "")), "files left in " .. workdir)
  local ps = proc.run{argv = {"pgrep", "-f", "qemu-system.*guest=" .. name .. ","}}
  assert.equal(1, ps.code, "a qemu process is left: " .. ps.stdout)
end

describe("the VM integration cycle (real libvirtd, real guest)", function()
  local c, workdir
  setup(function()
    c = assert(virt.connect{uri = URI})
    assert(host.exists(IMAGE_DIR .. "/SHA512SUMS"), "no guest image: scripts/virt-stack image")
  end)
  teardown(function() if c then c:close() end end)
  before_each(function()
    workdir = os.tmpname()
    os.remove(workdir)
    assert(host.mkdir(workdir))
  end)
  after_each(function() proc.run{argv = {"rm", "-rf", workdir}} end)

  it("downloads the image over loopback HTTP, verified, and refuses a corrupted copy", function()
    local srv = workdir .. "/srv"
    assert(host.mkdir(srv .. "/bad"))
    -- the real image and its SHA512SUMS, served as they are; a truncated copy
    -- beside the same SHA512SUMS
    proc.run{argv = {"ln", "-s", IMAGE_DIR .. "/debian-12.qcow2", srv .. "/debian-12.qcow2"}}
    proc.run{argv = {"cp", IMAGE_DIR .. "/SHA512SUMS", srv .. "/SHA512SUMS"}}
    proc.run{argv = {"cp", IMAGE_DIR .. "/SHA512SUMS", srv .. "/bad/SHA512SUMS"}}
    proc.run{shell = "head -c 4194304 " .. IMAGE_DIR .. "/debian-12.qcow2 > " .. srv .. "/bad/debian-12.qcow2"}
    local port
    local server = assert(proc.spawn{argv = {"/usr/bin/python3", "-u", "-m", "http.server", "--bind", "127.0.0.1",
                                             "--directory", srv, "0"}, quiet = true, keep = true,
                                     on_line = function(l) port = port or tonumber(l:match("port (%d+)")) end})
    finally(function() server:kill("KILL") server:wait() end)
    util.wait_for(function() return port end, 10, "the loopback HTTP server")
    local base = "http://127.0.0.1:" .. port
    local path, info = virt.image{url = base .. "/debian-12.qcow2", sha512sums = base .. "/SHA512SUMS",
                                  cache = workdir .. "/cache"}
    assert.equal(workdir .. "/cache/debian-12.qcow2", path, tostring(info))
    assert.is_false(info.cached)
    local sums = util.read(IMAGE_DIR .. "/SHA512SUMS")
    assert.equal(sums:match("(%x+)%s+%*?debian%-12%.qcow2"), info.sha512)
    local bad, err, code = virt.image{url = base .. "/bad/debian-12.qcow2", sha512sums = base .. "/bad/SHA512SUMS",
                                      cache = workdir .. "/cache-bad"}
    assert.is_nil(bad)
    assert.equal("CHECKSUM", code)
    assert.matches("sha512 mismatch", err, 1, true)
    assert.equal("", proc.run{shell = "ls -A " .. workdir .. "/cache-bad"}.stdout)
  end)

  it("runs the whole cycle: boot, ssh, cloud-init, playbooks, real reboot, verify, snapshot, teardown", function()
    local runs = workdir .. "/runs"
    local r = util.bomarun({SRC .. "/runbooks/vm-integration.lua", "--profile", "local-vm", "--run-dir", runs,
                            "--set", "workdir=" .. workdir .. "/vms"}, {cwd = SRC, timeout = 1500})
    local dir = run_dir_of(runs)
    assert.equal(0, r.code, r.stdout .. r.stderr .. "\n" .. (util.read(dir .. "/summary.txt") or ""))
    local ev = events(dir)
    local boot_ids, snapshot
    for _, e in ipairs(ev) do
      if e.type == "capture" and e.key == "boot_id" then boot_ids = {e.value} end
      if e.type == "capture" and e.key == "boot_id_after_reboot" then boot_ids[2] = e.value end
      if e.type == "virt" and e.op == "snapshot" then snapshot = e.snapshot end
    end
    assert.equal(2, #boot_ids)
    assert.are_not.equal(boot_ids[1], boot_ids[2])
    assert.equal("Snapshot 1", snapshot)
    assert.matches("IT.5", util.read(dir .. "/summary.txt"), 1, true)
    assert_nothing_left(c, dir, workdir .. "/vms")
    assert.truthy(host.exists(dir .. "/qemu-" .. captured(dir, "vm_name") .. ".log"), "qemu's log kept as evidence")
  end)

  -- Start the cycle, wait until the guest is booting, interrupt it.
  local function interrupted(extra)
    local runs = workdir .. "/runs"
    local argv = {BIN, SRC .. "/runbooks/vm-integration.lua", "--profile", "local-vm", "--run-dir", runs,
                  "--set", "workdir=" .. workdir .. "/vms"}
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local p = assert(proc.spawn{argv = argv, cwd = SRC, quiet = true, keep = true})
    -- the guest is booting once it.4 (wait for ssh) has started
    util.wait_for(function()
      local dirs = util.run_dirs(runs)
      if #dirs ~= 1 then return false end
      for _, e in ipairs(events(dirs[1])) do
        if e.type == "step_start" and e.id == "it.4" then return true end
        if e.type == "run_end" then   -- it ended before booting: say why at once
          error("the cycle ended before it.4:\n" .. (util.read(dirs[1] .. "/summary.txt") or "(no summary)"))
        end
      end
    end, 300, "the cycle to reach it.4 (booting)")
    task.sleep(2)
    p:kill("INT")
    local r = p:wait()
    return r, run_dir_of(runs)
  end

  it("tears everything down when interrupted mid-boot", function()
    local r, dir = interrupted()
    assert.equal(130, r.code)
    local ends = {}
    for _, e in ipairs(events(dir)) do
      if e.type == "cleanup_end" then ends[#ends + 1] = e.status end
    end
    assert.same({"DONE", "DONE"}, ends)
    assert_nothing_left(c, dir, workdir .. "/vms")
  end)

  it("keeps the VM and its files with --keep", function()
    local r, dir = interrupted({"--keep"})
    assert.equal(130, r.code)
    local kept
    for _, d in ipairs(assert(c:domains({prefix = "bomarun-it-"}))) do
      if d.owner and d.owner.run == assert(json.decode(util.read(dir .. "/report.json"))).run.id then kept = d end
    end
    assert.is_not_nil(kept, "the domain is still defined")
    local removed = assert(c:prune{run = kept.owner.run, files = workdir .. "/vms"})
    assert.is_true(#removed >= 1)
    proc.run{argv = {"rm", "-rf", workdir .. "/vms"}}
    assert_nothing_left(c, dir, workdir .. "/vms")
  end)

  it("takes a disk-only snapshot of a shut-off domain on the real daemon", function()
    local disk = workdir .. "/disk.qcow2"
    assert.equal(0, proc.run{argv = {"qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"}}.code)
    local d = assert(c:define({name = "bomarun-it-snap-" .. host.random_hex(3), memory = 128, vcpus = 1,
                               disks = {{path = disk}}, run_as_root = true},
                              {owner = virt.owner{run = "spec-disk-only"}}))
    finally(function()
      d:undefine{snapshots = true}
      proc.run{argv = {"rm", "-rf", workdir}}
    end)
    local snap = assert(d:snapshot{name = "Snapshot 1", disk_only = true, description = "baseline"})
    assert.equal("Snapshot 1", snap.name)
    assert.is_true(math.abs(snap.created - os.time()) < 60)
    local list = assert(d:snapshots())
    assert.equal(1, #list)
    assert.is_true(list[1].disk_only)
    assert.equal("baseline", list[1].description)
    -- the disk now writes to an external overlay next to the original
    assert.matches(workdir:gsub("%p", "%%%0") .. "/disk%.[^']*'", assert(d:xml()))
    assert(c:prune{run = "spec-disk-only", files = workdir})
    assert.equal("VIR_ERR_NO_DOMAIN", select(3, c:domain(d.name)))
  end)

  it("refuses a second cycle on the host, naming the holder", function()
    local lockdir = workdir .. "/lock"
    assert(host.mkdir(lockdir))
    local l = assert(virt.lock{dir = lockdir, name = "cycle", holder = "run other-run (pid 4242)"})
    finally(function() l:release() end)
    local r = util.bomarun({SRC .. "/runbooks/vm-integration.lua", "--profile", "local-vm", "--run-dir",
                            workdir .. "/runs", "--set", "lock_dir=" .. lockdir}, {cwd = SRC, timeout = 120})
    assert.equal(1, r.code)
    assert.matches("is held by run other-run (pid 4242)", r.stdout .. r.stderr, 1, true)
  end)
end)
