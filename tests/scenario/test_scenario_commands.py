"""`novamig validate` and `novamig schema` as users and CI call them, on the shipped scenarios."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed
import pytest
import yaml
from scenario_testlib import REPO, SHIPPED

from novamig.scenario import Issue, Scenario, load_scenario, redacted_dict, scenario_json_schema
from novamig.scenario.commands import cmd_schema, cmd_validate

REQUIRED = {"smoke.yaml", "precopy-vs-postcopy.yaml", "locust-web.yaml", "devstack-acceptance.yaml"}


def test_required_scenarios_are_shipped() -> None:
    assert {p.name for p in SHIPPED} >= REQUIRED


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_scenario_starts_with_a_comment_header(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[:3]
    assert all(line.startswith("#") for line in first), first


def test_validate_shipped_scenarios_function() -> None:
    out = io.StringIO()
    assert cmd_validate([str(p) for p in SHIPPED], [], out) == 0
    assert out.getvalue().splitlines() == [f"{p}: ok" for p in SHIPPED]


def test_readme_scenario_example_validates(tmp_path: Path) -> None:
    """The README's "## Scenarios" shape is a scenario `novamig validate` accepts (docs that
    match the code: a renamed or removed key fails here)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Scenarios") :]
    block = section[
        section.index("```yaml\n") + len("```yaml\n") : section.index("```\n", section.index("```yaml"))
    ]
    path = tmp_path / "readme.yaml"
    path.write_text(block, encoding="utf-8")
    out = io.StringIO()
    assert cmd_validate([str(path)], [], out) == 0, out.getvalue()


def test_validate_shipped_scenarios_command() -> None:
    novamig = Path(sys.executable).parent / "novamig"
    done = subprocess.run(
        [str(novamig), "validate", *(str(p.relative_to(REPO)) for p in SHIPPED)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # devstack-acceptance.yaml's hypervisor SLA is measurable there once the SSH hosts are named
        env={**_without_os_cloud(), "NOVAMIG_SSH_HOSTS": "hosts.yaml"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [f"scenarios/{p.name}: ok" for p in SHIPPED]


def _without_os_cloud() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OS_CLOUD", "NOVAMIG_SSH_HOSTS")}


def test_validate_warns_of_an_sla_figure_the_chosen_cloud_cannot_measure() -> None:
    """On a named cloud there is no embedded driver and no virtio-serial: the guest figure needs a
    UDP collector, the hypervisor figure the SSH hosts file. A warning does not fail validation."""
    novamig = Path(sys.executable).parent / "novamig"

    def validate(*args: str, env: dict[str, str] | None = None) -> list[str]:
        done = subprocess.run(
            [str(novamig), "validate", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env or _without_os_cloud(),
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.splitlines()

    smoke, acceptance = "scenarios/smoke.yaml", "scenarios/devstack-acceptance.yaml"
    assert validate(smoke) == [f"{smoke}: ok"]  # the embedded cloud measures every figure
    # the guest figure over UDP: to the scenario's collector, or to one a run finds from the route
    assert validate(smoke, "--cloud", "devstack") == [f"{smoke}: ok"]
    collected = validate(smoke, "--cloud", "devstack", "--set", "measure.heartbeat_collector=192.0.2.1:47100")
    assert collected == [f"{smoke}: ok"]
    ok, warning = validate(smoke, "--cloud", "devstack", "--set", "sla.downtime_ms.probe=hypervisor")
    assert ok == f"{smoke}: ok"
    assert warning.startswith(
        f"{smoke}: warning: sla.downtime_ms judges the hypervisor figure, which cannot be measured on a "
        "named cloud (devstack: no embedded driver): "
    )
    assert "NOVAMIG_SSH_HOSTS" in warning
    ok, warning = validate(acceptance)  # its own cloud: devstack-admin
    assert "sla.downtime_ms judges the hypervisor figure" in warning and "NOVAMIG_SSH_HOSTS" in warning
    assert validate(acceptance, env={**_without_os_cloud(), "OS_CLOUD": "devstack"}) == [ok, warning]


def test_validate_command_exit_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: a\nfleet: {count: zero}\n")
    novamig = Path(sys.executable).parent / "novamig"
    done = subprocess.run(
        [str(novamig), "validate", str(bad), str(SHIPPED[0]), "--set", "repeat=2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**_without_os_cloud(), "NOVAMIG_SSH_HOSTS": "hosts.yaml"},  # no warning on SHIPPED[0]
    )
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        f"{bad}:2:16: fleet.count: Input should be a valid integer, got 'zero'",
        f"{SHIPPED[0]}: ok",
    ]
    assert "Traceback" not in done.stderr


def test_one_bad_file_does_not_hide_the_others(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [\n")
    out = io.StringIO()
    assert cmd_validate([str(SHIPPED[0]), str(bad), str(SHIPPED[1])], [], out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{SHIPPED[0]}: ok" and lines[-1] == f"{SHIPPED[1]}: ok"
    assert lines[1].startswith(f"{bad}:2:1: (yaml): YAML syntax error")


def _schema() -> dict[str, Any]:
    out = io.StringIO()
    assert cmd_schema(out) == 0
    schema: dict[str, Any] = json.loads(out.getvalue())
    return schema


def test_schema_is_valid_json_schema() -> None:
    schema = _schema()
    assert schema == scenario_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_schema_accepts_shipped_scenario(path: Path) -> None:
    validator = jsonschema.Draft202012Validator(_schema())
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize(
    "data",
    [
        {"fleet": {"count": 1}},  # no name
        {"name": "a", "fleet": {"cuont": 1}},
        {"name": "a", "migration": {"count": "3"}},
        {"name": "a", "measure": {"heartbeat_hz": 0}},
        {"name": "a", "workload": {"kind": "busy"}},
    ],
)
def test_schema_rejects_what_validate_rejects(data: dict[str, Any]) -> None:
    assert not jsonschema.Draft202012Validator(_schema()).is_valid(data)


def test_schema_documents_every_field() -> None:
    """Editors show these descriptions: every property says what it is (and its unit)."""
    schema = _schema()
    undocumented = [
        f"{name}.{prop}"
        for name, definition in [("Scenario", schema), *schema["$defs"].items()]
        for prop, spec in definition.get("properties", {}).items()
        if not spec.get("description")
    ]
    assert undocumented == []


def test_issue_format() -> None:
    issue = Issue("s.yaml", 3, 5, "migration.count", "too big")
    assert str(issue) == "s.yaml:3:5: migration.count: too big"


def test_redacted_dict_removes_secrets() -> None:
    s = Scenario.model_validate(
        {
            "name": "a",
            "workload": {
                "kind": "script",
                "script": {"command": "x", "env": {"API_TOKEN": "s3cret", "N": "1"}},
            },
        }
    )
    data = redacted_dict(s)
    assert data["workload"]["script"]["env"] == {"API_TOKEN": "<redacted>", "N": "1"}
    assert "s3cret" not in json.dumps(data)
    assert s.workload.script is not None and s.workload.script.env["API_TOKEN"] == "s3cret"


def test_redacted_dict_is_json_and_round_trips() -> None:
    for path in SHIPPED:
        s = load_scenario(path)
        data = json.loads(json.dumps(redacted_dict(s)))
        assert Scenario.model_validate(data) == s


def test_defaults_are_explicit() -> None:
    s = Scenario.model_validate({"name": "a"})
    assert s.cloud is None and s.fleet.image == "novamig-tiny" and s.workload.kind == "idle"
    assert s.migration.policy.timeout_s == 600 and s.migration.policy.post_copy_after_s is None
    assert s.measure.probes == ["guest", "network", "hypervisor"] and s.sla.downtime_ms.probe == "guest"
    assert s.matrix == {} and s.repeat == 1 and s.host_policy is None
