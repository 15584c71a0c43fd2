-- Apply an inline Ansible play to this machine and prove it idempotent, as
-- Molecule's converge + idempotence steps do.  The inventory is a Lua table
-- with ansible_connection=local, so the example needs no site and no ssh.
--
--   bomarun examples/ansible-apply.lua --plan
--   bomarun examples/ansible-apply.lua [--set dir=/tmp/somewhere]
--
-- Every task result prints as one line prefixed [demo] while the play runs;
-- the step logs, events.jsonl and ansible/NN-*/ (output.log, events.jsonl,
-- play.yml, inventory.yml) in the run directory keep the evidence.
local ansible = require "bomarun.ansible"
local proc = require "bomarun.proc"
local runbook = require "bomarun.runbook"

local inventory = {
  hosts = {"localhost"},
  connection = {type = "local", python = "/usr/bin/python3"},
}

-- The play, as a person would write it in YAML (see ansible/*/play.yml).
local function play(dir)
  return {
    name = "demo: a managed motd",
    hosts = "all",
    gather_facts = false,
    tasks = {
      {name = "the directory exists", file = {path = dir, state = "directory", mode = "0755"}},
      {name = "the motd is written",
       copy = {dest = dir .. "/motd", content = "Managed by bomarun.\nDo not edit by hand.\n", mode = "0644"}},
      {name = "the motd is read back", command = "cat " .. dir .. "/motd", register = "motd",
       changed_when = false},
      {name = "the motd says who manages it",
       assert = {that = {"'bomarun' in motd.stdout"}, fail_msg = "the motd lost its header"}},
    },
  }
end

return runbook{
  id = "ansible-apply",
  title = "Apply a play to localhost and prove it idempotent",
  description = "Inline play + table inventory (connection local): apply, gate on no failed and no\n" ..
                "unreachable host, apply again and gate on zero changes.",
  defaults = {dir = "/tmp/bomarun-ansible-demo", timeout = 300},

  runbook.phase{"Prerequisites",
    runbook.step{"1", "ansible-playbook is installed", function(s)
      local r, err = proc.run{argv = {"ansible-playbook", "--version"}, timeout = 60}
      s:gate(r and r.code == 0, "ansible-playbook --version runs" .. (err and (": " .. err) or ""))
      s:capture("ansible_version", r.stdout:match("%[core ([^%]]+)%]") or r.stdout:match("^[^\n]*"))
    end},
  },

  runbook.phase{"Converge",
    runbook.step{"2", "Apply the play, then apply it again (idempotence)", mutation = true, timeout = 600,
      function(s)
        -- ansible.idempotent applies twice: res is the second run, res.first
        -- the first (absent when the first apply failed: there is no second).
        -- The messages name any task that failed, or changed the second time.
        -- (ansible.gate(s, res) is the one-line form of both gates.)
        local res, err = ansible.idempotent{
          play = play(s.env.dir), inventory = inventory, prefix = "[demo]", timeout = s.env.timeout,
        }
        if not res then s:fail(err) end   -- a timeout: the play's process group was killed
        local first = res.first or res
        s:gate(first.ok, "first apply: " .. first.msg)
        s:gate(res.idempotent, "second apply changes nothing: " .. res.msg)
        s:capture("first_changed", first.totals.changed)
        s:capture("second_changed", res.totals.changed)
        s:capture("hosts", #res.events > 0 and res.events[1].host or nil)
      end},
  },

  runbook.acceptance{"DEMO", "Demo acceptance",
    runbook.item{"DEMO.1", "The motd is in place", function(i)
      local f = io.open(i.env.dir .. "/motd")
      local text = f and f:read("a")
      if f then f:close() end
      i:check(text ~= nil and text:find("Managed by bomarun", 1, true) ~= nil, i.env.dir .. "/motd has the header")
    end},
    runbook.item{"DEMO.2", "The second apply changed nothing", function(i)
      i:check(i.state.second_changed == 0, "changed == 0 on the second run")
    end},
  },
}
