"""Preflight: every reason a cloud cannot run the scenario, found before anything is created.

Checks are collected, not stopped at the first: a user fixing a DevStack wants the whole list in
one go. The report also carries what the results' ``environment`` needs (hosts, microversion).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from novamig.cloud import microversions as mv
from novamig.cloud.compute import Compute, ComputeService
from novamig.cloud.errors import CloudError, PreflightFailed
from novamig.cloud.resources import TAG, FlavorRequest, find_flavor, find_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Needs:
    """What a scenario asks of the cloud."""

    servers: int
    images: tuple[str, ...]
    flavors: tuple[FlavorRequest | str, ...]  # specs to create, or names/ids of existing flavors
    hosts_named: tuple[str, ...] = ()  # hosts the scenario names (target HOST, drain:HOST)


@dataclass
class PreflightReport:
    max_microversion: mv.Microversion
    usable_hosts: list[str]
    all_hosts: list[ComputeService]
    image_ids: dict[str, str] = field(default_factory=dict)  # name or id → id
    flavor_ids: dict[str, str] = field(default_factory=dict)  # existing flavors named by the scenario
    hypervisor_versions: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _is_admin(conn: Any) -> bool:
    try:
        roles = conn.session.auth.get_access(conn.session).role_names
    except Exception:
        return True
    return "admin" in [r.lower() for r in roles]


def check_hosts(services: list[ComputeService], named: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(usable host names, problems) — pure, so its rules are unit-tested."""
    problems: list[str] = []
    usable = sorted(s.host for s in services if s.usable)
    if len(usable) < 2:
        described = ", ".join(f"{s.host} ({s.status}/{s.state})" for s in services) or "none"
        problems.append(f"live migration needs >= 2 enabled compute services that are up; found: {described}")
    for host in named:
        if host not in usable:
            problems.append(f"host {host!r} named by the scenario is not an enabled, up compute service")
    return usable, problems


def check_quota(limits: dict[str, Any], needs: Needs) -> list[str]:
    """Problems if the project's absolute limits leave no room for the fleet (-1 = unlimited)."""
    problems = []
    absolute = limits.get("absolute", {})

    def room(total_key: str, used_key: str) -> int | None:
        total = absolute.get(total_key)
        if total is None or total < 0:
            return None
        return int(total) - int(absolute.get(used_key, 0))

    wanted = [("instances", "maxTotalInstances", "totalInstancesUsed", needs.servers)]
    specs = [f for f in needs.flavors if isinstance(f, FlavorRequest)]
    if specs:
        vcpus = max(f.vcpus for f in specs)
        ram = max(f.ram_mb for f in specs)
        wanted.append(("cores", "maxTotalCores", "totalCoresUsed", needs.servers * vcpus))
        wanted.append(("RAM (MB)", "maxTotalRAMSize", "totalRAMUsed", needs.servers * ram))
    for label, total_key, used_key, amount in wanted:
        left = room(total_key, used_key)
        if left is not None and left < amount:
            problems.append(f"quota: {label} needed {amount}, room {left}")
    return problems


def _resolve_names(conn: Any, compute: Compute, needs: Needs, report: PreflightReport) -> list[str]:
    """Image and flavor names to ids, into `report`; a problem for each name the cloud lacks."""
    problems: list[str] = []
    for image in needs.images:
        try:
            report.image_ids[image] = find_image(conn, image)
        except CloudError as exc:
            problems.append(str(exc))
    for flavor in needs.flavors:
        if isinstance(flavor, str):
            try:
                report.flavor_ids[flavor] = find_flavor(compute, flavor)
            except CloudError as exc:
                problems.append(str(exc))
    return problems


def preflight(conn: Any, compute: Compute, needs: Needs) -> PreflightReport:
    """Run every check; PreflightFailed listing all problems, or the report."""
    problems: list[str] = []
    if compute.max_version < mv.MINIMUM:
        problems.append(
            f"compute API max microversion {compute.max_version} < {mv.MINIMUM} (needed for live migration)"
        )
    if not _is_admin(conn):
        problems.append("the credentials have no admin role (live migration and host selection need it)")
    try:
        services = compute.compute_services()
    except CloudError as exc:
        services = []
        problems.append(f"cannot list compute services (admin needed): {exc}")
    usable, host_problems = check_hosts(services, needs.hosts_named)
    problems += host_problems
    report = PreflightReport(compute.max_version, usable, services)
    problems += _resolve_names(conn, compute, needs, report)
    try:
        limits = (compute.call("GET", "/limits") or {}).get("limits", {})
        problems += check_quota(limits, needs)
    except CloudError as exc:
        report.notes.append(f"quota not checked: {exc}")
    try:
        leftovers = compute.servers_tagged(TAG)
        if leftovers:
            report.notes.append(
                f"{len(leftovers)} server(s) tagged {TAG} by earlier runs exist (they use capacity): "
                "`novamig cleanup` lists them"
            )
    except CloudError as exc:
        report.notes.append(f"earlier novamig servers not checked: {exc}")
    try:
        report.hypervisor_versions = compute.hypervisor_versions()
    except CloudError as exc:
        report.notes.append(f"hypervisor versions unknown: {exc}")
    if problems:
        raise PreflightFailed(problems)
    report.problems = problems
    return report
