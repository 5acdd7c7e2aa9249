"""`novamig run` and `novamig cleanup`: argument handling, cloud set-up and exit codes.

Exit codes (`novamig.exitcodes`): 0 every SLA met; 1 an SLA or a migration failed; 2 bad input (scenario,
unknown cloud name); 3 infrastructure (cloud unreachable, preflight, boot failure); 130 stopped by
SIGINT/SIGTERM after cleaning up and writing what was measured.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novamig import __version__
from novamig.cloud.compute import Compute
from novamig.cloud.connection import (
    CloudChoice,
    choose_cloud,
    connect,
    known_clouds,
    quiet_sdk_logs,
)
from novamig.cloud.errors import CloudError, PreflightFailed
from novamig.cloud.host_policy import (
    SSH_HOSTS_ENV,
    EmbeddedHostPolicy,
    HostPolicyApplier,
    NoHostPolicy,
    SshHostPolicy,
    ssh_policy_from_file,
)
from novamig.cloud.preflight import Needs, PreflightReport, preflight
from novamig.cloud.resources import choose_networks, find_floating_network
from novamig.cloud.sweep import delete_found, find_tagged, select
from novamig.embedded import host_policy as embedded_host_policy
from novamig.embedded.config import GUEST_DRIVERS
from novamig.embedded.controller import EmbeddedCloud, options_from_env
from novamig.embedded.layout import DEFAULT_CLOUD_NAME
from novamig.exitcodes import ExitCode
from novamig.guest.build import ImageBuildError
from novamig.guest.ensure import build_missing_images, image_hint
from novamig.measure.collector_address import CollectorAddresses
from novamig.measure.contract import Probe
from novamig.measure.libvirt_jobstats import locate_with
from novamig.measure.locust import unsupported_reason
from novamig.measure.registry import CloudCapabilities, probes_for
from novamig.results import Environment, Results
from novamig.runner.console_summary import print_summary
from novamig.runner.fleet import CloudFleet
from novamig.runner.orphans import (
    Swept,
    confirm_live_run,
    live_runs,
    owned_temp_dir,
    restore_ssh_backups,
    sweep_local,
)
from novamig.runner.own_cloud import attach_embedded, embedded_nova_version, scale_mode, start_embedded
from novamig.runner.plan import CasePlan, plan_from_case, user_data_for
from novamig.runner.probes import with_heartbeat_collector
from novamig.runner.progress_display import LiveView
from novamig.runner.run import default_out_dir, new_run_id, run_plans, utc_now, write_outputs
from novamig.runner.signals import StopRequest, stop_on_signals
from novamig.runner.targets import TargetError
from novamig.scenario import Scenario, ScenarioInvalid, expand_cases, load_scenario, redacted_dict

log = logging.getLogger("novamig.runner")

SUPPORTED_WORKLOADS = frozenset({"idle", "memory", "locust", "script"})
"""Workload kinds this version applies to guests: idle, memory and script through the server's
user-data (the guest agent's settings; the user's command), locust through the Locust probe,
which also drives the load."""


def _err(msg: str) -> None:
    print(f"novamig: {msg}", file=sys.stderr)


def setup_logging(out_dir: Path) -> logging.Handler:
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "novamig.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger("novamig")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet_sdk_logs()
    return handler


def _workload_problems(plans: list[CasePlan]) -> list[str]:
    """What the scenario asks of the Locust workload that this novamig cannot do: said before
    anything is created, not after a case has booted its servers."""
    problems: list[str] = []
    for plan in plans:
        if plan.workload == "locust":
            why = unsupported_reason(plan.workload_spec.locust, plan.scenario_dir)
            if why is not None and why not in problems:
                problems.append(why)
    return problems


class BadScenario(Exception):
    """The scenario cannot be run as given; `problems` are the lines that say why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_plans(scenario: str, overrides: Sequence[str] = ()) -> tuple[Scenario, list[CasePlan]]:
    """The scenario at `scenario` and its cases' plans, checked for what this novamig can run
    before anything is created (`novamig run` and the pytest plugin both start here)."""
    try:
        sc = load_scenario(scenario, list(overrides))
    except ScenarioInvalid as exc:
        raise BadScenario([str(issue) for issue in exc.issues]) from exc
    except OSError as exc:
        raise BadScenario([f"novamig: {scenario}: {exc.strerror or exc}"]) from exc
    try:
        plans = [plan_from_case(c, Path(scenario).resolve().parent) for c in expand_cases(sc)]
    except (TargetError, ValueError) as exc:
        raise BadScenario([f"novamig: {scenario}: {exc}"]) from exc
    unsupported = sorted({p.workload for p in plans} - SUPPORTED_WORKLOADS)
    if unsupported:
        # Running such a case idle would report idle figures under a loaded case's name.
        raise BadScenario(
            [
                f"novamig: {scenario}: workload.kind {', '.join(unsupported)} is not applied to guests by "
                f"novamig {__version__} yet; use --set workload.kind=idle to measure idle guests"
            ]
        )
    problems = _workload_problems(plans)
    if problems:
        raise BadScenario([f"novamig: {scenario}: {problem}" for problem in problems])
    return sc, plans


def cmd_run(
    scenario: str,
    cloud: str | None,
    out: str | None,
    overrides: list[str],
    embedded_driver: str | None = None,
) -> int:
    """`embedded_driver`: the driver of the embedded cloud the run starts when no cloud is named
    (None: ``NOVAMIG_EMBEDDED_DRIVER``, else novamig's own); naming one with a cloud is bad input."""
    try:
        sc, plans = load_plans(scenario, overrides)
    except BadScenario as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    out_dir = Path(out) if out else default_out_dir(sc.name)
    unwritable = out_dir_problem(out_dir)
    if unwritable is not None:
        _err(unwritable.message)
        return int(unwritable.code)
    handler = setup_logging(out_dir)
    try:
        return _run(
            scenario_cloud=sc.cloud,
            scenario_dict=redacted_dict(sc),
            plans=plans,
            flag=cloud,
            out_dir=out_dir,
            embedded_driver=embedded_driver,
        )
    finally:
        logging.getLogger("novamig").removeHandler(handler)
        handler.close()


OUT_PROBE_BYTES = 1 << 20
"""Bytes the output-folder check writes (and removes): room for a typical run's results.json, JUnit,
HTML report and log, so a nearly full disk is refused up front rather than part-way through."""
OUT_PROBE_NAME = ".novamig-write-probe"


@dataclass(frozen=True)
class OutDirProblem:
    """Why `--out` cannot take a run's output, said before anything is created on the cloud."""

    message: str
    code: ExitCode


def out_dir_problem(out_dir: Path) -> OutDirProblem | None:
    """None when `out_dir` can be created and written with `OUT_PROBE_BYTES`; else what is wrong.

    A run that only finds out at the end that its folder is read-only or its disk is full has booted
    servers and migrated them for nothing; so the folder is made and a probe file written, flushed
    to disk and removed before the cloud is touched. A folder the user named wrongly (read-only,
    not a directory, no permission) is bad input (2); a full disk is the machine's (3).
    """
    probe = out_dir / OUT_PROBE_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * OUT_PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        what = "no space left for the run's output" if full else "cannot write the run's output"
        return OutDirProblem(
            f"output folder {out_dir}: {what} ({exc.strerror or exc}); nothing was started",
            ExitCode.INFRASTRUCTURE if full else ExitCode.BAD_INPUT,
        )
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return None


class RunEnds(Exception):
    """The run cannot go on; what went wrong was said on stderr, `code` is the exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class _Cloud:
    """The cloud a run measures, connected and preflighted."""

    name: str
    embedded: EmbeddedCloud | None  # the embedded cloud, started by the run or attached; None: another
    compute: Compute
    conn: Any  # openstacksdk's Connection
    report: PreflightReport
    networks: str | list[dict[str, str]]


@dataclass(frozen=True)
class RunSession:
    """A cloud opened for cases: connected, preflighted, its host policy and fleet ready.

    What `novamig run` and the pytest plugin share, so a case collected by pytest runs exactly as
    one of `novamig run` does: `run_case` with these parts.
    """

    run_id: str
    cloud: _Cloud
    environment: Environment
    fleet: CloudFleet
    host_policy: HostPolicyApplier
    capabilities: CloudCapabilities
    collectors: CollectorAddresses | None = None

    def prepare(self, plan: CasePlan) -> CasePlan:
        """`plan` with what this cloud decides for it: the UDP heartbeat collector's address when
        the scenario names none (`novamig.runner.probes.with_heartbeat_collector`). The fleet
        applies it too, so the user-data, the probes and the wait for the guests agree."""
        return with_heartbeat_collector(plan, self.capabilities, self.collectors)

    def probes(self, plan: CasePlan) -> list[Probe]:
        """The probes `novamig.measure.registry.probes_for` picks for `plan` on this cloud."""
        return probes_for(self.prepare(plan), self.capabilities)


def open_session(
    stack: contextlib.ExitStack,
    *,
    choice: CloudChoice,
    plans: Sequence[CasePlan],
    out_dir: Path,
    stop: StopRequest,
    run_id: str,
    embedded: Mapping[str, Any] | None = None,
) -> RunSession:
    """The cloud `choice` names (or an own embedded cloud, started with `embedded`'s options,
    default `options_from_env`) opened for `plans`; everything it opens (connection, fleet, SSH
    key, an own cloud) closes with `stack`. RunEnds when it cannot: what went wrong was said on
    stderr."""
    started_at = utc_now()
    options = dict(embedded) if embedded is not None else options_from_env()
    cloud = _open_cloud(stack, choice, plans, out_dir, stop, embedded_options=options)
    print(
        f"novamig: run {run_id} on {cloud.name}: compute {cloud.report.max_microversion}, "
        f"hosts {', '.join(cloud.report.usable_hosts)}; {len(plans)} case(s); output {out_dir}",
        file=sys.stderr,
    )
    applier = _host_policy(cloud, plans)
    environment = Environment(
        cloud=cloud.name,
        nova_version=embedded_nova_version() if cloud.embedded is not None else None,
        max_microversion=str(cloud.report.max_microversion),
        compute_hosts=cloud.report.usable_hosts,
        hypervisor_versions=cloud.report.hypervisor_versions,
        scale_mode=scale_mode(cloud.embedded),
        novamig_version=__version__,
        started_at=started_at,
    )
    # The run's private SSH key lives outside the report folder (CI uploads that) and goes with
    # the run.
    key_dir = owned_temp_dir(f"novamig-{run_id}-ssh-")
    stack.callback(shutil.rmtree, key_dir, True)
    capabilities = _capabilities(cloud, applier, out_dir)
    collectors = CollectorAddresses(cloud.conn, cloud.networks, capabilities.guest_netns)
    fleet = CloudFleet(
        cloud.compute,
        user_data=user_data_for,
        run_id=run_id,
        image_ids=cloud.report.image_ids,
        networks=cloud.networks,
        conn=cloud.conn,
        key_dir=key_dir,
        guest_netns=cloud.embedded.guest_netns if cloud.embedded is not None else None,
        prepare=lambda plan: with_heartbeat_collector(plan, capabilities, collectors),
    )
    stack.callback(fleet.close)
    return RunSession(run_id, cloud, environment, fleet, applier, capabilities, collectors)


def _run(
    *,
    scenario_cloud: str | None,
    scenario_dict: dict[str, Any],
    plans: Sequence[CasePlan],
    flag: str | None,
    out_dir: Path,
    embedded_driver: str | None = None,
) -> int:
    run_id = new_run_id()
    stop = StopRequest()
    choice = choose_cloud(flag, scenario_cloud)
    if embedded_driver is not None and choice.name is not None:
        _err(
            f"--embedded-driver chooses the driver of the cloud a run starts itself, but this run "
            f"goes to cloud {choice.name!r} (from {choice.source}); start an embedded cloud "
            f"with `novamig cloud up --driver {embedded_driver}` and name it with --cloud instead"
        )
        return int(ExitCode.BAD_INPUT)
    embedded = options_from_env()
    if embedded_driver is not None:
        embedded["driver"] = embedded_driver
    mode = f" (driver {embedded['driver']})" if choice.name is None else ""
    print(f"novamig: run {run_id}: {choice.reason}{mode}", file=sys.stderr)  # before the cloud is touched
    started_at = utc_now()
    with stop_on_signals(stop), contextlib.ExitStack() as stack:
        try:
            session = open_session(
                stack,
                choice=choice,
                plans=plans,
                out_dir=out_dir,
                stop=stop,
                run_id=run_id,
                embedded=embedded,
            )
        except RunEnds as end:
            if end.code == ExitCode.INTERRUPTED:
                _write_interrupted(scenario_dict, choice.name or DEFAULT_CLOUD_NAME, started_at, out_dir)
            return end.code
        with LiveView() as view:
            outcome = run_plans(
                plans,
                scenario=scenario_dict,
                environment=session.environment,
                api=session.cloud.compute,
                fleet=session.fleet,
                hosts=session.cloud.report.usable_hosts,
                host_policy=session.host_policy,
                probes_for=session.probes,
                stop=stop,
                view=view,
                out_dir=out_dir,
            )
        session.fleet.close()
        if session.fleet.leftovers:
            _err("could not delete: " + "; ".join(session.fleet.leftovers))
        print_summary(outcome.results, out_dir, sys.stderr)
        return outcome.exit_code


def _build_images(plans: Sequence[CasePlan], driver: str) -> None:
    """The run's own embedded cloud serves the novamig images found in the cache when it starts:
    build the missing ones first (`novamig.guest.ensure`), with progress, instead of failing
    preflight. Only the drivers that boot guests need them (Nova's fake driver boots no image)."""
    if driver not in GUEST_DRIVERS:
        return
    try:
        built = build_missing_images([p.image for p in plans], _err)
    except ImageBuildError as exc:
        _err(f"a guest image the run needs could not be built: {exc}")
        raise RunEnds(int(ExitCode.INFRASTRUCTURE)) from exc
    if built:
        _err(f"built {', '.join(built)}: in the image cache for every later run")


def _write_interrupted(scenario: dict[str, Any], cloud: str, started_at: dt.datetime, out_dir: Path) -> None:
    """Stopped before the cloud was ready: nothing was measured, but the output says so, so a
    stopped run always leaves a valid results.json (`interrupted`, no cases) for whoever reads it."""
    environment = Environment(
        cloud=cloud, novamig_version=__version__, started_at=started_at, finished_at=utc_now()
    )
    write_outputs(
        Results(scenario=scenario, environment=environment, passed=False, interrupted=True), out_dir
    )


def _open_cloud(
    stack: contextlib.ExitStack,
    choice: CloudChoice,
    plans: Sequence[CasePlan],
    out_dir: Path,
    stop: StopRequest,
    *,
    embedded_options: Mapping[str, Any],
) -> _Cloud:
    """The chosen cloud (the run's own embedded cloud, started with `embedded_options`, when none
    is named), connected and preflighted for what the plans need; its connection (and an own
    cloud) closes with `stack`."""
    embedded: EmbeddedCloud | None
    own_clouds_yaml: Path | None = None  # the run's own cloud: its clouds.yaml and nothing else
    if choice.name is None:
        _build_images(plans, str(embedded_options["driver"]))
        try:
            embedded = start_embedded(stack, out_dir, embedded_options)
        except Exception as exc:  # the embedded cloud's start errors are infrastructure
            _err(f"the embedded cloud did not start: {exc}")
            raise RunEnds(int(ExitCode.INFRASTRUCTURE)) from exc
        name, own_clouds_yaml = embedded.cloud_name, embedded.clouds_yaml
    else:
        name, embedded = choice.name, attach_embedded(choice.name)
    if stop.is_set():
        raise RunEnds(int(ExitCode.INTERRUPTED))
    try:
        conn = connect(name, own_clouds_yaml)
        stack.callback(conn.close)
        compute = Compute(conn)
        needs = Needs(
            servers=max(p.servers for p in plans),
            images=tuple(dict.fromkeys(p.image for p in plans)),
            flavors=tuple(dict.fromkeys(p.flavor for p in plans)),
            hosts_named=tuple(sorted({h for p in plans for h in p.target.named_hosts})),
        )
        report = preflight(conn, compute, needs)
        networks = choose_networks(conn, plans[0].network)
        for floating in dict.fromkeys(p.floating_ip_network for p in plans if p.floating_ip_network):
            find_floating_network(conn, floating)  # a missing or ambiguous network stops the run here
    except PreflightFailed as exc:
        _err(f"cloud {name}: preflight failed:")
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
            hint = image_hint(problem, name, embedded=embedded is not None)
            if hint is not None:
                print(f"    {hint}", file=sys.stderr)
        raise RunEnds(int(ExitCode.INFRASTRUCTURE)) from exc
    except CloudError as exc:
        _err(str(exc))
        raise RunEnds(exc.exit_code) from exc
    for note in report.notes:
        _err(f"note: {note}")
    return _Cloud(name, embedded, compute, conn, report, networks)


def _host_policy(cloud: _Cloud, plans: Sequence[CasePlan]) -> HostPolicyApplier:
    """How the run sets the hosts' options: through the embedded cloud, over SSH (the hosts file
    NOVAMIG_SSH_HOSTS names), or not at all — which a scenario that sets host options cannot run."""
    applier: HostPolicyApplier
    if cloud.embedded is not None:
        applier = EmbeddedHostPolicy(
            cloud.embedded, policy_file=functools.partial(embedded_host_policy.path, cloud.embedded.workdir)
        )
    elif os.environ.get(SSH_HOSTS_ENV):
        try:
            applier = ssh_policy_from_file(os.environ[SSH_HOSTS_ENV], cloud.compute)
        except CloudError as exc:
            _err(str(exc))
            raise RunEnds(exc.exit_code) from exc
    else:
        applier = NoHostPolicy(
            f"on an external cloud, host policies need SSH access to the compute hosts: "
            f"set {SSH_HOSTS_ENV} to a YAML file mapping each host to user@address"
        )
    if isinstance(applier, NoHostPolicy):
        wanted = sorted({k for p in plans for k in p.host_options})
        if wanted:
            _err(f"the scenario sets host options ({', '.join(wanted)}) but {applier.why}")
            raise RunEnds(int(ExitCode.BAD_INPUT))
    return applier


def _capabilities(cloud: _Cloud, applier: HostPolicyApplier, out_dir: Path) -> CloudCapabilities:
    """What the cloud offers the probes (`novamig.measure.registry.probes_for` picks by it)."""
    embedded = cloud.embedded
    return CloudCapabilities(
        probe_dir=out_dir.resolve() / "probes",
        embedded_workdir=Path(embedded.workdir) if embedded is not None else None,
        guest_netns=embedded.guest_netns if embedded is not None else None,
        ssh_hosts=applier.targets if isinstance(applier, SshHostPolicy) else None,
        locate_domain=locate_with(cloud.compute),
        no_guests=embedded.no_guests if embedded is not None else None,
        libvirt_hosts=embedded.libvirt_hosts if embedded is not None else None,
    )


def _cleanup_cloud(cloud: str | None, machine_swept: bool) -> str | int:
    """The cloud `cleanup` sweeps, or the exit code when there is none to sweep."""
    name = cloud or os.environ.get("OS_CLOUD")
    if name:
        return name
    try:
        names, _ = known_clouds()
    except CloudError as exc:
        _err(str(exc))
        return exc.exit_code
    if DEFAULT_CLOUD_NAME in names:
        return DEFAULT_CLOUD_NAME
    if machine_swept:  # a killed run's own cloud was all there was to clean
        return int(ExitCode.OK)
    _err(f"name a cloud with --cloud or OS_CLOUD; known clouds: {', '.join(names) or 'none'}")
    return int(ExitCode.BAD_INPUT)


def _sweep_ssh_hosts(compute: Compute, yes: bool) -> Swept:
    """Compute configuration a killed run left changed on the hosts ``NOVAMIG_SSH_HOSTS`` names."""
    hosts_file = os.environ.get(SSH_HOSTS_ENV)
    if not hosts_file:
        return Swept(0, [])
    return restore_ssh_backups(ssh_policy_from_file(hosts_file, compute), yes, sys.stdout)


def cmd_cleanup(cloud: str | None, yes: bool, run: str | None = None) -> int:
    # This machine first: a SIGKILLed run's own embedded cloud has no clouds.yaml entry to name.
    swept = sweep_local(yes, sys.stdout)
    name = _cleanup_cloud(cloud, yes and swept.found > 0)
    if isinstance(name, int):
        return int(ExitCode.INFRASTRUCTURE) if name == 0 and swept.left else name
    try:
        conn = connect(name)
        try:
            compute = Compute(conn)
            hosts = _sweep_ssh_hosts(compute, yes)
            swept = Swept(swept.found + hosts.found, swept.left + hosts.left)
            found = [f for f in find_tagged(conn, compute) if run is None or f.run_id == run]
            if not found:
                print(f"cloud {name}: nothing tagged by novamig" + (f" for run {run}" if run else ""))
                return int(ExitCode.INFRASTRUCTURE) if swept.left else int(ExitCode.OK)
            print(f"cloud {name}: {len(found)} resource(s) tagged by novamig:")
            for item in found:
                print(f"  {item}")
            if not yes:
                print("dry run: nothing deleted (add --yes to delete)")
                return int(ExitCode.OK)
            # another run still going keeps its resources unless confirmed (`sweep.select`)
            chosen = select(found, run=run, live=live_runs(), confirm=confirm_live_run(sys.stdin, sys.stdout))
            found = chosen.delete
            leftovers = delete_found(conn, compute, found)
        finally:
            conn.close()
    except CloudError as exc:
        _err(str(exc))
        return exc.exit_code
    for left in leftovers:
        _err(f"could not delete {left}")
    print(f"deleted {len(found) - len(leftovers)} of {len(found)}")
    return int(ExitCode.INFRASTRUCTURE) if leftovers or swept.left else int(ExitCode.OK)
