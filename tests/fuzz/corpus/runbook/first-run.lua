-- A runbook that needs no site: local subprocesses, gates, a poll, a
-- cleanup ledger, parallel commands and an acceptance bar with an
-- outstanding and a deferred item.
--
--   bomarun examples/first-run.lua            run it
--   bomarun plan examples/first-run.lua       show it, run nothing
local runbook = require "bomarun.runbook"
local proc = require "bomarun.proc"
local task = require "bomarun.task"

return runbook{
  id = "first-run",
  title = "Local host readiness (no site needed)",
  description = "Checks this machine the way a site runbook checks a cloud: gates, a poll, an acceptance bar.",
  decisions = {"D-001", "D-002"},
  profile = "local",
  needs = {workdir = "string", min_free_mib = "number"},
  defaults = {workdir = "/tmp", min_free_mib = 64},

  runbook.phase{"Prerequisites",
    runbook.step{"1.0", "Tools present", function(s)
      for _, tool in ipairs{"sh", "uname", "df"} do
        local r = proc.run{shell = "command -v " .. tool}
        s:gate(r.code == 0, tool .. " is on PATH")
      end
    end},
    runbook.step{"1.1", "Free space in the work directory", function(s)
      local r = assert(proc.run{argv = {"df", "-Pm", s.env.workdir}, timeout = 10})
      local avail = tonumber(r.stdout:match("\n%S+%s+%d+%s+%d+%s+(%d+)"))
      s:capture("free_mib", avail)
      s:gate(avail and avail >= s.env.min_free_mib,
             string.format("at least %d MiB free in %s", s.env.min_free_mib, s.env.workdir))
    end},
  },

  runbook.phase{"Work",
    runbook.step{"2.0", "Start a background job and wait for it", mutation = true, timeout = 60, function(s)
      local marker = s.run.dir .. "/job-ready"
      s:cleanup("remove " .. marker, function() os.remove(marker) end)
      local job = assert(proc.spawn{shell = "sleep 0.5; echo working; echo ready > " .. proc.quote(marker),
                                    prefix = "[job]"})
      s:poll{function()
               local f = io.open(marker)
               if not f then return "PENDING" end
               local v = f:read("l")
               f:close()
               return v == "ready" and "READY" or "PARTIAL"
             end,
             ok = {"READY"}, fail = {"ERROR"}, timeout = 30, interval = 0.2, what = "job marker"}
      local r = job:wait()
      s:gate(r.code == 0, "the job exited 0")
      s:capture("marker", marker)
    end},
    runbook.step{"2.1", "Three probes in parallel, two at a time", function(s)
      local probes = {{"uname", "-m"}, {"id", "-un"}, {"sh", "-c", "echo $((6 * 7))"}}
      local fns = {}
      for k, argv in ipairs(probes) do
        fns[k] = function() return assert(proc.run{argv = argv, timeout = 10}) end
      end
      local results = task.parallel(fns, {limit = 2})
      for k, r in ipairs(results) do
        s:check(r.code == 0, table.concat(probes[k], " ") .. " exited 0")
      end
      s:gate(results[3].stdout:match("^42") ~= nil, "the shell can do arithmetic")
    end},
  },

  runbook.acceptance{"D-001", "Acceptance bar",
    runbook.item{"D-001.1", "The kernel identifies itself", function(i)
      local r = assert(proc.run{argv = {"uname", "-sr"}})
      i:check(r.code == 0 and r.stdout:match("%S") ~= nil, "uname -sr answered")
    end},
    runbook.item{"D-001.2", "Captured values survive between steps", function(i)
      i:check(type(i.state.free_mib) == "number", "free space was captured by 1.1")
    end},
    runbook.item{"D-001.3", "Snapshot baseline recorded", outstanding = "operator records Snapshot 1"},
    runbook.item{"D-001.4", "Name resolution", deferred = "D-002: DNS checks deferred to v2"},
  },
}
