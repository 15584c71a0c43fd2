-- The VM integration cycle: a throwaway VM that stands in for a real host,
-- the host's real playbooks applied to it, a REAL reboot, then a verify
-- pass, then teardown.  It catches what only a reboot shows (a firewall
-- that comes back without the rules a service needs).
--
--   bomarun runbooks/vm-integration.lua --profile local-vm [--keep]
--
-- up: golden image (sha512 against SHA512SUMS), qcow2 overlay, NoCloud seed,
-- define, boot, ssh, cloud-init done -> apply: the profile's playbooks and
-- tags through a transient single-host inventory with extra-vars files ->
-- reboot: through libvirt, the boot id must change -> verify: a verify
-- playbook and the profile's checks -> snapshot baseline -> teardown.
-- Every object the run creates is on the cleanup ledger, so a failure or
-- Ctrl-C tears it down (--keep leaves it for inspection); one cycle at a
-- time per host (a lock naming its holder); diagnostics (console log, domain
-- XML, the guest's journal, cloud-init logs, nft ruleset) land in the run
-- directory when a step that touches the guest fails.
local runbook = require "bomarun.runbook"
local ansible = require "bomarun.ansible"
local host = require "bomarun._host"
local proc = require "bomarun.proc"
local ssh = require "bomarun.ssh"
local task = require "bomarun.task"
local virt = require "bomarun.virt"

-- What the run holds between steps (handles are not values to capture).
local held = {cleanups = {}}

-- Register a cleanup and keep its handle for the teardown step.
local function ledger(s, what, fn)
  held.cleanups[#held.cleanups + 1] = s:cleanup(what, fn)
end

local function expand(p)
  if type(p) ~= "string" then return p end
  return (p:gsub("^~/", (os.getenv("HOME") or "/root") .. "/"):gsub("^file://~/", "file://"
    .. (os.getenv("HOME") or "/root") .. "/"))
end

local function target(s)
  return {host = "127.0.0.1", port = s.state.ssh_port, user = s.env.user, key = s.state.key,
          host_key_policy = "accept-new", known_hosts = s.state.known_hosts, timeout = 10}
end

local function guest_exec(s)
  return function(cmd)
    local sess = ssh.connect({host = "127.0.0.1", port = s.state.ssh_port, user = s.env.user, key = s.state.key,
                              host_key_policy = "accept-new", known_hosts = s.state.known_hosts, timeout = 5})
    if not sess then return nil end
    local r = sess:exec(cmd, {timeout = 30, quiet = true})
    sess:close()
    return r
  end
end

-- Run a step body that touches the guest; if it fails, keep the evidence
-- (a Ctrl-C is not caught here: the ledger tears down).
local function guarded(fn)
  return function(s)
    local ok, err = pcall(fn, s)
    if not ok then
      if held.domain then
        local files = virt.diagnostics{domain = held.domain, dir = s.run.dir .. "/diagnostics",
                                       serial_log = s.state.serial_log,
                                       exec = s.state.ssh_port and guest_exec(s) or nil}
        s:log("diagnostics: %d files in %s/diagnostics", #files, s.run.dir)
      end
      error(err, 0)
    end
  end
end

-- A free loopback port for the forward: nothing answers on it now.
local function free_port()
  for _ = 1, 20 do
    local port = 20000 + tonumber(host.random_hex(2), 16) % 20000
    local banner = ssh.wait_for_port{host = "127.0.0.1", port = port, timeout = 0.3, interval = 0.1}
    if not banner then return port end
  end
  error("no free loopback port found for the ssh forward")
end

local function boot_id(s)
  local sess, err = ssh.connect(target(s))
  if not sess then return nil, err end
  local r, xerr = sess:exec("cat /proc/sys/kernel/random/boot_id", {timeout = 10, quiet = true})
  sess:close()
  if not r or r.status ~= 0 then return nil, xerr or "cannot read the boot id" end
  return (r.stdout:gsub("%s+$", ""))
end

return runbook{
  id = "vm-integration",
  title = "VM integration cycle: image, boot, apply, real reboot, verify, teardown",
  description = "A throwaway VM mirroring a host: the real playbooks, a real reboot, outcome checks.",
  decisions = {"ADR-014", "ADR-025"},
  needs = {uri = "string", mirror = "string", image_url = "string", sha512sums = "string", cache = "string",
           workdir = "string", user = "string", applies = "table"},
  defaults = {prefix = "bomarun-it-", memory = 1024, vcpus = 2, type = "qemu", tcg_cache = 256,
              kernel_url = false, initrd_url = false, cmdline = "root=/dev/vda console=ttyS0",
              extra_vars_files = {}, verify = false, checks = {}, memory_margin = 256,
              boot_timeout = 600, reboot_timeout = 600, apply_timeout = 1200, snapshot = "Snapshot 1",
              lock_dir = false, run_as_root = false, machine = "pc", hint = false, groups = {}, disk_size = false},

  runbook.phase{"Up",
    runbook.step{"it.0", "Host guard: one cycle per host, libvirt reachable, memory to boot", function(s)
      local lock, err = virt.lock{dir = s.env.lock_dir or nil, name = "cycle",
                                  holder = string.format("run %s (pid %d, runbook vm-integration)", s.run.id,
                                                         host.getpid())}
      s:gate(lock, err)
      held.lock = lock
      local c, cerr = virt.connect{uri = s.env.uri}
      s:gate(c, cerr and (cerr .. (s.env.hint and ("\n  " .. s.env.hint) or "")))
      held.conn = c
      s:capture("libvirt_host", c.hostname)
      s:gate(c:check_free_memory(s.env.memory + s.env.memory_margin))
      local name = s.env.prefix .. s.env.mirror .. "-" .. host.random_hex(4)
      s:capture("vm_name", name)
      s:log("VM %s on %s", name, c.uri)
    end},

    runbook.step{"it.1", "Golden image, kernel and initrd: cached, sha512 against SHA512SUMS", function(s)
      local function fetch(url)
        local path, info = virt.image{url = expand(url), sha512sums = expand(s.env.sha512sums), cache = expand(s.env.cache)}
        s:gate(path, info and (tostring(info) .. (s.env.hint and type(info) == "string" and ("\n  " .. s.env.hint) or "")))
        s:log("%s %s", info.cached and "cached" or "downloaded", path)
        return path
      end
      s:capture("image", fetch(s.env.image_url))
      if s.env.kernel_url then s:capture("kernel", fetch(s.env.kernel_url)) end
      if s.env.initrd_url then s:capture("initrd", fetch(s.env.initrd_url)) end
    end},

    runbook.step{"it.2", "Overlay, ssh key and cloud-init seed", mutation = true, function(s)
      local dir = expand(s.env.workdir) .. "/" .. s.state.vm_name
      s:gate(host.mkdir(dir), "cannot create " .. dir)
      ledger(s, "remove " .. dir, function()
        local r = proc.run{argv = {"rm", "-rf", dir}, timeout = 60}
        return r.code == 0 or nil, r.stderr
      end)
      local overlay, err = virt.overlay{base = s.state.image, path = dir .. "/disk.qcow2", size = s.env.disk_size or nil}
      s:gate(overlay, err)
      local key = dir .. "/id_ed25519"
      local kr = proc.run{argv = {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", s.state.vm_name, "-f", key},
                          timeout = 30}
      s:gate(kr.code == 0, "ssh-keygen: " .. kr.stderr)
      local pub = assert(io.open(key .. ".pub")):read("l")
      local seed, serr = virt.seed{path = dir .. "/seed.iso",
        user_data = {users = {{name = s.env.user, sudo = "ALL=(ALL) NOPASSWD:ALL", shell = "/bin/bash",
                               lock_passwd = true, ssh_authorized_keys = {pub}}},
                     ssh_pwauth = false, runcmd = s.env.runcmd},
        meta_data = {["instance-id"] = "iid-" .. s.state.vm_name, ["local-hostname"] = s.state.vm_name}}
      s:gate(seed, serr)
      s:capture("dir", dir)
      s:capture("key", key)
      s:capture("known_hosts", dir .. "/known_hosts")
      s:capture("serial_log", dir .. "/console.log")
    end},

    runbook.step{"it.3", "Define and boot the VM (loopback ssh forward)", mutation = true, guarded(function(s)
      local port = free_port()
      s:capture("ssh_port", port)
      local c = held.conn
      local d, err = c:define({name = s.state.vm_name, memory = s.env.memory, vcpus = s.env.vcpus,
                               type = s.env.type, tcg_cache = s.env.tcg_cache, run_as_root = s.env.run_as_root,
                               machine = s.env.machine,
                               kernel = s.state.kernel, initrd = s.state.initrd,
                               cmdline = s.state.kernel and s.env.cmdline or nil,
                               disks = {{path = s.state.dir .. "/disk.qcow2"},
                                        {path = s.state.dir .. "/seed.iso", device = "cdrom"}},
                               nics = {{type = "user", forward = {host = "127.0.0.1", port = port, guest = 22}}},
                               serial_log = s.state.serial_log,
                               description = "vm-integration cycle for " .. s.env.mirror},
                              {owner = virt.owner{run = s.run.id, runbook = "vm-integration"}})
      s:gate(d, err)
      held.domain = d
      ledger(s, "destroy and undefine " .. d.name, function()
        local st = d:state()
        if st and st ~= "shutoff" then d:destroy() end
        local ok, uerr, code = d:undefine{snapshots = true}
        if not ok and code ~= "VIR_ERR_NO_DOMAIN" then return nil, uerr end
        -- libvirt keeps qemu's log after undefine: it joins the evidence.
        local qlog = "/var/log/libvirt/qemu/" .. d.name .. ".log"
        if host.exists(qlog) then
          proc.run{argv = {"mv", qlog, s.run.dir .. "/qemu-" .. d.name .. ".log"}, timeout = 30}
        end
        return true
      end)
      s:gate(d:start())
      s:gate(d:wait_for_state("running", {timeout = 60}))
      s:log("%s running, ssh forwarded from 127.0.0.1:%d", d.name, port)
    end)},

    runbook.step{"it.4", "ssh: an authenticated connection (slirp accepts before sshd is up)", guarded(function(s)
      local t = target(s)
      t.timeout = s.env.boot_timeout
      local sess, err = ssh.wait_for_connection(t)
      s:gate(sess, err)
      s:capture("boot_id", boot_id(s))
    end)},

    runbook.step{"it.5", "cloud-init finished", guarded(function(s)
      local r, err = ssh.wait_for_cloud_init(target(s), {timeout = s.env.boot_timeout})
      s:gate(r, err)
      s:check(r.status == "done", "cloud-init status: " .. tostring(r.status) .. " " .. tostring(r.detail or ""))
    end)},
  },

  runbook.phase{"Apply",
    runbook.step{"it.6", "Apply the profile's playbooks through a transient inventory", mutation = true,
      guarded(function(s)
        local name = s.state.vm_name
        local inventory = {all = {hosts = {[name] = {
          ansible_host = "127.0.0.1", ansible_port = s.state.ssh_port, ansible_user = s.env.user,
          ansible_ssh_private_key_file = s.state.key, ansible_become = true,
          ansible_ssh_common_args = "-o UserKnownHostsFile=" .. s.state.known_hosts .. " -o StrictHostKeyChecking=no",
          ansible_python_interpreter = "/usr/bin/python3"}}}}
        for _, g in ipairs(s.env.groups or {}) do
          inventory.all.children = inventory.all.children or {}
          inventory.all.children[g] = {hosts = {[name] = {}}}
        end
        for k, a in ipairs(s.env.applies) do
          local files = {}
          for _, f in ipairs(s.env.extra_vars_files) do files[#files + 1] = expand(f) end
          local res = ansible.playbook{playbook = expand(a.playbook), tags = a.tags, inventory = inventory,
                                       extra_vars_files = files, limit = name, timeout = s.env.apply_timeout,
                                       prefix = "[apply " .. k .. "]"}
          s:gate(res.ok, string.format("apply %d (%s): %s", k, a.playbook, res.msg))
          s:log("apply %d: %d ok, %d changed", k, res.totals.ok, res.totals.changed)
        end
      end)},
  },

  runbook.phase{"Reboot",
    runbook.step{"it.7", "A real reboot through libvirt: the boot id must change", mutation = true,
      guarded(function(s)
        local before = s.state.boot_id or boot_id(s)
        s:gate(before, "cannot read the boot id before the reboot")
        ssh.close_all()
        local t0 = task.now()
        s:gate(held.domain:reboot())
        local after = s:poll{function()
            local id = boot_id(s)
            if id and id ~= before then return id end
            return nil, id and "same boot" or "guest not back yet"
          end, timeout = s.env.reboot_timeout, interval = 2, what = "the guest back with a new boot id"}
        s:capture("boot_id_after_reboot", after)
        s:capture("reboot_seconds", task.now() - t0)
        s:gate(after ~= before, "boot id changed: " .. before .. " -> " .. after)
      end)},
  },

  runbook.phase{"Verify",
    runbook.step{"it.8", "Verify: the verify playbook and the profile's checks", guarded(function(s)
      if s.env.verify then
        local name = s.state.vm_name
        local files = {}
        for _, f in ipairs(s.env.extra_vars_files) do files[#files + 1] = expand(f) end
        local res = ansible.playbook{playbook = expand(s.env.verify), limit = name, timeout = s.env.apply_timeout,
          inventory = {all = {hosts = {[name] = {
            ansible_host = "127.0.0.1", ansible_port = s.state.ssh_port, ansible_user = s.env.user,
            ansible_ssh_private_key_file = s.state.key, ansible_become = true,
            ansible_ssh_common_args = "-o UserKnownHostsFile=" .. s.state.known_hosts .. " -o StrictHostKeyChecking=no",
            ansible_python_interpreter = "/usr/bin/python3"}}}},
          extra_vars_files = files,
          extra_vars = {bomarun_boot_id_before = s.state.boot_id, bomarun_boot_id_after = s.state.boot_id_after_reboot},
          prefix = "[verify]"}
        s:gate(res.ok, "verify playbook: " .. res.msg)
      end
      local sess = s:gate(ssh.connect(target(s)))
      for _, c in ipairs(s.env.checks) do
        local r, err = sess:exec(c.cmd, {timeout = c.timeout or 60})
        s:gate(r, err)
        local ok = r.status == (c.status or 0) and (not c.expect or r.stdout:find(c.expect, 1, true) ~= nil)
        s:check(ok, string.format("%s: `%s` exit %s%s", c.name or "check", c.cmd, tostring(r.status),
          c.expect and (", expecting '" .. c.expect .. "'") or ""))
      end
      sess:close()
    end)},

    runbook.step{"it.9", "Snapshot baseline on the hypervisor", mutation = true, guarded(function(s)
      local snap, err = held.domain:snapshot{name = s.env.snapshot, description = "baseline after verify, run " .. s.run.id}
      s:gate(snap, err)
      local list = s:gate(held.domain:snapshots())
      s:capture("snapshots", #list)
      s:capture("snapshot_created", os.date("!%Y-%m-%dT%H:%M:%SZ", snap.created))
      s:log("%s captured at %s", snap.name, os.date("!%Y-%m-%dT%H:%M:%SZ", snap.created))
    end)},
  },

  runbook.phase{"Teardown",
    runbook.step{"it.10", "Teardown: nothing left behind (unless --keep)", mutation = true, function(s)
      local c, name = held.conn, s.state.vm_name
      if s.run.keep then
        s:log("--keep: leaving %s (ssh -i %s -p %d %s@127.0.0.1) and %s for inspection; "
          .. "`bomarun -e 'require(\"bomarun.virt\").connect{uri=%q}:prune{}'` removes it",
          name, s.state.key, s.state.ssh_port, s.env.user, s.state.dir, s.env.uri)
        s:capture("kept", true)
        return
      end
      ssh.close_all()
      for k = #held.cleanups, 1, -1 do
        s:gate(held.cleanups[k]:run())
      end
      -- Anything of this run's that the ledger did not name (there should be none).
      local stray = s:gate(c:prune{run = s.run.id, files = s.state.dir})
      s:check(#stray == 0, #stray .. " stray objects of this run pruned")
      local _, _, code = c:domain(name)
      s:gate(code == "VIR_ERR_NO_DOMAIN", "domain " .. name .. " is gone")
      s:gate(not host.exists(s.state.dir), s.state.dir .. " is gone")
      local ps = proc.run{argv = {"pgrep", "-f", "guest=" .. name}, timeout = 10}
      s:gate(ps.code ~= 0, "no qemu process for " .. name .. " (" .. ps.stdout:gsub("\n", " ") .. ")")
      s:capture("torn_down", true)
      held.domain = nil
      if held.lock then held.lock:release() held.lock = nil end
    end},
  },

  runbook.acceptance{"IT", "The host survives its playbooks and a real reboot",
    runbook.item{"IT.1", "Playbooks applied to a VM mirroring the host", function(i)
      i:check(i.state.vm_name ~= nil, "a VM was built and the playbooks applied")
    end},
    runbook.item{"IT.2", "A real reboot (the boot id changed)", function(i)
      i:check(i.state.boot_id_after_reboot and i.state.boot_id_after_reboot ~= i.state.boot_id, "boot id changed")
    end},
    runbook.item{"IT.3", "Outcome checks pass after the reboot", function(i)
      i:check(true, "the verify step gated every check")
    end},
    runbook.item{"IT.4", "Snapshot baseline captured", function(i)
      i:check((i.state.snapshots or 0) >= 1, "at least one snapshot on the hypervisor")
    end},
    runbook.item{"IT.5", "Nothing left behind", function(i)
      i:check(i.state.torn_down or i.state.kept, i.state.kept and "kept on purpose (--keep)" or "torn down")
    end},
  },
}
