"""The results model: `results.json`, schema `novamig.results/1`.

results.json is the source of truth of a run: the HTML report, JUnit XML and `novamig compare` are
all rendered from it, never from live state. So it is typed, validated on load, versioned, and
written atomically (a run killed mid-write leaves the previous file, never half of a new one).

Times inside a case are seconds since the case start, from one monotonic clock; `started_at` and
`finished_at` of the environment are UTC wall-clock timestamps (ISO 8601).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

SCHEMA = "novamig.results/1"

MigrationStatus = Literal["completed", "error", "cancelled", "timeout"]
Probe = Literal["guest", "network", "locust", "hypervisor"]


class ResultsError(Exception):
    """results.json cannot be read: missing, not JSON, unknown schema version or invalid content."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class _Model(BaseModel):
    # Readers rely on these keys: an unknown key is a writer bug or a newer schema, not noise.
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


class PerProbe(_Model):
    """One figure per vantage point; None where that probe could not measure (the reason goes
    into the migration's events)."""

    guest: float | None = None
    network: float | None = None
    locust: float | None = None
    hypervisor: float | None = None


class ProgressSample(_Model):
    t: float
    memory_total_bytes: int | None = None
    memory_processed_bytes: int | None = None
    memory_remaining_bytes: int | None = None
    status: str


class Event(_Model):
    t: float
    what: str


# ------------------------------------------------------------------------------------------------
# figure blocks: what probes write beside their figures (details, hypervisor, locust)

#: A figure as a probe wrote it: a count stays an int, a measured value a float (``int | float``
#: keeps the JSON number as it was; ``float`` alone would turn ``0`` into ``0.0``).
Number = int | float


class FigureBlock(BaseModel):
    """A block of figures written by a probe: typed where readers rely on a key, open for the rest.

    Probes add keys of their own (``extra="allow"``), and results.json must read back exactly as it
    was written, by this novamig or an older one: so a block keeps its keys in the order they came,
    a key never written stays absent (not null) and a key written as null stays null. Readers use
    the typed attributes; mapping access (``block["key"]``, ``.get``, ``in``) reads the same keys by
    their results.json names, for keys a probe added.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ModelWrapValidatorHandler[FigureBlock]) -> FigureBlock:
        block = handler(data)
        if isinstance(data, dict):
            block._order = [str(k) for k in data]
        return block

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        present = self.model_fields_set | set(self.model_extra or {})
        keys = [k for k in self._order if k in present]
        keys += [k for k in data if k in present and k not in keys]
        return {k: data[k] for k in keys if k in data}

    def _written(self, key: str) -> bool:
        return key in self.model_fields_set or key in (self.model_extra or {})

    def __getitem__(self, key: str) -> Any:
        if not self._written(key):
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)
        if key not in self._order:
            self._order.append(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._written(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if self._written(key) else default


class EchoDetails(FigureBlock):
    """``details.network``: the echo prober's view of one migration's window (novamig.measure.network)."""

    address: str | None = None
    protocol: str | None = None
    gap_from_s: Number | None = None  # the blackout: last reply before it, first after it (case s)
    gap_to_s: Number | None = None
    window_s: list[Number] | None = None
    replies: int | None = None  # replies that arrived inside the window
    lost: int | None = None  # requests sent inside the window never answered
    rtt_p50_ms: Number | None = None  # nearest-rank percentiles of the window's round trips
    rtt_p99_ms: Number | None = None
    rtt_max_ms: Number | None = None
    brownout_threshold_ms: Number | None = None
    brownout_gaps: int | None = None


class BeatDetails(FigureBlock):
    """``details.guest`` from the UDP heartbeat collector (novamig.measure.heartbeat_udp)."""

    via: str | None = None
    address: str | None = None
    gap_from_s: Number | None = None
    gap_to_s: Number | None = None
    guest_gap_ms: Number | None = None  # the guest's own clock across the blackout
    window_s: list[Number] | None = None
    beats: int | None = None
    lost: int | None = None
    brownout_threshold_ms: Number | None = None
    brownout_gaps: int | None = None


class LocustDetails(FigureBlock):
    """``details.locust``: Locust's view of one migration's window (novamig.measure.locust_figure)."""

    window_s: list[Number] | None = None
    blackout_s: list[Number] | None = None
    open_ended: bool | None = None  # no success followed the blackout before the records ended
    longest_gap_ms: Number | None = None  # between two successes; the figure is it minus the normal interval
    normal_interval_ms: Number | None = None  # median interval between successes (the resolution)
    # The longest gap's breakdown, three disjoint parts adding up to it: a request that was answered
    # in the end was outstanding (the service dark or slow) / only failing ones (time-outs, resets,
    # reconnects) / none (Locust's own scheduling, not the service).
    waiting_ms: Number | None = None
    failing_ms: Number | None = None
    idle_ms: Number | None = None
    requests_in_window: int | None = None
    failures_in_window: int | None = None
    latency_spike_ms: Number | None = None
    baseline_p99_ms: Number | None = None
    baseline_requests: int | None = None
    where: Literal["guest", "runner"] | None = None
    guest_clock_lost_ms: Number | None = None
    note: str | None = None


class ProbeDetails(FigureBlock):
    """``details``: per probe (not the hypervisor: see ``hypervisor``), its further figures.

    Keyed by probe name; a probe without a model here (libvirt on a DevStack, a future probe) keeps
    its block as plain JSON.
    """

    guest: BeatDetails | None = None
    network: EchoDetails | None = None
    locust: LocustDetails | None = None


class MigratedBytes(FigureBlock):
    total: int | None = None
    precopy: int | None = None
    downtime: int | None = None  # sent while the guest was stopped
    postcopy: int | None = None
    ram: int | None = None


class HeartbeatFigures(FigureBlock):
    """The agent heartbeat's figures of one migration on the embedded cloud (novamig.hypervisor.heartbeat)."""

    switchover_gap_ms: Number | None = None
    source_longest_gap_ms: Number | None = None
    destination_longest_gap_ms: Number | None = None
    guest_downtime_ms: Number | None = None
    source_beats: int | None = None
    destination_beats: int | None = None
    noise_floor_ms: Number | None = None
    brownout_ms: Number | None = None
    stalls: int | None = None
    hz: int | None = None


class IntegrityCheck(FigureBlock):
    """The guest's integrity region checked on the destination (values the agent sent as text stay text)."""

    ok: bool | None = None
    pages: int | str | None = None
    generation: int | str | None = None
    check_ms: int | str | None = None
    error: str | None = None


class HypervisorFigures(FigureBlock):
    """``hypervisor``: the hypervisor's own figures of one migration.

    On the embedded cloud, QEMU's (bytes, STOP→RESUME, the agent heartbeat, the integrity check);
    on a DevStack, libvirt's job statistics, whose keys (``time_elapsed_ms``, ``total_downtime_ms``
    …) stay as written.
    """

    migration_uuid: str | None = None
    migration_id: int | None = None
    status: str | None = None
    error: str | None = None
    duration_s: Number | None = None
    total_ms: Number | None = None
    qemu_downtime_ms: Number | None = None
    stop_resume_ms: Number | None = None
    setup_ms: Number | None = None
    bytes: MigratedBytes | None = None
    dirty_sync_count: int | None = None
    postcopy: bool | None = None
    postcopy_blocktime_ms: Number | None = None
    heartbeat: HeartbeatFigures | None = None
    downtime_steps: list[list[Number]] | None = None  # [after ms, downtime limit ms] of the ramp
    integrity: IntegrityCheck | None = None
    throttle_max_percent: Number | None = None
    dirty_pages_rate_max: Number | None = None
    # QEMU's per-poll samples of `query-migrate`, [seconds since its migrate command, value]:
    # ``cpu-throttle-percentage`` (auto-converge, %) and ``ram.dirty-pages-rate`` (pages/s), kept
    # where the value changes (both move once per dirty-sync round), so a few points per migration.
    throttle_series: list[list[Number]] | None = None
    dirty_rate_series: list[list[Number]] | None = None
    migrate_at_s: Number | None = None  # case seconds of QEMU's migrate command: where the series start


class LatencyFigures(FigureBlock):
    """Nearest-rank percentiles, max and mean of successful requests' latency (ms)."""

    p50: Number | None = None
    p90: Number | None = None
    p95: Number | None = None
    p99: Number | None = None
    max: Number | None = None
    mean: Number | None = None


class RequestRate(FigureBlock):
    """Requests and failures completed per ``step_s`` from ``t0_s`` (case seconds)."""

    t0_s: Number | None = None
    step_s: Number | None = None
    requests: list[int] | None = None
    failures: list[int] | None = None


class RequestStats(FigureBlock):
    """Locust's requests of the case (``locust.total``) or of one server (``locust.servers.<id>``)."""

    requests: int | None = None
    failures: int | None = None
    failure_ratio: Number | None = None
    latency_ms: LatencyFigures | None = None
    rps: RequestRate | None = None
    locust_reported: dict[str, Any] | None = None  # Locust's own counts and per-name statistics
    name: str | None = None  # the server's (per server only)
    address: str | None = None
    error: str | None = None
    clock: dict[str, Any] | None = None  # guest Locust: the guest clock's map to the case clock


class LocustStats(FigureBlock):
    """The case's ``locust``: the Locust load's settings and statistics (novamig.measure.locust).

    When the statistics could not be gathered it holds only ``error``.
    """

    where: Literal["guest", "runner"] | None = None
    locustfile: str | None = None
    users: int | None = None
    spawn_rate: Number | None = None
    total: RequestStats | None = None
    servers: dict[str, RequestStats] | None = None
    errors: list[str] | None = None
    error: str | None = None


class ServerAfter(_Model):
    """The server as Nova showed it once a migration had failed."""

    status: str | None = Field(
        default=None, description="Nova's status (ACTIVE, ERROR …); null: the server is gone"
    )
    host: str | None = None
    task_state: str | None = None
    power_state: str | None = Field(
        default=None,
        description="Nova's record of the guest's power state (running, shutdown …), refreshed by a "
        "periodic task: it may still say running after the guest died",
    )
    guest_running: bool | None = Field(
        default=None,
        description="the hypervisor's answer now, through Nova's diagnostics: false → the guest is not "
        "running; null → not asked or no answer",
    )
    fault: str | None = Field(default=None, description="Nova's fault message, when the server has one")


#: MigrationRecord keys written only when set, so a results.json without a failed migration reads
#: as it did before they existed, byte for byte.
_WRITTEN_WHEN_SET = ("error", "server_after", "server_lost")


def _without_unset(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """`data` less those of `keys` that are null, false or empty: fields added after the schema's first
    version are written only when set, so an older results.json reads and writes back byte for byte."""
    for key in keys:
        if data.get(key) is None or data.get(key) is False or data.get(key) == []:
            data.pop(key, None)
    return data


class MigrationRecord(_Model):
    server: str
    source_host: str
    dest_host: str | None = None
    status: MigrationStatus
    requested_at: float = Field(description="seconds since case start")
    finished_at: float | None = Field(default=None, description="seconds since case start")
    duration_s: float | None = Field(
        default=None,
        description="live-migrate request → migration completed with the server ACTIVE on the destination",
    )
    downtime_ms: PerProbe = Field(default_factory=PerProbe)
    resolution_ms: PerProbe = Field(default_factory=PerProbe)
    progress: list[ProgressSample] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    hypervisor: HypervisorFigures | None = Field(
        default=None, description="the hypervisor's own figures (bytes, iterations, STOP→RESUME …)"
    )
    migration_id: int | None = Field(default=None, description="Nova's id of the migration record")
    phases_s: dict[str, float] = Field(
        default_factory=dict,
        description="seconds spent in each phase: request, accepted, preparing, running, "
        "post-copy, settle (from the polled status transitions); queued: the request → the record "
        "past accepted/queued/preparing, all the wait before memory is copied (their sum, as polled)",
    )
    poll_period_s: float | None = Field(
        default=None, description="median period at which the migration was polled (bounds every time above)"
    )
    brownout_ms: PerProbe = Field(
        default_factory=PerProbe,
        description="degraded but not dark (throttling, post-copy page faults): time in stalls "
        "above the noise floor apart from the blackout itself, per probe",
    )
    details: ProbeDetails = Field(
        default_factory=ProbeDetails,
        description="per probe (not the hypervisor, see `hypervisor`), its further figures: "
        "network RTT percentiles and lost replies, Locust latency spike …",
    )
    memory_integrity: bool | None = Field(
        default=None,
        description="the guest's integrity region verified after the migration; null → not checked",
    )
    error: str | None = Field(
        default=None,
        description="why a migration of status error or timeout failed, one line: Nova's reason (the "
        "failed step of its live-migration instance action) when Nova gives one, else what novamig "
        "saw (for a timeout: the limit that ran out, then how the abort ended); written only when set",
    )
    server_after: ServerAfter | None = Field(
        default=None,
        description="the server as Nova showed it after the failure (status error); written only when set",
    )
    server_lost: bool | None = Field(
        default=None,
        description="true: the failure left the server without a running guest (gone, ERROR, shut "
        "off, or the hypervisor says its guest is not running); its further migrations in the case "
        "are skipped; written only when true",
    )

    @model_serializer(mode="wrap")
    def _without_unset_failure_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_unset(handler(self), _WRITTEN_WHEN_SET)


class SlaCheck(_Model):
    name: str
    limit: float | bool | None
    value: float | bool | None
    passed: bool
    reason: str | None = Field(
        default=None,
        description="why value is null (the probe not set up, not measurable on this cloud, no "
        "migration completed …); for a failed downtime check, that the case's noise floor on that "
        "probe was already above the limit; otherwise null",
    )


class ProbeCost(_Model):
    """What a probe cost the machine it ran on: the proof that it did not disturb the measurement."""

    cpu_s: float = Field(description="CPU seconds (user + system) the probe used")
    wall_s: float = Field(description="seconds the probe ran")
    cpu_percent: float = Field(description="cpu_s / wall_s × 100, of one core")
    rate_hz: float | None = Field(default=None, description="probe rate achieved (sent per second)")
    note: str | None = None
    budget_percent: float | None = Field(
        default=None, description="measure.probe_cpu_budget_percent; null: not budgeted (the Locust load)"
    )
    over_budget: bool | None = Field(
        default=None,
        description="cpu_percent above the budget: the probe may have disturbed what it measured",
    )


class CaseResult(_Model):
    id: str
    params: dict[str, Any] = Field(default_factory=dict)
    repetition: int = 1
    passed: bool
    sla: list[SlaCheck] = Field(default_factory=list)
    migrations: list[MigrationRecord] = Field(default_factory=list)
    locust: LocustStats | None = None
    noise_floor_ms: PerProbe = Field(
        default_factory=PerProbe,
        description="per probe, the longest gap seen in the no-migration window before the first migration",
    )
    duration_s: float | None = Field(default=None, description="seconds from case start to its end")
    probe_cost: dict[str, ProbeCost] = Field(default_factory=dict, description="per probe name")
    error: str | None = Field(default=None, description="why the case could not run to its end")
    migration_cpu_s: float | None = Field(
        default=None,
        description="CPU seconds (user + system, every thread) the runner's process spent from the "
        "first live-migrate request to the last migration's end: requesting and watching them, and "
        "the probes that run inside the runner; not the start-up, the boot or the delete",
    )
    sla_reasons: list[str] = Field(
        default_factory=list,
        description="why this case's SLA differs from the scenario's: the reason of each `sla_by_cell` "
        "entry merged into it; written only when there is one",
    )

    @model_serializer(mode="wrap")
    def _without_unset_cpu(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``migration_cpu_s`` and ``sla_reasons`` are written only when set: a results.json written
        before the fields existed reads and writes back byte for byte."""
        return _without_unset(handler(self), ("migration_cpu_s", "sla_reasons"))


class Environment(_Model):
    cloud: str
    nova_version: str | None = None
    max_microversion: str | None = None
    compute_hosts: list[str] = Field(default_factory=list)
    hypervisor_versions: dict[str, str] = Field(default_factory=dict)
    scale_mode: str | None = Field(
        default=None,
        description="set when the cloud's servers have no guest behind them (the embedded cloud on "
        "Nova's fake driver): the run measured orchestration at scale, never downtime",
    )
    novamig_version: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None

    @model_serializer(mode="wrap")
    def _without_unset_scale_mode(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``scale_mode`` is written only when set: a measurement's results.json stays as it was
        before the field existed, byte for byte."""
        data: dict[str, Any] = handler(self)
        if data.get("scale_mode") is None:
            data.pop("scale_mode", None)
        return data


class Results(_Model):
    schema_: Literal["novamig.results/1"] = Field(default="novamig.results/1", alias="schema")
    scenario: dict[str, Any]
    environment: Environment
    cases: list[CaseResult] = Field(default_factory=list)
    passed: bool
    interrupted: bool = Field(default=False, description="the run was stopped (Ctrl-C) before its end")

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"


def write_results(results: Results, path: Path) -> None:
    """Write atomically: a temp file in the same directory, fsync, then rename over `path`.

    rename(2) within one file system is atomic, so a reader (or a run killed at any instant) sees
    the old file or the new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = results.to_json().encode()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_results(path: Path) -> Results:
    """Read and validate results.json; refuse an unknown schema version by name."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(path, f"cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(path, f"not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(raw, dict):
        raise ResultsError(path, "not a results object (top level is not a JSON object)")
    schema = raw.get("schema")
    if schema != SCHEMA:
        raise ResultsError(
            path,
            f"unsupported schema {schema!r}; this novamig reads {SCHEMA!r}"
            + (
                " (written by a newer novamig?)"
                if isinstance(schema, str) and schema.startswith("novamig.")
                else ""
            ),
        )
    try:
        return Results.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ResultsError(
            path, f"invalid results: {where}: {first['msg']} ({exc.error_count()} errors)"
        ) from None
