"""scenarios/devstack-acceptance.yaml asks only for what a libvirt cloud lets novamig measure.

On a cloud that is not the embedded one, with the compute hosts reachable over SSH (the DevStack
plugin writes that file), every probe the scenario lists must be one that can run, every SLA check
must be judged on such a probe, and nothing may be asked that only the embedded driver measures.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

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
def test_the_acceptance_scenario_passes_as_shipped_on_novas_libvirt_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file as shipped (the full guest in its Glance form, m1.small, floating addresses), moved
    only off its named cloud, on an embedded cloud of the run's own in libvirt mode: Nova's own
    LibvirtDriver and one libvirtd per compute, the code path of a DevStack live-migration job.
    Every figure comes the way it comes on DevStack: the guest's over UDP to the collector found
    from the route to the floating network, libvirt's from its job statistics (the SSH probe's
    code, local transport), the integrity verdict from the guest over HTTP."""
    monkeypatch.delenv("OS_CLOUD", raising=False)
    out = tmp_path / "out"
    assert cmd_run(str(SCENARIO), None, str(out), ["cloud=null"], embedded_driver="libvirt") == 0
    results = load_results(out / "results.json")
    assert results.passed
    (case,) = results.cases
    checks = {c.name: c for c in case.sla}
    assert checks["memory_integrity"].passed and checks["memory_integrity"].value is True
    assert checks["downtime_ms.hypervisor.max"].passed and checks["downtime_ms.hypervisor.max"].limit == 500
    migrations = case.migrations
    assert len(migrations) == 4 and all(m.status == "completed" for m in migrations)
    for m in migrations:
        assert m.downtime_ms.guest is not None and m.downtime_ms.network is not None
        # through the floating addresses: the collector is the source of the route to novamig-ext
        via = m.details["guest"]["via"]
        assert via.startswith("udp ") and not via.startswith("udp 192.168.1."), via
        assert m.memory_integrity is True
        verdict = m.details["integrity"]
        assert verdict["ok"] is True and verdict["region"] is True, verdict
        assert m.hypervisor is not None and m.hypervisor["format"] in ("rawstats", "job-completed event")
        assert m.hypervisor["libvirt_host"] in ("compute1", "compute2")
        assert m.downtime_ms.hypervisor == m.hypervisor["total_downtime_ms"]
