"""`find_floating_network`: which external network `fleet.floating_ip_network` means, and the errors
that name the candidates. The embedded cloud has exactly one external network, so the clouds with
none, several, or a same-named internal one are stand-ins here (`NetworksOnly`), as is the listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from novamig.cloud.compute import Compute
from novamig.cloud.errors import CloudError
from novamig.cloud.resources import Resources, find_floating_network


@dataclass
class Net:
    id: str
    name: str
    is_router_external: bool


class NetworksOnly:
    """A cloud whose Network API lists the given networks (the one call these lookups make)."""

    def __init__(self, *networks: Net, network_api: bool = True) -> None:
        self._networks = list(networks)
        self._api = network_api
        self.network = self

    def has_service(self, name: str) -> bool:
        return self._api and name == "network"

    def networks(self) -> list[Net]:
        return list(self._networks)


PRIVATE = Net("n-private", "private", False)
PUBLIC = Net("n-public", "public", True)
PROVIDER = Net("n-provider", "provider", True)


def test_auto_is_the_one_external_network() -> None:
    assert find_floating_network(NetworksOnly(PRIVATE, PUBLIC), "auto") == "n-public"


def test_auto_with_several_names_them_all() -> None:
    with pytest.raises(CloudError) as exc:
        find_floating_network(NetworksOnly(PRIVATE, PUBLIC, PROVIDER), "auto")
    assert str(exc.value) == (
        "fleet.floating_ip_network: auto: 2 external networks, name one of: "
        "provider (n-provider), public (n-public)"
    )


def test_auto_with_none_says_so() -> None:
    with pytest.raises(CloudError, match="auto: the cloud has no external network"):
        find_floating_network(NetworksOnly(PRIVATE), "auto")


def test_by_name_or_id() -> None:
    cloud: Any = NetworksOnly(PRIVATE, PUBLIC, PROVIDER)
    assert find_floating_network(cloud, "provider") == "n-provider"
    assert find_floating_network(cloud, "n-public") == "n-public"


def test_a_missing_or_internal_network_is_refused_naming_the_external_ones() -> None:
    cloud: Any = NetworksOnly(PRIVATE, PUBLIC)
    with pytest.raises(CloudError, match=r"network 'nope' not found \(external networks: public\)"):
        find_floating_network(cloud, "nope")
    with pytest.raises(CloudError, match="network 'private' is not external"):
        find_floating_network(cloud, "private")


def test_a_cloud_without_a_network_api() -> None:
    with pytest.raises(CloudError, match="no Network API"):
        find_floating_network(NetworksOnly(network_api=False), "auto")


@dataclass
class Port:
    id: str
    network_id: str
    fixed_ips: list[dict[str, str]]


class PortOnPublic:
    """A server booted on the external network itself (DevStack's `public`); any floating-IP
    creation would be a bug, so this stand-in has none to call."""

    def __init__(self) -> None:
        self.network = self

    def ports(self, device_id: str) -> list[Port]:
        return [Port("p1", "n-public", [{"ip_address": "172.24.4.20"}])]


def test_a_server_on_the_external_network_keeps_its_own_address() -> None:
    res = Resources(Compute.__new__(Compute), "r1")  # no compute call is made
    assert res.floating_ip(PortOnPublic(), "n-public", "s1", "novamig-r1-c1-s0") == "172.24.4.20"
    assert res.created == []  # nothing to delete afterwards
