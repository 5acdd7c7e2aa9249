"""Secret-looking values inside free text (a script's command line) are replaced, the rest kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from novamig.scenario import expand_cases, load_scenario
from novamig.scenario.redaction import REDACTED, is_secret_key, redact, redact_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mysqlslap --user=bench --password=s3 -c 2", f"mysqlslap --user=bench --password={REDACTED} -c 2"),
        ("MYSQL_PWD=abc mysql -u x", f"MYSQL_PWD={REDACTED} mysql -u x"),
        ("tool --api-key  abc --x", f"tool --api-key  {REDACTED} --x"),
        ('tool --token "a b" next', f"tool --token {REDACTED} next"),
        ("PGPASSWORD='q w' psql", f"PGPASSWORD={REDACTED} psql"),
        ("a --secret=x;b --auth-token=y", f"a --secret={REDACTED};b --auth-token={REDACTED}"),
    ],
)
def test_secret_assignments_are_replaced(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "curl -H x --no-auth -v",
        "echo password is fine",
        "x --password",
        "stress --vm 1 --vm-bytes=64M",
        "a=b c",
    ],
)
def test_harmless_text_is_kept(text: str) -> None:
    assert redact_text(text) == text


def test_redact_walks_strings_in_nested_data() -> None:
    data = {"workload": {"script": {"command": "run --password=p", "env": {"MYSQL_PWD": "q", "MODE": "x"}}}}
    assert redact(data) == {
        "workload": {
            "script": {"command": f"run --password={REDACTED}", "env": {"MYSQL_PWD": REDACTED, "MODE": "x"}}
        }
    }
    assert is_secret_key("MYSQL_PWD") and not is_secret_key("MODE")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mysql -u root -pS3cr3t db", f"mysql -u root -p{REDACTED} db"),
        ("mysqladmin -p'a b' status", f"mysqladmin -p{REDACTED} status"),
        ("x;mysql -p123456&&y", f"x;mysql -p{REDACTED}&&y"),
        ("mysqldump --password=q -pw db", f"mysqldump --password={REDACTED} -p{REDACTED} db"),
    ],
)
def test_password_glued_to_short_p_is_replaced(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize("text", ["mkdir -p /tmp/x", "mysql -p", "a-pb --pid=3", "x --port 5 -- -p"])
def test_p_without_a_glued_value_is_kept(text: str) -> None:
    assert redact_text(text) == text


def test_matrix_secrets_stay_out_of_case_ids_and_params(tmp_path: Path) -> None:
    """A matrix over a secret-looking key, and over commands with a password inside: the case ids
    name the values `v1`, `v2`, the recorded params are redacted, the case itself runs the real value."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: m\n"
        "workload: {kind: script, script: {command: run}}\n"
        "matrix:\n"
        "  workload.script.env.DB_PASSWORD: [first-Planted, second-Planted]\n"
        "  workload.script.command: ['mysql -pglued-Planted', 'mysql --password=opt-Planted']\n"
        "  migration.count: [1]\n",
        encoding="utf-8",
    )
    cases = expand_cases(load_scenario(str(path)))
    assert [c.id for c in cases] == [
        "DB_PASSWORD=v1,command=v1,count=1#r1",
        "DB_PASSWORD=v1,command=v2,count=1#r1",
        "DB_PASSWORD=v2,command=v1,count=1#r1",
        "DB_PASSWORD=v2,command=v2,count=1#r1",
    ]
    recorded = json.dumps([c.params for c in cases])
    assert "Planted" not in recorded
    assert cases[1].params == {
        "workload.script.env.DB_PASSWORD": REDACTED,
        "workload.script.command": f"mysql --password={REDACTED}",
        "migration.count": 1,
    }
    script = cases[1].scenario.workload.script
    assert script is not None
    assert script.env["DB_PASSWORD"] == "first-Planted" and script.command == "mysql --password=opt-Planted"
