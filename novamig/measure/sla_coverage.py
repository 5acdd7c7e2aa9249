"""Which SLA figures a scenario's probes cannot measure on the kind of cloud it will run on.

`novamig validate` prints these as warnings, before a run finds out the hard way: a figure no probe
measures is null, and a null figure fails its SLA check. The decision is the registry's own
(`novamig.measure.registry`: the same `why_not` of every way to fill a figure), asked about a kind
of cloud rather than a started one:

* the embedded cloud (no ``--cloud``, no scenario ``cloud:``, no ``OS_CLOUD``): its driver reads
  the heartbeat and QEMU's figures and checks memory integrity; its guests are reached inside its
  network namespace when novamig runs as root;
* a named cloud: no embedded driver, no virtio-serial — the guest figure comes over UDP, to
  ``measure.heartbeat_collector`` or, when the scenario names none, to the address a run finds from
  the route to the guests (`novamig.measure.collector_address`; validation assumes it will find one,
  as it cannot look without connecting); the hypervisor figure needs the SSH hosts file named by
  NOVAMIG_SSH_HOSTS (its presence is checked, not its contents). A ``novamig cloud up`` cloud named
  with ``--cloud`` is judged as a named cloud too: validation does not connect to find out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from novamig.cloud.host_policy import SSH_HOSTS_ENV
from novamig.measure.libvirt_jobstats import DomainPlace
from novamig.measure.registry import REGISTRY, CloudCapabilities, Registration
from novamig.measure.sla import SlaSpec
from novamig.scenario import Scenario, expand_cases
from novamig.scenario.models import Measure, Workload

_NOWHERE = Path("/nonexistent/novamig-validate")  # never written: probes are only chosen, not made
_ROUTE_FOUND = "0.0.0.0:47100"  # stands for the collector address a run finds from the route


@dataclass(frozen=True)
class _Plan:
    """A case as probe selection sees it (`registry.ProbePlan`), straight from the scenario."""

    case_id: str
    probes: tuple[str, ...]
    workload: str
    workload_spec: Workload
    measure: Measure
    sla: SlaSpec = field(default_factory=SlaSpec)
    scenario_dir: Path | None = None


def _not_located(server_id: str) -> DomainPlace:
    raise AssertionError("validation never locates a domain")


def capabilities_for(embedded: bool, environ: Mapping[str, str]) -> CloudCapabilities:
    """What a kind of cloud offers the probes, as far as can be told without connecting."""
    if embedded:
        netns = "novamig-guests" if os.geteuid() == 0 else None
        return CloudCapabilities(_NOWHERE, embedded_workdir=_NOWHERE, guest_netns=netns)
    if environ.get(SSH_HOSTS_ENV):
        return CloudCapabilities(_NOWHERE, ssh_hosts={}, locate_domain=_not_located)
    return CloudCapabilities(_NOWHERE)


def why_unmeasured(
    plan: _Plan, caps: CloudCapabilities, figure: str, registry: tuple[Registration, ...] = REGISTRY
) -> str | None:
    """The reason no probe can fill `figure` of `plan` on `caps` (None: one can) — `probes_for`'s
    choice, without making the probe."""
    if caps.no_guests is not None:
        return caps.no_guests
    reason = f"novamig has no {figure!r} probe"
    for way in registry:
        if way.figure == figure:
            why = way.why_not(plan, caps)
            if why is None:
                return None
            reason = why
    return reason


def _sla_figures(s: Scenario, embedded: bool) -> list[tuple[str, str]]:
    """(SLA key, figure) for every figure the scenario's SLA judges; memory integrity on the
    embedded cloud needs no probe (its driver checks it)."""
    sla = s.sla
    out: list[tuple[str, str]] = []
    if sla.downtime_ms.max is not None or sla.downtime_ms.p95 is not None:
        out.append(("sla.downtime_ms", sla.downtime_ms.probe))
    if sla.locust_failure_ratio.max is not None:
        out.append(("sla.locust_failure_ratio", "locust"))
    if sla.memory_integrity and not embedded:
        out.append(("sla.memory_integrity", "integrity"))
    return out


def sla_warnings(
    scenario: Scenario, cloud_flag: str | None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One line per SLA figure that no probe can measure on the cloud this scenario would run on
    (``--cloud``, else the scenario's ``cloud:``, else OS_CLOUD, else the embedded cloud: the
    order `novamig.cloud.connection.choose_cloud` gives a run, without importing openstacksdk for
    it), each case checked."""
    env = os.environ if environ is None else environ
    name = cloud_flag or scenario.cloud or env.get("OS_CLOUD") or None  # as `novamig run` chooses
    embedded = name is None
    where = "the embedded cloud" if embedded else f"a named cloud ({name}: no embedded driver)"
    caps = capabilities_for(embedded, env)
    warnings: dict[str, None] = {}
    for case in expand_cases(scenario):
        s = case.scenario
        measure = s.measure
        if not embedded and measure.heartbeat_collector is None:
            measure = measure.model_copy(update={"heartbeat_collector": _ROUTE_FOUND})
        plan = _Plan(
            case.id,
            tuple(s.measure.probes),
            s.workload.kind,
            s.workload,
            measure,
            SlaSpec(memory_integrity=s.sla.memory_integrity or None),
        )
        for key, figure in _sla_figures(s, embedded):
            why = why_unmeasured(plan, caps, figure)
            if why is not None:
                unmeasured = f"{key} judges the {figure} figure, which cannot be measured on {where}"
                warnings.setdefault(f"{unmeasured}: {why}")
    return list(warnings)


def sla_warner(cloud_flag: str | None) -> Callable[[Scenario], list[str]]:
    """`sla_warnings` for `novamig validate`, with its ``--cloud``."""
    return lambda scenario: sla_warnings(scenario, cloud_flag)
