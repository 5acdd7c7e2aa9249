"""Nova's libvirt code against one libvirt host, outside the cloud: each compute's standalone Nova
configuration, and a check that Nova's own libvirt code reaches that compute's libvirtd with it.

The cloud's libvirt mode itself (``novamig cloud up --driver libvirt``) runs both computes in the
cloud's one process (`novamig.embedded.service.libvirt_compute`, `libvirt_cloud`); this module is
the diagnostic beside it: Nova's driver in a process of its own per compute (``check``), and one
migration by Nova's ``Guest.migrate`` between two daemons without the compute services (``migrate``).

Each compute gets its own configuration file here, ``nova/nova-cpu-<host>.conf``, read after the
cloud's ``nova.conf`` — the shape of DevStack's ``nova-cpu.conf``. What it sets, and why:

``[DEFAULT]``
  ``compute_driver = libvirt.LibvirtDriver``; ``host`` (the compute's service name);
  ``instances_path`` per host: separate directories make Nova's shared-storage check fail, so a
  live migration is a block migration over NBD, as on a DevStack multinode job without shared
  storage; ``state_path`` per host, because Nova's libvirt driver keeps the compute node's UUID
  there (``compute_id``), and two computes with one UUID would be one node to Placement.
``[libvirt]``
  ``virt_type = qemu`` (TCG: no usable KVM here); ``connection_uri``, the compute's own daemon's
  unix socket from the root namespace (the default ``qemu:///system`` would be nobody's daemon
  here); ``live_migration_scheme = tcp`` and ``live_migration_inbound_addr`` = the host's address
  on the management link: Nova's destination reports its inbound address in the migration data
  and the source builds ``qemu+tcp://<that address>/system`` and ``tcp://<that address>`` from it,
  so the source dials its peer's address (libvirtd listens there without TLS or authentication,
  inside the namespaces only); ``images_type = qcow2`` (local disks, no Ceph/LVM);
  ``cpu_mode = custom`` with ``qemu64``: one CPU model both hosts offer, so guests can move.
``[vnc]``
  ``enabled = False``: no console proxy in the embedded cloud.

How the cloud gets around what this standalone form avoids by running each compute alone
(Nova's process-global configuration, the 'tap' VIF plugged by privsep in the root namespace,
Nova's connection-event thread at shutdown) is in `libvirt_compute`; here ``__main__`` ends the
process with ``os._exit`` for that thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from novamig.embedded.config import Sections, render_ini, write_private
from novamig.embedded.layout import CloudLayout
from novamig.embedded.service import nova_threading
from novamig.hypervisor.libvirt_hosts import LibvirtHost

DRIVER = "libvirt.LibvirtDriver"
"""The ``compute_driver`` of this mode (Nova's own libvirt driver)."""

MODE = "libvirt"
"""The name the mode is asked for by (``driver=`` of the embedded cloud)."""


def compute_conf(layout: CloudLayout, host: LibvirtHost) -> Sections:
    """The options of one libvirt compute (see the module docstring for each)."""
    state = layout.nova_dir / "computes" / host.hostname
    return {
        "DEFAULT": {
            "compute_driver": DRIVER,
            "host": host.hostname,
            "state_path": state,
            "instances_path": state / "instances",
            "my_ip": host.address,
        },
        "libvirt": {
            "virt_type": "qemu",
            "connection_uri": host.uri,
            "live_migration_scheme": "tcp",
            "live_migration_inbound_addr": host.address,
            "images_type": "qcow2",
            "cpu_mode": "custom",
            "cpu_models": "qemu64",
        },
        "vnc": {"enabled": False},
    }


def compute_conf_path(layout: CloudLayout, hostname: str) -> Path:
    """Where a compute's file goes: ``nova/nova-cpu-<host>.conf`` (DevStack: ``nova-cpu.conf``)."""
    return layout.nova_dir / f"nova-cpu-{hostname}.conf"


def write_compute_confs(layout: CloudLayout, hosts: list[LibvirtHost]) -> dict[str, Path]:
    """Write each compute's file; host name → path. Its state and instances directories are made
    too (Nova expects them to exist)."""
    paths = {}
    for host in hosts:
        sections = compute_conf(layout, host)
        Path(sections["DEFAULT"]["instances_path"]).mkdir(parents=True, exist_ok=True)
        path = compute_conf_path(layout, host.hostname)
        write_private(path, render_ini(sections))
        paths[host.hostname] = path
    return paths


def _nova_conf(conf_files: list[str]) -> Any:
    """Nova's configuration from `conf_files`, with the options a compute service registers when
    it starts (``[neutron_tunnel]``, ``[pci]`` devices), which the libvirt driver reads, and Nova's
    versioned objects."""
    nova_threading.prepare()
    import nova.conf  # noqa: PLC0415 - Nova only after nova_threading.prepare()
    from nova import config, objects  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    config.parse_args(["novamig-libvirt-compute", *[a for p in conf_files for a in ("--config-file", p)]])
    nova.conf.neutron.register_dynamic_opts(nova.conf.CONF)
    nova.conf.devices.register_dynamic_opts(nova.conf.CONF)
    objects.register_all()
    return nova.conf.CONF


def check_compute(conf_files: list[str]) -> dict[str, Any]:
    """Nova's own libvirt driver against one compute's daemon, with that compute's configuration,
    as far as a compute service's start goes without its database: ``init_host`` (connection,
    event thread, the minimum libvirt/QEMU versions, CPU model checks), the node and its UUID,
    the resources it would report to Placement, and the migration URIs Nova's source side would
    build for a migration to this compute. Runs in a process of its own (``python -m
    novamig.embedded.service.libvirt_mode check FILE…``): Nova's configuration is process-global.
    (``init_host`` logs that it cannot mark the service enabled: there is no database here.)"""
    conf = _nova_conf(conf_files)
    from nova.virt.libvirt import driver  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    nova_driver = driver.LibvirtDriver(virtapi=None)
    nova_driver.init_host(conf.host)
    try:
        nova_host = nova_driver._host
        resources = nova_driver.get_available_resource(conf.host)
        inbound = conf.libvirt.live_migration_inbound_addr
        return {
            "host": conf.host,
            "hypervisor_hostname": nova_host.get_hostname(),
            "nodes": nova_driver.get_nodenames_by_uuid(),
            "resources": {k: resources[k] for k in ("vcpus", "memory_mb", "hypervisor_type")},
            "libvirt_version": nova_host.get_connection().getLibVersion(),
            "qemu_version": nova_host.get_connection().getVersion(),
            "has_min_version": nova_host.has_min_version(driver.MIN_LIBVIRT_VERSION, driver.MIN_QEMU_VERSION),
            "live_migration_uri": driver.LibvirtDriver._live_migration_uri(inbound),
            "migrate_uri": driver.LibvirtDriver._migrate_uri(inbound),
        }
    finally:
        nova_driver.cleanup_host(conf.host)


def migrate_with_nova(conf_files: list[str], dest_inbound_addr: str, domain: str) -> dict[str, Any]:
    """A live migration of `domain` from the compute of `conf_files` by Nova's own libvirt code: the
    flags Nova's driver derives from the ``[libvirt]`` options (``_parse_migration_flags``), the
    URIs its source side builds from the destination's inbound address (what the destination
    reports in Nova's migration data), ``Guest.migrate`` with the migratable XML, and the job
    information Nova's migration monitor polls meanwhile. Runs in a process of its own."""
    conf = _nova_conf(conf_files)
    from nova.virt.libvirt import driver, guest, host  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    nova_driver = driver.LibvirtDriver(virtapi=None)
    nova_driver._parse_migration_flags()
    nova_host = host.Host(conf.libvirt.connection_uri)
    nova_host.initialize()
    try:
        source = guest.Guest(nova_host.get_connection().lookupByName(domain))
        polls: list[str] = []
        box: list[BaseException] = []

        def run() -> None:
            try:
                source.migrate(
                    destination=driver.LibvirtDriver._live_migration_uri(dest_inbound_addr),
                    migrate_uri=driver.LibvirtDriver._migrate_uri(dest_inbound_addr),
                    destination_xml=source.get_xml_desc(dump_migratable=True),
                    flags=nova_driver._live_migration_flags,
                    bandwidth=0,
                )
            except BaseException as exc:
                box.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=run, name="nova-live-migration")
        thread.start()
        while thread.is_alive():
            with contextlib.suppress(Exception):  # the domain is gone from the source at the end
                polls.append(str(source.get_job_info().type))
            thread.join(0.1)
        if box:
            raise box[0]
        return {
            "flags": nova_driver._live_migration_flags,
            "wall_s": time.monotonic() - started,
            "job_types_polled": sorted(set(polls)),
        }
    finally:
        nova_host.cleanup()


def _main(argv: list[str]) -> dict[str, Any]:
    """``check CONF…`` or ``migrate CONF DEST_INBOUND_ADDR DOMAIN`` (see the functions)."""
    if argv[:1] == ["check"]:
        return check_compute(argv[1:])
    if argv[:1] == ["migrate"] and len(argv) == 4:
        return migrate_with_nova([argv[1]], argv[2], argv[3])
    raise SystemExit("usage: libvirt_mode check CONF... | migrate CONF DEST_INBOUND_ADDR DOMAIN")


if __name__ == "__main__":
    # os._exit on every path: Host.cleanup() cancels Nova's delayed events but not its
    # connection-event thread, which waits on a queue forever; the thread pool's exit hook would
    # join it, and the process would never end.
    try:
        print(json.dumps(_main(sys.argv[1:])), flush=True)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)
