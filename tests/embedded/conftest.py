"""Fixtures of the embedded-cloud tests: servers booted through the API, and helpers (the session
cloud itself, `embedded_cloud`/`embedded_conn`, is in tests/conftest.py: other folders use it too)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import TINY_IMAGE_NAME

BOOT_TIMEOUT_S = 240


@pytest.fixture
def boot_server(embedded_conn: Any) -> Iterator[Callable[..., Any]]:
    """Boot servers from the tiny image through the API; deletes them (and waits) afterwards."""
    created: list[Any] = []

    def boot(name: str = "novamig-test", flavor: str = "m1.tiny", **kwargs: Any) -> Any:
        image = embedded_conn.image.find_image(TINY_IMAGE_NAME, ignore_missing=False)
        flavor_obj = embedded_conn.compute.find_flavor(flavor, ignore_missing=False)
        server = embedded_conn.compute.create_server(
            name=name, image_id=image.id, flavor_id=flavor_obj.id, networks="auto", **kwargs
        )
        created.append(server)
        return embedded_conn.compute.wait_for_server(server, wait=BOOT_TIMEOUT_S)

    yield boot
    for server in created:
        embedded_conn.compute.delete_server(server, ignore_missing=True)
    for server in created:
        embedded_conn.compute.wait_for_delete(server, wait=60)


def wait_for_migration_end(conn: Any, server_id: str, timeout: float = 180) -> Any:
    """The final /os-migrations record of the server's newest live migration."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = sorted(conn.compute.migrations(instance_uuid=server_id), key=lambda m: m.id)
        if records and records[-1].status in ("completed", "error", "failed", "cancelled"):
            return records[-1]
        time.sleep(0.25)
    raise AssertionError(f"migration of {server_id} did not end within {timeout} s")


def wait_for_status(conn: Any, server_id: str, status: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = conn.compute.get_server(server_id)
        if server.status == status and not server.task_state:
            return server
        time.sleep(0.25)
    raise AssertionError(f"server {server_id} not {status} within {timeout} s")


@pytest.fixture
def default_policies(embedded_cloud: EmbeddedCloud) -> Iterator[None]:
    """Restore every host's default migration policy after a test that changes one."""
    yield
    for host in embedded_cloud.hosts:
        embedded_cloud.set_host_policy(host, {})
