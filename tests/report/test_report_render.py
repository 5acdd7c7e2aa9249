"""The HTML report: self-contained, escaped, re-rendered from results.json by `novamig report`, and
showing every figure a case carries (noise floor, probe cost and budget, brownout, integrity, Locust)."""

from __future__ import annotations

from pathlib import Path

import pytest

from novamig.report.commands import cmd_report
from novamig.report.render import render_index
from novamig.results import PerProbe, ProbeCost, Results, SlaCheck, write_results


def test_index_html_is_self_contained_and_escaped(three_case_results: Results) -> None:
    html = render_index(three_case_results)
    assert "a=2#r1" in html and "FAILED" in html
    assert "&lt;no host&gt;" in html  # escaped
    for external in ("<script", "<link", "src=", "http://", "https://"):
        assert external not in html


def test_report_command_rerenders_from_results(
    three_case_results: Results, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_results(three_case_results, tmp_path / "results.json")
    assert cmd_report(str(tmp_path / "results.json"), None) == 0
    assert "a=2#r1" in (tmp_path / "index.html").read_text()
    (tmp_path / "bad.json").write_text("{}")
    assert cmd_report(str(tmp_path / "bad.json"), None) == 2
    assert "unsupported schema" in capsys.readouterr().err


def test_index_html_shows_noise_floor_cost_brownout_integrity_and_locust(three_case_results: Results) -> None:
    r = three_case_results
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


def test_a_null_sla_value_says_why_in_both_sla_tables(three_case_results: Results) -> None:
    why = "the network probe cannot measure on this cloud: needs root & CAP_NET_RAW"
    three_case_results.cases[1].sla = [
        SlaCheck(name="downtime_ms.network.max", limit=500, value=None, passed=False, reason=why),
        SlaCheck(name="duration_s.max", limit=1, value=2.5, passed=False, reason=None),
    ]
    html = render_index(three_case_results)
    escaped = why.replace("&", "&amp;")
    # once in the run's SLA table, once in the case's own
    assert html.count(f'<br><span class="why">not measured: {escaped}</span>') == 2
    assert html.count('class="why"') == 2, "a check with a value shows no reason"


def test_the_glossary_is_folded_near_the_top_and_defines_every_term(three_case_results: Results) -> None:
    html = render_index(three_case_results)
    start = html.index('<details class="glossary"><summary>Glossary')
    assert start < html.index("<h2>SLA</h2>"), "before the figures it explains"
    glossary = html[start : html.index("</details>", start)]
    terms = [t.split("</dt>")[0] for t in glossary.split("<dt>")[1:]]
    assert terms == [
        "blackout (downtime)", "brownout", "resolution", "noise floor",
        "guest (heartbeat)", "network (echo)", "locust", "hypervisor (QEMU)",
    ]  # fmt: skip
    assert "source only" in glossary and "less the usual pause between two answers" in glossary


def test_a_cell_with_its_own_sla_shows_the_reason_by_its_sla_tables(three_case_results: Results) -> None:
    reason = "Pre-copy cannot keep up with 200 MiB/s at 128 MiB/s <bandwidth>"
    three_case_results.cases[1].sla_reasons = [reason]
    html = render_index(three_case_results)
    escaped = reason.replace("<", "&lt;").replace(">", "&gt;")
    note = f"This cell has its own SLA (<code>sla_by_cell</code>): {escaped}</p>"
    assert html.count(note) == 1
    # by the case's own SLA table, in its section, before the table
    assert html.index(note) < html.index("<tr><th>SLA</th><th>limit</th>", html.index(note))
    # and in the run's SLA table, on the case's rows
    marker = f'<span class="why" title="{escaped}">own SLA (sla_by_cell)</span>'
    assert html.count(marker) == len(three_case_results.cases[1].sla) > 0
    three_case_results.cases[1].sla_reasons = []
    assert "own SLA" not in render_index(three_case_results)
