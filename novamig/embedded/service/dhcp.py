"""DHCP for the libvirt mode's guests: each Neutron port's address, to that port's MAC only.

On a real cloud a guest booted from a disk image (the full guest's Glance form) takes its address
by DHCP from Neutron's DHCP agent: a dnsmasq per network, in the network's namespace, with one
host entry (MAC → fixed IP) per port and no dynamic range. The QEMU mode gives the guest its address
on the kernel command line instead, and so does the libvirt mode for the tiny guest (a kernel boot);
the full guest boots from its disk and asks by DHCP. This module is the libvirt mode's DHCP agent:
busybox's ``udhcpd`` (busybox-static is installed for the tiny guest already; dnsmasq is not),
inside the guests' network namespace on its bridge, with one ``static_lease`` per port.

Why so, and what it does not do:

- **static leases only**: udhcpd's dynamic pool is the server's own address (``start`` = ``end`` =
  the gateway, which udhcpd never hands out), so a MAC without a port gets no offer at all, as
  Neutron's dnsmasq in ``static`` mode answers none; the guest's client asks again;
- **a new port restarts the server**: udhcpd reads its configuration at start only. Ports are made
  before Nova spawns the guest (seconds before its first DISCOVER), and the full guest's client
  retries every 2 s for 40 s, so a DISCOVER lost during the restart is asked again;
- **the lease** is a day: the guest's client takes one lease and exits (the address stays for the
  guest's life), and a live-migrated guest keeps it — the address belongs to the port;
- **its life is the cloud process's**: started by `novamig.hypervisor.runtime.spawn` (own process
  group, killed when its parent dies), ended by PID with the cloud; its files live in the cloud's
  work directory, which ``cloud down`` removes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from novamig.hypervisor import runtime

BUSYBOX = "busybox"
LEASE_S = 86400
"""The lease time offered: longer than any guest of a run lives."""


class DhcpError(Exception):
    """The DHCP server could not be started."""


def udhcpd_conf(*, interface: str, server: str, prefix: int, leases: dict[str, str], directory: Path) -> str:
    """udhcpd's configuration: `leases` (MAC → address) as static leases on `interface`, whose own
    address `server` is the gateway and the whole dynamic pool (see the module docstring)."""
    mask = str(ipaddress.ip_network(f"0.0.0.0/{prefix}").netmask)
    lines = [
        "# novamig libvirt mode: one static lease per Neutron port, no dynamic addresses",
        f"interface {interface}",
        f"start {server}",
        f"end {server}",
        "max_leases 1",
        f"lease_file {directory / 'udhcpd.leases'}",
        f"pidfile {directory / 'udhcpd.pid'}",
        "auto_time 0",
        f"option subnet {mask}",
        f"option router {server}",
        f"option lease {LEASE_S}",
    ]
    lines += [f"static_lease {mac} {address}" for mac, address in sorted(leases.items())]
    return "\n".join(lines) + "\n"


class DhcpServer:
    """udhcpd in namespace `netns` on `interface` (address `server`/`prefix`); files in `directory`.

    `add(mac, address)` records a port and restarts the server when the entry is new. `stop` ends
    it. Thread-safe: Nova creates ports from several threads."""

    def __init__(self, netns: str, interface: str, server: str, prefix: int, directory: Path) -> None:
        self.netns = netns
        self.interface = interface
        self.server = server
        self.prefix = prefix
        self.directory = directory
        self.leases: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def conf_path(self) -> Path:
        return self.directory / "udhcpd.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "udhcpd.log"

    def start(self) -> None:
        if shutil.which(BUSYBOX) is None:
            raise DhcpError(f"{BUSYBOX} is not installed (tools/setup.sh installs busybox-static)")
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._restart()

    def add(self, mac: str, address: str) -> None:
        """Serve `address` to `mac` from now on (a port was made)."""
        mac = mac.lower()
        with self._lock:
            if self.leases.get(mac) == address:
                return
            self.leases[mac] = address
            if self._proc is not None:
                self._restart()

    def stop(self) -> None:
        with self._lock:
            self._end()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _restart(self) -> None:
        self._end()
        self.conf_path.write_text(
            udhcpd_conf(
                interface=self.interface,
                server=self.server,
                prefix=self.prefix,
                leases=self.leases,
                directory=self.directory,
            )
        )
        (self.directory / "udhcpd.leases").touch()  # udhcpd complains when it cannot read it
        with self.log_path.open("ab") as log:
            # -f: in the foreground, a child of this process (ended by its process group)
            self._proc = runtime.spawn(
                [BUSYBOX, "udhcpd", "-f", str(self.conf_path)], stdout=log, netns=self.netns
            )

    def _end(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        runtime.unregister_process_group(proc.pid)
