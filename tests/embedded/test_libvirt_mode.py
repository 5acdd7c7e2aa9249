"""The libvirt mode's per-compute Nova configuration: what it writes (fast), and that Nova's own
libvirt code reaches each compute's libvirtd with it (slow: two libvirt hosts are started)."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest

from novamig.embedded.layout import CloudLayout, Ports
from novamig.embedded.service import libvirt_mode
from novamig.guest.image import GuestImage
from novamig.hypervisor.libvirt_hosts import LibvirtHost, LibvirtHostPair, libvirt_supported
from novamig.measure.libvirt_jobstats import DomainPlace, LibvirtJobFigures
from novamig.results import MigrationRecord


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


@pytest.mark.slow
@pytest.mark.qemu
def test_novas_libvirt_driver_starts_on_each_compute(tmp_path: Path) -> None:
    pytest.importorskip("libvirt", reason="libvirt-python (the embedded extra) is not installed")
    why = libvirt_supported()
    if why is not None:
        pytest.skip(why)
    layout = _layout(tmp_path)
    with LibvirtHostPair() as pair:
        paths = libvirt_mode.write_compute_confs(layout, pair.hosts)
        nodes: dict[str, str] = {}
        for host in pair.hosts:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "novamig.embedded.service.libvirt_mode",
                    "check",
                    str(paths[host.hostname]),
                ],
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
            # The node Nova's compute would report: its own name and UUID (own state_path), QEMU.
            assert list(seen["nodes"].values()) == [host.hostname]
            nodes.update(seen["nodes"])
            assert seen["resources"]["hypervisor_type"] == "QEMU" and seen["resources"]["vcpus"] >= 1
            assert seen["libvirt_version"] >= 11_000_000
            # What Nova's source side builds for a migration to this compute.
            assert seen["live_migration_uri"] == host.tcp_uri
            assert seen["migrate_uri"] == host.migrate_uri
    assert len(nodes) == 2  # two compute nodes, not one node seen twice


@pytest.mark.slow
@pytest.mark.qemu
def test_novas_libvirt_code_live_migrates_between_the_computes(
    tmp_path: Path, tiny_image: GuestImage
) -> None:
    """Nova's own flags (from the compute's ``[libvirt]`` options), URIs (from the destination's
    inbound address) and ``Guest.migrate``, with the source compute's configuration; then libvirt's
    completed-job figures through the DevStack probe's code."""
    pytest.importorskip("libvirt", reason="libvirt-python (the embedded extra) is not installed")
    why = libvirt_supported()
    if why is not None:
        pytest.skip(why)
    layout = _layout(tmp_path)
    name = "instance-00000002"
    with LibvirtHostPair() as pair:
        src, dst = pair.hosts
        paths = libvirt_mode.write_compute_confs(layout, pair.hosts)
        address = pair.network.new_address()
        kernel_args = {"ip": f"{address.ip}/{address.prefix}", "gw": address.gateway}
        tap = src.start_guest(
            name,
            kernel=tiny_image.kernel,
            initrd=tiny_image.initrd,
            cmdline=tiny_image.command_line(**kernel_args),
            address=address,
        )
        dst.plug_tap(tap)
        argv = [sys.executable, "-m", "novamig.embedded.service.libvirt_mode", "migrate"]
        argv += [str(paths[src.hostname]), dst.address, name]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen = json.loads(proc.stdout.strip().splitlines()[-1])
        # LIVE | PEER2PEER | UNDEFINE_SOURCE | PERSIST_DEST: Nova's flags with the default options.
        assert seen["flags"] == 1 | 2 | 16 | 8
        # Nova's monitor would have seen the job running (libvirt's "unbounded" job type).
        libvirt = pytest.importorskip("libvirt")
        assert str(libvirt.VIR_DOMAIN_JOB_UNBOUNDED) in seen["job_types_polled"]
        assert name in dst.virsh("list", "--name").split()
        assert name not in src.virsh("list", "--all", "--name").split()
        probe = LibvirtJobFigures.in_host_namespaces(
            {h.hostname: h for h in pair.hosts}, lambda server_id: DomainPlace(name, dst.hostname, 7)
        )
        record = MigrationRecord(
            server="s", source_host=src.hostname, dest_host=dst.hostname, status="completed", requested_at=0.0
        )
        figure = probe.figure(record, "s", 7)
        assert figure.reason is None, figure.reason
        assert figure.downtime_ms is not None and figure.details is not None
        assert 1 <= figure.downtime_ms <= figure.details["time_elapsed_ms"] <= seen["wall_s"] * 1000
        print(
            f"\nNova's Guest.migrate: {seen['wall_s']:.2f} s; libvirt time elapsed "
            f"{figure.details['time_elapsed_ms']} ms, downtime {figure.downtime_ms:.0f} ms"
        )
