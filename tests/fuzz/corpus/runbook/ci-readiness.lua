-- CI readiness gate for freshly provisioned guests (the provisioning-flake
-- fix): a banner on port 22 is only the cheap early gate; the real gate is
-- an authenticated connection that rides out cloud-init restarting sshd,
-- then `cloud-init status --wait`.  Every host is gated at once.
--
--   bomarun runbooks/ci-readiness.lua --profile ci-lane
-- with a profile such as:
--   return {user = "cloud-user", key = "/home/ci/.ssh/id_ed25519",
--           hosts = {{host = "10.0.2.2"}, {host = "10.0.2.3", port = 2222}},
--           host_key_policy = "accept-new", known_hosts = "/run/ci/known_hosts"}
local runbook = require "bomarun.runbook"
local ssh = require "bomarun.ssh"
local task = require "bomarun.task"

local function target(s, h)
  return {host = h.host, port = h.port or 22, user = h.user or s.env.user, key = h.key or s.env.key,
          known_hosts = s.env.known_hosts, host_key_policy = s.env.host_key_policy, timeout = s.env.timeout}
end

-- Run fn(s, host) for every host concurrently; gate on all of them.
local function each_host(s, what, fn)
  local fns = {}
  for k, h in ipairs(s.env.hosts) do
    fns[k] = function() return {fn(s, h)} end
  end
  local results = task.parallel(fns, {limit = s.env.parallel})
  for k, h in ipairs(s.env.hosts) do
    local ok, detail = results[k][1], results[k][2]
    s:gate(ok ~= nil, string.format("%s: %s:%d%s", what, h.host, h.port or 22, detail and (": " .. detail) or ""))
  end
  return results
end

return runbook{
  id = "ci-readiness",
  title = "CI guest readiness: banner, authenticated connection, cloud-init",
  description = "Gate on cloud-init completion, not an open port: sshd bounces while cloud-init runs.",
  decisions = {"phase-8"},
  needs = {user = "string", key = "string", hosts = "table"},
  defaults = {host_key_policy = "strict", timeout = 300, parallel = 16, cloud_init = "cloud-init"},

  runbook.phase{"Readiness",
    runbook.step{"8b.1", "Early gate: OpenSSH banner on every host", function(s)
      each_host(s, "banner", function(_, h)
        local b, err = ssh.wait_for_port{host = h.host, port = h.port or 22, banner = "OpenSSH", timeout = s.env.timeout}
        if not b then return nil, err end
        return true
      end)
    end},
    runbook.step{"8b.2", "Real gate: authenticated connection (through sshd restarts)", function(s)
      each_host(s, "connection", function(_, h)
        local session, err = ssh.wait_for_connection(target(s, h))
        if not session then return nil, err end
        return true
      end)
    end},
    runbook.step{"8b.3", "cloud-init finished on every host", function(s)
      local degraded = {}
      each_host(s, "cloud-init", function(_, h)
        local r, err = ssh.wait_for_cloud_init(target(s, h), {command = s.env.cloud_init, timeout = s.env.timeout})
        if not r then return nil, err end
        if r.status == "degraded" then degraded[#degraded + 1] = h.host .. ": " .. r.detail end
        return true
      end)
      s:capture("cloud_init_degraded", #degraded)
      for _, d in ipairs(degraded) do s:log("degraded: %s", d) end
    end},
  },

  runbook.acceptance{"8", "Readiness gate trustworthy",
    runbook.item{"8.1", "Every host passed the cloud-init gate", function(i)
      i:check(i.state.cloud_init_degraded == 0, "no host reported recoverable cloud-init errors")
    end},
    runbook.item{"8.2", "Green across consecutive lane runs", outstanding = "operator records >= 3 consecutive green runs"},
  },
}
