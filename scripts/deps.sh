#!/usr/bin/env bash
# Installs what bomarun needs to build, test and benchmark on Debian 12.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  liblua5.4-dev lua5.4 libuv1-dev libjansson-dev libssh2-1-dev libcurl4-openssl-dev
  libssl-dev          # libcrypto: digests, base64, keys and CSRs (bomarun._crypto)
  lua-yaml            # lyaml: clouds.yaml, inline Ansible plays
  openssh-server openssh-client   # the ssh tests' real sshd, the ssh benchmark
  python3             # the silent-listener fault test
  lua-busted          # the spec runner (run inside the bomarun host)
  procps              # ps/pgrep for the process-group tests
  ansible-core        # bomarun.ansible, and the benchmarks' comparison
  lua-check clang-format cppcheck   # scripts/lint
  clang libclang-rt-14-dev          # libFuzzer, for tests/fuzz/run.sh (build-fuzz)
  libvirt-dev         # bomarun.virt (the _virt module, loaded on first require)
  qemu-utils xorriso  # bomarun.virt: qcow2 overlays (qemu-img), NoCloud seed ISOs
)

# kubectl (checks that the Kubernetes replay server answers a real client):
# Debian's kubernetes-client, unless a kubectl from another package is
# already installed (the two packages both ship /usr/bin/kubectl).
command -v kubectl >/dev/null 2>&1 || PKGS+=(kubernetes-client)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages with daemons (openssh-server) must not start them: the tests run
# their own, on loopback.  policy-rc.d is Debian's switch for that.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  added_policy=1
fi
cleanup() { [ -z "$added_policy" ] || $SUDO rm -f "$policy"; }
trap cleanup EXIT
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
