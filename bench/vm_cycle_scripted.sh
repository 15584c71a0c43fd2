#!/usr/bin/env bash
# The VM integration cycle the way the seed's driver does it (virt-install,
# cloud-localds, `virsh domifaddr` polling, ssh loops, ansible-playbook with
# `-e @file`), as the shell script an operator would write: the scripted
# side of bench/vm_cycle.lua, on the same image, playbooks and extra-vars as
# runbooks/vm-integration.lua --profile local-vm.
#
#   bench/vm_cycle_scripted.sh IMAGE_DIR WORKDIR    one cycle; WORKDIR must not exist
#   bench/vm_cycle_scripted.sh --deps               install virtinst and cloud-image-utils
#
# Packages: the bench (bench/vm_cycle.lua) runs `--deps` first, untimed:
# it installs virtinst (virt-install) and cloud-image-utils (cloud-localds)
# with apt-get --no-install-recommends when dpkg-query says they are missing
# (idempotent; waits for the dpkg lock).  A cycle run only checks that the
# tools are there.
#
# IMAGE_DIR is what `scripts/virt-stack image` prints (debian-12.qcow2,
# vmlinuz, initrd.img, SHA512SUMS); libvirtd must be running
# (scripts/virt-stack start).  Like the seed, the cached image is used as it
# is (the seed checks SHA512SUMS only when it downloads).
#
# Output: one machine-readable line per phase on stdout,
#   PHASE <name> <start_epoch> <end_epoch>
# plus `DOMAIN <name>`, `PORT <port>`, `BOOT_ID <before> <after>`; the
# tools' chatter goes to stderr.  Phases: prepare, define+start (virt-install),
# domifaddr, ssh-wait, cloud-init, apply-base, apply-service, reboot,
# verify, checks, snapshot, destroy, undefine, remove-files.
#
# Environment: VM_DOMIFADDR_TRIES (default 3; the seed polls `virsh
# domifaddr --source lease` every 4 s for up to 120 s and exits when no
# lease comes: with user-mode networking none ever does, so this script
# gives up after that many tries and uses the known loopback forward),
# VM_KERNEL_ARGS (default "root=/dev/vda rw console=ttyS0"),
# VM_BOOT_DEADLINE (seconds for each boot to answer ssh, default 600).
set -euo pipefail
# Debian's tools (a pyenv shim may come first on PATH on these machines).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

deps() {
  local missing=()
  local p
  for p in virtinst cloud-image-utils; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]}" >&2
  while fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1; do sleep 5; done
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
}

if [ "${1:-}" = "--deps" ]; then deps; exit 0; fi
if [ $# -ne 2 ]; then sed -n '2,34p' "$0" >&2; exit 2; fi

IMG=$(cd "$1" && pwd)
WORK=$2
HERE=$(cd "$(dirname "$0")/.." && pwd)
DATA=$HERE/runbooks/data/vm-integration
URI=qemu:///system
TRIES=${VM_DOMIFADDR_TRIES:-3}
KERNEL_ARGS=${VM_KERNEL_ARGS:-root=/dev/vda rw console=ttyS0}
DEADLINE=${VM_BOOT_DEADLINE:-600}

die() { echo "vm_cycle_scripted: $*" >&2; exit 1; }
for t in virt-install cloud-localds virsh qemu-img ssh ssh-keygen ansible-playbook python3; do
  command -v "$t" >/dev/null || die "$t is missing (bench/vm_cycle_scripted.sh --deps)"
done
[ -f "$IMG/debian-12.qcow2" ] || die "no debian-12.qcow2 in $IMG"
[ ! -e "$WORK" ] || die "$WORK exists"

# phase NAME START: print the phase line (bash's clock: no fork).
phase() { echo "PHASE $1 $2 $EPOCHREALTIME"; }

NAME="bomarun-bench-$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cleanup() {
  local rc=$?
  if virsh -c "$URI" dominfo "$NAME" >/dev/null 2>&1; then
    virsh -c "$URI" destroy "$NAME" >/dev/null 2>&1 || true
    virsh -c "$URI" undefine "$NAME" --snapshots-metadata >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  [ "$rc" -eq 0 ] || echo "vm_cycle_scripted: FAILED (exit $rc); $NAME destroyed, $WORK removed" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prepare: overlay, key, NoCloud seed, a free loopback port, inventory ---------
T=$EPOCHREALTIME
mkdir -p "$WORK"
qemu-img create -q -f qcow2 -F qcow2 -b "$IMG/debian-12.qcow2" "$WORK/disk.qcow2"
ssh-keygen -q -t ed25519 -N '' -C "$NAME" -f "$WORK/id_ed25519"
cat >"$WORK/user-data" <<UD
#cloud-config
users:
  - name: bomarun
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    shell: /bin/bash
    lock_passwd: true
    ssh_authorized_keys:
      - $(cat "$WORK/id_ed25519.pub")
ssh_pwauth: false
UD
cat >"$WORK/meta-data" <<MD
instance-id: iid-$NAME
local-hostname: $NAME
MD
cloud-localds "$WORK/seed.iso" "$WORK/user-data" "$WORK/meta-data"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/inventory.ini" <<INV
[local_hosts]
$NAME ansible_host=127.0.0.1 ansible_port=$PORT ansible_user=bomarun ansible_ssh_private_key_file=$WORK/id_ed25519 ansible_become=true ansible_python_interpreter=/usr/bin/python3 ansible_ssh_common_args='-o UserKnownHostsFile=$WORK/known_hosts -o StrictHostKeyChecking=no'
INV
echo "DOMAIN $NAME"
echo "PORT $PORT"
phase prepare "$T"

# --- define + start: virt-install --import ------------------------------------------
T=$EPOCHREALTIME
virt-install --connect "$URI" --import --name "$NAME" --memory 1024 --vcpus 2 --virt-type qemu --machine pc \
  --boot "kernel=$IMG/vmlinuz,initrd=$IMG/initrd.img,kernel_args=$KERNEL_ARGS" \
  --disk "path=$WORK/disk.qcow2,format=qcow2,bus=virtio" \
  --disk "path=$WORK/seed.iso,device=cdrom" \
  --network none \
  --qemu-commandline="-netdev user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:22 -device virtio-net-pci,netdev=n0,bus=pci.0,addr=0x1e" \
  --serial "file,path=$WORK/console.log" \
  --channel unix,target.type=virtio,name=org.qemu.guest_agent.0 \
  --rng /dev/urandom --memballoon none --controller usb,model=none \
  --xml ./features/tcg/tb-cache=256 --xml ./features/tcg/tb-cache/@unit=MiB \
  --seclabel type=static,model=dac,label=+0:+0,relabel=no \
  --graphics none --noautoconsole --osinfo detect=on,require=off >&2
phase define+start "$T"

# --- the address: the seed polls for a DHCP lease ---------------------------------------
T=$EPOCHREALTIME
IP=""
for i in $(seq 1 "$TRIES"); do
  IP=$(virsh -c "$URI" domifaddr "$NAME" --source lease 2>/dev/null \
         | awk '$3 == "ipv4" { sub("/.*", "", $4); print $4; exit }')
  if [ -n "$IP" ]; then break; fi
  if [ "$i" -lt "$TRIES" ]; then sleep 4; fi
done
# user-mode networking has no lease: the known loopback forward
[ -n "$IP" ] || IP=127.0.0.1
phase domifaddr "$T"

SSH=(ssh -F /dev/null -i "$WORK/id_ed25519" -p "$PORT" -o IdentitiesOnly=yes -o BatchMode=yes
     -o ConnectTimeout=5 -o StrictHostKeyChecking=no -o UserKnownHostsFile="$WORK/known_hosts"
     -o LogLevel=ERROR "bomarun@$IP")
# One command in the guest, at most 15 s (slirp accepts the connection before
# sshd is up: the client would wait for a banner that never comes).
gssh() { timeout 15 "${SSH[@]}" "$@" </dev/null; }
# wait_boot NOT: until ssh answers with a boot id other than NOT; 5 s between tries.
wait_boot() {
  local end=$((SECONDS + DEADLINE)) id
  while :; do
    if id=$(gssh cat /proc/sys/kernel/random/boot_id 2>/dev/null) && [ -n "$id" ] && [ "$id" != "$1" ]; then
      echo "$id"; return 0
    fi
    [ "$SECONDS" -lt "$end" ] || die "no ssh on $IP:$PORT within $DEADLINE s"
    sleep 5
  done
}

# --- ssh ------------------------------------------------------------------------------------
T=$EPOCHREALTIME
BOOT1=$(wait_boot none)
phase ssh-wait "$T"

# --- cloud-init ---------------------------------------------------------------------------
T=$EPOCHREALTIME
# (cloud-init restarts sshd once while it runs: an ssh that fails is tried again)
ci=""
for _ in 1 2 3; do
  if ci=$(timeout "$DEADLINE" "${SSH[@]}" cloud-init status --wait </dev/null | tail -1); then break; fi
  sleep 5
done
[ "$ci" = "status: done" ] || die "cloud-init: $ci"
phase cloud-init "$T"

# --- apply: the same playbook twice, tags base then service ---------------------------------
cd "$HERE"
for tags in base service; do
  T=$EPOCHREALTIME
  ansible-playbook -i "$WORK/inventory.ini" "$DATA/site.yml" --limit "$NAME" --tags "$tags" \
    -e "@$DATA/overrides/local.yml" >&2
  phase "apply-$tags" "$T"
done

# --- reboot: libvirt, then ssh until the boot id changes --------------------------------------
T=$EPOCHREALTIME
virsh -c "$URI" reboot "$NAME" >&2
sleep 5
BOOT2=$(wait_boot "$BOOT1")
phase reboot "$T"
echo "BOOT_ID $BOOT1 $BOOT2"

# --- verify: the verify playbook, then the profile's checks --------------------------------------
T=$EPOCHREALTIME
ansible-playbook -i "$WORK/inventory.ini" "$DATA/verify.yml" --limit "$NAME" \
  -e "@$DATA/overrides/local.yml" -e "bomarun_boot_id_before=$BOOT1" -e "bomarun_boot_id_after=$BOOT2" >&2
phase verify "$T"
T=$EPOCHREALTIME
[ "$(gssh systemctl is-active ssh)" = active ] || die "sshd is not active"
[ "$(gssh systemctl is-active bomarun-it-boot.service)" = active ] || die "bomarun-it-boot.service is not active"
phase checks "$T"

# --- snapshot baseline -------------------------------------------------------------------------------
T=$EPOCHREALTIME
virsh -c "$URI" snapshot-create-as "$NAME" "Snapshot 1" --description "baseline after verify" >&2
phase snapshot "$T"

# --- teardown ------------------------------------------------------------------------------------------
T=$EPOCHREALTIME
virsh -c "$URI" destroy "$NAME" >&2
phase destroy "$T"
T=$EPOCHREALTIME
virsh -c "$URI" undefine "$NAME" --snapshots-metadata >&2
phase undefine "$T"
T=$EPOCHREALTIME
rm -rf "$WORK"
phase remove-files "$T"
