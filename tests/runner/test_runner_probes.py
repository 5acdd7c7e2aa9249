"""Probe figures into migration records: the embedded cloud's per-migration files, and absences
(null figures whose reasons the SLA verdicts carry)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from novamig.measure.contract import ProbeFigure, Unavailable
from novamig.measure.embedded_figures import EmbeddedMigrationFigures
from novamig.measure.sla import SlaSpec, evaluate
from novamig.results import MigrationRecord, MigrationStatus
from novamig.runner.probes import apply_figures, probes_set_up


def record(status: MigrationStatus = "completed") -> MigrationRecord:
    return MigrationRecord(
        server="s",
        source_host="a",
        dest_host="b",
        status=status,
        requested_at=1.0,
        finished_at=3.0,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "uuid-7.json").write_text(
        json.dumps(
            {
                "migration_uuid": "uuid-7",
                "migration_id": 7,
                "status": "completed",
                "qemu_downtime_ms": 12.0,
                "stop_resume_ms": 14.5,
                "progress": [{"t": 0.1}],
                "heartbeat": {"guest_downtime_ms": 61.25, "switchover_gap_ms": 61.25, "source_beats": 900},
            }
        )
    )
    (migrations / "uuid-8.json").write_text(json.dumps({"migration_id": 8, "status": "failed", "error": "x"}))
    return tmp_path


def test_hypervisor_and_guest_figures_come_from_the_migration_file(workdir: Path) -> None:
    rec = apply_figures(
        record(),
        "srv",
        7,
        [EmbeddedMigrationFigures(workdir, "hypervisor"), EmbeddedMigrationFigures(workdir, "guest")],
    )
    assert rec.downtime_ms.hypervisor == 12.0 and rec.resolution_ms.hypervisor == 1.0
    assert rec.downtime_ms.guest == 61.25 and rec.resolution_ms.guest == 1.0  # agent default 1000 Hz
    assert rec.hypervisor is not None and rec.hypervisor["stop_resume_ms"] == 14.5
    assert "progress" not in rec.hypervisor  # series stay out of results.json
    assert rec.events == []


def test_missing_figures_are_null_with_the_reason_as_event(workdir: Path) -> None:
    rec = apply_figures(
        record("error"),
        "srv",
        8,
        [
            EmbeddedMigrationFigures(workdir, "hypervisor"),
            EmbeddedMigrationFigures(workdir, "guest"),
            Unavailable("network", "no network probe yet"),
        ],
    )
    assert (
        rec.downtime_ms.hypervisor is None
        and rec.downtime_ms.guest is None
        and rec.downtime_ms.network is None
    )
    whats = [e.what for e in rec.events]
    assert any("downtime_ms.hypervisor: not measured — QEMU reported no downtime" in w for w in whats)
    assert any("downtime_ms.guest: not measured — the embedded cloud could not read" in w for w in whats)
    assert "downtime_ms.network: not measured — no network probe yet" in whats
    assert all(e.t == 3.0 for e in rec.events)


def test_unknown_migration_and_unknown_probe(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EmbeddedMigrationFigures, "WAIT_S", 0.0)
    fig = EmbeddedMigrationFigures(workdir, "hypervisor").figure(record(), "srv", 99)
    assert fig.downtime_ms is None and "no figures for migration 99" in (fig.reason or "")
    with pytest.raises(ValueError, match="no 'locust' figure"):
        EmbeddedMigrationFigures(workdir, "locust")


def test_brownout_and_integrity_come_from_the_migration_file(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "u.json").write_text(
        json.dumps(
            {
                "migration_id": 9,
                "status": "completed",
                "qemu_downtime_ms": 20,
                # 1 s at 50 % throttle, then 1 s at 99 %: 500 + 990 ms taken from the guest
                "throttle_series": [[0.0, 50], [1.0, 99], [2.0, 0]],
                "postcopy_blocktime_ms": None,
                "heartbeat": {"guest_downtime_ms": 80.0, "brownout_ms": 1200.5, "hz": 1000},
                "integrity": {"ok": False, "first_bad_page": 3},
            }
        )
    )
    rec = record()
    probes = [EmbeddedMigrationFigures(tmp_path, "hypervisor"), EmbeddedMigrationFigures(tmp_path, "guest")]
    apply_figures(rec, "srv", 9, probes)
    assert rec.brownout_ms.hypervisor == pytest.approx(1490.0)
    assert rec.hypervisor is not None and rec.hypervisor["throttle_max_percent"] == 99
    assert rec.hypervisor.throttle_series == [[0.0, 50], [1.0, 99], [2.0, 0]]  # kept for the timeline
    assert rec.brownout_ms.guest == 1200.5
    assert rec.memory_integrity is False


def test_a_probe_that_raises_loses_its_figure_not_the_record() -> None:
    class Broken(Unavailable):
        def figure(self, migration: MigrationRecord, server_id: str, migration_id: int | None) -> ProbeFigure:
            raise RuntimeError("boom")

    rec = apply_figures(record(), "srv", 1, [Broken("network", "")])
    assert rec.downtime_ms.network is None
    assert any("boom" in e.what for e in rec.events)


def test_a_null_figure_fails_its_sla_with_the_reason_the_probe_gave(workdir: Path) -> None:
    """The reason a figure is missing travels from the probe, through the migration's events, into
    the SLA verdict: on this cloud, per migration, or because no migration completed."""
    spec = SlaSpec(downtime_probe="network", downtime_max_ms=500)
    why = "the embedded cloud's guests have no namespace to reach them in (needs root)"
    probes = [EmbeddedMigrationFigures(workdir, "hypervisor"), Unavailable("network", why)]
    rec = apply_figures(record(), "srv", 7, probes)
    (check,) = [c for c in evaluate(spec, [rec], probes=probes_set_up(probes)) if c.name.startswith("down")]
    assert check.value is None and not check.passed
    assert check.reason == f"the network probe cannot measure on this cloud: {why}"

    guest = SlaSpec(downtime_probe="guest", downtime_max_ms=500)
    ran = [EmbeddedMigrationFigures(workdir, "guest")]  # ran, but migration 8's file has no heartbeat
    rec8 = apply_figures(record(), "srv", 8, ran)
    (check,) = [c for c in evaluate(guest, [rec8], probes=probes_set_up(ran)) if c.name.startswith("down")]
    assert check.reason == (
        "no completed migration has a guest figure: the embedded cloud could not read the guest heartbeat"
    )

    hyp = SlaSpec(downtime_probe="hypervisor", downtime_max_ms=500)
    failed = apply_figures(record("error"), "srv", 8, probes)
    (check,) = [c for c in evaluate(hyp, [failed], probes=probes_set_up(probes)) if c.name.startswith("down")]
    assert check.reason == "no migration completed (1 requested)"
    assert evaluate(hyp, [record()], probes={"guest": None})[-1].reason == (
        "the hypervisor probe is not set up in this case (measure.probes does not name it)"
    )
