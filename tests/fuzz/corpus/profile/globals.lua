-- constants as globals, a helper, a loop, an error caught
cluster = "c-" .. ("x"):rep(3)
local function size(n) return n * 1024 end
replicas = math.floor(size(2) / 1000)
region = table.concat({"Region", "One"})
flags = {}
for i = 1, 3 do flags["f" .. i] = i % 2 == 0 end
local ok = pcall(error, "ignored")
debug = not ok
