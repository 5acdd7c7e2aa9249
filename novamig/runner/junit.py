"""JUnit XML from results: one <testcase> per case, failures listing the verdicts that failed.

CI systems (Zuul, Jenkins, GitLab) read this format; it is rendered from `Results` only, so
``junit.xml`` always agrees with ``results.json``. A case that could not run (boot failure,
interruption) is an <error>; a case whose SLA or migrations failed is a <failure>.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from novamig.results import CaseResult, Results


def _case_time(case: CaseResult) -> float:
    ends = [m.finished_at for m in case.migrations if m.finished_at is not None]
    return max(ends, default=0.0)


def _verdicts(case: CaseResult) -> list[str]:
    lines = []
    for check in case.sla:
        mark = "PASS" if check.passed else "FAIL"
        why = f" — {check.reason}" if check.reason else ""  # why a value is null
        lines.append(f"{mark} {check.name}: value {check.value} (limit {check.limit}){why}")
    for m in case.migrations:
        if m.status != "completed":
            lines.append(f"migration of {m.server} {m.source_host} → {m.dest_host or '?'}: {m.status}")
    return lines


def junit_xml(results: Results) -> str:
    name = str(results.scenario.get("name", "novamig"))
    suite = ET.Element("testsuite", name=f"novamig.{name}")
    failures = errors = 0
    total_time = 0.0
    for case in results.cases:
        t = _case_time(case)
        total_time += t
        tc = ET.SubElement(suite, "testcase", classname=f"novamig.{name}", name=case.id, time=f"{t:.3f}")
        details = "\n".join(_verdicts(case))
        if case.error:
            errors += 1
            err = ET.SubElement(tc, "error", message=case.error[:500], type="CaseError")
            err.text = details or case.error
        elif not case.passed:
            failures += 1
            failed = [c.name for c in case.sla if not c.passed]
            message = "SLA failed: " + ", ".join(failed) if failed else "case failed"
            fail = ET.SubElement(tc, "failure", message=message, type="SlaFailure")
            fail.text = details
        out = ET.SubElement(tc, "system-out")
        out.text = details
    suite.set("tests", str(len(results.cases)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", "0")
    suite.set("time", f"{total_time:.3f}")
    if results.interrupted:
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="interrupted", value="true")
        # JUnit requires <properties> first.
        suite.remove(props)
        suite.insert(0, props)
    suites = ET.Element("testsuites", name="novamig")
    suites.append(suite)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(results: Results, path: Path) -> None:
    path.write_text(junit_xml(results))
