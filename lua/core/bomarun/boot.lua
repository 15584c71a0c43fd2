-- Host set-up that must happen before any user code runs.
--
-- coroutine.resume/wrap are patched so a wait inside a user coroutine
-- (an iterator built with coroutine.wrap, say) passes through to the
-- scheduler instead of being mistaken for the user's own yield.
-- os.exit is replaced so it kills live process groups before exiting.
local sched = require "bomarun._sched"
local host = require "bomarun._host"

local SENTINEL = sched.SENTINEL
local co_resume, co_yield, co_create = coroutine.resume, coroutine.yield, coroutine.create
local pack, unpack = table.pack, table.unpack

local function resume(co, ...)
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
