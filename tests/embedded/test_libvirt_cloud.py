"""The embedded cloud's libvirt mode (``novamig cloud up --driver libvirt``): the Nova
configuration it writes and the libvirt hosts' files (fast); one server booted and live-migrated
through the compute API by Nova's own libvirt driver, with libvirt's job statistics (slow)."""

from __future__ import annotations

import base64
import configparser
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tempest_runner import run_tempest_tests

from novamig.cloud.compute import Compute, MigrationState
from novamig.cloud.errors import CloudError
from novamig.cloud.host_policy import EmbeddedHostPolicy
from novamig.embedded import config
from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import TINY_IMAGE_ID, CloudLayout, Ports, Secrets
from novamig.embedded.tempest_conf import write_tempest_conf
from novamig.hypervisor.libvirt_hosts import LibvirtHost, hosts_file, libvirt_supported, qemu_conf
from novamig.hypervisor.libvirt_leftovers import find_leftovers
from novamig.measure.collector_address import DEFAULT_PORT, CollectorAddresses
from novamig.measure.contract import CaseClock, Unavailable
from novamig.measure.guest_integrity import GuestAnswerError, ask_guest
from novamig.measure.heartbeat_udp import UdpHeartbeatProbe
from novamig.measure.libvirt_jobstats import DomainPlace, LibvirtJobFigures, locate_with
from novamig.measure.registry import CloudCapabilities, probes_for
from novamig.measure.sla import SlaSpec
from novamig.results import MigrationRecord
from novamig.scenario.models import Measure, Workload
from novamig.workload.userdata import INTEGRITY_MIB, GuestSetup, render_user_data


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
    # No metadata service: a disk image's cloud-init reads its user-data from the config drive.
    assert default["force_config_drive"] == "true"
    assert (libvirt["virt_type"], libvirt["images_type"]) == ("qemu", "qcow2")
    assert (libvirt["cpu_mode"], libvirt["cpu_models"]) == ("custom", "qemu64")
    assert libvirt["live_migration_scheme"] == "tcp"
    # The policy options are each compute's host policy, applied at each migration.
    assert not [
        name for name in libvirt if name.startswith("live_migration_") and name != "live_migration_scheme"
    ]
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


def test_the_registry_reads_libvirts_figures_in_the_libvirt_modes_hosts(tmp_path: Path) -> None:
    """On the libvirt-mode cloud the hypervisor figure is libvirt's (local transport), not the
    QEMU driver's files; the guest figure comes over UDP only, and without a collector the
    reason says what to set."""
    host = LibvirtHost("compute1", "10.88.0.1", "novamig-0-00000a", tmp_path, libvirtd_pid=1)
    caps = CloudCapabilities(
        tmp_path,
        embedded_workdir=tmp_path,
        guest_netns="novamig-0-00000c",
        libvirt_hosts={"compute1": host},
        locate_domain=lambda server_id: DomainPlace("instance-00000001", "compute1", 1),
    )
    probes = {p.name: p for p in probes_for(_Plan(), caps)}
    assert isinstance(probes["hypervisor"], LibvirtJobFigures)
    assert isinstance(probes["guest"], Unavailable)
    assert "192.168.1.1:PORT" in probes["guest"].reason
    with_collector = _Plan(measure=Measure(heartbeat_collector="192.168.1.1:7070"))
    probes = {p.name: p for p in probes_for(with_collector, caps)}
    assert isinstance(probes["guest"], UdpHeartbeatProbe)


@dataclass(frozen=True)
class _Plan:
    case_id: str = "c"
    probes: tuple[str, ...] = ("guest", "hypervisor")
    workload: str = "idle"
    workload_spec: Workload = field(default_factory=Workload)
    measure: Measure = field(default_factory=Measure)
    scenario_dir: Path | None = None
    sla: SlaSpec = field(default_factory=SlaSpec)


def _ask_integrity(address: str, netns: str | None, timeout_s: float) -> dict[str, Any]:
    """The agent's ``GET /integrity?check=1`` answer, asked until the guest's HTTP server
    answers (it starts a few seconds after ACTIVE: the guest is still booting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ask_guest(address, netns=netns, timeout_s=5.0)
        except GuestAnswerError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.3)


def _wait_migration(compute: Compute, server_id: str, timeout_s: float) -> MigrationState:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        migrations = compute.live_migrations_of(server_id)
        if migrations and migrations[-1].final:
            return migrations[-1]
        time.sleep(0.3)
    raise AssertionError(f"no final live migration of {server_id} within {timeout_s} s")


@pytest.mark.slow
@pytest.mark.qemu
def test_a_server_boots_and_live_migrates_through_novas_libvirt_driver(tmp_path: Path) -> None:
    """``--driver libvirt``: one tiny server through the compute API, then a live migration with
    no host given — Nova's scheduler, conductor, its libvirt driver's migration and monitor —
    and libvirt's completed-job statistics read by the DevStack probe's local transport."""
    pytest.importorskip("libvirt", reason="libvirt-python (the embedded extra) is not installed")
    why = libvirt_supported()
    if why is not None:
        pytest.skip(why)
    with EmbeddedCloud(tmp_path / "cloud", driver="libvirt") as cloud:
        hosts = cloud.libvirt_hosts
        assert hosts is not None and sorted(hosts) == ["compute1", "compute2"]
        run_dir = hosts["compute1"].directory.parent
        conn = cloud.connection()
        hypervisors = {h.name: h for h in conn.compute.hypervisors(details=True)}
        assert sorted(hypervisors) == ["compute1", "compute2"]
        assert {h.hypervisor_type for h in hypervisors.values()} == {"QEMU"}
        assert len({h.id for h in hypervisors.values()}) == 2  # two nodes, each its own UUID
        net = conn.network.find_network("novamig-net")
        started = time.monotonic()
        # The user-data a scenario with memory integrity and a UDP heartbeat gives its servers:
        # with no virtio-serial port in Nova's domain, the agent must still keep the region.
        setup = GuestSetup("lv", memory_integrity=True, heartbeat_udp="192.168.1.1:7070")
        user_data = base64.b64encode(render_user_data(setup).encode()).decode()
        server = conn.compute.create_server(
            name="lv", flavor_id="1", image_id=TINY_IMAGE_ID, networks=[{"uuid": net.id}], user_data=user_data
        )
        server = conn.compute.wait_for_server(server, wait=180, interval=0.5)
        boot_s = time.monotonic() - started
        source = server.compute_host
        address = next(a["addr"] for nets in server.addresses.values() for a in nets if a["version"] == 4)
        before = _ask_integrity(address, cloud.guest_netns, 60.0)
        assert before["region"] is True and before["ok"] is True, before
        assert before["pages"] == INTEGRITY_MIB * 256, before
        # The port's address came with the port's MAC to the cloud's DHCP server (the full
        # guest's Glance form asks for it; this tiny guest has it on its kernel command line).
        port = next(conn.network.ports(device_id=server.id))
        leases = (cloud.workdir / "dhcp" / "udhcpd.conf").read_text().splitlines()
        assert f"static_lease {port.mac_address} {address}" in leases
        # With no collector named, a case's heartbeat goes to the source of the route to the
        # guests' subnet inside the guests' namespace: the gateway, on the default port.
        collectors = CollectorAddresses(conn, [{"uuid": net.id}], cloud.guest_netns)
        assert collectors.for_case(None) == f"192.168.1.1:{DEFAULT_PORT}"
        name = server.instance_name
        # Nova's domain, on the tap Nova's VIF driver plugged in that compute's namespace.
        xml = hosts[source].virsh("dumpxml", name)
        assert "<nova:instance" in xml and "type='ethernet'" in xml and "managed='no'" in xml
        compute = Compute(conn)
        # The host policy takes DevStack's path: the source's nova-cpu.conf edited by the same
        # commands (inside its libvirt host's namespaces), then the compute reloaded; post-copy
        # permitted there → Nova's flags ask libvirt for QEMU's postcopy-ram (its libvirtd logs it).
        policy = EmbeddedHostPolicy(cloud)
        assert policy.conf_files is not None  # the libvirt mode's path, not policies/<host>.json
        conf_file = cloud.compute_conf(source)
        original_conf = conf_file.read_text()
        policy.apply(source, {"live_migration_permit_post_copy": True})
        assert "live_migration_permit_post_copy = True" in conf_file.read_text()
        assert cloud.get_host_policy(source)["live_migration_permit_post_copy"] is True  # reloaded
        probe = LibvirtJobFigures.in_host_namespaces(hosts, locate_with(compute))
        clock = CaseClock()
        probe.start([], clock)
        try:
            started = time.monotonic()
            compute.live_migrate(server.id, None, "auto")
            migration = _wait_migration(compute, server.id, 180)
            migrate_s = time.monotonic() - started
            assert migration.status == "completed", migration
            server = conn.compute.get_server(server.id)
            assert server.compute_host != source and server.compute_host == migration.dest_host
            dest = server.compute_host
            libvirtd_log = (hosts[source].directory / "log" / "libvirtd.log").read_text(errors="replace")
            assert "Enabling migration capability 'postcopy-ram'" in libvirtd_log
            assert name in hosts[dest].virsh("list", "--name").split()
            assert name not in hosts[source].virsh("list", "--all", "--name").split()
            # The region the destination's guest checks is the one the source's guest kept.
            after = _ask_integrity(address, cloud.guest_netns, 30.0)
            assert after["ok"] is True and after["pages"] == before["pages"], after
            assert after["uptime_ms"] > before["uptime_ms"], (before, after)  # the same agent, still running
            record = MigrationRecord(
                server=server.id, source_host=source, dest_host=dest, status="completed", requested_at=0.0
            )
            figure = probe.figure(record, server.id, migration.id)
            assert figure.reason is None, figure.reason
            assert figure.downtime_ms is not None and figure.details is not None
            assert figure.details["operation"] == "Incoming migration"
            assert 1 <= figure.downtime_ms <= figure.details["time_elapsed_ms"] <= migrate_s * 1000
            print(
                f"\nlibvirt mode: server ACTIVE in {boot_s:.1f} s; live migration {source} → {dest} "
                f"completed in {migrate_s:.1f} s (API request to 'completed'); libvirt: "
                f"{figure.details['time_elapsed_ms']} ms job time, {figure.downtime_ms:.0f} ms downtime"
            )
            policy.restore(source)
            assert conf_file.read_text() == original_conf
            assert cloud.get_host_policy(source)["live_migration_permit_post_copy"] is False
            _post_copy_back_then_abort(cloud, compute, probe, clock, server.id, dest)
        finally:
            probe.stop()
        conn.compute.delete_server(server.id)
    # The cloud's stop removed the daemons' run directory and namespaces.
    assert not run_dir.exists()
    assert not any(Path("/run/netns", h.netns).exists() for h in hosts.values())


def _force_complete_until_final(compute: Compute, server_id: str, timeout_s: float) -> MigrationState:
    """Force-complete (the switch to post-copy) the server's running migration, again until it ends:
    libvirt refuses the switch until QEMU's migration has started, and Nova only logs that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        migration = compute.live_migrations_of(server_id)[-1]
        if migration.final:
            return migration
        if migration.status == "running":
            with contextlib.suppress(CloudError):
                compute.force_complete(server_id, migration.id)
        time.sleep(0.3)
    raise AssertionError(f"the live migration of {server_id} did not end within {timeout_s} s")


def _slow_policy_then(
    cloud: EmbeddedCloud, compute: Compute, server_id: str, host: str, options: dict[str, Any]
) -> tuple[EmbeddedHostPolicy, int]:
    """`options` (1 MiB/s: the migration keeps running) on `host` through its nova-cpu.conf, and a
    live migration of the server started from there; the policy and the migration's id."""
    policy = EmbeddedHostPolicy(cloud)
    policy.apply(host, {"live_migration_bandwidth": 1, **options})
    compute.live_migrate(server_id, None, "auto")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        migrations = compute.live_migrations_of(server_id)
        if migrations and migrations[-1].status == "running":
            return policy, migrations[-1].id
        time.sleep(0.2)
    raise AssertionError(f"the live migration of {server_id} did not start running")


def _post_copy_back_then_abort(
    cloud: EmbeddedCloud,
    compute: Compute,
    probe: LibvirtJobFigures,
    clock: CaseClock,
    server_id: str,
    host: str,
) -> None:
    """Back from `host` with a switch to post-copy: libvirt's figure comes from the source's
    job-completed event (the destination keeps none after post-copy). Then a migration aborted while
    it runs: the server stays ACTIVE where it was, its domain running there."""
    hosts = cloud.libvirt_hosts
    assert hosts is not None
    requested = clock.now()
    policy, _ = _slow_policy_then(cloud, compute, server_id, host, {"live_migration_permit_post_copy": True})
    migration = _force_complete_until_final(compute, server_id, 120)
    policy.restore(host)
    assert migration.status == "completed", migration
    back = str(migration.dest_host)
    record = MigrationRecord(
        server=server_id, source_host=host, dest_host=back, status="completed", requested_at=requested
    )
    probe.capture(record, server_id, migration.id)
    figure = probe.figure(record, server_id, migration.id)
    assert figure.reason is None, figure.reason
    assert figure.details is not None and figure.details["format"] == "job-completed event"
    assert figure.details["operation"] == "Outgoing migration" and figure.details["libvirt_host"] == host
    assert figure.details["postcopy_requests"] >= 1 and figure.downtime_ms is not None
    print(f"after post-copy: libvirt {figure.downtime_ms:.0f} ms downtime (source's job-completed event)")

    policy, migration_id = _slow_policy_then(cloud, compute, server_id, back, {})
    compute.abort(server_id, migration_id, "running")
    migration = _wait_migration(compute, server_id, 60)
    policy.restore(back)
    assert migration.status == "cancelled", migration
    deadline = time.monotonic() + 30
    server = compute.server(server_id)
    while server.status != "ACTIVE" and time.monotonic() < deadline:  # Nova's rollback finishing
        time.sleep(0.3)
        server = compute.server(server_id)
    assert (server.status, server.host) == ("ACTIVE", back), server
    name = cloud.connection().compute.get_server(server_id).instance_name
    assert name in hosts[back].virsh("list", "--name").split()


@pytest.mark.slow
@pytest.mark.qemu
def test_a_killed_libvirt_mode_cloud_leaves_nothing_after_stop(tmp_path: Path) -> None:
    """SIGKILL of the cloud process: its daemons die with it, but the guest's QEMU (daemonised by
    libvirt), the namespaces and the run directory remain until ``EmbeddedCloud.stop`` removes
    them."""
    pytest.importorskip("libvirt", reason="libvirt-python (the embedded extra) is not installed")
    why = libvirt_supported()
    if why is not None:
        pytest.skip(why)
    cloud = EmbeddedCloud(tmp_path / "cloud", driver="libvirt")
    try:
        cloud.start()
        hosts = cloud.libvirt_hosts
        assert hosts is not None
        conn = cloud.connection()
        net = conn.network.find_network("novamig-net")
        server = conn.compute.create_server(
            name="lv", flavor_id="1", image_id=TINY_IMAGE_ID, networks=[{"uuid": net.id}]
        )
        server = conn.compute.wait_for_server(server, wait=180, interval=0.5)
        guest_pids = hosts[server.compute_host].guest_pids()
        assert len(guest_pids) == 1
        pid = int(cloud.ready_info["pid"]) if cloud.ready_info else 0
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not find_leftovers() and time.monotonic() < deadline:  # until the process is gone
            time.sleep(0.1)
        assert [left.creator_pid for left in find_leftovers()].count(pid) == 1
    finally:
        cloud.stop()
    assert pid not in [left.creator_pid for left in find_leftovers()]
    assert not Path(f"/proc/{guest_pids[0]}").exists()
    assert not any(Path("/run/netns", h.netns).exists() for h in hosts.values())


TEMPEST_MODULES = (
    "tempest.api.compute.admin.test_live_migration",
    "tempest.api.compute.admin.test_live_migration_negative",
)
# Why Tempest skips its live-migration tests on this mode; any other skip fails the test.
TEMPEST_SKIPS = (
    "Block Live migration not available",  # shared instance storage: Nova refuses block migration
    "Volume-backed live migration not available",  # no Cinder
    "launchpad.net/bugs/2024160",  # the trunk test, marked unstable by Tempest itself
    "Serial console not supported",
    "barbican-tempest-plugin is not installed",  # vTPM needs Barbican
)


@pytest.mark.slow
@pytest.mark.qemu
def test_tempests_live_migration_tests_on_the_libvirt_mode(tmp_path: Path) -> None:
    """The regex DevStack's live-migration job runs, with the tempest.conf novamig writes for this
    mode: nothing fails; what is skipped is skipped for the reasons above (Tempest's only live
    migrations without volumes are block migrations, which shared storage rules out)."""
    pytest.importorskip("libvirt", reason="libvirt-python (the embedded extra) is not installed")
    pytest.importorskip("tempest", reason="Tempest is not installed")
    why = libvirt_supported()
    if why is not None:
        pytest.skip(why)
    with EmbeddedCloud(tmp_path / "cloud", driver="libvirt") as cloud:
        conf = write_tempest_conf(cloud, tmp_path / "tempest")
        result = run_tempest_tests(conf, TEMPEST_MODULES, timeout_s=1200)
    failures = "\n\n".join(f"{name}\n{tb}" for name, tb in result["failures"])
    assert not result["failures"], failures
    unexpected = [(n, r) for n, r in result["skipped"] if not any(a in r for a in TEMPEST_SKIPS)]
    assert not unexpected, unexpected
    assert result["run"] - len(result["skipped"]) >= 1, result  # the negative tests
