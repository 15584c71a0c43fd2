#!/usr/bin/env bash
# Installs what the libvirt test tier needs, from Debian 12's own packages:
# libvirtd + virtlogd and virsh (libvirt-daemon-system, libvirt-clients),
# qemu (qemu-system-x86, qemu-utils for qemu-img), the C library's headers
# for the project's binding (libvirt-dev), and what builds and seeds the
# guest image: debootstrap, e2fsprogs (mke2fs -d), xorriso (the NoCloud seed
# ISO), openssh-client (ssh, ssh-keygen), python3 (a free loopback port),
# util-linux (flock), procps.
#
# Idempotent: nothing is fetched when everything is installed; `apt-get
# update` only runs when a package has no candidate.  No package's
# maintainer script may leave a daemon running: a policy-rc.d that answers
# 101 ("action forbidden") is in place for the duration of the install (an
# existing one is kept as it is; ours is removed afterwards).
#
# Usage:  install.sh
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

PKGS=(
  libvirt-daemon-system libvirt-clients libvirt-dev
  qemu-system-x86 qemu-utils
  debootstrap e2fsprogs xorriso
  openssh-client python3 util-linux procps
)
LOG=/tmp/bomarun-libvirt-install.log

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) echo "virt-stack install: unknown argument: $1" >&2; exit 2 ;;
esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }'; }

missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "virt-stack install: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# Debian's lists may be missing on a fresh machine: apt must know every
# package before we ask for it.
: >"$LOG"
need_update=0
for p in "${missing[@]}"; do
  c=$(candidate "$p"); { [ -z "$c" ] || [ "$c" = "(none)" ]; } && need_update=1
done
if [ "$need_update" -eq 1 ]; then
  $SUDO apt-get update -qq >>"$LOG" 2>&1 || {
    tail -20 "$LOG" >&2
    echo "virt-stack install: apt-get update failed (log: $LOG)" >&2
    exit 1
  }
fi
for p in "${missing[@]}"; do
  c=$(candidate "$p")
  if [ -z "$c" ] || [ "$c" = "(none)" ]; then
    echo "virt-stack install: no candidate for $p in the configured apt sources" >&2
    exit 1
  fi
done

# Forbid service starts for the duration of the install (libvirt-daemon-
# system's postinst would start libvirtd, virtlogd and virtlockd).
POLICY=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# written by bomarun tests/stack/libvirt/install.sh; removed when it ends\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  ours=1
fi
cleanup() { if [ "$ours" -eq 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

echo "virt-stack install: installing ${missing[*]}"
t0=$(date +%s)
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$LOG" 2>&1 || {
  tail -30 "$LOG" >&2
  echo "virt-stack install: apt-get install failed (log: $LOG)" >&2
  exit 1
}
echo "virt-stack install: done in $(( $(date +%s) - t0 )) s (log: $LOG)"
