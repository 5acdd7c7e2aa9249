#!/usr/bin/env bash
# novamig set-up: Debian packages, the .venv, novamig with its extras. Idempotent: a second run
# checks and changes nothing (it re-installs Python packages only when pyproject.toml changed).
# Run as root on Debian 12 (apt-get, network namespaces and QEMU need it).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-utils                          # qcow2 images (QEMU itself: see "QEMU" below)
  busybox-static gcc libc6-dev        # tiny guest image: busybox and the static C guest agent
  cpio xz-utils zstd                  # initramfs packing, kernel extraction
  mmdebstrap e2fsprogs                # full guest image: Debian root filesystem, ext4 without loop devices
  syslinux syslinux-common mtools dosfstools fdisk  # full image's bootable Glance disk
  xorriso                             # config drive for the cloud-init tests
  iproute2 bridge-utils               # guest network namespace, bridge, taps
  nftables conntrack                  # the embedded cloud's floating IPs: NAT inside its guest namespace
  pkg-config                          # libvirt-python builds against libvirt-dev (see "libvirt" below)
  python3 python3-venv python3-dev    # the .venv
  ca-certificates git
  chromium                            # the report's browser test: index.html loaded headless
  shellcheck                          # the DevStack plugin's scripts are checked by the tests
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

# bookworm-backports from the Debian mirror this machine's apt sources already name (QEMU and
# libvirt both come from there on bookworm). Writes the list file only when it is missing.
add_backports() {
  [ -f /etc/apt/sources.list.d/novamig-backports.list ] && return 0
  # Active entries only (deb822 `URIs:` or one-line `deb`), never comments or disabled files.
  local mirror
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
           | sed -n -E 's/^URIs:[[:space:]]*//p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//p' \
           | tr ' ' '\n' | grep -E '^https?://[^ ]+/debian/?$' | head -n1 || true)
  [ -n "$mirror" ] || { say "no Debian mirror found in /etc/apt sources; cannot add bookworm-backports" >&2; exit 3; }
  echo "deb ${mirror%/} bookworm-backports main" > /etc/apt/sources.list.d/novamig-backports.list
}

# QEMU. Debian 12's QEMU 7.2 loses guest writes during TCG live migration when more than one
# dirty-bitmap sync runs (upstream fixed it in 9.0: "physmem: Fix migration dirty bitmap coherency
# with TCG memory access"); destination kernels then crash. Measured here: 33 of 64 migrations
# broken with 7.2, 0 of 63 with 10.0. So on bookworm novamig takes QEMU from bookworm-backports,
# using the Debian mirror this machine's apt sources already name.
qemu_major() { qemu-system-x86_64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p'; }
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
need_qemu=no
if ! command -v qemu-system-x86_64 >/dev/null; then
  need_qemu=yes
elif [ "$codename" = bookworm ] && [ "$(qemu_major)" -lt 9 ]; then
  need_qemu=yes
fi
if [ "$need_qemu" = yes ]; then
  if [ "$codename" = bookworm ]; then
    add_backports
    say "installing QEMU from bookworm-backports"
    timeout 600 apt-get update -qq
    timeout 1200 apt-get install -y -qq --no-install-recommends -t bookworm-backports \
      qemu-system-x86 qemu-utils >/dev/null
  else
    say "installing QEMU"
    timeout 1200 apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils >/dev/null
  fi
fi
say "$(qemu-system-x86_64 --version | head -n1)"

# libvirt, for the embedded cloud's libvirt mode (Nova's own LibvirtDriver against two libvirtd on
# this machine). On bookworm it comes from the same backports source as QEMU, so the daemon and
# the emulator are the pair novamig was measured with (libvirt 11.3, QEMU 10.0). Each package is named with
# `/bookworm-backports` instead of `-t bookworm-backports`, which would also upgrade systemd.
# Only the monolithic daemon, its QEMU driver, virtlogd and the client are installed, never
# libvirt-daemon-system: no service is started or enabled, no default network or firewall rule is
# made; novamig starts its own libvirtd per compute host inside namespaces it creates.
LIBVIRT_PACKAGES=(libvirt0 libvirt-common libvirt-daemon libvirt-daemon-common libvirt-daemon-driver-qemu
                  libvirt-daemon-log libvirt-clients libvirt-dev)
libvirt_major() { libvirtd --version 2>/dev/null | sed -n 's/.* \([0-9]*\)\.[0-9.]*$/\1/p'; }
need_libvirt=no
for pkg in "${LIBVIRT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_libvirt=yes
done
if [ "$need_libvirt" = no ] && [ "$codename" = bookworm ] && [ "$(libvirt_major)" -lt 11 ]; then
  need_libvirt=yes
fi
if [ "$need_libvirt" = yes ]; then
  export DEBIAN_FRONTEND=noninteractive
  if [ "$codename" = bookworm ]; then
    add_backports
    say "installing libvirt from bookworm-backports"
    timeout 600 apt-get update -qq
    timeout 1200 apt-get install -y -qq --no-install-recommends \
      "${LIBVIRT_PACKAGES[@]/%//bookworm-backports}" >/dev/null
  else
    say "installing libvirt"
    timeout 1200 apt-get install -y -qq --no-install-recommends "${LIBVIRT_PACKAGES[@]}" >/dev/null
  fi
fi
say "$(libvirtd --version)"

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
