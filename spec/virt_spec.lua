-- bomarun.virt against libvirt's in-process test driver (test:///default:
-- real libvirt, no daemon), plus the image cache against a real HTTP server
-- on loopback and the overlay/seed tools.  The real daemon and a real guest
-- are in spec/vm_cycle_spec.lua.
local virt = require "bomarun.virt"
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local host = require "bomarun._host"
local util = require "support.util"

local BIN = os.getenv("BOMARUN_BIN") or "build/bomarun"

local function tiny(name, extra)
  local t = {name = name, memory = 128, vcpus = 1, disks = {{path = "/nonexistent/" .. name .. ".qcow2"}},
             nics = {{type = "network", network = "default"}}}
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

describe("virt (test:///default)", function()
  local c
  before_each(function() c = assert(virt.connect()) end)
  after_each(function() if c then c:close() end end)

  it("connects to test:///default when no uri is given, and names a bad uri", function()
    assert.equal("test:///default", c.uri)
    local none, err, code = virt.connect{uri = "nosuchdriver:///x"}
    assert.is_nil(none)
    assert.matches("virt: connect to nosuchdriver:///x: ", err, 1, true)
    assert.equal("VIR_ERR_NO_CONNECT", code)
  end)

  it("loads libvirt only when bomarun.virt is first required", function()
    local probe = [[local f = io.open("/proc/self/maps"); local m = f:read("a"); f:close()
      io.write(m:find("libvirt.so", 1, true) and "loaded" or "not loaded", " ")]]
    local r = assert(proc.run{argv = {BIN, "-e", probe .. "; require 'bomarun.virt'; " .. probe}})
    assert.equal(0, r.code, r.stderr)
    assert.equal("not loaded loaded ", r.stdout)
  end)

  it("defines from a table with ownership metadata, and from XML", function()
    local d = assert(c:define(tiny("bomarun-a"), {owner = virt.owner{run = "run-1", runbook = "x.lua"}}))
    assert.equal("bomarun-a", d.name)
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", d.uuid)
    local owner = assert(d:owner())
    assert.equal("run-1", owner.run)
    assert.equal("x.lua", owner.runbook)
    assert.equal(tostring(host.getpid()), owner.pid)
    local text = assert(d:xml())
    assert.matches("<memory unit='KiB'>131072</memory>", text, 1, true)
    -- XML text, with the owner set through the metadata API afterwards.
    local d2 = assert(c:define(text:gsub("bomarun%-a", "bomarun-b"):gsub("<uuid>[^<]*</uuid>", ""),
      {owner = {run = "run-2"}}))
    assert.equal("run-2", assert(d2:owner()).run)
    assert.is_nil(assert(c:domain("test")):owner())
  end)

  it("returns libvirt's error name as the code, with what failed against what", function()
    local d, err, code = c:domain("no-such-vm")
    assert.is_nil(d)
    assert.equal("VIR_ERR_NO_DOMAIN", code)
    assert.equal("virt: look up domain 'no-such-vm' on test:///default: Domain not found", err)
    d, err, code = c:define("<domain type='test'><name>broken</name>")
    assert.is_nil(d)
    assert.equal("VIR_ERR_XML_DETAIL", code)
    assert.matches("^virt: define domain on test:///default: ", err)
    -- an operation on a domain that has since been undefined
    local gone = assert(c:define(tiny("bomarun-gone")))
    assert(gone:undefine())
    local ok, err2, code2 = gone:start()
    assert.is_nil(ok)
    assert.equal("VIR_ERR_NO_DOMAIN", code2)
    assert.matches("start domain 'bomarun-gone' on test:///default", err2, 1, true)
    -- an operation the state forbids
    local d3 = assert(c:define(tiny("bomarun-idle")))
    local ok3, err3, code3 = d3:destroy()
    assert.is_nil(ok3)
    assert.equal("VIR_ERR_OPERATION_INVALID", code3)
    assert.matches("domain is not running", err3, 1, true)
    -- a table without a name is a programmer error
    assert.has_error(function() c:define({memory = 1}) end, "virt: a domain table needs a name")
  end)

  it("starts, reads state and info, suspends, resumes, shuts down, reboots, destroys", function()
    local d = assert(c:define(tiny("bomarun-life")))
    assert.equal("shutoff", (d:state()))
    assert(d:start())
    assert.equal("running", (d:state()))
    local info = assert(d:info())
    assert.equal("running", info.state)
    assert.equal(1, info.vcpus)
    assert.equal(131072, info.max_memory_kib)
    assert(d:reset())
    assert.equal("running", (d:state()))
    assert(d:suspend())
    assert.equal("paused", (d:state()))
    assert(d:resume())
    assert(d:reboot())
    assert.equal("running", (d:state()))
    -- the test driver knows no shutdown modes: the refusal is libvirt's
    assert.equal("VIR_ERR_INVALID_ARG", select(3, d:shutdown{mode = "acpi"}))
    assert(d:shutdown())
    assert.equal("shutoff", (d:state()))
    assert(d:start())
    assert(d:destroy())
    assert.equal("shutoff", (d:state()))
    assert.has_error(function() d:shutdown{mode = "pull-the-plug"} end)
  end)

  it("waits for a state on lifecycle events, not by polling, and times out naming both states", function()
    local d = assert(c:define(tiny("bomarun-wait")))
    assert(d:start())
    local seq = c:event_seq()
    local t = task.spawn(function() task.sleep(0.3); assert(d:destroy()) end)
    local t0 = task.now()
    assert(d:wait_for_state("shutoff", {timeout = 8}))
    -- The fallback re-read comes only every 10 s: being back well before
    -- that means the destroy's event woke the wait.
    assert.is_true(task.now() - t0 < 5, "woken by the event")
    assert(t:wait())
    -- The start's own "started" event may arrive after start() returned
    -- (libvirt delivers events from its event thread): the last one is
    -- the destroy's.
    local kinds = {}
    for _, e in ipairs(c:events_since(seq)) do
      if e.name == "bomarun-wait" then kinds[#kinds + 1] = e.event end
    end
    assert.equal("stopped", kinds[#kinds])
    local ok, err, code = d:wait_for_state("running", {timeout = 0.3})
    assert.is_nil(ok)
    assert.equal("TIMEOUT", code)
    assert.equal("virt: domain 'bomarun-wait' on test:///default did not reach state 'running' within 0.3 s "
      .. "(it is 'shutoff')", err)
    -- "undefined" is a state one can wait for
    assert(d:undefine())
    assert(d:wait_for_state("undefined", {timeout = 1}))
  end)

  it("keeps the loop running while calls are in flight", function()
    local ticks, done = 0, false
    local ticker = task.spawn(function() while not done do ticks = ticks + 1; task.sleep(0.001) end end)
    for i = 1, 50 do
      local d = assert(c:define(tiny("bomarun-spin" .. i)))
      assert(d:start()); assert(d:destroy()); assert(d:undefine())
    end
    done = true
    ticker:wait()
    assert.is_true(ticks > 5, "the ticker ran " .. ticks .. " times during 200 calls")
  end)

  it("snapshots with creation times, lists oldest first, reverts and deletes", function()
    local d = assert(c:define(tiny("bomarun-snap")))
    assert(d:start())
    local s1 = assert(d:snapshot{name = "Snapshot 1", description = "baseline"})
    assert.equal("Snapshot 1", s1.name)
    assert.is_true(math.abs(s1.created - os.time()) < 60)
    assert.equal("running", s1.state)
    assert(d:destroy())
    local s2 = assert(d:snapshot{name = "after"})
    assert.equal("shutoff", s2.state)
    local list = assert(d:snapshots())
    assert.equal(2, #list)
    assert.equal("Snapshot 1", list[1].name)
    assert.equal("baseline", list[1].description)
    assert.is_true(list[2].current)
    assert(d:revert("Snapshot 1"))
    assert.equal("running", (d:state()))
    -- disk-only snapshots are the real daemon's (spec/vm_cycle_spec.lua):
    -- the test driver refuses the flag, and says so
    assert.equal("VIR_ERR_INVALID_ARG", select(3, d:snapshot{name = "disk", disk_only = true}))
    assert(d:delete_snapshot("after"))
    local ok, err, code = d:delete_snapshot("after")
    assert.is_nil(ok)
    assert.equal("VIR_ERR_NO_DOMAIN_SNAPSHOT", code)
    assert.matches("delete snapshot 'after' of domain 'bomarun-snap'", err, 1, true)
    -- undefine takes the snapshot metadata with it
    assert(d:destroy())
    assert(d:undefine())
    assert.equal("VIR_ERR_NO_DOMAIN", select(3, c:domain("bomarun-snap")))
  end)

  it("reads addresses, naming the source that cannot answer", function()
    local d = assert(c:define(tiny("bomarun-addr")))
    local none, err, code = d:addresses{source = "lease"}
    assert.is_nil(none)
    assert.equal("VIR_ERR_OPERATION_INVALID", code)
    assert.matches("read lease addresses of domain 'bomarun-addr'", err, 1, true)
    assert(d:start())
    local addrs = assert(d:addresses())
    assert.is_true(#addrs >= 1)
    assert.matches("^%d+%.%d+%.%d+%.%d+$", addrs[1].ip)
    assert.equal("lease", addrs[1].source)
  end)

  it("reads loopback forwards from a domain's qemu command line", function()
    local text = virt.xml.domain(tiny("bomarun-fwd", {nics = {{type = "user", forward = {port = 2299}}}}))
    assert.matches("hostfwd=tcp:127.0.0.1:2299-:22", text, 1, true)
    assert.matches("restrict=on", text, 1, true)
    assert.same({{host = "127.0.0.1", port = 2299, guest = 22}}, virt.xml.forwards(text))
    assert.has_error(function()
      virt.xml.domain(tiny("x", {nics = {{type = "user", forward = {host = "0.0.0.0", port = 2299}}}}))
    end, "virt: a user-mode forward listens on loopback only (got host 0.0.0.0)")
  end)

  it("defines, starts, stops and undefines networks; leases name what the driver lacks", function()
    local n = assert(c:network_define{name = "bomarun-net1", ip = "192.0.2.1",
                                      dhcp = {start = "192.0.2.10", ["end"] = "192.0.2.20"},
                                      owner = virt.owner{run = "run-n"}})
    assert(n:start())
    local found
    for _, x in ipairs(assert(c:networks())) do if x.name == "bomarun-net1" then found = x end end
    assert.is_true(found.active)
    assert.equal("run-n", found.owner.run)
    assert.matches("192.0.2.10", assert(n:xml()), 1, true)
    local leases, err, code = n:leases()
    assert.is_nil(leases)
    assert.equal("VIR_ERR_NO_SUPPORT", code)
    assert.matches("read the DHCP leases of network 'bomarun-net1'", err, 1, true)
    assert(n:destroy())
    assert(n:undefine())
    assert.equal("VIR_ERR_NO_NETWORK", select(3, n:start()))
  end)

  it("defines pools and creates, lists and deletes volumes", function()
    local dir = util.tmpdir(finally)
    local p = assert(c:pool_define{name = "bomarun-pool", path = dir})
    assert(p:start())
    local path = assert(p:create_volume{name = "v1.qcow2", capacity = 1048576})
    assert.equal(dir .. "/v1.qcow2", path)
    local vols = assert(p:volumes())
    assert.equal(1, #vols)
    assert.equal("v1.qcow2", vols[1].name)
    assert.equal(1048576, vols[1].capacity)
    assert(p:delete_volume("v1.qcow2"))
    assert.equal("VIR_ERR_NO_STORAGE_VOL", select(3, p:delete_volume("v1.qcow2")))
    assert(p:destroy())
    assert(p:undefine())
  end)

  it("prunes only what bomarun's metadata says it created", function()
    local dir = util.tmpdir(finally)
    local disk = util.write(dir .. "/bomarun-own1.qcow2", "x")
    local outside = util.write(os.tmpname(), "keep")
    finally(function() os.remove(outside) end)
    local own1 = assert(c:define(tiny("bomarun-own1", {disks = {{path = disk}, {path = outside}}}),
      {owner = virt.owner{run = "r1"}}))
    assert(own1:start())
    assert(own1:snapshot{name = "s"})
    assert(c:define(tiny("bomarun-own2"), {owner = virt.owner{run = "r2"}}))
    assert(c:define(tiny("bomarun-foreign")))            -- the prefix, but no metadata
    assert(c:define(tiny("other-owned"), {owner = virt.owner{run = "r1"}}))   -- metadata, not the prefix
    local n = assert(c:network_define{name = "bomarun-netp", ip = "192.0.2.129", owner = virt.owner{run = "r1"}})
    assert(n:start())
    local dry = assert(c:prune{run = "r1", dry_run = true})
    assert.equal(2, #dry)
    assert(c:domain("bomarun-own1"))
    local removed = assert(c:prune{run = "r1", files = dir})
    local names = {}
    for _, r in ipairs(removed) do names[#names + 1] = r.kind .. ":" .. r.name end
    assert.same({"domain:bomarun-own1", "file:" .. disk, "network:bomarun-netp"}, names)
    assert.equal("VIR_ERR_NO_DOMAIN", select(3, c:domain("bomarun-own1")))
    assert.falsy((host.exists(disk)))
    assert.truthy(host.exists(outside), "a file outside `files` is never removed")
    assert(c:domain("bomarun-own2"))      -- another run's
    assert(c:domain("bomarun-foreign"))   -- not bomarun's
    assert(c:domain("other-owned"))
    assert(c:domain("test"))
    local all = assert(c:prune{})
    assert.equal(1, #all)
    assert.equal("bomarun-own2", all[1].name)
  end)

  it("checks free memory before a boot", function()
    assert(c:check_free_memory(1))
    local ok, err, code = c:check_free_memory(10 * 1024 * 1024)
    assert.is_nil(ok)
    assert.equal("NO_MEMORY", code)
    assert.matches("^virt: test:///default %(.-%) has %d+ MiB of free memory; 10485760 MiB are needed to boot$", err)
  end)

  it("refuses a closed connection as a programmer error", function()
    local d = assert(c:define(tiny("bomarun-closed")))
    c:close()
    assert.has_error(function() d:start() end,
      "virt: start domain 'bomarun-closed': the connection to test:///default is closed")
    c = nil
  end)
end)

describe("virt.lock", function()
  it("lets one holder in, names the holder to the next, and frees on release or death", function()
    local dir = util.tmpdir(finally)
    local l = assert(virt.lock{dir = dir, holder = "cycle A (pid 1)"})
    local none, err, code = virt.lock{dir = dir}
    assert.is_nil(none)
    assert.equal("LOCKED", code)
    assert.equal("virt: the host lock " .. dir .. "/bomarun-virt-host.lock is held by cycle A (pid 1); "
      .. "one cycle at a time on a host", err)
    l:release()
    local l2 = assert(virt.lock{dir = dir})
    l2:release()
    -- a holder that dies (SIGKILL) leaves no lock behind
    local held = false
    local holder = assert(proc.spawn{argv = {BIN, "-e", string.format(
      "local v = require 'bomarun.virt'; local held = assert(v.lock{dir = %q, holder = 'the child'}); "
      .. "print('held'); io.stdout:flush(); require('bomarun.task').sleep(60); held:release()", dir)},
      quiet = true, keep = true, on_line = function(line) held = held or line == "held" end})
    util.wait_for(function() return held end, 10, "the child's lock")
    assert.matches("held by the child", select(2, virt.lock{dir = dir}), 1, true)
    holder:kill("KILL")
    holder:wait()
    assert(virt.lock{dir = dir}):release()
  end)
end)

describe("virt images", function()
  local server, base, dir
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(host.mkdir(dir .. "/srv"))
    local port
    server = assert(proc.spawn{argv = {"/usr/bin/python3", "-u", "-m", "http.server", "--bind", "127.0.0.1",
                                       "--directory", dir .. "/srv", "0"},
                               quiet = true, keep = true,
                               on_line = function(l) port = port or tonumber(l:match("port (%d+)")) end})
    util.wait_for(function() return port end, 10, "the loopback HTTP server")
    base = "http://127.0.0.1:" .. port
    util.write(dir .. "/srv/golden.qcow2", string.rep("golden image bytes\n", 50000))
    assert(proc.run{shell = "cd " .. dir .. "/srv && sha512sum golden.qcow2 > SHA512SUMS"}.code == 0)
    util.write(dir .. "/srv/bad.qcow2", "tampered")
    local good = util.read(dir .. "/srv/SHA512SUMS"):match("^(%x+)")
    util.write(dir .. "/srv/SHA512SUMS.bad", good .. "  bad.qcow2\n")
  end)
  teardown(function()
    server:kill("KILL"); server:wait()
    proc.run{argv = {"rm", "-rf", dir}}
  end)

  it("downloads, verifies while streaming, caches and reuses", function()
    local cache = dir .. "/cache1"
    local path, info = virt.image{url = base .. "/golden.qcow2", sha512sums = base .. "/SHA512SUMS", cache = cache}
    assert.equal(cache .. "/golden.qcow2", path)
    assert.is_false(info.cached)
    assert.equal(util.read(dir .. "/srv/golden.qcow2"), util.read(path))
    local again, info2 = virt.image{url = base .. "/golden.qcow2", sha512sums = base .. "/SHA512SUMS", cache = cache}
    assert.equal(path, again)
    assert.is_true(info2.cached)
    -- a damaged cached copy is fetched again, not trusted
    util.write(path, "damaged")
    local third, info3 = virt.image{url = base .. "/golden.qcow2", sha512sums = dir .. "/srv/SHA512SUMS", cache = cache}
    assert.equal(path, third)
    assert.is_false(info3.cached)
    assert.equal(util.read(dir .. "/srv/golden.qcow2"), util.read(path))
  end)

  it("refuses a corrupted download and leaves nothing in the cache", function()
    local cache = dir .. "/cache2"
    local path, err, code = virt.image{url = base .. "/bad.qcow2", sha512sums = base .. "/SHA512SUMS.bad",
                                       cache = cache}
    assert.is_nil(path)
    assert.equal("CHECKSUM", code)
    assert.matches("bad.qcow2: sha512 mismatch", err, 1, true)
    local r = proc.run{shell = "ls -A " .. cache}
    assert.equal("", r.stdout)
    local p2, err2, code2 = virt.image{url = base .. "/golden.qcow2", sha512sums = base .. "/SHA512SUMS.bad",
                                       cache = cache}
    assert.is_nil(p2)
    assert.equal("CHECKSUM", code2)
    assert.matches("has no sha512 line for golden.qcow2", err2, 1, true)
    local p3, err3, code3 = virt.image{url = base .. "/missing.qcow2", sha512sums = base .. "/nope", cache = cache}
    assert.is_nil(p3)
    assert.equal("HTTP", code3)
    assert.matches("/nope: HTTP 404", err3, 1, true)
  end)

  it("makes qcow2 overlays on a backing image", function()
    local golden = dir .. "/base.qcow2"
    assert.equal(0, proc.run{argv = {"qemu-img", "create", "-q", "-f", "qcow2", golden, "64M"}}.code)
    local ov = assert(virt.overlay{base = golden, path = dir .. "/vm.qcow2"})
    local r = proc.run{argv = {"qemu-img", "info", "--output=json", ov}}
    assert.matches('"backing%-filename": "' .. golden:gsub("%p", "%%%0") .. '"', r.stdout)
    assert.matches('"virtual%-size": 67108864', r.stdout)
    local again, err, code = virt.overlay{base = golden, path = ov}
    assert.is_nil(again)
    assert.equal("EXISTS", code)
    assert.matches("already exists", err, 1, true)
    local none, err2, code2 = virt.overlay{base = dir .. "/absent.qcow2", path = dir .. "/x.qcow2"}
    assert.is_nil(none)
    assert.equal("LOCAL_FILE", code2)
    assert.matches("the backing image .*absent.qcow2 does not exist", err2)
  end)

  it("builds a NoCloud seed labelled cidata from tables", function()
    local iso = assert(virt.seed{path = dir .. "/seed.iso",
      user_data = {users = {{name = "ops", ssh_authorized_keys = {"ssh-ed25519 AAAA test"}}}, runcmd = {{"true"}}},
      meta_data = {["instance-id"] = "iid-1", ["local-hostname"] = "vm1"}})
    local r = proc.run{argv = {"xorriso", "-indev", iso, "-pvd_info"}}
    assert.matches("Volume Id%s*:%s*cidata", r.stdout .. r.stderr)
    local out = dir .. "/extract"
    assert.equal(0, proc.run{argv = {"xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", out}}.code)
    local ud = util.read(out .. "/user-data")
    assert.matches("^#cloud%-config\n", ud)
    assert.matches('"ssh-ed25519 AAAA test"', ud, 1, true)
    assert.matches('"local-hostname": "vm1"', util.read(out .. "/meta-data"), 1, true)
    assert.falsy((host.exists(dir .. "/seed.iso.d")))
  end)

  it("collects diagnostics, noting what it could not have", function()
    local c = assert(virt.connect())
    local d = assert(c:define(tiny("bomarun-diag")))
    local log = util.write(dir .. "/console.log", "boot line 1\nlogin:\n")
    local files = virt.diagnostics{domain = d, dir = dir .. "/diag", serial_log = log,
      exec = function(cmd) return {status = 0, stdout = "ran: " .. cmd, stderr = ""} end}
    assert.is_true(#files >= 7)
    assert.matches("<name>bomarun%-diag</name>", util.read(dir .. "/diag/domain.xml"))
    assert.equal("boot line 1\nlogin:\n", util.read(dir .. "/diag/console.log"))
    assert.matches("^ran: .*journalctl", util.read(dir .. "/diag/journal.txt"))
    assert.matches("nft list ruleset", util.read(dir .. "/diag/nft-ruleset.txt"), 1, true)
    virt.diagnostics{domain = d, dir = dir .. "/diag2", serial_log = dir .. "/absent.log"}
    local missing = util.read(dir .. "/diag2/MISSING.txt")
    assert.matches("console.log: cannot read", missing, 1, true)
    assert.matches("ssh did not reach the guest", missing, 1, true)
    c:close()
  end)
end)
