"""Servers are real QEMU guests: boot, address, console, lifecycle, live migration (real QMP)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from novamig import process_state
from novamig.embedded import processes
from novamig.embedded.controller import EmbeddedCloud
from novamig.hypervisor.netns import socket_in

from .conftest import wait_for_migration_end, wait_for_status

pytestmark = pytest.mark.qemu


def _guest_pid(cloud: EmbeddedCloud, host: str, server_id: str) -> int | None:
    pid_file = cloud.workdir / "guests" / host / f"{server_id}.pid"
    if not pid_file.exists():
        return None
    return int(pid_file.read_text())


def test_boot_reaches_active_on_a_running_qemu_with_its_port_address(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any]
) -> None:
    server = boot_server(name="novamig-boot", flavor="m1.small")
    assert server.status == "ACTIVE"
    assert server.compute_host in ("compute1", "compute2")
    addresses = [a["addr"] for net in server.addresses.values() for a in net]
    assert len(addresses) == 1

    pid = _guest_pid(embedded_cloud, server.compute_host, server.id)
    assert pid is not None and process_state.alive(pid)
    cmdline = processes.cmdline(pid)
    assert "qemu-system" in cmdline
    assert "-m 512" in cmdline  # sized by the flavor (m1.small: 512 MiB)

    console = embedded_conn.compute.get_server_console_output(server)["output"]
    assert f"ip={addresses[0]}" in console  # the guest agent runs with the port's address
    ports = list(embedded_conn.network.ports(device_id=server.id))
    assert [p.fixed_ips[0]["ip_address"] for p in ports] == addresses
    assert ports[0].binding_host_id == server.compute_host

    embedded_conn.compute.delete_server(server)
    embedded_conn.compute.wait_for_delete(server, wait=60)
    deadline = time.monotonic() + 10
    while process_state.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_state.alive(pid)


def test_two_servers_get_distinct_addresses(boot_server: Callable[..., Any]) -> None:
    first, second = boot_server(name="novamig-a"), boot_server(name="novamig-b")
    addr = [next(a["addr"] for net in s.addresses.values() for a in net) for s in (first, second)]
    assert addr[0] != addr[1]


def _echo(netns: str, address: str, count: int = 3) -> int:
    """UDP echo (the agent's port 7) from inside the guest network namespace; replies received."""
    sock = socket_in(netns)
    sock.settimeout(1.0)
    replies = 0
    try:
        for i in range(count):
            sock.sendto(f"novamig-{i}".encode(), (address, 7))
            try:
                data, _ = sock.recvfrom(256)
            except OSError:
                continue
            replies += data == f"novamig-{i}".encode()
    finally:
        sock.close()
    return replies


def test_pause_and_unpause(embedded_conn: Any, boot_server: Callable[..., Any]) -> None:
    server = boot_server(name="novamig-pause")
    embedded_conn.compute.pause_server(server)
    assert wait_for_status(embedded_conn, server.id, "PAUSED").power_state == 3
    embedded_conn.compute.unpause_server(server)
    assert wait_for_status(embedded_conn, server.id, "ACTIVE").power_state == 1


def test_stop_and_start(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any]
) -> None:
    server = boot_server(name="novamig-stop")
    pid = _guest_pid(embedded_cloud, server.compute_host, server.id)
    embedded_conn.compute.stop_server(server)
    assert wait_for_status(embedded_conn, server.id, "SHUTOFF").power_state == 4
    assert pid is not None and not process_state.alive(pid)
    embedded_conn.compute.start_server(server)
    started = wait_for_status(embedded_conn, server.id, "ACTIVE", timeout=180)
    new_pid = _guest_pid(embedded_cloud, started.compute_host, server.id)
    assert new_pid is not None and new_pid != pid and process_state.alive(new_pid)


@pytest.mark.slow
def test_live_migration_explicit_host_moves_the_guest(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any]
) -> None:
    server = boot_server(name="novamig-lm")
    source = server.compute_host
    dest = "compute2" if source == "compute1" else "compute1"
    old_pid = _guest_pid(embedded_cloud, source, server.id)

    embedded_conn.compute.live_migrate_server(server, host=dest, block_migration="auto")
    record = wait_for_migration_end(embedded_conn, server.id)
    assert record.status == "completed"
    moved = wait_for_status(embedded_conn, server.id, "ACTIVE")
    assert moved.compute_host == dest

    new_pid = _guest_pid(embedded_cloud, dest, server.id)
    assert new_pid is not None and process_state.alive(new_pid)
    assert old_pid is not None and not process_state.alive(old_pid)
    console = embedded_conn.compute.get_server_console_output(moved)["output"]
    assert "novamig-agent" in console

    figures = json.loads((embedded_cloud.workdir / "migrations" / f"{record.uuid}.json").read_text())
    assert figures["status"] == "completed"
    assert figures["qemu_downtime_ms"] is not None
    assert figures["heartbeat"]["destination_beats"] > 0  # the guest runs on, on the destination
    assert figures["heartbeat"]["switchover_gap_ms"] > 0
    assert figures["heartbeat"]["hz"] == 1000  # no user-data: the agent's default rate
    assert "integrity" not in figures  # no integrity region in the guest: not checked
    # Nova's default ramp (500 ms in 10 steps, 75 s/GiB × 2 GiB): the first step, 50 ms, at the start
    steps = [e for e in figures["events"] if e["what"] == "downtime-step"]
    assert steps[0]["downtime_limit_ms"] == 50 and steps[0]["t"] == 0.0
    assert figures["downtime_steps"][1] == [150, 95]


@pytest.mark.slow
def test_guest_keeps_its_address_across_a_live_migration(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any]
) -> None:
    if embedded_cloud.guest_netns is None:
        pytest.skip("guest network namespace needs root; guests have user-mode networking only")
    server = boot_server(name="novamig-net")
    address = next(a["addr"] for net in server.addresses.values() for a in net)
    assert _echo(embedded_cloud.guest_netns, address) == 3
    embedded_conn.compute.live_migrate_server(server, host=None, block_migration="auto")
    assert wait_for_migration_end(embedded_conn, server.id).status == "completed"
    moved = wait_for_status(embedded_conn, server.id, "ACTIVE")
    assert moved.compute_host != server.compute_host
    assert _echo(embedded_cloud.guest_netns, address) == 3


@pytest.mark.slow
def test_live_migration_scheduler_chooses_the_other_host(
    embedded_conn: Any, boot_server: Callable[..., Any]
) -> None:
    server = boot_server(name="novamig-lm-auto")
    source = server.compute_host
    embedded_conn.compute.live_migrate_server(server, host=None, block_migration="auto")
    assert wait_for_migration_end(embedded_conn, server.id).status == "completed"
    assert wait_for_status(embedded_conn, server.id, "ACTIVE").compute_host != source


@pytest.mark.slow
def test_progress_is_visible_and_abort_keeps_the_guest_on_its_source(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any], default_policies: None
) -> None:
    server = boot_server(name="novamig-abort")
    source = server.compute_host
    # 1 MiB/s makes the copy of the guest's non-zero memory take long enough to watch and abort.
    embedded_cloud.set_host_policy(source, {"live_migration_bandwidth": 1})
    embedded_conn.compute.live_migrate_server(server, host=None, block_migration="auto")

    progress = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and progress is None:
        for mig in embedded_conn.compute.server_migrations(server):
            if mig.status == "running" and (mig.memory_processed_bytes or 0) > 0:
                progress = mig
        time.sleep(0.2)
    assert progress is not None, "no memory progress seen on the running migration"
    assert progress.memory_total_bytes >= 256 * 1024 * 1024
    assert progress.memory_remaining_bytes > 0

    embedded_conn.compute.abort_server_migration(progress, server)
    record = wait_for_migration_end(embedded_conn, server.id)
    assert record.status == "cancelled"
    back = wait_for_status(embedded_conn, server.id, "ACTIVE")
    assert back.compute_host == source
    pid = _guest_pid(embedded_cloud, source, server.id)
    assert pid is not None and process_state.alive(pid)


@pytest.mark.slow
def test_force_complete_switches_to_post_copy(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any], default_policies: None
) -> None:
    server = boot_server(name="novamig-postcopy")
    source = server.compute_host
    embedded_cloud.set_host_policy(
        source, {"live_migration_bandwidth": 1, "live_migration_permit_post_copy": True}
    )
    embedded_conn.compute.live_migrate_server(server, host=None, block_migration="auto")
    running = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and running is None:
        running = next(
            (m for m in embedded_conn.compute.server_migrations(server) if m.status == "running"), None
        )
        time.sleep(0.2)
    assert running is not None
    embedded_conn.compute.force_complete_server_migration(running, server)
    record = wait_for_migration_end(embedded_conn, server.id, timeout=300)
    assert record.status == "completed"
    assert wait_for_status(embedded_conn, server.id, "ACTIVE").compute_host != source
    figures = json.loads((embedded_cloud.workdir / "migrations" / f"{record.uuid}.json").read_text())
    assert figures["postcopy"] is True
