"""Guest network: namespace + bridge + one tap per QEMU; the guest keeps MAC and IP across migration."""

from __future__ import annotations

import http.client
import socket
import time

import pytest

from novamig.guest.image import GuestImage
from novamig.hypervisor.errors import NetworkError
from novamig.hypervisor.machine import GuestSpec
from novamig.hypervisor.migration import migrate
from novamig.hypervisor.netns import GuestNetwork, UserModeNetwork, list_novamig_netns, netns_supported
from novamig.hypervisor.policy import QemuMigrationSettings

from .conftest import MachineFactory

pytestmark = pytest.mark.qemu


def _echo(sock: socket.socket, ip: str, payload: bytes) -> bytes:
    sock.settimeout(2.0)
    for _ in range(5):  # UDP: the first datagram can be lost while ARP resolves
        sock.sendto(payload, (ip, 7))
        try:
            data, _ = sock.recvfrom(1500)
            return data
        except TimeoutError:
            continue
    raise AssertionError(f"no UDP echo from {ip}")


@pytest.mark.skipif(netns_supported() is not None, reason=str(netns_supported()))
def test_guest_keeps_its_address_across_migration(machines: MachineFactory, tiny_image: GuestImage) -> None:
    with GuestNetwork() as net:
        assert net.name in list_novamig_netns()
        addr = net.new_address()
        spec = GuestSpec(
            name="net",
            image=tiny_image,
            memory_mib=128,
            kernel_args=addr.kernel_args(),
            network=net.attach(addr),
        )
        src = machines(spec=spec)
        assert src.agent.ready is not None and src.agent.ready.ip == addr.ip
        with net.socket() as sock:
            assert _echo(sock, addr.ip, b"before") == b"before"
            dst = machines(spec=src.spec.for_destination(network=net.attach(addr)))
            result = migrate(src, dst, QemuMigrationSettings(timeout_s=60))
            assert result.status == "completed", result.error
            assert _echo(sock, addr.ip, b"after") == b"after"
        assert dst.spec.network is not None and src.spec.network is not None
        assert dst.spec.network.mac == src.spec.network.mac
        assert dst.spec.network.tap != src.spec.network.tap
        name = net.name
    assert name not in list_novamig_netns(), "namespace must be deleted on exit"


@pytest.mark.skipif(netns_supported() is not None, reason=str(netns_supported()))
def test_the_bridge_keeps_its_mac_when_taps_come_and_go() -> None:
    """Guests cache the gateway's MAC; one that only sends (UDP heartbeats to a collector on the
    bridge) would be cut off after a migration if the bridge took the departing tap's address."""
    import json
    import subprocess

    def bridge_mac(net: GuestNetwork) -> str:
        out = subprocess.run(
            ["ip", "-n", net.name, "-j", "link", "show", net.bridge],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip
        return str(json.loads(out)[0]["address"])

    with GuestNetwork() as net:
        assert bridge_mac(net) == net.bridge_mac
        first, second = net.add_tap(), net.add_tap()
        assert bridge_mac(net) == net.bridge_mac
        net.remove_tap(first)
        assert bridge_mac(net) == net.bridge_mac
        net.remove_tap(second)
        assert bridge_mac(net) == net.bridge_mac


@pytest.mark.skipif(netns_supported() is not None, reason=str(netns_supported()))
def test_namespace_is_removed_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError), GuestNetwork() as net:
        name = net.name
        net.add_tap()
        raise RuntimeError("boom")
    assert name not in list_novamig_netns()


def test_netns_refused_without_root_gives_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(NetworkError, match="not root"):
        GuestNetwork()


def _http_get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def test_user_mode_forward_moves_to_the_destination(machines: MachineFactory, tiny_image: GuestImage) -> None:
    user = UserModeNetwork(guest_port=80)
    spec = GuestSpec(
        name="usernet",
        image=tiny_image,
        memory_mib=128,
        kernel_args=user.kernel_args(),
        network=user.source_attachment(),
    )
    src = machines(spec=spec)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert _http_get(user.host_port) == 200
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    dst = machines(spec=src.spec.for_destination(network=user.destination_attachment()))
    result = migrate(src, dst, QemuMigrationSettings(timeout_s=60))
    assert result.status == "completed", result.error
    user.move_forward(src, dst)
    assert _http_get(user.host_port) == 200
