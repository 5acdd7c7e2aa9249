"""novamig's Nova compute driver: each server is a QEMU guest of novamig's hypervisor layer.

Loaded by Nova as ``nova.virt.novamig.NovamigDriver`` (``driver_registry`` registers the module
under that name; Nova imports drivers only from ``nova.virt``). One instance per compute host, all
in the cloud process; the guests they run are in ``guests.REGISTRY``.

What it does, following the libvirt driver's contract:
- ``spawn`` boots the tiny guest (``novamig.guest.image``) sized by the flavor (RAM, vCPUs), with the
  port's MAC and the fixed IP handed to the guest agent on the kernel command line, and returns
  once the agent reports READY; a server of image ``novamig-full`` boots the full guest
  (``novamig.guest.full``) with its shared read-only root disk instead (flavor RAM ≥ 160 MiB);
  the server's user-data reaches the guest through QEMU's fw_cfg (``USER_DATA_FW_CFG``), on both
  ends of a live migration;
- ``destroy``, ``reboot``, ``power_off/on``, ``pause/unpause``, ``get_info``, console output;
- live migration: ``pre_live_migration`` (destination) starts the incoming QEMU,
  ``live_migration`` (source) runs the QMP migration and calls Nova's post/recover methods
  (``migration_monitor``), force-complete and abort reach the running migration.
Guest networking is QEMU user-mode (no host network set-up) until the hypervisor layer offers a
guest network namespace.
"""

# Method signatures below are Nova's ComputeDriver interface, positional arguments included.
# ruff: noqa: PLR0917

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import shutil
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, ClassVar

import os_resource_classes as orc  # type: ignore[import-untyped]
from nova import exception
from nova.compute import power_state
from nova.objects import migrate_data as migrate_data_obj
from nova.virt import driver, hardware

from novamig.embedded import host_policy
from novamig.embedded.layout import FULL_IMAGE_ID
from novamig.embedded.service import driver_registry, guest_network, guests, pause_figures, stand_ins
from novamig.embedded.service.migration_monitor import ActiveMigration, run_live_migration

LOG = logging.getLogger(__name__)
BOOT_TIMEOUT_S = 120.0
HOST_VCPUS = 16
HOST_MEMORY_MB = 32768
HOST_DISK_GB = 1000
NODE_NAMESPACE = uuidlib.UUID("5f1e2a4c-4c1b-4d3e-9a43-6e6f76616d69")
#: fw_cfg name under which a guest finds its server's user-data (the guest images' init runs it).
USER_DATA_FW_CFG = "opt/org.novamig/user-data"


class _ImageCache:
    """The tiny guest image, built (or found in its cache) once, in the background at start-up;
    the full guest image, found (never built) in the cache when a server first asks for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._image: Any = None
        self._error: BaseException | None = None
        self._full: Any = None

    def prefetch(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._build, name="novamig-image", daemon=True)
                self._thread.start()

    def _build(self) -> None:
        try:
            from novamig.guest.image import build_tiny_image

            self._image = build_tiny_image()
            from novamig.hypervisor.accel import accelerator_for

            accelerator_for(self._image)  # decide KVM/TCG once, before the first server boots
        except BaseException as exc:
            self._error = exc

    def get(self) -> Any:
        self.prefetch()
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise exception.NovaException(f"novamig: the tiny guest image is not available: {self._error}")
        return self._image

    def get_full(self) -> Any:
        """The full guest image (``novamig.guest.full.FullImage``) from the cache."""
        tiny = self.get()
        with self._lock:
            if self._full is None:
                from novamig.guest.full import find_full_image

                self._full = find_full_image(tiny=tiny)
            if self._full is None:
                raise exception.NovaException(
                    "novamig: the full guest image is not in the image cache (novamig image build full)"
                )
            return self._full


IMAGES = _ImageCache()


def _vif_address(network_info: Any) -> tuple[str | None, str | None, str | None]:
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


def _end(machine: Any) -> None:
    """Stop a guest's QEMU (hard: Nova's destroy is not a guest shutdown) and free its tap."""
    try:
        machine.shutdown(timeout=2.0, soft=False)
    finally:
        cloud_net = guest_network.current()
        if cloud_net is not None:
            cloud_net.release(machine.spec.network)


class NovamigDriver(driver.ComputeDriver):  # type: ignore[misc]
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
        self._active: dict[str, ActiveMigration] = {}
        self._layout = driver_registry.current_layout()
        driver_registry.track(self)

    # -- host --------------------------------------------------------------------------------------
    def init_host(self, host: str) -> None:
        # The guest image is fetched once the cloud is ready (cloud_service), not here, so that
        # its lookup does not compete with start-up for the CPU.
        self._host = host

    def cleanup_host(self, host: str) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop every guest of this host (cloud shutdown)."""
        for guest in guests.REGISTRY.on_host(self._host):
            guests.REGISTRY.pop(guest.host, guest.uuid)
            with contextlib.suppress(Exception):
                _end(guest.machine)

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
        mem_used = sum(g.machine.spec.memory_mib for g in used)
        from novamig.hypervisor.binary import qemu_version

        try:
            major, minor, micro = (int(x) for x in [*qemu_version().split("."), "0", "0"][:3])
            version = major * 1_000_000 + minor * 1000 + micro
        except Exception:
            version = 1
        return {
            "vcpus": HOST_VCPUS,
            "memory_mb": HOST_MEMORY_MB,
            "local_gb": HOST_DISK_GB,
            "vcpus_used": sum(g.machine.spec.vcpus for g in used),
            "memory_mb_used": mem_used,
            "local_gb_used": 0,
            "hypervisor_type": "QEMU",
            "hypervisor_version": version,
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
                "VCPU": {
                    "total": HOST_VCPUS,
                    "min_unit": 1,
                    "max_unit": HOST_VCPUS,
                    "step_size": 1,
                    "allocation_ratio": ratios[orc.VCPU],
                    "reserved": 0,
                },
                "MEMORY_MB": {
                    "total": HOST_MEMORY_MB,
                    "min_unit": 1,
                    "max_unit": HOST_MEMORY_MB,
                    "step_size": 1,
                    "allocation_ratio": ratios[orc.MEMORY_MB],
                    "reserved": 0,
                },
                "DISK_GB": {
                    "total": HOST_DISK_GB,
                    "min_unit": 1,
                    "max_unit": HOST_DISK_GB,
                    "step_size": 1,
                    "allocation_ratio": ratios[orc.DISK_GB],
                    "reserved": 0,
                },
            },
        )

    def get_host_ip_addr(self) -> str:
        return "127.0.0.1"

    def get_host_uptime(self) -> str:
        return "novamig embedded compute"

    def get_volume_connector(self, instance: Any) -> dict[str, Any]:
        return {"ip": "127.0.0.1", "initiator": "novamig", "host": self._host}

    # -- instances ---------------------------------------------------------------------------------
    def _guest(self, instance: Any) -> guests.Guest:
        guest = guests.REGISTRY.get(self._host, instance.uuid)
        if guest is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        return guest

    def list_instances(self) -> list[str]:
        return [g.machine.name for g in guests.REGISTRY.on_host(self._host)]

    def list_instance_uuids(self) -> list[str]:
        return [g.uuid for g in guests.REGISTRY.on_host(self._host)]

    def instance_exists(self, instance: Any) -> bool:
        return guests.REGISTRY.get(self._host, instance.uuid) is not None

    def _instance_dir(self, uuid: str) -> Path:
        """Files of one server that outlive its QEMUs, shared by every host (as a libvirt
        host's ``instances/<uuid>/`` on shared storage): ``guests/instances/<uuid>/``."""
        return self._layout.guests_dir / "instances" / uuid

    def _user_data_file(self, instance: Any) -> Any:
        """Write the server's user-data (Nova keeps it base64) for fw_cfg; None without user-data.

        A file, not a QMP call, because QEMU takes fw_cfg files on its command line only; it
        lives in the instance directory, not in a QEMU's run directory, because every later
        migration destination reads it again when it starts.
        """
        from novamig.hypervisor.machine import FwCfgFile

        encoded = instance.user_data
        if not encoded:
            return None
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise exception.InstanceDeployFailure(reason=f"user_data is not valid base64: {exc}") from exc
        directory = self._instance_dir(instance.uuid)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "user-data"
        tmp = directory / f".user-data.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold secrets
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.replace(target)
        return FwCfgFile(USER_DATA_FW_CFG, target)

    def _spec(self, instance: Any, network_info: Any) -> Any:
        from novamig.hypervisor.machine import GuestSpec, NetworkAttachment

        extra_args: tuple[str, ...] = ()
        if instance.image_ref == FULL_IMAGE_ID:
            memory_mb = int(instance.flavor.memory_mb)
            if memory_mb < stand_ins.FULL_IMAGE_MIN_RAM_MB:
                raise exception.InstanceDeployFailure(
                    reason=f"novamig-full needs a flavor with at least {stand_ins.FULL_IMAGE_MIN_RAM_MB} MiB "
                    f"of RAM; flavor {instance.flavor.name} has {memory_mb} MiB"
                )
            image = IMAGES.get_full()
            extra_args = image.drive_args()  # the shared read-only root disk: both ends of a migration
        else:
            image = IMAGES.get()
        mac, cidr, gateway = _vif_address(network_info)
        kernel_args: list[str] = []
        if cidr:
            kernel_args.append(f"novamig.ip={cidr}")
        if gateway:
            kernel_args.append(f"novamig.gw={gateway}")
        network = None
        if mac:
            cloud_net = guest_network.current()
            network = cloud_net.attach(mac) if cloud_net is not None else NetworkAttachment(mac=mac)
        user_data = self._user_data_file(instance)
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

    def _rundir(self, instance: Any) -> Path:
        return self._layout.guests_dir / self._host

    def _pid_file(self, host: str, instance: Any) -> Path:
        return self._layout.guests_dir / host / f"{instance.uuid}.pid"

    def spawn(
        self,
        context: Any,
        instance: Any,
        image_meta: Any,
        injected_files: Any,
        admin_password: Any,
        allocations: Any,
        network_info: Any = None,
        block_device_info: Any = None,
        power_on: bool = True,
        accel_info: Any = None,
    ) -> None:
        from novamig.hypervisor.errors import HypervisorError
        from novamig.hypervisor.machine import QemuMachine

        spec = self._spec(instance, network_info)
        machine = QemuMachine(spec, self._rundir(instance))
        try:
            machine.launch()
            guests.REGISTRY.add(
                guests.Guest(instance.uuid, self._host, machine, self._pid_file(self._host, instance))
            )
            machine.wait_ready(BOOT_TIMEOUT_S)
        except HypervisorError as exc:
            guests.REGISTRY.pop(self._host, instance.uuid)
            _end(machine)
            raise exception.InstanceDeployFailure(reason=str(exc).splitlines()[0]) from exc
        if not power_on:
            machine.command("stop")

    def destroy(
        self,
        context: Any,
        instance: Any,
        network_info: Any,
        block_device_info: Any = None,
        destroy_disks: bool = True,
        destroy_secrets: bool = True,
    ) -> None:
        guest = guests.REGISTRY.pop(self._host, instance.uuid)
        if guest is not None:
            _end(guest.machine)
        if not any(guests.REGISTRY.get(host, instance.uuid) for host in self._layout.hosts):
            shutil.rmtree(self._instance_dir(instance.uuid), ignore_errors=True)

    def cleanup(
        self,
        context: Any,
        instance: Any,
        network_info: Any,
        block_device_info: Any = None,
        destroy_disks: bool = True,
        migrate_data: Any = None,
        destroy_vifs: bool = True,
        destroy_secrets: bool = True,
    ) -> None:
        # After a live migration away, the source guest is already gone (see live_migration).
        pass

    def get_info(self, instance: Any, use_cache: bool = True) -> Any:
        guest = guests.REGISTRY.get(self._host, instance.uuid)
        if guest is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        if guest.powered_off or not guest.machine.is_running():
            return hardware.InstanceInfo(state=power_state.SHUTDOWN)
        if guest.suspended:
            return hardware.InstanceInfo(state=power_state.SUSPENDED)
        if guest.paused:
            return hardware.InstanceInfo(state=power_state.PAUSED)
        return hardware.InstanceInfo(state=power_state.RUNNING)

    def get_console_output(self, context: Any, instance: Any) -> str:
        return guests.console_text(self._guest(instance))

    def reboot(
        self,
        context: Any,
        instance: Any,
        network_info: Any,
        reboot_type: str,
        block_device_info: Any = None,
        bad_volumes_callback: Any = None,
        accel_info: Any = None,
        share_info: Any = None,
    ) -> None:
        guest = self._guest(instance)
        if guest.powered_off or not guest.machine.is_running():
            guest.powered_off = True
            self.power_on(context, instance, network_info)
            return
        guest.machine.command("system_reset")
        if guest.paused:
            guest.machine.command("cont")
            guest.paused = False

    def power_off(self, instance: Any, timeout: int = 0, retry_interval: int = 0) -> None:
        """End the guest's QEMU; the server stays (SHUTOFF) until power_on boots it again."""
        guest = self._guest(instance)
        _end(guest.machine)
        guest.powered_off = True
        guest.paused = False

    def power_on(
        self,
        context: Any,
        instance: Any,
        network_info: Any,
        block_device_info: Any = None,
        accel_info: Any = None,
        share_info: Any = None,
    ) -> None:
        guest = guests.REGISTRY.get(self._host, instance.uuid)
        if guest is not None and not guest.powered_off:
            return
        history = guests.REGISTRY.pop(self._host, instance.uuid)
        self.spawn(context, instance, None, None, None, None, network_info)
        if history is not None:
            booted = guests.REGISTRY.get(self._host, instance.uuid)
            if booted is not None:
                booted.console_history = guests.console_text(history)
                booted.migrations = history.migrations

    def pause(self, instance: Any) -> None:
        guest = self._guest(instance)
        sent = time.monotonic_ns()
        guest.machine.command("stop")
        guest.paused = True
        guest.pause_started = (sent, time.monotonic_ns())

    def unpause(self, instance: Any) -> None:
        guest = self._guest(instance)
        sent = time.monotonic_ns()
        guest.machine.command("cont")
        resumed = (sent, time.monotonic_ns())
        guest.paused = False
        if guest.pause_started is not None:
            pause_figures.record_async(
                self._layout.workdir / "pauses", instance.uuid, guest.machine, guest.pause_started, resumed
            )
            guest.pause_started = None

    def suspend(self, context: Any, instance: Any) -> None:
        """Suspend: the vCPUs stop and memory stays in QEMU (libvirt would save it to disk)."""
        guest = self._guest(instance)
        guest.machine.command("stop")
        guest.suspended = True

    def resume(
        self,
        context: Any,
        instance: Any,
        network_info: Any,
        block_device_info: Any = None,
        share_info: Any = None,
    ) -> None:
        guest = self._guest(instance)
        guest.machine.command("cont")
        guest.suspended = False

    def plug_vifs(self, instance: Any, network_info: Any) -> None:
        pass

    def unplug_vifs(self, instance: Any, network_info: Any) -> None:
        pass

    def get_instance_disk_info(self, instance: Any, block_device_info: Any = None) -> str:
        return "[]"

    def get_diagnostics(self, instance: Any) -> dict[str, Any]:
        guest = self._guest(instance)
        return {
            "novamig_host": self._host,
            "novamig_pid": guest.machine.pid,
            "novamig_migrations": len(guest.migrations),
        }

    # -- live migration: checks --------------------------------------------------------------------
    def check_can_live_migrate_destination(
        self,
        context: Any,
        instance: Any,
        src_compute_info: Any,
        dst_compute_info: Any,
        block_migration: bool = False,
        disk_over_commit: bool = False,
    ) -> Any:
        data = migrate_data_obj.LibvirtLiveMigrateData()
        data.filename = "novamig"
        data.image_type = "raw"
        data.graphics_listen_addr_vnc = "127.0.0.1"
        data.graphics_listen_addr_spice = "127.0.0.1"
        data.serial_listen_addr = None
        if block_migration is not None:
            data.block_migration = bool(block_migration)
        if disk_over_commit is not None:
            data.disk_over_commit = bool(disk_over_commit)
        data.disk_available_mb = HOST_DISK_GB * 1024
        # The tiny guest has no disk and the full guest's root disk is the shared read-only base
        # image: nothing to copy. Shared storage unless a block migration was asked for (libvirt
        # refuses a block migration between hosts that share storage).
        data.is_shared_block_storage = not block_migration
        data.is_shared_instance_path = not block_migration
        return data

    def cleanup_live_migration_destination_check(self, context: Any, dest_check_data: Any) -> None:
        pass

    def check_can_live_migrate_source(
        self, context: Any, instance: Any, dest_check_data: Any, block_device_info: Any = None
    ) -> Any:
        self._guest(instance)  # the guest must run here
        return dest_check_data

    # -- live migration: destination side ------------------------------------------------------------
    def pre_live_migration(
        self,
        context: Any,
        instance: Any,
        block_device_info: Any,
        network_info: Any,
        disk_info: Any,
        migrate_data: Any,
    ) -> Any:
        """Start the incoming QEMU (same hardware, ``-incoming defer``) on this host."""
        from novamig.hypervisor.machine import QemuMachine

        source = self._find_source(instance)
        src_net = source.machine.spec.network
        cloud_net = guest_network.current()
        network = cloud_net.attach(src_net.mac) if src_net is not None and cloud_net is not None else None
        spec = source.machine.spec.for_destination(name=f"{instance.name}-{self._host}", network=network)
        machine = QemuMachine(spec, self._rundir(instance))
        machine.launch()
        guests.REGISTRY.add(
            guests.Guest(
                instance.uuid,
                self._host,
                machine,
                self._pid_file(self._host, instance),
                migrations=list(source.migrations),
            )
        )
        return migrate_data

    def _find_source(self, instance: Any) -> guests.Guest:
        for host in self._layout.hosts:
            if host != self._host:
                guest = guests.REGISTRY.get(host, instance.uuid)
                if guest is not None:
                    return guest
        raise exception.MigrationPreCheckError(reason=f"no running guest for {instance.uuid}")

    def post_live_migration_at_destination(
        self,
        context: Any,
        instance: Any,
        network_info: Any,
        block_migration: bool = False,
        block_device_info: Any = None,
    ) -> None:
        pass

    def rollback_live_migration_at_destination(
        self,
        context: Any,
        instance: Any,
        network_info: Any,
        block_device_info: Any,
        destroy_disks: bool = True,
        migrate_data: Any = None,
    ) -> None:
        guest = guests.REGISTRY.pop(self._host, instance.uuid)
        if guest is not None:
            _end(guest.machine)

    # -- live migration: source side -----------------------------------------------------------------
    def live_migration(
        self,
        context: Any,
        instance: Any,
        dest: str,
        post_method: Any,
        recover_method: Any,
        block_migration: bool = False,
        migrate_data: Any = None,
    ) -> None:
        source = self._guest(instance)
        target = guests.REGISTRY.get(dest, instance.uuid)
        if target is None:
            LOG.error("no incoming guest for %s on %s", instance.uuid, dest)
            recover_method(context, instance, dest, migrate_data)
            return
        active = ActiveMigration(host_policy.read(self._layout.workdir, self._host))
        self._active[instance.uuid] = active

        def completed(figures: Any) -> None:
            target.migrations.append(figures)
            target.console_history = guests.console_text(source)
            target.paused = source.paused  # a paused guest arrives paused (QEMU keeps the run state)
            if active.paused_for_completion:
                with contextlib.suppress(Exception):
                    target.machine.command("cont")
            guests.REGISTRY.pop(self._host, instance.uuid)
            _end(source.machine)

        def failed(figures: Any) -> None:
            if figures is not None:
                source.migrations.append(figures)
            if active.paused_for_completion:
                with contextlib.suppress(Exception):
                    source.machine.command("cont")

        try:
            run_live_migration(
                context=context,
                instance=instance,
                dest=dest,
                source_machine=source.machine,
                dest_machine=target.machine,
                active=active,
                migrate_data=migrate_data,
                block_migration=block_migration,
                post_method=post_method,
                recover_method=recover_method,
                on_completed=completed,
                on_failed=failed,
                record_dir=self._layout.workdir / "migrations",
            )
        finally:
            self._active.pop(instance.uuid, None)

    def live_migration_force_complete(self, instance: Any) -> None:
        active = self._active.get(instance.uuid)
        if active is None:
            raise exception.NoActiveMigrationForInstance(instance_id=instance.uuid)
        active.force_complete()

    def live_migration_abort(self, instance: Any) -> None:
        active = self._active.get(instance.uuid)
        if active is None:
            raise exception.NoActiveMigrationForInstance(instance_id=instance.uuid)
        active.abort()

    def post_live_migration(
        self, context: Any, instance: Any, block_device_info: Any, migrate_data: Any = None
    ) -> None:
        pass

    def post_live_migration_at_source(self, context: Any, instance: Any, network_info: Any) -> None:
        pass

    def get_instance_diagnostics(self, instance: Any) -> Any:
        raise NotImplementedError()


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
