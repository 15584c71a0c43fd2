-- Gate a host the way the CI readiness fix did: a cheap port + banner check
-- first, then an authenticated connection that survives sshd restarting
-- under cloud-init, then `cloud-init status --wait`.  A banner alone proves
-- a listener, not a login: only step 2 lets configuration start.
--
--   bomarun examples/host-readiness.lua --profile mysite
-- with profiles/mysite.lua giving host, user, key (and known_hosts, port,
-- host_key_policy = "accept-new" for a throwaway VM).
local runbook = require "bomarun.runbook"
local ssh = require "bomarun.ssh"

local function target(s)
  return {host = s.env.host, port = s.env.port, user = s.env.user, key = s.env.key,
          known_hosts = s.env.known_hosts, host_key_policy = s.env.host_key_policy,
          timeout = s.env.timeout}
end

return runbook{
  id = "host-readiness",
  title = "Host readiness: port, authenticated connection, cloud-init",
  description = "The readiness ladder for a fresh VM: port/banner -> login -> cloud-init done.",
  needs = {host = "string", user = "string", key = "string"},
  defaults = {port = 22, host_key_policy = "strict", cloud_init = "cloud-init", timeout = 600},

  runbook.phase{"Readiness",
    runbook.step{"1", "Port answers with an OpenSSH banner", function(s)
      local banner, err = ssh.wait_for_port{host = s.env.host, port = s.env.port, banner = "OpenSSH",
                                            timeout = s.env.timeout}
      s:gate(banner ~= nil, "sshd banner on " .. s.env.host .. ":" .. s.env.port .. (err and (": " .. err) or ""))
      s:capture("banner", banner)
    end},
    runbook.step{"2", "Authenticated connection (retries through sshd restarts)", function(s)
      local session, err = ssh.wait_for_connection(target(s))
      s:gate(session ~= nil, "an authenticated no-op command succeeds" .. (err and (": " .. err) or ""))
      s:capture("fingerprint", session:info().fingerprint)
    end},
    runbook.step{"3", "cloud-init finished", function(s)
      local r, err = ssh.wait_for_cloud_init(target(s), {command = s.env.cloud_init, timeout = s.env.timeout})
      s:gate(r ~= nil, "cloud-init status --wait exits 0 or 2" .. (err and (": " .. err) or ""))
      s:capture("cloud_init", r.status)
      if r.status == "degraded" then s:log("cloud-init recoverable errors: %s", r.detail) end
    end},
  },

  runbook.acceptance{"READY", "Ready for configuration",
    runbook.item{"READY.1", "Login uses a recorded host key", function(i)
      i:check(type(i.state.fingerprint) == "string" and i.state.fingerprint:match("^SHA256:") ~= nil,
              "host key fingerprint recorded")
    end},
    runbook.item{"READY.2", "cloud-init finished cleanly", function(i)
      if i.state.cloud_init == "degraded" then
        i:outstanding("cloud-init reported recoverable errors: read step 3's log")
      end
      i:check(i.state.cloud_init == "done", "cloud-init status: done")
    end},
  },
}
