-- The seed's full deploy as a dependency graph: 47 components with their
-- real edges and caps (runbooks/data/atmosphere-deploy-graph.json), each
-- one `sleep` of its measured CI duration times SCALE, run by bomarun.dag.
-- The makespan is compared with the lower bound the data gives (2493 s
-- unscaled, which accounts for the caps), with the critical path without
-- caps, and with running the components one after another.
--
--   build/bomarun bench/dag.lua [SCALE] [--sequential] [--concurrency N]
--
-- SCALE is seconds of sleep per second of measured duration (default 0.01:
-- 1 s per 100 s, a ~25 s run).  --sequential also runs the graph with
-- concurrency 1 and times it (another ~49 s at the default scale); without
-- it the sequential figure is the sum of the measured component durations.
local dag = require "bomarun.dag"
local json = require "bomarun.json"
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local bench_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local common = dofile(bench_dir .. "/common.lua")
common.name = "dag"

local GRAPH = bench_dir .. "/../runbooks/data/atmosphere-deploy-graph.json"

local scale, sequential, concurrency = 0.01, false, 16
do
  local k = 1
  while arg[k] do
    local a = arg[k]
    if a == "--sequential" then
      sequential = true
    elseif a == "--concurrency" then
      k = k + 1
      concurrency = common.count_arg(arg[k], nil, "--concurrency")
    else
      scale = tonumber(a)
      if not scale or scale <= 0 then common.fail("SCALE must be a positive number, got '" .. a .. "'") end
    end
    k = k + 1
  end
end

local function load()
  local f, err = io.open(GRAPH, "r")
  if not f then common.fail("cannot read " .. GRAPH .. ": " .. tostring(err)) end
  local data, jerr = json.decode(f:read("a"))
  f:close()
  if not data then common.fail(GRAPH .. ": " .. jerr) end
  return data
end

local function build(data, s)
  local g = dag.new{caps = data.caps, name = "atmosphere"}
  for _, c in ipairs(data.components) do
    local seconds = c.duration_s * s
    g:add{name = c.name, depends_on = c.depends_on, resources = c.resources, estimate = seconds,
          run = function()
            local r, err = proc.run{argv = {"sleep", string.format("%.4f", seconds)}, quiet = true,
                                    timeout = seconds + 60}
            if not r then return nil, err end
            if r.code ~= 0 then return nil, "sleep exited " .. tostring(r.code) end
          end}
  end
  return g
end

local function pct(a, b)
  return string.format("%+.1f%%", (a / b - 1) * 100)
end

local data = load()
local g = build(data, scale)
local sim = g:simulate{concurrency = concurrency}
local _, cp_est = g:critical_path()
local caps = {}
for name, cap in pairs(data.caps) do caps[#caps + 1] = name .. "=" .. cap end
table.sort(caps)

print(string.format("dag: %d components, caps %s, concurrency %d; each a `sleep` of its CI duration x %g",
  #data.components, table.concat(caps, ", "), concurrency, scale))
local report = g:run{concurrency = concurrency, quiet = true}
if not report.ok then
  common.fail("the graph did not finish: " .. table.concat(dag.summary_lines(report), "; "))
end

-- The schedule: measured start/finish next to the ideal schedule (the same
-- scheduler on the measured CI durations, no overheads), in scaled seconds.
print("")
print(string.format("dag: schedule in scaled seconds (divide by %g for CI seconds); " ..
  "ideal = the same scheduler simulated on the CI durations", scale))
local by_name = {}
for _, c in ipairs(data.components) do by_name[c.name] = c end
print(string.format("  %-32s %-16s %8s %8s %8s %8s %8s", "component", "resources", "start", "finish",
  "ideal s", "ideal f", "waited"))
for _, name in ipairs(report.order) do
  local rec, ideal, c = report.components[name], sim.components[name], by_name[name]
  print(string.format("  %-32s %-16s %8.3f %8.3f %8.3f %8.3f %8.3f", name, table.concat(c.resources, ","),
    rec.start, rec.finish, ideal.start, ideal.finish, rec.waited))
end
print("")

local bound = data.lower_bound_s * scale
local cp_nocaps = data.critical_path_s_without_caps * scale
local seq_sum = data.sum_of_durations_s * scale
print(string.format("dag: lower bound with the caps %d s -> %.2f s scaled (the simulated schedule: %.2f s)",
  data.lower_bound_s, bound, sim.makespan))
print(string.format("dag: critical path without caps %d s -> %.2f s scaled (from the estimates %.2f s); measured %.2f s: %s",
  data.critical_path_s_without_caps, cp_nocaps, cp_est, report.critical_path_length,
  table.concat(report.critical_path, " -> ")))
local seq_label
if sequential then
  local g1 = build(data, scale)
  local t0 = task.now()
  local r1 = g1:run{concurrency = 1, quiet = true}
  local took = task.now() - t0
  if not r1.ok then common.fail("the sequential run did not finish") end
  seq_label = string.format("%.2f s measured (concurrency 1)", took)
  print(string.format("dag: sequential %d s -> %.2f s scaled; measured with concurrency 1: %.2f s",
    data.sum_of_durations_s, seq_sum, took))
  seq_sum = took
else
  seq_label = string.format("%.2f s", seq_sum)
  print(string.format("dag: sequential %d s -> %.2f s scaled; sum of the measured durations in this run: %.2f s",
    data.sum_of_durations_s, seq_sum, report.sum_durations))
end
print(string.format("dag: parallelism %.2fx (sum of measured durations / makespan); " ..
  "%.2fx for the CI durations at the lower bound",
  report.parallelism, data.sum_of_durations_s / data.lower_bound_s))
print(string.format("dag: makespan %.2f s is %s the 5%% bar (%s over the lower bound)",
  report.makespan, report.makespan <= bound * 1.05 and "WITHIN" or "OVER", pct(report.makespan, bound)))
print(string.format("dag: makespan %.2f s vs lower bound %.2f s (%s); critical path (no caps) %.2f s; " ..
  "sequential %s; %.2fx faster than sequential",
  report.makespan, bound, pct(report.makespan, bound), cp_nocaps, seq_label, seq_sum / report.makespan))
