--- Image (Glance v2): images, upload, stage and import, properties, waits, checksum verify.
--- The service's collections (generic list/show/find/create/delete/update/
--- wait, from bomarun.openstack) and its own methods, each called as
--- method(handle, service, ...).
local json = require "bomarun.json"
local crypto = require "bomarun._crypto"

return {collections = {
  images = {service = "image", path = "/v2/images", key = "images", what = "image",
            ok = {"active"}, fail = {"killed", "deleted", "deactivated"}},
}, methods = {
  list = function(_, s, query, opts) return s.images:list(query, opts) end,
  show = function(_, s, id) return s.images:show(id) end,
  find = function(_, s, name_or_id) return s.images:find(name_or_id) end,
  delete = function(_, s, id) return s.images:delete(id) end,
  --- Create an image record (queued): attrs may carry custom properties
  --- (kube_version, os_distro, ...) as top-level keys, as Glance wants.
  create = function(h, _, attrs)
    return h:call("POST", "image", "/v2/images", {body = attrs})
  end,
  --- Upload image data from a file (streamed, not loaded into memory).
  upload = function(h, _, id, path)
    return h:call("PUT", "image", "/v2/images/" .. id .. "/file", {body_file = path,
      content_type = "application/octet-stream", timeout = 3600})
  end,
  --- Stage data for the glance-direct import, then import it.
  stage = function(h, _, id, path)
    return h:call("PUT", "image", "/v2/images/" .. id .. "/stage", {body_file = path,
      content_type = "application/octet-stream", timeout = 3600})
  end,
  --- Import staged data ("glance-direct") or let Glance fetch a URL
  --- ("web-download", uri).
  import = function(h, _, id, method, uri)
    return h:call("POST", "image", "/v2/images/" .. id .. "/import",
                  {body = {method = {name = method, uri = uri}}})
  end,
  --- Set (or remove, with json.null) properties: a JSON-patch.
  set_properties = function(h, s, id, props)
    local img, err, code = s.images:show(id)
    if not img then return nil, err, code end
    local ops = {}
    local keys = {}
    for k in pairs(props) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = props[k]
      if v == json.null then
        if img[k] ~= nil then ops[#ops + 1] = {op = "remove", path = "/" .. k} end
      else
        ops[#ops + 1] = {op = img[k] == nil and "add" or "replace", path = "/" .. k, value = v}
      end
    end
    return h:call("PATCH", "image", "/v2/images/" .. id, {body = json.array(ops),
      content_type = "application/openstack-images-v2.1-json-patch"})
  end,
  --- Wait for status active (fail at once on killed/deleted).
  wait_active = function(_, s, id, spec)
    spec = spec or {}
    spec.ok, spec.fail = {"active"}, {"killed", "deleted", "deactivated"}
    return s.images:wait(id, spec)
  end,
  --- Verify the image's os_hash_value against a local file (sha512 by
  --- default, Glance's os_hash_algo otherwise).
  verify = function(_, s, id, path)
    local img, err, code = s.images:show(id)
    if not img then return nil, err, code end
    local algo = img.os_hash_algo or "sha512"
  if not ({sha512 = true, sha256 = true, sha384 = true, sha1 = true, md5 = true})[algo] then
    return nil, "openstack: unsupported os_hash_algo " .. tostring(algo), "UNSUPPORTED"
  end
  -- In process, on a worker thread: the loop goes on while a large file is read.
  local local_hash, herr = crypto.digest_file(algo, path)
  if not local_hash then return nil, "openstack: verify image " .. id .. ": " .. herr, "LOCAL_FILE" end
    if not img.os_hash_value then
      return nil, "openstack: image " .. id .. " has no os_hash_value yet (status " .. tostring(img.status) .. ")", "NOT_READY"
    end
    if local_hash ~= img.os_hash_value then
      return nil, string.format("openstack: image %s %s %s differs from %s of %s", id, algo,
        img.os_hash_value, local_hash, path), "CHECKSUM"
    end
    return {algo = algo, value = local_hash}
  end,
}}
