"""The embedded cloud's libvirt mode (``novamig cloud up --driver libvirt``): the Nova
configuration it writes and the libvirt hosts' files (fast); one server booted and live-migrated
through the compute API by Nova's own libvirt driver, with libvirt's job statistics (slow)."""

from __future__ import annotations

import configparser
from pathlib import Path

from novamig.embedded import config
from novamig.embedded.layout import CloudLayout, Ports, Secrets
from novamig.hypervisor.libvirt_hosts import hosts_file, qemu_conf


def _nova_conf(tmp_path: Path, driver: str) -> configparser.RawConfigParser:
    layout = CloudLayout(workdir=tmp_path, cloud_name="t", ports=Ports(1, 2, 3, 4, 5), driver=driver)
    paths = config.write_all(layout, Secrets.generate())
    parser = configparser.RawConfigParser()
    parser.read(paths["nova"])
    return parser


def test_the_libvirt_mode_writes_novas_libvirt_options(tmp_path: Path) -> None:
    conf = _nova_conf(tmp_path, "libvirt")
    default, libvirt = conf["DEFAULT"], conf["libvirt"]
    # Nova's own LibvirtDriver, through the subclass that binds each compute to its own libvirtd.
    assert default["compute_driver"] == "novamig_libvirt.NovamigLibvirtDriver"
    # One instances path for both computes: shared storage, memory-only live migrations.
    assert default["instances_path"] == str(tmp_path / "guests" / "instances")
    assert (default["force_raw_images"], default["use_cow_images"]) == ("false", "true")
    assert default["mkisofs_cmd"] == "xorrisofs"
    assert (libvirt["virt_type"], libvirt["images_type"]) == ("qemu", "qcow2")
    assert (libvirt["cpu_mode"], libvirt["cpu_models"]) == ("custom", "qemu64")
    assert libvirt["live_migration_scheme"] == "tcp"
    assert libvirt["live_migration_permit_post_copy"] == "true"
    assert libvirt["live_migration_permit_auto_converge"] == "true"
    assert (libvirt["live_migration_downtime"], libvirt["live_migration_downtime_steps"]) == ("500", "10")
    assert libvirt["live_migration_completion_timeout"] == "800"
    # Per compute, set by the driver and not in the process-wide file: the daemon it talks to,
    # and the inbound address (unset: Nova's source dials the destination compute by name).
    assert "connection_uri" not in libvirt and "live_migration_inbound_addr" not in libvirt
    assert conf["vnc"]["enabled"] == "false"


def test_other_modes_get_no_libvirt_options(tmp_path: Path) -> None:
    conf = _nova_conf(tmp_path, "novamig")
    assert conf["DEFAULT"]["compute_driver"] == "novamig.NovamigDriver"
    assert not conf.has_option("libvirt", "virt_type") and "mkisofs_cmd" not in conf["DEFAULT"]


def test_each_libvirtd_resolves_the_compute_names_and_shares_the_instances_path() -> None:
    text = hosts_file([("compute1", "10.88.0.1"), ("compute2", "10.88.0.2")])
    assert text.splitlines() == ["127.0.0.1 localhost", "10.88.0.1 compute1", "10.88.0.2 compute2"]
    assert 'shared_filesystems = [ "/x/instances" ]' in qemu_conf("10.88.0.1", ("/x/instances",))
    assert "shared_filesystems" not in qemu_conf("10.88.0.1")
