#!/usr/bin/env bash
# Stops the daemons start.sh started from STATE_DIR: libvirtd, then virtlogd,
# each by its recorded PID (SIGTERM, up to 15 s, then SIGKILL).  A recorded
# PID that now names another process (another start time) is left alone;
# nothing is ever stopped by name.  Running domains are not touched: qemu
# processes outlive libvirtd (a later libvirtd reattaches to them); destroy
# them first (smoke.sh does) if they must go.
#
# Usage:  stop.sh [STATE_DIR]   (default $BOMARUN_LIBVIRT_DIR or /tmp/bomarun-libvirt)
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"
case "${1:-}" in -h|--help) sed -n '2,9p' "$0"; exit 0 ;; esac
STATE=$(lv_state_dir "${1:-}")
[ -d "$STATE/run" ] || { log "nothing to stop in $STATE"; exit 0; }
[ -f "$STATE/$MARKER" ] || die "$STATE was not made by start.sh"

if q=$(qemu_pids) && [ -n "$q" ]; then
  log "domains still running (they keep running without libvirtd): $(tr "\n" " " <<<"$q")"
fi

stop_one() { # NAME
  local name=$1 pid
  pid=$(pid_of "$name")
  if [ -z "$pid" ]; then return 0; fi
  if ! ours "$name"; then
    log "$name (pid $pid) is not running (or the PID is another process's now)"
    rm -f "$STATE/run/$name.pid" "$STATE/run/$name.start"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 75); do
    [ -d "/proc/$pid" ] || break
    sleep 0.2
  done
  if [ -d "/proc/$pid" ] && ours "$name"; then
    log "$name (pid $pid) still running after 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$STATE/run/$name.pid" "$STATE/run/$name.start"
  log "$name (pid $pid) stopped"
}
stop_one libvirtd
stop_one virtlogd
rm -f "$STATE/run/started"
