#!/usr/bin/env bash
# Is the libvirt test tier in STATE_DIR up?  Each daemon start.sh recorded:
# alive (and ours) with its resident memory; whether qemu:///system answers;
# `virsh list --all`; and the qemu processes libvirt runs for its domains
# (with their memory).  Exits 0 when both daemons are alive and answer.
#
# Usage:  status.sh [STATE_DIR]   (default $BOMARUN_LIBVIRT_DIR or /tmp/bomarun-libvirt)
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/common.sh"
case "${1:-}" in -h|--help) sed -n '2,7p' "$0"; exit 0 ;; esac
STATE=$(lv_state_dir "${1:-}")
rc=0
for name in virtlogd libvirtd; do
  pid=$(pid_of "$name")
  if ours "$name"; then
    printf '%-10s pid %-7s running  %5d MiB\n' "$name" "$pid" $(( $(rss_kb "$pid") / 1024 ))
  else
    printf '%-10s pid %-7s NOT RUNNING\n' "$name" "${pid:--}"; rc=1
  fi
done
if [ "$rc" -eq 0 ] && answers; then
  printf '%-10s %s answers\n' "$URI" ""
  virsh -c "$URI" list --all
else
  printf '%s does not answer (or is not ours)\n' "$URI"; rc=1
fi
q=$(qemu_pids)
if [ -n "$q" ]; then
  echo "qemu processes (libvirt's domains; their parent is PID 1 after libvirt's double fork):"
  while read -r dom pid; do
    printf '  %-28s pid %-7s %5d MiB\n' "$dom" "$pid" $(( $(rss_kb "$pid") / 1024 ))
  done <<<"$q"
else
  echo "qemu processes: none"
fi
exit $rc
