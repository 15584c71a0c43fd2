-- Every public function of the Lua library carries the LuaLS annotations an
-- author's editor completes from: a `---@param` for each parameter and a
-- `---@return` when it returns a value.  Public: `function M.f(...)`,
-- `function Class:f(...)` (a capitalised table) and `M.f = function(...)`
-- whose name does not start with `_`, in lua/*/bomarun/**.
local SRC = os.getenv("BOMARUN_SOURCE") or "."

local function lua_files()
  local out = {}
  local p = assert(io.popen("find '" .. SRC .. "/lua' -name '*.lua' -type f | sort"))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

-- Which functions return a value, from luac's listing of the compiled
-- file (so a `return` inside a nested function does not count): by the
-- line each function starts on.  RETURN1, a tail call, or RETURN with B ~= 1
-- (B = 0: up to the top of the stack; B >= 2: B - 1 values).
local function returning_functions(path)
  local out, current = {}, nil
  local p = assert(io.popen("luac5.4 -l -p '" .. path .. "' 2>&1"))
  for line in p:lines() do
    local first = line:match("^function <.-:(%d+),%d+>")
    if first then
      current = tonumber(first)
      out[current] = out[current] or false
    elseif line:match("^main <") then
      current = nil
    elseif current then
      local op, b = line:match("%]%s+(%u+%d?)%s+%d+%s*(%d*)")
      if op == "RETURN1" or op == "TAILCALL" or (op == "RETURN" and tonumber(b) ~= 1) then out[current] = true end
    end
  end
  p:close()
  return out
end

local function check_file(path, problems)
  local lines = {}
  for l in io.lines(path) do lines[#lines + 1] = l end
  local returns = returning_functions(path)
  for i, l in ipairs(lines) do
    local indent, name, params = l:match("^(%s*)function%s+([%w_]+[.:][%w_]+)%s*%(([^)]*)%)")
    if not name then indent, name, params = l:match("^(%s*)([%w_]+%.[%w_]+)%s*=%s*function%s*%(([^)]*)%)") end
    local short = name and name:match("[.:]([%w_]+)$")
    local owner = name and name:match("^([%w_]+)")
    -- Public: the module table M, or a class (a capitalised table such as Step).
    local public = owner and (owner == "M" or owner:match("^%u"))
    if public and indent == "" and not short:match("^_") then
      local doc = {}
      local k = i - 1
      while k >= 1 and lines[k]:match("^%s*%-%-%-") do doc[lines[k]] = true k = k - 1 end
      local text = ""
      for d in pairs(doc) do text = text .. d .. "\n" end
      for p in params:gmatch("[%w_]+") do
        if p ~= "self" and not text:match("%-%-%-@param%s+" .. p .. "%??[%s]") then
          problems[#problems + 1] = string.format("%s:%d: %s: no ---@param %s", path:sub(#SRC + 2), i, name, p)
        end
      end
      if params:match("%.%.%.") and not text:match("%-%-%-@param%s+%.%.%.") then
        problems[#problems + 1] = string.format("%s:%d: %s: no ---@param ...", path:sub(#SRC + 2), i, name)
      end
      if returns[i] and not text:match("%-%-%-@return") then
        problems[#problems + 1] = string.format("%s:%d: %s: no ---@return", path:sub(#SRC + 2), i, name)
      end
    end
  end
end

describe("the library's annotations", function()
  it("give every public function a ---@param per parameter and a ---@return when it returns", function()
    local problems = {}
    for _, path in ipairs(lua_files()) do check_file(path, problems) end
    assert(#problems == 0, #problems .. " missing annotations:\n  " .. table.concat(problems, "\n  "))
  end)

  it("notices a missing one", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("--- Documented.\n---@param a string\nfunction M.f(a, b)\n  return a\nend\nfunction handlers.x(m) return m end\n")
    f:close()
    local problems = {}
    local src = SRC
    SRC = path:match("^(.*)/")
    check_file(path, problems)
    SRC = src
    os.remove(path)
    assert.equal(2, #problems)
    assert.matches("no ---@param b", problems[1], 1, true)
    assert.matches("no ---@return", problems[2], 1, true)
  end)
end)
