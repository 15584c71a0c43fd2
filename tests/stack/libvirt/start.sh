#!/usr/bin/env bash
# Starts the libvirt daemons for the libvirt test tier, without systemd:
# `virtlogd --daemon` (qemu's log files go through it) and `libvirtd
# --daemon` (all drivers in one process; Debian 12's libvirt 9.0 has no
# virtqemud), so that qemu:///system answers.  The first start on a machine
# takes ~8-9 s (libvirtd probes qemu's capabilities and caches them in
# /var/cache/libvirt/qemu/capabilities); later starts 0.2-0.4 s.
#
# Usage:  start.sh [STATE_DIR]   (default $BOMARUN_LIBVIRT_DIR or /tmp/bomarun-libvirt)
#
# Idempotent: when the daemons recorded in STATE_DIR are alive (same PID and
# start time) and qemu:///system answers, they are reused.  PIDs in
# STATE_DIR/run/{virtlogd,libvirtd}.pid (+ .start, the start time), the
# daemons' own logs in STATE_DIR/log/.  qemu's per-domain logs stay where
# libvirt puts them (/var/log/libvirt/qemu/DOMAIN.log).
#
# Configuration: none.  libvirt's stock /etc/libvirt files work as they are
# here (root, no AppArmor/SELinux on the host, cgroup v1 mounted).  What the
# test guests need is in each domain's XML instead of qemu.conf, so nothing
# machine-wide is edited: <domain type='qemu'> (TCG: /dev/kvm is unusable)
# and a static DAC <seclabel> that runs qemu as root without relabelling
# (the image cache under /root is not reachable by the libvirt-qemu user).
# See smoke.sh and README.md.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"
case "${1:-}" in -h|--help) sed -n '2,23p' "$0"; exit 0 ;; esac
STATE=$(lv_state_dir "${1:-}")

[ "$(id -u)" -eq 0 ] || die "qemu:///system needs root"
for t in virtlogd libvirtd virsh qemu-system-x86_64; do
  command -v "$t" >/dev/null || die "$t is missing: run scripts/virt-stack install"
done

if [ -e "$STATE" ] && [ ! -f "$STATE/$MARKER" ] && [ -n "$(ls -A "$STATE" 2>/dev/null)" ]; then
  die "$STATE exists, is not empty and was not made by this script"
fi
mkdir -p "$STATE/run" "$STATE/log"
: >"$STATE/$MARKER"

T0=$(now)
if ours libvirtd && ours virtlogd && answers; then
  log "reusing libvirtd (pid $(pid_of libvirtd)) and virtlogd (pid $(pid_of virtlogd)) from $STATE"
  exit 0
fi

# Someone else's daemons own the sockets in /run/libvirt: starting ours would
# fail (or worse, take over their sockets); stopping theirs is not ours to do.
other_pid() { # NAME: a live NAME not recorded by us
  local p
  for p in $(pidof "$1" 2>/dev/null); do
    [ "$p" = "$(pid_of "$1")" ] && ours "$1" && continue
    echo "$p"; return 0
  done
  return 1
}
if p=$(other_pid libvirtd); then
  die "a libvirtd not started from $STATE is running (pid $p): stop it first (or use its STATE_DIR)"
fi
if ! ours virtlogd && p=$(other_pid virtlogd); then
  die "a virtlogd not started from $STATE is running (pid $p): stop it first (or use its STATE_DIR)"
fi

# start_daemon NAME CMD...: CMD daemonises itself and writes its PID file;
# its log (LIBVIRT_LOG_OUTPUTS: warnings and errors) goes to log/NAME.log.
start_daemon() {
  local name=$1 pid=""; shift
  rm -f "$STATE/run/$name.pid" "$STATE/run/$name.start"
  echo "--- $(date -u +%FT%TZ) start" >>"$STATE/log/$name.log"
  if ! LIBVIRT_LOG_OUTPUTS="3:file:$STATE/log/$name.log" \
       "$@" --daemon --pid-file="$STATE/run/$name.pid" </dev/null >>"$STATE/log/$name.log" 2>&1; then
    tail -20 "$STATE/log/$name.log" >&2 || true
    die "$name failed to start (log: $STATE/log/$name.log)"
  fi
  for _ in $(seq 1 50); do
    pid=$(pid_of "$name")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && break
    sleep 0.1
  done
  if [ -z "$pid" ] || [ ! -d "/proc/$pid" ]; then
    tail -20 "$STATE/log/$name.log" >&2 || true
    die "$name wrote no PID file, or exited (log: $STATE/log/$name.log)"
  fi
  starttime "$pid" >"$STATE/run/$name.start"
  log "$name started (pid $pid)"
}

# A half-started pair (libvirtd died, or does not answer): stop what is ours.
if ours libvirtd; then
  log "libvirtd (pid $(pid_of libvirtd)) does not answer: restarting it"
  "$LV_HERE/stop.sh" "$STATE" >&2
fi

ours virtlogd || start_daemon virtlogd virtlogd
start_daemon libvirtd libvirtd

# Until qemu:///system answers (the first start probes qemu's capabilities).
deadline=$(( $(date +%s) + 120 ))
until answers; do
  if ! ours libvirtd; then
    tail -20 "$STATE/log/libvirtd.log" >&2 || true
    die "libvirtd exited (log: $STATE/log/libvirtd.log)"
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    tail -20 "$STATE/log/libvirtd.log" >&2 || true
    die "qemu:///system did not answer within 120 s (log: $STATE/log/libvirtd.log)"
  fi
  sleep 0.2
done
date -u +%FT%TZ >"$STATE/run/started"
log "qemu:///system answers after $(elapsed "$T0") s ($(virsh -c "$URI" version 2>/dev/null | awk -F': ' '/Running hypervisor/ { print $2 }')); stop with: scripts/virt-stack stop $STATE"
