"""The console's closing lines name each failed migration's own reason, a bounded number per case."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

from novamig.results import CaseResult, Environment, MigrationRecord, Results, SlaCheck
from novamig.runner.console_summary import MIGRATION_ERRORS_SHOWN, print_summary


def _migration(server: str, status: str = "completed", **failure: object) -> MigrationRecord:
    return MigrationRecord.model_validate(
        {"server": server, "source_host": "h1", "status": status, "requested_at": 1.0, "finished_at": 2.0}
        | failure
    )


def _printed(cases: list[CaseResult]) -> str:
    env = Environment(
        cloud="embedded", novamig_version="0", started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    )
    results = Results(scenario={"name": "s"}, environment=env, cases=cases, passed=False)
    stream = io.StringIO()
    print_summary(results, Path("/out"), stream)
    return stream.getvalue()


def test_each_failed_migration_says_why_and_whether_its_server_was_lost() -> None:
    case = CaseResult(
        id="c#r1",
        passed=False,
        migrations=[
            _migration("s1"),
            _migration(
                "s2", "error", error="Nova: live migration failed on the destination", server_lost=True
            ),
            _migration("s3", "timeout"),
        ],
        sla=[
            SlaCheck(name="downtime_ms.guest.max", limit=500.0, value=None, passed=False, reason="no guest"),
            SlaCheck(
                name="downtime_ms.guest.p95", limit=500.0, value=612.5, passed=False, reason="floor 700"
            ),
        ],
    )
    text = _printed([case])
    assert "FAIL c#r1: 1/3 migrations completed" in text
    assert "migration 2 (s2): error: Nova: live migration failed on the destination; server lost" in text
    assert "migration 3 (s3): timeout: no reason recorded" in text
    assert "migration 1 (s1)" not in text
    assert "SLA downtime_ms.guest.max: not measured (no guest), limit 500.0" in text
    assert "SLA downtime_ms.guest.p95: value 612.5 (floor 700), limit 500.0" in text
    assert "novamig: run failed; results in /out/results.json" in text


def test_many_failures_are_cut_to_a_few_and_counted() -> None:
    failed = [_migration(f"s{i}", "error", error=f"reason {i}") for i in range(MIGRATION_ERRORS_SHOWN + 3)]
    text = _printed([CaseResult(id="c#r1", passed=False, migrations=failed)])
    assert text.count(": error: reason ") == MIGRATION_ERRORS_SHOWN
    assert "… and 3 more (results.json)" in text


def test_a_cell_with_its_own_sla_says_why() -> None:
    own = CaseResult(id="own#r1", passed=True, sla_reasons=["pre-copy cannot keep up at 200 MiB/s"])
    text = _printed([own, CaseResult(id="plain#r1", passed=True)])
    assert text.count("own SLA:") == 1
    assert (
        "PASS own#r1: 0/0 migrations completed\n     own SLA: pre-copy cannot keep up at 200 MiB/s\n" in text
    )
