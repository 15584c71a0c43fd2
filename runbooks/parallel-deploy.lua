-- The seed's parallel deploy (atmosphere, 47 components) as a dependency
-- graph run by bomarun.dag: real dependency edges, the apt and containerd
-- caps, and each component a `sleep` of its measured CI duration scaled
-- down.  It checks the executor the way a site deploy would use it:
-- readiness scheduling, caps, critical path first, and a makespan within 5%
-- of the lower bound the data gives.
--
--   bomarun plan runbooks/parallel-deploy.lua             the graph and its waves
--   bomarun runbooks/parallel-deploy.lua                  run it (~10 s)
--   bomarun runbooks/parallel-deploy.lua --set scale=0.002 --set concurrency=8
--
-- Profile constants (all have defaults): graph (a JSON file in the format of
-- data/atmosphere-deploy-graph.json; relative paths are tried in the
-- current directory, then next to this runbook), scale (seconds of sleep per
-- second of measured duration), concurrency, mode ("fail-fast" or
-- "continue"), tolerance (how far the timing checks may be off: makespan
-- over the lower bound, critical path against its estimate, parallelism
-- under the best; 0.05, the bar; raise it only on a machine too loaded to
-- time sleeps).
local runbook = require "bomarun.runbook"
local dag = require "bomarun.dag"
local json = require "bomarun.json"
local proc = require "bomarun.proc"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local DEFAULT_GRAPH = "data/atmosphere-deploy-graph.json"

local function resolve(path)
  if path:sub(1, 1) == "/" then return path end
  local f = io.open(path, "r")
  if f then
    f:close()
    return path
  end
  return HERE .. "/" .. path
end

-- The graph file: {caps = {...}, components = {{name, depends_on, resources, duration_s}, ...}, lower_bound_s}
local function load_data(path)
  local f, err = io.open(path, "r")
  if not f then return nil, "cannot read the graph " .. path .. ": " .. tostring(err) end
  local text = f:read("a")
  f:close()
  local data, jerr = json.decode(text)
  if type(data) ~= "table" or type(data.components) ~= "table" then
    return nil, "the graph " .. path .. " is not a graph: " .. tostring(jerr or "no components list")
  end
  return data
end

-- Each component sleeps for its measured duration times `scale`.
local function build(data, scale, opts)
  opts = opts or {}
  local g = dag.new{caps = data.caps, name = "atmosphere", concurrency = opts.concurrency, mode = opts.mode}
  for _, c in ipairs(data.components) do
    local seconds = c.duration_s * scale
    g:add{name = c.name, depends_on = c.depends_on, resources = c.resources, estimate = seconds,
          description = c.type,
          run = function(ctx)
            local r, err = proc.run{argv = {"sleep", string.format("%.4f", seconds)}, prefix = ctx.prefix,
                                    timeout = seconds + 30}
            if not r then return nil, err end
            if r.code ~= 0 then return nil, "sleep exited " .. tostring(r.code or r.signal) end
          end}
  end
  return g
end

-- Plan mode: the default graph at its measured durations (seconds).
local graph_detail = {plan_lines = function()
  local path = resolve(DEFAULT_GRAPH)
  local data, err = load_data(path)
  if not data then return {"graph: " .. err} end
  local lines = {"graph " .. path .. " (measured seconds; a run sleeps them times `scale`)"}
  local ok, glines = pcall(function() return build(data, 1, {concurrency = 16}):plan_lines() end)
  if not ok then return {"graph: " .. tostring(glines)} end
  for _, l in ipairs(glines) do lines[#lines + 1] = l end
  if data.lower_bound_s then lines[#lines + 1] = "lower bound with the caps (from the data): " .. data.lower_bound_s .. " s" end
  return lines
end}

-- The last report of this process, for the acceptance items (the schedule
-- is an artifact of the run, too big to capture).
local last = {}

local function report_of(i)
  if not last.report then i:fail("step 2.0 did not run the graph in this process") end
  return last.report
end

local function bound_of(state)
  return state.lower_bound_s * state.scale
end

return runbook{
  id = "parallel-deploy",
  title = "Parallel deploy as a dependency graph (atmosphere, scaled sleeps)",
  description = "47 components with their real edges and caps; each one sleeps its measured CI duration times `scale`.",
  profile = "local",
  needs = {graph = "string", scale = "number", concurrency = "number", mode = "string", tolerance = "number"},
  defaults = {graph = DEFAULT_GRAPH, scale = 0.004, concurrency = 16, mode = "fail-fast", tolerance = 0.05},

  runbook.phase{"Prerequisites",
    runbook.step{"1.0", "Load and check the deploy graph", function(s)
      s:gate(s.env.scale > 0, "scale is a positive number")
      s:gate(s.env.mode == "fail-fast" or s.env.mode == "continue", "mode is fail-fast or continue")
      local path = resolve(s.env.graph)
      local data, err = load_data(path)
      if not data then s:log("%s", err) end
      s:gate(data ~= nil, "the graph file reads and parses")
      local ok, verr = pcall(function() return build(data, s.env.scale):validate() end)
      if not ok then s:log("%s", verr) end
      s:gate(ok, "the graph is valid: known names, caps, no cycle")
      local r = proc.run{argv = {"sleep", "0"}}
      s:gate(r and r.code == 0, "sleep runs")
      local g = build(data, 1)
      local bound = data.lower_bound_s or g:simulate{concurrency = s.env.concurrency}.makespan
      s:capture("graph_path", path)
      s:capture("components", #data.components)
      s:capture("lower_bound_s", bound)
      s:capture("critical_path_s", select(2, g:critical_path()))
      s:capture("scale", s.env.scale)
    end},
  },

  runbook.phase{"Deploy",
    runbook.step{"2.0", "Run the deploy graph", detail = graph_detail, function(s)
      local data = assert(load_data(s.state.graph_path))
      local g = build(data, s.env.scale, {concurrency = s.env.concurrency, mode = s.env.mode})
      s:log("scale %g: lower bound %.2f s, critical path (no caps) %.2f s, concurrency %d, %s",
        s.env.scale, bound_of(s.state), s.state.critical_path_s * s.env.scale, s.env.concurrency, s.env.mode)
      local report = g:run{}
      local lines = dag.report_lines(report)
      s:artifact("dag-schedule.txt", table.concat(lines, "\n") .. "\n")
      local copy = {}
      for k, v in pairs(report) do copy[k] = v end
      copy.components = {}
      for name, rec in pairs(report.components) do
        local c = {}
        for k, v in pairs(rec) do if k ~= "value" then c[k] = v end end
        copy.components[name] = c
      end
      s:artifact("dag-report.json", json.encode(copy, {indent = 2}))
      last.report = report
      s:capture("makespan_s", report.makespan)
      s:capture("parallelism", report.parallelism)
      s:capture("critical_path", table.concat(report.critical_path, " -> "))
      s:log("makespan %.2f s vs scaled lower bound %.2f s (%+.1f%%)", report.makespan, bound_of(s.state),
        (report.makespan / bound_of(s.state) - 1) * 100)
      s:gate(report.ok, "every component finished ok")
      s:gate(report.makespan <= bound_of(s.state) * (1 + s.env.tolerance),
        "makespan within `tolerance` (default 5%) of the scaled lower bound")
    end},
  },

  runbook.acceptance{"DAG", "Dependency-graph executor acceptance",
    runbook.item{"DAG.1", "Every component started after all its dependencies were done", function(i)
      local data = assert(load_data(i.state.graph_path))
      local sched = report_of(i).components
      local late = {}
      for _, c in ipairs(data.components) do
        for _, d in ipairs(c.depends_on) do
          if sched[c.name].start < sched[d].finish - 1e-6 then late[#late + 1] = c.name .. " before " .. d end
        end
      end
      if #late > 0 then i:log("started early: %s", table.concat(late, ", ")) end
      i:check(#late == 0, "no component started before its dependencies finished")
    end},
    runbook.item{"DAG.2", "No resource cap was exceeded", function(i)
      local data = assert(load_data(i.state.graph_path))
      local sched = report_of(i).components
      for res, cap in pairs(data.caps) do
        local edges = {}
        for _, c in ipairs(data.components) do
          for _, r in ipairs(c.resources) do
            if r == res then
              edges[#edges + 1] = {sched[c.name].start, 1}
              edges[#edges + 1] = {sched[c.name].finish, -1}
            end
          end
        end
        table.sort(edges, function(a, b) if a[1] ~= b[1] then return a[1] < b[1] end return a[2] < b[2] end)
        local held, peak = 0, 0
        for _, e in ipairs(edges) do
          held = held + e[2]
          peak = math.max(peak, held)
        end
        i:log("%s: at most %d holder(s) at once (cap %d)", res, peak, cap)
        i:check(peak <= cap, "holders of each resource never exceeded its cap")
      end
    end},
    runbook.item{"DAG.3", "Makespan within tolerance (5%) of the lower bound with the caps", function(i)
      local bound = bound_of(i.state)
      local m = report_of(i).makespan
      i:log("makespan %.2f s vs bound %.2f s (%+.1f%%)", m, bound, (m / bound - 1) * 100)
      i:check(m <= bound * (1 + i.env.tolerance), "makespan <= (1 + tolerance) x scaled lower bound")
    end},
    runbook.item{"DAG.4", "The measured critical path matches the graph's", function(i)
      local d = report_of(i)
      local want = i.state.critical_path_s * i.state.scale
      i:log("critical path %.2f s (%s) vs %.2f s from the estimates", d.critical_path_length,
        table.concat(d.critical_path, " -> "), want)
      i:check(math.abs(d.critical_path_length - want) <= want * i.env.tolerance,
        "measured critical path within `tolerance` of the estimate")
    end},
    runbook.item{"DAG.5", "Parallelism is what the caps allow (sum of durations / makespan)", function(i)
      local d = report_of(i)
      local best = d.sum_durations / bound_of(i.state)
      i:log("parallelism %.2fx (at best %.2fx with the caps)", d.parallelism, best)
      i:check(d.parallelism >= best * (1 - i.env.tolerance), "parallelism within `tolerance` of the best the caps allow")
    end},
  },
}
