"""`novamig_cloud`, `novamig_server` and `novamig_migrate`: the cloud, servers and measured
migrations for hand-written tests, on the session's cloud.

The cloud is the one the session's scenarios run on, or else opened the same way at the first
request (``--novamig-cloud``, ``OS_CLOUD``, or an embedded cloud per xdist worker) and closed at the
end of the session. A server is booted by the runner's fleet (tagged, with the guest agent's
user-data) and deleted when its test ends; a migration goes through the runner's `migrate_once`
with the case's probes started on the server around it, so the returned `MigrationRecord` carries
the same figures as a migration of ``results.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest

from novamig.cloud.connection import connect
from novamig.measure.contract import CaseClock, ServerInfo
from novamig.pytest_plugin.session import (
    STATE,
    NovamigState,
    OpenedCloud,
    close_cloud,
    open_cloud,
    out_dir_of,
)
from novamig.results import MigrationRecord
from novamig.runner.case import PROBE_TAIL_S, migrate_once
from novamig.runner.commands import RunSession
from novamig.runner.migration_watcher import Policy
from novamig.runner.plan import CasePlan, plan_from_case
from novamig.runner.probes import apply_figures
from novamig.runner.progress_display import LiveView
from novamig.scenario import Scenario, expand_cases

DEFAULT_SERVER: dict[str, Any] = {
    "name": "pytest-fixtures",
    "fleet": {"count": 1, "flavor": {"vcpus": 1, "ram_mb": 256, "disk_gb": 1}, "image": "novamig-tiny"},
    "workload": {"kind": "idle"},
    "migration": {"count": 1},
    "measure": {"probes": ["guest", "hypervisor"], "noise_floor_s": 0},
}
"""What `novamig_server()` boots without arguments: the smallest guest with the agent, measured
by its heartbeat and the hypervisor's figures."""


def server_plan(
    *,
    image: str | None = None,
    flavor: str | dict[str, int] | None = None,
    network: str | None = None,
    workload: dict[str, Any] | None = None,
    measure: dict[str, Any] | None = None,
) -> CasePlan:
    """A one-server case plan from the defaults and the given scenario sections (validated as a
    scenario file is)."""
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in DEFAULT_SERVER.items()}
    fleet = data["fleet"]
    fleet.update(
        {k: v for k, v in (("image", image), ("flavor", flavor), ("network", network)) if v is not None}
    )
    if workload is not None:
        data["workload"] = workload
    if measure is not None:
        data["measure"] = measure
    case = expand_cases(Scenario.model_validate(data))[0]
    return plan_from_case(case)


class FixtureSession:
    """The session's part of the fixtures: the opened cloud, and each server's plan and host."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.own_state: NovamigState | None = None  # made here when no scenario runs
        self.plans: dict[str, CasePlan] = {}
        self.hosts: dict[str, str | None] = {}
        self.count = 0

    def opened(self, plan: CasePlan | None = None) -> OpenedCloud:
        """The session's opened cloud; opened here for `plan` (else the default server's) when no
        scenario opened it."""
        state = self.config.stash.get(STATE, None)
        if state is None:
            if self.own_state is None:
                worker: dict[str, Any] | None = getattr(self.config, "workerinput", None)
                self.own_state = NovamigState(
                    {},
                    out_dir_of(self.config),
                    self.config.getoption("novamig_cloud"),
                    str(worker["workerid"]) if worker else None,
                    {},  # no scenario: no case for the xdist scheduler to keep together
                )
            state = self.own_state
        if state.opened is None:
            return open_cloud(state, [plan or server_plan()], None)
        return state.opened

    def session(self, plan: CasePlan | None = None) -> RunSession:
        opened = self.opened(plan)
        if opened.session is None:
            pytest.fail(f"novamig: {opened.error}", pytrace=False)
        return opened.session

    def close(self) -> None:
        if self.own_state is not None:
            close_cloud(self.own_state)

    def server(self, stack: contextlib.ExitStack, **settings: Any) -> ServerInfo:
        """Boot one server (deleted when `stack` closes) and remember its plan for migrations."""
        plan = server_plan(**settings)
        session = self.session(plan)
        if plan.image not in session.fleet.image_ids:  # an image the preflight did not look up
            image = session.cloud.conn.image.find_image(plan.image, ignore_missing=False)
            session.fleet.image_ids[plan.image] = image.id
        self.count += 1
        opened = self.opened()
        servers = stack.enter_context(session.fleet.provision(plan, 1000 + self.count, None, opened.stop))
        if not servers:
            pytest.fail("novamig: the server was not booted (stop requested)", pytrace=False)
        self.plans[servers[0].id] = plan
        self.hosts[servers[0].id] = servers[0].host
        return servers[0]

    def migrate(
        self,
        server: ServerInfo,
        *,
        policy: dict[str, Any] | None = None,
        target: str | None = None,
        block_migration: Any = None,
    ) -> MigrationRecord:
        """Live-migrate `server` once (to `target`, else where Nova chooses) under `policy`
        (``post_copy_after_s``, ``abort_after_s``, ``timeout_s``), its probes around it."""
        plan = self.plans[server.id]
        if policy is not None:
            plan = dataclasses.replace(plan, policy=Policy(**{**dataclasses.asdict(plan.policy), **policy}))
        if block_migration is not None:
            plan = dataclasses.replace(plan, block_migration=block_migration)
        session = self.session()
        stop = self.opened().stop
        clock = CaseClock()
        probes = session.probes(plan)
        source = self.hosts[server.id]
        current = dataclasses.replace(server, host=source)
        for probe in probes:
            probe.start([current], clock)
        try:
            with LiveView(interactive=False) as view:
                record, migration_id = migrate_once(
                    plan,
                    server=current,
                    source_host=source,
                    destination=target,
                    api=session.cloud.compute,
                    clock=clock,
                    stop=stop,
                    view=view,
                    poll_s=None,
                )
            stop.event.wait(PROBE_TAIL_S)  # the probes see the destination's first second too
        finally:
            for probe in probes:
                with contextlib.suppress(Exception):
                    probe.stop()
        apply_figures(record, server.id, migration_id, probes)
        if record.status == "completed":
            self.hosts[server.id] = record.dest_host
        return record


def cloud_connection(fleet: FixtureSession, stack: contextlib.ExitStack) -> Any:
    """`novamig_cloud`: the opened cloud's connection, or, on a named cloud that no scenario
    opened, a plain connection (no preflight: a hand-written test may need no novamig image)."""
    state = fleet.config.stash.get(STATE, None)
    name = fleet.config.getoption("novamig_cloud")
    if (state is None or state.opened is None) and name:
        conn = connect(name)
        stack.callback(conn.close)
        return conn
    return fleet.session().cloud.conn
