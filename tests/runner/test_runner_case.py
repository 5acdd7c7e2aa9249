"""The orchestration loop with an in-memory cloud: targets, concurrency, cleanup, signals, exit codes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
from pathlib import Path

import pytest
from fakenova import FakeNova
from planning import make_plan

from novamig.cloud.host_policy import HostPolicyApplier
from novamig.results import Environment, load_results
from novamig.runner.case import CaseOutcome, run_case
from novamig.runner.live import LiveView
from novamig.runner.plan import CasePlan
from novamig.runner.run import default_out_dir, exit_code_for, run_plans
from novamig.runner.signals import StopRequest, stop_on_signals
from novamig.runner.watch import Policy

POLL = 0.005


class RecordingPolicy:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, dict[str, object]]] = []

    def apply(self, host: str, options: object) -> None:
        self.log.append(("apply", host, dict(options)))  # type: ignore[call-overload]

    def restore(self, host: str) -> None:
        self.log.append(("restore", host, {}))


def quiet_view() -> LiveView:
    import io

    return LiveView(io.StringIO(), interactive=False)


def run(
    nova: FakeNova, plan: CasePlan, policy: HostPolicyApplier | None = None, stop: StopRequest | None = None
) -> CaseOutcome:
    return run_case(
        plan,
        1,
        api=nova,
        fleet=nova,
        hosts=list(nova.hosts),
        host_policy=policy or RecordingPolicy(),
        probes=[],
        stop=stop or StopRequest(),
        view=quiet_view(),
        poll_s=POLL,
    )


def test_every_migration_completes_and_servers_are_deleted() -> None:
    nova = FakeNova()
    outcome = run(nova, make_plan(count=3))
    result = outcome.result
    assert result.passed, result
    assert len(result.migrations) == 6
    assert all(m.status == "completed" and m.duration_s for m in result.migrations)
    assert nova.live_servers() == []
    # each server alternates hosts (two hosts, scheduler's choice)
    for name in {m.server for m in result.migrations}:
        route = [(m.source_host, m.dest_host) for m in result.migrations if m.server == name]
        assert all(a != b for a, b in route)
        assert all(route[i][1] == route[i + 1][0] for i in range(len(route) - 1))


def test_concurrency_is_bounded() -> None:
    nova = FakeNova(running_s=0.15)
    run(nova, make_plan(servers=4, count=2, concurrency=2))
    assert nova.max_in_flight == 2
    nova = FakeNova(running_s=0.15)
    run(nova, make_plan(servers=3, count=1, concurrency=1))
    assert nova.max_in_flight == 1


def test_round_robin_requests_named_hosts() -> None:
    nova = FakeNova(hosts=("compute1", "compute2", "compute3"))
    result = run(nova, make_plan(servers=2, count=3, target="round-robin")).result
    assert result.passed
    assert all(host is not None for _, host in nova.requests)
    assert {host for _, host in nova.requests} == {"compute1", "compute2", "compute3"}


def test_drain_moves_every_server_off_the_host_once() -> None:
    nova = FakeNova(hosts=("compute1", "compute2", "compute3"))
    result = run(nova, make_plan(servers=3, count=4, target="drain:compute2")).result
    assert result.passed
    assert len(result.migrations) == 3
    assert all(m.source_host == "compute2" and m.dest_host != "compute2" for m in result.migrations)


def test_host_policy_is_applied_and_restored_even_when_the_case_fails() -> None:
    nova = FakeNova(boot_fails=True)
    policy = RecordingPolicy()
    outcome = run(nova, make_plan(host_options={"live_migration_downtime": 300}), policy)
    assert outcome.infrastructure_error
    assert "BootFailure" in (outcome.result.error or "")
    assert [e[0] for e in policy.log] == ["apply", "apply", "restore", "restore"]


def test_failed_migration_fails_the_case_and_the_run_continues(tmp_path: Path) -> None:
    nova = FakeNova(fail=True)
    plans = [make_plan(case_id="a#r1", count=1), make_plan(case_id="b#r1", count=1)]
    outcome = run_plans(
        plans,
        scenario={"name": "t"},
        environment=env(),
        api=nova,
        fleet=nova,
        hosts=list(nova.hosts),
        host_policy=RecordingPolicy(),
        probes_for=lambda p: [],
        stop=StopRequest(),
        view=quiet_view(),
        out_dir=tmp_path,
        poll_s=POLL,
    )
    assert len(outcome.results.cases) == 2
    assert outcome.exit_code == 1
    assert {m.status for c in outcome.results.cases for m in c.migrations} == {"error"}


def env() -> Environment:
    return Environment(cloud="fake", novamig_version="0", started_at=dt.datetime.now(dt.UTC))


def test_sigint_mid_run_aborts_cleans_up_writes_partial_results(tmp_path: Path) -> None:
    nova = FakeNova(running_s=5.0)  # long migrations: the signal arrives mid-flight
    plans = [make_plan(case_id=f"c{i}#r1", count=3, policy=Policy(timeout_s=60)) for i in range(3)]
    stop = StopRequest()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    with stop_on_signals(stop):
        timer.start()
        outcome = run_plans(
            plans,
            scenario={"name": "t"},
            environment=env(),
            api=nova,
            fleet=nova,
            hosts=list(nova.hosts),
            host_policy=RecordingPolicy(),
            probes_for=lambda p: [],
            stop=stop,
            view=quiet_view(),
            out_dir=tmp_path,
            poll_s=POLL,
        )
    timer.join()
    assert stop.signal_name == "SIGINT"
    assert outcome.exit_code == 130
    assert nova.live_servers() == []
    assert nova.in_flight() == 0
    saved = load_results(tmp_path / "results.json")
    assert saved.interrupted and not saved.passed
    assert len(saved.cases) == 1  # no new case started after the signal
    assert saved.cases[0].error == "interrupted (SIGINT)"
    assert [m.status for m in saved.cases[0].migrations] == ["cancelled"]
    assert (tmp_path / "junit.xml").exists() and (tmp_path / "index.html").exists()


def test_second_signal_does_not_interrupt_cleanup() -> None:
    stop = StopRequest()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.is_set() and stop.signal_name == "SIGTERM" and stop.count == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_exit_codes() -> None:
    from novamig.results import Results

    r = Results(scenario={}, environment=env(), passed=True)
    assert exit_code_for(r, False) == 0
    assert exit_code_for(r, True) == 3
    r.passed = False
    assert exit_code_for(r, False) == 1
    r.interrupted = True
    assert exit_code_for(r, True) == 130


def test_default_out_dir() -> None:
    when = dt.datetime(2026, 11, 25, 23, 5, 9, tzinfo=dt.UTC)
    assert default_out_dir("smoke", when) == Path("reports/smoke-20261125T230509Z")


@pytest.mark.parametrize("count", [0])
def test_count_zero_boots_and_measures_only(count: int) -> None:
    nova = FakeNova()
    result = run(nova, make_plan(count=count, sla=make_plan().sla)).result
    assert result.migrations == [] and nova.requests == []
