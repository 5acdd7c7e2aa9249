"""Secret-looking values inside free text (a script's command line) are replaced, the rest kept."""

from __future__ import annotations

import pytest

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
