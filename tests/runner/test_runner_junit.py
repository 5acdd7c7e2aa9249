"""JUnit XML of a run: one testcase per case, SLA misses as failures with their numbers, broken
cases as errors, the figures as properties, and a document Jenkins' and GitLab's schema accepts."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pytest
from lxml import etree

from novamig.results import CaseResult, Environment, MigrationRecord, PerProbe, Results, SlaCheck
from novamig.runner.junit import junit_xml

# The constraints of the JUnit schema Jenkins' JUnit plugin and GitLab read ("jenkins-junit.xsd", the
# JUnit 4 flavour of Jenkins' dtkit), written out here: a <testsuites> of <testsuite>s; a suite has
# `name` and `tests`, then at most one <properties> (one or more <property name value>) BEFORE its
# testcases, then its <testcase>s, then optional <system-out> and <system-err>; a <testcase> has a
# `name` and holds, in this order, at most one <skipped>, any <error>s, any <failure>s, any
# <system-out>s and <system-err>s — and no <properties> (why the figures sit on the suite). Every
# other attribute is an optional string; an attribute the schema does not name is refused.
JUNIT_SCHEMA = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:complexType name="outcome" mixed="true">
    <xs:attribute name="message" type="xs:string"/>
    <xs:attribute name="type" type="xs:string"/>
  </xs:complexType>
  <xs:complexType name="propertyList">
    <xs:sequence>
      <xs:element name="property" maxOccurs="unbounded">
        <xs:complexType>
          <xs:attribute name="name" type="xs:string" use="required"/>
          <xs:attribute name="value" type="xs:string" use="required"/>
        </xs:complexType>
      </xs:element>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="case">
    <xs:sequence>
      <xs:element name="skipped" type="xs:string" minOccurs="0"/>
      <xs:element name="error" type="outcome" minOccurs="0" maxOccurs="unbounded"/>
      <xs:element name="failure" type="outcome" minOccurs="0" maxOccurs="unbounded"/>
      <xs:element name="system-out" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
      <xs:element name="system-err" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence>
    <xs:attribute name="name" type="xs:string" use="required"/>
    <xs:attribute name="classname" type="xs:string"/>
    <xs:attribute name="time" type="xs:string"/>
    <xs:attribute name="assertions" type="xs:string"/>
    <xs:attribute name="status" type="xs:string"/>
  </xs:complexType>
  <xs:complexType name="suite">
    <xs:sequence>
      <xs:element name="properties" type="propertyList" minOccurs="0"/>
      <xs:element name="testcase" type="case" minOccurs="0" maxOccurs="unbounded"/>
      <xs:element name="system-out" type="xs:string" minOccurs="0"/>
      <xs:element name="system-err" type="xs:string" minOccurs="0"/>
    </xs:sequence>
    <xs:attribute name="name" type="xs:string" use="required"/>
    <xs:attribute name="tests" type="xs:string" use="required"/>
    <xs:attribute name="failures" type="xs:string"/>
    <xs:attribute name="errors" type="xs:string"/>
    <xs:attribute name="skipped" type="xs:string"/>
    <xs:attribute name="disabled" type="xs:string"/>
    <xs:attribute name="time" type="xs:string"/>
    <xs:attribute name="timestamp" type="xs:string"/>
    <xs:attribute name="hostname" type="xs:string"/>
    <xs:attribute name="id" type="xs:string"/>
    <xs:attribute name="package" type="xs:string"/>
  </xs:complexType>
  <xs:element name="testsuites">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="testsuite" type="suite" minOccurs="0" maxOccurs="unbounded"/>
      </xs:sequence>
      <xs:attribute name="name" type="xs:string"/>
      <xs:attribute name="time" type="xs:string"/>
      <xs:attribute name="tests" type="xs:string"/>
      <xs:attribute name="failures" type="xs:string"/>
      <xs:attribute name="disabled" type="xs:string"/>
      <xs:attribute name="errors" type="xs:string"/>
    </xs:complexType>
  </xs:element>
</xs:schema>
"""
SCHEMA = etree.XMLSchema(etree.fromstring(JUNIT_SCHEMA.encode()))


def _validate(xml: str) -> None:
    document = etree.fromstring(xml.encode())
    assert SCHEMA.validate(document), SCHEMA.error_log.filter_from_errors()


def _properties(xml: str) -> dict[str, str]:
    return {
        p.get("name", ""): p.get("value", "") for p in ET.fromstring(xml).iterfind("testsuite/properties/")
    }


def test_the_schema_check_refuses_what_jenkins_refuses() -> None:
    """The schema above is a real check: properties inside a testcase, a failure after system-out, a
    testcase without a name are each refused."""
    good = '<testsuites><testsuite name="s" tests="1"><testcase name="c"/></testsuite></testsuites>'
    assert SCHEMA.validate(etree.fromstring(good.encode()))
    for bad in (
        '<testcase name="c"><properties><property name="a" value="1"/></properties></testcase>',
        '<testcase name="c"><system-out/><failure message="m"/></testcase>',
        "<testcase/>",
        '<testcase name="c"/><properties><property name="a" value="1"/></properties>',
    ):
        doc = f'<testsuites><testsuite name="s" tests="1">{bad}</testsuite></testsuites>'
        assert not SCHEMA.validate(etree.fromstring(doc.encode())), bad


def test_junit_counts_and_structure(three_case_results: Results) -> None:
    xml = junit_xml(three_case_results)
    _validate(xml)
    root = ET.fromstring(xml)
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["a=1#r1", "a=2#r1", "a=3#r1"]
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "SLA missed: duration_s.max = 2.5 (limit 1)"
    assert "migration of s0 h1 → ?: error" in (failure.text or "")
    error = cases[2].find("error")
    assert error is not None and "BootFailure" in (error.get("message") or "")
    assert cases[0].get("time") == "3.500"


def test_junit_marks_interrupted_runs_with_properties_first(three_case_results: Results) -> None:
    r = three_case_results
    r.interrupted = True
    xml = junit_xml(r)
    _validate(xml)
    suite = ET.fromstring(xml).find("testsuite")
    assert suite is not None
    assert suite[0].tag == "properties"
    assert _properties(xml)["interrupted"] == "true"


def test_a_null_verdict_says_why_in_the_failure_message(three_case_results: Results) -> None:
    case = three_case_results.cases[1]
    why = "the network probe cannot measure on this cloud: needs root"
    case.sla = [SlaCheck(name="downtime_ms.network.max", limit=500, value=None, passed=False, reason=why)]
    xml = junit_xml(three_case_results)
    _validate(xml)
    failure = ET.fromstring(xml).findall("testsuite/testcase")[1].find("failure")
    assert failure is not None
    expected = f"downtime_ms.network.max = null (limit 500, probe network): {why}"
    assert failure.get("message") == f"SLA missed: {expected}"
    assert f"FAIL {expected}" in (failure.text or "")


def _measured_case() -> CaseResult:
    """20 completed migrations (guest 100..119 ms, duration 2.0..3.9 s), one in error, and a missed
    downtime SLA next to a met duration one."""
    migrations = [
        MigrationRecord(
            server=f"s{i}",
            source_host="h1",
            dest_host="h2",
            status="completed",
            requested_at=float(i),
            finished_at=float(i) + 2 + i / 10,
            duration_s=2 + i / 10,
            downtime_ms=PerProbe(guest=100.0 + i, network=140.0 + i, hypervisor=15.0),
        )
        for i in range(20)
    ]
    migrations.append(
        MigrationRecord(server="s20", source_host="h1", status="error", requested_at=30.0, finished_at=31.0)
    )
    return CaseResult(
        id="dirty_rate_mib_s=64#r1",
        passed=False,
        duration_s=40.25,
        migrations=migrations,
        noise_floor_ms=PerProbe(guest=12.5, network=21.0),
        sla=[
            SlaCheck(name="downtime_ms.guest.max", limit=110.0, value=119.0, passed=False),
            SlaCheck(name="duration_s.p95", limit=10.0, value=3.9, passed=True),
        ],
    )


def test_figures_are_properties_named_per_case() -> None:
    env = Environment(
        cloud="embedded", novamig_version="0", started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    )
    results = Results(scenario={"name": "dirty"}, environment=env, cases=[_measured_case()], passed=False)
    xml = junit_xml(results)
    _validate(xml)
    props = _properties(xml)
    case = "dirty_rate_mib_s=64#r1/"
    figures = {k.removeprefix(case): v for k, v in props.items() if k.startswith(case)}
    assert figures == {
        "migrations.requested": "21",
        "migrations.completed": "20",
        "case_duration_s": "40.250",
        # nearest rank over 20 values: p50 is the 10th, p95 the 19th
        "duration_s.p50": "2.900",
        "duration_s.p95": "3.800",
        "duration_s.max": "3.900",
        "downtime_ms.guest.p50": "109.000",
        "downtime_ms.guest.p95": "118.000",
        "downtime_ms.guest.max": "119.000",
        "downtime_ms.network.p50": "149.000",
        "downtime_ms.network.p95": "158.000",
        "downtime_ms.network.max": "159.000",
        "downtime_ms.hypervisor.p50": "15.000",
        "downtime_ms.hypervisor.p95": "15.000",
        "downtime_ms.hypervisor.max": "15.000",
        "noise_floor_ms.guest": "12.500",
        "noise_floor_ms.network": "21.000",
    }, "a vantage point with no figure (locust here) has no property"
    assert (props["scenario"], props["cloud"], props["passed"]) == ("dirty", "embedded", "false")
    failure = ET.fromstring(xml).find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == "SLA missed: downtime_ms.guest.max = 119 (limit 110, probe guest)"
    assert "PASS duration_s.p95 = 3.9 (limit 10)" in (failure.text or "")


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_run_with_no_case_is_a_valid_empty_suite(interrupted: bool) -> None:
    env = Environment(cloud="c", novamig_version="0", started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    results = Results(scenario={"name": "x"}, environment=env, passed=False, interrupted=interrupted)
    xml = junit_xml(results)
    _validate(xml)
    assert ET.fromstring(xml).find("testsuite/testcase") is None
    assert _properties(xml)["interrupted"] == str(interrupted).lower()


def test_migrations_failed_without_an_sla_say_how_many(three_case_results: Results) -> None:
    three_case_results.cases[1].sla = []
    failure = ET.fromstring(junit_xml(three_case_results)).find("testsuite/testcase[2]/failure")
    assert failure is not None and failure.get("message") == "1 of 1 migrations did not complete (error)"


def test_a_cell_with_its_own_sla_says_why_in_its_output(three_case_results: Results) -> None:
    three_case_results.cases[1].sla_reasons = ["expected not to converge"]
    xml = junit_xml(three_case_results)
    _validate(xml)
    cases = ET.fromstring(xml).findall("testsuite/testcase")
    out = cases[1].find("system-out")
    assert out is not None and (out.text or "").startswith("own SLA: expected not to converge\n")
    assert all("own SLA" not in (c.findtext("system-out") or "") for c in (cases[0], cases[2]))
