local task = require "bomarun.task"

describe("task", function()
  it("spawns, waits and returns every result", function()
    local t = task.spawn(function(a, b) task.sleep(0.01) return a + b, "x" end, 2, 3)
    local ok, v, x = t:wait()
    assert.is_true(ok)
    assert.equal(5, v)
    assert.equal("x", x)
  end)

  it("reports an uncaught error with the file:line of the code that raised it", function()
    local t = task.spawn(function() local x = nil; return x.field end)
    local ok, err = t:wait()
    assert.is_false(ok)
    assert.matches("task_spec%.lua:%d+: attempt to index a nil value", err)
    assert.matches("stack traceback", err)
  end)

  it("measures a sleep from when it starts, even after Lua ran a while", function()
    local t0 = os.clock()
    while os.clock() - t0 < 0.15 do end          -- busy: the loop's clock goes stale
    local s0 = task.now()
    task.sleep(0.1)
    local slept = task.now() - s0
    assert.is_true(slept >= 0.095, "slept only " .. slept .. " s")
  end)

  it("sleeps without blocking other tasks", function()
    local t0 = task.now()
    local ts = {}
    for k = 1, 20 do ts[k] = task.spawn(task.sleep, 0.1) end
    for k = 1, 20 do assert.is_true((ts[k]:wait())) end
    local d = task.now() - t0
    assert.is_true(d >= 0.09 and d < 0.5, "20 concurrent 0.1 s sleeps took " .. d)
  end)

  it("cancels a task and the children it started, and their in-flight waits", function()
    local child
    local parent = task.spawn(function()
      child = task.spawn(function() task.sleep(60) end)
      task.sleep(60)
    end)
    task.sleep(0.01)
    local t0 = task.now()
    parent:cancel("stop now")
    local ok, err = parent:wait()
    assert.is_false(ok)
    assert.equal("CANCELLED", task.cancel_code(err))
    assert.equal("stop now", tostring(err))
    local cok, cerr = child:wait()
    assert.is_false(cok)
    assert.equal("CANCELLED", task.cancel_code(cerr))
    assert.is_true(task.now() - t0 < 0.1)
  end)

  it("every later wait of a cancelled task raises at once", function()
    local reached = false
    local t = task.spawn(function()
      pcall(task.sleep, 60)   -- swallows the first cancellation
      task.sleep(60)          -- but cannot wait again
      reached = true
    end)
    task.sleep(0.01)
    t:cancel()
    local ok = t:wait()
    assert.is_false(ok)
    assert.is_false(reached)
  end)

  describe("timeout", function()
    it("returns the function's results when it finishes in time", function()
      local a, b = task.timeout(1, function() task.sleep(0.01) return 1, 2 end)
      assert.equal(1, a)
      assert.equal(2, b)
    end)

    it("returns nil, message, TIMEOUT and cancels the work", function()
      local finished = false
      local t0 = task.now()
      local v, msg, code = task.timeout(0.1, function() task.sleep(30) finished = true end)
      assert.is_nil(v)
      assert.equal("TIMEOUT", code)
      assert.matches("timed out after 0.1 s", msg)
      assert.is_true(task.now() - t0 < 0.5)
      task.sleep(0.05)
      assert.is_false(finished)
    end)

    it("stops a runaway Lua loop (count hook) within the bound", function()
      local t0 = task.now()
      local v, msg, code = task.timeout(0.2, function() while true do end end)
      assert.is_nil(v)
      assert.equal("TIMEOUT", code)
      assert.matches("never waited", msg)
      assert.is_true(task.now() - t0 < 1.5, "took " .. (task.now() - t0))
    end)

    it("tells its own expiry (DEADLINE) from a callee's TIMEOUT, which passes through", function()
      local v, err, code = task.deadline(0.05, task.sleep, 5)
      assert.is_nil(v)
      assert.equal("DEADLINE", code)
      assert.matches("timed out after 0.05 s", err, 1, true)
      v, err, code = task.deadline(5, function() return nil, "http: timed out", "TIMEOUT" end)
      assert.is_nil(v)
      assert.equal("http: timed out", err)
      assert.equal("TIMEOUT", code)
      -- task.timeout keeps the contract: its own expiry is "TIMEOUT"
      local _, _, tcode = task.timeout(0.05, task.sleep, 5)
      assert.equal("TIMEOUT", tcode)
    end)

    it("propagates errors raised by the function", function()
      assert.has_error(function() task.timeout(1, function() error("inner failure") end) end)
    end)
  end)

  describe("parallel", function()
    it("returns results in order", function()
      local r = task.parallel({
        function() task.sleep(0.05) return "a" end,
        function() return "b" end,
        function() task.sleep(0.02) return "c" end,
      })
      assert.same({"a", "b", "c"}, r)
    end)

    it("never runs more than `limit` at once", function()
      local running, peak = 0, 0
      local fns = {}
      for k = 1, 12 do
        fns[k] = function()
          running = running + 1
          peak = math.max(peak, running)
          task.sleep(0.01)
          running = running - 1
          return k
        end
      end
      local r = task.parallel(fns, {limit = 3})
      assert.equal(3, peak)
      assert.equal(12, #r)
      assert.equal(7, r[7])
    end)

    it("fails fast: cancels the others and names the failing function", function()
      local slow_finished = false
      local t0 = task.now()
      local ok, err = pcall(task.parallel, {
        function() task.sleep(5) slow_finished = true end,
        function() task.sleep(0.01) error("second went wrong") end,
      })
      assert.is_false(ok)
      assert.matches("function #2 failed", err)
      assert.matches("second went wrong", err)
      assert.is_true(task.now() - t0 < 1)
      assert.is_false(slow_finished)
    end)

    it("settles every function with settle = true", function()
      local r = task.parallel({
        function() return 1 end,
        function() error("nope") end,
      }, {settle = true})
      assert.is_true(r[1].ok)
      assert.equal(1, r[1].value)
      assert.is_false(r[2].ok)
      assert.matches("nope", r[2].error)
    end)
  end)

  it("passes host waits through user coroutines (coroutine.wrap iterators)", function()
    local gen = coroutine.wrap(function()
      for k = 1, 3 do task.sleep(0.001) coroutine.yield(k) end
    end)
    assert.same({1, 2, 3}, {gen(), gen(), gen()})
  end)

  it("gives a clear error when waiting in a non-yieldable context", function()
    local ok, err = pcall(table.sort, {3, 1, 2}, function(a, b) task.sleep(0) return a < b end)
    assert.is_false(ok)
    assert.matches("non%-yieldable context", err)
    assert.matches("table.sort", err)
  end)

  it("events wake every waiter with the values given to set", function()
    local ev = task.event()
    local got = {}
    local ws = {}
    for k = 1, 3 do ws[k] = task.spawn(function() local _, v = ev:wait() got[k] = v end) end
    task.sleep(0.01)
    assert.same({}, got)
    ev:set("go")
    for k = 1, 3 do ws[k]:wait() end
    assert.same({"go", "go", "go"}, got)
    assert.same({true, "go"}, {ev:wait()})      -- stays set
    ev:clear()
    local v, _, code = ev:wait(0.02)
    assert.is_nil(v)
    assert.equal("TIMEOUT", code)
  end)

  it("semaphores bound concurrency and hand units over in arrival order", function()
    local sem = task.semaphore(2)
    local running, peak, order = 0, 0, {}
    local fns = {}
    for k = 1, 6 do
      fns[k] = function()
        sem:with(function()
          running = running + 1
          peak = math.max(peak, running)
          order[#order + 1] = k
          task.sleep(0.01)
          running = running - 1
        end)
      end
    end
    task.parallel(fns)
    assert.equal(2, peak)
    assert.same({1, 2, 3, 4, 5, 6}, order)
  end)

  describe("a semaphore under cancellation", function()
    it("forgets a waiter that was cancelled in the queue", function()
      local sem = task.semaphore(1)
      assert(sem:acquire())
      local waiters = {}
      for k = 1, 5 do waiters[k] = task.spawn(function() return sem:acquire() end) end
      task.yield()
      assert.same({0, 5}, {sem:counts()})
      for k = 1, 5 do waiters[k]:cancel() end
      for k = 1, 5 do assert.is_false((waiters[k]:wait())) end
      assert.same({0, 0}, {sem:counts()})
      sem:release()
      assert.same({1, 0}, {sem:counts()})
    end)

    it("gets back a unit handed to a waiter that was cancelled before it ran", function()
      local sem = task.semaphore(1)
      assert(sem:acquire())
      local w = task.spawn(function() sem:with(task.sleep, 10) end)
      task.yield()
      sem:release()          -- handed to w, which has not run yet
      w:cancel()
      assert.is_false((w:wait()))
      assert.same({1, 0}, {sem:counts()})
      assert.is_true(sem:acquire(0.01))
    end)

    it("a timed-out acquire leaves the queue and holds nothing", function()
      local sem = task.semaphore(1)
      assert(sem:acquire())
      local ok, _, code = sem:acquire(0.01)
      assert.is_nil(ok)
      assert.equal("TIMEOUT", code)
      assert.same({0, 0}, {sem:counts()})
    end)

    it("gives a held unit back when the holder errs or is cancelled (with, hold and <close>)", function()
      local sem = task.semaphore(2)
      assert.has_error(function() sem:with(function() error("boom") end) end)
      assert.same({2, 0}, {sem:counts()})
      local t = task.spawn(function()
        local _ <close> = sem:hold()
        task.sleep(10)
      end)
      local u = task.spawn(function() sem:with(task.sleep, 10) end)
      task.yield()
      assert.same({0, 0}, {sem:counts()})
      t:cancel() u:cancel()
      t:wait() u:wait()
      assert.same({2, 0}, {sem:counts()})
      local h = sem:hold()
      h:release() h:release()   -- once only
      assert.same({2, 0}, {sem:counts()})
    end)
  end)

  it("keeps task-local context visible to children", function()
    task.current():locals().probe = "here"
    local seen = task.spawn(function() return task.context("probe") end)
    local _, v = seen:wait()
    assert.equal("here", v)
    task.current():locals().probe = nil
  end)
end)
