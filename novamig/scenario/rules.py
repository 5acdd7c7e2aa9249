"""Cross-field rules: what no single field's type can say.

Each rule names the key it is about (and, when that key took its default, the keys to point at
instead), so `novamig validate` can put the cursor on the line to change. Rules run from the model
validators (`check_policy`, `check_scenario`…), so a `Scenario` that exists is a scenario that
passed them, whether it came from a file, an override or a matrix cell.

This module sits below the models: it imports them only for type checking and reaches a model's
class through the instance it is given (`type(s)`), so the models can call it at import time
without an import cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from novamig.scenario.cellsla import entry_problem, entry_problems, matching_entries
from novamig.scenario.datapaths import PathConflict, split_key_path
from novamig.scenario.errors import problems_from
from novamig.scenario.fieldpaths import check_matrix_key
from novamig.scenario.issues import KeyPath, format_key_path
from novamig.scenario.matrix import MAX_CASES, case_count, cell_data, cells
from novamig.scenario.problems import Problem, RuleViolations

if TYPE_CHECKING:
    from novamig.scenario.models import Migration, MigrationPolicy, Scenario, Sla, Workload

#: Locust files shipped with novamig, usable as `locustfile: builtin:NAME`.
BUILTIN_LOCUSTFILES: tuple[str, ...] = ("web",)

#: Guest RAM that the kernel and the agent need besides the dirtied working set.
GUEST_RAM_OVERHEAD_MIB = 64


def _policy(p: MigrationPolicy) -> Iterator[Problem]:
    if p.abort_after_s is not None and p.abort_after_s >= p.timeout_s:
        yield Problem(
            ("abort_after_s",),
            f"must be below `timeout_s` ({p.timeout_s:g} s), or the migration times out before it is aborted",
            alt_paths=(("timeout_s",),),
        )
    if p.post_copy_after_s is not None and p.post_copy_after_s >= p.timeout_s:
        yield Problem(
            ("post_copy_after_s",),
            f"must be below `timeout_s` ({p.timeout_s:g} s), or post-copy never starts",
            alt_paths=(("timeout_s",),),
        )
    if (
        p.post_copy_after_s is not None
        and p.abort_after_s is not None
        and p.post_copy_after_s >= p.abort_after_s
    ):
        yield Problem(
            ("post_copy_after_s",),
            f"must be below `abort_after_s` ({p.abort_after_s:g} s), or post-copy never starts",
            alt_paths=(("abort_after_s",),),
        )


def _migration(m: Migration) -> Iterator[Problem]:
    if m.target.startswith("drain:") and m.count < 1:
        yield Problem(
            ("count",),
            f"`target: {m.target}` moves every server away: it needs `count` of at least 1",
            alt_paths=(("target",),),
        )
    if m.ping_pong and (m.target.startswith("drain:") or m.target == "round-robin"):
        yield Problem(
            ("ping_pong",),
            f"cannot be combined with `target: {m.target}`; ping-pong moves each server back and forth "
            "between two hosts",
            alt_paths=(("target",),),
        )


def _workload(w: Workload) -> Iterator[Problem]:
    rate = w.memory.dirty_rate_mib_s
    if w.kind == "memory" and rate <= 0:
        yield Problem(
            ("memory", "dirty_rate_mib_s"),
            "must be above 0 with `kind: memory` (a memory workload that writes nothing is `idle`)",
            alt_paths=(("kind",),),
        )
    if w.kind == "idle" and rate > 0:
        yield Problem(
            ("memory", "dirty_rate_mib_s"),
            "must be 0 with `kind: idle`; use `kind: memory` to dirty memory",
            alt_paths=(("kind",),),
        )
    if w.kind == "script" and w.script is None:
        yield Problem(
            ("script",), "is required with `kind: script` (`script: {command: ...}`)", alt_paths=(("kind",),)
        )
    name = w.locust.locustfile.removeprefix("builtin:")
    if w.locust.locustfile.startswith("builtin:") and name not in BUILTIN_LOCUSTFILES:
        choices = ", ".join(f"`builtin:{b}`" for b in BUILTIN_LOCUSTFILES)
        yield Problem(
            ("locust", "locustfile"), f"unknown built-in Locust file `{name}`; novamig ships {choices}"
        )


def _sla(s: Sla) -> Iterator[Problem]:
    for key, limits, unit in (("downtime_ms", s.downtime_ms, "ms"), ("duration_s", s.duration_s, "s")):
        if limits.max is not None and limits.p95 is not None and limits.p95 > limits.max:
            yield Problem(
                (key, "p95"),
                f"the 95th percentile cannot exceed `max` ({limits.max:g} {unit})",
                alt_paths=((key, "max"),),
            )


def _uses_memory(s: Scenario) -> bool:
    return s.workload.kind == "memory" or s.workload.memory.dirty_rate_mib_s > 0


def _scenario(s: Scenario) -> Iterator[Problem]:
    yield from _scenario_fleet(s)
    yield from _scenario_measure(s)
    yield from _scenario_host_policy(s)


def _scenario_fleet(s: Scenario) -> Iterator[Problem]:
    if s.migration.concurrency > s.fleet.count:
        yield Problem(
            ("migration", "concurrency"),
            f"cannot exceed `fleet.count` ({s.fleet.count}): a server is in at most one migration at a time",
            alt_paths=(("fleet", "count"),),
        )
    flavor = s.fleet.flavor
    if not isinstance(flavor, str) and _uses_memory(s):  # a size, not an existing flavor's name
        room = flavor.ram_mb - GUEST_RAM_OVERHEAD_MIB
        if s.workload.memory.working_set_mib > room:
            yield Problem(
                ("workload", "memory", "working_set_mib"),
                f"must fit in the guest: at most `fleet.flavor.ram_mb` ({flavor.ram_mb}) minus "
                f"{GUEST_RAM_OVERHEAD_MIB} MiB for the kernel and agent = {room} MiB",
                alt_paths=(("fleet", "flavor", "ram_mb"), ("workload", "kind")),
            )
    if s.workload.kind == "locust" and s.workload.locust.where == "guest" and s.fleet.image == "novamig-tiny":
        yield Problem(
            ("workload", "locust", "where"),
            "Locust inside the guest needs an image with Python and Locust (`fleet.image: novamig-full`); "
            "`novamig-tiny` has only the agent",
            alt_paths=(("fleet", "image"), ("workload", "kind")),
        )


def _scenario_measure(s: Scenario) -> Iterator[Problem]:
    probes = s.measure.probes
    for i, probe in enumerate(probes):
        if probe in probes[:i]:
            yield Problem(("measure", "probes", i), f"`{probe}` is listed twice")
        if probe == "locust" and s.workload.kind != "locust":
            yield Problem(
                ("measure", "probes", i),
                f"the `locust` probe needs `workload.kind: locust` (it is `{s.workload.kind}`)",
            )
    downtime = s.sla.downtime_ms
    if downtime.probe not in probes:
        yield Problem(
            ("sla", "downtime_ms", "probe"),
            f"`{downtime.probe}` is not among `measure.probes` ({', '.join(probes)}): nothing measures it",
            alt_paths=(("sla", "downtime_ms"), ("measure", "probes")),
        )
    rate_key = {"guest": "heartbeat_hz", "network": "network_probe_hz"}.get(downtime.probe)
    if rate_key is not None:
        hz: int = getattr(s.measure, rate_key)
        resolution_ms = 1000 / hz
        for limit_key in ("max", "p95"):
            limit = getattr(downtime, limit_key)
            if limit is not None and limit <= resolution_ms:
                yield Problem(
                    ("sla", "downtime_ms", limit_key),
                    f"{limit:g} ms cannot be judged by the {downtime.probe} probe at `measure.{rate_key}` "
                    f"{hz} (resolution {resolution_ms:g} ms); raise the rate or the limit",
                    alt_paths=(("measure", rate_key),),
                )
    if s.sla.locust_failure_ratio.max is not None and s.workload.kind != "locust":
        yield Problem(
            ("sla", "locust_failure_ratio", "max"),
            f"needs `workload.kind: locust` (it is `{s.workload.kind}`)",
            alt_paths=(("workload", "kind"),),
        )


def _scenario_host_policy(s: Scenario) -> Iterator[Problem]:
    host = s.host_policy
    if host is None:
        return
    policy = s.migration.policy
    if policy.post_copy_after_s is not None and host.live_migration_permit_post_copy is False:
        yield Problem(
            ("migration", "policy", "post_copy_after_s"),
            "needs `host_policy.live_migration_permit_post_copy: true` (it is false)",
            alt_paths=(("host_policy", "live_migration_permit_post_copy"),),
        )
    if policy.auto_converge and host.live_migration_permit_auto_converge is False:
        yield Problem(
            ("migration", "policy", "auto_converge"),
            "needs `host_policy.live_migration_permit_auto_converge: true` (it is false)",
            alt_paths=(("host_policy", "live_migration_permit_auto_converge"),),
        )


def check_matrix_entries(root: type[BaseModel], matrix: dict[str, list[Any]]) -> None:
    """Raise `RuleViolations` (paths relative to `matrix`) for unknown keys and repeated values.

    This needs no other field, so it runs as the field's own validator and is reported together
    with every other field's errors. `root` is the scenario model whose fields the keys name.
    """
    problems: list[Problem] = []
    for key, values in matrix.items():
        message = check_matrix_key(root, key)
        if message is not None:
            problems.append(Problem((key,), message, at_key=True))
        for i, value in enumerate(values):
            if any(type(value) is type(v) and value == v for v in values[:i]):
                problems.append(Problem((key, i), "is listed twice: every case would run twice"))
    if problems:
        raise RuleViolations(list(dict.fromkeys(problems)))


def _matrix(s: Scenario) -> Iterator[Problem]:
    """Every matrix cell is itself a valid scenario (the entries themselves were checked already)."""
    if not s.matrix:
        return
    if case_count(s) > MAX_CASES:
        yield Problem(
            ("matrix",),
            f"expands into {case_count(s)} cases (matrix cells × repeat); at most {MAX_CASES} are allowed",
        )
        return
    keys = {key: split_key_path(key) for key in s.matrix}
    reported: set[tuple[KeyPath, str]] = set()
    for cell in cells(s):
        try:
            data = cell_data(s, cell)
        except PathConflict as exc:
            yield Problem(("matrix", exc.key), str(exc), at_key=True)
            return
        try:
            type(s).model_validate(data)
        except ValidationError as exc:
            entries = matching_entries(s, cell.params)
            for problem in problems_from(exc, data, type(s)):
                located = entry_problem(problem, cell.name, s, entries)
                if located is None:
                    yield _cell_problem(problem, cell.name, keys, cell.indexes)
                elif (problem.path, problem.message) not in reported:
                    # once per problem: an entry picking many cells would repeat it for each
                    reported.add((problem.path, problem.message))
                    yield located


def _cell_problem(
    problem: Problem, cell_name: str, keys: dict[str, tuple[str, ...]], indexes: tuple[int, ...]
) -> Problem:
    """Report a cell's problem at the matrix value that caused it, else at `matrix` naming the cell."""
    for (key, parts), index in zip(keys.items(), indexes, strict=True):
        paths = (problem.path, *problem.alt_paths)
        for path in paths:
            if path[: len(parts)] == parts:
                rest = path[len(parts) :]
                where = f"{format_key_path(problem.path)}: " if rest or path is not problem.path else ""
                return Problem(("matrix", key, index), f"{where}{problem.message}")
    return Problem(("matrix",), f"in case `{cell_name}`: {format_key_path(problem.path)}: {problem.message}")


def _raise(problems: Iterable[Problem]) -> None:
    """Raise `RuleViolations` with each distinct problem once, in order; nothing when there is none."""
    unique = list(dict.fromkeys(problems))
    if unique:
        raise RuleViolations(unique)


def check_policy(p: MigrationPolicy) -> None:
    """Raise `RuleViolations` with every rule a migration policy breaks (paths relative to it)."""
    _raise(_policy(p))


def check_migration(m: Migration) -> None:
    """Raise `RuleViolations` with every rule a migration section breaks (paths relative to it)."""
    _raise(_migration(m))


def check_workload(w: Workload) -> None:
    """Raise `RuleViolations` with every rule a workload breaks (paths relative to it)."""
    _raise(_workload(w))


def check_sla(s: Sla) -> None:
    """Raise `RuleViolations` with every rule an SLA breaks (paths relative to it)."""
    _raise(_sla(s))


def check_scenario(s: Scenario) -> None:
    """Raise `RuleViolations` with every cross-section rule a scenario breaks.

    Matrix cells (and the `sla_by_cell` entries that pick them) are validated only when the
    scenario itself passes: a cell inherits the scenario's problems, and reporting them once per
    cell would bury the real one.
    """
    problems = list(_scenario(s))
    _raise(problems or [*entry_problems(s), *_matrix(s)])
