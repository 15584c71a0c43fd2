-- The C host under hostile conditions: hang-ups, SIGQUIT, a closed console,
-- kill -9 (the watchdog), and the journal naming every process group.
-- Processes are found by PID/PGID in /proc, never by name.
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local json = require "bomarun.json"
local util = require "support.util"
local tmpdir, read, write, wait_for = util.tmpdir, util.read, util.write, util.wait_for

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local BIN = os.getenv("BOMARUN_BIN") or (SRC .. "/build/bomarun")

local RB_HEAD = 'local runbook = require "bomarun.runbook"\nlocal proc = require "bomarun.proc"\n'

-- Every process in /proc: {pid, ppid, pgid, sid, state}.
local function processes()
  local list = {}
  local r = assert(proc.run{argv = {"ls", "/proc"}})
  for name in r.stdout:gmatch("[^\n]+") do
    local pid = tonumber(name)
    local stat = pid and read("/proc/" .. pid .. "/stat")
    if stat then
      -- "pid (comm) state ppid pgrp session ...": comm may hold anything.
      local rest = stat:match("^.*%)%s+(.*)$")
      local state, ppid, pgid, sid = rest:match("^(%S+)%s+(%d+)%s+(%d+)%s+(%d+)")
      list[#list + 1] = {pid = pid, ppid = tonumber(ppid), pgid = tonumber(pgid), sid = tonumber(sid),
                         state = state}
    end
  end
  return list
end

-- The live (not zombie) members of a process group.
local function group_members(pgid)
  local live = {}
  for _, p in ipairs(processes()) do
    if p.pgid == pgid and p.state ~= "Z" then live[#live + 1] = p.pid end
  end
  return live
end

local function group_gone(pgid, seconds)
  local t0 = task.now()
  repeat
    if #group_members(pgid) == 0 then return true end
    task.sleep(0.05)
  until task.now() - t0 > seconds
  return false
end

-- Stop a group we may have left (only ours, by its id).
local function reap_group(pgid)
  if pgid and #group_members(pgid) > 0 then proc.run{argv = {"kill", "-KILL", "--", "-" .. pgid}} end
end

local function run_dir(parent)
  local r = proc.run{shell = "ls -d " .. parent .. "/*/ 2>/dev/null"}
  return (r.stdout:match("[^\n]+") or ""):gsub("/$", "")
end

local function events(dir)
  local list = {}
  for line in (read(dir .. "/events.jsonl") or ""):gmatch("[^\n]+") do
    local ev = json.decode(line)
    if ev then list[#list + 1] = ev end
  end
  return list
end

local function find_event(evs, type_)
  for _, ev in ipairs(evs) do
    if ev.type == type_ then return ev end
  end
end

-- A runbook whose step 2 runs `sh -c 'sleep 3001 & sleep 3002'` (writing
-- the shell's pid, its group's id, to d/pgid first); step 1 registers a
-- cleanup that writes d/cleaned.
local function long_runbook(d)
  return write(d .. "/long.lua", RB_HEAD .. [[
return runbook{id = "long", title = "Long",
  runbook.step{"1", "create", mutation = true, function(s)
    s:cleanup("write the cleaned marker", function()
      local f = assert(io.open("]] .. d .. [[/cleaned", "w")) f:write("cleaned\n") f:close()
    end)
  end},
  runbook.step{"2", "wait long", function(s)
    local r = proc.run{shell = "echo $$ > ]] .. d .. [[/pgid; sleep 3001 & sleep 3002"}
    s:gate(r.code == 0, "long job ok")
  end},
}
]])
end

-- Starts the runbook; returns the handle, the run directory and the pgid
-- of step 2's group once both sleeps run.
local function start_long(d, finally)
  long_runbook(d)
  local h = assert(proc.spawn{argv = {BIN, d .. "/long.lua", "--run-dir", d .. "/runs"}, env = {NO_COLOR = "1"}})
  local pgid
  finally(function()
    if not h:done() then h:kill("KILL") end
    reap_group(pgid)
  end)
  wait_for(function()
    pgid = tonumber(read(d .. "/pgid"))
    return pgid and #group_members(pgid) >= 3   -- sh and both sleeps
  end, 20, "step 2's process group to start")
  return h, run_dir(d .. "/runs"), pgid
end

describe("the C host, hardened", function()
  describe("signals", function()
    it("SIGHUP: the step is cancelled, cleanups run, reports written, exit 129", function()
      local d = tmpdir(finally)
      local h, dir, pgid = start_long(d, finally)
      h:kill("HUP")
      local r = h:wait()
      assert.equal(129, r.code, r.stdout .. r.stderr)
      assert.equal("cleaned\n", read(d .. "/cleaned"))
      assert.matches("SIGHUP", r.stdout)
      assert.truthy(read(dir .. "/report.json"), "no report.json")
      assert.truthy(read(dir .. "/summary.txt"), "no summary.txt")
      local evs = events(dir)
      assert.equal("SIGHUP", find_event(evs, "interrupted").signal)
      assert.equal("INTERRUPTED", find_event(evs, "run_end").status)
      assert.is_true(group_gone(pgid, 5), "the step's process group survived SIGHUP")
    end)

    it("SIGQUIT stops a script like SIGTERM: its processes are killed, exit 131", function()
      local d = tmpdir(finally)
      write(d .. "/s.lua", [[
local proc = require "bomarun.proc"
local h = assert(proc.spawn{shell = "sleep 3001 & sleep 3002"})
local f = assert(io.open("]] .. d .. [[/pgid", "w")) f:write(h:pid()) f:close()
h:wait()
]])
      local h = assert(proc.spawn{argv = {BIN, d .. "/s.lua"}})
      local pgid = tonumber(wait_for(function() return read(d .. "/pgid") end, 20, "the script to start"))
      finally(function() reap_group(pgid) end)
      wait_for(function() return #group_members(pgid) >= 3 end, 10, "both sleeps")
      h:kill("QUIT")
      local r = h:wait()
      assert.equal(131, r.code, r.stdout .. r.stderr)
      assert.matches("SIGQUIT", r.stderr)
      assert.is_true(group_gone(pgid, 5), "the script's process group survived SIGQUIT")
    end)

    it("a closed console does not stop the run or lose the journal", function()
      local d = tmpdir(finally)
      write(d .. "/talk.lua", RB_HEAD .. [[
local task = require "bomarun.task"
return runbook{id = "talk", title = "Talk",
  runbook.step{"1", "talks", function(s)
    task.sleep(0.3)   -- the reader has gone by now
    for _ = 1, 2000 do print(("x"):rep(100)) end
    local r = proc.run{shell = "echo hi", prefix = "[hi]"}
    s:gate(r.code == 0, "ran")
  end},
  runbook.step{"2", "after", function(s) s:gate(true, "fine") end},
}
]])
      local r = assert(proc.run{argv = {"sh", "-c", '"$0" "$1" --run-dir "$2" | true; echo "status=$?"',
                                        BIN, d .. "/talk.lua", d .. "/runs"}, timeout = 30})
      assert.matches("status=0", r.stdout)
      local dir = run_dir(d .. "/runs")
      local run_end = find_event(events(dir), "run_end")
      assert.truthy(run_end, "the journal has no run_end")
      assert.equal("PASSED", run_end.status)
      assert.truthy(read(dir .. "/report.json"))
    end)
  end)

  describe("the watchdog", function()
    it("kill -9 of bomarun: the step's process group is killed within seconds", function()
      local d = tmpdir(finally)
      local h, _, pgid = start_long(d, finally)
      h:kill("KILL")
      h:wait()
      assert.is_true(group_gone(pgid, 5), "the step's process group outlived a kill -9 of bomarun")
    end)

    it("runs in its own session, holds only its pipe, ignores signals, and is reaped at exit", function()
      local d = tmpdir(finally)
      write(d .. "/s.lua", [[
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local host = require "bomarun._host"
local h = assert(proc.spawn{shell = "sleep 3001 & sleep 3002"})
local f = assert(io.open("]] .. d .. [[/ids", "w")) f:write(host.getpid(), " ", h:pid()) f:close()
while not io.open("]] .. d .. [[/stop") do task.sleep(0.05) end
h:kill("KILL")
h:wait()
]])
      local h = assert(proc.spawn{argv = {BIN, d .. "/s.lua"}})
      local ids = wait_for(function() return read(d .. "/ids") end, 20, "the script to start")
      local bpid, pgid = ids:match("(%d+) (%d+)")
      bpid, pgid = tonumber(bpid), tonumber(pgid)
      finally(function() reap_group(pgid) end)
      -- The watchdog: bomarun's child that is not the group it started.
      local wd
      for _, p in ipairs(processes()) do
        if p.ppid == bpid and p.pid ~= pgid then wd = p end
      end
      assert.truthy(wd, "bomarun has no watchdog child")
      assert.equal(wd.pid, wd.sid, "the watchdog is not in a session of its own")
      assert.equal(wd.pid, wd.pgid)
      local fds = assert(proc.run{argv = {"ls", "/proc/" .. wd.pid .. "/fd"}}).stdout
      assert.equal("0\n", fds, "the watchdog holds more than its pipe")
      assert.matches("^pipe:", assert(proc.run{argv = {"readlink", "/proc/" .. wd.pid .. "/fd/0"}}).stdout)
      for _, sig in ipairs({"INT", "TERM", "HUP", "QUIT"}) do
        proc.run{argv = {"kill", "-" .. sig, tostring(wd.pid)}}
      end
      task.sleep(0.2)
      assert.truthy(read("/proc/" .. wd.pid .. "/stat"), "the watchdog died of a signal")
      assert.matches("^%S+ %b() [^Z]", read("/proc/" .. wd.pid .. "/stat"))
      write(d .. "/stop", "")
      local r = h:wait()
      assert.equal(0, r.code, r.stderr)
      -- Reaped by bomarun itself: not even a zombie is left.
      assert.is_nil(read("/proc/" .. wd.pid .. "/stat"), "the watchdog was left behind")
    end)

    it("is not started when no process group is (bomarun -e '')", function()
      local r = assert(proc.run{argv = {BIN, "-e", [[
local host = require "bomarun._host"
local me = host.getpid()
local n = 0
for line in io.popen("ls /proc"):lines() do
  local f = tonumber(line) and io.open("/proc/" .. line .. "/stat")
  if f then
    local ppid = tonumber(f:read("a"):match("^.*%)%s+%S+%s+(%d+)"))
    f:close()
    if ppid == me then n = n + 1 end
  end
end
print(n)
]]}})
      -- io.popen's own sh (and its ls) are our only children.
      assert.is_true(tonumber(r.stdout) <= 2, r.stdout .. r.stderr)
      assert.equal(0, r.code)
    end)
  end)

  describe("the journal names every process group", function()
    it("a step's subprocesses journal proc_start and proc_end with their pgid", function()
      local d = tmpdir(finally)
      write(d .. "/rb.lua", RB_HEAD .. [[
return runbook{id = "procs", title = "Procs",
  runbook.step{"1", "runs two", function(s)
    local r = proc.run{argv = {"sh", "-c", "exit 3"}}
    local h = assert(proc.spawn{shell = "sleep 30"})
    s:capture("pids", r.pid .. " " .. h:pid())
    h:kill("KILL")
    h:wait()
    s:gate(r.code == 3, "exit 3 seen")
  end},
}
]])
      local r = assert(proc.run{argv = {BIN, d .. "/rb.lua", "--run-dir", d .. "/runs"}, timeout = 30})
      assert.equal(0, r.code, r.stdout .. r.stderr)
      local evs = events(run_dir(d .. "/runs"))
      local a, b = find_event(evs, "capture").value:match("(%d+) (%d+)")
      a, b = tonumber(a), tonumber(b)
      local starts, ends = {}, {}
      for _, ev in ipairs(evs) do
        if ev.type == "proc_start" then starts[ev.pgid] = ev end
        if ev.type == "proc_end" then ends[ev.pgid] = ev end
      end
      assert.same({type = "proc_start", pgid = a, pid = a, argv0 = "sh", step = "1"},
                  {type = starts[a].type, pgid = starts[a].pgid, pid = starts[a].pid, argv0 = starts[a].argv0,
                   step = starts[a].step})
      assert.equal("sh -c", starts[b].argv0)
      assert.equal(3, ends[a].code)
      assert.is_nil(ends[a].signal)
      assert.is_nil(ends[b].code)
      assert.equal("SIGKILL", ends[b].signal)
      assert.is_true(starts[a].seq < ends[a].seq and ends[a].seq < starts[b].seq)
    end)

    it("a cancelled step's group gets its proc_end once reaped; proc.settle waits for it", function()
      local step = require "bomarun.step"
      local evs = {}
      local ctx = {id = "t", event = function(_, ev) evs[#evs + 1] = ev end}
      local t = task.spawn(function()
        -- ignores SIGTERM: it dies of SIGKILL after the grace period
        proc.run{shell = "trap '' TERM; sleep 30", grace = 0.3}
      end)
      step.bind(t, ctx)
      wait_for(function() return evs[1] end, 5, "proc_start")
      assert.equal("proc_start", evs[1].type)
      local pgid = evs[1].pgid
      finally(function() reap_group(pgid) end)
      t:cancel("interrupted by a spec", "INTERRUPTED")
      task.yield()
      assert.equal(1, #evs, "proc_end before the group was reaped")
      assert.is_true(proc.settle(5))
      assert.same({type = "proc_end", pgid = pgid, signal = "SIGKILL"}, evs[2])
      assert.is_true(group_gone(pgid, 1))
      assert.is_true(proc.settle(0), "nothing is left to settle")
    end)

    it("journals nothing outside a runbook step", function()
      local r = assert(proc.run{argv = {"true"}})
      assert.equal(0, r.code)
    end)
  end)
end)
