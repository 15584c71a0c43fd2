-- Many short subprocesses, a bounded number at a time: bomarun's
-- proc.run + task.parallel against `xargs -P`.
--
--   build/bomarun bench/procs.lua [N] [P]    N runs of `true`, P at a time
--                                            (defaults 200 and 20)
--
-- Each side runs REPS times (alternating, after one untimed warm-up each);
-- the median wall time is reported.  bomarun's batch is timed in-process
-- with task.now() around task.parallel; xargs's batch is the whole xargs
-- command, timed with proc.run's r.duration.
local proc = require "bomarun.proc"
local task = require "bomarun.task"
local bench_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local common = dofile(bench_dir .. "/common.lua")
common.name = "procs"

local REPS = 3

local function run_true()
  local r, err = proc.run{argv = {"true"}, quiet = true}
  if not r then common.fail("proc.run: " .. tostring(err)) end
  return r
end

local function check_all_zero(results, n)
  local bad = 0
  for i = 1, n do
    if not (results[i] and results[i].code == 0) then bad = bad + 1 end
  end
  if bad > 0 then
    common.fail(string.format("%d of %d runs of `true` through proc.run did not exit 0", bad, n))
  end
end

-- One batch through bomarun; returns its wall time and the median
-- duration of a single child.
local function bomarun_batch(n, p)
  local fns = {}
  for i = 1, n do fns[i] = run_true end
  local t0 = task.now()
  local results = task.parallel(fns, {limit = p})
  local wall = task.now() - t0
  check_all_zero(results, n)
  local each = {}
  for i = 1, n do each[i] = results[i].duration end
  return wall, common.median(each)
end

local function xargs_batch(_, p, input)
  local r = common.run_ok("xargs", {argv = {"xargs", "-P", tostring(p), "-I{}", "true"}, stdin = input})
  return r.duration
end

local function lines(n)
  local t = {}
  for i = 1, n do t[i] = tostring(i) end
  return table.concat(t, "\n") .. "\n"
end

local function report(n, p, b, each, x)
  local bm, xm = common.median(b), common.median(x)
  local function all(t)
    local s = {}
    for i, v in ipairs(t) do s[i] = common.ms(v) end
    return table.concat(s, ", ")
  end
  print(string.format("procs: %d runs of `true`, %d at a time, %d reps each after one warm-up", n, p, #b))
  print(string.format("  bomarun proc.run + task.parallel{limit=%d}: %s ms", p, all(b)))
  print(string.format("  xargs -P %d -I{} true (whole command):     %s ms", p, all(x)))
  print(string.format("  bomarun: median single child %s ms from spawn to exit and pipes closed",
                      common.ms(each)))
  print(string.format("procs: bomarun median %s ms (%s ms/proc), xargs -P %d median %s ms (%s ms/proc)",
                      common.ms(bm), common.ms(bm / n), p, common.ms(xm), common.ms(xm / n)))
  print(string.format("procs: bomarun/xargs = %s", common.ratio(bm, xm)))
end

local function main(args)
  local n = common.count_arg(args[1], 200, "N")
  local p = common.count_arg(args[2], 20, "P")
  local input = lines(n)
  bomarun_batch(n, p)
  xargs_batch(n, p, input)
  local b, x, each = {}, {}, {}
  for i = 1, REPS do
    b[i], each[i] = bomarun_batch(n, p)
    x[i] = xargs_batch(n, p, input)
  end
  report(n, p, b, common.median(each), x)
  return 0
end

return main(arg)
