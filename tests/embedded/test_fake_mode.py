"""The embedded cloud's scale mode: Nova's fake driver on several computes, driven by the runner.

Fast tier: no QEMU, so a 20-server drain goes through the whole harness (fleet, the case's batched
poller, probes, results) in well under a minute, and shows that the probes say why they have no
figure instead of measuring anything. The poller's API calls are counted in the request log Nova's
API writes (``nova.api.openstack.requestlog``: one line per request it served).
"""

from __future__ import annotations

import io
import itertools
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from novamig.embedded.commands import cmd_cloud, driver_label
from novamig.embedded.controller import EmbeddedCloud, compute_hosts, options_from_env
from novamig.measure.contract import Unavailable, not_measured_reason
from novamig.measure.registry import CloudCapabilities, probes_for
from novamig.results import load_results
from novamig.runner.case import process_cpu_s
from novamig.runner.commands import cmd_run
from novamig.runner.migration_watcher import FAST_POLL_S
from novamig.runner.plan import plan_from_case
from novamig.runner.poller import PROGRESS_PROBE_READS, PROGRESS_READS_PER_TICK
from novamig.scenario import expand_cases, load_scenario

MIGRATION_S = 0.3

DRAIN_20 = """\
name: fake-drain
fleet: {count: 20, flavor: {vcpus: 1, ram_mb: 256, disk_gb: 1}, image: novamig-tiny}
workload: {kind: idle}
migration: {count: 1, concurrency: 5, target: 'drain:compute1', interval_s: 0}
host_policy: {max_concurrent_live_migrations: 0}
measure: {probes: [guest, network, hypervisor], noise_floor_s: 0}
sla: {migrations_completed_ratio: 1.0}
"""


DRAIN_50 = """\
name: fake-drain-50
fleet: {count: 50, flavor: {vcpus: 1, ram_mb: 256, disk_gb: 1}, image: novamig-tiny}
workload: {kind: idle}
migration: {count: 1, concurrency: 50, target: 'drain:compute1', interval_s: 0}
host_policy: {max_concurrent_live_migrations: %d}
measure: {probes: [guest], noise_floor_s: 0}
sla: {migrations_completed_ratio: 1.0}
"""
REQUEST_LINE = re.compile(
    r'^(\S+ \S+) .*nova\.api\.openstack\.requestlog .*"(GET|POST|PUT|DELETE) (\S+)" status: (\d+)'
)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SLOT_STATUSES = frozenset({"preparing", "running", "running (post-copy)", "post-migrating"})
"""A migration in these statuses holds one of its source's ``max_concurrent_live_migrations``."""


@pytest.fixture(scope="module")
def fake_cloud() -> Iterator[EmbeddedCloud]:
    cloud = EmbeddedCloud(driver="fake", hosts=compute_hosts(3), fake_migration_s=MIGRATION_S)
    with cloud:
        yield cloud


def test_options_from_env_choose_the_scale_mode() -> None:
    env = {
        "NOVAMIG_EMBEDDED_DRIVER": "fake",
        "NOVAMIG_EMBEDDED_COMPUTES": "4",
        "NOVAMIG_FAKE_MIGRATION_S": "2",
    }
    assert options_from_env(env) == {
        "driver": "fake",
        "hosts": ("compute1", "compute2", "compute3", "compute4"),
        "fake_migration_s": 2.0,
    }
    assert options_from_env({}) == {"driver": "novamig"}
    with pytest.raises(ValueError, match="at least one compute"):
        compute_hosts(0)


def test_no_probe_measures_on_a_cloud_without_guests(tmp_path: Path) -> None:
    """Even where the embedded cloud's probes would apply (namespace, Locust load), the fake
    driver's servers have nothing to measure: every figure is Unavailable with its reason."""
    path = tmp_path / "s.yaml"
    path.write_text(
        DRAIN_20.replace("image: novamig-tiny", "image: novamig-full").replace("kind: idle", "kind: locust")
    )
    [case] = expand_cases(load_scenario(path))
    plan = plan_from_case(case, path.parent)
    caps = CloudCapabilities(tmp_path / "probes", tmp_path, "novamig-guests", no_guests="fake driver")
    probes = probes_for(plan, caps)
    assert [p.name for p in probes] == ["guest", "network", "hypervisor", "locust"]
    assert all(isinstance(p, Unavailable) and p.reason == "fake driver" for p in probes)


def test_fake_cloud_runs_nova_fake_driver_on_every_compute(fake_cloud: EmbeddedCloud) -> None:
    assert fake_cloud.no_guests == "fake driver"
    assert driver_label(fake_cloud) == "Nova's fake driver on 3 computes"
    conn = fake_cloud.connection()
    hypervisors = list(conn.compute.hypervisors(details=True))
    assert sorted(h.name for h in hypervisors) == ["compute1", "compute2", "compute3"]
    assert {h.hypervisor_type for h in hypervisors} == {"fake"}


@dataclass(frozen=True)
class Request:
    at: datetime
    method: str
    path: str  # server ids replaced by ID, changes-since values by T, the run's tag by novamig-run-RUN


def _normal_path(path: str) -> str:
    path = re.sub(r"changes-since=[^&]*", "changes-since=T", UUID.sub("ID", path))
    return re.sub(r"tags=novamig-run-[0-9a-f]+", "tags=novamig-run-RUN", path)


def _requests(cloud: EmbeddedCloud, offset: int) -> list[Request]:
    """The compute API requests Nova's request log recorded after `offset`."""
    assert cloud.layout is not None
    with (cloud.layout.logs / "nova.log").open() as fh:
        fh.seek(offset)
        found = [REQUEST_LINE.search(line) for line in fh]
    return [
        Request(
            datetime.fromisoformat(m.group(1)),
            m.group(2),
            _normal_path(m.group(3)),
        )
        for m in found
        if m is not None
    ]


def _log_size(cloud: EmbeddedCloud) -> int:
    assert cloud.layout is not None
    return (cloud.layout.logs / "nova.log").stat().st_size


def _run(cloud: EmbeddedCloud, tmp_path: Path, scenario_text: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(cloud.clouds_yaml))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(scenario_text)
    return cmd_run(str(scenario), cloud.cloud_name, str(tmp_path / "out"), [])


def test_drain_of_20_servers_through_the_runner(
    tmp_path: Path, fake_cloud: EmbeddedCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    offset = _log_size(fake_cloud)
    cpu_before = process_cpu_s()
    rc = _run(fake_cloud, tmp_path, DRAIN_20, monkeypatch)
    run_cpu = process_cpu_s() - cpu_before  # the run is in this process: its whole CPU
    results = load_results(tmp_path / "out" / "results.json")
    [case] = results.cases
    assert rc == 0, case
    # the watching's CPU is measured apart from the boot and the delete, which the run also paid
    assert case.migration_cpu_s is not None and 0 < case.migration_cpu_s < run_cpu, (case, run_cpu)
    # How long the drain takes is a speed figure: bench/scale.py measures and reports it.
    assert results.environment.scale_mode == "scale mode: fake driver on 3 computes, no downtime measured"
    assert "scale mode: fake driver on 3 computes" in (tmp_path / "out" / "index.html").read_text()
    migs = case.migrations
    assert len(migs) == 20 and len({m.server for m in migs}) == 20
    assert all(m.status == "completed" and m.source_host == "compute1" for m in migs)
    assert {m.dest_host for m in migs} <= {"compute2", "compute3"}
    # each fake migration waits MIGRATION_S in the driver: Nova's record shows at least that
    assert all(m.duration_s is not None and m.duration_s >= MIGRATION_S for m in migs)
    requests = _requests(fake_cloud, offset)
    tick = _median_tick_s(requests)
    for m in migs:
        # every migration is sampled at every tick of the case's poller: its progress period is
        # the tick's (≤ 0.5 s asked; how far a loaded cloud stretches it is bench/scale.py's figure)
        assert m.poll_period_s is not None and 0 < m.poll_period_s <= 1.5 * tick, (m.poll_period_s, tick)
        assert m.duration_s is not None and 0 < m.phases_s["queued"] < m.duration_s, m.phases_s
        # Nova's conductor creates the record `accepted` and the scheduler then picks the host:
        # the poller reads new records as they are created, so that phase is there to be timed
        assert m.phases_s["request"] <= m.phases_s["queued"], m.phases_s
        for figure in ("guest", "network", "hypervisor"):
            assert getattr(m.downtime_ms, figure) is None
            assert not_measured_reason(m, figure) == "fake driver"
    _check_batched_calls(requests, n=20)
    assert sum("accepted" in m.phases_s for m in migs) >= len(migs) // 2, [m.phases_s for m in migs]


def _median_tick_s(requests: list[Request]) -> float:
    """The poller's period as Nova saw it: the median gap between its changed-migrations lists (one
    a tick; the newest-records list of some ticks is not counted)."""
    ticks = [
        r.at
        for r in requests
        if r.path.startswith("/v2.1/os-migrations?migration_type=live-migration&changes-since=")
    ]
    gaps = sorted((b - a).total_seconds() for a, b in itertools.pairwise(ticks))
    return gaps[len(gaps) // 2]


def _check_batched_calls(requests: list[Request], n: int) -> None:
    """The case's poller read every migration through two list calls per tick, whatever the
    number of migrations; per migration only what no list holds."""
    calls = Counter(f"{r.method} {r.path}" for r in requests)
    # only the run's own servers: its run tag, not every novamig server of the cloud
    server_lists = calls["GET /v2.1/servers/detail?all_tenants=1&tags=novamig-run-RUN&changes-since=T"]
    migration_lists = calls["GET /v2.1/os-migrations?migration_type=live-migration&changes-since=T"]
    # the first tick's server list has no cursor yet; the migrations' first one comes from it
    assert calls["GET /v2.1/servers/detail?all_tenants=1&tags=novamig-run-RUN"] == 1
    assert calls["GET /v2.1/os-migrations?migration_type=live-migration"] == 0
    assert migration_lists == server_lists + 1 >= 2
    # the newest records (Nova writes no update time on an `accepted` one): only while a watch
    # has not seen its record, so never more than once a tick
    newest = [
        r for r in requests if r.path.startswith("/v2.1/os-migrations?migration_type=live-migration&limit=")
    ]
    assert 1 <= len(newest) <= migration_lists
    in_progress = [r for r in requests if r.path == "/v2.1/servers/ID/migrations"]
    # the fake driver reports no memory figures: each running migration read a few times, then not
    assert len(in_progress) <= PROGRESS_PROBE_READS * n
    # one listing of the server's earlier migrations before each request
    assert calls["GET /v2.1/os-migrations?instance_uuid=ID&migration_type=live-migration"] == n
    assert calls["POST /v2.1/servers/ID/action"] == n
    # calls per second while polling: bounded by the tick, not by the number of migrations
    ticks = [r.at for r in requests if "changes-since=T" in r.path and "os-migrations" in r.path]
    span = (max(ticks) - min(ticks)).total_seconds()
    polling = 2 * len(ticks) + len(newest) + len(in_progress)
    assert polling <= (span / FAST_POLL_S + 1) * (3 + PROGRESS_READS_PER_TICK), (polling, span)


@pytest.mark.slow
def test_drain_of_50_servers_queues_within_the_live_migration_limit(
    tmp_path: Path, fake_cloud: EmbeddedCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 servers drained at once from a compute that runs `limit` live migrations at a time: the
    host empties, no poll ever saw more than `limit` migrations holding a slot, and the wait for a
    slot shows in ``phases_s.queued``, apart from the migration itself."""
    limit = 5
    offset = _log_size(fake_cloud)
    rc = _run(fake_cloud, tmp_path, DRAIN_50 % limit, monkeypatch)
    [case] = load_results(tmp_path / "out" / "results.json").cases
    migs = case.migrations
    assert rc == 0, case.error or [
        (m.server, m.status, m.events[-6:]) for m in migs if m.status != "completed"
    ]
    assert len(migs) == 50 and all(m.status == "completed" for m in migs)
    assert all(m.source_host == "compute1" and m.dest_host in ("compute2", "compute3") for m in migs)
    # Every watch is stamped with its tick's time, so these intervals are the polls' snapshots.
    edges: list[tuple[float, int]] = []
    for m in migs:
        start = next(p.t for p in m.progress if p.status in SLOT_STATUSES)
        end = next(p.t for p in m.progress if p.status == "completed")
        edges += [(start, 1), (end, -1)]
    running = peak = 0
    for _, step in sorted(edges):  # at one time, ends sort before starts
        running += step
        peak = max(peak, running)
    assert 1 <= peak <= limit
    queued = sorted(m.phases_s["queued"] for m in migs)
    running_s = [m.phases_s["running"] for m in migs]
    # the last ones waited for (50 / limit - 1) rounds of migrations of at least MIGRATION_S each
    assert queued[-1] >= (50 / limit - 1) * MIGRATION_S, queued
    assert max(running_s) < queued[-1]
    _check_batched_calls(_requests(fake_cloud, offset), n=50)


def test_cloud_up_refuses_no_computes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``novamig cloud up --computes 0`` is refused before anything starts."""
    monkeypatch.setenv("NOVAMIG_EMBEDDED_DIR", str(tmp_path / "cloud"))
    err = io.StringIO()
    rc = cmd_cloud("up", io.StringIO(), err, clouds_yaml_path=str(tmp_path / "clouds.yaml"), computes=0)
    assert rc == 2 and "--computes must be at least 1" in err.getvalue()
    assert not (tmp_path / "cloud").exists()
