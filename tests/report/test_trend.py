"""`novamig trend`: runs grouped by the scenario as run, in start order, a chart per metric per case,
the run where a metric stepped, and bad input refused in one line."""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path

import pytest

from novamig.cli import main
from novamig.report.trend import detect_step, find_results, group_runs, scenario_digest
from novamig.results import CaseResult, Environment, MigrationRecord, PerProbe, Results, write_results

SCENARIO: dict[str, object] = {"name": "nightly", "sla": {"downtime_max_ms": 500}}
CELLS = ({"dirty_rate_mib_s": 0}, {"dirty_rate_mib_s": 64})


def _run(day: int, guest_scale: float, scenario: dict[str, object] = SCENARIO) -> Results:
    """One nightly run: two matrix cells × 2 repeats × 3 migrations, figures with seeded noise."""
    rng = random.Random(day)

    def migration(k: int) -> MigrationRecord:
        duration = 4.0 + rng.uniform(0, 0.3)
        return MigrationRecord(
            server=f"s{k}",
            source_host="c1",
            dest_host="c2",
            status="completed",
            requested_at=5.0 * k,
            finished_at=5.0 * k + duration,
            duration_s=duration,
            downtime_ms=PerProbe(
                guest=(80 + rng.uniform(0, 8)) * guest_scale,
                network=90 + rng.uniform(0, 8),
                hypervisor=20 + rng.uniform(0, 2),
            ),
        )

    cases = [
        CaseResult(
            id=f"c{i}#r{rep}",
            params=params,
            repetition=rep,
            passed=True,
            migrations=[migration(k) for k in range(3)],
        )
        for i, params in enumerate(CELLS)
        for rep in (1, 2)
    ]
    started = dt.datetime(2026, 11, day, 2, 0, tzinfo=dt.UTC)
    env = Environment(cloud="embedded", novamig_version="0.test", started_at=started)
    return Results(scenario=scenario, environment=env, cases=cases, passed=True)


@pytest.fixture
def five_nights(tmp_path: Path) -> Path:
    """Five runs, a planted step at run 3: the guest's downtime ×1.5 from then on. The folders are
    named so that their alphabetical order is not the order the runs started in."""
    root = tmp_path / "nightly"
    for night, name in zip(range(1, 6), ("e", "b", "d", "a", "c"), strict=True):
        write_results(_run(night, 1.5 if night >= 3 else 1.0), root / name / "results.json")
    return root


def test_detect_step_finds_the_split_and_ignores_noise() -> None:
    assert detect_step([10, 10.5, 15, 15.2, 14.9], 1.1) == (2, 10, 15)
    assert detect_step([10, 10.5, 9.8, 10.2, 10.1], 1.1) is None, "5 % noise is no step at ×1.1"
    assert detect_step([10, 10, 10, 10, 5], 1.1) == (4, 10, 5), "a drop is a step too"
    assert detect_step([10, 20], 1.1) is None, "two runs are not a trend"
    assert detect_step([0.0, 0.0, 1.0], 1.1) == (2, 0.0, 1.0), "from zero, any rise is a step"


def test_planted_step_is_found_at_run_3(five_nights: Path, tmp_path: Path) -> None:
    groups = group_runs(find_results([str(five_nights)]), 1.1)
    assert len(groups) == 1
    group = groups[0]
    assert [r.results.environment.started_at.day for r in group.runs] == [1, 2, 3, 4, 5]
    assert [r.number for r in group.runs] == [1, 2, 3, 4, 5]
    steps = {(s.case, s.metric.key): s.step for s in group.series if s.step is not None}
    assert set(steps) == {("dirty_rate_mib_s=0", "downtime.guest"), ("dirty_rate_mib_s=64", "downtime.guest")}
    for step in steps.values():
        assert step.run == 3
        assert 1.35 < step.ratio < 1.65
    guest = next(s for s in group.series if s.metric.key == "downtime.guest")
    assert [p.n for p in guest.points] == [6] * 5, "the two repeats of a cell are pooled: 2 × 3 migrations"
    for p in guest.points:
        assert p.min <= p.median <= p.p95 <= p.max
    assert guest.points[0].max < 88.0 < guest.points[2].min, "runs 1 and 3 are the planted levels"


def test_cli_writes_the_summary_and_a_self_contained_page(
    five_nights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "trend.html"
    assert main(["trend", str(five_nights), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert f"scenario nightly (as run: {scenario_digest(_run(1, 1.0))}), 5 run(s)" in out
    assert "2026-11-01 02:00 → 2026-11-05 02:00" in out
    step_lines = [line for line in out.splitlines() if "step at run" in line]
    assert len(step_lines) == 2 and all("downtime guest" in line for line in step_lines)
    assert re.search(r"step at run 3: ×1\.[3-6]\d \(8\d\.\d ms → 1[2-3]\d\.\d ms\)", step_lines[0])
    assert "2 step(s) found" in out
    html = page.read_text()
    for external in ("<script", "<link", "src=", "http://", "https://", "<img"):
        assert external not in html
    charts = re.findall(r"<svg .*?</svg>", html, re.S)
    # 2 cells × (duration + 3 vantage points' downtime): brownout and Locust have no samples here
    assert len(charts) == 8
    assert sum("step ×1." in chart for chart in charts) == 2
    assert all(chart.count("<circle") == 5 for chart in charts), "one median dot per run"
    assert 'class="step"' in html and "dirty_rate_mib_s=64" in html


def test_other_scenarios_make_their_own_groups(
    five_nights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = {"name": "nightly", "sla": {"downtime_max_ms": 300}}  # same name, another limit
    write_results(_run(6, 1.0, other), tmp_path / "other" / "results.json")
    results = [str(p) for p in sorted(five_nights.rglob("results.json"))]
    args = ["trend", *results, str(tmp_path / "other"), results[0], "--html", str(tmp_path / "t.html")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 different scenarios (as run) among the inputs" in out
    assert "5 run(s)" in out, "a file named twice counts once"
    assert "1 run(s)" in out and "(steps are looked for from 3 runs on)" in out
    assert "No step found (fewer than 3 runs)" in (tmp_path / "t.html").read_text()


def test_a_run_without_completed_migrations_has_no_chart_but_renders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = _run(1, 1.0)
    empty.cases = []
    write_results(empty, tmp_path / "r" / "results.json")
    assert main(["trend", str(tmp_path / "r"), "--html", str(tmp_path / "t.html")]) == 0
    assert "No figure in any run" in (tmp_path / "t.html").read_text()


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    write_results(_run(1, 1.0), tmp_path / "ok" / "results.json")
    ok = str(tmp_path / "ok")
    html = ["--html", str(tmp_path / "t.html")]
    cases = {
        "missing": ([str(tmp_path / "nope.json"), *html], "nope.json: no such file or directory"),
        "empty dir": ([str(tmp_path / "empty"), *html], "no results.json in this directory"),
        "not JSON": ([str(tmp_path / "bad.json"), *html], "not JSON"),
        "factor": ([ok, "--factor", "0.9", *html], "--factor must be above 1, not 0.9"),
        "unwritable": ([ok, "--html", str(tmp_path / "no" / "dir" / "t.html")], "cannot write"),
    }
    for what, (args, message) in cases.items():
        assert main(["trend", *args]) == 2, what
        err = capsys.readouterr().err
        assert err.startswith("novamig trend: ") and message in err, (what, err)
        assert err.count("\n") == 1, (what, err)
