--- bomarun.dag's graph: building it (dag.new, g:add), checking it
--- (unknown dependencies, cycles) and cutting subsets.  The Graph class is
--- defined here; bomarun.dag (init.lua) adds the methods that plan and run.
local util = require "bomarun.dag.util"

local fail, check_keys, is_count, name_list = util.fail, util.check_keys, util.is_count, util.name_list

local M = {}

---@class bomarun.DagGraph
---@field name string
---@field caps table<string, integer>
local Graph = {}
Graph.__index = Graph
M.Graph = Graph

--- A new, empty graph.  `caps` names the resources components may need and
--- how many holders each allows at once; `concurrency` and `mode` are the
--- defaults of g:run (and what plan mode's estimate uses); `name` labels
--- log lines and journal events (default "graph").
---@param opts? {caps?: table<string, integer>, name?: string, concurrency?: integer, mode?: "fail-fast"|"continue"}
---@return bomarun.DagGraph
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail("dag.new expects a table of options", 2) end
  check_keys(opts, {caps = true, name = true, concurrency = true, mode = true}, "dag.new", 2)
  local caps = {}
  if opts.caps ~= nil and type(opts.caps) ~= "table" then fail("dag.new: caps must be a table {name = count}", 2) end
  for k, v in pairs(opts.caps or {}) do
    if type(k) ~= "string" or k == "" then fail("dag.new: caps must be a table {name = count}", 2) end
    if not is_count(v) then
      fail(string.format("dag.new: the cap of resource '%s' must be an integer >= 1, not %s", k, tostring(v)), 2)
    end
    caps[k] = v
  end
  if opts.name ~= nil and type(opts.name) ~= "string" then fail("dag.new: name must be a string", 2) end
  if opts.concurrency ~= nil and not is_count(opts.concurrency) then
    fail("dag.new: concurrency must be an integer >= 1", 2)
  end
  if opts.mode ~= nil and not util.MODES[opts.mode] then
    fail(string.format("dag.new: unknown mode '%s' (expected \"fail-fast\" or \"continue\")", tostring(opts.mode)), 2)
  end
  return setmetatable({name = opts.name or "graph", caps = caps, list = {}, by_name = {}, assumed = {},
                       defaults = {concurrency = opts.concurrency, mode = opts.mode}}, Graph)
end

local ADD_KEYS = util.set_of{"name", "run", "depends_on", "resources", "pre", "pre_depends_on", "pre_resources",
                             "estimate", "pre_estimate", "description", "timeout"}

-- The checks of g:add that need no graph state; `what` names the component.
local function check_spec(spec, what)
  if type(spec.run) ~= "function" then fail(what .. " needs run = function(c) ... end", 3) end
  if spec.pre ~= nil and type(spec.pre) ~= "function" then fail(what .. ": pre must be a function", 3) end
  if spec.pre == nil and (spec.pre_depends_on ~= nil or spec.pre_resources ~= nil or spec.pre_estimate ~= nil) then
    fail(what .. ": pre_depends_on, pre_resources and pre_estimate need a pre function", 3)
  end
  for _, k in ipairs{"estimate", "pre_estimate"} do
    if spec[k] ~= nil and (type(spec[k]) ~= "number" or spec[k] < 0 or spec[k] ~= spec[k]) then
      fail(what .. ": " .. k .. " must be a number of seconds >= 0", 3)
    end
  end
  if spec.timeout ~= nil and (type(spec.timeout) ~= "number" or spec.timeout <= 0) then
    fail(what .. ": timeout must be a number of seconds > 0", 3)
  end
  if spec.description ~= nil and type(spec.description) ~= "string" then
    fail(what .. ": description must be a string", 3)
  end
end

--- Add a component.  Raises on a duplicate name, a bad field, or a resource
--- without a cap or bigger than its cap.  Returns the graph.
---@param spec bomarun.DagComponentSpec
---@return bomarun.DagGraph
function Graph:add(spec)
  if type(spec) ~= "table" then fail("g:add expects a table {name = ..., run = function ... end}", 2) end
  local name = spec.name
  if type(name) ~= "string" or name == "" then fail("g:add: a component needs a name string", 2) end
  local what = "component '" .. name .. "'"
  check_keys(spec, ADD_KEYS, what, 2)
  if self.by_name[name] then fail("duplicate component name '" .. name .. "'", 2) end
  if self.assumed[name] then fail(what .. " is outside this subset (assumed done)", 2) end
  check_spec(spec, what)
  local depends_on = name_list(spec.depends_on, what .. ": depends_on", 2)
  local c = {
    name = name, index = #self.list + 1, run = spec.run, pre = spec.pre,
    depends_on = depends_on,
    pre_depends_on = spec.pre and (spec.pre_depends_on ~= nil
      and name_list(spec.pre_depends_on, what .. ": pre_depends_on", 2) or depends_on) or nil,
    resources = util.resource_list(spec.resources, self.caps, what, 2),
    pre_resources = spec.pre and util.resource_list(spec.pre_resources, self.caps, what .. " (pre)", 2) or nil,
    estimate = spec.estimate, pre_estimate = spec.pre_estimate, description = spec.description,
    timeout = spec.timeout,
  }
  self.list[#self.list + 1] = c
  self.by_name[name] = c
  self._checked = nil
  return self
end

--- The component names in the order they were added.
---@return string[]
function Graph:names()
  local out = {}
  for k, c in ipairs(self.list) do out[k] = c.name end
  return out
end

--- Every dependency of a component: depends_on, then pre_depends_on.
---@param c table  a component as g:add stores it
---@return string[]
function M.all_deps(c)
  local out, seen = {}, {}
  for _, list in ipairs{c.depends_on, c.pre_depends_on or {}} do
    for _, d in ipairs(list) do
      if not seen[d] then
        seen[d] = true
        out[#out + 1] = d
      end
    end
  end
  return out
end

-- Depth-first search from every component; a back edge closes a cycle,
-- returned in full (nil: no cycle).  Fills `order` with the components,
-- dependencies first.
local function find_cycle(self, order)
  local colour, stack = {}, {}
  local function visit(c)
    colour[c.name] = "grey"
    stack[#stack + 1] = c.name
    for _, d in ipairs(M.all_deps(c)) do
      local dc = self.by_name[d]
      if dc then
        if colour[d] == "grey" then
          local from = 1
          for k = 1, #stack do
            if stack[k] == d then from = k end
          end
          local cyc = table.move(stack, from, #stack, 1, {})
          cyc[#cyc + 1] = d
          return cyc
        elseif colour[d] == nil then
          local cyc = visit(dc)
          if cyc then return cyc end
        end
      end
    end
    stack[#stack] = nil
    colour[c.name] = "black"
    order[#order + 1] = c
  end
  for _, c in ipairs(self.list) do
    if colour[c.name] == nil then
      local cyc = visit(c)
      if cyc then return cyc end
    end
  end
end

--- Check unknown dependencies and cycles (raising at `level`, counted from
--- the caller of order); return the components in a topological order
--- (dependencies first, otherwise in insertion order).  Cached until the
--- next g:add.
---@param g bomarun.DagGraph
---@param level? integer
---@return table[]
function M.order(g, level)
  if g._checked then return g._checked end
  level = (level or 1) + 1
  for _, c in ipairs(g.list) do
    for _, pair in ipairs{{c.depends_on, "depends on"}, {c.pre_depends_on or {}, "has a pre that depends on"}} do
      for _, d in ipairs(pair[1]) do
        if not g.by_name[d] and not g.assumed[d] then
          fail(string.format("component '%s' %s '%s', which is not in the graph", c.name, pair[2], d), level)
        end
      end
    end
  end
  local order = {}
  local cyc = find_cycle(g, order)
  if cyc then fail("dependency cycle: " .. table.concat(cyc, " -> ") .. " (each depends on the next)", level) end
  g._checked = order
  return order
end

--- Check the graph: every dependency exists (or is assumed done by a
--- subset) and there is no cycle.  Raises with a message naming the
--- component or the whole cycle; returns the graph.  g:run, g:plan_lines
--- and g:subset check first.
---@return bomarun.DagGraph
function Graph:validate()
  M.order(self, 2)
  return self
end

-- The names `names` and, transitively, everything they depend on.
local function closure(self, names)
  local want = {}
  local function close(n)
    want[n] = true
    for _, d in ipairs(M.all_deps(self.by_name[n])) do
      if self.by_name[d] and not want[d] then close(d) end
    end
  end
  for _, n in ipairs(names) do close(n) end
  return want
end

--- A graph of some components.  By default: the named ones plus everything
--- they depend on, transitively (depends_on and pre_depends_on), so it runs
--- on its own.  With only = true: just the named ones; whatever they depend
--- on outside the subset is assumed done (listed in report.assumed and
--- logged), so no gate waits for a component that will never run.
---@param spec {[integer]: string, only?: boolean}
---@return bomarun.DagGraph
function Graph:subset(spec)
  if type(spec) ~= "table" then fail("g:subset expects {\"name\", ..., only = false}", 2) end
  for k in pairs(spec) do
    if k ~= "only" and math.type(k) ~= "integer" then
      fail("g:subset: unknown field '" .. tostring(k) .. "' (expected names and only = boolean)", 2)
    end
  end
  M.order(self, 2)
  local names = name_list({table.unpack(spec)}, "g:subset", 2)
  if #names == 0 then fail("g:subset: name at least one component", 2) end
  for _, n in ipairs(names) do
    if not self.by_name[n] then
      if self.assumed[n] then fail("g:subset: component '" .. n .. "' is outside this graph's subset", 2) end
      fail("g:subset: no component named '" .. n .. "'", 2)
    end
  end
  local want = spec.only and util.set_of(names) or closure(self, names)
  local sub = setmetatable({name = self.name, caps = self.caps, list = {}, by_name = {}, assumed = {},
                            defaults = self.defaults}, Graph)
  for n in pairs(self.assumed) do sub.assumed[n] = true end
  for _, c in ipairs(self.list) do
    if want[c.name] then
      sub.list[#sub.list + 1] = c
      sub.by_name[c.name] = c
      for _, d in ipairs(M.all_deps(c)) do
        if not want[d] then sub.assumed[d] = true end
      end
    end
  end
  return sub
end

--- The names outside this subset that its components depend on (assumed
--- done), sorted.
---@return string[]
function Graph:assumed_done()
  local out = {}
  for n in pairs(self.assumed) do out[#out + 1] = n end
  table.sort(out)
  return out
end

return M
