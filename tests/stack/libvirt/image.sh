#!/usr/bin/env bash
# Builds (or reuses) the guest image for the libvirt test tier: Debian 12
# (bookworm), offline from nothing but this machine's configured apt mirror.
#
#   debootstrap --variant=minbase bookworm, with systemd-sysv udev dbus kmod
#   linux-image-cloud-amd64 initramfs-tools openssh-server cloud-init
#   qemu-guest-agent python3-cffi-backend sudo iproute2 (cloud-init brings
#   python3, which Ansible needs; it fails to configure without
#   python3-cffi-backend); systemd-networkd DHCP on en*; cloud-init with
#   datasource_list [NoCloud, None], network config disabled, the locale
#   left as it is (C.UTF-8, which LANG in /etc/default/locale also says:
#   else `cloud-init status` reports an error) and the hostname in
#   /etc/hosts; no ssh host keys (cloud-init makes them on first boot); an
#   empty machine-id.  The root filesystem is ext4 made by `mke2fs -d` on a
#   sparse file (no loop device, no partition table: boot with
#   root=/dev/vda), then `qemu-img convert -c -O qcow2`.  The kernel and
#   initrd are copied out of it for direct kernel boot.
#
# Usage:  image.sh [CACHE_DIR]
#   CACHE_DIR  default $BOMARUN_GUEST_IMAGE_CACHE or ~/.cache/bomarun/guest-image
# Environment:
#   BOMARUN_GUEST_MIRROR  a Debian mirror URL to use instead of the one the
#                         apt sources name
#
# Output: CACHE_DIR/KEY/{debian-12.qcow2,vmlinuz,initrd.img,SHA512SUMS,build-info}
# where KEY is a short hash of this script's text, the mirror URL and the
# package list: a changed recipe builds a new directory.  A directory whose
# SHA512SUMS verifies is reused as it is.  The build happens in
# CACHE_DIR/.build.XXXXXX and is renamed into place when complete; the
# downloaded .debs stay in CACHE_DIR/debs (debootstrap's --cache-dir) so a
# rebuild does not fetch them again.  The last line on stdout is the image
# directory; progress goes to stderr, tool output to CACHE_DIR/build.log.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8

log() { printf '[virt-stack image] %s\n' "$*" >&2; }
die() { printf '[virt-stack image] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

case "${1:-}" in -h|--help) sed -n '2,32p' "$0"; exit 0 ;; esac
CACHE=${1:-${BOMARUN_GUEST_IMAGE_CACHE:-$HOME/.cache/bomarun/guest-image}}
case "$CACHE" in /*) ;; *) CACHE="$PWD/$CACHE" ;; esac
CACHE=${CACHE%/}

SUITE=bookworm
PKGS=(systemd-sysv udev dbus kmod linux-image-cloud-amd64 initramfs-tools
      openssh-server cloud-init qemu-guest-agent python3-cffi-backend sudo iproute2)
DISK_SIZE=4G          # the guest's virtual disk; qcow2 stores only what is used
FILES=(debian-12.qcow2 vmlinuz initrd.img)

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"
for t in debootstrap mke2fs qemu-img sha512sum chroot; do
  command -v "$t" >/dev/null || die "$t is missing: run scripts/virt-stack install"
done

# --- the mirror: the first enabled `deb` source for $SUITE in apt's own
# configuration (deb822 .sources files and the one-line sources.list format).
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # Stanzas are separated by blank lines; keys are case-insensitive.
    awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " suite " ") && uris != "") {
          split(uris, u, " "); print u[1]; found = 1; exit
        }
        types = ""; suites = ""; uris = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      {
        k = tolower($1); sub(/:$/, "", k); $1 = ""; v = $0; sub(/^[ \t]+/, "", v)
        if (k == "types") types = v
        else if (k == "suites") suites = v
        else if (k == "uris") uris = v
        else if (k == "enabled") enabled = tolower(v)
      }
      END { if (!found) flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENT...
    awk -v suite="$SUITE" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f"
  done
}
MIRROR=${BOMARUN_GUEST_MIRROR:-$(find_mirror | sed -n 1p)}
[ -n "$MIRROR" ] || die "no enabled 'deb' source for $SUITE in /etc/apt/sources.list{,.d/*}: set BOMARUN_GUEST_MIRROR"
MIRROR=${MIRROR%/}

KEY=$( { cat "$0"; echo "$MIRROR"; echo "${PKGS[*]}"; } | sha256sum | cut -c1-12)
OUT="$CACHE/$KEY"
mkdir -p "$CACHE"

verify() { [ -f "$1/SHA512SUMS" ] && (cd "$1" && sha512sum --quiet --strict -c SHA512SUMS >/dev/null 2>&1); }

# unmount_all DIR: unmount whatever debootstrap (or we) left mounted under
# DIR (it bind-mounts the host's /dev when it finds /.dockerenv): removing
# files through such a mount would delete the host's device nodes.  True
# when nothing is mounted under DIR any more.
unmount_all() {
  local m
  awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  ! awk -v p="$1/" 'index($2, p) == 1 { f = 1 } END { exit !f }' /proc/mounts
}
# remove_build DIR: a build directory, unmounted first; kept if that fails.
remove_build() {
  if unmount_all "$1"; then rm -rf --one-file-system "$1"; else log "still mounted under $1: not removing it"; fi
}

# One build per cache at a time; a second caller waits, then reuses.
exec 9>"$CACHE/.lock"
flock 9

if verify "$OUT"; then
  log "reusing $OUT"
  echo "$OUT"
  exit 0
fi

# What a killed build left behind (we hold the lock: no build is running).
for d in "$CACHE"/.build.*; do
  if [ -d "$d" ]; then remove_build "$d"; fi
done

BUILD_LOG="$CACHE/build.log"
: >"$BUILD_LOG"
T_ALL=$(now)
log "building the guest image $KEY from $MIRROR ($SUITE) (log: $BUILD_LOG)"
TMP=$(mktemp -d "$CACHE/.build.XXXXXX")
ROOT="$TMP/rootfs"

cleanup() {
  local rc=$?
  if [ -d "$TMP" ]; then remove_build "$TMP"; fi
  if [ "$rc" -ne 0 ]; then
    tail -25 "$BUILD_LOG" >&2 || true
    log "ERROR: the image build failed (log: $BUILD_LOG)"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
# run DESCRIPTION CMD...: CMD's output to the build log; fail naming it.
run() {
  local what=$1; shift
  echo "### $what: $*" >>"$BUILD_LOG"
  "$@" >>"$BUILD_LOG" 2>&1 || die "$what failed: $*"
}

# --- debootstrap ------------------------------------------------------------
T=$(now)
mkdir -p "$CACHE/debs" "$ROOT"
include=$(IFS=,; echo "${PKGS[*]}")
run debootstrap debootstrap --variant=minbase --include="$include" \
  --cache-dir="$CACHE/debs" "$SUITE" "$ROOT" "$MIRROR"
unmount_all "$TMP" || die "debootstrap left mounts under $TMP"
log "debootstrap: $(elapsed "$T") s"

# --- configuration ----------------------------------------------------------
T=$(now)
# No fsck (pass 0): the root is mounted rw by the initramfs (root=/dev/vda
# rw) and every guest's disk is a throwaway overlay.
cat >"$ROOT/etc/fstab" <<'F'
# bomarun guest image: the whole virtio disk is the root filesystem
/dev/vda  /  ext4  rw,errors=remount-ro  0 0
F
echo debian >"$ROOT/etc/hostname"
cat >"$ROOT/etc/hosts" <<'F'
127.0.0.1 localhost
::1       localhost ip6-localhost ip6-loopback
F
# DHCP on every ethernet interface (qemu user-mode networking answers it).
mkdir -p "$ROOT/etc/systemd/network"
cat >"$ROOT/etc/systemd/network/20-en.network" <<'F'
[Match]
Name=en*

[Network]
DHCP=yes
F
run "enable systemd-networkd" chroot "$ROOT" systemctl enable systemd-networkd.service
# Boot must not wait two minutes for an interface that never configures.
mkdir -p "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat >"$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d/bomarun.conf" <<'F'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
F
# cloud-init: NoCloud seed (a cidata ISO or disk), else nothing; networkd
# already does DHCP; the instance's hostname in /etc/hosts (else sudo and
# Ansible's facts complain that it does not resolve: there is no DNS behind
# restrict=on).  The locale: the locales package is absent, so cc_locale
# must not run locale-gen.  `locale: false` skips the module but fails
# cloud-init's schema (a WARNING "Invalid cloud-config provided" in
# /var/log/cloud-init.log on every boot); `locale: C.UTF-8`, equal to what
# /etc/default/locale already says, is valid and makes the module a no-op.
cat >"$ROOT/etc/cloud/cloud.cfg.d/90-bomarun.cfg" <<'F'
datasource_list: [NoCloud, None]
network: {config: disabled}
locale: C.UTF-8
manage_etc_hosts: true
F
echo 'LANG=C.UTF-8' >"$ROOT/etc/default/locale"
# Per-instance identity is made on first boot.
rm -f "$ROOT"/etc/ssh/ssh_host_*
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
# No initrd yet?  (debootstrap configures the kernel before initramfs-tools
# in some orders.)
if ! ls "$ROOT"/boot/initrd.img-* >/dev/null 2>&1; then
  run update-initramfs chroot "$ROOT" update-initramfs -c -k all
fi
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb
rm -rf "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/tmp/* "$ROOT"/var/tmp/*
log "configuration: $(elapsed "$T") s"

# --- disk image, kernel, initrd -----------------------------------------------
T=$(now)
mkdir "$TMP/out"
kernel=$(ls "$ROOT"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)
initrd=$(ls "$ROOT"/boot/initrd.img-* 2>/dev/null | sort -V | tail -1)
[ -n "$kernel" ] && [ -n "$initrd" ] || die "no kernel or initrd in $ROOT/boot"
kver=${kernel##*/vmlinuz-}
install -m 0644 "$kernel" "$TMP/out/vmlinuz"
install -m 0644 "$initrd" "$TMP/out/initrd.img"
truncate -s "$DISK_SIZE" "$TMP/disk.raw"
run mke2fs mke2fs -q -F -t ext4 -L bomarun-root -d "$ROOT" "$TMP/disk.raw"
run qemu-img qemu-img convert -c -O qcow2 "$TMP/disk.raw" "$TMP/out/debian-12.qcow2"
rm -f "$TMP/disk.raw"
chmod 0644 "$TMP/out/debian-12.qcow2"
(cd "$TMP/out" && sha512sum "${FILES[@]}" >SHA512SUMS)
{
  echo "KEY=$KEY"
  echo "SUITE=$SUITE"
  echo "MIRROR=$MIRROR"
  echo "PACKAGES=${PKGS[*]}"
  echo "KERNEL=$kver"
  echo "DISK_VIRTUAL_SIZE=$DISK_SIZE"
  echo "BUILT=$(date -u +%FT%TZ)"
  echo "BUILD_SECONDS=$(elapsed "$T_ALL")"
} >"$TMP/out/build-info"
log "disk image: $(elapsed "$T") s ($(du -m "$TMP/out/debian-12.qcow2" | cut -f1) MiB qcow2, kernel $kver)"

# --- into place ---------------------------------------------------------------
if [ -e "$OUT" ]; then rm -rf --one-file-system "$OUT"; fi   # incomplete or corrupt
mv "$TMP/out" "$OUT"
log "built $OUT in $(elapsed "$T_ALL") s"
echo "$OUT"
