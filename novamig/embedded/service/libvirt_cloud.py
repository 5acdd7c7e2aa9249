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
  ``<interface type='ethernet'>`` on a tap it plugs (here in the compute's own namespace);
- a DHCP server on the guests' bridge (`novamig.embedded.service.dhcp`, Neutron's DHCP agent's
  part) hands each port's address to that port's MAC: the full guest's Glance form boots from its
  disk and asks by DHCP, as on any cloud (the tiny guest's address is on its kernel command line);
- images are served to Nova as Glance serves them: ``novamig-full`` is the full guest's Glance form
  (the self-booting qcow2 ``novamig image upload`` sends to a real Glance, when it is in the image
  cache), and every image's bytes — that one, and any uploaded through the Image API — reach Nova's
  image download (the stand-in would hand Nova an empty file); with no metadata service, Nova
  writes a config drive for every server (``force_config_drive``), from which the guest's
  cloud-init takes its user-data;
- the guests' namespace is the cloud's guest network for the floating IPs (`guest_network.adopt`):
  their NAT runs there as in the QEMU mode, so a scenario with ``fleet.floating_ip_network`` runs.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import shutil
import threading
from pathlib import Path
from typing import IO, Any

from novamig.embedded.layout import FULL_IMAGE_ID, CloudLayout
from novamig.embedded.service import guest_network
from novamig.embedded.service.dhcp import DhcpServer
from novamig.embedded.service.stand_ins import SUBNET_CIDR, full_image_meta
from novamig.guest.full import CloudImage, find_cloud_image
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
        self.dhcp: DhcpServer | None = None

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
        network = self.pair.network
        self.dhcp = DhcpServer(
            network.name, network.bridge, network.host_ip, network.subnet.prefixlen, self._workdir / "dhcp"
        )
        _ports.serve(self.dhcp)
        guest_network.adopt(self._workdir, network)  # floating IPs: NAT in this namespace

    def stop(self) -> None:
        """End the DHCP server; destroy the guests, end both daemons, remove the namespaces and
        directories."""
        _ports.serve(None)
        guest_network.adopt(self._workdir, None)
        if self.dhcp is not None:
            self.dhcp.stop()
        self.pair.close()


def start(layout: CloudLayout, instances_path: Path) -> LibvirtCloud:
    Path(instances_path).mkdir(parents=True, exist_ok=True)
    cloud = LibvirtCloud(layout, Path(instances_path))
    cloud.start()
    return cloud


class _Ports:
    """The ports the Neutron stand-in made (MAC → IPv4 address), handed to the DHCP server once it
    runs: the stand-ins are installed before the libvirt hosts start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, str] = {}
        self._dhcp: DhcpServer | None = None

    def add(self, port: dict[str, Any]) -> None:
        mac = str(port.get("mac_address") or "")
        v4 = [str(f["ip_address"]) for f in port.get("fixed_ips") or [] if _is_v4(f.get("ip_address"))]
        if not mac or not v4:
            return
        with self._lock:
            self._leases[mac] = v4[0]
            dhcp = self._dhcp
        if dhcp is not None:
            dhcp.add(mac, v4[0])

    def serve(self, dhcp: DhcpServer | None) -> None:
        """Hand every port to `dhcp` and start it (None: forget the server)."""
        with self._lock:
            self._dhcp = dhcp
            leases = dict(self._leases)
        if dhcp is not None:
            for mac, address in leases.items():
                dhcp.add(mac, address)
            dhcp.start()


def _is_v4(address: Any) -> bool:
    try:
        return ipaddress.ip_address(str(address)).version == 4
    except ValueError:
        return False


_ports = _Ports()


def use_tap_vifs(neutron: Any) -> None:
    """Make the Neutron stand-in bind every new port with VIF type ``tap`` (its template port is
    ``ovs``, which Nova's libvirt driver would hand to os-vif and Open vSwitch), and give every
    port it makes to the DHCP server."""
    template = copy.deepcopy(neutron.port_2)
    template["binding:vif_type"] = "tap"
    template["binding:vif_details"] = {}
    neutron.port_2 = template
    create_port = neutron.create_port

    def create_port_with_dhcp(body: Any = None) -> Any:
        made = create_port(body)
        _ports.add(made["port"])
        return made

    neutron.create_port = create_port_with_dhcp


def serve_images(glance: Any, layout: CloudLayout) -> CloudImage | None:
    """Register ``novamig-full`` as its Glance form when the image cache holds it (returned; None
    when not built: ``novamig image build full --format qcow2``), and let Nova download every
    image's bytes: that disk, and the files the Image API stored for uploads (``<workdir>/images/``).
    Nova's Glance stand-in keeps bytes only for images created through it, so Nova's libvirt image
    backend would otherwise fetch an empty file."""
    cloud_image = find_cloud_image()
    files = {}
    if cloud_image is not None:
        meta = full_image_meta(cloud_image)
        meta["size"] = cloud_image.disk.stat().st_size
        meta["properties"] = {**meta["properties"], **cloud_image.properties}
        glance.create(None, meta)
        files[FULL_IMAGE_ID] = cloud_image.disk
    uploads = layout.workdir / "images"
    stand_in_download = glance.download

    def download(
        context: Any, image_id: str, data: IO[bytes] | None = None, dst_path: str | None = None, **kw: Any
    ) -> None:
        path = files.get(str(image_id)) or uploads / str(image_id)
        if not path.is_file():
            stand_in_download(context, image_id, data=data, dst_path=dst_path, **kw)
            return
        glance.show(context, image_id)  # ImageNotFound as the stand-in raises it
        if data is not None:
            with path.open("rb") as source:
                shutil.copyfileobj(source, data, 1 << 20)
        elif dst_path is not None:
            shutil.copyfile(path, dst_path)

    glance.download = download
    return cloud_image
