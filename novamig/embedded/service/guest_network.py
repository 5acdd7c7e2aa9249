"""The guests' network of the cloud: one namespace with a bridge, one tap per QEMU.

Neutron's stand-in (``stand_ins``) hands every port a MAC and an address in 192.168.1.0/24; here
that subnet is a bridge inside a network namespace of novamig's hypervisor layer, the bridge holding
the gateway address 192.168.1.1. Each QEMU (a server, or the incoming side of a live migration) gets
its own tap on the bridge carrying the port's MAC, so probes run inside the namespace reach every
guest at its port address before and after a migration (QEMU's announce moves the MAC).

The namespace's name is written to ``netns.json`` in the work directory (for ``EmbeddedCloud.stop``
to remove it should this process die) and to ``ready.json`` (``guest_netns``) for probes.
Without root (no namespaces), guests fall back to QEMU user-mode networking: they boot and migrate,
but nothing outside reaches them.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from novamig.embedded.service.stand_ins import SUBNET_CIDR as SUBNET
from novamig.hypervisor.machine import NetworkAttachment
from novamig.hypervisor.netns import GuestNetwork, netns_supported

LOG = logging.getLogger(__name__)


class CloudNetwork:
    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._lock = threading.Lock()
        self._net: Any = None
        self.reason: str | None = None

    @property
    def netns(self) -> str | None:
        return self._net.name if self._net is not None else None

    def start(self) -> None:
        why = netns_supported()
        if why is not None:
            self.reason = why
            LOG.warning("guests get user-mode networking only: %s", why)
            return
        net = GuestNetwork(subnet=SUBNET)
        (self._workdir / "netns.json").write_text(json.dumps([net.name]) + "\n")
        net.create()
        self._net = net

    def attach(self, mac: str) -> Any:
        """A NetworkAttachment for one QEMU: a new tap in the namespace, or user-mode networking."""
        with self._lock:
            if self._net is None:
                return NetworkAttachment(mac=mac)
            return NetworkAttachment(mac=mac, tap=self._net.add_tap(), netns=self._net.name)

    def release(self, attachment: Any) -> None:
        """Remove a QEMU's tap once that QEMU has ended."""
        if attachment is None or getattr(attachment, "tap", None) is None:
            return
        with self._lock:
            if self._net is not None:
                self._net.remove_tap(attachment.tap)

    def stop(self) -> None:
        with self._lock:
            if self._net is not None:
                self._net.close()
                self._net = None


_networks: list[CloudNetwork] = []


def install(workdir: Path) -> CloudNetwork:
    network = CloudNetwork(workdir)
    network.start()
    _networks[:] = [network]
    return network


def current() -> CloudNetwork | None:
    return _networks[0] if _networks else None


def adopt(workdir: Path, network: GuestNetwork | None) -> None:
    """Make `network`, made and removed by another part of the cloud (the libvirt mode's host
    pair), the cloud's guest network for what looks it up here (the floating IPs' NAT); None
    forgets it."""
    if network is None:
        _networks.clear()
        return
    adopted = CloudNetwork(workdir)
    adopted._net = network
    _networks[:] = [adopted]
