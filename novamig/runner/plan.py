"""What one case does, as the runner needs it: `CasePlan`, built from a scenario case.

`plan_from_case` is the only place that reads the scenario model, so the rest of the runner (and
its tests) depends on this small typed contract instead of on the whole scenario schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from novamig.cloud.host_policy import libvirt_options
from novamig.cloud.microversions import BlockMigration
from novamig.cloud.resources import FlavorRequest
from novamig.measure.sla import SlaSpec
from novamig.runner.migration_watcher import Policy
from novamig.runner.targets import Target
from novamig.scenario.models import Measure, Workload
from novamig.workload.userdata import GuestSetup, render_user_data

if TYPE_CHECKING:
    from novamig.scenario import Case


@dataclass(frozen=True)
class CasePlan:
    case_id: str
    params: dict[str, Any]
    repetition: int
    servers: int
    flavor: FlavorRequest | str
    image: str
    network: str | None
    workload: str
    count: int
    concurrency: int
    target: Target
    ping_pong: bool
    block_migration: BlockMigration
    interval_s: float
    policy: Policy
    host_options: dict[str, Any] = field(default_factory=dict)
    sla: SlaSpec = field(default_factory=SlaSpec)
    probes: tuple[str, ...] = ()
    user_data: str | None = None
    workload_spec: Workload = field(default_factory=Workload)  # the scenario's workload, whole
    measure: Measure = field(default_factory=Measure)  # probe rates, noise-floor window
    scenario_dir: Path | None = None  # where a user's locustfile path is relative to
    floating_ip_network: str | None = None  # external network for floating IPs; None → none
    sla_reasons: tuple[str, ...] = ()  # why this cell's SLA differs (its `sla_by_cell` entries)
    boot_timeout_s: float = 600.0  # fleet.boot_timeout_s: servers ACTIVE
    ready_timeout_s: float = 300.0  # fleet.ready_timeout_s: ACTIVE → the agent's first echo answer

    @property
    def abort_expected(self) -> bool:
        return self.policy.abort_after_s is not None

    def guest_setup(self) -> GuestSetup:
        """What the case's guests are told at boot through their user-data."""
        return GuestSetup(
            self.case_id,
            self.workload_spec,
            self.measure,
            bool(self.sla.memory_integrity),
            heartbeat_udp=self.measure.heartbeat_collector,
        )


def user_data_for(plan: CasePlan) -> str:
    """The user-data of every server of `plan` (the fleet's `user_data`)."""
    return render_user_data(plan.guest_setup())


def plan_from_case(case: Case, scenario_dir: Path | None = None) -> CasePlan:
    s = case.scenario
    m = s.migration
    flavor: FlavorRequest | str
    if isinstance(s.fleet.flavor, str):
        flavor = s.fleet.flavor
    else:
        flavor = FlavorRequest(s.fleet.flavor.vcpus, s.fleet.flavor.ram_mb, s.fleet.flavor.disk_gb)
    host_policy = s.host_policy.model_dump(exclude_none=True) if s.host_policy is not None else {}
    sla = s.sla
    probe = sla.downtime_ms.probe
    return CasePlan(
        case_id=case.id,
        params=dict(case.params),
        repetition=case.repetition,
        servers=s.fleet.count,
        flavor=flavor,
        image=s.fleet.image,
        network=s.fleet.network,
        floating_ip_network=s.fleet.floating_ip_network,
        workload=s.workload.kind,
        count=m.count,
        concurrency=m.concurrency,
        target=Target.parse(m.target),
        ping_pong=m.ping_pong,
        block_migration=m.block_migration,
        interval_s=m.interval_s,
        policy=Policy(
            post_copy_after_s=m.policy.post_copy_after_s,
            abort_after_s=m.policy.abort_after_s,
            timeout_s=m.policy.timeout_s,
        ),
        host_options=libvirt_options(m.policy.model_dump(), host_policy),
        sla=SlaSpec(
            downtime_probe=probe,
            downtime_max_ms=sla.downtime_ms.max,
            downtime_p95_ms=sla.downtime_ms.p95,
            duration_max_s=sla.duration_s.max,
            duration_p95_s=sla.duration_s.p95,
            locust_failure_ratio_max=sla.locust_failure_ratio.max,
            memory_integrity=sla.memory_integrity or None,
            migrations_completed_ratio=sla.migrations_completed_ratio,
        ),
        probes=tuple(s.measure.probes),
        workload_spec=s.workload,
        measure=s.measure,
        scenario_dir=scenario_dir,
        sla_reasons=case.sla_reasons,
        boot_timeout_s=s.fleet.boot_timeout_s,
        ready_timeout_s=s.fleet.ready_timeout_s,
    )
