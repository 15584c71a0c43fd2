-- The library's layers (docs/architecture.md), read from the tree itself:
-- lua/core, lua/integrations and lua/engine each hold bomarun.* modules.
-- The rule: core requires only core; an integration requires only core and
-- its own parts (never the runbook engine, never another integration); the
-- engine requires core and engine.  C modules (bomarun._x) belong to the core.
local host = require "bomarun._host"

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local LUA = SRC .. "/lua"
local LAYERS = {"core", "integrations", "engine"}

local function lua_files(dir, out)
  out = out or {}
  local p = assert(io.popen("find '" .. dir .. "' -name '*.lua' -type f | sort"))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

-- The module name a file defines: lua/<layer>/bomarun/x/init.lua -> bomarun.x
local function module_of(path, layer)
  local rel = path:sub(#(LUA .. "/" .. layer .. "/") + 1):gsub("%.lua$", ""):gsub("/init$", "")
  return (rel:gsub("/", "."))
end

-- Strip comments (long ones and line ones) so that documentation that
-- mentions a require does not count.
local function code_of(text)
  text = text:gsub("%-%-%[(=*)%[.-%]%1%]", "")
  text = text:gsub("%-%-[^\n]*", "")
  return text
end

local function requires_of(path)
  local f = assert(io.open(path))
  local text = code_of(f:read("a"))
  f:close()
  local out = {}
  for name in text:gmatch("require%s*%(?%s*[\"']([%w._]+)[\"']") do out[#out + 1] = name end
  return out
end

-- Which integration a module belongs to: bomarun.openstack.resources -> openstack
local function family(name)
  return name:match("^bomarun%.([%w_]+)")
end

local modules, files = {}, {}
for _, layer in ipairs(LAYERS) do
  for _, path in ipairs(lua_files(LUA .. "/" .. layer)) do
    local name = module_of(path, layer)
    modules[name] = layer
    files[#files + 1] = {path = path, name = name, layer = layer}
  end
end

local function layer_of(name)
  if name:match("^bomarun%._") then return "core" end   -- the C cores
  return modules[name]
end

describe("the library's layers", function()
  it("has every module in exactly one layer, and the layers on disk", function()
    for _, layer in ipairs(LAYERS) do
      assert.is_truthy(host.exists(LUA .. "/" .. layer .. "/bomarun"), "missing lua/" .. layer .. "/bomarun")
    end
    assert.equal("core", modules["bomarun.task"])
    assert.equal("core", modules["bomarun.step"])
    assert.equal("integrations", modules["bomarun.openstack"])
    assert.equal("engine", modules["bomarun.runner"])
    local seen = {}
    for _, f in ipairs(files) do
      assert.is_nil(seen[f.name], f.name .. " is defined twice: " .. tostring(seen[f.name]) .. " and " .. f.path)
      seen[f.name] = f.path
    end
  end)

  it("follows the rule: core needs only core; integrations only core and their own parts; engine core and engine", function()
    local bad = {}
    for _, f in ipairs(files) do
      for _, dep in ipairs(requires_of(f.path)) do
        if dep:match("^bomarun") then
          local dl = layer_of(dep)
          local ok
          if not dl then
            ok = false
          elseif f.layer == "core" then
            ok = dl == "core"
          elseif f.layer == "integrations" then
            ok = dl == "core" or (dl == "integrations" and family(dep) == family(f.name))
          else
            ok = dl == "core" or dl == "engine"
          end
          if not ok then
            bad[#bad + 1] = string.format("%s (%s) requires %s (%s)", f.name, f.layer, dep, dl or "unknown")
          end
        end
      end
    end
    assert(#bad == 0, "layer rule broken:\n  " .. table.concat(bad, "\n  "))
  end)

  it("catches a breach: the checker sees a require of the runner from an integration", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write('-- require "bomarun.report" in a comment does not count\nlocal r = require("bomarun.runner")\n')
    f:close()
    local deps = requires_of(path)
    os.remove(path)
    assert.same({"bomarun.runner"}, deps)
    assert.equal("engine", layer_of(deps[1]))
  end)
end)
