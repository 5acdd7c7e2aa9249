"""Several live migrations: per-host concurrency, queueing, and a destination that dies."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from novamig import process_state
from novamig.embedded import processes
from novamig.embedded.controller import EmbeddedCloud

from .conftest import wait_for_migration_end, wait_for_status

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

SLOW = {"live_migration_bandwidth": 1}  # MiB/s: long enough to watch, abort or break


def _statuses(conn: Any, servers: list[Any]) -> dict[str, str]:
    """Newest migration status per server (from /os-migrations, which lists queued ones too)."""
    out = {}
    for server in servers:
        records = sorted(conn.compute.migrations(instance_uuid=server.id), key=lambda m: m.id)
        if records:
            out[server.id] = records[-1].status
    return out


def _wait_statuses(
    conn: Any, servers: list[Any], want: Callable[[list[str]], bool], timeout: float = 90
) -> list[str]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = sorted(_statuses(conn, servers).values())
        if want(seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"migration statuses never matched; last seen {seen}")


def _abort_all(conn: Any, servers: list[Any]) -> None:
    for server in servers:
        for mig in conn.compute.server_migrations(server):
            if mig.status in ("running", "queued", "preparing"):
                conn.compute.abort_server_migration(mig, server, ignore_missing=True)


def test_two_migrations_at_once_from_different_sources(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any], default_policies: None
) -> None:
    first = boot_server(name="novamig-c1", availability_zone="nova:compute1")
    second = boot_server(name="novamig-c2", availability_zone="nova:compute2")
    assert (first.compute_host, second.compute_host) == ("compute1", "compute2")
    for host in ("compute1", "compute2"):
        embedded_cloud.set_host_policy(host, SLOW)
    servers = [first, second]
    try:
        for server in servers:
            embedded_conn.compute.live_migrate_server(server, host=None, block_migration="auto")
        assert _wait_statuses(embedded_conn, servers, lambda s: s == ["running", "running"]) == [
            "running",
            "running",
        ]
    finally:
        _abort_all(embedded_conn, servers)
    for server in servers:
        assert wait_for_migration_end(embedded_conn, server.id).status == "cancelled"


def test_max_concurrent_live_migrations_queues_the_second(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any], default_policies: None
) -> None:
    embedded_cloud.set_host_policy("compute1", {**SLOW, "max_concurrent_live_migrations": 1})
    servers = [boot_server(name=f"novamig-q{i}", availability_zone="nova:compute1") for i in range(2)]
    try:
        for server in servers:
            embedded_conn.compute.live_migrate_server(server, host="compute2", block_migration="auto")
        assert _wait_statuses(embedded_conn, servers, lambda s: s == ["queued", "running"]) == [
            "queued",
            "running",
        ]
    finally:
        _abort_all(embedded_conn, servers)
    for server in servers:
        assert wait_for_migration_end(embedded_conn, server.id).status == "cancelled"
        assert wait_for_status(embedded_conn, server.id, "ACTIVE").compute_host == "compute1"


def test_a_dying_destination_ends_in_error_with_the_guest_on_its_source(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any], default_policies: None
) -> None:
    server = boot_server(name="novamig-fail", availability_zone="nova:compute1")
    embedded_cloud.set_host_policy("compute1", SLOW)
    embedded_conn.compute.live_migrate_server(server, host="compute2", block_migration="auto")
    _wait_statuses(embedded_conn, [server], lambda s: s == ["running"])
    dest_pid_file = embedded_cloud.workdir / "guests" / "compute2" / f"{server.id}.pid"
    dest_pid = int(dest_pid_file.read_text())
    assert "qemu-system" in processes.cmdline(dest_pid)
    os.kill(dest_pid, signal.SIGKILL)  # the destination hypervisor dies mid-migration

    record = wait_for_migration_end(embedded_conn, server.id)
    assert record.status in ("error", "failed")
    back = wait_for_status(embedded_conn, server.id, "ACTIVE")
    assert back.compute_host == "compute1"
    source_pid = int((embedded_cloud.workdir / "guests" / "compute1" / f"{server.id}.pid").read_text())
    assert process_state.alive(source_pid)


def test_completion_timeout_aborts_and_the_guest_stays(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any, boot_server: Callable[..., Any], default_policies: None
) -> None:
    """[libvirt] live_migration_completion_timeout with action abort, as Nova's libvirt driver."""
    server = boot_server(name="novamig-timeout", availability_zone="nova:compute1")
    embedded_cloud.set_host_policy(
        "compute1", {**SLOW, "live_migration_completion_timeout": 2, "live_migration_timeout_action": "abort"}
    )
    embedded_conn.compute.live_migrate_server(server, host="compute2", block_migration="auto")
    record = wait_for_migration_end(embedded_conn, server.id)
    assert record.status == "cancelled"  # nobody asked for an abort: the timeout did it
    assert wait_for_status(embedded_conn, server.id, "ACTIVE").compute_host == "compute1"
