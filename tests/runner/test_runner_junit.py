from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from novamig.report.render import render_index
from novamig.results import CaseResult, Environment, MigrationRecord, Results, SlaCheck
from novamig.runner.junit import junit_xml


def results() -> Results:
    ok = CaseResult(
        id="a=1#r1",
        passed=True,
        sla=[SlaCheck(name="duration_s.max", limit=10, value=2.5, passed=True)],
        migrations=[
            MigrationRecord(
                server="s0",
                source_host="h1",
                dest_host="h2",
                status="completed",
                requested_at=1.0,
                finished_at=3.5,
                duration_s=2.5,
            )
        ],
    )
    bad = CaseResult(
        id="a=2#r1",
        passed=False,
        sla=[SlaCheck(name="duration_s.max", limit=1, value=2.5, passed=False)],
        migrations=[
            MigrationRecord(
                server="s0",
                source_host="h1",
                dest_host=None,
                status="error",
                requested_at=1.0,
                finished_at=2.0,
            )
        ],
    )
    broken = CaseResult(id="a=3#r1", passed=False, error="BootFailure: server went to ERROR: <no host>")
    env = Environment(cloud="c", novamig_version="0", started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    return Results(scenario={"name": "demo"}, environment=env, cases=[ok, bad, broken], passed=False)


def test_junit_counts_and_structure() -> None:
    root = ET.fromstring(junit_xml(results()))
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["a=1#r1", "a=2#r1", "a=3#r1"]
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    failure = cases[1].find("failure")
    assert failure is not None and "duration_s.max" in (failure.get("message") or "")
    assert "error" in (failure.text or "")
    error = cases[2].find("error")
    assert error is not None and "BootFailure" in (error.get("message") or "")
    assert cases[0].get("time") == "3.500"


def test_junit_marks_interrupted_runs_with_properties_first() -> None:
    r = results()
    r.interrupted = True
    suite = ET.fromstring(junit_xml(r)).find("testsuite")
    assert suite is not None
    assert suite[0].tag == "properties"


def test_index_html_is_self_contained_and_escaped() -> None:
    html = render_index(results())
    assert "a=2#r1" in html and "FAILED" in html
    assert "&lt;no host&gt;" in html  # escaped
    for external in ("<script", "<link", "src=", "http://", "https://"):
        assert external not in html


def test_report_command_rerenders_from_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from novamig.report.commands import cmd_report
    from novamig.results import write_results

    write_results(results(), tmp_path / "results.json")
    assert cmd_report(str(tmp_path / "results.json"), None) == 0
    assert "a=2#r1" in (tmp_path / "index.html").read_text()
    (tmp_path / "bad.json").write_text("{}")
    assert cmd_report(str(tmp_path / "bad.json"), None) == 2
    assert "unsupported schema" in capsys.readouterr().err


def test_index_html_shows_noise_floor_cost_brownout_integrity_and_locust() -> None:
    from novamig.results import PerProbe, ProbeCost

    r = results()
    case = r.cases[0]
    case.noise_floor_ms = PerProbe(guest=14.25, network=3.5)
    case.probe_cost = {"network": ProbeCost(cpu_s=1.2, wall_s=60.0, cpu_percent=2.0, rate_hz=500.0)}
    case.locust = {
        "where": "guest",
        "total": {"requests": 1234, "failures": 5, "failure_ratio": 0.00412, "latency_ms": {"p99": 88.25}},
    }
    m = case.migrations[0]
    m.brownout_ms = PerProbe(guest=321.5)
    m.memory_integrity = True
    html = render_index(r)
    assert "14.2" in html and "3.5" in html  # noise floor per probe
    assert "2.00 % of a core at 500 Hz" in html
    assert "1234" in html and "0.0041" in html and "88.2" in html
    assert "321.5" in html
    assert "<td>yes</td>" in html
    assert "over its budget" not in html
    case.probe_cost["network"] = case.probe_cost["network"].model_copy(
        update={"cpu_percent": 31.0, "budget_percent": 20.0, "over_budget": True}
    )
    html = render_index(r)
    assert "31.00 % of a core at 500 Hz" in html
    assert "over its budget of 20 %: may have disturbed the measurement" in html
