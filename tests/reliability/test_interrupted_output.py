"""A run stopped before its cloud was ready still leaves a valid, `interrupted` results.json."""

from __future__ import annotations

from pathlib import Path

from novamig.results import load_results
from novamig.runner.commands import _write_interrupted
from novamig.runner.run import utc_now


def test_results_of_a_run_stopped_before_any_case(tmp_path: Path) -> None:
    _write_interrupted({"name": "a"}, "novamig-embedded", utc_now(), tmp_path)
    results = load_results(tmp_path / "results.json")
    assert results.interrupted and not results.passed and results.cases == []
    assert results.environment.cloud == "novamig-embedded"
    assert results.environment.finished_at is not None
    assert 'name="interrupted" value="true"' in (tmp_path / "junit.xml").read_text()
    assert (tmp_path / "index.html").stat().st_size > 0
