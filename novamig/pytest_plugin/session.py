"""The plugin's working part, loaded only when a scenario is given: collection of scenario cases,
their run through the runner, and the session's merged results (the package docstring says how).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from novamig import __version__
from novamig.cloud.connection import choose_cloud
from novamig.pytest_plugin.xdist_scheduling import CloudGroupScheduling, group_name, make_scheduler
from novamig.results import CaseResult, Environment, Results
from novamig.runner.case import run_case
from novamig.runner.commands import BadScenario, RunEnds, RunSession, load_plans, open_session, setup_logging
from novamig.runner.junit import case_properties, sla_message
from novamig.runner.plan import CasePlan
from novamig.runner.progress_display import LiveView
from novamig.runner.run import new_run_id, utc_now, write_outputs
from novamig.runner.signals import StopRequest, stop_on_signals
from novamig.scenario import Scenario, redacted_dict

REPORT_ATTR = "novamig_case"  # the set-up report's attribute carrying the case's result
STATE = pytest.StashKey["NovamigState"]()


@dataclass(frozen=True)
class LoadedScenario:
    """A scenario file checked at start-up, before anything is collected or created."""

    path: Path
    scenario: Scenario
    plans: list[CasePlan]
    as_dict: dict[str, Any]


@dataclass
class OpenedCloud:
    """The session's (or this worker's) cloud, opened by the first item; closed at the end."""

    stack: contextlib.ExitStack
    stop: StopRequest
    session: RunSession | None = None
    error: str | None = None  # why it could not be opened: every item then errors with it
    log_handler: logging.Handler | None = None


@dataclass
class NovamigState:
    """What a pytest process knows of novamig: its scenarios, where reports go, its cloud."""

    scenarios: dict[Path, LoadedScenario]
    out_dir: Path
    cloud_flag: str | None
    worker: str | None  # the xdist worker's id; None in the controller or without xdist
    groups: dict[Path, str]  # scenario file → its named cloud's xdist group (`cloud_groups`)
    opened: OpenedCloud | None = None

    @property
    def run_dir(self) -> Path:
        """Where this process's probe records and logs go (per worker: no files racing)."""
        return self.out_dir / f"worker-{self.worker}" if self.worker else self.out_dir

    def results_dir(self, path: Path) -> Path:
        """One scenario's reports: the out folder itself, or a sub-folder each when several run."""
        if len(self.scenarios) == 1:
            return self.out_dir
        return self.out_dir / self.scenarios[path].scenario.name


def _load(path: Path) -> LoadedScenario:
    try:
        scenario, plans = load_plans(str(path))
    except BadScenario as exc:
        raise pytest.UsageError("novamig scenario not runnable:\n" + "\n".join(exc.problems)) from exc
    return LoadedScenario(path, scenario, plans, redacted_dict(scenario))


def out_dir_of(config: pytest.Config) -> Path:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None and workerinput.get("novamig_out"):
        return Path(workerinput["novamig_out"])  # the controller's choice: one folder per session
    given = config.getoption("novamig_out")
    if given:
        return Path(given).resolve()
    return (Path("reports") / f"pytest-{utc_now().strftime('%Y%m%dT%H%M%SZ')}").resolve()


def activate(config: pytest.Config, paths: list[Path]) -> None:
    """Load and check the scenarios (a bad one is a usage error, before anything runs), point the
    collection at them and register this module's hooks."""
    scenarios = {p: _load(p) for p in paths}
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    worker = str(workerinput["workerid"]) if workerinput is not None else None
    flag = config.getoption("novamig_cloud")
    groups = cloud_groups(flag, scenarios.values())
    config.stash[STATE] = NovamigState(scenarios, out_dir_of(config), flag, worker, groups)
    wanted = [str(p) for p in paths]
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = wanted  # no test paths given: the scenarios are the session
    else:
        config.args = [*config.args, *(p for p in wanted if p not in config.args)]
    config.addinivalue_line("markers", "novamig: a novamig scenario case")
    config.pluginmanager.register(SessionHooks(), "novamig-session")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(), "novamig-xdist")
    if worker is None:
        config.pluginmanager.register(ResultsMerger(config.stash[STATE]), "novamig-results")


def cloud_groups(flag: str | None, scenarios: Iterable[LoadedScenario]) -> dict[Path, str]:
    """Each scenario file mapped to its named cloud's xdist group (none on the embedded cloud, which
    is each worker's own). A session's processes open one cloud for all its scenarios (`_opened`),
    so scenarios naming different clouds are a usage error rather than a silent run of the second
    on the first one's cloud."""
    chosen = {s.path: choose_cloud(flag, s.scenario.cloud).name for s in scenarios}
    names = set(chosen.values())
    if len(names) > 1:
        said = ", ".join(sorted(n or "the embedded cloud" for n in names))
        raise pytest.UsageError(
            f"novamig scenarios name different clouds ({said}): a session runs on one cloud; "
            "pass --novamig-cloud NAME or run them in separate sessions"
        )
    return {path: group_name(name) for path, name in chosen.items() if name is not None}


class XdistHooks:
    """Hooks that exist only with pytest-xdist (registered then, or pytest refuses them)."""

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        state = node.config.stash[STATE]
        node.workerinput["novamig_out"] = str(state.out_dir)

    @pytest.hookimpl(tryfirst=True)  # before xdist's own, which answers for every --dist mode
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> CloudGroupScheduling | None:
        """A named cloud's cases on one worker at a time (`xdist_scheduling` says why xdist's
        ``loadgroup`` cannot do it under pytest 9); None lets xdist choose."""
        return make_scheduler(config, log, config.stash[STATE].groups)


class SessionHooks:
    """The hooks of a session with scenarios (registered by `activate`): collection of the
    scenario files, the case's result on its set-up report, the cloud closed at the end."""

    @pytest.hookimpl
    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
        state = parent.config.stash.get(STATE, None)
        if state is None or file_path.resolve() not in state.scenarios:
            return None
        return ScenarioFile.from_parent(parent, path=file_path)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """The set-up report carries the case's result (and environment) to whoever writes results;
        an infrastructure error is told by its cause alone."""
        report = yield
        if (
            isinstance(item, CaseItem)
            and call.excinfo is not None
            and call.excinfo.errisinstance(InfrastructureError)
        ):
            report.longrepr = f"InfrastructureError: {call.excinfo.value}"  # the cause, not our traceback
        if isinstance(item, CaseItem) and call.when == "setup" and item.result is not None:
            payload = {
                "scenario": str(item.path.resolve()),
                "case": item.result.model_dump(mode="json"),
                "environment": item.environment.model_dump(mode="json") if item.environment else None,
            }
            setattr(report, REPORT_ATTR, payload)
        return report

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Close this process's cloud: an own embedded cloud stops, its logs are kept."""
        state = session.config.stash.get(STATE, None)
        if state is not None:
            close_cloud(state)


class ScenarioFile(pytest.File):
    """A scenario file: one item per case, in `novamig run`'s order (repetition outermost)."""

    def collect(self) -> Iterator[CaseItem]:
        state = self.config.stash[STATE]
        loaded = state.scenarios[self.path.resolve()]
        group = state.groups.get(loaded.path)
        for index, plan in enumerate(loaded.plans, start=1):
            item = CaseItem.from_parent(self, name=plan.case_id, plan=plan, index=index)
            item.add_marker(pytest.mark.novamig)
            if group is not None:
                # what the scheduler keeps on one worker, said the way other plugins read it
                item.add_marker(pytest.mark.xdist_group(group))
            yield item


class InfrastructureError(Exception):
    """The cloud failed the case (unreachable, preflight, boot failure): an error, not a failure."""


class SlaMissed(Exception):
    """The case ran and missed its SLA or a migration failed: the item fails with the numbers."""


class CaseItem(pytest.Item):
    """One scenario case. Set-up runs it (so the cloud's failures are errors); the test judges."""

    def __init__(self, *, plan: CasePlan, index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.index = index
        self.result: CaseResult | None = None
        self.environment: Environment | None = None

    def setup(self) -> None:
        state = self.config.stash[STATE]
        opened = _opened(state)
        if opened.session is None:
            raise InfrastructureError(opened.error or "the cloud could not be opened")
        session = opened.session
        view = LiveView(sys.stderr, interactive=False)  # pytest captures it with the item's output
        with stop_on_signals(opened.stop), view:
            view.start_case(self.plan.case_id, self.index, len(state.scenarios[self.path.resolve()].plans))
            outcome = run_case(
                self.plan,
                self.index,
                api=session.cloud.compute,
                fleet=session.fleet,
                hosts=session.cloud.report.usable_hosts,
                host_policy=session.host_policy,
                probes=session.probes(self.plan),
                stop=opened.stop,
                view=view,
            )
        self.result, self.environment = outcome.result, session.environment
        for name, value in case_properties(outcome.result):
            self.user_properties.append((f"novamig.{name.split('/', 1)[1]}", value))
        if opened.stop.is_set():
            self.session.shouldstop = f"novamig: stopped by {opened.stop.signal_name}"
            raise InfrastructureError(f"stopped by {opened.stop.signal_name}; servers deleted")
        if outcome.infrastructure_error:
            raise InfrastructureError(outcome.result.error or "the cloud failed the case")

    def runtest(self) -> None:
        assert self.result is not None  # set-up ran the case or raised
        if not self.result.passed:
            raise SlaMissed(failure_text(self.result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | Any:
        if isinstance(excinfo.value, SlaMissed | InfrastructureError):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"novamig case {self.name}"


def failure_text(case: CaseResult) -> str:
    """Every missed check with its numbers, then the migrations that did not complete."""
    lines = [f"SLA missed: {sla_message(check)}" for check in case.sla if not check.passed]
    lines += [
        f"migration of {m.server} {m.source_host} → {m.dest_host or '?'}: {m.status}"
        for m in case.migrations
        if m.status != "completed"
    ]
    if case.error:
        lines.append(f"case error: {case.error}")
    return "\n".join(lines) or "case failed"


def _opened(state: NovamigState) -> OpenedCloud:
    """The session's cloud, opened at the first call for every collected scenario's cases."""
    if state.opened is not None:
        return state.opened
    first = next(iter(state.scenarios.values()))
    plans = [p for s in state.scenarios.values() for p in s.plans]
    return open_cloud(state, plans, first.scenario.cloud)


def open_cloud(state: NovamigState, plans: list[CasePlan], scenario_cloud: str | None) -> OpenedCloud:
    """Open the cloud for `plans` as `novamig run` does and keep it in `state`; what went wrong
    (said on stderr by the runner) is kept in `error`, so every item using it errors with it."""
    opened = OpenedCloud(contextlib.ExitStack(), StopRequest())
    state.opened = opened
    state.run_dir.mkdir(parents=True, exist_ok=True)
    opened.log_handler = setup_logging(state.run_dir)
    choice = choose_cloud(state.cloud_flag, scenario_cloud)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            print(f"novamig: {choice.reason}", file=sys.stderr)
            opened.session = open_session(
                opened.stack,
                choice=choice,
                plans=plans,
                out_dir=state.run_dir,
                stop=opened.stop,
                run_id=new_run_id(),
            )
    except RunEnds:
        opened.error = said.getvalue().strip() or "the cloud could not be opened"
    sys.stderr.write(said.getvalue())
    return opened


def close_cloud(state: NovamigState) -> None:
    """Close what `open_cloud` opened: an own embedded cloud stops, its logs are kept."""
    if state.opened is None:
        return
    state.opened.stack.close()
    handler = state.opened.log_handler
    if handler is not None:
        logging.getLogger("novamig").removeHandler(handler)
        handler.close()


class ResultsMerger:
    """Where the session's results are written: the controller, or the only process without
    xdist. Each case arrives on its set-up report and joins its scenario's `Results`; the files are
    rewritten after every case, so a session stopped at any point leaves what was measured."""

    def __init__(self, state: NovamigState) -> None:
        self.state = state
        self.merged: dict[Path, Results] = {}
        self.write_errors: list[str] = []

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload: dict[str, Any] | None = getattr(report, REPORT_ATTR, None)
        if payload is None:
            return
        path = Path(payload["scenario"])
        loaded = self.state.scenarios[path]
        results = self.merged.get(path)
        if results is None:
            environment = (
                Environment.model_validate(payload["environment"])
                if payload["environment"]
                else Environment(
                    cloud=self.state.cloud_flag or "embedded",
                    novamig_version=__version__,
                    started_at=utc_now(),
                )
            )
            results = Results(scenario=loaded.as_dict, environment=environment, passed=False)
            self.merged[path] = results
        case = CaseResult.model_validate(payload["case"])
        order = {p.case_id: i for i, p in enumerate(loaded.plans)}
        cases = [c for c in results.cases if c.id != case.id] + [case]
        results.cases = sorted(cases, key=lambda c: order.get(c.id, len(order)))
        results.passed = len(results.cases) == len(order) and all(c.passed for c in results.cases)
        self._write(path, results)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """The final files: the end time, and whether the session was cut short."""
        for path, results in self.merged.items():
            results.interrupted = bool(session.shouldstop) or exitstatus == pytest.ExitCode.INTERRUPTED
            results.passed = results.passed and not results.interrupted
            results.environment.finished_at = utc_now()
            self._write(path, results)
        if self.write_errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR  # a CI job must not pass without its report

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for path in self.merged:
            where = self.state.results_dir(path)
            terminalreporter.write_line(f"novamig: results in {where / 'results.json'}")
            terminalreporter.write_line(f"novamig: HTML report: {where / 'index.html'}")
        for error in dict.fromkeys(self.write_errors):
            terminalreporter.write_line(f"novamig: could not write the report: {error}", red=True)

    def _write(self, path: Path, results: Results) -> None:
        """results.json first, then junit.xml and index.html (`write_outputs`' order). A failure
        is said at the end and fails the session, but does not stop it: raised from this hook it
        would end the session as an internal error and lose the items' outcomes."""
        where = self.state.results_dir(path)
        try:
            where.mkdir(parents=True, exist_ok=True)
            write_outputs(results, where)
        except Exception as exc:  # any renderer error; said in the summary
            self.write_errors.append(f"{where}: {type(exc).__name__}: {exc}")
