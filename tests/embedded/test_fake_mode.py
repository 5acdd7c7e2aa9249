"""The embedded cloud's scale mode: Nova's fake driver on several computes, driven by the runner.

Fast tier: no QEMU, so a 20-server drain goes through the whole harness (fleet, migration
watcher, probes, results) in well under a minute, and shows that the probes say why they have no
figure instead of measuring anything.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from novamig.embedded.commands import cmd_cloud, driver_label
from novamig.embedded.controller import EmbeddedCloud, compute_hosts, options_from_env
from novamig.measure.contract import Unavailable, not_measured_reason
from novamig.measure.registry import CloudCapabilities, probes_for
from novamig.results import load_results
from novamig.runner.commands import cmd_run
from novamig.runner.plan import plan_from_case
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


@pytest.mark.slow
def test_drain_of_20_servers_through_the_runner(
    tmp_path: Path, fake_cloud: EmbeddedCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(fake_cloud.clouds_yaml))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(DRAIN_20)
    rc = cmd_run(str(scenario), fake_cloud.cloud_name, str(tmp_path / "out"), [])
    results = load_results(tmp_path / "out" / "results.json")
    [case] = results.cases
    assert rc == 0, case
    # How long the drain takes is a speed figure: bench/scale.py measures and reports it.
    assert results.environment.scale_mode == "scale mode: fake driver on 3 computes, no downtime measured"
    assert "scale mode: fake driver on 3 computes" in (tmp_path / "out" / "index.html").read_text()
    migs = case.migrations
    assert len(migs) == 20 and len({m.server for m in migs}) == 20
    assert all(m.status == "completed" and m.source_host == "compute1" for m in migs)
    assert {m.dest_host for m in migs} <= {"compute2", "compute3"}
    # each fake migration waits MIGRATION_S in the driver: Nova's record shows at least that
    assert all(m.duration_s is not None and m.duration_s >= MIGRATION_S for m in migs)
    for m in migs:
        assert m.poll_period_s is not None and m.poll_period_s > 0  # recorded; its bound: bench/scale.py
        for figure in ("guest", "network", "hypervisor"):
            assert getattr(m.downtime_ms, figure) is None
            assert not_measured_reason(m, figure) == "fake driver"


def test_cloud_up_refuses_no_computes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``novamig cloud up --computes 0`` is refused before anything starts."""
    monkeypatch.setenv("NOVAMIG_EMBEDDED_DIR", str(tmp_path / "cloud"))
    err = io.StringIO()
    rc = cmd_cloud("up", io.StringIO(), err, clouds_yaml_path=str(tmp_path / "clouds.yaml"), computes=0)
    assert rc == 2 and "--computes must be at least 1" in err.getvalue()
    assert not (tmp_path / "cloud").exists()
