-- fuzz_runbook's driver: arbitrary text loaded as a runbook file the way
-- cli.lua loads one (loadfile, run the chunk, keep what it returns if it
-- is a runbook), then the runbook's plan: describe (the run_start event),
-- the needs check, the selection, and plan mode's printout.  No body runs.
--
-- Unlike cli.lua (runbooks are trusted code) the chunk runs in a sandbox:
-- no io, os, load, debug or metatables, `require` gives copies of the pure
-- modules (bomarun.runbook, bomarun.json) and an inert table for any other,
-- and it is bounded to 0.25 s.  Text only: Lua does not verify binary chunks.
local runbook = require "bomarun.runbook"
local plan = require "bomarun.runner.plan"
local profile = require "bomarun.profile"
local select_mod = require "bomarun.runner.select"
local log = require "bomarun.log"
local task = require "bomarun.task"
local common = dofile(FUZZ_DIR .. "/common.lua")

log.console = function() end   -- plan mode prints; the fuzzer needs no console

local SAFE = {"assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget", "rawlen", "rawset",
              "select", "tonumber", "tostring", "type", "xpcall"}
local PURE = {["bomarun.runbook"] = true, ["bomarun.json"] = true}

local function inert()
  return setmetatable({}, {__index = function() return function() end end})
end

local function sandbox()
  local env = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  for _, lib in ipairs({"string", "table", "math", "utf8"}) do env[lib] = common.copy(_G[lib]) end
  env.string.dump, env.math.randomseed = nil, nil
  env.require = function(name)
    if PURE[name] then return common.copy(require(name)) end
    return inert()
  end
  env._G = env
  return env
end

-- plan.lua caches each source file's lines by path; every input is the
-- same path, so forget them between inputs.
local source_cache
do
  local i = 1
  while true do
    local name, fn = debug.getupvalue(plan.scan_body, i)
    if not name then break end
    if name == "source_lines" then
      local j = 1
      while true do
        local n2, t = debug.getupvalue(fn, j)
        if not n2 then break end
        if n2 == "source_cache" then source_cache = t end
        j = j + 1
      end
    end
    i = i + 1
  end
end

local function the_plan(rb)
  plan.describe(rb)
  local env = {}
  for k, v in pairs(rb.defaults or {}) do env[k] = v end
  local problems = profile.check_needs(env, rb)
  local sel = select_mod.selection(rb, {only = {}, set = {}}) or {}
  plan.print(rb, env, nil, nil, problems, sel)
end

return function(_, path)
  if source_cache then
    for k in pairs(source_cache) do source_cache[k] = nil end
  end
  local chunk = loadfile(path, "t", sandbox())
  if not chunk then return end
  local ok, rb, terr = pcall(task.timeout, 0.25, chunk)
  if not ok then return common.expected("chunk", rb) end
  if rb == nil and terr then return common.expected("chunk", terr) end
  if not runbook.is_runbook(rb) then return end
  rb.source = rb.source or path
  local pok, r, perr = pcall(task.timeout, 0.25, the_plan, rb)
  if not pok then return common.expected("plan", r) end
  if r == nil and perr then common.expected("plan", perr) end
end
