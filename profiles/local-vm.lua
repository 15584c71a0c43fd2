-- The VM integration cycle on this machine (runbooks/vm-integration.lua):
-- libvirtd started by `scripts/virt-stack start`, the Debian guest image built
-- offline by `scripts/virt-stack image` (its cache holds the image, kernel,
-- initrd and their SHA512SUMS; `current` points at the latest build).  The
-- guest runs under TCG with user-mode networking and one loopback forward.
-- A profile is data: no io, os or require here.  "~/" is the user's home.
return {
  uri = "qemu:///system",
  mirror = "local",
  prefix = "bomarun-it-",
  -- the golden image: verified against SHA512SUMS (file:// or http(s)://)
  image_url = "file://~/.cache/bomarun/guest-image/current/debian-12.qcow2",
  kernel_url = "file://~/.cache/bomarun/guest-image/current/vmlinuz",
  initrd_url = "file://~/.cache/bomarun/guest-image/current/initrd.img",
  sha512sums = "~/.cache/bomarun/guest-image/current/SHA512SUMS",
  cache = "~/.cache/bomarun/guest-image/current",
  workdir = "/var/tmp/bomarun-vms",
  user = "bomarun",
  memory = 1024,
  vcpus = 2,
  type = "qemu",            -- TCG: no usable KVM here
  tcg_cache = 256,
  run_as_root = true,       -- the image cache is under /root
  groups = {"local_hosts"},
  applies = {
    {playbook = "runbooks/data/vm-integration/site.yml", tags = {"base"}},
    {playbook = "runbooks/data/vm-integration/site.yml", tags = {"service"}},
  },
  extra_vars_files = {"runbooks/data/vm-integration/overrides/local.yml"},
  verify = "runbooks/data/vm-integration/verify.yml",
  checks = {
    {name = "sshd", cmd = "systemctl is-active ssh", expect = "active"},
    {name = "boot unit", cmd = "systemctl is-active bomarun-it-boot.service", expect = "active"},
  },
  hint = "start libvirtd and build the guest image first: scripts/virt-stack start && scripts/virt-stack image",
}
