"""results.json: round-trip, validation on load, atomic writes that survive a kill."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from novamig.results import (
    SCHEMA,
    CaseResult,
    Environment,
    Event,
    MigrationRecord,
    PerProbe,
    ProgressSample,
    Results,
    ResultsError,
    SlaCheck,
    load_results,
    write_results,
)


def sample_results(n_migrations: int = 2, marker: str = "first") -> Results:
    migrations = [
        MigrationRecord(
            server=f"novamig-run-{marker}-{i}",
            source_host="compute1",
            dest_host="compute2",
            status="completed",
            requested_at=1.5 + i,
            finished_at=3.25 + i,
            duration_s=1.75,
            downtime_ms=PerProbe(guest=61.0, network=48.5, locust=None, hypervisor=14.0),
            resolution_ms=PerProbe(guest=1.0, network=2.0, hypervisor=1.0),
            progress=[
                ProgressSample(
                    t=2.0,
                    memory_total_bytes=268435456,
                    memory_processed_bytes=1000,
                    memory_remaining_bytes=268434456,
                    status="running",
                )
            ],
            events=[Event(t=1.5, what="live-migrate requested"), Event(t=3.25, what="completed")],
            hypervisor={"qemu_downtime_ms": 14, "dirty_sync_count": 3},
        )
        for i in range(n_migrations)
    ]
    return Results(
        scenario={"name": "smoke", "fleet": {"count": 2}},
        environment=Environment(
            cloud="novamig-embedded",
            nova_version="34.0.0",
            max_microversion="2.104",
            compute_hosts=["compute1", "compute2"],
            hypervisor_versions={"compute1": "QEMU 7.2.0"},
            novamig_version="0.1.0",
            started_at=dt.datetime(2026, 11, 25, 23, 0, tzinfo=dt.UTC),
            finished_at=dt.datetime(2026, 11, 25, 23, 5, tzinfo=dt.UTC),
        ),
        cases=[
            CaseResult(
                id="default#r1",
                params={"migration.policy.post_copy_after_s": None},
                passed=True,
                sla=[SlaCheck(name="downtime_ms.max", limit=500, value=61.0, passed=True)],
                migrations=migrations,
                noise_floor_ms=PerProbe(guest=18.0),
            )
        ],
        passed=True,
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    original = sample_results()
    path = tmp_path / "results.json"
    write_results(original, path)
    loaded = load_results(path)
    assert loaded == original
    raw = json.loads(path.read_text())
    assert raw["schema"] == SCHEMA
    assert raw["cases"][0]["migrations"][0]["downtime_ms"] == {
        "guest": 61.0,
        "network": 48.5,
        "locust": None,
        "hypervisor": 14.0,
    }
    assert raw["environment"]["started_at"].startswith("2026-11-25T23:00:00")


def test_the_migrations_cpu_is_written_only_when_measured(tmp_path: Path) -> None:
    """``migration_cpu_s`` came after ``novamig.results/1``: a case without it writes no key (so a
    file written before it reads back byte for byte), one with it keeps its value."""
    results = sample_results()
    path = tmp_path / "results.json"
    write_results(results, path)
    assert "migration_cpu_s" not in json.loads(path.read_text())["cases"][0]
    results.cases[0].migration_cpu_s = 0.125
    write_results(results, path)
    assert json.loads(path.read_text())["cases"][0]["migration_cpu_s"] == 0.125
    assert load_results(path) == results


def test_a_cells_own_sla_reasons_are_written_only_when_there_are_some(tmp_path: Path) -> None:
    """``sla_reasons`` (a matrix cell's `sla_by_cell` reasons) came after ``novamig.results/1``: a
    case without any writes no key, one with them reads back the same."""
    results = sample_results()
    path = tmp_path / "results.json"
    write_results(results, path)
    assert "sla_reasons" not in json.loads(path.read_text())["cases"][0]
    results.cases[0].sla_reasons = ["pre-copy cannot keep up", "second"]
    write_results(results, path)
    assert json.loads(path.read_text())["cases"][0]["sla_reasons"] == ["pre-copy cannot keep up", "second"]
    assert load_results(path) == results
    assert load_results(path).cases[0].sla_reasons == ["pre-copy cannot keep up", "second"]


def test_unknown_schema_version_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    raw = json.loads(sample_results().to_json())
    raw["schema"] = "novamig.results/2"
    path.write_text(json.dumps(raw))
    with pytest.raises(ResultsError, match=r"unsupported schema 'novamig.results/2'.*newer novamig"):
        load_results(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"not JSON \(line 1, column 2"),
        ("[1, 2]", "top level is not a JSON object"),
        ('{"schema": "novamig.results/1", "passed": true}', r"invalid results: scenario: Field required"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=message):
        load_results(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such file"):
        load_results(tmp_path / "absent.json")


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    raw = json.loads(sample_results().to_json())
    raw["cases"][0]["migrations"][0]["downtime"] = 5
    path = tmp_path / "results.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ResultsError, match=r"cases\.0\.migrations\.0\.downtime: Extra inputs"):
        load_results(path)


def test_migration_status_is_a_closed_set() -> None:
    with pytest.raises(ValueError, match="completed"):
        MigrationRecord(server="s", source_host="a", status="done", requested_at=0.0)  # type: ignore[arg-type]


# A child process writes a large results file and is killed by SIGKILL at a chosen point of the
# write. The previous results.json must be untouched either way.
_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests_dir!r})
    from test_results import sample_results
    import novamig.results as r

    where = sys.argv[2]
    if where == "mid-write":
        real_fdopen = os.fdopen
        class Dying:
            def __init__(self, f): self.f = f
            def __enter__(self): return self
            def __exit__(self, *a): return False
            def write(self, data):
                self.f.write(data[: len(data) // 2]); self.f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            def fileno(self): return self.f.fileno()
            def flush(self): self.f.flush()
        r.os.fdopen = lambda fd, mode: Dying(real_fdopen(fd, mode))
    elif where == "before-rename":
        r.os.replace = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)
    r.write_results(sample_results(n_migrations=400, marker="second"), r.Path(sys.argv[1]))
    """
)


@pytest.mark.parametrize("where", ["mid-write", "before-rename"])
def test_kill_during_write_leaves_previous_file_intact(tmp_path: Path, where: str) -> None:
    path = tmp_path / "results.json"
    write_results(sample_results(marker="first"), path)
    before = path.read_bytes()
    script = tmp_path / "killer.py"
    script.write_text(_KILLER.format(tests_dir=str(Path(__file__).parent)))
    proc = subprocess.run(
        [sys.executable, str(script), str(path), where],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert path.read_bytes() == before
    assert load_results(path).cases[0].migrations[0].server == "novamig-run-first-0"
    # The interrupted temp file is a dot-file beside it, never mistaken for results.json.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".results.json.")]
    assert len(leftovers) == 1
    assert not os.path.exists(tmp_path / "results.json.tmp")


def test_successful_write_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    write_results(sample_results(), path)
    write_results(sample_results(marker="second"), path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
    assert load_results(path).cases[0].migrations[0].server == "novamig-run-second-0"
