"""Resources and the cleanup sweep against a small in-memory compute API (`call` + microversion)."""

from __future__ import annotations

from typing import Any

import pytest

from novamig.cloud import resources
from novamig.cloud.compute import Compute, ComputeApiError
from novamig.cloud.microversions import Microversion
from novamig.cloud.resources import FlavorRequest, Resources, ServerSpec
from novamig.cloud.sweep import delete_found, find_tagged


class FakeCompute(Compute):
    """The real `Compute` reads over an in-memory REST `call`: records every call in order."""

    def __init__(self, version: str = "2.80") -> None:  # no endpoint discovery
        self.max_version = Microversion.parse(version)
        self.calls: list[str] = []
        self.flavors: dict[str, dict[str, Any]] = {}
        self.servers: dict[str, dict[str, Any]] = {}
        self.keypairs: dict[str, dict[str, Any]] = {}
        self.fail_delete: set[str] = set()
        self._n = 0

    def _id(self) -> str:
        self._n += 1
        return f"id{self._n}"

    def call(self, method: str, url: str, *, version: Any = None, json: Any = None, ok: Any = None) -> Any:
        self.calls.append(f"{method} {url}")
        if method == "DELETE" and url in self.fail_delete:
            raise ComputeApiError(method, url, 500, "boom")
        if method == "POST" and url == "/flavors":
            fid = self._id()
            self.flavors[fid] = {"id": fid, **json["flavor"]}
            return {"flavor": self.flavors[fid]}
        if method == "POST" and url == "/servers":
            sid = self._id()
            self.servers[sid] = {"id": sid, "status": "ACTIVE", **json["server"]}
            return {"server": {"id": sid}}
        if method == "POST" and url == "/os-keypairs":
            self.keypairs[json["keypair"]["name"]] = json["keypair"]
            return {"keypair": json["keypair"]}
        if method == "PUT" and url.endswith("/tags"):
            self.servers[url.split("/")[2]]["tags"] = json["tags"]
            return None
        if method == "DELETE":
            kind, key = url.split("/")[1:3]
            store = {"flavors": self.flavors, "servers": self.servers, "os-keypairs": self.keypairs}[kind]
            store.pop(key, None)
            return None
        if method == "GET" and url.startswith("/servers/detail"):
            tagged = [s for s in self.servers.values() if "novamig" in s.get("tags", [])]
            return {"servers": [{"id": s["id"], "name": s["name"], "status": "ACTIVE"} for s in tagged]}
        if method == "GET" and url.startswith("/servers/"):
            sid = url.split("/")[2]
            if sid not in self.servers:
                raise ComputeApiError(method, url, 404, "not found")
            return {"server": {"id": sid, "name": self.servers[sid]["name"], "status": "ACTIVE"}}
        if method == "GET" and url.startswith("/flavors/detail"):
            return {"flavors": list(self.flavors.values())}
        if method == "GET" and url == "/os-keypairs":
            return {"keypairs": [{"keypair": k} for k in self.keypairs.values()]}
        raise AssertionError(f"unexpected call {method} {url}")


class NoNetwork:
    def has_service(self, name: str) -> bool:
        return False


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "POLL_S", 0.0)


def provision(compute: FakeCompute, run_id: str = "abc123") -> Resources:
    res = Resources(compute, run_id)
    fid = res.flavor(FlavorRequest(1, 256, 1))
    res.keypair("ssh-ed25519 AAAA test")
    sid = res.server(ServerSpec(resource_name := "novamig-abc123-c1-s0", "img", fid))
    assert resource_name in {s["name"] for s in compute.servers.values()}
    assert res.wait_active([sid])[sid].status == "ACTIVE"
    return res


def test_tags_metadata_and_description_mark_everything() -> None:
    compute = FakeCompute()
    provision(compute)
    [server] = compute.servers.values()
    assert server["tags"] == ["novamig", "novamig-run-abc123"]
    assert server["metadata"] == {"novamig": "true", "novamig_run": "abc123"}
    [flavor] = compute.flavors.values()
    assert (
        flavor["name"] == "novamig-abc123-flavor-1c256m1g" and flavor["description"] == "novamig run abc123"
    )
    # before 2.52 tags cannot go in the create request: they are set right after
    old = FakeCompute("2.40")
    provision(old)
    assert any(c.endswith("/tags") and c.startswith("PUT") for c in old.calls)


def test_context_exit_deletes_servers_first_then_the_rest_newest_first() -> None:
    compute = FakeCompute()
    with provision(compute):
        pass
    deletes = [c for c in compute.calls if c.startswith("DELETE")]
    assert deletes[0].startswith("DELETE /servers/")
    assert deletes[1:] == ["DELETE /os-keypairs/novamig-abc123-key", "DELETE /flavors/id1"]
    assert not compute.servers and not compute.flavors and not compute.keypairs


def test_a_failed_delete_is_reported_not_raised_and_the_rest_still_go() -> None:
    compute = FakeCompute()
    res = provision(compute)
    compute.fail_delete.add("/os-keypairs/novamig-abc123-key")
    res.delete_all()  # must not raise
    assert len(res.leftovers) == 1 and "keypair novamig-abc123-key" in res.leftovers[0]
    assert not compute.flavors and not compute.servers


def test_sweep_finds_marked_resources_only_and_deletes_them() -> None:
    compute = FakeCompute()
    provision(compute)
    # look-alikes without the mark stay
    compute.flavors["x"] = {"id": "x", "name": "novamig-other", "description": "someone else's"}
    found = find_tagged(NoNetwork(), compute)
    assert sorted(f.kind for f in found) == ["flavor", "keypair", "server"]
    assert delete_found(NoNetwork(), compute, found) == []
    assert find_tagged(NoNetwork(), compute) == []
    assert list(compute.flavors) == ["x"]


def test_boot_host_uses_the_host_field_where_it_exists() -> None:
    for version, key, value in (("2.80", "host", "compute2"), ("2.60", "availability_zone", "nova:compute2")):
        compute = FakeCompute(version)
        Resources(compute, "r1").server(ServerSpec("novamig-r1-c1-s0", "img", "f", host="compute2"))
        [server] = compute.servers.values()
        assert server[key] == value
        assert ("host" in server) == (key == "host")


def test_server_addresses_ipv4_fixed_before_floating() -> None:
    from novamig.cloud.compute import server_from_json

    state = server_from_json(
        {
            "id": "x",
            "addresses": {
                "private": [
                    {"addr": "fd00::5", "version": 6, "OS-EXT-IPS:type": "fixed"},
                    {"addr": "172.24.4.9", "version": 4, "OS-EXT-IPS:type": "floating"},
                    {"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
                ]
            },
        }
    )
    assert state.addresses == ("10.0.0.5", "172.24.4.9")
    assert server_from_json({"id": "y"}).addresses == ()
