"""The live-migration half of novamig's Nova driver, following the libvirt driver's contract.

The destination's ``pre_live_migration`` starts the incoming QEMU (same machine, ``-incoming
defer``, its own tap with the same MAC); the source's ``live_migration`` runs the QMP migration
(``migration_monitor.run_live_migration``) and calls Nova's post or recover method;
force-complete and abort reach the running migration through its ``ActiveMigration``. Both hosts'
driver instances are in the one cloud process, so the destination's QEMU is handed to the source
through ``guests.REGISTRY``.
"""

# Method signatures below are Nova's ComputeDriver interface, positional arguments included.
# ruff: noqa: PLR0917

from __future__ import annotations

import contextlib
import logging
from typing import Any

from nova import exception
from nova.objects import migrate_data as migrate_data_obj

from novamig.embedded import host_policy
from novamig.embedded.service import guest_network, guests
from novamig.embedded.service.driver_host import HOST_DISK_GB, HostDriver
from novamig.embedded.service.guest_spec import end_guest
from novamig.embedded.service.migration_monitor import ActiveMigration, run_live_migration
from novamig.hypervisor.machine import QemuMachine

LOG = logging.getLogger(__name__)


class MigratingDriver(HostDriver):
    """``HostDriver`` plus Nova's live-migration methods, on either end of a migration."""

    def __init__(self, virtapi: Any, read_only: bool = False) -> None:
        super().__init__(virtapi, read_only)
        self._active: dict[str, ActiveMigration] = {}

    # -- checks --------------------------------------------------------------------------------------
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

    # -- destination side ----------------------------------------------------------------------------
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
            end_guest(guest.machine)

    # -- source side ---------------------------------------------------------------------------------
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
            end_guest(source.machine)

        def failed(figures: Any) -> None:
            if figures is not None:
                source.migrations.append(figures)
            if active.paused_for_completion:
                with contextlib.suppress(Exception):
                    source.machine.command("cont")
            end_incoming()

        def end_incoming() -> None:
            # The incoming QEMU never got the guest: end it here rather than wait for Nova's
            # rollback on the destination, which does not come when the source's QEMU had died
            # (the migration cannot even start) and would leave it running after the server is gone.
            incoming = guests.REGISTRY.pop(dest, instance.uuid)
            if incoming is not None:
                end_guest(incoming.machine)

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
        except Exception:
            end_incoming()
            raise
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
