--- Plan mode: the whole runbook shown without running a body.
---
--- What a step declares as data (title, mutation, timeout, `gates = {...}`,
--- diagnose) is shown as it is.  The gates, checks, cleanups and polls a
--- body calls are found by reading the body's source text (never by running
--- it): calls written as `s:gate(cond, "message")`, `s:check(...)`,
--- `s:cleanup("what", fn)` and `s:poll{..., what = "..."}`.  That reading is
--- best-effort: a call made through a helper function, a message built at
--- run time, or a method called on another name than the body's parameter
--- followed by `:gate(` is shown as written or not at all; declare such gates
--- in the step's `gates` list to have plan mode show them.
local json = require "bomarun.json"
local log = require "bomarun.log"
local profile = require "bomarun.profile"
local report = require "bomarun.report"

local M = {}

---@class bomarun.PlanUnit  a step or acceptance bar as the run_start event lists it
---@field kind "step"|"acceptance"
---@field id string
---@field title string
---@field phase string|nil
---@field mutation? boolean
---@field timeout? number
---@field items? {id: string, title: string, outstanding: string|nil, deferred: {decision: string|nil, reason: string}|nil}[]

--- The runbook's units as plain data (for the journal's run_start event).
---@param rb bomarun.Runbook
---@return bomarun.PlanUnit[]
function M.describe(rb)
  local plan = {}
  for _, u in ipairs(rb.units) do
    local n = u.node
    if n.kind == "step" then
      plan[#plan + 1] = {kind = "step", id = n.id, title = n.title, phase = u.phase, mutation = n.mutation,
                         timeout = n.timeout}
    else
      local items = {}
      for _, it in ipairs(n.items) do
        items[#items + 1] = {id = it.id, title = it.title, outstanding = it.outstanding, deferred = it.deferred}
      end
      plan[#plan + 1] = {kind = "acceptance", id = n.id, title = n.title, phase = u.phase, items = items}
    end
  end
  return plan
end

-- Source scanning for plan mode: gates, cleanups and polls named in a body.
local source_cache = {}
local function source_lines(path)
  if source_cache[path] == nil then
    local lines = {}
    local f = path and io.open(path, "r")
    if f then
      for l in f:lines() do lines[#lines + 1] = l end
      f:close()
    end
    source_cache[path] = lines
  end
  return source_cache[path]
end

-- The second argument of a call, as written: a lone string literal is shown
-- unquoted, anything else as its source text.
local function second_arg(args)
  local inner = args:sub(2, -2)
  local depth, k, n, quote = 0, 1, #inner, nil
  while k <= n do
    local c = inner:sub(k, k)
    if quote then
      if c == "\\" then k = k + 1 elseif c == quote then quote = nil end
    elseif c == '"' or c == "'" then quote = c
    elseif c == "(" or c == "{" or c == "[" then depth = depth + 1
    elseif c == ")" or c == "}" or c == "]" then depth = depth - 1
    elseif c == "," and depth == 0 then
      local rest = inner:sub(k + 1):gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s*\n%s*", " ")
      local lit = rest:match('^"([^"]*)"$') or rest:match("^'([^']*)'$")
      return lit or rest
    end
    k = k + 1
  end
  return nil
end

local function first_arg(args)
  local lit = args:match('^%(%s*"([^"]*)"%s*[,)]') or args:match("^%(%s*'([^']*)'%s*[,)]")
  if lit then return lit end
  local inner = args:sub(2, -2)
  return (inner:match("^(.-),%s*function") or inner):gsub("%s*\n%s*", " ")
end

local function scan_body(fn)
  if type(fn) ~= "function" then return {} end
  local info = debug.getinfo(fn, "S")
  if not info.source or info.source:sub(1, 1) ~= "@" then return {} end
  local lines = source_lines(info.source:sub(2))
  local last = math.min(info.lastlinedefined, #lines)
  if last < info.linedefined then return {} end
  local text = table.concat(lines, "\n", info.linedefined, last)
  local found = {}
  local function line_of(pos)
    local _, nl = text:sub(1, pos):gsub("\n", "")
    return info.linedefined + nl
  end
  local pos = 1
  while true do
    local a, b, kind, open = text:find(":(%a+)%s*([%({])", pos)
    if not a then break end
    local args = text:match(open == "(" and "^%b()" or "^%b{}", b)
    if args and (kind == "gate" or kind == "check") then
      local msg = second_arg(args)
      if msg then found[#found + 1] = {kind = kind, text = msg, line = line_of(a)} end
    elseif args and kind == "cleanup" then
      found[#found + 1] = {kind = "cleanup", text = first_arg(args), line = line_of(a)}
    elseif args and kind == "poll" then
      local what = args:match('what%s*=%s*"([^"]*)"') or args:match("what%s*=%s*'([^']*)'")
      found[#found + 1] = {kind = "poll", text = what or "(unnamed)", line = line_of(a)}
    end
    pos = b + 1
  end
  return found
end

-- Plan mode -------------------------------------------------------------------

--- Print the plan (plan mode) on the console.
---@param rb bomarun.Runbook
---@param env table               the profile constants (not shown)
---@param profile_name? string
---@param profile_path? string
---@param problems string[]       what the profile lacks
---@param sel table<string, string>  id -> why it is skipped (runner.select)
function M.print(rb, env, profile_name, profile_path, problems, sel)
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(string.format("PLAN %s -- %s", rb.id, rb.title))
  if rb.description then add("  " .. rb.description:gsub("\n", "\n  ")) end
  if #rb.decisions > 0 then add("  decisions: " .. table.concat(rb.decisions, ", ")) end
  add("  profile: " .. (profile_name and (profile_name .. " (" .. profile_path .. ")") or "(none: runbook defaults)"))
  local _, order = profile.needs_map(rb.needs)
  if #order > 0 then add("  needs: " .. table.concat(order, ", ")) end
  local nsteps, nmut, nitems = 0, 0, 0
  local phase
  for _, u in ipairs(rb.units) do
    local n = u.node
    if u.phase ~= phase and u.phase then add("  == " .. u.phase) end
    phase = u.phase
    if n.kind == "step" then
      nsteps = nsteps + 1
      local flags = {}
      if n.mutation then nmut = nmut + 1; flags[#flags + 1] = log.paint("yellow", "MUTATION") end
      if n.timeout then flags[#flags + 1] = "timeout " .. n.timeout .. "s" end
      if sel[n.id] then flags[#flags + 1] = "skip: " .. sel[n.id] end
      add(string.format("     %-8s %s%s", n.id, n.title, #flags > 0 and ("   [" .. table.concat(flags, ", ") .. "]") or ""))
      for _, g in ipairs(n.gates or {}) do add("              gate: " .. g) end
      for _, f in ipairs(scan_body(n.body)) do
        add(string.format("              %s: %s   (line %d)", f.kind, f.text, f.line))
      end
      if n.diagnose then add("              diagnose on failure") end
      if n.detail and n.detail.plan_lines then
        for _, l in ipairs(n.detail:plan_lines()) do add("              " .. l) end
      end
    else
      add(string.format("     %s %s (acceptance bar)", n.id, n.title))
      for _, it in ipairs(n.items) do
        nitems = nitems + 1
        local what
        if it.deferred then what = "DEFERRED by " .. report.deferred_text(it.deferred)
        elseif it.outstanding then what = "OUTSTANDING: " .. it.outstanding
        else what = "checked by its body" end
        if sel[it.id] then what = what .. "   [skip: " .. sel[it.id] .. "]" end
        add(string.format("       %-10s %s -- %s", it.id, it.title, what))
        for _, f in ipairs(scan_body(it.body)) do
          add(string.format("                  %s: %s   (line %d)", f.kind, f.text, f.line))
        end
      end
    end
  end
  add(string.format("  %d step%s (%d mutation%s), %d acceptance item%s; nothing was run.",
    nsteps, nsteps == 1 and "" or "s", nmut, nmut == 1 and "" or "s", nitems, nitems == 1 and "" or "s"))
  for _, p in ipairs(problems) do add(log.paint("red", "  PROBLEM: ") .. p) end
  local _ = env
  log.console(json.escape_utf8(table.concat(out, "\n")))
end


M.scan_body = scan_body

return M
