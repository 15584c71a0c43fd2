-- Helpers shared by the benchmarks (loaded with dofile, not require, so
-- bench/ never has to be on package.path).
local proc = require "bomarun.proc"

local M = {}

--- The benchmark's name, the prefix of its failure messages.
M.name = "bench"

--- Stop the benchmark: bomarun prints "bomarun: NAME: MSG" and exits 1.
function M.fail(msg)
  error({message = M.name .. ": " .. msg}, 0)
end

--- A positive integer from a command-line argument, or `default`.
function M.count_arg(value, default, name)
  if value == nil then return default end
  local n = math.tointeger(tonumber(value))
  if not n or n < 1 then M.fail(name .. " must be a positive integer, got '" .. value .. "'") end
  return n
end

local function sorted(xs)
  local copy = table.move(xs, 1, #xs, 1, {})
  table.sort(copy)
  return copy
end

function M.median(xs)
  local s, n = sorted(xs), #xs
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

function M.min(xs)
  return sorted(xs)[1]
end

--- Milliseconds from seconds, with about three significant figures.
function M.ms(seconds)
  local v = seconds * 1000
  if v >= 100 then return string.format("%.0f", v) end
  if v >= 10 then return string.format("%.1f", v) end
  return string.format("%.2f", v)
end

function M.ratio(a, b)
  local r = a / b
  return string.format(r >= 10 and "%.0fx" or "%.1fx", r)
end

local function tail(s)
  s = s:gsub("^%s+", ""):gsub("%s+$", "")
  return #s > 400 and "..." .. s:sub(-400) or s
end

--- proc.run(opts), failing the benchmark unless the command started and
--- exited 0.  `what` names the command in the message.
function M.run_ok(what, opts)
  opts.quiet = true
  local r, err = proc.run(opts)
  if not r then M.fail(what .. ": " .. tostring(err)) end
  if r.code ~= 0 then
    local how = r.code and ("exited " .. r.code) or ("killed by signal " .. tostring(r.signal))
    local out = tail(r.stderr .. "\n" .. r.stdout)
    M.fail(what .. " " .. how .. (out ~= "" and "\n" .. out or ""))
  end
  return r
end

--- A fresh temporary directory (mktemp -d).
function M.tmpdir()
  local r = M.run_ok("mktemp -d", {argv = {"mktemp", "-d", "-t", "bomarun-bench.XXXXXX"}})
  return (r.stdout:gsub("%s+$", ""))
end

function M.rmtree(dir)
  M.run_ok("rm -rf " .. dir, {argv = {"rm", "-rf", "--", dir}})
end

--- Run fn(dir) with a temporary directory that is removed afterwards,
--- even when fn fails.
function M.with_tmpdir(fn)
  local dir = M.tmpdir()
  local ok, err = pcall(fn, dir)
  M.rmtree(dir)
  if not ok then error(err, 0) end
end

return M
