local proc = require "bomarun.proc"
local task = require "bomarun.task"
local util = require "support.util"
local wait_dead = util.wait_dead

describe("proc", function()
  it("runs an argv without a shell: metacharacters stay literal", function()
    local r = assert(proc.run{argv = {"printf", "%s|", "$HOME", "a b", "*"}})
    assert.equal(0, r.code)
    assert.equal("$HOME|a b|*|", r.stdout)
  end)

  it("runs a shell command line only when asked", function()
    local r = assert(proc.run{shell = "echo $((2 + 3)) | tr 5 x"})
    assert.equal("x\n", r.stdout)
  end)

  it("returns exit codes and stderr as data", function()
    local r = assert(proc.run{shell = "echo out; echo err >&2; exit 7"})
    assert.equal(7, r.code)
    assert.equal("out\n", r.stdout)
    assert.equal("err\n", r.stderr)
    assert.is_true(r.duration >= 0 and r.duration < 5)
  end)

  it("reports death by signal", function()
    local r = assert(proc.run{shell = "kill -9 $$"})
    assert.is_nil(r.code)
    assert.equal(9, r.signal)
  end)

  it("passes env, cwd and stdin", function()
    local r = assert(proc.run{shell = "pwd; echo \"$BOMARUN_T\"; cat; echo \"${HOME:-unset}\"",
                              env = {BOMARUN_T = "v1", HOME = false}, cwd = "/tmp", stdin = "from stdin\n"})
    assert.equal("/tmp\nv1\nfrom stdin\nunset\n", r.stdout)
  end)

  it("starts from an empty environment with clear_env", function()
    local r = assert(proc.run{argv = {"/usr/bin/env"}, clear_env = true, env = {ONLY = "1"}})
    assert.equal("ONLY=1\n", r.stdout)
  end)

  it("returns nil, message, ENOENT for a missing program", function()
    local r, msg, code = proc.run{argv = {"/nonexistent/program", "x"}}
    assert.is_nil(r)
    assert.equal("ENOENT", code)
    assert.matches("cannot start /nonexistent/program x", msg)
  end)

  it("raises on programmer errors", function()
    assert.has_error(function() proc.run{} end)
    assert.has_error(function() proc.run{argv = {"true"}, timeout = "soon"} end)
  end)

  it("raises, naming the option, on an argv element that is not a string (and leaks nothing)", function()
    -- Under ASan (tests/lsan.supp) a leak here fails the whole spec run.
    local ok, err = pcall(proc.run, {argv = {"echo", {}}})
    assert.is_false(ok)
    assert.matches("argv%[2%] is a table, not a string", err)
    ok, err = pcall(proc.spawn, {argv = {"echo", "a", function() end}, env = {A = "1"}})
    assert.is_false(ok)
    assert.matches("argv%[3%] is a function", err)
  end)

  it("raises on a NUL byte in argv, shell, cwd or env instead of cutting the string", function()
    local cases = {
      {{argv = {"echo", "a\0b"}}, "argv%[2%] contains a NUL byte"},
      {{argv = {"ec\0ho"}}, "argv%[1%] contains a NUL byte"},
      {{shell = "echo a\0; rm -rf /nonexistent"}, "option 'shell' contains a NUL byte"},
      {{argv = {"pwd"}, cwd = "/tmp\0/x"}, "option 'cwd' contains a NUL byte"},
      {{argv = {"env"}, env = {A = "x\0y"}}, "option 'env': env%['A'%] contains a NUL byte"},
      {{argv = {"env"}, env = {["A\0B"] = "x"}}, "option 'env': key 'A\\0B' contains a NUL byte"},
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(proc.run, c[1])
      assert.is_false(ok, c[2])
      assert.matches(c[2], err)
    end
  end)

  it("raises on an env key with '=' (it would set another variable) or an empty key", function()
    local ok, err = pcall(proc.run, {argv = {"env"}, env = {["A=B"] = "x"}})
    assert.is_false(ok)
    assert.matches("option 'env': key 'A=B' contains '='", err)
    ok, err = pcall(proc.run, {argv = {"env"}, env = {[""] = "x"}})
    assert.is_false(ok)
    assert.matches("option 'env': a key is empty", err)
    ok, err = pcall(proc.run, {argv = {"env"}, env = {A = {}}})
    assert.is_false(ok)
    assert.matches("env%['A'%] is a table", err)
    -- numbers and booleans still work as before
    local r = assert(proc.run{argv = {"sh", "-c", "echo $N $T"}, env = {N = 42, T = true}})
    assert.equal("42 true\n", r.stdout)
  end)

  it("calls on_start with the group's pid and on_exit once it is reaped", function()
    local started, ended
    local r = assert(proc.run{shell = "exit 4", on_start = function(pid) started = pid end,
                              on_exit = function(pid, code, sig) ended = {pid, code, sig} end})
    assert.equal(r.pid, started)
    assert.same({r.pid, 4}, ended)
    local h = assert(proc.spawn{argv = {"sleep", "30"}, on_exit = function(pid, code, sig) ended = {pid, code, sig} end})
    h:kill("KILL")
    h:wait()
    assert.same({h:pid(), nil, "SIGKILL"}, ended)
  end)

  it("streams lines while the process runs, not after", function()
    local seen = {}
    local t0 = task.now()
    local r = assert(proc.run{shell = "echo one; sleep 0.3; printf 'two\\nthree'; echo err >&2",
                              on_line = function(line, stream) seen[#seen + 1] = {line, stream, task.now() - t0} end})
    assert.equal(0, r.code)
    assert.equal(4, #seen)
    assert.same({"one", "stdout"}, {seen[1][1], seen[1][2]})
    assert.is_true(seen[1][3] < 0.25, "first line arrived only after " .. seen[1][3] .. " s")
    local lines = {}
    for _, s in ipairs(seen) do lines[#lines + 1] = s[1] end
    table.sort(lines)
    assert.same({"err", "one", "three", "two"}, lines)
  end)

  it("collects several MB on both streams", function()
    local r = assert(proc.run{shell = "head -c 3000000 /dev/zero | tr '\\0' a; head -c 2000000 /dev/zero | tr '\\0' b >&2"})
    assert.equal(3000000, #r.stdout)
    assert.equal(2000000, #r.stderr)
    assert.equal("aaa", r.stdout:sub(1, 3))
  end)

  it("kills the whole process group on timeout, grandchildren included", function()
    local t0 = task.now()
    local r, msg, code, partial = proc.run{shell = "sleep 60 & echo $!; sleep 60", timeout = 0.3, grace = 0.3}
    assert.is_nil(r)
    assert.equal("TIMEOUT", code)
    assert.matches("timed out after 0.3", msg)
    assert.is_true(task.now() - t0 < 3, "took " .. (task.now() - t0))
    local grandchild = tonumber(partial.stdout:match("(%d+)"))
    assert.is_number(grandchild)
    assert.is_true(wait_dead(grandchild, 2), "grandchild " .. grandchild .. " survived")
  end)

  it("uses SIGKILL after the grace period when SIGTERM is ignored", function()
    local t0 = task.now()
    local r, _, code, partial = proc.run{shell = "trap '' TERM; sleep 60 & wait; sleep 60", timeout = 0.2, grace = 0.3}
    assert.is_nil(r)
    assert.equal("TIMEOUT", code)
    assert.equal(9, partial.signal)
    assert.is_true(task.now() - t0 < 3)
  end)

  it("does not hang on a grandchild that keeps stdout open after its parent exits", function()
    local t0 = task.now()
    local r = assert(proc.run{shell = "sleep 60 & echo started", drain = 0.3})
    local took = task.now() - t0
    assert.equal(0, r.code)
    assert.equal("started\n", r.stdout)
    assert.is_true(r.lingering)
    assert.is_true(took < 2.5, "took " .. took)
  end)

  it("kills the group when the waiting task is cancelled", function()
    local pidfile = os.tmpname()
    local t = task.spawn(function()
      return proc.run{shell = "sleep 60 & echo $! > " .. pidfile .. "; sleep 60", grace = 0.2}
    end)
    task.sleep(0.3)
    local f = assert(io.open(pidfile))
    local grandchild = tonumber(f:read("a"))
    f:close()
    os.remove(pidfile)
    t:cancel()
    local ok, err = t:wait()
    assert.is_false(ok)
    assert.equal("CANCELLED", task.cancel_code(err))
    assert.is_true(wait_dead(grandchild, 3), "grandchild " .. grandchild .. " survived the cancel")
  end)

  it("spawn gives a handle to signal and wait", function()
    local h = assert(proc.spawn{argv = {"sleep", "30"}})
    assert.is_number(h:pid())
    assert.is_false(h:done())
    assert.is_true(h:kill("TERM"))
    local r = h:wait()
    assert.equal(15, r.signal)
    assert.is_true(h:done())
    local again = h:wait()
    assert.equal(15, again.signal)
  end)

  it("terminates a spawned process when the task that spawned it ends", function()
    local pid
    local t = task.spawn(function()
      local h = assert(proc.spawn{argv = {"sleep", "60"}, grace = 0.2})
      pid = h:pid()
      return "left it running"
    end)
    assert.same({true, "left it running"}, {t:wait()})
    assert.is_true(wait_dead(pid, 3), "the spawned process " .. pid .. " outlived its task")
  end)

  describe("a handle in a <close> variable", function()
    -- Whether anything is left in the process group (a zombie counts until
    -- the loop reaps it).
    local function group_alive(pgid)
      return proc.run{shell = "kill -0 -" .. pgid .. " 2>/dev/null", quiet = true}.code == 0
    end

    local function wait_group_dead(pgid, seconds)
      local t0 = task.now()
      while task.now() - t0 < seconds do
        if not group_alive(pgid) then return true end
        task.sleep(0.02)
      end
      return false
    end

    it("kills the process group and closes the handle when the block ends", function()
      local pid, handle
      do
        local p <close> = assert(proc.spawn{argv = {"sleep", "300"}})
        pid, handle = p:pid(), p
        assert.is_true(group_alive(pid))
      end
      assert.is_true(wait_group_dead(pid, 1), "group " .. pid .. " outlived its <close> block")
      assert.equal("proc (closed)", tostring(handle))
      assert.has_error(function() handle:pid() end, "proc: the handle is closed")
    end)

    it("does the same when the block ends by an error", function()
      local pid
      local ok, err = pcall(function()
        local p <close> = assert(proc.spawn{argv = {"sleep", "300"}})
        pid = p:pid()
        error("boom")
      end)
      assert.is_false(ok)
      assert.matches("boom", err)
      assert.is_number(pid)
      assert.is_true(wait_group_dead(pid, 1), "group " .. pid .. " outlived its <close> block")
    end)
  end)

  it("runs many processes concurrently", function()
    local fns = {}
    for k = 1, 40 do fns[k] = function() return proc.run{argv = {"sh", "-c", "echo " .. k}}.stdout end end
    local t0 = task.now()
    local out = task.parallel(fns, {limit = 20})
    assert.equal("40\n", out[40])
    assert.is_true(task.now() - t0 < 10)
  end)
end)
