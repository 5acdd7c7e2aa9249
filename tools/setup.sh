#!/usr/bin/env bash
# novamig set-up: Debian packages, the .venv, novamig with its extras. Idempotent: a second run
# checks and changes nothing (it re-installs Python packages only when pyproject.toml changed).
# Run as root on Debian 12 (apt-get, network namespaces and QEMU need it).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils          # the hypervisor: real QEMU guests and live migrations
  busybox-static gcc libc6-dev        # tiny guest image: busybox and the static C guest agent
  cpio xz-utils zstd                  # initramfs packing, kernel extraction
  mmdebstrap e2fsprogs                # full guest image: Debian root filesystem, ext4 without loop devices
  syslinux syslinux-common mtools dosfstools fdisk  # full image's bootable Glance disk
  xorriso                             # config drive for the cloud-init tests
  iproute2 bridge-utils               # guest network namespace, bridge, taps
  python3 python3-venv python3-dev    # the .venv
  ca-certificates git
)

say() { printf 'novamig setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  say "run as root (apt-get, network namespaces and QEMU taps need it)" >&2
  exit 3
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 1200 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.novamig-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing novamig and its extras into .venv (first time: about 2 minutes)"
  timeout 600 .venv/bin/pip install -q --disable-pip-version-check -U pip
  timeout 1800 .venv/bin/pip install -q --disable-pip-version-check -e '.[embedded,dev]'
  echo "$want" > "$stamp"
else
  say ".venv up to date"
fi
