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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    hypervisor: dict[str, Any] | None = Field(
        default=None, description="the hypervisor's own figures (bytes, iterations, STOP→RESUME …)"
    )
    migration_id: int | None = Field(default=None, description="Nova's id of the migration record")
    phases_s: dict[str, float] = Field(
        default_factory=dict,
        description="seconds spent in each phase: request, accepted/queued, preparing, running, "
        "post-copy, settle (from the polled status transitions)",
    )
    poll_period_s: float | None = Field(
        default=None, description="median period at which the migration was polled (bounds every time above)"
    )
    brownout_ms: PerProbe = Field(
        default_factory=PerProbe,
        description="degraded but not dark (throttling, post-copy page faults): time in stalls "
        "above the noise floor apart from the blackout itself, per probe",
    )
    details: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per probe (not the hypervisor, see `hypervisor`), its further figures: "
        "network RTT percentiles and lost replies, Locust latency spike …",
    )
    memory_integrity: bool | None = Field(
        default=None,
        description="the guest's integrity region verified after the migration; null → not checked",
    )


class SlaCheck(_Model):
    name: str
    limit: float | bool | None
    value: float | bool | None
    passed: bool
    reason: str | None = Field(
        default=None,
        description="why value is null (the probe not set up, not measurable on this cloud, no "
        "migration completed …); null when there is a value",
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
    locust: dict[str, Any] | None = None
    noise_floor_ms: PerProbe = Field(
        default_factory=PerProbe,
        description="per probe, the longest gap seen in the no-migration window before the first migration",
    )
    duration_s: float | None = Field(default=None, description="seconds from case start to its end")
    probe_cost: dict[str, ProbeCost] = Field(default_factory=dict, description="per probe name")
    error: str | None = Field(default=None, description="why the case could not run to its end")


class Environment(_Model):
    cloud: str
    nova_version: str | None = None
    max_microversion: str | None = None
    compute_hosts: list[str] = Field(default_factory=list)
    hypervisor_versions: dict[str, str] = Field(default_factory=dict)
    novamig_version: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None


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
