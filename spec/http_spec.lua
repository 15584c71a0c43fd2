-- bomarun.http against a real HTTP/1.1 server (Python's http.server,
-- tests/stack/http_test_server.py) on 127.0.0.1.
local http = require "bomarun.http"
local json = require "bomarun.json"
local proc = require "bomarun.proc"
local task = require "bomarun.task"

local SRC = os.getenv("BOMARUN_SOURCE") or "."
local server, base

local function get(path, extra)
  local req = {url = base .. path}
  for k, v in pairs(extra or {}) do req[k] = v end
  return http.request(req)
end

describe("http", function()
  setup(function()
    local port
    server = assert(proc.spawn{argv = {"/usr/bin/python3", SRC .. "/tests/stack/http_test_server.py"},
                               quiet = true, keep = true, on_line = function(l) port = port or tonumber(l) end})
    local t0 = task.now()
    while not port and task.now() - t0 < 10 do task.sleep(0.02) end
    assert(port, "the test HTTP server did not start")
    base = "http://127.0.0.1:" .. port
  end)
  teardown(function() server:kill("KILL") server:wait() end)

  it("GETs with headers and returns status, lower-case headers and body", function()
    local r = assert(get("/echo", {headers = {["X-Auth-Token"] = "tok", Accept = "application/json"}}))
    assert.equal(200, r.status)
    assert.equal("application/json", r.headers["content-type"])
    local doc = assert(json.decode(r.body))
    assert.equal("GET", doc.method)
    assert.equal("tok", doc.headers["X-Auth-Token"])
    assert.is_true(r.duration > 0)
  end)

  it("sends table bodies as JSON and keeps HTTP errors as data", function()
    local r = assert(http.request{method = "POST", url = base .. "/upload", body = {a = 1}})
    assert.equal(200, r.status)
    assert.equal(7, json.decode(r.body).length)      -- {"a":1}
    r = assert(get("/status?code=404"))
    assert.equal(404, r.status)
    assert.equal("req-test", r.headers["x-openstack-request-id"]:match("^req%-test"))
  end)

  it("streams an upload from a file and a download to a file", function()
    local d = os.tmpname()
    local f = assert(io.open(d, "wb"))
    local chunk = string.rep("0123456789abcdef", 65536)   -- 1 MiB
    for _ = 1, 8 do f:write(chunk) end
    f:close()
    local want = proc.run{argv = {"sha256sum", d}}.stdout:match("^(%x+)")
    local r = assert(http.request{method = "PUT", url = base .. "/upload", body_file = d})
    local doc = json.decode(r.body)
    assert.equal(8 * 1048576, doc.length)
    assert.equal(want, doc.sha256)
    local out = d .. ".out"
    r = assert(get("/download?bytes=3000000", {output_file = out}))
    assert.is_nil(r.body)
    assert.equal(3000000, #assert(io.open(out, "rb")):read("a"))
    os.remove(d)
    os.remove(out)
  end)

  it("reuses connections and retries a GET once when a kept-alive one was dropped", function()
    local r1 = assert(get("/drop"))          -- the server closes this one silently
    assert.equal(200, r1.status)
    local r2 = assert(get("/echo"))          -- a reused, dead connection: retried
    assert.equal(200, r2.status)
  end)

  it("times out a slow response with TIMEOUT", function()
    local t0 = task.now()
    local r, err, code = get("/slow?seconds=5", {timeout = 0.3})
    assert.is_nil(r)
    assert.equal("TIMEOUT", code)
    assert.matches("http: GET " .. base:gsub("%p", "%%%0") .. "/slow", err)
    assert.is_true(task.now() - t0 < 2)
  end)

  it("reports a refused connection as REFUSED", function()
    local r, err, code = http.request{url = "http://127.0.0.1:1/x", timeout = 2}
    assert.is_nil(r)
    assert.equal("REFUSED", code)
    assert.matches("127%.0%.0%.1:1/x", err)
  end)

  it("runs requests concurrently on the loop", function()
    local fns = {}
    for k = 1, 10 do fns[k] = function() return assert(get("/slow?seconds=0.3")).status end end
    local t0 = task.now()
    local out = task.parallel(fns)
    assert.equal(200, out[10])
    assert.is_true(task.now() - t0 < 1.5, "10 concurrent 0.3 s requests took " .. (task.now() - t0))
  end)

  it("cancelling the task abandons the request at once", function()
    local t = task.spawn(function() return get("/slow?seconds=5") end)
    task.sleep(0.1)
    local t0 = task.now()
    t:cancel()
    local ok, err = t:wait()
    assert.is_false(ok)
    assert.equal("CANCELLED", task.cancel_code(err))
    assert.is_true(task.now() - t0 < 0.2)
  end)
end)
