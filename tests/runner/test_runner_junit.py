"""JUnit XML of a run: one testcase per case, SLA misses as failures, broken cases as errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from novamig.results import Results, SlaCheck
from novamig.runner.junit import junit_xml


def test_junit_counts_and_structure(three_case_results: Results) -> None:
    root = ET.fromstring(junit_xml(three_case_results))
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


def test_junit_marks_interrupted_runs_with_properties_first(three_case_results: Results) -> None:
    r = three_case_results
    r.interrupted = True
    suite = ET.fromstring(junit_xml(r)).find("testsuite")
    assert suite is not None
    assert suite[0].tag == "properties"


def test_a_null_verdict_says_why_in_the_junit_text(three_case_results: Results) -> None:
    case = three_case_results.cases[1]
    why = "the network probe cannot measure on this cloud: needs root"
    case.sla = [SlaCheck(name="downtime_ms.network.max", limit=500, value=None, passed=False, reason=why)]
    testcase = ET.fromstring(junit_xml(three_case_results)).findall("testsuite/testcase")[1]
    failure = testcase.find("failure")
    assert failure is not None and failure.get("message") == "SLA failed: downtime_ms.network.max"
    assert f"FAIL downtime_ms.network.max: value None (limit 500.0) — {why}" in (failure.text or "")
