"""The compute-host half of novamig's Nova driver: the node, its resources, its guests.

``HostDriver`` is the base of ``driver.NovamigDriver``: what Nova asks of a compute host whatever
its servers do (node names and UUID, resources for the resource tracker and Placement, the host's
addresses) and the lookups the server and live-migration methods share. Each compute host of the
cloud process has its own driver instance; their guests are all in ``guests.REGISTRY``.
"""

from __future__ import annotations

import contextlib
import uuid as uuidlib
from pathlib import Path
from typing import Any, ClassVar

import os_resource_classes as orc  # type: ignore[import-untyped]
from nova import exception
from nova.virt import driver

from novamig.embedded.service import driver_registry, guests
from novamig.embedded.service.guest_spec import end_guest
from novamig.hypervisor.binary import qemu_version

HOST_VCPUS = 16
HOST_MEMORY_MB = 32768
HOST_DISK_GB = 1000
NODE_NAMESPACE = uuidlib.UUID("5f1e2a4c-4c1b-4d3e-9a43-6e6f76616d69")


def _qemu_version_number() -> int:
    """QEMU's version as Nova's ``hypervisor_version`` integer (major·10⁶ + minor·10³ + micro)."""
    try:
        major, minor, micro = (int(x) for x in [*qemu_version().split("."), "0", "0"][:3])
    except Exception:
        return 1
    return major * 1_000_000 + minor * 1000 + micro


def _inventory(total: int, ratio: float) -> dict[str, Any]:
    return {
        "total": total,
        "min_unit": 1,
        "max_unit": total,
        "step_size": 1,
        "allocation_ratio": ratio,
        "reserved": 0,
    }


class HostDriver(driver.ComputeDriver):  # type: ignore[misc]
    capabilities: ClassVar[dict[str, bool]] = {
        "has_imagecache": False,
        "supports_evacuate": False,
        "supports_migrate_to_same_host": False,
        "supports_attach_interface": False,
        "supports_device_tagging": False,
        "supports_tagged_attach_interface": False,
        "supports_tagged_attach_volume": False,
        "supports_extend_volume": False,
        "supports_multiattach": False,
        "supports_trusted_certs": False,
        "supports_pcpus": False,
        "supports_accelerators": False,
        "supports_remote_managed_ports": False,
        "supports_address_space_passthrough": False,
        "supports_address_space_emulated": False,
        "supports_stateless_firmware": False,
        "supports_virtio_fs": False,
        "supports_mem_backing_file": False,
        "supports_image_type_raw": True,
        "supports_image_type_qcow2": True,
        "supports_image_type_vhd": False,
    }

    def __init__(self, virtapi: Any, read_only: bool = False) -> None:
        super().__init__(virtapi)
        self._host = ""
        self._layout = driver_registry.current_layout()
        driver_registry.track(self)

    # -- host --------------------------------------------------------------------------------------
    def init_host(self, host: str) -> None:
        # The guest image is fetched once the cloud is ready (service.main), not here, so that
        # its lookup does not compete with start-up for the CPU.
        self._host = host

    def cleanup_host(self, host: str) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop every guest of this host (cloud shutdown)."""
        for guest in guests.REGISTRY.on_host(self._host):
            guests.REGISTRY.pop(guest.host, guest.uuid)
            with contextlib.suppress(Exception):
                end_guest(guest.machine)

    def _node_uuid(self) -> str:
        return str(uuidlib.uuid5(NODE_NAMESPACE, f"{self._layout.workdir}:{self._host}"))

    def get_available_nodes(self, refresh: bool = False) -> list[str]:
        return [self._host]

    def get_nodenames_by_uuid(self, refresh: bool = False) -> dict[str, str]:
        return {self._node_uuid(): self._host}

    def node_is_available(self, nodename: str) -> bool:
        return nodename == self._host

    def get_available_resource(self, nodename: str) -> dict[str, Any]:
        used = guests.REGISTRY.on_host(self._host)
        return {
            "vcpus": HOST_VCPUS,
            "memory_mb": HOST_MEMORY_MB,
            "local_gb": HOST_DISK_GB,
            "vcpus_used": sum(g.machine.spec.vcpus for g in used),
            "memory_mb_used": sum(g.machine.spec.memory_mib for g in used),
            "local_gb_used": 0,
            "hypervisor_type": "QEMU",
            "hypervisor_version": _qemu_version_number(),
            "hypervisor_hostname": nodename,
            "cpu_info": '{"arch": "x86_64", "model": "qemu64", "vendor": "novamig", "features": [],'
            ' "topology": {"cores": 1, "threads": 1, "sockets": 16}}',
            "disk_available_least": HOST_DISK_GB,
            "supported_instances": [("x86_64", "qemu", "hvm")],
            "numa_topology": None,
            "uuid": self._node_uuid(),
        }

    def update_provider_tree(self, provider_tree: Any, nodename: str, allocations: Any = None) -> None:
        inv = provider_tree.data(nodename).inventory
        ratios = self._get_allocation_ratios(inv)
        provider_tree.update_inventory(
            nodename,
            {
                "VCPU": _inventory(HOST_VCPUS, ratios[orc.VCPU]),
                "MEMORY_MB": _inventory(HOST_MEMORY_MB, ratios[orc.MEMORY_MB]),
                "DISK_GB": _inventory(HOST_DISK_GB, ratios[orc.DISK_GB]),
            },
        )

    def get_host_ip_addr(self) -> str:
        return "127.0.0.1"

    def get_host_uptime(self) -> str:
        return "novamig embedded compute"

    def get_volume_connector(self, instance: Any) -> dict[str, Any]:
        return {"ip": "127.0.0.1", "initiator": "novamig", "host": self._host}

    # -- guests of this host -----------------------------------------------------------------------
    def _guest(self, instance: Any) -> guests.Guest:
        guest = guests.REGISTRY.get(self._host, instance.uuid)
        if guest is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        return guest

    def _rundir(self, instance: Any) -> Path:
        return self._layout.guests_dir / self._host

    def _pid_file(self, host: str, instance: Any) -> Path:
        return self._layout.guests_dir / host / f"{instance.uuid}.pid"

    def list_instances(self) -> list[str]:
        return [g.machine.name for g in guests.REGISTRY.on_host(self._host)]

    def list_instance_uuids(self) -> list[str]:
        return [g.uuid for g in guests.REGISTRY.on_host(self._host)]

    def instance_exists(self, instance: Any) -> bool:
        return guests.REGISTRY.get(self._host, instance.uuid) is not None
