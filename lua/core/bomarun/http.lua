--- HTTP on the event loop (libcurl multi interface).
---
---   local http = require "bomarun.http"
---   local r, err, code = http.request{method = "GET", url = "http://127.0.0.1:5000/v3",
---                                     headers = {Accept = "application/json"}, timeout = 10}
---   -- r.status, r.headers (lower-case names), r.body, r.duration, r.retried
---
--- Connections are kept alive and reused.  A GET/HEAD that fails on a reused
--- connection the server had closed is retried once on a fresh one.
--- Transport failures return nil, "http: METHOD URL: why", CODE (REFUSED,
--- RESOLVE, TIMEOUT, RESET, TLS, BAD_URL, LOCAL_FILE, HTTP); an HTTP error
--- status is data (r.status).
local core = require "bomarun._http"
local json = require "bomarun.json"
local log = require "bomarun.log"

local M = {}

---@class bomarun.HttpRequest
---@field method? string            default "GET"
---@field url string
---@field headers? table<string, string>
---@field body? string|table        a table is sent as JSON
---@field body_file? string         stream the request body from this file
---@field output_file? string       stream the response body to this file
---@field output_digest? string     with output_file: hash the body as it streams ("sha512"): r.digest (hex)
---@field timeout? number           whole request, seconds (default 60)
---@field connect_timeout? number   seconds (default 10)
---@field cainfo? string            CA bundle for TLS
---@field ca_pem? string            CA certificate(s) as PEM text (instead of cainfo)
---@field client_cert? string       client certificate (PEM file) for TLS client authentication
---@field client_key? string        its private key (PEM file)
---@field client_cert_pem? string   client certificate as PEM text
---@field client_key_pem? string    its private key as PEM text (never written to disk)
---@field insecure? boolean         skip TLS verification (warned about)

---@class bomarun.HttpResponse
---@field status integer
---@field headers table<string, string>
---@field body string|nil           nil when streamed to output_file
---@field digest string|nil         the streamed body's hex digest (output_digest)
---@field duration number
---@field retried boolean
---@field url string

local warned_insecure = {}

--- Send a request and wait for the response.
---@param req bomarun.HttpRequest
---@return bomarun.HttpResponse|nil, string|nil err, string|nil code
function M.request(req)
  if type(req) ~= "table" or type(req.url) ~= "string" then
    error("http.request: expected a table with url = \"...\"", 2)
  end
  local r = req
  if type(req.body) == "table" then
    r = {}
    for k, v in pairs(req) do r[k] = v end
    r.body = json.encode(req.body)
    r.headers = {}
    for k, v in pairs(req.headers or {}) do r.headers[k] = v end
    r.headers["Content-Type"] = r.headers["Content-Type"] or "application/json"
  end
  if req.insecure then
    local host = req.url:match("^%a+://([^/]+)") or req.url
    if not warned_insecure[host] then
      warned_insecure[host] = true
      log.info("WARNING: TLS verification is OFF for " .. host .. " (insecure = true)")
    end
  end
  return core.request(r)
end

--- Decode a JSON response body (nil, err when it is not JSON).
---@param r bomarun.HttpResponse
---@return bomarun.json.value|nil value, string|nil err, string|nil code
function M.json(r)
  if not r.body or r.body == "" then return nil, "empty body" end
  return json.decode(r.body)
end

return M
