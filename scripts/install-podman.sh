#!/usr/bin/env bash
# Podman, runc and debootstrap from Debian's packages for the container test (root only).
#
# The container test (tests/deploy/test_containers.py) builds the images with podman,
# runs docker-compose.yml against podman's Docker-compatible API, and builds the local
# stand-in for the python:3.11-slim base image with debootstrap (no registry is
# reachable). Two engine settings go into /etc/containers/containers.conf because the
# defaults fail on machines like CI's: the runc runtime (crun refuses cgroups in hybrid
# mode) and default ulimits of 1024 open files and processes, or the machine's own limit
# when lower (podman's defaults are far above, and runc is refused higher limits there:
# "error setting rlimits ... operation not permitted"; 1024 is what was seen to work).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "install-podman: not root; install podman, runc and debootstrap to run the container test" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-podman: no apt-get; install podman, runc and debootstrap by hand" >&2
  exit 0
fi
# netavark needs iptables for the Compose network's bridge; aardvark-dns resolves service names.
packages=(podman runc debootstrap netavark aardvark-dns iptables slirp4netns catatonit uidmap)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-podman: installing ${missing[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The machine's hard limits, capped at what runc is allowed to set.
limit() {
  local value="$1" cap="$2"
  if [ "$value" = unlimited ] || [ "$value" -gt "$cap" ]; then value="$cap"; fi
  printf '%s' "$value"
}
nofile="$(limit "$(ulimit -Hn)" 1024)"
nproc="$(limit "$(ulimit -Hu)" 1024)"
conf=/etc/containers/containers.conf
marker="# bonefrac: scripts/install-podman.sh"
mkdir -p /etc/containers
if grep -qF "$marker" "$conf" 2>/dev/null; then
  exit 0
fi
if grep -qE '^\[(containers|engine|network)\]' "$conf" 2>/dev/null; then
  # Appending would repeat a TOML table and break the file: leave it to its owner.
  echo "install-podman: $conf has its own settings; make sure it sets runtime = \"runc\"" \
    "and default_ulimits nofile/nproc <= $nofile/$nproc" >&2
  exit 0
fi
{
  cat <<CONF
$marker
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"

[network]
network_backend = "netavark"
CONF
} >> "$conf"
echo "install-podman: wrote runtime runc and ulimits nofile=$nofile nproc=$nproc to $conf"
