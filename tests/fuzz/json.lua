-- fuzz_json's driver: decode arbitrary bytes, encode what decodes, and
-- check the round trip (mod_json.c promises that encode(decode(text))
-- gives back an equal document).  The first byte picks the options.
local json = require "bomarun.json"

return function(data)
  local flags = data:byte(1) or 0
  local text = data:sub(2)
  local dopts = {reject_duplicates = flags & 1 == 1}
  local v, err, code = json.decode(text, dopts)
  if v == nil then
    if code ~= "JSON" or type(err) ~= "string" or not err:match("^json: ") then
      fuzz_bug("decode failed without a JSON error: " .. tostring(err) .. " " .. tostring(code))
    end
    return
  end
  -- Every option of encode, on what decode gave: none may raise.
  local eopts = {indent = (flags >> 1) & 7, sort_keys = flags & 16 == 0, ensure_ascii = flags & 32 ~= 0}
  local ok, out = pcall(json.encode, v, eopts)
  if not ok then fuzz_bug("encode raised on what decode gave: " .. tostring(out)) end
  -- The round trip, in the canonical form (sorted keys, compact).
  local a = json.encode(v)
  local v2, err2 = json.decode(a, dopts)
  if v2 == nil then fuzz_bug("decode rejected encode's output " .. a .. ": " .. tostring(err2)) end
  local b = json.encode(v2)
  if a ~= b then fuzz_bug("the round trip changed the document:\n" .. a .. "\n" .. b) end
  local v3 = json.decode(out, dopts)
  if v3 == nil or json.encode(v3) ~= a then fuzz_bug("the " .. json.encode(eopts) .. " output reads back differently") end
end
