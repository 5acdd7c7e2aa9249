"""Compute API faults (5xx, no answer in time, connection dropped) against the real embedded Nova API.

The embedded cloud is started with ``NOVAMIG_API_FAULTS`` naming a rules file, so its compute API
sits behind the fault-injecting middleware (`novamig.embedded.service.api_faults`); each test arms
its faults by writing that file and counts the client's attempts in the ``.hits`` file the
middleware keeps. Nova's fake driver (the scale mode) keeps the cloud light: no QEMU is needed to
see what the client does with a failed HTTP call. Idempotent calls (GET, DELETE) must ride out
transient faults with bounded retries and say clearly when they give up; a POST — the live-migrate
action above all — is sent exactly once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from novamig.cloud.compute import Compute
from novamig.cloud.connection import connect
from novamig.cloud.errors import CloudError, CloudUnreachable
from novamig.cloud.resources import delete_url
from novamig.embedded.controller import EmbeddedCloud, compute_hosts
from novamig.embedded.service.api_faults import ENV
from novamig.results import load_results
from novamig.runner.commands import cmd_run

pytestmark = pytest.mark.slow  # a cloud of its own (Nova's fake driver: no QEMU)

SERVICES = "/os-services"
TIMEOUT_S = 3.0
"""The client's timeout in these tests; a warm API answers these calls in about 0.1 s."""


class Faults:
    """The rules file the cloud reads, and the hits it records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hits_path = path.with_name(path.name + ".hits")

    def arm(self, *rules: dict[str, Any]) -> None:
        self.hits_path.unlink(missing_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rules": list(rules)}), encoding="utf-8")
        tmp.replace(self.path)

    def hits(self) -> list[tuple[str, str, str]]:
        if not self.hits_path.exists():
            return []
        lines = self.hits_path.read_text(encoding="utf-8").splitlines()
        return [(h["method"], h["path"], h["fault"]) for h in map(json.loads, lines)]


@pytest.fixture(scope="module")
def faulty_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedCloud, Faults]]:
    faults = Faults(tmp_path_factory.mktemp("faults") / "rules.json")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV, str(faults.path))  # read by the cloud process when it starts
        cloud = EmbeddedCloud(driver="fake", hosts=compute_hosts(2), fake_migration_s=0.3)
        cloud.start()
    try:
        yield cloud, faults
    finally:
        cloud.stop()


@pytest.fixture
def faults(faulty_cloud: tuple[EmbeddedCloud, Faults]) -> Iterator[Faults]:
    yield faulty_cloud[1]
    faulty_cloud[1].arm()  # no fault leaks into the next test


@pytest.fixture
def compute(faulty_cloud: tuple[EmbeddedCloud, Faults]) -> Iterator[Compute]:
    cloud = faulty_cloud[0]
    conn = connect(cloud.cloud_name, cloud.clouds_yaml, timeout_s=TIMEOUT_S)
    try:
        api = Compute(conn)
        api.compute_services()  # a cold API's first answer may take longer than TIMEOUT_S
        yield api
    finally:
        conn.close()


def test_get_rides_out_5xx_and_a_dropped_connection(compute: Compute, faults: Faults) -> None:
    faults.arm(
        {"method": "GET", "path": SERVICES, "fault": "status", "status": 503, "count": 1},
        {"method": "GET", "path": SERVICES, "fault": "reset", "count": 1},
    )
    services = compute.compute_services()
    assert sorted(s.host for s in services) == ["compute1", "compute2"]
    assert [fault for _, _, fault in faults.hits()] == ["status 503", "reset", "pass"]


def test_get_that_gets_no_answer_in_time_is_retried(compute: Compute, faults: Faults) -> None:
    faults.arm({"method": "GET", "path": SERVICES, "fault": "delay", "delay_s": TIMEOUT_S + 2, "count": 1})
    assert len(compute.compute_services()) == 2
    assert [fault for _, _, fault in faults.hits()] == ["delay", "pass"]


def test_get_gives_up_after_bounded_attempts_naming_the_call(compute: Compute, faults: Faults) -> None:
    faults.arm({"method": "GET", "path": SERVICES, "fault": "status", "status": 500})  # every time
    with pytest.raises(CloudError) as info:
        compute.compute_services()
    message = str(info.value)
    assert message.startswith("GET /os-services?binary=nova-compute: HTTP 500: injected fault"), message
    assert message.endswith("(gave up after 3 attempts)")
    assert len(faults.hits()) == 3


def test_delete_is_retried_and_ends_deleted(compute: Compute, faults: Faults) -> None:
    compute.call("POST", "/os-keypairs", json={"keypair": {"name": "fault-delete"}})
    faults.arm({"method": "DELETE", "path": "/os-keypairs/fault-delete", "fault": "reset", "count": 1})
    delete_url(compute, "/os-keypairs/fault-delete")
    assert [fault for method, _, fault in faults.hits()] == ["reset", "pass"]
    names = [k["keypair"]["name"] for k in compute.call("GET", "/os-keypairs")["keypairs"]]
    assert "fault-delete" not in names


def test_post_is_sent_once_whatever_happens(compute: Compute, faults: Faults) -> None:
    faults.arm({"method": "POST", "path": "/os-keypairs", "fault": "reset", "count": 1})
    with pytest.raises(CloudUnreachable) as info:
        compute.call("POST", "/os-keypairs", json={"keypair": {"name": "fault-post"}})
    assert str(info.value).startswith("POST /os-keypairs: ")
    assert "not retried: the request may have reached Nova" in str(info.value)
    assert faults.hits() == [("POST", "/v2.1/os-keypairs", "reset")]  # one attempt, no repeat


SCENARIO = """\
name: api-faults
fleet: {count: 1, flavor: {vcpus: 1, ram_mb: 256, disk_gb: 1}, image: novamig-tiny}
workload: {kind: idle}
migration: {count: 3, interval_s: 0}
measure: {probes: [hypervisor], noise_floor_s: 0}
"""


def test_run_records_a_lost_live_migrate_request_and_goes_on(
    tmp_path: Path,
    faulty_cloud: tuple[EmbeddedCloud, Faults],
    faults: Faults,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first live-migrate POST's connection is dropped, the second is answered 503: each is
    that migration's error (sent once), the third completes, and the polls' 503s are ridden out."""
    cloud = faulty_cloud[0]
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(cloud.clouds_yaml))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    faults.arm(
        {"method": "POST", "path": "/action$", "body": "os-migrateLive", "fault": "reset", "count": 1},
        {"method": "POST", "path": "/action$", "body": "os-migrateLive", "fault": "status", "count": 1},
        {"method": "GET", "path": "/os-migrations", "fault": "status", "status": 502, "count": 2},
    )
    rc = cmd_run(str(scenario), cloud.cloud_name, str(tmp_path / "out"), [])
    results = load_results(tmp_path / "out" / "results.json")
    [case] = results.cases
    assert rc == 1, case  # a migration failed
    assert [m.status for m in case.migrations] == ["error", "error", "completed"]
    first, second = (" ".join(e.what for e in m.events) for m in case.migrations[:2])
    assert "POST /servers/" in first and "not retried" in first, first
    assert "HTTP 503: injected fault" in second and "not retried" in second, second
    posts = [fault for method, _, fault in faults.hits() if method == "POST"]
    assert posts == ["reset", "status 503", "pass"]  # three requests for three migrations
    gets = [fault for method, _, fault in faults.hits() if method == "GET"]
    assert gets[:2] == ["status 502", "status 502"] and set(gets[2:]) == {"pass"}


def _force_down(compute: Compute, host: str, down: bool) -> None:
    """Nova's own way to say a compute service is dead (``forced_down``, microversion 2.53)."""
    services = compute.call("GET", f"/os-services?binary=nova-compute&host={host}")["services"]
    for service in services:
        compute.call("PUT", f"/os-services/{service['id']}", json={"forced_down": down})


def test_a_compute_service_stopped_mid_case_errs_its_migrations_clearly(
    tmp_path: Path,
    faulty_cloud: tuple[EmbeddedCloud, Faults],
    compute: Compute,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the case's server is up on one compute, the other compute's service is marked down
    (as Nova does when it stops reporting): every migration of the case is an error, the server
    stays ACTIVE where it was, and the run ends (exit 1) rather than hanging on the dead host."""
    cloud = faulty_cloud[0]
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(cloud.clouds_yaml))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO.replace("count: 3", "count: 2"))
    downed: list[str] = []
    done = threading.Event()

    def stop_the_other_compute() -> None:
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            servers = compute.call("GET", "/servers/detail?all_tenants=1")["servers"]
            active = [s for s in servers if s["status"] == "ACTIVE"]
            if active:
                other = "compute2" if active[0]["OS-EXT-SRV-ATTR:host"] == "compute1" else "compute1"
                _force_down(compute, other, True)
                downed.append(other)
                return
            done.wait(0.1)

    thread = threading.Thread(target=stop_the_other_compute)
    thread.start()
    try:
        rc = cmd_run(str(scenario), cloud.cloud_name, str(tmp_path / "out"), [])
    finally:
        done.set()
        thread.join()
        for host in downed:
            _force_down(compute, host, False)
    assert downed, "the case's server never became ACTIVE"
    [case] = load_results(tmp_path / "out" / "results.json").cases
    assert rc == 1, case
    assert [m.status for m in case.migrations] == ["error", "error"]
    for migration in case.migrations:
        notes = " ".join(e.what for e in migration.events)
        # Nova takes the request (202) and its scheduler finds no host up: the record ends in error
        # (the poller may see the record `accepted` first, or already in error)
        transitions = [e.what for e in migration.events if e.what.startswith("migration: ")]
        assert transitions and transitions[-1].endswith("→ error"), transitions
        assert "server: MIGRATING → ACTIVE" in notes, notes
        # why, as Nova recorded it (its live-migration instance action's failed step) and the
        # service that is down, in the migration's one-line error
        error = migration.error or ""
        assert error.startswith("Nova: conductor_live_migrate_instance"), error
        assert "No valid host was found" in error and f"compute service {downed[0]} is down" in error, error
        assert "\n" not in error
        after = migration.server_after
        assert after is not None and (after.status, after.host) == ("ACTIVE", migration.source_host), after
        assert after.guest_running is True and migration.server_lost is None, migration
