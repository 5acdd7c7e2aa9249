"""Floating IPs on the embedded cloud, for real: the external network, NAT in the guest namespace.

A scenario with `fleet.floating_ip_network: auto` runs with the network probe aiming at the floating
address (results.json says which address it probed) and the guests' UDP heartbeats arriving from
it, and afterwards no floating IP, no NAT rule
and nothing tagged is left. A floating IP a killed run left behind is found and removed by
`novamig cleanup`. The external network and the NAT exist only when the cloud has its guest
namespace (root), `nft` and `conntrack`: elsewhere these tests are skipped, saying why. The fast
tests drive the floating-IP store and its NAT in a namespace of their own, and the network API
without one.
"""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from novamig.cloud.compute import Compute
from novamig.cloud.connection import connect
from novamig.cloud.resources import Resources, find_floating_network
from novamig.cloud.sweep import delete_found, find_tagged
from novamig.embedded.controller import EmbeddedCloud
from novamig.embedded.service.floating_ips import (
    EXTERNAL_NETWORK_ID,
    FLOATING_CIDR,
    NFT_TABLE,
    FloatingIpError,
    FloatingIps,
    NamespaceNat,
    nft_available,
)
from novamig.embedded.service.network_api import NetworkApi
from novamig.exitcodes import ExitCode
from novamig.hypervisor.netns import GuestNetwork, netns_supported
from novamig.results import load_results
from novamig.runner.commands import cmd_cleanup, cmd_run

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


@pytest.mark.slow
@pytest.mark.qemu
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


@pytest.mark.slow
@pytest.mark.qemu
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


@pytest.mark.slow
@pytest.mark.qemu
def test_an_unknown_floating_network_stops_the_run_before_any_boot(
    tmp_path: Path, cloud: str, guest_netns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "floating.yaml"
    path.write_text(SCENARIO.replace("floating_ip_network: auto", "floating_ip_network: nope"))
    capsys.readouterr()
    rc = cmd_run(str(path), cloud, str(tmp_path / "out"), [])
    err = capsys.readouterr().err
    assert rc == ExitCode.INFRASTRUCTURE, err
    assert "fleet.floating_ip_network: network 'nope' not found (external networks: novamig-ext)" in err


# -- fast: the store and its NAT in a namespace of the test's own -----------------------------------
PORTS = {
    "p1": {"id": "p1", "fixed_ips": [{"ip_address": "192.168.1.10"}]},
    "p2": {"id": "p2", "fixed_ips": [{"ip_address": "192.168.1.11"}]},
}


@pytest.fixture
def store() -> Iterator[tuple[FloatingIps, NamespaceNat, dict[str, Any]]]:
    for why in (netns_supported(), nft_available()):
        if why is not None:
            pytest.skip(why)
    ports = json.loads(json.dumps(PORTS))
    with GuestNetwork(subnet="192.168.1.0/24") as net:
        nat = NamespaceNat(net.name, "192.168.1.0/24")
        nat.start()
        floating = FloatingIps(ports, nat)
        yield floating, nat, ports
        floating.close()
        assert (
            "10.78.0.1/"
            not in subprocess.run(
                ["ip", "-n", net.name, "-o", "addr"], capture_output=True, text=True, check=True
            ).stdout
        )


def test_each_association_is_one_dnat_and_one_snat_rule(store: Any) -> None:
    floating, nat, _ = store
    assert NFT_TABLE not in nat.rules()
    a = floating.create({"floating_network_id": EXTERNAL_NETWORK_ID, "port_id": "p1"})
    assert (a["floating_ip_address"], a["fixed_ip_address"], a["status"]) == (
        "10.78.0.10",
        "192.168.1.10",
        "ACTIVE",
    )
    b = floating.create({"floating_network_id": EXTERNAL_NETWORK_ID})  # not associated: no rule
    assert b["port_id"] is None and b["floating_ip_address"] == "10.78.0.11"
    rules = nat.rules()
    assert "ip daddr 10.78.0.10 dnat to 192.168.1.10" in rules
    assert "ip saddr 192.168.1.10 snat to 10.78.0.10" in rules
    assert "10.78.0.11" not in rules
    floating.update(b["id"], {"port_id": "p2"})
    assert "ip daddr 10.78.0.11 dnat to 192.168.1.11" in nat.rules()
    floating.update(a["id"], {"port_id": None})
    assert "10.78.0.10" not in nat.rules() and "10.78.0.11" in nat.rules()
    floating.delete(b["id"])
    assert NFT_TABLE not in nat.rules()  # no floating IP associated: no table at all
    floating.delete(a["id"])
    assert floating.items == {}


def test_requests_neutron_refuses_are_refused_the_same_way(store: Any) -> None:
    floating, _, ports = store
    with pytest.raises(FloatingIpError, match="is not a valid external network") as bad_net:
        floating.create({"floating_network_id": "nope", "port_id": "p1"})
    assert bad_net.value.status == 400
    with pytest.raises(FloatingIpError, match="Port p9 could not be found") as no_port:
        floating.create({"floating_network_id": EXTERNAL_NETWORK_ID, "port_id": "p9"})
    assert no_port.value.status == 404
    first = floating.create({"floating_network_id": EXTERNAL_NETWORK_ID, "port_id": "p1"})
    with pytest.raises(FloatingIpError, match="already has a floating IP") as twice:
        floating.create({"floating_network_id": EXTERNAL_NETWORK_ID, "port_id": "p1"})
    assert twice.value.status == 409
    assert floating.update(first["id"], {"port_id": "p1"})["port_id"] == "p1"  # its own: no conflict
    with pytest.raises(FloatingIpError, match="could not be found") as gone:
        floating.delete("nope")
    assert gone.value.status == 404
    del ports["p1"]  # the server was deleted with its port: the address shows unassociated
    assert floating.view(floating.items[first["id"]])["port_id"] is None
    assert sorted(floating.set_tags(first["id"], ["novamig", "b", "novamig"])) == ["b", "novamig"]


class _Ports:
    """The network stand-in's store, reduced to what the floating-IP calls read."""

    def __init__(self) -> None:
        self._networks: dict[str, Any] = {}
        self._ports: dict[str, Any] = {}


def _call(app: NetworkApi, method: str, path: str, body: Any = None) -> tuple[str, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    seen: dict[str, str] = {}
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_LENGTH": str(len(data)),
        "wsgi.input": io.BytesIO(data),
    }
    out = b"".join(app(environ, lambda status, headers: seen.update(status=status)))
    return seen["status"], json.loads(out) if out else None


def test_without_the_guest_namespace_floating_ips_are_not_implemented_saying_why() -> None:
    app = NetworkApi(_Ports(), "http://127.0.0.1:1")
    status, body = _call(app, "POST", "/v2.0/floatingips", {"floatingip": {}})
    assert status.startswith("501")
    assert "guest network namespace" in body["NeutronError"]["message"]
    assert _call(app, "GET", "/v2.0/floatingips") == ("200 OK", {"floatingips": []})
    assert _call(app, "GET", "/v2.0/networks")[1] == {"networks": []}  # no external network shown
