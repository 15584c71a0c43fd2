#!/usr/bin/env bash
# Stops the local OpenStack test stack started by start.sh from STATE_DIR:
# every recorded process group, by its leader's PID (SIGTERM to all, then
# SIGKILL to what is left after 15 s).  A recorded PID that now names another
# process (same PID, another start time) is left alone.  Never by name.
# The state directory is kept (logs, configs); start.sh wipes it on the next
# start.
#
# Usage:  stop.sh [STATE_DIR]    (default $BOMARUN_OPENSTACK_DIR or /tmp/bomarun-openstack)
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"
STATE=$(os_state_dir "${1:-}")
[ -d "$STATE/run" ] || { log "nothing to stop in $STATE"; exit 0; }
[ -f "$STATE/$MARKER" ] || die "$STATE was not made by start.sh"

names=""
for f in "$STATE"/run/*.pid; do
  [ -e "$f" ] || continue
  names="$names $(basename "$f" .pid)"
done
live=0
for n in $names; do ours "$n" && live=$((live + 1)); done
# The database last: services going down must not lose it mid-request.
svc=""; db=""
for n in $names; do if [ "$n" = mariadb ]; then db=$n; else svc="$svc $n"; fi; done
stop_groups $svc
[ -z "$db" ] || stop_groups $db
for n in $names; do rm -f "$STATE/run/$n.pid" "$STATE/run/$n.start"; done
rm -f "$STATE/run/order" "$STATE/run/started" "$STATE/run/layers"
log "stopped $live process groups from $STATE"
