"""The pytest plugin as users meet it: installed through its entry point, driven by pytest itself.

Collection and option handling run in-process or in a fresh pytest (`pytester`), with no cloud;
one slow test runs a two-case scenario on two xdist workers, each with its own embedded cloud, and
checks the items' verdicts and the one merged results.json.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from novamig.results import load_results

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

# Two cells of one tiny case: the same single migration judged against a limit it meets and one
# (1 ms) no migration can meet, so one item passes and the other fails on its SLA.
TINY = """\
name: tiny
fleet: {count: 1, flavor: {vcpus: 1, ram_mb: 256, disk_gb: 1}, image: novamig-tiny}
workload: {kind: idle}
migration: {count: 1, concurrency: 1, target: auto, interval_s: 0.5, policy: {timeout_s: 120}}
measure: {probes: [hypervisor], noise_floor_s: 0}
sla:
  downtime_ms: {probe: hypervisor}
  duration_s: {max: 120}
  migrations_completed_ratio: 1.0
matrix:
  sla.duration_s.max: [120, 0.001]
"""


def test_each_matrix_cell_and_repeat_is_an_item_with_a_readable_id(pytester: pytest.Pytester) -> None:
    scenario = pytester.path / "precopy-vs-postcopy.yaml"
    scenario.write_text((ROOT / "scenarios" / "precopy-vs-postcopy.yaml").read_text())
    result = pytester.runpytest("--collect-only", "-q", "--novamig-scenario", str(scenario))
    assert result.ret == pytest.ExitCode.OK
    ids = [line for line in result.outlines if line.startswith("precopy-vs-postcopy.yaml::")]
    # 3 dirty rates × 2 post-copy settings × repeat 2, repetition outermost as `novamig run` runs them
    assert len(ids) == 12
    assert ids[0] == "precopy-vs-postcopy.yaml::dirty_rate_mib_s=16,post_copy_after_s=null#r1"
    assert "precopy-vs-postcopy.yaml::dirty_rate_mib_s=64,post_copy_after_s=5#r2" in ids
    assert ids[6].endswith("#r2") and all(i.endswith("#r1") for i in ids[:6])


def test_the_ini_option_names_scenarios_too(pytester: pytest.Pytester) -> None:
    (pytester.path / "tiny.yaml").write_text(TINY)
    pytester.makeini("[pytest]\nnovamig_scenarios = tiny.yaml\n")
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    assert "tiny.yaml::max=120#r1" in result.outlines
    assert "tiny.yaml::max=0.001#r1" in result.outlines


def test_inert_without_options_nothing_collected_nor_imported(pytester: pytest.Pytester) -> None:
    """A fresh pytest (the entry point loads the plugin in every session) with an ordinary test
    and a scenario file lying around: the test runs, the scenario is not collected, and neither
    the runner nor openstacksdk is imported."""
    (pytester.path / "tiny.yaml").write_text(TINY)
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_plain(request):
            assert request.config.pluginmanager.hasplugin("novamig")
            assert request.config.pluginmanager.get_plugin("novamig-session") is None
            assert "novamig.runner.commands" not in sys.modules
            assert "openstack" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not any("tiny.yaml" in line for line in result.outlines)


def test_a_bad_scenario_is_a_usage_error_naming_the_problem(pytester: pytest.Pytester) -> None:
    bad = pytester.path / "bad.yaml"
    bad.write_text(TINY.replace("probe: hypervisor", "probe: guest"))
    result = pytester.runpytest("--collect-only", "--novamig-scenario", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*novamig scenario not runnable*", "*bad.yaml:*sla.downtime_ms.probe*guest*"]
    )
    missing = pytester.runpytest("--collect-only", "--novamig-scenario", str(pytester.path / "none.yaml"))
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*none.yaml*"])


OPTIONS = ("--novamig-scenario", "--novamig-cloud", "--novamig-out", "novamig_scenarios")


def _help_entries(outlines: list[str]) -> dict[str, str]:
    """Each of `OPTIONS` in ``pytest --help`` with its help text, its wrapped lines joined."""
    entries: dict[str, str] = {}
    current: str | None = None
    for line in outlines:
        if line.startswith("  ") and not line.startswith("   "):  # an entry's first line
            name = line.split()[0].split("=", 1)[0]
            current = name if name in OPTIONS else None
            if current is not None:
                entries[current] = line.strip()
        elif current is not None and line.startswith("   "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def test_help_states_each_option_with_its_default(pytester: pytest.Pytester) -> None:
    """``pytest --help`` shows every option of the plugin with the default it really has."""
    entries = _help_entries(pytester.runpytest("--help").outlines)
    assert set(entries) == set(OPTIONS), entries
    assert "--novamig-scenario=PATH" in entries["--novamig-scenario"]
    assert "default: none" in entries["--novamig-scenario"]
    assert "default: none" in entries["novamig_scenarios"]
    assert "--novamig-cloud=NAME" in entries["--novamig-cloud"]
    assert (
        "default: the scenarios' cloud:, else OS_CLOUD, else the embedded cloud" in entries["--novamig-cloud"]
    )
    assert "--novamig-out=DIR" in entries["--novamig-out"]
    assert "default: reports/pytest-<UTC time>, in the current directory" in entries["--novamig-out"]
    # the defaults the help states are the parser's
    config = pytester.parseconfig()
    assert config.getoption("novamig_scenario") == []
    assert config.getoption("novamig_cloud") is None  # then the scenarios', OS_CLOUD, embedded
    assert config.getoption("novamig_out") is None  # then reports/pytest-<UTC time>
    assert config.getini("novamig_scenarios") == []


def test_the_readme_names_every_option_and_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### pytest\n", 1)[1].split("\n### ", 1)[0]
    text = " ".join(section.split())
    for option in OPTIONS:
        assert option in text, option
    assert "`--novamig-out` defaults to `reports/pytest-<UTC time>`" in text
    assert (
        "`--novamig-cloud` defaults to the scenarios' `cloud:`, then `OS_CLOUD`, then the embedded cloud"
        in text
    )


def test_an_unreachable_cloud_is_an_error_not_a_failure(pytester: pytest.Pytester) -> None:
    (pytester.path / "tiny.yaml").write_text(TINY)
    result = pytester.runpytest(
        "-q",
        "--novamig-scenario",
        "tiny.yaml",
        "--novamig-cloud",
        "no-such-cloud",
        "--novamig-out",
        str(pytester.path / "out"),
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*InfrastructureError*no-such-cloud*"])
    assert not (pytester.path / "out" / "results.json").exists()  # no case ran: nothing measured


def _workers_of(outlines: list[str], prefix: str) -> set[str]:
    return {line.split("]")[0] for line in outlines if prefix in line and "[gw" in line}


@pytest.mark.parametrize("dist", ["load", "loadgroup", "loadfile"])
def test_a_named_cloud_s_cases_of_every_scenario_share_one_worker(
    pytester: pytest.Pytester, dist: str
) -> None:
    """`-n 2` on a named cloud: the cases of two scenario files are one xdist group, run by one
    worker (here they error at once: no such cloud), whatever the ``--dist`` mode. Without the
    plugin's scheduler, ``loadfile`` gives each file its own worker, and ``load`` and pytest 9's
    ``loadgroup`` (which drops the ``xdist_group``) spread the cases over both; plain tests in the
    same session still run."""
    (pytester.path / "tiny.yaml").write_text(TINY)
    (pytester.path / "tiny2.yaml").write_text(TINY.replace("name: tiny", "name: tiny2"))
    pytester.makepyfile(test_plain="def test_1():\n    pass\n\ndef test_2():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", dist, "-v", "-p", "no:cacheprovider", "test_plain.py",
        "--novamig-scenario", "tiny.yaml", "--novamig-scenario", "tiny2.yaml",
        "--novamig-cloud", "no-such-cloud", "--novamig-out", str(pytester.path / "out"),
    )  # fmt: skip
    result.assert_outcomes(passed=2, errors=4)
    cases = [line for line in result.outlines if "ERROR tiny" in line and "[gw" in line]
    assert len(cases) == 4, result.outlines
    assert len(_workers_of(cases, "ERROR tiny")) == 1, result.outlines


def test_scenarios_naming_different_clouds_are_a_usage_error(pytester: pytest.Pytester) -> None:
    """One session opens one cloud for all its scenarios: two scenarios naming different clouds
    would run the second on the first's (and escape its xdist group), so pytest refuses them."""
    (pytester.path / "a.yaml").write_text("cloud: lab-a\n" + TINY)
    (pytester.path / "b.yaml").write_text("cloud: lab-b\n" + TINY.replace("name: tiny", "name: tiny2"))
    result = pytester.runpytest(
        "--collect-only", "--novamig-scenario", "a.yaml", "--novamig-scenario", "b.yaml"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*novamig scenarios name different clouds (lab-a, lab-b)*--novamig-cloud*"])
    chosen = pytester.runpytest(
        "--collect-only", "-q", "--novamig-scenario", "a.yaml", "--novamig-scenario", "b.yaml",
        "--novamig-cloud", "lab-c",
    )  # fmt: skip
    assert chosen.ret == pytest.ExitCode.OK
    assert len([line for line in chosen.outlines if ".yaml::" in line]) == 4


@pytest.mark.slow
@pytest.mark.qemu
def test_two_workers_two_embedded_clouds_one_merged_report(
    pytester: pytest.Pytester, tiny_image: object
) -> None:
    """`-n 2`: each worker starts its own embedded cloud and runs one case; the SLA miss fails its
    item with the numbers; the controller writes one results.json, junit.xml and index.html."""
    (pytester.path / "tiny.yaml").write_text(TINY)
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--novamig-scenario",
        "tiny.yaml",
        "--novamig-out",
        str(out),
        f"--junitxml={pytester.path / 'pytest.xml'}",
        timeout=300,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*_ novamig case max=0.001#r1 _*", "SlaMissed: SLA missed: duration_s.max = * (limit 0.001)"]
    )
    results = load_results(out / "results.json")
    assert [(c.id, c.passed) for c in results.cases] == [("max=120#r1", True), ("max=0.001#r1", False)]
    assert not results.passed and not results.interrupted
    assert results.environment.finished_at is not None
    for case in results.cases:
        assert [m.status for m in case.migrations] == ["completed"]
    assert results.scenario["name"] == "tiny"
    assert {p.name for p in out.iterdir()} >= {
        "results.json",
        "junit.xml",
        "index.html",
        "worker-gw0",
        "worker-gw1",
    }
    junit = ET.parse(out / "junit.xml").getroot()
    assert len(junit.findall(".//testcase")) == 2
    # the figures travel with each item (record_property) into pytest's own JUnit file
    props = {
        p.get("name"): p.get("value")
        for tc in ET.parse(pytester.path / "pytest.xml").getroot().iter("testcase")
        for p in tc.iter("property")
    }
    assert props["novamig.migrations.completed"] == "1"
    assert float(props["novamig.duration_s.max"]) > 0
    assert json.loads((out / "results.json").read_text())["schema"] == "novamig.results/1"


@pytest.mark.slow
@pytest.mark.qemu
def test_fixtures_boot_migrate_measure_and_clean_up(pytester: pytest.Pytester, tiny_image: object) -> None:
    """A hand-written test with the fixtures, no scenario: the embedded cloud starts for the
    session, the server boots with the agent, two migrations come back measured like results.json's,
    and the server is gone when the test ends."""
    pytester.makepyfile(
        test_hand_written="""
        import pytest

        SEEN = {}

        def test_migrate_twice(novamig_cloud, novamig_server, novamig_migrate):
            server = novamig_server()
            SEEN["id"] = server.id
            assert novamig_cloud.compute.get_server(server.id).status == "ACTIVE"
            first = novamig_migrate(server)
            assert first.status == "completed", first.events
            assert first.source_host == server.host and first.dest_host not in (None, server.host)
            assert first.duration_s is not None and first.duration_s > 0
            assert first.downtime_ms.hypervisor is not None and first.downtime_ms.guest is not None
            back = novamig_migrate(server, policy={"timeout_s": 120})
            assert back.status == "completed", back.events
            assert (back.source_host, back.dest_host) == (first.dest_host, first.source_host)

        def test_the_server_was_deleted(novamig_cloud):
            assert novamig_cloud.compute.find_server(SEEN["id"]) is None
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", timeout=300)
    result.assert_outcomes(passed=2)
