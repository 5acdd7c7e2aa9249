"""The libvirt mode's per-compute Nova configuration: what it writes (fast), and that Nova's own
libvirt code reaches each compute's libvirtd with it (slow: two libvirt hosts are started)."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest

from novamig.embedded.controller import CloudStartError, EmbeddedCloud
from novamig.embedded.layout import CloudLayout, Ports
from novamig.embedded.service import libvirt_mode
from novamig.hypervisor.libvirt_hosts import LibvirtHost, LibvirtHostPair, libvirt_supported


def _layout(tmp_path: Path) -> CloudLayout:
    (tmp_path / "nova").mkdir()
    return CloudLayout(workdir=tmp_path, cloud_name="t", ports=Ports(1, 2, 3, 4, 5), driver=libvirt_mode.MODE)


def _hosts(tmp_path: Path) -> list[LibvirtHost]:
    return [
        LibvirtHost("novamig-lv-a", "10.88.0.1", "novamig-0-00000a", tmp_path / "lv" / "a"),
        LibvirtHost("novamig-lv-b", "10.88.0.2", "novamig-0-00000b", tmp_path / "lv" / "b"),
    ]


def test_each_compute_gets_its_own_nova_cpu_conf(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    paths = libvirt_mode.write_compute_confs(layout, _hosts(tmp_path))
    assert sorted(paths) == ["novamig-lv-a", "novamig-lv-b"]
    confs = {}
    for name, path in paths.items():
        assert path == layout.nova_dir / f"nova-cpu-{name}.conf" and path.stat().st_mode & 0o077 == 0
        parser = configparser.RawConfigParser()
        parser.read(path)
        confs[name] = parser
    a, b = confs["novamig-lv-a"], confs["novamig-lv-b"]
    assert (
        a["DEFAULT"]["compute_driver"] == "libvirt.LibvirtDriver" and a["DEFAULT"]["host"] == "novamig-lv-a"
    )
    assert a["libvirt"]["virt_type"] == "qemu" and a["libvirt"]["images_type"] == "qcow2"
    assert a["libvirt"]["live_migration_scheme"] == "tcp"
    assert a["vnc"]["enabled"] == "false"
    # Each its own daemon, address, node state and instances directory (separate: block migration).
    assert a["libvirt"]["connection_uri"] == f"qemu+unix:///system?socket={tmp_path}/lv/a/run/libvirt-sock"
    assert b["libvirt"]["connection_uri"].endswith("/lv/b/run/libvirt-sock")
    assert (a["libvirt"]["live_migration_inbound_addr"], b["libvirt"]["live_migration_inbound_addr"]) == (
        "10.88.0.1",
        "10.88.0.2",
    )
    assert a["DEFAULT"]["state_path"] != b["DEFAULT"]["state_path"]
    assert a["DEFAULT"]["instances_path"] != b["DEFAULT"]["instances_path"]
    assert Path(a["DEFAULT"]["instances_path"]).is_dir()


def test_the_cloud_refuses_the_incomplete_mode_with_a_clear_error(tmp_path: Path) -> None:
    cloud = EmbeddedCloud(tmp_path / "cloud", driver=libvirt_mode.MODE)
    with pytest.raises(CloudStartError, match=r"libvirt mode .* is not complete.*QEMU driver"):
        cloud.start()
    assert not (tmp_path / "cloud").exists()  # refused before anything was made


@pytest.mark.slow
@pytest.mark.qemu
def test_novas_libvirt_host_reaches_each_compute_daemon(tmp_path: Path) -> None:
    pytest.importorskip("libvirt", reason="libvirt-python (the embedded extra) is not installed")
    why = libvirt_supported()
    if why is not None:
        pytest.skip(why)
    layout = _layout(tmp_path)
    with LibvirtHostPair() as pair:
        paths = libvirt_mode.write_compute_confs(layout, pair.hosts)
        for host in pair.hosts:
            proc = subprocess.run(
                [sys.executable, "-m", "novamig.embedded.service.libvirt_mode", str(paths[host.hostname])],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            seen = json.loads(proc.stdout.strip().splitlines()[-1])
            assert seen["host"] == host.hostname
            assert seen["hypervisor_hostname"] == host.hostname  # libvirt's, from the host's UTS namespace
            assert seen["has_min_version"] is True
            assert seen["libvirt_version"] >= 11_000_000
            # What Nova's source side builds for a migration to this compute.
            assert seen["live_migration_uri"] == host.tcp_uri
            assert seen["migrate_uri"] == host.migrate_uri
