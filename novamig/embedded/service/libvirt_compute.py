"""Nova's own ``LibvirtDriver``, one per compute service of the embedded cloud's libvirt mode.

Loaded by Nova as ``nova.virt.novamig_libvirt.NovamigLibvirtDriver`` (``compute_driver =
novamig_libvirt.NovamigLibvirtDriver``). Everything a compute does is Nova's libvirt code — domain
XML, image backend (qcow2 over a cached base), live migration with its flags, monitor, downtime
steps, completion timeout and post-copy/auto-converge switches, libvirt's job statistics. The
subclass changes only what cannot be per-compute in one process, because Nova's configuration is
process-global (both computes run in the cloud's one process on the ``fake:/`` bus):

- **its libvirtd**: the connection URI is the compute's own daemon (`LibvirtHost.uri`), set on the
  instance before Nova's ``__init__`` builds its ``Host`` (``[libvirt] connection_uri`` stays unset);
- **its node UUID**: Nova keeps one in ``<state_path>/compute_id`` for the whole process; each
  compute gets a UUID derived from the cloud's work directory and its host name, reported by its
  ``Host`` and in its resources (as the QEMU mode's driver does);
- **its taps**: the 'tap' VIF is plugged in the compute's own network namespace, on its guest
  bridge (Nova's privsep would make it in the root namespace, where the compute's QEMU is not);
- **an aborted migration**: Nova's source rolls back and the server stays ACTIVE on its source
  (see `NovamigLibvirtDriver._live_migration_operation`);
- **its nova-cpu.conf**: each compute reads its own ``nova/nova-cpu-<host>.conf`` when it starts
  and again on ``SIGHUP`` to the cloud process (`novamig.embedded.compute_conf`): its
  ``[libvirt]`` live-migration options and ``max_concurrent_live_migrations`` become the host's
  policy in force (``policies/<host>.json``, read at each migration) — DevStack's edit of
  ``nova-cpu.conf`` and restart of ``n-cpu``, with a reload in place of the restart;
- **novamig's tiny guest**: it boots from its kernel and initramfs, with the port's address on its
  kernel command line, and the server's user-data as a fw_cfg file (``opt/org.novamig/user-data``)
  — the tiny image is not a disk image, and it has no DHCP client or cloud-init. Other images
  (the full guest's Glance form) boot from their disk as on any cloud.

Nova's privileged helpers run in this process (privsep's client mode off, as Nova's own
``PrivsepFixture`` does): the cloud process runs as root and starts no privsep daemons.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import signal
import threading
import uuid as uuidlib
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import libvirt  # type: ignore[import-untyped]
import nova.conf
import nova.privsep
from nova import exception
from nova.virt.libvirt import driver, vif
from nova.virt.libvirt import utils as libvirt_utils
from oslo_log import log as logging

from novamig.embedded import compute_conf, host_policy
from novamig.embedded.layout import TINY_IMAGE_ID
from novamig.embedded.service import driver_registry
from novamig.embedded.service.guest_images import IMAGES
from novamig.embedded.service.guest_spec import USER_DATA_FW_CFG, vif_address
from novamig.embedded.service.libvirt_cloud import LibvirtCloud
from novamig.hypervisor.libvirt_hosts import LibvirtHost

__all__ = ["IMAGES", "MODULE_NAME", "NovamigLibvirtDriver", "install"]

MODULE_NAME = "nova.virt.novamig_libvirt"
COMPUTE_DRIVER = "novamig_libvirt.NovamigLibvirtDriver"

NODE_NAMESPACE = uuidlib.UUID("1b7a4c0e-2f55-4d0b-8f6c-6c6962766972")
"""Namespace of the computes' node UUIDs (uuid5 of work directory and host name)."""

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

_clouds: list[LibvirtCloud] = []
_lock = threading.Lock()
_nova_hosts: list[Any] = []  # every driver's nova.virt.libvirt.host.Host, for the shutdown
_drivers: dict[str, NovamigLibvirtDriver] = {}  # host name → its driver, for the reloads


def install(cloud: LibvirtCloud) -> None:
    """Make the hosts known to the drivers Nova will create, run privsep in-process, and make
    SIGHUP reload every compute's nova-cpu.conf (called in the main thread, as signal handlers
    must be set there)."""
    _clouds[:] = [cloud]
    nova.privsep.sys_admin_pctxt.set_client_mode(False)
    signal.signal(signal.SIGHUP, _on_sighup)


def _on_sighup(_signum: int, _frame: Any) -> None:
    """The reload runs in a thread of its own: a signal handler must not block the main thread."""
    threading.Thread(target=reload_all, name="nova-cpu-conf-reload", daemon=True).start()


def reload_all() -> None:
    """Every compute reads its nova-cpu.conf again (each acknowledges, see `compute_conf`)."""
    with _lock:
        drivers = list(_drivers.values())
    for nova_driver in drivers:
        nova_driver.load_conf()


def _libvirt_host(hostname: str) -> LibvirtHost:
    if not _clouds:
        raise RuntimeError("the libvirt hosts are not started (libvirt_compute.install)")
    return _clouds[0].host(hostname)


def node_uuid(hostname: str) -> str:
    return str(uuidlib.uuid5(NODE_NAMESPACE, f"{driver_registry.current_layout().workdir}:{hostname}"))


def with_fw_cfg(domain_xml: str, name: str, path: Path) -> str:
    """`domain_xml` with a ``<sysinfo type='fwcfg'>`` entry giving the guest `path` as `name`."""
    sysinfo = f"<sysinfo type='fwcfg'><entry name={quoteattr(name)} file={quoteattr(str(path))}/></sysinfo>"
    head, sep, tail = domain_xml.rpartition("</domain>")
    if not sep:
        raise ValueError("not a libvirt domain XML")
    return f"{head}{sysinfo}{sep}{tail}"


def write_user_data(instance: Any) -> Path | None:
    """The server's user-data (Nova keeps it base64) in its instance directory, which both
    computes share (every migration's destination QEMU reads it again); None without any."""
    if not instance.user_data:
        return None
    try:
        data = base64.b64decode(instance.user_data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise exception.InstanceDeployFailure(reason=f"user_data is not valid base64: {exc}") from exc
    directory = Path(libvirt_utils.get_instance_path(instance))
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "user-data"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold secrets
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return target


class _EndOfEvents(BaseException):
    """Ends Nova's connection-event thread: its loop catches `Exception` only."""


def _end_of_events() -> None:
    raise _EndOfEvents


class NamespaceVifDriver(vif.LibvirtGenericVIFDriver):  # type: ignore[misc]
    """Nova's VIF driver with the 'tap' VIF plugged in the compute's own namespace."""

    def __init__(self, nova_host: Any, libvirt_host: LibvirtHost) -> None:
        super().__init__(nova_host)
        self._libvirt_host = libvirt_host

    def plug_tap(self, instance: Any, vif: Any) -> None:
        self._libvirt_host.plug_tap(self.get_vif_devname(vif), exist_ok=True)

    def unplug_tap(self, instance: Any, vif: Any) -> None:
        self._libvirt_host.unplug_tap(self.get_vif_devname(vif))


class NovamigLibvirtDriver(driver.LibvirtDriver):  # type: ignore[misc]
    """Nova's libvirt driver bound to one compute's libvirtd (see the module docstring)."""

    def __init__(self, virtapi: Any, read_only: bool = False) -> None:
        # Nova creates the compute manager, and with it this driver, while CONF.host is the
        # service's host name (nova_setup.start_service).
        self._hostname = str(CONF.host)
        self._libvirt_host = _libvirt_host(self._hostname)
        uri = self._libvirt_host.uri
        # Nova's __init__ calls self._uri() for its Host: an instance attribute shadows the class's
        # static method, which reads the process-global [libvirt] connection_uri.
        self._uri = lambda: uri
        super().__init__(virtapi, read_only)
        self._host._node_uuid = node_uuid(self._hostname)
        with _lock:
            _nova_hosts.append(self._host)
        self.vif_driver = NamespaceVifDriver(self._host, self._libvirt_host)
        workdir = driver_registry.current_layout().workdir
        self._conf_file = compute_conf.conf_path(workdir, self._hostname)
        if not self._conf_file.exists():  # the policy in force at start: Nova's defaults or the cloud's
            policy = host_policy.read(workdir, self._hostname)
            self._conf_file.write_text(compute_conf.render(self._hostname, uri, policy))
        self.load_conf()
        with _lock:
            _drivers[self._hostname] = self

    def load_conf(self) -> None:
        """Read this compute's nova-cpu.conf: its live-migration options become the host's policy
        in force. A file Nova would refuse leaves the policy as it was (DevStack's n-cpu would
        not start with it); the answer is in the acknowledgement either way."""
        text = self._conf_file.read_text()
        try:
            options = compute_conf.parse(text)
        except ValueError as exc:
            LOG.error("%s: %s refused: %s", self._hostname, self._conf_file, exc)
            compute_conf.acknowledge(self._conf_file, text, error=str(exc))
            return
        workdir = driver_registry.current_layout().workdir
        host_policy.write(workdir, self._hostname, dataclasses.asdict(options))
        compute_conf.acknowledge(self._conf_file, text)
        LOG.info("%s: loaded %s: %s", self._hostname, self._conf_file, options)

    def cleanup_host(self, host: str) -> None:
        """End the connection-event threads Nova leaves running (a TODO in Nova's
        ``Host.cleanup``), then Nova's cleanup. Those threads run in Nova's thread pool, one per
        process: its shutdown in the first compute manager's cleanup would otherwise wait for
        every compute's thread until the manager's shutdown timeout (160 s by default). So the
        first compute to stop ends them all: the pool, and with it every compute, stops too."""
        with _lock:
            hosts = list(_nova_hosts)
            _nova_hosts.clear()
        for nova_host in hosts:
            nova_host._conn_event_handler_queue.put(_end_of_events)
        super().cleanup_host(host)

    def live_migration(  # noqa: PLR0917 - Nova's ComputeDriver signature, positional arguments included
        self,
        context: Any,
        instance: Any,
        dest: str,
        post_method: Any,
        recover_method: Any,
        block_migration: bool = False,
        migrate_data: Any = None,
    ) -> None:
        """Nova's live migration, under this compute's host policy (`EmbeddedCloud.set_host_policy`,
        read at each migration as in the QEMU mode): its ``[libvirt]`` options are set in Nova's
        configuration, and the migration flags derived from them again (Nova derives them once, at
        start), before Nova's code reads them. The configuration is process-wide, so two
        migrations from the two computes at once run under the policy set last."""
        self._apply_host_policy()
        super().live_migration(
            context, instance, dest, post_method, recover_method, block_migration, migrate_data
        )

    def _live_migration_operation(  # noqa: PLR0917 - Nova's private signature, positional arguments included
        self,
        context: Any,
        instance: Any,
        dest: str,
        block_migration: bool,
        migrate_data: Any,
        guest: Any,
        device_names: Any,
    ) -> None:
        """Nova's migrate call, except that libvirt's answer to a cancelled job is not raised again.

        An abort (``os-migrations`` DELETE, or Nova's own completion timeout) is
        ``virDomainAbortJob``: libvirt resumes the guest on its source, and ``migrateToURI3``
        fails with ``VIR_ERR_OPERATION_ABORTED`` ("job 'migration out' canceled by client").
        Nova's migration monitor sees the cancelled job and rolls back (``recover_method`` with
        ``migration_status='cancelled'``): the server is ACTIVE on its source. Since Nova commit
        20a9f9d ("Collect result of _live_migration_operation", December 2025, in Nova 34.0.0),
        ``_live_migration`` then calls ``future.result()`` on this call's thread, so that very
        error is raised after the rollback, and the compute manager's ``_do_live_migration`` marks
        the migration ``error`` and the server ``ERROR`` — although the guest runs on its source.
        Before that commit the error stayed in the thread (Nova's monitor always decided), which
        is what this returns to for this one error: every other failure is raised as Nova does.
        If the monitor saw no cancelled job, it still rolls back: its ``VIR_DOMAIN_JOB_NONE`` path
        finds the domain running on the source and calls ``recover_method``."""
        try:
            super()._live_migration_operation(
                context, instance, dest, block_migration, migrate_data, guest, device_names
            )
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_ABORTED:
                raise
            LOG.info("Live migration aborted; Nova's monitor rolls back: %s", exc, instance=instance)

    def _apply_host_policy(self) -> None:
        policy = dataclasses.asdict(
            host_policy.read(driver_registry.current_layout().workdir, self._hostname)
        )
        with _lock:
            for name, value in policy.items():
                if name.startswith("live_migration_"):
                    CONF.set_override(name, value, group="libvirt")
            self._parse_migration_flags()

    def get_available_resource(self, nodename: str) -> Any:
        resources = super().get_available_resource(nodename)
        resources["uuid"] = node_uuid(self._hostname)  # else the resource tracker takes compute_id
        return resources

    def _get_guest_config(
        self, instance: Any, network_info: Any, image_meta: Any, disk_info: Any, *args: Any, **kwargs: Any
    ) -> Any:
        guest = super()._get_guest_config(instance, network_info, image_meta, disk_info, *args, **kwargs)
        if instance.image_ref == TINY_IMAGE_ID:
            image = IMAGES.get()
            _mac, cidr, gateway = vif_address(network_info)
            params = {"ip": cidr} if cidr else {}
            if gateway:
                params["gw"] = gateway
            guest.os_kernel = str(image.kernel)
            guest.os_initrd = str(image.initrd)
            guest.os_cmdline = image.command_line(**params)
        return guest

    def _get_guest_xml(
        self, context: Any, instance: Any, network_info: Any, *args: Any, **kwargs: Any
    ) -> str:
        xml = str(super()._get_guest_xml(context, instance, network_info, *args, **kwargs))
        if instance.image_ref != TINY_IMAGE_ID:
            return xml  # other images read user-data from a config drive, as cloud-init does
        path = write_user_data(instance)
        return with_fw_cfg(xml, USER_DATA_FW_CFG, path) if path is not None else xml
