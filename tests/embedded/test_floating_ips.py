"""Floating IPs on the embedded cloud, for real: the external network, NAT in the guest namespace.

A scenario with `fleet.floating_ip_network: auto` runs with the network probe aiming at the floating
address (results.json says which address it probed) and the guests' UDP heartbeats arriving from
it, and afterwards no floating IP, no NAT rule
and nothing tagged is left. A floating IP a killed run left behind is found and removed by
`novamig cleanup`. The external network and the NAT exist only when the cloud has its guest
namespace (root) and `nft`: elsewhere these tests are skipped, saying why.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import pytest

from novamig.cloud.compute import Compute
from novamig.cloud.connection import connect
from novamig.cloud.resources import Resources, find_floating_network
from novamig.cloud.sweep import delete_found, find_tagged
from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.service.floating_ips import FLOATING_CIDR, NFT_TABLE, nft_available
from novamig.results import load_results
from novamig.runner.commands import cmd_cleanup, cmd_run

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

SCENARIO = """\
name: floating
fleet: {count: 1, flavor: {vcpus: 1, ram_mb: 256, disk_gb: 1}, image: novamig-tiny,
        floating_ip_network: auto}
measure: {probes: [guest, network, hypervisor], noise_floor_s: 1, network_probe_hz: 200,
          heartbeat_hz: 200, heartbeat_collector: '10.78.0.1:47011'}
migration: {count: 1, interval_s: 0}
sla: {downtime_ms: {probe: network, max: 10000}}
"""


@pytest.fixture
def guest_netns(embedded_cloud: EmbeddedCloud) -> str:
    why = nft_available()
    if why is not None:
        pytest.skip(why)
    if embedded_cloud.guest_netns is None:
        pytest.skip("the embedded cloud has no guest namespace (not root): no floating IPs")
    return embedded_cloud.guest_netns


def nat_rules(netns: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "ruleset"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def test_a_run_probes_through_the_floating_address_and_leaves_nothing(
    tmp_path: Path, cloud: str, guest_netns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "floating.yaml"
    path.write_text(SCENARIO)
    out = tmp_path / "out"
    rc = cmd_run(str(path), cloud, str(out), [])
    results = load_results(out / "results.json")
    (case,) = results.cases
    (m,) = case.migrations
    assert rc == 0 and m.status == "completed", (case.error, m.events)
    probed = m.details["network"]["address"]
    assert ipaddress.ip_address(probed) in ipaddress.ip_network(FLOATING_CIDR), m.details["network"]
    assert m.downtime_ms.network is not None, m.details["network"]
    assert case.noise_floor_ms.network is not None  # replies came back through the NAT all along
    # The guest's UDP heartbeat to the runner's side of the external range arrives from its floating
    # address (SNAT), which is how the collector knows the server, as behind DevStack's router.
    assert m.details["guest"]["via"] == "udp 10.78.0.1:47011", m.details["guest"]
    assert m.downtime_ms.guest is not None, m.details["guest"]

    conn = connect(cloud)
    try:
        assert list(conn.network.ips()) == []
    finally:
        conn.close()
    assert NFT_TABLE not in nat_rules(guest_netns)
    capsys.readouterr()
    assert cmd_cleanup(cloud, yes=False) == 0
    assert "nothing tagged by novamig" in capsys.readouterr().out


def test_cleanup_removes_a_floating_ip_a_killed_run_left(
    cloud: str, guest_netns: str, boot_server: Any
) -> None:
    server = boot_server(name="novamig-fip-left")
    conn = connect(cloud)
    try:
        compute = Compute(conn)
        network_id = find_floating_network(conn, "auto")
        assert network_id == find_floating_network(conn, "novamig-ext")
        left = Resources(compute, "dead02")  # never closed: what a SIGKILLed run leaves behind
        address = left.floating_ip(conn, network_id, server.id, server.name)
        (fip,) = conn.network.ips(tags="novamig")
        assert fip.floating_ip_address == address and fip.port_id is not None
        assert sorted(fip.tags) == ["novamig", "novamig-run-dead02"]
        fixed = fip.fixed_ip_address
        assert f"ip daddr {address} dnat to {fixed}" in nat_rules(guest_netns)

        found = [f for f in find_tagged(conn, compute) if f.kind == "floating_ip"]
        assert [(f.id, f.name) for f in found] == [(fip.id, address)]
        assert delete_found(conn, compute, found) == []
        assert list(conn.network.ips()) == []
        assert NFT_TABLE not in nat_rules(guest_netns)
    finally:
        conn.close()
