"""A run: every case in order, results written after each, exit code from the outcome.

results.json, junit.xml and index.html are rewritten (atomically for results.json) after every
case, so a run stopped at any point — Ctrl-C, SIGTERM, a crash of the cloud — leaves valid files
describing what was measured up to then.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novamig.cloud.host_policy import HostPolicyApplier
from novamig.exitcodes import ExitCode
from novamig.measure.contract import Probe
from novamig.report.render import write_index
from novamig.results import Environment, Results, write_results
from novamig.runner.case import ServerProvisioner, run_case
from novamig.runner.junit import write_junit
from novamig.runner.migration_watcher import MigrationApi
from novamig.runner.plan import CasePlan
from novamig.runner.progress_display import LiveView
from novamig.runner.signals import StopRequest

log = logging.getLogger(__name__)


def new_run_id() -> str:
    """Six hex digits: short enough for resource names, random enough for parallel runs."""
    return secrets.token_hex(3)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def default_out_dir(scenario_name: str, now: dt.datetime | None = None, base: Path = Path("reports")) -> Path:
    stamp = (now or utc_now()).strftime("%Y%m%dT%H%M%SZ")
    return base / f"{scenario_name}-{stamp}"


@dataclass
class RunOutcome:
    results: Results
    exit_code: int
    infrastructure_error: bool


def exit_code_for(results: Results, infrastructure_error: bool) -> int:
    if results.interrupted:
        return int(ExitCode.INTERRUPTED)
    if infrastructure_error:
        return int(ExitCode.INFRASTRUCTURE)
    return int(ExitCode.OK) if results.passed else int(ExitCode.FAILED)


def write_outputs(results: Results, out_dir: Path) -> None:
    write_results(results, out_dir / "results.json")
    write_junit(results, out_dir / "junit.xml")
    write_index(results, out_dir / "index.html")


def run_plans(
    plans: Sequence[CasePlan],
    *,
    scenario: dict[str, Any],
    environment: Environment,
    api: MigrationApi,
    fleet: ServerProvisioner,
    hosts: Sequence[str],
    host_policy: HostPolicyApplier,
    probes_for: Callable[[CasePlan], list[Probe]],
    stop: StopRequest,
    view: LiveView,
    out_dir: Path,
    poll_s: float | None = None,
) -> RunOutcome:
    results = Results(scenario=scenario, environment=environment, passed=False)
    infrastructure = False
    write_outputs(results, out_dir)
    for index, plan in enumerate(plans, start=1):
        if stop.is_set():
            break
        view.start_case(plan.case_id, index, len(plans))
        outcome = run_case(
            plan,
            index,
            api=api,
            fleet=fleet,
            hosts=hosts,
            host_policy=host_policy,
            probes=probes_for(plan),
            stop=stop,
            view=view,
            poll_s=poll_s,
        )
        infrastructure = infrastructure or outcome.infrastructure_error
        results.cases = [*results.cases, outcome.result]
        results.passed = all(c.passed for c in results.cases) and len(results.cases) == len(plans)
        write_outputs(results, out_dir)
    results.interrupted = stop.is_set()
    results.passed = (
        not results.interrupted and len(results.cases) == len(plans) and all(c.passed for c in results.cases)
    )
    results.environment.finished_at = utc_now()
    write_outputs(results, out_dir)
    return RunOutcome(results, exit_code_for(results, infrastructure), infrastructure)
