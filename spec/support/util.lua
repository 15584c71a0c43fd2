-- Helpers shared by the specs (on package.path through .busted's lpath).
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local host = require "bomarun._host"

local M = {}

--- A fresh directory, removed when the current test ends (pass or fail):
--- pass busted's `finally`, which exists only inside a running test.
function M.tmpdir(finally)
  local d = os.tmpname()
  os.remove(d)
  assert(host.mkdir(d))
  finally(function() proc.run{argv = {"rm", "-rf", d}} end)
  return d
end

--- The whole content of a file, or nil if it cannot be read.
function M.read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Write text to a file; returns the path.
function M.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

--- Poll fn every 50 ms until it returns a true value (returned), or fail
--- after `seconds`.
function M.wait_for(fn, seconds, what)
  local t0 = task.now()
  while task.now() - t0 < seconds do
    local v = fn()
    if v then return v end
    task.sleep(0.05)
  end
  error("timed out waiting for " .. what, 2)
end

--- Whether a process exists and is not a zombie (PID 1 here may not reap
--- orphans).
function M.pid_alive(pid)
  local r = proc.run{shell = "ps -o stat= -p " .. pid}
  return r.code == 0 and not r.stdout:match("^%s*Z")
end

--- Wait up to `seconds` for a process to be gone; returns whether it is.
function M.wait_dead(pid, seconds)
  local t0 = task.now()
  while task.now() - t0 < seconds do
    if not M.pid_alive(pid) then return true end
    task.sleep(0.05)
  end
  return false
end

--- Run the bomarun under test (BOMARUN_BIN) with args; opts: cwd, env, timeout.
function M.bomarun(args, opts)
  opts = opts or {}
  local src = os.getenv("BOMARUN_SOURCE") or "."
  local argv = {os.getenv("BOMARUN_BIN") or (src .. "/build/bomarun")}
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(proc.run{argv = argv, cwd = opts.cwd, env = opts.env, timeout = opts.timeout or 60})
end

--- The run directories under `parent`, without their trailing slash.
function M.run_dirs(parent)
  local r = proc.run{shell = "ls -d " .. parent .. "/*/ 2>/dev/null"}
  local dirs = {}
  for d in r.stdout:gmatch("[^\n]+") do dirs[#dirs + 1] = d:gsub("/$", "") end
  return dirs
end

return M
