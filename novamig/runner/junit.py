"""JUnit XML from results: one <testcase> per case, SLA misses as <failure>, figures as <property>.

CI systems (Zuul, Jenkins, GitLab) read this format; it is rendered from `Results` only, so
``junit.xml`` always agrees with ``results.json``. A case that could not run (boot failure,
interruption) is an <error>; a case whose SLA or migrations failed is a <failure> whose ``message``
carries the numbers of every missed check (value, limit, the vantage point it is judged on, and why
the value is null when it is), so the CI page says what failed without opening the report.

The file validates against the schema Jenkins' JUnit plugin and GitLab read (the "jenkins-junit.xsd"
of Jenkins' dtkit, JUnit 4 flavour). That schema allows <properties> on a <testsuite> only, not on a
<testcase>; so the run has one suite and its <properties> hold the run's facts and every case's
figures, each named ``<case id>/<figure>`` (``a=1#r1/downtime_ms.guest.p95``): one name per plotted
series, which a CI plot (Jenkins' Plot plugin by XPath, a dashboard scraping the artifact) follows
from run to run. A figure no migration measured has no property (a property's value is required,
and "null" would break a plot); the <failure> or <system-out> says why.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from novamig.report.summary import PROBES, judged_on
from novamig.results import CaseResult, Results, SlaCheck
from novamig.stats import percentile

Property = tuple[str, str]


def _case_time(case: CaseResult) -> float:
    ends = [m.finished_at for m in case.migrations if m.finished_at is not None]
    return max(ends, default=0.0)


def _number(value: float | bool | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}"


def sla_message(check: SlaCheck) -> str:
    """One check with its numbers: ``downtime_ms.guest.max = 512.3 (limit 500, probe guest)``."""
    probe = judged_on(check.name)
    where = f", probe {probe}" if probe else ""
    text = f"{check.name} = {_number(check.value)} (limit {_number(check.limit)}{where})"
    if check.reason:  # why it is null, or what else a failure's value says
        text += f": {check.reason}"
    return text


def _verdicts(case: CaseResult) -> list[str]:
    lines = [f"own SLA: {reason}" for reason in case.sla_reasons]
    for check in case.sla:
        mark = "PASS" if check.passed else "FAIL"
        lines.append(f"{mark} {sla_message(check)}")
    for m in case.migrations:
        if m.status != "completed":
            lines.append(f"migration of {m.server} {m.source_host} → {m.dest_host or '?'}: {m.status}")
    return lines


def _failure_message(case: CaseResult) -> str:
    missed = [sla_message(c) for c in case.sla if not c.passed]
    if missed:
        return "SLA missed: " + "; ".join(missed)
    broken = [m.status for m in case.migrations if m.status != "completed"]
    if broken:
        return f"{len(broken)} of {len(case.migrations)} migrations did not complete ({', '.join(broken)})"
    return "case failed"


def _percentiles(name: str, values: list[float]) -> Iterator[Property]:
    for label, p in (("p50", 50), ("p95", 95), ("max", 100)):
        value = percentile(values, p)
        if value is not None:
            yield f"{name}.{label}", f"{value:.3f}"


def case_properties(case: CaseResult) -> list[Property]:
    """The case's figures, as CI dashboards plot them: counts, duration and each vantage point's
    downtime (nearest-rank p50/p95/max over completed migrations), and the probes' noise floors."""
    done = [m for m in case.migrations if m.status == "completed"]
    props: list[Property] = [
        ("migrations.requested", str(len(case.migrations))),
        ("migrations.completed", str(len(done))),
    ]
    if case.duration_s is not None:
        props.append(("case_duration_s", f"{case.duration_s:.3f}"))
    props += _percentiles("duration_s", [m.duration_s for m in done if m.duration_s is not None])
    for probe in PROBES:
        values = [v for m in done if (v := getattr(m.downtime_ms, probe)) is not None]
        props += _percentiles(f"downtime_ms.{probe}", values)
    for probe in PROBES:
        floor = getattr(case.noise_floor_ms, probe)
        if floor is not None:
            props.append((f"noise_floor_ms.{probe}", f"{floor:.3f}"))
    return [(f"{case.id}/{name}", value) for name, value in props]


def run_properties(results: Results) -> list[Property]:
    env = results.environment
    facts = [
        ("scenario", str(results.scenario.get("name", ""))),
        ("cloud", env.cloud),
        ("nova_version", env.nova_version or ""),
        ("novamig_version", env.novamig_version),
        ("started_at", env.started_at.isoformat()),
        ("passed", "true" if results.passed else "false"),
        ("interrupted", "true" if results.interrupted else "false"),
    ]
    return facts + [p for case in results.cases for p in case_properties(case)]


def _testcase(suite: ET.Element, classname: str, case: CaseResult) -> tuple[int, int, float]:
    """Adds the case's <testcase>; returns (failures, errors, time) it counts for."""
    t = _case_time(case)
    tc = ET.SubElement(suite, "testcase", classname=classname, name=case.id, time=f"{t:.3f}")
    details = "\n".join(_verdicts(case))
    failures = errors = 0
    if case.error:
        errors = 1
        err = ET.SubElement(tc, "error", message=case.error[:500], type="CaseError")
        err.text = details or case.error
    elif not case.passed:
        failures = 1
        fail = ET.SubElement(tc, "failure", message=_failure_message(case), type="SlaFailure")
        fail.text = details
    out = ET.SubElement(tc, "system-out")
    out.text = details
    return failures, errors, t


def junit_xml(results: Results) -> str:
    name = str(results.scenario.get("name", "novamig"))
    suite = ET.Element("testsuite", name=f"novamig.{name}")
    props = ET.SubElement(suite, "properties")  # the schema wants <properties> before the testcases
    for key, value in run_properties(results):
        ET.SubElement(props, "property", name=key, value=value)
    failures = errors = 0
    total_time = 0.0
    for case in results.cases:
        f, e, t = _testcase(suite, f"novamig.{name}", case)
        failures, errors, total_time = failures + f, errors + e, total_time + t
    counts = {
        "tests": str(len(results.cases)),
        "failures": str(failures),
        "errors": str(errors),
        "time": f"{total_time:.3f}",
    }
    for key, value in counts.items():
        suite.set(key, value)
    suite.set("skipped", "0")
    suite.set("timestamp", results.environment.started_at.isoformat())
    suites = ET.Element("testsuites", {"name": "novamig", **counts})
    suites.append(suite)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(results: Results, path: Path) -> None:
    path.write_text(junit_xml(results))
