-- bomarun.ssh against a real OpenSSH sshd on 127.0.0.1, started by the test
-- stack (tests/stack/sshd.lua) with its own config and keys.
package.path = (os.getenv("BOMARUN_SOURCE") or ".") .. "/tests/stack/?.lua;" .. package.path
local sshd = require "sshd"
local ssh = require "bomarun.ssh"
local task = require "bomarun.task"
local proc = require "bomarun.proc"
local host = require "bomarun._host"
local util = require "support.util"
local read, write = util.read, util.write

local server

local function target(extra)
  local t = {host = "127.0.0.1", port = server.port, user = server.user, key = server.keys.ed25519,
             known_hosts = server.known_hosts, timeout = 10}
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

describe("ssh against a real sshd", function()
  setup(function() server = sshd.start_new() end)
  teardown(function() if server then server:remove() end end)

  describe("exec", function()
    local s
    setup(function() s = assert(ssh.connect(target())) end)
    teardown(function() s:close() end)

    it("returns status, stdout, stderr and duration", function()
      local r = assert(s:exec("echo out; echo err >&2; exit 3"))
      assert.equal(3, r.status)
      assert.equal("out\n", r.stdout)
      assert.equal("err\n", r.stderr)
      assert.is_true(r.duration > 0 and r.duration < 5)
    end)

    it("reports death by signal", function()
      local r = assert(s:exec("kill -KILL $$"))
      assert.is_nil(r.status)
      assert.equal("KILL", r.signal)
    end)

    it("carries several MB on both streams", function()
      local r = assert(s:exec("head -c 3000000 /dev/zero | tr '\\0' a; head -c 2000000 /dev/zero | tr '\\0' b >&2"))
      assert.equal(0, r.status)
      assert.equal(3000000, #r.stdout)
      assert.equal(2000000, #r.stderr)
      assert.equal("bbb", r.stderr:sub(-3))
    end)

    it("feeds stdin", function()
      local big = string.rep("line of input\n", 20000)
      local r = assert(s:exec("wc -l", {stdin = big}))
      assert.equal("20000", r.stdout:match("%d+"))
      r = assert(s:exec("cat"))   -- no stdin: EOF at once, no hang
      assert.equal("", r.stdout)
    end)

    it("streams lines as they arrive", function()
      local t0, first = task.now(), nil
      local r = assert(s:exec("echo one; sleep 0.5; echo two", {on_line = function(line)
        if line == "one" then first = task.now() - t0 end
      end}))
      assert.equal("one\ntwo\n", r.stdout)
      assert.is_true(first < 0.4, "the first line arrived after " .. tostring(first) .. " s")
    end)

    it("runs several commands concurrently over one session", function()
      local fns = {}
      for k = 1, 10 do fns[k] = function() return assert(s:exec("sleep 0.4; echo " .. k)).stdout end end
      local t0 = task.now()
      local out = task.parallel(fns)
      local took = task.now() - t0
      for k = 1, 10 do assert.equal(k .. "\n", out[k]) end
      assert.is_true(took < 2, "10 concurrent 0.4 s commands took " .. took .. " s")
    end)

    it("times out a command, closes its channel, and keeps the session", function()
      local t0 = task.now()
      local r, err, code, partial = s:exec("echo started; sleep 30", {timeout = 0.5})
      assert.is_nil(r)
      assert.equal("TIMEOUT", code)
      assert.matches("timed out after 0.5 s", err)
      assert.matches(server.user .. "@127%.0%.0%.1:" .. server.port, err)
      assert.equal("started\n", partial.stdout)
      assert.is_true(task.now() - t0 < 3)
      assert.equal(0, assert(s:exec("true")).status)
    end)

    it("reports a dropped connection as DISCONNECTED and reconnects through the pool", function()
      local t = target()
      local p = assert(ssh.session(t))
      assert.equal(p, ssh.session(t))
      local r, err, code = p:exec("kill -KILL $PPID")   -- the per-connection sshd
      assert.is_nil(r)
      assert.equal("DISCONNECTED", code)
      assert.matches("exec: " .. server.user .. "@", err)
      assert.is_false(p:alive())
      local p2 = assert(ssh.session(t))
      assert.are_not.equal(p, p2)
      assert.equal(0, assert(p2:exec("true")).status)
    end)
  end)

  describe("sftp", function()
    it("puts and gets files with their mode bits, and strings", function()
      local s = assert(ssh.connect(target()))
      local src = server.dir .. "/local-src"
      local data = {}
      for k = 1, 20000 do data[k] = string.format("%05d some payload\n", k) end
      write(src, table.concat(data))
      local remote = server.dir .. "/remote-copy"
      local r = assert(s:put(src, remote, {mode = tonumber("640", 8)}))
      assert.equal(#table.concat(data), r.bytes)
      assert.equal("640\n", assert(s:exec("stat -c %a " .. remote)).stdout)
      local back = server.dir .. "/local-back"
      assert(s:get(remote, back))
      assert.equal(table.concat(data), read(back))
      assert.equal("640\n", proc.run{argv = {"stat", "-c", "%a", back}}.stdout)
      assert(s:put_string("in memory\n", server.dir .. "/str", {mode = tonumber("600", 8)}))
      assert.equal("in memory\n", assert(s:get_string(server.dir .. "/str")))
      local v, err, code = s:get_string(server.dir .. "/does-not-exist")
      assert.is_nil(v)
      assert.equal("SFTP", code)
      assert.matches("no such file", err)
      s:close()
    end)
  end)

  describe("authentication", function()
    for _, kind in ipairs({"ed25519", "rsa", "ecdsa"}) do
      it("accepts an " .. kind .. " key", function()
        local s = assert(ssh.connect(target({key = server.keys[kind]})))
        assert.equal(0, assert(s:exec("true")).status)
        s:close()
      end)
    end

    it("decrypts a key with a passphrase from a secret reference, never showing it", function()
      local var = "BOMARUN_SPEC_PASSPHRASE"
      local env_run = assert(proc.run{argv = {os.getenv("BOMARUN_BIN") or "build/bomarun", "-e", [[
        local ssh = require "bomarun.ssh"
        local secret = require "bomarun.secret"
        local t = {host = "127.0.0.1", port = ]] .. server.port .. [[, user = "]] .. server.user .. [[",
                   key = "]] .. server.keys.encrypted .. [[", known_hosts = "]] .. server.known_hosts .. [[",
                   passphrase = secret.env "]] .. var .. [["}
        local s = assert(ssh.connect(t))
        print("ok", s:exec("echo authed").stdout)
        t.passphrase = "not the passphrase"
        local _, err, code = ssh.connect(t)
        print(code, err)
      ]]}, env = {[var] = server.passphrase}})
      assert.equal(0, env_run.code, env_run.stderr)
      assert.matches("ok\tauthed", env_run.stdout)
      assert.matches("KEY_FILE", env_run.stdout)
      assert.is_nil(env_run.stdout:find(server.passphrase, 1, true))
      assert.is_nil(env_run.stdout:find("not the passphrase", 1, true), "a passphrase appeared in an error")
    end)

    it("authenticates through ssh-agent", function()
      local sock = server.dir .. "/agent.sock"
      local agent = assert(proc.spawn{argv = {"ssh-agent", "-D", "-a", sock}, quiet = true})
      local t0 = task.now()
      while not host.exists(sock) and task.now() - t0 < 5 do task.sleep(0.05) end
      local add = proc.run{argv = {"ssh-add", server.keys.rsa}, env = {SSH_AUTH_SOCK = sock}}
      assert.equal(0, add.code, add.stderr)
      local s = assert(ssh.connect(target({key = false, agent = sock})))
      assert.equal("agent\n", assert(s:exec("echo agent")).stdout)
      s:close()
      agent:kill("TERM")
      agent:wait()
    end)

    it("rejects a wrong key with AUTH, at once, without retrying", function()
      local t0 = task.now()
      local s, err, code = ssh.wait_for_connection(target({key = server.keys.wrong, timeout = 30}))
      assert.is_nil(s)
      assert.equal("AUTH", code)
      assert.matches("ssh: auth: " .. server.user .. "@127%.0%.0%.1:" .. server.port, err)
      assert.matches("not retrying", err)
      assert.is_true(task.now() - t0 < 3, "took " .. (task.now() - t0) .. " s")
    end)

    it("reports a missing key file by path", function()
      local _, err, code = ssh.connect(target({key = server.dir .. "/no-such-key"}))
      assert.equal("KEY_FILE", code)
      assert.matches("no%-such%-key", err)
    end)
  end)

  describe("host keys", function()
    it("accept-new learns and pins an unknown host; strict refuses it", function()
      local kh = server.dir .. "/fresh_known_hosts"
      write(kh, "")
      local _, err, code = ssh.connect(target({known_hosts = kh}))
      assert.equal("HOSTKEY_UNKNOWN", code)
      assert.matches("host key SHA256:", err)
      local s = assert(ssh.connect(target({known_hosts = kh, host_key_policy = "accept-new"})))
      s:close()
      assert.matches("%[127%.0%.0%.1%]:" .. server.port .. " ssh%-ed25519 ", read(kh))
      s = assert(ssh.connect(target({known_hosts = kh})))   -- strict now matches
      s:close()
    end)

    it("pinned: connects on the expected fingerprint only", function()
      local s = assert(ssh.connect(target()))
      local fp = s:info().fingerprint
      s:close()
      assert.matches("^SHA256:[%w+/]+$", fp)
      s = assert(ssh.connect(target({host_key_policy = "pinned", fingerprint = fp})))
      s:close()
      local _, err, code = ssh.connect(target({host_key_policy = "pinned",
                                               fingerprint = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}))
      assert.equal("HOSTKEY_MISMATCH", code)
      assert.matches(fp:gsub("%p", "%%%0"), err)
    end)

    it("a changed host key is a mismatch, never retried", function()
      server:stop()
      server:new_host_key()
      server:start()
      local t0 = task.now()
      local s, err, code = ssh.wait_for_connection(target({timeout = 30}))
      assert.is_nil(s)
      assert.equal("HOSTKEY_MISMATCH", code)
      assert.matches("HOST KEY MISMATCH", err)
      assert.matches("not retrying", err)
      assert.is_true(task.now() - t0 < 3)
      server:write_known_hosts()
      assert(ssh.connect(target())):close()
    end)
  end)

  describe("readiness", function()
    it("wait_for_port sees the banner", function()
      local banner = assert(ssh.wait_for_port{host = "127.0.0.1", port = server.port, banner = "OpenSSH", timeout = 10})
      assert.matches("^SSH%-2%.0%-OpenSSH", banner)
    end)

    it("wait_for_connection rides out an sshd stopped and started again", function()
      server:stop()
      local restarted
      local restarter = task.spawn(function()
        task.sleep(2)
        server:start()
        restarted = task.now()
      end)
      local t0 = task.now()
      local s, err = ssh.wait_for_connection(target({timeout = 30, interval = 0.2}))
      assert.truthy(s, err)
      assert.truthy(restarted)
      assert.is_true(task.now() - t0 >= 1.9)
      assert.equal(0, assert(s:exec("true")).status)
      restarter:wait()
    end)

    it("times out clearly on a listener that accepts TCP and never speaks", function()
      local port
      local listener = assert(proc.spawn{argv = {"python3", "-c", [[
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept(); held.append(c)
]]}, quiet = true, on_line = function(line) port = tonumber(line) end})
      local t0 = task.now()
      while not port and task.now() - t0 < 10 do task.sleep(0.05) end
      assert.is_number(port, "the silent listener did not report its port")
      local t1 = task.now()
      local s, err, code = ssh.connect(target({port = port, timeout = 1}))
      assert.is_nil(s)
      assert.equal("TIMEOUT", code)
      assert.matches("ssh: handshake: .-127%.0%.0%.1:" .. port .. ": timed out after 1 s", err)
      assert.matches("no ssh banner", err)
      assert.is_true(task.now() - t1 < 3)
      local b, berr, bcode = ssh.wait_for_port{host = "127.0.0.1", port = port, banner = "OpenSSH", timeout = 1.5}
      assert.is_nil(b)
      assert.equal("TIMEOUT", bcode)
      assert.matches("timed out", berr)
      listener:kill("KILL")
      listener:wait()
    end)

    it("wait_for_cloud_init: 0 passes, 2 passes degraded with detail, others fail", function()
      -- A stand-in for cloud-init on the test host, controlled by this test.
      local fake = server.dir .. "/fake-cloud-init"
      local ctl = server.dir .. "/fake-cloud-init.exit"
      write(fake, "#!/bin/sh\n# stand-in for cloud-init (tests only)\ncode=$(cat " .. ctl .. ")\n" ..
                  "echo \"status: $([ $code = 0 ] && echo done || echo error)\"\n" ..
                  "[ $code = 2 ] && echo 'recoverable_errors: WARNING: fake degraded module'\nexit $code\n")
      proc.run{argv = {"chmod", "+x", fake}}
      write(ctl, "0")
      local r = assert(ssh.wait_for_cloud_init(target(), {command = fake, timeout = 10}))
      assert.equal("done", r.status)
      write(ctl, "2")
      r = assert(ssh.wait_for_cloud_init(target(), {command = fake, timeout = 10}))
      assert.equal("degraded", r.status)
      assert.matches("recoverable_errors", r.detail)
      write(ctl, "1")
      local v, err, code = ssh.wait_for_cloud_init(target(), {command = fake, timeout = 10})
      assert.is_nil(v)
      assert.equal("CLOUD_INIT", code)
      assert.matches("exit 1", err)
    end)

    it("reboot passes only when the boot id changed, across a dropped connection", function()
      -- Stand-ins: a boot id file and a "reboot" that changes it and stops
      -- sshd; this test plays the machine coming back by restarting sshd.
      local bootid = server.dir .. "/fake-boot-id"
      write(bootid, "boot-aaaa\n")
      local fake_reboot = server.dir .. "/fake-reboot"
      write(fake_reboot, "#!/bin/sh\n# stand-in for reboot (tests only)\necho boot-bbbb > " .. bootid ..
                         "\nkill " .. server.handle:pid() .. "\n")
      proc.run{argv = {"chmod", "+x", fake_reboot}}
      local sshd_handle = server.handle
      local comeback = task.spawn(function()
        sshd_handle:wait()         -- the "machine" went down
        task.sleep(1.5)
        server:start()
      end)
      local r, err = ssh.reboot(target(), {command = fake_reboot, boot_id_path = bootid, timeout = 30, interval = 0.3})
      assert.truthy(r, err)
      assert.equal("boot-aaaa", r.old_boot_id)
      assert.equal("boot-bbbb", r.new_boot_id)
      comeback:wait()
    end)
  end)

  it("the example host-readiness runbook gates on port, connection and cloud-init", function()
    local fake = server.dir .. "/fake-cloud-init-ok"
    write(fake, "#!/bin/sh\n# stand-in for cloud-init (tests only)\necho 'status: done'\n")
    proc.run{argv = {"chmod", "+x", fake}}
    local profile = server.dir .. "/site.lua"
    write(profile, string.format("return {host = '127.0.0.1', port = %d, user = '%s', key = '%s', " ..
      "known_hosts = '%s', cloud_init = '%s', timeout = 20}\n", server.port, server.user,
      server.keys.ed25519, server.known_hosts, fake))
    local src = os.getenv("BOMARUN_SOURCE") or "."
    local r = assert(proc.run{argv = {os.getenv("BOMARUN_BIN") or "build/bomarun", src .. "/examples/host-readiness.lua",
                                      "--profile", profile, "--run-dir", server.dir .. "/runs"}, timeout = 120})
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("READY%.2%s+PASS", r.stdout)
    assert.matches("fingerprint = SHA256:", r.stdout)
  end)

  it("the shipped ci-readiness runbook gates every host of the profile", function()
    local fake = server.dir .. "/fake-cloud-init-ci"
    write(fake, "#!/bin/sh\n# stand-in for cloud-init (tests only)\necho 'status: done'\n")
    proc.run{argv = {"chmod", "+x", fake}}
    local profile = server.dir .. "/ci.lua"
    write(profile, string.format("return {user = '%s', key = '%s', known_hosts = '%s', cloud_init = '%s', " ..
      "timeout = 20, hosts = {{host = '127.0.0.1', port = %d}, {host = '127.0.0.1', port = %d}}}\n",
      server.user, server.keys.ed25519, server.known_hosts, fake, server.port, server.port))
    local src = os.getenv("BOMARUN_SOURCE") or "."
    local r = assert(proc.run{argv = {os.getenv("BOMARUN_BIN") or "build/bomarun", src .. "/runbooks/ci-readiness.lua",
                                      "--profile", profile, "--run-dir", server.dir .. "/runs"}, timeout = 120})
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("8%.1%s+PASS", r.stdout)
    assert.matches("8%.2%s+OUTSTANDING", r.stdout)
  end)

  it("holds 200 concurrent sessions from one process, and reports memory per session", function()
    local n = 200
    local before = host.rss()
    local sessions = {}
    local fns = {}
    for k = 1, n do
      fns[k] = function()
        local s = assert(ssh.connect(target({timeout = 60})))
        sessions[k] = s
        return assert(s:exec("echo " .. k)).stdout
      end
    end
    local t0 = task.now()
    local out = task.parallel(fns)
    local took = task.now() - t0
    local after = host.rss()
    for k = 1, n do assert.equal(k .. "\n", out[k]) end
    local per = (after - before) / n
    print(string.format("\n# 200 sessions: %.2f s, %.1f KiB RSS per session", took, per / 1024))
    assert.is_true(per < 1024 * 1024, "more than 1 MiB per session")
    for k = 1, n do sessions[k]:close() end
  end)
end)
