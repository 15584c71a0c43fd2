-- Stage and verify a Glance image, the 8.0 step of the workload-cluster
-- acceptance runbook: the image must be present, active, carry the
-- properties the cluster driver reads (kube_version, os_distro), and its
-- stored checksum must match the file that was verified locally.  If it is
-- absent it is created from a local file (never from a URL the cloud
-- fetches itself: that is the web-download path that hung in queued).
--
--   bomarun examples/image-stage-verify.lua --profile mysite
-- with profiles/mysite.lua:
--   return {cloud = "mycloud", image = "ubuntu-jammy-kube-v1.34.8",
--           image_file = "/srv/images/ubuntu-jammy-kube-v1.34.8.qcow2",
--           image_sha512 = "7efde485...", kube_version = "v1.34.8", os_distro = "ubuntu"}
local runbook = require "bomarun.runbook"
local openstack = require "bomarun.openstack"
local proc = require "bomarun.proc"

-- One authenticated connection for the whole run (made on first use, so
-- --resume and --only work too).
local conn
local function cloud(s)
  if not conn then conn = assert(openstack.connect{cloud = s.env.cloud}) end
  return conn
end

return runbook{
  id = "image-stage-verify",
  title = "Stage and verify the cluster image (8.0)",
  decisions = {"FINDING-3"},
  needs = {cloud = "string", image = "string", image_file = "string", kube_version = "string", os_distro = "string"},
  defaults = {disk_format = "qcow2", import_method = "upload", timeout = 600},

  runbook.phase{"Prerequisites",
    runbook.step{"8.0.1", "Connect to the cloud", function(s)
      local err
      conn, err = openstack.connect{cloud = s.env.cloud}
      s:gate(conn ~= nil, "authenticated to " .. s.env.cloud .. (err and (": " .. err) or ""))
      s:log("scope: %s", conn:scope_description())
    end},
    runbook.step{"8.0.2", "The local image file matches its manifest checksum", function(s)
      local r = assert(proc.run{argv = {"sha512sum", s.env.image_file}, timeout = 3600})
      s:gate(r.code == 0, "sha512sum read " .. s.env.image_file)
      local got = r.stdout:match("^(%x+)")
      s:capture("local_sha512", got)
      if s.env.image_sha512 then
        s:gate(got == s.env.image_sha512, "sha512 matches the manifest")
      else
        s:log("no image_sha512 in the profile: the file is trusted as it is")
      end
    end},
  },

  runbook.phase{"Stage",
    runbook.step{"8.0.3", "Create and upload the image if it is absent", mutation = true, function(s)
      local img = cloud(s).image:find(s.env.image)
      if img then
        s:log("image %s present (%s, status %s): not creating", s.env.image, img.id, img.status)
        s:capture("image_id", img.id)
        return
      end
      local created, err = conn.image:create{name = s.env.image, disk_format = s.env.disk_format,
        container_format = "bare", kube_version = s.env.kube_version, os_distro = s.env.os_distro}
      s:gate(created ~= nil, "image record created" .. (err and (": " .. err) or ""))
      s:capture("image_id", created.id)
      s:cleanup("delete image " .. created.id, function() assert(conn.image:delete(created.id)) end)
      local ok, uerr
      if s.env.import_method == "glance-direct" then
        ok, uerr = conn.image:stage(created.id, s.env.image_file)
        if ok then ok, uerr = conn.image:import(created.id, "glance-direct") end
      else
        ok, uerr = conn.image:upload(created.id, s.env.image_file)
      end
      s:gate(ok ~= nil, "image data sent (" .. s.env.import_method .. ")" .. (uerr and (": " .. uerr) or ""))
    end},
    runbook.step{"8.0.4", "Wait for the image to become active", function(s)
      s:poll{function()
               local img, err = cloud(s).image:show(s.state.image_id)
               if not img then return nil, err end
               return img.status
             end,
             ok = {"active"}, fail = {"killed", "deleted", "deactivated"},
             timeout = s.env.timeout, interval = 2, what = "image status"}
    end},
  },

  runbook.acceptance{"8.0", "Image gate",
    runbook.item{"8.0.a", "Image active with the driver's properties", function(i)
      local img = assert(cloud(i).image:show(i.state.image_id))
      i:check(img.status == "active", "status active")
      i:check(img.kube_version == i.env.kube_version, "kube_version = " .. i.env.kube_version)
      i:check(img.os_distro == i.env.os_distro, "os_distro = " .. i.env.os_distro)
    end},
    runbook.item{"8.0.b", "Stored checksum equals the verified file's", function(i)
      local v, err = cloud(i).image:verify(i.state.image_id, i.env.image_file)
      i:gate(v ~= nil, "os_hash_value matches" .. (err and (": " .. err) or ""))
    end},
  },
}
