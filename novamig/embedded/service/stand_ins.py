"""Image and network services for Nova, from Nova's own test fixtures.

The embedded cloud has no Glance and no Neutron. Nova's wheel ships stand-ins for both
(``nova.tests.fixtures.GlanceFixture`` / ``NeutronFixture``): they replace Nova's clients of those
services in-process. They expect to be run by a test case; ``FixtureHost`` offers the three things
they use (``useFixture``, ``stub_out``, ``flags``) outside of one.

Changes from the fixtures as shipped:
- the image store holds only novamig's images (``novamig-tiny``, and ``novamig-full`` when the full
  image is already built in the cache), not the fixture's samples;
- every port gets its own MAC and IPv4 address from the network's subnet (the shipped fixture hands
  the same address to every new port), so probes reach each guest at a distinct address that stays
  the same across live migrations.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import threading
import uuid
from typing import Any

import fixtures

from novamig.embedded.layout import FULL_IMAGE_ID, FULL_IMAGE_NAME, TINY_IMAGE_ID, TINY_IMAGE_NAME

NETWORK_NAME = "novamig-net"
SUBNET_CIDR = "192.168.1.0/24"  # the fixture's subnet_1 (gateway 192.168.1.1)
#: The full guest needs this much RAM (root on its disk, see novamig.guest.full): Nova refuses a
#: smaller flavor for it (the image's ``min_ram``), and the driver checks again.
FULL_IMAGE_MIN_RAM_MB = 160


class FixtureHost:
    """The part of a ``testtools.TestCase`` that Nova's fixtures call, for use in a service."""

    def __init__(self, conf: Any) -> None:
        self._conf = conf
        self._fixtures: list[Any] = []

    def useFixture(self, fixture: Any) -> Any:
        fixture.setUp()
        self._fixtures.append(fixture)
        return fixture

    def stub_out(self, old: str, new: Any) -> None:
        self.useFixture(fixtures.MonkeyPatch(old, new))

    def flags(self, **kw: Any) -> None:
        group = kw.pop("group", None)
        for key, value in kw.items():
            self._conf.set_override(key, value, group)

    def cleanup(self) -> None:
        while self._fixtures:
            self._fixtures.pop().cleanUp()


def tiny_image_meta() -> dict[str, Any]:
    """The Glance record of the tiny guest (its bytes come from the hypervisor's image cache)."""
    return {
        "id": TINY_IMAGE_ID,
        "name": TINY_IMAGE_NAME,
        "status": "active",
        "is_public": True,
        "visibility": "public",
        "container_format": "bare",
        "disk_format": "raw",
        "size": 2 * 1024 * 1024,
        "min_ram": 0,
        "min_disk": 0,
        "protected": True,  # the driver boots it by id: undeletable (Image API: 403)
        "tags": ["novamig"],
        "properties": {"architecture": "x86_64", "novamig_guest": "tiny", "hw_vif_model": "virtio"},
    }


def full_image_meta(image: Any) -> dict[str, Any]:
    """The Glance record of the full guest (a ``novamig.guest.full.FullImage``; its kernel,
    initramfs and shared read-only root disk come from the image cache)."""
    return {
        "id": FULL_IMAGE_ID,
        "name": FULL_IMAGE_NAME,
        "status": "active",
        "is_public": True,
        "visibility": "public",
        "container_format": "bare",
        "disk_format": "qcow2",
        "size": int(image.sizes.get("disk", 0)),
        "min_ram": FULL_IMAGE_MIN_RAM_MB,
        "min_disk": 0,
        "protected": True,  # the driver boots it by id: undeletable (Image API: 403)
        "tags": ["novamig"],
        "properties": {
            "architecture": "x86_64",
            "novamig_guest": "full",
            "hw_vif_model": "virtio",
            "hw_disk_bus": "virtio",
            "novamig_web_port": str(image.web_port),
        },
    }


def install_glance(host: FixtureHost, full_image: Any = None) -> Any:
    """The image store: ``novamig-tiny``, plus ``novamig-full`` when ``full_image`` is given."""
    from nova.tests.fixtures import GlanceFixture  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    glance = host.useFixture(GlanceFixture(host))
    glance.images.clear()
    glance.create(None, tiny_image_meta())
    if full_image is not None:
        glance.create(None, full_image_meta(full_image))
    return glance


def install_neutron(host: FixtureHost) -> Any:
    from nova.tests.fixtures import NeutronFixture  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    class NovamigNeutron(NeutronFixture):  # type: ignore[misc]
        """One shared IPv4 network; every new port gets a distinct MAC and address."""

        def __init__(self, test: Any) -> None:
            super().__init__(test)
            net = copy.deepcopy(self.network_1)
            net.update(name=NETWORK_NAME, shared=True, subnets=[self.subnet_1["id"]])
            self._networks = {net["id"]: net}
            subnet_1 = dict(copy.deepcopy(self.subnet_1), cidr=SUBNET_CIDR)
            self._subnets = {subnet_1["id"]: subnet_1}
            self._ports: dict[str, Any] = {}  # no sample ports
            subnet = ipaddress.ip_network(SUBNET_CIDR)
            self._addresses = itertools.islice(subnet.hosts(), 9, None)  # .10 onwards
            self._alloc_lock = threading.Lock()

        def create_port(self, body: Any = None) -> Any:
            body = body or {"port": {}}
            port = copy.deepcopy(self.port_2)
            port.update(copy.deepcopy(body["port"]))
            with self._alloc_lock:
                address = str(next(self._addresses))
            port["id"] = str(uuid.uuid4())
            port["mac_address"] = "fa:16:3e:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:3])
            port["fixed_ips"] = [{"ip_address": address, "subnet_id": self.subnet_1["id"]}]
            port.setdefault("network_id", self.network_1["id"])
            self._ports[port["id"]] = port
            return {"port": copy.deepcopy(port)}

    return host.useFixture(NovamigNeutron(host))
