--- The runbook language: the structure of a runbook is data (so plan mode
--- can show all of it without running anything); its bodies are functions.
---
---   local runbook = require "bomarun.runbook"
---   return runbook{ id = "phase-08", title = "...", decisions = {...},
---     profile = "local", needs = {"cluster", "image"},
---     runbook.phase{"Prerequisites", runbook.step{"8.0", "Verify", function(s) ... end}},
---     runbook.step{"8.1", "Create", mutation = true, timeout = 900, function(s) ... end},
---     runbook.acceptance{"D-011", "Acceptance bar",
---       runbook.item{"D-011.1", "All charms active/idle", function(i) ... end},
---       runbook.item{"D-011.8", "Designate zones", deferred = "D-019: DNS deferred to v2"}},
---   }
local M = {}

local RUNBOOK_MT = {__name = "bomarun.runbook"}

-- The Lua library's own directory (".../lua/"): frames in it are never the
-- runbook's.
local LIB = debug.getinfo(1, "S").source:match("^@(.*/)engine/bomarun/runbook%.lua$")

-- The frame that defined something: from `level` up, the first Lua frame
-- outside the library (C frames such as pcall are passed over).  Nil when
-- the library is reached first: `return runbook{...}` is a tail call, so
-- the runbook file's own frame is gone by the time runbook.new runs (the
-- command line then names the file).
local function frame(level)
  level = level + 1
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return nil end
    if info.what ~= "C" then
      local src = info.source or ""
      if src:sub(1, 1) == "@" and LIB and src:sub(2, #LIB + 1) == LIB then return nil end
      if info.currentline and info.currentline > 0 then return info end
    end
    level = level + 1
  end
end

--- A runbook definition error: reported with exit status 2.  `level` as
--- for error(); `at` (a "file:line") overrides it.  The error is a table
--- {runbook_error = true, message = "file:line: msg", located = boolean}.
local function definition_error(msg, level, at)
  if not at then
    local info = frame((level or 2) + 1)
    at = info and (info.short_src .. ":" .. info.currentline) or nil
  end
  error({runbook_error = true, message = (at and (at .. ": ") or "") .. msg, located = at ~= nil}, 0)
end
M.definition_error = definition_error

local function where(level)
  local info = frame(level + 1)
  if not info then return nil, nil end
  return info.source and info.source:gsub("^@", "") or nil, info.currentline
end

-- An id: a non-empty string without NUL bytes (ids name files and journal keys).
local function check_id(id, what, level)
  if type(id) ~= "string" or id == "" then
    definition_error(what, level + 1)
  end
  if id:find("\0", 1, true) then
    definition_error(string.format("id %q contains a NUL byte", id), level + 1)
  end
end

-- needs: a list of names or a map name -> type name.
local function check_needs(needs, who, level)
  if needs == nil then return end
  if type(needs) ~= "table" then
    definition_error(who .. ": needs must be a list of names or a map name = \"type\", not a " .. type(needs),
      level + 1)
  end
  for k, v in pairs(needs) do
    if math.type(k) == "integer" then
      if type(v) ~= "string" then
        definition_error(who .. ": needs entry " .. k .. " must be a name (string), not a " .. type(v), level + 1)
      end
    elseif type(k) ~= "string" or type(v) ~= "string" then
      definition_error(who .. ": needs must map names to type names, e.g. {cluster = \"string\"}", level + 1)
    end
  end
end

local function check_type(v, kind, what, level)
  if v ~= nil and type(v) ~= kind then
    definition_error(what .. " must be a " .. kind .. ", not a " .. type(v), level + 1)
  end
end

---@class bomarun.StepDef
---@field [1] string            the step id, e.g. "8.1"
---@field [2] string            the title
---@field [3] fun(s: bomarun.StepContext)  the body
---@field mutation? boolean     it changes something (plan mode marks it)
---@field timeout? number       seconds; the body is cancelled after it
---@field needs? string[]|table<string, string>  profile constants it needs
---@field gates? string[]       gates to show in plan mode (s:gate calls are also read from the source)
---@field description? string
---@field diagnose? fun(s: bomarun.StepContext)  runs after a failure to gather evidence
---@field detail? {plan_lines: fun(self): string[]}  more to show in plan mode (a dag graph, say)

---@class bomarun.StepNode  a step as runbook.step builds it
---@field kind "step"
---@field id string
---@field title string
---@field body fun(s: bomarun.StepContext)
---@field mutation boolean
---@field timeout number|nil
---@field needs string[]|table<string, string>|nil
---@field gates string[]|nil
---@field description string|nil
---@field diagnose fun(s: bomarun.StepContext)|nil
---@field detail {plan_lines: fun(self): string[]}|nil
---@field source string|nil     the file that defined it
---@field line integer|nil

---@class bomarun.PhaseNode
---@field kind "phase"
---@field id string|nil
---@field title string
---@field description string|nil
---@field children (bomarun.StepNode|bomarun.AcceptanceNode)[]

--- A step: an id, a title, a body.
---@param t bomarun.StepDef
---@return bomarun.StepNode
function M.step(t)
  if type(t) ~= "table" then definition_error("runbook.step expects a table", 2) end
  local id, title, body = t[1], t[2], t[3] or t.body
  check_id(id, "a step needs an id string first, e.g. runbook.step{\"8.1\", \"Title\", function(s) ... end}", 2)
  if type(title) ~= "string" then definition_error("step " .. id .. " needs a title string", 2) end
  if type(body) ~= "function" then definition_error("step " .. id .. " needs a body function", 2) end
  check_type(t.timeout, "number", "step " .. id .. ": timeout", 2)
  check_type(t.gates, "table", "step " .. id .. ": gates", 2)
  check_type(t.diagnose, "function", "step " .. id .. ": diagnose", 2)
  check_type(t.description, "string", "step " .. id .. ": description", 2)
  check_needs(t.needs, "step " .. id, 2)
  local src, line = where(2)
  return {kind = "step", id = id, title = title, body = body, mutation = t.mutation and true or false,
          timeout = t.timeout, needs = t.needs, gates = t.gates, description = t.description,
          diagnose = t.diagnose, detail = t.detail, source = src, line = line}
end

--- A phase: a title and the steps in it.
---@param t table  {"Title", step, step, ..., id = "optional"}
---@return bomarun.PhaseNode
function M.phase(t)
  if type(t) ~= "table" or type(t[1]) ~= "string" then
    definition_error("runbook.phase expects {\"Title\", step, ...}", 2)
  end
  if t.id ~= nil then check_id(t.id, "phase '" .. t[1] .. "': id must be a non-empty string", 2) end
  check_type(t.description, "string", "phase '" .. t[1] .. "': description", 2)
  local children = {}
  for k = 2, #t do
    local c = t[k]
    if type(c) ~= "table" or (c.kind ~= "step" and c.kind ~= "acceptance") then
      definition_error("phase '" .. t[1] .. "': entry " .. (k - 1) .. " is not a runbook.step or runbook.acceptance", 2)
    end
    children[#children + 1] = c
  end
  return {kind = "phase", id = t.id, title = t[1], description = t.description, children = children}
end

--- Parse "D-019: reason" into decision and reason.
local function parse_deferred(v, id)
  if type(v) == "table" then
    return {decision = v.decision, reason = v.reason or v[1] or ""}
  end
  if type(v) ~= "string" then
    definition_error("item " .. id .. ": deferred must be a string \"DECISION: reason\" or {decision=, reason=}", 3)
  end
  local decision, reason = v:match("^%s*([%w][%w._-]*)%s*:%s*(.*)$")
  if decision and decision:match("%d") then return {decision = decision, reason = reason} end
  return {decision = nil, reason = v}
end

---@class bomarun.ItemDef
---@field [1] string            the item id, e.g. "D-011.1"
---@field [2] string            what it checks
---@field [3]? fun(i: bomarun.StepContext)  the body (ends PASS unless a check or gate failed)
---@field outstanding? string   not done yet: who does what to close it
---@field deferred? string|{decision: string, reason: string}  "D-019: reason"
---@field timeout? number

---@class bomarun.ItemNode  an acceptance item as runbook.item builds it
---@field kind "item"
---@field id string
---@field title string
---@field body fun(i: bomarun.StepContext)|nil
---@field outstanding string|nil
---@field deferred {decision: string|nil, reason: string}|nil
---@field timeout number|nil
---@field needs string[]|table<string, string>|nil
---@field gates string[]|nil
---@field source string|nil
---@field line integer|nil

---@class bomarun.AcceptanceNode  an acceptance bar as runbook.acceptance builds it
---@field kind "acceptance"
---@field id string
---@field title string
---@field items bomarun.ItemNode[]
---@field needs nil
---@field source string|nil
---@field line integer|nil

--- An acceptance item: PASS/FAIL by its body, or OUTSTANDING or DEFERRED.
---@param t bomarun.ItemDef
---@return bomarun.ItemNode
function M.item(t)
  if type(t) ~= "table" then definition_error("runbook.item expects a table", 2) end
  local id, title, body = t[1], t[2], t[3] or t.body
  check_id(id, "an acceptance item needs an id string first", 2)
  if type(title) ~= "string" then definition_error("item " .. id .. " needs a title string", 2) end
  if body == nil and t.outstanding == nil and t.deferred == nil then
    definition_error("item " .. id .. " needs a body function, outstanding = \"...\" or deferred = \"DECISION: reason\"", 2)
  end
  if body ~= nil and type(body) ~= "function" then definition_error("item " .. id .. ": body must be a function", 2) end
  check_type(t.timeout, "number", "item " .. id .. ": timeout", 2)
  check_type(t.outstanding, "string", "item " .. id .. ": outstanding", 2)
  check_needs(t.needs, "item " .. id, 2)
  local src, line = where(2)
  return {kind = "item", id = id, title = title, body = body, outstanding = t.outstanding,
          deferred = t.deferred ~= nil and parse_deferred(t.deferred, id) or nil,
          timeout = t.timeout, needs = t.needs, gates = t.gates, source = src, line = line}
end

--- An acceptance bar: an id (usually the decision), a title, items.
---@param t table  {"D-011", "Acceptance bar", item, item, ...}
---@return bomarun.AcceptanceNode
function M.acceptance(t)
  if type(t) ~= "table" or type(t[1]) ~= "string" or type(t[2]) ~= "string" then
    definition_error("runbook.acceptance expects {\"ID\", \"Title\", item, ...}", 2)
  end
  check_id(t[1], "runbook.acceptance expects {\"ID\", \"Title\", item, ...}", 2)
  local items = {}
  for k = 3, #t do
    if type(t[k]) ~= "table" or t[k].kind ~= "item" then
      definition_error("acceptance " .. t[1] .. ": entry " .. (k - 2) .. " is not a runbook.item", 2)
    end
    items[#items + 1] = t[k]
  end
  local src, line = where(2)
  return {kind = "acceptance", id = t[1], title = t[2], items = items, source = src, line = line}
end

---@class bomarun.RunbookDef
---@field id string
---@field title string
---@field description? string
---@field decisions? string[]
---@field profile? string            the default profile
---@field needs? string[]|table<string, string>  profile constants required (name -> type)
---@field defaults? table            constants used when no profile gives them

---@class bomarun.RunbookUnit  a step or an acceptance bar, in run order
---@field node bomarun.StepNode|bomarun.AcceptanceNode
---@field phase string|nil     the title of its phase

---@class bomarun.Runbook  a runbook as runbook{...} builds it
---@field id string
---@field title string
---@field description string|nil
---@field decisions string[]
---@field profile string|nil
---@field needs string[]|table<string, string>
---@field defaults table
---@field children (bomarun.PhaseNode|bomarun.StepNode|bomarun.AcceptanceNode)[]
---@field units bomarun.RunbookUnit[]
---@field source string|nil    the file that defined it

--- Build a runbook from its definition.
---@param t bomarun.RunbookDef
---@return bomarun.Runbook
function M.new(t)
  if type(t) ~= "table" then definition_error("runbook{...} expects a table", 2) end
  if type(t.id) ~= "string" or not t.id:match("^[%w._-]+$") then
    definition_error("a runbook needs an id of letters, digits, '.', '_' or '-'" ..
      (t.id ~= nil and string.format(" (got %s)", type(t.id) == "string" and string.format("%q", t.id) or ("a " .. type(t.id)))
       or ""), 2)
  end
  if type(t.title) ~= "string" then definition_error("runbook " .. t.id .. " needs a title", 2) end
  check_type(t.decisions, "table", "decisions", 2)
  check_type(t.defaults, "table", "defaults", 2)
  check_type(t.description, "string", "description", 2)
  check_needs(t.needs, "runbook " .. t.id, 2)
  local rb = {id = t.id, title = t.title, description = t.description, decisions = t.decisions or {},
              profile = t.profile, needs = t.needs or {}, defaults = t.defaults or {}, children = {}}
  -- A duplicate is blamed on its own definition (the runbook's file and
  -- line), with where the first one is.
  local seen = {}
  local function claim(node, what)
    local id = node.id
    local at = node.source and node.line and (node.source .. ":" .. node.line) or nil
    local first = seen[id]
    if first then
      definition_error("duplicate id '" .. id .. "' (" .. what .. (first.at and ("; the first is at " .. first.at) or "")
        .. ")", 2, at)
    end
    seen[id] = {at = at}
  end
  for k = 1, #t do
    local c = t[k]
    if type(c) ~= "table" or not (c.kind == "phase" or c.kind == "step" or c.kind == "acceptance") then
      definition_error("runbook " .. t.id .. ": entry " .. k .. " is not a phase, step or acceptance bar", 2)
    end
    rb.children[#rb.children + 1] = c
  end
  -- Units in order: steps and acceptance bars, each with its phase.
  rb.units = {}
  local function add(c, phase)
    if c.kind == "step" then
      claim(c, "step")
      rb.units[#rb.units + 1] = {node = c, phase = phase}
    elseif c.kind == "acceptance" then
      claim(c, "acceptance bar")
      for _, it in ipairs(c.items) do claim(it, "acceptance item") end
      rb.units[#rb.units + 1] = {node = c, phase = phase}
    end
  end
  for _, c in ipairs(rb.children) do
    if c.kind == "phase" then
      for _, s in ipairs(c.children) do add(s, c.title) end
    else
      add(c, nil)
    end
  end
  local src = where(2)
  rb.source = src
  return setmetatable(rb, RUNBOOK_MT)
end

--- Whether v is a runbook built by runbook{...}.
---@param v any
---@return boolean
function M.is_runbook(v) return getmetatable(v) == RUNBOOK_MT end

return setmetatable(M, {__call = function(_, t) return M.new(t) end})
