-- luacheck (Debian lua-check) for the Lua library, specs, runbooks,
-- examples and benchmarks; scripts/lint runs it.
std = "lua54"
max_line_length = 130
self = false                 -- methods need not use self
exclude_files = {"build/**", "build-asan/**"}
files["spec/**/*.lua"] = {std = "+busted"}
files["lua/core/bomarun/boot.lua"] = {globals = {"coroutine", "os", "pcall", "xpcall"}}  -- it patches them, on purpose
max_comment_line_length = false   -- LuaLS annotations may be long
