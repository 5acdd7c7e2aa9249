"""One case: host policy → provision → probes → migrate → collect → clean.

`run_case` owns the order and the guarantees; the cloud is reached through two small protocols
(`ServerProvisioner` for servers, `migration_watcher.MigrationApi` for migrations), so the same
loop is exercised by the unit tests with an in-memory cloud and by the end-to-end tests with the
embedded one.

Concurrency: each server's migrations run one after another (a server is in at most one
migration); up to `concurrency` servers migrate at once, in a bounded thread pool. The main
thread only waits, so signals are handled promptly, and a stop request ends every sequence at its
next step: watchers abort migrations in flight, no new one starts, the fleet is deleted.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import resource
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from novamig.cloud.compute import Compute
from novamig.cloud.errors import CloudError
from novamig.cloud.host_policy import HostPolicyApplier, applied
from novamig.measure.contract import CapturesEachMigration, CaseClock, Probe, ServerInfo
from novamig.measure.sla import evaluate
from novamig.results import CaseResult, Event, MigrationRecord, PerProbe, ProbeCost
from novamig.runner.migration_failure import explain_failure
from novamig.runner.migration_watcher import FAST_POLL_S, POLL_S, MigrationApi, MigrationWatcher
from novamig.runner.plan import CasePlan
from novamig.runner.poller import CasePoller, ComputeBatches
from novamig.runner.probes import FIGURES, apply_figures, probes_set_up
from novamig.runner.progress_display import LiveView
from novamig.runner.signals import StopRequest
from novamig.runner.targets import TargetChooser, TargetError

log = logging.getLogger(__name__)

WAIT_TICK_S = 0.2
PROBE_TAIL_S = 1.0  # probes keep running this long after the last migration ends


class ServerProvisioner(Protocol):
    """Boots a case's servers and deletes them when the block ends, whatever happens (the cloud's
    is `fleet.CloudFleet`; the unit tests have an in-memory one)."""

    @property
    def servers_tag(self) -> str:
        """A tag every server it boots carries and no other run's server does: the batched
        poller lists only these, not every novamig server of the project."""
        ...

    def provision(
        self, plan: CasePlan, case_index: int, boot_host: str | None, stop: StopRequest
    ) -> contextlib.AbstractContextManager[list[ServerInfo]]: ...


class CaseAborted(Exception):
    """The case could not run to its end; the message goes into the case's `error`."""


@dataclass(frozen=True)
class CaseOutcome:
    result: CaseResult
    infrastructure_error: bool  # the cloud failed us (boot failure, unreachable): exit 3, not 1


def run_case(
    plan: CasePlan,
    index: int,
    *,
    api: MigrationApi,
    fleet: ServerProvisioner,
    hosts: Sequence[str],
    host_policy: HostPolicyApplier,
    probes: Sequence[Probe],
    stop: StopRequest,
    view: LiveView,
    poll_s: float | None = None,
) -> CaseOutcome:
    clock = CaseClock()
    infrastructure = False
    records: list[tuple[str, int | None, MigrationRecord]] = []
    error: str | None = None
    noise_floor = PerProbe()
    costs: dict[str, ProbeCost] = {}
    locust: dict[str, Any] = {}
    migration_cpu: float | None = None
    try:
        chooser = TargetChooser(plan.target, hosts, ping_pong=plan.ping_pong)
        with applied(host_policy, hosts, plan.host_options):
            view.message("booting servers")
            with fleet.provision(plan, index, chooser.boot_host(), stop) as servers:
                for probe in probes:
                    probe.start(servers, clock)
                try:
                    noise_window = _noise_window(plan, clock, stop, view)
                    view.message(f"{len(servers)} server(s) ACTIVE; migrating")
                    cpu_before = process_cpu_s()
                    try:
                        _migrate_all(
                            plan,
                            servers=servers,
                            chooser=chooser,
                            api=api,
                            clock=clock,
                            stop=stop,
                            view=view,
                            records=records,
                            poll_s=poll_s,
                            probes=probes,
                            servers_tag=fleet.servers_tag,
                        )
                    finally:
                        migration_cpu = process_cpu_s() - cpu_before
                    # the probes' windows reach past each migration's end (the destination's
                    # first minute of work shows post-copy faults and late stalls)
                    stop.event.wait(PROBE_TAIL_S)
                finally:
                    for probe in probes:
                        with contextlib.suppress(Exception):
                            probe.stop()
                _noise_floors(probes, noise_window, noise_floor)
                for server_id, migration_id, record in records:
                    apply_figures(record, server_id, migration_id, probes)
                _noise_floors(probes, noise_window, noise_floor)  # those that needed the figures
                _case_figures(probes, costs, locust, plan.measure.probe_cpu_budget_percent)
                view.message("deleting servers")
    except (CloudError, TargetError, CaseAborted, RuntimeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        infrastructure = isinstance(exc, CloudError) and not stop.is_set()
        log.error("case %s: %s", plan.case_id, error)
    if stop.is_set() and error is None:
        error = f"interrupted ({stop.signal_name or 'stop requested'})"
    migrations = sorted((r for _, _, r in records), key=lambda r: r.requested_at)
    total = locust.get("total")
    ratio = total.get("failure_ratio") if isinstance(total, dict) else None
    checks = evaluate(
        plan.sla,
        migrations,
        abort_expected=plan.abort_expected,
        locust_failure_ratio=float(ratio) if isinstance(ratio, int | float) else None,
        probes=probes_set_up(probes),
        noise_floor_ms=noise_floor.model_dump(),
    )
    result = CaseResult(
        id=plan.case_id,
        params=plan.params,
        repetition=plan.repetition,
        passed=error is None and all(c.passed for c in checks),
        sla=checks,
        migrations=migrations,
        error=error,
        noise_floor_ms=noise_floor,
        probe_cost=costs,
        locust=locust or None,
        duration_s=clock.now(),
        migration_cpu_s=None if migration_cpu is None else round(migration_cpu, 3),
        sla_reasons=list(plan.sla_reasons),
    )
    return CaseOutcome(result, infrastructure)


def process_cpu_s() -> float:
    """The runner process's CPU seconds so far, user and system, all its threads: the watching
    of a case's migrations is apart from the start-up (the interpreter, openstacksdk), the boot
    and the delete, which a run pays whatever its number of migrations."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _noise_window(
    plan: CasePlan, clock: CaseClock, stop: StopRequest, view: LiveView
) -> tuple[float, float] | None:
    """Probes running, nothing migrating: what each probe sees now is its noise floor."""
    seconds = plan.measure.noise_floor_s
    if seconds <= 0:
        return None
    view.message(f"measuring the noise floor ({seconds:g} s, no migration)")
    start = clock.now()
    stop.event.wait(seconds)
    return (start, clock.now())


def _noise_floors(
    probes: Sequence[Probe], noise_window: tuple[float, float] | None, noise_floor: PerProbe
) -> None:
    """Asked before the figures, since a probe judges stalls against its noise floor; asked again
    afterwards of a probe that had none then (the embedded cloud's guest figure is read from the
    per-migration files, so it knows its noise floor only once it has read them)."""
    if noise_window is None:
        return
    for probe in probes:
        if probe.name not in FIGURES:
            continue
        if getattr(noise_floor, probe.name) is not None:
            continue
        try:
            setattr(noise_floor, probe.name, probe.noise_floor(*noise_window))
        except Exception:
            log.exception("probe %s: noise floor failed", probe.name)


#: Probes whose CPU is the point, not a side effect: the load generator.
UNBUDGETED_PROBES = frozenset({"locust"})


def _case_figures(
    probes: Sequence[Probe], costs: dict[str, ProbeCost], locust: dict[str, Any], budget_percent: float
) -> None:
    """Case-level figures of each probe; a probe that fails here loses its figure, not the case.
    Each measuring probe's CPU is held to the budget: over it, the cost says so and the log warns."""
    for probe in probes:
        try:
            cost = probe.cost()
            if cost is not None:
                if probe.name not in UNBUDGETED_PROBES:
                    over = cost.cpu_percent > budget_percent
                    cost = cost.model_copy(update={"budget_percent": budget_percent, "over_budget": over})
                    if over:
                        log.warning(
                            "probe %s used %.1f %% of a core, over its budget of %g %%: its figures "
                            "may include its own disturbance", probe.name, cost.cpu_percent, budget_percent,
                        )  # fmt: skip
                costs[probe.name] = cost
            stats = probe.case_stats()
            if stats is not None and probe.name == "locust":
                locust.update(stats)
        except Exception:
            log.exception("probe %s: case figures failed", probe.name)


def migrate_once(
    plan: CasePlan,
    *,
    server: ServerInfo,
    source_host: str | None,
    destination: str | None,
    api: MigrationApi,
    clock: CaseClock,
    stop: StopRequest,
    view: LiveView,
    poll_s: float | None,
    probes: Sequence[Probe] = (),
    poller: CasePoller | None = None,
) -> tuple[MigrationRecord, int | None]:
    """One live migration of `server`, watched to its end under the plan's policy, and captured by
    the probes that record each migration: the record and Nova's migration id. A case's sequences
    and the pytest plugin's `novamig_migrate` fixture both migrate through here; with the case's
    `poller` the migration is read by its batched reads, else it polls on its own."""
    watcher = MigrationWatcher(
        api,
        clock,
        server_id=server.id,
        server_name=server.name,
        source_host=source_host,
        destination=destination,
        block_migration=plan.block_migration,
        policy=plan.policy,
        stop=stop.event,
        on_progress=view.progress,
        poll_s=poll_s or POLL_S,
        fast_poll_s=poll_s or FAST_POLL_S,
    )
    record = watcher.run() if poller is None else poller.watch(watcher)
    # Read here, in the migration's own thread, not in the case poller's: a few calls per failure;
    # not once the run is stopping, whose cleanup must not wait on them.
    if not stop.is_set():
        hosts = None if destination is None else (source_host, destination, record.dest_host)
        explain_failure(api, record, server.id, watcher.request_id, clock, hosts=hosts)
    for probe in probes:
        if isinstance(probe, CapturesEachMigration):
            try:
                probe.capture(record, server.id, watcher.migration_id)
            except Exception:  # the probe loses this figure; the run goes on
                log.exception("probe %s: capture failed", probe.name)
    return record, watcher.migration_id


def _migrate_all(
    plan: CasePlan,
    *,
    servers: Sequence[ServerInfo],
    chooser: TargetChooser,
    api: MigrationApi,
    clock: CaseClock,
    stop: StopRequest,
    view: LiveView,
    records: list[tuple[str, int | None, MigrationRecord]],
    poll_s: float | None,
    servers_tag: str,
    probes: Sequence[Probe] = (),
) -> None:
    lock = threading.Lock()
    total = chooser.migrations_per_server(plan.count)
    failures: list[BaseException] = []
    poller = case_poller(api, clock, poll_s, servers_tag)

    def sequence(server: ServerInfo) -> None:
        current, previous = server.host, None
        for k in range(total):
            if stop.is_set():
                return
            if k > 0 and plan.interval_s > 0 and stop.event.wait(plan.interval_s):
                return
            view.server(server.name, "requesting", k + 1, total)
            record, migration_id = migrate_once(
                plan,
                server=server,
                source_host=current,
                destination=chooser.destination(current, previous),
                api=api,
                clock=clock,
                stop=stop,
                view=view,
                poll_s=poll_s,
                probes=probes,
                poller=poller,
            )
            with lock:
                records.append((server.id, migration_id, record))
            view.server(server.name, "lost" if record.server_lost else record.status, k + 1, total)
            if record.server_lost:
                _skip_the_rest(record, total - k - 1, clock)
                return
            if record.status == "completed":
                previous, current = current, record.dest_host
            else:
                try:
                    current = api.server(server.id).host or current
                except CloudError as exc:
                    record.events.append(Event(t=clock.now(), what=f"cannot read the server's host: {exc}"))

    pool = cf.ThreadPoolExecutor(max_workers=max(1, plan.concurrency), thread_name_prefix="novamig-mig")
    with poller or contextlib.nullcontext():
        try:
            futures = [pool.submit(_guard(sequence, failures), s) for s in servers]
            pending = set(futures)
            while pending:  # short waits: the main thread stays responsive to signals
                _, pending = cf.wait(pending, timeout=WAIT_TICK_S)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if failures:
        raise CaseAborted(f"migration worker failed: {type(failures[0]).__name__}: {failures[0]}")


def _skip_the_rest(record: MigrationRecord, left: int, clock: CaseClock) -> None:
    """A lost server's remaining migrations are not requested: each would fail in turn (Nova
    refuses a server in ERROR, a guest that is gone cannot move), hiding the one failure that
    matters. The lost migration's record says how many were skipped."""
    if left <= 0:
        return
    what = f"{left} further migration(s) of this server skipped: the server is lost"
    record.events.append(Event(t=clock.now(), what=what))
    log.warning("%s: %s", record.server, what)


def case_poller(
    api: MigrationApi, clock: CaseClock, poll_s: float | None, servers_tag: str
) -> CasePoller | None:
    """The case's one batched poller (`novamig.runner.poller`) on a Nova that lists live migrations
    by ``changes-since`` (2.59+); None elsewhere (an older Nova, the unit tests' in-memory cloud),
    where each migration polls on its own. It lists the servers tagged `servers_tag` (the run's
    own: other runs' servers on the same cloud would only lengthen each listing)."""
    if not isinstance(api, Compute) or not ComputeBatches.supported(api):
        return None
    return CasePoller(
        ComputeBatches(api, servers_tag),
        poll_s=poll_s or POLL_S,
        fast_poll_s=poll_s or FAST_POLL_S,
        now=clock.now,
    )


def _guard(fn: Callable[[ServerInfo], None], failures: list[BaseException]) -> Callable[[ServerInfo], None]:
    def run(server: ServerInfo) -> None:
        try:
            fn(server)
        except Exception as exc:
            log.exception("migration sequence of %s failed", server.name)
            failures.append(exc)

    return run
