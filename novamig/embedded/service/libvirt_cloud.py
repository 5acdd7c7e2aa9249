"""The libvirt mode's hosts inside the cloud process: one libvirtd per compute, started before Nova.

``novamig cloud up --driver libvirt`` runs Nova's own ``LibvirtDriver`` for ``compute1`` and
``compute2`` (`novamig.embedded.service.libvirt_compute`), each against a libvirtd of its own. This
module starts those daemons (`novamig.hypervisor.libvirt_hosts.LibvirtHostPair`, host names =
the compute services' names, so Nova's hypervisor hostname and the service host agree), and stops
them with the cloud. It imports no Nova: the cloud process starts the hosts before its computes.

Choices, and why:

- the guests' network is the cloud's usual one (Neutron stand-in's subnet, the runner's address
  on its bridge): probes reach a guest at its port address wherever it runs;
- the instances path is shared by both computes (``shared_filesystems`` in each qemu.conf): Nova's
  shared-storage check then says shared, so a live migration moves memory only, as on a
  multinode deployment with NFS instance storage; the destination QEMU opens the same qcow2;
- each daemon's ``/etc/hosts`` names the computes: with ``live_migration_inbound_addr`` unset,
  Nova's source builds ``qemu+tcp://<destination compute>/system``, which the source libvirtd
  resolves to the destination's management address (the machine's own ``/etc/hosts`` is untouched);
- the Neutron stand-in's ports are of VIF type ``tap``: Nova's libvirt VIF driver then writes an
  ``<interface type='ethernet'>`` on a tap it plugs (here in the compute's own namespace).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from novamig.embedded.layout import CloudLayout
from novamig.embedded.service.stand_ins import SUBNET_CIDR
from novamig.hypervisor.libvirt_hosts import LibvirtHost, LibvirtHostPair

MODE = "libvirt"
"""The mode's name (``driver=`` of the embedded cloud)."""

NETNS_FILE = "netns.json"
"""Namespaces the cloud made, for ``EmbeddedCloud.stop`` should this process die."""


class LibvirtCloud:
    """The two libvirt hosts of one cloud; ``netns`` is the guests' network (``ready.json``)."""

    def __init__(self, layout: CloudLayout, instances_path: Path) -> None:
        if len(layout.hosts) != 2:
            raise ValueError(f"the libvirt mode runs exactly two computes, not {len(layout.hosts)}")
        first, second = layout.hosts
        self.pair = LibvirtHostPair(
            guest_subnet=SUBNET_CIDR,
            hostnames=(first, second),
            shared_filesystems=(str(instances_path),),
        )
        self._workdir = layout.workdir

    @property
    def netns(self) -> str:
        return self.pair.network.name

    def host(self, hostname: str) -> LibvirtHost:
        return self.pair.host(hostname)

    def describe(self) -> dict[str, dict[str, str | int | None]]:
        """Compute host name → its libvirt host (``ready.json``'s ``libvirt_hosts``): the runner
        reads libvirt's job statistics inside these namespaces (the DevStack probe's local
        transport)."""
        return {h.hostname: h.describe() for h in self.pair.hosts}

    def start(self) -> None:
        self.pair.start()
        names = [self.pair.network.name, *(h.netns for h in self.pair.hosts)]
        (self._workdir / NETNS_FILE).write_text(json.dumps(names) + "\n")

    def stop(self) -> None:
        """Destroy the guests, end both daemons, remove the namespaces and directories."""
        self.pair.close()


def start(layout: CloudLayout, instances_path: Path) -> LibvirtCloud:
    Path(instances_path).mkdir(parents=True, exist_ok=True)
    cloud = LibvirtCloud(layout, Path(instances_path))
    cloud.start()
    return cloud


def use_tap_vifs(neutron: Any) -> None:
    """Make the Neutron stand-in bind every new port with VIF type ``tap`` (its template port is
    ``ovs``, which Nova's libvirt driver would hand to os-vif and Open vSwitch)."""
    template = copy.deepcopy(neutron.port_2)
    template["binding:vif_type"] = "tap"
    template["binding:vif_details"] = {}
    neutron.port_2 = template
