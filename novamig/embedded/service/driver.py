"""novamig's Nova compute driver: each server is a QEMU guest of novamig's hypervisor layer.

Loaded by Nova as ``nova.virt.novamig.NovamigDriver`` (``service.main`` registers this module under
that name through ``driver_registry``; Nova imports drivers only from ``nova.virt``). One instance
per compute host, all in the cloud process; the guests they run are in ``guests.REGISTRY``.

The driver is three classes, one on top of the other, so each reads in a sitting:
- ``driver_host.HostDriver``: the node, its resources, lookups of this host's guests;
- ``driver_migration.MigratingDriver``: live migration, following the libvirt driver's contract
  (``pre_live_migration`` on the destination starts the incoming QEMU, ``live_migration`` on the
  source runs the QMP migration through ``migration_monitor`` and calls Nova's post/recover
  methods, force-complete and abort reach the running migration);
- ``NovamigDriver`` here: a server's life. ``spawn`` boots the tiny guest (``novamig.guest.image``)
  sized by the flavor (RAM, vCPUs), with the port's MAC and the fixed IP handed to the guest agent
  on the kernel command line, and returns once the agent reports READY; a server of image
  ``novamig-full`` boots the full guest (``novamig.guest.full``) with its shared read-only root
  disk instead (flavor RAM ≥ 160 MiB); the server's user-data reaches the guest through QEMU's
  fw_cfg, on both ends of a live migration (``guest_spec``); ``destroy``, ``reboot``,
  ``power_off/on``, ``pause/unpause`` (each unpause writes its figures: ``pause_figures``),
  ``suspend/resume``, ``get_info``, console output.
"""

# Method signatures below are Nova's ComputeDriver interface, positional arguments included.
# ruff: noqa: PLR0917

from __future__ import annotations

import shutil
import time
from typing import Any

from nova import exception
from nova.compute import power_state
from nova.virt import hardware

from novamig.embedded.service import guests, pause_figures
from novamig.embedded.service.driver_migration import MigratingDriver
from novamig.embedded.service.guest_images import IMAGES
from novamig.embedded.service.guest_spec import end_guest, guest_spec, instance_dir
from novamig.hypervisor.errors import HypervisorError
from novamig.hypervisor.machine import QemuMachine

__all__ = ["IMAGES", "NovamigDriver"]

BOOT_TIMEOUT_S = 120.0


class NovamigDriver(MigratingDriver):
    """The driver Nova loads (``compute_driver = novamig.NovamigDriver``): a server's life."""

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
        spec = guest_spec(self._layout, instance, network_info)
        machine = QemuMachine(spec, self._rundir(instance))
        try:
            machine.launch()
            guests.REGISTRY.add(
                guests.Guest(instance.uuid, self._host, machine, self._pid_file(self._host, instance))
            )
            machine.wait_ready(BOOT_TIMEOUT_S)
        except HypervisorError as exc:
            guests.REGISTRY.pop(self._host, instance.uuid)
            end_guest(machine)
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
            end_guest(guest.machine)
        if not any(guests.REGISTRY.get(host, instance.uuid) for host in self._layout.hosts):
            shutil.rmtree(instance_dir(self._layout, instance.uuid), ignore_errors=True)

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
        end_guest(guest.machine)
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

    def get_instance_diagnostics(self, instance: Any) -> Any:
        raise NotImplementedError()
