"""The libvirt mode's DHCP server: busybox udhcpd in a project namespace hands each port's address
to that port's MAC only. A client namespace joined to the server's bridge by a veth pair asks
with busybox's udhcpc, as the full guest's init does."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from novamig.embedded.service.dhcp import DhcpServer, udhcpd_conf
from novamig.hypervisor.netns import GuestNetwork, netns_supported

MAC = "fa:16:3e:00:00:05"


def test_the_configuration_has_static_leases_and_no_pool() -> None:
    text = udhcpd_conf(
        interface="nmbr0", server="192.168.1.1", prefix=24, leases={MAC: "192.168.1.10"}, directory=Path("/d")
    )
    lines = text.splitlines()
    # the pool is the server's own address, which udhcpd never offers: unknown MACs get nothing
    assert "start 192.168.1.1" in lines and "end 192.168.1.1" in lines
    assert f"static_lease {MAC} 192.168.1.10" in lines
    assert "option subnet 255.255.255.0" in lines and "option router 192.168.1.1" in lines


@pytest.fixture
def client_ns() -> Iterator[tuple[GuestNetwork, str]]:
    why = netns_supported()
    if why is not None or shutil.which("busybox") is None:
        pytest.skip(why or "busybox is not installed")
    with GuestNetwork("10.77.0.0/24") as net:
        client = f"{net.name}-c"
        subprocess.run(["ip", "netns", "add", client], check=True)
        try:
            for argv in (
                [
                    "-n",
                    net.name,
                    "link",
                    "add",
                    "dh0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "dh1",
                    "netns",
                    client,
                ],
                ["-n", net.name, "link", "set", "dh0", "master", net.bridge],
                ["-n", net.name, "link", "set", "dh0", "up"],
                ["-n", client, "link", "set", "dh1", "address", MAC],
                ["-n", client, "link", "set", "dh1", "up"],
            ):
                subprocess.run(["ip", *argv], check=True)
            yield net, client
        finally:
            subprocess.run(["ip", "netns", "del", client], check=False)


def _ask(client: str, tries: int) -> subprocess.CompletedProcess[str]:
    argv = ["busybox", "udhcpc", "-i", "dh1", "-q", "-n", "-t", str(tries), "-T", "1", "-s", "/bin/true"]
    return subprocess.run(
        ["ip", "netns", "exec", client, *argv], check=False, capture_output=True, text=True, timeout=30
    )


def test_a_port_s_mac_gets_its_address_and_no_other_mac_gets_any(
    client_ns: tuple[GuestNetwork, str], tmp_path: Path
) -> None:
    net, client = client_ns
    server = DhcpServer(net.name, net.bridge, net.host_ip, net.subnet.prefixlen, tmp_path)
    server.start()
    try:
        unknown = _ask(client, tries=1)
        assert unknown.returncode != 0 and "no lease" in unknown.stderr, unknown.stderr
        server.add(MAC.upper(), "10.77.0.42")  # a port was made: the server restarts with it
        known = _ask(client, tries=5)
        assert known.returncode == 0, known.stderr
        assert "lease of 10.77.0.42 obtained from 10.77.0.1" in known.stderr
        alive_before_stop = server.running
    finally:
        server.stop()
    assert alive_before_stop and not server.running
    log = (tmp_path / "udhcpd.log").read_text()
    assert "OFFER abandoned" in log and "sending ACK to 10.77.0.42" in log
