"""What QEMU a server gets: its ``GuestSpec`` from the flavor, the image, the port and user-data.

Kept apart from the driver's Nova methods because it is the one place that turns Nova's view of a
server (instance, network_info) into the hypervisor layer's: the flavor's RAM and vCPUs, the
port's MAC and fixed IP (handed to the guest agent on the kernel command line), the full guest's
shared read-only root disk, and the server's user-data as a QEMU fw_cfg file.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from pathlib import Path
from typing import Any

from nova import exception

from novamig.embedded.layout import FULL_IMAGE_ID, CloudLayout
from novamig.embedded.service import guest_network
from novamig.embedded.service.guest_images import IMAGES
from novamig.embedded.service.stand_ins import FULL_IMAGE_MIN_RAM_MB
from novamig.hypervisor.machine import FwCfgFile, GuestSpec, NetworkAttachment

#: fw_cfg name under which a guest finds its server's user-data (the guest images' init runs it).
USER_DATA_FW_CFG = "opt/org.novamig/user-data"


def vif_address(network_info: Any) -> tuple[str | None, str | None, str | None]:
    """(MAC, "IP/prefix", gateway) of the first port, or Nones."""
    for vif in network_info or []:
        mac = vif.get("address")
        for subnet in vif.get("network", {}).get("subnets", []):
            for ip in subnet.get("ips", []):
                if ip.get("version", 4) == 4:
                    prefix = str(subnet.get("cidr", "/24")).split("/")[1]
                    gateway = (subnet.get("gateway") or {}).get("address")
                    return mac, f"{ip['address']}/{prefix}", gateway
        return mac, None, None
    return None, None, None


def instance_dir(layout: CloudLayout, uuid: str) -> Path:
    """Files of one server that outlive its QEMUs, shared by every host (as a libvirt host's
    ``instances/<uuid>/`` on shared storage): ``guests/instances/<uuid>/``."""
    return layout.guests_dir / "instances" / uuid


def user_data_file(layout: CloudLayout, instance: Any) -> FwCfgFile | None:
    """Write the server's user-data (Nova keeps it base64) for fw_cfg; None without user-data.

    A file, not a QMP call, because QEMU takes fw_cfg files on its command line only; it lives in
    the instance directory, not in a QEMU's run directory, because every later migration
    destination reads it again when it starts.
    """
    encoded = instance.user_data
    if not encoded:
        return None
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise exception.InstanceDeployFailure(reason=f"user_data is not valid base64: {exc}") from exc
    directory = instance_dir(layout, instance.uuid)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "user-data"
    tmp = directory / f".user-data.{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold secrets
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(target)
    return FwCfgFile(USER_DATA_FW_CFG, target)


def _image_and_disk(instance: Any) -> tuple[Any, tuple[str, ...]]:
    """The guest image for the server's Nova image, and the extra QEMU arguments of its disk."""
    if instance.image_ref != FULL_IMAGE_ID:
        return IMAGES.get(), ()
    memory_mb = int(instance.flavor.memory_mb)
    if memory_mb < FULL_IMAGE_MIN_RAM_MB:
        raise exception.InstanceDeployFailure(
            reason=f"novamig-full needs a flavor with at least {FULL_IMAGE_MIN_RAM_MB} MiB "
            f"of RAM; flavor {instance.flavor.name} has {memory_mb} MiB"
        )
    image = IMAGES.get_full()
    return image, image.drive_args()  # the shared read-only root disk: both ends of a migration


def guest_spec(layout: CloudLayout, instance: Any, network_info: Any) -> GuestSpec:
    """The QEMU of a server booted on a compute host (not the incoming side of a migration)."""
    image, extra_args = _image_and_disk(instance)
    mac, cidr, gateway = vif_address(network_info)
    kernel_args: list[str] = []
    if cidr:
        kernel_args.append(f"novamig.ip={cidr}")
    if gateway:
        kernel_args.append(f"novamig.gw={gateway}")
    network = None
    if mac:
        cloud_net = guest_network.current()
        network = cloud_net.attach(mac) if cloud_net is not None else NetworkAttachment(mac=mac)
    user_data = user_data_file(layout, instance)
    return GuestSpec(
        name=instance.name,
        image=image,
        memory_mib=int(instance.flavor.memory_mb),
        vcpus=int(instance.flavor.vcpus),
        kernel_args=tuple(kernel_args),
        network=network,
        extra_args=extra_args,
        fw_cfg=(user_data,) if user_data is not None else (),
    )


def end_guest(machine: Any) -> None:
    """Stop a guest's QEMU (hard: Nova's destroy is not a guest shutdown) and free its tap."""
    try:
        machine.shutdown(timeout=2.0, soft=False)
    finally:
        cloud_net = guest_network.current()
        if cloud_net is not None:
            cloud_net.release(machine.spec.network)
