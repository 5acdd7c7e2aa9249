"""A server of the full image (``novamig-full``): boots, live-migrates, and its web application
answers at the same address on the other host. Through openstacksdk only, like a user's code."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import openstack.exceptions
import pytest

from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.layout import FULL_IMAGE_NAME
from novamig.guest.full import WEB_PORT
from novamig.hypervisor.netns import socket_in

from .conftest import BOOT_TIMEOUT_S, wait_for_migration_end, wait_for_status

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def _http_get(netns: str, address: str, path: str) -> tuple[int, bytes]:
    """One HTTP/1.0 GET to the guest's web application, from inside the guest network namespace."""
    sock = socket_in(netns, kind=socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect((address, WEB_PORT))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _wait_web(netns: str, address: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = _http_get(netns, address, "/health")
            if status == 200:
                health: dict[str, Any] = json.loads(body)
                return health
            last = status
        except (OSError, ValueError, IndexError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"web app at {address}:{WEB_PORT} not answering after {timeout} s: {last!r}")


def test_full_image_server_live_migrates_and_its_web_app_answers(
    embedded_cloud: EmbeddedCloud, embedded_conn: Any
) -> None:
    conn = embedded_conn
    image = conn.image.find_image(FULL_IMAGE_NAME)
    if image is None:
        pytest.skip(
            "the full image is not in the image cache (novamig image build full; tools/test.sh builds it)"
        )
    netns = embedded_cloud.guest_netns
    if netns is None:
        pytest.skip("guest network namespace needs root; guests have user-mode networking only")

    # Too small a flavor for the full guest: refused by the API (the image's min_ram)
    nano = conn.compute.find_flavor("m1.nano", ignore_missing=False)
    with pytest.raises(openstack.exceptions.BadRequestException):
        conn.compute.create_server(
            name="novamig-full-nano", image_id=image.id, flavor_id=nano.id, networks="auto"
        )

    flavor = conn.compute.find_flavor("m1.micro", ignore_missing=False)  # 192 MiB
    server = conn.compute.create_server(
        name="novamig-full", image_id=image.id, flavor_id=flavor.id, networks="auto"
    )
    try:
        server = conn.compute.wait_for_server(server, wait=BOOT_TIMEOUT_S)
        source = server.compute_host
        address = next(a["addr"] for net in server.addresses.values() for a in net)
        _wait_web(netns, address, timeout=120)  # migrate only once the guest is fully up

        dest = "compute2" if source == "compute1" else "compute1"
        conn.compute.live_migrate_server(server, host=dest, block_migration="auto")
        record = wait_for_migration_end(conn, server.id)
        assert record.status == "completed", record
        moved = wait_for_status(conn, server.id, "ACTIVE")
        assert moved.compute_host == dest

        health = _wait_web(netns, address, timeout=30)
        assert health, health
        status, body = _http_get(netns, address, "/")
        assert status == 200, body[:200]
    finally:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, wait=60)
