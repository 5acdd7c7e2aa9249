"""The embedded cloud's libvirt mode, first part: each compute's Nova configuration, and a check that
Nova's own libvirt code reaches that compute's libvirtd with it.

The mode (the embedded cloud refuses to start in it yet: its computes do not run) will run Nova's real
``libvirt.LibvirtDriver`` for each compute host against a libvirtd of its own
(`novamig.hypervisor.libvirt_hosts`). Each compute gets its own configuration file,
``nova/nova-cpu-<host>.conf``, read after the cloud's ``nova.conf`` — the shape of DevStack's
``nova-cpu.conf``, so the host policy can later change a compute's options through the same path as
on DevStack. What it sets, and why:

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

Traps this mode has to get around before its computes can run:
Nova's configuration is process-global (``nova.conf.CONF``), so two libvirt computes in one process
read each other's ``connection_uri`` and inbound address unless each compute's options are
overridden around its calls, or each compute runs in a process of its own (then the in-process
``fake:/`` message bus no longer joins them). Nova 34 refuses 'bridge' VIFs; the 'tap' VIF shape
(``<interface type='ethernet'>``, ``managed='no'``) needs the tap made in the destination host's
namespace, where Nova's privsep would make it in the root namespace. ``Host.cleanup()`` must run at
shutdown, and even then Nova's connection-event thread stays blocked on its queue (see
``__main__`` below).
"""

from __future__ import annotations

import json
import os
import sys
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


def check_compute(conf_files: list[str]) -> dict[str, Any]:
    """Nova's own libvirt code against one compute's daemon, with that compute's configuration:
    ``Host.initialize()`` (Nova's event thread and connection), the hostname Nova reports as
    ``hypervisor_hostname``, the minimum-version check Nova's driver makes at start, and the
    migration URIs Nova's source side would build for a migration to this compute. Runs in a
    process of its own (``python -m novamig.embedded.service.libvirt_mode FILE…``): Nova's
    configuration is process-global."""
    nova_threading.prepare()
    import nova.conf  # noqa: PLC0415 - Nova only after nova_threading.prepare()
    from nova.virt.libvirt import driver, host  # noqa: PLC0415 - Nova only after nova_threading.prepare()

    conf = nova.conf.CONF
    args: list[str] = []
    for path in conf_files:
        args += ["--config-file", path]
    conf(args, project="nova")
    nova_host = host.Host(conf.libvirt.connection_uri)
    nova_host.initialize()
    try:
        inbound = conf.libvirt.live_migration_inbound_addr
        return {
            "host": conf.host,
            "hypervisor_hostname": nova_host.get_hostname(),
            "libvirt_version": nova_host.get_connection().getLibVersion(),
            "qemu_version": nova_host.get_connection().getVersion(),
            "has_min_version": nova_host.has_min_version(driver.MIN_LIBVIRT_VERSION, driver.MIN_QEMU_VERSION),
            "live_migration_uri": driver.LibvirtDriver._live_migration_uri(inbound),
            "migrate_uri": driver.LibvirtDriver._migrate_uri(inbound),
        }
    finally:
        nova_host.cleanup()


if __name__ == "__main__":
    print(json.dumps(check_compute(sys.argv[1:])), flush=True)
    # Host.cleanup() cancels Nova's delayed events but not its connection-event thread, which waits
    # on a queue forever; the thread pool's exit hook would join it, and the process never ends.
    os._exit(0)
