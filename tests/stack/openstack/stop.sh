#!/usr/bin/env bash
# Stops the local OpenStack test stack started by start.sh from STATE_DIR:
# each recorded process group, newest first, by its leader's PID (TERM, then
# KILL after 10 s).  A PID that is not ours any more (its process does not
# carry BOMARUN_OPENSTACK_STACK=STATE_DIR) is left alone.  Never by name.
# The state directory is kept (logs); start.sh wipes it on the next start.
#
# Usage:  stop.sh [STATE_DIR]    (default $BOMARUN_OPENSTACK_DIR or /tmp/bomarun-openstack)
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"
STATE=$(os_state_dir "${1:-}")
[ -d "$STATE/run" ] || { log "nothing to stop in $STATE"; exit 0; }
[ -f "$STATE/$MARKER" ] || die "$STATE was not made by start.sh"

names=$(tac "$STATE/run/order" 2>/dev/null || true)
# Anything with a pid file but missing from the order list, too.
for f in "$STATE"/run/*.pid; do
  [ -e "$f" ] || continue
  n=$(basename "$f" .pid)
  case "$n" in rabbitmq-beam) continue ;; esac
  printf '%s\n' "$names" | grep -qxF "$n" || names="$names
$n"
done
stopped=0
for name in $names; do
  f="$STATE/run/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if ours "$pid" || [ -n "$(group_members "$pid")" ]; then
    stop_group "$name" "$pid"
    stopped=$((stopped + 1))
  fi
  rm -f "$f"
done
rm -f "$STATE/run/order" "$STATE/run/started" "$STATE/run/layers"
log "stopped $stopped process groups from $STATE"
