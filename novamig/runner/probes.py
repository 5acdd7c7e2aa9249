"""The runner's side of the probes: each probe's figure copied into a migration's record.

Probes are chosen by `novamig.measure.registry.probes_for` and follow the contract in
`novamig.measure.contract`; the runner never computes a figure itself. After the probes stop,
`apply_figures` writes each probe's figure of a migration into ``downtime_ms.<probe>`` (and its
resolution, brownout, details and integrity check), and the reason a figure is missing into the
migration's events, where the SLA checks find it again.

Before that, `with_heartbeat_collector` fills in the UDP heartbeat collector's address of a case
that names none, wherever the guests' heartbeat can only come over UDP: the source address of the
route to the guests (`novamig.measure.collector_address`). The case's user-data, its probes and the
fleet's wait for the guests then all use that one address.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

from novamig.measure.collector_address import CollectorAddresses
from novamig.measure.contract import Probe, ProbeFigure, Unavailable, not_measured_event
from novamig.measure.registry import CloudCapabilities, heartbeat_over_udp
from novamig.results import Event, HypervisorFigures, MigrationRecord
from novamig.runner.plan import CasePlan

log = logging.getLogger(__name__)

FIGURES = ("guest", "network", "locust", "hypervisor")
"""The per-probe keys of results (`PerProbe`): a probe with another name fills nothing, except
`INTEGRITY`."""
INTEGRITY = "integrity"
"""The guest's own integrity verdict (`novamig.measure.guest_integrity`): no downtime figure, only
``memory_integrity`` and ``details.integrity``."""


def apply_figures(
    record: MigrationRecord, server_id: str, migration_id: int | None, probes: Sequence[Probe]
) -> MigrationRecord:
    """Copy each probe's figure into the record; a missing figure's reason becomes an event."""
    for probe in probes:
        if probe.name not in FIGURES and probe.name != INTEGRITY:
            continue
        try:
            fig = probe.figure(record, server_id, migration_id)
        except Exception as exc:  # a probe's bug costs its figure, never the run's results
            log.exception("probe %s failed on a migration of %s", probe.name, record.server)
            fig = ProbeFigure(None, None, f"the probe failed: {type(exc).__name__}: {exc}")
        if probe.name == INTEGRITY:  # a verdict, no downtime figure
            _merge_integrity(record, fig.memory_integrity)
            if fig.details or fig.reason:
                record.details[INTEGRITY] = fig.details or {"error": fig.reason}
            continue
        setattr(record.downtime_ms, probe.name, fig.downtime_ms)
        setattr(record.resolution_ms, probe.name, fig.resolution_ms)
        setattr(record.brownout_ms, probe.name, fig.brownout_ms)
        _merge_integrity(record, fig.memory_integrity)
        if probe.name == "hypervisor" and fig.details is not None:
            record.hypervisor = HypervisorFigures.model_validate(fig.details)
        elif fig.details:
            record.details[probe.name] = fig.details
        if fig.downtime_ms is None and fig.reason:
            t = record.finished_at if record.finished_at is not None else record.requested_at
            record.events.append(Event(t=t, what=not_measured_event(probe.name, fig.reason)))
    return record


def _merge_integrity(record: MigrationRecord, verdict: bool | None) -> None:
    """Every verdict must say intact (the embedded driver's and the guest's own, when both exist)."""
    if verdict is not None:
        record.memory_integrity = (
            verdict if record.memory_integrity is None else (record.memory_integrity and verdict)
        )


def probes_set_up(probes: Sequence[Probe]) -> Mapping[str, str | None]:
    """What the SLA checks need to know of a case's probes: figure → None when its probe ran, or
    the reason it could not (`Unavailable`)."""
    return {p.name: p.reason if isinstance(p, Unavailable) else None for p in probes}


def with_heartbeat_collector(
    plan: CasePlan, capabilities: CloudCapabilities, addresses: CollectorAddresses | None
) -> CasePlan:
    """`plan` with ``measure.heartbeat_collector`` set to the address the route to its guests
    gives (`CollectorAddresses.for_case`) when it names none and the guests' heartbeat can only
    come over UDP on this cloud (`heartbeat_over_udp`) and the case uses the agent; else `plan`
    itself. Not only for the guest figure: the agent starts its integrity region and dirtier at boot
    only with a UDP target, and the fleet waits for the guests' echo only then."""
    if plan.measure.heartbeat_collector is not None or addresses is None:
        return plan
    if not heartbeat_over_udp(capabilities) or not _uses_the_guest_agent(plan):
        return plan
    found = addresses.for_case(plan.floating_ip_network)
    if found is None:
        return plan
    return dataclasses.replace(plan, measure=plan.measure.model_copy(update={"heartbeat_collector": found}))


def _uses_the_guest_agent(plan: CasePlan) -> bool:
    """The case needs what the agent does with a UDP target: the guest figure, the memory dirtier
    or integrity region, the guest's integrity verdict. A case that needs none of them (an idle
    guest judged by the hypervisor's figure) sends nothing to the guests and waits for no echo."""
    return (
        "guest" in plan.probes
        or "integrity" in plan.probes
        or plan.workload == "memory"
        or bool(plan.sla.memory_integrity)
    )
