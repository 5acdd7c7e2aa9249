"""scenarios/devstack-acceptance.yaml asks only for what a libvirt cloud lets novamig measure.

On a cloud that is not the embedded one, with the compute hosts reachable over SSH (the DevStack
plugin writes that file), every probe the scenario lists must be one that can run, every SLA check
must be judged on such a probe, and nothing may be asked that only the embedded driver measures.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from novamig.embedded.service.migration_monitor import INTEGRITY_CHECK_ENV
from novamig.measure.contract import Unavailable
from novamig.measure.libvirt_jobstats import DomainPlace
from novamig.measure.registry import CloudCapabilities, probes_for
from novamig.results import load_results
from novamig.runner.commands import cmd_run, load_plans

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "devstack-acceptance.yaml"


def _nowhere(server_id: str) -> DomainPlace:
    raise AssertionError("no domain is located while probes are only chosen")


def test_every_probe_of_the_acceptance_scenario_can_run_on_a_libvirt_cloud(tmp_path: Path) -> None:
    scenario, plans = load_plans(str(SCENARIO))
    assert scenario.cloud == "devstack-admin"  # live migration is admin-only in Nova's policy
    libvirt_cloud = CloudCapabilities(
        probe_dir=tmp_path,
        ssh_hosts={"controller": "stack@192.0.2.10", "subnode": "stack@192.0.2.11"},
        locate_domain=_nowhere,
    )
    for shipped in plans:
        # The guest figure comes over UDP, to the source of the route to the floating network,
        # found at run time (novamig.measure.collector_address): on DevStack, br-ex's address.
        assert shipped.measure.heartbeat_collector is None and shipped.floating_ip_network == "auto"
        routed = shipped.measure.model_copy(update={"heartbeat_collector": "172.24.4.1:47100"})
        plan = dataclasses.replace(shipped, measure=routed)
        assert plan.sla.memory_integrity is True  # the guest's own verdict, asked over HTTP
        probes = probes_for(plan, libvirt_cloud)
        unavailable = {p.name: p.reason for p in probes if isinstance(p, Unavailable)}
        assert not unavailable, unavailable
        assert {p.name for p in probes} == {*plan.probes, "integrity"}
        assert plan.sla.downtime_probe in plan.probes


@pytest.mark.slow
@pytest.mark.qemu
def test_the_acceptance_scenario_passes_on_the_embedded_cloud_on_the_guests_own_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scenario as shipped, moved to the embedded cloud by the overrides an operator would
    pass (flavor, image, network, and the collector at the gateway of the guests' network
    namespace), on a cloud of the run's own whose driver does not check memory integrity
    (NOVAMIG_EMBEDDED_INTEGRITY_CHECK=off): it passes on what a libvirt cloud gives too — every
    guest figure came over UDP, and every integrity verdict from the guest over HTTP."""
    monkeypatch.setenv(INTEGRITY_CHECK_ENV, "off")
    monkeypatch.delenv("OS_CLOUD", raising=False)
    out = tmp_path / "out"
    overrides = [
        "cloud=null",
        "fleet.flavor={vcpus: 1, ram_mb: 256, disk_gb: 1}",
        "fleet.image=novamig-tiny",
        "fleet.network=null",
        "measure.heartbeat_collector=192.168.1.1:47100",
        "workload.memory.working_set_mib=32",
        "migration.interval_s=1",
        "measure.noise_floor_s=2",
    ]
    assert cmd_run(str(SCENARIO), None, str(out), overrides) == 0
    results = load_results(out / "results.json")
    assert results.passed
    (integrity,) = [c for case in results.cases for c in case.sla if c.name == "memory_integrity"]
    assert integrity.passed and integrity.value is True
    migrations = [m for case in results.cases for m in case.migrations]
    assert len(migrations) == 4 and all(m.status == "completed" for m in migrations)
    for m in migrations:
        assert m.downtime_ms.guest is not None
        assert m.details["guest"]["via"] == "udp 192.168.1.1:47100"
        assert m.memory_integrity is True
        verdict = m.details["integrity"]
        assert verdict["ok"] is True and verdict["region"] is True and verdict["pages"] == 16 * 256, verdict
        assert m.hypervisor is not None and "integrity" not in m.hypervisor  # the driver's check was off
