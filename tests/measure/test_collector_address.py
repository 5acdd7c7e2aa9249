"""The UDP heartbeat collector's address from the route to the guests: real ``ip route get`` on
loopback and inside a namespace the project makes (`GuestNetwork`: a bridge at 10.77.0.1/24)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from novamig.hypervisor.netns import GuestNetwork, netns_supported, socket_in
from novamig.measure.collector_address import (
    DEFAULT_PORT,
    CollectorAddresses,
    NoRoute,
    free_port,
    route_source,
    subnet_probe_address,
)
from novamig.measure.registry import CloudCapabilities, heartbeat_over_udp
from novamig.runner.plan import CasePlan, plan_from_case
from novamig.runner.probes import with_heartbeat_collector
from novamig.scenario import expand_cases, load_scenario

needs_netns = pytest.mark.skipif(netns_supported() is not None, reason=str(netns_supported()))


def test_the_route_to_loopback_comes_from_loopback() -> None:
    assert route_source("127.0.0.1") == "127.0.0.1"


@needs_netns
def test_the_source_is_this_side_of_the_route_to_the_guests_subnet() -> None:
    with GuestNetwork("10.77.0.0/24") as net:
        probe = subnet_probe_address("10.77.0.0/24")
        assert probe == "10.77.0.254"
        # a guest's address on the bridge's subnet: the bridge's own address is the source
        assert route_source(probe, net.name) == "10.77.0.1"
        # the namespace has no default route: nothing leaves it, and the reason says so
        with pytest.raises(NoRoute, match=r"no route to 203\.0\.113\.5"):
            route_source("203.0.113.5", net.name)
        # with a default route, a subnet reached only through it is not the guests': nothing found
        subprocess.run(
            ["ip", "-n", net.name, "route", "add", "default", "via", "10.77.0.2"], check=True, timeout=10
        )
        with pytest.raises(NoRoute, match=r"only the default route leads to 203\.0\.113\.5"):
            route_source("203.0.113.5", net.name)
        assert route_source(probe, net.name) == "10.77.0.1"


@needs_netns
def test_the_default_port_unless_something_holds_it_there() -> None:
    with GuestNetwork("10.77.0.0/24") as net:
        assert free_port("10.77.0.1", net.name) == DEFAULT_PORT
        with socket_in(net.name) as holder:
            holder.bind(("10.77.0.1", DEFAULT_PORT))
            other = free_port("10.77.0.1", net.name)
        assert other != DEFAULT_PORT and 0 < other <= 65535


def test_small_subnets_are_asked_for_their_one_address() -> None:
    assert subnet_probe_address("172.24.4.0/24") == "172.24.4.254"
    assert subnet_probe_address("10.0.0.7/32") == "10.0.0.7"


def _plan(tmp_path: Path, collector: str | None = None, extra: str = "") -> CasePlan:
    text = "name: t\nfleet: {count: 1}\nmigration: {count: 1}\n" + extra
    if collector is not None:
        text += f"measure: {{heartbeat_collector: '{collector}'}}\n"
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return plan_from_case(expand_cases(load_scenario(path))[0], tmp_path)


def test_only_clouds_without_a_virtio_serial_reader_take_the_heartbeat_over_udp(tmp_path: Path) -> None:
    other = CloudCapabilities(tmp_path)
    embedded = CloudCapabilities(tmp_path, embedded_workdir=tmp_path, guest_netns="ns")
    libvirt_mode = replace(embedded, libvirt_hosts={})
    scale_mode = replace(embedded, no_guests="fake driver")
    assert heartbeat_over_udp(other) and heartbeat_over_udp(libvirt_mode)
    assert not heartbeat_over_udp(embedded) and not heartbeat_over_udp(scale_mode)


def test_a_plan_keeps_the_collector_it_names_and_the_embedded_driver_needs_none(tmp_path: Path) -> None:
    # No Network API behind this connection: anything asked of it would raise, so these cases
    # show that nothing is asked.
    addresses = CollectorAddresses(None, "auto", None)
    named = _plan(tmp_path, "10.9.9.9:7000")
    assert with_heartbeat_collector(named, CloudCapabilities(tmp_path), addresses) is named
    plain = _plan(tmp_path)
    embedded = CloudCapabilities(tmp_path, embedded_workdir=tmp_path, guest_netns="ns")
    assert with_heartbeat_collector(plain, embedded, addresses) is plain
    assert with_heartbeat_collector(plain, CloudCapabilities(tmp_path), None) is plain


class _AskedConnection:
    """Records whether the Network API was asked for the guests' subnet (it has none)."""

    def __init__(self) -> None:
        self.asked = 0

    def has_service(self, name: str) -> bool:
        self.asked += 1
        return False


def test_a_case_that_does_not_use_the_guest_agent_gets_no_collector(tmp_path: Path) -> None:
    """An idle guest judged by the hypervisor's figure: nothing is sent to the guests, so no address
    is looked for; a case with the guest probe does look."""
    conn = _AskedConnection()
    addresses = CollectorAddresses(conn, "auto", None)
    hypervisor_only = _plan(
        tmp_path, extra="measure: {probes: [hypervisor]}\nsla: {downtime_ms: {probe: hypervisor}}\n"
    )
    assert (
        with_heartbeat_collector(hypervisor_only, CloudCapabilities(tmp_path), addresses) is hypervisor_only
    )
    assert conn.asked == 0
    with_heartbeat_collector(_plan(tmp_path), CloudCapabilities(tmp_path), addresses)
    assert conn.asked == 1
