-- Host set-up that must happen before any user code runs.
--
-- coroutine.resume/wrap are patched so a wait inside a user coroutine
-- (an iterator built with coroutine.wrap, say) passes through to the
-- scheduler instead of being mistaken for the user's own yield.
-- os.exit is replaced so it kills live process groups before exiting.
--
-- Cancellation cannot be swallowed: once a task is cancelled (a step's
-- timeout, an interrupt), a pcall, xpcall or coroutine.resume called by
-- runbook code in that task raises the cancellation instead of running.  A
-- loop like `repeat local ok = pcall(work) until ok` therefore ends at its
-- next turn (the count hook raises inside work; the next pcall re-raises),
-- as Redis and OpenResty keep a script from catching their kill.  The
-- library's own code (under the Lua library directory) keeps plain pcall:
-- it catches cancellations to give back what it holds, then re-raises.
local sched = require "bomarun._sched"
local host = require "bomarun._host"

local SENTINEL = sched.SENTINEL
local co_resume, co_yield, co_create = coroutine.resume, coroutine.yield, coroutine.create
local pack, unpack = table.pack, table.unpack
local raw_pcall, raw_xpcall = pcall, xpcall
local getinfo = debug.getinfo
local LIB = "@" .. (host.lua_dir or "\0")

-- Raise the task's cancellation if it was cancelled and the caller of the
-- patched function (two levels up) is not the library itself.
local function refuse_if_cancelled()
  local t = sched.current()
  if not t then return end
  local reason, code = t:cancelled()
  if not reason then return end
  local info = getinfo(3, "S")
  if info and info.source:sub(1, #LIB) == LIB then return end
  error(sched.cancel_error(reason, code), 0)
end

pcall = function(f, ...) -- luacheck: ignore 121
  refuse_if_cancelled()
  return raw_pcall(f, ...)
end

xpcall = function(f, handler, ...) -- luacheck: ignore 121
  refuse_if_cancelled()
  return raw_xpcall(f, handler, ...)
end

local function resume(co, ...)
  refuse_if_cancelled()
  local r = pack(co_resume(co, ...))
  while r[1] and r[2] == SENTINEL and r.n == 2 do
    -- A host wait inside co: suspend the task too, then hand the results
    -- (or the cancellation) back into co.
    r = pack(co_resume(co, co_yield(SENTINEL)))
  end
  return unpack(r, 1, r.n)
end

local function wrap(fn)
  local co = co_create(fn)
  return function(...)
    local r = pack(resume(co, ...))
    if not r[1] then
      local err = r[2]
      if type(err) == "string" then
        err = err -- keep the original position information
      end
      error(err, 0)
    end
    return unpack(r, 2, r.n)
  end
end

coroutine.resume = resume
coroutine.wrap = wrap

os.exit = function(code, _close) -- luacheck: ignore
  io.stdout:flush()
  io.stderr:flush()
  host.exit(code == nil and 0 or code)
end

return true
