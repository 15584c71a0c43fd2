#!/usr/bin/env bash
# Proves the libvirt test tier end to end with nothing but virsh, qemu-img,
# xorriso and ssh (the reference the project's libvirt module follows):
#
#   image    the cached guest image (image.sh; built when missing)
#   prepare  a qcow2 overlay on the cached base, a fresh ed25519 key, a
#            NoCloud seed ISO (user `bomarun`, the key, passwordless sudo)
#   start    define + start a TCG domain: direct kernel boot, the overlay as
#            virtio vda, the seed as an IDE cdrom, serial console to a file,
#            qemu user-mode networking (restrict=on) with ssh forwarded from a
#            free 127.0.0.1 port
#   ssh      until ssh answers (every probe bounded by `timeout 15`)
#   cloud-init  `cloud-init status --wait`, the boot_id
#   reboot   `virsh reboot`, until ssh answers with another boot_id
#   agent    `virsh guestinfo --hostname` (through the qemu guest agent)
#            names the domain
#   teardown destroy, undefine, remove every file; check no qemu is left
#
# Usage:  smoke.sh [STATE_DIR]   (default $BOMARUN_LIBVIRT_DIR or /tmp/bomarun-libvirt)
# The daemons must be running (scripts/virt-stack start).  The work files are
# in STATE_DIR/smoke.XXXXXX and removed at the end; on failure they are kept
# (with the serial console and qemu's log) and the domain is still removed.
# Environment: BOMARUN_GUEST_IMAGE_CACHE (image.sh's cache),
#   BOMARUN_SMOKE_DEADLINE (seconds for each boot to reach ssh, default 300).
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"
case "${1:-}" in -h|--help) sed -n '2,24p' "$0"; exit 0 ;; esac
STATE=$(lv_state_dir "${1:-}")
BOOT_DEADLINE=${BOMARUN_SMOKE_DEADLINE:-300}

if ! ours libvirtd || ! answers; then
  die "libvirtd from $STATE is not running: run scripts/virt-stack start $STATE"
fi
for t in virsh qemu-img xorriso ssh ssh-keygen python3; do
  command -v "$t" >/dev/null || die "$t is missing: run scripts/virt-stack install"
done

declare -A TIMES
ORDER=()
phase_done() { TIMES[$1]=$(elapsed "$2"); ORDER+=("$1"); log "$1: ${TIMES[$1]} s"; }
T_ALL=$(now)

# --- image --------------------------------------------------------------------
T=$(now)
IMG=$("$LV_HERE/image.sh" | tail -1)
[ -f "$IMG/debian-12.qcow2" ] || die "image.sh gave no image"
phase_done image "$T"

# --- prepare ----------------------------------------------------------------------
T=$(now)
WORK=$(mktemp -d "$STATE/smoke.XXXXXX")
NAME="bomarun-smoke-${WORK##*.}"
NAME=${NAME,,}
QEMU_LOG=/var/log/libvirt/qemu/$NAME.log
ok=0
QPID=""
cleanup() {
  local rc=$?
  # The domain goes whatever happened; the files only when all went well.
  if virsh -c "$URI" dominfo "$NAME" >/dev/null 2>&1; then
    virsh -c "$URI" destroy "$NAME" >/dev/null 2>&1 || true
    virsh -c "$URI" undefine "$NAME" >/dev/null 2>&1 || true
  fi
  if [ -f "$QEMU_LOG" ]; then
    [ "$ok" -eq 1 ] || cp "$QEMU_LOG" "$WORK/qemu.log" 2>/dev/null || true
    rm -f "$QEMU_LOG"
  fi
  if [ "$ok" -eq 1 ]; then
    rm -rf --one-file-system "$WORK"
  else
    [ -f "$WORK/console.log" ] && { echo "--- serial console (last 30 lines):" >&2; tail -30 "$WORK/console.log" >&2; }
    log "FAILED (exit $rc); files kept in $WORK (console.log, qemu.log)"
  fi
}
trap cleanup EXIT

qemu-img create -q -f qcow2 -F qcow2 -b "$IMG/debian-12.qcow2" "$WORK/overlay.qcow2"
ssh-keygen -q -t ed25519 -N '' -C "bomarun-smoke" -f "$WORK/id_ed25519"
mkdir "$WORK/seed"
cat >"$WORK/seed/user-data" <<UD
#cloud-config
users:
  - name: bomarun
    shell: /bin/bash
    lock_passwd: true
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    ssh_authorized_keys:
      - $(cat "$WORK/id_ed25519.pub")
ssh_pwauth: false
UD
cat >"$WORK/seed/meta-data" <<MD
instance-id: $NAME
local-hostname: $NAME
MD
xorriso -as mkisofs -quiet -o "$WORK/seed.iso" -V cidata -J -R "$WORK/seed/user-data" "$WORK/seed/meta-data" 2>"$WORK/xorriso.log" \
  || { cat "$WORK/xorriso.log" >&2; die "xorriso failed"; }
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat >"$WORK/domain.xml" <<XML
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$NAME</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$IMG/vmlinuz</kernel>
    <initrd>$IMG/initrd.img</initrd>
    <cmdline>root=/dev/vda rw console=ttyS0</cmdline>
  </os>
  <features>
    <acpi/>
    <tcg>
      <tb-cache unit='MiB'>256</tb-cache>
    </tcg>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='$WORK/overlay.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='$WORK/seed.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <serial type='file'>
      <source path='$WORK/console.log'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:22'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=n0,bus=pci.0,addr=0x1e'/>
  </qemu:commandline>
</domain>
XML
phase_done prepare "$T"

# --- define + start -----------------------------------------------------------
T=$(now)
virsh -c "$URI" define "$WORK/domain.xml" >/dev/null
virsh -c "$URI" start "$NAME" >/dev/null
QPID=$(tr -d ' \n' <"/run/libvirt/qemu/$NAME.pid")
phase_done define+start "$T"
log "domain $NAME (qemu pid $QPID), ssh on 127.0.0.1:$PORT"

SSH=(ssh -F none -i "$WORK/id_ed25519" -p "$PORT" -o IdentitiesOnly=yes
     -o ConnectTimeout=5 -o BatchMode=yes -o StrictHostKeyChecking=no
     -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR bomarun@127.0.0.1)
# gssh CMD...: one command in the guest, at most 15 s.  slirp accepts the
# forwarded connection before sshd is up; the client then waits for a banner
# that never comes, so ConnectTimeout alone is not enough.
gssh() { timeout 15 "${SSH[@]}" "$@" </dev/null; }
# wait_ssh NOT_BOOT_ID: until ssh answers with a boot_id other than
# NOT_BOOT_ID; prints the boot_id.
wait_ssh() {
  local deadline id state
  deadline=$(( $(date +%s) + BOOT_DEADLINE ))
  while :; do
    if id=$(gssh cat /proc/sys/kernel/random/boot_id 2>/dev/null) && [ -n "$id" ] && [ "$id" != "$1" ]; then
      echo "$id"; return 0
    fi
    state=$(virsh -c "$URI" domstate "$NAME" 2>/dev/null || echo gone)
    [ "$state" = running ] || die "the domain is $state, not running"
    [ "$(date +%s)" -lt "$deadline" ] || die "no ssh on 127.0.0.1:$PORT within $BOOT_DEADLINE s"
    sleep 2
  done
}

# --- boot to ssh ----------------------------------------------------------------
T=$(now)
BOOT1=$(wait_ssh none)
phase_done boot-to-ssh "$T"

# --- cloud-init -----------------------------------------------------------------
T=$(now)
ci=$(timeout 300 "${SSH[@]}" cloud-init status --wait </dev/null 2>&1) || { echo "$ci" >&2; die "cloud-init status --wait failed"; }
ci=$(echo "$ci" | tail -1)
[ "$ci" = "status: done" ] || die "cloud-init: $ci"
phase_done cloud-init "$T"
# A clean first boot: no warning or error in cloud-init's log.
ciwarn=$(gssh "sudo grep -E '\\[(WARNING|ERROR|CRITICAL)\\]' /var/log/cloud-init.log" || true)
if [ -n "$ciwarn" ]; then echo "$ciwarn" >&2; die "cloud-init logged warnings or errors"; fi
[ "$(gssh sudo -n id -u)" = 0 ] || die "passwordless sudo does not work"
sysstate=$(gssh systemctl is-system-running --wait || true)
if [ "$sysstate" != running ]; then
  gssh systemctl --failed --no-legend >&2 || true
  die "the guest's systemd is $sysstate, not running"
fi
log "cloud-init $ci; systemd $sysstate; sudo works; $(gssh 'python3 --version; uname -r' | tr '\n' ' ')"
log "qemu resident memory: $(( $(rss_kb "$QPID") / 1024 )) MiB"
log "boot_id $BOOT1"

# --- reboot -------------------------------------------------------------------------
T=$(now)
virsh -c "$URI" reboot "$NAME" >/dev/null
BOOT2=$(wait_ssh "$BOOT1")
phase_done reboot-to-ssh "$T"
log "boot_id after reboot $BOOT2"

# --- guest agent ----------------------------------------------------------------------
T=$(now)
deadline=$(( $(date +%s) + 60 ))
until [ "$(virsh -c "$URI" guestinfo "$NAME" --hostname 2>/dev/null | awk '$1 == "hostname" { print $3 }')" = "$NAME" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "the guest agent did not answer within 60 s"
  sleep 1
done
phase_done agent "$T"

# --- teardown -----------------------------------------------------------------------------
T=$(now)
virsh -c "$URI" destroy "$NAME" >/dev/null
virsh -c "$URI" undefine "$NAME" >/dev/null
for _ in $(seq 1 50); do [ -d "/proc/$QPID" ] || break; sleep 0.1; done
[ ! -d "/proc/$QPID" ] || die "qemu (pid $QPID) still running after destroy"
phase_done destroy+undefine "$T"
if virsh -c "$URI" list --all --name | grep -qxF "$NAME"; then die "domain $NAME still defined"; fi
ok=1

summary=""
for p in "${ORDER[@]}"; do summary="$summary $p=${TIMES[$p]}s"; done
log "OK in $(elapsed "$T_ALL") s:$summary"
