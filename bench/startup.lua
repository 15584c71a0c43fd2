-- Start-up cost of an empty runbook, against lua5.4 and ansible-playbook.
--
--   build/bomarun bench/startup.lua [N]      N runs of bomarun and lua5.4
--                                            (default 30); ansible-playbook 3
--
-- Each command runs sequentially, after one untimed warm-up run; the wall
-- time of a run is proc.run's r.duration (spawn to exit and pipes closed).
local bench_dir = arg[0]:match("^(.*)/[^/]*$") or "."
local common = dofile(bench_dir .. "/common.lua")
common.name = "startup"

local BAR_MS = 20
local ANSIBLE_RUNS = 3
local PLAY = "- hosts: localhost\n  gather_facts: false\n  tasks: []\n"
local ANSIBLE_ENV = {
  ANSIBLE_NOCOLOR = "1",
  ANSIBLE_RETRY_FILES_ENABLED = "0",
  ANSIBLE_LOCALHOST_WARNING = "0",
  ANSIBLE_INVENTORY_UNPARSED_WARNING = "0",
}

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- One warm-up run, then n timed runs; returns the durations in seconds.
-- check(r) may fail the benchmark when a run did not do its work.
local function time_runs(what, opts, n, check)
  common.run_ok(what, opts)
  local durations = {}
  for i = 1, n do
    local r = common.run_ok(what, opts)
    if check then check(r) end
    durations[i] = r.duration
  end
  return durations
end

local function count_run_dirs(runs)
  local r = common.run_ok("find", {argv = {"find", runs, "-mindepth", "2", "-maxdepth", "2",
                                           "-name", "report.json"}})
  local _, lines = r.stdout:gsub("\n", "")
  return lines
end

local function bomarun_runs(bomarun, n, tmp)
  local runs = tmp .. "/runs"
  local opts = {argv = {bomarun, bench_dir .. "/empty-runbook.lua", "--run-dir", runs}}
  local t = time_runs("bomarun empty runbook", opts, n, function(r)
    if not r.stdout:find("PASSED", 1, true) then
      common.fail("bomarun: no PASSED in\n" .. r.stdout)
    end
  end)
  local dirs = count_run_dirs(runs)
  if dirs ~= n + 1 then
    common.fail(string.format("bomarun: %d runs made %d run directories with a report.json", n + 1, dirs))
  end
  return t
end

local function ansible_runs(tmp)
  local play = tmp .. "/empty-play.yml"
  write_file(play, PLAY)
  local opts = {argv = {"ansible-playbook", "-i", "localhost,", "-c", "local", play}, env = ANSIBLE_ENV}
  return time_runs("ansible-playbook empty play", opts, ANSIBLE_RUNS, function(r)
    if not r.stdout:find("PLAY RECAP", 1, true) then
      common.fail("ansible-playbook: no PLAY RECAP in\n" .. r.stdout)
    end
  end)
end

local function row(label, t)
  local median, min = common.ms(common.median(t)), common.ms(common.min(t))
  print(string.format("  %-36s %5d %11s %9s", label, #t, median, min))
end

-- t: durations of b (bomarun runbook), h (bomarun -e ''), l (lua5.4),
-- a (ansible-playbook).
local function report(n, t)
  local bm, lm, am = common.median(t.b), common.median(t.l), common.median(t.a)
  print(string.format("startup: %d sequential runs of each (ansible-playbook %d) after one warm-up; "
                      .. "wall time from proc.run's duration", n, #t.a))
  print(string.format("  %-36s %5s %11s %9s", "command", "runs", "median ms", "min ms"))
  row("bomarun bench/empty-runbook.lua", t.b)
  row("bomarun -e '' (host only, reference)", t.h)
  row("lua5.4 -e ''", t.l)
  row("ansible-playbook (empty play, local)", t.a)
  print(string.format("startup: bomarun median %s ms (min %s), lua5.4 %s ms (min %s), "
                      .. "ansible-playbook %s ms (min %s)",
                      common.ms(bm), common.ms(common.min(t.b)), common.ms(lm), common.ms(common.min(t.l)),
                      common.ms(am), common.ms(common.min(t.a))))
  print(string.format("startup: ansible/bomarun = %s, bomarun/lua5.4 = %s",
                      common.ratio(am, bm), common.ratio(bm, lm)))
  print(string.format("startup: bomarun median %s ms is %s the %d ms bar",
                      common.ms(bm), bm * 1000 < BAR_MS and "UNDER" or "OVER", BAR_MS))
end

local function main(args)
  local n = common.count_arg(args[1], 30, "N")
  local bomarun = os.getenv("BOMARUN") or (bench_dir .. "/../build/bomarun")
  common.with_tmpdir(function(tmp)
    local b = bomarun_runs(bomarun, n, tmp)
    local h = time_runs("bomarun -e ''", {argv = {bomarun, "-e", ""}}, n)
    local l = time_runs("lua5.4 -e ''", {argv = {"lua5.4", "-e", ""}}, n)
    local a = ansible_runs(tmp)
    report(n, {b = b, h = h, l = l, a = a})
  end)
  return 0
end

return main(arg)
